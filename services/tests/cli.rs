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

/// `orderflow export` on the store a stopped server left: JSON Lines that are exactly the log,
/// CSV with the stable header and the same events, filters by type and time, and failures
/// that exit 1 and leave no file.
#[tokio::test]
async fn export_writes_the_log_as_json_lines_and_csv() {
    let data = tempfile::tempdir().unwrap();
    let mut server = serve(data.path());
    let api = Api::new(&server.url);
    let token = api.token("exporter", "customer").await;
    for quantity in 1..=3 {
        let id = api
            .place(&token, json!([{"sku": "TEA-001", "quantity": quantity}]))
            .await;
        api.get(&token, &format!("/api/orders/{id}?min_version=2"))
            .await;
    }
    assert!(server.terminate().success());
    let store = infra::event_store::SqliteEventStore::open(&data.path().join("orderflow.db"))
        .await
        .unwrap();
    let store: std::sync::Arc<dyn commands::EventStore> = std::sync::Arc::new(store);
    let log = infra::event_store::conformance::whole_log(&store).await;
    drop(store);
    let out = tempfile::tempdir().unwrap();
    let export = |args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_orderflow"))
            .arg("export")
            .args(args)
            .arg("--data")
            .arg(data.path())
            .output()
            .unwrap()
    };
    let jsonl = out.path().join("events.jsonl");
    let csv = out.path().join("events.csv");

    let as_jsonl = export(&["--output", jsonl.to_str().unwrap()]);
    let as_csv = export(&["--format", "csv", "-o", csv.to_str().unwrap()]);
    let placed = export(&["--type", "OrderPlaced"]);
    let future = export(&["--since", "2999-01-01T00:00:00Z"]);
    let nowhere = export(&[
        "-o",
        out.path().join("no/such/dir/x.jsonl").to_str().unwrap(),
    ]);
    let backwards = export(&[
        "--since",
        "2026-02-01T00:00:00Z",
        "--until",
        "2026-01-01T00:00:00Z",
    ]);

    assert!(
        as_jsonl.status.success(),
        "{}",
        String::from_utf8_lossy(&as_jsonl.stderr)
    );
    let exported: Vec<domain::RecordedEvent> = std::fs::read_to_string(&jsonl)
        .unwrap()
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect();
    assert_eq!(exported, log, "the JSON Lines are the log, in its order");
    assert!(String::from_utf8_lossy(&as_jsonl.stderr).contains(&format!(
        "exported {} of {} events",
        log.len(),
        log.len()
    )));

    assert!(
        as_csv.status.success(),
        "{}",
        String::from_utf8_lossy(&as_csv.stderr)
    );
    let mut rows = csv::Reader::from_path(&csv).unwrap();
    let header: Vec<String> = rows.headers().unwrap().iter().map(String::from).collect();
    assert_eq!(header, services::export::CSV_COLUMNS);
    let rows: Vec<csv::StringRecord> = rows.records().map(Result::unwrap).collect();
    assert_eq!(rows.len(), log.len());
    for (row, event) in rows.iter().zip(&log) {
        assert_eq!(row[1], event.event_id.to_string());
        assert_eq!(row[5], event.event_type);
        let payload: serde_json::Value = serde_json::from_str(&row[13]).unwrap();
        assert_eq!(
            payload, event.payload,
            "the payload column is the payload's JSON"
        );
    }

    let placed: Vec<serde_json::Value> = String::from_utf8_lossy(&placed.stdout)
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect();
    assert_eq!(placed.len(), 3);
    assert!(placed.iter().all(|e| e["event_type"] == "OrderPlaced"));
    assert!(future.status.success() && future.stdout.is_empty());
    assert_eq!(nowhere.status.code(), Some(1));
    assert_eq!(backwards.status.code(), Some(1));
    let left: Vec<_> = std::fs::read_dir(out.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(left.len(), 2, "only the two finished files: {left:?}");
}
