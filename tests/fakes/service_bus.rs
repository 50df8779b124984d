//! A local Azure Service Bus (one namespace, one topic and its subscriptions) speaking the REST
//! protocol the `azure_messaging_servicebus` 0.21 crate uses, and enforcing its documented
//! contract rather than saying yes. It follows these Microsoft pages:
//!
//! - *Service Bus access control with Shared Access Signatures* (token
//!   `SharedAccessSignature sr=…&sig=…&se=…&skn=…`, signature = base64 HMAC-SHA256 with the key over
//!   `"{url-encoded resource}\n{expiry}"`, the resource a prefix of the request URI): anything
//!   else, an expired token or another key name is answered `401`.
//! - *Send Message* (`POST /{topic}/messages`, `BrokerProperties` JSON header, `201 Created`) and
//!   *Send Message Batch* (the same URI with `Content-Type: application/vnd.microsoft.servicebus.json`
//!   exactly, no parameters; the body a JSON array of messages, each a `Body` string with optional
//!   `BrokerProperties` and `UserProperties` objects; `400` for anything else). A message's
//!   user properties come back on receive as headers whose values are JSON.
//! - *Service Bus quotas*: a message, or a batch as a whole, larger than the tier's maximum
//!   (256 KB on Standard; [`ServiceBusConfig::max_message_bytes`]) is refused with `403` ("quota
//!   exceeded or message too large"); at most 5,000 receive requests at once per entity
//!   ([`ServiceBusConfig::max_concurrent_receives`]), those over it refused with `403`.
//! - *Duplicate detection*, only on a topic created with `RequiresDuplicateDetection`
//!   ([`ServiceBusConfig::duplicate_detection`]): a `MessageId` seen within the window is
//!   accepted (`201`) and dropped. Without it every message is kept.
//! - A topic or subscription that does not exist is answered `410 Gone` (the *Send Message* and
//!   *Peek-Lock Message* references: "specified queue or topic doesn't exist").
//! - *Peek-Lock Message (Non-Destructive Read)*
//!   (`POST /{topic}/subscriptions/{sub}/messages/head?timeout=N`): `201` with the body,
//!   `BrokerProperties` (`DeliveryCount`, `LockToken`, `LockedUntilUtc`, `MessageId`,
//!   `SequenceNumber`, …) and `Location` (the lock's URI), or `204` once `timeout` seconds pass
//!   with nothing to give.
//! - *Delete Message* (`DELETE {location}`, complete) and *Unlock Message* (`PUT {location}`,
//!   abandon): `200`; `404` for a lock it does not know, `410` for one that expired. *Renew-Lock*
//!   (`POST {location}`) extends it.
//! - *Message transfers, locks and settlement* and *Dead-letter queues*: a lock lasts the
//!   subscription's lock duration; `DeliveryCount` grows with each lock taken; a message
//!   abandoned or whose lock expires is available again, unless its delivery count has reached
//!   the max delivery count, in which case it moves to `{sub}/$DeadLetterQueue` with the
//!   `DeadLetterReason` `MaxDeliveryCountExceeded`. The dead-letter queue is read the same way,
//!   and never dead-letters again.
//!
//! - *Topic filters and actions* (SQL filter `sys.To IS NULL OR sys.To = '{name}'`, the rule
//!   `docs/deploy-azure.md` gives each subscription in place of `$Default`): a message with a
//!   `To` reaches only the subscription of that name; one without reaches all. With
//!   [`ServiceBusConfig::routes_by_to`] off, every subscription keeps `$Default` (the true
//!   filter) and gets every message.
//!
//! - *Service Bus management (ATOM)*, as Microsoft's `ServiceBusAdministrationClient` reads it:
//!   `GET /{topic}?api-version=2021-05` and `GET /{topic}/subscriptions/{name}?api-version=2021-05`
//!   answer an Atom `<entry>` whose content is a `TopicDescription` (`RequiresDuplicateDetection`,
//!   `DuplicateDetectionHistoryTimeWindow`) or a `SubscriptionDescription` (`LockDuration`,
//!   `MaxDeliveryCount`), durations in ISO 8601; an entity that does not exist is `200` with an
//!   empty Atom `<feed>` (not `404`). Reading them takes the `Manage` right: a token signed
//!   with the Send/Listen policy is `401` there ([`ServiceBusConfig::manage_key`]).
//!
//! Locks run on Tokio's clock; the configured lock duration and windows are short in tests.
//! [`ServiceBusConfig::round_trip`] delays every answer, as the network between a role and its
//! namespace does (loopback hides it: in one region a request takes 5 to 20 ms).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use chrono::{DateTime, Utc};
use hmac::{Hmac, Mac};
use serde_json::{Value, json};
use sha2::Sha256;
use tokio::sync::Notify;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use uuid::Uuid;

const DEAD_LETTER_QUEUE: &str = "$DeadLetterQueue";

/// What the fake namespace holds and how its entities are configured.
#[derive(Debug, Clone)]
pub struct ServiceBusConfig {
    pub namespace: String,
    pub topic: String,
    /// The Send/Listen policy the roles use.
    pub key_name: String,
    pub key: String,
    /// A policy with the Manage right (which implies Send and Listen).
    pub manage_key_name: String,
    pub manage_key: String,
    pub subscriptions: Vec<String>,
    pub lock_duration: Duration,
    pub max_delivery_count: u32,
    pub duplicate_detection_window: Duration,
    /// Whether the subscriptions have the `To` rule of the deploy guide (see the module docs).
    pub routes_by_to: bool,
    /// Whether the topic was created with `RequiresDuplicateDetection` (the deploy guide's is).
    pub duplicate_detection: bool,
    /// The largest message, or batch as a whole, the tier takes (Standard: 256 KB).
    pub max_message_bytes: usize,
    /// How many receive requests may wait at once on one entity (Service Bus: 5,000).
    pub max_concurrent_receives: usize,
    /// How long every request takes before it is handled (the network's round trip).
    pub round_trip: Duration,
}

impl ServiceBusConfig {
    /// A namespace with a fresh name, a 2 s lock and the given max delivery count.
    pub fn new(subscriptions: &[&str], max_delivery_count: u32) -> Self {
        Self {
            namespace: format!(
                "orderflow-test-{}",
                &Uuid::new_v4().simple().to_string()[..8]
            ),
            topic: "events".into(),
            key_name: "orderflow-role".into(),
            key: STANDARD.encode(Uuid::new_v4().as_bytes()),
            manage_key_name: "RootManageSharedAccessKey".into(),
            manage_key: STANDARD.encode(Uuid::new_v4().as_bytes()),
            subscriptions: subscriptions.iter().map(|s| (*s).to_owned()).collect(),
            lock_duration: Duration::from_secs(2),
            max_delivery_count,
            duplicate_detection_window: Duration::from_secs(600),
            routes_by_to: true,
            duplicate_detection: true,
            max_message_bytes: 256 * 1024,
            max_concurrent_receives: 5_000,
            round_trip: Duration::ZERO,
        }
    }
}

/// The running fake; the server stops when this is dropped.
pub struct ServiceBusFake {
    pub base_url: String,
    pub config: ServiceBusConfig,
    shared: Arc<Shared>,
    server: JoinHandle<()>,
}

impl Drop for ServiceBusFake {
    fn drop(&mut self) {
        self.server.abort();
    }
}

impl ServiceBusFake {
    pub async fn start(config: ServiceBusConfig) -> Self {
        let subscriptions = config
            .subscriptions
            .iter()
            .map(|name| (name.clone(), SubscriptionState::default()))
            .collect();
        let shared = Arc::new(Shared {
            config: config.clone(),
            state: Mutex::new(Namespace {
                subscriptions,
                seen_ids: HashMap::new(),
                next_sequence: 1,
                unauthorized: 0,
                send_requests: 0,
                receiving: 0,
                most_receiving: 0,
            }),
            arrived: Notify::new(),
        });
        let app = Router::new().fallback(handle).with_state(shared.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the Service Bus fake");
        let address = listener.local_addr().expect("fake address");
        let server = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Self {
            base_url: format!("http://{address}"),
            config,
            shared,
            server,
        }
    }

    /// Message ids in a subscription's dead-letter queue, in order.
    pub fn dead_lettered(&self, subscription: &str) -> Vec<String> {
        self.ids(subscription, true)
    }

    /// Message ids still in a subscription (available or locked), in order.
    pub fn active(&self, subscription: &str) -> Vec<String> {
        self.ids(subscription, false)
    }

    /// Requests refused with 401 so far.
    pub fn unauthorized(&self) -> usize {
        self.shared.lock().unauthorized
    }

    /// The most receive requests that ever waited at once (on all entities).
    pub fn most_receiving(&self) -> usize {
        self.shared.lock().most_receiving
    }

    /// Send requests accepted so far (a batch is one).
    pub fn send_requests(&self) -> usize {
        self.shared.lock().send_requests
    }

    /// The user properties of the first message in a subscription (available or locked) whose
    /// `MessageId` is `message_id`.
    pub fn user_properties(&self, subscription: &str, message_id: &str) -> Option<Value> {
        let state = self.shared.lock();
        let found = state
            .subscriptions
            .get(subscription)?
            .active
            .iter()
            .find(|m| m.message_id == message_id)?;
        Some(Value::Object(found.user_properties.clone()))
    }

    fn ids(&self, subscription: &str, dead: bool) -> Vec<String> {
        let mut state = self.shared.lock();
        let config = &self.shared.config;
        state
            .subscriptions
            .get_mut(subscription)
            .map(|s| {
                s.expire_locks(config.max_delivery_count);
                let queue = if dead { &s.dead } else { &s.active };
                queue.iter().map(|m| m.message_id.clone()).collect()
            })
            .unwrap_or_default()
    }
}

struct Shared {
    config: ServiceBusConfig,
    state: Mutex<Namespace>,
    /// Woken when something becomes available to receive.
    arrived: Notify,
}

impl Shared {
    fn lock(&self) -> std::sync::MutexGuard<'_, Namespace> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn host(&self) -> String {
        format!("{}.servicebus.windows.net", self.config.namespace)
    }
}

struct Namespace {
    subscriptions: HashMap<String, SubscriptionState>,
    /// Duplicate detection: message id → when first accepted.
    seen_ids: HashMap<String, Instant>,
    next_sequence: i64,
    unauthorized: usize,
    /// Send requests answered `201` (a batch counts once).
    send_requests: usize,
    /// Receive requests waiting now.
    receiving: usize,
    /// The most that ever waited at once.
    most_receiving: usize,
}

#[derive(Default)]
struct SubscriptionState {
    active: Vec<Message>,
    dead: Vec<Message>,
}

#[derive(Clone)]
struct Message {
    sequence: i64,
    message_id: String,
    label: Option<String>,
    to: Option<String>,
    content_type: Option<String>,
    body: Bytes,
    enqueued: DateTime<Utc>,
    delivery_count: u32,
    lock: Option<Lock>,
    dead_letter_reason: Option<String>,
    user_properties: serde_json::Map<String, Value>,
}

#[derive(Clone, Copy)]
struct Lock {
    token: Uuid,
    until: Instant,
    until_utc: DateTime<Utc>,
}

impl SubscriptionState {
    fn queue(&mut self, dead: bool) -> &mut Vec<Message> {
        if dead {
            &mut self.dead
        } else {
            &mut self.active
        }
    }

    /// Locks that lapsed are released as if abandoned.
    fn expire_locks(&mut self, max_delivery_count: u32) {
        let now = Instant::now();
        for dead in [false, true] {
            let expired: Vec<i64> = self
                .queue(dead)
                .iter()
                .filter(|m| m.lock.is_some_and(|l| l.until <= now))
                .map(|m| m.sequence)
                .collect();
            for sequence in expired {
                self.release(dead, sequence, max_delivery_count);
            }
        }
    }

    /// Unlocks a message: available again, or dead-lettered once its delivery count reached the
    /// maximum (never from the dead-letter queue itself).
    fn release(&mut self, dead: bool, sequence: i64, max_delivery_count: u32) {
        let queue = self.queue(dead);
        let Some(at) = queue.iter().position(|m| m.sequence == sequence) else {
            return;
        };
        queue[at].lock = None;
        if !dead && queue[at].delivery_count >= max_delivery_count {
            let mut message = queue.remove(at);
            message.dead_letter_reason = Some("MaxDeliveryCountExceeded".into());
            let position = self.dead.partition_point(|m| m.sequence < message.sequence);
            self.dead.insert(position, message);
        }
    }
}

type Answer = Response;

fn status(code: StatusCode, why: &str) -> Answer {
    (code, why.to_owned()).into_response()
}

async fn handle(
    State(shared): State<Arc<Shared>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Answer {
    tokio::time::sleep(shared.config.round_trip).await;
    let path = uri.path().to_owned();
    let rights = match authorize(&shared, &headers, &path) {
        Ok(rights) => rights,
        Err(why) => {
            shared.lock().unauthorized += 1;
            return status(StatusCode::UNAUTHORIZED, why);
        }
    };
    let segments: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    let topic = shared.config.topic.as_str();
    let management = method == Method::GET
        && uri.query().unwrap_or_default().contains("api-version=")
        && matches!(segments.as_slice(), [_] | [_, "subscriptions", _]);
    if management {
        if rights != Rights::Manage {
            shared.lock().unauthorized += 1;
            return status(
                StatusCode::UNAUTHORIZED,
                "Manage,EntityRead claims required for this operation.",
            );
        }
        return describe(&shared, &segments);
    }
    match (method.clone(), segments.as_slice()) {
        (Method::POST, [t, "messages"]) if *t == topic => send(&shared, &headers, body),
        (_, [t, "subscriptions", sub, rest @ ..]) if *t == topic => {
            let (dead, rest) = match rest {
                [DEAD_LETTER_QUEUE, rest @ ..] => (true, rest),
                _ => (false, rest),
            };
            if !shared.lock().subscriptions.contains_key(*sub) {
                return status(StatusCode::GONE, "the subscription does not exist");
            }
            match (method, rest) {
                (Method::POST, ["messages", "head"]) => {
                    let timeout = query_timeout(&uri);
                    let Some(_receiving) = Receiving::start(&shared) else {
                        return status(
                            StatusCode::FORBIDDEN,
                            "too many concurrent receive requests on the entity",
                        );
                    };
                    receive(&shared, sub, dead, timeout).await
                }
                (method, ["messages", id, token]) => settle(&shared, &method, sub, dead, id, token),
                _ => status(StatusCode::METHOD_NOT_ALLOWED, "not part of the fake"),
            }
        }
        (Method::POST, [_, "messages"]) => status(StatusCode::GONE, "the topic does not exist"),
        _ => status(StatusCode::NOT_FOUND, "no such entity"),
    }
}

/// An entity's description as the management API gives it (see the module docs).
fn describe(shared: &Shared, segments: &[&str]) -> Answer {
    const ATOM: &str = "http://www.w3.org/2005/Atom";
    const CONNECT: &str = "http://schemas.microsoft.com/netservices/2010/10/servicebus/connect";
    let config = &shared.config;
    let duration = |d: Duration| format!("PT{}S", d.as_secs());
    let description = match segments {
        [topic] if *topic == config.topic => Some((
            (*topic).to_owned(),
            format!(
                "<TopicDescription xmlns=\"{CONNECT}\"><DefaultMessageTimeToLive>P14D</DefaultMessageTimeToLive><MaxSizeInMegabytes>1024</MaxSizeInMegabytes><RequiresDuplicateDetection>{}</RequiresDuplicateDetection><DuplicateDetectionHistoryTimeWindow>{}</DuplicateDetectionHistoryTimeWindow><EnableBatchedOperations>true</EnableBatchedOperations><Status>Active</Status></TopicDescription>",
                config.duplicate_detection,
                duration(config.duplicate_detection_window)
            ),
        )),
        [topic, "subscriptions", name]
            if *topic == config.topic && config.subscriptions.iter().any(|s| s == name) =>
        {
            Some((
                (*name).to_owned(),
                format!(
                    "<SubscriptionDescription xmlns=\"{CONNECT}\"><LockDuration>{}</LockDuration><RequiresSession>false</RequiresSession><DefaultMessageTimeToLive>P14D</DefaultMessageTimeToLive><DeadLetteringOnMessageExpiration>false</DeadLetteringOnMessageExpiration><MaxDeliveryCount>{}</MaxDeliveryCount><EnableBatchedOperations>true</EnableBatchedOperations><Status>Active</Status></SubscriptionDescription>",
                    duration(config.lock_duration),
                    config.max_delivery_count
                ),
            ))
        }
        _ => None,
    };
    let body = match description {
        Some((title, content)) => format!(
            "<entry xmlns=\"{ATOM}\"><title type=\"text\">{title}</title><content type=\"application/xml\">{content}</content></entry>"
        ),
        // What the service answers for an entity that does not exist.
        None => format!(
            "<feed xmlns=\"{ATOM}\"><title type=\"text\">Publicly Listed Services</title><subtitle type=\"text\">This is the list of publicly-listed services currently available.</subtitle></feed>"
        ),
    };
    (
        StatusCode::OK,
        [(
            header::CONTENT_TYPE,
            "application/atom+xml;type=entry;charset=utf-8",
        )],
        body,
    )
        .into_response()
}

/// One waiting receive request, counted against the entity's limit while it lasts.
struct Receiving<'a>(&'a Shared);

impl<'a> Receiving<'a> {
    fn start(shared: &'a Shared) -> Option<Self> {
        let mut state = shared.lock();
        if state.receiving >= shared.config.max_concurrent_receives {
            return None;
        }
        state.receiving += 1;
        state.most_receiving = state.most_receiving.max(state.receiving);
        Some(Self(shared))
    }
}

impl Drop for Receiving<'_> {
    fn drop(&mut self) {
        self.0.lock().receiving -= 1;
    }
}

/// What a token's policy may do.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Rights {
    SendListen,
    Manage,
}

/// Checks the SAS token the way Service Bus documents it.
fn authorize(shared: &Shared, headers: &HeaderMap, path: &str) -> Result<Rights, &'static str> {
    let token = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("SharedAccessSignature "))
        .ok_or("no SharedAccessSignature")?;
    let fields: HashMap<&str, &str> = token.split('&').filter_map(|p| p.split_once('=')).collect();
    let field = |name| fields.get(name).copied().ok_or("incomplete token");
    let (sr, sig, se, skn) = (field("sr")?, field("sig")?, field("se")?, field("skn")?);
    let (key, rights) = if skn == shared.config.key_name {
        (&shared.config.key, Rights::SendListen)
    } else if skn == shared.config.manage_key_name {
        (&shared.config.manage_key, Rights::Manage)
    } else {
        return Err("unknown key name");
    };
    let expiry: i64 = se.parse().map_err(|_| "bad expiry")?;
    if expiry <= Utc::now().timestamp() {
        return Err("token expired");
    }
    let signature = STANDARD
        .decode(url_decode(sig))
        .map_err(|_| "bad signature encoding")?;
    let mut mac = Hmac::<Sha256>::new_from_slice(key.as_bytes()).map_err(|_| "bad key")?;
    mac.update(format!("{sr}\n{se}").as_bytes());
    mac.verify_slice(&signature)
        .map_err(|_| "signature mismatch")?;
    let resource = url_decode(sr).to_lowercase();
    let resource = resource.split('?').next().unwrap_or_default();
    let target = format!("https://{}{path}", shared.host()).to_lowercase();
    if !resource.starts_with("https://") || !target.starts_with(resource) {
        return Err("the token is for another resource");
    }
    Ok(rights)
}

/// `application/x-www-form-urlencoded` decoding (`+` is a space).
fn url_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => match u8::from_str_radix(&text[i + 1..i + 3], 16) {
                Ok(byte) => {
                    out.push(byte);
                    i += 2;
                }
                Err(_) => out.push(b'%'),
            },
            byte => out.push(byte),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn query_timeout(uri: &Uri) -> Duration {
    let seconds = uri
        .query()
        .unwrap_or_default()
        .split('&')
        .filter_map(|p| p.split_once('='))
        .find(|(k, _)| *k == "timeout")
        .and_then(|(_, v)| v.parse::<u64>().ok())
        .unwrap_or(60);
    Duration::from_secs(seconds.min(60))
}

/// The content type of a batch send, exactly (the reference: "without parameters").
const BATCH: &str = "application/vnd.microsoft.servicebus.json";

/// One message as sent, before it is enqueued.
struct Incoming {
    properties: Value,
    user_properties: serde_json::Map<String, Value>,
    content_type: Option<String>,
    body: Bytes,
}

fn send(shared: &Shared, headers: &HeaderMap, body: Bytes) -> Answer {
    if body.len() > shared.config.max_message_bytes {
        return status(
            StatusCode::FORBIDDEN,
            &format!(
                "The received message (size: {} bytes) exceeds the limit ({} bytes) currently allowed on the entity.",
                body.len(),
                shared.config.max_message_bytes
            ),
        );
    }
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let incoming = if content_type.as_deref() == Some(BATCH) {
        match batch(&body) {
            Ok(messages) => messages,
            Err(why) => return status(StatusCode::BAD_REQUEST, &why),
        }
    } else {
        let properties = match headers.get("brokerproperties") {
            Some(value) => match value
                .to_str()
                .ok()
                .and_then(|v| serde_json::from_str(v).ok())
            {
                Some(properties) => properties,
                None => return status(StatusCode::BAD_REQUEST, "BrokerProperties is not JSON"),
            },
            None => json!({}),
        };
        vec![Incoming {
            properties,
            user_properties: serde_json::Map::new(),
            content_type,
            body,
        }]
    };
    let mut state = shared.lock();
    state.send_requests += 1;
    for message in incoming {
        enqueue(shared, &mut state, message);
    }
    drop(state);
    shared.arrived.notify_waiters();
    status(StatusCode::CREATED, "")
}

/// A batch body: a JSON array of `{"Body": string, "BrokerProperties": {..}, "UserProperties": {..}}`.
fn batch(body: &[u8]) -> Result<Vec<Incoming>, String> {
    let messages: Vec<Value> =
        serde_json::from_slice(body).map_err(|e| format!("the batch is not a JSON array: {e}"))?;
    if messages.is_empty() {
        return Err("the batch has no messages".into());
    }
    messages
        .into_iter()
        .map(|message| {
            let Value::Object(mut message) = message else {
                return Err("a message of the batch is not an object".into());
            };
            let Some(Value::String(text)) = message.remove("Body") else {
                return Err("a message of the batch has no Body string".into());
            };
            let properties = match message.remove("BrokerProperties") {
                None => json!({}),
                Some(properties @ Value::Object(_)) => properties,
                Some(_) => return Err("BrokerProperties is not an object".into()),
            };
            let user_properties = match message.remove("UserProperties") {
                None => serde_json::Map::new(),
                Some(Value::Object(properties)) => properties,
                Some(_) => return Err("UserProperties is not an object".into()),
            };
            let content_type = properties
                .get("ContentType")
                .and_then(Value::as_str)
                .map(str::to_owned);
            Ok(Incoming {
                properties,
                user_properties,
                content_type,
                body: Bytes::from(text),
            })
        })
        .collect()
}

/// Puts one sent message in every subscription whose filter takes it (or drops it as a
/// duplicate).
fn enqueue(shared: &Shared, state: &mut Namespace, incoming: Incoming) {
    let text = |name: &str| {
        incoming
            .properties
            .get(name)
            .and_then(Value::as_str)
            .map(str::to_owned)
    };
    let message_id = text("MessageId").unwrap_or_else(|| Uuid::new_v4().simple().to_string());
    if shared.config.duplicate_detection {
        let now = Instant::now();
        let window = shared.config.duplicate_detection_window;
        state
            .seen_ids
            .retain(|_, at| now.duration_since(*at) < window);
        if state.seen_ids.contains_key(&message_id) {
            // Accepted and dropped, as duplicate detection does.
            return;
        }
        state.seen_ids.insert(message_id.clone(), now);
    }
    let sequence = state.next_sequence;
    state.next_sequence += 1;
    let message = Message {
        sequence,
        message_id,
        label: text("Label"),
        to: text("To"),
        content_type: incoming.content_type,
        body: incoming.body,
        enqueued: Utc::now(),
        delivery_count: 0,
        lock: None,
        dead_letter_reason: None,
        user_properties: incoming.user_properties,
    };
    let routes_by_to = shared.config.routes_by_to;
    for (name, subscription) in state.subscriptions.iter_mut() {
        let filtered_out = routes_by_to && message.to.as_ref().is_some_and(|to| to != name);
        if !filtered_out {
            subscription.active.push(message.clone());
        }
    }
}

async fn receive(shared: &Shared, sub: &str, dead: bool, timeout: Duration) -> Answer {
    let deadline = Instant::now() + timeout;
    loop {
        let arrived = shared.arrived.notified();
        if let Some(answer) = take(shared, sub, dead) {
            return answer;
        }
        let now = Instant::now();
        if now >= deadline {
            return StatusCode::NO_CONTENT.into_response();
        }
        // Also wake for locks that lapse, which nobody announces.
        let nap = (deadline - now).min(Duration::from_millis(50));
        tokio::select! {
            _ = arrived => {}
            _ = tokio::time::sleep(nap) => {}
        }
    }
}

/// Locks the first available message of the queue, if any.
fn take(shared: &Shared, sub: &str, dead: bool) -> Option<Answer> {
    let config = &shared.config;
    let mut state = shared.lock();
    let subscription = state.subscriptions.get_mut(sub)?;
    subscription.expire_locks(config.max_delivery_count);
    let message = subscription
        .queue(dead)
        .iter_mut()
        .find(|m| m.lock.is_none())?;
    let lock = Lock {
        token: Uuid::new_v4(),
        until: Instant::now() + config.lock_duration,
        until_utc: Utc::now()
            + chrono::Duration::from_std(config.lock_duration).unwrap_or_default(),
    };
    message.lock = Some(lock);
    message.delivery_count += 1;
    let message = message.clone();
    drop(state);

    let properties = json!({
        "DeliveryCount": message.delivery_count,
        "EnqueuedSequenceNumber": message.sequence,
        "EnqueuedTimeUtc": http_date(message.enqueued),
        "Label": message.label,
        "To": message.to,
        "LockToken": lock.token.to_string(),
        "LockedUntilUtc": http_date(lock.until_utc),
        "MessageId": message.message_id,
        "SequenceNumber": message.sequence,
        "State": if dead { "Deferred" } else { "Active" },
        "TimeToLive": 1_209_600.0,
    });
    let queue = if dead {
        format!("{sub}/{DEAD_LETTER_QUEUE}")
    } else {
        sub.to_owned()
    };
    let location = format!(
        "https://{}/{}/subscriptions/{queue}/messages/{}/{}",
        shared.host(),
        config.topic,
        message.sequence,
        lock.token
    );
    let mut headers = HeaderMap::new();
    let mut put = |name: &'static str, value: String| {
        if let Ok(value) = HeaderValue::from_str(&value) {
            headers.insert(name, value);
        }
    };
    put("brokerproperties", properties.to_string());
    put("location", location);
    if let Some(content_type) = &message.content_type {
        put("content-type", content_type.clone());
    }
    if let Some(reason) = &message.dead_letter_reason {
        // Custom properties travel as headers whose values are JSON.
        put("deadletterreason", json!(reason).to_string());
        let description = format!(
            "Message could not be consumed after {} delivery attempts.",
            config.max_delivery_count
        );
        put("deadlettererrordescription", json!(description).to_string());
    }
    // User properties travel as headers whose values are JSON.
    for (name, value) in &message.user_properties {
        if let (Ok(name), Ok(value)) = (
            axum::http::HeaderName::from_bytes(name.to_lowercase().as_bytes()),
            HeaderValue::from_str(&value.to_string()),
        ) {
            headers.insert(name, value);
        }
    }
    Some((StatusCode::CREATED, headers, message.body).into_response())
}

fn settle(
    shared: &Shared,
    method: &Method,
    sub: &str,
    dead: bool,
    id: &str,
    token: &str,
) -> Answer {
    let config = &shared.config;
    let mut state = shared.lock();
    let Some(subscription) = state.subscriptions.get_mut(sub) else {
        return status(StatusCode::NOT_FOUND, "no such subscription");
    };
    let now = Instant::now();
    let found = subscription.queue(dead).iter_mut().find(|m| {
        (m.sequence.to_string() == id || m.message_id == id)
            && m.lock.is_some_and(|l| l.token.to_string() == token)
    });
    let Some(message) = found else {
        return status(StatusCode::NOT_FOUND, "no message with that lock");
    };
    let Some(lock) = message.lock else {
        return status(StatusCode::NOT_FOUND, "no message with that lock");
    };
    let sequence = message.sequence;
    if lock.until <= now {
        subscription.expire_locks(config.max_delivery_count);
        drop(state);
        shared.arrived.notify_waiters();
        return status(StatusCode::GONE, "the lock expired");
    }
    match *method {
        Method::DELETE => {
            subscription.queue(dead).retain(|m| m.sequence != sequence);
            status(StatusCode::OK, "")
        }
        Method::PUT => {
            subscription.release(dead, sequence, config.max_delivery_count);
            drop(state);
            shared.arrived.notify_waiters();
            status(StatusCode::OK, "")
        }
        Method::POST => {
            message.lock = Some(Lock {
                token: lock.token,
                until: now + config.lock_duration,
                until_utc: Utc::now()
                    + chrono::Duration::from_std(config.lock_duration).unwrap_or_default(),
            });
            status(StatusCode::OK, "")
        }
        _ => status(StatusCode::METHOD_NOT_ALLOWED, "not part of the fake"),
    }
}

/// RFC 1123 dates, as Service Bus writes them.
fn http_date(at: DateTime<Utc>) -> String {
    at.format("%a, %d %b %Y %H:%M:%S GMT").to_string()
}
