//! Service Bus throughput at an in-region round trip (issue 17): the adapter's way (a page of
//! events as one *Send Message Batch*, several peek-lock receives in flight per handle and
//! completions in the background) against the one-request-per-event way it replaced (one
//! *Send Message* per event, one receive at a time, each completion awaited), in one run,
//! against the local fake ([`ServiceBusFake`]) with every request delayed by a round trip.
//!
//! `cargo bench -p orderflow-tests --bench service_bus`. `SB_ROUND_TRIP_MS` (default 10),
//! `SB_EVENTS` events for the adapter's way (default 20,000), `SB_BASELINE_EVENTS` for the
//! old way (default 1,000, which takes it about as long), `SB_RECEIVERS` receives in flight
//! (default the adapter's, 32), `SB_ROUNDS` (default 2, taking turns). Publishing goes in pages
//! of 500 (the relay's batch size), each awaited before the next; consuming is one handler at a
//! time (`infra::bus::consume` at concurrency 1, as the projector runs) doing nothing, so what
//! is measured is the topic, not a handler.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use azure_core::auth::Secret;
use azure_messaging_servicebus::prelude::TopicClient;
use azure_messaging_servicebus::service_bus::{SendMessageOptions, SettableBrokerProperties};
use domain::RecordedEvent;
use infra::bus::service_bus::{RoutedClient, SasKey, ServiceBusSettings, ServiceBusTopic};
use infra::bus::{EventBus, RetryPolicy, conformance};
use orderflow_tests::fakes::service_bus::{ServiceBusConfig, ServiceBusFake};
use serde_json::json;

const SUBSCRIPTION: &str = "projector";
const PAGE: usize = 500;

fn env(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Events the size of an `OrderPlaced` (two lines, a shipping address): about 900 bytes.
fn events(n: usize) -> Vec<RecordedEvent> {
    let mut all = Vec::with_capacity(n);
    while all.len() < n {
        for mut event in conformance::events(100) {
            event.event_type = "OrderPlaced".into();
            event.payload = json!({
                "order_id": event.stream_id,
                "customer_id": "3f1c9a52-6c1e-4b55-9b8e-2f5d6a9c0e11",
                "lines": [
                    {"sku": "TEA-EARL-GREY-250", "quantity": 2, "unit_price": 1250},
                    {"sku": "MUG-STONEWARE-350", "quantity": 1, "unit_price": 1800}
                ],
                "currency": "EUR",
                "total": 4300,
                "shipping_address": {
                    "name": "Ada Lovelace", "line1": "12 St James's Square", "line2": null,
                    "city": "London", "postal_code": "SW1Y 4JH", "country": "GB"
                }
            })
            .into();
            all.push(event);
        }
    }
    all.truncate(n);
    all
}

async fn fake(round_trip: Duration) -> ServiceBusFake {
    let mut config = ServiceBusConfig::new(&[SUBSCRIPTION], 5);
    config.lock_duration = Duration::from_secs(60);
    config.round_trip = round_trip;
    ServiceBusFake::start(config).await
}

fn settings(fake: &ServiceBusFake, receivers: usize) -> ServiceBusSettings {
    let config = &fake.config;
    let mut settings = ServiceBusSettings::new(
        config.namespace.clone(),
        config.topic.clone(),
        config.key_name.clone(),
        SasKey::new(config.key.clone()),
        &[SUBSCRIPTION],
        RetryPolicy::default(),
    );
    settings.base_url = Some(fake.base_url.clone());
    settings.lock_duration = config.lock_duration;
    settings.receive_timeout = Duration::from_secs(1);
    settings.receivers = receivers;
    settings
}

/// Events per second over `elapsed`.
fn rate(n: usize, elapsed: Duration) -> f64 {
    n as f64 / elapsed.as_secs_f64()
}

/// The adapter's way: publish in pages, then consume everything with `consume`.
async fn adapter_way(round_trip: Duration, n: usize, receivers: usize) -> (f64, f64) {
    let fake = fake(round_trip).await;
    let bus = Arc::new(ServiceBusTopic::connect(settings(&fake, receivers)).expect("connect"));
    let sent = events(n);

    let started = Instant::now();
    for page in sent.chunks(PAGE) {
        bus.publish(page.to_vec())
            .await
            .expect("publish")
            .await
            .expect("receipt");
    }
    let published = rate(n, started.elapsed());
    assert_eq!(
        fake.active(SUBSCRIPTION).len(),
        n,
        "every event is on the topic"
    );

    let handled = Arc::new(AtomicUsize::new(0));
    let count = handled.clone();
    let handler: infra::bus::Handler = Arc::new(move |_| {
        count.fetch_add(1, Ordering::Relaxed);
        Box::pin(async { Ok(()) })
    });
    let (stop, shutdown) = tokio::sync::watch::channel(false);
    let subscription = bus.subscribe(SUBSCRIPTION).await.expect("subscribe");
    let started = Instant::now();
    let consumer = tokio::spawn(infra::bus::consume(
        SUBSCRIPTION,
        subscription,
        1,
        handler,
        shutdown,
    ));
    while handled.load(Ordering::Relaxed) < n {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let consumed = rate(n, started.elapsed());
    stop.send_replace(true);
    consumer.await.expect("the consumer stops");
    bus.close();
    (published, consumed)
}

/// The way before: one *Send Message* per event in order; one receive at a time, each
/// completion awaited before the next receive.
async fn one_by_one(round_trip: Duration, n: usize) -> (f64, f64) {
    let fake = fake(round_trip).await;
    let config = &fake.config;
    let http = Arc::new(RoutedClient::new(Some(&fake.base_url), Duration::from_secs(30)).unwrap());
    let client = TopicClient::new(
        http,
        config.namespace.clone(),
        config.topic.clone(),
        config.key_name.clone(),
        Secret::new(config.key.clone()),
    )
    .expect("client");
    let sender = client.topic_sender();
    let sent = events(n);

    let started = Instant::now();
    for event in &sent {
        let options = SendMessageOptions {
            content_type: Some("application/json".into()),
            broker_properties: Some(SettableBrokerProperties {
                message_id: Some(event.event_id.to_string()),
                label: Some(event.event_type.clone()),
                ..Default::default()
            }),
            custom_properties: None,
        };
        let body = serde_json::to_string(event).unwrap();
        sender
            .send_message(&body, Some(options))
            .await
            .expect("send");
    }
    let published = rate(n, started.elapsed());

    let receiver = client.subscription_receiver(SUBSCRIPTION);
    let started = Instant::now();
    let mut received = 0;
    while received < n {
        let locked = receiver
            .peek_lock_message2(Some(Duration::from_secs(1)))
            .await
            .expect("receive");
        if locked.broker_properties().is_none() {
            continue;
        }
        let _event: RecordedEvent = serde_json::from_str(&locked.body()).expect("an event");
        locked.delete_message().await.expect("complete");
        received += 1;
    }
    let consumed = rate(n, started.elapsed());
    (published, consumed)
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let round_trip = Duration::from_millis(env("SB_ROUND_TRIP_MS", 10) as u64);
    let (n, baseline_n) = (env("SB_EVENTS", 20_000), env("SB_BASELINE_EVENTS", 1_000));
    let receivers = env("SB_RECEIVERS", infra::bus::service_bus::DEFAULT_RECEIVERS);
    let rounds = env("SB_ROUNDS", 2);
    println!(
        "Service Bus fake, {} ms per request; {n} events the adapter's way ({receivers} receives in flight), {baseline_n} one by one; {rounds} rounds, taking turns",
        round_trip.as_millis()
    );
    println!("round  way                 published/s  consumed/s");
    let mut ours = Vec::new();
    let mut theirs = Vec::new();
    for round in 1..=rounds {
        let (p, c) = adapter_way(round_trip, n, receivers).await;
        println!("{round:>5}  batch + {receivers:>2} receives {p:>12.0} {c:>11.0}");
        ours.push((p, c));
        let (p, c) = one_by_one(round_trip, baseline_n).await;
        println!("{round:>5}  one by one          {p:>12.0} {c:>11.0}");
        theirs.push((p, c));
    }
    let best = |runs: &[(f64, f64)], pick: fn(&(f64, f64)) -> f64| {
        runs.iter().map(pick).fold(0.0_f64, f64::max)
    };
    let (op, oc) = (best(&ours, |r| r.0), best(&ours, |r| r.1));
    let (tp, tc) = (best(&theirs, |r| r.0), best(&theirs, |r| r.1));
    println!(
        "best of {rounds}: published {op:.0}/s against {tp:.0}/s ({:.0}x); consumed {oc:.0}/s against {tc:.0}/s ({:.0}x)",
        op / tp,
        oc / tc
    );
}
