//! Forewarn's model side, everything that touches libtorch: the networks
//! of every model kind (the stacked-LSTM forecaster, the per-variable
//! model, the autoencoder) and the classifier heads, the one training loop
//! they share ([`train`]), and on-disk model artifacts.
//!
//! Calibrating a trained network's threshold strategy (through the same
//! [`forewarn_core::Engine`] the service runs) is `forewarn-offline`'s.

pub mod artifact;
pub mod autoencoder;
pub mod classifier_artifact;
pub mod convlstm;
mod device;
mod error;
pub mod forecaster;
pub mod heads;
pub mod highway;
mod inference;
pub mod multimodal;
pub mod precision;
pub mod train;
mod weights;

pub use artifact::{Description, Model, ModelKind, ModelMeta, Network, load, save_model};
pub use classifier_artifact::{
    ClassifierDescription, ClassifierMeta, SavedClassifier, load_classifier, save_classifier,
};
pub use device::{default_device, describe_device, parse_device, set_threads};
pub use error::ModelError;
pub use forecaster::{LstmForecaster, ModelSpec};
pub use highway::Highway;
pub use inference::{load_classifier_for, load_for_inference};
pub use precision::Precision;
pub use tch::Device;
pub use train::{EpochReport, TrainSettings, Trained, TrainingRun, train};

/// One libtorch thread for tests. Tests run on parallel threads and each
/// calling thread gets its own spinning OpenMP team; on a small machine the
/// oversubscription made the suite some 60x slower.
#[cfg(test)]
pub(crate) fn test_init() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| set_threads(1));
}

/// Row `t` of the highway tests' plant: channel b is twice channel a
/// (plus a little deterministic noise), c is noise, and a wanders in
/// about [-1, 1] around `shift`; a `shift` training never saw is an
/// operating point the LSTM alone cannot extrapolate to.
#[cfg(test)]
pub(crate) fn related_row(t: usize, shift: f32) -> [f32; 3] {
    let noise = |k: usize| 0.05 * ((t * 31 + k * 17) as f32 * 1.37).sin();
    let a = (t as f32 * 0.05).sin() * 0.7 + (t as f32 * 0.013).cos() * 0.3 + shift;
    [a + noise(0), 2.0 * a + noise(1), noise(2)]
}
