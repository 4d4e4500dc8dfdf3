//! Diagnosis of open alerts, when `serve` has a fault classifier: after
//! each forecaster round, the classifier reads the current window of every
//! device whose alert is open (one call for all of them); the alert's
//! diagnosis is the running mean of those readings
//! ([`DiagnosisTracker`]). It rides on the Opened change, goes out as a
//! Diagnosed change when its ranking changes while the alert stays open,
//! and its final value rides on the Resolved change. A classifier that
//! fails is logged and skipped: a diagnosis never stops detection.

use std::collections::HashSet;

use forewarn_core::{Diagnosis, DiagnosisTracker, Engine, FaultClassifier};
use forewarn_store::AlertChange;

/// A classifier as the engine stage runs it.
pub(crate) type Classifier = Box<dyn FaultClassifier + Send>;

pub(crate) struct Diagnoser {
    classifier: Classifier,
    tracker: DiagnosisTracker,
}

impl Diagnoser {
    pub(crate) fn new(classifier: Classifier) -> Self {
        let tracker = DiagnosisTracker::new(classifier.as_ref());
        Self {
            classifier,
            tracker,
        }
    }

    /// Attaches diagnoses to one round's `changes`: `open_devices` are the
    /// devices whose alert is open after one of their batches this round.
    pub(crate) fn attach(
        &mut self,
        engine: &Engine,
        changes: &mut Vec<AlertChange>,
        open_devices: &[String],
    ) {
        let (w, c) = (self.classifier.window(), self.classifier.channels().len());
        let mut seen = HashSet::new();
        let mut read: Vec<(String, String)> = Vec::new();
        let mut windows: Vec<f32> = Vec::new();
        for device in open_devices {
            if !seen.insert(device.as_str()) {
                continue;
            }
            let (Some(alert), Some(rows)) =
                (engine.open_alert(device), engine.window_readings(device))
            else {
                continue;
            };
            // Too short a window (a device restored mid-alert) waits.
            if rows.len() < w * c {
                continue;
            }
            windows.extend_from_slice(&rows[rows.len() - w * c..]);
            read.push((device.clone(), alert.id.clone()));
        }
        if !read.is_empty() {
            match self.classifier.probabilities(&windows, read.len()) {
                Ok(p) => self.observe(engine, changes, &read, &p),
                Err(e) => {
                    tracing::warn!(error = %e, alerts = read.len(), "fault classifier failed; alerts go out without a new diagnosis")
                }
            }
        }
        for change in changes.iter_mut() {
            if let AlertChange::Resolved(a) = change {
                a.diagnosis = self.tracker.finish(&a.id).or(a.diagnosis.take());
            }
        }
    }

    fn observe(
        &mut self,
        engine: &Engine,
        changes: &mut Vec<AlertChange>,
        read: &[(String, String)],
        probabilities: &[f32],
    ) {
        let k = self.classifier.classes().len();
        for ((device, id), p) in read.iter().zip(probabilities.chunks_exact(k)) {
            let (d, changed) = self.tracker.observe(id, p);
            let opened = changes.iter_mut().find_map(|ch| match ch {
                AlertChange::Opened(a) if &a.id == id => Some(a),
                _ => None,
            });
            match opened {
                Some(a) => a.diagnosis = Some(d),
                None if changed => {
                    if let Some(a) = engine.open_alert(device) {
                        changes.push(AlertChange::Diagnosed(with(a, d)));
                    }
                }
                None => {}
            }
        }
    }

    /// The final diagnoses of alerts closed outside a round (a model swap
    /// resolves the replaced engine's alerts).
    pub(crate) fn finish(&mut self, changes: &mut [AlertChange]) {
        for change in changes.iter_mut() {
            if let AlertChange::Resolved(a) = change {
                a.diagnosis = self.tracker.finish(&a.id).or(a.diagnosis.take());
            }
        }
    }

    /// Whether no alert is being diagnosed.
    #[cfg(test)]
    pub(crate) fn is_idle(&self) -> bool {
        self.tracker.is_empty()
    }

    /// Forgets alerts the engine no longer holds (their devices went to
    /// another instance).
    pub(crate) fn keep_open_of(&mut self, engine: &Engine) {
        let open: HashSet<&str> = engine.open_alerts().map(|a| a.id.as_str()).collect();
        self.tracker.retain(|id| open.contains(id));
    }
}

fn with(a: &forewarn_core::Alert, d: Diagnosis) -> forewarn_core::Alert {
    let mut a = a.clone();
    a.diagnosis = Some(d);
    a
}
