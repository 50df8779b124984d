//! The payment port the order processor takes money through.

use async_trait::async_trait;
use domain::values::{Currency, MinorUnits};
use eventlog::{Classify, Engine, Fault};

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PaymentOutcome {
    Captured { payment_id: String },
    Declined { reason: String },
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PaymentError {
    /// The gateway could not be reached or failed; the same call may be retried.
    #[error("payment gateway unavailable: {0}")]
    Unavailable(String),
}

impl Classify for PaymentError {
    fn fault(&self) -> Fault {
        match self {
            Self::Unavailable(_) => Fault::Outage(Engine::Payments),
        }
    }
}

/// Authorize-and-capture and refund, each idempotent by `key`: the same key always gets the
/// first answer, so a retried capture never charges twice.
#[async_trait]
pub trait PaymentGateway: Send + Sync + 'static {
    async fn capture(
        &self,
        key: &str,
        amount: MinorUnits,
        currency: &Currency,
    ) -> Result<PaymentOutcome, PaymentError>;

    /// Gives back a captured payment; refunding what was never captured does nothing.
    async fn refund(&self, key: &str) -> Result<(), PaymentError>;
}
