//! Order view changes, for readers waiting on one order (read-your-writes with `min_version`).
//!
//! A reader that waits for an order's view to reach a version used to poll the view store with
//! growing pauses (5, 10, 20 … 50 ms), so a decision that was projected 1 ms after the first
//! read reached the client 5 to 15 ms late, and every poll was a read. Now the projector
//! announces each order view it writes on a view-store channel (every web process may be
//! waiting, whichever process projects), and each process wakes only the readers of that
//! order. The channel is best effort, as pub/sub is: a reader still re-reads now and then, and
//! everyone re-reads when the subscription starts over (messages may have been missed).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use tokio::sync::watch;
use uuid::Uuid;

use crate::view_store::{ViewStore, follow_channel};

/// The view-store channel the projector announces order view writes on: `"{order_id} {version}"`.
pub const ORDER_CHANGES_CHANNEL: &str = "order-changes";

/// This process's readers waiting for order views, by order.
#[derive(Default)]
pub struct OrderChanges {
    waiting: Mutex<HashMap<Uuid, watch::Sender<u64>>>,
}

impl OrderChanges {
    /// Starts watching `order_id`: changes announced from now on wake the returned watch.
    /// Register before reading the view, so that a write between the read and the wait is not
    /// missed.
    pub fn watch(self: &Arc<Self>, order_id: Uuid) -> OrderWatch {
        let receiver = match self.waiting.lock() {
            Ok(mut waiting) => waiting
                .entry(order_id)
                .or_insert_with(|| watch::channel(0).0)
                .subscribe(),
            // A poisoned table only costs the wake-ups: the reader still re-reads on its own.
            Err(_) => watch::channel(0).1,
        };
        OrderWatch {
            order_id,
            receiver,
            owner: self.clone(),
        }
    }

    /// The order's view was written at `version`: wakes its readers, if this process has any.
    pub fn changed(&self, order_id: Uuid, version: u64) {
        if let Ok(waiting) = self.waiting.lock()
            && let Some(sender) = waiting.get(&order_id)
        {
            sender.send_replace(version);
        }
    }

    /// Wakes every reader (to re-read): announcements may have been missed.
    pub fn changed_all(&self) {
        if let Ok(waiting) = self.waiting.lock() {
            for sender in waiting.values() {
                sender.send_modify(|_| {});
            }
        }
    }

    /// How many orders have readers waiting (for tests and metrics).
    pub fn watched(&self) -> usize {
        self.waiting.lock().map(|w| w.len()).unwrap_or(0)
    }

    /// Follows the view store's announcements into this process's readers, until
    /// `shutdown`.
    pub async fn follow(
        self: Arc<Self>,
        views: Arc<dyn ViewStore>,
        shutdown: watch::Receiver<bool>,
    ) {
        let readers = self.clone();
        follow_channel(
            views,
            ORDER_CHANGES_CHANNEL,
            shutdown,
            // Whatever was announced before this subscription was missed.
            || self.changed_all(),
            |text| match parse(&text) {
                Some((order_id, version)) => readers.changed(order_id, version),
                None => tracing::warn!("unreadable order change announcement"),
            },
        )
        .await;
    }
}

/// The announcement of `version` of `order_id`'s view.
pub fn announcement(order_id: Uuid, version: u64) -> String {
    format!("{order_id} {version}")
}

fn parse(message: &str) -> Option<(Uuid, u64)> {
    let (id, version) = message.split_once(' ')?;
    Some((Uuid::parse_str(id).ok()?, version.parse().ok()?))
}

/// One reader's watch on one order; dropping it stops watching.
pub struct OrderWatch {
    order_id: Uuid,
    receiver: watch::Receiver<u64>,
    owner: Arc<OrderChanges>,
}

impl OrderWatch {
    /// Resolves at the next change announced for the order (at once if one came since the
    /// last call). Never resolves if the table could not register the watch: callers also
    /// wait on a timer.
    pub async fn changed(&mut self) {
        if self.receiver.changed().await.is_err() {
            std::future::pending::<()>().await;
        }
    }
}

impl Drop for OrderWatch {
    fn drop(&mut self) {
        if let Ok(mut waiting) = self.owner.waiting.lock()
            && waiting
                .get(&self.order_id)
                .is_some_and(|sender| sender.receiver_count() <= 1)
        {
            // This was the order's last reader (its receiver still counts until it drops).
            waiting.remove(&self.order_id);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[tokio::test]
    async fn a_change_wakes_the_readers_of_that_order_only() {
        let changes = Arc::new(OrderChanges::default());
        let (a, b) = (Uuid::from_u128(1), Uuid::from_u128(2));
        let mut first = changes.watch(a);
        let mut second = changes.watch(a);
        let mut other = changes.watch(b);
        changes.changed(a, 2);
        tokio::time::timeout(Duration::from_secs(1), first.changed())
            .await
            .expect("the first reader of the order is woken");
        tokio::time::timeout(Duration::from_secs(1), second.changed())
            .await
            .expect("the second reader of the order is woken");
        assert!(
            tokio::time::timeout(Duration::from_millis(20), other.changed())
                .await
                .is_err(),
            "a reader of another order sleeps on"
        );
        changes.changed_all();
        tokio::time::timeout(Duration::from_secs(1), other.changed())
            .await
            .expect("a resubscription wakes everyone");
    }

    #[test]
    fn the_table_forgets_an_order_when_its_last_reader_goes() {
        let changes = Arc::new(OrderChanges::default());
        let order = Uuid::from_u128(7);
        let first = changes.watch(order);
        let second = changes.watch(order);
        assert_eq!(changes.watched(), 1);
        drop(first);
        assert_eq!(changes.watched(), 1, "one reader still waits");
        drop(second);
        assert_eq!(changes.watched(), 0);
        changes.changed(order, 3);
        assert_eq!(
            changes.watched(),
            0,
            "a change nobody waits for leaves nothing"
        );
    }

    #[test]
    fn an_announcement_reads_back() {
        let order = Uuid::new_v4();
        assert_eq!(parse(&announcement(order, 42)), Some((order, 42)));
        assert_eq!(parse("not an announcement"), None);
    }
}
