//! The SQLite store's read side: read-only connections, each on a thread of its own.
//!
//! A read is one hand-over: the caller's task sends the whole query (a closure) to whichever
//! reader thread is free and waits for one answer, the rows already decoded into events. Through
//! sqlx's pool a read was an acquire, the statement and its rows handed over one at a time
//! from sqlx's connection thread, and the release: several waits for a thread to be woken,
//! and on this project's VM a thread woken from idle costs about half a millisecond (the
//! `floor` bench). The order processor's status read and the relay's log pages are on every
//! order's way to its decision.

use std::path::Path;
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use eventlog::StoreError;
use rusqlite::{Connection, OpenFlags};
use tokio::sync::oneshot;

use super::writer::{open, start};

/// Statements each connection keeps prepared.
const STATEMENT_CACHE: usize = 16;

type Job = Box<dyn FnOnce(&Connection) + Send>;

/// The reader threads; each ends, closing its connection, once this is dropped and the
/// reads already queued are answered.
pub(super) struct Readers {
    jobs: mpsc::Sender<Job>,
}

impl Readers {
    /// Opens `count` read-only connections to the (migrated) database at `path`, each with
    /// its thread: each statement sees what was committed when it began (WAL).
    pub(super) fn open(
        path: &Path,
        count: usize,
        busy_timeout: Duration,
    ) -> Result<Self, StoreError> {
        let (jobs, queue) = mpsc::channel::<Job>();
        let queue = Arc::new(Mutex::new(queue));
        for i in 0..count.max(1) {
            let conn = open(path, OpenFlags::SQLITE_OPEN_READ_ONLY, busy_timeout)?;
            conn.set_prepared_statement_cache_capacity(STATEMENT_CACHE);
            let queue = queue.clone();
            start(&format!("sqlite-reader-{i}"), move || serve(conn, &queue))?;
        }
        Ok(Self { jobs })
    }

    /// Runs `read` on a free reader's connection and answers what it returns. A panic in
    /// `read` becomes `Unavailable` (the thread goes on).
    pub(super) async fn run<T, F>(&self, read: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T, StoreError> + Send + 'static,
    {
        let (reply, answer) = oneshot::channel();
        let job: Job = Box::new(move |conn| {
            let _ = reply.send(read(conn));
        });
        self.jobs.send(job).map_err(|_| gone())?;
        answer.await.map_err(|_| gone())?
    }
}

/// One thread: reads until the queue is closed. The queue's lock is held only while waiting
/// for the next job, so the other threads run their reads meanwhile.
fn serve(conn: Connection, queue: &Mutex<mpsc::Receiver<Job>>) {
    loop {
        let job = match queue.lock() {
            Ok(queue) => queue.recv(),
            Err(_) => break,
        };
        let Ok(job) = job else { break };
        // A panicking read drops its reply (the caller sees `Unavailable`), not the thread.
        let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| job(&conn)));
    }
    if let Err((_, error)) = conn.close() {
        tracing::warn!(%error, "closing an event store reader failed");
    }
}

fn gone() -> StoreError {
    StoreError::Unavailable("the event store's reader threads are gone".into())
}
