//! What the pipeline reports into, besides Kafka.

use std::sync::Arc;

use forewarn_api::{AlertBus, DeviceBoard};
use forewarn_store::AlertStore;
use forewarn_telemetry::{Health, Metrics};

/// Shared services the pipeline reports into.
#[derive(Clone)]
pub struct Services {
    pub store: Arc<AlertStore>,
    /// The API's read model of device state, written by the engine stage.
    pub board: Arc<DeviceBoard>,
    pub health: Arc<Health>,
    pub metrics: Arc<Metrics>,
    /// Alert events, published by the persist stage once a change is durable.
    pub bus: AlertBus,
}
