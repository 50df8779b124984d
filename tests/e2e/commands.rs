//! The command side under contention from two "processes" (two `Commands` with their own
//! caches and locks) on one event store: the store's expected-version check is what keeps
//! stock from going negative, not the in-process lock.

use std::sync::Arc;

use commands::{CommandError, Commands};
use domain::EventMetadata;
use domain::inventory::{InventoryCommand, InventoryError};
use domain::values::{Currency, Sku};
use infra::event_store::SqliteEventStore;
use uuid::Uuid;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_writers_with_their_own_caches_never_oversell() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(
        SqliteEventStore::open(&dir.path().join("s.db"))
            .await
            .unwrap(),
    );
    let (one, two) = (Commands::new(store.clone()), Commands::new(store.clone()));
    let sku = Sku::parse("HOT-1").unwrap();
    let metadata = EventMetadata {
        correlation_id: Uuid::now_v7(),
        actor: "test".into(),
        ..Default::default()
    };
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
