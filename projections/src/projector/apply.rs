//! One event into the view of its stream: compare-on-version, a gap filled from the store,
//! the order indexes, and the announcement to the readers waiting for that order.

use std::borrow::Cow;

use domain::RecordedEvent;

use super::{MAX_ATTEMPTS, ProjectionError, Projector, parse, stream_key};
use crate::changes::{ORDER_CHANGES_CHANNEL, announcement};
use crate::keys;
use crate::projection::Projection;
use crate::view_store::Doc;
use crate::views::{CatalogItem, OrderView, View};

impl Projector {
    /// Applies `event` to `projection`'s view of its stream, if this projector keeps it, and
    /// answers an order's view as written with its version before (to announce).
    pub(super) async fn apply(
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
                let key = self.name(projection, &keys::order(member));
                let written = self
                    .project::<OrderView>(&key, &event.stream_id, Some(event))
                    .await?;
                if let Some((view, 0)) = &written {
                    self.index_order(view).await?;
                }
                return Ok(written);
            }
            Projection::Catalog => {
                let key = self.name(projection, &keys::catalog_item(member));
                if let Some((_, 0)) = self
                    .project::<CatalogItem>(&key, &event.stream_id, Some(event))
                    .await?
                {
                    self.views
                        .index_add(&self.name(projection, keys::CATALOG_INDEX), 0, member)
                        .await?;
                }
            }
            Projection::Analytics => {}
        }
        Ok(None)
    }

    /// Folds what the view lacks into it and writes it compare-on-version. Returns the new
    /// view and the version it had before, or `None` if the stream is empty or `event` is
    /// already in the view (then the stored view is not even parsed: the periodic catch-up
    /// meets thousands of those).
    pub(crate) async fn project<V: View>(
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

    pub(crate) async fn index_order(&self, view: &OrderView) -> Result<(), ProjectionError> {
        let score = view.placed_at.timestamp_micros();
        let member = view.order_id.to_string();
        self.views
            .index_add(
                &self.name(Projection::Orders, &keys::customer_index(view.customer_id)),
                score,
                &member,
            )
            .await?;
        self.views
            .index_add(
                &self.name(Projection::Orders, keys::ALL_ORDERS_INDEX),
                score,
                &member,
            )
            .await?;
        Ok(())
    }

    /// Tells the readers waiting for this order, in every process, that its view was written
    /// (when it was: `from` is the version before). Best effort: a lost announcement only
    /// leaves a reader to its timer.
    pub(crate) async fn announce(&self, view: &OrderView, from: u64) {
        if view.version <= from {
            return;
        }
        self.changes.changed(view.order_id, view.version);
        let message = announcement(view.order_id, view.version);
        if let Err(error) = self.views.publish(ORDER_CHANGES_CHANNEL, &message).await {
            tracing::debug!(%error, "an order view change was not announced");
        }
    }
}
