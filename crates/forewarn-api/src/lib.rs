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
//!
//! Files import in one direction: handlers (`alerts`, `devices`, `models`,
//! `ops`, `stream`) use `state`, `auth`, `params`, `error` and the `schema`
//! types of their documentation; `openapi` assembles the document from the
//! handlers; this file only wires the router. `tls` serves that router
//! over HTTPS.

mod alerts;
pub mod auth;
pub mod board;
pub mod bus;
mod console;
mod devices;
mod error;
mod models;
pub mod openapi;
mod ops;
mod params;
pub mod schema;
mod state;
mod stream;
pub mod tls;
pub mod webhook;

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Body;
use axum::extract::{MatchedPath, Request, State};
use axum::http::{StatusCode, Uri, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use forewarn_telemetry::Metrics;
use tokio_util::sync::CancellationToken;
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::limit::RequestBodyLimitLayer;
use tower_http::timeout::TimeoutLayer;
use tower_http::trace::TraceLayer;

pub use alerts::{MAX_NOTE_CHARS, MAX_USER_CHARS};
pub use auth::Auth;
pub use board::{DeviceBoard, DeviceSnapshot, ModelGrid, ModelInfo, ScorePoint};
pub use bus::{AlertBus, AlertEvent, AlertEventKind};
pub use error::ApiError;
pub use ops::METRICS_CONTENT_TYPE;
pub use params::{IdPath, QueryParams, parse_rfc3339_or_epoch_ms};
pub use state::{AppState, ModelReloader};

/// Longest a request may take before it is answered with 503 `timeout`.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// Largest accepted request body (acknowledgement notes are the largest).
pub const BODY_LIMIT: usize = 64 * 1024;

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
        .route("/api/v1/alerts", get(alerts::list_alerts))
        .route("/api/v1/alerts/stream", get(stream::alerts))
        .route("/api/v1/alerts/{id}", get(alerts::get_alert))
        .route("/api/v1/alerts/{id}/ack", post(alerts::ack_alert))
        .route("/api/v1/devices", get(devices::list_devices))
        .route("/api/v1/devices/{id}", get(devices::get_device))
        .route("/api/v1/devices/{id}/scores", get(devices::device_scores))
        .route("/api/v1/models", get(models::list_models))
        .route("/api/v1/models/reload", post(models::reload_model))
        .route("/metrics", get(ops::metrics_text))
        .route("/livez", get(ops::livez))
        .route("/readyz", get(ops::readyz))
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

#[cfg(test)]
mod tests;
