//! Forewarn's telemetry: the Prometheus [`Metrics`] registry, typed
//! [`InternalEvent`]s that log and count in one place, the service
//! [`Health`] behind `/readyz`, and the [`DeviceBoard`] through which the
//! pipeline shows per-device state to the HTTP API, and the [`AlertBus`]
//! that broadcasts alert events to live consumers.
//!
//! Nothing here does I/O beyond logging through `tracing`.

pub mod board;
pub mod bus;
pub mod events;
pub mod health;
pub mod metrics;

pub use board::{DeviceBoard, DeviceSnapshot, ModelInfo, ScorePoint};
pub use bus::{AlertBus, AlertEvent, AlertEventKind};
pub use events::InternalEvent;
pub use health::Health;
pub use metrics::Metrics;

/// The wall clock in milliseconds since the Unix epoch (0 before it), the
/// unit of reading timestamps.
pub fn unix_now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}
