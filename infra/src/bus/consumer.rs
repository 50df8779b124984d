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
    subscription: Box<dyn Subscription>,
    concurrency: usize,
    handler: Handler,
    mut shutdown: watch::Receiver<bool>,
) {
    // `Subscription::next` is not cancel-safe: a Service Bus receive cancelled after the broker
    // locked a message leaves that message locked for nobody until the lock expires, and its
    // delivery count grows without a handler ever running (five of those and it is
    // dead-lettered). So a receive, once started, is never dropped when an event in flight
    // finishes first: the stream keeps it and the next poll resumes it.
    let deliveries = futures_util::stream::unfold(subscription, |mut subscription| async move {
        let delivery = subscription.next().await?;
        Some((delivery, subscription))
    });
    let mut deliveries = std::pin::pin!(deliveries);
    let mut in_flight = FuturesUnordered::new();
    loop {
        tokio::select! {
            biased;
            _ = crate::stopped(&mut shutdown) => break,
            Some(()) = in_flight.next(), if !in_flight.is_empty() => {}
            delivery = deliveries.next(), if in_flight.len() < concurrency.max(1) => {
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

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    use async_trait::async_trait;
    use tokio::sync::mpsc;

    use super::*;
    use crate::bus::{Delivery, Settle};

    /// A subscription whose receives can be told apart: each `next` that is dropped before it
    /// answered counts as a cancelled receive (a lost lock, on Service Bus).
    struct Receives {
        events: mpsc::UnboundedReceiver<RecordedEvent>,
        cancelled: Arc<AtomicUsize>,
        acked: Arc<AtomicUsize>,
    }

    struct Unanswered(Option<Arc<AtomicUsize>>);

    impl Drop for Unanswered {
        fn drop(&mut self) {
            if let Some(cancelled) = self.0.take() {
                cancelled.fetch_add(1, Ordering::SeqCst);
            }
        }
    }

    struct CountAcks(Arc<AtomicUsize>);

    #[async_trait]
    impl Settle for CountAcks {
        async fn ack(self: Box<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
        async fn nack(self: Box<Self>, _reason: String) {}
    }

    #[async_trait]
    impl Subscription for Receives {
        async fn next(&mut self) -> Option<Delivery> {
            let mut unanswered = Unanswered(Some(self.cancelled.clone()));
            let event = self.events.recv().await;
            unanswered.0 = None;
            Some(Delivery {
                event: event?,
                attempt: 1,
                settle: Box::new(CountAcks(self.acked.clone())),
            })
        }
    }

    /// Events trickle in while others are in flight: a receive that is waiting when an event
    /// in flight finishes must go on waiting, not be dropped and started again.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_waiting_receive_is_never_cancelled_while_events_finish() {
        let (send, events) = mpsc::unbounded_channel();
        let (cancelled, acked) = (Arc::default(), Arc::<AtomicUsize>::default());
        let subscription = Receives {
            events,
            cancelled: Arc::clone(&cancelled),
            acked: acked.clone(),
        };
        let handler: Handler = Arc::new(|_| {
            Box::pin(async {
                tokio::time::sleep(Duration::from_millis(15)).await;
                Ok(())
            })
        });
        let (stop, stopped) = watch::channel(false);
        let consumer = tokio::spawn(async move {
            consume("test", Box::new(subscription), 4, handler, stopped).await;
        });

        for event in crate::bus::conformance::events(20) {
            send.send(event).unwrap();
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while acked.load(Ordering::SeqCst) < 20 && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }

        assert_eq!(acked.load(Ordering::SeqCst), 20, "every event handled");
        assert_eq!(
            cancelled.load(Ordering::SeqCst),
            0,
            "no receive was dropped before it answered"
        );
        stop.send(true).unwrap();
        consumer.await.unwrap();
    }
}
