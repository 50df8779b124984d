//! The `orderflow` binary: parses the command line and runs the library.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use services::{Application, Settings, telemetry};

#[derive(Parser)]
#[command(name = "orderflow", version, about = "Event-sourced order processing")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Runs the whole system in this process on embedded engines: the web UI and API, the
    /// relay, the order processor, the projector and the notifier.
    Serve {
        /// Address to serve HTTP on.
        #[arg(long, env = "ORDERFLOW_LISTEN", default_value = "127.0.0.1:8080")]
        listen: SocketAddr,
        /// Directory of the SQLite event store and the development signing key.
        #[arg(long, env = "ORDERFLOW_DATA", default_value = "./data")]
        data: PathBuf,
        /// Start without the demo catalog.
        #[arg(long, env = "ORDERFLOW_NO_SEED")]
        no_seed: bool,
    },
}

#[tokio::main]
async fn main() -> ExitCode {
    telemetry::init("info");
    match run(Cli::parse()).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            tracing::error!("{error:#}");
            eprintln!("orderflow: {error:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Serve {
            listen,
            data,
            no_seed,
        } => {
            let mut settings = Settings::embedded(listen, data);
            settings.seed_catalog = !no_seed;
            Application::build(settings)
                .await?
                .run_until_stopped()
                .await
        }
    }
}
