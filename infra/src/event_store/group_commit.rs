//! Group commit: the writer task both SQL event stores put their writes through.
//!
//! A durable commit is expensive: an fsync for SQLite, a WAL flush and a round trip under the
//! log lock for PostgreSQL. Committing each append on its own would cap the whole system at
//! that many commands per second, however small they are. So a writer task owns a write
//! connection and takes requests from an mpsc channel, each with a oneshot for its answer.
//! It takes the first request, drains whatever else is already waiting (up to the engine's
//! batch limit), and commits them all in ONE transaction: one durable commit per batch instead
//! of one per command. SQLite has one writer; PostgreSQL two, taking turns at the channel, so
//! that one prepares its batch while the other commits. Under load batches grow by themselves (requests pile up during the
//! commit), and when idle a lone request is committed at once, so latency does not suffer.
//!
//! Each request still gets its own answer. Inside the transaction the engine decides the
//! requests in channel order (the `batch` module), as if each ran in its own `SAVEPOINT`: a
//! conflict or a refused request fails alone and the others commit, and a later request for
//! the same stream sees the rows of an earlier one. Callers
//! hear back only after the `COMMIT` succeeded; if the batch fails (the `COMMIT` included),
//! every caller in it is told `Unavailable`. A caller that gave up no longer listens; its
//! events are committed anyway, and a retry with the same event ids is answered as a
//! duplicate. After each commit the writer moves [`EventStore::watch_head`]'s head to the
//! newest position it appended.
//!
//! What is the engine's own — its SQL, how it takes and numbers the log, what it does with a
//! failed connection, how big a batch may be — sits behind [`BatchCommit`], in its adapter.
//!
//! An engine whose connection is synchronous and lives on a thread of its own (SQLite's)
//! runs the writer on that thread instead ([`GroupCommit::on_thread`]): callers hand their
//! requests straight to the thread and hear back from it, without a writer task in between,
//! which on this project's VM saved two thread wake-ups per commit, each about as long as
//! the fsync (the `floor` bench).
//!
//! Dropping the [`GroupCommit`] handle (with the store) closes the channel; the writer
//! finishes what is already queued, closes its connection and ends, dropping its sender of
//! the head.
//!
//! [`EventStore::watch_head`]: eventlog::EventStore::watch_head

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use domain::NewEvent;
use eventlog::{Appended, StoreError};
use tokio::sync::{Mutex, mpsc, oneshot, watch};
use tokio::time::Instant;

/// One write, as queued for the writer task.
pub(super) enum Write {
    Append {
        stream_id: String,
        stream_type: String,
        expected: u64,
        events: Vec<NewEvent>,
    },
    Checkpoint {
        reader: String,
        position: u64,
    },
}

/// What a committed write answers.
pub(super) enum Written {
    Appended(Appended),
    Checkpoint,
}

/// One request's own answer, good or bad, inside a batch that committed.
pub(super) type Answer = Result<Written, StoreError>;

/// What an engine does for the writer task: commit one batch, and close at the end.
pub(super) trait BatchCommit: Send + 'static {
    /// Commits `writes` in ONE transaction, each failing alone, and answers each
    /// request's result in order. The writes are the engine's to keep (SQLite hands them to
    /// its own thread). `Err` only for what fails the whole batch (nothing of it is
    /// committed): every caller is then told that error. The engine rolls back and keeps or
    /// drops its connection as it sees fit.
    fn commit(
        &mut self,
        writes: Vec<Write>,
    ) -> impl Future<Output = Result<Vec<Answer>, StoreError>> + Send;

    /// Closes the write connection once the queue is closed and empty.
    fn close(self) -> impl Future<Output = ()> + Send;
}

/// The stores' side of the writer task: hands writes over and hears their answers.
pub(super) struct GroupCommit {
    requests: mpsc::Sender<Request>,
    batches: Arc<AtomicU64>,
}

impl GroupCommit {
    /// Starts a writer task over each of `engines`, all taking batches from one queue: batches
    /// of at most `max_batch` requests, up to `queue_capacity` waiting before submitting waits
    /// (back-pressure), waiting up to `max_linger` for the rest of a batch under load
    /// (`Writer::linger`), each commit published on `head`.
    ///
    /// One engine commits one batch after another. Several take turns at the queue: while
    /// one commits, the next collects and prepares its batch, which pays off when an engine
    /// can prepare a batch without holding up the others (PostgreSQL: its lookup); batches of
    /// different writers then decide and commit independently, in whichever order they finish.
    pub(super) fn start<E: BatchCommit>(
        engines: impl IntoIterator<Item = E>,
        max_batch: usize,
        queue_capacity: usize,
        max_linger: Duration,
        head: watch::Sender<u64>,
    ) -> Self {
        let (requests, queue) = mpsc::channel(queue_capacity);
        let queue = Arc::new(Mutex::new(queue));
        let batches = Arc::new(AtomicU64::new(0));
        for engine in engines {
            let writer = Writer {
                engine,
                queue: queue.clone(),
                head: head.clone(),
                batches: batches.clone(),
                pace: Pace {
                    max_batch,
                    max_linger,
                    last: (0, Duration::ZERO),
                },
            };
            tokio::spawn(writer.run());
        }
        Self { requests, batches }
    }

    /// The writer on a thread of its own, named `name`: it takes the first request and
    /// whatever else is waiting (up to `max_batch`), commits them with `commit` (one
    /// transaction, as [`BatchCommit::commit`]) and answers each caller itself. Once the
    /// store is dropped and the queue is empty, `commit` is dropped (closing its connection)
    /// and the thread ends.
    pub(super) fn on_thread(
        name: &str,
        max_batch: usize,
        queue_capacity: usize,
        head: watch::Sender<u64>,
        mut commit: impl FnMut(Vec<Write>) -> Result<Vec<Answer>, StoreError> + Send + 'static,
    ) -> Result<Self, StoreError> {
        let (requests, mut queue) = mpsc::channel::<Request>(queue_capacity);
        let batches = Arc::new(AtomicU64::new(0));
        let counted = batches.clone();
        std::thread::Builder::new()
            .name(name.into())
            .spawn(move || {
                while let Some(first) = queue.blocking_recv() {
                    let mut batch = vec![first];
                    drain(&mut queue, &mut batch, max_batch);
                    let (writes, replies): (Vec<_>, Vec<_>) = batch
                        .into_iter()
                        .map(|request| (request.write, request.reply))
                        .unzip();
                    let requests = writes.len();
                    let answers = settle(commit(writes), requests, &head, &counted);
                    answer(replies, answers);
                }
            })
            .map_err(|e| StoreError::Unavailable(format!("cannot start {name}: {e}")))?;
        Ok(Self { requests, batches })
    }

    /// How many transactions the writer has committed (for `/metrics`: appends divided by
    /// batches is the group-commit factor).
    pub(super) fn batches_committed(&self) -> u64 {
        self.batches.load(Ordering::Relaxed)
    }

    /// Appends through the writer; `events` must not be empty (an empty append writes
    /// nothing and is the adapter's to answer).
    pub(super) async fn append(
        &self,
        stream_id: &str,
        stream_type: &str,
        expected: u64,
        events: Vec<NewEvent>,
    ) -> Result<Appended, StoreError> {
        let write = Write::Append {
            stream_id: stream_id.to_owned(),
            stream_type: stream_type.to_owned(),
            expected,
            events,
        };
        match self.submit(write).await? {
            Written::Appended(appended) => Ok(appended),
            Written::Checkpoint => Err(StoreError::Corrupt("writer mixed up answers".into())),
        }
    }

    /// Saves a checkpoint through the writer, so a relay's checkpoints share the appends'
    /// commits.
    pub(super) async fn save_checkpoint(
        &self,
        reader: &str,
        position: u64,
    ) -> Result<(), StoreError> {
        let write = Write::Checkpoint {
            reader: reader.to_owned(),
            position,
        };
        self.submit(write).await.map(|_| ())
    }

    /// Hands a write to the writer task and waits for its answer, which comes after COMMIT.
    async fn submit(&self, write: Write) -> Result<Written, StoreError> {
        let (reply, answer) = oneshot::channel();
        self.requests
            .send(Request { write, reply })
            .await
            .map_err(|_| writer_gone())?;
        answer.await.map_err(|_| writer_gone())?
    }
}

/// Moves a head forward (never back), waking watchers only when it moved.
pub(super) fn advance(head: &watch::Sender<u64>, to: u64) {
    head.send_if_modified(|head| {
        let moved = to > *head;
        *head = (*head).max(to);
        moved
    });
}

struct Request {
    write: Write,
    reply: oneshot::Sender<Answer>,
}

/// The task that owns the engine's write connection; see the module docs.
struct Writer<E> {
    engine: E,
    /// Shared by the store's writers; the one holding it collects the next batch.
    queue: Arc<Mutex<mpsc::Receiver<Request>>>,
    head: watch::Sender<u64>,
    batches: Arc<AtomicU64>,
    pace: Pace,
}

impl<E: BatchCommit> Writer<E> {
    async fn run(mut self) {
        while let Some(batch) = self.collect().await {
            let (writes, replies): (Vec<_>, Vec<_>) = batch
                .into_iter()
                .map(|request| (request.write, request.reply))
                .unzip();
            let started = Instant::now();
            let size = writes.len();
            let answers = settle(
                self.engine.commit(writes).await,
                size,
                &self.head,
                &self.batches,
            );
            // The load of late: the biggest recent batch, forgotten by a quarter a batch, so
            // that one small batch (the convoy's head) does not make the next one eager.
            let recent = (self.pace.last.0 * 3 / 4).max(size);
            self.pace.last = (recent, started.elapsed());
            answer(replies, answers);
        }
        self.engine.close().await;
    }

    /// The next batch, once this writer's turn at the queue came: the first request plus
    /// every request already waiting, up to `max_batch`, plus what [`Pace::linger`] waits
    /// for. `None` once the queue is closed and empty.
    async fn collect(&mut self) -> Option<Vec<Request>> {
        let queue = self.queue.clone();
        let mut queue = queue.lock().await;
        let first = queue.recv().await?;
        let mut batch = vec![first];
        drain(&mut queue, &mut batch, self.pace.max_batch);
        self.pace.linger(&mut queue, &mut batch).await;
        Some(batch)
    }
}

/// Each request's answer, in order, from what committing the batch of `requests` did: after
/// a commit the batch is counted and the head moved to the newest position appended; a
/// failed batch fails every request in it.
fn settle(
    committed: Result<Vec<Answer>, StoreError>,
    requests: usize,
    head: &watch::Sender<u64>,
    batches: &AtomicU64,
) -> Vec<Answer> {
    match committed {
        Ok(answers) => {
            batches.fetch_add(1, Ordering::Relaxed);
            if let Some(newest) = newest_position(&answers) {
                advance(head, newest);
            }
            tracing::debug!(requests, "committed a batch");
            answers
        }
        Err(failure) => (0..requests).map(|_| Err(failure.clone())).collect(),
    }
}

/// Hands each caller its answer. A caller that gave up no longer listens; see the module docs.
fn answer(replies: Vec<oneshot::Sender<Answer>>, answers: Vec<Answer>) {
    for (reply, answer) in replies.into_iter().zip(answers) {
        let _ = reply.send(answer);
    }
}

/// How big a writer's batches are, and how long it lingers for them.
#[derive(Clone, Copy)]
struct Pace {
    max_batch: usize,
    /// The longest the writer waits for the rest of a batch (zero: never).
    max_linger: Duration,
    /// The recent batch size (a decaying peak) and how long the last commit took: what the
    /// linger goes by.
    last: (usize, Duration),
}

impl Pace {
    /// Under load, waits a moment for the rest of a batch. When a batch commits, its callers
    /// all hear back at once and send their next requests a moment later; a writer that
    /// took only what was already waiting would commit the first few alone and leave the rest
    /// for a batch after, a convoy of small commits (seen: batches of 1, 9, 35, 56 at 64
    /// clients). So when far fewer requests are waiting than the last batch had, the writer
    /// waits for more, up to half the last commit's duration (at most the engine's
    /// `max_linger`) or until the batch is as big as the recent ones. Idle, and with one
    /// caller, there is no wait: recent batches had one request.
    async fn linger(self, queue: &mut mpsc::Receiver<Request>, batch: &mut Vec<Request>) {
        let (recent, last_commit) = self.last;
        let wanted = recent.min(self.max_batch);
        if batch.len() * 2 > wanted || self.max_linger.is_zero() {
            return;
        }
        let deadline = Instant::now() + (last_commit / 2).min(self.max_linger);
        while batch.len() < wanted {
            match tokio::time::timeout_at(deadline, queue.recv()).await {
                Ok(Some(request)) => {
                    batch.push(request);
                    drain(queue, batch, self.max_batch);
                }
                Ok(None) | Err(_) => break,
            }
        }
    }
}

/// Adds every request already waiting to `batch`, up to `max_batch`.
fn drain(queue: &mut mpsc::Receiver<Request>, batch: &mut Vec<Request>, max_batch: usize) {
    while batch.len() < max_batch {
        match queue.try_recv() {
            Ok(request) => batch.push(request),
            Err(_) => break,
        }
    }
}

/// The highest position the batch appended, if it appended anything new.
fn newest_position(answers: &[Answer]) -> Option<u64> {
    answers
        .iter()
        .filter_map(|answer| match answer {
            Ok(Written::Appended(a)) if !a.duplicate => a.position,
            _ => None,
        })
        .max()
}

fn writer_gone() -> StoreError {
    StoreError::Unavailable("the event store's writer has stopped".into())
}

/// The writer's batching, over an engine of the test's own that only records batch sizes and
/// takes 10 ms a commit (time is paused: the clock moves only when every task waits).
#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use chrono::Utc;
    use domain::EventMetadata;
    use uuid::Uuid;

    use super::*;

    struct Recording(Arc<Mutex<Vec<usize>>>);

    impl BatchCommit for Recording {
        async fn commit(&mut self, writes: Vec<Write>) -> Result<Vec<Answer>, StoreError> {
            self.0.lock().unwrap().push(writes.len());
            tokio::time::sleep(Duration::from_millis(10)).await;
            Ok(writes.iter().map(|_| Ok(Written::Checkpoint)).collect())
        }

        async fn close(self) {}
    }

    fn writer(max_linger: Duration) -> (Arc<GroupCommit>, Arc<Mutex<Vec<usize>>>) {
        let sizes = Arc::new(Mutex::new(Vec::new()));
        let (head, _) = watch::channel(0);
        let writer = GroupCommit::start([Recording(sizes.clone())], 64, 256, max_linger, head);
        (Arc::new(writer), sizes)
    }

    fn one_event() -> Vec<NewEvent> {
        vec![NewEvent {
            event_id: Uuid::now_v7(),
            event_type: "Noted".into(),
            schema_version: 1,
            occurred_at: Utc::now(),
            payload: serde_json::json!({}),
            metadata: EventMetadata::default(),
        }]
    }

    /// 32 callers in a closed loop, each sending its next request a different number of
    /// 100 µs steps after its last answer: batches of what was waiting alone come apart
    /// into small ones; lingering keeps them whole.
    async fn closed_loop(writer: Arc<GroupCommit>) {
        let callers = (0..32u64).map(|i| {
            let writer = writer.clone();
            tokio::spawn(async move {
                for _ in 0..10 {
                    tokio::time::sleep(Duration::from_micros(100 * i)).await;
                    let _ = writer.append("s", "t", 0, one_event()).await;
                }
            })
        });
        futures_util::future::join_all(callers).await;
    }

    #[tokio::test(start_paused = true)]
    async fn under_load_a_batch_waits_for_the_callers_of_the_last_one() {
        let (lingering, sizes) = writer(Duration::from_millis(5));
        closed_loop(lingering).await;
        let lingered = sizes.lock().unwrap().clone();

        let (eager, sizes) = writer(Duration::ZERO);
        closed_loop(eager).await;
        let eager = sizes.lock().unwrap().clone();

        assert!(
            lingered.len() * 3 < eager.len() * 2,
            "fewer commits when lingering: {lingered:?}; not: {eager:?}"
        );
    }

    /// Two engines over one queue commit two batches at the same time: with batches of one,
    /// two callers at once are both answered after one commit's time, where one engine
    /// answers the second a commit later.
    #[tokio::test(start_paused = true)]
    async fn writers_sharing_the_queue_commit_side_by_side() {
        async fn two_callers(engines: usize) -> Vec<Duration> {
            let sizes = Arc::new(Mutex::new(Vec::new()));
            let (head, _) = watch::channel(0);
            let engines = (0..engines).map(|_| Recording(sizes.clone()));
            let writer = Arc::new(GroupCommit::start(engines, 1, 16, Duration::ZERO, head));
            let sent = tokio::time::Instant::now();
            let callers = (0..2).map(|_| {
                let writer = writer.clone();
                tokio::spawn(async move {
                    writer.save_checkpoint("r", 1).await.expect("saved");
                    sent.elapsed()
                })
            });
            let answered = futures_util::future::join_all(callers).await;
            let mut answered: Vec<Duration> = answered.into_iter().map(Result::unwrap).collect();
            answered.sort();
            answered
        }
        let ms = Duration::from_millis;

        assert_eq!(two_callers(2).await, [ms(10), ms(10)]);
        assert_eq!(two_callers(1).await, [ms(10), ms(20)]);
    }

    #[tokio::test(start_paused = true)]
    async fn a_lone_caller_is_never_kept_waiting() {
        let (writer, sizes) = writer(Duration::from_millis(5));
        for _ in 0..5 {
            let sent = tokio::time::Instant::now();
            writer.save_checkpoint("r", 1).await.expect("saved");
            assert_eq!(
                sent.elapsed(),
                Duration::from_millis(10),
                "one commit, no wait"
            );
        }
        assert_eq!(*sizes.lock().unwrap(), vec![1; 5]);
    }

    /// The writer on a thread of its own: what queues while a batch commits goes in the next
    /// one, every caller hears its own answer, a failed batch fails each of its callers, and
    /// the head moves to the newest position of a committed batch.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_writer_on_a_thread_batches_what_waits_and_answers_each_caller() {
        let sizes = Arc::new(Mutex::new(Vec::new()));
        let (release, held) = std::sync::mpsc::channel::<()>();
        let (head, mut watched) = watch::channel(0);
        let recorded = sizes.clone();
        let writer = Arc::new(
            GroupCommit::on_thread("test-writer", 64, 256, head, move |writes| {
                let batch = {
                    let mut sizes = recorded.lock().unwrap();
                    sizes.push(writes.len());
                    sizes.len()
                };
                // The first batch is held until the others have queued; the third fails.
                if batch == 1 {
                    held.recv().unwrap();
                }
                if batch == 3 {
                    return Err(StoreError::Unavailable("disk gone".into()));
                }
                Ok(writes
                    .iter()
                    .enumerate()
                    .map(|(i, _)| {
                        Ok(Written::Appended(Appended {
                            version: 1,
                            position: Some((batch * 100 + i) as u64),
                            duplicate: false,
                        }))
                    })
                    .collect())
            })
            .expect("the writer thread"),
        );
        let append = |writer: Arc<GroupCommit>, i: usize| async move {
            writer
                .append(&format!("s-{i}"), "test", 0, one_event())
                .await
        };

        let first = tokio::spawn(append(writer.clone(), 0));
        while sizes.lock().unwrap().is_empty() {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        let queued: Vec<_> = (1..=5)
            .map(|i| tokio::spawn(append(writer.clone(), i)))
            .collect();
        // The five wait in the queue while the first batch is held.
        while writer.requests.capacity() > 256 - 5 {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        release.send(()).unwrap();

        assert_eq!(first.await.unwrap().expect("committed").position, Some(100));
        let mut positions = Vec::new();
        for answer in futures_util::future::join_all(queued).await {
            positions.push(answer.unwrap().expect("committed").position.unwrap());
        }
        // The five queued in whichever order their tasks ran; each got its own answer.
        positions.sort_unstable();
        assert_eq!(
            positions,
            [200, 201, 202, 203, 204],
            "one batch, an answer each"
        );
        assert_eq!(*sizes.lock().unwrap(), [1, 5]);
        assert_eq!(
            *watched.borrow_and_update(),
            204,
            "the head moved to the newest"
        );
        assert_eq!(writer.batches_committed(), 2);

        let failed = append(writer.clone(), 9).await;
        assert!(
            matches!(failed, Err(StoreError::Unavailable(_))),
            "{failed:?}"
        );
        assert_eq!(
            writer.batches_committed(),
            2,
            "a failed batch is not counted"
        );
        assert_eq!(*watched.borrow(), 204);
    }
}
