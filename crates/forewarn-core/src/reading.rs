//! Input messages, the wire format: decoding and validation, and the
//! encoders of both forms (the simulator's, the bench's and the tests'),
//! so the format has one home and its round trip one test.
//!
//! Two JSON forms are accepted (key = device id):
//! `{"device":"pump-07","ts":"2026-11-28T12:00:00.250Z","values":{"pressure":1.92}}`
//! `{"device":"pump-07","ts":1795867200250,"values":[1.92,31.8]}`
//! On the wire an integer `ts` is always epoch milliseconds (data files
//! have their own rule, `forewarn_data::parse_time`).
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
    check_ts_not_future(reading.ts_ms, now_ms)
}

/// [`check_not_future`] for a reading's timestamp alone.
pub fn check_ts_not_future(ts_ms: i64, now_ms: i64) -> Result<(), RejectReason> {
    if ts_ms > now_ms.saturating_add(MAX_FUTURE_SKEW_MS) {
        return Err(RejectReason::FutureTimestamp { ts_ms, now_ms });
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

impl Reading {
    /// The reading borrowed.
    pub fn view(&self) -> ReadingRef<'_> {
        ReadingRef {
            device: &self.device,
            ts_ms: self.ts_ms,
            values: &self.values,
        }
    }
}

/// A validated reading, borrowed (from a [`Reading`] or a [`Readings`]).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ReadingRef<'a> {
    pub device: &'a str,
    /// Milliseconds since the Unix epoch (UTC).
    pub ts_ms: i64,
    pub values: &'a [f32],
}

impl ReadingRef<'_> {
    pub fn to_reading(&self) -> Reading {
        Reading {
            device: self.device.to_owned(),
            ts_ms: self.ts_ms,
            values: self.values.to_vec(),
        }
    }
}

/// Validated readings stored flat: every id in one string, every value in
/// one vector, timestamps and ends in another. Many readings (a consumed
/// chunk) cost a handful of allocations instead of two each, and none once
/// the buffers are reused after [`Readings::clear`]; readers borrow each
/// one as a [`ReadingRef`].
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Readings {
    ids: String,
    values: Vec<f32>,
    entries: Vec<FlatEntry>,
}

/// Where one reading of [`Readings`] ends in its id and value buffers (it
/// starts where the one before ends).
#[derive(Debug, Clone, Copy, PartialEq)]
struct FlatEntry {
    id_end: usize,
    values_end: usize,
    ts_ms: i64,
}

impl Readings {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Removes every reading, keeping the buffers' capacity.
    pub fn clear(&mut self) {
        self.ids.clear();
        self.values.clear();
        self.entries.clear();
    }

    /// Appends a copy of `reading`.
    pub fn push(&mut self, reading: ReadingRef<'_>) {
        self.values.extend_from_slice(reading.values);
        self.seal(reading.device, reading.ts_ms);
    }

    /// Ends a reading whose values were appended to `values`.
    fn seal(&mut self, device: &str, ts_ms: i64) {
        self.ids.push_str(device);
        self.entries.push(FlatEntry {
            id_end: self.ids.len(),
            values_end: self.values.len(),
            ts_ms,
        });
    }

    /// Removes the last reading.
    pub fn pop(&mut self) {
        if self.entries.pop().is_some() {
            let (id_end, values_end) = self
                .entries
                .last()
                .map_or((0, 0), |e| (e.id_end, e.values_end));
            self.ids.truncate(id_end);
            self.values.truncate(values_end);
        }
    }

    /// The `i`th reading; panics when out of range.
    pub fn get(&self, i: usize) -> ReadingRef<'_> {
        let e = self.entries[i];
        let (id_start, values_start) = match i {
            0 => (0, 0),
            _ => {
                let p = self.entries[i - 1];
                (p.id_end, p.values_end)
            }
        };
        ReadingRef {
            device: &self.ids[id_start..e.id_end],
            ts_ms: e.ts_ms,
            values: &self.values[values_start..e.values_end],
        }
    }

    pub fn last(&self) -> Option<ReadingRef<'_>> {
        self.len().checked_sub(1).map(|i| self.get(i))
    }

    pub fn iter(&self) -> impl ExactSizeIterator<Item = ReadingRef<'_>> + '_ {
        (0..self.len()).map(|i| self.get(i))
    }
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
    let mut values = Vec::with_capacity(schema.len());
    let (device, ts_ms) = decode_parts(payload, key, schema, &mut values)?;
    Ok(Reading {
        device: device.into_owned(),
        ts_ms,
        values,
    })
}

/// [`decode_reading`] into `out`: the same checks and the same result, the
/// accepted reading appended to `out` (left as it was on a rejection).
/// The values go straight into `out`'s buffer and an id without escapes is
/// copied from the payload, so, with `out`'s buffers reused, the array
/// form allocates only the parser's temporary list.
pub fn decode_reading_into(
    payload: &[u8],
    key: Option<&[u8]>,
    schema: &Schema,
    out: &mut Readings,
) -> Result<(), RejectReason> {
    let start = out.values.len();
    match decode_parts(payload, key, schema, &mut out.values) {
        Ok((device, ts_ms)) => {
            out.seal(&device, ts_ms);
            Ok(())
        }
        Err(reason) => {
            out.values.truncate(start);
            Err(reason)
        }
    }
}

/// The checks of [`decode_reading`]: the device id and timestamp, with the
/// values appended to `values` (in schema order; on an error, some may
/// have been appended).
fn decode_parts<'p>(
    payload: &'p [u8],
    key: Option<&[u8]>,
    schema: &Schema,
    values: &mut Vec<f32>,
) -> Result<(std::borrow::Cow<'p, str>, i64), RejectReason> {
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
    parse_values(wire.values.get(), schema, values)?;
    Ok((wire.device, ts_ms))
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

/// Appends the values in schema order to `out`.
fn parse_values(raw: &str, schema: &Schema, out: &mut Vec<f32>) -> Result<(), RejectReason> {
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
        for (v, name) in list.iter().zip(schema.channels()) {
            out.push(finite(*v, name)?);
        }
        Ok(())
    } else {
        let map: serde_json::Map<String, serde_json::Value> =
            serde_json::from_str(raw).map_err(|e| {
                RejectReason::MalformedJson(format!("values must be an object or an array: {e}"))
            })?;
        let start = out.len();
        out.resize(start + schema.len(), f32::NAN);
        let out = &mut out[start..];
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
        Ok(())
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

/// Encodes a reading in the array form: `{"device":..,"ts":<epoch
/// ms>,"values":[..]}` (values in schema order).
pub fn encode_reading(device: &str, ts_ms: i64, values: &[f32]) -> Vec<u8> {
    serde_json::to_vec(&serde_json::json!({"device": device, "ts": ts_ms, "values": values}))
        .expect("serialising plain numbers cannot fail")
}

/// The object form's channel names, each encoded once as a JSON string
/// followed by `:`, for [`encode_object`].
#[derive(Debug, Clone)]
pub struct ObjectKeys(Vec<Vec<u8>>);

impl ObjectKeys {
    pub fn new(channels: &[String]) -> Self {
        Self(
            channels
                .iter()
                .map(|c| {
                    let mut k = serde_json::to_vec(c).expect("a string serialises");
                    k.push(b':');
                    k
                })
                .collect(),
        )
    }
}

/// Encodes a reading in the object form into `buf` (cleared first):
/// `{"device":..,"ts":"<RFC 3339, UTC, ms>","values":{"name":value,..}}`,
/// `values` in the order of `keys`.
pub fn encode_object(
    buf: &mut Vec<u8>,
    device: &str,
    ts_ms: i64,
    keys: &ObjectKeys,
    values: &[f32],
) {
    buf.clear();
    buf.extend_from_slice(b"{\"device\":");
    serde_json::to_writer(&mut *buf, device).expect("writing to a Vec cannot fail");
    buf.extend_from_slice(b",\"ts\":");
    let ts = chrono::DateTime::from_timestamp_millis(ts_ms)
        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true))
        .unwrap_or_else(|| ts_ms.to_string());
    serde_json::to_writer(&mut *buf, &ts).expect("writing to a Vec cannot fail");
    buf.extend_from_slice(b",\"values\":{");
    for (i, (key, v)) in keys.0.iter().zip(values).enumerate() {
        if i > 0 {
            buf.push(b',');
        }
        buf.extend_from_slice(key);
        serde_json::to_writer(&mut *buf, v).expect("writing to a Vec cannot fail");
    }
    buf.extend_from_slice(b"}}");
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

    /// Every message of the tests above, under a few keys.
    fn all_cases() -> Vec<(Vec<u8>, Option<&'static [u8]>)> {
        let msgs = [
            r#"{"device":"pump-07","ts":"2026-11-28T12:00:00.250Z","values":{"flow":31.8,"pressure":1.92}}"#,
            r#"{"device":"pump-07","ts":1795867200250,"values":[1.92,31.8]}"#,
            r#"{"device":"pump-07","ts":"2026-11-28T13:00:00.250+01:00","values":[1,2]}"#,
            r#"{"device":"d","ts":5,"values":[1,2]}"#,
            r#"{"device":"d\u0065v","ts":5,"values":[1,2]}"#,
            r#"{"device":"dé","ts":5,"values":{"pressure":1,"flow":2}}"#,
            "not json",
            r#"{"device":"d","values":[1,2]}"#,
            r#"{"device":"","ts":1,"values":[1,2]}"#,
            r#"{"device":"other","ts":1,"values":[1,2]}"#,
            r#"{"device":"d","ts":"yesterday","values":[1,2]}"#,
            r#"{"device":"d","ts":1.5,"values":[1,2]}"#,
            r#"{"device":"d","ts":1,"values":[1,2,3]}"#,
            r#"{"device":"d","ts":1,"values":[1]}"#,
            r#"{"device":"d","ts":1,"values":[1,"2"]}"#,
            r#"{"device":"d","ts":1,"values":[1,null]}"#,
            r#"{"device":"d","ts":1,"values":[null,1e39,3]}"#,
            r#"{"device":"d","ts":1,"values":[1,1e400]}"#,
            r#"{"device":"d","ts":1,"values":[1,1e39]}"#,
            r#"{"device":"d","ts":1,"values":{"pressure":1,"temp":2}}"#,
            r#"{"device":"d","ts":1,"values":{"pressure":1}}"#,
            r#"{"device":"d","ts":1,"values":{"pressure":1,"flow":"x"}}"#,
            r#"{"device":"d","ts":1,"values":{"pressure":null,"flow":1}}"#,
            r#"{"device":"d","ts":1,"values":"1,2"}"#,
        ];
        let mut cases = Vec::new();
        for m in msgs {
            for key in [None, Some(&b"d"[..]), Some(&b"pump-07"[..])] {
                cases.push((m.as_bytes().to_vec(), key));
            }
        }
        cases.push((vec![b' '; MAX_MESSAGE_BYTES + 1], None));
        cases
    }

    #[test]
    fn flat_decoding_gives_the_owned_result_and_keeps_rejections_out() {
        let mut flat = Readings::new();
        let mut accepted = Vec::new();
        for (msg, key) in all_cases() {
            let owned = decode_reading(&msg, key, &schema());
            let before = flat.clone();
            let got = decode_reading_into(&msg, key, &schema(), &mut flat);
            match owned {
                Ok(r) => {
                    assert_eq!(got, Ok(()));
                    assert_eq!(flat.last(), Some(r.view()));
                    accepted.push(r);
                }
                Err(e) => {
                    assert_eq!(got, Err(e));
                    assert_eq!(flat, before, "a rejection leaves the buffer as it was");
                }
            }
        }
        assert!(accepted.len() > 5);
        assert_eq!(flat.len(), accepted.len());
        let back: Vec<Reading> = flat.iter().map(|r| r.to_reading()).collect();
        assert_eq!(back, accepted);
    }

    #[test]
    fn flat_readings_push_pop_and_reuse() {
        let a = Reading {
            device: "a".into(),
            ts_ms: 1,
            values: vec![1.0, 2.0],
        };
        let b = Reading {
            device: "bb".into(),
            ts_ms: 2,
            values: vec![3.0],
        };
        let mut flat = Readings::new();
        assert_eq!(flat.last(), None);
        flat.pop();
        flat.push(a.view());
        flat.push(b.view());
        assert_eq!(flat.iter().collect::<Vec<_>>(), vec![a.view(), b.view()]);
        flat.pop();
        assert_eq!(flat.len(), 1);
        assert_eq!(flat.last(), Some(a.view()));
        flat.push(b.view());
        assert_eq!(flat.get(1), b.view());
        flat.clear();
        assert!(flat.is_empty());
        assert_eq!(flat, Readings::new());
        flat.push(b.view());
        assert_eq!(flat.get(0), b.view());
        flat.pop();
        assert_eq!(flat, Readings::new());
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

    /// Both forms the encoders write decode to the reading they encode
    /// (the simulator publishes either), names with quotes included.
    #[test]
    fn both_encoded_forms_decode_to_the_same_reading() {
        let channels = vec!["flow".to_owned(), "odd \"name\"".to_owned()];
        let schema = Schema::new(channels.clone());
        let keys = ObjectKeys::new(&channels);
        let mut buf = Vec::new();
        encode_object(
            &mut buf,
            "plant-0001",
            1_795_867_200_250,
            &keys,
            &[31.8, -2.5],
        );
        let text = String::from_utf8(buf.clone()).unwrap();
        assert_eq!(
            text,
            r#"{"device":"plant-0001","ts":"2026-11-28T12:00:00.250Z","values":{"flow":31.8,"odd \"name\"":-2.5}}"#
        );
        let want = Reading {
            device: "plant-0001".into(),
            ts_ms: 1_795_867_200_250,
            values: vec![31.8, -2.5],
        };
        assert_eq!(
            decode_reading(&buf, Some(b"plant-0001"), &schema).unwrap(),
            want
        );
        let array = encode_reading("plant-0001", 1_795_867_200_250, &[31.8, -2.5]);
        assert_eq!(decode_reading(&array, None, &schema).unwrap(), want);
    }
}
