//! `PushSender` adapters.
//!
//! - [`embedded`]: records installations in memory and writes each push to the log.

pub mod embedded;

pub use embedded::LogPush;
