//! The one error type of this crate.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// A data file, or data, that cannot be used.
    #[error(transparent)]
    Data(#[from] forewarn_data::DataError),
    /// A model artifact file that is missing, corrupt or inconsistent.
    #[error("model artifact {}: {message}", path.display())]
    Artifact { path: PathBuf, message: String },
    /// Bad training configuration or data unsuitable for it.
    #[error("invalid configuration: {0}")]
    Config(String),
    /// Input to the forecaster that does not match the model.
    #[error("shape mismatch: {0}")]
    Shape(String),
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
