//! How a network is trained: model.toml's `[model]` training keys as the
//! training loop takes them (`forewarn-offline` fills them in from
//! model.toml, whose defaults are the only ones).

use crate::artifact::ModelKind;
use crate::error::ModelError;
use crate::highway::Highway;

#[derive(Debug, Clone, PartialEq)]
pub struct TrainSettings {
    /// The network trained.
    pub kind: ModelKind,
    /// LSTM width (per_variable: the joint LSTM's; autoencoder: encoder
    /// and decoder).
    pub hidden: usize,
    /// Stacked LSTM layers (forecaster, per_variable).
    pub layers: usize,
    /// per_variable: width of each channel's encoder.
    pub encoder_hidden: usize,
    /// Rows per forecast batch (the engine's batch length; the
    /// autoencoder: rows per reconstructed window).
    pub horizon: usize,
    /// Truncated-BPTT chunk length, the engine's window and the warm-up:
    /// readings a device needs before its batches are scored.
    pub window: usize,
    pub epochs: usize,
    /// Adam learning rate.
    pub learning_rate: f64,
    /// Forecasting kinds: contiguous streams trained side by side (the
    /// minibatch). Fewer are used when the data is short, so that every
    /// epoch still takes at least [`MIN_STEPS_PER_EPOCH`] optimizer steps
    /// (with 400 rows and 16 streams an epoch would otherwise be a single
    /// step).
    pub batch_streams: usize,
    /// The autoencoder: windows per optimizer step.
    pub batch_windows: usize,
    /// Fraction of the rows, at the end, held out for validation (early
    /// stopping) and threshold calibration.
    pub validation_fraction: f64,
    /// Stop after this many epochs without a better validation loss
    /// (0 = never stop early). The best epoch's weights are kept either way.
    pub patience: usize,
    /// Seeds libtorch before the network is initialised (an ensemble's
    /// first member; the others: [`Self::member_seed`]).
    pub seed: u64,
    /// Networks trained, each from its own seed, whose forecasts the
    /// model averages (1 to [`crate::artifact::MAX_MEMBERS`]).
    pub members: usize,
    /// Largest L2 norm of all gradients together (LSTMs occasionally spike).
    pub grad_clip: f64,
    /// Scale channels by median and IQR instead of mean and standard
    /// deviation ([`forewarn_core::robust_scaler`]); the artifact format is
    /// the same either way.
    pub robust_scaling: bool,
    /// The linear highway ([`Highway`]); when present its weights start at
    /// the ridge least-squares fit on the training part
    /// ([`crate::highway::least_squares`]) and are then trained with the
    /// LSTMs. `Cross` on a single channel builds no highway (nothing to
    /// read); the autoencoder refuses `Full`.
    pub highway: Highway,
    /// Globs (`*`, `?`) naming the context channels: inputs the network
    /// reads but never forecasts (setpoints, commands, modes); matched
    /// against the data's columns by [`forewarn_data::context_flags`].
    pub context: Vec<String>,
    /// Whether the recurrent network reads the context channels (`false`:
    /// the forecaster's LSTM reads the monitored channels alone and the
    /// context reaches its forecast through the highway only;
    /// [`crate::LstmForecaster::set_recurrent_context`]). `false` is the
    /// forecaster's only.
    pub recurrent_context: bool,
    /// The grid's `[rows, cols]` the monitored channels lie on (every
    /// kind's alerts name its cells; convlstm convolves over it); absent,
    /// none (convlstm: one row of the monitored channels).
    pub grid: Option<[usize; 2]>,
    /// With `grid`: a channel name per cell, row-major, `""` a gap;
    /// empty, the monitored channels row-major.
    pub layout: Vec<String>,
    /// convlstm: odd side of the gates' convolution.
    pub kernel: usize,
    /// convlstm: hidden maps per layer.
    pub filters: usize,
    pub device: tch::Device,
}

/// Fewest optimizer steps (chunks per stream) an epoch of a forecasting
/// kind is allowed; see [`TrainSettings::batch_streams`].
pub const MIN_STEPS_PER_EPOCH: usize = 8;

impl TrainSettings {
    /// Checks the settings; the message names the setting.
    pub fn validate(&self) -> Result<(), ModelError> {
        let bad = |m: String| Err(ModelError::Config(m));
        for (name, v) in [
            ("hidden", self.hidden),
            ("layers", self.layers),
            ("encoder_hidden", self.encoder_hidden),
            ("horizon", self.horizon),
            ("window", self.window),
            ("epochs", self.epochs),
            ("batch_streams", self.batch_streams),
            ("batch_windows", self.batch_windows),
            ("filters", self.filters),
            ("members", self.members),
        ] {
            if v == 0 {
                return bad(format!("{name} must be at least 1"));
            }
        }
        if self.members > crate::artifact::MAX_MEMBERS {
            return bad(format!(
                "members must be at most {}, got {}",
                crate::artifact::MAX_MEMBERS,
                self.members
            ));
        }
        if !(self.learning_rate.is_finite() && self.learning_rate > 0.0) {
            return bad(format!(
                "learning_rate must be positive, got {}",
                self.learning_rate
            ));
        }
        if !(self.grad_clip.is_finite() && self.grad_clip > 0.0) {
            return bad(format!(
                "grad_clip must be positive, got {}",
                self.grad_clip
            ));
        }
        if !(self.validation_fraction > 0.0 && self.validation_fraction < 1.0) {
            return bad(format!(
                "validation_fraction must be in (0, 1), got {}",
                self.validation_fraction
            ));
        }
        if !self.recurrent_context && self.kind != ModelKind::Forecaster {
            return bad(format!(
                "recurrent_context = false is implemented for the forecaster only, not the {}",
                self.kind
            ));
        }
        if self.kind == ModelKind::Autoencoder
            && let Some(why) = crate::autoencoder::highway_refusal(self.highway)
        {
            return bad(why);
        }
        if self.kind == ModelKind::ConvLstm
            && (self.kernel.is_multiple_of(2) || self.kernel > crate::convlstm::MAX_KERNEL)
        {
            return bad(format!(
                "kernel must be odd and at most {}, got {}",
                crate::convlstm::MAX_KERNEL,
                self.kernel
            ));
        }
        Ok(())
    }

    /// The seed of ensemble member `i` (0-based): `seed` for the first, so
    /// one member is the network `seed` alone trains; the others far
    /// apart (splitmix64), so the members of seeds 1 and 2 share none.
    pub fn member_seed(&self, i: usize) -> u64 {
        if i == 0 {
            return self.seed;
        }
        let mut z = (self.seed ^ (i as u64).rotate_left(32)).wrapping_add(0x9E37_79B9_7F4A_7C15);
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        // libtorch takes an i64 seed.
        (z ^ (z >> 31)) >> 1
    }

    /// The layout as the grid resolves it (`None` when the default, `""`
    /// cells as gaps).
    pub fn grid_layout(&self) -> Option<Vec<Option<String>>> {
        (!self.layout.is_empty()).then(|| {
            self.layout
                .iter()
                .map(|n| (!n.is_empty()).then(|| n.clone()))
                .collect()
        })
    }
}
