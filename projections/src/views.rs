//! The read models, each a fold of one stream's events: what `GET /api/orders/{id}` and
//! `GET /api/catalog` answer with.

use chrono::{DateTime, Utc};
use domain::RecordedEvent;
use domain::envelope::{DecodeError, decode};
use domain::inventory::InventoryEvent;
use domain::order::{OrderEvent, OrderStatus};
use domain::values::ShippingAddress;
use serde::{Deserialize, Serialize, de::DeserializeOwned};
use utoipa::ToSchema;
use uuid::Uuid;

/// A read model folded from one stream.
pub trait View: Default + Serialize + DeserializeOwned + Send + Sync {
    /// Applies the stream's next event.
    fn apply(&mut self, event: &RecordedEvent) -> Result<(), DecodeError>;
}

/// An order as customers and operators see it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct OrderView {
    pub order_id: Uuid,
    pub customer_id: Uuid,
    /// `placed`, `confirmed`, `rejected`, `cancelled`, `shipped` or `delivered`: the domain's
    /// `OrderStatus`, kept typed (the JSON is the same word).
    #[schema(value_type = String, example = "confirmed")]
    pub status: OrderStatus,
    pub lines: Vec<OrderViewLine>,
    /// In minor units of `currency`.
    pub total: u64,
    #[schema(example = "EUR")]
    pub currency: String,
    pub shipping_address: Address,
    /// Why the order was rejected (`out_of_stock`, `payment_declined`) or cancelled.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub carrier: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tracking_number: Option<String>,
    /// The same as `tracking_number`, under its name in the first version of the contract,
    /// for the clients written against it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(deprecated)]
    pub tracking: Option<String>,
    /// The order stream's version this view reflects.
    pub version: u64,
    #[serde(with = "domain::time::rfc3339")]
    pub placed_at: DateTime<Utc>,
    #[serde(with = "domain::time::rfc3339")]
    pub updated_at: DateTime<Utc>,
    pub history: Vec<StatusChange>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct OrderViewLine {
    #[schema(example = "TEA-001")]
    pub sku: String,
    pub quantity: u32,
    /// In minor units.
    pub unit_price: u64,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Address {
    pub name: String,
    pub line1: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub line2: Option<String>,
    pub city: String,
    pub postal_code: String,
    /// ISO 3166-1 alpha-2.
    pub country: String,
}

impl From<ShippingAddress> for Address {
    fn from(a: ShippingAddress) -> Self {
        Self {
            name: a.name,
            line1: a.line1,
            line2: a.line2,
            city: a.city,
            postal_code: a.postal_code,
            country: a.country,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct StatusChange {
    #[schema(value_type = String, example = "confirmed")]
    pub status: OrderStatus,
    #[serde(with = "domain::time::rfc3339")]
    pub at: DateTime<Utc>,
}

impl View for OrderView {
    fn apply(&mut self, event: &RecordedEvent) -> Result<(), DecodeError> {
        self.apply_decoded(event, decode::<OrderEvent>(event)?);
        Ok(())
    }
}

impl OrderView {
    /// [`View::apply`] of an event already decoded (a replay decodes each once for every
    /// projection that reads it).
    pub fn apply_decoded(&mut self, event: &RecordedEvent, decoded: OrderEvent) {
        self.status = decoded.status_after();
        match decoded {
            OrderEvent::OrderPlaced {
                order_id,
                customer_id,
                lines,
                currency,
                total,
                shipping_address,
            } => {
                self.order_id = order_id;
                self.customer_id = customer_id.0;
                self.lines = lines
                    .into_iter()
                    .map(|l| OrderViewLine {
                        sku: l.sku.to_string(),
                        quantity: l.quantity.get(),
                        unit_price: l.unit_price,
                    })
                    .collect();
                self.currency = currency.to_string();
                self.total = total;
                self.shipping_address = shipping_address.into();
                self.placed_at = event.occurred_at;
            }
            OrderEvent::OrderRejected { reason } => self.reason = Some(reason.as_str().to_owned()),
            OrderEvent::OrderCancelled { reason } => self.reason = reason,
            OrderEvent::OrderShipped {
                carrier,
                tracking_number,
            } => {
                self.carrier = Some(carrier);
                self.tracking = Some(tracking_number.clone());
                self.tracking_number = Some(tracking_number);
            }
            OrderEvent::OrderConfirmed | OrderEvent::OrderDelivered => {}
        }
        self.version = event.version;
        self.updated_at = event.occurred_at;
        self.history.push(StatusChange {
            status: self.status,
            at: event.occurred_at,
        });
    }
}

/// One SKU of the catalog, with what is left to order.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct CatalogItem {
    #[schema(example = "TEA-001")]
    pub sku: String,
    pub name: String,
    /// In minor units of `currency`.
    pub unit_price: u64,
    pub currency: String,
    /// Units that can still be ordered: on hand minus reserved.
    pub available: u64,
    pub on_hand: u64,
    pub reserved: u64,
}

impl View for CatalogItem {
    fn apply(&mut self, event: &RecordedEvent) -> Result<(), DecodeError> {
        match decode::<InventoryEvent>(event)? {
            InventoryEvent::ProductListed {
                sku,
                name,
                unit_price,
                currency,
            } => {
                self.sku = sku.to_string();
                self.name = name;
                self.unit_price = unit_price;
                self.currency = currency.to_string();
            }
            InventoryEvent::StockRestocked { quantity } => self.on_hand += u64::from(quantity),
            InventoryEvent::StockReserved { quantity, .. } => self.reserved += u64::from(quantity),
            InventoryEvent::StockReleased { quantity, .. } => {
                self.reserved = self.reserved.saturating_sub(u64::from(quantity));
            }
            InventoryEvent::StockShipped { quantity, .. } => {
                self.reserved = self.reserved.saturating_sub(u64::from(quantity));
                self.on_hand = self.on_hand.saturating_sub(u64::from(quantity));
            }
        }
        self.available = self.on_hand.saturating_sub(self.reserved);
        Ok(())
    }
}

/// Folds a whole stream: the view as of its last event.
pub fn fold<V: View>(events: &[RecordedEvent]) -> Result<V, DecodeError> {
    let mut view = V::default();
    for event in events {
        view.apply(event)?;
    }
    Ok(view)
}
