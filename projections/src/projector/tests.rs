//! The projector on the in-memory stores, given/when/then: events applied in any order and
//! any number of times make the view their stream folds to; a reader waiting for a version is
//! answered by the write's announcement, not by its timer or the event store.

use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use domain::order::{OrderEvent, OrderLine, OrderStatus, STREAM_TYPE};
use domain::values::{Currency, CustomerId, Quantity, ShippingAddress, Sku};
use domain::{EventMetadata, NewEvent, RecordedEvent};
use eventlog::testing::{Op, Scripted};
use eventlog::{EventStore, MemoryEventStore};
use uuid::Uuid;

use crate::{MemoryViewStore, Projector, ReadModels, keys};

/// An order of two units at 450 placed by a new customer, confirmed, and then each of `more`,
/// as the store records them.
async fn given_an_order(
    store: &Arc<dyn EventStore>,
    more: Vec<OrderEvent>,
) -> (Uuid, CustomerId, Vec<RecordedEvent>) {
    let order_id = Uuid::new_v4();
    let customer_id = CustomerId(Uuid::new_v4());
    let placed = OrderEvent::OrderPlaced {
        order_id,
        customer_id,
        lines: vec![OrderLine {
            sku: Sku::parse("TEA-001").unwrap(),
            quantity: Quantity::parse(2).unwrap(),
            unit_price: 450,
        }],
        currency: Currency::parse("EUR").unwrap(),
        total: 900,
        shipping_address: ShippingAddress {
            name: "Ada".into(),
            line1: "1 Main St".into(),
            line2: None,
            city: "Berlin".into(),
            postal_code: "10115".into(),
            country: "DE".into(),
        },
    };
    let stream = domain::envelope::stream_id(STREAM_TYPE, order_id);
    let events: Vec<NewEvent> = [placed, OrderEvent::OrderConfirmed]
        .into_iter()
        .chain(more)
        .map(|event| {
            NewEvent::from_domain(Uuid::now_v7(), &event, Utc::now(), EventMetadata::default())
        })
        .collect();
    store
        .append(&stream, STREAM_TYPE, 0, events)
        .await
        .expect("append");
    let recorded = store.read_stream(&stream, 1).await.expect("read");
    (order_id, customer_id, recorded)
}

fn stores() -> (Arc<dyn EventStore>, Arc<MemoryViewStore>) {
    (
        Arc::new(MemoryEventStore::new()),
        Arc::new(MemoryViewStore::new()),
    )
}

#[tokio::test]
async fn a_later_event_seen_first_fills_the_gap_from_the_store() {
    let (store, views) = stores();
    let (order_id, _, events) = given_an_order(&store, Vec::new()).await;
    let projector = Arc::new(Projector::new(store.clone(), views));

    projector.handle(&events[1]).await.unwrap();
    projector.handle(&events[0]).await.unwrap();
    projector.handle(&events[1]).await.unwrap();

    let view = ReadModels::new(projector)
        .order(order_id)
        .await
        .unwrap()
        .expect("a view");
    assert_eq!(view.status, OrderStatus::Confirmed);
    assert_eq!(view.version, 2);
    assert_eq!(view.total, 900);
    assert_eq!(
        view.history.iter().map(|c| c.status).collect::<Vec<_>>(),
        vec![OrderStatus::Placed, OrderStatus::Confirmed],
        "each status once, in order"
    );
}

#[tokio::test]
async fn every_event_again_changes_nothing_and_lists_the_order_once() {
    let (store, views) = stores();
    let shipped = OrderEvent::OrderShipped {
        carrier: "DHL".into(),
        tracking_number: "JD1".into(),
    };
    let (order_id, customer, events) = given_an_order(&store, vec![shipped]).await;
    let projector = Arc::new(Projector::new(store.clone(), views.clone()));
    for event in &events {
        projector.handle(event).await.unwrap();
    }
    let read = ReadModels::new(projector.clone());
    let once = read.order(order_id).await.unwrap().expect("a view");

    for event in events.iter().rev().chain(&events) {
        projector.handle(event).await.unwrap();
    }

    assert_eq!(read.order(order_id).await.unwrap(), Some(once.clone()));
    assert_eq!(once.status, OrderStatus::Shipped);
    assert_eq!(once.tracking_number.as_deref(), Some("JD1"));
    let page = read
        .orders(&keys::customer_index(customer.0), None, None, 10)
        .await
        .unwrap();
    assert_eq!(
        page.items.iter().map(|v| v.order_id).collect::<Vec<_>>(),
        vec![order_id],
        "listed once for its customer"
    );
}

/// A reader waiting for an order's decision (`?min_version=`) in one process is answered as
/// soon as a projector in another process writes it: the write is announced on the view
/// store's channel. Time is paused once the events are in the store, so that the reader's own
/// timer (its re-read in case an announcement is lost) could only have answered it after
/// virtual time moved; it must not have moved.
#[tokio::test]
async fn a_waiting_reader_is_answered_by_the_announcement_not_its_timer() {
    waiting_reader_answered_by_announcements(true).await;
}

/// The same when the reader asks before even the order's first view was written (as a
/// client does right after its command was answered): it waits for that view instead of
/// folding it from the store.
#[tokio::test]
async fn a_reader_asking_before_the_first_view_waits_for_it_without_reading_the_store() {
    waiting_reader_answered_by_announcements(false).await;
}

async fn waiting_reader_answered_by_announcements(placed_view_written: bool) {
    let (store, views) = stores();
    let (order_id, _, events) = given_an_order(&store, Vec::new()).await;
    let projector = Projector::new(store.clone(), views.clone());
    let counted = Arc::new(Scripted::new(store.clone()));
    let web = Arc::new(Projector::new(counted.clone(), views.clone()));
    if placed_view_written {
        projector.handle(&events[0]).await.unwrap();
    }
    let (_stop, stopped) = tokio::sync::watch::channel(false);
    tokio::spawn(web.changes().clone().follow(views.clone(), stopped));

    tokio::time::pause();
    let started = tokio::time::Instant::now();
    let reader = ReadModels::new(web.clone());
    let waiting = tokio::spawn(async move {
        reader
            .order_at_least(order_id, 2, Duration::from_secs(10), |_| true)
            .await
    });
    for _ in 0..10 {
        tokio::task::yield_now().await;
    }
    assert_eq!(web.changes().watched(), 1, "the reader waits");
    assert!(!waiting.is_finished());
    for event in &events[usize::from(placed_view_written)..] {
        projector.handle(event).await.unwrap();
        tokio::task::yield_now().await;
    }

    let view = waiting.await.unwrap().unwrap().unwrap();
    assert_eq!(view.version, 2);
    assert_eq!(
        started.elapsed(),
        Duration::ZERO,
        "answered without waiting for a timer"
    );
    assert_eq!(web.changes().watched(), 0, "the reader stopped watching");
    assert_eq!(
        counted.calls(Op::ReadStream),
        0,
        "the reader never went to the store"
    );
}
