//! The in-process topic: one queue per named subscription, in memory.
//!
//! Memory is not durable, so a batch's receipt resolves only when every subscription has
//! settled every event of it (acked, or dead-lettered after its retries). The relay's
//! checkpoint therefore never passes an event some consumer has not finished, and after a
//! crash the relay publishes those events again: at-least-once across restarts too.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use domain::RecordedEvent;
use tokio::sync::{Mutex as AsyncMutex, mpsc, oneshot};

use super::{BusError, DeadLetter, Delivery, EventBus, Receipt, RetryPolicy, Settle, Subscription};

struct Message {
    event: RecordedEvent,
    attempt: u32,
    batch: Arc<Batch>,
}

/// Counts the settlements a published batch still waits for.
struct Batch {
    remaining: AtomicUsize,
    done: Mutex<Option<oneshot::Sender<()>>>,
}

impl Batch {
    fn settle_one(&self) {
        if self.remaining.fetch_sub(1, Ordering::AcqRel) == 1
            && let Some(done) = self.done.lock().ok().and_then(|mut d| d.take())
        {
            let _ = done.send(());
        }
    }
}

struct Queue {
    name: String,
    sender: mpsc::UnboundedSender<Message>,
    receiver: Arc<AsyncMutex<mpsc::UnboundedReceiver<Message>>>,
}

pub struct MemoryBus {
    queues: Vec<Arc<Queue>>,
    policy: RetryPolicy,
    dead: Arc<Mutex<Vec<DeadLetter>>>,
}

impl MemoryBus {
    /// A topic with these subscriptions; each gets every event published after this call.
    pub fn new(subscriptions: &[&str], policy: RetryPolicy) -> Self {
        let queues = subscriptions
            .iter()
            .map(|name| {
                let (sender, receiver) = mpsc::unbounded_channel();
                Arc::new(Queue {
                    name: (*name).to_owned(),
                    sender,
                    receiver: Arc::new(AsyncMutex::new(receiver)),
                })
            })
            .collect();
        Self {
            queues,
            policy,
            dead: Arc::default(),
        }
    }
}

#[async_trait]
impl EventBus for MemoryBus {
    async fn publish(&self, events: Vec<RecordedEvent>) -> Result<Receipt, BusError> {
        let (done, receipt) = oneshot::channel();
        let expected = events.len() * self.queues.len();
        if expected == 0 {
            return Ok(Box::pin(async { Ok(()) }));
        }
        let batch = Arc::new(Batch {
            remaining: AtomicUsize::new(expected),
            done: Mutex::new(Some(done)),
        });
        for queue in &self.queues {
            for event in &events {
                let message = Message {
                    event: event.clone(),
                    attempt: 1,
                    batch: batch.clone(),
                };
                queue
                    .sender
                    .send(message)
                    .map_err(|_| BusError::Unavailable("topic closed".into()))?;
            }
        }
        Ok(Box::pin(async move {
            receipt
                .await
                .map_err(|_| BusError::Unavailable("topic closed before settling".into()))
        }))
    }

    async fn subscribe(&self, subscription: &str) -> Result<Box<dyn Subscription>, BusError> {
        let queue = self
            .queues
            .iter()
            .find(|q| q.name == subscription)
            .ok_or_else(|| BusError::UnknownSubscription(subscription.to_owned()))?;
        Ok(Box::new(MemorySubscription {
            queue: queue.clone(),
            policy: self.policy,
            dead: self.dead.clone(),
        }))
    }

    async fn dead_letters(&self) -> Result<Vec<DeadLetter>, BusError> {
        Ok(self.dead.lock().map(|d| d.clone()).unwrap_or_default())
    }
}

struct MemorySubscription {
    queue: Arc<Queue>,
    policy: RetryPolicy,
    dead: Arc<Mutex<Vec<DeadLetter>>>,
}

#[async_trait]
impl Subscription for MemorySubscription {
    async fn next(&mut self) -> Option<Delivery> {
        let message = self.queue.receiver.lock().await.recv().await?;
        Some(Delivery {
            event: message.event.clone(),
            attempt: message.attempt,
            settle: Box::new(MemorySettle {
                message: Some(message),
                queue: self.queue.clone(),
                policy: self.policy,
                dead: self.dead.clone(),
            }),
        })
    }
}

struct MemorySettle {
    message: Option<Message>,
    queue: Arc<Queue>,
    policy: RetryPolicy,
    dead: Arc<Mutex<Vec<DeadLetter>>>,
}

impl MemorySettle {
    /// Schedules the next attempt after the policy's delay, or dead-letters the message.
    fn fail(&mut self, reason: String) {
        let Some(mut message) = self.message.take() else {
            return;
        };
        if message.attempt >= self.policy.max_attempts {
            tracing::error!(
                subscription = %self.queue.name,
                event_id = %message.event.event_id,
                event_type = %message.event.event_type,
                attempts = message.attempt,
                %reason,
                "dead-lettered"
            );
            if let Ok(mut dead) = self.dead.lock() {
                dead.push(DeadLetter {
                    subscription: self.queue.name.clone(),
                    event: message.event.clone(),
                    attempts: message.attempt,
                    reason,
                });
            }
            message.batch.settle_one();
            return;
        }
        tracing::warn!(
            subscription = %self.queue.name,
            event_id = %message.event.event_id,
            attempt = message.attempt,
            %reason,
            "delivery failed; will retry"
        );
        let delay = self.policy.delay_after(message.attempt);
        message.attempt += 1;
        let sender = self.queue.sender.clone();
        let redeliver = async move {
            tokio::time::sleep(delay).await;
            let _ = sender.send(message);
        };
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) => {
                runtime.spawn(redeliver);
            }
            Err(_) => tracing::error!("no runtime to redeliver on; the relay will republish"),
        }
    }
}

#[async_trait]
impl Settle for MemorySettle {
    async fn ack(mut self: Box<Self>) {
        if let Some(message) = self.message.take() {
            message.batch.settle_one();
        }
    }

    async fn nack(mut self: Box<Self>, reason: String) {
        self.fail(reason);
    }
}

impl Drop for MemorySettle {
    fn drop(&mut self) {
        if self.message.is_some() {
            self.fail("delivery dropped without being settled".into());
        }
    }
}
