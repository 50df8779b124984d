//! Event-store append throughput with 1, 16 and 64 concurrent appenders, on SQLite and on
//! PostgreSQL (criterion). Each append is one place-order event on a new stream, durable at
//! commit; the single appender is the baseline (one commit per append: what group commit
//! saves is the ratio to it), and the summary at the end prints appends/s, latency
//! percentiles and that ratio for each.
//!
//! `cargo bench -p infra --bench append` (PostgreSQL from `ORDERFLOW_TEST_POSTGRES`, as in
//! the tests). Criterion's own filter picks cases: `cargo bench -p infra --bench append --
//! sqlite`.

mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::Utc;
use commands::EventStore;
use common::{Run, closed_loop, customer_metadata, fresh_schema, place_order, postgres_url};
use criterion::{BenchmarkId, Criterion, Throughput};
use domain::NewEvent;
use domain::order::{OrderCommand, OrderEvent};
use infra::event_store::{PostgresEventStore, SqliteEventStore};
use uuid::Uuid;

const SCHEMA: &str = "bench_append";

/// Each case's longest run: engine, appenders, what it measured.
type Summary = Arc<Mutex<Vec<(String, usize, Run)>>>;
const CONCURRENCY: [usize; 3] = [1, 16, 64];

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a runtime");
    let mut criterion = Criterion::default()
        .configure_from_args()
        .sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(4));
    let summary: Summary = Arc::default();

    let dir = tempfile::tempdir().expect("a temporary directory");
    let sqlite: Arc<dyn EventStore> = Arc::new(
        runtime
            .block_on(SqliteEventStore::open(&dir.path().join("events.db")))
            .expect("the SQLite store"),
    );
    bench(&mut criterion, &runtime, "sqlite", sqlite, &summary);

    runtime.block_on(fresh_schema(SCHEMA));
    let url = format!(
        "{}{}schema={SCHEMA}",
        postgres_url(),
        separator(&postgres_url())
    );
    let postgres: Arc<dyn EventStore> = Arc::new(
        runtime
            .block_on(PostgresEventStore::connect(&url))
            .expect("the PostgreSQL store"),
    );
    bench(&mut criterion, &runtime, "postgres", postgres, &summary);
    runtime.block_on(common::drop_schema(SCHEMA));

    criterion.final_summary();
    print_summary(&summary.lock().expect("summary"));
}

fn bench(
    criterion: &mut Criterion,
    runtime: &tokio::runtime::Runtime,
    engine: &str,
    store: Arc<dyn EventStore>,
    summary: &Summary,
) {
    let mut group = criterion.benchmark_group(format!("append/{engine}"));
    group.throughput(Throughput::Elements(1));
    for clients in CONCURRENCY {
        group.bench_with_input(
            BenchmarkId::new("appenders", clients),
            &clients,
            |b, &clients| {
                b.iter_custom(|appends| {
                    let store = store.clone();
                    let run = runtime.block_on(closed_loop(clients, appends as usize, move |_| {
                        let store = store.clone();
                        async move {
                            let id = Uuid::now_v7();
                            store
                                .append(&format!("order-{id}"), "order", 0, vec![placed(id)])
                                .await
                                .map(drop)
                        }
                    }));
                    let elapsed = run.elapsed;
                    // Keep the longest run of each case for the summary (the most samples).
                    let mut summary = summary.lock().expect("summary");
                    match summary
                        .iter_mut()
                        .find(|(e, c, _)| e == engine && *c == clients)
                    {
                        Some(kept) if kept.2.done >= run.done => {}
                        Some(kept) => kept.2 = run,
                        None => summary.push((engine.to_owned(), clients, run)),
                    }
                    elapsed
                });
            },
        );
    }
    group.finish();
}

/// The event a placement appends, as the command side would build it.
fn placed(order_id: Uuid) -> NewEvent {
    let OrderCommand::Place {
        order_id,
        customer_id,
        lines,
        currency,
        shipping_address,
    } = place_order(order_id)
    else {
        unreachable!("place_order builds a placement")
    };
    let total = lines
        .iter()
        .map(|line| line.unit_price * u64::from(u32::from(line.quantity)))
        .sum();
    let event = OrderEvent::OrderPlaced {
        order_id,
        customer_id,
        lines,
        currency,
        total,
        shipping_address,
    };
    NewEvent::from_domain(Uuid::now_v7(), &event, Utc::now(), customer_metadata())
}

fn print_summary(summary: &[(String, usize, Run)]) {
    println!("\nappend, one event on a new stream, durable at commit (longest run of each case):");
    for (engine, clients, run) in summary {
        let baseline = summary
            .iter()
            .find(|(e, c, _)| e == engine && *c == 1)
            .map_or(f64::NAN, |(_, _, run)| run.per_second());
        println!(
            "  {engine:<8} {clients:>2} appenders: {}  {:>5.1}x one appender",
            run.summary(),
            run.per_second() / baseline
        );
    }
}

fn separator(url: &str) -> char {
    if url.contains('?') { '&' } else { '?' }
}
