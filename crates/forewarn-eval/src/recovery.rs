//! Recovery after an anomaly: how long an alert outlives the labelled
//! segment it caught, and which false alarms are such overhangs.
//!
//! A detector whose alerts stay open after a fault ends raises false
//! alarms that look nothing like the ones it raises on calm data, and the
//! two have different causes (a threshold or state anchored in the fault,
//! against a model that misreads normal data). So the false-alarm rows are
//! split: *after an anomaly* are the flagged rows that continue, without a
//! break, from the last row of a labelled segment (up to the next labelled
//! row); every other false-alarm row is *elsewhere*. The two add up to the
//! point-wise false positives.

use serde::Serialize;

use crate::{Confusion, segments};

/// Summable recovery counts of one or more files. The false alarms and
/// normal rows they are split against are the point-wise [`Confusion`]'s.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Recovery {
    /// Per labelled segment, in file order: the rows that stay flagged
    /// right after it ends (0 when the row after it is not flagged). Kept
    /// whole so that the pooled median is exact; they are all false
    /// alarms.
    pub rows_after: Vec<u64>,
}

impl Recovery {
    pub fn of(truth: &[bool], pred: &[bool]) -> Self {
        assert_eq!(truth.len(), pred.len(), "truth and prediction lengths");
        let rows_after: Vec<u64> = segments(truth)
            .iter()
            .map(|s| {
                (s.end + 1..truth.len())
                    .take_while(|&i| pred[i] && !truth[i])
                    .count() as u64
            })
            .collect();
        Self { rows_after }
    }

    pub fn add(&mut self, o: &Recovery) {
        self.rows_after.extend_from_slice(&o.rows_after);
    }

    /// False-alarm rows that continue an alert from a labelled segment.
    pub fn false_after_anomaly(&self) -> u64 {
        self.rows_after.iter().sum()
    }

    /// Labelled segments whose alert was still open when they ended.
    pub fn still_flagged(&self) -> u64 {
        self.rows_after.iter().filter(|r| **r > 0).count() as u64
    }

    /// Median of `rows_after` (the mean of the middle two for an even
    /// count); undefined without a labelled segment.
    pub fn median_rows_after(&self) -> Option<f64> {
        let mut v = self.rows_after.clone();
        v.sort_unstable();
        let n = v.len();
        match n {
            0 => None,
            _ if n % 2 == 1 => Some(v[n / 2] as f64),
            _ => Some((v[n / 2 - 1] + v[n / 2]) as f64 / 2.0),
        }
    }

    pub fn mean_rows_after(&self) -> Option<f64> {
        (!self.rows_after.is_empty())
            .then(|| self.false_after_anomaly() as f64 / self.rows_after.len() as f64)
    }

    /// `point`'s false alarm rate (%, of the same rows) split into the
    /// rows after an anomaly and the rest.
    pub fn far_split(&self, point: &Confusion) -> (Option<f64>, Option<f64>) {
        let after = self.false_after_anomaly();
        let normal = point.fp + point.tn;
        let percent = |n: u64| crate::ratio(n, normal).map(|r| 100.0 * r);
        (percent(after), percent(point.fp - after))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b(s: &str) -> Vec<bool> {
        s.chars().map(|c| c == '1').collect()
    }

    fn of(truth: &str, pred: &str) -> Recovery {
        Recovery::of(&b(truth), &b(pred))
    }

    /// False-alarm rows after an anomaly and elsewhere, and normal rows.
    fn split(r: &Recovery, truth: &str, pred: &str) -> (u64, u64, u64) {
        let point = Confusion::of(&b(truth), &b(pred));
        let after = r.false_after_anomaly();
        (after, point.fp - after, point.fp + point.tn)
    }

    #[test]
    fn an_alert_open_at_the_end_of_a_segment_counts_until_it_closes() {
        // Segment 2..=4; flagged 3..=7: 3 rows after (5, 6, 7); one false
        // alarm elsewhere (row 9).
        let (truth, pred) = ("0011100000", "0001111101");
        let r = of(truth, pred);
        assert_eq!(r.rows_after, vec![3]);
        assert_eq!(split(&r, truth, pred), (3, 1, 7));
        assert_eq!(r.still_flagged(), 1);
        assert_eq!(r.mean_rows_after(), Some(3.0));
        assert_eq!(r.median_rows_after(), Some(3.0));
        let (after, elsewhere) = r.far_split(&Confusion::of(&b(truth), &b(pred)));
        assert!((after.unwrap() - 300.0 / 7.0).abs() < 1e-12);
        assert!((elsewhere.unwrap() - 100.0 / 7.0).abs() < 1e-12);
    }

    #[test]
    fn a_false_alarm_that_starts_after_a_break_is_elsewhere() {
        // The alert closes with the segment (row 5 unflagged), then a
        // separate false alarm at 6..=7.
        let (truth, pred) = ("0111000000", "0111011000");
        let r = of(truth, pred);
        assert_eq!(r.rows_after, vec![0]);
        assert_eq!(split(&r, truth, pred), (0, 2, 7));
        assert_eq!(r.still_flagged(), 0);
    }

    #[test]
    fn an_overhang_stops_at_the_next_segment_and_at_the_end_of_the_file() {
        // Segments 1..=2 and 5..=6; flagged 1..=9: 2 rows after the first
        // (3, 4: rows 5, 6 are the next segment's), 3 after the second.
        let (truth, pred) = ("0110011000", "0111111111");
        let r = of(truth, pred);
        assert_eq!(r.rows_after, vec![2, 3]);
        let (after, elsewhere, _) = split(&r, truth, pred);
        assert_eq!((after, elsewhere), (5, 0));
        // A segment that ends the file has nothing after it; a missed
        // segment has 0.
        assert_eq!(of("0011", "0011").rows_after, vec![0]);
        assert_eq!(of("0110", "0000").rows_after, vec![0]);
        // No labelled segment: every false alarm is elsewhere.
        let calm = of("0000", "0110");
        assert_eq!(split(&calm, "0000", "0110"), (0, 2, 4));
        assert_eq!(
            (calm.median_rows_after(), calm.mean_rows_after()),
            (None, None)
        );
    }

    #[test]
    fn pooling_keeps_every_segment_for_an_exact_median() {
        let files = [
            ("0110000", "0111110"),       // 3 after
            ("1000", "1000"),             // 0 after
            ("0100000000", "0111111111"), // 8 after
            ("10000", "11000"),           // 1 after
        ];
        let (mut r, mut point) = (Recovery::default(), Confusion::default());
        for (truth, pred) in files {
            r.add(&of(truth, pred));
            point.add(&Confusion::of(&b(truth), &b(pred)));
        }
        assert_eq!(r.rows_after, vec![3, 0, 8, 1]);
        assert_eq!(r.median_rows_after(), Some(2.0));
        assert_eq!(r.mean_rows_after(), Some(3.0));
        assert_eq!(r.still_flagged(), 3);
        let after = r.false_after_anomaly();
        assert_eq!((after, point.fp - after), (12, 0));
        assert_eq!(point.fp + point.tn, 5 + 3 + 9 + 4);
        assert_eq!(
            Recovery::default().far_split(&Confusion::default()),
            (None, None)
        );
    }
}
