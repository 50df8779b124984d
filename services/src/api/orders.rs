//! `/api/orders`: place, read (with read-your-writes), list, cancel, ship, deliver, history.

use std::sync::Arc;
use std::time::Duration;

use axum::Json;
use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use chrono::{DateTime, Utc};
use commands::{Commands, PlaceOrder};
use domain::EventMetadata;
use domain::envelope::stream_id;
use domain::order::{self, MAX_LINES, OrderCommand, OrderStatus};
use domain::values::{CustomerId, FieldError, Quantity, ShippingAddress, Sku, line_of_text};
use eventlog::EventStore;
use projections::keys::{ALL_ORDERS_INDEX, customer_index};
use projections::read_models::{Cutoff, parse_cursor};
use projections::{OrderView, ReadModels};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha2::{Digest, Sha256};
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

use super::auth::{Caller, Role};
use super::edge::Edge;
use super::error::{ApiError, Problem};
use super::{ApiJson, ApiQuery, AppState};

/// What the orders' routes use: the commands, the read models, the log (an order's events),
/// and the edge's permits for reads that wait.
pub struct Ports {
    pub commands: Arc<Commands>,
    pub read_models: ReadModels,
    pub store: Arc<dyn EventStore>,
    pub edge: Arc<Edge>,
}

impl axum::extract::FromRef<AppState> for Arc<Ports> {
    fn from_ref(state: &AppState) -> Self {
        state.orders.clone()
    }
}

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/api/orders", post(place_order).get(list_orders))
        .route("/api/orders/{id}", get(get_order))
        .route("/api/orders/{id}/events", get(order_events))
        .route("/api/orders/{id}/cancel", post(cancel_order))
        .route("/api/orders/{id}/ship", post(ship_order))
        .route("/api/orders/{id}/deliver", post(deliver_order))
}

const MAX_IDEMPOTENCY_KEY: usize = 255;
const DEFAULT_WAIT_MS: u64 = 2000;
const MAX_WAIT_MS: u64 = 30_000;

/// The body of `POST /api/orders`. It documents the contract; the handler reads the JSON
/// leniently so that every bad field is reported at once, type errors included.
#[derive(ToSchema)]
#[allow(dead_code)]
pub struct PlaceOrderBody {
    /// One line per SKU.
    /// (At most `MAX_LINES`: the document says how many, from the constant.)
    #[schema(min_items = 1)]
    lines: Vec<LineBody>,
    shipping_address: AddressBody,
}

#[derive(ToSchema)]
#[allow(dead_code)]
pub struct LineBody {
    #[schema(example = "TEA-001", pattern = "^[A-Z][A-Z0-9-]{1,31}$")]
    sku: String,
    /// (At most `Quantity::MAX`, which the document carries.)
    #[schema(minimum = 1, example = 2)]
    quantity: u32,
}

/// Each text is one line, trimmed; its length and pattern are in the document (`openapi.rs`
/// writes them from the domain's limits).
#[derive(ToSchema)]
#[allow(dead_code)]
pub struct AddressBody {
    name: String,
    line1: String,
    /// Blank or absent: no second line.
    line2: Option<String>,
    city: String,
    postal_code: String,
    /// ISO 3166-1 alpha-2, in capitals.
    #[schema(example = "DE")]
    country: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct OrderAccepted {
    pub order_id: Uuid,
    /// The order stream's version: pass it as `min_version` to read your write.
    pub version: u64,
    #[schema(example = "placed")]
    pub status: &'static str,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct CommandAccepted {
    /// The order stream's version after the command.
    pub version: u64,
}

/// Place an order.
#[utoipa::path(post, path = "/api/orders", tag = "orders",
    request_body = PlaceOrderBody,
    params(("Idempotency-Key" = Option<String>, Header, pattern = "^[!-~]{1,255}$",
        description = "1 to 255 visible ASCII characters; a retry with the same key and body gets the same answer")),
    responses(
        (status = 202, description = "Accepted; the order processor decides next", body = OrderAccepted,
            headers(("Location" = String, description = "The order's URL"))),
        (status = 400, description = "Malformed JSON", body = Problem),
        (status = 401, body = Problem),
        (status = 409, description = "Idempotency key reused with another body", body = Problem),
        (status = 413, description = "Body over 64 KiB", body = Problem),
        (status = 415, description = "Not application/json", body = Problem),
        (status = 422, description = "Invalid fields (all of them listed), unknown SKU", body = Problem)),
    security(("bearer" = [])))]
pub async fn place_order(
    State(ports): State<Arc<Ports>>,
    caller: Caller,
    headers: HeaderMap,
    ApiJson(body): ApiJson<Value>,
) -> Result<Response, ApiError> {
    let key = idempotency_key(&headers)?;
    let (lines, shipping_address) = parse_order(&body).map_err(ApiError::Validation)?;
    let request_hash = request_hash(&lines, &shipping_address);
    let request = PlaceOrder {
        customer_id: CustomerId(caller.id),
        idempotency_key: key,
        request_hash,
        lines,
        shipping_address,
        metadata: metadata(&caller, &headers),
    };
    let placed = ports.commands.place_order(request).await?;
    let location = format!("/api/orders/{}", placed.order_id);
    let body = OrderAccepted {
        order_id: placed.order_id,
        version: placed.version,
        status: OrderStatus::Placed.as_str(),
    };
    Ok((
        StatusCode::ACCEPTED,
        [(header::LOCATION, location)],
        Json(body),
    )
        .into_response())
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct OrderQuery {
    /// Wait until the view has reached this version (read-your-writes).
    #[param(minimum = 0)]
    pub min_version: Option<i64>,
    /// How long to wait for `min_version`, in ms (default 2000, at most 30000).
    #[param(minimum = 0, maximum = 30000)]
    pub wait_ms: Option<u64>,
    /// The order as it was at this moment (RFC 3339): folded from its events. Owner or analyst.
    /// Not with `at_version`.
    #[param(format = DateTime)]
    pub as_of: Option<String>,
    /// The order as it was at this stream version. Owner or analyst. Not with `as_of`.
    #[param(minimum = 1)]
    pub at_version: Option<i64>,
}

/// Read an order.
#[utoipa::path(get, path = "/api/orders/{id}", tag = "orders",
    params(("id" = Uuid, Path), OrderQuery,
        ("If-None-Match" = Option<String>, Header, description = "An ETag from an earlier read")),
    responses(
        (status = 200, body = OrderView, headers(("ETag" = String, description = "\"<version>\""))),
        (status = 304, description = "Not modified"),
        (status = 401, body = Problem),
        (status = 403, description = "Time travel is for the owner and analysts", body = Problem),
        (status = 404, description = "No such order (at that point), or another customer's", body = Problem),
        (status = 422, description = "Bad as_of, or both as_of and at_version", body = Problem),
        (status = 503, description = "Too many reads waiting for a version, or an engine down", body = Problem)),
    security(("bearer" = [])))]
pub async fn get_order(
    State(ports): State<Arc<Ports>>,
    caller: Caller,
    Path(id): Path<String>,
    ApiQuery(query): ApiQuery<OrderQuery>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let order_id = parse_id(&id)?;
    let (wait, min_version) = waiting(&query)?;
    if let Some(cutoff) = cutoff(&query)? {
        return past_order(&ports, &caller, order_id, cutoff).await;
    }
    let view = match min_version {
        Some(min_version) => {
            let _waiting = ports.edge.wait_permit()?;
            ports
                .read_models
                .order_at_least(order_id, min_version, wait, |v| {
                    caller.may_see(v.customer_id)
                })
                .await?
        }
        None => ports.read_models.order(order_id).await?,
    };
    let view = view
        .filter(|v| caller.may_see(v.customer_id))
        .ok_or(ApiError::NotFound)?;
    with_etag(view, &headers)
}

/// How long a read may wait, and for which version (`wait_ms`, `min_version`).
fn waiting(query: &OrderQuery) -> Result<(Duration, Option<u64>), ApiError> {
    let wait_ms = query.wait_ms.unwrap_or(DEFAULT_WAIT_MS);
    if wait_ms > MAX_WAIT_MS {
        return Err(ApiError::field("wait_ms", "must be at most 30000"));
    }
    let min_version = match query.min_version.map(u64::try_from) {
        None => None,
        Some(Ok(version)) => Some(version),
        Some(Err(_)) => return Err(ApiError::field("min_version", "must not be negative")),
    };
    Ok((Duration::from_millis(wait_ms), min_version))
}

/// The order as it was at `cutoff`: the owner's and the analysts' to read, not the operators'.
async fn past_order(
    ports: &Ports,
    caller: &Caller,
    order_id: Uuid,
    cutoff: Cutoff,
) -> Result<Response, ApiError> {
    let view = ports
        .read_models
        .order_as_of(order_id, cutoff)
        .await?
        .filter(|v| caller.may_see(v.customer_id))
        .ok_or(ApiError::NotFound)?;
    if !caller.has(Role::Analyst) && caller.id != view.customer_id {
        return Err(ApiError::Forbidden);
    }
    Ok(Json(view).into_response())
}

/// The view with its version as the ETag, or 304 when `If-None-Match` names it.
fn with_etag(view: OrderView, headers: &HeaderMap) -> Result<Response, ApiError> {
    let etag = format!("\"{}\"", view.version);
    let etag_value = HeaderValue::from_str(&etag).map_err(ApiError::broken)?;
    let unchanged = headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| {
            // Weak comparison (RFC 9110 §13.1.2): `W/"3"` matches `"3"`.
            v.split(',')
                .map(|tag| tag.trim().trim_start_matches("W/"))
                .any(|tag| tag == etag || tag == "*")
        });
    if unchanged {
        return Ok((StatusCode::NOT_MODIFIED, [(header::ETAG, etag_value)]).into_response());
    }
    Ok(([(header::ETAG, etag_value)], Json(view)).into_response())
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ListQuery {
    /// Only orders in this status (the document lists `OrderStatus::ALL`).
    pub status: Option<String>,
    /// 1 to 100 (default 20).
    #[param(minimum = 1, maximum = 100)]
    pub limit: Option<usize>,
    /// `next_cursor` of the previous page.
    #[param(min_length = 1)]
    pub cursor: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct OrderList {
    pub items: Vec<OrderView>,
    /// Pass as `cursor` for the next page; absent on the last page.
    pub next_cursor: Option<String>,
}

/// List orders, newest first: a customer's own, or every order for staff.
#[utoipa::path(get, path = "/api/orders", tag = "orders", params(ListQuery),
    responses((status = 200, body = OrderList), (status = 422, body = Problem)),
    security(("bearer" = [])))]
pub async fn list_orders(
    State(ports): State<Arc<Ports>>,
    caller: Caller,
    ApiQuery(query): ApiQuery<ListQuery>,
) -> Result<Json<OrderList>, ApiError> {
    let limit = query.limit.unwrap_or(20);
    if !(1..=100).contains(&limit) {
        return Err(ApiError::field("limit", "must be between 1 and 100"));
    }
    let status = match query.status.as_deref() {
        None => None,
        Some(raw) => Some(OrderStatus::parse(raw).ok_or_else(|| {
            ApiError::field(
                "status",
                "must be placed, confirmed, rejected, cancelled, shipped or delivered",
            )
        })?),
    };
    let cursor =
        match query.cursor.as_deref() {
            None => None,
            Some(raw) => Some(parse_cursor(raw).ok_or_else(|| {
                ApiError::field("cursor", "is not a next_cursor this API returned")
            })?),
        };
    let index = if caller.is_staff() {
        ALL_ORDERS_INDEX.to_owned()
    } else {
        customer_index(caller.id)
    };
    let page = ports
        .read_models
        .orders(&index, status, cursor, limit)
        .await?;
    Ok(Json(OrderList {
        items: page.items,
        next_cursor: page.next_cursor,
    }))
}

#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CancelBody {
    /// Up to 500 characters, over several lines if need be; blank is no reason.
    pub reason: Option<String>,
}

/// Cancel an order (before shipment; reserved stock is released).
#[utoipa::path(post, path = "/api/orders/{id}/cancel", tag = "orders",
    params(("id" = Uuid, Path)), request_body(content = CancelBody, description = "Optional: no body is no reason"),
    responses((status = 202, body = CommandAccepted),
        (status = 403, description = "Analysts read, they do not cancel", body = Problem),
        (status = 404, body = Problem),
        (status = 409, description = "Already shipped", body = Problem)),
    security(("bearer" = [])))]
pub async fn cancel_order(
    State(ports): State<Arc<Ports>>,
    caller: Caller,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    caller.require(&[Role::Customer, Role::Operator])?;
    let order_id = parse_id(&id)?;
    // The body is optional; when there is one it is JSON like every other.
    let body: CancelBody = if body.iter().all(u8::is_ascii_whitespace) {
        CancelBody::default()
    } else if !super::body::is_json(&headers) {
        return Err(ApiError::UnsupportedMediaType);
    } else {
        super::body::parse(&body)?
    };
    if body
        .reason
        .as_ref()
        .is_some_and(|r| r.chars().count() > order::CANCEL_REASON_MAX)
    {
        return Err(ApiError::field("reason", "must be at most 500 characters"));
    }
    let reason = body
        .reason
        .map(|r| r.trim().to_owned())
        .filter(|r| !r.is_empty());
    let command = OrderCommand::Cancel { reason };
    run(&ports, &caller, &headers, order_id, command).await
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ShipBody {
    #[schema(example = "DHL")]
    pub carrier: String,
    /// The carrier's tracking number. `tracking`, its name in the first version of the
    /// contract, is accepted too (one of the two, not both).
    #[serde(alias = "tracking")]
    #[schema(example = "JD014600006281234567")]
    pub tracking_number: String,
}

/// Ship a confirmed order (operator).
#[utoipa::path(post, path = "/api/orders/{id}/ship", tag = "operations",
    params(("id" = Uuid, Path)), request_body = ShipBody,
    responses((status = 202, body = CommandAccepted), (status = 403, body = Problem),
        (status = 409, description = "Not confirmed", body = Problem), (status = 422, body = Problem)),
    security(("bearer" = [])))]
pub async fn ship_order(
    State(ports): State<Arc<Ports>>,
    caller: Caller,
    Path(id): Path<String>,
    headers: HeaderMap,
    ApiJson(body): ApiJson<ShipBody>,
) -> Result<Response, ApiError> {
    caller.require(&[Role::Operator])?;
    let order_id = parse_id(&id)?;
    let carrier = line_of_text(&body.carrier, order::SHIPMENT_TEXT_MAX);
    let tracking = line_of_text(&body.tracking_number, order::SHIPMENT_TEXT_MAX);
    let (carrier, tracking) = match (carrier, tracking) {
        (Ok(carrier), Ok(tracking)) => (carrier.to_owned(), tracking.to_owned()),
        (carrier, tracking) => {
            let errors = [("carrier", carrier), ("tracking_number", tracking)]
                .into_iter()
                .filter_map(|(field, checked)| Some(FieldError::new(field, checked.err()?)))
                .collect();
            return Err(ApiError::Validation(errors));
        }
    };
    let command = OrderCommand::Ship { carrier, tracking };
    run(&ports, &caller, &headers, order_id, command).await
}

/// Mark a shipped order delivered (operator).
#[utoipa::path(post, path = "/api/orders/{id}/deliver", tag = "operations",
    params(("id" = Uuid, Path)),
    responses((status = 202, body = CommandAccepted), (status = 403, body = Problem),
        (status = 409, description = "Not shipped", body = Problem)),
    security(("bearer" = [])))]
pub async fn deliver_order(
    State(ports): State<Arc<Ports>>,
    caller: Caller,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    caller.require(&[Role::Operator])?;
    let order_id = parse_id(&id)?;
    run(&ports, &caller, &headers, order_id, OrderCommand::Deliver).await
}

/// One event of an order's history.
#[derive(Debug, Serialize, ToSchema)]
pub struct EventOut {
    pub event_id: Uuid,
    pub version: u64,
    #[schema(example = "OrderPlaced")]
    pub event_type: String,
    pub schema_version: u32,
    pub occurred_at: DateTime<Utc>,
    #[schema(value_type = Object)]
    pub payload: domain::envelope::Payload,
    #[schema(value_type = Object)]
    pub metadata: EventMetadata,
}

/// An order's events, oldest first.
#[utoipa::path(get, path = "/api/orders/{id}/events", tag = "orders",
    params(("id" = Uuid, Path)),
    responses((status = 200, body = [EventOut]), (status = 404, body = Problem)),
    security(("bearer" = [])))]
pub async fn order_events(
    State(ports): State<Arc<Ports>>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<Vec<EventOut>>, ApiError> {
    let order_id = parse_id(&id)?;
    let stream = stream_id(order::STREAM_TYPE, order_id);
    let events = ports.store.read_stream(&stream, 1).await?;
    // Clients see every event in its type's current shape (schema_version says which).
    let events = domain::upcast::upcast_all(&events).map_err(ApiError::broken)?;
    let owner = events
        .first()
        .and_then(|e| {
            e.payload
                .to_value()
                .get("customer_id")?
                .as_str()?
                .parse()
                .ok()
        })
        .ok_or(ApiError::NotFound)?;
    if !caller.may_see(owner) {
        return Err(ApiError::NotFound);
    }
    Ok(Json(
        events
            .into_iter()
            .map(|e| EventOut {
                event_id: e.event_id,
                version: e.version,
                event_type: e.event_type,
                schema_version: e.schema_version,
                occurred_at: e.occurred_at,
                payload: e.payload,
                metadata: e.metadata,
            })
            .collect(),
    ))
}

/// Runs a command on an order the caller may act on; another customer's order is a 404.
async fn run(
    ports: &Ports,
    caller: &Caller,
    headers: &HeaderMap,
    order_id: Uuid,
    command: OrderCommand,
) -> Result<Response, ApiError> {
    let commands = &ports.commands;
    let (_, current) = commands
        .orders
        .load(&order_id.to_string())
        .await
        .map_err(commands::CommandFailure::from)?;
    let owner = current.customer_id.ok_or(ApiError::NotFound)?;
    if !caller.may_see(owner.0) {
        return Err(ApiError::NotFound);
    }
    let handled = commands
        .order(order_id, command, &metadata(caller, headers))
        .await?;
    let body = CommandAccepted {
        version: handled.version,
    };
    Ok((StatusCode::ACCEPTED, Json(body)).into_response())
}

fn parse_id(raw: &str) -> Result<Uuid, ApiError> {
    Uuid::parse_str(raw).map_err(|_| ApiError::NotFound)
}

fn metadata(caller: &Caller, headers: &HeaderMap) -> EventMetadata {
    EventMetadata {
        correlation_id: Uuid::now_v7(),
        actor: caller.actor(),
        traceparent: super::trace_context(headers),
        ..Default::default()
    }
}

fn idempotency_key(headers: &HeaderMap) -> Result<Option<String>, ApiError> {
    let Some(value) = headers.get("idempotency-key") else {
        return Ok(None);
    };
    match value.to_str() {
        Ok(key)
            if (1..=MAX_IDEMPOTENCY_KEY).contains(&key.len())
                && key.bytes().all(|b| b.is_ascii_graphic()) =>
        {
            Ok(Some(key.to_owned()))
        }
        _ => Err(ApiError::field(
            "Idempotency-Key",
            "must be 1-255 visible ASCII characters",
        )),
    }
}

/// An order request that passed every field check: its lines and where it goes.
type ValidOrder = (Vec<(Sku, Quantity)>, ShippingAddress);

/// Checks every field of a `POST /api/orders` body and reports every problem at once, wrong
/// JSON types included.
fn parse_order(body: &Value) -> Result<ValidOrder, Vec<FieldError>> {
    let Some(body) = body.as_object() else {
        return Err(vec![FieldError::new("body", "must be a JSON object")]);
    };
    let mut errors = Vec::new();
    super::body::unknown_fields(body, &["lines", "shipping_address"], "", &mut errors);
    let lines = match body.get("lines") {
        None | Some(Value::Null) => {
            errors.push(FieldError::new("lines", "is required"));
            Vec::new()
        }
        Some(Value::Array(items)) => parse_lines(items, &mut errors),
        Some(_) => {
            errors.push(FieldError::new("lines", "must be an array of lines"));
            Vec::new()
        }
    };
    let address = match body.get("shipping_address") {
        None | Some(Value::Null) => {
            errors.push(FieldError::new("shipping_address", "is required"));
            None
        }
        Some(Value::Object(fields)) => parse_address(fields, &mut errors),
        Some(_) => {
            errors.push(FieldError::new("shipping_address", "must be an object"));
            None
        }
    };
    match address {
        Some(address) if errors.is_empty() => Ok((lines, address)),
        _ => Err(errors),
    }
}

fn parse_lines(items: &[Value], errors: &mut Vec<FieldError>) -> Vec<(Sku, Quantity)> {
    if items.is_empty() {
        errors.push(FieldError::new("lines", "must have at least one line"));
    }
    if items.len() > MAX_LINES {
        errors.push(FieldError::new(
            "lines",
            format!("must have at most {MAX_LINES} lines"),
        ));
        return Vec::new();
    }
    let mut lines: Vec<(Sku, Quantity)> = Vec::with_capacity(items.len());
    for (i, item) in items.iter().enumerate() {
        match item.as_object() {
            Some(fields) => super::body::unknown_fields(
                fields,
                &["sku", "quantity"],
                &format!("lines[{i}]."),
                errors,
            ),
            None => {
                errors.push(FieldError::new(format!("lines[{i}]"), "must be an object"));
                continue;
            }
        }
        let sku = match item.get("sku") {
            None | Some(Value::Null) => Err("is required".to_owned()),
            Some(Value::String(raw)) => Sku::parse(raw),
            Some(_) => Err("must be a string".to_owned()),
        };
        let quantity = match item.get("quantity") {
            None | Some(Value::Null) => Err("is required".to_owned()),
            Some(q) => super::body::whole_number(q)
                .ok_or_else(|| "must be a whole number".to_owned())
                .and_then(Quantity::parse),
        };
        match (sku, quantity) {
            (Ok(sku), Ok(quantity)) => {
                if lines.iter().any(|(s, _)| *s == sku) {
                    errors.push(FieldError::new(
                        format!("lines[{i}].sku"),
                        "appears on an earlier line; put the whole quantity on one line",
                    ));
                }
                lines.push((sku, quantity));
            }
            (sku, quantity) => {
                if let Err(m) = sku {
                    errors.push(FieldError::new(format!("lines[{i}].sku"), m));
                }
                if let Err(m) = quantity {
                    errors.push(FieldError::new(format!("lines[{i}].quantity"), m));
                }
            }
        }
    }
    lines
}

fn parse_address(
    fields: &serde_json::Map<String, Value>,
    errors: &mut Vec<FieldError>,
) -> Option<ShippingAddress> {
    super::body::unknown_fields(fields, &ADDRESS_FIELDS, "shipping_address.", errors);
    let mut mistyped = Vec::new();
    let mut text = |key: &str| match fields.get(key) {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => Some(s.as_str()),
        Some(_) => {
            mistyped.push(format!("shipping_address.{key}"));
            None
        }
    };
    let parsed = ShippingAddress::parse(
        "shipping_address",
        text("name"),
        text("line1"),
        text("line2"),
        text("city"),
        text("postal_code"),
        text("country"),
    );
    let mut found = match parsed {
        Ok(address) if mistyped.is_empty() => return Some(address),
        Ok(_) => Vec::new(),
        // A mistyped field is reported as such, not also as missing.
        Err(found) => found
            .into_iter()
            .filter(|e| !mistyped.contains(&e.field))
            .collect(),
    };
    found.extend(
        mistyped
            .into_iter()
            .map(|field| FieldError::new(field, "must be a string")),
    );
    found.sort_by_key(|e| ADDRESS_ORDER.iter().position(|f| e.field.ends_with(f)));
    errors.extend(found);
    None
}

/// The fields of a shipping address, in the order of the form.
const ADDRESS_FIELDS: [&str; 6] = ["name", "line1", "line2", "city", "postal_code", "country"];

/// The order in which address errors are listed: the order of the form.
const ADDRESS_ORDER: [&str; 6] = [
    ".name",
    ".line1",
    ".line2",
    ".city",
    ".postal_code",
    ".country",
];

/// `as_of` or `at_version`, if the query asks for a point in the order's history.
fn cutoff(query: &OrderQuery) -> Result<Option<Cutoff>, ApiError> {
    match (&query.as_of, query.at_version) {
        (None, None) => Ok(None),
        (Some(_), Some(_)) => Err(ApiError::field(
            "as_of",
            "use either as_of or at_version, not both",
        )),
        (None, Some(version)) => match u64::try_from(version) {
            Ok(version) if version >= 1 => Ok(Some(Cutoff::Version(version))),
            _ => Err(ApiError::field("at_version", "versions start at 1")),
        },
        (Some(raw), None) => chrono::DateTime::parse_from_rfc3339(raw)
            .map(|t| Some(Cutoff::Time(t.with_timezone(&Utc))))
            .map_err(|_| {
                ApiError::field(
                    "as_of",
                    "must be an RFC 3339 time such as 2026-11-25T12:00:00Z",
                )
            }),
    }
}

/// A digest of what the request asks for (not of its bytes, so whitespace and key order do
/// not make a retry look like another request).
fn request_hash(lines: &[(Sku, Quantity)], address: &ShippingAddress) -> String {
    let canonical = serde_json::json!({ "lines": lines, "shipping_address": address });
    let digest = Sha256::digest(canonical.to_string().as_bytes());
    digest.iter().map(|b| format!("{b:02x}")).collect()
}
