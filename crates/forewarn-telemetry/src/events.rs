//! Typed internal events, in the style of Vector's `internal_events`: each
//! struct is one thing that happened, and its [`InternalEvent::emit`] both
//! logs it (structured `tracing` fields) and moves its metrics, in one
//! place, so logs and metrics cannot drift apart.
//!
//! ```
//! use forewarn_telemetry::{InternalEvent, Metrics, events::ReadingsAccepted};
//! let metrics = Metrics::new();
//! ReadingsAccepted { count: 3 }.emit(&metrics);
//! assert_eq!(metrics.readings_accepted.get(), 3);
//! ```

use forewarn_core::Alert;
use tracing::{debug, error, info, trace, warn};

use crate::Metrics;

/// Something that happened inside Forewarn, worth a log line and a metric.
pub trait InternalEvent {
    fn emit(self, metrics: &Metrics);
}

fn as_u64(n: usize) -> u64 {
    u64::try_from(n).unwrap_or(u64::MAX)
}

fn as_i64(n: usize) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

/// Messages read from the readings topic (valid or not).
#[derive(Debug, Clone, Copy)]
pub struct MessagesConsumed {
    pub count: usize,
}

impl InternalEvent for MessagesConsumed {
    fn emit(self, metrics: &Metrics) {
        trace!(count = self.count, "messages consumed");
        metrics.messages_consumed.inc_by(as_u64(self.count));
    }
}

/// A message that failed decoding or validation. `reason` should be a
/// [`forewarn_core::RejectReason::label`], so the label set stays bounded.
#[derive(Debug, Clone)]
pub struct MessageRejected {
    pub reason: &'static str,
    pub detail: String,
    pub partition: i32,
    pub offset: i64,
}

impl InternalEvent for MessageRejected {
    fn emit(self, metrics: &Metrics) {
        warn!(
            reason = self.reason,
            detail = %self.detail,
            partition = self.partition,
            offset = self.offset,
            "message rejected"
        );
        metrics
            .messages_rejected
            .with_label_values(&[self.reason])
            .inc();
    }
}

/// Valid readings applied to device state.
#[derive(Debug, Clone, Copy)]
pub struct ReadingsAccepted {
    pub count: usize,
}

impl InternalEvent for ReadingsAccepted {
    fn emit(self, metrics: &Metrics) {
        trace!(count = self.count, "readings accepted");
        metrics.readings_accepted.inc_by(as_u64(self.count));
    }
}

/// A reading dropped because its device already had one at that timestamp.
#[derive(Debug, Clone, Copy)]
pub struct ReadingDuplicate;

impl InternalEvent for ReadingDuplicate {
    fn emit(self, metrics: &Metrics) {
        ReadingsDuplicate { count: 1 }.emit(metrics);
    }
}

/// `count` duplicate readings dropped (the batched form of [`ReadingDuplicate`]).
#[derive(Debug, Clone, Copy)]
pub struct ReadingsDuplicate {
    pub count: usize,
}

impl InternalEvent for ReadingsDuplicate {
    fn emit(self, metrics: &Metrics) {
        if self.count > 0 {
            trace!(count = self.count, "duplicate readings dropped");
        }
        metrics.readings_duplicate.inc_by(as_u64(self.count));
    }
}

/// A message written to the dead-letter topic. The rejection itself was
/// logged by [`MessageRejected`]; this only confirms the hand-off.
#[derive(Debug, Clone, Copy)]
pub struct DeadLettered {
    pub reason: &'static str,
}

impl InternalEvent for DeadLettered {
    fn emit(self, metrics: &Metrics) {
        debug!(reason = self.reason, "message dead-lettered");
        metrics.dead_letters.inc();
    }
}

/// One forecaster call over `size` devices that took `seconds`.
#[derive(Debug, Clone, Copy)]
pub struct InferenceBatch {
    pub size: usize,
    pub seconds: f64,
}

impl InternalEvent for InferenceBatch {
    fn emit(self, metrics: &Metrics) {
        trace!(size = self.size, seconds = self.seconds, "inference batch");
        metrics.inference_batch_size.observe(self.size as f64);
        metrics.inference_duration.observe(self.seconds);
    }
}

/// An alert change reached a stage (`scored`, `stored`, `published`);
/// `seconds` since the timestamp of the reading that caused it.
#[derive(Debug, Clone)]
pub struct AlertDelay {
    pub stage: &'static str,
    pub seconds: f64,
}

impl AlertDelay {
    /// Every stage, so the series exist at zero.
    pub const STAGES: [&'static str; 3] = crate::metrics::ALERT_DELAY_STAGES;

    /// The delay from a reading at `reading_ms` (epoch ms) to now.
    pub fn since(stage: &'static str, reading_ms: i64) -> Self {
        Self {
            stage,
            seconds: (crate::clock::unix_now_ms() - reading_ms) as f64 / 1000.0,
        }
    }
}

impl InternalEvent for AlertDelay {
    fn emit(self, metrics: &Metrics) {
        trace!(stage = self.stage, seconds = self.seconds, "alert delay");
        // A reading stamped ahead of this clock (skew) is counted as 0.
        metrics
            .alert_delay
            .with_label_values(&[self.stage])
            .observe(self.seconds.max(0.0));
    }
}

/// A forecaster call that failed; its batches stay queued.
#[derive(Debug, Clone)]
pub struct InferenceFailed {
    pub size: usize,
    pub error: String,
}

impl InternalEvent for InferenceFailed {
    fn emit(self, metrics: &Metrics) {
        error!(size = self.size, error = %self.error, "inference failed");
        metrics.inference_errors.inc();
    }
}

/// Device batches scored against their forecast.
#[derive(Debug, Clone, Copy)]
pub struct BatchesScored {
    pub count: usize,
}

impl InternalEvent for BatchesScored {
    fn emit(self, metrics: &Metrics) {
        trace!(count = self.count, "batches scored");
        metrics.batches_scored.inc_by(as_u64(self.count));
    }
}

fn top_channel(alert: &Alert) -> &str {
    alert
        .contributors
        .first()
        .map_or("", |c| c.channel.as_str())
}

/// The most probable fault class of an alert's diagnosis, if it has one:
/// (class, name, probability).
fn top_class(alert: &Alert) -> (Option<u8>, Option<&str>, Option<f64>) {
    match alert.diagnosis.as_ref().and_then(|d| d.top.first()) {
        Some(c) => (Some(c.class), Some(c.name.as_str()), Some(c.probability)),
        None => (None, None, None),
    }
}

/// The detector opened an alert.
#[derive(Debug, Clone, Copy)]
pub struct AlertOpened<'a> {
    pub alert: &'a Alert,
}

impl InternalEvent for AlertOpened<'_> {
    fn emit(self, metrics: &Metrics) {
        let a = self.alert;
        let (class, name, probability) = top_class(a);
        warn!(
            alert_id = %a.id,
            device = %a.device,
            model = %a.model,
            model_version = %a.model_version,
            severity = a.severity.as_str(),
            score = a.score,
            threshold = a.threshold,
            top_channel = top_channel(a),
            window_start = a.window_start,
            window_end = a.window_end,
            top_class = class,
            top_class_name = name,
            top_class_probability = probability,
            "alert opened"
        );
        metrics
            .alerts_opened
            .with_label_values(&[a.severity.as_str()])
            .inc();
        metrics.alerts_open.inc();
    }
}

/// The detector resolved an alert it had opened.
#[derive(Debug, Clone, Copy)]
pub struct AlertResolved<'a> {
    pub alert: &'a Alert,
}

impl InternalEvent for AlertResolved<'_> {
    fn emit(self, metrics: &Metrics) {
        let a = self.alert;
        let (class, name, probability) = top_class(a);
        info!(
            alert_id = %a.id,
            device = %a.device,
            severity = a.severity.as_str(),
            peak_score = a.peak_score,
            opened_at = a.opened_at,
            resolved_at = a.resolved_at,
            top_class = class,
            top_class_name = name,
            top_class_probability = probability,
            "alert resolved"
        );
        metrics.alerts_resolved.inc();
        if metrics.alerts_open.get() > 0 {
            metrics.alerts_open.dec();
        }
    }
}

/// An open alert's diagnosis changed enough to announce: its top classes
/// changed order, or its top probability moved by the tracker's minimum
/// change (`DiagnosisTracker::MIN_CHANGE`).
#[derive(Debug, Clone, Copy)]
pub struct AlertDiagnosed<'a> {
    pub alert: &'a Alert,
}

impl InternalEvent for AlertDiagnosed<'_> {
    fn emit(self, metrics: &Metrics) {
        let a = self.alert;
        let (class, name, probability) = top_class(a);
        info!(
            alert_id = %a.id,
            device = %a.device,
            top_class = class,
            top_class_name = name,
            top_class_probability = probability,
            windows = a.diagnosis.as_ref().map(|d| d.windows),
            classifier = a.diagnosis.as_ref().map(|d| d.classifier.as_str()),
            "alert diagnosis changed"
        );
        metrics.alert_diagnosis_changes.inc();
    }
}

/// Alert changes made durable in the alert store in one transaction.
#[derive(Debug, Clone, Copy)]
pub struct AlertsStored {
    pub changes: usize,
    pub seconds: f64,
}

impl InternalEvent for AlertsStored {
    fn emit(self, metrics: &Metrics) {
        debug!(
            changes = self.changes,
            seconds = self.seconds,
            "alert changes stored"
        );
        metrics.store_apply_duration.observe(self.seconds);
    }
}

/// An alert-store transaction failed (offsets must not be committed).
#[derive(Debug, Clone)]
pub struct AlertStoreFailed {
    pub changes: usize,
    pub error: String,
}

impl InternalEvent for AlertStoreFailed {
    fn emit(self, metrics: &Metrics) {
        error!(changes = self.changes, error = %self.error, "alert store write failed");
        metrics.store_errors.inc();
    }
}

/// Consumer lag of one assigned partition.
#[derive(Debug, Clone, Copy)]
pub struct ConsumerLag {
    pub partition: i32,
    pub lag: i64,
}

impl InternalEvent for ConsumerLag {
    fn emit(self, metrics: &Metrics) {
        trace!(partition = self.partition, lag = self.lag, "consumer lag");
        metrics
            .consumer_lag
            .with_label_values(&[&self.partition.to_string()])
            .set(self.lag);
    }
}

/// A partition was revoked: its lag series is removed, so the exposition
/// only shows partitions this instance owns.
#[derive(Debug, Clone, Copy)]
pub struct PartitionRevoked {
    pub partition: i32,
}

impl InternalEvent for PartitionRevoked {
    fn emit(self, metrics: &Metrics) {
        info!(partition = self.partition, "partition revoked");
        // Absent when no lag was ever reported for it: nothing to remove.
        let _ = metrics
            .consumer_lag
            .remove_label_values(&[&self.partition.to_string()]);
    }
}

/// Offsets of `count` partitions committed to the consumer group.
#[derive(Debug, Clone, Copy)]
pub struct OffsetsCommitted {
    pub count: usize,
}

impl InternalEvent for OffsetsCommitted {
    fn emit(self, metrics: &Metrics) {
        debug!(count = self.count, "offsets committed");
        metrics.offsets_committed.inc_by(as_u64(self.count));
    }
}

/// Offsets of `count` partitions stored for the consumer's next commit
/// (`store_offsets` with auto-commit): the effects they cover are durable.
#[derive(Debug, Clone, Copy)]
pub struct OffsetsStored {
    pub count: usize,
}

impl InternalEvent for OffsetsStored {
    fn emit(self, metrics: &Metrics) {
        trace!(count = self.count, "offsets stored");
        metrics.offsets_stored.inc_by(as_u64(self.count));
    }
}

/// Event time (epoch ms) of the newest reading applied to device state.
#[derive(Debug, Clone, Copy)]
pub struct LastProcessed {
    pub ts_ms: i64,
}

impl InternalEvent for LastProcessed {
    fn emit(self, metrics: &Metrics) {
        metrics
            .last_processed_timestamp
            .set(self.ts_ms as f64 / 1000.0);
    }
}

/// Devices whose state this instance holds.
#[derive(Debug, Clone, Copy)]
pub struct DevicesTracked {
    pub count: usize,
}

impl InternalEvent for DevicesTracked {
    fn emit(self, metrics: &Metrics) {
        metrics.devices_tracked.set(as_i64(self.count));
    }
}

/// Idle devices dropped to stay within the tracked-device bound.
#[derive(Debug, Clone, Copy)]
pub struct DevicesEvicted {
    pub count: usize,
}

impl InternalEvent for DevicesEvicted {
    fn emit(self, metrics: &Metrics) {
        if self.count > 0 {
            tracing::debug!(count = self.count, "evicted idle devices");
            metrics.devices_evicted.inc_by(self.count as u64);
        }
    }
}

/// A checkpoint (device states, tombstones and partition markers) is
/// durable on the state topic.
#[derive(Debug, Clone, Copy)]
pub struct CheckpointWritten {
    pub records: usize,
    pub partitions: usize,
    pub seconds: f64,
    /// Written because partitions were revoked (a handover), not by the timer.
    pub handover: bool,
}

impl InternalEvent for CheckpointWritten {
    fn emit(self, metrics: &Metrics) {
        if self.handover {
            info!(
                records = self.records,
                partitions = self.partitions,
                seconds = self.seconds,
                "handed device state over with revoked partitions"
            );
        } else {
            tracing::debug!(
                records = self.records,
                partitions = self.partitions,
                seconds = self.seconds,
                "checkpoint written"
            );
        }
        metrics.checkpoints.inc();
        metrics.checkpoint_records.inc_by(self.records as u64);
        metrics.checkpoint_duration.observe(self.seconds);
    }
}

/// Device state read back from the state topic for assigned partitions.
#[derive(Debug, Clone, Copy)]
pub struct StateRestored {
    pub partitions: usize,
    pub devices: usize,
    /// States that could not be used (corrupt, another model version, or
    /// a shape this model does not have); those devices start over.
    pub rejected: usize,
    pub seconds: f64,
}

impl InternalEvent for StateRestored {
    fn emit(self, metrics: &Metrics) {
        info!(
            partitions = self.partitions,
            devices = self.devices,
            rejected = self.rejected,
            seconds = self.seconds,
            "restored device state"
        );
        metrics.devices_restored.inc_by(self.devices as u64);
        metrics.restore_errors.inc_by(self.rejected as u64);
    }
}

/// The state topic could not be read for newly assigned partitions: their
/// devices start over from the committed offsets.
#[derive(Debug, Clone)]
pub struct StateRestoreFailed<'a> {
    pub partitions: usize,
    pub error: &'a str,
}

impl InternalEvent for StateRestoreFailed<'_> {
    fn emit(self, metrics: &Metrics) {
        tracing::error!(
            partitions = self.partitions,
            error = self.error,
            "could not read device state; these partitions re-warm from their committed offsets"
        );
        metrics.restore_errors.inc_by(self.partitions as u64);
    }
}

/// A model was loaded (at startup or by hot reload); it replaces any
/// earlier `forewarn_model_info` series.
#[derive(Debug, Clone, Copy)]
pub struct ModelLoaded<'a> {
    pub name: &'a str,
    pub version: &'a str,
}

impl InternalEvent for ModelLoaded<'_> {
    fn emit(self, metrics: &Metrics) {
        info!(model = self.name, version = self.version, "model loaded");
        metrics.model_info.reset();
        metrics
            .model_info
            .with_label_values(&[self.name, self.version])
            .set(1);
    }
}

/// The API listener's certificate and key read again (SIGHUP) and swapped
/// in for new connections; open connections keep the old ones.
#[derive(Debug, Clone, Copy)]
pub struct TlsCertificateReloaded<'a> {
    pub cert_file: &'a str,
    pub key_file: &'a str,
}

impl InternalEvent for TlsCertificateReloaded<'_> {
    fn emit(self, metrics: &Metrics) {
        info!(
            cert_file = self.cert_file,
            key_file = self.key_file,
            "TLS certificate reloaded; new connections get it"
        );
        metrics.tls_reloads.with_label_values(&["ok"]).inc();
    }
}

/// A certificate reload that failed (unreadable or garbled files, a key
/// that does not match): the listener keeps serving the previous ones.
#[derive(Debug, Clone, Copy)]
pub struct TlsCertificateReloadRejected<'a> {
    pub error: &'a str,
}

impl InternalEvent for TlsCertificateReloadRejected<'_> {
    fn emit(self, metrics: &Metrics) {
        error!(
            error = self.error,
            "TLS certificate reload rejected; the previous certificate is kept"
        );
        metrics.tls_reloads.with_label_values(&["rejected"]).inc();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::tests::sample;
    use forewarn_core::{AlertState, ChannelShare, Severity};

    fn alert(severity: Severity) -> Alert {
        Alert {
            id: "a1".into(),
            device: "pump-1".into(),
            model: "lstm".into(),
            model_version: "v1".into(),
            state: AlertState::Open,
            severity,
            opened_at: 2_000,
            resolved_at: None,
            score: 4.0,
            peak_score: 4.0,
            threshold: 1.0,
            contributors: vec![ChannelShare {
                channel: "flow".into(),
                share: 1.0,
            }],
            window_start: 1_000,
            window_end: 2_000,
            diagnosis: None,
            cells: vec![],
        }
    }

    fn diagnosed() -> Alert {
        let mut a = alert(Severity::Warning);
        a.diagnosis = Some(forewarn_core::Diagnosis {
            classifier: "tep-faults".into(),
            classifier_version: "9f2c".into(),
            top: vec![forewarn_core::ClassProbability {
                class: 6,
                name: "IDV(6) A feed loss".into(),
                probability: 0.91,
            }],
            windows: 4,
        });
        a
    }

    #[test]
    fn alert_top_class_is_that_of_its_diagnosis() {
        assert_eq!(top_class(&alert(Severity::Warning)), (None, None, None));
        assert_eq!(
            top_class(&diagnosed()),
            (Some(6), Some("IDV(6) A feed loss"), Some(0.91))
        );
    }

    #[test]
    fn alert_delay_observes_its_stage_and_counts_clock_skew_as_zero() {
        let m = Metrics::new();
        AlertDelay {
            stage: "stored",
            seconds: 0.25,
        }
        .emit(&m);
        AlertDelay {
            stage: "stored",
            seconds: -3.0,
        }
        .emit(&m);
        let text = m.render();
        let stored = |s: &str| {
            sample(
                &text,
                &format!("forewarn_alert_delay_seconds_{s}{{stage=\"stored\"}}"),
            )
        };
        assert_eq!(stored("count"), Some(2.0));
        assert_eq!(stored("sum"), Some(0.25));
        let scored = sample(
            &text,
            r#"forewarn_alert_delay_seconds_count{stage="scored"}"#,
        );
        assert_eq!(scored, Some(0.0));
        // `since` measures from a reading time against the wall clock.
        let an_hour_ago = crate::clock::unix_now_ms() - 3_600_000;
        let d = AlertDelay::since("published", an_hour_ago);
        assert!((3_600.0..3_610.0).contains(&d.seconds), "{}", d.seconds);
    }

    #[test]
    fn events_move_their_series() {
        let m = Metrics::new();
        MessagesConsumed { count: 10 }.emit(&m);
        ReadingsAccepted { count: 7 }.emit(&m);
        MessageRejected {
            reason: "bad_timestamp",
            detail: "timestamp \"yesterday\"".into(),
            partition: 3,
            offset: 42,
        }
        .emit(&m);
        DeadLettered {
            reason: "bad_timestamp",
        }
        .emit(&m);
        ReadingDuplicate.emit(&m);
        ReadingDuplicate.emit(&m);
        ReadingsDuplicate { count: 3 }.emit(&m);
        OffsetsStored { count: 4 }.emit(&m);
        InferenceBatch {
            size: 5,
            seconds: 0.003,
        }
        .emit(&m);
        InferenceFailed {
            size: 5,
            error: "cuda oom".into(),
        }
        .emit(&m);
        BatchesScored { count: 5 }.emit(&m);
        let critical = alert(Severity::Critical);
        AlertOpened { alert: &critical }.emit(&m);
        AlertOpened {
            alert: &alert(Severity::Warning),
        }
        .emit(&m);
        AlertResolved { alert: &critical }.emit(&m);
        AlertDiagnosed {
            alert: &diagnosed(),
        }
        .emit(&m);
        AlertsStored {
            changes: 3,
            seconds: 0.002,
        }
        .emit(&m);
        AlertStoreFailed {
            changes: 1,
            error: "disk full".into(),
        }
        .emit(&m);
        ConsumerLag {
            partition: 0,
            lag: 12,
        }
        .emit(&m);
        ConsumerLag {
            partition: 1,
            lag: 3,
        }
        .emit(&m);
        PartitionRevoked { partition: 1 }.emit(&m);
        PartitionRevoked { partition: 9 }.emit(&m);
        OffsetsCommitted { count: 2 }.emit(&m);
        LastProcessed {
            ts_ms: 1_795_867_200_250,
        }
        .emit(&m);
        DevicesTracked { count: 42 }.emit(&m);
        ModelLoaded {
            name: "lstm",
            version: "v1",
        }
        .emit(&m);
        ModelLoaded {
            name: "lstm",
            version: "v2",
        }
        .emit(&m);

        let text = m.render();
        let expected: &[(&str, Option<f64>)] = &[
            ("forewarn_messages_consumed_total", Some(10.0)),
            ("forewarn_readings_accepted_total", Some(7.0)),
            (
                r#"forewarn_messages_rejected_total{reason="bad_timestamp"}"#,
                Some(1.0),
            ),
            (
                r#"forewarn_messages_rejected_total{reason="too_large"}"#,
                Some(0.0),
            ),
            ("forewarn_dead_letters_total", Some(1.0)),
            ("forewarn_readings_duplicate_total", Some(5.0)),
            ("forewarn_offsets_stored_total", Some(4.0)),
            ("forewarn_inference_batch_size_count", Some(1.0)),
            ("forewarn_inference_batch_size_sum", Some(5.0)),
            (r#"forewarn_inference_batch_size_bucket{le="4"}"#, Some(0.0)),
            (r#"forewarn_inference_batch_size_bucket{le="8"}"#, Some(1.0)),
            ("forewarn_inference_duration_seconds_count", Some(1.0)),
            ("forewarn_inference_duration_seconds_sum", Some(0.003)),
            ("forewarn_inference_errors_total", Some(1.0)),
            ("forewarn_batches_scored_total", Some(5.0)),
            (
                r#"forewarn_alerts_opened_total{severity="critical"}"#,
                Some(1.0),
            ),
            (
                r#"forewarn_alerts_opened_total{severity="warning"}"#,
                Some(1.0),
            ),
            ("forewarn_alerts_resolved_total", Some(1.0)),
            ("forewarn_alert_diagnosis_changes_total", Some(1.0)),
            ("forewarn_alerts_open", Some(1.0)),
            (
                "forewarn_alert_store_apply_duration_seconds_count",
                Some(1.0),
            ),
            ("forewarn_alert_store_errors_total", Some(1.0)),
            (r#"forewarn_consumer_lag{partition="0"}"#, Some(12.0)),
            (r#"forewarn_consumer_lag{partition="1"}"#, None),
            ("forewarn_offsets_committed_total", Some(2.0)),
            (
                "forewarn_last_processed_timestamp_seconds",
                Some(1_795_867_200.25),
            ),
            ("forewarn_devices_tracked", Some(42.0)),
            (r#"forewarn_model_info{model="lstm",version="v1"}"#, None),
            (
                r#"forewarn_model_info{model="lstm",version="v2"}"#,
                Some(1.0),
            ),
        ];
        for (series, value) in expected {
            assert_eq!(sample(&text, series), *value, "{series}\n{text}");
        }
    }

    #[test]
    fn alerts_open_never_goes_negative() {
        // A resolve replayed after a restart, whose open this process never saw.
        let m = Metrics::new();
        AlertResolved {
            alert: &alert(Severity::Warning),
        }
        .emit(&m);
        assert_eq!(m.alerts_open.get(), 0);
        assert_eq!(m.alerts_resolved.get(), 1);
    }
}
