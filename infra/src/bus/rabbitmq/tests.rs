//! The RabbitMQ adapter's rules that need no broker: its URL, its names, its copies.
//! `server_tests.rs` has the rest, against a real broker.

use super::*;

#[test]
fn the_broker_address_comes_from_the_url_with_the_default_port() {
    use super::broker_address;
    assert_eq!(
        broker_address("amqp://guest:guest@127.0.0.1:5672/%2f").as_deref(),
        Some("127.0.0.1:5672")
    );
    assert_eq!(
        broker_address("amqps://u:p@broker.example/vh?x=1").as_deref(),
        Some("broker.example:5671")
    );
    assert_eq!(
        broker_address("amqp://[::1]/").as_deref(),
        Some("[::1]:5672")
    );
    assert_eq!(
        broker_address("amqp://[::1]:5673").as_deref(),
        Some("[::1]:5673")
    );
    assert_eq!(broker_address("amqp:///"), None);
}
#[test]
fn the_prefix_is_ours_and_the_rest_of_the_url_is_lapins() {
    let plain = Endpoint::parse("amqp://u:secret@h:5672/%2f").unwrap();
    let prefixed = Endpoint::parse("amqp://u:secret@h:5672/v?heartbeat=10&prefix=ci-1").unwrap();
    let only = Endpoint::parse("amqp://h/%2f?prefix=x").unwrap();

    assert_eq!(
        (plain.url.as_str(), plain.prefix.as_str()),
        ("amqp://u:secret@h:5672/%2f", "orderflow")
    );
    assert_eq!(prefixed.url, "amqp://u:secret@h:5672/v?heartbeat=10");
    assert_eq!(prefixed.prefix, "ci-1");
    assert_eq!(prefixed.shown, "amqp://u:***@h:5672/v?heartbeat=10");
    assert_eq!(
        (only.url.as_str(), only.prefix.as_str()),
        ("amqp://h/%2f", "x")
    );
    assert!(Endpoint::parse("amqp://h/?prefix=a b").is_err());
    assert!(Endpoint::parse("amqp://h/?prefix=").is_err());
}

#[test]
fn retry_queues_are_named_after_their_delays() {
    let policy = RetryPolicy {
        max_attempts: 4,
        base_delay: Duration::from_millis(100),
    };
    let topology = Topology::new("p", &["a", "a"], policy).unwrap();
    let names = topology.find("a").unwrap();

    let queues: Vec<_> = topology
        .retry_queues(&names)
        .into_iter()
        .map(|(q, _)| q)
        .collect();

    assert_eq!(topology.subscriptions.len(), 1, "duplicates collapse");
    assert_eq!(
        queues,
        ["p.a.retry.100ms", "p.a.retry.200ms", "p.a.retry.400ms"]
    );
    assert_eq!(names.retry(3, &policy), "p.a.retry.400ms");
    let huge = RetryPolicy {
        max_attempts: 1_000,
        ..policy
    };
    let capped = Topology::new("p", &["a"], huge).unwrap();
    assert_eq!(
        capped.retry_queues(&names).len(),
        17,
        "delays stop growing after attempt 17"
    );
    assert!(
        Topology::new(&"p".repeat(250), &["a"], policy).is_err(),
        "names over 255 bytes"
    );
}

#[test]
fn a_forwarded_copy_drops_the_brokers_history_and_counts_the_attempt() {
    let mut headers = FieldTable::default();
    headers.insert("event_type".into(), long_string("OrderPlaced"));
    headers.insert("x-death".into(), AMQPValue::Void);
    headers.insert("x-first-death-queue".into(), long_string("q"));
    headers.insert(DELIVERY_COUNT.into(), AMQPValue::LongLongInt(2));
    let original = BasicProperties::default()
        .with_message_id("id".into())
        .with_headers(headers);

    let copy = forwarded(&original, 3, Some(("a", "boom")));

    assert_eq!(header_u32(&copy, ATTEMPT), Some(3));
    assert_eq!(header_string(&copy, REASON).as_deref(), Some("boom"));
    assert_eq!(
        header_string(&copy, "event_type").as_deref(),
        Some("OrderPlaced")
    );
    assert!(
        header(&copy, "x-death").is_none()
            && header(&copy, "x-first-death-queue").is_none()
            && header(&copy, DELIVERY_COUNT).is_none()
    );
    assert_eq!(
        copy.message_id().as_ref().map(ShortString::as_str),
        Some("id")
    );
    assert_eq!(clip("héllo", 2), "h", "clipped at a character boundary");
    assert!(
        header_millis(&copy, DEAD_AT).is_some(),
        "when it was parked"
    );

    let again = redriven(&copy);
    assert_eq!(
        header_u32(&again, ATTEMPT),
        Some(1),
        "a first delivery again"
    );
    assert!(
        [REASON, SUBSCRIPTION, DEAD_AT]
            .iter()
            .all(|key| header(&again, key).is_none()),
        "a re-driven copy is no dead letter"
    );
    assert_eq!(
        again.message_id().as_ref().map(ShortString::as_str),
        Some("id"),
        "the same message id"
    );
}
