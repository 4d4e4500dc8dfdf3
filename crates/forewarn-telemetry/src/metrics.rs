//! Every Forewarn metric, registered once in one [`Registry`].
//!
//! Naming follows the Prometheus conventions: the `forewarn_` prefix,
//! `_total` on counters, base units (`_seconds`), and only bounded labels
//! (reject reasons, severities, partitions, HTTP routes).

use prometheus::{
    Encoder, Gauge, GaugeVec, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec,
    IntGauge, IntGaugeVec, Opts, Registry, TextEncoder,
};

use forewarn_core::{RejectReason, Severity};

/// Content type of [`Metrics::render`]'s output.
pub const CONTENT_TYPE: &str = prometheus::TEXT_FORMAT;

/// HTTP methods kept as label values; anything else is counted as `other`
/// (methods are client-chosen tokens, so they must not become labels as is).
const HTTP_METHODS: &[&str] = &["GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS"];

/// The `stage` labels of `forewarn_alert_delay_seconds`, each registered at
/// zero.
pub const ALERT_DELAY_STAGES: [&str; 3] = ["scored", "stored", "published"];

/// The service's metrics. Fields are public so callers with unusual needs
/// can reach a series directly; the usual way to move them is an
/// [`InternalEvent`](crate::InternalEvent), which also logs.
#[derive(Clone)]
pub struct Metrics {
    registry: Registry,

    // Ingest.
    pub messages_consumed: IntCounter,
    pub readings_accepted: IntCounter,
    pub messages_rejected: IntCounterVec,
    pub readings_duplicate: IntCounter,
    pub devices_evicted: IntCounter,
    pub dead_letters: IntCounter,

    // Inference.
    pub inference_batch_size: Histogram,
    pub inference_duration: Histogram,
    pub inference_errors: IntCounter,
    pub batches_scored: IntCounter,

    // Alerts.
    pub alerts_opened: IntCounterVec,
    pub alerts_resolved: IntCounter,
    /// Open alerts whose diagnosis changed its ranking after opening.
    pub alert_diagnosis_changes: IntCounter,
    pub alerts_open: IntGauge,
    pub store_apply_duration: Histogram,
    /// Reading time → alert change scored / stored / published, by stage.
    pub alert_delay: HistogramVec,
    pub store_errors: IntCounter,

    // Stream position.
    pub consumer_lag: IntGaugeVec,
    pub offsets_committed: IntCounter,
    pub offsets_stored: IntCounter,
    pub last_processed_timestamp: Gauge,
    pub devices_tracked: IntGauge,

    // Device-state checkpoints.
    pub checkpoints: IntCounter,
    pub checkpoint_records: IntCounter,
    pub checkpoint_duration: Histogram,
    pub devices_restored: IntCounter,
    pub restore_errors: IntCounter,

    // Identity and state.
    pub model_info: IntGaugeVec,
    pub build_info: IntGaugeVec,
    pub ready: IntGauge,

    // HTTP API.
    pub http_requests: IntCounterVec,
    pub http_request_duration: HistogramVec,

    // Live consumers of alert events.
    pub sse_clients: IntGauge,
    pub sse_events_lagged: IntCounter,
    pub webhook_requests: IntCounterVec,
    pub webhook_active_alerts: IntGauge,

    // Model hot reload.
    pub model_reloads: IntCounterVec,
    /// API certificate reloads (SIGHUP), by outcome.
    pub tls_reloads: IntCounterVec,

    /// Per-device series, only for devices on the configured allow-list
    /// (empty by default, so no per-device series exist).
    pub device_score: GaugeVec,
    pub device_threshold: GaugeVec,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

fn counter(r: &Registry, name: &str, help: &str) -> IntCounter {
    let c = IntCounter::new(name, help).expect("valid metric");
    r.register(Box::new(c.clone())).expect("unique metric");
    c
}

fn counter_vec(r: &Registry, name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
    let c = IntCounterVec::new(Opts::new(name, help), labels).expect("valid metric");
    r.register(Box::new(c.clone())).expect("unique metric");
    c
}

fn gauge(r: &Registry, name: &str, help: &str) -> IntGauge {
    let g = IntGauge::new(name, help).expect("valid metric");
    r.register(Box::new(g.clone())).expect("unique metric");
    g
}

fn gauge_vec(r: &Registry, name: &str, help: &str, labels: &[&str]) -> IntGaugeVec {
    let g = IntGaugeVec::new(Opts::new(name, help), labels).expect("valid metric");
    r.register(Box::new(g.clone())).expect("unique metric");
    g
}

fn histogram(r: &Registry, name: &str, help: &str, buckets: Vec<f64>) -> Histogram {
    let h = Histogram::with_opts(HistogramOpts::new(name, help).buckets(buckets))
        .expect("valid metric");
    r.register(Box::new(h.clone())).expect("unique metric");
    h
}

/// Latency buckets from 0.5 ms to about 8 s.
fn latency_buckets() -> Vec<f64> {
    prometheus::exponential_buckets(0.0005, 2.0, 15).expect("valid buckets")
}

impl Metrics {
    pub fn new() -> Self {
        let r = Registry::new();

        let messages_rejected = counter_vec(
            &r,
            "forewarn_messages_rejected_total",
            "Messages rejected by decoding or validation, by reason.",
            &["reason"],
        );
        for label in RejectReason::LABELS {
            messages_rejected.with_label_values(&[*label]);
        }

        let alerts_opened = counter_vec(
            &r,
            "forewarn_alerts_opened_total",
            "Alerts opened, by severity at opening.",
            &["severity"],
        );
        for s in [Severity::Warning, Severity::Critical] {
            alerts_opened.with_label_values(&[s.as_str()]);
        }

        let last_processed_timestamp = Gauge::new(
            "forewarn_last_processed_timestamp_seconds",
            "Event time (Unix seconds) of the newest reading applied to device state.",
        )
        .expect("valid metric");
        r.register(Box::new(last_processed_timestamp.clone()))
            .expect("unique metric");

        let build_info = gauge_vec(
            &r,
            "forewarn_build_info",
            "Always 1; the label carries the running Forewarn version.",
            &["version"],
        );
        build_info
            .with_label_values(&[env!("CARGO_PKG_VERSION")])
            .set(1);

        let alert_delay = HistogramVec::new(
            HistogramOpts::new(
                "forewarn_alert_delay_seconds",
                "From the timestamp of the reading that opened or resolved an alert to the change being \
                 scored by the engine, committed to the alert store and acknowledged on the alerts topic, \
                 by stage (scored, stored, published). Event-time lag: includes device clock skew and \
                 consumer lag.",
            )
            .buckets(latency_buckets()),
            &["stage"],
        )
        .expect("valid metric");
        r.register(Box::new(alert_delay.clone()))
            .expect("unique metric");
        for stage in ALERT_DELAY_STAGES {
            alert_delay.with_label_values(&[stage]);
        }

        let http_request_duration = HistogramVec::new(
            HistogramOpts::new(
                "forewarn_http_request_duration_seconds",
                "HTTP API request latency, by route template.",
            )
            .buckets(latency_buckets()),
            &["route"],
        )
        .expect("valid metric");
        r.register(Box::new(http_request_duration.clone()))
            .expect("unique metric");

        let webhook_requests = counter_vec(
            &r,
            "forewarn_webhook_requests_total",
            "Alert webhook POSTs, by outcome (ok, error).",
            &["outcome"],
        );
        for o in ["ok", "error"] {
            webhook_requests.with_label_values(&[o]);
        }
        let model_reloads = counter_vec(
            &r,
            "forewarn_model_reloads_total",
            "Model hot-reload attempts, by outcome (ok, rejected).",
            &["outcome"],
        );
        for o in ["ok", "rejected"] {
            model_reloads.with_label_values(&[o]);
        }
        let tls_reloads = counter_vec(
            &r,
            "forewarn_tls_reloads_total",
            "HTTPS certificate reloads of the API listener, by outcome (ok, rejected).",
            &["outcome"],
        );
        for o in ["ok", "rejected"] {
            tls_reloads.with_label_values(&[o]);
        }
        let device_gauge = |name: &str, help: &str| {
            let g = GaugeVec::new(Opts::new(name, help), &["device"]).expect("valid metric");
            r.register(Box::new(g.clone())).expect("unique metric");
            g
        };
        let device_score = device_gauge(
            "forewarn_device_score",
            "Last batch score (MSE) of allow-listed devices (metrics.device_allow_list).",
        );
        let device_threshold = device_gauge(
            "forewarn_device_threshold",
            "Alert threshold of allow-listed devices (metrics.device_allow_list).",
        );

        Self {
            sse_clients: gauge(
                &r,
                "forewarn_sse_clients",
                "Clients connected to the live alert stream.",
            ),
            sse_events_lagged: counter(
                &r,
                "forewarn_sse_events_lagged_total",
                "Alert events skipped for live-stream clients that fell behind.",
            ),
            webhook_requests,
            webhook_active_alerts: gauge(
                &r,
                "forewarn_webhook_active_alerts",
                "Open alerts the webhook sender re-sends until they resolve.",
            ),
            model_reloads,
            tls_reloads,
            device_score,
            device_threshold,
            messages_consumed: counter(
                &r,
                "forewarn_messages_consumed_total",
                "Messages read from the readings topic.",
            ),
            readings_accepted: counter(
                &r,
                "forewarn_readings_accepted_total",
                "Valid readings applied to device state.",
            ),
            messages_rejected,
            readings_duplicate: counter(
                &r,
                "forewarn_readings_duplicate_total",
                "Readings dropped because their device already had a reading at that timestamp.",
            ),
            devices_evicted: counter(
                &r,
                "forewarn_devices_evicted_total",
                "Idle devices whose state was dropped to stay within pipeline.max_devices.",
            ),
            dead_letters: counter(
                &r,
                "forewarn_dead_letters_total",
                "Messages written to the dead-letter topic.",
            ),
            checkpoints: counter(
                &r,
                "forewarn_checkpoints_total",
                "Device-state checkpoints made durable on the state topic.",
            ),
            checkpoint_records: counter(
                &r,
                "forewarn_checkpoint_records_total",
                "Device states and tombstones written to the state topic.",
            ),
            checkpoint_duration: histogram(
                &r,
                "forewarn_checkpoint_duration_seconds",
                "Time to write one checkpoint to the state topic.",
                latency_buckets(),
            ),
            devices_restored: counter(
                &r,
                "forewarn_devices_restored_total",
                "Device states restored from the state topic on partition assignment.",
            ),
            restore_errors: counter(
                &r,
                "forewarn_checkpoint_restore_errors_total",
                "Checkpointed device states or partitions that could not be restored (the device starts over).",
            ),
            inference_batch_size: histogram(
                &r,
                "forewarn_inference_batch_size",
                "Devices per forecaster call.",
                prometheus::exponential_buckets(1.0, 2.0, 11).expect("valid buckets"),
            ),
            inference_duration: histogram(
                &r,
                "forewarn_inference_duration_seconds",
                "Wall time of one forecaster call.",
                latency_buckets(),
            ),
            inference_errors: counter(
                &r,
                "forewarn_inference_errors_total",
                "Forecaster calls that failed.",
            ),
            batches_scored: counter(
                &r,
                "forewarn_batches_scored_total",
                "Device batches scored against their forecast.",
            ),
            alerts_opened,
            alerts_resolved: counter(&r, "forewarn_alerts_resolved_total", "Alerts resolved."),
            alert_diagnosis_changes: counter(
                &r,
                "forewarn_alert_diagnosis_changes_total",
                "Diagnoses of open alerts re-announced because their most probable fault \
                 classes changed order (a fault classifier is configured).",
            ),
            alerts_open: gauge(
                &r,
                "forewarn_alerts_open",
                "Alerts currently open in this instance's detector.",
            ),
            store_apply_duration: histogram(
                &r,
                "forewarn_alert_store_apply_duration_seconds",
                "Wall time of one durable alert-store transaction.",
                latency_buckets(),
            ),
            store_errors: counter(
                &r,
                "forewarn_alert_store_errors_total",
                "Alert-store transactions that failed.",
            ),
            consumer_lag: gauge_vec(
                &r,
                "forewarn_consumer_lag",
                "Messages between the committed position and the high watermark, by assigned partition.",
                &["partition"],
            ),
            offsets_committed: counter(
                &r,
                "forewarn_offsets_committed_total",
                "Partition offsets committed to the consumer group.",
            ),
            offsets_stored: counter(
                &r,
                "forewarn_offsets_stored_total",
                "Partition offsets stored for the consumer's next (auto-)commit, \
                 after the effects they cover were made durable.",
            ),
            last_processed_timestamp,
            devices_tracked: gauge(
                &r,
                "forewarn_devices_tracked",
                "Devices whose state this instance holds.",
            ),
            model_info: gauge_vec(
                &r,
                "forewarn_model_info",
                "Always 1; labels name the loaded model and its version.",
                &["model", "version"],
            ),
            build_info,
            ready: gauge(
                &r,
                "forewarn_ready",
                "1 when the instance is ready to serve (see /readyz), else 0.",
            ),
            http_requests: counter_vec(
                &r,
                "forewarn_http_requests_total",
                "HTTP API requests, by route template, method and status code.",
                &["route", "method", "status"],
            ),
            http_request_duration,
            alert_delay,
            registry: r,
        }
    }

    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    /// Every metric in the Prometheus text exposition format ([`CONTENT_TYPE`]).
    pub fn render(&self) -> String {
        let mut out = String::new();
        TextEncoder::new()
            .encode_utf8(&self.registry.gather(), &mut out)
            .expect("text encoding of registered metrics cannot fail");
        out
    }

    /// Same as [`Metrics::render`], as bytes.
    pub fn render_bytes(&self) -> Vec<u8> {
        let mut out = Vec::new();
        TextEncoder::new()
            .encode(&self.registry.gather(), &mut out)
            .expect("text encoding of registered metrics cannot fail");
        out
    }

    /// Sets `forewarn_alerts_open`, e.g. from the store at startup.
    pub fn set_alerts_open(&self, n: u64) {
        self.alerts_open.set(i64::try_from(n).unwrap_or(i64::MAX));
    }

    /// Records one HTTP request. `route` must be a route template (e.g.
    /// `/api/v1/alerts/{id}`) or a fixed word such as `unmatched`, never a
    /// raw path.
    pub fn observe_http(&self, route: &str, method: &str, status: u16, seconds: f64) {
        let method = HTTP_METHODS
            .iter()
            .find(|m| m.eq_ignore_ascii_case(method))
            .copied()
            .unwrap_or("other");
        self.http_requests
            .with_label_values(&[route, method, &status.to_string()])
            .inc();
        self.http_request_duration
            .with_label_values(&[route])
            .observe(seconds);
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// The value of one series in `render()` output, e.g.
    /// `sample(&text, r#"forewarn_alerts_opened_total{severity="critical"}"#)`.
    pub(crate) fn sample(text: &str, series: &str) -> Option<f64> {
        text.lines().filter(|l| !l.starts_with('#')).find_map(|l| {
            let (name, value) = l.rsplit_once(' ')?;
            (name == series).then(|| value.parse().expect("numeric sample"))
        })
    }

    #[test]
    fn every_series_is_exposed_with_its_initial_value() {
        let m = Metrics::new();
        let text = m.render();
        let expected: &[(&str, f64)] = &[
            ("forewarn_messages_consumed_total", 0.0),
            ("forewarn_readings_accepted_total", 0.0),
            (
                r#"forewarn_messages_rejected_total{reason="out_of_order"}"#,
                0.0,
            ),
            (
                r#"forewarn_messages_rejected_total{reason="too_large"}"#,
                0.0,
            ),
            ("forewarn_readings_duplicate_total", 0.0),
            ("forewarn_devices_evicted_total", 0.0),
            ("forewarn_dead_letters_total", 0.0),
            ("forewarn_checkpoints_total", 0.0),
            ("forewarn_checkpoint_records_total", 0.0),
            ("forewarn_checkpoint_duration_seconds_count", 0.0),
            ("forewarn_devices_restored_total", 0.0),
            ("forewarn_checkpoint_restore_errors_total", 0.0),
            ("forewarn_inference_batch_size_count", 0.0),
            (r#"forewarn_inference_batch_size_bucket{le="1024"}"#, 0.0),
            ("forewarn_inference_duration_seconds_count", 0.0),
            ("forewarn_inference_errors_total", 0.0),
            ("forewarn_batches_scored_total", 0.0),
            (r#"forewarn_alerts_opened_total{severity="warning"}"#, 0.0),
            (r#"forewarn_alerts_opened_total{severity="critical"}"#, 0.0),
            ("forewarn_alerts_resolved_total", 0.0),
            ("forewarn_alert_diagnosis_changes_total", 0.0),
            ("forewarn_alerts_open", 0.0),
            ("forewarn_alert_store_apply_duration_seconds_count", 0.0),
            ("forewarn_alert_store_errors_total", 0.0),
            ("forewarn_offsets_committed_total", 0.0),
            ("forewarn_offsets_stored_total", 0.0),
            ("forewarn_last_processed_timestamp_seconds", 0.0),
            ("forewarn_devices_tracked", 0.0),
            (r#"forewarn_build_info{version="0.1.0"}"#, 1.0),
            ("forewarn_ready", 0.0),
        ];
        for (series, value) in expected {
            assert_eq!(sample(&text, series), Some(*value), "{series}\n{text}");
        }
        for label in RejectReason::LABELS {
            let series = format!(r#"forewarn_messages_rejected_total{{reason="{label}"}}"#);
            assert_eq!(sample(&text, &series), Some(0.0), "{series}");
        }
        // Batch-size buckets are the powers of two from 1 to 1024.
        let les: Vec<&str> = text
            .lines()
            .filter_map(|l| l.strip_prefix("forewarn_inference_batch_size_bucket{le=\""))
            .map(|l| l.split('"').next().unwrap())
            .collect();
        assert_eq!(
            les,
            [
                "1", "2", "4", "8", "16", "32", "64", "128", "256", "512", "1024", "+Inf"
            ]
        );
    }

    #[test]
    fn names_follow_conventions() {
        for family in Metrics::new().registry().gather() {
            let name = family.name();
            assert!(name.starts_with("forewarn_"), "{name}");
            let is_counter = family.get_field_type() == prometheus::proto::MetricType::COUNTER;
            assert_eq!(is_counter, name.ends_with("_total"), "{name}");
        }
    }

    #[test]
    fn http_methods_are_bounded() {
        let m = Metrics::new();
        m.observe_http("/livez", "get", 200, 0.001);
        m.observe_http("/livez", "BREW", 405, 0.001);
        let text = m.render();
        assert_eq!(
            sample(
                &text,
                r#"forewarn_http_requests_total{method="GET",route="/livez",status="200"}"#
            ),
            Some(1.0)
        );
        assert_eq!(
            sample(
                &text,
                r#"forewarn_http_requests_total{method="other",route="/livez",status="405"}"#
            ),
            Some(1.0)
        );
    }
}
