//! Stage 3: make a chunk's effects durable, then store its offsets.
//!
//! Order per chunk: dead letters delivered, alert changes committed to the
//! store, alerts delivered to the alerts topic, device-state checkpoint
//! (if one is due) written to the state topic, and only then offsets stored
//! (with checkpoints on, only a checkpoint's own positions).
//! A step that fails is retried with back-off; nothing after it happens until
//! it succeeds, so a crash at any point replays the chunk (alert ids are
//! deterministic, so replays do not duplicate alerts).
//!
//! Once a chunk's alert changes are durable and on the alerts topic, they
//! are published on the [`AlertBus`](forewarn_api::AlertBus) for live
//! consumers (SSE, webhook). Publishing never blocks; a replayed chunk
//! publishes its changes again, so consumers see at-least-once events.

use std::future::Future;
use std::time::Duration;

use forewarn_api::{AlertEvent, AlertEventKind};
use forewarn_core::AlertState;
use forewarn_store::{AlertChange, AlertRecord};
use forewarn_telemetry::events::{
    AlertDelay, AlertOpened, AlertResolved, BatchesScored, CheckpointWritten, DeadLettered,
    InternalEvent, LastProcessed, MessageRejected, OffsetsStored, ReadingsAccepted,
    ReadingsDuplicate,
};
use futures::future::join_all;
use rdkafka::consumer::Consumer;
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{Offset, TopicPartitionList};
use tokio::sync::mpsc::Receiver;
use tokio_util::sync::CancellationToken;

use crate::admin::client_config;
use crate::checkpoint;
use crate::consume::{PipelineConsumer, Rejected};
use crate::engine_stage::Processed;
use crate::{IngestConfig, IngestError, Services};

const SEND_QUEUE_TIMEOUT: Duration = Duration::from_secs(5);

pub(crate) fn create_producer(cfg: &IngestConfig) -> Result<FutureProducer, IngestError> {
    let mut c = client_config(cfg);
    c.set("acks", "all")
        .set("linger.ms", "2")
        .set("message.timeout.ms", "30000");
    Ok(c.create()?)
}

pub(crate) async fn run(
    cfg: &IngestConfig,
    producer: &FutureProducer,
    consumer: &PipelineConsumer,
    services: &Services,
    mut rx: Receiver<Processed>,
    shutdown: &CancellationToken,
) -> Result<(), IngestError> {
    while let Some(p) = rx.recv().await {
        let m = &services.metrics;
        for r in &p.rejects {
            MessageRejected {
                reason: r.reason.label(),
                detail: r.reason.to_string(),
                partition: r.partition,
                offset: r.offset,
            }
            .emit(m);
        }
        if !retry("dead-letter delivery", shutdown, || {
            send_dead_letters(cfg, producer, &p.rejects)
        })
        .await
        {
            return Ok(());
        }
        for r in &p.rejects {
            DeadLettered {
                reason: r.reason.label(),
            }
            .emit(m);
        }
        if !retry("alert store", shutdown, || {
            store_changes(services, p.changes.clone())
        })
        .await
        {
            return Ok(());
        }
        for c in &p.changes {
            AlertDelay::since("stored", c.reading_ts()).emit(m);
        }
        if !retry("alert publication", shutdown, || {
            publish_alerts(cfg, producer, &p.changes)
        })
        .await
        {
            return Ok(());
        }
        for c in &p.changes {
            AlertDelay::since("published", c.reading_ts()).emit(m);
        }
        for c in &p.changes {
            match c {
                AlertChange::Opened(a) => AlertOpened { alert: a }.emit(m),
                AlertChange::Resolved(a) => AlertResolved { alert: a }.emit(m),
            }
        }
        for c in &p.changes {
            let (kind, a) = match c {
                AlertChange::Opened(a) => (AlertEventKind::Opened, a),
                AlertChange::Resolved(a) => (AlertEventKind::Resolved, a),
            };
            services.bus.publish(AlertEvent {
                kind,
                alert: AlertRecord::from(a.clone()),
            });
        }
        // With checkpoints on, offsets move only with a durable checkpoint
        // (its markers), so a restart never resumes past the state it restores.
        let offsets = match &p.checkpoint {
            Some(cp) => {
                let t = std::time::Instant::now();
                // A handover past its deadline is not written: the rebalance
                // went on without it, the next owner resumed from the
                // previous checkpoint, and this one could interleave with its.
                let late = std::cell::Cell::new(false);
                if !retry("state checkpoint", shutdown, || {
                    let past = cp.handover.is_some_and(|d| std::time::Instant::now() >= d);
                    late.set(past);
                    async move {
                        if past {
                            Ok(())
                        } else {
                            checkpoint::write(cfg, producer, cp).await
                        }
                    }
                })
                .await
                {
                    return Ok(());
                }
                if late.get() {
                    tracing::warn!(
                        records = cp.records.len(),
                        "handover checkpoint too late; not written"
                    );
                    &[]
                } else {
                    CheckpointWritten {
                        records: cp.records.len(),
                        partitions: cp.markers.len(),
                        seconds: t.elapsed().as_secs_f64(),
                        handover: cp.handover.is_some(),
                    }
                    .emit(m);
                    &cp.markers[..]
                }
            }
            None if cfg.checkpoints() => &[],
            None => &p.offsets[..],
        };
        store_offsets(cfg, consumer, offsets);
        if let Some(done) = &p.done {
            // The handover waiting on it may have timed out already.
            let _ = done.send(());
        }
        ReadingsAccepted { count: p.accepted }.emit(m);
        ReadingsDuplicate {
            count: p.duplicates,
        }
        .emit(m);
        BatchesScored {
            count: p.batches_scored,
        }
        .emit(m);
        OffsetsStored {
            count: offsets.len(),
        }
        .emit(m);
        if let Some(ts) = p.max_ts {
            LastProcessed { ts_ms: ts }.emit(m);
        }
    }
    Ok(())
}

/// Retries `op` with back-off until it succeeds (true) or shutdown (false).
async fn retry<F, Fut>(what: &str, shutdown: &CancellationToken, mut op: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<(), String>>,
{
    let mut backoff = Duration::from_millis(100);
    loop {
        match op().await {
            Ok(()) => return true,
            Err(e) => {
                tracing::warn!(step = what, error = %e, retry_in_ms = backoff.as_millis() as u64, "persisting failed; retrying");
                tokio::select! {
                    _ = shutdown.cancelled() => {
                        tracing::warn!(step = what, "shutting down with a chunk not persisted; it will be replayed");
                        return false;
                    }
                    _ = tokio::time::sleep(backoff) => {}
                }
                backoff = (backoff * 2).min(Duration::from_secs(5));
            }
        }
    }
}

async fn send_dead_letters(
    cfg: &IngestConfig,
    producer: &FutureProducer,
    rejects: &[Rejected],
) -> Result<(), String> {
    let sends = rejects.iter().map(|r| {
        let partition = r.partition.to_string();
        let offset = r.offset.to_string();
        let detail = r.reason.to_string();
        let headers = OwnedHeaders::new()
            .insert(Header {
                key: "forewarn.reason",
                value: Some(r.reason.label()),
            })
            .insert(Header {
                key: "forewarn.detail",
                value: Some(&detail),
            })
            .insert(Header {
                key: "forewarn.source.topic",
                value: Some(&cfg.input_topic),
            })
            .insert(Header {
                key: "forewarn.source.partition",
                value: Some(&partition),
            })
            .insert(Header {
                key: "forewarn.source.offset",
                value: Some(&offset),
            });
        let mut record = FutureRecord::to(&cfg.dead_letter_topic)
            .payload(&r.payload[..])
            .headers(headers);
        if let Some(k) = &r.key {
            record = record.key(&k[..]);
        }
        producer.send(record, SEND_QUEUE_TIMEOUT)
    });
    first_error(join_all(sends).await)
}

async fn publish_alerts(
    cfg: &IngestConfig,
    producer: &FutureProducer,
    changes: &[AlertChange],
) -> Result<(), String> {
    let bodies: Vec<(String, Vec<u8>)> = changes
        .iter()
        .map(|c| {
            let a = match c {
                AlertChange::Opened(a) | AlertChange::Resolved(a) => a,
            };
            debug_assert!(matches!(
                (c, a.state),
                (AlertChange::Opened(_), AlertState::Open)
                    | (AlertChange::Resolved(_), AlertState::Resolved)
            ));
            (
                a.device.clone(),
                serde_json::to_vec(a).expect("alerts serialise"),
            )
        })
        .collect();
    let sends = bodies.iter().map(|(key, body)| {
        producer.send(
            FutureRecord::to(&cfg.alerts_topic).key(key).payload(body),
            SEND_QUEUE_TIMEOUT,
        )
    });
    first_error(join_all(sends).await)
}

/// The first failed delivery of a batch of sends, as text.
pub(crate) fn first_error<T, M>(
    results: Vec<Result<T, (rdkafka::error::KafkaError, M)>>,
) -> Result<(), String> {
    match results.into_iter().find_map(Result::err) {
        Some((e, _)) => Err(e.to_string()),
        None => Ok(()),
    }
}

async fn store_changes(services: &Services, changes: Vec<AlertChange>) -> Result<(), String> {
    if changes.is_empty() {
        return Ok(());
    }
    let store = services.store.clone();
    tokio::task::spawn_blocking(move || store.apply(&changes))
        .await
        .map_err(|e| e.to_string())?
        .map_err(|e| e.to_string())
}

fn store_offsets(cfg: &IngestConfig, consumer: &PipelineConsumer, offsets: &[(i32, i64)]) {
    let mut tpl = TopicPartitionList::new();
    for (p, next) in offsets {
        if let Err(e) = tpl.add_partition_offset(&cfg.input_topic, *p, Offset::Offset(*next)) {
            tracing::warn!(error = %e, partition = p, "bad offset");
        }
    }
    if let Err(e) = consumer.store_offsets(&tpl) {
        // The partition was revoked meanwhile; its new owner replays from the
        // last commit, which is the at-least-once contract.
        tracing::info!(error = %e, "could not store offsets (partition revoked?)");
    }
}
