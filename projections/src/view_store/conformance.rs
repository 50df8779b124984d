//! The conformance suite of the [`ViewStore`] port: what every adapter must do, written once.
//!
//! Each case is a `pub async fn` that takes a fresh, empty store (the isolation case takes two,
//! made by two calls of the factory) and panics with a message that says which promise broke.
//! [`view_store_conformance!`](crate::view_store_conformance) turns them into one test per case
//! for an adapter:
//!
//! ```ignore
//! async fn fixture() -> (Arc<dyn ViewStore>, KeysGuard) { /* a fresh store */ }
//!
//! mod conformance {
//!     projections::view_store_conformance!(super::fixture());
//! }
//! ```
//!
//! The factory expression is evaluated once per store. It yields either the store or a
//! `(store, guard)` pair whose guard (a key prefix to delete, say) lives until the test ends;
//! see [`ViewFixture`]. Two stores from two calls must not share data: for an engine shared by
//! many tests that means a fresh key prefix per call. The calling crate needs `tokio` with
//! `macros` and `rt-multi-thread`.

use std::sync::Arc;
use std::time::Duration;

use crate::view_store::{Claim, Doc, ViewStore};
use futures_util::StreamExt;
use futures_util::stream::BoxStream;

/// How long a subscriber waits for a message that must come.
const WAIT: Duration = Duration::from_secs(5);

/// What a conformance factory yields: the store under test, maybe with a guard to keep alive.
pub trait ViewFixture {
    fn store(&self) -> Arc<dyn ViewStore>;
}

impl ViewFixture for Arc<dyn ViewStore> {
    fn store(&self) -> Arc<dyn ViewStore> {
        self.clone()
    }
}

impl<G> ViewFixture for (Arc<dyn ViewStore>, G) {
    fn store(&self) -> Arc<dyn ViewStore> {
        self.0.clone()
    }
}

/// Expands to one `#[tokio::test]` per conformance case, each on stores made by the given
/// async factory expression (see the [module docs](crate::view_store::conformance)).
#[macro_export]
macro_rules! view_store_conformance {
    ($factory:expr) => {
        $crate::view_store_conformance!(@cases $factory;
            get_of_a_missing_key_is_none,
            ping_answers,
            put_with_expected_zero_creates,
            put_with_a_stale_expected_is_refused_and_changes_nothing,
            concurrent_writers_lose_no_update,
            index_page_is_newest_first_with_ties_by_member,
            cursor_paging_returns_each_member_once_in_order,
            a_cursor_that_is_not_in_the_index_still_pages_strictly_after_it,
            re_adding_a_member_re_scores_it,
            a_claim_is_taken_once_until_unclaimed,
            a_completed_claim_is_done_for_good,
            a_claim_whose_lease_ended_is_taken_over,
            publish_reaches_current_subscribers_only,
            delete_prefix_deletes_only_the_names_under_it,
            index_add_many_is_index_add_for_each,
            overwrite_many_writes_whatever_is_stored,
        );
        $crate::view_store_conformance!(@pairs $factory;
            two_stores_do_not_see_each_others_keys,
        );
    };
    (@cases $factory:expr; $($case:ident),+ $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $case() {
                let fixture = $factory.await;
                let store = $crate::view_store::conformance::ViewFixture::store(&fixture);
                $crate::view_store::conformance::$case(store).await;
            }
        )+
    };
    (@pairs $factory:expr; $($case:ident),+ $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $case() {
                let first = $factory.await;
                let second = $factory.await;
                $crate::view_store::conformance::$case(
                    $crate::view_store::conformance::ViewFixture::store(&first),
                    $crate::view_store::conformance::ViewFixture::store(&second),
                )
                .await;
            }
        )+
    };
}

pub async fn get_of_a_missing_key_is_none(store: Arc<dyn ViewStore>) {
    assert_eq!(get(&store, "order:missing").await, None);
}

pub async fn ping_answers(store: Arc<dyn ViewStore>) {
    store.ping().await.expect("ping");
}

pub async fn put_with_expected_zero_creates(store: Arc<dyn ViewStore>) {
    let first = doc(1, r#"{"status":"placed","note":"naïve ✓"}"#);
    let big = doc(3, &"x".repeat(200_000));

    let created = put(&store, "order:1", 0, first.clone()).await;
    let big_created = put(&store, "order:big", 0, big.clone()).await;

    assert!(created, "a put with expected 0 creates a missing document");
    assert!(big_created, "a large body is written too");
    assert_eq!(
        get(&store, "order:1").await,
        Some(first),
        "read back as written"
    );
    assert_eq!(get(&store, "order:big").await, Some(big));
}

pub async fn put_with_a_stale_expected_is_refused_and_changes_nothing(store: Arc<dyn ViewStore>) {
    let kept = doc(2, "second");
    assert!(put(&store, "order:1", 0, doc(1, "first")).await);
    assert!(put(&store, "order:1", 1, kept.clone()).await);

    let again_from_zero = put(&store, "order:1", 0, doc(1, "stale")).await;
    let behind = put(&store, "order:1", 1, doc(2, "stale")).await;
    let ahead = put(&store, "order:1", 5, doc(6, "ahead")).await;
    let missing = put(&store, "order:2", 1, doc(2, "no such doc")).await;

    assert!(
        !again_from_zero,
        "expected 0 on an existing document is refused"
    );
    assert!(!behind, "a stale expected version is refused");
    assert!(
        !ahead,
        "an expected version ahead of the stored one is refused"
    );
    assert!(!missing, "a missing document counts as version 0");
    assert_eq!(get(&store, "order:1").await, Some(kept), "nothing changed");
    assert_eq!(get(&store, "order:2").await, None, "nothing created");
}

pub async fn concurrent_writers_lose_no_update(store: Arc<dyn ViewStore>) {
    const WRITERS: u64 = 20;
    const INCREMENTS: u64 = 20;

    let writers: Vec<_> = (0..WRITERS)
        .map(|_| {
            let store = store.clone();
            tokio::spawn(async move {
                for _ in 0..INCREMENTS {
                    increment(&store, "counter").await;
                }
            })
        })
        .collect();
    for writer in writers {
        writer.await.expect("writer task");
    }

    let total = WRITERS * INCREMENTS;
    let counter = get(&store, "counter").await.expect("the counter exists");
    assert_eq!(
        counter,
        doc(total, &total.to_string()),
        "every compare-on-version increment landed exactly once"
    );
}

pub async fn index_page_is_newest_first_with_ties_by_member(store: Arc<dyn ViewStore>) {
    for (score, member) in [
        (10, "a"),
        (30, "b"),
        (20, "c"),
        (20, "d"),
        (-5, "e"),
        (20, "B"),
        (20, "é"),
        (20, "ab"),
    ] {
        add(&store, "orders", score, member).await;
    }
    add(&store, "elsewhere", 99, "z").await;

    let all = page(&store, "orders", None, 100).await;
    let first = page(&store, "orders", None, 3).await;
    let after_c = page(&store, "orders", Some((20, "c")), 3).await;
    let empty = page(&store, "orders", None, 0).await;
    let missing = page(&store, "no-such-index", None, 10).await;

    let expected = pairs(&[
        (30, "b"),
        (20, "é"),
        (20, "d"),
        (20, "c"),
        (20, "ab"),
        (20, "B"),
        (10, "a"),
        (-5, "e"),
    ]);
    assert_eq!(
        all, expected,
        "descending (score, member), members compared bytewise"
    );
    assert_eq!(first, expected[..3], "the limit takes the newest");
    assert_eq!(
        after_c,
        expected[4..7],
        "a cursor pages strictly after itself"
    );
    assert!(empty.is_empty(), "a limit of 0 answers nothing");
    assert!(missing.is_empty(), "a missing index is empty");
}

pub async fn cursor_paging_returns_each_member_once_in_order(store: Arc<dyn ViewStore>) {
    let expected = fill_tied_index(&store, "orders").await;

    let mut seen = Vec::new();
    let mut cursor = None;
    let mut pages = 0;
    loop {
        let batch = store
            .index_page("orders", cursor.clone(), 16)
            .await
            .expect("index_page");
        pages += 1;
        assert!(pages <= 100, "paging does not end");
        assert!(batch.len() <= 16, "a page holds at most the limit");
        let Some(last) = batch.last().cloned() else {
            break;
        };
        if batch.len() < 16 {
            assert_eq!(
                seen.len() + batch.len(),
                expected.len(),
                "only the last page is short"
            );
        }
        seen.extend(batch);
        cursor = Some(last);
    }

    assert_eq!(seen.len(), expected.len(), "every member exactly once");
    assert_eq!(seen, expected, "in descending (score, member) order");
}

pub async fn a_cursor_that_is_not_in_the_index_still_pages_strictly_after_it(
    store: Arc<dyn ViewStore>,
) {
    let all = fill_tied_index(&store, "orders").await;
    let (top, _) = all[0].clone();
    let (bottom, _) = all[all.len() - 1].clone();
    let (tied, _) = all[100].clone();
    let cursors = [
        (tied, "order-150x".to_owned()),
        (tied, String::new()),
        (tied, "~".to_owned()),
        (tied + 1, "order-".to_owned()),
        (top + 10, "a".to_owned()),
        (bottom - 1, "z".to_owned()),
        (bottom, "order-".to_owned()),
    ];

    for cursor in cursors {
        let got = page_owned(&store, "orders", Some(cursor.clone()), 25).await;

        let want: Vec<_> = all
            .iter()
            .filter(|e| **e < cursor)
            .take(25)
            .cloned()
            .collect();
        assert_eq!(
            got, want,
            "the page after {cursor:?}, a cursor not in the index"
        );
    }
}

pub async fn re_adding_a_member_re_scores_it(store: Arc<dyn ViewStore>) {
    add(&store, "orders", 1, "x").await;
    add(&store, "orders", 2, "y").await;

    add(&store, "orders", 3, "x").await;
    let raised = page(&store, "orders", None, 10).await;
    add(&store, "orders", 0, "x").await;
    let lowered = page(&store, "orders", None, 10).await;
    add(&store, "orders", 0, "x").await;
    let same = page(&store, "orders", None, 10).await;

    assert_eq!(
        raised,
        pairs(&[(3, "x"), (2, "y")]),
        "re-scored, not duplicated"
    );
    assert_eq!(lowered, pairs(&[(2, "y"), (0, "x")]));
    assert_eq!(same, lowered, "adding the same score again changes nothing");
}

pub async fn a_claim_is_taken_once_until_unclaimed(store: Arc<dyn ViewStore>) {
    let key = "notified:event-1";

    let first = claim(&store, key).await;
    let second = claim(&store, key).await;
    let other = claim(&store, "notified:event-2").await;
    store.unclaim(key).await.expect("unclaim");
    let after_unclaim = claim(&store, key).await;
    store
        .unclaim("never-claimed")
        .await
        .expect("unclaim of nothing");

    assert_eq!(first, Claim::Taken, "the first claim takes the key");
    match second {
        Claim::Held(left) => assert!(
            left <= LEASE,
            "the lease left is at most the lease: {left:?}"
        ),
        other => panic!("a taken claim is held by its taker, not {other:?}"),
    }
    assert_eq!(other, Claim::Taken, "claims are per key");
    assert_eq!(
        after_unclaim,
        Claim::Taken,
        "an unclaimed key can be claimed again"
    );
    assert_eq!(get(&store, key).await, None, "claims are not documents");
    assert!(
        put(&store, key, 0, doc(1, "doc")).await,
        "nor do they block one"
    );
    assert!(
        matches!(claim(&store, key).await, Claim::Held(_)),
        "and a document does not free a claim"
    );
}

pub async fn a_completed_claim_is_done_for_good(store: Arc<dyn ViewStore>) {
    let key = "notified:event-3";

    assert_eq!(claim(&store, key).await, Claim::Taken);
    store.complete(key).await.expect("complete");
    let after = claim(&store, key).await;
    store.unclaim(key).await.expect("unclaim");
    let after_unclaim = claim(&store, key).await;
    store
        .complete("notified:never-claimed")
        .await
        .expect("complete without a claim");

    assert_eq!(after, Claim::Done, "completed work is not taken again");
    assert_eq!(
        after_unclaim,
        Claim::Done,
        "unclaim does not undo a completion"
    );
    assert_eq!(
        claim(&store, "notified:never-claimed").await,
        Claim::Done,
        "a completion needs no lease first"
    );
}

/// A worker that dies holding a claim does not block the work for good: its lease ends and
/// the next claim takes the work over.
pub async fn a_claim_whose_lease_ended_is_taken_over(store: Arc<dyn ViewStore>) {
    let key = "notified:event-4";
    let short = Duration::from_millis(300);

    let first = store.claim(key, short).await.expect("claim");
    let deadline = tokio::time::Instant::now() + WAIT;
    let mut answers = Vec::new();
    loop {
        let answer = store.claim(key, LEASE).await.expect("claim");
        answers.push(answer);
        if answer == Claim::Taken || tokio::time::Instant::now() > deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    assert_eq!(first, Claim::Taken);
    assert!(
        matches!(answers[0], Claim::Held(left) if left <= short),
        "held while the lease runs: {answers:?}"
    );
    assert_eq!(
        answers.last(),
        Some(&Claim::Taken),
        "taken over once the lease ended, within {WAIT:?}: {answers:?}"
    );
    assert!(
        matches!(claim(&store, key).await, Claim::Held(left) if left > short),
        "the new holder's lease is the one it asked for"
    );
}

pub async fn publish_reaches_current_subscribers_only(store: Arc<dyn ViewStore>) {
    store
        .publish("live", "nobody listens")
        .await
        .expect("publish to no one");
    let mut early = subscribe(&store, "live").await;
    let mut elsewhere = subscribe(&store, "other").await;

    publish(&store, "live", "first").await;
    let mut late = subscribe(&store, "live").await;
    publish(&store, "live", "second").await;
    publish(&store, "other", "marker").await;

    assert_eq!(
        next(&mut early).await,
        "first",
        "a current subscriber gets it"
    );
    assert_eq!(next(&mut early).await, "second", "in publish order");
    assert_eq!(
        next(&mut late).await,
        "second",
        "a later subscriber gets no history"
    );
    assert_eq!(
        next(&mut elsewhere).await,
        "marker",
        "another channel's messages do not arrive"
    );
}

/// Many entries at once land as if added one by one, in order: a later one re-scores.
pub async fn index_add_many_is_index_add_for_each(store: Arc<dyn ViewStore>) {
    let entries = vec![
        ("a".to_owned(), 1, "x".to_owned()),
        ("a".to_owned(), 3, "y".to_owned()),
        ("b".to_owned(), 2, "x".to_owned()),
        ("a".to_owned(), 5, "x".to_owned()),
    ];

    store.index_add_many(entries).await.expect("index_add_many");

    let a = store.index_page("a", None, 10).await.expect("index_page");
    let b = store.index_page("b", None, 10).await.expect("index_page");
    assert_eq!(a, vec![(5, "x".to_owned()), (3, "y".to_owned())]);
    assert_eq!(b, vec![(2, "x".to_owned())]);
}

/// A replay's old generation goes: every document and index under the prefix, and nothing
/// else (a name that merely contains it, claims, or a prefix with glob characters in it).
pub async fn delete_prefix_deletes_only_the_names_under_it(store: Arc<dyn ViewStore>) {
    let doc = |version| Doc {
        version,
        body: "{}".into(),
    };
    for key in [
        "g7:order:1",
        "g7:order:2",
        "g8:order:1",
        "order:g7:1",
        "g*:order:1",
    ] {
        assert!(store.put(key, 0, doc(1)).await.expect("put"));
    }
    store
        .index_add("g7:orders:all", 1, "a")
        .await
        .expect("index_add");
    store
        .index_add("orders:all", 1, "a")
        .await
        .expect("index_add");
    assert_eq!(claim(&store, "g7:claim").await, Claim::Taken);

    let deleted = store.delete_prefix("g7:").await.expect("delete_prefix");
    let globbed = store.delete_prefix("g*:").await.expect("delete_prefix");

    assert_eq!(deleted, 3, "two documents and one index");
    assert_eq!(globbed, 1, "a glob character is literal");
    for gone in ["g7:order:1", "g7:order:2", "g*:order:1"] {
        assert_eq!(store.get(gone).await.expect("get"), None, "{gone} deleted");
    }
    for kept in ["g8:order:1", "order:g7:1"] {
        assert!(store.get(kept).await.expect("get").is_some(), "{kept} kept");
    }
    let page = store
        .index_page("g7:orders:all", None, 10)
        .await
        .expect("index_page");
    assert!(page.is_empty(), "the index under the prefix is gone");
    let page = store
        .index_page("orders:all", None, 10)
        .await
        .expect("index_page");
    assert_eq!(page.len(), 1, "another index stays");
    assert!(
        matches!(claim(&store, "g7:claim").await, Claim::Held(_)),
        "claims stay"
    );
}

pub async fn two_stores_do_not_see_each_others_keys(a: Arc<dyn ViewStore>, b: Arc<dyn ViewStore>) {
    assert!(put(&a, "order:1", 0, doc(1, "from a")).await);
    add(&a, "orders", 1, "from-a").await;
    assert_eq!(claim(&a, "notified:1").await, Claim::Taken);
    let mut b_live = subscribe(&b, "live").await;

    let b_doc = get(&b, "order:1").await;
    let b_created = put(&b, "order:1", 0, doc(1, "from b")).await;
    let b_index = page(&b, "orders", None, 10).await;
    let b_claimed = claim(&b, "notified:1").await;
    publish(&a, "live", "from a").await;
    publish(&b, "live", "from b").await;

    assert_eq!(b_doc, None, "b does not see a's document");
    assert!(b_created, "b writes its own document");
    assert_eq!(
        get(&a, "order:1").await,
        Some(doc(1, "from a")),
        "a's is untouched"
    );
    assert!(b_index.is_empty(), "b does not see a's index");
    assert_eq!(b_claimed, Claim::Taken, "b does not see a's claim");
    assert_eq!(
        next(&mut b_live).await,
        "from b",
        "b does not hear a's channel"
    );
}

/// 300 members over ~43 distinct scores near a real microsecond timestamp (7 ties each), the
/// members in an order unrelated to the scores. Answers them all, newest first.
async fn fill_tied_index(store: &Arc<dyn ViewStore>, index: &str) -> Vec<(i64, String)> {
    const BASE: i64 = 1_750_000_000_000_000;
    let mut all: Vec<(i64, String)> = (0..300)
        .map(|i| (BASE + i / 7, format!("order-{:03}", (i * 37) % 300)))
        .collect();
    for (score, member) in &all {
        add(store, index, *score, member).await;
    }
    all.sort();
    all.reverse();
    all
}

async fn increment(store: &Arc<dyn ViewStore>, key: &str) {
    for _ in 0..10_000 {
        let (version, count) = match get(store, key).await {
            Some(current) => {
                let count: u64 = current.body.parse().expect("a counter body");
                (current.version, count)
            }
            None => (0, 0),
        };
        let next = doc(version + 1, &(count + 1).to_string());
        if put(store, key, version, next).await {
            return;
        }
    }
    panic!("an increment of {key} lost 10000 races in a row");
}

fn doc(version: u64, body: &str) -> Doc {
    Doc {
        version,
        body: body.to_owned(),
    }
}

fn pairs(items: &[(i64, &str)]) -> Vec<(i64, String)> {
    items.iter().map(|(s, m)| (*s, (*m).to_owned())).collect()
}

async fn get(store: &Arc<dyn ViewStore>, key: &str) -> Option<Doc> {
    store.get(key).await.expect("get")
}

async fn put(store: &Arc<dyn ViewStore>, key: &str, expected: u64, doc: Doc) -> bool {
    store.put(key, expected, doc).await.expect("put")
}

async fn add(store: &Arc<dyn ViewStore>, index: &str, score: i64, member: &str) {
    store
        .index_add(index, score, member)
        .await
        .expect("index_add");
}

async fn page(
    store: &Arc<dyn ViewStore>,
    index: &str,
    before: Option<(i64, &str)>,
    limit: usize,
) -> Vec<(i64, String)> {
    let before = before.map(|(s, m)| (s, m.to_owned()));
    page_owned(store, index, before, limit).await
}

async fn page_owned(
    store: &Arc<dyn ViewStore>,
    index: &str,
    before: Option<(i64, String)>,
    limit: usize,
) -> Vec<(i64, String)> {
    store
        .index_page(index, before, limit)
        .await
        .expect("index_page")
}

/// The lease the conformance cases take when the lease itself is not the point.
const LEASE: Duration = Duration::from_secs(60);

async fn claim(store: &Arc<dyn ViewStore>, key: &str) -> Claim {
    store.claim(key, LEASE).await.expect("claim")
}

async fn publish(store: &Arc<dyn ViewStore>, channel: &str, message: &str) {
    store.publish(channel, message).await.expect("publish");
}

async fn subscribe(store: &Arc<dyn ViewStore>, channel: &str) -> BoxStream<'static, String> {
    store.subscribe(channel).await.expect("subscribe")
}

async fn next(messages: &mut BoxStream<'static, String>) -> String {
    match tokio::time::timeout(WAIT, messages.next()).await {
        Ok(Some(message)) => message,
        Ok(None) => panic!("the subscription ended"),
        Err(_) => panic!("no message within {WAIT:?}"),
    }
}

/// Overwrites land whatever version is stored (older or newer), read back like puts, and
/// compare-on-version writes go on from them.
pub async fn overwrite_many_writes_whatever_is_stored(store: Arc<dyn ViewStore>) {
    let doc = |version, body: &str| Doc {
        version,
        body: body.to_owned(),
    };
    assert!(store.put("a", 0, doc(3, "old")).await.expect("put"));

    store
        .overwrite_many(vec![("a".into(), doc(1, "new")), ("b".into(), doc(2, "b"))])
        .await
        .expect("overwrite_many");

    assert_eq!(store.get("a").await.expect("get"), Some(doc(1, "new")));
    assert_eq!(store.get("b").await.expect("get"), Some(doc(2, "b")));
    assert!(store.put("b", 2, doc(3, "next")).await.expect("put"));
    assert!(!store.put("a", 3, doc(4, "stale")).await.expect("put"));
}
