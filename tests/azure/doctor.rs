//! `orderflow doctor` against the local fakes, set up as `docs/deploy-azure.md` provisions a
//! deployment, and then with each misconfiguration the doctor must catch: every one fails its
//! check with a fix, and only a deployment without any passes.

use std::time::Duration;

use orderflow_tests::fakes::cosmos::{CosmosConfig, CosmosFake};
use orderflow_tests::fakes::notification_hubs::FakeNotificationHubs;
use orderflow_tests::fakes::service_bus::{ServiceBusConfig, ServiceBusFake};
use orderflow_tests::fakes::{HUB_KEY, HUB_KEY_NAME, azure_settings};
use services::config::{AuthSettings, Secret, Settings};
use services::doctor::{Report, run};

/// The fakes of one deployment, provisioned as the deploy guide does.
struct Deployment {
    cosmos: CosmosFake,
    bus: ServiceBusFake,
    hubs: FakeNotificationHubs,
    _data: tempfile::TempDir,
    settings: Settings,
}

fn guide_bus() -> ServiceBusConfig {
    let mut config = ServiceBusConfig::new(&services::system::SUBSCRIPTIONS, 5);
    config.lock_duration = Duration::from_secs(60);
    config
}

async fn deployment_with(cosmos: CosmosConfig, bus: ServiceBusConfig) -> Deployment {
    let cosmos = CosmosFake::start(cosmos).await;
    let bus = ServiceBusFake::start(bus).await;
    let hubs = FakeNotificationHubs::start("orders", HUB_KEY_NAME, HUB_KEY).await;
    let data = tempfile::tempdir().unwrap();
    let mut settings = azure_settings(data.path(), &cosmos, &bus, &hubs);
    settings.servicebus_manage_key = Some(Secret::new(bus.config.manage_key.clone()));
    settings.cache = format!(
        "redis://127.0.0.1:6379?prefix=doctor{}",
        &uuid::Uuid::new_v4().simple().to_string()[..8]
    );
    settings.auth = AuthSettings::SharedSecret {
        secret: Secret::new("a-shared-secret-of-at-least-32-bytes!"),
        issuer: "https://shop.example".into(),
        audience: "orderflow".into(),
    };
    Deployment {
        cosmos,
        bus,
        hubs,
        _data: data,
        settings,
    }
}

async fn deployment() -> Deployment {
    deployment_with(CosmosConfig::new(), guide_bus()).await
}

/// The one failed check of `engine`, whose line and fix mention what they must.
fn failed<'r>(report: &'r Report, engine: &str, says: &str, fix_says: &str) -> &'r str {
    let failures = report.failures(engine);
    let found = failures
        .iter()
        .find(|c| c.detail.contains(says))
        .unwrap_or_else(|| panic!("no failed {engine} check saying {says:?}:\n{report}"));
    let fix = found.fix.as_deref().unwrap_or_default();
    assert!(fix.contains(fix_says), "the fix {fix:?} names {fix_says:?}");
    assert!(!report.passed(), "{report}");
    fix
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deployment_provisioned_as_the_guide_says_passes_every_check() {
    let deployment = deployment().await;

    let report = run(&deployment.settings).await;

    assert!(report.passed(), "{report}");
    let text = report.to_string();
    for says in [
        "containers partitioned by /streamId and /id",
        "events never expire",
        "duplicate detection on",
        "subscription order-processor: max delivery count 5, lock 60 s",
        "subscription projector",
        "subscription notifier",
        "api-version 2020-06",
        "answers",
        "HS256",
    ] {
        assert!(text.contains(says), "{says:?} in\n{text}");
    }
    assert!(text.ends_with(&format!("all {} checks passed", report.checks.len())));
    assert!(
        deployment.hubs.installations().is_empty(),
        "the probe installation was deleted"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_topic_without_duplicate_detection_fails() {
    let mut bus = guide_bus();
    bus.duplicate_detection = false;
    let deployment = deployment_with(CosmosConfig::new(), bus).await;

    let report = run(&deployment.settings).await;

    failed(
        &report,
        "topic",
        "duplicate detection is off",
        "--enable-duplicate-detection true",
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscriptions_with_another_max_delivery_count_or_a_short_lock_fail() {
    let mut bus = guide_bus();
    bus.max_delivery_count = 10;
    bus.lock_duration = Duration::from_secs(30);
    let deployment = deployment_with(CosmosConfig::new(), bus).await;

    let report = run(&deployment.settings).await;

    let fix = failed(
        &report,
        "topic",
        "max delivery count 10 instead of the 5 retry attempts",
        "--max-delivery-count 5",
    );
    assert!(fix.contains("--lock-duration PT60S"), "{fix}");
    assert!(
        report
            .to_string()
            .contains("lock duration 30 s under the adapter's 60 s")
    );
    assert_eq!(
        report.failures("topic").len(),
        3,
        "each subscription\n{report}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_subscription_or_topic_fails() {
    let mut bus = guide_bus();
    bus.subscriptions.retain(|s| s != "notifier");
    let deployment = deployment_with(CosmosConfig::new(), bus).await;

    let report = run(&deployment.settings).await;
    failed(
        &report,
        "topic",
        "subscription notifier does not exist",
        "subscription create",
    );

    let mut settings = deployment.settings.clone();
    settings.bus = settings.bus.replacen("/events?", "/orders?", 1);
    let report = run(&settings).await;
    failed(
        &report,
        "topic",
        "the topic orders does not exist",
        "duplicate detection",
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_topics_settings_need_a_manage_key() {
    let deployment = deployment().await;

    let mut settings = deployment.settings.clone();
    settings.servicebus_manage_key = None;
    let report = run(&settings).await;
    failed(
        &report,
        "topic",
        "Send/Listen key",
        "ORDERFLOW_SERVICEBUS_MANAGE_KEY",
    );

    // The roles' own key does not have the Manage right: the service says 401.
    settings.servicebus_manage_key = Some(Secret::new(deployment.bus.config.manage_key.clone()));
    settings.bus = format!(
        "{}&manage-key-name={}",
        settings.bus, deployment.bus.config.key_name
    );
    let report = run(&settings).await;
    failed(&report, "topic", "401", "ORDERFLOW_SERVICEBUS_MANAGE_KEY");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn containers_whose_time_to_live_loses_data_or_keeps_garbage_fail() {
    let mut cosmos = CosmosConfig::new();
    cosmos.events_default_ttl = Some(3600);
    cosmos.leases_default_ttl = None;
    let deployment = deployment_with(cosmos, guide_bus()).await;

    let report = run(&deployment.settings).await;

    failed(&report, "store", "deletes events after 3600 s", "--ttl -1");
    failed(&report, "store", "leases container has TTL off", "--ttl -1");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_container_with_another_partition_key_fails() {
    let deployment = deployment().await;
    let mut settings = deployment.settings.clone();
    // The leases container, partitioned by /id, named as the events container.
    settings.store = format!(
        "{}&container={}",
        settings.store, deployment.cosmos.config.leases_container
    );

    let report = run(&settings).await;

    failed(&report, "store", "/streamId", "/streamId");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hub_that_refuses_the_key_fails_the_registration_round_trip() {
    let deployment = deployment().await;
    let mut settings = deployment.settings.clone();
    settings.notificationhubs_key = Some(Secret::new("d3Jvbmcta2V5"));

    let report = run(&settings).await;

    failed(
        &report,
        "push",
        "api-version 2020-06",
        "ORDERFLOW_NOTIFICATIONHUBS_KEY",
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_azure_cache_without_tls_or_a_cache_that_does_not_answer_fails() {
    let deployment = deployment().await;
    let mut settings = deployment.settings.clone();

    settings.cache = "redis://shop.redis.cache.windows.net:6379?prefix=orderflow".into();
    let report = run(&settings).await;
    failed(
        &report,
        "cache",
        "without TLS",
        "rediss://shop.redis.cache.windows.net:6380",
    );

    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = closed.local_addr().unwrap().port();
    drop(closed);
    settings.cache = format!("redis://127.0.0.1:{port}?prefix=orderflow");
    let report = run(&settings).await;
    failed(
        &report,
        "cache",
        &format!("127.0.0.1:{port}"),
        "ORDERFLOW_CACHE_KEY",
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_development_login_fails() {
    let deployment = deployment().await;
    let mut settings = deployment.settings.clone();
    settings.auth = AuthSettings::Development;

    let report = run(&settings).await;

    failed(
        &report,
        "sign-in",
        "development login is on",
        "ORDERFLOW_OIDC_ISSUER",
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_identity_provider_that_does_not_answer_fails() {
    let deployment = deployment().await;
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let issuer = format!("http://127.0.0.1:{}", closed.local_addr().unwrap().port());
    drop(closed);
    let settings = Settings::resolve(services::config::Overrides {
        data: Some(deployment._data.path().display().to_string()),
        oidc: services::config::OidcOverrides {
            issuer: Some(issuer.clone()),
            audience: Some("orderflow".into()),
            ..Default::default()
        },
        ..Default::default()
    })
    .expect("settings with an OpenID provider");

    let report = run(&settings).await;

    failed(&report, "sign-in", &issuer, "ORDERFLOW_OIDC_ISSUER");
}

/// The binary as an operator runs it: one line per check, exit 0 only when all pass.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_command_prints_a_line_per_check_and_exits_by_the_outcome() {
    let deployment = deployment().await;
    let s = &deployment.settings;
    let doctor = |extra: &[(&str, &str)]| {
        let mut command = std::process::Command::new(orderflow_tests::process::binary());
        command
            .arg("doctor")
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("ORDERFLOW_DATA", deployment._data.path())
            .env("ORDERFLOW_STORE", &s.store)
            .env("ORDERFLOW_BUS", &s.bus)
            .env("ORDERFLOW_PUSH", &s.push)
            .env("ORDERFLOW_CACHE", &s.cache)
            .env("ORDERFLOW_COSMOS_KEY", &deployment.cosmos.config.key)
            .env("ORDERFLOW_SERVICEBUS_KEY", &deployment.bus.config.key)
            .env(
                "ORDERFLOW_SERVICEBUS_MANAGE_KEY",
                &deployment.bus.config.manage_key,
            )
            .env("ORDERFLOW_NOTIFICATIONHUBS_KEY", HUB_KEY);
        for (name, value) in extra {
            command.env(name, value);
        }
        command.output().expect("run orderflow doctor")
    };
    let jwt = [
        (
            "ORDERFLOW_JWT_SECRET",
            "a-shared-secret-of-at-least-32-bytes!",
        ),
        ("ORDERFLOW_JWT_ISSUER", "https://shop.example"),
        ("ORDERFLOW_JWT_AUDIENCE", "orderflow"),
    ];

    let good = doctor(&jwt);
    let dev = doctor(&[]);

    let out = String::from_utf8_lossy(&good.stdout);
    assert!(
        good.status.success(),
        "{out}\n{}",
        String::from_utf8_lossy(&good.stderr)
    );
    assert!(
        out.lines().filter(|l| l.starts_with("ok ")).count() >= 8,
        "{out}"
    );
    assert!(!out.contains("FAIL"), "{out}");
    let out = String::from_utf8_lossy(&dev.stdout);
    assert_eq!(dev.status.code(), Some(1), "{out}");
    assert!(out.contains("FAIL  sign-in"), "{out}");
    assert!(out.contains("fix: set ORDERFLOW_OIDC_ISSUER"), "{out}");
    assert!(
        !out.contains(&deployment.bus.config.manage_key) && !out.contains(HUB_KEY),
        "no key is printed"
    );
}
