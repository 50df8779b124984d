//! One place that sets up tracing: `RUST_LOG` filters (default `info`), compact lines on a
//! terminal and in files alike, and, for a server, OpenTelemetry traces exported over OTLP
//! when the standard `OTEL_*` variables ask for them (off otherwise).
//!
//! Traces are on when `OTEL_EXPORTER_OTLP_ENDPOINT` or `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`
//! is set, or `OTEL_TRACES_EXPORTER=otlp` (then to `http://localhost:4318`), unless
//! `OTEL_SDK_DISABLED=true` or `OTEL_TRACES_EXPORTER=none`. The exporter speaks OTLP over HTTP,
//! `http/protobuf` (the default) or `http/json` (`OTEL_EXPORTER_OTLP_PROTOCOL` or
//! `OTEL_EXPORTER_OTLP_TRACES_PROTOCOL`); `grpc` is refused at start-up, as it is not built in.
//! The SDK reads the rest itself: `OTEL_EXPORTER_OTLP_HEADERS`, `_TIMEOUT`,
//! `OTEL_SERVICE_NAME`, `OTEL_RESOURCE_ATTRIBUTES`, `OTEL_TRACES_SAMPLER` (default
//! `parentbased_always_on`), `OTEL_BSP_*`. Without `OTEL_SERVICE_NAME` a process is named by
//! its roles: `orderflow` with every role, `orderflow-processor` for one.

use anyhow::{Context as _, bail};
use opentelemetry::KeyValue;
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_otlp::{Protocol, WithExportConfig as _};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing_subscriber::EnvFilter;
use tracing_subscriber::fmt::writer::BoxMakeWriter;
use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::util::SubscriberInitExt as _;

/// Where log lines go: a server logs to standard output; a command whose output is data
/// (`history`, `export`) logs to standard error, so that its output stays clean to pipe.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogTo {
    Stdout,
    Stderr,
}

/// What [`init_server`] installed; [`Telemetry::shutdown`] sends the spans still buffered.
#[must_use = "shut it down at exit, or the last spans are not sent"]
pub struct Telemetry {
    provider: Option<SdkTracerProvider>,
}

impl Telemetry {
    /// Exports what is buffered and stops the exporter (bounded by the SDK's export timeout).
    pub fn shutdown(self) {
        if let Some(provider) = self.provider {
            // The exporter's blocking HTTP client must not be dropped on the async runtime.
            let _ = std::thread::spawn(move || provider.shutdown()).join();
        }
    }
}

/// Installs the global subscriber; a second call (tests start several apps) does nothing.
pub fn init(default_filter: &str) {
    init_to(default_filter, LogTo::Stdout);
}

pub fn init_to(default_filter: &str, to: LogTo) {
    install(default_filter, to, None);
}

/// The server's subscriber: log lines, and traces when the environment asks for them, under
/// `service` (unless `OTEL_SERVICE_NAME` names it).
pub fn init_server(default_filter: &str, service: &str) -> anyhow::Result<Telemetry> {
    let provider = match OtlpSettings::from_env(|name| std::env::var(name).ok())? {
        Some(settings) => Some(tracer_provider(settings, service)?),
        None => None,
    };
    install(default_filter, LogTo::Stdout, provider.as_ref());
    if provider.is_some() {
        infra::trace::enable();
        tracing::info!(service, "traces exported over OTLP");
    }
    Ok(Telemetry { provider })
}

fn install(default_filter: &str, to: LogTo, provider: Option<&SdkTracerProvider>) {
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default_filter));
    let (writer, ansi) = match to {
        LogTo::Stdout => (
            BoxMakeWriter::new(std::io::stdout),
            std::io::IsTerminal::is_terminal(&std::io::stdout()),
        ),
        LogTo::Stderr => (
            BoxMakeWriter::new(std::io::stderr),
            std::io::IsTerminal::is_terminal(&std::io::stderr()),
        ),
    };
    let lines = tracing_subscriber::fmt::layer()
        .with_target(false)
        .compact()
        .with_ansi(ansi)
        .with_writer(writer);
    let traces = provider.map(|provider| {
        tracing_opentelemetry::layer()
            .with_tracer(provider.tracer("orderflow"))
            .with_tracked_inactivity(false)
    });
    let _ = tracing_subscriber::registry()
        .with(filter)
        .with(lines)
        .with(traces)
        .try_init();
}

/// What the `OTEL_*` variables ask of the trace exporter.
#[derive(Debug, PartialEq, Eq)]
struct OtlpSettings {
    protocol: Protocol,
    /// Only when neither endpoint variable is set (the SDK reads those itself).
    default_endpoint: bool,
}

impl OtlpSettings {
    fn from_env(var: impl Fn(&str) -> Option<String>) -> anyhow::Result<Option<Self>> {
        let set = |name: &str| var(name).filter(|v| !v.trim().is_empty());
        if set("OTEL_SDK_DISABLED").is_some_and(|v| v.trim().eq_ignore_ascii_case("true")) {
            return Ok(None);
        }
        let exporter = set("OTEL_TRACES_EXPORTER").map(|v| v.trim().to_ascii_lowercase());
        let endpoint = set("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
            .or_else(|| set("OTEL_EXPORTER_OTLP_ENDPOINT"))
            .is_some();
        match exporter.as_deref() {
            Some("none") => return Ok(None),
            Some("otlp") => {}
            None if endpoint => {}
            None => return Ok(None),
            Some(other) => bail!(
                "OTEL_TRACES_EXPORTER={other} is not supported: use otlp (or none to turn traces off)"
            ),
        }
        let protocol = set("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL")
            .or_else(|| set("OTEL_EXPORTER_OTLP_PROTOCOL"))
            .map(|v| v.trim().to_ascii_lowercase());
        let protocol = match protocol.as_deref() {
            None | Some("http/protobuf") => Protocol::HttpBinary,
            Some("http/json") => Protocol::HttpJson,
            Some(other) => bail!(
                "OTEL_EXPORTER_OTLP_PROTOCOL={other} is not supported: orderflow exports OTLP over \
                 HTTP (http/protobuf or http/json, a collector's port 4318), not gRPC"
            ),
        };
        Ok(Some(Self {
            protocol,
            default_endpoint: !endpoint,
        }))
    }
}

fn tracer_provider(settings: OtlpSettings, service: &str) -> anyhow::Result<SdkTracerProvider> {
    let mut exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_protocol(settings.protocol);
    if settings.default_endpoint {
        exporter = exporter.with_endpoint("http://localhost:4318/v1/traces");
    }
    let exporter = exporter
        .build()
        .context("setting up the OTLP trace exporter")?;
    let named = std::env::var("OTEL_SERVICE_NAME").is_ok_and(|v| !v.trim().is_empty())
        || std::env::var("OTEL_RESOURCE_ATTRIBUTES").is_ok_and(|v| v.contains("service.name="));
    let mut resource = Resource::builder().with_attributes([
        KeyValue::new("service.version", env!("CARGO_PKG_VERSION")),
        KeyValue::new("service.instance.id", uuid::Uuid::new_v4().to_string()),
    ]);
    if !named {
        resource = resource.with_service_name(service.to_owned());
    }
    Ok(SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_resource(resource.build())
        .build())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(vars: &[(&str, &str)]) -> anyhow::Result<Option<OtlpSettings>> {
        OtlpSettings::from_env(|name| {
            vars.iter()
                .find(|(key, _)| *key == name)
                .map(|(_, value)| (*value).to_owned())
        })
    }

    #[test]
    fn traces_are_off_unless_an_otlp_endpoint_or_exporter_is_named() {
        assert_eq!(settings(&[]).unwrap(), None);
        assert_eq!(
            settings(&[("OTEL_EXPORTER_OTLP_ENDPOINT", "")]).unwrap(),
            None
        );
        let on = settings(&[("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:4318")]).unwrap();
        assert_eq!(
            on,
            Some(OtlpSettings {
                protocol: Protocol::HttpBinary,
                default_endpoint: false
            })
        );
        let traces_only = settings(&[("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "http://c/v1/traces")]);
        assert!(traces_only.unwrap().is_some());
        let default = settings(&[("OTEL_TRACES_EXPORTER", "otlp")])
            .unwrap()
            .unwrap();
        assert!(default.default_endpoint);
        for off in [
            [
                ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c"),
                ("OTEL_SDK_DISABLED", "true"),
            ],
            [
                ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c"),
                ("OTEL_TRACES_EXPORTER", "none"),
            ],
        ] {
            assert_eq!(settings(&off).unwrap(), None, "{off:?}");
        }
    }

    #[test]
    fn json_is_chosen_by_protocol_and_grpc_or_another_exporter_is_refused() {
        let json = settings(&[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c"),
            ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/json"),
        ]);
        assert_eq!(json.unwrap().unwrap().protocol, Protocol::HttpJson);
        let grpc = settings(&[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4317"),
            ("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "grpc"),
        ]);
        assert!(grpc.unwrap_err().to_string().contains("4318"));
        let zipkin = settings(&[("OTEL_TRACES_EXPORTER", "zipkin")]);
        assert!(zipkin.unwrap_err().to_string().contains("otlp"));
    }
}
