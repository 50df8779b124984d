//! Replay: the read models rebuilt from the whole log into a new generation, readers switched
//! at once, the old generation deleted; views equal to the live ones, and orders placed while
//! it runs are not lost. (In-process on SQLite and the in-memory cache; the distributed test
//! runs `orderflow replay` against PostgreSQL and Redis.)

use std::time::Duration;

use projections::projector::{GENERATION_KEY, current_generation};
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
    let system = app.system.clone();

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
        system.store.clone(),
        system.views.clone(),
        Duration::from_secs(2),
        &mut |n| folded += n,
    )
    .await
    .expect("replay");
    let live_ids = live.await.unwrap();

    assert_eq!(replayed.previous, 0);
    assert_eq!(replayed.generation, 1);
    assert_eq!(folded, replayed.events);
    assert!(replayed.events > 0 && replayed.deleted > 0, "{replayed:?}");
    assert_eq!(current_generation(system.views.as_ref()).await.unwrap(), 1);
    assert!(system.views.get(GENERATION_KEY).await.unwrap().is_some());
    let first = &orders.ids()[0];
    assert_eq!(
        system.views.get(&format!("order:{first}")).await.unwrap(),
        None,
        "the old generation is gone"
    );
    eventually("the web role following the switch", || async {
        match system.projector.generation() {
            1 => Ok(()),
            g => Err(format!("still on generation {g}")),
        }
    })
    .await;
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

    use commands::EventStore;
    use domain::{NewEvent, RecordedEvent};
    use projections::{Projector, ViewStore};

    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn EventStore> = Arc::new(
        infra::event_store::SqliteEventStore::open(&dir.path().join("events.db"))
            .await
            .unwrap(),
    );
    let views: Arc<dyn ViewStore> = Arc::new(infra::views::MemoryViewStore::new());
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
                payload: event.payload.clone(),
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
        Duration::from_millis(1500),
        &mut ignore,
    );
    let meanwhile = async {
        eventually("the replay switching readers", || async {
            match current_generation(views.as_ref()).await.unwrap() {
                1 => Ok(()),
                g => Err(format!("generation {g}")),
            }
        })
        .await;
        assert_eq!(
            live.generation(),
            0,
            "the live projector has not noticed yet"
        );
        let shipped = append(&events[2]).await;
        live.handle(&shipped).await.unwrap();
    };
    let (replayed, ()) = tokio::join!(replaying, meanwhile);
    replayed.expect("replay");

    let reader = Projector::new(store, views);
    assert_eq!(reader.refresh_generation().await.unwrap(), 1);
    let order_id = events[0]
        .stream_id
        .trim_start_matches("order-")
        .parse()
        .unwrap();
    let view = reader.order(order_id).await.unwrap().expect("the order");
    assert_eq!(
        view.status, "shipped",
        "the event written into the old generation is in the new"
    );
    assert_eq!(view.version, 3);
}
