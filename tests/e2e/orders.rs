//! An order's life through the HTTP API, on the embedded engines, as a client sees it.

use reqwest::StatusCode;
use serde_json::{Value, json};
use uuid::Uuid;

use eventlog::conformance::whole_log;
use orderflow_tests::{eventually, order_body, spawn_app, unique_sku};

#[tokio::test]
async fn a_placed_order_is_confirmed_and_its_history_is_readable() {
    let app = spawn_app().await;
    let sku = unique_sku("TEA");
    app.list_product(&sku, 450, 10).await;
    let token = app.new_customer().await;

    let response = app.place(&token, "first", &order_body(&[(&sku, 3)])).await;

    assert_eq!(response.status(), StatusCode::ACCEPTED);
    let location = response.headers()["location"].to_str().unwrap().to_owned();
    let accepted: Value = response.json().await.unwrap();
    assert_eq!(accepted["status"], "placed");
    assert_eq!(accepted["version"], 1);
    let order_id = accepted["order_id"].as_str().unwrap();
    assert_eq!(location, format!("/api/orders/{order_id}"));

    // Read-your-writes: wait for the processor's decision (version 2).
    let response = app
        .get(&token, &format!("{location}?min_version=2&wait_ms=5000"))
        .await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.headers()["etag"], "\"2\"");
    let view: Value = response.json().await.unwrap();
    assert_eq!(view["status"], "confirmed");
    assert_eq!(view["total"], 1350);
    assert_eq!(view["currency"], "EUR");
    assert_eq!(
        view["lines"],
        json!([{"sku": sku, "quantity": 3, "unit_price": 450}])
    );
    let history: Vec<&str> = view["history"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h["status"].as_str().unwrap())
        .collect();
    assert_eq!(history, ["placed", "confirmed"]);
    app.wait_for_available(&sku, 7).await;

    let events: Value = app
        .get(&token, &format!("{location}/events"))
        .await
        .json()
        .await
        .unwrap();
    let types: Vec<&str> = events
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["event_type"].as_str().unwrap())
        .collect();
    assert_eq!(types, ["OrderPlaced", "OrderConfirmed"]);
    assert_eq!(events[0]["schema_version"], 1);
    assert_eq!(events[0]["metadata"]["command_id"], "first");
    assert_eq!(events[1]["metadata"]["actor"], "service:order-processor");

    let unchanged = app
        .client
        .get(app.url(&location))
        .bearer_auth(&token)
        .header("If-None-Match", "W/\"2\"")
        .send()
        .await
        .unwrap();
    assert_eq!(
        unchanged.status(),
        StatusCode::NOT_MODIFIED,
        "a weak ETag matches too"
    );
    let lowercase_scheme = app
        .client
        .get(app.url(&location))
        .header("authorization", format!("bearer {token}"))
        .send()
        .await
        .unwrap();
    assert_eq!(lowercase_scheme.status(), StatusCode::OK);

    let mine: Value = app.get(&token, "/api/orders").await.json().await.unwrap();
    assert_eq!(mine["items"].as_array().unwrap().len(), 1);
    assert_eq!(mine["items"][0]["order_id"], order_id);
}

#[tokio::test]
async fn an_order_for_more_than_the_stock_is_rejected_out_of_stock() {
    let app = spawn_app().await;
    let (scarce, plenty) = (unique_sku("RARE"), unique_sku("COMMON"));
    app.list_product(&scarce, 100, 1).await;
    app.list_product(&plenty, 100, 10).await;
    let token = app.new_customer().await;

    let order_id = app.place_ok(&token, &[(&plenty, 2), (&scarce, 2)]).await;

    let view = app.settled(&token, &order_id).await;
    assert_eq!(view["status"], "rejected");
    assert_eq!(view["reason"], "out_of_stock");
    // The line that did get stock gave it back.
    app.wait_for_available(&plenty, 10).await;
    app.wait_for_available(&scarce, 1).await;
}

#[tokio::test]
async fn an_order_over_the_sandbox_limit_is_rejected_payment_declined() {
    let app = spawn_app().await;
    let sku = unique_sku("GOLD");
    app.list_product(&sku, 60_000, 5).await;
    let token = app.new_customer().await;

    let order_id = app.place_ok(&token, &[(&sku, 2)]).await;

    let view = app.settled(&token, &order_id).await;
    assert_eq!(view["status"], "rejected");
    assert_eq!(view["reason"], "payment_declined");
    app.wait_for_available(&sku, 5).await;
    assert_eq!(app.hooks.payments.captured(), 0);
}

#[tokio::test]
async fn cancelling_a_confirmed_order_releases_its_stock_and_refunds() {
    let app = spawn_app().await;
    let sku = unique_sku("MUG");
    app.list_product(&sku, 1500, 4).await;
    let token = app.new_customer().await;
    let order_id = app.place_ok(&token, &[(&sku, 3)]).await;
    assert_eq!(app.settled(&token, &order_id).await["status"], "confirmed");
    app.wait_for_available(&sku, 1).await;

    let response = app
        .post(
            &token,
            &format!("/api/orders/{order_id}/cancel"),
            &json!({"reason": "changed my mind"}),
        )
        .await;

    assert_eq!(response.status(), StatusCode::ACCEPTED);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["version"], 3);
    let view = app
        .wait_for(&token, &order_id, |v| v["status"] == "cancelled")
        .await;
    assert_eq!(view["reason"], "changed my mind");
    app.wait_for_available(&sku, 4).await;
    eventually("the payment being refunded", || async {
        match app.hooks.payments.refunded() {
            0 => Err("no refund".to_owned()),
            _ => Ok(()),
        }
    })
    .await;
}

#[tokio::test]
async fn operators_ship_and_deliver_and_a_shipped_order_cannot_be_cancelled() {
    let app = spawn_app().await;
    let sku = unique_sku("KETTLE");
    app.list_product(&sku, 4999, 2).await;
    let customer = app.new_customer().await;
    let operator = app.token("olga", "operator").await;
    let order_id = app.place_ok(&customer, &[(&sku, 1)]).await;
    assert_eq!(
        app.settled(&customer, &order_id).await["status"],
        "confirmed"
    );
    let ship = json!({"carrier": "DHL", "tracking_number": "JD0001"});

    let by_customer = app
        .post(&customer, &format!("/api/orders/{order_id}/ship"), &ship)
        .await;
    assert_eq!(by_customer.status(), StatusCode::FORBIDDEN);
    let shipped = app
        .post(&operator, &format!("/api/orders/{order_id}/ship"), &ship)
        .await;
    assert_eq!(shipped.status(), StatusCode::ACCEPTED);

    let cancel = app
        .post(
            &customer,
            &format!("/api/orders/{order_id}/cancel"),
            &json!({}),
        )
        .await;
    assert_eq!(cancel.status(), StatusCode::CONFLICT);
    let problem: Value = cancel.json().await.unwrap();
    assert_eq!(problem["code"], "cancel_after_shipment");

    let delivered = app
        .post(
            &operator,
            &format!("/api/orders/{order_id}/deliver"),
            &json!({}),
        )
        .await;
    assert_eq!(delivered.status(), StatusCode::ACCEPTED);
    let view = app
        .wait_for(&customer, &order_id, |v| v["status"] == "delivered")
        .await;
    assert_eq!(view["tracking_number"], "JD0001");
    assert_eq!(view["tracking"], "JD0001", "the first contract's name too");
    assert_eq!(view["carrier"], "DHL");
    // Shipping took the unit off hand for good (and out of the reservations).
    eventually("the shipped unit leaving the stock", || async {
        let item = app.catalog_item(&sku).await;
        match (item["on_hand"].as_u64(), item["reserved"].as_u64()) {
            (Some(1), Some(0)) => Ok(()),
            _ => Err(item.to_string()),
        }
    })
    .await;
}

#[tokio::test]
async fn shipping_an_unconfirmed_order_is_a_conflict() {
    let app = spawn_app().await;
    let sku = unique_sku("RARE");
    app.list_product(&sku, 100, 0).await;
    let customer = app.new_customer().await;
    let operator = app.token("olga", "operator").await;
    let order_id = app.place_ok(&customer, &[(&sku, 1)]).await;
    assert_eq!(
        app.settled(&customer, &order_id).await["status"],
        "rejected"
    );

    let response = app
        .post(
            &operator,
            &format!("/api/orders/{order_id}/ship"),
            &json!({"carrier": "DHL", "tracking": "1"}),
        )
        .await;

    assert_eq!(response.status(), StatusCode::CONFLICT);
    assert_eq!(
        response.headers()["content-type"],
        "application/problem+json"
    );
}

#[tokio::test]
async fn a_retry_with_the_same_key_gets_the_same_answer_and_another_body_a_conflict() {
    let app = spawn_app().await;
    let sku = unique_sku("TEA");
    app.list_product(&sku, 450, 10).await;
    let token = app.new_customer().await;
    let key = Uuid::new_v4().to_string();

    let first = app.place(&token, &key, &order_body(&[(&sku, 1)])).await;
    assert_eq!(first.status(), StatusCode::ACCEPTED);
    let first: Value = first.json().await.unwrap();
    let order_id = first["order_id"].as_str().unwrap().to_owned();
    app.settled(&token, &order_id).await;

    let retry = app.place(&token, &key, &order_body(&[(&sku, 1)])).await;
    assert_eq!(retry.status(), StatusCode::ACCEPTED);
    assert_eq!(retry.json::<Value>().await.unwrap(), first);

    let other = app.place(&token, &key, &order_body(&[(&sku, 2)])).await;
    assert_eq!(other.status(), StatusCode::CONFLICT);
    assert_eq!(other.headers()["content-type"], "application/problem+json");
    assert_eq!(
        other.json::<Value>().await.unwrap()["code"],
        "idempotency_key_reused"
    );

    let mine: Value = app.get(&token, "/api/orders").await.json().await.unwrap();
    assert_eq!(
        mine["items"].as_array().unwrap().len(),
        1,
        "one order, not three"
    );
    app.wait_for_available(&sku, 9).await;
    // The same key from another customer is another order.
    let someone_else = app.new_customer().await;
    let theirs = app
        .place(&someone_else, &key, &order_body(&[(&sku, 1)]))
        .await;
    assert_ne!(
        theirs.json::<Value>().await.unwrap()["order_id"],
        first["order_id"]
    );
}

#[tokio::test]
async fn another_customers_order_is_not_found() {
    let app = spawn_app().await;
    let sku = unique_sku("TEA");
    app.list_product(&sku, 450, 10).await;
    let owner = app.new_customer().await;
    let stranger = app.new_customer().await;
    let order_id = app.place_ok(&owner, &[(&sku, 1)]).await;
    app.settled(&owner, &order_id).await;

    for path in [
        format!("/api/orders/{order_id}"),
        format!("/api/orders/{order_id}/events"),
    ] {
        let response = app.get(&stranger, &path).await;
        assert_eq!(response.status(), StatusCode::NOT_FOUND, "{path}");
        assert_eq!(
            response.headers()["content-type"],
            "application/problem+json"
        );
    }
    let cancel = app
        .post(
            &stranger,
            &format!("/api/orders/{order_id}/cancel"),
            &json!({}),
        )
        .await;
    assert_eq!(cancel.status(), StatusCode::NOT_FOUND);
    let theirs: Value = app
        .get(&stranger, "/api/orders")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(theirs["items"], json!([]));
    // Staff see it.
    let analyst = app.token("ann", "analyst").await;
    assert_eq!(
        app.get(&analyst, &format!("/api/orders/{order_id}"))
            .await
            .status(),
        StatusCode::OK
    );
    assert_eq!(
        app.get(&owner, "/api/orders/not-a-uuid").await.status(),
        StatusCode::NOT_FOUND
    );
}

#[tokio::test]
async fn bad_requests_get_problem_details_and_write_nothing() {
    let app = spawn_app().await;
    let token = app.new_customer().await;
    let log_before = whole_log(&app.hooks.store).await;
    let too_many: Vec<(String, i64)> = (0..101).map(|i| (format!("SKU-{i}"), 1)).collect();
    let too_many: Vec<(&str, i64)> = too_many.iter().map(|(s, q)| (s.as_str(), *q)).collect();
    let cases = [
        (json!({}), vec!["lines", "shipping_address"]),
        (
            json!({"lines": [{"sku": "TEA-001", "quantity": 0}, {"quantity": 2}, {"sku": "bad sku", "quantity": 1001}],
                   "shipping_address": {"name": "", "line1": "x", "city": "y", "postal_code": "1", "country": "Germany"}}),
            vec![
                "lines[0].quantity",
                "lines[1].sku",
                "lines[2].sku",
                "lines[2].quantity",
                "shipping_address.name",
                "shipping_address.country",
            ],
        ),
        (order_body(&[("NOPE-404", 1)]), vec!["lines[0].sku"]),
        (
            order_body(&[("TEA-001", 1), ("TEA-001", 2)]),
            vec!["lines[1].sku"],
        ),
        (order_body(&too_many), vec!["lines"]),
        (
            json!({"lines": [{"sku": "TEA-001", "quantity": "two"}, {"sku": 7, "quantity": 1.5}],
                   "shipping_address": {"name": 1, "line1": "x", "city": "y", "postal_code": "1", "country": "ZZ"}}),
            vec![
                "lines[0].quantity",
                "lines[1].sku",
                "lines[1].quantity",
                "shipping_address.name",
                "shipping_address.country",
            ],
        ),
        (
            json!({"lines": "TEA-001", "shipping_address": []}),
            vec!["lines", "shipping_address"],
        ),
        (json!([1, 2]), vec!["body"]),
    ];

    for (body, fields) in cases {
        let response = app.place(&token, &Uuid::new_v4().to_string(), &body).await;
        assert_eq!(
            response.status(),
            StatusCode::UNPROCESSABLE_ENTITY,
            "{body}"
        );
        assert_eq!(
            response.headers()["content-type"],
            "application/problem+json"
        );
        let problem: Value = response.json().await.unwrap();
        assert_eq!(problem["status"], 422);
        assert_eq!(problem["code"], "validation_failed");
        let got: Vec<&str> = problem["errors"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["field"].as_str().unwrap())
            .collect();
        assert_eq!(got, fields, "{body}");
    }

    let malformed = app
        .client
        .post(app.url("/api/orders"))
        .bearer_auth(&token)
        .header("content-type", "application/json")
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(malformed.status(), StatusCode::BAD_REQUEST);
    let too_big = app
        .client
        .post(app.url("/api/orders"))
        .bearer_auth(&token)
        .header("content-type", "application/json")
        .body(format!("{{\"pad\": \"{}\"}}", "x".repeat(100 * 1024)))
        .send()
        .await
        .unwrap();
    assert_eq!(too_big.status(), StatusCode::PAYLOAD_TOO_LARGE);
    let long_key = app
        .place(&token, &"k".repeat(256), &order_body(&[("TEA-001", 1)]))
        .await;
    assert_eq!(long_key.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let anonymous = app
        .client
        .post(app.url("/api/orders"))
        .json(&order_body(&[("TEA-001", 1)]))
        .send()
        .await
        .unwrap();
    assert_eq!(anonymous.status(), StatusCode::UNAUTHORIZED);
    let forged = app
        .place("not.a.token", "k", &order_body(&[("TEA-001", 1)]))
        .await;
    assert_eq!(forged.status(), StatusCode::UNAUTHORIZED);

    assert_eq!(
        whole_log(&app.hooks.store).await,
        log_before,
        "nothing was written"
    );
}

#[tokio::test]
async fn customers_list_their_orders_newest_first_page_by_page() {
    let app = spawn_app().await;
    let sku = unique_sku("TEA");
    app.list_product(&sku, 100, 100).await;
    let token = app.new_customer().await;
    let mut placed = Vec::new();
    for _ in 0..5 {
        placed.push(app.place_ok(&token, &[(&sku, 1)]).await);
    }
    for id in &placed {
        app.settled(&token, id).await;
    }

    let first: Value = app
        .get(&token, "/api/orders?limit=3")
        .await
        .json()
        .await
        .unwrap();
    let cursor = first["next_cursor"]
        .as_str()
        .expect("a next page")
        .to_owned();
    let second: Value = app
        .get(&token, &format!("/api/orders?limit=3&cursor={cursor}"))
        .await
        .json()
        .await
        .unwrap();

    let ids: Vec<&str> = first["items"]
        .as_array()
        .unwrap()
        .iter()
        .chain(second["items"].as_array().unwrap())
        .map(|o| o["order_id"].as_str().unwrap())
        .collect();
    let newest_first: Vec<&str> = placed.iter().rev().map(String::as_str).collect();
    assert_eq!(ids, newest_first);
    assert!(second["next_cursor"].is_null());
    let confirmed: Value = app
        .get(&token, "/api/orders?status=confirmed")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(confirmed["items"].as_array().unwrap().len(), 5);
    let rejected: Value = app
        .get(&token, "/api/orders?status=rejected")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(rejected["items"], json!([]));
    let exactly_full: Value = app
        .get(&token, "/api/orders?limit=5")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(exactly_full["items"].as_array().unwrap().len(), 5);
    assert!(
        exactly_full["next_cursor"].is_null(),
        "no cursor to an empty page"
    );
    assert_eq!(
        app.get(&token, "/api/orders?cursor=garbage").await.status(),
        StatusCode::UNPROCESSABLE_ENTITY
    );
    assert_eq!(
        app.get(&token, "/api/orders?status=lost").await.status(),
        StatusCode::UNPROCESSABLE_ENTITY
    );
    assert_eq!(
        app.get(&token, "/api/orders?limit=0").await.status(),
        StatusCode::UNPROCESSABLE_ENTITY
    );
}

#[tokio::test]
async fn operators_restock_and_customers_cannot() {
    let app = spawn_app().await;
    let sku = unique_sku("BEANS");
    app.list_product(&sku, 999, 0).await;
    let operator = app.token("olga", "operator").await;
    let customer = app.new_customer().await;
    let path = format!("/api/catalog/{sku}/restock");

    assert_eq!(
        app.post(&customer, &path, &json!({"quantity": 5}))
            .await
            .status(),
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        app.post(&operator, &path, &json!({"quantity": 0}))
            .await
            .status(),
        StatusCode::UNPROCESSABLE_ENTITY
    );
    assert_eq!(
        app.post(
            &operator,
            "/api/catalog/NOPE-1/restock",
            &json!({"quantity": 5})
        )
        .await
        .status(),
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        app.post(&operator, &path, &json!({"quantity": 5}))
            .await
            .status(),
        StatusCode::ACCEPTED
    );
    app.wait_for_available(&sku, 5).await;
}

#[tokio::test]
async fn the_owner_and_analysts_see_an_order_as_it_was() {
    let app = spawn_app().await;
    let sku = unique_sku("TEA");
    app.list_product(&sku, 450, 10).await;
    let owner = app.new_customer().await;
    let operator = app.token("olga", "operator").await;
    let analyst = app.token("ann", "analyst").await;
    let before_placing = chrono::Utc::now();
    let order_id = app.place_ok(&owner, &[(&sku, 1)]).await;
    let confirmed = app.settled(&owner, &order_id).await;
    let ship = json!({"carrier": "DHL", "tracking": "T1"});
    app.post(&operator, &format!("/api/orders/{order_id}/ship"), &ship)
        .await;
    let shipped = app
        .wait_for(&owner, &order_id, |v| v["status"] == "shipped")
        .await;
    let path = format!("/api/orders/{order_id}");
    let at = |query: String| {
        let path = format!("{path}?{query}");
        let (app, analyst) = (&app, &analyst);
        async move { app.get(analyst, &path).await }
    };

    let v1: Value = at("at_version=1".into()).await.json().await.unwrap();
    assert_eq!(
        (v1["status"].as_str(), v1["version"].as_u64()),
        (Some("placed"), Some(1))
    );
    let v2: Value = at("at_version=2".into()).await.json().await.unwrap();
    assert_eq!(v2, confirmed);
    let confirmed_at = confirmed["updated_at"].as_str().unwrap();
    let as_of: Value = app
        .get(&owner, &format!("{path}?as_of={}", urlencode(confirmed_at)))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(as_of, confirmed);
    let now: Value = at(format!(
        "as_of={}",
        urlencode(&chrono::Utc::now().to_rfc3339())
    ))
    .await
    .json()
    .await
    .unwrap();
    assert_eq!(now, shipped);

    let before = at(format!("as_of={}", urlencode(&before_placing.to_rfc3339()))).await;
    assert_eq!(
        before.status(),
        StatusCode::NOT_FOUND,
        "the order did not exist yet"
    );
    assert_eq!(
        at("at_version=0".into()).await.status(),
        StatusCode::UNPROCESSABLE_ENTITY
    );
    assert_eq!(
        at("as_of=yesterday".into()).await.status(),
        StatusCode::UNPROCESSABLE_ENTITY
    );
    assert_eq!(
        at("as_of=2026-01-01T00:00:00Z&at_version=1".into())
            .await
            .status(),
        StatusCode::UNPROCESSABLE_ENTITY
    );
    assert_eq!(
        app.get(&operator, &format!("{path}?at_version=1"))
            .await
            .status(),
        StatusCode::FORBIDDEN
    );
    let stranger = app.new_customer().await;
    assert_eq!(
        app.get(&stranger, &format!("{path}?at_version=1"))
            .await
            .status(),
        StatusCode::NOT_FOUND
    );
}

fn urlencode(raw: &str) -> String {
    raw.replace('+', "%2B").replace(':', "%3A")
}
