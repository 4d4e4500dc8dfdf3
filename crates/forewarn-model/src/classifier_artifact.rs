//! Fault classifier artifacts: what `forewarn classify --save DIR` writes
//! and `serve`'s `[diagnosis] classifier` runs on open alerts. A directory
//! holding `classifier.json` (what the network is, the channels and
//! classes it knows, the scaler it was trained with) and
//! `classifier.safetensors` (its weights, hashed into the version).

use std::path::Path;

use forewarn_core::{ClassName, FaultClassifier, Scaler};
use serde::{Deserialize, Serialize};
use tch::{Device, Kind, Tensor};

use crate::error::{ModelError, TorchContext};
use crate::heads::{ClassifierConfig, Head, LstmClassifier};

pub const CLASSIFIER_META_FILE: &str = "classifier.json";
pub const CLASSIFIER_WEIGHTS_FILE: &str = "classifier.safetensors";

/// Sizes beyond these are refused at load: a corrupt or hostile file must
/// not make the service allocate without bound.
const MAX_HIDDEN: usize = 4096;
const MAX_LAYERS: usize = 16;
const MAX_WINDOW: usize = 100_000;

/// `classifier.json`: the description it was saved with, and what saving
/// added.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClassifierMeta {
    #[serde(flatten)]
    pub description: ClassifierDescription,
    /// `name-` and the first 12 hex digits of `weights_sha256`.
    pub version: String,
    /// `logistic` (fault or not) or `softmax` (which fault).
    pub head: String,
    pub weights_sha256: String,
    pub forewarn_version: String,
}

impl ClassifierMeta {
    fn validate(&self) -> Result<(), String> {
        let d = &self.description;
        let c = d.channels.len();
        if c == 0 {
            return Err("no channels".into());
        }
        if d.scaler.center.len() != c || d.scaler.scale.len() != c {
            return Err(format!("the scaler is not {c} channels wide"));
        }
        let want = match self.head.as_str() {
            "logistic" => 2,
            "softmax" => d.classes.len(),
            h => return Err(format!("head {h:?} is not logistic or softmax")),
        };
        if d.classes.len() < 2 || d.classes.len() != want {
            return Err(format!(
                "{} classes for a {} head",
                d.classes.len(),
                self.head
            ));
        }
        let mut labels: Vec<u8> = d.classes.iter().map(|c| c.class).collect();
        labels.sort_unstable();
        labels.dedup();
        if labels.len() != d.classes.len() {
            return Err("a class is listed twice".into());
        }
        for (what, v, max) in [
            ("window", d.window, MAX_WINDOW),
            ("hidden", d.hidden, MAX_HIDDEN),
            ("layers", d.layers, MAX_LAYERS),
        ] {
            if v == 0 || v > max {
                return Err(format!("{what} = {v} is outside 1..={max}"));
            }
        }
        Ok(())
    }

    fn head_spec(&self) -> Head {
        match self.head.as_str() {
            "logistic" => Head::Logistic,
            _ => Head::Softmax {
                classes: self.description.classes.len(),
            },
        }
    }
}

/// A trained classifier with everything `serve` needs to run it.
#[derive(Debug)]
pub struct SavedClassifier {
    meta: ClassifierMeta,
    network: LstmClassifier,
    device: Device,
}

/// What [`save_classifier`] needs besides the network.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClassifierDescription {
    pub name: String,
    pub channels: Vec<String>,
    /// In the order of the network's outputs.
    pub classes: Vec<ClassName>,
    pub window: usize,
    pub hidden: usize,
    pub layers: usize,
    /// Fitted on the training data's normal rows: the windows a classifier
    /// reads are scaled with it, not with the detector's.
    pub scaler: Scaler,
}

/// Writes `network` and its description to `dir` (created if missing):
/// the weights first, the description last, so a directory with a
/// description is complete. Returns the description written.
pub fn save_classifier(
    network: &LstmClassifier,
    d: ClassifierDescription,
    dir: &Path,
) -> Result<ClassifierMeta, ModelError> {
    std::fs::create_dir_all(dir).map_err(|e| ModelError::io(dir, e))?;
    let vs = network.var_store();
    let sha = crate::weights::sha256(vs)?;
    let head = match network.head() {
        Head::Logistic => "logistic",
        Head::Softmax { .. } => "softmax",
    };
    let meta = ClassifierMeta {
        version: crate::ModelMeta::version_for(&d.name, &sha),
        description: d,
        head: head.into(),
        weights_sha256: sha,
        forewarn_version: env!("CARGO_PKG_VERSION").into(),
    };
    meta.validate()
        .map_err(|m| ModelError::Config(format!("classifier: {m}")))?;
    crate::weights::save(vs, &dir.join(CLASSIFIER_WEIGHTS_FILE))?;
    let path = dir.join(CLASSIFIER_META_FILE);
    let json = serde_json::to_vec_pretty(&meta).expect("a classifier description serialises");
    std::fs::write(&path, json).map_err(|e| ModelError::io(&path, e))?;
    Ok(meta)
}

/// Loads and checks a classifier artifact: the description is validated,
/// the weights must have its shapes and hash.
pub fn load_classifier(dir: &Path, device: Device) -> Result<SavedClassifier, ModelError> {
    let meta_path = dir.join(CLASSIFIER_META_FILE);
    let weights_path = dir.join(CLASSIFIER_WEIGHTS_FILE);
    let bytes = std::fs::read(&meta_path).map_err(|e| ModelError::io(&meta_path, e))?;
    let meta: ClassifierMeta = serde_json::from_slice(&bytes).map_err(|e| {
        ModelError::artifact(&meta_path, format!("not a classifier description: {e}"))
    })?;
    meta.validate()
        .map_err(|m| ModelError::artifact(&meta_path, m))?;
    let cfg = ClassifierConfig {
        hidden: meta.description.hidden,
        layers: meta.description.layers,
        window: meta.description.window,
        device,
        ..ClassifierConfig::default()
    };
    let network = LstmClassifier::new(meta.description.channels.len(), meta.head_spec(), &cfg);
    if !weights_path.is_file() {
        return Err(ModelError::artifact(
            &weights_path,
            "weights file is missing",
        ));
    }
    crate::weights::load_into(network.var_store(), &weights_path)?;
    if crate::weights::sha256(network.var_store())? != meta.weights_sha256 {
        return Err(ModelError::artifact(
            &weights_path,
            format!("weights do not match {CLASSIFIER_META_FILE} (weights_sha256 differs)"),
        ));
    }
    Ok(SavedClassifier {
        meta,
        network,
        device,
    })
}

impl SavedClassifier {
    pub fn meta(&self) -> &ClassifierMeta {
        &self.meta
    }
}

impl FaultClassifier for SavedClassifier {
    fn name(&self) -> &str {
        &self.meta.description.name
    }
    fn version(&self) -> &str {
        &self.meta.version
    }
    fn classes(&self) -> &[ClassName] {
        &self.meta.description.classes
    }
    fn channels(&self) -> &[String] {
        &self.meta.description.channels
    }
    fn window(&self) -> usize {
        self.meta.description.window
    }

    fn probabilities(&mut self, windows: &[f32], count: usize) -> Result<Vec<f32>, String> {
        let (w, c) = (
            self.meta.description.window,
            self.meta.description.channels.len(),
        );
        if windows.len() != count * w * c {
            return Err(format!(
                "{} values for {count} windows of {w} x {c}",
                windows.len()
            ));
        }
        if count == 0 {
            return Ok(Vec::new());
        }
        let scaled = self.meta.description.scaler.transformed(windows);
        let x = Tensor::from_slice(&scaled)
            .view([count as i64, w as i64, c as i64])
            .to_device(self.device);
        let p = self
            .network
            .probabilities(&x)
            .to_kind(Kind::Float)
            .to_device(Device::Cpu)
            .contiguous();
        Vec::<f32>::try_from(p.view(-1))
            .ctx("reading class probabilities")
            .map_err(|e| e.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::heads::windows;

    /// Two channels; class 1 lifts `a` by 3 from row `onset` on.
    fn rows(n: usize, onset: usize, phase: usize) -> Vec<f32> {
        (0..n)
            .flat_map(|i| {
                let t = (i + phase) as f32 * 0.2;
                let lift = if i >= onset { 3.0 } else { 0.0 };
                [t.sin() + lift, t.cos()]
            })
            .collect()
    }

    fn trained(dir: &Path) -> ClassifierMeta {
        crate::test_init();
        let cfg = ClassifierConfig {
            hidden: 8,
            layers: 1,
            window: 10,
            epochs: 30,
            learning_rate: 0.02,
            ..ClassifierConfig::default()
        };
        let normal = rows(200, usize::MAX, 0);
        let fault = rows(200, 0, 0);
        let all: Vec<f32> = normal.iter().chain(&fault).copied().collect();
        let scaler = Scaler::fit(&normal, 2);
        let x = Tensor::cat(
            &[
                windows(&normal, 2, &scaler, 10, 5),
                windows(&fault, 2, &scaler, 10, 5),
            ],
            0,
        );
        let n = x.size()[0] as usize / 2;
        let y: Vec<i64> = (0..2 * n).map(|i| i64::from(i >= n)).collect();
        let mut net = LstmClassifier::new(2, Head::Softmax { classes: 2 }, &cfg);
        net.fit(&x, &y, &cfg).unwrap();
        assert_eq!(all.len(), 800);
        let classes = vec![
            ClassName {
                class: 0,
                name: "normal".into(),
            },
            ClassName {
                class: 4,
                name: "lifted".into(),
            },
        ];
        save_classifier(
            &net,
            ClassifierDescription {
                name: "lift".into(),
                channels: vec!["a".into(), "b".into()],
                classes,
                window: 10,
                hidden: 8,
                layers: 1,
                scaler,
            },
            dir,
        )
        .unwrap()
    }

    #[test]
    fn a_saved_classifier_loads_and_reads_raw_windows_as_it_was_trained() {
        let dir = tempfile::tempdir().unwrap();
        let meta = trained(dir.path());
        assert!(meta.version.starts_with("lift-"), "{}", meta.version);
        let mut c = load_classifier(dir.path(), Device::Cpu).unwrap();
        assert_eq!(c.version(), meta.version);
        assert_eq!(c.classes()[1].name, "lifted");
        // One normal and one lifted window, in the readings' units (phase
        // shifted: not the training rows).
        let normal = rows(10, usize::MAX, 33);
        let lifted = rows(10, 0, 33);
        let both: Vec<f32> = normal.iter().chain(&lifted).copied().collect();
        let p = c.probabilities(&both, 2).unwrap();
        assert_eq!(p.len(), 4);
        assert!((p[0] + p[1] - 1.0).abs() < 1e-5 && (p[2] + p[3] - 1.0).abs() < 1e-5);
        assert!(p[0] > 0.8 && p[3] > 0.8, "{p:?}");
        // A window of the wrong size is an error, not a panic.
        assert!(
            c.probabilities(&both[..19], 1)
                .unwrap_err()
                .contains("19 values")
        );
    }

    #[test]
    fn a_damaged_classifier_artifact_is_refused_with_the_reason() {
        let dir = tempfile::tempdir().unwrap();
        trained(dir.path());
        let meta_path = dir.path().join(CLASSIFIER_META_FILE);
        let good = std::fs::read_to_string(&meta_path).unwrap();
        let cases = [
            (
                good.replace("\"head\": \"softmax\"", "\"head\": \"tree\""),
                "is not logistic or softmax",
            ),
            (
                good.replace("\"window\": 10", "\"window\": 0"),
                "window = 0",
            ),
            (good.replace("\"hidden\": 8", "\"hidden\": 9"), "has shape"),
            ("{".to_string(), "not a classifier description"),
        ];
        for (text, want) in cases {
            std::fs::write(&meta_path, &text).unwrap();
            let e = load_classifier(dir.path(), Device::Cpu)
                .unwrap_err()
                .to_string();
            assert!(e.contains(want), "{want}: {e}");
        }
        std::fs::write(&meta_path, &good).unwrap();
        std::fs::remove_file(dir.path().join(CLASSIFIER_WEIGHTS_FILE)).unwrap();
        let e = load_classifier(dir.path(), Device::Cpu)
            .unwrap_err()
            .to_string();
        assert!(e.contains("weights file is missing"), "{e}");
    }
}
