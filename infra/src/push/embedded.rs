//! The embedded push sender: there is no push service, so each push is a log line, and
//! optionally a line in a JSONL file (`--push-log`) that operators and tests can read: the
//! notification and its `collapse_id` (the event id), each line written whole. The
//! browser's live feed is fed by the notifier separately. Installations are kept in the view
//! store, so every process (the web role registers them, the notifier reads them) sees them.

use std::collections::VecDeque;
use std::io::Write;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use projections::notifier::{Installation, Notification, PushError, PushSender};
use projections::view_store::ViewStore;
use uuid::Uuid;

use super::owners::Owners;
pub use super::owners::{INDEX_PREFIX, KEY_PREFIX};

const KEEP_SENT: usize = 10_000;

pub struct LogPush {
    owners: Owners,
    file: Option<Mutex<std::fs::File>>,
    sent: Mutex<VecDeque<Notification>>,
}

impl LogPush {
    /// `log_file`: append every push there as one JSON line.
    pub fn new(views: Arc<dyn ViewStore>, log_file: Option<PathBuf>) -> std::io::Result<Self> {
        let file = match log_file {
            Some(path) => Some(Mutex::new(
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(path)?,
            )),
            None => None,
        };
        Ok(Self {
            owners: Owners::new(views),
            file,
            sent: Mutex::default(),
        })
    }

    /// The most recent pushes of this process, oldest first.
    pub fn sent(&self) -> Vec<Notification> {
        self.sent
            .lock()
            .map(|s| s.iter().cloned().collect())
            .unwrap_or_default()
    }
}

/// One line of the push log: the notification, and the collapse key a device would get (the
/// event id), so that a reader counts a push sent twice as one seen.
#[derive(serde::Serialize)]
struct Logged<'a> {
    #[serde(flatten)]
    notification: &'a Notification,
    collapse_id: Uuid,
}

fn unavailable(error: impl std::fmt::Display) -> PushError {
    PushError::Unavailable(error.to_string())
}

#[async_trait]
impl PushSender for LogPush {
    async fn send(&self, notification: &Notification) -> Result<(), PushError> {
        let devices = self.owners.devices(notification.customer_id).await?;
        tracing::info!(
            tag = %notification.tag(),
            order_id = %notification.order_id,
            status = %notification.status,
            devices,
            "push (embedded: logged, not sent to a device)"
        );
        if let Some(file) = &self.file {
            let logged = Logged {
                notification,
                collapse_id: notification.event_id,
            };
            let mut line = serde_json::to_string(&logged).map_err(unavailable)?;
            // The line and its newline in one write to an append-only file: a process killed
            // mid-push leaves a whole line or none, never half of one glued to the next.
            line.push('\n');
            let mut file = file.lock().map_err(unavailable)?;
            file.write_all(line.as_bytes()).map_err(unavailable)?;
        }
        let mut sent = self.sent.lock().map_err(unavailable)?;
        if sent.len() == KEEP_SENT {
            sent.pop_front();
        }
        sent.push_back(notification.clone());
        Ok(())
    }

    async fn register(&self, installation: Installation) -> Result<(), PushError> {
        // Nothing but the records knows the installations here.
        self.owners
            .claim(&installation, || async { Ok(None) })
            .await
    }

    async fn delete(&self, customer_id: Uuid, installation_id: &str) -> Result<bool, PushError> {
        let checked = self
            .owners
            .check_delete(customer_id, installation_id, || async { Ok(None) })
            .await?;
        let Some(version) = checked else {
            return Ok(false);
        };
        self.owners.forget(installation_id, version).await?;
        Ok(true)
    }
}
