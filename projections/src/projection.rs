//! The read models by name, and their generations (ADR 06).
//!
//! Each projection has its own generation: generation 0 is its names as they are, generation
//! `g` puts `g{g}:` before every one of them. A replay builds the next generation of the
//! projections it rebuilds beside the current ones, then points each one's generation document
//! at it; the projections it does not rebuild are not touched.

use crate::projector::ProjectionError;
use crate::view_store::ViewStore;

/// One read model the projector keeps.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Projection {
    /// Order views, each customer's list of orders and the list of all orders.
    Orders,
    /// The catalog: each SKU with its stock.
    Catalog,
    /// Orders per status, revenue per day, top SKUs (`crate::analytics`).
    Analytics,
}

impl Projection {
    pub const ALL: [Self; 3] = [Self::Orders, Self::Catalog, Self::Analytics];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Orders => "orders",
            Self::Catalog => "catalog",
            Self::Analytics => "analytics",
        }
    }

    pub fn parse(raw: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|p| p.as_str() == raw)
    }

    /// `all` or a comma-separated list of names; each projection once, in [`Projection::ALL`]
    /// order.
    pub fn parse_list(raw: &str) -> Result<Vec<Self>, String> {
        if raw.trim() == "all" {
            return Ok(Self::ALL.to_vec());
        }
        let mut chosen = Vec::new();
        for name in raw.split(',').map(str::trim) {
            let projection = Self::parse(name).ok_or_else(|| {
                let known: Vec<&str> = Self::ALL.iter().map(|p| p.as_str()).collect();
                format!(
                    "unknown projection `{name}`: expected all or {}",
                    known.join(", ")
                )
            })?;
            chosen.push(projection);
        }
        chosen.sort();
        chosen.dedup();
        Ok(chosen)
    }

    /// The view-store document whose version is the generation readers use.
    pub fn generation_key(self) -> String {
        format!("projections:generation:{}", self.as_str())
    }

    /// Where every name of this projection starts in generation 0.
    fn prefixes(self) -> &'static [&'static str] {
        match self {
            // `projector:position` is the orders' checkpoint.
            Self::Orders => &["order:", "orders:", "projector:"],
            // The index `catalog`, the items `catalog:{SKU}`, the checkpoint.
            Self::Catalog => &["catalog"],
            Self::Analytics => &["analytics"],
        }
    }

    pub(crate) fn index(self) -> usize {
        self as usize
    }
}

impl std::fmt::Display for Projection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The generation of `projection` that readers use now (0 before any replay).
pub async fn current_generation(
    views: &dyn ViewStore,
    projection: Projection,
) -> Result<u64, ProjectionError> {
    Ok(views
        .get(&projection.generation_key())
        .await?
        .map_or(0, |doc| doc.version))
}

/// `name` in generation `generation`.
pub fn generation_name(generation: u64, name: &str) -> String {
    match generation {
        0 => name.to_owned(),
        g => format!("g{g}:{name}"),
    }
}

/// Deletes every document and index of one generation of `projection`; answers how many went.
pub async fn delete_generation(
    views: &dyn ViewStore,
    projection: Projection,
    generation: u64,
) -> Result<u64, ProjectionError> {
    let mut deleted = 0;
    for prefix in projection.prefixes() {
        deleted += views
            .delete_prefix(&generation_name(generation, prefix))
            .await?;
    }
    Ok(deleted)
}

#[cfg(test)]
mod tests {
    use super::Projection;

    #[test]
    fn a_list_of_projections_is_parsed_in_order_without_repeats() {
        assert_eq!(
            Projection::parse_list("analytics, orders,analytics"),
            Ok(vec![Projection::Orders, Projection::Analytics])
        );
        assert_eq!(Projection::parse_list("all"), Ok(Projection::ALL.to_vec()));
        let error = Projection::parse_list("orders,revenue").unwrap_err();
        assert!(error.contains("`revenue`"), "{error}");
        assert!(error.contains("orders, catalog, analytics"), "{error}");
    }
}
