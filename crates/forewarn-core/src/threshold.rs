//! Detection threshold precomputed from scores on normal validation data.

use serde::{Deserialize, Serialize};

/// How the threshold is derived from validation scores.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct ThresholdRule {
    /// Quantile of validation batch scores, in [0, 1]; 1.0 is the maximum.
    pub quantile: f64,
    /// Multiplier applied to that quantile (headroom against unseen normal).
    pub margin: f64,
}

impl Default for ThresholdRule {
    fn default() -> Self {
        Self {
            quantile: 0.995,
            margin: 1.5,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Threshold {
    pub value: f64,
    pub rule: ThresholdRule,
    /// Number of validation scores it was computed from.
    pub samples: usize,
}

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ThresholdError {
    #[error("no validation scores: the validation part is shorter than warm-up plus one batch")]
    NoScores,
    #[error("quantile {0} is outside [0, 1]")]
    BadQuantile(f64),
    #[error("margin {0} must be positive and finite")]
    BadMargin(f64),
    #[error("validation scores contain a non-finite value")]
    NonFinite,
}

impl Threshold {
    /// Linear-interpolated quantile of `scores` times the margin.
    pub fn from_validation(scores: &[f64], rule: ThresholdRule) -> Result<Self, ThresholdError> {
        if !(0.0..=1.0).contains(&rule.quantile) {
            return Err(ThresholdError::BadQuantile(rule.quantile));
        }
        if !(rule.margin.is_finite() && rule.margin > 0.0) {
            return Err(ThresholdError::BadMargin(rule.margin));
        }
        if scores.is_empty() {
            return Err(ThresholdError::NoScores);
        }
        if scores.iter().any(|s| !s.is_finite()) {
            return Err(ThresholdError::NonFinite);
        }
        let mut sorted = scores.to_vec();
        sorted.sort_by(f64::total_cmp);
        Ok(Self {
            value: quantile_sorted(&sorted, rule.quantile) * rule.margin,
            rule,
            samples: scores.len(),
        })
    }
}

/// Quantile of sorted data with linear interpolation between ranks.
pub fn quantile_sorted(sorted: &[f64], q: f64) -> f64 {
    let pos = q * (sorted.len() - 1) as f64;
    let lo = pos.floor() as usize;
    let hi = pos.ceil() as usize;
    let frac = pos - lo as f64;
    sorted[lo] + (sorted[hi] - sorted[lo]) * frac
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantile_and_margin() {
        let scores = [4.0, 1.0, 3.0, 2.0, 5.0];
        let cases = [
            (
                ThresholdRule {
                    quantile: 1.0,
                    margin: 1.0,
                },
                5.0,
            ),
            (
                ThresholdRule {
                    quantile: 0.5,
                    margin: 1.0,
                },
                3.0,
            ),
            (
                ThresholdRule {
                    quantile: 0.875,
                    margin: 2.0,
                },
                9.0,
            ), // rank 3.5 -> 4.5, x2
            (
                ThresholdRule {
                    quantile: 0.0,
                    margin: 1.5,
                },
                1.5,
            ),
        ];
        for (rule, want) in cases {
            let t = Threshold::from_validation(&scores, rule).unwrap();
            assert!(
                (t.value - want).abs() < 1e-12,
                "{rule:?}: {} != {want}",
                t.value
            );
            assert_eq!(t.samples, 5);
        }
    }

    #[test]
    fn bad_inputs_are_errors() {
        let ok = ThresholdRule::default();
        assert_eq!(
            Threshold::from_validation(&[], ok),
            Err(ThresholdError::NoScores)
        );
        assert_eq!(
            Threshold::from_validation(
                &[1.0],
                ThresholdRule {
                    quantile: 1.5,
                    margin: 1.0
                }
            ),
            Err(ThresholdError::BadQuantile(1.5))
        );
        assert_eq!(
            Threshold::from_validation(
                &[1.0],
                ThresholdRule {
                    quantile: 0.5,
                    margin: 0.0
                }
            ),
            Err(ThresholdError::BadMargin(0.0))
        );
        assert_eq!(
            Threshold::from_validation(&[f64::NAN], ok),
            Err(ThresholdError::NonFinite)
        );
    }
}
