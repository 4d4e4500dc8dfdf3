//! Malhotra et al. 2015 (LSTM-AD) error model: the forecast-error vectors
//! of normal validation data are modelled as a Gaussian, a batch is scored
//! by its negative log-likelihood, and the threshold on that score is the
//! one that maximises F-beta on a labelled validation split.
//!
//! The covariance is diagonal (per-channel variances): validation parts of
//! plant data hold tens to hundreds of error vectors for tens of channels,
//! too few for a full covariance. A batch's score is the mean over its rows
//! of `(1/C) * sum_c (e_c - mu_c)^2 / var_c`, which is the batch's
//! negative log-likelihood up to an affine transform (a monotone map, so
//! thresholds on it are equivalent).

use serde::{Deserialize, Serialize};

/// Default variance floor relative to the mean variance, so a channel with
/// (near-)zero error in the fitting data cannot dominate every score.
pub const VAR_FLOOR_RATIO: f64 = 1e-3;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GaussianErrorModel {
    pub mean: Vec<f64>,
    pub var: Vec<f64>,
    /// Error vectors it was fitted on.
    pub samples: usize,
}

impl GaussianErrorModel {
    /// Fits per-channel mean and variance of row-major error vectors
    /// (`rows x channels`). `None` with fewer than two vectors.
    pub fn fit(errors: &[f32], channels: usize) -> Option<Self> {
        Self::fit_with_floor(errors, channels, VAR_FLOOR_RATIO)
    }

    /// [`Self::fit`] with each variance floored at `floor_ratio` times the
    /// mean variance (0 disables the floor, 1 makes the model isotropic for
    /// every channel whose variance is below average).
    pub fn fit_with_floor(errors: &[f32], channels: usize, floor_ratio: f64) -> Option<Self> {
        if channels == 0 || !errors.len().is_multiple_of(channels) {
            return None;
        }
        let n = errors.len() / channels;
        if n < 2 {
            return None;
        }
        let mut mean = vec![0f64; channels];
        for row in errors.chunks_exact(channels) {
            for (m, e) in mean.iter_mut().zip(row) {
                *m += *e as f64;
            }
        }
        mean.iter_mut().for_each(|m| *m /= n as f64);
        let mut var = vec![0f64; channels];
        for row in errors.chunks_exact(channels) {
            for ((v, e), m) in var.iter_mut().zip(row).zip(&mean) {
                *v += (*e as f64 - m).powi(2);
            }
        }
        var.iter_mut().for_each(|v| *v /= (n - 1) as f64);
        let avg = var.iter().sum::<f64>() / channels as f64;
        let floor = (avg * floor_ratio).max(1e-12);
        var.iter_mut().for_each(|v| *v = v.max(floor));
        Some(Self {
            mean,
            var,
            samples: n,
        })
    }

    pub fn channels(&self) -> usize {
        self.mean.len()
    }

    /// Gives each channel that was constant in training (`constant[c]`, the
    /// scaler's flags) the mean variance of the channels that were not.
    /// The scaler reads such a channel as its constant, so its error is
    /// only the forecast's wobble around it, which says nothing about the
    /// plant; fitted, that variance sits at the floor, a thousandth of the
    /// average, and a wobble a little larger than in training (the other
    /// channels at operating points training never reached) would
    /// outweigh every real error. At the average variance it weighs as
    /// little as it is. With no varying channel at all, the variance is 1.
    pub fn average_constant_channels(&mut self, constant: &[bool]) {
        let is_const = |c: usize| constant.get(c).copied().unwrap_or(false);
        let varying: Vec<f64> = (0..self.channels())
            .filter(|&c| !is_const(c))
            .map(|c| self.var[c])
            .collect();
        let average = if varying.is_empty() {
            1.0
        } else {
            varying.iter().sum::<f64>() / varying.len() as f64
        };
        for c in (0..self.channels()).filter(|&c| is_const(c)) {
            self.var[c] = average;
        }
    }

    /// Mean over the rows of `errors` (`rows x channels`) of the normalised
    /// squared Mahalanobis distance of each row.
    pub fn score(&self, errors: &[f32]) -> f64 {
        let c = self.channels();
        let rows = errors.len() / c;
        if rows == 0 {
            return 0.0;
        }
        let mut total = 0.0;
        for row in errors.chunks_exact(c) {
            for ((e, m), v) in row.iter().zip(&self.mean).zip(&self.var) {
                total += (*e as f64 - m).powi(2) / v;
            }
        }
        total / (rows * c) as f64
    }
}

/// F-beta of the rule `score > threshold` on labelled scores, with the two
/// classes given equal weight: precision is computed from the rates,
/// `TPR / (TPR + FPR)`, so the result does not depend on how many anomalous
/// examples were generated relative to normal ones.
pub fn f_beta(normal: &[f64], anomalous: &[f64], threshold: f64, beta: f64) -> f64 {
    if anomalous.is_empty() {
        return 0.0;
    }
    let above = |scores: &[f64]| scores.iter().filter(|s| **s > threshold).count();
    f_beta_of_counts(
        (above(anomalous), anomalous.len()),
        (above(normal), normal.len()),
        beta,
    )
}

/// [`f_beta`] from (scores above the threshold, all scores) per class.
fn f_beta_of_counts(anomalous: (usize, usize), normal: (usize, usize), beta: f64) -> f64 {
    let tpr = anomalous.0 as f64 / anomalous.1 as f64;
    let fpr = if normal.1 == 0 {
        0.0
    } else {
        normal.0 as f64 / normal.1 as f64
    };
    let b2 = beta * beta;
    let den = (1.0 + b2) * tpr + b2 * (1.0 - tpr) + fpr;
    if den == 0.0 {
        0.0
    } else {
        (1.0 + b2) * tpr / den
    }
}

/// The threshold maximising F-beta of `score > threshold` on labelled
/// validation scores. Candidates are the midpoints between consecutive
/// distinct scores (and just below the smallest); ties in F-beta go to the
/// highest threshold (fewer false alarms on unseen normal data). `None`
/// without any anomalous score.
///
/// Each class is sorted once and counted by binary search, so it takes
/// O(n log n): the demo's calibration (130k scores) took minutes in a debug
/// build when every candidate rescanned every score.
pub fn fbeta_threshold(normal: &[f64], anomalous: &[f64], beta: f64) -> Option<(f64, f64)> {
    if anomalous.is_empty() {
        return None;
    }
    // NaN is never above a threshold; without it `x <= t` partitions the
    // sorted scores (infinities included).
    let sorted = |scores: &[f64]| {
        let mut v: Vec<f64> = scores.iter().copied().filter(|s| !s.is_nan()).collect();
        v.sort_by(f64::total_cmp);
        v
    };
    let (normal_sorted, anomalous_sorted) = (sorted(normal), sorted(anomalous));
    let above = |v: &[f64], t: f64| v.len() - v.partition_point(|x| *x <= t);
    let mut all: Vec<f64> = normal.iter().chain(anomalous).copied().collect();
    all.retain(|s| s.is_finite());
    all.sort_by(f64::total_cmp);
    all.dedup();
    let mut candidates = Vec::with_capacity(all.len());
    if let Some(first) = all.first() {
        candidates.push(first - first.abs().max(1e-12) * 1e-6);
    }
    candidates.extend(all.windows(2).map(|w| 0.5 * (w[0] + w[1])));
    let mut best: Option<(f64, f64)> = None;
    for t in candidates {
        let f = f_beta_of_counts(
            (above(&anomalous_sorted, t), anomalous.len()),
            (above(&normal_sorted, t), normal.len()),
            beta,
        );
        if best.is_none_or(|(_, bf)| f >= bf) {
            best = Some((t, f));
        }
    }
    best
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fit_and_score_by_hand() {
        // Channel 0: 1, 3 (mean 2, var 2); channel 1: 0, 0 (var floored).
        let g = GaussianErrorModel::fit(&[1.0, 0.0, 3.0, 0.0], 2).unwrap();
        assert_eq!(g.mean, vec![2.0, 0.0]);
        assert_eq!(g.var[0], 2.0);
        // mean var = 1 -> floor 1e-3.
        assert!((g.var[1] - 1e-3).abs() < 1e-15);
        // Row (4, 0): ((4-2)^2/2 + 0) / 2 = 1; row (2, 0.01): (0 + 1e-4/1e-3)/2 = 0.05.
        let s = g.score(&[4.0, 0.0, 2.0, 0.01]);
        assert!((s - (1.0 + 0.05) / 2.0).abs() < 1e-6, "{s}");
        assert!(GaussianErrorModel::fit(&[1.0, 2.0], 2).is_none());
    }

    /// A channel constant in training weighs as an average channel, not as
    /// the floor: an error of 1 on it scores like a one-sd error elsewhere.
    #[test]
    fn constant_channels_get_the_average_variance() {
        // Channels 0 and 1 vary (var 2 and 8); channel 2 is constant.
        let mut g = GaussianErrorModel::fit(&[1.0, 0.0, 0.0, 3.0, 4.0, 0.0], 3).unwrap();
        assert_eq!(&g.var[..2], &[2.0, 8.0]);
        assert!(g.var[2] < 1e-2);
        let step = [2.0, 2.0, 1.0]; // errors at the means, and 1 on channel 2
        let before = g.score(&step);
        g.average_constant_channels(&[false, false, true]);
        assert_eq!(g.var, vec![2.0, 8.0, 5.0]);
        assert!(before > 50.0, "{before}");
        assert!((g.score(&step) - 1.0 / 5.0 / 3.0).abs() < 1e-12);
        // Without flags (older artifacts) nothing changes; all constant: var 1.
        let mut h = g.clone();
        h.average_constant_channels(&[]);
        assert_eq!(h, g);
        h.average_constant_channels(&[true, true, true]);
        assert_eq!(h.var, vec![1.0; 3]);
    }

    /// The sorted sweep picks exactly what scanning every score for every
    /// candidate picks, ties, infinities and NaN included.
    #[test]
    fn fbeta_threshold_equals_the_exhaustive_search() {
        fn exhaustive(normal: &[f64], anomalous: &[f64], beta: f64) -> Option<(f64, f64)> {
            let mut all: Vec<f64> = normal.iter().chain(anomalous).copied().collect();
            all.retain(|s| s.is_finite());
            all.sort_by(f64::total_cmp);
            all.dedup();
            let mut candidates = vec![all[0] - all[0].abs().max(1e-12) * 1e-6];
            candidates.extend(all.windows(2).map(|w| 0.5 * (w[0] + w[1])));
            let mut best: Option<(f64, f64)> = None;
            for t in candidates {
                let f = f_beta(normal, anomalous, t, beta);
                if best.is_none_or(|(_, bf)| f >= bf) {
                    best = Some((t, f));
                }
            }
            best
        }
        let mut x = 0x2545_F491_4F6C_DD1Du64;
        let mut next = move || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        for case in 0..200 {
            // Coarse values so ties are common; a few infinities and NaNs.
            let mut draw = |n: usize, shift: f64| -> Vec<f64> {
                (0..n)
                    .map(|_| match next() % 50 {
                        0 => f64::INFINITY,
                        1 => f64::NAN,
                        2 => f64::NEG_INFINITY,
                        r => (r % 20) as f64 * 0.5 + shift,
                    })
                    .collect()
            };
            let normal = draw(1 + case % 40, 0.0);
            let anomalous = draw(1 + case % 17, 3.0);
            for beta in [0.5, 1.0, 2.0] {
                let got = fbeta_threshold(&normal, &anomalous, beta);
                let want = exhaustive(&normal, &anomalous, beta);
                assert_eq!(
                    got.map(|(t, f)| (t.to_bits(), f.to_bits())),
                    want.map(|(t, f)| (t.to_bits(), f.to_bits())),
                    "case {case} beta {beta}: {normal:?} / {anomalous:?}"
                );
            }
        }
        assert_eq!(fbeta_threshold(&[1.0], &[], 1.0), None);
    }

    #[test]
    fn fbeta_picks_the_separating_threshold() {
        let normal = [0.1, 0.2, 0.3, 0.9];
        let anomalous = [0.8, 1.0, 2.0];
        // Rates: at t = 0.55 TPR 1, FPR 1/4 -> F1 = 2 / (2 + 0 + 1/4) = 8/9
        // (best); at 0.85 TPR 2/3, FPR 1/4 -> (4/3) / (4/3 + 1/3 + 1/4);
        // at 0.95 TPR 2/3, FPR 0 -> (4/3) / (4/3 + 1/3) = 4/5.
        let (t, f) = fbeta_threshold(&normal, &anomalous, 1.0).unwrap();
        assert!((t - 0.55).abs() < 1e-12, "{t}");
        assert!((f - 8.0 / 9.0).abs() < 1e-12);
        // beta 0.5 weighs precision: t = 0.95 gives 1.25 (2/3) / (1.25 (2/3)
        // + 0.25 (1/3)) = 10/11 > t = 0.55's 1.25 / (1.25 + 0.25) = 5/6.
        let (t, _) = fbeta_threshold(&normal, &anomalous, 0.5).unwrap();
        assert!((t - 0.95).abs() < 1e-12, "{t}");
        assert!(fbeta_threshold(&normal, &[], 1.0).is_none());
        assert_eq!(f_beta(&[], &[1.0], 0.5, 1.0), 1.0);
    }
}
