//! A group-commit batch decided in the writer, for the SQL stores: what is stored of the
//! batch's streams and event ids is read in one statement ([`Keys`], [`Stored`]), every request
//! is decided here in channel order ([`plan`]), and what was accepted is written in one INSERT.
//! That is a few statements a batch instead of several a request, which is what bounded the
//! writer (PostgreSQL: a network round trip each; SQLite: a hop to sqlx's worker thread each).
//!
//! [`plan`] answers each request exactly as a savepoint per request would have, had its
//! statements run in the same order: a retry (its first event id stored in this stream, by an
//! earlier transaction or an earlier request of this batch) is answered with the original's
//! version and position; a stream not at the expected version conflicts; an event id stored
//! elsewhere is refused as corrupt. Should the engine still refuse the INSERT (a value it will
//! not store), the adapter undoes the batch to its savepoint and writes request by request.
//!
//! PostgreSQL plans before it knows the log's head (it learns it in the statement that
//! inserts): it plans from start 0 and then [`Plan::shift`]s what the batch numbered.

use std::collections::{HashMap, HashSet};

use domain::NewEvent;
use eventlog::{Appended, StoreError};
use uuid::Uuid;

use super::codec::to_json;
use super::group_commit::{Answer, Write, Written};

/// The keys the batch's appends need looked up.
pub(super) struct Keys {
    pub event_ids: Vec<String>,
    pub streams: Vec<String>,
}

impl Keys {
    pub fn of(writes: &[Write]) -> Self {
        let mut keys = Self {
            event_ids: Vec::new(),
            streams: Vec::new(),
        };
        for write in writes {
            if let Write::Append {
                stream_id, events, ..
            } = write
            {
                keys.streams.push(stream_id.clone());
                keys.event_ids
                    .extend(events.iter().map(|e| e.event_id.to_string()));
            }
        }
        keys
    }

    pub fn is_empty(&self) -> bool {
        self.streams.is_empty()
    }
}

/// What the store holds of a batch's keys.
#[derive(Default)]
pub(super) struct Stored {
    /// Each stream's version (streams without events are absent).
    pub versions: HashMap<String, u64>,
    /// Where each stored event id is.
    pub events: HashMap<Uuid, Place>,
}

/// Where an event is: stream, version, global position, and whether that position was
/// numbered by this batch (relative to the batch's start, see [`Plan::shift`]).
pub(super) struct Place {
    stream: String,
    version: u64,
    position: u64,
    numbered: bool,
}

impl Stored {
    /// Takes one row of an adapter's lookup: `kind` is `stream` (the stream's version; 0 for
    /// a stream without events) or `event` (where the event id `key` is stored).
    pub fn add(&mut self, kind: &str, key: &str, stream: String, version: i64, position: i64) {
        let version = u64::try_from(version).unwrap_or_default();
        if kind == "stream" {
            if version > 0 {
                self.versions.insert(stream, version);
            }
        } else if let Ok(id) = Uuid::parse_str(key) {
            let position = u64::try_from(position).unwrap_or_default();
            self.events.insert(
                id,
                Place {
                    stream,
                    version,
                    position,
                    numbered: false,
                },
            );
        }
    }
}

/// One event to insert, at its position.
pub(super) struct Row<'w> {
    pub position: u64,
    pub event: &'w NewEvent,
    pub stream_id: &'w str,
    pub stream_type: &'w str,
    pub version: u64,
    pub schema_version: i32,
    pub payload: String,
    pub metadata: String,
}

/// A decided batch: each request's answer, the rows to insert, the checkpoints to save and
/// the head after the rows.
pub(super) struct Plan<'w> {
    pub answers: Vec<Answer>,
    /// Which answers carry a position this batch numbered.
    numbered: Vec<bool>,
    pub rows: Vec<Row<'w>>,
    /// The last position saved for each reader in the batch, in first-save order.
    pub checkpoints: Vec<(&'w str, u64)>,
    pub head: u64,
}

/// Decides every request of `writes` against `stored`, numbering accepted events from after
/// `start`.
pub(super) fn plan(mut stored: Stored, start: u64, writes: &[Write]) -> Plan<'_> {
    let mut plan = Plan {
        answers: Vec::with_capacity(writes.len()),
        numbered: Vec::with_capacity(writes.len()),
        rows: Vec::new(),
        checkpoints: Vec::new(),
        head: start,
    };
    for write in writes {
        let (answer, numbered) = match write {
            Write::Append {
                stream_id,
                stream_type,
                expected,
                events,
            } => match append(
                &mut stored,
                &mut plan,
                stream_id,
                stream_type,
                *expected,
                events,
            ) {
                Ok((appended, numbered)) => (Ok(Written::Appended(appended)), numbered),
                Err(error) => (Err(error), false),
            },
            Write::Checkpoint { reader, position } => {
                match plan.checkpoints.iter_mut().find(|(r, _)| r == reader) {
                    Some(saved) => saved.1 = *position,
                    None => plan.checkpoints.push((reader, *position)),
                }
                (Ok(Written::Checkpoint), false)
            }
        };
        plan.answers.push(answer);
        plan.numbered.push(numbered);
    }
    plan
}

impl Plan<'_> {
    /// Moves what this batch numbered by `start`: a plan made from start 0 before the head
    /// was known (PostgreSQL learns it in the statement that inserts the rows, whose
    /// positions it offsets the same way).
    pub fn shift(&mut self, start: u64) {
        for (answer, numbered) in self.answers.iter_mut().zip(&self.numbered) {
            if let (Ok(Written::Appended(appended)), true) = (answer, numbered) {
                appended.position = appended.position.map(|p| p + start);
            }
        }
        self.head += start;
    }
}

fn append<'w>(
    stored: &mut Stored,
    plan: &mut Plan<'w>,
    stream_id: &'w str,
    stream_type: &'w str,
    expected: u64,
    events: &'w [NewEvent],
) -> Result<(Appended, bool), StoreError> {
    let Some(first) = events.first() else {
        let appended = Appended {
            version: expected,
            position: None,
            duplicate: false,
        };
        return Ok((appended, false));
    };
    if let Some(place) = stored.events.get(&first.event_id) {
        return retried(
            stored,
            place.stream.clone(),
            place.version,
            stream_id,
            events,
        );
    }
    let actual = stored.versions.get(stream_id).copied().unwrap_or(0);
    if actual != expected {
        return Err(StoreError::Conflict {
            stream_id: stream_id.to_owned(),
            expected,
            actual,
        });
    }
    check_new_ids(stored, events)?;
    // Everything is encoded before anything is taken, so a refused request adds no rows.
    let encoded = encode(events)?;
    for ((event, (schema_version, payload, metadata)), version) in
        events.iter().zip(encoded).zip(expected + 1..)
    {
        plan.head += 1;
        let place = Place {
            stream: stream_id.to_owned(),
            version,
            position: plan.head,
            numbered: true,
        };
        stored.events.insert(event.event_id, place);
        plan.rows.push(Row {
            position: plan.head,
            event,
            stream_id,
            stream_type,
            version,
            schema_version,
            payload,
            metadata,
        });
    }
    let version = expected + events.len() as u64;
    stored.versions.insert(stream_id.to_owned(), version);
    let appended = Appended {
        version,
        position: Some(plan.head),
        duplicate: false,
    };
    Ok((appended, true))
}

/// No event of a new append may be stored already, or appear twice in it.
fn check_new_ids(stored: &Stored, events: &[NewEvent]) -> Result<(), StoreError> {
    let mut seen = HashSet::with_capacity(events.len());
    for event in events {
        if stored.events.contains_key(&event.event_id) || !seen.insert(event.event_id) {
            return Err(StoreError::Corrupt(format!(
                "duplicate event id: {} is already stored",
                event.event_id
            )));
        }
    }
    Ok(())
}

/// Each event's schema version, payload and metadata as their columns hold them.
fn encode(events: &[NewEvent]) -> Result<Vec<(i32, String, String)>, StoreError> {
    events
        .iter()
        .map(|event| {
            let schema_version = i32::try_from(event.schema_version).map_err(|_| {
                StoreError::Corrupt(format!("schema_version {} too large", event.schema_version))
            })?;
            Ok((
                schema_version,
                to_json(&event.payload)?,
                to_json(&event.metadata)?,
            ))
        })
        .collect()
}

/// The answer to a retry whose first event is stored at `from` in `stream`: the original's,
/// if it sent the same events in the same order (and whether this batch numbered it).
fn retried(
    stored: &Stored,
    stream: String,
    from: u64,
    stream_id: &str,
    events: &[NewEvent],
) -> Result<(Appended, bool), StoreError> {
    let first = events[0].event_id;
    if stream != stream_id {
        return Err(stored_elsewhere(first, &stream));
    }
    let (mut position, mut numbered) = (0, false);
    for (event, version) in events.iter().zip(from..) {
        match stored.events.get(&event.event_id) {
            Some(place) if place.stream == stream_id && place.version == version => {
                (position, numbered) = (place.position, place.numbered);
            }
            _ => return Err(not_a_retry(first, stream_id, from)),
        }
    }
    let appended = Appended {
        version: from + events.len() as u64 - 1,
        position: Some(position),
        duplicate: true,
    };
    Ok((appended, numbered))
}

/// The same rules for an engine's request-by-request fallback, which reads a retry's rows
/// itself: the first event id was found in `stream` at version `from`, and `stored` are the
/// ids and positions of the stream's versions from there, as many as `events`, in order.
pub(super) fn retry_of(
    stream: &str,
    from: u64,
    stream_id: &str,
    events: &[NewEvent],
    stored: &[(Uuid, u64)],
) -> Result<Appended, StoreError> {
    let first = events[0].event_id;
    if stream != stream_id {
        return Err(stored_elsewhere(first, stream));
    }
    let ids = stored.iter().map(|(id, _)| *id);
    if !ids.eq(events.iter().map(|e| e.event_id)) {
        return Err(not_a_retry(first, stream_id, from));
    }
    Ok(Appended {
        version: from + events.len() as u64 - 1,
        position: Some(stored.last().map_or(0, |(_, position)| *position)),
        duplicate: true,
    })
}

fn stored_elsewhere(first: Uuid, stream: &str) -> StoreError {
    StoreError::Corrupt(format!(
        "duplicate event id {first}: already stored in stream {stream}"
    ))
}

fn not_a_retry(first: Uuid, stream_id: &str, from: u64) -> StoreError {
    StoreError::Corrupt(format!(
        "event {first} is already in {stream_id} at version {from} with other events; a retry \
         must resend the same events"
    ))
}
