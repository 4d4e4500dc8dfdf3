//! The streaming detector: per-device windows and LSTM state, micro-batched
//! forecasting, scoring and alert transitions.
//!
//! The engine owns no model. [`Engine::flush`] hands a [`StepBatch`] to a
//! [`Forecaster`] (libtorch in production, anything in tests), so the same
//! code runs in `serve`, in calibration and in `evaluate`.
//!
//! Per device, readings are cut into consecutive batches of `horizon` rows.
//! When a batch is complete it is queued; a flush runs all queued batches of
//! many devices through one forecaster call. For each batch the engine first
//! scores it against the forecast made at the end of the previous batch, then
//! the forecaster advances the device's LSTM state through the batch and
//! forecasts the next one. Work per reading is constant: the state carries
//! the past, the window is never re-run.

use std::collections::{HashMap, VecDeque};

use serde::{Deserialize, Serialize};

use crate::alert::{Alert, AlertState, ChannelShare, Severity, alert_id};
use crate::detector::{BatchScore, DetectorConfig, DetectorState, Transition, score_batch_with};
use crate::flatline::Flatline;
use crate::reading::{Reading, ReadingRef, RejectReason};
use crate::scaler::Scaler;
use crate::seasonal_residual::BatchRows;
use crate::threshold::ThresholdState;
use crate::window::Window;

mod checkpoint;
mod config;
mod ensemble;
mod forecaster;
mod inspect;
pub use checkpoint::{CHECKPOINT_FORMAT, CheckpointError, RestoreError, StateRecord};
pub use config::EngineConfig;
pub use ensemble::{Ensemble, EnsembleError};
pub use forecaster::{Forecaster, StepBatch};

/// How many contributing channels an alert names.
pub const MAX_CONTRIBUTORS: usize = 5;

/// What happened while flushing.
#[derive(Debug, Clone, PartialEq)]
pub enum EngineEvent {
    /// A batch was scored against its forecast.
    Scored {
        device: String,
        start_ts: i64,
        end_ts: i64,
        /// The score the strategy thresholds (see [`BatchScore::score`]).
        score: f64,
        /// The threshold it was compared with.
        threshold: f64,
        /// Whether the device's alert is open after this batch.
        alert_open: bool,
    },
    Opened(Alert),
    Resolved(Alert),
}

/// Outcome of pushing one valid reading.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pushed {
    /// Buffered in the device's current batch.
    Buffered,
    /// Completed a batch, which is now queued for the next flush.
    BatchQueued,
    /// Same timestamp as the device's last reading: dropped (at-least-once
    /// delivery and retrying gateways resend readings).
    Duplicate,
}

/// Read-only view of one device for the API.
#[derive(Debug, Clone, PartialEq)]
pub struct DeviceView {
    pub device: String,
    pub readings: u64,
    pub window_fill: usize,
    pub window_capacity: usize,
    pub last_ts: Option<i64>,
    /// The last scored batch's score and the threshold it was compared with.
    pub last_score: Option<f64>,
    pub last_threshold: Option<f64>,
    /// The last scored batch's error shares, largest first: the top
    /// [`MAX_CONTRIBUTORS`], or with a grid every channel with error (the
    /// console's heat map).
    pub last_shares: Vec<ChannelShare>,
    pub open_alert: Option<String>,
    pub warmed_up: bool,
}

/// Serialized whole into checkpoints ([`checkpoint`]), except the fields
/// marked `skip`, which only have meaning inside one running engine. Adding
/// or changing a serialized field changes the checkpoint format: bump
/// [`checkpoint::FORMAT`].
#[derive(Serialize, Deserialize)]
struct Device {
    id: String,
    /// Where the device's readings come from (the Kafka partition), so its
    /// state can be checkpointed to and handed over with that partition.
    origin: i32,
    window: Window,
    /// One allocation for the per-device floats: the recurrent state
    /// (`state_len`), the forecast of the next batch's monitored channels
    /// (`horizon x monitored`) and the scaled rows of the batch being
    /// filled (`horizon x channels`).
    floats: Box<[f32]>,
    /// Floats of the batch being filled.
    pending_len: usize,
    pending_start: i64,
    readings: u64,
    last_ts: Option<i64>,
    /// Whether the forecast in `floats` is real (a batch went through).
    predicted: bool,
    /// Readings fed when the forecast was made.
    predicted_at: u64,
    detector: DetectorState,
    /// The threshold strategy's per-device state: empty for `fixed` and
    /// `gaussian`; the dynamic threshold's smoothed error and history ring
    /// (and the seasonal residual's profile and threshold state),
    /// allocated at the device's first scored batch.
    threshold_state: ThresholdState,
    last_score: Option<BatchScore>,
    /// Boxed: most devices never have an open alert.
    #[serde(with = "crate::alert::without_diagnosis")]
    open: Option<Box<Alert>>,
    /// The last round (see [`Engine::take_round`]) that took a batch of this device.
    #[serde(skip)]
    round: u64,
    /// Listed in [`Engine::touched`].
    #[serde(skip)]
    touched: bool,
    /// Batches of this device in the queue.
    #[serde(skip)]
    queued: u32,
    /// Engine-wide reading sequence number of this device's last reading
    /// (for evicting the least recently seen).
    #[serde(skip)]
    last_seen: u64,
    /// Changed since the last checkpoint; listed in `Engine::dirty`.
    #[serde(skip)]
    dirty: bool,
    /// Its state may be on the state topic (it went into a checkpoint or
    /// came from one), so dropping it needs a tombstone. A device seen and
    /// dropped between two checkpoints (a flood of one-off ids) needs none.
    #[serde(skip)]
    stored: bool,
}

impl Device {
    fn new(cfg: &EngineConfig, id: String) -> Self {
        let channels = cfg.schema.len();
        Self {
            id,
            origin: 0,
            window: Window::new(cfg.window, channels),
            floats: vec![0.0; cfg.float_len()].into_boxed_slice(),
            pending_len: 0,
            pending_start: 0,
            readings: 0,
            last_ts: None,
            predicted: false,
            predicted_at: 0,
            detector: DetectorState::default(),
            threshold_state: ThresholdState::default(),
            last_score: None,
            open: None,
            round: 0,
            touched: false,
            queued: 0,
            last_seen: 0,
            dirty: false,
            stored: false,
        }
    }
}

/// A complete batch waiting for a forecaster call. `dev` indexes
/// `Engine::devices`.
struct Job {
    dev: usize,
    inputs: Vec<f32>,
    start_ts: i64,
    end_ts: i64,
    /// A context channel changed within `context_change_rows` readings
    /// up to the batch's end (judged when the batch completes, so a
    /// backlog behind it changes nothing).
    after_context_change: bool,
}

/// Batch buffers kept for reuse beyond this many are freed.
const MAX_SPARE_BUFFERS: usize = 4096;

pub struct Engine {
    cfg: EngineConfig,
    /// Forecast columns of the channels forecast as their training
    /// constant ([`Scaler::forecast_constant`]).
    pinned: Vec<usize>,
    /// Positions of the context channels (those not monitored).
    context: Vec<usize>,
    /// Device id to index in `devices`. Devices are never removed, so
    /// indices are stable.
    index: HashMap<String, usize>,
    devices: Vec<Device>,
    queue: VecDeque<Job>,
    /// Rounds taken so far; marks which devices a round already holds.
    rounds: u64,
    /// Emptied batch buffers, reused so a completed batch allocates nothing.
    spare: Vec<Vec<f32>>,
    /// The forecaster call's buffers, reused between calls.
    scratch: StepBatch,
    /// The monitored columns of the batch being scored (with context
    /// channels), reused between batches.
    observed: Vec<f32>,
    /// Devices that took a reading since the last [`Engine::drain_touched`].
    touched: Vec<usize>,
    /// Devices with at least one queued batch: the size of the next round
    /// (capped by `max_batch`).
    queued_devices: usize,
    /// Most devices tracked at once (0 = no bound). A new device beyond it
    /// takes the slot of a least recently seen idle one.
    max_devices: usize,
    /// Readings pushed so far; stamps `Device::last_seen`.
    seq: u64,
    /// xorshift state for sampling eviction candidates.
    rng: u64,
    /// Ids evicted since the last [`Engine::drain_evicted`].
    evicted: Vec<String>,
    evicted_total: u64,
    /// Checkpoint bookkeeping; `None` until [`Engine::enable_checkpoints`].
    checkpoints: Option<Tracker>,
}

/// Devices sampled when looking for one to evict (Redis-style approximate
/// LRU: constant work per eviction however many devices are tracked).
const EVICTION_SAMPLES: usize = 16;

impl Engine {
    pub fn new(cfg: EngineConfig) -> Self {
        assert!(cfg.horizon > 0 && cfg.max_batch > 0 && cfg.schema.len() == cfg.scaler.channels());
        if let Err(why) = cfg.check_monitored() {
            panic!("engine config: {why}");
        }
        Self {
            pinned: cfg.scaler.pinned_outputs(&cfg.monitored),
            context: (0..cfg.schema.len())
                .filter(|j| cfg.monitored.binary_search(j).is_err())
                .collect(),
            cfg,
            index: HashMap::new(),
            devices: Vec::new(),
            queue: VecDeque::new(),
            rounds: 0,
            spare: Vec::new(),
            scratch: StepBatch::default(),
            observed: Vec::new(),
            touched: Vec::new(),
            queued_devices: 0,
            max_devices: 0,
            seq: 0,
            rng: 0x9E37_79B9_7F4A_7C15,
            evicted: Vec::new(),
            evicted_total: 0,
            checkpoints: None,
        }
    }

    /// Bounds the number of tracked devices (0 = unbounded). A flood of new
    /// device ids then recycles the least recently seen idle devices
    /// (approximately: the oldest of a few sampled) instead of growing.
    pub fn with_max_devices(mut self, max_devices: usize) -> Self {
        self.max_devices = max_devices;
        self
    }

    /// Ids of devices evicted since the last call (their state is gone; a
    /// later reading starts them over with warm-up).
    pub fn drain_evicted(&mut self) -> Vec<String> {
        std::mem::take(&mut self.evicted)
    }

    /// Devices evicted since the engine started.
    pub fn evicted_total(&self) -> u64 {
        self.evicted_total
    }

    /// The slot for a new device: a fresh one, or (at the bound) a recycled
    /// least recently seen device with no queued batch, preferring devices
    /// without an open alert.
    fn slot_for(&mut self, id: &str) -> usize {
        let n = self.devices.len();
        if self.max_devices == 0 || n < self.max_devices {
            self.devices.push(Device::new(&self.cfg, id.to_owned()));
            return n;
        }
        let mut best: Option<(bool, u64, usize)> = None;
        for _ in 0..EVICTION_SAMPLES {
            self.rng ^= self.rng << 13;
            self.rng ^= self.rng >> 7;
            self.rng ^= self.rng << 17;
            let i = (self.rng % n as u64) as usize;
            let d = &self.devices[i];
            if d.queued > 0 {
                continue;
            }
            let key = (d.open.is_some(), d.last_seen, i);
            if best.is_none_or(|b| (key.0, key.1) < (b.0, b.1)) {
                best = Some(key);
            }
        }
        let Some((_, _, victim)) = best else {
            // Every sampled device has a batch in flight: exceed the bound
            // briefly rather than drop state a batch depends on.
            self.devices.push(Device::new(&self.cfg, id.to_owned()));
            return n;
        };
        let old = std::mem::replace(
            &mut self.devices[victim],
            Device::new(&self.cfg, id.to_owned()),
        );
        // Keep the slot's place in `touched` and `dirty` consistent.
        self.devices[victim].touched = old.touched;
        self.devices[victim].dirty = old.dirty;
        if let Some(t) = &mut self.checkpoints
            && old.stored
        {
            t.tombstones.push((old.origin, old.id.clone()));
        }
        self.index.remove(&old.id);
        self.evicted.push(old.id);
        self.evicted_total += 1;
        victim
    }

    /// The slot of device `id`, taking one (see [`Self::slot_for`]) for a
    /// device not tracked yet. One map lookup when it is.
    fn index_of(&mut self, id: &str) -> usize {
        match self.index.get(id) {
            Some(&i) => i,
            None => {
                let i = self.slot_for(id);
                self.index.insert(id.to_owned(), i);
                i
            }
        }
    }

    pub fn config(&self) -> &EngineConfig {
        &self.cfg
    }

    pub fn device_count(&self) -> usize {
        self.devices.len()
    }

    /// Batches waiting for a flush.
    pub fn queued(&self) -> usize {
        self.queue.len()
    }

    /// Applies one valid reading to its device.
    ///
    /// The hot path: one map lookup by `&str`, the row scaled in place in
    /// the device's batch buffer, no allocation (a completed batch swaps in
    /// a recycled buffer).
    pub fn push(&mut self, reading: &Reading) -> Result<Pushed, RejectReason> {
        self.push_from(reading, 0)
    }

    /// [`Self::push`] for a reading from `origin` (its Kafka partition),
    /// which decides where the device's checkpoints go.
    pub fn push_from(&mut self, reading: &Reading, origin: i32) -> Result<Pushed, RejectReason> {
        self.push_ref(reading.view(), origin)
    }

    /// [`Self::push_from`] for a borrowed reading (one of a
    /// [`crate::reading::Readings`]): nothing is allocated for a device
    /// already tracked.
    pub fn push_ref(
        &mut self,
        reading: ReadingRef<'_>,
        origin: i32,
    ) -> Result<Pushed, RejectReason> {
        let channels = self.cfg.schema.len();
        if reading.values.len() != channels {
            return Err(RejectReason::WrongChannelCount {
                expected: channels,
                got: reading.values.len(),
            });
        }
        let idx = self.index_of(reading.device);
        let hc = self.cfg.horizon * channels;
        let pending = self.cfg.state_len + self.cfg.horizon * self.cfg.monitored.len();
        let dev = &mut self.devices[idx];
        if let Some(last) = dev.last_ts {
            if reading.ts_ms < last {
                return Err(RejectReason::OutOfOrder {
                    ts_ms: reading.ts_ms,
                    last_ms: last,
                });
            }
            if reading.ts_ms == last {
                return Ok(Pushed::Duplicate);
            }
        }
        let at = pending + dev.pending_len;
        if dev.pending_len == 0 {
            dev.pending_start = reading.ts_ms;
        }
        let row = &mut dev.floats[at..at + channels];
        row.copy_from_slice(reading.values);
        self.cfg.scaler.transform(row);
        dev.window.push(row);
        dev.readings += 1;
        dev.last_ts = Some(reading.ts_ms);
        self.seq += 1;
        dev.last_seen = self.seq;
        if !dev.touched {
            dev.touched = true;
            self.touched.push(idx);
        }
        dev.origin = origin;
        if !dev.dirty
            && let Some(t) = &mut self.checkpoints
        {
            dev.dirty = true;
            t.dirty.push(idx);
        }
        dev.pending_len += channels;
        if dev.pending_len < hc {
            return Ok(Pushed::Buffered);
        }
        let mut inputs = self.spare.pop().unwrap_or_else(|| Vec::with_capacity(hc));
        inputs.extend_from_slice(&dev.floats[pending..pending + hc]);
        dev.pending_len = 0;
        let after_context_change = self.cfg.detector.context_change_margin > 1.0
            && (dev.window).changed_within(self.cfg.detector.context_change_rows, &self.context);
        dev.queued += 1;
        if dev.queued == 1 {
            self.queued_devices += 1;
        }
        self.queue.push_back(Job {
            dev: idx,
            inputs,
            start_ts: dev.pending_start,
            end_ts: reading.ts_ms,
            after_context_change,
        });
        Ok(Pushed::BatchQueued)
    }

    /// Whether enough batches are queued to fill a forecaster call: batches
    /// of `max_batch` different devices (a call takes at most one batch per
    /// device).
    pub fn batch_full(&self) -> bool {
        self.queued_devices >= self.cfg.max_batch
    }

    /// Runs every queued batch through `forecaster`, in as few calls as
    /// per-device order allows, and returns scores and alert transitions.
    /// On a forecaster error the failing call's batches stay queued and
    /// device state is unchanged.
    pub fn flush<F: Forecaster>(
        &mut self,
        forecaster: &mut F,
    ) -> Result<Vec<EngineEvent>, F::Error> {
        let mut events = Vec::new();
        while !self.queue.is_empty() {
            self.run_round(forecaster, &mut events)?;
        }
        Ok(events)
    }

    /// Runs only full forecaster calls (`max_batch` devices each) while the
    /// queue holds enough devices for one, and leaves the rest queued to
    /// share a later call. The caller bounds how long batches wait (with
    /// [`Self::flush`]). Errors as [`Self::flush`].
    pub fn flush_full<F: Forecaster>(
        &mut self,
        forecaster: &mut F,
    ) -> Result<Vec<EngineEvent>, F::Error> {
        let mut events = Vec::new();
        while self.batch_full() {
            self.run_round(forecaster, &mut events)?;
        }
        Ok(events)
    }

    fn run_round<F: Forecaster>(
        &mut self,
        forecaster: &mut F,
        events: &mut Vec<EngineEvent>,
    ) -> Result<(), F::Error> {
        let round = self.take_round();
        let mut batch = self.gather(&round);
        if let Err(e) = forecaster.step(&mut batch) {
            self.requeue(round);
            self.scratch = batch;
            return Err(e);
        }
        Scaler::pin_forecasts(&mut batch.predictions, batch.outputs, &self.pinned);
        self.scatter(round, &batch, forecaster.reconstructs(), events);
        self.scratch = batch;
        Ok(())
    }

    /// Puts a failed round back at the front of the queue, in order.
    fn requeue(&mut self, round: Vec<Job>) {
        for job in round.into_iter().rev() {
            let dev = &mut self.devices[job.dev];
            dev.queued += 1;
            if dev.queued == 1 {
                self.queued_devices += 1;
            }
            // The device may be taken again by the next round.
            dev.round = 0;
            self.queue.push_front(job);
        }
    }

    /// Up to `max_batch` queued jobs, at most one per device (a device's
    /// second batch needs the state its first one produces).
    fn take_round(&mut self) -> Vec<Job> {
        self.rounds += 1;
        let mark = self.rounds;
        let max = self.cfg.max_batch;
        let mut round = Vec::with_capacity(self.queue.len().min(max));
        let mut rest = VecDeque::new();
        while let Some(job) = self.queue.pop_front() {
            let dev = &mut self.devices[job.dev];
            if dev.round != mark {
                dev.round = mark;
                dev.queued -= 1;
                if dev.queued == 0 {
                    self.queued_devices -= 1;
                }
                round.push(job);
                if round.len() == max {
                    break;
                }
            } else {
                rest.push_back(job);
            }
        }
        if rest.is_empty() {
            // The common case: nothing skipped, the queue keeps its order.
        } else {
            rest.append(&mut self.queue);
            self.queue = rest;
        }
        round
    }

    fn gather(&mut self, round: &[Job]) -> StepBatch {
        let c = self.cfg.schema.len();
        let m = self.cfg.monitored.len();
        let h = self.cfg.horizon;
        let s = self.cfg.state_len;
        let n = round.len();
        let mut batch = std::mem::take(&mut self.scratch);
        batch.n = n;
        batch.horizon = h;
        batch.channels = c;
        batch.outputs = m;
        batch.state_len = s;
        batch.inputs.clear();
        batch.states.clear();
        batch.predictions.clear();
        batch.predictions.resize(n * h * m, 0.0);
        for job in round {
            batch.inputs.extend_from_slice(&job.inputs);
            batch
                .states
                .extend_from_slice(&self.devices[job.dev].floats[..s]);
        }
        batch
    }

    /// Scores each batch of the round, then stores the device's new state
    /// and forecast. A forecasting model's batch is scored against the
    /// forecast of the previous call (once a device has seen `warmup`
    /// readings before that forecast); a reconstructing model's against its
    /// reconstruction in this call (once `warmup` readings preceded the
    /// batch). Readings are counted up to the end of each batch, not up to
    /// the device's newest reading: a device whose later batches already
    /// wait in the queue (a backlog) warms up exactly as one flushed after
    /// every batch.
    fn scatter(
        &mut self,
        round: Vec<Job>,
        batch: &StepBatch,
        reconstructs: bool,
        events: &mut Vec<EngineEvent>,
    ) {
        let c = self.cfg.schema.len();
        let m = self.cfg.monitored.len();
        let hm = self.cfg.horizon * m;
        let s = self.cfg.state_len;
        let gaussian = self.cfg.strategy.gaussian();
        for (i, mut job) in round.into_iter().enumerate() {
            // What is scored: the monitored columns of the batch (all of
            // it without context channels, no copy then).
            let observed: &[f32] = if m == c {
                &job.inputs
            } else {
                self.observed.clear();
                for row in job.inputs.chunks_exact(c) {
                    self.observed
                        .extend(self.cfg.monitored.iter().map(|&j| row[j]));
                }
                &self.observed
            };
            let dev = &mut self.devices[job.dev];
            // Readings up to the end of this batch: all of them but those of
            // the batch being filled and of the device's batches still queued
            // behind this one (`take_round` already counted this one out).
            let h = self.cfg.horizon as u64;
            let at_end = dev
                .readings
                .saturating_sub((dev.pending_len / c) as u64 + u64::from(dev.queued) * h);
            let warmup = self.cfg.warmup as u64;
            let scored = if reconstructs {
                (at_end.saturating_sub(h) >= warmup).then(|| {
                    let reconstruction = &batch.predictions[i * hm..(i + 1) * hm];
                    score_batch_with(observed, reconstruction, m, gaussian)
                })
            } else {
                (dev.predicted && dev.predicted_at >= warmup)
                    .then(|| score_batch_with(observed, &dev.floats[s..s + hm], m, gaussian))
            };
            dev.floats[..s].copy_from_slice(&batch.states[i * s..(i + 1) * s]);
            dev.floats[s..s + hm].copy_from_slice(&batch.predictions[i * hm..(i + 1) * hm]);
            dev.predicted = true;
            dev.predicted_at = at_end;
            if let Some(score) = scored {
                let rows = BatchRows {
                    rows: observed,
                    channels: m,
                    start_ts: job.start_ts,
                    end_ts: job.end_ts,
                };
                let probation = self.cfg.detector.in_probation(at_end);
                Self::detect(&self.cfg, &job, dev, score, &rows, events, probation);
            }
            if self.spare.len() < MAX_SPARE_BUFFERS {
                job.inputs.clear();
                self.spare.push(job.inputs);
            }
        }
    }

    /// Applies the threshold strategy to a scored batch (its monitored
    /// `rows`) and the hysteresis to the result. Alerts carry the score and
    /// threshold actually compared; severity is their ratio.
    fn detect(
        cfg: &EngineConfig,
        job: &Job,
        dev: &mut Device,
        mut score: BatchScore,
        rows: &BatchRows<'_>,
        events: &mut Vec<EngineEvent>,
        probation: bool,
    ) {
        // After a context change the forecast could not know the command:
        // the batch needs the margin over its threshold, and one batch is
        // no evidence however far off (it must last).
        let (margin, hysteresis) = if job.after_context_change {
            let alone_never_opens = DetectorConfig {
                open_ratio: 0.0,
                ..cfg.detector
            };
            (cfg.detector.context_change_margin, alone_never_opens)
        } else {
            (1.0, cfg.detector)
        };
        cfg.strategy.decide(
            &mut dev.threshold_state,
            &mut score,
            rows,
            cfg.flatline.as_ref(),
            margin,
        );
        let (value, threshold) = (score.score, score.threshold);
        // In the probation the threshold learns (above) and nothing opens.
        let transition = if probation {
            Transition::None
        } else {
            (dev.detector).observe(&hysteresis, value, threshold, job.start_ts)
        };
        match transition {
            Transition::Open { streak_start } => {
                let contributors = cfg.contributors(&score.shares, MAX_CONTRIBUTORS);
                let alert = Alert {
                    id: alert_id(&dev.id, &cfg.model_version, streak_start),
                    device: dev.id.clone(),
                    model: cfg.model.clone(),
                    model_version: cfg.model_version.clone(),
                    state: AlertState::Open,
                    severity: Severity::from_ratio(value / threshold),
                    opened_at: job.end_ts,
                    resolved_at: None,
                    score: value,
                    peak_score: value,
                    threshold,
                    cells: cfg.cells(&contributors),
                    contributors,
                    window_start: streak_start,
                    window_end: job.end_ts,
                    diagnosis: None,
                };
                dev.open = Some(Box::new(alert.clone()));
                events.push(EngineEvent::Opened(alert));
            }
            Transition::Resolve => {
                if let Some(alert) = dev.open.take() {
                    let mut alert = *alert;
                    alert.state = AlertState::Resolved;
                    alert.resolved_at = Some(job.end_ts);
                    alert.cells = cfg.cells(&alert.contributors);
                    events.push(EngineEvent::Resolved(alert));
                }
            }
            Transition::None => {
                if let Some(alert) = dev.open.as_mut()
                    && value > alert.peak_score
                {
                    alert.peak_score = value;
                    alert.severity = alert.severity.max(Severity::from_ratio(value / threshold));
                }
            }
        }
        events.push(EngineEvent::Scored {
            device: dev.id.clone(),
            start_ts: job.start_ts,
            end_ts: job.end_ts,
            score: value,
            threshold,
            alert_open: dev.detector.is_open(),
        });
        dev.last_score = Some(score);
    }

    /// Resolves every open alert, stamped with its device's last reading,
    /// and returns them. Used when this engine is replaced (a model reload):
    /// its alerts would otherwise stay open forever, since the new engine
    /// does not know them; if the condition persists, the new model opens
    /// its own alert after warm-up.
    pub fn close_open_alerts(&mut self) -> Vec<Alert> {
        let mut closed = Vec::new();
        for dev in &mut self.devices {
            if let Some(alert) = dev.open.take() {
                let mut alert = *alert;
                alert.state = AlertState::Resolved;
                alert.resolved_at = Some(dev.last_ts.unwrap_or(alert.window_end));
                alert.cells = self.cfg.cells(&alert.contributors);
                dev.detector = DetectorState::default();
                closed.push(alert);
            }
        }
        closed
    }

    /// Bytes one device holds in its steady state (window, batch buffer,
    /// recurrent state, forecast), excluding its id and map overhead.
    pub fn bytes_per_device(&self) -> usize {
        let f = std::mem::size_of::<f32>();
        let c = self.cfg.schema.len();
        std::mem::size_of::<Device>()
            + (self.cfg.window * c + self.cfg.float_len()) * f
            + self.cfg.strategy.state_bytes(self.cfg.monitored.len())
            + (self.cfg.flatline.as_ref()).map_or(0, Flatline::state_bytes)
    }
}

/// Which devices changed since the last checkpoint
/// ([`Engine::checkpoint`]).
#[derive(Default)]
struct Tracker {
    dirty: Vec<usize>,
    tombstones: Vec<(i32, String)>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::alert::GridCell;
    use crate::reading::Schema;
    use crate::scaler::Scaler;
    use crate::threshold::ThresholdStrategy;

    pub(super) use crate::testing::{Persistence, engine};

    pub(super) fn r(device: &str, ts: i64, a: f32, b: f32) -> Reading {
        Reading {
            device: device.into(),
            ts_ms: ts,
            values: vec![a, b],
        }
    }

    #[test]
    fn batches_are_cut_every_horizon_readings() {
        let mut e = engine(8);
        assert_eq!(e.push(&r("d", 1, 0.0, 0.0)), Ok(Pushed::Buffered));
        assert_eq!(e.push(&r("d", 2, 0.0, 0.0)), Ok(Pushed::BatchQueued));
        assert_eq!(e.push(&r("d", 2, 0.0, 0.0)), Ok(Pushed::Duplicate));
        assert_eq!(
            e.push(&r("d", 1, 0.0, 0.0)).unwrap_err().label(),
            "out_of_order"
        );
        assert_eq!(e.queued(), 1);
        let mut f = Persistence { calls: vec![] };
        // First batch: no forecast yet, so no score.
        assert_eq!(e.flush(&mut f).unwrap(), vec![]);
        let v = e.device("d").unwrap();
        assert_eq!(
            (v.readings, v.window_fill, v.last_score, v.warmed_up),
            (2, 2, None, true)
        );
    }

    /// Readings borrowed from a flat buffer take the same path as owned
    /// ones: same push outcomes, same events, same device state.
    #[test]
    fn borrowed_readings_push_like_owned_ones() {
        let mut rows = Vec::new();
        for i in 0..12i64 {
            let jump = if i >= 6 { 2.0 } else { 0.0 };
            rows.push(r("a", 10 * (i + 1), 0.0, jump));
            rows.push(r("bb", 10 * (i + 1), 1.0, 0.0));
        }
        rows.push(r("a", 5, 0.0, 0.0)); // out of order
        rows.push(r("bb", 120, 1.0, 0.0)); // duplicate
        rows.push(Reading {
            device: "a".into(),
            ts_ms: 500,
            values: vec![1.0],
        });
        let mut flat = crate::reading::Readings::new();
        for row in &rows {
            flat.push(row.view());
        }
        let (mut owned, mut borrowed) = (engine(8), engine(8));
        let (mut f1, mut f2) = (Persistence { calls: vec![] }, Persistence { calls: vec![] });
        for (row, view) in rows.iter().zip(flat.iter()) {
            assert_eq!(owned.push_from(row, 1), borrowed.push_ref(view, 1));
            assert_eq!(
                owned.flush(&mut f1).unwrap(),
                borrowed.flush(&mut f2).unwrap()
            );
        }
        for d in ["a", "bb"] {
            let (x, y) = (owned.device(d).unwrap(), borrowed.device(d).unwrap());
            assert_eq!(x, y);
        }
        assert_eq!(f1.calls, f2.calls);
    }

    #[test]
    fn step_change_opens_then_resolves_with_shares() {
        let mut e = engine(8);
        let mut f = Persistence { calls: vec![] };
        let mut events = vec![];
        // Normal, then channel b jumps by 2 for one batch, then stays there.
        let rows = [
            (0.0, 0.0),
            (0.0, 0.0),
            (0.0, 0.0),
            (0.0, 0.0),
            (0.0, 2.0),
            (0.0, 2.0),
            (0.0, 2.0),
            (0.0, 2.0),
        ];
        for (i, (a, b)) in rows.iter().enumerate() {
            e.push(&r("d", 10 * (i as i64 + 1), *a, *b)).unwrap();
            events.extend(e.flush(&mut f).unwrap());
        }
        let kinds: Vec<_> = events
            .iter()
            .map(|ev| match ev {
                EngineEvent::Scored {
                    score, alert_open, ..
                } => format!("score {score} open={alert_open}"),
                EngineEvent::Opened(a) => format!("open {} {:?}", a.device, a.contributors),
                EngineEvent::Resolved(a) => format!("resolve {:?}", a.resolved_at),
            })
            .collect();
        // Batch 2 (ts 30,40) matches the forecast; batch 3 (ts 50,60) is off
        // by 2 on b in both rows: mse = (4+4)/4 = 2 > 1 -> open, all of it b.
        // Batch 4 matches persistence again -> resolve.
        assert_eq!(
            kinds,
            vec![
                "score 0 open=false".to_string(),
                format!(
                    "open d {:?}",
                    vec![ChannelShare {
                        channel: "b".into(),
                        share: 1.0
                    }]
                ),
                "score 2 open=true".to_string(),
                "resolve Some(80)".to_string(),
                "score 0 open=false".to_string(),
            ]
        );
        match &events[1] {
            EngineEvent::Opened(a) => {
                assert_eq!((a.window_start, a.window_end, a.opened_at), (50, 60, 60));
                assert_eq!(a.id, alert_id("d", "v1", 50));
            }
            other => panic!("{other:?}"),
        }
    }

    /// Table: grid -> the cells of the alert [`STEP`] opens (all of the
    /// error on b) and resolves, and of the one `close_open_alerts` closes.
    #[test]
    fn alerts_name_the_cells_of_their_contributors() {
        use crate::grid::{GridLayout, GridSlot};
        let names: Vec<String> = vec!["a".into(), "b".into()];
        let cell = |row, col| GridCell {
            row,
            col,
            channel: "b".into(),
            share: 1.0,
        };
        let slot = |c: &str, row, col| GridSlot {
            channel: c.into(),
            row,
            col,
        };
        let cases = vec![
            (None, vec![]),
            (GridLayout::row_major(1, 2, &names).ok(), vec![cell(0, 1)]),
            (GridLayout::row_major(2, 1, &names).ok(), vec![cell(1, 0)]),
            (
                GridLayout::new(3, 3, vec![slot("a", 0, 0), slot("b", 2, 1)]).ok(),
                vec![cell(2, 1)],
            ),
        ];
        for (grid, want) in cases {
            let mut e = engine(8);
            e.cfg.grid = grid.clone();
            let mut f = Persistence { calls: vec![] };
            let mut cells = vec![];
            for (i, (a, b)) in STEP.iter().enumerate() {
                e.push(&r("d", 10 * (i as i64 + 1), *a, *b)).unwrap();
                for ev in e.flush(&mut f).unwrap() {
                    match ev {
                        EngineEvent::Opened(a) => cells.push(("open", a.cells)),
                        EngineEvent::Resolved(a) => cells.push(("resolve", a.cells)),
                        EngineEvent::Scored { .. } => {}
                    }
                }
            }
            assert_eq!(
                cells,
                vec![("open", want.clone()), ("resolve", want.clone())],
                "{grid:?}"
            );
            // An alert closed at a model swap names its cells too.
            for (i, b) in [5.0, 5.0].iter().enumerate() {
                e.push(&r("d", 100 + i as i64, 0.0, *b)).unwrap();
                e.flush(&mut f).unwrap();
            }
            let closed = e.close_open_alerts();
            assert_eq!(closed.len(), 1, "{grid:?}");
            assert_eq!(closed[0].cells, want, "{grid:?}");
        }
    }

    /// Table: grid or not -> how many channels the device view's shares
    /// name after a batch with error on all 7 channels.
    #[test]
    fn with_a_grid_the_view_carries_every_share() {
        let names: Vec<String> = (0..7).map(|i| format!("c{i}")).collect();
        for (grid, want) in [(false, MAX_CONTRIBUTORS), (true, 7)] {
            let mut cfg = engine(8).config().clone();
            cfg.schema = Schema::new(names.clone());
            cfg.monitored = EngineConfig::all_monitored(7);
            cfg.scaler = Scaler {
                center: vec![0.0; 7],
                scale: vec![1.0; 7],
                constant: vec![false; 7],
                forecast_constant: Vec::new(),
            };
            cfg.grid = grid.then(|| crate::grid::GridLayout::row_major(3, 3, &names).unwrap());
            let mut e = Engine::new(cfg);
            let mut f = Persistence { calls: vec![] };
            for ts in 1..=6i64 {
                let v: Vec<f32> = (0..7)
                    .map(|i| if ts > 4 { i as f32 + 1.0 } else { 0.0 })
                    .collect();
                e.push(&Reading {
                    device: "d".into(),
                    ts_ms: ts,
                    values: v,
                })
                .unwrap();
                e.flush(&mut f).unwrap();
            }
            let shares = e.device("d").unwrap().last_shares;
            assert_eq!(shares.len(), want, "grid {grid}: {shares:?}");
            assert_eq!(shares[0].channel, "c6", "largest first");
        }
    }

    /// Scored events as (end_ts, score, threshold, alert_open) and the
    /// opened alerts as (window_start, score, threshold, severity).
    type Trace = (Vec<(i64, f64, f64, bool)>, Vec<(i64, f64, f64, Severity)>);

    fn trace(
        e: &mut Engine,
        f: &mut impl Forecaster<Error = String>,
        rows: &[(f32, f32)],
    ) -> Trace {
        let (mut scored, mut opened) = (vec![], vec![]);
        for (i, (a, b)) in rows.iter().enumerate() {
            e.push(&r("d", 10 * (i as i64 + 1), *a, *b)).unwrap();
            for ev in e.flush(f).unwrap() {
                match ev {
                    EngineEvent::Scored {
                        end_ts,
                        score,
                        threshold,
                        alert_open,
                        ..
                    } => scored.push((end_ts, score, threshold, alert_open)),
                    EngineEvent::Opened(a) => {
                        opened.push((a.window_start, a.score, a.threshold, a.severity))
                    }
                    EngineEvent::Resolved(_) => {}
                }
            }
        }
        (scored, opened)
    }

    /// Normal, then channel b off by 2 from persistence for one batch
    /// (ts 50, 60), then persistence again.
    const STEP: [(f32, f32); 8] = [
        (0.0, 0.0),
        (0.0, 0.0),
        (0.0, 0.0),
        (0.0, 0.0),
        (0.0, 2.0),
        (0.0, 2.0),
        (0.0, 2.0),
        (0.0, 2.0),
    ];

    /// Table: strategy -> the scored trace of [`STEP`]. MSEs are 0, 2, 0.
    #[test]
    fn strategies_score_and_alert_with_their_own_threshold() {
        use crate::dynamic_threshold::{DynamicState, DynamicThresholdConfig};
        use crate::gaussian::GaussianErrorModel;
        let dyn_cfg = DynamicThresholdConfig {
            smoothing: 0.5,
            ..Default::default()
        };
        // The dynamic thresholds, computed by the reference state machine on
        // the smoothed MSEs 0, 0.5 x 2 + 0.5 x 0 = 1, 0.5 x 0 + 0.5 x 1 = 0.5.
        let mut reference = DynamicState::seeded(&[0.0; 10]);
        let dyn_want: Vec<(f64, f64)> = [0.0, 2.0, 0.0]
            .iter()
            .map(|e| reference.observe(&dyn_cfg, 0.1, *e))
            .collect();
        let cases: Vec<(ThresholdStrategy, Trace)> = vec![
            (
                ThresholdStrategy::Fixed { threshold: 1.0 },
                (
                    vec![
                        (40, 0.0, 1.0, false),
                        (60, 2.0, 1.0, true),
                        (80, 0.0, 1.0, false),
                    ],
                    vec![(50, 2.0, 1.0, Severity::from_ratio(2.0))],
                ),
            ),
            // Var 4 on b: the batch's terms are 2 x 2^2 / 4 = 2 over 4
            // values: 0.5 > 0.25, ratio 2.
            (
                ThresholdStrategy::Gaussian {
                    model: GaussianErrorModel {
                        mean: vec![0.0, 0.0],
                        var: vec![1.0, 4.0],
                        samples: 10,
                    },
                    threshold: 0.25,
                },
                (
                    vec![
                        (40, 0.0, 0.25, false),
                        (60, 0.5, 0.25, true),
                        (80, 0.0, 0.25, false),
                    ],
                    vec![(50, 0.5, 0.25, Severity::from_ratio(2.0))],
                ),
            ),
            // History of ten zeros: the smoothed 1 stands out (eps = mu + 2
            // sigma of the history with it, about 0.64), 0.5 then does not.
            (
                ThresholdStrategy::Dynamic {
                    config: dyn_cfg,
                    seed: vec![0.0; 10],
                    floor: 0.1,
                    gaussian: None,
                    residual: None,
                },
                (
                    vec![
                        (40, dyn_want[0].0, dyn_want[0].1, false),
                        (60, dyn_want[1].0, dyn_want[1].1, true),
                        (80, dyn_want[2].0, dyn_want[2].1, false),
                    ],
                    vec![(
                        50,
                        1.0,
                        dyn_want[1].1,
                        Severity::from_ratio(1.0 / dyn_want[1].1),
                    )],
                ),
            ),
        ];
        assert!((dyn_want[1].1 - 0.636).abs() < 1e-3, "{dyn_want:?}");
        for (strategy, want) in cases {
            let kind = strategy.kind();
            let mut e = engine(8);
            e.cfg.strategy = strategy;
            let got = trace(&mut e, &mut Persistence { calls: vec![] }, &STEP);
            assert_eq!(got, want, "{kind}");
            let v = e.device("d").unwrap();
            assert_eq!(
                (v.last_score, v.last_threshold),
                (Some(want.0[2].1), Some(want.0[2].2)),
                "{kind}"
            );
        }
    }

    /// Outputs every batch shifted by +1 on channel a: as a reconstruction
    /// the error is 1 on a in every row (MSE 0.5 with two channels).
    struct Shifted;

    impl Forecaster for Shifted {
        type Error = String;
        fn state_len(&self) -> usize {
            1
        }
        fn step(&mut self, b: &mut StepBatch) -> Result<(), String> {
            b.predictions.copy_from_slice(&b.inputs);
            b.predictions
                .iter_mut()
                .step_by(b.channels)
                .for_each(|v| *v += 1.0);
            Ok(())
        }
        fn reconstructs(&self) -> bool {
            true
        }
    }

    #[test]
    fn reconstructing_models_are_scored_against_their_output_for_the_batch() {
        let rows = [(0.0, 0.0), (5.0, 1.0), (2.0, 2.0), (7.0, 3.0)];
        // Table: warm-up -> scored batch ends. Readings before the batch
        // must reach the warm-up; 0 scores the very first batch.
        for (warmup, ends) in [(0, vec![20, 40]), (2, vec![40]), (4, vec![])] {
            let mut e = engine(8);
            e.cfg.warmup = warmup;
            let (scored, _) = trace(&mut e, &mut Shifted, &rows);
            let want: Vec<_> = ends.iter().map(|t| (*t, 0.5, 1.0, false)).collect();
            assert_eq!(scored, want, "warmup {warmup}");
        }
    }

    /// Forecasts the monitored channels of the next batch as their values
    /// in the last input row (persistence over `monitored` only).
    struct MonitoredPersistence(Vec<usize>);

    impl Forecaster for MonitoredPersistence {
        type Error = String;
        fn state_len(&self) -> usize {
            1
        }
        fn step(&mut self, b: &mut StepBatch) -> Result<(), String> {
            assert_eq!(b.outputs, self.0.len());
            let (hc, hm) = (b.horizon * b.channels, b.horizon * b.outputs);
            for i in 0..b.n {
                let last = &b.inputs[(i + 1) * hc - b.channels..(i + 1) * hc];
                for r in 0..b.horizon {
                    for (k, &j) in self.0.iter().enumerate() {
                        b.predictions[i * hm + r * b.outputs + k] = last[j];
                    }
                }
            }
            Ok(())
        }
    }

    /// The test engine's configuration over `a`, the context channel `cmd`
    /// and `b` (identity scaling), `a` and `b` monitored.
    fn context_config() -> EngineConfig {
        let mut cfg = crate::testing::engine(8).config().clone();
        cfg.schema = Schema::new(vec!["a".into(), "cmd".into(), "b".into()]);
        cfg.monitored = vec![0, 2];
        cfg.scaler = Scaler {
            center: vec![0.0; 3],
            scale: vec![1.0; 3],
            constant: vec![false; 3],
            forecast_constant: Vec::new(),
        };
        cfg
    }

    /// Table: a context channel (`cmd`, between the monitored `a` and `b`)
    /// jumps wildly, alone or with a step on `b`. Scores, shares and
    /// contributors see the monitored channels only: the jump alone scores
    /// 0 and opens nothing; with b's step the alert names b alone.
    #[test]
    fn context_channels_are_never_scored_nor_named() {
        let rows_of = |cmd: f32, b: f32| {
            let mut rows = vec![[0.0f32, 0.0, 0.0]; 4];
            rows.extend(vec![[0.0, cmd, b]; 4]);
            rows
        };
        // (cmd jump, b step) -> (scores, contributors of the opened alert).
        type Want = (Vec<f64>, Option<Vec<(&'static str, f64)>>);
        let cases: Vec<((f32, f32), Want)> = vec![
            ((1e6, 0.0), (vec![0.0, 0.0, 0.0], None)),
            ((-3e4, 0.0), (vec![0.0, 0.0, 0.0], None)),
            // b off by 2 in both rows of one batch, over 2 monitored
            // channels: MSE (4 + 4) / 4 = 2.
            ((1e6, 2.0), (vec![0.0, 2.0, 0.0], Some(vec![("b", 1.0)]))),
        ];
        for ((cmd, b), (want_scores, want_alert)) in cases {
            let mut e = Engine::new(context_config());
            let mut f = MonitoredPersistence(vec![0, 2]);
            let (mut scores, mut alert) = (vec![], None);
            for (i, row) in rows_of(cmd, b).iter().enumerate() {
                let reading = Reading {
                    device: "d".into(),
                    ts_ms: 10 * (i as i64 + 1),
                    values: row.to_vec(),
                };
                e.push(&reading).unwrap();
                for ev in e.flush(&mut f).unwrap() {
                    match ev {
                        EngineEvent::Scored { score, .. } => scores.push(score),
                        EngineEvent::Opened(a) => {
                            alert = Some(
                                a.contributors
                                    .iter()
                                    .map(|c| {
                                        (if c.channel == "b" { "b" } else { "other" }, c.share)
                                    })
                                    .collect::<Vec<_>>(),
                            )
                        }
                        EngineEvent::Resolved(_) => {}
                    }
                }
                let v = e.device("d").unwrap();
                assert!(
                    v.last_shares.iter().all(|s| s.channel != "cmd"),
                    "{:?}",
                    v.last_shares
                );
                assert!(v.last_shares.len() <= 2);
            }
            assert_eq!(scores, want_scores, "cmd {cmd}, b {b}");
            assert_eq!(alert, want_alert, "cmd {cmd}, b {b}");
        }
    }

    /// Feeds an engine on `cfg` 12 readings: the context channel `cmd`
    /// steps to 1 at reading 5 (when `steps`), the monitored `b` shifts by
    /// `d` for good at `shift_at`, `a` stays 0; persistence forecasts.
    /// Returns when alerts opened and each scored batch's threshold.
    fn context_step_run(
        cfg: EngineConfig,
        steps: bool,
        shift_at: i64,
        d: f32,
    ) -> (Vec<i64>, Vec<f64>) {
        let mut e = Engine::new(cfg);
        let mut f = MonitoredPersistence(vec![0, 2]);
        let (mut opened, mut thresholds) = (vec![], vec![]);
        for n in 1..=12i64 {
            let cmd = if steps && n >= 5 { 1.0 } else { 0.0 };
            let b = if n >= shift_at { d } else { 0.0 };
            let reading = Reading {
                device: "d".into(),
                ts_ms: n,
                values: vec![0.0, cmd, b],
            };
            e.push(&reading).unwrap();
            for ev in e.flush(&mut f).unwrap() {
                match ev {
                    EngineEvent::Opened(a) => opened.push(a.opened_at),
                    EngineEvent::Scored { threshold, .. } => thresholds.push(threshold),
                    EngineEvent::Resolved(_) => {}
                }
            }
        }
        (opened, thresholds)
    }

    /// Table: the context channel `cmd` steps (or not) at reading 5, and
    /// the monitored `b` shifts by `d` for good at reading 5 or 9 (batches
    /// of 2, persistence forecasts: one batch scores d^2 / 2 against the
    /// fixed threshold 1). Within 2 readings of the command's step that
    /// batch needs `margin` times the threshold; elsewhere the threshold
    /// alone.
    #[test]
    fn after_a_context_change_a_batch_needs_the_margin_over_its_threshold() {
        let s = 1.6f32; // scores 1.28
        // (cmd steps, b shifts at, d, margin) -> (alerts opened at, thresholds).
        type Case = (bool, i64, f32, f64, &'static [i64], &'static [f64]);
        let cases: &[Case] = &[
            (true, 5, s, 1.5, &[], &[1.0, 1.5, 1.0, 1.0, 1.0]),
            (true, 5, s, 1.0, &[6], &[1.0; 5]),
            (true, 5, 2.0, 1.5, &[6], &[1.0, 1.5, 1.0, 1.0, 1.0]),
            (false, 5, s, 1.5, &[6], &[1.0; 5]),
            (true, 9, s, 1.5, &[10], &[1.0, 1.5, 1.0, 1.0, 1.0]),
        ];
        for &(steps, shift_at, d, margin, want_opened, want_thresholds) in cases {
            let mut cfg = context_config();
            cfg.detector.context_change_margin = margin;
            cfg.detector.context_change_rows = 2;
            let (opened, thresholds) = context_step_run(cfg, steps, shift_at, d);
            let case = format!("steps {steps}, shift at {shift_at}, d {d}, margin {margin}");
            assert_eq!(opened, want_opened, "{case}");
            // With no margin (1) the step leaves the thresholds alone.
            let want: Vec<f64> = if margin > 1.0 {
                want_thresholds.to_vec()
            } else {
                vec![1.0; 5]
            };
            assert_eq!(thresholds, want, "{case}");
        }
    }

    /// Table: with `open_after` 2 and `open_ratio` 2, one batch far over
    /// its threshold (the monitored `b` shifts by 4 for good: one batch
    /// scores 8 against the fixed threshold 1) opens an alert at once,
    /// unless it ends within 2 readings of the context channel's step,
    /// where it must last like any other; with `open_ratio` 0 it never
    /// opens alone.
    #[test]
    fn one_batch_far_over_opens_at_once_except_after_a_context_change() {
        // (cmd steps at 5, b shifts at, open_ratio) -> alerts opened at.
        let cases: [(bool, i64, f64, &[i64]); 5] = [
            (false, 5, 2.0, &[6]),
            (true, 5, 2.0, &[]),
            (true, 9, 2.0, &[10]),
            (false, 5, 0.0, &[]),
            (true, 9, 0.0, &[]),
        ];
        for (steps, shift_at, open_ratio, want) in cases {
            let mut cfg = context_config();
            cfg.detector.open_after = 2;
            cfg.detector.open_ratio = open_ratio;
            cfg.detector.context_change_margin = 1.5;
            cfg.detector.context_change_rows = 2;
            let (opened, _) = context_step_run(cfg, steps, shift_at, 4.0);
            let case = format!("steps {steps}, shift at {shift_at}, open_ratio {open_ratio}");
            assert_eq!(opened, want, "{case}");
        }
    }

    #[test]
    fn many_devices_share_one_call_and_a_device_never_twice() {
        let mut e = engine(8);
        let mut f = Persistence { calls: vec![] };
        for d in ["x", "y", "z"] {
            for ts in 1..=4 {
                e.push(&r(d, ts, 1.0, 1.0)).unwrap();
            }
        }
        assert_eq!(e.queued(), 6);
        e.flush(&mut f).unwrap();
        // Two rounds of three: each device's second batch needs its first's state.
        assert_eq!(f.calls, vec![3, 3]);
        assert_eq!(e.queued(), 0);
        let mut small = engine(2);
        for d in ["x", "y", "z"] {
            small.push(&r(d, 1, 1.0, 1.0)).unwrap();
            small.push(&r(d, 2, 1.0, 1.0)).unwrap();
        }
        let mut f = Persistence { calls: vec![] };
        small.flush(&mut f).unwrap();
        assert_eq!(f.calls, vec![2, 1]);
    }

    #[test]
    fn touched_devices_are_listed_once_until_drained() {
        let mut e = engine(8);
        for ts in 1..=3 {
            e.push(&r("b", ts, 0.0, 0.0)).unwrap();
            e.push(&r("a", ts, 0.0, 0.0)).unwrap();
        }
        let views = e.drain_touched();
        let got: Vec<_> = views
            .iter()
            .map(|v| (v.device.as_str(), v.readings))
            .collect();
        assert_eq!(got, vec![("b", 3), ("a", 3)]);
        assert!(e.drain_touched().is_empty());
        // A duplicate changes nothing, so it does not touch the device.
        assert_eq!(e.push(&r("a", 3, 0.0, 0.0)), Ok(Pushed::Duplicate));
        assert!(e.drain_touched().is_empty());
        e.push(&r("a", 4, 0.0, 0.0)).unwrap();
        assert_eq!(e.drain_touched().len(), 1);
        assert_eq!(e.device_ids().collect::<Vec<_>>(), vec!["b", "a"]);
    }

    #[test]
    fn flush_full_runs_only_full_calls() {
        let mut e = engine(2);
        let mut f = Persistence { calls: vec![] };
        for ts in 1..=4 {
            e.push(&r("x", ts, 1.0, 1.0)).unwrap();
        }
        // Two batches, one device: not a full call.
        assert!(!e.batch_full());
        assert!(e.flush_full(&mut f).unwrap().is_empty());
        e.push(&r("y", 1, 1.0, 1.0)).unwrap();
        e.push(&r("y", 2, 1.0, 1.0)).unwrap();
        assert!(e.batch_full());
        e.flush_full(&mut f).unwrap();
        // x's second batch waits for company.
        assert_eq!((f.calls.clone(), e.queued()), (vec![2], 1));
        e.flush(&mut f).unwrap();
        assert_eq!(
            (f.calls, e.queued(), e.batch_full()),
            (vec![2, 1], 0, false)
        );
    }

    /// Table: probation (readings) -> the reading counts at which alerts
    /// open. Channel b steps to 2 for readings 5-6 and 11-12 (batches of
    /// 2, persistence forecasts): batches ending at 6, 8 (the step back)
    /// and 12 exceed the threshold. A batch ending within the probation is
    /// scored alike but opens nothing.
    #[test]
    fn no_alert_opens_in_the_probation_and_every_batch_is_scored() {
        let mut scored_without = None;
        for (probation, want) in [
            (0, vec![6, 12]),
            (5, vec![6, 12]),
            (6, vec![8, 12]),
            (8, vec![12]),
            (12, vec![]),
        ] {
            let mut e = engine(8);
            e.cfg.detector.probation = probation;
            let mut f = Persistence { calls: vec![] };
            let mut events = vec![];
            for n in 1..=12 {
                let b = if matches!(n, 5 | 6 | 11 | 12) {
                    2.0
                } else {
                    0.0
                };
                e.push(&r("d", n, 0.0, b)).unwrap();
                events.extend(e.flush(&mut f).unwrap());
            }
            let opened: Vec<i64> = (events.iter())
                .filter_map(|ev| match ev {
                    EngineEvent::Opened(a) => Some(a.opened_at),
                    _ => None,
                })
                .collect();
            assert_eq!(opened, want, "probation {probation}");
            let scored: Vec<(i64, f64)> = (events.iter())
                .filter_map(|ev| match ev {
                    EngineEvent::Scored { end_ts, score, .. } => Some((*end_ts, *score)),
                    _ => None,
                })
                .collect();
            assert_eq!(scored.len(), 5, "probation {probation}");
            assert_eq!(scored_without.get_or_insert(scored.clone()), &scored);
        }
    }

    #[test]
    fn warmup_delays_scoring() {
        let mut e = engine(8);
        e.cfg.warmup = 4;
        let mut f = Persistence { calls: vec![] };
        let mut scored = 0;
        for ts in 1..=8 {
            e.push(&r("d", ts, 0.0, 0.0)).unwrap();
            scored += e.flush(&mut f).unwrap().len();
        }
        // Forecasts made after 2, 4, 6 readings; only those after >= 4 count:
        // batches 3 and 4 are scored.
        assert_eq!(scored, 2);
    }

    /// Table: warm-up, flush after every reading or once at the end (a
    /// backlog: all four batches queued before the first call) -> scored
    /// batch ends. Both must agree: warm-up counts the readings up to each
    /// batch, not the device's newest reading.
    #[test]
    fn a_backlog_warms_up_like_a_steady_stream() {
        for (warmup, want) in [
            (0, vec![4, 6, 8]),
            (4, vec![6, 8]),
            (6, vec![8]),
            (8, vec![]),
        ] {
            for flush_each in [true, false] {
                let mut e = engine(8);
                e.cfg.warmup = warmup;
                let mut f = Persistence { calls: vec![] };
                let mut ends = vec![];
                for ts in 1..=8 {
                    e.push(&r("d", ts, 0.0, 0.0)).unwrap();
                    if flush_each || ts == 8 {
                        for ev in e.flush(&mut f).unwrap() {
                            if let EngineEvent::Scored { end_ts, .. } = ev {
                                ends.push(end_ts);
                            }
                        }
                    }
                }
                assert_eq!(
                    ends, want,
                    "warmup {warmup}, flush each reading: {flush_each}"
                );
                // Reconstructions need no previous forecast: one batch more.
                let mut e = engine(8);
                e.cfg.warmup = warmup;
                let mut ends = vec![];
                for ts in 1..=8 {
                    e.push(&r("d", ts, 0.0, 0.0)).unwrap();
                    if flush_each || ts == 8 {
                        for ev in e.flush(&mut Shifted).unwrap() {
                            if let EngineEvent::Scored { end_ts, .. } = ev {
                                ends.push(end_ts);
                            }
                        }
                    }
                }
                let want_r: Vec<i64> = (1..=4)
                    .map(|b| 2 * b)
                    .filter(|end| end - 2 >= warmup as i64)
                    .collect();
                assert_eq!(
                    ends, want_r,
                    "reconstructing, warmup {warmup}, flush each: {flush_each}"
                );
            }
        }
    }

    /// Table: is `b` forecast as its training constant (0) -> the scored
    /// batches' (start, score) and the alerts opened (when, contributors).
    /// The model forecasts 2.0 for every channel; `a` reads 2.0 throughout
    /// and `b` sits at 0 until it leaves for 3.0 at ts 9. Pinned, `b`'s
    /// wobble is gone (score 0: no alert) until it leaves, and the alert
    /// then opens naming it; unpinned, the wobble alone opens one on the
    /// first scored batch.
    #[test]
    fn a_channel_constant_in_training_is_forecast_as_its_constant() {
        struct Wobble;
        impl Forecaster for Wobble {
            type Error = String;
            fn state_len(&self) -> usize {
                1
            }
            fn step(&mut self, b: &mut StepBatch) -> Result<(), String> {
                b.predictions.iter_mut().for_each(|p| *p = 2.0);
                Ok(())
            }
        }
        for (pinned, scores, opened) in [
            (
                true,
                vec![(3, 0.0), (5, 0.0), (7, 0.0), (9, 4.5)],
                vec![(10, vec!["b"])],
            ),
            (
                false,
                vec![(3, 2.0), (5, 2.0), (7, 2.0), (9, 0.5)],
                vec![(4, vec!["b"])],
            ),
        ] {
            let mut cfg = engine(8).config().clone();
            cfg.scaler.forecast_constant = vec![false, pinned];
            let mut e = Engine::new(cfg);
            let (mut got_scores, mut got_opened) = (vec![], vec![]);
            for ts in 1..=10 {
                let b = if ts >= 9 { 3.0 } else { 0.0 };
                e.push(&r("d", ts, 2.0, b)).unwrap();
                for ev in e.flush(&mut Wobble).unwrap() {
                    match ev {
                        EngineEvent::Scored {
                            start_ts, score, ..
                        } => got_scores.push((start_ts, score)),
                        EngineEvent::Opened(a) => got_opened.push((
                            a.opened_at,
                            a.contributors
                                .iter()
                                .map(|c| c.channel.as_str().to_owned())
                                .collect::<Vec<_>>(),
                        )),
                        EngineEvent::Resolved(_) => {}
                    }
                }
            }
            assert_eq!(got_scores, scores, "pinned {pinned}");
            let opened: Vec<(i64, Vec<String>)> = opened
                .into_iter()
                .map(|(at, names)| (at, names.into_iter().map(String::from).collect()))
                .collect();
            assert_eq!(got_opened, opened, "pinned {pinned}");
        }
    }

    #[test]
    fn forecaster_error_keeps_batches_queued() {
        struct Broken;
        impl Forecaster for Broken {
            type Error = &'static str;
            fn state_len(&self) -> usize {
                1
            }
            fn step(&mut self, _: &mut StepBatch) -> Result<(), &'static str> {
                Err("boom")
            }
        }
        let mut e = engine(8);
        e.push(&r("d", 1, 0.0, 0.0)).unwrap();
        e.push(&r("d", 2, 0.0, 0.0)).unwrap();
        assert_eq!(e.flush(&mut Broken), Err("boom"));
        assert_eq!(e.queued(), 1);
        assert!(e.flush(&mut Persistence { calls: vec![] }).is_ok());
        assert_eq!(e.queued(), 0);
    }

    #[test]
    fn a_flood_of_device_ids_stays_within_the_bound() {
        let mut e = engine(8).with_max_devices(100);
        let mut f = Persistence { calls: vec![] };
        // A steady device, then 10,000 distinct one-shot ids.
        for ts in 1..=4 {
            e.push(&r("steady", ts, 0.0, 0.0)).unwrap();
        }
        let mut evicted = 0;
        for i in 0..10_000 {
            e.push(&r(&format!("flood-{i}"), 1, 0.0, 0.0)).unwrap();
            if i % 50 == 0 {
                // The steady device keeps reporting, so it stays recent.
                e.push(&r("steady", 10 + i, 0.0, 0.0)).unwrap();
            }
            assert!(
                e.device_count() <= 100,
                "{} devices tracked",
                e.device_count()
            );
            evicted += e.drain_evicted().len();
            e.flush(&mut f).unwrap();
        }
        assert_eq!(e.device_count(), 100);
        assert_eq!(evicted as u64, e.evicted_total());
        assert_eq!(e.evicted_total(), 10_001 - 100);
        assert!(
            e.device("steady").is_some(),
            "the recently seen device was evicted"
        );
        assert!(e.device("flood-0").is_none());
        assert!(e.device("flood-9999").is_some());
    }

    #[test]
    fn devices_with_queued_batches_are_never_evicted() {
        let mut e = engine(8).with_max_devices(2);
        e.push(&r("a", 1, 0.0, 0.0)).unwrap();
        e.push(&r("a", 2, 0.0, 0.0)).unwrap(); // a batch of "a" is queued
        e.push(&r("b", 1, 0.0, 0.0)).unwrap();
        e.push(&r("b", 2, 0.0, 0.0)).unwrap(); // and one of "b"
        e.push(&r("c", 1, 0.0, 0.0)).unwrap();
        // Both tracked devices have work in flight: the bound is exceeded
        // rather than losing the state those batches need.
        assert_eq!(e.device_count(), 3);
        assert!(e.drain_evicted().is_empty());
        let mut f = Persistence { calls: vec![] };
        e.flush(&mut f).unwrap();
        assert_eq!(f.calls, vec![2]);
        // Now idle: the next new device recycles the least recently seen.
        e.push(&r("d", 1, 0.0, 0.0)).unwrap();
        assert_eq!(e.drain_evicted(), vec!["a".to_string()]);
        assert_eq!(e.device_count(), 3);
    }

    #[test]
    fn replaced_engines_resolve_their_open_alerts() {
        let mut e = engine(8);
        let mut f = Persistence { calls: vec![] };
        let rows = [
            (0.0, 0.0),
            (0.0, 0.0),
            (0.0, 0.0),
            (0.0, 0.0),
            (0.0, 2.0),
            (0.0, 2.0),
        ];
        for (i, (a, b)) in rows.iter().enumerate() {
            e.push(&r("d", 10 * (i as i64 + 1), *a, *b)).unwrap();
            e.flush(&mut f).unwrap();
        }
        assert!(e.device("d").unwrap().open_alert.is_some());
        let closed = e.close_open_alerts();
        assert_eq!(closed.len(), 1);
        assert_eq!(
            (closed[0].state, closed[0].resolved_at),
            (AlertState::Resolved, Some(60))
        );
        assert!(e.device("d").unwrap().open_alert.is_none());
        assert!(e.close_open_alerts().is_empty());
    }
}
