//! Helpers for the cross-crate tests: start the real application on a free port with its own
//! data directory, talk to it over HTTP as a client would, and drive a real browser.
//!
//! - [`spawn_app`] / [`spawn_app_in`]: a fresh or an existing data directory.
//! - [`TestApp`]: an HTTP client bound to one app, with the calls tests repeat.
//! - [`browser`]: a small Chrome DevTools Protocol driver for headless Chromium.
//! - [`fakes`]: local HTTP fakes of Azure services that enforce their documented contracts.
//! - [`process`]: `orderflow` as separate OS processes, one per role.
//! - [`oidc_provider`]: a real OpenID provider (npm `oidc-provider`) and sign-in at it.
//!
//! Tracing stays quiet unless `TEST_LOG` is set.

pub mod browser;
pub mod fakes;
pub mod oidc_provider;
/// Running `orderflow` as OS processes: the helpers the services crate's own tests use.
#[path = "../services/tests/common/mod.rs"]
pub mod process;

use std::path::{Path, PathBuf};
use std::sync::{Arc, Once};
use std::time::Duration;

use eventlog::EventStore;
use reqwest::{Response, StatusCode};
use serde_json::{Value, json};
use services::{Application, Settings, Stopper};
use tokio::task::JoinHandle;
use uuid::Uuid;

static TRACING: Once = Once::new();

pub struct TestApp {
    pub address: String,
    /// `http://HOST:PORT` of `/metrics` when `--metrics-listen` moved it off `address`.
    pub metrics_address: Option<String>,
    pub client: reqwest::Client,
    /// What the tests reach behind the API (the process's wiring stays private).
    pub hooks: services::Hooks,
    pub data_dir: PathBuf,
    /// Keeps a fresh data directory alive for the test's length.
    _temp: Option<Arc<tempfile::TempDir>>,
    stopper: Stopper,
    server: JoinHandle<anyhow::Result<()>>,
}

/// Starts the app with a fresh data directory and the demo catalog.
pub async fn spawn_app() -> TestApp {
    let temp = Arc::new(tempfile::tempdir().expect("a temporary directory"));
    let mut app = spawn_app_in(temp.path()).await;
    app._temp = Some(temp);
    app
}

/// Starts the app with a fresh data directory and the settings `configure` makes of the
/// embedded defaults.
pub async fn spawn_app_using(configure: impl FnOnce(&mut Settings)) -> TestApp {
    spawn_app_using_on(None, configure).await
}

/// [`spawn_app_using`] on a listener bound beforehand.
pub async fn spawn_app_using_on(
    listener: Option<std::net::TcpListener>,
    configure: impl FnOnce(&mut Settings),
) -> TestApp {
    let temp = Arc::new(tempfile::tempdir().expect("a temporary directory"));
    let mut settings = Settings::embedded("127.0.0.1:0".parse().unwrap(), temp.path().to_owned());
    configure(&mut settings);
    let mut app = spawn_app_on(settings, listener).await;
    app._temp = Some(temp);
    app
}

/// Starts the app on an existing data directory (as a restart would).
pub async fn spawn_app_in(data_dir: &Path) -> TestApp {
    let settings = Settings::embedded("127.0.0.1:0".parse().unwrap(), data_dir.to_owned());
    spawn_app_with(settings).await
}

/// Starts the app with these settings (fast retries are set here).
pub async fn spawn_app_with(settings: Settings) -> TestApp {
    spawn_app_on(settings, None).await
}

/// Starts the app on a listener bound beforehand, or binds `settings.listen`.
pub async fn spawn_app_on(
    mut settings: Settings,
    listener: Option<std::net::TcpListener>,
) -> TestApp {
    let data_dir = settings.data_dir.clone();
    TRACING.call_once(|| {
        if std::env::var_os("TEST_LOG").is_some() {
            services::telemetry::init("info");
        }
    });
    // Retries that fit in a test's patience.
    settings.retry.base_delay = Duration::from_millis(20);
    let app = Application::build_on(settings, listener)
        .await
        .expect("the app builds");
    let address = format!("http://{}", app.address());
    let metrics_address = app.metrics_address().map(|a| format!("http://{a}"));
    let hooks = app.hooks();
    let stopper = app.stopper();
    let server = tokio::spawn(app.run_until_stopped());
    TestApp {
        address,
        metrics_address,
        client: reqwest::Client::new(),
        hooks,
        data_dir,
        _temp: None,
        stopper,
        server,
    }
}

/// A valid order body for `lines` of `(sku, quantity)`.
pub fn order_body(lines: &[(&str, i64)]) -> Value {
    json!({
        "lines": lines.iter().map(|(sku, quantity)| json!({"sku": sku, "quantity": quantity})).collect::<Vec<_>>(),
        "shipping_address": {
            "name": "Ada Lovelace", "line1": "12 Analytical Row", "city": "London",
            "postal_code": "N1 9GU", "country": "GB"
        }
    })
}

/// Polls `check` every 20 ms until it yields a value; panics with `what` after 10 s.
pub async fn eventually<T, F, Fut>(what: impl std::fmt::Display, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, String>>,
{
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        match check().await {
            Ok(value) => return value,
            Err(last) => assert!(
                tokio::time::Instant::now() < deadline,
                "{what} did not happen within 10 s; last seen: {last}"
            ),
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// One customer's orders in three final states, and the SKU they used (8 of 10 left).
pub struct SettledOrders {
    pub token: String,
    pub sku: String,
    pub confirmed: String,
    pub rejected: String,
    pub cancelled: String,
}

impl SettledOrders {
    pub fn ids(&self) -> [&str; 3] {
        [&self.confirmed, &self.rejected, &self.cancelled]
    }
}

/// A SKU no other test uses.
pub fn unique_sku(prefix: &str) -> String {
    format!(
        "{prefix}-{}",
        Uuid::new_v4().simple().to_string()[..8].to_uppercase()
    )
}

impl TestApp {
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.address)
    }

    /// A development token for `name` in `role`.
    pub async fn token(&self, name: &str, role: &str) -> String {
        let response = self
            .client
            .post(self.url("/api/dev/token"))
            .json(&json!({ "customer_id": name, "role": role }))
            .send()
            .await
            .expect("dev login answers");
        assert_eq!(response.status(), StatusCode::OK);
        let body: Value = response.json().await.unwrap();
        body["token"].as_str().unwrap().to_owned()
    }

    /// A customer with a fresh name, and their token.
    pub async fn new_customer(&self) -> String {
        self.token(&format!("customer-{}", Uuid::new_v4()), "customer")
            .await
    }

    /// Lists a new product with `stock` units (arranged through the command side directly, as
    /// the catalog has no "list product" endpoint).
    pub async fn list_product(&self, sku: &str, unit_price: u64, stock: u32) {
        use domain::values::{Currency, Sku};
        let sku = Sku::parse(sku).unwrap();
        let metadata = domain::EventMetadata {
            correlation_id: Uuid::now_v7(),
            actor: "test".into(),
            ..Default::default()
        };
        let commands = &self.hooks.commands;
        commands
            .list_product(
                sku.clone(),
                "Test product",
                unit_price,
                Currency::parse("EUR").unwrap(),
                &metadata,
            )
            .await
            .expect("product listed");
        if stock > 0 {
            commands
                .restock(&sku, stock, &metadata)
                .await
                .expect("restocked");
        }
    }

    pub async fn post(&self, token: &str, path: &str, body: &Value) -> Response {
        self.client
            .post(self.url(path))
            .bearer_auth(token)
            .json(body)
            .send()
            .await
            .expect("the server answers")
    }

    pub async fn get(&self, token: &str, path: &str) -> Response {
        self.client
            .get(self.url(path))
            .bearer_auth(token)
            .send()
            .await
            .expect("the server answers")
    }

    /// Places an order and returns the raw response.
    pub async fn place(&self, token: &str, key: &str, body: &Value) -> Response {
        self.client
            .post(self.url("/api/orders"))
            .bearer_auth(token)
            .header("Idempotency-Key", key)
            .json(body)
            .send()
            .await
            .expect("the server answers")
    }

    /// Places an order that must be accepted; returns its id.
    pub async fn place_ok(&self, token: &str, lines: &[(&str, i64)]) -> String {
        let response = self
            .place(token, &Uuid::new_v4().to_string(), &order_body(lines))
            .await;
        assert_eq!(
            response.status(),
            StatusCode::ACCEPTED,
            "{}",
            response.text().await.unwrap_or_default()
        );
        let body: Value = response.json().await.unwrap();
        body["order_id"].as_str().unwrap().to_owned()
    }

    /// The order's view once its status is no longer `placed` (or after `timeout`).
    pub async fn settled(&self, token: &str, order_id: &str) -> Value {
        self.wait_for(token, order_id, |v| v["status"] != "placed")
            .await
    }

    /// Polls the order's view until `done` holds; panics after 10 s.
    pub async fn wait_for(
        &self,
        token: &str,
        order_id: &str,
        done: impl Fn(&Value) -> bool,
    ) -> Value {
        eventually(
            format!("order {order_id} reaching the expected state"),
            || async {
                let view = self.view(token, order_id).await;
                if done(&view) {
                    Ok(view)
                } else {
                    Err(view.to_string())
                }
            },
        )
        .await
    }

    /// The order's view as the API answers it (`null` if it is not a 200).
    pub async fn view(&self, token: &str, order_id: &str) -> Value {
        let response = self.get(token, &format!("/api/orders/{order_id}")).await;
        response.json().await.unwrap_or(Value::Null)
    }

    /// Places three orders for `customer` and settles them: one confirmed, one rejected
    /// (out of stock) and one cancelled after confirmation.
    /// Waits until this app's web role reads `projection` from `generation` (it re-reads
    /// the generations each second).
    pub async fn following(&self, projection: projections::Projection, generation: u64) {
        eventually("the web role following the switch", || async {
            match self.hooks.projector.generation(projection) {
                g if g == generation => Ok(()),
                g => Err(format!("still on generation {g}")),
            }
        })
        .await;
    }

    pub async fn settled_orders(&self, customer: &str) -> SettledOrders {
        let (sku, scarce) = (unique_sku("TEA"), unique_sku("RARE"));
        self.list_product(&sku, 450, 10).await;
        self.list_product(&scarce, 450, 0).await;
        let token = self.token(customer, "customer").await;
        let confirmed = self.place_ok(&token, &[(&sku, 2)]).await;
        let rejected = self.place_ok(&token, &[(&scarce, 1)]).await;
        let cancelled = self.place_ok(&token, &[(&sku, 1)]).await;
        for id in [&confirmed, &rejected, &cancelled] {
            self.settled(&token, id).await;
        }
        self.post(
            &token,
            &format!("/api/orders/{cancelled}/cancel"),
            &serde_json::json!({}),
        )
        .await;
        self.wait_for(&token, &cancelled, |v| v["status"] == "cancelled")
            .await;
        self.wait_for_available(&sku, 8).await;
        SettledOrders {
            token,
            sku,
            confirmed,
            rejected,
            cancelled,
        }
    }

    /// The catalog entry of `sku`.
    pub async fn catalog_item(&self, sku: &str) -> Value {
        let catalog: Value = self
            .client
            .get(self.url("/api/catalog"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        catalog
            .as_array()
            .unwrap()
            .iter()
            .find(|item| item["sku"] == sku)
            .cloned()
            .unwrap_or(Value::Null)
    }

    /// Waits until the catalog shows `available` units of `sku`.
    pub async fn wait_for_available(&self, sku: &str, available: u64) -> Value {
        eventually(format!("{sku} having {available} available"), || async {
            let item = self.catalog_item(sku).await;
            if item["available"] == available {
                Ok(item)
            } else {
                Err(item.to_string())
            }
        })
        .await
    }

    /// Stops the app gracefully and waits until it has.
    pub async fn stop(self) {
        self.stopper.stop();
        self.server
            .await
            .expect("the server task ends")
            .expect("the server stops cleanly");
    }
}

/// Places a one-unit order of `sku` through `commands` directly (no HTTP, no topic), for tests
/// of the command and read sides below the API.
pub async fn place_directly(commands: &commands::Commands, sku: &domain::values::Sku) -> Uuid {
    use domain::values::{CustomerId, Quantity, ShippingAddress};
    let request = commands::PlaceOrder {
        customer_id: CustomerId(Uuid::new_v4()),
        idempotency_key: None,
        request_hash: "h".into(),
        lines: vec![(sku.clone(), Quantity::parse(1).unwrap())],
        shipping_address: ShippingAddress {
            name: "A".into(),
            line1: "1 Road".into(),
            line2: None,
            city: "Town".into(),
            postal_code: "1".into(),
            country: "GB".into(),
        },
        metadata: domain::EventMetadata {
            correlation_id: Uuid::now_v7(),
            actor: "customer:a".into(),
            ..Default::default()
        },
    };
    commands.place_order(request).await.unwrap().order_id
}

/// A SQLite event store in a directory of its own, removed with the `TempDir`.
pub async fn sqlite_store() -> (tempfile::TempDir, Arc<infra::event_store::SqliteEventStore>) {
    let dir = tempfile::tempdir().unwrap();
    let store = infra::event_store::SqliteEventStore::open(&dir.path().join("s.db"))
        .await
        .unwrap();
    (dir, Arc::new(store))
}

/// The metadata of a test's own commands.
pub fn test_metadata() -> domain::EventMetadata {
    domain::EventMetadata {
        correlation_id: Uuid::now_v7(),
        actor: "test".into(),
        ..Default::default()
    }
}

/// A fresh store holding one order of `sku` (listed, not stocked), placed and confirmed
/// directly through the command side, and that order's two events.
pub async fn confirmed_order(
    sku: &str,
) -> (
    tempfile::TempDir,
    Arc<infra::event_store::SqliteEventStore>,
    Uuid,
    Vec<domain::RecordedEvent>,
) {
    use domain::values::{Currency, Sku};
    let (dir, store) = sqlite_store().await;
    let commands = commands::Commands::new(store.clone());
    let metadata = test_metadata();
    let sku = Sku::parse(sku).unwrap();
    let eur = Currency::parse("EUR").unwrap();
    commands
        .list_product(sku.clone(), "Item", 100, eur, &metadata)
        .await
        .unwrap();
    let order_id = place_directly(&commands, &sku).await;
    commands
        .order(order_id, domain::order::OrderCommand::Confirm, &metadata)
        .await
        .unwrap();
    let events = store
        .read_stream(&format!("order-{order_id}"), 1)
        .await
        .unwrap();
    (dir, store, order_id, events)
}
