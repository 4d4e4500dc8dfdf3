//! `forewarn serve`: wires config, model, store, HTTP API and the Kafka pipeline.

use std::fmt::Write as _;
use std::path::PathBuf;
use std::sync::{Arc, RwLock};

use anyhow::Context;
use forewarn_api::AppState;
use forewarn_api::{AlertBus, DeviceBoard, ModelInfo};
use forewarn_core::Engine;
use forewarn_store::AlertStore;
use forewarn_telemetry::events::{InternalEvent, ModelLoaded};
use forewarn_telemetry::{Health, Metrics};

use crate::config::{Config, LogFormat, LogSection, StoreSection};
use forewarn_model::parse_device;

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
    let precision = cfg.model.precision;
    let model = forewarn_model::load_for_inference(&cfg.model.path, device, precision)
        .with_context(|| format!("loading model from {}", cfg.model.path.display()))?;
    tracing::info!(
        model = %model.meta.name, version = %model.meta.version, kind = %model.meta.kind,
        device = %forewarn_model::describe_device(device), threads, %precision,
        channels = model.meta.channels.len(), horizon = model.meta.horizon,
        strategy = model.meta.strategy().kind(), threshold = model.meta.strategy().nominal_threshold(),
        "model loaded"
    );
    let classifier = match &cfg.model.diagnosis {
        Some(path) => {
            let c = forewarn_model::load_classifier_for(path, &model.meta, device)
                .context("loading the fault classifier (model.diagnosis)")?;
            tracing::info!(
                classifier = %c.meta().version, classes = c.meta().description.classes.len(),
                window = c.meta().description.window, "fault classifier loaded: open alerts get a diagnosis"
            );
            Some(c)
        }
        None => None,
    };
    crate::cli::runtime()?.block_on(serve(cfg, model, classifier, device))
}

async fn serve(
    cfg: Config,
    model: forewarn_model::Model,
    classifier: Option<forewarn_model::SavedClassifier>,
    device: tch::Device,
) -> anyhow::Result<()> {
    let shutdown = crate::cli::shutdown_on_signal();
    let metrics = Arc::new(Metrics::new());
    let health = Arc::new(Health::with_metrics(&metrics));
    let Some(store) = open_store(&cfg.store, &shutdown).await? else {
        tracing::info!("stopped while waiting for the alert store");
        return Ok(());
    };
    // Alerts left open by an earlier run are still open.
    let open = {
        let store = store.clone();
        tokio::task::spawn_blocking(move || store.count_open())
            .await
            .context("counting open alerts")?
            .context("counting open alerts")?
    };
    metrics.set_alerts_open(open);
    let board = Arc::new(DeviceBoard::new());
    let meta = &model.meta;
    let mut info = describe(meta, device, cfg.model.precision);
    info.diagnosis = classifier.as_ref().map(|c| c.meta().version.clone());
    ModelLoaded {
        name: &meta.name,
        version: &meta.version,
    }
    .emit(&metrics);
    health.set_model_loaded(true);
    let model_info = Arc::new(RwLock::new(Some(info)));
    let (swap_tx, swaps) = std::sync::mpsc::channel();
    let reloader = reloader(&cfg, device, model_info.clone(), metrics.clone(), swap_tx);

    let bus = AlertBus::new(cfg.http.stream_buffer);
    let mut state = AppState::new(
        store.clone(),
        board.clone(),
        health.clone(),
        metrics.clone(),
        model_info.clone(),
    );
    state.bus = bus.clone();
    state.auth = Arc::new(forewarn_api::Auth::new(
        &cfg.http.tokens,
        cfg.http.read_requires_token,
    ));
    state.device_allow_list = Arc::new(cfg.metrics.device_allow_list.clone());
    state.reloader = Some(reloader.clone());
    let tls = cfg
        .http
        .tls_files()
        .map(|files| forewarn_api::tls::TlsReloader::new(files, metrics.clone()))
        .transpose()
        .context("loading the HTTPS certificate (http.tls_cert_file, http.tls_key_file)")?;
    reload_on_sighup(reloader, tls.clone(), shutdown.clone());
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
    match &tls {
        Some(t) => tracing::info!(addr = %listener.local_addr()?, scheme = "https",
            cert_file = %t.files().cert.display(), "HTTP API listening"),
        None => {
            tracing::info!(addr = %listener.local_addr()?, scheme = "http", "HTTP API listening")
        }
    }
    // On a shutdown signal /readyz turns 503 at once, while the HTTP API
    // keeps answering until the pipeline has drained and committed.
    {
        let (health, shutdown) = (health.clone(), shutdown.clone());
        tokio::spawn(async move {
            shutdown.cancelled().await;
            health.set_shutting_down();
        });
    }
    let http_stop = tokio_util::sync::CancellationToken::new();
    let http = {
        let stop = http_stop.clone();
        tokio::spawn(async move {
            match tls {
                Some(tls) => {
                    forewarn_api::tls::serve_tls(listener, state, api_config, &tls, stop).await
                }
                None => forewarn_api::serve_with(listener, state, api_config, stop).await,
            }
        })
    };

    let webhook = (!cfg.webhook.url.is_empty()).then(|| -> anyhow::Result<_> {
        let w = &cfg.webhook;
        let auth = w.auth()?;
        tracing::info!(url = %w.url, ca_file = %w.ca_file.display(), auth = ?auth, "alert webhook enabled");
        Ok(forewarn_api::webhook::spawn(
            forewarn_api::webhook::WebhookConfig {
                url: w.url.clone(),
                ca_file: (!w.ca_file.as_os_str().is_empty()).then(|| w.ca_file.clone()),
                resend_interval: std::time::Duration::from_millis(w.resend_interval_ms),
                timeout: std::time::Duration::from_millis(w.timeout_ms),
                initial_backoff: std::time::Duration::from_millis(w.initial_backoff_ms),
                max_backoff: std::time::Duration::from_millis(w.max_backoff_ms),
                auth,
                external_url: w.external_url.clone(),
            },
            &bus,
            store.clone(),
            metrics.clone(),
            shutdown.clone(),
        )?)
    }).transpose()?;

    let engine = Engine::new(model.engine_config(cfg.detector, cfg.pipeline.max_batch))
        .with_max_devices(cfg.pipeline.max_devices);
    let services = forewarn_ingest::Services {
        store,
        board,
        health: health.clone(),
        metrics,
        bus,
    };
    let first = forewarn_ingest::ModelSwap {
        engine,
        forecaster: model.network,
        classifier: classifier.map(|c| Box::new(c) as _),
    };
    let result = forewarn_ingest::run_reloadable(
        cfg.kafka.clone(),
        first,
        services,
        swaps,
        shutdown.clone(),
    )
    .await;
    health.set_shutting_down();
    shutdown.cancel();
    http_stop.cancel();
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

/// Opens the alert store: SQLite at `store.path`, or the Postgres database
/// at `store.url`. While Postgres is unreachable (refused, timed out,
/// starting up, out of connections) `serve` waits like it does for the
/// broker: retries with back-off (0.25 s doubling to 10 s), logging each
/// attempt, until the store answers or a shutdown signal comes (`None`).
/// The HTTP API starts after. Errors a retry cannot fix (login refused, no
/// such database, a newer schema, an unwritable SQLite path) end `serve` at
/// once with the reason. Logs show the URL with its password masked.
async fn open_store(
    section: &StoreSection,
    shutdown: &tokio_util::sync::CancellationToken,
) -> anyhow::Result<Option<Arc<AlertStore>>> {
    let shown = section.describe();
    let mut backoff = std::time::Duration::from_millis(250);
    loop {
        let s = section.clone();
        // Opening blocks (and the Postgres client must not run on an async
        // worker): on the blocking pool, like every store call.
        let opened = tokio::task::spawn_blocking(move || {
            if s.url.is_empty() {
                AlertStore::open(&s.path)
            } else {
                AlertStore::connect(&s.url)
            }
        })
        .await
        .context("alert store open task")?;
        match opened {
            Ok(store) => {
                tracing::info!(store = %shown, "alert store open");
                return Ok(Some(Arc::new(store)));
            }
            Err(e) if e.is_transient() => {
                tracing::warn!(store = %shown, error = %e, retry_in_ms = backoff.as_millis() as u64,
                    "alert store not reachable yet; waiting");
                tokio::select! {
                    () = shutdown.cancelled() => return Ok(None),
                    () = tokio::time::sleep(backoff) => {}
                }
                backoff = (backoff * 2).min(std::time::Duration::from_secs(10));
            }
            Err(e) => return Err(anyhow::Error::new(e).context("opening the alert store")),
        }
    }
}

fn describe(
    meta: &forewarn_model::ModelMeta,
    device: tch::Device,
    precision: forewarn_model::Precision,
) -> ModelInfo {
    let mut device = forewarn_model::describe_device(device);
    if precision != forewarn_model::Precision::F32 {
        write!(device, ", {precision} inference").expect("writing to a String");
    }
    ModelInfo {
        name: meta.name.clone(),
        version: meta.version.clone(),
        kind: meta.kind.to_string(),
        channels: meta.channels.clone(),
        context: meta.context.clone(),
        members: meta.members,
        horizon: meta.horizon,
        window: meta.window,
        threshold: meta.strategy().nominal_threshold(),
        strategy: meta.strategy().kind().into(),
        device,
        diagnosis: None,
        grid: (meta.engine_config(Default::default(), 1).grid.as_ref()).map(Into::into),
    }
}

/// Hot reload: loads the model at `model.path` again, validates it (the
/// artifact checks of `forewarn_model::load`, then the same channel schema
/// as the running model, which the consume stage decodes with), and hands
/// it with a fresh engine to the engine thread, which swaps it in between
/// chunks. A rejected model leaves the running one untouched. Reloads are
/// serialised.
fn reloader(
    cfg: &Config,
    device: tch::Device,
    info: Arc<RwLock<Option<ModelInfo>>>,
    metrics: Arc<Metrics>,
    swaps: std::sync::mpsc::Sender<forewarn_ingest::ModelSwap<forewarn_model::Network>>,
) -> forewarn_api::ModelReloader {
    let path = cfg.model.path.clone();
    let diagnosis = cfg.model.diagnosis.clone();
    let precision = cfg.model.precision;
    let detector = cfg.detector;
    let max_batch = cfg.pipeline.max_batch;
    let max_devices = cfg.pipeline.max_devices;
    let lock = Arc::new(tokio::sync::Mutex::new(()));
    let swaps = Arc::new(std::sync::Mutex::new(swaps));
    Arc::new(move || {
        let (path, diagnosis, info, metrics, lock, swaps) = (
            path.clone(),
            diagnosis.clone(),
            info.clone(),
            metrics.clone(),
            lock.clone(),
            swaps.clone(),
        );
        Box::pin(async move {
            let _one_at_a_time = lock.lock().await;
            let running = info
                .read()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .clone();
            let shown = path.display().to_string();
            // The classifier is loaded again too (it may have been
            // replaced beside the model) and must fit the new model.
            let loaded = tokio::task::spawn_blocking(move || {
                let model = forewarn_model::load_for_inference(&path, device, precision)?;
                let classifier = match &diagnosis {
                    Some(p) => Some(
                        forewarn_model::load_classifier_for(p, &model.meta, device)
                            .context("loading the fault classifier (model.diagnosis)")?,
                    ),
                    None => None,
                };
                anyhow::Ok((model, classifier))
            })
            .await
            .map_err(|e| format!("loading task failed: {e}"))
            .and_then(|r| r.map_err(|e| format!("{e:#}")));
            let checked = loaded.and_then(|(m, c)| match &running {
                Some(r) if r.channels != m.meta.channels => Err(format!(
                    "its channels ({} channels: {}) differ from the running model's ({}: {}); \
                     a channel schema change needs a restart",
                    m.meta.channels.len(),
                    m.meta.channels.join(","),
                    r.channels.len(),
                    r.channels.join(",")
                )),
                _ => Ok((m, c)),
            });
            let (model, classifier) = match checked {
                Ok(m) => m,
                Err(e) => {
                    metrics.model_reloads.with_label_values(&["rejected"]).inc();
                    tracing::warn!(path = %shown, error = %e, "model reload rejected; the running model is kept");
                    return Err(e);
                }
            };
            let mut new = describe(&model.meta, device, precision);
            new.diagnosis = classifier.as_ref().map(|c| c.meta().version.clone());
            let engine =
                Engine::new(model.engine_config(detector, max_batch)).with_max_devices(max_devices);
            let swap = forewarn_ingest::ModelSwap {
                engine,
                forecaster: model.network,
                classifier: classifier.map(|c| Box::new(c) as _),
            };
            if swaps
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .send(swap)
                .is_err()
            {
                return Err("the pipeline has stopped".into());
            }
            *info
                .write()
                .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(new.clone());
            metrics.model_reloads.with_label_values(&["ok"]).inc();
            ModelLoaded {
                name: &new.name,
                version: &new.version,
            }
            .emit(&metrics);
            tracing::info!(
                model = %new.name, version = %new.version, kind = %new.kind,
                previous = running.as_ref().map_or("", |r| r.version.as_str()),
                strategy = %new.strategy, threshold = new.threshold,
                "model reloaded; the engine swaps it in before the next chunk"
            );
            Ok(new)
        })
            as std::pin::Pin<
                Box<dyn std::future::Future<Output = Result<ModelInfo, String>> + Send>,
            >
    })
}

/// SIGHUP reloads the model, like `POST /api/v1/models/reload`, and the
/// HTTPS certificate when there is one (certificate renewal without a
/// restart).
fn reload_on_sighup(
    reload: forewarn_api::ModelReloader,
    tls: Option<forewarn_api::tls::TlsReloader>,
    shutdown: tokio_util::sync::CancellationToken,
) {
    tokio::spawn(async move {
        let mut hup = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(error = %e, "cannot install a SIGHUP handler; reload over HTTP only");
                return;
            }
        };
        loop {
            tokio::select! {
                () = shutdown.cancelled() => return,
                _ = hup.recv() => {
                    tracing::info!(tls_certificate = tls.is_some(), "SIGHUP: reloading the model");
                    // Each outcome is logged by its reloader.
                    if let Some(tls) = tls.clone() {
                        // File reads: off the async workers.
                        let _ = tokio::task::spawn_blocking(move || tls.reload()).await;
                    }
                    let _ = reload().await;
                }
            }
        }
    });
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
