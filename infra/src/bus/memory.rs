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

use super::{
    BusError, DeadLetter, DeadLetterFilter, Delivery, EventBus, QueueDepth, Receipt, RetryPolicy,
    Settle, Subscription,
};
use crate::kept::{Keep, KeptFile};

struct Message {
    event: RecordedEvent,
    attempt: u32,
    batch: Arc<Batch>,
    /// Re-driven from the dead letters: its kept dead letter is removed once it is acked.
    redriven: bool,
}

/// Counts the settlements a published batch still waits for.
struct Batch {
    remaining: AtomicUsize,
    done: Mutex<Option<oneshot::Sender<()>>>,
}

impl Batch {
    /// A batch nobody waits for (a re-driven dead letter, long past the relay's checkpoint).
    fn detached() -> Arc<Self> {
        Arc::new(Self {
            remaining: AtomicUsize::new(1),
            done: Mutex::new(None),
        })
    }

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
    /// Messages sent and not yet received (for [`EventBus::depths`]).
    waiting: AtomicUsize,
}

impl Queue {
    fn push(&self, message: Message) -> Result<(), BusError> {
        self.waiting.fetch_add(1, Ordering::Relaxed);
        self.sender.send(message).map_err(|_| {
            self.waiting.fetch_sub(1, Ordering::Relaxed);
            BusError::Unavailable("topic closed".into())
        })
    }
}

pub struct MemoryBus {
    queues: Vec<Arc<Queue>>,
    policy: RetryPolicy,
    dead: Arc<Mutex<Vec<DeadLetter>>>,
    kept: Option<Arc<KeptFile>>,
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
                    waiting: AtomicUsize::new(0),
                })
            })
            .collect();
        Self {
            queues,
            policy,
            dead: Arc::default(),
            kept: None,
        }
    }

    /// Keeps dead letters in `file` from now on, starting with `dead` (the ones it held when
    /// it opened): the embedded mode, across restarts.
    pub fn keeping(mut self, file: Arc<KeptFile>, dead: Vec<DeadLetter>) -> Self {
        self.dead = Arc::new(Mutex::new(dead));
        self.kept = Some(file);
        self
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
                    redriven: false,
                };
                queue.push(message)?;
            }
        }
        Ok(Box::pin(async move {
            receipt
                .await
                .map_err(|_| BusError::Unavailable("topic closed before settling".into()))
        }))
    }

    async fn depths(&self) -> Result<Option<Vec<QueueDepth>>, BusError> {
        let dead = self.dead.lock().map(|d| d.clone()).unwrap_or_default();
        Ok(Some(
            self.queues
                .iter()
                .map(|queue| QueueDepth {
                    subscription: queue.name.clone(),
                    ready: queue.waiting.load(Ordering::Relaxed) as u64,
                    dead: dead.iter().filter(|d| d.subscription == queue.name).count() as u64,
                })
                .collect(),
        ))
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
            kept: self.kept.clone(),
        }))
    }

    async fn dead_letters(&self) -> Result<Vec<DeadLetter>, BusError> {
        Ok(self.dead.lock().map(|d| d.clone()).unwrap_or_default())
    }

    async fn redrive(&self, which: &DeadLetterFilter) -> Result<Vec<DeadLetter>, BusError> {
        let chosen = self.take_dead(which);
        for letter in &chosen {
            let Some(queue) = self.queues.iter().find(|q| q.name == letter.subscription) else {
                continue;
            };
            tracing::info!(subscription = %letter.subscription, event_id = %letter.event.event_id, "dead letter re-driven");
            let message = Message {
                event: letter.event.clone(),
                attempt: 1,
                batch: Batch::detached(),
                redriven: true,
            };
            // Its kept dead letter stays until the copy is acked: a restart before that lists
            // it again instead of losing it with the in-memory queue.
            queue.push(message)?;
        }
        Ok(chosen)
    }

    async fn discard(
        &self,
        which: &DeadLetterFilter,
        reason: &str,
    ) -> Result<Vec<DeadLetter>, BusError> {
        let chosen = self.take_dead(which);
        if let Some(kept) = &self.kept {
            let gone = chosen
                .iter()
                .map(|l| Keep::NoLongerDead(l.subscription.clone(), l.event.event_id))
                .collect();
            if let Err(error) = kept.keep(gone).await {
                // Back as they were: what the file still holds must stay listed.
                if let Ok(mut dead) = self.dead.lock() {
                    dead.extend(chosen);
                }
                return Err(BusError::Unavailable(format!(
                    "the discard could not be kept: {error}"
                )));
            }
        }
        for letter in &chosen {
            super::log_discarded(letter, reason);
        }
        Ok(chosen)
    }
}

impl MemoryBus {
    /// Takes the dead letters `which` selects out of the list.
    fn take_dead(&self, which: &DeadLetterFilter) -> Vec<DeadLetter> {
        let Ok(mut dead) = self.dead.lock() else {
            return Vec::new();
        };
        let (chosen, rest) = dead.drain(..).partition(|l| which.matches(l));
        *dead = rest;
        chosen
    }
}

struct MemorySubscription {
    queue: Arc<Queue>,
    policy: RetryPolicy,
    dead: Arc<Mutex<Vec<DeadLetter>>>,
    kept: Option<Arc<KeptFile>>,
}

#[async_trait]
impl Subscription for MemorySubscription {
    async fn next(&mut self) -> Option<Delivery> {
        let message = self.queue.receiver.lock().await.recv().await?;
        self.queue.waiting.fetch_sub(1, Ordering::Relaxed);
        Some(Delivery {
            event: message.event.clone(),
            attempt: message.attempt,
            settle: Box::new(MemorySettle {
                message: Some(message),
                queue: self.queue.clone(),
                policy: self.policy,
                dead: self.dead.clone(),
                kept: self.kept.clone(),
            }),
        })
    }
}

struct MemorySettle {
    message: Option<Message>,
    queue: Arc<Queue>,
    policy: RetryPolicy,
    dead: Arc<Mutex<Vec<DeadLetter>>>,
    kept: Option<Arc<KeptFile>>,
}

impl MemorySettle {
    /// Schedules the next attempt after the policy's delay, or dead-letters the message.
    /// A failed attempt, retried later; dead-lettered when it was the last one or `park` says
    /// no retry can mend it.
    fn fail(&mut self, reason: String, park: bool) {
        let Some(message) = self.message.take() else {
            return;
        };
        if park || message.attempt >= self.policy.max_attempts {
            self.dead_letter(message, reason);
        } else {
            self.retry(message, reason);
        }
    }

    /// Keeps the message with the others given up on, and written through to the kept file
    /// when there is one.
    fn dead_letter(&self, message: Message, reason: String) {
        tracing::error!(
            subscription = %self.queue.name,
            event_id = %message.event.event_id,
            event_type = %message.event.event_type,
            attempts = message.attempt,
            %reason,
            "dead-lettered"
        );
        let letter = DeadLetter {
            subscription: self.queue.name.clone(),
            event: message.event.clone(),
            attempts: message.attempt,
            reason,
            // To the millisecond, as the kept file holds it.
            dead_at: chrono::DateTime::from_timestamp_millis(chrono::Utc::now().timestamp_millis()),
        };
        if let Ok(mut dead) = self.dead.lock() {
            dead.push(letter.clone());
        }
        let (Some(kept), Ok(runtime)) = (self.kept.clone(), tokio::runtime::Handle::try_current())
        else {
            message.batch.settle_one();
            return;
        };
        // Settled only once it is kept: until then the relay's checkpoint stays before it,
        // and a crash meanwhile publishes it again instead of losing it.
        runtime.spawn(async move {
            if let Err(error) = kept.keep(vec![Keep::DeadLetter(Box::new(letter))]).await {
                // Settled all the same: a receipt that never resolves would stop the relay.
                tracing::error!(%error, "a dead letter was not kept; a restart forgets it");
            }
            message.batch.settle_one();
        });
    }

    /// Delivers the message again after the policy's delay, as its next attempt.
    fn retry(&self, mut message: Message, reason: String) {
        tracing::warn!(
            subscription = %self.queue.name,
            event_id = %message.event.event_id,
            attempt = message.attempt,
            %reason,
            "delivery failed; will retry"
        );
        let delay = self.policy.delay_after(message.attempt);
        message.attempt += 1;
        let queue = self.queue.clone();
        let redeliver = async move {
            tokio::time::sleep(delay).await;
            let _ = queue.push(message);
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
            if message.redriven
                && let Some(kept) = &self.kept
            {
                let gone = Keep::NoLongerDead(self.queue.name.clone(), message.event.event_id);
                if let Err(error) = kept.keep(vec![gone]).await {
                    tracing::warn!(%error, event_id = %message.event.event_id, "a re-driven dead letter was handled but stays kept; a restart lists it again");
                }
            }
            message.batch.settle_one();
        }
    }

    async fn nack(mut self: Box<Self>, reason: String) {
        self.fail(reason, false);
    }

    async fn park(mut self: Box<Self>, reason: String) {
        self.fail(reason, true);
    }

    async fn release(mut self: Box<Self>) {
        if let Some(message) = self.message.take() {
            // The same attempt again; if the topic is gone, the relay republishes the batch.
            let _ = self.queue.push(message);
        }
    }
}

impl Drop for MemorySettle {
    fn drop(&mut self) {
        if self.message.is_some() {
            self.fail("delivery dropped without being settled".into(), false);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicU32;
    use std::time::Duration;

    use chrono::Utc;
    use domain::EventMetadata;
    use tokio::sync::watch;
    use uuid::Uuid;

    use super::*;
    use crate::bus::{Handler, consume};

    fn event(position: u64) -> RecordedEvent {
        RecordedEvent {
            event_id: Uuid::now_v7(),
            stream_id: format!("test-{position}"),
            stream_type: "test".into(),
            version: 1,
            global_position: Some(position),
            event_type: "Tested".into(),
            schema_version: 1,
            occurred_at: Utc::now(),
            payload: serde_json::json!({}).into(),
            metadata: EventMetadata::default(),
        }
    }

    fn quick(max_attempts: u32) -> RetryPolicy {
        RetryPolicy {
            max_attempts,
            base_delay: Duration::from_millis(5),
        }
    }

    /// A handler that fails the first `failures` attempts of every event, counting calls.
    fn flaky(failures: u32, calls: Arc<AtomicU32>) -> Handler {
        Arc::new(move |_event| {
            let calls = calls.clone();
            Box::pin(async move {
                let n = calls.fetch_add(1, Ordering::SeqCst) + 1;
                if n <= failures {
                    Err(format!("failure {n}").into())
                } else {
                    Ok(())
                }
            })
        })
    }

    #[tokio::test]
    async fn every_subscription_gets_every_event_and_the_receipt_waits_for_all_acks() {
        let bus = MemoryBus::new(&["a", "b"], quick(3));
        let (stop, stopped) = watch::channel(false);
        let (a_calls, b_calls) = (Arc::new(AtomicU32::new(0)), Arc::new(AtomicU32::new(0)));
        let a = tokio::spawn(consume(
            "a",
            bus.subscribe("a").await.unwrap(),
            2,
            flaky(0, a_calls.clone()),
            stopped.clone(),
        ));

        let receipt = bus.publish(vec![event(1), event(2)]).await.unwrap();
        let mut receipt = Box::pin(receipt);
        // "b" has not consumed yet, so the batch is not safe.
        assert!(
            tokio::time::timeout(Duration::from_millis(50), &mut receipt)
                .await
                .is_err()
        );
        let b = tokio::spawn(consume(
            "b",
            bus.subscribe("b").await.unwrap(),
            2,
            flaky(0, b_calls.clone()),
            stopped,
        ));

        receipt.await.unwrap();
        assert_eq!(
            (
                a_calls.load(Ordering::SeqCst),
                b_calls.load(Ordering::SeqCst)
            ),
            (2, 2)
        );
        stop.send(true).unwrap();
        a.await.unwrap();
        b.await.unwrap();
    }

    #[tokio::test]
    async fn a_failing_delivery_is_retried_then_succeeds() {
        let bus = MemoryBus::new(&["a"], quick(5));
        let (_stop, stopped) = watch::channel(false);
        let calls = Arc::new(AtomicU32::new(0));
        tokio::spawn(consume(
            "a",
            bus.subscribe("a").await.unwrap(),
            1,
            flaky(2, calls.clone()),
            stopped,
        ));

        bus.publish(vec![event(1)]).await.unwrap().await.unwrap();

        assert_eq!(calls.load(Ordering::SeqCst), 3);
        assert_eq!(bus.dead_letters().await.unwrap(), vec![]);
    }

    #[tokio::test]
    async fn a_delivery_that_keeps_failing_is_dead_lettered_with_its_reason() {
        let bus = MemoryBus::new(&["a"], quick(3));
        let (_stop, stopped) = watch::channel(false);
        let calls = Arc::new(AtomicU32::new(0));
        tokio::spawn(consume(
            "a",
            bus.subscribe("a").await.unwrap(),
            1,
            flaky(u32::MAX, calls.clone()),
            stopped,
        ));
        let poison = event(1);

        bus.publish(vec![poison.clone()])
            .await
            .unwrap()
            .await
            .unwrap();

        assert_eq!(calls.load(Ordering::SeqCst), 3);
        let dead = bus.dead_letters().await.unwrap();
        assert_eq!(dead.len(), 1);
        assert_eq!(
            (dead[0].event.event_id, dead[0].attempts),
            (poison.event_id, 3)
        );
        assert_eq!(dead[0].reason, "failure 3");
        assert_eq!(dead[0].subscription, "a");
    }

    /// The in-process queue is memory: a re-driven dead letter stays in the kept file until its
    /// copy is acked, so a restart before then lists it again instead of losing it; a discard
    /// is kept before it answers.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_redriven_dead_letter_stays_kept_until_its_copy_is_acked() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("kept.db");
        let kept_dead = || KeptFile::open(&path).unwrap().1.dead_letters;
        let (file, kept) = KeptFile::open(&path).unwrap();
        let bus = MemoryBus::new(&["a"], quick(1)).keeping(Arc::new(file), kept.dead_letters);
        let mut subscription = bus.subscribe("a").await.unwrap();
        let (poison, other) = (event(1), event(2));
        let receipt = bus
            .publish(vec![poison.clone(), other.clone()])
            .await
            .unwrap();
        for _ in 0..2 {
            let delivery = subscription.next().await.unwrap();
            delivery.settle.nack("boom".into()).await;
        }
        receipt.await.unwrap();
        assert_eq!(kept_dead().len(), 2, "both dead letters are kept");

        let redriven = bus
            .redrive(&DeadLetterFilter::one("a", poison.event_id))
            .await
            .unwrap();
        assert_eq!(redriven.len(), 1);
        let again = subscription.next().await.unwrap();
        assert_eq!((again.event.event_id, again.attempt), (poison.event_id, 1));
        assert_eq!(kept_dead().len(), 2, "kept until the copy is handled");
        again.settle.ack().await;
        let left = kept_dead();
        assert_eq!(
            left.iter().map(|d| d.event.event_id).collect::<Vec<_>>(),
            [other.event_id]
        );

        let discarded = bus
            .discard(&DeadLetterFilter::default(), "operator: not needed")
            .await
            .unwrap();
        assert_eq!(discarded.len(), 1);
        assert!(
            kept_dead().is_empty(),
            "a discard is kept before it answers"
        );
        assert!(bus.dead_letters().await.unwrap().is_empty());
    }

    #[tokio::test]
    async fn competing_consumers_share_a_subscription() {
        let bus = MemoryBus::new(&["a"], quick(3));
        let (_stop, stopped) = watch::channel(false);
        let (one, two) = (Arc::new(AtomicU32::new(0)), Arc::new(AtomicU32::new(0)));
        tokio::spawn(consume(
            "a",
            bus.subscribe("a").await.unwrap(),
            1,
            flaky(0, one.clone()),
            stopped.clone(),
        ));
        tokio::spawn(consume(
            "a",
            bus.subscribe("a").await.unwrap(),
            1,
            flaky(0, two.clone()),
            stopped,
        ));

        bus.publish((1..=100).map(event).collect())
            .await
            .unwrap()
            .await
            .unwrap();

        assert_eq!(
            one.load(Ordering::SeqCst) + two.load(Ordering::SeqCst),
            100,
            "each event once"
        );
    }

    #[test]
    fn backoff_doubles() {
        let policy = RetryPolicy {
            max_attempts: 5,
            base_delay: Duration::from_millis(100),
        };
        let delays: Vec<_> = (1..=4).map(|a| policy.delay_after(a).as_millis()).collect();
        assert_eq!(delays, [100, 200, 400, 800]);
    }

    #[tokio::test]
    async fn an_unknown_subscription_is_an_error() {
        let bus = MemoryBus::new(&["a"], quick(3));
        assert!(matches!(
            bus.subscribe("nope").await,
            Err(BusError::UnknownSubscription(_))
        ));
    }
}
