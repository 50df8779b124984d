//! The RabbitMQ adapter against the broker at `ORDERFLOW_TEST_AMQP` (default
//! `amqp://guest:guest@127.0.0.1:5672/%2f`), each case under a fresh prefix whose exchange and
//! queues are deleted afterwards. A broker that does not answer fails the tests. They build with
//! the `servers` feature, which `cargo test --workspace` turns on.

use std::process::Command;

use super::*;
use crate::bus::conformance::{self, BusFixture};

const ENV: &str = "ORDERFLOW_TEST_AMQP";

const DEFAULT_URL: &str = "amqp://guest:guest@127.0.0.1:5672/%2f";

/// A bus on the test broker under a fresh prefix, whose exchange and queues are deleted when
/// the case ends. Fails (never skips) when the broker does not answer.
pub(crate) struct RabbitFixture {
    pub(crate) bus: Arc<RabbitBus>,
}

impl BusFixture for RabbitFixture {
    fn bus(&self) -> Arc<dyn EventBus> {
        self.bus.clone()
    }

    async fn teardown(self) {
        self.bus.close().await;
        if let Err(error) = self.bus.delete_topology().await {
            tracing::warn!(%error, "test topology left behind");
        }
    }
}

pub(crate) async fn rabbit_fixture(
    subscriptions: &'static [&'static str],
    policy: RetryPolicy,
) -> RabbitFixture {
    let base = std::env::var(ENV).unwrap_or_else(|_| DEFAULT_URL.to_owned());
    let prefix = format!("test-{}", Uuid::new_v4().simple());
    let separator = if base.contains('?') { '&' } else { '?' };
    let url = format!("{base}{separator}prefix={prefix}");
    match RabbitBus::connect(&url, subscriptions, policy).await {
        Ok(bus) => RabbitFixture { bus: Arc::new(bus) },
        Err(error) => panic!(
            "RabbitMQ at {} did not answer ({error}); start it, or point {ENV} at one",
            redact(&base)
        ),
    }
}

/// Closes this test's own connections (matched by the prefix in their names) the way a
/// broker restart or a network cut would, without touching anyone else's.
fn force_close_connections(prefix: &str) -> usize {
    let listed = Command::new("rabbitmqctl")
        .args([
            "list_connections",
            "--quiet",
            "--no-table-headers",
            "pid",
            "client_properties",
        ])
        .output()
        .unwrap_or_else(|e| panic!("rabbitmqctl is needed to cut connections: {e}"));
    assert!(
        listed.status.success(),
        "rabbitmqctl list_connections failed: {listed:?}"
    );
    let listing = String::from_utf8_lossy(&listed.stdout);
    let pids: Vec<&str> = listing
        .lines()
        .filter(|line| line.contains(prefix))
        .filter_map(|line| line.split_whitespace().next())
        .collect();
    for pid in &pids {
        let closed = Command::new("rabbitmqctl")
            .args(["close_connection", pid, "orderflow test: cut"])
            .output()
            .expect("rabbitmqctl close_connection");
        assert!(
            closed.status.success(),
            "rabbitmqctl close_connection failed: {closed:?}"
        );
    }
    pids.len()
}

/// A connection asks for 16 KiB frames unless its URL names a size: lapin keeps 64 frames
/// of buffers per connection, 8 MiB at the broker's default of 128 KiB.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_ask_for_small_frames_unless_the_url_names_a_size() {
    let base = std::env::var(ENV).unwrap_or_else(|_| DEFAULT_URL.to_owned());
    let separator = if base.contains('?') { '&' } else { '?' };
    let small = open_connection(&base, "the test broker", "frames-default")
        .await
        .expect("connect");
    let named = format!("{base}{separator}frame_max=65536");
    let big = open_connection(&named, "the test broker", "frames-named")
        .await
        .expect("connect");

    let sizes = (
        small.configuration().frame_max(),
        big.configuration().frame_max(),
    );
    for connection in [small, big] {
        let _ = connection.close(200, "test done".into()).await;
    }
    assert_eq!(sizes, (FRAME_MAX, 65536));
}

/// Where the aborting consumer below finds its broker and prefix.
const CHILD_URL: &str = "ORDERFLOW_TEST_ABORTING_CONSUMER";

/// Not a test of its own: a consumer process whose handler aborts the process on the first
/// delivery it gets, started by the test below; it ends normally when nothing comes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a child process of a_message_that_kills_its_consumer_every_time_is_parked"]
async fn aborting_consumer() {
    let Ok(url) = std::env::var(CHILD_URL) else {
        return;
    };
    let bus = RabbitBus::connect(&url, &["a"], conformance::policy())
        .await
        .expect("the child connects");
    let mut subscription = bus.subscribe("a").await.expect("the child subscribes");
    if let Ok(Some(_delivery)) =
        tokio::time::timeout(Duration::from_secs(3), subscription.next()).await
    {
        std::process::abort();
    }
}

/// A message whose handler kills the process every time (a crash, not an error the
/// handler returns) is parked in the dead-letter queue after the policy's attempts, by
/// the quorum queue's delivery limit: on classic queues it came back forever.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_that_kills_its_consumer_every_time_is_parked() {
    use std::os::unix::process::ExitStatusExt;
    let policy = conformance::policy();
    let fixture = rabbit_fixture(&["a"], policy).await;
    let bus = fixture.bus.clone();
    let outcome = tokio::spawn(async move {
        let base = std::env::var(ENV).unwrap_or_else(|_| DEFAULT_URL.to_owned());
        let separator = if base.contains('?') { '&' } else { '?' };
        let url = format!("{base}{separator}prefix={}", bus.prefix());
        let poison = conformance::events(1);
        bus.publish(poison.clone()).await.unwrap().await.unwrap();

        let mut aborted = 0;
        for _ in 0..policy.max_attempts + 2 {
            let url = url.clone();
            let status = tokio::task::spawn_blocking(move || {
                Command::new(std::env::current_exe().unwrap())
                    .args([
                        "--exact",
                        "bus::rabbitmq::server_tests::aborting_consumer",
                        "--ignored",
                        "--test-threads=1",
                    ])
                    .env(CHILD_URL, url)
                    .stdout(std::process::Stdio::null())
                    .stderr(std::process::Stdio::null())
                    .status()
                    .expect("the child starts")
            })
            .await
            .unwrap();
            match status.signal() {
                Some(6) => aborted += 1,
                _ => {
                    assert!(status.success(), "the child failed otherwise: {status}");
                    break;
                }
            }
        }

        assert_eq!(
            aborted, policy.max_attempts,
            "the message killed its consumer once per allowed delivery, then was parked"
        );
        let dead = bus.dead_letters().await.unwrap();
        assert_eq!(dead.len(), 1, "{dead:?}");
        assert_eq!(dead[0].event, poison[0]);
        assert_eq!(dead[0].subscription, "a");
        assert_eq!(dead[0].attempts, policy.max_attempts);
        assert!(
            dead[0].reason.contains("delivery limit"),
            "{}",
            dead[0].reason
        );
    })
    .await;
    fixture.teardown().await;
    if let Err(panic) = outcome {
        std::panic::resume_unwind(panic.into_panic());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publishing_and_consuming_survive_a_lost_connection() {
    let fixture = rabbit_fixture(&["a", "b"], conformance::policy()).await;
    let bus = fixture.bus.clone();
    let prefix = fixture.bus.prefix().to_owned();
    let outcome = tokio::spawn(async move {
        let bus: Arc<dyn EventBus> = bus;
        let consumer = conformance::spawn_consumer(bus.clone(), "a", conformance::ack_all).await;
        let mut holder = bus.subscribe("b").await.expect("subscribe b");
        let before = conformance::events(3);
        let held = before[0].clone();
        bus.publish(before.clone())
            .await
            .expect("publish")
            .await
            .expect("receipt");
        conformance::eventually("a sees the first batch", || {
            conformance::ids(&consumer.seen()) == conformance::event_ids(&before)
        })
        .await;
        let unsettled = tokio::time::timeout(conformance::WAIT, holder.next())
            .await
            .expect("b gets a delivery")
            .expect("b is open");
        assert_eq!(unsettled.event.event_id, held.event_id);

        let cut = tokio::task::spawn_blocking(move || force_close_connections(&prefix))
            .await
            .expect("rabbitmqctl task");
        assert_eq!(
            cut, 2,
            "the publishing and the consuming connection were cut"
        );

        // The delivery held across the cut cannot be acked: its channel is gone. The broker
        // requeued it, and the same subscription handle gets it again after reconnecting.
        unsettled.settle.ack().await;
        let after = conformance::events(2);
        let deadline = tokio::time::Instant::now() + conformance::WAIT;
        loop {
            // Like the relay: a failed publish or receipt is retried from the same events.
            let published = match bus.publish(after.clone()).await {
                Ok(receipt) => receipt.await,
                Err(error) => Err(error),
            };
            match published {
                Ok(()) => break,
                Err(error) if tokio::time::Instant::now() < deadline => {
                    tracing::debug!(%error, "publish after the cut failed; retrying");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Err(error) => panic!("publishing never recovered: {error}"),
            }
        }
        let mut expected = conformance::event_ids(&before);
        expected.extend(conformance::event_ids(&after));
        conformance::eventually("a keeps consuming after the cut", || {
            let seen = conformance::ids(&consumer.seen());
            expected.iter().all(|id| seen.contains(id))
        })
        .await;
        let again = loop {
            let delivery = tokio::time::timeout(conformance::WAIT, holder.next())
                .await
                .expect("b gets the held delivery again")
                .expect("b is still open");
            if delivery.event.event_id == held.event_id {
                break delivery;
            }
            delivery.settle.ack().await;
        };
        assert_eq!(again.event, held, "the unsettled delivery came back intact");
        // The broker cannot tell a cut from a consumer that died on the message, and a
        // quorum queue counts both: the delivery limit parks a message that kills its
        // consumer every time.
        assert_eq!(
            again.attempt, 2,
            "a redelivery after a cut counts as the broker's second delivery"
        );
        again.settle.ack().await;
        consumer.stop().await;
    })
    .await;
    fixture.teardown().await;
    if let Err(panic) = outcome {
        std::panic::resume_unwind(panic.into_panic());
    }
}
