//! Model artifacts: a directory with `model.json` (metadata, scaler,
//! threshold) and `model.safetensors` (weights).
//!
//! An artifact holds one network of any [`ModelKind`] — the joint
//! forecaster, the per-variable model or the autoencoder — recorded as
//! `model.json`'s `kind` (absent in artifacts written before there were
//! kinds: the forecaster), or an ensemble of `members` such networks
//! whose forecasts are averaged, the first in `model.safetensors` and
//! member i in `model.<i>.safetensors`. [`load`] gives it back as a
//! [`Network`], which the engine runs whatever the kind.
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

use forewarn_core::flatline::Flatline;
use forewarn_core::threshold::ThresholdStrategy;
use forewarn_core::{DetectorConfig, EngineConfig, GridLayout, Scaler, Schema, Threshold};
use serde::{Deserialize, Serialize};

use crate::autoencoder::AutoencoderSpec;
use crate::convlstm::ConvLstmSpec;
use crate::error::ModelError;
use crate::forecaster::{Highway, ModelSpec};
use crate::multimodal::MultimodalSpec;

mod directory;
mod network;
pub use directory::{load, save_model};
pub use network::Network;
pub(crate) use network::NetworkRef;

/// The artifact format this build writes and reads.
pub const FORMAT_VERSION: u32 = 1;
pub const META_FILE: &str = "model.json";
pub const WEIGHTS_FILE: &str = "model.safetensors";
/// Most networks an ensemble (`members`) may hold.
pub const MAX_MEMBERS: usize = 16;

/// The weights file of ensemble member `i` (0-based): `model.safetensors`
/// for the first (a single network's only file), `model.<i>.safetensors`
/// for the others.
pub fn weights_file(i: usize) -> String {
    if i == 0 {
        WEIGHTS_FILE.to_owned()
    } else {
        format!("model.{i}.safetensors")
    }
}
/// Largest accepted window (readings kept per device); far above any real
/// model, it stops a corrupt file from sizing per-device buffers.
pub const MAX_WINDOW: usize = 1_000_000;

/// The network an artifact holds (`model.json`'s `kind`, and `[model]
/// kind` in model.toml).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "clap", derive(clap::ValueEnum))]
#[serde(rename_all = "snake_case")]
pub enum ModelKind {
    /// Joint multivariate stacked LSTM forecasting the next batch (Filonov et al. 2016).
    #[default]
    Forecaster,
    /// One small LSTM encoder per channel, features concatenated into the
    /// joint stacked LSTM, then the forecasting head (the multimodal design).
    #[cfg_attr(feature = "clap", value(name = "per_variable", alias = "per-variable"))]
    PerVariable,
    /// LSTM encoder-decoder reconstructing each batch of `horizon` rows;
    /// scored by reconstruction error (Malhotra et al. 2016).
    Autoencoder,
    /// Stacked ConvLSTM cells over a grid of the channels (gates are
    /// convolutions over the grid), forecasting the next batch of frames
    /// (Shi et al. 2015).
    #[cfg_attr(feature = "clap", value(name = "convlstm"))]
    #[serde(rename = "convlstm")]
    ConvLstm,
}

impl ModelKind {
    /// Every kind, in the order error messages list them.
    pub const ALL: [ModelKind; 4] = [
        Self::Forecaster,
        Self::PerVariable,
        Self::Autoencoder,
        Self::ConvLstm,
    ];

    /// The name `model.json` and model.toml use.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Forecaster => "forecaster",
            Self::PerVariable => "per_variable",
            Self::Autoencoder => "autoencoder",
            Self::ConvLstm => "convlstm",
        }
    }
}

impl std::fmt::Display for ModelKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelMeta {
    pub format_version: u32,
    /// The network in the weights file; absent in artifacts written before
    /// there were kinds, which load as the forecaster, unchanged.
    #[serde(default)]
    pub kind: ModelKind,
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
    /// The context channels among `channels` (in their order): inputs the
    /// network reads but never forecasts; never scored, named in an
    /// alert or alarmed on. Absent (none: every channel monitored) in
    /// artifacts written before context channels, which load unchanged.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub context: Vec<String>,
    pub scaler: Scaler,
    pub window: usize,
    pub horizon: usize,
    /// Width of the LSTM: the forecaster's, the per-variable model's joint
    /// LSTM, the autoencoder's encoder and decoder; convlstm: its
    /// `filters`.
    pub hidden: usize,
    /// Stacked LSTM layers (the autoencoder: 1).
    pub layers: usize,
    /// `per_variable`: width of each channel's encoder (absent for the
    /// other kinds).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub encoder_hidden: Option<usize>,
    /// The grid's `[rows, cols]` the monitored channels lie on: convlstm
    /// convolves over it; for any kind, alerts name its cells. Absent: no
    /// grid (artifacts written before grids load unchanged).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub grid: Option<[usize; 2]>,
    /// With `grid`: the channel at each grid cell, row-major, `null` a
    /// gap. Every monitored channel is on the grid once; the context
    /// channels are not (convlstm reads them as whole-grid maps).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub layout: Option<Vec<Option<String>>>,
    /// convlstm: the odd side of the gates' convolution.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kernel: Option<usize>,
    /// convlstm: hidden maps per layer (also `hidden`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub filters: Option<usize>,
    /// The linear highway of any kind (the autoencoder: `none` or
    /// `cross`); absent (`none`) in artifacts written before it existed,
    /// which load unchanged. A build without highways (or without them for
    /// this kind) refuses an artifact that has one (its weights file holds
    /// an unexpected `highway.weight`).
    #[serde(default, skip_serializing_if = "is_no_highway")]
    pub highway: Highway,
    /// Networks of this shape trained from different seeds whose
    /// forecasts are averaged, each in its own weights file
    /// ([`weights_file`]); absent (1) in artifacts written before
    /// ensembles, which load unchanged.
    #[serde(default = "one_member", skip_serializing_if = "is_one_member")]
    pub members: usize,
    /// Whether the forecaster's LSTM reads the context channels; `false`:
    /// the monitored ones alone, the context reaching the forecast through
    /// the highway ([`crate::LstmForecaster::set_recurrent_context`]).
    /// Absent (`true`) in artifacts written before the choice and in
    /// models without context channels.
    #[serde(default = "reads_context", skip_serializing_if = "is_reading_context")]
    pub recurrent_context: bool,
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
    /// Frozen channels ([`forewarn_core::flatline`]): each monitored
    /// channel's limit (0: not watched). Absent: no such rule (artifacts
    /// written before it, or every channel constant in training).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub flatline: Option<Flatline>,
    /// SHA-256 of the whole dataset given to training (both parts).
    pub train_data_sha256: String,
    pub train_rows: usize,
    pub validation_rows: usize,
    /// Losses of the epoch whose weights were kept (best validation loss).
    pub final_train_loss: f64,
    pub final_val_loss: f64,
    /// [`crate::LstmForecaster::weights_sha256`] of `model.safetensors`
    /// (an ensemble: of its members' hashes in order).
    pub weights_sha256: String,
}

fn is_no_highway(h: &Highway) -> bool {
    *h == Highway::None
}

fn reads_context() -> bool {
    true
}

fn is_reading_context(read: &bool) -> bool {
    *read
}

fn one_member() -> usize {
    1
}

fn is_one_member(n: &usize) -> bool {
    *n == 1
}

impl ModelMeta {
    pub fn version_for(name: &str, weights_sha256: &str) -> String {
        let short: String = weights_sha256.chars().take(12).collect();
        format!("{name}-{short}")
    }

    /// The forecaster's shape (for the other kinds: their sizes, which
    /// [`Self::validate`] bounds the same way).
    pub fn spec(&self) -> ModelSpec {
        ModelSpec {
            channels: self.channels.len(),
            outputs: self.monitored().len(),
            hidden: self.hidden,
            layers: self.layers,
            horizon: self.horizon,
        }
    }

    /// The per-variable model's shape (`encoder_hidden` 0 when absent,
    /// which [`Self::validate`] refuses).
    pub fn multimodal_spec(&self) -> MultimodalSpec {
        MultimodalSpec {
            channels: self.channels.len(),
            outputs: self.monitored().len(),
            encoder_hidden: self.encoder_hidden.unwrap_or(0),
            hidden: self.hidden,
            layers: self.layers,
            horizon: self.horizon,
        }
    }

    /// The autoencoder's shape.
    pub fn autoencoder_spec(&self) -> AutoencoderSpec {
        AutoencoderSpec {
            channels: self.channels.len(),
            outputs: self.monitored().len(),
            hidden: self.hidden,
            horizon: self.horizon,
        }
    }

    /// The convlstm's shape, its layout resolved against `channels`; the
    /// message says what does not fit.
    pub fn convlstm_spec(&self) -> Result<ConvLstmSpec, String> {
        let (Some([rows, cols]), Some(layout), Some(kernel), Some(filters)) =
            (self.grid, &self.layout, self.kernel, self.filters)
        else {
            return Err("kind convlstm needs grid, layout, kernel and filters".into());
        };
        let cells = crate::convlstm::resolve_layout(
            &self.channels,
            &self.monitored(),
            rows,
            cols,
            Some(layout),
        )?;
        Ok(ConvLstmSpec {
            channels: self.channels.len(),
            rows,
            cols,
            cells,
            kernel,
            filters,
            layers: self.layers,
            horizon: self.horizon,
        })
    }

    /// Positions in `channels` of the monitored channels (all but
    /// `context`), increasing.
    pub fn monitored(&self) -> Vec<usize> {
        (0..self.channels.len())
            .filter(|&j| !self.context.contains(&self.channels[j]))
            .collect()
    }

    /// Length of one device's recurrent state: every member's, end to end.
    pub fn state_len(&self) -> usize {
        self.members * self.member_state_len()
    }

    /// Length of one network's recurrent state for this model's kind.
    fn member_state_len(&self) -> usize {
        match self.kind {
            ModelKind::Forecaster => self.spec().state_len(),
            ModelKind::PerVariable => self.multimodal_spec().state_len(),
            // Batches are independent: one unused value.
            ModelKind::Autoencoder => 1,
            // Validated before use; an invalid description has no state.
            ModelKind::ConvLstm => self.convlstm_spec().map_or(0, |s| s.state_len()),
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
            monitored: self.monitored(),
            scaler: self.scaler.clone(),
            horizon: self.horizon,
            window: self.window,
            warmup: self.warmup,
            state_len: self.state_len(),
            strategy: self.strategy(),
            flatline: self.flatline.clone(),
            detector,
            model: self.name.clone(),
            model_version: self.version.clone(),
            max_batch,
            grid: self.grid_layout(),
        }
    }

    /// Where the monitored channels sit on the grid, so alerts name the
    /// cells behind their error; `None` without a grid. A
    /// validated description always has one ([`Self::validate`] checks
    /// the same layout).
    pub fn grid_layout(&self) -> Option<GridLayout> {
        let [rows, cols] = self.grid?;
        GridLayout::from_cells(rows, cols, self.layout.as_deref()?).ok()
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
        if !self.recurrent_context
            && (self.kind != ModelKind::Forecaster || self.context.is_empty())
        {
            return Err(format!(
                "recurrent_context false needs the forecaster kind and context channels (kind {}, {} context)",
                self.kind,
                self.context.len()
            ));
        }
        if !(1..=MAX_MEMBERS).contains(&self.members) {
            return Err(format!(
                "members {} is outside 1..={MAX_MEMBERS}",
                self.members
            ));
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
        let mut context = std::collections::HashSet::new();
        for ch in &self.context {
            if !seen.contains(ch.as_str()) {
                return Err(format!("context channel {ch:?} is not one of the channels"));
            }
            if !context.insert(ch.as_str()) {
                return Err(format!("context channel {ch:?} appears twice"));
            }
        }
        if context.len() == c {
            return Err("every channel is a context channel: nothing is monitored".into());
        }
        let s = &self.scaler;
        if s.center.len() != c
            || s.scale.len() != c
            || !(s.constant.is_empty() || s.constant.len() == c)
            || !(s.forecast_constant.is_empty() || s.forecast_constant.len() == c)
        {
            return Err(format!(
                "scaler has {} centers, {} scales, {} constant flags and {} forecast-constant flags for {c} channels",
                s.center.len(),
                s.scale.len(),
                s.constant.len(),
                s.forecast_constant.len()
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
        self.validate_kind()?;
        let t = self.threshold.value;
        if !(t.is_finite() && t > 0.0) {
            return Err(format!("threshold {t} is not a positive finite number"));
        }
        if let Some(s) = &self.strategy {
            // The strategy's error model is of the monitored channels.
            s.validate(c - context.len())
                .map_err(|m| format!("strategy ({}): {m}", s.kind()))?;
        }
        if let Some(f) = &self.flatline {
            f.validate(c - context.len())
                .map_err(|m| format!("flatline: {m}"))?;
        }
        if self.weights_sha256.len() != 64
            || !self.weights_sha256.bytes().all(|b| b.is_ascii_hexdigit())
        {
            return Err("weights_sha256 is not a SHA-256 hex digest".into());
        }
        Ok(())
    }
}

impl ModelMeta {
    /// The description of a newly trained `net`: kind, sizes, highway,
    /// weights hash and version come from the network, so they cannot
    /// disagree with it; the rest from `d`. No strategy yet.
    pub(crate) fn describe(net: NetworkRef<'_>, d: Description) -> Result<Self, ModelError> {
        let weights_sha256 = net.weights_sha256()?;
        let context = net.context_positions(d.channels.len());
        let mut grid = (None, None, None, None);
        // convlstm's grid is its network's (set below).
        if let Some([rows, cols]) = d.grid.filter(|_| net.kind() != ModelKind::ConvLstm) {
            grid.0 = d.grid;
            let monitored: Vec<usize> = (0..d.channels.len())
                .filter(|j| !context.contains(j))
                .collect();
            let cells = crate::convlstm::resolve_layout(
                &d.channels,
                &monitored,
                rows,
                cols,
                d.layout.as_deref(),
            )
            .map_err(|m| ModelError::Config(format!("grid: {m}")))?;
            grid.1 = Some(
                cells
                    .iter()
                    .map(|c| c.map(|j| d.channels[j].clone()))
                    .collect(),
            );
        }
        // Only the forecaster can leave the context to its highway.
        let recurrent_context = match net.lead() {
            NetworkRef::Forecaster(m) => m.recurrent_context(),
            _ => true,
        };
        let (hidden, layers, horizon, encoder_hidden, highway) = match net.lead() {
            NetworkRef::Forecaster(m) => {
                let s = m.spec();
                (s.hidden, s.layers, s.horizon, None, m.highway())
            }
            NetworkRef::PerVariable(m) => {
                let s = m.spec();
                let e = Some(s.encoder_hidden);
                (s.hidden, s.layers, s.horizon, e, m.highway())
            }
            NetworkRef::Autoencoder(m) => {
                let s = m.spec();
                (s.hidden, 1, s.horizon, None, m.highway())
            }
            NetworkRef::ConvLstm(m) => {
                let s = m.spec();
                let layout = s
                    .cells
                    .iter()
                    .map(|c| c.and_then(|j| d.channels.get(j).cloned()))
                    .collect();
                grid = (
                    Some([s.rows, s.cols]),
                    Some(layout),
                    Some(s.kernel),
                    Some(s.filters),
                );
                (s.filters, s.layers, s.horizon, None, m.highway())
            }
            NetworkRef::Ensemble(_) => {
                return Err(ModelError::Config("ensembles do not nest".into()));
            }
        };
        Ok(Self {
            format_version: FORMAT_VERSION,
            kind: net.kind(),
            version: Self::version_for(&d.name, &weights_sha256),
            name: d.name,
            created_at: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
            forewarn_version: env!("CARGO_PKG_VERSION").to_owned(),
            context: context.iter().map(|&j| d.channels[j].clone()).collect(),
            channels: d.channels,
            scaler: d.scaler,
            window: d.window,
            horizon,
            hidden,
            layers,
            encoder_hidden,
            grid: grid.0,
            layout: grid.1,
            kernel: grid.2,
            filters: grid.3,
            highway,
            members: net.members().len(),
            recurrent_context,
            warmup: d.warmup,
            threshold: d.threshold,
            strategy: None,
            flatline: None,
            train_data_sha256: d.train_data_sha256,
            train_rows: d.train_rows,
            validation_rows: d.validation_rows,
            final_train_loss: d.final_train_loss,
            final_val_loss: d.final_val_loss,
            weights_sha256,
        })
    }
}

impl ModelMeta {
    /// The fields that only some kinds have, the autoencoder's single
    /// layer and the highways it refuses.
    fn validate_kind(&self) -> Result<(), String> {
        let kind = self.kind;
        if kind == ModelKind::Autoencoder
            && let Some(why) = crate::autoencoder::highway_refusal(self.highway)
        {
            return Err(why);
        }
        match (kind, self.encoder_hidden) {
            (ModelKind::PerVariable, None) => {
                return Err("kind per_variable needs encoder_hidden".into());
            }
            (ModelKind::PerVariable, Some(e)) => {
                if e == 0 || e > 1 << 16 || self.channels.len() * e > 1 << 24 {
                    return Err(format!(
                        "encoder_hidden {e} is outside 1..=65536 or too large for {} channels",
                        self.channels.len()
                    ));
                }
            }
            (_, Some(_)) => {
                return Err(format!(
                    "encoder_hidden is a setting of kind per_variable, not of kind {kind}"
                ));
            }
            (_, None) => {}
        }
        self.validate_grid()?;
        if kind == ModelKind::Autoencoder && self.layers != 1 {
            return Err(format!(
                "the autoencoder has one encoder and one decoder layer, not {} layers",
                self.layers
            ));
        }
        Ok(())
    }
}

impl ModelMeta {
    /// The grid fields: convlstm's all present and consistent; the other
    /// kinds have no kernel or filters, and a grid (where alerts' cells
    /// lie) only with its layout, which places every monitored channel.
    fn validate_grid(&self) -> Result<(), String> {
        if self.kind != ModelKind::ConvLstm {
            if self.kernel.is_some() || self.filters.is_some() {
                return Err(format!(
                    "kernel and filters are settings of kind convlstm, not of kind {}",
                    self.kind
                ));
            }
            return match (self.grid, &self.layout) {
                (None, None) => Ok(()),
                (Some([rows, cols]), Some(layout)) => crate::convlstm::resolve_layout(
                    &self.channels,
                    &self.monitored(),
                    rows,
                    cols,
                    Some(layout),
                )
                .map(drop),
                _ => Err("grid and layout go together".into()),
            };
        }
        let spec = self.convlstm_spec()?;
        spec.validate()?;
        if self.hidden != spec.filters {
            return Err(format!(
                "hidden {} differs from filters {} (convlstm: the same width)",
                self.hidden, spec.filters
            ));
        }
        Ok(())
    }
}

/// A model of any kind with its description: read back by [`load`], or
/// trained and written by [`save_model`].
#[derive(Debug)]
pub struct Model {
    pub meta: ModelMeta,
    pub network: Network,
}

/// What describes a newly trained network besides its shape, which
/// [`Model::new`] takes from the network itself.
#[derive(Debug, Clone)]
pub struct Description {
    pub name: String,
    pub channels: Vec<String>,
    pub scaler: Scaler,
    pub window: usize,
    pub warmup: usize,
    /// The fixed threshold (may be a placeholder until calibrated: the
    /// artifact is validated when saved).
    pub threshold: Threshold,
    pub train_data_sha256: String,
    pub train_rows: usize,
    pub validation_rows: usize,
    pub final_train_loss: f64,
    pub final_val_loss: f64,
    /// Where the monitored channels sit, `[rows, cols]`, for a kind that
    /// does not convolve over a grid (convlstm's comes from its network):
    /// a description of the data, so alerts name cells. `None`: no grid.
    pub grid: Option<[usize; 2]>,
    /// The channel at each cell with `grid`, row-major, `None` a gap;
    /// `None`: the monitored channels in column order.
    pub layout: Option<Vec<Option<String>>>,
}

impl Model {
    /// A newly trained `network` with its description
    /// ([`ModelMeta::describe`]). No strategy yet (the fixed threshold runs
    /// until one is set).
    pub fn new(network: Network, d: Description) -> Result<Self, ModelError> {
        let meta = ModelMeta::describe(network.as_ref(), d)?;
        Ok(Self { meta, network })
    }

    pub fn engine_config(&self, detector: DetectorConfig, max_batch: usize) -> EngineConfig {
        self.meta.engine_config(detector, max_batch)
    }

    pub fn schema(&self) -> Schema {
        self.meta.schema()
    }
}

#[cfg(test)]
mod tests {
    use super::directory::write;
    use super::*;
    use crate::autoencoder::LstmAutoencoder;
    use crate::convlstm::ConvLstm;
    use crate::forecaster::LstmForecaster;
    use crate::forecaster::tests::small_spec;
    use crate::multimodal::MultimodalForecaster;
    use crate::precision::Precision;
    use forewarn_core::ThresholdRule;
    use forewarn_core::engine::{Forecaster, StepBatch};
    use std::path::Path;

    /// An untrained model with consistent metadata: artifact handling does
    /// not need a trained network, and this keeps the tests fast.
    fn model() -> Model {
        let spec = small_spec();
        let forecaster = LstmForecaster::new(spec, tch::Device::Cpu).unwrap();
        let weights_sha256 = forecaster.weights_sha256().unwrap();
        let meta = ModelMeta {
            format_version: FORMAT_VERSION,
            kind: ModelKind::Forecaster,
            name: "pump".into(),
            version: ModelMeta::version_for("pump", &weights_sha256),
            created_at: "2026-01-01T00:00:00Z".into(),
            forewarn_version: "0.1.0".into(),
            channels: vec!["a".into(), "b".into(), "c".into()],
            context: vec![],
            scaler: Scaler {
                center: vec![1.0, 2.0, 3.0],
                scale: vec![0.5, 1.0, 2.0],
                constant: vec![false; 3],
                forecast_constant: Vec::new(),
            },
            window: 8,
            horizon: spec.horizon,
            hidden: spec.hidden,
            layers: spec.layers,
            encoder_hidden: None,
            grid: None,
            layout: None,
            kernel: None,
            filters: None,
            highway: Highway::None,
            members: 1,
            recurrent_context: true,
            warmup: 8,
            threshold: Threshold {
                value: 0.75,
                rule: ThresholdRule::default(),
                samples: 10,
            },
            strategy: Some(ThresholdStrategy::Fixed { threshold: 0.75 }),
            train_data_sha256: "0".repeat(64),
            flatline: None,
            train_rows: 100,
            validation_rows: 25,
            final_train_loss: 0.5,
            final_val_loss: 0.6,
            weights_sha256,
        };
        Model {
            meta,
            network: Network::Forecaster(forecaster),
        }
    }

    /// The forecaster of `model()`.
    fn fc(m: &mut Model) -> &mut LstmForecaster {
        match &mut m.network {
            Network::Forecaster(f) => f,
            other => panic!("{other:?}"),
        }
    }

    fn predict(f: &mut LstmForecaster) -> (Vec<f32>, Vec<f32>) {
        let spec = *f.spec();
        step(f, spec.channels, spec.horizon)
    }

    /// Two devices' batch of `horizon` rows x `channels` through `f`:
    /// (predictions, states after).
    fn step<F: Forecaster<Error = ModelError>>(
        f: &mut F,
        channels: usize,
        horizon: usize,
    ) -> (Vec<f32>, Vec<f32>) {
        let (n, hc, state_len) = (2, horizon * channels, f.state_len());
        let mut b = StepBatch {
            n,
            horizon,
            channels,
            outputs: channels,
            state_len,
            inputs: (0..n * hc).map(|i| (i as f32 * 0.1).cos()).collect(),
            states: (0..n * state_len)
                .map(|i| (i as f32 * 0.2).sin() * 0.3)
                .collect(),
            predictions: vec![0.0; n * hc],
        };
        f.step(&mut b).unwrap();
        (b.predictions, b.states)
    }

    /// `network` (untrained) with `model()`'s description ([`Model::new`]).
    fn model_of(network: Network) -> Model {
        let m = model().meta;
        let warmup = match network.kind() {
            ModelKind::Autoencoder => 0,
            _ => m.warmup,
        };
        Model::new(
            network,
            Description {
                name: m.name,
                channels: m.channels,
                scaler: m.scaler,
                window: m.window,
                warmup,
                threshold: m.threshold,
                train_data_sha256: m.train_data_sha256,
                train_rows: m.train_rows,
                validation_rows: m.validation_rows,
                final_train_loss: m.final_train_loss,
                final_val_loss: m.final_val_loss,
                grid: None,
                layout: None,
            },
        )
        .unwrap()
    }

    /// A convlstm over `model()`'s 3 channels on a 2x2 grid with a gap.
    fn grid_spec() -> ConvLstmSpec {
        ConvLstmSpec {
            channels: 3,
            rows: 2,
            cols: 2,
            cells: vec![Some(2), Some(0), None, Some(1)],
            kernel: 3,
            filters: 2,
            layers: 2,
            horizon: 4,
        }
    }

    /// One untrained network of each kind over `model()`'s 3 channels.
    fn networks() -> Vec<Network> {
        let cpu = tch::Device::Cpu;
        vec![
            // First: the tests pop the autoencoder and per_variable off the end.
            Network::ConvLstm(ConvLstm::new(grid_spec(), cpu).unwrap()),
            Network::Forecaster(
                LstmForecaster::with_highway(small_spec(), Highway::Cross, cpu).unwrap(),
            ),
            Network::PerVariable(
                MultimodalForecaster::new(
                    MultimodalSpec {
                        channels: 3,
                        outputs: 3,
                        encoder_hidden: 2,
                        hidden: 5,
                        layers: 2,
                        horizon: 4,
                    },
                    cpu,
                )
                .unwrap(),
            ),
            Network::Autoencoder(
                LstmAutoencoder::new(
                    AutoencoderSpec {
                        channels: 3,
                        outputs: 3,
                        hidden: 6,
                        horizon: 4,
                    },
                    cpu,
                )
                .unwrap(),
            ),
        ]
    }

    /// Every kind with channel b as context: the artifact stores the
    /// context list and loads it back, the network forecasts (or
    /// reconstructs) the 2 monitored channels of its 3 inputs with the
    /// same outputs after loading, and the engine scores those 2; a
    /// `model.json` without `context` (every artifact before it) loads
    /// with every channel monitored, and a bad list is refused by name.
    #[test]
    fn context_channels_round_trip_and_older_artifacts_have_none() {
        crate::test_init();
        let tmp = tempfile::tempdir().unwrap();
        let cpu = tch::Device::Cpu;
        let monitored = vec![0, 2];
        let spec = ModelSpec {
            outputs: 2,
            ..small_spec()
        };
        let nets = vec![
            Network::Forecaster(
                LstmForecaster::with_monitored(spec, Highway::Cross, monitored.clone(), cpu)
                    .unwrap(),
            ),
            Network::PerVariable(
                MultimodalForecaster::with_monitored(
                    MultimodalSpec {
                        channels: 3,
                        outputs: 2,
                        encoder_hidden: 2,
                        hidden: 5,
                        layers: 2,
                        horizon: 4,
                    },
                    Highway::Full,
                    monitored.clone(),
                    cpu,
                )
                .unwrap(),
            ),
            Network::Autoencoder(
                LstmAutoencoder::with_monitored(
                    AutoencoderSpec {
                        channels: 3,
                        outputs: 2,
                        hidden: 6,
                        horizon: 4,
                    },
                    Highway::Cross,
                    monitored.clone(),
                    cpu,
                )
                .unwrap(),
            ),
        ];
        for network in nets {
            let kind = network.kind();
            let dir = tmp.path().join(kind.as_str());
            let mut m = model_of(network);
            assert_eq!(m.meta.context, vec!["b".to_string()], "{kind}");
            assert_eq!(m.meta.monitored(), monitored, "{kind}");
            save_model(&m, &dir).unwrap();
            let json: serde_json::Value =
                serde_json::from_slice(&std::fs::read(dir.join(META_FILE)).unwrap()).unwrap();
            assert_eq!(json["context"], serde_json::json!(["b"]), "{kind}");
            let mut loaded = load(&dir, cpu).unwrap();
            assert_eq!(loaded.meta, m.meta, "{kind}");
            let h = m.meta.horizon;
            let mut b = StepBatch {
                n: 1,
                horizon: h,
                channels: 3,
                outputs: 2,
                state_len: loaded.network.state_len(),
                inputs: (0..3 * h).map(|i| (i as f32 * 0.3).sin()).collect(),
                states: vec![0.0; loaded.network.state_len()],
                predictions: vec![0.0; 2 * h],
            };
            let mut a = b.clone();
            loaded.network.step(&mut b).unwrap();
            m.network.step(&mut a).unwrap();
            assert_eq!(a.predictions, b.predictions, "{kind}");
            // A batch asking for every channel does not fit.
            let mut wrong = StepBatch {
                outputs: 3,
                predictions: vec![0.0; 3 * h],
                ..a
            };
            assert!(loaded.network.step(&mut wrong).is_err(), "{kind}");
            assert_eq!(
                loaded.engine_config(DetectorConfig::default(), 4).monitored,
                monitored
            );
            // The description must match the network's outputs.
            let mut other = m.meta.clone();
            other.context = vec![];
            let e = write(&other, m.network.as_ref(), &dir)
                .unwrap_err()
                .to_string();
            assert!(e.contains("monitored channels"), "{kind}: {e}");
        }
        // Older artifacts: no `context` key, every channel monitored.
        let dir = tmp.path().join("old");
        let m = model();
        save_model(&m, &dir).unwrap();
        let json: serde_json::Value =
            serde_json::from_slice(&std::fs::read(dir.join(META_FILE)).unwrap()).unwrap();
        assert!(json.get("context").is_none());
        let loaded = load(&dir, cpu).unwrap();
        assert!(loaded.meta.context.is_empty());
        assert_eq!(loaded.meta.monitored(), vec![0, 1, 2]);
        for (context, want) in [
            (
                serde_json::json!(["x"]),
                "context channel \"x\" is not one of the channels",
            ),
            (
                serde_json::json!(["a", "a"]),
                "context channel \"a\" appears twice",
            ),
            (serde_json::json!(["a", "b", "c"]), "nothing is monitored"),
        ] {
            save_model(&m, &dir).unwrap();
            edit_meta(&dir, |v| v["context"] = context);
            let e = load_err(&dir);
            assert!(e.contains(want), "want {want:?} in: {e}");
        }
    }

    /// Every kind: saved, then loaded, the network gives the same step
    /// outputs (forecasts or reconstructions, and states), `model.json`
    /// records the kind, and the engine runs it with the kind's state
    /// length, warm-up and scoring mode.
    #[test]
    fn every_kind_round_trips_with_identical_step_outputs() {
        crate::test_init();
        let tmp = tempfile::tempdir().unwrap();
        for network in networks() {
            let kind = network.kind();
            let dir = tmp.path().join(kind.as_str());
            let mut m = model_of(network);
            save_model(&m, &dir).unwrap();
            let json: serde_json::Value =
                serde_json::from_slice(&std::fs::read(dir.join(META_FILE)).unwrap()).unwrap();
            assert_eq!(json["kind"], kind.as_str());
            assert_eq!(
                json.get("encoder_hidden").is_some(),
                kind == ModelKind::PerVariable
            );
            let mut loaded = load(&dir, tch::Device::Cpu).unwrap();
            assert_eq!(loaded.meta, m.meta, "{kind}");
            assert_eq!(loaded.network.kind(), kind);
            let (c, h) = (3, m.meta.horizon);
            let want = step(&mut m.network, c, h);
            assert_eq!(step(&mut loaded.network, c, h), want, "{kind}");
            let cfg = loaded.engine_config(DetectorConfig::default(), 16);
            assert_eq!(cfg.state_len, loaded.network.state_len(), "{kind}");
            assert_eq!(
                (cfg.warmup, loaded.network.reconstructs()),
                match kind {
                    ModelKind::Autoencoder => (0, true),
                    _ => (8, false),
                },
                "{kind}"
            );
            let state_len = match kind {
                ModelKind::Forecaster => 32,
                // 2 x 3 channels x 2 + 2 x 2 layers x 5.
                ModelKind::PerVariable => 32,
                ModelKind::Autoencoder => 1,
                // 2 layers x (h, c) x 2 filters x 2 x 2 cells.
                ModelKind::ConvLstm => 32,
            };
            assert_eq!(cfg.state_len, state_len, "{kind}");
        }
    }

    /// Artifacts from before kinds have no `kind` key: the forecaster,
    /// unchanged. A kind this build does not know is refused by name; a
    /// description of one kind over the weights of another, or with
    /// another kind's settings, is refused with the reason, never a panic.
    #[test]
    fn kinds_old_unknown_and_mismatched() {
        crate::test_init();
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("m");
        let m = model();
        save_model(&m, &dir).unwrap();
        edit_meta(&dir, |v| {
            v.as_object_mut().unwrap().remove("kind");
        });
        let loaded = load(&dir, tch::Device::Cpu).unwrap();
        assert_eq!(loaded.meta.kind, ModelKind::Forecaster);
        assert_eq!(loaded.meta, m.meta);

        edit_meta(&dir, |v| v["kind"] = "lstm_vae".into());
        let e = load_err(&dir);
        assert!(
            e.contains("model kind \"lstm_vae\" is not one this build runs")
                && e.contains("forecaster, per_variable, autoencoder"),
            "{e}"
        );
        edit_meta(&dir, |v| v["kind"] = 3.into());
        assert!(load_err(&dir).contains("model kind 3"));

        let mut nets = networks();
        let ae = model_of(nets.pop().unwrap());
        let pv = model_of(nets.pop().unwrap());
        type Edit = Box<dyn Fn(&mut serde_json::Value)>;
        let cases: Vec<(&Model, &str, Edit)> = vec![
            // The autoencoder's weights described as a forecaster's.
            (
                &ae,
                // Checked in name order: the head comes before the LSTM.
                "parameter head.bias has shape",
                Box::new(|v| v["kind"] = "forecaster".into()),
            ),
            (
                &ae,
                "needs encoder_hidden",
                Box::new(|v| v["kind"] = "per_variable".into()),
            ),
            (
                &ae,
                "one encoder and one decoder layer",
                Box::new(|v| v["layers"] = 2.into()),
            ),
            // A highway the weights lack is refused by parameter name; a
            // full one on the autoencoder by the reason.
            (
                &ae,
                "parameter highway.weight is missing",
                Box::new(|v| v["highway"] = "cross".into()),
            ),
            (
                &ae,
                "would learn the identity",
                Box::new(|v| v["highway"] = "full".into()),
            ),
            (
                &pv,
                "parameter highway.weight is missing",
                Box::new(|v| v["highway"] = "full".into()),
            ),
            (&ae, "has shape", Box::new(|v| v["hidden"] = 7.into())),
            (
                &pv,
                "has shape",
                Box::new(|v| v["encoder_hidden"] = 3.into()),
            ),
            (
                &pv,
                "encoder_hidden 0 is outside",
                Box::new(|v| v["encoder_hidden"] = 0.into()),
            ),
            (
                &pv,
                "parameter decoder.bias_hh_l0 is missing",
                Box::new(|v| {
                    v["kind"] = "autoencoder".into();
                    v["layers"] = 1.into();
                    v["hidden"] = 5.into();
                    v.as_object_mut().unwrap().remove("encoder_hidden");
                }),
            ),
            (
                &pv,
                "a setting of kind per_variable, not of kind forecaster",
                Box::new(|v| v["kind"] = "forecaster".into()),
            ),
        ];
        for (m, want, edit) in cases {
            save_model(m, &dir).unwrap();
            edit_meta(&dir, edit);
            let e = load_err(&dir);
            assert!(e.contains(want), "{}: want {want:?} in: {e}", m.meta.kind);
        }

        // Saving refuses a description of another kind than the network.
        let mut wrong = model_of(networks().pop().unwrap());
        wrong.meta.kind = ModelKind::Forecaster;
        wrong.meta.layers = 2;
        let e = save_model(&wrong, &dir).unwrap_err().to_string();
        assert!(
            e.contains("describes kind forecaster but the network is kind autoencoder"),
            "{e}"
        );
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
        save_model(&m, &dir).unwrap();
        // Only the two artifact files remain (temporaries renamed away).
        let mut names: Vec<String> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        assert_eq!(names, vec![META_FILE, WEIGHTS_FILE]);

        let mut loaded = load(&dir, tch::Device::Cpu).unwrap();
        assert_eq!(loaded.meta, m.meta);
        assert_eq!(step(&mut loaded.network, 3, 4), predict(fc(&mut m)));

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
        save_model(&m, &dir).unwrap();
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
        // With a seasonal residual, whose calibration is stored too.
        let dynamic = ThresholdStrategy::Dynamic {
            config: DynamicThresholdConfig {
                season: std::time::Duration::from_secs(86_400),
                season_tolerance: std::time::Duration::from_secs(3_600),
                residual_bucket: std::time::Duration::from_secs(900),
                ..DynamicThresholdConfig::default()
            },
            seed: vec![0.2, 0.3, 0.25],
            floor: 0.4,
            gaussian: None,
            residual: Some(Box::new(forewarn_core::threshold::ResidualThreshold {
                seed: vec![0.1, 0.05],
                floor: 0.2,
            })),
        };
        let fixed = ThresholdStrategy::Fixed { threshold: 0.75 };
        for (stored, runs) in [
            (Some(gaussian.clone()), gaussian),
            (Some(dynamic.clone()), dynamic),
            (None, fixed),
        ] {
            let mut m = model();
            m.meta.strategy = stored.clone();
            // A frozen-channel rule with a strategy; none without.
            let flatline = stored.as_ref().map(|_| Flatline {
                limits: vec![20, 0, 52],
            });
            m.meta.flatline = flatline.clone();
            save_model(&m, &dir).unwrap();
            let json: serde_json::Value =
                serde_json::from_slice(&std::fs::read(dir.join(META_FILE)).unwrap()).unwrap();
            assert_eq!(json.get("strategy").is_some(), stored.is_some());
            assert_eq!(json.get("flatline").is_some(), stored.is_some());
            let loaded = load(&dir, tch::Device::Cpu).unwrap();
            assert_eq!(loaded.meta.strategy, stored);
            let cfg = loaded.engine_config(DetectorConfig::default(), 1);
            assert_eq!(cfg.strategy, runs, "{stored:?}");
            assert_eq!(cfg.flatline, flatline);
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
            save_model(&m, &dir)
                .unwrap_err()
                .to_string()
                .contains("3 channels")
        );
        save_model(&model(), &dir).unwrap();
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

    mod ensemble;
    mod recurrent_context;

    #[test]
    fn missing_and_corrupt_files_are_errors() {
        crate::test_init();
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("m");
        let m = model();

        assert!(load_err(&dir).contains(META_FILE));

        save_model(&m, &dir).unwrap();
        std::fs::remove_file(dir.join(WEIGHTS_FILE)).unwrap();
        let e = load_err(&dir);
        assert!(e.contains(WEIGHTS_FILE) && e.contains("missing"), "{e}");

        // Truncated weights.
        save_model(&m, &dir).unwrap();
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
        save_model(&m, &dir).unwrap();
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
                "flatline: flatline watches 2 channels, the model monitors 3",
                Box::new(|v| v["flatline"] = serde_json::json!({"limits": [20, 0]})),
            ),
            (
                "flatline: flatline watches no channel",
                Box::new(|v| v["flatline"] = serde_json::json!({"limits": [0, 0, 0]})),
            ),
            (
                "flatline: flatline watches no channel",
                Box::new(|v| {
                    v["flatline"] =
                        serde_json::json!({"readings": 0, "watched": [true, true, true]})
                }),
            ),
            (
                "2 forecast-constant flags for 3 channels",
                Box::new(|v| v["scaler"]["forecast_constant"] = serde_json::json!([true, false])),
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
            save_model(&m, &dir).unwrap();
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
        save_model(&m, &dir).unwrap();
        let plain: serde_json::Value =
            serde_json::from_slice(&std::fs::read(dir.join(META_FILE)).unwrap()).unwrap();
        assert!(plain.get("highway").is_none());

        let spec = small_spec();
        m.network = Network::Forecaster(
            LstmForecaster::with_highway(spec, Highway::Cross, tch::Device::Cpu).unwrap(),
        );
        fc(&mut m)
            .set_highway_weight(
                &Highway::Cross
                    .mask(&spec, &[0, 1, 2])
                    .unwrap()
                    .iter()
                    .map(|v| 0.3 * v)
                    .collect::<Vec<_>>(),
            )
            .unwrap();
        m.meta.weights_sha256 = m.network.weights_sha256().unwrap();
        // The description must say highway too.
        let e = save_model(&m, &dir).unwrap_err().to_string();
        assert!(e.contains("highway"), "{e}");
        m.meta.highway = Highway::Cross;
        save_model(&m, &dir).unwrap();
        let mut loaded = load(&dir, tch::Device::Cpu).unwrap();
        assert_eq!(loaded.meta.highway, Highway::Cross);
        let Network::Forecaster(f) = &mut loaded.network else {
            panic!("a forecaster artifact loads as the forecaster")
        };
        assert_eq!(f.highway(), Highway::Cross);
        assert_eq!(predict(f), predict(fc(&mut m)));

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

    /// The per-variable model (full and cross) and the autoencoder (cross)
    /// with a highway, its weights set away from zero so that they count.
    fn highway_networks() -> Vec<Network> {
        let cpu = tch::Device::Cpu;
        let spec = MultimodalSpec {
            channels: 3,
            outputs: 3,
            encoder_hidden: 2,
            hidden: 5,
            layers: 2,
            horizon: 4,
        };
        let mut out = Vec::new();
        for hw in [Highway::Cross, Highway::Full] {
            let m = MultimodalForecaster::with_highway(spec, hw, cpu).unwrap();
            let mask = hw
                .mask_for(4, &[0, 1, 2], 3)
                .unwrap_or_else(|| vec![1.0; 36]);
            let w: Vec<f32> = mask
                .iter()
                .enumerate()
                .map(|(i, v)| v * (0.05 * i as f32 - 0.4))
                .collect();
            m.set_highway_weight(&w).unwrap();
            out.push(Network::PerVariable(m));
        }
        let ae_spec = AutoencoderSpec {
            channels: 3,
            outputs: 3,
            hidden: 6,
            horizon: 4,
        };
        let ae = LstmAutoencoder::with_highway(ae_spec, Highway::Cross, cpu).unwrap();
        ae.set_highway_weight(&[0.0, 0.5, -0.3, 0.2, 0.0, 0.7, -0.6, 0.1, 0.0])
            .unwrap();
        out.push(Network::Autoencoder(ae));
        out
    }

    /// The per-variable model and the autoencoder with a highway: saved and
    /// loaded, the same outputs; `model.json` records the highway; an
    /// artifact whose description and weights disagree about it is refused
    /// by name, both ways; the autoencoder refuses a full highway.
    #[test]
    fn highways_of_the_other_kinds_round_trip_and_mismatches_are_errors() {
        crate::test_init();
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("hw");
        for network in highway_networks() {
            let kind = network.kind();
            let mut m = model_of(network);
            let highway = m.meta.highway;
            assert_ne!(highway, Highway::None, "{kind}");
            save_model(&m, &dir).unwrap();
            let json: serde_json::Value =
                serde_json::from_slice(&std::fs::read(dir.join(META_FILE)).unwrap()).unwrap();
            assert_eq!(json["highway"], serde_json::to_value(highway).unwrap());
            let mut loaded = load(&dir, tch::Device::Cpu).unwrap();
            assert_eq!(loaded.meta, m.meta, "{kind}");
            let (c, h) = (3, m.meta.horizon);
            let want = step(&mut m.network, c, h);
            assert_eq!(step(&mut loaded.network, c, h), want, "{kind} {highway:?}");
            // The highway counts: the same network without it differs.
            let plain = match &m.network {
                Network::PerVariable(p) => Network::PerVariable(
                    MultimodalForecaster::new(*p.spec(), tch::Device::Cpu).unwrap(),
                ),
                Network::Autoencoder(a) => {
                    Network::Autoencoder(LstmAutoencoder::new(*a.spec(), tch::Device::Cpu).unwrap())
                }
                Network::Forecaster(_) | Network::ConvLstm(_) | Network::Ensemble(_) => {
                    unreachable!()
                }
            };
            tch::no_grad(|| {
                let src = m.network.as_ref().var_store().variables();
                for (name, mut v) in plain.as_ref().var_store().variables() {
                    v.copy_(&src[&name]);
                }
            });
            let mut plain = plain;
            assert_ne!(step(&mut plain, c, h).0, want.0, "{kind}");

            // Without the key (as a build without these highways reads
            // it) the description does not fit the weights.
            edit_meta(&dir, |v| {
                v.as_object_mut().unwrap().remove("highway");
            });
            let e = load_err(&dir);
            assert!(
                e.contains("unexpected parameters highway.weight"),
                "{kind}: {e}"
            );
            // Saving refuses a description that disagrees with the network.
            let mut wrong = model_of(plain);
            wrong.meta.highway = highway;
            let e = save_model(&wrong, &dir).unwrap_err().to_string();
            assert!(e.contains("highway"), "{kind}: {e}");
        }
        // Weights without a highway under a description with one.
        let plain = model_of(networks().pop().unwrap());
        save_model(&plain, &dir).unwrap();
        edit_meta(&dir, |v| v["highway"] = "cross".into());
        let e = load_err(&dir);
        assert!(e.contains("parameter highway.weight is missing"), "{e}");
        // The autoencoder refuses full, in the network and in model.json.
        let spec = AutoencoderSpec {
            channels: 3,
            outputs: 3,
            hidden: 6,
            horizon: 4,
        };
        let e = LstmAutoencoder::with_highway(spec, Highway::Full, tch::Device::Cpu)
            .unwrap_err()
            .to_string();
        assert!(e.contains("identity"), "{e}");
        let ae = model_of(highway_networks().pop().unwrap());
        save_model(&ae, &dir).unwrap();
        edit_meta(&dir, |v| v["highway"] = "full".into());
        let e = load_err(&dir);
        assert!(e.contains("highway \"full\" on the autoencoder"), "{e}");
    }

    #[test]
    fn loaded_model_can_move_to_another_thread() {
        fn assert_send<T: Send>() {}
        assert_send::<Model>();
    }

    #[test]
    fn save_refuses_invalid_metadata() {
        crate::test_init();
        let tmp = tempfile::tempdir().unwrap();
        let mut m = model();
        m.meta.threshold.value = f64::NAN;
        assert!(save_model(&m, tmp.path()).is_err());
        let mut m = model();
        m.meta.weights_sha256 = "f".repeat(64);
        assert!(
            save_model(&m, tmp.path())
                .unwrap_err()
                .to_string()
                .contains("weights_sha256")
        );
        assert!(!tmp.path().join(META_FILE).exists());
    }

    /// convlstm's grid fields: written as the network has them (the layout
    /// by channel name, `null` a gap), read back, and every inconsistency
    /// refused by name; the other kinds refuse them; bf16 is refused.
    #[test]
    fn convlstm_grid_fields_round_trip_and_are_validated() {
        crate::test_init();
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("grid");
        let cpu = tch::Device::Cpu;
        let mut m = model_of(Network::ConvLstm(ConvLstm::new(grid_spec(), cpu).unwrap()));
        save_model(&m, &dir).unwrap();
        let json: serde_json::Value =
            serde_json::from_slice(&std::fs::read(dir.join(META_FILE)).unwrap()).unwrap();
        assert_eq!(json["kind"], "convlstm");
        assert_eq!(json["grid"], serde_json::json!([2, 2]));
        assert_eq!(json["layout"], serde_json::json!(["c", "a", null, "b"]));
        assert_eq!(
            (json["kernel"].clone(), json["filters"].clone()),
            (3.into(), 2.into())
        );
        let mut loaded = load(&dir, cpu).unwrap();
        assert_eq!(loaded.meta, m.meta);
        assert_eq!(step(&mut loaded.network, 3, 4), step(&mut m.network, 3, 4));
        // The engine names alerts' cells from the same layout.
        let grid = loaded
            .engine_config(DetectorConfig::default(), 4)
            .grid
            .unwrap();
        let slot = |c: &str| grid.slot(c).map(|s| (s.row, s.col));
        assert_eq!(
            (slot("c"), slot("a"), slot("b")),
            (Some((0, 0)), Some((0, 1)), Some((1, 1)))
        );
        assert!(
            model()
                .engine_config(DetectorConfig::default(), 4)
                .grid
                .is_none()
        );
        let e = loaded.network.set_precision(Precision::Bf16).unwrap_err();
        assert!(e.to_string().contains("forecaster only"), "{e}");
        type Edit = Box<dyn Fn(&mut serde_json::Value)>;
        let cases: Vec<(Edit, &str)> = vec![
            (Box::new(|v| v["kernel"] = 4.into()), "kernel 4 must be odd"),
            (
                Box::new(|v| v["grid"] = serde_json::json!([3, 2])),
                "layout has 4 cells",
            ),
            (
                Box::new(|v| v["layout"] = serde_json::json!(["c", "a", "x", "b"])),
                "\"x\", which is not a channel",
            ),
            (
                Box::new(|v| v["layout"] = serde_json::json!(["c", "a", "a", "b"])),
                "places \"a\" twice",
            ),
            (
                Box::new(|v| v["layout"] = serde_json::json!(["c", "a", null, null])),
                "monitored channel \"b\" is not on the grid",
            ),
            (
                Box::new(|v| {
                    v.as_object_mut().unwrap().remove("filters");
                }),
                "needs grid, layout, kernel and filters",
            ),
            (
                Box::new(|v| v["filters"] = 3.into()),
                "hidden 2 differs from filters 3",
            ),
            (
                Box::new(|v| v["highway"] = "cross".into()),
                "parameter highway.weight is missing",
            ),
            (
                Box::new(|v| v["kind"] = "forecaster".into()),
                "settings of kind convlstm, not of kind forecaster",
            ),
        ];
        for (edit, want) in cases {
            save_model(&m, &dir).unwrap();
            edit_meta(&dir, edit);
            let e = load_err(&dir);
            assert!(e.contains(want), "want {want:?} in: {e}");
        }
    }
}
