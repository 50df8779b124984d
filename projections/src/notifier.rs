//! The notifier: turns an order's status changes into pushes to its customer's devices and
//! into the browser's live feed.
//!
//! Redelivery is normal on an at-least-once topic, so each event id is claimed in the view
//! store before anything is sent, and the claim is completed once the push has gone: a later
//! delivery finds it done and sends nothing. A send that fails gives the claim back, so the
//! retry can try again at once. A claim is a lease ([`CLAIM_LEASE`]): a notifier that dies
//! between its claim and the completion leaves a lease that ends, and the redelivery of the
//! event (the topic never saw it settled) takes the claim over and sends. No push is lost;
//! one is sent twice only when a notifier dies after the push service answered and before it
//! completed the claim, and the device collapses those two because each notification carries
//! its event id as the collapse key (see "What is promised" in `docs/mobile.md`).

use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use domain::RecordedEvent;
use domain::envelope::{DecodeError, decode, stream_key};
use domain::order::{self, OrderEvent, OrderStatus};
use eventlog::recent::Recent;
use eventlog::{Classify, Engine, Fault};
use eventlog::{EventStore, StoreError};
use serde::{Deserialize, Serialize};
use tokio::sync::broadcast;
use utoipa::ToSchema;
use uuid::Uuid;

use crate::view_store::{Claim, ViewError, ViewStore, follow_channel};

pub const SUBSCRIPTION: &str = "notifier";

/// The view-store channel notifications travel on to every web process's [`LiveFeed`].
pub const LIVE_CHANNEL: &str = "live";

/// One status change of one order, as a browser or a phone receives it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Notification {
    pub order_id: Uuid,
    pub customer_id: Uuid,
    #[schema(example = "confirmed")]
    pub status: String,
    /// The order stream's version after this change: `GET /api/orders/{id}?min_version=`.
    pub version: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    pub event_id: Uuid,
    pub at: DateTime<Utc>,
}

impl Notification {
    /// The tag every installation of this customer carries.
    pub fn tag(&self) -> String {
        format!("customer:{}", self.customer_id)
    }
}

/// A device registered for pushes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Installation {
    pub installation_id: String,
    pub customer_id: Uuid,
    /// `apns`, `fcmv1` or `wns`.
    pub platform: String,
    pub push_channel: String,
    /// Always includes `customer:{customer_id}`.
    pub tags: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PushError {
    #[error("push service unavailable: {0}")]
    Unavailable(String),
    /// The push service refused this request, and would refuse it again.
    #[error("push service refused the request: {0}")]
    Refused(String),
    /// The installation id belongs to another customer.
    #[error("installation belongs to another customer")]
    NotOwner,
}

impl Classify for PushError {
    fn fault(&self) -> Fault {
        match self {
            Self::Unavailable(_) => Fault::Outage(Engine::Push),
            Self::Refused(_) | Self::NotOwner => Fault::Permanent,
        }
    }
}

/// The push port: Notification Hubs in production, a log (and the browser feed) embedded.
#[async_trait]
pub trait PushSender: Send + Sync + 'static {
    /// Sends to every installation tagged `customer:{id}`.
    async fn send(&self, notification: &Notification) -> Result<(), PushError>;
    /// Creates or replaces an installation, unless its id belongs to another customer.
    async fn register(&self, installation: Installation) -> Result<(), PushError>;
    /// Removes the customer's installation; `false` if it had none by that id.
    async fn delete(&self, customer_id: Uuid, installation_id: &str) -> Result<bool, PushError>;
}

/// Live order updates for connected browsers (the SSE endpoint subscribes here).
pub struct LiveFeed {
    sender: broadcast::Sender<Notification>,
}

impl Default for LiveFeed {
    fn default() -> Self {
        Self {
            sender: broadcast::channel(4096).0,
        }
    }
}

impl LiveFeed {
    pub fn subscribe(&self) -> broadcast::Receiver<Notification> {
        self.sender.subscribe()
    }

    pub fn publish(&self, notification: Notification) {
        // No browser connected is not an error.
        let _ = self.sender.send(notification);
    }

    /// Feeds this process's browsers from the view store's live channel, whichever process the
    /// notifier runs in, until `shutdown`.
    pub async fn bridge(
        self: Arc<Self>,
        views: Arc<dyn ViewStore>,
        shutdown: tokio::sync::watch::Receiver<bool>,
    ) {
        follow_channel(
            views,
            LIVE_CHANNEL,
            shutdown,
            || {},
            |text| match serde_json::from_str(&text) {
                Ok(notification) => self.publish(notification),
                Err(error) => tracing::warn!(%error, "unreadable live notification"),
            },
        )
        .await;
    }
}

#[derive(Debug, thiserror::Error)]
pub enum NotifyError {
    #[error(transparent)]
    View(#[from] ViewError),
    #[error(transparent)]
    Push(#[from] PushError),
    #[error(transparent)]
    Decode(#[from] DecodeError),
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The event is not what an order's stream holds.
    #[error("notifier: {0}")]
    Malformed(String),
    /// Another notifier holds this event's claim for about this much longer.
    #[error("another notifier holds this event for {0:?} more")]
    Claimed(Duration),
}

impl Classify for NotifyError {
    fn fault(&self) -> Fault {
        match self {
            Self::View(error) => error.fault(),
            Self::Push(error) => error.fault(),
            Self::Decode(error) => error.fault(),
            Self::Store(error) => error.fault(),
            Self::Malformed(_) => Fault::Permanent,
            // A little after the lease ends, so that the next claim finds it ended.
            Self::Claimed(left) => Fault::Later(*left + Duration::from_millis(20)),
        }
    }
}

pub struct Notifier {
    store: Arc<dyn EventStore>,
    views: Arc<dyn ViewStore>,
    push: Arc<dyn PushSender>,
    /// How long a claim is held before another notifier may take it over.
    lease: Duration,
    /// Each order's customer, as its placement named it: every later event of the order
    /// needs it, and reading it from the stream was a store read per status change.
    customers: Mutex<Recent<Uuid, Uuid>>,
}

/// How long a notifier holds an event's claim: far longer than a push takes (the Notification
/// Hubs adapter gives up within its retry budget, well inside this), so a live notifier is not
/// overtaken, and short enough that a dead one's pushes go out soon after.
pub const CLAIM_LEASE: Duration = Duration::from_secs(30);

/// Orders whose customer the notifier remembers, per generation (`Recent`).
const CUSTOMERS_KEPT: usize = 50_000;

impl Notifier {
    pub fn new(
        store: Arc<dyn EventStore>,
        views: Arc<dyn ViewStore>,
        push: Arc<dyn PushSender>,
    ) -> Self {
        Self {
            store,
            views,
            push,
            lease: CLAIM_LEASE,
            customers: Mutex::new(Recent::new(CUSTOMERS_KEPT)),
        }
    }

    /// Takes over claims after `lease` instead of [`CLAIM_LEASE`] (tests).
    pub fn with_lease(mut self, lease: Duration) -> Self {
        self.lease = lease;
        self
    }

    pub async fn handle(&self, event: &RecordedEvent) -> Result<(), NotifyError> {
        if event.stream_type != order::STREAM_TYPE {
            return Ok(());
        }
        let decoded = decode::<OrderEvent>(event)?;
        let status = decoded.status_after();
        // A placement is the customer's own action: the browser shows it live, the phone is
        // not buzzed.
        let push = status != OrderStatus::Placed;
        let reason = match &decoded {
            OrderEvent::OrderRejected { reason } => Some(reason.as_str().to_owned()),
            OrderEvent::OrderCancelled { reason } => reason.clone(),
            _ => None,
        };
        let claim = format!("notified:{}", event.event_id);
        match self.views.claim(&claim, self.lease).await? {
            Claim::Taken => {}
            Claim::Done => return Ok(()),
            // Another notifier is at it, or died at it: its lease ends, then this one takes over.
            Claim::Held(left) => return Err(NotifyError::Claimed(left)),
        }
        let notification = match self.notification(event, &decoded, status, reason).await {
            Ok(n) => n,
            Err(e) => {
                self.views.unclaim(&claim).await?;
                return Err(e);
            }
        };
        if push && let Err(e) = self.push.send(&notification).await {
            self.views.unclaim(&claim).await?;
            return Err(e.into());
        }
        // Dying here, after the push went and before this, is the one way to push twice: the
        // lease ends, a redelivery sends again, and the device collapses the two (the event id
        // is the notification's collapse key).
        self.views.complete(&claim).await?;
        // Live updates are best effort: a browser that misses one re-reads on reconnect.
        match serde_json::to_string(&notification) {
            Ok(text) => {
                if let Err(error) = self.views.publish(LIVE_CHANNEL, &text).await {
                    tracing::warn!(%error, "live update not published");
                }
            }
            Err(error) => tracing::warn!(%error, "live update not encoded"),
        }
        Ok(())
    }

    async fn notification(
        &self,
        event: &RecordedEvent,
        decoded: &OrderEvent,
        status: OrderStatus,
        reason: Option<String>,
    ) -> Result<Notification, NotifyError> {
        let order_id = stream_key(order::STREAM_TYPE, &event.stream_id)
            .and_then(|k| Uuid::parse_str(k).ok())
            .ok_or_else(|| {
                NotifyError::Malformed(format!("not an order stream: {}", event.stream_id))
            })?;
        let customer_id = match (decoded, self.remembered(order_id)) {
            (_, Some(customer_id)) => customer_id,
            (OrderEvent::OrderPlaced { customer_id, .. }, None) => {
                self.remember(order_id, customer_id.0);
                customer_id.0
            }
            (_, None) => {
                let customer_id = self.customer_of(event).await?;
                self.remember(order_id, customer_id);
                customer_id
            }
        };
        Ok(Notification {
            order_id,
            customer_id,
            status: status.as_str().to_owned(),
            version: event.version,
            reason,
            event_id: event.event_id,
            at: event.occurred_at,
        })
    }

    fn remembered(&self, order_id: Uuid) -> Option<Uuid> {
        self.customers.lock().ok()?.get(&order_id).copied()
    }

    fn remember(&self, order_id: Uuid, customer_id: Uuid) {
        if let Ok(mut customers) = self.customers.lock() {
            customers.insert(order_id, customer_id);
        }
    }

    /// The customer named by the stream's `OrderPlaced`.
    async fn customer_of(&self, event: &RecordedEvent) -> Result<Uuid, NotifyError> {
        let first = self.store.read_stream(&event.stream_id, 1).await?;
        match first.first().map(decode::<OrderEvent>).transpose()? {
            Some(OrderEvent::OrderPlaced { customer_id, .. }) => Ok(customer_id.0),
            _ => Err(NotifyError::Malformed(format!(
                "{} does not start with OrderPlaced",
                event.stream_id
            ))),
        }
    }
}
