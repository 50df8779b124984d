//! What the store benches share: the place-order command they all write, the clients that
//! send it, latency percentiles, and fresh PostgreSQL schemas.

#![allow(dead_code)] // each bench uses its own part of this

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use domain::EventMetadata;
use domain::order::{Order, OrderCommand, OrderEvent, OrderLine};
use domain::values::{Currency, CustomerId, Quantity, ShippingAddress, Sku};
use sqlx::{Connection, PgConnection};
use uuid::Uuid;

/// The server the PostgreSQL benches use: `ORDERFLOW_TEST_POSTGRES`, as the tests do.
pub fn postgres_url() -> String {
    std::env::var("ORDERFLOW_TEST_POSTGRES")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into())
}

/// Drops and creates `schema`, so every run starts from empty tables.
pub async fn fresh_schema(schema: &str) {
    let mut conn = PgConnection::connect(&postgres_url())
        .await
        .expect("PostgreSQL answers (set ORDERFLOW_TEST_POSTGRES)");
    for statement in [
        format!("DROP SCHEMA IF EXISTS {schema} CASCADE"),
        format!("CREATE SCHEMA {schema}"),
    ] {
        sqlx::raw_sql(&statement)
            .execute(&mut conn)
            .await
            .expect("schema reset");
    }
}

pub fn drop_schema(schema: &str) -> impl Future<Output = ()> {
    let statement = format!("DROP SCHEMA IF EXISTS {schema} CASCADE");
    async move {
        if let Ok(mut conn) = PgConnection::connect(&postgres_url()).await {
            let _ = sqlx::raw_sql(&statement).execute(&mut conn).await;
        }
    }
}

/// The place-order command of a web checkout: two lines and a full shipping address.
pub fn place_order(order_id: Uuid) -> OrderCommand {
    let sku = |s: &str| Sku::parse(s).expect("a valid SKU");
    let quantity = |q| Quantity::parse(q).expect("a valid quantity");
    OrderCommand::Place {
        order_id,
        customer_id: CustomerId(Uuid::from_u128(0x5eed)),
        lines: vec![
            OrderLine {
                sku: sku("TEA-EARL-GREY-250"),
                quantity: quantity(2),
                unit_price: 1250,
            },
            OrderLine {
                sku: sku("MUG-STONEWARE-350"),
                quantity: quantity(1),
                unit_price: 1800,
            },
        ],
        currency: Currency::parse("EUR").expect("a currency"),
        shipping_address: ShippingAddress {
            name: "Ada Lovelace".into(),
            line1: "12 St James's Square".into(),
            line2: None,
            city: "London".into(),
            postal_code: "SW1Y 4JH".into(),
            country: "GB".into(),
        },
    }
}

/// The event the `Order` aggregate decides for [`place_order`], as the command side records it.
pub async fn placed(order_id: Uuid) -> OrderEvent {
    use cqrs_es::Aggregate;
    let sink = cqrs_es::event_sink::EventSink::default();
    Order::default()
        .handle(place_order(order_id), &(), &sink)
        .await
        .expect("a valid placement");
    sink.collect().await.pop().expect("one event")
}

/// The runtime the benches drive their clients and stores on: two workers, the machine's cores.
pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a runtime")
}

/// Criterion as the benches use it: ten samples of about four seconds each.
pub fn criterion() -> criterion::Criterion {
    criterion::Criterion::default()
        .configure_from_args()
        .sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(4))
}

/// The metadata a customer's command carries.
pub fn customer_metadata() -> EventMetadata {
    EventMetadata {
        correlation_id: Uuid::now_v7(),
        actor: format!("customer:{}", Uuid::from_u128(0x5eed)),
        command_id: Some(Uuid::new_v4().to_string()),
        request_hash: Some("9f2c7a1b4e6d8f0a".into()),
        ..Default::default()
    }
}

/// What one closed-loop run measured.
pub struct Run {
    pub done: usize,
    pub errors: usize,
    pub elapsed: Duration,
    /// Each successful call's latency, sorted.
    pub latencies: Vec<Duration>,
}

impl Run {
    /// A run that took `elapsed`: the successful calls' latencies (in any order) and how
    /// many calls failed.
    pub fn new(mut latencies: Vec<Duration>, errors: usize, elapsed: Duration) -> Self {
        latencies.sort_unstable();
        Self {
            done: latencies.len(),
            errors,
            elapsed,
            latencies,
        }
    }

    pub fn per_second(&self) -> f64 {
        self.done as f64 / self.elapsed.as_secs_f64()
    }

    pub fn percentile(&self, p: f64) -> Duration {
        if self.latencies.is_empty() {
            return Duration::ZERO;
        }
        let rank = ((p / 100.0) * self.latencies.len() as f64).ceil() as usize;
        self.latencies[rank.clamp(1, self.latencies.len()) - 1]
    }

    /// `12,345/s  p50 1.2 ms  p90 …  p99 …  max …` (and the error count, if any).
    pub fn summary(&self) -> String {
        let ms = |d: Duration| d.as_secs_f64() * 1e3;
        let mut line = format!(
            "{:>8.0}/s  p50 {:>6.2} ms  p90 {:>6.2} ms  p99 {:>6.2} ms  max {:>7.2} ms",
            self.per_second(),
            ms(self.percentile(50.0)),
            ms(self.percentile(90.0)),
            ms(self.percentile(99.0)),
            ms(self.latencies.last().copied().unwrap_or_default()),
        );
        if self.errors > 0 {
            line.push_str(&format!("  ({} errors)", self.errors));
        }
        line
    }
}

/// `clients` tasks call `call(i)` for i in 0..total between them, each as soon as its last
/// call answered (a closed loop), timing each call.
pub async fn closed_loop<F, Fut, E>(clients: usize, total: usize, call: F) -> Run
where
    F: Fn(usize) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<(), E>> + Send,
    E: std::fmt::Display,
{
    let call = Arc::new(call);
    let next = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let tasks: Vec<_> = (0..clients)
        .map(|_| {
            let (call, next) = (call.clone(), next.clone());
            tokio::spawn(async move {
                let mut latencies = Vec::with_capacity(total / clients + 1);
                let mut errors = 0;
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= total {
                        break;
                    }
                    let sent = Instant::now();
                    match call(i).await {
                        Ok(()) => latencies.push(sent.elapsed()),
                        Err(error) => {
                            if errors == 0 {
                                eprintln!("error: {error}");
                            }
                            errors += 1;
                        }
                    }
                }
                (latencies, errors)
            })
        })
        .collect();
    let (mut latencies, mut errors) = (Vec::with_capacity(total), 0);
    for task in tasks {
        let (client_latencies, client_errors) = task.await.expect("a client task");
        latencies.extend(client_latencies);
        errors += client_errors;
    }
    Run::new(latencies, errors, started.elapsed())
}

/// A whole number from the environment, or `default`.
pub fn env(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.replace('_', "").parse().ok())
        .unwrap_or(default)
}
