//! The seasonal residual: how far a device's readings are from the same
//! time of the season before.
//!
//! A forecaster that sees the last minutes cannot tell that a daily step
//! is missing, or that a value which is flat all day should have risen at
//! nine: a flat series is easy to forecast. The season before can tell.
//! Each device keeps a profile of its monitored channels: per phase bucket
//! of the season (`residual_bucket` wide), the mean of that bucket's rows
//! in the last season it was written. A batch's residual score is the mean
//! squared difference of its rows from the profile's buckets, in scaled
//! units, over the rows whose bucket holds a value from an earlier season.
//!
//! A bucket that a flagged batch touched is not written: the profile keeps
//! the last normal season, so the day after an anomalous day is compared
//! with the day before it. The score is thresholded like the forecast
//! error, by its own dynamic threshold
//! ([`crate::threshold::ThresholdStrategy`]).

use serde::{Deserialize, Serialize};

/// Where a time falls: the season's length and the bucket width in
/// milliseconds, and the buckets per season.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Phases {
    period: i64,
    width: i64,
    buckets: usize,
}

impl Phases {
    /// `None` unless `0 < width <= period`.
    pub fn new(period_ms: i64, width_ms: i64) -> Option<Self> {
        (width_ms > 0 && period_ms >= width_ms).then(|| Self {
            period: period_ms,
            width: width_ms,
            buckets: usize::try_from((period_ms + width_ms - 1) / width_ms).unwrap_or(usize::MAX),
        })
    }

    pub fn buckets(&self) -> usize {
        self.buckets
    }

    /// The season `ts` is in (since the epoch) and its phase bucket.
    fn locate(&self, ts: i64) -> (i64, usize) {
        let phase = ts.rem_euclid(self.period) / self.width;
        (ts.div_euclid(self.period), phase as usize)
    }
}

/// The rows of a scored batch: the monitored channels, row-major, and the
/// times of its first and last rows (the rows between are taken as evenly
/// spaced).
#[derive(Debug, Clone, Copy)]
pub struct BatchRows<'a> {
    pub rows: &'a [f32],
    pub channels: usize,
    pub start_ts: i64,
    pub end_ts: i64,
}

impl BatchRows<'_> {
    fn len(&self) -> usize {
        self.rows.len().checked_div(self.channels).unwrap_or(0)
    }

    fn row(&self, i: usize) -> &[f32] {
        &self.rows[i * self.channels..(i + 1) * self.channels]
    }

    fn time(&self, i: usize) -> i64 {
        let n = self.len();
        if n < 2 {
            return self.end_ts;
        }
        let span = i128::from(self.end_ts) - i128::from(self.start_ts);
        let t = i128::from(self.start_ts) + span * i as i128 / (n as i128 - 1);
        i64::try_from(t).unwrap_or(self.end_ts)
    }
}

/// One device's profile (module docs).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct SeasonalProfile {
    /// Per phase bucket, the season its mean was written in
    /// (`i64::MIN`: never).
    written: Vec<i64>,
    /// Per phase bucket, the monitored channels' means.
    means: Vec<f32>,
    /// The bucket being gathered: its season and phase, per-channel sums,
    /// rows, and whether a flagged batch touched it.
    gathering: Option<(i64, usize)>,
    sums: Vec<f64>,
    rows: u32,
    flagged: bool,
}

impl SeasonalProfile {
    pub fn new(phases: &Phases, channels: usize) -> Self {
        Self {
            written: vec![i64::MIN; phases.buckets],
            means: vec![0.0; phases.buckets * channels],
            gathering: None,
            sums: vec![0.0; channels],
            rows: 0,
            flagged: false,
        }
    }

    /// Bytes a profile of this shape holds beyond its own struct.
    pub fn heap_bytes(phases: &Phases, channels: usize) -> usize {
        phases.buckets * (size_of::<i64>() + channels * size_of::<f32>())
            + channels * size_of::<f64>()
    }

    /// Whether the profile has the shape of `phases` and `channels`, and
    /// finite values (a restored checkpoint of another model's, or a
    /// damaged one, has not).
    pub fn fits(&self, phases: &Phases, channels: usize) -> bool {
        self.written.len() == phases.buckets
            && self.means.len() == phases.buckets * channels
            && self.sums.len() == channels
            && self
                .gathering
                .is_none_or(|(_, phase)| phase < phases.buckets)
            && self.means.iter().all(|m| m.is_finite())
            && self.sums.iter().all(|s| s.is_finite())
    }

    /// Calls `f(channel, squared difference)` for every value of the
    /// batch's rows whose bucket holds a mean of an earlier season; returns
    /// how many rows had one.
    fn differences(
        &self,
        phases: &Phases,
        batch: &BatchRows<'_>,
        mut f: impl FnMut(usize, f64),
    ) -> usize {
        let c = batch.channels;
        let mut rows = 0;
        for i in 0..batch.len() {
            let (season, phase) = phases.locate(batch.time(i));
            let written = self.written[phase];
            if written == i64::MIN || written >= season {
                continue;
            }
            rows += 1;
            let means = &self.means[phase * c..(phase + 1) * c];
            for (j, (x, m)) in batch.row(i).iter().zip(means).enumerate() {
                f(j, f64::from(*x - *m).powi(2));
            }
        }
        rows
    }

    /// The batch's residual score: the mean squared difference of its rows
    /// from their buckets' means of an earlier season, over the rows that
    /// have one (`None` when none has).
    pub fn residual(&self, phases: &Phases, batch: &BatchRows<'_>) -> Option<f64> {
        let mut sum = 0.0;
        let rows = self.differences(phases, batch, |_, d| sum += d);
        (rows > 0).then(|| sum / (rows * batch.channels) as f64)
    }

    /// Each channel's share of the batch's residual into `shares` (one per
    /// channel; all zero when there is none).
    pub fn shares(&self, phases: &Phases, batch: &BatchRows<'_>, shares: &mut [f64]) {
        shares.iter_mut().for_each(|v| *v = 0.0);
        self.differences(phases, batch, |j, d| shares[j] += d);
        let total: f64 = shares.iter().sum();
        if total > 0.0 {
            shares.iter_mut().for_each(|v| *v /= total);
        }
    }

    /// Gathers the batch's rows into their buckets; a bucket is written
    /// when the next one begins, unless a flagged batch touched it.
    pub fn learn(&mut self, phases: &Phases, batch: &BatchRows<'_>, flagged: bool) {
        let c = batch.channels;
        for i in 0..batch.len() {
            let here = phases.locate(batch.time(i));
            if self.gathering != Some(here) {
                if let Some((season, phase)) = self.gathering
                    && self.rows > 0
                    && !self.flagged
                {
                    self.written[phase] = season;
                    for (m, s) in
                        (self.means[phase * c..(phase + 1) * c].iter_mut()).zip(&self.sums)
                    {
                        *m = (*s / f64::from(self.rows)) as f32;
                    }
                }
                self.gathering = Some(here);
                self.sums.iter_mut().for_each(|s| *s = 0.0);
                self.rows = 0;
                self.flagged = false;
            }
            for (s, x) in self.sums.iter_mut().zip(batch.row(i)) {
                *s += f64::from(*x);
            }
            self.rows += 1;
            self.flagged |= flagged;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HOUR: i64 = 3_600_000;

    fn batch(rows: &[f32], start_ts: i64, end_ts: i64) -> BatchRows<'_> {
        BatchRows {
            rows,
            channels: 1,
            start_ts,
            end_ts,
        }
    }

    #[test]
    fn phases_locate_times_in_their_season_and_bucket() {
        let p = Phases::new(24 * HOUR, HOUR).unwrap();
        assert_eq!(p.buckets(), 24);
        assert_eq!(p.locate(0), (0, 0));
        assert_eq!(p.locate(25 * HOUR + 1), (1, 1));
        assert_eq!(p.locate(-1), (-1, 23));
        assert_eq!(Phases::new(HOUR, 0), None);
        assert_eq!(Phases::new(HOUR, 2 * HOUR), None);
        // A width that does not divide the season: the last bucket is short.
        assert_eq!(Phases::new(10, 3).unwrap().buckets(), 4);
    }

    #[test]
    fn rows_between_the_ends_are_evenly_spaced() {
        let rows = [0.0; 5];
        let b = batch(&rows, 1_000, 2_000);
        assert_eq!(
            (0..5).map(|i| b.time(i)).collect::<Vec<_>>(),
            [1_000, 1_250, 1_500, 1_750, 2_000]
        );
        assert_eq!(batch(&rows[..1], 7, 9).time(0), 9);
    }

    /// A day of hourly rows: 20 at night, 80 from 09:00 to 17:00.
    fn day(jump: f32) -> Vec<f32> {
        (0..24)
            .map(|h| {
                if (9..17).contains(&h) {
                    20.0 + jump
                } else {
                    20.0
                }
            })
            .collect()
    }

    /// Feeds hourly rows from `start_hour` in batches of 4; returns each
    /// batch's residual score.
    fn feed(
        p: &mut SeasonalProfile,
        phases: &Phases,
        rows: &[f32],
        start_hour: i64,
        flagged: bool,
    ) -> Vec<Option<f64>> {
        let mut out = Vec::new();
        for (k, chunk) in rows.chunks(4).enumerate() {
            let start = (start_hour + 4 * k as i64) * HOUR;
            let b = batch(chunk, start, start + (chunk.len() as i64 - 1) * HOUR);
            out.push(p.residual(phases, &b));
            p.learn(phases, &b, flagged);
        }
        out
    }

    #[test]
    fn a_missing_daily_jump_is_a_residual_and_a_repeated_day_is_none() {
        let phases = Phases::new(24 * HOUR, HOUR).unwrap();
        let mut p = SeasonalProfile::new(&phases, 1);
        // The first day has nothing to compare with.
        assert!(
            feed(&mut p, &phases, &day(60.0), 0, false)
                .iter()
                .all(Option::is_none)
        );
        // The same day again: no residual (the last bucket of the first day
        // was written when the second began).
        let same = feed(&mut p, &phases, &day(60.0), 24, false);
        assert!(same.iter().all(|s| *s == Some(0.0)), "{same:?}");
        // A day without the jump: the batches from 08:00 to 16:00 differ
        // by 60 in the rows from 09:00 (3 of 4, then 4 of 4).
        let missing = feed(&mut p, &phases, &day(0.0), 48, true);
        assert_eq!(
            missing,
            [
                Some(0.0),
                Some(0.0),
                Some(3.0 * 3600.0 / 4.0),
                Some(3600.0),
                Some(3600.0 / 4.0),
                Some(0.0)
            ]
        );
        // That day was flagged, so it was not learnt: the next day with the
        // jump is compared with the last normal one.
        let after = feed(&mut p, &phases, &day(60.0), 72, false);
        assert!(after.iter().all(|s| *s == Some(0.0)), "{after:?}");
    }

    #[test]
    fn per_channel_sums_name_the_channel_that_moved() {
        let phases = Phases::new(2 * HOUR, HOUR).unwrap();
        let mut p = SeasonalProfile::new(&phases, 2);
        let first = [1.0, 5.0, 1.0, 5.0];
        let b = BatchRows {
            rows: &first,
            channels: 2,
            start_ts: 0,
            end_ts: HOUR,
        };
        p.learn(&phases, &b, false);
        let mut shares = [0.5; 2];
        let later = [1.0, 7.0, 1.0, 5.0];
        let b = BatchRows {
            rows: &later,
            channels: 2,
            start_ts: 2 * HOUR,
            end_ts: 3 * HOUR,
        };
        // Bucket 1 of the first season is still being gathered, not written.
        assert_eq!(p.residual(&phases, &b), Some(4.0 / 2.0));
        p.shares(&phases, &b, &mut shares);
        assert_eq!(shares, [0.0, 1.0]);
        assert!(p.fits(&phases, 2));
        assert!(!p.fits(&phases, 1));
        let mut damaged = p.clone();
        damaged.gathering = Some((1, 2));
        assert!(!damaged.fits(&phases, 2));
        let mut damaged = p;
        damaged.means[0] = f32::NAN;
        assert!(!damaged.fits(&phases, 2));
    }
}
