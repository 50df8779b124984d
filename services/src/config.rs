//! Settings for one process: where it listens, where its data lives, how callers authenticate.
//! The CLI (`main.rs`) fills them from flags and `ORDERFLOW_*` environment variables; tests
//! build them directly.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use infra::bus::RetryPolicy;

#[derive(Debug, Clone)]
pub struct Settings {
    /// Where HTTP is served; port 0 picks a free one.
    pub listen: SocketAddr,
    /// Holds the SQLite event store and the development signing key.
    pub data_dir: PathBuf,
    pub auth: AuthSettings,
    /// How subscriptions retry a failing event before dead-lettering it.
    pub retry: RetryPolicy,
    /// Events the order processor works on at once.
    pub processor_concurrency: usize,
    /// Seed the demo catalog on first start.
    pub seed_catalog: bool,
}

impl Settings {
    /// The embedded defaults: everything in one process, data under `data_dir`.
    pub fn embedded(listen: SocketAddr, data_dir: PathBuf) -> Self {
        Self {
            listen,
            data_dir,
            auth: AuthSettings::Development,
            retry: RetryPolicy {
                max_attempts: 5,
                base_delay: Duration::from_millis(200),
            },
            processor_concurrency: 8,
            seed_catalog: true,
        }
    }
}

/// How bearer tokens are checked.
#[derive(Clone)]
pub enum AuthSettings {
    /// `POST /api/dev/token` hands out tokens signed with a key kept in the data directory.
    /// For laptops and tests only: anyone can sign in as anyone.
    Development,
    /// Tokens from an identity provider, HS256 with a shared secret, checked for issuer and
    /// audience. No development login.
    Jwt {
        secret: Secret,
        issuer: String,
        audience: String,
    },
}

impl std::fmt::Debug for AuthSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Development => f.write_str("Development"),
            Self::Jwt {
                issuer, audience, ..
            } => write!(
                f,
                "Jwt {{ issuer: {issuer:?}, audience: {audience:?}, secret: *** }}"
            ),
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
