//! Topic creation, with patient retries while the broker is not up yet.

use std::time::Duration;

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use std::sync::Arc;

use forewarn_telemetry::Health;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use tokio_util::sync::CancellationToken;

use crate::client;
use crate::config::IngestConfig;
use crate::connection::{ConnectionWatch, WatchContext};
use crate::error::IngestError;

/// Creates the input, alerts and dead-letter topics if `create_topics` is on.
/// While the broker is unreachable it retries with back-off (logging each
/// attempt) until it succeeds or `shutdown` fires, so a service started
/// before its broker waits instead of exiting.
pub async fn ensure_topics(
    cfg: &IngestConfig,
    shutdown: &CancellationToken,
) -> Result<(), IngestError> {
    ensure_topics_watched(cfg, None, shutdown).await
}

/// [`ensure_topics`], reporting a connection failure retrying will not fix
/// (a refused password, an untrusted certificate) to `health`.
pub(crate) async fn ensure_topics_watched(
    cfg: &IngestConfig,
    health: Option<Arc<Health>>,
    shutdown: &CancellationToken,
) -> Result<(), IngestError> {
    if !cfg.create_topics {
        return Ok(());
    }
    let cfg = &cfg.resolved();
    let admin: AdminClient<WatchContext> = client::base(cfg)?
        .create_with_context(WatchContext(ConnectionWatch::new(health.clone())))?;
    // librdkafka hands a client's connection errors and log lines over only
    // when it is polled, which the admin client never is: while topic
    // creation times out, a polled probe tells why (a refused password, an
    // untrusted certificate).
    let probe: Arc<BaseConsumer<WatchContext>> = Arc::new(
        client::base(cfg)?.create_with_context(WatchContext(ConnectionWatch::new(health)))?,
    );
    let mut topics: Vec<NewTopic<'_>> =
        [&cfg.input_topic, &cfg.alerts_topic, &cfg.dead_letter_topic]
            .into_iter()
            .map(|t| {
                NewTopic::new(
                    t,
                    cfg.topic_partitions,
                    TopicReplication::Fixed(cfg.replication_factor),
                )
            })
            .collect();
    if cfg.checkpoints() {
        topics.push(
            NewTopic::new(
                &cfg.state_topic,
                cfg.topic_partitions,
                TopicReplication::Fixed(cfg.replication_factor),
            )
            // Only the latest state of a device matters; keep recent history
            // uncompacted so a checkpoint cut short by a crash can fall back
            // to the previous complete one.
            .set("cleanup.policy", "compact")
            .set("min.compaction.lag.ms", STATE_MIN_COMPACTION_LAG_MS),
        );
    }
    // A short request timeout turns "no broker yet" into a prompt, logged retry.
    let opts = AdminOptions::new()
        .operation_timeout(Some(Duration::from_secs(10)))
        .request_timeout(Some(Duration::from_secs(3)));
    let mut backoff = Duration::from_millis(250);
    loop {
        match admin.create_topics(&topics, &opts).await {
            Ok(results) => {
                for r in results {
                    match r {
                        Ok(t) => tracing::info!(topic = %t, "created topic"),
                        Err((t, RDKafkaErrorCode::TopicAlreadyExists)) => {
                            tracing::debug!(topic = %t, "topic exists")
                        }
                        Err((t, code)) => {
                            return Err(IngestError::Config(format!(
                                "cannot create topic {t}: {code}"
                            )));
                        }
                    }
                }
                // Metadata calls block: off the async runtime.
                let cfg = cfg.clone();
                return tokio::task::spawn_blocking(move || check_state_partitions(&cfg))
                    .await
                    .map_err(|e| IngestError::Config(format!("partition check: {e}")))?;
            }
            Err(e) if retriable(&e) => {
                let probe = probe.clone();
                let _ = tokio::task::spawn_blocking(move || {
                    let _ = probe.fetch_metadata(None, Duration::from_secs(2));
                    let _ = probe.poll(Duration::ZERO);
                })
                .await;
                tracing::warn!(brokers = %cfg.brokers, error = %e, retry_in_ms = backoff.as_millis() as u64,
                    "broker not reachable yet; waiting");
                tokio::select! {
                    _ = shutdown.cancelled() => return Ok(()),
                    _ = tokio::time::sleep(backoff) => {}
                }
                backoff = (backoff * 2).min(Duration::from_secs(10));
            }
            Err(e) => return Err(e.into()),
        }
    }
}

/// A day: far longer than any restart, so a checkpoint whose marker never
/// landed still has its predecessor's records to fall back to.
const STATE_MIN_COMPACTION_LAG_MS: &str = "86400000";

/// A device's state is written to the state-topic partition with the number
/// of its input partition, so the state topic needs at least as many.
fn check_state_partitions(cfg: &IngestConfig) -> Result<(), IngestError> {
    if !cfg.checkpoints() {
        return Ok(());
    }
    let consumer: BaseConsumer = client::base(cfg)?.create()?;
    let count = |topic: &str| -> Result<usize, IngestError> {
        let md = consumer.fetch_metadata(Some(topic), Duration::from_secs(10))?;
        Ok(md.topics().first().map_or(0, |t| t.partitions().len()))
    };
    let (input, state) = (count(&cfg.input_topic)?, count(&cfg.state_topic)?);
    if state < input {
        return Err(IngestError::Config(format!(
            "state topic {} has {state} partitions but input topic {} has {input}; it needs at least as many (create it with {input}, cleanup.policy=compact)",
            cfg.state_topic, cfg.input_topic
        )));
    }
    Ok(())
}

fn retriable(e: &KafkaError) -> bool {
    matches!(
        e.rdkafka_error_code(),
        Some(
            RDKafkaErrorCode::OperationTimedOut
                | RDKafkaErrorCode::AllBrokersDown
                | RDKafkaErrorCode::BrokerTransportFailure
                | RDKafkaErrorCode::BrokerNotAvailable
                | RDKafkaErrorCode::RequestTimedOut
        )
    ) || matches!(e, KafkaError::AdminOp(_))
}
