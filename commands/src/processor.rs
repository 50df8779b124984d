//! The order processor: the process manager that turns a placed order into a confirmed or
//! rejected one, and gives stock back when an order will not ship.
//!
//! It keeps no state of its own. Every step is idempotent (a reservation names its order, the
//! payment is keyed by the order, confirming twice records nothing) and every command carries
//! the causing event's id, so a redelivered event, or a crash halfway through, only repeats
//! steps that then do nothing. Stock is reserved on the `Inventory` aggregates, whose
//! expected-version check means no order is confirmed for stock that was not there.

use std::sync::Arc;

use domain::envelope::{DecodeError, decode, stream_key};
use domain::inventory::{InventoryCommand, InventoryError};
use domain::order::{self, Order, OrderCommand, OrderError, OrderEvent, OrderStatus};
use domain::values::RejectionReason;
use domain::{EventMetadata, RecordedEvent};
use uuid::Uuid;

use crate::aggregates::CommandError;
use crate::payment::{PaymentError, PaymentGateway, PaymentOutcome};
use crate::service::Commands;
use eventlog::fault::{Classify, Fault};

pub const SUBSCRIPTION: &str = "order-processor";

/// A step failed: why, and whether it was an engine, a busy stream or the event itself.
#[derive(Debug, thiserror::Error)]
#[error("order processor: {reason}")]
pub struct ProcessError {
    fault: Fault,
    reason: String,
}

impl ProcessError {
    /// The event cannot be processed as it is.
    fn malformed(reason: String) -> Self {
        Self {
            fault: Fault::Permanent,
            reason,
        }
    }

    fn of(error: &(impl Classify + std::fmt::Display)) -> Self {
        Self {
            fault: error.fault(),
            reason: error.to_string(),
        }
    }
}

impl Classify for ProcessError {
    fn fault(&self) -> Fault {
        self.fault
    }
}

impl<E: std::error::Error> From<CommandError<E>> for ProcessError {
    fn from(error: CommandError<E>) -> Self {
        Self::of(&error)
    }
}

impl From<PaymentError> for ProcessError {
    fn from(error: PaymentError) -> Self {
        Self::of(&error)
    }
}

impl From<DecodeError> for ProcessError {
    fn from(error: DecodeError) -> Self {
        Self::of(&error)
    }
}

pub struct OrderProcessor {
    commands: Arc<Commands>,
    payments: Arc<dyn PaymentGateway>,
}

impl OrderProcessor {
    pub fn new(commands: Arc<Commands>, payments: Arc<dyn PaymentGateway>) -> Self {
        Self { commands, payments }
    }

    /// Reacts to one event from the topic; events it has no business with are ignored.
    #[tracing::instrument(skip_all, fields(event = %event.event_type, stream = %event.stream_id))]
    pub async fn handle(&self, event: &RecordedEvent) -> Result<(), ProcessError> {
        if event.stream_type != order::STREAM_TYPE {
            return Ok(());
        }
        let order_id = stream_key(order::STREAM_TYPE, &event.stream_id)
            .and_then(|key| Uuid::parse_str(key).ok())
            .ok_or_else(|| {
                ProcessError::malformed(format!("not an order stream: {}", event.stream_id))
            })?;
        let metadata = EventMetadata {
            correlation_id: event.metadata.correlation_id,
            causation_id: Some(event.event_id),
            actor: format!("service:{SUBSCRIPTION}"),
            traceparent: event.metadata.traceparent.clone(),
            ..Default::default()
        };
        let step = Step {
            commands: &self.commands,
            payments: self.payments.as_ref(),
            order_id,
            metadata,
            event,
        };
        match decode::<OrderEvent>(event)? {
            OrderEvent::OrderPlaced { .. } => step.decide().await,
            OrderEvent::OrderCancelled { .. } => {
                let (_, order) = step.load().await?;
                step.release(&order).await?;
                step.refund().await
            }
            OrderEvent::OrderShipped { .. } => step.ship_stock().await,
            _ => Ok(()),
        }
    }
}

/// One event's worth of work on one order.
struct Step<'a> {
    commands: &'a Commands,
    payments: &'a dyn PaymentGateway,
    order_id: Uuid,
    metadata: EventMetadata,
    /// The order's event this step reacts to.
    event: &'a RecordedEvent,
}

impl Step<'_> {
    /// The order as of the event or later, without reading the store when this process has
    /// seen the event or it is the next one: for what never changes after the placement
    /// (the lines), not for the order's status.
    async fn load(&self) -> Result<(u64, Arc<Order>), ProcessError> {
        Ok(self.commands.orders.load_after(self.event).await?)
    }

    /// Reserve every line, take payment, confirm; or release and reject.
    async fn decide(&self) -> Result<(), ProcessError> {
        // The status as stored, not as folded from the event: a redelivered placement (after
        // a restart, or to another processor) of an order since rejected or cancelled must
        // find it so before it reserves stock and takes payment again.
        let (_, order) = self
            .commands
            .orders
            .load(&self.order_id.to_string())
            .await?;
        match order.status {
            OrderStatus::Placed => {}
            OrderStatus::Cancelled => {
                // Cancelled while a processor was deciding it, and that processor failed
                // before it could undo its work: it may have reserved stock after the
                // cancellation's own release ran, or taken the payment. Both undo steps do
                // nothing when there is nothing to undo.
                self.release(&order).await?;
                return self.refund().await;
            }
            // Already decided: a redelivery has nothing left to do (a rejected order's stock
            // was released before the rejection was recorded).
            _ => return Ok(()),
        }
        if !self.reserve(&order).await? {
            self.release(&order).await?;
            return self.reject(RejectionReason::OutOfStock).await;
        }
        let currency = order.currency.clone().ok_or_else(|| {
            ProcessError::malformed(format!("order {} has no currency", self.order_id))
        })?;
        let outcome = self
            .payments
            .capture(&self.payment_key(), order.total, &currency)
            .await?;
        if let PaymentOutcome::Declined { reason } = outcome {
            tracing::info!(order_id = %self.order_id, %reason, "payment declined");
            self.release(&order).await?;
            return self.reject(RejectionReason::PaymentDeclined).await;
        }
        match self.order(OrderCommand::Confirm).await {
            Err(CommandError::Rejected(OrderError::InvalidTransition { .. })) => {
                // Cancelled while we worked: undo what we did.
                self.release(&order).await?;
                self.refund().await
            }
            other => other.map(|_| ()).map_err(Into::into),
        }
    }

    /// `true` when every line got its stock.
    async fn reserve(&self, order: &Order) -> Result<bool, ProcessError> {
        for line in &order.lines {
            let command = InventoryCommand::Reserve {
                order_id: self.order_id,
                quantity: line.quantity.get(),
            };
            match self.inventory(line.sku.as_str(), command).await {
                Ok(()) => {}
                Err(CommandError::Rejected(
                    InventoryError::InsufficientStock { .. } | InventoryError::NotListed,
                )) => return Ok(false),
                Err(other) => return Err(other.into()),
            }
        }
        Ok(true)
    }

    /// Gives back whatever this order holds; lines that hold nothing record nothing.
    async fn release(&self, order: &Order) -> Result<(), ProcessError> {
        for line in &order.lines {
            let command = InventoryCommand::Release {
                order_id: self.order_id,
            };
            self.inventory(line.sku.as_str(), command).await?;
        }
        Ok(())
    }

    async fn ship_stock(&self) -> Result<(), ProcessError> {
        let (_, order) = self.load().await?;
        for line in &order.lines {
            let command = InventoryCommand::Ship {
                order_id: self.order_id,
            };
            self.inventory(line.sku.as_str(), command).await?;
        }
        Ok(())
    }

    async fn reject(&self, reason: RejectionReason) -> Result<(), ProcessError> {
        match self.order(OrderCommand::Reject { reason }).await {
            // Cancelled meanwhile: nothing to reject, stock is already released.
            Ok(_) | Err(CommandError::Rejected(OrderError::InvalidTransition { .. })) => Ok(()),
            Err(other) => Err(other.into()),
        }
    }

    async fn refund(&self) -> Result<(), ProcessError> {
        Ok(self.payments.refund(&self.payment_key()).await?)
    }

    fn payment_key(&self) -> String {
        format!("order-{}", self.order_id)
    }

    async fn order(
        &self,
        command: OrderCommand,
    ) -> Result<crate::aggregates::Handled, CommandError<OrderError>> {
        self.commands
            .orders
            .execute(&self.order_id.to_string(), command, &self.metadata)
            .await
    }

    async fn inventory(
        &self,
        sku: &str,
        command: InventoryCommand,
    ) -> Result<(), CommandError<InventoryError>> {
        self.commands
            .inventory
            .execute(sku, command, &self.metadata)
            .await
            .map(|_| ())
    }
}

#[cfg(test)]
mod tests;
