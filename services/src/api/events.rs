//! `/api/events`: the event log for analysts, filtered and paged, every event in the current
//! shape of its type.

use std::sync::Arc;

use axum::Json;
use axum::Router;
use axum::extract::State;
use axum::routing::get;
use chrono::{DateTime, Utc};
use domain::envelope::stream_id;
use domain::{EventMetadata, RecordedEvent, order};
use eventlog::{EventStore, LogCursor};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

use super::auth::{Caller, Role};
use super::error::{ApiError, Problem};
use super::{ApiQuery, AppState};

pub fn router() -> Router<AppState> {
    Router::new().route("/api/events", get(list_events))
}

const DEFAULT_LIMIT: usize = 100;
const MAX_LIMIT: usize = 500;
/// A request reads at most this many events of the log, matching or not, and answers a cursor
/// to go on from: a rare event type costs pages, never an unbounded request.
const MAX_SCAN: usize = 5000;

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct EventQuery {
    /// Only these event types, comma-separated (`OrderPlaced,OrderRejected`).
    #[serde(rename = "type")]
    pub types: Option<String>,
    /// Events that occurred at or after this moment (RFC 3339).
    pub since: Option<DateTime<Utc>>,
    /// Events that occurred before this moment (RFC 3339).
    pub until: Option<DateTime<Utc>>,
    /// Only this order's events (its whole stream, in one page).
    pub order_id: Option<Uuid>,
    /// `next_cursor` of the previous page.
    #[param(min_length = 1)]
    pub cursor: Option<String>,
    /// Events per page, 1 to 500 (default 100).
    #[param(minimum = 1, maximum = 500)]
    pub limit: Option<usize>,
}

/// An event of the log.
#[derive(Debug, Serialize, ToSchema)]
pub struct LogEvent {
    pub event_id: Uuid,
    #[schema(example = "order-0190c3a4-7d2e-7b1a-9f00-5a1b2c3d4e5f")]
    pub stream_id: String,
    pub stream_type: String,
    pub version: u64,
    /// Where the store numbers its log (SQLite, PostgreSQL); absent on Cosmos DB.
    pub global_position: Option<u64>,
    #[schema(example = "OrderPlaced")]
    pub event_type: String,
    pub schema_version: u32,
    pub occurred_at: DateTime<Utc>,
    #[schema(value_type = Object)]
    pub payload: domain::envelope::Payload,
    #[schema(value_type = Object)]
    pub metadata: EventMetadata,
}

impl From<RecordedEvent> for LogEvent {
    fn from(e: RecordedEvent) -> Self {
        Self {
            event_id: e.event_id,
            stream_id: e.stream_id,
            stream_type: e.stream_type,
            version: e.version,
            global_position: e.global_position,
            event_type: e.event_type,
            schema_version: e.schema_version,
            occurred_at: e.occurred_at,
            payload: e.payload,
            metadata: e.metadata,
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct EventPage {
    pub items: Vec<LogEvent>,
    /// Where the next page starts; absent at the end of the log (new events may come later:
    /// keep the last cursor to follow the log).
    pub next_cursor: Option<String>,
}

/// The event log, in the store's order, filtered. Analysts only.
#[utoipa::path(get, path = "/api/events", tag = "analysts", params(EventQuery),
    responses(
        (status = 200, body = EventPage),
        (status = 401, body = Problem),
        (status = 403, description = "Not an analyst", body = Problem),
        (status = 422, description = "A bad filter, limit or cursor", body = Problem)),
    security(("bearer" = [])))]
pub async fn list_events(
    State(store): State<Arc<dyn EventStore>>,
    caller: Caller,
    ApiQuery(query): ApiQuery<EventQuery>,
) -> Result<Json<EventPage>, ApiError> {
    caller.require(&[Role::Analyst])?;
    if query.cursor.as_deref() == Some("") {
        return Err(ApiError::field("cursor", "is not a cursor this log gave"));
    }
    let filter = Filter::from_query(&query)?;
    let limit = query.limit.unwrap_or(DEFAULT_LIMIT);
    if !(1..=MAX_LIMIT).contains(&limit) {
        return Err(ApiError::field("limit", "must be 1 to 500"));
    }
    if let Some(order_id) = query.order_id {
        let events = store
            .read_stream(&stream_id(order::STREAM_TYPE, order_id), 1)
            .await?;
        let items = filter.keep(&events)?;
        return Ok(Json(EventPage {
            items,
            next_cursor: None,
        }));
    }
    let mut cursor = LogCursor::new(query.cursor.unwrap_or_default());
    let (mut items, mut scanned) = (Vec::new(), 0);
    loop {
        let page = store
            .read_all(&cursor, (limit - items.len()).min(MAX_SCAN - scanned))
            .await
            .map_err(|e| match e {
                eventlog::StoreError::Corrupt(_) => {
                    ApiError::field("cursor", "is not a cursor this log gave")
                }
                other => other.into(),
            })?;
        if page.events.is_empty() {
            return Ok(Json(EventPage {
                items,
                next_cursor: None,
            }));
        }
        scanned += page.events.len();
        items.extend(filter.keep(&page.events)?);
        cursor = page.next;
        if items.len() >= limit || scanned >= MAX_SCAN {
            return Ok(Json(EventPage {
                items,
                next_cursor: Some(cursor.as_str().to_owned()),
            }));
        }
    }
}

struct Filter {
    types: Vec<String>,
    since: Option<DateTime<Utc>>,
    until: Option<DateTime<Utc>>,
}

impl Filter {
    fn from_query(query: &EventQuery) -> Result<Self, ApiError> {
        if let (Some(since), Some(until)) = (query.since, query.until)
            && since >= until
        {
            return Err(ApiError::field("until", "must be after since"));
        }
        let types = query
            .types
            .iter()
            .flat_map(|t| t.split(','))
            .map(str::trim)
            .filter(|t| !t.is_empty())
            .map(str::to_owned)
            .collect();
        Ok(Self {
            types,
            since: query.since,
            until: query.until,
        })
    }

    /// The events that pass, upcast to their type's current shape.
    fn keep(&self, events: &[RecordedEvent]) -> Result<Vec<LogEvent>, ApiError> {
        let kept: Vec<RecordedEvent> = events
            .iter()
            .filter(|e| crate::export::passes(e, self.since, self.until, &self.types))
            .cloned()
            .collect();
        let current = domain::upcast::upcast_all(&kept).map_err(ApiError::broken)?;
        Ok(current.into_iter().map(LogEvent::from).collect())
    }
}
