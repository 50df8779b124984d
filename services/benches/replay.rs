//! Replay throughput: the whole log folded into a fresh generation of the views in Redis, the
//! fast way (`Projector::rebuild`: views in memory, one pipelined write per page) against the
//! baseline in the same run (`Projector::catch_up`, the live projector's path: a read and a
//! compare-on-version write per event).
//!
//! `cargo bench -p services --bench replay` (needs Redis: `ORDERFLOW_TEST_REDIS`, default
//! `redis://127.0.0.1:6379`). `REPLAY_EVENTS` sets the size of the log (default 1,000,000:
//! orders of four events each plus a stock reservation, on ten SKUs), `REPLAY_BASELINE_EVENTS`
//! how much of it the baseline folds (default 200,000: it is the slow one). The log is written
//! to a SQLite store in a temporary directory first; the Redis keys go afterwards.

use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::Utc;
use domain::{EventMetadata, NewEvent};
use eventlog::EventStore;
use infra::event_store::SqliteEventStore;
use infra::views::RedisViewStore;
use projections::Projection;
use projections::ViewStore;
use projections::projection::delete_generation;
use projections::projector::Projector;
use serde_json::json;
use uuid::Uuid;

const SKUS: usize = 10;

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let events: usize = env("REPLAY_EVENTS", 1_000_000);
    let baseline_events: usize = env("REPLAY_BASELINE_EVENTS", 200_000).min(events);
    let redis = std::env::var("ORDERFLOW_TEST_REDIS").unwrap_or("redis://127.0.0.1:6379".into());
    let prefix = format!("bench{}", &Uuid::new_v4().simple().to_string()[..8]);
    let temporary = tempfile::tempdir().expect("a temporary directory");
    // REPLAY_LOG_DIR keeps the logs between runs (writing a million events takes minutes).
    let dir = std::env::var_os("REPLAY_LOG_DIR").map_or(temporary.path().to_owned(), Into::into);

    let started = Instant::now();
    let full = log(&dir.join(format!("full-{events}.db")), events).await;
    println!(
        "log: {} events in SQLite after {:.1} s",
        events,
        started.elapsed().as_secs_f64()
    );
    let part = log(
        &dir.join(format!("part-{baseline_events}.db")),
        baseline_events,
    )
    .await;
    let cpu = Cpu::connect(&redis).await;
    let views: Arc<dyn ViewStore> = Arc::new(
        RedisViewStore::connect(&format!("{redis}?prefix={prefix}"))
            .await
            .expect("Redis answers (set ORDERFLOW_TEST_REDIS)"),
    );

    // The ceiling: reading the log alone, page by page as the rebuild does.
    let (pages, started, used) = (&mut Pages::default(), Instant::now(), cpu.used().await);
    let mut cursor = eventlog::LogCursor::start();
    loop {
        let page = full.read_all(&cursor, 5000).await.expect("read the log");
        if page.events.is_empty() {
            break;
        }
        pages.done(page.events.len() as u64);
        cursor = page.next;
    }
    report("read the log alone", events, started.elapsed(), pages);
    cpu.report(events, used).await;

    let baseline = Projector::pinned(part.clone(), views.clone(), 1, &Projection::ALL);
    let (pages, started, used) = (&mut Pages::default(), Instant::now(), cpu.used().await);
    baseline
        .catch_up_with(&mut |n| pages.done(n))
        .await
        .expect("baseline catch-up");
    report(
        "baseline (catch-up, per event)",
        baseline_events,
        started.elapsed(),
        pages,
    );
    cpu.report(baseline_events, used).await;

    let fast = Projector::pinned(full.clone(), views.clone(), 2, &Projection::ALL);
    let (pages, started, used) = (&mut Pages::default(), Instant::now(), cpu.used().await);
    let folded = fast.rebuild(&mut |n| pages.done(n)).await.expect("rebuild");
    assert_eq!(folded as usize, events);
    report(
        "rebuild (in memory, pipelined)",
        events,
        started.elapsed(),
        pages,
    );
    cpu.report(events, used).await;

    for generation in [1, 2] {
        for projection in Projection::ALL {
            delete_generation(views.as_ref(), projection, generation)
                .await
                .expect("delete the bench's keys");
        }
    }
}

/// The log at `path`: reused when it holds `n` events already, else written afresh.
async fn log(path: &std::path::Path, n: usize) -> Arc<dyn EventStore> {
    if path.exists() {
        let store = SqliteEventStore::open(path).await.unwrap();
        let whole = 2 * SKUS + (n.saturating_sub(2 * SKUS) / 5) * 5;
        if store.head().await.unwrap() as usize == whole {
            return Arc::new(store);
        }
        drop(store);
        std::fs::remove_file(path).unwrap();
    }
    write_log(path, n).await
}

/// `n` events as the system writes them: orders of four events (placed, confirmed, shipped,
/// delivered) each followed by a reservation on one of the SKUs, appended by eight writers.
async fn write_log(path: &std::path::Path, n: usize) -> Arc<dyn EventStore> {
    let store: Arc<dyn EventStore> = Arc::new(SqliteEventStore::open(path).await.unwrap());
    for s in 0..SKUS {
        let stream = format!("inventory-SKU-{s:03}");
        let listed = new(
            "ProductListed",
            json!({"currency": "EUR", "name": format!("Product {s}"), "sku": format!("SKU-{s:03}"), "unit_price": 450}),
        );
        let restocked = new("StockRestocked", json!({"quantity": 1_000_000}));
        store
            .append(&stream, "inventory", 0, vec![listed, restocked])
            .await
            .unwrap();
    }
    let orders = n.saturating_sub(2 * SKUS) / 5;
    // One writer per SKU, so each knows its inventory stream's version: no conflicts, and the
    // writers together keep the group commit busy.
    let writers: Vec<_> = (0..SKUS)
        .map(|s| {
            let store = store.clone();
            tokio::spawn(async move {
                let inventory = format!("inventory-SKU-{s:03}");
                for (version, _) in (2..).zip((s..orders).step_by(SKUS)) {
                    append_order(store.as_ref(), &inventory, version).await;
                }
            })
        })
        .collect();
    for writer in writers {
        writer.await.unwrap();
    }
    store
}

async fn append_order(store: &dyn EventStore, inventory: &str, inventory_version: u64) {
    let (order_id, customer_id) = (Uuid::now_v7(), Uuid::new_v4());
    let sku = inventory.trim_start_matches("inventory-");
    let placed = new(
        "OrderPlaced",
        json!({
        "currency": "EUR", "customer_id": customer_id, "order_id": order_id, "total": 900,
        "lines": [{"quantity": 2, "sku": sku, "unit_price": 450}],
        "shipping_address": {"city": "Berlin", "country": "DE", "line1": "1 Bench Street",
            "name": "Bea Bench", "postal_code": "10115"}}),
    );
    let stream = format!("order-{order_id}");
    store
        .append(&stream, "order", 0, vec![placed])
        .await
        .unwrap();
    let reserved = new(
        "StockReserved",
        json!({"order_id": order_id, "quantity": 2}),
    );
    store
        .append(inventory, "inventory", inventory_version, vec![reserved])
        .await
        .unwrap();
    let rest = vec![
        new("OrderConfirmed", json!({})),
        new(
            "OrderShipped",
            json!({"carrier": "DHL", "tracking_number": "JD0001"}),
        ),
        new("OrderDelivered", json!({})),
    ];
    store.append(&stream, "order", 1, rest).await.unwrap();
}

fn new(event_type: &str, payload: serde_json::Value) -> NewEvent {
    NewEvent {
        event_id: Uuid::now_v7(),
        event_type: event_type.into(),
        schema_version: domain::upcast::current_version(event_type),
        occurred_at: Utc::now(),
        payload,
        metadata: EventMetadata::default(),
    }
}

/// CPU time spent, which moves far less than wall time on a shared VM: this process's (user
/// and system, from `/proc/self/stat`) and the Redis server's (`INFO cpu`).
struct Cpu(fred::prelude::Client);

impl Cpu {
    async fn connect(url: &str) -> Self {
        use fred::prelude::ClientLike;
        let config = fred::prelude::Config::from_url(url).expect("a Redis URL");
        let client = fred::prelude::Builder::from_config(config)
            .build()
            .expect("a Redis client");
        client.init().await.expect("Redis answers");
        Self(client)
    }

    /// Seconds used so far: (this process, Redis).
    async fn used(&self) -> (f64, f64) {
        use fred::prelude::ClientLike;
        let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
        // Fields after the command name, which is in parentheses: utime and stime are the
        // 12th and 13th, in clock ticks (100 a second on Linux).
        let after = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
        let fields: Vec<&str> = after.split_whitespace().collect();
        let tick = |i: usize| {
            fields
                .get(i)
                .and_then(|f| f.parse::<f64>().ok())
                .unwrap_or(0.0)
        };
        let ours = (tick(11) + tick(12)) / 100.0;
        let info: String = self.0.info(None).await.unwrap_or_default();
        let field = |name: &str| {
            info.lines()
                .find_map(|l| {
                    l.strip_prefix(name)?
                        .strip_prefix(':')?
                        .trim()
                        .parse::<f64>()
                        .ok()
                })
                .unwrap_or(0.0)
        };
        (ours, field("used_cpu_user") + field("used_cpu_sys"))
    }

    async fn report(&self, events: usize, (ours, redis): (f64, f64)) {
        let (now_ours, now_redis) = self.used().await;
        let (ours, redis) = (now_ours - ours, now_redis - redis);
        println!(
            "  cpu: orderflow {ours:.2} s, Redis {redis:.2} s = {:.2} µs per event",
            (ours + redis) * 1e6 / events as f64
        );
    }
}

/// How long each page took to fold and write.
#[derive(Default)]
struct Pages {
    last: Option<Instant>,
    took: Vec<Duration>,
}

impl Pages {
    fn done(&mut self, _events: u64) {
        let now = Instant::now();
        if let Some(last) = self.last {
            self.took.push(now - last);
        }
        self.last = Some(now);
    }
}

fn report(what: &str, events: usize, took: Duration, pages: &mut Pages) {
    pages.took.sort();
    let at = |q: f64| {
        let i = ((pages.took.len() as f64 - 1.0) * q).round() as usize;
        pages.took.get(i).map_or(0.0, |d| d.as_secs_f64() * 1000.0)
    };
    println!(
        "{what}: {events} events in {:.2} s = {:.0} events/s; per page p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
        took.as_secs_f64(),
        events as f64 / took.as_secs_f64(),
        at(0.5),
        at(0.99),
        at(1.0),
    );
}

fn env(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.replace('_', "").parse().ok())
        .unwrap_or(default)
}
