//! The Order aggregate: one customer's order from placement to delivery.
//!
//! ```text
//! placed ──▶ confirmed ──▶ shipped ──▶ delivered
//!   │  │         │
//!   │  └▶ rejected (out_of_stock | payment_declined)
//!   └──────┴──▶ cancelled  (not after shipment)
//! ```
//! Repeating a command whose effect already happened (confirming a confirmed order, cancelling
//! a cancelled one) is accepted and records nothing: services redeliver, and a retry must not
//! fail or act twice.

use cqrs_es::{Aggregate, DomainEvent, event_sink::EventSink};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::values::{
    Currency, CustomerId, MinorUnits, Quantity, RejectionReason, ShippingAddress, Sku,
};

pub const STREAM_TYPE: &str = "order";

/// Longest carrier name or tracking number, in characters.
pub const SHIPMENT_TEXT_MAX: usize = 100;
/// Longest reason a cancellation may give, in characters as sent.
pub const CANCEL_REASON_MAX: usize = 500;
/// The most lines one order may have.
pub const MAX_LINES: usize = 100;

/// One line as ordered, priced from the catalog at placement time.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OrderLine {
    pub sku: Sku,
    pub quantity: Quantity,
    pub unit_price: MinorUnits,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OrderStatus {
    /// No `OrderPlaced` yet: the stream is empty.
    #[default]
    New,
    Placed,
    Confirmed,
    Rejected,
    Cancelled,
    Shipped,
    Delivered,
}

impl OrderStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::New => "new",
            Self::Placed => "placed",
            Self::Confirmed => "confirmed",
            Self::Rejected => "rejected",
            Self::Cancelled => "cancelled",
            Self::Shipped => "shipped",
            Self::Delivered => "delivered",
        }
    }

    /// Every status an order can be in once placed.
    pub const ALL: [Self; 6] = [
        Self::Placed,
        Self::Confirmed,
        Self::Rejected,
        Self::Cancelled,
        Self::Shipped,
        Self::Delivered,
    ];

    pub fn parse(raw: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|s| s.as_str() == raw)
    }
}

impl std::fmt::Display for OrderStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, Clone, PartialEq)]
pub enum OrderCommand {
    Place {
        order_id: Uuid,
        customer_id: CustomerId,
        lines: Vec<OrderLine>,
        currency: Currency,
        shipping_address: ShippingAddress,
    },
    Confirm,
    Reject {
        reason: RejectionReason,
    },
    Cancel {
        reason: Option<String>,
    },
    Ship {
        carrier: String,
        tracking: String,
    },
    Deliver,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum OrderEvent {
    OrderPlaced {
        order_id: Uuid,
        customer_id: CustomerId,
        lines: Vec<OrderLine>,
        currency: Currency,
        total: MinorUnits,
        shipping_address: ShippingAddress,
    },
    OrderConfirmed,
    OrderRejected {
        reason: RejectionReason,
    },
    OrderCancelled {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        reason: Option<String>,
    },
    /// Schema version 2: `tracking` became `tracking_number` (version 1 is upcast on read,
    /// see [`crate::upcast`]).
    OrderShipped {
        carrier: String,
        tracking_number: String,
    },
    OrderDelivered,
}

impl OrderEvent {
    /// The status an order is in once this event happened: the one mapping from events to
    /// statuses, which the aggregate, the views, the analytics and the notifier all use.
    pub fn status_after(&self) -> OrderStatus {
        match self {
            Self::OrderPlaced { .. } => OrderStatus::Placed,
            Self::OrderConfirmed => OrderStatus::Confirmed,
            Self::OrderRejected { .. } => OrderStatus::Rejected,
            Self::OrderCancelled { .. } => OrderStatus::Cancelled,
            Self::OrderShipped { .. } => OrderStatus::Shipped,
            Self::OrderDelivered => OrderStatus::Delivered,
        }
    }
}

impl DomainEvent for OrderEvent {
    fn event_type(&self) -> String {
        match self {
            Self::OrderPlaced { .. } => "OrderPlaced",
            Self::OrderConfirmed => "OrderConfirmed",
            Self::OrderRejected { .. } => "OrderRejected",
            Self::OrderCancelled { .. } => "OrderCancelled",
            Self::OrderShipped { .. } => "OrderShipped",
            Self::OrderDelivered => "OrderDelivered",
        }
        .to_owned()
    }

    fn event_version(&self) -> String {
        crate::upcast::current_version(&self.event_type()).to_string()
    }
}

/// One variant per broken rule; `code()` is the stable name clients see.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OrderError {
    #[error("the order does not exist")]
    NotFound,
    #[error("the order has already been placed")]
    AlreadyPlaced,
    #[error("an order needs at least one line")]
    NoLines,
    #[error("an order may have at most {MAX_LINES} lines")]
    TooManyLines,
    #[error("SKU {0} appears on more than one line")]
    DuplicateSku(Sku),
    #[error("the order total does not fit in the money type")]
    TotalOverflow,
    #[error("an order cannot be cancelled once it has been shipped")]
    CancelAfterShipment,
    #[error("an order cannot be shipped before it is confirmed")]
    ShipBeforeConfirmation,
    #[error("the order was already shipped with other tracking details")]
    AlreadyShipped,
    #[error("an order can be delivered only after it has been shipped")]
    DeliverBeforeShipment,
    #[error("the order is {from} and cannot become {to}")]
    InvalidTransition {
        from: &'static str,
        to: &'static str,
    },
    #[error("carrier and tracking must each be 1-100 printable characters")]
    InvalidTracking,
}

impl OrderError {
    pub fn code(&self) -> &'static str {
        match self {
            Self::NotFound => "order_not_found",
            Self::AlreadyPlaced => "order_already_placed",
            Self::NoLines => "no_lines",
            Self::TooManyLines => "too_many_lines",
            Self::DuplicateSku(_) => "duplicate_sku",
            Self::TotalOverflow => "total_overflow",
            Self::CancelAfterShipment => "cancel_after_shipment",
            Self::ShipBeforeConfirmation => "ship_before_confirmation",
            Self::AlreadyShipped => "already_shipped",
            Self::DeliverBeforeShipment => "deliver_before_shipment",
            Self::InvalidTransition { .. } => "invalid_transition",
            Self::InvalidTracking => "invalid_tracking",
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Order {
    pub id: Option<Uuid>,
    pub customer_id: Option<CustomerId>,
    pub status: OrderStatus,
    pub lines: Vec<OrderLine>,
    pub currency: Option<Currency>,
    pub total: MinorUnits,
    pub shipment: Option<(String, String)>,
}

impl Order {
    /// The order's total, or `None` if it would overflow.
    pub fn total_of(lines: &[OrderLine]) -> Option<MinorUnits> {
        lines.iter().try_fold(0u64, |sum, line| {
            line.unit_price
                .checked_mul(u64::from(line.quantity.get()))
                .and_then(|amount| sum.checked_add(amount))
        })
    }

    fn decide(&self, command: OrderCommand) -> Result<Option<OrderEvent>, OrderError> {
        use OrderStatus as S;
        if self.status == S::New && !matches!(command, OrderCommand::Place { .. }) {
            return Err(OrderError::NotFound);
        }
        match command {
            OrderCommand::Place {
                order_id,
                customer_id,
                lines,
                currency,
                shipping_address,
            } => self.place(order_id, customer_id, lines, currency, shipping_address),
            OrderCommand::Confirm => match self.status {
                S::Placed => Ok(Some(OrderEvent::OrderConfirmed)),
                S::Confirmed => Ok(None),
                _ => Err(self.invalid(S::Confirmed)),
            },
            OrderCommand::Reject { reason } => match self.status {
                S::Placed => Ok(Some(OrderEvent::OrderRejected { reason })),
                S::Rejected => Ok(None),
                _ => Err(self.invalid(S::Rejected)),
            },
            OrderCommand::Cancel { reason } => match self.status {
                S::Placed | S::Confirmed => Ok(Some(OrderEvent::OrderCancelled { reason })),
                S::Cancelled => Ok(None),
                S::Shipped | S::Delivered => Err(OrderError::CancelAfterShipment),
                _ => Err(self.invalid(S::Cancelled)),
            },
            OrderCommand::Ship { carrier, tracking } => self.ship(carrier, tracking),
            OrderCommand::Deliver => match self.status {
                S::Shipped => Ok(Some(OrderEvent::OrderDelivered)),
                S::Delivered => Ok(None),
                S::Placed | S::Confirmed => Err(OrderError::DeliverBeforeShipment),
                _ => Err(self.invalid(S::Delivered)),
            },
        }
    }

    fn invalid(&self, to: OrderStatus) -> OrderError {
        OrderError::InvalidTransition {
            from: self.status.as_str(),
            to: to.as_str(),
        }
    }

    /// A new order: some lines, none twice, a total that fits.
    fn place(
        &self,
        order_id: Uuid,
        customer_id: CustomerId,
        lines: Vec<OrderLine>,
        currency: Currency,
        shipping_address: ShippingAddress,
    ) -> Result<Option<OrderEvent>, OrderError> {
        if self.status != OrderStatus::New {
            return Err(OrderError::AlreadyPlaced);
        }
        if lines.is_empty() {
            return Err(OrderError::NoLines);
        }
        if lines.len() > MAX_LINES {
            return Err(OrderError::TooManyLines);
        }
        for (i, line) in lines.iter().enumerate() {
            if lines[..i].iter().any(|earlier| earlier.sku == line.sku) {
                return Err(OrderError::DuplicateSku(line.sku.clone()));
            }
        }
        let total = Self::total_of(&lines).ok_or(OrderError::TotalOverflow)?;
        Ok(Some(OrderEvent::OrderPlaced {
            order_id,
            customer_id,
            lines,
            currency,
            total,
            shipping_address,
        }))
    }

    /// A confirmed order leaves with a carrier and a tracking number; shipping again with the
    /// same ones is done already.
    fn ship(&self, carrier: String, tracking: String) -> Result<Option<OrderEvent>, OrderError> {
        use OrderStatus as S;
        let printable = |s: &str| {
            (1..=SHIPMENT_TEXT_MAX).contains(&s.chars().count()) && !s.chars().any(char::is_control)
        };
        if !printable(&carrier) || !printable(&tracking) {
            return Err(OrderError::InvalidTracking);
        }
        let same = |(c, t): &(String, String)| *c == carrier && *t == tracking;
        match self.status {
            S::Confirmed => Ok(Some(OrderEvent::OrderShipped {
                carrier,
                tracking_number: tracking,
            })),
            S::Placed => Err(OrderError::ShipBeforeConfirmation),
            S::Shipped | S::Delivered if self.shipment.as_ref().is_some_and(same) => Ok(None),
            S::Shipped | S::Delivered => Err(OrderError::AlreadyShipped),
            _ => Err(self.invalid(S::Shipped)),
        }
    }
}

impl Aggregate for Order {
    const TYPE: &'static str = STREAM_TYPE;
    type Command = OrderCommand;
    type Event = OrderEvent;
    type Error = OrderError;
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
        self.status = event.status_after();
        match event {
            OrderEvent::OrderPlaced {
                order_id,
                customer_id,
                lines,
                currency,
                total,
                ..
            } => {
                self.id = Some(order_id);
                self.customer_id = Some(customer_id);
                self.lines = lines;
                self.currency = Some(currency);
                self.total = total;
            }
            OrderEvent::OrderShipped {
                carrier,
                tracking_number,
            } => self.shipment = Some((carrier, tracking_number)),
            OrderEvent::OrderConfirmed
            | OrderEvent::OrderRejected { .. }
            | OrderEvent::OrderCancelled { .. }
            | OrderEvent::OrderDelivered => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use cqrs_es::test::TestFramework;

    use super::*;

    type Given = TestFramework<Order>;

    fn line(sku: &str, quantity: i64, unit_price: MinorUnits) -> OrderLine {
        OrderLine {
            sku: Sku::parse(sku).unwrap(),
            quantity: Quantity::parse(quantity).unwrap(),
            unit_price,
        }
    }

    fn address() -> ShippingAddress {
        ShippingAddress::parse(
            "shipping_address",
            Some("Ada Lovelace"),
            Some("1 Analytical Way"),
            None,
            Some("London"),
            Some("N1 9GU"),
            Some("GB"),
        )
        .unwrap()
    }

    fn order_id() -> Uuid {
        Uuid::from_u128(7)
    }

    fn customer() -> CustomerId {
        CustomerId::parse("ada").unwrap()
    }

    fn place(lines: Vec<OrderLine>) -> OrderCommand {
        OrderCommand::Place {
            order_id: order_id(),
            customer_id: customer(),
            lines,
            currency: Currency::parse("EUR").unwrap(),
            shipping_address: address(),
        }
    }

    fn placed() -> OrderEvent {
        OrderEvent::OrderPlaced {
            order_id: order_id(),
            customer_id: customer(),
            lines: vec![line("TEA-001", 2, 450)],
            currency: Currency::parse("EUR").unwrap(),
            total: 900,
            shipping_address: address(),
        }
    }

    fn shipped() -> OrderEvent {
        OrderEvent::OrderShipped {
            carrier: "DHL".into(),
            tracking_number: "JD0001".into(),
        }
    }

    fn ship() -> OrderCommand {
        OrderCommand::Ship {
            carrier: "DHL".into(),
            tracking: "JD0001".into(),
        }
    }

    #[test]
    fn placing_records_the_lines_and_their_total() {
        Given::with(())
            .given_no_previous_events()
            .when(place(vec![line("TEA-001", 2, 450)]))
            .then_expect_events(vec![placed()]);
    }

    #[test]
    fn an_order_is_placed_only_once() {
        Given::with(())
            .given(vec![placed()])
            .when(place(vec![line("TEA-001", 2, 450)]))
            .then_expect_error(OrderError::AlreadyPlaced);
    }

    #[test]
    fn an_order_needs_a_line() {
        Given::with(())
            .given_no_previous_events()
            .when(place(vec![]))
            .then_expect_error(OrderError::NoLines);
    }

    #[test]
    fn an_order_has_at_most_100_lines() {
        let lines: Vec<_> = (0..=MAX_LINES)
            .map(|i| line(&format!("SKU-{i:03}"), 1, 1))
            .collect();
        Given::with(())
            .given_no_previous_events()
            .when(place(lines))
            .then_expect_error(OrderError::TooManyLines);
    }

    #[test]
    fn a_sku_appears_on_one_line_only() {
        Given::with(())
            .given_no_previous_events()
            .when(place(vec![line("TEA-001", 1, 1), line("TEA-001", 2, 1)]))
            .then_expect_error(OrderError::DuplicateSku(Sku::parse("TEA-001").unwrap()));
    }

    #[test]
    fn a_total_that_overflows_is_refused() {
        Given::with(())
            .given_no_previous_events()
            .when(place(vec![line("GOLD", 1000, u64::MAX / 10)]))
            .then_expect_error(OrderError::TotalOverflow);
    }

    #[test]
    fn commands_on_an_unplaced_order_find_nothing() {
        Given::with(())
            .given_no_previous_events()
            .when(OrderCommand::Confirm)
            .then_expect_error(OrderError::NotFound);
    }

    #[test]
    fn a_placed_order_is_confirmed() {
        Given::with(())
            .given(vec![placed()])
            .when(OrderCommand::Confirm)
            .then_expect_events(vec![OrderEvent::OrderConfirmed]);
    }

    #[test]
    fn confirming_twice_records_nothing_the_second_time() {
        Given::with(())
            .given(vec![placed(), OrderEvent::OrderConfirmed])
            .when(OrderCommand::Confirm)
            .then_expect_events(vec![]);
    }

    #[test]
    fn a_cancelled_order_is_not_confirmed() {
        Given::with(())
            .given(vec![placed(), OrderEvent::OrderCancelled { reason: None }])
            .when(OrderCommand::Confirm)
            .then_expect_error(OrderError::InvalidTransition {
                from: "cancelled",
                to: "confirmed",
            });
    }

    #[test]
    fn a_placed_order_is_rejected_with_its_reason() {
        Given::with(())
            .given(vec![placed()])
            .when(OrderCommand::Reject {
                reason: RejectionReason::OutOfStock,
            })
            .then_expect_events(vec![OrderEvent::OrderRejected {
                reason: RejectionReason::OutOfStock,
            }]);
    }

    #[test]
    fn a_confirmed_order_is_not_rejected() {
        Given::with(())
            .given(vec![placed(), OrderEvent::OrderConfirmed])
            .when(OrderCommand::Reject {
                reason: RejectionReason::PaymentDeclined,
            })
            .then_expect_error(OrderError::InvalidTransition {
                from: "confirmed",
                to: "rejected",
            });
    }

    #[test]
    fn a_confirmed_order_can_be_cancelled() {
        Given::with(())
            .given(vec![placed(), OrderEvent::OrderConfirmed])
            .when(OrderCommand::Cancel {
                reason: Some("changed my mind".into()),
            })
            .then_expect_events(vec![OrderEvent::OrderCancelled {
                reason: Some("changed my mind".into()),
            }]);
    }

    #[test]
    fn cancel_is_refused_after_shipment() {
        Given::with(())
            .given(vec![placed(), OrderEvent::OrderConfirmed, shipped()])
            .when(OrderCommand::Cancel { reason: None })
            .then_expect_error(OrderError::CancelAfterShipment);
    }

    #[test]
    fn cancelling_twice_records_nothing_the_second_time() {
        Given::with(())
            .given(vec![placed(), OrderEvent::OrderCancelled { reason: None }])
            .when(OrderCommand::Cancel { reason: None })
            .then_expect_events(vec![]);
    }

    #[test]
    fn a_rejected_order_cannot_be_cancelled() {
        Given::with(())
            .given(vec![
                placed(),
                OrderEvent::OrderRejected {
                    reason: RejectionReason::OutOfStock,
                },
            ])
            .when(OrderCommand::Cancel { reason: None })
            .then_expect_error(OrderError::InvalidTransition {
                from: "rejected",
                to: "cancelled",
            });
    }

    #[test]
    fn ship_is_refused_before_confirmation() {
        Given::with(())
            .given(vec![placed()])
            .when(ship())
            .then_expect_error(OrderError::ShipBeforeConfirmation);
    }

    #[test]
    fn a_confirmed_order_is_shipped_with_its_tracking() {
        Given::with(())
            .given(vec![placed(), OrderEvent::OrderConfirmed])
            .when(ship())
            .then_expect_events(vec![shipped()]);
    }

    #[test]
    fn shipping_again_with_the_same_tracking_records_nothing() {
        Given::with(())
            .given(vec![placed(), OrderEvent::OrderConfirmed, shipped()])
            .when(ship())
            .then_expect_events(vec![]);
    }

    #[test]
    fn shipping_again_with_other_tracking_is_refused() {
        Given::with(())
            .given(vec![placed(), OrderEvent::OrderConfirmed, shipped()])
            .when(OrderCommand::Ship {
                carrier: "UPS".into(),
                tracking: "1Z".into(),
            })
            .then_expect_error(OrderError::AlreadyShipped);
    }

    #[test]
    fn tracking_must_be_printable_and_short() {
        Given::with(())
            .given(vec![placed(), OrderEvent::OrderConfirmed])
            .when(OrderCommand::Ship {
                carrier: String::new(),
                tracking: "x".repeat(101),
            })
            .then_expect_error(OrderError::InvalidTracking);
    }

    #[test]
    fn a_shipped_order_is_delivered() {
        Given::with(())
            .given(vec![placed(), OrderEvent::OrderConfirmed, shipped()])
            .when(OrderCommand::Deliver)
            .then_expect_events(vec![OrderEvent::OrderDelivered]);
    }

    #[test]
    fn deliver_is_refused_before_shipment() {
        Given::with(())
            .given(vec![placed(), OrderEvent::OrderConfirmed])
            .when(OrderCommand::Deliver)
            .then_expect_error(OrderError::DeliverBeforeShipment);
    }

    #[test]
    fn events_round_trip_through_the_envelope() {
        use crate::envelope::{NewEvent, RecordedEvent, decode};
        for event in [placed(), OrderEvent::OrderConfirmed, shipped()] {
            let new =
                NewEvent::from_domain(Uuid::nil(), &event, Default::default(), Default::default());
            assert_eq!(new.event_type, event.event_type());
            let recorded = RecordedEvent {
                event_id: new.event_id,
                stream_id: "order-7".into(),
                stream_type: STREAM_TYPE.into(),
                version: 1,
                global_position: Some(1),
                event_type: new.event_type,
                schema_version: new.schema_version,
                occurred_at: new.occurred_at,
                payload: new.payload.into(),
                metadata: new.metadata,
            };
            assert_eq!(decode::<OrderEvent>(&recorded).unwrap(), event);
        }
    }
}
