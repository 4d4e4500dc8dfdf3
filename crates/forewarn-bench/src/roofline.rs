//! FLOPs per reading and the GEMM rate libtorch reaches here (the roofline).

use std::time::Instant;

use forewarn_model::{Highway, ModelSpec, Precision};

use tch::{Device, Kind, Tensor};

// ---------------------------------------------------------------------------
// FLOPs and the roofline

#[derive(Debug, Clone, Copy)]
pub(crate) struct Flops {
    /// Per reading: every LSTM layer's input and recurrent GEMMs.
    pub(crate) lstm: f64,
    /// Per reading: the head runs once per batch, on the last step only.
    pub(crate) head: f64,
}

impl Flops {
    pub(crate) fn total(&self) -> f64 {
        self.lstm + self.head
    }
}

/// GEMM FLOPs (2 per multiply-add) the forecaster needs per reading. Gate
/// nonlinearities and bias adds (~10 per gate value) are not counted: they
/// are not GEMM work and are < 5 % of it at hidden 64.
pub(crate) fn flops_per_reading(s: &ModelSpec, highway: Highway) -> Flops {
    let (c, h) = (s.channels as f64, s.hidden as f64);
    let lstm: f64 = (0..s.layers)
        .map(|l| {
            let input = if l == 0 { c } else { h };
            2.0 * 4.0 * h * (input + h)
        })
        .sum();
    // The highway maps the last row (C) to the batch forecast (horizon x C);
    // a cross highway's masked weights are still multiplied.
    let inputs = match highway {
        Highway::None => h,
        Highway::Full | Highway::Cross => h + c,
    };
    let head = 2.0 * inputs * (s.horizon as f64 * c) / s.horizon as f64;
    Flops { lstm, head }
}

pub(crate) struct Gemm {
    pub(crate) size: i64,
    /// GFLOP/s of a large square GEMM in the LSTM's precision, by wall time.
    pub(crate) peak: f64,
    /// The same by the calling thread's CPU time: what a core does when it
    /// is not preempted (meaningful with one libtorch thread, which
    /// computes on the calling thread).
    pub(crate) peak_cpu: f64,
    /// GFLOP/s at the LSTM's recurrent GEMM shape (wall).
    pub(crate) small: f64,
}

pub(crate) fn sync(device: Device) {
    if let Device::Cuda(i) = device {
        tch::Cuda::synchronize(i as i64);
    }
}

/// CPU time the calling thread has run, in ns (`/proc/thread-self/schedstat`).
pub(crate) fn thread_cpu_ns() -> u64 {
    std::fs::read_to_string("/proc/thread-self/schedstat")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

/// The dtype of the GEMMs the LSTM runs at `precision`.
pub(crate) fn gemm_kind(precision: Precision) -> Kind {
    match precision {
        Precision::F32 => Kind::Float,
        Precision::Bf16 => Kind::BFloat16,
    }
}

/// (wall GFLOP/s, thread-CPU GFLOP/s) of `[m, k] x [k, n]` in `kind`.
pub(crate) fn gemm_rate(
    device: Device,
    kind: Kind,
    m: i64,
    k: i64,
    n: i64,
    secs: f64,
) -> (f64, f64) {
    tch::no_grad(|| {
        let a = Tensor::randn([m, k], (kind, device));
        let b = Tensor::randn([k, n], (kind, device));
        for _ in 0..3 {
            let _ = a.mm(&b);
        }
        sync(device);
        let t = Instant::now();
        let cpu = thread_cpu_ns();
        let mut iters = 0u64;
        while t.elapsed().as_secs_f64() < secs {
            for _ in 0..4 {
                let _ = a.mm(&b);
            }
            iters += 4;
            sync(device);
        }
        let flop = 2.0 * (m * k * n) as f64 * iters as f64;
        let cpu_s = (thread_cpu_ns() - cpu) as f64 / 1e9;
        (
            flop / t.elapsed().as_secs_f64() / 1e9,
            if cpu_s > 0.0 { flop / cpu_s / 1e9 } else { 0.0 },
        )
    })
}

pub(crate) fn measure_gemm(device: Device, kind: Kind, secs: f64) -> anyhow::Result<Gemm> {
    let size = if device.is_cuda() { 8192 } else { 1024 };
    let (mut peak, mut peak_cpu) = (0.0f64, 0.0f64);
    for s in [512, size] {
        let (w, c) = gemm_rate(device, kind, s, s, s, secs / 3.0);
        peak = peak.max(w);
        peak_cpu = peak_cpu.max(c);
    }
    let small = gemm_rate(device, kind, 256, 64, 256, secs / 3.0).0;
    Ok(Gemm {
        size,
        peak,
        peak_cpu,
        small,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flops_per_reading_for_the_default_shape() {
        let spec = ModelSpec {
            channels: 8,
            outputs: 8,
            hidden: 64,
            layers: 2,
            horizon: 10,
        };
        let f = flops_per_reading(&spec, Highway::None);
        // Layer 0: 2*256*(8+64) = 36864; layer 1: 2*256*128 = 65536.
        assert_eq!(f.lstm, 102_400.0);
        // Head: 2*64*80 per batch of 10 readings.
        assert_eq!(f.head, 1024.0);
        // The highway adds [80 x 8] x [8] per batch: 2*8*80 / 10 = 128.
        assert_eq!(flops_per_reading(&spec, Highway::Cross).head, 1152.0);
    }
}
