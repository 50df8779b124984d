//! The running system: engines chosen by URL, services built on them, the roles' workers
//! started.
//!
//! Every role's code sees only ports (`Arc<dyn EventStore>`, `Arc<dyn EventBus>`, ...); this
//! is the one place that maps a URL to an adapter:
//!
//! | setting | URLs |
//! |---|---|
//! | store | `sqlite://PATH`, `postgres://USER@HOST:PORT/DB[?schema=NAME]`, `cosmos://ACCOUNT/DATABASE` (feature `azure`) |
//! | bus | `memory://`, `amqp://USER:PASS@HOST:PORT/VHOST[?prefix=NAME]` |
//! | cache | `memory://`, `redis://HOST:PORT[/DB][?prefix=NAME]`, `rediss://` (TLS, `&ca-file=PATH`), password in the URL or `ORDERFLOW_CACHE_KEY` |
//! | bus (feature `azure`) | `servicebus://NAMESPACE/TOPIC[?key-name=NAME&receivers=N&max-batch-bytes=N&endpoint=URL]`, key in `ORDERFLOW_SERVICEBUS_KEY` |
//! | push | `log://`, `notificationhubs://NAMESPACE/HUB[?key-name=NAME&endpoint=URL]`, key in `ORDERFLOW_NOTIFICATIONHUBS_KEY` |

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use commands::Commands;
use commands::payment::PaymentGateway;
use commands::processor::{self, OrderProcessor};
use eventlog::EventStore;
use eventlog::{Failure, Fault};
use infra::bus::{Breakers, EngineDown, EventBus, Handler, MemoryBus, RabbitBus, consume_with};
use infra::event_store::{PostgresEventStore, SqliteEventStore};
use infra::kept::{Kept, KeptFile};
use infra::payment::SandboxPayments;
use infra::push::LogPush;
use infra::relay::{Relay, RelayConfig};
use infra::views::RedisViewStore;
use projections::MemoryViewStore;
use projections::{
    LiveFeed, Notifier, Projection, Projector, PushSender, ReadModels, ViewStore, notifier,
    projector,
};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::config::{Role, Settings, redact};
use crate::metrics::Metrics;

/// The subscriptions every topic has, one per consuming role.
pub const SUBSCRIPTIONS: [&str; 3] = [
    processor::SUBSCRIPTION,
    projector::SUBSCRIPTION,
    notifier::SUBSCRIPTION,
];

/// How often the projector checks that the cache still holds its views (a flushed or
/// restarted Redis is rebuilt from the log).
const CACHE_CHECK: Duration = Duration::from_secs(2);
/// How often readers look for a replay's switch to a new generation of the views.
const GENERATION_CHECK: Duration = Duration::from_secs(1);
/// How long the analytics fold waits after being woken, so a burst of events is one fold.
const ANALYTICS_DEBOUNCE: Duration = Duration::from_millis(100);

pub struct System {
    pub(crate) store: Arc<dyn EventStore>,
    pub(crate) bus: Arc<dyn EventBus>,
    pub(crate) views: Arc<dyn ViewStore>,
    pub(crate) commands: Arc<Commands>,
    pub(crate) projector: Arc<Projector>,
    /// What readers ask of the views the projector writes (the API's read side).
    pub(crate) read_models: ReadModels,
    pub(crate) processor: Arc<OrderProcessor>,
    pub(crate) notifier: Arc<Notifier>,
    pub(crate) live: Arc<LiveFeed>,
    pub(crate) push: Arc<dyn PushSender>,
    /// The embedded push sender (the one used with `log://`), to see what was pushed.
    pub(crate) log_push: Arc<LogPush>,
    pub(crate) payments: Arc<SandboxPayments>,
    pub(crate) metrics: Arc<Metrics>,
    /// Replays started over HTTP.
    pub(crate) replays: Arc<crate::replays::Replays>,
    /// Wakes the analytics fold when the projector has handled events.
    analytics_due: Arc<tokio::sync::Notify>,
    /// Each subscription's circuit breakers, per engine (read by `/ready`).
    breakers: [(&'static str, Arc<Breakers>); 3],
    /// The topic a web process that runs no consumer opens for operators, on first use.
    operators_topic: OperatorsTopic,
}

/// What tests reach behind the API, and nothing else of the process: the engines' ports to
/// look at what was stored, published and cached, the consumers to hand events to directly,
/// and the embedded sandboxes (the payment gateway, the log of pushes) to steer and watch.
/// [`Application::hooks`](crate::Application::hooks) hands it out; the process's own
/// wiring stays private to [`System`].
#[derive(Clone)]
pub struct Hooks {
    pub store: Arc<dyn EventStore>,
    pub bus: Arc<dyn EventBus>,
    pub views: Arc<dyn ViewStore>,
    /// The command side, for what has no endpoint (listing a product).
    pub commands: Arc<Commands>,
    pub processor: Arc<OrderProcessor>,
    pub projector: Arc<Projector>,
    pub notifier: Arc<Notifier>,
    pub payments: Arc<SandboxPayments>,
    /// The embedded push sender (`log://`): what was pushed.
    pub pushed: Arc<LogPush>,
}

/// Where operators reach the topic's dead letters: this process's own topic, or, in a web
/// process that consumes nothing, one opened when an operator first asks (taking orders must
/// not wait for, or depend on, the topic).
enum OperatorsTopic {
    Own,
    OnFirstUse(Box<Settings>, tokio::sync::OnceCell<Arc<dyn EventBus>>),
}

impl System {
    /// What tests may reach (see [`Hooks`]).
    pub(crate) fn hooks(&self) -> Hooks {
        Hooks {
            store: self.store.clone(),
            bus: self.bus.clone(),
            views: self.views.clone(),
            commands: self.commands.clone(),
            processor: self.processor.clone(),
            projector: self.projector.clone(),
            notifier: self.notifier.clone(),
            payments: self.payments.clone(),
            pushed: self.log_push.clone(),
        }
    }

    /// Connects to the engines the settings name and builds every service on them.
    pub async fn build(settings: &Settings) -> anyhow::Result<Arc<Self>> {
        let store = open_store(settings).await?;
        let kept = open_kept(settings)?;
        let views = match &kept {
            Some((file, kept)) if scheme(&settings.cache) == "memory" => Arc::new(
                infra::views::embedded::keeping(file.clone(), kept, &KEPT_DOCS, &KEPT_INDEXES),
            )
                as Arc<dyn ViewStore>,
            _ => open_cache(settings).await?,
        };
        let bus = if uses_topic(settings) {
            match kept {
                Some((file, kept)) if scheme(&settings.bus) == "memory" => Arc::new(
                    MemoryBus::new(&SUBSCRIPTIONS, settings.retry).keeping(file, kept.dead_letters),
                ),
                _ => open_bus(settings).await?,
            }
        } else {
            // The web role only appends and reads: it needs no connection to the topic.
            Arc::new(MemoryBus::new(&[], settings.retry)) as Arc<dyn EventBus>
        };
        let operators_topic = if uses_topic(settings) || scheme(&settings.bus) == "memory" {
            OperatorsTopic::Own
        } else {
            OperatorsTopic::OnFirstUse(Box::new(settings.clone()), Default::default())
        };
        let payments = Arc::new(SandboxPayments::new(views.clone()));
        let log_push = Arc::new(
            LogPush::new(views.clone(), settings.push_log.clone())
                .context("opening the push log")?,
        );
        let metrics = Arc::new(Metrics::default());
        let push: Arc<dyn PushSender> = Arc::new(crate::metrics::CountedPush::new(
            open_push(settings, log_push.clone(), views.clone())?,
            metrics.clone(),
        ));
        let commands = Commands::new(store.clone());
        let gateway: Arc<dyn PaymentGateway> = payments.clone();
        let projector = Arc::new(Projector::new(store.clone(), views.clone()));
        projector
            .refresh_generation()
            .await
            .context("reading which generation of the views to use")?;
        Ok(Arc::new(Self {
            read_models: ReadModels::new(projector.clone()),
            projector,
            processor: Arc::new(OrderProcessor::new(commands.clone(), gateway)),
            notifier: Arc::new(Notifier::new(store.clone(), views.clone(), push.clone())),
            live: Arc::new(LiveFeed::default()),
            analytics_due: Arc::default(),
            breakers: SUBSCRIPTIONS.map(|name| (name, Arc::new(Breakers::new()))),
            operators_topic,
            replays: Arc::new(crate::replays::Replays::new(store.clone(), views.clone())),
            store,
            bus,
            views,
            commands,
            push,
            log_push,
            payments,
            metrics,
        }))
    }

    /// The topic whose dead letters operators list, re-drive and discard: the one this process
    /// consumes from, or (a web process) one connected on first use.
    pub async fn operators_topic(&self) -> anyhow::Result<Arc<dyn EventBus>> {
        match &self.operators_topic {
            OperatorsTopic::Own => Ok(self.bus.clone()),
            OperatorsTopic::OnFirstUse(settings, topic) => {
                topic.get_or_try_init(|| open_bus(settings)).await.cloned()
            }
        }
    }

    /// Starts the workers of this process's roles; they stop when `shutdown` turns true,
    /// after finishing what they hold.
    pub async fn spawn_workers(
        self: &Arc<Self>,
        settings: &Settings,
        shutdown: watch::Receiver<bool>,
    ) -> anyhow::Result<Vec<JoinHandle<()>>> {
        let roles = &settings.roles;
        let mut workers = Vec::new();
        if roles.has(Role::Relay) {
            let relay = Relay::new(self.store.clone(), self.bus.clone(), RelayConfig::default());
            workers.push(tokio::spawn(relay.run(shutdown.clone())));
        }
        if roles.has(Role::Web) {
            let bridge = self
                .live
                .clone()
                .bridge(self.views.clone(), shutdown.clone());
            workers.push(tokio::spawn(bridge));
            let changes = self.projector.changes().clone();
            workers.push(tokio::spawn(
                changes.follow(self.views.clone(), shutdown.clone()),
            ));
        }
        if roles.has(Role::Projector) {
            workers.push(tokio::spawn(self.clone().watch_cache(shutdown.clone())));
            workers.push(tokio::spawn(self.clone().fold_analytics(shutdown.clone())));
        }
        if roles.has(Role::Web) || roles.has(Role::Projector) {
            workers.push(tokio::spawn(
                self.clone().follow_generation(shutdown.clone()),
            ));
        }
        for (role, name, concurrency, handler) in self.consumers(settings) {
            if !roles.has(role) {
                continue;
            }
            let subscription = self
                .bus
                .subscribe(name)
                .await
                .with_context(|| format!("subscribing {name}"))?;
            workers.push(tokio::spawn(consume_with(
                name,
                subscription,
                concurrency,
                handler,
                self.breakers_of(name),
                shutdown.clone(),
            )));
        }
        Ok(workers)
    }

    fn breakers_of(&self, subscription: &str) -> Arc<Breakers> {
        self.breakers
            .iter()
            .find(|(name, _)| *name == subscription)
            .map(|(_, breakers)| breakers.clone())
            .unwrap_or_default()
    }

    /// What each subscription's consumers in this process were handed.
    pub fn deliveries(&self) -> Vec<(&'static str, &infra::bus::Deliveries)> {
        self.breakers
            .iter()
            .map(|(name, breakers)| (*name, &breakers.deliveries))
            .collect()
    }

    /// The engines this process's consumers found down and wait for, per subscription.
    pub fn paused(&self) -> Vec<(&'static str, EngineDown)> {
        self.breakers
            .iter()
            .flat_map(|(name, breakers)| breakers.down().into_iter().map(move |d| (*name, d)))
            .collect()
    }

    fn consumers(&self, settings: &Settings) -> [(Role, &'static str, usize, Handler); 3] {
        let processor = self.processor.clone();
        let projector = self.projector.clone();
        let analytics_due = self.analytics_due.clone();
        let notifier = self.notifier.clone();
        [
            (
                Role::Processor,
                processor::SUBSCRIPTION,
                settings.processor_concurrency,
                self.handler(
                    processor::SUBSCRIPTION,
                    move |mut e: domain::RecordedEvent| {
                        let p = processor.clone();
                        async move {
                            // The processor's commands carry the trace on from this delivery's span
                            // (the processor copies the event's `traceparent` into what it appends).
                            if let Some(own) = infra::trace::traceparent(&tracing::Span::current())
                            {
                                e.metadata.traceparent = Some(own);
                            }
                            p.handle(&e).await.map_err(Failure::from)
                        }
                    },
                ),
            ),
            (
                Role::Projector,
                projector::SUBSCRIPTION,
                1,
                self.handler(projector::SUBSCRIPTION, move |e| {
                    let (p, due) = (projector.clone(), analytics_due.clone());
                    async move {
                        p.handle(&e).await?;
                        due.notify_one();
                        Ok(())
                    }
                }),
            ),
            (
                Role::Notifier,
                notifier::SUBSCRIPTION,
                4,
                self.handler(notifier::SUBSCRIPTION, move |e| {
                    let n = notifier.clone();
                    async move { n.handle(&e).await.map_err(Failure::from) }
                }),
            ),
        ]
    }

    /// Rebuilds the views from the log whenever the cache has lost them (Redis flushed or
    /// restarted), and keeps the projector's checkpoints moving.
    async fn watch_cache(self: Arc<Self>, mut shutdown: watch::Receiver<bool>) {
        loop {
            tokio::select! {
                _ = infra::stopped(&mut shutdown) => return,
                _ = tokio::time::sleep(CACHE_CHECK) => {}
            }
            let per_stream = [Projection::Orders, Projection::Catalog];
            match self.projector.catch_up_only(&per_stream).await {
                Ok(folded) => tracing::trace!(folded, "views checked against the log"),
                Err(error) => tracing::warn!(%error, "views could not catch up with the log"),
            }
        }
    }

    /// Folds the log into the analytics soon after the projector has handled events (they
    /// are a fold of the whole log, not kept per event), and at least every `CACHE_CHECK`.
    async fn fold_analytics(self: Arc<Self>, mut shutdown: watch::Receiver<bool>) {
        loop {
            tokio::select! {
                _ = infra::stopped(&mut shutdown) => return,
                _ = self.analytics_due.notified() => {
                    // Let a burst of events land first: one fold for all of them.
                    tokio::time::sleep(ANALYTICS_DEBOUNCE).await;
                }
                _ = tokio::time::sleep(CACHE_CHECK) => {}
            }
            match self.projector.catch_up_only(&[Projection::Analytics]).await {
                Ok(folded) => tracing::trace!(folded, "analytics folded the log"),
                Err(error) => tracing::warn!(%error, "analytics could not fold the log"),
            }
        }
    }

    /// Follows a replay's switch to a new generation of the views within a second (the replay
    /// keeps the old one for longer than that, `projections::replay::DEFAULT_GRACE`).
    async fn follow_generation(self: Arc<Self>, mut shutdown: watch::Receiver<bool>) {
        loop {
            tokio::select! {
                _ = infra::stopped(&mut shutdown) => return,
                _ = tokio::time::sleep(GENERATION_CHECK) => {}
            }
            if let Err(error) = self.projector.refresh_generation().await {
                tracing::warn!(%error, "cannot read which generation of the views to use");
            }
        }
    }

    /// Wraps a handler so that each outcome is counted for `/metrics`.
    fn handler<F, Fut>(&self, subscription: &'static str, handle: F) -> Handler
    where
        F: Fn(domain::RecordedEvent) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<(), Failure>> + Send + 'static,
    {
        let metrics = self.metrics.clone();
        let handle = Arc::new(handle);
        Arc::new(move |event| {
            let metrics = metrics.clone();
            let handle = handle.clone();
            Box::pin(async move {
                let result = handle(event).await;
                let outcome = match &result {
                    Ok(()) => "ok",
                    Err(failure) => match failure.fault {
                        Fault::Outage(_) => "engine_down",
                        Fault::Later(_) => "later",
                        Fault::Message => "failed",
                        Fault::Permanent => "parked",
                    },
                };
                metrics.handled(subscription, outcome);
                result
            })
        })
    }
}

/// What the embedded view store keeps across restarts besides completed claims: devices
/// registered for pushes and the sandbox gateway's answers (a capture must not be taken twice).
const KEPT_DOCS: [&str; 3] = [
    infra::push::embedded::KEY_PREFIX,
    infra::payment::sandbox::PAYMENT_PREFIX,
    infra::payment::sandbox::REFUND_PREFIX,
];
const KEPT_INDEXES: [&str; 1] = [infra::push::embedded::INDEX_PREFIX];

/// The file the embedded engines keep their promises in (`kept.db` in the data directory),
/// when this process uses the in-memory cache or topic.
fn open_kept(settings: &Settings) -> anyhow::Result<Option<(Arc<KeptFile>, Kept)>> {
    let embedded_bus = scheme(&settings.bus) == "memory" && uses_topic(settings);
    if scheme(&settings.cache) != "memory" && !embedded_bus {
        return Ok(None);
    }
    std::fs::create_dir_all(&settings.data_dir).with_context(|| {
        format!(
            "creating the data directory {}",
            settings.data_dir.display()
        )
    })?;
    let path = settings.data_dir.join(KEPT_FILE);
    let (file, kept) = KeptFile::open(&path).map_err(anyhow::Error::msg)?;
    tracing::info!(
        path = %path.display(),
        claims = kept.done.len(),
        documents = kept.docs.len(),
        dead_letters = kept.dead_letters.len(),
        "kept state of the embedded engines loaded"
    );
    Ok(Some((Arc::new(file), kept)))
}

/// The kept state's file name in the data directory.
pub const KEPT_FILE: &str = "kept.db";

/// Whether any of this process's roles publishes to or consumes from the topic.
pub fn uses_topic(settings: &Settings) -> bool {
    [
        Role::Relay,
        Role::Processor,
        Role::Projector,
        Role::Notifier,
    ]
    .into_iter()
    .any(|role| settings.roles.has(role))
}

/// The event store the settings name; its schema is applied (idempotently) on connect.
pub async fn open_store(settings: &Settings) -> anyhow::Result<Arc<dyn EventStore>> {
    let url = settings.store.as_str();
    let shown = redact(url);
    match scheme(url) {
        "sqlite" => {
            let path = PathBuf::from(&url["sqlite://".len()..]);
            if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
                std::fs::create_dir_all(dir)
                    .with_context(|| format!("creating the data directory {}", dir.display()))?;
            }
            let store = SqliteEventStore::open(&path)
                .await
                .with_context(|| format!("opening the event store {shown}"))?;
            Ok(Arc::new(store))
        }
        "postgres" | "postgresql" => {
            let store = PostgresEventStore::connect(url)
                .await
                .with_context(|| format!("connecting to the event store {shown}"))?;
            Ok(Arc::new(store))
        }
        "cosmos" => open_cosmos(settings).await,
        _ => bail!(
            "unknown event store URL {shown}: use sqlite://PATH, postgres://... or cosmos://ACCOUNT/DATABASE"
        ),
    }
}

/// The cache the settings name, connected (Redis: with `ORDERFLOW_CACHE_KEY` as the password
/// when its URL names none).
pub async fn open_cache(settings: &Settings) -> anyhow::Result<Arc<dyn ViewStore>> {
    let url = settings.cache.as_str();
    let shown = redact(url);
    match scheme(url) {
        "memory" => Ok(Arc::new(MemoryViewStore::new())),
        "redis" | "rediss" => {
            let password = settings.cache_key.as_ref().map(|k| k.expose());
            let cache = RedisViewStore::connect_with_password(url, password)
                .await
                .with_context(|| format!("connecting to the cache {shown}"))?;
            Ok(Arc::new(cache))
        }
        _ => bail!("unknown cache URL {shown}: use memory://, redis://... or rediss://..."),
    }
}

/// The topic the settings name, connected (RabbitMQ: its topology declared).
pub async fn open_bus(settings: &Settings) -> anyhow::Result<Arc<dyn EventBus>> {
    let (url, retry) = (settings.bus.as_str(), settings.retry);
    let shown = redact(url);
    match scheme(url) {
        "memory" => Ok(Arc::new(MemoryBus::new(&SUBSCRIPTIONS, retry))),
        "amqp" | "amqps" => {
            let bus = RabbitBus::connect(url, &SUBSCRIPTIONS, retry)
                .await
                .with_context(|| format!("connecting to the topic {shown}"))?;
            Ok(Arc::new(bus))
        }
        "servicebus" => open_service_bus(settings),
        _ => bail!("unknown topic URL {shown}: use memory://, amqp://... or servicebus://..."),
    }
}

pub fn scheme(url: &str) -> &str {
    url.split_once("://").map_or("", |(scheme, _)| scheme)
}

/// `cosmos://ACCOUNT/DATABASE[?container=events&leases=leases&endpoint=URL]`: the account's
/// endpoint is `https://ACCOUNT.documents.azure.com/` unless `endpoint` says otherwise (the
/// emulator, a test's fake); the key comes from `ORDERFLOW_COSMOS_KEY` only.
#[cfg(feature = "azure")]
async fn open_cosmos(settings: &Settings) -> anyhow::Result<Arc<dyn EventStore>> {
    Ok(Arc::new(connect_cosmos(settings).await?))
}

/// The Cosmos DB store the settings name, connected (its containers' partition keys checked).
#[cfg(feature = "azure")]
pub async fn connect_cosmos(
    settings: &Settings,
) -> anyhow::Result<infra::event_store::cosmos::CosmosEventStore> {
    use infra::event_store::cosmos::{CosmosEventStore, CosmosKey, CosmosSettings};
    let url = settings.store.as_str();
    let azure = crate::config::AzureUrl::parse(url)?;
    let key = crate::config::required(&settings.cosmos_key, "ORDERFLOW_COSMOS_KEY")?;
    let endpoint = match azure.param("endpoint") {
        Some(endpoint) => endpoint.to_owned(),
        None => format!("https://{}.documents.azure.com/", azure.namespace),
    };
    let mut cosmos = CosmosSettings::new(endpoint, CosmosKey::new(key), azure.entity.clone());
    if let Some(container) = azure.param("container") {
        cosmos.events_container = container.to_owned();
    }
    if let Some(container) = azure.param("leases") {
        cosmos.lease_container = container.to_owned();
    }
    CosmosEventStore::connect(cosmos)
        .await
        .with_context(|| format!("connecting to the event store {}", redact(url)))
}

#[cfg(not(feature = "azure"))]
async fn open_cosmos(settings: &Settings) -> anyhow::Result<Arc<dyn EventStore>> {
    bail!(
        "{}: this build has no Azure Cosmos DB support; build with `--features azure`",
        redact(&settings.store)
    )
}

#[cfg(feature = "azure")]
fn open_service_bus(settings: &Settings) -> anyhow::Result<Arc<dyn EventBus>> {
    Ok(Arc::new(connect_service_bus(settings)?))
}

/// The Service Bus topic the settings name (nothing is contacted yet).
#[cfg(feature = "azure")]
pub fn connect_service_bus(
    settings: &Settings,
) -> anyhow::Result<infra::bus::service_bus::ServiceBusTopic> {
    use infra::bus::service_bus::{ServiceBusSettings, ServiceBusTopic};
    use infra::sas::SasKey;
    let (url, retry) = (settings.bus.as_str(), settings.retry);
    let azure = crate::config::AzureUrl::parse(url)?;
    let key = crate::config::required(&settings.servicebus_key, "ORDERFLOW_SERVICEBUS_KEY")?;
    let mut settings = ServiceBusSettings::new(
        azure.namespace.clone(),
        azure.entity.clone(),
        azure
            .param("key-name")
            .unwrap_or("RootManageSharedAccessKey"),
        SasKey::new(key),
        &SUBSCRIPTIONS,
        retry,
    );
    settings.base_url = azure.param("endpoint").map(str::to_owned);
    let number = |name: &str| -> anyhow::Result<Option<usize>> {
        azure
            .param(name)
            .map(|v| {
                v.parse::<usize>()
                    .with_context(|| format!("{name}={v} in {}: not a number", redact(url)))
            })
            .transpose()
    };
    if let Some(receivers) = number("receivers")? {
        settings.receivers = receivers.max(1);
    }
    if let Some(bytes) = number("max-batch-bytes")? {
        settings.max_batch_bytes = bytes;
    }
    ServiceBusTopic::connect(settings)
        .with_context(|| format!("connecting to the topic {}", redact(url)))
}

#[cfg(not(feature = "azure"))]
fn open_service_bus(settings: &Settings) -> anyhow::Result<Arc<dyn EventBus>> {
    bail!(
        "{}: this build has no Azure Service Bus support; build with `--features azure`",
        redact(&settings.bus)
    )
}

/// The Notification Hubs sender the settings name, if they name one.
pub fn notification_hubs(
    settings: &Settings,
    views: Arc<dyn ViewStore>,
) -> anyhow::Result<Option<infra::push::notification_hubs::NotificationHubsPush>> {
    use infra::push::notification_hubs::{NotificationHubsPush, NotificationHubsSettings};
    use infra::sas::SasKey;
    let url = settings.push.as_str();
    if scheme(url) != "notificationhubs" {
        return Ok(None);
    }
    let azure = crate::config::AzureUrl::parse(url)?;
    let key = crate::config::required(
        &settings.notificationhubs_key,
        "ORDERFLOW_NOTIFICATIONHUBS_KEY",
    )?;
    let mut hub = NotificationHubsSettings::new(
        azure.namespace.clone(),
        azure.entity.clone(),
        azure
            .param("key-name")
            .unwrap_or("DefaultFullSharedAccessSignature"),
        SasKey::new(key),
    );
    hub.base_url = azure.param("endpoint").map(str::to_owned);
    NotificationHubsPush::new(hub, views)
        .map(Some)
        .with_context(|| format!("setting up pushes through {}", redact(url)))
}

/// The push sender a URL names; `log://` is the embedded one.
fn open_push(
    settings: &Settings,
    log: Arc<LogPush>,
    views: Arc<dyn ViewStore>,
) -> anyhow::Result<Arc<dyn PushSender>> {
    let url = settings.push.as_str();
    match scheme(url) {
        "log" => Ok(log),
        "notificationhubs" => match notification_hubs(settings, views)? {
            Some(push) => Ok(Arc::new(push)),
            None => bail!("{}: not a Notification Hubs URL", redact(url)),
        },
        _ => bail!(
            "unknown push URL {}: use log:// or notificationhubs://NAMESPACE/HUB",
            redact(url)
        ),
    }
}
