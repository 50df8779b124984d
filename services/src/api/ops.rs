//! The development login, `/health`, `/ready`, `/metrics` and `/openapi.json`.

use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use commands::LogCursor;
use domain::values::CustomerId;
use serde::{Deserialize, Serialize};
use serde_json::json;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi, ToSchema};
use uuid::Uuid;

use super::auth::Role;
use super::error::{ApiError, Problem};
use super::{ApiJson, AppState};
use crate::metrics::gauge;

/// What every process serves.
pub fn router() -> Router<AppState> {
    Router::new()
        .route("/health", get(health))
        .route("/ready", get(ready))
        .route("/metrics", get(metrics))
        .route("/openapi.json", get(openapi))
}

/// The development login, served by the web role.
pub fn identity_router() -> Router<AppState> {
    Router::new().route("/api/dev/token", post(dev_token))
}

pub const DEV_NOTICE: &str = "DEVELOPMENT LOGIN: anyone can sign in as anyone. \
    This server runs with development auth; never expose it to real users.";

#[derive(Debug, Deserialize, ToSchema)]
pub struct DevTokenRequest {
    /// A UUID, or any name (mapped to a stable UUID).
    #[schema(example = "alice")]
    pub customer_id: String,
    /// Defaults to `customer`.
    pub role: Option<Role>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct DevToken {
    pub token: String,
    pub customer_id: Uuid,
    pub role: Role,
    /// Always `true`: this token comes from the development login.
    pub development: bool,
    pub notice: &'static str,
}

/// Development login: a token for any customer id or name (development auth only).
#[utoipa::path(post, path = "/api/dev/token", tag = "identity", request_body = DevTokenRequest,
    responses((status = 200, body = DevToken), (status = 404, description = "Not running with development auth"),
        (status = 422, body = Problem)))]
pub async fn dev_token(
    State(state): State<AppState>,
    ApiJson(body): ApiJson<DevTokenRequest>,
) -> Result<Json<DevToken>, ApiError> {
    if !state.dev_login {
        return Err(ApiError::NotFound);
    }
    let customer =
        CustomerId::parse(&body.customer_id).map_err(|m| ApiError::field("customer_id", &m))?;
    let role = body.role.unwrap_or(Role::Customer);
    let token = state.keys.issue(customer.0, role, body.customer_id.trim());
    Ok(Json(DevToken {
        token,
        customer_id: customer.0,
        role,
        development: true,
        notice: DEV_NOTICE,
    }))
}

/// The process is up.
#[utoipa::path(get, path = "/health", tag = "operations", responses((status = 200)))]
pub async fn health() -> Json<serde_json::Value> {
    Json(json!({ "status": "ok" }))
}

/// Every engine this process uses answers.
#[utoipa::path(get, path = "/ready", tag = "operations",
    responses((status = 200), (status = 503, description = "An engine does not answer")))]
pub async fn ready(State(state): State<AppState>) -> Response {
    let system = &state.system;
    let store = system.store.ping().await.err().map(|e| e.to_string());
    let views = system.views.ping().await.err().map(|e| e.to_string());
    // A web-only process has no topic connection; its inert in-process topic always answers.
    let bus = system.bus.ping().await.err().map(|e| e.to_string());
    let ready = store.is_none() && views.is_none() && bus.is_none();
    let status = |problem: Option<String>| problem.unwrap_or_else(|| "ok".into());
    let body = json!({
        "status": if ready { "ready" } else { "not ready" },
        "checks": {
            "event_store": status(store),
            "view_store": status(views),
            "topic": status(bus),
        },
    });
    let code = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (code, Json(body)).into_response()
}

/// Prometheus metrics.
#[utoipa::path(get, path = "/metrics", tag = "operations",
    responses((status = 200, content_type = "text/plain; version=0.0.4")))]
pub async fn metrics(State(state): State<AppState>) -> Response {
    let system = &state.system;
    let mut out = String::new();
    // Only stores that number their log can count what the relay still has to publish;
    // on Cosmos DB these three gauges are absent.
    let relayed = system.store.checkpoint(infra::relay::CHECKPOINT).await;
    let head = system.store.lag(&LogCursor::start()).await;
    if let (Ok(relayed), Ok(Some(head))) = (relayed, head)
        && let Ok(Some(lag)) = system.store.lag(&relayed).await
    {
        gauge(
            &mut out,
            "orderflow_store_head_position",
            "Global position of the newest event.",
            head,
        );
        gauge(
            &mut out,
            "orderflow_relay_checkpoint_position",
            "Last position the topic holds safely.",
            head.saturating_sub(lag),
        );
        gauge(
            &mut out,
            "orderflow_relay_lag_events",
            "Events committed but not yet safely published.",
            lag,
        );
    }
    let dead = system
        .bus
        .dead_letters()
        .await
        .map(|d| d.len())
        .unwrap_or_default();
    gauge(
        &mut out,
        "orderflow_dead_letters",
        "Messages given up on after their retries.",
        dead as u64,
    );
    if let Some(batches) = system.store.group_commits() {
        gauge(
            &mut out,
            "orderflow_store_batches_committed_total",
            "Group-commit transactions.",
            batches,
        );
    }
    system.metrics.render(&mut out);
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], out).into_response()
}

#[derive(OpenApi)]
#[openapi(
    info(title = "orderflow", description = "Event-sourced order processing: the HTTP contract of the web UI and mobile apps."),
    paths(
        super::orders::place_order, super::orders::get_order, super::orders::list_orders,
        super::orders::cancel_order, super::orders::ship_order, super::orders::deliver_order,
        super::orders::order_events, super::catalog::catalog, super::catalog::restock,
        super::events::list_events, super::analytics::summary,
        super::replays::start_replay, super::replays::replay_status,
        super::live::stream, super::live::put_installation, super::live::delete_installation,
        dev_token, health, ready, metrics,
    ),
    modifiers(&BearerAuth),
)]
pub struct ApiDoc;

struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("JWT")
                    .build(),
            ),
        );
    }
}

/// The OpenAPI document, generated from the handlers and types above.
pub async fn openapi() -> Json<utoipa::openapi::OpenApi> {
    Json(ApiDoc::openapi())
}
