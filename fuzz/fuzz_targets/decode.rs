//! `decode`: arbitrary bytes and an arbitrary key into
//! `forewarn_core::reading::decode_reading`.
//!
//! Input layout: byte 0 picks the key (none / the payload's own device id,
//! when it has one / arbitrary bytes), bytes 1..=k are the arbitrary key
//! (k from byte 0), the rest is the payload. Both value forms (array and
//! object) are reached through the seed corpus (fuzz/seeds/decode).
//!
//! Invariants: no panic; an accepted reading has exactly `schema.len()`
//! finite values, a valid device id, and equals the key when a key was
//! given; a rejection's label is one of `RejectReason::LABELS`; a payload
//! over the size limit is always `too_large`; decoding is deterministic.
//!
//! The consume stage's fast decoder (`decode_fast` in
//! crates/forewarn-ingest/src/consume.rs) is private to forewarn-ingest and
//! is not reachable from here; its agreement with `decode_reading` is
//! covered by that module's unit tests only.
#![no_main]

use forewarn_core::reading::{
    MAX_DEVICE_ID_LEN, MAX_MESSAGE_BYTES, RejectReason, Schema, decode_reading, encode_reading,
};
use libfuzzer_sys::fuzz_target;

fn schemas() -> [Schema; 3] {
    [
        Schema::new(vec!["pressure".into(), "flow".into()]),
        Schema::new(vec!["a".into()]),
        Schema::new(Vec::new()),
    ]
}

fn check(payload: &[u8], key: Option<&[u8]>, schema: &Schema) {
    let got = decode_reading(payload, key, schema);
    // Deterministic.
    assert_eq!(got, decode_reading(payload, key, schema));
    match &got {
        Ok(r) => {
            assert!(payload.len() <= MAX_MESSAGE_BYTES);
            assert_eq!(
                r.values.len(),
                schema.len(),
                "accepted with the wrong length"
            );
            assert!(
                r.values.iter().all(|v| v.is_finite()),
                "non-finite value accepted: {r:?}"
            );
            assert!(!r.device.is_empty());
            assert!(r.device.chars().count() <= MAX_DEVICE_ID_LEN);
            assert!(!r.device.chars().any(char::is_control));
            if let Some(k) = key {
                assert_eq!(k, r.device.as_bytes(), "key mismatch accepted");
            }
            // The accepted reading round-trips through the array form.
            let again =
                decode_reading(&encode_reading(&r.device, r.ts_ms, &r.values), None, schema)
                    .expect("re-encoded accepted reading must decode");
            assert_eq!(&again, r);
        }
        Err(e) => {
            assert!(RejectReason::LABELS.contains(&e.label()));
            if payload.len() > MAX_MESSAGE_BYTES {
                assert_eq!(e.label(), "too_large");
            }
            // Display never panics.
            let _ = e.to_string();
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let klen = ((mode >> 2) as usize).min(rest.len());
    let (key_bytes, payload) = rest.split_at(klen);
    for schema in &schemas() {
        match mode & 3 {
            0 => check(payload, None, schema),
            1 => {
                // The key the producer would send: the payload's own device id.
                let key = serde_json::from_slice::<serde_json::Value>(payload)
                    .ok()
                    .and_then(|v| v.get("device").and_then(|d| d.as_str()).map(str::to_owned));
                check(payload, key.as_deref().map(str::as_bytes), schema);
            }
            _ => check(payload, Some(key_bytes), schema),
        }
    }
});
