//! The forecaster alone, memory per device, and CPU time by thread.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use forewarn_core::engine::{Forecaster, StepBatch};
use forewarn_core::{Engine, EngineConfig, ReadingRef};
use forewarn_model::{Device, Network};

use crate::model::Shape;
use crate::roofline::{sync, thread_cpu_ns};

// ---------------------------------------------------------------------------
// Forecaster alone

pub(crate) struct ForecasterOnly {
    pub(crate) readings_per_s: f64,
    /// Per CPU-second of the calling thread.
    pub(crate) readings_per_cpu_s: f64,
    pub(crate) secs_per_call: f64,
}

pub(crate) fn forecaster_only(
    model: &Mutex<Network>,
    spec: &Shape,
    device: Device,
    n: usize,
    dur: Duration,
) -> anyhow::Result<ForecasterOnly> {
    let mut m = lock(model);
    let hc = spec.horizon * spec.channels;
    let mut b = StepBatch {
        n,
        horizon: spec.horizon,
        channels: spec.channels,
        outputs: spec.outputs,
        state_len: spec.state_len,
        inputs: (0..n * hc)
            .map(|i| ((i % 97) as f32 * 0.37).sin())
            .collect(),
        states: vec![0.0; n * spec.state_len],
        predictions: vec![0.0; n * spec.horizon * spec.outputs],
    };
    for _ in 0..3 {
        m.step(&mut b)?;
    }
    let t = Instant::now();
    let cpu = thread_cpu_ns();
    let mut calls = 0u64;
    while t.elapsed() < dur {
        m.step(&mut b)?;
        calls += 1;
    }
    sync(device);
    let secs = t.elapsed().as_secs_f64();
    let cpu_secs = (thread_cpu_ns() - cpu) as f64 / 1e9;
    Ok(ForecasterOnly {
        readings_per_s: (calls * (n * spec.horizon) as u64) as f64 / secs,
        readings_per_cpu_s: (calls * (n * spec.horizon) as u64) as f64 / cpu_secs.max(1e-9),
        secs_per_call: secs / calls as f64,
    })
}

// ---------------------------------------------------------------------------
// Memory

pub(crate) struct Memory {
    pub(crate) devices: usize,
    pub(crate) measured: f64,
    pub(crate) computed: usize,
}

/// Keeps states as they are and forecasts zeros: no libtorch, so the RSS
/// delta is the engine's alone.
pub(crate) struct Zeros(usize);

impl Forecaster for Zeros {
    type Error = std::convert::Infallible;
    fn state_len(&self) -> usize {
        self.0
    }
    fn step(&mut self, _: &mut StepBatch) -> Result<(), Self::Error> {
        Ok(())
    }
}

pub(crate) fn measure_bytes_per_device(cfg: &EngineConfig, devices: usize) -> Memory {
    let ids: Vec<String> = (0..devices).map(|d| format!("plant-{d:05}")).collect();
    // Readings at the scaler's centre, forecast exactly by `Zeros`: normal
    // devices, none in alarm (an open alert adds ~680 B to its device).
    let values = cfg.scaler.center.clone();
    let mut f = Zeros(cfg.state_len);
    let before = status_kib("VmRSS:");
    let mut engine = Engine::new(EngineConfig {
        warmup: 0,
        ..cfg.clone()
    });
    // Enough readings to fill every window and make a forecast for every
    // device, flushed as serve flushes (whenever a call's worth is queued).
    for ts in 0..cfg.window.max(cfg.horizon) as i64 {
        for id in &ids {
            // Borrowed, as serve's engine stage pushes decoded chunks.
            let _ = engine.push_ref(
                ReadingRef {
                    device: id,
                    ts_ms: ts,
                    values: &values,
                },
                0,
            );
            if engine.batch_full() {
                let _ = engine.flush(&mut f);
            }
        }
        let _ = engine.flush(&mut f);
    }
    let after = status_kib("VmRSS:");
    let measured = (after.saturating_sub(before) * 1024) as f64 / devices as f64;
    let computed = engine.bytes_per_device();
    drop(engine);
    Memory {
        devices,
        measured,
        computed,
    }
}

pub(crate) fn status_kib(field: &str) -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix(field))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        })
        .unwrap_or(0)
}

/// Resets VmHWM to the current RSS (Linux `clear_refs` 5).
pub(crate) fn reset_peak_rss() {
    let _ = std::fs::write("/proc/self/clear_refs", "5");
}

// ---------------------------------------------------------------------------
// CPU by thread (a cheap profile of where the time goes)

/// CPU clock ticks (utime + stime) per thread-name group of this process,
/// plus the broker process (`tansu`) and the whole machine.
pub(crate) fn cpu_by_thread() -> BTreeMap<String, u64> {
    let mut out = BTreeMap::new();
    let read = |path: &Path| -> Option<(String, u64)> {
        let s = std::fs::read_to_string(path).ok()?;
        let (open, close) = (s.find('(')?, s.rfind(')')?);
        let name = s[open + 1..close].to_string();
        let f: Vec<&str> = s[close + 2..].split_whitespace().collect();
        Some((
            name,
            f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?,
        ))
    };
    if let Ok(tasks) = std::fs::read_dir("/proc/self/task") {
        for t in tasks.flatten() {
            if let Some((name, ticks)) = read(&t.path().join("stat")) {
                let group = name
                    .trim_end_matches(|c: char| c.is_ascii_digit())
                    .to_string();
                *out.entry(group).or_insert(0) += ticks;
            }
        }
    }
    if let Ok(procs) = std::fs::read_dir("/proc") {
        for p in procs.flatten() {
            let comm = std::fs::read_to_string(p.path().join("comm")).unwrap_or_default();
            if comm.trim() == "tansu"
                && let Some((_, ticks)) = read(&p.path().join("stat"))
            {
                *out.entry("broker (tansu process)".into()).or_insert(0) += ticks;
            }
        }
    }
    if let Some(busy) = std::fs::read_to_string("/proc/stat").ok().and_then(|s| {
        let f: Vec<u64> = s
            .lines()
            .next()?
            .split_whitespace()
            .skip(1)
            .filter_map(|v| v.parse().ok())
            .collect();
        // user nice system idle iowait irq softirq steal
        Some(f.iter().take(8).sum::<u64>() - f.get(3)? - f.get(4)?)
    }) {
        out.insert("machine total".into(), busy);
    }
    out
}

pub(crate) fn cpu_delta(a: &BTreeMap<String, u64>, b: &BTreeMap<String, u64>) -> String {
    let hz = 100.0;
    let mut parts: Vec<(String, f64)> = b
        .iter()
        .map(|(k, v)| {
            (
                k.clone(),
                v.saturating_sub(a.get(k).copied().unwrap_or(0)) as f64 / hz,
            )
        })
        .filter(|(_, s)| *s >= 0.05)
        .collect();
    parts.sort_by(|x, y| y.1.total_cmp(&x.1));
    parts
        .iter()
        .map(|(k, s)| format!("{k} {s:.2}"))
        .collect::<Vec<_>>()
        .join(", ")
}

pub(crate) fn lock(m: &Mutex<Network>) -> std::sync::MutexGuard<'_, Network> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}
