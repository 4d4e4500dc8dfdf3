//! Synthetic readings, the engine and pipeline settings that run them,
//! and producing them to the broker.

use std::fmt::Write as _;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use anyhow::bail;
use forewarn_core::{DetectorConfig, EngineConfig, GridLayout, Scaler, Schema};
use forewarn_ingest::IngestConfig;

use rdkafka::ClientContext;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::{BaseProducer, BaseRecord, DeliveryResult, Producer, ProducerContext};

use crate::args::BenchArgs;

// ---------------------------------------------------------------------------
// Synthetic readings

/// Every `SPIKE_DEVICE_EVERY`-th device spikes by `SPIKE` scaled units on
/// every channel for one batch in every `SPIKE_EVERY` batches.
pub(crate) const SPIKE_DEVICE_EVERY: usize = 100;
pub(crate) const SPIKE_EVERY: u64 = 20;
pub(crate) const SPIKE: f32 = 25.0;
/// Far above the random model's normal error (~1) and far below a spike's.
pub(crate) const THRESHOLD: f64 = 20.0;

/// Deterministic plant-like readings: per channel a base and a scale, a slow
/// sinusoid per device and channel, and hash noise.
pub(crate) struct Generator {
    pub(crate) ids: Vec<String>,
    pub(crate) channels: usize,
    pub(crate) horizon: u64,
}

impl Generator {
    pub(crate) fn new(devices: usize, channels: usize, horizon: usize) -> Self {
        Self {
            ids: (0..devices).map(|d| format!("plant-{d:05}")).collect(),
            channels,
            horizon: horizon as u64,
        }
    }

    pub(crate) fn base(c: usize) -> f32 {
        10.0 * (c + 1) as f32
    }

    pub(crate) fn scale(c: usize) -> f32 {
        1.0 + 0.5 * c as f32
    }

    pub(crate) fn scaler(&self) -> Scaler {
        Scaler {
            center: (0..self.channels).map(Self::base).collect(),
            scale: (0..self.channels).map(Self::scale).collect(),
            constant: vec![false; self.channels],
            forecast_constant: Vec::new(),
        }
    }

    pub(crate) fn schema(&self) -> Schema {
        Schema::new((0..self.channels).map(|c| format!("ch{c}")).collect())
    }

    pub(crate) fn spiking(&self, d: usize, tick: u64) -> bool {
        d.is_multiple_of(SPIKE_DEVICE_EVERY)
            && (tick / self.horizon + d as u64) % SPIKE_EVERY == SPIKE_EVERY - 1
    }

    pub(crate) fn value(&self, d: usize, c: usize, tick: u64) -> f32 {
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

    /// The first tick on which a device spikes (`None` without devices).
    pub(crate) fn first_spike_tick(&self) -> Option<u64> {
        (0..self.ids.len())
            .step_by(SPIKE_DEVICE_EVERY)
            .map(|d| (SPIKE_EVERY - 1 + SPIKE_EVERY - d as u64 % SPIKE_EVERY) % SPIKE_EVERY)
            .min()
            .map(|batch| batch * self.horizon)
    }

    /// The array form of a reading message.
    pub(crate) fn encode(&self, buf: &mut String, d: usize, ts: i64, tick: u64) {
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

/// The engine as serve runs the network: for convlstm with the grid a
/// trained artifact carries (its channels row by row), so alerts name
/// their cells and the device view carries every channel's share.
pub(crate) fn engine_config(
    args: &BenchArgs,
    sim: &Generator,
    state_len: usize,
) -> anyhow::Result<EngineConfig> {
    let grid = match args.grid_shape().map_err(anyhow::Error::msg)? {
        Some(g) => Some(
            GridLayout::row_major(g.rows, g.cols, sim.schema().channels())
                .map_err(anyhow::Error::msg)?,
        ),
        None => None,
    };
    Ok(EngineConfig {
        schema: sim.schema(),
        monitored: EngineConfig::all_monitored(sim.schema().len()),
        scaler: sim.scaler(),
        horizon: args.horizon,
        window: args.window,
        warmup: args.window,
        state_len,
        strategy: forewarn_core::threshold::ThresholdStrategy::Fixed {
            threshold: THRESHOLD,
        },
        flatline: None,
        detector: DetectorConfig {
            open_after: 1,
            resolve_after: 1,
            resolve_ratio: 0.8,
            open_ratio: 0.0,
            // Alerts from the first scored batch, as the measured load expects.
            probation: 0,
            // Its readings have no context channels.
            context_change_margin: 1.0,
            context_change_rows: 0,
        },
        model: "bench".into(),
        model_version: "bench-random".into(),
        max_batch: args.max_batch,
        grid,
    })
}

pub(crate) fn ingest_config(args: &BenchArgs, prefix: &str) -> IngestConfig {
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
pub(crate) struct Deliveries {
    pub(crate) ok: AtomicU64,
    pub(crate) failed: AtomicU64,
}

pub(crate) struct CountDeliveries(Arc<Deliveries>);

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

pub(crate) type BenchProducer = BaseProducer<CountDeliveries>;

pub(crate) fn producer(
    cfg: &IngestConfig,
    linger_ms: u32,
) -> anyhow::Result<(BenchProducer, Arc<Deliveries>)> {
    let d = Arc::new(Deliveries::default());
    // The pipeline's connection settings (security among them).
    let p = forewarn_ingest::client_config(cfg)?
        .set("linger.ms", linger_ms.to_string())
        .set("batch.num.messages", "10000")
        .set("batch.size", "1000000")
        .set("queue.buffering.max.messages", "1000000")
        .set("queue.buffering.max.kbytes", "1048576")
        .set("acks", "1")
        .create_with_context(CountDeliveries(d.clone()))?;
    Ok((p, d))
}

pub(crate) fn send(p: &BenchProducer, topic: &str, key: &str, payload: &str) -> anyhow::Result<()> {
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

pub(crate) fn finish(p: &BenchProducer, d: &Deliveries, expected: u64) -> anyhow::Result<()> {
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
pub(crate) fn preload(
    cfg: &IngestConfig,
    topic: &str,
    sim: &Generator,
    ticks: u64,
    base_ts: i64,
) -> anyhow::Result<()> {
    let (p, d) = producer(cfg, 20)?;
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pipeline::reading_ts;

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

    /// Table: devices, horizon -> the first tick any device spikes on,
    /// checked against `spiking` tick by tick.
    #[test]
    fn the_first_spike_is_the_first_spiking_tick() {
        for (devices, horizon, want) in [
            (1, 10, Some(190)),
            (1000, 10, Some(190)),
            (300, 5, Some(95)),
            (0, 10, None),
        ] {
            let g = Generator::new(devices, 8, horizon);
            let scanned = (0..10_000).find(|&t| (0..devices).any(|d| g.spiking(d, t)));
            assert_eq!(
                (g.first_spike_tick(), scanned),
                (want, want),
                "{devices} {horizon}"
            );
        }
    }

    /// Table: flags -> the engine's grid (rows, cols, cells, the last
    /// channel's cell), as serve runs a trained network of that kind.
    #[test]
    fn the_engine_has_the_grid_of_a_convlstm() {
        use clap::Parser;
        #[derive(Parser)]
        struct Cli {
            #[command(flatten)]
            bench: BenchArgs,
        }
        let cases = [
            (&[][..], 8, None),
            (
                &["--kind", "convlstm", "--grid", "8x8"][..],
                64,
                Some((8, 8, 64, (7, 7))),
            ),
            (
                &["--kind", "convlstm", "--grid", "2x3"][..],
                6,
                Some((2, 3, 6, (1, 2))),
            ),
        ];
        for (flags, channels, want) in cases {
            let args = Cli::parse_from(std::iter::once("bench").chain(flags.iter().copied())).bench;
            let sim = Generator::new(4, channels, 10);
            let cfg = engine_config(&args, &sim, 16).unwrap();
            cfg.check_monitored().unwrap();
            let last = format!("ch{}", channels - 1);
            let got = cfg.grid.as_ref().map(|g| {
                let s = g.slot(&last).unwrap();
                (g.rows(), g.cols(), g.slots().len(), (s.row, s.col))
            });
            assert_eq!(got, want, "{flags:?}");
        }
    }
}
