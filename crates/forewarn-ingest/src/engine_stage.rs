//! Stage 2: windows, batched forecasting and detection on a dedicated
//! thread (libtorch calls block; they must not run on the async runtime).

use std::collections::HashSet;
use std::fmt::Display;
use std::time::Instant;

use forewarn_core::engine::{EngineEvent, Pushed, StepBatch};
use forewarn_core::reading::encode_reading;
use forewarn_core::{Engine, Forecaster};
use forewarn_store::AlertChange;
use forewarn_telemetry::DeviceSnapshot;
use forewarn_telemetry::Metrics;
use forewarn_telemetry::events::{InferenceBatch, InternalEvent};
use tokio::sync::mpsc::{Receiver, Sender};
use tokio_util::sync::CancellationToken;

use crate::consume::{Chunk, Rejected};
use crate::{IngestError, Services};

/// A chunk's outcome, handed to the persist stage.
pub(crate) struct Processed {
    pub changes: Vec<AlertChange>,
    pub rejects: Vec<Rejected>,
    pub offsets: Vec<(i32, i64)>,
    pub accepted: usize,
    pub duplicates: usize,
    pub batches_scored: usize,
    pub max_ts: Option<i64>,
}

/// Wraps the forecaster to time each batched call in one place.
struct Timed<'a, F> {
    inner: &'a mut F,
    metrics: &'a Metrics,
}

impl<F: Forecaster> Forecaster for Timed<'_, F> {
    type Error = F::Error;
    fn state_len(&self) -> usize {
        self.inner.state_len()
    }
    fn step(&mut self, batch: &mut StepBatch) -> Result<(), F::Error> {
        let t = Instant::now();
        let r = self.inner.step(batch);
        InferenceBatch {
            size: batch.n,
            seconds: t.elapsed().as_secs_f64(),
        }
        .emit(self.metrics);
        r
    }
}

pub(crate) fn run<F>(
    mut engine: Engine,
    mut forecaster: F,
    services: &Services,
    mut rx: Receiver<Chunk>,
    tx: Sender<Processed>,
    shutdown: &CancellationToken,
) -> Result<(), IngestError>
where
    F: Forecaster,
    F::Error: Display,
{
    let (model, version, threshold) = {
        let c = engine.config();
        (c.model.clone(), c.model_version.clone(), c.threshold)
    };
    while let Some(chunk) = rx.blocking_recv() {
        let processed = match process(&mut engine, &mut forecaster, &services.metrics, chunk) {
            Ok(p) => p,
            Err(e) => {
                tracing::error!(error = %e, "forecaster failed; stopping so that nothing is committed past it");
                shutdown.cancel();
                return Err(e);
            }
        };
        let touched: HashSet<&str> = processed.1.iter().map(String::as_str).collect();
        services.board.update(touched.into_iter().filter_map(|d| {
            engine
                .device(d)
                .map(|v| DeviceSnapshot::from_view(v, &model, &version, threshold))
        }));
        if tx.blocking_send(processed.0).is_err() {
            return Err(IngestError::StageDied("persist"));
        }
    }
    Ok(())
}

fn process<F>(
    engine: &mut Engine,
    forecaster: &mut F,
    metrics: &Metrics,
    chunk: Chunk,
) -> Result<(Processed, Vec<String>), IngestError>
where
    F: Forecaster,
    F::Error: Display,
{
    let mut timed = Timed {
        inner: forecaster,
        metrics,
    };
    let mut out = Processed {
        changes: Vec::new(),
        rejects: chunk.rejects,
        offsets: chunk.offsets,
        accepted: 0,
        duplicates: 0,
        batches_scored: 0,
        max_ts: None,
    };
    let mut events = Vec::new();
    let mut touched = Vec::new();
    for inc in chunk.readings {
        match engine.push(&inc.reading) {
            Ok(Pushed::Duplicate) => out.duplicates += 1,
            Ok(_) => {
                out.accepted += 1;
                out.max_ts = out.max_ts.max(Some(inc.reading.ts_ms));
                if touched.last() != Some(&inc.reading.device) {
                    touched.push(inc.reading.device.clone());
                }
            }
            Err(reason) => out.rejects.push(Rejected {
                // The original bytes are not kept for valid messages; the
                // re-encoded reading carries the same content.
                payload: encode_reading(
                    &inc.reading.device,
                    inc.reading.ts_ms,
                    &inc.reading.values,
                ),
                key: Some(inc.reading.device.into_bytes()),
                reason,
                partition: inc.partition,
                offset: inc.offset,
            }),
        }
        if engine.batch_full() {
            events.extend(
                engine
                    .flush(&mut timed)
                    .map_err(|e| IngestError::Forecaster(e.to_string()))?,
            );
        }
    }
    events.extend(
        engine
            .flush(&mut timed)
            .map_err(|e| IngestError::Forecaster(e.to_string()))?,
    );
    for ev in events {
        match ev {
            EngineEvent::Scored { .. } => out.batches_scored += 1,
            EngineEvent::Opened(a) => out.changes.push(AlertChange::Opened(a)),
            EngineEvent::Resolved(a) => out.changes.push(AlertChange::Resolved(a)),
        }
    }
    Ok((out, touched))
}
