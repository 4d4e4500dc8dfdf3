//! Alert delivery to an HTTP receiver in Alertmanager's API shape.
//!
//! A task fed by the [`AlertBus`] POSTs JSON arrays of alerts shaped like
//! Alertmanager's `POST /api/v2/alerts` body (so the URL can be an
//! Alertmanager directly, or any webhook that understands that shape):
//!
//! ```json
//! [{"labels": {"alertname": "ForewarnAnomaly", "device": "pump-7", "severity": "critical", ...},
//!   "annotations": {"summary": "...", "top_channels": "flow 94%, ...", ...},
//!   "startsAt": "2026-11-28T12:00:00Z", "endsAt": "2026-11-28T12:04:00Z",
//!   "generatorURL": "http://forewarn:8080/?alert=..."}]
//! ```
//!
//! With a fault classifier, an alert's diagnosis adds the annotations
//! `diagnosis` (`"IDV(6) A feed loss (step) 0.91; IDV(7) ... 0.05; ..."`: the
//! most probable classes first) and `diagnosis_classifier`
//! (`name@version`). A changed diagnosis (a `diagnosed` event) re-sends the
//! firing alert with the new annotations at once, as Alertmanager accepts
//! for an alert it already holds.
//!
//! An alert of a model whose sensors are laid out on a grid adds the
//! annotation `cells` (`"r3 c4 cell_r3_c4 41%, r3 c5 cell_r3_c5 20%"`: the
//! cells behind the error, 0-based row and column, largest share first).
//!
//! Like Prometheus, it re-sends every open alert each `resend_interval`
//! with `endsAt` four intervals ahead (so the receiver expires the alert if
//! Forewarn goes away), and sends a resolved alert once with `endsAt` set to
//! its resolution time. Labels are those of the first send, so a receiver
//! sees one alert from firing to resolved even if the severity escalated.
//!
//! # Delivery guarantees
//! Best effort with retries: a failed POST is retried with exponential
//! back-off (`initial_backoff` doubling up to `max_backoff`) until it
//! succeeds; changes arriving meanwhile are merged into the next attempt.
//! The task never blocks the pipeline: it reads the bus like any live
//! consumer, and when it falls behind (the bus overwrote events it had not
//! read) it re-reads the open alerts from the store and resolves those it
//! held that are no longer open. At start it loads the open alerts from the
//! store, so a restart re-sends them. Not durable: a resolution that
//! happens while the receiver is down and Forewarn then restarts is not
//! re-sent; the receiver expires that alert at its last `endsAt` instead.
//! The Kafka alerts topic is the durable, at-least-once channel.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, SecondsFormat, Utc};
use forewarn_core::{AlertState, Diagnosis, GridCell};
use forewarn_store::{AlertQuery, AlertRecord, AlertStore, MAX_LIMIT};
use forewarn_telemetry::Metrics;

use crate::bus::{AlertBus, AlertEventKind};
use serde_json::{Value, json};
use tokio::sync::broadcast::error::RecvError;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// How the sender authenticates to the receiver.
#[derive(Clone, Default)]
pub enum WebhookAuth {
    #[default]
    None,
    /// `Authorization: Bearer <token>`.
    Bearer(String),
    /// `Authorization: Basic` (user, password).
    Basic(String, String),
}

impl std::fmt::Debug for WebhookAuth {
    // Never the secret itself: the config is logged.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            WebhookAuth::None => f.write_str("None"),
            WebhookAuth::Bearer(_) => f.write_str("Bearer(****)"),
            WebhookAuth::Basic(user, _) => write!(f, "Basic({user}, ****)"),
        }
    }
}

/// Why the sender cannot start.
#[derive(Debug, thiserror::Error)]
pub enum WebhookError {
    #[error("webhook CA file {path}: {why}")]
    CaFile { path: String, why: String },
    #[error("webhook HTTP client: {0}")]
    Client(String),
}

/// Settings of [`spawn`].
#[derive(Clone, Debug)]
pub struct WebhookConfig {
    /// Receiver URL (`http://` or `https://`).
    pub url: String,
    /// PEM bundle of certificate authorities trusted for an `https://`
    /// receiver, besides the public roots (webpki-roots).
    pub ca_file: Option<std::path::PathBuf>,
    pub resend_interval: Duration,
    /// Timeout of one POST.
    pub timeout: Duration,
    pub initial_backoff: Duration,
    pub max_backoff: Duration,
    /// The `Authorization` header sent, if any.
    pub auth: WebhookAuth,
    /// Base of `generatorURL` (e.g. `http://forewarn.plant:8080`); empty:
    /// no link.
    pub external_url: String,
}

fn rfc3339(ms: i64) -> String {
    DateTime::<Utc>::from_timestamp_millis(ms)
        .unwrap_or_default()
        .to_rfc3339_opts(SecondsFormat::Millis, true)
}

fn labels(a: &AlertRecord) -> BTreeMap<&'static str, String> {
    BTreeMap::from([
        ("alertname", "ForewarnAnomaly".to_owned()),
        ("device", a.device.clone()),
        ("severity", a.severity.as_str().to_owned()),
        ("model", a.model.clone()),
        ("model_version", a.model_version.clone()),
        ("alert_id", a.id.clone()),
    ])
}

/// A diagnosis as one annotation: the top classes with their
/// probabilities, most probable first.
fn diagnosis_text(d: &Diagnosis) -> String {
    d.top
        .iter()
        .map(|c| format!("{} {:.2}", c.name, c.probability))
        .collect::<Vec<_>>()
        .join("; ")
}

/// An alert's grid cells as one annotation: row, column, channel and
/// share, largest first.
fn cells_text(cells: &[GridCell]) -> String {
    cells
        .iter()
        .map(|c| {
            format!(
                "r{} c{} {} {:.0}%",
                c.row,
                c.col,
                c.channel,
                c.share * 100.0
            )
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// One alert in Alertmanager's shape. `labels` are the ones first sent.
fn am_alert(
    cfg: &WebhookConfig,
    a: &AlertRecord,
    labels: &BTreeMap<&'static str, String>,
    now_ms: i64,
) -> Value {
    let top: Vec<String> = a
        .contributors
        .iter()
        .take(5)
        .map(|c| format!("{} {:.0}%", c.channel, c.share * 100.0))
        .collect();
    let ends_at = match (a.state, a.resolved_at) {
        (AlertState::Resolved, Some(t)) => t,
        _ => now_ms + 4 * cfg.resend_interval.as_millis() as i64,
    };
    let mut annotations = json!({
        "summary": format!("Anomaly on {}: score {:.3} over threshold {:.3}", a.device, a.peak_score, a.threshold),
        "description": format!(
            "Forecast error of {} ({} {}) above its threshold since {}; top channels: {}.",
            a.device, a.model, a.model_version, rfc3339(a.opened_at), top.join(", ")
        ),
        "top_channels": top.join(", "),
        "score": format!("{}", a.score),
        "peak_score": format!("{}", a.peak_score),
        "threshold": format!("{}", a.threshold),
        "current_severity": a.severity.as_str(),
    });
    if let Some(d) = &a.diagnosis {
        annotations["diagnosis"] = json!(diagnosis_text(d));
        annotations["diagnosis_classifier"] =
            json!(format!("{}@{}", d.classifier, d.classifier_version));
        if let Some(top) = d.top.first() {
            annotations["description"] = json!(format!(
                "{} Likely fault: {} ({:.0}%).",
                annotations["description"].as_str().unwrap_or_default(),
                top.name,
                top.probability * 100.0
            ));
        }
    }
    if !a.cells.is_empty() {
        annotations["cells"] = json!(cells_text(&a.cells));
    }
    if let Some(ack) = &a.ack {
        annotations["acknowledged_by"] = json!(ack.by);
        annotations["acknowledged_at"] = json!(rfc3339(ack.at));
        annotations["ack_note"] = json!(ack.note);
    }
    let mut v = json!({
        "labels": labels,
        "annotations": annotations,
        "startsAt": rfc3339(a.opened_at),
        "endsAt": rfc3339(ends_at),
    });
    if !cfg.external_url.is_empty() {
        v["generatorURL"] = json!(format!(
            "{}/?alert={}",
            cfg.external_url.trim_end_matches('/'),
            a.id
        ));
    }
    v
}

/// What the sender knows.
struct Sender {
    cfg: WebhookConfig,
    client: reqwest::Client,
    metrics: Arc<Metrics>,
    store: Arc<AlertStore>,
    /// Open alerts, with the labels they were first sent with.
    active: HashMap<String, (AlertRecord, BTreeMap<&'static str, String>)>,
    /// To send at the next attempt: id → (alert, labels).
    pending: BTreeMap<String, (AlertRecord, BTreeMap<&'static str, String>)>,
}

impl Sender {
    fn apply(&mut self, a: AlertRecord) {
        if a.state == AlertState::Open {
            let labels = self
                .active
                .get(&a.id)
                .map_or_else(|| labels(&a), |(_, l)| l.clone());
            self.active
                .insert(a.id.clone(), (a.clone(), labels.clone()));
            self.pending.insert(a.id.clone(), (a, labels));
        } else {
            let labels = self
                .active
                .remove(&a.id)
                .map_or_else(|| labels(&a), |(_, l)| l);
            self.pending.insert(a.id.clone(), (a, labels));
        }
        self.metrics
            .webhook_active_alerts
            .set(i64::try_from(self.active.len()).unwrap_or(i64::MAX));
    }

    fn resend_all(&mut self) {
        for (id, v) in &self.active {
            self.pending.insert(id.clone(), v.clone());
        }
    }

    /// Open alerts from the store; alerts held as active that are no longer
    /// open are read back and sent as resolved.
    async fn resync(&mut self) {
        let store = self.store.clone();
        let held: Vec<String> = self.active.keys().cloned().collect();
        let r = tokio::task::spawn_blocking(move || {
            let mut open = Vec::new();
            let mut q = AlertQuery {
                state: Some(AlertState::Open),
                limit: MAX_LIMIT,
                ..Default::default()
            };
            loop {
                let page = store.list(&q)?;
                open.extend(page.alerts);
                match page.next_cursor {
                    Some(c) => q.cursor = Some(c),
                    None => break,
                }
            }
            let mut gone = Vec::new();
            for id in held {
                if !open.iter().any(|a| a.id == id)
                    && let Some(a) = store.get(&id)?
                {
                    gone.push(a);
                }
            }
            Ok::<_, forewarn_store::StoreError>((open, gone))
        })
        .await;
        match r {
            Ok(Ok((open, gone))) => {
                for a in gone.into_iter().chain(open) {
                    self.apply(a);
                }
            }
            Ok(Err(e)) => tracing::warn!(error = %e, "webhook: reading open alerts failed"),
            Err(e) => tracing::warn!(error = %e, "webhook: store task failed"),
        }
    }

    async fn post(&mut self) -> Result<(), String> {
        let now = Utc::now().timestamp_millis();
        let body: Vec<Value> = self
            .pending
            .values()
            .map(|(a, l)| am_alert(&self.cfg, a, l, now))
            .collect();
        let mut req = self
            .client
            .post(&self.cfg.url)
            .timeout(self.cfg.timeout)
            .json(&body);
        req = match &self.cfg.auth {
            WebhookAuth::None => req,
            WebhookAuth::Bearer(t) => req.bearer_auth(t),
            WebhookAuth::Basic(user, password) => req.basic_auth(user, Some(password)),
        };
        let result = match req.send().await {
            Ok(r) if r.status().is_success() => Ok(()),
            Ok(r) => Err(format!("receiver answered {}", r.status())),
            Err(e) => Err(error_chain(&e)),
        };
        let outcome = if result.is_ok() { "ok" } else { "error" };
        self.metrics
            .webhook_requests
            .with_label_values(&[outcome])
            .inc();
        if result.is_ok() {
            for (a, _) in self.pending.values() {
                tracing::debug!(alert_id = %a.id, device = %a.device, state = a.state.as_str(), "webhook delivered");
            }
            self.pending.clear();
        }
        result
    }
}

/// The alert of an event as the store holds it, from what the sender
/// holds: the pipeline's events carry the detector's alert, without the
/// acknowledgement, and a resolution after a restart carries no diagnosis;
/// the store keeps both, so the sender does too. An acknowledgement event
/// is read from the store: it is taken as it is.
fn merged(
    active: &HashMap<String, (AlertRecord, BTreeMap<&'static str, String>)>,
    kind: AlertEventKind,
    alert: &AlertRecord,
) -> AlertRecord {
    let mut a = alert.clone();
    if kind == AlertEventKind::Acknowledged {
        return a;
    }
    if let Some((held, _)) = active.get(&a.id) {
        if a.ack.is_none() {
            a.ack = held.ack.clone();
        }
        if a.alert.diagnosis.is_none() {
            a.alert.diagnosis = held.diagnosis.clone();
        }
    }
    a
}

/// An error with its causes, e.g. "error sending request for url (...):
/// client error (Connect): invalid peer certificate: UnknownIssuer", so a
/// refused certificate says so.
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let next = s.to_string();
        if !text.contains(&next) {
            text.push_str(": ");
            text.push_str(&next);
        }
        source = s.source();
    }
    text
}

/// The HTTP client: rustls, the public roots plus `ca_file`'s authorities.
pub fn client(cfg: &WebhookConfig) -> Result<reqwest::Client, WebhookError> {
    let mut builder = reqwest::Client::builder().use_rustls_tls();
    if let Some(path) = &cfg.ca_file {
        let shown = path.display().to_string();
        let pem = std::fs::read(path).map_err(|e| WebhookError::CaFile {
            path: shown.clone(),
            why: e.to_string(),
        })?;
        let certs =
            reqwest::Certificate::from_pem_bundle(&pem).map_err(|e| WebhookError::CaFile {
                path: shown.clone(),
                why: error_chain(&e),
            })?;
        if certs.is_empty() {
            return Err(WebhookError::CaFile {
                path: shown,
                why: "no PEM certificate in it".into(),
            });
        }
        for c in certs {
            builder = builder.add_root_certificate(c);
        }
    }
    builder
        .build()
        .map_err(|e| WebhookError::Client(error_chain(&e)))
}

/// Starts the sender; it runs until `shutdown` is cancelled. Fails only
/// when the HTTP client cannot be built (an unreadable CA file).
pub fn spawn(
    cfg: WebhookConfig,
    bus: &AlertBus,
    store: Arc<AlertStore>,
    metrics: Arc<Metrics>,
    shutdown: CancellationToken,
) -> Result<JoinHandle<()>, WebhookError> {
    let client = client(&cfg)?;
    let mut rx = bus.subscribe();
    Ok(tokio::spawn(async move {
        let mut s = Sender {
            client,
            cfg,
            metrics,
            store,
            active: HashMap::new(),
            pending: BTreeMap::new(),
        };
        s.resync().await;
        let mut resend = tokio::time::interval(s.cfg.resend_interval);
        resend.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut backoff = s.cfg.initial_backoff;
        // When the next attempt may start (after a failure: back-off).
        let mut not_before = tokio::time::Instant::now();
        loop {
            let ready = !s.pending.is_empty();
            tokio::select! {
                () = shutdown.cancelled() => break,
                ev = rx.recv() => match ev {
                    Ok(ev) => s.apply(merged(&s.active, ev.kind, &ev.alert)),
                    Err(RecvError::Lagged(n)) => {
                        tracing::warn!(missed = n, "webhook sender fell behind the alert bus; re-reading open alerts");
                        s.resync().await;
                    }
                    Err(RecvError::Closed) => break,
                },
                _ = resend.tick() => s.resend_all(),
                () = tokio::time::sleep_until(not_before), if ready => {
                    match s.post().await {
                        Ok(()) => backoff = s.cfg.initial_backoff,
                        Err(e) => {
                            tracing::warn!(error = %e, url = %s.cfg.url, alerts = s.pending.len(),
                                retry_in_ms = backoff.as_millis() as u64, "webhook delivery failed; retrying");
                            not_before = tokio::time::Instant::now() + backoff;
                            backoff = (backoff * 2).min(s.cfg.max_backoff);
                        }
                    }
                }
            }
        }
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bus::AlertEvent;
    use axum::Json;
    use axum::extract::State;
    use axum::http::{HeaderMap, StatusCode};
    use forewarn_core::{Alert, ChannelShare, Severity};
    use forewarn_store::{Acknowledgement, AlertChange};
    use std::sync::Mutex;

    /// (time since start, auth header, body) of each accepted POST.
    type Got = Vec<(Duration, Option<String>, Value)>;

    #[derive(Clone, Default)]
    struct Receiver {
        /// (time since start, auth header, body) of each accepted POST.
        got: Arc<Mutex<Got>>,
        /// Requests to fail before accepting.
        fail_first: Arc<Mutex<usize>>,
        attempts: Arc<Mutex<Vec<Duration>>>,
        start: Arc<Mutex<Option<std::time::Instant>>>,
    }

    async fn receive(
        State(r): State<Receiver>,
        headers: HeaderMap,
        Json(body): Json<Value>,
    ) -> StatusCode {
        let t = r
            .start
            .lock()
            .unwrap()
            .get_or_insert_with(std::time::Instant::now)
            .elapsed();
        r.attempts.lock().unwrap().push(t);
        let mut fail = r.fail_first.lock().unwrap();
        if *fail > 0 {
            *fail -= 1;
            return StatusCode::SERVICE_UNAVAILABLE;
        }
        let auth = headers
            .get("authorization")
            .map(|v| v.to_str().unwrap().to_owned());
        r.got.lock().unwrap().push((t, auth, body));
        StatusCode::OK
    }

    fn alert(id_ms: i64) -> Alert {
        Alert {
            id: format!("alert-{id_ms}"),
            device: "pump-7".into(),
            model: "lstm".into(),
            model_version: "v3".into(),
            state: AlertState::Open,
            severity: Severity::Warning,
            opened_at: 1_795_867_200_000 + id_ms,
            resolved_at: None,
            score: 2.5,
            peak_score: 2.5,
            threshold: 1.0,
            contributors: vec![ChannelShare {
                channel: "flow".into(),
                share: 0.9,
            }],
            window_start: 0,
            window_end: 0,
            diagnosis: None,
            cells: vec![],
        }
    }

    /// The first accepted body from index `from` on for which `pred` holds,
    /// and its index.
    async fn find(r: &Receiver, from: usize, pred: impl Fn(&Value) -> bool) -> (usize, Value) {
        for _ in 0..200 {
            {
                let got = r.got.lock().unwrap();
                if let Some(i) = (from..got.len()).find(|i| pred(&got[*i].2)) {
                    return (i, got[i].2.clone());
                }
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        panic!("receiver got {:?}", r.got.lock().unwrap());
    }

    fn by_id<'a>(body: &'a Value, id: &str) -> Option<&'a Value> {
        body.as_array()?
            .iter()
            .find(|x| x["labels"]["alert_id"] == id)
    }

    async fn wait_for(r: &Receiver, n: usize) -> Got {
        for _ in 0..200 {
            {
                let got = r.got.lock().unwrap();
                if got.len() >= n {
                    return got.clone();
                }
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        panic!("receiver got {:?}", r.got.lock().unwrap());
    }

    #[tokio::test]
    async fn retries_resends_and_resolves_in_alertmanager_shape() {
        let recv = Receiver::default();
        *recv.fail_first.lock().unwrap() = 2;
        let app = axum::Router::new()
            .route("/api/v2/alerts", axum::routing::post(receive))
            .with_state(recv.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });

        let store = Arc::new(AlertStore::open_in_memory().unwrap());
        // Open before the sender starts: loaded from the store and sent.
        let old = alert(1);
        store.apply(&[AlertChange::Opened(old.clone())]).unwrap();
        let metrics = Arc::new(Metrics::new());
        let bus = AlertBus::new(16);
        let shutdown = CancellationToken::new();
        let task = spawn(
            WebhookConfig {
                url: format!("http://{addr}/api/v2/alerts"),
                resend_interval: Duration::from_millis(600),
                timeout: Duration::from_secs(2),
                initial_backoff: Duration::from_millis(50),
                max_backoff: Duration::from_millis(200),
                ca_file: None,
                auth: WebhookAuth::Bearer("hook-token".into()),
                external_url: "http://forewarn.test:8080/".into(),
            },
            &bus,
            store.clone(),
            metrics.clone(),
            shutdown.clone(),
        )
        .unwrap();

        // Two failures, then delivered with back-off between attempts.
        let got = wait_for(&recv, 1).await;
        let attempts = recv.attempts.lock().unwrap().clone();
        assert!(attempts.len() >= 3, "{attempts:?}");
        assert!(
            attempts[1] - attempts[0] >= Duration::from_millis(45),
            "{attempts:?}"
        );
        assert!(
            attempts[2] - attempts[1] >= Duration::from_millis(95),
            "{attempts:?}"
        );
        let (_, auth, body) = &got[0];
        assert_eq!(auth.as_deref(), Some("Bearer hook-token"));
        let a = &body[0];
        assert_eq!(body.as_array().unwrap().len(), 1);
        assert_eq!(a["labels"]["alertname"], "ForewarnAnomaly");
        assert_eq!(a["labels"]["device"], "pump-7");
        assert_eq!(a["labels"]["severity"], "warning");
        assert_eq!(a["labels"]["model_version"], "v3");
        assert_eq!(a["labels"]["alert_id"], old.id.as_str());
        assert_eq!(a["startsAt"], "2026-11-28T12:00:00.001Z");
        assert_eq!(
            a["generatorURL"],
            format!("http://forewarn.test:8080/?alert={}", old.id)
        );
        assert!(
            a["annotations"]["top_channels"]
                .as_str()
                .unwrap()
                .contains("flow 90%")
        );
        let ends: DateTime<Utc> = a["endsAt"].as_str().unwrap().parse().unwrap();
        assert!(ends > Utc::now(), "firing alerts end in the future: {a}");
        assert!(
            metrics.webhook_requests.with_label_values(&["error"]).get() >= 2,
            "errors {} ok {}",
            metrics.webhook_requests.with_label_values(&["error"]).get(),
            metrics.webhook_requests.with_label_values(&["ok"]).get()
        );

        // A new alert, then acknowledged while open.
        let new = alert(2);
        bus.publish(AlertEvent {
            kind: AlertEventKind::Opened,
            alert: new.clone().into(),
        });
        let (i, _) = find(&recv, 1, |b| by_id(b, &new.id).is_some()).await;
        let mut acked = AlertRecord::from(new.clone());
        acked.ack = Some(Acknowledgement {
            at: new.opened_at + 5,
            by: "ana".into(),
            note: "on it".into(),
        });
        bus.publish(AlertEvent {
            kind: AlertEventKind::Acknowledged,
            alert: acked,
        });
        let (i, _) = find(&recv, i + 1, |b| {
            by_id(b, &new.id).is_some_and(|x| x["annotations"]["acknowledged_by"] == "ana")
        })
        .await;

        // Re-sent while active: both open alerts again, without new events.
        let (i, _) = find(&recv, i + 1, |b| {
            b.as_array().unwrap().len() == 2 && by_id(b, &old.id).is_some()
        })
        .await;

        // Resolved (at critical): sent with endsAt = resolution time, under
        // the labels first sent (warning), then no longer re-sent.
        let mut res = new.clone();
        res.state = AlertState::Resolved;
        res.severity = Severity::Critical;
        res.resolved_at = Some(new.opened_at + 60_000);
        bus.publish(AlertEvent {
            kind: AlertEventKind::Resolved,
            alert: res.into(),
        });
        let (i, body) = find(&recv, i + 1, |b| {
            by_id(b, &new.id).is_some_and(|x| x["endsAt"] == "2026-11-28T12:01:00.002Z")
        })
        .await;
        let r = by_id(&body, &new.id).unwrap();
        assert_eq!(r["labels"]["severity"], "warning");
        assert_eq!(r["annotations"]["current_severity"], "critical");
        assert_eq!(r["annotations"]["acknowledged_by"], "ana");
        assert_eq!(metrics.webhook_active_alerts.get(), 1);
        let (_, resend) = find(&recv, i + 1, |b| by_id(b, &old.id).is_some()).await;
        assert_eq!(resend.as_array().unwrap().len(), 1, "{resend}");

        shutdown.cancel();
        tokio::time::timeout(Duration::from_secs(5), task)
            .await
            .unwrap()
            .unwrap();
    }

    fn diagnosis(classes: &[(u8, &str, f64)]) -> Diagnosis {
        Diagnosis {
            classifier: "tep-faults".into(),
            classifier_version: "9f2c".into(),
            top: classes
                .iter()
                .map(
                    |&(class, name, probability)| forewarn_core::ClassProbability {
                        class,
                        name: name.into(),
                        probability,
                    },
                )
                .collect(),
            windows: 1,
        }
    }

    #[test]
    fn a_diagnosis_annotation_names_the_top_classes_most_probable_first() {
        let d = diagnosis(&[
            (6, "IDV(6) A feed loss (step)", 0.912),
            (7, "IDV(7) C header pressure loss (step)", 0.05),
            (0, "normal", 0.004),
        ]);
        assert_eq!(
            diagnosis_text(&d),
            "IDV(6) A feed loss (step) 0.91; IDV(7) C header pressure loss (step) 0.05; normal 0.00"
        );
        let cfg = WebhookConfig {
            url: String::new(),
            ca_file: None,
            resend_interval: Duration::from_secs(60),
            timeout: Duration::from_secs(1),
            initial_backoff: Duration::from_millis(50),
            max_backoff: Duration::from_millis(50),
            auth: WebhookAuth::None,
            external_url: String::new(),
        };
        let plain = AlertRecord::from(alert(1));
        let v = am_alert(&cfg, &plain, &labels(&plain), 0);
        assert!(v["annotations"].get("diagnosis").is_none(), "{v}");
        assert!(
            v["annotations"].get("diagnosis_classifier").is_none(),
            "{v}"
        );
        let mut a = alert(1);
        a.diagnosis = Some(d);
        let a = AlertRecord::from(a);
        let v = am_alert(&cfg, &a, &labels(&a), 0);
        assert_eq!(v["annotations"]["diagnosis_classifier"], "tep-faults@9f2c");
        assert!(
            v["annotations"]["description"]
                .as_str()
                .unwrap()
                .ends_with("Likely fault: IDV(6) A feed loss (step) (91%)."),
            "{v}"
        );
        // Labels do not change with the diagnosis: the receiver sees one alert.
        assert_eq!(labels(&a), labels(&plain));
    }

    /// Table: an alert's cells -> its `cells` annotation (absent without).
    #[test]
    fn a_cells_annotation_names_the_top_cells_largest_first() {
        let cfg = WebhookConfig {
            url: String::new(),
            ca_file: None,
            resend_interval: Duration::from_secs(60),
            timeout: Duration::from_secs(1),
            initial_backoff: Duration::from_millis(50),
            max_backoff: Duration::from_millis(50),
            auth: WebhookAuth::None,
            external_url: String::new(),
        };
        let cell = |row, col, share| GridCell {
            row,
            col,
            channel: format!("cell_r{row}_c{col}"),
            share,
        };
        let cases = vec![
            (vec![], None),
            (vec![cell(3, 4, 0.41)], Some("r3 c4 cell_r3_c4 41%")),
            (
                vec![cell(3, 4, 0.41), cell(0, 7, 0.2)],
                Some("r3 c4 cell_r3_c4 41%, r0 c7 cell_r0_c7 20%"),
            ),
        ];
        for (cells, want) in cases {
            let mut a = alert(1);
            a.cells = cells;
            let a = AlertRecord::from(a);
            let v = am_alert(&cfg, &a, &labels(&a), 0);
            assert_eq!(v["annotations"].get("cells").and_then(|c| c.as_str()), want);
        }
    }

    #[tokio::test]
    async fn a_changed_diagnosis_resends_the_firing_alert_keeping_its_acknowledgement() {
        let recv = Receiver::default();
        let app = axum::Router::new()
            .route("/api/v2/alerts", axum::routing::post(receive))
            .with_state(recv.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        let store = Arc::new(AlertStore::open_in_memory().unwrap());
        let metrics = Arc::new(Metrics::new());
        let bus = AlertBus::new(16);
        let shutdown = CancellationToken::new();
        let task = spawn(
            WebhookConfig {
                url: format!("http://{addr}/api/v2/alerts"),
                // Long: every body after the first comes from an event.
                resend_interval: Duration::from_secs(600),
                timeout: Duration::from_secs(2),
                initial_backoff: Duration::from_millis(50),
                max_backoff: Duration::from_millis(200),
                ca_file: None,
                auth: WebhookAuth::None,
                external_url: String::new(),
            },
            &bus,
            store,
            metrics,
            shutdown.clone(),
        )
        .unwrap();
        let feed = diagnosis(&[(6, "IDV(6) A feed loss (step)", 0.6), (7, "IDV(7)", 0.3)]);
        let header = diagnosis(&[(7, "IDV(7)", 0.55), (6, "IDV(6) A feed loss (step)", 0.4)]);
        let annotation = |b: &Value, id: &str, key: &str| -> Value {
            by_id(b, id).map_or(Value::Null, |x| x["annotations"][key].clone())
        };

        // Opened with a diagnosis.
        let mut a = alert(1);
        a.diagnosis = Some(feed.clone());
        bus.publish(AlertEvent {
            kind: AlertEventKind::Opened,
            alert: a.clone().into(),
        });
        let (i, _) = find(&recv, 0, |b| {
            annotation(b, &a.id, "diagnosis") == "IDV(6) A feed loss (step) 0.60; IDV(7) 0.30"
        })
        .await;
        // Acknowledged (as read from the store, with its diagnosis).
        let mut acked = AlertRecord::from(a.clone());
        acked.ack = Some(Acknowledgement {
            at: a.opened_at + 5,
            by: "ana".into(),
            note: String::new(),
        });
        bus.publish(AlertEvent {
            kind: AlertEventKind::Acknowledged,
            alert: acked,
        });
        let (i, _) = find(&recv, i + 1, |b| {
            annotation(b, &a.id, "acknowledged_by") == "ana"
        })
        .await;
        // The ranking changed: sent firing with the new annotations; the
        // pipeline's event has no acknowledgement, the sender keeps it.
        let mut changed = a.clone();
        changed.diagnosis = Some(header.clone());
        bus.publish(AlertEvent {
            kind: AlertEventKind::Diagnosed,
            alert: changed.into(),
        });
        let (i, body) = find(&recv, i + 1, |b| {
            annotation(b, &a.id, "diagnosis") == "IDV(7) 0.55; IDV(6) A feed loss (step) 0.40"
        })
        .await;
        let x = by_id(&body, &a.id).unwrap();
        assert_eq!(x["annotations"]["acknowledged_by"], "ana");
        assert_eq!(x["annotations"]["diagnosis_classifier"], "tep-faults@9f2c");
        let ends: DateTime<Utc> = x["endsAt"].as_str().unwrap().parse().unwrap();
        assert!(ends > Utc::now(), "still firing: {x}");
        // Resolved without a diagnosis (after a restart): the last one stays.
        let mut res = a.clone();
        res.state = AlertState::Resolved;
        res.resolved_at = Some(a.opened_at + 60_000);
        res.diagnosis = None;
        bus.publish(AlertEvent {
            kind: AlertEventKind::Resolved,
            alert: res.into(),
        });
        let (_, body) = find(&recv, i + 1, |b| {
            by_id(b, &a.id).is_some_and(|x| x["endsAt"] == "2026-11-28T12:01:00.001Z")
        })
        .await;
        assert_eq!(
            annotation(&body, &a.id, "diagnosis"),
            "IDV(7) 0.55; IDV(6) A feed loss (step) 0.40"
        );

        shutdown.cancel();
        tokio::time::timeout(Duration::from_secs(5), task)
            .await
            .unwrap()
            .unwrap();
    }

    /// A self-signed certificate for 127.0.0.1 and an HTTPS receiver
    /// serving it; returns (certificate PEM path, URL).
    async fn https_receiver(dir: &std::path::Path, recv: Receiver) -> (std::path::PathBuf, String) {
        use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params
            .subject_alt_names
            .push(rcgen::SanType::IpAddress([127, 0, 0, 1].into()));
        let cert = params.self_signed(&key).unwrap();
        let pem = dir.join("receiver.pem");
        std::fs::write(&pem, cert.pem()).unwrap();
        #[allow(deprecated)] // ring: the build's one provider
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(
                vec![CertificateDer::from(cert.der().to_vec())],
                PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der())),
            )
            .unwrap();
        let app = axum::Router::new()
            .route("/api/v2/alerts", axum::routing::post(receive))
            .with_state(recv);
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let tls = axum_server::tls_rustls::RustlsConfig::from_config(Arc::new(config));
        tokio::spawn(async move {
            axum_server::from_tcp_rustls(listener, tls)
                .unwrap()
                .serve(app.into_make_service())
                .await
        });
        (pem, format!("https://{addr}/api/v2/alerts"))
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn https_receiver_trusted_by_ca_file_gets_basic_auth_and_an_unknown_one_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let recv = Receiver::default();
        let (ca, url) = https_receiver(dir.path(), recv.clone()).await;
        let cfg = |ca_file: Option<std::path::PathBuf>| WebhookConfig {
            url: url.clone(),
            ca_file,
            resend_interval: Duration::from_secs(60),
            timeout: Duration::from_secs(2),
            initial_backoff: Duration::from_millis(50),
            max_backoff: Duration::from_millis(100),
            auth: WebhookAuth::Basic("forewarn".into(), "hook-pw".into()),
            external_url: String::new(),
        };
        let store = Arc::new(AlertStore::open_in_memory().unwrap());
        store.apply(&[AlertChange::Opened(alert(1))]).unwrap();

        // Not trusted (public roots only): refused, with the reason.
        let err = client(&cfg(None))
            .unwrap()
            .post(&url)
            .send()
            .await
            .unwrap_err();
        let why = error_chain(&err);
        assert!(why.contains("UnknownIssuer"), "{why}");
        let metrics = Arc::new(Metrics::new());
        let shutdown = CancellationToken::new();
        // The bus lives as long as the sender (a closed bus stops it).
        let bus = AlertBus::new(16);
        let task = spawn(
            cfg(None),
            &bus,
            store.clone(),
            metrics.clone(),
            shutdown.clone(),
        )
        .unwrap();
        for _ in 0..100 {
            if metrics.webhook_requests.with_label_values(&["error"]).get() >= 2 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert!(
            metrics.webhook_requests.with_label_values(&["error"]).get() >= 2,
            "errors {} ok {}",
            metrics.webhook_requests.with_label_values(&["error"]).get(),
            metrics.webhook_requests.with_label_values(&["ok"]).get()
        );
        assert!(recv.got.lock().unwrap().is_empty());
        shutdown.cancel();
        task.await.unwrap();

        // Trusted through ca_file: delivered, with the basic credentials.
        let shutdown = CancellationToken::new();
        let task = spawn(cfg(Some(ca)), &bus, store, metrics, shutdown.clone()).unwrap();
        let got = wait_for(&recv, 1).await;
        assert_eq!(got[0].1.as_deref(), Some("Basic Zm9yZXdhcm46aG9vay1wdw=="));
        shutdown.cancel();
        task.await.unwrap();

        // An unreadable CA file is an error at start, naming the file.
        let missing = cfg(Some(dir.path().join("missing.pem")));
        let e = client(&missing).unwrap_err().to_string();
        assert!(e.contains("missing.pem"), "{e}");
    }
}
