//! The HTTP API (`/api`, `/health`, `/ready`, `/metrics`, `/openapi.json`) and the web UI.
//!
//! Each area has its own `router()`, merged here; handlers get an [`AppState`] holding the
//! running [`System`](crate::system::System) and the token checks.
//!
//! - [`auth`]: bearer tokens and the `Caller` extractor.
//! - [`error`]: `ApiError`, answered as problem+json.
//! - [`body`]: `ApiJson`, the one way JSON bodies are read and refused.
//! - [`orders`]: place, read, list, cancel, ship, deliver, an order's events.
//! - [`catalog`]: the catalog and restocking.
//! - [`events`]: the event log for analysts, filtered and paged.
//! - [`analytics`]: the analytics summary for analysts.
//! - [`replays`]: start a replay of the read models, follow its progress.
//! - [`live`]: the SSE stream of order updates and push installations.
//! - [`ops`]: the development login, health, readiness, metrics, OpenAPI.
//! - [`edge`]: rate limits, caps on streams and waiters, problem+json for every error.

pub mod analytics;
pub mod auth;
pub mod body;
pub mod catalog;
pub mod dead_letters;
pub mod edge;
pub mod error;
pub mod events;
pub mod live;
pub mod openapi;
pub mod ops;
pub mod orders;
pub mod replays;

use std::sync::Arc;

use axum::Extension;
use axum::Router;
use axum::extract::rejection::QueryRejection;
use axum::extract::{
    DefaultBodyLimit, FromRef, FromRequestParts, MatchedPath, Query, Request, State,
};
use axum::http::request::Parts;
use axum::http::{HeaderName, HeaderValue, Method, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::Response;
use serde::de::DeserializeOwned;
use std::time::Duration;
use std::time::Instant;
use tokio::sync::watch;
use tower::ServiceBuilder;
use tower::util::MapResponseLayer;
use tower_http::trace::TraceLayer;

use crate::system::System;
use auth::Authenticator;
pub use body::ApiJson;
use commands::Commands;
use error::ApiError;
use eventlog::EventStore;
use projections::ReadModels;

/// Request bodies above this are refused with 413 (a 100-line order is ~10 KiB).
pub const BODY_LIMIT: usize = 64 * 1024;

#[derive(Clone)]
pub struct AppState(Arc<Shared>);

impl AppState {
    pub fn new(shared: Shared) -> Self {
        Self(Arc::new(shared))
    }
}

/// Handlers read `state.process`, `state.auth` and the rest through this: every request clones
/// the state (each `State` extractor and middleware does), so it is one reference count to
/// bump, not one per part.
impl std::ops::Deref for AppState {
    type Target = Shared;

    fn deref(&self) -> &Shared {
        &self.0
    }
}

/// What the routes share. Each area takes only what it uses (`State<Arc<orders::Ports>>`,
/// `State<ReadModels>`, …, through `FromRef` below); the process as a whole is for
/// readiness, metrics and the operators' topic only.
pub struct Shared {
    /// Readiness, metrics and the operators' topic look at the whole process.
    pub process: Arc<System>,
    pub orders: Arc<orders::Ports>,
    pub live: Arc<live::Ports>,
    /// Checks bearer tokens (and signs them, for the development login).
    pub auth: Arc<Authenticator>,
    /// How the web UI and apps sign in here (`GET /api/auth/config`).
    pub sign_in: Arc<ops::SignIn>,
    /// Turns true when the process stops; long-lived responses (SSE) end on it.
    pub shutdown: watch::Receiver<bool>,
    /// Rate limits and caps.
    pub edge: Arc<edge::Edge>,
}

impl Shared {
    /// Each area's ports, taken from the process's.
    pub fn new(
        process: Arc<System>,
        auth: Arc<Authenticator>,
        sign_in: Arc<ops::SignIn>,
        shutdown: watch::Receiver<bool>,
        edge: Arc<edge::Edge>,
    ) -> Self {
        let orders = Arc::new(orders::Ports {
            commands: process.commands.clone(),
            read_models: process.read_models.clone(),
            store: process.store.clone(),
            edge: edge.clone(),
        });
        let live = Arc::new(live::Ports {
            live: process.live.clone(),
            push: process.push.clone(),
            edge: edge.clone(),
            shutdown: shutdown.clone(),
        });
        Self {
            process,
            orders,
            live,
            auth,
            sign_in,
            shutdown,
            edge,
        }
    }
}

impl FromRef<AppState> for ReadModels {
    fn from_ref(state: &AppState) -> Self {
        state.process.read_models.clone()
    }
}

impl FromRef<AppState> for Arc<Commands> {
    fn from_ref(state: &AppState) -> Self {
        state.process.commands.clone()
    }
}

impl FromRef<AppState> for Arc<dyn EventStore> {
    fn from_ref(state: &AppState) -> Self {
        state.process.store.clone()
    }
}

impl FromRef<AppState> for Arc<crate::replays::Replays> {
    fn from_ref(state: &AppState) -> Self {
        state.process.replays.clone()
    }
}

/// A `traceparent` header if it is the W3C Trace Context format (see [`infra::trace::parse`]),
/// else none: a malformed one is ignored, never stored.
pub fn traceparent(headers: &axum::http::HeaderMap) -> Option<String> {
    let value = headers.get("traceparent")?.to_str().ok()?;
    infra::trace::parse(value).map(|_| value.to_owned())
}

/// The trace context the events of this request carry: the request span's own when traces are
/// exported (a child of the client's `traceparent`, if it sent a valid one), else the client's.
pub fn trace_context(headers: &axum::http::HeaderMap) -> Option<String> {
    infra::trace::traceparent(&tracing::Span::current()).or_else(|| traceparent(headers))
}

/// The HTTP methods `/metrics` names; any other is counted as `other`, so no request can
/// add a series.
const METHODS: [&str; 7] = ["GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS"];

/// Every process serves the operations endpoints; the web role adds the API and the UI.
/// `/metrics` is here unless `--metrics-listen` serves it elsewhere.
pub fn router(state: AppState, web: bool) -> Router {
    let mut router = Router::new().merge(ops::router());
    if state.edge.settings.metrics_listen.is_none() {
        router = router.merge(ops::metrics_router());
    }
    if web {
        router = router
            .merge(ops::identity_router())
            .merge(orders::router())
            .merge(catalog::router())
            .merge(events::router())
            .merge(analytics::router())
            .merge(replays::router())
            .merge(dead_letters::router())
            .merge(live::router())
            .merge(crate::web::router(state.sign_in.config.issuer.as_deref()));
    }
    edge_layers(router, &state)
}

/// The headers every answer carries unless its handler set them: no MIME sniffing, no
/// referrer, no framing, and no caching of API answers (the UI's files say `no-cache`).
fn security_headers(mut response: Response) -> Response {
    let headers = response.headers_mut();
    for (name, value) in [
        (
            header::X_CONTENT_TYPE_OPTIONS,
            HeaderValue::from_static("nosniff"),
        ),
        (
            header::REFERRER_POLICY,
            HeaderValue::from_static("no-referrer"),
        ),
        (header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY")),
        (header::CACHE_CONTROL, edge::no_store()),
    ] {
        headers.entry(name).or_insert(value);
    }
    response
}

/// `/metrics` alone, for `--metrics-listen`.
pub fn metrics_router(state: AppState) -> Router {
    edge_layers(ops::metrics_router(), &state)
}

/// What every response passes through, innermost first: the metrics, the body limits and
/// deadlines, the request timeout, problem+json for every error, CORS, the security headers,
/// the trace span.
fn edge_layers(router: Router<AppState>, state: &AppState) -> Router {
    let settings = &state.edge.settings;
    let cors = tower_http::cors::CorsLayer::new()
        .allow_origin(tower_http::cors::AllowOrigin::list(
            settings
                .cors_origins
                .iter()
                .filter_map(|o| HeaderValue::from_str(o).ok()),
        ))
        .allow_methods([Method::GET, Method::POST, Method::PUT, Method::DELETE])
        .allow_headers([
            header::AUTHORIZATION,
            header::CONTENT_TYPE,
            header::IF_NONE_MATCH,
            HeaderName::from_static("idempotency-key"),
            HeaderName::from_static("traceparent"),
        ])
        .expose_headers([
            header::LOCATION,
            header::ETAG,
            header::RETRY_AFTER,
            header::WWW_AUTHENTICATE,
        ])
        .max_age(Duration::from_secs(600));
    // Without allowed origins there is nothing for CORS to answer: a browser on another origin
    // is refused by its own same-origin rule.
    let cors = (!settings.cors_origins.is_empty()).then_some(cors);
    // One stack, applied with one `layer` call: axum boxes each `layer` call's service around
    // every route and clones and boxes it again on every request, so eight calls cost eight
    // boxed clones and futures per request (the status query ran at half its earlier rate).
    // Outermost first.
    let edge = ServiceBuilder::new()
        // Spans name the path only: the query may carry a token (`access_token`).
        .layer(
            TraceLayer::new_for_http().make_span_with(|request: &Request| {
                let span = tracing::info_span!(
                    "http",
                    method = %request.method(),
                    path = %request.uri().path(),
                    trace_id = tracing::field::Empty,
                );
                infra::trace::continue_trace(&span, traceparent(request.headers()).as_deref());
                span
            }),
        )
        .layer(MapResponseLayer::new(security_headers))
        .option_layer(cors)
        .layer(middleware::from_fn(edge::problem_for_every_error))
        // Refused on its Content-Length before any route reads it, on every route.
        .layer(tower_http::limit::RequestBodyLimitLayer::new(BODY_LIMIT))
        .layer(tower_http::timeout::TimeoutLayer::with_status_code(
            StatusCode::REQUEST_TIMEOUT,
            settings.request_timeout,
        ))
        .layer(Extension(edge::BodyDeadline(settings.body_timeout)))
        .layer(DefaultBodyLimit::max(BODY_LIMIT));
    router
        .route_layer(middleware::from_fn_with_state(state.clone(), measure))
        .layer(edge)
        .with_state(state.clone())
}

/// Counts every routed request by method, route and status, and times it by route.
async fn measure(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let started = Instant::now();
    let method = METHODS
        .into_iter()
        .find(|m| *m == request.method().as_str())
        .unwrap_or("other");
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "other".to_owned(), |p| p.as_str().to_owned());
    let response = next.run(request).await;
    state
        .process
        .metrics
        .request(method, route, response.status().as_u16(), started.elapsed());
    response
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
