//! Stage 1: poll Kafka and decode messages into chunks.

use std::sync::Arc;
use std::time::{Duration, Instant};

use forewarn_core::reading::{Reading, RejectReason, Schema, decode_reading};
use forewarn_telemetry::events::{ConsumerLag, InternalEvent, MessagesConsumed};
use rdkafka::Offset;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use tokio::sync::mpsc::Sender;
use tokio_util::sync::CancellationToken;

use crate::admin::client_config;
use crate::context::PipelineContext;
use crate::{IngestConfig, IngestError, Services};

pub(crate) type PipelineConsumer = BaseConsumer<PipelineContext>;

/// A decoded reading and where it came from.
pub(crate) struct Incoming {
    pub reading: Reading,
    pub partition: i32,
    pub offset: i64,
}

/// A message that will go to the dead-letter topic.
pub(crate) struct Rejected {
    pub reason: RejectReason,
    pub key: Option<Vec<u8>>,
    pub payload: Vec<u8>,
    pub partition: i32,
    pub offset: i64,
}

/// Messages polled together; `offsets` holds, per partition, the offset
/// after the last message of the chunk (what to store once it is durable).
#[derive(Default)]
pub(crate) struct Chunk {
    pub readings: Vec<Incoming>,
    pub rejects: Vec<Rejected>,
    pub offsets: Vec<(i32, i64)>,
    pub consumed: usize,
}

impl Chunk {
    fn note_offset(&mut self, partition: i32, offset: i64) {
        match self.offsets.iter_mut().find(|(p, _)| *p == partition) {
            Some((_, next)) => *next = (*next).max(offset + 1),
            None => self.offsets.push((partition, offset + 1)),
        }
    }
}

pub(crate) fn create_consumer(
    cfg: &IngestConfig,
    services: &Services,
) -> Result<PipelineConsumer, IngestError> {
    let mut c = client_config(cfg);
    c.set("group.id", &cfg.group_id)
        .set("enable.auto.commit", "true")
        .set("auto.commit.interval.ms", "1000")
        // At-least-once: we store offsets ourselves once effects are durable.
        .set("enable.auto.offset.store", "false")
        .set("auto.offset.reset", "earliest")
        .set("session.timeout.ms", cfg.session_timeout_ms.to_string())
        .set(
            "heartbeat.interval.ms",
            (cfg.session_timeout_ms / 3).max(100).to_string(),
        )
        // An idle partition's fetch returns after at most this long. A broker
        // that does not answer a waiting fetch as soon as data arrives (Tansu)
        // adds up to this to every reading's latency; librdkafka's 500 ms
        // default made p50 ~200 ms. Costs ~100 empty fetches/s when idle.
        .set("fetch.wait.max.ms", "10");
    for (k, v) in &cfg.client {
        c.set(k, v);
    }
    let consumer: PipelineConsumer = c.create_with_context(PipelineContext {
        health: services.health.clone(),
    })?;
    consumer.subscribe(&[&cfg.input_topic])?;
    Ok(consumer)
}

pub(crate) fn run(
    consumer: &PipelineConsumer,
    cfg: &IngestConfig,
    schema: &Schema,
    services: &Services,
    tx: Sender<Chunk>,
    shutdown: &CancellationToken,
) -> Result<(), IngestError> {
    tracing::info!(topic = %cfg.input_topic, group = %cfg.group_id, "consuming");
    while !shutdown.is_cancelled() {
        let chunk = poll_chunk(consumer, cfg, schema, shutdown);
        if chunk.consumed == 0 {
            continue;
        }
        MessagesConsumed {
            count: chunk.consumed,
        }
        .emit(&services.metrics);
        if tx.blocking_send(chunk).is_err() {
            // The engine stage is gone; it reports its own error.
            return Ok(());
        }
    }
    tracing::info!("stopped polling");
    Ok(())
}

fn poll_chunk(
    consumer: &PipelineConsumer,
    cfg: &IngestConfig,
    schema: &Schema,
    shutdown: &CancellationToken,
) -> Chunk {
    let mut chunk = Chunk::default();
    let mut deadline: Option<Instant> = None;
    loop {
        let timeout = match deadline {
            None => Duration::from_millis(100),
            Some(d) => d.saturating_duration_since(Instant::now()),
        };
        match consumer.poll(timeout) {
            None => {
                if deadline.is_none() && (shutdown.is_cancelled() || chunk.consumed == 0) {
                    return chunk;
                }
            }
            Some(Err(e)) => tracing::warn!(error = %e, "poll error"),
            Some(Ok(msg)) => {
                deadline.get_or_insert_with(|| Instant::now() + cfg.chunk_max_wait);
                let (partition, offset) = (msg.partition(), msg.offset());
                chunk.consumed += 1;
                chunk.note_offset(partition, offset);
                let payload = msg.payload().unwrap_or_default();
                match decode_reading(payload, msg.key(), schema) {
                    Ok(reading) => chunk.readings.push(Incoming {
                        reading,
                        partition,
                        offset,
                    }),
                    Err(reason) => chunk.rejects.push(Rejected {
                        reason,
                        key: msg.key().map(<[u8]>::to_vec),
                        payload: payload.to_vec(),
                        partition,
                        offset,
                    }),
                }
                if chunk.consumed >= cfg.chunk_max_messages {
                    return chunk;
                }
            }
        }
        if deadline.is_some_and(|d| Instant::now() >= d) {
            return chunk;
        }
    }
}

/// Every few seconds: per-partition lag gauges and broker reachability.
pub(crate) async fn watch_lag(
    consumer: Arc<PipelineConsumer>,
    services: Services,
    shutdown: CancellationToken,
) {
    let mut tick = tokio::time::interval(Duration::from_secs(5));
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        let c = consumer.clone();
        let probe = tokio::task::spawn_blocking(move || lag_by_partition(&c)).await;
        match probe {
            Ok(Ok(lags)) => {
                services.health.set_broker_reachable(true);
                for (partition, lag) in lags {
                    ConsumerLag { partition, lag }.emit(&services.metrics);
                }
            }
            Ok(Err(e)) => {
                services.health.set_broker_reachable(false);
                tracing::warn!(error = %e, "broker unreachable");
            }
            Err(e) => tracing::warn!(error = %e, "lag probe panicked"),
        }
    }
}

fn lag_by_partition(consumer: &PipelineConsumer) -> rdkafka::error::KafkaResult<Vec<(i32, i64)>> {
    let timeout = Duration::from_secs(2);
    let assignment = consumer.assignment()?;
    if assignment.count() == 0 {
        // Nothing to measure; a metadata round trip still tells reachability.
        consumer.fetch_metadata(None, timeout)?;
        return Ok(Vec::new());
    }
    let positions = consumer.position()?;
    let mut out = Vec::new();
    for el in positions.elements() {
        let (low, high) = consumer.fetch_watermarks(el.topic(), el.partition(), timeout)?;
        let pos = match el.offset() {
            Offset::Offset(o) => o,
            _ => low,
        };
        out.push((el.partition(), (high - pos).max(0)));
    }
    Ok(out)
}
