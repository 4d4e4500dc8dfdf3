//! Frozen channels: a monitored channel that now holds one value far
//! longer than it ever did in training is stuck: a transmitter that holds
//! its last value, a valve that no longer moves. A forecaster with a
//! highway forecasts a frozen channel well (its last value), so the
//! forecast error cannot see it; the run of identical readings can.
//!
//! Each monitored channel gets a limit from its longest run of identical
//! consecutive readings in training: `ratio` times that run, and at least
//! `readings`. A channel is frozen once more consecutive readings than its
//! limit were identical. A continuous measurement (runs of a reading or
//! two) is frozen after `readings`; a noisy channel that sometimes rests
//! (runs of 30) after twice its longest rest; a discrete signal after
//! twice its longest hold. A channel constant through training is not
//! watched: holding its value is its normal. Values are compared as the
//! engine holds them (scaled, which maps identical readings to identical
//! values).

use serde::{Deserialize, Serialize};

/// The calibrated rule, shared by every device of a model.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(from = "StoredFlatline")]
pub struct Flatline {
    /// Per monitored channel, in their order: more consecutive identical
    /// readings than this freeze it; 0: not watched.
    pub limits: Vec<u32>,
}

/// The rule as artifacts store it: per-channel limits, or (artifacts
/// written before limits were per channel) one limit and which channels
/// it watched, which loads as those channels at that limit.
#[derive(Deserialize)]
#[serde(untagged)]
enum StoredFlatline {
    Limits { limits: Vec<u32> },
    Watched { readings: u32, watched: Vec<bool> },
}

impl From<StoredFlatline> for Flatline {
    fn from(s: StoredFlatline) -> Self {
        match s {
            StoredFlatline::Limits { limits } => Self { limits },
            StoredFlatline::Watched { readings, watched } => Self {
                limits: (watched.iter())
                    .map(|&w| if w { readings } else { 0 })
                    .collect(),
            },
        }
    }
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
    /// The rule from training `rows` (row-major, the monitored channels,
    /// scaled): each channel's limit is `ratio` times its longest run, at
    /// least `readings`; `None` when `readings` is 0 or every channel was
    /// constant.
    pub fn calibrate(rows: &[f32], channels: usize, readings: u32, ratio: f64) -> Option<Self> {
        if readings == 0 || channels == 0 || rows.len() < channels {
            return None;
        }
        let n = rows.len() / channels;
        let limits: Vec<u32> = longest_runs(rows, channels)
            .into_iter()
            .map(|l| {
                if l as usize >= n {
                    0
                } else {
                    // Saturates: a run of billions is past any stream.
                    let scaled = (f64::from(l) * ratio).ceil() as u32;
                    scaled.max(readings)
                }
            })
            .collect();
        limits.iter().any(|&l| l > 0).then_some(Self { limits })
    }

    /// Feeds a batch's `rows` (row-major, the monitored channels) to the
    /// device's runs; returns the batch's score: the largest run of a
    /// watched channel at the batch's end over its limit (frozen: above
    /// 1). Allocates only on a device's first batch.
    pub fn observe(&self, state: &mut FlatlineState, rows: &[f32]) -> f64 {
        for row in rows.chunks_exact(self.limits.len()) {
            advance(state, row);
        }
        (state.run.iter().zip(&self.limits))
            .filter(|(_, l)| **l > 0)
            .map(|(r, l)| f64::from(*r) / f64::from(*l))
            .fold(0.0, f64::max)
    }

    /// Sets `shares` (one per monitored channel) to the frozen channels'
    /// runs over their limits at the last batch's end, normalised; all
    /// zero when none is.
    pub fn shares(&self, state: &FlatlineState, shares: &mut Vec<f64>) {
        shares.clear();
        shares.extend(state.run.iter().zip(&self.limits).map(|(r, l)| {
            if *l > 0 && *r > *l {
                f64::from(*r) / f64::from(*l)
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
        let n = self.limits.len();
        (state.run.is_empty() && state.last.is_empty())
            || (state.run.len() == n && state.last.len() == n)
    }

    /// Bytes a device's runs hold.
    pub fn state_bytes(&self) -> usize {
        std::mem::size_of::<FlatlineState>() + self.limits.len() * (4 + 4)
    }

    /// Checks the rule against the model's monitored channel count.
    pub fn validate(&self, channels: usize) -> Result<(), String> {
        if self.limits.len() != channels {
            return Err(format!(
                "flatline watches {} channels, the model monitors {channels}",
                self.limits.len()
            ));
        }
        if !self.limits.iter().any(|&l| l > 0) {
            return Err("flatline watches no channel".into());
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

    /// Table: training runs -> limits. Each channel's limit is `ratio`
    /// times its longest run, at least `readings`; a channel constant
    /// through training is not watched (0); `None` with `readings` 0 or no
    /// watched channel.
    #[test]
    fn calibration_gives_each_channel_its_limit() {
        // Columns: always changing; runs of 15; constant.
        let rows: Vec<f32> = (0..100)
            .flat_map(|i| [i as f32, (i / 15) as f32, 2.0])
            .collect();
        let cases: [(u32, f64, Option<Vec<u32>>); 6] = [
            (20, 2.0, Some(vec![20, 30, 0])),
            (40, 2.0, Some(vec![40, 40, 0])),
            (20, 1.0, Some(vec![20, 20, 0])),
            (20, 1.5, Some(vec![20, 23, 0])),
            (1, 3.0, Some(vec![3, 45, 0])),
            (0, 2.0, None),
        ];
        for (readings, ratio, limits) in cases {
            let got = Flatline::calibrate(&rows, 3, readings, ratio).map(|f| f.limits);
            assert_eq!(got, limits, "{readings} {ratio}");
        }
        let still: Vec<f32> = (0..100).flat_map(|_| [3.0]).collect();
        assert_eq!(Flatline::calibrate(&still, 1, 20, 2.0), None);
        assert_eq!(Flatline::calibrate(&[], 1, 20, 2.0), None);
    }

    /// Artifacts written before per-channel limits stored one limit and
    /// the watched channels: they load as those channels at that limit.
    #[test]
    fn a_stored_rule_loads_in_either_form() {
        let cases = [
            (r#"{"limits":[20,0,45]}"#, vec![20, 0, 45]),
            (
                r#"{"readings":20,"watched":[true,false,true]}"#,
                vec![20, 0, 20],
            ),
        ];
        for (json, limits) in cases {
            let f: Flatline = serde_json::from_str(json).unwrap();
            assert_eq!(f.limits, limits, "{json}");
        }
        let written = serde_json::to_string(&Flatline { limits: vec![7] }).unwrap();
        assert_eq!(written, r#"{"limits":[7]}"#);
        assert!(serde_json::from_str::<Flatline>(r#"{"readings":20}"#).is_err());
    }

    /// Table: runs at a batch's end -> score and shares, with limits 4 and
    /// 12: each channel's run counts over its own limit, the shares split
    /// between the channels over theirs by how far over they are.
    #[test]
    fn each_channel_is_scored_against_its_own_limit() {
        let f = Flatline {
            limits: vec![4, 12],
        };
        let cases: [(usize, f64, [f64; 2]); 3] = [
            // Both held 3 readings: under their limits.
            (3, 0.75, [0.0, 0.0]),
            // 6: channel 0 at 1.5, channel 1 at 0.5.
            (6, 1.5, [1.0, 0.0]),
            // 18: 4.5 and 1.5 over their limits.
            (18, 4.5, [0.75, 0.25]),
        ];
        for (held, score, shares) in cases {
            let mut state = FlatlineState::default();
            let rows: Vec<f32> = (0..held).flat_map(|_| [1.0, 2.0]).collect();
            assert_eq!(f.observe(&mut state, &rows), score, "{held}");
            let mut got = vec![];
            f.shares(&state, &mut got);
            assert_eq!(got, shares, "{held}");
        }
    }

    /// A watched channel (limit 4) that holds 9.0 from row 9 on: batches
    /// of 5 rows score its run at the batch's end over 4, frozen (above 1)
    /// from the batch where the run passes 4, with the share on it; the
    /// unwatched channel, constant throughout, never counts; the runs carry
    /// across batches.
    #[test]
    fn a_frozen_channel_scores_its_run_over_the_limit() {
        let f = Flatline { limits: vec![4, 0] };
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
        let none = Flatline { limits: vec![0, 0] };
        assert_eq!(none.validate(2).unwrap_err(), "flatline watches no channel");
    }
}
