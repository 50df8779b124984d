//! The Redis view store against a real Redis at `ORDERFLOW_TEST_REDIS` (default
//! `redis://127.0.0.1:6379`): the port's conformance suite, then what is Redis's own (bulk
//! writes, key prefixes, lost connections, the scripts). Each test keeps to a fresh key
//! prefix, deleted when it ends, so the Redis can be shared. A Redis that does not answer
//! fails the tests. They build with the `servers` feature, which `cargo test --workspace`
//! turns on.

use std::sync::Arc;
use std::time::{Duration, Instant};

use fred::prelude::{Client, ClientLike, Config, KeysInterface};
use fred::types::{ClusterHash, CustomCommand};
use futures_util::StreamExt;
use projections::view_store::{Doc, ViewStore};
use uuid::Uuid;

use super::RedisViewStore;

const REDIS_ENV: &str = "ORDERFLOW_TEST_REDIS";

async fn redis_fixture() -> (Arc<dyn ViewStore>, PrefixKeys) {
    let (store, keys) = redis_store().await;
    (Arc::new(store), keys)
}

mod redis_conformance {
    projections::view_store_conformance!(super::redis_fixture());
}

/// The Redis the tests use (shared: tests touch only their own prefix).
fn redis_url() -> String {
    std::env::var(REDIS_ENV).unwrap_or_else(|_| "redis://127.0.0.1:6379".to_owned())
}

/// A store on a fresh random prefix; its keys are deleted when the guard drops. Panics,
/// naming the environment variable, if Redis does not answer: never a silent skip.
pub(crate) async fn redis_store() -> (RedisViewStore, PrefixKeys) {
    let prefix = format!("test-{}", Uuid::new_v4().simple());
    let keys = PrefixKeys::new(&prefix);
    (connect(&keys.url).await, keys)
}

async fn connect(url: &str) -> RedisViewStore {
    let base = redis_url();
    RedisViewStore::connect(url).await.unwrap_or_else(|error| {
        panic!("Redis at {base} does not answer (set {REDIS_ENV} to another): {error}")
    })
}

/// A test's key prefix. Dropping it deletes the prefix's keys (SCAN MATCH, never a flush:
/// the Redis is shared), on a thread of its own, so it works while a failed test unwinds.
pub(crate) struct PrefixKeys {
    prefix: String,
    url: String,
}

impl PrefixKeys {
    fn new(prefix: &str) -> Self {
        let base = redis_url();
        let separator = if base.contains('?') { '&' } else { '?' };
        Self {
            prefix: prefix.to_owned(),
            url: format!("{base}{separator}prefix={prefix}"),
        }
    }
}

impl Drop for PrefixKeys {
    fn drop(&mut self) {
        let url = self.url.clone();
        let cleanup = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .ok()?;
            runtime.block_on(async {
                let store = RedisViewStore::connect(&url).await.ok()?;
                store.clear().await.ok()
            })
        });
        if cleanup.join().ok().flatten().is_none() {
            eprintln!("could not delete the Redis keys of prefix {}", self.prefix);
        }
    }
}

/// A plain client on the test Redis, to look behind the adapter.
async fn raw_client() -> Client {
    let config = Config::from_url(&redis_url()).expect("a Redis URL");
    let client = Client::new(config, None, None, None);
    client.init().await.expect("Redis answers");
    client
}

/// Every key matching `pattern`: SCAN to the end, since one page of a big database may
/// hold none of them (the Redis is shared with other tests and benchmarks).
async fn scan_all(client: &Client, pattern: &str) -> Vec<String> {
    let (mut cursor, mut found) = ("0".to_owned(), Vec::new());
    loop {
        let (next, keys): (String, Vec<String>) = client
            .scan_page(cursor, pattern.to_owned(), Some(1_000), None)
            .await
            .expect("scan");
        found.extend(keys);
        if next == "0" {
            found.sort();
            return found;
        }
        cursor = next;
    }
}

fn doc(version: u64, body: String) -> Doc {
    Doc { version, body }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_doc_survives_a_new_connection() {
    let (store, keys) = redis_store().await;
    let written = doc(3, r#"{"status":"confirmed"}"#.to_owned());
    assert!(store.put("order:1", 0, written.clone()).await.expect("put"));
    drop(store);

    let again = connect(&keys.url).await;

    assert_eq!(again.get("order:1").await.expect("get"), Some(written));
}

/// The bulk writes (`redis_bulk`, on connections of their own) go to the database and as
/// the user the URL names, as every other command does: an ACL user made for the test,
/// database 5.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bulk_writes_follow_the_urls_user_and_database() {
    let raw = raw_client().await;
    let acl = CustomCommand::new_static("ACL", ClusterHash::Random, false);
    let user = format!("bulk-{}", Uuid::new_v4().simple());
    let _: String = raw
        .custom(
            acl.clone(),
            vec!["SETUSER", &user, "on", ">s3cret", "~*", "&*", "+@all"],
        )
        .await
        .expect("ACL SETUSER");
    let base = redis_url();
    let host = base
        .trim_start_matches("redis://")
        .rsplit('@')
        .next()
        .and_then(|rest| rest.split(['/', '?']).next())
        .expect("host:port in the test URL")
        .to_owned();
    let prefix = format!("test-{}", Uuid::new_v4().simple());
    let store = connect(&format!("redis://{user}:s3cret@{host}/5?prefix={prefix}")).await;

    let written = store
        .overwrite_many(vec![("order:1".into(), doc(3, r#"{"n":1}"#.into()))])
        .await;
    let indexed = store
        .index_add_many(vec![
            ("orders".into(), 2, "b".into()),
            ("orders".into(), 1, "a".into()),
        ])
        .await;
    let read = store.get("order:1").await;
    let page = store.index_page("orders", None, 10).await;
    let in_db0: i64 = raw
        .exists(format!("{prefix}:doc:order:1"))
        .await
        .expect("EXISTS");
    let bulk = clients_named(&raw, &format!("{prefix}:bulk")).await;
    store.clear().await.expect("clear");
    let _: i64 = raw
        .custom(acl, vec!["DELUSER", &user])
        .await
        .expect("ACL DELUSER");

    written.expect("overwrite_many as the ACL user");
    indexed.expect("index_add_many as the ACL user");
    assert_eq!(read.expect("get"), Some(doc(3, r#"{"n":1}"#.into())));
    assert_eq!(
        page.expect("index_page"),
        vec![(2, "b".to_owned()), (1, "a".to_owned())]
    );
    assert_eq!(in_db0, 0, "written to database 5, not 0");
    assert!(!bulk.is_empty(), "a bulk connection, named");
    for line in &bulk {
        let fields: Vec<&str> = line.split(' ').collect();
        assert!(fields.contains(&"db=5"), "{line}");
        assert!(fields.contains(&format!("user={user}").as_str()), "{line}");
    }
}

/// A bulk connection kept from an earlier batch and closed since (here by `CLIENT KILL`,
/// as a Redis restart would) costs the next batch nothing but a new connection.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_closed_bulk_connection_is_replaced_without_an_error() {
    let (store, keys) = redis_store().await;
    let raw = raw_client().await;
    let name = format!("{}:bulk", keys.prefix);
    store
        .overwrite_many(vec![("order:1".into(), doc(1, "{}".into()))])
        .await
        .expect("the first batch");
    assert_eq!(
        kill_clients_named(&raw, &name).await,
        1,
        "one bulk connection kept"
    );

    let again = store
        .overwrite_many(vec![("order:1".into(), doc(2, r#"{"n":2}"#.into()))])
        .await;

    again.expect("the batch after the kill");
    assert_eq!(
        store.get("order:1").await.expect("get"),
        Some(doc(2, r#"{"n":2}"#.into()))
    );
    assert_eq!(client_ids_named(&raw, &name).await.len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn overwrite_many_writes_5000_docs_in_one_bulk_batch() {
    let (store, _keys) = redis_store().await;
    let docs: Vec<_> = (0..5_000)
        .map(|i| (format!("order:{i}"), doc(1, format!(r#"{{"n":{i}}}"#))))
        .collect();

    let started = Instant::now();
    store.overwrite_many(docs).await.expect("overwrite_many");
    println!("overwrite_many of 5000 docs took {:?}", started.elapsed());

    let last = store.get("order:4999").await.expect("get");
    assert_eq!(last, Some(doc(1, r#"{"n":4999}"#.to_owned())));
    let first = store.get("order:0").await.expect("get");
    assert_eq!(first, Some(doc(1, r#"{"n":0}"#.to_owned())));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_key_lives_under_the_prefix() {
    let (store, keys) = redis_store().await;
    let prefix = store.prefix().to_owned();
    assert_eq!(prefix, keys.prefix);
    store
        .put("order:1", 0, doc(1, "{}".into()))
        .await
        .expect("put");
    store.index_add("orders", 5, "m").await.expect("index_add");
    store
        .claim("notified:1", std::time::Duration::from_secs(60))
        .await
        .expect("claim");
    let raw = raw_client().await;
    let lease_ttl: i64 = raw
        .ttl(format!("{prefix}:claim:notified:1"))
        .await
        .expect("ttl");
    store.complete("notified:1").await.expect("complete");

    let found = scan_all(&raw, &format!("{prefix}:*")).await;
    let claim_ttl: i64 = raw
        .ttl(format!("{prefix}:claim:notified:1"))
        .await
        .expect("ttl");
    let deleted = store.clear().await.expect("clear");
    let left = scan_all(&raw, &format!("{prefix}:*")).await;

    assert_eq!(
        found,
        vec![
            format!("{prefix}:claim:notified:1"),
            format!("{prefix}:doc:order:1"),
            format!("{prefix}:idx:orders"),
        ]
    );
    assert!(
        (1..=60).contains(&lease_ttl),
        "a leased claim lives as long as its lease, TTL {lease_ttl}s"
    );
    let days = claim_ttl / 86_400;
    assert!(
        (29..=30).contains(&days),
        "a completed claim is kept 30 days, TTL {claim_ttl}s"
    );
    assert_eq!(deleted, 3, "clear deletes the prefix's keys");
    assert!(left.is_empty(), "and leaves none: {left:?}");
}

/// The port promises the stream ends when the connection is lost, so the caller subscribes
/// again. `CLIENT KILL` on this test's subscriber connection (found by its name) loses it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscription_ends_when_its_connection_is_lost() {
    let (store, _keys) = redis_store().await;
    let mut messages = store.subscribe("live").await.expect("subscribe");
    store.publish("live", "before").await.expect("publish");
    let first = tokio::time::timeout(Duration::from_secs(5), messages.next()).await;
    let raw = raw_client().await;

    let killed = kill_clients_named(&raw, &format!("{}:sub", store.prefix())).await;
    let end = tokio::time::timeout(Duration::from_secs(5), messages.next()).await;

    assert_eq!(first, Ok(Some("before".to_owned())));
    assert_eq!(killed, 1, "one subscriber connection");
    assert_eq!(end, Ok(None), "the stream ends when its connection is lost");
    let mut again = store.subscribe("live").await.expect("subscribe again");
    store.publish("live", "after").await.expect("publish");
    let next = tokio::time::timeout(Duration::from_secs(5), again.next()).await;
    assert_eq!(
        next,
        Ok(Some("after".to_owned())),
        "a new subscription works"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropping_a_subscription_closes_its_connection() {
    let (store, _keys) = redis_store().await;
    let name = format!("{}:sub", store.prefix());
    let raw = raw_client().await;
    let messages = store.subscribe("live").await.expect("subscribe");
    let while_subscribed = client_ids_named(&raw, &name).await.len();

    drop(messages);
    let mut left = usize::MAX;
    for _ in 0..50 {
        left = client_ids_named(&raw, &name).await.len();
        if left == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    assert_eq!(while_subscribed, 1);
    assert_eq!(left, 0, "the subscriber's connection is closed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_that_does_not_answer_is_an_error() {
    let result = RedisViewStore::connect("redis://127.0.0.1:1?prefix=nobody").await;

    assert!(result.is_err(), "connecting to a closed port fails");
}

/// The lines of `CLIENT LIST` for the connections named `name`.
async fn clients_named(raw: &Client, name: &str) -> Vec<String> {
    let list: String = raw
        .custom(client_command(), vec!["LIST"])
        .await
        .expect("CLIENT LIST");
    let wanted = format!("name={name}");
    list.lines()
        .filter(|line| line.split(' ').any(|field| field == wanted))
        .map(str::to_owned)
        .collect()
}

/// The ids of the connections `CLIENT LIST` shows with `name`.
async fn client_ids_named(raw: &Client, name: &str) -> Vec<String> {
    clients_named(raw, name)
        .await
        .iter()
        .filter_map(|line| line.split(' ').find_map(|f| f.strip_prefix("id=")))
        .map(str::to_owned)
        .collect()
}

async fn kill_clients_named(raw: &Client, name: &str) -> usize {
    let ids = client_ids_named(raw, name).await;
    for id in &ids {
        let () = raw
            .custom(client_command(), vec!["KILL", "ID", id.as_str()])
            .await
            .expect("CLIENT KILL");
    }
    ids.len()
}

fn client_command() -> CustomCommand {
    CustomCommand::new_static("CLIENT", ClusterHash::Random, false)
}

/// Redis restarted or its script cache was flushed: the scripts go by `EVAL` again. (Forgetting
/// the SHA here stands in for `SCRIPT FLUSH`, which would disturb others on a shared Redis.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_script_redis_does_not_know_falls_back_to_eval() {
    let (mut store, _keys) = redis_store().await;
    let unknown = "0".repeat(40);
    store.put_script.sha.clone_from(&unknown);
    store.page_script.sha = unknown;
    let doc = |v: u64| Doc {
        version: v,
        body: format!("body {v}"),
    };

    assert!(store.put("k", 0, doc(1)).await.expect("put"));
    let stale = store.put("k", 0, doc(9)).await.expect("put");
    assert!(store.put("k", 1, doc(2)).await.expect("put"));
    store.index_add("i", 1, "m").await.expect("index_add");
    let page = store.index_page("i", None, 10).await.expect("index_page");

    assert!(!stale, "the fallback still compares versions");
    assert_eq!(store.get("k").await.expect("get"), Some(doc(2)));
    assert_eq!(page, vec![(1, "m".to_owned())]);
}
