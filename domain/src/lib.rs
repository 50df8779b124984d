//! The pure core of orderflow: what an order and a SKU's stock may do, and nothing about how
//! they are stored or sent. No IO crate is allowed here (only cqrs-es, serde, uuid, chrono,
//! thiserror), so every rule can be tested in microseconds with cqrs-es's `TestFramework`.
//!
//! - [`values`]: validated value types (`Sku`, `Quantity`, `Currency`, `CustomerId`, addresses).
//! - [`order`]: the `Order` aggregate, its commands, events (`OrderPlaced`, ...) and errors.
//! - [`inventory`]: the `Inventory` aggregate, one per SKU: listing, restock, reservations.
//! - [`reservations`]: the units a SKU holds per order, in a map that is cheap to copy.
//! - [`envelope`]: the event envelope the store keeps, and decoding.
//! - [`upcast`]: schema evolution, the one place where older event versions become current.
//! - [`time`]: timestamps in JSON, written and read as chrono does, without its formatter.

pub mod envelope;
pub mod inventory;
pub mod order;
pub mod reservations;
pub mod time;
pub mod upcast;
pub mod values;

pub use envelope::{EventMetadata, NewEvent, RecordedEvent};
