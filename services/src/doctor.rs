//! `orderflow doctor`: checks, with the settings a deployment runs with, each engine the way a
//! first deployment needs, and says for each what to fix. One line per check; the process exits
//! 0 only when every check passed.
//!
//! - **store**: the event store answers; on Cosmos DB the containers exist with their partition
//!   keys (`/streamId`, `/id`), events never expire and the leases container has TTL on with no
//!   default.
//! - **topic**: RabbitMQ answers; on Service Bus the topic exists with duplicate detection, and
//!   each subscription exists with a max delivery count equal to the retry attempts and a lock
//!   at least as long as the adapter's. Reading those settings takes a key with the `Manage`
//!   right (`ORDERFLOW_SERVICEBUS_MANAGE_KEY`, policy `manage-key-name=`, default
//!   `RootManageSharedAccessKey`), which the roles themselves never need.
//! - **push**: on Notification Hubs, a registration round trip (put and delete an installation
//!   no customer owns) with the data-plane api-version the adapter sends.
//! - **cache**: Redis answers; an Azure Cache for Redis host must be reached over TLS
//!   (`rediss://…:6380`).
//! - **sign-in**: the development login is refused (anyone could sign in as anyone); an OpenID
//!   provider's discovery document names the configured issuer and its keys can be fetched.
//!
//! Nothing is written but what `serve` writes on start (the schema of an SQL store) and the
//! probe installation, which is deleted at once.

use std::fmt;
use std::sync::Arc;
use std::time::Instant;

use projections::MemoryViewStore;

use crate::config::{AuthSettings, Settings, redact};
use crate::system::{open_bus, open_cache, open_store, scheme};

/// One check's outcome.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Check {
    /// `store`, `topic`, `push`, `cache` or `sign-in`.
    pub engine: &'static str,
    /// What was checked, and what was found.
    pub detail: String,
    /// What to do about it; `None` when the check passed.
    pub fix: Option<String>,
}

impl Check {
    fn pass(engine: &'static str, detail: impl Into<String>) -> Self {
        Self {
            engine,
            detail: detail.into(),
            fix: None,
        }
    }

    fn fail(engine: &'static str, detail: impl Into<String>, fix: impl Into<String>) -> Self {
        Self {
            engine,
            detail: detail.into(),
            fix: Some(fix.into()),
        }
    }

    pub fn passed(&self) -> bool {
        self.fix.is_none()
    }
}

/// Every check, in the order they ran.
#[derive(Debug, Clone)]
pub struct Report {
    pub checks: Vec<Check>,
}

impl Report {
    pub fn passed(&self) -> bool {
        self.checks.iter().all(Check::passed)
    }

    /// The failed checks of `engine`.
    pub fn failures(&self, engine: &str) -> Vec<&Check> {
        self.checks
            .iter()
            .filter(|c| c.engine == engine && !c.passed())
            .collect()
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for check in &self.checks {
            match &check.fix {
                None => writeln!(f, "ok    {:<8} {}", check.engine, check.detail)?,
                Some(fix) => writeln!(
                    f,
                    "FAIL  {:<8} {}\n      {:<8} fix: {fix}",
                    check.engine, check.detail, ""
                )?,
            }
        }
        let failed = self.checks.iter().filter(|c| !c.passed()).count();
        if failed == 0 {
            write!(f, "all {} checks passed", self.checks.len())
        } else {
            write!(f, "{failed} of {} checks failed", self.checks.len())
        }
    }
}

/// Every check for these settings.
pub async fn run(settings: &Settings) -> Report {
    let mut checks = Vec::new();
    checks.extend(store(settings).await);
    checks.extend(topic(settings).await);
    checks.extend(push(settings).await);
    checks.extend(cache(settings).await);
    checks.extend(sign_in(settings).await);
    Report { checks }
}

/// How long the answer took, for the line.
fn took(started: Instant) -> String {
    format!("{} ms", started.elapsed().as_millis())
}

/// An error with its causes, on one line.
fn chain(error: &anyhow::Error) -> String {
    format!("{error:#}")
}

async fn store(settings: &Settings) -> Vec<Check> {
    let shown = redact(&settings.store);
    let started = Instant::now();
    if scheme(&settings.store) == "cosmos" {
        return cosmos(settings, &shown).await;
    }
    let store = match open_store(settings).await {
        Ok(store) => store,
        Err(error) => {
            return vec![Check::fail(
                "store",
                format!("{shown}: {}", chain(&error)),
                "check the URL, that the server runs and that this host may reach it",
            )];
        }
    };
    match store.ping().await {
        Ok(()) => vec![Check::pass(
            "store",
            format!("{shown} answers, schema in place ({})", took(started)),
        )],
        Err(error) => vec![Check::fail(
            "store",
            format!("{shown}: {error}"),
            "check that the server runs and answers",
        )],
    }
}

#[cfg(feature = "azure")]
async fn cosmos(settings: &Settings, shown: &str) -> Vec<Check> {
    use eventlog::EventStore as _;
    let started = Instant::now();
    let store = match crate::system::connect_cosmos(settings).await {
        Ok(store) => store,
        Err(error) => {
            return vec![Check::fail(
                "store",
                format!("{shown}: {}", chain(&error)),
                "create the database and both containers as docs/deploy-azure.md does (events by /streamId, leases by /id), and check ORDERFLOW_COSMOS_KEY",
            )];
        }
    };
    let mut checks = vec![Check::pass(
        "store",
        format!(
            "{shown}: the account answers; containers partitioned by /streamId and /id ({})",
            took(started)
        ),
    )];
    if let Err(error) = store.ping().await {
        checks.push(Check::fail(
            "store",
            format!("{shown}: {error}"),
            "check the account's firewall and key",
        ));
    }
    match infra::event_store::cosmos::ttl_problems(&store).await {
        Ok(problems) if problems.is_empty() => checks.push(Check::pass(
            "store",
            "time to live: events never expire; leases on, with no default",
        )),
        Ok(problems) => {
            for found in problems {
                checks.push(Check::fail("store", found.problem, found.fix));
            }
        }
        Err(error) => checks.push(Check::fail(
            "store",
            format!("reading the containers' time to live: {error}"),
            "check the account key",
        )),
    }
    checks
}

#[cfg(not(feature = "azure"))]
async fn cosmos(_settings: &Settings, shown: &str) -> Vec<Check> {
    vec![Check::fail(
        "store",
        format!("{shown}: this build has no Cosmos DB support"),
        "build with `--features azure`",
    )]
}

async fn topic(settings: &Settings) -> Vec<Check> {
    let shown = redact(&settings.bus);
    match scheme(&settings.bus) {
        "memory" => vec![Check::pass(
            "topic",
            "memory://: in-process, one process only",
        )],
        "servicebus" => service_bus(settings, &shown).await,
        _ => {
            let started = Instant::now();
            let bus = match open_bus(settings).await {
                Ok(bus) => bus,
                Err(error) => {
                    return vec![Check::fail(
                        "topic",
                        format!("{shown}: {}", chain(&error)),
                        "check the URL, the credentials and that the broker runs",
                    )];
                }
            };
            match bus.ping().await {
                Ok(()) => vec![Check::pass(
                    "topic",
                    format!(
                        "{shown} answers; its queues are declared ({})",
                        took(started)
                    ),
                )],
                Err(error) => vec![Check::fail(
                    "topic",
                    format!("{shown}: {error}"),
                    "check that the broker runs",
                )],
            }
        }
    }
}

#[cfg(feature = "azure")]
async fn service_bus(settings: &Settings, shown: &str) -> Vec<Check> {
    use infra::sas::SasKey;
    let topic = match crate::system::connect_service_bus(settings) {
        Ok(topic) => topic,
        Err(error) => {
            return vec![Check::fail(
                "topic",
                format!("{shown}: {}", chain(&error)),
                "check the bus URL and ORDERFLOW_SERVICEBUS_KEY",
            )];
        }
    };
    let Some(manage_key) = settings
        .servicebus_manage_key
        .as_ref()
        .map(|k| k.expose().to_owned())
        .filter(|k| !k.is_empty())
    else {
        return vec![Check::fail(
            "topic",
            format!("{shown}: the topic's settings cannot be read with the roles' Send/Listen key"),
            "set ORDERFLOW_SERVICEBUS_MANAGE_KEY to a key with the Manage right (az servicebus namespace authorization-rule keys list -n RootManageSharedAccessKey) for this check only",
        )];
    };
    // The URL parsed when the topic was built above.
    let url = crate::config::AzureUrl::parse(&settings.bus).ok();
    let manage_key_name = url
        .as_ref()
        .and_then(|url| url.param("manage-key-name"))
        .unwrap_or("RootManageSharedAccessKey");
    let started = Instant::now();
    let topology = match topic
        .describe(manage_key_name, &SasKey::new(manage_key))
        .await
    {
        Ok(topology) => topology,
        Err(error) => {
            return vec![Check::fail(
                "topic",
                format!("{shown}: {error}"),
                "check the namespace name, ORDERFLOW_SERVICEBUS_MANAGE_KEY and manage-key-name=",
            )];
        }
    };
    let mut checks = Vec::new();
    let name = url.map(|u| u.entity).unwrap_or_default();
    match &topology.topic {
        None => checks.push(Check::fail(
            "topic",
            format!("{shown}: the topic {name} does not exist"),
            "create it with duplicate detection as docs/deploy-azure.md does",
        )),
        Some(shape) if !shape.duplicate_detection => checks.push(Check::fail(
            "topic",
            format!("{name}: duplicate detection is off, so an event the relay publishes again after a lost answer is delivered twice"),
            "duplicate detection can only be set when a topic is created: create the topic again with --enable-duplicate-detection true",
        )),
        Some(shape) => checks.push(Check::pass(
            "topic",
            format!(
                "{name}: exists, duplicate detection on (window {}) ({})",
                shape
                    .duplicate_detection_window
                    .map_or("unknown".to_owned(), |w| format!("{} s", w.as_secs())),
                took(started)
            ),
        )),
    }
    let attempts = topic.policy().max_attempts;
    let lock = topic.lock_duration();
    for (subscription, shape) in &topology.subscriptions {
        let create = format!(
            "az servicebus topic subscription create --topic-name {name} -n {subscription} --max-delivery-count {attempts} --lock-duration PT{}S (and its rule, docs/deploy-azure.md)",
            lock.as_secs()
        );
        let Some(shape) = shape else {
            checks.push(Check::fail(
                "topic",
                format!("subscription {subscription} does not exist"),
                create,
            ));
            continue;
        };
        let mut wrong = Vec::new();
        if shape.max_delivery_count != Some(attempts) {
            wrong.push(format!(
                "max delivery count {} instead of the {attempts} retry attempts",
                shape
                    .max_delivery_count
                    .map_or("unknown".to_owned(), |n| n.to_string())
            ));
        }
        if shape.lock_duration.is_none_or(|d| d < lock) {
            wrong.push(format!(
                "lock duration {} under the adapter's {} s",
                shape
                    .lock_duration
                    .map_or("unknown".to_owned(), |d| format!("{} s", d.as_secs())),
                lock.as_secs()
            ));
        }
        if wrong.is_empty() {
            checks.push(Check::pass(
                "topic",
                format!(
                    "subscription {subscription}: max delivery count {attempts}, lock {} s",
                    shape.lock_duration.unwrap_or_default().as_secs()
                ),
            ));
        } else {
            checks.push(Check::fail(
                "topic",
                format!("subscription {subscription}: {}", wrong.join("; ")),
                format!(
                    "az servicebus topic subscription update --topic-name {name} -n {subscription} --max-delivery-count {attempts} --lock-duration PT{}S",
                    lock.as_secs()
                ),
            ));
        }
    }
    checks
}

#[cfg(not(feature = "azure"))]
async fn service_bus(_settings: &Settings, shown: &str) -> Vec<Check> {
    vec![Check::fail(
        "topic",
        format!("{shown}: this build has no Service Bus support"),
        "build with `--features azure`",
    )]
}

async fn push(settings: &Settings) -> Vec<Check> {
    let shown = redact(&settings.push);
    let views = Arc::new(MemoryViewStore::new());
    let hub = match crate::system::notification_hubs(settings, views) {
        Ok(Some(hub)) => hub,
        Ok(None) => {
            return vec![Check::pass(
                "push",
                format!("{shown}: pushes go to the log and the live feed"),
            )];
        }
        Err(error) => {
            return vec![Check::fail(
                "push",
                format!("{shown}: {}", chain(&error)),
                "check the push URL and ORDERFLOW_NOTIFICATIONHUBS_KEY",
            )];
        }
    };
    let started = Instant::now();
    let version = infra::push::notification_hubs::API_VERSION;
    match hub.round_trip().await {
        Ok(()) => vec![Check::pass(
            "push",
            format!(
                "{shown}: an installation registered and deleted with api-version {version} ({})",
                took(started)
            ),
        )],
        Err(error) => vec![Check::fail(
            "push",
            format!("{shown}: a registration with api-version {version}: {error}"),
            "check the hub's name, the policy (key-name=, default DefaultFullSharedAccessSignature) and ORDERFLOW_NOTIFICATIONHUBS_KEY",
        )],
    }
}

async fn cache(settings: &Settings) -> Vec<Check> {
    let shown = redact(&settings.cache);
    let kind = scheme(&settings.cache);
    if kind == "memory" {
        return vec![Check::pass(
            "cache",
            "memory://: in-process, one process only",
        )];
    }
    let host = settings
        .cache
        .split_once("://")
        .map(|(_, rest)| rest.rsplit_once('@').map_or(rest, |(_, host)| host))
        .and_then(|rest| rest.split([':', '/', '?']).next())
        .unwrap_or_default()
        .to_ascii_lowercase();
    if kind == "redis" && host.ends_with(".redis.cache.windows.net") {
        return vec![Check::fail(
            "cache",
            format!("{shown}: Azure Cache for Redis without TLS"),
            format!(
                "use rediss://{host}:6380 with the access key in ORDERFLOW_CACHE_KEY, and keep the non-TLS port off"
            ),
        )];
    }
    let started = Instant::now();
    match open_cache(settings).await {
        Ok(cache) => match cache.ping().await {
            Ok(()) => vec![Check::pass(
                "cache",
                format!(
                    "{shown} answers{} ({})",
                    if kind == "rediss" { " over TLS" } else { "" },
                    took(started)
                ),
            )],
            Err(error) => vec![Check::fail(
                "cache",
                format!("{shown}: {error}"),
                "check that Redis runs",
            )],
        },
        Err(error) => vec![Check::fail(
            "cache",
            format!("{shown}: {}", chain(&error)),
            "check the host and port, the access key (ORDERFLOW_CACHE_KEY) and, for a private CA, ca-file=",
        )],
    }
}

async fn sign_in(settings: &Settings) -> Vec<Check> {
    match &settings.auth {
        AuthSettings::Development => vec![Check::fail(
            "sign-in",
            "the development login is on: anyone can sign in as anyone",
            "set ORDERFLOW_OIDC_ISSUER and ORDERFLOW_OIDC_AUDIENCE (or ORDERFLOW_JWT_SECRET, ORDERFLOW_JWT_ISSUER and ORDERFLOW_JWT_AUDIENCE)",
        )],
        AuthSettings::SharedSecret {
            issuer, audience, ..
        } => vec![Check::pass(
            "sign-in",
            format!("HS256 tokens with a shared secret, issuer {issuer}, audience {audience}"),
        )],
        AuthSettings::Oidc(client) => {
            let issuer = client.verifier.issuer.clone();
            let started = Instant::now();
            let verifier =
                match crate::api::auth::oidc::OidcVerifier::start(client.verifier.clone()).await {
                    Ok(verifier) => verifier,
                    Err(error) => {
                        return vec![Check::fail(
                            "sign-in",
                            format!("OpenID provider {issuer}: {error}"),
                            "check ORDERFLOW_OIDC_ISSUER and ORDERFLOW_OIDC_AUDIENCE",
                        )];
                    }
                };
            match verifier.check().await {
                Ok(keys) => vec![Check::pass(
                    "sign-in",
                    format!(
                        "OpenID provider {issuer}: discovery names this issuer, {keys} signing key(s) ({})",
                        took(started)
                    ),
                )],
                Err(error) => vec![Check::fail(
                    "sign-in",
                    format!("OpenID provider {issuer}: {error}"),
                    "set ORDERFLOW_OIDC_ISSUER to exactly the provider's issuer and check that this host reaches it",
                )],
            }
        }
    }
}
