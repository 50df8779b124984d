//! Runs one handler over one subscription: at most `concurrency` events in flight, ack after
//! the handler succeeds, nack with its error when the message failed. On shutdown it stops
//! taking deliveries, lets the ones in flight finish and settle, then returns.
//!
//! An engine outage is not the message's fault, so it must not spend the message's delivery
//! attempts (400 orders queued while PostgreSQL was unreachable for 6 s were all dead-lettered
//! before this). A handler says what failed ([`Failure`]): when an engine is down, the
//! consumer keeps the delivery, opens that engine's breaker ([`Breakers`]) and tries again
//! when the breaker lets one probe through (after 100 ms, doubling to at most 2 s, so the
//! backlog drains within about 2 s of the engine's return); deliveries already in flight
//! wait behind the same breaker instead of hammering the engine. A delivery that can succeed
//! a little later (a lease another notifier holds, a busy stream) waits and is tried again,
//! also without spending an attempt, for at most [`MAX_LATER`]. Only a failure of the message
//! itself is nacked; one that no retry can mend ([`Fault::Permanent`]: undecodable, corrupt)
//! is parked at once instead of being tried again until its attempts are spent.

use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};
use domain::RecordedEvent;
use eventlog::{Engine, Failure, Fault};
use futures_util::StreamExt;
use futures_util::stream::FuturesUnordered;
use tokio::sync::{Notify, watch};
use tokio::time::Instant;
use tracing::Instrument as _;

use super::{Delivery, Subscription};

/// What a consumer does with one event; an `Err` says what failed (see the module docs).
pub type Handler = Arc<
    dyn Fn(RecordedEvent) -> Pin<Box<dyn Future<Output = Result<(), Failure>> + Send>>
        + Send
        + Sync,
>;

/// The first wait of an open breaker before it lets a probe through.
const FIRST_PROBE: Duration = Duration::from_millis(100);
/// The longest wait between probes of an engine that stays down: also how long after the
/// engine's return the backlog may wait at most.
const MAX_PROBE: Duration = Duration::from_secs(2);
/// How long one delivery may wait in all for "later" before it is nacked as failed.
pub const MAX_LATER: Duration = Duration::from_secs(120);
/// The longest single wait of a delivery held for "later": the delivery is kept alive
/// ([`Settle::keep`](super::Settle::keep)) between waits.
const LATER_STEP: Duration = Duration::from_secs(5);

/// How often a delivery held behind an open breaker is kept alive.
const KEEP_EVERY: Duration = Duration::from_millis(500);

/// An engine a consumer found down, for `/ready` and the log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EngineDown {
    pub engine: Engine,
    pub since: DateTime<Utc>,
    /// The last failure's reason.
    pub reason: String,
    /// Probes that failed since it went down.
    pub failed_probes: u32,
}

struct Open {
    down: EngineDown,
    /// When the next probe may go.
    probe_at: Instant,
    /// A probe is in flight.
    probing: bool,
}

/// One circuit breaker per engine for one consumer: closed while the engine answers; open
/// once a handler found it down, letting one probe through at a time, with growing pauses,
/// until a handler gets through again. It also counts the deliveries its consumers took.
#[derive(Default)]
pub struct Breakers {
    open: Mutex<BTreeMap<Engine, Open>>,
    changed: Notify,
    pub deliveries: Deliveries,
}

/// Deliveries a subscription's consumers in this process were handed, for `/metrics`.
#[derive(Debug, Default)]
pub struct Deliveries {
    /// Every delivery.
    pub taken: AtomicU64,
    /// Those that were not the message's first (after a failure, a crash or a lost lock).
    pub redelivered: AtomicU64,
}

impl Deliveries {
    fn count(&self, attempt: u32) {
        self.taken.fetch_add(1, Ordering::Relaxed);
        if attempt > 1 {
            self.redelivered.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// What [`Breakers::admit`] allowed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Admitted {
    /// No breaker is open.
    Freely,
    /// This attempt is the probe of a down engine.
    Probe(Engine),
}

impl Breakers {
    pub fn new() -> Self {
        Self::default()
    }

    /// The engines found down, and since when.
    pub fn down(&self) -> Vec<EngineDown> {
        self.lock().values().map(|o| o.down.clone()).collect()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<Engine, Open>> {
        self.open.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Waits until an attempt may run: at once when every breaker is closed, else when this
    /// caller may probe a down engine or the breakers close.
    async fn admit(&self) -> Admitted {
        loop {
            let changed = self.changed.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            let next_probe = {
                let mut open = self.lock();
                if open.is_empty() {
                    return Admitted::Freely;
                }
                let now = Instant::now();
                if let Some((engine, breaker)) = open
                    .iter_mut()
                    .find(|(_, b)| !b.probing && b.probe_at <= now)
                {
                    breaker.probing = true;
                    return Admitted::Probe(*engine);
                }
                open.values()
                    .filter(|b| !b.probing)
                    .map(|b| b.probe_at)
                    .min()
            };
            match next_probe {
                Some(at) => {
                    tokio::select! {
                        _ = changed => {}
                        _ = tokio::time::sleep_until(at) => {}
                    }
                }
                None => changed.await,
            }
        }
    }

    /// A handler got through: every engine it needed answered.
    fn passed(&self) {
        let mut open = self.lock();
        if open.is_empty() {
            return;
        }
        for (engine, breaker) in open.iter() {
            let down_for = (Utc::now() - breaker.down.since)
                .to_std()
                .unwrap_or_default();
            tracing::info!(%engine, ?down_for, "engine answers again; the consumer resumes");
        }
        open.clear();
        drop(open);
        self.changed.notify_waiters();
    }

    /// A handler found `engine` down; `probe` when that attempt was its probe.
    fn failed(&self, engine: Engine, reason: &str, admitted: Admitted) {
        let mut open = self.lock();
        let now = Instant::now();
        match open.get_mut(&engine) {
            None => {
                tracing::warn!(%engine, %reason, "engine down; holding deliveries until it answers");
                open.insert(
                    engine,
                    Open {
                        down: EngineDown {
                            engine,
                            since: Utc::now(),
                            reason: reason.to_owned(),
                            failed_probes: 0,
                        },
                        probe_at: now + FIRST_PROBE,
                        probing: false,
                    },
                );
            }
            Some(breaker) => {
                breaker.down.reason = reason.to_owned();
                if admitted == Admitted::Probe(engine) {
                    breaker.down.failed_probes += 1;
                    let pause = FIRST_PROBE
                        .saturating_mul(2u32.saturating_pow(breaker.down.failed_probes.min(8)))
                        .min(MAX_PROBE);
                    breaker.probe_at = now + pause;
                    breaker.probing = false;
                }
            }
        }
        // A probe of another engine that failed on this one is over too.
        if let Admitted::Probe(probed) = admitted
            && probed != engine
            && let Some(breaker) = open.get_mut(&probed)
        {
            breaker.probing = false;
        }
        drop(open);
        self.changed.notify_waiters();
    }
}

/// [`consume_with`] breakers of its own.
pub async fn consume(
    name: &str,
    subscription: Box<dyn Subscription>,
    concurrency: usize,
    handler: Handler,
    shutdown: watch::Receiver<bool>,
) {
    let breakers = Arc::new(Breakers::new());
    consume_with(name, subscription, concurrency, handler, breakers, shutdown).await;
}

/// Consumes until `shutdown`, with `breakers` that others (`/ready`) can read.
pub async fn consume_with(
    name: &str,
    subscription: Box<dyn Subscription>,
    concurrency: usize,
    handler: Handler,
    breakers: Arc<Breakers>,
    mut shutdown: watch::Receiver<bool>,
) {
    // `Subscription::next` is not cancel-safe: a Service Bus receive cancelled after the broker
    // locked a message leaves that message locked for nobody until the lock expires, and its
    // delivery count grows without a handler ever running (five of those and it is
    // dead-lettered). So a receive, once started, is never dropped when an event in flight
    // finishes first: the stream keeps it and the next poll resumes it.
    let subscription = Arc::new(tokio::sync::Mutex::new(subscription));
    let deliveries =
        futures_util::stream::unfold(subscription.clone(), |subscription| async move {
            let delivery = subscription.lock().await.next().await?;
            Some((delivery, subscription))
        });
    let mut deliveries = Box::pin(deliveries);
    let mut in_flight = FuturesUnordered::new();
    loop {
        tokio::select! {
            biased;
            _ = crate::stopped(&mut shutdown) => break,
            Some(()) = in_flight.next(), if !in_flight.is_empty() => {}
            delivery = deliveries.next(), if in_flight.len() < concurrency.max(1) => {
                let Some(delivery) = delivery else { break };
                in_flight.push(handle(
                    name.to_owned(),
                    delivery,
                    handler.clone(),
                    breakers.clone(),
                    shutdown.clone(),
                ));
            }
        }
    }
    // The receive waiting for the next message goes first, then the subscription stops: left
    // receiving, it would take a message that a held delivery hands back below and strand it
    // (on Service Bus, locked for nobody until the lock expires; on RabbitMQ, returned again
    // when the channel closes, and counted).
    drop(deliveries);
    subscription.lock().await.stop().await;
    while in_flight.next().await.is_some() {}
    tracing::info!(subscription = %name, "consumer stopped");
}

/// Runs the handler on one delivery until it succeeds, the message fails, or the consumer
/// stops while the delivery waits (then it is released untried).
async fn handle(
    name: String,
    mut delivery: Delivery,
    handler: Handler,
    breakers: Arc<Breakers>,
    mut shutdown: watch::Receiver<bool>,
) {
    breakers.deliveries.count(delivery.attempt);
    // The handler runs in a span that continues the trace the delivery carries.
    let span = tracing::info_span!(
        "consume",
        subscription = %name,
        event_id = %delivery.event.event_id,
        event_type = %delivery.event.event_type,
        attempt = delivery.attempt,
        trace_id = tracing::field::Empty,
    );
    crate::trace::continue_trace(&span, delivery.event.metadata.traceparent.as_deref());
    let mut waited_later = Duration::ZERO;
    loop {
        let admitted = loop {
            tokio::select! {
                admitted = breakers.admit() => break admitted,
                // `admit` only changes the breakers as it returns, so dropping it is safe.
                _ = tokio::time::sleep(KEEP_EVERY) => delivery.settle.keep().await,
                _ = crate::stopped(&mut shutdown) => return delivery.settle.release().await,
            }
        };
        let handling = span.in_scope(|| handler(delivery.event.clone()));
        let failure = match handling.instrument(span.clone()).await {
            Ok(()) => {
                breakers.passed();
                return delivery.settle.ack().await;
            }
            Err(failure) => failure,
        };
        let Some(pause) = hold(
            &name,
            &delivery,
            &breakers,
            &failure,
            admitted,
            waited_later,
        ) else {
            return settle_failed(&name, delivery, failure).await;
        };
        waited_later += pause;
        tokio::select! {
            _ = tokio::time::sleep(pause) => {}
            _ = crate::stopped(&mut shutdown) => return delivery.settle.release().await,
        }
        delivery.settle.keep().await;
    }
}

/// Whether a failure is not the message's, so the consumer holds the delivery and tries again
/// (after the pause answered: none for an outage, whose breaker paces the probes), or `None`
/// when it is to be settled as failed. A wait for later is bounded by [`MAX_LATER`] in all.
fn hold(
    name: &str,
    delivery: &Delivery,
    breakers: &Breakers,
    failure: &Failure,
    admitted: Admitted,
    waited_later: Duration,
) -> Option<Duration> {
    let event_id = delivery.event.event_id;
    match failure.fault {
        Fault::Outage(engine) => {
            tracing::debug!(subscription = %name, %event_id, %engine, reason = %failure.reason, "engine down; delivery held");
            breakers.failed(engine, &failure.reason, admitted);
            Some(Duration::ZERO)
        }
        Fault::Later(after) if waited_later < MAX_LATER => {
            breakers.passed();
            let pause = after.clamp(Duration::from_millis(1), LATER_STEP);
            tracing::debug!(subscription = %name, %event_id, reason = %failure.reason, ?pause, "delivery held for later");
            Some(pause)
        }
        Fault::Later(_) | Fault::Message | Fault::Permanent => {
            breakers.passed();
            None
        }
    }
}

/// A failure of the message itself: retried by the topic (counted toward parking), or parked
/// at once when no retry can mend it.
async fn settle_failed(name: &str, delivery: Delivery, failure: Failure) {
    let event_id = delivery.event.event_id;
    if failure.fault.is_retryable() {
        tracing::debug!(subscription = %name, %event_id, reason = %failure.reason, "handler failed");
        delivery.settle.nack(failure.reason).await;
    } else {
        tracing::warn!(subscription = %name, %event_id, reason = %failure.reason, "the event cannot be handled as it is; parked");
        delivery.settle.park(failure.reason).await;
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    use async_trait::async_trait;
    use tokio::sync::mpsc;

    use super::*;
    use crate::bus::{Delivery, Settle};

    /// A subscription whose receives can be told apart: each `next` that is dropped before it
    /// answered counts as a cancelled receive (a lost lock, on Service Bus).
    struct Receives {
        events: mpsc::UnboundedReceiver<RecordedEvent>,
        cancelled: Arc<AtomicUsize>,
        acked: Arc<AtomicUsize>,
    }

    struct Unanswered(Option<Arc<AtomicUsize>>);

    impl Drop for Unanswered {
        fn drop(&mut self) {
            if let Some(cancelled) = self.0.take() {
                cancelled.fetch_add(1, Ordering::SeqCst);
            }
        }
    }

    struct CountAcks(Arc<AtomicUsize>);

    #[async_trait]
    impl Settle for CountAcks {
        async fn ack(self: Box<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
        async fn nack(self: Box<Self>, _reason: String) {}
        async fn park(self: Box<Self>, _reason: String) {}
        async fn release(self: Box<Self>) {}
    }

    #[async_trait]
    impl Subscription for Receives {
        async fn next(&mut self) -> Option<Delivery> {
            let mut unanswered = Unanswered(Some(self.cancelled.clone()));
            let event = self.events.recv().await;
            unanswered.0 = None;
            Some(Delivery {
                event: event?,
                attempt: 1,
                settle: Box::new(CountAcks(self.acked.clone())),
            })
        }
    }

    /// Events trickle in while others are in flight: a receive that is waiting when an event
    /// in flight finishes must go on waiting, not be dropped and started again.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_waiting_receive_is_never_cancelled_while_events_finish() {
        let (send, events) = mpsc::unbounded_channel();
        let (cancelled, acked) = (Arc::default(), Arc::<AtomicUsize>::default());
        let subscription = Receives {
            events,
            cancelled: Arc::clone(&cancelled),
            acked: acked.clone(),
        };
        let handler: Handler = Arc::new(|_| {
            Box::pin(async {
                tokio::time::sleep(Duration::from_millis(15)).await;
                Ok(())
            })
        });
        let (stop, stopped) = watch::channel(false);
        let consumer = tokio::spawn(async move {
            consume("test", Box::new(subscription), 4, handler, stopped).await;
        });

        for event in crate::bus::conformance::events(20) {
            send.send(event).unwrap();
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while acked.load(Ordering::SeqCst) < 20 && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }

        assert_eq!(acked.load(Ordering::SeqCst), 20, "every event handled");
        assert_eq!(
            cancelled.load(Ordering::SeqCst),
            0,
            "no receive was dropped before it answered"
        );
        stop.send(true).unwrap();
        consumer.await.unwrap();
    }
}
