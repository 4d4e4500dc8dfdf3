//! Replaying rows through the service's [`Engine`]: the one way every
//! offline score is computed (the fixed threshold's validation scores, the
//! Gaussian error vectors and injected copies, the dynamic threshold's
//! seed, and `forewarn evaluate`'s decisions), so a threshold means online
//! what it meant here.
//!
//! Each stream of rows is one device of a fresh engine with the model's
//! configuration (strategy and hysteresis included), its rows stamped with
//! their times in milliseconds when given (what the seasonal rule reads),
//! else with their index; row `i` of every stream goes in before row `i + 1` of any,
//! and the engine is flushed after every row that completes a batch, so the
//! forecaster advances every stream in one call per batch (calibration
//! replays dozens of copies of the validation tail). No decision uses data
//! after the batch it is about.

use std::collections::HashMap;

use forewarn_core::engine::{Engine, EngineConfig, EngineEvent, Forecaster, Pushed};
use forewarn_core::scaler::Scaler;
use forewarn_core::threshold::ThresholdStrategy;
use forewarn_core::{Reading, StepBatch};
use forewarn_model::ModelError;

use crate::error::OfflineError;

/// Pushes `streams` (raw rows, row-major) into a fresh engine with `cfg`,
/// stream `k` as device `k`, and hands every event the engine emits to
/// `on_event` with the forecaster and the stream's index.
pub fn replay<F>(
    forecaster: &mut F,
    cfg: EngineConfig,
    streams: &[&[f32]],
    on_event: impl FnMut(&F, usize, EngineEvent),
) -> Result<(), OfflineError>
where
    F: Forecaster,
    F::Error: Into<ModelError>,
{
    replay_timed(forecaster, cfg, streams, &[], on_event)
}

/// Whether `times` can stamp rows: strictly increasing, as the engine
/// takes readings (an equal time is a duplicate, an earlier one out of
/// order).
pub fn strictly_increasing(times: &[i64]) -> bool {
    times.windows(2).all(|w| w[0] < w[1])
}

/// [`replay`] with stream `k`'s rows stamped `times[k]` (milliseconds,
/// strictly increasing, one per row); a stream without times gets its row
/// index.
pub fn replay_timed<F>(
    forecaster: &mut F,
    cfg: EngineConfig,
    streams: &[&[f32]],
    times: &[Option<&[i64]>],
    mut on_event: impl FnMut(&F, usize, EngineEvent),
) -> Result<(), OfflineError>
where
    F: Forecaster,
    F::Error: Into<ModelError>,
{
    let c = cfg.schema.len();
    let time_of = |k: usize, i: usize| -> i64 {
        match times.get(k).copied().flatten() {
            Some(t) => t[i],
            None => i as i64,
        }
    };
    for (k, t) in times.iter().enumerate() {
        let Some(t) = t else { continue };
        let rows = streams.get(k).map_or(0, |s| s.len() / c.max(1));
        if t.len() != rows || !strictly_increasing(t) {
            return Err(OfflineError::Config(format!(
                "replay: stream {k} has {rows} rows and {} times, which must match and strictly increase",
                t.len()
            )));
        }
    }
    if c == 0 || cfg.scaler.channels() != c || streams.iter().any(|s| !s.len().is_multiple_of(c)) {
        return Err(OfflineError::Config(format!(
            "replay: {c} schema channels, {} scaler channels, and a stream of {} values",
            cfg.scaler.channels(),
            streams
                .iter()
                .map(|s| s.len())
                .find(|n| c == 0 || !n.is_multiple_of(c))
                .unwrap_or(0)
        )));
    }
    if cfg.horizon == 0 || cfg.max_batch == 0 || cfg.state_len != forecaster.state_len() {
        return Err(OfflineError::Config(format!(
            "replay: horizon {}, max_batch {}, state_len {} (model: {})",
            cfg.horizon,
            cfg.max_batch,
            cfg.state_len,
            forecaster.state_len()
        )));
    }
    let ids: Vec<String> = (0..streams.len()).map(|k| format!("stream-{k}")).collect();
    let index: HashMap<String, usize> = ids.iter().cloned().zip(0..).collect();
    let rows = streams.iter().map(|s| s.len() / c).max().unwrap_or(0);
    // Every stream completes a batch on the same row, so a call takes them
    // all: let the engine batch as many devices as there are streams.
    let mut engine = Engine::new(EngineConfig {
        max_batch: cfg.max_batch.max(streams.len()),
        ..cfg
    });
    for i in 0..rows {
        let mut queued = false;
        for (k, s) in streams.iter().enumerate() {
            let Some(values) = s.get(i * c..(i + 1) * c) else {
                continue;
            };
            let reading = Reading {
                device: ids[k].clone(),
                ts_ms: time_of(k, i),
                values: values.to_vec(),
            };
            match engine.push(&reading) {
                Ok(Pushed::BatchQueued) => queued = true,
                Ok(_) => {}
                Err(reason) => {
                    return Err(OfflineError::Config(format!(
                        "replay: stream {k} row {i} rejected by the engine: {reason}"
                    )));
                }
            }
        }
        if queued {
            let events = engine
                .flush(forecaster)
                .map_err(|e| OfflineError::Model(e.into()))?;
            for event in events {
                let k = match &event {
                    EngineEvent::Scored { device, .. } => index[device.as_str()],
                    EngineEvent::Opened(a) | EngineEvent::Resolved(a) => index[a.device.as_str()],
                };
                on_event(forecaster, k, event);
            }
        }
    }
    Ok(())
}

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
    /// `(row, col)` of the first cell named by the alert this batch
    /// opened (with a grid).
    pub opened_cell: Option<(usize, usize)>,
}

/// Every scored batch's decision when raw `rows` are replayed as one
/// device with `cfg` (strategy and hysteresis included).
pub fn decisions<F>(
    forecaster: &mut F,
    cfg: EngineConfig,
    rows: &[f32],
) -> Result<Vec<Decision>, OfflineError>
where
    F: Forecaster,
    F::Error: Into<ModelError>,
{
    decisions_timed(forecaster, cfg, rows, None)
}

/// [`decisions`] with the rows stamped `times` (milliseconds, strictly
/// increasing) instead of their index; the decisions still name rows.
pub fn decisions_timed<F>(
    forecaster: &mut F,
    cfg: EngineConfig,
    rows: &[f32],
    times: Option<&[i64]>,
) -> Result<Vec<Decision>, OfflineError>
where
    F: Forecaster,
    F::Error: Into<ModelError>,
{
    let mut out = Vec::new();
    // The engine announces an alert before the batch's score.
    let mut opened_cell = None;
    let row_of = |ts: i64| match times {
        // Every batch starts and ends on a row's own time.
        Some(t) => t.partition_point(|x| *x < ts),
        None => ts as usize,
    };
    replay_timed(
        forecaster,
        cfg,
        &[rows],
        &[times],
        |_, _, event| match event {
            EngineEvent::Opened(a) => opened_cell = a.cells.first().map(|c| (c.row, c.col)),
            EngineEvent::Scored {
                start_ts,
                end_ts,
                score,
                threshold,
                alert_open,
                ..
            } => out.push(Decision {
                start: row_of(start_ts),
                end: row_of(end_ts),
                score,
                threshold,
                open: alert_open,
                opened_cell: opened_cell.take(),
            }),
            _ => {}
        },
    )?;
    Ok(out)
}

/// `cfg` with a strategy that never opens an alert or trips the
/// hysteresis (a Gaussian strategy keeps its error model, so its scores
/// are Gaussian scores).
fn never_alerting(mut cfg: EngineConfig) -> EngineConfig {
    cfg.strategy = match cfg.strategy {
        ThresholdStrategy::Gaussian { model, .. } => ThresholdStrategy::Gaussian {
            model,
            threshold: f64::INFINITY,
        },
        _ => ThresholdStrategy::Fixed {
            threshold: f64::INFINITY,
        },
    };
    cfg
}

/// Every batch's raw score when raw `rows` are replayed as one device from
/// zero state: the batch MSE, or the Gaussian score when `cfg`'s strategy
/// is `gaussian` (a `dynamic` strategy's smoothing is not applied). What
/// thresholds are calibrated from.
pub fn scores<F>(
    forecaster: &mut F,
    cfg: EngineConfig,
    rows: &[f32],
) -> Result<Vec<f64>, OfflineError>
where
    F: Forecaster,
    F::Error: Into<ModelError>,
{
    let mut scores = Vec::new();
    stream_scores(forecaster, cfg, &[rows], |_, _, score| scores.push(score))?;
    Ok(scores)
}

/// [`scores`] of many streams replayed together: `on_scored` gets each
/// scored batch's stream, last row and score.
pub fn stream_scores<F>(
    forecaster: &mut F,
    cfg: EngineConfig,
    streams: &[&[f32]],
    mut on_scored: impl FnMut(usize, i64, f64),
) -> Result<(), OfflineError>
where
    F: Forecaster,
    F::Error: Into<ModelError>,
{
    replay(forecaster, never_alerting(cfg), streams, |_, k, event| {
        if let EngineEvent::Scored { end_ts, score, .. } = event {
            on_scored(k, end_ts, score);
        }
    })
}

/// The error vectors (`rows x monitored channels`, scaled units, observed
/// minus forecast — or minus reconstruction for a model that
/// [reconstructs](Forecaster::reconstructs); context channels have none)
/// of every batch the engine
/// scores when `rows` are replayed as in [`scores`]: what a Gaussian error
/// model is fitted on. The engine reports scores, not error vectors, so a
/// wrapper around the forecaster records each call's inputs and outputs
/// (one device, one batch per call).
pub fn errors<F>(
    forecaster: &mut F,
    cfg: EngineConfig,
    rows: &[f32],
) -> Result<Vec<f32>, OfflineError>
where
    F: Forecaster,
    F::Error: Into<ModelError>,
{
    let cfg = EngineConfig {
        strategy: ThresholdStrategy::Fixed {
            threshold: f64::INFINITY,
        },
        ..cfg
    };
    let (c, monitored) = (cfg.schema.len(), cfg.monitored.clone());
    let mut rec = Recorder {
        pinned: cfg.scaler.pinned_outputs(&monitored),
        inner: forecaster,
        inputs: vec![],
        output: vec![],
        previous: vec![],
    };
    let mut errors = Vec::new();
    replay(&mut rec, cfg, &[rows], |rec, _, event| {
        if let EngineEvent::Scored { .. } = event {
            let reference = if rec.inner.reconstructs() {
                &rec.output
            } else {
                &rec.previous
            };
            let observed = rec
                .inputs
                .chunks_exact(c)
                .flat_map(|row| monitored.iter().map(|&j| row[j]));
            errors.extend(observed.zip(reference).map(|(o, p)| o - p));
        }
    })?;
    Ok(errors)
}

/// Forwards to the model and keeps the last call's inputs and output and
/// the output of the call before. The output is the forecast the engine
/// scores against: with the channels forecast as their training constant
/// pinned, as the engine pins them.
struct Recorder<'a, F> {
    inner: &'a mut F,
    pinned: Vec<usize>,
    inputs: Vec<f32>,
    output: Vec<f32>,
    previous: Vec<f32>,
}

impl<F: Forecaster> Forecaster for Recorder<'_, F> {
    type Error = F::Error;

    fn state_len(&self) -> usize {
        self.inner.state_len()
    }

    fn reconstructs(&self) -> bool {
        self.inner.reconstructs()
    }

    fn step(&mut self, b: &mut StepBatch) -> Result<(), F::Error> {
        debug_assert_eq!(b.n, 1, "error vectors are recorded from one device");
        self.inner.step(b)?;
        std::mem::swap(&mut self.previous, &mut self.output);
        self.output.clone_from(&b.predictions);
        Scaler::pin_forecasts(&mut self.output, b.outputs, &self.pinned);
        self.inputs.clone_from(&b.inputs);
        Ok(())
    }
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
    use forewarn_core::{DetectorConfig, Scaler, Schema};

    /// Forecasts each device's last row for its whole next batch, and
    /// counts calls.
    pub(crate) struct Persistence(pub usize);

    impl Forecaster for Persistence {
        type Error = ModelError;
        fn state_len(&self) -> usize {
            1
        }
        fn step(&mut self, b: &mut StepBatch) -> Result<(), ModelError> {
            self.0 += 1;
            let (hc, c) = (b.horizon * b.channels, b.channels);
            for i in 0..b.n {
                let last = b.inputs[(i + 1) * hc - c..(i + 1) * hc].to_vec();
                for r in 0..b.horizon {
                    let at = i * hc + r * c;
                    b.predictions[at..at + c].copy_from_slice(&last);
                }
            }
            Ok(())
        }
    }

    pub(crate) fn engine_cfg(strategy: ThresholdStrategy) -> EngineConfig {
        EngineConfig {
            schema: Schema::new(vec!["a".into()]),
            monitored: vec![0],
            scaler: Scaler {
                center: vec![0.0],
                scale: vec![1.0],
                constant: vec![false],
                forecast_constant: Vec::new(),
            },
            horizon: 2,
            window: 4,
            warmup: 2,
            state_len: 1,
            strategy,
            flatline: None,
            detector: DetectorConfig {
                open_after: 1,
                resolve_after: 1,
                resolve_ratio: 1.0,
                open_ratio: 0.0,
                probation: 0,
                context_change_margin: 1.0,
                context_change_rows: 0,
            },
            model: "m".into(),
            model_version: "v".into(),
            max_batch: 4,
            grid: None,
        }
    }

    /// A daily spike, rows every 30 minutes for 3 days, replayed with its
    /// times and with row indices, under a dynamic threshold with a
    /// one-day season: the rows' times reach the seasonal rule.
    #[test]
    fn timed_replay_gives_the_seasonal_rule_the_rows_times() {
        use forewarn_core::dynamic_threshold::DynamicThresholdConfig;
        use std::time::Duration;
        let mut rows = vec![0.0f32; 144];
        for day in 0..3 {
            rows[20 + 48 * day] = 5.0;
        }
        let times: Vec<i64> = (0..144)
            .map(|i| 1_700_000_000_000 + i * 1_800_000)
            .collect();
        let strategy = ThresholdStrategy::Dynamic {
            config: DynamicThresholdConfig {
                smoothing: 1.0,
                exclude_flagged: true,
                season: Duration::from_secs(86_400),
                season_tolerance: Duration::from_secs(3_600),
                season_ratio: 0.5,
                ..Default::default()
            },
            seed: vec![0.0, 0.1, 0.0, 0.1],
            floor: 1.0,
            gaussian: None,
            residual: None,
        };
        let run = |times: Option<&[i64]>| {
            decisions_timed(
                &mut Persistence(0),
                engine_cfg(strategy.clone()),
                &rows,
                times,
            )
            .unwrap()
        };
        let (timed, untimed) = (run(Some(&times)), run(None));
        let rows_of = |d: &[Decision]| d.iter().map(|d| (d.start, d.end)).collect::<Vec<_>>();
        assert_eq!(rows_of(&timed), rows_of(&untimed));
        let opened = |d: &[Decision]| {
            (d.windows(2))
                .filter(|w| w[1].open && !w[0].open)
                .map(|w| w[1].start)
                .collect::<Vec<_>>()
        };
        // In time, the spike on days 2 and 3 was seen a day earlier.
        assert_eq!(opened(&timed), vec![20]);
        // As row indices (milliseconds) no day ever passes.
        assert_eq!(opened(&untimed), vec![20, 68, 116]);
        // Times must match the rows and increase.
        let mut bad = times.clone();
        bad[50] = bad[49];
        let err = decisions_timed(
            &mut Persistence(0),
            engine_cfg(strategy.clone()),
            &rows,
            Some(&bad),
        );
        assert!(err.unwrap_err().to_string().contains("strictly increase"));
    }

    #[test]
    fn replay_decides_in_the_engine_and_points_follow_the_alert() {
        // Rows 0..10; a step to 3 at row 6 for two rows.
        let rows = [0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 3.0, 3.0, 0.0, 0.0, 0.0];
        let fixed = ThresholdStrategy::Fixed { threshold: 1.0 };
        let d = decisions(&mut Persistence(0), engine_cfg(fixed), &rows).unwrap();
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
        let d = decisions(&mut Persistence(0), engine_cfg(g.clone()), &rows).unwrap();
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
        // Calibration scores are the same scores, never alerting.
        let s = scores(&mut Persistence(0), engine_cfg(g), &rows).unwrap();
        assert_eq!(s, vec![0.125, 0.125, 3.125, 6.125]);
        // And the error vectors behind them: observed minus forecast.
        let fixed = ThresholdStrategy::Fixed { threshold: 1.0 };
        let e = errors(&mut Persistence(0), engine_cfg(fixed), &rows).unwrap();
        assert_eq!(e, vec![0.0, 0.0, 0.0, 0.0, 3.0, 3.0, -3.0, -3.0]);
    }

    fn scored(streams: &[&[f32]]) -> (Vec<(usize, i64, f64)>, usize) {
        let mut f = Persistence(0);
        let mut out = Vec::new();
        let cfg = engine_cfg(ThresholdStrategy::Fixed {
            threshold: f64::INFINITY,
        });
        stream_scores(&mut f, cfg, streams, |k, end, score| {
            out.push((k, end, score))
        })
        .unwrap();
        out.sort_by_key(|a| (a.0, a.1));
        (out, f.0)
    }

    #[test]
    fn streams_together_score_as_each_alone_in_fewer_calls() {
        let streams: [&[f32]; 3] = [
            &[0.0, 0.0, 1.0, 1.0, 5.0, 5.0, 0.0, 0.0, 0.0],
            &[2.0, 2.0, 2.0, 2.0, 2.0, 2.0, 2.0, 2.0, 2.0],
            // Shorter: it simply ends earlier.
            &[0.0, 1.0, 2.0, 3.0, 4.0, 5.0],
        ];
        let (together, calls) = scored(&streams);
        let mut alone = Vec::new();
        let mut alone_calls = 0;
        for (k, s) in streams.iter().enumerate() {
            let (one, n) = scored(&[s]);
            alone.extend(one.into_iter().map(|(_, e, sc)| (k, e, sc)));
            alone_calls += n;
        }
        assert_eq!(together, alone);
        // Batches of 2 rows: 4 complete batches per long stream; one call
        // per batch row for all streams together.
        assert_eq!((calls, alone_calls), (4, 4 + 4 + 3));
        // Stream 0's batch [4,5] jumps from 1 to 5: MSE 16.
        assert!(together.contains(&(0, 5, 16.0)));
    }

    #[test]
    fn rows_that_do_not_fit_the_model_are_errors() {
        let fixed = ThresholdStrategy::Fixed { threshold: 1.0 };
        let mut cfg = engine_cfg(fixed.clone());
        cfg.schema = Schema::new(vec!["a".into(), "b".into()]);
        let e = decisions(&mut Persistence(0), cfg, &[1.0, 2.0]).unwrap_err();
        assert!(e.to_string().contains("2 schema channels, 1 scaler"), "{e}");
        let mut cfg = engine_cfg(fixed);
        cfg.state_len = 3;
        let e = scores(&mut Persistence(0), cfg, &[1.0, 2.0]).unwrap_err();
        assert!(e.to_string().contains("state_len 3 (model: 1)"), "{e}");
    }
}
