//! Humane durations: `250ms`, `30s`, `10m`, `1.5h`, `1h30m`, `2d`.

use crate::SimError;

/// Parses a duration into whole milliseconds. Accepted: one or more
/// `<number><unit>` parts (units `ms`, `s`, `m`, `h`, `d`; the number may
/// have a fraction), or a bare `0`. Negative durations are rejected.
pub fn parse_duration_ms(input: &str) -> Result<i64, SimError> {
    let bad = |reason: &str| SimError::Duration {
        input: input.to_owned(),
        reason: reason.to_owned(),
    };
    let s = input.trim();
    if s.is_empty() {
        return Err(bad("empty; expected e.g. 500ms, 30s, 10m, 2h"));
    }
    if s == "0" {
        return Ok(0);
    }
    let mut total = 0f64;
    let mut rest = s;
    while !rest.is_empty() {
        let num_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        if num_len == 0 {
            return Err(bad("expected a number before each unit (e.g. 30s)"));
        }
        let number: f64 = rest[..num_len]
            .parse()
            .map_err(|_| bad(&format!("{:?} is not a number", &rest[..num_len])))?;
        rest = &rest[num_len..];
        let unit_len = rest
            .find(|c: char| !c.is_ascii_alphabetic())
            .unwrap_or(rest.len());
        let unit = &rest[..unit_len];
        rest = &rest[unit_len..];
        let factor = match unit {
            "ms" => 1.0,
            "s" => 1_000.0,
            "m" | "min" => 60_000.0,
            "h" => 3_600_000.0,
            "d" => 86_400_000.0,
            "" => return Err(bad("missing unit (ms, s, m, h or d)")),
            _ => {
                return Err(bad(&format!(
                    "unknown unit {unit:?} (use ms, s, m, h or d)"
                )));
            }
        };
        total += number * factor;
    }
    if !total.is_finite() || total > i64::MAX as f64 / 2.0 {
        return Err(bad("too large"));
    }
    Ok(total.round() as i64)
}

/// Formats milliseconds with the largest unit that divides them exactly
/// (`600000` → `10m`, `1500` → `1500ms`), so it parses back to the same value.
pub fn format_duration_ms(ms: i64) -> String {
    if ms == 0 {
        return "0".to_owned();
    }
    for (unit, factor) in [
        ("d", 86_400_000),
        ("h", 3_600_000),
        ("m", 60_000),
        ("s", 1_000),
    ] {
        if ms % factor == 0 {
            return format!("{}{unit}", ms / factor);
        }
    }
    format!("{ms}ms")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_humane_durations() {
        let cases = [
            ("0", 0),
            ("250ms", 250),
            ("30s", 30_000),
            ("10m", 600_000),
            ("10min", 600_000),
            ("2h", 7_200_000),
            ("1.5s", 1_500),
            ("1h30m", 5_400_000),
            ("1d", 86_400_000),
            (" 5s ", 5_000),
        ];
        for (s, want) in cases {
            assert_eq!(parse_duration_ms(s).unwrap(), want, "{s}");
        }
    }

    #[test]
    fn rejects_bad_durations() {
        for s in ["", "10", "s", "-5s", "5x", "1..5s", "5 s", "1e3s"] {
            let err = parse_duration_ms(s).unwrap_err();
            assert!(matches!(err, SimError::Duration { .. }), "{s}: {err}");
        }
    }

    #[test]
    fn formats_round_trip() {
        for ms in [
            0, 1, 999, 1_000, 1_500, 60_000, 90_000, 3_600_000, 86_400_000,
        ] {
            assert_eq!(parse_duration_ms(&format_duration_ms(ms)).unwrap(), ms);
        }
        assert_eq!(format_duration_ms(600_000), "10m");
        assert_eq!(format_duration_ms(120_000), "2m");
    }
}
