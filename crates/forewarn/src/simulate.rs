//! `forewarn simulate`: streams simulated plant readings (and optionally a
//! replayed CSV / Tennessee Eastman file as one more device) to Kafka, or as
//! JSON lines to stdout with `--print`.
//!
//! Every device publishes one reading per sampling period of simulated time
//! (`--period`); `--rate` decides how fast simulated time runs against the
//! wall clock (default: real time). Message keys are device ids, so a device
//! always lands in the same partition.

use std::io::Write;
use std::path::PathBuf;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use anyhow::{Context, bail};
use forewarn_core::reading::{ObjectKeys, encode_object, encode_reading};
use forewarn_data::Separator;
use forewarn_ingest::IngestConfig;
use forewarn_simulator::{
    Fault, GridFault, GridSize, Origin, Pace, PlantConfig, ReplayOptions, Replayed, Source, Stream,
    parse_duration_ms, write_csv, write_grid_csv,
};
use rdkafka::client::ClientContext;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::DeliveryResult;
use rdkafka::producer::{BaseRecord, Producer, ProducerContext, ThreadedProducer};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// How often a progress line is logged.
const PROGRESS_EVERY: Duration = Duration::from_secs(5);
/// Bound on the final flush to Kafka.
const FLUSH_TIMEOUT: Duration = Duration::from_secs(30);

/// Message form on the wire (both are accepted by the service).
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// `{"device":"plant-0000","ts":1764331200250,"values":[1.92,31.8]}`
    Array,
    /// `{"device":"plant-0000","ts":"2026-11-28T12:00:00.250Z","values":{"flow":31.8}}`
    Object,
}

fn parse_key_value(s: &str) -> Result<(String, String), String> {
    s.split_once('=')
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .ok_or_else(|| format!("expected KEY=VALUE, got {s:?}"))
}

/// Simulate a plant (and/or replay a recorded file) and publish its readings.
#[derive(clap::Args, Debug)]
pub struct SimulateArgs {
    /// Kafka bootstrap servers.
    #[arg(long, env = "FOREWARN_BROKERS", default_value = "127.0.0.1:9092")]
    pub brokers: String,
    /// Topic to publish readings to (key = device id).
    #[arg(long, default_value = "forewarn.readings")]
    pub topic: String,
    /// A librdkafka property for the producer, as serve's `kafka.client`
    /// takes it (connection security: `security.protocol=SASL_SSL`,
    /// `sasl.password_file=/run/secrets/kafka-password`, ...); repeatable.
    /// `FOREWARN_KAFKA__CLIENT__*` variables apply too; a flag wins.
    #[arg(long = "client", value_name = "KEY=VALUE", value_parser = parse_key_value)]
    pub client: Vec<(String, String)>,
    /// Number of simulated devices (plant-0000, plant-0001, ...; plate-0000, ...
    /// with --grid); 0 with --replay streams the replay alone.
    #[arg(long, default_value_t = 5)]
    pub devices: usize,
    /// Channel names, comma-separated [default: inlet_pressure, outlet_pressure,
    /// flow, motor_current, bearing_temp, vibration_rms, valve_position, tank_level].
    #[arg(long, value_delimiter = ',')]
    pub channels: Option<Vec<String>>,
    /// Sampling period in simulated time (500ms, 1s, 3m, ...).
    #[arg(long = "period", value_name = "DURATION", default_value = "1s", value_parser = parse_period)]
    pub period_ms: i64,
    /// Readings per second of wall time across all devices; 0 = as fast as
    /// possible [default: real time, i.e. devices / period].
    #[arg(long, value_parser = parse_rate)]
    pub rate: Option<f64>,
    /// How much simulated time to produce (10m, 2h, ...) [default: until stopped].
    #[arg(long = "duration", value_name = "DURATION", value_parser = parse_duration_arg, conflicts_with = "count")]
    pub duration_ms: Option<i64>,
    /// Readings per device to produce, instead of --duration.
    #[arg(long)]
    pub count: Option<u64>,
    /// Simulated time of the first reading, RFC 3339 [default: now].
    #[arg(long, value_name = "RFC3339", value_parser = parse_start)]
    pub start: Option<i64>,
    /// Seed of the simulation (same seed, same readings).
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Measurement noise as a fraction of each channel's normal spread, 0..1 (--grid: sd in °C).
    #[arg(long, default_value_t = 0.2)]
    pub noise: f64,
    /// Amplitude of the 24 h cycle of load and ambient temperature, in sd.
    #[arg(long, default_value_t = 0.5)]
    pub daily_drift: f64,
    /// Inject a fault (repeatable): DEVICE:CHANNEL:KIND[:ARGS]@START[+DURATION],
    /// e.g. plant-0001:flow:step:6@120s+300s, plant-0003:bearing_temp:drift:3@10m,
    /// plant-0002:valve_position:stuck@1h, plant-0000:vibration_rms:oscillation:4:30s@5m,
    /// plant-0004:outlet_pressure:spike:8@90s. Sizes are in normal standard deviations.
    #[arg(long = "fault", value_name = "SPEC")]
    pub faults: Vec<Fault>,
    /// Simulate plates of temperature sensors on a ROWSxCOLS grid (e.g. 8x8), heated by
    /// 2-4 scheduled heaters, instead of the plant. Channels: cell_r{R}_c{C} row-major (°C),
    /// then heater_{K} (commanded power in %, context channels).
    #[arg(long, value_name = "ROWSxCOLS", conflicts_with_all = ["channels", "faults"])]
    pub grid: Option<GridSize>,
    /// A plate fault (repeatable): DEVICE:KIND@START[+DURATION]:ROW,COL (from 0), e.g.
    /// plate-0001:hotspot@10m+20m:3,4 (growing hot spot), plate-0000:dead@1h:0,7 (reads a
    /// constant), plate-0002:leak@30m+1h:5,5 (spreading cold leak), plate-0003:heater_stuck@2h:h1
    /// (heater 1, or its ROW,COL, stuck while its channel reports the command).
    #[arg(long = "grid-fault", value_name = "SPEC", requires = "grid")]
    pub grid_faults: Vec<GridFault>,
    /// With --grid and --csv-dir, an evaluation set: 2 x --count readings per plate, the first
    /// half in DIR/train/ without faults, the second in DIR/test/ with K faults per plate (every
    /// kind in turn, at cells and times from the seed), e.g. --grid 8x8 --devices 4 --period 10s
    /// --count 4320 --grid-faults-random 4 --csv-dir plates.
    #[arg(long, value_name = "K", requires_all = ["grid", "csv_dir"])]
    pub grid_faults_random: Option<usize>,
    /// Stream a CSV or Tennessee Eastman .dat file as one more device.
    #[arg(long, value_name = "PATH")]
    pub replay: Option<PathBuf>,
    /// Device id of the replayed file [default: the file name without extension].
    #[arg(long, requires = "replay")]
    pub replay_device: Option<String>,
    /// Field separator of the replay file: one character, 'tab' or 'whitespace'
    /// [default: whitespace for .dat, else guessed from the first line].
    #[arg(long, value_name = "SEP", requires = "replay")]
    pub replay_sep: Option<Separator>,
    /// Time column of the replay file (as every command reads times: epoch
    /// seconds below 1e11, else milliseconds, or RFC 3339) [default: a column
    /// named ts, time, timestamp or datetime, if any].
    #[arg(long, value_name = "NAME", requires = "replay")]
    pub replay_time_column: Option<String>,
    /// Columns of the replay file that are not channels (e.g. a label
    /// column), comma-separated.
    #[arg(long, value_name = "NAMES", requires = "replay", value_delimiter = ',')]
    pub replay_ignore_columns: Vec<String>,
    /// Ignore the replay file's timestamps: re-time its rows from --start every
    /// --replay-period.
    #[arg(long, requires = "replay")]
    pub replay_retime: bool,
    /// Period between replayed rows when re-timed [default: --period].
    #[arg(long, value_name = "DURATION", requires = "replay", value_parser = parse_period)]
    pub replay_period: Option<i64>,
    /// Message form.
    #[arg(long, value_enum, default_value_t = Format::Array)]
    pub format: Format,
    /// Write JSON lines to stdout instead of publishing to Kafka.
    #[arg(long)]
    pub print: bool,
    /// Write one CSV file per simulated device into this directory (`ts,<channels>`, ts in
    /// epoch ms; with --fault also `anomaly`, 1 while a fault acts on that device; with --grid
    /// `anomaly`, `fault_row`, `fault_col`: the acting fault's cell, -1 without one) as fast as
    /// possible, instead of producing to Kafka: training and evaluation data.
    #[arg(long, value_name = "DIR", conflicts_with_all = ["print", "replay"])]
    pub csv_dir: Option<PathBuf>,
}

fn parse_duration_arg(s: &str) -> Result<i64, String> {
    parse_duration_ms(s).map_err(|e| e.to_string())
}

fn parse_period(s: &str) -> Result<i64, String> {
    match parse_duration_ms(s) {
        Ok(ms) if ms > 0 => Ok(ms),
        Ok(_) => Err("the period must be positive".into()),
        Err(e) => Err(e.to_string()),
    }
}

fn parse_rate(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(r) if r.is_finite() && r >= 0.0 => Ok(r),
        _ => Err(format!(
            "{s:?} is not a rate: readings per second, ≥ 0 (0 = unpaced)"
        )),
    }
}

fn parse_start(s: &str) -> Result<i64, String> {
    chrono::DateTime::parse_from_rfc3339(s)
        .map(|t| t.timestamp_millis())
        .map_err(|e| format!("{s:?} is not an RFC 3339 time (e.g. 2026-11-28T12:00:00Z): {e}"))
}

/// Runs the simulator until the requested amount is produced or `shutdown`
/// is cancelled; flushes what was produced before returning.
pub async fn run(args: SimulateArgs, shutdown: CancellationToken) -> anyhow::Result<()> {
    if let Some(dir) = &args.csv_dir {
        let dir = dir.clone();
        return tokio::task::spawn_blocking(move || export_csv(&args, &dir)).await?;
    }
    let sink = if args.print {
        Sink::Print(Box::new(std::io::BufWriter::with_capacity(
            1 << 16,
            std::io::stdout(),
        )))
    } else {
        let kafka = IngestConfig {
            brokers: args.brokers.clone(),
            client: args.client.iter().cloned().collect(),
            ..IngestConfig::default()
        };
        kafka
            .validate()
            .map_err(|e| anyhow::anyhow!("invalid --client: {e}"))?;
        Sink::Kafka(KafkaSink::connect(&kafka, &args.topic).await?)
    };
    run_with_sink(args, shutdown, sink).await
}

/// Writes `DIR/<device>.csv` for every simulated device; with --grid-faults-random
/// one run into `DIR/train/` (no faults), then `DIR/test/` (the faults).
pub fn export_csv(args: &SimulateArgs, dir: &std::path::Path) -> anyhow::Result<()> {
    let start_ms = args.start.unwrap_or(forewarn_simulator::DEFAULT_START_MS);
    let ticks = match (args.count, args.duration_ms) {
        (Some(n), _) => n,
        (None, Some(d)) => (d / args.period_ms).max(0) as u64,
        (None, None) => anyhow::bail!("--csv-dir needs --count or --duration"),
    };
    let mut devices = source(args, start_ms)?;
    let ids = devices.device_ids();
    match (&mut devices, args.grid_faults_random) {
        (Source::Plant(p), _) => write_files(dir, &ids, |f| write_csv(p, ticks, f)),
        (Source::Grid(g), None) => write_files(dir, &ids, |f| write_grid_csv(g, ticks, f)),
        (Source::Grid(g), Some(k)) => {
            let span_ms = (ticks as i64).saturating_mul(args.period_ms);
            g.add_random_faults(k, span_ms, span_ms)?;
            write_files(&dir.join("train"), &ids, |f| write_grid_csv(g, ticks, f))?;
            write_files(&dir.join("test"), &ids, |f| write_grid_csv(g, ticks, f))
        }
    }
}

/// Creates `dir/<id>.csv` for every id, fills them with `write`, flushes.
fn write_files(
    dir: &std::path::Path,
    ids: &[String],
    write: impl FnOnce(&mut [std::io::BufWriter<std::fs::File>]) -> std::io::Result<()>,
) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let create = |id: &String| {
        let path = dir.join(format!("{id}.csv"));
        let file = std::fs::File::create(&path);
        file.map(std::io::BufWriter::new)
            .with_context(|| format!("creating {}", path.display()))
    };
    let mut files = ids.iter().map(create).collect::<anyhow::Result<Vec<_>>>()?;
    write(&mut files).with_context(|| format!("writing into {}", dir.display()))?;
    files.iter_mut().try_for_each(Write::flush)?;
    tracing::info!(devices = ids.len(), dir = %dir.display(), "wrote CSV files");
    Ok(())
}

/// The simulated devices: plates with --grid, else the plant.
fn source(args: &SimulateArgs, start_ms: i64) -> anyhow::Result<Source> {
    let mut cfg = PlantConfig {
        devices: args.devices,
        period_ms: args.period_ms,
        start_ms,
        seed: args.seed,
        noise: args.noise,
        daily_drift: args.daily_drift,
        ..PlantConfig::default()
    };
    if let Some(ch) = &args.channels {
        cfg.channels = ch.iter().map(|c| c.trim().to_owned()).collect();
    }
    let faults = (args.faults.clone(), args.grid_faults.clone());
    Ok(Source::new(cfg, args.grid, faults.0, faults.1)?)
}

async fn run_with_sink(
    args: SimulateArgs,
    shutdown: CancellationToken,
    mut sink: Sink,
) -> anyhow::Result<()> {
    let start_ms = args.start.unwrap_or_else(|| {
        let now = chrono::Utc::now().timestamp_millis();
        now - now.rem_euclid(1_000)
    });
    let devices = source(&args, start_ms)?;
    let replay = match &args.replay {
        None => None,
        Some(path) => {
            let opts = ReplayOptions {
                separator: args.replay_sep,
                time_column: args.replay_time_column.clone(),
                ignore_columns: args.replay_ignore_columns.clone(),
                retime: args.replay_retime,
                start_ms,
                period_ms: args.replay_period.unwrap_or(args.period_ms),
            };
            Some(Replayed::open(path, &opts, args.replay_device.clone())?)
        }
    };
    // How many ticks (readings per device) to produce.
    let ticks: Option<u64> = match (args.count, args.duration_ms) {
        (Some(n), _) => Some(n),
        (None, Some(d)) => Some((d.max(0) as u64).div_ceil(args.period_ms as u64)),
        (None, None) => None,
    };
    let mut stream = Stream::new(devices, replay, ticks)?;
    let plant_keys = ObjectKeys::new(stream.source().channels());
    let replay_keys = (stream.replay()).map(|r| ObjectKeys::new(r.data.channels()));

    let pace = Pace::new(args.rate, args.period_ms);
    let source = stream.source();
    tracing::info!(
        devices = args.devices,
        channels = source.channels().len(),
        period_ms = args.period_ms,
        start = %fmt_ts(start_ms),
        ticks = ?stream.ticks(),
        pace = ?pace,
        faults = ?source.faults(),
        replay = ?stream.replay().map(|r| format!("{} as {} ({} rows, {} channels)", r.data.source(), r.id, r.data.len(), r.data.channels().len())),
        sink = %sink.describe(),
        format = ?args.format,
        "simulating"
    );

    let t0 = Instant::now();
    let mut due_s = 0f64;
    let mut sent = 0u64;
    let mut last_progress = (t0, 0u64);
    let mut buf = Vec::with_capacity(1024);
    let mut stopped = false;
    let mut last_ts = start_ms;

    'ticks: loop {
        if shutdown.is_cancelled() {
            stopped = true;
            break;
        }
        let Some(tick) = stream.next_tick() else {
            break;
        };
        let step_s = pace.step_s(tick.len());
        last_ts = tick.ts_ms();
        for (device, ts_ms, values, origin) in tick.readings() {
            // Pacing: reading n is due at t0 + Σ steps.
            if step_s > 0.0 {
                let due = t0 + Duration::from_secs_f64(due_s);
                due_s += step_s;
                if due > Instant::now() + Duration::from_millis(1) {
                    sink.idle()?;
                    tokio::select! {
                        () = shutdown.cancelled() => { stopped = true; break 'ticks; }
                        () = tokio::time::sleep_until(due) => {}
                    }
                }
            }
            let array;
            let payload: &[u8] = match args.format {
                Format::Array => {
                    array = encode_reading(device, ts_ms, values);
                    &array
                }
                Format::Object => {
                    let keys = match origin {
                        Origin::Plant => &plant_keys,
                        Origin::Replay => replay_keys.as_ref().unwrap_or(&plant_keys),
                    };
                    encode_object(&mut buf, device, ts_ms, keys, values);
                    &buf
                }
            };
            match sink.send(device, payload, &shutdown).await? {
                Sent::Yes => sent += 1,
                Sent::Stopped => {
                    stopped = true;
                    break 'ticks;
                }
            }
            if sent.is_multiple_of(1024) || step_s > 0.0 {
                let now = Instant::now();
                if now - last_progress.0 >= PROGRESS_EVERY {
                    let rate =
                        (sent - last_progress.1) as f64 / (now - last_progress.0).as_secs_f64();
                    sink.progress(sent, rate, ts_ms);
                    last_progress = (now, sent);
                }
                if step_s == 0.0 {
                    // Unpaced: let the runtime breathe and see a shutdown.
                    tokio::task::yield_now().await;
                }
            }
        }
    }

    let elapsed = t0.elapsed().as_secs_f64();
    let outcome = sink.finish().await;
    tracing::info!(
        sent,
        ticks = stream.produced(),
        seconds = format!("{elapsed:.1}"),
        rate = format!("{:.0}", sent as f64 / elapsed.max(1e-9)),
        last = %fmt_ts(last_ts),
        stopped_early = stopped,
        "simulation finished"
    );
    outcome
}

fn fmt_ts(ts_ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ts_ms)
        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true))
        .unwrap_or_else(|| ts_ms.to_string())
}

enum Sent {
    Yes,
    Stopped,
}

enum Sink {
    Print(Box<dyn Write + Send>),
    Kafka(KafkaSink),
}

impl Sink {
    fn describe(&self) -> String {
        match self {
            Sink::Print(_) => "stdout".to_owned(),
            Sink::Kafka(k) => format!("kafka {} topic {}", k.brokers, k.topic),
        }
    }

    /// Called before pacing sleeps: make what was written visible.
    fn idle(&mut self) -> anyhow::Result<()> {
        if let Sink::Print(out) = self {
            match out.flush() {
                Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => {}
                other => other.context("writing to stdout")?,
            }
        }
        Ok(())
    }

    async fn send(
        &mut self,
        key: &str,
        payload: &[u8],
        shutdown: &CancellationToken,
    ) -> anyhow::Result<Sent> {
        match self {
            Sink::Print(out) => {
                let written = out.write_all(payload).and_then(|()| out.write_all(b"\n"));
                match written {
                    Ok(()) => Ok(Sent::Yes),
                    // The reader went away (`| head`): stop quietly.
                    Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(Sent::Stopped),
                    Err(e) => Err(e).context("writing to stdout"),
                }
            }
            Sink::Kafka(k) => k.send(key, payload, shutdown).await,
        }
    }

    fn progress(&self, sent: u64, rate: f64, ts_ms: i64) {
        match self {
            Sink::Print(_) => tracing::info!(
                sent,
                rate = format!("{rate:.0}/s"),
                sim_time = %fmt_ts(ts_ms),
                "simulate progress"
            ),
            Sink::Kafka(k) => {
                let ctx = k.producer.context();
                tracing::info!(
                    sent,
                    delivered = ctx.delivered.load(Ordering::Relaxed),
                    failed = ctx.failed.load(Ordering::Relaxed),
                    rate = format!("{rate:.0}/s"),
                    sim_time = %fmt_ts(ts_ms),
                    "simulate progress"
                );
            }
        }
    }

    async fn finish(self) -> anyhow::Result<()> {
        match self {
            Sink::Print(mut out) => match out.flush() {
                Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
                other => other.context("writing to stdout"),
            },
            Sink::Kafka(k) => k.finish().await,
        }
    }
}

/// Counts deliveries reported by librdkafka.
#[derive(Default)]
struct DeliveryCounter {
    delivered: AtomicU64,
    failed: AtomicU64,
    first_error: Mutex<Option<String>>,
}

impl ClientContext for DeliveryCounter {}

impl ProducerContext for DeliveryCounter {
    type DeliveryOpaque = ();

    fn delivery(&self, result: &DeliveryResult<'_>, _: ()) {
        match result {
            Ok(_) => {
                self.delivered.fetch_add(1, Ordering::Relaxed);
            }
            Err((e, _)) => {
                if self.failed.fetch_add(1, Ordering::Relaxed) == 0 {
                    tracing::warn!(error = %e, "a reading was not delivered");
                    if let Ok(mut first) = self.first_error.lock() {
                        first.get_or_insert_with(|| e.to_string());
                    }
                }
            }
        }
    }
}

struct KafkaSink {
    producer: ThreadedProducer<DeliveryCounter>,
    brokers: String,
    topic: String,
}

impl KafkaSink {
    async fn connect(kafka: &IngestConfig, topic: &str) -> anyhow::Result<Self> {
        let brokers = &kafka.brokers;
        let producer: ThreadedProducer<DeliveryCounter> = forewarn_ingest::client_config(kafka)?
            .set("client.id", "forewarn-simulate")
            .set("acks", "all")
            .set("linger.ms", "5")
            .set("compression.type", "none")
            .set("queue.buffering.max.messages", "500000")
            .set("message.timeout.ms", "60000")
            .create_with_context(DeliveryCounter::default())
            .with_context(|| format!("creating a Kafka producer for {brokers}"))?;
        // Fail fast with a clear message when the brokers are unreachable.
        let probe = producer.clone();
        let topic_owned = topic.to_owned();
        let metadata = tokio::task::spawn_blocking(move || {
            probe
                .client()
                .fetch_metadata(Some(&topic_owned), Duration::from_secs(10))
        })
        .await
        .context("metadata task")?
        .with_context(|| format!("cannot reach Kafka at {brokers}"))?;
        if let Some(t) = metadata.topics().iter().find(|t| t.name() == topic)
            && let Some(err) = t.error()
        {
            tracing::warn!(topic, error = ?err, "topic metadata reports an error; readings may not be delivered");
        }
        Ok(Self {
            producer,
            brokers: brokers.to_owned(),
            topic: topic.to_owned(),
        })
    }

    async fn send(
        &mut self,
        key: &str,
        payload: &[u8],
        shutdown: &CancellationToken,
    ) -> anyhow::Result<Sent> {
        loop {
            let record = BaseRecord::to(&self.topic).key(key).payload(payload);
            match self.producer.send(record) {
                Ok(()) => return Ok(Sent::Yes),
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), _)) => {
                    // The local queue is full: wait for deliveries to drain it.
                    tokio::select! {
                        () = shutdown.cancelled() => return Ok(Sent::Stopped),
                        () = tokio::time::sleep(Duration::from_millis(2)) => {}
                    }
                }
                Err((e, _)) => {
                    return Err(e).with_context(|| format!("producing to topic {}", self.topic));
                }
            }
        }
    }

    async fn finish(self) -> anyhow::Result<()> {
        let producer = self.producer.clone();
        let flushed = tokio::task::spawn_blocking(move || producer.flush(FLUSH_TIMEOUT))
            .await
            .context("flush task")?;
        let ctx = self.producer.context();
        let delivered = ctx.delivered.load(Ordering::Relaxed);
        let failed = ctx.failed.load(Ordering::Relaxed);
        if let Err(e) = flushed {
            bail!(
                "flushing to Kafka at {} failed after {FLUSH_TIMEOUT:?}: {e} ({} readings still in flight, {delivered} delivered, {failed} failed)",
                self.brokers,
                self.producer.in_flight_count()
            );
        }
        if failed > 0 {
            let first = ctx
                .first_error
                .lock()
                .ok()
                .and_then(|e| e.clone())
                .unwrap_or_default();
            bail!(
                "{failed} readings were not delivered to topic {} ({delivered} were); first error: {first}",
                self.topic
            );
        }
        tracing::info!(delivered, topic = %self.topic, "flushed to Kafka");
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;
    use forewarn_core::reading::{Schema, decode_reading};
    use forewarn_simulator::{DEFAULT_CHANNELS, Grid, GridConfig};
    use std::sync::Arc;

    #[derive(clap::Parser, Debug)]
    struct Cli {
        #[command(flatten)]
        args: SimulateArgs,
    }

    fn parse(args: &[&str]) -> Result<SimulateArgs, clap::Error> {
        Cli::try_parse_from(std::iter::once("simulate").chain(args.iter().copied())).map(|c| c.args)
    }

    #[test]
    fn defaults() {
        let a = parse(&[]).unwrap();
        if std::env::var_os("FOREWARN_BROKERS").is_none() {
            assert_eq!(a.brokers, "127.0.0.1:9092");
        }
        assert_eq!(a.topic, "forewarn.readings");
        assert_eq!(a.devices, 5);
        assert_eq!(a.channels, None);
        assert_eq!(a.period_ms, 1_000);
        assert_eq!(a.rate, None);
        assert_eq!(a.duration_ms, None);
        assert_eq!(a.count, None);
        assert_eq!(a.start, None);
        assert!(a.faults.is_empty());
        assert_eq!(a.format, Format::Array);
        assert!(!a.print);
    }

    #[test]
    fn every_flag_parses() {
        let a = parse(&[
            "--brokers",
            "k1:9092,k2:9092",
            "--topic",
            "t",
            "--devices",
            "12",
            "--channels",
            "a,b,c",
            "--period",
            "250ms",
            "--rate",
            "0",
            "--duration",
            "1h30m",
            "--start",
            "2026-11-28T12:00:00.250Z",
            "--seed",
            "9",
            "--fault",
            "plant-0001:a:step:6@120s+300s",
            "--fault",
            "plant-0003:b:drift:3@10m",
            "--replay",
            "x.dat",
            "--replay-device",
            "tep-01",
            "--replay-sep",
            "tab",
            "--replay-time-column",
            "when",
            "--replay-retime",
            "--replay-period",
            "3m",
            "--format",
            "object",
            "--print",
        ])
        .unwrap();
        assert_eq!(a.brokers, "k1:9092,k2:9092");
        assert_eq!(a.topic, "t");
        assert_eq!(a.devices, 12);
        assert_eq!(
            a.channels.as_deref(),
            Some(&["a".to_owned(), "b".into(), "c".into()][..])
        );
        assert_eq!(a.period_ms, 250);
        assert_eq!(a.rate, Some(0.0));
        assert_eq!(a.duration_ms, Some(5_400_000));
        assert_eq!(a.start, Some(1_795_867_200_250));
        assert_eq!(a.seed, 9);
        assert_eq!(a.faults.len(), 2);
        assert_eq!(a.faults[0].to_string(), "plant-0001:a:step:6@2m+5m");
        assert_eq!(a.replay, Some(PathBuf::from("x.dat")));
        assert_eq!(a.replay_device.as_deref(), Some("tep-01"));
        assert_eq!(a.replay_sep, Some(Separator::Char(b'\t')));
        assert_eq!(a.replay_time_column.as_deref(), Some("when"));
        assert!(a.replay_retime);
        assert_eq!(a.replay_period, Some(180_000));
        assert_eq!(a.format, Format::Object);
        assert!(a.print);
        assert_eq!(parse(&["--count", "100"]).unwrap().count, Some(100));
    }

    #[test]
    fn bad_arguments_are_refused_with_a_reason() {
        let cases: &[(&[&str], &str)] = &[
            (&["--period", "0s"], "must be positive"),
            (&["--period", "10"], "missing unit"),
            (&["--duration", "ten minutes"], "invalid duration"),
            (&["--duration", "1m", "--count", "5"], "cannot be used with"),
            (&["--rate=-1"], "not a rate"),
            (&["--rate", "fast"], "not a rate"),
            (&["--start", "yesterday"], "RFC 3339"),
            (
                &["--fault", "plant-0001:flow:jump:3@1s"],
                "unknown fault kind",
            ),
            (&["--fault", "plant-0001:flow:step:3"], "missing '@START'"),
            (&["--replay-device", "x"], "--replay"),
            (
                &["--replay", "x.csv", "--replay-sep", "::"],
                "invalid separator",
            ),
            (&["--format", "xml"], "invalid value"),
        ];
        for (args, want) in cases {
            let err = parse(args).unwrap_err().to_string();
            assert!(err.contains(want), "{args:?}: {err:?} lacks {want:?}");
        }
    }

    #[test]
    fn durations_are_humane() {
        assert_eq!(parse_period("1s"), Ok(1_000));
        assert_eq!(parse_period("3m"), Ok(180_000));
        assert_eq!(parse_period("1.5h"), Ok(5_400_000));
        assert!(parse_period("0").is_err());
        assert_eq!(parse_duration_arg("0"), Ok(0));
        assert_eq!(parse_duration_arg("2d"), Ok(172_800_000));
        assert!(parse_duration_arg("5 weeks").is_err());
    }

    /// A writer the test can read back.
    #[derive(Clone, Default)]
    struct Shared(Arc<Mutex<Vec<u8>>>);
    impl Write for Shared {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    async fn print(args: &[&str]) -> anyhow::Result<Vec<String>> {
        let out = Shared::default();
        let args = parse(args).unwrap();
        run_with_sink(
            args,
            CancellationToken::new(),
            Sink::Print(Box::new(out.clone())),
        )
        .await?;
        let text = String::from_utf8(out.0.lock().unwrap().clone()).unwrap();
        Ok(text.lines().map(str::to_owned).collect())
    }

    #[tokio::test]
    async fn prints_count_readings_per_device_in_both_forms() {
        let schema = Schema::new(DEFAULT_CHANNELS.iter().map(|c| (*c).to_owned()).collect());
        for format in ["array", "object"] {
            let lines = print(&[
                "--print",
                "--devices",
                "3",
                "--count",
                "4",
                "--rate",
                "0",
                "--start",
                "2026-11-28T12:00:00Z",
                "--format",
                format,
            ])
            .await
            .unwrap();
            assert_eq!(lines.len(), 12, "{format}");
            for (n, line) in lines.iter().enumerate() {
                let device = format!("plant-{:04}", n % 3);
                let r = decode_reading(line.as_bytes(), Some(device.as_bytes()), &schema)
                    .unwrap_or_else(|e| panic!("{format} {line}: {e}"));
                assert_eq!(r.ts_ms, 1_795_867_200_000 + (n / 3) as i64 * 1_000);
            }
        }
        // Same seed, same readings; the fault changes only its device.
        let a = print(&[
            "--print",
            "--devices",
            "2",
            "--count",
            "50",
            "--rate",
            "0",
            "--start",
            "2026-11-28T12:00:00Z",
        ])
        .await
        .unwrap();
        let b = print(&[
            "--print",
            "--devices",
            "2",
            "--count",
            "50",
            "--rate",
            "0",
            "--start",
            "2026-11-28T12:00:00Z",
            "--fault",
            "plant-0001:flow:step:6@10s",
        ])
        .await
        .unwrap();
        for (n, (x, y)) in a.iter().zip(&b).enumerate() {
            assert_eq!(x == y, n % 2 == 0 || n < 20, "line {n}");
        }
    }

    #[tokio::test]
    async fn replays_a_tep_file_alone_or_beside_the_plant() {
        let tep = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../../shared/data/tep/d01_te.dat"
        );
        let lines = print(&["--print", "--devices", "0", "--rate", "0", "--replay", tep])
            .await
            .unwrap();
        assert_eq!(lines.len(), 960);
        let schema = Schema::new(forewarn_data::tep::channels());
        let r = decode_reading(lines[0].as_bytes(), Some(b"d01_te"), &schema).unwrap();
        assert_eq!(r.values.len(), 52);
        let lines = print(&[
            "--print",
            "--devices",
            "1",
            "--count",
            "3",
            "--rate",
            "0",
            "--replay",
            tep,
            "--replay-device",
            "tep-01",
        ])
        .await
        .unwrap();
        assert_eq!(lines.len(), 6);
        assert!(lines[1].contains("\"device\":\"tep-01\""), "{}", lines[1]);
        // The replay id may not shadow a simulated device.
        let err = print(&[
            "--print",
            "--devices",
            "2",
            "--replay",
            tep,
            "--replay-device",
            "plant-0001",
        ])
        .await
        .unwrap_err();
        assert!(err.to_string().contains("collides"), "{err}");
    }

    #[tokio::test]
    async fn bad_setups_fail_before_producing() {
        let cases: &[(&[&str], &str)] = &[
            (&["--print", "--devices", "0"], "nothing to simulate"),
            (
                &["--print", "--fault", "plant-0009:flow:stuck@1s"],
                "unknown device",
            ),
            (
                &["--print", "--fault", "plant-0001:flux:stuck@1s"],
                "unknown channel",
            ),
            (
                &["--print", "--replay", "/nonexistent.csv"],
                "/nonexistent.csv",
            ),
            (&["--print", "--noise", "2"], "noise"),
        ];
        for (args, want) in cases {
            let err = print(args).await.unwrap_err().to_string();
            assert!(err.contains(want), "{args:?}: {err:?} lacks {want:?}");
        }
    }

    #[tokio::test]
    async fn paces_in_real_time_and_stops_on_shutdown() {
        // Real time: 2 devices every 100 ms = 20 readings/s. After ~1 s the
        // token stops an otherwise endless run.
        let out = Shared::default();
        let token = CancellationToken::new();
        let args = parse(&["--print", "--devices", "2", "--period", "100ms"]).unwrap();
        let task = tokio::spawn(run_with_sink(
            args,
            token.clone(),
            Sink::Print(Box::new(out.clone())),
        ));
        tokio::time::sleep(Duration::from_millis(1_000)).await;
        token.cancel();
        tokio::time::timeout(Duration::from_secs(5), task)
            .await
            .expect("stops promptly")
            .unwrap()
            .unwrap();
        let n = String::from_utf8(out.0.lock().unwrap().clone())
            .unwrap()
            .lines()
            .count();
        assert!((10..=23).contains(&n), "{n} readings in about 1 s");
    }

    #[test]
    fn grid_flags_parse_and_conflict_with_the_plants() {
        let a = parse(&[
            "--grid",
            "4x6",
            "--grid-fault",
            "plate-0001:hotspot@10m+20m:3,4",
            "--grid-fault",
            "0:heater_stuck@1h:h1",
            "--grid-faults-random",
            "4",
            "--csv-dir",
            "out",
        ])
        .unwrap();
        assert_eq!(a.grid, Some(GridSize { rows: 4, cols: 6 }));
        let faults: Vec<String> = a.grid_faults.iter().map(ToString::to_string).collect();
        assert_eq!(
            faults,
            ["plate-0001:hotspot@10m+20m:3,4", "0:heater_stuck@1h:h1"]
        );
        assert_eq!(a.grid_faults_random, Some(4));
        let cases: &[(&[&str], &str)] = &[
            (&["--grid", "8"], "ROWSxCOLS"),
            (&["--grid", "0x8"], "ROWSxCOLS"),
            (
                &["--grid", "8x8", "--channels", "a,b"],
                "cannot be used with",
            ),
            (
                &["--grid", "8x8", "--fault", "plant-0001:a:stuck@1s"],
                "cannot be used with",
            ),
            (&["--grid-fault", "plate-0001:dead@1m:1,1"], "--grid"),
            (
                &["--grid", "8x8", "--grid-fault", "plate-0001:dead@1m"],
                "expected DEVICE:KIND",
            ),
            (
                &["--grid", "8x8", "--grid-fault", "plate-0001:fire@1m:1,1"],
                "unknown fault kind",
            ),
            (&["--grid", "8x8", "--grid-faults-random", "2"], "--csv-dir"),
        ];
        for (args, want) in cases {
            let err = parse(args).unwrap_err().to_string();
            assert!(err.contains(want), "{args:?}: {err:?} lacks {want:?}");
        }
    }

    #[tokio::test]
    async fn prints_plates_with_a_value_per_cell_and_heater() {
        let lines = print(&[
            "--grid",
            "4x4",
            "--devices",
            "2",
            "--count",
            "100",
            "--print",
            "--rate",
            "0",
        ])
        .await
        .unwrap();
        assert_eq!(lines.len(), 200);
        let plates = Grid::new(
            GridConfig {
                size: GridSize { rows: 4, cols: 4 },
                seed: 1,
                ..GridConfig::default()
            },
            vec![],
        )
        .unwrap();
        let channels = plates.channels().to_vec();
        assert_eq!(channels.len(), 16 + plates.heaters());
        let schema = Schema::new(channels);
        for (n, line) in lines.iter().enumerate() {
            let device = format!("plate-{:04}", n % 2);
            let r = decode_reading(line.as_bytes(), Some(device.as_bytes()), &schema)
                .unwrap_or_else(|e| panic!("{line}: {e}"));
            assert_eq!(r.values.len(), 16 + plates.heaters());
        }
        let err = print(&[
            "--print",
            "--grid",
            "4x4",
            "--grid-fault",
            "plate-0001:dead@1m:4,4",
        ])
        .await
        .unwrap_err();
        assert!(err.to_string().contains("off the 4x4 plate"), "{err}");
    }

    #[test]
    fn csv_dir_with_random_grid_faults_writes_a_training_and_a_test_set() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().to_str().unwrap();
        let args = parse(&[
            "--grid",
            "3x3",
            "--devices",
            "2",
            "--count",
            "200",
            "--period",
            "10s",
            "--grid-faults-random",
            "4",
            "--csv-dir",
            out,
        ])
        .unwrap();
        export_csv(&args, dir.path()).unwrap();
        for plate in ["plate-0000", "plate-0001"] {
            let read = |part: &str| {
                std::fs::read_to_string(dir.path().join(part).join(format!("{plate}.csv"))).unwrap()
            };
            let (train, test) = (read("train"), read("test"));
            let header = train.lines().next().unwrap();
            assert!(header.starts_with("ts,cell_r0_c0,"), "{header}");
            assert!(header.ends_with(",anomaly,fault_row,fault_col"), "{header}");
            assert_eq!(test.lines().next(), Some(header));
            assert_eq!((train.lines().count(), test.lines().count()), (201, 201));
            let labelled = |text: &str| {
                text.lines()
                    .skip(1)
                    .filter(|l| !l.ends_with(",0,-1,-1"))
                    .count()
            };
            assert_eq!(labelled(&train), 0);
            assert!(labelled(&test) > 20, "{}", labelled(&test));
            // The test part goes on where the training part stopped.
            let ts = |l: Option<&str>| {
                l.unwrap()
                    .split(',')
                    .next()
                    .unwrap()
                    .parse::<i64>()
                    .unwrap()
            };
            assert_eq!(ts(test.lines().nth(1)), ts(train.lines().last()) + 10_000);
        }
    }

    #[test]
    fn the_run_future_can_be_spawned() {
        fn assert_send<T: Send>(_: &T) {}
        let fut = run(parse(&["--print"]).unwrap(), CancellationToken::new());
        assert_send(&fut);
    }
}
