//! The web UI: static files compiled into the binary (no JavaScript build step).

use axum::Router;
use axum::http::{HeaderValue, header};
use axum::response::IntoResponse;
use axum::routing::get;

use crate::api::AppState;

const INDEX: &str = include_str!("../web/index.html");
const STYLE: &str = include_str!("../web/style.css");

/// The JavaScript modules, by the path each is served at (its path under `services/web/`):
/// `app.js` imports the others, which import each other by relative paths.
macro_rules! modules {
    ($($path:literal),* $(,)?) => {
        &[$(($path, include_str!(concat!("../web", $path)))),*]
    };
}
const MODULES: &[(&str, &str)] = modules![
    "/app.js",
    "/oidc.mjs",
    "/lib/api.mjs",
    "/lib/auth.mjs",
    "/lib/cart.mjs",
    "/lib/catalog.mjs",
    "/lib/chrome.mjs",
    "/lib/dom.mjs",
    "/lib/fields.mjs",
    "/lib/format.mjs",
    "/lib/limits.mjs",
    "/lib/live.mjs",
    "/lib/problems.mjs",
    "/lib/router.mjs",
    "/lib/routing.mjs",
    "/lib/rows.mjs",
    "/lib/session.mjs",
    "/lib/ship.mjs",
    "/lib/state.mjs",
    "/views/analyst.mjs",
    "/views/dead-letters.mjs",
    "/views/login.mjs",
    "/views/operator.mjs",
    "/views/order.mjs",
    "/views/orders.mjs",
    "/views/routes.mjs",
    "/views/shop.mjs",
];

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
    let router = Router::new()
        .route("/", serve(INDEX, "text/html; charset=utf-8"))
        .route("/style.css", serve(STYLE, "text/css; charset=utf-8"));
    MODULES.iter().fold(router, |router, (path, body)| {
        router.route(path, serve(body, "text/javascript; charset=utf-8"))
    })
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
    use super::{INDEX, MODULES};

    /// Limits live in one place, the server's constants, which the OpenAPI document carries
    /// to the UI (`data-limit`): no input of the UI states a length or a most of its own,
    /// except the two letters of a country code.
    #[test]
    fn the_ui_states_no_text_limit_of_its_own() {
        for (file, text) in std::iter::once(("/index.html", INDEX)).chain(MODULES.iter().copied()) {
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

    /// Every module in `services/web/` is served (a module the server lacks breaks the page
    /// with nothing but a console error), and none is served that is not there.
    #[test]
    fn every_module_of_the_ui_is_served() {
        let web = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("web");
        let mut found = Vec::new();
        let mut dirs = vec![web.clone()];
        while let Some(dir) = dirs.pop() {
            for entry in std::fs::read_dir(&dir).unwrap() {
                let path = entry.unwrap().path();
                let name = path.to_string_lossy().into_owned();
                if path.is_dir() {
                    dirs.push(path);
                } else if (name.ends_with(".js") || name.ends_with(".mjs"))
                    && !name.ends_with(".test.mjs")
                {
                    let served = path.strip_prefix(&web).unwrap().to_string_lossy();
                    found.push(format!("/{}", served.replace('\\', "/")));
                }
            }
        }
        found.sort();
        let mut served: Vec<String> = MODULES.iter().map(|(path, _)| path.to_string()).collect();
        served.sort();
        assert_eq!(found, served, "services/web/ and web.rs's MODULES differ");
    }

    /// Every static import of a module names a module that is served (imports are relative,
    /// resolved against the importing module's path as the browser does).
    #[test]
    fn every_import_names_a_served_module() {
        let served: Vec<&str> = MODULES.iter().map(|(path, _)| *path).collect();
        for (path, text) in MODULES {
            for specifier in text
                .split(" from '")
                .skip(1)
                .chain(text.split("import('").skip(1))
            {
                let specifier = &specifier[..specifier.find('\'').unwrap()];
                let mut parts: Vec<&str> = path.split('/').collect();
                parts.pop();
                for part in specifier.split('/') {
                    match part {
                        "." => {}
                        ".." => {
                            parts.pop();
                        }
                        part => parts.push(part),
                    }
                }
                let resolved = parts.join("/");
                assert!(
                    specifier.starts_with('.') && served.contains(&resolved.as_str()),
                    "{path} imports {specifier:?} ({resolved}), which is not served"
                );
            }
        }
    }
}
