//! The HTTP API (`/api`, `/health`, `/ready`, `/metrics`, `/openapi.json`) and the web UI.
//!
//! Each area has its own `router()`, merged here; handlers get an [`AppState`] holding the
//! running [`System`](crate::system::System) and the token checks.
//!
//! - [`auth`]: bearer tokens and the `Caller` extractor.
//! - [`error`]: `ApiError`, answered as problem+json.
//! - [`orders`]: place, read, list, cancel, ship, deliver, an order's events.
//! - [`catalog`]: the catalog and restocking.
//! - [`events`]: the event log for analysts, filtered and paged.
//! - [`analytics`]: the analytics summary for analysts.
//! - [`replays`]: start a replay of the read models, follow its progress.
//! - [`live`]: the SSE stream of order updates and push installations.
//! - [`ops`]: the development login, health, readiness, metrics, OpenAPI.

pub mod analytics;
pub mod auth;
pub mod catalog;
pub mod error;
pub mod events;
pub mod live;
pub mod ops;
pub mod orders;
pub mod replays;

use std::sync::Arc;

use axum::Router;
use axum::extract::rejection::QueryRejection;
use axum::extract::{
    DefaultBodyLimit, FromRequest, FromRequestParts, Json, MatchedPath, Query, Request, State,
};
use axum::http::request::Parts;
use axum::middleware::{self, Next};
use axum::response::Response;
use serde::de::DeserializeOwned;
use std::time::Instant;
use tokio::sync::watch;
use tower_http::trace::TraceLayer;

use crate::system::System;
use auth::Authenticator;
use error::ApiError;

/// Request bodies above this are refused with 413 (a 100-line order is ~10 KiB).
pub const BODY_LIMIT: usize = 64 * 1024;

#[derive(Clone)]
pub struct AppState {
    pub system: Arc<System>,
    /// Checks bearer tokens (and signs them, for the development login).
    pub auth: Arc<Authenticator>,
    /// How the web UI and apps sign in here (`GET /api/auth/config`).
    pub sign_in: Arc<ops::SignIn>,
    /// Turns true when the process stops; long-lived responses (SSE) end on it.
    pub shutdown: watch::Receiver<bool>,
}

/// Every process serves the operations endpoints; the web role adds the API and the UI.
pub fn router(state: AppState, web: bool) -> Router {
    let mut router = Router::new().merge(ops::router());
    if web {
        router = router
            .merge(ops::identity_router())
            .merge(orders::router())
            .merge(catalog::router())
            .merge(events::router())
            .merge(analytics::router())
            .merge(replays::router())
            .merge(live::router())
            .merge(crate::web::router(state.sign_in.config.issuer.as_deref()));
    }
    router
        .route_layer(middleware::from_fn_with_state(state.clone(), measure))
        .layer(DefaultBodyLimit::max(BODY_LIMIT))
        // Spans name the path only: the query may carry a token (`access_token`).
        .layer(TraceLayer::new_for_http().make_span_with(|request: &Request| {
            tracing::info_span!("http", method = %request.method(), path = %request.uri().path())
        }))
        .with_state(state)
}

/// Counts every routed request by method, route and status, and times it by route.
async fn measure(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let started = Instant::now();
    let method = request.method().clone();
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_owned(), |p| p.as_str().to_owned());
    let response = next.run(request).await;
    let metrics = &state.system.metrics;
    metrics.incr(
        "orderflow_http_requests_total",
        format!(
            "method=\"{method}\",route=\"{route}\",status=\"{}\"",
            response.status().as_u16()
        ),
    );
    metrics.observe(
        "orderflow_http_request_duration_seconds",
        format!("method=\"{method}\",route=\"{route}\""),
        started.elapsed(),
    );
    response
}

/// `Json` whose rejections are problem+json (422 with the field, 400, 413, 415).
pub struct ApiJson<T>(pub T);

impl<S, T> FromRequest<S> for ApiJson<T>
where
    S: Send + Sync,
    T: DeserializeOwned,
{
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &S) -> Result<Self, ApiError> {
        let Json(value) = Json::<T>::from_request(request, state).await?;
        Ok(Self(value))
    }
}

/// `Query` whose rejections are a 422 naming the parameter.
pub struct ApiQuery<T>(pub T);

impl<S, T> FromRequestParts<S> for ApiQuery<T>
where
    S: Send + Sync,
    T: DeserializeOwned,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        Query::<T>::from_request_parts(parts, state)
            .await
            .map(|Query(v)| Self(v))
            .map_err(|e: QueryRejection| ApiError::field("query", &e.body_text()))
    }
}
