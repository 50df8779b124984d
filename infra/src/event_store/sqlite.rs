//! The embedded event store: one SQLite file in WAL mode, written through group commit.
//!
//! # Group commit
//!
//! With `synchronous = FULL` every committed transaction costs an fsync, and a disk does a few
//! hundred of those per second. Committing each append on its own would cap the whole system
//! at that many commands per second, however small they are. So one writer task owns the only
//! write connection and an mpsc channel of requests, each with a oneshot for its answer. It
//! takes the first request, drains whatever else is already waiting (up to [`MAX_BATCH`]), and
//! commits them all in ONE `BEGIN IMMEDIATE … COMMIT`: one fsync per batch instead of one per
//! command. Under load batches grow by themselves (requests pile up during the fsync), and
//! when idle a lone request is committed at once, so latency does not suffer.
//!
//! Each request still gets its own answer. Inside the transaction, requests run in channel
//! order, each in its own `SAVEPOINT`: a conflict or a refused request rolls back alone and the
//! others commit. A later request for the same stream sees the rows of an earlier one, because
//! it reads the stream's version inside the same transaction. Callers hear back only after the
//! `COMMIT` succeeded; if the `COMMIT` fails, every caller in the batch is told `Unavailable`.
//!
//! # Reads
//!
//! Reads go through a small read-only pool: WAL lets readers run beside the writer, and each
//! statement sees the last committed state.
//!
//! # Shutdown
//!
//! Dropping the store closes the channel; the writer finishes what is already queued, closes
//! its connection and ends. [`EventStore::watch_head`] receivers then see the channel closed.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, SecondsFormat, Utc};
use commands::{Appended, EventStore, Lease, StoreError};
use domain::{NewEvent, RecordedEvent};
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteConnection, SqliteJournalMode, SqlitePool, SqlitePoolOptions,
    SqliteRow, SqliteSynchronous,
};
use sqlx::{ConnectOptions, Connection, Row};
use tokio::sync::{mpsc, oneshot, watch};
use uuid::Uuid;

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
const READ_ALL: &str = "SELECT global_position, event_id, stream_id, stream_type, version, \
     event_type, schema_version, occurred_at, payload, metadata \
     FROM events WHERE global_position > ? ORDER BY global_position LIMIT ?";
const INSERT_EVENT: &str = "INSERT INTO events (event_id, stream_id, stream_type, version, \
     event_type, schema_version, occurred_at, payload, metadata) \
     VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)";

/// The SQLite adapter of the [`EventStore`] port.
///
/// `read_all` never skips a late commit: there is one writer, and SQLite's write lock admits
/// one transaction at a time anyway, so positions are handed out in commit order. A reader
/// that has seen position `p` can never later find a newly committed event below `p`.
pub struct SqliteEventStore {
    requests: mpsc::Sender<Request>,
    reads: SqlitePool,
    head: watch::Receiver<u64>,
    batches: Arc<AtomicU64>,
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

        let (requests, queue) = mpsc::channel(QUEUE_CAPACITY);
        let (head_tx, head) = watch::channel(head);
        let batches = Arc::new(AtomicU64::new(0));
        let writer = Writer {
            conn,
            queue,
            head: head_tx,
            batches: batches.clone(),
        };
        tokio::spawn(writer.run());
        Ok(Self {
            requests,
            reads,
            head,
            batches,
            leases: Arc::default(),
        })
    }

    /// How many transactions the writer has committed (for `/metrics`: appends divided by
    /// batches is the group-commit factor).
    pub fn batches_committed(&self) -> u64 {
        self.batches.load(Ordering::Relaxed)
    }

    /// Hands a write to the writer task and waits for its answer, which comes after COMMIT.
    async fn submit(&self, write: Write) -> Result<Written, StoreError> {
        let (reply, answer) = oneshot::channel();
        self.requests
            .send(Request { write, reply })
            .await
            .map_err(|_| writer_gone())?;
        answer.await.map_err(|_| writer_gone())?
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
            position,
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
        let write = Write::Append {
            stream_id: stream_id.to_owned(),
            stream_type: stream_type.to_owned(),
            expected: expected_version,
            events,
        };
        match self.submit(write).await? {
            Written::Appended(appended) => Ok(appended),
            Written::Checkpoint => Err(StoreError::Corrupt("writer mixed up answers".into())),
        }
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

    #[tracing::instrument(skip(self))]
    async fn read_all(&self, after: u64, limit: usize) -> Result<Vec<RecordedEvent>, StoreError> {
        let rows = sqlx::query(READ_ALL)
            .bind(to_i64(after))
            .bind(i64::try_from(limit).unwrap_or(i64::MAX))
            .fetch_all(&self.reads)
            .await
            .map_err(store_error)?;
        rows.iter().map(decode_event).collect()
    }

    #[tracing::instrument(skip(self))]
    async fn head(&self) -> Result<u64, StoreError> {
        let head: i64 = sqlx::query_scalar("SELECT COALESCE(MAX(global_position), 0) FROM events")
            .fetch_one(&self.reads)
            .await
            .map_err(store_error)?;
        to_u64(head, "head")
    }

    fn watch_head(&self) -> watch::Receiver<u64> {
        self.head.clone()
    }

    #[tracing::instrument(skip(self))]
    async fn checkpoint(&self, reader: &str) -> Result<u64, StoreError> {
        let position: Option<i64> =
            sqlx::query_scalar("SELECT position FROM checkpoints WHERE reader = ?")
                .bind(reader)
                .fetch_optional(&self.reads)
                .await
                .map_err(store_error)?;
        position.map_or(Ok(0), |p| to_u64(p, "checkpoint"))
    }

    /// Goes through the writer, so a relay's checkpoints share the appends' fsyncs.
    #[tracing::instrument(skip(self))]
    async fn save_checkpoint(&self, reader: &str, position: u64) -> Result<(), StoreError> {
        let write = Write::Checkpoint {
            reader: reader.to_owned(),
            position,
        };
        self.submit(write).await.map(|_| ())
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

/// One write, as queued for the writer task.
struct Request {
    write: Write,
    reply: oneshot::Sender<Result<Written, StoreError>>,
}

enum Write {
    Append {
        stream_id: String,
        stream_type: String,
        expected: u64,
        events: Vec<NewEvent>,
    },
    Checkpoint {
        reader: String,
        position: u64,
    },
}

enum Written {
    Appended(Appended),
    Checkpoint,
}

/// The task that owns the write connection; see the module docs.
struct Writer {
    conn: SqliteConnection,
    queue: mpsc::Receiver<Request>,
    head: watch::Sender<u64>,
    batches: Arc<AtomicU64>,
}

impl Writer {
    async fn run(mut self) {
        while let Some(first) = self.queue.recv().await {
            let (writes, replies): (Vec<_>, Vec<_>) = self
                .drain(first)
                .into_iter()
                .map(|request| (request.write, request.reply))
                .unzip();
            let results = self.commit_batch(&writes).await;
            for (reply, result) in replies.into_iter().zip(results) {
                // A caller that gave up no longer listens; its events are committed anyway,
                // and a retry with the same event ids is answered as a duplicate.
                let _ = reply.send(result);
            }
        }
        if let Err(error) = self.conn.close().await {
            tracing::warn!(%error, "closing the event store's write connection failed");
        }
    }

    /// The first request plus every request already waiting, up to [`MAX_BATCH`].
    fn drain(&mut self, first: Request) -> Vec<Request> {
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match self.queue.try_recv() {
                Ok(request) => batch.push(request),
                Err(_) => break,
            }
        }
        batch
    }

    /// Commits the batch in one transaction and returns each request's answer, in order.
    async fn commit_batch(&mut self, writes: &[Write]) -> Vec<Result<Written, StoreError>> {
        match self.write_batch(writes).await {
            Ok(results) => {
                self.batches.fetch_add(1, Ordering::Relaxed);
                self.publish_head(&results);
                tracing::debug!(requests = writes.len(), "committed a batch");
                results
            }
            Err(error) => {
                tracing::warn!(%error, requests = writes.len(), "event store batch failed");
                // The transaction may already be gone (SQLite rolls back on some errors).
                let _ = sqlx::query("ROLLBACK").execute(&mut self.conn).await;
                let failure = StoreError::Unavailable(format!("batch rolled back: {error}"));
                writes.iter().map(|_| Err(failure.clone())).collect()
            }
        }
    }

    /// `Err` only for what fails the whole batch; a request's own failure is in its answer.
    async fn write_batch(
        &mut self,
        writes: &[Write],
    ) -> Result<Vec<Result<Written, StoreError>>, sqlx::Error> {
        self.execute("BEGIN IMMEDIATE").await?;
        let mut results = Vec::with_capacity(writes.len());
        for write in writes {
            results.push(self.write_in_savepoint(write).await?);
        }
        self.execute("COMMIT").await?;
        Ok(results)
    }

    async fn write_in_savepoint(
        &mut self,
        write: &Write,
    ) -> Result<Result<Written, StoreError>, sqlx::Error> {
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

    fn publish_head(&self, results: &[Result<Written, StoreError>]) {
        let newest = results
            .iter()
            .filter_map(|result| match result {
                Ok(Written::Appended(a)) if !a.duplicate => Some(a.position),
                _ => None,
            })
            .max();
        if let Some(newest) = newest {
            self.head.send_if_modified(|head| {
                let moved = newest > *head;
                *head = (*head).max(newest);
                moved
            });
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
        position,
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
        position,
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
    sqlx::query(
        "INSERT INTO checkpoints (reader, position) VALUES (?, ?) \
         ON CONFLICT (reader) DO UPDATE SET position = excluded.position",
    )
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
        global_position: get_u64(row, "global_position")?,
        event_type: row.try_get("event_type").map_err(store_error)?,
        schema_version: u32::try_from(schema_version)
            .map_err(|_| StoreError::Corrupt(format!("schema_version {schema_version}")))?,
        occurred_at: parse_time(&occurred_at)?,
        payload: from_json(&payload, "payload")?,
        metadata: from_json(&metadata, "metadata")?,
    })
}

/// RFC 3339 in UTC with microseconds: sorts as text and is what the other engines keep.
fn format_time(at: DateTime<Utc>) -> String {
    at.to_rfc3339_opts(SecondsFormat::Micros, true)
}

fn parse_time(text: &str) -> Result<DateTime<Utc>, StoreError> {
    DateTime::parse_from_rfc3339(text)
        .map(|at| at.with_timezone(&Utc))
        .map_err(|e| StoreError::Corrupt(format!("occurred_at {text:?}: {e}")))
}

fn to_json(value: &impl serde::Serialize) -> Result<String, StoreError> {
    serde_json::to_string(value).map_err(|e| StoreError::Corrupt(format!("cannot encode: {e}")))
}

fn from_json<T: serde::de::DeserializeOwned>(text: &str, what: &str) -> Result<T, StoreError> {
    serde_json::from_str(text).map_err(|e| StoreError::Corrupt(format!("{what}: {e}")))
}

fn get_u64(row: &SqliteRow, column: &str) -> Result<u64, StoreError> {
    let value: i64 = row.try_get(column).map_err(store_error)?;
    to_u64(value, column)
}

fn to_u64(value: i64, what: &str) -> Result<u64, StoreError> {
    u64::try_from(value).map_err(|_| StoreError::Corrupt(format!("negative {what}: {value}")))
}

/// SQLite integers are signed; no real version or position comes near `i64::MAX`.
fn to_i64(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

fn writer_gone() -> StoreError {
    StoreError::Unavailable("the event store's writer has stopped".into())
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
