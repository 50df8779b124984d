//! The Azure Service Bus topic (`azure_messaging_servicebus` 0.21, REST with SAS): the
//! `EventBus` of the Azure deployment. Built only with the `azure` feature of this crate.
//!
//! **Topology it expects** (provisioned outside the application, see `docs/deploy-azure.md`):
//! one topic with *duplicate detection* on, and one subscription per consuming role, each with a
//! *max delivery count* equal to [`RetryPolicy::max_attempts`] and a *lock duration* at least
//! [`ServiceBusSettings::lock_duration`]. The adapter creates nothing: the crate has no management
//! calls, and a role should not need the `Manage` right.
//!
//! **What maps to what.**
//!
//! - [`EventBus::publish`]: one *Send Message* (`POST /{topic}/messages`) per event, in order,
//!   body the [`RecordedEvent`] as JSON (`application/json`), `BrokerProperties` `MessageId` = event
//!   id (so the topic's duplicate detection drops a batch the relay publishes twice) and `Label` =
//!   event type, and the custom property `Diagnostic-Id` = the event's `traceparent` (where
//!   Azure's SDKs carry trace context). Batches are sent one after the other in publish order. The [`Receipt`] resolves
//!   `Ok` once every send was answered with success (Service Bus answers a send once the message is
//!   stored durably), `Err` on the first failure; the relay then publishes again from its
//!   checkpoint, and duplicate detection absorbs what had already gone through.
//! - [`EventBus::subscribe`] / [`Subscription::next`]: a loop of *Peek-Lock Message*
//!   (`POST /{topic}/subscriptions/{name}/messages/head?timeout=N`, a long poll of
//!   [`ServiceBusSettings::receive_timeout`], whole seconds). Handles of one name compete: the lock
//!   gives a message to one of them. [`Delivery::attempt`] is the message's `DeliveryCount`.
//! - `ack`: *Delete Message* (complete) on the lock's `Location`.
//! - `nack(reason)`: waits [`RetryPolicy::delay_after`]`(attempt)` while still holding the lock
//!   (capped at half the lock duration, so the lock cannot lapse meanwhile), then *Unlock Message*
//!   (abandon): Service Bus delivers it again with `DeliveryCount` + 1. Dropping a delivery unsettled
//!   abandons it at once (on the current Tokio runtime); if that cannot run, the lock expires and
//!   the message comes back the same way.
//! - **Dead letters**: the crate has no dead-letter call, so the adapter never dead-letters
//!   itself: Service Bus moves a message to the subscription's `$DeadLetterQueue` when its delivery
//!   count passes the subscription's max delivery count. The handler's reason **cannot be attached**
//!   through this crate (the REST API sets the dead-letter reason only on an explicit dead-letter
//!   call); it is logged instead, and a dead letter's `reason` is what Service Bus records
//!   (`DeadLetterReason`, for instance `MaxDeliveryCountExceeded`, and its description).
//! - [`EventBus::dead_letters`]: for each subscription, peek-locks everything in
//!   `{topic}/subscriptions/{name}/$DeadLetterQueue` (timeout 0), then unlocks it all again, so
//!   reading does not take them away. `attempts` is the policy's `max_attempts` (what the max
//!   delivery count means), because the REST receive counts every read of the dead-letter queue
//!   in `DeliveryCount` too. Several readers at once see fewer (an operator's view, not a ledger).
//!   Service Bus records no time of dead-lettering, so `dead_at` is `None`.
//! - [`EventBus::redrive`]: Service Bus cannot send to one subscription, so the copy goes to the
//!   topic with `To` = the subscription's name, and each subscription's rule
//!   (`sys.To IS NULL OR sys.To = '{name}'`, provisioned by `docs/deploy-azure.md`) lets only
//!   that subscription take it; without the rules every subscription gets it again (harmless,
//!   since every consumer is idempotent by event, but wasted work). The body is the same event;
//!   the `MessageId` cannot be the event id, which duplicate detection would drop within its
//!   window ("a message with a MessageId seen within the window is accepted and dropped"), so it
//!   is `{event id}.{subscription}.{sequence number of the dead letter}`: the same on a retry of
//!   the same re-drive, which duplicate detection then absorbs. The dead letter is completed
//!   after the send succeeded. [`EventBus::discard`] completes the selected dead letters and
//!   logs them.
//!
//! **Errors** all become [`BusError::Unavailable`] in [`service_bus_error`]; a refused SAS token
//! (401) says so. [`Subscription::next`] never gives up while the bus is open: failed receives are
//! logged and retried with backoff (0.1 s doubling to 5 s); it answers `None` after
//! [`ServiceBusTopic::close`].
//!
//! **Endpoint.** The crate fixes it to `https://{namespace}.servicebus.windows.net`; its HTTP client
//! is pluggable, and ours ([`RoutedClient`]) can send every request to
//! [`ServiceBusSettings::base_url`] instead, keeping path, query and headers (the SAS token still
//! names the Azure resource). Tests use that to point the adapter at a local fake.
//!
//! **Secrets.** The SAS key is a [`SasKey`], whose `Debug` and `Display` print `***`; nothing here
//! logs it or the `Authorization` header.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use azure_core::auth::Secret;
use azure_core::headers::{HeaderName, HeaderValue, Headers};
use azure_core::{Body, HttpClient, Request, Response, StatusCode};
use azure_messaging_servicebus::prelude::{SubscriptionReceiver, TopicClient, TopicSender};
use azure_messaging_servicebus::service_bus::{
    PeekLockResponse, SendMessageOptions, SettableBrokerProperties,
};
use domain::RecordedEvent;
use tokio::sync::{Mutex, watch};

use super::{
    BusError, DeadLetter, DeadLetterFilter, Delivery, EventBus, Receipt, RetryPolicy, Settle,
    Subscription,
};

/// The long poll of one receive unless configured otherwise (Service Bus allows up to 60 s).
pub const DEFAULT_RECEIVE_TIMEOUT: Duration = Duration::from_secs(30);
/// Service Bus's default lock duration.
pub const DEFAULT_LOCK_DURATION: Duration = Duration::from_secs(60);
/// A dead-letter queue is read at most this far; a longer one is an incident, not a list.
const DEAD_LETTER_READ_LIMIT: usize = 10_000;
const FIRST_BACKOFF: Duration = Duration::from_millis(100);
const MAX_BACKOFF: Duration = Duration::from_secs(5);
const DEAD_LETTER_QUEUE: &str = "$DeadLetterQueue";
/// The application property Azure's Service Bus SDKs carry a message's W3C trace context in.
const DIAGNOSTIC_ID: &str = "Diagnostic-Id";

pub use crate::sas::SasKey;

/// Where the topic is and how to use it; see the [module docs](self).
#[derive(Debug, Clone)]
pub struct ServiceBusSettings {
    /// The namespace name: `{namespace}.servicebus.windows.net`.
    pub namespace: String,
    pub topic: String,
    /// The shared access policy name (`skn`), with `Send` and `Listen` rights.
    pub key_name: String,
    pub key: SasKey,
    /// The subscriptions this process may consume (they must exist on the topic).
    pub subscriptions: Vec<String>,
    /// `max_attempts` must equal the subscriptions' max delivery count.
    pub policy: RetryPolicy,
    /// The subscriptions' lock duration; a nack's wait is capped at half of it.
    pub lock_duration: Duration,
    /// How long one receive waits for a message (whole seconds, at least 1).
    pub receive_timeout: Duration,
    /// Send every request here instead of `https://{namespace}.servicebus.windows.net`
    /// (`http://127.0.0.1:PORT` for a local fake).
    pub base_url: Option<String>,
}

impl ServiceBusSettings {
    /// Settings with Service Bus's defaults for lock duration and a 30 s receive.
    pub fn new(
        namespace: impl Into<String>,
        topic: impl Into<String>,
        key_name: impl Into<String>,
        key: SasKey,
        subscriptions: &[&str],
        policy: RetryPolicy,
    ) -> Self {
        Self {
            namespace: namespace.into(),
            topic: topic.into(),
            key_name: key_name.into(),
            key,
            subscriptions: subscriptions.iter().map(|s| (*s).to_owned()).collect(),
            policy,
            lock_duration: DEFAULT_LOCK_DURATION,
            receive_timeout: DEFAULT_RECEIVE_TIMEOUT,
            base_url: None,
        }
    }
}

/// Every failure of the crate becomes `Unavailable`, saying what we were doing; a refused token
/// says so, since that is a configuration error rather than an outage.
fn service_bus_error(doing: &str, error: &azure_core::Error) -> BusError {
    match error.kind() {
        azure_core::error::ErrorKind::HttpResponse { status, .. } => status_error(doing, *status),
        _ => BusError::Unavailable(format!("Service Bus: {doing}: {error}")),
    }
}

fn status_error(doing: &str, status: StatusCode) -> BusError {
    let hint = match status {
        StatusCode::Unauthorized => " (SAS token refused: check the key name and key)",
        StatusCode::Forbidden => " (the SAS policy lacks the Send or Listen right)",
        StatusCode::NotFound => " (no such topic, subscription or lock)",
        StatusCode::Gone => " (the lock expired)",
        _ => "",
    };
    BusError::Unavailable(format!(
        "Service Bus: {doing}: HTTP {}{hint}",
        u16::from(status)
    ))
}

/// The topic on Azure Service Bus; see the [module docs](self).
pub struct ServiceBusTopic {
    client: TopicClient,
    /// Held by a batch from `publish` until all of it is sent: batches go out in publish order.
    sender: Arc<Mutex<TopicSender>>,
    subscriptions: Vec<String>,
    policy: RetryPolicy,
    lock_duration: Duration,
    receive_timeout: Duration,
    closed: watch::Sender<bool>,
    /// One dead-letter read at a time: a read holds the locks it took until it ends.
    reading_dead_letters: Mutex<()>,
}

impl ServiceBusTopic {
    /// Builds the clients. Nothing is contacted yet (the crate has no call that would check the
    /// topic without sending or receiving): a wrong key or name shows on first use.
    pub fn connect(settings: ServiceBusSettings) -> Result<Self, BusError> {
        let invalid = |what: &str| BusError::Unavailable(format!("Service Bus settings: {what}"));
        if settings.namespace.is_empty() || settings.topic.is_empty() {
            return Err(invalid("namespace and topic are required"));
        }
        if settings.key_name.is_empty() || settings.key.expose().is_empty() {
            return Err(invalid("the SAS key name and key are required"));
        }
        let http: Arc<dyn HttpClient> = Arc::new(RoutedClient::new(settings.base_url.as_deref())?);
        let client = TopicClient::new(
            http,
            settings.namespace.clone(),
            settings.topic.clone(),
            settings.key_name.clone(),
            Secret::new(settings.key.expose().to_owned()),
        )
        .map_err(|e| service_bus_error("build the client", &e))?;
        let (closed, _) = watch::channel(false);
        tracing::info!(
            namespace = %settings.namespace,
            topic = %settings.topic,
            base_url = settings.base_url.as_deref().unwrap_or("(Azure)"),
            "Service Bus topic ready"
        );
        Ok(Self {
            sender: Arc::new(Mutex::new(client.topic_sender())),
            client,
            subscriptions: settings.subscriptions,
            policy: settings.policy,
            lock_duration: settings.lock_duration,
            receive_timeout: settings.receive_timeout.max(Duration::from_secs(1)),
            closed,
            reading_dead_letters: Mutex::new(()),
        })
    }

    /// Stops this handle: `next` answers `None`. Deliveries not settled are abandoned when
    /// dropped, or come back when their locks expire.
    pub fn close(&self) {
        self.closed.send_replace(true);
    }

    fn known(&self, subscription: &str) -> Result<(), BusError> {
        if self.subscriptions.iter().any(|s| s == subscription) {
            Ok(())
        } else {
            Err(BusError::UnknownSubscription(subscription.to_owned()))
        }
    }
}

#[async_trait]
impl EventBus for ServiceBusTopic {
    /// Service Bus records its own reason (see the module docs).
    fn keeps_handler_reasons(&self) -> bool {
        false
    }

    async fn publish(&self, events: Vec<RecordedEvent>) -> Result<Receipt, BusError> {
        if events.is_empty() {
            return Ok(Box::pin(async { Ok(()) }));
        }
        let messages = events
            .iter()
            .map(|event| {
                let body = serde_json::to_string(event).map_err(|e| {
                    BusError::Unavailable(format!("Service Bus: encode an event: {e}"))
                })?;
                Ok((
                    event.event_id.to_string(),
                    event.event_type.clone(),
                    event.metadata.traceparent.clone(),
                    body,
                ))
            })
            .collect::<Result<Vec<_>, BusError>>()?;
        // Taking the turn here, before returning, is what orders batches as they were published.
        let sender = self.sender.clone().lock_owned().await;
        let sending = tokio::spawn(async move {
            for (message_id, label, traceparent, body) in messages {
                let options = SendMessageOptions {
                    content_type: Some("application/json".into()),
                    broker_properties: Some(SettableBrokerProperties {
                        message_id: Some(message_id),
                        label: Some(label),
                        ..Default::default()
                    }),
                    // The trace context under the name Azure's SDKs and Application Insights
                    // read it from a message.
                    // (a custom property's string value goes in quotes, as the REST reference's
                    // examples send it).
                    custom_properties: traceparent.map(|t| {
                        std::collections::HashMap::from([(
                            DIAGNOSTIC_ID.to_owned(),
                            format!("\"{t}\""),
                        )])
                    }),
                };
                sender
                    .send_message(&body, Some(options))
                    .await
                    .map_err(|e| service_bus_error("send a message", &e))?;
            }
            Ok(())
        });
        Ok(Box::pin(async move {
            sending.await.unwrap_or_else(|e| {
                Err(BusError::Unavailable(format!(
                    "Service Bus: the sending task failed: {e}"
                )))
            })
        }))
    }

    async fn subscribe(&self, subscription: &str) -> Result<Box<dyn Subscription>, BusError> {
        self.known(subscription)?;
        Ok(Box::new(ServiceBusSubscription {
            name: subscription.to_owned(),
            receiver: self.client.subscription_receiver(subscription),
            policy: self.policy,
            lock_duration: self.lock_duration,
            receive_timeout: self.receive_timeout,
            closed: self.closed.subscribe(),
        }))
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

impl ServiceBusTopic {
    /// Peek-locks the dead-letter queues of the subscriptions `which` covers, acts on each
    /// dead letter it selects, and unlocks everything it did not take before it returns.
    async fn on_dead_letters(
        &self,
        which: &DeadLetterFilter,
        act: Act<'_>,
    ) -> Result<Vec<DeadLetter>, BusError> {
        let _one_reader = self.reading_dead_letters.lock().await;
        let mut chosen = Vec::new();
        let mut held = Vec::new();
        let mut result = Ok(());
        for name in &self.subscriptions {
            if !which.covers(name) {
                continue;
            }
            let queue = format!("{name}/{DEAD_LETTER_QUEUE}");
            let receiver = self.client.subscription_receiver(&queue);
            if let Err(error) = self
                .act_on_queue(name, &receiver, which, act, &mut chosen, &mut held)
                .await
            {
                result = Err(error);
                break;
            }
        }
        // Hand every message back; if an unlock fails, its lock expires and it comes back anyway.
        for lock in held {
            if let Err(error) = lock.unlock_message().await {
                tracing::debug!(error = %service_bus_error("unlock a dead letter", &error), "dead letter stays locked until its lock expires");
            }
        }
        result.map(|()| chosen)
    }

    async fn act_on_queue(
        &self,
        subscription: &str,
        receiver: &SubscriptionReceiver,
        which: &DeadLetterFilter,
        act: Act<'_>,
        into: &mut Vec<DeadLetter>,
        held: &mut Vec<PeekLockResponse>,
    ) -> Result<(), BusError> {
        for _ in 0..DEAD_LETTER_READ_LIMIT {
            let Some(locked) =
                receive(receiver, Duration::ZERO, "read a dead-letter queue").await?
            else {
                return Ok(());
            };
            let event = match serde_json::from_str::<RecordedEvent>(&locked.body()) {
                Ok(event) => event,
                Err(error) => {
                    tracing::warn!(%subscription, %error, "undecodable dead letter skipped");
                    held.push(locked);
                    continue;
                }
            };
            let letter = DeadLetter {
                subscription: subscription.to_owned(),
                event,
                attempts: self.policy.max_attempts,
                reason: locked
                    .custom_properties::<DeadLetterReason>()
                    .map(|r| r.0)
                    .unwrap_or_default(),
                dead_at: None,
            };
            if !which.matches(&letter) {
                held.push(locked);
                continue;
            }
            if let Act::List = act {
                into.push(letter);
                held.push(locked);
                continue;
            }
            if let Act::Redrive = act {
                let sequence = locked
                    .broker_properties()
                    .map(|p| p.sequence_number)
                    .unwrap_or_default();
                let options = SendMessageOptions {
                    content_type: Some("application/json".into()),
                    broker_properties: Some(SettableBrokerProperties {
                        message_id: Some(redrive_message_id(&letter, sequence)),
                        label: Some(letter.event.event_type.clone()),
                        to: Some(subscription.to_owned()),
                        ..Default::default()
                    }),
                    custom_properties: None,
                };
                let sent = self
                    .sender
                    .lock()
                    .await
                    .send_message(&locked.body(), Some(options))
                    .await;
                if let Err(error) = sent {
                    held.push(locked);
                    return Err(service_bus_error("re-drive a dead letter", &error));
                }
            }
            // Completed only now: a failure before this leaves it dead (and a re-drive again
            // sends the same message id, which duplicate detection drops).
            locked
                .delete_message()
                .await
                .map_err(|e| service_bus_error("take a dead letter out", &e))?;
            match act {
                Act::Discard(reason) => super::log_discarded(&letter, reason),
                _ => {
                    tracing::info!(%subscription, event_id = %letter.event.event_id, "dead letter re-driven")
                }
            }
            into.push(letter);
        }
        tracing::warn!(%subscription, limit = DEAD_LETTER_READ_LIMIT, "dead letters read up to the limit");
        Ok(())
    }
}

/// A re-driven copy's `MessageId`: the event's id would be dropped by duplicate detection
/// within its window, so the copy is named after the dead letter it came from (its subscription
/// and sequence number), which is the same on every retry of the same re-drive.
fn redrive_message_id(letter: &DeadLetter, sequence: i64) -> String {
    format!(
        "{}.{}.{sequence}",
        letter.event.event_id, letter.subscription
    )
}

/// Why Service Bus dead-lettered a message: its `DeadLetterReason` and
/// `DeadLetterErrorDescription` properties (REST: headers whose values are JSON strings).
struct DeadLetterReason(String);

impl From<Headers> for DeadLetterReason {
    fn from(headers: Headers) -> Self {
        let property = |name: &'static str| {
            headers
                .get_optional_str(&HeaderName::from_static(name))
                .map(|v| v.trim_matches('"').to_owned())
        };
        let reason = property("deadletterreason").unwrap_or_default();
        Self(match property("deadlettererrordescription") {
            Some(description) if !description.is_empty() => format!("{reason}: {description}"),
            _ => reason,
        })
    }
}

/// One peek-lock receive: `Some` with the lock, `None` when the queue stayed empty.
async fn receive(
    receiver: &SubscriptionReceiver,
    timeout: Duration,
    doing: &str,
) -> Result<Option<PeekLockResponse>, BusError> {
    let locked = receiver
        .peek_lock_message2(Some(timeout))
        .await
        .map_err(|e| service_bus_error(doing, &e))?;
    match *locked.status() {
        StatusCode::NoContent => Ok(None),
        StatusCode::Created | StatusCode::Ok if locked.broker_properties().is_some() => {
            Ok(Some(locked))
        }
        StatusCode::Created | StatusCode::Ok => Err(BusError::Unavailable(format!(
            "Service Bus: {doing}: a message without readable BrokerProperties"
        ))),
        status => Err(status_error(doing, status)),
    }
}

struct ServiceBusSubscription {
    name: String,
    receiver: SubscriptionReceiver,
    policy: RetryPolicy,
    lock_duration: Duration,
    receive_timeout: Duration,
    closed: watch::Receiver<bool>,
}

#[async_trait]
impl Subscription for ServiceBusSubscription {
    async fn next(&mut self) -> Option<Delivery> {
        let mut backoff = FIRST_BACKOFF;
        loop {
            if *self.closed.borrow() {
                return None;
            }
            let received = tokio::select! {
                _ = crate::stopped(&mut self.closed) => return None,
                received = receive(&self.receiver, self.receive_timeout, "receive") => received,
            };
            let locked = match received {
                Ok(Some(locked)) => locked,
                Ok(None) => continue,
                Err(error) => {
                    tracing::warn!(subscription = %self.name, %error, ?backoff, "receive failed; retrying");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                    continue;
                }
            };
            backoff = FIRST_BACKOFF;
            let attempt = locked
                .broker_properties()
                .map_or(1, |p| u32::try_from(p.delivery_count).unwrap_or(1).max(1));
            match serde_json::from_str::<RecordedEvent>(&locked.body()) {
                Ok(event) => {
                    let settle = ServiceBusSettle(Some(Locked {
                        lock: locked,
                        subscription: self.name.clone(),
                        event_id: event.event_id.to_string(),
                        attempt,
                        policy: self.policy,
                        lock_duration: self.lock_duration,
                        renewed: tokio::time::Instant::now(),
                    }));
                    return Some(Delivery {
                        event,
                        attempt,
                        settle: Box::new(settle),
                    });
                }
                Err(error) => {
                    // Abandoned: after the max delivery count Service Bus dead-letters it.
                    tracing::warn!(subscription = %self.name, %error, attempt, "undecodable message abandoned");
                    let _ = locked.unlock_message().await;
                }
            }
        }
    }
}

/// A delivery's lock, until it is settled.
struct Locked {
    lock: PeekLockResponse,
    subscription: String,
    event_id: String,
    attempt: u32,
    policy: RetryPolicy,
    lock_duration: Duration,
    /// When the lock was taken or last renewed.
    renewed: tokio::time::Instant,
}

impl Locked {
    async fn complete(self) {
        if let Err(error) = self.lock.delete_message().await {
            // The lock lapsed or the link failed: Service Bus delivers it again (at least once).
            tracing::warn!(subscription = %self.subscription, event_id = %self.event_id, error = %service_bus_error("complete", &error), "ack not recorded; the message will come again");
        }
    }

    async fn abandon(self, reason: &str, wait: Duration) {
        if self.attempt >= self.policy.max_attempts {
            tracing::error!(subscription = %self.subscription, event_id = %self.event_id, attempts = self.attempt, %reason, "last attempt failed; Service Bus dead-letters it by the max delivery count");
        } else {
            tracing::warn!(subscription = %self.subscription, event_id = %self.event_id, attempt = self.attempt, %reason, ?wait, "delivery failed; abandoning it after the retry delay");
            tokio::time::sleep(wait).await;
        }
        if let Err(error) = self.lock.unlock_message().await {
            tracing::warn!(subscription = %self.subscription, event_id = %self.event_id, error = %service_bus_error("abandon", &error), "abandon not recorded; the message comes back when its lock expires");
        }
    }

    fn retry_wait(&self) -> Duration {
        self.policy
            .delay_after(self.attempt)
            .min(self.lock_duration / 2)
    }
}

struct ServiceBusSettle(Option<Locked>);

#[async_trait]
impl Settle for ServiceBusSettle {
    async fn ack(mut self: Box<Self>) {
        if let Some(locked) = self.0.take() {
            locked.complete().await;
        }
    }

    async fn nack(mut self: Box<Self>, reason: String) {
        if let Some(locked) = self.0.take() {
            let wait = locked.retry_wait();
            locked.abandon(&reason, wait).await;
        }
    }

    async fn release(mut self: Box<Self>) {
        if let Some(locked) = self.0.take()
            && let Err(error) = locked.lock.unlock_message().await
        {
            tracing::debug!(event_id = %locked.event_id, error = %service_bus_error("release", &error), "release not recorded; the message comes back when its lock expires");
        }
    }

    /// Renews the lock once a third of the lock duration has passed since it was taken or
    /// last renewed, so a delivery held through an outage is not handed to another consumer.
    async fn keep(&mut self) {
        let Some(locked) = self.0.as_mut() else {
            return;
        };
        if locked.renewed.elapsed() < locked.lock_duration / 3 {
            return;
        }
        match locked.lock.renew_message_lock().await {
            Ok(()) => locked.renewed = tokio::time::Instant::now(),
            Err(error) => {
                tracing::warn!(subscription = %locked.subscription, event_id = %locked.event_id, error = %service_bus_error("renew the lock", &error), "lock not renewed; the message may be delivered again")
            }
        }
    }
}

impl Drop for ServiceBusSettle {
    fn drop(&mut self) {
        let Some(locked) = self.0.take() else {
            return;
        };
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) => {
                runtime.spawn(async move {
                    locked
                        .abandon("delivery dropped without being settled", Duration::ZERO)
                        .await
                });
            }
            Err(_) => tracing::warn!(
                event_id = %locked.event_id,
                "delivery dropped outside a runtime; it comes back when its lock expires"
            ),
        }
    }
}

/// The crate's pluggable HTTP client, on reqwest: sends each request as built, or, with a base
/// URL, to that base with the same path, query and headers.
#[derive(Debug)]
pub struct RoutedClient {
    client: reqwest::Client,
    base: Option<String>,
}

impl RoutedClient {
    pub fn new(base: Option<&str>) -> Result<Self, BusError> {
        let client = reqwest::Client::builder()
            .build()
            .map_err(|e| BusError::Unavailable(format!("Service Bus: HTTP client: {e}")))?;
        Ok(Self {
            client,
            base: base.map(|b| b.trim_end_matches('/').to_owned()),
        })
    }
}

#[async_trait]
impl HttpClient for RoutedClient {
    async fn execute_request(&self, request: &Request) -> azure_core::Result<Response> {
        use azure_core::error::{Error, ErrorKind};
        let url = match &self.base {
            Some(base) => format!("{base}{}", request.path_and_query()),
            None => request.url().to_string(),
        };
        let method = reqwest::Method::from_bytes(request.method().to_string().as_bytes())
            .map_err(|e| Error::full(ErrorKind::DataConversion, e, "HTTP method"))?;
        let mut outgoing = self.client.request(method, &url);
        for (name, value) in request.headers().iter() {
            outgoing = outgoing.header(name.as_str(), value.as_str());
        }
        outgoing = match request.body() {
            Body::Bytes(bytes) => outgoing.body(bytes.clone()),
            Body::SeekableStream(_) => {
                return Err(Error::message(
                    ErrorKind::Other,
                    "streamed request bodies are not supported",
                ));
            }
        };
        let answer = outgoing
            .send()
            .await
            .map_err(|e| Error::full(ErrorKind::Io, e, "send the HTTP request"))?;
        let status = StatusCode::try_from(answer.status().as_u16())
            .map_err(|_| Error::message(ErrorKind::DataConversion, "HTTP status"))?;
        let headers: std::collections::HashMap<HeaderName, HeaderValue> = answer
            .headers()
            .iter()
            .filter_map(|(name, value)| {
                let value = value.to_str().ok()?.to_owned();
                Some((name.as_str().to_owned().into(), value.into()))
            })
            .collect();
        let body = answer
            .bytes()
            .await
            .map_err(|e| Error::full(ErrorKind::Io, e, "read the HTTP response"))?;
        Ok(Response::new(
            status,
            Headers::from(headers),
            Box::pin(futures_util::stream::iter([Ok(body)])),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_key_never_prints() {
        let settings = ServiceBusSettings::new(
            "ns",
            "events",
            "role",
            SasKey::new("s3cr3t"),
            &["a"],
            RetryPolicy::default(),
        );

        assert!(!format!("{settings:?}").contains("s3cr3t"));
        assert_eq!(SasKey::new("s3cr3t").to_string(), "***");
    }

    #[test]
    fn a_refused_token_says_so() {
        let error = status_error("send a message", StatusCode::Unauthorized);

        assert!(
            matches!(error, BusError::Unavailable(ref m) if m.contains("401") && m.contains("SAS"))
        );
    }
}
