//! What the process counts for `/metrics`, on `prometheus-client` (OpenMetrics text).
//!
//! Two kinds: what the process counts as it works ([`Metrics`]: requests, handler outcomes,
//! pushes), kept in one registry per `System` (tests run several apps in one process, so no
//! global recorder); and what is read from the engines and the services at scrape time
//! ([`Scrape`]: log head and relay lag, queue depths and dead letters, deliveries, command
//! outcomes, group commits), put in a registry of its own for each scrape. Every label takes a
//! bounded set of values: methods and routes the router knows, subscriptions, outcomes.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use projections::{Installation, Notification, PushError, PushSender};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::encoding::text::{encode_eof, encode_registry};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use uuid::Uuid;

/// The content type of what [`Metrics::render`] writes.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Upper bounds of the latency buckets, in seconds.
const BUCKETS: [f64; 12] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
];

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    pub method: &'static str,
    pub route: String,
    pub status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RouteLabels {
    pub method: &'static str,
    pub route: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct HandledLabels {
    pub subscription: &'static str,
    /// `ok`, `engine_down`, `later`, `failed` (retried) or `parked` (no retry can mend it).
    pub outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabels {
    outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct SubscriptionLabels {
    subscription: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CommandLabels {
    aggregate: &'static str,
    outcome: &'static str,
}

/// What the process counts as it works.
pub struct Metrics {
    registry: Registry,
    requests: Family<RequestLabels, Counter>,
    durations: Family<RouteLabels, Histogram>,
    handled: Family<HandledLabels, Counter>,
    pushes: Family<OutcomeLabels, Counter>,
}

impl Default for Metrics {
    fn default() -> Self {
        let requests = Family::<RequestLabels, Counter>::default();
        let durations = Family::<RouteLabels, Histogram>::new_with_constructor(
            (|| Histogram::new(BUCKETS)) as fn() -> Histogram,
        );
        let handled = Family::<HandledLabels, Counter>::default();
        let pushes = Family::<OutcomeLabels, Counter>::default();
        let mut registry = Registry::default();
        registry.register(
            "orderflow_http_requests",
            "HTTP requests by method, route and status.",
            requests.clone(),
        );
        registry.register(
            "orderflow_http_request_duration_seconds",
            "HTTP request latency by method and route.",
            durations.clone(),
        );
        registry.register(
            "orderflow_consumer_events",
            "Events handled by this process's consumers, by outcome.",
            handled.clone(),
        );
        registry.register(
            "orderflow_pushes",
            "Push sends by outcome: sent, unavailable (retried), refused (parked), not_owner.",
            pushes.clone(),
        );
        Self {
            registry,
            requests,
            durations,
            handled,
            pushes,
        }
    }
}

impl Metrics {
    pub fn request(&self, method: &'static str, route: String, status: u16, took: Duration) {
        self.durations
            .get_or_create(&RouteLabels {
                method,
                route: route.clone(),
            })
            .observe(took.as_secs_f64());
        self.requests
            .get_or_create(&RequestLabels {
                method,
                route,
                status,
            })
            .inc();
    }

    pub fn handled(&self, subscription: &'static str, outcome: &'static str) {
        self.handled
            .get_or_create(&HandledLabels {
                subscription,
                outcome,
            })
            .inc();
    }

    /// Everything counted, then what `scrape` read, as one OpenMetrics text.
    pub fn render(&self, scrape: Scrape) -> String {
        let mut out = String::new();
        let _ = encode_registry(&mut out, &self.registry);
        let _ = encode_registry(&mut out, &scrape.registry);
        let _ = encode_eof(&mut out);
        out
    }
}

/// The values read at one scrape, each added only when its source can tell.
#[derive(Default)]
pub struct Scrape {
    registry: Registry,
}

impl Scrape {
    pub fn gauge(&mut self, name: &str, help: &str, value: u64) {
        let gauge = Gauge::<i64>::default();
        gauge.set(i64::try_from(value).unwrap_or(i64::MAX));
        self.registry.register(name, help, gauge);
    }

    /// A running total the source keeps (a counter that only it can count).
    pub fn total(&mut self, name: &str, help: &str, value: u64) {
        let counter = Counter::<u64>::default();
        counter.inc_by(value);
        self.registry.register(name, help, counter);
    }

    /// One gauge per subscription.
    pub fn per_subscription(&mut self, name: &str, help: &str, values: &[(String, u64)]) {
        let family = Family::<SubscriptionLabels, Gauge>::default();
        for (subscription, value) in values {
            family
                .get_or_create(&SubscriptionLabels {
                    subscription: subscription.clone(),
                })
                .set(i64::try_from(*value).unwrap_or(i64::MAX));
        }
        self.registry.register(name, help, family);
    }

    /// Running totals per subscription.
    pub fn totals_per_subscription(&mut self, name: &str, help: &str, values: &[(String, u64)]) {
        let family = Family::<SubscriptionLabels, Counter>::default();
        for (subscription, value) in values {
            family
                .get_or_create(&SubscriptionLabels {
                    subscription: subscription.clone(),
                })
                .inc_by(*value);
        }
        self.registry.register(name, help, family);
    }

    /// What each aggregate's commands met (`commands::aggregates::Outcomes`).
    pub fn commands(&mut self, aggregates: &[(&'static str, &commands::aggregates::Outcomes)]) {
        let family = Family::<CommandLabels, Counter>::default();
        for (aggregate, outcomes) in aggregates {
            let counts: [(&'static str, &AtomicU64); 6] = [
                ("appended", &outcomes.appended),
                ("duplicate", &outcomes.duplicates),
                ("rejected", &outcomes.rejected),
                ("conflict", &outcomes.conflicts),
                ("retried", &outcomes.retries),
                ("contended", &outcomes.contended),
            ];
            for (outcome, count) in counts {
                family
                    .get_or_create(&CommandLabels { aggregate, outcome })
                    .inc_by(count.load(Ordering::Relaxed));
            }
        }
        self.registry.register(
            "orderflow_commands",
            "Commands by aggregate and what they met: appended (duplicate: an idempotent retry \
             found its events stored), rejected, conflict (the stream moved on; decided again), \
             retried (after a backoff), contended (given up).",
            family,
        );
    }
}

/// The push port, counting each send's outcome in [`Metrics`].
pub struct CountedPush {
    inner: Arc<dyn PushSender>,
    metrics: Arc<Metrics>,
}

impl CountedPush {
    pub fn new(inner: Arc<dyn PushSender>, metrics: Arc<Metrics>) -> Self {
        Self { inner, metrics }
    }
}

#[async_trait]
impl PushSender for CountedPush {
    async fn send(&self, notification: &Notification) -> Result<(), PushError> {
        let result = self.inner.send(notification).await;
        let outcome = match &result {
            Ok(()) => "sent",
            Err(PushError::Unavailable(_)) => "unavailable",
            Err(PushError::Refused(_)) => "refused",
            Err(PushError::NotOwner) => "not_owner",
        };
        self.metrics
            .pushes
            .get_or_create(&OutcomeLabels { outcome })
            .inc();
        result
    }

    async fn register(&self, installation: Installation) -> Result<(), PushError> {
        self.inner.register(installation).await
    }

    async fn delete(&self, customer_id: Uuid, installation_id: &str) -> Result<bool, PushError> {
        self.inner.delete(customer_id, installation_id).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_and_scraped_values_render_as_one_openmetrics_text() {
        let metrics = Metrics::default();
        metrics.request("GET", "/health".into(), 200, Duration::from_millis(2));
        metrics.handled("notifier", "ok");
        let mut scrape = Scrape::default();
        scrape.gauge("orderflow_relay_lag_events", "Lag.", 3);
        scrape.per_subscription(
            "orderflow_dead_letters",
            "Dead letters.",
            &[("notifier".into(), 2)],
        );
        let text = metrics.render(scrape);
        for line in [
            "orderflow_http_requests_total{method=\"GET\",route=\"/health\",status=\"200\"} 1",
            "orderflow_http_request_duration_seconds_bucket{le=\"0.0025\",method=\"GET\",route=\"/health\"} 1",
            "orderflow_consumer_events_total{subscription=\"notifier\",outcome=\"ok\"} 1",
            "orderflow_relay_lag_events 3",
            "orderflow_dead_letters{subscription=\"notifier\"} 2",
        ] {
            assert!(
                text.lines().any(|l| l == line),
                "{line} missing from:\n{text}"
            );
        }
        assert!(text.ends_with("# EOF\n"), "{text}");
    }
}
