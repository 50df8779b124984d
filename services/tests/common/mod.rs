//! Running `orderflow` as a user does: as OS processes, found on the URL they log.

#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::{Value, json};
use uuid::Uuid;

/// A running `orderflow` process and the base URL it serves.
pub struct Process {
    pub name: String,
    pub child: Child,
    pub url: String,
}

impl Process {
    /// Starts `orderflow ARGS` and waits for its "listening on" log line.
    pub fn start(name: &str, args: &[&str], env: &[(&str, &str)]) -> Process {
        let mut command = Command::new(env!("CARGO_BIN_EXE_orderflow"));
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
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
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
