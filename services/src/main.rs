//! The `orderflow` binary: parses the command line and runs the library.
//!
//! Exit codes: 0 done, 1 failed (the message says why), 2 bad command line.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};
use services::config::{Overrides, Settings, redact};
use services::loadgen::{LoadPlan, Until};
use services::{Application, telemetry};

#[derive(Parser)]
#[command(name = "orderflow", version, about = "Event-sourced order processing")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

// Parsed once at start-up: the size of the `serve` variant does not matter.
#[allow(clippy::large_enum_variant)]
#[derive(Subcommand)]
enum Command {
    /// Runs this process's roles (all of them by default: the web UI and API, the relay, the
    /// order processor, the projector and the notifier). Every process serves /health, /ready
    /// and /metrics on --listen.
    Serve {
        #[command(flatten)]
        engines: Engines,
        /// Roles to run: a comma-separated subset of web,relay,processor,projector,notifier.
        #[arg(long, env = "ORDERFLOW_ROLE", value_name = "ROLES")]
        role: Option<String>,
        /// Address to serve HTTP on [default: 127.0.0.1:8080].
        #[arg(long, env = "ORDERFLOW_LISTEN", value_name = "HOST:PORT")]
        listen: Option<std::net::SocketAddr>,
        /// Start without the demo catalog.
        #[arg(long, env = "ORDERFLOW_NO_SEED")]
        no_seed: bool,
        /// Also append every push to this file, one JSON object per line.
        #[arg(long, env = "ORDERFLOW_PUSH_LOG", value_name = "FILE")]
        push_log: Option<PathBuf>,
        /// Events the order processor works on at once [default: 8].
        #[arg(long, env = "ORDERFLOW_PROCESSOR_CONCURRENCY", value_name = "N")]
        processor_concurrency: Option<usize>,
        #[command(flatten)]
        oidc: OidcArgs,
        #[command(flatten)]
        edge: EdgeArgs,
    },
    /// Prints an order's timeline from the event store and the order as it was at a moment or
    /// version (folded from its events); exits 1 if there is no such order.
    History {
        #[command(flatten)]
        engines: Engines,
        /// The order's id (a UUID, as the API and the order page show it).
        order_id: uuid::Uuid,
        /// The order as it was at this moment, RFC 3339 (2026-12-01T10:00:00Z).
        #[arg(long, value_name = "TIME", value_parser = rfc3339, conflicts_with = "at_version")]
        as_of: Option<chrono::DateTime<chrono::Utc>>,
        /// The order as it was at this version of its stream.
        #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
        at_version: Option<u64>,
        /// One JSON document instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Writes the event log (JSON Lines, CSV or, in builds with the parquet feature, Parquet)
    /// to a file or standard output, in the store's order, with progress on standard error; a
    /// file appears under its name only once complete. Exits 1 on any failure.
    Export {
        #[command(flatten)]
        engines: Engines,
        #[arg(long, value_enum, default_value = "jsonl")]
        format: services::export::Format,
        /// Events that occurred at or after this moment (RFC 3339).
        #[arg(long, value_name = "TIME", value_parser = rfc3339)]
        since: Option<chrono::DateTime<chrono::Utc>>,
        /// Events that occurred before this moment (RFC 3339).
        #[arg(long, value_name = "TIME", value_parser = rfc3339)]
        until: Option<chrono::DateTime<chrono::Utc>>,
        /// Only events of this type (OrderPlaced, StockReserved, ...); repeat or separate with
        /// commas for several.
        #[arg(long = "type", value_name = "EVENT_TYPE", value_delimiter = ',')]
        types: Vec<String>,
        /// The file to write [default: standard output].
        #[arg(long, short, value_name = "FILE")]
        output: Option<PathBuf>,
    },
    /// Rebuilds read models from the whole event log into a new generation beside the
    /// current one, switches every reader to it at once, and deletes the old one. Live events
    /// keep flowing meanwhile; none is lost. Needs a shared cache (redis://).
    Replay {
        #[command(flatten)]
        engines: Engines,
        /// Which projections: `all`, or any of `orders` (order views and order lists),
        /// `catalog` and `analytics`, separated by commas.
        #[arg(long, default_value = "all", value_parser = parse_projections)]
        projection: Projections,
    },
    /// Simulated customers placing orders through a server's HTTP API (development login):
    /// prints throughput and latency percentiles, from sending an order to its acceptance
    /// and to its decision (confirmed or rejected).
    Loadgen {
        /// The server.
        #[arg(long, default_value = "http://127.0.0.1:8080", value_name = "URL")]
        url: String,
        /// Concurrent customers (each with its own token).
        #[arg(long, default_value_t = 16, value_parser = clap::value_parser!(u64).range(1..=10_000))]
        clients: u64,
        /// Stop after this many orders [default: 1000 unless --duration].
        #[arg(long, value_name = "M", conflicts_with = "duration", value_parser = clap::value_parser!(u64).range(1..))]
        orders: Option<u64>,
        /// Stop after this many seconds.
        #[arg(long, value_name = "S", value_parser = clap::value_parser!(u64).range(1..))]
        duration: Option<u64>,
        /// Orders per second, all clients together (open loop; latency counts from when each
        /// order was due). Without it each client waits for its order's decision before the next.
        #[arg(long, value_name = "R")]
        rate: Option<f64>,
        /// The SKUs to order, one unit each, in turn (commas for several) [default: the whole
        /// catalog].
        #[arg(long, value_delimiter = ',')]
        sku: Vec<String>,
        /// Do not restock the SKUs (by 1,000,000 units each, as an operator) before the run.
        #[arg(long)]
        no_restock: bool,
        /// One JSON object instead of the table.
        #[arg(long)]
        json: bool,
    },
    /// Lists, re-drives or discards the messages the subscriptions gave up on, on the topic the
    /// engine settings name (the same as /api/dead-letters and the operator page).
    #[command(subcommand)]
    DeadLetters(DeadLettersCommand),
    /// The project's own fault run: every role as its own process on PostgreSQL, RabbitMQ and
    /// Redis (a fresh schema and prefix, removed afterwards); clients retrying with their
    /// Idempotency-Key; every role SIGKILLed and restarted, the broker cut off, Redis flushed,
    /// PostgreSQL cut off from the processors under a backlog. Prints what broke as counts and
    /// exits 1 unless every count is zero.
    Chaos {
        /// PostgreSQL, without a schema (the run makes its own).
        #[arg(
            long,
            env = "ORDERFLOW_CHAOS_POSTGRES",
            default_value = "postgres://postgres@127.0.0.1:5432/test"
        )]
        postgres: String,
        /// RabbitMQ, without a prefix.
        #[arg(
            long,
            env = "ORDERFLOW_CHAOS_AMQP",
            default_value = "amqp://guest:guest@127.0.0.1:5672/%2f"
        )]
        amqp: String,
        /// Redis, without a prefix.
        #[arg(
            long,
            env = "ORDERFLOW_CHAOS_REDIS",
            default_value = "redis://127.0.0.1:6379"
        )]
        redis: String,
        #[arg(long, default_value_t = 300)]
        orders: usize,
        #[arg(long, default_value_t = 8)]
        clients: usize,
        /// Times each worker process (relays, processors, projector, notifier) is killed.
        #[arg(long, default_value_t = 1)]
        kills: usize,
        /// Seconds PostgreSQL is unreachable for the processors.
        #[arg(long, default_value_t = 10)]
        postgres_outage: u64,
        /// Seconds RabbitMQ is unreachable for every role.
        #[arg(long, default_value_t = 10)]
        broker_outage: u64,
        /// Seconds between two faults.
        #[arg(long, default_value_t = 3)]
        gap: u64,
        /// The run fails if it takes longer than this many seconds.
        #[arg(long, default_value_t = 1200)]
        deadline: u64,
        /// Logs, data directories and the push log [default: a new temporary directory].
        #[arg(long, value_name = "DIR")]
        work: Option<PathBuf>,
        /// Keep the schema, queues and keys afterwards.
        #[arg(long)]
        keep: bool,
        /// One JSON object instead of the table.
        #[arg(long)]
        json: bool,
    },
    /// Checks each engine of these settings the way a first deployment needs (the store and
    /// its containers, the topic and its subscriptions, a Notification Hubs registration, the
    /// cache over TLS, the identity provider) and prints one line per check with what to fix;
    /// exits 0 only when every check passed. Service Bus settings are read with the key in
    /// ORDERFLOW_SERVICEBUS_MANAGE_KEY (the Manage right).
    Doctor {
        #[command(flatten)]
        engines: Engines,
        #[command(flatten)]
        oidc: OidcArgs,
    },
    /// Applies the event store's schema (serve does too) and exits; on Cosmos DB, checks that
    /// the containers exist with the right partition keys.
    Migrate {
        #[command(flatten)]
        engines: Engines,
    },
}

#[derive(Subcommand)]
enum DeadLettersCommand {
    /// Prints the dead letters the filters select (all of them without filters).
    List {
        #[command(flatten)]
        engines: Engines,
        #[command(flatten)]
        filter: DeadLetterArgs,
        /// One JSON document instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Sends the selected dead letters back to their own subscription, as the same event with
    /// a fresh retry budget (consumers are idempotent by event).
    Redrive {
        #[command(flatten)]
        engines: Engines,
        #[command(flatten)]
        filter: DeadLetterArgs,
        /// Every dead letter of every subscription (instead of filters).
        #[arg(long, conflicts_with_all = ["subscription", "event_id", "event_type", "order_id"])]
        all: bool,
        /// One JSON document instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Removes the selected dead letters for good; each is logged with the reason.
    Discard {
        #[command(flatten)]
        engines: Engines,
        #[command(flatten)]
        filter: DeadLetterArgs,
        /// Every dead letter of every subscription (instead of filters).
        #[arg(long, conflicts_with_all = ["subscription", "event_id", "event_type", "order_id"])]
        all: bool,
        /// Why they are discarded (logged).
        #[arg(long, value_name = "TEXT")]
        reason: String,
        /// One JSON document instead of a table.
        #[arg(long)]
        json: bool,
    },
}

/// Which dead letters: every filter given must match.
#[derive(Args)]
struct DeadLetterArgs {
    /// order-processor, projector or notifier.
    #[arg(long, value_name = "NAME")]
    subscription: Option<String>,
    /// This event's (repeat, or separate with commas, for several).
    #[arg(long, value_name = "UUID", value_delimiter = ',')]
    event_id: Vec<uuid::Uuid>,
    /// Only dead letters of this event type (OrderPlaced, ...).
    #[arg(long, value_name = "TYPE")]
    event_type: Option<String>,
    /// This order's.
    #[arg(long, value_name = "UUID")]
    order_id: Option<uuid::Uuid>,
}

impl DeadLetterArgs {
    fn filter(self) -> infra::bus::DeadLetterFilter {
        infra::bus::DeadLetterFilter {
            subscription: self.subscription,
            event_ids: self.event_id,
            event_type: self.event_type,
            stream_id: self
                .order_id
                .map(|id| domain::envelope::stream_id(domain::order::STREAM_TYPE, id)),
        }
    }

    /// A re-drive or a discard must choose: filters, or `--all`.
    fn chosen(self, all: bool) -> anyhow::Result<infra::bus::DeadLetterFilter> {
        let filter = self.filter();
        if filter.everything() && !all {
            anyhow::bail!(
                "say which dead letters (--subscription, --event-id, --event-type, --order-id), or --all"
            );
        }
        Ok(filter)
    }
}

/// Where the data lives; shared by every subcommand.
#[derive(Args)]
struct Engines {
    /// A TOML file with any of these settings (flags and environment win over it).
    #[arg(long, env = "ORDERFLOW_CONFIG", value_name = "FILE")]
    config: Option<PathBuf>,
    /// Directory of the default SQLite store and the development signing key [default: ./data].
    #[arg(long, env = "ORDERFLOW_DATA", value_name = "DIR")]
    data: Option<String>,
    /// Event store: sqlite://PATH, postgres://USER@HOST:PORT/DB[?schema=NAME] or, in builds
    /// with the azure feature, cosmos://ACCOUNT/DATABASE (key in ORDERFLOW_COSMOS_KEY)
    /// [default: sqlite://DATA/orderflow.db].
    #[arg(long, env = "ORDERFLOW_STORE", value_name = "URL")]
    store: Option<String>,
    /// Topic: memory://, amqp://USER:PASS@HOST:PORT/VHOST[?prefix=NAME] or, in builds with the
    /// azure feature, servicebus://NAMESPACE/TOPIC (key in ORDERFLOW_SERVICEBUS_KEY)
    /// [default: memory://].
    #[arg(long, env = "ORDERFLOW_BUS", value_name = "URL")]
    bus: Option<String>,
    /// Read-model cache: memory:// or redis://HOST:PORT[/DB][?prefix=NAME] [default: memory://].
    #[arg(long, env = "ORDERFLOW_CACHE", value_name = "URL")]
    cache: Option<String>,
    /// Pushes: log:// (the log, and --push-log) or notificationhubs://NAMESPACE/HUB
    /// (key in ORDERFLOW_NOTIFICATIONHUBS_KEY) [default: log://].
    #[arg(long, env = "ORDERFLOW_PUSH", value_name = "URL")]
    push: Option<String>,
}

/// Sign-in through an OpenID Connect provider (without these: the development login, or the
/// shared secret of ORDERFLOW_JWT_SECRET).
#[derive(Args)]
struct OidcArgs {
    /// The provider's issuer, exactly as its tokens' `iss` says
    /// (https://login.microsoftonline.com/TENANT/v2.0 for Entra ID); https:// except on loopback.
    #[arg(long, env = "ORDERFLOW_OIDC_ISSUER", value_name = "URL")]
    oidc_issuer: Option<String>,
    /// The `aud` the provider puts in access tokens for this API (several: comma-separated).
    #[arg(long, env = "ORDERFLOW_OIDC_AUDIENCE", value_name = "AUD")]
    oidc_audience: Option<String>,
    /// The public client id the web UI signs in with (authorization code + PKCE, no secret).
    #[arg(long, env = "ORDERFLOW_OIDC_CLIENT_ID", value_name = "ID")]
    oidc_client_id: Option<String>,
    /// The scopes the web UI asks for [default: "openid profile"].
    #[arg(long, env = "ORDERFLOW_OIDC_SCOPE", value_name = "SCOPES")]
    oidc_scope: Option<String>,
    /// The claim that names the customer [default: sub] (Entra ID: oid is stable across apps).
    #[arg(long, env = "ORDERFLOW_OIDC_CUSTOMER_CLAIM", value_name = "CLAIM")]
    oidc_customer_claim: Option<String>,
    /// The claim that carries roles [default: roles]; a dotted path reaches into objects.
    #[arg(long, env = "ORDERFLOW_OIDC_ROLES_CLAIM", value_name = "CLAIM")]
    oidc_roles_claim: Option<String>,
    /// The provider's role names to orderflow's: NAME=ROLE,... with ROLE customer, operator or
    /// analyst [default: the names customer, operator and analyst themselves].
    #[arg(long, env = "ORDERFLOW_OIDC_ROLE_MAP", value_name = "MAP")]
    oidc_role_map: Option<String>,
}

/// What the HTTP edge allows a client before it refuses (429, 503, 408, all problem+json).
#[derive(Args)]
struct EdgeArgs {
    /// Open connections at once [default: 4096].
    #[arg(long, env = "ORDERFLOW_MAX_CONNECTIONS", value_name = "N")]
    max_connections: Option<usize>,
    /// Seconds a request's headers may take to arrive [default: 10].
    #[arg(long, env = "ORDERFLOW_HEADER_TIMEOUT", value_name = "S")]
    header_timeout: Option<u64>,
    /// Seconds a request's whole body may take to arrive [default: 10].
    #[arg(long, env = "ORDERFLOW_BODY_TIMEOUT", value_name = "S")]
    body_timeout: Option<u64>,
    /// Seconds a handler may take to answer [default: 60].
    #[arg(long, env = "ORDERFLOW_REQUEST_TIMEOUT", value_name = "S")]
    request_timeout: Option<u64>,
    /// Commands (POST, PUT, DELETE) per second per customer [default: 10].
    #[arg(long, env = "ORDERFLOW_COMMAND_RATE", value_name = "N")]
    command_rate: Option<u32>,
    /// Commands a customer may send at once before the rate applies [default: 40].
    #[arg(long, env = "ORDERFLOW_COMMAND_BURST", value_name = "N")]
    command_burst: Option<u32>,
    /// Development logins per minute per client address [default: 120].
    #[arg(long, env = "ORDERFLOW_DEV_LOGIN_RATE", value_name = "N")]
    dev_login_rate: Option<u32>,
    /// Live streams open at once, in all [default: 2000].
    #[arg(long, env = "ORDERFLOW_MAX_LIVE_STREAMS", value_name = "N")]
    max_live_streams: Option<usize>,
    /// Live streams open at once per customer [default: 5].
    #[arg(
        long,
        env = "ORDERFLOW_MAX_LIVE_STREAMS_PER_CUSTOMER",
        value_name = "N"
    )]
    max_live_streams_per_customer: Option<usize>,
    /// `min_version` reads waiting at once, in all [default: 2000].
    #[arg(long, env = "ORDERFLOW_MAX_WAITERS", value_name = "N")]
    max_waiters: Option<usize>,
    /// Origins whose pages may call the API, comma-separated (CORS) [default: none].
    #[arg(long, env = "ORDERFLOW_CORS_ORIGINS", value_name = "ORIGINS")]
    cors_origins: Option<String>,
    /// Serve /metrics on this address instead of --listen (keep it internal).
    #[arg(long, env = "ORDERFLOW_METRICS_LISTEN", value_name = "HOST:PORT")]
    metrics_listen: Option<String>,
}

impl EdgeArgs {
    fn overrides(self) -> services::config::EdgeOverrides {
        services::config::EdgeOverrides {
            max_connections: self.max_connections,
            header_timeout: self.header_timeout,
            body_timeout: self.body_timeout,
            request_timeout: self.request_timeout,
            command_rate: self.command_rate,
            command_burst: self.command_burst,
            dev_login_rate: self.dev_login_rate,
            max_live_streams: self.max_live_streams,
            max_live_streams_per_customer: self.max_live_streams_per_customer,
            max_waiters: self.max_waiters,
            cors_origins: self.cors_origins,
            metrics_listen: self.metrics_listen,
        }
    }
}

impl OidcArgs {
    fn overrides(self) -> services::config::OidcOverrides {
        services::config::OidcOverrides {
            issuer: self.oidc_issuer,
            audience: self.oidc_audience,
            client_id: self.oidc_client_id,
            scope: self.oidc_scope,
            customer_claim: self.oidc_customer_claim,
            roles_claim: self.oidc_roles_claim,
            role_map: self.oidc_role_map,
        }
    }
}

impl Engines {
    fn overrides(self) -> Overrides {
        Overrides {
            config: self.config,
            data: self.data,
            store: self.store,
            bus: self.bus,
            cache: self.cache,
            push: self.push,
            cosmos_key: std::env::var("ORDERFLOW_COSMOS_KEY").ok(),
            servicebus_key: std::env::var("ORDERFLOW_SERVICEBUS_KEY").ok(),
            notificationhubs_key: std::env::var("ORDERFLOW_NOTIFICATIONHUBS_KEY").ok(),
            cache_key: std::env::var("ORDERFLOW_CACHE_KEY").ok(),
            servicebus_manage_key: std::env::var("ORDERFLOW_SERVICEBUS_MANAGE_KEY").ok(),
            jwt_secret: std::env::var("ORDERFLOW_JWT_SECRET").ok(),
            jwt_issuer: std::env::var("ORDERFLOW_JWT_ISSUER").ok(),
            jwt_audience: std::env::var("ORDERFLOW_JWT_AUDIENCE").ok(),
            ..Default::default()
        }
    }
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    // Commands whose output is data log to standard error, and only what needs attention.
    match cli.command {
        Command::History { .. }
        | Command::DeadLetters(DeadLettersCommand::List { .. })
        | Command::Chaos { .. }
        | Command::Export { .. }
        | Command::Replay { .. }
        | Command::Loadgen { .. }
        | Command::Doctor { .. } => telemetry::init_to("warn", telemetry::LogTo::Stderr),
        Command::Serve { .. } => {}
        _ => telemetry::init("info"),
    }
    // A server's traces (when `OTEL_*` asks for them) are named by the roles it runs.
    let traces = match &cli.command {
        Command::Serve { role, .. } => match telemetry::init_server("info", &service_name(role)) {
            Ok(traces) => Some(traces),
            Err(error) => {
                eprintln!("orderflow: {error:#}");
                return ExitCode::FAILURE;
            }
        },
        _ => None,
    };
    let result = run(cli).await;
    if let Some(traces) = traces {
        traces.shutdown();
    }
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            tracing::error!("{error:#}");
            eprintln!("orderflow: {error:#}");
            ExitCode::FAILURE
        }
    }
}

/// `orderflow` for a process with every role, else `orderflow-` and its roles
/// (`orderflow-processor`, `orderflow-web+relay`).
fn service_name(roles: &Option<String>) -> String {
    match roles.as_deref().map(str::trim) {
        None | Some("") | Some("all") => "orderflow".to_owned(),
        Some(roles) => {
            let names: Vec<&str> = roles.split(',').map(str::trim).collect();
            format!("orderflow-{}", names.join("+"))
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Serve {
            engines,
            role,
            listen,
            no_seed,
            push_log,
            processor_concurrency,
            oidc,
            edge,
        } => {
            let settings = Settings::resolve(Overrides {
                oidc: oidc.overrides(),
                edge: edge.overrides(),
                role,
                listen: listen.map(|address| address.to_string()),
                no_seed,
                push_log,
                processor_concurrency,
                ..engines.overrides()
            })?;
            Application::build(settings)
                .await?
                .run_until_stopped()
                .await
        }
        Command::History {
            engines,
            order_id,
            as_of,
            at_version,
            json,
        } => {
            use projections::read_models::Cutoff;
            let settings = Settings::resolve(engines.overrides())?;
            let store = services::system::open_store(&settings).await?;
            let cutoff = as_of.map(Cutoff::Time).or(at_version.map(Cutoff::Version));
            let history = services::history::history(store.as_ref(), order_id, cutoff).await?;
            if json {
                println!("{:#}", history.json());
            } else {
                print!("{}", history.table());
            }
            Ok(())
        }
        Command::Export {
            engines,
            format,
            since,
            until,
            types,
            output,
        } => {
            let options = services::export::ExportOptions {
                format,
                since,
                until,
                types,
                output,
            };
            options.check()?;
            let settings = Settings::resolve(engines.overrides())?;
            let store = services::system::open_store(&settings).await?;
            let started = std::time::Instant::now();
            let exported = services::export::export(store.as_ref(), &options).await?;
            let to = options
                .output
                .as_ref()
                .map_or("standard output".to_owned(), |p| p.display().to_string());
            eprintln!(
                "exported {} of {} events to {to} in {:.1} s",
                exported.written,
                exported.read,
                started.elapsed().as_secs_f64()
            );
            Ok(())
        }
        Command::Chaos {
            postgres,
            amqp,
            redis,
            orders,
            clients,
            kills,
            postgres_outage,
            broker_outage,
            gap,
            deadline,
            work,
            keep,
            json,
        } => {
            use std::time::Duration;
            let work = match work {
                Some(work) => work,
                None => {
                    std::env::temp_dir().join(format!("orderflow-chaos-{}", std::process::id()))
                }
            };
            let plan = services::chaos::ChaosPlan {
                postgres,
                amqp,
                redis,
                orders,
                clients,
                kills,
                postgres_outage: Duration::from_secs(postgres_outage),
                broker_outage: Duration::from_secs(broker_outage),
                gap: Duration::from_secs(gap),
                deadline: Duration::from_secs(deadline),
                binary: std::env::current_exe()?,
                work,
                keep,
            };
            let report = services::chaos::run(&plan).await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&report)?);
            } else {
                print!("{}", report.table());
            }
            if report.failures() > 0 {
                anyhow::bail!("{} things went wrong (see the counts)", report.failures());
            }
            Ok(())
        }
        Command::DeadLetters(command) => {
            use services::dead_letters::{Action, run};
            match command {
                DeadLettersCommand::List {
                    engines,
                    filter,
                    json,
                } => {
                    let settings = Settings::resolve(engines.overrides())?;
                    run(&settings, &filter.filter(), Action::List, json).await
                }
                DeadLettersCommand::Redrive {
                    engines,
                    filter,
                    all,
                    json,
                } => {
                    let filter = filter.chosen(all)?;
                    let settings = Settings::resolve(engines.overrides())?;
                    run(&settings, &filter, Action::Redrive, json).await
                }
                DeadLettersCommand::Discard {
                    engines,
                    filter,
                    all,
                    reason,
                    json,
                } => {
                    let filter = filter.chosen(all)?;
                    let reason = reason.trim().to_owned();
                    if reason.is_empty() {
                        anyhow::bail!("--reason must say why: it is logged");
                    }
                    let settings = Settings::resolve(engines.overrides())?;
                    run(&settings, &filter, Action::Discard(reason), json).await
                }
            }
        }
        Command::Replay {
            engines,
            projection,
        } => {
            let settings = Settings::resolve(engines.overrides())?;
            services::replay::run(&settings, &projection.0).await
        }
        Command::Loadgen {
            url,
            clients,
            orders,
            duration,
            rate,
            sku,
            no_restock,
            json,
        } => {
            let until = match (orders, duration) {
                (_, Some(seconds)) => Until::Elapsed(std::time::Duration::from_secs(seconds)),
                (orders, None) => Until::Orders(orders.unwrap_or(1000)),
            };
            let plan = LoadPlan {
                url,
                clients: usize::try_from(clients)?,
                until,
                rate,
                skus: sku,
                restock: !no_restock,
            };
            let report = services::loadgen::run(&plan).await?;
            if json {
                println!("{}", serde_json::to_string(&report)?);
            } else {
                println!("{report}");
            }
            Ok(())
        }
        Command::Doctor { engines, oidc } => {
            let settings = Settings::resolve(Overrides {
                oidc: oidc.overrides(),
                ..engines.overrides()
            })?;
            let report = services::doctor::run(&settings).await;
            println!("{report}");
            if report.passed() {
                Ok(())
            } else {
                anyhow::bail!("the deployment is not ready: fix what the FAIL lines say")
            }
        }
        Command::Migrate { engines } => {
            let settings = Settings::resolve(engines.overrides())?;
            services::system::open_store(&settings).await?;
            println!("schema applied to {}", redact(&settings.store));
            Ok(())
        }
    }
}

/// The projections `replay --projection` names.
#[derive(Debug, Clone)]
struct Projections(Vec<projections::Projection>);

fn parse_projections(raw: &str) -> Result<Projections, String> {
    projections::Projection::parse_list(raw).map(Projections)
}

fn rfc3339(raw: &str) -> Result<chrono::DateTime<chrono::Utc>, String> {
    chrono::DateTime::parse_from_rfc3339(raw)
        .map(|t| t.with_timezone(&chrono::Utc))
        .map_err(|e| format!("{e}: expected RFC 3339, like 2026-12-01T10:00:00Z"))
}
