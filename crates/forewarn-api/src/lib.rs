//! Forewarn's HTTP API (axum).
//!
//! | route | answer |
//! | --- | --- |
//! | `GET /api/v1/alerts?device=&state=&severity=&from=&to=&limit=&cursor=` | `{"alerts": [...], "next_cursor": ...}`, newest first |
//! | `GET /api/v1/alerts/{id}` | one alert, or 404 |
//! | `GET /api/v1/devices?limit=&after=` | `{"devices": [...], "next_after": ..., "total": n}`, by id |
//! | `GET /api/v1/devices/{id}` | one device snapshot, or 404 |
//! | `GET /api/v1/models` | `{"models": [...]}` |
//! | `GET /metrics` | Prometheus text exposition |
//! | `GET /livez` | 200 `{"status": "ok"}` |
//! | `GET /readyz` | 200 when ready, else 503; both with the readiness report |
//!
//! Every error is JSON, `{"error": {"code", "message", "parameter"?}}`
//! (see [`ApiError`]), including unknown routes, wrong methods, timeouts
//! and oversized bodies. Store calls run on the blocking pool.

mod error;
mod params;

use std::sync::{Arc, PoisonError, RwLock};
use std::time::{Duration, Instant};

use axum::Json;
use axum::Router;
use axum::body::Body;
use axum::extract::{MatchedPath, Request, State};
use axum::http::{HeaderValue, StatusCode, Uri, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use forewarn_core::reading::MAX_DEVICE_ID_LEN;
use forewarn_core::{AlertState, Severity};
use forewarn_store::{AlertQuery, AlertStore, DEFAULT_LIMIT, MAX_LIMIT, StoreError};
use forewarn_telemetry::{DeviceBoard, Health, Metrics, ModelInfo};
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::limit::RequestBodyLimitLayer;
use tower_http::timeout::TimeoutLayer;
use tower_http::trace::TraceLayer;

pub use error::ApiError;
pub use params::{IdPath, QueryParams, parse_time};

/// Longest a request may take before it is answered with 503 `timeout`.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// Largest accepted request body (the API only reads; bodies are noise).
pub const BODY_LIMIT: usize = 64 * 1024;
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
        .route("/api/v1/alerts", get(list_alerts))
        .route("/api/v1/alerts/{id}", get(get_alert))
        .route("/api/v1/devices", get(list_devices))
        .route("/api/v1/devices/{id}", get(get_device))
        .route("/api/v1/models", get(list_models))
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
        .layer(TraceLayer::new_for_http())
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
    if let Ok(addr) = listener.local_addr() {
        tracing::debug!(%addr, "HTTP API listening");
    }
    axum::serve(listener, router(state))
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

fn alert_query(p: &QueryParams) -> Result<AlertQuery, ApiError> {
    p.only(&[
        "device", "state", "severity", "from", "to", "limit", "cursor",
    ])?;
    let q = AlertQuery {
        device: p.parse("device", device_id)?,
        state: p.parse("state", |v| {
            AlertState::parse(v).ok_or_else(|| format!("must be `open` or `resolved`, got {v:?}"))
        })?,
        severity: p.parse("severity", |v| {
            Severity::parse(v).ok_or_else(|| format!("must be `warning` or `critical`, got {v:?}"))
        })?,
        from: p.parse("from", parse_time)?,
        to: p.parse("to", parse_time)?,
        limit: p.limit(DEFAULT_LIMIT, MAX_LIMIT)?,
        cursor: p.get("cursor")?.map(str::to_owned),
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

async fn list_alerts(
    State(s): State<AppState>,
    params: QueryParams,
) -> Result<Json<Value>, ApiError> {
    let q = alert_query(&params)?;
    let store = s.store.clone();
    let page = blocking(move || store.list(&q)).await?;
    Ok(Json(
        json!({"alerts": page.alerts, "next_cursor": page.next_cursor}),
    ))
}

async fn get_alert(
    State(s): State<AppState>,
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

async fn list_devices(State(s): State<AppState>, p: QueryParams) -> Result<Json<Value>, ApiError> {
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

async fn get_device(
    State(s): State<AppState>,
    IdPath(id): IdPath,
    params: QueryParams,
) -> Result<Json<Value>, ApiError> {
    params.only(&[])?;
    match s.devices.get(&id) {
        Some(d) => Ok(Json(json!(d))),
        None => Err(ApiError::NotFound { kind: "device", id }),
    }
}

async fn list_models(State(s): State<AppState>) -> Json<Value> {
    let model = s
        .model
        .read()
        .unwrap_or_else(PoisonError::into_inner)
        .clone();
    Json(json!({"models": model.into_iter().collect::<Vec<_>>()}))
}

async fn metrics_text(State(s): State<AppState>) -> Response {
    // Scrape-time values, so they are right whoever wired the service.
    s.health.sync_metrics(&s.metrics);
    s.metrics
        .devices_tracked
        .set(i64::try_from(s.devices.len()).unwrap_or(i64::MAX));
    let mut resp = Response::new(Body::from(s.metrics.render_bytes()));
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(METRICS_CONTENT_TYPE),
    );
    resp
}

async fn livez() -> Json<Value> {
    Json(json!({"status": "ok"}))
}

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
