//! What an [`super::Engine`] runs with: the model's schema, monitored
//! channels, scaling, batching, strategy and hysteresis.

use crate::alert::{ChannelShare, GridCell};
use crate::detector::DetectorConfig;
use crate::flatline::Flatline;
use crate::grid::GridLayout;
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
    /// Frozen channels ([`crate::flatline`]): flagged beside the strategy's
    /// score; `None` for models without the rule.
    pub flatline: Option<Flatline>,
    pub detector: DetectorConfig,
    pub model: String,
    pub model_version: String,
    /// Most devices in one forecaster call.
    pub max_batch: usize,
    /// Where the monitored channels sit on a plate, for models whose
    /// sensors are laid out on a grid (kind `convlstm`): alerts then name
    /// the cells behind the error. `None` for every other kind.
    pub grid: Option<GridLayout>,
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
        if let Some(g) = &self.grid {
            let names = self.schema.channels();
            for s in g.slots() {
                if !self.monitored.iter().any(|&i| names[i] == s.channel) {
                    return Err(format!("grid channel {} is not monitored", s.channel));
                }
            }
            if let Some(&i) = self
                .monitored
                .iter()
                .find(|&&i| g.slot(&names[i]).is_none())
            {
                return Err(format!("monitored channel {} is not on the grid", names[i]));
            }
        }
        Ok(())
    }

    /// The strategy's nominal threshold (the fixed or Gaussian threshold,
    /// the dynamic threshold's floor): what to show where no batch's own
    /// threshold is at hand.
    pub fn threshold(&self) -> f64 {
        self.strategy.nominal_threshold()
    }

    /// The `n` largest error shares, largest first. `shares` are of the
    /// monitored channels (`monitored[i]` is share `i`'s position in the
    /// schema), so a context channel is never named.
    pub(super) fn contributors(&self, shares: &[f64], n: usize) -> Vec<ChannelShare> {
        let (schema, monitored) = (&self.schema, &self.monitored);
        let mut idx: Vec<usize> = (0..shares.len()).filter(|i| shares[*i] > 0.0).collect();
        idx.sort_by(|a, b| shares[*b].total_cmp(&shares[*a]));
        idx.into_iter()
            .take(n)
            .map(|i| ChannelShare {
                channel: schema.channels()[monitored[i]].clone(),
                share: shares[i],
            })
            .collect()
    }

    /// The grid cells of an alert's contributors, when the model has a
    /// grid: derived where an alert is emitted, since checkpoints do not
    /// keep them.
    pub(super) fn cells(&self, contributors: &[ChannelShare]) -> Vec<GridCell> {
        (self.grid.as_ref())
            .map(|g| g.cells(contributors))
            .unwrap_or_default()
    }

    /// How many shares a device view names: the top
    /// [`super::MAX_CONTRIBUTORS`], or on a grid every channel (the
    /// console's heat map).
    pub(super) fn view_shares(&self) -> usize {
        match self.grid {
            Some(_) => self.monitored.len(),
            None => super::MAX_CONTRIBUTORS,
        }
    }

    /// Floats one device holds in `Device::floats`: recurrent state, the
    /// forecast of the monitored channels, the batch being filled.
    pub(super) fn float_len(&self) -> usize {
        self.state_len + self.horizon * (self.monitored.len() + self.schema.len())
    }
}

#[cfg(test)]
mod tests {
    use crate::grid::{GridLayout, GridSlot};

    /// Table: grid -> whether the config (channels a and b, both
    /// monitored) accepts it.
    #[test]
    fn a_grid_holds_exactly_the_monitored_channels() {
        let slot = |c: &str, col| GridSlot {
            channel: c.into(),
            row: 0,
            col,
        };
        let cases = vec![
            (None, Ok(())),
            (Some(vec![slot("a", 0), slot("b", 2)]), Ok(())),
            (
                Some(vec![slot("a", 0)]),
                Err("monitored channel b is not on the grid"),
            ),
            (
                Some(vec![slot("a", 0), slot("b", 1), slot("c", 2)]),
                Err("grid channel c is not monitored"),
            ),
        ];
        for (slots, want) in cases {
            let mut cfg = crate::testing::engine(1).config().clone();
            cfg.grid = slots.map(|s| GridLayout::new(1, 3, s).unwrap());
            assert_eq!(cfg.check_monitored(), want.map_err(String::from));
        }
    }
}
