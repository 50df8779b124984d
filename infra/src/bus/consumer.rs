//! Runs one handler over one subscription: at most `concurrency` events in flight, ack after
//! the handler succeeds, nack with its error otherwise. On shutdown it stops taking deliveries,
//! lets the ones in flight finish and settle, then returns.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use domain::RecordedEvent;
use futures_util::StreamExt;
use futures_util::stream::FuturesUnordered;
use tokio::sync::watch;

use super::Subscription;

/// What a consumer does with one event; an `Err` is retried later by the topic.
pub type Handler = Arc<
    dyn Fn(RecordedEvent) -> Pin<Box<dyn Future<Output = Result<(), String>> + Send>> + Send + Sync,
>;

pub async fn consume(
    name: &str,
    mut subscription: Box<dyn Subscription>,
    concurrency: usize,
    handler: Handler,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut in_flight = FuturesUnordered::new();
    loop {
        tokio::select! {
            biased;
            _ = crate::stopped(&mut shutdown) => break,
            Some(()) = in_flight.next(), if !in_flight.is_empty() => {}
            delivery = subscription.next(), if in_flight.len() < concurrency.max(1) => {
                let Some(delivery) = delivery else { break };
                let handler = handler.clone();
                let name = name.to_owned();
                in_flight.push(async move {
                    let event_id = delivery.event.event_id;
                    match handler(delivery.event).await {
                        Ok(()) => delivery.settle.ack().await,
                        Err(reason) => {
                            tracing::debug!(subscription = %name, %event_id, %reason, "handler failed");
                            delivery.settle.nack(reason).await;
                        }
                    }
                });
            }
        }
    }
    while in_flight.next().await.is_some() {}
    tracing::info!(subscription = %name, "consumer stopped");
}
