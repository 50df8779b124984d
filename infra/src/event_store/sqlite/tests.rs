//! The SQLite adapter's own tests, on a fresh file each, beside the port's conformance suite.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use eventlog::{EventStore, LogCursor, StoreError};
use serde_json::json;
use tempfile::TempDir;

use super::SqliteEventStore;
use crate::event_store::testing::{REFUSED_AMONG, events, one_refused_among_many};

/// A fresh store in its own directory, removed when the test ends.
async fn sqlite_fixture() -> (Arc<dyn EventStore>, TempDir) {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = open(&dir.path().join("events.db")).await;
    (Arc::new(store), dir)
}

mod conformance {
    eventlog::event_store_conformance!(super::sqlite_fixture());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn data_survives_closing_and_reopening_the_file() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("data").join("events.db");
    let store = open(&path).await;
    append(&store, "order-1", 0, 2).await;
    let last = append(&store, "order-2", 0, 3).await;
    store
        .save_checkpoint("relay", &LogCursor::at_position(4))
        .await
        .expect("save");
    let before = store
        .read_all(&LogCursor::start(), 100)
        .await
        .expect("read_all");
    drop(store);

    let store = open(&path).await;

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
    assert_eq!(
        append(&store, "order-1", 2, 1).await,
        last + 1,
        "positions go on"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_event_id_from_another_stream_is_refused() {
    let (store, _dir) = sqlite_store().await;
    let sent = events(1);
    store
        .append("order-x", "order", 0, sent.clone())
        .await
        .expect("append");

    let result = store.append("order-y", "order", 0, sent).await;

    assert!(matches!(result, Err(StoreError::Corrupt(_))), "{result:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropping_the_store_stops_the_writer() {
    let (store, _dir) = sqlite_store().await;
    let mut head = store.watch_head();

    drop(store);

    // The writer owns the head's sender: the channel closes when the writer ends.
    let closed = tokio::time::timeout(Duration::from_secs(10), head.changed()).await;
    assert!(matches!(closed, Ok(Err(_))), "the writer ended: {closed:?}");
}

/// A batch that SQLite refuses (here a trigger of the test's own refuses one request's
/// payload, as SQLite would a full disk or a broken constraint) is written again request
/// by request: only that request fails; the others of its batch commit with contiguous
/// positions, and after it the store goes on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_sqlite_refuses_fails_only_the_request_at_fault() {
    use sqlx::{ConnectOptions, Executor};
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("events.db");
    let store = Arc::new(open(&path).await);
    let mut conn = sqlx::sqlite::SqliteConnectOptions::new()
        .filename(&path)
        .connect()
        .await
        .expect("a second connection");
    conn.execute(
        "CREATE TRIGGER refuse BEFORE INSERT ON events \
         WHEN NEW.payload LIKE '%refuse-me%' BEGIN SELECT RAISE(ABORT, 'refused'); END",
    )
    .await
    .expect("trigger");
    let mut refused = events(1);
    refused[0].payload = json!({ "note": "refuse-me" });

    let bad = one_refused_among_many(store.clone(), refused).await;

    assert!(bad.is_err(), "the refused request fails: {bad:?}");
    assert_eq!(
        append(&store, "order-after", 0, 1).await,
        2 * REFUSED_AMONG as u64 + 1
    );
}

/// A few appends, far fewer than the 1,000 WAL pages at which the writer would copy the
/// WAL into the database itself: the checkpoint thread copies them within moments, so
/// the writer is not the one that pays for it under load.
#[tokio::test]
async fn committed_appends_reach_the_database_file_without_the_writer() {
    let (store, dir) = sqlite_store().await;
    let file = dir.path().join("events.db");
    let size = || std::fs::metadata(&file).expect("the database file").len();
    let empty = size();
    for i in 0..20 {
        append(&store, &format!("order-{i}"), 0, 20).await;
    }
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while size() <= empty {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the database file stayed at {empty} bytes: nothing was checkpointed"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let wal = std::fs::metadata(dir.path().join("events.db-wal")).expect("the WAL");
    assert!(wal.len() > 0, "the WAL holds the appends too");
}

async fn open(path: &Path) -> SqliteEventStore {
    SqliteEventStore::open(path).await.expect("open the store")
}

async fn sqlite_store() -> (Arc<SqliteEventStore>, TempDir) {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = open(&dir.path().join("events.db")).await;
    (Arc::new(store), dir)
}

/// Appends `n` events and answers the new global position.
async fn append(store: &SqliteEventStore, stream: &str, expected: u64, n: usize) -> u64 {
    let appended = store.append(stream, "order", expected, events(n)).await;
    appended.expect("append").position.expect("a position")
}
