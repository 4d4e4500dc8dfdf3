//! Stage 2: windows, batched forecasting and detection on a dedicated
//! thread (libtorch calls block; they must not run on the async runtime).

use std::fmt::Display;
use std::time::{Duration, Instant};

use forewarn_api::DeviceSnapshot;
use forewarn_core::engine::{EngineEvent, Pushed, StepBatch};
use forewarn_core::reading::encode_reading;
use forewarn_core::{Engine, Forecaster};
use forewarn_store::AlertChange;
use forewarn_telemetry::Metrics;
use forewarn_telemetry::events::{
    AlertDelay, DevicesEvicted, InferenceBatch, InternalEvent, StateRestored,
};
use tokio::sync::mpsc::{Receiver, Sender};
use tokio_util::sync::CancellationToken;

use crate::checkpoint::{Checkpoint, PartitionState};
use crate::consume::{Chunk, Input, Rejected, SpareSender, advance_offset};
use crate::{IngestConfig, IngestError, Services};

/// A chunk's outcome, handed to the persist stage.
pub(crate) struct Processed {
    pub changes: Vec<AlertChange>,
    pub rejects: Vec<Rejected>,
    pub offsets: Vec<(i32, i64)>,
    pub accepted: usize,
    pub duplicates: usize,
    pub batches_scored: usize,
    pub max_ts: Option<i64>,
    /// Device state to make durable; with checkpoints on, only a
    /// checkpoint's markers are stored as offsets, never `offsets`.
    pub checkpoint: Option<Checkpoint>,
    /// Signalled once everything above is durable (a handover waits on it).
    pub done: Option<std::sync::mpsc::Sender<()>>,
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

/// Longest a complete batch waits for more devices' batches to share its
/// forecaster call (the call's other bound is the engine's `max_batch`).
/// Offsets of the chunks behind waiting batches are held back with them.
pub(crate) const BATCH_DEADLINE: Duration = Duration::from_millis(5);

#[allow(clippy::too_many_arguments)]
pub(crate) fn run<F>(
    cfg: &IngestConfig,
    mut engine: Engine,
    mut forecaster: F,
    services: &Services,
    (mut rx, spares): (Receiver<Input>, SpareSender),
    tx: Sender<Processed>,
    shutdown: &CancellationToken,
    swaps: &std::sync::mpsc::Receiver<crate::ModelSwap<F>>,
) -> Result<(), IngestError>
where
    F: Forecaster,
    F::Error: Display,
{
    let (mut model, mut version, mut threshold) = {
        let c = engine.config();
        (c.model.clone(), c.model_version.clone(), c.threshold())
    };
    // Only for waiting on the channel with a timeout; libtorch runs here,
    // on this thread, never on the async runtime.
    let timer = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .map_err(|e| IngestError::Config(format!("engine stage timer: {e}")))?;
    let checkpoints = cfg.checkpoints().then(|| {
        engine.enable_checkpoints();
        Checkpointing {
            interval: cfg.checkpoint_interval,
            last: Instant::now(),
            positions: Vec::new(),
            unsaved: false,
        }
    });
    let mut stage = Stage {
        engine: &mut engine,
        forecaster: &mut forecaster,
        metrics: &services.metrics,
        services,
        held: None,
        waiting_since: None,
        checkpoints,
    };
    loop {
        // Batches are waiting for company: wait for the next chunk only
        // until their deadline; a checkpoint is due: only until then.
        let wait = match stage.waiting_since {
            Some(since) => Some(BATCH_DEADLINE.saturating_sub(since.elapsed())),
            None => stage.checkpoint_due_in(),
        };
        let next = match wait {
            None => rx.blocking_recv().map(Some),
            Some(left) => {
                match timer.block_on(async { tokio::time::timeout(left, rx.recv()).await }) {
                    Ok(input) => input.map(Some),
                    Err(_) => Some(None),
                }
            }
        };
        // Hot reload (`crate::run_reloadable`): between chunks, nothing held.
        if stage.held.is_none()
            && stage.waiting_since.is_none()
            && let Ok(swap) = swaps.try_recv()
        {
            (model, version, threshold) = swap.describe();
            let closed = stage.engine.close_open_alerts();
            if !closed.is_empty() {
                tracing::info!(
                    count = closed.len(),
                    "resolving the replaced model's open alerts"
                );
            }
            *stage.engine = swap.engine;
            *stage.forecaster = swap.forecaster;
            if stage.checkpoints.is_some() {
                stage.engine.enable_checkpoints();
            }
            services.board.clear();
            let mut out = Processed::empty();
            out.changes = closed.into_iter().map(AlertChange::Resolved).collect();
            stage.hold(out);
        }
        let closed = next.is_none();
        let result = match next {
            Some(Some(Input::Chunk(mut chunk))) => {
                let r = stage.process(&mut chunk);
                // Back to the consume thread for reuse (dropped here when
                // enough are waiting there already).
                let _ = spares.try_send(chunk);
                r
            }
            Some(Some(Input::Assigned { states, seconds })) => stage.assigned(states, seconds),
            Some(Some(Input::Revoked {
                partitions,
                done,
                deadline,
            })) => stage.revoked(&partitions, done, deadline),
            // Deadline passed, or the channel closed: run what waits.
            Some(None) | None => stage.forecast(true),
        };
        if let Err(e) = result {
            tracing::error!(error = %e, "forecaster failed; stopping so that nothing is committed past it");
            shutdown.cancel();
            return Err(e);
        }
        if stage.waiting_since.is_none()
            && (closed || stage.checkpoint_due_in() == Some(Duration::ZERO))
        {
            // At shutdown: the final checkpoint, so a restart resumes exactly.
            stage.checkpoint();
        }
        if stage.waiting_since.is_some()
            && let Some(held) = stage.held.as_mut()
            && !held.changes.is_empty()
        {
            // Batches still wait for company, so the offsets stay held; the
            // alert changes need not wait with them. Storing a change early
            // is safe: it precedes its offsets either way, and a replay
            // makes the same change again (upserts by alert id).
            let early = Processed {
                changes: std::mem::take(&mut held.changes),
                ..Processed::empty()
            };
            if tx.blocking_send(early).is_err() {
                return Err(IngestError::StageDied("persist"));
            }
        }
        if stage.waiting_since.is_none()
            && let Some(processed) = stage.held.take()
        {
            // Each device the chunks touched, once, however many readings it took.
            let touched = stage.engine.drain_touched();
            let evicted = stage.engine.drain_evicted();
            DevicesEvicted {
                count: evicted.len(),
            }
            .emit(&services.metrics);
            services.board.remove(evicted);
            services.board.update(
                touched
                    .into_iter()
                    .map(|v| DeviceSnapshot::from_view(v, &model, &version, threshold)),
            );
            if tx.blocking_send(processed).is_err() {
                return Err(IngestError::StageDied("persist"));
            }
        }
        if closed {
            return Ok(());
        }
    }
}

/// Checkpoint bookkeeping of the engine stage.
struct Checkpointing {
    interval: Duration,
    last: Instant,
    /// Per assigned partition, the offset after the last message the
    /// engine has applied: where a checkpoint taken now resumes.
    positions: Vec<(i32, i64)>,
    /// Messages were applied since the last checkpoint.
    unsaved: bool,
}

/// The engine stage's state between chunks.
struct Stage<'a, F> {
    engine: &'a mut Engine,
    forecaster: &'a mut F,
    metrics: &'a Metrics,
    services: &'a Services,
    checkpoints: Option<Checkpointing>,
    /// Outcome of the chunks taken since the queue was last empty. Their
    /// offsets are handed on only once every batch they completed has been
    /// through the forecaster.
    held: Option<Processed>,
    /// When batches started waiting in the engine's queue.
    waiting_since: Option<Instant>,
}

impl<F> Stage<'_, F>
where
    F: Forecaster,
    F::Error: Display,
{
    /// Feeds a chunk to the engine. A forecaster call runs whenever batches
    /// of `max_batch` devices are queued; what is left waits for the next
    /// chunk, at most [`BATCH_DEADLINE`] from when the queue stopped being
    /// empty.
    fn process(&mut self, chunk: &mut Chunk) -> Result<(), IngestError> {
        let mut out = Processed {
            rejects: std::mem::take(&mut chunk.rejects),
            offsets: std::mem::take(&mut chunk.offsets),
            ..Processed::empty()
        };
        if let Some(cp) = &mut self.checkpoints {
            for &(p, next) in &out.offsets {
                advance_offset(&mut cp.positions, p, next);
            }
            cp.unsaved |= !out.offsets.is_empty();
        }
        for (reading, &(partition, offset)) in chunk.readings.iter().zip(&chunk.origins) {
            match self.engine.push_ref(reading, partition) {
                Ok(Pushed::Duplicate) => out.duplicates += 1,
                Ok(_) => {
                    out.accepted += 1;
                    out.max_ts = out.max_ts.max(Some(reading.ts_ms));
                }
                Err(reason) => out.rejects.push(Rejected {
                    // The original bytes are not kept for valid messages; the
                    // re-encoded reading carries the same content.
                    payload: encode_reading(reading.device, reading.ts_ms, reading.values),
                    key: Some(reading.device.as_bytes().to_vec()),
                    reason,
                    partition,
                    offset,
                }),
            }
            if self.engine.batch_full() {
                self.hold(out);
                self.forecast(false)?;
                out = Processed::empty();
            }
        }
        self.hold(out);
        if self.engine.queued() == 0 {
            self.waiting_since = None;
        } else {
            let since = *self.waiting_since.get_or_insert_with(Instant::now);
            if since.elapsed() >= BATCH_DEADLINE {
                self.forecast(true)?;
            }
        }
        Ok(())
    }

    /// Runs every queued batch (`all`), or only full forecaster calls, and
    /// records the outcome in `held`.
    fn forecast(&mut self, all: bool) -> Result<(), IngestError> {
        let mut timed = Timed {
            inner: &mut *self.forecaster,
            metrics: self.metrics,
        };
        let events = if all {
            self.engine.flush(&mut timed)
        } else {
            self.engine.flush_full(&mut timed)
        }
        .map_err(|e| IngestError::Forecaster(e.to_string()))?;
        if self.engine.queued() == 0 {
            self.waiting_since = None;
        }
        let held = self.held.get_or_insert_with(Processed::empty);
        for ev in events {
            let change = match ev {
                EngineEvent::Scored { .. } => {
                    held.batches_scored += 1;
                    continue;
                }
                EngineEvent::Opened(a) => AlertChange::Opened(a),
                EngineEvent::Resolved(a) => AlertChange::Resolved(a),
            };
            AlertDelay::since("scored", change.reading_ts()).emit(self.metrics);
            held.changes.push(change);
        }
        Ok(())
    }

    /// How long until a checkpoint is due (zero: now); `None` when
    /// checkpoints are off or nothing changed since the last one.
    fn checkpoint_due_in(&self) -> Option<Duration> {
        let cp = self.checkpoints.as_ref()?;
        cp.unsaved
            .then(|| cp.interval.saturating_sub(cp.last.elapsed()))
    }

    /// Attaches a checkpoint of every changed device and every partition's
    /// position to the held outcome. Only with no batch queued.
    fn checkpoint(&mut self) {
        let Some(cp) = &mut self.checkpoints else {
            return;
        };
        if self.held.as_ref().is_some_and(|h| h.checkpoint.is_some()) {
            // A handover's checkpoint goes out first, alone (it is not
            // written at all when late, which must not take a timer
            // checkpoint's records with it); this one is taken next turn.
            return;
        }
        let records = match self.engine.checkpoint() {
            Ok(r) => r,
            Err(e) => {
                tracing::error!(error = %e, "checkpoint skipped");
                return;
            }
        };
        let markers = cp.positions.clone();
        cp.last = Instant::now();
        cp.unsaved = false;
        if records.is_empty() && markers.is_empty() {
            return;
        }
        self.held.get_or_insert_with(Processed::empty).checkpoint = Some(Checkpoint {
            records,
            markers,
            handover: None,
        });
    }

    /// Partitions assigned: restores their checkpointed devices (any
    /// queued batch runs first) and their positions.
    fn assigned(&mut self, states: Vec<PartitionState>, seconds: f64) -> Result<(), IngestError> {
        self.forecast(true)?;
        let (mut devices, mut rejected) = (0, 0);
        let partitions = states.len();
        for s in states {
            if let (Some(cp), Some(at)) = (&mut self.checkpoints, s.resume_at) {
                cp.positions.retain(|(p, _)| *p != s.partition);
                cp.positions.push((s.partition, at));
            }
            for bytes in &s.states {
                match self.engine.restore(bytes) {
                    Ok(_) => devices += 1,
                    Err(e) => {
                        if rejected == 0 {
                            tracing::warn!(partition = s.partition, error = %e, "a checkpointed device starts over");
                        }
                        rejected += 1;
                    }
                }
            }
        }
        StateRestored {
            partitions,
            devices,
            rejected,
            seconds,
        }
        .emit(self.metrics);
        Ok(())
    }

    /// Partitions revoked: checkpoints and drops their devices, and hands
    /// `done` to the persist stage with that checkpoint.
    fn revoked(
        &mut self,
        partitions: &[i32],
        done: std::sync::mpsc::Sender<()>,
        deadline: Instant,
    ) -> Result<(), IngestError> {
        self.forecast(true)?;
        let (records, released) = self
            .engine
            .release_origins(partitions)
            .map_err(|e| IngestError::Config(format!("handover: {e}")))?;
        self.services.board.remove(released);
        let mut markers = Vec::new();
        if let Some(cp) = &mut self.checkpoints {
            cp.positions.retain(|&(p, at)| {
                let revoked = partitions.contains(&p);
                if revoked {
                    markers.push((p, at));
                }
                !revoked
            });
        }
        let held = self.held.get_or_insert_with(Processed::empty);
        // Timer checkpoints leave with the outcome they are taken for, so
        // none is waiting here to be replaced.
        debug_assert!(held.checkpoint.is_none());
        held.checkpoint = Some(Checkpoint {
            records,
            markers,
            handover: Some(deadline),
        });
        held.done = Some(done);
        Ok(())
    }

    fn hold(&mut self, p: Processed) {
        match &mut self.held {
            None => self.held = Some(p),
            Some(held) => held.merge(p),
        }
    }
}

impl Processed {
    fn empty() -> Self {
        Self {
            changes: Vec::new(),
            rejects: Vec::new(),
            offsets: Vec::new(),
            accepted: 0,
            duplicates: 0,
            batches_scored: 0,
            max_ts: None,
            checkpoint: None,
            done: None,
        }
    }

    /// Appends a later outcome: its offsets are at or past ours.
    fn merge(&mut self, later: Processed) {
        self.changes.extend(later.changes);
        self.rejects.extend(later.rejects);
        for (p, next) in later.offsets {
            advance_offset(&mut self.offsets, p, next);
        }
        self.accepted += later.accepted;
        self.duplicates += later.duplicates;
        self.batches_scored += later.batches_scored;
        self.max_ts = self.max_ts.max(later.max_ts);
        if later.checkpoint.is_some() {
            self.checkpoint = later.checkpoint;
        }
        if later.done.is_some() {
            self.done = later.done;
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use forewarn_api::{AlertBus, DeviceBoard};
    use forewarn_core::ReadingRef;
    use forewarn_core::testing::{Persistence, engine};
    use forewarn_store::AlertStore;
    use forewarn_telemetry::Health;

    use super::*;

    /// An alert opened by a call goes to the persist stage at once, while
    /// the chunk's offsets stay held behind a batch still waiting for
    /// company; the offsets follow once that batch has run.
    #[test]
    fn alert_changes_do_not_wait_for_held_offsets() {
        // Devices d and e every tick (d's third batch, ticks 5-6, is off by
        // 2 on channel b: it opens an alert); f joins at tick 5, so its
        // first batch is due alone after the call that scores d's.
        let mut chunk = Chunk::default();
        let mut offset = 0;
        for tick in 1..=6i64 {
            let spike = if tick >= 5 { 2.0 } else { 0.0 };
            for (device, b) in [("d", spike), ("e", 0.0), ("f", 0.0)] {
                if device == "f" && tick < 5 {
                    continue;
                }
                chunk.readings.push(ReadingRef {
                    device,
                    ts_ms: 10 * tick,
                    values: &[0.0, b],
                });
                chunk.origins.push((0, offset));
                offset += 1;
            }
        }
        chunk.offsets = vec![(0, offset)];
        chunk.consumed = offset as usize;

        let metrics = Arc::new(Metrics::new());
        let services = Services {
            store: Arc::new(AlertStore::open_in_memory().unwrap()),
            board: Arc::new(DeviceBoard::new()),
            health: Arc::new(Health::with_metrics(&metrics)),
            metrics,
            bus: AlertBus::default(),
        };
        let cfg = IngestConfig {
            checkpoint_interval: Duration::ZERO,
            ..IngestConfig::default()
        };
        let (in_tx, in_rx) = tokio::sync::mpsc::channel(4);
        let (out_tx, mut out_rx) = tokio::sync::mpsc::channel(4);
        let (spare_tx, _spares) = crate::consume::spares();
        let (_swap_tx, swaps) = std::sync::mpsc::channel::<crate::ModelSwap<Persistence>>();
        let shutdown = CancellationToken::new();
        let stage = std::thread::spawn(move || {
            run(
                &cfg,
                // Two devices per call: a third device's batch waits for company.
                engine(2),
                Persistence { calls: vec![] },
                &services,
                (in_rx, spare_tx),
                out_tx,
                &shutdown,
                &swaps,
            )
        });
        in_tx.blocking_send(Input::Chunk(chunk)).unwrap();

        let first = out_rx.blocking_recv().expect("the alert change");
        assert!(
            first.offsets.is_empty(),
            "offsets went ahead: {:?}",
            first.offsets
        );
        match first.changes.as_slice() {
            [AlertChange::Opened(a)] => assert_eq!((a.device.as_str(), a.opened_at), ("d", 60)),
            other => panic!("expected d's alert alone, got {other:?}"),
        }
        // After the 5 ms deadline f's batch runs and the offsets follow.
        let second = out_rx.blocking_recv().expect("the held outcome");
        assert!(second.changes.is_empty());
        assert_eq!(second.offsets, vec![(0, offset)]);
        assert_eq!(second.accepted, 14);

        drop(in_tx);
        stage.join().unwrap().unwrap();
        // Whatever the stage hands over as it stops repeats nothing.
        while let Some(p) = out_rx.blocking_recv() {
            assert!(p.changes.is_empty() && p.accepted == 0, "{:?}", p.changes);
        }
    }
}
