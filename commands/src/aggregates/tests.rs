//! Every way out of [`Aggregates::execute`], given a stream, when a command runs, then what it
//! answers, what it wrote and what it counted: on the in-memory store, scripted where another
//! writer or an outage has to come at a precise moment. Two `Commands` on one store stand for
//! two processes, each with its own cache and locks.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use chrono::Utc;
use domain::inventory::{Inventory, InventoryCommand, InventoryError, InventoryEvent};
use domain::order::{OrderCommand, OrderStatus};
use domain::values::{Currency, CustomerId, Quantity, ShippingAddress, Sku};
use domain::{EventMetadata, NewEvent};
use eventlog::testing::Op;
use eventlog::{EventStore, MemoryEventStore, Scripted, StoreError};
use uuid::Uuid;

use super::{Aggregates, CommandError, MAX_ATTEMPTS, Outcomes};
use crate::service::{CommandFailure, Commands, PlaceOrder};

const SKU: &str = "SKU-1";

fn metadata() -> EventMetadata {
    EventMetadata {
        correlation_id: Uuid::now_v7(),
        actor: "test".into(),
        ..Default::default()
    }
}

/// The metadata of a service's reaction to `cause`: its events get ids derived from it.
fn reaction_to(cause: Uuid) -> EventMetadata {
    EventMetadata {
        causation_id: Some(cause),
        ..metadata()
    }
}

fn reserve(quantity: u32) -> InventoryCommand {
    InventoryCommand::Reserve {
        order_id: Uuid::new_v4(),
        quantity,
    }
}

/// What another process appends to a SKU: a restock of one unit.
fn restocked(_: &str, _: u64) -> Vec<NewEvent> {
    let event = InventoryEvent::StockRestocked { quantity: 1 };
    vec![NewEvent::from_domain(
        Uuid::now_v7(),
        &event,
        Utc::now(),
        metadata(),
    )]
}

/// A store, and a SKU listed on it with `stock` units, by another process.
async fn listed(stock: u32) -> Arc<Scripted> {
    let store = Arc::new(Scripted::new(Arc::new(MemoryEventStore::new())));
    let other = Commands::new(store.clone());
    let sku = Sku::parse(SKU).unwrap();
    let eur = Currency::parse("EUR").unwrap();
    other
        .list_product(sku.clone(), "Item", 100, eur, &metadata())
        .await
        .unwrap();
    if stock > 0 {
        other.restock(&sku, stock, &metadata()).await.unwrap();
    }
    store
}

/// `[appended, duplicates, rejected, conflicts, retries, contended]`
fn count(outcomes: &Outcomes) -> [u64; 6] {
    [
        &outcomes.appended,
        &outcomes.duplicates,
        &outcomes.rejected,
        &outcomes.conflicts,
        &outcomes.retries,
        &outcomes.contended,
    ]
    .map(|c| c.load(Ordering::Relaxed))
}

async fn versions(store: &Arc<Scripted>, sku: &str) -> u64 {
    store
        .read_stream(&format!("inventory-{sku}"), 1)
        .await
        .unwrap()
        .len() as u64
}

#[tokio::test]
async fn a_command_on_a_new_stream_is_appended_without_reading_the_store() {
    let store = Arc::new(Scripted::new(Arc::new(MemoryEventStore::new())));
    let orders = Aggregates::<Inventory>::new(store.clone());
    let list = InventoryCommand::List {
        sku: Sku::parse(SKU).unwrap(),
        name: "Item".into(),
        unit_price: 100,
        currency: Currency::parse("EUR").unwrap(),
    };

    let handled = orders.execute(SKU, list, &metadata()).await.unwrap();

    assert_eq!((handled.version, handled.recorded), (1, 1));
    assert_eq!(
        store.calls(Op::ReadStream),
        0,
        "an empty stream was guessed"
    );
    assert_eq!(count(&orders.outcomes), [1, 0, 0, 0, 0, 0]);
}

#[tokio::test]
async fn a_stale_guess_conflicts_once_and_is_decided_again_on_the_stored_state() {
    let store = listed(5).await;
    let inventory = Aggregates::<Inventory>::new(store.clone());
    inventory.load(SKU).await.unwrap();
    store.rival(1, restocked);

    let handled = inventory
        .execute(SKU, reserve(2), &metadata())
        .await
        .unwrap();

    assert_eq!(
        (handled.version, handled.recorded),
        (4, 1),
        "after the rival's"
    );
    assert_eq!(
        count(&inventory.outcomes),
        [1, 0, 0, 1, 0, 0],
        "a wrong guess is a conflict, not a retry"
    );
    let (version, state) = inventory.load(SKU).await.unwrap();
    assert_eq!(
        (version, state.available()),
        (4, 4),
        "the cache took the new state"
    );
}

#[tokio::test]
async fn a_refusal_on_a_stale_state_is_decided_again_after_reading_the_tail() {
    let store = listed(1).await;
    let inventory = Aggregates::<Inventory>::new(store.clone());
    inventory
        .execute(SKU, reserve(1), &metadata())
        .await
        .unwrap();
    // Another process restocks: this one's cache still says nothing is left.
    Commands::new(store.clone())
        .restock(&Sku::parse(SKU).unwrap(), 5, &metadata())
        .await
        .unwrap();
    let reads = store.calls(Op::ReadStream);

    let handled = inventory
        .execute(SKU, reserve(3), &metadata())
        .await
        .unwrap();

    assert_eq!((handled.version, handled.recorded), (5, 1));
    assert_eq!(
        store.calls(Op::ReadStream),
        reads + 1,
        "one read of the tail"
    );
    assert_eq!(
        count(&inventory.outcomes)[2],
        0,
        "nothing counted as refused"
    );
}

#[tokio::test]
async fn a_refusal_stands_once_the_stored_state_confirms_it() {
    let store = listed(2).await;
    let inventory = Aggregates::<Inventory>::new(store.clone());

    let refused = inventory.execute(SKU, reserve(3), &metadata()).await;

    assert!(
        matches!(
            refused,
            Err(CommandError::Rejected(InventoryError::InsufficientStock {
                requested: 3,
                available: 2
            }))
        ),
        "{refused:?}"
    );
    assert_eq!(store.calls(Op::ReadStream), 1, "read once, then it stood");
    assert_eq!(versions(&store, SKU).await, 2, "nothing written");
    assert_eq!(count(&inventory.outcomes), [0, 0, 1, 0, 0, 0]);
}

#[tokio::test]
async fn a_command_whose_effect_already_happened_records_nothing_on_the_stored_state() {
    let store = listed(2).await;
    let inventory = Aggregates::<Inventory>::new(store.clone());
    let release = InventoryCommand::Release {
        order_id: Uuid::new_v4(),
    };

    let handled = inventory.execute(SKU, release, &metadata()).await.unwrap();

    assert_eq!((handled.version, handled.recorded), (2, 0));
    assert_eq!(store.calls(Op::ReadStream), 1, "checked against the store");
    assert_eq!(count(&inventory.outcomes), [0; 6]);
}

#[tokio::test]
async fn a_reaction_decided_twice_is_stored_once_and_the_stale_copy_forgotten() {
    let store = listed(5).await;
    let (one, two) = (
        Aggregates::<Inventory>::new(store.clone()),
        Aggregates::<Inventory>::new(store.clone()),
    );
    two.load(SKU).await.unwrap();
    let (cause, order_id) = (Uuid::now_v7(), Uuid::new_v4());
    let command = InventoryCommand::Reserve {
        order_id,
        quantity: 2,
    };
    one.execute(SKU, command.clone(), &reaction_to(cause))
        .await
        .unwrap();

    // The same event redelivered to another process, whose cache is one reservation behind.
    let again = two
        .execute(SKU, command, &reaction_to(cause))
        .await
        .unwrap();

    assert_eq!(
        (again.version, again.recorded),
        (3, 1),
        "the original's answer"
    );
    assert_eq!(versions(&store, SKU).await, 3, "written once");
    assert_eq!(count(&two.outcomes), [1, 1, 0, 0, 0, 0]);
    let reads = store.calls(Op::ReadStream);
    let (version, state) = two.load(SKU).await.unwrap();
    assert_eq!((version, state.available()), (3, 3));
    assert_eq!(
        store.calls(Op::ReadStream),
        reads + 1,
        "the next load read the truth"
    );
}

#[tokio::test(start_paused = true)]
async fn a_stream_other_writers_keep_winning_is_given_up_as_contention() {
    let store = listed(5).await;
    let inventory = Aggregates::<Inventory>::new(store.clone());
    inventory.load(SKU).await.unwrap();
    store.rival(usize::MAX, restocked);

    let result = inventory.execute(SKU, reserve(1), &metadata()).await;

    assert!(
        matches!(&result, Err(CommandError::Contention(s)) if s == "inventory-SKU-1"),
        "{result:?}"
    );
    let lost = u64::from(MAX_ATTEMPTS);
    assert_eq!(
        count(&inventory.outcomes),
        [0, 0, 0, lost + 1, lost - 1, 1],
        "the wrong guess, then {MAX_ATTEMPTS} lost races with a backoff between each"
    );
    let reserved = store
        .read_stream("inventory-SKU-1", 1)
        .await
        .unwrap()
        .iter()
        .filter(|e| e.event_type == "StockReserved")
        .count();
    assert_eq!(reserved, 0, "nothing of ours was written");
}

#[tokio::test]
async fn an_outage_is_the_stores_error_and_leaves_the_cache_committed() {
    let store = listed(5).await;
    let inventory = Aggregates::<Inventory>::new(store.clone());
    inventory.load(SKU).await.unwrap();
    let down = StoreError::Unavailable("connection refused".into());
    store.fail(Op::Append, 1, down.clone());

    let failed = inventory.execute(SKU, reserve(2), &metadata()).await;
    let after = inventory
        .execute(SKU, reserve(2), &metadata())
        .await
        .unwrap();

    assert!(
        matches!(&failed, Err(CommandError::Store(e)) if *e == down),
        "{failed:?}"
    );
    assert_eq!(
        (after.version, after.recorded),
        (3, 1),
        "the failed decision left no trace in the cache"
    );
    let (_, state) = inventory.load(SKU).await.unwrap();
    assert_eq!(state.available(), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_writers_with_their_own_caches_never_oversell() {
    let store = listed(20).await;
    let (one, two) = (Commands::new(store.clone()), Commands::new(store.clone()));
    // Warm both caches so that each starts from a state the other will make stale.
    one.inventory.load(SKU).await.unwrap();
    two.inventory.load(SKU).await.unwrap();

    let attempts = (0..50).map(|i| {
        let writer = if i % 2 == 0 { one.clone() } else { two.clone() };
        tokio::spawn(async move { writer.inventory.execute(SKU, reserve(1), &metadata()).await })
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
    let (_, state) = Commands::new(store).inventory.load(SKU).await.unwrap();
    assert_eq!(
        (state.on_hand, state.reserved(), state.available()),
        (20, 20, 0)
    );
}

/// Places a one-unit order of the SKU through `commands`.
pub(crate) async fn place(commands: &Commands) -> Uuid {
    let request = PlaceOrder {
        customer_id: CustomerId(Uuid::new_v4()),
        idempotency_key: None,
        request_hash: "h".into(),
        lines: vec![(Sku::parse(SKU).unwrap(), Quantity::parse(1).unwrap())],
        shipping_address: ShippingAddress {
            name: "A".into(),
            line1: "1 Road".into(),
            line2: None,
            city: "Town".into(),
            postal_code: "1".into(),
            country: "GB".into(),
        },
        metadata: metadata(),
    };
    commands.place_order(request).await.unwrap().order_id
}

/// On a stream this process never saw, confirming is refused on the empty guess and then
/// accepted on the stored stream; listing a SKU again is accepted on the empty guess and then
/// refused on the stored one.
#[tokio::test]
async fn a_first_decision_on_an_empty_guess_is_checked_against_the_store() {
    let store = listed(1).await;
    let (one, two) = (Commands::new(store.clone()), Commands::new(store.clone()));
    let order = place(&one).await;

    let confirmed = two
        .order(order, OrderCommand::Confirm, &metadata())
        .await
        .expect("the placed order is confirmed");
    let relisted = Commands::new(store)
        .list_product(
            Sku::parse(SKU).unwrap(),
            "Again",
            100,
            Currency::parse("EUR").unwrap(),
            &metadata(),
        )
        .await;

    assert_eq!((confirmed.version, confirmed.recorded), (2, 1));
    assert!(
        matches!(
            relisted,
            Err(CommandFailure::Inventory(InventoryError::AlreadyListed))
        ),
        "{relisted:?}"
    );
}

/// A reaction to an order's next event (the processor's to a placement) folds that event into
/// what the process knows instead of reading the stream; a later event that skips versions the
/// process has not seen is read from the store; and pricing reads a SKU's stream only until
/// the process has seen it listed.
#[tokio::test]
async fn reactions_and_pricing_read_the_store_only_for_what_the_process_has_not_seen() {
    let store = listed(5).await;
    let one = Commands::new(store.clone());
    let processor = Commands::new(store.clone());
    let order = place(&one).await;
    let stream = domain::envelope::stream_id(domain::order::STREAM_TYPE, order);
    let placed = store.read_stream(&stream, 1).await.unwrap().remove(0);
    let reads = store.calls(Op::ReadStream);

    let (version, state) = processor.orders.load_after(&placed).await.unwrap();
    assert_eq!(
        (version, state.status, state.total),
        (1, OrderStatus::Placed, 100)
    );
    assert_eq!(
        store.calls(Op::ReadStream),
        reads,
        "the placement itself was folded"
    );
    // Asking again about the same event, or an older one, answers from memory.
    processor.orders.load_after(&placed).await.unwrap();
    assert_eq!(store.calls(Op::ReadStream), reads);

    // Confirmed and cancelled by another process: the processor has seen neither.
    one.order(order, OrderCommand::Confirm, &metadata())
        .await
        .unwrap();
    one.order(order, OrderCommand::Cancel { reason: None }, &metadata())
        .await
        .unwrap();
    let cancelled = store.read_stream(&stream, 3).await.unwrap().remove(0);
    let reads = store.calls(Op::ReadStream);
    let (version, state) = processor.orders.load_after(&cancelled).await.unwrap();
    assert_eq!((version, state.status), (3, OrderStatus::Cancelled));
    assert_eq!(
        store.calls(Op::ReadStream),
        reads + 1,
        "a gap is read from the store"
    );

    // Pricing: the first order reads the SKU's stream, the next ones do not.
    place(&processor).await;
    let after_first = store.calls(Op::ReadStream);
    place(&processor).await;
    place(&processor).await;
    assert_eq!(
        store.calls(Op::ReadStream),
        after_first,
        "a seen listing is not read again"
    );
}
