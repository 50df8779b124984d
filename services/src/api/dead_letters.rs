//! `/api/dead-letters`: the messages a subscription gave up on, for operators to read, send
//! back to their subscription once the cause is mended, or discard with a reason. One port
//! ([`EventBus`](infra::bus::EventBus)) on every topic: in-process, RabbitMQ, Service Bus.
//!
//! A re-driven dead letter is the same event delivered again to its own subscription, with a
//! fresh retry budget; consumers are idempotent by event, so a re-drive of something already
//! handled does no harm. A discard is logged with the operator and the reason.

use axum::Json;
use axum::Router;
use axum::extract::State;
use axum::routing::{get, post};
use chrono::{DateTime, Utc};
use domain::envelope::stream_id;
use domain::order;
use infra::bus::{DeadLetter, DeadLetterFilter};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

use super::auth::{Caller, Role};
use super::error::{ApiError, Problem};
use super::events::LogEvent;
use super::{ApiJson, ApiQuery, AppState};
use crate::system::SUBSCRIPTIONS;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/api/dead-letters", get(list_dead_letters))
        .route("/api/dead-letters/redrive", post(redrive))
        .route("/api/dead-letters/discard", post(discard))
}

/// A list answers at most this many dead letters (the counts cover all of them).
pub const MAX_LIMIT: usize = 1000;
const DEFAULT_LIMIT: usize = 100;
/// One request names at most this many events: a body that names more stays well inside the
/// body limit, so the answer is a 422 saying so, not a 413.
pub const MAX_EVENT_IDS: usize = 100;
/// A discard's reason, in characters.
pub const REASON_MAX: usize = 500;
pub const EVENT_TYPE_MAX: usize = 100;

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct DeadLetterQuery {
    /// Only this subscription's: `order-processor`, `projector` or `notifier`.
    pub subscription: Option<String>,
    /// Only dead letters of this event type (`OrderPlaced`).
    #[param(min_length = 1, max_length = 100)]
    pub event_type: Option<String>,
    /// Only this order's.
    pub order_id: Option<Uuid>,
    /// Only this event's.
    pub event_id: Option<Uuid>,
    /// 1 to 1000 (default 100), oldest first per subscription.
    #[param(minimum = 1, maximum = 1000)]
    pub limit: Option<usize>,
}

/// A message a subscription gave up on.
#[derive(Debug, Serialize, ToSchema)]
pub struct DeadLetterView {
    #[schema(example = "order-processor")]
    pub subscription: String,
    /// Deliveries it had before it was parked.
    pub attempts: u32,
    /// The handler's last failure, or the broker's reason where the broker parked it.
    #[schema(example = "payment declined: gateway answered 500")]
    pub reason: String,
    /// When it was parked; absent where the topic keeps no such time (Service Bus).
    pub dead_at: Option<DateTime<Utc>>,
    /// The order it concerns, when it is an order's event.
    pub order_id: Option<Uuid>,
    pub event: LogEvent,
}

impl From<DeadLetter> for DeadLetterView {
    fn from(letter: DeadLetter) -> Self {
        let order_id = domain::envelope::stream_key(order::STREAM_TYPE, &letter.event.stream_id)
            .and_then(|id| Uuid::parse_str(id).ok());
        Self {
            subscription: letter.subscription,
            attempts: letter.attempts,
            reason: letter.reason,
            dead_at: letter.dead_at,
            order_id,
            event: letter.event.into(),
        }
    }
}

/// How many dead letters one subscription holds (of those the filter selects).
#[derive(Debug, Serialize, ToSchema)]
pub struct SubscriptionCount {
    #[schema(example = "notifier")]
    pub subscription: &'static str,
    pub dead_letters: usize,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct DeadLetterList {
    /// Every subscription, with how many it holds.
    pub subscriptions: Vec<SubscriptionCount>,
    /// All that match, up to `limit`.
    pub total: usize,
    pub items: Vec<DeadLetterView>,
}

/// The dead letters of every subscription (operators).
#[utoipa::path(get, path = "/api/dead-letters", tag = "operations", params(DeadLetterQuery),
    responses(
        (status = 200, body = DeadLetterList),
        (status = 403, description = "Not an operator", body = Problem)),
    security(("bearer" = [])))]
pub async fn list_dead_letters(
    State(state): State<AppState>,
    caller: Caller,
    ApiQuery(query): ApiQuery<DeadLetterQuery>,
) -> Result<Json<DeadLetterList>, ApiError> {
    caller.require(&[Role::Operator])?;
    let limit = query.limit.unwrap_or(DEFAULT_LIMIT);
    if !(1..=MAX_LIMIT).contains(&limit) {
        return Err(ApiError::field("limit", "must be between 1 and 1000"));
    }
    let filter = Selection {
        subscription: query.subscription,
        event_ids: query.event_id.into_iter().collect(),
        event_type: query.event_type,
        order_id: query.order_id,
    }
    .filter(false)?;
    let dead = topic(&state)
        .await?
        .dead_letters()
        .await
        .map_err(ApiError::unavailable)?;
    let chosen: Vec<DeadLetter> = dead.into_iter().filter(|d| filter.matches(d)).collect();
    let subscriptions = SUBSCRIPTIONS
        .iter()
        .map(|name| SubscriptionCount {
            subscription: name,
            dead_letters: chosen.iter().filter(|d| d.subscription == *name).count(),
        })
        .collect();
    Ok(Json(DeadLetterList {
        subscriptions,
        total: chosen.len(),
        items: chosen.into_iter().take(limit).map(Into::into).collect(),
    }))
}

/// The filters of a list, a re-drive or a discard: every field given must match.
#[derive(Debug, Default)]
struct Selection {
    subscription: Option<String>,
    event_ids: Vec<Uuid>,
    event_type: Option<String>,
    order_id: Option<Uuid>,
}

/// Which dead letters to re-drive. `all: true` takes every dead letter the other fields match
/// (every one of every subscription when none is given); `all: false` takes the ones the fields
/// name, and none when no field is given.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RedriveBody {
    pub all: bool,
    /// `order-processor`, `projector` or `notifier`.
    #[schema(example = "order-processor")]
    pub subscription: Option<String>,
    /// Any of these events (at most 100).
    #[serde(default)]
    pub event_ids: Vec<Uuid>,
    #[schema(example = "OrderPlaced")]
    pub event_type: Option<String>,
    /// This order's dead letters.
    pub order_id: Option<Uuid>,
}

/// Which dead letters to discard (as for a re-drive), and why.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DiscardBody {
    pub all: bool,
    /// Why they are discarded: one line of up to 500 characters, logged with the operator.
    #[schema(example = "refunded by hand")]
    pub reason: String,
    #[schema(example = "order-processor")]
    pub subscription: Option<String>,
    #[serde(default)]
    pub event_ids: Vec<Uuid>,
    #[schema(example = "OrderPlaced")]
    pub event_type: Option<String>,
    pub order_id: Option<Uuid>,
}

impl Selection {
    /// The port's filter, or a 422 naming what is wrong. A body (`from_body`) is held to the
    /// body's text rules.
    fn filter(self, from_body: bool) -> Result<DeadLetterFilter, ApiError> {
        let mut errors = Vec::new();
        let mut bad = |field: &str, message: &str| {
            errors.push(domain::values::FieldError::new(field, message));
        };
        if let Some(subscription) = &self.subscription
            && !SUBSCRIPTIONS.contains(&subscription.as_str())
        {
            bad(
                "subscription",
                "must be order-processor, projector or notifier",
            );
        }
        if self.event_ids.len() > MAX_EVENT_IDS {
            bad("event_ids", "must name at most 100 events");
        }
        if let Some(event_type) = &self.event_type {
            let blank = if from_body {
                event_type.trim().is_empty()
            } else {
                event_type.is_empty()
            };
            if blank || event_type.chars().count() > EVENT_TYPE_MAX {
                bad("event_type", "must be 1 to 100 characters");
            }
        }
        if !errors.is_empty() {
            return Err(ApiError::Validation(errors));
        }
        Ok(DeadLetterFilter {
            subscription: self.subscription,
            event_ids: self.event_ids,
            event_type: self.event_type,
            stream_id: self.order_id.map(|id| stream_id(order::STREAM_TYPE, id)),
        })
    }
}

/// The filter a body selects: `None` when it selects nothing (`all: false` and no field).
fn chosen(all: bool, selection: Selection) -> Result<Option<DeadLetterFilter>, ApiError> {
    let filter = selection.filter(true)?;
    Ok((all || !filter.everything()).then_some(filter))
}

/// What a re-drive or a discard acted on.
#[derive(Debug, Serialize, ToSchema)]
pub struct DeadLetterOutcome {
    /// How many dead letters it took (0 when nothing matched).
    pub count: usize,
    pub items: Vec<DeadLetterView>,
}

/// Sends the selected dead letters back to their own subscription's queue (operators): each is
/// delivered again as the same event with a fresh retry budget.
#[utoipa::path(post, path = "/api/dead-letters/redrive", tag = "operations",
    request_body = RedriveBody,
    responses(
        (status = 200, body = DeadLetterOutcome),
        (status = 403, description = "Not an operator", body = Problem)),
    security(("bearer" = [])))]
pub async fn redrive(
    State(state): State<AppState>,
    caller: Caller,
    ApiJson(body): ApiJson<RedriveBody>,
) -> Result<Json<DeadLetterOutcome>, ApiError> {
    caller.require(&[Role::Operator])?;
    let selection = Selection {
        subscription: body.subscription,
        event_ids: body.event_ids,
        event_type: body.event_type,
        order_id: body.order_id,
    };
    let Some(filter) = chosen(body.all, selection)? else {
        return Ok(Json(outcome(Vec::new())));
    };
    let redriven = topic(&state)
        .await?
        .redrive(&filter)
        .await
        .map_err(ApiError::unavailable)?;
    tracing::info!(actor = %caller.actor(), count = redriven.len(), ?filter, "dead letters re-driven");
    Ok(Json(outcome(redriven)))
}

/// Removes the selected dead letters for good, with a reason (operators): each is logged with
/// the reason and the operator.
#[utoipa::path(post, path = "/api/dead-letters/discard", tag = "operations",
    request_body = DiscardBody,
    responses(
        (status = 200, body = DeadLetterOutcome),
        (status = 403, description = "Not an operator", body = Problem)),
    security(("bearer" = [])))]
pub async fn discard(
    State(state): State<AppState>,
    caller: Caller,
    ApiJson(body): ApiJson<DiscardBody>,
) -> Result<Json<DeadLetterOutcome>, ApiError> {
    caller.require(&[Role::Operator])?;
    let reason = body.reason.trim().to_owned();
    if reason.is_empty() {
        return Err(ApiError::field(
            "reason",
            "say why they are discarded: it is logged",
        ));
    }
    if reason.chars().count() > REASON_MAX || reason.contains(['\n', '\r']) {
        return Err(ApiError::field(
            "reason",
            "must be one line of at most 500 characters",
        ));
    }
    let selection = Selection {
        subscription: body.subscription,
        event_ids: body.event_ids,
        event_type: body.event_type,
        order_id: body.order_id,
    };
    let Some(filter) = chosen(body.all, selection)? else {
        return Ok(Json(outcome(Vec::new())));
    };
    let logged = format!("{reason} (by {})", caller.actor());
    let discarded = topic(&state)
        .await?
        .discard(&filter, &logged)
        .await
        .map_err(ApiError::unavailable)?;
    tracing::warn!(actor = %caller.actor(), count = discarded.len(), %reason, ?filter, "dead letters discarded");
    Ok(Json(outcome(discarded)))
}

fn outcome(letters: Vec<DeadLetter>) -> DeadLetterOutcome {
    DeadLetterOutcome {
        count: letters.len(),
        items: letters.into_iter().map(Into::into).collect(),
    }
}

async fn topic(state: &AppState) -> Result<std::sync::Arc<dyn infra::bus::EventBus>, ApiError> {
    state
        .process
        .operators_topic()
        .await
        .map_err(|e| ApiError::unavailable(format!("{e:#}")))
}
