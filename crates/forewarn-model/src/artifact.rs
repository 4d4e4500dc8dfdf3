//! Model artifacts: a directory with `model.json` (metadata, scaler,
//! threshold) and `model.safetensors` (weights).
//!
//! Loading trusts nothing: every field is checked and a bad artifact is an
//! error naming the file and the problem, never a panic, because the
//! service hot-reloads models and must keep running on the old one.
//!
//! `model.json` pins the weights by hash (`weights_sha256`). Saving renames
//! the weights into place first and `model.json` last, each from a complete
//! temporary file, so a reader sees either the old model, the new one, or
//! (in the instant between the two renames) a hash mismatch it reports as
//! an error and can retry, never half a model.

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use forewarn_core::threshold::ThresholdStrategy;
use forewarn_core::{DetectorConfig, EngineConfig, Scaler, Schema, Threshold};
use serde::{Deserialize, Serialize};

use crate::error::ModelError;
use crate::forecaster::{Highway, LstmForecaster, ModelSpec};
use crate::train::TrainedModel;

/// The artifact format this build writes and reads.
pub const FORMAT_VERSION: u32 = 1;
pub const META_FILE: &str = "model.json";
pub const WEIGHTS_FILE: &str = "model.safetensors";
/// Largest accepted window (readings kept per device); far above any real
/// model, it stops a corrupt file from sizing per-device buffers.
pub const MAX_WINDOW: usize = 1_000_000;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelMeta {
    pub format_version: u32,
    pub name: String,
    /// `"{name}-{first 12 hex of weights_sha256}"`: the same weights always
    /// get the same version and different weights a different one, so alert
    /// ids (which include it) stay stable across restarts and reloads.
    pub version: String,
    /// RFC 3339, UTC.
    pub created_at: String,
    /// Version of Forewarn that trained the model.
    pub forewarn_version: String,
    /// Input channels, in the order the model expects them.
    pub channels: Vec<String>,
    pub scaler: Scaler,
    pub window: usize,
    pub horizon: usize,
    pub hidden: usize,
    pub layers: usize,
    /// The forecaster's linear highway; absent (`none`) in artifacts
    /// written before it existed, which load unchanged. A build without
    /// highways refuses an artifact that has one (its weights file holds
    /// an unexpected `highway.weight`).
    #[serde(default, skip_serializing_if = "is_no_highway")]
    pub highway: Highway,
    pub warmup: usize,
    /// The fixed threshold (quantile x margin of the validation batch
    /// MSEs), always calibrated; what runs when `strategy` is absent.
    pub threshold: Threshold,
    /// The detector strategy `serve` runs: `fixed`, `gaussian` (error model
    /// and threshold) or `dynamic` (configuration, seed history, floor).
    /// Absent in artifacts written before strategies were stored, which
    /// load as `fixed` with `threshold`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub strategy: Option<ThresholdStrategy>,
    /// SHA-256 of the whole dataset given to training (both parts).
    pub train_data_sha256: String,
    pub train_rows: usize,
    pub validation_rows: usize,
    /// Losses of the epoch whose weights were kept (best validation loss).
    pub final_train_loss: f64,
    pub final_val_loss: f64,
    /// [`LstmForecaster::weights_sha256`] of `model.safetensors`.
    pub weights_sha256: String,
}

fn is_no_highway(h: &Highway) -> bool {
    *h == Highway::None
}

impl ModelMeta {
    pub fn version_for(name: &str, weights_sha256: &str) -> String {
        let short: String = weights_sha256.chars().take(12).collect();
        format!("{name}-{short}")
    }

    pub fn spec(&self) -> ModelSpec {
        ModelSpec {
            channels: self.channels.len(),
            hidden: self.hidden,
            layers: self.layers,
            horizon: self.horizon,
        }
    }

    pub fn schema(&self) -> Schema {
        Schema::new(self.channels.clone())
    }

    /// The strategy this model runs: the stored one, else the fixed threshold.
    pub fn strategy(&self) -> ThresholdStrategy {
        self.strategy.clone().unwrap_or(ThresholdStrategy::Fixed {
            threshold: self.threshold.value,
        })
    }

    /// Engine settings that run this model as it was calibrated.
    pub fn engine_config(&self, detector: DetectorConfig, max_batch: usize) -> EngineConfig {
        EngineConfig {
            schema: self.schema(),
            scaler: self.scaler.clone(),
            horizon: self.horizon,
            window: self.window,
            warmup: self.warmup,
            state_len: self.spec().state_len(),
            strategy: self.strategy(),
            detector,
            model: self.name.clone(),
            model_version: self.version.clone(),
            max_batch,
        }
    }

    /// Checks internal consistency; the message says what is wrong.
    pub fn validate(&self) -> Result<(), String> {
        if self.format_version != FORMAT_VERSION {
            return Err(format!(
                "format_version {} is not supported (this build reads {FORMAT_VERSION})",
                self.format_version
            ));
        }
        if self.name.trim().is_empty() || self.version.trim().is_empty() {
            return Err("name and version must not be empty".into());
        }
        let c = self.channels.len();
        if c == 0 {
            return Err("channels is empty".into());
        }
        let mut seen = std::collections::HashSet::new();
        for ch in &self.channels {
            if ch.is_empty() {
                return Err("a channel name is empty".into());
            }
            if !seen.insert(ch.as_str()) {
                return Err(format!("channel {ch:?} appears twice"));
            }
        }
        let s = &self.scaler;
        if s.center.len() != c
            || s.scale.len() != c
            || !(s.constant.is_empty() || s.constant.len() == c)
        {
            return Err(format!(
                "scaler has {} centers, {} scales and {} constant flags for {c} channels",
                s.center.len(),
                s.scale.len(),
                s.constant.len()
            ));
        }
        if let Some(i) = s.center.iter().position(|v| !v.is_finite()) {
            return Err(format!(
                "scaler center of {:?} is not finite",
                self.channels[i]
            ));
        }
        if let Some(i) = s.scale.iter().position(|v| !(v.is_finite() && *v > 0.0)) {
            return Err(format!(
                "scaler scale of {:?} is not a positive number",
                self.channels[i]
            ));
        }
        if self.window == 0 || self.window > MAX_WINDOW {
            return Err(format!(
                "window {} is outside 1..={MAX_WINDOW}",
                self.window
            ));
        }
        self.spec().validate()?;
        let t = self.threshold.value;
        if !(t.is_finite() && t > 0.0) {
            return Err(format!("threshold {t} is not a positive finite number"));
        }
        if let Some(s) = &self.strategy {
            s.validate(c)
                .map_err(|m| format!("strategy ({}): {m}", s.kind()))?;
        }
        if self.weights_sha256.len() != 64
            || !self.weights_sha256.bytes().all(|b| b.is_ascii_hexdigit())
        {
            return Err("weights_sha256 is not a SHA-256 hex digest".into());
        }
        Ok(())
    }
}

/// A model read back from disk.
#[derive(Debug)]
pub struct LoadedModel {
    pub meta: ModelMeta,
    pub forecaster: LstmForecaster,
}

impl LoadedModel {
    pub fn engine_config(&self, detector: DetectorConfig, max_batch: usize) -> EngineConfig {
        self.meta.engine_config(detector, max_batch)
    }

    pub fn schema(&self) -> Schema {
        self.meta.schema()
    }
}

static TMP_COUNTER: AtomicU64 = AtomicU64::new(0);

/// Writes `model` into the directory `dir` (created if needed), replacing
/// any model there.
pub fn save(model: &TrainedModel, dir: &Path) -> Result<(), ModelError> {
    let meta_path = dir.join(META_FILE);
    let weights_path = dir.join(WEIGHTS_FILE);
    model
        .meta
        .validate()
        .map_err(|m| ModelError::artifact(&meta_path, format!("refusing to save: {m}")))?;
    if model.meta.spec() != *model.forecaster.spec()
        || model.meta.highway != model.forecaster.highway()
    {
        return Err(ModelError::artifact(
            &meta_path,
            format!(
                "refusing to save: metadata describes {:?} with highway {:?} but the network \
                 is {:?} with highway {:?}",
                model.meta.spec(),
                model.meta.highway,
                model.forecaster.spec(),
                model.forecaster.highway()
            ),
        ));
    }
    if model.forecaster.weights_sha256()? != model.meta.weights_sha256 {
        return Err(ModelError::artifact(
            &meta_path,
            "refusing to save: weights_sha256 does not match the network's weights",
        ));
    }
    std::fs::create_dir_all(dir).map_err(|e| ModelError::io(dir, e))?;
    let json = serde_json::to_vec_pretty(&model.meta)
        .map_err(|e| ModelError::artifact(&meta_path, e.to_string()))?;

    let k = TMP_COUNTER.fetch_add(1, Ordering::Relaxed);
    let tmp = |name: &str| dir.join(format!(".{name}.tmp.{}.{k}", std::process::id()));
    let (tmp_weights, tmp_meta) = (tmp(WEIGHTS_FILE), tmp(META_FILE));
    let result = (|| {
        model.forecaster.save(&tmp_weights)?;
        sync(&tmp_weights)?;
        let mut f = File::create(&tmp_meta).map_err(|e| ModelError::io(&tmp_meta, e))?;
        f.write_all(&json)
            .and_then(|()| f.write_all(b"\n"))
            .and_then(|()| f.sync_all())
            .map_err(|e| ModelError::io(&tmp_meta, e))?;
        std::fs::rename(&tmp_weights, &weights_path)
            .map_err(|e| ModelError::io(&weights_path, e))?;
        std::fs::rename(&tmp_meta, &meta_path).map_err(|e| ModelError::io(&meta_path, e))?;
        // Make the renames themselves durable.
        sync(dir)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp_weights);
        let _ = std::fs::remove_file(&tmp_meta);
    }
    result
}

fn sync(path: &Path) -> Result<(), ModelError> {
    File::open(path)
        .and_then(|f| f.sync_all())
        .map_err(|e| ModelError::io(path, e))
}

/// Reads and fully validates the model in `dir`, placing it on `device`.
pub fn load(dir: &Path, device: tch::Device) -> Result<LoadedModel, ModelError> {
    let meta_path = dir.join(META_FILE);
    let weights_path: PathBuf = dir.join(WEIGHTS_FILE);
    let bytes = std::fs::read(&meta_path).map_err(|e| ModelError::io(&meta_path, e))?;
    let meta: ModelMeta = serde_json::from_slice(&bytes).map_err(|e| {
        ModelError::artifact(&meta_path, format!("not a valid model description: {e}"))
    })?;
    meta.validate()
        .map_err(|m| ModelError::artifact(&meta_path, m))?;
    if !weights_path.is_file() {
        return Err(ModelError::artifact(
            &weights_path,
            "weights file is missing",
        ));
    }
    let forecaster =
        LstmForecaster::load_with_highway(meta.spec(), meta.highway, &weights_path, device)?;
    if forecaster.weights_sha256()? != meta.weights_sha256 {
        return Err(ModelError::artifact(
            &weights_path,
            format!(
                "weights do not match {META_FILE} (weights_sha256 differs): the artifact is \
                 being replaced or was assembled from different models"
            ),
        ));
    }
    Ok(LoadedModel { meta, forecaster })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::forecaster::tests::small_spec;
    use forewarn_core::ThresholdRule;
    use forewarn_core::engine::{Forecaster, StepBatch};

    /// An untrained model with consistent metadata: artifact handling does
    /// not need a trained network, and this keeps the tests fast.
    fn model() -> TrainedModel {
        let spec = small_spec();
        let forecaster = LstmForecaster::new(spec, tch::Device::Cpu).unwrap();
        let weights_sha256 = forecaster.weights_sha256().unwrap();
        let meta = ModelMeta {
            format_version: FORMAT_VERSION,
            name: "pump".into(),
            version: ModelMeta::version_for("pump", &weights_sha256),
            created_at: "2026-01-01T00:00:00Z".into(),
            forewarn_version: "0.1.0".into(),
            channels: vec!["a".into(), "b".into(), "c".into()],
            scaler: Scaler {
                center: vec![1.0, 2.0, 3.0],
                scale: vec![0.5, 1.0, 2.0],
                constant: vec![false; 3],
            },
            window: 8,
            horizon: spec.horizon,
            hidden: spec.hidden,
            layers: spec.layers,
            highway: Highway::None,
            warmup: 8,
            threshold: Threshold {
                value: 0.75,
                rule: ThresholdRule::default(),
                samples: 10,
            },
            strategy: Some(ThresholdStrategy::Fixed { threshold: 0.75 }),
            train_data_sha256: "0".repeat(64),
            train_rows: 100,
            validation_rows: 25,
            final_train_loss: 0.5,
            final_val_loss: 0.6,
            weights_sha256,
        };
        TrainedModel {
            forecaster,
            meta,
            history: vec![],
        }
    }

    fn predict(f: &mut LstmForecaster) -> (Vec<f32>, Vec<f32>) {
        let spec = *f.spec();
        let n = 2;
        let mut b = StepBatch {
            n,
            horizon: spec.horizon,
            channels: spec.channels,
            state_len: spec.state_len(),
            inputs: (0..n * spec.output_len())
                .map(|i| (i as f32 * 0.1).cos())
                .collect(),
            states: (0..n * spec.state_len())
                .map(|i| (i as f32 * 0.2).sin() * 0.3)
                .collect(),
            predictions: vec![0.0; n * spec.output_len()],
        };
        f.step(&mut b).unwrap();
        (b.predictions, b.states)
    }

    fn load_err(dir: &Path) -> String {
        load(dir, tch::Device::Cpu)
            .expect_err("should fail")
            .to_string()
    }

    fn edit_meta(dir: &Path, f: impl FnOnce(&mut serde_json::Value)) {
        let path = dir.join(META_FILE);
        let mut v: serde_json::Value =
            serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
        f(&mut v);
        std::fs::write(&path, serde_json::to_vec(&v).unwrap()).unwrap();
    }

    #[test]
    fn round_trip_gives_identical_predictions_and_engine_config() {
        crate::test_init();
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("models/pump");
        let mut m = model();
        save(&m, &dir).unwrap();
        // Only the two artifact files remain (temporaries renamed away).
        let mut names: Vec<String> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        assert_eq!(names, vec![META_FILE, WEIGHTS_FILE]);

        let mut loaded = load(&dir, tch::Device::Cpu).unwrap();
        assert_eq!(loaded.meta, m.meta);
        assert_eq!(predict(&mut loaded.forecaster), predict(&mut m.forecaster));

        let cfg = loaded.engine_config(DetectorConfig::default(), 64);
        assert_eq!(cfg.schema.channels(), &["a", "b", "c"]);
        assert_eq!((cfg.horizon, cfg.window, cfg.warmup), (4, 8, 8));
        assert_eq!(
            (cfg.state_len, cfg.threshold(), cfg.max_batch),
            (32, 0.75, 64)
        );
        assert_eq!(cfg.model_version, m.meta.version);
        assert!(cfg.model_version.starts_with("pump-") && cfg.model_version.len() == 17);
        assert_eq!(loaded.schema().len(), 3);

        // Saving again over an existing model works.
        save(&m, &dir).unwrap();
        load(&dir, tch::Device::Cpu).unwrap();
    }

    /// Table: the stored strategy -> the one the engine runs. Artifacts
    /// from before strategies were stored have no `strategy` key and run
    /// the fixed threshold.
    #[test]
    fn strategies_round_trip_and_old_artifacts_run_the_fixed_threshold() {
        use forewarn_core::dynamic_threshold::DynamicThresholdConfig;
        use forewarn_core::gaussian::GaussianErrorModel;
        crate::test_init();
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("m");
        let gaussian = ThresholdStrategy::Gaussian {
            model: GaussianErrorModel {
                mean: vec![0.1, -0.2, 0.0],
                var: vec![1.0, 0.5, 2.0],
                samples: 40,
            },
            threshold: 3.5,
        };
        let dynamic = ThresholdStrategy::Dynamic {
            config: DynamicThresholdConfig::default(),
            seed: vec![0.2, 0.3, 0.25],
            floor: 0.4,
        };
        let fixed = ThresholdStrategy::Fixed { threshold: 0.75 };
        for (stored, runs) in [
            (Some(gaussian.clone()), gaussian),
            (Some(dynamic.clone()), dynamic),
            (None, fixed),
        ] {
            let mut m = model();
            m.meta.strategy = stored.clone();
            save(&m, &dir).unwrap();
            let json: serde_json::Value =
                serde_json::from_slice(&std::fs::read(dir.join(META_FILE)).unwrap()).unwrap();
            assert_eq!(json.get("strategy").is_some(), stored.is_some());
            let loaded = load(&dir, tch::Device::Cpu).unwrap();
            assert_eq!(loaded.meta.strategy, stored);
            let cfg = loaded.engine_config(DetectorConfig::default(), 1);
            assert_eq!(cfg.strategy, runs, "{stored:?}");
        }
        // A Gaussian model for other channels, or a bad dynamic seed, is
        // rejected with the reason.
        let mut m = model();
        m.meta.strategy = Some(ThresholdStrategy::Gaussian {
            model: GaussianErrorModel {
                mean: vec![0.0],
                var: vec![1.0],
                samples: 2,
            },
            threshold: 1.0,
        });
        assert!(
            save(&m, &dir)
                .unwrap_err()
                .to_string()
                .contains("3 channels")
        );
        save(&model(), &dir).unwrap();
        edit_meta(&dir, |v| {
            v["strategy"] = serde_json::json!({"kind": "dynamic",
                "config": {"history": 1}, "seed": [], "floor": 0.5})
        });
        let e = load_err(&dir);
        assert!(e.contains("history must be at least 2"), "{e}");
        edit_meta(&dir, |v| {
            v["strategy"] = serde_json::json!({"kind": "bogus"})
        });
        assert!(load_err(&dir).contains("not a valid"));
    }

    #[test]
    fn missing_and_corrupt_files_are_errors() {
        crate::test_init();
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("m");
        let m = model();

        assert!(load_err(&dir).contains(META_FILE));

        save(&m, &dir).unwrap();
        std::fs::remove_file(dir.join(WEIGHTS_FILE)).unwrap();
        let e = load_err(&dir);
        assert!(e.contains(WEIGHTS_FILE) && e.contains("missing"), "{e}");

        // Truncated weights.
        save(&m, &dir).unwrap();
        let w = std::fs::read(dir.join(WEIGHTS_FILE)).unwrap();
        std::fs::write(dir.join(WEIGHTS_FILE), &w[..w.len() / 2]).unwrap();
        let e = load_err(&dir);
        assert!(e.contains(WEIGHTS_FILE) && e.contains("unreadable"), "{e}");
        std::fs::write(dir.join(WEIGHTS_FILE), b"").unwrap();
        assert!(load_err(&dir).contains(WEIGHTS_FILE));

        // Weights of another model with the same shapes: hash mismatch.
        let other = LstmForecaster::new(small_spec(), tch::Device::Cpu).unwrap();
        other.save(&dir.join(WEIGHTS_FILE)).unwrap();
        let e = load_err(&dir);
        assert!(e.contains("weights_sha256 differs"), "{e}");

        // Garbage JSON.
        save(&m, &dir).unwrap();
        std::fs::write(dir.join(META_FILE), b"{\"format_version\": 1, ").unwrap();
        let e = load_err(&dir);
        assert!(e.contains(META_FILE) && e.contains("not a valid"), "{e}");
    }

    #[test]
    fn inconsistent_metadata_is_rejected_with_the_reason() {
        crate::test_init();
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("m");
        let m = model();
        type Edit = Box<dyn Fn(&mut serde_json::Value)>;
        let cases: Vec<(&str, Edit)> = vec![
            (
                "scaler has 3 centers",
                Box::new(|v| v["channels"] = serde_json::json!(["a", "b", "c", "d"])),
            ),
            (
                "appears twice",
                Box::new(|v| v["channels"] = serde_json::json!(["a", "a", "c"])),
            ),
            (
                "channels is empty",
                Box::new(|v| v["channels"] = serde_json::json!([])),
            ),
            (
                "format_version 2",
                Box::new(|v| v["format_version"] = 2.into()),
            ),
            (
                "not a positive finite",
                Box::new(|v| v["threshold"]["value"] = (-1.0).into()),
            ),
            (
                "not a positive finite",
                Box::new(|v| v["threshold"]["value"] = 0.into()),
            ),
            // JSON has no NaN: serde writes it as null, which must not load.
            (
                "not a valid",
                Box::new(|v| v["threshold"]["value"] = serde_json::to_value(f64::NAN).unwrap()),
            ),
            (
                "horizon must be at least 1",
                Box::new(|v| v["horizon"] = 0.into()),
            ),
            (
                "scale of \"b\"",
                Box::new(|v| v["scaler"]["scale"][1] = 0.into()),
            ),
            // A spec the weights do not fit: caught before allocating.
            ("shape", Box::new(|v| v["hidden"] = 9.into())),
            (
                "implausibly large",
                Box::new(|v| v["hidden"] = 1_000_000_000u64.into()),
            ),
            ("window", Box::new(|v| v["window"] = 0.into())),
        ];
        for (want, edit) in cases {
            save(&m, &dir).unwrap();
            edit_meta(&dir, edit);
            let e = load_err(&dir);
            assert!(e.contains(want), "want {want:?} in: {e}");
        }
    }

    /// A highway model round-trips; `model.json` records it (and only a
    /// highway model has the key, so older artifacts are unchanged); a
    /// description that disagrees with the weights is refused by name.
    #[test]
    fn highway_artifacts_round_trip_and_mismatches_are_errors() {
        crate::test_init();
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("hw");
        let mut m = model();
        save(&m, &dir).unwrap();
        let plain: serde_json::Value =
            serde_json::from_slice(&std::fs::read(dir.join(META_FILE)).unwrap()).unwrap();
        assert!(plain.get("highway").is_none());

        let spec = small_spec();
        m.forecaster =
            LstmForecaster::with_highway(spec, Highway::Cross, tch::Device::Cpu).unwrap();
        m.forecaster
            .set_highway_weight(
                &Highway::Cross
                    .mask(&spec)
                    .unwrap()
                    .iter()
                    .map(|v| 0.3 * v)
                    .collect::<Vec<_>>(),
            )
            .unwrap();
        m.meta.weights_sha256 = m.forecaster.weights_sha256().unwrap();
        // The description must say highway too.
        let e = save(&m, &dir).unwrap_err().to_string();
        assert!(e.contains("highway"), "{e}");
        m.meta.highway = Highway::Cross;
        save(&m, &dir).unwrap();
        let mut loaded = load(&dir, tch::Device::Cpu).unwrap();
        assert_eq!(loaded.meta.highway, Highway::Cross);
        assert_eq!(loaded.forecaster.highway(), Highway::Cross);
        assert_eq!(predict(&mut loaded.forecaster), predict(&mut m.forecaster));

        // model.json without the key (as an older build reads it) does not
        // fit the weights.
        edit_meta(&dir, |v| {
            v.as_object_mut().unwrap().remove("highway");
        });
        let e = load_err(&dir);
        assert!(e.contains("unexpected parameters highway.weight"), "{e}");
        edit_meta(&dir, |v| v["highway"] = "sideways".into());
        assert!(load_err(&dir).contains("not a valid"));
    }

    #[test]
    fn loaded_model_can_move_to_another_thread() {
        fn assert_send<T: Send>() {}
        assert_send::<LoadedModel>();
        assert_send::<TrainedModel>();
    }

    #[test]
    fn save_refuses_invalid_metadata() {
        crate::test_init();
        let tmp = tempfile::tempdir().unwrap();
        let mut m = model();
        m.meta.threshold.value = f64::NAN;
        assert!(save(&m, tmp.path()).is_err());
        let mut m = model();
        m.meta.weights_sha256 = "f".repeat(64);
        assert!(
            save(&m, tmp.path())
                .unwrap_err()
                .to_string()
                .contains("weights_sha256")
        );
        assert!(!tmp.path().join(META_FILE).exists());
    }
}
