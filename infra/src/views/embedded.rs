//! The embedded mode's view store: `projections`' in-memory store, written through to the
//! [`KeptFile`] for what must outlive a restart (every completed claim, and the documents and
//! indexes under the prefixes the caller names).

use std::sync::Arc;

use async_trait::async_trait;
use projections::MemoryViewStore;
use projections::view_store::ViewError;
use projections::view_store::memory::{Change, Snapshot, WriteThrough};

use crate::kept::{Keep, Kept, KeptFile};

/// A store that keeps its completed claims, and the documents and indexes whose names start
/// with one of `docs` and `indexes`, in `file`, starting with what `kept` holds.
pub fn keeping(
    file: Arc<KeptFile>,
    kept: &Kept,
    docs: &'static [&'static str],
    indexes: &'static [&'static str],
) -> MemoryViewStore {
    let start = Snapshot {
        done: kept.done.clone(),
        docs: kept.docs.clone(),
        index: kept.index.clone(),
    };
    MemoryViewStore::writing_through(
        Arc::new(KeptViews {
            file,
            docs,
            indexes,
        }),
        &start,
    )
}

struct KeptViews {
    file: Arc<KeptFile>,
    docs: &'static [&'static str],
    indexes: &'static [&'static str],
}

#[async_trait]
impl WriteThrough for KeptViews {
    fn keeps_doc(&self, key: &str) -> bool {
        self.docs.iter().any(|prefix| key.starts_with(prefix))
    }

    fn keeps_index(&self, index: &str) -> bool {
        self.indexes.iter().any(|prefix| index.starts_with(prefix))
    }

    async fn write(&self, changes: Vec<Change>) -> Result<(), ViewError> {
        let keeps = changes
            .into_iter()
            .map(|change| match change {
                Change::Done(key) => Keep::Done(key),
                Change::Doc(key, doc) => Keep::Doc(key, doc),
                Change::Index(index, score, member) => Keep::Index(index, score, member),
            })
            .collect();
        self.file.keep(keeps).await.map_err(ViewError::Unavailable)
    }
}
