//! The model directory on disk: [`save_model`] writes `model.json` and
//! every member's weights file so that a reader sees the old model or the
//! new one, and [`load`] reads one back, checking everything; apart from
//! `artifact.rs` to keep that file within the size rule.

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use super::{
    MAX_MEMBERS, META_FILE, Model, ModelKind, ModelMeta, Network, NetworkRef, weights_file,
};
use crate::error::ModelError;

static TMP_COUNTER: AtomicU64 = AtomicU64::new(0);

/// Writes `model` (any kind) into the directory `dir` (created if needed),
/// replacing any model there.
pub fn save_model(model: &Model, dir: &Path) -> Result<(), ModelError> {
    write(&model.meta, model.network.as_ref(), dir)
}

pub(crate) fn write(meta: &ModelMeta, net: NetworkRef<'_>, dir: &Path) -> Result<(), ModelError> {
    let meta_path = dir.join(META_FILE);
    meta.validate()
        .map_err(|m| ModelError::artifact(&meta_path, format!("refusing to save: {m}")))?;
    if let Some((described, actual)) = net.mismatch(meta) {
        return Err(ModelError::artifact(
            &meta_path,
            format!("refusing to save: metadata describes {described} but the network is {actual}"),
        ));
    }
    if net.weights_sha256()? != meta.weights_sha256 {
        return Err(ModelError::artifact(
            &meta_path,
            "refusing to save: weights_sha256 does not match the network's weights",
        ));
    }
    std::fs::create_dir_all(dir).map_err(|e| ModelError::io(dir, e))?;
    let json = serde_json::to_vec_pretty(meta)
        .map_err(|e| ModelError::artifact(&meta_path, e.to_string()))?;

    let k = TMP_COUNTER.fetch_add(1, Ordering::Relaxed);
    let tmp = |name: &str| dir.join(format!(".{name}.tmp.{}.{k}", std::process::id()));
    let members = net.members();
    let tmp_weights: Vec<PathBuf> = (0..members.len()).map(|i| tmp(&weights_file(i))).collect();
    let tmp_meta = tmp(META_FILE);
    let result = (|| {
        for (member, path) in members.iter().zip(&tmp_weights) {
            member.save(path)?;
            sync(path)?;
        }
        let mut f = File::create(&tmp_meta).map_err(|e| ModelError::io(&tmp_meta, e))?;
        f.write_all(&json)
            .and_then(|()| f.write_all(b"\n"))
            .and_then(|()| f.sync_all())
            .map_err(|e| ModelError::io(&tmp_meta, e))?;
        // A reader between these renames sees weights that do not match
        // model.json's hash and refuses them (`load`).
        for (i, path) in tmp_weights.iter().enumerate() {
            let weights_path = dir.join(weights_file(i));
            std::fs::rename(path, &weights_path).map_err(|e| ModelError::io(&weights_path, e))?;
        }
        std::fs::rename(&tmp_meta, &meta_path).map_err(|e| ModelError::io(&meta_path, e))?;
        // Members of a larger ensemble this one replaced.
        for i in members.len()..MAX_MEMBERS {
            let stale = dir.join(weights_file(i));
            match std::fs::remove_file(&stale) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                    return Err(ModelError::io(&stale, e));
                }
                _ => {}
            }
        }
        // Make the renames themselves durable.
        sync(dir)
    })();
    if result.is_err() {
        for path in &tmp_weights {
            let _ = std::fs::remove_file(path);
        }
        let _ = std::fs::remove_file(&tmp_meta);
    }
    result
}

fn sync(path: &Path) -> Result<(), ModelError> {
    File::open(path)
        .and_then(|f| f.sync_all())
        .map_err(|e| ModelError::io(path, e))
}

/// Reads and fully validates the model in `dir` (of any kind), placing it
/// on `device`.
pub fn load(dir: &Path, device: tch::Device) -> Result<Model, ModelError> {
    let meta_path = dir.join(META_FILE);
    let bytes = std::fs::read(&meta_path).map_err(|e| ModelError::io(&meta_path, e))?;
    let invalid = |e: serde_json::Error| format!("not a valid model description: {e}");
    let json: serde_json::Value =
        serde_json::from_slice(&bytes).map_err(|e| ModelError::artifact(&meta_path, invalid(e)))?;
    // A kind this build does not know (a newer one wrote it) is named as
    // such, rather than as a generic parse error.
    if let Some(kind) = json.get("kind")
        && serde_json::from_value::<ModelKind>(kind.clone()).is_err()
    {
        return Err(ModelError::artifact(
            &meta_path,
            format!(
                "model kind {kind} is not one this build runs ({})",
                ModelKind::ALL.map(ModelKind::as_str).join(", ")
            ),
        ));
    }
    let meta: ModelMeta =
        serde_json::from_value(json).map_err(|e| ModelError::artifact(&meta_path, invalid(e)))?;
    meta.validate()
        .map_err(|m| ModelError::artifact(&meta_path, m))?;
    let weights: Vec<PathBuf> = (0..meta.members)
        .map(|i| dir.join(weights_file(i)))
        .collect();
    if let Some(missing) = weights.iter().find(|p| !p.is_file()) {
        return Err(ModelError::artifact(missing, "weights file is missing"));
    }
    let network = Network::load(&meta, &weights, device)?;
    if network.weights_sha256()? != meta.weights_sha256 {
        return Err(ModelError::artifact(
            &weights[0],
            format!(
                "weights do not match {META_FILE} (weights_sha256 differs): the artifact is \
                 being replaced or was assembled from different models"
            ),
        ));
    }
    Ok(Model { meta, network })
}
