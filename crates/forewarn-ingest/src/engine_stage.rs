//! Stage 2: windows, batched forecasting and detection on a dedicated
//! thread (libtorch calls block; they must not run on the async runtime).
//!
//! One turn of [`run`]: wait for the next input, at most until the waiting
//! batches' deadline or the next checkpoint ([`Inbox`], [`Stage::wait`]);
//! swap in a reloaded model if one is ready and nothing is held
//! ([`Stage::swap_if_ready`]); apply the input ([`Stage::dispatch`]); take
//! a checkpoint if one is due ([`Stage::checkpoint_if_due`]); hand on what
//! may go to the persist stage ([`Stage::release`]). What to hold and when
//! to let it go is decided without I/O in [`outbox`] and [`checkpointing`].

mod checkpointing;
pub(crate) mod diagnose;
mod outbox;

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

use crate::config::IngestConfig;
use crate::error::IngestError;
use crate::messages::{
    Checkpoint, Chunk, Input, ModelSwap, PartitionState, Processed, Rejected, SpareSender,
};
use crate::services::Services;
use checkpointing::Checkpointing;
use diagnose::{Classifier, Diagnoser};
use outbox::{Outbox, Release};

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
    engine: Engine,
    forecaster: F,
    classifier: Option<Classifier>,
    services: &Services,
    (rx, spares): (Receiver<Input>, SpareSender),
    tx: Sender<Processed>,
    shutdown: &CancellationToken,
    swaps: &std::sync::mpsc::Receiver<ModelSwap<F>>,
) -> Result<(), IngestError>
where
    F: Forecaster,
    F::Error: Display,
{
    let mut inbox = Inbox::new(rx)?;
    let mut stage = Stage::new(cfg, engine, forecaster, services);
    stage.diagnoser = classifier.map(Diagnoser::new);
    loop {
        let next = inbox.next(stage.wait(Instant::now()));
        stage.swap_if_ready(swaps);
        let closed = matches!(next, Next::Closed);
        if let Err(e) = stage.dispatch(next, &spares) {
            tracing::error!(error = %e, "forecaster failed; stopping so that nothing is committed past it");
            shutdown.cancel();
            return Err(e);
        }
        stage.checkpoint_if_due(closed);
        if let Some(out) = stage.release()
            && tx.blocking_send(out).is_err()
        {
            return Err(IngestError::StageDied("persist"));
        }
        if closed {
            return Ok(());
        }
    }
}

/// What the stage's input brought.
enum Next {
    Input(Input),
    /// The wait ran out first.
    Timeout,
    /// The consume thread is gone: its input is closed.
    Closed,
}

/// The stage's input, waited on with a timeout.
struct Inbox {
    rx: Receiver<Input>,
    /// Only for waiting on the channel with a timeout; libtorch runs on
    /// this thread, never on the async runtime.
    timer: tokio::runtime::Runtime,
}

impl Inbox {
    fn new(rx: Receiver<Input>) -> Result<Self, IngestError> {
        let timer = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .map_err(|e| IngestError::Config(format!("engine stage timer: {e}")))?;
        Ok(Self { rx, timer })
    }

    /// The next input, waiting at most `wait` (`None`: until one comes).
    fn next(&mut self, wait: Option<Duration>) -> Next {
        let Some(left) = wait else {
            return self.rx.blocking_recv().map_or(Next::Closed, Next::Input);
        };
        let rx = &mut self.rx;
        match self
            .timer
            .block_on(async { tokio::time::timeout(left, rx.recv()).await })
        {
            Ok(Some(input)) => Next::Input(input),
            Ok(None) => Next::Closed,
            Err(_) => Next::Timeout,
        }
    }
}

/// How long the stage may wait for input: batches waiting for company
/// only until their deadline; otherwise until a checkpoint is due, if one
/// will be (`checkpoint_due_in`); `None`: until input comes.
fn wait_for_input(
    waiting_since: Option<Instant>,
    checkpoint_due_in: Option<Duration>,
    now: Instant,
) -> Option<Duration> {
    match waiting_since {
        Some(since) => Some(BATCH_DEADLINE.saturating_sub(now.saturating_duration_since(since))),
        None => checkpoint_due_in,
    }
}

/// The engine stage's state between inputs.
struct Stage<'a, F> {
    engine: Engine,
    forecaster: F,
    services: &'a Services,
    /// (model, version, threshold) the device snapshots carry.
    model: (String, String, f64),
    /// Present when checkpoints are on.
    checkpoints: Option<Checkpointing>,
    outbox: Outbox,
    /// When batches started waiting in the engine's queue.
    waiting_since: Option<Instant>,
    /// Present when a fault classifier is configured.
    diagnoser: Option<Diagnoser>,
}

impl<'a, F> Stage<'a, F>
where
    F: Forecaster,
    F::Error: Display,
{
    fn new(cfg: &IngestConfig, mut engine: Engine, forecaster: F, services: &'a Services) -> Self {
        let c = engine.config();
        let model = (c.model.clone(), c.model_version.clone(), c.threshold());
        let checkpoints = cfg.checkpoints().then(|| {
            engine.enable_checkpoints();
            Checkpointing::new(cfg.checkpoint_interval, Instant::now())
        });
        Self {
            engine,
            forecaster,
            services,
            model,
            checkpoints,
            outbox: Outbox::default(),
            waiting_since: None,
            diagnoser: None,
        }
    }

    fn batches_waiting(&self) -> bool {
        self.waiting_since.is_some()
    }

    fn checkpoint_due_in(&self, now: Instant) -> Option<Duration> {
        self.checkpoints.as_ref()?.due_in(now)
    }

    /// How long to wait for the next input ([`wait_for_input`]).
    fn wait(&self, now: Instant) -> Option<Duration> {
        wait_for_input(self.waiting_since, self.checkpoint_due_in(now), now)
    }

    /// Hot reload (`crate::run_reloadable`): swaps in a waiting model, only
    /// between chunks with nothing held and no batch waiting. The replaced
    /// engine's open alerts are resolved and go out like any change.
    fn swap_if_ready(&mut self, swaps: &std::sync::mpsc::Receiver<ModelSwap<F>>) {
        if !self.outbox.is_empty() || self.batches_waiting() {
            return;
        }
        let Ok(swap) = swaps.try_recv() else { return };
        self.model = swap.describe();
        let closed = self.engine.close_open_alerts();
        if !closed.is_empty() {
            tracing::info!(
                count = closed.len(),
                "resolving the replaced model's open alerts"
            );
        }
        let mut changes: Vec<AlertChange> = closed.into_iter().map(AlertChange::Resolved).collect();
        if let Some(d) = &mut self.diagnoser {
            d.finish(&mut changes);
        }
        self.engine = swap.engine;
        self.forecaster = swap.forecaster;
        self.diagnoser = swap.classifier.map(Diagnoser::new);
        if self.checkpoints.is_some() {
            self.engine.enable_checkpoints();
        }
        self.services.board.clear();
        self.outbox.hold(Processed {
            changes,
            ..Processed::default()
        });
    }

    /// Applies one input. A timeout or the end of the input runs every
    /// waiting batch.
    fn dispatch(&mut self, next: Next, spares: &SpareSender) -> Result<(), IngestError> {
        match next {
            Next::Input(Input::Chunk(mut chunk)) => {
                let r = self.process(&mut chunk);
                // Back to the consume thread for reuse (dropped here when
                // enough are waiting there already).
                let _ = spares.try_send(chunk);
                r
            }
            Next::Input(Input::Assigned { states, seconds }) => self.assigned(states, seconds),
            Next::Input(Input::Revoked {
                partitions,
                done,
                deadline,
            }) => self.revoked(&partitions, done, deadline),
            Next::Timeout | Next::Closed => self.forecast(true),
        }
    }

    /// Feeds a chunk to the engine. A forecaster call runs whenever batches
    /// of `max_batch` devices are queued; what is left waits for the next
    /// chunk, at most [`BATCH_DEADLINE`] from when the queue stopped being
    /// empty.
    fn process(&mut self, chunk: &mut Chunk) -> Result<(), IngestError> {
        let mut out = Processed {
            rejects: std::mem::take(&mut chunk.rejects),
            offsets: std::mem::take(&mut chunk.offsets),
            ..Processed::default()
        };
        if let Some(cp) = &mut self.checkpoints {
            cp.applied(&out.offsets);
        }
        for (reading, &(partition, offset)) in chunk.readings.iter().zip(&chunk.origins) {
            // With a classifier, a device's batch is scored before the one
            // after next completes, so the window a diagnosis reads is at
            // most one batch past the batch it explains, even in a
            // backlog. It adds no forecaster call: a device's queued
            // batches take one call each anyway.
            let mut diagnose_now = false;
            match self.engine.push_ref(reading, partition) {
                Ok(Pushed::Duplicate) => out.duplicates += 1,
                Ok(pushed) => {
                    out.accepted += 1;
                    out.max_ts = out.max_ts.max(Some(reading.ts_ms));
                    diagnose_now = pushed == Pushed::BatchQueued
                        && self.diagnoser.is_some()
                        && self.engine.queued_batches(reading.device) > 1;
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
            if self.engine.batch_full() || diagnose_now {
                self.outbox.hold(out);
                self.forecast(diagnose_now)?;
                out = Processed::default();
            }
        }
        self.outbox.hold(out);
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
    /// holds the outcome.
    fn forecast(&mut self, all: bool) -> Result<(), IngestError> {
        let mut timed = Timed {
            inner: &mut self.forecaster,
            metrics: &self.services.metrics,
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
        let held = self.outbox.held();
        let (mut changes, mut open_devices) = (Vec::new(), Vec::new());
        for ev in events {
            changes.push(match ev {
                EngineEvent::Scored {
                    device, alert_open, ..
                } => {
                    held.batches_scored += 1;
                    if alert_open && self.diagnoser.is_some() {
                        open_devices.push(device);
                    }
                    continue;
                }
                EngineEvent::Opened(a) => AlertChange::Opened(a),
                EngineEvent::Resolved(a) => AlertChange::Resolved(a),
            });
        }
        if let Some(d) = &mut self.diagnoser {
            d.attach(&self.engine, &mut changes, &open_devices);
        }
        for change in changes {
            // A diagnosis change is not a detection: its alert's age is no delay.
            if !matches!(change, AlertChange::Diagnosed(_)) {
                AlertDelay::since("scored", change.reading_ts()).emit(&self.services.metrics);
            }
            held.changes.push(change);
        }
        Ok(())
    }

    /// Takes a timer checkpoint when [`outbox::checkpoint_now`] says so
    /// (`closing`: the input has ended).
    fn checkpoint_if_due(&mut self, closing: bool) {
        let now = Instant::now();
        let due = self.checkpoint_due_in(now) == Some(Duration::ZERO);
        if self.checkpoints.is_none()
            || !outbox::checkpoint_now(
                due,
                closing,
                self.batches_waiting(),
                self.outbox.has_checkpoint(),
            )
        {
            return;
        }
        let records = match self.engine.checkpoint() {
            Ok(r) => r,
            Err(e) => {
                tracing::error!(error = %e, "checkpoint skipped");
                return;
            }
        };
        let Some(cp) = &mut self.checkpoints else {
            return;
        };
        let markers = cp.take(Instant::now());
        if records.is_empty() && markers.is_empty() {
            return;
        }
        self.outbox.held().checkpoint = Some(Checkpoint {
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
                cp.assigned(s.partition, at);
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
        .emit(&self.services.metrics);
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
        if let Some(d) = &mut self.diagnoser {
            d.keep_open_of(&self.engine);
        }
        let markers = match &mut self.checkpoints {
            Some(cp) => cp.revoked(partitions),
            None => Vec::new(),
        };
        let cp = Checkpoint {
            records,
            markers,
            handover: Some(deadline),
        };
        self.outbox.hand_over(cp, done);
        Ok(())
    }

    /// What goes to the persist stage now ([`Outbox::release`]). With
    /// everything released, the device board first shows the devices the
    /// held chunks touched and drops the evicted ones.
    fn release(&mut self) -> Option<Processed> {
        match self.outbox.release(self.batches_waiting())? {
            Release::Changes(p) => Some(p),
            Release::All(p) => {
                self.show_devices();
                Some(p)
            }
        }
    }

    /// Each device the chunks touched, once, however many readings it
    /// took; evicted devices leave the board.
    fn show_devices(&mut self) {
        let touched = self.engine.drain_touched();
        let evicted = self.engine.drain_evicted();
        DevicesEvicted {
            count: evicted.len(),
        }
        .emit(&self.services.metrics);
        let board = &self.services.board;
        board.remove(evicted);
        let (model, version, threshold) = &self.model;
        board.update(
            touched
                .into_iter()
                .map(|v| DeviceSnapshot::from_view(v, model, version, *threshold)),
        );
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

    /// Devices d and e every tick (d's third batch, ticks 5-6, is off by 2
    /// on channel b: it opens an alert); f joins at tick 5, so with two
    /// devices per call its first batch is due alone after the call that
    /// scores d's. All on `partition`, offsets from 0; the ids of
    /// partitions other than 0 end in the partition's number.
    fn spiking_chunk(partition: i32) -> Chunk {
        let mut chunk = Chunk::default();
        let mut offset = 0;
        let suffix = if partition == 0 {
            String::new()
        } else {
            partition.to_string()
        };
        for tick in 1..=6i64 {
            let spike = if tick >= 5 { 2.0 } else { 0.0 };
            for (device, b) in [("d", spike), ("e", 0.0), ("f", 0.0)] {
                if device == "f" && tick < 5 {
                    continue;
                }
                chunk.readings.push(ReadingRef {
                    device: &format!("{device}{suffix}"),
                    ts_ms: 10 * tick,
                    values: &[0.0, b],
                });
                chunk.origins.push((partition, offset));
                offset += 1;
            }
        }
        chunk.offsets = vec![(partition, offset)];
        chunk.consumed = offset as usize;
        chunk
    }

    fn services() -> Services {
        let metrics = Arc::new(Metrics::new());
        Services {
            store: Arc::new(AlertStore::open_in_memory().unwrap()),
            board: Arc::new(DeviceBoard::new()),
            health: Arc::new(Health::with_metrics(&metrics)),
            metrics,
            bus: AlertBus::default(),
        }
    }

    fn config(checkpoint_interval: Duration) -> IngestConfig {
        IngestConfig {
            checkpoint_interval,
            ..IngestConfig::default()
        }
    }

    /// An alert opened by a call goes to the persist stage at once, while
    /// the chunk's offsets stay held behind a batch still waiting for
    /// company; the offsets follow once that batch has run.
    #[test]
    fn alert_changes_do_not_wait_for_held_offsets() {
        let chunk = spiking_chunk(0);
        let offset = chunk.offsets[0].1;
        let services = services();
        let cfg = config(Duration::ZERO);
        let (in_tx, in_rx) = tokio::sync::mpsc::channel(4);
        let (out_tx, mut out_rx) = tokio::sync::mpsc::channel(4);
        let (spare_tx, _spares) = crate::messages::spares();
        let (_swap_tx, swaps) = std::sync::mpsc::channel::<ModelSwap<Persistence>>();
        let shutdown = CancellationToken::new();
        let stage = std::thread::spawn(move || {
            run(
                &cfg,
                // Two devices per call: a third device's batch waits for company.
                engine(2),
                Persistence { calls: vec![] },
                None,
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

    #[test]
    fn the_wait_for_input_ends_at_the_batch_deadline_or_the_checkpoint() {
        let now = Instant::now();
        let ms = Duration::from_millis;
        // (batches waiting since ms ago, checkpoint due in ms) -> wait in ms
        let cases = [
            ((None, None), None),
            ((None, Some(300)), Some(300)),
            ((None, Some(0)), Some(0)),
            ((Some(2), None), Some(3)),
            ((Some(2), Some(0)), Some(3)),
            ((Some(9), Some(300)), Some(0)),
        ];
        for ((since, due), want) in cases {
            let since = since.map(|ago| now - ms(ago));
            assert_eq!(
                wait_for_input(since, due.map(ms), now),
                want.map(ms),
                "{since:?} {due:?}"
            );
        }
    }

    /// A reloaded model is taken only with nothing held; the replaced
    /// engine's open alert is resolved and goes out like any change.
    #[test]
    fn a_swap_waits_until_nothing_is_held() {
        let services = services();
        let mut stage = Stage::new(
            &config(Duration::ZERO),
            engine(2),
            Persistence { calls: vec![] },
            &services,
        );
        let (swap_tx, swaps) = std::sync::mpsc::channel();
        let (spare_tx, _spares) = crate::messages::spares();
        stage
            .dispatch(Next::Input(Input::Chunk(spiking_chunk(0))), &spare_tx)
            .unwrap();
        swap_tx
            .send(ModelSwap {
                engine: engine(4),
                forecaster: Persistence { calls: vec![] },
                classifier: None,
            })
            .unwrap();
        stage.swap_if_ready(&swaps);
        assert_eq!(stage.engine.config().max_batch, 2, "swapped while held");
        // f's batch waits; the early release carries d's alert.
        let Some(early) = stage.release() else {
            panic!("d's alert goes ahead")
        };
        assert_eq!(early.changes.len(), 1);
        stage.swap_if_ready(&swaps);
        assert_eq!(
            stage.engine.config().max_batch,
            2,
            "swapped with a batch waiting"
        );
        stage.dispatch(Next::Timeout, &spare_tx).unwrap();
        let held = stage.release().expect("the chunk's outcome");
        assert_eq!(held.offsets, [(0, 14)]);
        assert_eq!(services.board.len(), 3);

        stage.swap_if_ready(&swaps);
        assert_eq!(stage.engine.config().max_batch, 4, "not swapped");
        assert!(services.board.is_empty(), "the board starts over");
        let out = stage.release().expect("the replaced engine's alerts");
        match out.changes.as_slice() {
            [AlertChange::Resolved(a)] => assert_eq!(a.device, "d"),
            other => panic!("expected d's alert resolved, got {other:?}"),
        }
    }

    /// Reads a window by the mean of channel b: about 0 "normal", up to 3
    /// "b raised", beyond "b high". The stage's bookkeeping is under test,
    /// not a network (forewarn-model tests the real classifier; the TEP
    /// whole-system test serves it).
    struct ByLevel {
        classes: Vec<forewarn_core::ClassName>,
        channels: Vec<String>,
    }

    impl forewarn_core::FaultClassifier for ByLevel {
        fn name(&self) -> &str {
            "levels"
        }
        fn version(&self) -> &str {
            "levels-1"
        }
        fn classes(&self) -> &[forewarn_core::ClassName] {
            &self.classes
        }
        fn channels(&self) -> &[String] {
            &self.channels
        }
        fn window(&self) -> usize {
            2
        }
        fn probabilities(&mut self, windows: &[f32], count: usize) -> Result<Vec<f32>, String> {
            Ok((windows.chunks_exact(4).take(count))
                .flat_map(|w| match (w[1] + w[3]) / 2.0 {
                    b if b < 0.5 => [0.8, 0.1, 0.1],
                    b if b <= 3.0 => [0.2, 0.7, 0.1],
                    _ => [0.1, 0.1, 0.8],
                })
                .collect())
        }
    }

    fn by_level() -> Classifier {
        let classes = ["normal", "b raised", "b high"]
            .iter()
            .enumerate()
            .map(|(i, n)| forewarn_core::ClassName {
                class: i as u8,
                name: (*n).into(),
            })
            .collect();
        Box::new(ByLevel {
            classes,
            channels: vec!["a".into(), "b".into()],
        })
    }

    /// Device d's readings at ticks `from..`, channel b from `b`.
    fn ticks(from: i64, b: &[f32]) -> Chunk {
        let mut chunk = Chunk::default();
        for (i, v) in b.iter().enumerate() {
            chunk.readings.push(ReadingRef {
                device: "d",
                ts_ms: 10 * (from + i as i64),
                values: &[0.0, *v],
            });
            chunk.origins.push((0, from + i as i64));
        }
        chunk
    }

    /// The alert's diagnosis rides on its opening, goes out again only
    /// when its ranking changes while it stays open, and its final value
    /// (the mean of every window read) rides on the resolution.
    #[test]
    fn open_alerts_carry_the_classifiers_running_diagnosis() {
        let services = services();
        let mut stage = Stage::new(
            &config(Duration::ZERO),
            engine(1),
            Persistence { calls: vec![] },
            &services,
        );
        stage.diagnoser = Some(Diagnoser::new(by_level()));
        let (spare_tx, _spares) = crate::messages::spares();
        // Batches of 2: (1,2) (3,4) normal; (5,6) opens (b = 2), (7,8) and
        // (9,10) keep it open (b 4..6, then back to 0 against a forecast
        // of 6); (11,12) resolves it.
        let batches: [&[f32]; 6] = [
            &[0.0, 0.0],
            &[0.0, 0.0],
            &[2.0, 2.0],
            &[4.0, 6.0],
            &[0.0, 0.0],
            &[0.0, 0.0],
        ];
        let mut got = Vec::new();
        for (k, b) in batches.iter().enumerate() {
            let next = Next::Input(Input::Chunk(ticks(1 + 2 * k as i64, b)));
            stage.dispatch(next, &spare_tx).unwrap();
            stage.dispatch(Next::Timeout, &spare_tx).unwrap();
            while let Some(p) = stage.release() {
                got.extend(p.changes);
            }
        }
        let seen: Vec<(&str, Vec<u8>, u32)> = got
            .iter()
            .map(|c| {
                let (kind, a) = match c {
                    AlertChange::Opened(a) => ("opened", a),
                    AlertChange::Diagnosed(a) => ("diagnosed", a),
                    AlertChange::Resolved(a) => ("resolved", a),
                };
                let d = a.diagnosis.as_ref().expect("a diagnosis");
                (kind, d.ranking(), d.windows)
            })
            .collect();
        assert_eq!(
            seen,
            [
                ("opened", vec![1, 0, 2], 1),
                // Mean of [.2 .7 .1] and [.1 .1 .8]: "b high" leads.
                ("diagnosed", vec![2, 1, 0], 2),
                // Then a normal window: [.367 .3 .333].
                ("diagnosed", vec![0, 2, 1], 3),
                ("resolved", vec![0, 2, 1], 3),
            ]
        );
        let AlertChange::Resolved(a) = &got[3] else {
            unreachable!()
        };
        let d = a.diagnosis.as_ref().unwrap();
        assert_eq!(
            (d.classifier.as_str(), d.top[0].name.as_str()),
            ("levels", "normal")
        );
        assert!((d.top[0].probability - 1.1 / 3.0).abs() < 1e-6, "{d:?}");
        assert!(
            stage.diagnoser.as_ref().unwrap().is_idle(),
            "the resolved alert is forgotten"
        );
    }

    /// A handover's checkpoint goes out alone: a timer checkpoint (here the
    /// final one, at the end of the input) waits until it has left, then
    /// marks the partitions still held.
    #[test]
    fn a_handover_checkpoint_goes_out_alone() {
        let services = services();
        let mut stage = Stage::new(
            &config(Duration::from_secs(3600)),
            engine(8),
            Persistence { calls: vec![] },
            &services,
        );
        let (spare_tx, _spares) = crate::messages::spares();
        for partition in [0, 1] {
            stage
                .dispatch(
                    Next::Input(Input::Chunk(spiking_chunk(partition))),
                    &spare_tx,
                )
                .unwrap();
        }
        stage.dispatch(Next::Timeout, &spare_tx).unwrap();
        let (done, finished) = std::sync::mpsc::channel();
        let deadline = Instant::now() + Duration::from_secs(30);
        let revoked = Input::Revoked {
            partitions: vec![0],
            done,
            deadline,
        };
        stage.dispatch(Next::Input(revoked), &spare_tx).unwrap();
        stage.checkpoint_if_due(true);

        let handover = stage.release().expect("the handover");
        let cp = handover.checkpoint.expect("its checkpoint");
        assert_eq!(cp.handover, Some(deadline));
        assert_eq!(cp.markers, [(0, 14)]);
        assert!(!cp.records.is_empty());
        assert!(cp.records.iter().all(|r| r.origin == 0));
        handover.done.expect("its signal").send(()).unwrap();
        assert!(finished.try_recv().is_ok());

        stage.checkpoint_if_due(true);
        let last = stage.release().expect("the final checkpoint");
        let cp = last.checkpoint.expect("a timer checkpoint");
        assert_eq!((cp.handover, cp.markers), (None, vec![(1, 14)]));
        assert!(cp.records.iter().all(|r| r.origin == 1));
    }
}
