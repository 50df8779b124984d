//! The `orderflow` binary as a user runs it: start, serve, stop on SIGTERM, start again.

mod common;

use std::process::Command;

use common::{Api, Process};
use serde_json::json;

fn serve(data: &std::path::Path) -> Process {
    Process::serve("serve", data, "all", &[], &[])
}

/// A data directory whose server took `quantities.len()` orders of tea (one per quantity),
/// saw each confirmed and stopped; with the orders' ids and the whole log as it was left.
async fn stopped_with_orders(
    customer: &str,
    quantities: &[u32],
) -> (tempfile::TempDir, Vec<String>, Vec<domain::RecordedEvent>) {
    let data = tempfile::tempdir().unwrap();
    let mut server = serve(data.path());
    let api = Api::new(&server.url);
    let token = api.token(customer, "customer").await;
    let mut ids = Vec::new();
    for quantity in quantities {
        let id = api
            .place(&token, json!([{"sku": "TEA-001", "quantity": quantity}]))
            .await;
        let view = api
            .get(&token, &format!("/api/orders/{id}?min_version=2"))
            .await;
        assert_eq!(view["status"], "confirmed");
        ids.push(id);
    }
    assert!(server.terminate().success());
    let store = infra::event_store::SqliteEventStore::open(&data.path().join("orderflow.db"))
        .await
        .unwrap();
    let store: std::sync::Arc<dyn eventlog::EventStore> = std::sync::Arc::new(store);
    let log = eventlog::conformance::whole_log(&store).await;
    (data, ids, log)
}

/// `orderflow ARGS --data DATA`, run to the end.
fn orderflow(args: &[&str], data: &std::path::Path) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_orderflow"))
        .args(args)
        .arg("--data")
        .arg(data)
        .output()
        .unwrap()
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
    let (data, ids, _) = stopped_with_orders("histo", &[2]).await;
    let order_id = &ids[0];
    let history = |args: &[&str]| orderflow(&[&["history"], args].concat(), data.path());

    let table = history(&[order_id]);
    let at_one = history(&[order_id, "--at-version", "1", "--json"]);
    let before = history(&[order_id, "--as-of", "2000-01-01T00:00:00Z"]);
    let unknown = history(&["00000000-0000-7000-8000-000000000000"]);
    let both = history(&[
        order_id,
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
    let (data, _, log) = stopped_with_orders("exporter", &[1, 2, 3]).await;
    let out = tempfile::tempdir().unwrap();
    let export = |args: &[&str]| orderflow(&[&["export"], args].concat(), data.path());
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
            event.payload.to_value(),
            payload,
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

/// `orderflow export --format parquet` on the same kind of store: one row per event of the
/// log, in its order, typed (timestamps to the microsecond, absent metadata as nulls); standard
/// output is refused.
#[cfg(feature = "parquet")]
#[tokio::test]
async fn export_writes_the_log_as_parquet() {
    use arrow_array::cast::AsArray;
    use arrow_array::types::{TimestampMicrosecondType, UInt32Type, UInt64Type};
    use arrow_array::{Array, RecordBatch};
    use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;

    let (data, _, log) = stopped_with_orders("parquet", &[1, 2]).await;
    let out = tempfile::tempdir().unwrap();
    let file = out.path().join("events.parquet");
    let export = |args: &[&str]| {
        orderflow(
            &[&["export", "--format", "parquet"], args].concat(),
            data.path(),
        )
    };

    let as_parquet = export(&["-o", file.to_str().unwrap()]);
    let to_stdout = export(&[]);

    assert!(
        as_parquet.status.success(),
        "{}",
        String::from_utf8_lossy(&as_parquet.stderr)
    );
    assert!(
        String::from_utf8_lossy(&as_parquet.stderr).contains(&format!(
            "exported {} of {} events",
            log.len(),
            log.len()
        ))
    );
    let reader = ParquetRecordBatchReaderBuilder::try_new(std::fs::File::open(&file).unwrap())
        .unwrap()
        .build()
        .unwrap();
    let batches: Vec<RecordBatch> = reader.map(Result::unwrap).collect();
    let names: Vec<String> = batches[0]
        .schema()
        .fields()
        .iter()
        .map(|f| f.name().clone())
        .collect();
    assert_eq!(names, services::export::CSV_COLUMNS, "the CSV's columns");
    let rows: usize = batches.iter().map(RecordBatch::num_rows).sum();
    assert_eq!(rows, log.len(), "one row per event in the log");
    let mut events = log.iter();
    for batch in &batches {
        let column = |name: &str| batch.column_by_name(name).unwrap();
        let global_position = column("global_position");
        let global_position = global_position.as_primitive::<UInt64Type>();
        let event_id = column("event_id");
        let event_id = event_id.as_string::<i32>();
        let stream_id = column("stream_id");
        let stream_id = stream_id.as_string::<i32>();
        let version = column("version");
        let version = version.as_primitive::<UInt64Type>();
        let schema_version = column("schema_version");
        let schema_version = schema_version.as_primitive::<UInt32Type>();
        let occurred_at = column("occurred_at");
        let occurred_at = occurred_at.as_primitive::<TimestampMicrosecondType>();
        let causation_id = column("causation_id");
        let causation_id = causation_id.as_string::<i32>();
        let actor = column("actor");
        let actor = actor.as_string::<i32>();
        let payload = column("payload");
        let payload = payload.as_string::<i32>();
        assert_eq!(occurred_at.timezone(), Some("UTC"));
        for row in 0..batch.num_rows() {
            let event = events.next().unwrap();
            assert_eq!(Some(global_position.value(row)), event.global_position);
            assert_eq!(event_id.value(row), event.event_id.to_string());
            assert_eq!(stream_id.value(row), event.stream_id);
            assert_eq!(version.value(row), event.version);
            assert_eq!(schema_version.value(row), event.schema_version);
            assert_eq!(
                occurred_at.value_as_datetime(row).map(|t| t.and_utc()),
                Some(event.occurred_at),
                "occurred_at to the microsecond"
            );
            let causation = causation_id
                .is_valid(row)
                .then(|| causation_id.value(row).to_owned());
            assert_eq!(
                causation,
                event.metadata.causation_id.map(|id| id.to_string()),
                "null where the event has no cause"
            );
            assert_eq!(actor.value(row), event.metadata.actor);
            let json: serde_json::Value = serde_json::from_str(payload.value(row)).unwrap();
            assert_eq!(json, event.payload.to_value());
        }
    }
    assert!(
        log.iter().any(|e| e.metadata.causation_id.is_none())
            && log.iter().any(|e| e.metadata.causation_id.is_some()),
        "the log has events with and without a cause"
    );

    assert_eq!(to_stdout.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&to_stdout.stderr).contains("--output FILE"));
    let left: Vec<_> = std::fs::read_dir(out.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(left, ["events.parquet"], "only the finished file");
}

/// A build without the parquet feature says which feature it lacks, and exits 1 before
/// touching the store.
#[cfg(not(feature = "parquet"))]
#[test]
fn export_as_parquet_names_the_missing_feature() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let file = dir.path().join("events.parquet");
    let output = orderflow(
        &[
            "export",
            "--format",
            "parquet",
            "-o",
            file.to_str().unwrap(),
        ],
        &data,
    );
    assert_eq!(output.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&output.stderr).contains("--features parquet"));
    let left: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
    assert!(
        left.is_empty(),
        "refused before any store or file: {left:?}"
    );
}

/// `orderflow dead-letters` on RabbitMQ (`ORDERFLOW_TEST_AMQP`, default the local broker), as an
/// operator mends a failure: the processor's subscription parks two events; the CLI lists them,
/// re-drives one back to that subscription (the mended consumer takes it as a first delivery),
/// refuses to act without a choice, and discards the other with a reason. Needs the broker, so
/// it builds with the `servers` feature only (`cargo test --workspace`).
#[cfg(feature = "servers")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dead_letters_are_listed_redriven_and_discarded_from_the_command_line() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};

    use infra::bus::conformance::{events, publish, settled, spawn_consumer};
    use infra::bus::{EventBus, RabbitBus};

    let amqp = std::env::var("ORDERFLOW_TEST_AMQP")
        .unwrap_or_else(|_| "amqp://guest:guest@127.0.0.1:5672/%2f".into());
    let url = format!(
        "{amqp}?prefix=cli{}",
        &uuid::Uuid::new_v4().simple().to_string()[..10]
    );
    let data = tempfile::tempdir().unwrap();
    let policy = services::config::Settings::embedded(
        "127.0.0.1:0".parse().unwrap(),
        data.path().to_owned(),
    )
    .retry;
    let rabbit = Arc::new(
        RabbitBus::connect(&url, &services::system::SUBSCRIPTIONS, policy)
            .await
            .expect("the broker answers"),
    );
    let bus: Arc<dyn EventBus> = rabbit.clone();
    let mended = Arc::new(AtomicBool::new(false));
    let fixed = mended.clone();
    let processor = spawn_consumer(bus.clone(), "order-processor", move |_, _| {
        if fixed.load(Ordering::SeqCst) {
            Ok(())
        } else {
            Err("the payment gateway refused the merchant id".into())
        }
    })
    .await;
    let sent = events(2);
    settled(publish(&bus, &sent).await).await;
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(60);
    while bus.dead_letters().await.unwrap().len() < 2 {
        assert!(tokio::time::Instant::now() < deadline, "two dead letters");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let cli = |args: &[&str]| {
        let output = Command::new(env!("CARGO_BIN_EXE_orderflow"))
            .arg("dead-letters")
            .args(args)
            .args(["--bus", &url, "--data"])
            .arg(data.path())
            .output()
            .unwrap();
        (
            output.status.code(),
            String::from_utf8_lossy(&output.stdout).into_owned(),
            String::from_utf8_lossy(&output.stderr).into_owned(),
        )
    };

    let (code, table, _) = cli(&["list"]);
    assert_eq!(code, Some(0));
    assert!(table.contains("order-processor"), "{table}");
    assert!(table.contains("payment gateway refused"), "{table}");
    assert!(table.contains("2 dead letters listed"), "{table}");
    let (code, json, _) = cli(&[
        "list",
        "--json",
        "--event-id",
        &sent[0].event_id.to_string(),
    ]);
    assert_eq!(code, Some(0));
    let listed: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(listed["count"], 1, "{listed}");
    assert_eq!(listed["items"][0]["attempts"], policy.max_attempts);

    let (code, _, error) = cli(&["redrive"]);
    assert_eq!(code, Some(1), "a re-drive must choose");
    assert!(error.contains("--all"), "{error}");
    let (code, _, error) = cli(&["discard", "--all", "--reason", " "]);
    assert_eq!(code, Some(1), "a discard must say why");
    assert!(error.contains("--reason"), "{error}");

    mended.store(true, Ordering::SeqCst);
    let seen = processor.seen().len();
    let (code, out, error) = cli(&[
        "redrive",
        "--subscription",
        "order-processor",
        "--event-id",
        &sent[0].event_id.to_string(),
    ]);
    assert_eq!(code, Some(0), "{error}");
    assert!(out.contains("1 dead letter re-driven"), "{out}");
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(30);
    while processor.seen().len() <= seen {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the re-driven event comes again"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    let again = &processor.seen()[seen];
    assert_eq!((again.event.event_id, again.attempt), (sent[0].event_id, 1));

    let (code, out, error) = cli(&["discard", "--all", "--reason", "settled by hand"]);
    assert_eq!(code, Some(0), "{error}");
    assert!(out.contains("1 dead letter discarded"), "{out}");
    assert_eq!(bus.dead_letters().await.unwrap(), vec![]);
    processor.stop().await;
    rabbit.delete_topology().await.unwrap();
}

#[test]
fn the_in_process_topic_points_to_its_server_for_a_redrive() {
    let data = tempfile::tempdir().unwrap();
    let list = orderflow(&["dead-letters", "list"], data.path());
    assert_eq!(list.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&list.stdout).contains("0 dead letters listed"));
    let redrive = orderflow(&["dead-letters", "redrive", "--all"], data.path());
    assert_eq!(redrive.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&redrive.stderr).contains("/api/dead-letters/redrive"),
        "{}",
        String::from_utf8_lossy(&redrive.stderr)
    );
}
