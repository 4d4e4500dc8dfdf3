//! Forewarn's domain core. Everything here is pure computation on values:
//! no sockets, no files, no clocks, no libtorch. The service, the evaluator
//! and calibration all drive the same [`engine::Engine`], so what is measured
//! offline is what runs online.

pub mod alert;
pub mod detector;
pub mod diagnosis;
pub mod dynamic_threshold;
pub mod engine;
pub mod flatline;
pub mod gaussian;
pub mod grid;
pub mod reading;
pub mod robust_scaler;
pub mod scaler;
pub mod seasonal_residual;
#[cfg(any(test, feature = "testing"))]
pub mod testing;
pub mod threshold;
pub mod window;

pub use alert::{Alert, AlertState, ChannelShare, ClassProbability, Diagnosis, GridCell, Severity};
pub use detector::{BatchScore, DetectorConfig, DetectorState, Transition};
pub use diagnosis::{ClassName, DiagnosisTracker, FaultClassifier};
pub use engine::{Engine, EngineConfig, EngineEvent, Forecaster, StepBatch};
pub use grid::{GridLayout, GridSlot};
pub use reading::{
    ObjectKeys, Reading, ReadingRef, Readings, RejectReason, Schema, decode_reading,
    decode_reading_into, encode_object, encode_reading,
};
pub use scaler::Scaler;
pub use threshold::{Threshold, ThresholdRule};
pub use window::Window;
