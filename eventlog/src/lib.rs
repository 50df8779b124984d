//! The event log port: what the write side appends to and the read side follows, with no
//! engine behind it. Both sides depend on this crate and on `domain`, not on each other.
//!
//! - [`store`]: the [`EventStore`] trait (atomic appends with an expected version, idempotent
//!   retries by event id, a global log read by opaque [`LogCursor`]s, checkpoints, leases).
//! - [`memory`]: [`MemoryEventStore`], the port in a process's memory, for tests of the code
//!   that uses it (it passes the same conformance suite as the engines).
//! - [`conformance`]: the port's one conformance suite, which every adapter runs through
//!   [`event_store_conformance!`].
//! - [`testing`]: [`Scripted`], a decorator that records what is asked of a store and fails
//!   or interleaves appends on cue, so a test can stage a stale guess, a race or an outage.
//! - [`fault`]: what a failure means for a retry (an engine down, later, the message's own),
//!   shared by every error that crosses a consumer.
//! - [`recent`]: a bounded map that keeps what is used (state caches on both sides).

pub mod conformance;
pub mod fault;
pub mod memory;
pub mod recent;
pub mod store;
pub mod testing;

pub use fault::{Classify, Engine, Failure, Fault};
pub use memory::{LocalLeases, MemoryEventStore};
pub use store::{Appended, EventStore, Lease, LogCursor, LogPage, StoreError};
pub use testing::Scripted;
