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
//!
//! With a `season` (a period of time, e.g. one day), an exceedance is not
//! new when an excursion one season earlier, within `season_tolerance`,
//! reached at least `season_ratio` times its smoothed score: the threshold
//! is raised to that earlier score divided by the ratio. A nightly job's
//! spike was seen the night before. Only excursions that ended are
//! precedents, so a fault that persists stays new; with
//! `new_normal_after`, an excursion that has lasted that long is the
//! device's new normal and its scores become precedents too. Normal scores
//! never are. Batch times are the readings' own
//! ([`DynamicState::observe_at`]); each device keeps the largest smoothed
//! score per tolerance-sized bucket of the last season, for precedents and
//! for the running excursion (about `season / season_tolerance` values
//! each).

use std::collections::VecDeque;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::seasonal_residual::Phases;

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
    /// The smoothed score a batch carries into the next is at most this
    /// many times its threshold (0 = no limit): an excursion's smoothing
    /// ends within a few batches of its last high score, instead of
    /// decaying from however high it went.
    pub carry_limit: f64,
    /// What is smoothed: the batch mean squared error, or the batch's
    /// score under a Gaussian model of the error vectors (Malhotra et al.;
    /// fitted on the training part when the strategy is calibrated).
    pub score: DynamicScore,
    /// The seasonal rule's period (module docs); zero turns it off.
    #[serde(with = "human_duration")]
    pub season: Duration,
    /// How far from exactly one season earlier a score still counts.
    #[serde(with = "human_duration")]
    pub season_tolerance: Duration,
    /// An exceedance is not new when the score one season earlier was at
    /// least this share of it.
    pub season_ratio: f64,
    /// An excursion is held against its precedent only when the device was
    /// calm for this long before it began: a flickering fault's returns
    /// are not a recurrence.
    #[serde(with = "human_duration")]
    pub season_quiet: Duration,
    /// An excursion that has lasted this long is the device's new normal:
    /// its scores become precedents for the seasonal rule (zero: never).
    #[serde(with = "human_duration")]
    pub new_normal_after: Duration,
    /// The seasonal residual's bucket width ([`crate::seasonal_residual`]):
    /// a second score, each batch's distance from the same time of the
    /// season before, under its own threshold (zero: off; needs a season).
    #[serde(with = "human_duration")]
    pub residual_bucket: Duration,
    /// The seasonal residual's floor: the largest smoothed residual score
    /// of the training rows times this.
    pub residual_margin: f64,
}

/// Durations as humantime text ("1d", "75m") in configurations and stored
/// artifacts.
mod human_duration {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&humantime::format_duration(*d).to_string())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let text = String::deserialize(d)?;
        humantime::parse_duration(text.trim()).map_err(|e| {
            serde::de::Error::custom(format!(
                "{text:?} is not a duration like \"1d\" or \"75m\": {e}"
            ))
        })
    }

    /// For the optional keys of a partial configuration.
    pub fn deserialize_some<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
        deserialize(d).map(Some)
    }
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
    carry_limit: 0.0,
    score: DynamicScore::Mse,
    season: Duration::ZERO,
    season_tolerance: Duration::ZERO,
    season_ratio: 0.5,
    season_quiet: Duration::ZERO,
    new_normal_after: Duration::ZERO,
    residual_bucket: Duration::ZERO,
    residual_margin: 1.5,
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
            carry_limit: Option<f64>,
            score: Option<DynamicScore>,
            #[serde(default, deserialize_with = "human_duration::deserialize_some")]
            season: Option<Duration>,
            #[serde(default, deserialize_with = "human_duration::deserialize_some")]
            season_tolerance: Option<Duration>,
            season_ratio: Option<f64>,
            #[serde(default, deserialize_with = "human_duration::deserialize_some")]
            season_quiet: Option<Duration>,
            #[serde(default, deserialize_with = "human_duration::deserialize_some")]
            new_normal_after: Option<Duration>,
            #[serde(default, deserialize_with = "human_duration::deserialize_some")]
            residual_bucket: Option<Duration>,
            residual_margin: Option<f64>,
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
            carry_limit: s.carry_limit.unwrap_or(b.carry_limit),
            score: s.score.unwrap_or(b.score),
            season: s.season.unwrap_or(b.season),
            season_tolerance: s.season_tolerance.unwrap_or(b.season_tolerance),
            season_ratio: s.season_ratio.unwrap_or(b.season_ratio),
            season_quiet: s.season_quiet.unwrap_or(b.season_quiet),
            new_normal_after: s.new_normal_after.unwrap_or(b.new_normal_after),
            residual_bucket: s.residual_bucket.unwrap_or(b.residual_bucket),
            residual_margin: s.residual_margin.unwrap_or(b.residual_margin),
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
        if !(self.carry_limit == 0.0 || (self.carry_limit.is_finite() && self.carry_limit >= 1.0)) {
            return Err(format!(
                "carry_limit must be 0 (no limit) or at least 1, got {}",
                self.carry_limit
            ));
        }
        if self.season.is_zero() && !self.new_normal_after.is_zero() {
            return Err("new_normal_after needs a season (its scores become the seasonal rule's precedents)".into());
        }
        if !(self.residual_margin.is_finite() && self.residual_margin >= 0.0) {
            return Err(format!(
                "residual_margin must be a non-negative number, got {}",
                self.residual_margin
            ));
        }
        if !self.residual_bucket.is_zero() && self.residual_bucket > self.season {
            return Err(format!(
                "residual_bucket ({}) needs a season at least as long (season {})",
                humantime::format_duration(self.residual_bucket),
                humantime::format_duration(self.season)
            ));
        }
        if !self.season.is_zero() {
            if self.season_tolerance.is_zero() || self.season_tolerance * 2 > self.season {
                return Err(format!(
                    "season_tolerance must be more than zero and at most half the season ({}), got {}",
                    humantime::format_duration(self.season),
                    humantime::format_duration(self.season_tolerance)
                ));
            }
            if !(self.season_ratio.is_finite() && self.season_ratio > 0.0) {
                return Err(format!(
                    "season_ratio must be a positive number, got {}",
                    self.season_ratio
                ));
            }
        }
        Ok(())
    }

    /// The season and its tolerance in milliseconds, when the seasonal
    /// rule is on.
    fn season_ms(&self) -> Option<(i64, i64)> {
        let ms = |d: Duration| i64::try_from(d.as_millis()).unwrap_or(i64::MAX);
        (!self.season.is_zero() && !self.season_tolerance.is_zero())
            .then(|| (ms(self.season), ms(self.season_tolerance).max(1)))
    }

    /// The seasonal residual's buckets, when it is on.
    pub fn residual_phases(&self) -> Option<Phases> {
        let (period, _) = self.season_ms()?;
        let width = i64::try_from(self.residual_bucket.as_millis()).unwrap_or(i64::MAX);
        Phases::new(period, width)
    }

    /// Values a device's seasonal ring holds at most.
    pub fn season_buckets(&self) -> usize {
        self.season_ms().map_or(0, |(p, t)| {
            usize::try_from(p / t)
                .unwrap_or(usize::MAX)
                .saturating_add(3)
        })
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

/// The lowest dynamic threshold. A history of exact forecasts (a device
/// whose monitored channels were all constant in training, each forecast
/// as its constant) gives a threshold of 0, and a smoothed score never
/// decays back to 0 after an excursion, so an alert would never resolve.
/// A millionth (of a training error's variance for the Gaussian score, of
/// a training standard deviation squared for the MSE) is far below any
/// real batch's score and ends that tail.
pub const MIN_THRESHOLD: f64 = 1e-6;

/// The threshold a smoothed score is compared with, from `history`
/// (oldest first): `max(eps, floor, m / (1 - prune), MIN_THRESHOLD)`
/// (module docs).
pub fn threshold_of(history: &[f64], cfg: &DynamicThresholdConfig, floor: f64) -> f64 {
    let eps = select_threshold(history, cfg);
    let mut t = eps.max(floor).max(MIN_THRESHOLD);
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
    /// The seasonal rule's ring: `(bucket, largest smoothed score in it)`,
    /// buckets of `season_tolerance` since the epoch, oldest first, the
    /// last season of them (empty without a season).
    #[serde(default)]
    pub season: VecDeque<(i64, f64)>,
    /// The running excursion's buckets, bound for `season` when it ends.
    #[serde(default)]
    pub season_pending: VecDeque<(i64, f64)>,
    /// When the running excursion began (its first batch's time).
    #[serde(default)]
    pub excursion_start: Option<i64>,
    /// When the device last turned calm (the first batch under the
    /// threshold after an excursion, or its first batch); not updated
    /// while an excursion runs.
    #[serde(default)]
    pub calm_since: Option<i64>,
}

/// Adds `v` to bucket `b` of a ring whose buckets increase: to the last
/// one when it is `b`, else as a new one (reserving the ring's whole
/// capacity once).
fn add_to_bucket(ring: &mut VecDeque<(i64, f64)>, b: i64, v: f64, cap: usize) {
    match ring.back_mut() {
        Some((last, m)) if *last == b => *m = m.max(v),
        _ => {
            if ring.capacity() < cap {
                ring.reserve(cap.saturating_sub(ring.len()));
            }
            ring.push_back((b, v));
        }
    }
}

impl DynamicState {
    /// A state whose history is `seed` (oldest first) and whose smoothing
    /// starts from the next score.
    pub fn seeded(seed: &[f64]) -> Self {
        Self {
            history: seed.iter().copied().collect(),
            smoothed: None,
            season: VecDeque::new(),
            season_pending: VecDeque::new(),
            excursion_start: None,
            calm_since: None,
        }
    }

    /// Limits the smoothed score carried from the last batch to
    /// `carry_limit` x `threshold`, the threshold the next batch meets.
    fn limit_carry(&mut self, cfg: &DynamicThresholdConfig, threshold: f64) {
        if cfg.carry_limit > 0.0
            && let Some(prev) = self.smoothed.as_mut()
        {
            *prev = prev.min(cfg.carry_limit * threshold);
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
            // The history before this batch decides it.
            let t = threshold_of(self.history.make_contiguous(), cfg, floor);
            self.limit_carry(cfg, t);
            let v = self.smoothed(cfg, score);
            self.smoothed = Some(v);
            if v <= t {
                self.push(cfg, v);
            }
            return (v, t);
        }
        if cfg.carry_limit > 0.0 {
            let t = threshold_of(self.history.make_contiguous(), cfg, floor);
            self.limit_carry(cfg, t);
        }
        let v = self.smooth(cfg, score);
        (v, threshold_of(self.history.make_contiguous(), cfg, floor))
    }

    /// [`Self::observe`] for a batch that ends at `ts_ms`, with the
    /// seasonal rule (module docs): the threshold returned is at least the
    /// largest smoothed score one season earlier (within the tolerance)
    /// divided by `season_ratio`, for an excursion that began after
    /// `season_quiet` of calm (or has settled). An excursion's scores enter
    /// the seasonal ring when it ends or settles; normal scores never do.
    pub fn observe_at(
        &mut self,
        cfg: &DynamicThresholdConfig,
        floor: f64,
        score: f64,
        ts_ms: i64,
    ) -> (f64, f64) {
        let (v, t) = self.observe(cfg, floor, score);
        let Some((period, tol)) = cfg.season_ms() else {
            return (v, t);
        };
        let (lo, hi) = (
            ts_ms
                .saturating_sub(period)
                .saturating_sub(tol)
                .div_euclid(tol),
            ts_ms
                .saturating_sub(period)
                .saturating_add(tol)
                .div_euclid(tol),
        );
        while self.season.front().is_some_and(|(b, _)| *b < lo) {
            self.season.pop_front();
        }
        let earlier = (self.season.iter())
            .take_while(|(b, _)| *b <= hi)
            .map(|(_, m)| *m)
            .fold(0f64, f64::max);
        let bucket = ts_ms.div_euclid(tol);
        let cap = cfg.season_buckets();
        let since = |from: i64| u128::try_from(ts_ms.saturating_sub(from)).unwrap_or(0);
        if v > t && self.excursion_start.is_none() {
            self.excursion_start = Some(ts_ms);
        }
        let settled = v > t
            && !cfg.new_normal_after.is_zero()
            && self
                .excursion_start
                .is_some_and(|s| since(s) >= cfg.new_normal_after.as_millis());
        // Whether the running excursion began after `season_quiet` of calm.
        let quiet_before = match (self.excursion_start, self.calm_since) {
            (Some(start), Some(calm)) => {
                u128::try_from(start.saturating_sub(calm)).unwrap_or(0)
                    >= cfg.season_quiet.as_millis()
            }
            _ => true,
        };
        if v > t && !settled {
            // An excursion's scores wait until it ends: one that has not
            // ended is never its own precedent, so a fault that outlasts a
            // season stays new (until `new_normal_after`).
            add_to_bucket(&mut self.season_pending, bucket, v, cap);
            if self.season_pending.len() > cap {
                self.season_pending.pop_front();
            }
        } else {
            // An ended (or settled) excursion becomes a precedent. Normal
            // scores never do: they would raise the threshold wherever
            // the day before came near it.
            for (b, m) in std::mem::take(&mut self.season_pending) {
                add_to_bucket(&mut self.season, b, m, cap);
            }
            if v > t {
                add_to_bucket(&mut self.season, bucket, v, cap);
            } else {
                if self.excursion_start.take().is_some() || self.calm_since.is_none() {
                    self.calm_since = Some(ts_ms);
                }
            }
        }
        if v > t && !(settled || quiet_before) {
            return (v, t);
        }
        (v, t.max(earlier / cfg.season_ratio))
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

    /// A device whose validation forecasts were exact (every monitored
    /// channel forecast as its training constant) has a history of zeros:
    /// its threshold is [`MIN_THRESHOLD`], not 0, so after one batch of
    /// 40,000 (a channel off its value for a row) the smoothed score
    /// (0.3) falls back under the threshold once 0.7^k x 12,000 <= 1e-6:
    /// k = 66 batches later (ln 1.2e10 / ln(1 / 0.7) = 65.07), and the
    /// alert can resolve.
    #[test]
    fn an_exact_history_gives_the_lowest_threshold_and_its_excursions_end() {
        let cfg = DynamicThresholdConfig {
            smoothing: 0.3,
            prune: 0.35,
            exclude_flagged: true,
            ..Default::default()
        };
        let mut d = DynamicThreshold::new(cfg, &[0.0; 50]);
        assert_eq!(threshold_of(&[0.0; 50], &cfg, 0.0), MIN_THRESHOLD);
        assert_eq!(d.observe(0.0), (0.0, MIN_THRESHOLD));
        let (v, t) = d.observe(40_000.0);
        assert!((v - 12_000.0).abs() < 1e-9 && t == MIN_THRESHOLD, "{v} {t}");
        let under = (1..=100)
            .find(|_| {
                let (v, t) = d.observe(0.0);
                v <= t
            })
            .unwrap();
        assert_eq!(under, 66);
    }

    /// With `carry_limit = 10` the same excursion carries at most 10 x the
    /// threshold into the next batch: its own batch still scores 12,000,
    /// and the smoothed score is back under the threshold once
    /// 0.7^k x 10 <= 1: k = 7 batches later (ln 10 / ln(1 / 0.7) = 6.46),
    /// not 66. Scores that stay high are not limited: a batch's own score
    /// enters in full.
    #[test]
    fn a_carry_limit_ends_the_smoothing_tail_of_an_excursion() {
        let cfg = DynamicThresholdConfig {
            smoothing: 0.3,
            prune: 0.35,
            exclude_flagged: true,
            carry_limit: 10.0,
            ..Default::default()
        };
        let mut d = DynamicThreshold::new(cfg, &[0.0; 50]);
        assert_eq!(d.observe(0.0), (0.0, MIN_THRESHOLD));
        let (v, _) = d.observe(40_000.0);
        assert!((v - 12_000.0).abs() < 1e-9, "{v}");
        let (v, _) = d.observe(40_000.0);
        assert!(
            (v - (12_000.0 + 0.7 * 10.0 * MIN_THRESHOLD)).abs() < 1e-9,
            "{v}"
        );
        let tail: Vec<bool> = (0..8)
            .map(|_| {
                let (v, t) = d.observe(0.0);
                v <= t
            })
            .collect();
        assert_eq!(tail, [false, false, false, false, false, false, true, true]);
        // Without exclude_flagged the excursion enters the history, the
        // threshold rises to take it in, and the limit does not bind.
        let mut kept = DynamicThreshold::new(
            DynamicThresholdConfig {
                exclude_flagged: false,
                ..cfg
            },
            &[0.0; 50],
        );
        kept.observe(0.0);
        kept.observe(40_000.0);
        let (v, _) = kept.observe(0.0);
        assert!((v - 12_000.0 * 0.7).abs() < 1e-9, "{v}");
        for bad in [0.5, -1.0, f64::NAN] {
            let e = DynamicThresholdConfig {
                carry_limit: bad,
                ..cfg
            }
            .validate()
            .unwrap_err();
            assert!(e.contains("carry_limit"), "{e}");
        }
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

    const MIN: i64 = 60_000;
    const DAY: i64 = 24 * 60 * MIN;

    fn seasonal(ratio: f64) -> DynamicThresholdConfig {
        DynamicThresholdConfig {
            smoothing: 1.0,
            history: 50,
            exclude_flagged: true,
            season: Duration::from_secs(86_400),
            season_tolerance: Duration::from_secs(75 * 60),
            season_ratio: ratio,
            ..Default::default()
        }
    }

    /// Scores every 5 minutes for `days`; `spike(ts)` gives the raw score
    /// (1 or 2 otherwise, alternating). Returns the times of flagged batches.
    fn flagged_times(
        cfg: &DynamicThresholdConfig,
        days: i64,
        spike: impl Fn(i64) -> Option<f64>,
    ) -> (Vec<i64>, DynamicState) {
        let seed: Vec<f64> = (0..50).map(|i| 1.0 + (i % 2) as f64).collect();
        let mut s = DynamicState::seeded(&seed);
        let mut flagged = Vec::new();
        for k in 0..days * 288 {
            let ts = 1_700_000_000_000 + k * 5 * MIN;
            let e = spike(ts).unwrap_or(1.0 + (k % 2) as f64);
            let (v, t) = s.observe_at(cfg, 0.0, e, ts);
            if v > t {
                flagged.push(ts);
            }
        }
        (flagged, s)
    }

    #[test]
    fn a_spike_seen_one_season_earlier_is_not_new() {
        let start = 1_700_000_000_000;
        // A spike at the same time every day, 40 minutes past the first
        // batch, and on day 3 a second one at another time of day.
        let spike = |ts: i64| {
            let t = ts - start;
            ((t % DAY == 40 * MIN) || t == 2 * DAY + 600 * MIN).then_some(30.0)
        };
        let (flagged, _) = flagged_times(&seasonal(0.5), 4, spike);
        // Day 1's spike is new; the daily repeats are not; the spike at a
        // new time of day is.
        assert_eq!(flagged, vec![start + 40 * MIN, start + 2 * DAY + 600 * MIN]);
        // Without a season every repeat is flagged.
        let off = DynamicThresholdConfig {
            season: Duration::ZERO,
            ..seasonal(0.5)
        };
        assert_eq!(flagged_times(&off, 4, spike).0.len(), 5);
        // A repeat more than the tolerance later than a day is new again.
        let late = |ts: i64| {
            let t = ts - start;
            (t == 40 * MIN || t == DAY + 40 * MIN + 3 * 60 * MIN).then_some(30.0)
        };
        assert_eq!(flagged_times(&seasonal(0.5), 2, late).0.len(), 2);
        // A repeat more than 1 / ratio times as high is new as well.
        let higher = |ts: i64| {
            let t = ts - start;
            (t == 40 * MIN)
                .then_some(30.0)
                .or((t == DAY + 40 * MIN).then_some(61.0))
        };
        assert_eq!(flagged_times(&seasonal(0.5), 2, higher).0.len(), 2);
    }

    #[test]
    fn a_fault_stays_new_until_it_is_the_new_normal_and_the_rings_stay_bounded() {
        let start = 1_700_000_000_000;
        let onset = start + 120 * MIN;
        let level = |ts: i64| (ts >= onset).then_some(20.0);
        // From hour 2 on the score stays at 20. Without `new_normal_after`
        // an excursion that has not ended is never its own precedent: it
        // is flagged to the end, 5 days on.
        let cfg = seasonal(0.5);
        let (flagged, state) = flagged_times(&cfg, 5, level);
        assert_eq!(flagged.len(), 5 * 288 - 24);
        assert!(state.season.is_empty());
        assert!(state.season_pending.len() <= cfg.season_buckets());
        assert_eq!(cfg.season_buckets(), 86_400 / 4_500 + 3);
        // With it at 2 days: flagged for 2 days, then the level of the day
        // before is its precedent.
        let settling = DynamicThresholdConfig {
            new_normal_after: Duration::from_secs(2 * 86_400),
            ..cfg
        };
        let (flagged, state) = flagged_times(&settling, 5, level);
        assert_eq!(flagged.first(), Some(&onset));
        assert_eq!(flagged.last(), Some(&(onset + 2 * DAY)));
        assert_eq!(flagged.len(), 2 * 288 + 1);
        assert!(
            state.season.len() <= cfg.season_buckets(),
            "{}",
            state.season.len()
        );
        assert!(
            settling.validate().is_ok()
                && DynamicThresholdConfig {
                    season: Duration::ZERO,
                    ..settling
                }
                .validate()
                .unwrap_err()
                .contains("needs a season")
        );
    }

    #[test]
    fn a_flickering_fault_is_not_its_own_precedent_after_quiet() {
        // From hour 2 to the end of day 2 the score flickers: 20 for two
        // batches, normal for two. Without `season_quiet` day 2's
        // flickers are held against day 1's (ended) ones; with 3 hours only
        // an excursion after 3 calm hours is, and these follow 10 minutes.
        let start = 1_700_000_000_000;
        let flicker = |ts: i64| {
            let k = (ts - start) / (5 * MIN);
            (k >= 24 && k % 4 < 2).then_some(20.0)
        };
        let spikes = (24..2 * 288).filter(|k| k % 4 < 2).count();
        let (flagged, _) = flagged_times(&seasonal(0.5), 2, flicker);
        assert!(
            flagged.len() < spikes * 3 / 4,
            "{} of {spikes}",
            flagged.len()
        );
        let quiet = DynamicThresholdConfig {
            season_quiet: Duration::from_secs(3 * 3_600),
            ..seasonal(0.5)
        };
        assert_eq!(flagged_times(&quiet, 2, flicker).0.len(), spikes);
        // A daily spike after a calm day is still no news.
        let daily = |ts: i64| ((ts - start) % DAY == 40 * MIN).then_some(30.0);
        assert_eq!(flagged_times(&quiet, 3, daily).0, vec![start + 40 * MIN]);
    }

    /// A checkpointed state (postcard, as device checkpoints encode it)
    /// goes on exactly as the one that kept running, seasonal rings and
    /// the running excursion included.
    #[test]
    fn a_seasonal_state_survives_a_checkpoint() {
        let start = 1_700_000_000_000;
        let cfg = DynamicThresholdConfig {
            new_normal_after: Duration::from_secs(2 * 86_400),
            season_quiet: Duration::from_secs(3 * 3_600),
            ..seasonal(0.5)
        };
        let score = |k: i64| match k % 288 {
            8 => 30.0,
            100..=110 => 20.0,
            _ => 1.0 + (k % 2) as f64,
        };
        let mut s = DynamicState::seeded(&[1.0, 2.0, 1.0, 2.0]);
        // Stop in the middle of day 2's long excursion.
        for k in 0..288 + 105 {
            s.observe_at(&cfg, 0.0, score(k), start + k * 5 * MIN);
        }
        assert!(
            !s.season.is_empty() && !s.season_pending.is_empty() && s.excursion_start.is_some()
        );
        let bytes = postcard::to_allocvec(&s).unwrap();
        let mut restored: DynamicState = postcard::from_bytes(&bytes).unwrap();
        assert_eq!(restored, s);
        for k in 288 + 105..3 * 288 {
            let ts = start + k * 5 * MIN;
            assert_eq!(
                restored.observe_at(&cfg, 0.0, score(k), ts),
                s.observe_at(&cfg, 0.0, score(k), ts)
            );
        }
    }

    #[test]
    fn normal_scores_are_no_precedent() {
        // Every day at the same time a normal score just under the
        // threshold (6, threshold 6.5); on day 3 a spike of 10 there is
        // new: only excursions are precedents.
        let start = 1_700_000_000_000;
        let spike = |ts: i64| {
            let t = ts - start;
            match (t % DAY == 40 * MIN, t / DAY) {
                (true, 2) => Some(10.0),
                (true, _) => Some(6.0),
                _ => None,
            }
        };
        let (flagged, _) = flagged_times(&seasonal(0.5), 3, spike);
        assert_eq!(flagged, vec![start + 2 * DAY + 40 * MIN]);
    }

    #[test]
    fn season_settings_read_as_durations_and_are_checked() {
        #[derive(Deserialize)]
        struct T {
            #[serde(deserialize_with = "DynamicThresholdConfig::deserialize_stored")]
            d: DynamicThresholdConfig,
        }
        let read = |text: &str| toml::from_str::<T>(text).map(|t| t.d);
        let cfg =
            read("[d]\nseason = \"1d\"\nseason_tolerance = \"75m\"\nseason_ratio = 0.8\n").unwrap();
        assert_eq!(cfg.season, Duration::from_secs(86_400));
        assert_eq!(cfg.season_tolerance, Duration::from_secs(4_500));
        assert_eq!(cfg.season_ratio, 0.8);
        assert!(cfg.validate().is_ok());
        // A stored strategy without the keys has no season.
        let old = read("[d]\nsmoothing = 0.3\n").unwrap();
        assert!(old.season.is_zero() && old.season_buckets() == 0);
        // Round trip through the artifact's JSON.
        let json = serde_json::to_string(&cfg).unwrap();
        assert!(json.contains("\"season\":\"1day\""), "{json}");
        assert_eq!(
            serde_json::from_str::<DynamicThresholdConfig>(&json).unwrap(),
            cfg
        );
        let err = read("[d]\nseason = \"daily\"\n").err().unwrap().to_string();
        assert!(err.contains("\"daily\" is not a duration"), "{err}");
        let wide = read("[d]\nseason = \"1h\"\nseason_tolerance = \"40m\"\n").unwrap();
        assert!(
            wide.validate()
                .unwrap_err()
                .contains("at most half the season")
        );
        let settle =
            read("[d]\nseason = \"1d\"\nseason_tolerance = \"1h\"\nnew_normal_after = \"2d\"\n")
                .unwrap();
        assert_eq!(settle.new_normal_after, Duration::from_secs(2 * 86_400));
        let untolerant = read("[d]\nseason = \"1h\"\n").unwrap();
        assert!(
            untolerant
                .validate()
                .unwrap_err()
                .contains("season_tolerance")
        );
        let ratio =
            read("[d]\nseason = \"1h\"\nseason_tolerance = \"5m\"\nseason_ratio = 0\n").unwrap();
        assert!(ratio.validate().unwrap_err().contains("season_ratio"));
    }
}
