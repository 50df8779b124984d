//! `GET /api/analytics/summary`: the analytics projection as analysts read it, following the
//! log; rebuilt by a replay of it alone to the same numbers; analysts only.

use std::time::Duration;

use projections::Projection;
use projections::projection::current_generation;
use projections::replay::replay;
use reqwest::StatusCode;
use serde_json::{Value, json};

use orderflow_tests::{eventually, spawn_app};

/// The summary once it has folded the whole log (`lag` 0) and counts `orders` orders.
async fn caught_up(app: &orderflow_tests::TestApp, analyst: &str, orders: u64) -> Value {
    eventually("the analytics catching up with the log", || async {
        let summary: Value = app
            .get(analyst, "/api/analytics/summary")
            .await
            .json()
            .await
            .unwrap();
        match (summary["lag"].as_u64(), summary["orders"].as_u64()) {
            (Some(0), Some(n)) if n == orders => Ok(summary),
            _ => Err(summary.to_string()),
        }
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_summary_counts_statuses_revenue_and_skus_as_the_orders_went() {
    let app = spawn_app().await;
    let orders = app.settled_orders("shopper").await;
    let analyst = app.token("ann", "analyst").await;

    let summary = caught_up(&app, &analyst, 3).await;

    let per_status = &summary["orders_per_status"];
    assert_eq!(
        per_status,
        &json!({"placed": 0, "confirmed": 1, "rejected": 1, "cancelled": 1,
                "shipped": 0, "delivered": 0})
    );
    // Confirmed: 2 x 450; confirmed then cancelled: 1 x 450; rejected: never booked.
    let days = summary["revenue_per_day"].as_array().unwrap();
    let sum = |field: &str| days.iter().map(|d| d[field].as_u64().unwrap()).sum::<u64>();
    assert_eq!(
        (
            sum("orders"),
            sum("gross"),
            sum("cancelled_orders"),
            sum("refunded"),
            sum("net")
        ),
        (2, 1350, 1, 450, 900)
    );
    assert!(days.iter().all(|d| d["currency"] == "EUR"));
    assert_eq!(
        summary["top_skus"],
        json!([{"sku": orders.sku, "units": 2, "orders": 1, "revenue": 900, "currency": "EUR"}])
    );
    let today = chrono::Utc::now().date_naive().succ_opt().unwrap();
    let later: Value = app
        .get(&analyst, &format!("/api/analytics/summary?since={today}"))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(
        later["revenue_per_day"],
        json!([]),
        "no revenue after today"
    );
    assert_eq!(later["orders"], 3, "the day filter is for revenue only");

    // A shipment and a delivery move the confirmed order along.
    let operator = app.token("olga", "operator").await;
    let ship = json!({"carrier": "DHL", "tracking": "JD0001"});
    let shipped = app
        .post(
            &operator,
            &format!("/api/orders/{}/ship", orders.confirmed),
            &ship,
        )
        .await;
    assert!(shipped.status().is_success(), "{}", shipped.status());
    let moved = eventually("the shipment in the summary", || async {
        let summary: Value = app
            .get(&analyst, "/api/analytics/summary")
            .await
            .json()
            .await
            .unwrap();
        match summary["orders_per_status"]["shipped"].as_u64() {
            Some(1) => Ok(summary),
            _ => Err(summary["orders_per_status"].to_string()),
        }
    })
    .await;
    assert_eq!(moved["orders_per_status"]["confirmed"], 0);
    assert_eq!(
        moved["top_skus"][0]["units"], 2,
        "a shipped order is still sold"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replay_of_the_analytics_alone_rebuilds_the_same_numbers() {
    let app = spawn_app().await;
    app.settled_orders("shopper").await;
    let analyst = app.token("ann", "analyst").await;
    let live = caught_up(&app, &analyst, 3).await;
    let hooks = app.hooks.clone();

    let replayed = replay(
        hooks.store.clone(),
        hooks.views.clone(),
        &[Projection::Analytics],
        Duration::from_millis(500),
        &mut |_| {},
    )
    .await
    .expect("replay");

    assert_eq!(replayed.previous, vec![(Projection::Analytics, 0)]);
    let views = hooks.views.as_ref();
    assert_eq!(
        current_generation(views, Projection::Analytics)
            .await
            .unwrap(),
        1
    );
    assert_eq!(
        current_generation(views, Projection::Orders).await.unwrap(),
        0,
        "the order views are not touched"
    );
    app.following(Projection::Analytics, 1).await;
    let rebuilt = caught_up(&app, &analyst, 3).await;
    assert_eq!(
        rebuilt, live,
        "the replay folds the log to the same numbers"
    );
}

#[tokio::test]
async fn only_analysts_read_the_summary_and_bad_parameters_are_refused() {
    let app = spawn_app().await;
    let customer = app.token("cora", "customer").await;
    let operator = app.token("olga", "operator").await;
    let analyst = app.token("ann", "analyst").await;

    for token in [&customer, &operator] {
        let response = app.get(token, "/api/analytics/summary").await;
        assert_eq!(response.status(), StatusCode::FORBIDDEN);
    }
    for (query, field) in [
        ("top=0", "top"),
        ("top=101", "top"),
        ("since=2026-12-02&until=2026-12-01", "until"),
        ("since=yesterday", "query"),
    ] {
        let response = app
            .get(&analyst, &format!("/api/analytics/summary?{query}"))
            .await;
        assert_eq!(
            response.status(),
            StatusCode::UNPROCESSABLE_ENTITY,
            "{query}"
        );
        let problem: Value = response.json().await.unwrap();
        assert_eq!(problem["errors"][0]["field"], field, "{query}: {problem}");
    }
}
