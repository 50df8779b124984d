//! The distributed event store: PostgreSQL, shared by every process, written through group
//! commit in each of them.
//!
//! # Group commit
//!
//! Appends and checkpoints go through group commit (the `group_commit` module explains it):
//! [`WRITERS`] writer tasks per process, each with a connection of its own, take turns at one
//! queue, and each commits every request waiting at that moment (up to [`MAX_BATCH`]) at once.
//! A batch is decided after one lookup and written in one statement (`write_batch`), which
//! commits on its own. The writers' connections run with `synchronous_commit = on`
//! (PostgreSQL's default, set explicitly), so an answered append is in the WAL on disk. When a
//! batch fails and the connection cannot even roll back, the writer drops it and its next
//! batch connects anew. A lost connection leaves the batch's outcome unknown; a retry with
//! the same event ids is answered as a duplicate if it did commit.
//!
//! # The global log: a head row, positions in commit order
//!
//! Several processes write the same tables. A sequence would hand out positions that commit
//! out of order, and a reader that passed position 12 would never see an 11 committed a moment
//! later. So the log's head lives in a one-row table, `log_head`, and every write that appends
//! moves it (`UPDATE log_head SET head = head + n`) in the statement that inserts the events
//! numbered after it. The row stays locked until that transaction commits. The next writer's
//! UPDATE waits for it and then reads the row as committed, and PostgreSQL makes a commit
//! visible before it releases the locks. So positions are handed out in commit order and the
//! log has no holes. One batch commits at a time across all processes, and the row is held
//! for one statement. See `docs/adr/04-postgres-global-order.md`.
//!
//! # The head doorbell: LISTEN/NOTIFY
//!
//! The writers publish their own commits to [`EventStore::watch_head`] right away. Each write
//! that appended also runs `pg_notify('orderflow_events_<schema>', new head)`, which
//! PostgreSQL delivers at commit. Once something in the process watches the head (the relay
//! does), a background task LISTENs on that channel, so another process's commits ring this
//! process's doorbell too, and the relay wakes on it instead of polling. Only then: every
//! listening session is woken by every commit of every process, and a role that never
//! watches the head (web, processor, projector, notifier) would only pay for it. The task
//! LISTENs first and then reads the head, so nothing committed before it listened is missed.
//! When the listening connection fails, it reconnects with backoff and does the same again.
//!
//! # Leases
//!
//! A lease is a session-level `pg_try_advisory_lock` on a connection of its own, owned by the
//! guard: dropping the guard closes that connection, which ends the session and releases the
//! lock; a process that dies releases it the same way.
//!
//! # Schemas and shutdown
//!
//! `?schema=NAME` on the URL puts the tables in that schema (default `public`); it is set as
//! each connection's `search_path`. Dropping the store closes the request channel and stops
//! the listener; the writers finish what is already queued, close their connections and end.

use std::str::FromStr;
use std::time::Duration;

use async_trait::async_trait;
use domain::{NewEvent, RecordedEvent};
use eventlog::{Appended, EventStore, Lease, LogCursor, LogPage, StoreError};
use sqlx::postgres::{
    PgConnectOptions, PgConnection, PgDatabaseError, PgListener, PgPool, PgPoolOptions, PgRow,
};
use sqlx::{ConnectOptions, Connection, Row};
use tokio::sync::{oneshot, watch};
use uuid::Uuid;

use super::batch::{self, Keys, Stored};
use super::codec::{
    format_time, from_json, numbered_lag, numbered_page, parse_time, to_i64, to_json, to_u64,
};
use super::group_commit::{Answer, BatchCommit, GroupCommit, Write, Written, advance};

/// Against a real server, so only with the `servers` feature (`cargo test --workspace`).
#[cfg(all(test, feature = "servers"))]
mod server_tests;

/// The most requests one transaction takes; the rest wait for the next batch. Each request
/// that writes is a subtransaction, and PostgreSQL caches only 64 subtransaction ids per
/// backend: beyond that every other session's snapshots overflow to `pg_subtrans` and slow
/// down. Bigger batches would save little anyway, since round trips, not fsyncs, dominate.
pub const MAX_BATCH: usize = 64;
/// How long the writer may wait for the rest of a batch under load: a batch costs several
/// round trips, so one batch of 60 is much cheaper than a few small ones (measured: +13 % at
/// 64 clients, `cargo bench -p infra --bench peer`).
const MAX_LINGER: Duration = Duration::from_millis(1);
/// Write connections, each with a writer taking batches from the store's one queue: while one
/// batch's statement holds the log's head row, the next batch is looked up and decided on
/// another connection (measured: `cargo bench -p infra --bench peer`).
const WRITERS: usize = 2;
/// Requests waiting for the writer before `append` itself waits (back-pressure).
const QUEUE_CAPACITY: usize = 8 * MAX_BATCH;
/// Pooled connections for reads, beside the writer's own.
const READERS: u32 = 4;
/// How long opening a connection, or taking one from a pool, may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a write transaction waits for the log lock held by another process.
const LOCK_TIMEOUT: &str = "10s";
/// How long [`Lease::held`] waits for its connection to answer.
const LEASE_CHECK_TIMEOUT: Duration = Duration::from_secs(5);
/// Reconnection delays of the listener: doubling from the first to the last.
const BACKOFF: (Duration, Duration) = (Duration::from_millis(100), Duration::from_secs(5));
/// The schema used when the URL names none.
const DEFAULT_SCHEMA: &str = "public";
/// PostgreSQL's identifier limit (NAMEDATALEN - 1), which also bounds NOTIFY channel names.
const MAX_IDENTIFIER: usize = 63;

/// The unique constraints, named so that [`store_error`] can tell them apart.
const STREAM_VERSION_KEY: &str = "events_stream_version_key";
const EVENT_ID_KEY: &str = "events_event_id_key";

/// The tables, in schema `{schema}` (already validated as a plain identifier).
const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS \"{schema}\".events (
    global_position BIGINT      PRIMARY KEY,
    event_id        UUID        NOT NULL,
    stream_id       TEXT        NOT NULL,
    stream_type     TEXT        NOT NULL,
    version         BIGINT      NOT NULL,
    event_type      TEXT        NOT NULL,
    schema_version  INT         NOT NULL,
    occurred_at     TIMESTAMPTZ NOT NULL,
    payload         JSONB       NOT NULL,
    metadata        JSONB       NOT NULL,
    CONSTRAINT events_event_id_key UNIQUE (event_id),
    CONSTRAINT events_stream_version_key UNIQUE (stream_id, version)
);
CREATE TABLE IF NOT EXISTS \"{schema}\".checkpoints (
    reader   TEXT   PRIMARY KEY,
    position BIGINT NOT NULL
);
CREATE TABLE IF NOT EXISTS \"{schema}\".log_head (
    one  BOOLEAN PRIMARY KEY DEFAULT true CHECK (one),
    head BIGINT  NOT NULL
);
INSERT INTO \"{schema}\".log_head (head)
    SELECT COALESCE(MAX(global_position), 0) FROM \"{schema}\".events
    ON CONFLICT DO NOTHING;
";

// Identifiers and JSON travel as text (sqlx is built without its uuid, chrono and json
// features); `occurred_at` comes back as RFC 3339 in UTC with microseconds, its precision.
const READ_STREAM: &str = "SELECT global_position, event_id::text AS event_id, stream_id, \
     stream_type, version, event_type, schema_version, \
     to_char(occurred_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"') AS occurred_at, \
     payload::text AS payload, metadata::text AS metadata \
     FROM events WHERE stream_id = $1 AND version >= $2 ORDER BY version";
const READ_ALL: &str = "SELECT global_position, event_id::text AS event_id, stream_id, \
     stream_type, version, event_type, schema_version, \
     to_char(occurred_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"') AS occurred_at, \
     payload::text AS payload, metadata::text AS metadata \
     FROM events WHERE global_position > $1 ORDER BY global_position LIMIT $2";
const INSERT_EVENT: &str = "INSERT INTO events (global_position, event_id, stream_id, \
     stream_type, version, event_type, schema_version, occurred_at, payload, metadata) \
     VALUES ($1, $2::uuid, $3, $4, $5, $6, $7, $8::timestamptz, $9::jsonb, $10::jsonb)";
const HEAD: &str = "SELECT COALESCE(MAX(global_position), 0) FROM events";

/// The PostgreSQL adapter of the [`EventStore`] port; see the module docs for the design.
///
/// `read_all` never skips a late commit, across processes: positions are assigned from the
/// log's head row, which every writer holds to its commit, so they follow commit order.
pub struct PostgresEventStore {
    writer: GroupCommit,
    reads: PgPool,
    head: watch::Receiver<u64>,
    target: Target,
    /// The listener, until something first watches the head and it is started.
    doorbell: std::sync::Mutex<Option<(Doorbell, oneshot::Receiver<()>)>>,
    /// Dropped with the store, which stops the listener task.
    _stop_listening: oneshot::Sender<()>,
}

/// Where the store lives: how to connect, and the names derived from its schema.
#[derive(Clone)]
struct Target {
    options: PgConnectOptions,
    schema: String,
    /// The NOTIFY channel the writers of this schema ring.
    channel: String,
}

impl Target {
    fn parse(url: &str) -> Result<Self, StoreError> {
        let (url, schema) = split_schema(url)?;
        let options = PgConnectOptions::from_str(&url)
            .map_err(|e| StoreError::Unavailable(format!("invalid PostgreSQL URL: {e}")))?
            // Lets an operator (or a test) tell this schema's sessions apart.
            .application_name(&format!("orderflow:{schema}"))
            // Every statement of this store has a unique index to go by. But the planner
            // goes by statistics taken when the table was small (autovacuum analyzes it only
            // now and then), and then it scans the whole table instead: seen as a plan cached
            // after a few appends to a new schema that went on scanning 30,000 rows, and as
            // write batches of 63 taking 20 ms instead of 2 at 64 appenders. None of them is
            // better off with a sequential scan. Nor with JIT compilation, which costs more
            // than any of them (with sequential scans priced out, a statement that must scan
            // a table, like an UPDATE without a WHERE, looks costly enough to compile: 200 ms).
            .options([
                ("search_path", schema.as_str()),
                ("enable_seqscan", "off"),
                ("jit", "off"),
            ]);
        let channel = match format!("orderflow_events_{schema}") {
            channel if channel.len() <= MAX_IDENTIFIER => channel,
            _ => format!("orderflow_events_{:016x}", lock_key(&schema)),
        };
        Ok(Self {
            options,
            schema,
            channel,
        })
    }

    /// The key of the advisory lock under which builds before the head row numbered the log;
    /// taken now only by the migration that creates the head row.
    fn log_lock(&self) -> i64 {
        lock_key(&format!("orderflow:log:{}", self.schema))
    }

    fn lease_lock(&self, name: &str) -> i64 {
        lock_key(&format!("orderflow:lease:{}:{name}", self.schema))
    }

    fn migrate_lock(&self) -> i64 {
        lock_key(&format!("orderflow:migrate:{}", self.schema))
    }

    /// A connection of its own, outside any pool.
    async fn connect(&self, options: PgConnectOptions) -> Result<PgConnection, StoreError> {
        match tokio::time::timeout(CONNECT_TIMEOUT, options.connect()).await {
            Ok(connected) => connected.map_err(store_error),
            Err(_) => Err(StoreError::Unavailable(format!(
                "PostgreSQL did not answer within {CONNECT_TIMEOUT:?}"
            ))),
        }
    }

    /// The writer's connection: durable commits, bounded waits for the log lock.
    async fn connect_writer(&self) -> Result<PgConnection, StoreError> {
        let options = self
            .options
            .clone()
            .options([("synchronous_commit", "on"), ("lock_timeout", LOCK_TIMEOUT)]);
        self.connect(options).await
    }
}

impl PostgresEventStore {
    /// Connects to `url` (`postgres://…`, optionally with `schema=NAME` among its query
    /// parameters), applies the schema, and starts the writer and the listener.
    #[tracing::instrument(skip_all)]
    pub async fn connect(url: &str) -> Result<Self, StoreError> {
        let target = Target::parse(url)?;
        // A connection of its own first: it reports a refused or failed connection at once,
        // where a pool would retry until its timeout.
        let mut conn = target.connect_writer().await?;
        migrate(&mut conn, &target).await?;
        let pool = |size| {
            PgPoolOptions::new()
                .max_connections(size)
                .acquire_timeout(CONNECT_TIMEOUT)
        };
        let reads = pool(READERS).connect_lazy_with(target.options.clone());
        // The listener keeps its connection for good: a pool of one, never reaped.
        let listens = pool(1)
            .idle_timeout(None)
            .max_lifetime(None)
            .connect_lazy_with(target.options.clone());

        let (head_tx, head) = watch::channel(0);
        let doorbell = Doorbell {
            pool: listens,
            reads: reads.clone(),
            channel: target.channel.clone(),
            head: head_tx.clone(),
        };
        // The head as it is now; the listener, once started, LISTENs and reads it again.
        advance(&head_tx, read_head(&reads).await.map_err(store_error)?);
        let (stop_listening, stop) = oneshot::channel();

        // The first writer takes the connection that migrated; the others connect on their
        // first batch.
        let mut first = Some(conn);
        let writers = (0..WRITERS).map(|_| Writer {
            target: target.clone(),
            conn: first.take(),
        });
        let writer = GroupCommit::start(writers, MAX_BATCH, QUEUE_CAPACITY, MAX_LINGER, head_tx);
        Ok(Self {
            writer,
            reads,
            head,
            target,
            doorbell: std::sync::Mutex::new(Some((doorbell, stop))),
            _stop_listening: stop_listening,
        })
    }

    /// Drops the schema `url` names (`schema=NAME`) with everything in it: for throwaway
    /// deployments (`orderflow chaos` cleans up after itself with it). Only a schema the URL
    /// names: never the default one.
    pub async fn drop_schema(url: &str) -> Result<(), StoreError> {
        let target = Target::parse(url)?;
        if !url.contains("schema=") || target.schema == DEFAULT_SCHEMA || target.schema == "public"
        {
            return Err(StoreError::Unavailable(format!(
                "refusing to drop the schema {}: name a throwaway one with schema=",
                target.schema
            )));
        }
        let mut conn = target.connect(target.options.clone()).await?;
        let sql = format!(
            "SET lock_timeout = '5s'; DROP SCHEMA IF EXISTS \"{}\" CASCADE",
            target.schema
        );
        sqlx::raw_sql(&sql)
            .execute(&mut conn)
            .await
            .map_err(store_error)?;
        Ok(())
    }

    /// Creates the schema and its tables if they are missing; safe to run from several
    /// processes at once, and again and again (`connect` runs it too).
    #[tracing::instrument(skip(self))]
    pub async fn migrate(&self) -> Result<(), StoreError> {
        let mut conn = self.reads.acquire().await.map_err(store_error)?;
        migrate(&mut conn, &self.target).await
    }

    /// How many transactions this process's writer has committed (for `/metrics`: appends
    /// divided by batches is the group-commit factor).
    pub fn batches_committed(&self) -> u64 {
        self.writer.batches_committed()
    }

    /// The global position of the newest event (0 when empty).
    #[tracing::instrument(skip(self))]
    pub async fn head(&self) -> Result<u64, StoreError> {
        read_head(&self.reads).await.map_err(store_error)
    }

    /// What an empty append answers: the stream as it is.
    async fn stream_tip(&self, stream_id: &str) -> Result<Appended, StoreError> {
        let row = sqlx::query(
            "SELECT version, global_position FROM events WHERE stream_id = $1 \
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
impl EventStore for PostgresEventStore {
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

    #[tracing::instrument(skip(self))]
    async fn read_all(&self, after: &LogCursor, limit: usize) -> Result<LogPage, StoreError> {
        let rows = sqlx::query(READ_ALL)
            .bind(to_i64(after.position()?))
            .bind(i64::try_from(limit).unwrap_or(i64::MAX))
            .fetch_all(&self.reads)
            .await
            .map_err(store_error)?;
        let events = rows.iter().map(decode_event).collect::<Result<_, _>>()?;
        Ok(numbered_page(after, events))
    }

    #[tracing::instrument(skip(self))]
    async fn lag(&self, after: &LogCursor) -> Result<Option<u64>, StoreError> {
        numbered_lag(self.head().await?, after)
    }

    /// Starts the listener the first time (see the module docs).
    fn watch_head(&self) -> watch::Receiver<u64> {
        let mut doorbell = self.doorbell.lock().unwrap_or_else(|e| e.into_inner());
        if let Ok(runtime) = tokio::runtime::Handle::try_current()
            && let Some((doorbell, stop)) = doorbell.take()
        {
            runtime.spawn(doorbell.run(stop));
        }
        self.head.clone()
    }

    #[tracing::instrument(skip(self))]
    async fn checkpoint(&self, reader: &str) -> Result<LogCursor, StoreError> {
        let position: Option<i64> =
            sqlx::query_scalar("SELECT position FROM checkpoints WHERE reader = $1")
                .bind(reader)
                .fetch_optional(&self.reads)
                .await
                .map_err(store_error)?;
        let position = position.map_or(Ok(0), |p| to_u64(p, "checkpoint"))?;
        Ok(LogCursor::at_position(position))
    }

    /// Goes through the writer, so a relay's checkpoints share the appends' commits.
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

    /// A session-level advisory lock on a connection the guard owns (see the module docs).
    #[tracing::instrument(skip(self))]
    async fn lease(&self, name: &str) -> Result<Option<Box<dyn Lease>>, StoreError> {
        let mut conn = self.target.connect(self.target.options.clone()).await?;
        let taken: bool = sqlx::query_scalar("SELECT pg_try_advisory_lock($1)")
            .bind(self.target.lease_lock(name))
            .fetch_one(&mut conn)
            .await
            .map_err(store_error)?;
        if !taken {
            let _ = conn.close().await;
            return Ok(None);
        }
        Ok(Some(Box::new(SessionLease { conn: Some(conn) })))
    }
}

/// A lease held by a PostgreSQL session: as long as its connection lives.
struct SessionLease {
    /// `None` once the connection failed: the lock went with it, for good.
    conn: Option<PgConnection>,
}

#[async_trait]
impl Lease for SessionLease {
    async fn held(&mut self) -> bool {
        let Some(conn) = self.conn.as_mut() else {
            return false;
        };
        let answer =
            tokio::time::timeout(LEASE_CHECK_TIMEOUT, sqlx::query("SELECT 1").execute(conn));
        if matches!(answer.await, Ok(Ok(_))) {
            return true;
        }
        // The session may be gone, and its lock with it; another process may hold it now.
        tracing::warn!("the lease's connection stopped answering; the lease is lost");
        self.conn = None;
        false
    }
}

impl Drop for SessionLease {
    /// Ends the session, which releases its advisory lock. A graceful close needs the
    /// runtime; without one, dropping the socket ends the session as well.
    fn drop(&mut self) {
        let Some(conn) = self.conn.take() else {
            return;
        };
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(async move {
                let _ = conn.close().await;
            });
        }
    }
}

/// The group-commit writer's engine: this process's write connection, replaced when lost.
struct Writer {
    target: Target,
    /// `None` after the connection was lost; the next batch opens a new one.
    conn: Option<PgConnection>,
}

impl BatchCommit for Writer {
    async fn commit(&mut self, writes: Vec<Write>) -> Result<Vec<Answer>, StoreError> {
        let writes = writes.as_slice();
        let mut conn = match self.conn.take() {
            Some(conn) => conn,
            None => self.target.connect_writer().await.inspect_err(|error| {
                tracing::warn!(%error, requests = writes.len(), "event store unreachable");
            })?,
        };
        match write_batch(&mut conn, &self.target, writes).await {
            Ok(answers) => {
                self.conn = Some(conn);
                Ok(answers)
            }
            Err(error) => {
                tracing::warn!(%error, requests = writes.len(), "event store batch failed");
                // A connection that cannot even roll back is lost; the next batch replaces it.
                if sqlx::query("ROLLBACK").execute(&mut conn).await.is_ok() {
                    self.conn = Some(conn);
                }
                Err(StoreError::Unavailable(format!(
                    "batch rolled back: {error}"
                )))
            }
        }
    }

    async fn close(mut self) {
        if let Some(conn) = self.conn.take()
            && let Err(error) = conn.close().await
        {
            tracing::warn!(%error, "closing the event store's write connection failed");
        }
    }
}

/// Writes a batch; answers each request's result, `Err` only for what fails the whole batch.
///
/// First optimistically, in two round trips whatever the batch's size: one lookup of every
/// stream's version and every event id (outside any transaction, so it holds up no other
/// writer), the decisions made here ([`batch::plan`]), then ONE statement that takes the log's
/// head row, inserts every accepted event numbered after it, saves the checkpoints and rings
/// the doorbell, committed on its own ([`WRITE_AT_ONCE`]). Only that statement holds the head
/// row, so the log's critical section is one statement and its commit.
///
/// The lookup may be stale by then: another process may have appended to one of the batch's
/// streams, or stored one of its event ids, in between. Either breaks a unique constraint
/// (versions are dense, so a stale version collides on `(stream_id, version)`), the statement
/// writes nothing, and the batch is written again under the head row ([`write_locked`]), as
/// it is when PostgreSQL refuses one of its values.
async fn write_batch(
    conn: &mut PgConnection,
    target: &Target,
    writes: &[Write],
) -> Result<Vec<Answer>, sqlx::Error> {
    let stored = lookup(conn, Keys::of(writes)).await?;
    let plan = batch::plan(stored, 0, writes);
    match write_at_once(conn, target, plan).await {
        Ok(answers) => Ok(answers),
        Err(error @ sqlx::Error::Database(_)) => {
            tracing::debug!(%error, "batch refused as a whole; writing it under the head row");
            write_locked(conn, target, writes).await
        }
        Err(other) => Err(other),
    }
}

/// The optimistic batch in one statement (see [`write_batch`]): the head row's update
/// serializes writers across processes and hands out positions in commit order (see the
/// module docs); every other part of the statement waits for it, checkpoints included, so
/// two writers always lock in the same order. Answers the batch's start.
const WRITE_AT_ONCE: &str = "WITH head AS (UPDATE log_head SET head = head + $13 \
     WHERE one RETURNING head - $13 AS start), \
     inserted AS (INSERT INTO events (global_position, event_id, stream_id, stream_type, \
     version, event_type, schema_version, occurred_at, payload, metadata) \
     SELECT head.start + e.position, e.event_id, e.stream_id, e.stream_type, e.version, \
     e.event_type, e.schema_version, e.occurred_at, e.payload, e.metadata \
     FROM head, UNNEST($1::bigint[], $2::text[]::uuid[], $3::text[], $4::text[], \
     $5::bigint[], $6::text[], $7::int[], $8::text[]::timestamptz[], $9::text[]::jsonb[], \
     $10::text[]::jsonb[]) AS e(position, event_id, stream_id, stream_type, version, \
     event_type, schema_version, occurred_at, payload, metadata) RETURNING 1), \
     saved AS (INSERT INTO checkpoints (reader, position) \
     SELECT c.reader, c.position FROM head, UNNEST($11::text[], $12::bigint[]) \
     AS c(reader, position) \
     ON CONFLICT (reader) DO UPDATE SET position = excluded.position) \
     SELECT head.start, pg_notify($14, (head.start + $13)::text), \
     (SELECT count(*) FROM inserted) AS inserted FROM head";

/// Writes `plan` (made from start 0) in one statement; answers the shifted answers. A
/// database error has written nothing.
async fn write_at_once(
    conn: &mut PgConnection,
    target: &Target,
    mut plan: batch::Plan<'_>,
) -> Result<Vec<Answer>, sqlx::Error> {
    if plan.rows.is_empty() {
        // Nothing to number: the head row is not needed.
        save_checkpoints(conn, &plan.checkpoints).await?;
        return Ok(plan.answers);
    }
    let n = plan.rows.len();
    let rows = Columns::of(std::mem::take(&mut plan.rows));
    let (readers, positions) = checkpoint_columns(&plan.checkpoints);
    let row = rows
        .bind(sqlx::query(WRITE_AT_ONCE))
        .bind(readers)
        .bind(positions)
        .bind(to_i64(n as u64))
        .bind(&target.channel)
        .fetch_optional(&mut *conn)
        .await?
        // No head row: the schema was not migrated by this version (see `migrate`).
        .ok_or(sqlx::Error::RowNotFound)?;
    let start: i64 = row.try_get(0)?;
    let inserted: i64 = row.try_get("inserted")?;
    if inserted != to_i64(n as u64) {
        return Err(sqlx::Error::Protocol(format!(
            "inserted {inserted} of a batch's {n} events"
        )));
    }
    plan.shift(u64::try_from(start).unwrap_or_default());
    Ok(plan.answers)
}

/// A batch written the careful way, in one transaction that holds the log's head row from its
/// first statement: the lookup then sees every earlier commit, so the decisions stand; one
/// INSERT of every accepted event. Should that INSERT be refused (a value PostgreSQL will not
/// store), the batch goes back to its savepoint and runs request by request, each in a
/// savepoint of its own, so that only the request at fault fails.
async fn write_locked(
    conn: &mut PgConnection,
    target: &Target,
    writes: &[Write],
) -> Result<Vec<Answer>, sqlx::Error> {
    // One round trip. `FOR UPDATE` waits for the row's holder and then reads the row as it
    // committed; the lookup after it is a statement of its own, with a snapshot of its own.
    let opening = "BEGIN; SELECT head FROM log_head WHERE one FOR UPDATE; SAVEPOINT batch";
    let rows = sqlx::Executor::fetch_all(&mut *conn, sqlx::raw_sql(opening)).await?;
    let start: i64 = match rows.last() {
        Some(row) => row.try_get(0)?,
        None => return Err(sqlx::Error::RowNotFound),
    };
    let start = u64::try_from(start).unwrap_or_default();
    let (results, head) = match write_planned(conn, start, writes).await {
        Ok(written) => written,
        Err(error @ sqlx::Error::Database(_)) => {
            tracing::debug!(%error, "batch refused under the lock; writing request by request");
            execute(conn, "ROLLBACK TO SAVEPOINT batch").await?;
            let mut head = start;
            let mut results = Vec::with_capacity(writes.len());
            for write in writes {
                results.push(write_in_savepoint(conn, &mut head, write).await?);
            }
            (results, head)
        }
        Err(other) => return Err(other),
    };
    if head > start {
        sqlx::query(MOVE_HEAD)
            .bind(to_i64(head))
            .bind(&target.channel)
            .execute(&mut *conn)
            .await?;
    }
    execute(conn, "COMMIT").await?;
    Ok(results)
}

/// Inserts a batch's events at the positions given.
const INSERT_MANY: &str = "INSERT INTO events (global_position, event_id, stream_id, \
     stream_type, version, event_type, schema_version, occurred_at, payload, metadata) \
     SELECT * FROM UNNEST($1::bigint[], $2::text[]::uuid[], $3::text[], $4::text[], \
     $5::bigint[], $6::text[], $7::int[], $8::text[]::timestamptz[], $9::text[]::jsonb[], \
     $10::text[]::jsonb[])";

/// Moves the head row to what a locked batch appended and rings the doorbell (delivered at
/// commit).
const MOVE_HEAD: &str = "WITH moved AS (UPDATE log_head SET head = $1 WHERE one RETURNING head) \
     SELECT pg_notify($2, head::text) FROM moved";

const SAVE_CHECKPOINTS: &str = "INSERT INTO checkpoints (reader, position) \
     SELECT * FROM UNNEST($1::text[], $2::bigint[]) \
     ON CONFLICT (reader) DO UPDATE SET position = excluded.position";

/// Inside [`write_locked`]'s transaction: the batch decided after one lookup, in one INSERT
/// and one checkpoint upsert. Returns the answers and the new head; a database error leaves
/// the savepoint to undo.
async fn write_planned(
    conn: &mut PgConnection,
    start: u64,
    writes: &[Write],
) -> Result<(Vec<Answer>, u64), sqlx::Error> {
    let stored = lookup(conn, Keys::of(writes)).await?;
    let plan = batch::plan(stored, start, writes);
    if !plan.rows.is_empty() {
        Columns::of(plan.rows)
            .bind(sqlx::query(INSERT_MANY))
            .execute(&mut *conn)
            .await?;
    }
    save_checkpoints(conn, &plan.checkpoints).await?;
    Ok((plan.answers, plan.head))
}

/// A batch's rows as the arrays the INSERT statements unnest, in their parameter order.
struct Columns<'w> {
    positions: Vec<i64>,
    ids: Vec<String>,
    streams: Vec<&'w str>,
    types: Vec<&'w str>,
    versions: Vec<i64>,
    event_types: Vec<&'w str>,
    schema_versions: Vec<i32>,
    times: Vec<String>,
    payloads: Vec<String>,
    metadata: Vec<String>,
}

impl<'w> Columns<'w> {
    fn of(rows: Vec<batch::Row<'w>>) -> Self {
        let n = rows.len();
        let mut columns = Self {
            positions: Vec::with_capacity(n),
            ids: Vec::with_capacity(n),
            streams: Vec::with_capacity(n),
            types: Vec::with_capacity(n),
            versions: Vec::with_capacity(n),
            event_types: Vec::with_capacity(n),
            schema_versions: Vec::with_capacity(n),
            times: Vec::with_capacity(n),
            payloads: Vec::with_capacity(n),
            metadata: Vec::with_capacity(n),
        };
        for row in rows {
            columns.positions.push(to_i64(row.position));
            columns.ids.push(row.event.event_id.to_string());
            columns.streams.push(row.stream_id);
            columns.types.push(row.stream_type);
            columns.versions.push(to_i64(row.version));
            columns.event_types.push(row.event.event_type.as_str());
            columns.schema_versions.push(row.schema_version);
            columns.times.push(format_time(row.event.occurred_at));
            columns.payloads.push(row.payload);
            columns.metadata.push(row.metadata);
        }
        columns
    }

    /// Binds the columns as `$1` to `$10`.
    fn bind<'q>(self, query: PgQuery<'q>) -> PgQuery<'q>
    where
        'w: 'q,
    {
        query
            .bind(self.positions)
            .bind(self.ids)
            .bind(self.streams)
            .bind(self.types)
            .bind(self.versions)
            .bind(self.event_types)
            .bind(self.schema_versions)
            .bind(self.times)
            .bind(self.payloads)
            .bind(self.metadata)
    }
}

type PgQuery<'q> = sqlx::query::Query<'q, sqlx::Postgres, sqlx::postgres::PgArguments>;

/// The checkpoints as the arrays their upserts unnest, sorted by reader: writers that lock
/// the same checkpoints lock them in the same order, so they cannot deadlock.
fn checkpoint_columns(checkpoints: &[(&str, u64)]) -> (Vec<String>, Vec<i64>) {
    let mut sorted = checkpoints.to_vec();
    sorted.sort_unstable();
    sorted
        .into_iter()
        .map(|(reader, position)| (reader.to_owned(), to_i64(position)))
        .unzip()
}

async fn save_checkpoints(
    conn: &mut PgConnection,
    checkpoints: &[(&str, u64)],
) -> Result<(), sqlx::Error> {
    if checkpoints.is_empty() {
        return Ok(());
    }
    let (readers, positions) = checkpoint_columns(checkpoints);
    sqlx::query(SAVE_CHECKPOINTS)
        .bind(readers)
        .bind(positions)
        .execute(&mut *conn)
        .await?;
    Ok(())
}

/// Where a batch's event ids are and each stream's version. The version is a subquery per
/// stream, answered from the end of the index; a `MAX … GROUP BY` would read every version of
/// the stream (a busy SKU has thousands).
const LOOKUP: &str = "SELECT 'event' AS kind, event_id::text AS key, stream_id, version, \
     global_position FROM events WHERE event_id = ANY($1::text[]::uuid[]) \
     UNION ALL \
     SELECT 'stream', s.id, s.id, \
     COALESCE((SELECT MAX(version) FROM events WHERE stream_id = s.id), 0), 0 \
     FROM UNNEST($2::text[]) AS s(id)";

/// Every stream's version and every event id's place, for the appends of a batch.
async fn lookup(conn: &mut PgConnection, keys: Keys) -> Result<Stored, sqlx::Error> {
    let mut stored = Stored::default();
    if keys.is_empty() {
        return Ok(stored);
    }
    let rows = sqlx::query(LOOKUP)
        .bind(keys.event_ids)
        .bind(keys.streams)
        .fetch_all(&mut *conn)
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

/// Runs one request in its own savepoint; on failure it is rolled back, its positions given
/// back, and the batch goes on.
async fn write_in_savepoint(
    conn: &mut PgConnection,
    head: &mut u64,
    write: &Write,
) -> Result<Answer, sqlx::Error> {
    execute(conn, "SAVEPOINT request").await?;
    let before = *head;
    let result = write_one(conn, head, write).await;
    if result.is_err() {
        *head = before;
        execute(conn, "ROLLBACK TO SAVEPOINT request").await?;
    }
    execute(conn, "RELEASE SAVEPOINT request").await?;
    Ok(result)
}

async fn write_one(
    conn: &mut PgConnection,
    head: &mut u64,
    write: &Write,
) -> Result<Written, StoreError> {
    match write {
        Write::Append {
            stream_id,
            stream_type,
            expected,
            events,
        } => append(conn, head, stream_id, stream_type, *expected, events)
            .await
            .map(Written::Appended),
        Write::Checkpoint { reader, position } => {
            save_checkpoint(conn, reader, *position).await?;
            Ok(Written::Checkpoint)
        }
    }
}

/// One append inside the writer's transaction: idempotent retry, version check, insert at the
/// positions after `head` (which it moves).
async fn append(
    conn: &mut PgConnection,
    head: &mut u64,
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
    for (event, version) in events.iter().zip(expected + 1..) {
        *head += 1;
        insert(conn, *head, stream_id, stream_type, version, event).await?;
    }
    Ok(Appended {
        version: expected + events.len() as u64,
        position: Some(*head),
        duplicate: false,
    })
}

/// When the first event is already stored in this stream, the answer the original append got.
async fn earlier_append(
    conn: &mut PgConnection,
    stream_id: &str,
    events: &[NewEvent],
) -> Result<Option<Appended>, StoreError> {
    let Some(first) = events.first() else {
        return Ok(None);
    };
    let stored = sqlx::query("SELECT stream_id, version FROM events WHERE event_id = $1::uuid")
        .bind(first.event_id.to_string())
        .fetch_optional(&mut *conn)
        .await
        .map_err(store_error)?;
    let Some(stored) = stored else {
        return Ok(None);
    };
    let stored_stream: String = stored.try_get("stream_id").map_err(store_error)?;
    let from = get_u64(&stored, "version")?;
    let to = from + events.len() as u64 - 1;
    let rows = sqlx::query(
        "SELECT event_id::text AS event_id, global_position FROM events \
         WHERE stream_id = $1 AND version BETWEEN $2 AND $3 ORDER BY version",
    )
    .bind(&stored_stream)
    .bind(to_i64(from))
    .bind(to_i64(to))
    .fetch_all(&mut *conn)
    .await
    .map_err(store_error)?;
    let stored = rows
        .iter()
        .map(|row| Ok((get_uuid(row, "event_id")?, get_u64(row, "global_position")?)))
        .collect::<Result<Vec<_>, StoreError>>()?;
    batch::retry_of(&stored_stream, from, stream_id, events, &stored).map(Some)
}

async fn stream_version(conn: &mut PgConnection, stream_id: &str) -> Result<u64, StoreError> {
    let version: i64 =
        sqlx::query_scalar("SELECT COALESCE(MAX(version), 0) FROM events WHERE stream_id = $1")
            .bind(stream_id)
            .fetch_one(&mut *conn)
            .await
            .map_err(store_error)?;
    to_u64(version, "version")
}

/// Inserts one event at `position`.
async fn insert(
    conn: &mut PgConnection,
    position: u64,
    stream_id: &str,
    stream_type: &str,
    version: u64,
    event: &NewEvent,
) -> Result<(), StoreError> {
    let schema_version = i32::try_from(event.schema_version).map_err(|_| {
        StoreError::Corrupt(format!("schema_version {} too large", event.schema_version))
    })?;
    sqlx::query(INSERT_EVENT)
        .bind(to_i64(position))
        .bind(event.event_id.to_string())
        .bind(stream_id)
        .bind(stream_type)
        .bind(to_i64(version))
        .bind(&event.event_type)
        .bind(schema_version)
        .bind(format_time(event.occurred_at))
        .bind(to_json(&event.payload)?)
        .bind(to_json(&event.metadata)?)
        .execute(&mut *conn)
        .await
        .map_err(store_error)?;
    Ok(())
}

async fn save_checkpoint(
    conn: &mut PgConnection,
    reader: &str,
    position: u64,
) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO checkpoints (reader, position) VALUES ($1, $2) \
         ON CONFLICT (reader) DO UPDATE SET position = excluded.position",
    )
    .bind(reader)
    .bind(to_i64(position))
    .execute(&mut *conn)
    .await
    .map_err(store_error)?;
    Ok(())
}

/// Creates the schema and tables unless they are there. An advisory lock makes concurrent
/// runs take turns (two `CREATE … IF NOT EXISTS` at once can still collide in the catalog),
/// and nothing is created that exists, so a role without CREATE can run it on a ready schema.
async fn migrate(conn: &mut PgConnection, target: &Target) -> Result<(), StoreError> {
    let schema = &target.schema;
    let mut tx = conn.begin().await.map_err(store_error)?;
    sqlx::query("SELECT pg_advisory_xact_lock($1)")
        .bind(target.migrate_lock())
        .execute(&mut *tx)
        .await
        .map_err(store_error)?;
    let (has_schema, has_tables): (bool, bool) = sqlx::query_as(
        "SELECT EXISTS (SELECT 1 FROM pg_namespace WHERE nspname = $1), \
                to_regclass(format('%I.events', $1::text)) IS NOT NULL \
                AND to_regclass(format('%I.checkpoints', $1::text)) IS NOT NULL \
                AND to_regclass(format('%I.log_head', $1::text)) IS NOT NULL",
    )
    .bind(schema)
    .fetch_one(&mut *tx)
    .await
    .map_err(store_error)?;
    if !has_schema {
        sqlx::raw_sql(&format!("CREATE SCHEMA IF NOT EXISTS \"{schema}\""))
            .execute(&mut *tx)
            .await
            .map_err(store_error)?;
    }
    if !has_tables {
        // The head row starts at the log's head; writers of a build from before it (which
        // numbered under an advisory lock) are waited for, and must not write after it.
        sqlx::query("SELECT pg_advisory_xact_lock($1)")
            .bind(target.log_lock())
            .execute(&mut *tx)
            .await
            .map_err(store_error)?;
        sqlx::raw_sql(&SCHEMA.replace("{schema}", schema))
            .execute(&mut *tx)
            .await
            .map_err(store_error)?;
    }
    tx.commit().await.map_err(store_error)
}

/// The task that rings this process's head doorbell on every NOTIFY, whichever process
/// committed (see the module docs).
struct Doorbell {
    /// A pool of one: the listening connection, replaced when it fails.
    pool: PgPool,
    reads: PgPool,
    channel: String,
    head: watch::Sender<u64>,
}

impl Doorbell {
    /// LISTENs and follows the notifications; after a failure, waits (doubling the wait
    /// from one failure to the next) and does it again, until the store is dropped.
    async fn run(self, mut stop: oneshot::Receiver<()>) {
        let mut delay = BACKOFF.0;
        loop {
            let subscribed = tokio::select! {
                _ = &mut stop => return,
                subscribed = self.subscribe() => subscribed,
            };
            match subscribed {
                Ok(mut listener) => {
                    delay = BACKOFF.0;
                    let error = tokio::select! {
                        _ = &mut stop => return,
                        error = self.follow(&mut listener) => error,
                    };
                    tracing::warn!(%error, "lost the event store's LISTEN connection; reconnecting");
                }
                Err(error) => tracing::warn!(%error, "cannot LISTEN to the event store yet"),
            }
            tokio::select! {
                _ = &mut stop => return,
                () = tokio::time::sleep(delay) => {}
            }
            delay = (delay * 2).min(BACKOFF.1);
        }
    }

    /// LISTENs, then reads the head: whatever committed before the LISTEN is in that head,
    /// whatever commits after it rings.
    async fn subscribe(&self) -> Result<PgListener, sqlx::Error> {
        let mut listener = PgListener::connect_with(&self.pool).await?;
        // Report a lost connection instead of quietly reconnecting: after a reconnection the
        // head must be read again.
        listener.eager_reconnect(false);
        listener.listen(&self.channel).await?;
        advance(&self.head, read_head(&self.reads).await?);
        Ok(listener)
    }

    /// Rings the doorbell for each notification until the connection fails; answers why.
    async fn follow(&self, listener: &mut PgListener) -> String {
        loop {
            let notification = match listener.try_recv().await {
                Ok(Some(notification)) => notification,
                Ok(None) => return "connection lost".into(),
                Err(error) => return error.to_string(),
            };
            let head = match notification.payload().parse() {
                Ok(head) => head,
                // Not ours: ask the table instead.
                Err(_) => match read_head(&self.reads).await {
                    Ok(head) => head,
                    Err(error) => return error.to_string(),
                },
            };
            advance(&self.head, head);
        }
    }
}

async fn read_head(reads: &PgPool) -> Result<u64, sqlx::Error> {
    let head: i64 = sqlx::query_scalar(HEAD).fetch_one(reads).await?;
    Ok(u64::try_from(head).unwrap_or_default())
}

/// Splits our own `schema=NAME` query parameter off a PostgreSQL URL (sqlx does not know it)
/// and checks the name is a plain lowercase identifier, so it can be quoted and used as-is.
fn split_schema(url: &str) -> Result<(String, String), StoreError> {
    let (base, query) = url.split_once('?').unwrap_or((url, ""));
    let mut schema = None;
    let mut kept = Vec::new();
    for pair in query.split('&').filter(|pair| !pair.is_empty()) {
        match pair.strip_prefix("schema=") {
            Some(name) => schema = Some(name),
            None => kept.push(pair),
        }
    }
    let schema = schema.unwrap_or(DEFAULT_SCHEMA);
    let plain = schema.starts_with(|c: char| c.is_ascii_lowercase() || c == '_')
        && schema
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
        && schema.len() <= MAX_IDENTIFIER;
    if !plain {
        return Err(StoreError::Unavailable(format!(
            "invalid schema {schema:?} in the store URL: use lowercase letters, digits and _ \
             (at most {MAX_IDENTIFIER}), not starting with a digit"
        )));
    }
    let url = if kept.is_empty() {
        base.to_owned()
    } else {
        format!("{base}?{}", kept.join("&"))
    };
    Ok((url, schema.to_owned()))
}

/// An advisory lock key: FNV-1a of `name`, stable across builds and processes (unlike
/// `std`'s hasher), since every process must derive the same key.
fn lock_key(name: &str) -> i64 {
    let hash = name.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |hash, byte| {
        (hash ^ u64::from(byte)).wrapping_mul(0x0000_0100_0000_01b3)
    });
    i64::from_ne_bytes(hash.to_ne_bytes())
}

fn decode_event(row: &PgRow) -> Result<RecordedEvent, StoreError> {
    let occurred_at: String = row.try_get("occurred_at").map_err(store_error)?;
    let payload: String = row.try_get("payload").map_err(store_error)?;
    let metadata: String = row.try_get("metadata").map_err(store_error)?;
    let schema_version: i32 = row.try_get("schema_version").map_err(store_error)?;
    Ok(RecordedEvent {
        event_id: get_uuid(row, "event_id")?,
        stream_id: row.try_get("stream_id").map_err(store_error)?,
        stream_type: row.try_get("stream_type").map_err(store_error)?,
        version: get_u64(row, "version")?,
        global_position: Some(get_u64(row, "global_position")?),
        event_type: row.try_get("event_type").map_err(store_error)?,
        schema_version: u32::try_from(schema_version)
            .map_err(|_| StoreError::Corrupt(format!("schema_version {schema_version}")))?,
        occurred_at: parse_time(&occurred_at)?,
        // JSONB prints its own way (`{"a": 1}`): printed again compactly, a payload reads the
        // same from every store, in exports too.
        payload: from_json::<serde_json::Value>(&payload, "payload")?.into(),
        metadata: from_json(&metadata, "metadata")?,
    })
}

fn get_uuid(row: &PgRow, column: &str) -> Result<Uuid, StoreError> {
    let text: String = row.try_get(column).map_err(store_error)?;
    Uuid::parse_str(&text).map_err(|e| StoreError::Corrupt(format!("{column} {text:?}: {e}")))
}

fn get_u64(row: &PgRow, column: &str) -> Result<u64, StoreError> {
    let value: i64 = row.try_get(column).map_err(store_error)?;
    to_u64(value, column)
}

async fn execute(conn: &mut PgConnection, sql: &str) -> Result<(), sqlx::Error> {
    sqlx::query(sql).execute(conn).await.map(|_| ())
}

/// The one place where PostgreSQL's errors become the port's.
fn store_error(error: sqlx::Error) -> StoreError {
    let db = match &error {
        sqlx::Error::Database(db) => db,
        sqlx::Error::ColumnDecode { .. }
        | sqlx::Error::ColumnNotFound(_)
        | sqlx::Error::ColumnIndexOutOfBounds { .. }
        | sqlx::Error::Decode(_)
        | sqlx::Error::TypeNotFound { .. } => return StoreError::Corrupt(error.to_string()),
        // Refused or lost connections, timeouts, a closed pool: the engine is not there.
        _ => return StoreError::Unavailable(error.to_string()),
    };
    let detail = db
        .try_downcast_ref::<PgDatabaseError>()
        .and_then(PgDatabaseError::detail)
        .unwrap_or_default();
    match (db.code().as_deref(), db.constraint()) {
        // Another writer took this version first. Under the log lock that cannot happen
        // between our own writers; it means something wrote without the lock. The detail
        // reads `Key (stream_id, version)=(order-1, 3) already exists.`
        (Some("23505"), Some(STREAM_VERSION_KEY)) => {
            let taken = detail
                .strip_prefix("Key (stream_id, version)=(")
                .and_then(|rest| rest.strip_suffix(") already exists."))
                .and_then(|key| key.rsplit_once(", "))
                .and_then(|(stream, version)| Some((stream, version.parse::<u64>().ok()?)));
            let (stream_id, actual) = taken.unwrap_or(("", 0));
            StoreError::Conflict {
                stream_id: stream_id.to_owned(),
                expected: actual.saturating_sub(1),
                actual,
            }
        }
        // Retries are recognised by their first event id before inserting, so this is an id
        // reused from another append.
        (Some("23505"), Some(EVENT_ID_KEY)) => {
            StoreError::Corrupt(format!("duplicate event id: {detail}"))
        }
        // Data exceptions: a value PostgreSQL refuses to store (e.g. `\u0000` in JSONB).
        (Some(code), _) if code.starts_with("22") => StoreError::Corrupt(error.to_string()),
        _ => StoreError::Unavailable(error.to_string()),
    }
}
