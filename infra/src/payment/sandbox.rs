//! The sandbox gateway: declines any amount above [`DECLINE_ABOVE`] minor units and approves
//! the rest, so tests and demos can produce either outcome on purpose.
//!
//! Like a real gateway it remembers each answer by idempotency key, so a retried capture from
//! any processor instance gets the first answer. The memory is the view store (Redis when
//! processes are distributed), written set-if-absent.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use async_trait::async_trait;
use commands::payment::{PaymentError, PaymentGateway, PaymentOutcome};
use domain::values::{Currency, MinorUnits};
use projections::view_store::{Doc, ViewStore};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

pub const DECLINE_ABOVE: MinorUnits = 100_000;
/// Where a capture's answer is remembered: `payment:{key}`.
pub const PAYMENT_PREFIX: &str = "payment:";
/// Where a refund is remembered: `refund:{key}`.
pub const REFUND_PREFIX: &str = "refund:";

#[derive(Serialize, Deserialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
enum Stored {
    Captured { payment_id: String },
    Declined { reason: String },
}

pub struct SandboxPayments {
    memory: Arc<dyn ViewStore>,
    captured: AtomicUsize,
    refunded: AtomicUsize,
}

impl SandboxPayments {
    pub fn new(memory: Arc<dyn ViewStore>) -> Self {
        Self {
            memory,
            captured: AtomicUsize::new(0),
            refunded: AtomicUsize::new(0),
        }
    }

    /// Captures this instance recorded first (not repeats), for tests.
    pub fn captured(&self) -> usize {
        self.captured.load(Ordering::SeqCst)
    }

    /// Refunds this instance recorded first, for tests.
    pub fn refunded(&self) -> usize {
        self.refunded.load(Ordering::SeqCst)
    }

    /// Stores `outcome` under `key` unless one is there; returns the one that is.
    async fn remember(&self, key: &str, outcome: Stored) -> Result<(Stored, bool), PaymentError> {
        let body = serde_json::to_string(&outcome).map_err(unavailable)?;
        let doc = Doc { version: 1, body };
        if self.memory.put(key, 0, doc).await.map_err(unavailable)? {
            return Ok((outcome, true));
        }
        let stored = self
            .memory
            .get(key)
            .await
            .map_err(unavailable)?
            .ok_or_else(|| PaymentError::Unavailable(format!("{key} vanished")))?;
        Ok((
            serde_json::from_str(&stored.body).map_err(unavailable)?,
            false,
        ))
    }
}

fn unavailable(error: impl std::fmt::Display) -> PaymentError {
    PaymentError::Unavailable(format!("sandbox memory: {error}"))
}

#[async_trait]
impl PaymentGateway for SandboxPayments {
    async fn capture(
        &self,
        key: &str,
        amount: MinorUnits,
        currency: &Currency,
    ) -> Result<PaymentOutcome, PaymentError> {
        let decision = if amount > DECLINE_ABOVE {
            Stored::Declined {
                reason: format!(
                    "the sandbox declines totals above {DECLINE_ABOVE} minor units of {currency}"
                ),
            }
        } else {
            Stored::Captured {
                payment_id: Uuid::now_v7().to_string(),
            }
        };
        let (stored, first) = self
            .remember(&format!("{PAYMENT_PREFIX}{key}"), decision)
            .await?;
        Ok(match stored {
            Stored::Captured { payment_id } => {
                if first {
                    self.captured.fetch_add(1, Ordering::SeqCst);
                }
                PaymentOutcome::Captured { payment_id }
            }
            Stored::Declined { reason } => PaymentOutcome::Declined { reason },
        })
    }

    async fn refund(&self, key: &str) -> Result<(), PaymentError> {
        let captured = match self.memory.get(&format!("{PAYMENT_PREFIX}{key}")).await {
            Ok(Some(doc)) => matches!(serde_json::from_str(&doc.body), Ok(Stored::Captured { .. })),
            Ok(None) => false,
            Err(error) => return Err(unavailable(error)),
        };
        if !captured {
            return Ok(());
        }
        let refund = Stored::Declined {
            reason: "refunded".into(),
        };
        if self
            .remember(&format!("{REFUND_PREFIX}{key}"), refund)
            .await?
            .1
        {
            self.refunded.fetch_add(1, Ordering::SeqCst);
            tracing::info!(%key, "payment refunded (sandbox)");
        }
        Ok(())
    }
}
