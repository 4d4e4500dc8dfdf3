//! Service health: what `/livez` and `/readyz` report.
//!
//! The instance is ready when a model is loaded, the consumer group has
//! assigned it at least one partition, the broker is reachable and it is
//! not shutting down. [`Health::readiness_report`] names each condition so
//! a 503 from `/readyz` says why.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Mutex, PoisonError};

use prometheus::IntGauge;
use serde_json::json;

use crate::Metrics;

/// Thread-safe readiness state, written by the pipeline and read by the API.
#[derive(Debug, Default)]
pub struct Health {
    model_loaded: AtomicBool,
    partitions_assigned: AtomicUsize,
    broker_reachable: AtomicBool,
    shutting_down: AtomicBool,
    /// Why the Kafka client cannot connect when retrying will not fix it by
    /// itself (a refused password, an untrusted certificate); cleared once
    /// the broker answers.
    broker_error: Mutex<Option<String>>,
    /// `forewarn_ready`, kept in step on every change when present.
    ready_gauge: Option<IntGauge>,
    /// Serialises read-and-set of the gauge, so concurrent setters cannot
    /// leave it at a stale value.
    sync_lock: Mutex<()>,
}

impl Health {
    /// Health that is not yet ready and updates no metric.
    pub fn new() -> Self {
        Self::default()
    }

    /// Health that keeps `forewarn_ready` of `metrics` in step with
    /// [`Health::is_ready`] on every change.
    pub fn with_metrics(metrics: &Metrics) -> Self {
        let h = Self {
            ready_gauge: Some(metrics.ready.clone()),
            ..Self::default()
        };
        h.sync();
        h
    }

    pub fn set_model_loaded(&self, loaded: bool) {
        self.model_loaded.store(loaded, Ordering::SeqCst);
        self.sync();
    }

    pub fn set_partitions_assigned(&self, n: usize) {
        self.partitions_assigned.store(n, Ordering::SeqCst);
        self.sync();
    }

    pub fn set_broker_reachable(&self, reachable: bool) {
        self.broker_reachable.store(reachable, Ordering::SeqCst);
        if reachable {
            *self.lock_broker_error() = None;
        }
        self.sync();
    }

    /// Records why connecting to the broker fails (the broker is then not
    /// reachable); `/readyz` names it until the broker answers again.
    pub fn set_broker_error(&self, error: String) {
        *self.lock_broker_error() = Some(error);
        self.broker_reachable.store(false, Ordering::SeqCst);
        self.sync();
    }

    pub fn broker_error(&self) -> Option<String> {
        self.lock_broker_error().clone()
    }

    fn lock_broker_error(&self) -> std::sync::MutexGuard<'_, Option<String>> {
        self.broker_error
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// One-way: once shutting down, the instance is never ready again.
    pub fn set_shutting_down(&self) {
        self.shutting_down.store(true, Ordering::SeqCst);
        self.sync();
    }

    pub fn model_loaded(&self) -> bool {
        self.model_loaded.load(Ordering::SeqCst)
    }

    pub fn partitions_assigned(&self) -> usize {
        self.partitions_assigned.load(Ordering::SeqCst)
    }

    pub fn broker_reachable(&self) -> bool {
        self.broker_reachable.load(Ordering::SeqCst)
    }

    pub fn shutting_down(&self) -> bool {
        self.shutting_down.load(Ordering::SeqCst)
    }

    pub fn is_ready(&self) -> bool {
        self.model_loaded()
            && self.partitions_assigned() > 0
            && self.broker_reachable()
            && !self.shutting_down()
    }

    /// Sets `forewarn_ready` of `metrics` to [`Health::is_ready`]; for a
    /// `Health` made without [`Health::with_metrics`].
    pub fn sync_metrics(&self, metrics: &Metrics) {
        metrics.ready.set(i64::from(self.is_ready()));
    }

    fn sync(&self) {
        if let Some(g) = &self.ready_gauge {
            let _guard = self
                .sync_lock
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            g.set(i64::from(self.is_ready()));
        }
    }

    /// Every condition, and a sentence for each one that fails:
    /// `{"ready": false, "checks": {...}, "reasons": ["no model loaded", ...]}`.
    pub fn readiness_report(&self) -> serde_json::Value {
        let model_loaded = self.model_loaded();
        let partitions = self.partitions_assigned();
        let broker = self.broker_reachable();
        let shutting_down = self.shutting_down();
        let mut reasons: Vec<String> = Vec::new();
        if !model_loaded {
            reasons.push("no model loaded".into());
        }
        if partitions == 0 {
            reasons.push("no partitions assigned by the consumer group".into());
        }
        let broker_error = self.broker_error();
        if let Some(e) = &broker_error {
            reasons.push(format!("Kafka connection failed: {e}"));
        } else if !broker {
            reasons.push("Kafka broker not reachable".into());
        }
        if shutting_down {
            reasons.push("shutting down".into());
        }
        json!({
            "ready": reasons.is_empty(),
            "checks": {
                "model_loaded": model_loaded,
                "partitions_assigned": partitions,
                "broker_reachable": broker,
                "shutting_down": shutting_down,
            },
            "reasons": reasons,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ready_only_when_every_condition_holds() {
        let m = Metrics::new();
        let h = Health::with_metrics(&m);
        assert!(!h.is_ready());
        assert_eq!(
            h.readiness_report(),
            json!({
                "ready": false,
                "checks": {"model_loaded": false, "partitions_assigned": 0,
                           "broker_reachable": false, "shutting_down": false},
                "reasons": ["no model loaded", "no partitions assigned by the consumer group",
                            "Kafka broker not reachable"],
            })
        );
        h.set_model_loaded(true);
        h.set_broker_reachable(true);
        assert!(!h.is_ready());
        assert_eq!(m.ready.get(), 0);
        h.set_partitions_assigned(3);
        assert!(h.is_ready());
        assert_eq!(m.ready.get(), 1);
        assert_eq!(
            h.readiness_report(),
            json!({
                "ready": true,
                "checks": {"model_loaded": true, "partitions_assigned": 3,
                           "broker_reachable": true, "shutting_down": false},
                "reasons": [],
            })
        );
        h.set_broker_reachable(false);
        assert_eq!((h.is_ready(), m.ready.get()), (false, 0));
        h.set_broker_reachable(true);
        h.set_shutting_down();
        assert_eq!((h.is_ready(), m.ready.get()), (false, 0));
        assert_eq!(h.readiness_report()["reasons"], json!(["shutting down"]));
    }

    #[test]
    fn a_broker_error_is_the_reason_until_the_broker_answers() {
        let h = Health::new();
        h.set_model_loaded(true);
        h.set_partitions_assigned(1);
        h.set_broker_reachable(true);
        h.set_broker_error("SASL authentication failed".into());
        assert!(!h.is_ready());
        assert_eq!(
            h.readiness_report()["reasons"],
            json!(["Kafka connection failed: SASL authentication failed"])
        );
        h.set_broker_reachable(true);
        assert!(h.is_ready());
        assert_eq!(h.broker_error(), None);
    }

    #[test]
    fn sync_metrics_for_plain_health() {
        let m = Metrics::new();
        let h = Health::new();
        h.set_model_loaded(true);
        h.set_partitions_assigned(1);
        h.set_broker_reachable(true);
        assert_eq!(m.ready.get(), 0);
        h.sync_metrics(&m);
        assert_eq!(m.ready.get(), 1);
    }
}
