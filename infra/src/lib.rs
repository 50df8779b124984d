//! Adapters: the engines behind orderflow's ports, and the relay that joins store and topic.
//!
//! - [`event_store`]: `EventStore` adapters (SQLite) and the conformance suite they all pass.
//! - [`bus`]: the `EventBus` (topic) port, the in-process topic, and the consumer loop.
//! - [`relay`]: publishes the store's global log to the topic from a durable checkpoint.
//! - [`views`]: `ViewStore` adapters (in-memory).
//! - [`payment`]: the sandbox `PaymentGateway`.
//! - [`push`]: the embedded `PushSender` (log + installations in memory).

pub mod bus;
pub mod event_store;
pub mod payment;
pub mod push;
pub mod relay;
pub mod views;

/// Resolves once `shutdown` turns true (or its sender is gone). Selecting on this instead of
/// on `wait_for` directly keeps the borrowed guard out of the caller's future, which must be
/// `Send`.
pub async fn stopped(shutdown: &mut tokio::sync::watch::Receiver<bool>) {
    let _ = shutdown.wait_for(|stop| *stop).await;
}
