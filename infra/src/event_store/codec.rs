//! How both SQL stores put an event's values into columns and read them back: times as
//! RFC 3339 text, JSON as text, versions and positions as signed 64-bit integers; and how
//! their numbered log meets the port's opaque cursors.

use chrono::{DateTime, SecondsFormat, Utc};
use domain::RecordedEvent;
use eventlog::{LogCursor, LogPage, StoreError};

/// A page of a numbered log: it resumes after its last event, or where it was read from when
/// nothing was new.
pub(super) fn numbered_page(after: &LogCursor, events: Vec<RecordedEvent>) -> LogPage {
    let next = match events.last().and_then(|e| e.global_position) {
        Some(last) => LogCursor::at_position(last),
        None => after.clone(),
    };
    LogPage { events, next }
}

/// Events after `after` in a log numbered 1..=head without holes.
pub(super) fn numbered_lag(head: u64, after: &LogCursor) -> Result<Option<u64>, StoreError> {
    Ok(Some(head.saturating_sub(after.position()?)))
}

/// RFC 3339 in UTC with microseconds: sorts as text in SQLite, and is PostgreSQL's
/// `timestamptz` precision, so both engines keep the same instant.
pub(super) fn format_time(at: DateTime<Utc>) -> String {
    at.to_rfc3339_opts(SecondsFormat::Micros, true)
}

pub(super) fn parse_time(text: &str) -> Result<DateTime<Utc>, StoreError> {
    DateTime::parse_from_rfc3339(text)
        .map(|at| at.with_timezone(&Utc))
        .map_err(|e| StoreError::Corrupt(format!("occurred_at {text:?}: {e}")))
}

pub(super) fn to_json(value: &impl serde::Serialize) -> Result<String, StoreError> {
    serde_json::to_string(value).map_err(|e| StoreError::Corrupt(format!("cannot encode: {e}")))
}

pub(super) fn from_json<T: serde::de::DeserializeOwned>(
    text: &str,
    what: &str,
) -> Result<T, StoreError> {
    serde_json::from_str(text).map_err(|e| StoreError::Corrupt(format!("{what}: {e}")))
}

pub(super) fn to_u64(value: i64, what: &str) -> Result<u64, StoreError> {
    u64::try_from(value).map_err(|_| StoreError::Corrupt(format!("negative {what}: {value}")))
}

/// SQLite's integers and PostgreSQL's `BIGINT` are signed; no real version or position comes
/// near `i64::MAX`.
pub(super) fn to_i64(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}
