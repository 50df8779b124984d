//! The embedded push sender: no push service, so each push is a log line (and the browser's
//! live feed, which the notifier feeds, shows it). It keeps installations in memory and the
//! most recent pushes, so the API and tests can see what a real hub would have been asked.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;

use async_trait::async_trait;
use projections::notifier::{Installation, Notification, PushError, PushSender};
use uuid::Uuid;

const KEEP_SENT: usize = 10_000;

#[derive(Default)]
pub struct LogPush {
    installations: Mutex<HashMap<String, Installation>>,
    sent: Mutex<VecDeque<Notification>>,
}

impl LogPush {
    pub fn new() -> Self {
        Self::default()
    }

    /// The most recent pushes, oldest first.
    pub fn sent(&self) -> Vec<Notification> {
        self.sent
            .lock()
            .map(|s| s.iter().cloned().collect())
            .unwrap_or_default()
    }

    pub fn installation(&self, id: &str) -> Option<Installation> {
        self.installations.lock().ok()?.get(id).cloned()
    }
}

fn poisoned<T>(_: T) -> PushError {
    PushError::Unavailable("push state poisoned".into())
}

#[async_trait]
impl PushSender for LogPush {
    async fn send(&self, notification: &Notification) -> Result<(), PushError> {
        let tag = notification.tag();
        let devices = self
            .installations
            .lock()
            .map_err(poisoned)?
            .values()
            .filter(|i| i.tags.contains(&tag))
            .count();
        tracing::info!(
            %tag,
            order_id = %notification.order_id,
            status = %notification.status,
            devices,
            "push (embedded: logged, not sent to a device)"
        );
        let mut sent = self.sent.lock().map_err(poisoned)?;
        if sent.len() == KEEP_SENT {
            sent.pop_front();
        }
        sent.push_back(notification.clone());
        Ok(())
    }

    async fn register(&self, installation: Installation) -> Result<(), PushError> {
        let mut installations = self.installations.lock().map_err(poisoned)?;
        if let Some(existing) = installations.get(&installation.installation_id)
            && existing.customer_id != installation.customer_id
        {
            return Err(PushError::NotOwner);
        }
        installations.insert(installation.installation_id.clone(), installation);
        Ok(())
    }

    async fn delete(&self, customer_id: Uuid, installation_id: &str) -> Result<bool, PushError> {
        let mut installations = self.installations.lock().map_err(poisoned)?;
        match installations.get(installation_id) {
            Some(i) if i.customer_id == customer_id => {
                installations.remove(installation_id);
                Ok(true)
            }
            Some(_) => Err(PushError::NotOwner),
            None => Ok(false),
        }
    }
}
