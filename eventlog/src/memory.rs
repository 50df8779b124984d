//! The event log in a process's memory: the port's whole contract with no engine, for tests of
//! the code that uses it (the command side, the processor, the projector). It keeps the same
//! promises as SQLite and PostgreSQL, checked by the same conformance suite: one commit order
//! numbered from 1, atomic appends with an expected version, retries answered as the
//! original, leases with one holder. Nothing survives the process.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, MutexGuard};

use async_trait::async_trait;
use domain::{NewEvent, RecordedEvent};
use tokio::sync::watch;
use uuid::Uuid;

use crate::store::{Appended, EventStore, Lease, LogCursor, LogPage, StoreError};

/// An [`EventStore`] held in memory; see the [module docs](self).
pub struct MemoryEventStore {
    log: Mutex<Log>,
    head: watch::Sender<u64>,
    leases: LocalLeases,
}

#[derive(Default)]
struct Log {
    /// Every event in commit order; an event's global position is its index plus one.
    events: Vec<RecordedEvent>,
    /// Each stream's events, as indexes into `events`, in version order.
    streams: HashMap<String, Vec<usize>>,
    /// Where each stored event id is, for retries and duplicate ids.
    ids: HashMap<Uuid, usize>,
    checkpoints: HashMap<String, LogCursor>,
}

impl Default for MemoryEventStore {
    fn default() -> Self {
        Self::new()
    }
}

impl MemoryEventStore {
    pub fn new() -> Self {
        Self {
            log: Mutex::new(Log::default()),
            head: watch::channel(0).0,
            leases: LocalLeases::default(),
        }
    }

    fn log(&self) -> MutexGuard<'_, Log> {
        // A panic while holding the lock leaves the log as it was: every change below is
        // checked before anything is written.
        self.log
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

impl Log {
    fn version(&self, stream_id: &str) -> u64 {
        self.streams.get(stream_id).map_or(0, |s| s.len() as u64)
    }

    /// The answer to a batch whose first event is already stored: the original append's, when
    /// it is the same events at the same versions of the same stream.
    fn retry(
        &self,
        at: usize,
        stream_id: &str,
        events: &[NewEvent],
    ) -> Result<Appended, StoreError> {
        let first = &self.events[at];
        if first.stream_id != stream_id {
            return Err(StoreError::Corrupt(format!(
                "duplicate event id {}: already stored in stream {}",
                first.event_id, first.stream_id
            )));
        }
        let indexes = &self.streams[stream_id];
        let from = first.version as usize - 1;
        let stored = indexes.get(from..from + events.len());
        let same = stored.is_some_and(|stored| {
            stored
                .iter()
                .zip(events)
                .all(|(&i, sent)| self.events[i].event_id == sent.event_id)
        });
        let Some(last) = stored.filter(|_| same).and_then(|s| s.last()) else {
            return Err(StoreError::Corrupt(format!(
                "event {} is already in {stream_id} at version {} with other events; a retry \
                 must resend the same events",
                first.event_id, first.version
            )));
        };
        let last = &self.events[*last];
        Ok(Appended {
            version: last.version,
            position: last.global_position,
            duplicate: true,
        })
    }

    fn check_new_ids(&self, events: &[NewEvent]) -> Result<(), StoreError> {
        let mut seen = HashSet::new();
        for event in events {
            if self.ids.contains_key(&event.event_id) || !seen.insert(event.event_id) {
                return Err(StoreError::Corrupt(format!(
                    "duplicate event id: {} is already stored",
                    event.event_id
                )));
            }
        }
        Ok(())
    }

    fn push(&mut self, stream_id: &str, stream_type: &str, events: Vec<NewEvent>) -> Appended {
        let mut version = self.version(stream_id);
        for event in events {
            version += 1;
            let index = self.events.len();
            self.ids.insert(event.event_id, index);
            self.streams
                .entry(stream_id.to_owned())
                .or_default()
                .push(index);
            self.events.push(RecordedEvent {
                global_position: Some(index as u64 + 1),
                stream_id: stream_id.to_owned(),
                stream_type: stream_type.to_owned(),
                version,
                event_id: event.event_id,
                event_type: event.event_type,
                schema_version: event.schema_version,
                occurred_at: event.occurred_at,
                payload: event.payload.into(),
                metadata: event.metadata,
            });
        }
        Appended {
            version,
            position: Some(self.events.len() as u64),
            duplicate: false,
        }
    }
}

#[async_trait]
impl EventStore for MemoryEventStore {
    async fn append(
        &self,
        stream_id: &str,
        stream_type: &str,
        expected_version: u64,
        events: Vec<NewEvent>,
    ) -> Result<Appended, StoreError> {
        let mut log = self.log();
        let Some(first) = events.first() else {
            return Ok(Appended {
                version: expected_version,
                position: None,
                duplicate: false,
            });
        };
        if let Some(&at) = log.ids.get(&first.event_id) {
            return log.retry(at, stream_id, &events);
        }
        let actual = log.version(stream_id);
        if actual != expected_version {
            return Err(StoreError::Conflict {
                stream_id: stream_id.to_owned(),
                expected: expected_version,
                actual,
            });
        }
        log.check_new_ids(&events)?;
        let appended = log.push(stream_id, stream_type, events);
        drop(log);
        self.head.send_replace(appended.position.unwrap_or(0));
        Ok(appended)
    }

    async fn read_stream(
        &self,
        stream_id: &str,
        from_version: u64,
    ) -> Result<Vec<RecordedEvent>, StoreError> {
        let log = self.log();
        let Some(indexes) = log.streams.get(stream_id) else {
            return Ok(Vec::new());
        };
        let skip = from_version.saturating_sub(1) as usize;
        Ok(indexes
            .iter()
            .skip(skip)
            .map(|&i| log.events[i].clone())
            .collect())
    }

    async fn read_all(&self, after: &LogCursor, limit: usize) -> Result<LogPage, StoreError> {
        let from = after.position()? as usize;
        let log = self.log();
        let events: Vec<RecordedEvent> =
            log.events.iter().skip(from).take(limit).cloned().collect();
        let next = match events.last() {
            Some(last) => LogCursor::at_position(last.global_position.unwrap_or(0)),
            None => after.clone(),
        };
        Ok(LogPage { events, next })
    }

    async fn lag(&self, after: &LogCursor) -> Result<Option<u64>, StoreError> {
        let head = self.log().events.len() as u64;
        Ok(Some(head.saturating_sub(after.position()?)))
    }

    fn watch_head(&self) -> watch::Receiver<u64> {
        self.head.subscribe()
    }

    async fn checkpoint(&self, reader: &str) -> Result<LogCursor, StoreError> {
        Ok(self
            .log()
            .checkpoints
            .get(reader)
            .cloned()
            .unwrap_or_default())
    }

    async fn save_checkpoint(&self, reader: &str, cursor: &LogCursor) -> Result<(), StoreError> {
        cursor.position()?;
        self.log()
            .checkpoints
            .insert(reader.to_owned(), cursor.clone());
        Ok(())
    }

    async fn ping(&self) -> Result<(), StoreError> {
        Ok(())
    }

    async fn lease(&self, name: &str) -> Result<Option<Box<dyn Lease>>, StoreError> {
        Ok(self.leases.take(name))
    }
}

/// Leases among the tasks of one process: for a store that one process owns (this one, or an
/// embedded SQLite file), whose leases that process alone can give. A lease is held until its
/// guard is dropped and refused to a second taker meanwhile.
#[derive(Clone, Default)]
pub struct LocalLeases(Arc<Mutex<HashSet<String>>>);

impl LocalLeases {
    /// The lease `name`, or `None` while another guard holds it.
    pub fn take(&self, name: &str) -> Option<Box<dyn Lease>> {
        let mut held = self.0.lock().unwrap_or_else(|p| p.into_inner());
        if !held.insert(name.to_owned()) {
            return None;
        }
        Some(Box::new(LocalLease {
            name: name.to_owned(),
            leases: self.clone(),
        }))
    }
}

/// A lease of [`LocalLeases`], released when dropped.
struct LocalLease {
    name: String,
    leases: LocalLeases,
}

#[async_trait]
impl Lease for LocalLease {
    async fn held(&mut self) -> bool {
        true
    }
}

impl Drop for LocalLease {
    fn drop(&mut self) {
        let mut held = self.leases.0.lock().unwrap_or_else(|p| p.into_inner());
        held.remove(&self.name);
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::MemoryEventStore;
    use crate::EventStore;

    async fn fresh() -> Arc<dyn EventStore> {
        Arc::new(MemoryEventStore::new())
    }

    mod conformance {
        crate::event_store_conformance!(super::fresh());
    }
}
