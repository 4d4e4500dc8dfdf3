//! Forewarn's offline side: everything `forewarn train`, `evaluate` and
//! `classify` do besides parsing their arguments and printing.
//!
//! - [`config`]: model.toml ([`ModelConfig`]), the one description of a
//!   model, its training, its threshold strategy and its detector, with
//!   the only defaults.
//! - [`fit()`]: one function that trains a model of any kind
//!   (`forewarn_model::train`) and calibrates its fixed threshold and its
//!   strategy ([`calibrate`]) into an artifact-ready model: what `train`
//!   stores and `serve` runs, and what `evaluate` measures.
//! - [`replay`]: the one replay of rows through the service's engine, for
//!   every offline score (calibration and evaluation alike).
//! - [`evaluate()`] and [`classify()`]: the evaluation and classification
//!   runs, returning their reports; [`scoreboard`] runs one
//!   configuration over every development set of a suite.

pub mod calibrate;
pub mod classify;
pub mod config;
#[cfg(test)]
mod convlstm_tests;
mod error;
pub mod evaluate;
pub mod files;
pub mod fit;
mod plot;
pub mod replay;
pub mod scoreboard;

pub use classify::{Classification, ClassifyReport, classify};
pub use config::{
    DetectorSection, HeadKind, ModelConfig, ModelKind, ModelSection, ThresholdKind,
    ThresholdSection,
};
pub use error::OfflineError;
pub use evaluate::{Evaluation, Report, TrainOn, TrainRows, evaluate};
pub use fit::{Progress, fit};

/// One libtorch thread for tests (see `forewarn_model`'s).
#[cfg(test)]
pub(crate) fn test_init() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| forewarn_model::set_threads(1));
}
