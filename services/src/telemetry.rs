//! One place that sets up tracing: `RUST_LOG` filters (default `info`), compact lines on a
//! terminal and in files alike.

use tracing_subscriber::EnvFilter;

/// Installs the global subscriber; a second call (tests start several apps) does nothing.
pub fn init(default_filter: &str) {
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default_filter));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_target(false)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stdout()))
        .compact()
        .try_init();
}
