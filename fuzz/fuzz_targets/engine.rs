//! `engine`: a sequence of operations on `forewarn_core::Engine`, derived
//! from the input bytes: readings for a handful of devices with arbitrary
//! (out-of-order, duplicate, extreme) timestamps and values, flushes with a
//! deterministic persistence forecaster (and with a failing one),
//! `flush_full`, `drain_touched`, `drain_evicted`, under a small
//! `with_max_devices` bound.
//!
//! Invariants: no panic; `device_count` grows past the bound only while
//! batches are queued; push outcomes agree with the device's last
//! timestamp; a failed flush leaves the queue as it was, a good one empties
//! it; drained views are unique, known and consistent; evictions are
//! counted.
#![no_main]

use std::collections::HashMap;

use forewarn_core::engine::Pushed;
use forewarn_core::{
    DetectorConfig, Engine, EngineConfig, EngineEvent, Forecaster, Reading, RejectReason, Scaler,
    Schema, StepBatch,
};
use libfuzzer_sys::fuzz_target;

/// Predicts the next batch as the last row of the current one, repeated;
/// the state counts steps.
struct Persistence {
    state_len: usize,
}

impl Forecaster for Persistence {
    type Error = ();
    fn state_len(&self) -> usize {
        self.state_len
    }
    fn step(&mut self, b: &mut StepBatch) -> Result<(), ()> {
        let hc = b.horizon * b.channels;
        assert_eq!(b.inputs.len(), b.n * hc);
        assert_eq!(b.predictions.len(), b.n * hc);
        assert_eq!(b.states.len(), b.n * b.state_len);
        for i in 0..b.n {
            for s in &mut b.states[i * b.state_len..(i + 1) * b.state_len] {
                *s += b.horizon as f32;
            }
            let last = b.inputs[(i + 1) * hc - b.channels..(i + 1) * hc].to_vec();
            for r in 0..b.horizon {
                let at = i * hc + r * b.channels;
                b.predictions[at..at + b.channels].copy_from_slice(&last);
            }
        }
        Ok(())
    }
}

struct Failing;

impl Forecaster for Failing {
    type Error = ();
    fn state_len(&self) -> usize {
        0
    }
    fn step(&mut self, _: &mut StepBatch) -> Result<(), ()> {
        Err(())
    }
}

struct Bytes<'a>(&'a [u8]);

impl Bytes<'_> {
    fn u8(&mut self) -> Option<u8> {
        let (&b, rest) = self.0.split_first()?;
        self.0 = rest;
        Some(b)
    }
    fn u16(&mut self) -> Option<u16> {
        Some(u16::from_le_bytes([self.u8()?, self.u8()?]))
    }
    fn f32(&mut self) -> Option<f32> {
        Some(f32::from_le_bytes([
            self.u8()?,
            self.u8()?,
            self.u8()?,
            self.u8()?,
        ]))
    }
}

const DEVICES: [&str; 6] = ["a", "b", "c", "d", "e", "f"];

fuzz_target!(|data: &[u8]| {
    let mut b = Bytes(data);
    let (Some(c0), Some(c1), Some(c2), Some(c3)) = (b.u8(), b.u8(), b.u8(), b.u8()) else {
        return;
    };
    let channels = 1 + (c0 & 1) as usize;
    let horizon = 1 + (c0 >> 1 & 3) as usize;
    let window = (c0 >> 3 & 7) as usize; // 0..=7, 0 included
    let max_batch = 1 + (c1 & 3) as usize;
    let max_devices = (c1 >> 2 & 7) as usize; // 0 = unbounded
    let state_len = (c2 & 3) as usize;
    let warmup = (c2 >> 2 & 7) as usize;
    let threshold = 0.01 + (c3 as f64) / 16.0;
    let schema = Schema::new((0..channels).map(|i| format!("ch{i}")).collect());
    let mut engine = Engine::new(EngineConfig {
        schema,
        scaler: Scaler {
            center: vec![0.5; channels],
            scale: vec![2.0; channels],
            constant: vec![false; channels],
        },
        horizon,
        window,
        warmup,
        state_len,
        strategy: forewarn_core::threshold::ThresholdStrategy::Fixed { threshold },
        detector: DetectorConfig {
            open_after: 1 + (c3 & 1) as u32,
            resolve_after: 1 + (c3 >> 1 & 1) as u32,
            resolve_ratio: 0.8,
        },
        model: "fuzz".into(),
        model_version: "v1".into(),
        max_batch,
    })
    .with_max_devices(max_devices);
    let mut forecaster = Persistence { state_len };

    // Our model of each tracked device's last timestamp (forgotten on
    // eviction).
    let mut last: HashMap<String, i64> = HashMap::new();
    let mut evicted_seen = 0u64;
    let mut open: HashMap<String, String> = HashMap::new();

    while let Some(op) = b.u8() {
        match op % 8 {
            // Push (most ops).
            0..=4 => {
                let dev = DEVICES[(op >> 3) as usize % DEVICES.len()];
                let Some(t) = b.u16() else { break };
                // Mostly small timestamps (so duplicates and reorders are
                // common), sometimes extreme ones.
                let ts = match op >> 6 {
                    0 | 1 => t as i64,
                    2 => -(t as i64),
                    _ => [i64::MIN, i64::MAX, 0, -1][(t & 3) as usize],
                };
                let mut values = Vec::with_capacity(channels);
                for _ in 0..channels {
                    let Some(v) = b.f32() else { return };
                    // The engine is fed only decoded (finite) readings.
                    values.push(if v.is_finite() { v } else { 0.0 });
                }
                let reading = Reading {
                    device: dev.to_owned(),
                    ts_ms: ts,
                    values,
                };
                let before = engine.device_count();
                let queued_before = engine.queued();
                let known = engine.device(dev).is_some();
                let got = engine.push(&reading);
                let after = engine.device_count();
                if max_devices > 0 && after > before && before >= max_devices {
                    assert!(queued_before > 0, "grew past the bound with nothing queued");
                }
                assert!(after <= before + 1);
                // The evicted ids leave the index.
                let evicted = engine.drain_evicted();
                for id in &evicted {
                    assert_ne!(id, dev, "the pushed device evicted itself");
                    assert!(engine.device(id).is_none(), "evicted {id} still tracked");
                    last.remove(id);
                    open.remove(id);
                }
                evicted_seen += evicted.len() as u64;
                assert_eq!(engine.evicted_total(), evicted_seen);
                if !known {
                    last.remove(dev);
                }
                match (got, last.get(dev).copied()) {
                    (Ok(Pushed::Duplicate), Some(l)) => assert_eq!(ts, l),
                    (Ok(Pushed::Duplicate), None) => panic!("duplicate of nothing"),
                    (Ok(_), l) => {
                        assert!(l.is_none_or(|l| ts > l), "accepted {ts} after {l:?}");
                        last.insert(dev.to_owned(), ts);
                    }
                    (Err(RejectReason::OutOfOrder { ts_ms, last_ms }), l) => {
                        assert_eq!(ts_ms, ts);
                        assert_eq!(Some(last_ms), l);
                        assert!(ts < last_ms);
                    }
                    (Err(e), _) => panic!("unexpected rejection {e:?}"),
                }
                let view = engine.device(dev).expect("pushed device is tracked");
                assert_eq!(view.last_ts, last.get(dev).copied());
                assert!(view.window_fill <= view.window_capacity);
                assert_eq!(view.window_capacity, window);
                assert!(view.window_fill as u64 <= view.readings);
            }
            5 => {
                let events = engine
                    .flush(&mut forecaster)
                    .expect("persistence never fails");
                assert_eq!(engine.queued(), 0);
                check_events(&events, &mut open, threshold);
            }
            6 => {
                if op & 0x10 == 0 {
                    let q = engine.queued();
                    assert!(engine.flush(&mut Failing).is_err() || q == 0);
                    assert_eq!(engine.queued(), q, "a failed flush changed the queue");
                } else {
                    let events = engine
                        .flush_full(&mut forecaster)
                        .expect("persistence never fails");
                    assert!(!engine.batch_full());
                    check_events(&events, &mut open, threshold);
                }
            }
            _ => {
                let views = engine.drain_touched();
                let mut names: Vec<&str> = views.iter().map(|v| v.device.as_str()).collect();
                names.sort_unstable();
                let n = names.len();
                names.dedup();
                assert_eq!(names.len(), n, "a device listed twice by drain_touched");
                for v in &views {
                    assert_eq!(engine.device(&v.device).as_ref(), Some(v));
                    assert!(v.window_fill <= v.window_capacity);
                }
                assert!(engine.drain_touched().is_empty());
                let mut ids: Vec<&str> = engine.device_ids().collect();
                let n = ids.len();
                ids.sort_unstable();
                ids.dedup();
                assert_eq!(ids.len(), n, "a device id tracked twice");
                assert_eq!(n, engine.device_count());
            }
        }
    }
    let _ = engine
        .flush(&mut forecaster)
        .expect("persistence never fails");
    assert_eq!(engine.queued(), 0);
});

/// Opened/resolved alerts alternate per device.
fn check_events(events: &[EngineEvent], open: &mut HashMap<String, String>, threshold: f64) {
    for e in events {
        match e {
            EngineEvent::Opened(a) => {
                assert!(
                    open.insert(a.device.clone(), a.id.clone()).is_none(),
                    "opened twice"
                );
                assert_eq!(a.threshold, threshold);
            }
            EngineEvent::Resolved(a) => {
                // The device may have been evicted and come back since.
                if let Some(id) = open.remove(&a.device) {
                    assert_eq!(id, a.id);
                }
            }
            EngineEvent::Scored {
                start_ts, end_ts, ..
            } => assert!(start_ts <= end_ts),
        }
    }
}
