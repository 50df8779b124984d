//! Schema evolution: `OrderShipped` is at schema version 2 (`tracking` became
//! `tracking_number`), and a store holds events as an older build wrote them.
//! `tests/fixtures/order-shipped-v1.jsonl` is one order's stream from that build (placed,
//! confirmed, shipped at version 1, delivered), loaded as it was written; every reader must take
//! it: the read model, time travel, the API's event list, `export` and `history`. The stored
//! events are never rewritten.

use chrono::{DateTime, Utc};
use domain::{NewEvent, RecordedEvent};
use projections::read_models::Cutoff;
use reqwest::StatusCode;
use serde_json::Value;
use services::export::{ExportOptions, Format};

use orderflow_tests::spawn_app;

const FIXTURE: &str = include_str!("../fixtures/order-shipped-v1.jsonl");

fn fixture() -> Vec<RecordedEvent> {
    FIXTURE
        .lines()
        .map(|line| serde_json::from_str(line).expect("a fixture event"))
        .collect()
}

#[tokio::test]
async fn version_1_events_are_read_in_the_current_shape_by_every_reader() {
    let app = spawn_app().await;
    let events = fixture();
    let stream = events[0].stream_id.clone();
    let order_id = stream.trim_start_matches("order-").to_owned();
    // The whole stream in one append: event by event, the running order processor could
    // confirm the order between the fixture's first and second event, and its confirmation
    // has the fixture's event id (the id is derived from the cause), so the fixture's own
    // confirmation would be taken as a duplicate and the stream would hold today's time.
    let written = events
        .iter()
        .map(|event| NewEvent {
            event_id: event.event_id,
            event_type: event.event_type.clone(),
            schema_version: event.schema_version,
            occurred_at: event.occurred_at,
            payload: event.payload.to_value(),
            metadata: event.metadata.clone(),
        })
        .collect();
    app.hooks
        .store
        .append(&stream, "order", 0, written)
        .await
        .expect("the fixture appends as it was written");
    let analyst = app.token("ann", "analyst").await;
    let between: DateTime<Utc> =
        events[1].occurred_at + (events[2].occurred_at - events[1].occurred_at) / 2;

    let now: Value = app
        .get(&analyst, &format!("/api/orders/{order_id}?min_version=4"))
        .await
        .json()
        .await
        .unwrap();
    let at_shipment: Value = app
        .get(&analyst, &format!("/api/orders/{order_id}?at_version=3"))
        .await
        .json()
        .await
        .unwrap();
    let before_shipment: Value = app
        .get(
            &analyst,
            &format!(
                "/api/orders/{order_id}?as_of={}",
                between.to_rfc3339_opts(chrono::SecondsFormat::Micros, true)
            ),
        )
        .await
        .json()
        .await
        .unwrap();
    let listed = app
        .get(&analyst, &format!("/api/orders/{order_id}/events"))
        .await;
    assert_eq!(listed.status(), StatusCode::OK);
    let listed: Value = listed.json().await.unwrap();

    assert_eq!(now["status"], "delivered");
    assert_eq!(now["tracking"], "JD0001", "the view reads the v1 shipment");
    assert_eq!(at_shipment["status"], "shipped");
    assert_eq!(at_shipment["tracking"], "JD0001");
    assert_eq!(before_shipment["status"], "confirmed");
    let shipped = &listed[2];
    assert_eq!(shipped["event_type"], "OrderShipped");
    assert_eq!(
        shipped["schema_version"], 2,
        "clients see the current shape"
    );
    assert_eq!(shipped["payload"]["tracking_number"], "JD0001");
    assert!(shipped["payload"].get("tracking").is_none());

    let out = tempfile::tempdir().unwrap();
    let file = out.path().join("events.jsonl");
    let options = ExportOptions {
        format: Format::Jsonl,
        since: None,
        until: None,
        types: vec!["OrderShipped".into()],
        output: Some(file.clone()),
    };
    services::export::export(app.hooks.store.as_ref(), &options)
        .await
        .expect("export");
    let exported: Vec<RecordedEvent> = std::fs::read_to_string(&file)
        .unwrap()
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect();
    assert_eq!(exported.len(), 1);
    assert_eq!(exported[0].schema_version, 2);
    assert_eq!(exported[0].payload.to_value()["tracking_number"], "JD0001");

    let history = services::history::history(
        app.hooks.store.as_ref(),
        order_id.parse().unwrap(),
        Some(Cutoff::Version(3)),
    )
    .await
    .expect("history");
    assert_eq!(
        history.state.map(|s| s.status),
        Some(domain::order::OrderStatus::Shipped)
    );
    assert_eq!(
        history.events[2].payload.to_value()["tracking_number"],
        "JD0001"
    );

    let stored = app.hooks.store.read_stream(&stream, 3).await.unwrap();
    assert_eq!(
        stored[0].schema_version, 1,
        "the stored event is never rewritten"
    );
    assert_eq!(stored[0].payload.to_value()["tracking"], "JD0001");
}
