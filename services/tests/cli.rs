//! The `orderflow` binary as a user runs it: start, serve, stop on SIGTERM, start again.

mod common;

use std::process::Command;

use common::Process;
use serde_json::{Value, json};

fn serve(data: &std::path::Path) -> Process {
    Process::serve("serve", data, "all", &[], &[])
}

#[tokio::test]
async fn serve_stops_cleanly_on_sigterm_and_keeps_its_orders() {
    let data = tempfile::tempdir().unwrap();
    let client = reqwest::Client::new();
    let mut server = serve(data.path());
    let url = server.url.clone();
    let token: Value = client
        .post(format!("{url}/api/dev/token"))
        .json(&json!({"customer_id": "cli"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let token = token["token"].as_str().unwrap().to_owned();
    let placed: Value = client
        .post(format!("{url}/api/orders"))
        .bearer_auth(&token)
        .header("Idempotency-Key", "cli-1")
        .json(&json!({"lines": [{"sku": "TEA-001", "quantity": 1}],
            "shipping_address": {"name": "C", "line1": "1 Road", "city": "Town", "postal_code": "1", "country": "FR"}}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let order = format!(
        "/api/orders/{}?min_version=2",
        placed["order_id"].as_str().unwrap()
    );
    let view: Value = client
        .get(format!("{url}{order}"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(view["status"], "confirmed");

    let status = server.terminate();
    assert!(status.success(), "exit status {status}");

    let mut server = serve(data.path());
    let url = server.url.clone();
    let again: Value = client
        .get(format!("{url}{order}"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(again, view);
    assert!(server.terminate().success());
}

#[test]
fn a_bad_listen_address_fails_with_a_clear_message_and_exit_code() {
    let output = Command::new(env!("CARGO_BIN_EXE_orderflow"))
        .args(["serve", "--listen", "not-an-address"])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&output.stderr).contains("--listen"));
}

#[test]
fn an_unusable_data_directory_fails_with_exit_code_1() {
    let file = tempfile::NamedTempFile::new().unwrap();
    let output = Command::new(env!("CARGO_BIN_EXE_orderflow"))
        .args(["serve", "--listen", "127.0.0.1:0", "--data"])
        .arg(file.path())
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&output.stderr).contains("data directory"));
}
