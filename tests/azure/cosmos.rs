//! The Cosmos DB event store against [`CosmosFake`], a local server that enforces the documented
//! REST contract (master-key signatures, partition keys, atomic transactional batches answered
//! `207` when refused, single-partition queries paged by continuation, the change feed by
//! partition key range with etags and `304`, `If-Match` on writes, TTL): what is specific to
//! Cosmos DB. Every test here runs against the local fake, never against Azure.

use std::collections::HashSet;
use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::http::Method;
use chrono::{SubsecRound, Utc};
use domain::{EventMetadata, NewEvent};
use eventlog::{EventStore, LogCursor, StoreError};
use infra::event_store::cosmos::{CosmosEventStore, CosmosKey, CosmosSettings};
use orderflow_tests::fakes::cosmos::{CosmosConfig, CosmosFake};
use serde_json::json;
use uuid::Uuid;

fn settings(fake: &CosmosFake, key: &str) -> CosmosSettings {
    let config = &fake.config;
    let mut settings = CosmosSettings::new(
        fake.endpoint.clone(),
        CosmosKey::new(key),
        config.database.clone(),
    );
    settings.events_container = config.events_container.clone();
    settings.lease_container = config.leases_container.clone();
    settings.lease_duration = Duration::from_millis(600);
    settings
}

async fn connect(fake: &CosmosFake) -> CosmosEventStore {
    CosmosEventStore::connect(settings(fake, &fake.config.key))
        .await
        .expect("connect to the fake")
}

async fn start() -> (CosmosFake, CosmosEventStore) {
    let fake = CosmosFake::start(CosmosConfig::new()).await;
    let store = connect(&fake).await;
    (fake, store)
}

/// A fresh fake account and a store on it; the fake lives as long as the store is tested.
async fn fixture() -> (Arc<dyn EventStore>, CosmosFake) {
    let (fake, store) = start().await;
    (Arc::new(store), fake)
}

/// The port's suite in its form for a log ordered within each stream only, against the local
/// fake: atomic appends with optimistic concurrency, idempotent retries, every event of the
/// change feed exactly once with each stream in version order, checkpoints and leases.
mod conformance_suite {
    eventlog::event_store_conformance!(stream_ordered: super::fixture());
}

/// A fresh fake account whose events container has two partition key ranges (a split one).
async fn fixture_two_ranges() -> (Arc<dyn EventStore>, CosmosFake) {
    let mut config = CosmosConfig::new();
    config.events_ranges = 2;
    let fake = CosmosFake::start(config).await;
    let store = connect(&fake).await;
    (Arc::new(store), fake)
}

/// The same suite on a container of two partition key ranges: the change feed is read range
/// by range, and each stream lives in the range of its key's hash.
mod conformance_two_ranges {
    eventlog::event_store_conformance!(stream_ordered: super::fixture_two_ranges());
}

fn events(n: usize) -> Vec<NewEvent> {
    (0..n)
        .map(|i| NewEvent {
            event_id: Uuid::new_v4(),
            event_type: "OrderPlaced".into(),
            schema_version: 1,
            occurred_at: Utc::now().trunc_subsecs(6),
            payload: json!({"n": i}),
            metadata: EventMetadata {
                correlation_id: Uuid::new_v4(),
                actor: "customer:c-1".into(),
                ..EventMetadata::default()
            },
        })
        .collect()
}

fn stream() -> String {
    format!("order-{}", Uuid::new_v4())
}

/// Against the local fake: startup (account, container, partition key ranges until `304`) and
/// a round trip of one append through a batch and a partition query.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_append_is_one_batch_and_reads_back_in_order() {
    let (fake, store) = start().await;
    let stream = stream();
    let sent = events(3);

    let appended = store
        .append(&stream, "order", 0, sent.clone())
        .await
        .expect("append");
    let read = store.read_stream(&stream, 1).await.expect("read_stream");

    assert_eq!(appended.version, 3);
    assert!(!appended.duplicate);
    assert_eq!(fake.count("batch", 200), 1, "one batch for the append");
    let ids: Vec<Uuid> = read.iter().map(|e| e.event_id).collect();
    let sent_ids: Vec<Uuid> = sent.iter().map(|e| e.event_id).collect();
    assert_eq!(ids, sent_ids);
    assert_eq!(read[2].version, 3);
    assert_eq!(read[0].occurred_at, sent[0].occurred_at);
    let stored = fake.documents(&fake.config.events_container, &stream);
    assert_eq!(
        stored[0]["id"], "00000000000000000001",
        "ids are zero-padded versions"
    );
}

/// Against the local fake: master-key authentication. A wrong key is refused with `401` at
/// connect time, surfacing as `Unavailable` that names the credentials.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_key_is_refused() {
    let fake = CosmosFake::start(CosmosConfig::new()).await;

    let result = CosmosEventStore::connect(settings(&fake, &CosmosConfig::new().key)).await;

    match result {
        Err(StoreError::Unavailable(why)) => assert!(why.contains("credentials"), "{why}"),
        Err(other) => panic!("expected Unavailable, got {other:?}"),
        Ok(_) => panic!("a wrong key connected"),
    }
    assert!(fake.unauthorized() > 0, "the fake saw the bad signature");
}

/// Against the local fake: an atomic batch that hits an existing id is answered `207` (the
/// failing create `409`, the others `424`) and writes nothing; the adapter reports the
/// stream's real version.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_conflicting_batch_arrives_as_207_and_writes_nothing() {
    let (fake, store) = start().await;
    let stream = stream();
    store
        .append(&stream, "order", 0, events(2))
        .await
        .expect("first append");

    let result = store.append(&stream, "order", 1, events(3)).await;

    assert_eq!(
        result,
        Err(StoreError::Conflict {
            stream_id: stream.clone(),
            expected: 1,
            actual: 2
        })
    );
    assert_eq!(fake.count("batch", 207), 1, "the refused batch was a 207");
    assert_eq!(
        fake.documents(&fake.config.events_container, &stream).len(),
        2,
        "nothing of the refused batch was written"
    );
}

/// Against the local fake: a retried append (same event ids at the same version) answers like
/// the original with `duplicate: true`, after its batch came back `207`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retried_append_is_a_duplicate() {
    let (fake, store) = start().await;
    let stream = stream();
    let sent = events(2);
    store
        .append(&stream, "order", 0, sent.clone())
        .await
        .expect("append");

    let retry = store
        .append(&stream, "order", 0, sent)
        .await
        .expect("retry");

    assert_eq!(retry.version, 2);
    assert!(retry.duplicate);
    assert_eq!(
        fake.documents(&fake.config.events_container, &stream).len(),
        2
    );
}

/// Against the local fake: the stream query is paged by `x-ms-max-item-count` and
/// `x-ms-continuation`; with a page size of 1 every page is read.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn read_stream_reads_every_page() {
    let fake = CosmosFake::start(CosmosConfig::new()).await;
    let mut settings = settings(&fake, &fake.config.key);
    settings.stream_page_size = NonZeroU32::new(1);
    let store = CosmosEventStore::connect(settings).await.expect("connect");
    let stream = stream();
    store
        .append(&stream, "order", 0, events(5))
        .await
        .expect("append");
    let queries_before = fake.count("query", 200);

    let all = store.read_stream(&stream, 1).await.expect("read_stream");
    let tail = store.read_stream(&stream, 4).await.expect("read_stream");

    let versions: Vec<u64> = all.iter().map(|e| e.version).collect();
    assert_eq!(versions, [1, 2, 3, 4, 5]);
    assert_eq!(tail.iter().map(|e| e.version).collect::<Vec<_>>(), [4, 5]);
    assert!(
        fake.count("query", 200) - queries_before >= 7,
        "one request per page of one"
    );
}

/// Against the local fake: the change feed, resumed from a continuation saved as a
/// checkpoint by another store instance (a restart), gives every event exactly once, each
/// stream in version order, and nothing more once drained.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_change_feed_resumes_from_a_saved_checkpoint_after_a_restart() {
    let fake = CosmosFake::start(CosmosConfig::new()).await;
    let store = connect(&fake).await;
    let (a, b) = (stream(), stream());
    let mut sent = HashSet::new();
    for (s, n) in [(&a, 3), (&b, 2)] {
        let batch = events(n);
        sent.extend(batch.iter().map(|e| e.event_id));
        store.append(s, "order", 0, batch).await.expect("append");
    }
    let mut more = events(2);
    sent.extend(more.iter().map(|e| e.event_id));

    let first = store
        .read_all(&LogCursor::start(), 2)
        .await
        .expect("read_all");
    store
        .save_checkpoint("relay", &first.next)
        .await
        .expect("save");
    drop(store);
    let store = connect(&fake).await;
    store
        .append(&a, "order", 3, std::mem::take(&mut more))
        .await
        .expect("append after restart");
    let cursor = store.checkpoint("relay").await.expect("checkpoint");
    let rest = store.read_all(&cursor, 100).await.expect("read_all");
    let drained = store.read_all(&rest.next, 100).await.expect("read_all");

    assert_eq!(cursor, first.next, "the checkpoint holds the cursor");
    assert!(!first.events.is_empty() && first.events.len() < 5);
    let seen: Vec<_> = first.events.iter().chain(&rest.events).collect();
    let ids: HashSet<Uuid> = seen.iter().map(|e| e.event_id).collect();
    assert_eq!(seen.len(), 7, "every event once");
    assert_eq!(ids, sent, "no event lost");
    for s in [&a, &b] {
        let versions: Vec<u64> = seen
            .iter()
            .filter(|e| &e.stream_id == s)
            .map(|e| e.version)
            .collect();
        let mut sorted = versions.clone();
        sorted.sort_unstable();
        assert_eq!(versions, sorted, "stream {s} in version order");
    }
    assert!(drained.events.is_empty(), "nothing after the end");
    assert_eq!(
        store.checkpoint("nobody").await.expect("checkpoint"),
        LogCursor::start()
    );
}

/// Against the local fake: a lease is a document written with `If-Match`; its holder renews
/// it while working, and once it lapses another process takes it over and the first learns
/// it lost it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lease_expires_and_is_taken_over() {
    let fake = CosmosFake::start(CosmosConfig::new()).await;
    let first = connect(&fake).await;
    let second = connect(&fake).await;
    let name = format!("relay-{}", Uuid::new_v4());

    let mut held = first.lease(&name).await.expect("lease").expect("free");
    assert!(second.lease(&name).await.expect("lease").is_none(), "held");
    // Renewed while its holder works: still refused after more than one duration.
    let until = Instant::now() + Duration::from_millis(900);
    while Instant::now() < until {
        assert!(held.held().await, "renewed");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        second.lease(&name).await.expect("lease").is_none(),
        "renewed"
    );
    // Its holder stops renewing: it lapses and the other takes it over.
    tokio::time::sleep(Duration::from_millis(700)).await;
    let taken = second.lease(&name).await.expect("lease");

    assert!(taken.is_some(), "an expired lease is taken over");
    assert!(!held.held().await, "the first holder knows it lost it");
}

/// Against the local fake: a dropped lease is released, so another process takes it at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dropped_lease_is_released() {
    let fake = CosmosFake::start(CosmosConfig::new()).await;
    let first = connect(&fake).await;
    let second = connect(&fake).await;
    let name = format!("relay-{}", Uuid::new_v4());
    let held = first.lease(&name).await.expect("lease").expect("free");

    drop(held);
    let mut taken = None;
    for _ in 0..50 {
        taken = second.lease(&name).await.expect("lease");
        if taken.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }

    assert!(taken.is_some(), "released before it expired");
}

/// Against the local fake switched to `503 Service Unavailable`: every operation fails with
/// `StoreError::Unavailable`, and works again once the service is back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unavailable_service_is_unavailable() {
    let (fake, store) = start().await;
    let stream = stream();

    fake.set_unavailable(true);
    let append = store.append(&stream, "order", 0, events(1)).await;
    let read = store.read_stream(&stream, 1).await;
    let ping = store.ping().await;
    let log = store.read_all(&LogCursor::start(), 10).await;
    fake.set_unavailable(false);

    assert!(
        matches!(append, Err(StoreError::Unavailable(_))),
        "{append:?}"
    );
    assert!(matches!(read, Err(StoreError::Unavailable(_))), "{read:?}");
    assert!(matches!(ping, Err(StoreError::Unavailable(_))), "{ping:?}");
    assert!(matches!(log, Err(StoreError::Unavailable(_))), "{log:?}");
    store.ping().await.expect("back");
}

/// Against the local fake: the startup sequence the SDK follows (*Get a database account*,
/// *Get a Collection*, *Get Partition key ranges* until `304` on the etag), seen from the fake.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connecting_reads_the_account_containers_and_ranges_until_304() {
    let (fake, _store) = start().await;

    let seen = fake.requests();

    assert_eq!(seen[0].path, "/", "the account first");
    assert!(
        seen.iter()
            .all(|s| s.method == Method::GET && s.status != 401)
    );
    for container in [&fake.config.events_container, &fake.config.leases_container] {
        let collection = format!("/dbs/{}/colls/{container}", fake.config.database);
        assert!(seen.iter().any(|s| s.path == collection && s.status == 200));
        let ranges: Vec<u16> = seen
            .iter()
            .filter(|s| s.path == format!("{collection}/pkranges"))
            .map(|s| s.status)
            .collect();
        assert_eq!(ranges, [200, 304], "ranges, then 304 on their etag");
    }
}

/// A request to the fake signed with the master key as *Access control in the Azure Cosmos DB
/// SQL API* says, with the given date and body, for the contract tests of the fake itself.
async fn signed(
    fake: &CosmosFake,
    method: reqwest::Method,
    path: &str,
    date: chrono::DateTime<Utc>,
    headers: &[(&str, &str)],
    body: Vec<u8>,
) -> reqwest::StatusCode {
    use base64::Engine;
    use base64::engine::general_purpose::STANDARD;
    use hmac::{Hmac, Mac};

    let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
    let (kind, link) = match segments.len() {
        n if n % 2 == 1 => (segments[n - 1], segments[..n - 1].join("/")),
        n => (segments[n - 2], segments.join("/")),
    };
    let date = date.format("%a, %d %b %Y %H:%M:%S GMT").to_string();
    let text = format!(
        "{}\n{kind}\n{link}\n{}\n\n",
        method.as_str().to_lowercase(),
        date.to_lowercase()
    );
    let key = STANDARD.decode(&fake.config.key).expect("key");
    let mut mac = Hmac::<sha2::Sha256>::new_from_slice(&key).expect("hmac");
    mac.update(text.as_bytes());
    let signature = STANDARD.encode(mac.finalize().into_bytes());
    let token = format!(
        "type%3Dmaster%26ver%3D1.0%26sig%3D{}",
        signature
            .replace('+', "%2B")
            .replace('/', "%2F")
            .replace('=', "%3D")
    );
    let mut request = reqwest::Client::new()
        .request(
            method,
            format!("{}{}", fake.endpoint, path.trim_start_matches('/')),
        )
        .header("authorization", token)
        .header("x-ms-date", date)
        .body(body);
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    request.send().await.expect("send").status()
}

/// Against the local fake: what it refuses by contract. A stale `x-ms-date` is `401`, a missing
/// `x-ms-version` `400`, a Cosmos binary body (`0x80` first) `400`, a document whose
/// `streamId` is not the partition key header `400`, a query it does not know `400`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_fake_refuses_what_the_contract_refuses() {
    let fake = CosmosFake::start(CosmosConfig::new()).await;
    let docs = format!(
        "/dbs/{}/colls/{}/docs",
        fake.config.database, fake.config.events_container
    );
    let version = ("x-ms-version", "2020-07-15");
    let pk = ("x-ms-documentdb-partitionkey", r#"["order-1"]"#);
    let document = |stream: &str| {
        serde_json::to_vec(&json!({"id": "1", "streamId": stream, "version": 1})).expect("json")
    };
    let post = reqwest::Method::POST;
    let now = Utc::now();

    let fine = signed(
        &fake,
        post.clone(),
        &docs,
        now,
        &[version, pk],
        document("order-1"),
    )
    .await;
    let stale = now - chrono::Duration::minutes(20);
    let old = signed(
        &fake,
        post.clone(),
        &docs,
        stale,
        &[version, pk],
        document("order-1"),
    )
    .await;
    let unversioned = signed(&fake, post.clone(), &docs, now, &[pk], document("order-1")).await;
    let binary = signed(
        &fake,
        post.clone(),
        &docs,
        now,
        &[version, pk],
        vec![0x80, 1, 2],
    )
    .await;
    let elsewhere = signed(
        &fake,
        post.clone(),
        &docs,
        now,
        &[version, pk],
        document("order-2"),
    )
    .await;
    let query = serde_json::to_vec(&json!({"query": "SELECT * FROM c", "parameters": []}));
    let unknown_query = signed(
        &fake,
        post.clone(),
        &docs,
        now,
        &[
            version,
            pk,
            ("x-ms-documentdb-isquery", "True"),
            ("content-type", "application/query+json"),
        ],
        query.expect("json"),
    )
    .await;
    let again = signed(&fake, post, &docs, now, &[version, pk], document("order-1")).await;

    assert_eq!(fine, 201, "a signed create");
    assert_eq!(old, 401, "a stale x-ms-date");
    assert_eq!(unversioned, 400, "no x-ms-version");
    assert_eq!(binary, 400, "a binary body");
    assert_eq!(elsewhere, 400, "another partition key in the body");
    assert_eq!(unknown_query, 400, "an unknown query");
    assert_eq!(again, 409, "the id exists in that partition");
}

/// Against the local fake: *Time to Live*: a document's `ttl` counts in a container with
/// `defaultTtl` (the leases), where it vanishes once expired, and not in one without (the
/// events).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_fake_honours_ttl_only_where_the_container_has_a_default() {
    let fake = CosmosFake::start(CosmosConfig::new()).await;
    let version = ("x-ms-version", "2020-07-15");
    let path = |container: &str| format!("/dbs/{}/colls/{container}/docs", fake.config.database);
    let (leases, events) = (
        path(&fake.config.leases_container),
        path(&fake.config.events_container),
    );
    let lease = serde_json::to_vec(&json!({"id": "lease:x", "ttl": 1})).expect("json");
    let event = serde_json::to_vec(&json!({"id": "1", "streamId": "s", "ttl": 1})).expect("json");
    let lease_pk = ("x-ms-documentdb-partitionkey", r#"["lease:x"]"#);
    let event_pk = ("x-ms-documentdb-partitionkey", r#"["s"]"#);
    let post = reqwest::Method::POST;
    let get = reqwest::Method::GET;
    let now = Utc::now;
    assert_eq!(
        signed(
            &fake,
            post.clone(),
            &leases,
            now(),
            &[version, lease_pk],
            lease
        )
        .await,
        201
    );
    assert_eq!(
        signed(&fake, post, &events, now(), &[version, event_pk], event).await,
        201
    );
    let (lease_doc, event_doc) = (format!("{leases}/lease:x"), format!("{events}/1"));
    assert_eq!(
        signed(
            &fake,
            get.clone(),
            &lease_doc,
            now(),
            &[version, lease_pk],
            Vec::new()
        )
        .await,
        200
    );

    tokio::time::sleep(Duration::from_millis(1100)).await;

    assert_eq!(
        signed(
            &fake,
            get.clone(),
            &lease_doc,
            now(),
            &[version, lease_pk],
            Vec::new()
        )
        .await,
        404,
        "expired in a container with defaultTtl"
    );
    assert_eq!(
        signed(
            &fake,
            get,
            &event_doc,
            now(),
            &[version, event_pk],
            Vec::new()
        )
        .await,
        200,
        "ttl ignored without defaultTtl"
    );
}

/// Against the local fake: a container partitioned by another path than the layout needs is
/// refused at connect (so by `orderflow migrate`), naming the container and both paths,
/// instead of failing every write later. Here the two containers are given swapped.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_container_with_the_wrong_partition_key_is_refused_at_connect() {
    let fake = CosmosFake::start(CosmosConfig::new()).await;
    let mut swapped = settings(&fake, &fake.config.key);
    std::mem::swap(&mut swapped.events_container, &mut swapped.lease_container);

    let result = CosmosEventStore::connect(swapped).await;

    let Err(StoreError::Unavailable(message)) = result else {
        panic!("expected Unavailable, got {:?}", result.err());
    };
    assert!(
        message.contains(&fake.config.leases_container) && message.contains("/streamId"),
        "{message}"
    );
}

/// Against the local fake: a transactional batch holds 100 operations, the read of the
/// expected version among them, so an append to an existing stream takes at most 99 events;
/// the adapter refuses more before sending, saying why.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_version_read_counts_against_the_batchs_hundred_operations() {
    let (fake, store) = start().await;
    let (new, existing) = (stream(), stream());

    store
        .append(&new, "order", 0, events(100))
        .await
        .expect("100 events to a new stream: 100 creates");
    store
        .append(&existing, "order", 0, events(1))
        .await
        .unwrap();
    let refused = store.append(&existing, "order", 1, events(100)).await;
    store
        .append(&existing, "order", 1, events(99))
        .await
        .expect("99 events and the read: 100 operations");

    assert!(
        matches!(refused, Err(StoreError::Corrupt(ref why)) if why.contains("at most 99")),
        "{refused:?}"
    );
    assert_eq!(
        fake.count("batch", 400),
        0,
        "nothing the service refuses was sent"
    );
    assert_eq!(store.read_stream(&existing, 1).await.unwrap().len(), 100);
}

/// Against the local fake: an append whose batch would pass 2 MB is refused before sending.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_append_over_two_megabytes_is_refused_before_sending() {
    let (fake, store) = start().await;
    let stream = stream();
    let mut big = events(8);
    for event in &mut big {
        event.payload = json!({ "note": "x".repeat(300 * 1024) });
    }

    let refused = store.append(&stream, "order", 0, big).await;

    assert!(
        matches!(refused, Err(StoreError::Corrupt(ref why)) if why.contains("bytes")),
        "{refused:?}"
    );
    assert_eq!(
        fake.count("batch", 413) + fake.count("batch", 200),
        0,
        "not sent"
    );
    assert!(store.read_stream(&stream, 1).await.unwrap().is_empty());
}

/// Against the local fake, spoken to directly: a batch of 101 operations is `400` with the
/// service's message, one over 2 MB is `413`, and neither writes anything.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_fake_refuses_batches_over_the_service_limits() {
    let fake = CosmosFake::start(CosmosConfig::new()).await;
    let docs = format!(
        "/dbs/{}/colls/{}/docs",
        fake.config.database, fake.config.events_container
    );
    let headers = [
        ("x-ms-version", "2020-07-15"),
        ("x-ms-documentdb-partitionkey", r#"["order-1"]"#),
        ("x-ms-cosmos-is-batch-request", "True"),
        ("x-ms-cosmos-batch-atomic", "True"),
        ("content-type", "application/json"),
    ];
    let create = |id: usize, note: &str| {
        json!({
            "operationType": "Create",
            "resourceBody": {"id": id.to_string(), "streamId": "order-1", "version": id, "note": note},
        })
    };
    let many: Vec<_> = (1..=101).map(|i| create(i, "")).collect();
    let large: Vec<_> = (1..=3)
        .map(|i| create(i, &"x".repeat(800 * 1024)))
        .collect();
    let fine: Vec<_> = (1..=100).map(|i| create(i, "")).collect();
    let post = |body: Vec<serde_json::Value>| {
        signed(
            &fake,
            reqwest::Method::POST,
            &docs,
            Utc::now(),
            &headers,
            serde_json::to_vec(&body).unwrap(),
        )
    };

    let too_many = post(many).await;
    let too_large = post(large).await;
    assert!(
        fake.documents(&fake.config.events_container, "order-1")
            .is_empty()
    );
    let hundred = post(fine).await;

    assert_eq!(too_many, 400);
    assert_eq!(too_large, 413);
    assert_eq!(hundred, 200, "100 operations are fine");
}

/// Against the local fake: a throttled request (`429`, `x-ms-retry-after-ms`) is retried by
/// the SDK after the time the service asks for, and the append goes through once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_throttled_append_is_retried_after_the_services_delay() {
    let (fake, store) = start().await;
    let stream = stream();

    fake.throttle(Some("batch"), 3, Duration::from_millis(100));
    let started = Instant::now();
    store
        .append(&stream, "order", 0, events(2))
        .await
        .expect("the append goes through after the throttling");

    assert_eq!(fake.count("batch", 429), 3, "three answers were 429");
    assert_eq!(fake.count("batch", 200), 1, "then one batch");
    assert!(
        started.elapsed() >= Duration::from_millis(300),
        "each retry waited x-ms-retry-after-ms: {:?}",
        started.elapsed()
    );
    assert_eq!(store.read_stream(&stream, 1).await.unwrap().len(), 2);
}

/// Against the local fake: throttling that outlasts the SDK's retries is `Unavailable`,
/// saying that the container is out of request units.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn throttling_that_outlasts_the_retries_says_so() {
    let (fake, store) = start().await;
    let stream = stream();

    fake.throttle(Some("batch"), 1_000, Duration::from_millis(5));
    let append = store.append(&stream, "order", 0, events(1)).await;
    fake.throttle(None, 0, Duration::ZERO);

    assert!(
        matches!(append, Err(StoreError::Unavailable(ref why)) if why.contains("429") && why.contains("request units")),
        "{append:?}"
    );
    assert!(fake.count("batch", 429) > 1, "the SDK retried");
    store
        .append(&stream, "order", 0, events(1))
        .await
        .expect("served again");
}

/// The fake places documents by the service's own hash: the EPKs Microsoft's SDKs test
/// against for a v2 hash container.
#[test]
fn the_fake_hashes_partition_keys_as_the_service_does() {
    use orderflow_tests::fakes::cosmos::effective_partition_key;

    assert_eq!(
        effective_partition_key(""),
        "32E9366E637A71B4E710384B2F4970A0"
    );
    assert_eq!(
        effective_partition_key("partitionKey"),
        "013AEFCF77FA271571CF665A58C933F1"
    );
}

/// Against the local fake with two partition key ranges: streams land in both, and the log is
/// read from both, every event once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_log_is_read_from_every_partition_key_range() {
    use orderflow_tests::fakes::cosmos::effective_partition_key;

    let (store, fake) = fixture_two_ranges().await;
    let streams: Vec<String> = (0..16).map(|_| stream()).collect();
    for stream in &streams {
        store.append(stream, "order", 0, events(2)).await.unwrap();
    }
    let low = streams
        .iter()
        .filter(|s| effective_partition_key(s).as_str() < "20")
        .count();
    assert!(
        (1..16).contains(&low),
        "16 random streams fall in both ranges ({low} in the first)"
    );

    let mut cursor = LogCursor::start();
    let mut seen = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    while seen.len() < 32 {
        assert!(Instant::now() < deadline, "read {} of 32", seen.len());
        let page = store.read_all(&cursor, 10).await.unwrap();
        seen.extend(page.events.iter().map(|e| e.event_id));
        cursor = page.next;
    }

    assert_eq!(
        seen.iter().collect::<HashSet<_>>().len(),
        32,
        "each event once"
    );
    let ranges: HashSet<String> = fake
        .requests()
        .iter()
        .filter(|r| r.kind == "change-feed" && r.status != 410)
        .filter_map(|r| r.range.clone())
        .collect();
    assert_eq!(
        ranges,
        HashSet::from(["1".to_owned(), "2".to_owned()]),
        "the feed was read range by range"
    );
    assert_eq!(
        fake.count("change-feed", 410),
        0,
        "the SDK routed by the same hash"
    );
}

/// Against the local fake with two ranges, spoken to directly: a change feed request for the
/// split parent (`"0"`), or a keyed request sent to a range that does not hold its key, is
/// `410` (a stale routing map); the right range serves.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_fake_refuses_a_request_sent_by_a_stale_routing_map() {
    use orderflow_tests::fakes::cosmos::effective_partition_key;

    let mut config = CosmosConfig::new();
    config.events_ranges = 2;
    let fake = CosmosFake::start(config).await;
    let docs = format!(
        "/dbs/{}/colls/{}/docs",
        fake.config.database, fake.config.events_container
    );
    let version = ("x-ms-version", "2020-07-15");
    let feed = ("a-im", "Incremental Feed");
    let get = |headers: Vec<(&'static str, String)>| {
        let docs = docs.clone();
        let fake = &fake;
        async move {
            let headers: Vec<(&str, &str)> =
                headers.iter().map(|(n, v)| (*n, v.as_str())).collect();
            signed(
                fake,
                reqwest::Method::GET,
                &docs,
                Utc::now(),
                &headers,
                Vec::new(),
            )
            .await
        }
    };
    let key = "order-1";
    let (home, other) = if effective_partition_key(key).as_str() < "20" {
        ("1", "2")
    } else {
        ("2", "1")
    };
    let range = |id: &str| ("x-ms-documentdb-partitionkeyrangeid", id.to_owned());
    let pk = ("x-ms-documentdb-partitionkey", format!(r#"["{key}"]"#));
    let base = || {
        vec![
            (version.0, version.1.to_owned()),
            (feed.0, feed.1.to_owned()),
        ]
    };

    let parent = get([base(), vec![range("0")]].concat()).await;
    let each = get([base(), vec![range("1")]].concat()).await;
    let misrouted = get([base(), vec![range(other), pk.clone()]].concat()).await;
    let routed = get([base(), vec![range(home), pk]].concat()).await;

    assert_eq!(parent, 410, "the parent of a split is gone");
    assert_eq!(each, 304, "a child range serves (nothing yet)");
    assert_eq!(misrouted, 410, "the key is not in that range");
    assert_eq!(routed, 304, "the key's own range serves");
}
