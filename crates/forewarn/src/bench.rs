//! `forewarn bench`: end-to-end throughput, latency, memory and roofline of
//! the `serve` pipeline on a local broker, with a Python peer measured on the
//! same data in the same run. docs/BENCHMARKS.md explains every number.
//!
//! Steps (each printed as it runs):
//! 1. GEMM rate libtorch reaches here in the precision the LSTM runs in
//!    (the roofline), FLOPs per reading.
//! 2. Bytes per device: RSS delta of an engine holding many warmed devices.
//! 3. Forecaster alone: synthetic full batches straight into `step`.
//! 4. Preload a fresh topic with `readings` synthetic readings of `devices`
//!    devices (deterministic; a few devices spike now and then, so alerts
//!    open and resolve during the run).
//! 5. The real pipeline (`forewarn_ingest::run`, as `serve` runs it) in this
//!    process: time from the first consumed chunk until every reading's
//!    effects are durable and its offset stored; then the final commit is
//!    checked against the end offsets.
//! 6. The Python peer on the same topic (own consumer group), time-capped.
//! 7. Latency: a second pipeline fed at half the measured rate with the
//!    wall clock as reading timestamp; the alerts topic is read back and
//!    each alert's reading timestamp is compared with the time it arrived.
//!
//! The model is a randomly initialised LSTM of the requested shape (seeded):
//! throughput does not depend on the weights, and the threshold is set so
//! that only the injected spikes open alerts.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use forewarn_core::engine::{Forecaster, StepBatch};
use forewarn_core::{DetectorConfig, Engine, EngineConfig, ReadingRef, Scaler, Schema};
use forewarn_ingest::{IngestConfig, Services};
use forewarn_model::{Highway, LstmForecaster, ModelError, ModelSpec, Precision};

use crate::train::HighwayArg;
use forewarn_api::DeviceBoard;
use forewarn_store::AlertStore;
use forewarn_telemetry::events::AlertDelay;
use forewarn_telemetry::{Health, Metrics};
use rdkafka::ClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::Message;
use rdkafka::producer::{BaseProducer, BaseRecord, DeliveryResult, Producer, ProducerContext};
use rdkafka::{Offset, TopicPartitionList};
use tch::{Device, Kind, Tensor};
use tokio_util::sync::CancellationToken;

#[derive(clap::Args, Debug, Clone)]
pub struct BenchArgs {
    /// Kafka bootstrap servers; a local broker is started (scripts/broker.sh) when none listens.
    #[arg(long, default_value = "127.0.0.1:9092")]
    brokers: String,
    /// Devices in the preloaded topic.
    #[arg(long, default_value_t = 1000)]
    devices: usize,
    /// Readings preloaded (rounded up to a whole number per device).
    #[arg(long, default_value_t = 2_000_000)]
    readings: usize,
    #[arg(long, default_value_t = 8)]
    channels: usize,
    #[arg(long, default_value_t = 64)]
    hidden: usize,
    #[arg(long, default_value_t = 2)]
    layers: usize,
    /// Readings per forecast batch.
    #[arg(long, default_value_t = 10)]
    horizon: usize,
    /// The forecaster's linear highway: none, full or cross (what `forewarn
    /// train` builds by default).
    #[arg(long, value_enum, default_value_t = HighwayArg::default_forecaster())]
    highway: HighwayArg,
    /// Readings kept per device.
    #[arg(long, default_value_t = 50)]
    window: usize,
    /// Most devices per forecaster call (pipeline.max_batch).
    #[arg(long, default_value_t = 256)]
    max_batch: usize,
    /// libtorch intra-op threads; 0 = what serve picks (cores / 2, at least 1).
    #[arg(long, default_value_t = 0)]
    threads: usize,
    /// auto, cpu, cuda or cuda:N.
    #[arg(long, default_value = "auto")]
    device: String,
    /// Inference precision (serve's model.precision): f32, or bf16 for the
    /// LSTM; the roofline is then the bf16 GEMM rate.
    #[arg(long, default_value_t = Precision::F32)]
    precision: Precision,
    /// Partitions of the benchmark topics.
    #[arg(long, default_value_t = 8)]
    partitions: i32,
    /// Most seconds the Python peer runs.
    #[arg(long, default_value_t = 60)]
    peer_seconds: u64,
    #[arg(long)]
    skip_peer: bool,
    /// Seconds of paced load in the latency run.
    #[arg(long, default_value_t = 20)]
    latency_seconds: u64,
    #[arg(long)]
    skip_latency: bool,
    /// Readings/s offered in the latency run [default: half the measured
    /// end-to-end rate, the issue's "half load"].
    #[arg(long)]
    latency_rate: Option<f64>,
    /// linger.ms of the latency run's producer (the plant gateway): how long
    /// it may hold a reading to batch it. Counted in the latency, since a
    /// reading's time is taken before it is handed to the producer.
    #[arg(long, default_value_t = 1)]
    latency_linger_ms: u32,
    /// Only the forecaster with synthetic batches (no broker): the GPU target.
    #[arg(long)]
    forecaster_only: bool,
    /// Seconds of the forecaster-only measurement.
    #[arg(long, default_value_t = 5)]
    forecaster_seconds: u64,
    /// Devices per call in the forecaster-only measurement (default: max_batch).
    #[arg(long)]
    forecaster_batch: Option<usize>,
    /// Extra librdkafka properties for the pipeline's clients (kafka.client),
    /// e.g. `--client fetch.wait.max.ms=100`; repeatable.
    #[arg(long, value_parser = parse_key_value)]
    client: Vec<(String, String)>,
    /// Device-state checkpoint interval of the pipelines (kafka.checkpoint_interval;
    /// 0 turns checkpoints off). Default: what `serve` uses.
    #[arg(long, default_value = "5s", value_parser = humantime::parse_duration)]
    checkpoint_interval: Duration,
    /// Where alert stores of the runs go.
    #[arg(long, default_value = ".run/bench")]
    work_dir: PathBuf,
}

pub fn run(args: BenchArgs) -> anyhow::Result<()> {
    // The pipeline logs every alert; the spikes open hundreds. Keep the
    // bench's own report readable (RUST_LOG overrides).
    let filter = tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| {
        tracing_subscriber::EnvFilter::new("warn,forewarn_telemetry=error,librdkafka=error")
    });
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
    let threads = match args.threads {
        0 => (std::thread::available_parallelism().map_or(1, usize::from) / 2).max(1),
        n => n,
    };
    forewarn_model::set_threads(threads);
    let device = crate::config::parse_device(&args.device)?;
    let spec = ModelSpec {
        channels: args.channels,
        hidden: args.hidden,
        layers: args.layers,
        horizon: args.horizon,
    };
    spec.validate().map_err(anyhow::Error::msg)?;
    if args.devices == 0 || args.max_batch == 0 {
        bail!("--devices and --max-batch must be at least 1");
    }
    tch::manual_seed(7);
    let highway = Highway::from(args.highway);
    let mut model =
        LstmForecaster::with_highway(spec, highway, device).context("creating the model")?;
    model.set_precision(args.precision).context("--precision")?;
    let flops = flops_per_reading(&spec, highway);
    say(format!(
        "model: random-init LSTM channels={} hidden={} layers={} horizon={} highway={:?} precision={} on {}; \
         {:.0} FLOPs per reading (LSTM {:.0} + head and highway {:.0} per batch / horizon)",
        spec.channels,
        spec.hidden,
        spec.layers,
        spec.horizon,
        highway,
        args.precision,
        forewarn_model::describe_device(device),
        flops.total(),
        flops.lstm,
        flops.head
    ));

    // 1. Roofline: the GEMM rate in the precision the LSTM runs in (the
    // shares below are against it); with bf16, the fp32 rate for reference.
    if args.precision == Precision::Bf16 {
        let fp32 = measure_gemm(device, Kind::Float, 1.5)?;
        say(format!(
            "roofline (reference only): GEMM {0}x{0}x{0} fp32 reaches {1:.1} GFLOP/s ({2:.1} per CPU-second); at \
             the recurrent shape {3:.1} GFLOP/s",
            fp32.size, fp32.peak, fp32.peak_cpu, fp32.small
        ));
    }
    let gemm = measure_gemm(device, gemm_kind(args.precision), 1.5)?;
    say(format!(
        "roofline: GEMM {}x{}x{} {} reaches {:.1} GFLOP/s on {threads} libtorch thread(s) ({:.1} per CPU-second of \
         the calling thread); at the LSTM's recurrent shape [{}x{}]x[{}x{}] {:.1} GFLOP/s",
        gemm.size,
        gemm.size,
        gemm.size,
        match args.precision {
            Precision::F32 => "fp32",
            Precision::Bf16 => "bf16",
        },
        gemm.peak,
        gemm.peak_cpu,
        args.max_batch,
        args.hidden,
        args.hidden,
        4 * args.hidden,
        gemm.small
    ));
    let sim = Generator::new(args.devices, args.channels, args.horizon);
    let engine_cfg = engine_config(&args, &sim, spec.state_len());

    // 2. Memory per device.
    let mem = measure_bytes_per_device(&engine_cfg, 50_000);
    say(format!(
        "memory: {:.0} bytes per device measured (RSS delta over {} warmed devices, id and map entry included); \
         {} computed by Engine::bytes_per_device",
        mem.measured, mem.devices, mem.computed
    ));

    // 3. Forecaster alone.
    let model = Arc::new(Mutex::new(model));
    let fb = args.forecaster_batch.unwrap_or(args.max_batch);
    let fo = forecaster_only(
        &model,
        &spec,
        fb,
        Duration::from_secs(args.forecaster_seconds),
    )?;
    // With one libtorch thread all forecaster work runs on the calling
    // thread, so CPU-time rates compare like with like even while other
    // processes preempt us; with more threads (or CUDA) only wall time does.
    let by_cpu = threads == 1 && device == Device::Cpu;
    let fo_share_wall = fo.readings_per_s * flops.total() / (gemm.peak * 1e9);
    let fo_share_cpu = fo.readings_per_cpu_s * flops.total() / (gemm.peak_cpu * 1e9);
    let fo_share = if by_cpu { fo_share_cpu } else { fo_share_wall };
    say(format!(
        "forecaster only: {} devices per call, {:.2} ms per call, {:.0} readings/s, {:.1} GFLOP/s = {:.0}% of the GEMM \
         roofline by wall time, {:.0}% by CPU time",
        fb,
        fo.secs_per_call * 1e3,
        fo.readings_per_s,
        fo.readings_per_s * flops.total() / 1e9,
        100.0 * fo_share_wall,
        100.0 * fo_share_cpu
    ));
    if args.forecaster_only {
        say("forecaster-only mode: no broker, no peer, no latency run".into());
        println!(
            "readings_per_s={:.0} peer_readings_per_s=0 ratio=0 roofline_share={:.2} p99_ms=0 bytes_per_device={:.0}",
            fo.readings_per_s, fo_share, mem.measured
        );
        return Ok(());
    }

    // 4. Preload.
    let root = repo_root();
    ensure_broker(&root, &args.brokers)?;
    std::fs::create_dir_all(&args.work_dir)
        .with_context(|| format!("creating {}", args.work_dir.display()))?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let run_id = now_ms();
    let ticks = args.readings.div_ceil(args.devices) as u64;
    let total = ticks * args.devices as u64;
    let tp = ingest_config(&args, &format!("forewarn.bench.{run_id}"));
    rt.block_on(forewarn_ingest::ensure_topics(
        &tp,
        &CancellationToken::new(),
    ))?;
    let t = Instant::now();
    let base_ts = 1_795_867_200_000;
    preload(&args.brokers, &tp.input_topic, &sim, ticks, base_ts)?;
    let produce_s = t.elapsed().as_secs_f64();
    say(format!(
        "preload: {total} readings ({} devices x {ticks}) on {} ({} partitions) in {produce_s:.1} s ({:.0}/s)",
        args.devices,
        tp.input_topic,
        args.partitions,
        total as f64 / produce_s
    ));

    // 5. Throughput of the serve pipeline.
    let store = args.work_dir.join(format!("alerts-{run_id}.db"));
    let tput = throughput_run(
        &rt,
        tp.clone(),
        engine_cfg.clone(),
        model.clone(),
        &store,
        total,
    )?;
    let rate = total as f64 / tput.secs;
    let fflop = tput.forecaster_readings as f64 * flops.total();
    let share_wall = fflop / tput.forecaster_secs / (gemm.peak * 1e9);
    let share_cpu = fflop / tput.forecaster_cpu_secs.max(1e-9) / (gemm.peak_cpu * 1e9);
    let share = if by_cpu { share_cpu } else { share_wall };
    say(format!(
        "serve: {total} readings in {:.2} s = {rate:.0} readings/s end to end; {} alert changes stored; \
         committed offsets {}",
        tput.secs,
        tput.alert_changes,
        if tput.committed_ok {
            "= end offsets"
        } else {
            "BEHIND end offsets"
        }
    ));
    say(format!(
        "serve: forecaster {} calls, {:.0} devices per call, {:.2} s inside ({:.0}% of wall, {:.2} CPU-s), {:.1} GFLOP/s \
         = {:.0}% of the GEMM roofline by wall time, {:.0}% by CPU time; peak RSS {:.0} MiB",
        tput.calls,
        tput.forecaster_readings as f64 / args.horizon as f64 / tput.calls.max(1) as f64,
        tput.forecaster_secs,
        100.0 * tput.forecaster_secs / tput.secs,
        tput.forecaster_cpu_secs,
        fflop / tput.forecaster_secs / 1e9,
        100.0 * share_wall,
        100.0 * share_cpu,
        tput.peak_rss as f64 / (1 << 20) as f64
    ));
    say(format!(
        "serve: CPU seconds by thread during the run (wall {:.2} s): {}",
        tput.secs, tput.cpu
    ));

    // 6. The peer.
    let peer = if args.skip_peer {
        None
    } else {
        match run_peer(&root, &args, &tp.input_topic, run_id) {
            Ok(r) => Some(r),
            Err(e) => {
                say(format!("peer failed: {e:#}"));
                None
            }
        }
    };
    if let Some(p) = peer {
        say(format!(
            "peer: {p:.0} readings/s (Python, per-device loop); ratio {:.1}x",
            rate / p
        ));
    }

    // 7. Latency at half load.
    let lat = if args.skip_latency {
        None
    } else {
        let lp = ingest_config(&args, &format!("forewarn.bench.{run_id}.lat"));
        let store = args.work_dir.join(format!("alerts-{run_id}-lat.db"));
        let offered = args.latency_rate.unwrap_or(rate / 2.0);
        let r = latency_run(
            &rt,
            lp,
            engine_cfg,
            model.clone(),
            &store,
            &sim,
            offered,
            args.latency_linger_ms,
            args.latency_seconds,
        )?;
        say(format!(
            "latency at {:.0} readings/s offered ({:.0} achieved): reading -> alert visible on the alerts topic \
             (stored first), {} alert changes: p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms; the broker's floor \
             (reading -> readable by a plain consumer): p50 {:.1} ms, p99 {:.1} ms",
            offered, r.achieved_rate, r.samples, r.p50, r.p99, r.max, r.floor_p50, r.floor_p99
        ));
        say(format!(
            "latency by stage (mean ms from the alert's reading, forewarn_alert_delay_seconds): {}",
            r.stage_means
                .iter()
                .map(|(s, ms)| format!("{s} {ms:.1}"))
                .collect::<Vec<_>>()
                .join(", ")
        ));
        Some(r)
    };
    drop(rt);

    let peer_rate = peer.unwrap_or(0.0);
    let ratio = if peer_rate > 0.0 {
        rate / peer_rate
    } else {
        0.0
    };
    println!(
        "readings_per_s={rate:.0} peer_readings_per_s={peer_rate:.0} ratio={ratio:.1} roofline_share={share:.2} \
         p99_ms={:.1} bytes_per_device={:.0}",
        lat.map_or(0.0, |l| l.p99),
        mem.measured
    );
    Ok(())
}

fn parse_key_value(s: &str) -> Result<(String, String), String> {
    s.split_once('=')
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .ok_or_else(|| format!("expected key=value, got {s:?}"))
}

fn say(line: String) {
    eprintln!("[bench] {line}");
}

fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

/// Where `benches/` and `scripts/` are: the current directory when it has
/// them, else the source tree this binary was built from.
fn repo_root() -> PathBuf {
    let cwd = std::env::current_dir().unwrap_or_default();
    if cwd.join("benches/peer.py").exists() {
        return cwd;
    }
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn ensure_broker(root: &Path, brokers: &str) -> anyhow::Result<()> {
    let first = brokers.split(',').next().unwrap_or_default().trim();
    let reachable = |addr: &str| {
        use std::net::ToSocketAddrs;
        addr.to_socket_addrs()
            .ok()
            .and_then(|mut a| a.next())
            .is_some_and(|a| {
                std::net::TcpStream::connect_timeout(&a, Duration::from_secs(1)).is_ok()
            })
    };
    if reachable(first) {
        say(format!("broker: reusing {first}"));
        return Ok(());
    }
    let Some(port) = first.strip_prefix("127.0.0.1:") else {
        bail!("no broker at {first} and it is not local, so none can be started");
    };
    say(format!("broker: starting a local one on port {port}"));
    let status = Command::new("bash")
        .arg(root.join("scripts/broker.sh"))
        .arg("start")
        .env("FOREWARN_BROKER_PORT", port)
        .current_dir(root)
        .status()
        .context("running scripts/broker.sh")?;
    if !status.success() || !reachable(first) {
        bail!("scripts/broker.sh could not start a broker on {first}");
    }
    Ok(())
}

// ---------------------------------------------------------------------------
// FLOPs and the roofline

#[derive(Debug, Clone, Copy)]
struct Flops {
    /// Per reading: every LSTM layer's input and recurrent GEMMs.
    lstm: f64,
    /// Per reading: the head runs once per batch, on the last step only.
    head: f64,
}

impl Flops {
    fn total(&self) -> f64 {
        self.lstm + self.head
    }
}

/// GEMM FLOPs (2 per multiply-add) the forecaster needs per reading. Gate
/// nonlinearities and bias adds (~10 per gate value) are not counted: they
/// are not GEMM work and are < 5 % of it at hidden 64.
fn flops_per_reading(s: &ModelSpec, highway: Highway) -> Flops {
    let (c, h) = (s.channels as f64, s.hidden as f64);
    let lstm: f64 = (0..s.layers)
        .map(|l| {
            let input = if l == 0 { c } else { h };
            2.0 * 4.0 * h * (input + h)
        })
        .sum();
    // The highway maps the last row (C) to the batch forecast (horizon x C);
    // a cross highway's masked weights are still multiplied.
    let inputs = match highway {
        Highway::None => h,
        Highway::Full | Highway::Cross => h + c,
    };
    let head = 2.0 * inputs * (s.horizon as f64 * c) / s.horizon as f64;
    Flops { lstm, head }
}

struct Gemm {
    size: i64,
    /// GFLOP/s of a large square GEMM in the LSTM's precision, by wall time.
    peak: f64,
    /// The same by the calling thread's CPU time: what a core does when it
    /// is not preempted (meaningful with one libtorch thread, which
    /// computes on the calling thread).
    peak_cpu: f64,
    /// GFLOP/s at the LSTM's recurrent GEMM shape (wall).
    small: f64,
}

fn sync(device: Device) {
    if let Device::Cuda(i) = device {
        tch::Cuda::synchronize(i as i64);
    }
}

/// CPU time the calling thread has run, in ns (`/proc/thread-self/schedstat`).
fn thread_cpu_ns() -> u64 {
    std::fs::read_to_string("/proc/thread-self/schedstat")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

/// The dtype of the GEMMs the LSTM runs at `precision`.
fn gemm_kind(precision: Precision) -> Kind {
    match precision {
        Precision::F32 => Kind::Float,
        Precision::Bf16 => Kind::BFloat16,
    }
}

/// (wall GFLOP/s, thread-CPU GFLOP/s) of `[m, k] x [k, n]` in `kind`.
fn gemm_rate(device: Device, kind: Kind, m: i64, k: i64, n: i64, secs: f64) -> (f64, f64) {
    tch::no_grad(|| {
        let a = Tensor::randn([m, k], (kind, device));
        let b = Tensor::randn([k, n], (kind, device));
        for _ in 0..3 {
            let _ = a.mm(&b);
        }
        sync(device);
        let t = Instant::now();
        let cpu = thread_cpu_ns();
        let mut iters = 0u64;
        while t.elapsed().as_secs_f64() < secs {
            for _ in 0..4 {
                let _ = a.mm(&b);
            }
            iters += 4;
            sync(device);
        }
        let flop = 2.0 * (m * k * n) as f64 * iters as f64;
        let cpu_s = (thread_cpu_ns() - cpu) as f64 / 1e9;
        (
            flop / t.elapsed().as_secs_f64() / 1e9,
            if cpu_s > 0.0 { flop / cpu_s / 1e9 } else { 0.0 },
        )
    })
}

fn measure_gemm(device: Device, kind: Kind, secs: f64) -> anyhow::Result<Gemm> {
    let size = if device.is_cuda() { 8192 } else { 1024 };
    let (mut peak, mut peak_cpu) = (0.0f64, 0.0f64);
    for s in [512, size] {
        let (w, c) = gemm_rate(device, kind, s, s, s, secs / 3.0);
        peak = peak.max(w);
        peak_cpu = peak_cpu.max(c);
    }
    let small = gemm_rate(device, kind, 256, 64, 256, secs / 3.0).0;
    Ok(Gemm {
        size,
        peak,
        peak_cpu,
        small,
    })
}

// ---------------------------------------------------------------------------
// Synthetic readings

/// Every `SPIKE_DEVICE_EVERY`-th device spikes by `SPIKE` scaled units on
/// every channel for one batch in every `SPIKE_EVERY` batches.
const SPIKE_DEVICE_EVERY: usize = 100;
const SPIKE_EVERY: u64 = 20;
const SPIKE: f32 = 25.0;
/// Far above the random model's normal error (~1) and far below a spike's.
const THRESHOLD: f64 = 20.0;

/// Deterministic plant-like readings: per channel a base and a scale, a slow
/// sinusoid per device and channel, and hash noise.
struct Generator {
    ids: Vec<String>,
    channels: usize,
    horizon: u64,
}

impl Generator {
    fn new(devices: usize, channels: usize, horizon: usize) -> Self {
        Self {
            ids: (0..devices).map(|d| format!("plant-{d:05}")).collect(),
            channels,
            horizon: horizon as u64,
        }
    }

    fn base(c: usize) -> f32 {
        10.0 * (c + 1) as f32
    }

    fn scale(c: usize) -> f32 {
        1.0 + 0.5 * c as f32
    }

    fn scaler(&self) -> Scaler {
        Scaler {
            center: (0..self.channels).map(Self::base).collect(),
            scale: (0..self.channels).map(Self::scale).collect(),
            constant: vec![false; self.channels],
        }
    }

    fn schema(&self) -> Schema {
        Schema::new((0..self.channels).map(|c| format!("ch{c}")).collect())
    }

    fn spiking(&self, d: usize, tick: u64) -> bool {
        d.is_multiple_of(SPIKE_DEVICE_EVERY)
            && (tick / self.horizon + d as u64) % SPIKE_EVERY == SPIKE_EVERY - 1
    }

    fn value(&self, d: usize, c: usize, tick: u64) -> f32 {
        let phase = (d * 7 + c * 3) as f32 * 0.1;
        let slow = (tick as f32 * 0.05 + phase).sin();
        let mut z = (d as u64) << 40 ^ (c as u64) << 32 ^ tick;
        z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
        let noise = (z >> 11) as f32 / (1u64 << 53) as f32 * 2.0 - 1.0;
        let spike = if self.spiking(d, tick) { SPIKE } else { 0.0 };
        Self::base(c) + Self::scale(c) * (slow + 0.1 * noise + spike)
    }

    /// The array form of a reading message.
    fn encode(&self, buf: &mut String, d: usize, ts: i64, tick: u64) {
        buf.clear();
        let _ = write!(buf, r#"{{"device":"{}","ts":{ts},"values":["#, self.ids[d]);
        for c in 0..self.channels {
            if c > 0 {
                buf.push(',');
            }
            let _ = write!(buf, "{}", self.value(d, c, tick));
        }
        buf.push_str("]}");
    }
}

fn engine_config(args: &BenchArgs, sim: &Generator, state_len: usize) -> EngineConfig {
    EngineConfig {
        schema: sim.schema(),
        scaler: sim.scaler(),
        horizon: args.horizon,
        window: args.window,
        warmup: args.window,
        state_len,
        strategy: forewarn_core::threshold::ThresholdStrategy::Fixed {
            threshold: THRESHOLD,
        },
        detector: DetectorConfig {
            open_after: 1,
            resolve_after: 1,
            resolve_ratio: 0.8,
        },
        model: "bench".into(),
        model_version: "bench-random".into(),
        max_batch: args.max_batch,
    }
}

fn ingest_config(args: &BenchArgs, prefix: &str) -> IngestConfig {
    IngestConfig {
        brokers: args.brokers.clone(),
        group_id: format!("{prefix}.serve"),
        input_topic: format!("{prefix}.readings"),
        alerts_topic: format!("{prefix}.alerts"),
        dead_letter_topic: format!("{prefix}.dlq"),
        topic_partitions: args.partitions,
        client: args.client.iter().cloned().collect(),
        checkpoint_interval: args.checkpoint_interval,
        ..IngestConfig::default()
    }
}

// ---------------------------------------------------------------------------
// Producing

#[derive(Default)]
struct Deliveries {
    ok: AtomicU64,
    failed: AtomicU64,
}

struct CountDeliveries(Arc<Deliveries>);

impl ClientContext for CountDeliveries {}

impl ProducerContext for CountDeliveries {
    type DeliveryOpaque = ();
    fn delivery(&self, r: &DeliveryResult<'_>, _: ()) {
        match r {
            Ok(_) => self.0.ok.fetch_add(1, Ordering::Relaxed),
            Err(_) => self.0.failed.fetch_add(1, Ordering::Relaxed),
        };
    }
}

type BenchProducer = BaseProducer<CountDeliveries>;

fn producer(brokers: &str, linger_ms: u32) -> anyhow::Result<(BenchProducer, Arc<Deliveries>)> {
    let d = Arc::new(Deliveries::default());
    let p = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("linger.ms", linger_ms.to_string())
        .set("batch.num.messages", "10000")
        .set("batch.size", "1000000")
        .set("queue.buffering.max.messages", "1000000")
        .set("queue.buffering.max.kbytes", "1048576")
        .set("acks", "1")
        .create_with_context(CountDeliveries(d.clone()))?;
    Ok((p, d))
}

fn send(p: &BenchProducer, topic: &str, key: &str, payload: &str) -> anyhow::Result<()> {
    loop {
        match p.send(BaseRecord::to(topic).key(key).payload(payload)) {
            Ok(()) => return Ok(()),
            Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), _)) => {
                p.poll(Duration::from_millis(2))
            }
            Err((e, _)) => bail!("producing to {topic}: {e}"),
        }
    }
}

fn finish(p: &BenchProducer, d: &Deliveries, expected: u64) -> anyhow::Result<()> {
    p.flush(Duration::from_secs(300))?;
    let (ok, failed) = (
        d.ok.load(Ordering::Relaxed),
        d.failed.load(Ordering::Relaxed),
    );
    if failed > 0 || ok != expected {
        bail!("{failed} deliveries failed, {ok} of {expected} delivered");
    }
    Ok(())
}

/// Tick by tick (every device once per tick, 100 ms apart), like a plant bus.
fn preload(
    brokers: &str,
    topic: &str,
    sim: &Generator,
    ticks: u64,
    base_ts: i64,
) -> anyhow::Result<()> {
    let (p, d) = producer(brokers, 20)?;
    let mut buf = String::with_capacity(256);
    for tick in 0..ticks {
        for dev in 0..sim.ids.len() {
            sim.encode(&mut buf, dev, base_ts + 100 * tick as i64, tick);
            send(&p, topic, &sim.ids[dev], &buf)?;
        }
        p.poll(Duration::ZERO);
    }
    finish(&p, &d, ticks * sim.ids.len() as u64)
}

// ---------------------------------------------------------------------------
// The pipeline under test

#[derive(Default)]
struct Probe {
    calls: AtomicU64,
    devices: AtomicU64,
    nanos: AtomicU64,
    /// CPU time of the calling (engine) thread inside the forecaster.
    cpu_nanos: AtomicU64,
}

/// The shared model, timed per call.
struct Probed {
    model: Arc<Mutex<LstmForecaster>>,
    probe: Arc<Probe>,
}

fn lock(m: &Mutex<LstmForecaster>) -> std::sync::MutexGuard<'_, LstmForecaster> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
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

struct Pipeline {
    metrics: Arc<Metrics>,
    store: Arc<AlertStore>,
    probe: Arc<Probe>,
    shutdown: CancellationToken,
    thread: std::thread::JoinHandle<Result<(), forewarn_ingest::IngestError>>,
}

impl Pipeline {
    fn start(
        rt: &tokio::runtime::Runtime,
        cfg: IngestConfig,
        engine: EngineConfig,
        model: Arc<Mutex<LstmForecaster>>,
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
    fn done(&self) -> u64 {
        let m = &self.metrics;
        m.readings_accepted.get() + m.readings_duplicate.get() + m.dead_letters.get()
    }

    fn stop(self) -> anyhow::Result<()> {
        self.shutdown.cancel();
        match self.thread.join() {
            Ok(r) => r.context("pipeline"),
            Err(_) => bail!("the pipeline thread panicked"),
        }
    }
}

struct Throughput {
    secs: f64,
    calls: u64,
    forecaster_readings: u64,
    forecaster_secs: f64,
    forecaster_cpu_secs: f64,
    peak_rss: u64,
    alert_changes: u64,
    committed_ok: bool,
    cpu: String,
}

fn throughput_run(
    rt: &tokio::runtime::Runtime,
    cfg: IngestConfig,
    engine: EngineConfig,
    model: Arc<Mutex<LstmForecaster>>,
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
fn committed_at_end(cfg: &IngestConfig) -> anyhow::Result<bool> {
    let c: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", &cfg.brokers)
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

struct Latency {
    samples: usize,
    p50: f64,
    p99: f64,
    max: f64,
    /// Reading produced -> readable by a plain consumer (the broker's share).
    floor_p50: f64,
    floor_p99: f64,
    achieved_rate: f64,
    /// Mean ms from an alert's reading to each pipeline stage
    /// (`forewarn_alert_delay_seconds`: scored, stored, published).
    stage_means: Vec<(&'static str, f64)>,
}

#[allow(clippy::too_many_arguments)]
fn latency_run(
    rt: &tokio::runtime::Runtime,
    cfg: IngestConfig,
    engine: EngineConfig,
    model: Arc<Mutex<LstmForecaster>>,
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

    let (p, d) = producer(&cfg.brokers, linger_ms)?;
    let mut buf = String::with_capacity(256);
    // Prime: one reading per device, then wait until they are through, so
    // the group join is not in the measurement.
    let mut last_ts = now_ms();
    for dev in 0..devices {
        sim.encode(&mut buf, dev, last_ts, 0);
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
            sim.encode(&mut buf, dev, ts, tick);
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

type Samples = Arc<Mutex<Vec<(i64, f64)>>>;

/// (count, p50, p99, max) of the latencies whose event time is at or after `from_ms`.
fn quantiles(samples: &[(i64, f64)], from_ms: i64) -> Option<(usize, f64, f64, f64)> {
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
fn spawn_reader(
    cfg: &IngestConfig,
    topic: &str,
    partitions: std::ops::Range<i32>,
    name: &str,
    stop: Arc<AtomicBool>,
    samples: Samples,
    event_ts: fn(&[u8]) -> Option<i64>,
) -> anyhow::Result<std::thread::JoinHandle<()>> {
    let c: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", &cfg.brokers)
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
fn alert_ts(payload: &[u8]) -> Option<i64> {
    let v = serde_json::from_slice::<serde_json::Value>(payload).ok()?;
    match v["state"].as_str() {
        Some("resolved") => v["resolved_at"].as_i64(),
        _ => v["opened_at"].as_i64(),
    }
}

/// The `ts` of a reading in the array form the bench produces.
fn reading_ts(payload: &[u8]) -> Option<i64> {
    let s = std::str::from_utf8(payload).ok()?;
    let rest = &s[s.find("\"ts\":")? + 5..];
    rest[..rest.find(',')?].parse().ok()
}

fn lock_vec<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

// ---------------------------------------------------------------------------
// Forecaster alone

struct ForecasterOnly {
    readings_per_s: f64,
    /// Per CPU-second of the calling thread.
    readings_per_cpu_s: f64,
    secs_per_call: f64,
}

fn forecaster_only(
    model: &Mutex<LstmForecaster>,
    spec: &ModelSpec,
    n: usize,
    dur: Duration,
) -> anyhow::Result<ForecasterOnly> {
    let mut m = lock(model);
    let hc = spec.horizon * spec.channels;
    let mut b = StepBatch {
        n,
        horizon: spec.horizon,
        channels: spec.channels,
        state_len: spec.state_len(),
        inputs: (0..n * hc)
            .map(|i| ((i % 97) as f32 * 0.37).sin())
            .collect(),
        states: vec![0.0; n * spec.state_len()],
        predictions: vec![0.0; n * hc],
    };
    for _ in 0..3 {
        m.step(&mut b)?;
    }
    let t = Instant::now();
    let cpu = thread_cpu_ns();
    let mut calls = 0u64;
    while t.elapsed() < dur {
        m.step(&mut b)?;
        calls += 1;
    }
    sync(m.device());
    let secs = t.elapsed().as_secs_f64();
    let cpu_secs = (thread_cpu_ns() - cpu) as f64 / 1e9;
    Ok(ForecasterOnly {
        readings_per_s: (calls * (n * spec.horizon) as u64) as f64 / secs,
        readings_per_cpu_s: (calls * (n * spec.horizon) as u64) as f64 / cpu_secs.max(1e-9),
        secs_per_call: secs / calls as f64,
    })
}

// ---------------------------------------------------------------------------
// Memory

struct Memory {
    devices: usize,
    measured: f64,
    computed: usize,
}

/// Keeps states as they are and forecasts zeros: no libtorch, so the RSS
/// delta is the engine's alone.
struct Zeros(usize);

impl Forecaster for Zeros {
    type Error = std::convert::Infallible;
    fn state_len(&self) -> usize {
        self.0
    }
    fn step(&mut self, _: &mut StepBatch) -> Result<(), Self::Error> {
        Ok(())
    }
}

fn measure_bytes_per_device(cfg: &EngineConfig, devices: usize) -> Memory {
    let ids: Vec<String> = (0..devices).map(|d| format!("plant-{d:05}")).collect();
    // Readings at the scaler's centre, forecast exactly by `Zeros`: normal
    // devices, none in alarm (an open alert adds ~680 B to its device).
    let values = cfg.scaler.center.clone();
    let mut f = Zeros(cfg.state_len);
    let before = status_kib("VmRSS:");
    let mut engine = Engine::new(EngineConfig {
        warmup: 0,
        ..cfg.clone()
    });
    // Enough readings to fill every window and make a forecast for every
    // device, flushed as serve flushes (whenever a call's worth is queued).
    for ts in 0..cfg.window.max(cfg.horizon) as i64 {
        for id in &ids {
            // Borrowed, as serve's engine stage pushes decoded chunks.
            let _ = engine.push_ref(
                ReadingRef {
                    device: id,
                    ts_ms: ts,
                    values: &values,
                },
                0,
            );
            if engine.batch_full() {
                let _ = engine.flush(&mut f);
            }
        }
        let _ = engine.flush(&mut f);
    }
    let after = status_kib("VmRSS:");
    let measured = (after.saturating_sub(before) * 1024) as f64 / devices as f64;
    let computed = engine.bytes_per_device();
    drop(engine);
    Memory {
        devices,
        measured,
        computed,
    }
}

fn status_kib(field: &str) -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix(field))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        })
        .unwrap_or(0)
}

/// Resets VmHWM to the current RSS (Linux `clear_refs` 5).
fn reset_peak_rss() {
    let _ = std::fs::write("/proc/self/clear_refs", "5");
}

// ---------------------------------------------------------------------------
// CPU by thread (a cheap profile of where the time goes)

/// CPU clock ticks (utime + stime) per thread-name group of this process,
/// plus the broker process (`tansu`) and the whole machine.
fn cpu_by_thread() -> BTreeMap<String, u64> {
    let mut out = BTreeMap::new();
    let read = |path: &Path| -> Option<(String, u64)> {
        let s = std::fs::read_to_string(path).ok()?;
        let (open, close) = (s.find('(')?, s.rfind(')')?);
        let name = s[open + 1..close].to_string();
        let f: Vec<&str> = s[close + 2..].split_whitespace().collect();
        Some((
            name,
            f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?,
        ))
    };
    if let Ok(tasks) = std::fs::read_dir("/proc/self/task") {
        for t in tasks.flatten() {
            if let Some((name, ticks)) = read(&t.path().join("stat")) {
                let group = name
                    .trim_end_matches(|c: char| c.is_ascii_digit())
                    .to_string();
                *out.entry(group).or_insert(0) += ticks;
            }
        }
    }
    if let Ok(procs) = std::fs::read_dir("/proc") {
        for p in procs.flatten() {
            let comm = std::fs::read_to_string(p.path().join("comm")).unwrap_or_default();
            if comm.trim() == "tansu"
                && let Some((_, ticks)) = read(&p.path().join("stat"))
            {
                *out.entry("broker (tansu process)".into()).or_insert(0) += ticks;
            }
        }
    }
    if let Some(busy) = std::fs::read_to_string("/proc/stat").ok().and_then(|s| {
        let f: Vec<u64> = s
            .lines()
            .next()?
            .split_whitespace()
            .skip(1)
            .filter_map(|v| v.parse().ok())
            .collect();
        // user nice system idle iowait irq softirq steal
        Some(f.iter().take(8).sum::<u64>() - f.get(3)? - f.get(4)?)
    }) {
        out.insert("machine total".into(), busy);
    }
    out
}

fn cpu_delta(a: &BTreeMap<String, u64>, b: &BTreeMap<String, u64>) -> String {
    let hz = 100.0;
    let mut parts: Vec<(String, f64)> = b
        .iter()
        .map(|(k, v)| {
            (
                k.clone(),
                v.saturating_sub(a.get(k).copied().unwrap_or(0)) as f64 / hz,
            )
        })
        .filter(|(_, s)| *s >= 0.05)
        .collect();
    parts.sort_by(|x, y| y.1.total_cmp(&x.1));
    parts
        .iter()
        .map(|(k, s)| format!("{k} {s:.2}"))
        .collect::<Vec<_>>()
        .join(", ")
}

// ---------------------------------------------------------------------------
// The Python peer

fn run_peer(root: &Path, args: &BenchArgs, topic: &str, run_id: i64) -> anyhow::Result<f64> {
    let setup = Command::new("bash")
        .arg(root.join("benches/peer-setup.sh"))
        .current_dir(root)
        .status()?;
    if !setup.success() {
        bail!("benches/peer-setup.sh failed");
    }
    say(format!(
        "peer: Python consumer on {topic} for at most {} s",
        args.peer_seconds
    ));
    let py_path = root.join(".tools/peer");
    let out = Command::new("python3")
        .arg(root.join("benches/peer.py"))
        .args([
            "--brokers",
            &args.brokers,
            "--topic",
            topic,
            "--group",
            &format!("forewarn.bench.{run_id}.peer"),
        ])
        .args(["--seconds", &args.peer_seconds.to_string()])
        .args([
            "--channels",
            &args.channels.to_string(),
            "--hidden",
            &args.hidden.to_string(),
        ])
        .args([
            "--layers",
            &args.layers.to_string(),
            "--horizon",
            &args.horizon.to_string(),
        ])
        .args(["--window", &args.window.to_string()])
        .env("PYTHONPATH", py_path)
        .stderr(std::process::Stdio::inherit())
        .output()
        .context("running python3 benches/peer.py")?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        bail!("the peer failed ({}): {stdout}", out.status);
    }
    stdout
        .lines()
        .rev()
        .find_map(|l| l.strip_prefix("peer_readings_per_s="))
        .and_then(|v| v.trim().parse().ok())
        .with_context(|| format!("the peer printed no rate: {stdout}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flops_per_reading_for_the_default_shape() {
        let spec = ModelSpec {
            channels: 8,
            hidden: 64,
            layers: 2,
            horizon: 10,
        };
        let f = flops_per_reading(&spec, Highway::None);
        // Layer 0: 2*256*(8+64) = 36864; layer 1: 2*256*128 = 65536.
        assert_eq!(f.lstm, 102_400.0);
        // Head: 2*64*80 per batch of 10 readings.
        assert_eq!(f.head, 1024.0);
        // The highway adds [80 x 8] x [8] per batch: 2*8*80 / 10 = 128.
        assert_eq!(flops_per_reading(&spec, Highway::Cross).head, 1152.0);
    }

    #[test]
    fn generated_messages_decode_and_spikes_are_rare() {
        let g = Generator::new(200, 8, 10);
        let mut buf = String::new();
        g.encode(&mut buf, 3, 1_000, 7);
        let r = forewarn_core::decode_reading(buf.as_bytes(), Some(b"plant-00003"), &g.schema())
            .unwrap();
        assert_eq!((r.ts_ms, r.values.len()), (1_000, 8));
        assert_eq!(reading_ts(buf.as_bytes()), Some(1_000));
        let spikes = (0..200)
            .flat_map(|d| (0..2000).map(move |t| (d, t)))
            .filter(|(d, t)| g.spiking(*d, *t))
            .count();
        // 2 of 200 devices, one batch of 10 in 20.
        assert_eq!(spikes, 2 * 2000 / 20);
    }
}
