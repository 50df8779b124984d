//! The HTTP edge holding against cheap abuse, tried as an attacker would, on 127.0.0.1: slow
//! headers and bodies, too many connections, command floods, too many live streams or
//! waiters, probing other customers' orders, unbounded metric labels; and the headers, CORS
//! and problem+json every answer carries. Each test sets its own small limits and is bounded
//! in time and count.

use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::{Instant, timeout};
use uuid::Uuid;

use orderflow_tests::{TestApp, eventually, order_body, spawn_app_using, unique_sku};

fn host(app: &TestApp) -> String {
    app.address.trim_start_matches("http://").to_owned()
}

/// Reads from `stream` until it closes or `limit` passes; what arrived, and whether it closed.
async fn read_until_closed(stream: &mut TcpStream, limit: Duration) -> (String, bool) {
    let deadline = Instant::now() + limit;
    let mut seen = Vec::new();
    let mut buffer = [0u8; 4096];
    loop {
        match tokio::time::timeout_at(deadline, stream.read(&mut buffer)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return (String::from_utf8_lossy(&seen).into_owned(), true),
            Ok(Ok(n)) => seen.extend_from_slice(&buffer[..n]),
            Err(_) => return (String::from_utf8_lossy(&seen).into_owned(), false),
        }
    }
}

fn assert_problem(response_text: &str, status: u16) {
    assert!(
        response_text.starts_with(&format!("HTTP/1.1 {status}")),
        "expected {status}: {response_text}"
    );
    assert!(
        response_text
            .to_ascii_lowercase()
            .contains("content-type: application/problem+json"),
        "{response_text}"
    );
}

#[tokio::test]
async fn a_client_trickling_its_headers_is_cut_off() {
    let app = spawn_app_using(|s| s.edge.header_timeout = Duration::from_secs(1)).await;
    let mut stream = TcpStream::connect(host(&app)).await.unwrap();
    let started = Instant::now();
    let request =
        b"GET /health HTTP/1.1\r\nHost: x\r\nX-Slow: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
    let mut closed = false;
    // A byte every 100 ms: the headers would take 7 s, the server allows 1.
    for byte in request {
        if stream.write_all(&[*byte]).await.is_err() {
            closed = true;
            break;
        }
        let mut probe = [0u8; 1];
        if let Ok(Ok(0) | Err(_)) =
            timeout(Duration::from_millis(100), stream.read(&mut probe)).await
        {
            closed = true;
            break;
        }
    }
    if !closed {
        closed = read_until_closed(&mut stream, Duration::from_secs(5))
            .await
            .1;
    }
    assert!(
        closed,
        "the connection is still open after {:?}",
        started.elapsed()
    );
    assert!(
        started.elapsed() < Duration::from_secs(6),
        "cut off only after {:?}",
        started.elapsed()
    );
    app.stop().await;
}

#[tokio::test]
async fn a_client_trickling_its_body_gets_a_408() {
    let app = spawn_app_using(|s| s.edge.body_timeout = Duration::from_secs(1)).await;
    let token = app.new_customer().await;
    let mut stream = TcpStream::connect(host(&app)).await.unwrap();
    let head = format!(
        "POST /api/orders HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\n\
         Content-Type: application/json\r\nContent-Length: 500\r\n\r\n{{"
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    let started = Instant::now();
    let mut answer = String::new();
    // A byte every 100 ms of a 500-byte body: 50 s; the server allows 1.
    for _ in 0..60 {
        if stream.write_all(b" ").await.is_err() {
            break;
        }
        let mut buffer = [0u8; 2048];
        if let Ok(Ok(n)) = timeout(Duration::from_millis(100), stream.read(&mut buffer)).await {
            answer.push_str(&String::from_utf8_lossy(&buffer[..n]));
            if n == 0 || answer.contains("\r\n\r\n") {
                break;
            }
        }
    }
    if !answer.contains("\r\n\r\n") {
        answer.push_str(
            &read_until_closed(&mut stream, Duration::from_secs(3))
                .await
                .0,
        );
    }
    assert_problem(&answer, 408);
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    app.stop().await;
}

#[tokio::test]
async fn connections_over_the_cap_get_a_503_and_the_place_comes_back() {
    let app = spawn_app_using(|s| {
        s.edge.max_connections = 3;
        s.edge.header_timeout = Duration::from_secs(20);
    })
    .await;
    let mut held = Vec::new();
    for _ in 0..3 {
        held.push(TcpStream::connect(host(&app)).await.unwrap());
    }
    // The held ones were accepted (in order) before this one is.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut extra = TcpStream::connect(host(&app)).await.unwrap();
    extra
        .write_all(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let (answer, closed) = read_until_closed(&mut extra, Duration::from_secs(10)).await;
    assert_problem(&answer, 503);
    assert!(
        answer.to_ascii_lowercase().contains("retry-after: 1"),
        "{answer}"
    );
    assert!(closed, "a refused connection is closed");

    held.clear();
    eventually("a freed place serves again", || async {
        match reqwest::get(app.url("/health")).await {
            Ok(r) if r.status() == StatusCode::OK => Ok(()),
            Ok(r) => Err(r.status().to_string()),
            Err(e) => Err(e.to_string()),
        }
    })
    .await;
    app.stop().await;
}

#[tokio::test]
async fn a_customer_flooding_commands_gets_429_with_retry_after_and_others_do_not() {
    let app = spawn_app_using(|s| {
        s.edge.command_rate = 1;
        s.edge.command_burst = 3;
    })
    .await;
    let sku = unique_sku("FLOOD");
    app.list_product(&sku, 100, 100).await;
    let (mallory, alice) = (app.new_customer().await, app.new_customer().await);
    let mut statuses = Vec::new();
    let mut refusal = None;
    for _ in 0..5 {
        let response = app
            .place(
                &mallory,
                &Uuid::new_v4().to_string(),
                &order_body(&[(&sku, 1)]),
            )
            .await;
        statuses.push(response.status());
        if response.status() == StatusCode::TOO_MANY_REQUESTS {
            let retry: u64 = response.headers()["retry-after"]
                .to_str()
                .unwrap()
                .parse()
                .unwrap();
            refusal = Some((retry, response.json::<Value>().await.unwrap()));
        }
    }
    assert_eq!(
        &statuses[..3],
        &[StatusCode::ACCEPTED; 3],
        "the burst passes"
    );
    assert_eq!(statuses[4], StatusCode::TOO_MANY_REQUESTS);
    let (retry, problem) = refusal.unwrap();
    assert!((1..=2).contains(&retry), "Retry-After {retry}");
    assert_eq!(problem["code"], "rate_limited");
    // Reads are not commands; another customer has a limit of their own.
    assert_eq!(
        app.get(&mallory, "/api/orders").await.status(),
        StatusCode::OK
    );
    let theirs = app
        .place(
            &alice,
            &Uuid::new_v4().to_string(),
            &order_body(&[(&sku, 1)]),
        )
        .await;
    assert_eq!(theirs.status(), StatusCode::ACCEPTED);
    app.stop().await;
}

#[tokio::test]
async fn the_dev_login_is_rate_limited_per_client_address() {
    let app = spawn_app_using(|s| s.edge.dev_login_rate = 3).await;
    let mut statuses = Vec::new();
    for i in 0..4 {
        let response = app
            .client
            .post(app.url("/api/dev/token"))
            .json(&json!({"customer_id": format!("login-{i}")}))
            .send()
            .await
            .unwrap();
        statuses.push(response.status());
        if response.status() == StatusCode::TOO_MANY_REQUESTS {
            assert!(response.headers().contains_key("retry-after"));
        }
    }
    assert_eq!(
        statuses,
        [
            StatusCode::OK,
            StatusCode::OK,
            StatusCode::OK,
            StatusCode::TOO_MANY_REQUESTS
        ]
    );
    app.stop().await;
}

async fn open_stream(app: &TestApp, token: &str) -> reqwest::Response {
    app.client
        .get(app.url("/api/notifications/stream"))
        .bearer_auth(token)
        .send()
        .await
        .unwrap()
}

#[tokio::test]
async fn live_streams_are_capped_per_customer_and_in_all() {
    let app = spawn_app_using(|s| {
        s.edge.max_streams = 2;
        s.edge.max_streams_per_customer = 1;
    })
    .await;
    let (alice, bob, carol) = (
        app.new_customer().await,
        app.new_customer().await,
        app.new_customer().await,
    );
    let first = open_stream(&app, &alice).await;
    assert_eq!(first.status(), StatusCode::OK);
    let again = open_stream(&app, &alice).await;
    assert_eq!(again.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(
        again.json::<Value>().await.unwrap()["code"],
        "too_many_streams"
    );
    let second = open_stream(&app, &bob).await;
    assert_eq!(second.status(), StatusCode::OK);
    let third = open_stream(&app, &carol).await;
    assert_eq!(third.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert!(third.headers().contains_key("retry-after"));

    drop(first);
    eventually("a closed stream gives its place back", || async {
        match open_stream(&app, &alice).await.status() {
            StatusCode::OK => Ok(()),
            status => Err(status.to_string()),
        }
    })
    .await;
    drop(second);
    app.stop().await;
}

/// A development token for a new customer whose `exp` is `seconds` from now (negative: past),
/// signed with the data directory's development key.
fn short_lived_token(app: &TestApp, seconds: i64) -> String {
    let key = std::fs::read_to_string(app.data_dir.join("dev-signing-key")).unwrap();
    let now = chrono::Utc::now().timestamp();
    let claims = json!({
        "sub": Uuid::new_v4(), "role": "customer", "iss": "orderflow-dev", "aud": "orderflow",
        "iat": now, "exp": now + seconds,
    });
    jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &claims,
        &jsonwebtoken::EncodingKey::from_secret(key.trim().as_bytes()),
    )
    .unwrap()
}

#[tokio::test]
async fn a_live_stream_ends_when_its_token_expires() {
    let app = spawn_app_using(|_| {}).await;
    // Past its `exp`, but 3 s short of the end of the 60 s leeway the server allows clocks.
    let token = short_lived_token(&app, -57);
    let mut stream = open_stream(&app, &token).await;
    assert_eq!(stream.status(), StatusCode::OK);
    let started = Instant::now();
    let ended = timeout(Duration::from_secs(15), async {
        while let Ok(Some(_)) = stream.chunk().await {}
    })
    .await;
    assert!(ended.is_ok(), "the stream outlived its token");
    assert!(
        started.elapsed() >= Duration::from_secs(1),
        "it ended at once ({:?}), not at expiry",
        started.elapsed()
    );
    // The same token cannot open a new one.
    assert_eq!(
        open_stream(&app, &token).await.status(),
        StatusCode::UNAUTHORIZED
    );
    app.stop().await;
}

#[tokio::test]
async fn min_version_waiters_are_capped_and_strangers_get_404_at_once() {
    let app = spawn_app_using(|s| s.edge.max_waiters = 1).await;
    let sku = unique_sku("WAIT");
    app.list_product(&sku, 100, 5).await;
    let owner = app.new_customer().await;
    let order = app.place_ok(&owner, &[(&sku, 1)]).await;
    app.settled(&owner, &order).await;

    // A stranger asking for a version the order will never reach: 404, without the wait.
    let stranger = app.new_customer().await;
    let started = Instant::now();
    let probe = app
        .get(
            &stranger,
            &format!("/api/orders/{order}?min_version=99&wait_ms=10000"),
        )
        .await;
    assert_eq!(probe.status(), StatusCode::NOT_FOUND);
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "the stranger waited {:?}",
        started.elapsed()
    );

    // The owner waits; a second waiter at the same time finds no place.
    let path = format!("/api/orders/{order}?min_version=99&wait_ms=3000");
    let waiting = app.get(&owner, &path);
    let second = async {
        tokio::time::sleep(Duration::from_millis(500)).await;
        app.get(&owner, &path).await
    };
    let (waited, refused) = tokio::join!(waiting, second);
    assert_eq!(
        waited.status(),
        StatusCode::OK,
        "the view as it is, after the wait"
    );
    assert_eq!(refused.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(refused.json::<Value>().await.unwrap()["code"], "busy");
    app.stop().await;
}

#[tokio::test]
async fn metric_labels_are_bounded_and_metrics_can_live_on_an_internal_listener() {
    let app =
        spawn_app_using(|s| s.edge.metrics_listen = Some("127.0.0.1:0".parse().unwrap())).await;
    let odd = Method::from_bytes(b"BREW").unwrap();
    for path in ["/no/such/path", "/api/orders", "/x%20y"] {
        let _ = app
            .client
            .request(odd.clone(), app.url(path))
            .send()
            .await
            .unwrap();
    }
    let on_main = reqwest::get(app.url("/metrics")).await.unwrap();
    assert_eq!(
        on_main.status(),
        StatusCode::NOT_FOUND,
        "not on the public listener"
    );
    let internal = app.metrics_address.clone().expect("a metrics address");
    let text = reqwest::get(format!("{internal}/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(!text.contains("BREW"), "a method became a label");
    assert!(!text.contains("no/such"), "a path became a label");
    assert!(text.contains("method=\"other\""), "{text}");
    app.stop().await;
}

#[tokio::test]
async fn cors_answers_preflights_for_allowed_origins_only() {
    let app =
        spawn_app_using(|s| s.edge.cors_origins = vec!["https://shop.example.com".into()]).await;
    let preflight = |origin: &'static str| {
        app.client
            .request(Method::OPTIONS, app.url("/api/orders"))
            .header("Origin", origin)
            .header("Access-Control-Request-Method", "POST")
            .header(
                "Access-Control-Request-Headers",
                "authorization,content-type,idempotency-key",
            )
            .send()
    };
    let allowed = preflight("https://shop.example.com").await.unwrap();
    assert!(allowed.status().is_success(), "{}", allowed.status());
    let headers = allowed.headers();
    assert_eq!(
        headers["access-control-allow-origin"],
        "https://shop.example.com"
    );
    let allowed_headers = headers["access-control-allow-headers"]
        .to_str()
        .unwrap()
        .to_ascii_lowercase();
    assert!(
        allowed_headers.contains("idempotency-key"),
        "{allowed_headers}"
    );
    let other = preflight("https://evil.example").await.unwrap();
    assert!(other.headers().get("access-control-allow-origin").is_none());
    // An actual cross-origin read carries the header too, errors included.
    let read = app
        .client
        .get(app.url("/api/orders"))
        .header("Origin", "https://shop.example.com")
        .send()
        .await
        .unwrap();
    assert_eq!(read.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(
        read.headers()["access-control-allow-origin"],
        "https://shop.example.com"
    );
    app.stop().await;

    let closed = spawn_app_using(|_| {}).await;
    let response = closed
        .client
        .get(closed.url("/api/catalog"))
        .header("Origin", "https://shop.example.com")
        .send()
        .await
        .unwrap();
    assert!(
        response
            .headers()
            .get("access-control-allow-origin")
            .is_none(),
        "none by default"
    );
    closed.stop().await;
}

#[tokio::test]
async fn every_answer_carries_the_security_headers() {
    let app = spawn_app_using(|_| {}).await;
    let api = reqwest::get(app.url("/api/catalog")).await.unwrap();
    let headers = api.headers();
    assert_eq!(headers["x-content-type-options"], "nosniff");
    assert_eq!(headers["referrer-policy"], "no-referrer");
    assert_eq!(headers["cache-control"], "no-store");
    let ui = reqwest::get(app.url("/")).await.unwrap();
    let headers = ui.headers();
    let csp = headers["content-security-policy"].to_str().unwrap();
    assert!(
        csp.contains("frame-ancestors 'none'") && csp.contains("default-src 'self'"),
        "{csp}"
    );
    assert_eq!(headers["cache-control"], "no-cache");
    assert_eq!(headers["x-content-type-options"], "nosniff");
    let missing = reqwest::get(app.url("/nope")).await.unwrap();
    assert_eq!(missing.headers()["x-content-type-options"], "nosniff");
    app.stop().await;
}

#[tokio::test]
async fn every_error_is_problem_json() {
    let app = spawn_app_using(|_| {}).await;
    let operator = app.token("olga", "operator").await;
    let order = Uuid::new_v4();
    let big = "x".repeat(200 * 1024);
    let cases: Vec<(reqwest::RequestBuilder, u16)> = vec![
        (app.client.get(app.url("/no/such/route")), 404),
        (app.client.get(app.url("/api/orders/x/y/z")), 404),
        (app.client.delete(app.url("/api/catalog")), 405),
        (app.client.put(app.url("/health")), 405),
        (
            app.client
                .post(app.url("/api/orders"))
                .bearer_auth(&operator)
                .header("content-type", "application/json")
                .body(big.clone()),
            413,
        ),
        // A route that reads no body refuses a large one too.
        (
            app.client
                .post(app.url(&format!("/api/orders/{order}/deliver")))
                .bearer_auth(&operator)
                .body(big.clone()),
            413,
        ),
        (
            app.client
                .get(app.url("/api/orders/%FF%FE"))
                .bearer_auth(&operator),
            400,
        ),
        (app.client.get(app.url("/api/orders")), 401),
    ];
    for (request, status) in cases {
        let response = request.send().await.unwrap();
        let url = response.url().to_string();
        assert_eq!(response.status().as_u16(), status, "{url}");
        let content_type = response.headers()["content-type"]
            .to_str()
            .unwrap()
            .to_owned();
        if status == 405 {
            assert!(
                response.headers().contains_key("allow"),
                "405 keeps its Allow: {url}"
            );
        }
        assert_eq!(content_type, "application/problem+json", "{url}");
        let problem: Value = response.json().await.unwrap();
        assert_eq!(problem["status"], status, "{url}: {problem}");
        assert!(
            problem["code"].is_string() && problem["title"].is_string(),
            "{problem}"
        );
    }
    app.stop().await;
}
