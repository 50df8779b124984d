//! The system as separate OS processes, one per role, on its Azure adapters: events in Cosmos
//! DB, the topic on Service Bus, pushes through Notification Hubs, each a local fake in this
//! test process that enforces the service's documented contract (no Azure service can be
//! reached from here), and read models in the machine's Redis (`ORDERFLOW_TEST_REDIS`, default
//! `redis://127.0.0.1:6379`; Azure Cache for Redis speaks the same protocol).
//!
//! The `orderflow` binary must have been built with the `azure` feature: `cargo test
//! --workspace` does (this crate turns the feature on for the whole build).

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use orderflow_tests::fakes::cosmos::{CosmosConfig, CosmosFake};
use orderflow_tests::fakes::notification_hubs::FakeNotificationHubs;
use orderflow_tests::fakes::service_bus::{ServiceBusConfig, ServiceBusFake};
use orderflow_tests::fakes::{HUB_KEY, HUB_KEY_NAME};
use orderflow_tests::process::{
    Api, Process, assert_decided_as_their_events_say, lines_for, settle, wait_ready,
};
use reqwest::StatusCode;
use serde_json::json;
use uuid::Uuid;

const ORDERS: usize = 200;

/// Two relays (one holds the Cosmos DB lease, the other waits), two processors of which one
/// is killed mid-run, a projector and a notifier: 200 orders all end decided as their events
/// say, each decision is pushed once through the hub, and nothing is dead-lettered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hundred_orders_flow_through_cosmos_db_service_bus_and_notification_hubs() {
    let cosmos = CosmosFake::start(CosmosConfig::new()).await;
    let subscriptions = services::system::SUBSCRIPTIONS;
    let bus = ServiceBusFake::start(ServiceBusConfig::new(&subscriptions, 5)).await;
    let hubs = FakeNotificationHubs::start("orders", HUB_KEY_NAME, HUB_KEY).await;
    let redis = std::env::var("ORDERFLOW_TEST_REDIS").unwrap_or("redis://127.0.0.1:6379".into());
    let prefix = format!("az{}", &Uuid::new_v4().simple().to_string()[..10]);
    let store = format!(
        "cosmos://fake/{}?endpoint={}",
        cosmos.config.database, cosmos.endpoint
    );
    let sb = &bus.config;
    let topic = format!(
        "servicebus://{}/{}?key-name={}&endpoint={}",
        sb.namespace, sb.topic, sb.key_name, bus.base_url
    );
    let push = format!(
        "notificationhubs://fake/orders?key-name={HUB_KEY_NAME}&endpoint={}",
        hubs.base_url()
    );
    let cache = format!("{redis}?prefix={prefix}");
    let args = [
        "--store", &store, "--bus", &topic, "--push", &push, "--cache", &cache,
    ];
    let keys = [
        ("ORDERFLOW_COSMOS_KEY", cosmos.config.key.as_str()),
        ("ORDERFLOW_SERVICEBUS_KEY", sb.key.as_str()),
        ("ORDERFLOW_NOTIFICATIONHUBS_KEY", HUB_KEY),
    ];
    let data = tempfile::tempdir().unwrap();
    let serve = |name: &str, roles: &str| Process::serve(name, data.path(), roles, &args, &keys);

    let migrate = std::process::Command::new(orderflow_tests::process::binary())
        .args(["migrate", "--store", &store])
        .envs(keys)
        .output()
        .unwrap();
    assert!(
        migrate.status.success(),
        "orderflow migrate on Cosmos DB: {}",
        String::from_utf8_lossy(&migrate.stderr)
    );
    let web = serve("web", "web");
    wait_ready(&web.url).await;
    let mut others = [
        serve("relay", "relay"),
        serve("processor-1", "processor"),
        serve("processor-2", "processor"),
        serve("projector", "projector"),
        serve("notifier", "notifier"),
        serve("relay-2", "relay"),
    ];
    for process in &others {
        wait_ready(&process.url).await;
    }
    let api = Arc::new(Api::new(&web.url));
    let operator = api.token("olga", "operator").await;
    let analyst = api.token("ann", "analyst").await;
    for (sku, quantity) in [("TEA-001", 2000), ("GRINDER-001", 100)] {
        let restock = api
            .client
            .post(format!("{}/api/catalog/{sku}/restock", api.url))
            .bearer_auth(&operator)
            .json(&json!({ "quantity": quantity }))
            .send()
            .await
            .unwrap();
        assert_eq!(restock.status(), StatusCode::ACCEPTED);
    }

    // 200 orders from 20 customers, 10 at a time; processor-1 dies after the first 60.
    let tokens: Vec<String> = futures_util::future::join_all((0..20).map(|c| {
        let api = api.clone();
        async move { api.token(&format!("azure-{c}"), "customer").await }
    }))
    .await;
    let mut ids = Vec::new();
    for chunk in (0..ORDERS).collect::<Vec<_>>().chunks(10) {
        let placing = chunk.iter().map(|&i| {
            let (api, token) = (api.clone(), tokens[i % 20].clone());
            async move { api.place(&token, lines_for(i)).await }
        });
        ids.extend(futures_util::future::join_all(placing).await);
        if ids.len() == 60 {
            others[1].kill();
        }
    }

    let views = settle(&api, &analyst, &ids, Duration::from_secs(240)).await;
    assert_decided_as_their_events_say(&api, &analyst, &views).await;

    // Every decision reached the hub once, for its customer's tag.
    let deadline = Instant::now() + Duration::from_secs(60);
    let decisions = loop {
        let decisions: Vec<(String, String)> = hubs
            .sends()
            .into_iter()
            .filter_map(|send| {
                let order = send.properties.get("order_id")?.clone();
                let status = send.properties.get("status")?.clone();
                ids.contains(&order).then_some((order, status))
            })
            .collect();
        if decisions.len() >= ORDERS || Instant::now() > deadline {
            break decisions;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let distinct: HashSet<&(String, String)> = decisions.iter().collect();
    assert_eq!(
        distinct.len(),
        decisions.len(),
        "a decision was pushed twice"
    );
    assert_eq!(decisions.len(), ORDERS, "one push per decided order");
    for (order, status) in &decisions {
        assert_eq!(
            &views[order]["status"], status,
            "{order} was pushed as {status}"
        );
    }

    for subscription in subscriptions {
        assert!(
            bus.dead_lettered(subscription).is_empty(),
            "{subscription} dead-lettered {:?}",
            bus.dead_lettered(subscription)
        );
    }
    for process in others.iter_mut().filter(|p| p.name != "processor-1") {
        assert!(
            process.terminate().success(),
            "{} did not stop cleanly",
            process.name
        );
    }
    // The Redis is shared with every other test: leave none of this run's keys behind.
    let views = infra::views::RedisViewStore::connect(&cache).await.unwrap();
    views.clear().await.expect("this run's keys deleted");
}
