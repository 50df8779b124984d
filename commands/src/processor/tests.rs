//! The order processor, given an order's stream, when one of its events is delivered (once, or
//! again after a crash or to another processor), then what the order, the stock and the
//! payments are: on the in-memory store, with a ledger for a payment gateway.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use domain::order::{OrderCommand, OrderStatus};
use domain::values::{Currency, MinorUnits, Sku};
use domain::{EventMetadata, RecordedEvent};
use eventlog::testing::Op;
use eventlog::{Classify, Engine, EventStore, Fault, MemoryEventStore, Scripted, StoreError};
use uuid::Uuid;

use super::OrderProcessor;
use crate::aggregates::tests::place;
use crate::payment::{PaymentError, PaymentGateway, PaymentOutcome};
use crate::service::Commands;

const SKU: &str = "SKU-1";

/// Payments by key, idempotent as the port asks: the first answer to a key is every answer.
#[derive(Default)]
struct Ledger {
    /// Amounts above this are declined.
    limit: Option<MinorUnits>,
    down: bool,
    payments: Mutex<HashMap<String, (PaymentOutcome, bool)>>,
}

impl Ledger {
    fn captured(&self) -> usize {
        let payments = self.payments.lock().unwrap();
        payments
            .values()
            .filter(|(outcome, refunded)| {
                matches!(outcome, PaymentOutcome::Captured { .. }) && !refunded
            })
            .count()
    }

    fn refunded(&self) -> usize {
        let payments = self.payments.lock().unwrap();
        payments.values().filter(|(_, refunded)| *refunded).count()
    }
}

#[async_trait]
impl PaymentGateway for Ledger {
    async fn capture(
        &self,
        key: &str,
        amount: MinorUnits,
        _: &Currency,
    ) -> Result<PaymentOutcome, PaymentError> {
        if self.down {
            return Err(PaymentError::Unavailable("connection refused".into()));
        }
        let outcome = match self.limit {
            Some(limit) if amount > limit => PaymentOutcome::Declined {
                reason: "over the limit".into(),
            },
            _ => PaymentOutcome::Captured {
                payment_id: format!("pay-{key}"),
            },
        };
        let mut payments = self.payments.lock().unwrap();
        Ok(payments
            .entry(key.into())
            .or_insert((outcome, false))
            .0
            .clone())
    }

    async fn refund(&self, key: &str) -> Result<(), PaymentError> {
        let mut payments = self.payments.lock().unwrap();
        if let Some((PaymentOutcome::Captured { .. }, refunded)) = payments.get_mut(key) {
            *refunded = true;
        }
        Ok(())
    }
}

fn metadata() -> EventMetadata {
    EventMetadata {
        correlation_id: Uuid::now_v7(),
        actor: "test".into(),
        ..Default::default()
    }
}

/// A store with the SKU listed at 100 and `stock` units, the shop's `Commands` on it, and one
/// order of one unit placed.
struct Shop {
    store: Arc<Scripted>,
    shop: Arc<Commands>,
    order: Uuid,
}

impl Shop {
    async fn with_stock(stock: u32) -> Self {
        let store = Arc::new(Scripted::new(Arc::new(MemoryEventStore::new())));
        let shop = Commands::new(store.clone());
        let sku = Sku::parse(SKU).unwrap();
        let eur = Currency::parse("EUR").unwrap();
        shop.list_product(sku.clone(), "Item", 100, eur, &metadata())
            .await
            .unwrap();
        if stock > 0 {
            shop.restock(&sku, stock, &metadata()).await.unwrap();
        }
        let order = place(&shop).await;
        Self { store, shop, order }
    }

    /// A processor with its own cache, as another process or a restarted one has.
    fn processor(&self, payments: &Arc<Ledger>) -> OrderProcessor {
        OrderProcessor::new(Commands::new(self.store.clone()), payments.clone())
    }

    /// The order's event at `version`.
    async fn event(&self, version: u64) -> RecordedEvent {
        let stream = domain::envelope::stream_id(domain::order::STREAM_TYPE, self.order);
        let events = self.store.read_stream(&stream, version).await.unwrap();
        events.into_iter().next().expect("the order has that event")
    }

    async fn status(&self) -> OrderStatus {
        let fresh = Commands::new(self.store.clone());
        fresh
            .orders
            .load(&self.order.to_string())
            .await
            .unwrap()
            .1
            .status
    }

    /// `(reserved, available)` of the SKU, as stored.
    async fn stock(&self) -> (u64, u64) {
        let fresh = Commands::new(self.store.clone());
        let (_, stock) = fresh.inventory.load(SKU).await.unwrap();
        (stock.reserved(), stock.available())
    }

    async fn cancel(&self) {
        let cancel = OrderCommand::Cancel { reason: None };
        self.shop
            .order(self.order, cancel, &metadata())
            .await
            .unwrap();
    }
}

#[tokio::test]
async fn a_placed_order_in_stock_is_reserved_paid_and_confirmed() {
    let shop = Shop::with_stock(5).await;
    let payments = Arc::new(Ledger::default());

    shop.processor(&payments)
        .handle(&shop.event(1).await)
        .await
        .unwrap();

    assert_eq!(shop.status().await, OrderStatus::Confirmed);
    assert_eq!(shop.stock().await, (1, 4));
    assert_eq!(payments.captured(), 1);
}

#[tokio::test]
async fn a_placement_delivered_twice_reserves_and_charges_once() {
    let shop = Shop::with_stock(5).await;
    let payments = Arc::new(Ledger::default());
    let placed = shop.event(1).await;
    shop.processor(&payments).handle(&placed).await.unwrap();

    shop.processor(&payments).handle(&placed).await.unwrap();

    assert_eq!(shop.status().await, OrderStatus::Confirmed);
    assert_eq!(shop.stock().await, (1, 4));
    assert_eq!(payments.captured(), 1);
}

#[tokio::test]
async fn an_order_out_of_stock_is_rejected_without_a_charge() {
    let shop = Shop::with_stock(0).await;
    let payments = Arc::new(Ledger::default());

    shop.processor(&payments)
        .handle(&shop.event(1).await)
        .await
        .unwrap();

    assert_eq!(shop.status().await, OrderStatus::Rejected);
    assert_eq!(shop.stock().await, (0, 0));
    assert_eq!(payments.captured(), 0);
}

#[tokio::test]
async fn a_declined_payment_rejects_the_order_and_gives_the_stock_back() {
    let shop = Shop::with_stock(5).await;
    let payments = Arc::new(Ledger {
        limit: Some(50),
        ..Ledger::default()
    });

    shop.processor(&payments)
        .handle(&shop.event(1).await)
        .await
        .unwrap();

    assert_eq!(shop.status().await, OrderStatus::Rejected);
    assert_eq!(shop.stock().await, (0, 5));
    assert_eq!(payments.captured(), 0);
}

#[tokio::test]
async fn a_cancelled_confirmed_order_gives_back_its_stock_and_its_payment() {
    let shop = Shop::with_stock(5).await;
    let payments = Arc::new(Ledger::default());
    let processor = shop.processor(&payments);
    processor.handle(&shop.event(1).await).await.unwrap();
    shop.cancel().await;

    processor.handle(&shop.event(3).await).await.unwrap();

    assert_eq!(shop.status().await, OrderStatus::Cancelled);
    assert_eq!(shop.stock().await, (0, 5));
    assert_eq!((payments.captured(), payments.refunded()), (0, 1));
}

/// A placement redelivered to a processor that never saw the order (a restart, or another
/// processor) after the order was rejected for want of stock and the SKU restocked: the
/// processor reads the order's status from the store and does nothing. Folding the placement
/// alone would show the order as placed, and it would reserve stock and charge the customer.
#[tokio::test]
async fn a_redelivered_placement_of_a_rejected_order_reserves_and_charges_nothing() {
    let shop = Shop::with_stock(0).await;
    let payments = Arc::new(Ledger::default());
    let placed = shop.event(1).await;
    shop.processor(&payments).handle(&placed).await.unwrap();
    assert_eq!(
        shop.status().await,
        OrderStatus::Rejected,
        "nothing in stock"
    );
    let sku = Sku::parse(SKU).unwrap();
    shop.shop.restock(&sku, 5, &metadata()).await.unwrap();

    shop.processor(&payments).handle(&placed).await.unwrap();

    assert_eq!(payments.captured(), 0, "nobody was charged");
    assert_eq!(shop.stock().await, (0, 5), "nothing reserved");
    assert_eq!(shop.status().await, OrderStatus::Rejected);
}

/// A processor reserved stock and took the payment for an order that the customer cancelled
/// meanwhile (the cancellation's own release ran before that reservation), then died before
/// it could confirm and find out. The placement is delivered again: the order is cancelled,
/// and the processor gives back what the dead one held instead of returning at once.
#[tokio::test]
async fn a_placement_redelivered_after_a_cancellation_gives_back_what_a_dead_processor_held() {
    let shop = Shop::with_stock(5).await;
    let payments = Arc::new(Ledger::default());
    let processor = shop.processor(&payments);
    shop.cancel().await;
    processor.handle(&shop.event(2).await).await.unwrap();
    // The dead processor's work, after the cancellation's release.
    let reserve = domain::inventory::InventoryCommand::Reserve {
        order_id: shop.order,
        quantity: 1,
    };
    shop.shop
        .inventory
        .execute(SKU, reserve, &metadata())
        .await
        .unwrap();
    let eur = Currency::parse("EUR").unwrap();
    let key = format!("order-{}", shop.order);
    payments.capture(&key, 100, &eur).await.unwrap();

    processor.handle(&shop.event(1).await).await.unwrap();

    assert_eq!(shop.stock().await, (0, 5), "the reservation is given back");
    assert_eq!(payments.refunded(), 1, "the payment is given back");
    assert_eq!(shop.status().await, OrderStatus::Cancelled);
}

#[tokio::test]
async fn a_shipped_order_takes_its_units_off_the_shelf() {
    let shop = Shop::with_stock(5).await;
    let payments = Arc::new(Ledger::default());
    let processor = shop.processor(&payments);
    processor.handle(&shop.event(1).await).await.unwrap();
    let ship = OrderCommand::Ship {
        carrier: "DHL".into(),
        tracking: "1Z".into(),
    };
    shop.shop
        .order(shop.order, ship, &metadata())
        .await
        .unwrap();

    processor.handle(&shop.event(3).await).await.unwrap();

    let fresh = Commands::new(shop.store.clone());
    let (_, stock) = fresh.inventory.load(SKU).await.unwrap();
    assert_eq!((stock.on_hand, stock.reserved()), (4, 0));
}

/// An engine down is an outage of that engine, which a consumer waits out without spending
/// the event's attempts; the same event succeeds once it is back.
#[tokio::test]
async fn an_engine_down_is_an_outage_and_the_event_succeeds_once_it_is_back() {
    let shop = Shop::with_stock(5).await;
    let placed = shop.event(1).await;
    let down = Arc::new(Ledger {
        down: true,
        ..Ledger::default()
    });
    let paying = shop.processor(&down).handle(&placed).await.unwrap_err();
    let payments = Arc::new(Ledger::default());
    let processor = shop.processor(&payments);
    let gone = StoreError::Unavailable("connection refused".into());
    shop.store.fail(Op::ReadStream, 1, gone);
    let storing = processor.handle(&placed).await.unwrap_err();

    processor.handle(&placed).await.unwrap();

    assert_eq!(paying.fault(), Fault::Outage(Engine::Payments), "{paying}");
    assert_eq!(storing.fault(), Fault::Outage(Engine::Store), "{storing}");
    assert_eq!(shop.status().await, OrderStatus::Confirmed);
    assert_eq!(shop.stock().await, (1, 4), "reserved once");
}

#[tokio::test]
async fn an_event_that_is_not_an_order_stream_is_the_messages_fault() {
    let shop = Shop::with_stock(5).await;
    let mut placed = shop.event(1).await;
    placed.stream_id = "order-not-a-uuid".into();

    let error = shop
        .processor(&Arc::new(Ledger::default()))
        .handle(&placed)
        .await
        .unwrap_err();

    assert_eq!(error.fault(), Fault::Permanent, "{error}");
}
