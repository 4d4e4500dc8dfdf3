//! Replaying a file through the service's streaming detector and turning
//! batch decisions into per-point predictions.
//!
//! Every file is pushed row by row into a fresh [`Engine`] (one device),
//! flushing after each completed batch, exactly as `serve` processes a
//! device. A [`Recorder`] wrapped around the forecaster keeps the batch's
//! scaled inputs and the forecast they were scored against, so threshold
//! strategies other than the engine's fixed one can work from the error
//! vectors (the engine only reports the batch MSE). Those strategies run
//! the engine with an infinite threshold and apply their own threshold
//! through the same hysteresis state machine ([`DetectorState`]), batch by
//! batch, so no decision uses data after the batch it is about.

use anyhow::{Context, bail};
use forewarn_core::dynamic_threshold::{DynamicThreshold, DynamicThresholdConfig};
use forewarn_core::engine::{Engine, EngineConfig, EngineEvent, Forecaster, Pushed, StepBatch};
use forewarn_core::gaussian::GaussianErrorModel;
use forewarn_core::{DetectorConfig, DetectorState, Reading};

/// One scored batch of the replay.
#[derive(Debug, Clone, PartialEq)]
pub struct BatchRec {
    /// First and last row (inclusive) of the batch.
    pub start: usize,
    pub end: usize,
    /// The engine's score: MSE of the batch against its forecast.
    pub score: f64,
    /// Whether the engine's own alert was open after this batch.
    pub alert_open: bool,
    /// `rows x channels` observed minus forecast, scaled units.
    pub errors: Vec<f32>,
}

/// Forwards to the model and remembers the last batch's inputs and the
/// forecast that preceded them. Only for one-device replays.
struct Recorder<'a, F> {
    inner: &'a mut F,
    inputs: Vec<f32>,
    prediction: Vec<f32>,
    previous: Vec<f32>,
}

impl<F: Forecaster> Forecaster for Recorder<'_, F> {
    type Error = F::Error;

    fn state_len(&self) -> usize {
        self.inner.state_len()
    }

    fn step(&mut self, b: &mut StepBatch) -> Result<(), F::Error> {
        debug_assert_eq!(b.n, 1, "replays are one device");
        self.inner.step(b)?;
        self.previous = std::mem::replace(&mut self.prediction, b.predictions.clone());
        self.inputs.clone_from(&b.inputs);
        Ok(())
    }
}

/// Replays raw `rows` (row-major) as one device; row `i` gets timestamp `i`.
///
/// With `reconstruct`, the model's output for a batch is a reconstruction of
/// that same batch (an autoencoder): a batch's errors are its rows minus
/// their reconstruction and its score their mean square, instead of the
/// engine's forecast error (the engine's `alert_open` is then meaningless).
pub fn replay<F>(
    forecaster: &mut F,
    cfg: EngineConfig,
    rows: &[f32],
    reconstruct: bool,
) -> anyhow::Result<Vec<BatchRec>>
where
    F: Forecaster,
    F::Error: std::error::Error + Send + Sync + 'static,
{
    let c = cfg.schema.len();
    if c == 0 || !rows.len().is_multiple_of(c) {
        bail!(
            "replay: {} values do not fill rows of {c} channels",
            rows.len()
        );
    }
    let mut engine = Engine::new(cfg);
    let mut rec = Recorder {
        inner: forecaster,
        inputs: vec![],
        prediction: vec![],
        previous: vec![],
    };
    let mut out = Vec::new();
    for (i, values) in rows.chunks_exact(c).enumerate() {
        let reading = Reading {
            device: "evaluate".into(),
            ts_ms: i as i64,
            values: values.to_vec(),
        };
        match engine.push(&reading) {
            Ok(Pushed::BatchQueued) => {
                for event in engine.flush(&mut rec).context("forecaster")? {
                    if let EngineEvent::Scored {
                        start_ts,
                        end_ts,
                        score,
                        alert_open,
                        ..
                    } = event
                    {
                        let reference = if reconstruct {
                            &rec.prediction
                        } else {
                            &rec.previous
                        };
                        let errors: Vec<f32> = rec
                            .inputs
                            .iter()
                            .zip(reference)
                            .map(|(o, p)| o - p)
                            .collect();
                        let score = if reconstruct {
                            errors.iter().map(|e| (*e as f64).powi(2)).sum::<f64>()
                                / errors.len().max(1) as f64
                        } else {
                            score
                        };
                        out.push(BatchRec {
                            start: start_ts as usize,
                            end: end_ts as usize,
                            score,
                            alert_open,
                            errors,
                        });
                    }
                }
            }
            Ok(_) => {}
            Err(reason) => bail!("row {i} rejected by the engine: {reason}"),
        }
    }
    Ok(out)
}

/// How batch scores become alerts.
#[derive(Debug, Clone)]
pub enum Strategy {
    /// The engine's own threshold and hysteresis (what `serve` does).
    Fixed { threshold: f64 },
    /// A fixed threshold on [`BatchRec::score`] through the same
    /// hysteresis, outside the engine (reconstruction models).
    Scalar { threshold: f64 },
    Gaussian {
        model: GaussianErrorModel,
        threshold: f64,
    },
    Dynamic {
        cfg: DynamicThresholdConfig,
        validation_scores: Vec<f64>,
    },
}

/// One batch's decision, for reports and plots.
#[derive(Debug, Clone, PartialEq)]
pub struct Decision {
    pub start: usize,
    pub end: usize,
    /// The score the strategy thresholds (MSE, Gaussian score or smoothed MSE).
    pub score: f64,
    pub threshold: f64,
    pub open: bool,
}

pub fn decide(batches: &[BatchRec], strategy: &Strategy, det: &DetectorConfig) -> Vec<Decision> {
    let mut state = DetectorState::default();
    let mut dynamic = match strategy {
        Strategy::Dynamic {
            cfg,
            validation_scores,
        } => Some(DynamicThreshold::new(*cfg, validation_scores)),
        _ => None,
    };
    batches
        .iter()
        .map(|b| {
            let (score, threshold, open) = match strategy {
                Strategy::Fixed { threshold } => (b.score, *threshold, b.alert_open),
                Strategy::Scalar { threshold } => {
                    state.observe(det, b.score, *threshold, b.start as i64);
                    (b.score, *threshold, state.is_open())
                }
                Strategy::Gaussian { model, threshold } => {
                    let s = model.score(&b.errors);
                    state.observe(det, s, *threshold, b.start as i64);
                    (s, *threshold, state.is_open())
                }
                Strategy::Dynamic { .. } => {
                    let d = dynamic.as_mut().expect("dynamic state");
                    let (s, eps) = d.observe(b.score);
                    state.observe(det, s, eps, b.start as i64);
                    (s, eps, state.is_open())
                }
            };
            Decision {
                start: b.start,
                end: b.end,
                score,
                threshold,
                open,
            }
        })
        .collect()
}

/// Per-point predictions of `rows` points: a point is anomalous when the
/// alert is open after its batch, and the alert has by then been open for
/// at least `min_event_length` rows (counted from the alert's first row).
/// Rows never scored (warm-up, the incomplete last batch) are normal.
pub fn point_predictions(
    decisions: &[Decision],
    rows: usize,
    min_event_length: usize,
) -> Vec<bool> {
    let mut pred = vec![false; rows];
    for d in decisions.iter().filter(|d| d.open) {
        pred[d.start..=d.end.min(rows - 1)]
            .iter_mut()
            .for_each(|p| *p = true);
    }
    if min_event_length > 1 {
        let mut run = 0usize;
        for p in pred.iter_mut() {
            if *p {
                run += 1;
                if run < min_event_length {
                    *p = false;
                }
            } else {
                run = 0;
            }
        }
    }
    pred
}

#[cfg(test)]
mod tests {
    use super::*;
    use forewarn_core::{Scaler, Schema};

    /// Forecasts the last row of the batch for the whole next batch.
    struct Persistence;

    impl Forecaster for Persistence {
        type Error = std::io::Error;
        fn state_len(&self) -> usize {
            1
        }
        fn step(&mut self, b: &mut StepBatch) -> Result<(), std::io::Error> {
            let hc = b.horizon * b.channels;
            let last = b.inputs[hc - b.channels..hc].to_vec();
            for r in 0..b.horizon {
                b.predictions[r * b.channels..(r + 1) * b.channels].copy_from_slice(&last);
            }
            Ok(())
        }
    }

    pub(crate) fn engine_cfg(threshold: f64) -> EngineConfig {
        EngineConfig {
            schema: Schema::new(vec!["a".into()]),
            scaler: Scaler {
                center: vec![0.0],
                scale: vec![1.0],
                constant: vec![false],
            },
            horizon: 2,
            window: 4,
            warmup: 2,
            state_len: 1,
            threshold,
            detector: DetectorConfig {
                open_after: 1,
                resolve_after: 1,
                resolve_ratio: 1.0,
            },
            model: "m".into(),
            model_version: "v".into(),
            max_batch: 4,
        }
    }

    #[test]
    fn replay_records_errors_and_points_follow_the_alert() {
        // Rows 0..10; a step to 3 at row 6 for two rows.
        let rows = [0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 3.0, 3.0, 0.0, 0.0, 0.0];
        let b = replay(&mut Persistence, engine_cfg(1.0), &rows, false).unwrap();
        // Batches [0,1] (no forecast yet), [2,3], [4,5], [6,7], [8,9]; row
        // 10 is an incomplete batch.
        let spans: Vec<_> = b.iter().map(|b| (b.start, b.end)).collect();
        assert_eq!(spans, vec![(2, 3), (4, 5), (6, 7), (8, 9)]);
        assert_eq!(b[2].errors, vec![3.0, 3.0]);
        assert_eq!(b[2].score, 9.0);
        assert_eq!(b[3].errors, vec![-3.0, -3.0]);
        let alerts: Vec<bool> = b.iter().map(|b| b.alert_open).collect();
        // [8,9] is also off by 3 (forecast 3, observed 0): still open.
        assert_eq!(alerts, vec![false, false, true, true]);

        let det = engine_cfg(1.0).detector;
        let d = decide(&b, &Strategy::Fixed { threshold: 1.0 }, &det);
        let p = point_predictions(&d, rows.len(), 1);
        let want: Vec<bool> = (0..11).map(|i| (6..=9).contains(&i)).collect();
        assert_eq!(p, want);
        // Minimum event length 3: the first two rows of the event drop out.
        let p = point_predictions(&d, rows.len(), 3);
        let want: Vec<bool> = (0..11).map(|i| (8..=9).contains(&i)).collect();
        assert_eq!(p, want);
        let p = point_predictions(&d, rows.len(), 5);
        assert!(p.iter().all(|x| !x));

        // A Gaussian strategy on the same errors: mean 0, var 1 -> score
        // = mean squared error; threshold 4 opens on |e| = 3 batches.
        let g = GaussianErrorModel {
            mean: vec![0.0],
            var: vec![1.0],
            samples: 2,
        };
        let d = decide(
            &b,
            &Strategy::Gaussian {
                model: g,
                threshold: 4.0,
            },
            &det,
        );
        assert_eq!(d.iter().map(|d| d.open).collect::<Vec<_>>(), alerts);
        assert_eq!(d[2].score, 9.0);
    }
}
