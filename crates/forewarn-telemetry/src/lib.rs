//! Forewarn's telemetry: the Prometheus [`Metrics`] registry, typed
//! [`InternalEvent`]s that log and count in one place, and the service
//! [`Health`] behind `/readyz`.
//!
//! Nothing here does I/O beyond logging through `tracing`.

pub mod clock;
pub mod events;
pub mod health;
pub mod metrics;

pub use clock::unix_now_ms;
pub use events::InternalEvent;
pub use health::Health;
pub use metrics::Metrics;
