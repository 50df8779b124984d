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
use projections::view_store::{Doc, ViewStore};
use uuid::Uuid;

const KEEP_SENT: usize = 10_000;

pub struct LogPush {
    views: Arc<dyn ViewStore>,
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
            views,
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

    async fn stored(&self, id: &str) -> Result<Option<(u64, Installation)>, PushError> {
        match self.views.get(&key(id)).await.map_err(unavailable)? {
            None => Ok(None),
            // A deleted installation leaves a tombstone (the view store has no delete).
            Some(doc) if doc.body == "null" => Ok(None),
            Some(doc) => serde_json::from_str(&doc.body)
                .map(|installation| Some((doc.version, installation)))
                .map_err(unavailable),
        }
    }

    async fn devices(&self, customer: Uuid) -> Result<usize, PushError> {
        let index = format!("{INDEX_PREFIX}{customer}");
        let members = self
            .views
            .index_page(&index, None, 1000)
            .await
            .map_err(unavailable)?;
        let mut count = 0;
        for (_, id) in members {
            if self.stored(&id).await?.is_some() {
                count += 1;
            }
        }
        Ok(count)
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

/// Where an installation is kept in the view store: `installation:{id}`.
pub const KEY_PREFIX: &str = "installation:";
/// The index of a customer's installations: `installations:customer:{customer_id}`.
pub const INDEX_PREFIX: &str = "installations:customer:";

fn key(id: &str) -> String {
    format!("{KEY_PREFIX}{id}")
}

fn unavailable(error: impl std::fmt::Display) -> PushError {
    PushError::Unavailable(error.to_string())
}

#[async_trait]
impl PushSender for LogPush {
    async fn send(&self, notification: &Notification) -> Result<(), PushError> {
        let devices = self.devices(notification.customer_id).await?;
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
        let id = installation.installation_id.clone();
        let current = self.views.get(&key(&id)).await.map_err(unavailable)?;
        if let Some(doc) = &current
            && let Ok(existing) = serde_json::from_str::<Installation>(&doc.body)
            && existing.customer_id != installation.customer_id
        {
            return Err(PushError::NotOwner);
        }
        let version = current.map_or(0, |d| d.version);
        let body = serde_json::to_string(&installation).map_err(unavailable)?;
        let doc = Doc {
            version: version + 1,
            body,
        };
        if !self
            .views
            .put(&key(&id), version, doc)
            .await
            .map_err(unavailable)?
        {
            return Err(PushError::Unavailable(
                "installation changed concurrently; retry".into(),
            ));
        }
        let index = format!("{INDEX_PREFIX}{}", installation.customer_id);
        self.views
            .index_add(&index, 0, &id)
            .await
            .map_err(unavailable)
    }

    async fn delete(&self, customer_id: Uuid, installation_id: &str) -> Result<bool, PushError> {
        let Some((version, existing)) = self.stored(installation_id).await? else {
            return Ok(false);
        };
        if existing.customer_id != customer_id {
            return Err(PushError::NotOwner);
        }
        let tombstone = Doc {
            version: version + 1,
            body: "null".into(),
        };
        self.views
            .put(&key(installation_id), version, tombstone)
            .await
            .map_err(unavailable)
    }
}
