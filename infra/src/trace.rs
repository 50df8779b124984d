//! W3C trace context across the processes: how a span continues the trace an event (or a
//! request) carries, and the `traceparent` it hands on.
//!
//! An event's `metadata.traceparent` is where a trace travels: the web request writes its own
//! context there, the relay publishes each event under a span of its own and puts that span's
//! context on the published copy (and in the message's header), and each consumer handles the
//! delivery under a span that continues it. The exporter (OpenTelemetry's, set up by the
//! server) is off unless configured; then [`enabled`] is false and nothing here creates OTel
//! context: spans only name the trace id the event carries, so log lines still correlate.

use std::sync::atomic::{AtomicBool, Ordering};

use opentelemetry::trace::{
    SpanContext, SpanId, TraceContextExt as _, TraceFlags, TraceId, TraceState,
};
use tracing_opentelemetry::OpenTelemetrySpanExt as _;

static ENABLED: AtomicBool = AtomicBool::new(false);

/// Called once the OpenTelemetry layer is installed: spans from then on are exported.
pub fn enable() {
    ENABLED.store(true, Ordering::SeqCst);
}

/// Whether spans are exported (an OTLP endpoint is configured).
pub fn enabled() -> bool {
    ENABLED.load(Ordering::Relaxed)
}

/// The parts of a W3C `traceparent` (version `00`–`fe`, trace id and parent id in lower-case
/// hex and not all zero, two hex digits of flags, nothing after them), or `None` if it is not
/// one.
pub fn parse(traceparent: &str) -> Option<SpanContext> {
    let mut parts = traceparent.split('-');
    let (version, trace, parent, flags) =
        (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
    let hex = |s: &str, n: usize| {
        s.len() == n && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
    };
    // Exactly four fields: a later version may add more, but nothing here would read them,
    // and what is stored is only what was understood.
    let well_formed = hex(version, 2)
        && version != "ff"
        && parts.next().is_none()
        && hex(trace, 32)
        && hex(parent, 16)
        && hex(flags, 2);
    if !well_formed {
        return None;
    }
    let context = SpanContext::new(
        TraceId::from_hex(trace).ok()?,
        SpanId::from_hex(parent).ok()?,
        TraceFlags::new(u8::from_str_radix(flags, 16).ok()? & 1),
        true,
        TraceState::default(),
    );
    context.is_valid().then_some(context)
}

/// `span` continues the trace `traceparent` names (when exporting), and its `trace_id` field
/// (declared `tracing::field::Empty`) names the trace either way. Call it before the span is
/// first entered.
pub fn continue_trace(span: &tracing::Span, traceparent: Option<&str>) {
    let parent = traceparent.and_then(parse);
    if enabled() {
        if let Some(parent) = &parent {
            let _ = span
                .set_parent(opentelemetry::Context::new().with_remote_span_context(parent.clone()));
        }
        let context = span.context();
        let own = context.span().span_context().clone();
        if own.is_valid() {
            span.record("trace_id", tracing::field::display(own.trace_id()));
            return;
        }
    }
    if let Some(parent) = parent {
        span.record("trace_id", tracing::field::display(parent.trace_id()));
    }
}

/// The `traceparent` a child of `span` should name: the span's own context when exporting,
/// else `None` (the caller then passes on what it was given).
pub fn traceparent(span: &tracing::Span) -> Option<String> {
    if !enabled() {
        return None;
    }
    let context = span.context();
    let own = context.span().span_context().clone();
    own.is_valid().then(|| {
        format!(
            "00-{}-{}-{:02x}",
            own.trace_id(),
            own.span_id(),
            own.trace_flags().to_u8()
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_w3c_trace_context_parses() {
        let good = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";
        let parsed = parse(good).unwrap();
        assert_eq!(
            parsed.trace_id().to_string(),
            "0af7651916cd43dd8448eb211c80319c"
        );
        assert!(parsed.is_sampled());
        for bad in [
            "",
            "not-a-traceparent",
            "00-0AF7651916CD43DD8448EB211C80319C-b7ad6b7169203331-01",
            "00-00000000000000000000000000000000-b7ad6b7169203331-01",
            "00-0af7651916cd43dd8448eb211c80319c-0000000000000000-01",
            "ff-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
            "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01-extra",
            "00-0af7651916cd43dd8448eb211c80319c-b7ad6b716920333-01",
            "01-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01-x",
        ] {
            assert!(parse(bad).is_none(), "{bad:?} parsed");
        }
    }
}
