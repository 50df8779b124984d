//! The projector's apply path (criterion): one event from the topic applied to its order's
//! view, as the projector role does for each delivery (`Projector::handle`: read the view,
//! compare versions, fold, write back compare-on-version, index a new order), on the embedded
//! in-memory view store and on Redis. The baseline in the same run is the fold alone
//! (`OrderView::apply` and its JSON, no store): what the stores add is the ratio to it.
//!
//! `cargo bench -p infra --bench projector` (Redis from `ORDERFLOW_TEST_REDIS`, default
//! `redis://127.0.0.1:6379`; its keys go under a prefix of their own, deleted at the end).
//! The events, orders placed then confirmed, are written to a SQLite store first.

mod common;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::Utc;
use common::{Run, customer_metadata, placed};
use criterion::{BenchmarkId, Throughput};
use domain::order::OrderEvent;
use domain::{NewEvent, RecordedEvent};
use eventlog::{EventStore, LogCursor};
use infra::event_store::SqliteEventStore;
use infra::views::RedisViewStore;
use projections::MemoryViewStore;
use projections::ViewStore;
use projections::projector::Projector;
use projections::views::{OrderView, View};
use uuid::Uuid;

const ORDERS: usize = 10_000;

/// Each case's per-event latencies of its longest run.
type Summary = Arc<Mutex<Vec<(&'static str, Vec<Duration>)>>>;

fn main() {
    let runtime = common::runtime();
    let dir = tempfile::tempdir().expect("a temporary directory");
    let (store, events) = runtime.block_on(log(&dir.path().join("events.db")));
    let events = Arc::new(events);
    let redis = std::env::var("ORDERFLOW_TEST_REDIS").unwrap_or("redis://127.0.0.1:6379".into());
    let prefix = format!("benchapply{}", &Uuid::new_v4().simple().to_string()[..8]);
    let laps = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let summary: Summary = Arc::default();

    let mut criterion = common::criterion();
    let mut group = criterion.benchmark_group("projector/apply");
    group.throughput(Throughput::Elements(1));
    for case in ["fold", "memory", "redis"] {
        group.bench_function(BenchmarkId::from_parameter(case), |b| {
            b.iter_custom(|n| {
                runtime.block_on(async {
                    let mut latencies = Vec::with_capacity(n as usize);
                    let mut left = n as usize;
                    let mut total = Duration::ZERO;
                    // A lap applies the log to empty views; applying an event twice would
                    // measure the no-op of a redelivery instead.
                    while left > 0 {
                        let take = left.min(events.len());
                        let lap = laps.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        let views: Option<Arc<dyn ViewStore>> = match case {
                            "fold" => None,
                            "memory" => Some(Arc::new(MemoryViewStore::new())),
                            _ => Some(Arc::new(
                                RedisViewStore::connect(&format!("{redis}?prefix={prefix}-{lap}"))
                                    .await
                                    .expect("Redis answers (set ORDERFLOW_TEST_REDIS)"),
                            )),
                        };
                        total += match views {
                            None => fold(&events[..take], &mut latencies),
                            Some(views) => {
                                let projector = Projector::new(store.clone(), views);
                                apply(&projector, &events[..take], &mut latencies).await
                            }
                        };
                        left -= take;
                    }
                    keep(&summary, case, latencies);
                    total
                })
            });
        });
    }
    group.finish();
    criterion.final_summary();
    print_summary(&summary.lock().expect("summary"));
    runtime.block_on(delete_keys(&redis, &prefix));
}

/// Applies each event through the projector, timing each.
async fn apply(
    projector: &Projector,
    events: &[RecordedEvent],
    latencies: &mut Vec<Duration>,
) -> Duration {
    let started = Instant::now();
    for event in events {
        let sent = Instant::now();
        projector.handle(event).await.expect("applied");
        latencies.push(sent.elapsed());
    }
    started.elapsed()
}

/// The baseline: each order's view folded and printed as JSON, with no store.
fn fold(events: &[RecordedEvent], latencies: &mut Vec<Duration>) -> Duration {
    let started = Instant::now();
    let mut views: std::collections::HashMap<&str, OrderView> = Default::default();
    for event in events {
        let sent = Instant::now();
        let view = views.entry(event.stream_id.as_str()).or_default();
        view.apply(event).expect("folded");
        std::hint::black_box(serde_json::to_string(view).expect("JSON"));
        latencies.push(sent.elapsed());
    }
    started.elapsed()
}

fn keep(summary: &Summary, case: &'static str, latencies: Vec<Duration>) {
    let mut summary = summary.lock().expect("summary");
    match summary.iter_mut().find(|(c, _)| *c == case) {
        Some(kept) if kept.1.len() >= latencies.len() => {}
        Some(kept) => kept.1 = latencies,
        None => summary.push((case, latencies)),
    }
}

fn print_summary(summary: &[(&'static str, Vec<Duration>)]) {
    println!("\nprojector apply, one event to its order's view (longest run of each case):");
    // Events are applied one after the other, so a run lasts the sum of its latencies.
    let run = |latencies: &[Duration]| {
        let mut latencies = latencies.to_vec();
        latencies.sort_unstable();
        Run {
            done: latencies.len(),
            errors: 0,
            elapsed: latencies.iter().sum(),
            latencies,
        }
    };
    let baseline = summary
        .iter()
        .find(|(c, _)| *c == "fold")
        .map_or(f64::NAN, |(_, l)| run(l).per_second());
    for (case, latencies) in summary {
        let run = run(latencies);
        let micros = |d: Duration| d.as_secs_f64() * 1e6;
        println!(
            "  {case:<7} {:>9.0} events/s  p50 {:>7.1} µs  p99 {:>7.1} µs  max {:>8.1} µs  ({:.2}x the fold alone)",
            run.per_second(),
            micros(run.percentile(50.0)),
            micros(run.percentile(99.0)),
            micros(run.percentile(100.0)),
            run.per_second() / baseline
        );
    }
}

/// `ORDERS` orders, each placed then confirmed, in a SQLite store; the log read back.
async fn log(path: &std::path::Path) -> (Arc<dyn EventStore>, Vec<RecordedEvent>) {
    let store = Arc::new(SqliteEventStore::open(path).await.expect("SQLite store"));
    let appends = (0..ORDERS).map(|_| {
        let store = store.clone();
        async move {
            let id = Uuid::now_v7();
            let stream = format!("order-{id}");
            let placed = placed(id).await;
            let metadata = customer_metadata();
            let events = [placed, OrderEvent::OrderConfirmed]
                .iter()
                .map(|e| NewEvent::from_domain(Uuid::now_v7(), e, Utc::now(), metadata.clone()))
                .collect();
            store
                .append(&stream, "order", 0, events)
                .await
                .expect("append");
        }
    });
    futures_util::future::join_all(appends).await;
    let mut events = Vec::with_capacity(2 * ORDERS);
    let mut cursor = LogCursor::start();
    loop {
        let page = store.read_all(&cursor, 1000).await.expect("read_all");
        if page.events.is_empty() {
            break;
        }
        events.extend(page.events);
        cursor = page.next;
    }
    (store, events)
}

async fn delete_keys(redis: &str, prefix: &str) {
    use fred::prelude::*;
    let Ok(config) = Config::from_url(redis) else {
        return;
    };
    let client = Client::new(config, None, None, None);
    if client.init().await.is_err() {
        return;
    }
    let mut cursor = "0".to_owned();
    loop {
        let (next, keys): (String, Vec<String>) = client
            .custom(
                fred::cmd!("SCAN"),
                vec![
                    cursor.clone(),
                    "MATCH".into(),
                    format!("{prefix}*"),
                    "COUNT".into(),
                    "1000".into(),
                ],
            )
            .await
            .unwrap_or_default();
        if !keys.is_empty() {
            let _: Result<i64, _> = client.del(keys).await;
        }
        if next == "0" {
            break;
        }
        cursor = next;
    }
    let _ = client.quit().await;
}
