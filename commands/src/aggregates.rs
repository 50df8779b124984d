//! Running a command against an aggregate: load, decide, append with the expected version.
//!
//! What keeps this fast and correct under concurrency:
//! - a per-stream async lock, so commands on one stream *in this process* take turns instead of
//!   racing and retrying (other processes still race; the store's expected-version check
//!   settles that and the loser decides again on fresh state);
//! - a cache of the last state seen per stream, so a hot stream (a popular SKU) is caught up
//!   from its tail instead of folded from version 1 on every command (bounded by `Recent`,
//!   which keeps the streams in use); states are shared
//!   (`Arc`); a command decides on its own copy while the cache keeps the committed state for
//!   readers (who would otherwise fold the whole stream from the store);
//! - a first decision on what the process knows, without reading the store: the cached state,
//!   or an empty stream (a new order). The append's expected-version check catches a wrong
//!   guess (a conflict, then a decision on fresh state); a refusal, which writes nothing and
//!   so is checked by nothing, stands only after the stream's tail was read;
//! - event ids derived from the causing event for service commands, so that a redelivered
//!   event that makes the same decision appends the same ids and the store answers "already
//!   appended" instead of writing twice.

use std::hash::{DefaultHasher, Hash, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use chrono::Utc;
use cqrs_es::{Aggregate, event_sink::EventSink};
use domain::envelope::{DecodeError, decode, stream_id};
use domain::{EventMetadata, NewEvent, RecordedEvent};
use tokio::sync::Mutex as AsyncMutex;
use uuid::Uuid;

use eventlog::fault::CONTENTION_PAUSE;
use eventlog::recent::Recent;
use eventlog::{Classify, EventStore, Fault, StoreError};

/// How many times a command is decided again after losing a race to another writer.
const MAX_ATTEMPTS: u32 = 16;
/// Streams whose state is kept between commands, per generation of the cache (`Recent`).
const CACHE_CAPACITY: usize = 20_000;
const LOCK_SHARDS: usize = 256;

#[derive(Debug, thiserror::Error)]
pub enum CommandError<E: std::error::Error> {
    /// The aggregate refused the command: a broken business rule.
    #[error(transparent)]
    Rejected(E),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Decode(#[from] DecodeError),
    /// Other writers kept winning; the caller may retry later.
    #[error("stream {0} is too busy, try again")]
    Contention(String),
}

impl<E: std::error::Error> Classify for CommandError<E> {
    fn fault(&self) -> Fault {
        match self {
            Self::Rejected(_) | Self::Decode(_) => Fault::Permanent,
            Self::Store(error) => error.fault(),
            Self::Contention(_) => Fault::Later(CONTENTION_PAUSE),
        }
    }
}

/// What a command did to its stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Handled {
    /// The stream's version after the command (unchanged when it recorded nothing).
    pub version: u64,
    /// How many events the command recorded (0: its effect had already happened).
    pub recorded: usize,
}

/// The command side of one aggregate type.
pub struct Aggregates<A: Aggregate> {
    store: Arc<dyn EventStore>,
    cache: Mutex<Recent<String, (u64, Arc<A>)>>,
    locks: Vec<AsyncMutex<()>>,
    /// How its commands went, for `/metrics`.
    pub outcomes: Outcomes,
}

/// Counts of what [`Aggregates::execute`] met, since the process started.
#[derive(Debug, Default)]
pub struct Outcomes {
    /// Commands whose events were appended (or found already appended: a retry).
    pub appended: AtomicU64,
    /// Appends that found an already stored decision (an idempotent retry).
    pub duplicates: AtomicU64,
    /// Commands refused by the aggregate.
    pub rejected: AtomicU64,
    /// Appends refused because the stream had moved on (decided again).
    pub conflicts: AtomicU64,
    /// Decisions taken again after a backoff, because a fresh state still lost the race.
    pub retries: AtomicU64,
    /// Commands given up on after `MAX_ATTEMPTS` lost races.
    pub contended: AtomicU64,
}

fn bump(counter: &AtomicU64) {
    counter.fetch_add(1, Ordering::Relaxed);
}

impl<A> Aggregates<A>
where
    A: Aggregate<Services = ()> + Clone,
    A::Command: Clone,
{
    pub fn new(store: Arc<dyn EventStore>) -> Self {
        Self {
            store,
            cache: Mutex::new(Recent::new(CACHE_CAPACITY)),
            locks: (0..LOCK_SHARDS).map(|_| AsyncMutex::new(())).collect(),
            outcomes: Outcomes::default(),
        }
    }

    pub fn store(&self) -> &Arc<dyn EventStore> {
        &self.store
    }

    /// The aggregate's current state and version (0 and the default state when it has no
    /// events).
    pub async fn load(&self, id: &str) -> Result<(u64, Arc<A>), CommandError<A::Error>> {
        let stream = stream_id(A::TYPE, id);
        self.load_stream(&stream).await
    }

    /// The aggregate's state as of `event` of its stream or later, for a reaction to that
    /// event (the order processor's). The state this process holds serves when it has seen the
    /// event, and folds the event in when it is the next one (an order's first event, always),
    /// without reading the store; else the tail is read. A command decided on this state is
    /// still checked by its append's expected version.
    pub async fn load_after(
        &self,
        event: &RecordedEvent,
    ) -> Result<(u64, Arc<A>), CommandError<A::Error>> {
        let (version, mut state) = self.known(&event.stream_id);
        if version >= event.version {
            return Ok((version, state));
        }
        if version + 1 == event.version {
            Arc::make_mut(&mut state).apply(decode::<A::Event>(event)?);
            self.remember(event.stream_id.clone(), event.version, state.clone());
            return Ok((event.version, state));
        }
        self.load_stream(&event.stream_id).await
    }

    /// The aggregate's state as this process last saw it, read from the store only when it
    /// has none or `current_enough` refuses it: for facts that never change once recorded (a
    /// SKU's listing: its price and currency).
    pub async fn load_known(
        &self,
        id: &str,
        current_enough: impl Fn(&A) -> bool,
    ) -> Result<(u64, Arc<A>), CommandError<A::Error>> {
        let stream = stream_id(A::TYPE, id);
        let (version, state) = self.known(&stream);
        if version > 0 && current_enough(&state) {
            return Ok((version, state));
        }
        self.load_stream(&stream).await
    }

    /// Decides `command` on the aggregate `id` and appends what it decided.
    ///
    /// The first decision is made on what this process already knows ([`Basis::Known`]), without
    /// reading the store: an accepted command is checked by the append's expected version
    /// anyway, and a stale guess only costs a conflict and a second decision. A refusal, or a
    /// decision to record nothing, has no such check, so it stands only once the stream's tail
    /// has been read and there was nothing new. Each way out is one function below.
    pub async fn execute(
        &self,
        id: &str,
        command: A::Command,
        metadata: &EventMetadata,
    ) -> Result<Handled, CommandError<A::Error>> {
        let stream = stream_id(A::TYPE, id);
        let _turn = self.lock(&stream).lock().await;
        let mut basis = Basis::Known;
        let mut lost = 0;
        loop {
            let checked = basis.is_checked();
            let (version, state) = self.state_for(&stream, basis).await?;
            basis = match decide(state, command.clone()).await {
                Decision::Record(events, state) => {
                    match self
                        .record(&stream, version, events, state, metadata)
                        .await?
                    {
                        Some(handled) => return Ok(handled),
                        None => self.lost_race(&stream, checked, &mut lost).await?,
                    }
                }
                unchecked if !checked => match self.moved_on(&stream, version).await? {
                    Some((version, state)) => Basis::Read(version, state),
                    None => return self.stands(unchecked, version),
                },
                checked => return self.stands(checked, version),
            };
        }
    }

    /// The state a decision is made on, and its version.
    async fn state_for(
        &self,
        stream: &str,
        basis: Basis<A>,
    ) -> Result<(u64, Arc<A>), CommandError<A::Error>> {
        match basis {
            Basis::Known => Ok(self.known(stream)),
            Basis::Stored => self.load_stream(stream).await,
            Basis::Read(version, state) => Ok((version, state)),
        }
    }

    /// Appends what was decided at `version`: `None` when the stream had moved on (a conflict:
    /// nothing written). The cache takes the new state, or forgets the stream when the store
    /// already held this decision (an idempotent retry), whose state ours may be ahead of or
    /// behind.
    async fn record(
        &self,
        stream: &str,
        version: u64,
        events: Vec<A::Event>,
        state: Arc<A>,
        metadata: &EventMetadata,
    ) -> Result<Option<Handled>, CommandError<A::Error>> {
        let recorded = events.len();
        let new_events = envelopes(stream, &events, metadata);
        let appended = match self
            .store
            .append(stream, A::TYPE, version, new_events)
            .await
        {
            Ok(appended) => appended,
            Err(StoreError::Conflict { .. }) => {
                bump(&self.outcomes.conflicts);
                return Ok(None);
            }
            Err(other) => return Err(other.into()),
        };
        bump(&self.outcomes.appended);
        if appended.duplicate {
            bump(&self.outcomes.duplicates);
            self.forget(stream);
        } else {
            self.remember(stream.to_owned(), appended.version, state);
        }
        Ok(Some(Handled {
            version: appended.version,
            recorded,
        }))
    }

    /// After a conflict: decide again on the stream as stored. A guess that was wrong is not a
    /// lost race and goes again at once; a decision on a state just read that lost waits a
    /// growing, random while, and after [`MAX_ATTEMPTS`] such losses the command gives up.
    /// (The cache still holds a committed state, the command having changed its own copy, so
    /// the next load reads only the tail after it.)
    async fn lost_race(
        &self,
        stream: &str,
        checked: bool,
        lost: &mut u32,
    ) -> Result<Basis<A>, CommandError<A::Error>> {
        if checked {
            *lost += 1;
            if *lost >= MAX_ATTEMPTS {
                bump(&self.outcomes.contended);
                return Err(CommandError::Contention(stream.to_owned()));
            }
            bump(&self.outcomes.retries);
            backoff(*lost).await;
        }
        Ok(Basis::Stored)
    }

    /// The stream as stored, when it is past the `version` an unchecked decision was made on.
    async fn moved_on(
        &self,
        stream: &str,
        version: u64,
    ) -> Result<Option<(u64, Arc<A>)>, CommandError<A::Error>> {
        let current = self.load_stream(stream).await?;
        Ok((current.0 != version).then_some(current))
    }

    /// A decision that records nothing, on a state known to be current: a refusal, or nothing
    /// left to do. The cached state is as it was (a sold-out SKU is asked often).
    fn stands(
        &self,
        decision: Decision<A>,
        version: u64,
    ) -> Result<Handled, CommandError<A::Error>> {
        match decision {
            Decision::Refused(rejection) => {
                bump(&self.outcomes.rejected);
                Err(CommandError::Rejected(rejection))
            }
            Decision::Nothing | Decision::Record(..) => Ok(Handled {
                version,
                recorded: 0,
            }),
        }
    }

    /// What this process knows of the stream without asking the store: the cached state, or
    /// a stream without events.
    fn known(&self, stream: &str) -> (u64, Arc<A>) {
        self.cache
            .lock()
            .ok()
            .and_then(|mut c| c.get(stream).cloned())
            .unwrap_or_default()
    }

    async fn load_stream(&self, stream: &str) -> Result<(u64, Arc<A>), CommandError<A::Error>> {
        let cached = self
            .cache
            .lock()
            .ok()
            .and_then(|mut c| c.get(stream).cloned());
        let (mut version, mut state) = cached.unwrap_or_default();
        let tail = self.store.read_stream(stream, version + 1).await?;
        if !tail.is_empty() {
            let current = Arc::make_mut(&mut state);
            for recorded in tail {
                current.apply(decode::<A::Event>(&recorded)?);
                version = recorded.version;
            }
            self.remember(stream.to_owned(), version, state.clone());
        }
        Ok((version, state))
    }

    /// Keeps `state` unless the cache already holds a later version (a read racing a command
    /// on the same stream).
    fn remember(&self, stream: String, version: u64, state: Arc<A>) {
        if let Ok(mut cache) = self.cache.lock()
            && cache
                .get(&stream)
                .is_none_or(|(known, _)| *known <= version)
        {
            cache.insert(stream, (version, state));
        }
    }

    fn forget(&self, stream: &str) {
        if let Ok(mut cache) = self.cache.lock() {
            cache.remove(stream);
        }
    }

    fn lock(&self, stream: &str) -> &AsyncMutex<()> {
        let mut hasher = DefaultHasher::new();
        stream.hash(&mut hasher);
        &self.locks[(hasher.finish() as usize) % LOCK_SHARDS]
    }
}

/// What a decision is made on.
enum Basis<A> {
    /// What this process knows (its cache, or an empty stream), not checked against the store.
    Known,
    /// The stream as the store has it now (read from the cached version on).
    Stored,
    /// A state just read from the store.
    Read(u64, Arc<A>),
}

impl<A> Basis<A> {
    /// Whether the state was read from the store for this command.
    fn is_checked(&self) -> bool {
        !matches!(self, Self::Known)
    }
}

/// What the aggregate decided.
enum Decision<A: Aggregate> {
    Refused(A::Error),
    /// Accepted, with nothing to record: its effect had already happened.
    Nothing,
    /// These events, and the state with them applied.
    Record(Vec<A::Event>, Arc<A>),
}

/// Lets the aggregate decide on its own copy of `state`: the cache keeps the committed state
/// meanwhile, so a reader of the stream (pricing reads the catalog's) finds it there instead of
/// folding the whole stream from the store, which for a hot SKU with thousands of reservations
/// cost far more than this copy (seen in a profile: most of the server's time decoding SQLite
/// rows at 64 clients).
async fn decide<A>(mut state: Arc<A>, command: A::Command) -> Decision<A>
where
    A: Aggregate<Services = ()> + Clone,
{
    let sink = EventSink::default();
    let decided = Arc::make_mut(&mut state).handle(command, &(), &sink).await;
    let events = sink.collect().await;
    match decided {
        Err(rejection) => Decision::Refused(rejection),
        Ok(()) if events.is_empty() => Decision::Nothing,
        Ok(()) => Decision::Record(events, state),
    }
}

/// The envelopes of what a command decided, each with its id ([`event_id`]).
fn envelopes<E: cqrs_es::DomainEvent>(
    stream: &str,
    events: &[E],
    metadata: &EventMetadata,
) -> Vec<NewEvent> {
    let now = Utc::now();
    events
        .iter()
        .enumerate()
        .map(|(i, event)| {
            let id = event_id(metadata, stream, &event.event_type(), i);
            NewEvent::from_domain(id, event, now, metadata.clone())
        })
        .collect()
}

/// After losing a race, waits a random time that grows with each loss, so that two writers
/// that keep colliding on one stream drift apart instead of colliding again (up to ~64 ms).
async fn backoff(attempt: u32) {
    let ceiling_micros = 250u128 << attempt.min(8);
    let jitter = Uuid::new_v4().as_u128() % ceiling_micros;
    tokio::time::sleep(std::time::Duration::from_micros(jitter as u64)).await;
}

/// A service's command (one with a causing event) gets ids derived from that event, the stream
/// and the event type, so a redelivery that decides the same thing appends the same ids; a
/// person's command gets a fresh, time-ordered UUID v7. Within one causation a service never
/// records two events of one type on one stream, which keeps the derived ids distinct.
fn event_id(metadata: &EventMetadata, stream: &str, event_type: &str, index: usize) -> Uuid {
    match metadata.causation_id {
        Some(cause) => Uuid::new_v5(&cause, format!("{stream}/{event_type}/{index}").as_bytes()),
        None => Uuid::now_v7(),
    }
}

#[cfg(test)]
pub(crate) mod tests;
