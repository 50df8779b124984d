//! Live order updates over SSE, and push installations.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, put};
use axum::{Json, Router};
use domain::values::FieldError;
use futures_util::Stream;
use projections::{Installation, LiveFeed, Notification, PushSender};
use serde::Deserialize;
use tokio::sync::broadcast::error::RecvError;
use tokio::sync::watch;
use utoipa::ToSchema;

use super::auth::{Caller, LEEWAY_SECONDS};
use super::edge::Edge;
use super::error::{ApiError, Problem};
use super::{ApiJson, AppState};

/// What the live routes use: the browser's feed, the push service's installations, the
/// edge's cap on open streams, and the shutdown that ends a stream.
pub struct Ports {
    pub live: Arc<LiveFeed>,
    pub push: Arc<dyn PushSender>,
    pub edge: Arc<Edge>,
    pub shutdown: watch::Receiver<bool>,
}

impl axum::extract::FromRef<AppState> for Arc<Ports> {
    fn from_ref(state: &AppState) -> Self {
        state.live.clone()
    }
}

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/api/notifications/stream", get(stream))
        .route(
            "/api/installations/{installation_id}",
            put(put_installation).delete(delete_installation),
        )
}

/// The caller's order updates as Server-Sent Events (`event: order`, data: a Notification).
/// Staff receive every order's updates. Browsers, whose `EventSource` cannot send headers, may
/// pass the token as `?access_token=`. An `event: resync` means updates were missed: re-read.
#[utoipa::path(get, path = "/api/notifications/stream", tag = "live",
    params(("access_token" = Option<String>, Query, description = "The bearer token, for EventSource")),
    responses((status = 200, description = "text/event-stream of `order` events; it ends when the token expires", body = Notification,
        content_type = "text/event-stream"), (status = 401, body = Problem),
        (status = 429, body = Problem, description = "Too many streams open for this customer"),
        (status = 503, body = Problem, description = "Too many streams open in all")),
    security(("bearer" = [])))]
pub async fn stream(
    State(ports): State<Arc<Ports>>,
    caller: Caller,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, ApiError> {
    let permit = ports.edge.open_stream(caller.id)?;
    let updates = ports.live.subscribe();
    let shutdown = ports.shutdown.clone();
    // The stream ends when its token does (once the server refuses it: the leeway for clocks,
    // and the second `exp` counts in, included): the client reconnects with a fresh one.
    let expires = token_deadline(caller.expires_at.saturating_add(LEEWAY_SECONDS as i64 + 1));
    let events = futures_util::stream::unfold(
        (
            updates,
            shutdown,
            caller,
            Box::pin(tokio::time::sleep_until(expires)),
            permit,
        ),
        |(mut updates, mut shutdown, caller, mut expiry, permit)| async move {
            loop {
                let received = tokio::select! {
                    _ = infra::stopped(&mut shutdown) => return None,
                    () = &mut expiry => return None,
                    received = updates.recv() => received,
                };
                let event = match received {
                    Ok(n) if caller.may_see(n.customer_id) => Event::default()
                        .event("order")
                        .id(n.event_id.to_string())
                        .json_data(&n)
                        .unwrap_or_else(|_| Event::default().event("resync").data("0")),
                    Ok(_) => continue,
                    Err(RecvError::Lagged(missed)) => {
                        Event::default().event("resync").data(missed.to_string())
                    }
                    Err(RecvError::Closed) => return None,
                };
                return Some((Ok(event), (updates, shutdown, caller, expiry, permit)));
            }
        },
    );
    Ok(Sse::new(events).keep_alive(KeepAlive::new().interval(Duration::from_secs(15))))
}

/// The moment a token that expires at `expires_at` (Unix seconds) runs out, on tokio's clock.
fn token_deadline(expires_at: i64) -> tokio::time::Instant {
    let left = expires_at.saturating_sub(chrono::Utc::now().timestamp());
    tokio::time::Instant::now() + Duration::from_secs(u64::try_from(left).unwrap_or(0))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct InstallationBody {
    /// One of [`PLATFORMS`].
    #[schema(example = "fcmv1")]
    pub platform: String,
    /// The device token (APNs, FCM) or channel URI (WNS).
    pub push_channel: String,
    /// Extra tags; `customer:{id}` is added by the server, other customers' tags are refused.
    #[serde(default)]
    #[schema(max_items = 60)]
    pub tags: Vec<String>,
}

/// The push services an installation can use (the document's enum, and the check).
pub(crate) const PLATFORMS: [&str; 3] = ["apns", "fcmv1", "wns"];

/// What a tag may be (see [`is_hub_tag`]), for the document.
pub(crate) const HUB_TAG_PATTERN: &str = "^[A-Za-z0-9_@#.:-]{1,120}$";

/// Longest device token or channel URI.
pub const PUSH_CHANNEL_MAX: usize = 2048;

/// Register or replace this device's push installation.
#[utoipa::path(put, path = "/api/installations/{installation_id}", tag = "live",
    params(("installation_id" = String, Path, pattern = "^[A-Za-z0-9_-][A-Za-z0-9._-]{0,127}$")), request_body = InstallationBody,
    responses((status = 200, body = Installation), (status = 403, body = Problem),
        (status = 422, body = Problem)),
    security(("bearer" = [])))]
pub async fn put_installation(
    State(ports): State<Arc<Ports>>,
    caller: Caller,
    Path(installation_id): Path<String>,
    ApiJson(body): ApiJson<InstallationBody>,
) -> Result<Json<Installation>, ApiError> {
    let installation = validate_installation(&installation_id, body, caller.id)?;
    ports.push.register(installation.clone()).await?;
    Ok(Json(installation))
}

/// Remove this device's push installation.
#[utoipa::path(delete, path = "/api/installations/{installation_id}", tag = "live",
    params(("installation_id" = String, Path, pattern = "^[A-Za-z0-9_-][A-Za-z0-9._-]{0,127}$")),
    responses((status = 204), (status = 404, body = Problem), (status = 403, body = Problem)),
    security(("bearer" = [])))]
pub async fn delete_installation(
    State(ports): State<Arc<Ports>>,
    caller: Caller,
    Path(installation_id): Path<String>,
) -> Result<Response, ApiError> {
    if ports.push.delete(caller.id, &installation_id).await? {
        Ok(StatusCode::NO_CONTENT.into_response())
    } else {
        Err(ApiError::NotFound)
    }
}

/// Tags an installation may carry (the server adds the customer's own to them).
const MAX_TAGS: usize = 60;

/// What Notification Hubs accepts as a tag: up to 120 characters, alphanumeric and `_ @ # . : -`
/// ("Routing and tag expressions", learn.microsoft.com/azure/notification-hubs).
fn is_hub_tag(tag: &str) -> bool {
    (1..=120).contains(&tag.len())
        && tag
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "_@#.:-".contains(c))
}

fn validate_installation(
    id: &str,
    body: InstallationBody,
    customer_id: uuid::Uuid,
) -> Result<Installation, ApiError> {
    let own_tag = format!("customer:{customer_id}");
    let mut errors = Vec::new();
    // `.` and `..` would be path segments in the Notification Hubs URL the id ends up in.
    let id_ok = (1..=128).contains(&id.len())
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
        && !id.starts_with('.');
    if !id_ok {
        errors.push(FieldError::new(
            "installation_id",
            "must be 1-128 characters of A-Z, a-z, 0-9, '-', '_' and '.', not starting with '.'",
        ));
    }
    if !PLATFORMS.contains(&body.platform.as_str()) {
        errors.push(FieldError::new("platform", "must be apns, fcmv1 or wns"));
    }
    let channel = domain::values::line_of_text(&body.push_channel, PUSH_CHANNEL_MAX)
        .unwrap_or_else(|message| {
            errors.push(FieldError::new("push_channel", message));
            ""
        });
    if body.tags.len() > MAX_TAGS {
        errors.push(FieldError::new("tags", "at most 60 tags"));
    }
    for (i, tag) in body.tags.iter().enumerate() {
        if !is_hub_tag(tag) {
            errors.push(FieldError::new(
                format!("tags[{i}]"),
                "must be 1-120 characters of A-Z, a-z, 0-9 and _ @ # . : - (Notification Hubs' tag rule)",
            ));
        }
    }
    if !errors.is_empty() {
        return Err(ApiError::Validation(errors));
    }
    if body
        .tags
        .iter()
        .any(|t| t.starts_with("customer:") && *t != own_tag)
    {
        return Err(ApiError::NotYours(
            "a tag may name only your own customer id",
        ));
    }
    let mut tags = vec![own_tag.clone()];
    tags.extend(body.tags.into_iter().filter(|t| *t != own_tag));
    Ok(Installation {
        installation_id: id.to_owned(),
        customer_id,
        platform: body.platform,
        push_channel: channel.to_owned(),
        tags,
    })
}
