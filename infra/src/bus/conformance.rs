//! The conformance suite of the [`EventBus`] port: what every topic must do, written once.
//!
//! Each case is a `pub async fn` that takes a fresh bus with the subscriptions [`SUBSCRIPTIONS`]
//! and the retry [`policy`], and panics with a message that says which promise broke.
//! [`event_bus_conformance!`](crate::event_bus_conformance) turns them into one test per case
//! for an adapter, from an async factory `fn(&'static [&'static str], RetryPolicy) -> F` where
//! `F:` [`BusFixture`]:
//!
//! ```ignore
//! async fn fixture(subscriptions: &'static [&'static str], policy: RetryPolicy) -> Arc<dyn EventBus> {
//!     Arc::new(MemoryBus::new(subscriptions, policy))
//! }
//!
//! mod conformance {
//!     infra::event_bus_conformance!(super::fixture);
//! }
//! ```
//!
//! Adapters differ in when a receipt resolves (the in-process topic waits until every
//! subscription has settled the batch; a broker answers once it holds the batch durably), so
//! every case runs a consumer on every subscription and asserts on what the consumers see,
//! within [`WAIT`]. A fixture's [`teardown`](BusFixture::teardown) runs after the case, passed
//! or failed, so that a shared broker is left clean. The calling crate needs `tokio` with
//! `macros` and `rt-multi-thread`.

use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::Utc;
use domain::{EventMetadata, RecordedEvent};
use serde_json::json;
use tokio::sync::watch;
use tokio::time::Instant;
use uuid::Uuid;

use super::{BusError, DeadLetter, DeadLetterFilter, EventBus, Receipt, RetryPolicy};

/// The subscriptions every case's bus is built with.
pub const SUBSCRIPTIONS: &[&str] = &["a", "b"];
/// How long a case waits for what it expects to see.
pub const WAIT: Duration = Duration::from_secs(20);
/// How long a case watches for deliveries that should not come.
pub const QUIET: Duration = Duration::from_millis(500);

/// Three deliveries in all, 50 ms then 100 ms apart: quick, and long enough to measure.
pub fn policy() -> RetryPolicy {
    RetryPolicy {
        max_attempts: 3,
        base_delay: Duration::from_millis(50),
    }
}

/// What a conformance factory yields: the bus under test, and what to clean up afterwards.
pub trait BusFixture: Send + 'static {
    fn bus(&self) -> Arc<dyn EventBus>;

    /// Runs after the case, passed or failed (say, to delete a broker's queues).
    fn teardown(self) -> impl Future<Output = ()> + Send
    where
        Self: Sized,
    {
        async {}
    }
}

impl BusFixture for Arc<dyn EventBus> {
    fn bus(&self) -> Arc<dyn EventBus> {
        self.clone()
    }
}

/// Expands to one `#[tokio::test]` per conformance case, each on a bus made by the given async
/// factory function (see the [module docs](crate::bus::conformance)).
#[macro_export]
macro_rules! event_bus_conformance {
    ($factory:path) => {
        $crate::event_bus_conformance!(@cases $factory;
            every_subscription_gets_every_event,
            a_failing_handler_is_retried_with_growing_delays,
            after_max_attempts_the_event_is_dead_lettered_with_the_last_reason,
            a_failure_no_retry_can_mend_is_parked_at_once,
            competing_consumers_see_each_event_once,
            an_unsettled_delivery_whose_consumer_goes_away_is_delivered_again,
            one_consumer_sees_publish_order,
            an_unknown_subscription_is_an_error,
            an_empty_batch_is_safe_at_once,
            an_outage_holds_deliveries_without_spending_their_attempts,
            a_consumer_stopping_during_an_outage_hands_its_deliveries_back,
            dead_letters_are_redriven_to_their_subscription_or_discarded,
            depths_count_waiting_messages_and_dead_letters,
        );
    };
    (@cases $factory:path; $($case:ident),+ $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $case() {
                let fixture = $factory(
                    $crate::bus::conformance::SUBSCRIPTIONS,
                    $crate::bus::conformance::policy(),
                )
                .await;
                $crate::bus::conformance::run(fixture, $crate::bus::conformance::$case).await;
            }
        )+
    };
}

/// Runs one case on the fixture's bus, then the fixture's teardown, then re-raises the case's
/// panic if it had one.
pub async fn run<X, C, F>(fixture: X, case: C)
where
    X: BusFixture,
    C: FnOnce(Arc<dyn EventBus>) -> F,
    F: Future<Output = ()> + Send + 'static,
{
    let outcome = tokio::spawn(case(fixture.bus())).await;
    fixture.teardown().await;
    if let Err(error) = outcome {
        match error.try_into_panic() {
            Ok(panic) => std::panic::resume_unwind(panic),
            Err(error) => panic!("the case did not finish: {error}"),
        }
    }
}

pub async fn every_subscription_gets_every_event(bus: Arc<dyn EventBus>) {
    let a = spawn_consumer(bus.clone(), "a", ack_all).await;
    let b = spawn_consumer(bus.clone(), "b", ack_all).await;
    let (first, second) = (events(3), events(2));

    let first_receipt = publish(&bus, &first).await;
    let second_receipt = publish(&bus, &second).await;
    settled(first_receipt).await;
    settled(second_receipt).await;

    let sent: Vec<RecordedEvent> = first.into_iter().chain(second).collect();
    for consumer in [&a, &b] {
        let name = &consumer.subscription;
        eventually(&format!("{name} has every event"), || {
            consumer.seen().len() >= sent.len()
        })
        .await;
        let seen = consumer.seen();
        let by_id: HashMap<Uuid, &Seen> = seen.iter().map(|s| (s.event.event_id, s)).collect();
        assert_eq!(
            seen.len(),
            sent.len(),
            "{name} got each event once: {seen:?}"
        );
        for event in &sent {
            let got = by_id
                .get(&event.event_id)
                .unwrap_or_else(|| panic!("{name} never got {}", event.event_id));
            assert_eq!(&got.event, event, "{name} got the event intact");
            assert_eq!(got.attempt, 1, "{name}: a first delivery is attempt 1");
        }
    }
    a.stop().await;
    b.stop().await;
}

pub async fn a_failing_handler_is_retried_with_growing_delays(bus: Arc<dyn EventBus>) {
    let policy = policy();
    let a = spawn_consumer(bus.clone(), "a", |_, attempt| {
        if attempt < 3 {
            Err(format!("failure {attempt}"))
        } else {
            Ok(())
        }
    })
    .await;
    let b = spawn_consumer(bus.clone(), "b", ack_all).await;
    let sent = events(1);

    settled(publish(&bus, &sent).await).await;
    eventually("a's third attempt", || a.seen().len() >= 3).await;
    tokio::time::sleep(QUIET).await;

    let seen = a.seen();
    let attempts: Vec<u32> = seen.iter().map(|s| s.attempt).collect();
    assert_eq!(attempts, [1, 2, 3], "attempts 1, 2, 3 and no more");
    assert!(
        seen.iter().all(|s| s.event == sent[0]),
        "every attempt carries the event intact"
    );
    // A little slack for clocks that count in milliseconds (a broker's TTL does).
    let slack = Duration::from_millis(5);
    for (n, pair) in (1..).zip(seen.windows(2)) {
        let gap = pair[1].at - pair[0].at;
        assert!(
            gap + slack >= policy.delay_after(n),
            "attempt {} came {gap:?} after attempt {n}, before the policy's {:?}",
            n + 1,
            policy.delay_after(n)
        );
    }
    assert_eq!(
        dead_letters(&bus).await,
        vec![],
        "a retried success is no dead letter"
    );
    a.stop().await;
    b.stop().await;
}

pub async fn after_max_attempts_the_event_is_dead_lettered_with_the_last_reason(
    bus: Arc<dyn EventBus>,
) {
    let a = spawn_consumer(bus.clone(), "a", |_, attempt| {
        Err(format!("failure {attempt}"))
    })
    .await;
    let b = spawn_consumer(bus.clone(), "b", ack_all).await;
    let sent = events(1);
    let before = Utc::now();

    settled(publish(&bus, &sent).await).await;
    let dead = first_dead_letters(&bus).await;
    tokio::time::sleep(QUIET).await;

    // A broker that chooses the reason itself says so; its reason must still say something.
    let reason = match dead.first() {
        Some(dead) if !bus.keeps_handler_reasons() && !dead.reason.is_empty() => {
            dead.reason.clone()
        }
        _ => "failure 3".into(),
    };
    let dead_at = dead.first().and_then(|d| d.dead_at);
    assert_parked_between(dead_at, before);
    let expected = DeadLetter {
        subscription: "a".into(),
        event: sent[0].clone(),
        attempts: 3,
        reason,
        dead_at,
    };
    assert_eq!(
        dead,
        vec![expected.clone()],
        "one dead letter with the last reason"
    );
    let attempts: Vec<u32> = a.seen().iter().map(|s| s.attempt).collect();
    assert_eq!(attempts, [1, 2, 3], "a dead letter is not delivered again");
    assert_eq!(
        dead_letters(&bus).await,
        vec![expected],
        "reading the dead letters does not take them away"
    );
    assert_eq!(b.seen().len(), 1, "another subscription is not affected");
    a.stop().await;
    b.stop().await;
}

/// A handler's failure that no retry can mend (an undecodable event) is dead-lettered on its
/// first attempt, through the real consumer, where the topic can dead-letter
/// ([`EventBus::parks_at_once`]); elsewhere (Service Bus over REST) it comes back at once, with
/// no retry delay, until its attempts are spent.
pub async fn a_failure_no_retry_can_mend_is_parked_at_once(bus: Arc<dyn EventBus>) {
    let calls = Arc::new(AtomicU64::new(0));
    let counted = calls.clone();
    let handler: super::Handler = Arc::new(move |_| {
        counted.fetch_add(1, Ordering::SeqCst);
        Box::pin(async {
            Err(eventlog::Failure {
                fault: eventlog::Fault::Permanent,
                reason: "undecodable".into(),
            })
        })
    });
    let (stop, stopped) = watch::channel(false);
    let subscription = bus.subscribe("a").await.expect("subscribe to a");
    let consumer = tokio::spawn(super::consume_with(
        "a",
        subscription,
        4,
        handler,
        Arc::new(super::Breakers::new()),
        stopped,
    ));
    let b = spawn_consumer(bus.clone(), "b", ack_all).await;
    let sent = events(1);

    settled(publish(&bus, &sent).await).await;
    let dead = first_dead_letters(&bus).await;
    tokio::time::sleep(QUIET).await;

    let attempts = if bus.parks_at_once() {
        1
    } else {
        policy().max_attempts
    };
    assert_eq!(dead.len(), 1, "{dead:?}");
    assert_eq!(dead[0].event, sent[0]);
    assert_eq!(dead[0].attempts, attempts, "{dead:?}");
    if bus.keeps_handler_reasons() {
        assert_eq!(dead[0].reason, "undecodable");
    }
    assert_eq!(calls.load(Ordering::SeqCst), u64::from(attempts));
    stop.send_replace(true);
    tokio::time::timeout(WAIT, consumer)
        .await
        .expect("the consumer stops")
        .expect("the consumer task");
    b.stop().await;
}

/// The dead letters as soon as there are any (failing the case after [`WAIT`]).
async fn first_dead_letters(bus: &Arc<dyn EventBus>) -> Vec<DeadLetter> {
    let deadline = Instant::now() + WAIT;
    loop {
        let dead = dead_letters(bus).await;
        if !dead.is_empty() {
            return dead;
        }
        assert!(Instant::now() < deadline, "nothing was dead-lettered");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A dead letter's time, where the topic records one, is between `before` and now (to the
/// second: brokers keep whole seconds).
fn assert_parked_between(dead_at: Option<chrono::DateTime<Utc>>, before: chrono::DateTime<Utc>) {
    if let Some(at) = dead_at {
        let earliest = before - chrono::Duration::seconds(1);
        let latest = Utc::now() + chrono::Duration::seconds(1);
        assert!(
            earliest <= at && at <= latest,
            "parked at {at}, not between {before} and now"
        );
    }
}

/// Dead letters are an operator's to act on: one re-driven goes back to its own subscription
/// only, as a first delivery of the same event; a discarded one is gone for good; a filter
/// selects a set; nothing is re-driven twice.
pub async fn dead_letters_are_redriven_to_their_subscription_or_discarded(bus: Arc<dyn EventBus>) {
    let mended = Arc::new(AtomicBool::new(false));
    let fixed = mended.clone();
    let a = spawn_consumer(bus.clone(), "a", move |_, attempt| {
        if fixed.load(Ordering::SeqCst) {
            Ok(())
        } else {
            Err(format!("not mended yet ({attempt})"))
        }
    })
    .await;
    let b = spawn_consumer(bus.clone(), "b", ack_all).await;
    let mut sent = events(3);
    sent[2].event_type = "OrderFlagged".into();
    let before = Utc::now();
    settled(publish(&bus, &sent).await).await;

    let deadline = Instant::now() + WAIT;
    let dead = loop {
        let dead = dead_letters(&bus).await;
        if dead.len() >= 3 {
            break dead;
        }
        assert!(Instant::now() < deadline, "three dead letters: {dead:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let mut listed: Vec<Uuid> = dead.iter().map(|d| d.event.event_id).collect();
    listed.sort();
    assert_eq!(listed, event_ids(&sent), "each event once");
    for letter in &dead {
        assert_eq!(
            (letter.subscription.as_str(), letter.attempts),
            ("a", 3),
            "{letter:?}"
        );
        assert!(!letter.reason.is_empty(), "a reason: {letter:?}");
        assert_parked_between(letter.dead_at, before);
    }
    mended.store(true, Ordering::SeqCst);
    let seen_before = a.seen().len();

    let redriven = bus
        .redrive(&DeadLetterFilter::one("a", sent[0].event_id))
        .await
        .unwrap_or_else(|e| panic!("redrive failed: {e}"));
    assert_eq!(
        redriven
            .iter()
            .map(|d| d.event.event_id)
            .collect::<Vec<_>>(),
        [sent[0].event_id],
        "one re-driven"
    );
    eventually("a gets the re-driven event again", || {
        a.seen().len() > seen_before
    })
    .await;
    let again = &a.seen()[seen_before];
    assert_eq!(again.event, sent[0], "the same event, unchanged");
    assert_eq!(again.attempt, 1, "a fresh retry budget");

    let discarded = bus
        .discard(
            &DeadLetterFilter::one("a", sent[1].event_id),
            "operator: the order was settled by hand",
        )
        .await
        .unwrap_or_else(|e| panic!("discard failed: {e}"));
    assert_eq!(
        discarded
            .iter()
            .map(|d| d.event.event_id)
            .collect::<Vec<_>>(),
        [sent[1].event_id],
        "one discarded"
    );
    let left = dead_letters(&bus).await;
    assert_eq!(
        left.iter().map(|d| d.event.event_id).collect::<Vec<_>>(),
        [sent[2].event_id],
        "the re-driven and the discarded are no longer dead"
    );

    let elsewhere = DeadLetterFilter {
        subscription: Some("b".into()),
        ..DeadLetterFilter::default()
    };
    assert_eq!(
        bus.redrive(&elsewhere).await.map(|d| d.len()),
        Ok(0),
        "b has none"
    );
    let flagged = DeadLetterFilter {
        event_type: Some("OrderFlagged".into()),
        ..DeadLetterFilter::default()
    };
    let redriven = bus
        .redrive(&flagged)
        .await
        .unwrap_or_else(|e| panic!("redrive failed: {e}"));
    assert_eq!(redriven.len(), 1, "the filtered set: {redriven:?}");
    eventually("a gets the flagged event again", || {
        a.seen()[seen_before..]
            .iter()
            .any(|s| s.event.event_id == sent[2].event_id)
    })
    .await;
    assert_eq!(
        bus.redrive(&DeadLetterFilter::default())
            .await
            .map(|d| d.len()),
        Ok(0),
        "nothing is left to re-drive"
    );

    tokio::time::sleep(QUIET).await;
    let after: Vec<Uuid> = ids(&a.seen()[seen_before..]);
    assert_eq!(
        after,
        [sent[0].event_id, sent[2].event_id],
        "each re-driven event once, the discarded one never"
    );
    assert_eq!(
        b.seen().len(),
        3,
        "another subscription gets no re-driven copy"
    );
    assert_eq!(dead_letters(&bus).await, vec![], "no dead letter left");
    a.stop().await;
    b.stop().await;
}

/// Where the topic counts its queues ([`EventBus::depths`]): messages nobody takes are
/// `ready`, and once a consumer has failed them to the end they are `dead`, per subscription.
pub async fn depths_count_waiting_messages_and_dead_letters(bus: Arc<dyn EventBus>) {
    let Some(before) = bus.depths().await.expect("depths") else {
        return; // this topic cannot count its queues
    };
    let count = |depths: &[super::QueueDepth], name: &str| {
        depths
            .iter()
            .find(|d| d.subscription == name)
            .map(|d| (d.ready, d.dead))
    };
    assert_eq!(count(&before, "a"), Some((0, 0)), "{before:?}");
    let b = spawn_consumer(bus.clone(), "b", ack_all).await;
    // The queue exists (a broker declares it on subscribing), and nobody takes from it.
    drop(bus.subscribe("a").await.expect("subscribe"));
    // Not waiting for the receipt: the in-process topic's waits for every subscription's ack.
    let _receipt = publish(&bus, &events(2)).await;
    let deadline = Instant::now() + WAIT;
    loop {
        let depths = bus.depths().await.expect("depths").expect("still counted");
        if count(&depths, "a") == Some((2, 0)) && count(&depths, "b") == Some((0, 0)) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "a should hold 2 ready messages and b none: {depths:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let a = spawn_consumer(bus.clone(), "a", |_, attempt| {
        Err(format!("failure {attempt}"))
    })
    .await;
    let deadline = Instant::now() + WAIT;
    loop {
        let depths = bus.depths().await.expect("depths").expect("still counted");
        if count(&depths, "a") == Some((0, 2)) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "a's two messages should be dead letters: {depths:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    a.stop().await;
    b.stop().await;
}

pub async fn competing_consumers_see_each_event_once(bus: Arc<dyn EventBus>) {
    let one = spawn_consumer(bus.clone(), "a", ack_all).await;
    let two = spawn_consumer(bus.clone(), "a", ack_all).await;
    let b = spawn_consumer(bus.clone(), "b", ack_all).await;
    let batches: Vec<Vec<RecordedEvent>> = (0..4).map(|_| events(25)).collect();

    let mut receipts = Vec::new();
    for batch in &batches {
        receipts.push(publish(&bus, batch).await);
    }
    for receipt in receipts {
        settled(receipt).await;
    }
    let total = 100;
    eventually("the competing consumers have every event", || {
        one.seen().len() + two.seen().len() >= total
    })
    .await;
    tokio::time::sleep(QUIET).await;

    let mut seen: Vec<Uuid> = ids(&one.seen());
    seen.extend(ids(&two.seen()));
    seen.sort_unstable();
    let mut sent: Vec<Uuid> = batches.iter().flat_map(|b| event_ids(b)).collect();
    sent.sort_unstable();
    assert_eq!(seen, sent, "together they saw each event exactly once");
    one.stop().await;
    two.stop().await;
    b.stop().await;
}

pub async fn an_unsettled_delivery_whose_consumer_goes_away_is_delivered_again(
    bus: Arc<dyn EventBus>,
) {
    let b = spawn_consumer(bus.clone(), "b", ack_all).await;
    let mut going_away = bus.subscribe("a").await.expect("subscribe to a");
    let sent = events(1);

    let receipt = publish(&bus, &sent).await;
    let delivery = tokio::time::timeout(WAIT, going_away.next())
        .await
        .expect("a delivery in time")
        .expect("the subscription is open");
    assert_eq!(delivery.event, sent[0]);
    drop(delivery);
    drop(going_away);

    let a = spawn_consumer(bus.clone(), "a", ack_all).await;
    eventually("the event is delivered again", || !a.seen().is_empty()).await;
    settled(receipt).await;
    tokio::time::sleep(QUIET).await;

    let seen = a.seen();
    assert_eq!(seen.len(), 1, "delivered again once: {seen:?}");
    assert_eq!(seen[0].event, sent[0], "the same event, intact");
    assert!(
        (1..=2).contains(&seen[0].attempt),
        "a redelivery (attempt 1) or a counted failure (attempt 2), got {}",
        seen[0].attempt
    );
    assert_eq!(dead_letters(&bus).await, vec![]);
    a.stop().await;
    b.stop().await;
}

pub async fn one_consumer_sees_publish_order(bus: Arc<dyn EventBus>) {
    let a = spawn_consumer(bus.clone(), "a", ack_all).await;
    let b = spawn_consumer(bus.clone(), "b", ack_all).await;
    let batches: Vec<Vec<RecordedEvent>> = (0..3).map(|_| events(10)).collect();

    let mut receipts = Vec::new();
    for batch in &batches {
        receipts.push(publish(&bus, batch).await);
    }
    for receipt in receipts {
        settled(receipt).await;
    }
    eventually("a has every event", || a.seen().len() >= 30).await;

    let sent: Vec<Uuid> = batches.iter().flat_map(|b| event_ids(b)).collect();
    if bus.keeps_order() {
        assert_eq!(ids(&a.seen()), sent, "one consumer sees publish order");
    } else {
        assert_each_once(&a.seen(), &sent);
    }
    a.stop().await;
    b.stop().await;
}

pub async fn an_unknown_subscription_is_an_error(bus: Arc<dyn EventBus>) {
    let result = bus.subscribe("nope").await;

    assert!(
        matches!(result, Err(BusError::UnknownSubscription(ref name)) if name == "nope"),
        "subscribing to an unknown name fails"
    );
}

pub async fn an_empty_batch_is_safe_at_once(bus: Arc<dyn EventBus>) {
    let receipt = bus.publish(Vec::new()).await.expect("publish nothing");

    settled(receipt).await;
}

/// How long the engine stays down in the outage cases: longer than a Service Bus fake's lock
/// (2 s), so a held delivery must be kept alive.
pub const OUTAGE: Duration = Duration::from_secs(3);

/// A handler whose engine is down while `down` is set, recording each success.
fn engine_handler(
    down: Arc<std::sync::atomic::AtomicBool>,
    calls: Arc<AtomicU64>,
    handled: Arc<Mutex<Vec<Uuid>>>,
) -> super::Handler {
    Arc::new(move |event: RecordedEvent| {
        let (down, calls, handled) = (down.clone(), calls.clone(), handled.clone());
        Box::pin(async move {
            calls.fetch_add(1, Ordering::SeqCst);
            if down.load(Ordering::SeqCst) {
                return Err(eventlog::Failure {
                    fault: eventlog::Fault::Outage(eventlog::Engine::Store),
                    reason: "connection refused".into(),
                });
            }
            if let Ok(mut handled) = handled.lock() {
                handled.push(event.event_id);
            }
            Ok(())
        })
    })
}

pub async fn an_outage_holds_deliveries_without_spending_their_attempts(bus: Arc<dyn EventBus>) {
    use std::sync::atomic::AtomicBool;
    let down = Arc::new(AtomicBool::new(true));
    let (calls, handled) = (Arc::new(AtomicU64::new(0)), Arc::default());
    let breakers = Arc::new(super::Breakers::new());
    let (stop, stopped) = watch::channel(false);
    let subscription = bus.subscribe("a").await.expect("subscribe to a");
    let consumer = tokio::spawn(super::consume_with(
        "a",
        subscription,
        4,
        engine_handler(down.clone(), calls.clone(), Arc::clone(&handled)),
        breakers.clone(),
        stopped,
    ));
    let b = spawn_consumer(bus.clone(), "b", ack_all).await;
    let sent = events(6);

    let receipt = publish(&bus, &sent).await;
    eventually("the consumer finds the engine down", || {
        !breakers.down().is_empty()
    })
    .await;
    tokio::time::sleep(OUTAGE).await;
    let during = calls.load(Ordering::SeqCst);
    let reported = breakers.down();
    down.store(false, Ordering::SeqCst);
    eventually("every event is handled once the engine is back", || {
        handled.lock().map(|h| h.len()).unwrap_or_default() >= sent.len()
    })
    .await;
    settled(receipt).await;
    tokio::time::sleep(QUIET).await;

    assert_eq!(reported.len(), 1, "one engine reported down: {reported:?}");
    assert_eq!(reported[0].engine, eventlog::Engine::Store);
    assert_eq!(reported[0].reason, "connection refused");
    // Four in flight, each failing once before the breaker opened, then one probe at a time
    // with growing pauses: about 4 + 5 in 3 s. Hammering would be hundreds.
    assert!(
        during <= 24,
        "the breaker held the deliveries back: {during} calls in {OUTAGE:?}"
    );
    let mut handled = handled.lock().map(|h| h.clone()).unwrap_or_default();
    handled.sort_unstable();
    let mut expected = event_ids(&sent);
    expected.sort_unstable();
    assert_eq!(
        handled, expected,
        "each event handled once: none was handed to another consumer while held"
    );
    assert_eq!(
        dead_letters(&bus).await,
        vec![],
        "an outage spends no delivery attempts"
    );
    assert!(breakers.down().is_empty(), "the breaker closed again");
    stop.send_replace(true);
    tokio::time::timeout(WAIT, consumer)
        .await
        .expect("the consumer stops")
        .expect("the consumer task");
    b.stop().await;
}

pub async fn a_consumer_stopping_during_an_outage_hands_its_deliveries_back(
    bus: Arc<dyn EventBus>,
) {
    let down = Arc::new(std::sync::atomic::AtomicBool::new(true));
    let calls = Arc::new(AtomicU64::new(0));
    let (stop, stopped) = watch::channel(false);
    let subscription = bus.subscribe("a").await.expect("subscribe to a");
    let consumer = tokio::spawn(super::consume_with(
        "a",
        subscription,
        4,
        engine_handler(down, calls.clone(), Arc::default()),
        Arc::new(super::Breakers::new()),
        stopped,
    ));
    let b = spawn_consumer(bus.clone(), "b", ack_all).await;
    let sent = events(1);

    let receipt = publish(&bus, &sent).await;
    eventually("the handler was tried", || calls.load(Ordering::SeqCst) > 0).await;
    stop.send_replace(true);
    tokio::time::timeout(WAIT, consumer)
        .await
        .expect("a consumer holding a delivery through an outage still stops")
        .expect("the consumer task");
    let a = spawn_consumer(bus.clone(), "a", ack_all).await;
    eventually("the held event is delivered again", || !a.seen().is_empty()).await;
    settled(receipt).await;

    let seen = a.seen();
    assert_eq!(seen[0].event, sent[0], "the same event, intact");
    assert!(
        (1..=2).contains(&seen[0].attempt),
        "handed back, not failed: attempt {} (Service Bus counts every lock)",
        seen[0].attempt
    );
    assert_eq!(dead_letters(&bus).await, vec![]);
    a.stop().await;
    b.stop().await;
}

/// One delivery a test consumer saw, in arrival order.
#[derive(Debug, Clone)]
pub struct Seen {
    pub event: RecordedEvent,
    pub attempt: u32,
    pub at: Instant,
}

/// A consumer running in a task: it records every delivery, then acks it if `outcome` says
/// `Ok` and nacks it with the reason otherwise.
pub struct TestConsumer {
    pub subscription: String,
    seen: Arc<Mutex<Vec<Seen>>>,
    stop: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

impl TestConsumer {
    pub fn seen(&self) -> Vec<Seen> {
        self.seen.lock().map(|s| s.clone()).unwrap_or_default()
    }

    /// Stops taking deliveries and drops the subscription.
    pub async fn stop(self) {
        self.stop.send_replace(true);
        if let Err(error) = self.task.await
            && let Ok(panic) = error.try_into_panic()
        {
            std::panic::resume_unwind(panic);
        }
    }
}

/// The outcome of a handler that always succeeds.
pub fn ack_all(_: &RecordedEvent, _: u32) -> Result<(), String> {
    Ok(())
}

/// Subscribes now (so the consumer competes from this moment) and consumes in a task.
pub async fn spawn_consumer(
    bus: Arc<dyn EventBus>,
    subscription: &str,
    outcome: impl Fn(&RecordedEvent, u32) -> Result<(), String> + Send + 'static,
) -> TestConsumer {
    let mut handle = bus
        .subscribe(subscription)
        .await
        .unwrap_or_else(|e| panic!("subscribe to {subscription}: {e}"));
    let seen = Arc::new(Mutex::new(Vec::new()));
    let (stop, mut stopped) = watch::channel(false);
    let log = seen.clone();
    let task = tokio::spawn(async move {
        loop {
            let delivery = tokio::select! {
                biased;
                _ = crate::stopped(&mut stopped) => return,
                delivery = handle.next() => delivery,
            };
            let Some(delivery) = delivery else { return };
            let result = outcome(&delivery.event, delivery.attempt);
            if let Ok(mut log) = log.lock() {
                log.push(Seen {
                    event: delivery.event.clone(),
                    attempt: delivery.attempt,
                    at: Instant::now(),
                });
            }
            match result {
                Ok(()) => delivery.settle.ack().await,
                Err(reason) => delivery.settle.nack(reason).await,
            }
        }
    });
    TestConsumer {
        subscription: subscription.to_owned(),
        seen,
        stop,
        task,
    }
}

/// Waits until `condition` holds, failing the case after [`WAIT`].
pub async fn eventually(what: &str, mut condition: impl FnMut() -> bool) {
    let deadline = Instant::now() + WAIT;
    while !condition() {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

pub async fn publish(bus: &Arc<dyn EventBus>, events: &[RecordedEvent]) -> Receipt {
    bus.publish(events.to_vec())
        .await
        .unwrap_or_else(|e| panic!("publish failed: {e}"))
}

/// Waits for a receipt, which must say the batch is safe.
pub async fn settled(receipt: Receipt) {
    match tokio::time::timeout(WAIT, receipt).await {
        Ok(Ok(())) => {}
        Ok(Err(error)) => panic!("the receipt failed: {error}"),
        Err(_) => panic!("the receipt did not resolve within {WAIT:?}"),
    }
}

async fn dead_letters(bus: &Arc<dyn EventBus>) -> Vec<DeadLetter> {
    bus.dead_letters()
        .await
        .unwrap_or_else(|e| panic!("dead_letters failed: {e}"))
}

pub fn ids(seen: &[Seen]) -> Vec<Uuid> {
    seen.iter().map(|s| s.event.event_id).collect()
}

/// That `seen` holds each of `sent` exactly once, in any order (a topic that does not keep
/// publish order, [`EventBus::keeps_order`]).
pub fn assert_each_once(seen: &[Seen], sent: &[Uuid]) {
    let mut seen = ids(seen);
    seen.sort_unstable();
    let mut sent = sent.to_vec();
    sent.sort_unstable();
    assert_eq!(seen, sent, "each event once (in any order)");
}

pub fn event_ids(events: &[RecordedEvent]) -> Vec<Uuid> {
    events.iter().map(|e| e.event_id).collect()
}

/// `n` events of one new stream, every envelope field set, with log positions no other call
/// hands out.
pub fn events(n: u64) -> Vec<RecordedEvent> {
    static POSITION: AtomicU64 = AtomicU64::new(1);
    let stream_id = format!("order-{}", Uuid::now_v7());
    let correlation_id = Uuid::now_v7();
    (1..=n)
        .map(|version| RecordedEvent {
            event_id: Uuid::now_v7(),
            stream_id: stream_id.clone(),
            stream_type: "order".into(),
            version,
            global_position: Some(POSITION.fetch_add(1, Ordering::Relaxed)),
            event_type: "OrderNoted".into(),
            schema_version: 2,
            occurred_at: Utc::now(),
            payload:
                json!({ "n": version, "note": "café ✓", "lines": [{ "sku": "SKU-1", "qty": 2 }] })
                    .into(),
            metadata: EventMetadata {
                correlation_id,
                causation_id: Some(Uuid::now_v7()),
                command_id: Some(format!("cmd-{version}")),
                request_hash: Some("sha256:abc".into()),
                actor: "customer:42".into(),
                traceparent: Some("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01".into()),
            },
        })
        .collect()
}
