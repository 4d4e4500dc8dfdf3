//! Forewarn's HTTP API (axum).
//!
//! | route | answer |
//! | --- | --- |
//! | `GET /api/v1/alerts?device=&state=&severity=&channel=&acknowledged=&from=&to=&sort=&limit=&cursor=` | `{"alerts": [...], "next_cursor": ...}` |
//! | `GET /api/v1/alerts/stream?device=` | Server-Sent Events: `opened`, `resolved`, `acknowledged`, `lagged` |
//! | `GET /api/v1/alerts/{id}` | one alert, or 404 |
//! | `POST /api/v1/alerts/{id}/ack` | acknowledge: body `{"user": "...", "note": "..."}`; token |
//! | `GET /api/v1/devices?limit=&after=` | `{"devices": [...], "next_after": ..., "total": n}`, by id |
//! | `GET /api/v1/devices/{id}` | one device snapshot, or 404 |
//! | `GET /api/v1/devices/{id}/scores` | the device's recent scores and thresholds |
//! | `GET /api/v1/models` | `{"models": [...]}` |
//! | `POST /api/v1/models/reload` | validate and swap in the model on disk; token |
//! | `GET /api/v1/openapi.json` | the OpenAPI document |
//! | `GET /` | the alert console (one embedded HTML page) |
//! | `GET /metrics` | Prometheus text exposition |
//! | `GET /livez` | 200 `{"status": "ok"}` |
//! | `GET /readyz` | 200 when ready, else 503; both with the readiness report |
//!
//! Authorisation: see [`auth`].
//!
//! Every error is JSON, `{"error": {"code", "message", "parameter"?}}`
//! (see [`ApiError`]), including unknown routes, wrong methods, timeouts
//! and oversized bodies. Store calls run on the blocking pool.

pub mod auth;
mod console;
mod error;
pub mod openapi;
mod params;
mod stream;
pub mod webhook;

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, PoisonError, RwLock};
use std::time::{Duration, Instant};

use axum::Json;
use axum::Router;
use axum::body::Body;
use axum::extract::{MatchedPath, Request, State};
use axum::http::{HeaderValue, StatusCode, Uri, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use forewarn_core::reading::MAX_DEVICE_ID_LEN;
use forewarn_core::{AlertState, Severity};
use forewarn_store::{
    Acknowledgement, AlertQuery, AlertStore, DEFAULT_LIMIT, MAX_LIMIT, Order, StoreError,
};
use forewarn_telemetry::{
    AlertBus, AlertEvent, AlertEventKind, DeviceBoard, Health, Metrics, ModelInfo,
};
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::limit::RequestBodyLimitLayer;
use tower_http::timeout::TimeoutLayer;
use tower_http::trace::TraceLayer;

pub use auth::Auth;
use auth::{ReadAccess, WriteAccess};
pub use error::ApiError;
pub use params::{IdPath, QueryParams, parse_time};

/// Longest a request may take before it is answered with 503 `timeout`.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// Largest accepted request body (acknowledgement notes are the largest).
pub const BODY_LIMIT: usize = 64 * 1024;
/// Longest acknowledgement note, in characters.
pub const MAX_NOTE_CHARS: usize = 4000;
/// Longest acknowledging user name, in characters.
pub const MAX_USER_CHARS: usize = 128;

/// Loads, validates and swaps in the model on disk; answers the new
/// model's info, or why it was rejected (the old model then keeps running).
pub type ModelReloader =
    Arc<dyn Fn() -> Pin<Box<dyn Future<Output = Result<ModelInfo, String>> + Send>> + Send + Sync>;
/// Content type of `/metrics`.
pub const METRICS_CONTENT_TYPE: &str = forewarn_telemetry::metrics::CONTENT_TYPE;

/// What the handlers share. Cheap to clone.
#[derive(Clone)]
pub struct AppState {
    pub store: Arc<AlertStore>,
    pub devices: Arc<DeviceBoard>,
    pub health: Arc<Health>,
    pub metrics: Arc<Metrics>,
    pub model: Arc<RwLock<Option<ModelInfo>>>,
    /// Alert events for the live stream (and where acknowledgements go).
    pub bus: AlertBus,
    pub auth: Arc<Auth>,
    /// `POST /api/v1/models/reload`; absent: the endpoint answers 503.
    pub reloader: Option<ModelReloader>,
    /// Devices that get per-device series on `/metrics`.
    pub device_allow_list: Arc<Vec<String>>,
    /// Cancelled at shutdown: ends live streams so the server can stop.
    pub shutdown: CancellationToken,
}

impl AppState {
    /// A state with an empty bus, no tokens, no reloader and no per-device
    /// series; set the other fields directly.
    pub fn new(
        store: Arc<AlertStore>,
        devices: Arc<DeviceBoard>,
        health: Arc<Health>,
        metrics: Arc<Metrics>,
        model: Arc<RwLock<Option<ModelInfo>>>,
    ) -> Self {
        Self {
            store,
            devices,
            health,
            metrics,
            model,
            bus: AlertBus::default(),
            auth: Arc::new(Auth::default()),
            reloader: None,
            device_allow_list: Arc::new(Vec::new()),
            shutdown: CancellationToken::new(),
        }
    }
}

impl std::fmt::Debug for AppState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AppState").finish_non_exhaustive()
    }
}

/// Limits of [`router_with`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ApiConfig {
    pub request_timeout: Duration,
    pub body_limit: usize,
}

impl Default for ApiConfig {
    fn default() -> Self {
        Self {
            request_timeout: REQUEST_TIMEOUT,
            body_limit: BODY_LIMIT,
        }
    }
}

/// The API with the default [`ApiConfig`].
pub fn router(state: AppState) -> Router {
    router_with(state, ApiConfig::default())
}

pub fn router_with(state: AppState, config: ApiConfig) -> Router {
    let metrics = state.metrics.clone();
    let routes = Router::new()
        .route("/", get(console::page))
        .route("/api/v1/openapi.json", get(openapi::document))
        .route("/api/v1/alerts", get(list_alerts))
        .route("/api/v1/alerts/stream", get(stream::alerts))
        .route("/api/v1/alerts/{id}", get(get_alert))
        .route("/api/v1/alerts/{id}/ack", post(ack_alert))
        .route("/api/v1/devices", get(list_devices))
        .route("/api/v1/devices/{id}", get(get_device))
        .route("/api/v1/devices/{id}/scores", get(device_scores))
        .route("/api/v1/models", get(list_models))
        .route("/api/v1/models/reload", post(reload_model))
        .route("/metrics", get(metrics_text))
        .route("/livez", get(livez))
        .route("/readyz", get(readyz))
        .fallback(route_not_found)
        .with_state(state);
    with_layers(routes, config, metrics)
}

/// The middleware every route gets. `Router::layer` wraps each route (and
/// the fallback) separately, so every layer sees the matched route.
/// Innermost first.
fn with_layers(routes: Router, config: ApiConfig, metrics: Arc<Metrics>) -> Router {
    routes
        .layer(RequestBodyLimitLayer::new(config.body_limit))
        .layer(TimeoutLayer::with_status_code(
            StatusCode::SERVICE_UNAVAILABLE,
            config.request_timeout,
        ))
        .layer(CatchPanicLayer::custom(
            |_: Box<dyn std::any::Any + Send>| {
                ApiError::internal("handler panicked").into_response()
            },
        ))
        // Request spans and responses at DEBUG; failures are not logged
        // here (a 503 from /readyz is an answer, not an error): internal
        // errors are logged once by `ApiError`.
        .layer(
            TraceLayer::new_for_http()
                // The path only: a query string may carry `access_token`.
                .make_span_with(|req: &Request<Body>| {
                    tracing::debug_span!("request", method = %req.method(), path = %req.uri().path())
                })
                .on_failure(()),
        )
        .layer(middleware::from_fn_with_state(metrics, track_request))
        .layer(middleware::map_response(json_errors))
}

/// Serves `state`'s API on `listener` until `shutdown` is cancelled, then
/// stops accepting and lets in-flight requests finish.
pub async fn serve(
    listener: tokio::net::TcpListener,
    state: AppState,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    serve_with(listener, state, ApiConfig::default(), shutdown).await
}

/// [`serve`] with explicit limits.
pub async fn serve_with(
    listener: tokio::net::TcpListener,
    mut state: AppState,
    config: ApiConfig,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    state.shutdown = shutdown.clone();
    if let Ok(addr) = listener.local_addr() {
        tracing::debug!(%addr, "HTTP API listening");
    }
    axum::serve(listener, router_with(state, config))
        .with_graceful_shutdown(shutdown.cancelled_owned())
        .await
}

/// Counts and times each request under its route template.
async fn track_request(State(metrics): State<Arc<Metrics>>, req: Request, next: Next) -> Response {
    let start = Instant::now();
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_owned(), |p| p.as_str().to_owned());
    let method = req.method().clone();
    let resp = next.run(req).await;
    metrics.observe_http(
        &route,
        method.as_str(),
        resp.status().as_u16(),
        start.elapsed().as_secs_f64(),
    );
    resp
}

/// Turns the bare or plain-text error responses that middleware and axum
/// produce (timeout, body limit, wrong method) into the API's JSON shape,
/// keeping their status and headers (e.g. `Allow`).
async fn json_errors(resp: Response) -> Response {
    let status = resp.status();
    let is_json = resp
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    if !(status.is_client_error() || status.is_server_error()) || is_json {
        return resp;
    }
    let err = match status {
        StatusCode::METHOD_NOT_ALLOWED => ApiError::MethodNotAllowed,
        StatusCode::PAYLOAD_TOO_LARGE => ApiError::PayloadTooLarge,
        StatusCode::SERVICE_UNAVAILABLE | StatusCode::REQUEST_TIMEOUT => ApiError::Timeout,
        StatusCode::NOT_FOUND => ApiError::RouteNotFound("this path".into()),
        StatusCode::BAD_REQUEST => ApiError::BadRequest("bad request".into()),
        _ => ApiError::internal(format!("unexpected bare {status} response")),
    };
    let (mut parts, _) = resp.into_parts();
    let (new_parts, body) = err.into_response().into_parts();
    parts.headers.remove(header::CONTENT_LENGTH);
    for (name, value) in &new_parts.headers {
        parts.headers.insert(name, value.clone());
    }
    Response::from_parts(parts, body)
}

async fn route_not_found(uri: Uri) -> ApiError {
    ApiError::RouteNotFound(uri.path().to_owned())
}

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

fn device_id(v: &str) -> Result<String, String> {
    if v.chars().count() > MAX_DEVICE_ID_LEN || v.chars().any(char::is_control) {
        Err(format!(
            "must be a device id of at most {MAX_DEVICE_ID_LEN} characters without control characters"
        ))
    } else {
        Ok(v.to_owned())
    }
}

fn channel_name(v: &str) -> Result<String, String> {
    if v.chars().count() > 256 || v.chars().any(char::is_control) {
        Err("must be a channel name of at most 256 characters without control characters".into())
    } else {
        Ok(v.to_owned())
    }
}

fn parse_bool(v: &str) -> Result<bool, String> {
    match v {
        "true" => Ok(true),
        "false" => Ok(false),
        _ => Err(format!("must be `true` or `false`, got {v:?}")),
    }
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
        from: p.parse("from", parse_time)?,
        to: p.parse("to", parse_time)?,
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
    responses((status = 200, body = openapi::AlertPageDoc), (status = 400, description = "A bad parameter, named in `error.parameter`", body = openapi::ErrorDoc), (status = 401, description = "Missing or wrong bearer token (only with http.read_requires_token)", body = openapi::ErrorDoc)),
    security((), ("bearer" = [])))]
async fn list_alerts(
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
    responses((status = 200, body = openapi::AlertDoc),
        (status = 404, description = "No such alert", body = openapi::ErrorDoc), (status = 400, description = "A bad parameter, named in `error.parameter`", body = openapi::ErrorDoc), (status = 401, description = "Missing or wrong bearer token (only with http.read_requires_token)", body = openapi::ErrorDoc)),
    security((), ("bearer" = [])))]
async fn get_alert(
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

/// Devices this instance tracks, by id.
#[utoipa::path(get, path = "/api/v1/devices", tag = "devices",
    params(
        ("limit" = Option<usize>, Query, description = "1..=1000, default 100"),
        ("after" = Option<String>, Query, description = "`next_after` of the previous page"),
    ),
    responses((status = 200, body = openapi::DevicePageDoc), (status = 400, description = "A bad parameter, named in `error.parameter`", body = openapi::ErrorDoc), (status = 401, description = "Missing or wrong bearer token (only with http.read_requires_token)", body = openapi::ErrorDoc)),
    security((), ("bearer" = [])))]
async fn list_devices(
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
    responses((status = 200, body = openapi::DeviceDoc),
        (status = 404, description = "Not tracked here", body = openapi::ErrorDoc), (status = 400, description = "A bad parameter, named in `error.parameter`", body = openapi::ErrorDoc), (status = 401, description = "Missing or wrong bearer token (only with http.read_requires_token)", body = openapi::ErrorDoc)),
    security((), ("bearer" = [])))]
async fn get_device(
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
    responses((status = 200, body = openapi::DeviceScoresDoc),
        (status = 404, description = "Not tracked here", body = openapi::ErrorDoc), (status = 400, description = "A bad parameter, named in `error.parameter`", body = openapi::ErrorDoc), (status = 401, description = "Missing or wrong bearer token (only with http.read_requires_token)", body = openapi::ErrorDoc)),
    security((), ("bearer" = [])))]
async fn device_scores(
    State(s): State<AppState>,
    _: ReadAccess,
    IdPath(id): IdPath,
    p: QueryParams,
) -> Result<Json<Value>, ApiError> {
    p.only(&["limit"])?;
    let limit = p.limit(
        forewarn_telemetry::board::SCORE_HISTORY,
        forewarn_telemetry::board::SCORE_HISTORY,
    )?;
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
    request_body = openapi::AckRequestDoc,
    responses((status = 200, description = "The alert after the acknowledgement", body = openapi::AlertDoc),
        (status = 400, description = "A bad body field, named in `error.parameter`", body = openapi::ErrorDoc),
        (status = 401, description = "Missing or wrong bearer token", body = openapi::ErrorDoc),
        (status = 403, description = "No tokens configured: mutations are disabled", body = openapi::ErrorDoc),
        (status = 404, description = "No such alert", body = openapi::ErrorDoc)),
    security(("bearer" = [])))]
async fn ack_alert(
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

/// Loaded models with version, schema (channels) and threshold.
#[utoipa::path(get, path = "/api/v1/models", tag = "models",
    responses((status = 200, body = openapi::ModelListDoc), (status = 401, description = "Missing or wrong bearer token (only with http.read_requires_token)", body = openapi::ErrorDoc)),
    security((), ("bearer" = [])))]
async fn list_models(State(s): State<AppState>, _: ReadAccess) -> Json<Value> {
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
    responses((status = 200, body = openapi::ReloadResultDoc),
        (status = 401, description = "Missing or wrong bearer token", body = openapi::ErrorDoc),
        (status = 403, description = "No tokens configured: mutations are disabled", body = openapi::ErrorDoc),
        (status = 422, description = "The new model failed validation; the old one keeps running", body = openapi::ErrorDoc),
        (status = 503, description = "Reload not available in this instance", body = openapi::ErrorDoc)),
    security(("bearer" = [])))]
async fn reload_model(
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

/// Prometheus text exposition of every `forewarn_*` metric.
#[utoipa::path(get, path = "/metrics", tag = "operations",
    responses((status = 200, description = "Prometheus text format 0.0.4", content_type = "text/plain", body = String)))]
async fn metrics_text(State(s): State<AppState>) -> Response {
    // Scrape-time values, so they are right whoever wired the service.
    s.health.sync_metrics(&s.metrics);
    s.metrics
        .devices_tracked
        .set(i64::try_from(s.devices.len()).unwrap_or(i64::MAX));
    for id in s.device_allow_list.iter() {
        if let Some(d) = s.devices.get(id) {
            if let Some(score) = d.last_score {
                s.metrics.device_score.with_label_values(&[id]).set(score);
            }
            s.metrics
                .device_threshold
                .with_label_values(&[id])
                .set(d.threshold);
        }
    }
    let mut resp = Response::new(Body::from(s.metrics.render_bytes()));
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(METRICS_CONTENT_TYPE),
    );
    resp
}

/// Liveness: 200 while the process serves HTTP.
#[utoipa::path(get, path = "/livez", tag = "operations",
    responses((status = 200, description = "`{\"status\": \"ok\"}`")))]
async fn livez() -> Json<Value> {
    Json(json!({"status": "ok"}))
}

/// Readiness: 200 when a model is loaded, partitions are assigned, the
/// broker is reachable and the instance is not shutting down; else 503.
#[utoipa::path(get, path = "/readyz", tag = "operations",
    responses((status = 200, body = openapi::ReadinessDoc),
        (status = 503, description = "Not ready; `reasons` says why", body = openapi::ReadinessDoc)))]
async fn readyz(State(s): State<AppState>) -> (StatusCode, Json<Value>) {
    let report = s.health.readiness_report();
    let status = if report["ready"] == json!(true) {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, Json(report))
}

#[cfg(test)]
mod tests;
