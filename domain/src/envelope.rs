//! The event envelope: what the store keeps around each domain event, and how a domain event
//! becomes `(event_type, schema_version, payload)` and back.
//!
//! Domain event enums serialize with serde's external tagging (`{"OrderPlaced": {...}}`); the
//! envelope splits that into the type name and the payload so that the log is readable by tools
//! that know nothing of Rust. Reading goes through [`decode`], the one place where an older
//! `schema_version` is upcast (see [`crate::upcast`]).

use chrono::{DateTime, Utc};
use cqrs_es::DomainEvent;
use serde::de::value::StrDeserializer;
use serde::de::{
    DeserializeOwned, DeserializeSeed, EnumAccess, IntoDeserializer, VariantAccess, Visitor,
};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use serde_json::value::RawValue;
use uuid::Uuid;

/// Who caused an event, and why; carried from the HTTP request through every consumer.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct EventMetadata {
    /// Shared by every event that one customer action caused, across streams.
    pub correlation_id: Uuid,
    /// The event that made a service issue this command (`None` for a human's command).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub causation_id: Option<Uuid>,
    /// The client's idempotency key, when it sent one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub command_id: Option<String>,
    /// A digest of the request that created the stream, so a reused idempotency key with
    /// another body can be told apart from a retry.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_hash: Option<String>,
    /// `customer:{id}`, `operator:{id}` or `service:{name}`.
    pub actor: String,
    /// W3C trace context of the request that caused the event.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub traceparent: Option<String>,
}

/// An event as the store keeps it, in the shape the HTTP API shows.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RecordedEvent {
    pub event_id: Uuid,
    pub stream_id: String,
    pub stream_type: String,
    /// Position in its stream, from 1.
    pub version: u64,
    /// Position in the store's global log, from 1, in commit order, where the engine numbers
    /// its log (SQLite, PostgreSQL); `None` on Cosmos DB, whose change feed is ordered only
    /// within a stream. Nothing orders events across streams by it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub global_position: Option<u64>,
    pub event_type: String,
    pub schema_version: u32,
    #[serde(with = "crate::time::rfc3339")]
    pub occurred_at: DateTime<Utc>,
    pub payload: Payload,
    pub metadata: EventMetadata,
}

/// A recorded event's payload: its JSON text as the store handed it over, checked to be JSON
/// and parsed only by whoever reads it. A replay reads every event of the log; building a
/// `serde_json::Value` tree for each payload and freeing it again was a sixth of the time
/// spent reading (decoding reads the text straight into the event's type instead).
///
/// Serializes as the JSON it holds. Two payloads are equal when their JSON values are, as
/// the `Value`s they replaced were (PostgreSQL's JSONB gives the keys back in its own order).
#[derive(Debug, Clone)]
pub struct Payload(Box<RawValue>);

impl Payload {
    /// `text` if it is one JSON value.
    pub fn parse(text: String) -> Result<Self, serde_json::Error> {
        RawValue::from_string(text).map(Self)
    }

    /// The JSON text.
    pub fn get(&self) -> &str {
        self.0.get()
    }

    /// The payload as a JSON tree, for tools that look inside it.
    pub fn to_value(&self) -> Value {
        // The text was checked to be JSON when the payload was made.
        serde_json::from_str(self.get()).unwrap_or(Value::Null)
    }
}

impl From<&Value> for Payload {
    fn from(value: &Value) -> Self {
        // A Value always prints as JSON.
        Self(serde_json::value::to_raw_value(value).unwrap_or_else(|_| empty_object()))
    }
}

impl From<Value> for Payload {
    fn from(value: Value) -> Self {
        Self::from(&value)
    }
}

fn empty_object() -> Box<RawValue> {
    RawValue::from_string("{}".to_owned()).unwrap_or_else(|_| unreachable!("{{}} is JSON"))
}

impl Default for Payload {
    fn default() -> Self {
        Self(empty_object())
    }
}

impl PartialEq for Payload {
    fn eq(&self, other: &Self) -> bool {
        self.get() == other.get() || self.to_value() == other.to_value()
    }
}

impl PartialEq<Value> for Payload {
    fn eq(&self, other: &Value) -> bool {
        self.to_value() == *other
    }
}

impl Serialize for Payload {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.0.serialize(serializer)
    }
}

impl<'de> Deserialize<'de> for Payload {
    /// From JSON text, the text as it is; from a `Value`, the value printed as JSON.
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        Box::<RawValue>::deserialize(deserializer).map(Self)
    }
}

/// An event about to be appended; the store gives it its version and global position.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NewEvent {
    pub event_id: Uuid,
    pub event_type: String,
    pub schema_version: u32,
    #[serde(with = "crate::time::rfc3339")]
    pub occurred_at: DateTime<Utc>,
    pub payload: Value,
    pub metadata: EventMetadata,
}

impl NewEvent {
    /// Wraps a domain event, splitting serde's external tag into the type name.
    pub fn from_domain<E: DomainEvent>(
        event_id: Uuid,
        event: &E,
        occurred_at: DateTime<Utc>,
        metadata: EventMetadata,
    ) -> Self {
        let event_type = event.event_type();
        let payload = match serde_json::to_value(event) {
            Ok(Value::Object(mut tagged)) => tagged.remove(&event_type).unwrap_or(Value::Null),
            // Unit variants serialize as a bare string: the payload is empty.
            _ => Value::Object(Default::default()),
        };
        Self {
            event_id,
            event_type,
            schema_version: event.event_version().parse().unwrap_or(1),
            occurred_at,
            payload,
            metadata,
        }
    }
}

/// An event whose type or payload this build cannot read.
#[derive(Debug, thiserror::Error)]
#[error("cannot decode {event_type} v{schema_version} at {stream_id}@{version}: {reason}")]
pub struct DecodeError {
    pub stream_id: String,
    pub version: u64,
    pub event_type: String,
    pub schema_version: u32,
    pub reason: String,
}

impl DecodeError {
    /// Why `event` cannot be read.
    pub fn of(event: &RecordedEvent, reason: String) -> Self {
        Self {
            stream_id: event.stream_id.clone(),
            version: event.version,
            event_type: event.event_type.clone(),
            schema_version: event.schema_version,
            reason,
        }
    }
}

/// Turns a recorded event back into its domain type, upcasting an older schema version first
/// ([`crate::upcast`]), so that aggregates and projections only know the current shape.
pub fn decode<E: DomainEvent + DeserializeOwned>(event: &RecordedEvent) -> Result<E, DecodeError> {
    let event = &*crate::upcast::upcast(event)?;
    let tagged = Tagged {
        tag: &event.event_type,
        payload: event.payload.get(),
    };
    E::deserialize(tagged).map_err(|e| DecodeError::of(event, e.to_string()))
}

/// An event as serde's externally tagged enum (`{type: payload}`), read where it lies: a
/// replay decodes every event of the log, and copying each payload into a tagged map first
/// was much of its time. A unit variant's payload is `{}`.
struct Tagged<'a> {
    tag: &'a str,
    /// The payload's JSON text.
    payload: &'a str,
}

impl<'de> serde::Deserializer<'de> for Tagged<'de> {
    type Error = serde_json::Error;

    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Self::Error> {
        visitor.visit_enum(self)
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes byte_buf
        option unit unit_struct newtype_struct seq tuple tuple_struct map struct enum
        identifier ignored_any
    }
}

impl<'de> EnumAccess<'de> for Tagged<'de> {
    type Error = serde_json::Error;
    type Variant = Variant<'de>;

    fn variant_seed<S: DeserializeSeed<'de>>(
        self,
        seed: S,
    ) -> Result<(S::Value, Self::Variant), Self::Error> {
        let tag: StrDeserializer<'_, serde_json::Error> = self.tag.into_deserializer();
        Ok((seed.deserialize(tag)?, Variant(self.payload)))
    }
}

/// The payload's text as the variant's content.
struct Variant<'a>(&'a str);

impl<'de> Variant<'de> {
    /// Reads the whole text with `read`, refusing anything after the value.
    fn read<T>(
        self,
        read: impl FnOnce(
            &mut serde_json::Deserializer<serde_json::de::StrRead<'de>>,
        ) -> Result<T, serde_json::Error>,
    ) -> Result<T, serde_json::Error> {
        let mut deserializer = serde_json::Deserializer::from_str(self.0);
        let value = read(&mut deserializer)?;
        deserializer.end()?;
        Ok(value)
    }
}

impl<'de> VariantAccess<'de> for Variant<'de> {
    type Error = serde_json::Error;

    fn unit_variant(self) -> Result<(), Self::Error> {
        if matches!(self.0.trim(), "{}" | "null") {
            return Ok(());
        }
        match self.read(|d| Value::deserialize(d))? {
            Value::Null => Ok(()),
            Value::Object(fields) if fields.is_empty() => Ok(()),
            other => Err(serde::de::Error::custom(format!(
                "expected no payload, got {other}"
            ))),
        }
    }

    fn newtype_variant_seed<S: DeserializeSeed<'de>>(
        self,
        seed: S,
    ) -> Result<S::Value, Self::Error> {
        self.read(|d| seed.deserialize(d))
    }

    fn tuple_variant<V: Visitor<'de>>(
        self,
        _len: usize,
        visitor: V,
    ) -> Result<V::Value, Self::Error> {
        self.read(|d| serde::Deserializer::deserialize_seq(d, visitor))
    }

    fn struct_variant<V: Visitor<'de>>(
        self,
        fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, Self::Error> {
        self.read(|d| serde::Deserializer::deserialize_struct(d, "", fields, visitor))
    }
}

/// The stream that holds one aggregate: `order-{uuid}`, `inventory-{SKU}`.
pub fn stream_id(stream_type: &str, id: impl std::fmt::Display) -> String {
    format!("{stream_type}-{id}")
}

/// The id part of a stream id, for a known stream type.
pub fn stream_key<'a>(stream_type: &str, stream_id: &'a str) -> Option<&'a str> {
    stream_id
        .strip_prefix(stream_type)
        .and_then(|rest| rest.strip_prefix('-'))
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::order::OrderEvent;

    fn recorded(event_type: &str, payload: &str) -> RecordedEvent {
        RecordedEvent {
            event_id: Uuid::nil(),
            stream_id: "order-1".into(),
            stream_type: "order".into(),
            version: 1,
            global_position: Some(1),
            event_type: event_type.into(),
            schema_version: crate::upcast::current_version(event_type),
            occurred_at: Utc::now(),
            payload: Payload::parse(payload.into()).unwrap(),
            metadata: EventMetadata::default(),
        }
    }

    #[test]
    fn a_payload_is_decoded_from_its_text_whatever_its_spacing() {
        let shipped = recorded(
            "OrderShipped",
            r#"{ "tracking_number": "JD0001",  "carrier": "DHL" }"#,
        );
        let OrderEvent::OrderShipped {
            carrier,
            tracking_number,
        } = decode(&shipped).unwrap()
        else {
            panic!("not a shipment");
        };
        assert_eq!(
            (carrier.as_str(), tracking_number.as_str()),
            ("DHL", "JD0001")
        );
        for empty in ["{}", " { } ", "null"] {
            assert!(matches!(
                decode(&recorded("OrderConfirmed", empty)),
                Ok(OrderEvent::OrderConfirmed)
            ));
        }
        let err = decode::<OrderEvent>(&recorded("OrderConfirmed", r#"{"x": 1}"#)).unwrap_err();
        assert!(err.reason.contains("expected no payload"), "{err}");
        assert!(decode::<OrderEvent>(&recorded("OrderShipped", r#"{"carrier": 7}"#)).is_err());
    }

    #[test]
    fn payloads_compare_as_json_and_print_as_they_are() {
        let a = Payload::parse(r#"{"a": 1, "b": [true]}"#.into()).unwrap();
        let b = Payload::from(json!({"b": [true], "a": 1}));
        assert_eq!(a, b);
        assert_eq!(a, json!({"a": 1, "b": [true]}));
        assert_ne!(a, Payload::default());
        assert_eq!(b.get(), r#"{"a":1,"b":[true]}"#);
        assert!(Payload::parse("{".into()).is_err());
        assert!(Payload::parse("{} {}".into()).is_err());
        // Read from JSON text or from a Value, as the event stores and buses hand it over.
        let event = recorded("OrderConfirmed", "{}");
        let text = serde_json::to_string(&event).unwrap();
        assert!(text.contains(r#""payload":{}"#), "{text}");
        let back: RecordedEvent = serde_json::from_str(&text).unwrap();
        assert_eq!(back, event);
        let back: RecordedEvent =
            serde_json::from_value(serde_json::to_value(&event).unwrap()).unwrap();
        assert_eq!(back, event);
    }
}
