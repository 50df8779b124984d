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
    adapter_with(fake, key, policy, |_| {})
}

/// [`adapter`], with `change` applied to its settings.
fn adapter_with(
    fake: &ServiceBusFake,
    key: &str,
    policy: RetryPolicy,
    change: impl FnOnce(&mut ServiceBusSettings),
) -> ServiceBusTopic {
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
    change(&mut settings);
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

    conformance::assert_each_once(&a.seen(), &conformance::event_ids(&sent));
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
    // Completions go in the background; stopping waits for them.
    handle.stop().await;
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

/// The fake's own side of the REST contract, spoken directly: what it must refuse.
mod the_fake {
    use super::*;
    use infra::sas::sas_token;
    use reqwest::StatusCode;

    fn token(fake: &ServiceBusFake) -> String {
        // The namespace's root: a token for every entity in it.
        let resource = format!("https://{}.servicebus.windows.net/", fake.config.namespace);
        let expiry = chrono::Utc::now().timestamp() as u64 + 600;
        sas_token(&resource, &fake.config.key_name, &fake.config.key, expiry)
    }

    async fn post(
        fake: &ServiceBusFake,
        path: &str,
        content_type: &str,
        body: &str,
    ) -> (StatusCode, String) {
        let answer = reqwest::Client::new()
            .post(format!("{}{path}", fake.base_url))
            .header("authorization", token(fake))
            .header("content-type", content_type)
            .body(body.to_owned())
            .send()
            .await
            .expect("the fake answers");
        (answer.status(), answer.text().await.unwrap_or_default())
    }

    const BATCH: &str = "application/vnd.microsoft.servicebus.json";

    #[tokio::test]
    async fn a_batch_needs_its_exact_content_type_and_shape() {
        let fake = ServiceBusFake::start(ServiceBusConfig::new(&["a"], 3)).await;
        let good = r#"[{"Body":"one","BrokerProperties":{"MessageId":"m1"},"UserProperties":{"Diagnostic-Id":"x"}},{"Body":"two"}]"#;

        let cases = [
            (BATCH, r#"{"Body":"not an array"}"#),
            (BATCH, r#"[]"#),
            (BATCH, r#"[{"BrokerProperties":{}}]"#),
            (BATCH, r#"[{"Body":1}]"#),
            (BATCH, r#"[{"Body":"x","BrokerProperties":"MessageId"}]"#),
            (BATCH, r#"[{"Body":"x","UserProperties":[1]}]"#),
        ];
        for (content_type, body) in cases {
            let (status, _) = post(&fake, "/events/messages", content_type, body).await;
            assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
        }
        assert!(
            fake.active("a").is_empty(),
            "nothing of a refused batch was kept"
        );

        let (status, _) = post(&fake, "/events/messages", BATCH, good).await;
        assert_eq!(status, StatusCode::CREATED);
        assert_eq!(fake.active("a").len(), 2, "both messages of the batch");
        assert_eq!(
            fake.user_properties("a", "m1"),
            Some(serde_json::json!({"Diagnostic-Id": "x"}))
        );

        // With a charset the body is one message whose payload is the JSON text, not a batch.
        let (status, _) = post(
            &fake,
            "/events/messages",
            &format!("{BATCH}; charset=utf-8"),
            good,
        )
        .await;
        assert_eq!(status, StatusCode::CREATED);
        assert_eq!(fake.active("a").len(), 3, "taken as one message");
    }

    #[tokio::test]
    async fn a_message_or_batch_over_the_tier_limit_is_refused_with_403() {
        let mut config = ServiceBusConfig::new(&["a"], 3);
        config.max_message_bytes = 1024;
        let fake = ServiceBusFake::start(config).await;
        let big = format!(r#"[{{"Body":"{}"}}]"#, "x".repeat(1100));

        let (status, said) = post(&fake, "/events/messages", BATCH, &big).await;

        assert_eq!(status, StatusCode::FORBIDDEN);
        assert!(said.contains("exceeds the limit"), "{said}");
        assert!(fake.active("a").is_empty());
    }

    #[tokio::test]
    async fn a_missing_topic_or_subscription_is_gone() {
        let fake = ServiceBusFake::start(ServiceBusConfig::new(&["a"], 3)).await;

        let (topic, _) = post(&fake, "/other/messages", BATCH, r#"[{"Body":"x"}]"#).await;
        let (subscription, _) = post(
            &fake,
            "/events/subscriptions/nope/messages/head?timeout=1",
            "text/plain",
            "",
        )
        .await;

        assert_eq!(topic, StatusCode::GONE);
        assert_eq!(subscription, StatusCode::GONE);
    }

    #[tokio::test]
    async fn duplicates_are_dropped_only_with_duplicate_detection() {
        for detection in [true, false] {
            let mut config = ServiceBusConfig::new(&["a"], 3);
            config.duplicate_detection = detection;
            let fake = ServiceBusFake::start(config).await;
            let batch = r#"[{"Body":"x","BrokerProperties":{"MessageId":"same"}}]"#;

            for _ in 0..2 {
                let (status, _) = post(&fake, "/events/messages", BATCH, batch).await;
                assert_eq!(status, StatusCode::CREATED, "accepted either way");
            }

            let expected = if detection { 1 } else { 2 };
            assert_eq!(fake.active("a").len(), expected, "detection {detection}");
        }
    }

    #[tokio::test]
    async fn receives_over_the_entitys_limit_are_refused() {
        let mut config = ServiceBusConfig::new(&["a"], 3);
        config.max_concurrent_receives = 1;
        let fake = Arc::new(ServiceBusFake::start(config).await);
        let waiting = {
            let fake = fake.clone();
            tokio::spawn(async move {
                post(
                    &fake,
                    "/events/subscriptions/a/messages/head?timeout=3",
                    "text/plain",
                    "",
                )
                .await
            })
        };
        let deadline = tokio::time::Instant::now() + conformance::WAIT;
        while fake.most_receiving() < 1 {
            assert!(
                tokio::time::Instant::now() < deadline,
                "the first receive never waited"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }

        let (second, _) = post(
            &fake,
            "/events/subscriptions/a/messages/head?timeout=1",
            "text/plain",
            "",
        )
        .await;

        assert_eq!(second, StatusCode::FORBIDDEN);
        assert_eq!(waiting.await.unwrap().0, StatusCode::NO_CONTENT);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_page_goes_as_few_batches_each_message_keeping_its_event_id_and_trace() {
    let fake = ServiceBusFake::start(ServiceBusConfig::new(&["a"], 3)).await;
    let bus: Arc<dyn EventBus> = Arc::new(adapter_with(
        &fake,
        &fake.config.key,
        conformance::policy(),
        |s| {
            s.max_batch_bytes = 64 * 1024;
        },
    ));
    let mut sent = conformance::events(500);
    sent[7].metadata.traceparent =
        Some("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01".into());
    let size: usize = sent
        .iter()
        .map(|e| serde_json::to_string(e).unwrap().len())
        .sum();

    conformance::settled(conformance::publish(&bus, &sent).await).await;

    let requests = fake.send_requests();
    assert!(
        requests > 1,
        "{size} bytes of events do not fit one 64 KiB batch"
    );
    assert!(
        requests <= size / (32 * 1024) + 2,
        "{requests} requests for {size} bytes: batches are filled"
    );
    assert_eq!(
        fake.active("a"),
        sent.iter()
            .map(|e| e.event_id.to_string())
            .collect::<Vec<_>>(),
        "every event once, in order, its MessageId the event id"
    );
    assert_eq!(
        fake.user_properties("a", &sent[7].event_id.to_string()),
        Some(serde_json::json!({"Diagnostic-Id": sent[7].metadata.traceparent}))
    );
    let a = conformance::spawn_consumer(bus.clone(), "a", conformance::ack_all).await;
    conformance::eventually("a has every event", || a.seen().len() >= 500).await;
    let seen = a.seen();
    let traced = seen
        .iter()
        .find(|s| s.event.event_id == sent[7].event_id)
        .unwrap();
    assert_eq!(traced.event, sent[7], "the event comes back whole");
    a.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_event_too_large_for_a_message_is_refused_before_sending() {
    let fake = ServiceBusFake::start(ServiceBusConfig::new(&["a"], 3)).await;
    let bus = adapter_with(&fake, &fake.config.key, conformance::policy(), |s| {
        s.max_batch_bytes = 2048;
    });
    let mut sent = conformance::events(1);
    sent[0].payload = domain::envelope::Payload::parse(
        serde_json::json!({ "note": "x".repeat(4096) }).to_string(),
    )
    .unwrap();

    let refused = bus.publish(sent).await.err();

    assert!(
        matches!(refused, Some(BusError::Unavailable(ref why)) if why.contains("does not fit")),
        "{refused:?}"
    );
    assert_eq!(fake.send_requests(), 0, "nothing was sent");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_topic_fails_the_receipt_saying_so() {
    let fake = ServiceBusFake::start(ServiceBusConfig::new(&["a"], 3)).await;
    let mut config = fake.config.clone();
    config.topic = "not-there".into();
    let bus = {
        let subscriptions: Vec<&str> = config.subscriptions.iter().map(String::as_str).collect();
        let mut settings = ServiceBusSettings::new(
            config.namespace.clone(),
            config.topic.clone(),
            config.key_name.clone(),
            SasKey::new(config.key.clone()),
            &subscriptions,
            conformance::policy(),
        );
        settings.base_url = Some(fake.base_url.clone());
        ServiceBusTopic::connect(settings).unwrap()
    };

    let receipt = bus.publish(conformance::events(1)).await.unwrap();
    let result = tokio::time::timeout(conformance::WAIT, receipt)
        .await
        .unwrap();

    assert!(
        matches!(result, Err(BusError::Unavailable(ref why)) if why.contains("410") && why.contains("no such topic")),
        "{result:?}"
    );
}

/// A connection that accepts and never answers (a stuck load balancer, a half-open link)
/// fails the request after the request timeout instead of stopping the relay for good.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_that_never_answers_fails_the_request_after_its_timeout() {
    let fake = ServiceBusFake::start(ServiceBusConfig::new(&["a"], 3)).await;
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = silent.local_addr().unwrap();
    let held = tokio::spawn(async move {
        let mut open = Vec::new();
        while let Ok((socket, _)) = silent.accept().await {
            open.push(socket);
        }
    });
    let bus = adapter_with(&fake, &fake.config.key, conformance::policy(), |s| {
        s.base_url = Some(format!("http://{address}"));
        s.request_timeout = Duration::from_secs(1);
    });

    let receipt = bus.publish(conformance::events(1)).await.unwrap();
    let result = tokio::time::timeout(conformance::WAIT, receipt)
        .await
        .expect("the receipt resolves instead of hanging");

    assert!(
        matches!(result, Err(BusError::Unavailable(ref why)) if why.contains("send a batch")),
        "{result:?}"
    );
    held.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_handle_keeps_several_receives_in_flight() {
    let fake = ServiceBusFake::start(ServiceBusConfig::new(&["a"], 3)).await;
    let bus: Arc<dyn EventBus> = Arc::new(adapter_with(
        &fake,
        &fake.config.key,
        conformance::policy(),
        |s| {
            s.receivers = 8;
        },
    ));
    let sent = conformance::events(40);

    let a = conformance::spawn_consumer(bus.clone(), "a", conformance::ack_all).await;
    conformance::eventually("8 receives wait at once", || fake.most_receiving() >= 8).await;
    conformance::settled(conformance::publish(&bus, &sent).await).await;
    conformance::eventually("a has every event", || a.seen().len() >= 40).await;
    tokio::time::sleep(conformance::QUIET).await;

    assert!(!bus.keeps_order(), "several receives answer in any order");
    conformance::assert_each_once(&a.seen(), &conformance::event_ids(&sent));
    assert!(a.seen().iter().all(|s| s.attempt == 1));
    a.stop().await;
    assert!(
        fake.active("a").is_empty(),
        "every completion arrived by the stop"
    );
    assert_eq!(
        fake.most_receiving(),
        8,
        "never more than the configured receives"
    );
}

/// Messages received ahead of a busy consumer keep their locks while they wait: when the
/// consumer gets to them they are still their first delivery.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_waiting_for_a_busy_consumer_keep_their_locks() {
    let fake = ServiceBusFake::start(ServiceBusConfig::new(&["a"], 3)).await;
    let lock = fake.config.lock_duration;
    let bus: Arc<dyn EventBus> = Arc::new(adapter_with(
        &fake,
        &fake.config.key,
        conformance::policy(),
        |s| {
            s.receivers = 4;
        },
    ));
    let sent = conformance::events(4);
    let mut handle = bus.subscribe("a").await.unwrap();
    conformance::settled(conformance::publish(&bus, &sent).await).await;

    let mut deliveries = Vec::new();
    let first = tokio::time::timeout(conformance::WAIT, handle.next())
        .await
        .unwrap()
        .unwrap();
    deliveries.push(first);
    // The consumer is busy with the first for three lock durations, keeping its lock as a
    // consumer does; the other three wait in the handle.
    let busy_until = tokio::time::Instant::now() + lock * 3;
    while tokio::time::Instant::now() < busy_until {
        deliveries[0].settle.keep().await;
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    for _ in 0..3 {
        let next = tokio::time::timeout(conformance::WAIT, handle.next())
            .await
            .unwrap()
            .unwrap();
        deliveries.push(next);
    }

    assert!(
        deliveries[1..].iter().all(|d| d.attempt == 1),
        "the waiting ones were not redelivered: {:?}",
        deliveries.iter().map(|d| d.attempt).collect::<Vec<_>>()
    );
    for delivery in deliveries {
        delivery.settle.ack().await;
    }
    handle.stop().await;
    assert!(fake.dead_lettered("a").is_empty());
}
