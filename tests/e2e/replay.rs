//! Replay: the read models rebuilt from the whole log into a new generation, readers switched
//! at once, the old generation deleted; views equal to the live ones, and orders placed while
//! it runs are not lost. (In-process on SQLite and the in-memory cache; the distributed test
//! runs `orderflow replay` against PostgreSQL and Redis.)

use std::time::Duration;

use projections::Projection;
use projections::projection::current_generation;
use projections::replay::replay;
use serde_json::Value;

use orderflow_tests::{eventually, spawn_app};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replay_rebuilds_views_equal_to_the_live_ones_and_loses_no_live_order() {
    let app = spawn_app().await;
    let orders = app.settled_orders("replayer").await;
    let analyst = app.token("ann", "analyst").await;
    let mut before = Vec::new();
    for id in orders.ids() {
        before.push(app.view(&orders.token, id).await);
    }
    let list_before: Value = app
        .get(&analyst, "/api/orders?limit=100")
        .await
        .json()
        .await
        .unwrap();
    let catalog_before: Value = app
        .get(&analyst, "/api/catalog")
        .await
        .json()
        .await
        .unwrap();
    let hooks = app.hooks.clone();

    // Orders keep coming while the replay builds, switches and follows the log.
    let live = {
        let (app_url, client, token) = (
            app.address.clone(),
            app.client.clone(),
            orders.token.clone(),
        );
        let sku = orders.sku.clone();
        tokio::spawn(async move {
            let mut ids = Vec::new();
            for i in 0..20 {
                let body = orderflow_tests::order_body(&[(&sku, 1 + i % 2)]);
                let response = client
                    .post(format!("{app_url}/api/orders"))
                    .bearer_auth(&token)
                    .header("Idempotency-Key", format!("live-{i}"))
                    .json(&body)
                    .send()
                    .await
                    .unwrap();
                let placed: Value = response.json().await.unwrap();
                ids.push(placed["order_id"].as_str().unwrap().to_owned());
                tokio::time::sleep(Duration::from_millis(60)).await;
            }
            ids
        })
    };
    let mut folded = 0;
    let replayed = replay(
        hooks.store.clone(),
        hooks.views.clone(),
        &Projection::ALL,
        Duration::from_secs(2),
        &mut |n| folded += n,
    )
    .await
    .expect("replay");
    let live_ids = live.await.unwrap();

    let every_projection_from_0: Vec<_> = Projection::ALL.iter().map(|p| (*p, 0)).collect();
    assert_eq!(replayed.previous, every_projection_from_0);
    assert_eq!(replayed.generation, 1);
    assert_eq!(folded, replayed.events);
    assert!(replayed.events > 0 && replayed.deleted > 0, "{replayed:?}");
    for projection in Projection::ALL {
        let generation = current_generation(hooks.views.as_ref(), projection).await;
        assert_eq!(generation.unwrap(), 1, "{projection} switched");
    }
    let first = &orders.ids()[0];
    assert_eq!(
        hooks.views.get(&format!("order:{first}")).await.unwrap(),
        None,
        "the old generation is gone"
    );
    app.following(Projection::Orders, 1).await;
    for (id, view) in orders.ids().into_iter().zip(&before) {
        assert_eq!(
            &app.view(&orders.token, id).await,
            view,
            "{id} rebuilt as it was"
        );
    }
    let catalog_after: Value = app
        .get(&analyst, "/api/catalog")
        .await
        .json()
        .await
        .unwrap();
    let rebuilt_skus: Vec<&Value> = catalog_after
        .as_array()
        .unwrap()
        .iter()
        .map(|i| &i["sku"])
        .collect();
    for item in catalog_before.as_array().unwrap() {
        assert!(
            rebuilt_skus.contains(&&item["sku"]),
            "{} is in the rebuilt catalog",
            item["sku"]
        );
    }
    // Every order placed during the replay is decided in the new generation, as its events say.
    for id in &live_ids {
        let view = app.settled(&orders.token, id).await;
        let version = view["version"].as_u64().unwrap();
        let folded: Value = app
            .get(&analyst, &format!("/api/orders/{id}?at_version={version}"))
            .await
            .json()
            .await
            .unwrap();
        assert_eq!(view, folded, "{id} is the fold of its events");
    }
    let list_after: Value = app
        .get(&analyst, "/api/orders?limit=100")
        .await
        .json()
        .await
        .unwrap();
    let listed = list_after["items"].as_array().unwrap().len();
    let listed_before = list_before["items"].as_array().unwrap().len();
    assert_eq!(
        listed,
        listed_before + live_ids.len(),
        "every order is listed once"
    );
}

/// The window a replay must cover: a live projector that has not yet seen the switch writes an
/// event into the old generation. The replay's grace period folds it into the new one from the
/// log, so a reader of the new generation sees it. (The order's stream is the schema fixture's.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_event_the_live_projector_wrote_into_the_old_generation_reaches_the_new_one() {
    use std::sync::Arc;

    use domain::{NewEvent, RecordedEvent};
    use eventlog::EventStore;
    use projections::{Projector, ViewStore};

    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn EventStore> = Arc::new(
        infra::event_store::SqliteEventStore::open(&dir.path().join("events.db"))
            .await
            .unwrap(),
    );
    let views: Arc<dyn ViewStore> = Arc::new(projections::MemoryViewStore::new());
    let events: Vec<RecordedEvent> = include_str!("../fixtures/order-shipped-v1.jsonl")
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect();
    let live = Projector::new(store.clone(), views.clone());
    let append = |event: &RecordedEvent| {
        let (store, event) = (store.clone(), event.clone());
        async move {
            let new = NewEvent {
                event_id: event.event_id,
                event_type: event.event_type.clone(),
                schema_version: event.schema_version,
                occurred_at: event.occurred_at,
                payload: event.payload.to_value(),
                metadata: event.metadata.clone(),
            };
            let stored = store
                .append(&event.stream_id, "order", event.version - 1, vec![new])
                .await
                .unwrap();
            let recorded = store
                .read_stream(&event.stream_id, stored.version)
                .await
                .unwrap();
            recorded[0].clone()
        }
    };
    for event in &events[..2] {
        let recorded = append(event).await;
        live.handle(&recorded).await.unwrap();
    }

    let mut ignore = |_| {};
    let replaying = replay(
        store.clone(),
        views.clone(),
        &[Projection::Orders],
        Duration::from_millis(1500),
        &mut ignore,
    );
    let meanwhile = async {
        eventually("the replay switching readers", || async {
            match current_generation(views.as_ref(), Projection::Orders)
                .await
                .unwrap()
            {
                1 => Ok(()),
                g => Err(format!("generation {g}")),
            }
        })
        .await;
        assert_eq!(
            live.generation(Projection::Orders),
            0,
            "the live projector has not noticed yet"
        );
        let shipped = append(&events[2]).await;
        live.handle(&shipped).await.unwrap();
    };
    let (replayed, ()) = tokio::join!(replaying, meanwhile);
    replayed.expect("replay");

    let reader = Projector::new(store, views);
    reader.refresh_generation().await.unwrap();
    assert_eq!(reader.generation(Projection::Orders), 1);
    let order_id = events[0]
        .stream_id
        .trim_start_matches("order-")
        .parse()
        .unwrap();
    let reader = projections::ReadModels::new(std::sync::Arc::new(reader));
    let view = reader.order(order_id).await.unwrap().expect("the order");
    assert_eq!(
        view.status,
        domain::order::OrderStatus::Shipped,
        "the event written into the old generation is in the new"
    );
    assert_eq!(view.version, 3);
}

/// `POST /api/replays` as the analyst page starts one: 202 with where to follow it, one at a
/// time, progress until it succeeds, and the analytics switched to the new generation.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replay_started_over_http_reports_its_progress_until_it_succeeds() {
    let app = spawn_app().await;
    let orders = app.settled_orders("replayer").await;
    let analyst = app.token("ann", "analyst").await;
    let body = serde_json::json!({"projections": ["analytics"]});

    let started = app.post(&analyst, "/api/replays", &body).await;
    assert_eq!(started.status(), reqwest::StatusCode::ACCEPTED);
    let location = started.headers()["location"].to_str().unwrap().to_owned();
    let first: Value = started.json().await.unwrap();
    let again = app.post(&analyst, "/api/replays", &body).await;

    assert_eq!(first["state"], "running");
    assert_eq!(first["projections"], serde_json::json!(["analytics"]));
    assert_eq!(
        location,
        format!("/api/replays/{}", first["replay_id"].as_str().unwrap())
    );
    assert_eq!(
        again.status(),
        reqwest::StatusCode::CONFLICT,
        "one at a time"
    );
    let problem: Value = again.json().await.unwrap();
    assert_eq!(problem["code"], "replay_running");
    let done = eventually("the replay finishing", || async {
        let status: Value = app.get(&analyst, &location).await.json().await.unwrap();
        match status["state"].as_str() {
            Some("succeeded") => Ok(status),
            Some("failed") => panic!("the replay failed: {status}"),
            _ => Err(status.to_string()),
        }
    })
    .await;
    let total = first["total"].as_u64().expect("SQLite counts its log");
    assert!(done["folded"].as_u64().unwrap() >= total, "{done}");
    assert_eq!(done["generation"], 1);
    assert!(done["finished_at"].is_string());
    let views = app.hooks.views.as_ref();
    assert_eq!(
        current_generation(views, Projection::Analytics)
            .await
            .unwrap(),
        1
    );
    assert_eq!(
        current_generation(views, Projection::Orders).await.unwrap(),
        0
    );
    let confirmed = app.view(&orders.token, &orders.confirmed).await;
    assert_eq!(
        confirmed["status"], "confirmed",
        "order views are untouched"
    );
}

#[tokio::test]
async fn replays_are_for_analysts_and_operators_and_name_known_projections() {
    let app = spawn_app().await;
    let customer = app.token("cora", "customer").await;
    let operator = app.token("olga", "operator").await;
    let empty = serde_json::json!({});

    let refused = app.post(&customer, "/api/replays", &empty).await;
    let unknown = app
        .post(
            &operator,
            "/api/replays",
            &serde_json::json!({"projections": ["revenue"]}),
        )
        .await;
    let missing = app
        .get(&operator, &format!("/api/replays/{}", uuid::Uuid::now_v7()))
        .await;

    assert_eq!(refused.status(), reqwest::StatusCode::FORBIDDEN);
    assert_eq!(unknown.status(), reqwest::StatusCode::UNPROCESSABLE_ENTITY);
    let problem: Value = unknown.json().await.unwrap();
    assert_eq!(problem["errors"][0]["field"], "projections[0]", "{problem}");
    assert_eq!(missing.status(), reqwest::StatusCode::NOT_FOUND);
    let nothing_started = app.hooks.views.get("projections:replays").await.unwrap();
    assert_eq!(nothing_started, None, "a refused request starts nothing");
}
