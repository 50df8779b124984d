//! The HTTP server loop: hyper's HTTP/1.1 connections with a header read timeout and a cap
//! on open connections, which `axum::serve` does not offer.
//!
//! A client that trickles its headers (a byte a second) is cut off when the timeout passes;
//! an idle keep-alive connection too. A connection over the cap is answered `503` problem+json
//! with `Retry-After` and closed, instead of waiting unseen in the kernel's backlog; refusals
//! themselves are capped, past which a connection is closed at once. Each request carries the
//! peer's address (`ConnectInfo`), for limits per client address.
//!
//! Stopping: no new connections; open ones finish their request in flight and close (live
//! streams end on the application's stop signal); after `drain` the rest are dropped.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::ConnectInfo;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;

/// Refusals answered at once, beyond which a connection over the cap is just closed.
const MAX_REFUSALS: usize = 256;

#[derive(Debug, Clone, Copy)]
pub struct ServeLimits {
    pub max_connections: usize,
    pub header_timeout: Duration,
    /// How long stopping waits for open connections.
    pub drain: Duration,
}

pub async fn serve(
    listener: TcpListener,
    router: Router,
    limits: ServeLimits,
    stop: impl Future<Output = ()>,
) {
    let connections = Arc::new(Semaphore::new(limits.max_connections));
    let refusals = Arc::new(Semaphore::new(MAX_REFUSALS));
    let graceful = GracefulShutdown::new();
    let mut stop = std::pin::pin!(stop);
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    // Out of file descriptors, or a connection reset before it was taken:
                    // pause briefly rather than spin.
                    tracing::debug!(%error, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut stop => break,
        };
        let _ = stream.set_nodelay(true);
        let io = TokioIo::new(stream);
        let Ok(permit) = connections.clone().try_acquire_owned() else {
            if let Ok(refusal) = refusals.clone().try_acquire_owned() {
                tokio::spawn(async move {
                    refuse(io, limits.header_timeout).await;
                    drop(refusal);
                });
            }
            continue;
        };
        let service = tower::util::MapRequest::new(
            router.clone(),
            move |mut request: hyper::Request<Incoming>| {
                request.extensions_mut().insert(ConnectInfo(peer));
                request
            },
        );
        // hyper-util's connection builder (HTTP/1 only), as axum::serve uses it: serving
        // through hyper's http1::Builder directly measured a third slower on the status query
        // (docs/BENCHMARKS.md, 2026-12-03), with the same settings.
        let connection = connection_builder(limits.header_timeout)
            .serve_connection_with_upgrades(io, TowerToHyperService::new(service))
            .into_owned();
        let connection = graceful.watch(connection);
        tokio::spawn(async move {
            if let Err(error) = connection.await {
                tracing::debug!(%error, %peer, "connection ended with an error");
            }
            drop(permit);
        });
    }
    drop(listener);
    if tokio::time::timeout(limits.drain, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!(
            "connections still open after {:?}; closing them",
            limits.drain
        );
    }
}

fn connection_builder(header_timeout: Duration) -> auto::Builder<TokioExecutor> {
    let mut builder = auto::Builder::new(TokioExecutor::new()).http1_only();
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(Some(header_timeout));
    builder
}

/// Reads the request (within the header timeout) and answers 503, then closes.
async fn refuse(io: TokioIo<tokio::net::TcpStream>, header_timeout: Duration) {
    let service = hyper::service::service_fn(|_request: hyper::Request<Incoming>| async {
        Ok::<_, std::convert::Infallible>(crate::api::edge::busy())
    });
    let mut builder = connection_builder(header_timeout);
    builder.http1().keep_alive(false);
    let _ = tokio::time::timeout(header_timeout * 2, builder.serve_connection(io, service)).await;
}

/// The peer's address, when the request came through [`serve`].
pub fn peer(extensions: &axum::http::Extensions) -> Option<SocketAddr> {
    extensions
        .get::<ConnectInfo<SocketAddr>>()
        .map(|ConnectInfo(address)| *address)
}
