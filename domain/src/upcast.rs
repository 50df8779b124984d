//! Schema evolution: how an event written in an older schema version is read in the current
//! shape of its type. Stored events are never rewritten; every reader goes through [`upcast`]
//! ([`crate::envelope::decode`] does, and so do the tools that show payloads: export, history,
//! the API's event list), so aggregates, projections and analysts only ever see one shape.
//!
//! The chain is one list of steps, each taking one event type from one version to the next.
//! A type's current version is one more than its number of steps; the events a build writes
//! carry it (`DomainEvent::event_version`).
//!
//! | type | version | change |
//! |---|---|---|
//! | `OrderShipped` | 1 → 2 | `tracking` renamed `tracking_number` |

use std::borrow::Cow;

use serde_json::{Map, Value};

use crate::envelope::{DecodeError, RecordedEvent};

/// One step: `event_type` at `from` becomes `from + 1`.
struct Step {
    event_type: &'static str,
    from: u32,
    up: fn(&mut Map<String, Value>) -> Result<(), String>,
}

const CHAIN: &[Step] = &[Step {
    event_type: "OrderShipped",
    from: 1,
    up: tracking_became_tracking_number,
}];

/// Version 2 of `OrderShipped` names the carrier's number for what it is.
fn tracking_became_tracking_number(payload: &mut Map<String, Value>) -> Result<(), String> {
    let tracking = payload
        .remove("tracking")
        .ok_or("a version 1 OrderShipped without `tracking`")?;
    payload.insert("tracking_number".into(), tracking);
    Ok(())
}

/// The schema version this build writes for `event_type`.
pub fn current_version(event_type: &str) -> u32 {
    let steps = CHAIN.iter().filter(|s| s.event_type == event_type).count();
    1 + u32::try_from(steps).unwrap_or(u32::MAX - 1)
}

/// The event in the current shape of its type: borrowed as it is when already current, else a
/// copy with every step from its version up applied and `schema_version` set to the current
/// one. An event newer than this build knows is an error, not a guess.
pub fn upcast(event: &RecordedEvent) -> Result<Cow<'_, RecordedEvent>, DecodeError> {
    let current = current_version(&event.event_type);
    if event.schema_version == current {
        return Ok(Cow::Borrowed(event));
    }
    let fail = |reason: String| DecodeError::of(event, reason);
    if event.schema_version > current || event.schema_version == 0 {
        return Err(fail(format!(
            "this build reads {} up to version {current}",
            event.event_type
        )));
    }
    let mut upcast = event.clone();
    let Value::Object(mut payload) = event.payload.to_value() else {
        return Err(fail("the payload is not an object".into()));
    };
    for version in event.schema_version..current {
        let step = CHAIN
            .iter()
            .find(|s| s.event_type == event.event_type && s.from == version)
            .ok_or_else(|| fail(format!("no upcaster from version {version}")))?;
        (step.up)(&mut payload).map_err(fail)?;
    }
    upcast.payload = Value::Object(payload).into();
    upcast.schema_version = current;
    Ok(Cow::Owned(upcast))
}

/// Every event of a stream (or a page) in its current shape.
pub fn upcast_all(events: &[RecordedEvent]) -> Result<Vec<RecordedEvent>, DecodeError> {
    events
        .iter()
        .map(|event| upcast(event).map(Cow::into_owned))
        .collect()
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::envelope::{EventMetadata, decode};
    use crate::order::OrderEvent;

    fn shipped(schema_version: u32, payload: Value) -> RecordedEvent {
        RecordedEvent {
            event_id: uuid::Uuid::nil(),
            stream_id: "order-1".into(),
            stream_type: "order".into(),
            version: 3,
            global_position: None,
            event_type: "OrderShipped".into(),
            schema_version,
            occurred_at: Default::default(),
            payload: payload.into(),
            metadata: EventMetadata::default(),
        }
    }

    #[test]
    fn a_version_1_order_shipped_reads_as_version_2() {
        let v1 = shipped(1, json!({"carrier": "DHL", "tracking": "JD0001"}));

        let current = upcast(&v1).unwrap();

        assert_eq!(current.schema_version, 2);
        assert_eq!(
            current.payload,
            json!({"carrier": "DHL", "tracking_number": "JD0001"})
        );
        assert_eq!(
            decode::<OrderEvent>(&v1).unwrap(),
            OrderEvent::OrderShipped {
                carrier: "DHL".into(),
                tracking_number: "JD0001".into()
            },
            "decode upcasts first"
        );
    }

    #[test]
    fn a_current_event_is_read_as_it_is() {
        let v2 = shipped(2, json!({"carrier": "DHL", "tracking_number": "JD0001"}));

        assert!(matches!(upcast(&v2).unwrap(), Cow::Borrowed(_)));
    }

    #[test]
    fn a_version_newer_than_this_build_is_refused() {
        let v3 = shipped(3, json!({"carrier": "DHL", "tracking_number": "JD0001"}));

        let error = upcast(&v3).unwrap_err();

        assert!(error.reason.contains("up to version 2"), "{error}");
    }

    #[test]
    fn a_malformed_old_event_says_what_is_missing() {
        let broken = shipped(1, json!({"carrier": "DHL"}));

        assert!(upcast(&broken).unwrap_err().reason.contains("tracking"));
    }

    #[test]
    fn each_type_s_steps_run_from_version_1_without_gaps() {
        for step in CHAIN {
            let current = current_version(step.event_type);
            let versions: Vec<u32> = CHAIN
                .iter()
                .filter(|s| s.event_type == step.event_type)
                .map(|s| s.from)
                .collect();
            assert_eq!(
                versions,
                (1..current).collect::<Vec<_>>(),
                "{}",
                step.event_type
            );
        }
    }

    #[test]
    fn new_events_carry_their_type_s_current_version() {
        let event = OrderEvent::OrderShipped {
            carrier: "DHL".into(),
            tracking_number: "JD0001".into(),
        };
        let new = crate::envelope::NewEvent::from_domain(
            uuid::Uuid::nil(),
            &event,
            Default::default(),
            Default::default(),
        );
        assert_eq!(new.schema_version, 2);
        let confirmed = crate::envelope::NewEvent::from_domain(
            uuid::Uuid::nil(),
            &OrderEvent::OrderConfirmed,
            Default::default(),
            Default::default(),
        );
        assert_eq!(confirmed.schema_version, 1);
    }
}
