//! `/api/dead-letters` on the embedded system: operators only, choices spelt out, a discard
//! needs a reason, and a re-driven letter goes back through its subscription (here it is still
//! poison, so it is parked again, with a newer time).

use std::time::Duration;

use orderflow_tests::{TestApp, eventually, spawn_app};
use reqwest::StatusCode;
use serde_json::{Value, json};

/// An event no handler can read, published straight to the topic: each of the three
/// subscriptions parks it after its attempts.
pub(crate) async fn poison(app: &TestApp) -> domain::RecordedEvent {
    let token = app.new_customer().await;
    let order = app.place_ok(&token, &[("TEA-001", 1)]).await;
    let mut event = app
        .hooks
        .store
        .read_stream(&format!("order-{order}"), 1)
        .await
        .unwrap()
        .remove(0);
    event.event_id = uuid::Uuid::now_v7();
    event.stream_id = format!("order-{}", uuid::Uuid::now_v7());
    event.payload = json!({"not": "an order"}).into();
    let receipt = app.hooks.bus.publish(vec![event.clone()]).await.unwrap();
    tokio::time::timeout(Duration::from_secs(30), receipt)
        .await
        .expect("the poison is settled")
        .unwrap();
    event
}

async fn call(app: &TestApp, token: &str, path: &str, body: Option<Value>) -> (StatusCode, Value) {
    let request = match body {
        Some(body) => app.client.post(app.url(path)).json(&body),
        None => app.client.get(app.url(path)),
    };
    let response = request.bearer_auth(token).send().await.unwrap();
    let status = response.status();
    (status, response.json().await.unwrap_or(Value::Null))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operators_list_redrive_and_discard_dead_letters() {
    let app = spawn_app().await;
    let event = poison(&app).await;
    let operator = app.token("ops", "operator").await;
    let id = event.event_id.to_string();

    for role in ["customer", "analyst"] {
        let token = app.token(&format!("not-ops-{role}"), role).await;
        for (path, body) in [
            ("/api/dead-letters", None),
            ("/api/dead-letters/redrive", Some(json!({"all": true}))),
            (
                "/api/dead-letters/discard",
                Some(json!({"all": true, "reason": "x"})),
            ),
        ] {
            let (status, problem) = call(&app, &token, path, body).await;
            assert_eq!(status, StatusCode::FORBIDDEN, "{role} {path}: {problem}");
        }
    }

    let (status, listed) = call(&app, &operator, "/api/dead-letters", None).await;
    assert_eq!(status, StatusCode::OK, "{listed}");
    assert_eq!(listed["total"], 3, "{listed}");
    let counts: Vec<(&str, u64)> = listed["subscriptions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            (
                c["subscription"].as_str().unwrap(),
                c["dead_letters"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        counts,
        [("order-processor", 1), ("projector", 1), ("notifier", 1)]
    );
    let first_parked = listed["items"][0]["dead_at"].as_str().unwrap().to_owned();
    for letter in listed["items"].as_array().unwrap() {
        assert_eq!(letter["event"]["event_id"], id.as_str());
        assert_eq!(
            letter["attempts"], 1,
            "an undecodable event is parked at its first attempt: no retry can mend it"
        );
        assert!(!letter["reason"].as_str().unwrap().is_empty(), "{letter}");
        assert!(letter["dead_at"].is_string(), "{letter}");
    }

    // Choices are spelt out.
    for (path, body, field) in [
        ("/api/dead-letters/redrive", json!({}), None),
        (
            "/api/dead-letters/redrive",
            json!({"all": false, "subscription": "payments"}),
            Some("subscription"),
        ),
        (
            "/api/dead-letters/redrive",
            json!({"all": false, "event_ids": [id], "reason": "x"}),
            None,
        ),
        (
            "/api/dead-letters/discard",
            json!({"all": false, "event_ids": [id]}),
            None,
        ),
        (
            "/api/dead-letters/discard",
            json!({"all": false, "event_ids": [id], "reason": "   "}),
            Some("reason"),
        ),
        (
            "/api/dead-letters/discard",
            json!({"all": false, "event_ids": [id], "reason": "x".repeat(501)}),
            Some("reason"),
        ),
    ] {
        let (status, problem) = call(&app, &operator, path, Some(body.clone())).await;
        assert_eq!(
            status,
            StatusCode::UNPROCESSABLE_ENTITY,
            "{body}: {problem}"
        );
        if let Some(field) = field {
            assert_eq!(problem["errors"][0]["field"], field, "{body}: {problem}");
        }
    }
    // all: false with nothing named selects nothing.
    let (status, none) = call(
        &app,
        &operator,
        "/api/dead-letters/redrive",
        Some(json!({"all": false})),
    )
    .await;
    assert_eq!((status, none["count"].as_u64()), (StatusCode::OK, Some(0)));
    let (_, unchanged) = call(&app, &operator, "/api/dead-letters", None).await;
    assert_eq!(unchanged["total"], 3, "a refused request changes nothing");

    let (status, discarded) = call(
        &app,
        &operator,
        "/api/dead-letters/discard",
        Some(json!({"all": false, "subscription": "projector", "event_ids": [id], "reason": "a test's poison"})),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{discarded}");
    assert_eq!(discarded["count"], 1);
    assert_eq!(discarded["items"][0]["subscription"], "projector");

    let (status, redriven) = call(
        &app,
        &operator,
        "/api/dead-letters/redrive",
        Some(json!({"all": false, "subscription": "notifier", "event_ids": [id]})),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{redriven}");
    assert_eq!(redriven["count"], 1);
    // Still poison: the notifier spends a fresh budget on it and parks it again, later.
    let again = eventually("the re-driven poison is parked again", || async {
        let (_, listed) = call(
            &app,
            &operator,
            "/api/dead-letters?subscription=notifier",
            None,
        )
        .await;
        match listed["items"].as_array().and_then(|items| items.first()) {
            Some(letter) => Ok(letter.clone()),
            None => Err(listed.to_string()),
        }
    })
    .await;
    assert!(
        again["dead_at"].as_str().unwrap() >= first_parked.as_str(),
        "{again}"
    );
    let (_, listed) = call(&app, &operator, "/api/dead-letters", None).await;
    assert_eq!(
        listed["total"], 2,
        "the processor's and the notifier's: {listed}"
    );
    let (_, filtered) = call(
        &app,
        &operator,
        &format!("/api/dead-letters?event_id={id}&subscription=order-processor"),
        None,
    )
    .await;
    assert_eq!(filtered["total"], 1, "{filtered}");

    let (status, none) = call(
        &app,
        &operator,
        "/api/dead-letters/redrive",
        Some(json!({"all": false, "event_type": "NoSuchEvent"})),
    )
    .await;
    assert_eq!((status, none["count"].as_u64()), (StatusCode::OK, Some(0)));
    let (status, all) = call(
        &app,
        &operator,
        "/api/dead-letters/discard",
        Some(json!({"all": true, "reason": "cleaning up after the test"})),
    )
    .await;
    assert_eq!(
        (status, all["count"].as_u64()),
        (StatusCode::OK, Some(2)),
        "{all}"
    );
    assert_eq!(app.hooks.bus.dead_letters().await.unwrap(), vec![]);
}
