//! Catching up: the log after each projection's checkpoint, at start-up and every so often,
//! and the analytics folded into their totals a page at a time.

use domain::RecordedEvent;
use eventlog::LogCursor;

use super::{
    MAX_ATTEMPTS, ProjectionError, Projector, parse, projection_of, saved_cursor, stream_key,
};
use crate::analytics::{self, OrderFacts, Totals};
use crate::keys;
use crate::projection::Projection;
use crate::read_models::{Cutoff, order_until};
use crate::view_store::Doc;
use crate::views::OrderView;

/// Events read from the log per page of a catch-up.
const CATCH_UP_BATCH: usize = 1000;

impl Projector {
    /// Applies everything in the log after each projection's checkpoint, then moves the
    /// checkpoints. Run at start-up: with a cache that forgot everything (the in-memory one
    /// after a restart) this rebuilds every view. Answers the events folded.
    pub async fn catch_up(&self) -> Result<u64, ProjectionError> {
        self.catch_up_with(&mut |_| {}).await
    }

    /// [`Projector::catch_up`], telling `progress` how many events each page folded.
    pub async fn catch_up_with(
        &self,
        progress: &mut (dyn FnMut(u64) + Send),
    ) -> Result<u64, ProjectionError> {
        self.catch_up_these(&self.keeps, progress).await
    }

    /// [`Projector::catch_up`] of some of the projections this projector keeps.
    pub async fn catch_up_only(&self, projections: &[Projection]) -> Result<u64, ProjectionError> {
        let chosen: Vec<Projection> = projections
            .iter()
            .copied()
            .filter(|p| self.keeps(*p))
            .collect();
        self.catch_up_these(&chosen, &mut |_| {}).await
    }

    async fn catch_up_these(
        &self,
        projections: &[Projection],
        progress: &mut (dyn FnMut(u64) + Send),
    ) -> Result<u64, ProjectionError> {
        let mut folded = 0;
        for &projection in projections {
            folded += match projection {
                Projection::Orders | Projection::Catalog => {
                    self.catch_up_views(projection, progress).await?
                }
                Projection::Analytics => self.catch_up_analytics(progress).await?,
            };
        }
        Ok(folded)
    }

    /// The orders' or the catalog's catch-up, from its checkpoint.
    async fn catch_up_views(
        &self,
        projection: Projection,
        progress: &mut (dyn FnMut(u64) + Send),
    ) -> Result<u64, ProjectionError> {
        let checkpoint = self.name(projection, keys::checkpoint(projection));
        let (mut saved, mut cursor) = match self.views.get(&checkpoint).await? {
            Some(doc) => (doc.version, saved_cursor(&doc)),
            None => (0, LogCursor::start()),
        };
        let mut folded = 0;
        loop {
            let page = self.store.read_all(&cursor, CATCH_UP_BATCH).await?;
            if page.events.is_empty() {
                return Ok(folded);
            }
            for event in &page.events {
                if projection_of(event) == Some(projection) {
                    self.apply(projection, event).await?;
                }
                // The in-memory view store never makes the task wait, so a page would hold
                // its worker thread for milliseconds: let the requests queued behind it run.
                tokio::task::consume_budget().await;
            }
            folded += page.events.len() as u64;
            progress(page.events.len() as u64);
            cursor = page.next;
            // The document's version only counts saves, so that two projectors catching up
            // at once cannot move it back: the one that read an older count loses.
            let doc = Doc {
                version: saved + 1,
                body: serde_json::json!({ "cursor": cursor }).to_string(),
            };
            if self.views.put(&checkpoint, saved, doc).await? {
                saved += 1;
            }
        }
    }

    /// Folds the log after the analytics' cursor into their totals, a page at a time, each
    /// page written with its cursor compare-on-version: a page two projectors both fold is
    /// counted by the one that writes first, and the other folds on from there.
    async fn catch_up_analytics(
        &self,
        progress: &mut (dyn FnMut(u64) + Send),
    ) -> Result<u64, ProjectionError> {
        let key = self.name(Projection::Analytics, keys::ANALYTICS_KEY);
        let (mut folded, mut lost) = (0, 0);
        let (mut saved, mut state) = self.analytics_state(&key).await?;
        while lost < MAX_ATTEMPTS {
            let page = self.store.read_all(&state.cursor, CATCH_UP_BATCH).await?;
            if page.events.is_empty() {
                return Ok(folded);
            }
            for event in &page.events {
                let facts = match analytics::needs_facts(event) {
                    true => self.facts_before(event).await?,
                    false => None,
                };
                state.totals.apply(event, facts.as_ref())?;
                tokio::task::consume_budget().await;
            }
            state.cursor = page.next;
            if self
                .views
                .put(&key, saved, state.doc(saved + 1, &key)?)
                .await?
            {
                (saved, lost) = (saved + 1, 0);
                folded += page.events.len() as u64;
                progress(page.events.len() as u64);
            } else {
                // Another projector saved first: drop this page's fold, go on from its save.
                lost += 1;
                (saved, state) = self.analytics_state(&key).await?;
            }
        }
        Err(ProjectionError::Contention(key))
    }

    /// The analytics totals as stored, with their document's version (0: none yet).
    pub(crate) async fn analytics_state(
        &self,
        key: &str,
    ) -> Result<(u64, AnalyticsState), ProjectionError> {
        match self.views.get(key).await? {
            Some(doc) => Ok((
                doc.version,
                parse::<AnalyticsState>(key, &doc)?.unwrap_or_default(),
            )),
            None => Ok((0, AnalyticsState::default())),
        }
    }

    /// The order of `event`'s stream just before it: from its view when that has got that
    /// far (it usually has: the orders catch up first), else folded from its stream.
    async fn facts_before(
        &self,
        event: &RecordedEvent,
    ) -> Result<Option<OrderFacts>, ProjectionError> {
        let before = event.version - 1;
        if self.keeps(Projection::Orders) {
            let key = self.name(Projection::Orders, &keys::order(stream_key(event)));
            if let Some(doc) = self.views.get(&key).await?
                && let Some(view) = parse::<OrderView>(&key, &doc)?
                && let Some(facts) = OrderFacts::from_view(&view, before)
            {
                return Ok(Some(facts));
            }
        }
        let events = self.store.read_stream(&event.stream_id, 1).await?;
        let view = order_until(&events, Cutoff::Version(before))?;
        Ok(view.and_then(|view| OrderFacts::from_view(&view, before)))
    }
}

/// The analytics document: the totals and the log cursor they reflect, saved together.
#[derive(serde::Serialize, serde::Deserialize)]
pub(crate) struct AnalyticsState {
    pub(crate) cursor: LogCursor,
    pub(crate) totals: Totals,
}

impl Default for AnalyticsState {
    fn default() -> Self {
        Self {
            cursor: LogCursor::start(),
            totals: Totals::default(),
        }
    }
}

impl AnalyticsState {
    pub(super) fn doc(&self, version: u64, key: &str) -> Result<Doc, ProjectionError> {
        let body = serde_json::to_string(self).map_err(|e| ProjectionError::Corrupt {
            key: key.to_owned(),
            reason: e.to_string(),
        })?;
        Ok(Doc { version, body })
    }
}
