//! Everything `report.json` holds for one file, and pooling over files.
//!
//! Pooling sums counts, never averages ratios: pooled precision is
//! `sum TP / (sum TP + sum FP)` over all files, NAB sums raw, null and
//! perfect scores before normalising, and the mean detection delay is over
//! all detected segments of all files.

use serde::Serialize;

use crate::nab::{self, NabProfile, NabScore, WindowPosition};
use crate::recovery::Recovery;
use crate::{Confusion, EventCounts, Segment, detection_delays, point_adjust, segments};

/// One scored file.
#[derive(Debug, Clone, Copy)]
pub struct FileInput<'a> {
    pub truth: &'a [bool],
    pub pred: &'a [bool],
    /// Time of each point in the report's unit (seconds or rows).
    pub times: &'a [f64],
    /// NAB anchors when they are not the labelled segments (changepoints,
    /// as one-point segments); `None` = the labelled segments.
    pub changepoints: Option<&'a [usize]>,
    /// NAB window width in the unit of `times`; `None` = NAB's default
    /// (10 % of the file's span shared among its anchors).
    pub nab_width: Option<f64>,
    pub nab_position: WindowPosition,
}

/// Summable counts behind every metric.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Counts {
    pub point: Confusion,
    pub point_adjusted: Confusion,
    pub events: EventCounts,
    pub nab_standard: NabScore,
    pub nab_low_fp: NabScore,
    pub nab_low_fn: NabScore,
    pub delay_sum: f64,
    pub delays: u64,
    /// NAB windows scored.
    pub nab_windows: u64,
    pub recovery: Recovery,
    /// Alerts raised, counted as the predicted segments: the rows of an
    /// alert from its opening to its resolution (two alerts with no
    /// unflagged row between them count as one).
    pub alerts: u64,
    pub points: u64,
    pub files: u64,
}

impl Counts {
    pub fn of(f: &FileInput<'_>) -> Self {
        let n = f.truth.len();
        assert!(f.pred.len() == n && f.times.len() == n, "input lengths");
        let anchors: Vec<Segment> = match f.changepoints {
            Some(cp) => cp.iter().map(|&i| Segment { start: i, end: i }).collect(),
            None => segments(f.truth),
        };
        let width = f
            .nab_width
            .unwrap_or_else(|| nab::default_width(f.times, anchors.len()));
        let windows = nab::windows(&anchors, f.times, width, f.nab_position);
        let dets = nab::detections(f.pred);
        let delays = detection_delays(f.truth, f.pred, f.times);
        Self {
            point: Confusion::of(f.truth, f.pred),
            point_adjusted: Confusion::of(f.truth, &point_adjust(f.truth, f.pred)),
            events: EventCounts::of(f.truth, f.pred),
            nab_standard: nab::score(&windows, &dets, NabProfile::STANDARD),
            nab_low_fp: nab::score(&windows, &dets, NabProfile::LOW_FP),
            nab_low_fn: nab::score(&windows, &dets, NabProfile::LOW_FN),
            delay_sum: delays.iter().sum(),
            delays: delays.len() as u64,
            nab_windows: windows.len() as u64,
            recovery: Recovery::of(f.truth, f.pred),
            alerts: dets.len() as u64,
            points: n as u64,
            files: 1,
        }
    }

    pub fn add(&mut self, o: &Counts) {
        self.point.add(&o.point);
        self.point_adjusted.add(&o.point_adjusted);
        self.events.add(&o.events);
        self.nab_standard.add(&o.nab_standard);
        self.nab_low_fp.add(&o.nab_low_fp);
        self.nab_low_fn.add(&o.nab_low_fn);
        self.delay_sum += o.delay_sum;
        self.delays += o.delays;
        self.nab_windows += o.nab_windows;
        self.recovery.add(&o.recovery);
        self.alerts += o.alerts;
        self.points += o.points;
        self.files += o.files;
    }

    pub fn metrics(&self) -> Metrics {
        let (far_after_anomaly, far_elsewhere) = self.recovery.far_split(&self.point);
        Metrics {
            precision: self.point.precision(),
            recall: self.point.recall(),
            f1: self.point.f1(),
            far: self.point.far(),
            mar: self.point.mar(),
            pa_f1: self.point_adjusted.f1(),
            event_precision: self.events.precision(),
            event_recall: self.events.recall(),
            event_f1: self.events.f1(),
            nab_standard: self.nab_standard.normalised(),
            nab_low_fp: self.nab_low_fp.normalised(),
            nab_low_fn: self.nab_low_fn.normalised(),
            mean_detection_delay: (self.delays > 0).then(|| self.delay_sum / self.delays as f64),
            labelled_segments: self.recovery.rows_after.len() as u64,
            segments_still_flagged: self.recovery.still_flagged(),
            rows_after_anomaly_median: self.recovery.median_rows_after(),
            rows_after_anomaly_mean: self.recovery.mean_rows_after(),
            far_after_anomaly,
            far_elsewhere,
            alerts: self.alerts,
            alerts_per_caught_segment: crate::ratio(
                self.alerts.saturating_sub(self.events.fp),
                self.events.tp,
            ),
            points: self.points,
            files: self.files,
        }
    }
}

/// The metrics of `report.json` (`null` where undefined).
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Metrics {
    pub precision: Option<f64>,
    pub recall: Option<f64>,
    pub f1: Option<f64>,
    /// %.
    pub far: Option<f64>,
    /// %.
    pub mar: Option<f64>,
    pub pa_f1: Option<f64>,
    pub event_precision: Option<f64>,
    pub event_recall: Option<f64>,
    pub event_f1: Option<f64>,
    pub nab_standard: Option<f64>,
    pub nab_low_fp: Option<f64>,
    pub nab_low_fn: Option<f64>,
    /// Seconds, or rows without a time column.
    pub mean_detection_delay: Option<f64>,
    pub labelled_segments: u64,
    /// Those whose alert was still open when they ended.
    pub segments_still_flagged: u64,
    /// Rows that stay flagged after a labelled segment ends, median and
    /// mean over the labelled segments ([`Recovery`]).
    pub rows_after_anomaly_median: Option<f64>,
    pub rows_after_anomaly_mean: Option<f64>,
    /// The false-alarm rate split (%, both of the normal rows; they add
    /// up to `far`): rows of alerts carried over from a labelled segment,
    /// and the rest.
    pub far_after_anomaly: Option<f64>,
    pub far_elsewhere: Option<f64>,
    /// Alerts raised (predicted segments), false ones included.
    pub alerts: u64,
    /// The alerts that overlap a labelled segment per labelled segment
    /// they caught: 1 when each caught anomaly raised one alert, more
    /// when alerts resolved and opened again inside it (flapping).
    pub alerts_per_caught_segment: Option<f64>,
    pub points: u64,
    pub files: u64,
}

/// A metric as `evaluate` prints it: three decimals, `-` where undefined.
fn shown(v: Option<f64>) -> String {
    v.map_or("-".into(), |v| format!("{v:.3}"))
}

impl Metrics {
    /// `evaluate`'s line for one scored file: its headline metrics.
    pub fn file_line(&self) -> String {
        format!(
            "f1 {} event_f1 {} nab {} far {}% delay {}",
            shown(self.f1),
            shown(self.event_f1),
            shown(self.nab_standard),
            shown(self.far),
            shown(self.mean_detection_delay)
        )
    }

    /// `evaluate`'s two summary lines: the scores, then recovery and
    /// alerts (`-` where undefined); delays in `time_unit`.
    pub fn summary(&self, time_unit: &str) -> String {
        format!(
            "{} files, {} points: precision {} recall {} f1 {} far {}% mar {}% pa_f1 {} event_f1 {} \
             nab {} / {} / {} delay {} {time_unit}\nrecovery: {} of {} labelled segments still flagged \
             at their end, rows flagged after one {} / {} (median / mean), far {}% after an anomaly \
             + {}% elsewhere, {} alerts ({} per labelled segment caught)",
            self.files,
            self.points,
            shown(self.precision),
            shown(self.recall),
            shown(self.f1),
            shown(self.far),
            shown(self.mar),
            shown(self.pa_f1),
            shown(self.event_f1),
            shown(self.nab_standard),
            shown(self.nab_low_fp),
            shown(self.nab_low_fn),
            shown(self.mean_detection_delay),
            self.segments_still_flagged,
            self.labelled_segments,
            shown(self.rows_after_anomaly_median),
            shown(self.rows_after_anomaly_mean),
            shown(self.far_after_anomaly),
            shown(self.far_elsewhere),
            self.alerts,
            shown(self.alerts_per_caught_segment),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b(s: &str) -> Vec<bool> {
        s.chars().map(|c| c == '1').collect()
    }

    #[test]
    fn one_file_and_pooling() {
        // File A: label 4..=7, detected from 6; an FP at 1.
        let ta = b("0000111100");
        let pa = b("0100001100");
        let times: Vec<f64> = (0..10).map(|i| i as f64).collect();
        let a = Counts::of(&FileInput {
            truth: &ta,
            pred: &pa,
            times: &times,
            changepoints: None,
            nab_width: Some(2.0),
            nab_position: WindowPosition::Right,
        });
        // point: tp 2 (6,7), fp 1, fn 2 (4,5), tn 5.
        assert_eq!(
            a.point,
            Confusion {
                tp: 2,
                fp: 1,
                fn_: 2,
                tn: 5
            }
        );
        // point-adjusted: tp 4, fp 1, fn 0.
        assert_eq!((a.point_adjusted.tp, a.point_adjusted.fn_), (4, 0));
        assert_eq!(
            a.events,
            EventCounts {
                tp: 1,
                fp: 1,
                fn_: 0
            }
        );
        assert_eq!((a.delays, a.delay_sum), (1, 2.0));
        // NAB window: right, width 2 -> [4, 9]; detections 1 (FP, no window
        // before: -0.11) and 6: y = -(9 - 6 + 1)/6.
        let want = -0.11 + nab::scaled_sigmoid(-4.0 / 6.0) / nab::scaled_sigmoid(-1.0);
        assert!((a.nab_standard.raw - want).abs() < 1e-12);

        // File B: nothing labelled, one FP segment.
        let tb = b("00000");
        let pb = b("00110");
        let bc = Counts::of(&FileInput {
            truth: &tb,
            pred: &pb,
            times: &times[..5],
            changepoints: None,
            nab_width: None,
            nab_position: WindowPosition::Centered,
        });
        let m = bc.metrics();
        assert_eq!(
            (m.precision, m.recall, m.far),
            (Some(0.0), None, Some(40.0))
        );
        assert_eq!(m.nab_standard, None);

        let mut pooled = a.clone();
        pooled.add(&bc);
        let m = pooled.metrics();
        // tp 2, fp 3, fn 2, tn 8.
        assert_eq!(m.precision, Some(0.4));
        assert_eq!(m.recall, Some(0.5));
        assert!((m.f1.unwrap() - 4.0 / 9.0).abs() < 1e-12);
        assert!((m.far.unwrap() - 300.0 / 11.0).abs() < 1e-12);
        assert_eq!(m.mar, Some(50.0));
        // PA: tp 4, fp 3, fn 0 -> 8 / 11.
        assert!((m.pa_f1.unwrap() - 8.0 / 11.0).abs() < 1e-12);
        // events: tp 1, fp 2, fn 0.
        assert!((m.event_f1.unwrap() - 0.5).abs() < 1e-12);
        assert_eq!(m.mean_detection_delay, Some(2.0));
        // File A's alert closes with its segment: every false alarm is
        // elsewhere.
        assert_eq!(pooled.recovery.rows_after, vec![0]);
        assert_eq!(
            (m.segments_still_flagged, m.rows_after_anomaly_median),
            (0, Some(0.0))
        );
        assert_eq!((m.far_after_anomaly, m.far_elsewhere), (Some(0.0), m.far));
        assert_eq!((m.points, m.files), (15, 2));
        // Alerts: A's false one and the one on its label, B's false one.
        assert_eq!((a.alerts, bc.alerts), (2, 1));
        assert_eq!((m.alerts, m.alerts_per_caught_segment), (3, Some(1.0)));
        assert_eq!(
            bc.metrics().file_line(),
            "f1 0.000 event_f1 0.000 nab - far 40.000% delay -"
        );
        let summary = m.summary("seconds");
        for want in [
            "2 files, 15 points: precision 0.400 recall 0.500 ",
            " mar 50.000% ",
            " delay 2.000 seconds\nrecovery: 0 of 1 labelled segments still flagged at their end, ",
            " 3 alerts (1.000 per labelled segment caught)",
        ] {
            assert!(summary.contains(want), "{want:?} not in {summary:?}");
        }
        // File B's FP (before any window in its file) costs 0.11 in the pool.
        let raw = want - 0.11;
        assert!((m.nab_standard.unwrap() - 100.0 * (raw + 1.0) / 2.0).abs() < 1e-9);
    }

    /// An alert that resolves inside a labelled segment and opens again
    /// counts twice for that segment; one alert over two segments counts
    /// once for both; none caught leaves the ratio undefined.
    #[test]
    fn alerts_per_caught_segment_counts_flapping() {
        let per = |truth: &str, pred: &str| {
            let (t, p) = (b(truth), b(pred));
            let times: Vec<f64> = (0..t.len()).map(|i| i as f64).collect();
            let m = Counts::of(&FileInput {
                truth: &t,
                pred: &p,
                times: &times,
                changepoints: None,
                nab_width: None,
                nab_position: WindowPosition::Centered,
            })
            .metrics();
            (m.alerts, m.alerts_per_caught_segment)
        };
        let cases = [
            ("0111111100", "0110011000", (2, Some(2.0))),
            ("0111111100", "0111111110", (1, Some(1.0))),
            ("0110001100", "0111111100", (1, Some(0.5))),
            ("0110001100", "1000000001", (2, None)),
            ("0000000000", "0000000000", (0, None)),
        ];
        for (truth, pred, want) in cases {
            assert_eq!(per(truth, pred), want, "{truth} / {pred}");
        }
    }

    #[test]
    fn changepoints_anchor_nab_windows() {
        let t = b("0000000000");
        let p = b("0000010000");
        let times: Vec<f64> = (0..10).map(|i| i as f64).collect();
        let c = Counts::of(&FileInput {
            truth: &t,
            pred: &p,
            times: &times,
            changepoints: Some(&[4]),
            nab_width: Some(4.0),
            nab_position: WindowPosition::Centered,
        });
        // Window [2, 6] (5 points); detection 5: y = -(6 - 5 + 1)/5.
        let want = nab::scaled_sigmoid(-0.4) / nab::scaled_sigmoid(-1.0);
        assert!((c.nab_standard.raw - want).abs() < 1e-12);
        assert_eq!(c.nab_windows, 1);
    }
}
