//! Stage 1: poll Kafka and decode messages into chunks.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use forewarn_core::reading::{
    MAX_DEVICE_ID_LEN, MAX_MESSAGE_BYTES, Reading, ReadingRef, Readings, RejectReason, Schema,
    check_ts_not_future, decode_reading_into,
};
use forewarn_telemetry::events::{ConsumerLag, InternalEvent, MessagesConsumed};
use rdkafka::Offset;
use rdkafka::consumer::Consumer;
use rdkafka::message::Message;
use tokio::sync::mpsc::Sender;
use tokio_util::sync::CancellationToken;

use crate::client;
use crate::config::IngestConfig;
use crate::connection::ConnectionWatch;
use crate::context::{Handover, PipelineConsumer, PipelineContext};
use crate::error::IngestError;
use crate::messages::{Chunk, Input, Rejected, Spares, empty_chunk};
use crate::services::Services;

/// The group consumer; `input` is the engine stage's channel, which the
/// rebalance callbacks use for state handover.
pub(crate) fn create_consumer(
    cfg: &IngestConfig,
    services: &Services,
    input: Sender<Input>,
) -> Result<PipelineConsumer, IngestError> {
    let handover = cfg.checkpoints().then(|| Handover {
        cfg: cfg.clone(),
        metrics: services.metrics.clone(),
        tx: std::sync::Mutex::new(Some(input)),
    });
    let consumer: PipelineConsumer =
        client::group_consumer(cfg)?.create_with_context(PipelineContext {
            health: services.health.clone(),
            handover,
            generation: AtomicU64::new(0),
            watch: ConnectionWatch::new(Some(services.health.clone())),
        })?;
    consumer.subscribe(&[&cfg.input_topic])?;
    Ok(consumer)
}

pub(crate) fn run(
    consumer: &PipelineConsumer,
    cfg: &IngestConfig,
    schema: &Schema,
    services: &Services,
    (tx, spares): (Sender<Input>, Spares),
    shutdown: &CancellationToken,
) -> Result<(), IngestError> {
    let result = consume(consumer, cfg, schema, services, (tx, spares), shutdown);
    // Closing the engine stage's input (with `tx`, dropped above) ends it;
    // its final checkpoint covers every partition still held.
    if let Some(h) = &consumer.context().handover {
        h.detach();
    }
    result
}

fn consume(
    consumer: &PipelineConsumer,
    cfg: &IngestConfig,
    schema: &Schema,
    services: &Services,
    (tx, spares): (Sender<Input>, Spares),
    shutdown: &CancellationToken,
) -> Result<(), IngestError> {
    tracing::info!(topic = %cfg.input_topic, group = %cfg.group_id, "consuming");
    let mut decoder = Decoder {
        schema,
        values: Vec::with_capacity(schema.len()),
    };
    let mut idle: Option<Chunk> = None;
    while !shutdown.is_cancelled() {
        let mut chunk = idle.take().unwrap_or_else(|| empty_chunk(&spares));
        poll_chunk(consumer, cfg, &mut decoder, shutdown, &mut chunk);
        if chunk.consumed == 0 {
            idle = Some(chunk);
            continue;
        }
        MessagesConsumed {
            count: chunk.consumed,
        }
        .emit(&services.metrics);
        if tx.blocking_send(Input::Chunk(chunk)).is_err() {
            // The engine stage is gone; it reports its own error.
            return Ok(());
        }
    }
    tracing::info!("stopped polling");
    Ok(())
}

/// Decodes into a chunk: the fast path when it applies, else the reference
/// decoder, straight into the chunk's flat buffers either way.
struct Decoder<'a> {
    schema: &'a Schema,
    /// The fast path's values, reused.
    values: Vec<f32>,
}

impl Decoder<'_> {
    /// Appends the reading in `payload` to `out`, or says why not (`out`
    /// unchanged then).
    fn decode_into(
        &mut self,
        payload: &[u8],
        key: Option<&[u8]>,
        now_ms: i64,
        out: &mut Readings,
    ) -> Result<(), RejectReason> {
        match decode_fast_into(payload, key, self.schema, &mut self.values) {
            Some((device, ts_ms)) => out.push(ReadingRef {
                device,
                ts_ms,
                values: &self.values,
            }),
            None => decode_reading_into(payload, key, self.schema, out)?,
        }
        let ts_ms = out.last().map_or(0, |r| r.ts_ms);
        check_ts_not_future(ts_ms, now_ms).inspect_err(|_| out.pop())
    }
}

/// Fills `chunk` (empty) with what the next poll brings.
fn poll_chunk(
    consumer: &PipelineConsumer,
    cfg: &IngestConfig,
    decoder: &mut Decoder<'_>,
    shutdown: &CancellationToken,
    chunk: &mut Chunk,
) {
    let mut deadline: Option<Instant> = None;
    let ctx = consumer.context();
    let mut generation = ctx.generation.load(Ordering::SeqCst);
    // One clock read per chunk: the future-timestamp bound is a day wide.
    let now_ms = forewarn_telemetry::unix_now_ms();
    loop {
        // Once a chunk has begun, take only what librdkafka already holds:
        // waiting for more would leave the engine stage idle meanwhile.
        let timeout = match deadline {
            None => Duration::from_millis(100),
            Some(_) => Duration::ZERO,
        };
        let polled = consumer.poll(timeout);
        let now = ctx.generation.load(Ordering::SeqCst);
        if now != generation && ctx.handover.is_some() {
            // A rebalance ran inside this poll: every partition restarts
            // from its checkpoint (eager rebalancing revokes them all), so
            // what was polled before it is read again; drop it here.
            generation = now;
            chunk.clear();
            deadline = None;
        }
        match polled {
            None => {
                if deadline.is_some() || shutdown.is_cancelled() || chunk.consumed == 0 {
                    return;
                }
            }
            Some(Err(e)) => tracing::warn!(error = %e, "poll error"),
            Some(Ok(msg)) => {
                deadline.get_or_insert_with(|| Instant::now() + cfg.chunk_max_wait);
                let (partition, offset) = (msg.partition(), msg.offset());
                chunk.consumed += 1;
                chunk.note_offset(partition, offset);
                let payload = msg.payload().unwrap_or_default();
                match decoder.decode_into(payload, msg.key(), now_ms, &mut chunk.readings) {
                    Ok(()) => chunk.origins.push((partition, offset)),
                    Err(reason) => chunk.rejects.push(Rejected {
                        reason,
                        key: msg.key().map(<[u8]>::to_vec),
                        payload: payload.to_vec(),
                        partition,
                        offset,
                    }),
                }
                if chunk.consumed >= cfg.chunk_max_messages {
                    return;
                }
            }
        }
        if deadline.is_some_and(|d| Instant::now() >= d) {
            return;
        }
    }
}

/// Every few seconds: per-partition lag gauges and broker reachability.
pub(crate) async fn watch_lag(
    consumer: Arc<PipelineConsumer>,
    services: Services,
    shutdown: CancellationToken,
) {
    let mut tick = tokio::time::interval(Duration::from_secs(5));
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        let c = consumer.clone();
        let probe = tokio::task::spawn_blocking(move || lag_by_partition(&c)).await;
        match probe {
            Ok(Ok(lags)) => {
                services.health.set_broker_reachable(true);
                for (partition, lag) in lags {
                    ConsumerLag { partition, lag }.emit(&services.metrics);
                }
            }
            Ok(Err(e)) => {
                services.health.set_broker_reachable(false);
                tracing::warn!(error = %e, "broker unreachable");
            }
            Err(e) => tracing::warn!(error = %e, "lag probe panicked"),
        }
    }
}

fn lag_by_partition(consumer: &PipelineConsumer) -> rdkafka::error::KafkaResult<Vec<(i32, i64)>> {
    let timeout = Duration::from_secs(2);
    let assignment = consumer.assignment()?;
    if assignment.count() == 0 {
        // Nothing to measure; a metadata round trip still tells reachability.
        consumer.fetch_metadata(None, timeout)?;
        return Ok(Vec::new());
    }
    let positions = consumer.position()?;
    let mut out = Vec::new();
    for el in positions.elements() {
        let (low, high) = consumer.fetch_watermarks(el.topic(), el.partition(), timeout)?;
        let pos = match el.offset() {
            Offset::Offset(o) => o,
            _ => low,
        };
        out.push((el.partition(), (high - pos).max(0)));
    }
    Ok(out)
}

/// The common case without serde: exactly `{"device":"<id>","ts":<integer>,
/// "values":[<number>,...]}` (the array form, keys in this order, no
/// whitespace, as serde_json writes it) with a plain id, matching key,
/// integer milliseconds and one finite JSON number per channel. Anything
/// else, including every message that would be rejected, returns `None`
/// and goes through the reference decoder ([`decode_reading_into`], the
/// flat form of `decode_reading`), which stays the definition of what is
/// accepted: a reading decoded here is the one `decode_reading` returns.
/// About 4x faster; decoding is most of the consume thread's work.
#[allow(dead_code)] // the tests' and the fuzz target's entry; the stage uses decode_fast_into
fn decode_fast(payload: &[u8], key: Option<&[u8]>, schema: &Schema) -> Option<Reading> {
    let mut values = Vec::with_capacity(schema.len());
    let (device, ts_ms) = decode_fast_into(payload, key, schema, &mut values)?;
    Some(Reading {
        device: device.to_owned(),
        ts_ms,
        values,
    })
}

/// [`decode_fast`] without allocating: the device id borrowed from
/// `payload`, and the values in `values` (cleared first; holds garbage
/// when it declines).
fn decode_fast_into<'p>(
    payload: &'p [u8],
    key: Option<&[u8]>,
    schema: &Schema,
    values: &mut Vec<f32>,
) -> Option<(&'p str, i64)> {
    values.clear();
    if payload.len() > MAX_MESSAGE_BYTES {
        return None;
    }
    let rest = payload.strip_prefix(br#"{"device":""#)?;
    let end = rest.iter().position(|&b| b == b'"')?;
    let device = &rest[..end];
    // Printable ASCII only (no escapes, no control characters): its length
    // in bytes is its length in characters.
    if device.is_empty()
        || device.len() > MAX_DEVICE_ID_LEN
        || !device
            .iter()
            .all(|&b| (0x20..0x7f).contains(&b) && b != b'\\')
        || key.is_some_and(|k| k != device)
    {
        return None;
    }
    let rest = rest[end..].strip_prefix(br#"","ts":"#)?;
    let end = rest.iter().position(|&b| b == b',')?;
    let ts_ms = json_integer(&rest[..end])?;
    let mut rest = rest[end..].strip_prefix(br#","values":["#)?;
    loop {
        let end = rest.iter().position(|&b| b == b',' || b == b']')?;
        let v = json_number(&rest[..end])?;
        if !v.is_finite() || !(v as f32).is_finite() {
            return None;
        }
        values.push(v as f32);
        let sep = rest[end];
        rest = &rest[end + 1..];
        if sep == b']' {
            break;
        }
    }
    if rest != b"}" || values.len() != schema.len() {
        return None;
    }
    Some((std::str::from_utf8(device).ok()?, ts_ms))
}

/// `-?(0|[1-9][0-9]*)` as i64.
fn json_integer(s: &[u8]) -> Option<i64> {
    // serde_json reads `-0` as the float -0.0, which decode_reading rejects
    // as a timestamp: decline, so both decoders give the same answer.
    if s == b"-0" {
        return None;
    }
    let digits = s.strip_prefix(b"-").unwrap_or(s);
    if digits.is_empty()
        || !digits.iter().all(u8::is_ascii_digit)
        || (digits.len() > 1 && digits[0] == b'0')
    {
        return None;
    }
    std::str::from_utf8(s).ok()?.parse().ok()
}

/// A JSON number (`-?int(.digits)?([eE][+-]?digits)?`) as f64; `None` for
/// anything else, so Rust's more lenient float syntax never widens JSON's.
fn json_number(s: &[u8]) -> Option<f64> {
    let mut i = usize::from(s.first() == Some(&b'-'));
    let int_start = i;
    while i < s.len() && s[i].is_ascii_digit() {
        i += 1;
    }
    let int_len = i - int_start;
    if int_len == 0 || (int_len > 1 && s[int_start] == b'0') {
        return None;
    }
    if i < s.len() && s[i] == b'.' {
        i += 1;
        let start = i;
        while i < s.len() && s[i].is_ascii_digit() {
            i += 1;
        }
        if i == start {
            return None;
        }
    }
    if i < s.len() && (s[i] == b'e' || s[i] == b'E') {
        i += 1;
        if i < s.len() && (s[i] == b'+' || s[i] == b'-') {
            i += 1;
        }
        let start = i;
        while i < s.len() && s[i].is_ascii_digit() {
            i += 1;
        }
        if i == start {
            return None;
        }
    }
    if i != s.len() {
        return None;
    }
    std::str::from_utf8(s).ok()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use forewarn_core::reading::{MAX_FUTURE_SKEW_MS, decode_reading};

    fn schema() -> Schema {
        Schema::new(vec!["a".into(), "b".into()])
    }

    /// Found by fuzzing (fuzz/regressions/decode_fast/ts-minus-zero): the
    /// fast path must not accept what the reference decoder rejects.
    #[test]
    fn minus_zero_timestamp_is_declined_like_the_reference() {
        let msg = br#"{"device":"d","ts":-0,"values":[1.5,2]}"#;
        assert_eq!(
            decode_reading(msg, None, &schema()).unwrap_err().label(),
            "bad_timestamp"
        );
        assert_eq!(decode_fast(msg, None, &schema()), None);
    }

    /// (message, key, whether the fast path takes it).
    type Case = (&'static str, Option<&'static [u8]>, bool);

    /// The fast path either declines or agrees with `decode_reading`.
    #[test]
    fn fast_decoding_agrees_with_the_reference_or_declines() {
        for (msg, key, fast) in CASES {
            let got = decode_fast(msg.as_bytes(), *key, &schema());
            assert_eq!(got.is_some(), *fast, "{msg}");
            if let Some(r) = got {
                assert_eq!(
                    Ok(r),
                    decode_reading(msg.as_bytes(), *key, &schema()),
                    "{msg}"
                );
            }
        }
        let id = "x".repeat(MAX_DEVICE_ID_LEN + 1);
        let long = format!(r#"{{"device":"{id}","ts":5,"values":[1,2]}}"#);
        assert!(decode_fast(long.as_bytes(), None, &schema()).is_none());
    }

    /// A chunk's decoder (either path, then the clock check) gives what
    /// `decode_reading` and `check_not_future` give, and a rejected message
    /// leaves the chunk's readings as they were.
    #[test]
    fn chunk_decoding_agrees_with_the_reference() {
        let schema = schema();
        let mut decoder = Decoder {
            schema: &schema,
            values: Vec::new(),
        };
        let now = 1_795_867_200_000;
        let future = format!(
            r#"{{"device":"d","ts":{},"values":[1,2]}}"#,
            now + 2 * MAX_FUTURE_SKEW_MS
        );
        let future_rfc = r#"{"device":"d","ts":"2099-01-01T00:00:00Z","values":{"a":1,"b":2}}"#;
        let mut cases: Vec<(&str, Option<&[u8]>)> =
            CASES.iter().map(|(m, k, _)| (*m, *k)).collect();
        cases.extend([
            (future.as_str(), None),
            (future_rfc, Some(&b"d"[..])),
            (
                r#"{"device":"d","ts":"2026-11-28T12:00:00Z","values":{"b":1,"a":2}}"#,
                None,
            ),
            (
                r#"{"device":"d\u0065","ts":7,"values":[1,2]}"#,
                Some(&b"de"[..]),
            ),
        ]);
        let mut out = Readings::new();
        let mut want = Vec::new();
        for (msg, key) in cases {
            let reference = decode_reading(msg.as_bytes(), key, &schema)
                .and_then(|r| forewarn_core::reading::check_not_future(&r, now).map(|()| r));
            let before = out.clone();
            match (
                decoder.decode_into(msg.as_bytes(), key, now, &mut out),
                reference,
            ) {
                (Ok(()), Ok(r)) => {
                    assert_eq!(out.last(), Some(r.view()), "{msg}");
                    want.push(r);
                }
                (Err(got), Err(reason)) => {
                    assert_eq!(got, reason, "{msg}");
                    assert_eq!(out, before, "{msg}");
                }
                (got, reference) => panic!("{msg}: {got:?} vs {reference:?}"),
            }
        }
        assert!(want.len() >= 6, "{} accepted", want.len());
        let got: Vec<Reading> = out.iter().map(|r| r.to_reading()).collect();
        assert_eq!(got, want);
    }

    const CASES: &[Case] = &[
        (
            r#"{"device":"pump-07","ts":1795867200250,"values":[1.92,31.8]}"#,
            Some(b"pump-07"),
            true,
        ),
        (r#"{"device":"d","ts":-5,"values":[0,-0.5e-3]}"#, None, true),
        (
            r#"{"device":"d","ts":5,"values":[1E2,2.5E+1]}"#,
            Some(b"d"),
            true,
        ),
        (
            r#"{"device":"d","ts":5,"values":[1,2]}"#,
            Some(b"other"),
            false,
        ),
        (r#"{"device":"d","ts":5,"values":[1,2,3]}"#, None, false),
        (r#"{"device":"d","ts":5,"values":[1,null]}"#, None, false),
        (r#"{"device":"d","ts":5,"values":[1,1e39]}"#, None, false),
        (r#"{"device":"d","ts":5,"values":[1,1e400]}"#, None, false),
        (r#"{"device":"d","ts":5,"values":[01,2]}"#, None, false),
        (r#"{"device":"d","ts":5,"values":[1.,2]}"#, None, false),
        (r#"{"device":"d","ts":5,"values":[.5,2]}"#, None, false),
        (r#"{"device":"d","ts":5,"values":[inf,2]}"#, None, false),
        (r#"{"device":"d","ts":5,"values":[+1,2]}"#, None, false),
        (r#"{"device":"d","ts":5,"values":[]}"#, None, false),
        (r#"{"device":"d","ts":5.5,"values":[1,2]}"#, None, false),
        (r#"{"device":"d","ts":05,"values":[1,2]}"#, None, false),
        (
            r#"{"device":"d","ts":"2026-11-28T12:00:00Z","values":[1,2]}"#,
            None,
            false,
        ),
        (
            r#"{"device":"d","ts":5,"values":{"a":1,"b":2}}"#,
            None,
            false,
        ),
        (r#"{"device":"","ts":5,"values":[1,2]}"#, None, false),
        (r#"{"device":"a\"b","ts":5,"values":[1,2]}"#, None, false),
        (r#"{"device":"d","ts":5,"values":[1,2]} "#, None, false),
        (r#"{"device":"d","ts":5,"values":[1,2],"x":1}"#, None, false),
        (r#"{"device": "d","ts":5,"values":[1,2]}"#, None, false),
        (
            r#"{"device":"d","ts":99999999999999999999,"values":[1,2]}"#,
            None,
            false,
        ),
    ];

    #[test]
    fn fast_decoding_matches_the_reference_on_encoded_readings() {
        for i in 0..2000 {
            let v = [(i as f32 * 0.37).sin() * 1e3, (i as f32).sqrt() / 7.0 - 3.0];
            let msg = forewarn_core::reading::encode_reading("dev-1", 1_795_867_200_000 + i, &v);
            let fast = decode_fast(&msg, Some(b"dev-1"), &schema()).expect("simple form");
            assert_eq!(Ok(fast), decode_reading(&msg, Some(b"dev-1"), &schema()));
        }
    }
}
