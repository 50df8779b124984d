//! The Inventory aggregate: one SKU's catalog entry and its stock.
//!
//! Stock is held per order: a reservation names the order, so reserving twice for one order
//! and releasing an order that holds nothing are both harmless. That is what lets the order
//! processor retry any step after a crash. `available = on_hand - reserved` never goes below 0.

use cqrs_es::{Aggregate, DomainEvent, event_sink::EventSink};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::reservations::Reservations;
use crate::values::{Currency, MAX_UNIT_PRICE, MinorUnits, Sku};

pub const STREAM_TYPE: &str = "inventory";

/// The most units one restock may add.
pub const MAX_RESTOCK: u32 = 1_000_000;

#[derive(Debug, Clone, PartialEq)]
pub enum InventoryCommand {
    /// Puts a SKU in the catalog (once).
    List {
        sku: Sku,
        name: String,
        unit_price: MinorUnits,
        currency: Currency,
    },
    Restock {
        quantity: u32,
    },
    Reserve {
        order_id: Uuid,
        quantity: u32,
    },
    Release {
        order_id: Uuid,
    },
    /// The reserved units left the warehouse with the order.
    Ship {
        order_id: Uuid,
    },
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum InventoryEvent {
    ProductListed {
        sku: Sku,
        name: String,
        unit_price: MinorUnits,
        currency: Currency,
    },
    StockRestocked {
        quantity: u32,
    },
    StockReserved {
        order_id: Uuid,
        quantity: u32,
    },
    StockReleased {
        order_id: Uuid,
        quantity: u32,
    },
    StockShipped {
        order_id: Uuid,
        quantity: u32,
    },
}

impl DomainEvent for InventoryEvent {
    fn event_type(&self) -> String {
        match self {
            Self::ProductListed { .. } => "ProductListed",
            Self::StockRestocked { .. } => "StockRestocked",
            Self::StockReserved { .. } => "StockReserved",
            Self::StockReleased { .. } => "StockReleased",
            Self::StockShipped { .. } => "StockShipped",
        }
        .to_owned()
    }

    fn event_version(&self) -> String {
        crate::upcast::current_version(&self.event_type()).to_string()
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InventoryError {
    #[error("the SKU is not in the catalog")]
    NotListed,
    #[error("the SKU is already in the catalog")]
    AlreadyListed,
    #[error("a product name must be 1-100 printable characters")]
    InvalidName,
    #[error("a unit price must be between 1 and {MAX_UNIT_PRICE} minor units")]
    InvalidPrice,
    #[error("a restock adds between 1 and {MAX_RESTOCK} units")]
    InvalidRestock,
    #[error("a reservation is for at least one unit")]
    InvalidReservation,
    #[error("only {available} available, {requested} requested")]
    InsufficientStock { requested: u32, available: u32 },
}

impl InventoryError {
    pub fn code(&self) -> &'static str {
        match self {
            Self::NotListed => "sku_not_listed",
            Self::AlreadyListed => "sku_already_listed",
            Self::InvalidName => "invalid_name",
            Self::InvalidPrice => "invalid_price",
            Self::InvalidRestock => "invalid_restock",
            Self::InvalidReservation => "invalid_reservation",
            Self::InsufficientStock { .. } => "insufficient_stock",
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Inventory {
    pub sku: Option<Sku>,
    pub name: String,
    pub unit_price: MinorUnits,
    pub currency: Option<Currency>,
    pub on_hand: u64,
    /// Units held for orders that are not yet shipped, by order.
    pub reservations: Reservations,
}

impl Inventory {
    pub fn reserved(&self) -> u64 {
        self.reservations.units()
    }

    pub fn available(&self) -> u64 {
        self.on_hand.saturating_sub(self.reserved())
    }

    fn decide(&self, command: InventoryCommand) -> Result<Option<InventoryEvent>, InventoryError> {
        if self.sku.is_none() && !matches!(command, InventoryCommand::List { .. }) {
            return Err(InventoryError::NotListed);
        }
        match command {
            InventoryCommand::List {
                sku,
                name,
                unit_price,
                currency,
            } => self.list(sku, &name, unit_price, currency),
            InventoryCommand::Restock { quantity } => {
                if !(1..=MAX_RESTOCK).contains(&quantity) {
                    return Err(InventoryError::InvalidRestock);
                }
                Ok(Some(InventoryEvent::StockRestocked { quantity }))
            }
            InventoryCommand::Reserve { order_id, quantity } => self.reserve(order_id, quantity),
            InventoryCommand::Release { order_id } => Ok(self
                .reservations
                .get(&order_id)
                .map(|quantity| InventoryEvent::StockReleased { order_id, quantity })),
            InventoryCommand::Ship { order_id } => Ok(self
                .reservations
                .get(&order_id)
                .map(|quantity| InventoryEvent::StockShipped { order_id, quantity })),
        }
    }

    /// A product is listed once, with a name of 1-100 characters and a price in range.
    fn list(
        &self,
        sku: Sku,
        name: &str,
        unit_price: u64,
        currency: Currency,
    ) -> Result<Option<InventoryEvent>, InventoryError> {
        if self.sku.is_some() {
            return Err(InventoryError::AlreadyListed);
        }
        let name = name.trim().to_owned();
        if !(1..=100).contains(&name.chars().count()) || name.chars().any(char::is_control) {
            return Err(InventoryError::InvalidName);
        }
        if !(1..=MAX_UNIT_PRICE).contains(&unit_price) {
            return Err(InventoryError::InvalidPrice);
        }
        Ok(Some(InventoryEvent::ProductListed {
            sku,
            name,
            unit_price,
            currency,
        }))
    }

    /// Reserving for an order that holds a reservation already records nothing; otherwise
    /// only what is available can be reserved.
    fn reserve(
        &self,
        order_id: Uuid,
        quantity: u32,
    ) -> Result<Option<InventoryEvent>, InventoryError> {
        if quantity == 0 {
            return Err(InventoryError::InvalidReservation);
        }
        if self.reservations.contains(&order_id) {
            return Ok(None);
        }
        let available = self.available();
        if u64::from(quantity) > available {
            return Err(InventoryError::InsufficientStock {
                requested: quantity,
                available: u32::try_from(available).unwrap_or(u32::MAX),
            });
        }
        Ok(Some(InventoryEvent::StockReserved { order_id, quantity }))
    }
}

impl Aggregate for Inventory {
    const TYPE: &'static str = STREAM_TYPE;
    type Command = InventoryCommand;
    type Event = InventoryEvent;
    type Error = InventoryError;
    type Services = ();

    async fn handle(
        &mut self,
        command: Self::Command,
        _services: &Self::Services,
        sink: &EventSink<Self>,
    ) -> Result<(), Self::Error> {
        if let Some(event) = self.decide(command)? {
            sink.write(event, self).await;
        }
        Ok(())
    }

    fn apply(&mut self, event: Self::Event) {
        match event {
            InventoryEvent::ProductListed {
                sku,
                name,
                unit_price,
                currency,
            } => {
                self.sku = Some(sku);
                self.name = name;
                self.unit_price = unit_price;
                self.currency = Some(currency);
            }
            InventoryEvent::StockRestocked { quantity } => self.on_hand += u64::from(quantity),
            InventoryEvent::StockReserved { order_id, quantity } => {
                self.reservations.insert(order_id, quantity);
            }
            InventoryEvent::StockReleased { order_id, .. } => {
                self.reservations.remove(&order_id);
            }
            InventoryEvent::StockShipped { order_id, quantity } => {
                self.reservations.remove(&order_id);
                self.on_hand = self.on_hand.saturating_sub(u64::from(quantity));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use cqrs_es::test::TestFramework;

    use super::*;

    type Given = TestFramework<Inventory>;

    fn sku() -> Sku {
        Sku::parse("TEA-001").unwrap()
    }

    fn listed() -> InventoryEvent {
        InventoryEvent::ProductListed {
            sku: sku(),
            name: "Green tea".into(),
            unit_price: 450,
            currency: Currency::parse("EUR").unwrap(),
        }
    }

    fn order(n: u128) -> Uuid {
        Uuid::from_u128(n)
    }

    fn stock(quantity: u32) -> InventoryEvent {
        InventoryEvent::StockRestocked { quantity }
    }

    fn reserved(n: u128, quantity: u32) -> InventoryEvent {
        InventoryEvent::StockReserved {
            order_id: order(n),
            quantity,
        }
    }

    #[test]
    fn a_sku_is_listed_once() {
        Given::with(())
            .given_no_previous_events()
            .when(InventoryCommand::List {
                sku: sku(),
                name: " Green tea ".into(),
                unit_price: 450,
                currency: Currency::parse("EUR").unwrap(),
            })
            .then_expect_events(vec![listed()]);
        Given::with(())
            .given(vec![listed()])
            .when(InventoryCommand::List {
                sku: sku(),
                name: "Green tea".into(),
                unit_price: 450,
                currency: Currency::parse("EUR").unwrap(),
            })
            .then_expect_error(InventoryError::AlreadyListed);
    }

    #[test]
    fn a_listing_needs_a_name_and_a_price() {
        Given::with(())
            .given_no_previous_events()
            .when(InventoryCommand::List {
                sku: sku(),
                name: "  ".into(),
                unit_price: 450,
                currency: Currency::parse("EUR").unwrap(),
            })
            .then_expect_error(InventoryError::InvalidName);
        Given::with(())
            .given_no_previous_events()
            .when(InventoryCommand::List {
                sku: sku(),
                name: "Tea".into(),
                unit_price: 0,
                currency: Currency::parse("EUR").unwrap(),
            })
            .then_expect_error(InventoryError::InvalidPrice);
    }

    #[test]
    fn an_unlisted_sku_has_no_stock_to_touch() {
        Given::with(())
            .given_no_previous_events()
            .when(InventoryCommand::Restock { quantity: 5 })
            .then_expect_error(InventoryError::NotListed);
    }

    #[test]
    fn restock_adds_between_1_and_a_million_units() {
        Given::with(())
            .given(vec![listed()])
            .when(InventoryCommand::Restock { quantity: 5 })
            .then_expect_events(vec![stock(5)]);
        Given::with(())
            .given(vec![listed()])
            .when(InventoryCommand::Restock { quantity: 0 })
            .then_expect_error(InventoryError::InvalidRestock);
        Given::with(())
            .given(vec![listed()])
            .when(InventoryCommand::Restock {
                quantity: MAX_RESTOCK + 1,
            })
            .then_expect_error(InventoryError::InvalidRestock);
    }

    #[test]
    fn stock_is_reserved_while_available() {
        Given::with(())
            .given(vec![listed(), stock(5), reserved(1, 3)])
            .when(InventoryCommand::Reserve {
                order_id: order(2),
                quantity: 2,
            })
            .then_expect_events(vec![reserved(2, 2)]);
    }

    #[test]
    fn stock_never_goes_negative() {
        Given::with(())
            .given(vec![listed(), stock(5), reserved(1, 3)])
            .when(InventoryCommand::Reserve {
                order_id: order(2),
                quantity: 3,
            })
            .then_expect_error(InventoryError::InsufficientStock {
                requested: 3,
                available: 2,
            });
    }

    #[test]
    fn reserving_twice_for_one_order_records_nothing_the_second_time() {
        Given::with(())
            .given(vec![listed(), stock(5), reserved(1, 3)])
            .when(InventoryCommand::Reserve {
                order_id: order(1),
                quantity: 3,
            })
            .then_expect_events(vec![]);
    }

    #[test]
    fn a_release_frees_the_orders_units() {
        Given::with(())
            .given(vec![listed(), stock(5), reserved(1, 3)])
            .when(InventoryCommand::Release { order_id: order(1) })
            .then_expect_events(vec![InventoryEvent::StockReleased {
                order_id: order(1),
                quantity: 3,
            }]);
    }

    #[test]
    fn releasing_an_order_without_a_reservation_records_nothing() {
        Given::with(())
            .given(vec![
                listed(),
                stock(5),
                reserved(1, 3),
                InventoryEvent::StockReleased {
                    order_id: order(1),
                    quantity: 3,
                },
            ])
            .when(InventoryCommand::Release { order_id: order(1) })
            .then_expect_events(vec![]);
    }

    #[test]
    fn shipping_takes_the_reserved_units_off_hand() {
        let mut inventory = Inventory::default();
        for event in [
            listed(),
            stock(5),
            reserved(1, 3),
            InventoryEvent::StockShipped {
                order_id: order(1),
                quantity: 3,
            },
        ] {
            inventory.apply(event);
        }
        assert_eq!((inventory.on_hand, inventory.available()), (2, 2));
    }
}
