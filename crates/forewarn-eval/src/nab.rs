//! The Numenta Anomaly Benchmark score (Lavin & Ahmad 2015), as in NAB's
//! `sweeper.py`, for binary detections.
//!
//! - Each labelled segment (or changepoint) gets a window; overlapping
//!   windows are merged.
//! - A *detection* is the first point of a predicted segment (an alert
//!   opening). Only the first detection in a window counts; it scores
//!   `A_tp * sigma(y) / sigma(-1)` with `y = -(r - i + 1) / |W|`, `r` the
//!   window's last index and `|W|` its length in points, so a detection at
//!   the window's first point scores `A_tp` and one at its last almost 0.
//! - A detection outside every window scores `A_fp * sigma(y)` with
//!   `y = (i - r_prev) / (|W_prev| - 1)` measured from the end of the
//!   preceding window (`sigma(y) < 0`), or `-A_fp` when no window precedes.
//! - Each window without a detection scores `-A_fn`.
//! - `sigma(y) = 2 / (1 + e^(5y)) - 1` (NAB's scaled sigmoid), `-1` for `y > 3`.
//!
//! Normalised: `100 * (raw - null) / (perfect - null)` where the null
//! detector (no detections) scores `-A_fn * windows` and the perfect one
//! `A_tp * windows`. Raw, null and perfect are summed over files before
//! normalising, as NAB does over its corpus. NAB's threshold sweep does not
//! apply: Forewarn's detector outputs binary alerts. NAB's probationary
//! period is the training part, which is not scored.

use serde::Serialize;

use crate::Segment;

/// NAB application profile: weights of a true positive, a false positive
/// and a missed window.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct NabProfile {
    pub tp: f64,
    pub fp: f64,
    pub fn_: f64,
}

impl NabProfile {
    pub const STANDARD: Self = Self {
        tp: 1.0,
        fp: 0.11,
        fn_: 1.0,
    };
    pub const LOW_FP: Self = Self {
        tp: 1.0,
        fp: 0.22,
        fn_: 1.0,
    };
    pub const LOW_FN: Self = Self {
        tp: 1.0,
        fp: 0.11,
        fn_: 2.0,
    };
}

/// Where a window sits relative to its labelled segment.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum WindowPosition {
    /// Starts at the segment's start, ends `width` after its end.
    Right,
    /// Extends `width / 2` on both sides of the segment (NAB's default).
    #[default]
    Centered,
}

/// NAB's scaled sigmoid.
pub fn scaled_sigmoid(y: f64) -> f64 {
    if y > 3.0 {
        -1.0
    } else {
        2.0 / (1.0 + (5.0 * y).exp()) - 1.0
    }
}

/// NAB's default window width when none is given: 10 % of the data's time
/// span shared equally among the anchors.
pub fn default_width(times: &[f64], anchors: usize) -> f64 {
    match (times.first(), times.last()) {
        (Some(a), Some(b)) if anchors > 0 => 0.1 * (b - a) / anchors as f64,
        _ => 0.0,
    }
}

/// A window width as `--nab-window` takes it: "60s", "5m", "1h 30m"
/// (humantime) in seconds; a bare non-negative number as is (report
/// units: seconds, or rows without a time column).
pub fn parse_window_width(s: &str) -> Result<f64, String> {
    if let Ok(v) = s.trim().parse::<f64>()
        && v.is_finite()
        && v >= 0.0
    {
        return Ok(v);
    }
    humantime::parse_duration(s.trim())
        .map(|d| d.as_secs_f64())
        .map_err(|e| format!("--nab-window {s:?}: expected e.g. 60s, 5m or a number ({e})"))
}

/// Windows (inclusive index ranges, sorted, merged where they overlap or
/// touch) around each anchor segment. `width` is in the unit of `times`.
pub fn windows(
    anchors: &[Segment],
    times: &[f64],
    width: f64,
    position: WindowPosition,
) -> Vec<Segment> {
    let mut out: Vec<Segment> = Vec::new();
    let mut sorted = anchors.to_vec();
    sorted.sort_by_key(|s| s.start);
    for a in sorted {
        let (lo, hi) = match position {
            WindowPosition::Right => (times[a.start], times[a.end] + width),
            WindowPosition::Centered => (times[a.start] - width / 2.0, times[a.end] + width / 2.0),
        };
        // First index at or after lo (never after the anchor's start), last
        // at or before hi (never before the anchor's end).
        let l = times[..a.start].partition_point(|t| *t < lo);
        let r = a.end + times[a.end + 1..].partition_point(|t| *t <= hi);
        match out.last_mut() {
            Some(prev) if l <= prev.end + 1 => prev.end = prev.end.max(r),
            _ => out.push(Segment { start: l, end: r }),
        }
    }
    out
}

/// Detections: the first point of each predicted segment.
pub fn detections(pred: &[bool]) -> Vec<usize> {
    crate::segments(pred).into_iter().map(|s| s.start).collect()
}

/// A raw NAB score with its null and perfect references (summable).
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct NabScore {
    pub raw: f64,
    pub null: f64,
    pub perfect: f64,
}

impl NabScore {
    pub fn add(&mut self, o: &NabScore) {
        self.raw += o.raw;
        self.null += o.null;
        self.perfect += o.perfect;
    }

    /// `100 * (raw - null) / (perfect - null)`; undefined without windows.
    pub fn normalised(&self) -> Option<f64> {
        let den = self.perfect - self.null;
        (den > 0.0).then(|| 100.0 * (self.raw - self.null) / den)
    }
}

/// Scores sorted `detections` (point indices) against sorted, disjoint
/// `windows` under `profile`.
pub fn score(windows: &[Segment], detections: &[usize], profile: NabProfile) -> NabScore {
    let max_tp = scaled_sigmoid(-1.0);
    let mut detected = vec![false; windows.len()];
    let mut raw = 0.0;
    for &i in detections {
        // Windows are sorted and disjoint: the first one ending at or after
        // i either contains i or lies after it.
        let k = windows.partition_point(|w| w.end < i);
        if k < windows.len() && windows[k].start <= i {
            if !detected[k] {
                detected[k] = true;
                let w = windows[k];
                let y = -((w.end - i + 1) as f64) / w.len() as f64;
                raw += profile.tp * scaled_sigmoid(y) / max_tp;
            }
        } else if k == 0 {
            raw -= profile.fp;
        } else {
            let w = windows[k - 1];
            let y = (i - w.end) as f64 / (w.len().saturating_sub(1).max(1)) as f64;
            raw += profile.fp * scaled_sigmoid(y);
        }
    }
    let missed = detected.iter().filter(|d| !**d).count() as f64;
    raw -= profile.fn_ * missed;
    let n = windows.len() as f64;
    NabScore {
        raw,
        null: -profile.fn_ * n,
        perfect: profile.tp * n,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: f64, b: f64) {
        assert!((a - b).abs() < 1e-9, "{a} != {b}");
    }

    #[test]
    fn scaled_sigmoid_values() {
        // 2 / (1 + e^-5) - 1
        close(scaled_sigmoid(-1.0), 0.986_614_298_151_430_3);
        close(scaled_sigmoid(0.0), 0.0);
        // 2 / (1 + e^5) - 1
        close(scaled_sigmoid(1.0), -0.986_614_298_151_430_3);
        close(scaled_sigmoid(3.0), 2.0 / (1.0 + 15f64.exp()) - 1.0);
        close(scaled_sigmoid(3.01), -1.0);
    }

    #[test]
    fn windows_centered_right_and_merged() {
        let times: Vec<f64> = (0..20).map(|i| i as f64).collect();
        let a = [Segment { start: 5, end: 6 }, Segment { start: 15, end: 15 }];
        // Centered, width 4: [3, 8] and [13, 17].
        assert_eq!(
            windows(&a, &times, 4.0, WindowPosition::Centered),
            vec![Segment { start: 3, end: 8 }, Segment { start: 13, end: 17 }]
        );
        // Right, width 4: [5, 10] and [15, 19].
        assert_eq!(
            windows(&a, &times, 4.0, WindowPosition::Right),
            vec![
                Segment { start: 5, end: 10 },
                Segment { start: 15, end: 19 }
            ]
        );
        // Width 10 centered: [0, 11] and [10, 19] overlap -> merged.
        assert_eq!(
            windows(&a, &times, 10.0, WindowPosition::Centered),
            vec![Segment { start: 0, end: 19 }]
        );
        // Irregular times: width in time units, not points.
        let t = [0.0, 1.0, 2.0, 10.0, 11.0, 30.0];
        assert_eq!(
            windows(
                &[Segment { start: 3, end: 3 }],
                &t,
                4.0,
                WindowPosition::Centered
            ),
            vec![Segment { start: 3, end: 4 }]
        );
        close(default_width(&times, 2), 0.1 * 19.0 / 2.0);
    }

    #[test]
    fn score_by_hand() {
        // One window [10, 19] (10 points) in 40 points.
        let w = [Segment { start: 10, end: 19 }];
        let p = NabProfile::STANDARD;
        let max = scaled_sigmoid(-1.0);

        // Detection at the window's first point: y = -10/10 = -1 -> 1.0.
        let s = score(&w, &[10], p);
        close(s.raw, 1.0);
        assert_eq!((s.null, s.perfect), (-1.0, 1.0));
        close(s.normalised().unwrap(), 100.0);

        // At index 14: y = -(19 - 14 + 1)/10 = -0.6; a second detection in
        // the same window is ignored.
        let s = score(&w, &[14, 16], p);
        close(s.raw, scaled_sigmoid(-0.6) / max);

        // No detection: -1 -> normalised 0 (the null detector).
        let s = score(&w, &[], p);
        close(s.raw, -1.0);
        close(s.normalised().unwrap(), 0.0);

        // FP before any window: -A_fp; FP at 24, after the window:
        // y = (24 - 19) / (10 - 1) = 5/9, scored A_fp * sigma(5/9).
        let s = score(&w, &[3, 10, 24], p);
        let want = -0.11 + 1.0 + 0.11 * scaled_sigmoid(5.0 / 9.0);
        close(s.raw, want);
        close(s.normalised().unwrap(), 100.0 * (want + 1.0) / 2.0);

        // Profiles: low FN doubles the miss, low FP doubles the FP weight.
        let s = score(&w, &[3], NabProfile::LOW_FN);
        close(s.raw, -0.11 - 2.0);
        assert_eq!((s.null, s.perfect), (-2.0, 1.0));
        close(s.normalised().unwrap(), 100.0 * (-0.11 - 2.0 + 2.0) / 3.0);
        let s = score(&w, &[3], NabProfile::LOW_FP);
        close(s.raw, -0.22 - 1.0);

        // Far past a window (y > 3): a full -A_fp.
        let s = score(&[Segment { start: 0, end: 1 }], &[0, 9], p);
        // Window of 2 at [0,1]: detection at 0 -> y = -1 -> 1.0; 9 is
        // (9-1)/(2-1) = 8 > 3 past it -> -0.11.
        close(s.raw, 1.0 - 0.11);
    }

    #[test]
    fn scores_sum_over_files() {
        let mut total = score(&[Segment { start: 0, end: 9 }], &[0], NabProfile::STANDARD);
        total.add(&score(
            &[Segment { start: 0, end: 9 }],
            &[],
            NabProfile::STANDARD,
        ));
        // raw 1 - 1 = 0; null -2; perfect 2 -> 50.
        close(total.normalised().unwrap(), 50.0);
        assert_eq!(NabScore::default().normalised(), None);
        assert_eq!(detections(&[false, true, true, false, true]), vec![1, 4]);
    }

    #[test]
    fn window_widths_parse_as_durations_or_numbers() {
        assert_eq!(parse_window_width("60s"), Ok(60.0));
        assert_eq!(parse_window_width(" 20 "), Ok(20.0));
        assert_eq!(parse_window_width("1h 30m"), Ok(5400.0));
        for bad in ["soon", "-5", "NaN"] {
            let e = parse_window_width(bad).unwrap_err();
            assert!(e.contains("expected e.g. 60s"), "{bad}: {e}");
        }
    }
}
