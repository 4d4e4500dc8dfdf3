//! Replaying a file through the service's streaming detector and turning
//! batch decisions into per-point predictions.
//!
//! Every file is pushed row by row into a fresh [`Engine`] (one device),
//! flushing after each completed batch, exactly as `serve` processes a
//! device, with the calibrated threshold strategy in the engine's
//! configuration: the engine scores each batch, applies the strategy and
//! the hysteresis, and reports the score, the threshold and whether the
//! alert is open. No decision uses data after the batch it is about.

use anyhow::{Context, bail};
use forewarn_core::Reading;
use forewarn_core::engine::{Engine, EngineConfig, EngineEvent, Forecaster, Pushed};

/// One batch's decision, for reports and plots.
#[derive(Debug, Clone, PartialEq)]
pub struct Decision {
    /// First and last row (inclusive) of the batch.
    pub start: usize,
    pub end: usize,
    /// The score the strategy thresholds (MSE, Gaussian score or smoothed MSE).
    pub score: f64,
    pub threshold: f64,
    /// Whether the device's alert is open after this batch.
    pub open: bool,
}

/// Replays raw `rows` (row-major) as one device through an engine with
/// `cfg` (strategy included); row `i` gets timestamp `i`. Returns every
/// scored batch's decision.
pub fn replay<F>(
    forecaster: &mut F,
    cfg: EngineConfig,
    rows: &[f32],
) -> anyhow::Result<Vec<Decision>>
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
    let mut out = Vec::new();
    for (i, values) in rows.chunks_exact(c).enumerate() {
        let reading = Reading {
            device: "evaluate".into(),
            ts_ms: i as i64,
            values: values.to_vec(),
        };
        match engine.push(&reading) {
            Ok(Pushed::BatchQueued) => {
                for event in engine.flush(forecaster).context("forecaster")? {
                    if let EngineEvent::Scored {
                        start_ts,
                        end_ts,
                        score,
                        threshold,
                        alert_open,
                        ..
                    } = event
                    {
                        out.push(Decision {
                            start: start_ts as usize,
                            end: end_ts as usize,
                            score,
                            threshold,
                            open: alert_open,
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
pub(crate) mod tests {
    use super::*;
    use forewarn_core::gaussian::GaussianErrorModel;
    use forewarn_core::threshold::ThresholdStrategy;
    use forewarn_core::{DetectorConfig, Scaler, Schema, StepBatch};

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

    pub(crate) fn engine_cfg(strategy: ThresholdStrategy) -> EngineConfig {
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
            strategy,
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
    fn replay_decides_in_the_engine_and_points_follow_the_alert() {
        // Rows 0..10; a step to 3 at row 6 for two rows.
        let rows = [0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 3.0, 3.0, 0.0, 0.0, 0.0];
        let fixed = ThresholdStrategy::Fixed { threshold: 1.0 };
        let d = replay(&mut Persistence, engine_cfg(fixed), &rows).unwrap();
        // Batches [0,1] (no forecast yet), [2,3], [4,5], [6,7], [8,9]; row
        // 10 is an incomplete batch. [6,7] is off by 3 (MSE 9), and [8,9]
        // too (forecast 3, observed 0): still open.
        let got: Vec<_> = d
            .iter()
            .map(|d| (d.start, d.end, d.score, d.open))
            .collect();
        assert_eq!(
            got,
            vec![
                (2, 3, 0.0, false),
                (4, 5, 0.0, false),
                (6, 7, 9.0, true),
                (8, 9, 9.0, true)
            ]
        );
        let p = point_predictions(&d, rows.len(), 1);
        let want: Vec<bool> = (0..11).map(|i| (6..=9).contains(&i)).collect();
        assert_eq!(p, want);
        // Minimum event length 3: the first two rows of the event drop out.
        let p = point_predictions(&d, rows.len(), 3);
        let want: Vec<bool> = (0..11).map(|i| (8..=9).contains(&i)).collect();
        assert_eq!(p, want);
        let p = point_predictions(&d, rows.len(), 5);
        assert!(p.iter().all(|x| !x));

        // The Gaussian strategy in the engine: mean 0.5, var 2 -> score
        // mean((e - 0.5)^2) / 2; errors 3, 3 -> 3.125 > 3 opens; -3, -3 ->
        // 6.125.
        let g = ThresholdStrategy::Gaussian {
            model: GaussianErrorModel {
                mean: vec![0.5],
                var: vec![2.0],
                samples: 2,
            },
            threshold: 3.0,
        };
        let d = replay(&mut Persistence, engine_cfg(g), &rows).unwrap();
        let got: Vec<_> = d.iter().map(|d| (d.score, d.threshold, d.open)).collect();
        assert_eq!(
            got,
            vec![
                (0.125, 3.0, false),
                (0.125, 3.0, false),
                (3.125, 3.0, true),
                (6.125, 3.0, true)
            ]
        );
    }
}
