//! `/api/analytics/summary`: orders per status, revenue per day and the best-selling SKUs, from
//! the analytics projection (`projections::analytics`). Analysts only.

use axum::Json;
use axum::Router;
use axum::extract::State;
use axum::routing::get;
use chrono::NaiveDate;
use projections::ReadModels;
use projections::analytics::Summary;
use serde::Deserialize;
use utoipa::IntoParams;

use super::auth::{Caller, Role};
use super::error::{ApiError, Problem};
use super::{ApiQuery, AppState};

pub fn router() -> Router<AppState> {
    Router::new().route("/api/analytics/summary", get(summary))
}

const DEFAULT_TOP: usize = 10;
const MAX_TOP: usize = 100;

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct SummaryQuery {
    /// Revenue of this UTC day (`2026-11-30`) and later only.
    pub since: Option<NaiveDate>,
    /// Revenue of this UTC day and earlier only.
    pub until: Option<NaiveDate>,
    /// How many SKUs `top_skus` lists, 1 to 100 (default 10).
    #[param(minimum = 1, maximum = 100)]
    pub top: Option<usize>,
}

/// Orders per status, revenue per day of confirmation (net of later cancellations) and the
/// SKUs confirmed orders bought most, as of the events the projection has folded (`events`,
/// `lag`: it follows the log within seconds). Analysts only.
#[utoipa::path(get, path = "/api/analytics/summary", tag = "analysts", params(SummaryQuery),
    responses(
        (status = 200, body = Summary),
        (status = 401, body = Problem),
        (status = 403, description = "Not an analyst", body = Problem),
        (status = 422, description = "A bad day or top", body = Problem)),
    security(("bearer" = [])))]
pub async fn summary(
    State(read_models): State<ReadModels>,
    caller: Caller,
    ApiQuery(query): ApiQuery<SummaryQuery>,
) -> Result<Json<Summary>, ApiError> {
    caller.require(&[Role::Analyst])?;
    let top = query.top.unwrap_or(DEFAULT_TOP);
    if !(1..=MAX_TOP).contains(&top) {
        return Err(ApiError::field("top", "must be 1 to 100"));
    }
    if let (Some(since), Some(until)) = (query.since, query.until)
        && since > until
    {
        return Err(ApiError::field("until", "must not be before since"));
    }
    let (totals, lag) = read_models.analytics().await?;
    let mut summary = totals.summary(query.since, query.until, top);
    summary.lag = lag;
    Ok(Json(summary))
}
