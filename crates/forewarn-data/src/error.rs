//! The one error type of this crate.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum DataError {
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
        /// Column name (`field N` in a file without a header).
        column: String,
        message: String,
    },
    /// A data file (or table) that is unusable as a whole (empty, missing
    /// column, ...).
    #[error("{}: {message}", path.display())]
    Data { path: PathBuf, message: String },
    /// A separator that is not one character or `whitespace`.
    #[error(
        "invalid separator {0:?}: use one character (',', ';', '\\t' or 'tab') or 'whitespace'"
    )]
    Separator(String),
}

impl DataError {
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Self::Io {
            path: path.into(),
            source,
        }
    }

    /// A whole-table problem of the data from `path` (a file, or a
    /// dataset's source).
    pub fn data(path: impl Into<PathBuf>, message: impl Into<String>) -> Self {
        Self::Data {
            path: path.into(),
            message: message.into(),
        }
    }
}
