//! The running system: engines chosen, services built on them, workers started.
//!
//! Every role's code sees only ports (`Arc<dyn EventStore>`, `Arc<dyn EventBus>`, ...); this
//! is the one place that picks the adapters. Today that is the embedded set: SQLite, the
//! in-process topic, the in-memory cache, the sandbox gateway and the logging push sender.

use std::path::Path;
use std::sync::Arc;

use anyhow::Context;
use commands::payment::PaymentGateway;
use commands::processor::{self, OrderProcessor};
use commands::{Commands, EventStore};
use infra::bus::{EventBus, Handler, MemoryBus, consume};
use infra::event_store::SqliteEventStore;
use infra::payment::SandboxPayments;
use infra::push::LogPush;
use infra::relay::{Relay, RelayConfig};
use infra::views::MemoryViewStore;
use projections::{LiveFeed, Notifier, Projector, PushSender, ViewStore, notifier, projector};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::config::Settings;
use crate::metrics::Metrics;

/// The name of the SQLite file inside the data directory.
pub const STORE_FILE: &str = "orderflow.db";

pub struct System {
    pub store: Arc<dyn EventStore>,
    /// The same store, for what only SQLite reports (group-commit batches).
    pub sqlite: Arc<SqliteEventStore>,
    pub bus: Arc<dyn EventBus>,
    pub views: Arc<dyn ViewStore>,
    pub commands: Arc<Commands>,
    pub projector: Arc<Projector>,
    pub processor: Arc<OrderProcessor>,
    pub notifier: Arc<Notifier>,
    pub live: Arc<LiveFeed>,
    pub push: Arc<dyn PushSender>,
    /// The embedded push sender, to see what was pushed.
    pub log_push: Arc<LogPush>,
    pub payments: Arc<SandboxPayments>,
    pub metrics: Arc<Metrics>,
}

impl System {
    /// Everything in one process on embedded engines, with the store in `data_dir`.
    pub async fn embedded(settings: &Settings) -> anyhow::Result<Arc<Self>> {
        let sqlite = Arc::new(open_store(&settings.data_dir).await?);
        let store: Arc<dyn EventStore> = sqlite.clone();
        let bus: Arc<dyn EventBus> = Arc::new(MemoryBus::new(
            &[
                processor::SUBSCRIPTION,
                projector::SUBSCRIPTION,
                notifier::SUBSCRIPTION,
            ],
            settings.retry,
        ));
        let views: Arc<dyn ViewStore> = Arc::new(MemoryViewStore::new());
        let payments = Arc::new(SandboxPayments::new());
        let log_push = Arc::new(LogPush::new());
        let push: Arc<dyn PushSender> = log_push.clone();
        let live = Arc::new(LiveFeed::default());
        let commands = Commands::new(store.clone());
        let gateway: Arc<dyn PaymentGateway> = payments.clone();
        Ok(Arc::new(Self {
            projector: Arc::new(Projector::new(store.clone(), views.clone())),
            processor: Arc::new(OrderProcessor::new(commands.clone(), gateway)),
            notifier: Arc::new(Notifier::new(store.clone(), views.clone(), push.clone())),
            store,
            sqlite,
            bus,
            views,
            commands,
            live,
            push,
            log_push,
            payments,
            metrics: Arc::default(),
        }))
    }

    /// Starts the relay and one consumer per subscription; they stop when `shutdown` turns
    /// true, after finishing what they hold.
    pub async fn spawn_workers(
        self: &Arc<Self>,
        settings: &Settings,
        shutdown: watch::Receiver<bool>,
    ) -> anyhow::Result<Vec<JoinHandle<()>>> {
        let relay = Relay::new(self.store.clone(), self.bus.clone(), RelayConfig::default());
        let mut workers = vec![
            tokio::spawn(relay.run(shutdown.clone())),
            tokio::spawn(
                self.live
                    .clone()
                    .bridge(self.views.clone(), shutdown.clone()),
            ),
        ];
        let processor = self.processor.clone();
        let projector = self.projector.clone();
        let notifier = self.notifier.clone();
        let consumers: [(&'static str, usize, Handler); 3] = [
            (
                processor::SUBSCRIPTION,
                settings.processor_concurrency,
                self.handler(processor::SUBSCRIPTION, move |e| {
                    let p = processor.clone();
                    async move { p.handle(&e).await.map_err(|e| e.to_string()) }
                }),
            ),
            (
                projector::SUBSCRIPTION,
                1,
                self.handler(projector::SUBSCRIPTION, move |e| {
                    let p = projector.clone();
                    async move { p.handle(&e).await.map_err(|e| e.to_string()) }
                }),
            ),
            (
                notifier::SUBSCRIPTION,
                4,
                self.handler(notifier::SUBSCRIPTION, move |e| {
                    let n = notifier.clone();
                    async move { n.handle(&e).await.map_err(|e| e.to_string()) }
                }),
            ),
        ];
        for (name, concurrency, handler) in consumers {
            let subscription = self
                .bus
                .subscribe(name)
                .await
                .with_context(|| format!("subscribing {name}"))?;
            workers.push(tokio::spawn(consume(
                name,
                subscription,
                concurrency,
                handler,
                shutdown.clone(),
            )));
        }
        Ok(workers)
    }

    /// Wraps a handler so that each outcome is counted for `/metrics`.
    fn handler<F, Fut>(&self, subscription: &'static str, handle: F) -> Handler
    where
        F: Fn(domain::RecordedEvent) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<(), String>> + Send + 'static,
    {
        let metrics = self.metrics.clone();
        let handle = Arc::new(handle);
        Arc::new(move |event| {
            let metrics = metrics.clone();
            let handle = handle.clone();
            Box::pin(async move {
                let result = handle(event).await;
                let outcome = if result.is_ok() { "ok" } else { "failed" };
                metrics.incr(
                    "orderflow_consumer_events_total",
                    format!("subscription=\"{subscription}\",outcome=\"{outcome}\""),
                );
                result
            })
        })
    }
}

async fn open_store(data_dir: &Path) -> anyhow::Result<SqliteEventStore> {
    std::fs::create_dir_all(data_dir)
        .with_context(|| format!("creating the data directory {}", data_dir.display()))?;
    let path = data_dir.join(STORE_FILE);
    SqliteEventStore::open(&path)
        .await
        .with_context(|| format!("opening the event store {}", path.display()))
}
