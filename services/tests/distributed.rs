//! The system as separate OS processes, one per role, on real engines: the machine's
//! PostgreSQL (event store), RabbitMQ (topic) and Redis (cache). URLs come from
//! `ORDERFLOW_TEST_POSTGRES`, `ORDERFLOW_TEST_AMQP` and `ORDERFLOW_TEST_REDIS` (defaults: the
//! local servers `.ci/run` starts). Each test works in its own PostgreSQL schema, RabbitMQ
//! name prefix and Redis key prefix, so tests run in parallel and leave others alone.

mod common;

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{Api, Process, assert_decided_as_their_events_say, lines_for, settle, wait_ready};
use fred::prelude::*;
use reqwest::StatusCode;
use serde_json::{Value, json};
use uuid::Uuid;

/// One test's engines: the same servers, its own namespaces.
struct Engines {
    store: String,
    bus: String,
    cache: String,
    prefix: String,
    redis: String,
}

impl Engines {
    fn fresh() -> Self {
        let id = Uuid::new_v4().simple().to_string()[..10].to_owned();
        let pg = env(
            "ORDERFLOW_TEST_POSTGRES",
            "postgres://postgres@127.0.0.1:5432/test",
        );
        let amqp = env(
            "ORDERFLOW_TEST_AMQP",
            "amqp://guest:guest@127.0.0.1:5672/%2f",
        );
        let redis = env("ORDERFLOW_TEST_REDIS", "redis://127.0.0.1:6379");
        let prefix = format!("t{id}");
        Self {
            store: format!("{pg}?schema={prefix}"),
            bus: format!("{amqp}?prefix={prefix}"),
            cache: format!("{redis}?prefix={prefix}"),
            redis,
            prefix,
        }
    }

    fn args(&self) -> Vec<&str> {
        vec![
            "--store",
            &self.store,
            "--bus",
            &self.bus,
            "--cache",
            &self.cache,
        ]
    }

    /// Every Redis key of this test matching `pattern` (under its prefix): SCAN to the end, since
    /// one page of a big shared database may hold none of them.
    async fn keys(&self, pattern: &str) -> Vec<String> {
        let client = Client::new(Config::from_url(&self.redis).unwrap(), None, None, None);
        client.init().await.expect("Redis answers");
        let (mut cursor, mut found) = ("0".to_owned(), Vec::new());
        loop {
            let (next, keys): (String, Vec<String>) = client
                .scan_page(
                    cursor,
                    format!("{}:{pattern}", self.prefix),
                    Some(1_000),
                    None,
                )
                .await
                .unwrap();
            found.extend(keys);
            if next == "0" {
                return found;
            }
            cursor = next;
        }
    }

    /// Deletes every Redis key of this test (never the whole database: it is shared).
    async fn flush_cache(&self) -> usize {
        let keys = self.keys("*").await;
        if !keys.is_empty() {
            let client = Client::new(Config::from_url(&self.redis).unwrap(), None, None, None);
            client.init().await.expect("Redis answers");
            for chunk in keys.chunks(500) {
                let _: i64 = client.del(chunk.to_vec()).await.unwrap();
            }
        }
        keys.len()
    }
}

/// A test leaves nothing behind, passed or failed: its roles are gone by now (they are
/// declared after the engines, so dropped first) and nothing declares its queues again.
impl Drop for Engines {
    fn drop(&mut self) {
        let (store, bus, redis, prefix) = (
            self.store.clone(),
            self.bus.clone(),
            self.redis.clone(),
            self.prefix.clone(),
        );
        // Its own thread and runtime: the test's runtime may be the one dropping us.
        let cleaning = std::thread::spawn(move || {
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("a runtime")
                .block_on(services::chaos::cleanup(&store, &bus, &redis, &prefix));
        });
        let _ = cleaning.join();
    }
}

fn env(name: &str, default: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| default.to_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn five_hundred_orders_survive_a_killed_processor_across_separate_processes() {
    let engines = Engines::fresh();
    let data = tempfile::tempdir().unwrap();
    let pushes = data.path().join("pushes.jsonl");
    let migrate = std::process::Command::new(common::binary())
        .args(["migrate", "--store", &engines.store])
        .status()
        .unwrap();
    assert!(migrate.success(), "orderflow migrate failed");
    let args = engines.args();
    let web = Process::serve("web", data.path(), "web", &args, &[]);
    wait_ready(&web.url).await;
    let mut push_args = args.clone();
    push_args.extend(["--push-log", pushes.to_str().unwrap()]);
    let mut others = [
        Process::serve("relay", data.path(), "relay", &args, &[]),
        Process::serve("processor-1", data.path(), "processor", &args, &[]),
        Process::serve("processor-2", data.path(), "processor", &args, &[]),
        Process::serve("projector", data.path(), "projector", &args, &[]),
        Process::serve("notifier", data.path(), "notifier", &push_args, &[]),
        // A standby: it waits for the relay lease, so only one relay publishes at a time.
        Process::serve("relay-2", data.path(), "relay", &args, &[]),
    ];
    let api = Arc::new(Api::new(&web.url));
    let operator = api.token("olga", "operator").await;
    let analyst = api.token("ann", "analyst").await;
    // Plenty of tea; grinders enough that declined orders never run out while in flight.
    for (sku, quantity) in [("TEA-001", 5000), ("GRINDER-001", 200)] {
        let restock = api
            .client
            .post(format!("{}/api/catalog/{sku}/restock", api.url))
            .bearer_auth(&operator)
            .json(&json!({ "quantity": quantity }))
            .send()
            .await
            .unwrap();
        assert_eq!(restock.status(), StatusCode::ACCEPTED);
    }

    // 500 orders from 50 customers, 10 at a time; processor-1 dies after the first 150.
    let mut ids = Vec::new();
    let tokens: Vec<String> = futures_util::future::join_all((0..50).map(|c| {
        let api = api.clone();
        async move { api.token(&format!("dist-{c}"), "customer").await }
    }))
    .await;
    for chunk in (0..500).collect::<Vec<_>>().chunks(10) {
        let placing = chunk.iter().map(|&i| {
            let (api, token) = (api.clone(), tokens[i % 50].clone());
            async move { api.place(&token, lines_for(i)).await }
        });
        ids.extend(futures_util::future::join_all(placing).await);
        if ids.len() == 150 {
            others[1].kill();
        }
    }

    let views = settle(&api, &analyst, &ids, Duration::from_secs(180)).await;

    assert_decided_as_their_events_say(&api, &analyst, &views).await;

    // No customer got two pushes for one event, and every decision was pushed.
    let deadline = Instant::now() + Duration::from_secs(30);
    let pushed = loop {
        let text = std::fs::read_to_string(&pushes).unwrap_or_default();
        let pushed: Vec<Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        if pushed.len() >= 500 || Instant::now() > deadline {
            break pushed;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let distinct: HashSet<&str> = pushed
        .iter()
        .map(|p| p["event_id"].as_str().unwrap())
        .collect();
    assert_eq!(distinct.len(), pushed.len(), "an event was pushed twice");
    assert_eq!(pushed.len(), 500, "one push per decided order");

    let metrics = api
        .client
        .get(format!("{}/metrics", others[0].url))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert_eq!(common::dead_letters_in(&metrics), Some(0), "{metrics}");
    for process in others.iter_mut().filter(|p| p.name != "processor-1") {
        assert!(
            process.terminate().success(),
            "{} did not stop cleanly",
            process.name
        );
    }
    engines.flush_cache().await;
}

/// PostgreSQL unreachable for the processors for 15 s while they have a backlog: they hold
/// their deliveries and wait behind their breakers (saying so on `/ready`), spend no delivery
/// attempts, and decide every order once it is back. Before this, 327 of 400 orders were
/// dead-lettered by a 6 s outage and stayed `placed` for good.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_unreachable_for_15_s_under_a_processor_backlog_parks_nothing() {
    let engines = Engines::fresh();
    let data = tempfile::tempdir().unwrap();
    let migrate = std::process::Command::new(common::binary())
        .args(["migrate", "--store", &engines.store])
        .status()
        .unwrap();
    assert!(migrate.success(), "orderflow migrate failed");
    // The processors reach PostgreSQL through a link the test can sever; the others do not.
    let (host, rest) = engines.store["postgres://".len()..]
        .split_once('/')
        .map(|(authority, rest)| (authority.rsplit('@').next().unwrap().to_owned(), rest))
        .unwrap();
    let link = common::Severable::to(&host).await;
    let user = engines.store["postgres://".len()..]
        .split_once('@')
        .map_or(String::new(), |(user, _)| format!("{user}@"));
    let severable_store = format!("postgres://{user}127.0.0.1:{}/{rest}", link.port);
    let args = engines.args();
    let mut processor_args = args.clone();
    processor_args[1] = &severable_store;
    let web = Process::serve("web", data.path(), "web", &args, &[]);
    wait_ready(&web.url).await;
    let _others = [
        Process::serve("relay", data.path(), "relay", &args, &[]),
        Process::serve("projector", data.path(), "projector", &args, &[]),
    ];
    let processors = [
        Process::serve(
            "processor-1",
            data.path(),
            "processor",
            &processor_args,
            &[],
        ),
        Process::serve(
            "processor-2",
            data.path(),
            "processor",
            &processor_args,
            &[],
        ),
    ];
    for processor in &processors {
        wait_ready(&processor.url).await;
    }
    let api = Arc::new(Api::new(&web.url));
    let analyst = api.token("ann", "analyst").await;
    let tokens: Vec<String> = futures_util::future::join_all((0..20).map(|c| {
        let api = api.clone();
        async move { api.token(&format!("outage-{c}"), "customer").await }
    }))
    .await;

    link.sever();
    let severed_at = Instant::now();
    let mut ids = Vec::new();
    for chunk in (0..200).collect::<Vec<_>>().chunks(20) {
        let placing = chunk.iter().map(|&i| {
            let (api, token) = (api.clone(), tokens[i % 20].clone());
            async move { api.place(&token, lines_for(i)).await }
        });
        ids.extend(futures_util::future::join_all(placing).await);
    }
    // The processors notice and say so.
    let deadline = Instant::now() + Duration::from_secs(30);
    let ready = loop {
        let ready: Value = api
            .client
            .get(format!("{}/ready", processors[0].url))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        if ready["paused"].as_array().is_some_and(|p| !p.is_empty()) {
            break ready;
        }
        assert!(
            Instant::now() < deadline,
            "the processor never reported the outage: {ready}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let outage = Duration::from_secs(15).saturating_sub(severed_at.elapsed());
    tokio::time::sleep(outage).await;
    link.restore();

    let views = settle(&api, &analyst, &ids, Duration::from_secs(120)).await;

    assert_eq!(ready["status"], "not ready", "{ready}");
    assert_eq!(ready["paused"][0]["subscription"], "order-processor");
    assert_eq!(ready["paused"][0]["engine"], "event_store");
    assert_decided_as_their_events_say(&api, &analyst, &views).await;
    for processor in &processors {
        let metrics = api
            .client
            .get(format!("{}/metrics", processor.url))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        assert_eq!(
            common::dead_letters_in(&metrics),
            Some(0),
            "{}: {metrics}",
            processor.name
        );
        let ready = api
            .client
            .get(format!("{}/ready", processor.url))
            .send()
            .await
            .unwrap();
        assert_eq!(
            ready.status(),
            StatusCode::OK,
            "{} is ready again",
            processor.name
        );
    }
    engines.flush_cache().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn views_stay_correct_when_redis_is_flushed_mid_run() {
    let engines = Engines::fresh();
    let data = tempfile::tempdir().unwrap();
    let server = Process::serve("all", data.path(), "all", &engines.args(), &[]);
    wait_ready(&server.url).await;
    let api = Api::new(&server.url);
    let token = api.token("flushy", "customer").await;
    let analyst = api.token("ann", "analyst").await;
    let mut ids = Vec::new();
    for i in 0..10 {
        ids.push(
            api.place(&token, json!([{"sku": "TEA-001", "quantity": 1 + i % 2}]))
                .await,
        );
    }
    let before = settle(&api, &token, &ids, Duration::from_secs(60)).await;

    let deleted = engines.flush_cache().await;
    assert!(deleted > 0, "the test's keys were in Redis");
    for i in 0..10 {
        ids.push(
            api.place(&token, json!([{"sku": "MUG-001", "quantity": 1 + i % 2}]))
                .await,
        );
    }

    let after = settle(&api, &token, &ids, Duration::from_secs(60)).await;
    for (id, view) in &before {
        assert_eq!(&after[id], view, "{id} changed across the flush");
    }
    for (id, view) in &after {
        let version = view["version"].as_u64().unwrap();
        let folded = api
            .get(&analyst, &format!("/api/orders/{id}?at_version={version}"))
            .await;
        assert_eq!(&folded, view);
    }
    // The list comes back whole once the projector has rebuilt the cache.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let mine = api.get(&token, "/api/orders?limit=100").await;
        if mine["items"].as_array().unwrap().len() == 20 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the order list was not rebuilt: {mine}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // So does the catalog, which no request reads by key: the projector notices the flushed
    // cache and rebuilds it from the log.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let response = api
            .client
            .get(format!("{}/api/catalog", api.url))
            .send()
            .await
            .unwrap();
        let catalog: Value = response.json().await.unwrap();
        if catalog.as_array().unwrap().len() == 6 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the catalog was not rebuilt: {catalog}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    engines.flush_cache().await;
}

/// `orderflow replay` as an operator runs it, against PostgreSQL and Redis while the system
/// (separate processes) keeps taking orders: every order ends decided as its events say, the
/// lists are whole, and Redis holds only the new generation of the views.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replay_while_orders_flow_switches_every_reader_and_loses_nothing() {
    let engines = Engines::fresh();
    let data = tempfile::tempdir().unwrap();
    let args = engines.args();
    let web = Process::serve("web", data.path(), "web", &args, &[]);
    wait_ready(&web.url).await;
    let _others = [
        Process::serve("relay", data.path(), "relay", &args, &[]),
        Process::serve("processor", data.path(), "processor", &args, &[]),
        Process::serve("projector", data.path(), "projector,notifier", &args, &[]),
    ];
    let api = Arc::new(Api::new(&web.url));
    let token = api.token("replayed", "customer").await;
    let analyst = api.token("ann", "analyst").await;
    let mut ids = Vec::new();
    for i in 0..20 {
        ids.push(api.place(&token, lines_for(i + 2)).await);
    }
    settle(&api, &token, &ids, Duration::from_secs(60)).await;

    let replay = {
        let (store, cache) = (engines.store.clone(), engines.cache.clone());
        tokio::task::spawn_blocking(move || {
            std::process::Command::new(common::binary())
                .args(["replay", "--store", &store, "--cache", &cache])
                .output()
        })
    };
    let placing = async {
        let mut placed = Vec::new();
        for i in 0..20 {
            placed.push(api.place(&token, lines_for(i + 30)).await);
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        placed
    };
    let (replayed, placed) = tokio::join!(replay, placing);
    let replayed = replayed.unwrap().expect("orderflow replay runs");
    assert!(
        replayed.status.success(),
        "{}",
        String::from_utf8_lossy(&replayed.stderr)
    );
    assert!(String::from_utf8_lossy(&replayed.stderr).contains("into generation 1"));
    ids.extend(placed);

    let views = settle(&api, &analyst, &ids, Duration::from_secs(60)).await;
    for (id, view) in &views {
        let version = view["version"].as_u64().unwrap();
        let folded = api
            .get(&analyst, &format!("/api/orders/{id}?at_version={version}"))
            .await;
        assert_eq!(&folded, view, "{id} is the fold of its events");
    }
    let mine = api.get(&token, "/api/orders?limit=100").await;
    assert_eq!(mine["items"].as_array().unwrap().len(), ids.len());
    let old = engines.keys("doc:order:*").await;
    let new = engines.keys("doc:g1:order:*").await;
    assert!(old.is_empty(), "generation 0 is deleted: {old:?}");
    assert!(!new.is_empty(), "generation 1 holds the views");
    engines.flush_cache().await;
}

/// An OTLP/HTTP receiver in the test: every span it is sent, as (service, trace id, span name).
struct Collector {
    url: String,
    spans: Arc<std::sync::Mutex<Vec<(String, String, String)>>>,
}

impl Collector {
    async fn start() -> Self {
        use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
        use opentelemetry_proto::tonic::common::v1::any_value::Value as Any;
        use prost::Message as _;
        let spans = Arc::new(std::sync::Mutex::new(Vec::new()));
        let kept = spans.clone();
        let receive = move |body: axum::body::Bytes| {
            let kept = kept.clone();
            async move {
                let Ok(request) = ExportTraceServiceRequest::decode(body) else {
                    return StatusCode::BAD_REQUEST;
                };
                let hex =
                    |bytes: &[u8]| bytes.iter().map(|b| format!("{b:02x}")).collect::<String>();
                for resource in request.resource_spans {
                    let service = resource
                        .resource
                        .iter()
                        .flat_map(|r| &r.attributes)
                        .find(|a| a.key == "service.name")
                        .and_then(|a| match a.value.as_ref()?.value.as_ref()? {
                            Any::StringValue(name) => Some(name.clone()),
                            _ => None,
                        })
                        .unwrap_or_default();
                    for span in resource.scope_spans.into_iter().flat_map(|s| s.spans) {
                        kept.lock().unwrap().push((
                            service.clone(),
                            hex(&span.trace_id),
                            span.name.clone(),
                        ));
                    }
                }
                StatusCode::OK
            }
        };
        let app = axum::Router::new().route("/v1/traces", axum::routing::post(receive));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await });
        Self { url, spans }
    }

    /// The services that sent spans of `trace_id`, each with its span names.
    fn services_of(&self, trace_id: &str) -> std::collections::BTreeMap<String, Vec<String>> {
        let mut services = std::collections::BTreeMap::<String, Vec<String>>::new();
        for (service, trace, name) in self.spans.lock().unwrap().iter() {
            if trace == trace_id {
                services
                    .entry(service.clone())
                    .or_default()
                    .push(name.clone());
            }
        }
        services
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_orders_spans_from_every_role_share_the_trace_its_request_began() {
    let collector = Collector::start().await;
    let engines = Engines::fresh();
    let data = tempfile::tempdir().unwrap();
    let pushes = data.path().join("pushes.jsonl");
    let migrate = std::process::Command::new(common::binary())
        .args(["migrate", "--store", &engines.store])
        .status()
        .unwrap();
    assert!(migrate.success(), "orderflow migrate failed");
    // The standard variables, and a short batch delay so spans arrive within the test.
    let otel = [
        ("OTEL_EXPORTER_OTLP_ENDPOINT", collector.url.as_str()),
        ("OTEL_BSP_SCHEDULE_DELAY", "100"),
    ];
    let args = engines.args();
    let mut push_args = args.clone();
    push_args.extend(["--push-log", pushes.to_str().unwrap()]);
    let web = Process::serve("web", data.path(), "web", &args, &otel);
    let roles = [
        Process::serve("relay", data.path(), "relay", &args, &otel),
        Process::serve("processor", data.path(), "processor", &args, &otel),
        Process::serve("projector", data.path(), "projector", &args, &otel),
        Process::serve("notifier", data.path(), "notifier", &push_args, &otel),
    ];
    wait_ready(&web.url).await;
    let api = Api::new(&web.url);
    let customer = api.token("trace-tess", "customer").await;
    let trace_id = Uuid::new_v4().simple().to_string();
    let response = api
        .client
        .post(format!("{}/api/orders", api.url))
        .bearer_auth(&customer)
        .header("traceparent", format!("00-{trace_id}-00f067aa0ba902b7-01"))
        // Eight grinders: the sandbox declines the payment, and the processor says so in its log.
        .json(&json!({"lines": lines_for(0), "shipping_address": {
            "name": "Tess Trace", "line1": "1 Span Street", "city": "Collector",
            "postal_code": "4318", "country": "DE"}}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::ACCEPTED);
    let order: Value = response.json().await.unwrap();
    let id = order["order_id"].as_str().unwrap().to_owned();
    let views = settle(
        &api,
        &customer,
        std::slice::from_ref(&id),
        Duration::from_secs(60),
    )
    .await;
    assert_eq!(views[&id]["reason"], "payment_declined", "{:?}", views[&id]);

    // Every role's spans of this order arrive under the client's trace id.
    let expected = [
        "orderflow-web",
        "orderflow-relay",
        "orderflow-processor",
        "orderflow-projector",
        "orderflow-notifier",
    ];
    let deadline = Instant::now() + Duration::from_secs(60);
    let services = loop {
        let services = collector.services_of(&trace_id);
        if expected.iter().all(|s| services.contains_key(*s)) || Instant::now() > deadline {
            break services;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    for service in expected {
        assert!(
            services.contains_key(service),
            "no span of {service} in trace {trace_id}: {services:?}"
        );
    }
    assert!(
        services["orderflow-web"].iter().any(|n| n == "http"),
        "{services:?}"
    );
    assert!(
        services["orderflow-relay"].iter().any(|n| n == "publish"),
        "{services:?}"
    );
    assert!(
        services["orderflow-processor"]
            .iter()
            .any(|n| n == "consume"),
        "{services:?}"
    );
    // No other trace took this order's spans: every span with the order's events is in it.
    assert!(
        collector
            .spans
            .lock()
            .unwrap()
            .iter()
            .all(|(_, t, _)| t.len() == 32),
        "trace ids are 16 bytes"
    );

    // The events carry it: the placement the request's span, the processor's decision the
    // processor's span, in the same trace.
    let events: Value = api
        .get(&customer, &format!("/api/orders/{id}/events"))
        .await;
    let events = events.as_array().unwrap();
    let placed = events[0]["metadata"]["traceparent"].as_str().unwrap();
    let decided = events.last().unwrap()["metadata"]["traceparent"]
        .as_str()
        .unwrap();
    assert!(placed.starts_with(&format!("00-{trace_id}-")), "{placed}");
    assert!(decided.starts_with(&format!("00-{trace_id}-")), "{decided}");
    assert_ne!(
        placed, decided,
        "the decision is the processor's span, not the request's"
    );
    assert!(
        !placed.contains("00f067aa0ba902b7"),
        "the request's span is a child of the client's, not the client's own"
    );

    // And their log lines name the trace: those a role writes about its work (the processor
    // declining the payment, the notifier pushing) come from within the delivery's span.
    let named = |process: &Process| {
        process
            .log
            .lock()
            .unwrap()
            .iter()
            .any(|line| line.contains(&trace_id))
    };
    let talkers: Vec<&Process> = roles
        .iter()
        .filter(|p| ["processor", "notifier"].contains(&p.name.as_str()))
        .collect();
    let deadline = Instant::now() + Duration::from_secs(30);
    while !talkers.iter().all(|p| named(p)) && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    for process in talkers {
        assert!(
            named(process),
            "no log line of {} names the trace: {:?}",
            process.name,
            process.log.lock().unwrap()
        );
    }
}
