//! What `serve` loads: a model at its inference precision, and the fault
//! classifier that diagnoses its alerts, each checked before the first
//! reading reaches it.

use std::path::Path;

use tch::Device;

use crate::artifact::{Model, ModelMeta, load};
use crate::classifier_artifact::{SavedClassifier, load_classifier};
use crate::error::ModelError;
use crate::precision::Precision;

/// [`load`], then the inference precision: a device that cannot run it
/// natively fails the load (at `serve`'s start, or a reload that is then
/// rejected), never the first batch.
pub fn load_for_inference(
    dir: &Path,
    device: Device,
    precision: Precision,
) -> Result<Model, ModelError> {
    let mut model = load(dir, device)?;
    model.network.set_precision(precision)?;
    Ok(model)
}

/// [`load_classifier`], then the check that it can diagnose `model`'s
/// alerts ([`forewarn_core::diagnosis::check_fits`]).
pub fn load_classifier_for(
    dir: &Path,
    model: &ModelMeta,
    device: Device,
) -> Result<SavedClassifier, ModelError> {
    let c = load_classifier(dir, device)?;
    forewarn_core::diagnosis::check_fits(&c, &model.channels, model.window)
        .map_err(|m| ModelError::artifact(dir, m))?;
    Ok(c)
}
