//! The view-store port: a cache of versioned JSON documents and sorted indexes.
//!
//! It is deliberately shaped like Redis (strings with a version, sorted sets, leases that expire),
//! so the Redis adapter is a thin mapping and the in-memory one ([`memory`]) is a few maps.
//! What a document means is the projector's business, not the store's. [`conformance`] is the
//! port's one suite, which every adapter runs through
//! [`view_store_conformance!`](crate::view_store_conformance).

pub mod conformance;
pub mod memory;

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use futures_util::stream::BoxStream;

/// A stored view: its body (JSON text) and the stream version it reflects.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Doc {
    pub version: u64,
    pub body: String,
}

/// What [`ViewStore::claim`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Claim {
    /// This call holds the lease: do the work, then complete (or unclaim on failure).
    Taken,
    /// Another worker holds the lease, for about this much longer.
    Held(Duration),
    /// The work is done.
    Done,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ViewError {
    #[error("view store unavailable: {0}")]
    Unavailable(String),
}

impl eventlog::Classify for ViewError {
    fn fault(&self) -> eventlog::Fault {
        match self {
            Self::Unavailable(_) => eventlog::Fault::Outage(eventlog::Engine::Cache),
        }
    }
}

#[async_trait]
pub trait ViewStore: Send + Sync + 'static {
    async fn get(&self, key: &str) -> Result<Option<Doc>, ViewError>;

    /// Writes `doc` only if the stored version is `expected` (a missing key counts as 0), as one
    /// atomic step. `false` means another writer got there first: read again and retry.
    async fn put(&self, key: &str, expected: u64, doc: Doc) -> Result<bool, ViewError>;

    /// Adds (or re-scores) `member` in the sorted index.
    async fn index_add(&self, index: &str, score: i64, member: &str) -> Result<(), ViewError>;

    /// Up to `limit` members by descending `(score, member)`, strictly after `before` when
    /// given: newest first, with a cursor that survives ties.
    async fn index_page(
        &self,
        index: &str,
        before: Option<(i64, String)>,
        limit: usize,
    ) -> Result<Vec<(i64, String)>, ViewError>;

    /// Takes `key` for `lease` if nobody holds it and its work is not done: the work of one
    /// event, done once by whichever worker takes it. A lease that ends before
    /// [`complete`](Self::complete) (its worker died) lets the next claim take over.
    async fn claim(&self, key: &str, lease: Duration) -> Result<Claim, ViewError>;

    /// Records that the claimed work is done: every later claim answers [`Claim::Done`].
    async fn complete(&self, key: &str) -> Result<(), ViewError>;

    /// Gives back a lease whose work failed, so a retry can claim again at once. A completed
    /// claim stays completed.
    async fn unclaim(&self, key: &str) -> Result<(), ViewError>;

    async fn ping(&self) -> Result<(), ViewError>;

    /// Deletes every document and index whose name starts with `prefix` (a replay's old
    /// generation of views) and answers how many went. Claims and channels are not touched.
    async fn delete_prefix(&self, prefix: &str) -> Result<u64, ViewError>;

    /// Writes each document as given, whatever is stored, without a version check: only for
    /// names nobody else writes (a replay's new generation before readers switch to it), where
    /// the check would only cost time. Adapters that can pipeline override this.
    async fn overwrite_many(&self, docs: Vec<(String, Doc)>) -> Result<(), ViewError> {
        for (key, doc) in docs {
            loop {
                let current = self.get(&key).await?.map_or(0, |d| d.version);
                if self.put(&key, current, doc.clone()).await? {
                    break;
                }
            }
        }
        Ok(())
    }

    /// Many `index_add`s at once (a replay's new orders): `(index, score, member)`. Adapters
    /// that can pipeline override this.
    async fn index_add_many(&self, entries: Vec<(String, i64, String)>) -> Result<(), ViewError> {
        for (index, score, member) in entries {
            self.index_add(&index, score, &member).await?;
        }
        Ok(())
    }

    /// Sends `message` to everyone subscribed to `channel` right now (no history, no
    /// guarantee): how the notifier reaches the browsers connected to any web process.
    async fn publish(&self, channel: &str, message: &str) -> Result<(), ViewError>;

    /// Messages published on `channel` from now on. The stream ends if the connection is lost;
    /// the subscriber subscribes again.
    async fn subscribe(&self, channel: &str) -> Result<BoxStream<'static, String>, ViewError>;
}

/// Hands each message published on `channel` to `message`, until `shutdown`. The subscription
/// is started again whenever it ends or cannot start (after a pause, so that one refused at
/// once is not retried in a loop), and `subscribed` runs each time one starts: whatever was
/// published before it was missed. How every process follows a channel (the browsers' live
/// feed, order view announcements).
pub async fn follow_channel(
    views: Arc<dyn ViewStore>,
    channel: &str,
    mut shutdown: tokio::sync::watch::Receiver<bool>,
    mut subscribed: impl FnMut(),
    mut message: impl FnMut(String),
) {
    use futures_util::StreamExt;
    while !*shutdown.borrow() {
        let pause = match views.subscribe(channel).await {
            Ok(mut messages) => {
                subscribed();
                loop {
                    tokio::select! {
                        _ = shutdown.changed() => return,
                        next = messages.next() => match next {
                            Some(text) => message(text),
                            None => break,
                        },
                    }
                }
                Duration::from_millis(100)
            }
            Err(error) => {
                tracing::warn!(%error, channel, "cannot subscribe to a view store channel; retrying");
                Duration::from_secs(1)
            }
        };
        tokio::select! {
            _ = shutdown.changed() => return,
            _ = tokio::time::sleep(pause) => {}
        }
    }
}
