//! Stage 3: make a chunk's effects durable, then store its offsets.
//!
//! Order per chunk ([`plan`], which decides it without I/O): dead letters
//! delivered, alert changes committed to the store, alerts delivered to the
//! alerts topic, device-state checkpoint (if one is due) written to the
//! state topic, and only then offsets stored (with checkpoints on, only a
//! checkpoint's own positions).
//! A step that fails is retried with back-off; nothing after it happens until
//! it succeeds, so a crash at any point replays the chunk (alert ids are
//! deterministic, so replays do not duplicate alerts).
//!
//! Once a chunk's alert changes are durable and on the alerts topic, they
//! are published on the [`AlertBus`](forewarn_api::AlertBus) for live
//! consumers (SSE, webhook). Publishing never blocks; a replayed chunk
//! publishes its changes again, so consumers see at-least-once events.
//!
//! A diagnosis change (`AlertChange::Diagnosed`, with a fault classifier)
//! goes the same way: stored, on the alerts topic as the alert's JSON (an
//! open alert with its new `diagnosis`; the `forewarn.change` header names
//! the kind of every alert message), announced as `diagnosed`. It counts
//! in no alert delay: its alert does not carry the time of the batch that
//! changed it.

use std::future::Future;
use std::time::{Duration, Instant};

use forewarn_api::{AlertEvent, AlertEventKind};
use forewarn_core::AlertState;
use forewarn_store::{AlertChange, AlertRecord};
use forewarn_telemetry::Metrics;
use forewarn_telemetry::events::{
    AlertDelay, AlertDiagnosed, AlertOpened, AlertResolved, BatchesScored, CheckpointWritten,
    DeadLettered, InternalEvent, LastProcessed, MessageRejected, OffsetsStored, ReadingsAccepted,
    ReadingsDuplicate,
};
use futures::future::join_all;
use rdkafka::consumer::Consumer;
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{Offset, TopicPartitionList};
use tokio::sync::mpsc::Receiver;
use tokio_util::sync::CancellationToken;

use crate::checkpoint;
use crate::client::{SEND_QUEUE_TIMEOUT, first_error};
use crate::config::IngestConfig;
use crate::context::PipelineConsumer;
use crate::error::IngestError;
use crate::messages::{Checkpoint, Processed, Rejected};
use crate::services::Services;

mod plan;

use plan::{Step, Written};

/// The stage's I/O: where each step's effects go.
struct Sinks<'a> {
    cfg: &'a IngestConfig,
    producer: &'a FutureProducer,
    consumer: &'a PipelineConsumer,
    services: &'a Services,
    shutdown: &'a CancellationToken,
}

pub(crate) async fn run(
    cfg: &IngestConfig,
    producer: &FutureProducer,
    consumer: &PipelineConsumer,
    services: &Services,
    mut rx: Receiver<Processed>,
    shutdown: &CancellationToken,
) -> Result<(), IngestError> {
    let sinks = Sinks {
        cfg,
        producer,
        consumer,
        services,
        shutdown,
    };
    while let Some(p) = rx.recv().await {
        let Some(stored) = sinks.persist(&p).await else {
            // Shutdown interrupted a step: the outcome is replayed from
            // the last stored offsets.
            return Ok(());
        };
        count(&services.metrics, &p, stored);
    }
    Ok(())
}

impl Sinks<'_> {
    /// Runs `p`'s [`plan`] step by step; the number of offsets stored, or
    /// `None` when shutdown interrupted a step.
    async fn persist(&self, p: &Processed) -> Option<usize> {
        let m = &self.services.metrics;
        let checkpoints = self.cfg.checkpoints();
        let mut written = None;
        let mut stored = 0;
        for step in plan::plan(p, checkpoints) {
            match step {
                Step::DeadLetters => {
                    for r in &p.rejects {
                        MessageRejected {
                            reason: r.reason.label(),
                            detail: r.reason.to_string(),
                            partition: r.partition,
                            offset: r.offset,
                        }
                        .emit(m);
                    }
                    self.retry("dead-letter delivery", || {
                        send_dead_letters(self.cfg, self.producer, &p.rejects)
                    })
                    .await?;
                    for r in &p.rejects {
                        DeadLettered {
                            reason: r.reason.label(),
                        }
                        .emit(m);
                    }
                }
                Step::StoreAlerts => {
                    self.retry("alert store", || {
                        store_changes(self.services, p.changes.clone())
                    })
                    .await?;
                    for c in p.changes.iter().filter(|c| has_delay(c)) {
                        AlertDelay::since("stored", c.reading_ts()).emit(m);
                    }
                }
                Step::PublishAlerts => {
                    self.retry("alert publication", || {
                        publish_alerts(self.cfg, self.producer, &p.changes)
                    })
                    .await?;
                    for c in p.changes.iter().filter(|c| has_delay(c)) {
                        AlertDelay::since("published", c.reading_ts()).emit(m);
                    }
                }
                Step::Announce => announce(self.services, &p.changes),
                Step::WriteCheckpoint => {
                    let cp = p.checkpoint.as_ref().expect("planned with a checkpoint");
                    written = Some(self.write_checkpoint(cp).await?);
                }
                Step::StoreOffsets => {
                    let offsets = plan::offsets_to_store(p, checkpoints, written);
                    if !offsets.is_empty() {
                        store_offsets(self.cfg, self.consumer, offsets);
                    }
                    stored = offsets.len();
                }
                Step::SignalDone => {
                    if let Some(done) = &p.done {
                        // The handover waiting on it may have timed out already.
                        let _ = done.send(());
                    }
                }
            }
        }
        Some(stored)
    }

    /// Writes `cp` to the state topic, unless it is (or becomes, while
    /// retrying) a handover past its deadline.
    async fn write_checkpoint(&self, cp: &Checkpoint) -> Option<Written> {
        let t = Instant::now();
        let late = std::cell::Cell::new(false);
        self.retry("state checkpoint", || {
            let past = plan::too_late(cp, Instant::now());
            late.set(past);
            async move {
                if past {
                    Ok(())
                } else {
                    checkpoint::write(self.cfg, self.producer, cp).await
                }
            }
        })
        .await?;
        if late.get() {
            tracing::warn!(
                records = cp.records.len(),
                "handover checkpoint too late; not written"
            );
            return Some(Written::TooLate);
        }
        CheckpointWritten {
            records: cp.records.len(),
            partitions: cp.markers.len(),
            seconds: t.elapsed().as_secs_f64(),
            handover: cp.handover.is_some(),
        }
        .emit(&self.services.metrics);
        Some(Written::Yes)
    }

    /// Retries `op` with back-off until it succeeds, or `None` at shutdown.
    async fn retry<F, Fut>(&self, what: &str, op: F) -> Option<()>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<(), String>>,
    {
        retry(what, self.shutdown, op).await.then_some(())
    }
}

/// Whether `c` counts in `forewarn_alert_delay_seconds`, which measures
/// from the reading that opened or resolved an alert: a diagnosis change
/// has no such reading (see [`AlertChange::reading_ts`]).
fn has_delay(c: &AlertChange) -> bool {
    !matches!(c, AlertChange::Diagnosed(_))
}

/// Logs and counts durable alert changes and broadcasts them to live
/// consumers (SSE, webhook). Publishing never blocks.
fn announce(services: &Services, changes: &[AlertChange]) {
    let m = &services.metrics;
    for c in changes {
        match c {
            AlertChange::Opened(a) => AlertOpened { alert: a }.emit(m),
            AlertChange::Resolved(a) => AlertResolved { alert: a }.emit(m),
            AlertChange::Diagnosed(a) => AlertDiagnosed { alert: a }.emit(m),
        }
    }
    for c in changes {
        services.bus.publish(AlertEvent {
            kind: event_kind(c),
            alert: AlertRecord::from(c.alert().clone()),
        });
    }
}

/// The bus event kind of a change.
fn event_kind(c: &AlertChange) -> AlertEventKind {
    match c {
        AlertChange::Opened(_) => AlertEventKind::Opened,
        AlertChange::Resolved(_) => AlertEventKind::Resolved,
        AlertChange::Diagnosed(_) => AlertEventKind::Diagnosed,
    }
}

/// Counts a persisted outcome.
fn count(m: &Metrics, p: &Processed, offsets_stored: usize) {
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
        count: offsets_stored,
    }
    .emit(m);
    if let Some(ts) = p.max_ts {
        LastProcessed { ts_ms: ts }.emit(m);
    }
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
    let bodies: Vec<(&'static str, String, Vec<u8>)> = changes
        .iter()
        .map(|c| {
            let a = c.alert();
            debug_assert!(matches!(
                (c, a.state),
                (
                    AlertChange::Opened(_) | AlertChange::Diagnosed(_),
                    AlertState::Open
                ) | (AlertChange::Resolved(_), AlertState::Resolved)
            ));
            (
                c.kind(),
                a.device.clone(),
                serde_json::to_vec(a).expect("alerts serialise"),
            )
        })
        .collect();
    let sends = bodies.iter().map(|(kind, key, body)| {
        // The payload alone cannot tell a diagnosis change from a replayed
        // opening: the header names the change.
        let headers = OwnedHeaders::new().insert(Header {
            key: "forewarn.change",
            value: Some(*kind),
        });
        producer.send(
            FutureRecord::to(&cfg.alerts_topic)
                .key(key)
                .payload(body)
                .headers(headers),
            SEND_QUEUE_TIMEOUT,
        )
    });
    first_error(join_all(sends).await)
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_change_is_announced_as_its_kind_and_only_openings_and_resolutions_count_in_delays() {
        let a = crate::test_alerts::open_alert("a", 10);
        // (change, bus event kind, counted in alert delays)
        let cases = [
            (AlertChange::Opened(a.clone()), AlertEventKind::Opened, true),
            (
                AlertChange::Resolved(a.clone()),
                AlertEventKind::Resolved,
                true,
            ),
            (AlertChange::Diagnosed(a), AlertEventKind::Diagnosed, false),
        ];
        for (c, kind, delay) in cases {
            assert_eq!((event_kind(&c), has_delay(&c)), (kind, delay), "{c:?}");
            assert_eq!(
                kind.as_str(),
                c.kind(),
                "the topic header names the bus kind"
            );
        }
    }
}
