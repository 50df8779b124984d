//! Local HTTP fakes of cloud services that cannot be reached from here. Each enforces the
//! documented contract of its service (and says in its doc comment which documentation it
//! follows), so an adapter that passes against it speaks the real protocol.
//!
//! - [`cosmos`]: Azure Cosmos DB for NoSQL (master-key auth, documents, transactional batch,
//!   queries, change feed).
//! - [`notification_hubs`]: Azure Notification Hubs (SAS auth, installations, template sends).
//! - [`service_bus`]: Azure Service Bus (SAS auth, batch sends, peek-lock, dead letters, the
//!   management feed).
//!
//! [`azure_settings`] points a deployment's settings at all three.

pub mod cosmos;
pub mod notification_hubs;
pub mod service_bus;

use std::path::Path;

use services::config::{Secret, Settings};

/// The policy and key the tests' hubs accept (`FakeNotificationHubs::start("orders", HUB_KEY_NAME, HUB_KEY)`).
pub const HUB_KEY_NAME: &str = "orderflow-send";
pub const HUB_KEY: &str = "aHViLWtleQ==";

/// Embedded settings with data in `data`, their store, topic and pushes on the fakes (each
/// key in its setting, as the environment would give it), the hub named `orders`.
pub fn azure_settings(
    data: &Path,
    cosmos: &cosmos::CosmosFake,
    bus: &service_bus::ServiceBusFake,
    hubs: &notification_hubs::FakeNotificationHubs,
) -> Settings {
    let mut settings =
        Settings::embedded("127.0.0.1:0".parse().expect("an address"), data.to_owned());
    settings.store = format!(
        "cosmos://fake/{}?endpoint={}",
        cosmos.config.database, cosmos.endpoint
    );
    settings.cosmos_key = Some(Secret::new(cosmos.config.key.clone()));
    let config = &bus.config;
    settings.bus = format!(
        "servicebus://{}/{}?key-name={}&endpoint={}",
        config.namespace, config.topic, config.key_name, bus.base_url
    );
    settings.servicebus_key = Some(Secret::new(config.key.clone()));
    settings.push = format!(
        "notificationhubs://orderflow-test/orders?key-name={HUB_KEY_NAME}&endpoint={}",
        hubs.base_url()
    );
    settings.notificationhubs_key = Some(Secret::new(HUB_KEY));
    settings
}
