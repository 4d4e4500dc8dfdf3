//! Weights files of every network kind: every parameter of a
//! [`nn::VarStore`] as safetensors, read back only after each tensor was
//! checked against the network built from the artifact's description
//! (name, dtype, shape, finite values, nothing extra), and hashed (names,
//! shapes and f32 values in name order), so `model.json` can pin the exact
//! weights.

use std::collections::HashMap;
use std::path::Path;

use sha2::{Digest, Sha256};
use tch::{Kind, Tensor, nn};

use crate::error::{ModelError, TorchContext};

/// The parameters in name order.
fn sorted(vs: &nn::VarStore) -> Vec<(String, Tensor)> {
    let mut named: Vec<(String, Tensor)> = vs.variables().into_iter().collect();
    named.sort_by(|a, b| a.0.cmp(&b.0));
    named
}

/// Deep copies of every parameter by name.
pub(crate) type Snapshot = Vec<(String, Tensor)>;

/// A deep copy of every parameter of `vs` (training keeps the best
/// epoch's weights while it goes on).
pub(crate) fn snapshot(vs: &nn::VarStore) -> Snapshot {
    tch::no_grad(|| {
        vs.variables()
            .into_iter()
            .map(|(n, t)| (n, t.detach().copy()))
            .collect()
    })
}

/// Copies `snapshot` back into the parameters of `vs`.
pub(crate) fn restore(vs: &nn::VarStore, snapshot: &Snapshot) -> Result<(), ModelError> {
    let vars = vs.variables();
    tch::no_grad(|| {
        for (name, src) in snapshot {
            if let Some(mut var) = vars.get(name).map(Tensor::shallow_clone) {
                var.f_copy_(src).ctx("restoring best weights")?;
            }
        }
        Ok(())
    })
}

/// Writes every parameter of `vs` to the safetensors file `path`.
pub(crate) fn save(vs: &nn::VarStore, path: &Path) -> Result<(), ModelError> {
    Tensor::write_safetensors(&sorted(vs), path)
        .ctx(&format!("writing weights to {}", path.display()))
}

/// SHA-256 (hex) of the parameters of `vs`.
pub(crate) fn sha256(vs: &nn::VarStore) -> Result<String, ModelError> {
    let mut h = Sha256::new();
    for (name, t) in sorted(vs) {
        h.update((name.len() as u64).to_le_bytes());
        h.update(name.as_bytes());
        let size = t.size();
        h.update((size.len() as u64).to_le_bytes());
        for d in &size {
            h.update(d.to_le_bytes());
        }
        let mut values = vec![0f32; t.numel()];
        t.f_copy_data(&mut values, t.numel())
            .ctx("reading weights")?;
        for v in values {
            h.update(v.to_le_bytes());
        }
    }
    Ok(hex::encode(h.finalize()))
}

/// Copies the weights in `path` into `vs`, after checking that the file
/// holds exactly the parameters of `vs`, as f32, with their shapes and
/// finite values (libtorch would otherwise broadcast a mis-shaped tensor
/// into place or change a parameter's dtype without complaint).
pub(crate) fn load_into(vs: &nn::VarStore, path: &Path) -> Result<(), ModelError> {
    let bad = |m: String| ModelError::artifact(path, m);
    let tensors: HashMap<String, Tensor> = Tensor::read_safetensors(path)
        .map_err(|e| bad(format!("unreadable weights file: {e}")))?
        .into_iter()
        .collect();
    let vars = sorted(vs);
    for (name, var) in &vars {
        let t = tensors
            .get(name)
            .ok_or_else(|| bad(format!("parameter {name} is missing")))?;
        if t.kind() != Kind::Float {
            return Err(bad(format!("parameter {name} is {:?}, not f32", t.kind())));
        }
        if t.size() != var.size() {
            return Err(bad(format!(
                "parameter {name} has shape {:?}, the model described in the artifact needs {:?}",
                t.size(),
                var.size()
            )));
        }
        let finite = t
            .f_isfinite()
            .and_then(|f| f.f_all())
            .and_then(|a| a.f_int64_value(&[]))
            .map_err(|e| bad(format!("checking {name}: {e}")))?;
        if finite == 0 {
            return Err(bad(format!("parameter {name} has NaN or infinite values")));
        }
    }
    if tensors.len() != vars.len() {
        let mut extra: Vec<&str> = tensors
            .keys()
            .filter(|k| !vars.iter().any(|(n, _)| n == *k))
            .map(String::as_str)
            .collect();
        extra.sort_unstable();
        return Err(bad(format!(
            "unexpected parameters {}: not a model of this description",
            extra.join(", ")
        )));
    }
    tch::no_grad(|| {
        for (name, var) in &vars {
            let mut var = var.shallow_clone();
            var.f_copy_(&tensors[name])
                .map_err(|e| bad(format!("loading {name}: {e}")))?;
        }
        Ok(())
    })
}
