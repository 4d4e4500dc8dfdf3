//! The open alert the crate's unit tests pass through the stages.

use forewarn_core::{Alert, AlertState, Severity};

/// An open warning `id` on device `d`, opened at `opened_at` (its window
/// ends there), score 1 over threshold 0.5.
pub(crate) fn open_alert(id: &str, opened_at: i64) -> Alert {
    Alert {
        id: id.into(),
        device: "d".into(),
        model: "m".into(),
        model_version: "v".into(),
        state: AlertState::Open,
        severity: Severity::Warning,
        opened_at,
        resolved_at: None,
        score: 1.0,
        peak_score: 1.0,
        threshold: 0.5,
        contributors: vec![],
        window_start: 0,
        window_end: opened_at,
        diagnosis: None,
        cells: vec![],
    }
}
