//! `orderflow loadgen`: simulated customers placing orders through the HTTP API, measuring how
//! long each command takes to be accepted and how long until the order is decided (its view
//! at version 2: confirmed or rejected, read with `min_version`).
//!
//! Closed loop (the default): each client places an order, waits for the decision, places the
//! next. Open loop (`rate`): orders are due at fixed intervals whatever the answers, at most
//! `clients` in flight, and every latency counts from the moment the order was due, so a
//! server that stalls is charged for the orders it kept waiting (no coordinated omission).
//! The open loop also reports how late its own timer woke for each order (`pacer_late_*`):
//! that part of both latencies is the generator's and the machine's, not the server's (tokio's
//! timer ticks in whole milliseconds, and a virtual CPU woken from idle adds to it).
//!
//! It signs its customers in with the development login, so the server must run with
//! development auth (the embedded default).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, bail};
use serde::Serialize;
use serde_json::{Value, json};
use tokio::sync::Semaphore;
use tokio::time::Instant;
use uuid::Uuid;

/// How long the server may hold a status query waiting for the decision (`wait_ms`).
const DECISION_WAIT_MS: u64 = 10_000;
/// Units added to each SKU before the run, so that orders are confirmed, not rejected for
/// want of stock (the most one restock command takes).
const RESTOCK: u64 = 1_000_000;

/// What to run.
#[derive(Debug, Clone)]
pub struct LoadPlan {
    /// The server, e.g. `http://127.0.0.1:8080`.
    pub url: String,
    pub clients: usize,
    pub until: Until,
    /// Orders per second, all clients together: open loop. `None`: closed loop.
    pub rate: Option<f64>,
    /// The SKUs to order, one unit per order, taken in turn; empty: the whole catalog.
    pub skus: Vec<String>,
    /// Restock them before the run (as an operator).
    pub restock: bool,
}

#[derive(Debug, Clone, Copy)]
pub enum Until {
    Orders(u64),
    Elapsed(Duration),
}

/// What a run measured.
#[derive(Debug, Clone, Serialize)]
pub struct LoadReport {
    pub clients: usize,
    /// `closed` or `open`.
    pub mode: &'static str,
    pub rate: Option<f64>,
    /// Orders sent.
    pub orders: u64,
    pub accepted: u64,
    pub confirmed: u64,
    pub rejected: u64,
    pub duration_s: f64,
    pub accepted_per_s: f64,
    pub accept_p50_ms: f64,
    pub accept_p90_ms: f64,
    pub accept_p99_ms: f64,
    pub accept_max_ms: f64,
    pub e2e_p50_ms: f64,
    pub e2e_p90_ms: f64,
    pub e2e_p99_ms: f64,
    pub e2e_max_ms: f64,
    /// Open loop: how late the generator's timer woke for each order after it was due (or
    /// after it was asked, when the loop came late from waiting for a free client),
    /// included in both latencies above (0 in a closed loop, which has no due times).
    pub pacer_late_p50_ms: f64,
    pub pacer_late_p99_ms: f64,
    /// Failures by kind: the problem's `code`, `http_{status}`, `transport` or `undecided`.
    pub errors: BTreeMap<String, u64>,
}

/// Latencies and outcomes, shared by the clients.
#[derive(Default)]
struct Tally {
    accept: Vec<Duration>,
    e2e: Vec<Duration>,
    pacer_late: Vec<Duration>,
    confirmed: u64,
    rejected: u64,
    errors: BTreeMap<String, u64>,
}

impl Tally {
    fn error(&mut self, kind: String) {
        *self.errors.entry(kind).or_default() += 1;
    }
}

struct Target {
    http: reqwest::Client,
    url: String,
    skus: Vec<String>,
}

/// Runs the plan against a server and reports.
pub async fn run(plan: &LoadPlan) -> anyhow::Result<LoadReport> {
    if plan.clients == 0 {
        bail!("--clients must be at least 1");
    }
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(plan.clients)
        .build()?;
    let url = plan.url.trim_end_matches('/').to_owned();
    let skus = match plan.skus.as_slice() {
        [] => catalog_skus(&http, &url).await?,
        chosen => chosen.to_vec(),
    };
    let target = Arc::new(Target { http, url, skus });
    if plan.restock {
        restock(&target).await?;
    }
    let mut tokens = Vec::with_capacity(plan.clients);
    for i in 0..plan.clients {
        tokens.push(
            dev_token(
                &target,
                &format!("loadgen-{i}-{}", Uuid::new_v4()),
                "customer",
            )
            .await?,
        );
    }
    let tally = Arc::new(Mutex::new(Tally::default()));
    let started = Instant::now();
    let sent = match plan.rate {
        None => closed_loop(&target, &tokens, plan.until, &tally).await,
        Some(rate) => open_loop(&target, &tokens, plan.until, rate, &tally).await?,
    };
    let elapsed = started.elapsed();
    let tally = std::mem::take(&mut *tally.lock().unwrap_or_else(|p| p.into_inner()));
    Ok(report(plan, sent, elapsed, tally))
}

/// Each client: place, wait for the decision, again, until the plan is done.
async fn closed_loop(
    target: &Arc<Target>,
    tokens: &[String],
    until: Until,
    tally: &Arc<Mutex<Tally>>,
) -> u64 {
    let started = Instant::now();
    // Orders handed out so far; an order is sent only under the plan's limit.
    let sent = Arc::new(AtomicU64::new(0));
    let clients: Vec<_> = tokens
        .iter()
        .cloned()
        .map(|token| {
            let (target, tally, sent) = (target.clone(), tally.clone(), sent.clone());
            tokio::spawn(async move {
                loop {
                    // This client's next order number, if the plan has one left.
                    let next = match until {
                        Until::Orders(total) => sent
                            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                                (n < total).then_some(n + 1)
                            })
                            .ok(),
                        Until::Elapsed(d) => {
                            (started.elapsed() < d).then(|| sent.fetch_add(1, Ordering::AcqRel))
                        }
                    };
                    let Some(n) = next else {
                        return;
                    };
                    order(&target, &token, n, Instant::now(), &tally).await;
                }
            })
        })
        .collect();
    for client in clients {
        let _ = client.await;
    }
    sent.load(Ordering::Acquire)
}

/// Orders due every `1 / rate` s, at most one in flight per client; latencies count from the
/// due time.
async fn open_loop(
    target: &Arc<Target>,
    tokens: &[String],
    until: Until,
    rate: f64,
    tally: &Arc<Mutex<Tally>>,
) -> anyhow::Result<u64> {
    if !(rate.is_finite() && rate > 0.0) {
        bail!("--rate must be a positive number of orders per second");
    }
    let interval = Duration::from_secs_f64(1.0 / rate);
    let slots = Arc::new(Semaphore::new(tokens.len()));
    let started = Instant::now();
    let mut in_flight = Vec::new();
    let mut n: u64 = 0;
    loop {
        let due = started + interval.mul_f64(n as f64);
        let done = match until {
            Until::Orders(total) => n >= total,
            Until::Elapsed(d) => due - started >= d,
        };
        if done {
            break;
        }
        // The timer's own lateness: from the later of `due` and the moment the loop got here
        // (it may have waited for a free client before), so a full house is not counted.
        let asked = Instant::now().max(due);
        tokio::time::sleep_until(due).await;
        lock(tally).pacer_late.push(asked.elapsed());
        // Waiting for a free client delays the send, not the clock: the order was due at `due`.
        let slot = slots.clone().acquire_owned().await?;
        let (target, tally) = (target.clone(), tally.clone());
        let token = tokens[(n % tokens.len() as u64) as usize].clone();
        in_flight.push(tokio::spawn(async move {
            order(&target, &token, n, due, &tally).await;
            drop(slot);
        }));
        n += 1;
    }
    for order in in_flight {
        let _ = order.await;
    }
    Ok(n)
}

/// Order number `n`: place it, then wait for its decision; latencies from `due`.
async fn order(target: &Target, token: &str, n: u64, due: Instant, tally: &Mutex<Tally>) {
    let sku = &target.skus[(n % target.skus.len() as u64) as usize];
    let body = json!({
        "lines": [{"sku": sku, "quantity": 1}],
        "shipping_address": {"name": "Load Generator", "line1": "1 Bench Street",
            "city": "Berlin", "postal_code": "10115", "country": "DE"},
    });
    let placed = target
        .http
        .post(format!("{}/api/orders", target.url))
        .bearer_auth(token)
        .json(&body)
        .send()
        .await;
    let order_id = match answer(placed).await {
        Ok(placed) => {
            let accepted = due.elapsed();
            lock(tally).accept.push(accepted);
            placed["order_id"].as_str().unwrap_or_default().to_owned()
        }
        Err(kind) => return lock(tally).error(kind),
    };
    let decided = target
        .http
        .get(format!(
            "{}/api/orders/{order_id}?min_version=2&wait_ms={DECISION_WAIT_MS}",
            target.url
        ))
        .bearer_auth(token)
        .send()
        .await;
    match answer(decided).await {
        Ok(view) => {
            let e2e = due.elapsed();
            let mut tally = lock(tally);
            match view["status"].as_str() {
                Some("confirmed") => tally.confirmed += 1,
                Some("rejected") => tally.rejected += 1,
                _ => return tally.error("undecided".into()),
            }
            tally.e2e.push(e2e);
        }
        Err(kind) => lock(tally).error(kind),
    }
}

fn lock(tally: &Mutex<Tally>) -> std::sync::MutexGuard<'_, Tally> {
    tally.lock().unwrap_or_else(|p| p.into_inner())
}

/// The JSON body of a 2xx answer, or the kind of failure.
async fn answer(response: reqwest::Result<reqwest::Response>) -> Result<Value, String> {
    let response = response.map_err(|_| "transport".to_owned())?;
    let status = response.status();
    let body: Value = response.json().await.unwrap_or(Value::Null);
    if status.is_success() {
        return Ok(body);
    }
    Err(body["code"]
        .as_str()
        .map_or_else(|| format!("http_{}", status.as_u16()), str::to_owned))
}

async fn catalog_skus(http: &reqwest::Client, url: &str) -> anyhow::Result<Vec<String>> {
    let catalog: Value = http
        .get(format!("{url}/api/catalog"))
        .send()
        .await
        .with_context(|| format!("reading the catalog of {url}"))?
        .error_for_status()?
        .json()
        .await?;
    let skus: Vec<String> = catalog
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|item| item["sku"].as_str().map(str::to_owned))
        .collect();
    if skus.is_empty() {
        bail!("the catalog is empty: list a product or give --sku");
    }
    Ok(skus)
}

async fn dev_token(target: &Target, name: &str, role: &str) -> anyhow::Result<String> {
    // The development login is rate-limited per address (--dev-login-rate): with more clients
    // than its burst, sign-in waits as long as the server's Retry-After says, a few times.
    let mut waits = 0;
    let answer = loop {
        let answer = target
            .http
            .post(format!("{}/api/dev/token", target.url))
            .json(&json!({"customer_id": name, "role": role}))
            .send()
            .await
            .context("signing a customer in")?;
        let retry_after = answer
            .headers()
            .get(reqwest::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        match retry_after {
            Some(seconds) if answer.status().as_u16() == 429 && waits < 60 => {
                waits += 1;
                tokio::time::sleep(std::time::Duration::from_secs(seconds.clamp(1, 10))).await;
            }
            _ => break answer,
        }
    };
    if !answer.status().is_success() {
        bail!(
            "the development login answered {}: loadgen needs a server with development auth",
            answer.status()
        );
    }
    let token: Value = answer.json().await?;
    token["token"]
        .as_str()
        .map(str::to_owned)
        .context("the development login gave no token")
}

async fn restock(target: &Target) -> anyhow::Result<()> {
    let operator = dev_token(target, "loadgen-operator", "operator").await?;
    for sku in &target.skus {
        let answer = target
            .http
            .post(format!("{}/api/catalog/{sku}/restock", target.url))
            .bearer_auth(&operator)
            .json(&json!({"quantity": RESTOCK}))
            .send()
            .await
            .context("restocking")?;
        if !answer.status().is_success() {
            bail!("restocking {sku} answered {}", answer.status());
        }
    }
    Ok(())
}

fn report(plan: &LoadPlan, orders: u64, elapsed: Duration, mut tally: Tally) -> LoadReport {
    tally.accept.sort();
    tally.e2e.sort();
    tally.pacer_late.sort();
    let ms = |sorted: &[Duration], q: f64| {
        if sorted.is_empty() {
            return 0.0;
        }
        let i = ((sorted.len() as f64 * q).ceil() as usize).clamp(1, sorted.len()) - 1;
        sorted[i].as_secs_f64() * 1000.0
    };
    let seconds = elapsed.as_secs_f64().max(1e-9);
    LoadReport {
        clients: plan.clients,
        mode: if plan.rate.is_some() {
            "open"
        } else {
            "closed"
        },
        rate: plan.rate,
        orders,
        accepted: tally.accept.len() as u64,
        confirmed: tally.confirmed,
        rejected: tally.rejected,
        duration_s: seconds,
        accepted_per_s: tally.accept.len() as f64 / seconds,
        accept_p50_ms: ms(&tally.accept, 0.50),
        accept_p90_ms: ms(&tally.accept, 0.90),
        accept_p99_ms: ms(&tally.accept, 0.99),
        accept_max_ms: ms(&tally.accept, 1.0),
        e2e_p50_ms: ms(&tally.e2e, 0.50),
        e2e_p90_ms: ms(&tally.e2e, 0.90),
        e2e_p99_ms: ms(&tally.e2e, 0.99),
        e2e_max_ms: ms(&tally.e2e, 1.0),
        pacer_late_p50_ms: ms(&tally.pacer_late, 0.50),
        pacer_late_p99_ms: ms(&tally.pacer_late, 0.99),
        errors: tally.errors,
    }
}

impl std::fmt::Display for LoadReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let rate = self
            .rate
            .map_or(String::new(), |r| format!(" at {r} orders/s"));
        writeln!(
            f,
            "{} orders by {} clients ({} loop{rate}) in {:.1} s: {} accepted ({:.0}/s), {} confirmed, {} rejected",
            self.orders,
            self.clients,
            self.mode,
            self.duration_s,
            self.accepted,
            self.accepted_per_s,
            self.confirmed,
            self.rejected
        )?;
        writeln!(f, "              p50      p90      p99      max  (ms)")?;
        writeln!(
            f,
            "accept   {:8.2} {:8.2} {:8.2} {:8.2}",
            self.accept_p50_ms, self.accept_p90_ms, self.accept_p99_ms, self.accept_max_ms
        )?;
        writeln!(
            f,
            "decided  {:8.2} {:8.2} {:8.2} {:8.2}",
            self.e2e_p50_ms, self.e2e_p90_ms, self.e2e_p99_ms, self.e2e_max_ms
        )?;
        if self.rate.is_some() {
            writeln!(
                f,
                "pacer    {:8.2}          {:8.2}           (how late the generator's timer woke for an order: part of both lines above)",
                self.pacer_late_p50_ms, self.pacer_late_p99_ms
            )?;
        }
        if self.errors.is_empty() {
            write!(f, "errors   none")
        } else {
            let errors: Vec<String> = self
                .errors
                .iter()
                .map(|(kind, n)| format!("{kind} {n}"))
                .collect();
            write!(f, "errors   {}", errors.join(", "))
        }
    }
}
