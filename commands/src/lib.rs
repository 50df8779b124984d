//! The write side of orderflow: everything that decides and records events.
//!
//! - [`store`]: the `EventStore` port every engine adapter implements.
//! - [`aggregates`]: runs a command on an aggregate: load, decide, append with the expected
//!   version, retry on conflict; per-stream turns and a state cache keep hot streams fast.
//! - [`service`]: the commands people send (`Commands`: place with idempotency, cancel, ship,
//!   deliver, list and restock products) and how their failures read.
//! - [`recent`]: a bounded map that keeps what is used (the state cache, the notifier's
//!   customers).
//! - [`fault`]: what a failure means for a retry (an engine down, later, the message's own),
//!   which consumers use to wait out an outage without spending a message's attempts.
//! - [`payment`]: the `PaymentGateway` port.
//! - [`processor`]: the order processor (process manager): reserve, pay, confirm or reject,
//!   release stock on rejection or cancellation.

pub mod aggregates;
pub mod fault;
pub mod payment;
pub mod processor;
pub mod recent;
pub mod service;
pub mod store;

pub use aggregates::{Aggregates, CommandError, Handled};
pub use fault::{Classify, Engine, Failure, Fault};
pub use service::{CommandFailure, Commands, PlaceOrder, Placed};
pub use store::{Appended, EventStore, Lease, LogCursor, LogPage, StoreError};
