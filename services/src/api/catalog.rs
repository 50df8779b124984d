//! `/api/catalog`: what can be ordered, and restocking.

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use domain::EventMetadata;
use domain::inventory::MAX_RESTOCK;
use domain::values::{FieldError, Sku};
use std::sync::Arc;

use commands::Commands;
use projections::{CatalogItem, ReadModels};
use serde::Serialize;
use utoipa::ToSchema;
use uuid::Uuid;

use super::auth::{Caller, Role};
use super::error::{ApiError, Problem};
use super::{ApiJson, AppState};

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/api/catalog", get(catalog))
        .route("/api/catalog/{sku}/restock", post(restock))
}

/// The catalog, by SKU, with what is still available. No token needed.
#[utoipa::path(get, path = "/api/catalog", tag = "catalog",
    responses((status = 200, body = [CatalogItem])))]
pub async fn catalog(
    State(read_models): State<ReadModels>,
) -> Result<Json<Vec<CatalogItem>>, ApiError> {
    Ok(Json(read_models.catalog().await?))
}

/// The body of a restock (documentation; the handler reads the JSON leniently).
#[derive(ToSchema)]
#[allow(dead_code)]
pub struct RestockBody {
    /// (At most `MAX_RESTOCK`, which the document carries.)
    #[schema(minimum = 1, example = 20)]
    quantity: u32,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Restocked {
    pub sku: String,
    /// The SKU's inventory stream version after the restock.
    pub version: u64,
}

/// Add stock to a SKU (operator).
#[utoipa::path(post, path = "/api/catalog/{sku}/restock", tag = "operations",
    params(("sku" = String, Path, pattern = "^[A-Z][A-Z0-9-]{1,31}$")), request_body = RestockBody,
    responses((status = 202, body = Restocked), (status = 403, body = Problem),
        (status = 404, body = Problem), (status = 422, body = Problem)),
    security(("bearer" = [])))]
pub async fn restock(
    State(commands): State<Arc<Commands>>,
    caller: Caller,
    Path(sku): Path<String>,
    headers: HeaderMap,
    ApiJson(body): ApiJson<serde_json::Value>,
) -> Result<Response, ApiError> {
    caller.require(&[Role::Operator])?;
    let sku = Sku::parse(&sku).map_err(|_| ApiError::NotFound)?;
    let mut errors = Vec::new();
    if let Some(fields) = body.as_object() {
        super::body::unknown_fields(fields, &["quantity"], "", &mut errors);
    }
    let quantity = body
        .get("quantity")
        .and_then(super::body::whole_number)
        .and_then(|q| u32::try_from(q).ok())
        .filter(|q| (1..=MAX_RESTOCK).contains(q));
    if quantity.is_none() {
        errors.push(FieldError::new(
            "quantity",
            format!("must be between 1 and {MAX_RESTOCK}"),
        ));
    }
    let Some(quantity) = quantity.filter(|_| errors.is_empty()) else {
        return Err(ApiError::Validation(errors));
    };
    let metadata = EventMetadata {
        correlation_id: Uuid::now_v7(),
        actor: caller.actor(),
        traceparent: super::trace_context(&headers),
        ..Default::default()
    };
    let handled = commands.restock(&sku, quantity, &metadata).await?;
    let body = Restocked {
        sku: sku.to_string(),
        version: handled.version,
    };
    Ok((StatusCode::ACCEPTED, Json(body)).into_response())
}
