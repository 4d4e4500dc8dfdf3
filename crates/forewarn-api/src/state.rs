//! What the handlers share.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, RwLock};

use axum::extract::FromRef;
use forewarn_store::AlertStore;
use forewarn_telemetry::{Health, Metrics};
use tokio_util::sync::CancellationToken;

use crate::auth::Auth;
use crate::board::{DeviceBoard, ModelInfo};
use crate::bus::AlertBus;

/// Loads, validates and swaps in the model on disk; answers the new
/// model's info, or why it was rejected (the old model then keeps running).
pub type ModelReloader =
    Arc<dyn Fn() -> Pin<Box<dyn Future<Output = Result<ModelInfo, String>> + Send>> + Send + Sync>;
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

/// What the authorisation extractors read.
impl FromRef<AppState> for Arc<Auth> {
    fn from_ref(s: &AppState) -> Self {
        s.auth.clone()
    }
}
