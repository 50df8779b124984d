//! Running `orderflow` as a user does: as OS processes, found on the URL they log.
//!
//! Shared by the services crate's own tests and, as `orderflow_tests::process`, by the
//! cross-crate ones (the system on the Azure fakes).

#![allow(dead_code)]

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::{Value, json};
use uuid::Uuid;

/// The `orderflow` binary. Cargo names it to the services crate's own tests; another crate's
/// tests find it beside their own executable's folder (`target/debug`), where
/// `cargo test --workspace` builds it.
pub fn binary() -> PathBuf {
    if let Some(path) = option_env!("CARGO_BIN_EXE_orderflow") {
        return path.into();
    }
    let exe = std::env::current_exe().expect("the test's own path");
    let target = exe
        .parent()
        .and_then(Path::parent)
        .expect("tests run from target/PROFILE/deps");
    let binary = target.join("orderflow");
    assert!(
        binary.exists(),
        "{} is missing: run `cargo test --workspace`, or build it first with \
         `cargo build -p services --features azure`",
        binary.display()
    );
    binary
}

/// A running `orderflow` process and the base URL it serves.
pub struct Process {
    pub name: String,
    pub child: Child,
    pub url: String,
    /// Every line it has written to standard output so far.
    pub log: Arc<Mutex<Vec<String>>>,
}

impl Process {
    /// Starts `orderflow ARGS` and waits for its "listening on" log line.
    pub fn start(name: &str, args: &[&str], env: &[(&str, &str)]) -> Process {
        let mut command = Command::new(binary());
        command
            .args(args)
            .env("RUST_LOG", "info")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        for (key, value) in env {
            command.env(key, value);
        }
        let mut child = command.spawn().expect("the binary starts");
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        let echo = std::env::var_os("TEST_LOG").is_some();
        let label = name.to_owned();
        let log = Arc::new(Mutex::new(Vec::new()));
        let kept = log.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Ok(mut kept) = kept.lock() {
                    kept.push(line.clone());
                }
                if echo {
                    eprintln!("[{label}] {line}");
                }
                if let Some(at) = line.find("listening on http://") {
                    let url = line[at + "listening on ".len()..]
                        .split_whitespace()
                        .next()
                        .unwrap()
                        .to_owned();
                    let _ = tx.send(url);
                }
            }
        });
        let url = match rx.recv_timeout(Duration::from_secs(60)) {
            Ok(url) => url,
            Err(_) => {
                let _ = child.kill();
                panic!("{name} did not start listening within 60 s (TEST_LOG=1 shows its log)");
            }
        };
        Process {
            name: name.to_owned(),
            child,
            url,
            log,
        }
    }

    /// `orderflow serve` with these roles on a free port, in `data`.
    pub fn serve(
        name: &str,
        data: &Path,
        roles: &str,
        extra: &[&str],
        env: &[(&str, &str)],
    ) -> Process {
        let data = data.to_str().unwrap();
        let mut args = vec![
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--data",
            data,
            "--role",
            roles,
        ];
        args.extend_from_slice(extra);
        Process::start(name, &args, env)
    }

    /// SIGTERM, then waits (up to 15 s) for the exit status.
    pub fn terminate(&mut self) -> ExitStatus {
        signal(&self.child, "TERM");
        wait(&mut self.child, Duration::from_secs(15))
            .unwrap_or_else(|| panic!("{} did not stop on SIGTERM", self.name))
    }

    /// SIGKILL: the process dies where it is.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

fn signal(child: &Child, name: &str) {
    let status = Command::new("kill")
        .args([&format!("-{name}"), &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
}

fn wait(child: &mut Child, limit: Duration) -> Option<ExitStatus> {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return Some(status);
        }
        if Instant::now() >= deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The dead letters a `/metrics` text counts over every subscription, or `None` if it has no
/// `orderflow_dead_letters` line at all.
pub fn dead_letters_in(metrics: &str) -> Option<u64> {
    let counts: Vec<u64> = metrics
        .lines()
        .filter(|l| l.starts_with("orderflow_dead_letters{"))
        .filter_map(|l| l.rsplit(' ').next()?.parse().ok())
        .collect();
    (!counts.is_empty()).then(|| counts.iter().sum())
}

/// An HTTP client of the web role.
pub struct Api {
    pub url: String,
    pub client: reqwest::Client,
}

impl Api {
    pub fn new(url: &str) -> Self {
        Self {
            url: url.to_owned(),
            client: reqwest::Client::new(),
        }
    }

    pub async fn token(&self, name: &str, role: &str) -> String {
        let body: Value = self
            .client
            .post(format!("{}/api/dev/token", self.url))
            .json(&json!({"customer_id": name, "role": role}))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        body["token"].as_str().unwrap().to_owned()
    }

    pub async fn get(&self, token: &str, path: &str) -> Value {
        let response = self
            .client
            .get(format!("{}{path}", self.url))
            .bearer_auth(token)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::OK, "GET {path}");
        response.json().await.unwrap()
    }

    pub async fn place(&self, token: &str, lines: Value) -> String {
        let body = json!({"lines": lines, "shipping_address": {
            "name": "Dee Stributed", "line1": "5 Queue Lane", "city": "Rabbitburg",
            "postal_code": "5672", "country": "DE"}});
        let response = self
            .client
            .post(format!("{}/api/orders", self.url))
            .bearer_auth(token)
            .header("Idempotency-Key", Uuid::new_v4().to_string())
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::ACCEPTED);
        let placed: Value = response.json().await.unwrap();
        placed["order_id"].as_str().unwrap().to_owned()
    }
}

/// Waits (up to 30 s) until the process at `url` says it is ready.
pub async fn wait_ready(url: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let ready = reqwest::get(format!("{url}/ready")).await;
        if ready.is_ok_and(|r| r.status() == StatusCode::OK) {
            return;
        }
        assert!(Instant::now() < deadline, "{url}/ready never answered 200");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The order lines for order number `i`: mostly tea (confirmed), every 50th eight grinders
/// (payment declined), every 25th a teapot (one in stock: the rest out of stock).
pub fn lines_for(i: usize) -> Value {
    if i.is_multiple_of(50) {
        json!([{"sku": "GRINDER-001", "quantity": 8}])
    } else if i % 25 == 1 {
        json!([{"sku": "TEAPOT-001", "quantity": 1}])
    } else {
        json!([{"sku": "TEA-001", "quantity": 1 + i % 3}])
    }
}

/// Waits until no order in `ids` is `placed` any more; returns the final views.
pub async fn settle(
    api: &Api,
    token: &str,
    ids: &[String],
    limit: Duration,
) -> HashMap<String, Value> {
    let deadline = Instant::now() + limit;
    let mut settled = HashMap::new();
    while settled.len() < ids.len() {
        let pending: Vec<&String> = ids.iter().filter(|id| !settled.contains_key(*id)).collect();
        for id in pending {
            let view = api.get(token, &format!("/api/orders/{id}")).await;
            if view["status"] != "placed" {
                settled.insert(id.clone(), view);
            }
        }
        let pending = ids.len() - settled.len();
        assert!(
            Instant::now() < deadline,
            "{pending} orders never left 'placed'"
        );
        if pending > 0 {
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    settled
}

/// The orders [`lines_for`] placed are all decided, and as their events say: each view is the
/// fold of its stream, the one teapot went to one order, every 50th order was declined, and
/// the stock reserved is exactly what the confirmed orders hold (no event acted twice).
pub async fn assert_decided_as_their_events_say(
    api: &Api,
    analyst: &str,
    views: &HashMap<String, Value>,
) {
    let mut confirmed_tea = 0;
    for (id, view) in views {
        let status = view["status"].as_str().unwrap();
        assert!(
            ["confirmed", "rejected"].contains(&status),
            "{id} is {status}"
        );
        let version = view["version"].as_u64().unwrap();
        let folded = api
            .get(analyst, &format!("/api/orders/{id}?at_version={version}"))
            .await;
        assert_eq!(
            &folded, view,
            "the read model of {id} is not the fold of its events"
        );
        if status == "confirmed" && view["lines"][0]["sku"] == "TEA-001" {
            confirmed_tea += view["lines"][0]["quantity"].as_u64().unwrap();
        }
    }
    let teapots = views
        .values()
        .filter(|v| v["lines"][0]["sku"] == "TEAPOT-001");
    assert_eq!(teapots.filter(|v| v["status"] == "confirmed").count(), 1);
    let declined = views
        .values()
        .filter(|v| v["reason"] == "payment_declined")
        .count();
    let expected_declines = (0..views.len()).filter(|i| i.is_multiple_of(50)).count();
    assert_eq!(declined, expected_declines, "every 50th order is declined");

    // No event acted twice: the stock reserved is exactly what the confirmed orders hold.
    let catalog: Value = api
        .client
        .get(format!("{}/api/catalog", api.url))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let tea = catalog
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["sku"] == "TEA-001")
        .unwrap();
    assert_eq!(tea["reserved"].as_u64().unwrap(), confirmed_tea);
    let grinder = catalog
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["sku"] == "GRINDER-001")
        .unwrap();
    assert_eq!(
        grinder["reserved"], 0,
        "declined orders released their stock"
    );
}

/// A TCP link to a server that a test can sever (the chaos run's own): while severed, the
/// server is unreachable through it; the server itself, shared with other tests, is untouched.
pub struct Severable {
    pub port: u16,
    link: services::chaos::Severable,
}

impl Severable {
    /// Forwards `127.0.0.1:{port}` to `target` (`host:port`).
    pub async fn to(target: &str) -> Self {
        let link = services::chaos::Severable::to(target)
            .await
            .expect("a local port");
        Self {
            port: link.port,
            link,
        }
    }

    pub fn sever(&self) {
        self.link.sever();
    }

    pub fn restore(&self) {
        self.link.restore();
    }
}
