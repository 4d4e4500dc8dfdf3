//! Alerts: what operators see.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AlertState {
    Open,
    Resolved,
}

impl AlertState {
    pub fn as_str(self) -> &'static str {
        match self {
            AlertState::Open => "open",
            AlertState::Resolved => "resolved",
        }
    }
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "open" => Some(AlertState::Open),
            "resolved" => Some(AlertState::Resolved),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Warning,
    Critical,
}

impl Severity {
    /// Critical once the score is at least `CRITICAL_RATIO` times the threshold.
    pub const CRITICAL_RATIO: f64 = 3.0;

    pub fn from_ratio(score_over_threshold: f64) -> Self {
        if score_over_threshold >= Self::CRITICAL_RATIO {
            Severity::Critical
        } else {
            Severity::Warning
        }
    }
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Warning => "warning",
            Severity::Critical => "critical",
        }
    }
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "warning" => Some(Severity::Warning),
            "critical" => Some(Severity::Critical),
            _ => None,
        }
    }
}

/// One channel's share of a batch's squared error.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChannelShare {
    pub channel: String,
    /// In [0, 1]; shares of a batch add up to 1.
    pub share: f64,
}

/// One class a fault classifier names, with its probability.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClassProbability {
    /// The class label the classifier was trained on (TEP: the fault number).
    pub class: u8,
    /// Human-readable name of the class (TEP: the fault's description).
    pub name: String,
    /// In [0, 1].
    pub probability: f64,
}

/// Which fault an open alert most likely is: a fault classifier's reading
/// of the device's window, averaged over the alert's batches so far.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Diagnosis {
    /// The classifier's name and version (a hash of its weights).
    pub classifier: String,
    pub classifier_version: String,
    /// The most probable classes, most probable first (at most
    /// [`Diagnosis::TOP`]).
    pub top: Vec<ClassProbability>,
    /// Windows the probabilities are the mean of.
    pub windows: u32,
}

impl Diagnosis {
    /// How many classes a diagnosis names.
    pub const TOP: usize = 3;

    /// The top classes, in order: a diagnosis is worth re-announcing only
    /// when they change.
    pub fn ranking(&self) -> Vec<u8> {
        self.top.iter().map(|c| c.class).collect()
    }
}

/// A grid cell's share of a batch's squared error (models whose sensors
/// are laid out on a grid, [`crate::grid::GridLayout`]).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GridCell {
    /// From the top, 0-based.
    pub row: usize,
    /// From the left, 0-based.
    pub col: usize,
    /// The channel on the cell.
    pub channel: String,
    /// In [0, 1].
    pub share: f64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Alert {
    /// Derived from device, model version and the start of the first
    /// anomalous batch, so replaying the same input yields the same id.
    pub id: String,
    pub device: String,
    pub model: String,
    pub model_version: String,
    pub state: AlertState,
    pub severity: Severity,
    /// Epoch milliseconds of the reading that completed the opening batch.
    pub opened_at: i64,
    pub resolved_at: Option<i64>,
    /// Score of the batch that opened the alert.
    pub score: f64,
    /// Highest score while open.
    pub peak_score: f64,
    pub threshold: f64,
    /// Channels ordered by share of the error, largest first.
    pub contributors: Vec<ChannelShare>,
    /// Span of readings (epoch ms) from the first anomalous batch to the
    /// batch that opened the alert.
    pub window_start: i64,
    pub window_end: i64,
    /// The likely fault, when a fault classifier is configured.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub diagnosis: Option<Diagnosis>,
    /// The grid cells of `contributors`, in their order, when the model's
    /// sensors are laid out on a grid; empty otherwise.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub cells: Vec<GridCell>,
}

/// Serde `with` for an open alert kept in a device checkpoint, whose
/// encoding (postcard) is not self-describing and cannot skip a field:
/// every field but `diagnosis` and `cells`, so checkpoints keep their
/// format. The engine never holds a diagnosis (the serve pipeline attaches
/// it), and derives the cells from the contributors and its grid when it
/// emits the alert, so nothing is lost.
pub mod without_diagnosis {
    use super::{Alert, AlertState, ChannelShare, Severity};
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    #[derive(Serialize)]
    struct Borrowed<'a> {
        id: &'a str,
        device: &'a str,
        model: &'a str,
        model_version: &'a str,
        state: AlertState,
        severity: Severity,
        opened_at: i64,
        resolved_at: Option<i64>,
        score: f64,
        peak_score: f64,
        threshold: f64,
        contributors: &'a [ChannelShare],
        window_start: i64,
        window_end: i64,
    }

    #[derive(Deserialize)]
    struct Owned {
        id: String,
        device: String,
        model: String,
        model_version: String,
        state: AlertState,
        severity: Severity,
        opened_at: i64,
        resolved_at: Option<i64>,
        score: f64,
        peak_score: f64,
        threshold: f64,
        contributors: Vec<ChannelShare>,
        window_start: i64,
        window_end: i64,
    }

    pub fn serialize<S: Serializer>(a: &Option<Box<Alert>>, s: S) -> Result<S::Ok, S::Error> {
        a.as_deref()
            .map(|a| Borrowed {
                id: &a.id,
                device: &a.device,
                model: &a.model,
                model_version: &a.model_version,
                state: a.state,
                severity: a.severity,
                opened_at: a.opened_at,
                resolved_at: a.resolved_at,
                score: a.score,
                peak_score: a.peak_score,
                threshold: a.threshold,
                contributors: &a.contributors,
                window_start: a.window_start,
                window_end: a.window_end,
            })
            .serialize(s)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Box<Alert>>, D::Error> {
        Ok(Option::<Owned>::deserialize(d)?.map(|a| {
            Box::new(Alert {
                id: a.id,
                device: a.device,
                model: a.model,
                model_version: a.model_version,
                state: a.state,
                severity: a.severity,
                opened_at: a.opened_at,
                resolved_at: a.resolved_at,
                score: a.score,
                peak_score: a.peak_score,
                threshold: a.threshold,
                contributors: a.contributors,
                window_start: a.window_start,
                window_end: a.window_end,
                diagnosis: None,
                cells: Vec::new(),
            })
        }))
    }
}

/// Deterministic alert id.
pub fn alert_id(device: &str, model_version: &str, window_start: i64) -> String {
    let mut h = Sha256::new();
    h.update(device.as_bytes());
    h.update([0]);
    h.update(model_version.as_bytes());
    h.update([0]);
    h.update(window_start.to_be_bytes());
    hex::encode(&h.finalize()[..12])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_deterministic_and_distinct() {
        let a = alert_id("pump-1", "v1", 1000);
        assert_eq!(a, alert_id("pump-1", "v1", 1000));
        assert_eq!(a.len(), 24);
        assert_ne!(a, alert_id("pump-1", "v1", 1001));
        assert_ne!(a, alert_id("pump-2", "v1", 1000));
        assert_ne!(a, alert_id("pump-1", "v2", 1000));
        // The separator keeps ("ab","c") and ("a","bc") apart.
        assert_ne!(alert_id("ab", "c", 0), alert_id("a", "bc", 0));
    }

    #[test]
    fn severity_from_ratio() {
        assert_eq!(Severity::from_ratio(1.1), Severity::Warning);
        assert_eq!(Severity::from_ratio(3.0), Severity::Critical);
        assert_eq!(Severity::parse("critical"), Some(Severity::Critical));
        assert_eq!(AlertState::parse("open"), Some(AlertState::Open));
        assert_eq!(AlertState::parse("bogus"), None);
    }
}
