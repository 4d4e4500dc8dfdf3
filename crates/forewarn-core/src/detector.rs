//! Batch scoring and the alert state machine (hysteresis).

use serde::{Deserialize, Serialize};

use crate::gaussian::GaussianErrorModel;

/// Error of one observed batch against its forecast (or reconstruction).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BatchScore {
    /// Mean squared error over all values of the batch (scaled units).
    pub mse: f64,
    /// The score the detector strategy thresholds: the MSE (`fixed`), the
    /// Gaussian score (`gaussian`) or the smoothed MSE (`dynamic`).
    pub score: f64,
    /// The threshold `score` was compared with (per batch for `dynamic`).
    pub threshold: f64,
    /// Per-channel share of the scored error, in schema order; sums to 1
    /// (all zero when the error is exactly zero). Shares of the squared
    /// error, or of the Gaussian score's per-channel terms.
    pub shares: Vec<f64>,
}

/// Scores row-major `observed` against `predicted` (both `rows x channels`)
/// by mean squared error. `score` is the MSE and `threshold` infinite until
/// a strategy sets them.
pub fn score_batch(observed: &[f32], predicted: &[f32], channels: usize) -> BatchScore {
    score_batch_with(observed, predicted, channels, None)
}

/// [`score_batch`], and with a Gaussian error model `score` is the
/// batch's Gaussian score ([`GaussianErrorModel::score`] of the error
/// vectors `observed - predicted`) and the shares are those of its
/// per-channel terms. One allocation for the MSE (the per-channel sums,
/// which become the shares), two with the Gaussian score (its per-channel
/// terms become the shares): never more than MSE scoring made before
/// strategies existed (sums and shares).
pub fn score_batch_with(
    observed: &[f32],
    predicted: &[f32],
    channels: usize,
    gaussian: Option<&GaussianErrorModel>,
) -> BatchScore {
    debug_assert_eq!(observed.len(), predicted.len());
    let mut per_channel = vec![0f64; channels];
    let mut gauss = gaussian.map(|_| vec![0f64; channels]);
    // Summed in the order `GaussianErrorModel::score` sums, so both agree
    // to the bit.
    let mut gauss_total = 0.0;
    for (o_row, p_row) in observed
        .chunks_exact(channels)
        .zip(predicted.chunks_exact(channels))
    {
        for ((acc, o), p) in per_channel.iter_mut().zip(o_row).zip(p_row) {
            let d = (*o - *p) as f64;
            *acc += d * d;
        }
        if let (Some(g), Some(terms)) = (gaussian, gauss.as_mut()) {
            for ((((t, o), p), m), v) in terms
                .iter_mut()
                .zip(o_row)
                .zip(p_row)
                .zip(&g.mean)
                .zip(&g.var)
            {
                // The error as the f32 difference, as `GaussianErrorModel::score` sees it.
                let term = ((*o - *p) as f64 - m).powi(2) / v;
                *t += term;
                gauss_total += term;
            }
        }
    }
    let total: f64 = per_channel.iter().sum();
    let mse = if observed.is_empty() {
        0.0
    } else {
        total / observed.len() as f64
    };
    let (score, mut shares, share_total) = match gauss {
        Some(terms) => {
            let score = if observed.is_empty() {
                0.0
            } else {
                gauss_total / observed.len() as f64
            };
            (score, terms, gauss_total)
        }
        None => (mse, per_channel, total),
    };
    if share_total > 0.0 {
        shares.iter_mut().for_each(|e| *e /= share_total);
    } else {
        shares.iter_mut().for_each(|e| *e = 0.0);
    }
    BatchScore {
        mse,
        score,
        threshold: f64::INFINITY,
        shares,
    }
}

/// Hysteresis settings.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DetectorConfig {
    /// Consecutive batches above the threshold before an alert opens.
    pub open_after: u32,
    /// Consecutive batches at or below `resolve_ratio * threshold` before it resolves.
    pub resolve_after: u32,
    /// Fraction of the threshold a score must fall under to count toward
    /// resolving; below 1 keeps a score hovering at the threshold from flapping.
    pub resolve_ratio: f64,
    /// A batch scoring at least this many times the threshold opens an
    /// alert at once, whatever `open_after` says: a large excursion is
    /// evidence enough, a small one must last. Not within
    /// `context_change_rows` of a context change while
    /// `context_change_margin` is on, where one batch far off is what an
    /// unforeseen command looks like. 0: `open_after` alone.
    #[serde(default = "default_open_ratio")]
    pub open_ratio: f64,
    /// A device's first readings in which no alert opens (NAB's
    /// probationary period): their batches are scored and teach the
    /// threshold as usual, but the hysteresis ignores them. A threshold
    /// calibrated on a short validation part alone is tight for live data
    /// noisier than training; this lets a new device's first batches widen
    /// it before they can alarm. Counted from the device's first reading,
    /// warm-up included, so a stream that replays training rows first
    /// (`--train-rows`) has served it before its scored part. 0: off.
    #[serde(default = "default_probation")]
    pub probation: u64,
    /// A batch ending within `context_change_rows` readings of a change in
    /// any context channel (a command, a setpoint, a mode) must exceed
    /// this many times its threshold to count as above it. A forecaster
    /// cannot foresee a command, so the batches just after one carry the
    /// command's error besides the plant's. The threshold's history still
    /// learns the batch's own score. 1: off; never below 1.
    #[serde(default = "default_context_change_margin")]
    pub context_change_margin: f64,
    /// How many readings after a context channel changes the
    /// `context_change_margin` applies (at most the model's window).
    #[serde(default = "default_context_change_rows")]
    pub context_change_rows: usize,
}

/// The default [`DetectorConfig::context_change_margin`] (docs/ACCURACY.md,
/// "After a context change").
pub const CONTEXT_CHANGE_MARGIN: f64 = 1.5;

/// The default [`DetectorConfig::context_change_rows`].
pub const CONTEXT_CHANGE_ROWS: usize = 20;

fn default_context_change_margin() -> f64 {
    CONTEXT_CHANGE_MARGIN
}

fn default_context_change_rows() -> usize {
    CONTEXT_CHANGE_ROWS
}

/// The default [`DetectorConfig::open_ratio`] (docs/ACCURACY.md, "Opening
/// at once").
pub const OPEN_RATIO: f64 = 2.0;

fn default_open_ratio() -> f64 {
    OPEN_RATIO
}

/// The default [`DetectorConfig::probation`], in readings (docs/ACCURACY.md,
/// "Probation").
pub const PROBATION_READINGS: u64 = 150;

fn default_probation() -> u64 {
    PROBATION_READINGS
}

impl Default for DetectorConfig {
    fn default() -> Self {
        Self {
            open_after: 2,
            resolve_after: 3,
            resolve_ratio: 0.8,
            open_ratio: OPEN_RATIO,
            probation: PROBATION_READINGS,
            context_change_margin: CONTEXT_CHANGE_MARGIN,
            context_change_rows: CONTEXT_CHANGE_ROWS,
        }
    }
}

impl DetectorConfig {
    pub fn validate(&self) -> Result<(), String> {
        if self.open_after == 0 {
            return Err("open_after must be at least 1".into());
        }
        if self.resolve_after == 0 {
            return Err("resolve_after must be at least 1".into());
        }
        if !(self.resolve_ratio > 0.0 && self.resolve_ratio <= 1.0) {
            return Err(format!(
                "resolve_ratio must be in (0, 1], got {}",
                self.resolve_ratio
            ));
        }
        let r = self.open_ratio;
        if !(r == 0.0 || (r >= 1.0 && r.is_finite())) {
            return Err(format!("open_ratio must be 0 (off) or at least 1, got {r}"));
        }
        let margin = self.context_change_margin;
        if !(margin >= 1.0 && margin.is_finite()) {
            return Err(format!(
                "context_change_margin must be at least 1, got {margin}"
            ));
        }
        Ok(())
    }

    /// Whether a batch that ends at the device's `readings`-th reading is
    /// in the probation, where no alert opens.
    pub fn in_probation(&self, readings: u64) -> bool {
        readings <= self.probation
    }
}

/// What a scored batch did to the device's alert state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transition {
    /// Nothing changed.
    None,
    /// An alert opens; `streak_start` is the index (as given to
    /// [`DetectorState::observe`]) of the first batch of the streak.
    Open { streak_start: i64 },
    /// The open alert resolves.
    Resolve,
}

/// Per-device hysteresis state.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct DetectorState {
    above: u32,
    below: u32,
    streak_start: i64,
    open: bool,
}

impl DetectorState {
    pub fn is_open(&self) -> bool {
        self.open
    }

    /// Feeds one batch score. `batch_start` identifies the batch (its first
    /// reading's timestamp) and is reported back when a streak opens an alert.
    pub fn observe(
        &mut self,
        cfg: &DetectorConfig,
        score: f64,
        threshold: f64,
        batch_start: i64,
    ) -> Transition {
        if score > threshold {
            if self.above == 0 {
                self.streak_start = batch_start;
            }
            self.above = self.above.saturating_add(1);
            self.below = 0;
            let decisive = cfg.open_ratio > 0.0 && score >= cfg.open_ratio * threshold;
            if !self.open && (self.above >= cfg.open_after || decisive) {
                self.open = true;
                return Transition::Open {
                    streak_start: self.streak_start,
                };
            }
        } else if score <= threshold * cfg.resolve_ratio {
            self.below = self.below.saturating_add(1);
            self.above = 0;
            if self.open && self.below >= cfg.resolve_after {
                self.open = false;
                return Transition::Resolve;
            }
        } else {
            // In the dead band: neither streak continues.
            self.above = 0;
            self.below = 0;
        }
        Transition::None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn score_batch_mse_and_shares() {
        // 2 rows x 2 channels; errors: ch0 1,1 ; ch1 0,2 -> sse 2 and 4.
        let s = score_batch(&[1.0, 0.0, 1.0, 2.0], &[0.0, 0.0, 0.0, 0.0], 2);
        assert!((s.mse - 6.0 / 4.0).abs() < 1e-12);
        assert!((s.shares[0] - 1.0 / 3.0).abs() < 1e-12);
        assert!((s.shares[1] - 2.0 / 3.0).abs() < 1e-12);
        let zero = score_batch(&[1.0, 1.0], &[1.0, 1.0], 2);
        assert_eq!((zero.mse, zero.shares), (0.0, vec![0.0, 0.0]));
    }

    /// Table: observed, predicted, Gaussian model -> score and shares
    /// (2 channels, 2 rows), computed by hand.
    #[test]
    fn gaussian_scores_and_shares() {
        let g = GaussianErrorModel {
            mean: vec![1.0, 0.0],
            var: vec![1.0, 4.0],
            samples: 10,
        };
        type Case = (&'static [f32], &'static [f32], f64, [f64; 2]);
        let cases: &[Case] = &[
            // Errors (1, 0), (1, 0): exactly the mean -> 0, no shares.
            (&[1.0, 0.0, 1.0, 0.0], &[0.0; 4], 0.0, [0.0, 0.0]),
            // Errors (3, 2), (1, 2): terms ch0 4 + 0, ch1 1 + 1; 6 / 4.
            (
                &[3.0, 2.0, 1.0, 2.0],
                &[0.0; 4],
                1.5,
                [4.0 / 6.0, 2.0 / 6.0],
            ),
            // Same errors from a non-zero forecast.
            (
                &[4.0, 3.0, 2.0, 3.0],
                &[1.0; 4],
                1.5,
                [4.0 / 6.0, 2.0 / 6.0],
            ),
        ];
        for (obs, pred, want, shares) in cases {
            let s = score_batch_with(obs, pred, 2, Some(&g));
            let errors: Vec<f32> = obs.iter().zip(pred.iter()).map(|(o, p)| o - p).collect();
            assert!((s.score - want).abs() < 1e-12, "{obs:?}: {}", s.score);
            assert_eq!(s.score, g.score(&errors), "{obs:?}");
            for (a, b) in s.shares.iter().zip(shares) {
                assert!((a - b).abs() < 1e-12, "{obs:?}: {:?}", s.shares);
            }
            // The MSE is reported alongside.
            let mse = errors.iter().map(|e| (*e as f64).powi(2)).sum::<f64>() / 4.0;
            assert!((s.mse - mse).abs() < 1e-12);
        }
    }

    /// With `open_ratio`: a batch at or over that multiple of the threshold
    /// opens at once; smaller excursions still need `open_after` batches
    /// (threshold 1.0, open_after 4, open_ratio 2.0).
    #[test]
    fn a_decisive_batch_opens_at_once() {
        use Transition::*;
        let cfg = DetectorConfig {
            open_after: 4,
            open_ratio: 2.0,
            ..DetectorConfig::default()
        };
        let cases: &[(&str, &[f64], &[Transition])] = &[
            (
                "one batch at twice opens",
                &[0.1, 2.0],
                &[None, Open { streak_start: 1 }],
            ),
            (
                "small excursions need four",
                &[1.5, 1.5, 1.5, 1.5],
                &[None, None, None, Open { streak_start: 0 }],
            ),
            (
                "a decisive batch late in a streak opens, the streak's start kept",
                &[1.5, 1.5, 3.0],
                &[None, None, Open { streak_start: 0 }],
            ),
            (
                "three small ones do not",
                &[1.5, 1.5, 1.5, 0.1],
                &[None, None, None, None],
            ),
        ];
        for (name, scores, want) in cases {
            let mut st = DetectorState::default();
            let got: Vec<_> = (scores.iter().enumerate())
                .map(|(i, s)| st.observe(&cfg, *s, 1.0, i as i64))
                .collect();
            assert_eq!(&got, want, "{name}");
        }
        // 0: off, the four small ones still open.
        let off = DetectorConfig {
            open_ratio: 0.0,
            ..cfg
        };
        let mut st = DetectorState::default();
        let got: Vec<_> = ([0.1, 9.0, 9.0, 9.0, 9.0].iter().enumerate())
            .map(|(i, s)| st.observe(&off, *s, 1.0, i as i64))
            .collect();
        assert_eq!(got, [None, None, None, None, Open { streak_start: 1 }]);
        assert!(cfg.validate().is_ok() && off.validate().is_ok());
        for bad in [0.5, -1.0, f64::NAN, f64::INFINITY] {
            let c = DetectorConfig {
                open_ratio: bad,
                ..cfg
            };
            let e = c.validate().unwrap_err();
            assert!(
                e.contains("open_ratio must be 0 (off) or at least 1"),
                "{bad}: {e}"
            );
        }
        // Settings written without the key take the default.
        let old: DetectorConfig =
            serde_json::from_str(r#"{"open_after":2,"resolve_after":3,"resolve_ratio":0.8}"#)
                .unwrap();
        assert_eq!(old, DetectorConfig::default());
        assert_eq!(old.open_ratio, OPEN_RATIO);
    }

    /// Table of score sequences and the transitions they must produce
    /// (threshold 1.0, open_after 2, resolve_after 3, resolve_ratio 0.8).
    #[test]
    fn hysteresis_cases() {
        use Transition::*;
        let cfg = DetectorConfig {
            open_after: 2,
            resolve_after: 3,
            resolve_ratio: 0.8,
            open_ratio: 0.0,
            probation: 0,
            context_change_margin: 1.0,
            context_change_rows: 0,
        };
        let cases: &[(&str, &[f64], &[Transition])] = &[
            ("quiet", &[0.1, 0.5, 0.9], &[None, None, None]),
            (
                "single spike does not open",
                &[2.0, 0.1, 2.0, 0.1],
                &[None, None, None, None],
            ),
            (
                "two above opens at the second, streak starts at the first",
                &[0.1, 2.0, 2.0, 2.0],
                &[None, None, Open { streak_start: 1 }, None],
            ),
            (
                "resolves after three below",
                &[2.0, 2.0, 0.1, 0.1, 0.1],
                &[None, Open { streak_start: 0 }, None, None, Resolve],
            ),
            (
                "dead band resets the resolve streak",
                &[2.0, 2.0, 0.1, 0.1, 0.9, 0.1, 0.1, 0.1],
                &[
                    None,
                    Open { streak_start: 0 },
                    None,
                    None,
                    None,
                    None,
                    None,
                    Resolve,
                ],
            ),
            (
                "dead band resets the open streak",
                &[2.0, 0.9, 2.0, 2.0],
                &[None, None, None, Open { streak_start: 2 }],
            ),
            (
                "exactly at threshold is not above",
                &[1.0, 1.0],
                &[None, None],
            ),
            (
                "reopens after resolve",
                &[2.0, 2.0, 0.0, 0.0, 0.0, 5.0, 5.0],
                &[
                    None,
                    Open { streak_start: 0 },
                    None,
                    None,
                    Resolve,
                    None,
                    Open { streak_start: 5 },
                ],
            ),
        ];
        for (name, scores, want) in cases {
            let mut st = DetectorState::default();
            let got: Vec<_> = scores
                .iter()
                .enumerate()
                .map(|(i, s)| st.observe(&cfg, *s, 1.0, i as i64))
                .collect();
            assert_eq!(&got, want, "{name}");
        }
    }

    #[test]
    fn config_validation() {
        assert!(DetectorConfig::default().validate().is_ok());
        assert!(
            DetectorConfig {
                open_after: 0,
                ..Default::default()
            }
            .validate()
            .is_err()
        );
        assert!(
            DetectorConfig {
                resolve_ratio: 1.5,
                ..Default::default()
            }
            .validate()
            .is_err()
        );
    }
}
