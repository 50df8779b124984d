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

use chrono::Utc;
use common::{Run, closed_loop, customer_metadata, fresh_schema, placed, postgres_url};
use criterion::{BenchmarkId, Criterion, Throughput};
use domain::NewEvent;
use eventlog::EventStore;
use infra::event_store::{PostgresEventStore, SqliteEventStore};
use uuid::Uuid;

const SCHEMA: &str = "bench_append";

/// Each case's longest run: engine, appenders, what it measured.
type Summary = Arc<Mutex<Vec<(String, usize, Run)>>>;
const CONCURRENCY: [usize; 3] = [1, 16, 64];

fn main() {
    let runtime = common::runtime();
    let mut criterion = common::criterion();
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
    for clients in CONCURRENCY {
        // One iteration is one append per appender, so that a sample is long enough for the
        // clients' start and finish not to count; criterion's throughput is per append.
        group.throughput(Throughput::Elements(clients as u64));
        group.bench_with_input(
            BenchmarkId::new("appenders", clients),
            &clients,
            |b, &clients| {
                b.iter_custom(|iterations| {
                    let store = store.clone();
                    let appends = iterations as usize * clients;
                    let run = runtime.block_on(closed_loop(clients, appends, move |_| {
                        let store = store.clone();
                        async move {
                            let id = Uuid::now_v7();
                            let event = NewEvent::from_domain(
                                Uuid::now_v7(),
                                &placed(id).await,
                                Utc::now(),
                                customer_metadata(),
                            );
                            store
                                .append(&format!("order-{id}"), "order", 0, vec![event])
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
