//! The one error type of this crate.

use std::path::PathBuf;

use forewarn_core::threshold::ThresholdError;

#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// A value in a data file that cannot be used, located exactly.
    #[error("{}: line {line}, column {column:?}: {message}", path.display())]
    Parse {
        path: PathBuf,
        /// 1-based line in the file.
        line: u64,
        /// Column name (or `c<index>` / `<index>` where there is no header).
        column: String,
        message: String,
    },
    /// A data file that is unusable as a whole (empty, missing column, ...).
    #[error("{}: {message}", path.display())]
    Data { path: PathBuf, message: String },
    /// A model artifact file that is missing, corrupt or inconsistent.
    #[error("model artifact {}: {message}", path.display())]
    Artifact { path: PathBuf, message: String },
    /// Bad training configuration or data unsuitable for it.
    #[error("invalid configuration: {0}")]
    Config(String),
    /// Input to the forecaster that does not match the model.
    #[error("shape mismatch: {0}")]
    Shape(String),
    #[error("threshold calibration failed: {0}")]
    Threshold(#[from] ThresholdError),
    #[error("libtorch: {context}: {source}")]
    Torch {
        context: String,
        #[source]
        source: tch::TchError,
    },
}

impl ModelError {
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Self::Io {
            path: path.into(),
            source,
        }
    }

    pub(crate) fn data(path: impl Into<PathBuf>, message: impl Into<String>) -> Self {
        Self::Data {
            path: path.into(),
            message: message.into(),
        }
    }

    pub(crate) fn artifact(path: impl Into<PathBuf>, message: impl Into<String>) -> Self {
        Self::Artifact {
            path: path.into(),
            message: message.into(),
        }
    }
}

/// Attaches context to libtorch errors.
pub(crate) trait TorchContext<T> {
    fn ctx(self, context: &str) -> Result<T, ModelError>;
}

impl<T> TorchContext<T> for Result<T, tch::TchError> {
    fn ctx(self, context: &str) -> Result<T, ModelError> {
        self.map_err(|source| ModelError::Torch {
            context: context.to_owned(),
            source,
        })
    }
}
