//! Event store adapters: the engines behind `commands::EventStore`.
//!
//! - [`sqlite`]: the embedded default, one SQLite file in WAL mode written through group
//!   commit (one transaction, one fsync, for every append waiting at that moment).
//! - [`conformance`]: the port's one conformance suite. Every adapter runs it through
//!   [`event_store_conformance!`](crate::event_store_conformance), so they all keep the same
//!   promises: atomic appends with optimistic concurrency, idempotent retries by event id, and
//!   a global log that a tailing reader can follow without ever missing a late commit.

pub mod conformance;
pub mod sqlite;

pub use sqlite::SqliteEventStore;

#[cfg(test)]
mod tests {
    use std::path::Path;
    use std::sync::Arc;
    use std::time::Duration;

    use chrono::Utc;
    use commands::{EventStore, StoreError};
    use domain::{EventMetadata, NewEvent};
    use serde_json::json;
    use tempfile::TempDir;
    use uuid::Uuid;

    use super::SqliteEventStore;

    /// A fresh store in its own directory, removed when the test ends.
    async fn sqlite_fixture() -> (Arc<dyn EventStore>, TempDir) {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = open(&dir.path().join("events.db")).await;
        (Arc::new(store), dir)
    }

    mod conformance {
        crate::event_store_conformance!(super::sqlite_fixture());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn data_survives_closing_and_reopening_the_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("data").join("events.db");
        let store = open(&path).await;
        append(&store, "order-1", 0, 2).await;
        let last = append(&store, "order-2", 0, 3).await;
        store.save_checkpoint("relay", 4).await.expect("save");
        let before = store.read_all(0, 100).await.expect("read_all");
        drop(store);

        let store = open(&path).await;

        assert_eq!(store.read_all(0, 100).await.expect("read_all"), before);
        assert_eq!(store.head().await.expect("head"), last);
        assert_eq!(
            *store.watch_head().borrow(),
            last,
            "watch_head starts at the head"
        );
        assert_eq!(store.checkpoint("relay").await.expect("checkpoint"), 4);
        assert_eq!(
            append(&store, "order-1", 2, 1).await,
            last + 1,
            "positions go on"
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_appends_share_transactions() {
        let (store, _dir) = sqlite_store().await;

        let tasks: Vec<_> = (0..200)
            .map(|i| {
                let store = store.clone();
                tokio::spawn(async move { append(&store, &format!("order-{i}"), 0, 1).await })
            })
            .collect();
        for task in tasks {
            task.await.expect("append task");
        }

        let batches = store.batches_committed();
        assert_eq!(store.read_all(0, 1_000).await.expect("read_all").len(), 200);
        assert!(batches < 200, "200 appends took {batches} transactions");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_refused_request_fails_alone_in_its_batch() {
        let (store, _dir) = sqlite_store().await;
        let taken = events(1);
        store
            .append("order-x", "order", 0, taken.clone())
            .await
            .expect("append");
        let mut reused = events(1);
        reused.extend(taken);

        let (first, refused, last) = tokio::join!(
            store.append("order-a", "order", 0, events(1)),
            store.append("order-b", "order", 0, reused),
            store.append("order-c", "order", 0, events(1)),
        );

        assert!(first.is_ok() && last.is_ok(), "{first:?} {last:?}");
        assert!(
            matches!(refused, Err(StoreError::Corrupt(_))),
            "{refused:?}"
        );
        let b = store.read_stream("order-b", 1).await.expect("read_stream");
        assert!(b.is_empty(), "the refused append wrote none of its events");
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
        appended.expect("append").position
    }

    fn events(n: usize) -> Vec<NewEvent> {
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
}
