//! `PushSender` adapters.
//!
//! - [`embedded`]: records installations in memory and writes each push to the log.
//! - [`notification_hubs`]: Azure Notification Hubs over its REST API (SAS tokens,
//!   installations with per-platform templates, template sends to `customer:{id}`).
//! - [`owners`]: who owns each installation, kept in the view store by both adapters.
//! - [`conformance`]: the port's one conformance suite; every adapter runs it through
//!   [`push_sender_conformance!`](crate::push_sender_conformance).

pub mod conformance;
pub mod embedded;
pub mod notification_hubs;
pub mod owners;

pub use embedded::LogPush;
pub use notification_hubs::{NotificationHubsPush, NotificationHubsSettings, RetryPolicy, SasKey};

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use projections::notifier::PushSender;

    use projections::MemoryViewStore;

    async fn log_push() -> Arc<dyn PushSender> {
        Arc::new(super::LogPush::new(Arc::new(MemoryViewStore::new()), None).expect("a log push"))
    }

    mod conformance {
        crate::push_sender_conformance!(super::log_push());
    }
}
