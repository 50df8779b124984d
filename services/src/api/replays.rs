//! `/api/replays`: start a replay of read models and watch its progress (analysts and
//! operators). The replay runs in the web process that took the request; its progress is in
//! the view store, so any web process answers for it.

use std::sync::Arc;

use axum::Json;
use axum::Router;
use axum::extract::{Path, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use projections::Projection;
use serde::Deserialize;
use utoipa::ToSchema;
use uuid::Uuid;

use super::auth::{Caller, Role};
use super::error::{ApiError, Problem};
use super::{ApiJson, AppState};
use crate::replays::{ReplayStatus, Replays};

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/api/replays", post(start_replay))
        .route("/api/replays/{replay_id}", get(replay_status))
}

#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct StartReplay {
    /// `all` (the default: `{}` is a replay of every projection), or any of `orders`,
    /// `catalog`, `analytics`.
    #[schema(example = json!(["analytics"]))]
    #[serde(default)]
    pub projections: Vec<String>,
}

/// Rebuilds projections from the whole log into a new generation and switches readers to
/// it, in the background: answers at once with the replay's status and where to follow it.
/// One replay at a time per process.
#[utoipa::path(post, path = "/api/replays", tag = "analysts", request_body = StartReplay,
    responses(
        (status = 202, description = "Started; follow `Location`", body = ReplayStatus),
        (status = 401, body = Problem),
        (status = 403, description = "Not an analyst or operator", body = Problem),
        (status = 409, description = "A replay is running (`replay_running`)", body = Problem),
        (status = 422, description = "An unknown projection", body = Problem)),
    security(("bearer" = [])))]
pub async fn start_replay(
    State(replays): State<Arc<Replays>>,
    caller: Caller,
    ApiJson(body): ApiJson<StartReplay>,
) -> Result<Response, ApiError> {
    caller.require(&[Role::Analyst, Role::Operator])?;
    let mut projections = Vec::new();
    for (i, name) in body.projections.iter().enumerate() {
        match (name.as_str(), Projection::parse(name)) {
            ("all", _) => projections.extend(Projection::ALL),
            (_, Some(projection)) => projections.push(projection),
            (_, None) => {
                return Err(ApiError::field(
                    &format!("projections[{i}]"),
                    "must be all, orders, catalog or analytics",
                ));
            }
        }
    }
    if projections.is_empty() {
        projections = Projection::ALL.to_vec();
    }
    projections.sort();
    projections.dedup();
    let status = replays
        .start(projections)
        .await?
        .map_err(|running| ApiError::Conflict {
            code: "replay_running",
            detail: running.to_string(),
        })?;
    tracing::info!(replay_id = %status.replay_id, actor = %caller.actor(), "replay started");
    let location = format!("/api/replays/{}", status.replay_id);
    Ok((
        StatusCode::ACCEPTED,
        [(header::LOCATION, location)],
        Json(status),
    )
        .into_response())
}

/// A replay's progress: events folded of the total, events/s, and how it ended.
#[utoipa::path(get, path = "/api/replays/{replay_id}", tag = "analysts",
    params(("replay_id" = Uuid, Path)),
    responses(
        (status = 200, body = ReplayStatus),
        (status = 401, body = Problem),
        (status = 403, description = "Not an analyst or operator", body = Problem),
        (status = 404, body = Problem)),
    security(("bearer" = [])))]
pub async fn replay_status(
    State(replays): State<Arc<Replays>>,
    caller: Caller,
    Path(replay_id): Path<String>,
) -> Result<Json<ReplayStatus>, ApiError> {
    caller.require(&[Role::Analyst, Role::Operator])?;
    let replay_id = Uuid::parse_str(&replay_id).map_err(|_| ApiError::NotFound)?;
    let status = replays.status(replay_id).await?;
    status.map(Json).ok_or(ApiError::NotFound)
}
