//! Input messages: decoding and validation.
//!
//! Two JSON forms are accepted (key = device id):
//! `{"device":"pump-07","ts":"2026-11-28T12:00:00.250Z","values":{"pressure":1.92}}`
//! `{"device":"pump-07","ts":1795867200250,"values":[1.92,31.8]}`
//!
//! Every way a message can be wrong maps to one [`RejectReason`], whose
//! [`RejectReason::label`] is a bounded metric label and a dead-letter header.

use serde::Deserialize;
use serde_json::value::RawValue;

/// Largest accepted message, in bytes. A reading of a few hundred channels
/// is a few KiB; anything far larger is a producer bug, not data.
pub const MAX_MESSAGE_BYTES: usize = 64 * 1024;
/// How far ahead of the receiving clock a timestamp may be. Past timestamps
/// are accepted (backfills replay history); a reading from the far future
/// would make every later reading of its device look out of order.
pub const MAX_FUTURE_SKEW_MS: i64 = 24 * 3600 * 1000;

/// Rejects a reading stamped more than [`MAX_FUTURE_SKEW_MS`] after `now_ms`.
pub fn check_not_future(reading: &Reading, now_ms: i64) -> Result<(), RejectReason> {
    if reading.ts_ms > now_ms.saturating_add(MAX_FUTURE_SKEW_MS) {
        return Err(RejectReason::FutureTimestamp {
            ts_ms: reading.ts_ms,
            now_ms,
        });
    }
    Ok(())
}

/// Longest accepted device id.
pub const MAX_DEVICE_ID_LEN: usize = 128;

/// The channel names and order a model expects.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Schema {
    channels: Vec<String>,
}

impl Schema {
    pub fn new(channels: Vec<String>) -> Self {
        Self { channels }
    }
    pub fn channels(&self) -> &[String] {
        &self.channels
    }
    pub fn len(&self) -> usize {
        self.channels.len()
    }
    pub fn is_empty(&self) -> bool {
        self.channels.is_empty()
    }
    fn index_of(&self, name: &str) -> Option<usize> {
        self.channels.iter().position(|c| c == name)
    }
}

/// A validated reading: values are in schema order and finite.
#[derive(Debug, Clone, PartialEq)]
pub struct Reading {
    pub device: String,
    /// Milliseconds since the Unix epoch (UTC).
    pub ts_ms: i64,
    pub values: Vec<f32>,
}

/// Why a message was rejected. Labels are a closed set (safe as metric labels).
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum RejectReason {
    #[error("message is {0} bytes, more than the {MAX_MESSAGE_BYTES} byte limit")]
    TooLarge(usize),
    #[error("message is not valid JSON of the reading shape: {0}")]
    MalformedJson(String),
    #[error(
        "device id is empty, longer than {MAX_DEVICE_ID_LEN} characters or has control characters"
    )]
    BadDeviceId,
    #[error("message key {key:?} does not match device {device:?}")]
    KeyMismatch { key: String, device: String },
    #[error("timestamp {0} is neither RFC 3339 nor integer epoch milliseconds")]
    BadTimestamp(String),
    #[error("expected {expected} values, got {got}")]
    WrongChannelCount { expected: usize, got: usize },
    #[error("unknown channel {0:?}")]
    UnknownChannel(String),
    #[error("channel {0:?} is missing")]
    MissingChannel(String),
    #[error("value of channel {0:?} is not a finite number")]
    NonFinite(String),
    #[error("reading at {ts_ms} is older than the device's last reading at {last_ms}")]
    OutOfOrder { ts_ms: i64, last_ms: i64 },
    #[error("timestamp {ts_ms} is more than {MAX_FUTURE_SKEW_MS} ms ahead of the clock ({now_ms})")]
    FutureTimestamp { ts_ms: i64, now_ms: i64 },
}

impl RejectReason {
    /// Bounded label for metrics and dead-letter headers.
    pub fn label(&self) -> &'static str {
        match self {
            RejectReason::TooLarge(_) => "too_large",
            RejectReason::MalformedJson(_) => "malformed_json",
            RejectReason::BadDeviceId => "bad_device_id",
            RejectReason::KeyMismatch { .. } => "key_mismatch",
            RejectReason::BadTimestamp(_) => "bad_timestamp",
            RejectReason::WrongChannelCount { .. } => "wrong_channel_count",
            RejectReason::UnknownChannel(_) => "unknown_channel",
            RejectReason::MissingChannel(_) => "missing_channel",
            RejectReason::NonFinite(_) => "non_finite_value",
            RejectReason::OutOfOrder { .. } => "out_of_order",
            RejectReason::FutureTimestamp { .. } => "future_timestamp",
        }
    }

    /// Every label, so metrics can be pre-registered at zero.
    pub const LABELS: &'static [&'static str] = &[
        "too_large",
        "malformed_json",
        "bad_device_id",
        "key_mismatch",
        "bad_timestamp",
        "wrong_channel_count",
        "unknown_channel",
        "missing_channel",
        "non_finite_value",
        "out_of_order",
        "future_timestamp",
    ];
}

#[derive(Deserialize)]
struct Wire<'a> {
    #[serde(borrow)]
    device: std::borrow::Cow<'a, str>,
    #[serde(borrow)]
    ts: &'a RawValue,
    #[serde(borrow)]
    values: &'a RawValue,
}

/// Decodes and validates one message against `schema`. `key` is the Kafka
/// message key; when present it must equal the device id, because the key
/// decides the partition and so which instance owns the device.
pub fn decode_reading(
    payload: &[u8],
    key: Option<&[u8]>,
    schema: &Schema,
) -> Result<Reading, RejectReason> {
    if payload.len() > MAX_MESSAGE_BYTES {
        return Err(RejectReason::TooLarge(payload.len()));
    }
    let wire: Wire<'_> =
        serde_json::from_slice(payload).map_err(|e| RejectReason::MalformedJson(e.to_string()))?;
    let device = wire.device.as_ref();
    if device.is_empty()
        || device.chars().count() > MAX_DEVICE_ID_LEN
        || device.chars().any(char::is_control)
    {
        return Err(RejectReason::BadDeviceId);
    }
    if let Some(key) = key
        && key != device.as_bytes()
    {
        return Err(RejectReason::KeyMismatch {
            key: String::from_utf8_lossy(key).into_owned(),
            device: device.to_owned(),
        });
    }
    let ts_ms = parse_timestamp(wire.ts.get())?;
    let values = parse_values(wire.values.get(), schema)?;
    Ok(Reading {
        device: device.to_owned(),
        ts_ms,
        values,
    })
}

/// Parses the `ts` field: an RFC 3339 string or integer epoch milliseconds.
pub fn parse_timestamp(raw: &str) -> Result<i64, RejectReason> {
    let bad = || RejectReason::BadTimestamp(truncate(raw, 64));
    if let Ok(ms) = serde_json::from_str::<i64>(raw) {
        return Ok(ms);
    }
    let s: String = serde_json::from_str(raw).map_err(|_| bad())?;
    chrono::DateTime::parse_from_rfc3339(&s)
        .map(|t| t.timestamp_millis())
        .map_err(|_| bad())
}

fn parse_values(raw: &str, schema: &Schema) -> Result<Vec<f32>, RejectReason> {
    let raw = raw.trim_start();
    if raw.starts_with('[') {
        let list: Vec<Option<f64>> = serde_json::from_str(raw).map_err(|e| {
            RejectReason::MalformedJson(format!("values must be an array of numbers: {e}"))
        })?;
        if list.len() != schema.len() {
            return Err(RejectReason::WrongChannelCount {
                expected: schema.len(),
                got: list.len(),
            });
        }
        list.iter()
            .enumerate()
            .map(|(i, v)| finite(*v, &schema.channels()[i]))
            .collect()
    } else {
        let map: serde_json::Map<String, serde_json::Value> =
            serde_json::from_str(raw).map_err(|e| {
                RejectReason::MalformedJson(format!("values must be an object or an array: {e}"))
            })?;
        let mut out = vec![f32::NAN; schema.len()];
        for (name, v) in &map {
            let i = schema
                .index_of(name)
                .ok_or_else(|| RejectReason::UnknownChannel(truncate(name, 64)))?;
            let num = match v {
                serde_json::Value::Number(n) => n.as_f64(),
                serde_json::Value::Null => None,
                _ => {
                    return Err(RejectReason::MalformedJson(format!(
                        "value of channel {name:?} is not a number"
                    )));
                }
            };
            out[i] = finite(num, name)?;
        }
        if let Some(i) = out.iter().position(|v| v.is_nan()) {
            return Err(RejectReason::MissingChannel(schema.channels()[i].clone()));
        }
        Ok(out)
    }
}

fn finite(v: Option<f64>, name: &str) -> Result<f32, RejectReason> {
    match v {
        Some(x) if x.is_finite() && (x as f32).is_finite() => Ok(x as f32),
        _ => Err(RejectReason::NonFinite(name.to_owned())),
    }
}

fn truncate(s: &str, max: usize) -> String {
    s.chars().take(max).collect()
}

/// Encodes a reading in the array form (used by the simulator and tests).
pub fn encode_reading(device: &str, ts_ms: i64, values: &[f32]) -> Vec<u8> {
    serde_json::to_vec(&serde_json::json!({"device": device, "ts": ts_ms, "values": values}))
        .expect("serialising plain numbers cannot fail")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn schema() -> Schema {
        Schema::new(vec!["pressure".into(), "flow".into()])
    }

    #[test]
    fn good_messages_in_both_forms() {
        let cases: &[(&str, Reading)] = &[
            (
                r#"{"device":"pump-07","ts":"2026-11-28T12:00:00.250Z","values":{"flow":31.8,"pressure":1.92}}"#,
                Reading {
                    device: "pump-07".into(),
                    ts_ms: 1_795_867_200_250,
                    values: vec![1.92, 31.8],
                },
            ),
            (
                r#"{"device":"pump-07","ts":1795867200250,"values":[1.92,31.8]}"#,
                Reading {
                    device: "pump-07".into(),
                    ts_ms: 1_795_867_200_250,
                    values: vec![1.92, 31.8],
                },
            ),
            (
                r#"{"device":"pump-07","ts":"2026-11-28T13:00:00.250+01:00","values":[1,2]}"#,
                Reading {
                    device: "pump-07".into(),
                    ts_ms: 1_795_867_200_250,
                    values: vec![1.0, 2.0],
                },
            ),
        ];
        for (msg, want) in cases {
            assert_eq!(
                &decode_reading(msg.as_bytes(), Some(b"pump-07"), &schema()).unwrap(),
                want,
                "{msg}"
            );
        }
    }

    #[test]
    fn bad_messages_get_their_reason() {
        let cases: &[(&str, &str)] = &[
            ("not json", "malformed_json"),
            (r#"{"device":"d","values":[1,2]}"#, "malformed_json"),
            (r#"{"device":"","ts":1,"values":[1,2]}"#, "bad_device_id"),
            (
                r#"{"device":"other","ts":1,"values":[1,2]}"#,
                "key_mismatch",
            ),
            (
                r#"{"device":"d","ts":"yesterday","values":[1,2]}"#,
                "bad_timestamp",
            ),
            (r#"{"device":"d","ts":1.5,"values":[1,2]}"#, "bad_timestamp"),
            (
                r#"{"device":"d","ts":1,"values":[1,2,3]}"#,
                "wrong_channel_count",
            ),
            (
                r#"{"device":"d","ts":1,"values":[1,"2"]}"#,
                "malformed_json",
            ),
            (
                r#"{"device":"d","ts":1,"values":[1,null]}"#,
                "non_finite_value",
            ),
            (
                r#"{"device":"d","ts":1,"values":[1,1e400]}"#,
                "malformed_json",
            ),
            (
                r#"{"device":"d","ts":1,"values":[1,1e39]}"#,
                "non_finite_value",
            ),
            (
                r#"{"device":"d","ts":1,"values":{"pressure":1,"temp":2}}"#,
                "unknown_channel",
            ),
            (
                r#"{"device":"d","ts":1,"values":{"pressure":1}}"#,
                "missing_channel",
            ),
            (
                r#"{"device":"d","ts":1,"values":{"pressure":1,"flow":"x"}}"#,
                "malformed_json",
            ),
            (r#"{"device":"d","ts":1,"values":"1,2"}"#, "malformed_json"),
        ];
        for (msg, label) in cases {
            let err = decode_reading(msg.as_bytes(), Some(b"d"), &schema()).unwrap_err();
            assert_eq!(err.label(), *label, "{msg}: {err}");
        }
    }

    #[test]
    fn oversized_message_is_rejected_before_parsing() {
        let big = vec![b' '; MAX_MESSAGE_BYTES + 1];
        assert_eq!(
            decode_reading(&big, None, &schema()).unwrap_err().label(),
            "too_large"
        );
    }

    #[test]
    fn far_future_timestamps_are_rejected_past_ones_accepted() {
        let now = 1_795_867_200_000;
        let at = |ts_ms| Reading {
            device: "d".into(),
            ts_ms,
            values: vec![1.0, 2.0],
        };
        assert_eq!(check_not_future(&at(0), now), Ok(()));
        assert_eq!(check_not_future(&at(now + MAX_FUTURE_SKEW_MS), now), Ok(()));
        let err = check_not_future(&at(now + MAX_FUTURE_SKEW_MS + 1), now).unwrap_err();
        assert_eq!(err.label(), "future_timestamp");
        assert_eq!(
            check_not_future(&at(i64::MAX), now).unwrap_err().label(),
            "future_timestamp"
        );
    }

    #[test]
    fn missing_key_is_accepted() {
        let r =
            decode_reading(br#"{"device":"d","ts":5,"values":[1,2]}"#, None, &schema()).unwrap();
        assert_eq!(r.ts_ms, 5);
    }

    #[test]
    fn encode_round_trips() {
        let bytes = encode_reading("d", 7, &[1.5, 2.5]);
        let r = decode_reading(&bytes, Some(b"d"), &schema()).unwrap();
        assert_eq!(
            r,
            Reading {
                device: "d".into(),
                ts_ms: 7,
                values: vec![1.5, 2.5]
            }
        );
    }

    #[test]
    fn every_label_is_listed() {
        let all = [
            RejectReason::TooLarge(0),
            RejectReason::MalformedJson(String::new()),
            RejectReason::BadDeviceId,
            RejectReason::KeyMismatch {
                key: String::new(),
                device: String::new(),
            },
            RejectReason::BadTimestamp(String::new()),
            RejectReason::WrongChannelCount {
                expected: 0,
                got: 0,
            },
            RejectReason::UnknownChannel(String::new()),
            RejectReason::MissingChannel(String::new()),
            RejectReason::NonFinite(String::new()),
            RejectReason::OutOfOrder {
                ts_ms: 0,
                last_ms: 0,
            },
            RejectReason::FutureTimestamp {
                ts_ms: 0,
                now_ms: 0,
            },
        ];
        for r in all {
            assert!(RejectReason::LABELS.contains(&r.label()));
        }
        assert_eq!(RejectReason::LABELS.len(), 11);
    }
}
