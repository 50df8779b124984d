//! The HTTP edge: what one client may take before it is refused, and the answers it gets.
//!
//! - Commands (POST, PUT, DELETE with a bearer token) are rate-limited per customer, and the
//!   development login per client address (`governor`'s keyed GCRA limiters): `429` with
//!   `Retry-After`.
//! - Live streams are capped per customer (`429`) and in all (`503`), `min_version` waiters in
//!   all (`503`): each a permit released when the stream or the wait ends.
//! - Every error leaves as problem+json, including the ones axum and tower-http answer
//!   themselves (404 and 405 of the router, 413, 408): [`problem_for_every_error`].
//!
//! The connection cap and the header read timeout are the server loop's (`crate::serve`).

use std::collections::HashMap;
use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use axum::body::Body;
use axum::extract::Request;
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use uuid::Uuid;

use super::error::ApiError;
use crate::config::EdgeSettings;

/// Keyed limiters forget idle keys once they hold this many, so a flood of new keys cannot
/// grow them without end.
const FORGET_ABOVE: usize = 100_000;

pub struct Edge {
    pub settings: EdgeSettings,
    commands: DefaultKeyedRateLimiter<Uuid>,
    dev_logins: DefaultKeyedRateLimiter<IpAddr>,
    streams: Mutex<StreamCount>,
    waiters: Arc<Semaphore>,
}

#[derive(Default)]
struct StreamCount {
    total: usize,
    per_customer: HashMap<Uuid, usize>,
}

impl Edge {
    pub fn new(settings: EdgeSettings) -> Arc<Self> {
        let nonzero = |n: u32| NonZeroU32::new(n.max(1)).unwrap_or(NonZeroU32::MIN);
        let commands = Quota::per_second(nonzero(settings.command_rate))
            .allow_burst(nonzero(settings.command_burst));
        let dev_logins = Quota::per_minute(nonzero(settings.dev_login_rate))
            .allow_burst(nonzero(settings.dev_login_rate));
        Arc::new(Self {
            commands: RateLimiter::keyed(commands),
            dev_logins: RateLimiter::keyed(dev_logins),
            streams: Mutex::default(),
            waiters: Arc::new(Semaphore::new(settings.max_waiters)),
            settings,
        })
    }

    /// One more command from `customer`, or a 429 saying when the next one is welcome.
    pub fn command(&self, customer: Uuid) -> Result<(), ApiError> {
        check(&self.commands, &customer, "commands")
    }

    /// One more development login from `address`.
    pub fn dev_login(&self, address: IpAddr) -> Result<(), ApiError> {
        check(&self.dev_logins, &address, "development logins")
    }

    /// A live stream for `customer`, held until the permit drops.
    pub fn open_stream(self: &Arc<Self>, customer: Uuid) -> Result<StreamPermit, ApiError> {
        let mut count = self.streams.lock().unwrap_or_else(PoisonError::into_inner);
        if count.total >= self.settings.max_streams {
            return Err(ApiError::Busy("too many live streams are open".into()));
        }
        let open = count.per_customer.entry(customer).or_default();
        if *open >= self.settings.max_streams_per_customer {
            return Err(ApiError::TooManyRequests {
                code: "too_many_streams",
                detail: format!(
                    "at most {} live streams per customer; close one first",
                    self.settings.max_streams_per_customer
                ),
                retry_after: 5,
            });
        }
        *open += 1;
        count.total += 1;
        Ok(StreamPermit {
            edge: self.clone(),
            customer,
        })
    }

    /// A place among the `min_version` waiters, held until the permit drops.
    pub fn wait_permit(&self) -> Result<OwnedSemaphorePermit, ApiError> {
        self.waiters
            .clone()
            .try_acquire_owned()
            .map_err(|_| ApiError::Busy("too many reads are waiting for a version".into()))
    }
}

fn check<K>(limiter: &DefaultKeyedRateLimiter<K>, key: &K, what: &str) -> Result<(), ApiError>
where
    K: std::hash::Hash + Eq + Clone,
{
    if limiter.len() > FORGET_ABOVE {
        limiter.retain_recent();
    }
    limiter.check_key(key).map_err(|not_until| {
        let wait = not_until.wait_time_from(DefaultClock::default().now());
        ApiError::TooManyRequests {
            code: "rate_limited",
            detail: format!("too many {what}; retry in {} s", seconds(wait)),
            retry_after: seconds(wait),
        }
    })
}

/// Whole seconds, rounded up: a `Retry-After` of 0 would invite the retry too early.
fn seconds(wait: Duration) -> u64 {
    wait.as_secs() + u64::from(wait.subsec_nanos() > 0)
}

/// A live stream's place; gives it back on drop.
pub struct StreamPermit {
    edge: Arc<Edge>,
    customer: Uuid,
}

impl Drop for StreamPermit {
    fn drop(&mut self) {
        let mut count = self
            .edge
            .streams
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        count.total = count.total.saturating_sub(1);
        if let Some(open) = count.per_customer.get_mut(&self.customer) {
            *open -= 1;
            if *open == 0 {
                count.per_customer.remove(&self.customer);
            }
        }
    }
}

/// The body deadline [`super::ApiJson`] reads a request body within.
#[derive(Debug, Clone, Copy)]
pub struct BodyDeadline(pub Duration);

/// Turns every error response that is not problem+json yet (the router's 404 and 405, 408
/// from the request timeout, 413 from the body limit, a path that does not decode) into one,
/// keeping its status and headers (`Allow`, `Retry-After`).
pub async fn problem_for_every_error(request: Request, next: Next) -> Response {
    let response = next.run(request).await;
    let status = response.status();
    let is_problem = response
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/problem+json"));
    let documented = response.extensions().get::<DocumentedBody>().is_some();
    if !(status.is_client_error() || status.is_server_error()) || is_problem || documented {
        return response;
    }
    let (mut parts, _) = response.into_parts();
    let problem = ApiError::from_status(status).into_response();
    let (problem_parts, body) = problem.into_parts();
    parts.headers.remove(header::CONTENT_LENGTH);
    for (name, value) in &problem_parts.headers {
        parts.headers.insert(name, value.clone());
    }
    Response::from_parts(parts, body)
}

/// Marks an error response whose body the contract documents as it is (`/ready`'s 503 with
/// its checks), so [`problem_for_every_error`] leaves it alone.
#[derive(Debug, Clone, Copy)]
pub struct DocumentedBody;

/// `Cache-Control: no-store` for everything but the UI's files, which set their own.
pub fn no_store() -> HeaderValue {
    HeaderValue::from_static("no-store")
}

/// A refusal answered before any routing, for a connection over the cap.
pub fn busy() -> Response<Body> {
    ApiError::Busy("the server has too many open connections".into()).into_response()
}

impl ApiError {
    /// The problem for a status some layer below answered without a body of ours.
    pub fn from_status(status: StatusCode) -> Self {
        match status {
            StatusCode::NOT_FOUND => Self::NotFound,
            StatusCode::METHOD_NOT_ALLOWED => Self::MethodNotAllowed,
            StatusCode::PAYLOAD_TOO_LARGE => Self::PayloadTooLarge,
            StatusCode::REQUEST_TIMEOUT => Self::RequestTimeout,
            StatusCode::UNSUPPORTED_MEDIA_TYPE => Self::UnsupportedMediaType,
            StatusCode::UNAUTHORIZED => Self::Unauthenticated("authentication required".into()),
            StatusCode::FORBIDDEN => Self::Forbidden,
            s if s.is_server_error() => Self::Internal,
            _ => Self::BadRequest("the request is malformed".into()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn edge(settings: EdgeSettings) -> Arc<Edge> {
        Edge::new(settings)
    }

    #[test]
    fn commands_beyond_the_burst_are_refused_with_a_retry_after() {
        let edge = edge(EdgeSettings {
            command_rate: 1,
            command_burst: 3,
            ..EdgeSettings::default()
        });
        let (alice, bob) = (Uuid::new_v4(), Uuid::new_v4());
        for _ in 0..3 {
            edge.command(alice).unwrap();
        }
        let Err(ApiError::TooManyRequests { retry_after, .. }) = edge.command(alice) else {
            panic!("the fourth command at once is refused");
        };
        assert_eq!(retry_after, 1);
        edge.command(bob)
            .expect("another customer has a limit of their own");
    }

    #[test]
    fn streams_are_capped_per_customer_and_in_all_and_given_back() {
        let edge = edge(EdgeSettings {
            max_streams: 3,
            max_streams_per_customer: 2,
            ..EdgeSettings::default()
        });
        let (alice, bob) = (Uuid::new_v4(), Uuid::new_v4());
        let first = edge.open_stream(alice).unwrap();
        let _second = edge.open_stream(alice).unwrap();
        assert!(matches!(
            edge.open_stream(alice),
            Err(ApiError::TooManyRequests { .. })
        ));
        let _third = edge.open_stream(bob).unwrap();
        assert!(matches!(edge.open_stream(bob), Err(ApiError::Busy(_))));
        drop(first);
        edge.open_stream(alice)
            .expect("a closed stream gives its place back");
    }

    #[test]
    fn waiters_are_capped() {
        let edge = edge(EdgeSettings {
            max_waiters: 1,
            ..EdgeSettings::default()
        });
        let held = edge.wait_permit().unwrap();
        assert!(edge.wait_permit().is_err());
        drop(held);
        assert!(edge.wait_permit().is_ok());
    }
}
