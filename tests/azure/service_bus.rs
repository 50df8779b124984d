//! The Service Bus topic against [`ServiceBusFake`], a local server that enforces the documented
//! REST contract (SAS tokens, duplicate detection, peek-lock, lock expiry, delivery count, the
//! dead-letter queue after the max delivery count): the `EventBus` conformance suite, then what
//! is specific to Service Bus.
//!
//! The whole suite runs. Its dead-letter case accepts the broker's reason because the adapter
//! declares that Service Bus chooses it (`keeps_handler_reasons`: the REST API, so the crate,
//! cannot dead-letter with a reason); [`after_the_max_delivery_count_the_event_is_in_the_dead_letter_queue`]
//! checks that the reason is Service Bus's `MaxDeliveryCountExceeded` and what the fake's
//! queues hold.

use std::sync::Arc;
use std::time::Duration;

use infra::bus::conformance::{self, BusFixture};
use infra::bus::service_bus::{SasKey, ServiceBusSettings, ServiceBusTopic};
use infra::bus::{BusError, EventBus, RetryPolicy};
use orderflow_tests::fakes::service_bus::{ServiceBusConfig, ServiceBusFake};

/// A fresh fake namespace and a topic adapter pointed at it, signing with `key`.
fn adapter(fake: &ServiceBusFake, key: &str, policy: RetryPolicy) -> ServiceBusTopic {
    let config = &fake.config;
    let subscriptions: Vec<&str> = config.subscriptions.iter().map(String::as_str).collect();
    let mut settings = ServiceBusSettings::new(
        config.namespace.clone(),
        config.topic.clone(),
        config.key_name.clone(),
        SasKey::new(key),
        &subscriptions,
        policy,
    );
    settings.base_url = Some(fake.base_url.clone());
    settings.lock_duration = config.lock_duration;
    // Short long-polls, so that stopped consumers let go quickly.
    settings.receive_timeout = Duration::from_secs(1);
    ServiceBusTopic::connect(settings).expect("connect to the fake")
}

struct Fixture {
    bus: Arc<ServiceBusTopic>,
    _fake: ServiceBusFake,
}

impl BusFixture for Fixture {
    fn bus(&self) -> Arc<dyn EventBus> {
        self.bus.clone()
    }

    async fn teardown(self) {
        self.bus.close();
    }
}

async fn fixture(subscriptions: &'static [&'static str], policy: RetryPolicy) -> Fixture {
    let fake =
        ServiceBusFake::start(ServiceBusConfig::new(subscriptions, policy.max_attempts)).await;
    let bus = Arc::new(adapter(&fake, &fake.config.key.clone(), policy));
    Fixture { bus, _fake: fake }
}

mod conformance_suite {
    infra::event_bus_conformance!(super::fixture);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_key_is_refused_and_surfaces_as_a_bus_error() {
    let fake = ServiceBusFake::start(ServiceBusConfig::new(&["a"], 3)).await;
    let bus = adapter(&fake, "bm90LXRoZS1rZXk=", conformance::policy());

    let receipt = bus
        .publish(conformance::events(1))
        .await
        .expect("publishing hands out a receipt");
    let result = tokio::time::timeout(conformance::WAIT, receipt)
        .await
        .expect("the receipt resolves");

    assert!(
        matches!(result, Err(BusError::Unavailable(ref why)) if why.contains("401")),
        "a refused token fails the receipt: {result:?}"
    );
    assert!(fake.unauthorized() >= 1, "the fake refused the token");
    assert!(fake.active("a").is_empty(), "nothing was accepted");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_published_twice_is_delivered_once() {
    let fake = ServiceBusFake::start(ServiceBusConfig::new(&["a"], 3)).await;
    let bus: Arc<dyn EventBus> = Arc::new(adapter(&fake, &fake.config.key, conformance::policy()));
    let sent = conformance::events(3);

    // The relay publishes again after a lost receipt: duplicate detection drops the copies.
    conformance::settled(conformance::publish(&bus, &sent).await).await;
    conformance::settled(conformance::publish(&bus, &sent).await).await;
    let a = conformance::spawn_consumer(bus.clone(), "a", conformance::ack_all).await;
    conformance::eventually("a has the batch", || a.seen().len() >= 3).await;
    tokio::time::sleep(conformance::QUIET).await;

    assert_eq!(
        conformance::ids(&a.seen()),
        conformance::event_ids(&sent),
        "each event once, in order"
    );
    a.stop().await;
    assert!(fake.active("a").is_empty(), "every delivery was completed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_delivery_whose_lock_expires_comes_again_as_attempt_two() {
    let fake = ServiceBusFake::start(ServiceBusConfig::new(&["a"], 3)).await;
    let bus: Arc<dyn EventBus> = Arc::new(adapter(&fake, &fake.config.key, conformance::policy()));
    let sent = conformance::events(1);
    let mut handle = bus.subscribe("a").await.expect("subscribe");

    conformance::settled(conformance::publish(&bus, &sent).await).await;
    let first = tokio::time::timeout(conformance::WAIT, handle.next())
        .await
        .expect("a first delivery")
        .expect("open");
    // Held, neither settled nor dropped, past the 2 s lock.
    let again = tokio::time::timeout(conformance::WAIT, handle.next())
        .await
        .expect("the delivery again once the lock lapsed")
        .expect("open");

    assert_eq!((first.event.event_id, first.attempt), (sent[0].event_id, 1));
    assert_eq!(again.event, sent[0], "the same event, intact");
    assert_eq!(again.attempt, 2, "a lapsed lock counts as a delivery");
    again.settle.ack().await;
    // The stale lock cannot settle it any more (404: the message is under a new lock; logged).
    first.settle.ack().await;
    assert!(fake.active("a").is_empty(), "completed under the new lock");
}

/// Against the local fake: the dead letter's reason is Service Bus's own, and the event sits in
/// the failing subscription's `$DeadLetterQueue` only (the suite checks the rest).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_the_max_delivery_count_the_event_is_in_the_dead_letter_queue() {
    let fixture = fixture(conformance::SUBSCRIPTIONS, conformance::policy()).await;
    let fake = &fixture._fake;
    let bus = fixture.bus();
    let a = conformance::spawn_consumer(bus.clone(), "a", |_, attempt| {
        Err(format!("failure {attempt}"))
    })
    .await;
    let sent = conformance::events(1);

    conformance::settled(conformance::publish(&bus, &sent).await).await;
    let deadline = tokio::time::Instant::now() + conformance::WAIT;
    let dead = loop {
        let dead = bus.dead_letters().await.expect("read dead letters");
        if !dead.is_empty() {
            break dead;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "nothing was dead-lettered"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };

    assert!(!bus.keeps_handler_reasons());
    assert!(
        dead[0].reason.starts_with("MaxDeliveryCountExceeded"),
        "Service Bus's reason, not the handler's: {:?}",
        dead[0].reason
    );
    assert_eq!(fake.dead_lettered("a"), [sent[0].event_id.to_string()]);
    assert!(fake.dead_lettered("b").is_empty());
    a.stop().await;
    fixture.teardown().await;
}
