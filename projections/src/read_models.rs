//! What readers ask of the read side (the API, the CLI, the tests): an order's view (waiting
//! for a version a command returned, or as it was at a moment), pages of orders, the catalog,
//! the analytics. Views the cache lacks or holds behind are brought up from the event store
//! and written back on the way (read repair), in the generation the projector follows.

use std::sync::Arc;
use std::time::Duration;

use domain::RecordedEvent;
use domain::envelope::{DecodeError, stream_id};
use domain::order::{self, OrderStatus};
use uuid::Uuid;

use crate::analytics::Totals;
use crate::keys;
use crate::projection::Projection;
use crate::projector::{ProjectionError, Projector, parse};
use crate::views::{CatalogItem, OrderView};

/// A reader waiting for an order view re-reads it after these pauses (doubling) even when no
/// announcement woke it: announcements are best effort.
const FIRST_RECHECK: Duration = Duration::from_millis(25);
const LAST_RECHECK: Duration = Duration::from_millis(200);

/// The read models, for readers; see the [module docs](self).
#[derive(Clone)]
pub struct ReadModels {
    projector: Arc<Projector>,
}

impl ReadModels {
    /// Reads what `projector` writes, in the generation it follows.
    pub fn new(projector: Arc<Projector>) -> Self {
        Self { projector }
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
        let key = self
            .projector
            .name(Projection::Orders, &keys::order(order_id));
        match self.projector.views.get(&key).await? {
            Some(doc) => parse(&key, &doc),
            None => Ok(None),
        }
    }

    /// Brings the order's view up to the stream's head, from the event store.
    pub async fn refresh_order(
        &self,
        order_id: Uuid,
    ) -> Result<Option<OrderView>, ProjectionError> {
        let key = self
            .projector
            .name(Projection::Orders, &keys::order(order_id));
        let stream = stream_id(order::STREAM_TYPE, order_id);
        match self
            .projector
            .project::<OrderView>(&key, &stream, None)
            .await?
        {
            Some((view, from)) => {
                if from == 0 {
                    self.projector.index_order(&view).await?;
                }
                self.projector.announce(&view, from).await;
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
        let mut changed = self.projector.changes.watch(order_id);
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

    /// A page of the orders in `index`, newest first, optionally only those in `status`.
    /// `next_cursor` is set only when another matching order exists.
    pub async fn orders(
        &self,
        index: &str,
        status: Option<OrderStatus>,
        cursor: Option<(i64, String)>,
        limit: usize,
    ) -> Result<OrderPage, ProjectionError> {
        let batch_size = (limit + 1).max(20);
        let mut before = cursor;
        let mut items: Vec<(OrderView, (i64, String))> = Vec::with_capacity(limit + 1);
        'scan: loop {
            let batch = self
                .projector
                .views
                .index_page(
                    &self.projector.name(Projection::Orders, index),
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
        let events = self.projector.store.read_stream(&stream, 1).await?;
        Ok(order_until(&events, cutoff)?)
    }

    /// The catalog, by SKU.
    pub async fn catalog(&self) -> Result<Vec<CatalogItem>, ProjectionError> {
        let mut items = Vec::new();
        let mut before = None;
        loop {
            let batch = self
                .projector
                .views
                .index_page(
                    &self
                        .projector
                        .name(Projection::Catalog, keys::CATALOG_INDEX),
                    before,
                    500,
                )
                .await?;
            let Some(last) = batch.last().cloned() else {
                break;
            };
            for (_, sku) in &batch {
                let key = self
                    .projector
                    .name(Projection::Catalog, &keys::catalog_item(sku));
                if let Some(doc) = self.projector.views.get(&key).await? {
                    items.extend(parse::<CatalogItem>(&key, &doc)?);
                }
            }
            before = Some(last);
        }
        items.sort_by(|a, b| a.sku.cmp(&b.sku));
        Ok(items)
    }

    /// The analytics totals of the generation readers use; `lag` is how many events of the
    /// log they have not folded yet, when the store can tell.
    pub async fn analytics(&self) -> Result<(Totals, Option<u64>), ProjectionError> {
        let key = self
            .projector
            .name(Projection::Analytics, keys::ANALYTICS_KEY);
        let (_, state) = self.projector.analytics_state(&key).await?;
        let lag = self.projector.store.lag(&state.cursor).await?;
        Ok((state.totals, lag))
    }
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

/// Reads a `next_cursor`; `None` if it is not one.
pub fn parse_cursor(cursor: &str) -> Option<(i64, String)> {
    let (score, member) = cursor.split_once('_')?;
    Uuid::parse_str(member).ok()?;
    Some((score.parse().ok()?, member.to_owned()))
}
