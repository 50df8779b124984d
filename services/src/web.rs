//! The web UI: static files compiled into the binary (no JavaScript build step).

use axum::Router;
use axum::http::{HeaderValue, header};
use axum::response::IntoResponse;
use axum::routing::get;

use crate::api::AppState;

const INDEX: &str = include_str!("../web/index.html");
const APP_JS: &str = include_str!("../web/app.js");
const STYLE: &str = include_str!("../web/style.css");
const OIDC_JS: &str = include_str!("../web/oidc.mjs");

/// Strict: the UI uses no inline script or style, and talks only to its own origin and, when
/// users sign in at an OpenID provider, to that provider's origin (discovery and tokens).
fn content_security_policy(issuer: Option<&str>) -> String {
    let provider = issuer
        .and_then(|i| url::Url::parse(i).ok())
        .map(|u| format!(" {}", u.origin().ascii_serialization()))
        .unwrap_or_default();
    format!(
        "default-src 'self'; connect-src 'self'{provider}; img-src 'self' data:; \
         frame-ancestors 'none'; base-uri 'none'; form-action 'self'"
    )
}

pub fn router(issuer: Option<&str>) -> Router<AppState> {
    let csp = HeaderValue::from_str(&content_security_policy(issuer))
        .unwrap_or_else(|_| HeaderValue::from_static("default-src 'self'"));
    let serve = move |body: &'static str, content_type: &'static str| {
        let csp = csp.clone();
        get(move || page(body, content_type, csp))
    };
    Router::new()
        .route("/", serve(INDEX, "text/html; charset=utf-8"))
        .route("/app.js", serve(APP_JS, "text/javascript; charset=utf-8"))
        .route(
            "/oidc.mjs",
            serve(OIDC_JS, "text/javascript; charset=utf-8"),
        )
        .route("/style.css", serve(STYLE, "text/css; charset=utf-8"))
}

async fn page(
    body: &'static str,
    content_type: &'static str,
    csp: HeaderValue,
) -> impl IntoResponse {
    (
        [
            (header::CONTENT_TYPE, HeaderValue::from_static(content_type)),
            (header::CONTENT_SECURITY_POLICY, csp),
            (
                header::X_CONTENT_TYPE_OPTIONS,
                HeaderValue::from_static("nosniff"),
            ),
            // The files change with the binary; revalidate so an upgrade shows at once.
            (header::CACHE_CONTROL, HeaderValue::from_static("no-cache")),
        ],
        body,
    )
}

#[cfg(test)]
mod tests {
    /// Limits live in one place, the server's constants, which the OpenAPI document carries
    /// to the UI (`data-limit`): no input of the UI states a length or a most of its own,
    /// except the two letters of a country code.
    #[test]
    fn the_ui_states_no_text_limit_of_its_own() {
        for (file, text) in [("index.html", super::INDEX), ("app.js", super::APP_JS)] {
            let own: Vec<&str> = text
                .lines()
                .filter(|line| {
                    ["maxlength=", "maxlength:", " max=", " max:", "> 1000"]
                        .iter()
                        .any(|stated| line.contains(stated))
                })
                // The country code is two letters by definition; a progress bar's max is 1.
                .filter(|line| !line.contains("ship-country") && !line.contains("<progress"))
                .collect();
            assert!(own.is_empty(), "{file} states its own limits: {own:#?}");
        }
    }
}
