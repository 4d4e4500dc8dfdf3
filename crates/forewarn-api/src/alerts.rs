//! Alerts: the list, one alert, and acknowledgement.

use axum::Json;
use axum::extract::State;
use forewarn_core::{AlertState, Severity};
use forewarn_store::{Acknowledgement, AlertQuery, DEFAULT_LIMIT, MAX_LIMIT, Order, StoreError};
use serde_json::{Value, json};

use crate::auth::{ReadAccess, WriteAccess};
use crate::bus::{AlertEvent, AlertEventKind};
use crate::error::ApiError;
use crate::params::{
    IdPath, QueryParams, channel_name, device_id, parse_bool, parse_rfc3339_or_epoch_ms,
};
use crate::schema;
use crate::state::AppState;

/// Longest acknowledgement note, in characters.
pub const MAX_NOTE_CHARS: usize = 4000;
/// Longest acknowledging user name, in characters.
pub const MAX_USER_CHARS: usize = 128;

/// Runs a store call on the blocking pool.
async fn blocking<T, F>(f: F) -> Result<T, ApiError>
where
    T: Send + 'static,
    F: FnOnce() -> Result<T, StoreError> + Send + 'static,
{
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| ApiError::internal(format!("store task failed: {e}")))?
        .map_err(ApiError::from)
}

/// The alert filters, shared by the list and the live stream.
fn alert_query(p: &QueryParams) -> Result<AlertQuery, ApiError> {
    p.only(&[
        "device",
        "state",
        "severity",
        "channel",
        "acknowledged",
        "from",
        "to",
        "sort",
        "limit",
        "cursor",
    ])?;
    // `acknowledged` as a state means: open, and acknowledged.
    let state = p.parse("state", |v| match v {
        "acknowledged" => Ok((Some(AlertState::Open), Some(true))),
        _ => AlertState::parse(v)
            .map(|s| (Some(s), None))
            .ok_or_else(|| format!("must be `open`, `resolved` or `acknowledged`, got {v:?}")),
    })?;
    let (state, ack_from_state) = state.unwrap_or((None, None));
    let acknowledged = p.parse("acknowledged", parse_bool)?;
    if let (Some(a), Some(b)) = (ack_from_state, acknowledged)
        && a != b
    {
        return Err(ApiError::bad_parameter(
            "acknowledged",
            "`acknowledged=false` contradicts `state=acknowledged`",
        ));
    }
    let q = AlertQuery {
        device: p.parse("device", device_id)?,
        state,
        severity: p.parse("severity", |v| {
            Severity::parse(v).ok_or_else(|| format!("must be `warning` or `critical`, got {v:?}"))
        })?,
        channel: p.parse("channel", channel_name)?,
        acknowledged: ack_from_state.or(acknowledged),
        from: p.parse("from", parse_rfc3339_or_epoch_ms)?,
        to: p.parse("to", parse_rfc3339_or_epoch_ms)?,
        limit: p.limit(DEFAULT_LIMIT, MAX_LIMIT)?,
        cursor: p.get("cursor")?.map(str::to_owned),
        order: p
            .parse("sort", |v| match v {
                "-opened_at" => Ok(Order::NewestFirst),
                "opened_at" => Ok(Order::OldestFirst),
                _ => Err(format!(
                    "must be `-opened_at` (newest first, the default) or `opened_at`, got {v:?}"
                )),
            })?
            .unwrap_or_default(),
    };
    if let (Some(from), Some(to)) = (q.from, q.to)
        && from > to
    {
        return Err(ApiError::bad_parameter(
            "from",
            "`from` must not be later than `to`",
        ));
    }
    Ok(q)
}

/// Alerts matching the filters, one page at a time.
#[utoipa::path(get, path = "/api/v1/alerts", tag = "alerts",
    params(
        ("device" = Option<String>, Query, description = "Only this device's alerts"),
        ("state" = Option<String>, Query, description = "`open`, `resolved`, or `acknowledged` (open and acknowledged)"),
        ("severity" = Option<String>, Query, description = "`warning` or `critical`"),
        ("channel" = Option<String>, Query, description = "Only alerts whose contributors name this channel"),
        ("acknowledged" = Option<bool>, Query, description = "`true` or `false`"),
        ("from" = Option<String>, Query, description = "Opened at or after: RFC 3339 or epoch ms"),
        ("to" = Option<String>, Query, description = "Opened before: RFC 3339 or epoch ms"),
        ("sort" = Option<String>, Query, description = "`-opened_at` (newest first, default) or `opened_at`"),
        ("limit" = Option<usize>, Query, description = "1..=1000, default 100"),
        ("cursor" = Option<String>, Query, description = "`next_cursor` of the previous page"),
    ),
    responses((status = 200, body = schema::AlertPageDoc), (status = 400, description = "A bad parameter, named in `error.parameter`", body = schema::ErrorDoc), (status = 401, description = "Missing or wrong bearer token (only with http.read_requires_token)", body = schema::ErrorDoc)),
    security((), ("bearer" = [])))]
pub(crate) async fn list_alerts(
    State(s): State<AppState>,
    _: ReadAccess,
    params: QueryParams,
) -> Result<Json<Value>, ApiError> {
    let q = alert_query(&params)?;
    let store = s.store.clone();
    let page = blocking(move || store.list(&q)).await?;
    Ok(Json(
        json!({"alerts": page.alerts, "next_cursor": page.next_cursor}),
    ))
}

/// One alert.
#[utoipa::path(get, path = "/api/v1/alerts/{id}", tag = "alerts",
    params(("id" = String, Path, description = "Alert id")),
    responses((status = 200, body = schema::AlertDoc),
        (status = 404, description = "No such alert", body = schema::ErrorDoc), (status = 400, description = "A bad parameter, named in `error.parameter`", body = schema::ErrorDoc), (status = 401, description = "Missing or wrong bearer token (only with http.read_requires_token)", body = schema::ErrorDoc)),
    security((), ("bearer" = [])))]
pub(crate) async fn get_alert(
    State(s): State<AppState>,
    _: ReadAccess,
    IdPath(id): IdPath,
    params: QueryParams,
) -> Result<Json<Value>, ApiError> {
    params.only(&[])?;
    let store = s.store.clone();
    let key = id.clone();
    match blocking(move || store.get(&key)).await? {
        Some(alert) => Ok(Json(json!(alert))),
        None => Err(ApiError::NotFound { kind: "alert", id }),
    }
}

/// Body of `POST /api/v1/alerts/{id}/ack`.
fn ack_body(body: &[u8]) -> Result<(String, String), ApiError> {
    let bad = |field: &str, msg: String| ApiError::bad_parameter(field, msg);
    let v: Value = serde_json::from_slice(body).map_err(|e| {
        bad(
            "body",
            format!(
                "`body` must be a JSON object like {{\"user\": \"ana\", \"note\": \"...\"}}: {e}"
            ),
        )
    })?;
    let Value::Object(map) = v else {
        return Err(bad("body", "`body` must be a JSON object".into()));
    };
    if let Some(k) = map.keys().find(|k| !["user", "note"].contains(&k.as_str())) {
        return Err(bad(
            k,
            format!("unknown field `{k}`; expected one of: user, note"),
        ));
    }
    let user = match map.get("user") {
        Some(Value::String(u))
            if !u.trim().is_empty()
                && u.chars().count() <= MAX_USER_CHARS
                && !u.chars().any(char::is_control) =>
        {
            u.trim().to_owned()
        }
        _ => {
            return Err(bad(
                "user",
                format!(
                    "`user` must be a non-empty string of at most {MAX_USER_CHARS} characters \
                     without control characters"
                ),
            ));
        }
    };
    let note = match map.get("note") {
        None | Some(Value::Null) => String::new(),
        Some(Value::String(n)) if n.chars().count() <= MAX_NOTE_CHARS => n.clone(),
        _ => {
            return Err(bad(
                "note",
                format!("`note` must be a string of at most {MAX_NOTE_CHARS} characters"),
            ));
        }
    };
    Ok((user, note))
}

/// Acknowledge an alert (open or resolved) with a user and a note. A later
/// acknowledgement replaces an earlier one. Live-stream clients get an
/// `acknowledged` event.
#[utoipa::path(post, path = "/api/v1/alerts/{id}/ack", tag = "alerts",
    params(("id" = String, Path, description = "Alert id")),
    request_body = schema::AckRequestDoc,
    responses((status = 200, description = "The alert after the acknowledgement", body = schema::AlertDoc),
        (status = 400, description = "A bad body field, named in `error.parameter`", body = schema::ErrorDoc),
        (status = 401, description = "Missing or wrong bearer token", body = schema::ErrorDoc),
        (status = 403, description = "No tokens configured: mutations are disabled", body = schema::ErrorDoc),
        (status = 404, description = "No such alert", body = schema::ErrorDoc)),
    security(("bearer" = [])))]
pub(crate) async fn ack_alert(
    State(s): State<AppState>,
    _: WriteAccess,
    IdPath(id): IdPath,
    params: QueryParams,
    body: axum::body::Bytes,
) -> Result<Json<Value>, ApiError> {
    params.only(&[])?;
    let (user, note) = ack_body(&body)?;
    let ack = Acknowledgement {
        at: chrono::Utc::now().timestamp_millis(),
        by: user,
        note,
    };
    let store = s.store.clone();
    let key = id.clone();
    let ack2 = ack.clone();
    let Some(record) = blocking(move || store.acknowledge(&key, &ack2)).await? else {
        return Err(ApiError::NotFound { kind: "alert", id });
    };
    tracing::info!(
        alert_id = %record.id,
        device = %record.device,
        user = %ack.by,
        note = %ack.note,
        "alert acknowledged"
    );
    let body = json!(record);
    s.bus.publish(AlertEvent {
        kind: AlertEventKind::Acknowledged,
        alert: record,
    });
    Ok(Json(body))
}
