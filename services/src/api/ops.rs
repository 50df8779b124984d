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

use super::auth::{Caller, Role};
use super::error::{ApiError, Problem};
use super::{ApiJson, AppState};
use crate::config::AuthSettings;
use crate::metrics::gauge;

/// What every process serves.
pub fn router() -> Router<AppState> {
    Router::new()
        .route("/health", get(health))
        .route("/ready", get(ready))
        .route("/openapi.json", get(openapi))
}

/// `/metrics`: on the main listener, or on `--metrics-listen` alone.
pub fn metrics_router() -> Router<AppState> {
    Router::new().route("/metrics", get(metrics))
}

/// The development login and the sign-in settings, served by the web role.
pub fn identity_router() -> Router<AppState> {
    Router::new()
        .route("/api/dev/token", post(dev_token))
        .route("/api/auth/config", get(auth_config))
        .route("/api/me", get(me))
}

/// The caller, as this server reads their token.
#[derive(Debug, Serialize, ToSchema)]
pub struct Me {
    /// The id orders are placed under (from the provider's claim, or the dev login's name).
    pub customer_id: Uuid,
    /// The most powerful role held: what the UI opens on.
    pub role: Role,
    /// Every role held.
    pub roles: Vec<Role>,
    /// When the token expires.
    pub expires_at: chrono::DateTime<chrono::Utc>,
}

/// Who the bearer token says the caller is.
#[utoipa::path(get, path = "/api/me", tag = "identity",
    responses((status = 200, body = Me), (status = 401, body = Problem)),
    security(("bearer" = [])))]
pub async fn me(caller: Caller) -> Json<Me> {
    Json(Me {
        customer_id: caller.id,
        role: caller.role(),
        roles: caller.roles.iter().collect(),
        expires_at: chrono::DateTime::from_timestamp(caller.expires_at, 0).unwrap_or_default(),
    })
}

/// How clients sign in to this server: what `GET /api/auth/config` answers, and the OpenAPI
/// document that matches it (the development login listed only when it exists).
pub struct SignIn {
    pub config: AuthConfig,
    openapi: serde_json::Value,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct AuthConfig {
    /// `development` (the dev login signs anyone in), `oidc` (sign in at the provider) or
    /// `shared_secret` (tokens come from elsewhere).
    #[schema(example = "oidc")]
    pub mode: &'static str,
    /// The OpenID provider's issuer; its discovery document is under
    /// `{issuer}/.well-known/openid-configuration`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub issuer: Option<String>,
    /// The public client the web UI signs in with (authorization code + PKCE).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub client_id: Option<String>,
    /// The scopes to ask for.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub scope: Option<String>,
}

impl SignIn {
    pub fn of(auth: &AuthSettings) -> Self {
        let config = match auth {
            AuthSettings::Development => AuthConfig {
                mode: "development",
                issuer: None,
                client_id: None,
                scope: None,
            },
            AuthSettings::SharedSecret { .. } => AuthConfig {
                mode: "shared_secret",
                issuer: None,
                client_id: None,
                scope: None,
            },
            AuthSettings::Oidc(client) => AuthConfig {
                mode: "oidc",
                issuer: Some(client.verifier.issuer.clone()),
                client_id: client.client_id.clone(),
                scope: Some(client.scope.clone()),
            },
        };
        let openapi = document(auth);
        Self { config, openapi }
    }
}

/// How to sign in here: the development login, or which OpenID provider and client.
#[utoipa::path(get, path = "/api/auth/config", tag = "identity",
    responses((status = 200, body = AuthConfig)))]
pub async fn auth_config(State(state): State<AppState>) -> Json<AuthConfig> {
    Json(state.sign_in.config.clone())
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
        (status = 422, body = Problem), (status = 429, body = Problem, description = "Too many logins from this address")))]
pub async fn dev_token(
    State(state): State<AppState>,
    extensions: axum::http::Extensions,
    ApiJson(body): ApiJson<DevTokenRequest>,
) -> Result<Json<DevToken>, ApiError> {
    let Some(keys) = state.auth.development() else {
        return Err(ApiError::NotFound);
    };
    if let Some(peer) = crate::serve::peer(&extensions) {
        state.edge.dev_login(peer.ip())?;
    }
    let customer =
        CustomerId::parse(&body.customer_id).map_err(|m| ApiError::field("customer_id", &m))?;
    let role = body.role.unwrap_or(Role::Customer);
    let token = keys.issue(customer.0, role, body.customer_id.trim());
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
        dev_token, auth_config, me, health, ready, metrics,
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

/// The OpenAPI document, generated from the handlers and types above, as this server's
/// sign-in makes it: the development login only with development auth, and the provider's
/// `openIdConnect` scheme beside `bearer` when tokens come from one.
fn document(auth: &AuthSettings) -> serde_json::Value {
    let mut doc = serde_json::to_value(ApiDoc::openapi()).unwrap_or_default();
    if !matches!(auth, AuthSettings::Development)
        && let Some(paths) = doc.get_mut("paths").and_then(|p| p.as_object_mut())
    {
        paths.remove("/api/dev/token");
    }
    if let AuthSettings::Oidc(client) = auth
        && let Ok(discovery) = client.verifier.discovery_url()
    {
        doc["components"]["securitySchemes"]["openIdConnect"] =
            json!({"type": "openIdConnect", "openIdConnectUrl": discovery.as_str()});
        let operations = doc
            .get_mut("paths")
            .and_then(|p| p.as_object_mut())
            .into_iter()
            .flat_map(|paths| paths.values_mut())
            .filter_map(|item| item.as_object_mut())
            .flat_map(|item| item.values_mut());
        for operation in operations {
            if let Some(security) = operation.get_mut("security").and_then(|s| s.as_array_mut()) {
                // Alternatives: the same bearer token, described either way.
                security.push(json!({"openIdConnect": []}));
            }
        }
    }
    doc
}

pub async fn openapi(State(state): State<AppState>) -> Json<serde_json::Value> {
    Json(state.sign_in.openapi.clone())
}
