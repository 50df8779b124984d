//! The projector: keeps the read models in the view store, one event at a time.
//!
//! A view is written only with the version of the last event folded into it, compare-on-version,
//! so that duplicates are skipped (`event.version <= view.version`), a gap is filled from the
//! event store (`event.version > view.version + 1`), and two projectors racing on one view
//! cannot undo each other. A view missing from the cache is rebuilt from its stream on read
//! ([`crate::ReadModels`]).
//!
//! In pieces:
//! - here: the projector, the generation it writes, and [`Projector::handle`] for the topic;
//! - [`apply`](self::apply): one event into the view of its stream (compare-on-version, gaps
//!   filled from the store), the order indexes, the announcement to waiting readers;
//! - [`catch_up`](self::catch_up): the log after each projection's checkpoint, and the
//!   analytics folded page by page;
//! - [`rebuild`](self::rebuild): a replay's fast fold of the whole log into a fresh
//!   generation, in three stages (read ahead, fold, write pages);
//! - the keys it writes are built in [`crate::keys`]; what readers ask is
//!   [`crate::ReadModels`].

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use domain::RecordedEvent;
use domain::envelope::DecodeError;
use domain::{inventory, order};
use eventlog::{EventStore, LogCursor, StoreError};
use serde::de::DeserializeOwned;

use crate::changes::OrderChanges;
use crate::projection::{Projection, current_generation, generation_name};
use crate::view_store::{Doc, ViewError, ViewStore};

mod apply;
mod catch_up;
mod rebuild;
#[cfg(test)]
mod tests;

pub const SUBSCRIPTION: &str = "projector";
/// Compare-on-version writes of one view lost to other writers before giving up.
const MAX_ATTEMPTS: usize = 16;

#[derive(Debug, thiserror::Error)]
pub enum ProjectionError {
    #[error(transparent)]
    View(#[from] ViewError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Decode(#[from] DecodeError),
    #[error("view {key} is unreadable: {reason}")]
    Corrupt { key: String, reason: String },
    #[error("view {0} kept changing under the projector")]
    Contention(String),
}

impl eventlog::Classify for ProjectionError {
    fn fault(&self) -> eventlog::Fault {
        match self {
            Self::View(error) => error.fault(),
            Self::Store(error) => error.fault(),
            Self::Decode(error) => error.fault(),
            Self::Corrupt { .. } => eventlog::Fault::Permanent,
            Self::Contention(_) => eventlog::Fault::Later(eventlog::fault::CONTENTION_PAUSE),
        }
    }
}

pub struct Projector {
    pub(crate) store: Arc<dyn EventStore>,
    pub(crate) views: Arc<dyn ViewStore>,
    /// Each projection's generation, by [`Projection::index`].
    pub(crate) generations: [AtomicU64; 3],
    /// The projections this projector keeps: all of them, or those a replay rebuilds.
    pub(crate) keeps: Vec<Projection>,
    /// Whether [`Projector::refresh_generation`] follows the generations readers use; a
    /// replay's projector stays on the one it builds.
    pub(crate) follows: bool,
    /// This process's readers waiting for an order view ([`Projector::order_at_least`]).
    pub(crate) changes: Arc<OrderChanges>,
}

impl Projector {
    /// A projector of every projection on the generations readers use; call
    /// [`Projector::refresh_generation`] before the first read, and then every so often, to
    /// follow a replay's switch.
    pub fn new(store: Arc<dyn EventStore>, views: Arc<dyn ViewStore>) -> Self {
        Self {
            store,
            views,
            generations: Default::default(),
            keeps: Projection::ALL.to_vec(),
            follows: true,
            changes: Arc::default(),
        }
    }

    /// A projector of `projections` on one generation (a replay builds with one).
    pub fn pinned(
        store: Arc<dyn EventStore>,
        views: Arc<dyn ViewStore>,
        generation: u64,
        projections: &[Projection],
    ) -> Self {
        Self {
            store,
            views,
            generations: std::array::from_fn(|_| AtomicU64::new(generation)),
            keeps: projections.to_vec(),
            follows: false,
            changes: Arc::default(),
        }
    }

    /// The readers waiting for order views in this process; [`OrderChanges::follow`] feeds
    /// them what projectors in other processes write.
    pub fn changes(&self) -> &Arc<OrderChanges> {
        &self.changes
    }

    pub fn generation(&self, projection: Projection) -> u64 {
        self.generations[projection.index()].load(Ordering::Acquire)
    }

    pub(crate) fn keeps(&self, projection: Projection) -> bool {
        self.keeps.contains(&projection)
    }

    /// Reads which generation of each projection readers use now and follows it.
    pub async fn refresh_generation(&self) -> Result<(), ProjectionError> {
        if !self.follows {
            return Ok(());
        }
        for projection in Projection::ALL {
            let current = current_generation(self.views.as_ref(), projection).await?;
            let previous = self.generations[projection.index()].swap(current, Ordering::AcqRel);
            if previous != current {
                tracing::info!(%projection, previous, current, "views switched to another generation");
            }
        }
        Ok(())
    }

    /// `name` in this projector's generation of `projection`.
    pub(crate) fn name(&self, projection: Projection, name: &str) -> String {
        generation_name(self.generation(projection), name)
    }

    /// Applies one event from the topic (or from catch-up) to the per-stream views it
    /// concerns. The analytics are not kept per event: [`Projector::catch_up`] folds the log
    /// into them.
    pub async fn handle(&self, event: &RecordedEvent) -> Result<(), ProjectionError> {
        let projection = match event.stream_type.as_str() {
            order::STREAM_TYPE => Projection::Orders,
            inventory::STREAM_TYPE => Projection::Catalog,
            _ => return Ok(()),
        };
        // Announced from the live path only: a catch-up after the cache was lost would publish
        // one message per event of the whole log, for readers that are not waiting.
        if let Some((view, from)) = self.apply(projection, event).await? {
            self.announce(&view, from).await;
        }
        Ok(())
    }
}

/// The per-stream projection `event` belongs to.
pub(crate) fn projection_of(event: &RecordedEvent) -> Option<Projection> {
    match event.stream_type.as_str() {
        order::STREAM_TYPE => Some(Projection::Orders),
        inventory::STREAM_TYPE => Some(Projection::Catalog),
        _ => None,
    }
}

pub(crate) fn stream_key(event: &RecordedEvent) -> &str {
    domain::envelope::stream_key(&event.stream_type, &event.stream_id).unwrap_or_default()
}

/// The cursor in the projector's checkpoint. Before log cursors (ADR 05) the document held
/// the SQL stores' position as its version and no cursor: that position is the cursor.
pub(crate) fn saved_cursor(doc: &Doc) -> LogCursor {
    #[derive(serde::Deserialize)]
    struct Saved {
        cursor: LogCursor,
    }
    match serde_json::from_str::<Saved>(&doc.body) {
        Ok(saved) => saved.cursor,
        Err(_) => LogCursor::at_position(doc.version),
    }
}

pub(crate) fn parse<V: DeserializeOwned>(
    key: &str,
    doc: &Doc,
) -> Result<Option<V>, ProjectionError> {
    serde_json::from_str(&doc.body)
        .map(Some)
        .map_err(|e| ProjectionError::Corrupt {
            key: key.to_owned(),
            reason: e.to_string(),
        })
}
