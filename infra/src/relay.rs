//! The relay: tails the event store's global log and publishes it to the topic.
//!
//! The store is the outbox. A command only appends; the relay reads what was committed, in
//! commit order, from its durable checkpoint, and moves the checkpoint only when the topic's
//! receipt says a batch is safe. A crash between publishing and saving the checkpoint means
//! some events are published twice, which every consumer tolerates; it never means one is
//! lost. Several batches are in flight at once so that a slow consumer does not add latency to
//! every event behind it.
//!
//! Under load the checkpoint is saved at most every `checkpoint_every`, for the newest batch
//! confirmed by then, and at once whenever nothing is in flight (caught up, or stopping): a
//! crash re-publishes at most that much, and the store is not written once per page (it was
//! about one write per order). The lease is checked again at most every `lease_check`; a
//! relay that lost its lease may publish that long alongside the new holder, which is again
//! only duplicates.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use eventlog::{EventStore, Lease, LogCursor, StoreError};
use futures_util::StreamExt;
use futures_util::stream::FuturesOrdered;
use tokio::sync::watch;
use tokio::time::Instant;

use crate::bus::{BusError, EventBus, Receipt};

pub const CHECKPOINT: &str = "relay";

#[derive(Debug, Clone, Copy)]
pub struct RelayConfig {
    pub batch_size: usize,
    pub max_in_flight: usize,
    /// Re-reads the log this often even without a doorbell, and waits this long after a failure.
    pub poll: Duration,
    /// The longest a confirmed batch waits for its checkpoint while others are in flight.
    pub checkpoint_every: Duration,
    /// How often the relay checks that it still holds its lease (a round trip to the store).
    pub lease_check: Duration,
}

impl Default for RelayConfig {
    fn default() -> Self {
        Self {
            batch_size: 500,
            max_in_flight: 64,
            poll: Duration::from_millis(500),
            checkpoint_every: Duration::from_millis(100),
            lease_check: Duration::from_millis(500),
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
    ) -> Result<(), RelayError> {
        let mut head = self.store.watch_head();
        // What rang before now is read by the first read below.
        head.borrow_and_update();
        let mut publishing = Publishing::new(self.store.checkpoint(CHECKPOINT).await?);
        let (mut checked_at, mut saved_at) = (Instant::now(), Instant::now());
        tracing::info!(from = %publishing.read_up_to, "relay started");
        loop {
            if checked_at.elapsed() >= self.config.lease_check {
                if !lease.held().await {
                    return Err(RelayError::LostLease);
                }
                checked_at = Instant::now();
            }
            self.read_and_publish(&mut publishing).await?;
            if publishing.published.is_some()
                && (publishing.in_flight.is_empty()
                    || saved_at.elapsed() >= self.config.checkpoint_every)
            {
                self.save(publishing.published.take()).await?;
                saved_at = Instant::now();
            }
            let room = publishing.in_flight.len() < self.config.max_in_flight;
            tokio::select! {
                biased;
                _ = crate::stopped(shutdown) => {
                    // What the topic confirmed is saved; batches still in flight are published
                    // again by the next relay.
                    return self.save(publishing.published.take()).await;
                }
                Some(result) = publishing.in_flight.next(), if !publishing.in_flight.is_empty() => {
                    result?;
                    publishing.confirmed();
                }
                _ = head.changed(), if room => publishing.unread = true,
                _ = tokio::time::sleep(self.config.poll) => publishing.unread = true,
            }
        }
    }

    /// Reads pages of the log and hands each to the topic, while the log may hold more than
    /// was read and fewer than `max_in_flight` batches await their receipts.
    async fn read_and_publish(&self, publishing: &mut Publishing) -> Result<(), RelayError> {
        let numbered = self.store.ordered_log();
        while publishing.unread && publishing.in_flight.len() < self.config.max_in_flight {
            let page = self
                .store
                .read_all(&publishing.read_up_to, self.config.batch_size)
                .await?;
            // A short page of a numbered log is its end as of now; other feeds (Cosmos DB's)
            // may return short pages before the end, and are read until one comes back empty.
            publishing.unread = if numbered {
                page.events.len() >= self.config.batch_size
            } else {
                !page.events.is_empty()
            };
            if page.events.is_empty() {
                break;
            }
            publishing.read_up_to = page.next;
            let mut events = page.events;
            let spans = publication_spans(&mut events);
            let receipt = self.bus.publish(events).await?;
            publishing.in_flight.push_back(receipt);
            let cursor = publishing.read_up_to.clone();
            publishing.cursors.push_back((cursor, spans));
        }
        Ok(())
    }

    async fn save(&self, published: Option<LogCursor>) -> Result<(), RelayError> {
        match published {
            Some(cursor) => Ok(self.store.save_checkpoint(CHECKPOINT, &cursor).await?),
            None => Ok(()),
        }
    }
}

/// Why a relay stopped publishing (it resumes from its checkpoint).
#[derive(Debug, thiserror::Error)]
enum RelayError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Topic(#[from] BusError),
    #[error("lost the relay lease")]
    LostLease,
}

/// Where a relay's publishing stands: what it read, what the topic has yet to confirm, and
/// the newest cursor the topic confirmed that is not saved yet.
struct Publishing {
    read_up_to: LogCursor,
    in_flight: FuturesOrdered<Receipt>,
    /// The cursor after each batch in flight, with its publication spans, in publish order.
    cursors: VecDeque<(LogCursor, Vec<tracing::Span>)>,
    published: Option<LogCursor>,
    /// Whether the log may hold more than was read: after a full page, the doorbell or the
    /// poll, not after a receipt. Reading again on every receipt found nothing new three
    /// times in four (4.5 reads of the log per order, embedded at 1,000 orders/s).
    unread: bool,
}

impl Publishing {
    fn new(checkpoint: LogCursor) -> Self {
        Self {
            read_up_to: checkpoint,
            in_flight: FuturesOrdered::new(),
            cursors: VecDeque::new(),
            published: None,
            unread: true,
        }
    }

    /// The oldest batch in flight is safe: its cursor may be saved, and its publication spans
    /// end here, when the topic has it.
    fn confirmed(&mut self) {
        let oldest = self.cursors.pop_front().map(|(cursor, _spans)| cursor);
        self.published = oldest.or(self.published.take());
    }
}

/// When traces are exported: a `publish` span per event, continuing the trace its metadata
/// names, whose context the published copy carries instead (the stored event keeps the
/// request's). The spans last until the topic confirms the batch. Nothing when not exporting.
fn publication_spans(events: &mut [domain::RecordedEvent]) -> Vec<tracing::Span> {
    if !crate::trace::enabled() {
        return Vec::new();
    }
    events
        .iter_mut()
        .map(|event| {
            let span = tracing::info_span!(
                "publish",
                event_id = %event.event_id,
                event_type = %event.event_type,
                trace_id = tracing::field::Empty,
            );
            crate::trace::continue_trace(&span, event.metadata.traceparent.as_deref());
            if let Some(own) = crate::trace::traceparent(&span) {
                event.metadata.traceparent = Some(own);
            }
            span
        })
        .collect()
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
    use eventlog::LogCursor;

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

    /// A store in a temporary directory, which lives as long as the guard.
    async fn sqlite_store() -> (Arc<SqliteEventStore>, tempfile::TempDir) {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteEventStore::open(&dir.path().join("s.db"))
            .await
            .unwrap();
        (Arc::new(store), dir)
    }

    fn recorder(seen: Arc<Mutex<Vec<u64>>>, fail_once: Arc<AtomicBool>) -> Handler {
        Arc::new(move |event| {
            let seen = seen.clone();
            let fail_once = fail_once.clone();
            Box::pin(async move {
                if fail_once.swap(false, Ordering::SeqCst) {
                    return Err("transient".into());
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
        let (store, _dir) = sqlite_store().await;
        let store: Arc<dyn EventStore> = store;
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

    /// 200 pages of one event each, published with many in flight: the checkpoint ends at the
    /// head, saved a few times rather than once a page (a store write each).
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn under_load_the_checkpoint_is_saved_now_and_then_not_once_a_page() {
        let (store, _dir) = sqlite_store().await;
        for i in 0..200 {
            append(store.as_ref(), &format!("a-{i}"), 1).await;
        }
        let before = store.group_commits().unwrap();
        let bus = Arc::new(MemoryBus::new(&["only"], RetryPolicy::default()));
        let (stop, stopped) = watch::channel(false);
        let seen = Arc::new(Mutex::new(Vec::new()));
        let subscription = bus.subscribe("only").await.unwrap();
        let handler = recorder(seen.clone(), Arc::new(AtomicBool::new(false)));
        tokio::spawn(consume("only", subscription, 4, handler, stopped.clone()));
        let config = RelayConfig {
            batch_size: 1,
            checkpoint_every: Duration::from_secs(60),
            ..RelayConfig::default()
        };
        let relay = tokio::spawn(Relay::new(store.clone(), bus, config).run(stopped));

        wait_for_checkpoint(store.as_ref(), 200).await;
        let saves = store.group_commits().unwrap() - before;

        assert_eq!(seen.lock().unwrap().len(), 200, "every event published");
        assert!(saves < 20, "{saves} checkpoint commits for 200 pages");
        stop.send(true).unwrap();
        relay.await.unwrap();
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn after_a_crash_the_relay_republishes_what_was_not_settled() {
        let (store, _dir) = sqlite_store().await;
        let store: Arc<dyn EventStore> = store;
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
