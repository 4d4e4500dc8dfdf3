//! Injected faults and their compact text form.
//!
//! `DEVICE:CHANNEL:KIND[:ARGS]@START[+DURATION]`, for example
//!
//! * `plant-0001:flow:step:6@120s+300s`: flow of plant-0001 steps up by 6
//!   normal standard deviations two minutes in, for five minutes;
//! * `plant-0003:bearing_temp:drift:3@10m`: bearing temperature ramps by
//!   3 sd per hour from minute 10 on;
//! * `plant-0002:valve_position:stuck@1h`: the valve position freezes;
//! * `plant-0000:vibration_rms:oscillation:4:30s@5m`: a ±4 sd sinusoid with a
//!   30 s period is added;
//! * `plant-0004:outlet_pressure:spike:8@90s`: an 8 sd burst of a few samples.
//!
//! START and DURATION are humane durations ([`crate::parse_duration_ms`])
//! relative to the simulation start. The device may be written as its id or
//! its index (`3`), the channel as its name or its index.

use std::fmt;
use std::str::FromStr;

use crate::SimError;
use crate::duration::{format_duration_ms, parse_duration_ms};

/// What a fault does to its channel. Sizes are in units of the channel's
/// normal standard deviation (see [`crate::Plant::channel_sd`]).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum FaultKind {
    /// Adds `magnitude` sd from the start on.
    Step { magnitude: f64 },
    /// Adds a ramp growing by `per_hour` sd per hour of simulated time.
    Drift { per_hour: f64 },
    /// Freezes the channel at the value it had when the fault started.
    Stuck,
    /// Adds `amplitude` sd × sin(2π t / `period_s`), t from the fault start.
    Oscillation { amplitude: f64, period_s: f64 },
    /// Adds `magnitude` sd for a short burst: the fault's duration, or
    /// [`Fault::DEFAULT_SPIKE_SAMPLES`] sampling periods when it has none.
    Spike { magnitude: f64 },
}

impl FaultKind {
    /// Short name as used in the text form.
    pub fn name(&self) -> &'static str {
        match self {
            FaultKind::Step { .. } => "step",
            FaultKind::Drift { .. } => "drift",
            FaultKind::Stuck => "stuck",
            FaultKind::Oscillation { .. } => "oscillation",
            FaultKind::Spike { .. } => "spike",
        }
    }
}

/// One fault on one channel of one simulated device.
#[derive(Debug, Clone, PartialEq)]
pub struct Fault {
    /// Device id (`plant-0003`) or index (`3`).
    pub device: String,
    /// Channel name or index.
    pub channel: String,
    pub kind: FaultKind,
    /// When the fault starts, in milliseconds after the simulation start
    /// ([`crate::PlantConfig::start_ms`]).
    pub start_ms: i64,
    /// How long it lasts; `None` = until the end (a spike: a few samples).
    pub duration_ms: Option<i64>,
}

impl Fault {
    /// Length of a spike without an explicit duration, in sampling periods.
    pub const DEFAULT_SPIKE_SAMPLES: i64 = 3;
}

impl fmt::Display for Fault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}:{}", self.device, self.channel, self.kind.name())?;
        match self.kind {
            FaultKind::Step { magnitude } | FaultKind::Spike { magnitude } => {
                write!(f, ":{magnitude}")?
            }
            FaultKind::Drift { per_hour } => write!(f, ":{per_hour}")?,
            FaultKind::Stuck => {}
            FaultKind::Oscillation {
                amplitude,
                period_s,
            } => write!(
                f,
                ":{amplitude}:{}",
                format_duration_ms((period_s * 1000.0).round() as i64)
            )?,
        }
        write!(f, "@{}", format_duration_ms(self.start_ms))?;
        if let Some(d) = self.duration_ms {
            write!(f, "+{}", format_duration_ms(d))?;
        }
        Ok(())
    }
}

const FORMAT_HELP: &str = "expected DEVICE:CHANNEL:KIND[:ARGS]@START[+DURATION], e.g. \
     plant-0001:flow:step:6@120s+300s; kinds: step:SD, drift:SD_PER_HOUR, stuck, \
     oscillation:SD:PERIOD, spike:SD";

impl FromStr for Fault {
    type Err = SimError;

    fn from_str(spec: &str) -> Result<Self, SimError> {
        let bad = |reason: String| SimError::FaultSpec {
            spec: spec.to_owned(),
            reason,
        };
        let s = spec.trim();
        let (what, when) = s
            .rsplit_once('@')
            .ok_or_else(|| bad(format!("missing '@START'; {FORMAT_HELP}")))?;
        let (start, duration) = match when.split_once('+') {
            Some((start, duration)) => (start, Some(duration)),
            None => (when, None),
        };
        let start_ms = parse_duration_ms(start).map_err(|e| bad(format!("start: {e}")))?;
        let duration_ms = match duration {
            None => None,
            Some(d) => {
                let ms = parse_duration_ms(d).map_err(|e| bad(format!("duration: {e}")))?;
                if ms <= 0 {
                    return Err(bad("duration must be positive".into()));
                }
                Some(ms)
            }
        };

        let parts: Vec<&str> = what.split(':').map(str::trim).collect();
        if parts.len() < 3 {
            return Err(bad(FORMAT_HELP.into()));
        }
        let (device, channel, kind, args) = (parts[0], parts[1], parts[2], &parts[3..]);
        if device.is_empty() {
            return Err(bad("empty device".into()));
        }
        if channel.is_empty() {
            return Err(bad("empty channel".into()));
        }
        let number = |name: &str, raw: &str| -> Result<f64, SimError> {
            match raw.parse::<f64>() {
                Ok(v) if v.is_finite() => Ok(v),
                _ => Err(bad(format!("{kind} {name} {raw:?} is not a finite number"))),
            }
        };
        let want_args = |n: usize, usage: &str| -> Result<(), SimError> {
            if args.len() == n {
                Ok(())
            } else {
                Err(bad(format!(
                    "{kind} takes {n} argument(s): {usage}; got {}",
                    args.len()
                )))
            }
        };
        let kind = match kind.to_ascii_lowercase().as_str() {
            "step" => {
                want_args(1, "step:SD")?;
                FaultKind::Step {
                    magnitude: number("magnitude", args[0])?,
                }
            }
            "drift" => {
                want_args(1, "drift:SD_PER_HOUR")?;
                FaultKind::Drift {
                    per_hour: number("rate", args[0])?,
                }
            }
            "stuck" => {
                want_args(0, "stuck")?;
                FaultKind::Stuck
            }
            "oscillation" | "osc" => {
                want_args(2, "oscillation:SD:PERIOD (e.g. oscillation:4:30s)")?;
                let period_ms =
                    parse_duration_ms(args[1]).map_err(|e| bad(format!("period: {e}")))?;
                if period_ms <= 0 {
                    return Err(bad("oscillation period must be positive".into()));
                }
                FaultKind::Oscillation {
                    amplitude: number("amplitude", args[0])?,
                    period_s: period_ms as f64 / 1000.0,
                }
            }
            "spike" => {
                want_args(1, "spike:SD")?;
                FaultKind::Spike {
                    magnitude: number("magnitude", args[0])?,
                }
            }
            other => {
                return Err(bad(format!(
                    "unknown fault kind {other:?} (step, drift, stuck, oscillation, spike)"
                )));
            }
        };
        Ok(Fault {
            device: device.to_owned(),
            channel: channel.to_owned(),
            kind,
            start_ms,
            duration_ms,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_every_kind() {
        let cases = [
            (
                "plant-0003:bearing_temp:drift:3@10m",
                Fault {
                    device: "plant-0003".into(),
                    channel: "bearing_temp".into(),
                    kind: FaultKind::Drift { per_hour: 3.0 },
                    start_ms: 600_000,
                    duration_ms: None,
                },
            ),
            (
                "plant-0001:flow:step:6@120s+300s",
                Fault {
                    device: "plant-0001".into(),
                    channel: "flow".into(),
                    kind: FaultKind::Step { magnitude: 6.0 },
                    start_ms: 120_000,
                    duration_ms: Some(300_000),
                },
            ),
            (
                "plant-0002:valve_position:stuck@1h",
                Fault {
                    device: "plant-0002".into(),
                    channel: "valve_position".into(),
                    kind: FaultKind::Stuck,
                    start_ms: 3_600_000,
                    duration_ms: None,
                },
            ),
            (
                "plant-0000:vibration_rms:oscillation:4:30s@5m+10m",
                Fault {
                    device: "plant-0000".into(),
                    channel: "vibration_rms".into(),
                    kind: FaultKind::Oscillation {
                        amplitude: 4.0,
                        period_s: 30.0,
                    },
                    start_ms: 300_000,
                    duration_ms: Some(600_000),
                },
            ),
            (
                "3:2:spike:-8.5@0",
                Fault {
                    device: "3".into(),
                    channel: "2".into(),
                    kind: FaultKind::Spike { magnitude: -8.5 },
                    start_ms: 0,
                    duration_ms: None,
                },
            ),
        ];
        for (spec, want) in cases {
            let got: Fault = spec.parse().unwrap_or_else(|e| panic!("{spec}: {e}"));
            assert_eq!(got, want, "{spec}");
            // Display is the canonical text form and parses back.
            assert_eq!(got.to_string().parse::<Fault>().unwrap(), got);
        }
    }

    #[test]
    fn rejects_bad_specs_with_a_reason() {
        let cases = [
            ("plant-0001:flow:step:6", "missing '@START'"),
            ("plant-0001:flow@10s", "expected DEVICE:CHANNEL:KIND"),
            ("plant-0001:flow:jump:6@10s", "unknown fault kind"),
            ("plant-0001:flow:step@10s", "step takes 1 argument"),
            ("plant-0001:flow:step:1:2@10s", "step takes 1 argument"),
            ("plant-0001:flow:step:big@10s", "not a finite number"),
            ("plant-0001:flow:step:inf@10s", "not a finite number"),
            ("plant-0001:flow:stuck:3@10s", "stuck takes 0 argument"),
            ("plant-0001:flow:oscillation:4@10s", "oscillation takes 2"),
            (
                "plant-0001:flow:oscillation:4:0s@10s",
                "period must be positive",
            ),
            ("plant-0001:flow:oscillation:4:30@10s", "period:"),
            ("plant-0001:flow:step:6@ten", "start:"),
            ("plant-0001:flow:step:6@10s+0s", "duration must be positive"),
            ("plant-0001:flow:step:6@10s+x", "duration:"),
            (":flow:step:6@10s", "empty device"),
            ("plant-0001::step:6@10s", "empty channel"),
        ];
        for (spec, want) in cases {
            let err = spec.parse::<Fault>().unwrap_err();
            assert!(matches!(err, SimError::FaultSpec { .. }), "{spec}: {err}");
            let msg = err.to_string();
            assert!(msg.contains(want), "{spec}: {msg:?} lacks {want:?}");
            assert!(msg.contains(spec), "{msg:?} should quote the spec");
        }
    }
}
