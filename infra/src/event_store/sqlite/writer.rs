//! The SQLite store's write side: the only write connection, on a thread of its own.
//!
//! The group-commit writer runs on this connection's own thread (`GroupCommit::on_thread`):
//! callers queue their requests for it, and it runs each batch's transaction from
//! `BEGIN IMMEDIATE` to `COMMIT` (the fsync included) in one go, with prepared statements it
//! keeps, and answers each caller itself. Through sqlx each statement of a batch was a hand-over
//! to sqlx's connection thread and back, five of them for a typical batch (open, lookup,
//! insert, checkpoint, commit). At 1,000 orders/s embedded the batches took 860 µs on average,
//! for a fsync of 200 µs and 220 µs of SQLite's own work: the rest was those hand-overs,
//! each waiting for a core, and the writer was busy 97 % of the time.
//!
//! # Checkpoints
//!
//! SQLite copies the WAL back into the database (a checkpoint, with its own fsync) in the
//! connection that commits once the WAL holds 1,000 pages: in the writer, between two batches,
//! every few seconds under load, and some of those took 20 to 60 ms, holding up every append.
//! So a second thread with its own connection checkpoints every [`CHECKPOINT_EVERY`]
//! (`PASSIVE`: it never waits for, or holds up, the writer). The writer's own checkpoints stay
//! on: with most of the WAL already copied they are short, and they are what lets the WAL
//! start over from its beginning (a checkpoint beside a busy writer never catches up with its
//! last frame, and the WAL would grow without end).

use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::Duration;

use domain::NewEvent;
use eventlog::{Appended, StoreError};
use rusqlite::{Connection, ErrorCode, OpenFlags, OptionalExtension, Statement, ToSql};
use uuid::Uuid;

use super::super::batch::{self, Keys, Stored};
use super::super::codec::{format_time, to_i64, to_json, to_u64};
use super::super::group_commit::{Answer, Write, Written};

/// Positions go on from the highest ever handed out (`sqlite_sequence`, as AUTOINCREMENT
/// would): the head a batch numbers after.
const HEAD: &str = "SELECT MAX(COALESCE((SELECT MAX(global_position) FROM events), 0), \
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
const INSERT_EVENT: &str = "INSERT INTO events (event_id, stream_id, stream_type, version, \
     event_type, schema_version, occurred_at, payload, metadata) \
     VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)";
/// Prepared statements the connection keeps: an INSERT per row count, and the rest.
const STATEMENT_CACHE: usize = INSERT_ROWS + 16;
/// How often the checkpoint thread copies the WAL into the database.
const CHECKPOINT_EVERY: Duration = Duration::from_millis(100);

/// `INSERT … VALUES (…), (…)` for `rows` events (1 to [`INSERT_ROWS`]); the texts are made
/// once, and the connection keeps each prepared.
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

/// The write connection and the checkpoint thread beside it: what the group-commit thread
/// (`GroupCommit::on_thread`) commits each batch with. Dropped with that thread, it closes
/// the connection and stops the checkpoint thread.
pub(super) struct Writer {
    conn: Connection,
    /// Dropped to stop the checkpoint thread.
    _checkpoints: mpsc::Sender<()>,
}

impl Writer {
    /// Opens the write connection to the (migrated) database at `path` and starts the
    /// checkpoint thread.
    pub(super) fn open(path: &Path, busy_timeout: Duration) -> Result<Self, StoreError> {
        let conn = connect(path, busy_timeout)?;
        conn.set_prepared_statement_cache_capacity(STATEMENT_CACHE);
        let checkpointing = connect(path, busy_timeout)?;
        let (checkpoints, stop) = mpsc::channel::<()>();
        start("sqlite-checkpoint", move || checkpoint(checkpointing, stop))?;
        Ok(Self {
            conn,
            _checkpoints: checkpoints,
        })
    }

    /// One batch in one transaction; `Err` only for what fails the whole batch (rolled back).
    pub(super) fn commit(&mut self, writes: Vec<Write>) -> Result<Vec<Answer>, StoreError> {
        commit(&self.conn, &writes)
    }
}

/// A read-write connection to the (migrated) database at `path`, durable at commit: the WAL
/// is synced before COMMIT answers.
fn connect(path: &Path, busy_timeout: Duration) -> Result<Connection, StoreError> {
    let conn = open(path, OpenFlags::SQLITE_OPEN_READ_WRITE, busy_timeout)?;
    conn.pragma_update(None, "synchronous", "FULL")
        .map_err(|e| open_error(path, e))?;
    Ok(conn)
}

/// A connection to the (migrated) database at `path` with `flags`, for one thread's use,
/// waiting up to `busy_timeout` for another process's lock.
pub(super) fn open(
    path: &Path,
    flags: OpenFlags,
    busy_timeout: Duration,
) -> Result<Connection, StoreError> {
    let conn = Connection::open_with_flags(path, flags | OpenFlags::SQLITE_OPEN_NO_MUTEX)
        .map_err(|e| open_error(path, e))?;
    conn.busy_timeout(busy_timeout)
        .map_err(|e| open_error(path, e))?;
    Ok(conn)
}

pub(super) fn start(name: &str, work: impl FnOnce() + Send + 'static) -> Result<(), StoreError> {
    std::thread::Builder::new()
        .name(name.into())
        .spawn(work)
        .map(drop)
        .map_err(|e| StoreError::Unavailable(format!("cannot start {name}: {e}")))
}

/// The checkpoint thread: a `PASSIVE` checkpoint every [`CHECKPOINT_EVERY`] until `stop`'s
/// sender is dropped.
fn checkpoint(conn: Connection, stop: mpsc::Receiver<()>) {
    while let Err(mpsc::RecvTimeoutError::Timeout) = stop.recv_timeout(CHECKPOINT_EVERY) {
        let done: rusqlite::Result<(i64, i64, i64)> =
            conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |row| {
                Ok((row.get(0)?, row.get(1)?, row.get(2)?))
            });
        if let Err(error) = done {
            tracing::debug!(%error, "a WAL checkpoint failed; the next one tries again");
        }
    }
    if let Err((_, error)) = conn.close() {
        tracing::warn!(%error, "closing the event store's checkpoint connection failed");
    }
}

fn open_error(path: &Path, error: rusqlite::Error) -> StoreError {
    StoreError::Unavailable(format!(
        "cannot open {}: {error}",
        PathBuf::from(path).display()
    ))
}

/// One batch in one transaction; `Err` only for what fails the whole batch (rolled back).
fn commit(conn: &Connection, writes: &[Write]) -> Result<Vec<Answer>, StoreError> {
    match write_batch(conn, writes) {
        Ok(answers) => Ok(answers),
        Err(error) => {
            tracing::warn!(%error, requests = writes.len(), "event store batch failed");
            // The transaction may already be gone (SQLite rolls back on some errors).
            let _ = conn.execute_batch("ROLLBACK");
            Err(StoreError::Unavailable(format!(
                "batch rolled back: {error}"
            )))
        }
    }
}

/// The batch is decided here and written in one INSERT per [`INSERT_ROWS`] events (the
/// `batch` module); should SQLite refuse it, the batch goes back to its savepoint and is
/// written request by request, each in a savepoint of its own, so that only the request at
/// fault fails.
fn write_batch(conn: &Connection, writes: &[Write]) -> rusqlite::Result<Vec<Answer>> {
    conn.execute_batch("BEGIN IMMEDIATE; SAVEPOINT batch;")?;
    let start: i64 = conn.prepare_cached(HEAD)?.query_row([], |row| row.get(0))?;
    let start = u64::try_from(start).unwrap_or_default();
    let answers = match write_at_once(conn, start, writes) {
        Ok(answers) => answers,
        Err(error @ rusqlite::Error::SqliteFailure(..)) => {
            tracing::debug!(%error, "batch refused as a whole; writing request by request");
            conn.execute_batch("ROLLBACK TO batch")?;
            let mut answers = Vec::with_capacity(writes.len());
            for write in writes {
                answers.push(write_in_savepoint(conn, write)?);
            }
            answers
        }
        Err(other) => return Err(other),
    };
    conn.execute_batch("COMMIT")?;
    Ok(answers)
}

/// One lookup, the decisions, the INSERTs and the checkpoints.
fn write_at_once(conn: &Connection, start: u64, writes: &[Write]) -> rusqlite::Result<Vec<Answer>> {
    let stored = lookup(conn, Keys::of(writes))?;
    let plan = batch::plan(stored, start, writes);
    for chunk in plan.rows.chunks(INSERT_ROWS) {
        let mut insert = conn.prepare_cached(insert_rows(chunk.len()))?;
        let mut column = 0;
        for row in chunk {
            let event = row.event;
            let values: [&dyn ToSql; 10] = [
                &to_i64(row.position),
                &event.event_id.to_string(),
                &row.stream_id,
                &row.stream_type,
                &to_i64(row.version),
                &event.event_type,
                &row.schema_version,
                &format_time(event.occurred_at),
                &row.payload,
                &row.metadata,
            ];
            column = bind(&mut insert, column, &values)?;
        }
        insert.raw_execute()?;
    }
    let mut save = conn.prepare_cached(SAVE_CHECKPOINT)?;
    for (reader, position) in &plan.checkpoints {
        save.execute((reader, to_i64(*position)))?;
    }
    Ok(plan.answers)
}

/// Binds `values` after the `column`th parameter; answers the last one bound.
fn bind(
    statement: &mut Statement<'_>,
    column: usize,
    values: &[&dyn ToSql],
) -> rusqlite::Result<usize> {
    for (i, value) in values.iter().enumerate() {
        statement.raw_bind_parameter(column + i + 1, value)?;
    }
    Ok(column + values.len())
}

fn lookup(conn: &Connection, keys: Keys) -> rusqlite::Result<Stored> {
    let mut stored = Stored::default();
    if keys.is_empty() {
        return Ok(stored);
    }
    let encode = |keys: &[String]| serde_json::to_string(keys).unwrap_or_default();
    let mut query = conn.prepare_cached(LOOKUP)?;
    let mut rows = query.query((encode(&keys.event_ids), encode(&keys.streams)))?;
    while let Some(row) = rows.next()? {
        let kind: String = row.get("kind")?;
        let key: String = row.get("key")?;
        stored.add(
            &kind,
            &key,
            row.get("stream_id")?,
            row.get("version")?,
            row.get("global_position")?,
        );
    }
    Ok(stored)
}

fn write_in_savepoint(conn: &Connection, write: &Write) -> rusqlite::Result<Answer> {
    conn.execute_batch("SAVEPOINT request")?;
    let result = write_one(conn, write);
    if result.is_err() {
        conn.execute_batch("ROLLBACK TO request")?;
    }
    conn.execute_batch("RELEASE request")?;
    Ok(result)
}

fn write_one(conn: &Connection, write: &Write) -> Result<Written, StoreError> {
    match write {
        Write::Append {
            stream_id,
            stream_type,
            expected,
            events,
        } => append(conn, stream_id, stream_type, *expected, events).map(Written::Appended),
        Write::Checkpoint { reader, position } => {
            conn.prepare_cached(SAVE_CHECKPOINT)
                .and_then(|mut save| save.execute((reader, to_i64(*position))))
                .map_err(store_error)?;
            Ok(Written::Checkpoint)
        }
    }
}

/// One append inside the writer's transaction: idempotent retry, version check, insert.
fn append(
    conn: &Connection,
    stream_id: &str,
    stream_type: &str,
    expected: u64,
    events: &[NewEvent],
) -> Result<Appended, StoreError> {
    if let Some(earlier) = earlier_append(conn, stream_id, events)? {
        return Ok(earlier);
    }
    let actual = stream_version(conn, stream_id)?;
    if actual != expected {
        return Err(StoreError::Conflict {
            stream_id: stream_id.to_owned(),
            expected,
            actual,
        });
    }
    let mut position = 0;
    for (event, version) in events.iter().zip(expected + 1..) {
        position = insert(conn, stream_id, stream_type, version, event)?;
    }
    Ok(Appended {
        version: expected + events.len() as u64,
        position: Some(position),
        duplicate: false,
    })
}

/// When the first event is already stored in this stream, the answer the original append got.
fn earlier_append(
    conn: &Connection,
    stream_id: &str,
    events: &[NewEvent],
) -> Result<Option<Appended>, StoreError> {
    let Some(first) = events.first() else {
        return Ok(None);
    };
    let stored: Option<(String, i64)> = conn
        .prepare_cached("SELECT stream_id, version FROM events WHERE event_id = ?")
        .and_then(|mut find| {
            find.query_row([first.event_id.to_string()], |row| {
                Ok((row.get(0)?, row.get(1)?))
            })
            .optional()
        })
        .map_err(store_error)?;
    let Some((stored_stream, from)) = stored else {
        return Ok(None);
    };
    let from = to_u64(from, "version")?;
    let to = from + events.len() as u64 - 1;
    let rows: Vec<(String, i64)> = conn
        .prepare_cached(
            "SELECT event_id, global_position FROM events \
             WHERE stream_id = ? AND version BETWEEN ? AND ? ORDER BY version",
        )
        .and_then(|mut read| {
            read.query_map((&stored_stream, to_i64(from), to_i64(to)), |row| {
                Ok((row.get(0)?, row.get(1)?))
            })?
            .collect()
        })
        .map_err(store_error)?;
    let stored = rows
        .iter()
        .map(|(id, position)| {
            let id = Uuid::parse_str(id)
                .map_err(|e| StoreError::Corrupt(format!("event id {id:?}: {e}")))?;
            Ok((id, to_u64(*position, "global_position")?))
        })
        .collect::<Result<Vec<_>, StoreError>>()?;
    batch::retry_of(&stored_stream, from, stream_id, events, &stored).map(Some)
}

fn stream_version(conn: &Connection, stream_id: &str) -> Result<u64, StoreError> {
    let version: i64 = conn
        .prepare_cached("SELECT COALESCE(MAX(version), 0) FROM events WHERE stream_id = ?")
        .and_then(|mut read| read.query_row([stream_id], |row| row.get(0)))
        .map_err(store_error)?;
    to_u64(version, "version")
}

/// Inserts one event and returns its global position.
fn insert(
    conn: &Connection,
    stream_id: &str,
    stream_type: &str,
    version: u64,
    event: &NewEvent,
) -> Result<u64, StoreError> {
    let payload = to_json(&event.payload)?;
    let metadata = to_json(&event.metadata)?;
    conn.prepare_cached(INSERT_EVENT)
        .and_then(|mut insert| {
            insert.execute((
                event.event_id.to_string(),
                stream_id,
                stream_type,
                to_i64(version),
                &event.event_type,
                i64::from(event.schema_version),
                format_time(event.occurred_at),
                payload,
                metadata,
            ))
        })
        .map_err(store_error)?;
    to_u64(conn.last_insert_rowid(), "global_position")
}

/// Where rusqlite's errors (the writer's and the readers') become the port's; sqlx's, from
/// opening and migrating the file, become it in `sqlite::store_error`.
pub(super) fn store_error(error: rusqlite::Error) -> StoreError {
    match &error {
        // Versions are assigned under the write lock, so the only unique key a request can
        // collide on is `event_id`: the caller reused an id from another append.
        rusqlite::Error::SqliteFailure(failure, message)
            if failure.code == ErrorCode::ConstraintViolation
                && matches!(
                    failure.extended_code,
                    rusqlite::ffi::SQLITE_CONSTRAINT_UNIQUE
                        | rusqlite::ffi::SQLITE_CONSTRAINT_PRIMARYKEY
                ) =>
        {
            StoreError::Corrupt(format!(
                "duplicate event id: {}",
                message.as_deref().unwrap_or("constraint failed")
            ))
        }
        rusqlite::Error::FromSqlConversionFailure(..)
        | rusqlite::Error::InvalidColumnType(..)
        | rusqlite::Error::InvalidColumnName(_)
        | rusqlite::Error::InvalidColumnIndex(_) => StoreError::Corrupt(error.to_string()),
        _ => StoreError::Unavailable(error.to_string()),
    }
}
