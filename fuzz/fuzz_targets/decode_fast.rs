//! `decode_fast`: the consume stage's fast array-form decoder (private in
//! forewarn-ingest; fuzz/build.rs copies its source from
//! crates/forewarn-ingest/src/consume.rs) against the reference
//! `decode_reading`.
//!
//! Input layout as in `decode`: byte 0 picks the key (none / the
//! payload's own device id / arbitrary bytes of length byte0 >> 2), the
//! rest is the payload.
//!
//! Invariants: no panic; whenever the fast decoder accepts, the reference
//! accepts the same reading (same device, timestamp and bit-identical
//! values) under the same key and schema.
#![no_main]
#![allow(dead_code)]

use forewarn_core::reading::{
    MAX_DEVICE_ID_LEN, MAX_MESSAGE_BYTES, Reading, Schema, decode_reading,
};
use libfuzzer_sys::fuzz_target;

include!(concat!(env!("OUT_DIR"), "/decode_fast.rs"));

fn check(payload: &[u8], key: Option<&[u8]>, schema: &Schema) {
    if let Some(fast) = decode_fast(payload, key, schema) {
        let slow = decode_reading(payload, key, schema);
        let Ok(slow) = slow else {
            panic!("fast accepted {fast:?}, reference rejected: {slow:?}");
        };
        assert_eq!(fast.device, slow.device);
        assert_eq!(fast.ts_ms, slow.ts_ms);
        let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
        assert_eq!(
            bits(&fast.values),
            bits(&slow.values),
            "values differ: {fast:?} vs {slow:?}"
        );
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let klen = ((mode >> 2) as usize).min(rest.len());
    let (key_bytes, payload) = rest.split_at(klen);
    let schemas = [
        Schema::new(vec!["pressure".into(), "flow".into()]),
        Schema::new(vec!["a".into()]),
        Schema::new(vec!["a".into(), "b".into(), "c".into()]),
    ];
    for schema in &schemas {
        match mode & 3 {
            0 => check(payload, None, schema),
            1 => {
                let key = serde_json::from_slice::<serde_json::Value>(payload)
                    .ok()
                    .and_then(|v| v.get("device").and_then(|d| d.as_str()).map(str::to_owned));
                check(payload, key.as_deref().map(str::as_bytes), schema);
            }
            _ => check(payload, Some(key_bytes), schema),
        }
    }
});
