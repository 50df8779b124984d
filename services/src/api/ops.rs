//! The development login, `/health`, `/ready`, `/metrics` and `/openapi.json`.

use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use domain::values::CustomerId;
use eventlog::LogCursor;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use uuid::Uuid;

use super::auth::{Caller, Role};
use super::error::{ApiError, Problem};
use super::{ApiJson, AppState};
use crate::config::AuthSettings;
use crate::metrics::Scrape;

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
        let openapi = super::openapi::document(auth);
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
#[serde(deny_unknown_fields)]
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
    responses((status = 200, body = DevToken),
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

/// What `/health` answers.
#[derive(Debug, Serialize, ToSchema)]
pub struct Health {
    #[schema(example = "ok")]
    pub status: &'static str,
}

/// The process is up.
#[utoipa::path(get, path = "/health", tag = "operations", responses((status = 200, body = Health)))]
pub async fn health() -> Json<Health> {
    Json(Health { status: "ok" })
}

/// What `/ready` answers: each engine's check, `ok` or what went wrong, and the consumers of
/// this process that hold their deliveries because an engine they need is down.
#[derive(Debug, Serialize, ToSchema)]
pub struct Readiness {
    /// `ready` or `not ready`.
    #[schema(example = "ready")]
    pub status: &'static str,
    pub checks: ReadinessChecks,
    /// Empty when every consumer is running.
    pub paused: Vec<PausedConsumer>,
}

/// A consumer waiting out an engine outage: it retries with backoff and spends no delivery
/// attempts meanwhile.
#[derive(Debug, Serialize, ToSchema)]
pub struct PausedConsumer {
    #[schema(example = "order-processor")]
    pub subscription: &'static str,
    /// `event_store`, `view_store`, `topic`, `push` or `payments`.
    #[schema(example = "event_store")]
    pub engine: &'static str,
    pub since: chrono::DateTime<chrono::Utc>,
    /// The last failure, as the engine reported it.
    pub reason: String,
    pub failed_probes: u32,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ReadinessChecks {
    #[schema(example = "ok")]
    pub event_store: String,
    #[schema(example = "ok")]
    pub view_store: String,
    #[schema(example = "ok")]
    pub topic: String,
}

/// Every engine this process uses answers.
#[utoipa::path(get, path = "/ready", tag = "operations",
    responses((status = 200, body = Readiness),
        (status = 503, description = "An engine does not answer", body = Readiness)))]
pub async fn ready(State(state): State<AppState>) -> Response {
    let system = &state.process;
    let store = system.store.ping().await.err().map(|e| e.to_string());
    let views = system.views.ping().await.err().map(|e| e.to_string());
    // A web-only process has no topic connection; its inert in-process topic always answers.
    let bus = system.bus.ping().await.err().map(|e| e.to_string());
    let paused: Vec<PausedConsumer> = system
        .paused()
        .into_iter()
        .map(|(subscription, down)| PausedConsumer {
            subscription,
            engine: down.engine.as_str(),
            since: down.since,
            reason: down.reason,
            failed_probes: down.failed_probes,
        })
        .collect();
    let ready = store.is_none() && views.is_none() && bus.is_none() && paused.is_empty();
    let status = |problem: Option<String>| problem.unwrap_or_else(|| "ok".into());
    let body = Readiness {
        status: if ready { "ready" } else { "not ready" },
        checks: ReadinessChecks {
            event_store: status(store),
            view_store: status(views),
            topic: status(bus),
        },
        paused,
    };
    let code = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    let mut response = (code, Json(body)).into_response();
    response
        .extensions_mut()
        .insert(super::edge::DocumentedBody);
    response
}

/// Prometheus metrics.
#[utoipa::path(get, path = "/metrics", tag = "operations",
    responses((status = 200, content_type = "application/openmetrics-text; version=1.0.0; charset=utf-8")))]
pub async fn metrics(State(state): State<AppState>) -> Response {
    let system = &state.process;
    let mut scrape = Scrape::default();
    // Only stores that number their log can count what the relay still has to publish;
    // on Cosmos DB these three gauges are absent.
    let relayed = system.store.checkpoint(infra::relay::CHECKPOINT).await;
    let head = system.store.lag(&LogCursor::start()).await;
    if let (Ok(relayed), Ok(Some(head))) = (relayed, head)
        && let Ok(Some(lag)) = system.store.lag(&relayed).await
    {
        scrape.gauge(
            "orderflow_store_head_position",
            "Global position of the newest event.",
            head,
        );
        scrape.gauge(
            "orderflow_relay_checkpoint_position",
            "Last position the topic holds safely.",
            head.saturating_sub(lag),
        );
        scrape.gauge(
            "orderflow_relay_lag_events",
            "Events committed but not yet safely published.",
            lag,
        );
    }
    if let Some(batches) = system.store.group_commits() {
        scrape.total(
            "orderflow_store_batches_committed",
            "Group-commit transactions.",
            batches,
        );
    }
    // The topic's queues, where it can count them without reading messages; else (Service
    // Bus) the dead letters as listed.
    match system.bus.depths().await {
        Ok(Some(depths)) if !depths.is_empty() => {
            let of = |pick: fn(&infra::bus::QueueDepth) -> u64| {
                depths
                    .iter()
                    .map(|d| (d.subscription.clone(), pick(d)))
                    .collect::<Vec<_>>()
            };
            scrape.per_subscription(
                "orderflow_queue_ready_messages",
                "Messages waiting in the subscription's queue.",
                &of(|d| d.ready),
            );
            scrape.per_subscription(
                "orderflow_dead_letters",
                "Messages given up on after their retries, per subscription.",
                &of(|d| d.dead),
            );
        }
        Ok(Some(_)) => {}
        Ok(None) | Err(_) => {
            if let Ok(dead) = system.bus.dead_letters().await {
                let counts: Vec<(String, u64)> = crate::system::SUBSCRIPTIONS
                    .iter()
                    .map(|s| {
                        let n = dead.iter().filter(|d| d.subscription == *s).count();
                        ((*s).to_owned(), n as u64)
                    })
                    .collect();
                scrape.per_subscription(
                    "orderflow_dead_letters",
                    "Messages given up on after their retries, per subscription.",
                    &counts,
                );
            }
        }
    }
    let (taken, redelivered): (Vec<_>, Vec<_>) = system
        .deliveries()
        .into_iter()
        .map(|(subscription, deliveries)| {
            let load =
                |c: &std::sync::atomic::AtomicU64| c.load(std::sync::atomic::Ordering::Relaxed);
            (
                (subscription.to_owned(), load(&deliveries.taken)),
                (subscription.to_owned(), load(&deliveries.redelivered)),
            )
        })
        .unzip();
    scrape.totals_per_subscription(
        "orderflow_consumer_deliveries",
        "Deliveries this process's consumers took.",
        &taken,
    );
    scrape.totals_per_subscription(
        "orderflow_consumer_redeliveries",
        "Deliveries that were not the message's first (after a failure, a crash or a lost lock).",
        &redelivered,
    );
    scrape.commands(&[
        ("order", &system.commands.orders.outcomes),
        ("inventory", &system.commands.inventory.outcomes),
    ]);
    (
        [(header::CONTENT_TYPE, crate::metrics::CONTENT_TYPE)],
        system.metrics.render(scrape),
    )
        .into_response()
}

pub async fn openapi(State(state): State<AppState>) -> Json<serde_json::Value> {
    Json(state.sign_in.openapi.clone())
}
