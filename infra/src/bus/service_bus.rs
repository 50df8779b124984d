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
//! - [`EventBus::publish`]: *Send Message Batch* (`POST /{topic}/messages`, content type
//!   `application/vnd.microsoft.servicebus.json`, a JSON array of messages), written here since
//!   the crate has no batch send. A page of events goes as few batches as fit within
//!   [`ServiceBusSettings::max_batch_bytes`] (the tier's message limit applies to a batch as a
//!   whole: 256 KB on Standard), sent one after the other in publish order; an event that fits
//!   no batch is refused before anything is sent. Each message's `Body` is the
//!   [`RecordedEvent`] as JSON (`ContentType` `application/json`), its `MessageId` the event id
//!   (so the topic's duplicate detection drops what the relay publishes twice), its `Label` the
//!   event type, and its user property `Diagnostic-Id` the event's `traceparent` (where Azure's
//!   SDKs carry trace context). The [`Receipt`] resolves `Ok` once every batch was answered
//!   `201` (Service Bus answers once the batch is stored), `Err` on the first failure; the
//!   relay then publishes again from its checkpoint, and duplicate detection absorbs what had
//!   already gone through.
//! - [`EventBus::subscribe`] / [`Subscription::next`]: each handle runs
//!   [`ServiceBusSettings::receivers`] *Peek-Lock Message* long polls at once
//!   (`POST /{topic}/subscriptions/{name}/messages/head?timeout=N`,
//!   [`ServiceBusSettings::receive_timeout`], whole seconds), since the REST API gives one
//!   message per request. A receiver takes room before it polls, so at most that many
//!   messages wait for the consumer, and their locks are renewed while they wait; stopping
//!   the handle cuts its polls off and abandons them. A poll cut off is not cut off at the
//!   broker, which may go on waiting until its `timeout` and lock a message for an answer
//!   nobody reads, so what a stopped handle hands back (what waited, and the deliveries it
//!   gave out) is abandoned only once none of its polls can still be waiting there (at most
//!   the receive timeout and a second after the last one was sent), its lock kept meanwhile.
//!   Their answers arrive in any order, so with more than
//!   one receiver a handle does not keep publish order ([`EventBus::keeps_order`]). Handles of
//!   one name compete: the lock gives a message to one of them. [`Delivery::attempt`] is the
//!   message's `DeliveryCount`. Service Bus takes at most 5,000 receive requests at once per
//!   entity (all of a topic's subscriptions together).
//! - `ack`: *Delete Message* (complete) on the lock's `Location`, sent in the background (at
//!   most 64 at once per handle) so that a consumer goes on to its next message instead of
//!   waiting a round trip; stopping the handle waits for them, and acks after the stop
//!   complete before they return. A completion that is lost (a crash, a lapsed lock) means
//!   the message comes again, which every consumer absorbs by event id.
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
//! **Errors** all become [`BusError::Unavailable`] in [`service_bus_error`], with what the
//! status most likely means (401: the key; 403: rights, quota or size; 410: no such topic or
//! subscription, or a lapsed lock) and what the service said. [`Subscription::next`] never gives
//! up while the bus is open: failed receives are retried with backoff (0.1 s doubling to 5 s),
//! logged once when they start failing and once when they succeed again; it answers `None`
//! after [`ServiceBusTopic::close`].
//!
//! **Timeouts.** Every request has one ([`ServiceBusSettings::request_timeout`], 30 s; a receive
//! gets its long poll on top), a connection takes at most 10 s to open, and connections send
//! TCP keepalives every 30 s: a connection the network dropped without a word fails its request
//! instead of silently stopping the relay or a consumer.
//!
//! **Endpoint.** The crate fixes it to `https://{namespace}.servicebus.windows.net`; its HTTP client
//! is pluggable, and ours ([`RoutedClient`]) can send every request to
//! [`ServiceBusSettings::base_url`] instead, keeping path, query and headers (the SAS token still
//! names the Azure resource). Tests use that to point the adapter at a local fake.
//!
//! **Secrets.** The SAS key is a [`SasKey`], whose `Debug` and `Display` print `***`; nothing here
//! logs it or the `Authorization` header.

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use azure_core::auth::Secret;
use azure_core::headers::{HeaderName, HeaderValue, Headers};
use azure_core::{Body, HttpClient, Request, Response, StatusCode};
use azure_messaging_servicebus::prelude::{SubscriptionReceiver, TopicClient};
use azure_messaging_servicebus::service_bus::PeekLockResponse;
use domain::RecordedEvent;
use futures_util::future::join_all;
use serde_json::json;
use tokio::sync::{Mutex, Notify, OwnedSemaphorePermit, Semaphore, watch};
use tokio::task::JoinHandle;

use super::{
    BusError, DeadLetter, DeadLetterFilter, Delivery, EventBus, Receipt, RetryPolicy, Settle,
    Subscription,
};

/// The long poll of one receive unless configured otherwise (Service Bus allows up to 60 s).
/// Short enough that a handle stopping while it holds deliveries hands them back within the
/// server's 10 s drain: it waits out its cut-off polls first (see [`Polls`]), which takes up to
/// this and a second. The price is idle receives: every receiver asks again each 5 s (about 19
/// requests a second for one process's three subscriptions of 32 receivers, while idle); a
/// message that arrives is answered at once either way.
pub const DEFAULT_RECEIVE_TIMEOUT: Duration = Duration::from_secs(5);
/// Service Bus's default lock duration.
pub const DEFAULT_LOCK_DURATION: Duration = Duration::from_secs(60);
/// Peek-lock receives one subscription handle keeps in flight unless configured otherwise.
pub const DEFAULT_RECEIVERS: usize = 32;
/// The largest batch body sent unless configured otherwise: under Service Bus Standard's
/// 256 KB limit for a message, which a batch as a whole must fit in, with room to spare for
/// the service's own accounting of the properties.
pub const DEFAULT_MAX_BATCH_BYTES: usize = 240 * 1024;
/// How long a request may take (a receive: its long poll and this).
pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Keepalive probes find a connection the network silently dropped.
const TCP_KEEPALIVE: Duration = Duration::from_secs(30);
/// Completions one subscription handle has in the background at once; an ack beyond it waits.
const COMPLETIONS_IN_FLIGHT: u32 = 64;
/// A dead-letter queue is read at most this far; a longer one is an incident, not a list.
const DEAD_LETTER_READ_LIMIT: usize = 10_000;
const FIRST_BACKOFF: Duration = Duration::from_millis(100);
const MAX_BACKOFF: Duration = Duration::from_secs(5);
const DEAD_LETTER_QUEUE: &str = "$DeadLetterQueue";
/// The application property Azure's Service Bus SDKs carry a message's W3C trace context in.
const DIAGNOSTIC_ID: &str = "Diagnostic-Id";
/// *Send Message Batch*'s content type, exactly (no parameters).
const BATCH_CONTENT_TYPE: &str = "application/vnd.microsoft.servicebus.json";
/// How long the SAS token of a batch send is valid.
const TOKEN_TTL: Duration = Duration::from_secs(3600);

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
    /// Peek-lock receives each subscription handle keeps in flight (at least 1; with 1, one
    /// handle gets a subscription's events in publish order).
    pub receivers: usize,
    /// The largest batch body a publish sends in one request (Standard: 256 KB a message;
    /// Premium takes up to 1 MB over HTTP).
    pub max_batch_bytes: usize,
    /// How long any request may take; a receive gets its long poll on top.
    pub request_timeout: Duration,
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
            receivers: DEFAULT_RECEIVERS,
            max_batch_bytes: DEFAULT_MAX_BATCH_BYTES,
            request_timeout: DEFAULT_REQUEST_TIMEOUT,
            base_url: None,
        }
    }
}

/// Every failure of the crate becomes `Unavailable`, saying what we were doing; a refused token
/// says so, since that is a configuration error rather than an outage.
fn service_bus_error(doing: &str, error: &azure_core::Error) -> BusError {
    match error.kind() {
        azure_core::error::ErrorKind::HttpResponse { status, .. } => {
            status_error(doing, u16::from(*status), "")
        }
        _ => BusError::Unavailable(format!("Service Bus: {doing}: {error}")),
    }
}

/// An answer that was not a success, with what it most likely means and what the service said.
fn status_error(doing: &str, status: u16, said: &str) -> BusError {
    let hint = match status {
        401 => " (SAS token refused: check the key name and key)",
        403 => " (the SAS policy lacks the Send or Listen right, or a quota or size limit was hit)",
        404 => " (no such lock)",
        410 => " (gone: no such topic or subscription, or the lock expired)",
        _ => "",
    };
    let said: String = said.trim().chars().take(300).collect();
    let said = if said.is_empty() {
        String::new()
    } else {
        format!(": {said}")
    };
    BusError::Unavailable(format!("Service Bus: {doing}: HTTP {status}{hint}{said}"))
}

/// What the adapter sends itself, beside the crate: *Send Message Batch*, which the crate lacks.
struct Sender {
    client: reqwest::Client,
    /// Where requests go: the namespace, or the configured base URL.
    base: String,
    /// The namespace's URI, which SAS tokens name whatever the base.
    resource: String,
    key_name: String,
    key: SasKey,
    topic: String,
    request_timeout: Duration,
}

impl Sender {
    /// A SAS token for the entity at `path` in the namespace, valid for [`TOKEN_TTL`].
    fn token(&self, path: &str, key_name: &str, key: &SasKey) -> String {
        let expiry = SystemTime::now()
            .checked_add(TOKEN_TTL)
            .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
            .map_or(0, |d| d.as_secs());
        crate::sas::sas_token(
            &format!("{}/{path}", self.resource),
            key_name,
            key.expose(),
            expiry,
        )
    }

    /// Sends one batch body (a JSON array of messages); `Ok` once Service Bus answered `201`,
    /// that is, stored every message of it.
    async fn send_batch(&self, body: String, doing: &str) -> Result<(), BusError> {
        let path = format!("/{}/messages", self.topic);
        let token = self.token(&self.topic, &self.key_name, &self.key);
        let answer = self
            .client
            .post(format!("{}{path}", self.base))
            .header(reqwest::header::AUTHORIZATION, token)
            .header(reqwest::header::CONTENT_TYPE, BATCH_CONTENT_TYPE)
            .timeout(self.request_timeout)
            .body(body)
            .send()
            .await
            .map_err(|e| BusError::Unavailable(format!("Service Bus: {doing}: {e}")))?;
        let status = answer.status().as_u16();
        if status == 201 {
            return Ok(());
        }
        let said = answer.text().await.unwrap_or_default();
        Err(status_error(doing, status, &said))
    }
}

/// One message of a batch: the event as its `Body`, `MessageId` = event id (so the topic's
/// duplicate detection drops what the relay publishes twice), `Label` = event type, and the
/// trace context as the `Diagnostic-Id` user property.
fn batch_message(
    event: &RecordedEvent,
    message_id: String,
    to: Option<&str>,
) -> Result<String, BusError> {
    let encode =
        |e: serde_json::Error| BusError::Unavailable(format!("Service Bus: encode an event: {e}"));
    let body = serde_json::to_string(event).map_err(encode)?;
    let mut properties = json!({
        "MessageId": message_id,
        "Label": event.event_type,
        "ContentType": "application/json",
    });
    if let Some(to) = to {
        properties["To"] = json!(to);
    }
    let mut message = json!({ "Body": body, "BrokerProperties": properties });
    if let Some(traceparent) = &event.metadata.traceparent {
        message["UserProperties"] = json!({ DIAGNOSTIC_ID: traceparent });
    }
    serde_json::to_string(&message).map_err(encode)
}

/// Packs messages, in order, into as few batch bodies of at most `max_bytes` as they fit in.
fn batch_bodies(messages: Vec<String>, max_bytes: usize) -> Result<Vec<String>, BusError> {
    let mut bodies = Vec::new();
    let mut body = String::from("[");
    for message in messages {
        if message.len() + 2 > max_bytes {
            return Err(BusError::Unavailable(format!(
                "Service Bus: an event of {} bytes does not fit in a message of at most {max_bytes} bytes",
                message.len()
            )));
        }
        if body.len() > 1 && body.len() + message.len() + 2 > max_bytes {
            body.push(']');
            bodies.push(std::mem::replace(&mut body, String::from("[")));
        }
        if body.len() > 1 {
            body.push(',');
        }
        body.push_str(&message);
    }
    if body.len() > 1 {
        body.push(']');
        bodies.push(body);
    }
    Ok(bodies)
}

/// The management API version Microsoft's `ServiceBusAdministrationClient` sends.
const MANAGEMENT_API_VERSION: &str = "2021-05";

/// A topic as the management API describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicShape {
    pub duplicate_detection: bool,
    pub duplicate_detection_window: Option<Duration>,
}

/// A subscription as the management API describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubscriptionShape {
    pub max_delivery_count: Option<u32>,
    pub lock_duration: Option<Duration>,
}

/// What [`ServiceBusTopic::describe`] read: `None` for an entity that does not exist.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Topology {
    pub topic: Option<TopicShape>,
    pub subscriptions: Vec<(String, Option<SubscriptionShape>)>,
}

/// The text of the first `<name>…</name>` in `xml` (the management API writes its elements
/// unprefixed, in its default namespace).
fn element<'x>(xml: &'x str, name: &str) -> Option<&'x str> {
    let open = format!("<{name}>");
    let start = xml.find(&open)? + open.len();
    let end = xml[start..].find(&format!("</{name}>"))? + start;
    Some(xml[start..end].trim())
}

/// An ISO 8601 duration of days, hours, minutes and seconds (`P14D`, `PT1M`, `PT1M30S`,
/// `PT0.5S`), as the management API writes them.
pub fn iso_duration(text: &str) -> Option<Duration> {
    let rest = text.strip_prefix('P')?;
    let (days, time) = match rest.split_once('T') {
        Some((days, time)) => (days, time),
        None => (rest, ""),
    };
    let mut seconds = 0.0_f64;
    let mut add = |part: &str, units: &[(char, f64)]| -> Option<()> {
        let mut number = String::new();
        for c in part.chars() {
            if c.is_ascii_digit() || c == '.' {
                number.push(c);
                continue;
            }
            let (_, factor) = units.iter().find(|(u, _)| *u == c)?;
            seconds += number.parse::<f64>().ok()? * factor;
            number.clear();
        }
        number.is_empty().then_some(())
    };
    add(days, &[('D', 86_400.0)])?;
    add(time, &[('H', 3_600.0), ('M', 60.0), ('S', 1.0)])?;
    Some(Duration::from_secs_f64(seconds))
}

impl Sender {
    /// `GET {path}?api-version=…` on the management API, signed with a Manage key: the
    /// entity's description (the content of its Atom entry), or `None` if it does not exist.
    async fn description(
        &self,
        path: &str,
        key_name: &str,
        key: &SasKey,
    ) -> Result<Option<String>, BusError> {
        let doing = format!("read the settings of {path}");
        let token = self.token(path, key_name, key);
        let answer = self
            .client
            .get(format!("{}/{path}", self.base))
            .query(&[("api-version", MANAGEMENT_API_VERSION)])
            .header(reqwest::header::AUTHORIZATION, token)
            .timeout(self.request_timeout)
            .send()
            .await
            .map_err(|e| BusError::Unavailable(format!("Service Bus: {doing}: {e}")))?;
        let status = answer.status().as_u16();
        let body = answer.text().await.unwrap_or_default();
        if status != 200 {
            return Err(status_error(&doing, status, &body));
        }
        // A missing entity is an empty feed, not a 404.
        Ok(body.contains("<entry").then_some(body))
    }
}

/// The topic on Azure Service Bus; see the [module docs](self).
pub struct ServiceBusTopic {
    client: TopicClient,
    sender: Arc<Sender>,
    /// Held by a publish from its call until all of it is sent: batches go out in publish order.
    turn: Arc<Mutex<()>>,
    subscriptions: Vec<String>,
    policy: RetryPolicy,
    lock_duration: Duration,
    receive_timeout: Duration,
    receivers: usize,
    max_batch_bytes: usize,
    request_timeout: Duration,
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
        if settings.max_batch_bytes < 1024 {
            return Err(invalid("max-batch-bytes must be at least 1024"));
        }
        let routed = RoutedClient::new(settings.base_url.as_deref(), settings.request_timeout)?;
        let resource = format!("https://{}.servicebus.windows.net", settings.namespace);
        let sender = Arc::new(Sender {
            client: routed.client.clone(),
            base: routed.base.clone().unwrap_or_else(|| resource.clone()),
            resource,
            key_name: settings.key_name.clone(),
            key: settings.key.clone(),
            topic: settings.topic.clone(),
            request_timeout: settings.request_timeout,
        });
        let http: Arc<dyn HttpClient> = Arc::new(routed);
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
            receivers = settings.receivers,
            max_batch_bytes = settings.max_batch_bytes,
            "Service Bus topic ready"
        );
        Ok(Self {
            client,
            sender,
            turn: Arc::new(Mutex::new(())),
            subscriptions: settings.subscriptions,
            policy: settings.policy,
            lock_duration: settings.lock_duration,
            receive_timeout: settings.receive_timeout.max(Duration::from_secs(1)),
            receivers: settings.receivers.max(1),
            max_batch_bytes: settings.max_batch_bytes,
            request_timeout: settings.request_timeout,
            closed,
            reading_dead_letters: Mutex::new(()),
        })
    }

    /// Reads the topic's and each subscription's settings through the management API
    /// (Microsoft's administration clients' ATOM feed), signed with a policy that has the
    /// `Manage` right: the roles' Send/Listen policy cannot read them.
    pub async fn describe(
        &self,
        manage_key_name: &str,
        manage_key: &SasKey,
    ) -> Result<Topology, BusError> {
        let topic = self
            .sender
            .description(&self.sender.topic, manage_key_name, manage_key)
            .await?
            .map(|xml| TopicShape {
                duplicate_detection: element(&xml, "RequiresDuplicateDetection")
                    .is_some_and(|v| v.eq_ignore_ascii_case("true")),
                duplicate_detection_window: element(&xml, "DuplicateDetectionHistoryTimeWindow")
                    .and_then(iso_duration),
            });
        let mut subscriptions = Vec::new();
        for name in &self.subscriptions {
            let path = format!("{}/subscriptions/{name}", self.sender.topic);
            let shape = self
                .sender
                .description(&path, manage_key_name, manage_key)
                .await?
                .map(|xml| SubscriptionShape {
                    max_delivery_count: element(&xml, "MaxDeliveryCount")
                        .and_then(|v| v.parse().ok()),
                    lock_duration: element(&xml, "LockDuration").and_then(iso_duration),
                });
            subscriptions.push((name.clone(), shape));
        }
        Ok(Topology {
            topic,
            subscriptions,
        })
    }

    /// The retry policy the subscriptions' max delivery count must match.
    pub fn policy(&self) -> RetryPolicy {
        self.policy
    }

    /// The lock duration the subscriptions must have at least.
    pub fn lock_duration(&self) -> Duration {
        self.lock_duration
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

    /// Several receives in flight answer in any order.
    fn keeps_order(&self) -> bool {
        self.receivers == 1
    }

    /// Its REST interface cannot dead-letter (see [`Settle::park`] here).
    fn parks_at_once(&self) -> bool {
        false
    }

    async fn publish(&self, events: Vec<RecordedEvent>) -> Result<Receipt, BusError> {
        if events.is_empty() {
            return Ok(Box::pin(async { Ok(()) }));
        }
        let messages = events
            .iter()
            .map(|event| batch_message(event, event.event_id.to_string(), None))
            .collect::<Result<Vec<_>, BusError>>()?;
        let bodies = batch_bodies(messages, self.max_batch_bytes)?;
        // Taking the turn here, before returning, is what orders batches as they were published.
        let turn = self.turn.clone().lock_owned().await;
        let sender = self.sender.clone();
        let sending = tokio::spawn(async move {
            let _turn = turn;
            for body in bodies {
                sender.send_batch(body, "send a batch").await?;
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
        let receiving = Receiving {
            name: subscription.to_owned(),
            policy: self.policy,
            lock_duration: self.lock_duration,
            receive_timeout: self.receive_timeout,
        };
        let waiting = Arc::new(Waiting::new(self.receivers));
        let polls = Arc::new(Polls::new(self.receive_timeout));
        let mut tasks = Vec::with_capacity(self.receivers + 1);
        for _ in 0..self.receivers {
            tasks.push(tokio::spawn(receive_into(
                waiting.clone(),
                polls.clone(),
                self.client.subscription_receiver(subscription),
                receiving.clone(),
                self.closed.subscribe(),
            )));
        }
        tasks.push(tokio::spawn(renew_waiting(
            waiting.clone(),
            self.lock_duration,
            self.closed.subscribe(),
        )));
        Ok(Box::new(ServiceBusSubscription {
            name: subscription.to_owned(),
            waiting,
            polls,
            tasks,
            completions: Arc::new(Completions {
                room: Arc::new(Semaphore::new(COMPLETIONS_IN_FLIGHT as usize)),
                stopping: AtomicBool::new(false),
            }),
            request_timeout: self.request_timeout,
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
                let copy = batch_message(
                    &letter.event,
                    redrive_message_id(&letter, sequence),
                    Some(subscription),
                );
                let sent = match copy {
                    Ok(copy) => {
                        self.sender
                            .send_batch(format!("[{copy}]"), "re-drive a dead letter")
                            .await
                    }
                    Err(error) => Err(error),
                };
                if let Err(error) = sent {
                    held.push(locked);
                    return Err(error);
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
        status => Err(status_error(doing, u16::from(status), &locked.body())),
    }
}

/// What every receive of one subscription handle needs to know.
#[derive(Clone)]
struct Receiving {
    name: String,
    policy: RetryPolicy,
    lock_duration: Duration,
    receive_timeout: Duration,
}

/// A received message waiting for the consumer to take it, with the room it takes.
struct Received {
    locked: Locked,
    event: RecordedEvent,
    _room: OwnedSemaphorePermit,
}

/// The messages one subscription handle received ahead of the consumer: at most one per
/// receiver (a receiver takes room before it receives, and the room is freed when the
/// consumer takes the message), their locks renewed while they wait.
struct Waiting {
    queue: std::sync::Mutex<VecDeque<Received>>,
    arrived: Notify,
    room: Arc<Semaphore>,
    /// Receives are failing (so one receiver in all says so, not each of them).
    failing: AtomicBool,
}

impl Waiting {
    fn new(receivers: usize) -> Self {
        Self {
            queue: std::sync::Mutex::new(VecDeque::new()),
            arrived: Notify::new(),
            room: Arc::new(Semaphore::new(receivers)),
            failing: AtomicBool::new(false),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, VecDeque<Received>> {
        self.queue.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn push(&self, received: Received) {
        self.lock().push_back(received);
        self.arrived.notify_one();
    }

    fn pop(&self) -> Option<Received> {
        self.lock().pop_front()
    }

    /// Takes out what waited a third of the lock duration since its lock was taken or renewed.
    fn take_due(&self, after: Duration) -> Vec<Received> {
        let mut queue = self.lock();
        let (due, kept): (VecDeque<_>, VecDeque<_>) = queue
            .drain(..)
            .partition(|r| r.locked.renewed.elapsed() >= after);
        *queue = kept;
        due.into()
    }

    /// Puts renewed messages back in front, in the order they had.
    fn put_back(&self, received: Vec<Received>) {
        let mut queue = self.lock();
        for one in received.into_iter().rev() {
            queue.push_front(one);
        }
        drop(queue);
        self.arrived.notify_one();
    }

    fn drain(&self) -> Vec<Received> {
        self.lock().drain(..).collect()
    }
}

/// How late a poll we sent may still reach the broker and start its long poll there.
const POLL_TRANSIT: Duration = Duration::from_secs(1);

/// The long polls of one subscription handle, and how long those that were cut off may still
/// take a message at the broker.
///
/// A poll cut off on our side (the handle stopped, the topic closed) is a dropped HTTP
/// request, which Service Bus is not told about: it may go on waiting until its `timeout`,
/// and lock a message whose answer nobody reads. That message is then locked for nobody until
/// the lock lapses, and its `DeliveryCount` grows. A stopping handle makes exactly such a
/// message available when it hands back what it held, at once and to its own cut-off polls
/// first (seen on the fake: abandoned, locked again 1 ms later by a poll cut off 2 ms before,
/// delivered to the next consumer as attempt 3 once that lock lapsed). So a hand-back waits
/// until no cut-off poll of its handle can still be waiting: each ends at the latest its
/// long poll after it reached the broker.
struct Polls {
    state: std::sync::Mutex<PollState>,
    /// How long after it was sent a poll may still be waiting at the broker.
    lasts: Duration,
}

#[derive(Default)]
struct PollState {
    in_flight: usize,
    /// When the latest poll was sent (of those in flight, or earlier ones: later is safe).
    last_sent: Option<tokio::time::Instant>,
    /// The handle stopped: no poll starts any more.
    stopped: bool,
    /// Until when a poll that was cut off may still take a message.
    live_until: Option<tokio::time::Instant>,
}

impl PollState {
    fn live_until(&mut self, until: tokio::time::Instant) {
        self.live_until = Some(self.live_until.map_or(until, |u| u.max(until)));
    }
}

impl Polls {
    fn new(receive_timeout: Duration) -> Self {
        Self {
            state: std::sync::Mutex::new(PollState::default()),
            lasts: receive_timeout + POLL_TRANSIT,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, PollState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A poll about to be sent, or `None` once the handle stopped.
    fn start(self: &Arc<Self>) -> Option<Poll> {
        let mut state = self.lock();
        if state.stopped {
            return None;
        }
        let sent = tokio::time::Instant::now();
        state.in_flight += 1;
        state.last_sent = Some(sent);
        Some(Poll {
            polls: self.clone(),
            sent,
            answered: false,
        })
    }

    /// Marks every poll in flight as cut off, now: aborting their tasks drops them later.
    fn stop(&self) {
        let mut state = self.lock();
        state.stopped = true;
        if state.in_flight > 0
            && let Some(sent) = state.last_sent
        {
            state.live_until(sent + self.lasts);
        }
    }

    /// When a hand-back may go without a cut-off poll of this handle taking it, if not now.
    fn quiet_at(&self) -> Option<tokio::time::Instant> {
        self.lock()
            .live_until
            .filter(|until| *until > tokio::time::Instant::now())
    }
}

/// One poll in flight; dropped unanswered, it was cut off.
struct Poll {
    polls: Arc<Polls>,
    sent: tokio::time::Instant,
    answered: bool,
}

impl Poll {
    fn answered(&mut self) {
        self.answered = true;
    }
}

impl Drop for Poll {
    fn drop(&mut self) {
        let mut state = self.polls.lock();
        state.in_flight -= 1;
        if !self.answered {
            state.live_until(self.sent + self.polls.lasts);
        }
    }
}

/// One receiver of a subscription handle: takes room, long-polls one message, leaves it
/// waiting for the consumer; until the topic closes or the handle stops, which cut the poll
/// off. (Letting a stopped handle's polls finish would be worse: each could take a message
/// another consumer is about to get, for up to the long poll, and spend a delivery on it; a
/// poll cut off loses a message only if its answer was on the way, and that message comes
/// back when its lock lapses.) Cutting a poll off does not end it at the broker, though,
/// so [`Polls`] keeps what the handle hands back away from it.
async fn receive_into(
    waiting: Arc<Waiting>,
    polls: Arc<Polls>,
    receiver: SubscriptionReceiver,
    receiving: Receiving,
    mut closed: watch::Receiver<bool>,
) {
    let mut backoff = FIRST_BACKOFF;
    loop {
        let room = tokio::select! {
            room = waiting.room.clone().acquire_owned() => match room {
                Ok(room) => room,
                Err(_) => return,
            },
            _ = crate::stopped(&mut closed) => return,
        };
        let Some(mut poll) = polls.start() else {
            return;
        };
        let received = tokio::select! {
            _ = crate::stopped(&mut closed) => return,
            received = receive(&receiver, receiving.receive_timeout, "receive") => received,
        };
        poll.answered();
        let locked = match received {
            Ok(Some(locked)) => locked,
            Ok(None) => continue,
            Err(error) => {
                drop(room);
                if !waiting.failing.swap(true, Ordering::Relaxed) {
                    tracing::warn!(subscription = %receiving.name, %error, "receive failed; retrying with backoff");
                } else {
                    tracing::debug!(subscription = %receiving.name, %error, ?backoff, "receive failed again");
                }
                tokio::select! {
                    _ = tokio::time::sleep(backoff) => {}
                    _ = crate::stopped(&mut closed) => return,
                }
                backoff = (backoff * 2).min(MAX_BACKOFF);
                continue;
            }
        };
        if waiting.failing.swap(false, Ordering::Relaxed) {
            tracing::info!(subscription = %receiving.name, "receives succeed again");
        }
        backoff = FIRST_BACKOFF;
        let attempt = locked
            .broker_properties()
            .map_or(1, |p| u32::try_from(p.delivery_count).unwrap_or(1).max(1));
        match serde_json::from_str::<RecordedEvent>(&locked.body()) {
            Ok(event) => waiting.push(Received {
                locked: Locked {
                    lock: locked,
                    subscription: receiving.name.clone(),
                    event_id: event.event_id.to_string(),
                    attempt,
                    policy: receiving.policy,
                    lock_duration: receiving.lock_duration,
                    renewed: tokio::time::Instant::now(),
                    polls: polls.clone(),
                },
                event,
                _room: room,
            }),
            Err(error) => {
                // Abandoned: after the max delivery count Service Bus dead-letters it.
                tracing::warn!(subscription = %receiving.name, %error, attempt, "undecodable message abandoned");
                let _ = locked.unlock_message().await;
            }
        }
    }
}

/// Renews the locks of messages that wait for the consumer (it may be holding what it has
/// through an outage), so that waiting does not spend their delivery attempts.
async fn renew_waiting(
    waiting: Arc<Waiting>,
    lock_duration: Duration,
    mut closed: watch::Receiver<bool>,
) {
    let every = (lock_duration / 6).max(Duration::from_millis(100));
    loop {
        tokio::select! {
            _ = tokio::time::sleep(every) => {}
            _ = crate::stopped(&mut closed) => return,
        }
        let due = waiting.take_due(lock_duration / 3);
        if due.is_empty() {
            continue;
        }
        let renewed = join_all(due.into_iter().map(|mut received| async move {
            received.locked.renew().await;
            received
        }))
        .await;
        waiting.put_back(renewed);
    }
}

/// Completions a subscription handle sends in the background (see [`ServiceBusSettle::ack`]).
struct Completions {
    room: Arc<Semaphore>,
    /// Once the handle is stopping, acks complete before they return.
    stopping: AtomicBool,
}

struct ServiceBusSubscription {
    name: String,
    waiting: Arc<Waiting>,
    polls: Arc<Polls>,
    /// The receivers and the renewer.
    tasks: Vec<JoinHandle<()>>,
    completions: Arc<Completions>,
    request_timeout: Duration,
    closed: watch::Receiver<bool>,
}

impl ServiceBusSubscription {
    /// Stops the receivers and takes out what waited, to be handed back so that other
    /// consumers get it now.
    fn stop_receiving(&mut self) -> Vec<Received> {
        self.polls.stop();
        for task in self.tasks.drain(..) {
            task.abort();
        }
        self.waiting.drain()
    }
}

#[async_trait]
impl Subscription for ServiceBusSubscription {
    async fn next(&mut self) -> Option<Delivery> {
        loop {
            if *self.closed.borrow() || self.tasks.is_empty() {
                return None;
            }
            let arrived = self.waiting.arrived.notified();
            tokio::pin!(arrived);
            arrived.as_mut().enable();
            if let Some(Received {
                mut locked, event, ..
            }) = self.waiting.pop()
            {
                if locked.renewed.elapsed() >= locked.lock_duration / 3 {
                    locked.renew().await;
                }
                return Some(Delivery {
                    event,
                    attempt: locked.attempt,
                    settle: Box::new(ServiceBusSettle {
                        locked: Some(locked),
                        completions: self.completions.clone(),
                    }),
                });
            }
            tokio::select! {
                _ = arrived => {}
                _ = crate::stopped(&mut self.closed) => return None,
            }
        }
    }

    /// Stops the receivers, hands back what waited, and waits (within the request timeout)
    /// for the completions sent in the background; acks from now on complete before they
    /// return.
    ///
    /// What waited is handed back in the background: its abandon waits for the polls that
    /// were just cut off (see [`Polls`]), and meanwhile the consumer must go on keeping and
    /// releasing the deliveries it holds, which it does only once this returns.
    async fn stop(&mut self) {
        self.completions.stopping.store(true, Ordering::SeqCst);
        let waited = self.stop_receiving();
        if !waited.is_empty() {
            tokio::spawn(join_all(waited.into_iter().map(|r| r.locked.abandon_now())));
        }
        let all = self.completions.room.acquire_many(COMPLETIONS_IN_FLIGHT);
        if tokio::time::timeout(self.request_timeout, all)
            .await
            .is_err()
        {
            tracing::warn!(subscription = %self.name, "completions still unanswered at stop; those messages may come again");
        }
    }
}

impl Drop for ServiceBusSubscription {
    fn drop(&mut self) {
        let waited = self.stop_receiving();
        if waited.is_empty() {
            return;
        }
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(join_all(waited.into_iter().map(|r| r.locked.abandon_now())));
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
    /// The polls of the handle it came from, which a hand-back must not meet.
    polls: Arc<Polls>,
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
        self.abandon_now().await;
    }

    /// Unlocks as soon as no poll its handle cut off can take it (see [`Polls`]), keeping the
    /// lock meanwhile: Service Bus delivers it again (counting this delivery).
    async fn abandon_now(mut self) {
        while let Some(quiet) = self.polls.quiet_at() {
            let renew_at = self.renewed + self.lock_duration / 3;
            tokio::time::sleep_until(quiet.min(renew_at)).await;
            if self.renewed.elapsed() >= self.lock_duration / 3 && !self.renew().await {
                // The lock is lost already: nothing is left to hand back.
                break;
            }
        }
        if let Err(error) = self.lock.unlock_message().await {
            tracing::debug!(subscription = %self.subscription, event_id = %self.event_id, error = %service_bus_error("abandon", &error), "abandon not recorded; the message comes back when its lock expires");
        }
    }

    /// Whether the lock was renewed.
    async fn renew(&mut self) -> bool {
        match self.lock.renew_message_lock().await {
            Ok(()) => {
                self.renewed = tokio::time::Instant::now();
                true
            }
            Err(error) => {
                tracing::warn!(subscription = %self.subscription, event_id = %self.event_id, error = %service_bus_error("renew the lock", &error), "lock not renewed; the message may be delivered again");
                false
            }
        }
    }

    fn retry_wait(&self) -> Duration {
        self.policy
            .delay_after(self.attempt)
            .min(self.lock_duration / 2)
    }
}

struct ServiceBusSettle {
    locked: Option<Locked>,
    completions: Arc<Completions>,
}

#[async_trait]
impl Settle for ServiceBusSettle {
    /// Sends the completion in the background (at most [`COMPLETIONS_IN_FLIGHT`] at once per
    /// handle), so that a consumer goes on to its next message instead of waiting a round
    /// trip; once the handle is stopping, it completes before returning. A completion that is
    /// lost (a crash, a lapsed lock) means the message comes again, which every consumer
    /// absorbs as the duplicate it is.
    async fn ack(mut self: Box<Self>) {
        let Some(locked) = self.locked.take() else {
            return;
        };
        if self.completions.stopping.load(Ordering::SeqCst) {
            return locked.complete().await;
        }
        match self.completions.room.clone().acquire_owned().await {
            Ok(room) => {
                tokio::spawn(async move {
                    locked.complete().await;
                    drop(room);
                });
            }
            Err(_) => locked.complete().await,
        }
    }

    async fn nack(mut self: Box<Self>, reason: String) {
        if let Some(locked) = self.locked.take() {
            let wait = locked.retry_wait();
            locked.abandon(&reason, wait).await;
        }
    }

    /// No dead-letter operation over REST: abandoned at once, so the max delivery count parks
    /// it within moments instead of after every retry delay.
    async fn park(mut self: Box<Self>, reason: String) {
        if let Some(locked) = self.locked.take() {
            locked.abandon(&reason, Duration::ZERO).await;
        }
    }

    async fn release(mut self: Box<Self>) {
        if let Some(locked) = self.locked.take() {
            locked.abandon_now().await;
        }
    }

    /// Renews the lock once a third of the lock duration has passed since it was taken or
    /// last renewed, so a delivery held through an outage is not handed to another consumer.
    async fn keep(&mut self) {
        if let Some(locked) = self.locked.as_mut()
            && locked.renewed.elapsed() >= locked.lock_duration / 3
        {
            locked.renew().await;
        }
    }
}

impl Drop for ServiceBusSettle {
    fn drop(&mut self) {
        let Some(locked) = self.locked.take() else {
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
/// URL, to that base with the same path, query and headers. Every request has a timeout (a
/// receive: its long poll and the request timeout), connections have TCP keepalive, and a
/// connection takes at most 10 s to open: a stuck connection fails a request
/// instead of stopping the relay or a consumer.
#[derive(Debug)]
pub struct RoutedClient {
    client: reqwest::Client,
    base: Option<String>,
    request_timeout: Duration,
}

impl RoutedClient {
    pub fn new(base: Option<&str>, request_timeout: Duration) -> Result<Self, BusError> {
        let client = reqwest::Client::builder()
            .connect_timeout(CONNECT_TIMEOUT)
            .tcp_keepalive(TCP_KEEPALIVE)
            .build()
            .map_err(|e| BusError::Unavailable(format!("Service Bus: HTTP client: {e}")))?;
        Ok(Self {
            client,
            base: base.map(|b| b.trim_end_matches('/').to_owned()),
            request_timeout,
        })
    }

    /// The request's timeout: a receive's long poll (`…/messages/head?timeout=N`) and the
    /// request timeout, or the request timeout.
    fn timeout_of(&self, request: &Request) -> Duration {
        let url = request.url();
        let long_poll = url
            .path()
            .ends_with("/messages/head")
            .then(|| {
                url.query_pairs()
                    .find(|(name, _)| name == "timeout")
                    .and_then(|(_, seconds)| seconds.parse::<u64>().ok())
            })
            .flatten()
            .map_or(Duration::ZERO, Duration::from_secs);
        long_poll + self.request_timeout
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
        let mut outgoing = self
            .client
            .request(method, &url)
            .timeout(self.timeout_of(request));
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
    fn iso_durations_read_as_the_management_api_writes_them() {
        let cases = [
            ("PT1M", Some(60.0)),
            ("PT60S", Some(60.0)),
            ("PT1H", Some(3600.0)),
            ("P14D", Some(14.0 * 86_400.0)),
            ("PT1M30S", Some(90.0)),
            ("PT0.5S", Some(0.5)),
            ("P1DT1S", Some(86_401.0)),
            ("1M", None),
            ("PT1X", None),
            ("PT5", None),
        ];
        for (text, seconds) in cases {
            assert_eq!(
                iso_duration(text).map(|d| d.as_secs_f64()),
                seconds,
                "{text}"
            );
        }
    }

    #[test]
    fn batches_are_filled_up_to_the_limit_and_keep_the_order() {
        let messages: Vec<String> = (0..10)
            .map(|i| format!("{{\"Body\":\"{i:04}\"}}"))
            .collect();
        let one = messages[0].len();

        let bodies = batch_bodies(messages.clone(), 2 + 4 * one + 3).unwrap();

        assert_eq!(bodies.len(), 3, "4, 4 and 2 messages");
        assert!(bodies.iter().all(|b| b.len() <= 2 + 4 * one + 3));
        let parsed: Vec<serde_json::Value> = bodies
            .iter()
            .flat_map(|b| serde_json::from_str::<Vec<serde_json::Value>>(b).unwrap())
            .collect();
        let expected: Vec<serde_json::Value> = messages
            .iter()
            .map(|m| serde_json::from_str(m).unwrap())
            .collect();
        assert_eq!(parsed, expected);
        assert!(
            batch_bodies(messages, one).is_err(),
            "a message that fits no batch"
        );
    }

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
        let error = status_error("send a batch", 401, "");

        assert!(
            matches!(error, BusError::Unavailable(ref m) if m.contains("401") && m.contains("SAS"))
        );
    }
}
