//! The Notification Hubs push sender against [`FakeNotificationHubs`], a local server that
//! enforces the documented REST contract (SAS tokens, api-version, headers, installation and
//! template shapes per platform): the `PushSender` conformance suite, then what is specific to
//! Notification Hubs.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use infra::push::conformance::{installation, notification};
use infra::push::notification_hubs::{API_VERSION, sas_token};
use infra::push::{NotificationHubsPush, NotificationHubsSettings, RetryPolicy, SasKey};
use orderflow_tests::fakes::notification_hubs::{Failure, FakeNotificationHubs};
use projections::MemoryViewStore;
use projections::notifier::{PushError, PushSender};
use projections::view_store::ViewStore;
use uuid::Uuid;

const HUB: &str = "orders";
const KEY_NAME: &str = "DefaultFullSharedAccessSignature";
const KEY: &str = "c2VjcmV0LWtleS1mb3ItdGhlLWZha2UtaHVi";

/// A fake hub, and an adapter pointed at it signing with `key`.
async fn hub_with_key(key: &str) -> (Arc<NotificationHubsPush>, FakeNotificationHubs) {
    let fake = FakeNotificationHubs::start(HUB, KEY_NAME, KEY).await;
    let push = adapter(&fake, key, Arc::new(MemoryViewStore::new()));
    (push, fake)
}

/// An adapter on `fake` keeping its ownership records in `views` (one web process; two that
/// share `views` are two processes on one cache).
fn adapter(
    fake: &FakeNotificationHubs,
    key: &str,
    views: Arc<dyn ViewStore>,
) -> Arc<NotificationHubsPush> {
    let mut settings = NotificationHubsSettings::new("unused", HUB, KEY_NAME, SasKey::new(key));
    settings.base_url = Some(fake.base_url());
    // Retries that fit in a test's patience.
    settings.retry = RetryPolicy {
        attempts: 4,
        base_delay: Duration::from_millis(10),
        max_delay: Duration::from_secs(2),
    };
    Arc::new(NotificationHubsPush::new(settings, views).expect("the adapter builds"))
}

async fn fixture() -> (Arc<dyn PushSender>, FakeNotificationHubs) {
    let (push, fake) = hub_with_key(KEY).await;
    (push, fake)
}

/// The `PushSender` conformance suite, run against a local fake that enforces the documented
/// Notification Hubs contract.
mod conformance {
    infra::push_sender_conformance!(super::fixture());
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// Runs against a local fake that enforces the documented contract: a token signed with the
/// wrong key is refused with 401, and the adapter reports the service unavailable, naming the
/// status, without retrying.
#[tokio::test]
async fn a_wrong_key_is_refused_and_reported() {
    let (push, fake) = hub_with_key("not-the-key").await;

    let result = push.register(installation(Uuid::new_v4(), "apns")).await;

    match result {
        Err(PushError::Unavailable(message)) => {
            assert!(message.contains("401"), "{message}");
            assert!(
                !message.contains("not-the-key"),
                "the key leaked: {message}"
            );
        }
        other => panic!("expected Unavailable, got {other:?}"),
    }
    assert_eq!(fake.requests(), 1, "a 401 is not retried");
    assert!(fake.installations().is_empty());
}

/// Runs against a local fake that enforces the documented contract: the fake's own SAS check
/// refuses an expired token, a token for another resource, an unknown key name and a forged
/// signature, and accepts a good one for the resource or a parent of it.
#[tokio::test]
async fn the_fake_checks_expiry_scope_key_name_and_signature() {
    let fake = FakeNotificationHubs::start(HUB, KEY_NAME, KEY).await;
    let resource = format!("{}/{HUB}/installations/device-1", fake.base_url());
    let hub_level = format!("{}/{HUB}", fake.base_url());

    let expired = sas_token(&resource, KEY_NAME, KEY, now() - 10);
    let elsewhere = sas_token(
        &format!("{}/other", fake.base_url()),
        KEY_NAME,
        KEY,
        now() + 60,
    );
    let unknown = sas_token(&resource, "SomeOtherPolicy", KEY, now() + 60);
    let forged = sas_token(&resource, KEY_NAME, "guessed", now() + 60);
    let good = sas_token(&resource, KEY_NAME, KEY, now() + 60);
    let parent = sas_token(&hub_level, KEY_NAME, KEY, now() + 60);

    let refused = |token: &str| fake.check_token(token, &resource).unwrap_err();
    assert!(refused(&expired).contains("expired"));
    assert!(refused(&elsewhere).contains("not"));
    assert!(refused(&unknown).contains("key name"));
    assert!(refused(&forged).contains("signature"));
    assert!(refused("Bearer abc").contains("SharedAccessSignature"));
    assert_eq!(fake.check_token(&good, &resource), Ok(()));
    assert_eq!(fake.check_token(&parent, &resource), Ok(()));
}

/// Runs against a local fake that enforces the documented contract: requests without an
/// api-version, with a wrong Content-Type or with an installation of an unknown platform are
/// refused with 400, even with a valid token.
#[tokio::test]
async fn the_fake_refuses_malformed_requests() {
    let fake = FakeNotificationHubs::start(HUB, KEY_NAME, KEY).await;
    let client = reqwest::Client::new();
    let url = format!("{}/{HUB}/installations/device-1", fake.base_url());
    let token = sas_token(&url, KEY_NAME, KEY, now() + 60);
    let put = |query: &'static str, content_type: &'static str, body: &'static str| {
        client
            .put(format!("{url}{query}"))
            .header("Authorization", &token)
            .header("Content-Type", content_type)
            .body(body)
            .send()
    };
    let good = r#"{"installationId":"device-1","platform":"apns","pushChannel":"abc"}"#;
    let gcm = r#"{"installationId":"device-1","platform":"gcm","pushChannel":"abc"}"#;
    let bad_template = r#"{"installationId":"device-1","platform":"apns","pushChannel":"abc",
        "templates":{"t":{"body":"{not json"}}}"#;
    let query = "?api-version=2020-06";

    let no_version = put("", "application/json", good).await.unwrap();
    let management_version = put("?api-version=2023-10-01", "application/json", good)
        .await
        .unwrap();
    let unknown_version = put("?api-version=2021-01", "application/json", good)
        .await
        .unwrap();
    let wrong_type = put(query, "text/plain", good).await.unwrap();
    let unknown_platform = put(query, "application/json", gcm).await.unwrap();
    let broken_template = put(query, "application/json", bad_template).await.unwrap();
    let accepted = put(query, "application/json", good).await.unwrap();

    assert_eq!(no_version.status(), 400);
    assert_eq!(
        management_version.status(),
        400,
        "a management-plane version"
    );
    let why = unknown_version.text().await.unwrap();
    assert!(why.contains("'2021-01' is not supported"), "{why}");
    assert!(
        why.contains("2020-06"),
        "the refusal names the versions: {why}"
    );
    assert_eq!(wrong_type.status(), 400);
    assert_eq!(unknown_platform.status(), 400);
    assert_eq!(broken_template.status(), 400);
    assert_eq!(accepted.status(), 200);
}

/// Runs against a local fake that enforces the documented contract: registration stores the
/// platform's template, and one template send to `customer:{id}` reaches that customer's APNs,
/// FCM v1 and WNS devices, each rendered in its platform's shape, and no other customer's.
#[tokio::test]
async fn a_send_renders_for_every_platform_of_the_customer_only() {
    let (push, fake) = hub_with_key(KEY).await;
    let (customer, other) = (Uuid::new_v4(), Uuid::new_v4());
    let devices = ["apns", "fcmv1", "wns"].map(|platform| installation(customer, platform));
    for device in &devices {
        push.register(device.clone()).await.expect("registered");
    }
    push.register(installation(other, "apns"))
        .await
        .expect("registered");
    let change = notification(customer, "rejected", Some("out of stock"));

    push.send(&change).await.expect("sent");

    let sends = fake.sends();
    assert_eq!(sends.len(), 1);
    let send = &sends[0];
    assert_eq!(
        send.tag.as_deref(),
        Some(format!("customer:{customer}").as_str())
    );
    assert_eq!(send.properties["status"], "rejected");
    assert_eq!(send.properties["reason"], "out of stock");
    assert_eq!(send.properties["event_id"], change.event_id.to_string());
    let short = &change.order_id.simple().to_string()[..8];
    assert_eq!(send.properties["title"], format!("Order {short} rejected"));
    let mut reached: Vec<_> = send
        .deliveries
        .iter()
        .map(|d| d.installation_id.clone())
        .collect();
    reached.sort();
    let mut expected: Vec<_> = devices.iter().map(|d| d.installation_id.clone()).collect();
    expected.sort();
    assert_eq!(
        reached, expected,
        "every device of the customer, and only those"
    );
    for delivery in &send.deliveries {
        match delivery.platform.as_str() {
            "apns" => {
                let payload: serde_json::Value = serde_json::from_str(&delivery.payload).unwrap();
                assert_eq!(payload["aps"]["alert"], format!("Order {short} rejected"));
                assert_eq!(payload["status"], "rejected");
                assert_eq!(payload["order_id"], change.order_id.to_string());
                assert_eq!(
                    delivery.headers["apns-collapse-id"],
                    change.event_id.to_string(),
                    "a second push of the event collapses into the first"
                );
            }
            "fcmv1" => {
                let payload: serde_json::Value = serde_json::from_str(&delivery.payload).unwrap();
                assert_eq!(
                    payload["message"]["notification"]["title"],
                    format!("Order {short} rejected")
                );
                assert_eq!(payload["message"]["data"]["status"], "rejected");
                assert_eq!(
                    payload["message"]["android"]["notification"]["tag"],
                    change.event_id.to_string(),
                    "a second push of the event replaces the first in the drawer"
                );
                assert!(
                    payload["message"]["android"]["collapse_key"].is_null(),
                    "no collapse key: FCM keeps only four per device"
                );
            }
            "wns" => {
                assert!(
                    delivery.payload.starts_with("<toast"),
                    "{}",
                    delivery.payload
                );
                assert!(
                    delivery
                        .payload
                        .contains(&format!("Order {short} rejected"))
                );
                assert_eq!(
                    delivery.headers["X-WNS-Tag"],
                    change.event_id.simple().to_string()[..16],
                    "a second toast of the event replaces the first"
                );
            }
            other => panic!("unexpected platform {other}"),
        }
    }
}

/// Runs against a local fake that enforces the documented contract: a 429 with `Retry-After`
/// is waited out and retried, and the send then succeeds.
#[tokio::test]
async fn a_throttled_send_is_retried_after_retry_after() {
    let (push, fake) = hub_with_key(KEY).await;
    fake.fail_next(1, Failure::Throttled(1));
    let started = tokio::time::Instant::now();

    let sent = push
        .send(&notification(Uuid::new_v4(), "confirmed", None))
        .await;

    assert_eq!(sent, Ok(()));
    assert_eq!(fake.requests(), 2, "one refusal, one success");
    assert_eq!(fake.sends().len(), 1);
    assert!(
        started.elapsed() >= Duration::from_secs(1),
        "Retry-After was honoured"
    );
}

/// Runs against a local fake that enforces the documented contract: a service that keeps
/// answering 503 is tried a bounded number of times, then reported unavailable.
#[tokio::test]
async fn a_persistent_503_fails_after_bounded_retries() {
    let (push, fake) = hub_with_key(KEY).await;
    fake.fail_next(100, Failure::Unavailable);

    let sent = push
        .send(&notification(Uuid::new_v4(), "shipped", None))
        .await;

    match sent {
        Err(PushError::Unavailable(message)) => assert!(message.contains("503"), "{message}"),
        other => panic!("expected Unavailable, got {other:?}"),
    }
    assert_eq!(fake.requests(), 4, "four attempts, no more");
    assert!(fake.sends().is_empty());
}

/// Runs against a local fake that enforces the documented contract: the fake takes `fcmv1`
/// only with the data-plane version the SDKs use for it, and the adapter registers and sends
/// to an FCM v1 device (its api-version is that one: a management-plane date would be refused).
#[tokio::test]
async fn fcm_v1_devices_register_and_receive_with_the_data_plane_version() {
    let (push, fake) = hub_with_key(KEY).await;
    let device = installation(Uuid::new_v4(), "fcmv1");
    let url = format!(
        "{}/{HUB}/installations/{}",
        fake.base_url(),
        device.installation_id
    );
    let old = reqwest::Client::new()
        .put(format!("{url}?api-version=2017-04"))
        .header("Authorization", sas_token(&url, KEY_NAME, KEY, now() + 60))
        .header("Content-Type", "application/json")
        .body(format!(
            r#"{{"installationId":"{}","platform":"fcmv1","pushChannel":"abc"}}"#,
            device.installation_id
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(old.status(), 400, "fcmv1 before 2020-06");

    push.register(device.clone()).await.expect("registered");
    push.send(&notification(device.customer_id, "shipped", None))
        .await
        .expect("sent");

    assert_eq!(API_VERSION, "2020-06");
    let stored = fake.installation(&device.installation_id).expect("stored");
    assert_eq!(stored["platform"], "fcmv1");
    assert_eq!(stored["pushChannel"], device.push_channel.as_str());
    assert_eq!(
        fake.sends()[0].deliveries.len(),
        1,
        "the FCM v1 device got it"
    );
}

/// Runs against a local fake that enforces the documented contract, with installations
/// eventually consistent (a read lags 10 s behind the writes): a device removed right after it
/// registered is deleted at the hub (the delete is issued, not decided by a read that still
/// answers 404), and the customer's next push reaches no device.
#[tokio::test]
async fn a_device_removed_right_after_it_registered_is_gone_from_the_hub() {
    let (push, fake) = hub_with_key(KEY).await;
    fake.set_staleness(Duration::from_secs(10));
    let device = installation(Uuid::new_v4(), "apns");

    push.register(device.clone()).await.expect("registered");
    let removed = push
        .delete(device.customer_id, &device.installation_id)
        .await;
    push.send(&notification(device.customer_id, "shipped", None))
        .await
        .expect("sent");

    assert_eq!(removed, Ok(true));
    assert_eq!(fake.installation(&device.installation_id), None);
    assert_eq!(
        fake.sends()[0].deliveries,
        vec![],
        "no device left to reach"
    );
}

/// Runs against a local fake that enforces the documented contract, with reads lagging 10 s:
/// an id one customer registered a moment ago through one web process cannot be taken by
/// another customer through another (they share the cache), though the hub's read still
/// answers 404 for it.
#[tokio::test]
async fn an_id_registered_a_moment_ago_is_not_taken_through_another_process() {
    let fake = FakeNotificationHubs::start(HUB, KEY_NAME, KEY).await;
    fake.set_staleness(Duration::from_secs(10));
    let cache: Arc<dyn ViewStore> = Arc::new(MemoryViewStore::new());
    let (first, second) = (
        adapter(&fake, KEY, cache.clone()),
        adapter(&fake, KEY, cache),
    );
    let mine = installation(Uuid::new_v4(), "wns");
    let mut theirs = installation(Uuid::new_v4(), "wns");
    theirs.installation_id = mine.installation_id.clone();

    first.register(mine.clone()).await.expect("registered");
    let taken = second.register(theirs).await;

    assert_eq!(taken, Err(PushError::NotOwner));
    let stored = fake.installation(&mine.installation_id).expect("kept");
    assert_eq!(stored["pushChannel"], mine.push_channel.as_str());
}

/// Runs against a local fake that enforces the documented contract: when the cache has lost
/// its ownership records (a flush, a failover without persistence), the hub's settled copy
/// decides: another customer cannot take the id, and its owner can still remove it.
#[tokio::test]
async fn ownership_the_cache_forgot_is_read_from_the_hub() {
    let fake = FakeNotificationHubs::start(HUB, KEY_NAME, KEY).await;
    fake.set_staleness(Duration::ZERO);
    let before = adapter(&fake, KEY, Arc::new(MemoryViewStore::new()));
    let mine = installation(Uuid::new_v4(), "apns");
    before.register(mine.clone()).await.expect("registered");
    let after = adapter(&fake, KEY, Arc::new(MemoryViewStore::new()));
    let mut theirs = installation(Uuid::new_v4(), "apns");
    theirs.installation_id = mine.installation_id.clone();

    assert_eq!(after.register(theirs).await, Err(PushError::NotOwner));
    assert_eq!(
        after.delete(Uuid::new_v4(), &mine.installation_id).await,
        Err(PushError::NotOwner)
    );
    assert_eq!(
        after.delete(mine.customer_id, &mine.installation_id).await,
        Ok(true)
    );
    assert_eq!(fake.installation(&mine.installation_id), None);
}

/// Runs against a local fake that enforces the documented contract: a 403 with `Retry-After`
/// is the hub throttling (quota exceeded) and is waited out and retried; a 403 without it is
/// the key's rights and fails at once, reported unavailable for an operator to mend.
#[tokio::test]
async fn a_403_with_retry_after_is_throttling_and_one_without_is_not() {
    let (push, fake) = hub_with_key(KEY).await;
    fake.fail_next(2, Failure::QuotaExceeded(1));
    let started = tokio::time::Instant::now();

    let sent = push
        .send(&notification(Uuid::new_v4(), "confirmed", None))
        .await;

    assert_eq!(sent, Ok(()));
    assert_eq!(fake.requests(), 3, "two refusals, one success");
    assert!(
        started.elapsed() >= Duration::from_secs(2),
        "Retry-After was honoured"
    );

    fake.fail_next(1, Failure::Forbidden);
    let forbidden = push
        .send(&notification(Uuid::new_v4(), "confirmed", None))
        .await;

    match forbidden {
        Err(PushError::Unavailable(message)) => assert!(message.contains("403"), "{message}"),
        other => panic!("expected Unavailable, got {other:?}"),
    }
    assert_eq!(
        fake.requests(),
        4,
        "a 403 without Retry-After is not retried"
    );
}
