//! Detection threshold precomputed from scores on normal validation data.

use serde::{Deserialize, Serialize};

use crate::detector::BatchScore;
use crate::dynamic_threshold::{DynamicState, DynamicThresholdConfig};
use crate::flatline::{Flatline, FlatlineState};
use crate::gaussian::GaussianErrorModel;
use crate::seasonal_residual::{BatchRows, SeasonalProfile};

/// How the threshold is derived from validation scores.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct ThresholdRule {
    /// Quantile of validation batch scores, in [0, 1]; 1.0 is the maximum.
    pub quantile: f64,
    /// Multiplier applied to that quantile (headroom against unseen normal).
    pub margin: f64,
}

impl Default for ThresholdRule {
    fn default() -> Self {
        Self {
            quantile: 0.995,
            margin: 1.5,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Threshold {
    pub value: f64,
    pub rule: ThresholdRule,
    /// Number of validation scores it was computed from.
    pub samples: usize,
}

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ThresholdError {
    #[error("no validation scores: the validation part is shorter than warm-up plus one batch")]
    NoScores,
    #[error("quantile {0} is outside [0, 1]")]
    BadQuantile(f64),
    #[error("margin {0} must be positive and finite")]
    BadMargin(f64),
    #[error("validation scores contain a non-finite value")]
    NonFinite,
}

impl Threshold {
    /// Linear-interpolated quantile of `scores` times the margin.
    pub fn from_validation(scores: &[f64], rule: ThresholdRule) -> Result<Self, ThresholdError> {
        if !(0.0..=1.0).contains(&rule.quantile) {
            return Err(ThresholdError::BadQuantile(rule.quantile));
        }
        if !(rule.margin.is_finite() && rule.margin > 0.0) {
            return Err(ThresholdError::BadMargin(rule.margin));
        }
        if scores.is_empty() {
            return Err(ThresholdError::NoScores);
        }
        if scores.iter().any(|s| !s.is_finite()) {
            return Err(ThresholdError::NonFinite);
        }
        let mut sorted = scores.to_vec();
        sorted.sort_by(f64::total_cmp);
        Ok(Self {
            value: quantile_sorted(&sorted, rule.quantile) * rule.margin,
            rule,
            samples: scores.len(),
        })
    }
}

/// Quantile of sorted data with linear interpolation between ranks.
pub fn quantile_sorted(sorted: &[f64], q: f64) -> f64 {
    let pos = q * (sorted.len() - 1) as f64;
    let lo = pos.floor() as usize;
    let hi = pos.ceil() as usize;
    let frac = pos - lo as f64;
    sorted[lo] + (sorted[hi] - sorted[lo]) * frac
}

/// What the engine thresholds, and against what: the detector strategy a
/// model was calibrated with (stored in the model artifact, run by the
/// [`crate::Engine`] in `serve`, calibration and `evaluate` alike).
///
/// Every strategy scores a batch from its error vectors (observed minus
/// forecast, or minus reconstruction, in scaled units) and feeds the score
/// and the threshold to the same hysteresis ([`crate::DetectorState`]).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum ThresholdStrategy {
    /// The batch mean squared error against one precomputed threshold.
    Fixed { threshold: f64 },
    /// Malhotra et al.: the batch's score under a Gaussian model of the
    /// error vectors ([`GaussianErrorModel::score`]) against a threshold
    /// chosen by F-beta.
    Gaussian {
        model: GaussianErrorModel,
        threshold: f64,
    },
    /// Hundman et al. (telemanom): the EWMA-smoothed batch score (the mean
    /// squared error, or with `gaussian` the batch's score under that
    /// error model) against a dynamic threshold over each device's
    /// trailing history, never below `floor`. Every device's history
    /// starts as `seed` (the smoothed validation scores, oldest first, at
    /// most `config.history` of them).
    Dynamic {
        #[serde(deserialize_with = "DynamicThresholdConfig::deserialize_stored")]
        config: DynamicThresholdConfig,
        seed: Vec<f64>,
        floor: f64,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        gaussian: Option<GaussianErrorModel>,
        /// The seasonal residual's own threshold (`config.residual_bucket`),
        /// when the training rows spanned enough of a season to calibrate it.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        residual: Option<Box<ResidualThreshold>>,
    },
}

/// The calibration of the seasonal residual's dynamic threshold: the
/// smoothed residual scores of the training rows (oldest first, at most
/// `history`) that seed each device's history, and the floor (the largest
/// of them times `residual_margin`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ResidualThreshold {
    pub seed: Vec<f64>,
    pub floor: f64,
}

/// A device's seasonal residual: its profile and the dynamic threshold's
/// state over its residual scores.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ResidualState {
    pub profile: SeasonalProfile,
    pub threshold: DynamicState,
}

impl ThresholdStrategy {
    /// `fixed`, `gaussian` or `dynamic`.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Fixed { .. } => "fixed",
            Self::Gaussian { .. } => "gaussian",
            Self::Dynamic { .. } => "dynamic",
        }
    }

    /// The threshold to show when there is no per-batch one: the fixed or
    /// Gaussian threshold, the dynamic threshold's floor.
    pub fn nominal_threshold(&self) -> f64 {
        match self {
            Self::Fixed { threshold } | Self::Gaussian { threshold, .. } => *threshold,
            Self::Dynamic { floor, .. } => *floor,
        }
    }

    /// The Gaussian error model, when the score is the Gaussian one.
    pub fn gaussian(&self) -> Option<&GaussianErrorModel> {
        match self {
            Self::Gaussian { model, .. } => Some(model),
            Self::Dynamic { gaussian, .. } => gaussian.as_ref(),
            Self::Fixed { .. } => None,
        }
    }

    /// The score the strategy thresholds and the threshold it compares it
    /// with, from the batch's raw score (MSE, or the Gaussian score), using
    /// and updating the device's `state` (a fresh device's state is
    /// [`ThresholdState::default`]: the dynamic strategy seeds it here, at
    /// the device's first scored batch). `ts_ms` is the batch's time (its
    /// last reading's), for the dynamic threshold's seasonal rule.
    pub fn apply(&self, state: &mut ThresholdState, raw: f64, ts_ms: i64) -> (f64, f64) {
        match self {
            Self::Fixed { threshold } | Self::Gaussian { threshold, .. } => (raw, *threshold),
            Self::Dynamic {
                config,
                seed,
                floor,
                ..
            } => {
                let s = state
                    .dynamic
                    .get_or_insert_with(|| Box::new(DynamicState::seeded(seed)));
                s.observe_at(config, *floor, raw, ts_ms)
            }
        }
    }

    /// [`Self::apply`] to the batch's score, with a seasonal residual its
    /// second score under its own threshold
    /// ([`crate::seasonal_residual`]), and with a `flatline` rule the
    /// longest run of identical readings over its limit
    /// ([`crate::flatline`]): `score` gets the score and the threshold of
    /// the one that stands highest over its threshold (and that one's
    /// channel shares), and the profile learns the batch unless one of
    /// them flagged it. `margin` multiplies the thresholds of the two
    /// scores that come from forecasts (after a context change, which no
    /// forecast foresees) once they have learnt the batch, so their
    /// histories are the same with any margin; a frozen run is not a
    /// forecast and keeps its own.
    pub fn decide(
        &self,
        state: &mut ThresholdState,
        score: &mut BatchScore,
        batch: &BatchRows<'_>,
        flatline: Option<&Flatline>,
        margin: f64,
    ) {
        let (mut v, mut t) = self.apply(state, score.score, batch.end_ts);
        let frozen = match flatline {
            Some(f) => {
                let runs = state.flatline.get_or_insert_with(Default::default);
                f.observe(runs, batch.rows)
            }
            None => 0.0,
        };
        if let Self::Dynamic {
            config,
            residual: Some(calibrated),
            ..
        } = self
            && let Some(phases) = config.residual_phases()
        {
            let r = state.residual.get_or_insert_with(|| {
                Box::new(ResidualState {
                    profile: SeasonalProfile::new(&phases, batch.channels),
                    threshold: DynamicState::seeded(&calibrated.seed),
                })
            });
            if let Some(raw) = r.profile.residual(&phases, batch) {
                let (rv, rt) = r
                    .threshold
                    .observe_at(config, calibrated.floor, raw, batch.end_ts);
                // rv / rt > v / t, with thresholds that may be zero.
                if rv * t > v * rt {
                    (v, t) = (rv, rt);
                    r.profile.shares(&phases, batch, &mut score.shares);
                }
            }
            r.profile.learn(&phases, batch, v > t || frozen > 1.0);
        }
        t *= margin;
        // frozen / 1 > v / t, with a threshold that may be zero.
        if let Some(f) = flatline
            && frozen > 1.0
            && frozen * t > v
        {
            (v, t) = (frozen, 1.0);
            if let Some(runs) = &state.flatline {
                f.shares(runs, &mut score.shares);
            }
        }
        score.score = v;
        score.threshold = t;
    }

    /// Bytes a device's [`ThresholdState`] holds once scored (beyond the
    /// pointer in the device itself), for a model of `channels` monitored
    /// channels.
    pub fn state_bytes(&self, channels: usize) -> usize {
        match self {
            Self::Dynamic {
                config, residual, ..
            } => {
                let dynamic = std::mem::size_of::<DynamicState>()
                    + (config.history + 1) * std::mem::size_of::<f64>()
                    + 2 * config.season_buckets() * std::mem::size_of::<(i64, f64)>();
                let residual = match (residual, config.residual_phases()) {
                    (Some(_), Some(phases)) => {
                        std::mem::size_of::<ResidualState>()
                            + SeasonalProfile::heap_bytes(&phases, channels)
                            + dynamic
                    }
                    _ => 0,
                };
                dynamic + residual
            }
            _ => 0,
        }
    }

    /// Whether a restored device's `state` can be this strategy's, for a
    /// model of `channels` monitored channels and its `flatline` rule.
    pub fn check_state(
        &self,
        state: &ThresholdState,
        channels: usize,
        flatline: Option<&Flatline>,
    ) -> Result<(), &'static str> {
        let runs_fit = match (flatline, &state.flatline) {
            (_, None) => true,
            (Some(f), Some(runs)) => f.fits(runs),
            (None, Some(_)) => false,
        };
        if !runs_fit {
            return Err("flatline runs do not fit the model's rule");
        }
        let valid = |t: &DynamicState, history: usize| {
            let mut values = t.history.iter().chain(t.smoothed.iter());
            t.history.len() <= history + 1 && values.all(|v| v.is_finite())
        };
        if state.dynamic.is_none() && state.residual.is_none() {
            return Ok(());
        }
        let Self::Dynamic {
            config, residual, ..
        } = self
        else {
            return Err("dynamic threshold state for another strategy");
        };
        if state
            .dynamic
            .as_ref()
            .is_some_and(|t| !valid(t, config.history))
        {
            return Err("dynamic threshold state is invalid");
        }
        if let Some(r) = &state.residual {
            let fits = residual.is_some()
                && config
                    .residual_phases()
                    .is_some_and(|p| r.profile.fits(&p, channels));
            if !fits || !valid(&r.threshold, config.history) {
                return Err("seasonal residual state does not fit the strategy");
            }
        }
        Ok(())
    }

    /// Checks the parameters against the model's channel count.
    pub fn validate(&self, channels: usize) -> Result<(), String> {
        let positive = |name: &str, v: f64| {
            if v.is_finite() && v > 0.0 {
                Ok(())
            } else {
                Err(format!("{name} {v} is not a positive finite number"))
            }
        };
        match self {
            Self::Fixed { threshold } => positive("threshold", *threshold),
            Self::Gaussian { model, threshold } => {
                positive("gaussian threshold", *threshold)?;
                validate_gaussian(model, channels)
            }
            Self::Dynamic {
                config,
                seed,
                floor,
                gaussian,
                residual,
            } => {
                config
                    .validate()
                    .map_err(|m| format!("dynamic threshold: {m}"))?;
                let calibrated = |what: &str, seed: &[f64], floor: f64| {
                    if !(floor.is_finite() && floor >= 0.0) {
                        return Err(format!("{what} floor {floor} is not a finite number >= 0"));
                    }
                    if seed.len() > config.history || seed.iter().any(|v| !v.is_finite()) {
                        return Err(format!(
                            "{what} seed must be at most {} finite values",
                            config.history
                        ));
                    }
                    Ok(())
                };
                calibrated("dynamic", seed, *floor)?;
                if let Some(r) = residual {
                    if config.residual_phases().is_none() {
                        return Err("a seasonal residual threshold without residual_bucket".into());
                    }
                    calibrated("seasonal residual", &r.seed, r.floor)?;
                }
                gaussian
                    .as_ref()
                    .map_or(Ok(()), |g| validate_gaussian(g, channels))
            }
        }
    }
}

fn validate_gaussian(model: &GaussianErrorModel, channels: usize) -> Result<(), String> {
    if model.mean.len() != channels || model.var.len() != channels {
        return Err(format!(
            "gaussian model has {} means and {} variances for {channels} channels",
            model.mean.len(),
            model.var.len()
        ));
    }
    if model.mean.iter().any(|m| !m.is_finite()) {
        return Err("gaussian model has a non-finite mean".into());
    }
    if model.var.iter().any(|v| !(v.is_finite() && *v > 0.0)) {
        return Err("gaussian model has a variance that is not positive".into());
    }
    Ok(())
}

/// A device's part of the threshold strategy: nothing (`None`, no
/// allocation) for `fixed` and `gaussian`; the smoothed error and the
/// trailing history ring for `dynamic`, and with a seasonal residual its
/// profile and threshold state. Serializable, so device snapshots can
/// carry it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ThresholdState {
    pub dynamic: Option<Box<DynamicState>>,
    pub residual: Option<Box<ResidualState>>,
    /// The runs of identical readings, with a [`Flatline`] rule.
    pub flatline: Option<Box<FlatlineState>>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dynamic_threshold::DynamicScore;

    /// With a frozen-channel rule, `decide` flags a batch once a watched
    /// channel's run passes the limit, with the run over the limit as the
    /// score, 1 as the threshold and the share on that channel; a batch
    /// whose forecast score stands higher over its own threshold keeps it.
    /// The margin raises the forecast's threshold, never the run's.
    #[test]
    fn a_frozen_channel_is_flagged_beside_the_forecast_error() {
        let strategy = ThresholdStrategy::Fixed { threshold: 1.0 };
        let f = Flatline { limits: vec![4, 0] };
        // Runs at the batches' ends 2, 4, 6, 8: frozen (over 1) from the
        // third batch. Margin 1: the fourth's forecast score, 9 over 1,
        // beats 2. Margin 5 (after a context change): the forecast's
        // threshold is 5, the frozen run's stays 1, so the run (2 over 1)
        // beats 9 over 5.
        // (margin, per batch: score, threshold, shares)
        type Decided = (f64, f64, Vec<f64>);
        let cases: [(f64, [Decided; 4]); 2] = [
            (
                1.0,
                [
                    (0.5, 1.0, vec![0.2, 0.8]),
                    (0.5, 1.0, vec![0.2, 0.8]),
                    (1.5, 1.0, vec![1.0, 0.0]),
                    (9.0, 1.0, vec![0.2, 0.8]),
                ],
            ),
            (
                5.0,
                [
                    (0.5, 5.0, vec![0.2, 0.8]),
                    (0.5, 5.0, vec![0.2, 0.8]),
                    (1.5, 1.0, vec![1.0, 0.0]),
                    (2.0, 1.0, vec![1.0, 0.0]),
                ],
            ),
        ];
        for (margin, want) in cases {
            let mut state = ThresholdState::default();
            let mut got = vec![];
            // Channel 0 holds 3.0 throughout, channel 1 changes every row;
            // batches of 2 rows.
            for b in 0..4i64 {
                let rows: Vec<f32> = (0..2).flat_map(|i| [3.0, (b * 2 + i) as f32]).collect();
                let batch = BatchRows {
                    rows: &rows,
                    channels: 2,
                    start_ts: b * 2,
                    end_ts: b * 2 + 1,
                };
                let raw = if b == 3 { 9.0 } else { 0.5 };
                let mut score = BatchScore {
                    mse: raw,
                    score: raw,
                    threshold: 0.0,
                    shares: vec![0.2, 0.8],
                };
                strategy.decide(&mut state, &mut score, &batch, Some(&f), margin);
                got.push((score.score, score.threshold, score.shares));
            }
            assert_eq!(got, want, "margin {margin}");
            assert_eq!(state.flatline.unwrap().run, vec![8, 1]);
        }
    }

    #[test]
    fn quantile_and_margin() {
        let scores = [4.0, 1.0, 3.0, 2.0, 5.0];
        let cases = [
            (
                ThresholdRule {
                    quantile: 1.0,
                    margin: 1.0,
                },
                5.0,
            ),
            (
                ThresholdRule {
                    quantile: 0.5,
                    margin: 1.0,
                },
                3.0,
            ),
            (
                ThresholdRule {
                    quantile: 0.875,
                    margin: 2.0,
                },
                9.0,
            ), // rank 3.5 -> 4.5, x2
            (
                ThresholdRule {
                    quantile: 0.0,
                    margin: 1.5,
                },
                1.5,
            ),
        ];
        for (rule, want) in cases {
            let t = Threshold::from_validation(&scores, rule).unwrap();
            assert!(
                (t.value - want).abs() < 1e-12,
                "{rule:?}: {} != {want}",
                t.value
            );
            assert_eq!(t.samples, 5);
        }
    }

    #[test]
    fn bad_inputs_are_errors() {
        let ok = ThresholdRule::default();
        assert_eq!(
            Threshold::from_validation(&[], ok),
            Err(ThresholdError::NoScores)
        );
        assert_eq!(
            Threshold::from_validation(
                &[1.0],
                ThresholdRule {
                    quantile: 1.5,
                    margin: 1.0
                }
            ),
            Err(ThresholdError::BadQuantile(1.5))
        );
        assert_eq!(
            Threshold::from_validation(
                &[1.0],
                ThresholdRule {
                    quantile: 0.5,
                    margin: 0.0
                }
            ),
            Err(ThresholdError::BadMargin(0.0))
        );
        assert_eq!(
            Threshold::from_validation(&[f64::NAN], ok),
            Err(ThresholdError::NonFinite)
        );
    }

    /// Table: strategy, raw batch scores in order, expected (score,
    /// threshold) per batch.
    #[test]
    fn strategies_turn_raw_scores_into_score_and_threshold() {
        let dynamic = ThresholdStrategy::Dynamic {
            config: DynamicThresholdConfig {
                smoothing: 0.5,
                ..Default::default()
            },
            // Constant history: telemanom's threshold is its mean.
            seed: vec![1.0, 1.0],
            floor: 1.5,
            gaussian: None,
            residual: None,
        };
        type Case = (ThresholdStrategy, Vec<f64>, Vec<(f64, f64)>);
        let cases: Vec<Case> = vec![
            (
                ThresholdStrategy::Fixed { threshold: 2.0 },
                vec![1.0, 3.0],
                vec![(1.0, 2.0), (3.0, 2.0)],
            ),
            (
                ThresholdStrategy::Gaussian {
                    model: GaussianErrorModel {
                        mean: vec![0.0],
                        var: vec![1.0],
                        samples: 2,
                    },
                    threshold: 4.0,
                },
                vec![9.0],
                vec![(9.0, 4.0)],
            ),
            // Smoothing restarts at the first batch (1); then 0.5 x 3 + 0.5
            // x 1 = 2. History [1, 1, 1] has sd 0: eps = mean 1 -> floor 1.5.
            // History [1, 1, 1, 2]: mu 1.25, sigma 0.433; no z in 2..=10
            // leaves a value above eps, so eps = mu + 10 sigma.
            (
                dynamic.clone(),
                vec![1.0, 3.0],
                vec![(1.0, 1.5), (2.0, 1.25 + 10.0 * 0.1875f64.sqrt())],
            ),
        ];
        for (strategy, raws, want) in cases {
            strategy.validate(1).unwrap();
            let mut state = ThresholdState::default();
            for (raw, (ws, wt)) in raws.iter().zip(want.iter()) {
                let (s, t) = strategy.apply(&mut state, *raw, 0);
                // Only the dynamic strategy keeps (and allocates) state.
                assert_eq!(state.dynamic.is_some(), strategy.kind() == "dynamic");
                assert!(
                    (s - ws).abs() < 1e-12 && (t - wt).abs() < 1e-12,
                    "{}: {raw} -> ({s}, {t}), want ({ws}, {wt})",
                    strategy.kind()
                );
            }
        }
        // A per-device state survives serialization.
        let mut state = ThresholdState::default();
        dynamic.apply(&mut state, 5.0, 0);
        let json = serde_json::to_string(&state).unwrap();
        assert_eq!(
            serde_json::from_str::<ThresholdState>(&json).unwrap(),
            state
        );
        assert_eq!(
            serde_json::to_string(&ThresholdState::default()).unwrap(),
            r#"{"dynamic":null,"residual":null,"flatline":null}"#
        );
    }

    #[test]
    fn strategy_validation_and_json() {
        let g = ThresholdStrategy::Gaussian {
            model: GaussianErrorModel {
                mean: vec![0.0, 0.0],
                var: vec![1.0, 0.0],
                samples: 2,
            },
            threshold: 1.0,
        };
        assert!(g.validate(2).unwrap_err().contains("variance"));
        assert!(g.validate(3).unwrap_err().contains("3 channels"));
        assert!(
            ThresholdStrategy::Fixed {
                threshold: f64::INFINITY
            }
            .validate(1)
            .is_err()
        );
        let d = ThresholdStrategy::Dynamic {
            config: DynamicThresholdConfig::default(),
            seed: vec![0.5; 101],
            floor: 1.0,
            gaussian: None,
            residual: None,
        };
        assert!(d.validate(1).unwrap_err().contains("at most 100"));
        let f = ThresholdStrategy::Fixed { threshold: 0.5 };
        let json = serde_json::to_value(&f).unwrap();
        assert_eq!(json, serde_json::json!({"kind": "fixed", "threshold": 0.5}));
        assert_eq!(
            serde_json::from_value::<ThresholdStrategy>(json).unwrap(),
            f
        );
        assert_eq!(f.nominal_threshold(), 0.5);
    }

    /// The seasonal residual flags the day a daily jump is missing, which
    /// the forecast error (constant here) never does; the alert's score
    /// and shares are the residual's, and the next normal day is compared
    /// with the last normal one.
    #[test]
    fn the_seasonal_residual_flags_a_day_unlike_the_one_before() {
        use std::time::Duration;
        const HOUR: i64 = 3_600_000;
        let strategy = ThresholdStrategy::Dynamic {
            config: DynamicThresholdConfig {
                smoothing: 1.0,
                history: 50,
                exclude_flagged: true,
                season: Duration::from_secs(86_400),
                season_tolerance: Duration::from_secs(3_600),
                residual_bucket: Duration::from_secs(3_600),
                ..Default::default()
            },
            // The forecast error is always 1, under a threshold of 2.
            seed: vec![1.0; 10],
            floor: 2.0,
            gaussian: None,
            residual: Some(Box::new(ResidualThreshold {
                seed: vec![],
                floor: 10.0,
            })),
        };
        strategy.validate(1).unwrap();
        let mut state = ThresholdState::default();
        // Days of hourly rows, 20 at night and 80 from 09:00 to 17:00; day
        // 2 stays at 20. Batches of 4 rows: (day, first hour) -> decision.
        // At 06:00 on day 2 the state goes through a checkpoint (postcard,
        // as device checkpoints encode it) and on from the restored copy;
        // the original goes on alongside and must decide the same.
        let mut flagged = Vec::new();
        let mut original: Option<ThresholdState> = None;
        for day in 0..4i64 {
            for first in (0..24).step_by(4) {
                let rows: Vec<f32> = (first..first + 4)
                    .map(|h| {
                        if day != 2 && (9..17).contains(&h) {
                            80.0
                        } else {
                            20.0
                        }
                    })
                    .collect();
                let start_ts = (day * 24 + first) * HOUR;
                let batch = BatchRows {
                    rows: &rows,
                    channels: 1,
                    start_ts,
                    end_ts: start_ts + 3 * HOUR,
                };
                let mut score = BatchScore {
                    mse: 1.0,
                    score: 1.0,
                    threshold: f64::INFINITY,
                    shares: vec![0.0],
                };
                if (day, first) == (2, 4) {
                    let bytes = postcard::to_allocvec(&state).unwrap();
                    original = Some(std::mem::replace(
                        &mut state,
                        postcard::from_bytes(&bytes).unwrap(),
                    ));
                    assert_eq!(Some(&state), original.as_ref());
                }
                if let Some(o) = original.as_mut() {
                    let mut same = score.clone();
                    strategy.decide(o, &mut same, &batch, None, 1.0);
                    strategy.decide(&mut state, &mut score, &batch, None, 1.0);
                    assert_eq!(same, score, "day {day} {first}h");
                } else {
                    strategy.decide(&mut state, &mut score, &batch, None, 1.0);
                }
                if score.score > score.threshold {
                    flagged.push((day, first, score.score, score.threshold, score.shares));
                } else {
                    assert_eq!(
                        (score.score, score.threshold),
                        (1.0, 2.0),
                        "day {day} {first}h"
                    );
                }
            }
        }
        assert_eq!(original.as_ref(), Some(&state));
        assert_eq!(
            flagged,
            [
                (2, 8, 3.0 * 3600.0 / 4.0, 10.0, vec![1.0]),
                (2, 12, 3600.0, 10.0, vec![1.0]),
                (2, 16, 3600.0 / 4.0, 10.0, vec![1.0]),
            ]
        );
        assert!(state.residual.is_some());
        assert_eq!(strategy.check_state(&state, 1, None), Ok(()));
        assert!(strategy.check_state(&state, 2, None).is_err());
        let ThresholdStrategy::Dynamic {
            config,
            seed,
            floor,
            gaussian,
            ..
        } = strategy.clone()
        else {
            unreachable!()
        };
        let without = ThresholdStrategy::Dynamic {
            config,
            seed,
            floor,
            gaussian,
            residual: None,
        };
        assert_eq!(
            without.check_state(&state, 1, None),
            Err("seasonal residual state does not fit the strategy")
        );
        assert!(
            ThresholdStrategy::Fixed { threshold: 1.0 }
                .check_state(&ThresholdState::default(), 1, None)
                .is_ok()
        );
        // More bytes than without the residual: its profile and history.
        assert!(strategy.state_bytes(1) > without.state_bytes(1) + 24 * 12);
    }

    /// A stored dynamic strategy reads a key it lacks (written before the
    /// key existed) as the value it was calibrated with, not as today's
    /// default; keys it has are read as stored, a full round trip is exact.
    #[test]
    fn a_stored_dynamic_strategy_keeps_the_settings_it_was_calibrated_with() {
        let old = serde_json::json!({
            "kind": "dynamic",
            "config": {"smoothing": 0.2, "history": 50, "z_min": 2.0, "z_max": 10.0,
                       "z_step": 0.5, "floor_margin": 1.0},
            "seed": [0.1, 0.2],
            "floor": 0.3,
        });
        let ThresholdStrategy::Dynamic { config, .. } =
            serde_json::from_value::<ThresholdStrategy>(old).unwrap()
        else {
            panic!("not dynamic")
        };
        assert_eq!((config.smoothing, config.history), (0.2, 50));
        assert_eq!(config.prune, 0.0);
        assert!(!config.exclude_flagged);
        assert_eq!(config.score, DynamicScore::Mse);
        assert_eq!(config.residual_bucket, std::time::Duration::ZERO);
        let full = ThresholdStrategy::Dynamic {
            config: DynamicThresholdConfig {
                prune: 0.4,
                exclude_flagged: true,
                score: DynamicScore::Gaussian,
                ..DynamicThresholdConfig::default()
            },
            seed: vec![0.1],
            floor: 0.2,
            gaussian: None,
            residual: None,
        };
        let back: ThresholdStrategy =
            serde_json::from_value(serde_json::to_value(&full).unwrap()).unwrap();
        assert_eq!(back, full);
        let unknown = serde_json::json!({"kind": "dynamic", "config": {"smothing": 0.2},
                                         "seed": [], "floor": 0.0});
        assert!(serde_json::from_value::<ThresholdStrategy>(unknown).is_err());
    }
}
