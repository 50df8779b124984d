//! Settings for one process: where it listens, which engines it uses (by URL), which roles it
//! runs, how callers authenticate.
//!
//! Layers, later ones winning: defaults in code, a TOML config file (`--config`,
//! `ORDERFLOW_CONFIG`), `ORDERFLOW_*` environment variables, command-line flags. The CLI
//! (`main.rs`) collects the last two with clap and calls [`Settings::resolve`]; tests build
//! settings directly.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, bail};
use infra::bus::RetryPolicy;
use serde::Deserialize;

use crate::api::auth::Role as AuthRole;
use crate::api::auth::oidc::OidcSettings;
use crate::api::auth::shared_secret::MIN_SECRET_BYTES;

pub const DEFAULT_LISTEN: &str = "127.0.0.1:8080";
pub const DEFAULT_DATA: &str = "./data";

#[derive(Debug, Clone)]
pub struct Settings {
    /// Where HTTP is served (the API and UI for the web role; `/health`, `/ready`, `/metrics`
    /// for every process); port 0 picks a free one.
    pub listen: SocketAddr,
    /// Holds the SQLite event store (by default) and the development signing key.
    pub data_dir: PathBuf,
    /// `sqlite://PATH`, `postgres://...` or `cosmos://ACCOUNT/DATABASE`.
    pub store: String,
    /// `memory://` or `amqp://...`.
    pub bus: String,
    /// `memory://` or `redis://...`.
    pub cache: String,
    /// `log://` or `notificationhubs://NAMESPACE/HUB`.
    pub push: String,
    /// The Cosmos DB account key (`ORDERFLOW_COSMOS_KEY`), for `cosmos://`.
    pub cosmos_key: Option<Secret>,
    /// The Service Bus shared access key (`ORDERFLOW_SERVICEBUS_KEY`), for `servicebus://`.
    pub servicebus_key: Option<Secret>,
    /// The Notification Hubs shared access key (`ORDERFLOW_NOTIFICATIONHUBS_KEY`).
    pub notificationhubs_key: Option<Secret>,
    /// A Service Bus key with the Manage right (`ORDERFLOW_SERVICEBUS_MANAGE_KEY`), which only
    /// `orderflow doctor` uses, to read the topic's and subscriptions' settings.
    pub servicebus_manage_key: Option<Secret>,
    /// The cache's password (`ORDERFLOW_CACHE_KEY`; Azure Cache for Redis: its access key),
    /// used when the cache URL names none.
    pub cache_key: Option<Secret>,
    pub roles: Roles,
    pub auth: AuthSettings,
    /// How subscriptions retry a failing event before dead-lettering it.
    pub retry: RetryPolicy,
    /// Events the order processor works on at once.
    pub processor_concurrency: usize,
    /// Seed the demo catalog on first start (web role only).
    pub seed_catalog: bool,
    /// Append every push the embedded push sender makes to this file, one JSON object a line.
    pub push_log: Option<PathBuf>,
    /// What the HTTP edge allows each client before refusing.
    pub edge: EdgeSettings,
}

/// The HTTP edge's limits: every one configurable, every refusal a problem+json.
#[derive(Debug, Clone)]
pub struct EdgeSettings {
    /// Open connections at once; one more is answered 503 and closed.
    pub max_connections: usize,
    /// A request's headers must arrive within this (a client trickling bytes is cut off).
    pub header_timeout: Duration,
    /// A request's body must arrive within this, all of it.
    pub body_timeout: Duration,
    /// A handler's answer must start within this (longer than the longest `min_version` wait).
    pub request_timeout: Duration,
    /// Commands (POST, PUT, DELETE) per second per customer, sustained.
    pub command_rate: u32,
    /// Commands a customer may send at once before the rate applies.
    pub command_burst: u32,
    /// Development logins per minute per client address.
    pub dev_login_rate: u32,
    /// Live streams open at once, in all.
    pub max_streams: usize,
    /// Live streams open at once per customer.
    pub max_streams_per_customer: usize,
    /// `min_version` reads waiting at once, in all.
    pub max_waiters: usize,
    /// Origins whose pages may call the API (CORS); none by default.
    pub cors_origins: Vec<String>,
    /// Serve `/metrics` here instead of on `listen` (an internal address).
    pub metrics_listen: Option<SocketAddr>,
}

impl EdgeSettings {
    /// With development auth anyone may sign in as any number of customers, so a command
    /// limit per customer protects nothing and would only throttle `orderflow loadgen`: it is
    /// off (a rate no client reaches) unless set. Every other limit holds.
    pub fn development() -> Self {
        Self {
            command_rate: DEVELOPMENT_COMMAND_RATE,
            command_burst: DEVELOPMENT_COMMAND_RATE,
            ..Self::default()
        }
    }
}

/// Commands per second per customer under development auth: more than any client sends.
pub const DEVELOPMENT_COMMAND_RATE: u32 = 1_000_000;

impl Default for EdgeSettings {
    fn default() -> Self {
        Self {
            max_connections: 4096,
            header_timeout: Duration::from_secs(10),
            body_timeout: Duration::from_secs(10),
            request_timeout: Duration::from_secs(60),
            command_rate: 10,
            command_burst: 40,
            dev_login_rate: 120,
            max_streams: 2000,
            max_streams_per_customer: 5,
            max_waiters: 2000,
            cors_origins: Vec::new(),
            metrics_listen: None,
        }
    }
}

/// The edge settings the command line, environment or config file gave; `None` where none did.
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct EdgeOverrides {
    pub max_connections: Option<usize>,
    pub header_timeout: Option<u64>,
    pub body_timeout: Option<u64>,
    pub request_timeout: Option<u64>,
    pub command_rate: Option<u32>,
    pub command_burst: Option<u32>,
    pub dev_login_rate: Option<u32>,
    pub max_live_streams: Option<usize>,
    pub max_live_streams_per_customer: Option<usize>,
    pub max_waiters: Option<usize>,
    /// Comma-separated.
    pub cors_origins: Option<String>,
    pub metrics_listen: Option<String>,
}

impl EdgeOverrides {
    fn or(self, file: EdgeOverrides) -> Self {
        Self {
            max_connections: self.max_connections.or(file.max_connections),
            header_timeout: self.header_timeout.or(file.header_timeout),
            body_timeout: self.body_timeout.or(file.body_timeout),
            request_timeout: self.request_timeout.or(file.request_timeout),
            command_rate: self.command_rate.or(file.command_rate),
            command_burst: self.command_burst.or(file.command_burst),
            dev_login_rate: self.dev_login_rate.or(file.dev_login_rate),
            max_live_streams: self.max_live_streams.or(file.max_live_streams),
            max_live_streams_per_customer: self
                .max_live_streams_per_customer
                .or(file.max_live_streams_per_customer),
            max_waiters: self.max_waiters.or(file.max_waiters),
            cors_origins: self.cors_origins.or(file.cors_origins),
            metrics_listen: self.metrics_listen.or(file.metrics_listen),
        }
    }

    fn resolve(self, base: EdgeSettings) -> anyhow::Result<EdgeSettings> {
        let mut edge = base;
        let positive = |value: Option<u64>, name: &str, default: Duration| match value {
            Some(0) => bail!("--{name} must be at least 1 second"),
            Some(seconds) => Ok(Duration::from_secs(seconds)),
            None => Ok(default),
        };
        edge.header_timeout = positive(self.header_timeout, "header-timeout", edge.header_timeout)?;
        edge.body_timeout = positive(self.body_timeout, "body-timeout", edge.body_timeout)?;
        edge.request_timeout = positive(
            self.request_timeout,
            "request-timeout",
            edge.request_timeout,
        )?;
        let at_least_one = |value: Option<usize>, name: &str, default: usize| match value {
            Some(0) => bail!("--{name} must be at least 1"),
            Some(n) => Ok(n),
            None => Ok(default),
        };
        edge.max_connections = at_least_one(
            self.max_connections,
            "max-connections",
            edge.max_connections,
        )?;
        edge.max_streams =
            at_least_one(self.max_live_streams, "max-live-streams", edge.max_streams)?;
        edge.max_streams_per_customer = at_least_one(
            self.max_live_streams_per_customer,
            "max-live-streams-per-customer",
            edge.max_streams_per_customer,
        )?;
        edge.max_waiters = at_least_one(self.max_waiters, "max-waiters", edge.max_waiters)?;
        let rate = |value: Option<u32>, name: &str, default: u32| match value {
            Some(0) => bail!("--{name} must be at least 1"),
            Some(n) => Ok(n),
            None => Ok(default),
        };
        edge.command_rate = rate(self.command_rate, "command-rate", edge.command_rate)?;
        edge.command_burst = rate(self.command_burst, "command-burst", edge.command_burst)?;
        edge.dev_login_rate = rate(self.dev_login_rate, "dev-login-rate", edge.dev_login_rate)?;
        edge.cors_origins = self
            .cors_origins
            .unwrap_or_default()
            .split(',')
            .map(str::trim)
            .filter(|o| !o.is_empty())
            .map(|origin| {
                let url = url::Url::parse(origin)
                    .ok()
                    .filter(|u| u.origin().is_tuple() && (u.path() == "/" || u.path().is_empty()))
                    .with_context(|| {
                        format!("--cors-origins: {origin:?} is not an origin like https://shop.example.com")
                    })?;
                Ok(url.origin().ascii_serialization())
            })
            .collect::<anyhow::Result<_>>()?;
        edge.metrics_listen = self
            .metrics_listen
            .map(|raw| {
                raw.parse()
                    .with_context(|| format!("--metrics-listen {raw:?} is not HOST:PORT"))
            })
            .transpose()?;
        Ok(edge)
    }
}

impl Settings {
    /// The embedded defaults: every role in one process, data under `data_dir`.
    pub fn embedded(listen: SocketAddr, data_dir: PathBuf) -> Self {
        Self {
            store: sqlite_url(&data_dir),
            listen,
            data_dir,
            bus: "memory://".into(),
            cache: "memory://".into(),
            push: "log://".into(),
            cosmos_key: None,
            servicebus_key: None,
            notificationhubs_key: None,
            servicebus_manage_key: None,
            cache_key: None,
            roles: Roles::all(),
            auth: AuthSettings::Development,
            retry: RetryPolicy {
                max_attempts: 5,
                base_delay: Duration::from_millis(200),
            },
            processor_concurrency: 8,
            seed_catalog: true,
            push_log: None,
            edge: EdgeSettings::development(),
        }
    }

    /// Merges the layers: `overrides` (flags and environment, as clap read them) over the
    /// config file (if any) over the defaults.
    pub fn resolve(overrides: Overrides) -> anyhow::Result<Self> {
        let file = match &overrides.config {
            Some(path) => FileSettings::read(path)?,
            None => FileSettings::default(),
        };
        let auth = AuthSettings::resolve(&overrides, &file)?;
        let base = match auth {
            AuthSettings::Development => EdgeSettings::development(),
            _ => EdgeSettings::default(),
        };
        let edge = overrides.edge.clone().or(file.edge.clone()).resolve(base)?;
        let listen = pick(overrides.listen, file.listen, DEFAULT_LISTEN.to_owned());
        let listen = listen
            .parse()
            .with_context(|| format!("listen address {listen:?} is not HOST:PORT"))?;
        let data_dir = PathBuf::from(pick(overrides.data, file.data, DEFAULT_DATA.to_owned()));
        let mut settings = Self::embedded(listen, data_dir);
        settings.store = pick(overrides.store, file.store, settings.store);
        settings.bus = pick(overrides.bus, file.bus, settings.bus);
        settings.cache = pick(overrides.cache, file.cache, settings.cache);
        settings.push = pick(overrides.push, file.push, settings.push);
        // Keys come from the environment only: never from a file that might be committed.
        settings.cosmos_key = overrides.cosmos_key.map(Secret::new);
        settings.servicebus_key = overrides.servicebus_key.map(Secret::new);
        settings.notificationhubs_key = overrides.notificationhubs_key.map(Secret::new);
        settings.cache_key = overrides.cache_key.map(Secret::new);
        settings.servicebus_manage_key = overrides.servicebus_manage_key.map(Secret::new);
        if let Some(roles) = overrides.role.or(file.role) {
            settings.roles = Roles::parse(&roles)?;
        }
        settings.seed_catalog = !(overrides.no_seed || file.no_seed.unwrap_or(false));
        settings.push_log = overrides.push_log.or(file.push_log);
        if let Some(n) = overrides
            .processor_concurrency
            .or(file.processor_concurrency)
        {
            settings.processor_concurrency = n.max(1);
        }
        settings.auth = auth;
        settings.edge = edge;
        Ok(settings)
    }

    /// Whether this process runs everything on engines no other process can share.
    pub fn is_single_process(&self) -> bool {
        self.store.starts_with("sqlite:") && self.bus == "memory://" && self.cache == "memory://"
    }
}

/// `sqlite://` URL of the default store file in `data_dir`.
pub fn sqlite_url(data_dir: &Path) -> String {
    format!("sqlite://{}", data_dir.join("orderflow.db").display())
}

/// What the command line and environment said; `None` where they said nothing.
#[derive(Debug, Default, Clone)]
pub struct Overrides {
    pub config: Option<PathBuf>,
    pub listen: Option<String>,
    pub data: Option<String>,
    pub store: Option<String>,
    pub bus: Option<String>,
    pub cache: Option<String>,
    pub push: Option<String>,
    pub cosmos_key: Option<String>,
    pub servicebus_key: Option<String>,
    pub notificationhubs_key: Option<String>,
    pub servicebus_manage_key: Option<String>,
    pub cache_key: Option<String>,
    pub role: Option<String>,
    pub no_seed: bool,
    pub push_log: Option<PathBuf>,
    pub processor_concurrency: Option<usize>,
    pub jwt_secret: Option<String>,
    pub jwt_issuer: Option<String>,
    pub jwt_audience: Option<String>,
    pub oidc: OidcOverrides,
    pub edge: EdgeOverrides,
}

/// The `--oidc-*` settings, as flags, environment or the config file's `oidc-*` keys give them.
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OidcOverrides {
    pub issuer: Option<String>,
    /// Comma-separated.
    pub audience: Option<String>,
    pub client_id: Option<String>,
    pub scope: Option<String>,
    pub customer_claim: Option<String>,
    pub roles_claim: Option<String>,
    /// `PROVIDER_NAME=ROLE,...`
    pub role_map: Option<String>,
}

impl OidcOverrides {
    /// Each setting from `self` where given, else from `file`.
    fn or(self, file: &FileSettings) -> Self {
        Self {
            issuer: self.issuer.or(file.oidc_issuer.clone()),
            audience: self.audience.or(file.oidc_audience.clone()),
            client_id: self.client_id.or(file.oidc_client_id.clone()),
            scope: self.scope.or(file.oidc_scope.clone()),
            customer_claim: self.customer_claim.or(file.oidc_customer_claim.clone()),
            roles_claim: self.roles_claim.or(file.oidc_roles_claim.clone()),
            role_map: self.role_map.or(file.oidc_role_map.clone()),
        }
    }
}

/// The config file's keys (all optional), named like the flags.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct FileSettings {
    listen: Option<String>,
    data: Option<String>,
    store: Option<String>,
    bus: Option<String>,
    cache: Option<String>,
    push: Option<String>,
    role: Option<String>,
    no_seed: Option<bool>,
    push_log: Option<PathBuf>,
    processor_concurrency: Option<usize>,
    jwt_secret: Option<String>,
    jwt_issuer: Option<String>,
    jwt_audience: Option<String>,
    oidc_issuer: Option<String>,
    oidc_audience: Option<String>,
    oidc_client_id: Option<String>,
    oidc_scope: Option<String>,
    oidc_customer_claim: Option<String>,
    oidc_roles_claim: Option<String>,
    oidc_role_map: Option<String>,
    #[serde(flatten)]
    edge: EdgeOverrides,
}

impl FileSettings {
    fn read(path: &Path) -> anyhow::Result<Self> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("reading the config file {}", path.display()))?;
        toml::from_str(&text).with_context(|| format!("in the config file {}", path.display()))
    }
}

fn pick(over: Option<String>, file: Option<String>, default: String) -> String {
    over.or(file).unwrap_or(default)
}

/// The roles one process runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Roles(BTreeSet<Role>);

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Role {
    /// The HTTP API and the web UI.
    Web,
    /// Publishes the event log to the topic (one at a time across processes).
    Relay,
    /// The order processor (process manager).
    Processor,
    /// Keeps the read models.
    Projector,
    /// Pushes and live updates.
    Notifier,
}

impl Role {
    pub const ALL: [Role; 5] = [
        Role::Web,
        Role::Relay,
        Role::Processor,
        Role::Projector,
        Role::Notifier,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Role::Web => "web",
            Role::Relay => "relay",
            Role::Processor => "processor",
            Role::Projector => "projector",
            Role::Notifier => "notifier",
        }
    }
}

impl Roles {
    pub fn all() -> Self {
        Self(Role::ALL.into_iter().collect())
    }

    /// A comma-separated subset of `web,relay,processor,projector,notifier`, or `all`.
    pub fn parse(raw: &str) -> anyhow::Result<Self> {
        let mut roles = BTreeSet::new();
        for name in raw.split(',').map(str::trim).filter(|n| !n.is_empty()) {
            if name == "all" {
                return Ok(Self::all());
            }
            match Role::ALL.into_iter().find(|r| r.name() == name) {
                Some(role) => roles.insert(role),
                None => bail!(
                    "unknown role {name:?}: use a comma-separated subset of web,relay,processor,projector,notifier"
                ),
            };
        }
        if roles.is_empty() {
            bail!("--role names no role");
        }
        Ok(Self(roles))
    }

    pub fn has(&self, role: Role) -> bool {
        self.0.contains(&role)
    }

    pub fn names(&self) -> Vec<&'static str> {
        self.0.iter().map(|r| r.name()).collect()
    }
}

/// How bearer tokens are checked.
#[derive(Clone)]
pub enum AuthSettings {
    /// `POST /api/dev/token` hands out tokens signed with a key kept in the data directory.
    /// For laptops and tests only: anyone can sign in as anyone.
    Development,
    /// HS256 tokens signed with a shared secret (at least 32 bytes), checked for issuer and
    /// audience. No development login.
    SharedSecret {
        secret: Secret,
        issuer: String,
        audience: String,
    },
    /// Access tokens from an OpenID Connect provider. No development login.
    Oidc(OidcClient),
}

/// The provider's settings, and what the web UI needs to sign in there.
#[derive(Debug, Clone)]
pub struct OidcClient {
    pub verifier: OidcSettings,
    /// The public client the web UI signs in with (authorization code + PKCE, no secret).
    pub client_id: Option<String>,
    /// What the web UI asks for: `openid` and whatever gives a token for this API.
    pub scope: String,
}

pub const DEFAULT_OIDC_SCOPE: &str = "openid profile";

impl AuthSettings {
    fn resolve(overrides: &Overrides, file: &FileSettings) -> anyhow::Result<Self> {
        let oidc = overrides.oidc.clone().or(file);
        let secret = overrides.jwt_secret.clone().or(file.jwt_secret.clone());
        match (oidc.issuer.clone(), secret) {
            (Some(_), Some(_)) => bail!(
                "set either --oidc-issuer (an OpenID provider) or ORDERFLOW_JWT_SECRET (a shared secret), not both"
            ),
            (Some(issuer), None) => Ok(Self::Oidc(OidcClient::resolve(&issuer, oidc)?)),
            (None, Some(secret)) => {
                if secret.len() < MIN_SECRET_BYTES {
                    bail!(
                        "ORDERFLOW_JWT_SECRET is {} bytes; it must be at least {MIN_SECRET_BYTES} (generate one with `openssl rand -hex 32`)",
                        secret.len()
                    );
                }
                Ok(Self::SharedSecret {
                    secret: Secret::new(secret),
                    issuer: overrides
                        .jwt_issuer
                        .clone()
                        .or(file.jwt_issuer.clone())
                        .context("ORDERFLOW_JWT_ISSUER is required with ORDERFLOW_JWT_SECRET")?,
                    audience: overrides
                        .jwt_audience
                        .clone()
                        .or(file.jwt_audience.clone())
                        .context("ORDERFLOW_JWT_AUDIENCE is required with ORDERFLOW_JWT_SECRET")?,
                })
            }
            (None, None) => Ok(Self::Development),
        }
    }
}

impl OidcClient {
    fn resolve(issuer: &str, oidc: OidcOverrides) -> anyhow::Result<Self> {
        let audiences: Vec<String> = oidc
            .audience
            .unwrap_or_default()
            .split(',')
            .map(str::trim)
            .filter(|a| !a.is_empty())
            .map(str::to_owned)
            .collect();
        if audiences.is_empty() {
            bail!(
                "--oidc-audience is required with --oidc-issuer: the `aud` your provider puts in access tokens for this API"
            );
        }
        let mut verifier = OidcSettings::new(issuer.trim(), audiences);
        verifier.discovery_url().map_err(anyhow::Error::msg)?;
        if let Some(claim) = oidc.customer_claim.filter(|c| !c.trim().is_empty()) {
            verifier.customer_claim = claim.trim().to_owned();
        }
        if let Some(claim) = oidc.roles_claim.filter(|c| !c.trim().is_empty()) {
            verifier.roles_claim = claim.trim().to_owned();
        }
        verifier.role_map = parse_role_map(oidc.role_map.as_deref().unwrap_or(""))?;
        Ok(Self {
            verifier,
            client_id: oidc.client_id.filter(|c| !c.trim().is_empty()),
            scope: oidc
                .scope
                .filter(|s| !s.trim().is_empty())
                .unwrap_or_else(|| DEFAULT_OIDC_SCOPE.to_owned()),
        })
    }
}

/// `Orders.Operator=operator,Orders.Analyst=analyst`: the provider's role names to orderflow's.
fn parse_role_map(raw: &str) -> anyhow::Result<Vec<(String, AuthRole)>> {
    raw.split(',')
        .map(str::trim)
        .filter(|pair| !pair.is_empty())
        .map(|pair| {
            let (name, role) = pair
                .rsplit_once('=')
                .with_context(|| format!("--oidc-role-map: {pair:?} is not PROVIDER_ROLE=ROLE"))?;
            let role = AuthRole::parse(role.trim()).with_context(|| {
                format!("--oidc-role-map: {role:?} is not customer, operator or analyst")
            })?;
            Ok((name.trim().to_owned(), role))
        })
        .collect()
}

impl std::fmt::Debug for AuthSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Development => f.write_str("Development"),
            Self::SharedSecret {
                issuer, audience, ..
            } => write!(
                f,
                "SharedSecret {{ issuer: {issuer:?}, audience: {audience:?}, secret: *** }}"
            ),
            Self::Oidc(client) => write!(f, "Oidc({client:?})"),
        }
    }
}

/// A secret that never prints.
#[derive(Clone)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("***")
    }
}

/// An Azure URL, `SCHEME://NAMESPACE/ENTITY?key-name=NAME&endpoint=URL`: the namespace (or
/// Cosmos DB account), the entity (topic, hub or database), and the query parameters. Keys never travel in URLs: they come from
/// the environment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AzureUrl {
    pub namespace: String,
    pub entity: String,
    pub params: Vec<(String, String)>,
}

impl AzureUrl {
    pub fn parse(url: &str) -> anyhow::Result<Self> {
        let (_, rest) = url.split_once("://").context("not a URL")?;
        let (path, query) = rest.split_once('?').unwrap_or((rest, ""));
        let (namespace, entity) = path
            .split_once('/')
            .filter(|(n, e)| !n.is_empty() && !e.is_empty() && !e.contains('/'))
            .with_context(|| format!("{url}: expected SCHEME://NAMESPACE/ENTITY"))?;
        let params = query
            .split('&')
            .filter(|p| !p.is_empty())
            .map(|p| {
                let (k, v) = p.split_once('=').unwrap_or((p, ""));
                (k.to_owned(), v.to_owned())
            })
            .collect();
        Ok(Self {
            namespace: namespace.to_owned(),
            entity: entity.to_owned(),
            params,
        })
    }

    pub fn param(&self, name: &str) -> Option<&str> {
        self.params
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

/// A required secret, with a message naming its environment variable when it is missing.
pub fn required(secret: &Option<Secret>, variable: &str) -> anyhow::Result<String> {
    secret
        .as_ref()
        .map(|s| s.expose().to_owned())
        .filter(|s| !s.is_empty())
        .with_context(|| format!("set {variable} (the shared access key; keys never go in URLs)"))
}

/// A URL with its password replaced, for logs.
pub fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme_end), Some(at)) if at > scheme_end => {
            let userinfo = &url[scheme_end + 3..at];
            match userinfo.split_once(':') {
                Some((user, _)) => format!("{}{user}:***{}", &url[..scheme_end + 3], &url[at..]),
                None => url.to_owned(),
            }
        }
        _ => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_beat_the_file_which_beats_the_defaults() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("orderflow.toml");
        std::fs::write(
            &file,
            "store = \"postgres://db/orders\"\ncache = \"redis://cache\"\nrole = \"web\"\n",
        )
        .unwrap();
        let settings = Settings::resolve(Overrides {
            config: Some(file),
            cache: Some("memory://".into()),
            ..Default::default()
        })
        .unwrap();
        assert_eq!(settings.store, "postgres://db/orders");
        assert_eq!(settings.cache, "memory://");
        assert_eq!(settings.bus, "memory://");
        assert_eq!(settings.roles.names(), ["web"]);
        assert_eq!(settings.listen.to_string(), DEFAULT_LISTEN);
    }

    #[test]
    fn the_azure_profile_in_the_repository_reads() {
        let profile = Path::new(env!("CARGO_MANIFEST_DIR")).join("../config/azure.toml");
        let settings = Settings::resolve(Overrides {
            config: Some(profile),
            ..Default::default()
        })
        .unwrap();
        assert!(settings.store.starts_with("cosmos://"));
        assert!(settings.bus.starts_with("servicebus://"));
        assert!(settings.push.starts_with("notificationhubs://"));
        assert!(
            settings.cache.starts_with("rediss://"),
            "Azure Cache for Redis over TLS"
        );
        assert!(!settings.seed_catalog);
        assert!(
            settings.servicebus_key.is_none() && settings.cosmos_key.is_none(),
            "keys come from the environment only"
        );
    }

    #[test]
    fn an_unknown_key_in_the_file_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("orderflow.toml");
        std::fs::write(&file, "stroe = \"x\"\n").unwrap();
        let error = Settings::resolve(Overrides {
            config: Some(file),
            ..Default::default()
        })
        .unwrap_err();
        assert!(format!("{error:#}").contains("stroe"));
    }

    #[test]
    fn roles_parse_as_a_comma_separated_subset() {
        assert_eq!(
            Roles::parse("relay, web").unwrap().names(),
            ["web", "relay"]
        );
        assert_eq!(Roles::parse("all").unwrap(), Roles::all());
        assert!(Roles::parse("web,chef").is_err());
        assert!(Roles::parse(" , ").is_err());
    }

    #[test]
    fn azure_urls_name_namespace_entity_and_options() {
        let url =
            AzureUrl::parse("servicebus://shop-ns/events?key-name=role&endpoint=http://x").unwrap();
        assert_eq!(
            (url.namespace.as_str(), url.entity.as_str()),
            ("shop-ns", "events")
        );
        assert_eq!(url.param("key-name"), Some("role"));
        assert_eq!(url.param("endpoint"), Some("http://x"));
        assert!(AzureUrl::parse("servicebus://shop-ns").is_err());
        assert!(AzureUrl::parse("servicebus:///events").is_err());
    }

    #[test]
    fn a_short_shared_secret_is_refused_at_start_up() {
        let resolve = |secret: &str| {
            Settings::resolve(Overrides {
                jwt_secret: Some(secret.into()),
                jwt_issuer: Some("https://id.example".into()),
                jwt_audience: Some("orderflow".into()),
                ..Default::default()
            })
        };
        let error = resolve(&"s".repeat(31)).unwrap_err();
        assert!(format!("{error:#}").contains("at least 32"), "{error:#}");
        assert!(matches!(
            resolve(&"s".repeat(32)).unwrap().auth,
            AuthSettings::SharedSecret { .. }
        ));
    }

    #[test]
    fn oidc_settings_come_from_flags_or_the_file_and_are_checked() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("orderflow.toml");
        std::fs::write(
            &file,
            "oidc-issuer = \"https://login.microsoftonline.com/t/v2.0\"\n\
             oidc-audience = \"api://orderflow, 0000-app-id\"\n\
             oidc-customer-claim = \"oid\"\n\
             oidc-role-map = \"Orders.Operator=operator, Orders.Analyst=analyst\"\n",
        )
        .unwrap();
        let settings = Settings::resolve(Overrides {
            config: Some(file),
            oidc: OidcOverrides {
                client_id: Some("spa-client".into()),
                ..Default::default()
            },
            ..Default::default()
        })
        .unwrap();
        let AuthSettings::Oidc(client) = settings.auth else {
            panic!("OIDC expected, got {:?}", settings.auth);
        };
        assert_eq!(
            client.verifier.issuer,
            "https://login.microsoftonline.com/t/v2.0"
        );
        assert_eq!(
            client.verifier.audiences,
            ["api://orderflow", "0000-app-id"]
        );
        assert_eq!(client.verifier.customer_claim, "oid");
        assert_eq!(client.verifier.roles_claim, "roles");
        assert_eq!(
            client.verifier.role_map,
            [
                ("Orders.Operator".to_owned(), AuthRole::Operator),
                ("Orders.Analyst".to_owned(), AuthRole::Analyst)
            ]
        );
        assert_eq!(client.client_id.as_deref(), Some("spa-client"));
        assert_eq!(client.scope, DEFAULT_OIDC_SCOPE);

        let oidc = |issuer: &str, audience: Option<&str>, map: Option<&str>| {
            Settings::resolve(Overrides {
                oidc: OidcOverrides {
                    issuer: Some(issuer.into()),
                    audience: audience.map(Into::into),
                    role_map: map.map(Into::into),
                    ..Default::default()
                },
                ..Default::default()
            })
            .map(|_| ())
            .map_err(|e| format!("{e:#}"))
        };
        assert!(
            oidc("http://id.example", Some("a"), None)
                .unwrap_err()
                .contains("https://")
        );
        assert!(oidc("http://127.0.0.1:4000", Some("a"), None).is_ok());
        assert!(
            oidc("https://id.example", None, None)
                .unwrap_err()
                .contains("--oidc-audience")
        );
        assert!(
            oidc("https://id.example", Some("a"), Some("Admins=root"))
                .unwrap_err()
                .contains("root")
        );
    }

    #[test]
    fn edge_limits_come_from_flags_or_the_file_and_are_checked() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("orderflow.toml");
        std::fs::write(
            &file,
            "max-connections = 100\ncommand-rate = 3\ncors-origins = \"https://shop.example.com, http://127.0.0.1:3000\"\n",
        )
        .unwrap();
        let settings = Settings::resolve(Overrides {
            config: Some(file.clone()),
            jwt_secret: Some("s".repeat(32)),
            jwt_issuer: Some("i".into()),
            jwt_audience: Some("a".into()),
            edge: EdgeOverrides {
                max_connections: Some(50),
                header_timeout: Some(3),
                ..Default::default()
            },
            ..Default::default()
        })
        .unwrap();
        let edge = settings.edge;
        assert_eq!(edge.max_connections, 50, "the flag wins over the file");
        assert_eq!(edge.header_timeout, Duration::from_secs(3));
        assert_eq!(edge.command_rate, 3);
        assert_eq!(edge.command_burst, EdgeSettings::default().command_burst);
        assert_eq!(
            edge.cors_origins,
            ["https://shop.example.com", "http://127.0.0.1:3000"]
        );
        let development = Settings::resolve(Overrides::default()).unwrap().edge;
        assert_eq!(development.command_rate, DEVELOPMENT_COMMAND_RATE);
        assert_eq!(
            development.max_streams_per_customer, 5,
            "the other limits hold"
        );

        let refused = |edge: EdgeOverrides| {
            Settings::resolve(Overrides {
                edge,
                ..Default::default()
            })
            .map(|_| ())
            .map_err(|e| format!("{e:#}"))
        };
        assert!(
            refused(EdgeOverrides {
                cors_origins: Some("https://shop.example.com/path".into()),
                ..Default::default()
            })
            .unwrap_err()
            .contains("origin")
        );
        assert!(
            refused(EdgeOverrides {
                max_connections: Some(0),
                ..Default::default()
            })
            .is_err()
        );
        assert!(
            refused(EdgeOverrides {
                metrics_listen: Some("nowhere".into()),
                ..Default::default()
            })
            .is_err()
        );
    }

    #[test]
    fn passwords_do_not_reach_the_log() {
        assert_eq!(
            redact("amqp://guest:secret@127.0.0.1:5672/%2f"),
            "amqp://guest:***@127.0.0.1:5672/%2f"
        );
        assert_eq!(redact("redis://127.0.0.1:6379"), "redis://127.0.0.1:6379");
    }
}
