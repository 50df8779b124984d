//! The write side of orderflow: everything that decides and records events.
//!
//! - [`aggregates`]: runs a command on an aggregate: load, decide, append with the expected
//!   version, retry on conflict; per-stream turns and a state cache keep hot streams fast.
//! - [`service`]: the commands people send (`Commands`: place with idempotency, cancel, ship,
//!   deliver, list and restock products) and how their failures read.
//! - [`payment`]: the `PaymentGateway` port.
//! - [`processor`]: the order processor (process manager): reserve, pay, confirm or reject,
//!   release stock on rejection or cancellation.

pub mod aggregates;
pub mod payment;
pub mod processor;
pub mod service;

pub use aggregates::{Aggregates, CommandError, Handled};
pub use service::{CommandFailure, Commands, PlaceOrder, Placed};
