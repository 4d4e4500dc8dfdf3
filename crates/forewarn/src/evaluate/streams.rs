//! Replaying many row streams through one engine, one device each, so the
//! forecaster advances all of them in one call per batch instead of one
//! call per stream and batch (calibration replays dozens of copies of the
//! validation tail with injected faults).

use std::collections::HashMap;

use anyhow::{Context, bail};
use forewarn_core::engine::{Engine, EngineConfig, EngineEvent, Forecaster, Pushed};
use forewarn_core::reading::Reading;
use forewarn_model::ModelError;

/// Pushes `streams` (raw rows, row-major) into a fresh engine, stream `k`
/// as device `k` with timestamps = row indices, row `i` of every stream
/// before row `i + 1` of any; whenever batches are complete they run
/// through `forecaster` together. Hands `(k, end_ts, score)` of every
/// scored batch to `on_scored`.
pub fn replay_streams<F>(
    forecaster: &mut F,
    cfg: EngineConfig,
    streams: &[Vec<f32>],
    mut on_scored: impl FnMut(usize, i64, f64),
) -> anyhow::Result<()>
where
    F: Forecaster,
    F::Error: Into<ModelError>,
{
    let c = cfg.schema.len();
    if c == 0 || streams.iter().any(|s| !s.len().is_multiple_of(c)) {
        bail!("replay: a stream does not fill rows of {c} channels");
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
                ts_ms: i as i64,
                values: values.to_vec(),
            };
            match engine.push(&reading) {
                Ok(Pushed::BatchQueued) => queued = true,
                Ok(_) => {}
                Err(reason) => bail!("replay: stream {k} row {i} rejected: {reason}"),
            }
        }
        if queued {
            let events = engine
                .flush(forecaster)
                .map_err(Into::into)
                .context("forecaster")?;
            for event in events {
                if let EngineEvent::Scored {
                    device,
                    end_ts,
                    score,
                    ..
                } = event
                {
                    on_scored(index[&device], end_ts, score);
                }
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::evaluate::replay::tests::engine_cfg;
    use forewarn_core::StepBatch;
    use forewarn_core::threshold::ThresholdStrategy;

    /// Forecasts each device's last row for its whole next batch, and
    /// counts calls.
    struct Persistence(usize);

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

    fn scored(streams: &[Vec<f32>]) -> (Vec<(usize, i64, f64)>, usize) {
        let mut f = Persistence(0);
        let mut out = Vec::new();
        let cfg = engine_cfg(ThresholdStrategy::Fixed {
            threshold: f64::INFINITY,
        });
        replay_streams(&mut f, cfg, streams, |k, end, score| {
            out.push((k, end, score))
        })
        .unwrap();
        out.sort_by_key(|a| (a.0, a.1));
        (out, f.0)
    }

    #[test]
    fn streams_together_score_as_each_alone_in_fewer_calls() {
        let streams: Vec<Vec<f32>> = vec![
            vec![0.0, 0.0, 1.0, 1.0, 5.0, 5.0, 0.0, 0.0, 0.0],
            vec![2.0, 2.0, 2.0, 2.0, 2.0, 2.0, 2.0, 2.0, 2.0],
            // Shorter: it simply ends earlier.
            vec![0.0, 1.0, 2.0, 3.0, 4.0, 5.0],
        ];
        let (together, calls) = scored(&streams);
        let mut alone = Vec::new();
        let mut alone_calls = 0;
        for (k, s) in streams.iter().enumerate() {
            let (one, n) = scored(std::slice::from_ref(s));
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
}
