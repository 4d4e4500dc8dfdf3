//! Frozen channels: a monitored channel that never held one exact value
//! for long in training (a continuous measurement) and now repeats one
//! value reading after reading is stuck: a transmitter that holds its last
//! value, a valve that no longer moves. A forecaster with a highway
//! forecasts a frozen channel well (its last value), so the forecast error
//! cannot see it; the run of identical readings can.
//!
//! A channel is watched when its longest run of identical consecutive
//! readings in training was at most half of `readings`; a watched channel
//! is frozen once more than `readings` consecutive readings were
//! identical. Channels that hold values in normal operation (set points,
//! counters, quantised or discrete signals, a channel constant in
//! training) are not watched. Values are compared as the engine holds
//! them (scaled, which maps identical readings to identical values).

use serde::{Deserialize, Serialize};

/// The calibrated rule, shared by every device of a model.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Flatline {
    /// More consecutive identical readings than this freeze a watched
    /// channel.
    pub readings: u32,
    /// Per monitored channel, in their order: whether it is watched.
    pub watched: Vec<bool>,
}

/// One device's runs: per monitored channel, its last reading and how many
/// consecutive readings held that value.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct FlatlineState {
    pub last: Vec<f32>,
    pub run: Vec<u32>,
}

/// Per column of row-major `rows` (`channels` wide), the longest run of
/// identical consecutive values (0 for no rows).
pub fn longest_runs(rows: &[f32], channels: usize) -> Vec<u32> {
    let mut longest = vec![0u32; channels];
    let mut state = FlatlineState::default();
    for row in rows.chunks_exact(channels) {
        advance(&mut state, row);
        for (l, r) in longest.iter_mut().zip(&state.run) {
            *l = (*l).max(*r);
        }
    }
    longest
}

/// Feeds one row to the runs (starting them on the first row).
fn advance(state: &mut FlatlineState, row: &[f32]) {
    if state.run.len() != row.len() {
        state.last = row.to_vec();
        state.run = vec![1; row.len()];
        return;
    }
    for ((last, run), v) in state.last.iter_mut().zip(&mut state.run).zip(row) {
        if v.to_bits() == last.to_bits() {
            *run = run.saturating_add(1);
        } else {
            *last = *v;
            *run = 1;
        }
    }
}

impl Flatline {
    /// The rule for `readings` from training `rows` (row-major, the
    /// monitored channels, scaled): `None` when `readings` is 0 or no
    /// channel qualifies.
    pub fn calibrate(rows: &[f32], channels: usize, readings: u32) -> Option<Self> {
        if readings == 0 || channels == 0 || rows.is_empty() {
            return None;
        }
        let watched: Vec<bool> = longest_runs(rows, channels)
            .into_iter()
            .map(|l| l * 2 <= readings)
            .collect();
        watched
            .contains(&true)
            .then_some(Self { readings, watched })
    }

    /// Feeds a batch's `rows` (row-major, the monitored channels) to the
    /// device's runs; returns the batch's score: the longest run of a
    /// watched channel at the batch's end over `readings` (frozen: above
    /// 1). Allocates only on a device's first batch.
    pub fn observe(&self, state: &mut FlatlineState, rows: &[f32]) -> f64 {
        for row in rows.chunks_exact(self.watched.len()) {
            advance(state, row);
        }
        (state.run.iter().zip(&self.watched))
            .filter(|(_, w)| **w)
            .map(|(r, _)| f64::from(*r) / f64::from(self.readings))
            .fold(0.0, f64::max)
    }

    /// Sets `shares` (one per monitored channel) to the frozen channels'
    /// runs at the last batch's end, normalised; all zero when none is.
    pub fn shares(&self, state: &FlatlineState, shares: &mut Vec<f64>) {
        shares.clear();
        shares.extend(state.run.iter().zip(&self.watched).map(|(r, w)| {
            if *w && *r > self.readings {
                f64::from(*r)
            } else {
                0.0
            }
        }));
        let total: f64 = shares.iter().sum();
        if total > 0.0 {
            shares.iter_mut().for_each(|s| *s /= total);
        }
    }

    /// Whether a restored device's runs can be this rule's.
    pub fn fits(&self, state: &FlatlineState) -> bool {
        let n = self.watched.len();
        (state.run.is_empty() && state.last.is_empty())
            || (state.run.len() == n && state.last.len() == n)
    }

    /// Bytes a device's runs hold.
    pub fn state_bytes(&self) -> usize {
        std::mem::size_of::<FlatlineState>() + self.watched.len() * (4 + 4)
    }

    /// Checks the rule against the model's monitored channel count.
    pub fn validate(&self, channels: usize) -> Result<(), String> {
        if self.readings == 0 {
            return Err("flatline readings must be positive".into());
        }
        if self.watched.len() != channels {
            return Err(format!(
                "flatline watches {} channels, the model monitors {channels}",
                self.watched.len()
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Table: column -> longest run of identical consecutive values.
    #[test]
    fn longest_runs_per_column() {
        // Columns: always changing; 3 equal then changing; constant.
        let rows = [
            1.0, 5.0, 7.0, //
            2.0, 5.0, 7.0, //
            3.0, 5.0, 7.0, //
            4.0, 6.0, 7.0, //
        ];
        assert_eq!(longest_runs(&rows, 3), vec![1, 3, 4]);
        assert_eq!(longest_runs(&[], 2), vec![0, 0]);
    }

    /// Channels that held a value in training for more than half of
    /// `readings` are not watched; `None` without a watched channel or
    /// with `readings` 0.
    #[test]
    fn calibration_watches_channels_that_never_sat_still() {
        let rows: Vec<f32> = (0..100)
            .flat_map(|i| [i as f32, (i / 15) as f32, 2.0])
            .collect();
        let f = Flatline::calibrate(&rows, 3, 20).unwrap();
        assert_eq!(f.watched, vec![true, false, false]);
        // Runs of 15: watched from `readings` 30.
        assert_eq!(
            Flatline::calibrate(&rows, 3, 29).unwrap().watched,
            vec![true, false, false]
        );
        assert_eq!(
            Flatline::calibrate(&rows, 3, 30).unwrap().watched,
            vec![true, true, false]
        );
        assert_eq!(Flatline::calibrate(&rows, 3, 0), None);
        let still: Vec<f32> = (0..100).flat_map(|i| [(i / 30) as f32]).collect();
        assert_eq!(Flatline::calibrate(&still, 1, 20), None);
    }

    /// A watched channel that holds 9.0 from row 9 on: batches of 5 rows
    /// score its run at the batch's end over 4, frozen (above 1) from the
    /// batch where the run passes 4, with the share on it; the
    /// unwatched channel, constant throughout, never counts; the runs carry
    /// across batches.
    #[test]
    fn a_frozen_channel_scores_its_run_over_the_limit() {
        let f = Flatline {
            readings: 4,
            watched: vec![true, false],
        };
        let mut state = FlatlineState::default();
        let mut shares = vec![];
        let row = |i: usize| [if i < 10 { i as f32 } else { 9.0 }, 1.0];
        let mut scores = vec![];
        for b in 0..4 {
            let rows: Vec<f32> = (b * 5..b * 5 + 5).flat_map(row).collect();
            scores.push(f.observe(&mut state, &rows));
            f.shares(&state, &mut shares);
            let frozen = if b >= 2 {
                vec![1.0, 0.0]
            } else {
                vec![0.0, 0.0]
            };
            assert_eq!(shares, frozen, "batch {b}");
        }
        // Channel 0's runs at the end of each batch: 1, 1, 6 (rows 9 to
        // 14), 11.
        assert_eq!(scores, vec![0.25, 0.25, 1.5, 2.75]);
        assert!(f.fits(&state));
        assert!(!f.fits(&FlatlineState {
            last: vec![0.0],
            run: vec![1],
        }));
        assert!(f.validate(2).is_ok());
        assert!(f.validate(3).unwrap_err().contains("monitors 3"));
    }
}
