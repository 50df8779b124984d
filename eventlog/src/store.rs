//! The event store port: the one source of truth, and the outbox the relay publishes from.

use async_trait::async_trait;
use domain::{NewEvent, RecordedEvent};
use serde::{Deserialize, Serialize};
use tokio::sync::watch;

/// What an append did.
#[derive(Debug, Clone, PartialEq)]
pub struct Appended {
    /// The stream's version after the append.
    pub version: u64,
    /// The global position of the last event appended, where the engine numbers its log
    /// (SQLite, PostgreSQL); `None` on Cosmos DB.
    pub position: Option<u64>,
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

/// A reader's place in the global log, opaque outside the store that issued it (ADR 05):
/// SQLite and PostgreSQL write the global position in decimal, Cosmos DB its change feed's
/// continuation token. The empty cursor is the start of the log. Readers keep cursors as they
/// got them (the relay's checkpoint, the projector's catch-up) and never compare them.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct LogCursor(String);

impl LogCursor {
    /// Before the first event.
    pub fn start() -> Self {
        Self::default()
    }

    /// A cursor as a store wrote it (read back from a checkpoint).
    pub fn new(raw: impl Into<String>) -> Self {
        Self(raw.into())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn is_start(&self) -> bool {
        self.0.is_empty()
    }

    /// For a store that numbers its log: the cursor just after `position` (0 is the start).
    pub fn at_position(position: u64) -> Self {
        if position == 0 {
            Self::start()
        } else {
            Self(position.to_string())
        }
    }

    /// The position a numbering store wrote into this cursor; `Corrupt` for one it did not
    /// write (another engine's cursor, say).
    pub fn position(&self) -> Result<u64, StoreError> {
        if self.is_start() {
            return Ok(0);
        }
        self.0
            .parse()
            .map_err(|_| StoreError::Corrupt(format!("{:?} is not a log position", self.0)))
    }
}

impl std::fmt::Display for LogCursor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.is_start() {
            f.write_str("start")
        } else {
            f.write_str(&self.0)
        }
    }
}

/// A page of the global log and where the next one starts.
#[derive(Debug, Clone, PartialEq)]
pub struct LogPage {
    pub events: Vec<RecordedEvent>,
    /// Resumes after every event of this page (and after anything the engine passed over
    /// that is not an event). Equal to the `after` it was read from when nothing was new.
    pub next: LogCursor,
}

/// Durable, ordered storage of event streams and of the global log that spans them.
///
/// Every adapter passes the same conformance suite ([`crate::conformance`], the in-memory store included).
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

    /// Up to `limit` events of the global log after the cursor `after`, and the cursor after
    /// them. A reader that goes on from each page's `next` gets every event exactly once,
    /// each stream in version order, and never misses a late commit: no event appears behind
    /// a cursor once a page has passed it. Where the engine numbers its log
    /// ([`EventStore::ordered_log`]) the order is the commit order across all streams.
    /// An engine whose feed cannot stop inside a page (Cosmos DB: the events of one append
    /// arrive together) may return somewhat more than `limit`.
    async fn read_all(&self, after: &LogCursor, limit: usize) -> Result<LogPage, StoreError>;

    /// How many events lie after `after`, where the engine can count them cheaply (SQL stores:
    /// the head's position minus the cursor's); `None` where it cannot (Cosmos DB).
    async fn lag(&self, after: &LogCursor) -> Result<Option<u64>, StoreError>;

    /// Whether [`read_all`](EventStore::read_all) returns one commit order across all
    /// streams, numbered in [`RecordedEvent::global_position`]. Cosmos DB's change feed keeps
    /// order only within a stream.
    fn ordered_log(&self) -> bool {
        true
    }

    /// A doorbell that rings (its value changes) whenever the log may have grown: after any
    /// process's append where the engine can tell (PostgreSQL's NOTIFY), else after this
    /// process's own. Readers still re-read the log: it carries no data, and its value means
    /// something only to the store (the head's position, for SQL stores).
    fn watch_head(&self) -> watch::Receiver<u64>;

    /// A named reader's durable checkpoint ([`LogCursor::start`] when it has none), kept
    /// beside the log.
    async fn checkpoint(&self, reader: &str) -> Result<LogCursor, StoreError>;

    async fn save_checkpoint(&self, reader: &str, cursor: &LogCursor) -> Result<(), StoreError>;

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
