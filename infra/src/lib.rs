//! Adapters: the engines behind orderflow's ports, and the relay that joins store and topic.
//!
//! - [`event_store`]: `EventStore` adapters (SQLite, PostgreSQL, and Azure Cosmos DB behind the
//!   `azure` feature) and the conformance suite they all pass.
//! - [`bus`]: the `EventBus` (topic) port, its adapters (in-process, RabbitMQ, and Azure Service
//!   Bus behind the `azure` feature), their conformance suite, and the consumer loop.
//! - [`kept`]: the SQLite file beside the embedded engines that keeps what they promise across
//!   restarts (completed claims, installations, sandbox payments, dead letters).
//! - [`relay`]: publishes the store's global log to the topic from a durable checkpoint, while
//!   it holds the store's relay lease.
//! - [`trace`]: W3C trace context across processes: spans that continue the trace an event
//!   carries, and the `traceparent` they hand on.
//! - [`sas`]: the shared access key and the SAS token that Service Bus and Notification Hubs
//!   requests are signed with.
//! - [`views`]: `ViewStore` adapters (in-memory, Redis) and their conformance suite.
//! - [`payment`]: the sandbox `PaymentGateway`.
//! - [`push`]: `PushSender` adapters: embedded (log, optional JSONL file, installations in the
//!   view store) and Azure Notification Hubs (REST, SAS auth), and their conformance suite.

pub mod bus;
pub mod event_store;
pub mod kept;
pub mod payment;
pub mod push;
pub mod relay;
pub mod sas;
pub mod trace;
pub mod views;

/// Resolves once `shutdown` turns true (or its sender is gone). Selecting on this instead of
/// on `wait_for` directly keeps the borrowed guard out of the caller's future, which must be
/// `Send`.
pub async fn stopped(shutdown: &mut tokio::sync::watch::Receiver<bool>) {
    let _ = shutdown.wait_for(|stop| *stop).await;
}
