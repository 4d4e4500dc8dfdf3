//! Forewarn's model side: datasets, the stacked-LSTM forecaster on libtorch,
//! stateful truncated-BPTT training, threshold calibration through the same
//! [`forewarn_core::Engine`] the service runs, and on-disk model artifacts.

pub mod artifact;
pub mod autoencoder;
pub mod dataset;
mod error;
pub mod forecaster;
pub mod heads;
pub mod highway;
pub mod multimodal;
pub mod precision;
pub mod train;
mod weights;

use std::sync::Once;

pub use artifact::{Description, Model, ModelKind, ModelMeta, Network, load, save, save_model};
pub use dataset::{CsvOptions, Dataset, read_any, read_csv, read_tep};
pub use error::ModelError;
pub use forecaster::{LstmForecaster, ModelSpec};
pub use highway::Highway;
pub use precision::Precision;
pub use tch::Device;
pub use train::{
    EpochReport, TrainConfig, TrainedModel, calibration_errors, calibration_scores, replay_rows,
    train,
};

/// CUDA device 0 when libtorch sees one, else the CPU.
pub fn default_device() -> tch::Device {
    tch::Device::cuda_if_available()
}

/// Human-readable description of a device, for logs and `/health`.
pub fn describe_device(d: tch::Device) -> String {
    match d {
        tch::Device::Cpu => format!("cpu ({} intra-op threads)", tch::get_num_threads()),
        tch::Device::Cuda(i) => format!(
            "cuda:{i} (of {} visible, cudnn {})",
            tch::Cuda::device_count(),
            if tch::Cuda::cudnn_is_available() {
                "available"
            } else {
                "unavailable"
            }
        ),
        other => format!("{other:?}").to_lowercase(),
    }
}

static INTEROP_THREADS: Once = Once::new();

/// Sets libtorch's intra-op thread count (`n` is clamped to at least 1).
///
/// libtorch defaults to one thread per core, which oversubscribes a host
/// that also runs the consumer and HTTP server, so the service sets it
/// deliberately. The inter-op pool can only be sized once per process and
/// only before any parallel work: the first call sizes it, later calls only
/// change the intra-op count. Call it early.
pub fn set_threads(n: usize) {
    let n = i32::try_from(n.max(1)).unwrap_or(i32::MAX);
    INTEROP_THREADS.call_once(|| {
        // libtorch refuses (tch then panics) once parallel work has started;
        // the inter-op pool is a tuning knob, so a refusal is not fatal.
        let refused = std::panic::catch_unwind(|| tch::set_num_interop_threads(n)).is_err();
        if refused {
            tracing::warn!("libtorch inter-op threads already fixed; set_threads came too late");
        }
    });
    tch::set_num_threads(n);
}

/// One libtorch thread for tests. Tests run on parallel threads and each
/// calling thread gets its own spinning OpenMP team; on a small machine the
/// oversubscription made the suite some 60x slower.
#[cfg(test)]
pub(crate) fn test_init() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| set_threads(1));
}

/// Row `t` of the highway tests' plant: channel b is twice channel a
/// (plus a little deterministic noise), c is noise, and a wanders in
/// about [-1, 1] around `shift`; a `shift` training never saw is an
/// operating point the LSTM alone cannot extrapolate to.
#[cfg(test)]
pub(crate) fn related_row(t: usize, shift: f32) -> [f32; 3] {
    let noise = |k: usize| 0.05 * ((t * 31 + k * 17) as f32 * 1.37).sin();
    let a = (t as f32 * 0.05).sin() * 0.7 + (t as f32 * 0.013).cos() * 0.3 + shift;
    [a + noise(0), 2.0 * a + noise(1), noise(2)]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn set_threads_twice_is_harmless() {
        test_init();
        // Re-set the current count: tests share the process-wide pool.
        let n = tch::get_num_threads() as usize;
        assert_eq!(n, 1);
        set_threads(n);
        set_threads(n);
        assert_eq!(tch::get_num_threads() as usize, n);
        assert!(describe_device(tch::Device::Cpu).starts_with("cpu"));
    }
}
