//! The projector: keeps the read models in the view store, one event at a time.
//!
//! A view is written only with the version of the last event folded into it, compare-on-version,
//! so that duplicates are skipped (`event.version <= view.version`), a gap is filled from the
//! event store (`event.version > view.version + 1`), and two projectors racing on one view
//! cannot undo each other. A view missing from the cache is rebuilt from its stream on read.

use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use domain::RecordedEvent;
use domain::envelope::{DecodeError, decode, stream_id};
use domain::{inventory, order};
use eventlog::{EventStore, LogCursor, LogPage, StoreError};
use tokio::sync::mpsc;
use uuid::Uuid;

use crate::analytics::{self, OrderFacts, Totals};
use crate::changes::{ORDER_CHANGES_CHANNEL, OrderChanges, announcement};
use crate::projection::{Projection, current_generation, generation_name};
use crate::view_store::{Doc, ViewError, ViewStore};
use crate::views::{CatalogItem, OrderView, View};

pub const SUBSCRIPTION: &str = "projector";

/// Where the projector's catch-up of the orders resumes (`{"cursor": …}`); a lagging value
/// only costs skipped duplicates.
const ORDERS_CHECKPOINT: &str = "projector:position";
/// The same for the catalog.
const CATALOG_CHECKPOINT: &str = "catalog:checkpoint";
const CATALOG_INDEX: &str = "catalog";
/// The analytics totals and the log cursor they reflect, in one document.
pub const ANALYTICS_KEY: &str = "analytics:summary";
/// Every order, newest first (operators and analysts list these).
pub const ALL_ORDERS_INDEX: &str = "orders:all";
const MAX_ATTEMPTS: usize = 16;
/// A reader waiting for an order view re-reads it after these pauses (doubling) even when no
/// announcement woke it: announcements are best effort.
const FIRST_RECHECK: Duration = Duration::from_millis(25);
const LAST_RECHECK: Duration = Duration::from_millis(200);
const CATCH_UP_BATCH: usize = 1000;
/// Events per page of a rebuild: each page is one pipelined write of the views it changed.
const REBUILD_PAGE: usize = 5000;
/// Writes in flight at once for a page of a rebuild, beside its index entries.
const PAGE_WRITERS: usize = 2;
/// Pages a rebuild's stage may run ahead of the next.
const STAGE_DEPTH: usize = 2;

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
            Self::Corrupt { .. } => eventlog::Fault::Message,
            Self::Contention(_) => eventlog::Fault::Later(eventlog::fault::CONTENTION_PAUSE),
        }
    }
}

/// The index of one customer's orders.
pub fn customer_index(customer_id: Uuid) -> String {
    format!("orders:customer:{customer_id}")
}

/// A point in an order's history.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cutoff {
    /// Up to and including this stream version.
    Version(u64),
    /// Up to and including this moment.
    Time(chrono::DateTime<chrono::Utc>),
}

impl Cutoff {
    /// Whether `event` happened at or before this point.
    pub fn includes(&self, event: &RecordedEvent) -> bool {
        match *self {
            Cutoff::Version(v) => event.version <= v,
            Cutoff::Time(t) => event.occurred_at <= t,
        }
    }
}

/// The order folded from the events of its stream (oldest first) up to and including
/// `cutoff`; `None` if it did not exist yet.
pub fn order_until(
    events: &[RecordedEvent],
    cutoff: Cutoff,
) -> Result<Option<OrderView>, DecodeError> {
    let upto = events.iter().take_while(|e| cutoff.includes(e)).count();
    if upto == 0 {
        return Ok(None);
    }
    crate::views::fold(&events[..upto]).map(Some)
}

/// A page of orders and the cursor of the next one.
#[derive(Debug, Clone, PartialEq)]
pub struct OrderPage {
    pub items: Vec<OrderView>,
    pub next_cursor: Option<String>,
}

pub struct Projector {
    store: Arc<dyn EventStore>,
    views: Arc<dyn ViewStore>,
    /// Each projection's generation, by [`Projection::index`].
    generations: [AtomicU64; 3],
    /// The projections this projector keeps: all of them, or those a replay rebuilds.
    keeps: Vec<Projection>,
    /// Whether [`Projector::refresh_generation`] follows the generations readers use; a
    /// replay's projector stays on the one it builds.
    follows: bool,
    /// This process's readers waiting for an order view ([`Projector::order_at_least`]).
    changes: Arc<OrderChanges>,
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

    fn keeps(&self, projection: Projection) -> bool {
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
    fn name(&self, projection: Projection, name: &str) -> String {
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

    /// Applies `event` to `projection`'s view of its stream, if this projector keeps it, and
    /// answers an order's view as written with its version before (to announce).
    async fn apply(
        &self,
        projection: Projection,
        event: &RecordedEvent,
    ) -> Result<Option<(OrderView, u64)>, ProjectionError> {
        if !self.keeps(projection) {
            return Ok(None);
        }
        let member = stream_key(event);
        match projection {
            Projection::Orders => {
                let key = self.name(projection, &format!("order:{member}"));
                let written = self
                    .project::<OrderView>(&key, &event.stream_id, Some(event))
                    .await?;
                if let Some((view, 0)) = &written {
                    self.index_order(view).await?;
                }
                return Ok(written);
            }
            Projection::Catalog => {
                let key = self.name(projection, &format!("catalog:{member}"));
                if let Some((_, 0)) = self
                    .project::<CatalogItem>(&key, &event.stream_id, Some(event))
                    .await?
                {
                    self.views
                        .index_add(&self.name(projection, CATALOG_INDEX), 0, member)
                        .await?;
                }
            }
            Projection::Analytics => {}
        }
        Ok(None)
    }

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
        let checkpoint = self.name(projection, checkpoint_of(projection));
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
        let key = self.name(Projection::Analytics, ANALYTICS_KEY);
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
    async fn analytics_state(&self, key: &str) -> Result<(u64, AnalyticsState), ProjectionError> {
        match self.views.get(key).await? {
            Some(doc) => Ok((
                doc.version,
                parse::<AnalyticsState>(key, &doc)?.unwrap_or_default(),
            )),
            None => Ok((0, AnalyticsState::default())),
        }
    }

    /// The analytics totals of the generation readers use; `lag` is how many events of the
    /// log they have not folded yet, when the store can tell.
    pub async fn analytics(&self) -> Result<(Totals, Option<u64>), ProjectionError> {
        let key = self.name(Projection::Analytics, ANALYTICS_KEY);
        let (_, state) = self.analytics_state(&key).await?;
        let lag = self.store.lag(&state.cursor).await?;
        Ok((state.totals, lag))
    }

    /// The order of `event`'s stream just before it: from its view when that has got that
    /// far (it usually has: the orders catch up first), else folded from its stream.
    async fn facts_before(
        &self,
        event: &RecordedEvent,
    ) -> Result<Option<OrderFacts>, ProjectionError> {
        let before = event.version - 1;
        if self.keeps(Projection::Orders) {
            let key = self.name(Projection::Orders, &format!("order:{}", stream_key(event)));
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

    /// Folds the whole log into this projector's (pinned, fresh) generation of the
    /// projections it keeps, the fast way: the views live in memory while the log streams
    /// by, and each page's changed views go out in one pipelined, unchecked
    /// [`ViewStore::overwrite_many`] (nobody else writes this generation before the switch)
    /// with its new index entries in one `index_add_many`, instead of a read and a
    /// compare-on-version write per event. Three stages run at once: a task reads the log
    /// ahead, this one folds, a task writes the pages in order. Answers the events folded;
    /// `progress` hears of each page once it is written. Memory grows with the number of
    /// streams.
    pub async fn rebuild(
        &self,
        progress: &mut (dyn FnMut(u64) + Send),
    ) -> Result<u64, ProjectionError> {
        let (pages_tx, mut pages) = mpsc::channel(STAGE_DEPTH);
        let reader = tokio::spawn(read_ahead(self.store.clone(), pages_tx));
        let (writes_tx, writes) = mpsc::channel(STAGE_DEPTH);
        let (written_tx, mut written) = mpsc::unbounded_channel();
        let writer = tokio::spawn(write_pages(self.views.clone(), writes, written_tx));

        let folded = self
            .fold_pages(&mut pages, &writes_tx, &mut written, progress)
            .await;
        // The writer finishes (or fails) before the rebuild answers, so nothing of it lands
        // after a failed replay has deleted the generation.
        drop(writes_tx);
        let wrote = writer.await.unwrap_or_else(|e| {
            Err(ViewError::Unavailable(format!(
                "the rebuild's writer stopped: {e}"
            )))
        });
        reader.abort();
        let folded = folded?;
        wrote?;
        while let Ok(n) = written.try_recv() {
            progress(n);
        }
        Ok(folded)
    }

    /// The rebuild's middle stage: folds each page read and hands its writes on.
    async fn fold_pages(
        &self,
        pages: &mut mpsc::Receiver<Result<LogPage, StoreError>>,
        writes: &mpsc::Sender<PageWrites>,
        written: &mut mpsc::UnboundedReceiver<u64>,
        progress: &mut (dyn FnMut(u64) + Send),
    ) -> Result<u64, ProjectionError> {
        let mut built = Rebuild::default();
        let (mut folded, mut saves) = (0, 0);
        while let Some(page) = pages.recv().await {
            let page = page?;
            if page.events.is_empty() {
                break;
            }
            for event in &page.events {
                built.fold(event, &self.keeps)?;
            }
            saves += 1;
            let page_writes = self.page_writes(&mut built, &page.next, saves, page.events.len())?;
            if writes.send(page_writes).await.is_err() {
                // The writer stopped: its error is the rebuild's.
                break;
            }
            folded += page.events.len() as u64;
            while let Ok(n) = written.try_recv() {
                progress(n);
            }
        }
        // Freeing every view built (a million events make 200,000 orders) took a tenth of
        // the rebuild; nothing waits for it.
        tokio::task::spawn_blocking(move || drop(built));
        Ok(folded)
    }

    /// A rebuild's page: the views it changed, its new index entries and, for each
    /// projection, where it got to in the log (save number `saves`).
    fn page_writes(
        &self,
        built: &mut Rebuild,
        cursor: &LogCursor,
        saves: u64,
        events: usize,
    ) -> Result<PageWrites, ProjectionError> {
        let mut docs = Vec::with_capacity(built.changed_orders.len() + built.changed_catalog.len());
        collect_writes(
            &mut docs,
            &mut built.orders,
            &mut built.changed_orders,
            |k| self.name(Projection::Orders, &format!("order:{k}")),
        )?;
        collect_writes(
            &mut docs,
            &mut built.catalog,
            &mut built.changed_catalog,
            |k| self.name(Projection::Catalog, &format!("catalog:{k}")),
        )?;
        let mut checkpoints = Vec::with_capacity(self.keeps.len());
        for &projection in &self.keeps {
            let key = self.name(projection, checkpoint_of(projection));
            let doc = match projection {
                Projection::Analytics => AnalyticsState {
                    cursor: cursor.clone(),
                    totals: built.totals.clone(),
                }
                .doc(saves, &key)?,
                _ => Doc {
                    version: saves,
                    body: serde_json::json!({ "cursor": cursor }).to_string(),
                },
            };
            checkpoints.push((key, doc));
        }
        let indexes = std::mem::take(&mut built.indexes)
            .into_iter()
            .map(|(projection, index, score, member)| {
                (self.name(projection, &index), score, member)
            })
            .collect();
        Ok(PageWrites {
            docs,
            indexes,
            checkpoints,
            events: events as u64,
        })
    }

    /// The order's view; when the cache has none, it is folded from the stream and written
    /// back. `None` when the order does not exist.
    pub async fn order(&self, order_id: Uuid) -> Result<Option<OrderView>, ProjectionError> {
        match self.cached_order(order_id).await? {
            Some(view) => Ok(Some(view)),
            None => self.refresh_order(order_id).await,
        }
    }

    /// The order's view as the cache has it.
    async fn cached_order(&self, order_id: Uuid) -> Result<Option<OrderView>, ProjectionError> {
        let key = self.name(Projection::Orders, &format!("order:{order_id}"));
        match self.views.get(&key).await? {
            Some(doc) => parse(&key, &doc),
            None => Ok(None),
        }
    }

    /// Brings the order's view up to the stream's head, from the event store.
    pub async fn refresh_order(
        &self,
        order_id: Uuid,
    ) -> Result<Option<OrderView>, ProjectionError> {
        let key = self.name(Projection::Orders, &format!("order:{order_id}"));
        let stream = stream_id(order::STREAM_TYPE, order_id);
        match self.project::<OrderView>(&key, &stream, None).await? {
            Some((view, from)) => {
                if from == 0 {
                    self.index_order(&view).await?;
                }
                self.announce(&view, from).await;
                Ok(Some(view))
            }
            None => Ok(None),
        }
    }

    /// Waits until the order's view reaches `min_version`, up to `wait`; then, if the cache is
    /// still behind, catches the view up from the store. Read-your-writes for a version that a
    /// command returned. An order `visible` refuses is `None` as soon as it is seen, without
    /// waiting: a stranger must not learn from the wait that the order exists.
    pub async fn order_at_least(
        &self,
        order_id: Uuid,
        min_version: u64,
        wait: Duration,
        visible: impl Fn(&OrderView) -> bool,
    ) -> Result<Option<OrderView>, ProjectionError> {
        let deadline = tokio::time::Instant::now() + wait;
        // Watching before the first read: a write in between still wakes this reader.
        let mut changed = self.changes.watch(order_id);
        let mut pause = FIRST_RECHECK;
        // A reader usually asks as soon as its command was answered, before the projector
        // has written the order's first view: it waits for that once (the announcement, or
        // the first recheck) before folding the view from the store itself.
        if self.cached_order(order_id).await?.is_none() {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            let _ = tokio::time::timeout(FIRST_RECHECK.min(left), changed.changed()).await;
        }
        loop {
            let view = self.order(order_id).await?;
            match &view {
                Some(v) if !visible(v) => return Ok(None),
                Some(v) if v.version >= min_version => return Ok(view),
                None => return Ok(None),
                Some(_) if tokio::time::Instant::now() >= deadline => {
                    return self.refresh_order(order_id).await;
                }
                Some(_) => {}
            }
            // Woken by the announcement of a write; the timer only in case one was lost.
            tokio::select! {
                _ = changed.changed() => {}
                _ = tokio::time::sleep(pause.min(deadline - tokio::time::Instant::now())) => {
                    pause = (pause * 2).min(LAST_RECHECK);
                }
            }
        }
    }

    /// Tells the readers waiting for this order, in every process, that its view was written
    /// (when it was: `from` is the version before). Best effort: a lost announcement only
    /// leaves a reader to its timer.
    async fn announce(&self, view: &OrderView, from: u64) {
        if view.version <= from {
            return;
        }
        self.changes.changed(view.order_id, view.version);
        let message = announcement(view.order_id, view.version);
        if let Err(error) = self.views.publish(ORDER_CHANGES_CHANNEL, &message).await {
            tracing::debug!(%error, "an order view change was not announced");
        }
    }

    /// A page of the orders in `index`, newest first, optionally only those in `status`.
    /// `next_cursor` is set only when another matching order exists.
    pub async fn orders(
        &self,
        index: &str,
        status: Option<&str>,
        cursor: Option<(i64, String)>,
        limit: usize,
    ) -> Result<OrderPage, ProjectionError> {
        let batch_size = (limit + 1).max(20);
        let mut before = cursor;
        let mut items: Vec<(OrderView, (i64, String))> = Vec::with_capacity(limit + 1);
        'scan: loop {
            let batch = self
                .views
                .index_page(
                    &self.name(Projection::Orders, index),
                    before.clone(),
                    batch_size,
                )
                .await?;
            let exhausted = batch.len() < batch_size;
            for (score, member) in batch {
                before = Some((score, member.clone()));
                let Ok(order_id) = Uuid::parse_str(&member) else {
                    continue;
                };
                let Some(view) = self.order(order_id).await? else {
                    continue;
                };
                if status.is_none_or(|s| s == view.status) {
                    items.push((view, (score, member)));
                    if items.len() > limit {
                        break 'scan;
                    }
                }
            }
            if exhausted {
                break;
            }
        }
        let more = items.len() > limit;
        items.truncate(limit);
        let next_cursor = more
            .then(|| items.last().map(|(_, (s, m))| format!("{s}_{m}")))
            .flatten();
        Ok(OrderPage {
            items: items.into_iter().map(|(view, _)| view).collect(),
            next_cursor,
        })
    }

    /// The order folded from its events up to and including `cutoff`: what it looked like
    /// then. `None` if the order did not exist yet (or at all).
    pub async fn order_as_of(
        &self,
        order_id: Uuid,
        cutoff: Cutoff,
    ) -> Result<Option<OrderView>, ProjectionError> {
        let stream = stream_id(order::STREAM_TYPE, order_id);
        let events = self.store.read_stream(&stream, 1).await?;
        Ok(order_until(&events, cutoff)?)
    }

    /// The catalog, by SKU.
    pub async fn catalog(&self) -> Result<Vec<CatalogItem>, ProjectionError> {
        let mut items = Vec::new();
        let mut before = None;
        loop {
            let batch = self
                .views
                .index_page(&self.name(Projection::Catalog, CATALOG_INDEX), before, 500)
                .await?;
            let Some(last) = batch.last().cloned() else {
                break;
            };
            for (_, sku) in &batch {
                let key = self.name(Projection::Catalog, &format!("catalog:{sku}"));
                if let Some(doc) = self.views.get(&key).await? {
                    items.extend(parse::<CatalogItem>(&key, &doc)?);
                }
            }
            before = Some(last);
        }
        items.sort_by(|a, b| a.sku.cmp(&b.sku));
        Ok(items)
    }

    /// Folds what the view lacks into it and writes it compare-on-version. Returns the new
    /// view and the version it had before, or `None` if the stream is empty or `event` is
    /// already in the view (then the stored view is not even parsed: the periodic catch-up
    /// meets thousands of those).
    async fn project<V: View>(
        &self,
        key: &str,
        stream: &str,
        event: Option<&RecordedEvent>,
    ) -> Result<Option<(V, u64)>, ProjectionError> {
        for _ in 0..MAX_ATTEMPTS {
            let stored = self.views.get(key).await?;
            let version = stored.as_ref().map_or(0, |doc| doc.version);
            if event.is_some_and(|e| e.version <= version) {
                return Ok(None);
            }
            let mut view = match &stored {
                Some(doc) => parse::<V>(key, doc)?.unwrap_or_default(),
                None => V::default(),
            };
            // The next event itself, without a copy; a gap is filled from the store.
            let pending = match event {
                Some(e) if e.version == version + 1 => Cow::Borrowed(std::slice::from_ref(e)),
                _ => Cow::Owned(self.store.read_stream(stream, version + 1).await?),
            };
            let Some(last) = pending.last() else {
                return Ok((version > 0).then_some((view, version)));
            };
            let new_version = last.version;
            for e in pending.iter() {
                view.apply(e)?;
            }
            let body = serde_json::to_string(&view).map_err(|e| ProjectionError::Corrupt {
                key: key.to_owned(),
                reason: e.to_string(),
            })?;
            let doc = Doc {
                version: new_version,
                body,
            };
            if self.views.put(key, version, doc).await? {
                return Ok(Some((view, version)));
            }
        }
        Err(ProjectionError::Contention(key.to_owned()))
    }

    async fn index_order(&self, view: &OrderView) -> Result<(), ProjectionError> {
        let score = view.placed_at.timestamp_micros();
        let member = view.order_id.to_string();
        self.views
            .index_add(
                &self.name(Projection::Orders, &customer_index(view.customer_id)),
                score,
                &member,
            )
            .await?;
        self.views
            .index_add(
                &self.name(Projection::Orders, ALL_ORDERS_INDEX),
                score,
                &member,
            )
            .await?;
        Ok(())
    }
}

/// A view a rebuild keeps in memory: its stream version and the version last written.
#[derive(Default)]
struct Built<V> {
    view: V,
    version: u64,
    written: u64,
}

impl<V: View> Built<V> {
    /// The stream's next event; the log gives each stream's events in order, without gaps.
    fn apply(&mut self, event: &RecordedEvent) -> Result<(), ProjectionError> {
        self.check_next(event)?;
        self.view.apply(event)?;
        self.version = event.version;
        Ok(())
    }

    fn check_next(&self, event: &RecordedEvent) -> Result<(), ProjectionError> {
        if event.version == self.version + 1 {
            return Ok(());
        }
        Err(ProjectionError::Corrupt {
            key: event.stream_id.clone(),
            reason: format!(
                "the log gave version {} after version {}",
                event.version, self.version
            ),
        })
    }
}

/// The views of `built` that `changed` names (each once: the page's first change to it) as
/// documents to write, marked written.
fn collect_writes<V: View>(
    docs: &mut Vec<(String, Doc)>,
    built: &mut HashMap<String, Built<V>>,
    changed: &mut Vec<String>,
    name: impl Fn(&str) -> String,
) -> Result<(), ProjectionError> {
    for key in changed.drain(..) {
        let Some(built) = built.get_mut(&key) else {
            continue;
        };
        let name = name(&key);
        let body = serde_json::to_string(&built.view).map_err(|e| ProjectionError::Corrupt {
            key: name.clone(),
            reason: e.to_string(),
        })?;
        let doc = Doc {
            version: built.version,
            body,
        };
        docs.push((name, doc));
        built.written = built.version;
    }
    Ok(())
}

/// A page of a rebuild, ready to write.
struct PageWrites {
    /// The views the page changed, each once.
    docs: Vec<(String, Doc)>,
    indexes: Vec<(String, i64, String)>,
    /// Where each projection got to, written once the rest of the page is.
    checkpoints: Vec<(String, Doc)>,
    /// Events of the log it covers.
    events: u64,
}

/// The rebuild's first stage: reads the log from its start, a page ahead of the folding,
/// until a page is empty or a read fails.
async fn read_ahead(store: Arc<dyn EventStore>, pages: mpsc::Sender<Result<LogPage, StoreError>>) {
    let mut cursor = LogCursor::start();
    loop {
        let page = store.read_all(&cursor, REBUILD_PAGE).await;
        let last = match &page {
            Ok(page) => {
                cursor = page.next.clone();
                page.events.is_empty()
            }
            Err(_) => true,
        };
        if pages.send(page).await.is_err() || last {
            return;
        }
    }
}

/// The rebuild's last stage: writes the pages in the order they were folded, so a view's
/// later version always lands last, and tells how many events each covered.
///
/// Within a page the writes go out at once, in [`PAGE_WRITERS`] parts of its views beside its
/// index entries: one call at a time left the cache server idle while the client encoded the
/// next call, and the client idle while the server ran it. The parts hold different keys (a
/// page changes each view once), so their order does not matter; the checkpoints go last.
async fn write_pages(
    views: Arc<dyn ViewStore>,
    mut pages: mpsc::Receiver<PageWrites>,
    written: mpsc::UnboundedSender<u64>,
) -> Result<(), ViewError> {
    while let Some(page) = pages.recv().await {
        let mut docs = page.docs;
        let part = docs.len().div_ceil(PAGE_WRITERS).max(1);
        let mut writes = Vec::with_capacity(PAGE_WRITERS + 1);
        while docs.len() > part {
            let rest = docs.split_off(docs.len() - part);
            writes.push(views.overwrite_many(rest));
        }
        writes.push(views.overwrite_many(docs));
        writes.push(views.index_add_many(page.indexes));
        futures_util::future::try_join_all(writes).await?;
        views.overwrite_many(page.checkpoints).await?;
        let _ = written.send(page.events);
    }
    Ok(())
}

/// Where `projection`'s catch-up resumes, in each generation.
fn checkpoint_of(projection: Projection) -> &'static str {
    match projection {
        Projection::Orders => ORDERS_CHECKPOINT,
        Projection::Catalog => CATALOG_CHECKPOINT,
        Projection::Analytics => ANALYTICS_KEY,
    }
}

/// The per-stream projection `event` belongs to.
fn projection_of(event: &RecordedEvent) -> Option<Projection> {
    match event.stream_type.as_str() {
        order::STREAM_TYPE => Some(Projection::Orders),
        inventory::STREAM_TYPE => Some(Projection::Catalog),
        _ => None,
    }
}

/// The analytics document: the totals and the log cursor they reflect, saved together.
#[derive(serde::Serialize, serde::Deserialize)]
struct AnalyticsState {
    cursor: LogCursor,
    totals: Totals,
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
    fn doc(&self, version: u64, key: &str) -> Result<Doc, ProjectionError> {
        let body = serde_json::to_string(self).map_err(|e| ProjectionError::Corrupt {
            key: key.to_owned(),
            reason: e.to_string(),
        })?;
        Ok(Doc { version, body })
    }
}

/// What a rebuild keeps in memory while the log streams by.
#[derive(Default)]
struct Rebuild {
    orders: HashMap<String, Built<OrderView>>,
    catalog: HashMap<String, Built<CatalogItem>>,
    totals: Totals,
    /// Views changed since the last page was written, each once.
    changed_orders: Vec<String>,
    changed_catalog: Vec<String>,
    /// New index entries since then: `(projection, index, score, member)`.
    indexes: Vec<(Projection, String, i64, String)>,
}

impl Rebuild {
    /// Folds the log's next event into the projections in `keeps`. The orders are kept in
    /// memory for the analytics too, which need each order as it was before an event.
    fn fold(&mut self, event: &RecordedEvent, keeps: &[Projection]) -> Result<(), ProjectionError> {
        let keeps_orders = keeps.contains(&Projection::Orders);
        let keeps_analytics = keeps.contains(&Projection::Analytics);
        let key = stream_key(event).to_owned();
        match projection_of(event) {
            Some(Projection::Orders) if keeps_orders || keeps_analytics => {
                let built = self.orders.entry(key.clone()).or_default();
                built.check_next(event)?;
                let decoded = decode::<order::OrderEvent>(event)?;
                if keeps_analytics {
                    let facts = analytics::needs_facts(event)
                        .then(|| OrderFacts::from_view(&built.view, event.version - 1))
                        .flatten();
                    self.totals.apply_order(event, &decoded, facts.as_ref())?;
                }
                built.view.apply_decoded(event, decoded);
                built.version = event.version;
                if !keeps_orders {
                    return Ok(());
                }
                if built.version == built.written + 1 {
                    self.changed_orders.push(key.clone());
                }
                if event.version == 1 {
                    let score = built.view.placed_at.timestamp_micros();
                    let customer = customer_index(built.view.customer_id);
                    self.indexes
                        .push((Projection::Orders, customer, score, key.clone()));
                    let all = ALL_ORDERS_INDEX.to_owned();
                    self.indexes.push((Projection::Orders, all, score, key));
                }
            }
            Some(Projection::Catalog) if keeps.contains(&Projection::Catalog) => {
                if keeps_analytics {
                    self.totals.count(event);
                }
                let built = self.catalog.entry(key.clone()).or_default();
                built.apply(event)?;
                if built.version == built.written + 1 {
                    self.changed_catalog.push(key.clone());
                }
                if event.version == 1 {
                    let index = CATALOG_INDEX.to_owned();
                    self.indexes.push((Projection::Catalog, index, 0, key));
                }
            }
            _ if keeps_analytics => self.totals.apply(event, None)?,
            _ => {}
        }
        Ok(())
    }
}

fn stream_key(event: &RecordedEvent) -> &str {
    domain::envelope::stream_key(&event.stream_type, &event.stream_id).unwrap_or_default()
}

/// The cursor in the projector's checkpoint. Before log cursors (ADR 05) the document held
/// the SQL stores' position as its version and no cursor: that position is the cursor.
fn saved_cursor(doc: &Doc) -> LogCursor {
    #[derive(serde::Deserialize)]
    struct Saved {
        cursor: LogCursor,
    }
    match serde_json::from_str::<Saved>(&doc.body) {
        Ok(saved) => saved.cursor,
        Err(_) => LogCursor::at_position(doc.version),
    }
}

fn parse<V: serde::de::DeserializeOwned>(
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

/// Reads a `next_cursor`; `None` if it is not one.
pub fn parse_cursor(cursor: &str) -> Option<(i64, String)> {
    let (score, member) = cursor.split_once('_')?;
    Uuid::parse_str(member).ok()?;
    Some((score.parse().ok()?, member.to_owned()))
}
