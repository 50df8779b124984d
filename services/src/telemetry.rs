//! One place that sets up tracing: `RUST_LOG` filters (default `info`), compact lines on a
//! terminal and in files alike.

use tracing_subscriber::EnvFilter;

/// Where log lines go: a server logs to standard output; a command whose output is data
/// (`history`, `export`) logs to standard error, so that its output stays clean to pipe.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogTo {
    Stdout,
    Stderr,
}

/// Installs the global subscriber; a second call (tests start several apps) does nothing.
pub fn init(default_filter: &str) {
    init_to(default_filter, LogTo::Stdout);
}

pub fn init_to(default_filter: &str, to: LogTo) {
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default_filter));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_target(false)
        .compact();
    let _ = match to {
        LogTo::Stdout => builder
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stdout()))
            .try_init(),
        LogTo::Stderr => builder
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .with_writer(std::io::stderr)
            .try_init(),
    };
}
