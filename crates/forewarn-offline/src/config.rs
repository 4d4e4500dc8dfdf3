//! `model.toml`: the model, its training, the threshold strategy and the
//! detector, as `forewarn train --config`, `evaluate --config` and
//! `classify --config` read them (`train`'s flags stand for the same
//! fields). Every key is optional, and these are the only defaults;
//! `forewarn evaluate` writes the effective configuration into the report.

use std::path::Path;
use std::time::Duration;

use forewarn_core::dynamic_threshold::{DynamicScore, DynamicThresholdConfig};
use forewarn_core::{DetectorConfig, ThresholdRule};
use forewarn_model::{Highway, TrainSettings};
use serde::{Deserialize, Serialize};

use crate::error::{Context, OfflineError};

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ModelConfig {
    pub model: ModelSection,
    pub threshold: ThresholdSection,
    pub detector: DetectorSection,
}

/// `[model] kind`: the same enum as the artifact's `kind`, so every kind
/// `evaluate` measures is one `forewarn train` stores and `serve` runs.
pub use forewarn_model::ModelKind;

/// Bails out of a validation with a configuration error.
macro_rules! bail {
    ($($arg:tt)*) => {
        return Err(OfflineError::Config(format!($($arg)*)))
    };
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ModelSection {
    pub kind: ModelKind,
    pub name: String,
    pub hidden: usize,
    pub layers: usize,
    /// `per_variable`: width of each channel's encoder.
    pub encoder_hidden: usize,
    /// Readings per forecast batch.
    pub horizon: usize,
    /// Truncated-BPTT length and warm-up before scoring.
    pub window: usize,
    pub epochs: usize,
    /// Adam's step size. Unset: 5e-3, and 1e-3 for `convlstm` (at 5e-3 its
    /// validation loss climbs after a few epochs and training stops early;
    /// docs/ACCURACY.md, the plates); [`ModelConfig::load`] resolves it.
    pub learning_rate: Option<f64>,
    /// forecaster, per_variable: contiguous streams trained side by side.
    pub batch_streams: usize,
    /// autoencoder, and the classifier heads of `forewarn classify`:
    /// windows per optimizer step.
    pub batch_windows: usize,
    /// Tail of the training data held out for early stopping and thresholds.
    pub validation_fraction: f64,
    pub patience: usize,
    pub seed: u64,
    /// Networks trained from different seeds (the first `seed`) whose
    /// forecasts are averaged (an ensemble); each costs its training time
    /// and its share of `serve`'s forecasting. 1, a single network: three
    /// scored no better over eight seeds (docs/ACCURACY.md, "Ensembles").
    pub members: usize,
    pub grad_clip: f64,
    /// Median / IQR scaling instead of mean / standard deviation.
    pub robust_scaling: bool,
    /// Linear highway added to the network's output (`none`, `full`, or
    /// `cross`: each channel from the other channels): to the forecast of
    /// the next batch from the current row (`forecaster`, `per_variable`),
    /// or to the reconstruction of each row from that same row
    /// (`autoencoder`: `cross` only, `full` would learn the identity).
    /// Unset: `full` for the forecaster (the best scoreboard mean over four
    /// seeds, docs/ACCURACY.md; `forewarn train --highway` defaults to it
    /// too) and for `convlstm` (its convolutions cannot place a heater or
    /// hold a cell's level; docs/ACCURACY.md, the plates), `none` for the
    /// other kinds; [`ModelConfig::load`] resolves
    /// it, so reports show the value used. A stored model keeps the
    /// highway it was trained with.
    pub highway: Option<Highway>,
    /// Context channels: globs (`*`, `?`) over the data's column names
    /// (`["cmd*", "*_setpoint"]`; also `--context-columns`). Setpoints,
    /// commands and operating modes the network reads as inputs but never
    /// forecasts; they are never scored, named in an alert or alarmed on.
    /// A glob matching no column is an error, and so is every column
    /// matching. The artifact stores the channels they matched.
    pub context: Vec<String>,
    /// Whether the recurrent network reads the context channels. Unset:
    /// `false` for the forecaster, whose LSTM then reads the monitored
    /// channels alone while the context reaches the forecast through the
    /// highway (on SMAP the commands read by the LSTM cost 0.06 event F1
    /// over four seeds, docs/ACCURACY.md, "Context in the recurrent
    /// network"); `true` for the other kinds, which only read it so.
    /// [`ModelConfig::load`] resolves it.
    pub recurrent_context: Option<bool>,
    /// The grid the monitored channels lie on, `[rows, cols]` (also
    /// `--grid 8x8`): a description of the data, for every kind, so alerts
    /// name the cells behind their error (row, column, channel); kind
    /// `convlstm` also convolves over it. Unset: no grid (`convlstm`: one
    /// row of the monitored channels).
    pub grid: Option<[usize; 2]>,
    /// With `grid`: the channel name at each grid cell, row-major (`rows x
    /// cols` entries), `""` for a cell without a sensor (a gap: read as 0,
    /// never forecast or scored). Every monitored channel must be on the
    /// grid exactly once; context channels must not be (they are read as
    /// whole-grid maps). Empty: the monitored channels in their column
    /// order, row-major, gaps at the end.
    pub layout: Vec<String>,
    /// `convlstm`: the odd side of the gates' convolution over the grid.
    pub kernel: usize,
    /// `convlstm`: hidden maps per layer (`layers` of them are stacked).
    pub filters: usize,
    /// What the LSTM's output feeds: `identity`, the forecast of the next
    /// batch that `evaluate`, `train` and `serve` score (fitted on normal
    /// data); `logistic` (fault or not) or `softmax` (which fault), the
    /// classifiers `forewarn classify` trains on labelled fault data.
    pub head: HeadKind,
    /// auto, cpu, cuda or cuda:N.
    pub device: String,
    /// libtorch intra-op threads (0 = one per core).
    pub threads: usize,
}

impl Default for ModelSection {
    fn default() -> Self {
        Self {
            kind: ModelKind::Forecaster,
            name: "forecaster".into(),
            hidden: 32,
            layers: 2,
            encoder_hidden: 4,
            horizon: 5,
            window: 50,
            epochs: 30,
            learning_rate: None,
            batch_streams: 16,
            batch_windows: 64,
            validation_fraction: 0.3,
            patience: 5,
            seed: 42,
            members: 1,
            grad_clip: 1.0,
            robust_scaling: false,
            highway: None,
            context: vec![],
            recurrent_context: None,
            grid: None,
            layout: vec![],
            kernel: 3,
            filters: 16,
            head: HeadKind::Identity,
            device: "cpu".into(),
            threads: 0,
        }
    }
}

/// `forewarn train`'s grid flags: `[model]`'s grid keys (here, not in
/// the binary, whose size is bounded).
#[cfg(feature = "clap")]
#[derive(Debug, Clone, clap::Args)]
pub struct GridFlags {
    /// The grid the monitored channels lie on, ROWSxCOLS (`8x8`): alerts
    /// name its cells (any kind); convlstm convolves over it [default:
    /// none; convlstm: one row of them].
    #[arg(long, value_parser = parse_grid)]
    pub grid: Option<[usize; 2]>,
    /// With --grid: the channel at each cell, row-major, comma-separated,
    /// empty for a gap (`t00,t01,,t10,t11,t12`) [default: the monitored
    /// channels row-major].
    #[arg(long, value_delimiter = ',')]
    pub layout: Option<Vec<String>>,
    /// convlstm: the odd side of the gates' convolution.
    #[arg(long, default_value_t = ModelSection::default().kernel)]
    pub kernel: usize,
    /// convlstm: hidden maps per layer.
    #[arg(long, default_value_t = ModelSection::default().filters)]
    pub filters: usize,
}

#[cfg(feature = "clap")]
impl GridFlags {
    /// The default `[model]` with these grid keys.
    pub fn section(&self) -> ModelSection {
        ModelSection {
            grid: self.grid,
            layout: self.layout.clone().unwrap_or_default(),
            kernel: self.kernel,
            filters: self.filters,
            ..ModelSection::default()
        }
    }
}

/// `ROWSxCOLS` (`8x8`), as `--grid` takes it.
pub fn parse_grid(s: &str) -> Result<[usize; 2], String> {
    let bad = || format!("{s:?} is not ROWSxCOLS (e.g. 8x8)");
    let (r, c) = s.split_once(['x', 'X']).ok_or_else(bad)?;
    let side = |v: &str| v.trim().parse::<usize>().map_err(|_| bad());
    Ok([side(r)?, side(c)?])
}

/// `[model] head`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "clap", derive(clap::ValueEnum))]
#[serde(rename_all = "snake_case")]
pub enum HeadKind {
    /// The forecast of the next batch, scored by its error (the detector).
    #[default]
    Identity,
    /// Fault or not, from labelled data (`forewarn classify`).
    Logistic,
    /// Which fault class, from labelled data (`forewarn classify`).
    Softmax,
}

/// The Gaussian threshold's margin for a model without a highway
/// (`highway = "none"`, `forewarn train --highway none`, a single channel).
pub const GAUSSIAN_MARGIN: f64 = 1.5;
/// The margin for a model with a linear highway: a forecaster's errors stay
/// closer to the training errors at new operating points, and the wider
/// margin trades little TEP recall for far fewer simulator false alarms
/// (docs/ACCURACY.md).
pub const GAUSSIAN_MARGIN_HIGHWAY: f64 = 2.0;

/// The default (`dynamic`, with [`DEFAULT_DYNAMIC`]) has the best mean on
/// the development scoreboard of docs/ACCURACY.md; `serve` runs whichever
/// strategy `forewarn train` stored in the artifact. Also
/// `forewarn train --threshold-kind`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "clap", derive(clap::ValueEnum))]
#[serde(rename_all = "snake_case")]
pub enum ThresholdKind {
    /// Quantile of normal validation batch errors times a margin (always
    /// calibrated; what runs when an artifact stores no strategy).
    Fixed,
    /// Malhotra et al.: Gaussian model of error vectors, threshold by F-beta.
    Gaussian,
    /// Hundman et al. (telemanom): smoothed errors, nonparametric dynamic threshold.
    #[default]
    Dynamic,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ThresholdSection {
    pub kind: ThresholdKind,
    /// `fixed`: quantile of validation batch scores (1.0 = the maximum) ...
    pub quantile: f64,
    /// ... times this margin.
    pub margin: f64,
    /// `gaussian`: beta of the F-beta the threshold maximises (< 1 favours precision).
    pub beta: f64,
    /// `gaussian`: synthetic faults injected into copies of the validation
    /// part to label its anomalous side (see docs/EVALUATION.md).
    pub injections: usize,
    /// `gaussian`: fault magnitudes, in training standard deviations of the
    /// affected channel, cycled through.
    pub injection_sigmas: Vec<f64>,
    /// `gaussian`: the F-beta threshold is multiplied by this. Unset (null
    /// in reports): [`GAUSSIAN_MARGIN_HIGHWAY`] for a trained model with a
    /// linear highway (the evaluate default), [`GAUSSIAN_MARGIN`]
    /// otherwise, each chosen on the tuning sets of docs/ACCURACY.md for
    /// its model ([`ThresholdSection::for_model`]).
    pub gaussian_margin: Option<f64>,
    /// `gaussian`: per-channel error variances are floored at this times
    /// their mean, so channels forecast almost perfectly in training do not
    /// dominate the score.
    pub gaussian_var_floor: f64,
    /// `gaussian`: the F-beta threshold is raised to `quantile` of the clean
    /// validation scores before the margin, so the threshold does not flag
    /// the normal data it was calibrated on (false: the threshold before
    /// this rule, for reproducing older rows).
    pub gaussian_normal_floor: bool,
    /// `dynamic`: telemanom settings; keys not given take
    /// [`DEFAULT_DYNAMIC`]'s values.
    #[serde(deserialize_with = "dynamic_over_default")]
    pub dynamic: DynamicThresholdConfig,
    /// Frozen channels, for every kind ([`forewarn_core::flatline`]): a
    /// monitored channel is flagged once it holds one value for more than
    /// `flatline_ratio` times its longest hold in training, and more than
    /// this many readings. 0: off.
    pub flatline_readings: u32,
    /// See `flatline_readings`; at least 1.
    pub flatline_ratio: f64,
}

/// The default detector's dynamic threshold, the configuration with the
/// best development scoreboard mean (docs/ACCURACY.md): the batch's score
/// under the Gaussian error model (Malhotra et al.), EWMA-smoothed,
/// against telemanom's threshold over the trailing 420 batches, without a
/// floor from the validation scores, with causal pruning at 35 % and
/// flagged batches kept out of the history, at most 20 thresholds of
/// smoothed score carried from one batch to the next, and the daily
/// seasonal rule (an excursion after 3 calm hours that one a day earlier
/// matched is not new; one that lasts 2 days is the new normal).
pub const DEFAULT_DYNAMIC: DynamicThresholdConfig = DynamicThresholdConfig {
    smoothing: 0.3,
    history: 420,
    z_min: 2.5,
    z_max: 12.0,
    z_step: 0.5,
    floor_margin: 0.0,
    prune: 0.35,
    exclude_flagged: true,
    carry_limit: 20.0,
    score: DynamicScore::Gaussian,
    season: Duration::from_secs(86_400),
    season_tolerance: Duration::from_secs(75 * 60),
    season_ratio: 0.5,
    season_quiet: Duration::from_secs(3 * 3_600),
    new_normal_after: Duration::from_secs(2 * 86_400),
    residual_bucket: Duration::from_secs(15 * 60),
    residual_margin: 1.5,
};

fn dynamic_over_default<'de, D: serde::Deserializer<'de>>(
    d: D,
) -> Result<DynamicThresholdConfig, D::Error> {
    DynamicThresholdConfig::deserialize_over(d, DEFAULT_DYNAMIC)
}

impl Default for ThresholdSection {
    fn default() -> Self {
        Self {
            kind: ThresholdKind::default(),
            quantile: 0.995,
            margin: 1.5,
            beta: 0.5,
            injections: 24,
            injection_sigmas: vec![1.0, 2.0, 3.0, 5.0],
            gaussian_margin: None,
            gaussian_var_floor: forewarn_core::gaussian::VAR_FLOOR_RATIO,
            gaussian_normal_floor: true,
            dynamic: DEFAULT_DYNAMIC,
            flatline_readings: FLATLINE_READINGS,
            flatline_ratio: FLATLINE_RATIO,
        }
    }
}

/// The default `flatline_readings` (docs/ACCURACY.md, "Frozen channels":
/// 10 and 40 score within 0.003 of it on the scoreboard).
pub const FLATLINE_READINGS: u32 = 20;

/// The default `flatline_ratio` (docs/ACCURACY.md, "Frozen channels").
pub const FLATLINE_RATIO: f64 = 2.0;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DetectorSection {
    /// Consecutive batches above the threshold before an alert opens.
    pub open_after: u32,
    /// Consecutive batches under `resolve_ratio * threshold` before it resolves.
    pub resolve_after: u32,
    pub resolve_ratio: f64,
    /// A batch at least this many times the threshold opens an alert at
    /// once, except after a context change (0: `open_after` alone).
    pub open_ratio: f64,
    /// A device's first readings in which no alert opens (scored, and
    /// teaching the threshold); 0: off.
    pub probation: u64,
    /// How many times its threshold a batch must exceed within
    /// `context_change_rows` readings of a context channel's change; 1: off.
    pub context_change_margin: f64,
    pub context_change_rows: usize,
    /// Rows an alert must have been open before its points count as
    /// detected (causal: shorter alerts vanish, longer ones lose their
    /// first `min_event_length - 1` rows). 1 = off.
    pub min_event_length: usize,
}

impl Default for DetectorSection {
    fn default() -> Self {
        let d = DetectorConfig::default();
        Self {
            open_after: d.open_after,
            resolve_after: d.resolve_after,
            resolve_ratio: d.resolve_ratio,
            open_ratio: d.open_ratio,
            probation: d.probation,
            context_change_margin: d.context_change_margin,
            context_change_rows: d.context_change_rows,
            min_event_length: 1,
        }
    }
}

impl DetectorSection {
    pub fn detector(&self) -> DetectorConfig {
        DetectorConfig {
            open_after: self.open_after,
            resolve_after: self.resolve_after,
            resolve_ratio: self.resolve_ratio,
            open_ratio: self.open_ratio,
            probation: self.probation,
            context_change_margin: self.context_change_margin,
            context_change_rows: self.context_change_rows,
        }
    }
}

impl ModelSection {
    /// The learning rate this section asks for (see
    /// [`ModelSection::learning_rate`]).
    pub fn learning_rate(&self) -> f64 {
        self.learning_rate.unwrap_or(match self.kind {
            ModelKind::ConvLstm => 1e-3,
            _ => 5e-3,
        })
    }

    /// Whether the recurrent network reads the context channels (see
    /// [`ModelSection::recurrent_context`]).
    pub fn recurrent_context(&self) -> bool {
        self.recurrent_context
            .unwrap_or(self.kind != ModelKind::Forecaster)
    }

    /// The highway this section asks for (see [`ModelSection::highway`]).
    pub fn highway(&self) -> Highway {
        self.highway.unwrap_or(match self.kind {
            ModelKind::Forecaster | ModelKind::ConvLstm => Highway::Full,
            ModelKind::PerVariable | ModelKind::Autoencoder => Highway::None,
        })
    }

    /// How the training loop trains this section's model: the one place
    /// model.toml's training keys become `forewarn_model`'s settings.
    pub fn train_settings(&self) -> Result<TrainSettings, OfflineError> {
        Ok(TrainSettings {
            kind: self.kind,
            hidden: self.hidden,
            layers: self.layers,
            encoder_hidden: self.encoder_hidden,
            horizon: self.horizon,
            window: self.window,
            epochs: self.epochs,
            learning_rate: self.learning_rate(),
            batch_streams: self.batch_streams,
            batch_windows: self.batch_windows,
            validation_fraction: self.validation_fraction,
            patience: self.patience,
            seed: self.seed,
            members: self.members,
            grad_clip: self.grad_clip,
            robust_scaling: self.robust_scaling,
            highway: self.highway(),
            context: self.context.clone(),
            recurrent_context: self.recurrent_context(),
            grid: self.grid,
            layout: self.layout.clone(),
            kernel: self.kernel,
            filters: self.filters,
            device: forewarn_model::parse_device(&self.device)
                .map_err(|e| OfflineError::Config(format!("[model] device: {e}")))?,
        })
    }
}

impl ThresholdSection {
    /// The margin this section asks for, [`GAUSSIAN_MARGIN`] when unset
    /// (see [`Self::for_model`]).
    pub fn gaussian_margin(&self) -> f64 {
        self.gaussian_margin.unwrap_or(GAUSSIAN_MARGIN)
    }

    /// This section for a trained model with `highway`: an unset margin
    /// becomes the one chosen for such a model. A `cross` highway on a
    /// single channel is no highway (training builds none), so a
    /// univariate series keeps [`GAUSSIAN_MARGIN`].
    pub fn for_model(&self, highway: Highway) -> Self {
        let mut t = self.clone();
        t.gaussian_margin.get_or_insert(match highway {
            Highway::None => GAUSSIAN_MARGIN,
            Highway::Full | Highway::Cross => GAUSSIAN_MARGIN_HIGHWAY,
        });
        t
    }

    /// The fixed rule: `quantile` of the validation batch scores times
    /// `margin`.
    pub fn rule(&self) -> ThresholdRule {
        ThresholdRule {
            quantile: self.quantile,
            margin: self.margin,
        }
    }
}

impl ModelConfig {
    /// model.toml at `path` (the defaults without one), validated and
    /// resolved ([`Self::resolved`]).
    pub fn load(path: Option<&Path>) -> Result<Self, OfflineError> {
        let cfg: Self = match path {
            None => Self::default(),
            Some(p) => {
                let text = std::fs::read_to_string(p).map_err(|e| OfflineError::io(p, e))?;
                toml::from_str(&text)
                    .map_err(|e| OfflineError::Config(e.to_string()))
                    .context(|| format!("parsing {}", p.display()))?
            }
        };
        cfg.resolved()
    }

    /// This configuration validated, with the highway and learning rate resolved (so
    /// reports show the value used): what [`Self::load`] returns, and what
    /// `forewarn train` runs when its flags stand in for the file.
    pub fn resolved(mut self) -> Result<Self, OfflineError> {
        self.validate()?;
        self.model.highway = Some(self.model.highway());
        self.model.recurrent_context = Some(self.model.recurrent_context());
        self.model.learning_rate = Some(self.model.learning_rate());
        Ok(self)
    }

    /// `[model]`'s grid keys: the grid's shape against the layout (the
    /// channel names are checked against the data when training), and
    /// convlstm's filters.
    fn validate_grid(&self) -> Result<(), OfflineError> {
        let m = &self.model;
        if let Some([rows, cols]) = m.grid {
            let max = forewarn_model::convlstm::MAX_GRID_SIDE;
            if !(1..=max).contains(&rows) || !(1..=max).contains(&cols) {
                bail!("[model] grid: rows and cols must be in 1..={max}, got [{rows}, {cols}]");
            }
            if !m.layout.is_empty() && m.layout.len() != rows * cols {
                bail!(
                    "[model] layout has {} cells, grid [{rows}, {cols}] has {}",
                    m.layout.len(),
                    rows * cols
                );
            }
        } else if !m.layout.is_empty() {
            bail!("[model] layout needs grid = [rows, cols]");
        }
        if m.kind == ModelKind::ConvLstm && m.filters > forewarn_model::convlstm::MAX_FILTERS {
            bail!(
                "[model] filters must be at most {}, got {}",
                forewarn_model::convlstm::MAX_FILTERS,
                m.filters
            );
        }
        Ok(())
    }

    pub fn validate(&self) -> Result<(), OfflineError> {
        let m = &self.model;
        if m.kind == ModelKind::Autoencoder
            && let Some(why) = forewarn_model::autoencoder::highway_refusal(m.highway())
        {
            bail!("[model] {why}");
        }
        if m.name.trim().is_empty() {
            bail!("[model] name must not be empty");
        }
        if m.context.iter().any(|g| g.is_empty()) {
            bail!("[model] context: a glob is empty");
        }
        self.validate_grid()?;
        m.train_settings()?.validate().map_err(|e| match e {
            forewarn_model::ModelError::Config(why) => {
                OfflineError::Config(format!("[model] {why}"))
            }
            e => e.into(),
        })?;
        self.detector
            .detector()
            .validate()
            .map_err(|m| OfflineError::Config(format!("[detector] {m}")))?;
        if self.detector.min_event_length == 0 {
            bail!("[detector] min_event_length must be at least 1");
        }
        self.threshold
            .dynamic
            .validate()
            .map_err(|m| OfflineError::Config(format!("[threshold.dynamic] {m}")))?;
        let t = &self.threshold;
        if !(0.0..=1.0).contains(&t.quantile) {
            bail!("[threshold] quantile must be in [0, 1], got {}", t.quantile);
        }
        if !(t.margin.is_finite() && t.margin > 0.0) {
            bail!("[threshold] margin must be positive, got {}", t.margin);
        }
        if !(t.beta.is_finite() && t.beta > 0.0) {
            bail!("[threshold] beta must be positive");
        }
        if t.gaussian_margin
            .is_some_and(|m| !(m.is_finite() && m > 0.0))
        {
            bail!("[threshold] gaussian_margin must be positive");
        }
        if !(t.flatline_ratio.is_finite() && t.flatline_ratio >= 1.0) {
            bail!(
                "[threshold] flatline_ratio must be at least 1, got {}",
                t.flatline_ratio
            );
        }
        if t.injection_sigmas.is_empty()
            || t.injection_sigmas.iter().any(|s| s.is_nan() || *s <= 0.0)
        {
            bail!("[threshold] injection_sigmas must be positive numbers");
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// docs/ACCURACY.md gives a command per candidate: every file it names
    /// under docs/accuracy/candidates exists, loads (no renamed or removed
    /// key), and differs from the default.
    #[test]
    fn every_candidate_the_accuracy_docs_name_loads_and_differs_from_the_default() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
        let docs = std::fs::read_to_string(root.join("docs/ACCURACY.md")).unwrap();
        let dir = root.join("docs/accuracy/candidates");
        let default = ModelConfig::load(None).unwrap();
        let named: std::collections::BTreeSet<&str> = docs
            .split(|c: char| !(c.is_ascii_alphanumeric() || "._-".contains(c)))
            .filter(|w| w.ends_with(".toml"))
            .filter(|w| !["model.toml", "suite.toml", "forewarn.example.toml"].contains(w))
            .collect();
        assert!(named.len() >= 30, "{named:?}");
        for name in named {
            let path = dir.join(name);
            assert!(
                path.is_file(),
                "docs/ACCURACY.md names {name}, not in {}",
                dir.display()
            );
            let c = ModelConfig::load(Some(&path)).unwrap_or_else(|e| panic!("{name}: {e}"));
            assert_ne!(c, default, "{name} is the default");
        }
    }

    #[test]
    fn partial_file_keeps_defaults_and_unknown_keys_fail() {
        let c: ModelConfig = toml::from_str(
            "[model]\nhidden = 16\n[threshold]\nkind = \"dynamic\"\n[threshold.dynamic]\nsmoothing = 0.5\n[detector]\nmin_event_length = 3\n",
        )
        .unwrap();
        assert_eq!(c.model.hidden, 16);
        assert_eq!(c.model.layers, ModelSection::default().layers);
        assert_eq!(c.threshold.kind, ThresholdKind::Dynamic);
        assert_eq!(c.threshold.dynamic.smoothing, 0.5);
        assert_eq!(c.threshold.dynamic.history, DEFAULT_DYNAMIC.history);
        assert_eq!(c.threshold.dynamic.score, DEFAULT_DYNAMIC.score);
        assert_eq!(c.detector.min_event_length, 3);
        assert!(c.model.context.is_empty());
        c.validate().unwrap();
        let c: ModelConfig = toml::from_str("[model]\ncontext = [\"cmd*\", \"mode\"]\n").unwrap();
        assert_eq!(c.model.context, vec!["cmd*".to_string(), "mode".into()]);
        assert_eq!(c.model.train_settings().unwrap().context, c.model.context);
        let bad: ModelConfig = toml::from_str("[model]\ncontext = [\"\"]\n").unwrap();
        assert!(bad.validate().unwrap_err().to_string().contains("context"));
        assert!(toml::from_str::<ModelConfig>("[model]\nhiden = 3\n").is_err());
        let bad: ModelConfig = toml::from_str("[detector]\nmin_event_length = 0\n").unwrap();
        assert!(bad.validate().is_err());
        let bad: ModelConfig = toml::from_str("[detector]\ncontext_change_margin = 0.9\n").unwrap();
        let err = bad.validate().unwrap_err().to_string();
        assert!(
            err.contains("[detector] context_change_margin must be at least 1"),
            "{err}"
        );
        let bad: ModelConfig = toml::from_str("[threshold]\nflatline_ratio = 0.5\n").unwrap();
        let err = bad.validate().unwrap_err().to_string();
        assert!(
            err.contains("[threshold] flatline_ratio must be at least 1, got 0.5"),
            "{err}"
        );
    }

    #[test]
    fn the_highway_and_learning_rate_default_per_kind_and_the_highway_sets_the_margin() {
        let dir = tempfile::tempdir().unwrap();
        let load = |text: &str| {
            let p = dir.path().join("m.toml");
            std::fs::write(&p, text).unwrap();
            ModelConfig::load(Some(&p))
        };
        assert_eq!(
            ModelConfig::load(None).unwrap().model.highway,
            Some(Highway::Full)
        );
        assert_eq!(load("").unwrap().model.highway, Some(Highway::Full));
        let none = load("[model]\nhighway = \"none\"\n").unwrap();
        assert_eq!(none.model.highway, Some(Highway::None));
        let cross = load("[model]\nhighway = \"cross\"\n").unwrap();
        assert_eq!(cross.model.highway(), Highway::Cross);
        let ae = load("[model]\nkind = \"autoencoder\"\n").unwrap();
        assert_eq!(ae.model.highway, Some(Highway::None));
        let conv = load("[model]\nkind = \"convlstm\"\n").unwrap();
        assert_eq!(conv.model.highway, Some(Highway::Full));
        // The learning rate: 5e-3, 1e-3 for convlstm, resolved; a set one stays.
        for (text, want) in [
            ("", 5e-3),
            ("[model]\nkind = \"autoencoder\"\n", 5e-3),
            ("[model]\nkind = \"convlstm\"\n", 1e-3),
            ("[model]\nkind = \"convlstm\"\nlearning_rate = 0.02\n", 0.02),
        ] {
            assert_eq!(
                load(text).unwrap().model.learning_rate,
                Some(want),
                "{text}"
            );
        }
        // The other kinds take a highway when asked; the autoencoder only
        // the cross one (full would learn the identity).
        for (kind, highway) in [
            ("per_variable", Highway::Cross),
            ("per_variable", Highway::Full),
            ("autoencoder", Highway::Cross),
        ] {
            let text = format!("[model]\nkind = \"{kind}\"\nhighway = \"{highway:?}\"\n");
            let c = load(&text.to_lowercase()).unwrap();
            assert_eq!(c.model.highway, Some(highway), "{kind}");
        }
        let e = load("[model]\nkind = \"autoencoder\"\nhighway = \"full\"\n").unwrap_err();
        assert!(format!("{e:#}").contains("identity"), "{e:#}");
        assert!(load("[model]\nhighway = \"diagonal\"\n").is_err());
        // The margin follows the trained model's highway unless set.
        let t = load("").unwrap().threshold;
        assert_eq!(t.gaussian_margin, None);
        assert_eq!(t.gaussian_margin(), 1.5);
        assert_eq!(t.for_model(Highway::Cross).gaussian_margin, Some(2.0));
        assert_eq!(t.for_model(Highway::Full).gaussian_margin(), 2.0);
        assert_eq!(t.for_model(Highway::None).gaussian_margin(), 1.5);
        let set = load("[threshold]\ngaussian_margin = 1.75\n").unwrap();
        assert_eq!(
            set.threshold.for_model(Highway::Cross).gaussian_margin(),
            1.75
        );
        assert_eq!(ThresholdSection::default().gaussian_margin(), 1.5);
        assert!(load("[threshold]\ngaussian_margin = 0.0\n").is_err());
    }

    /// The training loop gets every training key of `[model]`, and a bad
    /// value is refused at load, named.
    #[test]
    fn training_settings_come_from_model_section_and_bad_values_are_named() {
        let m = ModelSection::default();
        let s = m.train_settings().unwrap();
        assert_eq!(
            (
                s.kind,
                s.hidden,
                s.layers,
                s.encoder_hidden,
                s.horizon,
                s.window
            ),
            (
                m.kind,
                m.hidden,
                m.layers,
                m.encoder_hidden,
                m.horizon,
                m.window
            )
        );
        assert_eq!(
            (
                s.epochs,
                s.batch_streams,
                s.batch_windows,
                s.patience,
                s.seed,
                s.members
            ),
            (
                m.epochs,
                m.batch_streams,
                m.batch_windows,
                m.patience,
                m.seed,
                1
            )
        );
        assert_eq!(
            (s.learning_rate, s.validation_fraction, s.grad_clip),
            (m.learning_rate(), m.validation_fraction, m.grad_clip)
        );
        assert_eq!((s.highway, s.device), (Highway::Full, tch::Device::Cpu));
        // The forecaster's LSTM leaves the context to the highway; the
        // other kinds read it.
        assert!(!s.recurrent_context);
        for (text, want) in [
            ("[model]\nkind = \"per_variable\"\n", true),
            ("[model]\nrecurrent_context = true\n", true),
            ("[model]\nkind = \"forecaster\"\n", false),
        ] {
            let c: ModelConfig = toml::from_str(text).unwrap();
            let c = c.resolved().unwrap();
            assert_eq!(c.model.recurrent_context, Some(want), "{text}");
            assert_eq!(c.model.train_settings().unwrap().recurrent_context, want);
        }
        for (text, want) in [
            ("[model]\nhidden = 0\n", "[model] hidden must be at least 1"),
            (
                "[model]\nmembers = 0\n",
                "[model] members must be at least 1",
            ),
            (
                "[model]\nkind = \"convlstm\"\nrecurrent_context = false\n",
                "[model] recurrent_context = false is implemented for the forecaster only, not the convlstm",
            ),
            (
                "[model]\nmembers = 17\n",
                "[model] members must be at most 16, got 17",
            ),
            ("[model]\nbatch_windows = 0\n", "[model] batch_windows"),
            (
                "[model]\nvalidation_fraction = 1.0\n",
                "[model] validation_fraction",
            ),
            ("[model]\ndevice = \"tpu\"\n", "[model] device: "),
            ("[model]\nname = \" \"\n", "[model] name must not be empty"),
            (
                "[threshold]\nquantile = 2.0\n",
                "[threshold] quantile must be in [0, 1]",
            ),
            (
                "[threshold]\nmargin = 0.0\n",
                "[threshold] margin must be positive",
            ),
        ] {
            let c: ModelConfig = toml::from_str(text).unwrap();
            let e = c.validate().unwrap_err().to_string();
            assert!(e.contains(want), "{text}: {e}");
        }
    }
}
