//! The OpenAPI document.

use axum::Json;
use serde_json::Value;

pub fn document_json() -> Value {
    serde_json::json!({})
}

pub(crate) async fn document() -> Json<Value> {
    Json(document_json())
}
