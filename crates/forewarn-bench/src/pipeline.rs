//! The `serve` pipeline under test: throughput, and latency at half load.

use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use forewarn_core::engine::{Forecaster, StepBatch};
use forewarn_core::{Engine, EngineConfig};
use forewarn_ingest::{IngestConfig, Services};
use forewarn_model::{ModelError, Network};

use forewarn_api::DeviceBoard;
use forewarn_store::AlertStore;
use forewarn_telemetry::events::AlertDelay;
use forewarn_telemetry::{Health, Metrics};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::producer::Producer;
use rdkafka::{Offset, TopicPartitionList};
use tokio_util::sync::CancellationToken;

use crate::load::{Generator, finish, producer, send};
use crate::measure::{cpu_by_thread, cpu_delta, lock, reset_peak_rss, status_kib};
use crate::roofline::thread_cpu_ns;
use crate::setup::{now_ms, say};

// ---------------------------------------------------------------------------
// The pipeline under test

#[derive(Default)]
pub(crate) struct Probe {
    pub(crate) calls: AtomicU64,
    pub(crate) devices: AtomicU64,
    pub(crate) nanos: AtomicU64,
    /// CPU time of the calling (engine) thread inside the forecaster.
    pub(crate) cpu_nanos: AtomicU64,
}

/// The shared model, timed per call.
pub(crate) struct Probed {
    pub(crate) model: Arc<Mutex<Network>>,
    pub(crate) probe: Arc<Probe>,
}

impl Forecaster for Probed {
    type Error = ModelError;
    fn state_len(&self) -> usize {
        lock(&self.model).state_len()
    }
    fn step(&mut self, b: &mut StepBatch) -> Result<(), ModelError> {
        let mut m = lock(&self.model);
        let t = Instant::now();
        let cpu = thread_cpu_ns();
        let r = m.step(b);
        self.probe
            .nanos
            .fetch_add(t.elapsed().as_nanos() as u64, Ordering::Relaxed);
        self.probe
            .cpu_nanos
            .fetch_add(thread_cpu_ns().saturating_sub(cpu), Ordering::Relaxed);
        self.probe.calls.fetch_add(1, Ordering::Relaxed);
        self.probe.devices.fetch_add(b.n as u64, Ordering::Relaxed);
        r
    }
}

pub(crate) struct Pipeline {
    pub(crate) metrics: Arc<Metrics>,
    pub(crate) store: Arc<AlertStore>,
    pub(crate) probe: Arc<Probe>,
    pub(crate) shutdown: CancellationToken,
    pub(crate) thread: std::thread::JoinHandle<Result<(), forewarn_ingest::IngestError>>,
}

impl Pipeline {
    pub(crate) fn start(
        rt: &tokio::runtime::Runtime,
        cfg: IngestConfig,
        engine: EngineConfig,
        model: Arc<Mutex<Network>>,
        store_path: &Path,
    ) -> anyhow::Result<Self> {
        let metrics = Arc::new(Metrics::new());
        let health = Arc::new(Health::with_metrics(&metrics));
        health.set_model_loaded(true);
        let store = Arc::new(
            AlertStore::open(store_path)
                .with_context(|| format!("opening {}", store_path.display()))?,
        );
        let services = Services {
            store: store.clone(),
            board: Arc::new(DeviceBoard::new()),
            health,
            metrics: metrics.clone(),
            bus: forewarn_api::AlertBus::default(),
        };
        let probe = Arc::new(Probe::default());
        let forecaster = Probed {
            model,
            probe: probe.clone(),
        };
        let shutdown = CancellationToken::new();
        let (handle, token) = (rt.handle().clone(), shutdown.clone());
        let engine = Engine::new(engine);
        let thread = std::thread::Builder::new()
            .name("bench-pipeline".into())
            .spawn(move || {
                handle.block_on(forewarn_ingest::run(
                    cfg, engine, forecaster, services, token,
                ))
            })?;
        Ok(Self {
            metrics,
            store,
            probe,
            shutdown,
            thread,
        })
    }

    /// Readings whose effects are durable (alerts stored and published,
    /// rejects dead-lettered). Their offsets are stored with the next
    /// state checkpoint, the last one at stop; `committed_at_end` checks
    /// that every offset was committed.
    pub(crate) fn done(&self) -> u64 {
        let m = &self.metrics;
        m.readings_accepted.get() + m.readings_duplicate.get() + m.dead_letters.get()
    }

    pub(crate) fn stop(self) -> anyhow::Result<()> {
        self.shutdown.cancel();
        match self.thread.join() {
            Ok(r) => r.context("pipeline"),
            Err(_) => bail!("the pipeline thread panicked"),
        }
    }
}

pub(crate) struct Throughput {
    pub(crate) secs: f64,
    pub(crate) calls: u64,
    pub(crate) forecaster_readings: u64,
    pub(crate) forecaster_secs: f64,
    pub(crate) forecaster_cpu_secs: f64,
    pub(crate) peak_rss: u64,
    pub(crate) alert_changes: u64,
    pub(crate) committed_ok: bool,
    pub(crate) cpu: String,
}

pub(crate) fn throughput_run(
    rt: &tokio::runtime::Runtime,
    cfg: IngestConfig,
    engine: EngineConfig,
    model: Arc<Mutex<Network>>,
    store: &Path,
    total: u64,
) -> anyhow::Result<Throughput> {
    let horizon = engine.horizon as u64;
    reset_peak_rss();
    let pipe = Pipeline::start(rt, cfg.clone(), engine, model, store)?;
    // The clock starts with the first chunk handed on by the consumer (after
    // the group join, which is not part of steady-state throughput).
    let wait_start = Instant::now();
    while pipe.metrics.messages_consumed.get() == 0 {
        if wait_start.elapsed() > Duration::from_secs(120) {
            bail!("the pipeline consumed nothing within 120 s");
        }
        std::thread::sleep(Duration::from_micros(200));
    }
    let t0 = Instant::now();
    let cpu0 = cpu_by_thread();
    let (mut last, mut last_change) = (0, Instant::now());
    while pipe.done() < total {
        std::thread::sleep(Duration::from_millis(1));
        let d = pipe.done();
        if d != last {
            (last, last_change) = (d, Instant::now());
        } else if last_change.elapsed() > Duration::from_secs(60) {
            bail!("the pipeline stalled at {d} of {total} readings");
        }
    }
    let secs = t0.elapsed().as_secs_f64();
    let cpu1 = cpu_by_thread();
    let peak_rss = status_kib("VmHWM:") * 1024;
    let m = &pipe.metrics;
    let alert_changes = m.alerts_opened.with_label_values(&["warning"]).get()
        + m.alerts_opened.with_label_values(&["critical"]).get()
        + m.alerts_resolved.get();
    let _ = &pipe.store;
    let probe = pipe.probe.clone();
    pipe.stop()?;
    let committed_ok = committed_at_end(&cfg)?;
    let calls = probe.calls.load(Ordering::Relaxed);
    Ok(Throughput {
        secs,
        calls,
        forecaster_readings: probe.devices.load(Ordering::Relaxed) * horizon,
        forecaster_secs: probe.nanos.load(Ordering::Relaxed) as f64 / 1e9,
        forecaster_cpu_secs: probe.cpu_nanos.load(Ordering::Relaxed) as f64 / 1e9,
        peak_rss,
        alert_changes,
        committed_ok,
        cpu: cpu_delta(&cpu0, &cpu1),
    })
}

/// Whether the group's committed offsets equal the end of every partition.
pub(crate) fn committed_at_end(cfg: &IngestConfig) -> anyhow::Result<bool> {
    let c: BaseConsumer = forewarn_ingest::client_config(cfg)?
        .set("group.id", &cfg.group_id)
        .set("enable.auto.commit", "false")
        .create()?;
    let timeout = Duration::from_secs(10);
    let mut tpl = TopicPartitionList::new();
    for p in 0..cfg.topic_partitions {
        tpl.add_partition(&cfg.input_topic, p);
    }
    let committed = c.committed_offsets(tpl, timeout)?;
    for el in committed.elements() {
        let (_, high) = c.fetch_watermarks(&cfg.input_topic, el.partition(), timeout)?;
        let at = match el.offset() {
            Offset::Offset(o) => o,
            _ => 0,
        };
        // At or past the end (Tansu's high watermark can lag the last
        // committed batch).
        if at < high {
            say(format!(
                "partition {}: committed {at}, end {high}",
                el.partition()
            ));
            return Ok(false);
        }
    }
    Ok(true)
}

// ---------------------------------------------------------------------------
// Latency at half load

pub(crate) struct Latency {
    pub(crate) samples: usize,
    pub(crate) p50: f64,
    pub(crate) p99: f64,
    pub(crate) max: f64,
    /// Reading produced -> readable by a plain consumer (the broker's share).
    pub(crate) floor_p50: f64,
    pub(crate) floor_p99: f64,
    pub(crate) achieved_rate: f64,
    /// Mean ms from an alert's reading to each pipeline stage
    /// (`forewarn_alert_delay_seconds`: scored, stored, published).
    pub(crate) stage_means: Vec<(&'static str, f64)>,
}

#[allow(clippy::too_many_arguments)]
pub(crate) fn latency_run(
    rt: &tokio::runtime::Runtime,
    cfg: IngestConfig,
    engine: EngineConfig,
    model: Arc<Mutex<Network>>,
    store: &Path,
    sim: &Generator,
    rate: f64,
    linger_ms: u32,
    secs: u64,
) -> anyhow::Result<Latency> {
    rt.block_on(forewarn_ingest::ensure_topics(
        &cfg,
        &CancellationToken::new(),
    ))?;
    let devices = sim.ids.len();
    // A tick's number sets only its values (its time is the wall clock), so
    // the run starts one window and one batch before the first spike: a
    // slow model, with few ticks in `secs`, still sees alerts open and
    // resolve. Refused up front when even that does not fit.
    let (window, horizon) = (engine.window as u64, engine.horizon as u64);
    let spike = sim.first_spike_tick().context("latency run: no devices")?;
    let first = spike.saturating_sub(window + horizon);
    let need = spike + 2 * horizon - first;
    let ticks = rate * secs as f64 / devices as f64;
    if ticks < need as f64 {
        bail!(
            "latency run: {secs} s at {rate:.0} readings/s over {devices} devices is {ticks:.0} readings per \
             device, and an alert needs {need} (a full window, then a spike and the batch after it): raise \
             --latency-seconds to at least {:.0} or lower --devices",
            (need as f64 * devices as f64 / rate).ceil() + 1.0
        );
    }
    let pipe = Pipeline::start(rt, cfg.clone(), engine, model, store)?;

    // Alerts read back as a dashboard would: every partition from the start.
    let stop = Arc::new(AtomicBool::new(false));
    let samples: Samples = Arc::default();
    let reader = spawn_reader(
        &cfg,
        &cfg.alerts_topic,
        0..cfg.topic_partitions,
        "alerts-reader",
        stop.clone(),
        samples.clone(),
        alert_ts,
    )?;
    // The broker's own floor: readings read back by a plain consumer (one
    // partition: a sample that adds little load of its own).
    let floor: Samples = Arc::default();
    let floor_reader = spawn_reader(
        &cfg,
        &cfg.input_topic,
        0..1,
        "floor-reader",
        stop.clone(),
        floor.clone(),
        reading_ts,
    )?;

    let (p, d) = producer(&cfg, linger_ms)?;
    let mut buf = String::with_capacity(256);
    // Prime: one reading per device, then wait until they are through, so
    // the group join is not in the measurement.
    let mut last_ts = now_ms();
    for dev in 0..devices {
        sim.encode(&mut buf, dev, last_ts, first);
        send(&p, &cfg.input_topic, &sim.ids[dev], &buf)?;
    }
    p.flush(Duration::from_secs(30))?;
    let t = Instant::now();
    while pipe.done() < devices as u64 {
        if t.elapsed() > Duration::from_secs(120) {
            bail!("latency run: the pipeline did not take the priming readings");
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    let interval = Duration::from_secs_f64(devices as f64 / rate);
    let start = Instant::now();
    let start_ms = now_ms();
    let mut next = start;
    let mut tick = 1u64;
    while start.elapsed() < Duration::from_secs(secs) {
        let now = Instant::now();
        if now < next {
            p.poll(next - now);
            continue;
        }
        let ts = now_ms().max(last_ts + 1);
        last_ts = ts;
        for dev in 0..devices {
            sim.encode(&mut buf, dev, ts, first + tick);
            send(&p, &cfg.input_topic, &sim.ids[dev], &buf)?;
        }
        p.poll(Duration::ZERO);
        tick += 1;
        next += interval;
    }
    let sent_secs = start.elapsed().as_secs_f64();
    finish(&p, &d, tick * devices as u64)?;
    let target = tick * devices as u64;
    let t = Instant::now();
    while pipe.done() < target && t.elapsed() < Duration::from_secs(60) {
        std::thread::sleep(Duration::from_millis(10));
    }
    std::thread::sleep(Duration::from_millis(500));
    stop.store(true, Ordering::Relaxed);
    let _ = reader.join();
    let _ = floor_reader.join();
    let stage_means = AlertDelay::STAGES
        .iter()
        .map(|&stage| {
            let h = pipe.metrics.alert_delay.with_label_values(&[stage]);
            let n = h.get_sample_count().max(1) as f64;
            (stage, h.get_sample_sum() / n * 1000.0)
        })
        .collect();
    pipe.stop()?;

    // The first 2 s are warm-up (devices need `window` readings before scoring).
    let lat = quantiles(&lock_vec(&samples), start_ms + 2000)
        .context("latency run: no alerts came back")?;
    let floor = quantiles(&lock_vec(&floor), start_ms + 2000)
        .context("latency run: the floor reader read nothing")?;
    Ok(Latency {
        samples: lat.0,
        p50: lat.1,
        p99: lat.2,
        max: lat.3,
        floor_p50: floor.1,
        floor_p99: floor.2,
        achieved_rate: (tick - 1) as f64 * devices as f64 / sent_secs,
        stage_means,
    })
}

pub(crate) type Samples = Arc<Mutex<Vec<(i64, f64)>>>;

/// (count, p50, p99, max) of the latencies whose event time is at or after `from_ms`.
pub(crate) fn quantiles(samples: &[(i64, f64)], from_ms: i64) -> Option<(usize, f64, f64, f64)> {
    let mut v: Vec<f64> = samples
        .iter()
        .filter(|(at, _)| *at >= from_ms)
        .map(|(_, l)| *l)
        .collect();
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    let q = |p: f64| v[((v.len() - 1) as f64 * p).round() as usize];
    Some((v.len(), q(0.5), q(0.99), v[v.len() - 1]))
}

/// Reads `partitions` of `topic` from the start on a thread until `stop`,
/// recording (event time, arrival - event time in ms) per message.
pub(crate) fn spawn_reader(
    cfg: &IngestConfig,
    topic: &str,
    partitions: std::ops::Range<i32>,
    name: &str,
    stop: Arc<AtomicBool>,
    samples: Samples,
    event_ts: fn(&[u8]) -> Option<i64>,
) -> anyhow::Result<std::thread::JoinHandle<()>> {
    let c: BaseConsumer = forewarn_ingest::client_config(cfg)?
        .set("group.id", format!("{}.{name}", cfg.group_id))
        .set("enable.auto.commit", "false")
        .set("fetch.wait.max.ms", "5")
        .create()?;
    let mut tpl = TopicPartitionList::new();
    for p in partitions {
        tpl.add_partition_offset(topic, p, Offset::Beginning)?;
    }
    c.assign(&tpl)?;
    Ok(std::thread::Builder::new()
        .name(format!("bench-{name}"))
        .spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                let Some(Ok(msg)) = c.poll(Duration::from_millis(20)) else {
                    continue;
                };
                let seen = now_ms();
                if let Some(at) = msg.payload().and_then(event_ts) {
                    lock_vec(&samples).push((at, (seen - at) as f64));
                }
            }
        })?)
}

/// The reading time an alert change is about: when it opened or resolved.
pub(crate) fn alert_ts(payload: &[u8]) -> Option<i64> {
    let v = serde_json::from_slice::<serde_json::Value>(payload).ok()?;
    match v["state"].as_str() {
        Some("resolved") => v["resolved_at"].as_i64(),
        _ => v["opened_at"].as_i64(),
    }
}

/// The `ts` of a reading in the array form the bench produces.
pub(crate) fn reading_ts(payload: &[u8]) -> Option<i64> {
    let s = std::str::from_utf8(payload).ok()?;
    let rest = &s[s.find("\"ts\":")? + 5..];
    rest[..rest.find(',')?].parse().ok()
}

pub(crate) fn lock_vec<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}
