//! The one rule for times in data files, whichever command reads them:
//! `train`, `evaluate` and `classify` (a `--time-column`) and `simulate
//! --replay` (its time column) read the same text as the same instant.
//!
//! (Messages on the wire are another format with their own rule: there
//! `ts` is an RFC 3339 string or integer epoch milliseconds, see
//! `forewarn_core::reading`.)

use chrono::{DateTime, NaiveDateTime};

/// Epoch values below this are seconds, at or above it milliseconds
/// (1e11 s is the year 5138; 1e11 ms is 1973).
pub const EPOCH_SECONDS_BELOW: f64 = 1e11;

/// Milliseconds since the Unix epoch of `s`: RFC 3339 / ISO 8601 (naive
/// times are UTC), `YYYY-MM-DD HH:MM[:SS[.fff]]`, or an integer or decimal
/// epoch: seconds below [`EPOCH_SECONDS_BELOW`], milliseconds from there.
pub fn parse_time(s: &str) -> Result<i64, String> {
    if let Ok(i) = s.parse::<i64>() {
        return Ok(if (i.unsigned_abs() as f64) < EPOCH_SECONDS_BELOW {
            i * 1000
        } else {
            i
        });
    }
    if let Ok(f) = s.parse::<f64>()
        && f.is_finite()
    {
        let ms = if f.abs() < EPOCH_SECONDS_BELOW {
            f * 1000.0
        } else {
            f
        };
        return Ok(ms.round() as i64);
    }

    if let Ok(t) = DateTime::parse_from_rfc3339(s) {
        return Ok(t.timestamp_millis());
    }
    for fmt in ["%Y-%m-%d %H:%M:%S%.f%:z", "%Y-%m-%d %H:%M:%S%.f%z"] {
        if let Ok(t) = DateTime::parse_from_str(s, fmt) {
            return Ok(t.timestamp_millis());
        }
    }
    for fmt in [
        "%Y-%m-%dT%H:%M:%S%.f",
        "%Y-%m-%d %H:%M:%S%.f",
        "%Y-%m-%dT%H:%M",
        "%Y-%m-%d %H:%M",
    ] {
        if let Ok(t) = NaiveDateTime::parse_from_str(s, fmt) {
            return Ok(t.and_utc().timestamp_millis());
        }
    }
    Err(format!(
        "cannot parse {s:?} as a time (RFC 3339, \"YYYY-MM-DD HH:MM:SS\" or epoch seconds/ms)"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn time_formats() {
        let t0 = 1_767_225_600_000; // 2026-01-01T00:00:00Z
        for (s, want) in [
            ("2026-01-01T00:00:00Z", t0),
            ("2026-01-01T00:00:00.250Z", t0 + 250),
            ("2026-01-01T02:00:00+02:00", t0),
            ("2026-01-01T00:00:00", t0),
            ("2026-01-01 00:00:00", t0),
            ("2026-01-01 00:00:00.5", t0 + 500),
            ("2026-01-01 00:00", t0),
            ("1767225600", t0),
            ("1767225600.25", t0 + 250),
            ("1767225600000", t0),
        ] {
            assert_eq!(parse_time(s), Ok(want), "{s}");
        }
        assert!(parse_time("yesterday").is_err());
        assert!(parse_time("inf").is_err());
    }

    /// The epoch rule: an integer below 1e11 is seconds, from 1e11 on
    /// milliseconds; so 2026-11-28T12:00:00Z reads the same either way,
    /// and small integers are seconds after 1970, not milliseconds.
    #[test]
    fn epoch_integers_are_seconds_below_1e11_and_milliseconds_from_there() {
        let noon = 1_795_867_200_000; // 2026-11-28T12:00:00Z
        assert_eq!(parse_time("1795867200"), Ok(noon));
        assert_eq!(parse_time("1795867200000"), Ok(noon));
        assert_eq!(parse_time("2026-11-28T12:00:00Z"), Ok(noon));
        assert_eq!(parse_time("5"), Ok(5_000));
        assert_eq!(parse_time("99999999999"), Ok(99_999_999_999_000));
        assert_eq!(parse_time("100000000000"), Ok(100_000_000_000));
        assert_eq!(parse_time("-60"), Ok(-60_000));
    }
}
