//! What the adapters' tests share: events to append, and the group commit's promise that a
//! request the engine refuses fails alone.

use std::sync::Arc;

use chrono::Utc;
use domain::{EventMetadata, NewEvent};
use eventlog::{EventStore, LogCursor, StoreError};
use serde_json::json;
use uuid::Uuid;

/// How many good requests [`one_refused_among_many`] sends beside the refused one.
pub(crate) const REFUSED_AMONG: usize = 30;

/// Sends [`REFUSED_AMONG`] appends of two events to streams of their own and, among them,
/// one of `refused` to `order-bad`, all at once; checks that every good one committed, with
/// positions 1 to 2n and in fewer batches than requests, and that nothing of the refused
/// one is stored. Answers the refused request's answer.
pub(crate) async fn one_refused_among_many(
    store: Arc<dyn EventStore>,
    refused: Vec<NewEvent>,
) -> Result<eventlog::Appended, StoreError> {
    let before = store.group_commits().expect("a group-committing store");
    let mut appends: Vec<_> = (0..REFUSED_AMONG)
        .map(|i| {
            let store = store.clone();
            tokio::spawn(async move {
                store
                    .append(&format!("order-{i}"), "order", 0, events(2))
                    .await
            })
        })
        .collect();
    let bad = {
        let store = store.clone();
        tokio::spawn(async move { store.append("order-bad", "order", 0, refused).await })
    };
    appends.insert(REFUSED_AMONG / 2, bad);
    let mut answers = Vec::new();
    for append in appends {
        answers.push(append.await.expect("append task"));
    }

    let bad = answers.remove(REFUSED_AMONG / 2);
    for answer in answers {
        assert_eq!(answer.expect("a good append commits").version, 2);
    }
    assert!(
        store
            .read_stream("order-bad", 1)
            .await
            .expect("read")
            .is_empty()
    );
    let page = store
        .read_all(&LogCursor::start(), 100)
        .await
        .expect("read_all");
    let positions: Vec<Option<u64>> = page.events.iter().map(|e| e.global_position).collect();
    let expected: Vec<Option<u64>> = (1..=2 * REFUSED_AMONG as u64).map(Some).collect();
    assert_eq!(
        positions, expected,
        "no position was lost to the refused request"
    );
    let batches = store.group_commits().expect("a group-committing store") - before;
    assert!(
        batches < REFUSED_AMONG as u64,
        "the requests shared batches"
    );
    bad
}

pub(crate) fn events(n: usize) -> Vec<NewEvent> {
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
