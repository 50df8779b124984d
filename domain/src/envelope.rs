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
    pub payload: Value,
    pub metadata: EventMetadata,
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
        payload: &event.payload,
    };
    E::deserialize(tagged).map_err(|e| DecodeError::of(event, e.to_string()))
}

/// An event as serde's externally tagged enum (`{type: payload}`), read where it lies: a
/// replay decodes every event of the log, and copying each payload into a tagged map first
/// was much of its time. A unit variant's payload is `{}`.
struct Tagged<'a> {
    tag: &'a str,
    payload: &'a Value,
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
    type Variant = Payload<'de>;

    fn variant_seed<S: DeserializeSeed<'de>>(
        self,
        seed: S,
    ) -> Result<(S::Value, Self::Variant), Self::Error> {
        let tag: StrDeserializer<'_, serde_json::Error> = self.tag.into_deserializer();
        Ok((seed.deserialize(tag)?, Payload(self.payload)))
    }
}

struct Payload<'a>(&'a Value);

impl<'de> VariantAccess<'de> for Payload<'de> {
    type Error = serde_json::Error;

    fn unit_variant(self) -> Result<(), Self::Error> {
        match self.0 {
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
        seed.deserialize(self.0)
    }

    fn tuple_variant<V: Visitor<'de>>(
        self,
        _len: usize,
        visitor: V,
    ) -> Result<V::Value, Self::Error> {
        serde::Deserializer::deserialize_seq(self.0, visitor)
    }

    fn struct_variant<V: Visitor<'de>>(
        self,
        fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, Self::Error> {
        serde::Deserializer::deserialize_struct(self.0, "", fields, visitor)
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
