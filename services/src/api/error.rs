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
use projections::{ProjectionError, PushError};
use serde::Serialize;
use utoipa::ToSchema;

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
    /// An engine is down or overloaded; the client should retry.
    #[error("the service is temporarily unavailable, retry shortly")]
    Unavailable(String),
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
            Self::Internal => (
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal",
                "Internal error",
            ),
        }
    }

    pub fn field(field: &str, message: &str) -> Self {
        Self::Validation(vec![FieldError::new(field, message)])
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, code, title) = self.parts();
        let retry_after = match &self {
            Self::TooManyRequests { retry_after, .. } => Some(*retry_after),
            _ if status == StatusCode::SERVICE_UNAVAILABLE => Some(1),
            _ => None,
        };
        if let Self::Unavailable(internal) = &self {
            tracing::error!(error = %internal, "request failed: engine unavailable");
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
            CommandFailure::Unavailable(internal) => Self::Unavailable(internal),
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
        Self::Unavailable(error.to_string())
    }
}

impl From<eventlog::StoreError> for ApiError {
    fn from(error: eventlog::StoreError) -> Self {
        Self::Unavailable(error.to_string())
    }
}

impl From<PushError> for ApiError {
    fn from(error: PushError) -> Self {
        match error {
            PushError::NotOwner => {
                Self::NotYours("this installation id belongs to another customer")
            }
            PushError::Unavailable(e) => Self::Unavailable(e),
            PushError::Refused(e) => {
                tracing::error!(error = %e, "the push service refused a request");
                Self::Internal
            }
        }
    }
}
