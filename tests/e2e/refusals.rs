//! Input that must be refused: 422 (or 415) problem+json naming what is wrong, and nothing
//! written.

use reqwest::StatusCode;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use uuid::Uuid;

use orderflow_tests::{TestApp, order_body, spawn_app, unique_sku};

async fn raw(
    app: &TestApp,
    token: &str,
    method: reqwest::Method,
    path: &str,
    content_type: &str,
    body: &str,
) -> (StatusCode, Value) {
    let response = app
        .client
        .request(method, app.url(path))
        .bearer_auth(token)
        .header("content-type", content_type)
        .header("Idempotency-Key", Uuid::new_v4().to_string())
        .body(body.to_owned())
        .send()
        .await
        .unwrap();
    let status = response.status();
    (status, response.json().await.unwrap_or(Value::Null))
}

fn fields(problem: &Value) -> Vec<String> {
    problem["errors"]
        .as_array()
        .map(|errors| {
            errors
                .iter()
                .map(|e| e["field"].as_str().unwrap().to_owned())
                .collect()
        })
        .unwrap_or_default()
}

async fn my_orders(app: &TestApp, token: &str) -> usize {
    let list: Value = app.get(token, "/api/orders").await.json().await.unwrap();
    list["items"].as_array().unwrap().len()
}

#[tokio::test]
async fn orders_with_duplicate_keys_or_hidden_characters_are_refused_and_nothing_is_written() {
    let app = spawn_app().await;
    let sku = unique_sku("REFUSE");
    app.list_product(&sku, 100, 10).await;
    let token = app.new_customer().await;
    let post = reqwest::Method::POST;

    let good = order_body(&[(&sku, 1)]).to_string();
    // The same key twice: one parser would read 1, another 900.
    let twice = good.replacen(r#""quantity":1"#, r#""quantity":1,"quantity":900"#, 1);
    assert_ne!(twice, good);
    let (status, problem) = raw(
        &app,
        &token,
        post.clone(),
        "/api/orders",
        "application/json",
        &twice,
    )
    .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{problem}");
    assert_eq!(fields(&problem), ["lines[0].quantity"]);

    let mut nul = order_body(&[(&sku, 1)]);
    nul["shipping_address"]["name"] = json!("Ada\u{0}Lovelace");
    let mut bidi = order_body(&[(&sku, 1)]);
    bidi["shipping_address"]["city"] = json!("London\u{202E}nodnoL");
    let mut isolate = order_body(&[(&sku, 1)]);
    isolate["shipping_address"]["line2"] = json!("Flat \u{2067}2\u{2069}");
    for (body, field) in [
        (nul, "shipping_address.name"),
        (bidi, "shipping_address.city"),
        (isolate, "shipping_address.line2"),
    ] {
        let (status, problem) = raw(
            &app,
            &token,
            post.clone(),
            "/api/orders",
            "application/json",
            &body.to_string(),
        )
        .await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{problem}");
        assert_eq!(fields(&problem), [field]);
    }
    assert_eq!(my_orders(&app, &token).await, 0, "nothing was written");

    // Every JSON endpoint wants JSON.
    for content_type in [
        "text/plain",
        "application/x-www-form-urlencoded",
        "application/xml",
    ] {
        let (status, problem) = raw(
            &app,
            &token,
            post.clone(),
            "/api/orders",
            content_type,
            &good,
        )
        .await;
        assert_eq!(
            status,
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "{content_type}: {problem}"
        );
        assert_eq!(problem["code"], "unsupported_media_type");
    }
    assert_eq!(my_orders(&app, &token).await, 0, "nothing was written");
    let (status, _) = raw(
        &app,
        &token,
        post,
        "/api/orders",
        "application/json; charset=utf-8",
        &good,
    )
    .await;
    assert_eq!(status, StatusCode::ACCEPTED, "JSON with a charset is JSON");
    app.stop().await;
}

#[tokio::test]
async fn commands_refuse_hidden_text_and_non_json_bodies() {
    let app = spawn_app().await;
    let sku = unique_sku("REFUSE");
    app.list_product(&sku, 100, 10).await;
    let customer = app.new_customer().await;
    let operator = app.token("olga", "operator").await;
    let analyst = app.token("ann", "analyst").await;
    let order = app.place_ok(&customer, &[(&sku, 1)]).await;
    app.settled(&customer, &order).await;
    let post = reqwest::Method::POST;
    let cancel = format!("/api/orders/{order}/cancel");
    let ship = format!("/api/orders/{order}/ship");
    let restock = format!("/api/catalog/{sku}/restock");

    let cases: Vec<(&str, &str, &str, &str, StatusCode)> = vec![
        (
            &customer,
            &cancel,
            "application/json",
            r#"{"reason": "changed my mind\u0000"}"#,
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (
            &customer,
            &cancel,
            "text/plain",
            r#"{"reason": "changed my mind"}"#,
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
        ),
        (
            &customer,
            &cancel,
            "application/json",
            r#"{"reason": "a", "reason": "b"}"#,
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (
            &operator,
            &ship,
            "application/json",
            "{\"carrier\": \"DHL\u{202D}\", \"tracking\": \"JD1\"}",
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (
            &operator,
            &ship,
            "application/json",
            r#"{"carrier": "DHL", "tracking_number": "JD1", "tracking": "JD1"}"#,
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (
            &operator,
            &ship,
            "text/plain",
            r#"{"carrier": "DHL", "tracking": "JD1"}"#,
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
        ),
        (
            &operator,
            &restock,
            "text/plain",
            r#"{"quantity": 1}"#,
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
        ),
        (
            &operator,
            &restock,
            "application/json",
            r#"[{"quantity": 1}]"#,
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (
            &analyst,
            "/api/replays",
            "application/json",
            "[]",
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (
            &analyst,
            "/api/replays",
            "application/json",
            r#"[["analytics"]]"#,
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (
            &analyst,
            "/api/replays",
            "application/json",
            r#""analytics""#,
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (
            &analyst,
            "/api/replays",
            "text/plain",
            "{}",
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
        ),
    ];
    for (token, path, content_type, body, expected) in cases {
        let (status, problem) = raw(&app, token, post.clone(), path, content_type, body).await;
        assert_eq!(status, expected, "{path} {content_type} {body}: {problem}");
        assert_eq!(problem["status"], expected.as_u16(), "{problem}");
    }
    // Nothing moved: the order is as it was, confirmed at version 2.
    let view = app.view(&customer, &order).await;
    assert_eq!(
        (view["status"].as_str(), view["version"].as_u64()),
        (Some("confirmed"), Some(2))
    );
    let dev = app
        .client
        .post(app.url("/api/dev/token"))
        .header("content-type", "text/plain")
        .body(r#"{"customer_id": "x"}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(dev.status(), StatusCode::UNSUPPORTED_MEDIA_TYPE);
    app.stop().await;
}

#[tokio::test]
async fn installations_refuse_dot_ids_and_tags_notification_hubs_would_refuse() {
    let app = spawn_app().await;
    let token = app.new_customer().await;
    let put = reqwest::Method::PUT;
    let body = |tags: Value| {
        json!({"platform": "fcmv1", "push_channel": "device-token", "tags": tags}).to_string()
    };
    // Sent as raw bytes: an HTTP client resolves `.`, `..` and even `%2E%2E` as dot segments
    // itself (the URL standard says so), but a hostile client need not.
    for id in [".", "..", "%2E", "%2E%2E"] {
        let payload = body(json!([]));
        let request = format!(
            "PUT /api/installations/{id} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\n\
             Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{payload}",
            payload.len()
        );
        let mut stream = tokio::net::TcpStream::connect(app.address.trim_start_matches("http://"))
            .await
            .unwrap();
        stream.write_all(request.as_bytes()).await.unwrap();
        let mut answer = String::new();
        tokio::time::timeout(
            std::time::Duration::from_secs(10),
            stream.read_to_string(&mut answer),
        )
        .await
        .unwrap()
        .unwrap();
        assert!(answer.starts_with("HTTP/1.1 422"), "{id}: {answer}");
        assert!(answer.contains("installation_id"), "{id}: {answer}");
    }
    let too_long = "t".repeat(121);
    for (tag, why) in [
        ("with space", "space"),
        ("emoji-🙂", "emoji"),
        ("a/b", "slash"),
        ("", "empty"),
        (too_long.as_str(), "121 chars"),
    ] {
        let (status, problem) = raw(
            &app,
            &token,
            put.clone(),
            "/api/installations/phone-1",
            "application/json",
            &body(json!(["ok", tag])),
        )
        .await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{why}: {problem}");
        assert_eq!(fields(&problem), ["tags[1]"], "{why}");
    }
    let (status, installation) = raw(
        &app,
        &token,
        put,
        "/api/installations/phone-1",
        "application/json",
        &body(json!(["lang:en-GB", "vip_tier#2", "team@shop"])),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{installation}");
    assert_eq!(installation["tags"].as_array().unwrap().len(), 4);
    app.stop().await;
}

/// What the OpenAPI document says and the server keeps (schemathesis holds the two together
/// in `.ci/run`; these are the rules it found loose, one by one).
#[tokio::test]
async fn requests_outside_the_documented_contract_are_refused_naming_the_field() {
    let app = spawn_app().await;
    let sku = unique_sku("CONTRACT");
    app.list_product(&sku, 100, 10).await;
    let token = app.new_customer().await;
    let post = reqwest::Method::POST;
    let order = |edit: &dyn Fn(&mut Value)| {
        let mut body = order_body(&[(&sku, 1)]);
        edit(&mut body);
        body.to_string()
    };
    let cases: Vec<(&str, String, &str)> = vec![
        (
            "an unknown field",
            order(&|b| b["gift_wrap"] = json!(true)),
            "gift_wrap",
        ),
        (
            "an unknown line field",
            order(&|b| b["lines"][0]["colour"] = json!("red")),
            "lines[0].colour",
        ),
        (
            "an unknown address field",
            order(&|b| b["shipping_address"]["state"] = json!("CA")),
            "shipping_address.state",
        ),
        (
            "a lowercase country",
            order(&|b| b["shipping_address"]["country"] = json!("gb")),
            "shipping_address.country",
        ),
        (
            "an unassigned country",
            order(&|b| b["shipping_address"]["country"] = json!("ZZ")),
            "shipping_address.country",
        ),
        (
            "a SKU with a space",
            order(&|b| b["lines"][0]["sku"] = json!(format!(" {sku}"))),
            "lines[0].sku",
        ),
        (
            "a name over 100 characters once its spaces count",
            order(&|b| b["shipping_address"]["name"] = json!(format!("{} ", "n".repeat(100)))),
            "shipping_address.name",
        ),
        (
            "a line break in a city",
            order(&|b| b["shipping_address"]["city"] = json!("Lon\ndon")),
            "shipping_address.city",
        ),
    ];
    for (why, body, field) in cases {
        let (status, problem) = raw(
            &app,
            &token,
            post.clone(),
            "/api/orders",
            "application/json",
            &body,
        )
        .await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{why}: {problem}");
        assert_eq!(fields(&problem), [field], "{why}");
    }
    // A whole number written with a fraction is still a whole number, as JSON Schema counts.
    let (status, placed) = raw(
        &app,
        &token,
        post.clone(),
        "/api/orders",
        "application/json",
        &order(&|b| b["lines"][0]["quantity"] = json!(2.0)),
    )
    .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{placed}");
    assert_eq!(
        my_orders(&app, &token).await,
        1,
        "only the good order is written"
    );

    for (query, field) in [
        ("/api/orders?status=", "status"),
        ("/api/orders?cursor=", "cursor"),
        (
            &*format!(
                "/api/orders/{}?min_version=1&wait_ms=30001",
                placed["order_id"].as_str().unwrap()
            ),
            "wait_ms",
        ),
        (
            &*format!(
                "/api/orders/{}?at_version=0",
                placed["order_id"].as_str().unwrap()
            ),
            "at_version",
        ),
    ] {
        let answer = app.get(&token, query).await;
        assert_eq!(answer.status(), StatusCode::UNPROCESSABLE_ENTITY, "{query}");
        let problem: Value = answer.json().await.unwrap();
        assert_eq!(fields(&problem), [field], "{query}");
    }
    let (status, problem) = raw(
        &app,
        &token,
        reqwest::Method::PUT,
        "/api/installations/.hidden",
        "application/json",
        &json!({"platform": "fcmv1", "push_channel": "token\nsecond line"}).to_string(),
    )
    .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{problem}");
    assert_eq!(fields(&problem), ["installation_id", "push_channel"]);
    app.stop().await;
}

#[tokio::test]
async fn a_traceparent_that_is_not_w3c_is_ignored() {
    let app = spawn_app().await;
    let sku = unique_sku("TRACE");
    app.list_product(&sku, 100, 10).await;
    let token = app.new_customer().await;
    let valid = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    let mut stored = Vec::new();
    for traceparent in [
        valid,
        "not-a-traceparent",
        "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
        "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01\"><script>",
    ] {
        let response = app
            .client
            .post(app.url("/api/orders"))
            .bearer_auth(&token)
            .header("traceparent", traceparent)
            .json(&order_body(&[(&sku, 1)]))
            .send()
            .await
            .unwrap();
        assert_eq!(
            response.status(),
            StatusCode::ACCEPTED,
            "{traceparent}: the order is not refused"
        );
        let order: Value = response.json().await.unwrap();
        let events: Value = app
            .get(
                &token,
                &format!("/api/orders/{}/events", order["order_id"].as_str().unwrap()),
            )
            .await
            .json()
            .await
            .unwrap();
        stored.push(events[0]["metadata"]["traceparent"].clone());
    }
    assert_eq!(stored[0], valid);
    assert!(stored[1..].iter().all(Value::is_null), "{stored:?}");
    app.stop().await;
}

/// A stream holding an event this build cannot read is broken on our side: the API answers
/// 500 `internal`, without a Retry-After, and not 503 "retry shortly", which would have the
/// client retry forever. An engine outage stays a 503 (`edge` and `system` test those).
#[tokio::test]
async fn a_stream_this_build_cannot_read_is_a_500_not_retry_shortly() {
    let app = spawn_app().await;
    let operator = app.token("olga", "operator").await;
    let order = Uuid::new_v4();
    let unreadable = domain::NewEvent {
        event_id: Uuid::now_v7(),
        event_type: "OrderPlaced".into(),
        schema_version: 1,
        occurred_at: chrono::Utc::now(),
        payload: json!({ "not": "an order" }),
        metadata: domain::EventMetadata::default(),
    };
    app.hooks
        .store
        .append(&format!("order-{order}"), "order", 0, vec![unreadable])
        .await
        .unwrap();

    let response = app
        .post(
            &operator,
            &format!("/api/orders/{order}/ship"),
            &json!({ "carrier": "DHL", "tracking": "JD1" }),
        )
        .await;

    assert_eq!(response.status(), StatusCode::INTERNAL_SERVER_ERROR);
    assert!(response.headers().get("retry-after").is_none());
    let problem: Value = response.json().await.unwrap();
    assert_eq!(problem["code"], "internal", "{problem}");
    assert!(
        !problem["detail"].as_str().unwrap().contains("an order"),
        "the data stays in the log: {problem}"
    );
    app.stop().await;
}
