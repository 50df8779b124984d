//! Every name the read side writes in the view store, in one place. These are the names in
//! generation 0; the projector and the readers put them in the generation they use
//! (`projection::generation_name`), and `Projection::prefixes` must cover them all.

use std::fmt::Display;

use uuid::Uuid;

use crate::projection::Projection;

/// Where the projector's catch-up of the orders resumes (`{"cursor": …}`); a lagging value
/// only costs skipped duplicates.
pub const ORDERS_CHECKPOINT: &str = "projector:position";
/// The same for the catalog.
pub const CATALOG_CHECKPOINT: &str = "catalog:checkpoint";
/// Every listed SKU.
pub const CATALOG_INDEX: &str = "catalog";
/// The analytics totals and the log cursor they reflect, in one document.
pub const ANALYTICS_KEY: &str = "analytics:summary";
/// Every order, newest first (operators and analysts list these).
pub const ALL_ORDERS_INDEX: &str = "orders:all";

/// An order's view.
pub fn order(order_id: impl Display) -> String {
    format!("order:{order_id}")
}

/// A SKU's catalog item.
pub fn catalog_item(sku: impl Display) -> String {
    format!("catalog:{sku}")
}

/// The index of one customer's orders.
pub fn customer_index(customer_id: Uuid) -> String {
    format!("orders:customer:{customer_id}")
}

/// Where `projection`'s catch-up resumes, in each generation (the analytics keep their cursor
/// in their own document).
pub fn checkpoint(projection: Projection) -> &'static str {
    match projection {
        Projection::Orders => ORDERS_CHECKPOINT,
        Projection::Catalog => CATALOG_CHECKPOINT,
        Projection::Analytics => ANALYTICS_KEY,
    }
}
