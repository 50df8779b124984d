//! A decorator for tests of code that uses an [`EventStore`]: [`Scripted`] passes every call
//! to the store it wraps, counts them, and on cue fails them or lets a rival writer in first,
//! so a test can stage what is hard to bring about with a real engine: a stale guess, a lost
//! race, an outage in the middle of a read.
//!
//! ```
//! # use std::sync::Arc;
//! # use eventlog::{EventStore, MemoryEventStore, Scripted, StoreError};
//! # use eventlog::testing::Op;
//! let store = Scripted::new(Arc::new(MemoryEventStore::new()));
//! store.fail(Op::Append, 1, StoreError::Unavailable("down".into()));
//! assert_eq!(store.calls(Op::Append), 0);
//! ```

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use domain::{NewEvent, RecordedEvent};
use tokio::sync::watch;

use crate::store::{Appended, EventStore, Lease, LogCursor, LogPage, StoreError};

/// The calls a [`Scripted`] store counts and can fail.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    Append,
    ReadStream,
    ReadAll,
}

impl Op {
    fn index(self) -> usize {
        self as usize
    }
}

/// What another writer appends, given the stream and its version at that moment.
pub type RivalEvents = dyn Fn(&str, u64) -> Vec<NewEvent> + Send + Sync;

/// An [`EventStore`] that forwards to another and follows a script; see the
/// [module docs](self).
pub struct Scripted {
    inner: Arc<dyn EventStore>,
    calls: [AtomicUsize; 3],
    failures: Mutex<Vec<Failing>>,
    rival: Mutex<Option<Rival>>,
    page_cap: AtomicUsize,
}

struct Failing {
    op: Op,
    /// Calls that still pass before the failures start.
    pass: usize,
    /// Calls that still fail.
    times: usize,
    error: StoreError,
}

struct Rival {
    times: usize,
    events: Arc<RivalEvents>,
}

impl Scripted {
    pub fn new(inner: Arc<dyn EventStore>) -> Self {
        Self {
            inner,
            calls: Default::default(),
            failures: Mutex::default(),
            rival: Mutex::default(),
            page_cap: AtomicUsize::new(usize::MAX),
        }
    }

    /// How many times `op` was called so far (failed calls included).
    pub fn calls(&self, op: Op) -> usize {
        self.calls[op.index()].load(Ordering::SeqCst)
    }

    /// The next `times` calls of `op` fail with `error` and reach nothing.
    pub fn fail(&self, op: Op, times: usize, error: StoreError) {
        self.fail_after(op, 0, times, error);
    }

    /// After `pass` more calls of `op` go through, the `times` after them fail with `error`
    /// (`usize::MAX`: for good).
    pub fn fail_after(&self, op: Op, pass: usize, times: usize, error: StoreError) {
        lock(&self.failures).push(Failing {
            op,
            pass,
            times,
            error,
        });
    }

    /// Before each of the next `times` appends, another writer appends `events(stream,
    /// version)` to the same stream at the version it is at, so the append that follows finds
    /// the stream moved on (and conflicts, unless it expected the rival's version).
    pub fn rival(
        &self,
        times: usize,
        events: impl Fn(&str, u64) -> Vec<NewEvent> + Send + Sync + 'static,
    ) {
        *lock(&self.rival) = Some(Rival {
            times,
            events: Arc::new(events),
        });
    }

    /// Pages of the global log hold at most `events` events, as a store whose pages end early
    /// may answer (the port allows fewer than asked for).
    pub fn cap_pages(&self, events: usize) {
        self.page_cap.store(events.max(1), Ordering::SeqCst);
    }

    /// Counts the call, and answers the error it is scripted to fail with, if any.
    fn enter(&self, op: Op) -> Result<(), StoreError> {
        self.calls[op.index()].fetch_add(1, Ordering::SeqCst);
        let mut failures = lock(&self.failures);
        let due = failures.iter_mut().find(|f| f.op == op && f.times > 0);
        let Some(failing) = due else { return Ok(()) };
        if failing.pass > 0 {
            failing.pass -= 1;
            return Ok(());
        }
        failing.times -= 1;
        Err(failing.error.clone())
    }

    async fn let_rival_in(&self, stream_id: &str, stream_type: &str) -> Result<(), StoreError> {
        let events = {
            let mut rival = lock(&self.rival);
            let Some(scripted) = rival.as_mut().filter(|r| r.times > 0) else {
                return Ok(());
            };
            scripted.times -= 1;
            scripted.events.clone()
        };
        let version = self.inner.read_stream(stream_id, 1).await?.len() as u64;
        let events = events(stream_id, version);
        self.inner
            .append(stream_id, stream_type, version, events)
            .await
            .map(|_| ())
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

#[async_trait]
impl EventStore for Scripted {
    async fn append(
        &self,
        stream_id: &str,
        stream_type: &str,
        expected_version: u64,
        events: Vec<NewEvent>,
    ) -> Result<Appended, StoreError> {
        self.enter(Op::Append)?;
        self.let_rival_in(stream_id, stream_type).await?;
        self.inner
            .append(stream_id, stream_type, expected_version, events)
            .await
    }

    async fn read_stream(
        &self,
        stream_id: &str,
        from_version: u64,
    ) -> Result<Vec<RecordedEvent>, StoreError> {
        self.enter(Op::ReadStream)?;
        self.inner.read_stream(stream_id, from_version).await
    }

    async fn read_all(&self, after: &LogCursor, limit: usize) -> Result<LogPage, StoreError> {
        self.enter(Op::ReadAll)?;
        let limit = limit.min(self.page_cap.load(Ordering::SeqCst));
        self.inner.read_all(after, limit).await
    }

    async fn lag(&self, after: &LogCursor) -> Result<Option<u64>, StoreError> {
        self.inner.lag(after).await
    }

    fn ordered_log(&self) -> bool {
        self.inner.ordered_log()
    }

    fn watch_head(&self) -> watch::Receiver<u64> {
        self.inner.watch_head()
    }

    async fn checkpoint(&self, reader: &str) -> Result<LogCursor, StoreError> {
        self.inner.checkpoint(reader).await
    }

    async fn save_checkpoint(&self, reader: &str, cursor: &LogCursor) -> Result<(), StoreError> {
        self.inner.save_checkpoint(reader, cursor).await
    }

    async fn ping(&self) -> Result<(), StoreError> {
        self.inner.ping().await
    }

    async fn lease(&self, name: &str) -> Result<Option<Box<dyn Lease>>, StoreError> {
        self.inner.lease(name).await
    }

    fn group_commits(&self) -> Option<u64> {
        self.inner.group_commits()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use chrono::Utc;
    use domain::{EventMetadata, NewEvent};
    use serde_json::json;
    use uuid::Uuid;

    use super::{Op, Scripted};
    use crate::{EventStore, LogCursor, MemoryEventStore, StoreError};

    fn noted(n: usize) -> Vec<NewEvent> {
        (0..n)
            .map(|i| NewEvent {
                event_id: Uuid::now_v7(),
                event_type: "OrderNoted".into(),
                schema_version: 1,
                occurred_at: Utc::now(),
                payload: json!({ "n": i }),
                metadata: EventMetadata::default(),
            })
            .collect()
    }

    fn scripted() -> Scripted {
        Scripted::new(Arc::new(MemoryEventStore::new()))
    }

    #[tokio::test]
    async fn scripted_failures_come_after_the_calls_that_pass_and_then_stop() {
        let store = scripted();
        let down = StoreError::Unavailable("down".into());
        store.fail_after(Op::Append, 1, 2, down.clone());

        let results = [
            store
                .append("s", "order", 0, noted(1))
                .await
                .map(|a| a.version),
            store
                .append("s", "order", 1, noted(1))
                .await
                .map(|a| a.version),
            store
                .append("s", "order", 1, noted(1))
                .await
                .map(|a| a.version),
            store
                .append("s", "order", 1, noted(1))
                .await
                .map(|a| a.version),
        ];

        assert_eq!(results, [Ok(1), Err(down.clone()), Err(down), Ok(2)]);
        assert_eq!(store.calls(Op::Append), 4);
        assert_eq!(store.read_stream("s", 1).await.unwrap().len(), 2);
    }

    #[tokio::test]
    async fn a_rival_moves_the_stream_on_before_the_append() {
        let store = scripted();
        store.append("s", "order", 0, noted(1)).await.unwrap();
        store.rival(1, |_, _| noted(2));

        let raced = store.append("s", "order", 1, noted(1)).await;
        let after = store.append("s", "order", 3, noted(1)).await;

        assert_eq!(
            raced,
            Err(StoreError::Conflict {
                stream_id: "s".into(),
                expected: 1,
                actual: 3
            })
        );
        assert_eq!(after.map(|a| a.version), Ok(4), "one rival only");
    }

    #[tokio::test]
    async fn capped_pages_still_reach_every_event() {
        let store = scripted();
        store.append("s", "order", 0, noted(3)).await.unwrap();
        store.cap_pages(1);

        let first = store.read_all(&LogCursor::start(), 100).await.unwrap();
        let rest = store.read_all(&first.next, 100).await.unwrap();

        assert_eq!((first.events.len(), rest.events.len()), (1, 1));
        assert_eq!(store.calls(Op::ReadAll), 2);
    }
}
