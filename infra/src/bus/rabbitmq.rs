//! The RabbitMQ topic (lapin): the `EventBus` for one process per role.
//!
//! **Topology.** Every name starts with a prefix (`orderflow` unless the URL says
//! `?prefix=NAME`), so that several systems, or parallel tests, share one broker without meeting.
//! The rest of the URL's query is lapin's (`frame_max`, `heartbeat`, `channel_max`); frames are
//! 16 KiB unless it names a size (`FRAME_MAX` says why).
//! Declared idempotently at connect, on every new channel that publishes or consumes, and so again
//! after every reconnect:
//!
//! - `{prefix}.events`: a durable topic exchange; routing key `{stream_type}.{event_type}`.
//! - `{prefix}.{sub}`: one quorum queue per subscription, bound with `#`. Several consumers on it
//!   (in one process or many) compete for its messages. Its `x-delivery-limit` is
//!   `max_attempts - 1`: the broker counts every delivery that came back unsettled (a consumer
//!   that died or lost its connection, or handed the message back), and past the limit
//!   dead-letters the message to `{prefix}.{sub}.dead` itself, so a message that kills its
//!   consumer every time is parked after `max_attempts` deliveries.
//! - `{prefix}.{sub}.retry.{delay}ms`: quorum queues with `x-message-ttl` = that delay whose
//!   expired messages are dead-lettered back to `{prefix}.{sub}` through the default exchange. One
//!   per distinct delay of the [`RetryPolicy`], named after the delay rather than the attempt
//!   number, so that a changed policy declares new queues instead of failing on the arguments of
//!   old ones (RabbitMQ refuses to redeclare a queue with other arguments).
//! - `{prefix}.{sub}.dead`: a quorum queue of messages that failed `max_attempts` times.
//!
//! Every dead-lettering is `x-dead-letter-strategy=at-least-once` (with `x-overflow=reject-publish`,
//! which it needs): the broker keeps a message until its next queue has confirmed it. Quorum
//! queues need RabbitMQ 3.10 or later. Queues declared by an orderflow from before were classic:
//! RabbitMQ refuses to redeclare them, and the error says to drain and delete them (or to use a
//! new `prefix=`).
//!
//! **Publishing.** Persistent messages (delivery mode 2), `message_id` = event id,
//! `content_type` `application/json`, the [`RecordedEvent`] as JSON, headers `event_type`,
//! `stream_id` and (when the event has one) `traceparent`, published `mandatory` on a channel in confirm mode. The [`Receipt`] resolves `Ok`
//! once the broker has confirmed every message of the batch (for durable queues: written to disk);
//! a nack, a message returned as unroutable, or a channel that closes first is an `Err`, and the
//! relay publishes again from its checkpoint. At-least-once: a batch may reach a queue twice.
//! With no queue bound at all the broker would drop the message; it returns it instead
//! (`mandatory`), so the receipt fails until some process has declared a subscription.
//!
//! **Retries and dead letters.** `Delivery::attempt` is the `x-attempt` header (1 when absent)
//! plus the quorum queue's `x-delivery-count` (the broker's deliveries before this one).
//! A nack re-publishes the message (publisher-confirmed) to the retry queue of
//! `policy.delay_after(attempt)` with `x-attempt` + 1, or, at `max_attempts`, to the dead-letter
//! queue with `x-orderflow-reason` (the last reason, clipped to 8 KiB), `x-orderflow-subscription`
//! and `x-attempt`; only then is the original acked. A crash in between leaves both copies: a
//! duplicate, never a loss. If the re-publication fails, the original is requeued after the delay.
//! A message the broker parked by its delivery limit carries no reason of ours: it is listed with
//! `max_attempts` attempts and a reason that says so (from its `x-death` history).
//! [`EventBus::dead_letters`] reads the dead-letter queues with `basic.get` and hands every message
//! back (`basic.nack`, requeue) before it returns; reads are serialised within a process, but a
//! read in another process at the same moment sees fewer (an operator's view, not a ledger).
//! [`EventBus::redrive`] reads the same way and publishes each selected message (confirmed) to
//! the subscription's own queue through the default exchange, same body, same `message_id`,
//! `x-attempt` 1 and without the dead-letter headers, and only then acks the dead letter;
//! [`EventBus::discard`] acks the selected ones and logs them. A handler's dead letter carries
//! `x-orderflow-dead-at`; a broker-parked one has its `x-death` time.
//!
//! **Unsettled deliveries.** Dropping a [`Delivery`] without settling it counts as a failed attempt,
//! as the port says: its `Drop` spawns the same nack (on the current Tokio runtime). If that cannot
//! run, or the process dies, the message stays unacked on its channel, and the broker redelivers it
//! when the channel or connection closes, counting the delivery (above). A consumer that stops
//! cancels its consumer first ([`Subscription::stop`]), so what it hands back is not delivered
//! to it again and returned once more. Messages prefetched but not yet handed out when a process
//! dies are counted too: a crash loop with a backlog parks the prefetched messages after
//! `max_attempts` crashes, to be re-driven once the crash is mended.
//!
//! **Reconnecting.** Publishing and consuming use separate connections (a publisher the broker
//! blocks for flow control must not stall acks). Neither uses lapin's auto-recovery: a connection
//! found closed is replaced on next use, with the topology declared again. A publish that finds
//! the connection gone reconnects once and otherwise fails (the relay retries on its own
//! schedule); [`Subscription::next`] never gives up while the bus is open: it re-consumes,
//! reconnecting with backoff (0.1 s doubling to 5 s), so a consumer loop outlives broker restarts;
//! while it waits it knocks on the broker every 200 ms (the AMQP protocol header, answered or not)
//! and reconnects as soon as a broker that did not answer answers again.
//! Deliveries handed out before the loss cannot be acked any more (their channel is gone): the
//! broker redelivers them, and ones still buffered from the dead channel are skipped, not handed
//! out. `next` answers `None` only after [`RabbitBus::close`].

use std::collections::BTreeMap;
use std::fmt::Display;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use domain::RecordedEvent;
use futures_util::StreamExt;
use lapin::message::Delivery as AmqpDelivery;
use lapin::options::{
    BasicAckOptions, BasicCancelOptions, BasicConsumeOptions, BasicGetOptions, BasicNackOptions,
    BasicPublishOptions, BasicQosOptions, ConfirmSelectOptions, ExchangeDeclareOptions,
    ExchangeDeleteOptions, QueueBindOptions, QueueDeclareOptions, QueueDeleteOptions,
};
use lapin::protocol::{AMQPErrorKind, AMQPSoftError};
use lapin::types::{AMQPValue, FieldTable, LongString, ShortString};
use lapin::{
    Acker, BasicProperties, Channel, Confirmation, Connection, ConnectionProperties, ErrorKind,
    ExchangeKind, PublisherConfirm,
};
use tokio::sync::{Mutex, watch};
use uuid::Uuid;

use super::{
    BusError, DeadLetter, DeadLetterFilter, Delivery, EventBus, QueueDepth, Receipt, RetryPolicy,
    Settle, Subscription,
};

/// Names start with this unless the URL has `?prefix=NAME`.
pub const DEFAULT_PREFIX: &str = "orderflow";
/// Unacked deliveries the broker sends one subscription handle ahead of its acks.
pub const DEFAULT_PREFETCH: u16 = 32;

const ATTEMPT: &str = "x-attempt";
/// The W3C trace context of the event's publication, as OpenTelemetry's messaging
/// conventions name it in AMQP headers (the same value as the body's `metadata.traceparent`).
const TRACEPARENT: &str = "traceparent";
/// Set by quorum queues on a redelivery: how many deliveries came before.
const DELIVERY_COUNT: &str = "x-delivery-count";
const REASON: &str = "x-orderflow-reason";
const SUBSCRIPTION: &str = "x-orderflow-subscription";
/// When a handler's last failure parked the message (milliseconds since the epoch).
const DEAD_AT: &str = "x-orderflow-dead-at";
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
const FIRST_BACKOFF: Duration = Duration::from_millis(100);
const MAX_BACKOFF: Duration = Duration::from_secs(5);
/// A dead-letter queue is read at most this far; a longer one is an incident, not a list.
const DEAD_LETTER_READ_LIMIT: usize = 10_000;
/// Headers travel in one frame; a handler's error text must not outgrow it.
const MAX_REASON_BYTES: usize = 8 * 1024;
/// Past this attempt `delay_after` stops growing, so no further retry queue is needed.
const LAST_GROWING_ATTEMPT: u32 = 17;

/// Every lapin failure becomes `Unavailable`, saying what we were doing: callers treat it as
/// "retry later", which is right for a lost connection, a closed channel or a refused declaration.
fn amqp_error(doing: &str, error: lapin::Error) -> BusError {
    let hint = match error.kind() {
        ErrorKind::ProtocolError(e)
            if *e.kind() == AMQPErrorKind::Soft(AMQPSoftError::PRECONDITIONFAILED) =>
        {
            " (a queue or exchange of that name exists with other arguments: queues declared \
             by an orderflow before quorum queues are classic ones; let them drain, delete them \
             with `rabbitmqctl delete_queue NAME` and start again, or use a new `prefix=`)"
        }
        _ => "",
    };
    unavailable(doing, format!("{error}{hint}"))
}

fn unavailable(doing: &str, why: impl Display) -> BusError {
    BusError::Unavailable(format!("RabbitMQ: {doing}: {why}"))
}

/// The topic on a RabbitMQ broker; see the [module docs](self).
pub struct RabbitBus {
    shared: Arc<Shared>,
    prefetch: u16,
}

struct Shared {
    topology: Arc<Topology>,
    publisher: Arc<Publisher>,
    consumers: Link,
    closed: watch::Sender<bool>,
    /// One dead-letter read at a time: a read holds the messages it has seen until it ends.
    reading_dead_letters: Mutex<()>,
}

impl RabbitBus {
    /// Connects (publishing side; the consuming connection opens on first use), declares the
    /// topology for these subscriptions, and fails if the broker does not answer.
    ///
    /// `url` is `amqp://user:pass@host:port/vhost`, optionally with `?prefix=NAME` (letters,
    /// digits, `-`, `_`, `.`), which this adapter strips before handing the rest to lapin.
    pub async fn connect(
        url: &str,
        subscriptions: &[&str],
        policy: RetryPolicy,
    ) -> Result<Self, BusError> {
        let endpoint = Endpoint::parse(url)?;
        let topology = Arc::new(Topology::new(&endpoint.prefix, subscriptions, policy)?);
        let (closed, _) = watch::channel(false);
        let instance = format!(
            "pid {} {}",
            std::process::id(),
            &Uuid::new_v4().simple().to_string()[..8]
        );
        let link = |role: &str| Link {
            url: endpoint.url.clone(),
            address: broker_address(&endpoint.url),
            shown: endpoint.shown.clone(),
            name: format!("orderflow {} {role} ({instance})", endpoint.prefix),
            topology: topology.clone(),
            connection: Mutex::new(None),
            ever_connected: AtomicBool::new(false),
            closed: closed.subscribe(),
        };
        let publisher = Arc::new(Publisher {
            link: link("publish"),
            channel: Mutex::new(None),
            stale: AtomicBool::new(false),
        });
        publisher.ready().await?;
        let consumers = link("consume");
        tracing::info!(url = %endpoint.shown, prefix = %endpoint.prefix, "RabbitMQ topic ready");
        Ok(Self {
            shared: Arc::new(Shared {
                topology,
                publisher,
                consumers,
                closed,
                reading_dead_letters: Mutex::new(()),
            }),
            prefetch: DEFAULT_PREFETCH,
        })
    }

    /// Sets the prefetch of subscriptions made from now on (at least 1).
    pub fn with_prefetch(mut self, prefetch: u16) -> Self {
        self.prefetch = prefetch.max(1);
        self
    }

    /// The prefix of every exchange and queue name of this topic.
    pub fn prefix(&self) -> &str {
        &self.shared.topology.prefix
    }

    /// Stops this handle: `next` answers `None`, deliveries not yet acked go back to their queues
    /// (the broker requeues what a closed channel held), and both connections close.
    pub async fn close(&self) {
        self.shared.closed.send_replace(true);
        self.shared.publisher.link.close().await;
        self.shared.consumers.close().await;
    }

    /// Deletes this prefix's exchange and queues, messages included: for tests and for retiring
    /// a prefix. Uses a connection of its own, so it works after [`close`](Self::close) too.
    pub async fn delete_topology(&self) -> Result<(), BusError> {
        let link = &self.shared.publisher.link;
        let name = link.name.replace(" publish ", " teardown ");
        let connection = open_connection(&link.url, &link.shown, &name).await?;
        let channel = connection
            .create_channel()
            .await
            .map_err(|e| amqp_error("open a channel", e))?;
        let result = self.shared.topology.delete(&channel).await;
        let _ = connection.close(200, "OK".into()).await;
        result
    }
}

#[async_trait]
impl EventBus for RabbitBus {
    /// A passive declare of each subscription's queue and dead-letter queue: the broker
    /// answers with its message count (ready messages only) without touching a message.
    async fn depths(&self) -> Result<Option<Vec<QueueDepth>>, BusError> {
        let mut depths = Vec::new();
        for names in &self.shared.topology.subscriptions {
            let count = |queue: String| async move {
                let channel = self.shared.consumers.channel().await?;
                let declared = channel
                    .queue_declare(
                        queue.as_str().into(),
                        QueueDeclareOptions {
                            passive: true,
                            ..QueueDeclareOptions::default()
                        },
                        FieldTable::default(),
                    )
                    .await
                    .map_err(|e| unavailable("count a queue's messages", e));
                let _ = channel.close(200, "counted".into()).await;
                Ok::<u64, BusError>(u64::from(declared?.message_count()))
            };
            let ready = count(names.queue.clone()).await?;
            let dead = count(names.dead.clone()).await?;
            depths.push(QueueDepth {
                subscription: names.subscription.clone(),
                ready,
                dead,
            });
        }
        Ok(Some(depths))
    }

    async fn publish(&self, events: Vec<RecordedEvent>) -> Result<Receipt, BusError> {
        if events.is_empty() {
            return Ok(Box::pin(async { Ok(()) }));
        }
        let exchange = &self.shared.topology.exchange;
        let messages = events
            .iter()
            .map(|event| Outgoing::event(exchange, event))
            .collect::<Result<Vec<_>, _>>()?;
        let confirms = self.shared.publisher.send(messages).await?;
        let publisher = self.shared.publisher.clone();
        Ok(Box::pin(async move {
            let confirmed = confirmed(confirms).await;
            if confirmed.is_err() {
                publisher.stale.store(true, Ordering::Release);
            }
            confirmed
        }))
    }

    async fn subscribe(&self, subscription: &str) -> Result<Box<dyn Subscription>, BusError> {
        let names = self
            .shared
            .topology
            .find(subscription)
            .ok_or_else(|| BusError::UnknownSubscription(subscription.to_owned()))?;
        let mut handle = RabbitSubscription {
            shared: self.shared.clone(),
            names,
            prefetch: self.prefetch,
            consuming: None,
            backoff: Backoff::default(),
        };
        // Consume at once: a broker that is down fails here, and the new member competes for
        // messages from now on rather than from its first `next`.
        handle.consuming = Some(handle.open().await?);
        Ok(Box::new(handle))
    }

    async fn ping(&self) -> Result<(), BusError> {
        // Opening a channel proves the connection (or a reconnect) works.
        let channel = self.shared.consumers.channel().await?;
        let _ = channel.close(200, "OK".into()).await;
        Ok(())
    }

    async fn dead_letters(&self) -> Result<Vec<DeadLetter>, BusError> {
        self.on_dead_letters(&DeadLetterFilter::default(), Act::List)
            .await
    }

    async fn redrive(&self, which: &DeadLetterFilter) -> Result<Vec<DeadLetter>, BusError> {
        self.on_dead_letters(which, Act::Redrive).await
    }

    async fn discard(
        &self,
        which: &DeadLetterFilter,
        reason: &str,
    ) -> Result<Vec<DeadLetter>, BusError> {
        self.on_dead_letters(which, Act::Discard(reason)).await
    }
}

/// What to do with the dead letters a filter selects.
#[derive(Clone, Copy)]
enum Act<'a> {
    List,
    Redrive,
    Discard(&'a str),
}

impl RabbitBus {
    /// Reads the dead-letter queues of the subscriptions `which` covers with `basic.get`, acts
    /// on each dead letter it selects, and hands every message it did not take back
    /// (`basic.nack`, requeue) before it returns. A re-driven copy is published (confirmed) to
    /// the subscription's queue before its dead letter is acked, so a failure in between leaves
    /// a duplicate, never a loss.
    async fn on_dead_letters(
        &self,
        which: &DeadLetterFilter,
        act: Act<'_>,
    ) -> Result<Vec<DeadLetter>, BusError> {
        let _one_reader = self.shared.reading_dead_letters.lock().await;
        let channel = self.shared.consumers.channel().await?;
        let mut chosen = Vec::new();
        let mut result = Ok(());
        for names in &self.shared.topology.subscriptions {
            if !which.covers(&names.subscription) {
                continue;
            }
            if let Err(error) = self
                .act_on_queue(&channel, names, which, act, &mut chosen)
                .await
            {
                result = Err(error);
                break;
            }
        }
        // Hand back everything this channel still holds; closing it would too, if the nack got lost.
        let hand_back = BasicNackOptions {
            multiple: true,
            requeue: true,
        };
        let _ = channel.basic_nack(0, hand_back).await;
        let _ = channel.close(200, "OK".into()).await;
        result.map(|()| chosen)
    }

    async fn act_on_queue(
        &self,
        channel: &Channel,
        names: &Names,
        which: &DeadLetterFilter,
        act: Act<'_>,
        into: &mut Vec<DeadLetter>,
    ) -> Result<(), BusError> {
        let policy = &self.shared.topology.policy;
        for _ in 0..DEAD_LETTER_READ_LIMIT {
            let got = channel
                .basic_get(
                    names.dead.as_str().into(),
                    BasicGetOptions { no_ack: false },
                )
                .await
                .map_err(|e| amqp_error("read the dead-letter queue", e))?;
            let Some(message) = got else {
                return Ok(());
            };
            let delivery = &message.delivery;
            let event = match serde_json::from_slice::<RecordedEvent>(&delivery.data) {
                Ok(event) => event,
                Err(error) => {
                    tracing::warn!(queue = %names.dead, %error, "undecodable dead letter skipped");
                    continue;
                }
            };
            let letter = dead_letter(names, event, &delivery.properties, policy);
            if !which.matches(&letter) {
                continue;
            }
            let tag = delivery.delivery_tag;
            let single = BasicAckOptions { multiple: false };
            match act {
                Act::List => {}
                Act::Redrive => {
                    let copy = Outgoing {
                        exchange: String::new(),
                        routing_key: names.queue.clone(),
                        body: delivery.data.clone(),
                        properties: redriven(&delivery.properties),
                    };
                    self.shared.publisher.send_confirmed(vec![copy]).await?;
                    channel
                        .basic_ack(tag, single)
                        .await
                        .map_err(|e| amqp_error("take a re-driven dead letter out", e))?;
                    tracing::info!(subscription = %letter.subscription, event_id = %letter.event.event_id, "dead letter re-driven");
                }
                Act::Discard(reason) => {
                    channel
                        .basic_ack(tag, single)
                        .await
                        .map_err(|e| amqp_error("discard a dead letter", e))?;
                    super::log_discarded(&letter, reason);
                }
            }
            into.push(letter);
        }
        tracing::warn!(queue = %names.dead, limit = DEAD_LETTER_READ_LIMIT, "dead letters read up to the limit");
        Ok(())
    }
}

/// A dead letter as its message says: parked by a handler (our headers) or by the broker's
/// delivery limit (its `x-death` history).
fn dead_letter(
    names: &Names,
    event: RecordedEvent,
    properties: &BasicProperties,
    policy: &RetryPolicy,
) -> DeadLetter {
    let attempts = header_u32(properties, ATTEMPT).unwrap_or(1);
    let (attempts, reason, dead_at) = match header_string(properties, REASON) {
        Some(reason) => (attempts, reason, header_millis(properties, DEAD_AT)),
        // Parked by the broker (its delivery limit), not by a handler.
        None => (
            attempts.max(policy.max_attempts),
            broker_reason(properties),
            broker_dead_at(properties),
        ),
    };
    DeadLetter {
        subscription: names.subscription.clone(),
        event,
        attempts,
        reason,
        dead_at,
    }
}

/// The properties of a re-driven copy: the original's (message id included), without the
/// dead-lettering, as a first delivery.
fn redriven(original: &BasicProperties) -> BasicProperties {
    let properties = forwarded(original, 1, None);
    let mut headers = properties
        .headers()
        .as_ref()
        .map(|h| h.inner().clone())
        .unwrap_or_default();
    headers.retain(|key, _| ![REASON, SUBSCRIPTION, DEAD_AT].contains(&key.as_str()));
    properties.with_headers(headers.into())
}

/// When the broker dead-lettered a message: the `time` of its newest `x-death` entry.
fn broker_dead_at(properties: &BasicProperties) -> Option<DateTime<Utc>> {
    let Some(AMQPValue::FieldArray(deaths)) = header(properties, "x-death") else {
        return None;
    };
    let Some(AMQPValue::FieldTable(death)) = deaths.as_slice().first() else {
        return None;
    };
    match death.inner().get("time") {
        Some(AMQPValue::Timestamp(seconds)) => {
            DateTime::from_timestamp(i64::try_from(*seconds).ok()?, 0)
        }
        _ => None,
    }
}

fn header_millis(properties: &BasicProperties, key: &str) -> Option<DateTime<Utc>> {
    match header(properties, key)? {
        AMQPValue::LongLongInt(ms) => DateTime::from_timestamp_millis(*ms),
        _ => None,
    }
}

/// Why the broker dead-lettered a message, from its `x-death` history.
fn broker_reason(properties: &BasicProperties) -> String {
    let first = match header(properties, "x-death") {
        Some(AMQPValue::FieldArray(deaths)) => deaths.as_slice().first().cloned(),
        _ => None,
    };
    let why = match first {
        Some(AMQPValue::FieldTable(death)) => death.inner().get("reason").and_then(|v| match v {
            AMQPValue::LongString(s) => Some(String::from_utf8_lossy(s.as_bytes()).into_owned()),
            AMQPValue::ShortString(s) => Some(s.as_str().to_owned()),
            _ => None,
        }),
        _ => None,
    };
    match why.as_deref() {
        Some("delivery_limit") => "delivered the most times allowed and never settled: its \
                                   consumer died or handed it back each time (RabbitMQ's \
                                   delivery limit)"
            .to_owned(),
        Some(other) => format!("dead-lettered by RabbitMQ: {other}"),
        None => "dead-lettered by RabbitMQ".to_owned(),
    }
}

/// The URL lapin gets, how to show it (password hidden), and our prefix.
struct Endpoint {
    url: String,
    shown: String,
    prefix: String,
}

impl Endpoint {
    fn parse(url: &str) -> Result<Self, BusError> {
        let (base, query) = url.split_once('?').unwrap_or((url, ""));
        let mut prefix = None;
        let mut rest = Vec::new();
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            match pair.strip_prefix("prefix=") {
                Some(value) => prefix = Some(value.to_owned()),
                None => rest.push(pair),
            }
        }
        let prefix = prefix.unwrap_or_else(|| DEFAULT_PREFIX.to_owned());
        let valid = |c: char| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.');
        if prefix.is_empty() || prefix.len() > 100 || !prefix.chars().all(valid) {
            return Err(BusError::Unavailable(format!(
                "RabbitMQ: prefix {prefix:?} must be 1 to 100 letters, digits, '-', '_' or '.'"
            )));
        }
        let url = if rest.is_empty() {
            base.to_owned()
        } else {
            format!("{base}?{}", rest.join("&"))
        };
        Ok(Self {
            shown: redact(&url),
            url,
            prefix,
        })
    }
}

/// The URL without its password, for logs and errors.
fn redact(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let authority_end = rest.find('/').unwrap_or(rest.len());
    match rest[..authority_end].rsplit_once('@') {
        Some((credentials, host)) => {
            let user = credentials.split(':').next().unwrap_or_default();
            format!("{scheme}://{user}:***@{host}{}", &rest[authority_end..])
        }
        None => url.to_owned(),
    }
}

/// The names of one subscription's queues.
struct Names {
    subscription: String,
    queue: String,
    dead: String,
}

impl Names {
    /// The retry queue a message waits in after failing delivery number `attempt`.
    fn retry(&self, attempt: u32, policy: &RetryPolicy) -> String {
        let delay = policy.delay_after(attempt).as_millis();
        format!("{}.retry.{delay}ms", self.queue)
    }
}

struct Topology {
    prefix: String,
    exchange: String,
    subscriptions: Vec<Arc<Names>>,
    policy: RetryPolicy,
}

impl Topology {
    fn new(prefix: &str, subscriptions: &[&str], policy: RetryPolicy) -> Result<Self, BusError> {
        let mut names: Vec<Arc<Names>> = Vec::new();
        for &subscription in subscriptions {
            if subscription.is_empty() || subscription.chars().any(char::is_whitespace) {
                return Err(BusError::Unavailable(format!(
                    "RabbitMQ: subscription name {subscription:?} must be non-empty without spaces"
                )));
            }
            if names.iter().all(|n| n.subscription != subscription) {
                names.push(Arc::new(Names {
                    subscription: subscription.to_owned(),
                    queue: format!("{prefix}.{subscription}"),
                    dead: format!("{prefix}.{subscription}.dead"),
                }));
            }
        }
        let topology = Self {
            prefix: prefix.to_owned(),
            exchange: format!("{prefix}.events"),
            subscriptions: names,
            policy,
        };
        let too_long = topology.all_names().find(|n| n.len() > 255);
        match too_long {
            Some(long) => Err(BusError::Unavailable(format!(
                "RabbitMQ: name {long:?} is longer than 255 bytes; shorten the prefix or subscription"
            ))),
            None => Ok(topology),
        }
    }

    fn find(&self, subscription: &str) -> Option<Arc<Names>> {
        self.subscriptions
            .iter()
            .find(|n| n.subscription == subscription)
            .cloned()
    }

    /// The distinct retry queues of a subscription: one per delay the policy uses.
    fn retry_queues(&self, names: &Names) -> Vec<(String, Duration)> {
        let mut queues: Vec<(String, Duration)> = Vec::new();
        let last = self.policy.max_attempts.min(LAST_GROWING_ATTEMPT + 1);
        for attempt in 1..last {
            let queue = names.retry(attempt, &self.policy);
            if queues.iter().all(|(q, _)| *q != queue) {
                queues.push((queue, self.policy.delay_after(attempt)));
            }
        }
        queues
    }

    fn all_names(&self) -> impl Iterator<Item = String> + '_ {
        let queues = self.subscriptions.iter().flat_map(|names| {
            let retries = self.retry_queues(names).into_iter().map(|(q, _)| q);
            [names.queue.clone(), names.dead.clone()]
                .into_iter()
                .chain(retries)
        });
        std::iter::once(self.exchange.clone()).chain(queues)
    }

    async fn declare(&self, channel: &Channel) -> Result<(), BusError> {
        let durable = ExchangeDeclareOptions {
            durable: true,
            ..ExchangeDeclareOptions::default()
        };
        let exchange: ShortString = self.exchange.as_str().into();
        channel
            .exchange_declare(
                exchange.clone(),
                ExchangeKind::Topic,
                durable,
                FieldTable::default(),
            )
            .await
            .map_err(|e| amqp_error(&format!("declare exchange {}", self.exchange), e))?;
        for names in &self.subscriptions {
            let mut main = quorum();
            // Deliveries the broker counts (a consumer that died, or handed the message back)
            // beyond this many more, it dead-letters the message itself: a message that kills
            // its consumer every time is parked after `max_attempts` deliveries.
            let limit = i64::from(self.policy.max_attempts.saturating_sub(1));
            main.insert("x-delivery-limit".into(), AMQPValue::LongLongInt(limit));
            dead_letter_to(&mut main, &names.dead);
            declare_queue(channel, &names.queue, main).await?;
            channel
                .queue_bind(
                    names.queue.as_str().into(),
                    exchange.clone(),
                    "#".into(),
                    QueueBindOptions::default(),
                    FieldTable::default(),
                )
                .await
                .map_err(|e| amqp_error(&format!("bind {}", names.queue), e))?;
            for (queue, delay) in self.retry_queues(names) {
                let mut arguments = quorum();
                let ttl = i64::try_from(delay.as_millis()).unwrap_or(i64::MAX);
                let ttl = ttl.min(i64::from(u32::MAX));
                arguments.insert("x-message-ttl".into(), AMQPValue::LongLongInt(ttl));
                dead_letter_to(&mut arguments, &names.queue);
                declare_queue(channel, &queue, arguments).await?;
            }
            declare_queue(channel, &names.dead, quorum()).await?;
        }
        Ok(())
    }

    async fn delete(&self, channel: &Channel) -> Result<(), BusError> {
        for name in self.all_names().skip(1) {
            channel
                .queue_delete(name.as_str().into(), QueueDeleteOptions::default())
                .await
                .map_err(|e| amqp_error(&format!("delete queue {name}"), e))?;
        }
        channel
            .exchange_delete(
                self.exchange.as_str().into(),
                ExchangeDeleteOptions::default(),
            )
            .await
            .map_err(|e| amqp_error(&format!("delete exchange {}", self.exchange), e))
    }
}

/// A quorum queue's arguments: replicated and durable, counting each message's deliveries.
fn quorum() -> FieldTable {
    let mut arguments = FieldTable::default();
    arguments.insert("x-queue-type".into(), long_string("quorum"));
    arguments
}

/// Dead-letters to `queue` through the default exchange, at least once: the broker keeps the
/// message until the target queue has confirmed it (which needs `reject-publish` overflow).
fn dead_letter_to(arguments: &mut FieldTable, queue: &str) {
    arguments.insert("x-dead-letter-exchange".into(), long_string(""));
    arguments.insert("x-dead-letter-routing-key".into(), long_string(queue));
    arguments.insert(
        "x-dead-letter-strategy".into(),
        long_string("at-least-once"),
    );
    arguments.insert("x-overflow".into(), long_string("reject-publish"));
}

async fn declare_queue(
    channel: &Channel,
    name: &str,
    arguments: FieldTable,
) -> Result<(), BusError> {
    let durable = QueueDeclareOptions {
        durable: true,
        ..QueueDeclareOptions::default()
    };
    channel
        .queue_declare(name.into(), durable, arguments)
        .await
        .map(drop)
        .map_err(|e| amqp_error(&format!("declare queue {name}"), e))
}

/// The largest frame asked for when the URL names none (`?frame_max=N`). lapin keeps a send
/// and a receive buffer of 32 frames per connection, zeroed; at RabbitMQ's default of 128 KiB
/// those were 8 MiB per connection, most of an idle role's memory (33 MB against 18 MB for a
/// role without a broker connection). Events are a few kilobytes, and bigger ones are sent
/// as several frames.
const FRAME_MAX: u32 = 16 * 1024;

async fn open_connection(url: &str, shown: &str, name: &str) -> Result<Connection, BusError> {
    let properties = ConnectionProperties::default().with_connection_name(name.into());
    let mut uri: lapin::uri::AMQPUri = url
        .parse()
        .map_err(|e| unavailable(&format!("connect to {shown}"), format!("bad URL: {e}")))?;
    uri.query.frame_max.get_or_insert(FRAME_MAX);
    match tokio::time::timeout(CONNECT_TIMEOUT, Connection::connect_uri(uri, properties)).await {
        Ok(Ok(connection)) => Ok(connection),
        Ok(Err(error)) => Err(amqp_error(&format!("connect to {shown}"), error)),
        Err(_) => Err(unavailable(
            &format!("connect to {shown}"),
            format!("no answer within {CONNECT_TIMEOUT:?}"),
        )),
    }
}

/// One connection, replaced when found closed. Every channel it hands out has the topology
/// declared on it, which is how a reconnect (or a queue deleted under us) declares it again.
struct Link {
    url: String,
    /// `host:port`, to knock on while reconnecting.
    address: Option<String>,
    shown: String,
    name: String,
    topology: Arc<Topology>,
    connection: Mutex<Option<Connection>>,
    ever_connected: AtomicBool,
    closed: watch::Receiver<bool>,
}

impl Link {
    async fn channel(&self) -> Result<Channel, BusError> {
        let mut connection = self.connection.lock().await;
        // Checked under the lock that `close` takes too: after `close`, nothing reconnects.
        if *self.closed.borrow() {
            return Err(BusError::Unavailable("RabbitMQ: the bus is closed".into()));
        }
        let live = match connection.take() {
            Some(current) if current.status().connected() => current,
            _ => {
                let fresh = open_connection(&self.url, &self.shown, &self.name).await?;
                if self.ever_connected.swap(true, Ordering::AcqRel) {
                    tracing::info!(connection = %self.name, "reconnected to RabbitMQ");
                }
                fresh
            }
        };
        let channel = live.create_channel().await;
        *connection = Some(live);
        drop(connection);
        let channel = channel.map_err(|e| amqp_error("open a channel", e))?;
        self.topology.declare(&channel).await?;
        Ok(channel)
    }

    async fn close(&self) {
        if let Some(connection) = self.connection.lock().await.take() {
            let _ = connection.close(200, "OK".into()).await;
        }
    }
}

/// One message on its way to the broker.
struct Outgoing {
    exchange: String,
    routing_key: String,
    body: Vec<u8>,
    properties: BasicProperties,
}

impl Outgoing {
    fn event(exchange: &str, event: &RecordedEvent) -> Result<Self, BusError> {
        let body = serde_json::to_vec(event).map_err(|e| unavailable("encode an event", e))?;
        let mut headers = FieldTable::default();
        headers.insert("event_type".into(), long_string(&event.event_type));
        headers.insert("stream_id".into(), long_string(&event.stream_id));
        if let Some(traceparent) = &event.metadata.traceparent {
            headers.insert(TRACEPARENT.into(), long_string(traceparent));
        }
        let properties = BasicProperties::default()
            .with_message_id(event.event_id.to_string().into())
            .with_content_type("application/json".into())
            .with_delivery_mode(2)
            .with_headers(headers);
        Ok(Self {
            exchange: exchange.to_owned(),
            routing_key: clip(&format!("{}.{}", event.stream_type, event.event_type), 255)
                .to_owned(),
            body,
            properties,
        })
    }
}

/// The publishing connection's one confirm-mode channel. Sends are serialised: lapin numbers a
/// confirm before it queues the frames, so two tasks publishing at once on one channel could
/// have their confirms swapped.
struct Publisher {
    link: Link,
    channel: Mutex<Option<Channel>>,
    /// Set when a receipt failed: the next send opens a fresh channel (declaring the topology).
    stale: AtomicBool,
}

impl Publisher {
    async fn ready(&self) -> Result<(), BusError> {
        let mut channel = self.channel.lock().await;
        self.usable(&mut channel).await.map(drop)
    }

    async fn usable(&self, slot: &mut Option<Channel>) -> Result<Channel, BusError> {
        let stale = self.stale.swap(false, Ordering::AcqRel);
        if let Some(channel) = slot.as_ref().filter(|c| !stale && c.status().connected()) {
            return Ok(channel.clone());
        }
        *slot = None;
        let channel = self.link.channel().await?;
        channel
            .confirm_select(ConfirmSelectOptions::default())
            .await
            .map_err(|e| amqp_error("turn publisher confirms on", e))?;
        *slot = Some(channel.clone());
        Ok(channel)
    }

    /// Sends the messages in order and answers their pending confirms.
    async fn send(&self, messages: Vec<Outgoing>) -> Result<Vec<PublisherConfirm>, BusError> {
        let mut slot = self.channel.lock().await;
        let channel = self.usable(&mut slot).await?;
        let mut confirms = Vec::with_capacity(messages.len());
        let mandatory = BasicPublishOptions {
            mandatory: true,
            immediate: false,
        };
        for message in messages {
            let sent = channel
                .basic_publish(
                    message.exchange.as_str().into(),
                    message.routing_key.as_str().into(),
                    mandatory,
                    &message.body,
                    message.properties,
                )
                .await;
            match sent {
                Ok(confirm) => confirms.push(confirm),
                Err(error) => {
                    *slot = None;
                    return Err(amqp_error("publish", error));
                }
            }
        }
        Ok(confirms)
    }

    /// Sends and waits for the broker's confirms.
    async fn send_confirmed(&self, messages: Vec<Outgoing>) -> Result<(), BusError> {
        let confirmed = confirmed(self.send(messages).await?).await;
        if confirmed.is_err() {
            self.stale.store(true, Ordering::Release);
        }
        confirmed
    }
}

async fn confirmed(confirms: Vec<PublisherConfirm>) -> Result<(), BusError> {
    for confirm in confirms {
        match confirm.await {
            Ok(Confirmation::Ack(None)) => {}
            Ok(Confirmation::Ack(Some(returned))) => {
                return Err(unavailable(
                    "publish",
                    format!("message returned unroutable ({})", returned.reply_text),
                ));
            }
            Ok(Confirmation::Nack(_)) => {
                return Err(unavailable("publish", "the broker nacked a message"));
            }
            Ok(Confirmation::NotRequested) => {
                return Err(unavailable("publish", "publisher confirms are off"));
            }
            Err(error) => return Err(amqp_error("wait for publisher confirms", error)),
        }
    }
    Ok(())
}

/// How often a consumer waiting to reconnect knocks on the broker's port.
const KNOCK: Duration = Duration::from_millis(200);

/// Resolves once a broker found not answering answers again: after an outage the consumers
/// reconnect within about [`KNOCK`] of the broker's return instead of at the end of a backoff
/// that has grown to [`MAX_BACKOFF`] (after an 11 s stop they took 19 s to heal). A knock
/// sends AMQP's protocol header and waits for the first byte of the broker's answer, so a
/// proxy or load balancer that takes the connection and closes it counts as down. If the first
/// knock is answered (the broker is up and the trouble is elsewhere), it never resolves and
/// the backoff paces the retries; nor when the address is unknown.
async fn broker_back(address: Option<String>) {
    let Some(address) = address else {
        return std::future::pending().await;
    };
    let mut seen_down = false;
    loop {
        match knock(&address).await {
            true if seen_down => return,
            true => return std::future::pending().await,
            false => seen_down = true,
        }
        tokio::time::sleep(KNOCK).await;
    }
}

/// Whether a broker answers at `address`: the AMQP 0-9-1 protocol header, then any byte back
/// (its `connection.start`), each step within a second.
async fn knock(address: &str) -> bool {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let step = Duration::from_secs(1);
    let answered = async {
        let mut stream = tokio::time::timeout(step, tokio::net::TcpStream::connect(address))
            .await
            .ok()?
            .ok()?;
        stream.write_all(b"AMQP\x00\x00\x09\x01").await.ok()?;
        let mut first = [0u8; 1];
        let read = tokio::time::timeout(step, stream.read(&mut first))
            .await
            .ok()?
            .ok()?;
        (read == 1).then_some(())
    };
    answered.await.is_some()
}

/// `host:port` of an AMQP URL, for knocking (the port defaults to 5672, or 5671 for `amqps`).
fn broker_address(url: &str) -> Option<String> {
    let (scheme, rest) = url.split_once("://")?;
    let authority = rest.split(['/', '?']).next()?;
    let host_port = authority.rsplit('@').next()?;
    if host_port.is_empty() {
        return None;
    }
    let has_port = match host_port.rfind(']') {
        Some(bracket) => host_port[bracket..].contains(':'),
        None => host_port.contains(':'),
    };
    if has_port {
        return Some(host_port.to_owned());
    }
    let port = if scheme == "amqps" { 5671 } else { 5672 };
    Some(format!("{host_port}:{port}"))
}

#[derive(Clone, Copy)]
struct Backoff(Duration);

impl Default for Backoff {
    fn default() -> Self {
        Self(FIRST_BACKOFF)
    }
}

impl Backoff {
    fn next(&mut self) -> Duration {
        let wait = self.0;
        self.0 = (self.0 * 2).min(MAX_BACKOFF);
        wait
    }
}

struct RabbitSubscription {
    shared: Arc<Shared>,
    names: Arc<Names>,
    prefetch: u16,
    consuming: Option<Consuming>,
    backoff: Backoff,
}

struct Consuming {
    channel: Channel,
    consumer: lapin::Consumer,
}

impl RabbitSubscription {
    async fn open(&self) -> Result<Consuming, BusError> {
        let channel = self.shared.consumers.channel().await?;
        channel
            .basic_qos(self.prefetch, BasicQosOptions::default())
            .await
            .map_err(|e| amqp_error("set the prefetch", e))?;
        let tag = format!("{}-{}", self.names.subscription, Uuid::new_v4().simple());
        let consumer = channel
            .basic_consume(
                self.names.queue.as_str().into(),
                clip(&tag, 255).into(),
                BasicConsumeOptions::default(),
                FieldTable::default(),
            )
            .await
            .map_err(|e| amqp_error(&format!("consume {}", self.names.queue), e))?;
        Ok(Consuming { channel, consumer })
    }

    /// Turns a broker delivery into a port delivery; an undecodable one goes straight to the
    /// dead-letter queue (in a task, so that cancelling `next` cannot strand it unacked).
    fn deliver(&self, raw: AmqpDelivery, channel: Channel) -> Option<Delivery> {
        // Our retries count in `x-attempt`; the deliveries the broker counts (returns after a
        // consumer died or handed the message back) in `x-delivery-count`.
        let attempt = header_u32(&raw.properties, ATTEMPT)
            .unwrap_or(1)
            .max(1)
            .saturating_add(header_u32(&raw.properties, DELIVERY_COUNT).unwrap_or(0));
        let decoded = serde_json::from_slice::<RecordedEvent>(&raw.data);
        let (event_id, event_type) = match &decoded {
            Ok(event) => (event.event_id.to_string(), event.event_type.clone()),
            Err(_) => (
                raw.properties
                    .message_id()
                    .as_ref()
                    .map(ToString::to_string)
                    .unwrap_or_default(),
                "undecodable".to_owned(),
            ),
        };
        let pending = Pending {
            acker: raw.acker,
            _channel: channel,
            properties: raw.properties,
            data: raw.data,
            attempt,
            event_id,
            event_type,
            names: self.names.clone(),
            shared: self.shared.clone(),
        };
        match decoded {
            Ok(event) => Some(Delivery {
                event,
                attempt,
                settle: Box::new(RabbitSettle(Some(pending))),
            }),
            Err(error) => {
                let reason = format!("undecodable message: {error}");
                tokio::spawn(pending.give_up(reason));
                None
            }
        }
    }

    /// Forgets a lost consumer and waits before the next try, or less if the broker comes back
    /// meanwhile; `false` if the bus closed meanwhile.
    async fn lost(&mut self, closed: &mut watch::Receiver<bool>) -> bool {
        self.consuming = None;
        let wait = self.backoff.next();
        let back = broker_back(self.shared.consumers.address.clone());
        tokio::select! {
            _ = crate::stopped(closed) => false,
            _ = tokio::time::sleep(wait) => true,
            () = back => true,
        }
    }
}

#[async_trait]
impl Subscription for RabbitSubscription {
    /// Cancels the consumer, so that deliveries handed back from now on go to other consumers
    /// rather than come back here and be returned again when the channel closes (each return
    /// counts toward the delivery limit).
    async fn stop(&mut self) {
        if let Some(consuming) = self.consuming.take() {
            let tag = consuming.consumer.tag();
            if let Err(error) = consuming
                .channel
                .basic_cancel(tag, BasicCancelOptions::default())
                .await
            {
                tracing::debug!(subscription = %self.names.subscription, %error, "cancelling the consumer failed; its channel closes anyway");
            }
        }
    }

    async fn next(&mut self) -> Option<Delivery> {
        let mut closed = self.shared.closed.subscribe();
        loop {
            if *closed.borrow_and_update() {
                return None;
            }
            let Some(consuming) = self.consuming.as_mut() else {
                match self.open().await {
                    Ok(consuming) => {
                        tracing::info!(subscription = %self.names.subscription, "consuming again");
                        self.consuming = Some(consuming);
                    }
                    Err(error) => {
                        tracing::warn!(subscription = %self.names.subscription, %error, "cannot consume; retrying");
                        if !self.lost(&mut closed).await {
                            return None;
                        }
                    }
                }
                continue;
            };
            let item = tokio::select! {
                item = consuming.consumer.next() => item,
                _ = crate::stopped(&mut closed) => return None,
            };
            match item {
                Some(Ok(raw)) if raw.acker.poisoned() => {
                    // Buffered before its channel died: the broker requeued it already.
                    tracing::debug!(subscription = %self.names.subscription, "skipping a delivery of a dead channel");
                }
                Some(Ok(raw)) => {
                    self.backoff = Backoff::default();
                    let channel = consuming.channel.clone();
                    if let Some(delivery) = self.deliver(raw, channel) {
                        return Some(delivery);
                    }
                }
                Some(Err(error)) => {
                    tracing::warn!(subscription = %self.names.subscription, %error, "consumer lost; reconnecting");
                    if !self.lost(&mut closed).await {
                        return None;
                    }
                }
                None => {
                    tracing::warn!(subscription = %self.names.subscription, "consumer cancelled; consuming again");
                    if !self.lost(&mut closed).await {
                        return None;
                    }
                }
            }
        }
    }
}

/// A delivery not settled yet, with what it takes to ack it or move it on.
struct Pending {
    acker: Acker,
    /// Keeps the channel open until this delivery is settled: closing it would requeue it.
    _channel: Channel,
    properties: BasicProperties,
    data: Vec<u8>,
    attempt: u32,
    event_id: String,
    event_type: String,
    names: Arc<Names>,
    shared: Arc<Shared>,
}

impl Pending {
    async fn ack(self) {
        match self.acker.ack(BasicAckOptions::default()).await {
            Ok(true) => {}
            Ok(false) => {
                tracing::debug!(event_id = %self.event_id, "channel gone before the ack; the broker redelivers")
            }
            Err(error) => {
                tracing::warn!(event_id = %self.event_id, %error, "ack failed; the broker redelivers")
            }
        }
    }

    /// A failed attempt: to the retry queue of its delay, or, at the last attempt, dead-lettered.
    async fn fail(self, reason: String) {
        let policy = self.shared.topology.policy;
        if self.attempt >= policy.max_attempts {
            return self.give_up(reason).await;
        }
        tracing::warn!(
            subscription = %self.names.subscription,
            event_id = %self.event_id,
            attempt = self.attempt,
            %reason,
            "delivery failed; will retry"
        );
        let queue = self.names.retry(self.attempt, &policy);
        let properties = forwarded(&self.properties, self.attempt + 1, None);
        let pause = policy.delay_after(self.attempt);
        self.move_to(queue, properties, pause).await;
    }

    /// Dead-letters the message with the reason.
    async fn give_up(self, reason: String) {
        tracing::error!(
            subscription = %self.names.subscription,
            event_id = %self.event_id,
            event_type = %self.event_type,
            attempts = self.attempt,
            %reason,
            "dead-lettered"
        );
        let dead = (
            self.names.subscription.as_str(),
            clip(&reason, MAX_REASON_BYTES),
        );
        let properties = forwarded(&self.properties, self.attempt, Some(dead));
        let queue = self.names.dead.clone();
        self.move_to(queue, properties, Duration::ZERO).await;
    }

    /// Publishes the copy (confirmed), then acks the original; if the copy cannot be published,
    /// requeues the original after `pause` so that it is not lost and does not spin.
    async fn move_to(self, queue: String, properties: BasicProperties, pause: Duration) {
        let copy = Outgoing {
            exchange: String::new(),
            routing_key: queue,
            body: self.data.clone(),
            properties,
        };
        match self.shared.publisher.send_confirmed(vec![copy]).await {
            Ok(()) => self.ack().await,
            Err(error) => {
                tracing::warn!(event_id = %self.event_id, %error, "cannot move a failed delivery; requeueing it");
                tokio::time::sleep(pause.min(MAX_BACKOFF)).await;
                let requeue = BasicNackOptions {
                    multiple: false,
                    requeue: true,
                };
                let _ = self.acker.nack(requeue).await;
            }
        }
    }
}

struct RabbitSettle(Option<Pending>);

#[async_trait]
impl Settle for RabbitSettle {
    async fn ack(mut self: Box<Self>) {
        if let Some(pending) = self.0.take() {
            pending.ack().await;
        }
    }

    async fn nack(mut self: Box<Self>, reason: String) {
        if let Some(pending) = self.0.take() {
            pending.fail(reason).await;
        }
    }

    async fn park(mut self: Box<Self>, reason: String) {
        if let Some(pending) = self.0.take() {
            pending.give_up(reason).await;
        }
    }

    async fn release(mut self: Box<Self>) {
        if let Some(pending) = self.0.take() {
            // Back to the queue as it is: its `x-attempt` is unchanged.
            let requeue = BasicNackOptions {
                multiple: false,
                requeue: true,
            };
            if let Err(error) = pending.acker.nack(requeue).await {
                tracing::debug!(event_id = %pending.event_id, %error, "release failed; the broker redelivers when the channel closes");
            }
        }
    }
}

impl Drop for RabbitSettle {
    fn drop(&mut self) {
        let Some(pending) = self.0.take() else {
            return;
        };
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) => {
                runtime.spawn(pending.fail("delivery dropped without being settled".into()));
            }
            Err(_) => tracing::warn!(
                event_id = %pending.event_id,
                "delivery dropped outside a runtime; the broker redelivers it when its channel closes"
            ),
        }
    }
}

/// The properties of a re-published copy: the original's, without the broker's dead-lettering
/// history, with the attempt number and, for a dead letter, the subscription and reason.
fn forwarded(
    original: &BasicProperties,
    attempt: u32,
    dead: Option<(&str, &str)>,
) -> BasicProperties {
    let mut headers: BTreeMap<ShortString, AMQPValue> = original
        .headers()
        .as_ref()
        .map(|h| h.inner().clone())
        .unwrap_or_default();
    // The broker's own counts belong to the queue it came from: a copy starts afresh.
    headers.retain(|key, _| {
        let key = key.as_str();
        key != "x-death"
            && key != DELIVERY_COUNT
            && !key.starts_with("x-first-death-")
            && !key.starts_with("x-last-death-")
    });
    headers.insert(ATTEMPT.into(), AMQPValue::LongLongInt(attempt.into()));
    if let Some((subscription, reason)) = dead {
        headers.insert(SUBSCRIPTION.into(), long_string(subscription));
        headers.insert(REASON.into(), long_string(reason));
        headers.insert(
            DEAD_AT.into(),
            AMQPValue::LongLongInt(Utc::now().timestamp_millis()),
        );
    }
    original
        .clone()
        .with_delivery_mode(2)
        .with_headers(headers.into())
}

fn long_string(value: &str) -> AMQPValue {
    AMQPValue::LongString(LongString::from(value.as_bytes().to_vec()))
}

fn header<'a>(properties: &'a BasicProperties, key: &str) -> Option<&'a AMQPValue> {
    properties.headers().as_ref()?.inner().get(key)
}

fn header_u32(properties: &BasicProperties, key: &str) -> Option<u32> {
    let number = match header(properties, key)? {
        AMQPValue::ShortShortInt(n) => i64::from(*n),
        AMQPValue::ShortShortUInt(n) => i64::from(*n),
        AMQPValue::ShortInt(n) => i64::from(*n),
        AMQPValue::ShortUInt(n) => i64::from(*n),
        AMQPValue::LongInt(n) => i64::from(*n),
        AMQPValue::LongUInt(n) => i64::from(*n),
        AMQPValue::LongLongInt(n) => *n,
        _ => return None,
    };
    u32::try_from(number).ok()
}

fn header_string(properties: &BasicProperties, key: &str) -> Option<String> {
    match header(properties, key)? {
        AMQPValue::LongString(s) => Some(String::from_utf8_lossy(s.as_bytes()).into_owned()),
        AMQPValue::ShortString(s) => Some(s.as_str().to_owned()),
        _ => None,
    }
}

/// At most `max` bytes of `text`, cut at a character boundary.
fn clip(text: &str, max: usize) -> &str {
    let mut end = text.len().min(max);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

/// Against a real broker, so only with the `servers` feature (`cargo test --workspace`).
#[cfg(all(test, feature = "servers"))]
pub(crate) mod server_tests;
#[cfg(test)]
mod tests;
