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

use commands::store::EventStore;
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

    /// Publishes until `shutdown` turns true; restarts from the checkpoint after any failure.
    pub async fn run(self, mut shutdown: watch::Receiver<bool>) {
        loop {
            match self.publish_from_checkpoint(&mut shutdown).await {
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
        shutdown: &mut watch::Receiver<bool>,
    ) -> Result<(), String> {
        let mut head = self.store.watch_head();
        let mut read_up_to = self
            .store
            .checkpoint(CHECKPOINT)
            .await
            .map_err(|e| e.to_string())?;
        let mut in_flight = FuturesOrdered::new();
        let mut positions = VecDeque::new();
        tracing::info!(from = read_up_to, "relay started");
        loop {
            while in_flight.len() < self.config.max_in_flight {
                let batch = self
                    .store
                    .read_all(read_up_to, self.config.batch_size)
                    .await
                    .map_err(|e| e.to_string())?;
                let Some(last) = batch.last() else { break };
                read_up_to = last.global_position;
                let receipt = self.bus.publish(batch).await.map_err(|e| e.to_string())?;
                in_flight.push_back(receipt);
                positions.push_back(read_up_to);
            }
            tokio::select! {
                biased;
                _ = crate::stopped(shutdown) => return Ok(()),
                Some(result) = in_flight.next(), if !in_flight.is_empty() => {
                    result.map_err(|e| e.to_string())?;
                    if let Some(published) = positions.pop_front() {
                        self.store
                            .save_checkpoint(CHECKPOINT, published)
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
