//! Local HTTP fakes of cloud services that cannot be reached from here. Each enforces the
//! documented contract of its service (and says in its doc comment which documentation it
//! follows), so an adapter that passes against it speaks the real protocol.
//!
//! - [`cosmos`]: Azure Cosmos DB for NoSQL (master-key auth, documents, transactional batch,
//!   queries, change feed).
//! - [`notification_hubs`]: Azure Notification Hubs (SAS auth, installations, template sends).

pub mod cosmos;
pub mod notification_hubs;
pub mod service_bus;
