//! `forewarn bench`'s arguments.

use std::path::PathBuf;
use std::time::Duration;

use forewarn_model::{Highway, Precision};

#[derive(clap::Args, Debug, Clone)]
pub struct BenchArgs {
    /// Kafka bootstrap servers; a local broker is started (scripts/broker.sh) when none listens.
    #[arg(long, default_value = "127.0.0.1:9092")]
    pub(crate) brokers: String,
    /// Devices in the preloaded topic.
    #[arg(long, default_value_t = 1000)]
    pub(crate) devices: usize,
    /// Readings preloaded (rounded up to a whole number per device).
    #[arg(long, default_value_t = 2_000_000)]
    pub(crate) readings: usize,
    #[arg(long, default_value_t = 8)]
    pub(crate) channels: usize,
    #[arg(long, default_value_t = 64)]
    pub(crate) hidden: usize,
    #[arg(long, default_value_t = 2)]
    pub(crate) layers: usize,
    /// Readings per forecast batch.
    #[arg(long, default_value_t = 10)]
    pub(crate) horizon: usize,
    /// The forecaster's linear highway: none, full or cross (what `forewarn
    /// train` builds by default).
    #[arg(long, value_enum, default_value_t = forewarn_offline::ModelSection::default().highway())]
    pub(crate) highway: Highway,
    /// Readings kept per device.
    #[arg(long, default_value_t = 50)]
    pub(crate) window: usize,
    /// Most devices per forecaster call (pipeline.max_batch).
    #[arg(long, default_value_t = 256)]
    pub(crate) max_batch: usize,
    /// libtorch intra-op threads; 0 = what serve picks (cores / 2, at least 1).
    #[arg(long, default_value_t = 0)]
    pub(crate) threads: usize,
    /// auto, cpu, cuda or cuda:N.
    #[arg(long, default_value = "auto")]
    pub(crate) device: String,
    /// Inference precision (serve's model.precision): f32, or bf16 for the
    /// LSTM; the roofline is then the bf16 GEMM rate.
    #[arg(long, default_value_t = Precision::F32)]
    pub(crate) precision: Precision,
    /// Partitions of the benchmark topics.
    #[arg(long, default_value_t = 8)]
    pub(crate) partitions: i32,
    /// Most seconds the Python peer runs.
    #[arg(long, default_value_t = 60)]
    pub(crate) peer_seconds: u64,
    #[arg(long)]
    pub(crate) skip_peer: bool,
    /// Seconds of paced load in the latency run.
    #[arg(long, default_value_t = 20)]
    pub(crate) latency_seconds: u64,
    #[arg(long)]
    pub(crate) skip_latency: bool,
    /// Readings/s offered in the latency run [default: half the measured
    /// end-to-end rate, the "half load"].
    #[arg(long)]
    pub(crate) latency_rate: Option<f64>,
    /// linger.ms of the latency run's producer (the plant gateway): how long
    /// it may hold a reading to batch it. Counted in the latency, since a
    /// reading's time is taken before it is handed to the producer.
    #[arg(long, default_value_t = 1)]
    pub(crate) latency_linger_ms: u32,
    /// Only the forecaster with synthetic batches (no broker): the GPU target.
    #[arg(long)]
    pub(crate) forecaster_only: bool,
    /// Seconds of the forecaster-only measurement.
    #[arg(long, default_value_t = 5)]
    pub(crate) forecaster_seconds: u64,
    /// Devices per call in the forecaster-only measurement (default: max_batch).
    #[arg(long)]
    pub(crate) forecaster_batch: Option<usize>,
    /// Extra librdkafka properties for every client of the run (kafka.client),
    /// e.g. `--client fetch.wait.max.ms=100`, or connection security
    /// (`--client security.protocol=SASL_SSL --client sasl.password_file=...`);
    /// repeatable. `FOREWARN_KAFKA__CLIENT__*` variables apply too; a flag wins.
    #[arg(long, value_parser = parse_key_value)]
    pub(crate) client: Vec<(String, String)>,
    /// Device-state checkpoint interval of the pipelines (kafka.checkpoint_interval;
    /// 0 turns checkpoints off). Default: what `serve` uses.
    #[arg(long, default_value = "5s", value_parser = humantime::parse_duration)]
    pub(crate) checkpoint_interval: Duration,
    /// Where alert stores of the runs go.
    #[arg(long, default_value = ".run/bench")]
    pub(crate) work_dir: PathBuf,
}

impl BenchArgs {
    /// These arguments with `defaults` (e.g. from the environment) before
    /// the `--client` flags, which win.
    pub fn with_client_defaults(mut self, defaults: Vec<(String, String)>) -> Self {
        let flags = std::mem::take(&mut self.client);
        self.client = defaults.into_iter().chain(flags).collect();
        self
    }
}

pub(crate) fn parse_key_value(s: &str) -> Result<(String, String), String> {
    s.split_once('=')
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .ok_or_else(|| format!("expected key=value, got {s:?}"))
}
