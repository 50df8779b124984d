//! The web UI: three static files compiled into the binary (no JavaScript build step).

use axum::Router;
use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;

use crate::api::AppState;

const INDEX: &str = include_str!("../web/index.html");
const APP_JS: &str = include_str!("../web/app.js");
const STYLE: &str = include_str!("../web/style.css");

/// Strict: the UI uses no inline script or style, and talks only to its own origin.
const CSP: &str = "default-src 'self'; img-src 'self' data:; frame-ancestors 'none'";

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/", get(|| page(INDEX, "text/html; charset=utf-8")))
        .route(
            "/app.js",
            get(|| page(APP_JS, "text/javascript; charset=utf-8")),
        )
        .route("/style.css", get(|| page(STYLE, "text/css; charset=utf-8")))
}

async fn page(body: &'static str, content_type: &'static str) -> impl IntoResponse {
    (
        [
            (header::CONTENT_TYPE, content_type),
            (header::CONTENT_SECURITY_POLICY, CSP),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
            // The files change with the binary; revalidate so an upgrade shows at once.
            (header::CACHE_CONTROL, "no-cache"),
        ],
        body,
    )
}
