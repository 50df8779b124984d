//! The floor under the embedded end-to-end latency (issue 6): what this machine's disk and
//! scheduler allow an order that waits for three durable commits one after the other, as an
//! order does (the placement, the reservation, the confirmation), before any of orderflow's
//! own work.
//!
//! `cargo bench -p infra --bench floor`. Open loop at `FLOOR_RATE` orders a second (default
//! 1,000) for `FLOOR_SECONDS` (default 10), latency from each order's intended start (so a
//! stall delays the orders behind it, as in `orderflow loadgen --rate`). Five lines, the SQLite ones
//! on a file each, in WAL mode with `synchronous=FULL`, as orderflow's store opens it:
//! - `fdatasync`: one 4 KiB write and `fdatasync` after another, the disk alone;
//! - `hand-off to a thread and back`: a task wakes a thread that answers at once, what each
//!   hop between threads costs at this rate (a virtual CPU that went idle between orders is
//!   woken by the host, which on this VM is far from free);
//! - `raw SQLite, 1 commit`: one durable commit per order through a writer thread that
//!   commits whatever is waiting in one transaction (group commit), rusqlite and nothing else;
//! - `raw SQLite, 3 commits in turn`: the same writer, three commits per order, each sent when
//!   the one before is durable: the least an order's decision can wait for;
//! - `orderflow SqliteEventStore, 3 appends in turn`: the same three, through the store's
//!   `append` (expected-version check, idempotency, the log's numbering), the baseline to the
//!   raw line.
//!
//! `loadgen --rate 1000` against the whole embedded server, run right after this, shows how
//! much of its end-to-end latency is this floor and how much the rest of the system.

mod common;

use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::Arc;
use std::sync::mpsc as std_mpsc;
use std::time::{Duration, Instant};

use common::{Run, env, placed};
use domain::NewEvent;
use eventlog::EventStore;
use infra::event_store::SqliteEventStore;
use tokio::sync::oneshot;
use uuid::Uuid;

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let rate = env("FLOOR_RATE", 1_000).max(1);
    let seconds = env("FLOOR_SECONDS", 10).max(1);
    let orders = rate * seconds;
    let dir = tempfile::tempdir().expect("a temporary directory");
    let payload = serde_json::to_vec(&placed(Uuid::now_v7()).await).expect("the event's JSON");
    println!(
        "open loop at {rate} orders/s for {seconds} s, latency from each order's intended start; \
         SQLite WAL, synchronous=FULL; an event of {} bytes",
        payload.len()
    );

    let fsync = fdatasync(&dir.path().join("fsync.bin"), 2_000);
    println!(
        "  {:<44} {}",
        "fdatasync, one after another",
        fsync.summary()
    );

    let idle = open_loop(rate, orders, |_| async { Ok(()) }).await;
    println!("  {:<44} {}", "the pacing alone, no work", idle.summary());

    let worker = Worker::start();
    let handoff = open_loop(rate, orders, {
        let worker = worker.clone();
        move |_| {
            let worker = worker.clone();
            async move { worker.round_trip().await }
        }
    })
    .await;
    println!(
        "  {:<44} {}",
        "hand-off to a thread and back, no work",
        handoff.summary()
    );

    let raw = RawWriter::open(&dir.path().join("raw1.db"));
    let one = open_loop(rate, orders, {
        let (raw, payload) = (raw.clone(), payload.clone());
        move |_| {
            let (raw, payload) = (raw.clone(), payload.clone());
            async move { raw.commit(payload).await }
        }
    })
    .await;
    println!("  {:<44} {}", "raw SQLite, 1 commit", one.summary());

    let raw = RawWriter::open(&dir.path().join("raw3.db"));
    let three = open_loop(rate, orders, {
        let (raw, payload) = (raw.clone(), payload.clone());
        move |_| {
            let (raw, payload) = (raw.clone(), payload.clone());
            async move {
                for _ in 0..3 {
                    raw.commit(payload.clone()).await?;
                }
                Ok(())
            }
        }
    })
    .await;
    println!(
        "  {:<44} {}",
        "raw SQLite, 3 commits in turn",
        three.summary()
    );

    let store: Arc<dyn EventStore> = Arc::new(
        SqliteEventStore::open(&dir.path().join("events.db"))
            .await
            .expect("the SQLite store"),
    );
    let event = placed(Uuid::now_v7()).await;
    let metadata = common::customer_metadata();
    let store_run = open_loop(rate, orders, move |i| {
        let store = store.clone();
        let event = event.clone();
        let metadata = metadata.clone();
        async move {
            for step in ["placed", "reserved", "confirmed"] {
                let stream = format!("floor-{i}-{step}");
                let new = NewEvent::from_domain(
                    Uuid::now_v7(),
                    &event,
                    chrono::Utc::now(),
                    metadata.clone(),
                );
                store
                    .append(&stream, "floor", 0, vec![new])
                    .await
                    .map_err(|e| e.to_string())?;
            }
            Ok(())
        }
    })
    .await;
    println!(
        "  {:<44} {}",
        "orderflow SqliteEventStore, 3 appends in turn",
        store_run.summary()
    );
    let ratio = |a: &Run, b: &Run, p: f64| {
        a.percentile(p).as_secs_f64() / b.percentile(p).as_secs_f64().max(1e-9)
    };
    println!(
        "orderflow's store against the raw writer, 3 commits: p50 {:.2}×, p99 {:.2}×",
        ratio(&store_run, &three, 50.0),
        ratio(&store_run, &three, 99.0)
    );
}

/// `count` 4 KiB writes, each followed by `fdatasync`, one after another.
fn fdatasync(path: &Path, count: usize) -> Run {
    let file = std::fs::File::create(path).expect("a file for fdatasync");
    let block = [0x5au8; 4096];
    let started = Instant::now();
    let mut latencies = Vec::with_capacity(count);
    for i in 0..count {
        let sent = Instant::now();
        file.write_all_at(&block, (i % 64) as u64 * 4096)
            .expect("a write");
        file.sync_data().expect("fdatasync");
        latencies.push(sent.elapsed());
    }
    Run::new(latencies, 0, started.elapsed())
}

/// Starts `call(i)` for i in 0..total at `rate` a second, each on its own task at its
/// intended time, and times each from that time: an order that a stall held up counts the
/// stall, as a customer would.
async fn open_loop<F, Fut>(rate: usize, total: usize, call: F) -> Run
where
    F: Fn(usize) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = Result<(), String>> + Send + 'static,
{
    let period = Duration::from_secs_f64(1.0 / rate as f64);
    let started = Instant::now();
    let mut tasks = Vec::with_capacity(total);
    for i in 0..total {
        let intended = started + period * i as u32;
        tokio::time::sleep_until(intended.into()).await;
        let call = call(i);
        tasks.push(tokio::spawn(async move {
            call.await.map(|()| intended.elapsed())
        }));
    }
    let (mut latencies, mut errors) = (Vec::with_capacity(total), 0);
    for task in tasks {
        match task.await.expect("an order's task") {
            Ok(latency) => latencies.push(latency),
            Err(error) => {
                if errors == 0 {
                    eprintln!("error: {error}");
                }
                errors += 1;
            }
        }
    }
    Run::new(latencies, errors, started.elapsed())
}

/// A thread that answers at once: what waking another thread and being woken back costs
/// when the machine is mostly idle between orders (a virtual CPU that halted must be
/// scheduled again by the host).
#[derive(Clone)]
struct Worker {
    sender: std_mpsc::Sender<oneshot::Sender<()>>,
}

impl Worker {
    fn start() -> Self {
        let (sender, receiver) = std_mpsc::channel::<oneshot::Sender<()>>();
        std::thread::spawn(move || {
            while let Ok(reply) = receiver.recv() {
                let _ = reply.send(());
            }
        });
        Self { sender }
    }

    async fn round_trip(&self) -> Result<(), String> {
        let (reply, answer) = oneshot::channel();
        self.sender
            .send(reply)
            .map_err(|_| "the worker stopped".to_string())?;
        answer.await.map_err(|_| "the worker stopped".to_string())
    }
}

type Commit = (Vec<u8>, oneshot::Sender<Result<(), String>>);

/// The least a durable SQLite writer can be: one thread, one connection, and each
/// transaction takes every commit waiting when it starts.
#[derive(Clone)]
struct RawWriter {
    sender: std_mpsc::Sender<Commit>,
}

impl RawWriter {
    fn open(path: &Path) -> Self {
        let connection = rusqlite::Connection::open(path).expect("a SQLite file");
        connection
            .execute_batch(
                "PRAGMA journal_mode=WAL; PRAGMA synchronous=FULL;
                 CREATE TABLE events (position INTEGER PRIMARY KEY, payload BLOB NOT NULL);",
            )
            .expect("the raw schema");
        let (sender, receiver) = std_mpsc::channel::<Commit>();
        std::thread::spawn(move || {
            let mut connection = connection;
            while let Ok(first) = receiver.recv() {
                let mut batch = vec![first];
                batch.extend(receiver.try_iter());
                let outcome = (|| {
                    let transaction = connection.transaction()?;
                    {
                        let mut insert = transaction
                            .prepare_cached("INSERT INTO events (payload) VALUES (?1)")?;
                        for (payload, _) in &batch {
                            insert.execute([payload])?;
                        }
                    }
                    transaction.commit()
                })()
                .map_err(|e| e.to_string());
                for (_, reply) in batch {
                    let _ = reply.send(outcome.clone());
                }
            }
        });
        Self { sender }
    }

    async fn commit(&self, payload: Vec<u8>) -> Result<(), String> {
        let (reply, answer) = oneshot::channel();
        self.sender
            .send((payload, reply))
            .map_err(|_| "the writer stopped".to_string())?;
        answer.await.map_err(|_| "the writer stopped".to_string())?
    }
}
