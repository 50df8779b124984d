//! The whole system in one process with its Azure adapters, each pointed at a local fake that
//! enforces the service's documented contract (no Azure service can be reached from here):
//! events in Cosmos DB, the topic on Service Bus, pushes through Notification Hubs.

use orderflow_tests::fakes::cosmos::{CosmosConfig, CosmosFake};
use orderflow_tests::fakes::notification_hubs::FakeNotificationHubs;
use orderflow_tests::fakes::service_bus::{ServiceBusConfig, ServiceBusFake};
use orderflow_tests::fakes::{HUB_KEY, HUB_KEY_NAME, azure_settings};
use orderflow_tests::{eventually, spawn_app_with, unique_sku};
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_order_flows_through_cosmos_db_and_service_bus_and_is_pushed_through_notification_hubs()
{
    let cosmos = CosmosFake::start(CosmosConfig::new()).await;
    let subscriptions = services::system::SUBSCRIPTIONS;
    let bus = ServiceBusFake::start(ServiceBusConfig::new(&subscriptions, 5)).await;
    let hubs = FakeNotificationHubs::start("orders", HUB_KEY_NAME, HUB_KEY).await;
    let data = tempfile::tempdir().unwrap();
    let settings = azure_settings(data.path(), &cosmos, &bus, &hubs);
    let app = spawn_app_with(settings).await;
    let sku = unique_sku("TEA");
    app.list_product(&sku, 450, 5).await;
    let token = app.token("azure-ada", "customer").await;
    let installation = json!({"platform": "fcmv1", "push_channel": "fcm-device-token"});
    let put = app
        .client
        .put(app.url("/api/installations/ada-phone"))
        .bearer_auth(&token)
        .json(&installation)
        .send()
        .await
        .unwrap();
    assert_eq!(put.status(), reqwest::StatusCode::OK);
    assert!(
        hubs.installation("ada-phone").is_some(),
        "the hub holds the installation"
    );

    let order_id = app.place_ok(&token, &[(&sku, 2)]).await;

    let view = app.settled(&token, &order_id).await;
    assert_eq!(view["status"], "confirmed");
    let send = eventually("the confirmation reaching the hub", || async {
        hubs.sends()
            .into_iter()
            .find(|s| s.properties.get("order_id") == Some(&order_id))
            .ok_or_else(|| format!("{} sends so far", hubs.sends().len()))
    })
    .await;
    assert_eq!(send.properties["status"], "confirmed");
    assert_eq!(
        send.tag.as_deref(),
        Some(format!("customer:{}", view["customer_id"].as_str().unwrap()).as_str())
    );
    assert_eq!(send.deliveries.len(), 1, "the customer's one device got it");
    let stream = cosmos.documents(
        &cosmos.config.events_container,
        &format!("order-{order_id}"),
    );
    assert!(
        stream.len() >= 2,
        "the order's events are in Cosmos DB: {stream:?}"
    );
    app.stop().await;
}

/// An operator's mend on Azure: Notification Hubs refuses every send (a bad template, say), so
/// the notifier's deliveries of the order's events spend their attempts and Service Bus
/// dead-letters them; the operator lists them over the API, mends the cause, re-drives them,
/// and the customer is pushed once per event (that the copies reach the notifier's
/// subscription only is the bus conformance suite's to check).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operator_redrives_pushes_that_notification_hubs_refused() {
    let cosmos = CosmosFake::start(CosmosConfig::new()).await;
    let subscriptions = services::system::SUBSCRIPTIONS;
    let bus = ServiceBusFake::start(ServiceBusConfig::new(&subscriptions, 5)).await;
    let hubs = FakeNotificationHubs::start("orders", HUB_KEY_NAME, HUB_KEY).await;
    let data = tempfile::tempdir().unwrap();
    let settings = azure_settings(data.path(), &cosmos, &bus, &hubs);
    let app = spawn_app_with(settings).await;
    let sku = unique_sku("TEA");
    app.list_product(&sku, 450, 5).await;
    let token = app.token("azure-grace", "customer").await;
    let put = app
        .client
        .put(app.url("/api/installations/grace-phone"))
        .bearer_auth(&token)
        .json(&json!({"platform": "apns", "push_channel": "apns-device-token"}))
        .send()
        .await
        .unwrap();
    assert_eq!(put.status(), reqwest::StatusCode::OK);
    hubs.refuse_sends(true);

    let order_id = app.place_ok(&token, &[(&sku, 1)]).await;
    assert_eq!(app.settled(&token, &order_id).await["status"], "confirmed");
    let operator = app.token("azure-ops", "operator").await;
    let list = |query: &'static str| {
        let request = app
            .client
            .get(app.url(&format!("/api/dead-letters{query}")))
            .bearer_auth(&operator);
        async move {
            let response = request.send().await.unwrap();
            assert_eq!(response.status(), reqwest::StatusCode::OK);
            response.json::<serde_json::Value>().await.unwrap()
        }
    };
    let dead = eventually("the refused pushes are dead-lettered", || async {
        let listed = list("?subscription=notifier").await;
        let ours: Vec<serde_json::Value> = listed["items"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|d| d["order_id"] == order_id.as_str())
            .cloned()
            .collect();
        // The confirmation is what a customer is pushed.
        if !ours.is_empty() {
            Ok(ours)
        } else {
            Err(format!("{listed}"))
        }
    })
    .await;
    for letter in &dead {
        assert_eq!(letter["subscription"], "notifier");
        assert_eq!(letter["attempts"], 5);
        assert!(
            letter["reason"]
                .as_str()
                .unwrap()
                .contains("MaxDeliveryCountExceeded"),
            "{letter}"
        );
        assert!(
            letter["dead_at"].is_null(),
            "Service Bus keeps no such time"
        );
    }
    assert!(hubs.sends().is_empty(), "nothing reached a device yet");

    hubs.refuse_sends(false);
    let redriven = app
        .client
        .post(app.url("/api/dead-letters/redrive"))
        .bearer_auth(&operator)
        .json(&json!({"all": false, "subscription": "notifier", "order_id": order_id}))
        .send()
        .await
        .unwrap();
    assert_eq!(redriven.status(), reqwest::StatusCode::OK);
    let redriven: serde_json::Value = redriven.json().await.unwrap();
    assert_eq!(redriven["count"], dead.len(), "{redriven}");

    let sends = eventually("the re-driven pushes reach the hub", || async {
        let sends: Vec<_> = hubs
            .sends()
            .into_iter()
            .filter(|s| s.properties.get("order_id") == Some(&order_id))
            .collect();
        if sends.len() >= dead.len() {
            Ok(sends)
        } else {
            Err(format!("{} sends", sends.len()))
        }
    })
    .await;
    assert_eq!(
        list("?subscription=notifier").await["total"],
        0,
        "no dead letter left"
    );
    // Settle, then count again: each event pushed exactly once.
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    let again = hubs
        .sends()
        .into_iter()
        .filter(|s| s.properties.get("order_id") == Some(&order_id))
        .count();
    assert_eq!(again, sends.len(), "each event pushed once");
    assert_eq!(again, dead.len());
    app.stop().await;
}
