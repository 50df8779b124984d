//! The embedded event store: one SQLite file in WAL mode, written through group commit.
//!
//! # Group commit
//!
//! With `synchronous = FULL` every committed transaction costs an fsync, and a disk does a few
//! hundred of those per second, so appends and checkpoints go through group commit (the
//! `group_commit` module explains it): one writer task owns the only write connection and
//! commits every request waiting at that moment (up to [`MAX_BATCH`]) in ONE
//! `BEGIN IMMEDIATE … COMMIT`, one fsync per batch. The writer decides the whole batch itself
//! after one lookup and inserts it in multi-row INSERTs; a batch SQLite refuses is written again
//! request by request, each in its own `SAVEPOINT`.
//!
//! # Reads
//!
//! Reads go through a small read-only pool: WAL lets readers run beside the writer, and each
//! statement sees the last committed state.
//!
//! # Shutdown
//!
//! Dropping the store stops the writer once it has committed what is already queued; the
//! writer owns the head's only sender, so [`EventStore::watch_head`] receivers then see the
//! channel closed.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use commands::{Appended, EventStore, Lease, LogCursor, LogPage, StoreError};
use domain::{NewEvent, RecordedEvent};
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteConnection, SqliteJournalMode, SqlitePool, SqlitePoolOptions,
    SqliteRow, SqliteSynchronous,
};
use sqlx::{ConnectOptions, Connection, Row};
use tokio::sync::watch;
use uuid::Uuid;

use super::batch::{self, Keys, Stored};
use super::codec::{
    format_time, from_json, numbered_lag, numbered_page, parse_time, to_i64, to_json, to_u64,
};
use super::group_commit::{Answer, BatchCommit, GroupCommit, Write, Written};

/// The most requests one transaction takes; the rest wait for the next batch.
pub const MAX_BATCH: usize = 512;
/// Requests waiting for the writer before `append` itself waits (back-pressure).
const QUEUE_CAPACITY: usize = 4 * MAX_BATCH;
/// How long a statement waits for a lock held by another process before giving up.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);
/// Read-only connections beside the writer.
const READERS: u32 = 4;

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
/// Opens a batch: the write lock, a savepoint to fall back to, and the head. Positions go on
/// from the highest ever handed out (`sqlite_sequence`, as AUTOINCREMENT would).
const OPEN_BATCH: &str = "BEGIN IMMEDIATE; SAVEPOINT batch; \
     SELECT MAX(COALESCE((SELECT MAX(global_position) FROM events), 0), \
     COALESCE((SELECT seq FROM sqlite_sequence WHERE name = 'events'), 0))";
/// Where a batch's streams and event ids are, keys passed as JSON arrays. Each stream's
/// version is a subquery of its own, which SQLite answers from the end of the index; a
/// `MAX … GROUP BY` would read every version of the stream (a busy SKU has thousands).
const LOOKUP: &str = "SELECT 'event' AS kind, event_id AS key, stream_id, version, \
     global_position FROM events WHERE event_id IN (SELECT value FROM json_each(?1)) \
     UNION ALL \
     SELECT 'stream', s.value, s.value, \
     COALESCE((SELECT MAX(version) FROM events WHERE stream_id = s.value), 0), 0 \
     FROM json_each(?2) AS s";
/// Rows per INSERT: ten parameters each, well inside SQLite's 32,766.
const INSERT_ROWS: usize = 64;
const SAVE_CHECKPOINT: &str = "INSERT INTO checkpoints (reader, position) VALUES (?, ?) \
     ON CONFLICT (reader) DO UPDATE SET position = excluded.position";

/// `INSERT … VALUES (…), (…)` for `rows` events (1 to [`INSERT_ROWS`]); the texts are made
/// once, so that sqlx's statement cache keeps each prepared.
fn insert_rows(rows: usize) -> &'static str {
    static TEXTS: std::sync::OnceLock<Vec<String>> = std::sync::OnceLock::new();
    let texts = TEXTS.get_or_init(|| {
        (1..=INSERT_ROWS)
            .map(|n| {
                let values = vec!["(?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"; n].join(", ");
                format!(
                    "INSERT INTO events (global_position, event_id, stream_id, stream_type, \
                     version, event_type, schema_version, occurred_at, payload, metadata) \
                     VALUES {values}"
                )
            })
            .collect()
    });
    &texts[rows.clamp(1, INSERT_ROWS) - 1]
}

const INSERT_EVENT: &str = "INSERT INTO events (event_id, stream_id, stream_type, version, \
     event_type, schema_version, occurred_at, payload, metadata) \
     VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)";

/// The SQLite adapter of the [`EventStore`] port.
///
/// `read_all` never skips a late commit: there is one writer, and SQLite's write lock admits
/// one transaction at a time anyway, so positions are handed out in commit order. A reader
/// that has seen position `p` can never later find a newly committed event below `p`.
pub struct SqliteEventStore {
    writer: GroupCommit,
    reads: SqlitePool,
    head: watch::Receiver<u64>,
    /// Names of the leases this process holds.
    leases: Arc<std::sync::Mutex<std::collections::HashSet<String>>>,
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
        let reads = SqlitePoolOptions::new()
            .max_connections(READERS)
            .connect_with(options.read_only(true))
            .await
            .map_err(store_error)?;

        let (head_tx, head) = watch::channel(head);
        let writer = GroupCommit::start(
            // One writer: SQLite takes one write transaction at a time anyway.
            [Writer { conn }],
            MAX_BATCH,
            QUEUE_CAPACITY,
            // A batch is cheap in-process; waiting for a fuller one did not pay (peer bench).
            Duration::ZERO,
            head_tx,
        );
        Ok(Self {
            writer,
            reads,
            head,
            leases: Arc::default(),
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
        let head: i64 = sqlx::query_scalar("SELECT COALESCE(MAX(global_position), 0) FROM events")
            .fetch_one(&self.reads)
            .await
            .map_err(store_error)?;
        to_u64(head, "head")
    }

    /// What an empty append answers: the stream as it is.
    async fn stream_tip(&self, stream_id: &str) -> Result<Appended, StoreError> {
        let row = sqlx::query(
            "SELECT version, global_position FROM events WHERE stream_id = ? \
             ORDER BY version DESC LIMIT 1",
        )
        .bind(stream_id)
        .fetch_optional(&self.reads)
        .await
        .map_err(store_error)?;
        let (version, position) = match row {
            Some(row) => (get_u64(&row, "version")?, get_u64(&row, "global_position")?),
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
        let rows = sqlx::query(READ_STREAM)
            .bind(stream_id)
            .bind(to_i64(from_version))
            .fetch_all(&self.reads)
            .await
            .map_err(store_error)?;
        rows.iter().map(decode_event).collect()
    }

    /// The page comes back from SQLite as one row, a JSON array of the events: handing rows
    /// over from sqlx's worker thread one at a time costs more than the query itself.
    #[tracing::instrument(skip(self))]
    async fn read_all(&self, after: &LogCursor, limit: usize) -> Result<LogPage, StoreError> {
        let packed: String = sqlx::query_scalar(READ_ALL_PACKED)
            .bind(to_i64(after.position()?))
            .bind(i64::try_from(limit).unwrap_or(i64::MAX))
            .fetch_one(&self.reads)
            .await
            .map_err(store_error)?;
        let mut events: Vec<RecordedEvent> =
            from_json::<Vec<PackedEvent>>(&packed, "a page of the log")?
                .into_iter()
                .map(PackedEvent::into_event)
                .collect();
        // Kept in the log's order whatever order the aggregate saw its rows in.
        events.sort_by_key(|e| e.global_position);
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
        let position: Option<i64> =
            sqlx::query_scalar("SELECT position FROM checkpoints WHERE reader = ?")
                .bind(reader)
                .fetch_optional(&self.reads)
                .await
                .map_err(store_error)?;
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
        sqlx::query("SELECT 1")
            .execute(&self.reads)
            .await
            .map_err(store_error)?;
        Ok(())
    }

    fn group_commits(&self) -> Option<u64> {
        Some(self.batches_committed())
    }

    /// One process owns a SQLite file (its writer task is the only writer), so the lease is
    /// this process's to give: held until the guard is dropped, refused to a second taker.
    async fn lease(&self, name: &str) -> Result<Option<Box<dyn Lease>>, StoreError> {
        let mut leases = self
            .leases
            .lock()
            .map_err(|_| StoreError::Unavailable("lease table poisoned".into()))?;
        if !leases.insert(name.to_owned()) {
            return Ok(None);
        }
        Ok(Some(Box::new(LocalLease {
            name: name.to_owned(),
            leases: self.leases.clone(),
        })))
    }
}

/// A lease on a SQLite store, released when dropped.
struct LocalLease {
    name: String,
    leases: Arc<std::sync::Mutex<std::collections::HashSet<String>>>,
}

#[async_trait]
impl Lease for LocalLease {
    async fn held(&mut self) -> bool {
        true
    }
}

impl Drop for LocalLease {
    fn drop(&mut self) {
        if let Ok(mut leases) = self.leases.lock() {
            leases.remove(&self.name);
        }
    }
}

/// The group-commit writer's engine: owns the only write connection.
struct Writer {
    conn: SqliteConnection,
}

impl BatchCommit for Writer {
    async fn commit(&mut self, writes: &[Write]) -> Result<Vec<Answer>, StoreError> {
        match self.write_batch(writes).await {
            Ok(answers) => Ok(answers),
            Err(error) => {
                tracing::warn!(%error, requests = writes.len(), "event store batch failed");
                // The transaction may already be gone (SQLite rolls back on some errors).
                let _ = self.execute("ROLLBACK").await;
                Err(StoreError::Unavailable(format!(
                    "batch rolled back: {error}"
                )))
            }
        }
    }

    async fn close(self) {
        if let Err(error) = self.conn.close().await {
            tracing::warn!(%error, "closing the event store's write connection failed");
        }
    }
}

impl Writer {
    /// `Err` only for what fails the whole batch; a request's own failure is in its answer.
    ///
    /// The batch is decided here and written in one INSERT per [`INSERT_ROWS`] events (the
    /// `batch` module); should SQLite refuse it, the batch goes back to its savepoint and is
    /// written request by request, each in a savepoint of its own, so that only the request at
    /// fault fails.
    async fn write_batch(&mut self, writes: &[Write]) -> Result<Vec<Answer>, sqlx::Error> {
        let rows = sqlx::Executor::fetch_all(&mut self.conn, sqlx::raw_sql(OPEN_BATCH)).await?;
        let start: i64 = match rows.last() {
            Some(row) => row.try_get(0)?,
            None => return Err(sqlx::Error::RowNotFound),
        };
        let start = u64::try_from(start).unwrap_or_default();
        let results = match self.write_at_once(start, writes).await {
            Ok(answers) => answers,
            Err(error @ sqlx::Error::Database(_)) => {
                tracing::debug!(%error, "batch refused as a whole; writing request by request");
                self.execute("ROLLBACK TO batch").await?;
                let mut results = Vec::with_capacity(writes.len());
                for write in writes {
                    results.push(self.write_in_savepoint(write).await?);
                }
                results
            }
            Err(other) => return Err(other),
        };
        self.execute("COMMIT").await?;
        Ok(results)
    }

    /// One lookup, the decisions, the INSERTs and the checkpoints.
    async fn write_at_once(
        &mut self,
        start: u64,
        writes: &[Write],
    ) -> Result<Vec<Answer>, sqlx::Error> {
        let stored = self.lookup(Keys::of(writes)).await?;
        let plan = batch::plan(stored, start, writes);
        for chunk in plan.rows.chunks(INSERT_ROWS) {
            let mut insert = sqlx::query(insert_rows(chunk.len()));
            for row in chunk {
                insert = insert
                    .bind(to_i64(row.position))
                    .bind(row.event.event_id.to_string())
                    .bind(row.stream_id)
                    .bind(row.stream_type)
                    .bind(to_i64(row.version))
                    .bind(row.event.event_type.as_str())
                    .bind(row.schema_version)
                    .bind(format_time(row.event.occurred_at))
                    .bind(row.payload.as_str())
                    .bind(row.metadata.as_str());
            }
            insert.execute(&mut self.conn).await?;
        }
        for (reader, position) in &plan.checkpoints {
            sqlx::query(SAVE_CHECKPOINT)
                .bind(*reader)
                .bind(to_i64(*position))
                .execute(&mut self.conn)
                .await?;
        }
        Ok(plan.answers)
    }

    async fn lookup(&mut self, keys: Keys) -> Result<Stored, sqlx::Error> {
        let mut stored = Stored::default();
        if keys.is_empty() {
            return Ok(stored);
        }
        let encode = |keys: &[String]| serde_json::to_string(keys).unwrap_or_default();
        let rows = sqlx::query(LOOKUP)
            .bind(encode(&keys.event_ids))
            .bind(encode(&keys.streams))
            .fetch_all(&mut self.conn)
            .await?;
        for row in rows {
            stored.add(
                row.try_get("kind")?,
                row.try_get("key")?,
                row.try_get("stream_id")?,
                row.try_get("version")?,
                row.try_get("global_position")?,
            );
        }
        Ok(stored)
    }

    async fn write_in_savepoint(&mut self, write: &Write) -> Result<Answer, sqlx::Error> {
        self.execute("SAVEPOINT request").await?;
        let result = self.write(write).await;
        if result.is_err() {
            self.execute("ROLLBACK TO request").await?;
        }
        self.execute("RELEASE request").await?;
        Ok(result)
    }

    async fn write(&mut self, write: &Write) -> Result<Written, StoreError> {
        match write {
            Write::Append {
                stream_id,
                stream_type,
                expected,
                events,
            } => append(&mut self.conn, stream_id, stream_type, *expected, events)
                .await
                .map(Written::Appended),
            Write::Checkpoint { reader, position } => {
                save_checkpoint(&mut self.conn, reader, *position).await?;
                Ok(Written::Checkpoint)
            }
        }
    }

    async fn execute(&mut self, sql: &str) -> Result<(), sqlx::Error> {
        sqlx::query(sql).execute(&mut self.conn).await.map(|_| ())
    }
}

/// One append inside the writer's transaction: idempotent retry, version check, insert.
async fn append(
    conn: &mut SqliteConnection,
    stream_id: &str,
    stream_type: &str,
    expected: u64,
    events: &[NewEvent],
) -> Result<Appended, StoreError> {
    if let Some(earlier) = earlier_append(conn, stream_id, events).await? {
        return Ok(earlier);
    }
    let actual = stream_version(conn, stream_id).await?;
    if actual != expected {
        return Err(StoreError::Conflict {
            stream_id: stream_id.to_owned(),
            expected,
            actual,
        });
    }
    let mut position = 0;
    for (event, version) in events.iter().zip(expected + 1..) {
        position = insert(conn, stream_id, stream_type, version, event).await?;
    }
    Ok(Appended {
        version: expected + events.len() as u64,
        position: Some(position),
        duplicate: false,
    })
}

/// When the first event is already stored in this stream, the answer the original append got.
async fn earlier_append(
    conn: &mut SqliteConnection,
    stream_id: &str,
    events: &[NewEvent],
) -> Result<Option<Appended>, StoreError> {
    let Some(first) = events.first() else {
        return Ok(None);
    };
    let stored = sqlx::query("SELECT stream_id, version FROM events WHERE event_id = ?")
        .bind(first.event_id.to_string())
        .fetch_optional(&mut *conn)
        .await
        .map_err(store_error)?;
    let Some(stored) = stored else {
        return Ok(None);
    };
    let stored_stream: String = stored.try_get("stream_id").map_err(store_error)?;
    if stored_stream != stream_id {
        return Err(StoreError::Corrupt(format!(
            "duplicate event id {}: already stored in stream {stored_stream}",
            first.event_id
        )));
    }
    let from = get_u64(&stored, "version")?;
    let to = from + events.len() as u64 - 1;
    let rows = sqlx::query(
        "SELECT event_id, global_position FROM events \
         WHERE stream_id = ? AND version BETWEEN ? AND ? ORDER BY version",
    )
    .bind(stream_id)
    .bind(to_i64(from))
    .bind(to_i64(to))
    .fetch_all(&mut *conn)
    .await
    .map_err(store_error)?;
    let stored_ids: Vec<String> = rows
        .iter()
        .map(|row| row.try_get("event_id"))
        .collect::<Result<_, _>>()
        .map_err(store_error)?;
    let retried_ids: Vec<String> = events.iter().map(|e| e.event_id.to_string()).collect();
    if stored_ids != retried_ids {
        return Err(StoreError::Corrupt(format!(
            "event {} is already in {stream_id} at version {from} with other events; \
             a retry must resend the same events",
            first.event_id
        )));
    }
    let position = rows
        .last()
        .map_or(Ok(0), |row| get_u64(row, "global_position"))?;
    Ok(Some(Appended {
        version: to,
        position: Some(position),
        duplicate: true,
    }))
}

async fn stream_version(conn: &mut SqliteConnection, stream_id: &str) -> Result<u64, StoreError> {
    let version: i64 =
        sqlx::query_scalar("SELECT COALESCE(MAX(version), 0) FROM events WHERE stream_id = ?")
            .bind(stream_id)
            .fetch_one(&mut *conn)
            .await
            .map_err(store_error)?;
    to_u64(version, "version")
}

/// Inserts one event and returns its global position.
async fn insert(
    conn: &mut SqliteConnection,
    stream_id: &str,
    stream_type: &str,
    version: u64,
    event: &NewEvent,
) -> Result<u64, StoreError> {
    let payload = to_json(&event.payload)?;
    let metadata = to_json(&event.metadata)?;
    let done = sqlx::query(INSERT_EVENT)
        .bind(event.event_id.to_string())
        .bind(stream_id)
        .bind(stream_type)
        .bind(to_i64(version))
        .bind(&event.event_type)
        .bind(i64::from(event.schema_version))
        .bind(format_time(event.occurred_at))
        .bind(payload)
        .bind(metadata)
        .execute(&mut *conn)
        .await
        .map_err(store_error)?;
    to_u64(done.last_insert_rowid(), "global_position")
}

async fn save_checkpoint(
    conn: &mut SqliteConnection,
    reader: &str,
    position: u64,
) -> Result<(), StoreError> {
    sqlx::query(SAVE_CHECKPOINT)
        .bind(reader)
        .bind(to_i64(position))
        .execute(&mut *conn)
        .await
        .map_err(store_error)?;
    Ok(())
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

fn decode_event(row: &SqliteRow) -> Result<RecordedEvent, StoreError> {
    let event_id: String = row.try_get("event_id").map_err(store_error)?;
    let occurred_at: String = row.try_get("occurred_at").map_err(store_error)?;
    let payload: String = row.try_get("payload").map_err(store_error)?;
    let metadata: String = row.try_get("metadata").map_err(store_error)?;
    let schema_version: i64 = row.try_get("schema_version").map_err(store_error)?;
    Ok(RecordedEvent {
        event_id: Uuid::parse_str(&event_id)
            .map_err(|e| StoreError::Corrupt(format!("event id {event_id:?}: {e}")))?,
        stream_id: row.try_get("stream_id").map_err(store_error)?,
        stream_type: row.try_get("stream_type").map_err(store_error)?,
        version: get_u64(row, "version")?,
        global_position: Some(get_u64(row, "global_position")?),
        event_type: row.try_get("event_type").map_err(store_error)?,
        schema_version: u32::try_from(schema_version)
            .map_err(|_| StoreError::Corrupt(format!("schema_version {schema_version}")))?,
        occurred_at: parse_time(&occurred_at)?,
        payload: from_json(&payload, "payload")?,
        metadata: from_json(&metadata, "metadata")?,
    })
}

fn get_u64(row: &SqliteRow, column: &str) -> Result<u64, StoreError> {
    let value: i64 = row.try_get(column).map_err(store_error)?;
    to_u64(value, column)
}

/// The one place where SQLite's errors become the port's.
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
