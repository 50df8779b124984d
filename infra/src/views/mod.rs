//! `ViewStore` adapters.
//!
//! - [`memory`]: the in-process cache (the embedded default); forgets everything on restart,
//!   which the projector's start-up catch-up makes good.
//! - [`redis`]: the cache shared by every process, on Redis: every key under a configurable
//!   prefix, compare-on-version writes in a Lua script, bulk writes in Redis's protocol
//!   (`redis_bulk`), pub/sub.
//! - [`conformance`]: the port's one conformance suite. Every adapter runs it through
//!   [`view_store_conformance!`](crate::view_store_conformance).

pub mod conformance;
pub mod memory;
pub mod redis;
mod redis_bulk;
mod redis_tls;
/// Against a real `redis-server` over TLS, so only with the `servers` feature.
#[cfg(all(test, feature = "servers"))]
mod redis_tls_tests;

pub use memory::MemoryViewStore;
pub use redis::RedisViewStore;
