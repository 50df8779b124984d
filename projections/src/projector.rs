//! The projector: keeps the read models in the view store, one event at a time.
//!
//! A view is written only with the version of the last event folded into it, compare-on-version,
//! so that duplicates are skipped (`event.version <= view.version`), a gap is filled from the
//! event store (`event.version > view.version + 1`), and two projectors racing on one view
//! cannot undo each other. A view missing from the cache is rebuilt from its stream on read.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use commands::store::{EventStore, LogCursor, StoreError};
use domain::RecordedEvent;
use domain::envelope::{DecodeError, stream_id};
use domain::{inventory, order};
use uuid::Uuid;

use crate::view_store::{Doc, ViewError, ViewStore};
use crate::views::{CatalogItem, OrderView, View};

pub const SUBSCRIPTION: &str = "projector";

/// Where the projector's catch-up resumes (`{"cursor": …}`); a lagging value only costs
/// skipped duplicates.
const CHECKPOINT_KEY: &str = "projector:position";
const CATALOG_INDEX: &str = "catalog";
/// Every order, newest first (operators and analysts list these).
pub const ALL_ORDERS_INDEX: &str = "orders:all";
const MAX_ATTEMPTS: usize = 16;
const CATCH_UP_BATCH: usize = 1000;
/// Events per page of a rebuild: each page is one pipelined write of the views it changed.
const REBUILD_PAGE: usize = 5000;

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
    generation: Generation,
}

/// Which generation of the views a projector reads and writes (ADR 06): generation 0 is the
/// names as they are, generation `g` puts `g{g}:` before every name. A replay builds the
/// next generation beside the current one and then points [`GENERATION_KEY`] at it.
enum Generation {
    /// The one [`GENERATION_KEY`] names, as last read by [`Projector::refresh_generation`].
    Current(AtomicU64),
    /// A replay's, fixed.
    Pinned(u64),
}

/// The view store document whose version is the generation readers use.
pub const GENERATION_KEY: &str = "projections:generation";

/// Where the names of generation 0 start; a generation above 0 is `g{n}:` before them.
const GENERATION_ZERO_PREFIXES: [&str; 4] = ["order:", "orders:", "catalog", "projector:"];

impl Projector {
    /// A projector on the current generation; call [`Projector::refresh_generation`] before
    /// the first read, and then every so often, to follow a replay's switch.
    pub fn new(store: Arc<dyn EventStore>, views: Arc<dyn ViewStore>) -> Self {
        Self {
            store,
            views,
            generation: Generation::Current(AtomicU64::new(0)),
        }
    }

    /// A projector on one generation, whichever readers use (a replay builds with one).
    pub fn pinned(store: Arc<dyn EventStore>, views: Arc<dyn ViewStore>, generation: u64) -> Self {
        Self {
            store,
            views,
            generation: Generation::Pinned(generation),
        }
    }

    pub fn generation(&self) -> u64 {
        match &self.generation {
            Generation::Current(current) => current.load(Ordering::Acquire),
            Generation::Pinned(generation) => *generation,
        }
    }

    /// Reads which generation readers use now and follows it; answers it.
    pub async fn refresh_generation(&self) -> Result<u64, ProjectionError> {
        let current = current_generation(self.views.as_ref()).await?;
        if let Generation::Current(cached) = &self.generation {
            let previous = cached.swap(current, Ordering::AcqRel);
            if previous != current {
                tracing::info!(previous, current, "views switched to another generation");
            }
        }
        Ok(current)
    }

    /// `name` in this projector's generation.
    fn name(&self, name: &str) -> String {
        generation_name(self.generation(), name)
    }

    /// Applies one event from the topic (or from catch-up).
    pub async fn handle(&self, event: &RecordedEvent) -> Result<(), ProjectionError> {
        match event.stream_type.as_str() {
            order::STREAM_TYPE => {
                let key = self.name(&format!("order:{}", stream_key(event)));
                if let Some((view, from)) = self
                    .project::<OrderView>(&key, &event.stream_id, Some(event))
                    .await?
                    && from == 0
                {
                    self.index_order(&view).await?;
                }
            }
            inventory::STREAM_TYPE => {
                let sku = stream_key(event);
                let key = self.name(&format!("catalog:{sku}"));
                if let Some((_, 0)) = self
                    .project::<CatalogItem>(&key, &event.stream_id, Some(event))
                    .await?
                {
                    self.views
                        .index_add(&self.name(CATALOG_INDEX), 0, sku)
                        .await?;
                }
            }
            _ => {}
        }
        Ok(())
    }

    /// Applies everything in the log after the projector's checkpoint, then moves the
    /// checkpoint. Run at start-up: with a cache that forgot everything (the in-memory one
    /// after a restart) this rebuilds every view. Returns the cursor reached.
    pub async fn catch_up(&self) -> Result<LogCursor, ProjectionError> {
        Ok(self.catch_up_with(&mut |_| {}).await?.0)
    }

    /// [`Projector::catch_up`], telling `progress` how many events each page folded; answers
    /// the cursor reached and the events folded.
    pub async fn catch_up_with(
        &self,
        progress: &mut (dyn FnMut(u64) + Send),
    ) -> Result<(LogCursor, u64), ProjectionError> {
        let checkpoint = self.name(CHECKPOINT_KEY);
        let (mut saved, mut cursor) = match self.views.get(&checkpoint).await? {
            Some(doc) => (doc.version, saved_cursor(&doc)),
            None => (0, LogCursor::start()),
        };
        let mut folded = 0;
        loop {
            let page = self.store.read_all(&cursor, CATCH_UP_BATCH).await?;
            if page.events.is_empty() {
                break;
            }
            for event in &page.events {
                self.handle(event).await?;
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
        Ok((cursor, folded))
    }

    /// Folds the whole log into this projector's (pinned, fresh) generation the fast way: the
    /// views live in memory while the log streams by, and each page's changed views go out in
    /// one pipelined `put_many` with its new index entries in one `index_add_many`, instead of
    /// a read and a write per event. Only for a generation nobody else writes yet (a replay
    /// before its switch); answers the events folded. Memory grows with the number of streams.
    pub async fn rebuild(
        &self,
        progress: &mut (dyn FnMut(u64) + Send),
    ) -> Result<u64, ProjectionError> {
        let mut orders: HashMap<String, Built<OrderView>> = HashMap::new();
        let mut catalog: HashMap<String, Built<CatalogItem>> = HashMap::new();
        let checkpoint = self.name(CHECKPOINT_KEY);
        let (mut cursor, mut folded, mut saves) = (LogCursor::start(), 0, 0);
        loop {
            let page = self.store.read_all(&cursor, REBUILD_PAGE).await?;
            if page.events.is_empty() {
                return Ok(folded);
            }
            let mut indexes = Vec::new();
            let (mut changed_orders, mut changed_catalog) = (Vec::new(), Vec::new());
            for event in &page.events {
                let key = stream_key(event).to_owned();
                match event.stream_type.as_str() {
                    order::STREAM_TYPE => {
                        let built = orders.entry(key.clone()).or_default();
                        built.apply(event)?;
                        if built.version == built.written + 1 {
                            changed_orders.push(key.clone());
                        }
                        if event.version == 1 {
                            let (view, member) = (&built.view, key);
                            let score = view.placed_at.timestamp_micros();
                            let customer = self.name(&customer_index(view.customer_id));
                            indexes.push((customer, score, member.clone()));
                            indexes.push((self.name(ALL_ORDERS_INDEX), score, member));
                        }
                    }
                    inventory::STREAM_TYPE => {
                        let built = catalog.entry(key.clone()).or_default();
                        built.apply(event)?;
                        if built.version == built.written + 1 {
                            changed_catalog.push(key.clone());
                        }
                        if event.version == 1 {
                            indexes.push((self.name(CATALOG_INDEX), 0, key));
                        }
                    }
                    _ => {}
                }
            }
            let mut writes = Vec::with_capacity(changed_orders.len() + changed_catalog.len());
            collect_writes(&mut writes, &mut orders, changed_orders, |k| {
                self.name(&format!("order:{k}"))
            })?;
            collect_writes(&mut writes, &mut catalog, changed_catalog, |k| {
                self.name(&format!("catalog:{k}"))
            })?;
            let written = self.views.put_many(writes).await?;
            if written.iter().any(|w| !w) {
                return Err(ProjectionError::Contention(format!(
                    "generation {} changed under its rebuild",
                    self.generation()
                )));
            }
            self.views.index_add_many(indexes).await?;
            cursor = page.next;
            let doc = Doc {
                version: saves + 1,
                body: serde_json::json!({ "cursor": cursor }).to_string(),
            };
            if !self.views.put(&checkpoint, saves, doc).await? {
                return Err(ProjectionError::Contention(checkpoint));
            }
            saves += 1;
            folded += page.events.len() as u64;
            progress(page.events.len() as u64);
        }
    }

    /// The order's view; when the cache has none, it is folded from the stream and written
    /// back. `None` when the order does not exist.
    pub async fn order(&self, order_id: Uuid) -> Result<Option<OrderView>, ProjectionError> {
        let key = self.name(&format!("order:{order_id}"));
        if let Some(doc) = self.views.get(&key).await? {
            return parse(&key, &doc);
        }
        self.refresh_order(order_id).await
    }

    /// Brings the order's view up to the stream's head, from the event store.
    pub async fn refresh_order(
        &self,
        order_id: Uuid,
    ) -> Result<Option<OrderView>, ProjectionError> {
        let key = self.name(&format!("order:{order_id}"));
        let stream = stream_id(order::STREAM_TYPE, order_id);
        match self.project::<OrderView>(&key, &stream, None).await? {
            Some((view, from)) => {
                if from == 0 {
                    self.index_order(&view).await?;
                }
                Ok(Some(view))
            }
            None => Ok(None),
        }
    }

    /// Waits until the order's view reaches `min_version`, up to `wait`; then, if the cache is
    /// still behind, catches the view up from the store. Read-your-writes for a version that a
    /// command returned.
    pub async fn order_at_least(
        &self,
        order_id: Uuid,
        min_version: u64,
        wait: Duration,
    ) -> Result<Option<OrderView>, ProjectionError> {
        let deadline = tokio::time::Instant::now() + wait;
        let mut pause = Duration::from_millis(5);
        loop {
            let view = self.order(order_id).await?;
            match &view {
                Some(v) if v.version >= min_version => return Ok(view),
                None => return Ok(None),
                Some(_) if tokio::time::Instant::now() >= deadline => {
                    return self.refresh_order(order_id).await;
                }
                Some(_) => {}
            }
            tokio::time::sleep(pause.min(deadline - tokio::time::Instant::now())).await;
            pause = (pause * 2).min(Duration::from_millis(50));
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
                .index_page(&self.name(index), before.clone(), batch_size)
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
                .index_page(&self.name(CATALOG_INDEX), before, 500)
                .await?;
            let Some(last) = batch.last().cloned() else {
                break;
            };
            for (_, sku) in &batch {
                let key = self.name(&format!("catalog:{sku}"));
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
    /// view and the version it had before, or `None` if the stream is empty.
    async fn project<V: View>(
        &self,
        key: &str,
        stream: &str,
        event: Option<&RecordedEvent>,
    ) -> Result<Option<(V, u64)>, ProjectionError> {
        for _ in 0..MAX_ATTEMPTS {
            let (version, mut view) = match self.views.get(key).await? {
                Some(doc) => (doc.version, parse::<V>(key, &doc)?.unwrap_or_default()),
                None => (0, V::default()),
            };
            let pending = match event {
                Some(e) if e.version <= version => return Ok(Some((view, version))),
                Some(e) if e.version == version + 1 => vec![e.clone()],
                _ => self.store.read_stream(stream, version + 1).await?,
            };
            let Some(last) = pending.last() else {
                return Ok((version > 0).then_some((view, version)));
            };
            let new_version = last.version;
            for e in &pending {
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
                &self.name(&customer_index(view.customer_id)),
                score,
                &member,
            )
            .await?;
        self.views
            .index_add(&self.name(ALL_ORDERS_INDEX), score, &member)
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
        if event.version != self.version + 1 {
            return Err(ProjectionError::Corrupt {
                key: event.stream_id.clone(),
                reason: format!(
                    "the log gave version {} after version {}",
                    event.version, self.version
                ),
            });
        }
        self.view.apply(event)?;
        self.version = event.version;
        Ok(())
    }
}

/// The views of `built` that `changed` names (each once: the page's first change to it) as
/// compare-on-version writes, marked written.
fn collect_writes<V: View>(
    writes: &mut Vec<(String, u64, Doc)>,
    built: &mut HashMap<String, Built<V>>,
    changed: Vec<String>,
    name: impl Fn(&str) -> String,
) -> Result<(), ProjectionError> {
    for key in changed {
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
        writes.push((name, built.written, doc));
        built.written = built.version;
    }
    Ok(())
}

/// The generation readers use now (0 before any replay).
pub async fn current_generation(views: &dyn ViewStore) -> Result<u64, ProjectionError> {
    Ok(views
        .get(GENERATION_KEY)
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

/// Deletes every view of one generation; answers how many documents and indexes went.
pub async fn delete_generation(
    views: &dyn ViewStore,
    generation: u64,
) -> Result<u64, ProjectionError> {
    if generation > 0 {
        return Ok(views
            .delete_prefix(&generation_name(generation, ""))
            .await?);
    }
    let mut deleted = 0;
    for prefix in GENERATION_ZERO_PREFIXES {
        deleted += views.delete_prefix(prefix).await?;
    }
    Ok(deleted)
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

fn parse<V: View>(key: &str, doc: &Doc) -> Result<Option<V>, ProjectionError> {
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
