//! The sandbox gateway: declines any amount above [`DECLINE_ABOVE`] minor units and approves
//! the rest, so tests and demos can produce either outcome on purpose. Answers are remembered
//! per idempotency key, as a real gateway's are.

use std::collections::{HashMap, HashSet};
use std::sync::Mutex;

use async_trait::async_trait;
use commands::payment::{PaymentError, PaymentGateway, PaymentOutcome};
use domain::values::{Currency, MinorUnits};
use uuid::Uuid;

pub const DECLINE_ABOVE: MinorUnits = 100_000;

#[derive(Default)]
pub struct SandboxPayments {
    captures: Mutex<HashMap<String, PaymentOutcome>>,
    refunds: Mutex<HashSet<String>>,
}

impl SandboxPayments {
    pub fn new() -> Self {
        Self::default()
    }

    /// How many distinct keys were captured (approved), for tests.
    pub fn captured(&self) -> usize {
        self.captures.lock().map_or(0, |c| {
            c.values()
                .filter(|o| matches!(o, PaymentOutcome::Captured { .. }))
                .count()
        })
    }

    pub fn refunded(&self) -> usize {
        self.refunds.lock().map_or(0, |r| r.len())
    }
}

fn poisoned<T>(_: T) -> PaymentError {
    PaymentError::Unavailable("sandbox state poisoned".into())
}

#[async_trait]
impl PaymentGateway for SandboxPayments {
    async fn capture(
        &self,
        key: &str,
        amount: MinorUnits,
        currency: &Currency,
    ) -> Result<PaymentOutcome, PaymentError> {
        let mut captures = self.captures.lock().map_err(poisoned)?;
        let outcome = captures.entry(key.to_owned()).or_insert_with(|| {
            if amount > DECLINE_ABOVE {
                PaymentOutcome::Declined {
                    reason: format!(
                        "the sandbox declines totals above {DECLINE_ABOVE} minor units of {currency}"
                    ),
                }
            } else {
                PaymentOutcome::Captured {
                    payment_id: Uuid::now_v7().to_string(),
                }
            }
        });
        Ok(outcome.clone())
    }

    async fn refund(&self, key: &str) -> Result<(), PaymentError> {
        let captured = matches!(
            self.captures.lock().map_err(poisoned)?.get(key),
            Some(PaymentOutcome::Captured { .. })
        );
        if captured {
            self.refunds
                .lock()
                .map_err(poisoned)?
                .insert(key.to_owned());
        }
        Ok(())
    }
}
