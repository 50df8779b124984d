//! `orderflow chaos`: the project's own fault run. It starts every role as its own process on
//! PostgreSQL, RabbitMQ and Redis (a fresh schema and prefix, removed afterwards), drives
//! orders from clients that retry with their `Idempotency-Key` as a phone would, and meanwhile
//! SIGKILLs and restarts every role (both relays, so the active one too), cuts the broker off,
//! flushes the deployment's Redis keys, and cuts PostgreSQL off from the processors while they
//! have a backlog. Then it checks, and prints as counts, what must never happen.
//!
//! Outages are network cuts: each process reaches PostgreSQL and RabbitMQ through a TCP link
//! of this process's ([`Severable`]) that the run severs and restores, so the servers, which
//! other users of the machine may share, are never stopped.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::io::{BufRead, BufReader, Write as _};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use futures_util::StreamExt;
use serde_json::{Value, json};
use uuid::Uuid;

use crate::config::Settings;

/// What to run; see `orderflow chaos --help`.
#[derive(Debug, Clone)]
pub struct ChaosPlan {
    /// PostgreSQL, RabbitMQ and Redis URLs without a schema or prefix (the run adds its own).
    pub postgres: String,
    pub amqp: String,
    pub redis: String,
    pub orders: usize,
    pub clients: usize,
    /// How many times each worker process is SIGKILLed and restarted.
    pub kills: usize,
    pub postgres_outage: Duration,
    pub broker_outage: Duration,
    /// Time between two faults.
    pub gap: Duration,
    /// The whole run must end within this.
    pub deadline: Duration,
    pub binary: PathBuf,
    /// Logs, data directories and the push log go here.
    pub work: PathBuf,
    /// Leave the schema, queues and keys behind (to look at them).
    pub keep: bool,
}

/// What the run found; every count but `faults`, `accepted` and `pushes_collapsed` must be 0.
#[derive(Debug, Default, serde::Serialize)]
pub struct Report {
    pub orders_accepted: usize,
    pub faults_injected: usize,
    /// Orders the clients could not get accepted within their patience.
    pub orders_not_accepted: usize,
    /// Accepted, and then not in the event store.
    pub orders_lost: usize,
    /// Still `placed` when the run gave up waiting.
    pub orders_stuck: usize,
    pub orders_in_a_wrong_final_status: usize,
    pub views_different_from_their_events: usize,
    pub skus_with_stock_not_conserved: usize,
    pub pushes_missing: usize,
    /// One event pushed with two different collapse ids (a device would show both).
    pub pushes_seen_twice: usize,
    /// Sent twice under one collapse id, as the notifier may when it dies between the
    /// provider's answer and the claim's completion: the device shows one.
    pub pushes_collapsed: usize,
    pub dead_letters: usize,
    /// Role starts that failed and were tried again (as a supervisor would): not a loss, but
    /// each is in the run's log with the end of the role's log.
    pub role_starts_retried: usize,
    pub seconds: f64,
}

impl Report {
    /// The counts that must be zero.
    pub fn failures(&self) -> usize {
        self.orders_not_accepted
            + self.orders_lost
            + self.orders_stuck
            + self.orders_in_a_wrong_final_status
            + self.views_different_from_their_events
            + self.skus_with_stock_not_conserved
            + self.pushes_missing
            + self.pushes_seen_twice
            + self.dead_letters
    }

    pub fn table(&self) -> String {
        let rows = [
            ("orders accepted", self.orders_accepted),
            ("faults injected", self.faults_injected),
            ("orders not accepted", self.orders_not_accepted),
            ("orders lost", self.orders_lost),
            ("orders stuck", self.orders_stuck),
            (
                "orders in a wrong final status",
                self.orders_in_a_wrong_final_status,
            ),
            (
                "views different from their events",
                self.views_different_from_their_events,
            ),
            (
                "SKUs with stock not conserved",
                self.skus_with_stock_not_conserved,
            ),
            ("pushes missing", self.pushes_missing),
            ("pushes seen twice", self.pushes_seen_twice),
            (
                "pushes sent twice, collapsed (allowed)",
                self.pushes_collapsed,
            ),
            ("dead letters", self.dead_letters),
            ("role starts retried (allowed)", self.role_starts_retried),
        ];
        let mut out = String::new();
        for (name, count) in rows {
            out.push_str(&format!("{name:<40} {count:>8}\n"));
        }
        out.push_str(&format!("{:<40} {:>8.1}\n", "seconds", self.seconds));
        out
    }
}

/// A TCP link to a server that can be severed: while severed, connections through it are
/// closed as they arrive and the open ones are cut, as when the server's host becomes
/// unreachable. The server itself is never touched.
pub struct Severable {
    pub port: u16,
    severed: Arc<AtomicBool>,
    links: Arc<Mutex<Vec<tokio::task::JoinHandle<()>>>>,
    accepting: tokio::task::JoinHandle<()>,
}

impl Severable {
    /// Forwards `127.0.0.1:{port}` to `target` (`host:port`).
    pub async fn to(target: &str) -> std::io::Result<Self> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let port = listener.local_addr()?.port();
        let severed = Arc::new(AtomicBool::new(false));
        let links = Arc::new(Mutex::new(Vec::new()));
        let target = target.to_owned();
        let accepting = {
            let (severed, links) = (severed.clone(), links.clone());
            tokio::spawn(async move {
                while let Ok((mut inbound, _)) = listener.accept().await {
                    if severed.load(Ordering::SeqCst) {
                        continue;
                    }
                    let target = target.clone();
                    let link = tokio::spawn(async move {
                        if let Ok(mut outbound) = tokio::net::TcpStream::connect(&target).await {
                            let _ =
                                tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                        }
                    });
                    if let Ok(mut links) = links.lock() {
                        links.retain(|l: &tokio::task::JoinHandle<()>| !l.is_finished());
                        links.push(link);
                    }
                }
            })
        };
        Ok(Self {
            port,
            severed,
            links,
            accepting,
        })
    }

    pub fn sever(&self) {
        self.severed.store(true, Ordering::SeqCst);
        if let Ok(mut links) = self.links.lock() {
            for link in links.drain(..) {
                link.abort();
            }
        }
    }

    pub fn restore(&self) {
        self.severed.store(false, Ordering::SeqCst);
    }
}

impl Drop for Severable {
    fn drop(&mut self) {
        self.accepting.abort();
        self.sever();
    }
}

/// `url` with its host and port replaced by `127.0.0.1:{port}`.
fn via(url: &str, port: u16) -> anyhow::Result<String> {
    let (scheme, rest) = url.split_once("://").context("a URL with a scheme")?;
    let end = rest.find(['/', '?']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(end);
    let user = authority.rfind('@').map_or("", |at| &authority[..=at]);
    Ok(format!("{scheme}://{user}127.0.0.1:{port}{tail}"))
}

/// `host:port` of a URL, with the scheme's default port.
fn address(url: &str, default_port: u16) -> anyhow::Result<String> {
    let parsed = url::Url::parse(url).with_context(|| format!("parsing {url}"))?;
    let host = parsed.host_str().context("a host")?;
    Ok(format!("{host}:{}", parsed.port().unwrap_or(default_port)))
}

fn with_param(url: &str, key: &str, value: &str) -> String {
    let joiner = if url.contains('?') { '&' } else { '?' };
    format!("{url}{joiner}{key}={value}")
}

/// One role's process, restartable.
struct Role {
    name: String,
    args: Vec<String>,
    child: Option<Child>,
    url: String,
}

struct Deployment {
    binary: PathBuf,
    work: PathBuf,
    roles: Mutex<Vec<Role>>,
    /// The web processes' URLs, for the clients (a restarted web has a new port).
    webs: RwLock<Vec<String>>,
    started: Instant,
    /// Starts that failed and were tried again.
    start_retries: AtomicUsize,
}

/// How often a role is started before the run gives up on it, and how long each start may
/// take to listen (a debug build on a loaded machine starts in well under a second).
const START_ATTEMPTS: usize = 3;
const START_TIMEOUT: Duration = Duration::from_secs(60);

/// The last `lines` lines a log gained after byte `from`.
fn tail(path: &Path, from: u64, lines: usize) -> String {
    let text = std::fs::read(path).unwrap_or_default();
    let new = String::from_utf8_lossy(text.get(from as usize..).unwrap_or_default()).into_owned();
    let all: Vec<&str> = new.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

impl Deployment {
    fn log(&self, what: &str) {
        eprintln!("[{:>6.1} s] {what}", self.started.elapsed().as_secs_f64());
    }

    /// Starts `orderflow serve ARGS` and waits for its listening line; its log goes to
    /// `work/logs/NAME.log` (appended across restarts). A process that exits or does not
    /// listen within a minute is started again, up to `START_ATTEMPTS` times, as a
    /// supervisor would; each retry is logged with the end of the process's log and counted
    /// in the report.
    fn spawn(&self, name: &str, args: &[String]) -> anyhow::Result<(Child, String)> {
        let mut last = String::new();
        for attempt in 1..=START_ATTEMPTS {
            match self.spawn_once(name, args) {
                Ok(started) => return Ok(started),
                Err(why) => {
                    last = why;
                    if attempt < START_ATTEMPTS {
                        self.start_retries.fetch_add(1, Ordering::SeqCst);
                        self.log(&format!("{name} did not start ({last}); starting it again"));
                    }
                }
            }
        }
        bail!("{name} did not start in {START_ATTEMPTS} attempts: {last}")
    }

    /// One start: the URL it listens on, or why not (with the end of its log).
    fn spawn_once(&self, name: &str, args: &[String]) -> Result<(Child, String), String> {
        let logs = self.work.join("logs");
        let path = logs.join(format!("{name}.log"));
        let start = || -> anyhow::Result<_> {
            std::fs::create_dir_all(&logs)?;
            let log = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&path)?;
            let child = Command::new(&self.binary)
                .args(args)
                .env("RUST_LOG", "info")
                .env_remove("ORDERFLOW_CONFIG")
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .with_context(|| format!("starting {}", self.binary.display()))?;
            Ok((child, log))
        };
        let (mut child, log) = start().map_err(|e| format!("{e:#}"))?;
        let logged_from = std::fs::metadata(&path).map_or(0, |m| m.len());
        let (stdout, stderr) = (child.stdout.take(), child.stderr.take());
        let (Some(stdout), Some(stderr)) = (stdout, stderr) else {
            let _ = child.kill();
            return Err("no output pipes".into());
        };
        let (tx, rx) = std::sync::mpsc::channel();
        let mut out_log = log.try_clone().map_err(|e| e.to_string())?;
        let mut err_log = log;
        let errors = std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                let _ = writeln!(err_log, "{line}");
            }
        });
        let output = std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Some(at) = line.find("listening on http://") {
                    let url = line[at + "listening on ".len()..]
                        .split_whitespace()
                        .next()
                        .unwrap_or_default()
                        .trim_matches('"')
                        .to_owned();
                    let _ = tx.send(url);
                }
                let _ = writeln!(out_log, "{line}");
            }
        });
        let why = match rx.recv_timeout(START_TIMEOUT) {
            Ok(url) => return Ok((child, url)),
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {
                format!("no listening line within {START_TIMEOUT:?}")
            }
            Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => "it exited".to_owned(),
        };
        let _ = child.kill();
        let status = child.wait().map(|s| s.to_string()).unwrap_or_default();
        // The log is complete once both pipes are closed.
        let _ = (output.join(), errors.join());
        Err(format!(
            "{why}, {status}; the end of {}:\n{}",
            path.display(),
            tail(&path, logged_from, 20)
        ))
    }

    fn start(&self, name: &str, args: Vec<String>) -> anyhow::Result<()> {
        let (child, url) = self.spawn(name, &args)?;
        if name.starts_with("web") {
            self.webs
                .write()
                .map_err(|_| anyhow::anyhow!("poisoned"))?
                .push(url.clone());
        }
        self.roles
            .lock()
            .map_err(|_| anyhow::anyhow!("poisoned"))?
            .push(Role {
                name: name.to_owned(),
                args,
                child: Some(child),
                url,
            });
        Ok(())
    }

    /// SIGKILL, then the same process again.
    fn kill_and_restart(&self, name: &str) -> anyhow::Result<()> {
        let (args, old_url) = {
            let mut roles = self.roles.lock().map_err(|_| anyhow::anyhow!("poisoned"))?;
            let role = roles
                .iter_mut()
                .find(|r| r.name == name)
                .context("no such role")?;
            if let Some(mut child) = role.child.take() {
                let _ = child.kill();
                let _ = child.wait();
            }
            (role.args.clone(), role.url.clone())
        };
        self.log(&format!("SIGKILL {name}"));
        std::thread::sleep(Duration::from_millis(300));
        let (child, url) = self.spawn(name, &args)?;
        if name.starts_with("web")
            && let Ok(mut webs) = self.webs.write()
        {
            webs.retain(|u| *u != old_url);
            webs.push(url.clone());
        }
        let mut roles = self.roles.lock().map_err(|_| anyhow::anyhow!("poisoned"))?;
        if let Some(role) = roles.iter_mut().find(|r| r.name == name) {
            role.child = Some(child);
            role.url = url;
        }
        self.log(&format!("{name} restarted"));
        Ok(())
    }

    fn web(&self, n: usize) -> Option<String> {
        let webs = self.webs.read().ok()?;
        (!webs.is_empty()).then(|| webs[n % webs.len()].clone())
    }

    /// SIGTERM to every process, SIGKILL to what is still there after 15 s.
    fn stop(&self) {
        let Ok(mut roles) = self.roles.lock() else {
            return;
        };
        for role in roles.iter() {
            if let Some(child) = &role.child {
                let _ = Command::new("kill")
                    .args(["-TERM", &child.id().to_string()])
                    .status();
            }
        }
        let deadline = Instant::now() + Duration::from_secs(15);
        for role in roles.iter_mut() {
            if let Some(mut child) = role.child.take() {
                while matches!(child.try_wait(), Ok(None)) && Instant::now() < deadline {
                    std::thread::sleep(Duration::from_millis(50));
                }
                let _ = child.kill();
                let _ = child.wait();
            }
        }
    }
}

impl Drop for Deployment {
    fn drop(&mut self) {
        self.stop();
    }
}

/// What an order orders, by its number: mostly tea (confirmed), every 50th eight grinders
/// (the sandbox declines the payment), every 25th the teapot (one in stock).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Tea(u64),
    Grinders,
    Teapot,
}

impl Kind {
    fn of(i: usize) -> Self {
        if i.is_multiple_of(50) {
            Kind::Grinders
        } else if i % 25 == 1 {
            Kind::Teapot
        } else {
            Kind::Tea(1 + (i % 3) as u64)
        }
    }

    fn lines(self) -> Value {
        match self {
            Kind::Tea(q) => json!([{"sku": "TEA-001", "quantity": q}]),
            Kind::Grinders => json!([{"sku": "GRINDER-001", "quantity": 8}]),
            Kind::Teapot => json!([{"sku": "TEAPOT-001", "quantity": 1}]),
        }
    }

    /// The SKU and units an order of this kind holds.
    fn units(self) -> (&'static str, u64) {
        match self {
            Kind::Tea(q) => ("TEA-001", q),
            Kind::Grinders => ("GRINDER-001", 8),
            Kind::Teapot => ("TEAPOT-001", 1),
        }
    }

    /// Whether an order of this kind ended where it must: tea confirmed, the grinders' total
    /// declined by the sandbox, a teapot confirmed or out of stock (the check counts a second
    /// confirmed teapot as wrong: there is one).
    fn right_end(self, status: &str, view: &Value) -> bool {
        match self {
            Kind::Tea(_) => status == "confirmed",
            Kind::Grinders => status == "rejected" && view["reason"] == "payment_declined",
            Kind::Teapot => {
                status == "confirmed" || (status == "rejected" && view["reason"] == "out_of_stock")
            }
        }
    }
}

struct Placed {
    order_id: String,
    kind: Kind,
    token: Arc<String>,
}

#[derive(Debug, Clone, Copy)]
enum Fault {
    Kill(&'static str),
    CutBroker,
    FlushRedis,
    CutPostgresFromProcessors,
}

const WORKERS: [&str; 6] = [
    "relay-a",
    "processor-a",
    "projector",
    "notifier",
    "relay-b",
    "processor-b",
];

fn schedule(kills: usize) -> Vec<Fault> {
    let mut faults = Vec::new();
    for round in 0..kills.max(1) {
        for (n, worker) in WORKERS.iter().enumerate() {
            if round < kills {
                faults.push(Fault::Kill(worker));
            }
            if round == 0 {
                match n {
                    1 => faults.push(Fault::CutBroker),
                    2 => faults.push(Fault::FlushRedis),
                    3 => faults.push(Fault::CutPostgresFromProcessors),
                    4 => faults.push(Fault::Kill("web-a")),
                    _ => {}
                }
            }
        }
    }
    faults
}

/// Runs the plan; the report says what broke.
pub async fn run(plan: &ChaosPlan) -> anyhow::Result<Report> {
    let started = Instant::now();
    let prefix = format!("chaos{}", &Uuid::new_v4().simple().to_string()[..8]);
    let store = with_param(&plan.postgres, "schema", &prefix);
    let bus = with_param(&plan.amqp, "prefix", &prefix);
    let cache = with_param(&plan.redis, "prefix", &prefix);
    std::fs::create_dir_all(&plan.work)?;
    eprintln!(
        "chaos run {prefix}: {} orders from {} clients, each worker killed {} times; logs in {}",
        plan.orders,
        plan.clients,
        plan.kills,
        plan.work.display()
    );
    let pg_link = Severable::to(&address(&plan.postgres, 5432)?).await?;
    let processors_pg_link = Severable::to(&address(&plan.postgres, 5432)?).await?;
    let amqp_link = Severable::to(&address(&plan.amqp, 5672)?).await?;
    let store_via = via(&store, pg_link.port)?;
    let processors_store = via(&store, processors_pg_link.port)?;
    let bus_via = via(&bus, amqp_link.port)?;
    let push_log = plan.work.join("pushes.jsonl");
    let _ = std::fs::remove_file(&push_log);

    let deployment = Arc::new(Deployment {
        binary: plan.binary.clone(),
        work: plan.work.clone(),
        roles: Mutex::new(Vec::new()),
        webs: RwLock::new(Vec::new()),
        started,
        start_retries: AtomicUsize::new(0),
    });
    let migrated = Command::new(&plan.binary)
        .args(["migrate", "--store", &store])
        .stdout(Stdio::null())
        .status()?;
    if !migrated.success() {
        bail!(
            "orderflow migrate failed on {}",
            crate::config::redact(&store)
        );
    }
    let args = |name: &str, role: &str, store: &str, extra: &[&str]| {
        // The web processes share theirs: it holds the development login's signing key, so a
        // token from one is good at the other.
        let dir = if name.starts_with("web") { "web" } else { name };
        let data = plan.work.join("data").join(dir);
        let _ = std::fs::create_dir_all(&data);
        let mut args: Vec<String> = [
            "serve",
            "--role",
            role,
            "--listen",
            "127.0.0.1:0",
            "--store",
            store,
            "--bus",
            &bus_via,
            "--cache",
            &cache,
        ]
        .iter()
        .map(|s| (*s).to_owned())
        .collect();
        args.push("--data".into());
        args.push(data.display().to_string());
        args.extend(extra.iter().map(|s| (*s).to_owned()));
        args
    };
    let push_log_arg = push_log.display().to_string();
    // The first web seeds the catalog; the others find it there.
    let roles: Vec<(&str, Vec<String>)> = vec![
        ("web-a", args("web-a", "web", &store_via, &[])),
        ("web-b", args("web-b", "web", &store_via, &["--no-seed"])),
        (
            "relay-a",
            args("relay-a", "relay", &store_via, &["--no-seed"]),
        ),
        (
            "relay-b",
            args("relay-b", "relay", &store_via, &["--no-seed"]),
        ),
        (
            "processor-a",
            args(
                "processor-a",
                "processor",
                &processors_store,
                &["--no-seed"],
            ),
        ),
        (
            "processor-b",
            args(
                "processor-b",
                "processor",
                &processors_store,
                &["--no-seed"],
            ),
        ),
        (
            "projector",
            args("projector", "projector", &store_via, &["--no-seed"]),
        ),
        (
            "notifier",
            args(
                "notifier",
                "notifier",
                &store_via,
                &["--no-seed", "--push-log", &push_log_arg],
            ),
        ),
    ];
    for (name, args) in roles {
        let deployment = deployment.clone();
        let name = name.to_owned();
        tokio::task::spawn_blocking(move || deployment.start(&name, args)).await??;
    }
    deployment.log("every role is up");

    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()?;
    let web = deployment.web(0).context("a web process")?;
    let operator = token(&http, &web, "chaos-operator", "operator").await?;
    let analyst = token(&http, &web, "chaos-analyst", "analyst").await?;
    // Enough tea for every order: only the teapot and the grinders' payments decide otherwise.
    let restock = http
        .post(format!("{web}/api/catalog/TEA-001/restock"))
        .bearer_auth(&operator)
        .json(&json!({"quantity": plan.orders * 3 + 10}))
        .send()
        .await?;
    if !restock.status().is_success() {
        bail!("restocking the tea answered {}", restock.status());
    }

    // The clients, paced so that the orders span the faults.
    let faults = schedule(plan.kills);
    let span = plan.gap * (faults.len() as u32 + 1) + plan.postgres_outage + plan.broker_outage;
    let interval = span.as_secs_f64() / plan.orders.max(1) as f64;
    let next = Arc::new(AtomicUsize::new(0));
    let placed: Arc<Mutex<Vec<Placed>>> = Arc::default();
    let not_accepted = Arc::new(AtomicUsize::new(0));
    let drive_started = Instant::now();
    let mut clients = Vec::new();
    for c in 0..plan.clients.max(1) {
        let (http, deployment, next, placed, not_accepted) = (
            http.clone(),
            deployment.clone(),
            next.clone(),
            placed.clone(),
            not_accepted.clone(),
        );
        let orders = plan.orders;
        let prefix = prefix.clone();
        clients.push(tokio::spawn(async move {
            let name = format!("chaos-customer-{c}");
            let token = loop {
                if let Some(web) = deployment.web(c)
                    && let Ok(token) = token(&http, &web, &name, "customer").await
                {
                    break Arc::new(token);
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            };
            loop {
                let i = next.fetch_add(1, Ordering::SeqCst);
                if i >= orders {
                    return;
                }
                let due = drive_started + Duration::from_secs_f64(interval * i as f64);
                tokio::time::sleep_until(due.into()).await;
                let kind = Kind::of(i);
                match place(
                    &http,
                    &deployment,
                    &token,
                    &format!("{prefix}-{i}"),
                    kind,
                    i,
                )
                .await
                {
                    Some(order_id) => {
                        if let Ok(mut placed) = placed.lock() {
                            placed.push(Placed {
                                order_id,
                                kind,
                                token: token.clone(),
                            });
                        }
                    }
                    None => {
                        not_accepted.fetch_add(1, Ordering::SeqCst);
                    }
                }
            }
        }));
    }

    // The faults, one after the other.
    let mut injected = 0;
    for fault in &faults {
        tokio::time::sleep(plan.gap).await;
        check_deadline(started, plan)?;
        match *fault {
            Fault::Kill(name) => {
                let deployment = deployment.clone();
                tokio::task::spawn_blocking(move || deployment.kill_and_restart(name)).await??;
            }
            Fault::CutBroker => {
                deployment.log(&format!("RabbitMQ cut off for {:?}", plan.broker_outage));
                amqp_link.sever();
                tokio::time::sleep(plan.broker_outage).await;
                amqp_link.restore();
                deployment.log("RabbitMQ back");
            }
            Fault::FlushRedis => {
                let deleted = flush(&plan.redis, &prefix).await?;
                deployment.log(&format!("Redis flushed ({deleted} keys of this run)"));
            }
            Fault::CutPostgresFromProcessors => {
                deployment.log(&format!(
                    "PostgreSQL cut off from the processors for {:?}",
                    plan.postgres_outage
                ));
                processors_pg_link.sever();
                tokio::time::sleep(plan.postgres_outage).await;
                processors_pg_link.restore();
                deployment.log("PostgreSQL back for the processors");
            }
        }
        injected += 1;
    }
    for client in clients {
        client.await?;
    }
    deployment.log("every order sent");

    let placed = std::mem::take(&mut *placed.lock().map_err(|_| anyhow::anyhow!("poisoned"))?);
    let mut report = Report {
        orders_accepted: placed.len(),
        faults_injected: injected,
        orders_not_accepted: not_accepted.load(Ordering::SeqCst),
        ..Report::default()
    };
    check(
        plan,
        started,
        &deployment,
        &http,
        &analyst,
        &store,
        &bus,
        &push_log,
        &placed,
        &mut report,
    )
    .await?;
    report.seconds = started.elapsed().as_secs_f64();
    report.role_starts_retried = deployment.start_retries.load(Ordering::SeqCst);
    deployment.stop();
    if !plan.keep {
        cleanup(&store, &bus, &plan.redis, &prefix).await;
    }
    Ok(report)
}

fn check_deadline(started: Instant, plan: &ChaosPlan) -> anyhow::Result<()> {
    if started.elapsed() > plan.deadline {
        bail!(
            "the run took longer than its deadline of {:?}",
            plan.deadline
        );
    }
    Ok(())
}

async fn token(
    http: &reqwest::Client,
    web: &str,
    name: &str,
    role: &str,
) -> anyhow::Result<String> {
    let body: Value = http
        .post(format!("{web}/api/dev/token"))
        .json(&json!({"customer_id": name, "role": role}))
        .send()
        .await?
        .error_for_status()?
        .json()
        .await?;
    body["token"]
        .as_str()
        .map(str::to_owned)
        .context("a token in the answer")
}

/// Places one order as a phone would: the same `Idempotency-Key` until the server accepts it,
/// through whichever web process answers, waiting longer after each failure (at most 3 min).
async fn place(
    http: &reqwest::Client,
    deployment: &Deployment,
    token: &str,
    key: &str,
    kind: Kind,
    i: usize,
) -> Option<String> {
    let body = json!({"lines": kind.lines(), "shipping_address": {
        "name": "Cass Chaos", "line1": "1 Fault Line", "city": "Berlin",
        "postal_code": "10115", "country": "DE"}});
    let patience = Instant::now() + Duration::from_secs(180);
    let mut wait = Duration::from_millis(100);
    for attempt in 0.. {
        if Instant::now() > patience {
            return None;
        }
        let Some(web) = deployment.web(i + attempt) else {
            tokio::time::sleep(wait).await;
            continue;
        };
        let answer = http
            .post(format!("{web}/api/orders"))
            .bearer_auth(token)
            .header("Idempotency-Key", key)
            .json(&body)
            .send()
            .await;
        match answer {
            Ok(response) if response.status() == reqwest::StatusCode::ACCEPTED => {
                let placed: Value = response.json().await.ok()?;
                return placed["order_id"].as_str().map(str::to_owned);
            }
            Ok(response)
                if response.status().is_client_error()
                    && ![408, 429].contains(&response.status().as_u16()) =>
            {
                deployment.log(&format!("order {key} refused: {}", response.status()));
                return None;
            }
            _ => {}
        }
        tokio::time::sleep(wait).await;
        wait = (wait * 2).min(Duration::from_secs(2));
    }
    None
}

/// Deletes every key of this run in Redis (never the whole database: it may be shared).
async fn flush(redis: &str, prefix: &str) -> anyhow::Result<usize> {
    use fred::prelude::*;
    let client = Client::new(Config::from_url(redis)?, None, None, None);
    client.init().await?;
    let (mut cursor, mut deleted) = ("0".to_owned(), 0);
    loop {
        let (next, keys): (String, Vec<String>) = client
            .scan_page(cursor, format!("{prefix}:*"), Some(1_000), None)
            .await?;
        if !keys.is_empty() {
            let n: i64 = client.del(keys).await?;
            deleted += n as usize;
        }
        if next == "0" {
            break;
        }
        cursor = next;
    }
    let _ = client.quit().await;
    Ok(deleted)
}

/// What the run's accepted orders came to: each decided, in the right final status, its view
/// the fold of its events, the stock conserved, every decision pushed once, nothing parked.
#[allow(clippy::too_many_arguments)]
async fn check(
    plan: &ChaosPlan,
    started: Instant,
    deployment: &Deployment,
    http: &reqwest::Client,
    analyst: &str,
    store_url: &str,
    bus_url: &str,
    push_log: &Path,
    placed: &[Placed],
    report: &mut Report,
) -> anyhow::Result<()> {
    let web = deployment.web(0).context("a web process")?;
    let views = decided_views(plan, started, http, &web, placed).await;
    deployment.log(&format!(
        "{} of {} orders decided",
        views.len(),
        placed.len()
    ));
    let settings = Settings {
        store: store_url.to_owned(),
        bus: bus_url.to_owned(),
        ..Settings::embedded("127.0.0.1:0".parse()?, plan.work.join("checker"))
    };
    let store = crate::system::open_store(&settings).await?;
    let outcome = check_orders(store.as_ref(), http, &web, analyst, placed, &views, report).await?;
    report.skus_with_stock_not_conserved =
        stock_not_conserved(http, &web, analyst, &outcome.confirmed).await;
    check_pushes(push_log, &outcome.decisions, report).await;
    let bus = crate::system::open_bus(&settings).await?;
    report.dead_letters = bus.dead_letters().await?.len();
    Ok(())
}

/// Each accepted order's view once it is no longer `placed` (or the run's patience ends).
async fn decided_views(
    plan: &ChaosPlan,
    started: Instant,
    http: &reqwest::Client,
    web: &str,
    placed: &[Placed],
) -> HashMap<String, Value> {
    let mut views: HashMap<String, Value> = HashMap::new();
    let settle_until = Instant::now() + Duration::from_secs(300);
    loop {
        let pending: Vec<&Placed> = placed
            .iter()
            .filter(|p| !views.contains_key(&p.order_id))
            .collect();
        if pending.is_empty() || Instant::now() > settle_until || started.elapsed() > plan.deadline
        {
            return views;
        }
        let answers: Vec<(String, Option<Value>)> = futures_util::stream::iter(pending)
            .map(|p| async move {
                let view = get(http, &format!("{web}/api/orders/{}", p.order_id), &p.token).await;
                (p.order_id.clone(), view)
            })
            .buffer_unordered(16)
            .collect()
            .await;
        for (id, view) in answers {
            if let Some(view) = view
                && view["status"] != "placed"
            {
                views.insert(id, view);
            }
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// What the orders' checks found beyond the report: the decision events, to find among the
/// pushes, and the units the confirmed orders hold, by SKU.
struct OrdersChecked<'a> {
    decisions: HashSet<Uuid>,
    confirmed: BTreeMap<&'a str, u64>,
}

/// Counts the lost (no events), stuck (no decision seen), wrong (final status) orders and the
/// views that differ from the fold of their events.
async fn check_orders<'a>(
    store: &dyn eventlog::EventStore,
    http: &reqwest::Client,
    web: &str,
    analyst: &str,
    placed: &'a [Placed],
    views: &HashMap<String, Value>,
    report: &mut Report,
) -> anyhow::Result<OrdersChecked<'a>> {
    let mut outcome = OrdersChecked {
        decisions: HashSet::new(),
        confirmed: BTreeMap::new(),
    };
    let mut teapots_confirmed = 0;
    for order in placed {
        let events = store
            .read_stream(&format!("order-{}", order.order_id), 1)
            .await?;
        if events.is_empty() {
            report.orders_lost += 1;
            continue;
        }
        if let Some(decision) = events
            .iter()
            .find(|e| e.event_type == "OrderConfirmed" || e.event_type == "OrderRejected")
        {
            outcome.decisions.insert(decision.event_id);
        }
        let Some(view) = views.get(&order.order_id) else {
            report.orders_stuck += 1;
            continue;
        };
        let status = view["status"].as_str().unwrap_or_default();
        teapots_confirmed +=
            usize::from(matches!(order.kind, Kind::Teapot) && status == "confirmed");
        if !order.kind.right_end(status, view) {
            report.orders_in_a_wrong_final_status += 1;
        }
        if status == "confirmed" {
            let (sku, quantity) = order.kind.units();
            *outcome.confirmed.entry(sku).or_default() += quantity;
        }
        let version = view["version"].as_u64().unwrap_or_default();
        let at_version = format!("{web}/api/orders/{}?at_version={version}", order.order_id);
        if get(http, &at_version, analyst).await.as_ref() != Some(view) {
            report.views_different_from_their_events += 1;
        }
    }
    // One teapot in stock: a second one confirmed is oversold.
    if teapots_confirmed > 1 {
        report.orders_in_a_wrong_final_status += teapots_confirmed - 1;
    }
    Ok(outcome)
}

/// SKUs whose reserved stock is not exactly what the confirmed orders hold (waiting up to a
/// minute for the catalog to catch up).
async fn stock_not_conserved(
    http: &reqwest::Client,
    web: &str,
    analyst: &str,
    confirmed: &BTreeMap<&str, u64>,
) -> usize {
    let conserved_until = Instant::now() + Duration::from_secs(60);
    loop {
        let catalog = get(http, &format!("{web}/api/catalog"), analyst)
            .await
            .unwrap_or_default();
        let wrong = ["TEA-001", "GRINDER-001", "TEAPOT-001"]
            .iter()
            .filter(|sku| {
                let item = catalog
                    .as_array()
                    .and_then(|items| items.iter().find(|i| i["sku"] == **sku));
                let Some(item) = item else { return true };
                let reserved = item["reserved"].as_u64().unwrap_or(u64::MAX);
                let on_hand = item["on_hand"].as_u64().unwrap_or_default();
                let available = item["available"].as_u64().unwrap_or(u64::MAX);
                reserved != confirmed.get(**sku).copied().unwrap_or_default()
                    || available != on_hand.saturating_sub(reserved)
            })
            .count();
        if wrong == 0 || Instant::now() > conserved_until {
            return wrong;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// Every decision pushed (a dead notifier's claims are taken over after their lease, so this
/// waits for up to a minute), and how many pushes came twice.
async fn check_pushes(push_log: &Path, decisions: &HashSet<Uuid>, report: &mut Report) {
    let pushed_until = Instant::now() + Duration::from_secs(60);
    loop {
        let pushes = read_pushes(push_log);
        let seen: HashSet<Uuid> = pushes.keys().copied().collect();
        report.pushes_missing = decisions.difference(&seen).count();
        report.pushes_collapsed = pushes.values().map(|ids| ids.0.saturating_sub(1)).sum();
        report.pushes_seen_twice = pushes.values().filter(|ids| ids.1.len() > 1).count();
        if report.pushes_missing == 0 || Instant::now() > pushed_until {
            return;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// Per event id in the push log: how many lines, and their collapse ids.
fn read_pushes(path: &Path) -> HashMap<Uuid, (usize, HashSet<Uuid>)> {
    let mut pushes: HashMap<Uuid, (usize, HashSet<Uuid>)> = HashMap::new();
    let Ok(text) = std::fs::read_to_string(path) else {
        return pushes;
    };
    for line in text.lines() {
        let Ok(push) = serde_json::from_str::<Value>(line) else {
            continue;
        };
        let id = |key: &str| push[key].as_str().and_then(|s| Uuid::parse_str(s).ok());
        if let (Some(event), Some(collapse)) = (id("event_id"), id("collapse_id")) {
            let entry = pushes.entry(event).or_default();
            entry.0 += 1;
            entry.1.insert(collapse);
        }
    }
    pushes
}

async fn get(http: &reqwest::Client, url: &str, token: &str) -> Option<Value> {
    let response = http.get(url).bearer_auth(token).send().await.ok()?;
    if !response.status().is_success() {
        return None;
    }
    response.json().await.ok()
}

/// Removes a run's PostgreSQL schema, RabbitMQ queues and Redis keys under `prefix`; a
/// failure only leaves them behind, said on stderr. The distributed tests use it too: on
/// RabbitMQ 3.x every quorum queue left behind holds one of the broker's file handles, and
/// about a thousand of them (some fifty test runs) leave none for connections.
pub async fn cleanup(store: &str, bus: &str, redis: &str, prefix: &str) {
    if let Err(error) = infra::event_store::PostgresEventStore::drop_schema(store).await {
        eprintln!("the schema of {prefix} stays: {error}");
    }
    let policy =
        Settings::embedded("127.0.0.1:0".parse().expect("an address"), PathBuf::new()).retry;
    match infra::bus::RabbitBus::connect(bus, &crate::system::SUBSCRIPTIONS, policy).await {
        Ok(rabbit) => {
            if let Err(error) = rabbit.delete_topology().await {
                eprintln!("the queues of {prefix} stay: {error}");
            }
        }
        Err(error) => eprintln!("the queues of {prefix} stay: {error}"),
    }
    if let Err(error) = flush(redis, prefix).await {
        eprintln!("the Redis keys of {prefix} stay: {error}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A stand-in for the binary: it fails its first start (saying why on stderr) and
    /// listens on its second.
    fn flaky_binary(work: &Path) -> PathBuf {
        use std::os::unix::fs::PermissionsExt as _;
        let script = work.join("flaky");
        let marker = work.join("started-once");
        std::fs::write(
            &script,
            format!(
                "#!/bin/sh\nif [ ! -e {m} ]; then touch {m}; echo 'too many clients' >&2; exit 3; fi\n\
                 echo 'orderflow listening on http://127.0.0.1:9'\nexec sleep 30\n",
                m = marker.display()
            ),
        )
        .unwrap();
        std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
        script
    }

    #[test]
    fn a_role_that_fails_to_start_is_started_again_and_the_reason_is_kept() {
        let work = std::env::temp_dir().join(format!("chaos-start-{}", Uuid::new_v4()));
        std::fs::create_dir_all(&work).unwrap();
        let deployment = Deployment {
            binary: flaky_binary(&work),
            work: work.clone(),
            roles: Mutex::new(Vec::new()),
            webs: RwLock::new(Vec::new()),
            started: Instant::now(),
            start_retries: AtomicUsize::new(0),
        };
        let why = deployment.spawn_once("notifier", &[]).unwrap_err();
        assert!(why.contains("it exited"), "{why}");
        assert!(why.contains("too many clients"), "{why}");
        let (mut child, url) = deployment.spawn("notifier", &[]).unwrap();
        assert_eq!(url, "http://127.0.0.1:9");
        assert_eq!(deployment.start_retries.load(Ordering::SeqCst), 0);
        let _ = child.kill();
        let _ = child.wait();
        std::fs::remove_file(work.join("started-once")).unwrap();
        let (mut child, _) = deployment.spawn("notifier", &[]).unwrap();
        assert_eq!(deployment.start_retries.load(Ordering::SeqCst), 1);
        let _ = child.kill();
        let _ = child.wait();
        let _ = std::fs::remove_dir_all(&work);
    }

    #[test]
    fn a_url_goes_through_the_link_with_its_user_path_and_query() {
        assert_eq!(
            via("postgres://postgres@127.0.0.1:5432/test?schema=x", 6000).unwrap(),
            "postgres://postgres@127.0.0.1:6000/test?schema=x"
        );
        assert_eq!(
            via("amqp://guest:guest@broker:5672/%2f?prefix=p", 7000).unwrap(),
            "amqp://guest:guest@127.0.0.1:7000/%2f?prefix=p"
        );
        assert_eq!(
            address("redis://127.0.0.1", 6379).unwrap(),
            "127.0.0.1:6379"
        );
    }

    #[test]
    fn every_kind_of_fault_is_scheduled_and_each_worker_killed_as_often_as_asked() {
        let faults = schedule(2);
        for worker in WORKERS {
            let kills = faults
                .iter()
                .filter(|f| matches!(f, Fault::Kill(w) if *w == worker))
                .count();
            assert_eq!(kills, 2, "{worker}");
        }
        for kind in [
            Fault::CutBroker,
            Fault::FlushRedis,
            Fault::CutPostgresFromProcessors,
        ] {
            let n = faults
                .iter()
                .filter(|f| std::mem::discriminant(*f) == std::mem::discriminant(&kind))
                .count();
            assert_eq!(n, 1, "{kind:?}");
        }
        assert!(faults.iter().any(|f| matches!(f, Fault::Kill("web-a"))));
    }
}
