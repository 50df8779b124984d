//! The topic port: the relay publishes the event log to it, and each subscription (consumer
//! group) gets every event at least once.
//!
//! - [`memory`]: the in-process topic (the embedded default).
//! - [`rabbitmq`]: the RabbitMQ topic (quorum queues per subscription with a delivery limit,
//!   publisher confirms, retry queues with growing delays, dead-letter queues, reconnects).
//! - `service_bus` (feature `azure`): the Azure Service Bus topic (REST, peek-lock, abandon
//!   with the retry delay, dead-lettering by the subscriptions' max delivery count).
//! - [`consumer`]: the loop that runs a handler over a subscription with bounded concurrency,
//!   acking after the handler's side effect, nacking (retry, then dead letter) when the
//!   message failed, and holding it through an engine outage behind a circuit breaker per
//!   engine, without spending its attempts.
//! - **Dead letters** are the operators' to act on through the same port: list them
//!   ([`EventBus::dead_letters`]), send a selection back to its subscription
//!   ([`EventBus::redrive`]) or remove it with a logged reason ([`EventBus::discard`]),
//!   selected by a [`DeadLetterFilter`].
//! - [`conformance`]: the port's one conformance suite. Every adapter runs it through
//!   [`event_bus_conformance!`](crate::event_bus_conformance), so they all keep the same
//!   promises: every subscription gets every event, retries with growing delays, dead letters
//!   with the reason, competing consumers, redelivery of what a consumer left unsettled.

pub mod conformance;
pub mod consumer;
pub mod memory;
pub mod rabbitmq;
#[cfg(feature = "azure")]
pub mod service_bus;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use domain::RecordedEvent;
use futures_util::future::BoxFuture;
use uuid::Uuid;

pub use consumer::{Breakers, Deliveries, EngineDown, Handler, consume, consume_with};
pub use memory::MemoryBus;
pub use rabbitmq::RabbitBus;

/// Resolves once the topic holds a published batch safely; the relay moves its checkpoint only
/// then, which is what keeps publication free of dual writes: the store is the outbox.
pub type Receipt = BoxFuture<'static, Result<(), BusError>>;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BusError {
    #[error("topic unavailable: {0}")]
    Unavailable(String),
    #[error("no subscription named {0}")]
    UnknownSubscription(String),
}

/// A message given up on after the retry budget, with why and when.
#[derive(Debug, Clone, PartialEq)]
pub struct DeadLetter {
    pub subscription: String,
    pub event: RecordedEvent,
    pub attempts: u32,
    pub reason: String,
    /// When it was parked, where the topic records it (the in-process topic and RabbitMQ do;
    /// Service Bus keeps no such time, so `None` there).
    pub dead_at: Option<DateTime<Utc>>,
}

/// Which dead letters an operator means: every field set must match, and a filter with
/// nothing set means all of them ([`DeadLetterFilter::everything`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DeadLetterFilter {
    pub subscription: Option<String>,
    /// Any of these events; empty for any event.
    pub event_ids: Vec<Uuid>,
    pub event_type: Option<String>,
    pub stream_id: Option<String>,
}

impl DeadLetterFilter {
    /// One subscription's dead letter of one event.
    pub fn one(subscription: &str, event_id: Uuid) -> Self {
        Self {
            subscription: Some(subscription.to_owned()),
            event_ids: vec![event_id],
            ..Self::default()
        }
    }

    /// Whether this selects every dead letter of every subscription.
    pub fn everything(&self) -> bool {
        *self == Self::default()
    }

    pub fn matches(&self, letter: &DeadLetter) -> bool {
        self.subscription
            .as_ref()
            .is_none_or(|s| *s == letter.subscription)
            && (self.event_ids.is_empty() || self.event_ids.contains(&letter.event.event_id))
            && self
                .event_type
                .as_ref()
                .is_none_or(|t| *t == letter.event.event_type)
            && self
                .stream_id
                .as_ref()
                .is_none_or(|s| *s == letter.event.stream_id)
    }

    /// Whether this can select anything of `subscription` (so an adapter skips the rest).
    pub fn covers(&self, subscription: &str) -> bool {
        self.subscription.as_ref().is_none_or(|s| s == subscription)
    }
}

/// The one log line of a discarded dead letter: operators find why it went in the logs.
fn log_discarded(letter: &DeadLetter, reason: &str) {
    tracing::warn!(
        subscription = %letter.subscription,
        event_id = %letter.event.event_id,
        event_type = %letter.event.event_type,
        stream_id = %letter.event.stream_id,
        attempts = letter.attempts,
        dead_letter_reason = %letter.reason,
        %reason,
        "dead letter discarded"
    );
}

/// One subscription's queues as [`EventBus::depths`] counts them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueueDepth {
    pub subscription: String,
    /// Messages waiting to be delivered (not those a consumer holds, nor those waiting out a
    /// retry delay).
    pub ready: u64,
    /// Dead letters.
    pub dead: u64,
}

/// How a subscription retries: `max_attempts` deliveries in all, waiting `base_delay`,
/// then twice that, and so on, before the message is dead-lettered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    pub max_attempts: u32,
    pub base_delay: std::time::Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            max_attempts: 5,
            base_delay: std::time::Duration::from_millis(200),
        }
    }
}

impl RetryPolicy {
    /// The wait before delivery number `attempt + 1`.
    pub fn delay_after(&self, attempt: u32) -> std::time::Duration {
        self.base_delay * 2u32.saturating_pow(attempt.saturating_sub(1).min(16))
    }
}

#[async_trait]
pub trait EventBus: Send + Sync + 'static {
    /// Hands a batch, in log order, to every subscription.
    async fn publish(&self, events: Vec<RecordedEvent>) -> Result<Receipt, BusError>;

    /// Joins the named consumer group; handles to one name compete for its messages.
    async fn subscribe(&self, subscription: &str) -> Result<Box<dyn Subscription>, BusError>;

    /// Messages dead-lettered so far, for operators and tests, oldest first per subscription.
    async fn dead_letters(&self) -> Result<Vec<DeadLetter>, BusError>;

    /// Sends the dead letters `which` selects back to their own subscription's queue (and only
    /// there), as the same message with the same event: consumers, idempotent by event, may
    /// see it again as a new delivery with a fresh retry budget. Answers what it re-drove.
    /// A dead letter is taken out of the dead-letter queue only once its copy is safely
    /// queued, so a failure midway leaves it where it was.
    async fn redrive(&self, which: &DeadLetterFilter) -> Result<Vec<DeadLetter>, BusError>;

    /// Removes the dead letters `which` selects for good, logging each one with `reason`
    /// (at warn, with the event), and answers what it removed.
    async fn discard(
        &self,
        which: &DeadLetterFilter,
        reason: &str,
    ) -> Result<Vec<DeadLetter>, BusError>;

    /// How many messages wait in each subscription's queue and its dead-letter queue, for
    /// `/metrics`, where the topic can say so cheaply (without reading the messages): `None`
    /// where it cannot (Service Bus needs the `Manage` right for counts).
    async fn depths(&self) -> Result<Option<Vec<QueueDepth>>, BusError> {
        Ok(None)
    }

    /// Whether the topic answers (for `/ready`). An in-process topic always does.
    async fn ping(&self) -> Result<(), BusError> {
        Ok(())
    }

    /// Whether a dead letter carries the handler's last reason. Service Bus's REST API cannot
    /// dead-letter with a reason: the broker dead-letters by the max delivery count and records
    /// its own (`MaxDeliveryCountExceeded`), and the handler's reason goes to the log.
    fn keeps_handler_reasons(&self) -> bool {
        true
    }

    /// Whether one subscription handle gets the events in publish order while nothing fails.
    /// Service Bus with several peek-lock receives in flight does not (their answers arrive in
    /// any order); no consumer here needs it (the projector fills a gap from the store, and
    /// processors and notifiers work concurrently anyway).
    fn keeps_order(&self) -> bool {
        true
    }

    /// Whether [`Settle::park`] dead-letters a delivery at its first attempt. Service Bus's
    /// REST interface has no dead-letter operation, so a parked message there is delivered
    /// again at once until its max delivery count is spent.
    fn parks_at_once(&self) -> bool {
        true
    }
}

#[async_trait]
pub trait Subscription: Send {
    /// The next delivery; `None` once the topic is closed.
    async fn next(&mut self) -> Option<Delivery>;

    /// Stops receiving: deliveries already handed out can still be settled, and those handed
    /// back from now on go to other consumers. Called when a consumer shuts down.
    async fn stop(&mut self) {}
}

/// One delivery of one event. Settle it with `ack` after the side effect, or `nack` with the
/// reason; dropping it unsettled counts as a failed attempt.
pub struct Delivery {
    pub event: RecordedEvent,
    /// 1 for the first delivery.
    pub attempt: u32,
    pub settle: Box<dyn Settle>,
}

#[async_trait]
pub trait Settle: Send {
    async fn ack(self: Box<Self>);
    /// A failed attempt of the message itself: retried after the policy's delay, or
    /// dead-lettered once its attempts are spent.
    async fn nack(self: Box<Self>, reason: String);
    /// A failure no retry can mend: dead-lettered at once with the reason, where the topic can
    /// ([`EventBus::parks_at_once`]); elsewhere a failed attempt without the retry delay.
    async fn park(self: Box<Self>, reason: String);
    /// Hands the delivery back untried (the consumer is stopping while it waited out an
    /// outage): it comes again at once. The in-process topic does not count it as an attempt;
    /// RabbitMQ's quorum queues and Service Bus count every delivery the broker made.
    async fn release(self: Box<Self>);
    /// Called while the consumer holds the delivery through an outage or a lease: keeps it
    /// from being taken back (Service Bus renews the lock when it is due).
    async fn keep(&mut self) {}
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::{EventBus, MemoryBus, RetryPolicy};

    async fn memory_fixture(
        subscriptions: &'static [&'static str],
        policy: RetryPolicy,
    ) -> Arc<dyn EventBus> {
        Arc::new(MemoryBus::new(subscriptions, policy))
    }

    mod memory {
        crate::event_bus_conformance!(super::memory_fixture);
    }

    /// On the broker at `ORDERFLOW_TEST_AMQP` (default `amqp://guest:guest@127.0.0.1:5672/%2f`),
    /// each case under a fresh prefix that is deleted afterwards; fails if the broker is down.
    #[cfg(feature = "servers")]
    mod rabbitmq {
        crate::event_bus_conformance!(crate::bus::rabbitmq::server_tests::rabbit_fixture);
    }
}
