//! `ViewStore` adapters.
//!
//! - [`memory`]: the in-process cache (the embedded default); forgets everything on restart,
//!   which the projector's start-up catch-up makes good.

pub mod memory;

pub use memory::MemoryViewStore;
