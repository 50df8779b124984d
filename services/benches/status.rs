//! The status query over HTTP against a trivial axum handler measured the same way (issue 6:
//! the status query should reach half the trivial handler's requests per second).
//!
//! Both servers run in this process on loopback: orderflow on embedded defaults (SQLite, the
//! in-memory views) answering `GET /api/orders/{id}` for the order's owner (bearer token
//! checked, view read, JSON written), and a bare axum `Router` answering `GET /hello` with
//! "ok". One client for both: `CONNECTIONS` keep-alive HTTP/1.1 connections written and read
//! by hand, so that the client costs as little as possible and the same for both. Criterion
//! times one request per connection per iteration; the summary prints requests/s, latency
//! percentiles and the ratio.
//!
//! `cargo bench -p services --bench status`.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use criterion::{BenchmarkId, Criterion, Throughput};
use serde_json::{Value, json};
use services::app::Application;
use services::config::Settings;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

const CONNECTIONS: usize = 32;

/// Each case's latencies of its longest run, and that run's requests/s.
type Summary = Arc<Mutex<Vec<(&'static str, f64, Vec<Duration>)>>>;

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a runtime");
    let dir = tempfile::tempdir().expect("a temporary directory");
    let (status, trivial) = runtime.block_on(servers(dir.path()));
    let summary: Summary = Arc::default();

    let mut criterion = Criterion::default()
        .configure_from_args()
        .sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(4));
    let mut group = criterion.benchmark_group("http");
    group.throughput(Throughput::Elements(CONNECTIONS as u64));
    for (case, request) in [("trivial", &trivial), ("status", &status)] {
        group.bench_function(BenchmarkId::from_parameter(case), |b| {
            b.iter_custom(|iterations| {
                let (elapsed, latencies) =
                    runtime.block_on(load(request.clone(), iterations as usize));
                let rate = latencies.len() as f64 / elapsed.as_secs_f64();
                let mut summary = summary.lock().expect("summary");
                match summary.iter_mut().find(|(c, _, _)| *c == case) {
                    Some(kept) if kept.2.len() >= latencies.len() => {}
                    Some(kept) => *kept = (case, rate, latencies),
                    None => summary.push((case, rate, latencies)),
                }
                elapsed
            });
        });
    }
    group.finish();
    criterion.final_summary();

    let summary = summary.lock().expect("summary");
    println!("\nGET over HTTP/1.1 keep-alive, {CONNECTIONS} connections (longest run of each):");
    let trivial_rate = summary
        .iter()
        .find(|(c, _, _)| *c == "trivial")
        .map_or(f64::NAN, |(_, r, _)| *r);
    for (case, rate, latencies) in summary.iter() {
        let mut sorted = latencies.clone();
        sorted.sort_unstable();
        let at = |p: f64| {
            let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
            sorted[rank.clamp(1, sorted.len()) - 1].as_secs_f64() * 1e3
        };
        println!(
            "  {case:<8} {rate:>8.0} req/s  p50 {:>5.2} ms  p90 {:>5.2} ms  p99 {:>5.2} ms  max {:>6.2} ms  {:>5.1} % of trivial",
            at(50.0),
            at(90.0),
            at(99.0),
            at(100.0),
            100.0 * rate / trivial_rate
        );
    }
    println!("  target: status >= 50 % of trivial");
}

/// A request as bytes, and where to send it.
#[derive(Clone)]
struct Request {
    address: SocketAddr,
    bytes: Arc<Vec<u8>>,
}

impl Request {
    fn get(address: SocketAddr, path: &str, token: Option<&str>) -> Self {
        let auth = token.map_or(String::new(), |t| format!("authorization: Bearer {t}\r\n"));
        let text = format!("GET {path} HTTP/1.1\r\nhost: {address}\r\n{auth}\r\n");
        Self {
            address,
            bytes: Arc::new(text.into_bytes()),
        }
    }
}

/// `CONNECTIONS` connections each send `per_connection` requests one after the other.
async fn load(request: Request, per_connection: usize) -> (Duration, Vec<Duration>) {
    let started = Instant::now();
    let tasks: Vec<_> = (0..CONNECTIONS)
        .map(|_| {
            let request = request.clone();
            tokio::spawn(async move {
                let stream = TcpStream::connect(request.address).await.expect("connect");
                stream.set_nodelay(true).expect("nodelay");
                let (read, mut write) = stream.into_split();
                let mut read = BufReader::new(read);
                let mut latencies = Vec::with_capacity(per_connection);
                let (mut line, mut body) = (String::new(), Vec::new());
                for _ in 0..per_connection {
                    let sent = Instant::now();
                    write.write_all(&request.bytes).await.expect("write");
                    let status = read_response(&mut read, &mut line, &mut body).await;
                    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
                    latencies.push(sent.elapsed());
                }
                latencies
            })
        })
        .collect();
    let mut latencies = Vec::new();
    for task in tasks {
        latencies.extend(task.await.expect("a connection"));
    }
    (started.elapsed(), latencies)
}

/// Reads one response (status line, headers, a `content-length` body); answers the status.
async fn read_response<R: AsyncBufReadExt + Unpin>(
    read: &mut R,
    line: &mut String,
    body: &mut Vec<u8>,
) -> u16 {
    line.clear();
    read.read_line(line).await.expect("status line");
    let status = line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let mut length = 0;
    loop {
        line.clear();
        read.read_line(line).await.expect("header");
        let header = line.trim_end();
        if header.is_empty() {
            break;
        }
        if let Some((name, value)) = header.split_once(':')
            && name.eq_ignore_ascii_case("content-length")
        {
            length = value.trim().parse().expect("a length");
        }
    }
    body.resize(length, 0);
    read.read_exact(body).await.expect("body");
    status
}

/// Starts orderflow (embedded) with one placed order, and the trivial server; answers the
/// request of each.
async fn servers(dir: &std::path::Path) -> (Request, Request) {
    let settings = Settings::embedded("127.0.0.1:0".parse().expect("address"), dir.to_owned());
    let app = Application::build(settings)
        .await
        .expect("orderflow builds");
    let address = app.address();
    tokio::spawn(app.run_until_stopped());
    let base = format!("http://{address}");
    let http = reqwest::Client::new();
    let token = |role: &'static str| {
        let http = http.clone();
        let base = base.clone();
        async move {
            let answer: Value = http
                .post(format!("{base}/api/dev/token"))
                .json(&json!({"customer_id": "bench", "role": role}))
                .send()
                .await
                .expect("dev login")
                .json()
                .await
                .expect("a token");
            answer["token"].as_str().expect("a token").to_owned()
        }
    };
    let customer = token("customer").await;
    let catalog: Value = http
        .get(format!("{base}/api/catalog"))
        .send()
        .await
        .expect("catalog")
        .json()
        .await
        .expect("catalog JSON");
    let sku = catalog["items"][0]["sku"]
        .as_str()
        .or_else(|| catalog[0]["sku"].as_str())
        .expect("a product in the embedded catalog")
        .to_owned();
    let placed: Value = http
        .post(format!("{base}/api/orders"))
        .bearer_auth(&customer)
        .json(&json!({
            "lines": [{"sku": sku, "quantity": 1}],
            "shipping_address": {"name": "Ada Lovelace", "line1": "12 Analytical Row",
                "city": "London", "postal_code": "N1 9GU", "country": "GB"}
        }))
        .send()
        .await
        .expect("place")
        .json()
        .await
        .expect("placed JSON");
    let order = placed["order_id"].as_str().expect("an order id").to_owned();
    // Wait until the view is there (the projector runs behind the command).
    let path = format!("/api/orders/{order}");
    for _ in 0..100 {
        let answer = http
            .get(format!("{base}{path}"))
            .bearer_auth(&customer)
            .send()
            .await
            .expect("status");
        if answer.status().is_success() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("a port");
    let trivial = listener.local_addr().expect("address");
    let router = axum::Router::new().route("/hello", axum::routing::get(|| async { "ok" }));
    tokio::spawn(async move { axum::serve(listener, router).await });

    (
        Request::get(address, &path, Some(&customer)),
        Request::get(trivial, "/hello", None),
    )
}
