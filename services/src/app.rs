//! `Application`: build the whole system from settings, serve until stopped, stop gracefully.
//! Tests start it on port 0 with their own data directory.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::api::auth::oidc::OidcVerifier;
use crate::api::auth::{Authenticator, SharedSecret};
use crate::api::{self, AppState};
use crate::config::{AuthSettings, Role, Settings, redact};
use crate::serve::ServeLimits;
use crate::system::System;

/// How long stopping waits for workers to finish what they hold. Service Bus's default receive
/// timeout is kept under it: a stopping handle waits out its cut-off polls before it hands back.
const DRAIN: Duration = Duration::from_secs(10);

pub struct Application {
    listener: TcpListener,
    address: SocketAddr,
    /// `/metrics` on a listener of its own (`--metrics-listen`).
    metrics: Option<(TcpListener, axum::Router)>,
    limits: ServeLimits,
    router: axum::Router,
    system: Arc<System>,
    workers: Vec<JoinHandle<()>>,
    stop: Arc<watch::Sender<bool>>,
}

/// Stops a running application from elsewhere (tests, or a signal handler).
#[derive(Clone)]
pub struct Stopper(Arc<watch::Sender<bool>>);

impl Stopper {
    pub fn stop(&self) {
        let _ = self.0.send(true);
    }
}

impl Application {
    pub async fn build(settings: Settings) -> anyhow::Result<Self> {
        Self::build_on(settings, None).await
    }

    /// Builds on a listener bound beforehand (a test that must know the address first, to
    /// register it at an identity provider); `None` binds `settings.listen`.
    pub async fn build_on(
        settings: Settings,
        listener: Option<std::net::TcpListener>,
    ) -> anyhow::Result<Self> {
        let roles = &settings.roles;
        tracing::info!(
            roles = ?roles.names(),
            store = %redact(&settings.store),
            bus = %redact(&settings.bus),
            cache = %redact(&settings.cache),
            "starting"
        );
        if !settings.is_single_process() && settings.store.starts_with("sqlite:") {
            tracing::warn!("a SQLite store belongs to one process: run one relay only");
        }
        let system = System::build(&settings).await?;
        let web = roles.has(Role::Web);
        if web && settings.seed_catalog {
            let listed = crate::seed::catalog(&system.commands)
                .await
                .context("seeding the catalog")?;
            if listed > 0 {
                tracing::info!(listed, "seeded the demo catalog");
            }
        }
        if roles.has(Role::Projector) {
            // Views live in a cache that may have forgotten everything: catch it up from the
            // log before answering the first read.
            let folded = system
                .projector
                .catch_up()
                .await
                .context("rebuilding views from the event log")?;
            tracing::info!(folded, "views caught up with the event log");
        }
        let (stop, stopped) = watch::channel(false);
        let workers = system.spawn_workers(&settings, stopped.clone()).await?;
        let auth = match &settings.auth {
            AuthSettings::Development => {
                if web {
                    tracing::warn!("{}", api::ops::DEV_NOTICE);
                }
                Authenticator::Development(SharedSecret::development(&settings.data_dir)?)
            }
            AuthSettings::SharedSecret {
                secret,
                issuer,
                audience,
            } => Authenticator::SharedSecret(
                SharedSecret::new(secret.expose().as_bytes(), issuer, audience)
                    .map_err(anyhow::Error::msg)?,
            ),
            AuthSettings::Oidc(client) => {
                let verifier = OidcVerifier::start(client.verifier.clone())
                    .await
                    .map_err(anyhow::Error::msg)?;
                tracing::info!(issuer = %client.verifier.issuer, "tokens from this OpenID provider");
                Authenticator::Oidc(verifier)
            }
        };
        let state = AppState::new(api::Shared::new(
            system.clone(),
            Arc::new(auth),
            Arc::new(api::ops::SignIn::of(&settings.auth)),
            stopped,
            api::edge::Edge::new(settings.edge.clone()),
        ));
        let listener = match listener {
            Some(bound) => {
                bound.set_nonblocking(true)?;
                TcpListener::from_std(bound)?
            }
            None => TcpListener::bind(settings.listen)
                .await
                .with_context(|| format!("listening on {}", settings.listen))?,
        };
        let address = listener.local_addr()?;
        let metrics = match settings.edge.metrics_listen {
            Some(at) => {
                let bound = TcpListener::bind(at)
                    .await
                    .with_context(|| format!("listening on {at} for /metrics"))?;
                tracing::info!(address = %bound.local_addr()?, "/metrics served apart");
                Some((bound, api::metrics_router(state.clone())))
            }
            None => None,
        };
        let limits = ServeLimits {
            max_connections: settings.edge.max_connections,
            header_timeout: settings.edge.header_timeout,
            drain: DRAIN,
        };
        Ok(Self {
            listener,
            address,
            metrics,
            limits,
            router: api::router(state, web),
            system,
            workers,
            stop: Arc::new(stop),
        })
    }

    pub fn address(&self) -> SocketAddr {
        self.address
    }

    /// Where `/metrics` is served when `--metrics-listen` moved it.
    pub fn metrics_address(&self) -> Option<SocketAddr> {
        self.metrics
            .as_ref()
            .and_then(|(listener, _)| listener.local_addr().ok())
    }

    pub fn port(&self) -> u16 {
        self.address.port()
    }

    /// What tests reach behind the API: a few ports and the embedded sandboxes.
    pub fn hooks(&self) -> crate::system::Hooks {
        self.system.hooks()
    }

    pub fn stopper(&self) -> Stopper {
        Stopper(self.stop.clone())
    }

    /// Serves until SIGINT, SIGTERM or the stopper; then stops taking requests, lets workers
    /// finish and settle what they hold, and returns.
    pub async fn run_until_stopped(self) -> anyhow::Result<()> {
        tracing::info!(address = %self.address, "orderflow listening on http://{}", self.address);
        let stopper = self.stopper();
        let signals = tokio::spawn(async move {
            wait_for_signal().await;
            tracing::info!("signal received; stopping");
            stopper.stop();
        });
        let stopped = |mut stop: watch::Receiver<bool>| async move {
            let _ = stop.wait_for(|stop| *stop).await;
        };
        let metrics = self.metrics.map(|(listener, router)| {
            tokio::spawn(crate::serve::serve(
                listener,
                router,
                self.limits,
                stopped(self.stop.subscribe()),
            ))
        });
        crate::serve::serve(
            self.listener,
            self.router,
            self.limits,
            stopped(self.stop.subscribe()),
        )
        .await;
        if let Some(metrics) = metrics {
            let _ = metrics.await;
        }
        self.stop.send_replace(true);
        signals.abort();
        for worker in self.workers {
            if tokio::time::timeout(DRAIN, worker).await.is_err() {
                tracing::warn!("a worker did not stop within {DRAIN:?}");
            }
        }
        tracing::info!("stopped");
        Ok(())
    }
}

async fn wait_for_signal() {
    let interrupt = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut terminate =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(_) => return std::future::pending().await,
            };
        tokio::select! {
            _ = interrupt => {},
            _ = terminate.recv() => {},
        }
    }
    #[cfg(not(unix))]
    let _ = interrupt.await;
}
