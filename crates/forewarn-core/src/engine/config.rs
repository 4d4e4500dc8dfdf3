//! What an [`super::Engine`] runs with: the model's schema, monitored
//! channels, scaling, batching, strategy and hysteresis.

use crate::detector::DetectorConfig;
use crate::reading::Schema;
use crate::scaler::Scaler;
use crate::threshold::ThresholdStrategy;

#[derive(Debug, Clone)]
pub struct EngineConfig {
    pub schema: Schema,
    /// Positions in `schema` of the monitored channels, increasing: the
    /// ones the model forecasts and the engine scores, names as
    /// contributors and alarms on. The others are context channels
    /// (setpoints, commands, modes): inputs only. Every channel when the
    /// model has no context ([`EngineConfig::all_monitored`]).
    pub monitored: Vec<usize>,
    pub scaler: Scaler,
    /// Readings per forecast batch.
    pub horizon: usize,
    /// Readings kept per device in its sliding window.
    pub window: usize,
    /// Readings a device must have been fed before its batches are scored
    /// (the LSTM state needs history to forecast well).
    pub warmup: usize,
    pub state_len: usize,
    /// How a batch's errors become a score and what it is compared with.
    pub strategy: ThresholdStrategy,
    pub detector: DetectorConfig,
    pub model: String,
    pub model_version: String,
    /// Most devices in one forecaster call.
    pub max_batch: usize,
}

impl EngineConfig {
    /// `monitored` for a model without context channels: all `channels`.
    pub fn all_monitored(channels: usize) -> Vec<usize> {
        (0..channels).collect()
    }

    /// Whether `monitored` is a valid, non-empty, increasing list of
    /// positions in the schema; the message says what is wrong.
    pub fn check_monitored(&self) -> Result<(), String> {
        let c = self.schema.len();
        if self.monitored.is_empty() {
            return Err("no monitored channel".into());
        }
        if self.monitored.windows(2).any(|w| w[0] >= w[1]) || self.monitored.iter().any(|&i| i >= c)
        {
            return Err(format!(
                "monitored channels {:?} are not increasing positions among {c} channels",
                self.monitored
            ));
        }
        Ok(())
    }

    /// The strategy's nominal threshold (the fixed or Gaussian threshold,
    /// the dynamic threshold's floor): what to show where no batch's own
    /// threshold is at hand.
    pub fn threshold(&self) -> f64 {
        self.strategy.nominal_threshold()
    }

    /// Floats one device holds in `Device::floats`: recurrent state, the
    /// forecast of the monitored channels, the batch being filled.
    pub(super) fn float_len(&self) -> usize {
        self.state_len + self.horizon * (self.monitored.len() + self.schema.len())
    }
}
