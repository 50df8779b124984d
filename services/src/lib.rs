//! orderflow's processes: the HTTP API, the web UI, and the wiring that runs every role.
//!
//! - [`config`]: `Settings` for one process.
//! - [`system`]: picks the adapters, builds the services on them, starts the relay and the
//!   consumers (order processor, projector, notifier).
//! - [`app`]: `Application::build(settings)`, `port()`, `run_until_stopped()`.
//! - [`api`]: the HTTP API (orders, catalog, live updates, operations) and its errors.
//! - [`serve`]: the HTTP server loop (header timeout, connection cap, graceful stop).
//! - [`web`]: the browser UI, compiled in.
//! - [`seed`]: the demo catalog of a fresh embedded server.
//! - [`history`]: `orderflow history`, an order's timeline and its state at a point.
//! - [`export`]: `orderflow export`, the log as JSON Lines, CSV or Parquet; [`replay`]:
//!   `orderflow replay`, the read models rebuilt from the log; [`replays`]: replays started
//!   over HTTP, with their progress; [`progress`] for long work.
//! - [`loadgen`]: `orderflow loadgen`, simulated customers against a server, with latencies.
//! - [`metrics`], [`telemetry`]: `/metrics` counters and the tracing subscriber.

pub mod api;
pub mod app;
pub mod chaos;
pub mod config;
pub mod dead_letters;
pub mod doctor;
pub mod export;
pub mod history;
pub mod loadgen;
pub mod metrics;
pub mod progress;
pub mod replay;
pub mod replays;
pub mod seed;
pub mod serve;
pub mod system;
pub mod telemetry;
pub mod web;

pub use app::{Application, Stopper};
pub use config::{AuthSettings, Secret, Settings};
pub use system::Hooks;
