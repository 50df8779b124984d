//! Signing in with a real OpenID provider (the npm `oidc-provider` fixture): the API takes its
//! access tokens, maps its users' roles, follows its key rotations, and refuses every token it
//! would not have issued.

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{Value, json};
use uuid::Uuid;

use orderflow_tests::oidc_provider::{
    AUDIENCE, NATIVE_REDIRECT, Provider, WEB_CLIENT, auth_settings, peek,
};
use orderflow_tests::{TestApp, eventually, spawn_app_using, unique_sku};

async fn app_for(issuer: &str, refresh: Duration) -> TestApp {
    spawn_app_using(|settings| settings.auth = auth_settings(issuer, refresh)).await
}

async fn status_of(app: &TestApp, token: &str) -> (StatusCode, Value) {
    let response = app.get(token, "/api/orders").await;
    let status = response.status();
    (status, response.json().await.unwrap_or(Value::Null))
}

#[tokio::test]
async fn provider_tokens_sign_customers_and_staff_in_with_their_roles() {
    let provider = Provider::start_default();
    let app = app_for(&provider.issuer, Duration::from_secs(5)).await;
    let sku = unique_sku("OIDC");
    app.list_product(&sku, 450, 5).await;

    let alice = provider.sign_in("alice").await;
    let (header, claims) = peek(&alice.access_token);
    assert_eq!(header["alg"], "RS256");
    assert_eq!(claims["aud"], AUDIENCE);
    assert!(claims.get("roles").is_none(), "alice has no role claim");
    let order = app.place_ok(&alice.access_token, &[(&sku, 1)]).await;
    assert_eq!(
        app.settled(&alice.access_token, &order).await["status"],
        "confirmed"
    );
    // Signing in again is the same customer: the order is still hers.
    let again = provider.sign_in("alice").await;
    let mine = app.get(&again.access_token, "/api/orders").await;
    let mine: Value = mine.json().await.unwrap();
    assert_eq!(mine["items"][0]["order_id"], order.as_str(), "{mine}");
    // Another customer neither sees it nor does staff work.
    let bob = provider.sign_in("bob").await.access_token;
    let theirs = app.get(&bob, &format!("/api/orders/{order}")).await;
    assert_eq!(theirs.status(), StatusCode::NOT_FOUND);
    let events = app.get(&bob, "/api/events").await;
    assert_eq!(events.status(), StatusCode::FORBIDDEN);

    // Orders.Operator ships; Orders.Analyst reads the log; someone with both does either; a
    // role the map does not know grants nothing.
    let olga = provider.sign_in("olga").await.access_token;
    let shipped = app
        .post(
            &olga,
            &format!("/api/orders/{order}/ship"),
            &json!({"carrier": "DHL", "tracking": "JD014600006281"}),
        )
        .await;
    assert_eq!(shipped.status(), StatusCode::ACCEPTED);
    let anna = provider.sign_in("anna").await.access_token;
    assert_eq!(app.get(&anna, "/api/events").await.status(), StatusCode::OK);
    assert_eq!(
        app.post(
            &anna,
            &format!("/api/catalog/{sku}/restock"),
            &json!({"quantity": 1})
        )
        .await
        .status(),
        StatusCode::FORBIDDEN
    );
    let sam = provider.sign_in("sam").await.access_token;
    assert_eq!(app.get(&sam, "/api/events").await.status(), StatusCode::OK);
    assert_eq!(
        app.post(
            &sam,
            &format!("/api/catalog/{sku}/restock"),
            &json!({"quantity": 1})
        )
        .await
        .status(),
        StatusCode::ACCEPTED
    );
    let gus = provider.sign_in("gus").await.access_token;
    assert_eq!(
        app.get(&gus, "/api/events").await.status(),
        StatusCode::FORBIDDEN
    );

    // No development login, and the contract says how to sign in instead.
    let dev = app
        .client
        .post(app.url("/api/dev/token"))
        .json(&json!({"customer_id": "mallory", "role": "operator"}))
        .send()
        .await
        .unwrap();
    assert_eq!(dev.status(), StatusCode::NOT_FOUND);
    let config: Value = reqwest::get(app.url("/api/auth/config"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        config,
        json!({"mode": "oidc", "issuer": provider.issuer, "client_id": WEB_CLIENT, "scope": "openid profile"})
    );
    let spec: Value = reqwest::get(app.url("/openapi.json"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(spec["paths"].get("/api/dev/token").is_none());
    assert_eq!(
        spec["components"]["securitySchemes"]["openIdConnect"]["openIdConnectUrl"],
        format!("{}/.well-known/openid-configuration", provider.issuer)
    );
    app.stop().await;
}

#[tokio::test]
async fn tokens_the_provider_would_not_issue_are_refused() {
    let provider = Provider::start_default();
    let app = app_for(&provider.issuer, Duration::from_secs(5)).await;
    let rs = provider.key("RS256").kid.clone();
    let ps = provider.key("PS256").kid.clone();
    let es = provider.key("ES256").kid.clone();
    let now = chrono::Utc::now().timestamp();
    let good = provider.claims("zoe");
    let with = |changes: Value| {
        let mut claims = good.clone();
        for (k, v) in changes.as_object().unwrap() {
            if v.is_null() {
                claims.as_object_mut().unwrap().remove(k);
            } else {
                claims[k] = v.clone();
            }
        }
        claims
    };

    // Each algorithm the provider's keys allow, and an audience in an array.
    for token in [
        provider.forge("RS256", &rs, &good),
        provider.forge("PS256", &ps, &good),
        provider.forge("ES256", &es, &good),
        provider.forge("RS256", &rs, &with(json!({"aud": ["other", AUDIENCE]}))),
        // Within the leeway for clocks that drift.
        provider.forge(
            "RS256",
            &rs,
            &with(json!({"exp": now - 20, "nbf": now + 20})),
        ),
    ] {
        let (status, body) = status_of(&app, &token).await;
        assert_eq!(status, StatusCode::OK, "{body}");
    }

    let alg_none = format!(
        "{}.{}.",
        base64_url(&json!({"alg": "none", "kid": rs})),
        base64_url(&good)
    );
    let hs256_with_the_public_key = {
        let key =
            jsonwebtoken::EncodingKey::from_secret(provider.key("RS256").public_pem.as_bytes());
        let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256);
        header.kid = Some(rs.clone());
        jsonwebtoken::encode(&header, &good, &key).unwrap()
    };
    let tampered = {
        let token = provider.forge("RS256", &rs, &good);
        let parts: Vec<&str> = token.split('.').collect();
        let claims = base64_url(&with(json!({"sub": "someone-else"})));
        format!("{}.{claims}.{}", parts[0], parts[2])
    };
    let refusals = [
        (
            provider.forge("RS256", &rs, &with(json!({"iss": "https://evil.example"}))),
            "another issuer",
        ),
        (
            provider.forge("RS256", &rs, &with(json!({"aud": "api://someone-else"}))),
            "another audience",
        ),
        (
            provider.forge("RS256", &rs, &with(json!({"exp": now - 120}))),
            "expired",
        ),
        (
            provider.forge("RS256", &rs, &with(json!({"nbf": now + 600}))),
            "not valid yet",
        ),
        (
            provider.forge("RS256", &rs, &with(json!({"exp": null}))),
            "`exp`",
        ),
        (
            provider.forge("RS256", &rs, &with(json!({"aud": null}))),
            "`aud`",
        ),
        (
            provider.forge("RS256", &rs, &with(json!({"sub": null}))),
            "`sub`",
        ),
        (alg_none, "not a JWT"),
        (hs256_with_the_public_key, "algorithm"),
        // RS256 under the PS256 key's kid: the key decides the algorithm, not the token.
        (provider.forge("RS256", &ps, &good), "algorithm"),
        (
            provider.forge("RS256", "no-such-key", &good),
            "does not publish",
        ),
        (tampered, "signature"),
        ("not.a.jwt".to_owned(), "not a JWT"),
    ];
    for (token, why) in refusals {
        let (status, body) = status_of(&app, &token).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{why}: {body}");
        let detail = body["detail"].as_str().unwrap_or_default();
        assert!(detail.contains(why), "expected {why:?} in {body}");
        assert_eq!(body["code"], "unauthenticated");
    }
    app.stop().await;
}

fn base64_url(value: &Value) -> String {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(serde_json::to_vec(value).unwrap())
}

#[tokio::test]
async fn the_provider_signs_with_each_algorithm_it_is_configured_for() {
    for alg in ["PS256", "ES256"] {
        let provider =
            Provider::start(&["--redirect-uri", NATIVE_REDIRECT, "--access-token-alg", alg]);
        let app = app_for(&provider.issuer, Duration::from_secs(5)).await;
        let token = provider.sign_in("alice").await.access_token;
        assert_eq!(peek(&token).0["alg"], alg);
        let (status, body) = status_of(&app, &token).await;
        assert_eq!(status, StatusCode::OK, "{alg}: {body}");
        app.stop().await;
    }
}

#[tokio::test]
async fn a_key_rotation_needs_no_restart() {
    let mut provider = Provider::start_default();
    let app = app_for(&provider.issuer, Duration::from_millis(500)).await;
    let before = provider.sign_in("alice").await.access_token;
    assert_eq!(status_of(&app, &before).await.0, StatusCode::OK);

    provider.rotate().await;
    let after = provider.sign_in("alice").await.access_token;
    assert_ne!(
        peek(&after).0["kid"],
        peek(&before).0["kid"],
        "a new key signs"
    );
    // The first try may fall inside the refresh interval of the start-up fetch; the API
    // fetches the new key at the next try after it.
    eventually("the rotated key accepted", || async {
        match status_of(&app, &after).await {
            (StatusCode::OK, _) => Ok(()),
            (status, body) => Err(format!("{status} {body}")),
        }
    })
    .await;
    assert_eq!(
        status_of(&app, &before).await.0,
        StatusCode::OK,
        "tokens signed with the old key, still published, stay valid"
    );
    app.stop().await;
}

#[tokio::test]
async fn a_flood_of_unknown_kids_fetches_the_keys_at_most_once_per_interval() {
    let provider = Provider::start_default();
    let app = app_for(&provider.issuer, Duration::from_secs(5)).await;
    let (jwks_before, _) = provider.reads().await;
    let started = tokio::time::Instant::now();
    let floods = (0..60).map(|_| {
        let token = provider.forge(
            "RS256",
            &Uuid::new_v4().to_string(),
            &provider.claims("mallory"),
        );
        let app = &app;
        async move { status_of(app, &token).await.0 }
    });
    let statuses = futures_util::future::join_all(floods).await;
    assert!(statuses.iter().all(|s| *s == StatusCode::UNAUTHORIZED));
    let (jwks_after, _) = provider.reads().await;
    // One fetch per started 5 s, plus the one that may straddle the start.
    let allowed = 1 + started.elapsed().as_secs() / 5 + 1;
    assert!(
        jwks_after - jwks_before <= allowed,
        "{} key fetches for 60 unknown kids in {:?}",
        jwks_after - jwks_before,
        started.elapsed()
    );
    app.stop().await;
}

#[tokio::test]
async fn cached_keys_keep_working_while_the_provider_is_down() {
    let mut provider = Provider::start_default();
    let app = app_for(&provider.issuer, Duration::from_millis(200)).await;
    let token = provider.sign_in("alice").await.access_token;
    let unknown = provider.forge("RS256", "rotated-while-down", &provider.claims("alice"));
    assert_eq!(status_of(&app, &token).await.0, StatusCode::OK);

    provider.stop();
    for _ in 0..5 {
        assert_eq!(status_of(&app, &token).await.0, StatusCode::OK);
        let (status, body) = status_of(&app, &unknown).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    app.stop().await;
}

#[tokio::test]
async fn a_provider_that_never_answered_is_a_503_not_a_401() {
    // A port nobody listens on: bound, then freed.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let issuer = format!("http://127.0.0.1:{port}");
    let app = app_for(&issuer, Duration::from_millis(100)).await;
    let response = app
        .get("eyJhbGciOiJSUzI1NiIsImtpZCI6ImsifQ.e30.c2ln", "/api/orders")
        .await;
    assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert!(response.headers().contains_key("retry-after"));
    let problem: serde_json::Value = response.json().await.unwrap();
    assert!(
        problem["detail"]
            .as_str()
            .is_some_and(|d| d.contains("identity provider")),
        "{problem}"
    );
    app.stop().await;
}
