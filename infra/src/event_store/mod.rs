//! Event store adapters: the engines behind `eventlog::EventStore`.
//!
//! - [`sqlite`]: the embedded default, one SQLite file in WAL mode written through group
//!   commit (one transaction, one fsync, for every append waiting at that moment).
//! - [`postgres`]: PostgreSQL, shared by many processes: group commit in each, a head row
//!   locked to the commit that keeps positions in commit order across them, and
//!   LISTEN/NOTIFY for the head.
//! - `cosmos` (feature `azure`): Azure Cosmos DB for NoSQL, one document per event, an append
//!   one transactional batch, the global log the change feed (no global order: ADR 05).
//! - `group_commit`: what both SQL stores share: the writer (PostgreSQL's on Tokio tasks,
//!   SQLite's on a thread of its own) that commits every write waiting at that moment in one
//!   transaction, each with its own answer, and a handle to submit writes;
//!   each adapter brings the transaction itself.
//! - `batch`: how both SQL stores decide a whole batch in the writer and write it in one INSERT.
//! - `codec`: how both SQL stores keep times, JSON and integers in their columns.
//!
//! Every adapter runs the port's one conformance suite (`eventlog::conformance`, through
//! `eventlog::event_store_conformance!`), so they all keep the same promises: atomic
//! appends with optimistic concurrency, idempotent retries by event id, and a global log that a
//! tailing reader can follow without ever missing a late commit. An adapter's own tests sit
//! beside it (`sqlite/tests.rs`; `postgres/server_tests.rs` with the `servers` feature).

mod batch;
mod codec;
#[cfg(feature = "azure")]
pub mod cosmos;
mod group_commit;
pub mod postgres;
pub mod sqlite;

#[cfg(test)]
mod testing;

pub use postgres::PostgresEventStore;
pub use sqlite::SqliteEventStore;
