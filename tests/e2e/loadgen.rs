//! `orderflow loadgen` against a running app: closed and open loop, every order accepted and
//! decided, and `--json` with the fields scripts read.

use services::loadgen::{LoadPlan, Until, run};

use orderflow_tests::{spawn_app, unique_sku};

fn plan(url: &str, sku: &str, until: Until, rate: Option<f64>) -> LoadPlan {
    LoadPlan {
        url: url.to_owned(),
        clients: 4,
        until,
        rate,
        skus: vec![sku.to_owned()],
        restock: true,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_closed_loop_places_every_order_and_waits_for_each_decision() {
    let app = spawn_app().await;
    let sku = unique_sku("LOAD");
    app.list_product(&sku, 450, 0).await;

    let report = run(&plan(&app.address, &sku, Until::Orders(40), None))
        .await
        .expect("loadgen");

    assert_eq!(report.mode, "closed");
    assert_eq!((report.orders, report.accepted), (40, 40), "{report}");
    assert_eq!(
        report.confirmed, 40,
        "restocked first, so none is rejected: {report}"
    );
    assert!(report.errors.is_empty(), "{report}");
    assert!(report.accept_p50_ms > 0.0 && report.accept_p50_ms <= report.accept_p99_ms);
    assert!(report.accept_p99_ms <= report.accept_max_ms);
    assert!(
        report.e2e_p50_ms >= report.accept_p50_ms,
        "a decision comes after the acceptance: {report}"
    );
    let catalog = app.catalog_item(&sku).await;
    assert_eq!(catalog["reserved"], 40, "the orders reached the server");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_open_loop_sends_at_the_rate_asked() {
    let app = spawn_app().await;
    let sku = unique_sku("LOAD");
    app.list_product(&sku, 450, 0).await;

    let report = run(&plan(&app.address, &sku, Until::Orders(20), Some(50.0)))
        .await
        .expect("loadgen");

    assert_eq!(report.mode, "open");
    assert_eq!(report.accepted, 20, "{report}");
    assert!(
        report.duration_s >= 19.0 / 50.0,
        "20 orders at 50/s take at least 0.38 s: {report}"
    );
    assert_eq!(report.confirmed + report.rejected, 20);
    assert!(
        report.pacer_late_p50_ms <= report.accept_p50_ms
            && report.pacer_late_p99_ms <= report.accept_p99_ms,
        "the timer's lateness is a part of each order's latency, never more: {report}"
    );
    assert!(
        report.to_string().contains("pacer"),
        "the open loop says how late its timer woke: {report}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_command_prints_one_json_object_with_the_measures() {
    let app = spawn_app().await;
    let sku = unique_sku("LOAD");
    app.list_product(&sku, 450, 0).await;

    let url = app.address.clone();
    let output = tokio::task::spawn_blocking(move || {
        std::process::Command::new(orderflow_tests::process::binary())
            .args(["loadgen", "--url", &url, "--clients", "2", "--orders", "6"])
            .args(["--sku", &sku, "--json"])
            .output()
    })
    .await
    .unwrap()
    .unwrap();

    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let report: serde_json::Value = serde_json::from_slice(&output.stdout).expect("JSON");
    for field in [
        "orders",
        "accepted_per_s",
        "accept_p50_ms",
        "accept_p99_ms",
        "e2e_p50_ms",
        "e2e_p99_ms",
        "pacer_late_p99_ms",
        "errors",
    ] {
        assert!(report.get(field).is_some(), "{field} in {report}");
    }
    assert_eq!(report["orders"], 6);
    assert_eq!(report["errors"], serde_json::json!({}));
}
