//! The one error type of this crate.

use std::path::PathBuf;

use forewarn_core::threshold::ThresholdError;
use forewarn_data::DataError;
use forewarn_model::ModelError;

#[derive(Debug, thiserror::Error)]
pub enum OfflineError {
    /// model.toml, or a setting, that cannot be used; the message names it.
    #[error("{0}")]
    Config(String),
    #[error(transparent)]
    Data(#[from] DataError),
    #[error(transparent)]
    Model(#[from] ModelError),
    #[error("threshold calibration failed: {0}")]
    Threshold(#[from] ThresholdError),
    #[error("drawing: {0}")]
    Plot(String),
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// What could not be done, and why (the cause's message included, so
    /// it is printed once).
    #[error("{context}: {cause}")]
    Context {
        context: String,
        cause: Box<OfflineError>,
    },
}

impl OfflineError {
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Self::Io {
            path: path.into(),
            source,
        }
    }
}

/// Says what was being done when an error happened.
pub(crate) trait Context<T> {
    fn context(self, what: impl FnOnce() -> String) -> Result<T, OfflineError>;
}

impl<T, E: Into<OfflineError>> Context<T> for Result<T, E> {
    fn context(self, what: impl FnOnce() -> String) -> Result<T, OfflineError> {
        self.map_err(|e| OfflineError::Context {
            context: what(),
            cause: Box::new(e.into()),
        })
    }
}
