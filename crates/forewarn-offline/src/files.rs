//! What the offline commands read and write besides models: labelled
//! data files, JSON reports and the folders they go in.

use std::path::Path;

use forewarn_data::{CsvOptions, Dataset, read_any};
use serde::Serialize;

use crate::error::OfflineError;

/// Reads `path`, which must have labels (a label column, or a TEP file's
/// name): what `evaluate` scores against and `classify` learns.
pub fn read_labelled(path: &Path, opts: &CsvOptions) -> Result<Dataset, OfflineError> {
    let data = read_any(path, opts)?;
    if data.labels.is_none() {
        return Err(OfflineError::Config(format!(
            "{}: no labels: pass --label-column (TEP files are labelled by their name)",
            path.display()
        )));
    }
    Ok(data)
}

/// Creates the folder `path` is to be written in, if it names one.
pub fn create_parent(path: &Path) -> Result<(), OfflineError> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|e| OfflineError::io(dir, e))?;
    }
    Ok(())
}

/// Writes `report` as pretty JSON, creating its folder.
pub fn write_json<T: Serialize>(path: &Path, report: &T) -> Result<(), OfflineError> {
    create_parent(path)?;
    let json = serde_json::to_vec_pretty(report)
        .map_err(|e| OfflineError::Config(format!("encoding {}: {e}", path.display())))?;
    std::fs::write(path, json).map_err(|e| OfflineError::io(path, e))
}
