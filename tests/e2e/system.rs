//! Properties of the whole system: restarts lose nothing, concurrency never oversells, live
//! updates and pushes arrive once, the contract is published.

use std::collections::HashSet;
use std::time::Duration;

use futures_util::StreamExt;
use reqwest::StatusCode;
use serde_json::{Value, json};

use eventlog::conformance::{log_after, whole_log};
use orderflow_tests::{eventually, spawn_app, spawn_app_in, unique_sku};

#[tokio::test]
async fn a_restart_keeps_every_order_and_status() {
    let temp = tempfile::tempdir().unwrap();
    let app = spawn_app_in(temp.path()).await;
    let orders = app.settled_orders("rita").await;
    let mut before = Vec::new();
    for id in orders.ids() {
        before.push(app.view(&orders.token, id).await);
    }
    app.stop().await;

    let app = spawn_app_in(temp.path()).await;

    let token = app.token("rita", "customer").await;
    for (id, view) in orders.ids().into_iter().zip(&before) {
        assert_eq!(&app.view(&token, id).await, view);
    }
    let statuses: Vec<String> = before
        .iter()
        .map(|v| v["status"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(statuses, ["confirmed", "rejected", "cancelled"]);
    let mine: Value = app.get(&token, "/api/orders").await.json().await.unwrap();
    assert_eq!(mine["items"].as_array().unwrap().len(), 3);
    assert_eq!(app.catalog_item(&orders.sku).await["available"], 8);
    // The demo catalog was not seeded twice.
    assert_eq!(app.catalog_item("TEA-001").await["on_hand"], 50);
    // And the restarted system still processes orders.
    let after_restart = app.place_ok(&token, &[(&orders.sku, 1)]).await;
    assert_eq!(
        app.settled(&token, &after_restart).await["status"],
        "confirmed"
    );
}

/// The embedded engines keep what they promise across a restart of `orderflow serve`:
/// registered devices, the notifier's completed claims (a redelivered event is not pushed
/// again), the sandbox's captures, and the in-process topic's dead letters.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_keeps_installations_claims_and_dead_letters() {
    let temp = tempfile::tempdir().unwrap();
    let app = spawn_app_in(temp.path()).await;
    let token = app.token("kept", "customer").await;
    let registered = app
        .client
        .put(app.url("/api/installations/kept-phone"))
        .bearer_auth(&token)
        .json(&json!({"platform": "apns", "push_channel": "apns-token"}))
        .send()
        .await
        .unwrap();
    assert_eq!(registered.status(), StatusCode::OK);
    let order = app.place_ok(&token, &[("TEA-001", 1)]).await;
    assert_eq!(app.settled(&token, &order).await["status"], "confirmed");
    let events = app
        .hooks
        .store
        .read_stream(&format!("order-{order}"), 1)
        .await
        .unwrap();
    eventually("the confirmation is pushed", || async {
        match app.hooks.pushed.sent().len() {
            1 => Ok(()),
            n => Err(format!("{n} pushes")),
        }
    })
    .await;
    // An event no handler can read, published straight to the topic: dead-lettered by each
    // of the three subscriptions after its attempts.
    let mut poison = events[0].clone();
    poison.event_id = uuid::Uuid::now_v7();
    poison.stream_id = format!("order-{}", uuid::Uuid::now_v7());
    poison.payload = json!({"not": "an order"}).into();
    let receipt = app.hooks.bus.publish(vec![poison.clone()]).await.unwrap();
    tokio::time::timeout(Duration::from_secs(30), receipt)
        .await
        .expect("the poison is settled")
        .unwrap();
    let dead_before = app.hooks.bus.dead_letters().await.unwrap();
    assert_eq!(dead_before.len(), 3, "{dead_before:?}");
    app.stop().await;

    let app = spawn_app_in(temp.path()).await;

    let mut dead_after = app.hooks.bus.dead_letters().await.unwrap();
    dead_after.sort_by(|a, b| a.subscription.cmp(&b.subscription));
    let mut dead_before = dead_before;
    dead_before.sort_by(|a, b| a.subscription.cmp(&b.subscription));
    assert_eq!(dead_after, dead_before, "the dead letters are still there");
    let installation = app
        .hooks
        .views
        .get("installation:kept-phone")
        .await
        .unwrap()
        .expect("the device is still registered");
    assert!(installation.body.contains("apns-token"));
    for event in &events {
        app.hooks.notifier.handle(event).await.unwrap();
    }
    assert_eq!(
        app.hooks.pushed.sent(),
        vec![],
        "an event pushed before the restart is not pushed again"
    );
    let deleted = app
        .client
        .delete(app.url("/api/installations/kept-phone"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(
        deleted.status(),
        StatusCode::NO_CONTENT,
        "and it is still theirs"
    );
}

#[tokio::test]
async fn fifty_concurrent_orders_against_stock_of_twenty_confirm_exactly_twenty() {
    let app = spawn_app().await;
    let sku = unique_sku("HOT");
    app.list_product(&sku, 100, 20).await;
    let mut customers = Vec::new();
    for _ in 0..50 {
        customers.push(app.new_customer().await);
    }

    let lines = [(sku.as_str(), 1)];
    let placing = customers.iter().map(|token| app.place_ok(token, &lines));
    let order_ids = futures_util::future::join_all(placing).await;

    let mut confirmed = 0;
    for (token, id) in customers.iter().zip(&order_ids) {
        let view = app.settled(token, id).await;
        match view["status"].as_str().unwrap() {
            "confirmed" => confirmed += 1,
            "rejected" => assert_eq!(view["reason"], "out_of_stock"),
            other => panic!("unexpected status {other}"),
        }
    }
    assert_eq!(confirmed, 20);
    let item = app.wait_for_available(&sku, 0).await;
    assert_eq!(
        (item["on_hand"].as_u64(), item["reserved"].as_u64()),
        (Some(20), Some(20))
    );
    assert_eq!(app.hooks.bus.dead_letters().await.unwrap(), vec![]);
}

#[tokio::test]
async fn the_live_stream_carries_each_status_change_once_and_pushes_are_not_repeated() {
    let app = spawn_app().await;
    let sku = unique_sku("TEA");
    app.list_product(&sku, 450, 10).await;
    let token = app.new_customer().await;
    let stranger = app.new_customer().await;
    let mut mine = sse(&app, &token).await;
    let mut theirs = sse(&app, &stranger).await;

    let order_id = app.place_ok(&token, &[(&sku, 1)]).await;
    let placed = next_order_event(&mut mine).await;
    let confirmed = next_order_event(&mut mine).await;

    assert_eq!(
        (placed["order_id"].as_str(), placed["status"].as_str()),
        (Some(order_id.as_str()), Some("placed"))
    );
    assert_eq!(confirmed["status"], "confirmed");
    assert_eq!(confirmed["version"], 2);
    assert!(
        tokio::time::timeout(Duration::from_millis(300), next_order_event(&mut theirs))
            .await
            .is_err(),
        "another customer saw this order's update"
    );
    // Redeliver every event to the notifier: nothing is pushed or streamed twice.
    for event in whole_log(&app.hooks.store).await {
        app.hooks.notifier.handle(&event).await.unwrap();
    }
    assert!(
        tokio::time::timeout(Duration::from_millis(300), next_order_event(&mut mine))
            .await
            .is_err()
    );
    let pushed = app.hooks.pushed.sent();
    let ids: HashSet<_> = pushed.iter().map(|n| n.event_id).collect();
    assert_eq!(ids.len(), pushed.len(), "an event was pushed twice");
    assert!(
        pushed
            .iter()
            .any(|n| n.order_id.to_string() == order_id && n.status == "confirmed")
    );
}

#[tokio::test]
async fn installations_carry_the_customers_tag_and_no_one_elses() {
    let app = spawn_app().await;
    let token = app.new_customer().await;
    let other_id = uuid::Uuid::new_v4();
    let put = |id: &str, body: Value| {
        app.client
            .put(app.url(&format!("/api/installations/{id}")))
            .bearer_auth(&token)
            .json(&body)
            .send()
    };

    let ok = put(
        "phone-1",
        json!({"platform": "fcmv1", "push_channel": "fcm-token", "tags": ["lang:en"]}),
    )
    .await
    .unwrap();
    assert_eq!(ok.status(), StatusCode::OK);
    let installation: Value = ok.json().await.unwrap();
    let tags = installation["tags"].as_array().unwrap();
    assert!(tags[0].as_str().unwrap().starts_with("customer:"));
    assert!(tags.contains(&json!("lang:en")));

    let hijack = put(
        "phone-2",
        json!({"platform": "apns", "push_channel": "t", "tags": [format!("customer:{other_id}")]}),
    );
    let hijack = hijack.await.unwrap();
    assert_eq!(hijack.status(), StatusCode::FORBIDDEN);
    assert_eq!(hijack.json::<Value>().await.unwrap()["code"], "not_yours");
    let bad = put(
        "phone-3",
        json!({"platform": "blackberry", "push_channel": ""}),
    )
    .await
    .unwrap();
    assert_eq!(bad.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let stranger = app.new_customer().await;
    let steal = app
        .client
        .put(app.url("/api/installations/phone-1"))
        .bearer_auth(&stranger)
        .json(&json!({"platform": "fcmv1", "push_channel": "mine now"}))
        .send()
        .await
        .unwrap();
    assert_eq!(steal.status(), StatusCode::FORBIDDEN);

    let delete = || {
        app.client
            .delete(app.url("/api/installations/phone-1"))
            .bearer_auth(&token)
            .send()
    };
    assert_eq!(delete().await.unwrap().status(), StatusCode::NO_CONTENT);
    assert_eq!(delete().await.unwrap().status(), StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn the_served_contract_lists_every_endpoint_and_ops_endpoints_answer() {
    let app = spawn_app().await;
    let spec: Value = app
        .client
        .get(app.url("/openapi.json"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let paths = spec["paths"].as_object().unwrap();
    for (path, method) in [
        ("/api/dev/token", "post"),
        ("/api/catalog", "get"),
        ("/api/catalog/{sku}/restock", "post"),
        ("/api/orders", "post"),
        ("/api/orders", "get"),
        ("/api/orders/{id}", "get"),
        ("/api/orders/{id}/cancel", "post"),
        ("/api/orders/{id}/ship", "post"),
        ("/api/orders/{id}/deliver", "post"),
        ("/api/orders/{id}/events", "get"),
        ("/api/events", "get"),
        ("/api/analytics/summary", "get"),
        ("/api/replays", "post"),
        ("/api/replays/{replay_id}", "get"),
        ("/api/notifications/stream", "get"),
        ("/api/installations/{installation_id}", "put"),
        ("/api/installations/{installation_id}", "delete"),
        ("/health", "get"),
        ("/ready", "get"),
        ("/metrics", "get"),
    ] {
        assert!(
            paths.get(path).and_then(|p| p.get(method)).is_some(),
            "{method} {path} missing from /openapi.json"
        );
    }
    let schemas = spec["components"]["schemas"].as_object().unwrap();
    let view = &schemas["OrderView"]["properties"];
    for field in [
        "order_id",
        "customer_id",
        "status",
        "lines",
        "total",
        "currency",
        "shipping_address",
        "version",
        "placed_at",
        "updated_at",
        "history",
    ] {
        assert!(view.get(field).is_some(), "OrderView.{field} missing");
    }

    assert_eq!(
        app.client
            .get(app.url("/health"))
            .send()
            .await
            .unwrap()
            .status(),
        StatusCode::OK
    );
    let ready = app.client.get(app.url("/ready")).send().await.unwrap();
    assert_eq!(ready.status(), StatusCode::OK);
    let ready: Value = ready.json().await.unwrap();
    let checks = &ready["checks"];
    assert_eq!(
        (
            &checks["event_store"],
            &checks["view_store"],
            &checks["topic"]
        ),
        (&json!("ok"), &json!("ok"), &json!("ok"))
    );
    let metrics = app
        .client
        .get(app.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(metrics.contains("orderflow_store_head_position"));
    assert!(metrics.contains(
        "orderflow_http_requests_total{method=\"GET\",route=\"/openapi.json\",status=\"200\"} 1"
    ));
    assert!(metrics.contains("orderflow_http_request_duration_seconds_bucket{le=\"+Inf\",method=\"GET\",route=\"/health\"} 1"));
    // Per role, from the engines and the services: the queues, the deliveries, the commands.
    for line in [
        "orderflow_dead_letters{subscription=\"notifier\"} 0",
        "orderflow_queue_ready_messages{subscription=\"projector\"}",
        "orderflow_consumer_deliveries_total{subscription=\"order-processor\"}",
        "orderflow_consumer_redeliveries_total{subscription=\"notifier\"}",
        "orderflow_commands_total{aggregate=\"order\",outcome=\"appended\"}",
        "orderflow_commands_total{aggregate=\"inventory\",outcome=\"conflict\"}",
        "orderflow_relay_lag_events",
    ] {
        assert!(metrics.contains(line), "{line} missing from:\n{metrics}");
    }
    assert!(
        metrics.ends_with("# EOF\n"),
        "OpenMetrics text ends with # EOF"
    );
    let params = spec["paths"]["/api/orders/{id}"]["get"]["parameters"].to_string();
    for param in [
        "min_version",
        "wait_ms",
        "as_of",
        "at_version",
        "If-None-Match",
    ] {
        assert!(
            params.contains(param),
            "GET /api/orders/{{id}} does not document {param}"
        );
    }
    let dev = app
        .client
        .post(app.url("/api/dev/token"))
        .json(&json!({"customer_id": "x"}))
        .send()
        .await
        .unwrap();
    let dev: Value = dev.json().await.unwrap();
    assert_eq!(dev["development"], true);
    let page = app.client.get(app.url("/")).send().await.unwrap();
    assert_eq!(page.headers()["content-type"], "text/html; charset=utf-8");
}

/// Opens the SSE stream and returns its byte stream.
async fn sse(
    app: &orderflow_tests::TestApp,
    token: &str,
) -> impl futures_util::Stream<Item = reqwest::Result<bytes::Bytes>> + Unpin {
    let response = app
        .client
        .get(app.url(&format!("/api/notifications/stream?access_token={token}")))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert!(
        response.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/event-stream")
    );
    Box::pin(response.bytes_stream())
}

/// The data of the next `event: order` on the stream.
async fn next_order_event(
    stream: &mut (impl futures_util::Stream<Item = reqwest::Result<bytes::Bytes>> + Unpin),
) -> Value {
    let mut buffer = String::new();
    loop {
        while let Some(end) = buffer.find("\n\n") {
            let frame: String = buffer.drain(..end + 2).collect();
            if frame.lines().any(|l| l == "event: order") {
                let data = frame
                    .lines()
                    .find_map(|l| l.strip_prefix("data: "))
                    .unwrap();
                return serde_json::from_str(data).unwrap();
            }
        }
        let chunk = tokio::time::timeout(Duration::from_secs(10), stream.next())
            .await
            .expect("an event within 10 s")
            .expect("the stream stays open")
            .unwrap();
        buffer.push_str(&String::from_utf8_lossy(&chunk));
    }
}

#[tokio::test]
async fn redelivering_every_event_to_every_consumer_changes_nothing() {
    let app = spawn_app().await;
    let orders = app
        .settled_orders(&format!("redo-{}", uuid::Uuid::new_v4()))
        .await;
    let hooks = &app.hooks;
    let log = whole_log(&hooks.store).await;
    // Every consumer has settled everything once nothing lies after the relay's checkpoint.
    eventually("the relay settling the whole log", || async {
        let relayed = hooks
            .store
            .checkpoint(infra::relay::CHECKPOINT)
            .await
            .unwrap();
        match log_after(&hooks.store, &relayed).await.len() {
            0 => Ok(()),
            n => Err(format!("{n} events after the checkpoint {relayed}")),
        }
    })
    .await;
    let mut before = Vec::new();
    for id in orders.ids() {
        before.push(app.view(&orders.token, id).await);
    }
    let captured = hooks.payments.captured();

    for event in whole_log(&hooks.store).await {
        hooks.processor.handle(&event).await.unwrap();
        hooks.projector.handle(&event).await.unwrap();
        hooks.notifier.handle(&event).await.unwrap();
    }

    assert_eq!(
        whole_log(&hooks.store).await,
        log,
        "a redelivered event acted twice"
    );
    assert_eq!(hooks.payments.captured(), captured);
    for (id, view) in orders.ids().into_iter().zip(&before) {
        assert_eq!(&app.view(&orders.token, id).await, view);
    }
    assert_eq!(app.catalog_item(&orders.sku).await["available"], 8);
}

/// The relay reads the log a page at a time and goes back to it when the doorbell rings or a
/// page came back full, not each time the topic confirms a batch: 100 events waiting in pages
/// of 10 take 10 full reads and one that finds the end (it took about twice that before).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_relay_reads_the_log_once_a_page_not_once_a_receipt() {
    use std::sync::Arc;

    use eventlog::EventStore;
    use eventlog::Scripted;
    use eventlog::testing::Op;
    use infra::bus::{EventBus, MemoryBus, RetryPolicy, consume};
    use infra::relay::{CHECKPOINT, Relay, RelayConfig};

    let (_dir, sqlite) = orderflow_tests::sqlite_store().await;
    for i in 0..100 {
        let event = domain::NewEvent {
            event_id: uuid::Uuid::now_v7(),
            event_type: "Tested".into(),
            schema_version: 1,
            occurred_at: chrono::Utc::now(),
            payload: json!({ "i": i }),
            metadata: domain::EventMetadata::default(),
        };
        sqlite
            .append(&format!("test-{i}"), "test", 0, vec![event])
            .await
            .unwrap();
    }
    let store = Arc::new(Scripted::new(sqlite));
    let bus = Arc::new(MemoryBus::new(&["only"], RetryPolicy::default()));
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let handler: infra::bus::Handler = Arc::new(|_| Box::pin(async { Ok(()) }));
    let subscription = bus.subscribe("only").await.unwrap();
    tokio::spawn(consume("only", subscription, 4, handler, stopped.clone()));
    let config = RelayConfig {
        batch_size: 10,
        poll: Duration::from_secs(60),
        ..RelayConfig::default()
    };
    let relay = tokio::spawn(Relay::new(store.clone(), bus, config).run(stopped));

    eventually("the relay has published the whole log", || async {
        let saved = store.checkpoint(CHECKPOINT).await.unwrap();
        match saved.position().unwrap() {
            100 => Ok(()),
            other => Err(format!("checkpoint at {other}")),
        }
    })
    .await;
    tokio::time::sleep(Duration::from_millis(200)).await;

    assert_eq!(store.calls(Op::ReadAll), 11, "ten full pages and the end");
    stop.send(true).unwrap();
    relay.await.unwrap();
}

/// The notifier names an order's customer from the placement it handled, not from a read of
/// the order's stream per status change; one that missed the placement (a restart) reads it.
#[tokio::test]
async fn the_notifier_reads_an_orders_customer_only_when_it_missed_the_placement() {
    use std::sync::Arc;

    use eventlog::Scripted;
    use eventlog::testing::Op;
    use infra::push::LogPush;
    use projections::MemoryViewStore;
    use projections::Notifier;

    let (_dir, sqlite, _, events) = orderflow_tests::confirmed_order("NOTE-1").await;
    let store = Arc::new(Scripted::new(sqlite));
    let notifier = |views: Arc<MemoryViewStore>| {
        let push = Arc::new(LogPush::new(views.clone(), None).unwrap());
        (Notifier::new(store.clone(), views, push.clone()), push)
    };

    let (running, push) = notifier(Arc::new(MemoryViewStore::new()));
    running.handle(&events[0]).await.unwrap();
    running.handle(&events[1]).await.unwrap();
    assert_eq!(
        store.calls(Op::ReadStream),
        0,
        "the placement named the customer"
    );
    let sent = push.sent();
    assert_eq!(sent.len(), 1, "the confirmation was pushed");
    assert_eq!(sent[0].status, "confirmed");

    let (restarted, push) = notifier(Arc::new(MemoryViewStore::new()));
    restarted.handle(&events[1]).await.unwrap();
    assert_eq!(store.calls(Op::ReadStream), 1, "read from the stream");
    assert_eq!(push.sent()[0].customer_id, sent[0].customer_id);
}
