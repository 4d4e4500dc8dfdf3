//! Every Kafka client the pipeline makes is configured here: [`base`] holds
//! what all of them share (the brokers, and `kafka.client`, where
//! connection security goes), the other functions each role's own
//! settings. Clients with a context (the group consumer's rebalance
//! callbacks) are created where the context is, from these configurations.

use std::time::Duration;

use rdkafka::config::ClientConfig;
use rdkafka::error::KafkaError;
use rdkafka::producer::FutureProducer;
use rdkafka::types::RDKafkaConfRes;

use crate::config::{IngestConfig, client_properties};

/// How long a send may wait for room in the producer's queue.
pub(crate) const SEND_QUEUE_TIMEOUT: Duration = Duration::from_secs(5);

/// What every client shares: the brokers and `kafka.client`'s properties
/// (security among them), with `*_file` settings read from their files.
/// Errors name the setting and the file, never a secret.
pub fn base(cfg: &IngestConfig) -> Result<ClientConfig, KafkaError> {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", &cfg.brokers);
    for (k, v) in properties(cfg)? {
        c.set(k, v);
    }
    Ok(c)
}

fn properties(cfg: &IngestConfig) -> Result<Vec<(String, String)>, KafkaError> {
    client_properties(&cfg.client).map_err(|e| {
        KafkaError::ClientConfig(
            RDKafkaConfRes::RD_KAFKA_CONF_INVALID,
            e,
            "kafka.client".into(),
            String::new(),
        )
    })
}

/// The pipeline's group consumer (input topic).
pub(crate) fn group_consumer(cfg: &IngestConfig) -> Result<ClientConfig, KafkaError> {
    let mut c = base(cfg)?;
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
        .set("fetch.wait.max.ms", "10")
        // Prefetched messages are the one buffer that grows with a burst:
        // librdkafka's default allows 64 MiB per assigned partition. 16 MiB
        // (tens of thousands of readings per partition) keeps the pipeline
        // fed and bounds a burst's memory; the backlog stays in Kafka.
        .set("queued.max.messages.kbytes", "16384")
        // Once that buffer is full librdkafka pauses fetching for
        // `fetch.queue.backoff.ms` (1 s by default) even after the engine
        // has drained it: the pipeline then ran in bursts, idle ~60 % of
        // the time (docs/BENCHMARKS.md). 10 ms resumes fetching promptly.
        .set("fetch.queue.backoff.ms", "10");
    // The operator's properties win over the settings above.
    for (k, v) in properties(cfg)? {
        c.set(k, v);
    }
    Ok(c)
}

/// The producer of dead letters, alerts and checkpoints.
pub(crate) fn producer(cfg: &IngestConfig) -> Result<FutureProducer, KafkaError> {
    let mut c = base(cfg)?;
    c.set("acks", "all")
        .set("linger.ms", "2")
        .set("message.timeout.ms", "30000");
    c.create()
}

/// A consumer that reads state-topic partitions back (no group offsets).
pub(crate) fn state_reader(cfg: &IngestConfig) -> Result<ClientConfig, KafkaError> {
    let mut c = base(cfg)?;
    c.set("group.id", format!("{}.state-reader", cfg.group_id))
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("auto.offset.reset", "earliest")
        .set("fetch.wait.max.ms", "10")
        // A large state topic fills librdkafka's prefetch buffer; its default
        // 1 s pause after that would stall the restore (see group_consumer).
        .set("fetch.queue.backoff.ms", "10");
    Ok(c)
}

/// The first failed delivery of a batch of sends, as text.
pub(crate) fn first_error<T, M>(results: Vec<Result<T, (KafkaError, M)>>) -> Result<(), String> {
    match results.into_iter().find_map(Result::err) {
        Some((e, _)) => Err(e.to_string()),
        None => Ok(()),
    }
}
