//! `orderflow history ORDER_ID`: an order's timeline read from the event store, and the order
//! as it was at a chosen moment or version, for analysts and operators at a terminal.
//!
//! It reads only the order's stream through the store port, so it works on every event store
//! and needs no cache: the state is folded from the events, as `?as_of=` and `?at_version=` do
//! in the API.

use std::fmt::Write as _;

use domain::RecordedEvent;
use domain::envelope::stream_id;
use domain::order;
use eventlog::EventStore;
use projections::read_models::{Cutoff, order_until};
use projections::views::OrderView;
use serde_json::{Value, json};
use uuid::Uuid;

/// One order's events, and its state at the cutoff (at its newest event without one).
#[derive(Debug, Clone)]
pub struct History {
    pub order_id: Uuid,
    pub cutoff: Option<Cutoff>,
    pub events: Vec<RecordedEvent>,
    /// `None` when the order did not exist yet at the cutoff.
    pub state: Option<OrderView>,
}

#[derive(Debug, thiserror::Error)]
pub enum HistoryError {
    #[error("no order {0} in the event store")]
    NotFound(Uuid),
    #[error(transparent)]
    Store(#[from] eventlog::StoreError),
    #[error("the order's events cannot be read: {0}")]
    Decode(#[from] domain::envelope::DecodeError),
}

/// Reads the order's stream and folds it up to `cutoff`.
pub async fn history(
    store: &dyn EventStore,
    order_id: Uuid,
    cutoff: Option<Cutoff>,
) -> Result<History, HistoryError> {
    let events = store
        .read_stream(&stream_id(order::STREAM_TYPE, order_id), 1)
        .await?;
    if events.is_empty() {
        return Err(HistoryError::NotFound(order_id));
    }
    let events = domain::upcast::upcast_all(&events)?;
    let state = order_until(&events, cutoff.unwrap_or(Cutoff::Version(u64::MAX)))?;
    Ok(History {
        order_id,
        cutoff,
        events,
        state,
    })
}

impl History {
    /// The timeline as a table, the events after the cutoff marked, then the state.
    pub fn table(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(out, "order {}", self.order_id);
        let _ = writeln!(
            out,
            "\n  {:>3}  {:<26}  {:<16}  details",
            "v", "occurred at (UTC)", "event"
        );
        for event in &self.events {
            let later = self.cutoff.is_some_and(|c| !c.includes(event));
            let _ = writeln!(
                out,
                "{} {:>3}  {:<26}  {:<16}  {}",
                if later { '>' } else { ' ' },
                event.version,
                event.occurred_at.format("%Y-%m-%d %H:%M:%S%.3f"),
                event.event_type,
                details(&event.payload.to_value()),
            );
        }
        if self.cutoff.is_some() && self.events.iter().any(|e| !self.includes(e)) {
            let _ = writeln!(out, "\n  > after the cutoff, not folded into the state");
        }
        let _ = write!(out, "\n{}", self.state_line());
        out
    }

    /// The same as one JSON document: `order_id`, `cutoff`, `state` (null before the order
    /// existed) and every `event` with `included` saying whether it is folded into `state`.
    pub fn json(&self) -> Value {
        let cutoff = match self.cutoff {
            None => Value::Null,
            Some(Cutoff::Version(v)) => json!({ "at_version": v }),
            Some(Cutoff::Time(t)) => json!({ "as_of": t }),
        };
        let events: Vec<Value> = self
            .events
            .iter()
            .map(|event| {
                let mut value = serde_json::to_value(event).unwrap_or(Value::Null);
                value["included"] = Value::Bool(self.includes(event));
                value
            })
            .collect();
        json!({
            "order_id": self.order_id,
            "cutoff": cutoff,
            "state": self.state,
            "events": events,
        })
    }

    fn includes(&self, event: &RecordedEvent) -> bool {
        self.cutoff.is_none_or(|c| c.includes(event))
    }

    fn state_line(&self) -> String {
        let when = match self.cutoff {
            None => "now".to_owned(),
            Some(Cutoff::Version(v)) => format!("at version {v}"),
            Some(Cutoff::Time(t)) => format!("as of {}", t.to_rfc3339()),
        };
        let Some(state) = &self.state else {
            return format!("state {when}: the order did not exist yet\n");
        };
        let mut line = format!(
            "state {when}: {} (version {}), {} line(s), total {} {}",
            state.status,
            state.version,
            state.lines.len(),
            money(state.total),
            state.currency
        );
        if let Some(reason) = &state.reason {
            let _ = write!(line, ", reason {reason}");
        }
        line.push('\n');
        line
    }
}

/// Minor units as a decimal amount (every currency the catalog sells has two decimals).
fn money(minor: u64) -> String {
    format!("{}.{:02}", minor / 100, minor % 100)
}

/// A payload in one line: its fields as `key=value`, nested values as compact JSON.
fn details(payload: &Value) -> String {
    let Some(fields) = payload.as_object() else {
        return String::new();
    };
    let mut parts = Vec::new();
    for (key, value) in fields {
        let shown = match value {
            Value::String(s) => s.clone(),
            Value::Array(items) => format!("[{} item(s)]", items.len()),
            Value::Object(_) => "{…}".to_owned(),
            other => other.to_string(),
        };
        parts.push(format!("{key}={shown}"));
    }
    let line = parts.join(" ");
    if line.chars().count() > 80 {
        let cut: String = line.chars().take(79).collect();
        format!("{cut}…")
    } else {
        line
    }
}
