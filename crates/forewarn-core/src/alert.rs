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
