//! What the embedded engines promise to keep across a restart, in a SQLite file beside the
//! event store (`kept.db` in the data directory): the notifier's completed claims, the
//! installations and sandbox payments the in-memory view store holds, and the in-process
//! topic's dead letters. Without it a restart of `orderflow serve` forgot every registered
//! device, let redelivered events be pushed again, and lost the dead letters operators had
//! not looked at yet.
//!
//! The in-memory engines stay the authority while the process runs (one process owns an
//! embedded cache), so this file is written through, never read, except once at start-up.
//! Leases are not kept: after a restart every lease belonged to a process that is gone.
//!
//! Writes go to one thread that commits whatever has queued up in one transaction
//! (`synchronous = FULL`, as the event store), and each caller is answered once its write is
//! on disk: a registration is kept before its reply, a claim is done before its ack.
//! Completed claims older than [`DONE_KEPT_DAYS`] are dropped when the file opens, as Redis
//! expires them.

use std::path::{Path, PathBuf};
use std::sync::mpsc;

use chrono::Utc;
use domain::RecordedEvent;
use projections::view_store::Doc;
use rusqlite::{Connection, OpenFlags, params};
use tokio::sync::oneshot;

use crate::bus::DeadLetter;

/// How long a completed claim is kept: far beyond any redelivery.
pub const DONE_KEPT_DAYS: i64 = 30;
/// Writes committed in one transaction at most.
const BATCH: usize = 512;

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS done_claims (
    key TEXT PRIMARY KEY,
    at INTEGER NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS docs (
    key TEXT PRIMARY KEY,
    version INTEGER NOT NULL,
    body TEXT NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS index_entries (
    idx TEXT NOT NULL,
    member TEXT NOT NULL,
    score INTEGER NOT NULL,
    PRIMARY KEY (idx, member)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS dead_letters (
    subscription TEXT NOT NULL,
    event_id TEXT NOT NULL,
    event TEXT NOT NULL,
    attempts INTEGER NOT NULL,
    reason TEXT NOT NULL,
    at INTEGER NOT NULL,
    PRIMARY KEY (subscription, event_id)
) WITHOUT ROWID;
";

/// One change to keep.
#[derive(Debug, Clone)]
pub enum Keep {
    /// A claim whose work is done.
    Done(String),
    /// A document as it now is.
    Doc(String, Doc),
    /// An index entry as it now is: `(index, score, member)`.
    Index(String, i64, String),
    /// A message given up on.
    DeadLetter(Box<DeadLetter>),
    /// A dead letter re-driven or discarded: `(subscription, event id)`.
    NoLongerDead(String, uuid::Uuid),
}

/// Everything the file held when it opened.
#[derive(Debug, Default)]
pub struct Kept {
    pub done: Vec<String>,
    pub docs: Vec<(String, Doc)>,
    pub index: Vec<(String, i64, String)>,
    pub dead_letters: Vec<DeadLetter>,
}

type Request = (Vec<Keep>, oneshot::Sender<Result<(), String>>);

/// The file, written through a thread of its own.
pub struct KeptFile {
    path: PathBuf,
    requests: mpsc::Sender<Request>,
}

impl KeptFile {
    /// Opens (or creates) the file and answers what it holds.
    pub fn open(path: &Path) -> Result<(Self, Kept), String> {
        let shown = path.display().to_string();
        let fail = |e: rusqlite::Error| format!("the kept state {shown}: {e}");
        let conn = Connection::open_with_flags(
            path,
            OpenFlags::SQLITE_OPEN_READ_WRITE
                | OpenFlags::SQLITE_OPEN_CREATE
                | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .map_err(fail)?;
        conn.busy_timeout(std::time::Duration::from_secs(5))
            .map_err(fail)?;
        conn.pragma_update(None, "journal_mode", "WAL")
            .map_err(fail)?;
        conn.pragma_update(None, "synchronous", "FULL")
            .map_err(fail)?;
        conn.execute_batch(SCHEMA).map_err(fail)?;
        let oldest = Utc::now().timestamp() - DONE_KEPT_DAYS * 86_400;
        conn.execute("DELETE FROM done_claims WHERE at < ?1", params![oldest])
            .map_err(fail)?;
        let kept = load(&conn).map_err(fail)?;
        let (requests, queue) = mpsc::channel::<Request>();
        std::thread::Builder::new()
            .name("kept-state".into())
            .spawn(move || write_all(conn, queue))
            .map_err(|e| format!("cannot start the kept state's writer: {e}"))?;
        Ok((
            Self {
                path: path.to_owned(),
                requests,
            },
            kept,
        ))
    }

    /// Writes `changes` in one transaction (with whatever else is queued) and answers once
    /// they are on disk.
    pub async fn keep(&self, changes: Vec<Keep>) -> Result<(), String> {
        if changes.is_empty() {
            return Ok(());
        }
        let (answer, answered) = oneshot::channel();
        let gone = || format!("the kept state {} is closed", self.path.display());
        self.requests.send((changes, answer)).map_err(|_| gone())?;
        answered.await.map_err(|_| gone())?
    }
}

fn load(conn: &Connection) -> rusqlite::Result<Kept> {
    let mut kept = Kept::default();
    let mut done = conn.prepare("SELECT key FROM done_claims")?;
    for key in done.query_map([], |row| row.get(0))? {
        kept.done.push(key?);
    }
    let mut docs = conn.prepare("SELECT key, version, body FROM docs")?;
    for doc in docs.query_map([], |row| {
        Ok((
            row.get::<_, String>(0)?,
            Doc {
                version: row.get::<_, i64>(1)? as u64,
                body: row.get(2)?,
            },
        ))
    })? {
        kept.docs.push(doc?);
    }
    let mut index = conn.prepare("SELECT idx, score, member FROM index_entries")?;
    for entry in index.query_map([], |row| Ok((row.get(0)?, row.get(1)?, row.get(2)?)))? {
        kept.index.push(entry?);
    }
    let mut dead = conn.prepare(
        "SELECT subscription, event, attempts, reason, at FROM dead_letters ORDER BY at, event_id",
    )?;
    let rows = dead.query_map([], |row| {
        Ok((
            row.get::<_, String>(0)?,
            row.get::<_, String>(1)?,
            row.get::<_, i64>(2)?,
            row.get::<_, String>(3)?,
            row.get::<_, i64>(4)?,
        ))
    })?;
    for row in rows {
        let (subscription, event, attempts, reason, at) = row?;
        match serde_json::from_str::<RecordedEvent>(&event) {
            Ok(event) => kept.dead_letters.push(DeadLetter {
                subscription,
                event,
                attempts: attempts as u32,
                reason,
                dead_at: parked_at(at),
            }),
            Err(error) => tracing::warn!(%error, %subscription, "an unreadable kept dead letter"),
        }
    }
    Ok(kept)
}

/// A dead letter's `at`: milliseconds since the epoch, or seconds in a file written by the
/// first build that kept dead letters (no millisecond count is that small after 1973).
fn parked_at(at: i64) -> Option<chrono::DateTime<Utc>> {
    if at < 100_000_000_000 {
        chrono::DateTime::from_timestamp(at, 0)
    } else {
        chrono::DateTime::from_timestamp_millis(at)
    }
}

/// The writer thread: one transaction per batch of queued requests, until every sender is
/// gone.
fn write_all(mut conn: Connection, queue: mpsc::Receiver<Request>) {
    while let Ok(first) = queue.recv() {
        let mut batch = vec![first];
        while batch.len() < BATCH {
            match queue.try_recv() {
                Ok(next) => batch.push(next),
                Err(_) => break,
            }
        }
        let result = commit(&mut conn, &batch).map_err(|e| format!("kept state: {e}"));
        if let Err(error) = &result {
            tracing::warn!(%error, "kept state not written");
        }
        for (_, answer) in batch {
            let _ = answer.send(result.clone());
        }
    }
}

fn commit(conn: &mut Connection, batch: &[Request]) -> rusqlite::Result<()> {
    let now = Utc::now().timestamp();
    let tx = conn.transaction()?;
    for change in batch.iter().flat_map(|(changes, _)| changes) {
        match change {
            Keep::Done(key) => {
                tx.prepare_cached("INSERT OR REPLACE INTO done_claims (key, at) VALUES (?1, ?2)")?
                    .execute(params![key, now])?;
            }
            Keep::Doc(key, doc) => {
                tx.prepare_cached(
                    "INSERT OR REPLACE INTO docs (key, version, body) VALUES (?1, ?2, ?3)",
                )?
                .execute(params![key, doc.version as i64, doc.body])?;
            }
            Keep::Index(index, score, member) => {
                tx.prepare_cached(
                    "INSERT OR REPLACE INTO index_entries (idx, member, score) VALUES (?1, ?2, ?3)",
                )?
                .execute(params![index, member, score])?;
            }
            Keep::DeadLetter(dead) => {
                let event = serde_json::to_string(&dead.event)
                    .map_err(|e| rusqlite::Error::ToSqlConversionFailure(Box::new(e)))?;
                tx.prepare_cached(
                    "INSERT OR REPLACE INTO dead_letters \
                     (subscription, event_id, event, attempts, reason, at) \
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                )?
                .execute(params![
                    dead.subscription,
                    dead.event.event_id.to_string(),
                    event,
                    dead.attempts,
                    dead.reason,
                    dead.dead_at.map_or(now * 1000, |at| at.timestamp_millis())
                ])?;
            }
            Keep::NoLongerDead(subscription, event_id) => {
                tx.prepare_cached(
                    "DELETE FROM dead_letters WHERE subscription = ?1 AND event_id = ?2",
                )?
                .execute(params![subscription, event_id.to_string()])?;
            }
        }
    }
    tx.commit()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn what_was_kept_is_there_when_the_file_opens_again() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("kept.db");
        let event = crate::bus::conformance::events(1).remove(0);
        {
            let (file, kept) = KeptFile::open(&path).unwrap();
            assert!(kept.done.is_empty() && kept.docs.is_empty());
            let dead = DeadLetter {
                subscription: "notifier".into(),
                event: event.clone(),
                attempts: 5,
                reason: "undecodable".into(),
                dead_at: chrono::DateTime::from_timestamp_millis(1_790_000_000_123),
            };
            file.keep(vec![
                Keep::Done("notified:1".into()),
                Keep::Doc(
                    "installation:a".into(),
                    Doc {
                        version: 2,
                        body: "{}".into(),
                    },
                ),
                Keep::Index("installations:customer:c".into(), 0, "a".into()),
                Keep::DeadLetter(Box::new(dead.clone())),
                Keep::DeadLetter(Box::new(DeadLetter {
                    subscription: "projector".into(),
                    ..dead
                })),
            ])
            .await
            .unwrap();
            file.keep(vec![Keep::NoLongerDead("projector".into(), event.event_id)])
                .await
                .unwrap();
        }

        let (_, kept) = KeptFile::open(&path).unwrap();

        assert_eq!(kept.done, ["notified:1"]);
        assert_eq!(kept.docs.len(), 1);
        assert_eq!(kept.docs[0].1.version, 2);
        assert_eq!(
            kept.index,
            [("installations:customer:c".to_owned(), 0, "a".to_owned())]
        );
        assert_eq!(kept.dead_letters.len(), 1, "the discarded one is gone");
        assert_eq!(kept.dead_letters[0].subscription, "notifier");
        assert_eq!(kept.dead_letters[0].event, event);
        assert_eq!(
            kept.dead_letters[0].dead_at,
            chrono::DateTime::from_timestamp_millis(1_790_000_000_123),
            "when it was parked, to the millisecond"
        );
    }

    #[test]
    fn a_dead_letter_kept_in_seconds_by_an_older_build_reads_as_seconds() {
        assert_eq!(
            parked_at(1_790_000_000),
            chrono::DateTime::from_timestamp(1_790_000_000, 0)
        );
    }
}
