//! `forewarn serve`: wires config, model, store, HTTP API and the Kafka pipeline.

use std::path::PathBuf;
use std::sync::{Arc, RwLock};

use anyhow::Context;
use forewarn_api::AppState;
use forewarn_core::Engine;
use forewarn_store::AlertStore;
use forewarn_telemetry::events::{InternalEvent, ModelLoaded};
use forewarn_telemetry::{AlertBus, DeviceBoard, Health, Metrics, ModelInfo};

use crate::config::{Config, LogFormat, LogSection, parse_device};

#[derive(clap::Args, Debug)]
pub struct ServeArgs {
    /// Config file (TOML); every setting also has a FOREWARN_ env override.
    #[arg(long, short)]
    config: Option<PathBuf>,
    /// Model artifact directory (overrides model.path).
    #[arg(long)]
    model: Option<PathBuf>,
}

pub fn run(args: ServeArgs) -> anyhow::Result<()> {
    let mut cfg = Config::load(args.config.as_deref())?;
    if let Some(m) = args.model {
        cfg.model.path = m;
    }
    init_logging(&cfg.log)?;
    let threads = match cfg.model.threads {
        0 => (std::thread::available_parallelism().map_or(1, usize::from) / 2).max(1),
        n => n,
    };
    forewarn_model::set_threads(threads);
    let device = parse_device(&cfg.model.device)?;
    let model = forewarn_model::load(&cfg.model.path, device)
        .with_context(|| format!("loading model from {}", cfg.model.path.display()))?;
    tracing::info!(
        model = %model.meta.name, version = %model.meta.version,
        device = %forewarn_model::describe_device(device), threads,
        channels = model.meta.channels.len(), horizon = model.meta.horizon, threshold = model.meta.threshold.value,
        "model loaded"
    );
    crate::runtime()?.block_on(serve(cfg, model, device))
}

async fn serve(
    cfg: Config,
    model: forewarn_model::LoadedModel,
    device: tch::Device,
) -> anyhow::Result<()> {
    let shutdown = crate::shutdown_on_signal();
    let metrics = Arc::new(Metrics::new());
    let health = Arc::new(Health::with_metrics(&metrics));
    let store = Arc::new(
        AlertStore::open(&cfg.store.path)
            .with_context(|| format!("opening alert store {}", cfg.store.path.display()))?,
    );
    // Alerts left open by an earlier run are still open.
    metrics.set_alerts_open(store.count_open().context("counting open alerts")?);
    let board = Arc::new(DeviceBoard::new());
    let meta = &model.meta;
    let info = ModelInfo {
        name: meta.name.clone(),
        version: meta.version.clone(),
        channels: meta.channels.clone(),
        horizon: meta.horizon,
        window: meta.window,
        threshold: meta.threshold.value,
        device: forewarn_model::describe_device(device),
    };
    ModelLoaded {
        name: &meta.name,
        version: &meta.version,
    }
    .emit(&metrics);
    health.set_model_loaded(true);

    let bus = AlertBus::new(cfg.http.stream_buffer);
    let mut state = AppState::new(
        store.clone(),
        board.clone(),
        health.clone(),
        metrics.clone(),
        Arc::new(RwLock::new(Some(info))),
    );
    state.bus = bus.clone();
    state.auth = Arc::new(forewarn_api::Auth::new(
        &cfg.http.tokens,
        cfg.http.read_requires_token,
    ));
    state.device_allow_list = Arc::new(cfg.metrics.device_allow_list.clone());
    if cfg.http.tokens.is_empty() {
        tracing::info!("no http.tokens configured: acknowledge and model reload are disabled");
    }
    let api_config = forewarn_api::ApiConfig {
        request_timeout: std::time::Duration::from_millis(cfg.http.request_timeout_ms),
        body_limit: cfg.http.body_limit_bytes,
    };
    let listener = tokio::net::TcpListener::bind(cfg.http.listen)
        .await
        .with_context(|| format!("binding the HTTP listener on {}", cfg.http.listen))?;
    tracing::info!(addr = %listener.local_addr()?, "HTTP API listening");
    let http = tokio::spawn(forewarn_api::serve_with(
        listener,
        state,
        api_config,
        shutdown.clone(),
    ));

    let webhook = (!cfg.webhook.url.is_empty()).then(|| {
        let w = &cfg.webhook;
        tracing::info!(url = %w.url, "alert webhook enabled");
        forewarn_api::webhook::spawn(
            forewarn_api::webhook::WebhookConfig {
                url: w.url.clone(),
                resend_interval: std::time::Duration::from_millis(w.resend_interval_ms),
                timeout: std::time::Duration::from_millis(w.timeout_ms),
                initial_backoff: std::time::Duration::from_millis(w.initial_backoff_ms),
                max_backoff: std::time::Duration::from_millis(w.max_backoff_ms),
                bearer_token: (!w.bearer_token.is_empty()).then(|| w.bearer_token.clone()),
                external_url: w.external_url.clone(),
            },
            &bus,
            store.clone(),
            metrics.clone(),
            shutdown.clone(),
        )
    });

    let engine = Engine::new(model.engine_config(cfg.detector, cfg.pipeline.max_batch));
    let services = forewarn_ingest::Services {
        store,
        board,
        health: health.clone(),
        metrics,
        bus,
    };
    let result = forewarn_ingest::run(
        cfg.kafka.clone(),
        engine,
        model.forecaster,
        services,
        shutdown.clone(),
    )
    .await;
    health.set_shutting_down();
    shutdown.cancel();
    if let Some(w) = webhook {
        let _ = w.await;
    }
    match http.await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => tracing::warn!(error = %e, "HTTP server error"),
        Err(e) => tracing::warn!(error = %e, "HTTP server task failed"),
    }
    result.context("pipeline")?;
    tracing::info!("stopped");
    Ok(())
}

fn init_logging(log: &LogSection) -> anyhow::Result<()> {
    let filter = tracing_subscriber::EnvFilter::try_new(&log.level)
        .with_context(|| format!("invalid configuration: log.level {:?}", log.level))?;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        // Colour only for a person at a terminal; files and pipes get plain text.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()));
    let r = match log.format {
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
        LogFormat::Text => builder.try_init(),
    };
    r.map_err(|e| anyhow::anyhow!("initialising logging: {e}"))
}
