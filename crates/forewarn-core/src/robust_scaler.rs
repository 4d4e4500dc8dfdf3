//! Robust per-channel scaling for plant data: median and interquartile
//! range instead of mean and standard deviation, so a training period with
//! spikes or short upsets does not inflate the scale of a channel and hide
//! later faults on it.

use crate::scaler::{MIN_SCALE, Scaler};
use crate::threshold::quantile_sorted;

/// IQR of a standard normal distribution: dividing by it makes the robust
/// scale comparable with a standard deviation on Gaussian data.
pub const NORMAL_IQR: f64 = 1.348_979_500_392_163_5;

/// Fits center = median and scale = IQR / 1.349 per channel over row-major
/// `rows`. A channel whose IQR is zero but that still varies (mostly
/// constant with a few excursions, e.g. a valve) falls back to its standard
/// deviation; a channel with no variation at all is marked constant with
/// scale 1, as [`Scaler::fit`] does.
pub fn fit(rows: &[f32], channels: usize) -> Scaler {
    assert!(channels > 0 && rows.len().is_multiple_of(channels));
    let plain = Scaler::fit(rows, channels);
    let mut center = Vec::with_capacity(channels);
    let mut scale = Vec::with_capacity(channels);
    let mut constant = Vec::with_capacity(channels);
    for j in 0..channels {
        let mut col: Vec<f64> = rows.chunks_exact(channels).map(|r| r[j] as f64).collect();
        if col.is_empty() {
            center.push(0.0);
            scale.push(1.0);
            constant.push(true);
            continue;
        }
        col.sort_by(f64::total_cmp);
        let median = quantile_sorted(&col, 0.5) as f32;
        let iqr = (quantile_sorted(&col, 0.75) - quantile_sorted(&col, 0.25)) / NORMAL_IQR;
        let is_const = plain.constant[j];
        center.push(median);
        constant.push(is_const);
        scale.push(if is_const {
            1.0
        } else if (iqr as f32) >= MIN_SCALE {
            iqr as f32
        } else {
            plain.scale[j]
        });
    }
    Scaler {
        center,
        scale,
        constant,
        forecast_constant: Vec::new(),
    }
}

impl Scaler {
    /// Fitted on row-major `rows`: median / IQR ([`fit`]) when `robust`,
    /// mean / standard deviation ([`Scaler::fit`]) otherwise; what every
    /// trainer fits.
    pub fn fit_with(rows: &[f32], channels: usize, robust: bool) -> Self {
        if robust {
            fit(rows, channels)
        } else {
            Self::fit(rows, channels)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_iqr_with_fallbacks() {
        // Channel 0: 1..=5 and an outlier 100 -> median 3.5; quartiles at
        // ranks 1.25 and 3.75: 2.25 and 4.75 -> IQR 2.5.
        // Channel 1: constant 7. Channel 2: 0 except one 6 (IQR 0, sd > 0).
        let mut rows = vec![];
        for (i, a) in [1.0, 2.0, 3.0, 4.0, 5.0, 100.0].iter().enumerate() {
            rows.extend([*a, 7.0, if i == 5 { 6.0 } else { 0.0 }]);
        }
        let s = fit(&rows, 3);
        assert_eq!(s.center, vec![3.5, 7.0, 0.0]);
        assert!((s.scale[0] as f64 - 2.5 / NORMAL_IQR).abs() < 1e-6);
        assert_eq!((s.scale[1], s.constant[1]), (1.0, true));
        // sd of (0,0,0,0,0,6) = sqrt(5) = 2.236...
        assert!((s.scale[2] - 5f32.sqrt()).abs() < 1e-5, "{}", s.scale[2]);
        assert!(!s.constant[2]);
    }
}
