//! The conformance suite of the [`EventStore`] port: what every adapter must do, written once.
//!
//! Each case is a `pub async fn` that takes a fresh, empty store and panics with a message
//! that says which promise broke. [`event_store_conformance!`](crate::event_store_conformance)
//! turns them into one test per case for an adapter:
//!
//! ```ignore
//! async fn fixture() -> (Arc<dyn EventStore>, tempfile::TempDir) { /* a fresh store */ }
//!
//! mod conformance {
//!     eventlog::event_store_conformance!(super::fixture());
//! }
//! ```
//!
//! `event_store_conformance!(stream_ordered: factory)` runs the cases for an engine whose
//! log keeps order only within a stream (Cosmos DB): everything but one commit order across
//! streams and numbered positions.
//!
//! The factory expression is evaluated once per test. It yields either the store or a
//! `(store, guard)` pair whose guard (a temporary directory, a database schema) lives until the
//! test ends; see [`StoreFixture`]. The calling crate needs `tokio` with `macros` and
//! `rt-multi-thread`.

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use crate::{Appended, EventStore, LogCursor, StoreError};
use chrono::{SubsecRound, Utc};
use domain::{EventMetadata, NewEvent, RecordedEvent};
use serde_json::json;
use uuid::Uuid;

const STREAM_TYPE: &str = "order";

/// What a conformance factory yields: the store under test, maybe with a guard to keep alive.
pub trait StoreFixture {
    fn store(&self) -> Arc<dyn EventStore>;
}

impl StoreFixture for Arc<dyn EventStore> {
    fn store(&self) -> Arc<dyn EventStore> {
        self.clone()
    }
}

impl<G> StoreFixture for (Arc<dyn EventStore>, G) {
    fn store(&self) -> Arc<dyn EventStore> {
        self.0.clone()
    }
}

/// Expands to one `#[tokio::test]` per conformance case, each on a store made by the given
/// async factory expression (see the [module docs](crate::conformance)).
#[macro_export]
macro_rules! event_store_conformance {
    ($factory:expr) => {
        $crate::event_store_conformance!(stream_ordered: $factory);
        $crate::event_store_conformance!(@cases $factory;
            read_all_follows_commit_order,
            a_tail_sees_the_log_in_commit_order,
            positions_number_the_log,
        );
    };
    // For an engine whose log keeps order only within a stream (Cosmos DB's change feed):
    // every promise but one commit order across streams and positions.
    (stream_ordered: $factory:expr) => {
        $crate::event_store_conformance!(@cases $factory;
            append_then_read_stream_round_trips,
            wrong_expected_version_conflicts_and_writes_nothing,
            multi_event_append_is_atomic,
            empty_append_writes_nothing,
            read_stream_from_a_version,
            read_all_pages_resume_after_their_cursor,
            idempotent_retry_answers_like_the_original,
            racing_appends_to_one_version_have_one_winner,
            concurrent_appenders_to_one_stream_leave_no_gaps,
            concurrent_appenders_to_own_streams_all_succeed,
            tailing_read_all_during_writes_never_skips,
            watch_head_rings_after_an_append,
            checkpoints_start_empty_and_keep_cursors,
            lag_counts_what_lies_after_a_cursor_where_known,
            a_lease_has_one_holder_at_a_time,
            a_refused_append_leaves_concurrent_ones_alone,
            appends_waiting_together_commit_together,
        );
    };
    (@cases $factory:expr; $($case:ident),+ $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $case() {
                let fixture = $factory.await;
                let store = $crate::conformance::StoreFixture::store(&fixture);
                $crate::conformance::$case(store).await;
            }
        )+
    };
}

pub async fn append_then_read_stream_round_trips(store: Arc<dyn EventStore>) {
    let stream = stream_id();
    let sent = new_events(3);

    let appended = append(&store, &stream, 0, sent.clone()).await;
    let read = store.read_stream(&stream, 1).await.expect("read_stream");

    assert_eq!(appended.version, 3, "append answers the new stream version");
    assert!(!appended.duplicate, "a first append is not a duplicate");
    assert_eq!(read.len(), 3, "read_stream returns every appended event");
    for ((recorded, new), version) in read.iter().zip(&sent).zip(1..) {
        assert_same_event(recorded, new);
        assert_eq!(recorded.stream_id, stream);
        assert_eq!(recorded.stream_type, STREAM_TYPE);
        assert_eq!(recorded.version, version, "versions run 1..=n");
    }
    assert_eq!(
        read.last().map(|e| e.global_position),
        Some(appended.position),
        "append answers the global position of its last event"
    );
}

pub async fn wrong_expected_version_conflicts_and_writes_nothing(store: Arc<dyn EventStore>) {
    let stream = stream_id();
    append(&store, &stream, 0, new_events(2)).await;

    let result = store.append(&stream, STREAM_TYPE, 1, new_events(1)).await;

    let expected = StoreError::Conflict {
        stream_id: stream.clone(),
        expected: 1,
        actual: 2,
    };
    assert_eq!(result, Err(expected), "a stale expected version conflicts");
    assert_eq!(
        versions(&store, &stream).await,
        vec![1, 2],
        "nothing written"
    );
}

pub async fn multi_event_append_is_atomic(store: Arc<dyn EventStore>) {
    let stream = stream_id();
    append(&store, &stream, 0, new_events(1)).await;
    let batch = new_events(3);

    let result = store.append(&stream, STREAM_TYPE, 0, batch.clone()).await;

    assert!(
        matches!(result, Err(StoreError::Conflict { actual: 1, .. })),
        "a batch on a stale version conflicts, got {result:?}"
    );
    let all = whole_log(&store).await;
    let batch_ids: HashSet<Uuid> = batch.iter().map(|e| e.event_id).collect();
    assert!(
        all.iter().all(|e| !batch_ids.contains(&e.event_id)),
        "no event of a refused batch is stored"
    );
    assert_eq!(all.len(), 1);
}

pub async fn empty_append_writes_nothing(store: Arc<dyn EventStore>) {
    let stream = stream_id();
    append(&store, &stream, 0, new_events(2)).await;

    let appended = append(&store, &stream, 2, Vec::new()).await;

    assert_eq!(
        appended.version, 2,
        "an empty append answers the current version"
    );
    assert_eq!(versions(&store, &stream).await, vec![1, 2]);
}

pub async fn read_stream_from_a_version(store: Arc<dyn EventStore>) {
    let stream = stream_id();
    append(&store, &stream, 0, new_events(5)).await;

    let tail = versions_from(&store, &stream, 3).await;
    let past_end = versions_from(&store, &stream, 6).await;
    let unknown = store
        .read_stream(&stream_id(), 1)
        .await
        .expect("read_stream");

    assert_eq!(tail, vec![3, 4, 5], "read_stream starts at from_version");
    assert!(past_end.is_empty(), "nothing past the last version");
    assert!(
        unknown.is_empty(),
        "an unknown stream is empty, not an error"
    );
}

pub async fn read_all_follows_commit_order(store: Arc<dyn EventStore>) {
    let (a, b) = (stream_id(), stream_id());
    append(&store, &a, 0, new_events(2)).await;
    append(&store, &b, 0, new_events(3)).await;
    append(&store, &a, 2, new_events(1)).await;

    let all = whole_log(&store).await;

    let order: Vec<(&str, u64)> = all
        .iter()
        .map(|e| (e.stream_id.as_str(), e.version))
        .collect();
    let expected = [(&a, 1), (&a, 2), (&b, 1), (&b, 2), (&b, 3), (&a, 3)];
    let expected: Vec<(&str, u64)> = expected.iter().map(|(s, v)| (s.as_str(), *v)).collect();
    assert_eq!(
        order, expected,
        "read_all returns every event in commit order"
    );
    assert_strictly_increasing(&all);
}

/// Pages of one event each, followed cursor by cursor, give every event once and each stream
/// in version order; a page's cursor excludes its events; an empty page at the end stays put.
pub async fn read_all_pages_resume_after_their_cursor(store: Arc<dyn EventStore>) {
    let (a, b) = (stream_id(), stream_id());
    for (stream, expected) in [(&a, 0), (&b, 0), (&a, 1), (&b, 1), (&a, 2)] {
        append(&store, stream, expected, new_events(1)).await;
    }

    let mut paged = Vec::new();
    let mut cursor = LogCursor::start();
    let end = loop {
        let page = store.read_all(&cursor, 1).await.expect("read_all");
        if page.events.is_empty() {
            break page.next;
        }
        assert_eq!(page.events.len(), 1, "`limit` caps the page");
        assert_ne!(page.next, cursor, "a page with events moves the cursor");
        paged.extend(page.events);
        cursor = page.next;
    };

    let ids: HashSet<Uuid> = paged.iter().map(|e| e.event_id).collect();
    assert_eq!(paged.len(), 5, "every event, page by page");
    assert_eq!(ids.len(), 5, "none twice");
    assert_each_stream_in_order(&paged);
    assert_eq!(end, cursor, "an empty page stays where it was read from");
    let again = store.read_all(&end, 10).await.expect("read_all");
    assert!(again.events.is_empty(), "nothing after the end");
}

pub async fn idempotent_retry_answers_like_the_original(store: Arc<dyn EventStore>) {
    let stream = stream_id();
    let events = new_events(2);
    let original = append(&store, &stream, 0, events.clone()).await;
    append(&store, &stream, 2, new_events(1)).await;
    let log = whole_log(&store).await;

    let retry = append(&store, &stream, 0, events).await;

    let expected = Appended {
        duplicate: true,
        ..original
    };
    assert_eq!(
        retry, expected,
        "a retry answers the original version and position"
    );
    assert_eq!(
        versions(&store, &stream).await,
        vec![1, 2, 3],
        "nothing written"
    );
    assert_eq!(whole_log(&store).await, log, "the log did not grow");
}

pub async fn racing_appends_to_one_version_have_one_winner(store: Arc<dyn EventStore>) {
    let stream = stream_id();

    let tasks: Vec<_> = (0..8)
        .map(|_| {
            let (store, stream) = (store.clone(), stream.clone());
            tokio::spawn(async move { store.append(&stream, STREAM_TYPE, 0, new_events(1)).await })
        })
        .collect();
    let results = join_all(tasks).await;

    let winners = results.iter().filter(|r| r.is_ok()).count();
    let conflicts = results
        .iter()
        .filter(|r| matches!(r, Err(StoreError::Conflict { actual: 1, .. })))
        .count();
    assert_eq!(
        winners, 1,
        "exactly one append at version 0 wins: {results:?}"
    );
    assert_eq!(
        conflicts, 7,
        "every other one conflicts at version 1: {results:?}"
    );
    assert_eq!(versions(&store, &stream).await, vec![1]);
}

pub async fn concurrent_appenders_to_one_stream_leave_no_gaps(store: Arc<dyn EventStore>) {
    const TASKS: u64 = 16;
    const APPENDS: u64 = 50;
    let stream = stream_id();

    let tasks: Vec<_> = (0..TASKS)
        .map(|_| {
            let (store, stream) = (store.clone(), stream.clone());
            tokio::spawn(async move {
                let mut known = 0;
                for _ in 0..APPENDS {
                    known = append_with_retry(&store, &stream, known).await.version;
                }
            })
        })
        .collect();
    join_all(tasks).await;

    let events = store.read_stream(&stream, 1).await.expect("read_stream");
    let versions: Vec<u64> = events.iter().map(|e| e.version).collect();
    let ids: HashSet<Uuid> = events.iter().map(|e| e.event_id).collect();
    assert_eq!(
        versions,
        (1..=TASKS * APPENDS).collect::<Vec<_>>(),
        "no gaps, no extras"
    );
    assert_eq!(ids.len() as u64, TASKS * APPENDS, "every event stored once");
}

pub async fn concurrent_appenders_to_own_streams_all_succeed(store: Arc<dyn EventStore>) {
    const TASKS: usize = 16;
    const APPENDS: u64 = 20;
    let streams: Vec<String> = (0..TASKS).map(|_| stream_id()).collect();

    let tasks: Vec<_> = streams
        .iter()
        .map(|stream| {
            let (store, stream) = (store.clone(), stream.clone());
            tokio::spawn(async move {
                for expected in 0..APPENDS {
                    let appended = append(&store, &stream, expected, new_events(1)).await;
                    assert_eq!(appended.version, expected + 1, "{stream} moves one by one");
                }
            })
        })
        .collect();
    join_all(tasks).await;

    for stream in &streams {
        let expected: Vec<u64> = (1..=APPENDS).collect();
        assert_eq!(
            versions(&store, stream).await,
            expected,
            "{stream} is complete"
        );
    }
}

pub async fn tailing_read_all_during_writes_never_skips(store: Arc<dyn EventStore>) {
    let (seen, all) = tail_during_writes(&store).await;

    let unique: HashSet<Uuid> = seen.iter().map(|e| e.event_id).collect();
    let every: HashSet<Uuid> = all.iter().map(|e| e.event_id).collect();
    assert_eq!(all.len(), TAIL_TOTAL, "every append is in the log");
    assert_eq!(unique.len(), seen.len(), "the tail saw no event twice");
    assert_eq!(unique, every, "the tail saw every event");
    assert_each_stream_in_order(&seen);
}

/// Where the engine numbers its log, a tail sees exactly the log's commit order.
pub async fn a_tail_sees_the_log_in_commit_order(store: Arc<dyn EventStore>) {
    let (seen, all) = tail_during_writes(&store).await;

    let seen: Vec<Uuid> = seen.iter().map(|e| e.event_id).collect();
    let all: Vec<Uuid> = all.iter().map(|e| e.event_id).collect();
    assert_eq!(seen, all, "the tail saw every event, in log order");
}

const TAIL_WRITERS: usize = 8;
const TAIL_APPENDS: u64 = 25;
const TAIL_TOTAL: usize = TAIL_WRITERS * TAIL_APPENDS as usize * 2;

/// Eight writers append pairs of events to streams of their own while a reader follows the
/// log cursor by cursor; answers what the reader saw and the whole log afterwards.
async fn tail_during_writes(
    store: &Arc<dyn EventStore>,
) -> (Vec<RecordedEvent>, Vec<RecordedEvent>) {
    let writers_done = Arc::new(AtomicBool::new(false));

    let reader = tokio::spawn(tail(store.clone(), writers_done.clone()));
    let writers: Vec<_> = (0..TAIL_WRITERS)
        .map(|_| {
            let store = store.clone();
            tokio::spawn(async move {
                let stream = stream_id();
                for expected in (0..TAIL_APPENDS * 2).step_by(2) {
                    append(&store, &stream, expected, new_events(2)).await;
                }
            })
        })
        .collect();
    join_all(writers).await;
    writers_done.store(true, Ordering::SeqCst);
    let seen = reader.await.expect("the tailing reader panicked");
    (seen, whole_log(store).await)
}

pub async fn watch_head_rings_after_an_append(store: Arc<dyn EventStore>) {
    let mut head = store.watch_head();
    head.borrow_and_update();

    append(&store, &stream_id(), 0, new_events(2)).await;

    let rang = tokio::time::timeout(WAIT, head.changed()).await;
    assert!(
        matches!(rang, Ok(Ok(()))),
        "watch_head rings after an append: {rang:?}"
    );
}

pub async fn checkpoints_start_empty_and_keep_cursors(store: Arc<dyn EventStore>) {
    assert_eq!(
        checkpoint(&store, "relay").await,
        LogCursor::start(),
        "no checkpoint reads as the start"
    );
    let stream = stream_id();
    for expected in 0..3 {
        append(&store, &stream, expected, new_events(1)).await;
    }
    let first = store
        .read_all(&LogCursor::start(), 1)
        .await
        .expect("read_all");
    let second = store.read_all(&first.next, 1).await.expect("read_all");

    store
        .save_checkpoint("relay", &second.next)
        .await
        .expect("save_checkpoint");
    let saved = checkpoint(&store, "relay").await;
    store
        .save_checkpoint("relay", &first.next)
        .await
        .expect("save_checkpoint");
    let rewound = checkpoint(&store, "relay").await;

    assert_eq!(saved, second.next, "a saved checkpoint reads back");
    assert_eq!(
        versions_of(&log_after(&store, &saved).await),
        vec![3],
        "and resumes after what was read"
    );
    assert_eq!(rewound, first.next, "a reader may move its checkpoint back");
    assert_eq!(versions_of(&log_after(&store, &rewound).await), vec![2, 3]);
    assert_eq!(
        checkpoint(&store, "projector").await,
        LogCursor::start(),
        "readers are separate"
    );
}

/// Where the engine numbers its log: positions run from 1 in commit order, an append answers
/// its last event's, the doorbell carries the head, and lag is the head minus the cursor's.
pub async fn positions_number_the_log(store: Arc<dyn EventStore>) {
    let mut head = store.watch_head();
    assert_eq!(*head.borrow_and_update(), 0, "an empty store's head is 0");
    store.ping().await.expect("ping");

    append(&store, &stream_id(), 0, new_events(2)).await;
    let last = append(&store, &stream_id(), 0, new_events(3)).await;

    let all = whole_log(&store).await;
    let positions: Vec<Option<u64>> = all.iter().map(|e| e.global_position).collect();
    assert_eq!(positions, (1..=5).map(Some).collect::<Vec<_>>());
    assert_eq!(
        last.position,
        Some(5),
        "an append answers its last position"
    );
    let woke = tokio::time::timeout(WAIT, head.wait_for(|h| *h >= 5)).await;
    let woke = woke.ok().and_then(|seen| seen.ok().map(|h| *h));
    assert_eq!(woke, Some(5), "watch_head carries the new head");
    let first = store
        .read_all(&LogCursor::start(), 2)
        .await
        .expect("read_all");
    assert_eq!(
        first.next,
        LogCursor::at_position(2),
        "cursors are positions"
    );
    assert_eq!(store.lag(&first.next).await.expect("lag"), Some(3));
}

pub async fn lag_counts_what_lies_after_a_cursor_where_known(store: Arc<dyn EventStore>) {
    store.ping().await.expect("ping");
    let empty = store.lag(&LogCursor::start()).await.expect("lag");
    append(&store, &stream_id(), 0, new_events(2)).await;
    append(&store, &stream_id(), 0, new_events(3)).await;
    let first = store
        .read_all(&LogCursor::start(), 2)
        .await
        .expect("read_all");
    let end = store
        .read_all(&first.next, 100)
        .await
        .expect("read_all")
        .next;

    let lags = [
        store.lag(&LogCursor::start()).await.expect("lag"),
        store.lag(&first.next).await.expect("lag"),
        store.lag(&end).await.expect("lag"),
    ];

    if empty.is_some() {
        assert_eq!(
            empty,
            Some(0),
            "nothing lies after the start of an empty log"
        );
        assert_eq!(
            lags,
            [Some(5), Some(3), Some(0)],
            "events after each cursor"
        );
    } else {
        assert_eq!(lags, [None; 3], "an engine that cannot count never does");
    }
}

const WAIT: Duration = Duration::from_secs(10);

/// Follows the log cursor by cursor until the writers are done and it is caught up.
async fn tail(store: Arc<dyn EventStore>, writers_done: Arc<AtomicBool>) -> Vec<RecordedEvent> {
    let (mut after, mut seen) = (LogCursor::start(), Vec::new());
    loop {
        // Read the flag first: an empty page read after it was set means nothing is left.
        let done = writers_done.load(Ordering::SeqCst);
        let page = store.read_all(&after, 50).await.expect("read_all");
        if page.events.is_empty() && done {
            return seen;
        }
        if page.events.is_empty() {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        after = page.next;
        seen.extend(page.events);
    }
}

/// Every event after `after`, following pages until one comes back empty.
pub async fn log_after(store: &Arc<dyn EventStore>, after: &LogCursor) -> Vec<RecordedEvent> {
    let (mut cursor, mut all) = (after.clone(), Vec::new());
    loop {
        let page = store.read_all(&cursor, 500).await.expect("read_all");
        if page.events.is_empty() {
            return all;
        }
        cursor = page.next;
        all.extend(page.events);
    }
}

/// The whole log, from the start.
pub async fn whole_log(store: &Arc<dyn EventStore>) -> Vec<RecordedEvent> {
    log_after(store, &LogCursor::start()).await
}

fn versions_of(events: &[RecordedEvent]) -> Vec<u64> {
    events.iter().map(|e| e.version).collect()
}

/// Within each stream, versions run 1, 2, 3, … in the order the events came.
fn assert_each_stream_in_order(events: &[RecordedEvent]) {
    let mut last: std::collections::HashMap<&str, u64> = Default::default();
    for event in events {
        let previous = last.insert(&event.stream_id, event.version).unwrap_or(0);
        assert_eq!(
            event.version,
            previous + 1,
            "{} comes in version order",
            event.stream_id
        );
    }
}

/// Appends one event as a command handler would: on conflict, catch up from the version it
/// knows (reading only the newer events) and decide again.
async fn append_with_retry(store: &Arc<dyn EventStore>, stream: &str, known: u64) -> Appended {
    let mut expected = known;
    loop {
        match store
            .append(stream, STREAM_TYPE, expected, new_events(1))
            .await
        {
            Ok(appended) => return appended,
            Err(StoreError::Conflict { .. }) => {
                let newer = store
                    .read_stream(stream, expected + 1)
                    .await
                    .expect("reload");
                expected += newer.len() as u64;
            }
            Err(other) => panic!("append to {stream} failed: {other}"),
        }
    }
}

async fn append(
    store: &Arc<dyn EventStore>,
    stream: &str,
    expected: u64,
    events: Vec<NewEvent>,
) -> Appended {
    store
        .append(stream, STREAM_TYPE, expected, events)
        .await
        .unwrap_or_else(|e| panic!("append to {stream} at {expected} failed: {e}"))
}

async fn versions(store: &Arc<dyn EventStore>, stream: &str) -> Vec<u64> {
    versions_from(store, stream, 1).await
}

async fn versions_from(store: &Arc<dyn EventStore>, stream: &str, from: u64) -> Vec<u64> {
    let events = store.read_stream(stream, from).await.expect("read_stream");
    events.iter().map(|e| e.version).collect()
}

async fn checkpoint(store: &Arc<dyn EventStore>, reader: &str) -> LogCursor {
    store.checkpoint(reader).await.expect("checkpoint")
}

async fn join_all<T>(tasks: Vec<tokio::task::JoinHandle<T>>) -> Vec<T> {
    let mut results = Vec::with_capacity(tasks.len());
    for task in tasks {
        results.push(task.await.expect("a conformance task panicked"));
    }
    results
}

fn assert_same_event(recorded: &RecordedEvent, sent: &NewEvent) {
    assert_eq!(recorded.event_id, sent.event_id, "event_id intact");
    assert_eq!(recorded.event_type, sent.event_type, "event_type intact");
    assert_eq!(
        recorded.schema_version, sent.schema_version,
        "schema_version intact"
    );
    assert_eq!(
        recorded.occurred_at, sent.occurred_at,
        "occurred_at intact to the µs"
    );
    assert_eq!(recorded.payload, sent.payload, "payload intact");
    assert_eq!(recorded.metadata, sent.metadata, "metadata intact");
}

fn assert_strictly_increasing(events: &[RecordedEvent]) {
    let positions: Vec<u64> = events.iter().filter_map(|e| e.global_position).collect();
    assert_eq!(positions.len(), events.len(), "every event has a position");
    assert!(
        positions.windows(2).all(|w| w[0] < w[1]),
        "global positions strictly increase: {positions:?}"
    );
}

/// A stream id no other test uses, so suites may share one store.
fn stream_id() -> String {
    format!("{STREAM_TYPE}-{}", Uuid::now_v7())
}

/// `n` distinct events with every envelope field set, `occurred_at` at µs precision.
fn new_events(n: u32) -> Vec<NewEvent> {
    let correlation_id = Uuid::now_v7();
    (0..n)
        .map(|i| NewEvent {
            event_id: Uuid::now_v7(),
            event_type: "OrderNoted".into(),
            schema_version: 2,
            occurred_at: Utc::now().trunc_subsecs(6),
            payload: json!({ "n": i, "note": "café ✓", "lines": [{ "sku": "SKU-1", "qty": 2 }] }),
            metadata: EventMetadata {
                correlation_id,
                causation_id: Some(Uuid::now_v7()),
                command_id: Some(format!("cmd-{i}")),
                request_hash: Some("sha256:abc".into()),
                actor: "customer:42".into(),
                traceparent: Some("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01".into()),
            },
        })
        .collect()
}

pub async fn a_lease_has_one_holder_at_a_time(store: Arc<dyn EventStore>) {
    let name = format!("lease-{}", uuid::Uuid::new_v4());

    let mut first = store
        .lease(&name)
        .await
        .expect("lease")
        .expect("a free lease is granted");
    let second = store.lease(&name).await.expect("lease");
    let other = store.lease(&format!("{name}-other")).await.expect("lease");

    assert!(second.is_none(), "a held lease is not granted twice");
    assert!(other.is_some(), "leases with other names are independent");
    assert!(first.held().await, "the holder still holds it");
    drop(first);
    let mut again = None;
    for _ in 0..100 {
        again = store.lease(&name).await.expect("lease");
        if again.is_some() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert!(again.is_some(), "a dropped lease is granted again");
}

/// Appends that arrive together (a group-committing store puts them in one transaction) are
/// answered each on its own: the one that conflicts writes nothing, the others commit.
pub async fn a_refused_append_leaves_concurrent_ones_alone(store: Arc<dyn EventStore>) {
    let (a, b, c) = (stream_id(), stream_id(), stream_id());

    let (first, refused, last) = tokio::join!(
        store.append(&a, "order", 0, new_events(1)),
        store.append(&b, "order", 5, new_events(1)),
        store.append(&c, "order", 0, new_events(1)),
    );

    assert!(first.is_ok() && last.is_ok(), "{first:?} {last:?}");
    assert!(
        matches!(refused, Err(StoreError::Conflict { .. })),
        "{refused:?}"
    );
    let written = store.read_stream(&b, 1).await.expect("read_stream");
    assert!(
        written.is_empty(),
        "the refused append wrote none of its events"
    );
}

/// 200 appends at once all land; where the engine group-commits (it reports
/// `group_commits`), they take fewer transactions than appends.
pub async fn appends_waiting_together_commit_together(store: Arc<dyn EventStore>) {
    let before = store.group_commits();

    let tasks: Vec<_> = (0..200)
        .map(|_| {
            let store = store.clone();
            tokio::spawn(async move { append(&store, &stream_id(), 0, new_events(1)).await })
        })
        .collect();
    for task in tasks {
        task.await.expect("append task");
    }

    assert_eq!(whole_log(&store).await.len(), 200);
    if let (Some(before), Some(after)) = (before, store.group_commits()) {
        let batches = after - before;
        assert!(batches < 200, "200 appends took {batches} transactions");
    }
}
