//! The command side under contention from two "processes" (two `Commands` with their own
//! caches and locks) on one event store: the store's expected-version check is what keeps
//! stock from going negative, not the in-process lock.

use std::sync::Arc;

use commands::store::EventStore;
use commands::{CommandError, Commands};
use domain::EventMetadata;
use domain::inventory::{InventoryCommand, InventoryError};
use domain::order::{OrderCommand, OrderStatus};
use domain::values::{Currency, Sku};
use infra::event_store::SqliteEventStore;
use orderflow_tests::{CountedReads, place_directly, sqlite_store, test_metadata};
use uuid::Uuid;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_writers_with_their_own_caches_never_oversell() {
    let (_dir, store, one, two, metadata) = two_processes().await;
    let sku = Sku::parse("HOT-1").unwrap();
    let eur = Currency::parse("EUR").unwrap();
    one.list_product(sku.clone(), "Hot item", 100, eur, &metadata)
        .await
        .unwrap();
    one.restock(&sku, 20, &metadata).await.unwrap();
    // Warm both caches so that each starts from a state the other will make stale.
    one.inventory.load(sku.as_str()).await.unwrap();
    two.inventory.load(sku.as_str()).await.unwrap();

    let attempts = (0..50).map(|i| {
        let writer = if i % 2 == 0 { one.clone() } else { two.clone() };
        let (sku, metadata) = (sku.clone(), metadata.clone());
        tokio::spawn(async move {
            let reserve = InventoryCommand::Reserve {
                order_id: Uuid::new_v4(),
                quantity: 1,
            };
            writer
                .inventory
                .execute(sku.as_str(), reserve, &metadata)
                .await
        })
    });
    let results = futures_util::future::join_all(attempts).await;

    let mut reserved = 0;
    for result in results {
        match result.unwrap() {
            Ok(handled) => {
                assert_eq!(handled.recorded, 1);
                reserved += 1;
            }
            Err(CommandError::Rejected(InventoryError::InsufficientStock { .. })) => {}
            Err(other) => panic!("unexpected failure: {other}"),
        }
    }
    assert_eq!(reserved, 20);
    let fresh = Commands::new(store);
    let (_, state) = fresh.inventory.load(sku.as_str()).await.unwrap();
    assert_eq!(
        (state.on_hand, state.reserved(), state.available()),
        (20, 20, 0)
    );
}

/// Two processes, one store. `two` decides first on what it knows; here that is stale or
/// empty every time, and each answer must still be the one the stored state gives.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_first_decision_on_a_stale_or_empty_state_is_checked_against_the_store() {
    let (_dir, store, one, two, metadata) = two_processes().await;
    let sku = Sku::parse("STALE-1").unwrap();
    let eur = Currency::parse("EUR").unwrap();
    one.list_product(sku.clone(), "Item", 100, eur.clone(), &metadata)
        .await
        .unwrap();
    one.restock(&sku, 1, &metadata).await.unwrap();
    let reserve = |quantity| InventoryCommand::Reserve {
        order_id: Uuid::new_v4(),
        quantity,
    };
    // `two` takes the last unit: its cache now says nothing is left.
    two.inventory
        .execute(sku.as_str(), reserve(1), &metadata)
        .await
        .unwrap();
    one.restock(&sku, 5, &metadata).await.unwrap();

    // A refusal on the stale cache would be wrong: the store has 5 more.
    let handled = two
        .inventory
        .execute(sku.as_str(), reserve(3), &metadata)
        .await
        .expect("decided again on the stored state");
    assert_eq!((handled.version, handled.recorded), (5, 1));
    // And a refusal that the stored state confirms still stands.
    match two
        .inventory
        .execute(sku.as_str(), reserve(3), &metadata)
        .await
    {
        Err(CommandError::Rejected(InventoryError::InsufficientStock { .. })) => {}
        other => panic!("2 left, 3 asked: {other:?}"),
    }

    // A stream `two` never saw: confirming is refused on an empty stream, then accepted on the
    // stored one; listing the same SKU again is accepted on an empty stream, then refused.
    let order = place_directly(&one, &sku).await;
    let confirmed = two
        .order(order, domain::order::OrderCommand::Confirm, &metadata)
        .await
        .expect("the placed order is confirmed");
    assert_eq!((confirmed.version, confirmed.recorded), (2, 1));
    let fresh = Commands::new(store);
    match fresh
        .list_product(sku.clone(), "Again", 100, eur, &metadata)
        .await
    {
        Err(commands::CommandFailure::Inventory(InventoryError::AlreadyListed)) => {}
        other => panic!("listed twice: {other:?}"),
    }
}

/// One SQLite store (in a directory removed with the `TempDir`), two `Commands` on it as two
/// processes would have, and the metadata of a test's commands.
async fn two_processes() -> (
    tempfile::TempDir,
    Arc<SqliteEventStore>,
    Arc<Commands>,
    Arc<Commands>,
    EventMetadata,
) {
    let (dir, store) = sqlite_store().await;
    let (one, two) = (Commands::new(store.clone()), Commands::new(store.clone()));
    (dir, store, one, two, test_metadata())
}

/// A reaction to an order's next event (the processor's to a placement) folds that event into
/// what the process knows instead of reading the stream; a later event that skips versions the
/// process has not seen is read from the store; and pricing reads a SKU's stream only until
/// the process has seen it listed. The store is the real SQLite one, counted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reactions_and_pricing_read_the_store_only_for_what_the_process_has_not_seen() {
    let (_dir, store, one, _, metadata) = two_processes().await;
    let counted = Arc::new(CountedReads::new(store.clone()));
    let processor = Commands::new(counted.clone());
    let sku = Sku::parse("SEEN-1").unwrap();
    let eur = Currency::parse("EUR").unwrap();
    one.list_product(sku.clone(), "Item", 250, eur, &metadata)
        .await
        .unwrap();
    one.restock(&sku, 5, &metadata).await.unwrap();

    let order = place_directly(&one, &sku).await;
    let stream = domain::envelope::stream_id(domain::order::STREAM_TYPE, order);
    let placed = store.read_stream(&stream, 1).await.unwrap().remove(0);
    let (version, state) = processor.orders.load_after(&placed).await.unwrap();
    assert_eq!((version, state.status), (1, OrderStatus::Placed));
    assert_eq!(state.total, 250);
    assert_eq!(counted.stream_reads(), 0, "the placement itself was folded");
    // Asking again about the same event, or an older one, answers from memory.
    processor.orders.load_after(&placed).await.unwrap();
    assert_eq!(counted.stream_reads(), 0);

    // Confirmed and cancelled by another process: the processor has seen neither.
    one.order(order, OrderCommand::Confirm, &metadata)
        .await
        .unwrap();
    one.order(order, OrderCommand::Cancel { reason: None }, &metadata)
        .await
        .unwrap();
    let cancelled = store.read_stream(&stream, 3).await.unwrap().remove(0);
    let (version, state) = processor.orders.load_after(&cancelled).await.unwrap();
    assert_eq!((version, state.status), (3, OrderStatus::Cancelled));
    assert_eq!(counted.stream_reads(), 1, "a gap is read from the store");

    // Pricing: the first order reads the SKU's stream, the next ones do not.
    place_directly(&processor, &sku).await;
    let after_first = counted.stream_reads();
    assert!(after_first >= 2, "the SKU was read for the first order");
    place_directly(&processor, &sku).await;
    place_directly(&processor, &sku).await;
    assert_eq!(
        counted.stream_reads(),
        after_first,
        "a seen listing is not read again"
    );
}

/// A placement redelivered to a processor that never saw the order (a restart, or another
/// processor) after the order was rejected for want of stock and the SKU restocked: the
/// processor reads the order's status from the store and does nothing. Folding the placement
/// alone would show the order as placed, and it would reserve stock and charge the customer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redelivered_placement_of_a_rejected_order_reserves_and_charges_nothing() {
    use commands::processor::OrderProcessor;
    use infra::payment::SandboxPayments;
    use infra::views::MemoryViewStore;

    let (_dir, store, one, _, metadata) = two_processes().await;
    let sku = Sku::parse("GONE-1").unwrap();
    let eur = Currency::parse("EUR").unwrap();
    one.list_product(sku.clone(), "Item", 100, eur, &metadata)
        .await
        .unwrap();
    let order = place_directly(&one, &sku).await;
    let stream = domain::envelope::stream_id(domain::order::STREAM_TYPE, order);
    let placed = store.read_stream(&stream, 1).await.unwrap().remove(0);
    let payments = Arc::new(SandboxPayments::new(Arc::new(MemoryViewStore::new())));
    let first = OrderProcessor::new(one.clone(), payments.clone());
    first.handle(&placed).await.unwrap();
    let (_, rejected) = one.orders.load(&order.to_string()).await.unwrap();
    assert_eq!(rejected.status, OrderStatus::Rejected, "nothing in stock");
    one.restock(&sku, 5, &metadata).await.unwrap();

    let restarted = OrderProcessor::new(Commands::new(store.clone()), payments.clone());
    restarted.handle(&placed).await.unwrap();

    assert_eq!(payments.captured(), 0, "nobody was charged");
    let fresh = Commands::new(store.clone());
    let (_, stock) = fresh.inventory.load(sku.as_str()).await.unwrap();
    assert_eq!(
        (stock.reserved(), stock.available()),
        (0, 5),
        "nothing reserved"
    );
    let (_, order) = fresh.orders.load(&order.to_string()).await.unwrap();
    assert_eq!(order.status, OrderStatus::Rejected);
}

/// A processor reserved stock and took the payment for an order that the customer cancelled
/// meanwhile (the cancellation's own release ran before that reservation), then died before
/// it could confirm and find out. The placement is delivered again: the order is cancelled,
/// and the processor gives back what the dead one held instead of returning at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_placement_redelivered_after_a_cancellation_gives_back_what_a_dead_processor_held() {
    use commands::payment::PaymentGateway;
    use commands::processor::OrderProcessor;
    use domain::inventory::InventoryCommand;
    use infra::payment::SandboxPayments;
    use infra::views::MemoryViewStore;

    let (_dir, store, one, _, metadata) = two_processes().await;
    let sku = Sku::parse("RACE-1").unwrap();
    let eur = Currency::parse("EUR").unwrap();
    one.list_product(sku.clone(), "Item", 100, eur.clone(), &metadata)
        .await
        .unwrap();
    one.restock(&sku, 5, &metadata).await.unwrap();
    let order = place_directly(&one, &sku).await;
    let stream = domain::envelope::stream_id(domain::order::STREAM_TYPE, order);
    let placed = store.read_stream(&stream, 1).await.unwrap().remove(0);
    let payments = Arc::new(SandboxPayments::new(Arc::new(MemoryViewStore::new())));
    let processor = OrderProcessor::new(Commands::new(store.clone()), payments.clone());
    one.order(order, OrderCommand::Cancel { reason: None }, &metadata)
        .await
        .unwrap();
    let cancelled = store.read_stream(&stream, 2).await.unwrap().remove(0);
    processor.handle(&cancelled).await.unwrap();
    // The dead processor's work, after the cancellation's release.
    let reserve = InventoryCommand::Reserve {
        order_id: order,
        quantity: 1,
    };
    one.inventory
        .execute(sku.as_str(), reserve, &metadata)
        .await
        .unwrap();
    payments
        .capture(&format!("order-{order}"), 100, &eur)
        .await
        .unwrap();

    processor.handle(&placed).await.unwrap();

    let fresh = Commands::new(store.clone());
    let (_, stock) = fresh.inventory.load(sku.as_str()).await.unwrap();
    assert_eq!(
        (stock.reserved(), stock.available()),
        (0, 5),
        "the reservation is given back"
    );
    assert_eq!(payments.refunded(), 1, "the payment is given back");
    let (_, order) = fresh.orders.load(&order.to_string()).await.unwrap();
    assert_eq!(order.status, OrderStatus::Cancelled);
}
