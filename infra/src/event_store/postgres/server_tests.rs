//! The PostgreSQL adapter against a real server: the one at `ORDERFLOW_TEST_POSTGRES`, else
//! `postgres://postgres@127.0.0.1:5432/test` (or role `root` where `postgres` does not exist).
//! Each test works in a fresh schema of its own, dropped when it ends, so they run in
//! parallel. A server that does not answer fails the tests: CI starts one, nothing skips.
//!
//! They run with the `servers` feature, which `cargo test --workspace` turns on.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use eventlog::{EventStore, LogCursor, StoreError};
use sqlx::{Connection, PgConnection};
use uuid::Uuid;

use super::PostgresEventStore;
use crate::event_store::testing::{events, one_refused_among_many};

const URL_VAR: &str = "ORDERFLOW_TEST_POSTGRES";
const LOCAL_SERVERS: [&str; 2] = [
    "postgres://postgres@127.0.0.1:5432/test",
    "postgres://root@127.0.0.1:5432/test",
];
const WAIT: Duration = Duration::from_secs(10);

/// A fresh store in a schema of its own, dropped when the test ends.
async fn postgres_fixture() -> (Arc<dyn EventStore>, Schema) {
    let schema = Schema::fresh().await;
    let store = schema.connect().await;
    (Arc::new(store), schema)
}

mod conformance {
    eventlog::event_store_conformance!(super::postgres_fixture());
}

/// Real PostgreSQL. Two stores on one schema are two processes as far as the database
/// can tell (own pools, writer tasks and sessions). Both append to many streams at once
/// while a reader tails the log from the last position it saw, alternating between them:
/// it must see every event exactly once, in position order, and the log has no holes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_processes_appending_never_put_a_commit_behind_a_tailing_reader() {
    const TASKS: usize = 8;
    const APPENDS: usize = 50;
    const STREAMS_PER_TASK: usize = 5;
    // Appends alternate between one and two events.
    const TOTAL: usize = 2 * TASKS * (APPENDS / 2) * 3;
    let schema = Schema::fresh().await;
    // Connecting both at once also races their migrations on the fresh schema.
    let (a, b) = tokio::join!(schema.connect(), schema.connect());
    let (a, b) = (Arc::new(a), Arc::new(b));
    let writers_done = Arc::new(AtomicBool::new(false));

    let reader = tokio::spawn(tail([a.clone(), b.clone()], writers_done.clone()));
    let mut appenders = Vec::new();
    for store in [&a, &b] {
        for _ in 0..TASKS {
            let store = store.clone();
            appenders.push(tokio::spawn(async move {
                let streams: Vec<String> = (0..STREAMS_PER_TASK)
                    .map(|_| format!("order-{}", Uuid::now_v7()))
                    .collect();
                let mut versions = [0; STREAMS_PER_TASK];
                for i in 0..APPENDS {
                    let s = i % STREAMS_PER_TASK;
                    let n = 1 + i % 2;
                    versions[s] = append(&store, &streams[s], versions[s], n).await.0;
                }
            }));
        }
    }
    for appender in appenders {
        appender.await.expect("an appender panicked");
    }
    writers_done.store(true, Ordering::SeqCst);
    let seen = reader.await.expect("the tailing reader panicked");

    let all = a
        .read_all(&LogCursor::start(), 2 * TOTAL)
        .await
        .expect("read_all")
        .events;
    let positions: Vec<u64> = all.iter().filter_map(|e| e.global_position).collect();
    let ids: Vec<Uuid> = all.iter().map(|e| e.event_id).collect();
    assert_eq!(all.len(), TOTAL, "every append is in the log");
    assert_eq!(
        positions,
        (1..=TOTAL as u64).collect::<Vec<_>>(),
        "positions run 1..=n, no holes"
    );
    assert_eq!(seen, ids, "the tail saw every event once, in log order");
    assert!(
        a.batches_committed() > 0 && b.batches_committed() > 0,
        "both processes wrote: {} and {} batches",
        a.batches_committed(),
        b.batches_committed()
    );
}

/// Real PostgreSQL: process B's head doorbell rings for an append that process A
/// committed. B wrote nothing, so only A's NOTIFY can wake it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_append_in_one_process_wakes_another_process_watching_the_head() {
    let schema = Schema::fresh().await;
    let (a, b) = (schema.connect().await, schema.connect().await);
    let mut head = b.watch_head();

    let (_, position) = append(&a, "order-1", 0, 2).await;
    let woke = tokio::time::timeout(WAIT, head.wait_for(|h| *h >= position)).await;

    let woke = woke.ok().and_then(|seen| seen.ok().map(|h| *h));
    assert_eq!(woke, Some(position), "B's doorbell rang with A's new head");
    assert_eq!(b.batches_committed(), 0, "B committed nothing itself");
}

/// Real PostgreSQL: a process LISTENs only once something in it watches the head (every
/// NOTIFY wakes every listening session, so a role that never watches would only pay for
/// it), and then it does.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_process_listens_only_once_it_watches_the_head() {
    let schema = Schema::fresh().await;
    let store = schema.connect().await;
    append(&store, "order-1", 0, 1).await;

    let before = schema.listening_sessions().await;
    let _head = store.watch_head();
    let mut after = 0;
    for _ in 0..100 {
        after = schema.listening_sessions().await;
        if after > 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    assert_eq!(before, 0, "no LISTEN before anything watched the head");
    assert_eq!(after, 1, "one LISTEN session once something does");
}

/// Real PostgreSQL: a lease taken by process A is refused to process B until A drops
/// it, and then B gets it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lease_passes_to_another_process_only_when_dropped() {
    let schema = Schema::fresh().await;
    let (a, b) = (schema.connect().await, schema.connect().await);

    let mut held_by_a = a.lease("relay").await.expect("lease").expect("granted");
    let refused_to_b = b.lease("relay").await.expect("lease");
    let a_holds = held_by_a.held().await;
    drop(held_by_a);
    let mut taken_by_b = None;
    for _ in 0..100 {
        taken_by_b = b.lease("relay").await.expect("lease");
        if taken_by_b.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    assert!(refused_to_b.is_none(), "B cannot take A's lease");
    assert!(a_holds, "A holds it while its session lives");
    let mut taken_by_b = taken_by_b.expect("B gets the lease once A dropped it");
    assert!(taken_by_b.held().await, "and holds it");
}

/// Real PostgreSQL: a batch is written in one INSERT, and when PostgreSQL refuses a value
/// of one request (`\u0000` in JSONB), the batch falls back to a savepoint per request:
/// only that request fails, the others of the batch commit and read back whole.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_value_postgres_refuses_fails_only_its_own_request_in_the_batch() {
    let schema = Schema::fresh().await;
    let store: Arc<dyn EventStore> = Arc::new(schema.connect().await);
    let mut refused = events(1);
    refused[0].payload = serde_json::json!({ "note": "nul \u{0} inside" });

    let bad = one_refused_among_many(store, refused).await;

    assert!(
        matches!(bad, Err(StoreError::Corrupt(_))),
        "the refused value fails its own request: {bad:?}"
    );
}

/// Real PostgreSQL: two requests in one batch with the same events on one stream (a
/// client's retry racing its first attempt) write once; the second is answered as a
/// duplicate of the first, with its version and position.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retry_in_the_same_batch_is_a_duplicate_of_the_first() {
    let schema = Schema::fresh().await;
    let store = schema.connect().await;
    let sent = events(2);

    let (one, two) = tokio::join!(
        store.append("order-r", "order", 0, sent.clone()),
        store.append("order-r", "order", 0, sent.clone()),
    );
    let (one, two) = (one.expect("first"), two.expect("second"));

    let (original, retry) = if one.duplicate {
        (two, one)
    } else {
        (one, two)
    };
    assert!(
        !original.duplicate && retry.duplicate,
        "{original:?} {retry:?}"
    );
    assert_eq!(
        (retry.version, retry.position),
        (original.version, original.position)
    );
    assert_eq!(
        store.read_stream("order-r", 1).await.expect("read").len(),
        2
    );
}

/// Real PostgreSQL: two processes append to the same new streams at once, each
/// expecting an empty stream, and a third of the time with the other's very events (a
/// retry landing on another process). Each writer decides its batch on a lookup made
/// before it holds the log's head row, so the other process's commit can slip in between;
/// the unique constraints must catch that and the batch be decided again under the row.
/// Each stream ends with one append's events: the winner is answered as written, the
/// loser as a conflict (other events) or a duplicate of the winner (the same events),
/// never as unavailable, and the log has no holes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_processes_racing_for_the_same_streams_are_each_answered_rightly() {
    const STREAMS: usize = 300;
    let schema = Schema::fresh().await;
    let (a, b) = tokio::join!(schema.connect(), schema.connect());
    let (a, b) = (Arc::new(a), Arc::new(b));
    let streams: Vec<String> = (0..STREAMS)
        .map(|_| format!("order-{}", Uuid::now_v7()))
        .collect();

    let mut racers = Vec::new();
    for (i, stream) in streams.iter().enumerate() {
        let (mine, theirs) = (events(1 + i % 2), events(1 + i % 2));
        let theirs = if i % 3 == 0 { mine.clone() } else { theirs };
        for (store, sent) in [(a.clone(), mine), (b.clone(), theirs)] {
            let stream = stream.clone();
            racers.push(tokio::spawn(async move {
                let answer = store.append(&stream, "order", 0, sent.clone()).await;
                (stream, sent, answer)
            }));
        }
    }
    let mut answers: HashMap<String, Vec<_>> = HashMap::new();
    for racer in racers {
        let (stream, sent, answer) = racer.await.expect("a racer panicked");
        answers.entry(stream).or_default().push((sent, answer));
    }

    for stream in &streams {
        let stored = a.read_stream(stream, 1).await.expect("read");
        let stored_ids: Vec<Uuid> = stored.iter().map(|e| e.event_id).collect();
        let racers = &answers[stream];
        let written: Vec<_> = racers
            .iter()
            .filter(|(_, answer)| matches!(answer, Ok(appended) if !appended.duplicate))
            .collect();
        assert_eq!(written.len(), 1, "{stream}: one winner: {racers:?}");
        let (won, won_answer) = written[0];
        let won_ids: Vec<Uuid> = won.iter().map(|e| e.event_id).collect();
        assert_eq!(stored_ids, won_ids, "{stream} holds the winner's events");
        let won_answer = won_answer.as_ref().expect("written");
        for (sent, answer) in racers {
            let same = sent.iter().map(|e| e.event_id).eq(won_ids.iter().copied());
            match answer {
                Ok(appended) if appended.duplicate => {
                    assert!(same, "{stream}: only the same events are a duplicate");
                    assert_eq!(
                        (appended.version, appended.position),
                        (won_answer.version, won_answer.position),
                        "{stream}: a duplicate is answered like the original"
                    );
                }
                Ok(_) => {}
                Err(StoreError::Conflict { actual, .. }) => {
                    assert!(
                        !same,
                        "{stream}: the same events are a duplicate, not a conflict"
                    );
                    assert_eq!(
                        *actual, won_answer.version,
                        "{stream}: the winner's version"
                    );
                }
                Err(other) => panic!("{stream}: {other}"),
            }
        }
    }
    let log = a.read_all(&LogCursor::start(), 10 * STREAMS).await;
    let positions: Vec<u64> = log
        .expect("read_all")
        .events
        .iter()
        .filter_map(|e| e.global_position)
        .collect();
    assert_eq!(positions, (1..=positions.len() as u64).collect::<Vec<_>>());
}

/// Real PostgreSQL: a schema made by a build from before the log's head row (events, no
/// `log_head`) is given one when a store connects, starting at the log's head, so that
/// positions go on from there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_schema_from_before_the_head_row_goes_on_from_its_head() {
    let schema = Schema::fresh().await;
    let store = schema.connect().await;
    append(&store, "order-1", 0, 3).await;
    drop(store);
    schema.execute("DROP TABLE log_head").await;

    let store = schema.connect().await;
    let (_, position) = append(&store, "order-2", 0, 1).await;

    assert_eq!(position, 4, "numbered after the three events already there");
}

/// Real PostgreSQL: without its head row the store cannot number events, and says so:
/// an append answers `Unavailable` and writes nothing (it must not answer success for
/// events that were not inserted).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_its_head_row_an_append_is_unavailable_and_writes_nothing() {
    let schema = Schema::fresh().await;
    let store = schema.connect().await;
    schema.execute("DELETE FROM log_head").await;

    let appended = store.append("order-1", "order", 0, events(1)).await;

    assert!(
        matches!(appended, Err(StoreError::Unavailable(_))),
        "{appended:?}"
    );
    assert!(
        store
            .read_stream("order-1", 1)
            .await
            .expect("read")
            .is_empty()
    );
}

/// Real PostgreSQL: events, the head and checkpoints are still there after every
/// connection closed and a new store connected (and migrated again), and positions go on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn data_and_checkpoints_survive_reconnecting() {
    let schema = Schema::fresh().await;
    let store = schema.connect().await;
    append(&store, "order-1", 0, 2).await;
    let (_, last) = append(&store, "order-2", 0, 3).await;
    store
        .save_checkpoint("relay", &LogCursor::at_position(4))
        .await
        .expect("save");
    let before = store
        .read_all(&LogCursor::start(), 100)
        .await
        .expect("read_all");
    drop(store);

    let store = schema.connect().await;
    store
        .migrate()
        .await
        .expect("migrating again changes nothing");

    assert_eq!(
        store
            .read_all(&LogCursor::start(), 100)
            .await
            .expect("read_all"),
        before
    );
    assert_eq!(store.head().await.expect("head"), last);
    assert_eq!(
        *store.watch_head().borrow(),
        last,
        "watch_head starts at the head"
    );
    assert_eq!(
        store.checkpoint("relay").await.expect("checkpoint"),
        LogCursor::at_position(4)
    );
    let (_, next) = append(&store, "order-1", 2, 1).await;
    assert_eq!(next, last + 1, "positions go on");
}

/// Real PostgreSQL: after the server ended every session of the store (a restart, a
/// failover), the store reconnects by itself: an append goes through again (a batch
/// caught on a dead connection answers `Unavailable`) and the other process's doorbell
/// still rings, through a new LISTEN connection and a re-read of the head.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_store_reconnects_after_the_server_ends_its_sessions() {
    let schema = Schema::fresh().await;
    let (a, b) = (schema.connect().await, schema.connect().await);
    append(&a, "order-1", 0, 1).await;
    let mut head = b.watch_head();

    schema.end_sessions().await;
    let mut appended = Err(StoreError::Unavailable("not tried".into()));
    for _ in 0..50 {
        appended = a.append("order-1", "order", 1, events(1)).await;
        if !matches!(appended, Err(StoreError::Unavailable(_))) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    let position = appended.expect("an append after reconnecting").position;
    let position = position.expect("a position");
    let woke = tokio::time::timeout(WAIT, head.wait_for(|h| *h >= position)).await;
    let woke = woke.ok().and_then(|seen| seen.ok().map(|h| *h));
    assert_eq!(
        woke,
        Some(position),
        "B's doorbell rings after it reconnected"
    );
    let log = b.read_all(&LogCursor::start(), 10).await.expect("read_all");
    assert_eq!(log.events.len(), 2);
}

/// No server needed: a port where nothing listens answers `Unavailable`, promptly.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_that_does_not_answer_is_unavailable() {
    let connecting = PostgresEventStore::connect("postgres://postgres@127.0.0.1:1/test");

    let result = tokio::time::timeout(WAIT, connecting).await;

    let result = result.expect("connect gave up in time");
    assert!(
        matches!(result, Err(StoreError::Unavailable(_))),
        "{:?}",
        result.err()
    );
}

/// No server needed: a schema name that is not a plain identifier is refused before
/// connecting.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_schema_that_is_not_a_plain_name_is_refused() {
    let url = "postgres://postgres@127.0.0.1:1/test?sslmode=disable&schema=x\";drop";

    let result = PostgresEventStore::connect(url).await;

    let Err(StoreError::Unavailable(message)) = result else {
        panic!("expected Unavailable, got {:?}", result.err());
    };
    assert!(message.contains("schema"), "{message}");
}

/// A schema of the test's own on the test server, dropped with everything in it when the
/// guard is.
struct Schema {
    server: String,
    name: String,
}

impl Schema {
    async fn fresh() -> Self {
        Self {
            server: server_url().await,
            name: format!("t_{}", Uuid::new_v4().simple()),
        }
    }

    fn url(&self) -> String {
        let separator = if self.server.contains('?') { '&' } else { '?' };
        format!("{}{separator}schema={}", self.server, self.name)
    }

    async fn connect(&self) -> PostgresEventStore {
        PostgresEventStore::connect(&self.url())
            .await
            .unwrap_or_else(|e| panic!("connect to schema {}: {e}", self.name))
    }
}

impl Schema {
    /// Runs `sql` in this schema, as an operator (or an older build) would.
    async fn execute(&self, sql: &str) {
        let mut conn = PgConnection::connect(&self.server).await.expect("connect");
        let sql = format!("SET search_path = \"{}\"; {sql}", self.name);
        sqlx::raw_sql(&sql)
            .execute(&mut conn)
            .await
            .unwrap_or_else(|e| panic!("{sql}: {e}"));
        conn.close().await.expect("close");
    }

    /// How many of this schema's sessions are listening for the doorbell.
    async fn listening_sessions(&self) -> i64 {
        let mut conn = PgConnection::connect(&self.server).await.expect("connect");
        let listening = sqlx::query_scalar(
            "SELECT count(*) FROM pg_stat_activity \
             WHERE application_name = $1 AND query LIKE 'LISTEN %'",
        )
        .bind(format!("orderflow:{}", self.name))
        .fetch_one(&mut conn)
        .await
        .expect("count listening sessions");
        conn.close().await.expect("close");
        listening
    }

    /// Terminates every session the stores on this schema have open, as a server restart
    /// would (they name the schema in `application_name`).
    async fn end_sessions(&self) {
        let mut conn = PgConnection::connect(&self.server).await.expect("connect");
        let ended: i64 = sqlx::query_scalar(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity \
             WHERE application_name = $1",
        )
        .bind(format!("orderflow:{}", self.name))
        .fetch_one(&mut conn)
        .await
        .expect("terminate the store's sessions");
        assert!(
            ended >= 3,
            "a writer, a listener and a reader each: {ended} sessions"
        );
        conn.close().await.expect("close");
    }
}

impl Drop for Schema {
    /// `Drop` cannot await inside the test's runtime, so a thread with a runtime of its
    /// own drops the schema and is waited for. A failure only leaves the schema behind.
    fn drop(&mut self) {
        let (server, name) = (self.server.clone(), self.name.clone());
        let dropped = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|e| e.to_string())?;
            runtime.block_on(async {
                let mut conn = PgConnection::connect(&server)
                    .await
                    .map_err(|e| e.to_string())?;
                let sql =
                    format!("SET lock_timeout = '5s'; DROP SCHEMA IF EXISTS \"{name}\" CASCADE");
                sqlx::raw_sql(&sql)
                    .execute(&mut conn)
                    .await
                    .map_err(|e| e.to_string())?;
                conn.close().await.map_err(|e| e.to_string())
            })
        })
        .join();
        if let Ok(Err(error)) | Err(error) = dropped.map_err(|_| "panicked".to_owned()) {
            eprintln!("could not drop test schema {}: {error}", self.name);
        }
    }
}

/// The test server's URL, checked once: `ORDERFLOW_TEST_POSTGRES`, or else the local
/// server as `postgres`, or else as `root`. Panics, naming the variable, if none answers.
async fn server_url() -> String {
    static SERVER: OnceLock<String> = OnceLock::new();
    if let Some(url) = SERVER.get() {
        return url.clone();
    }
    let candidates = match std::env::var(URL_VAR) {
        Ok(url) => vec![url],
        Err(_) => LOCAL_SERVERS.map(String::from).to_vec(),
    };
    let mut failures = Vec::new();
    for url in candidates {
        match tokio::time::timeout(WAIT, PgConnection::connect(&url)).await {
            Ok(Ok(conn)) => {
                let _ = conn.close().await;
                return SERVER.get_or_init(|| url).clone();
            }
            Ok(Err(error)) => failures.push(format!("{url}: {error}")),
            Err(_) => failures.push(format!("{url}: no answer within {WAIT:?}")),
        }
    }
    panic!(
        "PostgreSQL does not answer ({}). These tests need a server: start one, or set \
         {URL_VAR} to the postgres:// URL of one.",
        failures.join("; ")
    );
}

/// Follows the log with `after = last seen`, reading from each store in turn, until the
/// writers are done and it is caught up.
async fn tail(stores: [Arc<PostgresEventStore>; 2], writers_done: Arc<AtomicBool>) -> Vec<Uuid> {
    let (mut after, mut seen) = (LogCursor::start(), Vec::new());
    for store in stores.iter().cycle() {
        // Read the flag first: an empty page read after it was set means nothing is left.
        let done = writers_done.load(Ordering::SeqCst);
        let page = store.read_all(&after, 50).await.expect("read_all");
        if page.events.is_empty() && done {
            break;
        }
        if page.events.is_empty() {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        for event in &page.events {
            let position = event.global_position.expect("a position");
            assert!(
                position > after.position().unwrap(),
                "positions only increase"
            );
            seen.push(event.event_id);
        }
        after = page.next;
    }
    seen
}

/// Appends `n` events and answers the stream's new version and the new global position.
async fn append(store: &PostgresEventStore, stream: &str, expected: u64, n: usize) -> (u64, u64) {
    let appended = store.append(stream, "order", expected, events(n)).await;
    let appended = appended.unwrap_or_else(|e| panic!("append to {stream}: {e}"));
    (appended.version, appended.position.expect("a position"))
}
