//! Calibrating the threshold strategy of `model.toml`'s `[threshold]` on a
//! trained model, for `forewarn train` (which stores it in the artifact)
//! and `forewarn evaluate` (which runs it). Every score comes from
//! replaying data through the [`forewarn_core::Engine`] with the strategy
//! being calibrated ([`crate::replay`]), so the threshold means online what
//! it meant here.

use forewarn_core::dynamic_threshold::{
    DynamicScore, DynamicThresholdConfig, seed_from_validation,
};
use forewarn_core::engine::{EngineConfig, Forecaster};
use forewarn_core::gaussian::{GaussianErrorModel, fbeta_threshold};
use forewarn_core::seasonal_residual::{BatchRows, SeasonalProfile};
use forewarn_core::threshold::{ResidualThreshold, ThresholdStrategy, quantile_sorted};
use forewarn_model::ModelError;
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};

use crate::config::{ThresholdKind, ThresholdSection};
use crate::error::OfflineError;
use crate::replay::{errors, scores, stream_scores, strictly_increasing};

/// How the Gaussian threshold was chosen, for the record.
#[derive(Debug, Clone, PartialEq)]
pub enum GaussianFit {
    /// By F-beta against injected faults.
    Injected {
        /// Clean validation batches scored.
        normal: usize,
        /// Batches of the injected copies from their onsets on.
        injected: usize,
        beta: f64,
        /// The best F-beta, and the threshold giving it.
        fbeta: f64,
        tau: f64,
        /// Raised to this quantile of the clean scores, to this value.
        raised: Option<(f64, f64)>,
    },
    /// No room to inject a fault: quantile x margin of the clean scores.
    NoRoom,
}

/// The strategy `t.kind` asks for, calibrated for `model` run with `engine`
/// (the model's engine settings; its strategy is replaced): `fixed` takes
/// `fixed_threshold` (the model's own quantile x margin of validation
/// MSEs); `gaussian` fits on `train_part` and picks its threshold on `val`;
/// `dynamic` is seeded from `val`, and its seasonal residual from both
/// parts at their `times` (one per row of `train_part` then `val`).
/// `seed` drives the fault injection. How a Gaussian threshold was chosen
/// comes back with it.
#[allow(clippy::too_many_arguments)]
pub fn calibrate<F>(
    model: &mut F,
    engine: &EngineConfig,
    t: &ThresholdSection,
    seed: u64,
    train_part: &[f32],
    val: &[f32],
    times: Option<&[i64]>,
    fixed_threshold: f64,
) -> Result<(ThresholdStrategy, Option<GaussianFit>), OfflineError>
where
    F: Forecaster,
    F::Error: Into<ModelError>,
{
    Ok(match t.kind {
        ThresholdKind::Fixed => (
            ThresholdStrategy::Fixed {
                threshold: fixed_threshold,
            },
            None,
        ),
        ThresholdKind::Gaussian => {
            let (model, threshold, fit) =
                calibrate_gaussian(model, engine, t, seed, train_part, val)?;
            (ThresholdStrategy::Gaussian { model, threshold }, Some(fit))
        }
        ThresholdKind::Dynamic => {
            let gaussian = match t.dynamic.score {
                DynamicScore::Mse => None,
                DynamicScore::Gaussian => Some(fit_gaussian(model, engine, t, train_part)?),
            };
            let scores = scores(model, gaussian_scoring(engine, gaussian.as_ref()), val)?;
            let (seed, floor) = seed_from_validation(&t.dynamic, &scores);
            let strategy = ThresholdStrategy::Dynamic {
                config: t.dynamic,
                seed,
                floor,
                gaussian,
                residual: times.and_then(|times| {
                    let rows = [train_part, val].concat();
                    calibrate_residual(engine, &t.dynamic, &rows, times).map(Box::new)
                }),
            };
            (strategy, None)
        }
    })
}

/// The seasonal residual's threshold, from the residual scores of the
/// training `rows` (raw, the schema's channels) at `times`, in the
/// engine's batches: their smoothed values seed each device's history,
/// and the largest times `residual_margin` is the floor. `None` when the
/// residual is off, or when the rows span less than two seasons (a
/// profile needs one season to fill, and the threshold a season of scores
/// to stand on), or their times do not strictly increase (the engine
/// would refuse them).
pub fn calibrate_residual(
    engine: &EngineConfig,
    config: &DynamicThresholdConfig,
    rows: &[f32],
    times: &[i64],
) -> Option<ResidualThreshold> {
    let phases = config.residual_phases()?;
    let (first, last) = (times.first()?, times.last()?);
    let c = engine.schema.len();
    let m = engine.monitored.len();
    let season = i64::try_from(config.season.as_millis()).ok()?;
    if c == 0
        || engine.horizon == 0
        || times.len() * c != rows.len()
        || !strictly_increasing(times)
        || last.saturating_sub(*first) < season.saturating_mul(2)
    {
        return None;
    }
    let mut profile = SeasonalProfile::new(&phases, m);
    let mut scores = Vec::new();
    let mut monitored = Vec::with_capacity(engine.horizon * m);
    let mut scaled = vec![0f32; c];
    for (batch, ts) in rows
        .chunks_exact(engine.horizon * c)
        .zip(times.chunks_exact(engine.horizon))
    {
        monitored.clear();
        for row in batch.chunks_exact(c) {
            scaled.copy_from_slice(row);
            engine.scaler.transform(&mut scaled);
            monitored.extend(engine.monitored.iter().map(|&j| scaled[j]));
        }
        let rows = BatchRows {
            rows: &monitored,
            channels: m,
            start_ts: ts[0],
            end_ts: ts[ts.len() - 1],
        };
        scores.extend(profile.residual(&phases, &rows));
        profile.learn(&phases, &rows, false);
    }
    let (seed, max) = seed_from_validation(
        &DynamicThresholdConfig {
            floor_margin: 1.0,
            ..*config
        },
        &scores,
    );
    Some(ResidualThreshold {
        seed,
        floor: max * config.residual_margin,
    })
}

/// The Gaussian error model of the error vectors of `train_part` replayed
/// through the engine (Malhotra's vN1).
fn fit_gaussian<F>(
    model: &mut F,
    engine: &EngineConfig,
    t: &ThresholdSection,
    train_part: &[f32],
) -> Result<GaussianErrorModel, OfflineError>
where
    F: Forecaster,
    F::Error: Into<ModelError>,
{
    // The error model is of the monitored channels (context channels
    // have no error).
    let c = engine.monitored.len();
    let errors = errors(model, engine.clone(), train_part)?;
    let mut g =
        GaussianErrorModel::fit_with_floor(&errors, c, t.gaussian_var_floor).ok_or_else(|| {
            OfflineError::Config(
                "gaussian score: the training part is too short for two error vectors".into(),
            )
        })?;
    // Monitored channels constant in the training part (forecast as that
    // constant, so their error there is exactly 0) weigh as the average
    // channel, not as the floored variance that would turn the least
    // wobble into an alarm; a real move of theirs is hundreds of scaled
    // units all the same.
    let constant: Vec<bool> = (engine.monitored.iter())
        .map(|&j| engine.scaler.forecasts_constant(j))
        .collect();
    g.average_constant_channels(&constant);
    Ok(g)
}

/// `engine` scoring batches by `g` (never alerting), or as it is.
fn gaussian_scoring(engine: &EngineConfig, g: Option<&GaussianErrorModel>) -> EngineConfig {
    let mut scoring = engine.clone();
    if let Some(g) = g {
        scoring.strategy = ThresholdStrategy::Gaussian {
            model: g.clone(),
            threshold: f64::INFINITY,
        };
    }
    scoring
}

/// Malhotra et al.: fit the Gaussian on the error vectors of the training
/// part (replayed through the engine; Malhotra's vN1); score the unseen
/// validation tail as the normal side (vN2); label an anomalous side by
/// injecting synthetic faults (steps and drifts on 1-3 channels, magnitudes
/// from `injection_sigmas`) into copies of the validation tail (vA); pick
/// the threshold maximising class-balanced F-beta of clean batches against
/// the injected copies' batches from the fault onset on, never below the
/// largest clean validation score ([`floored`]), times the margin. Without room for
/// an injection, falls back to the quantile x margin rule on the normal
/// validation scores.
fn calibrate_gaussian<F>(
    model: &mut F,
    engine: &EngineConfig,
    t: &ThresholdSection,
    seed: u64,
    train_part: &[f32],
    val: &[f32],
) -> Result<(GaussianErrorModel, f64, GaussianFit), OfflineError>
where
    F: Forecaster,
    F::Error: Into<ModelError>,
{
    let g = fit_gaussian(model, engine, t, train_part)?;
    let scoring = gaussian_scoring(engine, Some(&g));
    let normal = scores(model, scoring.clone(), val)?;
    let mut rng = StdRng::seed_from_u64(seed);
    let (mut copies, mut onsets) = (Vec::new(), Vec::new());
    for k in 0..t.injections {
        let sigma = t.injection_sigmas[k % t.injection_sigmas.len()];
        let Some((rows, onset)) = inject(val, engine, k, sigma, &mut rng) else {
            break;
        };
        copies.push(rows);
        onsets.push(onset);
    }
    // All copies advance together, one forecaster call per batch (one call
    // per copy and batch made this most of training's time on long data).
    let mut anomalous = Vec::new();
    let copies: Vec<&[f32]> = copies.iter().map(Vec::as_slice).collect();
    stream_scores(model, scoring.clone(), &copies, |k, end_ts, score| {
        // Batches from the onset on (timestamps are row indices).
        if end_ts as usize >= onsets[k] {
            anomalous.push(score);
        }
    })?;
    let (threshold, fit) = match fbeta_threshold(&normal, &anomalous, t.beta) {
        Some((tau, f)) => {
            let floor = if t.gaussian_normal_floor {
                floored(tau, &normal, t.quantile)
            } else {
                tau
            };
            let fit = GaussianFit::Injected {
                normal: normal.len(),
                injected: anomalous.len(),
                beta: t.beta,
                fbeta: f,
                tau,
                raised: (floor > tau).then_some((t.quantile, floor)),
            };
            (floor * t.gaussian_margin(), fit)
        }
        None => {
            let mut s = normal.clone();
            s.sort_by(f64::total_cmp);
            (
                quantile_sorted(&s, t.quantile) * t.margin,
                GaussianFit::NoRoom,
            )
        }
    };
    Ok((g, threshold, fit))
}

/// The F-beta threshold `tau`, raised to the `quantile` (the fixed rule's,
/// 0.995 by default) of the clean validation scores when it lies below it:
/// with the few batches of a short validation tail that is (almost) the
/// largest clean score; with thousands, a few outliers stay above it rather
/// than setting the threshold (the demo's 3,451 batches: the maximum is 7x
/// the F-beta threshold). Class-balanced F-beta weighs one normal
/// batch over the threshold (a false alarm on data known to be normal)
/// against the recall of synthetic faults; with the few normal batches a
/// short validation tail has (14 for 400 rows at the defaults), the optimum
/// often sits inside the normal scores, flagging a third or half of them
/// (the simulator set's plant-0006: 1.79, 2.69 after the margin; 7 and 5
/// of its 14 normal batches above them). A threshold that flags its own clean
/// calibration data is wrong by construction; the dynamic strategy has the
/// same floor (its largest smoothed validation error).
fn floored(tau: f64, normal: &[f64], quantile: f64) -> f64 {
    if normal.is_empty() {
        return tau;
    }
    let mut sorted = normal.to_vec();
    sorted.sort_by(f64::total_cmp);
    tau.max(quantile_sorted(&sorted, quantile))
}

/// A copy of `val` with a synthetic fault from a random onset on: `k`
/// even = a step, odd = a linear drift reaching the magnitude at the end;
/// on `1 + k % 3` non-constant monitored channels (a change of a context
/// channel is no fault); `sigma` training standard
/// deviations. `None` when the part is too short to place an onset after
/// warm-up with two batches to follow.
fn inject(
    val: &[f32],
    meta: &EngineConfig,
    k: usize,
    sigma: f64,
    rng: &mut StdRng,
) -> Option<(Vec<f32>, usize)> {
    let c = meta.schema.len();
    let n = val.len() / c;
    let lo = meta.warmup + meta.horizon;
    let hi = n.checked_sub(2 * meta.horizon)?;
    if hi <= lo {
        return None;
    }
    let onset = rng.random_range(lo..hi);
    let mut candidates: Vec<usize> = (meta.monitored.iter().copied())
        .filter(|&j| !meta.scaler.constant.get(j).copied().unwrap_or(false))
        .collect();
    if candidates.is_empty() {
        return None;
    }
    candidates.shuffle(rng);
    let mut rows = val.to_vec();
    let span = (n - onset) as f64;
    for &j in candidates.iter().take(1 + k % 3) {
        let sign = if rng.random_bool(0.5) { 1.0 } else { -1.0 };
        let size = sign * sigma * meta.scaler.scale[j] as f64;
        for r in onset..n {
            let d = if k.is_multiple_of(2) {
                size
            } else {
                size * (r - onset + 1) as f64 / span
            };
            rows[r * c + j] += d as f32;
        }
    }
    Some((rows, onset))
}

#[cfg(test)]
mod tests {
    use super::{calibrate_residual, floored};
    use crate::replay::tests::engine_cfg;
    use forewarn_core::dynamic_threshold::DynamicThresholdConfig;
    use forewarn_core::threshold::{ResidualThreshold, ThresholdStrategy};
    use std::time::Duration;

    /// Hourly rows of days alike but for one value on the third: the
    /// residual's seed is the scores of the days after the first (batches
    /// of 2 rows), its floor the largest times the margin; too short a
    /// span, times that do not increase, or no residual give none.
    #[test]
    fn the_residual_is_calibrated_on_the_seasons_after_the_first() {
        const HOUR: i64 = 3_600_000;
        let engine = engine_cfg(ThresholdStrategy::Fixed { threshold: 1.0 });
        let config = DynamicThresholdConfig {
            smoothing: 1.0,
            history: 50,
            season: Duration::from_secs(86_400),
            season_tolerance: Duration::from_secs(3_600),
            residual_bucket: Duration::from_secs(3_600),
            residual_margin: 1.5,
            ..Default::default()
        };
        let mut rows: Vec<f32> = (0..72).map(|h| (h % 24) as f32).collect();
        rows[48 + 5] += 1.0;
        let times: Vec<i64> = (0..72).map(|h| h * HOUR).collect();
        let mut seed = vec![0.0; 24];
        seed[12 + 2] = 0.5;
        assert_eq!(
            calibrate_residual(&engine, &config, &rows, &times),
            Some(ResidualThreshold { seed, floor: 0.75 })
        );
        assert_eq!(
            calibrate_residual(&engine, &config, &rows[..48], &times[..48]),
            None
        );
        let mut back = times.clone();
        back.swap(3, 4);
        assert_eq!(calibrate_residual(&engine, &config, &rows, &back), None);
        let off = DynamicThresholdConfig {
            residual_bucket: Duration::ZERO,
            ..config
        };
        assert_eq!(calibrate_residual(&engine, &off, &rows, &times), None);
    }

    #[test]
    fn the_threshold_never_flags_clean_validation_scores() {
        assert_eq!(floored(2.0, &[0.5, 1.0, 1.5], 1.0), 2.0);
        assert_eq!(floored(2.0, &[0.5, 5.4, 1.5], 1.0), 5.4);
        assert_eq!(floored(2.0, &[], 0.995), 2.0);
        // q0.5 of 1..=5 is 3; q0.995 of 201 scores 0..=200 is 199.
        assert_eq!(floored(2.0, &[5.0, 1.0, 4.0, 2.0, 3.0], 0.5), 3.0);
        let many: Vec<f64> = (0..=200).map(f64::from).collect();
        assert_eq!(floored(2.0, &many, 0.995), 199.0);
    }
}
