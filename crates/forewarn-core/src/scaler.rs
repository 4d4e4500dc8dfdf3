//! Per-channel standardisation fitted on normal data.

use serde::{Deserialize, Serialize};

/// Smallest scale used for a channel. A constant channel in training would
/// otherwise divide by zero and turn any later change into infinity.
pub const MIN_SCALE: f32 = 1e-6;

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
    /// Channels that were constant in training. [`Self::transform`] reads
    /// them as that constant (0 once scaled), whatever they do later: the
    /// model never saw them move, so no training step shaped its input
    /// weights for them (a change would push its forecasts of every
    /// channel by untrained amounts) and nothing says how much of a change
    /// is normal. A command or mode flag that switches, a setpoint that is
    /// moved, a spare sensor coming alive: none alarms by itself; what it
    /// does to the other channels still does. Their scale is 1.
    #[serde(default)]
    pub constant: Vec<bool>,
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
        }
    }

    pub fn channels(&self) -> usize {
        self.center.len()
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
        };
        for (v, want) in [(3e38f32, SCALED_LIMIT), (-3e38, -SCALED_LIMIT), (1.0, 10.0)] {
            let mut row = [v];
            s.transform(&mut row);
            assert_eq!(row, [want]);
        }
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
