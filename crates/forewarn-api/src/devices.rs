//! Devices: what the pipeline shows on the [`DeviceBoard`](crate::board::DeviceBoard).

use axum::Json;
use axum::extract::State;
use forewarn_store::{DEFAULT_LIMIT, MAX_LIMIT};
use serde_json::{Value, json};

use crate::auth::ReadAccess;
use crate::board::SCORE_HISTORY;
use crate::error::ApiError;
use crate::params::{IdPath, QueryParams, device_id};
use crate::schema;
use crate::state::AppState;

/// Devices this instance tracks, by id.
#[utoipa::path(get, path = "/api/v1/devices", tag = "devices",
    params(
        ("limit" = Option<usize>, Query, description = "1..=1000, default 100"),
        ("after" = Option<String>, Query, description = "`next_after` of the previous page"),
    ),
    responses((status = 200, body = schema::DevicePageDoc), (status = 400, description = "A bad parameter, named in `error.parameter`", body = schema::ErrorDoc), (status = 401, description = "Missing or wrong bearer token (only with http.read_requires_token)", body = schema::ErrorDoc)),
    security((), ("bearer" = [])))]
pub(crate) async fn list_devices(
    State(s): State<AppState>,
    _: ReadAccess,
    p: QueryParams,
) -> Result<Json<Value>, ApiError> {
    p.only(&["limit", "after"])?;
    let limit = p.limit(DEFAULT_LIMIT, MAX_LIMIT)?;
    let after = p.parse("after", device_id)?;
    // One extra tells whether another page exists.
    let mut devices = s.devices.list(after.as_deref(), limit + 1);
    let next_after = if devices.len() > limit {
        devices.truncate(limit);
        devices.last().map(|d| d.device.clone())
    } else {
        None
    };
    Ok(Json(json!({
        "devices": devices,
        "next_after": next_after,
        "total": s.devices.len(),
    })))
}

/// One device: model, window fill, last score and threshold, last reading
/// time, open alert and per-channel error shares.
#[utoipa::path(get, path = "/api/v1/devices/{id}", tag = "devices",
    params(("id" = String, Path, description = "Device id")),
    responses((status = 200, body = schema::DeviceDoc),
        (status = 404, description = "Not tracked here", body = schema::ErrorDoc), (status = 400, description = "A bad parameter, named in `error.parameter`", body = schema::ErrorDoc), (status = 401, description = "Missing or wrong bearer token (only with http.read_requires_token)", body = schema::ErrorDoc)),
    security((), ("bearer" = [])))]
pub(crate) async fn get_device(
    State(s): State<AppState>,
    _: ReadAccess,
    IdPath(id): IdPath,
    params: QueryParams,
) -> Result<Json<Value>, ApiError> {
    params.only(&[])?;
    match s.devices.get(&id) {
        Some(d) => Ok(Json(json!(d))),
        None => Err(ApiError::NotFound { kind: "device", id }),
    }
}

/// The device's recent scores and thresholds (a bounded ring per device).
#[utoipa::path(get, path = "/api/v1/devices/{id}/scores", tag = "devices",
    params(("id" = String, Path, description = "Device id"),
        ("limit" = Option<usize>, Query, description = "Newest points to return, 1..=128, default 128")),
    responses((status = 200, body = schema::DeviceScoresDoc),
        (status = 404, description = "Not tracked here", body = schema::ErrorDoc), (status = 400, description = "A bad parameter, named in `error.parameter`", body = schema::ErrorDoc), (status = 401, description = "Missing or wrong bearer token (only with http.read_requires_token)", body = schema::ErrorDoc)),
    security((), ("bearer" = [])))]
pub(crate) async fn device_scores(
    State(s): State<AppState>,
    _: ReadAccess,
    IdPath(id): IdPath,
    p: QueryParams,
) -> Result<Json<Value>, ApiError> {
    p.only(&["limit"])?;
    let limit = p.limit(SCORE_HISTORY, SCORE_HISTORY)?;
    let Some(dev) = s.devices.get(&id) else {
        return Err(ApiError::NotFound { kind: "device", id });
    };
    let mut points = s.devices.scores(&id).unwrap_or_default();
    points.drain(..points.len().saturating_sub(limit));
    Ok(Json(json!({
        "device": id,
        "threshold": dev.threshold,
        "open_alert": dev.open_alert,
        "points": points,
    })))
}
