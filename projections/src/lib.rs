//! The read side of orderflow: read models kept from the event stream, and notifications.
//!
//! - [`view_store`]: the `ViewStore` port (versioned documents, sorted indexes, claims), shaped
//!   like Redis; its conformance suite, and the in-memory store (`MemoryViewStore`) that
//!   passes it, which the embedded mode and the read side's tests use.
//! - [`views`]: the read models (`OrderView`, `CatalogItem`), each a fold of one stream.
//! - [`analytics`]: orders per status, revenue per day, top SKUs: a fold of the whole log.
//! - [`projection`]: the projections by name and their generations.
//! - [`projector`]: writes the views: applies events compare-on-version and fills gaps from
//!   the store (`projector::apply`), catches up from checkpoints and folds the log into the
//!   analytics (`projector::catch_up`), rebuilds a fresh generation fast (`projector::rebuild`).
//! - [`read_models`]: what readers ask (`ReadModels`): an order's view, waiting for a version
//!   or as of a moment, pages of orders, the catalog, the analytics; read repair on the way.
//! - [`keys`]: every name the read side writes in the view store.
//! - [`replay`]: rebuilds projections from the whole log into a new generation and switches
//!   readers to it at once.
//! - [`changes`]: order view writes announced to the readers waiting for them, in any process.
//! - [`notifier`]: status changes to the `PushSender` port and the browser's `LiveFeed`, once
//!   per event.

pub mod analytics;
pub mod changes;
pub mod keys;
pub mod notifier;
pub mod projection;
pub mod projector;
pub mod read_models;
pub mod replay;
pub mod view_store;
pub mod views;

pub use notifier::{Installation, LiveFeed, Notification, Notifier, PushError, PushSender};
pub use projection::Projection;
pub use projector::{ProjectionError, Projector};
pub use read_models::{Cutoff, OrderPage, ReadModels};
pub use view_store::memory::MemoryViewStore;
pub use view_store::{Claim, Doc, ViewError, ViewStore};
pub use views::{CatalogItem, OrderView};
