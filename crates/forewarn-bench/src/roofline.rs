//! FLOPs per reading and the GEMM rate libtorch reaches here (the roofline).

use std::time::Instant;

use forewarn_model::convlstm::ConvLstmSpec;
use forewarn_model::{Highway, ModelSpec, Precision};

use tch::{Device, Kind, Tensor};

// ---------------------------------------------------------------------------
// FLOPs and the roofline

#[derive(Debug, Clone, Copy)]
pub(crate) struct Flops {
    /// Per reading: every recurrent layer's GEMMs (the LSTM's input and
    /// recurrent GEMMs; the convlstm's gate convolutions).
    pub(crate) lstm: f64,
    /// Per reading: the output head (the forecaster's runs once per batch,
    /// on the last step only; the convlstm's 1x1 conv on every frame).
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

/// Multiply-add FLOPs (2 each) the convlstm needs per reading (one frame
/// of one device), as `ConvLstm::forward_seq` computes them: per layer, the
/// gates' `kernel x kernel` conv from `[input ; h]` (`1 + context` maps
/// into the first layer, `filters` into the others, plus `filters` of `h`)
/// to `4 x filters` maps at every cell ("same" padding: the zeros at the
/// border are multiplied too, as im2col does); then the head, a 1x1 conv
/// from `filters` maps to `horizon` frames, which runs on every frame,
/// and with a highway its linear map from every channel of the frame to
/// the `horizon x outputs` forecast, on every frame too (a cross
/// highway's masked weights are still multiplied). Gate nonlinearities,
/// bias adds and the grid gather are not counted.
pub(crate) fn convlstm_flops_per_reading(s: &ConvLstmSpec, highway: Highway) -> Flops {
    let cells = (s.rows * s.cols) as f64;
    let (f, k2) = (s.filters as f64, (s.kernel * s.kernel) as f64);
    let maps = 1.0 + s.context().len() as f64;
    let lstm: f64 = (0..s.layers)
        .map(|l| {
            let input = if l == 0 { maps } else { f };
            2.0 * (input + f) * 4.0 * f * k2 * cells
        })
        .sum();
    let forecast = (s.horizon * s.outputs()) as f64;
    let highway = match highway {
        Highway::None => 0.0,
        Highway::Full | Highway::Cross => 2.0 * s.channels as f64 * forecast,
    };
    let head = 2.0 * f * s.horizon as f64 * cells + highway;
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
    /// GFLOP/s at the model's own GEMM shape (wall): the LSTM's recurrent
    /// GEMM, the convlstm's im2col gate GEMM.
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

/// The large-GEMM peak, and the rate at `small` (`[m, k, n]`).
pub(crate) fn measure_gemm(
    device: Device,
    kind: Kind,
    secs: f64,
    small: [i64; 3],
) -> anyhow::Result<Gemm> {
    let size = if device.is_cuda() { 8192 } else { 1024 };
    let (mut peak, mut peak_cpu) = (0.0f64, 0.0f64);
    for s in [512, size] {
        let (w, c) = gemm_rate(device, kind, s, s, s, secs / 3.0);
        peak = peak.max(w);
        peak_cpu = peak_cpu.max(c);
    }
    let small = gemm_rate(device, kind, small[0], small[1], small[2], secs / 3.0).0;
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

    fn grid(rows: usize, cols: usize, context: usize, layers: usize) -> ConvLstmSpec {
        let cells = rows * cols;
        ConvLstmSpec {
            channels: cells + context,
            rows,
            cols,
            cells: (0..cells).map(Some).collect(),
            kernel: 3,
            filters: 16,
            layers,
            horizon: 10,
        }
    }

    #[test]
    fn convlstm_flops_per_reading_for_an_8x8_grid() {
        // 8x8, 2 layers of 16 filters, kernel 3, horizon 10: layer 0 maps
        // 1 + 16 into 64 gates, 2*17*64*9*64 = 1_253_376; layer 1 maps
        // 16 + 16, 2*32*64*9*64 = 2_359_296; head 2*16*10*64 = 20_480.
        let f = convlstm_flops_per_reading(&grid(8, 8, 0, 2), Highway::None);
        assert_eq!(f.lstm, 3_612_672.0);
        assert_eq!(f.head, 20_480.0);
        assert_eq!(f.total(), 3_633_152.0);
        // The highway maps the frame's 64 channels to 10 x 64 forecasts:
        // 2*64*640 = 81_920 more; cross multiplies as many.
        for hw in [Highway::Full, Highway::Cross] {
            let f = convlstm_flops_per_reading(&grid(8, 8, 0, 2), hw);
            assert_eq!((f.lstm, f.head), (3_612_672.0, 20_480.0 + 81_920.0));
        }
        // Two context channels are two more input maps of layer 0:
        // 2*19*64*9*64 = 1_400_832; one layer only.
        let f = convlstm_flops_per_reading(&grid(8, 8, 2, 1), Highway::None);
        assert_eq!(f.lstm, 1_400_832.0);
        // A 2x3 grid with a gap still convolves all 6 cells.
        let mut s = grid(2, 3, 0, 1);
        s.cells[5] = None;
        s.channels = 5;
        assert_eq!(
            convlstm_flops_per_reading(&s, Highway::None).lstm,
            2.0 * 17.0 * 64.0 * 9.0 * 6.0
        );
        assert_eq!(
            convlstm_flops_per_reading(&s, Highway::None).head,
            2.0 * 16.0 * 10.0 * 6.0
        );
    }
}
