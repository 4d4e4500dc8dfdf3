//! Per-channel standardisation fitted on normal data.

use serde::{Deserialize, Serialize};

/// Smallest scale used for a channel. A constant channel in training would
/// otherwise divide by zero and turn any later change into infinity.
pub const MIN_SCALE: f32 = 1e-6;

/// A monitored channel constant in training is scaled by this fraction of
/// its level (`max(|center|, range, 1e-3)`): see
/// [`Scaler::monitor_constant_channels`].
pub const CONSTANT_FLOOR_RATIO: f32 = 0.01;

/// Largest magnitude of a scaled value. A finite reading far outside the
/// training range (3e38 against a scale of 0.1) would otherwise overflow to
/// infinity and make scores infinite; a million standard deviations is
/// anomalous enough.
pub const SCALED_LIMIT: f32 = 1e6;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Scaler {
    /// Subtracted from each channel.
    pub center: Vec<f32>,
    /// Each channel is divided by this (never below [`MIN_SCALE`]).
    pub scale: Vec<f32>,
    /// Channels that were constant in training and are read as that
    /// constant (0 once scaled) by [`Self::transform`], whatever they do
    /// later: the model never saw them move, so no training step shaped
    /// its input weights for them (a change would push its forecasts of
    /// every channel by untrained amounts). Their scale is 1. Training
    /// keeps the flag only on context channels (a command or mode flag
    /// that switches, a setpoint that is moved: what it does to the
    /// monitored channels still shows); a monitored channel constant in
    /// training is scaled instead ([`Self::monitor_constant_channels`]),
    /// so a stuck sensor that starts moving alarms.
    #[serde(default)]
    pub constant: Vec<bool>,
    /// Monitored channels that were constant in training (those
    /// [`Self::monitor_constant_channels`] unfroze): their forecast is that
    /// constant (0 once scaled; [`Self::pin_forecasts`]), not the model's.
    /// The model learnt nothing about them, so its output for them is a
    /// wobble that follows the other inputs (a command it never saw
    /// switches) and would alarm while the channel sits still; the
    /// evidence is the channel leaving its only value. Empty in artifacts
    /// from before the flag: the model's forecast then.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub forecast_constant: Vec<bool>,
}

impl Scaler {
    /// Fits mean and standard deviation per channel over row-major `rows`
    /// of `channels` values.
    pub fn fit(rows: &[f32], channels: usize) -> Self {
        assert!(channels > 0 && rows.len().is_multiple_of(channels));
        let n = (rows.len() / channels).max(1) as f64;
        let mut mean = vec![0f64; channels];
        for row in rows.chunks_exact(channels) {
            for (m, v) in mean.iter_mut().zip(row) {
                *m += *v as f64;
            }
        }
        mean.iter_mut().for_each(|m| *m /= n);
        let mut var = vec![0f64; channels];
        for row in rows.chunks_exact(channels) {
            for ((s, v), m) in var.iter_mut().zip(row).zip(&mean) {
                *s += (*v as f64 - m).powi(2);
            }
        }
        let mut scale = Vec::with_capacity(channels);
        let mut constant = Vec::with_capacity(channels);
        for s in var {
            let sd = (s / n).sqrt() as f32;
            let is_const = sd < MIN_SCALE;
            constant.push(is_const);
            scale.push(if is_const { 1.0 } else { sd });
        }
        Self {
            center: mean.into_iter().map(|m| m as f32).collect(),
            scale,
            constant,
            forecast_constant: Vec::new(),
        }
    }

    pub fn channels(&self) -> usize {
        self.center.len()
    }

    /// Unfreezes the channels flagged constant that are not `context`
    /// (monitored ones), fitted on row-major `rows`: each is scaled by
    /// `CONSTANT_FLOOR_RATIO x max(|center|, range, 1e-3)` (`range` = max -
    /// min in `rows`), so a channel leaving its only training value gives
    /// an error of hundreds of scaled units per percent of its level and
    /// alarms, instead of being read as its constant forever (a stuck
    /// sensor that comes alive, a valve that was never moved). Channels
    /// that varied keep their fitted scale; context channels stay frozen.
    pub fn monitor_constant_channels(&mut self, rows: &[f32], context: &[bool]) {
        let c = self.channels();
        for j in 0..c {
            let flagged = self.constant.get(j).copied().unwrap_or(false);
            if !flagged || context.get(j).copied().unwrap_or(false) {
                continue;
            }
            let (lo, hi) = rows
                .chunks_exact(c)
                .map(|r| r[j])
                .fold((f32::INFINITY, f32::NEG_INFINITY), |(lo, hi), v| {
                    (lo.min(v), hi.max(v))
                });
            let range = if hi >= lo { hi - lo } else { 0.0 };
            let level = self.center[j].abs().max(range).max(1e-3);
            self.scale[j] = (CONSTANT_FLOOR_RATIO * level).max(MIN_SCALE);
            self.constant[j] = false;
            self.forecast_constant.resize(c, false);
            self.forecast_constant[j] = true;
        }
    }

    /// Positions among `monitored` (the forecast's columns) of the channels
    /// forecast as their training constant ([`Self::forecast_constant`]).
    pub fn pinned_outputs(&self, monitored: &[usize]) -> Vec<usize> {
        monitored
            .iter()
            .enumerate()
            .filter(|&(_, &j)| self.forecasts_constant(j))
            .map(|(k, _)| k)
            .collect()
    }

    /// Whether channel `j` is a monitored channel constant in training,
    /// forecast as that constant: the one test of "constant in training"
    /// for monitored channels (training's report, the Gaussian error
    /// model and the engine's pinning all ask it).
    pub fn forecasts_constant(&self, j: usize) -> bool {
        self.forecast_constant.get(j).copied().unwrap_or(false)
    }

    /// Sets the `pinned` columns (from [`Self::pinned_outputs`]) of
    /// row-major `forecast` (`outputs` columns, scaled) to their training
    /// constant, 0.
    pub fn pin_forecasts(forecast: &mut [f32], outputs: usize, pinned: &[usize]) {
        if pinned.is_empty() {
            return;
        }
        for row in forecast.chunks_exact_mut(outputs) {
            for &k in pinned {
                row[k] = 0.0;
            }
        }
    }

    /// A scaled copy of row-major `rows`.
    pub fn transformed(&self, rows: &[f32]) -> Vec<f32> {
        let mut v = rows.to_vec();
        self.transform_all(&mut v);
        v
    }

    /// Scales one row in place; a channel constant in training becomes 0
    /// (see [`Self::constant`]).
    pub fn transform(&self, row: &mut [f32]) {
        for (j, ((v, c), s)) in row
            .iter_mut()
            .zip(&self.center)
            .zip(&self.scale)
            .enumerate()
        {
            *v = if self.constant.get(j).copied().unwrap_or(false) {
                0.0
            } else {
                ((*v - c) / s.max(MIN_SCALE)).clamp(-SCALED_LIMIT, SCALED_LIMIT)
            };
        }
    }

    /// Scales row-major data in place.
    pub fn transform_all(&self, rows: &mut [f32]) {
        for row in rows.chunks_exact_mut(self.channels()) {
            self.transform(row);
        }
    }

    pub fn inverse(&self, row: &mut [f32]) {
        for ((v, c), s) in row.iter_mut().zip(&self.center).zip(&self.scale) {
            *v = *v * s + c;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn extreme_readings_stay_finite_after_scaling() {
        let s = Scaler {
            center: vec![0.0],
            scale: vec![0.1],
            constant: vec![false],
            forecast_constant: Vec::new(),
        };
        for (v, want) in [(3e38f32, SCALED_LIMIT), (-3e38, -SCALED_LIMIT), (1.0, 10.0)] {
            let mut row = [v];
            s.transform(&mut row);
            assert_eq!(row, [want]);
        }
    }

    /// Table: (training column, context?) -> (scale, still frozen?), and
    /// what a later reading of 101 / 0.5 / 2 becomes.
    #[test]
    fn monitored_constant_channels_are_scaled_by_a_floor_and_context_ones_stay_frozen() {
        // Columns: constant 100, constant 0, varying 0..=4 (sd sqrt 2),
        // constant -3 as context.
        let rows: Vec<f32> = (0..5).flat_map(|i| [100.0, 0.0, i as f32, -3.0]).collect();
        let mut s = Scaler::fit(&rows, 4);
        assert_eq!(s.constant, vec![true, true, false, true]);
        let sd = 2f32.sqrt();
        s.monitor_constant_channels(&rows, &[false, false, false, true]);
        for (j, (scale, frozen)) in [(1.0, false), (1e-5, false), (sd, false), (1.0, true)]
            .into_iter()
            .enumerate()
        {
            assert!(
                (s.scale[j] - scale).abs() < 1e-6 * scale.max(1.0),
                "{j}: {}",
                s.scale[j]
            );
            assert_eq!(s.constant[j], frozen, "{j}");
        }
        // 100 -> 101 is 1 % of the level: 1 scaled unit; 0 -> 0.5 is 50,000
        // (the floor 1e-3 x 0.01); the context channel reads as its constant.
        let mut row = [101.0, 0.5, 2.0 + sd, 40.0];
        s.transform(&mut row);
        assert!((row[0] - 1.0).abs() < 1e-4, "{row:?}");
        assert!((row[1] - 50_000.0).abs() < 1.0, "{row:?}");
        assert!((row[2] - 1.0).abs() < 1e-5, "{row:?}");
        assert_eq!(row[3], 0.0);
        // The two monitored ones are forecast as their constant: among the
        // forecast's columns (the monitored channels 0, 1, 2) those are 0
        // and 1, and pinning sets them to 0 in every row.
        assert_eq!(s.forecast_constant, vec![true, true, false, false]);
        assert_eq!(s.pinned_outputs(&[0, 1, 2]), vec![0, 1]);
        assert_eq!(s.pinned_outputs(&[1, 2]), vec![0]);
        let mut forecast = [0.5, -0.5, 2.0, 0.25, 0.75, -1.0];
        Scaler::pin_forecasts(&mut forecast, 3, &s.pinned_outputs(&[0, 1, 2]));
        assert_eq!(forecast, [0.0, 0.0, 2.0, 0.0, 0.0, -1.0]);
        // Stored in the artifact; absent (artifacts before the flag, or no
        // such channel): nothing is pinned.
        let back: Scaler = serde_json::from_str(&serde_json::to_string(&s).unwrap()).unwrap();
        assert_eq!(back, s);
        let plain = Scaler::fit(&[1.0, 2.0], 1);
        let text = serde_json::to_string(&plain).unwrap();
        assert!(!text.contains("forecast_constant"), "{text}");
        assert!(plain.pinned_outputs(&[0]).is_empty());
        // A level scaled by its range when that is larger than its mean.
        let rows = [-0.5f32, 0.0, 0.5];
        let mut s = Scaler::fit(&rows, 1);
        s.constant = vec![true];
        s.monitor_constant_channels(&rows, &[]);
        assert!((s.scale[0] - 0.01).abs() < 1e-7);
    }

    #[test]
    fn fit_standardises_and_handles_constant_channels() {
        // channel 0: 1,3 (mean 2, sd 1); channel 1 constant 5.
        let rows = [1.0, 5.0, 3.0, 5.0];
        let s = Scaler::fit(&rows, 2);
        assert_eq!(s.center, vec![2.0, 5.0]);
        assert_eq!(s.scale, vec![1.0, 1.0]);
        assert_eq!(s.constant, vec![false, true]);
        // The constant channel reads as its training value whatever it does.
        let mut row = [4.0, 7.0];
        s.transform(&mut row);
        assert_eq!(row, [2.0, 0.0]);
        s.inverse(&mut row);
        assert_eq!(row, [4.0, 5.0]);
        // Flags absent (artifacts before them): every channel is scaled.
        let unflagged = Scaler {
            constant: vec![],
            ..s
        };
        let mut row = [4.0, 7.0];
        unflagged.transform(&mut row);
        assert_eq!(row, [2.0, 2.0]);
    }
}
