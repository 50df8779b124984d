//! The embedded event store: one SQLite file in WAL mode, written through group commit.
//!
//! # Group commit
//!
//! With `synchronous = FULL` every committed transaction costs an fsync, and a disk does a few
//! hundred of those per second, so appends and checkpoints go through group commit (the
//! `group_commit` module explains it): one writer commits every request waiting at that
//! moment (up to [`MAX_BATCH`]) in ONE `BEGIN IMMEDIATE … COMMIT`, one fsync per batch. It
//! runs on the only write connection's own thread (the `writer` module, through rusqlite on
//! the same libsqlite3 as sqlx), which callers hand their requests to directly and which
//! answers them itself: the writer decides the batch after one lookup and inserts it in
//! multi-row INSERTs; a batch SQLite refuses is written again request by request, each in its
//! own `SAVEPOINT`.
//!
//! # Reads
//!
//! Reads go to a few read-only connections, each on a thread of its own (the `reader`
//! module), one hand-over per read: WAL lets readers run beside the writer, and each
//! statement sees the last committed state. sqlx opens the file and migrates its schema.
//!
//! # Shutdown
//!
//! Dropping the store stops the writer once it has committed what is already queued; the
//! writer owns the head's only sender, so [`EventStore::watch_head`] receivers then see the
//! channel closed.

use std::path::Path;
use std::time::Duration;

use async_trait::async_trait;
use domain::{NewEvent, RecordedEvent};
use eventlog::{Appended, EventStore, Lease, LocalLeases, LogCursor, LogPage, StoreError};
use rusqlite::OptionalExtension;
use sqlx::sqlite::{SqliteConnectOptions, SqliteConnection, SqliteJournalMode, SqliteSynchronous};
use sqlx::{ConnectOptions, Connection};
use tokio::sync::watch;
use uuid::Uuid;

use super::codec::{from_json, numbered_lag, numbered_page, parse_time, to_i64, to_u64};
use super::group_commit::GroupCommit;

mod reader;
#[cfg(test)]
mod tests;
mod writer;

use writer::store_error as read_error;

/// The most requests one transaction takes; the rest wait for the next batch.
pub const MAX_BATCH: usize = 512;
/// Requests waiting for the writer before `append` itself waits (back-pressure).
const QUEUE_CAPACITY: usize = 4 * MAX_BATCH;
/// How long a statement waits for a lock held by another process before giving up.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);
/// Read-only connections beside the writer.
const READERS: usize = 4;

/// The schema this build writes, recorded in `PRAGMA user_version`.
const SCHEMA_VERSION: i64 = 1;
const SCHEMA: &str = "
BEGIN IMMEDIATE;
CREATE TABLE IF NOT EXISTS events (
    global_position INTEGER PRIMARY KEY AUTOINCREMENT,
    event_id        TEXT    NOT NULL UNIQUE,
    stream_id       TEXT    NOT NULL,
    stream_type     TEXT    NOT NULL,
    version         INTEGER NOT NULL,
    event_type      TEXT    NOT NULL,
    schema_version  INTEGER NOT NULL,
    occurred_at     TEXT    NOT NULL,
    payload         TEXT    NOT NULL,
    metadata        TEXT    NOT NULL,
    UNIQUE (stream_id, version)
);
CREATE TABLE IF NOT EXISTS checkpoints (
    reader   TEXT    PRIMARY KEY,
    position INTEGER NOT NULL
);
PRAGMA user_version = 1;
COMMIT;
";

const READ_STREAM: &str = "SELECT global_position, event_id, stream_id, stream_type, version, \
     event_type, schema_version, occurred_at, payload, metadata \
     FROM events WHERE stream_id = ? AND version >= ? ORDER BY version";
/// A page of the log as one JSON array of events, each an array in [`PackedEvent`]'s order.
const READ_ALL_PACKED: &str = "SELECT json_group_array(json_array(global_position, event_id, \
     stream_id, stream_type, version, event_type, schema_version, occurred_at, json(payload), \
     json(metadata))) FROM (SELECT * FROM events WHERE global_position > ? \
     ORDER BY global_position LIMIT ?)";
/// The SQLite adapter of the [`EventStore`] port.
///
/// `read_all` never skips a late commit: there is one writer, and SQLite's write lock admits
/// one transaction at a time anyway, so positions are handed out in commit order. A reader
/// that has seen position `p` can never later find a newly committed event below `p`.
pub struct SqliteEventStore {
    writer: GroupCommit,
    reads: reader::Readers,
    head: watch::Receiver<u64>,
    /// Names of the leases this process holds.
    leases: LocalLeases,
}

impl SqliteEventStore {
    /// Opens (creating if missing) the store at `path`, with its schema, and starts the writer.
    pub async fn open(path: &Path) -> Result<Self, StoreError> {
        if let Some(dir) = path.parent().filter(|dir| !dir.as_os_str().is_empty()) {
            tokio::fs::create_dir_all(dir)
                .await
                .map_err(|e| StoreError::Unavailable(format!("cannot create {dir:?}: {e}")))?;
        }
        let options = SqliteConnectOptions::new()
            .filename(path)
            .busy_timeout(BUSY_TIMEOUT)
            .synchronous(SqliteSynchronous::Full);
        let mut conn = options
            .clone()
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .connect()
            .await
            .map_err(store_error)?;
        migrate(&mut conn).await?;
        let head = current_head(&mut conn).await?;
        // Created and migrated: the writer thread opens its own connection.
        conn.close().await.map_err(store_error)?;
        let mut engine = writer::Writer::open(path, BUSY_TIMEOUT)?;
        let reads = reader::Readers::open(path, READERS, BUSY_TIMEOUT)?;

        let (head_tx, head) = watch::channel(head);
        // One writer, on the connection's own thread: SQLite takes one write transaction at a
        // time anyway, and waiting for a fuller batch did not pay in-process (peer bench).
        let writer = GroupCommit::on_thread(
            "sqlite-writer",
            MAX_BATCH,
            QUEUE_CAPACITY,
            head_tx,
            move |writes| engine.commit(writes),
        )?;
        Ok(Self {
            writer,
            reads,
            head,
            leases: LocalLeases::default(),
        })
    }

    /// How many transactions the writer has committed (for `/metrics`: appends divided by
    /// batches is the group-commit factor).
    pub fn batches_committed(&self) -> u64 {
        self.writer.batches_committed()
    }

    /// The global position of the newest event (0 when empty).
    #[tracing::instrument(skip(self))]
    pub async fn head(&self) -> Result<u64, StoreError> {
        let head: i64 = self
            .reads
            .run(|conn| {
                conn.prepare_cached("SELECT COALESCE(MAX(global_position), 0) FROM events")
                    .and_then(|mut head| head.query_row([], |row| row.get(0)))
                    .map_err(read_error)
            })
            .await?;
        to_u64(head, "head")
    }

    /// What an empty append answers: the stream as it is.
    async fn stream_tip(&self, stream_id: &str) -> Result<Appended, StoreError> {
        let stream_id = stream_id.to_owned();
        let tip: Option<(i64, i64)> = self
            .reads
            .run(move |conn| {
                conn.prepare_cached(
                    "SELECT version, global_position FROM events WHERE stream_id = ? \
                     ORDER BY version DESC LIMIT 1",
                )
                .and_then(|mut tip| {
                    tip.query_row([&stream_id], |row| Ok((row.get(0)?, row.get(1)?)))
                        .optional()
                })
                .map_err(read_error)
            })
            .await?;
        let (version, position) = match tip {
            Some((version, position)) => (
                to_u64(version, "version")?,
                to_u64(position, "global_position")?,
            ),
            None => (0, 0),
        };
        Ok(Appended {
            version,
            position: (version > 0).then_some(position),
            duplicate: false,
        })
    }
}

#[async_trait]
impl EventStore for SqliteEventStore {
    #[tracing::instrument(skip(self, events), fields(n = events.len()))]
    async fn append(
        &self,
        stream_id: &str,
        stream_type: &str,
        expected_version: u64,
        events: Vec<NewEvent>,
    ) -> Result<Appended, StoreError> {
        if events.is_empty() {
            return self.stream_tip(stream_id).await;
        }
        self.writer
            .append(stream_id, stream_type, expected_version, events)
            .await
    }

    #[tracing::instrument(skip(self))]
    async fn read_stream(
        &self,
        stream_id: &str,
        from_version: u64,
    ) -> Result<Vec<RecordedEvent>, StoreError> {
        let stream_id = stream_id.to_owned();
        self.reads
            .run(move |conn| {
                let mut read = conn.prepare_cached(READ_STREAM).map_err(read_error)?;
                let mut rows = read
                    .query(rusqlite::params![stream_id, to_i64(from_version)])
                    .map_err(read_error)?;
                let mut events = Vec::new();
                while let Some(row) = rows.next().map_err(read_error)? {
                    events.push(decode_event(row)?);
                }
                Ok(events)
            })
            .await
    }

    /// The page comes back from SQLite as one row, a JSON array of the events, decoded on
    /// the reader's thread: SQLite building the array costs less than stepping row by row
    /// (measured when the rows came one at a time from sqlx's thread).
    #[tracing::instrument(skip(self))]
    async fn read_all(&self, after: &LogCursor, limit: usize) -> Result<LogPage, StoreError> {
        let from = to_i64(after.position()?);
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let events = self
            .reads
            .run(move |conn| {
                let packed: String = conn
                    .prepare_cached(READ_ALL_PACKED)
                    .and_then(|mut page| page.query_row([from, limit], |row| row.get(0)))
                    .map_err(read_error)?;
                let mut events: Vec<RecordedEvent> =
                    from_json::<Vec<PackedEvent>>(&packed, "a page of the log")?
                        .into_iter()
                        .map(PackedEvent::into_event)
                        .collect();
                // Kept in the log's order whatever order the aggregate saw its rows in.
                events.sort_by_key(|e| e.global_position);
                Ok(events)
            })
            .await?;
        Ok(numbered_page(after, events))
    }

    #[tracing::instrument(skip(self))]
    async fn lag(&self, after: &LogCursor) -> Result<Option<u64>, StoreError> {
        numbered_lag(self.head().await?, after)
    }

    fn watch_head(&self) -> watch::Receiver<u64> {
        self.head.clone()
    }

    #[tracing::instrument(skip(self))]
    async fn checkpoint(&self, reader: &str) -> Result<LogCursor, StoreError> {
        let reader = reader.to_owned();
        let position: Option<i64> = self
            .reads
            .run(move |conn| {
                conn.prepare_cached("SELECT position FROM checkpoints WHERE reader = ?")
                    .and_then(|mut position| {
                        position.query_row([&reader], |row| row.get(0)).optional()
                    })
                    .map_err(read_error)
            })
            .await?;
        let position = position.map_or(Ok(0), |p| to_u64(p, "checkpoint"))?;
        Ok(LogCursor::at_position(position))
    }

    /// Goes through the writer, so a relay's checkpoints share the appends' fsyncs.
    #[tracing::instrument(skip(self))]
    async fn save_checkpoint(&self, reader: &str, cursor: &LogCursor) -> Result<(), StoreError> {
        self.writer
            .save_checkpoint(reader, cursor.position()?)
            .await
    }

    async fn ping(&self) -> Result<(), StoreError> {
        self.reads
            .run(|conn| {
                conn.query_row("SELECT 1", [], |_| Ok(()))
                    .map_err(read_error)
            })
            .await
    }

    fn group_commits(&self) -> Option<u64> {
        Some(self.batches_committed())
    }

    /// One process owns a SQLite file (its writer thread is the only writer), so the lease is
    /// this process's to give: held until the guard is dropped, refused to a second taker.
    async fn lease(&self, name: &str) -> Result<Option<Box<dyn Lease>>, StoreError> {
        Ok(self.leases.take(name))
    }
}

/// Creates the schema unless `user_version` says it is there; safe to run from two processes.
async fn migrate(conn: &mut SqliteConnection) -> Result<(), StoreError> {
    let version: i64 = sqlx::query_scalar("PRAGMA user_version")
        .fetch_one(&mut *conn)
        .await
        .map_err(store_error)?;
    if version > SCHEMA_VERSION {
        return Err(StoreError::Corrupt(format!(
            "schema version {version} is newer than this build's {SCHEMA_VERSION}"
        )));
    }
    if version < SCHEMA_VERSION {
        sqlx::raw_sql(SCHEMA)
            .execute(&mut *conn)
            .await
            .map_err(store_error)?;
    }
    Ok(())
}

async fn current_head(conn: &mut SqliteConnection) -> Result<u64, StoreError> {
    let head: i64 = sqlx::query_scalar("SELECT COALESCE(MAX(global_position), 0) FROM events")
        .fetch_one(&mut *conn)
        .await
        .map_err(store_error)?;
    to_u64(head, "head")
}

/// An event as [`READ_ALL_PACKED`] packs it.
#[derive(serde::Deserialize)]
struct PackedEvent(
    u64,
    Uuid,
    String,
    String,
    u64,
    String,
    u32,
    #[serde(with = "domain::time::rfc3339")] chrono::DateTime<chrono::Utc>,
    domain::envelope::Payload,
    domain::EventMetadata,
);

impl PackedEvent {
    fn into_event(self) -> RecordedEvent {
        let PackedEvent(
            position,
            event_id,
            stream_id,
            stream_type,
            version,
            event_type,
            schema_version,
            occurred_at,
            payload,
            metadata,
        ) = self;
        RecordedEvent {
            event_id,
            stream_id,
            stream_type,
            version,
            global_position: Some(position),
            event_type,
            schema_version,
            occurred_at,
            payload,
            metadata,
        }
    }
}

/// A row of [`READ_STREAM`].
fn decode_event(row: &rusqlite::Row<'_>) -> Result<RecordedEvent, StoreError> {
    let text = |i: usize| {
        row.get_ref(i)
            .and_then(|v| Ok(v.as_str()?))
            .map_err(read_error)
    };
    let number = |i: usize, what: &str| {
        row.get::<_, i64>(i)
            .map_err(read_error)
            .and_then(|n| to_u64(n, what))
    };
    let event_id = text(1)?;
    let schema_version = number(6, "schema_version")?;
    Ok(RecordedEvent {
        event_id: Uuid::parse_str(event_id)
            .map_err(|e| StoreError::Corrupt(format!("event id {event_id:?}: {e}")))?,
        stream_id: text(2)?.to_owned(),
        stream_type: text(3)?.to_owned(),
        version: number(4, "version")?,
        global_position: Some(number(0, "global_position")?),
        event_type: text(5)?.to_owned(),
        schema_version: u32::try_from(schema_version)
            .map_err(|_| StoreError::Corrupt(format!("schema_version {schema_version}")))?,
        occurred_at: parse_time(text(7)?)?,
        payload: from_json(text(8)?, "payload")?,
        metadata: from_json(text(9)?, "metadata")?,
    })
}

/// Where sqlx's errors (opening the file, migrating its schema) become the port's; rusqlite's,
/// the writer's and the readers', become it in [`writer::store_error`].
fn store_error(error: sqlx::Error) -> StoreError {
    match &error {
        // Versions are assigned under the write lock, so the only unique key a request can
        // collide on is `event_id`: the caller reused an id from another append.
        sqlx::Error::Database(db) if db.is_unique_violation() => {
            StoreError::Corrupt(format!("duplicate event id: {}", db.message()))
        }
        sqlx::Error::ColumnDecode { .. }
        | sqlx::Error::ColumnNotFound(_)
        | sqlx::Error::ColumnIndexOutOfBounds { .. }
        | sqlx::Error::Decode(_)
        | sqlx::Error::TypeNotFound { .. } => StoreError::Corrupt(error.to_string()),
        _ => StoreError::Unavailable(error.to_string()),
    }
}
