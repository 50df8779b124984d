//! `GET /api/events`: the log for analysts, paged by cursor and filtered; other roles get 403.

use reqwest::StatusCode;
use serde_json::Value;

use eventlog::conformance::whole_log;
use orderflow_tests::spawn_app;

#[tokio::test]
async fn analysts_page_through_the_filtered_log_and_nobody_else_may() {
    let app = spawn_app().await;
    let orders = app.settled_orders("logreader").await;
    let analyst = app.token("ann", "analyst").await;
    let operator = app.token("olga", "operator").await;
    let log = whole_log(&app.hooks.store).await;

    let mut seen: Vec<String> = Vec::new();
    let mut path = "/api/events?limit=7".to_owned();
    loop {
        let page: Value = app.get(&analyst, &path).await.json().await.unwrap();
        let items = page["items"].as_array().unwrap();
        assert!(items.len() <= 7, "the limit caps a page");
        seen.extend(
            items
                .iter()
                .map(|e| e["event_id"].as_str().unwrap().to_owned()),
        );
        match page["next_cursor"].as_str() {
            Some(cursor) => path = format!("/api/events?limit=7&cursor={cursor}"),
            None => break,
        }
    }
    let expected: Vec<String> = log.iter().map(|e| e.event_id.to_string()).collect();
    assert_eq!(seen, expected, "every event once, in the log's order");

    let placed: Value = app
        .get(
            &analyst,
            "/api/events?type=OrderPlaced,OrderRejected&limit=500",
        )
        .await
        .json()
        .await
        .unwrap();
    let types: Vec<&str> = placed["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["event_type"].as_str().unwrap())
        .collect();
    assert_eq!(types.iter().filter(|t| **t == "OrderPlaced").count(), 3);
    assert_eq!(types.iter().filter(|t| **t == "OrderRejected").count(), 1);
    assert!(
        types
            .iter()
            .all(|t| ["OrderPlaced", "OrderRejected"].contains(t))
    );
    let one: Value = app
        .get(
            &analyst,
            &format!("/api/events?order_id={}", orders.cancelled),
        )
        .await
        .json()
        .await
        .unwrap();
    let versions: Vec<u64> = one["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["version"].as_u64().unwrap())
        .collect();
    assert_eq!(versions, [1, 2, 3], "placed, confirmed, cancelled");
    let future: Value = app
        .get(&analyst, "/api/events?since=2999-01-01T00:00:00Z")
        .await
        .json()
        .await
        .unwrap();
    assert!(future["items"].as_array().unwrap().is_empty());

    for bad in [
        "/api/events?limit=0",
        "/api/events?limit=501",
        "/api/events?since=2026-02-01T00:00:00Z&until=2026-01-01T00:00:00Z",
        "/api/events?since=yesterday",
        "/api/events?cursor=not-a-cursor",
    ] {
        let response = app.get(&analyst, bad).await;
        assert_eq!(response.status(), StatusCode::UNPROCESSABLE_ENTITY, "{bad}");
    }
    for token in [&orders.token, &operator] {
        let response = app.get(token, "/api/events").await;
        assert_eq!(response.status(), StatusCode::FORBIDDEN);
    }
    let anonymous = app.client.get(app.url("/api/events")).send().await.unwrap();
    assert_eq!(anonymous.status(), StatusCode::UNAUTHORIZED);
}
