//! Forewarn's evaluation metrics. Pure functions on label and prediction
//! sequences: no I/O, no model. `forewarn evaluate` feeds them; the formulas
//! are written out in `docs/EVALUATION.md` and each function's docs.
//!
//! Conventions used throughout:
//! - `truth[i]` / `pred[i]` say whether point `i` is labelled / predicted
//!   anomalous. Both slices have the same length.
//! - A *segment* is a maximal run of consecutive `true` points (inclusive
//!   index range).
//! - `times[i]` is the time of point `i` in the report's unit (seconds, or
//!   the row index when the data has no time column), non-decreasing.
//! - A ratio with a zero denominator is undefined and reported as `None`
//!   (`null` in JSON) rather than silently 0 or 1.

pub mod localisation;
pub mod nab;
pub mod recovery;
pub mod report;

pub use localisation::{Localisation, Pointed};
pub use nab::{NabProfile, NabScore, WindowPosition, parse_window_width};
pub use recovery::Recovery;
pub use report::{Counts, FileInput, Metrics};

/// An inclusive range of point indices.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct Segment {
    pub start: usize,
    pub end: usize,
}

impl Segment {
    pub fn len(&self) -> usize {
        self.end - self.start + 1
    }

    pub fn is_empty(&self) -> bool {
        false
    }

    pub fn overlaps(&self, other: &Segment) -> bool {
        self.start <= other.end && other.start <= self.end
    }
}

/// Maximal runs of `true`.
pub fn segments(flags: &[bool]) -> Vec<Segment> {
    let mut out = Vec::new();
    let mut start = None;
    for (i, &f) in flags.iter().enumerate() {
        match (f, start) {
            (true, None) => start = Some(i),
            (false, Some(s)) => {
                out.push(Segment {
                    start: s,
                    end: i - 1,
                });
                start = None;
            }
            _ => {}
        }
    }
    if let Some(s) = start {
        out.push(Segment {
            start: s,
            end: flags.len() - 1,
        });
    }
    out
}

/// Point-wise confusion counts.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct Confusion {
    pub tp: u64,
    pub fp: u64,
    pub fn_: u64,
    pub tn: u64,
}

impl Confusion {
    pub fn of(truth: &[bool], pred: &[bool]) -> Self {
        assert_eq!(truth.len(), pred.len(), "truth and prediction lengths");
        let mut c = Self::default();
        for (&t, &p) in truth.iter().zip(pred) {
            match (t, p) {
                (true, true) => c.tp += 1,
                (false, true) => c.fp += 1,
                (true, false) => c.fn_ += 1,
                (false, false) => c.tn += 1,
            }
        }
        c
    }

    pub fn add(&mut self, o: &Confusion) {
        self.tp += o.tp;
        self.fp += o.fp;
        self.fn_ += o.fn_;
        self.tn += o.tn;
    }

    /// TP / (TP + FP).
    pub fn precision(&self) -> Option<f64> {
        ratio(self.tp, self.tp + self.fp)
    }

    /// TP / (TP + FN).
    pub fn recall(&self) -> Option<f64> {
        ratio(self.tp, self.tp + self.fn_)
    }

    /// 2TP / (2TP + FP + FN), the harmonic mean of precision and recall.
    pub fn f1(&self) -> Option<f64> {
        ratio(2 * self.tp, 2 * self.tp + self.fp + self.fn_)
    }

    /// False alarm rate, %: FP / (FP + TN) x 100.
    pub fn far(&self) -> Option<f64> {
        ratio(self.fp, self.fp + self.tn).map(|r| 100.0 * r)
    }

    /// Missed alarm rate, %: FN / (FN + TP) x 100.
    pub fn mar(&self) -> Option<f64> {
        ratio(self.fn_, self.fn_ + self.tp).map(|r| 100.0 * r)
    }
}

pub(crate) fn ratio(num: u64, den: u64) -> Option<f64> {
    (den > 0).then(|| num as f64 / den as f64)
}

/// The point-adjust rule (Xu et al. 2018): when any point of a labelled
/// segment is predicted, the whole segment counts as predicted. Points
/// outside labelled segments keep their prediction.
pub fn point_adjust(truth: &[bool], pred: &[bool]) -> Vec<bool> {
    assert_eq!(truth.len(), pred.len(), "truth and prediction lengths");
    let mut out = pred.to_vec();
    for s in segments(truth) {
        if pred[s.start..=s.end].iter().any(|&p| p) {
            out[s.start..=s.end].iter_mut().for_each(|p| *p = true);
        }
    }
    out
}

/// Event-wise counts: labelled and predicted segments.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct EventCounts {
    /// Labelled segments overlapped by at least one predicted segment (one
    /// TP per labelled segment, however many predictions overlap it).
    pub tp: u64,
    /// Predicted segments that overlap no labelled segment.
    pub fp: u64,
    /// Labelled segments no predicted segment overlaps.
    pub fn_: u64,
}

impl EventCounts {
    pub fn of(truth: &[bool], pred: &[bool]) -> Self {
        assert_eq!(truth.len(), pred.len(), "truth and prediction lengths");
        let labelled = segments(truth);
        let predicted = segments(pred);
        let tp = labelled
            .iter()
            .filter(|l| predicted.iter().any(|p| p.overlaps(l)))
            .count() as u64;
        let fp = predicted
            .iter()
            .filter(|p| !labelled.iter().any(|l| l.overlaps(p)))
            .count() as u64;
        Self {
            tp,
            fp,
            fn_: labelled.len() as u64 - tp,
        }
    }

    pub fn add(&mut self, o: &EventCounts) {
        self.tp += o.tp;
        self.fp += o.fp;
        self.fn_ += o.fn_;
    }

    pub fn precision(&self) -> Option<f64> {
        ratio(self.tp, self.tp + self.fp)
    }

    pub fn recall(&self) -> Option<f64> {
        ratio(self.tp, self.tp + self.fn_)
    }

    pub fn f1(&self) -> Option<f64> {
        ratio(2 * self.tp, 2 * self.tp + self.fp + self.fn_)
    }
}

/// Detection delay of every labelled segment that is detected: the time of
/// the first predicted point inside the segment minus the time of the
/// segment's first point. Undetected segments contribute nothing (they are
/// counted by recall and MAR).
pub fn detection_delays(truth: &[bool], pred: &[bool], times: &[f64]) -> Vec<f64> {
    assert_eq!(truth.len(), pred.len(), "truth and prediction lengths");
    assert_eq!(truth.len(), times.len(), "truth and times lengths");
    segments(truth)
        .into_iter()
        .filter_map(|s| {
            (s.start..=s.end)
                .find(|&i| pred[i])
                .map(|i| times[i] - times[s.start])
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b(s: &str) -> Vec<bool> {
        s.chars().map(|c| c == '1').collect()
    }

    #[test]
    fn segments_are_maximal_runs() {
        assert_eq!(segments(&b("")), vec![]);
        assert_eq!(segments(&b("000")), vec![]);
        assert_eq!(
            segments(&b("1100111")),
            vec![Segment { start: 0, end: 1 }, Segment { start: 4, end: 6 }]
        );
        assert_eq!(segments(&b("010")), vec![Segment { start: 1, end: 1 }]);
    }

    #[test]
    fn point_wise_counts_and_rates() {
        //            truth 0011110000
        //            pred  0001100110
        // tp: idx 3,4 = 2; fp: idx 7,8 = 2; fn: idx 2,5 = 2; tn: 0,1,6,9 = 4
        let c = Confusion::of(&b("0011110000"), &b("0001100110"));
        assert_eq!(
            c,
            Confusion {
                tp: 2,
                fp: 2,
                fn_: 2,
                tn: 4
            }
        );
        assert_eq!(c.precision(), Some(0.5));
        assert_eq!(c.recall(), Some(0.5));
        assert_eq!(c.f1(), Some(0.5));
        // FAR = 2 / (2 + 4) = 33.33 %, MAR = 2 / (2 + 2) = 50 %.
        assert!((c.far().unwrap() - 100.0 / 3.0).abs() < 1e-12);
        assert_eq!(c.mar(), Some(50.0));

        // tp 3, fp 1, fn 0: P 0.75, R 1, F1 = 6/7.
        let c = Confusion::of(&b("01110"), &b("11110"));
        assert_eq!((c.precision(), c.recall()), (Some(0.75), Some(1.0)));
        assert!((c.f1().unwrap() - 6.0 / 7.0).abs() < 1e-12);
        assert_eq!(c.far(), Some(50.0));
        assert_eq!(c.mar(), Some(0.0));

        // Nothing labelled, nothing predicted: only FAR is defined.
        let c = Confusion::of(&b("0000"), &b("0000"));
        assert_eq!(
            (c.precision(), c.recall(), c.f1(), c.far(), c.mar()),
            (None, None, None, Some(0.0), None)
        );
    }

    #[test]
    fn point_adjust_fills_detected_segments_only() {
        let truth = b("0111100111000");
        let pred = b("0001000000010");
        // First segment hit at index 3 -> all of 1..=4; second segment
        // (7..=9) missed; the FP at 11 stays.
        assert_eq!(point_adjust(&truth, &pred), b("0111100000010"));
        let c = Confusion::of(&truth, &point_adjust(&truth, &pred));
        // tp 4, fp 1, fn 3: F1 = 8 / (8 + 1 + 3) = 2/3.
        assert_eq!((c.tp, c.fp, c.fn_), (4, 1, 3));
        assert!((c.f1().unwrap() - 2.0 / 3.0).abs() < 1e-12);
        // Unadjusted: tp 1, fp 1, fn 6: F1 = 2 / 9.
        assert!((Confusion::of(&truth, &pred).f1().unwrap() - 2.0 / 9.0).abs() < 1e-12);
    }

    #[test]
    fn event_wise_one_tp_per_label_and_unmatched_predictions_are_fps() {
        //           labels:  [1..3]     [8..9]      [13]
        let truth = b("01110000110001000");
        //     predictions: [2] hits label 1; [4..5], [11], [15..16] are FPs
        let pred = b("00101100000100011");
        let e = EventCounts::of(&truth, &pred);
        assert_eq!(
            e,
            EventCounts {
                tp: 1,
                fp: 3,
                fn_: 2
            }
        );
        assert_eq!(e.precision(), Some(0.25));
        assert!((e.recall().unwrap() - 1.0 / 3.0).abs() < 1e-12);
        // 2 / (2 + 3 + 2)
        assert!((e.f1().unwrap() - 2.0 / 7.0).abs() < 1e-12);

        // One long prediction covering two labels: two TPs, no FP.
        let e = EventCounts::of(&b("0110110"), &b("0111111"));
        assert_eq!(
            e,
            EventCounts {
                tp: 2,
                fp: 0,
                fn_: 0
            }
        );
        assert_eq!(e.f1(), Some(1.0));
    }

    #[test]
    fn delays_are_measured_from_segment_start() {
        let truth = b("0011110011100");
        let pred = b("1000110000000");
        let times: Vec<f64> = (0..13).map(|i| 10.0 * i as f64).collect();
        // Segment 2..=5 first hit at 4: 20; segment 8..=10 missed; the
        // prediction at 0 precedes any segment and is not a detection.
        assert_eq!(detection_delays(&truth, &pred, &times), vec![20.0]);
    }
}
