//! The in-memory view store: maps behind one lock. Every operation is a short critical section
//! with no await inside, so a std `Mutex` is the right tool (as mini-redis argues for its db).

use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::{Mutex, MutexGuard};

use async_trait::async_trait;
use futures_util::stream::BoxStream;
use projections::view_store::{Doc, ViewError, ViewStore};
use tokio::sync::broadcast;

#[derive(Default)]
struct State {
    docs: HashMap<String, Doc>,
    indexes: HashMap<String, BTreeSet<(i64, String)>>,
    /// The score each member has in each index, so re-adding re-scores.
    scores: HashMap<(String, String), i64>,
    claims: HashSet<String>,
}

#[derive(Default)]
pub struct MemoryViewStore {
    state: Mutex<State>,
    channels: Mutex<HashMap<String, broadcast::Sender<String>>>,
}

impl MemoryViewStore {
    pub fn new() -> Self {
        Self::default()
    }

    fn channel(&self, name: &str) -> Result<broadcast::Sender<String>, ViewError> {
        let mut channels = self
            .channels
            .lock()
            .map_err(|_| ViewError::Unavailable("channel table poisoned".into()))?;
        Ok(channels
            .entry(name.to_owned())
            .or_insert_with(|| broadcast::channel(4096).0)
            .clone())
    }

    fn state(&self) -> Result<MutexGuard<'_, State>, ViewError> {
        self.state
            .lock()
            .map_err(|_| ViewError::Unavailable("view store lock poisoned".into()))
    }
}

#[async_trait]
impl ViewStore for MemoryViewStore {
    async fn get(&self, key: &str) -> Result<Option<Doc>, ViewError> {
        Ok(self.state()?.docs.get(key).cloned())
    }

    async fn put(&self, key: &str, expected: u64, doc: Doc) -> Result<bool, ViewError> {
        let mut state = self.state()?;
        let current = state.docs.get(key).map_or(0, |d| d.version);
        if current != expected {
            return Ok(false);
        }
        state.docs.insert(key.to_owned(), doc);
        Ok(true)
    }

    async fn overwrite_many(&self, docs: Vec<(String, Doc)>) -> Result<(), ViewError> {
        let mut state = self.state()?;
        state.docs.extend(docs);
        Ok(())
    }

    async fn delete_prefix(&self, prefix: &str) -> Result<u64, ViewError> {
        let mut state = self.state()?;
        let before = state.docs.len() + state.indexes.len();
        state.docs.retain(|key, _| !key.starts_with(prefix));
        state.indexes.retain(|index, _| !index.starts_with(prefix));
        state
            .scores
            .retain(|(index, _), _| !index.starts_with(prefix));
        Ok((before - state.docs.len() - state.indexes.len()) as u64)
    }

    async fn index_add(&self, index: &str, score: i64, member: &str) -> Result<(), ViewError> {
        let mut state = self.state()?;
        let slot = (index.to_owned(), member.to_owned());
        if let Some(old) = state.scores.insert(slot, score)
            && let Some(set) = state.indexes.get_mut(index)
        {
            set.remove(&(old, member.to_owned()));
        }
        state
            .indexes
            .entry(index.to_owned())
            .or_default()
            .insert((score, member.to_owned()));
        Ok(())
    }

    async fn index_page(
        &self,
        index: &str,
        before: Option<(i64, String)>,
        limit: usize,
    ) -> Result<Vec<(i64, String)>, ViewError> {
        let state = self.state()?;
        let Some(set) = state.indexes.get(index) else {
            return Ok(Vec::new());
        };
        let page = match before {
            Some(cursor) => set.range(..cursor).rev().take(limit).cloned().collect(),
            None => set.iter().rev().take(limit).cloned().collect(),
        };
        Ok(page)
    }

    async fn claim(&self, key: &str) -> Result<bool, ViewError> {
        Ok(self.state()?.claims.insert(key.to_owned()))
    }

    async fn unclaim(&self, key: &str) -> Result<(), ViewError> {
        self.state()?.claims.remove(key);
        Ok(())
    }

    async fn ping(&self) -> Result<(), ViewError> {
        self.state().map(|_| ())
    }

    async fn publish(&self, channel: &str, message: &str) -> Result<(), ViewError> {
        // Nobody listening is not an error.
        let _ = self.channel(channel)?.send(message.to_owned());
        Ok(())
    }

    async fn subscribe(&self, channel: &str) -> Result<BoxStream<'static, String>, ViewError> {
        let receiver = self.channel(channel)?.subscribe();
        let messages = futures_util::stream::unfold(receiver, |mut receiver| async move {
            loop {
                match receiver.recv().await {
                    Ok(message) => return Some((message, receiver)),
                    // A slow subscriber misses messages, as with Redis pub/sub.
                    Err(broadcast::error::RecvError::Lagged(_)) => continue,
                    Err(broadcast::error::RecvError::Closed) => return None,
                }
            }
        });
        Ok(Box::pin(messages))
    }
}
