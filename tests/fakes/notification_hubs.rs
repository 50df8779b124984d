//! A local Azure Notification Hubs: an HTTP server on `127.0.0.1:0` that enforces the
//! documented data-plane contract, so the Notification Hubs adapter can be tested here.
//!
//! It follows these Microsoft pages (learn.microsoft.com, Notification Hubs REST reference and
//! Service Bus SAS docs):
//! - "Shared Access Signature authentication with Service Bus" / "Generate SAS token": the
//!   `Authorization` header is `SharedAccessSignature sr=..&sig=..&se=..&skn=..`; `sig` is the
//!   base64 HMAC-SHA256, keyed with the key's bytes, of `"{url-encoded sr}\n{se}"`. The fake
//!   recomputes it with the key it was started with, requires `skn` to be its key name, `se` to
//!   lie in the future and `sr` to be the request's resource URI or a parent of it
//!   (lowercase compared) — else 401.
//! - "Create or overwrite an installation": `PUT /{hub}/installations/{id}`, `Content-Type:
//!   application/json`, body with `installationId` (equal to the path id), `platform`,
//!   `pushChannel`, optional `tags` and `templates` (each with a `body`, optional `headers`
//!   and `tags`) — else 400; answers 200.
//! - "Read an installation": `GET`, 200 with the installation, 404 if there is none.
//! - "Delete an installation": `DELETE`, 204 even when there was none.
//! - "Send a template notification": `POST /{hub}/messages/`, `Content-Type: application/json`,
//!   `ServiceBusNotification-Format: template`, optional `ServiceBusNotification-Tags` (a single
//!   tag), body a JSON object of string properties — else 400. It answers 201 (what the service
//!   answers, and all the JavaScript SDK accepts; the reference page's table says 200).
//! - Microsoft's SDKs for which data-plane versions exist: azure-notificationhubs-dotnet's
//!   `ApiVersionConstants.cs` (removed in 2020, it listed every version from 2012-03 to 2017-04)
//!   and `Messaging/ManagementStrings.cs` (2020-06, what both the .NET and the JavaScript SDKs
//!   send today, for every platform). Any other `api-version` (a management-plane date such as
//!   `2023-10-01` included) is refused with 400, in the words of the service's `UnknownApiVersion`
//!   resource (`SRClient.resx` in the .NET SDK). The `fcmv1` platform is accepted only with
//!   2020-06, the one version the SDKs use for it.
//! - Throttling as azure-notificationhubs-dotnet's `ExceptionUtility.cs` reads it: 429, or 403
//!   with `Retry-After` (the hub's "quota exceeded"), both with a delay in seconds.
//! - Eventual consistency of installations (azure-notificationhubs-dotnet issues #95 and #345:
//!   a read right after a create or an update can answer 404 or the previous body): a `GET`
//!   sees the installations as they were [`FakeNotificationHubs::set_staleness`] ago (1 s
//!   unless set). Sends see every write at once.
//!
//! Every request needs an `api-version` query parameter — else 400. Templates are checked per
//! platform: APNs and FCM v1 bodies must be JSON, a WNS body a well-nested `<toast>` document
//! with an `X-WNS-Type` header. A send renders each template of every matching installation by
//! substituting `$(property)` (escaped for JSON or XML) and checks the result has its
//! platform's shape, and renders the template's headers the same way within their limits
//! (`apns-collapse-id` 64 bytes, `X-WNS-Tag` 16 characters); the rendering is recorded for
//! tests to inspect. [`FakeNotificationHubs::fail_next`] makes the next requests answer 429 or
//! 403 (with `Retry-After`) or 503.
//!
//! Not modelled: native sends, registrations, tag expressions with operators, quotas by count,
//! PNS delivery itself.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use axum::body::{Body, Bytes};
use axum::http::{HeaderMap, Method, Request, Response, StatusCode};
use base64::Engine;
use hmac::{Hmac, Mac};
use serde_json::{Map, Value};
use sha2::Sha256;
use tokio::task::JoinHandle;

/// The data-plane versions the service knows (see the module docs).
const API_VERSIONS: [&str; 17] = [
    "2012-03", "2012-08", "2013-04", "2013-07", "2013-08", "2013-10", "2014-01", "2014-05",
    "2014-08", "2014-09", "2015-01", "2015-04", "2015-08", "2016-03", "2016-07", "2017-04",
    "2020-06",
];
/// The version the SDKs use for FCM v1, the only one the fake takes it with.
const FCMV1_API_VERSION: &str = "2020-06";
const PLATFORMS: [&str; 3] = ["apns", "fcmv1", "wns"];

/// An injected failure, answered instead of the next requests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    /// 429 with `Retry-After: {0}` seconds.
    Throttled(u64),
    /// 403 with `Retry-After: {0}` seconds: the hub's quota exceeded.
    QuotaExceeded(u64),
    /// 403 without `Retry-After`: the key lacks the right (a Listen-only policy sending).
    Forbidden,
    /// 503.
    Unavailable,
}

/// One device's copy of a send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivery {
    pub installation_id: String,
    pub platform: String,
    /// The template body with the properties substituted.
    pub payload: String,
    /// The template's headers with the properties substituted.
    pub headers: BTreeMap<String, String>,
}

/// A template send as the fake accepted it.
#[derive(Debug, Clone, PartialEq)]
pub struct RecordedSend {
    /// The `ServiceBusNotification-Tags` header (`None`: a broadcast).
    pub tag: Option<String>,
    pub properties: BTreeMap<String, String>,
    /// One per matching installation's template, ordered by installation id.
    pub deliveries: Vec<Delivery>,
}

struct State {
    installations: BTreeMap<String, Value>,
    /// Every write of each installation, oldest first: when, and the body (`None`: deleted).
    history: BTreeMap<String, Vec<(Instant, Option<Value>)>>,
    /// How far behind the writes a read is.
    staleness: Duration,
    sends: Vec<RecordedSend>,
    failures: VecDeque<Failure>,
    /// Every send is refused with 400 while this is set (a bad template, say).
    refusing_sends: bool,
    requests: usize,
}

impl Default for State {
    fn default() -> Self {
        Self {
            installations: BTreeMap::new(),
            history: BTreeMap::new(),
            staleness: Duration::from_secs(1),
            sends: Vec::new(),
            failures: VecDeque::new(),
            refusing_sends: false,
            requests: 0,
        }
    }
}

impl State {
    fn write(&mut self, id: &str, installation: Option<Value>) {
        match &installation {
            Some(body) => self.installations.insert(id.to_owned(), body.clone()),
            None => self.installations.remove(id),
        };
        self.history
            .entry(id.to_owned())
            .or_default()
            .push((Instant::now(), installation));
    }

    /// What a `GET` answers now: the last write older than the staleness.
    fn read(&self, id: &str) -> Option<Value> {
        let horizon = Instant::now().checked_sub(self.staleness)?;
        self.history
            .get(id)?
            .iter()
            .rev()
            .find(|(at, _)| *at <= horizon)
            .and_then(|(_, body)| body.clone())
    }
}

struct Hub {
    name: String,
    key_name: String,
    key: String,
    state: Mutex<State>,
}

pub struct FakeNotificationHubs {
    address: SocketAddr,
    hub: Arc<Hub>,
    server: JoinHandle<()>,
}

impl Drop for FakeNotificationHubs {
    fn drop(&mut self) {
        self.server.abort();
    }
}

impl FakeNotificationHubs {
    /// Starts a hub named `hub` that accepts tokens signed with `key` under `key_name`.
    pub async fn start(hub: &str, key_name: &str, key: &str) -> Self {
        let hub = Arc::new(Hub {
            name: hub.to_owned(),
            key_name: key_name.to_owned(),
            key: key.to_owned(),
            state: Mutex::default(),
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("a local port");
        let address = listener.local_addr().expect("a local address");
        let served = hub.clone();
        let app = axum::Router::new().fallback(move |request: Request<Body>| {
            let hub = served.clone();
            async move { hub.handle(request).await }
        });
        let server = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Self {
            address,
            hub,
            server,
        }
    }

    /// What replaces `https://{namespace}.servicebus.windows.net` for the adapter.
    pub fn base_url(&self) -> String {
        format!("http://{}", self.address)
    }

    /// How far behind the writes a `GET` is (1 s unless set; zero: consistent at once).
    pub fn set_staleness(&self, staleness: Duration) {
        self.hub.state().staleness = staleness;
    }

    /// The stored installation as it is now (a `GET` may still answer an older one).
    pub fn installation(&self, id: &str) -> Option<Value> {
        self.hub.state().installations.get(id).cloned()
    }

    pub fn installations(&self) -> Vec<Value> {
        self.hub.state().installations.values().cloned().collect()
    }

    /// Every accepted send, oldest first.
    pub fn sends(&self) -> Vec<RecordedSend> {
        self.hub.state().sends.clone()
    }

    /// Requests received, refused ones included.
    pub fn requests(&self) -> usize {
        self.hub.state().requests
    }

    /// The next `times` authorized requests are answered with `failure`.
    pub fn fail_next(&self, times: usize, failure: Failure) {
        self.hub
            .state()
            .failures
            .extend(std::iter::repeat_n(failure, times));
    }

    /// Until called again with `false`, every send is answered `400 Bad Request`, as the
    /// service answers a notification it cannot accept (an invalid payload or format).
    pub fn refuse_sends(&self, refusing: bool) {
        self.hub.state().refusing_sends = refusing;
    }

    /// The fake's SAS check on its own: `Ok` if `authorization` grants access to `resource`
    /// (a full URI, as `sr` names it) now.
    pub fn check_token(&self, authorization: &str, resource: &str) -> Result<(), String> {
        self.hub.check_token(authorization, resource)
    }
}

type Answer = Response<Body>;

fn answer(status: StatusCode, body: impl Into<String>) -> Answer {
    let mut response = Response::new(Body::from(body.into()));
    *response.status_mut() = status;
    response
}

fn bad_request(why: impl Into<String>) -> Answer {
    answer(StatusCode::BAD_REQUEST, why)
}

impl Hub {
    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    async fn handle(&self, request: Request<Body>) -> Answer {
        self.state().requests += 1;
        let (parts, body) = request.into_parts();
        let Ok(body) = axum::body::to_bytes(body, 64 * 1024).await else {
            return answer(StatusCode::PAYLOAD_TOO_LARGE, "over 64 KB");
        };
        let query = parts.uri.query().unwrap_or_default();
        let Some(version) = query_param(query, "api-version") else {
            return bad_request("the api-version query parameter is required");
        };
        if !API_VERSIONS.contains(&version.as_str()) {
            return bad_request(format!(
                "api-version '{version}' is not supported; leave it out or use one of {}",
                API_VERSIONS.join(", ")
            ));
        }
        let host = header(&parts.headers, "host").unwrap_or_default();
        let resource = format!("http://{host}{}", parts.uri.path());
        let authorization = header(&parts.headers, "authorization").unwrap_or_default();
        if let Err(why) = self.check_token(authorization, &resource) {
            return answer(StatusCode::UNAUTHORIZED, why);
        }
        if let Some(failure) = self.state().failures.pop_front() {
            return match failure {
                Failure::Throttled(seconds) => {
                    let mut response = answer(StatusCode::TOO_MANY_REQUESTS, "throttled");
                    response
                        .headers_mut()
                        .insert("Retry-After", seconds.to_string().parse().unwrap());
                    response
                }
                Failure::QuotaExceeded(seconds) => {
                    let mut response = answer(StatusCode::FORBIDDEN, "quota exceeded");
                    response
                        .headers_mut()
                        .insert("Retry-After", seconds.to_string().parse().unwrap());
                    response
                }
                Failure::Forbidden => answer(StatusCode::FORBIDDEN, "the key lacks this right"),
                Failure::Unavailable => answer(StatusCode::SERVICE_UNAVAILABLE, "unavailable"),
            };
        }
        if parts.method == axum::http::Method::POST
            && parts
                .uri
                .path()
                .trim_end_matches('/')
                .ends_with("/messages")
            && self.state().refusing_sends
        {
            return bad_request("the notification payload is not valid");
        }
        let segments: Vec<&str> = parts
            .uri
            .path()
            .trim_start_matches('/')
            .split('/')
            .collect();
        if segments.first() != Some(&self.name.as_str()) {
            return answer(StatusCode::NOT_FOUND, "no such hub");
        }
        match (&parts.method, &segments[1..]) {
            (&Method::PUT, ["installations", id]) => {
                self.put_installation(&decode(id), &parts.headers, &body, &version)
            }
            (&Method::GET, ["installations", id]) => match self.state().read(&decode(id)) {
                Some(installation) => {
                    let mut response = answer(StatusCode::OK, installation.to_string());
                    response
                        .headers_mut()
                        .insert("Content-Type", "application/json".parse().unwrap());
                    response
                }
                None => answer(StatusCode::NOT_FOUND, "installation not found"),
            },
            (&Method::DELETE, ["installations", id]) => {
                self.state().write(&decode(id), None);
                answer(StatusCode::NO_CONTENT, "")
            }
            (&Method::POST, ["messages", ""] | ["messages"]) => {
                self.send(&parts.headers, &body, &version)
            }
            _ => answer(StatusCode::NOT_FOUND, "no such operation"),
        }
    }

    fn check_token(&self, authorization: &str, resource: &str) -> Result<(), String> {
        let fields = authorization
            .strip_prefix("SharedAccessSignature ")
            .ok_or("the Authorization header is not a SharedAccessSignature")?;
        let mut raw: HashMap<&str, &str> = HashMap::new();
        for field in fields.split('&') {
            let (name, value) = field.split_once('=').ok_or("a SAS field without '='")?;
            raw.insert(name, value);
        }
        let [sr, sig, se, skn] = ["sr", "sig", "se", "skn"].map(|f| raw.get(f).copied());
        let (Some(sr), Some(sig), Some(se), Some(skn)) = (sr, sig, se, skn) else {
            return Err("the token needs sr, sig, se and skn".into());
        };
        if decode(skn) != self.key_name {
            return Err(format!("unknown key name {}", decode(skn)));
        }
        let expiry: u64 = se.parse().map_err(|_| "se is not a number")?;
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        if expiry <= now {
            return Err("the token has expired".into());
        }
        let scope = decode(sr).to_lowercase();
        let target = resource.to_lowercase();
        let covers =
            target == scope || target.starts_with(&format!("{}/", scope.trim_end_matches('/')));
        if !covers {
            return Err(format!("the token is for {scope}, not {target}"));
        }
        let signature = base64::engine::general_purpose::STANDARD
            .decode(decode(sig))
            .map_err(|_| "sig is not base64")?;
        let mut mac =
            Hmac::<Sha256>::new_from_slice(self.key.as_bytes()).map_err(|_| "unusable key")?;
        // The string to sign holds sr as it travels: URL-encoded.
        mac.update(format!("{sr}\n{se}").as_bytes());
        mac.verify_slice(&signature)
            .map_err(|_| "the signature does not match".into())
    }

    fn put_installation(
        &self,
        id: &str,
        headers: &HeaderMap,
        body: &Bytes,
        version: &str,
    ) -> Answer {
        if !content_type_is(headers, "application/json") {
            return bad_request("Content-Type must be application/json");
        }
        let installation: Value = match serde_json::from_slice(body) {
            Ok(value) => value,
            Err(e) => return bad_request(format!("not JSON: {e}")),
        };
        if let Err(why) = validate_installation(id, &installation, version) {
            return bad_request(why);
        }
        self.state().write(id, Some(installation));
        answer(StatusCode::OK, "")
    }

    fn send(&self, headers: &HeaderMap, body: &Bytes, version: &str) -> Answer {
        if !content_type_is(headers, "application/json") {
            return bad_request("Content-Type must be application/json;charset=utf-8");
        }
        match header(headers, "servicebusnotification-format") {
            Some("template") => {}
            Some(other) => return bad_request(format!("format {other} is not modelled")),
            None => return bad_request("ServiceBusNotification-Format is required"),
        }
        let tag = header(headers, "servicebusnotification-tags").map(str::to_owned);
        if let Some(tag) = &tag
            && !valid_tag(tag)
        {
            return bad_request(format!("{tag} is not a single tag"));
        }
        let properties = match string_properties(body) {
            Ok(properties) => properties,
            Err(why) => return bad_request(why),
        };
        let mut state = self.state();
        let mut deliveries = Vec::new();
        for (id, installation) in &state.installations {
            let tagged = tag.as_ref().is_none_or(|tag| {
                installation["tags"]
                    .as_array()
                    .is_some_and(|tags| tags.iter().any(|t| t.as_str() == Some(tag)))
            });
            if !tagged {
                continue;
            }
            let platform = installation["platform"]
                .as_str()
                .unwrap_or_default()
                .to_lowercase();
            if platform == "fcmv1" && version != FCMV1_API_VERSION {
                return bad_request("fcmv1 needs api-version 2020-06");
            }
            let templates = installation["templates"]
                .as_object()
                .cloned()
                .unwrap_or_default();
            for template in templates.values() {
                let body = template["body"].as_str().unwrap_or_default();
                let payload = render(body, &properties, platform == "wns");
                if let Err(why) = check_body(&platform, &payload) {
                    return bad_request(format!("rendered payload for {id}: {why}"));
                }
                let headers: BTreeMap<String, String> = template["headers"]
                    .as_object()
                    .into_iter()
                    .flatten()
                    .map(|(name, value)| {
                        let value = value.as_str().unwrap_or_default();
                        (name.clone(), render(value, &properties, false))
                    })
                    .collect();
                if let Err(why) = check_headers(&platform, &headers) {
                    return bad_request(format!("rendered headers for {id}: {why}"));
                }
                deliveries.push(Delivery {
                    installation_id: id.clone(),
                    platform: platform.clone(),
                    payload,
                    headers,
                });
            }
        }
        state.sends.push(RecordedSend {
            tag,
            properties,
            deliveries,
        });
        answer(StatusCode::CREATED, "")
    }
}

fn header<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

fn content_type_is(headers: &HeaderMap, expected: &str) -> bool {
    header(headers, "content-type")
        .and_then(|v| v.split(';').next())
        .is_some_and(|v| v.trim().eq_ignore_ascii_case(expected))
}

fn query_param(query: &str, name: &str) -> Option<String> {
    query
        .split('&')
        .filter_map(|pair| pair.split_once('='))
        .find(|(key, _)| *key == name)
        .map(|(_, value)| decode(value))
}

/// A tag as the hub defines it: 1-120 of alphanumerics and `_ @ # . : -`.
fn valid_tag(tag: &str) -> bool {
    (1..=120).contains(&tag.len())
        && tag
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "_@#.:-".contains(c))
}

fn validate_installation(id: &str, installation: &Value, version: &str) -> Result<(), String> {
    if installation["installationId"].as_str() != Some(id) {
        return Err("installationId must equal the id in the URI".into());
    }
    let platform = installation["platform"]
        .as_str()
        .ok_or("platform is required")?
        .to_lowercase();
    if !PLATFORMS.contains(&platform.as_str()) {
        return Err(format!("platform {platform} is not apns, fcmv1 or wns"));
    }
    if platform == "fcmv1" && version != FCMV1_API_VERSION {
        return Err("fcmv1 needs api-version 2020-06".into());
    }
    match installation["pushChannel"].as_str() {
        Some(channel) if !channel.trim().is_empty() => {}
        _ => return Err("pushChannel is required".into()),
    }
    match &installation["tags"] {
        Value::Null => {}
        Value::Array(tags) => {
            if tags.iter().any(|t| !t.as_str().is_some_and(valid_tag)) {
                return Err("tags must be valid tag strings".into());
            }
        }
        _ => return Err("tags must be an array".into()),
    }
    let templates = match &installation["templates"] {
        Value::Null => return Ok(()),
        Value::Object(templates) => templates,
        _ => return Err("templates must be an object".into()),
    };
    for (name, template) in templates {
        let body = template["body"]
            .as_str()
            .ok_or(format!("template {name} needs a body"))?;
        check_body(&platform, body).map_err(|why| format!("template {name}: {why}"))?;
        if !matches!(template["headers"], Value::Null | Value::Object(_)) {
            return Err(format!("template {name}: headers must be an object"));
        }
        if platform == "wns" && template["headers"]["X-WNS-Type"].as_str().is_none() {
            return Err(format!("template {name}: a WNS template needs X-WNS-Type"));
        }
        if !matches!(template["tags"], Value::Null | Value::Array(_)) {
            return Err(format!("template {name}: tags must be an array"));
        }
    }
    Ok(())
}

/// Rendered headers within what the platform takes: Apple's "Sending notification requests
/// to APNs" limits `apns-collapse-id` to 64 bytes; Microsoft's "Push notification service
/// request and response headers" (WNS) limits `X-WNS-Tag` to 16 characters.
fn check_headers(platform: &str, headers: &BTreeMap<String, String>) -> Result<(), String> {
    for (name, value) in headers {
        if value.is_empty() {
            return Err(format!("header {name} rendered empty"));
        }
        let limit = match (platform, name.to_ascii_lowercase().as_str()) {
            ("apns", "apns-collapse-id") => 64,
            ("wns", "x-wns-tag") => 16,
            _ => continue,
        };
        if value.len() > limit {
            return Err(format!("{name} is {} bytes, over {limit}", value.len()));
        }
    }
    Ok(())
}

/// A body (template or rendered) in its platform's shape.
fn check_body(platform: &str, body: &str) -> Result<(), String> {
    match platform {
        "apns" => {
            let value: Value =
                serde_json::from_str(body).map_err(|e| format!("APNs body is not JSON: {e}"))?;
            if !value["aps"].is_object() {
                return Err("an APNs body needs an aps object".into());
            }
        }
        "fcmv1" => {
            let value: Value =
                serde_json::from_str(body).map_err(|e| format!("FCM v1 body is not JSON: {e}"))?;
            if !value["message"].is_object() {
                return Err("an FCM v1 body needs a message object".into());
            }
        }
        _ => check_toast(body)?,
    }
    Ok(())
}

/// A WNS toast: XML elements well nested, the root `<toast>`.
fn check_toast(body: &str) -> Result<(), String> {
    let mut rest = body.trim();
    if let Some(after) = rest.strip_prefix("<?xml") {
        rest = after
            .split_once("?>")
            .ok_or("unterminated XML declaration")?
            .1
            .trim();
    }
    if !rest.starts_with("<toast") {
        return Err("a WNS toast starts with <toast>".into());
    }
    let mut open: Vec<String> = Vec::new();
    let mut seen_root = false;
    while let Some(start) = rest.find('<') {
        let end = rest[start..].find('>').ok_or("an unterminated tag")? + start;
        let tag = &rest[start + 1..end];
        rest = &rest[end + 1..];
        if let Some(name) = tag.strip_prefix('/') {
            if open.pop().as_deref() != Some(name.trim()) {
                return Err(format!("</{name}> closes nothing open"));
            }
            continue;
        }
        if open.is_empty() && seen_root {
            return Err("more than one root element".into());
        }
        seen_root = true;
        let name = tag
            .split(|c: char| c.is_whitespace() || c == '/')
            .next()
            .unwrap_or_default();
        if name.is_empty() {
            return Err("an element without a name".into());
        }
        if !tag.ends_with('/') {
            open.push(name.to_owned());
        }
    }
    if open.is_empty() {
        Ok(())
    } else {
        Err(format!("unclosed elements: {open:?}"))
    }
}

/// The properties of a template send: a JSON object whose values are all strings.
fn string_properties(body: &Bytes) -> Result<BTreeMap<String, String>, String> {
    let object: Map<String, Value> =
        serde_json::from_slice(body).map_err(|e| format!("the body is not a JSON object: {e}"))?;
    object
        .into_iter()
        .map(|(name, value)| match value {
            Value::String(text) => Ok((name, text)),
            other => Err(format!("property {name} is {other}, not a string")),
        })
        .collect()
}

/// Substitutes `$(name)`; a missing property renders empty.
fn render(template: &str, properties: &BTreeMap<String, String>, xml: bool) -> String {
    let mut out = String::new();
    let mut rest = template;
    while let Some(start) = rest.find("$(") {
        let Some(len) = rest[start..].find(')') else {
            break;
        };
        out.push_str(&rest[..start]);
        let name = &rest[start + 2..start + len];
        let value = properties.get(name).map(String::as_str).unwrap_or_default();
        out.push_str(&if xml {
            xml_escape(value)
        } else {
            json_escape(value)
        });
        rest = &rest[start + len + 1..];
    }
    out.push_str(rest);
    out
}

fn json_escape(text: &str) -> String {
    let quoted = Value::String(text.to_owned()).to_string();
    quoted[1..quoted.len() - 1].to_owned()
}

fn xml_escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// Percent-decoding (`+` is left alone: SAS values are percent-encoded).
fn decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && let Some(hex) = bytes.get(i + 1..i + 3)
            && let Ok(hex) = std::str::from_utf8(hex)
            && let Ok(byte) = u8::from_str_radix(hex, 16)
        {
            out.push(byte);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}
