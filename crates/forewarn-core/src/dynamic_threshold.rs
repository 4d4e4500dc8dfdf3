//! Hundman et al. 2018 (NASA telemanom): exponentially smoothed errors and
//! a nonparametric dynamic threshold, made causal for streaming.
//!
//! Each batch score is smoothed (`s_t = a * e_t + (1 - a) * s_{t-1}`) and
//! compared with a threshold computed from a trailing history of the last
//! `history` smoothed scores (seeded with the normal validation scores, so
//! the first test batch already has a reference). The threshold is
//! `eps = mu + z * sigma` of the history, with `z` in `z_min..=z_max`
//! (step `z_step`) maximising
//!
//! ```text
//!   (dmu / mu + dsigma / sigma) / (|E_a| + |E_seq|^2)
//! ```
//!
//! where `dmu`, `dsigma` are how much the mean and standard deviation drop
//! when the scores above `eps` are removed, `E_a` those scores and `E_seq`
//! their contiguous runs. A batch is anomalous when its smoothed score
//! exceeds the largest of
//! - `eps`,
//! - the floor (the largest smoothed validation score times
//!   `floor_margin`): on purely normal history the optimisation still
//!   picks some `eps`, and the floor keeps normal noise from being flagged;
//! - with `prune = p > 0`, `m / (1 - p)` where `m` is the largest history
//!   score at or below `eps`: telemanom's pruning, made causal — an
//!   exceedance counts only when it stands at least the share `p` above
//!   the highest score that was not one.
//!
//! With `exclude_flagged`, the threshold is computed from the history
//! before the batch, and a batch above it does not enter the history, so a
//! long anomaly does not teach the threshold that it is normal (and the
//! alert resolves when the scores come back down).

use std::collections::VecDeque;

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DynamicThresholdConfig {
    /// EWMA weight of the newest score, in (0, 1].
    pub smoothing: f64,
    /// Smoothed scores kept (telemanom's window, in batches).
    pub history: usize,
    pub z_min: f64,
    pub z_max: f64,
    pub z_step: f64,
    /// Multiplier of the largest smoothed validation score: the lowest
    /// threshold ever used.
    pub floor_margin: f64,
    /// Causal pruning share `p` in [0, 1): an exceedance must stand this
    /// share above the largest non-exceeding history score (0 = off).
    pub prune: f64,
    /// Batches above the threshold stay out of the history.
    pub exclude_flagged: bool,
    /// What is smoothed: the batch mean squared error, or the batch's
    /// score under a Gaussian model of the error vectors (Malhotra et al.;
    /// fitted on the training part when the strategy is calibrated).
    pub score: DynamicScore,
}

/// `[threshold.dynamic] score`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DynamicScore {
    #[default]
    Mse,
    Gaussian,
}

/// telemanom's threshold alone (no pruning, flagged batches kept, the
/// batch MSE): [`Default`], and the settings artifacts were calibrated with
/// before each later key existed, so how a stored strategy reads a key it
/// lacks ([`DynamicThresholdConfig::deserialize_stored`]).
const STORED_BEFORE_KEYS: DynamicThresholdConfig = DynamicThresholdConfig {
    smoothing: 0.3,
    history: 100,
    z_min: 2.0,
    z_max: 10.0,
    z_step: 0.5,
    floor_margin: 1.0,
    prune: 0.0,
    exclude_flagged: false,
    score: DynamicScore::Mse,
};

impl Default for DynamicThresholdConfig {
    fn default() -> Self {
        STORED_BEFORE_KEYS
    }
}

impl DynamicThresholdConfig {
    /// Reads the settings an artifact stores. A key it lacks was added
    /// after the artifact was written, so it takes the value the artifact
    /// was calibrated with (that feature off), whatever a configuration
    /// defaults to now: a stored model decides as it did when it was trained.
    pub fn deserialize_stored<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Self::deserialize_over(d, STORED_BEFORE_KEYS)
    }

    /// Reads settings whose missing keys take `base`'s values (for a
    /// configuration whose defaults differ from [`Default`]).
    pub fn deserialize_over<'de, D: serde::Deserializer<'de>>(
        d: D,
        base: Self,
    ) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(deny_unknown_fields)]
        struct Partial {
            smoothing: Option<f64>,
            history: Option<usize>,
            z_min: Option<f64>,
            z_max: Option<f64>,
            z_step: Option<f64>,
            floor_margin: Option<f64>,
            prune: Option<f64>,
            exclude_flagged: Option<bool>,
            score: Option<DynamicScore>,
        }
        let s = Partial::deserialize(d)?;
        let b = base;
        Ok(Self {
            smoothing: s.smoothing.unwrap_or(b.smoothing),
            history: s.history.unwrap_or(b.history),
            z_min: s.z_min.unwrap_or(b.z_min),
            z_max: s.z_max.unwrap_or(b.z_max),
            z_step: s.z_step.unwrap_or(b.z_step),
            floor_margin: s.floor_margin.unwrap_or(b.floor_margin),
            prune: s.prune.unwrap_or(b.prune),
            exclude_flagged: s.exclude_flagged.unwrap_or(b.exclude_flagged),
            score: s.score.unwrap_or(b.score),
        })
    }

    pub fn validate(&self) -> Result<(), String> {
        if !(self.smoothing > 0.0 && self.smoothing <= 1.0) {
            return Err(format!(
                "smoothing must be in (0, 1], got {}",
                self.smoothing
            ));
        }
        if self.history < 2 {
            return Err("history must be at least 2".into());
        }
        if !(self.z_step > 0.0 && self.z_min.is_finite() && self.z_max >= self.z_min) {
            return Err("need z_step > 0 and z_min <= z_max".into());
        }
        if !(self.floor_margin.is_finite() && self.floor_margin >= 0.0) {
            return Err("floor_margin must be a non-negative number".into());
        }
        if !(0.0..1.0).contains(&self.prune) {
            return Err(format!("prune must be in [0, 1), got {}", self.prune));
        }
        Ok(())
    }
}

fn mean_std(v: &[f64]) -> (f64, f64) {
    if v.is_empty() {
        return (0.0, 0.0);
    }
    let n = v.len() as f64;
    let m = v.iter().sum::<f64>() / n;
    let var = v.iter().map(|x| (x - m).powi(2)).sum::<f64>() / n;
    (m, var.sqrt())
}

/// telemanom's threshold over `history` (smoothed scores, oldest first).
///
/// Per candidate `z`: one pass counts the scores above `eps`, their runs
/// and the sum of those below, a second the spread of those below; the
/// search stops at the first `eps` no score exceeds (`eps` grows with `z`,
/// so no later candidate has any). No allocation: this runs at every batch
/// of every device.
pub fn select_threshold(history: &[f64], cfg: &DynamicThresholdConfig) -> f64 {
    let (mu, sigma) = mean_std(history);
    if sigma <= 0.0 || mu <= 0.0 {
        return mu;
    }
    let mut best = (f64::NEG_INFINITY, mu + cfg.z_max * sigma);
    let max = history.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let steps = ((cfg.z_max - cfg.z_min) / cfg.z_step).round() as usize;
    for k in 0..=steps {
        let z = cfg.z_min + k as f64 * cfg.z_step;
        let eps = mu + z * sigma;
        if eps >= max {
            break;
        }
        let (mut above, mut runs, mut sum_below) = (0usize, 0usize, 0.0);
        let mut prev_above = false;
        for e in history {
            if *e > eps {
                above += 1;
                runs += usize::from(!prev_above);
                prev_above = true;
            } else {
                sum_below += e;
                prev_above = false;
            }
        }
        if above == 0 {
            continue;
        }
        let below = history.len() - above;
        let (mb, sb) = if below == 0 {
            (0.0, 0.0)
        } else {
            let m = sum_below / below as f64;
            let var = history
                .iter()
                .filter(|e| **e <= eps)
                .map(|e| (e - m).powi(2))
                .sum::<f64>()
                / below as f64;
            (m, var.sqrt())
        };
        let objective =
            ((mu - mb) / mu + (sigma - sb) / sigma) / (above as f64 + (runs * runs) as f64);
        if objective > best.0 {
            best = (objective, eps);
        }
    }
    best.1
}

/// The threshold a smoothed score is compared with, from `history`
/// (oldest first): `max(eps, floor, m / (1 - prune))` (module docs).
pub fn threshold_of(history: &[f64], cfg: &DynamicThresholdConfig, floor: f64) -> f64 {
    let eps = select_threshold(history, cfg);
    let mut t = eps.max(floor);
    if cfg.prune > 0.0 {
        let m = (history.iter().copied())
            .filter(|v| *v <= eps)
            .fold(0f64, f64::max);
        t = t.max(m / (1.0 - cfg.prune));
    }
    t
}

/// One device's dynamic-threshold state: the smoothed score and the ring of
/// the last `history` smoothed scores. The configuration and floor are the
/// strategy's, shared by every device ([`crate::threshold::ThresholdStrategy`]).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct DynamicState {
    pub history: VecDeque<f64>,
    pub smoothed: Option<f64>,
}

impl DynamicState {
    /// A state whose history is `seed` (oldest first) and whose smoothing
    /// starts from the next score.
    pub fn seeded(seed: &[f64]) -> Self {
        Self {
            history: seed.iter().copied().collect(),
            smoothed: None,
        }
    }

    fn smoothed(&self, cfg: &DynamicThresholdConfig, e: f64) -> f64 {
        match self.smoothed {
            Some(prev) => cfg.smoothing * e + (1.0 - cfg.smoothing) * prev,
            None => e,
        }
    }

    fn push(&mut self, cfg: &DynamicThresholdConfig, v: f64) {
        // Reserve once, up front: the ring then never reallocates.
        if self.history.capacity() < cfg.history + 1 {
            self.history.reserve(cfg.history + 1 - self.history.len());
        }
        self.history.push_back(v);
        while self.history.len() > cfg.history {
            self.history.pop_front();
        }
    }

    fn smooth(&mut self, cfg: &DynamicThresholdConfig, e: f64) -> f64 {
        let v = self.smoothed(cfg, e);
        self.smoothed = Some(v);
        self.push(cfg, v);
        v
    }

    /// Feeds one batch score; returns the smoothed score and the threshold
    /// it is compared with (module docs; both known before the next batch
    /// arrives). No allocation once the ring is full.
    pub fn observe(&mut self, cfg: &DynamicThresholdConfig, floor: f64, score: f64) -> (f64, f64) {
        if cfg.exclude_flagged {
            let v = self.smoothed(cfg, score);
            self.smoothed = Some(v);
            let t = threshold_of(self.history.make_contiguous(), cfg, floor);
            if v <= t {
                self.push(cfg, v);
            }
            return (v, t);
        }
        let v = self.smooth(cfg, score);
        (v, threshold_of(self.history.make_contiguous(), cfg, floor))
    }
}

/// The seed history and floor of a dynamic threshold from the normal
/// validation batch scores (in order): their smoothed values (the last
/// `history` of them) and the largest smoothed value times `floor_margin`.
pub fn seed_from_validation(
    cfg: &DynamicThresholdConfig,
    validation_scores: &[f64],
) -> (Vec<f64>, f64) {
    let mut s = DynamicState::default();
    let mut max = 0f64;
    for e in validation_scores {
        max = max.max(s.smooth(cfg, *e));
    }
    (s.history.into_iter().collect(), max * cfg.floor_margin)
}

/// Streaming state of the dynamic threshold for one device, with its
/// configuration and floor (for offline use; the engine keeps the
/// configuration once and a [`DynamicState`] per device).
#[derive(Debug, Clone, PartialEq)]
pub struct DynamicThreshold {
    cfg: DynamicThresholdConfig,
    state: DynamicState,
    floor: f64,
}

impl DynamicThreshold {
    /// Seeds the state with normal validation batch scores (in order).
    pub fn new(cfg: DynamicThresholdConfig, validation_scores: &[f64]) -> Self {
        let (seed, floor) = seed_from_validation(&cfg, validation_scores);
        Self {
            cfg,
            // The test stream starts its own smoothing from its first score.
            state: DynamicState::seeded(&seed),
            floor,
        }
    }

    pub fn floor(&self) -> f64 {
        self.floor
    }

    /// Feeds one batch score; returns the smoothed score and the threshold
    /// it is compared with (both known before the next batch arrives).
    pub fn observe(&mut self, score: f64) -> (f64, f64) {
        self.state.observe(&self.cfg, self.floor, score)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn threshold_separates_an_outlier_run() {
        // 18 ones, then 10 and 10: mu = 1.9, sigma = sqrt((18 * 0.81 +
        // 2 * 65.61) / 20) = 2.7. Removing the two 10s: dmu / mu = 0.9 / 1.9,
        // dsigma / sigma = 1; one run of two: objective (0.9/1.9 + 1) / 3,
        // the same for every z keeping both above (eps < 10, z < 3); ties go
        // to the lowest z = 2: eps = 1.9 + 2 * 2.7 = 7.3.
        let mut h = vec![1.0; 18];
        h.extend([10.0, 10.0]);
        let cfg = DynamicThresholdConfig::default();
        let eps = select_threshold(&h, &cfg);
        assert!((eps - 7.3).abs() < 1e-9, "{eps}");
        // Constant history: the mean.
        assert_eq!(select_threshold(&[3.0, 3.0], &cfg), 3.0);
    }

    #[test]
    fn smoothing_and_floor() {
        let cfg = DynamicThresholdConfig {
            smoothing: 0.5,
            ..Default::default()
        };
        // Validation 1, 3 -> smoothed 1, 2: floor 2.
        let mut d = DynamicThreshold::new(cfg, &[1.0, 3.0]);
        assert_eq!(d.floor(), 2.0);
        // Test smoothing restarts: first score is itself.
        let (s, eps) = d.observe(1.0);
        assert_eq!(s, 1.0);
        assert!(eps >= 2.0);
        let (s, _) = d.observe(3.0);
        assert_eq!(s, 2.0);
        // With five scores in the history no score can be 2 sigma above
        // the mean: the threshold is mu + z_max * sigma.
        let (s, eps) = d.observe(41.0);
        assert_eq!(s, 21.5);
        assert!(s < eps, "{s} >= {eps}");
        // With a longer normal history the jump stands out.
        let mut d = DynamicThreshold::new(cfg, &[1.0, 3.0, 1.0, 3.0, 1.0, 3.0, 1.0, 3.0, 1.0, 3.0]);
        for _ in 0..10 {
            d.observe(2.0);
        }
        let (s, eps) = d.observe(41.0);
        assert_eq!(s, 21.5);
        assert!(s > eps && eps >= d.floor(), "{s} <= {eps}");
        assert!(cfg.validate().is_ok());
        assert!(
            DynamicThresholdConfig {
                smoothing: 0.0,
                ..cfg
            }
            .validate()
            .is_err()
        );
    }

    #[test]
    fn pruning_raises_the_threshold_over_weak_exceedances() {
        // 18 ones and two 3s: mu = 1.2, sigma = 0.6; both 3s stay above
        // eps for z < 3, ties go to z = 2: eps = 2.4. The largest score not
        // above it is 1: pruning 0.5 asks 1 / 0.5 = 2 (below eps, no
        // change); pruning 0.7 asks 1 / 0.3, which the 3s do not reach.
        let mut h = vec![1.0; 18];
        h.extend([3.0, 3.0]);
        for (prune, floor, want) in [
            (0.0, 0.0, 2.4),
            (0.5, 0.0, 2.4),
            (0.7, 0.0, 1.0 / 0.3),
            (0.0, 5.0, 5.0),
        ] {
            let cfg = DynamicThresholdConfig {
                prune,
                ..Default::default()
            };
            let t = threshold_of(&h, &cfg, floor);
            assert!((t - want).abs() < 1e-9, "prune {prune} floor {floor}: {t}");
        }
        let bad = DynamicThresholdConfig {
            prune: 1.0,
            ..Default::default()
        };
        assert!(bad.validate().unwrap_err().contains("prune"));
    }

    #[test]
    fn excluded_exceedances_do_not_teach_the_threshold() {
        let seed: Vec<f64> = (0..20)
            .map(|i| if i % 2 == 0 { 1.0 } else { 3.0 })
            .collect();
        // A long anomaly: 30 batches at 41 after normal history; how many
        // are flagged, and the threshold of a normal batch after it.
        let run = |exclude_flagged: bool| {
            let cfg = DynamicThresholdConfig {
                smoothing: 1.0,
                exclude_flagged,
                ..Default::default()
            };
            let mut s = DynamicState::seeded(&seed);
            s.observe(&cfg, 0.0, 2.0);
            let mut at = Vec::new();
            let flagged = (0..30)
                .filter(|_| {
                    let (v, t) = s.observe(&cfg, 0.0, 41.0);
                    at.push(t);
                    v > t
                })
                .count();
            let before = at[0];
            let (_, after) = s.observe(&cfg, 0.0, 2.0);
            (flagged, before, after)
        };
        // Excluded: the anomaly never enters the history, every batch of
        // it is flagged and the threshold after it is the one before it.
        let (flagged, before, after) = run(true);
        assert_eq!(flagged, 30);
        assert!((after - before).abs() < 1e-9, "{before} -> {after}");
        // Kept: the anomaly becomes the history's normal and stops being
        // flagged long before it ends.
        let (flagged, _, after) = run(false);
        assert!(flagged < 15, "{flagged}");
        assert!(after > 41.0, "{after}");
    }
}
