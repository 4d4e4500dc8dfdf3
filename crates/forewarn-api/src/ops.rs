//! Operations: metrics, liveness and readiness.

use axum::Json;
use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::Response;
use serde_json::{Value, json};

use crate::schema;
use crate::state::AppState;

/// Content type of `/metrics`.
pub const METRICS_CONTENT_TYPE: &str = forewarn_telemetry::metrics::CONTENT_TYPE;

/// Prometheus text exposition of every `forewarn_*` metric.
#[utoipa::path(get, path = "/metrics", tag = "operations",
    responses((status = 200, description = "Prometheus text format 0.0.4", content_type = "text/plain", body = String)))]
pub(crate) async fn metrics_text(State(s): State<AppState>) -> Response {
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
pub(crate) async fn livez() -> Json<Value> {
    Json(json!({"status": "ok"}))
}

/// Readiness: 200 when a model is loaded, partitions are assigned, the
/// broker is reachable and the instance is not shutting down; else 503.
#[utoipa::path(get, path = "/readyz", tag = "operations",
    responses((status = 200, body = schema::ReadinessDoc),
        (status = 503, description = "Not ready; `reasons` says why", body = schema::ReadinessDoc)))]
pub(crate) async fn readyz(State(s): State<AppState>) -> (StatusCode, Json<Value>) {
    let report = s.health.readiness_report();
    let status = if report["ready"] == json!(true) {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, Json(report))
}
