//! The relay: tails the event store's global log and publishes it to the topic.
//!
//! The store is the outbox. A command only appends; the relay reads what was committed, in
//! commit order, from its durable checkpoint, and moves the checkpoint only when the topic's
//! receipt says a batch is safe. A crash between publishing and saving the checkpoint means
//! some events are published twice, which every consumer tolerates; it never means one is
//! lost. Several batches are in flight at once so that a slow consumer does not add latency to
//! every event behind it.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use commands::store::{EventStore, Lease};
use futures_util::StreamExt;
use futures_util::stream::FuturesOrdered;
use tokio::sync::watch;

use crate::bus::EventBus;

pub const CHECKPOINT: &str = "relay";

#[derive(Debug, Clone, Copy)]
pub struct RelayConfig {
    pub batch_size: usize,
    pub max_in_flight: usize,
    /// Re-reads the log this often even without a doorbell, and waits this long after a failure.
    pub poll: Duration,
}

impl Default for RelayConfig {
    fn default() -> Self {
        Self {
            batch_size: 500,
            max_in_flight: 64,
            poll: Duration::from_millis(500),
        }
    }
}

pub struct Relay {
    store: Arc<dyn EventStore>,
    bus: Arc<dyn EventBus>,
    config: RelayConfig,
}

impl Relay {
    pub fn new(store: Arc<dyn EventStore>, bus: Arc<dyn EventBus>, config: RelayConfig) -> Self {
        Self { store, bus, config }
    }

    /// Publishes while it holds the relay lease, until `shutdown` turns true; waits for the
    /// lease while another process holds it; restarts from the checkpoint after any failure.
    pub async fn run(self, mut shutdown: watch::Receiver<bool>) {
        loop {
            let lease = match self.store.lease(CHECKPOINT).await {
                Ok(Some(lease)) => lease,
                Ok(None) => {
                    tracing::debug!("another relay holds the lease; waiting");
                    tokio::select! {
                        _ = crate::stopped(&mut shutdown) => return,
                        _ = tokio::time::sleep(self.config.poll) => continue,
                    }
                }
                Err(error) => {
                    tracing::warn!(%error, "cannot take the relay lease");
                    tokio::select! {
                        _ = crate::stopped(&mut shutdown) => return,
                        _ = tokio::time::sleep(self.config.poll) => continue,
                    }
                }
            };
            match self.publish_from_checkpoint(lease, &mut shutdown).await {
                Ok(()) => return,
                Err(error) => {
                    tracing::warn!(%error, "relay failed; resuming from its checkpoint");
                    tokio::select! {
                        _ = crate::stopped(&mut shutdown) => return,
                        _ = tokio::time::sleep(self.config.poll) => {}
                    }
                }
            }
        }
    }

    async fn publish_from_checkpoint(
        &self,
        mut lease: Box<dyn Lease>,
        shutdown: &mut watch::Receiver<bool>,
    ) -> Result<(), String> {
        let mut head = self.store.watch_head();
        let mut read_up_to = self
            .store
            .checkpoint(CHECKPOINT)
            .await
            .map_err(|e| e.to_string())?;
        let mut in_flight = FuturesOrdered::new();
        let mut cursors = VecDeque::new();
        tracing::info!(from = %read_up_to, "relay started");
        loop {
            if !lease.held().await {
                return Err("lost the relay lease".into());
            }
            while in_flight.len() < self.config.max_in_flight {
                let page = self
                    .store
                    .read_all(&read_up_to, self.config.batch_size)
                    .await
                    .map_err(|e| e.to_string())?;
                if page.events.is_empty() {
                    break;
                }
                read_up_to = page.next;
                let receipt = self
                    .bus
                    .publish(page.events)
                    .await
                    .map_err(|e| e.to_string())?;
                in_flight.push_back(receipt);
                cursors.push_back(read_up_to.clone());
            }
            tokio::select! {
                biased;
                _ = crate::stopped(shutdown) => return Ok(()),
                Some(result) = in_flight.next(), if !in_flight.is_empty() => {
                    result.map_err(|e| e.to_string())?;
                    if let Some(published) = cursors.pop_front() {
                        self.store
                            .save_checkpoint(CHECKPOINT, &published)
                            .await
                            .map_err(|e| e.to_string())?;
                    }
                }
                _ = head.changed(), if in_flight.len() < self.config.max_in_flight => {}
                _ = tokio::time::sleep(self.config.poll) => {}
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;
    use std::sync::atomic::{AtomicBool, Ordering};

    use chrono::Utc;
    use domain::{EventMetadata, NewEvent};
    use uuid::Uuid;

    use super::*;
    use crate::bus::{Handler, MemoryBus, RetryPolicy, consume};
    use crate::event_store::SqliteEventStore;
    use commands::LogCursor;

    async fn append(store: &dyn EventStore, stream: &str, n: usize) {
        let events = (0..n)
            .map(|i| NewEvent {
                event_id: Uuid::now_v7(),
                event_type: "Tested".into(),
                schema_version: 1,
                occurred_at: Utc::now(),
                payload: serde_json::json!({ "i": i }),
                metadata: EventMetadata::default(),
            })
            .collect();
        let version = store.read_stream(stream, 1).await.unwrap().len() as u64;
        store.append(stream, "test", version, events).await.unwrap();
    }

    fn recorder(seen: Arc<Mutex<Vec<u64>>>, fail_once: Arc<AtomicBool>) -> Handler {
        Arc::new(move |event| {
            let seen = seen.clone();
            let fail_once = fail_once.clone();
            Box::pin(async move {
                if fail_once.swap(false, Ordering::SeqCst) {
                    return Err("transient".to_owned());
                }
                seen.lock()
                    .unwrap()
                    .push(event.global_position.unwrap_or_default());
                Ok(())
            })
        })
    }

    async fn wait_for_checkpoint(store: &dyn EventStore, position: u64) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while store
            .checkpoint(CHECKPOINT)
            .await
            .unwrap()
            .position()
            .unwrap()
            < position
        {
            assert!(
                tokio::time::Instant::now() < deadline,
                "checkpoint never reached {position}"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_relay_publishes_the_log_in_order_and_checkpoints_only_what_was_settled() {
        let dir = tempfile::tempdir().unwrap();
        let store: Arc<dyn EventStore> = Arc::new(
            SqliteEventStore::open(&dir.path().join("s.db"))
                .await
                .unwrap(),
        );
        append(store.as_ref(), "a-1", 3).await;
        let policy = RetryPolicy {
            max_attempts: 5,
            base_delay: Duration::from_millis(5),
        };
        let bus = Arc::new(MemoryBus::new(&["only"], policy));
        let (stop, stopped) = watch::channel(false);
        let seen = Arc::new(Mutex::new(Vec::new()));
        let subscription = bus.subscribe("only").await.unwrap();
        let handler = recorder(seen.clone(), Arc::new(AtomicBool::new(true)));
        tokio::spawn(consume("only", subscription, 1, handler, stopped.clone()));
        let relay =
            tokio::spawn(Relay::new(store.clone(), bus, RelayConfig::default()).run(stopped));

        append(store.as_ref(), "a-2", 2).await;
        wait_for_checkpoint(store.as_ref(), 5).await;

        let mut positions = seen.lock().unwrap().clone();
        positions.sort_unstable();
        assert_eq!(
            positions,
            [1, 2, 3, 4, 5],
            "every event, the failed one after its retry"
        );
        stop.send(true).unwrap();
        relay.await.unwrap();
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn after_a_crash_the_relay_republishes_what_was_not_settled() {
        let dir = tempfile::tempdir().unwrap();
        let store: Arc<dyn EventStore> = Arc::new(
            SqliteEventStore::open(&dir.path().join("s.db"))
                .await
                .unwrap(),
        );
        append(store.as_ref(), "a-1", 4).await;
        let two = LogCursor::at_position(2);
        store.save_checkpoint(CHECKPOINT, &two).await.unwrap();
        // No consumer: nothing settles, so the checkpoint must stay where it was.
        let bus = Arc::new(MemoryBus::new(&["only"], RetryPolicy::default()));
        let (stop, stopped) = watch::channel(false);
        let relay =
            tokio::spawn(Relay::new(store.clone(), bus, RelayConfig::default()).run(stopped));
        tokio::time::sleep(Duration::from_millis(200)).await;
        stop.send(true).unwrap();
        relay.await.unwrap();
        assert_eq!(store.checkpoint(CHECKPOINT).await.unwrap(), two);

        // The "restarted" process gets events 3 and 4 again.
        let bus = Arc::new(MemoryBus::new(&["only"], RetryPolicy::default()));
        let (stop, stopped) = watch::channel(false);
        let seen = Arc::new(Mutex::new(Vec::new()));
        let subscription = bus.subscribe("only").await.unwrap();
        let handler = recorder(seen.clone(), Arc::new(AtomicBool::new(false)));
        tokio::spawn(consume("only", subscription, 1, handler, stopped.clone()));
        let relay =
            tokio::spawn(Relay::new(store.clone(), bus, RelayConfig::default()).run(stopped));
        wait_for_checkpoint(store.as_ref(), 4).await;
        assert_eq!(*seen.lock().unwrap(), [3, 4]);
        stop.send(true).unwrap();
        relay.await.unwrap();
    }
}
