//! JSON request bodies, read the one way every endpoint reads them: `application/json` (or a
//! `+json` type) or 415, the whole body within its deadline or 408, at most 64 KiB or 413, an
//! object at the top, no key twice in one object, and no text a person cannot see for what
//! it is (NUL and other control characters, bidirectional overrides and isolates), or 422
//! naming the field; only then the typed value, whose own errors name their field too.
//!
//! Duplicate keys matter because parsers disagree on them (serde keeps the last, others the
//! first): a body two parts of a system read differently is a way to smuggle one past the
//! other. Bidirectional controls make a name or an address display as something else.

use std::collections::HashSet;
use std::fmt;

use axum::body::Bytes;
use axum::extract::{FromRequest, Json, Request};
use axum::http::{HeaderMap, header};
use domain::values::FieldError;
use serde::de::{DeserializeOwned, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::Value;

use super::edge::BodyDeadline;
use super::error::ApiError;

/// A body's deadline where no [`BodyDeadline`] is set (routers built without the edge).
const DEFAULT_BODY_DEADLINE: std::time::Duration = std::time::Duration::from_secs(10);
/// A refused body reports at most this many fields.
const MAX_REPORTED: usize = 20;

/// `Json` with the checks above; every rejection is problem+json.
pub struct ApiJson<T>(pub T);

impl<S, T> FromRequest<S> for ApiJson<T>
where
    S: Send + Sync,
    T: DeserializeOwned,
{
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &S) -> Result<Self, ApiError> {
        if !is_json(request.headers()) {
            return Err(ApiError::UnsupportedMediaType);
        }
        let deadline = request
            .extensions()
            .get::<BodyDeadline>()
            .map_or(DEFAULT_BODY_DEADLINE, |d| d.0);
        // The whole body within the deadline: a client trickling it byte by byte is cut off.
        let bytes = tokio::time::timeout(deadline, Bytes::from_request(request, state))
            .await
            .map_err(|_| ApiError::RequestTimeout)?
            .map_err(|rejection| {
                if rejection.status() == axum::http::StatusCode::PAYLOAD_TOO_LARGE {
                    ApiError::PayloadTooLarge
                } else {
                    ApiError::BadRequest("the body could not be read".into())
                }
            })?;
        parse(&bytes).map(Self)
    }
}

/// Whether the request says its body is JSON (`application/json`, or `application/*+json`).
pub fn is_json(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(|v| {
            v.split(';')
                .next()
                .unwrap_or("")
                .trim()
                .to_ascii_lowercase()
        })
        .is_some_and(|essence| {
            essence == "application/json"
                || essence
                    .strip_prefix("application/")
                    .is_some_and(|sub| sub.ends_with("+json") && !sub.contains('/'))
        })
}

/// The checks, then the typed value.
pub fn parse<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    let mut errors = Vec::new();
    let mut deserializer = serde_json::Deserializer::from_slice(bytes);
    let top = Scan {
        path: String::new(),
        errors: &mut errors,
    }
    .deserialize(&mut deserializer)
    .and_then(|kind| deserializer.end().map(|()| kind))
    .map_err(|_| ApiError::BadRequest("the body is not valid JSON".into()))?;
    if top != Kind::Object {
        return Err(ApiError::field("body", "must be a JSON object"));
    }
    if !errors.is_empty() {
        return Err(ApiError::Validation(errors));
    }
    let Json(value) = Json::<T>::from_bytes(bytes)?;
    Ok(value)
}

/// Notes every key of `fields` that is not one of `known`: a misspelt field is refused, not
/// ignored (the document closes every request object with `additionalProperties: false`).
pub fn unknown_fields(
    fields: &serde_json::Map<String, Value>,
    known: &[&str],
    prefix: &str,
    errors: &mut Vec<FieldError>,
) {
    for key in fields.keys().filter(|k| !known.contains(&k.as_str())) {
        errors.push(FieldError::new(
            format!("{prefix}{key}"),
            "is not a field of this request",
        ));
    }
}

/// A JSON number that is a whole number, as JSON Schema's `integer` counts them (`2.0` is).
pub fn whole_number(value: &Value) -> Option<i64> {
    value.as_i64().or_else(|| {
        value
            .as_f64()
            .filter(|f| f.fract() == 0.0 && f.abs() < 9.0e15)
            .map(|f| f as i64)
    })
}

/// A character that must not be in a text: it hides or reorders what a person would read.
fn is_hidden(c: char) -> bool {
    (c.is_control() && !matches!(c, '\t' | '\n' | '\r'))
        || matches!(c, '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}')
}

#[derive(Debug, PartialEq, Eq)]
enum Kind {
    Object,
    Other,
}

/// Walks a JSON value without keeping it, noting duplicate keys and hidden characters with
/// the path where they are (`lines[0].sku`, as serde's own errors name fields).
struct Scan<'a> {
    path: String,
    errors: &'a mut Vec<FieldError>,
}

impl Scan<'_> {
    fn refuse(&mut self, path: &str, message: &str) {
        if self.errors.len() < MAX_REPORTED {
            let field = if path.is_empty() { "body" } else { path };
            self.errors.push(FieldError::new(field, message));
        }
    }

    fn text(&mut self, path: &str, text: &str) {
        if text.chars().any(is_hidden) {
            self.refuse(
                path,
                "must not contain control characters or bidirectional overrides",
            );
        }
    }
}

impl<'de> DeserializeSeed<'de> for Scan<'_> {
    type Value = Kind;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Kind, D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Scan<'_> {
    type Value = Kind;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_bool<E>(self, _: bool) -> Result<Kind, E> {
        Ok(Kind::Other)
    }
    fn visit_i64<E>(self, _: i64) -> Result<Kind, E> {
        Ok(Kind::Other)
    }
    fn visit_u64<E>(self, _: u64) -> Result<Kind, E> {
        Ok(Kind::Other)
    }
    fn visit_f64<E>(self, _: f64) -> Result<Kind, E> {
        Ok(Kind::Other)
    }
    fn visit_unit<E>(self) -> Result<Kind, E> {
        Ok(Kind::Other)
    }

    fn visit_str<E>(mut self, text: &str) -> Result<Kind, E> {
        let path = std::mem::take(&mut self.path);
        self.text(&path, text);
        Ok(Kind::Other)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut items: A) -> Result<Kind, A::Error> {
        let mut index = 0;
        while items
            .next_element_seed(Scan {
                path: format!("{}[{index}]", self.path),
                errors: &mut *self.errors,
            })?
            .is_some()
        {
            index += 1;
        }
        Ok(Kind::Other)
    }

    fn visit_map<A: MapAccess<'de>>(mut self, mut entries: A) -> Result<Kind, A::Error> {
        let mut seen = HashSet::new();
        while let Some(key) = entries.next_key::<String>()? {
            let path = if self.path.is_empty() {
                key.clone()
            } else {
                format!("{}.{key}", self.path)
            };
            self.text(&path, &key);
            if !seen.insert(key) {
                self.refuse(&path, "appears twice in one object");
            }
            entries.next_value_seed(Scan {
                path,
                errors: &mut *self.errors,
            })?;
        }
        Ok(Kind::Object)
    }
}

#[cfg(test)]
mod tests {
    use serde::Deserialize;

    use super::*;

    #[derive(Debug, Deserialize)]
    struct Body {
        #[allow(dead_code)]
        name: String,
    }

    fn fields(result: Result<Body, ApiError>) -> Vec<String> {
        match result {
            Err(ApiError::Validation(errors)) => errors.iter().map(|e| e.field.clone()).collect(),
            other => panic!("expected a 422, got {other:?}"),
        }
    }

    #[test]
    fn a_key_twice_is_refused_at_any_depth() {
        assert_eq!(fields(parse(br#"{"name": "a", "name": "b"}"#)), ["name"]);
        assert_eq!(
            fields(parse(br#"{"name": "a", "x": [{"k": 1, "k": 2}]}"#)),
            ["x[0].k"]
        );
    }

    #[test]
    fn hidden_characters_are_refused_where_they_are() {
        assert_eq!(fields(parse(br#"{"name": "a\u0000b"}"#)), ["name"]);
        assert_eq!(
            fields(parse("{\"name\": \"evil\u{202E}txt.exe\"}".as_bytes())),
            ["name"]
        );
        assert_eq!(
            fields(parse(
                "{\"name\": \"a\", \"tags\": [\"ok\", \"x\u{2066}\"]}".as_bytes()
            )),
            ["tags[1]"]
        );
        assert!(parse::<Body>(b"{\"name\": \"two\\nlines\\tand a tab\"}").is_ok());
    }

    #[test]
    fn only_an_object_is_a_body() {
        for body in [&b"[]"[..], b"\"text\"", b"null", b"3"] {
            assert_eq!(fields(parse(body)), ["body"]);
        }
        assert!(matches!(
            parse::<Body>(b"{\"name\": 1"),
            Err(ApiError::BadRequest(_))
        ));
        assert!(matches!(
            parse::<Body>(b"{} trailing"),
            Err(ApiError::BadRequest(_))
        ));
    }

    #[test]
    fn json_content_types_are_recognised() {
        let headers = |value: &str| {
            let mut headers = HeaderMap::new();
            headers.insert(header::CONTENT_TYPE, value.parse().unwrap());
            headers
        };
        assert!(is_json(&headers("application/json")));
        assert!(is_json(&headers("application/json; charset=utf-8")));
        assert!(is_json(&headers("application/merge-patch+json")));
        assert!(!is_json(&headers("text/plain")));
        assert!(!is_json(&headers("application/x-www-form-urlencoded")));
        assert!(!is_json(&HeaderMap::new()));
    }
}
