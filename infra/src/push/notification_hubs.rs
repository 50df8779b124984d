//! The Azure Notification Hubs push sender: a small REST client (reqwest, hmac, sha2, base64),
//! because no maintained Rust crate for Notification Hubs exists.
//!
//! What it does:
//! - [`PushSender::register`] claims the installation id for its customer in orderflow's own
//!   records ([`Owners`], in the view store), refusing an id that is another customer's, then
//!   creates or overwrites the installation (`PUT`) with the device's platform (`apns`,
//!   `fcmv1`, `wns`), push channel, tags and one *template* for its platform (APNs JSON, FCM
//!   v1 JSON, WNS toast XML), so that one template send reaches every device of a customer
//!   whatever its platform.
//! - [`PushSender::delete`] checks the records (none: `false`; another customer's:
//!   [`PushError::NotOwner`]), always issues the `DELETE`, then marks the record deleted.
//! - Ownership is never learnt from a `GET`: installations are eventually consistent, and a
//!   read right after a write may answer 404 or the previous body (azure-notificationhubs-dotnet
//!   issues #95 and #345), so a device deleted right after it registered could stay, and an id
//!   registered a moment ago could be taken. The hub is read only for an id the records have
//!   never seen (a cache that lost its data), whose copy at the hub is old enough to be settled.
//! - [`PushSender::send`] posts a template notification to the tag expression
//!   `customer:{id}` with string properties `title`, `order_id`, `status`, `version`,
//!   `event_id`, `collapse_tag` and `reason` (when there is one). Each template collapses a
//!   second push of one event into the first on the device: APNs by the `apns-collapse-id`
//!   header, Android by the notification's `tag`, WNS by the `X-WNS-Tag` header, all from
//!   the event id.
//! - Every request carries a fresh SAS token (`sr`, `sig`, `se`, `skn`; valid for
//!   [`NotificationHubsSettings::token_ttl`]) and the data-plane version [`API_VERSION`] as
//!   `api-version` and `x-ms-version`. Throttling (429, and 403 with `Retry-After`, which is
//!   how the hub says its quota is exceeded), 5xx and transport errors are retried with
//!   exponential backoff, honouring `Retry-After`, for at most [`RetryPolicy::attempts`]
//!   attempts; any other 4xx fails at once. Failures map, in one function (`failure`), to
//!   [`PushError::Refused`] for a 4xx that says the request itself is wrong, and otherwise to
//!   [`PushError::Unavailable`], with the status and a clipped body.
//!
//! Sources followed:
//! - Microsoft's SDKs: Azure/azure-notificationhubs-dotnet (`Messaging/ManagementStrings.cs`:
//!   `api-version` 2020-06 on every data-plane call, FCM v1 included; `ExceptionUtility.cs`: a
//!   403 with `Retry-After` is throttling, one without it is forbidden; 429 is throttling) and
//!   Azure/azure-sdk-for-js `sdk/notificationhubs/notification-hubs/src/api/clientContext.ts`
//!   (`api-version` and `x-ms-version` 2020-06). `2023-10-01` is a management-plane (resource
//!   provider) version, not a data-plane one (azure-docs `firebase-migration-rest.md`).
//! - learn.microsoft.com, REST API reference for Notification Hubs: "Shared Access Signature
//!   authentication with Service Bus" and "Generate SAS token" (token format, string to sign
//!   `<url-encoded resource URI>\n<expiry>`, HMAC-SHA256 keyed with the key's UTF-8 bytes);
//!   "Create or overwrite an installation", "Read an installation", "Delete an installation"
//!   (204 even when missing); "Send a template notification" (`ServiceBusNotification-Format:
//!   template`, `ServiceBusNotification-Tags`, a JSON body of string properties; 201).
//!
//! Not covered: native (non-template) sends, scheduled sends, registrations (the older API),
//! installation PATCH, per-message telemetry, PNS feedback, Azure AD authentication, and
//! `Retry-After` given as an HTTP date (only delay-seconds is read, as the .NET SDK does). A
//! send retried after a 5xx may reach a device twice; the device collapses the two, and apps
//! can also drop a duplicate by `event_id`.

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use projections::notifier::{Installation, Notification, PushError, PushSender};
use projections::view_store::ViewStore;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use uuid::Uuid;

use super::owners::Owners;
use crate::sas::encode;
pub use crate::sas::sas_token;

/// The data-plane version sent with every request, as Microsoft's .NET and JavaScript SDKs
/// send it for every operation and platform, `fcmv1` included.
pub const API_VERSION: &str = "2020-06";

/// How much of an error body goes into an error message.
const BODY_CLIP: usize = 300;

/// The APNs template: the alert shows the title; the order and status travel as custom keys.
pub const APNS_TEMPLATE: &str = r#"{"aps":{"alert":"$(title)"},"order_id":"$(order_id)","status":"$(status)","event_id":"$(event_id)"}"#;
/// The FCM v1 template: a notification with the title, the order and status as data. The
/// Android notification's `tag` is the event id, so a second push of one event replaces the
/// first in the drawer. Not `collapse_key`: FCM keeps at most four collapse keys per device
/// while it is offline and drops the others without saying which, so one key per event would
/// lose notifications; messages without one are kept (up to 100).
pub const FCMV1_TEMPLATE: &str = r#"{"message":{"notification":{"title":"$(title)"},"android":{"notification":{"tag":"$(event_id)"}},"data":{"order_id":"$(order_id)","status":"$(status)","event_id":"$(event_id)"}}}"#;
/// The WNS toast template.
pub const WNS_TEMPLATE: &str = r#"<toast launch="order=$(order_id)"><visual><binding template="ToastText02"><text id="1">$(title)</text><text id="2">$(status)</text></binding></visual></toast>"#;

/// APNs collapses notifications with one `apns-collapse-id` (at most 64 bytes): the event id.
const APNS_COLLAPSE_HEADER: &str = "apns-collapse-id";
/// WNS replaces a toast with the same `X-WNS-Tag` (at most 16 characters): the event id's
/// first 16 hex digits.
const WNS_TAG_HEADER: &str = "X-WNS-Tag";

/// The name under which an installation carries its template.
const TEMPLATE_NAME: &str = "order-status";

pub use crate::sas::SasKey;

/// How often and how patiently a throttled or failing request is tried again.
#[derive(Debug, Clone)]
pub struct RetryPolicy {
    /// Attempts in all, the first included.
    pub attempts: u32,
    /// The first backoff; it doubles per attempt.
    pub base_delay: Duration,
    /// No wait (backoff or `Retry-After`) is longer than this.
    pub max_delay: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            attempts: 4,
            base_delay: Duration::from_millis(250),
            max_delay: Duration::from_secs(30),
        }
    }
}

#[derive(Debug, Clone)]
pub struct NotificationHubsSettings {
    /// The Service Bus namespace (`{namespace}.servicebus.windows.net`).
    pub namespace: String,
    pub hub: String,
    /// The shared access policy's name (`skn`), e.g. `DefaultFullSharedAccessSignature`.
    pub key_name: String,
    pub key: SasKey,
    /// Replaces `https://{namespace}.servicebus.windows.net` (tests point it at a fake).
    pub base_url: Option<String>,
    /// How long each SAS token is valid.
    pub token_ttl: Duration,
    pub retry: RetryPolicy,
}

impl NotificationHubsSettings {
    pub fn new(
        namespace: impl Into<String>,
        hub: impl Into<String>,
        key_name: impl Into<String>,
        key: SasKey,
    ) -> Self {
        Self {
            namespace: namespace.into(),
            hub: hub.into(),
            key_name: key_name.into(),
            key,
            base_url: None,
            token_ttl: Duration::from_secs(300),
            retry: RetryPolicy::default(),
        }
    }
}

pub struct NotificationHubsPush {
    client: reqwest::Client,
    owners: Owners,
    /// `{base}/{hub}`, no trailing slash.
    hub_url: String,
    key_name: String,
    key: SasKey,
    token_ttl: Duration,
    retry: RetryPolicy,
}

impl fmt::Debug for NotificationHubsPush {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NotificationHubsPush")
            .field("hub_url", &self.hub_url)
            .field("key_name", &self.key_name)
            .field("key", &self.key)
            .finish()
    }
}

/// What one HTTP exchange came back with.
struct Answer {
    status: StatusCode,
    body: String,
}

impl NotificationHubsPush {
    /// `views`: where the ownership records are kept ([`Owners`]), shared by every process.
    pub fn new(
        settings: NotificationHubsSettings,
        views: Arc<dyn ViewStore>,
    ) -> Result<Self, PushError> {
        let base = settings
            .base_url
            .unwrap_or_else(|| format!("https://{}.servicebus.windows.net", settings.namespace));
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(30))
            .build()
            .map_err(|e| PushError::Unavailable(format!("notification hubs client: {e}")))?;
        Ok(Self {
            client,
            owners: Owners::new(views),
            hub_url: format!("{}/{}", base.trim_end_matches('/'), settings.hub),
            key_name: settings.key_name,
            key: settings.key,
            token_ttl: settings.token_ttl,
            retry: settings.retry,
        })
    }

    fn installation_url(&self, id: &str) -> String {
        format!("{}/installations/{}", self.hub_url, encode(id))
    }

    /// The `Authorization` value for a request to `resource` (its URL without the query).
    fn token(&self, resource: &str) -> String {
        let expiry = SystemTime::now()
            .checked_add(self.token_ttl)
            .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
            .map_or(0, |d| d.as_secs());
        sas_token(resource, &self.key_name, self.key.expose(), expiry)
    }

    /// One request, retried on 429, 5xx and transport errors; any answer that is not retried
    /// (2xx, 404 or another 4xx) is returned for the caller to judge.
    async fn call(
        &self,
        method: Method,
        url: &str,
        headers: &[(&str, &str)],
        body: Option<String>,
    ) -> Result<Answer, PushError> {
        let mut attempt = 1;
        loop {
            let mut request = self
                .client
                .request(method.clone(), url)
                .query(&[("api-version", API_VERSION)])
                .header("Authorization", self.token(url))
                .header("x-ms-version", API_VERSION);
            for (name, value) in headers {
                request = request.header(*name, *value);
            }
            if let Some(body) = &body {
                request = request.body(body.clone());
            }
            let (retry_after, last) = match request.send().await {
                Ok(response) => {
                    let status = response.status();
                    let retry_after = response
                        .headers()
                        .get("Retry-After")
                        .and_then(|v| v.to_str().ok())
                        .and_then(|v| v.trim().parse::<u64>().ok())
                        .map(Duration::from_secs);
                    let body = response.text().await.unwrap_or_default();
                    let answer = Answer { status, body };
                    if !retryable(status, retry_after.is_some()) {
                        return Ok(answer);
                    }
                    (retry_after, failure(&method, url, Cause::Answer(&answer)))
                }
                Err(error) => (None, failure(&method, url, Cause::Transport(error))),
            };
            if attempt >= self.retry.attempts {
                return Err(last);
            }
            let backoff = self
                .retry
                .base_delay
                .saturating_mul(1 << (attempt - 1).min(16));
            let wait = retry_after.unwrap_or(backoff).min(self.retry.max_delay);
            tracing::debug!(%method, path = path_of(url), attempt, ?wait, "notification hubs: retrying");
            tokio::time::sleep(wait).await;
            attempt += 1;
        }
    }

    /// The customer the hub's copy of installation `id` names, `None` if it has none by that
    /// id. Asked only for an id orderflow has no record of (a cache that lost its data), so
    /// the hub's copy is old enough to have settled.
    /// A registration round trip for `orderflow doctor`: puts an installation no customer owns
    /// (a fresh customer id as its only tag, an FCM v1 channel that reaches no device) with
    /// the data-plane version, then deletes it; `Err` says what the hub answered.
    pub async fn round_trip(&self) -> Result<(), PushError> {
        let probe = Installation {
            installation_id: format!("orderflow-doctor-{}", Uuid::new_v4()),
            customer_id: Uuid::new_v4(),
            platform: "fcmv1".into(),
            push_channel: "orderflow-doctor-probe".into(),
            tags: Vec::new(),
        };
        let url = self.installation_url(&probe.installation_id);
        let body = installation_body(&probe)?.to_string();
        let headers = [("Content-Type", "application/json")];
        let answer = self.call(Method::PUT, &url, &headers, Some(body)).await?;
        if !answer.status.is_success() {
            return Err(failure(&Method::PUT, &url, Cause::Answer(&answer)));
        }
        let answer = self.call(Method::DELETE, &url, &[], None).await?;
        if !answer.status.is_success() {
            return Err(failure(&Method::DELETE, &url, Cause::Answer(&answer)));
        }
        Ok(())
    }

    async fn hub_owner(&self, id: &str) -> Result<Option<Uuid>, PushError> {
        let url = self.installation_url(id);
        let answer = self.call(Method::GET, &url, &[], None).await?;
        match answer.status {
            StatusCode::NOT_FOUND => Ok(None),
            s if s.is_success() => serde_json::from_str::<Value>(&answer.body)
                .map(|installation| owner(&installation))
                .map_err(|e| failure(&Method::GET, &url, Cause::Unreadable(e))),
            _ => Err(failure(&Method::GET, &url, Cause::Answer(&answer))),
        }
    }
}

/// The customer an installation read from the hub belongs to, by its `customer:{id}` tag.
fn owner(installation: &Value) -> Option<Uuid> {
    installation["tags"]
        .as_array()?
        .iter()
        .filter_map(Value::as_str)
        .find_map(|tag| tag.strip_prefix("customer:"))
        .and_then(|id| Uuid::parse_str(id).ok())
}

/// Throttling and service errors pass; a 403 is throttling only with a `Retry-After` (without
/// one it is the key's rights, and asking again will not change them).
fn retryable(status: StatusCode, retry_after: bool) -> bool {
    status == StatusCode::TOO_MANY_REQUESTS
        || (status == StatusCode::FORBIDDEN && retry_after)
        || status.is_server_error()
}

/// Why a request failed.
enum Cause<'a> {
    /// The hub answered with a status that is not success.
    Answer(&'a Answer),
    /// No answer: connection, TLS or timeout.
    Transport(reqwest::Error),
    /// A success whose body cannot be read.
    Unreadable(serde_json::Error),
}

/// Every failure of this adapter, in one place: "refused" or "unavailable" (NotOwner is
/// decided before any write, from a successful read). A 401 names the credentials, so an
/// operator sees a wrong key at once; the body is clipped and the token is never part of it.
fn failure(method: &Method, url: &str, cause: Cause<'_>) -> PushError {
    let path = path_of(url);
    let detail = match cause {
        Cause::Answer(answer) if refused(answer.status) => {
            let body: String = answer.body.chars().take(BODY_CLIP).collect();
            return PushError::Refused(format!(
                "notification hubs {method} {path}: {} request refused: {body}",
                answer.status.as_u16()
            ));
        }
        Cause::Answer(answer) => {
            let what = match answer.status {
                StatusCode::UNAUTHORIZED => "the SAS token was refused (wrong key or key name?)",
                StatusCode::FORBIDDEN => "forbidden, or throttled (quota exceeded)",
                StatusCode::TOO_MANY_REQUESTS => "throttled",
                s if s.is_server_error() => "service error",
                _ => "request refused",
            };
            let body: String = answer.body.chars().take(BODY_CLIP).collect();
            format!("{} {what}: {body}", answer.status.as_u16())
        }
        // Without the URL: it is the path above, and the query is only the api-version.
        Cause::Transport(error) => format!("no answer: {}", error.without_url()),
        Cause::Unreadable(error) => format!("unreadable answer: {error}"),
    };
    PushError::Unavailable(format!("notification hubs {method} {path}: {detail}"))
}

/// A 4xx that says this request is wrong and would be again (a bad body, a payload too
/// large), not that the hub cannot take it now: 401 and 403 are the credentials or the quota,
/// 404 a hub that is not there (configuration, for an operator to mend), 408 and 429 pass.
fn refused(status: StatusCode) -> bool {
    status.is_client_error()
        && ![
            StatusCode::UNAUTHORIZED,
            StatusCode::FORBIDDEN,
            StatusCode::NOT_FOUND,
            StatusCode::REQUEST_TIMEOUT,
            StatusCode::TOO_MANY_REQUESTS,
        ]
        .contains(&status)
}

/// The URL's path, for messages (the host is configuration, the query is the api-version).
fn path_of(url: &str) -> &str {
    let rest = url.split_once("://").map_or(url, |(_, rest)| rest);
    rest.find('/').map_or("/", |i| &rest[i..])
}

/// The installation body: platform, channel, tags, and the one template of its platform.
fn installation_body(installation: &Installation) -> Result<Value, PushError> {
    let template = match installation.platform.as_str() {
        "apns" => json!({
            "body": APNS_TEMPLATE,
            "headers": { APNS_COLLAPSE_HEADER: "$(event_id)" },
            "tags": [TEMPLATE_NAME],
        }),
        "fcmv1" => json!({ "body": FCMV1_TEMPLATE, "tags": [TEMPLATE_NAME] }),
        "wns" => json!({
            "body": WNS_TEMPLATE,
            "headers": { "X-WNS-Type": "wns/toast", WNS_TAG_HEADER: "$(collapse_tag)" },
            "tags": [TEMPLATE_NAME],
        }),
        other => {
            return Err(PushError::Refused(format!(
                "platform {other} is not apns, fcmv1 or wns"
            )));
        }
    };
    Ok(json!({
        "installationId": installation.installation_id,
        "platform": installation.platform,
        "pushChannel": installation.push_channel,
        "tags": installation.tags,
        "templates": { TEMPLATE_NAME: template },
    }))
}

/// The template properties of a notification: all strings, as the send API requires.
fn properties(notification: &Notification) -> Value {
    let order = notification.order_id.simple().to_string();
    let mut properties = json!({
        "title": format!("Order {} {}", &order[..8], notification.status),
        "order_id": notification.order_id.to_string(),
        "status": notification.status,
        "version": notification.version.to_string(),
        "event_id": notification.event_id.to_string(),
        "collapse_tag": &notification.event_id.simple().to_string()[..16],
    });
    if let Some(reason) = &notification.reason {
        properties["reason"] = Value::String(reason.clone());
    }
    properties
}

#[async_trait]
impl PushSender for NotificationHubsPush {
    #[tracing::instrument(skip(self, notification), fields(order_id = %notification.order_id, status = %notification.status))]
    async fn send(&self, notification: &Notification) -> Result<(), PushError> {
        let url = format!("{}/messages/", self.hub_url);
        let tag = notification.tag();
        let headers = [
            ("Content-Type", "application/json;charset=utf-8"),
            ("ServiceBusNotification-Format", "template"),
            ("ServiceBusNotification-Tags", tag.as_str()),
        ];
        let body = properties(notification).to_string();
        let answer = self.call(Method::POST, &url, &headers, Some(body)).await?;
        if answer.status.is_success() {
            Ok(())
        } else {
            Err(failure(&Method::POST, &url, Cause::Answer(&answer)))
        }
    }

    #[tracing::instrument(skip(self, installation), fields(installation_id = %installation.installation_id))]
    async fn register(&self, installation: Installation) -> Result<(), PushError> {
        let id = installation.installation_id.clone();
        self.owners
            .claim(&installation, || self.hub_owner(&id))
            .await?;
        let url = self.installation_url(&id);
        let body = installation_body(&installation)?.to_string();
        let headers = [("Content-Type", "application/json")];
        let answer = self.call(Method::PUT, &url, &headers, Some(body)).await?;
        if answer.status.is_success() {
            Ok(())
        } else {
            Err(failure(&Method::PUT, &url, Cause::Answer(&answer)))
        }
    }

    #[tracing::instrument(skip(self))]
    async fn delete(&self, customer_id: Uuid, installation_id: &str) -> Result<bool, PushError> {
        let checked = self
            .owners
            .check_delete(customer_id, installation_id, || {
                self.hub_owner(installation_id)
            })
            .await?;
        let Some(version) = checked else {
            return Ok(false);
        };
        // Issued whatever a read would say: the hub answers 204 for an id it has not (yet)
        // got, and a read right after the registration may not see it.
        let url = self.installation_url(installation_id);
        let answer = self.call(Method::DELETE, &url, &[], None).await?;
        if !answer.status.is_success() {
            return Err(failure(&Method::DELETE, &url, Cause::Answer(&answer)));
        }
        self.owners.forget(installation_id, version).await?;
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_key_never_prints() {
        let settings = NotificationHubsSettings::new("ns", "hub", "policy", SasKey::new("s3cr3t"));
        let views = Arc::new(projections::MemoryViewStore::new());
        let push = NotificationHubsPush::new(settings.clone(), views).unwrap();
        assert!(!format!("{settings:?}").contains("s3cr3t"));
        assert!(!format!("{push:?}").contains("s3cr3t"));
    }

    #[test]
    fn a_token_has_the_documented_fields_in_order() {
        let token = sas_token(
            "https://NS.servicebus.windows.net/hub",
            "policy",
            "key",
            1000,
        );
        assert!(
            token.starts_with(
                "SharedAccessSignature sr=https%3A%2F%2Fns.servicebus.windows.net%2Fhub&sig="
            ),
            "{token}"
        );
        assert!(token.ends_with("&se=1000&skn=policy"), "{token}");
    }

    #[test]
    fn a_path_excludes_host_and_query() {
        assert_eq!(
            path_of("http://127.0.0.1:1/hub/messages/"),
            "/hub/messages/"
        );
    }
}
