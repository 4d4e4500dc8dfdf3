//! Consumer callbacks: readiness, commits and device-state handover around
//! rebalances.
//!
//! With checkpoints on, a revoke first hands the partitions' device state
//! over (the engine stage checkpoints and drops those devices, the persist
//! stage writes the checkpoint and stores its offsets; the callback waits
//! for that, then commits), and an assignment reads the partitions' last
//! checkpoint back, gives it to the engine stage ahead of any message of
//! those partitions, and starts each partition at its checkpoint's offset.
//! Both run on the consume thread, inside `poll`.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use forewarn_telemetry::events::{InternalEvent, StateRestoreFailed};
use forewarn_telemetry::{Health, Metrics};
use rdkafka::client::ClientContext;
use rdkafka::config::RDKafkaLogLevel;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::{Offset, TopicPartitionList};
use tokio::sync::mpsc::Sender;
use tokio::sync::mpsc::error::TrySendError;

use crate::checkpoint;
use crate::config::IngestConfig;
use crate::connection::ConnectionWatch;
use crate::messages::{Input, PartitionState};

/// The pipeline's group consumer, with these callbacks.
pub(crate) type PipelineConsumer = BaseConsumer<PipelineContext>;

pub(crate) struct PipelineContext {
    pub health: Arc<Health>,
    /// Present when checkpoints are on.
    pub handover: Option<Handover>,
    /// Bumped at every rebalance, so the consume thread can tell that a
    /// chunk it was filling straddles one.
    pub generation: AtomicU64,
    /// Reports connection failures retrying will not fix.
    pub watch: ConnectionWatch,
}

pub(crate) struct Handover {
    pub cfg: IngestConfig,
    pub metrics: Arc<Metrics>,
    /// The engine stage's input, while the consume thread runs.
    pub tx: Mutex<Option<Sender<Input>>>,
}

impl Handover {
    fn sender(&self) -> Option<Sender<Input>> {
        self.tx
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Stops handing over (the consume thread has stopped; the engine
    /// stage's final checkpoint covers everything).
    pub fn detach(&self) {
        self.tx
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
    }

    fn partitions(&self, tpl: &TopicPartitionList) -> Vec<i32> {
        tpl.elements()
            .iter()
            .filter(|e| e.topic() == self.cfg.input_topic)
            .map(|e| e.partition())
            .collect()
    }

    /// Blocks until the revoked partitions' state is durable, or the timeout.
    fn hand_over(&self, tpl: &TopicPartitionList) {
        let Some(tx) = self.sender() else { return };
        let partitions = self.partitions(tpl);
        if partitions.is_empty() {
            return;
        }
        let (done, finished) = std::sync::mpsc::channel();
        let t = Instant::now();
        let deadline = t + self.cfg.handover_timeout;
        let revoked = Input::Revoked {
            partitions: partitions.clone(),
            done,
            deadline,
        };
        if !send_before(&tx, revoked, deadline) {
            tracing::warn!(
                ?partitions,
                "the engine stage took no handover in time; the next owner resumes from the previous checkpoint"
            );
            return;
        }
        match finished.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
            Ok(()) => tracing::info!(
                ?partitions,
                ms = t.elapsed().as_millis() as u64,
                "device state handed over"
            ),
            Err(e) => tracing::warn!(
                ?partitions,
                error = %e,
                "device state handover did not finish; the next owner resumes from the previous checkpoint"
            ),
        }
    }

    /// Restores the assigned partitions' state and positions.
    fn take_over(&self, consumer: &PipelineConsumer, tpl: &TopicPartitionList) {
        let Some(tx) = self.sender() else { return };
        let partitions = self.partitions(tpl);
        let t = Instant::now();
        let states = match checkpoint::read(&self.cfg, &partitions, self.cfg.handover_timeout) {
            Ok(states) => states,
            Err(e) => {
                StateRestoreFailed {
                    partitions: partitions.len(),
                    error: &e,
                }
                .emit(&self.metrics);
                partitions
                    .iter()
                    .map(|&partition| PartitionState {
                        partition,
                        ..Default::default()
                    })
                    .collect()
            }
        };
        let mut positioned = tpl.clone();
        for s in &states {
            if let Some(at) = s.resume_at
                && let Err(e) = positioned.set_partition_offset(
                    &self.cfg.input_topic,
                    s.partition,
                    Offset::Offset(at),
                )
            {
                tracing::warn!(error = %e, partition = s.partition, "cannot position partition");
            }
        }
        let seconds = t.elapsed().as_secs_f64();
        let resumed: Vec<(i32, i64)> = states
            .iter()
            .filter_map(|s| s.resume_at.map(|at| (s.partition, at)))
            .collect();
        let deadline = Instant::now() + self.cfg.handover_timeout;
        if !send_before(&tx, Input::Assigned { states, seconds }, deadline) {
            tracing::error!(
                "the engine stage took no restored state in time; these partitions re-warm from their committed offsets"
            );
            return;
        }
        if !resumed.is_empty() {
            // Replaces the assignment the default handler just made with
            // the same partitions, now starting at their checkpoints.
            match consumer.assign(&positioned) {
                Ok(()) => tracing::info!(?resumed, "partitions resume at their checkpoints"),
                Err(e) => {
                    tracing::error!(error = %e, "cannot start partitions at their checkpoints")
                }
            }
        }
    }
}

/// Sends without blocking past `deadline` (a stalled engine stage must not
/// hold a rebalance forever). False when it could not.
fn send_before(tx: &Sender<Input>, mut input: Input, deadline: Instant) -> bool {
    loop {
        match tx.try_send(input) {
            Ok(()) => return true,
            Err(TrySendError::Closed(_)) => return false,
            Err(TrySendError::Full(back)) => {
                if Instant::now() >= deadline {
                    return false;
                }
                input = back;
                std::thread::sleep(Duration::from_millis(2));
            }
        }
    }
}

impl ClientContext for PipelineContext {
    fn log(&self, level: RDKafkaLogLevel, fac: &str, log_message: &str) {
        self.watch.log(level, fac, log_message);
    }

    fn error(&self, error: KafkaError, reason: &str) {
        if self.watch.error(&error, reason) {
            return;
        }
        if error.rdkafka_error_code() == Some(RDKafkaErrorCode::AllBrokersDown) {
            self.health.set_broker_reachable(false);
        }
        tracing::warn!(error = %error, reason, "kafka client error");
    }
}

impl ConsumerContext for PipelineContext {
    fn pre_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        self.generation.fetch_add(1, Ordering::SeqCst);
        if let Rebalance::Revoke(tpl) = rebalance {
            if let Some(h) = &self.handover {
                h.hand_over(tpl);
            }
            // Offsets stored so far cover durable effects only: commit them
            // before another instance takes the partitions.
            match consumer.commit_consumer_state(CommitMode::Sync) {
                Ok(()) => tracing::info!(partitions = tpl.count(), "committed offsets on revoke"),
                Err(e) => tracing::info!(error = %e, "no offsets to commit on revoke"),
            }
        }
    }

    fn post_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        let assigned = consumer.assignment().map(|a| a.count()).unwrap_or(0);
        match rebalance {
            Rebalance::Assign(tpl) => {
                tracing::info!(
                    assigned = tpl.count(),
                    total = assigned,
                    "partitions assigned"
                );
                if let Some(h) = &self.handover {
                    h.take_over(consumer, tpl);
                }
            }
            Rebalance::Revoke(tpl) => tracing::info!(
                revoked = tpl.count(),
                total = assigned,
                "partitions revoked"
            ),
            Rebalance::Error(e) => tracing::warn!(error = %e, "rebalance error"),
        }
        self.health.set_partitions_assigned(assigned);
    }
}
