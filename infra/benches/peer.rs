//! orderflow against the established Rust CQRS stack, in one run on one machine (issue 6):
//! the same place-order command on the same `Order` aggregate, one new stream per order, 64
//! concurrent clients, through
//! - orderflow's command side (`commands::Aggregates`) on its PostgreSQL store, and cqrs-es's
//!   `CqrsFramework` on postgres-es's `PostgresEventRepository`, on the same database;
//! - orderflow on its SQLite store, and cqrs-es on sqlite-es's `SqliteEventRepository`.
//!
//! `cargo bench -p infra --bench peer`. `PEER_COMMANDS` commands per run (default 20,000),
//! `PEER_CLIENTS` clients (default 64), `PEER_ENGINES` which comparisons (default
//! `postgres,sqlite`), `PEER_SIDES` which sides (default `orderflow,peer`), `PEER_ROUNDS`
//! runs of each (default 2, taking turns, so that a slow spell of this VM does not fall on
//! one side only); PostgreSQL from
//! `ORDERFLOW_TEST_POSTGRES` as in the tests. Each side starts from empty tables.
//!
//! Durability is not the same on both sides, and the output says so: orderflow answers after
//! its commit is durable (SQLite `synchronous=FULL` in WAL mode, PostgreSQL
//! `synchronous_commit=on`); sqlite-es's own pool opens WAL with `synchronous=NORMAL`, which
//! does not sync each commit (a power cut can lose the last ones). postgres-es runs on the
//! server's default, `synchronous_commit=on`.

mod common;

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use commands::Aggregates;

use common::{Run, closed_loop, customer_metadata, env, fresh_schema, place_order, postgres_url};
use cqrs_es::CqrsFramework;
use cqrs_es::persist::PersistedEventStore;
use domain::order::Order;
use eventlog::EventStore;
use infra::event_store::{PostgresEventStore, SqliteEventStore};
use postgres_es::PostgresEventRepository;
use sqlite_es::SqliteEventRepository;
use uuid::Uuid;

const ORDERFLOW_SCHEMA: &str = "bench_peer_orderflow";
const PEER_SCHEMA: &str = "bench_peer_cqrs_es";

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let commands = env("PEER_COMMANDS", 20_000);
    let clients = env("PEER_CLIENTS", 64);
    let rounds = env("PEER_ROUNDS", 2).max(1);
    let engines = std::env::var("PEER_ENGINES").unwrap_or_else(|_| "postgres,sqlite".into());
    println!("place-order, one new stream per order, {clients} clients, {commands} commands a run");
    if engines.contains("postgres") {
        postgres(clients, commands, rounds).await;
    }
    if engines.contains("sqlite") {
        sqlite(clients, commands, rounds).await;
    }
}

async fn postgres(clients: usize, commands: usize, rounds: usize) {
    println!("\nPostgreSQL ({}):", redact(&postgres_url()));
    println!("  orderflow: PostgresEventStore, group commit, synchronous_commit=on");
    println!(
        "  peer:      cqrs-es 0.5 + postgres-es 0.5 PostgresEventRepository, its default pool (10), \
         synchronous_commit={}",
        server_setting("synchronous_commit").await
    );
    let mut ours = Vec::new();
    let mut peers = Vec::new();
    for round in 1..=rounds {
        if side("orderflow") {
            let run = orderflow_postgres(clients, commands).await;
            println!("  orderflow  run {round}: {}", run.summary());
            ours.push(run);
        }
        if side("peer") {
            let run = peer_postgres(clients, commands).await;
            println!("  peer       run {round}: {}", run.summary());
            peers.push(run);
        }
    }
    let ratio = verdict(&ours, &peers, 5.0);
    println!("  ratio PostgreSQL {ratio:.2}x (target 5x)");
    common::drop_schema(ORDERFLOW_SCHEMA).await;
    common::drop_schema(PEER_SCHEMA).await;
}

async fn sqlite(clients: usize, commands: usize, rounds: usize) {
    println!("\nSQLite (a file in a temporary directory):");
    println!(
        "  orderflow: SqliteEventStore, WAL, synchronous=FULL (durable at each commit), group commit"
    );
    println!(
        "  peer:      cqrs-es 0.5 + sqlite-es 0.5 SqliteEventRepository, default_sqlite_pool: WAL, \
         synchronous=NORMAL (NOT durable at each commit), 10 connections"
    );
    let mut ours = Vec::new();
    let mut peers = Vec::new();
    for round in 1..=rounds {
        let dir = tempfile::tempdir().expect("a temporary directory");
        if side("orderflow") {
            let run = orderflow_sqlite(&dir.path().join("orderflow.db"), clients, commands).await;
            println!("  orderflow  run {round}: {}", run.summary());
            ours.push(run);
        }
        if side("peer") {
            let run = peer_sqlite(&dir.path().join("peer.db"), clients, commands).await;
            println!("  peer       run {round}: {}", run.summary());
            peers.push(run);
        }
    }
    let ratio = verdict(&ours, &peers, 3.0);
    println!("  ratio SQLite {ratio:.2}x (target 3x)");
}

/// Whether `PEER_SIDES` (default `orderflow,peer`) names this side; one side alone is for
/// profiling it.
fn side(name: &str) -> bool {
    std::env::var("PEER_SIDES").map_or(true, |sides| sides.contains(name))
}

/// Prints the ratio of the medians of both sides and returns it (NaN with one side only).
fn verdict(ours: &[Run], peers: &[Run], target: f64) -> f64 {
    if ours.is_empty() || peers.is_empty() {
        return f64::NAN;
    }
    let median = |runs: &[Run]| {
        let mut rates: Vec<f64> = runs.iter().map(Run::per_second).collect();
        rates.sort_by(f64::total_cmp);
        let mid = rates.len() / 2;
        if rates.len().is_multiple_of(2) {
            (rates[mid - 1] + rates[mid]) / 2.0
        } else {
            rates[mid]
        }
    };
    let (ours, peer) = (median(ours), median(peers));
    let ratio = ours / peer;
    let met = if ratio >= target { "met" } else { "MISSED" };
    println!(
        "  median: orderflow {ours:.0}/s, peer {peer:.0}/s: {ratio:.2}x (target {target}x: {met})"
    );
    ratio
}

async fn orderflow_postgres(clients: usize, commands: usize) -> Run {
    fresh_schema(ORDERFLOW_SCHEMA).await;
    let url = with_param(&postgres_url(), &format!("schema={ORDERFLOW_SCHEMA}"));
    let store: Arc<dyn EventStore> = Arc::new(
        PostgresEventStore::connect(&url)
            .await
            .expect("orderflow's PostgreSQL store"),
    );
    orderflow(store, clients, commands).await
}

async fn orderflow_sqlite(path: &Path, clients: usize, commands: usize) -> Run {
    let store: Arc<dyn EventStore> = Arc::new(
        SqliteEventStore::open(path)
            .await
            .expect("orderflow's SQLite store"),
    );
    orderflow(store, clients, commands).await
}

/// orderflow's command side, as the HTTP handler calls it for a placement.
async fn orderflow(store: Arc<dyn EventStore>, clients: usize, commands: usize) -> Run {
    let orders = Arc::new(Aggregates::<Order>::new(store));
    closed_loop(clients, commands, move |_| {
        let orders = orders.clone();
        async move {
            let id = Uuid::now_v7();
            orders
                .execute(&id.to_string(), place_order(id), &customer_metadata())
                .await
                .map(drop)
        }
    })
    .await
}

async fn peer_postgres(clients: usize, commands: usize) -> Run {
    fresh_schema(PEER_SCHEMA).await;
    // postgres-es's own tables (db/init.sql of its repository), in a schema of their own.
    let pool = postgres_es::default_postgress_pool(&postgres_url()).await;
    sqlx::raw_sql(&PEER_POSTGRES_TABLES.replace("{schema}", PEER_SCHEMA))
        .execute(&pool)
        .await
        .expect("postgres-es tables");
    let repository = PostgresEventRepository::new(pool).with_tables(
        &format!("{PEER_SCHEMA}.events"),
        &format!("{PEER_SCHEMA}.snapshots"),
    );
    let cqrs = CqrsFramework::new(PersistedEventStore::new_event_store(repository), vec![], ());
    peer(Arc::new(cqrs), clients, commands).await
}

async fn peer_sqlite(path: &Path, clients: usize, commands: usize) -> Run {
    let url = format!("sqlite://{}", path.display());
    let pool = sqlite_es::default_sqlite_pool(&url).await;
    sqlx::raw_sql(PEER_SQLITE_TABLES)
        .execute(&pool)
        .await
        .expect("sqlite-es tables");
    let cqrs = CqrsFramework::new(
        PersistedEventStore::new_event_store(SqliteEventRepository::new(pool)),
        vec![],
        (),
    );
    peer(Arc::new(cqrs), clients, commands).await
}

/// The peer's command side as its documentation shows it: `execute_with_metadata`.
async fn peer<R>(
    cqrs: Arc<CqrsFramework<Order, PersistedEventStore<R, Order>>>,
    clients: usize,
    commands: usize,
) -> Run
where
    R: cqrs_es::persist::PersistedEventRepository + 'static,
{
    closed_loop(clients, commands, move |_| {
        let cqrs = cqrs.clone();
        async move {
            let id = Uuid::now_v7();
            let metadata = customer_metadata();
            let metadata = HashMap::from([
                (
                    "correlation_id".to_owned(),
                    metadata.correlation_id.to_string(),
                ),
                ("actor".to_owned(), metadata.actor),
                (
                    "command_id".to_owned(),
                    metadata.command_id.unwrap_or_default(),
                ),
                (
                    "request_hash".to_owned(),
                    metadata.request_hash.unwrap_or_default(),
                ),
            ]);
            cqrs.execute_with_metadata(&id.to_string(), place_order(id), metadata)
                .await
        }
    })
    .await
}

/// postgres-es 0.5's `db/init.sql` (its events and snapshots tables), in `{schema}`.
const PEER_POSTGRES_TABLES: &str = "
CREATE TABLE {schema}.events (
    aggregate_type text NOT NULL,
    aggregate_id   text NOT NULL,
    sequence       bigint CHECK (sequence >= 0) NOT NULL,
    event_type     text NOT NULL,
    event_version  text NOT NULL,
    payload        json NOT NULL,
    metadata       json NOT NULL,
    PRIMARY KEY (aggregate_type, aggregate_id, sequence)
);
CREATE TABLE {schema}.snapshots (
    aggregate_type   text NOT NULL,
    aggregate_id     text NOT NULL,
    last_sequence    bigint CHECK (last_sequence >= 0) NOT NULL,
    current_snapshot bigint CHECK (current_snapshot >= 0) NOT NULL,
    payload          json NOT NULL,
    PRIMARY KEY (aggregate_type, aggregate_id, last_sequence)
);";

/// sqlite-es 0.5's migration (`migrations/20221114171845_init.sql`).
const PEER_SQLITE_TABLES: &str = "
CREATE TABLE events (
  aggregate_type text NOT NULL,
  aggregate_id   text NOT NULL,
  sequence       integer CHECK (sequence >= 0) NOT NULL,
  event_type     text NOT NULL,
  event_version  text NOT NULL,
  payload        text NOT NULL,
  metadata       text NOT NULL,
  PRIMARY KEY (aggregate_type, aggregate_id, sequence)
) STRICT;
CREATE TABLE snapshots (
  aggregate_type   text NOT NULL,
  aggregate_id     text NOT NULL,
  last_sequence    integer CHECK (last_sequence >= 0) NOT NULL,
  current_snapshot integer CHECK (current_snapshot >= 0) NOT NULL,
  payload          text NOT NULL,
  PRIMARY KEY (aggregate_type, aggregate_id, last_sequence)
) STRICT;";

async fn server_setting(name: &str) -> String {
    let pool = postgres_es::default_postgress_pool(&postgres_url()).await;
    sqlx::query_scalar::<_, String>(&format!("SHOW {name}"))
        .fetch_one(&pool)
        .await
        .unwrap_or_else(|e| format!("unknown ({e})"))
}

fn with_param(url: &str, param: &str) -> String {
    let separator = if url.contains('?') { '&' } else { '?' };
    format!("{url}{separator}{param}")
}

/// The URL without a password, for the output.
fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if url[scheme + 3..at].contains(':') => {
            let user_end = url[scheme + 3..at].find(':').map_or(at, |i| scheme + 3 + i);
            format!("{}:***{}", &url[..user_end], &url[at..])
        }
        _ => url.to_owned(),
    }
}
