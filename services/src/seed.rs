//! The demo catalog an embedded server starts with, so a new user can order at once. Seeding
//! is skipped for SKUs that exist, so a restart never restocks.

use commands::{CommandFailure, Commands};
use domain::EventMetadata;
use domain::inventory::InventoryError;
use domain::values::{Currency, Sku};
use uuid::Uuid;

/// `(sku, name, unit price in cents, initial stock)`, all in EUR. The grinder is dear enough
/// that eight of them exceed the sandbox's payment limit; the teapot has one in stock.
pub const CATALOG: &[(&str, &str, u64, u32)] = &[
    ("TEA-001", "Sencha green tea, 100 g", 850, 50),
    ("COFFEE-001", "Single-origin coffee beans, 250 g", 1299, 40),
    ("MUG-001", "Stoneware mug", 1500, 25),
    ("KETTLE-001", "Gooseneck kettle", 4999, 10),
    ("GRINDER-001", "Burr coffee grinder", 12900, 20),
    ("TEAPOT-001", "Limited edition cast-iron teapot", 8900, 1),
];

pub async fn catalog(commands: &Commands) -> Result<usize, CommandFailure> {
    let metadata = EventMetadata {
        correlation_id: Uuid::now_v7(),
        actor: "service:seed".into(),
        ..Default::default()
    };
    let eur = Currency::parse("EUR").expect("EUR is a currency");
    let mut listed = 0;
    for &(sku, name, price, stock) in CATALOG {
        let sku = Sku::parse(sku).unwrap_or_else(|e| panic!("the catalog's SKU {sku}: {e}"));
        match commands
            .list_product(sku.clone(), name, price, eur.clone(), &metadata)
            .await
        {
            Ok(_) => {
                commands.restock(&sku, stock, &metadata).await?;
                listed += 1;
            }
            Err(CommandFailure::Inventory(InventoryError::AlreadyListed)) => {}
            Err(other) => return Err(other),
        }
    }
    Ok(listed)
}
