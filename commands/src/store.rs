//! The event store port: the one source of truth, and the outbox the relay publishes from.

use async_trait::async_trait;
use domain::{NewEvent, RecordedEvent};
use tokio::sync::watch;

/// What an append did.
#[derive(Debug, Clone, PartialEq)]
pub struct Appended {
    /// The stream's version after the append.
    pub version: u64,
    /// The global position of the last event appended.
    pub position: u64,
    /// `true` when every event id was already in the stream at those versions: an idempotent
    /// retry of an earlier append, which wrote nothing.
    pub duplicate: bool,
}

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum StoreError {
    /// The stream is not at the version the writer decided on: reload and decide again.
    #[error("stream {stream_id} is at version {actual}, not {expected}")]
    Conflict {
        stream_id: String,
        expected: u64,
        actual: u64,
    },
    /// The engine cannot be reached or failed; the caller may retry later.
    #[error("event store unavailable: {0}")]
    Unavailable(String),
    /// The store holds something this build cannot read.
    #[error("event store data is corrupt: {0}")]
    Corrupt(String),
}

/// Durable, ordered storage of event streams and of the global log that spans them.
///
/// Every adapter passes the same conformance suite (`infra::event_store::conformance`).
#[async_trait]
pub trait EventStore: Send + Sync + 'static {
    /// Appends `events` to `stream_id` atomically if the stream is at `expected_version`
    /// (0 for a new stream); otherwise fails with [`StoreError::Conflict`] and writes nothing.
    /// When the first event's id is already stored in this stream, the call is an idempotent
    /// retry and answers as the original append did, with `duplicate: true`. Returns only after
    /// the events are durable.
    async fn append(
        &self,
        stream_id: &str,
        stream_type: &str,
        expected_version: u64,
        events: Vec<NewEvent>,
    ) -> Result<Appended, StoreError>;

    /// The stream's events with `version >= from_version`, oldest first.
    async fn read_stream(
        &self,
        stream_id: &str,
        from_version: u64,
    ) -> Result<Vec<RecordedEvent>, StoreError>;

    /// Up to `limit` events of the global log with `global_position > after`, in commit
    /// order. An event never appears behind one already returned: a reader that remembers the
    /// last position it saw misses nothing.
    async fn read_all(&self, after: u64, limit: usize) -> Result<Vec<RecordedEvent>, StoreError>;

    /// The global position of the newest event (0 when empty).
    async fn head(&self) -> Result<u64, StoreError>;

    /// Wakes whenever the head moves, carrying the new head. Readers still re-read the log:
    /// this is a doorbell, not a data channel.
    fn watch_head(&self) -> watch::Receiver<u64>;

    /// A named reader's durable checkpoint (0 when it has none), kept beside the log.
    async fn checkpoint(&self, reader: &str) -> Result<u64, StoreError>;

    async fn save_checkpoint(&self, reader: &str, position: u64) -> Result<(), StoreError>;

    /// Whether the engine answers (for `/ready`).
    async fn ping(&self) -> Result<(), StoreError>;

    /// Tries to take the named lease: the right to run a singleton worker (the relay) among all
    /// processes sharing this store. `None` while another process holds it. The lease lasts
    /// until the returned guard is dropped or the engine loses it.
    async fn lease(&self, name: &str) -> Result<Option<Box<dyn Lease>>, StoreError>;

    /// Group-commit transactions so far, for `/metrics`; `None` where the engine has none.
    fn group_commits(&self) -> Option<u64> {
        None
    }
}

/// A held lease. The holder asks [`Lease::held`] before each unit of work and stops when it
/// says no (another process may have taken over). Two holders overlapping briefly only
/// duplicates work that consumers tolerate, never loses any.
#[async_trait]
pub trait Lease: Send + Sync {
    async fn held(&mut self) -> bool;
}
