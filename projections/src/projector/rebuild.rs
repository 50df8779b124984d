//! A replay's rebuild: the whole log folded into a fresh generation the fast way, in three
//! stages at once (a task reads the log ahead, one folds, a task writes the pages in order).

use std::collections::HashMap;
use std::sync::Arc;

use domain::RecordedEvent;
use domain::envelope::decode;
use domain::order;
use eventlog::{EventStore, LogCursor, LogPage, StoreError};
use tokio::sync::mpsc;

use super::catch_up::AnalyticsState;
use super::{ProjectionError, Projector, projection_of, stream_key};
use crate::analytics::{self, OrderFacts, Totals};
use crate::keys;
use crate::projection::Projection;
use crate::view_store::{Doc, ViewError, ViewStore};
use crate::views::{CatalogItem, OrderView, View};

/// Events per page of a rebuild: each page is one pipelined write of the views it changed.
const REBUILD_PAGE: usize = 5000;
/// Writes in flight at once for a page of a rebuild, beside its index entries.
const PAGE_WRITERS: usize = 2;
/// Pages a rebuild's stage may run ahead of the next.
const STAGE_DEPTH: usize = 2;

impl Projector {
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
            |k| self.name(Projection::Orders, &keys::order(k)),
        )?;
        collect_writes(
            &mut docs,
            &mut built.catalog,
            &mut built.changed_catalog,
            |k| self.name(Projection::Catalog, &keys::catalog_item(k)),
        )?;
        let mut checkpoints = Vec::with_capacity(self.keeps.len());
        for &projection in &self.keeps {
            let key = self.name(projection, keys::checkpoint(projection));
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
                    let customer = keys::customer_index(built.view.customer_id);
                    self.indexes
                        .push((Projection::Orders, customer, score, key.clone()));
                    let all = keys::ALL_ORDERS_INDEX.to_owned();
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
                    let index = keys::CATALOG_INDEX.to_owned();
                    self.indexes.push((Projection::Catalog, index, 0, key));
                }
            }
            _ if keeps_analytics => self.totals.apply(event, None)?,
            _ => {}
        }
        Ok(())
    }
}
