//! Models: the loaded one, and hot reload.

use std::sync::PoisonError;

use axum::Json;
use axum::extract::State;
use serde_json::{Value, json};

use crate::auth::{ReadAccess, WriteAccess};
use crate::error::ApiError;
use crate::params::QueryParams;
use crate::schema;
use crate::state::AppState;

/// Loaded models with version, schema (channels) and threshold.
#[utoipa::path(get, path = "/api/v1/models", tag = "models",
    responses((status = 200, body = schema::ModelListDoc), (status = 401, description = "Missing or wrong bearer token (only with http.read_requires_token)", body = schema::ErrorDoc)),
    security((), ("bearer" = [])))]
pub(crate) async fn list_models(State(s): State<AppState>, _: ReadAccess) -> Json<Value> {
    let model = s
        .model
        .read()
        .unwrap_or_else(PoisonError::into_inner)
        .clone();
    Json(json!({"models": model.into_iter().collect::<Vec<_>>()}))
}

/// Load the model from its configured path, validate it, and swap it in
/// without stopping ingestion (also on SIGHUP). On failure the running
/// model is kept.
#[utoipa::path(post, path = "/api/v1/models/reload", tag = "models",
    responses((status = 200, body = schema::ReloadResultDoc),
        (status = 401, description = "Missing or wrong bearer token", body = schema::ErrorDoc),
        (status = 403, description = "No tokens configured: mutations are disabled", body = schema::ErrorDoc),
        (status = 422, description = "The new model failed validation; the old one keeps running", body = schema::ErrorDoc),
        (status = 503, description = "Reload not available in this instance", body = schema::ErrorDoc)),
    security(("bearer" = [])))]
pub(crate) async fn reload_model(
    State(s): State<AppState>,
    _: WriteAccess,
    params: QueryParams,
) -> Result<Json<Value>, ApiError> {
    params.only(&[])?;
    let Some(reload) = s.reloader.clone() else {
        return Err(ApiError::Unavailable(
            "model reload is not available in this instance".into(),
        ));
    };
    let previous = s
        .model
        .read()
        .unwrap_or_else(PoisonError::into_inner)
        .clone();
    match reload().await {
        Ok(info) => Ok(Json(
            json!({"reloaded": true, "model": info, "previous": previous}),
        )),
        Err(e) => Err(ApiError::ModelRejected(format!(
            "new model rejected, the running model is kept: {e}"
        ))),
    }
}
