//! `PaymentGateway` adapters.
//!
//! - [`sandbox`]: deterministic approvals and declines for development and tests.

pub mod sandbox;

pub use sandbox::SandboxPayments;
