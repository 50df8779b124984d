//! What a failure means for whoever retries it: an engine that is down (wait, the message is
//! not to blame), a message that can succeed a little later (a lease held elsewhere, a busy
//! stream), or a message that failed on its own account (count it toward parking).
//!
//! Consumers of the topic choose with this between waiting out an outage, which must not
//! spend a message's delivery attempts, and retrying or dead-lettering the message.

use std::fmt;
use std::time::Duration;

/// An engine a worker depends on. Each gets its own circuit breaker in a consumer, and
/// `/ready` names the ones found down.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Engine {
    /// The event store.
    Store,
    /// The view store (Redis, or memory embedded).
    Cache,
    /// The topic.
    Topic,
    /// The push service (Notification Hubs).
    Push,
    /// The payment gateway.
    Payments,
}

impl Engine {
    pub const ALL: [Self; 5] = [
        Self::Store,
        Self::Cache,
        Self::Topic,
        Self::Push,
        Self::Payments,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Store => "event_store",
            Self::Cache => "view_store",
            Self::Topic => "topic",
            Self::Push => "push",
            Self::Payments => "payments",
        }
    }
}

impl fmt::Display for Engine {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How a failure is to be retried.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// The engine is unavailable; the same work succeeds once it is back.
    Outage(Engine),
    /// This message can succeed after about this long (a claim another worker holds, a
    /// stream other writers kept winning). Not the message's fault either.
    Later(Duration),
    /// The message failed on its own account, for a reason not known to be final (a
    /// handler's plain error): retried after the topic's delay, counted, and parked once its
    /// attempts are spent.
    Message,
    /// The message can never be handled as it is (undecodable, corrupt data, refused by a rule
    /// it should not break): retrying cannot help until someone changes something, so it is
    /// parked at once for an operator, and an API answers 500, not "retry shortly".
    Permanent,
}

impl Fault {
    /// Whether trying the same work again can succeed without anyone changing anything: the
    /// one question consumers (retry or park at once) and the API (503 or 500) ask.
    pub fn is_retryable(self) -> bool {
        !matches!(self, Self::Permanent)
    }
}

/// Errors that know what kind of failure they are.
pub trait Classify {
    fn fault(&self) -> Fault;
}

/// A handler's failure: what kind, and what to log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    pub fault: Fault,
    pub reason: String,
}

impl Failure {
    /// A failure of the message itself.
    pub fn message(reason: impl Into<String>) -> Self {
        Self {
            fault: Fault::Message,
            reason: reason.into(),
        }
    }
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.reason)
    }
}

/// A reason alone is a failure of the message (what a handler without typed errors says).
impl From<String> for Failure {
    fn from(reason: String) -> Self {
        Self::message(reason)
    }
}

impl From<&str> for Failure {
    fn from(reason: &str) -> Self {
        Self::message(reason)
    }
}

impl<E: Classify + fmt::Display> From<E> for Failure {
    fn from(error: E) -> Self {
        Self {
            fault: error.fault(),
            reason: error.to_string(),
        }
    }
}

/// How long a message waits after other writers kept winning its stream.
pub const CONTENTION_PAUSE: Duration = Duration::from_millis(50);

impl Classify for crate::store::StoreError {
    fn fault(&self) -> Fault {
        use crate::store::StoreError;
        match self {
            StoreError::Unavailable(_) => Fault::Outage(Engine::Store),
            StoreError::Conflict { .. } => Fault::Later(CONTENTION_PAUSE),
            StoreError::Corrupt(_) => Fault::Permanent,
        }
    }
}

impl Classify for domain::envelope::DecodeError {
    fn fault(&self) -> Fault {
        Fault::Permanent
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_message_failure_is_not_retryable() {
        assert!(Fault::Outage(Engine::Store).is_retryable());
        assert!(Fault::Later(Duration::from_secs(1)).is_retryable());
        assert!(Fault::Message.is_retryable(), "counted, then parked");
        assert!(!Fault::Permanent.is_retryable());
    }
}
