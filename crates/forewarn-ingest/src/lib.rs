//! Forewarn's Kafka pipeline.
//!
//! Three stages joined by bounded channels, so decoding, detection and
//! persistence overlap and a slow stage pushes back on Kafka instead of
//! growing a queue:
//!
//! ```text
//! consume thread ──Chunk──► engine thread ──Processed──► persist task
//! (poll + decode)          (windows, LSTM,              (dead letters, alert store,
//!                           detector)                    alerts topic, then offsets)
//! ```
//!
//! At-least-once: `enable.auto.offset.store` is off. An offset is stored only
//! after every effect of the messages below it is durable: rejected messages
//! are on the dead-letter topic, alerts are in the store and on the alerts
//! topic. librdkafka's auto-commit then commits stored offsets; we also commit
//! on partition revocation and at shutdown.
//!
//! Exactly-once alerts through crashes and rebalances (checkpoints on, the
//! default): the engine stage checkpoints device state (windows, LSTM state,
//! detector and open alerts) every `checkpoint_interval` to a compacted state
//! topic, partitioned like the input; offsets are stored only at
//! checkpoints, and the state topic's partition markers say which input
//! offset each checkpoint matches. A new owner of a partition (after a
//! crash, restart or rebalance) restores its last checkpoint and replays
//! from exactly there, reproducing the same batches and so the same
//! deterministic alert ids, which the store upserts. Revoked partitions hand
//! their latest state over before the rebalance completes (see `context`).
//!
//! Files import in one direction: the stages (`consume` with its rebalance
//! callbacks in `context`, `engine_stage`, `persist`) share only the
//! [`messages`] passed between them, the configuration (`config`, and
//! `client`, where every Kafka client is configured) and `checkpoint` (the
//! state topic's format); this file wires them.

mod admin;
mod checkpoint;
mod client;
mod config;
mod connection;
mod consume;
mod context;
mod engine_stage;
mod error;
mod messages;
mod persist;
mod services;
#[cfg(test)]
mod test_alerts;

use std::fmt::Display;
use std::sync::Arc;

use forewarn_core::{Engine, Forecaster};
use rdkafka::consumer::{CommitMode, Consumer};
use tokio_util::sync::CancellationToken;

pub use admin::ensure_topics;
pub use client::base as client_config;
pub use config::{IngestConfig, is_secret_property};
pub use error::IngestError;
pub use messages::ModelSwap;
pub use services::Services;

/// Runs the pipeline until `shutdown` is cancelled (or a stage fails, which
/// cancels it too). Returns after the last durable offsets are committed.
pub async fn run<F>(
    cfg: IngestConfig,
    engine: Engine,
    forecaster: F,
    services: Services,
    shutdown: CancellationToken,
) -> Result<(), IngestError>
where
    F: Forecaster + Send + 'static,
    F::Error: Display,
{
    // No sender: never a swap.
    let (_, swaps) = std::sync::mpsc::channel();
    let model = ModelSwap {
        engine,
        forecaster,
        classifier: None,
    };
    run_reloadable(cfg, model, services, swaps, shutdown).await
}

/// [`run`] with the first model in `model` (and its fault classifier, if
/// any), taking [`ModelSwap`]s from `swaps` (hot reload).
pub async fn run_reloadable<F>(
    cfg: IngestConfig,
    model: ModelSwap<F>,
    services: Services,
    swaps: std::sync::mpsc::Receiver<ModelSwap<F>>,
    shutdown: CancellationToken,
) -> Result<(), IngestError>
where
    F: Forecaster + Send + 'static,
    F::Error: Display,
{
    cfg.validate().map_err(IngestError::Config)?;
    let cfg = cfg.resolved();
    let ModelSwap {
        engine,
        forecaster,
        classifier,
    } = model;
    admin::ensure_topics_watched(&cfg, Some(services.health.clone()), &shutdown).await?;
    let (chunk_tx, chunk_rx) = tokio::sync::mpsc::channel(cfg.pipeline_depth);
    let consumer = Arc::new(consume::create_consumer(&cfg, &services, chunk_tx.clone())?);
    let producer = client::producer(&cfg)?;
    let schema = engine.config().schema.clone();

    let (done_tx, done_rx) = tokio::sync::mpsc::channel(cfg.pipeline_depth);
    let (spare_tx, spare_rx) = messages::spares();

    let consume = {
        let (consumer, services, shutdown, cfg) = (
            consumer.clone(),
            services.clone(),
            shutdown.clone(),
            cfg.clone(),
        );
        std::thread::Builder::new()
            .name("forewarn-consume".into())
            .spawn(move || {
                let input = (chunk_tx, spare_rx);
                consume::run(&consumer, &cfg, &schema, &services, input, &shutdown)
            })
            .expect("spawning a thread")
    };
    let engine_stage = {
        let (services, shutdown, cfg) = (services.clone(), shutdown.clone(), cfg.clone());
        std::thread::Builder::new()
            .name("forewarn-engine".into())
            .spawn(move || {
                let input = (chunk_rx, spare_tx);
                engine_stage::run(
                    &cfg, engine, forecaster, classifier, &services, input, done_tx, &shutdown,
                    &swaps,
                )
            })
            .expect("spawning a thread")
    };
    let lag = tokio::spawn(consume::watch_lag(
        consumer.clone(),
        services.clone(),
        shutdown.clone(),
    ));

    let persisted = persist::run(&cfg, &producer, &consumer, &services, done_rx, &shutdown).await;

    // The persist stage drains until the engine stage closes its channel,
    // which follows the consume stage stopping: all threads are finishing.
    let consume_result = consume
        .join()
        .map_err(|_| IngestError::StageDied("consume"))?;
    let engine_result = engine_stage
        .join()
        .map_err(|_| IngestError::StageDied("engine"))?;
    lag.abort();

    services.health.set_shutting_down();
    match consumer.commit_consumer_state(CommitMode::Sync) {
        Ok(()) => tracing::info!("committed final offsets"),
        // Nothing stored since the last commit is not an error worth more than a note.
        Err(e) => tracing::info!(error = %e, "final offset commit had nothing to do or failed"),
    }
    let m = &services.metrics;
    tracing::info!(
        consumed = m.messages_consumed.get(),
        accepted = m.readings_accepted.get(),
        duplicates = m.readings_duplicate.get(),
        dead_lettered = m.dead_letters.get(),
        "pipeline stopped"
    );
    consume_result?;
    engine_result?;
    persisted
}
