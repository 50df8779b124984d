//! The `orderflow` binary as a user runs it: start, serve, stop on SIGTERM, start again.

mod common;

use std::process::Command;

use common::{Api, Process};
use serde_json::json;

fn serve(data: &std::path::Path) -> Process {
    Process::serve("serve", data, "all", &[], &[])
}

#[tokio::test]
async fn serve_stops_cleanly_on_sigterm_and_keeps_its_orders() {
    let data = tempfile::tempdir().unwrap();
    let mut server = serve(data.path());
    let api = Api::new(&server.url);
    let token = api.token("cli", "customer").await;
    let order_id = api
        .place(&token, json!([{"sku": "TEA-001", "quantity": 1}]))
        .await;
    let order = format!("/api/orders/{order_id}?min_version=2");
    let view = api.get(&token, &order).await;
    assert_eq!(view["status"], "confirmed");

    let status = server.terminate();
    assert!(status.success(), "exit status {status}");

    let mut server = serve(data.path());
    let again = Api::new(&server.url).get(&token, &order).await;
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
