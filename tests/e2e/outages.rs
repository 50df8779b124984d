//! Engines that go away and come back, seen from the adapters: RabbitMQ unreachable behind a
//! link the test severs (the shared broker itself is never stopped).

use std::sync::Arc;
use std::time::Duration;

use infra::bus::{EventBus, RabbitBus, RetryPolicy};
use orderflow_tests::process::Severable;
use tokio::time::Instant;

fn amqp() -> String {
    std::env::var("ORDERFLOW_TEST_AMQP")
        .unwrap_or_else(|_| "amqp://guest:guest@127.0.0.1:5672/%2f".to_owned())
}

/// A consumer whose broker was unreachable for 12 s (its reconnect backoff has grown to its
/// 5 s cap by then) consumes again within moments of the broker's return, not at the end of
/// its current backoff: it knocks on the port every 200 ms.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_consumer_is_back_soon_after_the_broker_is() {
    let base = amqp();
    let (authority, vhost) = base["amqp://".len()..].split_once('/').unwrap();
    let (credentials, host) = authority.rsplit_once('@').unwrap();
    let link = Severable::to(host).await;
    let prefix = format!("test-{}", uuid::Uuid::new_v4().simple());
    let linked = format!(
        "amqp://{credentials}@127.0.0.1:{}/{vhost}?prefix={prefix}",
        link.port
    );
    let direct = format!("{base}?prefix={prefix}");
    let policy = RetryPolicy::default();
    let consumer_bus = RabbitBus::connect(&linked, &["a"], policy).await.unwrap();
    let publisher = Arc::new(RabbitBus::connect(&direct, &["a"], policy).await.unwrap());
    let mut subscription = consumer_bus.subscribe("a").await.unwrap();
    let first = infra::bus::conformance::events(1);
    publisher
        .publish(first.clone())
        .await
        .unwrap()
        .await
        .unwrap();
    let delivery = tokio::time::timeout(Duration::from_secs(20), subscription.next())
        .await
        .expect("the first delivery in time")
        .unwrap();
    delivery.settle.ack().await;

    let second = infra::bus::conformance::events(1);
    let second_id = second[0].event_id;
    link.sever();
    let waiting = tokio::spawn(async move {
        // The first event may come again (its ack may not have reached the broker before the
        // link went): at least once. The second is the one that tells.
        loop {
            let delivery = subscription.next().await;
            match delivery {
                Some(d) if d.event.event_id != second_id => d.settle.ack().await,
                other => return (Instant::now(), other),
            }
        }
    });
    tokio::time::sleep(Duration::from_secs(12)).await;
    publisher
        .publish(second.clone())
        .await
        .unwrap()
        .await
        .unwrap();
    link.restore();
    let restored = Instant::now();
    let (arrived, delivery) = tokio::time::timeout(Duration::from_secs(30), waiting)
        .await
        .expect("a delivery after the broker's return")
        .unwrap();

    let delivery = delivery.expect("the subscription is open");
    assert_eq!(delivery.event, second[0]);
    delivery.settle.ack().await;
    let healed = arrived - restored;
    assert!(
        healed < Duration::from_secs(3),
        "consuming again {healed:?} after the broker came back (a 5 s backoff would be up to 5 s)"
    );
    consumer_bus.close().await;
    publisher.delete_topology().await.unwrap();
    publisher.close().await;
}
