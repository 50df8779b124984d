//! The read side of orderflow: read models kept from the event stream, and notifications.
//!
//! - [`view_store`]: the `ViewStore` port (versioned documents, sorted indexes, claims), shaped
//!   like Redis.
//! - [`views`]: the read models (`OrderView`, `CatalogItem`), each a fold of one stream.
//! - [`analytics`]: orders per status, revenue per day, top SKUs: a fold of the whole log.
//! - [`projection`]: the projections by name and their generations.
//! - [`projector`]: applies events to views compare-on-version, fills gaps from the store,
//!   rebuilds missing views on read, pages through a customer's orders, folds the log into
//!   the analytics.
//! - [`replay`]: rebuilds projections from the whole log into a new generation and switches
//!   readers to it at once.
//! - [`changes`]: order view writes announced to the readers waiting for them, in any process.
//! - [`notifier`]: status changes to the `PushSender` port and the browser's `LiveFeed`, once
//!   per event.

pub mod analytics;
pub mod changes;
pub mod notifier;
pub mod projection;
pub mod projector;
pub mod replay;
pub mod view_store;
pub mod views;

pub use notifier::{Installation, LiveFeed, Notification, Notifier, PushError, PushSender};
pub use projection::Projection;
pub use projector::{OrderPage, ProjectionError, Projector};
pub use view_store::{Claim, Doc, ViewError, ViewStore};
pub use views::{CatalogItem, OrderView};
