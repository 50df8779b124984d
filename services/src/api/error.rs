//! One error type for every handler, answered as RFC 9457 problem+json. Internals (engine
//! messages) go to the log; the client gets a stable `code` and a sentence it can show.

use axum::Json;
use axum::extract::rejection::JsonRejection;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use commands::CommandFailure;
use domain::inventory::InventoryError;
use domain::order::OrderError;
use domain::values::FieldError;
use eventlog::Classify;
use projections::{ProjectionError, PushError, ViewError};
use serde::Serialize;
use utoipa::ToSchema;

/// What an [`ApiError`] keeps of the failure behind it, for the log.
pub type Source = Box<dyn std::error::Error + Send + Sync>;

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("the request has invalid fields")]
    Validation(Vec<FieldError>),
    #[error("{0}")]
    BadRequest(String),
    #[error("{0}")]
    Unauthenticated(String),
    #[error("this action needs another role")]
    Forbidden,
    /// The resource belongs to someone else (and the caller knows it exists).
    #[error("{0}")]
    NotYours(&'static str),
    #[error("not found")]
    NotFound,
    #[error("{detail}")]
    Conflict { code: &'static str, detail: String },
    #[error("{detail}")]
    Unprocessable { code: &'static str, detail: String },
    #[error("the request body is larger than allowed")]
    PayloadTooLarge,
    #[error("send the body as application/json")]
    UnsupportedMediaType,
    /// An engine is down or overloaded, or a stream too busy: retrying shortly can succeed.
    /// The source goes to the log, never to the client.
    #[error("the service is temporarily unavailable, retry shortly")]
    Unavailable(#[source] Source),
    /// Something on our side is broken (data this build cannot read, a header it cannot
    /// write): retrying does not help. Logged with its source as an error; the client gets a
    /// 500.
    #[error("something went wrong on our side")]
    Broken(#[source] Source),
    /// A limit of this client's: retry after `retry_after` seconds.
    #[error("{detail}")]
    TooManyRequests {
        code: &'static str,
        detail: String,
        retry_after: u64,
    },
    /// A limit of the whole server's (connections, streams, waiters): retry shortly.
    #[error("{0}; retry shortly")]
    Busy(String),
    #[error("this method is not allowed here")]
    MethodNotAllowed,
    #[error("the request took too long to arrive or to answer")]
    RequestTimeout,
    #[error("something went wrong on our side")]
    Internal,
}

/// The problem+json body (RFC 9457), with a stable `code` and, for 422, every field error.
#[derive(Debug, Serialize, ToSchema)]
pub struct Problem {
    /// A URI reference naming the problem type: `/problems/{code}`.
    #[serde(rename = "type")]
    pub kind: String,
    pub title: String,
    pub status: u16,
    pub detail: String,
    /// Stable machine-readable name of the problem, e.g. `validation_failed`.
    pub code: String,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    #[schema(value_type = Vec<FieldErrorSchema>)]
    pub errors: Vec<FieldError>,
}

/// One invalid field.
#[derive(ToSchema)]
#[allow(dead_code)]
pub struct FieldErrorSchema {
    /// The field's path in the request, e.g. `lines[0].quantity`.
    field: String,
    message: String,
}

impl ApiError {
    fn parts(&self) -> (StatusCode, &'static str, &'static str) {
        match self {
            Self::Validation(_) => (
                StatusCode::UNPROCESSABLE_ENTITY,
                "validation_failed",
                "Invalid request",
            ),
            Self::BadRequest(_) => (StatusCode::BAD_REQUEST, "bad_request", "Malformed request"),
            Self::Unauthenticated(_) => (
                StatusCode::UNAUTHORIZED,
                "unauthenticated",
                "Authentication required",
            ),
            Self::Forbidden => (StatusCode::FORBIDDEN, "forbidden", "Forbidden"),
            Self::NotYours(_) => (StatusCode::FORBIDDEN, "not_yours", "Forbidden"),
            Self::NotFound => (StatusCode::NOT_FOUND, "not_found", "Not found"),
            Self::Conflict { code, .. } => (StatusCode::CONFLICT, code, "Conflict"),
            Self::Unprocessable { code, .. } => (
                StatusCode::UNPROCESSABLE_ENTITY,
                code,
                "Unprocessable request",
            ),
            Self::PayloadTooLarge => (
                StatusCode::PAYLOAD_TOO_LARGE,
                "payload_too_large",
                "Payload too large",
            ),
            Self::UnsupportedMediaType => (
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported_media_type",
                "Unsupported media type",
            ),
            Self::Unavailable(_) => (
                StatusCode::SERVICE_UNAVAILABLE,
                "unavailable",
                "Service unavailable",
            ),
            Self::TooManyRequests { code, .. } => {
                (StatusCode::TOO_MANY_REQUESTS, code, "Too many requests")
            }
            Self::Busy(_) => (StatusCode::SERVICE_UNAVAILABLE, "busy", "Server busy"),
            Self::MethodNotAllowed => (
                StatusCode::METHOD_NOT_ALLOWED,
                "method_not_allowed",
                "Method not allowed",
            ),
            Self::RequestTimeout => (
                StatusCode::REQUEST_TIMEOUT,
                "request_timeout",
                "Request timeout",
            ),
            Self::Internal | Self::Broken(_) => (
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal",
                "Internal error",
            ),
        }
    }

    pub fn field(field: &str, message: &str) -> Self {
        Self::Validation(vec![FieldError::new(field, message)])
    }

    /// A failure that knows what it is: 503 when retrying can succeed (an engine down, a busy
    /// stream), 500 when it cannot (a corrupt store, an undecodable event).
    pub fn failed<E>(error: E) -> Self
    where
        E: Classify + std::error::Error + Send + Sync + 'static,
    {
        if error.fault().is_retryable() {
            Self::Unavailable(Box::new(error))
        } else {
            Self::Broken(Box::new(error))
        }
    }

    /// An engine that did not answer (503).
    pub fn unavailable(error: impl Into<Source>) -> Self {
        Self::Unavailable(error.into())
    }

    /// A failure on our side that retrying does not mend (500).
    pub fn broken(error: impl Into<Source>) -> Self {
        Self::Broken(error.into())
    }
}

/// The error and its sources, outermost first: "a: b: c".
fn chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, code, title) = self.parts();
        let retry_after = match &self {
            Self::TooManyRequests { retry_after, .. } => Some(*retry_after),
            _ if status == StatusCode::SERVICE_UNAVAILABLE => Some(1),
            _ => None,
        };
        match &self {
            Self::Unavailable(source) => {
                tracing::error!(error = %chain(source.as_ref()), "request failed: engine unavailable");
            }
            Self::Broken(source) => {
                tracing::error!(error = %chain(source.as_ref()), "request failed on our side");
            }
            _ => {}
        }
        let problem = Problem {
            kind: format!("/problems/{code}"),
            title: title.to_owned(),
            status: status.as_u16(),
            detail: self.to_string(),
            code: code.to_owned(),
            errors: match self {
                Self::Validation(errors) => errors,
                _ => Vec::new(),
            },
        };
        let mut response = (status, Json(problem)).into_response();
        let headers = response.headers_mut();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/problem+json"),
        );
        if let Some(seconds) = retry_after {
            headers.insert(header::RETRY_AFTER, HeaderValue::from(seconds));
        }
        if status == StatusCode::UNAUTHORIZED {
            headers.insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        response
    }
}

impl From<JsonRejection> for ApiError {
    fn from(rejection: JsonRejection) -> Self {
        match rejection {
            JsonRejection::JsonDataError(e) => {
                // serde says where: "lines[0].quantity: invalid type: ..."
                let text = e.body_text();
                let detail = text.split_once(": ").map_or(text.as_str(), |(_, d)| d);
                let (field, message) = detail.split_once(": ").unwrap_or(("body", detail));
                Self::field(field, message)
            }
            JsonRejection::JsonSyntaxError(_) => {
                Self::BadRequest("the body is not valid JSON".into())
            }
            JsonRejection::MissingJsonContentType(_) => Self::UnsupportedMediaType,
            JsonRejection::BytesRejection(e) if e.status() == StatusCode::PAYLOAD_TOO_LARGE => {
                Self::PayloadTooLarge
            }
            other => Self::BadRequest(other.body_text()),
        }
    }
}

impl From<CommandFailure> for ApiError {
    fn from(failure: CommandFailure) -> Self {
        match failure {
            CommandFailure::Invalid(errors) => Self::Validation(errors),
            CommandFailure::Order(e) => e.into(),
            CommandFailure::Inventory(e) => e.into(),
            CommandFailure::IdempotencyMismatch => Self::Conflict {
                code: "idempotency_key_reused",
                detail: failure.to_string(),
            },
            CommandFailure::Store(_)
            | CommandFailure::Decode(_)
            | CommandFailure::Contention(_) => Self::failed(failure),
        }
    }
}

impl From<OrderError> for ApiError {
    fn from(error: OrderError) -> Self {
        let detail = error.to_string();
        match error {
            OrderError::NotFound => Self::NotFound,
            OrderError::NoLines
            | OrderError::TooManyLines
            | OrderError::DuplicateSku(_)
            | OrderError::TotalOverflow
            | OrderError::InvalidTracking => Self::Unprocessable {
                code: error.code(),
                detail,
            },
            _ => Self::Conflict {
                code: error.code(),
                detail,
            },
        }
    }
}

impl From<InventoryError> for ApiError {
    fn from(error: InventoryError) -> Self {
        let detail = error.to_string();
        match error {
            InventoryError::NotListed => Self::NotFound,
            InventoryError::AlreadyListed | InventoryError::InsufficientStock { .. } => {
                Self::Conflict {
                    code: error.code(),
                    detail,
                }
            }
            _ => Self::Unprocessable {
                code: error.code(),
                detail,
            },
        }
    }
}

impl From<ProjectionError> for ApiError {
    fn from(error: ProjectionError) -> Self {
        Self::failed(error)
    }
}

impl From<eventlog::StoreError> for ApiError {
    fn from(error: eventlog::StoreError) -> Self {
        Self::failed(error)
    }
}

impl From<ViewError> for ApiError {
    fn from(error: ViewError) -> Self {
        Self::failed(error)
    }
}

impl From<PushError> for ApiError {
    fn from(error: PushError) -> Self {
        match error {
            PushError::NotOwner => {
                Self::NotYours("this installation id belongs to another customer")
            }
            PushError::Unavailable(e) => Self::unavailable(e),
            PushError::Refused(e) => {
                tracing::error!(error = %e, "the push service refused a request");
                Self::Internal
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use axum::http::StatusCode;
    use axum::response::IntoResponse;
    use commands::CommandFailure;
    use eventlog::StoreError;

    use super::ApiError;

    fn answer(error: impl Into<ApiError>) -> (StatusCode, bool) {
        let response = error.into().into_response();
        let retry = response.headers().contains_key("retry-after");
        (response.status(), retry)
    }

    #[test]
    fn what_a_retry_can_mend_is_a_503_and_what_it_cannot_a_500() {
        let down = StoreError::Unavailable("connection refused".into());
        let corrupt = StoreError::Corrupt("payload is not JSON".into());

        assert_eq!(
            answer(down.clone()),
            (StatusCode::SERVICE_UNAVAILABLE, true)
        );
        assert_eq!(
            answer(CommandFailure::Store(down)),
            (StatusCode::SERVICE_UNAVAILABLE, true)
        );
        assert_eq!(
            answer(CommandFailure::Contention("inventory-SKU-1".into())),
            (StatusCode::SERVICE_UNAVAILABLE, true),
            "a busy stream is worth a retry"
        );
        assert_eq!(
            answer(corrupt.clone()),
            (StatusCode::INTERNAL_SERVER_ERROR, false)
        );
        assert_eq!(
            answer(CommandFailure::Store(corrupt)),
            (StatusCode::INTERNAL_SERVER_ERROR, false)
        );
    }

    #[test]
    fn the_source_is_kept_for_the_log() {
        let error = ApiError::failed(CommandFailure::Store(StoreError::Corrupt("bad row".into())));

        let source = std::error::Error::source(&error).map(ToString::to_string);

        assert_eq!(
            source.as_deref(),
            Some("event store data is corrupt: bad row")
        );
        assert_eq!(error.to_string(), "something went wrong on our side");
    }
}
