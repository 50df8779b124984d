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

/// `orderflow history` on the store a stopped server left: the timeline, the state now, at a
/// version and before the order existed; an unknown order exits 1, contradictory flags 2.
#[tokio::test]
async fn history_prints_an_orders_timeline_and_its_state_at_a_point() {
    let data = tempfile::tempdir().unwrap();
    let mut server = serve(data.path());
    let api = Api::new(&server.url);
    let token = api.token("histo", "customer").await;
    let order_id = api
        .place(&token, json!([{"sku": "TEA-001", "quantity": 2}]))
        .await;
    let view = api
        .get(&token, &format!("/api/orders/{order_id}?min_version=2"))
        .await;
    assert_eq!(view["status"], "confirmed");
    assert!(server.terminate().success());
    let history = |args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_orderflow"))
            .arg("history")
            .args(args)
            .arg("--data")
            .arg(data.path())
            .output()
            .unwrap()
    };

    let table = history(&[&order_id]);
    let at_one = history(&[&order_id, "--at-version", "1", "--json"]);
    let before = history(&[&order_id, "--as-of", "2000-01-01T00:00:00Z"]);
    let unknown = history(&["00000000-0000-7000-8000-000000000000"]);
    let both = history(&[
        &order_id,
        "--at-version",
        "1",
        "--as-of",
        "2000-01-01T00:00:00Z",
    ]);

    let text = String::from_utf8_lossy(&table.stdout);
    assert!(
        table.status.success(),
        "{}",
        String::from_utf8_lossy(&table.stderr)
    );
    assert!(
        text.contains("OrderPlaced") && text.contains("OrderConfirmed"),
        "{text}"
    );
    assert!(text.contains("state now: confirmed (version 2)"), "{text}");
    let json: serde_json::Value = serde_json::from_slice(&at_one.stdout).unwrap();
    assert_eq!(json["state"]["status"], "placed");
    assert_eq!(json["cutoff"]["at_version"], 1);
    assert_eq!(json["events"][0]["included"], true);
    assert_eq!(json["events"][1]["included"], false);
    let text = String::from_utf8_lossy(&before.stdout);
    assert!(text.contains("did not exist yet"), "{text}");
    assert_eq!(unknown.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&unknown.stderr).contains("no order"));
    assert_eq!(
        both.status.code(),
        Some(2),
        "--as-of and --at-version exclude each other"
    );
}
