//! `ViewStore` adapters.
//!
//! - [`embedded`]: the embedded default, `projections::MemoryViewStore` written through to the
//!   kept file for what must outlive a restart (claims, installations); the views it forgets
//!   on restart the projector's start-up catch-up makes good.
//! - [`redis`]: the cache shared by every process, on Redis: every key under a configurable
//!   prefix, compare-on-version writes in a Lua script, bulk writes in Redis's protocol
//!   (`redis_bulk`), pub/sub.
//!
//! Every adapter runs the port's one conformance suite, `projections::view_store::conformance`,
//! through `projections::view_store_conformance!`.

pub mod embedded;
pub mod redis;
mod redis_bulk;
mod redis_tls;
/// Against a real `redis-server` over TLS, so only with the `servers` feature.
#[cfg(all(test, feature = "servers"))]
mod redis_tls_tests;

pub use redis::RedisViewStore;
