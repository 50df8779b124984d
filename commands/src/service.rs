//! The commands people send (place, cancel, ship, deliver, restock), as the HTTP layer calls
//! them. One [`Commands`] per process is shared by the API and the order processor, so both
//! take turns on the same per-stream locks and reuse the same cached state.

use std::sync::Arc;

use domain::EventMetadata;
use domain::envelope::stream_id;
use domain::inventory::{Inventory, InventoryCommand, InventoryError};
use domain::order::{Order, OrderCommand, OrderError, OrderLine};
use domain::values::{
    Currency, CustomerId, FieldError, MinorUnits, Quantity, ShippingAddress, Sku,
};
use uuid::Uuid;

use crate::aggregates::{Aggregates, CommandError, Handled};
use domain::envelope::DecodeError;
use eventlog::fault::CONTENTION_PAUSE;
use eventlog::{Classify, EventStore, Fault, StoreError};

/// A validated order request.
#[derive(Debug, Clone)]
pub struct PlaceOrder {
    pub customer_id: CustomerId,
    /// The client's `Idempotency-Key`, if it sent one.
    pub idempotency_key: Option<String>,
    /// A digest of the request body, to tell a retry from a reused key.
    pub request_hash: String,
    pub lines: Vec<(Sku, Quantity)>,
    pub shipping_address: ShippingAddress,
    pub metadata: EventMetadata,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Placed {
    pub order_id: Uuid,
    pub version: u64,
}

/// Why a command was not carried out. The HTTP layer maps each to its status code.
#[derive(Debug, thiserror::Error)]
pub enum CommandFailure {
    /// The request names things that do not exist or do not fit (422).
    #[error("invalid request")]
    Invalid(Vec<FieldError>),
    #[error(transparent)]
    Order(OrderError),
    #[error(transparent)]
    Inventory(InventoryError),
    /// The idempotency key was used before with another request (409).
    #[error("this Idempotency-Key was already used with a different request")]
    IdempotencyMismatch,
    #[error(transparent)]
    Store(StoreError),
    /// A stored event this build cannot read.
    #[error(transparent)]
    Decode(DecodeError),
    /// Other writers kept winning the stream.
    #[error("stream {0} is too busy, try again")]
    Contention(String),
}

impl Classify for CommandFailure {
    /// What the API answers by: a rule broken is the request's, an engine down or a busy
    /// stream can succeed on a retry, and corrupt data cannot.
    fn fault(&self) -> Fault {
        match self {
            Self::Store(error) => error.fault(),
            Self::Decode(error) => error.fault(),
            Self::Contention(_) => Fault::Later(CONTENTION_PAUSE),
            Self::Invalid(_) | Self::Order(_) | Self::Inventory(_) | Self::IdempotencyMismatch => {
                Fault::Permanent
            }
        }
    }
}

impl<E: std::error::Error> From<CommandError<E>> for CommandFailure
where
    CommandFailure: From<E>,
{
    fn from(error: CommandError<E>) -> Self {
        match error {
            CommandError::Rejected(e) => e.into(),
            CommandError::Store(e) => Self::Store(e),
            CommandError::Decode(e) => Self::Decode(e),
            CommandError::Contention(stream) => Self::Contention(stream),
        }
    }
}

impl From<OrderError> for CommandFailure {
    fn from(error: OrderError) -> Self {
        Self::Order(error)
    }
}

impl From<InventoryError> for CommandFailure {
    fn from(error: InventoryError) -> Self {
        Self::Inventory(error)
    }
}

impl From<StoreError> for CommandFailure {
    fn from(error: StoreError) -> Self {
        Self::Store(error)
    }
}

pub struct Commands {
    pub orders: Aggregates<Order>,
    pub inventory: Aggregates<Inventory>,
}

impl Commands {
    pub fn new(store: Arc<dyn EventStore>) -> Arc<Self> {
        Arc::new(Self {
            orders: Aggregates::new(store.clone()),
            inventory: Aggregates::new(store),
        })
    }

    /// The order id a customer's idempotency key stands for: the same key always names the
    /// same stream, so a retry meets the order it already placed, durably and without a
    /// separate key table.
    pub fn order_id_for(customer: CustomerId, key: Option<&str>) -> Uuid {
        match key {
            Some(key) => Uuid::new_v5(&customer.0, format!("order/{key}").as_bytes()),
            None => Uuid::now_v7(),
        }
    }

    /// Prices the lines from the catalog (the Inventory aggregates, not a cache) and places the
    /// order. A retry with the same key and body answers as the first call did.
    pub async fn place_order(&self, request: PlaceOrder) -> Result<Placed, CommandFailure> {
        let order_id = Self::order_id_for(request.customer_id, request.idempotency_key.as_deref());
        let (lines, currency) = self.price(&request.lines).await?;
        let mut metadata = request.metadata.clone();
        metadata.command_id = request.idempotency_key.clone();
        metadata.request_hash = Some(request.request_hash.clone());
        let command = OrderCommand::Place {
            order_id,
            customer_id: request.customer_id,
            lines,
            currency,
            shipping_address: request.shipping_address,
        };
        match self
            .orders
            .execute(&order_id.to_string(), command, &metadata)
            .await
        {
            Ok(handled) => Ok(Placed {
                order_id,
                version: handled.version,
            }),
            Err(CommandError::Rejected(OrderError::AlreadyPlaced)) => {
                self.replay_placement(order_id, &request.request_hash).await
            }
            Err(other) => Err(other.into()),
        }
    }

    /// The answer to a repeated placement: the original one if the body is the same.
    async fn replay_placement(&self, order_id: Uuid, hash: &str) -> Result<Placed, CommandFailure> {
        let stream = stream_id(domain::order::STREAM_TYPE, order_id);
        let first = self.orders.store().read_stream(&stream, 1).await?;
        let placed = first.first().ok_or(CommandFailure::IdempotencyMismatch)?;
        if placed.metadata.request_hash.as_deref() == Some(hash) {
            Ok(Placed {
                order_id,
                version: placed.version,
            })
        } else {
            Err(CommandFailure::IdempotencyMismatch)
        }
    }

    async fn price(
        &self,
        requested: &[(Sku, Quantity)],
    ) -> Result<(Vec<OrderLine>, Currency), CommandFailure> {
        let mut lines = Vec::with_capacity(requested.len());
        let mut errors = Vec::new();
        let mut currency: Option<Currency> = None;
        for (i, (sku, quantity)) in requested.iter().enumerate() {
            // A listing is never changed once recorded: the state this process has seen will
            // do, and the store is read only for a SKU it has not seen listed.
            let (_, item) = self
                .inventory
                .load_known(sku.as_str(), |item| item.currency.is_some())
                .await?;
            let Some(item_currency) = item.currency.clone() else {
                errors.push(FieldError::new(
                    format!("lines[{i}].sku"),
                    format!("unknown SKU {sku}"),
                ));
                continue;
            };
            match &currency {
                Some(c) if *c != item_currency => errors.push(FieldError::new(
                    format!("lines[{i}].sku"),
                    format!(
                        "is priced in {item_currency}, the order in {c}; place separate orders"
                    ),
                )),
                _ => currency = Some(item_currency),
            }
            lines.push(OrderLine {
                sku: sku.clone(),
                quantity: *quantity,
                unit_price: item.unit_price,
            });
        }
        match currency {
            Some(currency) if errors.is_empty() => Ok((lines, currency)),
            _ if errors.is_empty() => Err(CommandFailure::Invalid(vec![FieldError::new(
                "lines",
                "must have at least one line",
            )])),
            _ => Err(CommandFailure::Invalid(errors)),
        }
    }

    pub async fn order(
        &self,
        order_id: Uuid,
        command: OrderCommand,
        metadata: &EventMetadata,
    ) -> Result<Handled, CommandFailure> {
        Ok(self
            .orders
            .execute(&order_id.to_string(), command, metadata)
            .await?)
    }

    pub async fn list_product(
        &self,
        sku: Sku,
        name: &str,
        unit_price: MinorUnits,
        currency: Currency,
        metadata: &EventMetadata,
    ) -> Result<Handled, CommandFailure> {
        let command = InventoryCommand::List {
            sku: sku.clone(),
            name: name.to_owned(),
            unit_price,
            currency,
        };
        Ok(self
            .inventory
            .execute(sku.as_str(), command, metadata)
            .await?)
    }

    pub async fn restock(
        &self,
        sku: &Sku,
        quantity: u32,
        metadata: &EventMetadata,
    ) -> Result<Handled, CommandFailure> {
        Ok(self
            .inventory
            .execute(
                sku.as_str(),
                InventoryCommand::Restock { quantity },
                metadata,
            )
            .await?)
    }
}
