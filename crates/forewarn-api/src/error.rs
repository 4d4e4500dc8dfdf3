//! The API's one error type and its one mapping to HTTP responses.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use forewarn_store::StoreError;
use serde_json::json;

/// Every way a request can fail. [`IntoResponse`] maps each variant to its
/// status and to the body
/// `{"error": {"code": "...", "message": "...", "parameter": "..."}}`
/// (`parameter` only for [`ApiError::BadParameter`]).
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// A query or path parameter is missing its format, out of range,
    /// duplicated or unknown.
    #[error("{message}")]
    BadParameter { parameter: String, message: String },
    /// The query string itself cannot be decoded.
    #[error("{0}")]
    BadRequest(String),
    #[error("{kind} {id:?} not found")]
    NotFound { kind: &'static str, id: String },
    #[error("no route for {0}")]
    RouteNotFound(String),
    #[error("method not allowed")]
    MethodNotAllowed,
    #[error("request body too large")]
    PayloadTooLarge,
    #[error("request timed out")]
    Timeout,
    /// No or a wrong bearer token (401, with `WWW-Authenticate: Bearer`).
    #[error("{0}")]
    Unauthorized(String),
    /// The endpoint is disabled by configuration.
    #[error("{0}")]
    Forbidden(String),
    /// A new model failed validation; the old one keeps running.
    #[error("{0}")]
    ModelRejected(String),
    /// A feature this instance was not started with.
    #[error("{0}")]
    Unavailable(String),
    /// Anything on our side. The detail is logged, never sent.
    #[error("internal server error")]
    Internal { detail: String },
}

impl ApiError {
    pub fn bad_parameter(parameter: &str, message: impl Into<String>) -> Self {
        ApiError::BadParameter {
            parameter: parameter.to_owned(),
            message: message.into(),
        }
    }

    pub fn internal(detail: impl Into<String>) -> Self {
        ApiError::Internal {
            detail: detail.into(),
        }
    }

    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::BadParameter { .. } | ApiError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ApiError::NotFound { .. } | ApiError::RouteNotFound(_) => StatusCode::NOT_FOUND,
            ApiError::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            ApiError::PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::Timeout => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            ApiError::Forbidden(_) => StatusCode::FORBIDDEN,
            ApiError::ModelRejected(_) => StatusCode::UNPROCESSABLE_ENTITY,
            ApiError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Internal { .. } => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// Stable machine-readable code.
    pub fn code(&self) -> &'static str {
        match self {
            ApiError::BadParameter { .. } => "bad_parameter",
            ApiError::BadRequest(_) => "bad_request",
            ApiError::NotFound { .. } | ApiError::RouteNotFound(_) => "not_found",
            ApiError::MethodNotAllowed => "method_not_allowed",
            ApiError::PayloadTooLarge => "payload_too_large",
            ApiError::Timeout => "timeout",
            ApiError::Unauthorized(_) => "unauthorized",
            ApiError::Forbidden(_) => "forbidden",
            ApiError::ModelRejected(_) => "model_rejected",
            ApiError::Unavailable(_) => "unavailable",
            ApiError::Internal { .. } => "internal",
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        if let ApiError::Internal { detail } = &self {
            tracing::error!(detail = %detail, "request failed");
        }
        let mut error = json!({"code": self.code(), "message": self.to_string()});
        if let ApiError::BadParameter { parameter, .. } = &self {
            error["parameter"] = json!(parameter);
        }
        let mut resp = (self.status(), Json(json!({ "error": error }))).into_response();
        if matches!(self, ApiError::Unauthorized(_)) {
            resp.headers_mut().insert(
                axum::http::header::WWW_AUTHENTICATE,
                axum::http::HeaderValue::from_static("Bearer"),
            );
        }
        resp
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::BadCursor => ApiError::bad_parameter(
                "cursor",
                "malformed cursor: pass the next_cursor of a previous page unchanged",
            ),
            other => ApiError::internal(format!("alert store: {other}")),
        }
    }
}
