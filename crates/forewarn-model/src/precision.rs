//! Inference precision of the forecaster: f32 (the default) or bf16.
//!
//! Training, calibration and the artifact are always f32; bf16 is a
//! setting of the process that runs the model (`serve`'s `model.precision`,
//! `forewarn bench --precision`, `forewarn evaluate --precision`), applied
//! by casting a copy of the LSTM's weights at load
//! ([`crate::LstmForecaster::set_precision`]).
//!
//! libtorch does not refuse bf16 where the hardware lacks it: on libtorch
//! 2.13 (measured there) a CPU without AVX512_BF16 or AMX runs the same LSTM
//! through oneDNN's emulation (AVX-512 without BF16: 8.3 ms per
//! 256-device call against 3.5 ms in f32) or, below AVX-512, through the
//! reference path (60 ms, GEMM at 0.8 GFLOP/s), with correct results. So
//! a CPU without native bf16 is refused here, with the reason, rather than
//! run 2–17x slower than f32 without a word.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// Numeric precision of the forecaster's inference (`Forecaster::step`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Precision {
    /// Everything in f32, as trained.
    #[default]
    F32,
    /// The LSTM (99 % of the FLOPs) in bf16; inputs, carried state,
    /// head, highway and forecasts stay f32 (see `LstmForecaster::step`).
    Bf16,
}

impl Precision {
    pub fn as_str(self) -> &'static str {
        match self {
            Precision::F32 => "f32",
            Precision::Bf16 => "bf16",
        }
    }
}

impl fmt::Display for Precision {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Precision {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s.to_ascii_lowercase().as_str() {
            "f32" | "fp32" | "float32" => Ok(Precision::F32),
            "bf16" | "bfloat16" => Ok(Precision::Bf16),
            other => Err(format!("expected f32 or bf16, got {other:?}")),
        }
    }
}

/// The CPU features native bf16 compute needs, as detected at run time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CpuBf16 {
    /// `AVX512_BF16` (dot products of bf16 pairs; Cooper Lake, Zen 4 and later).
    pub avx512_bf16: bool,
    /// `AMX_BF16` (tile matrix multiply; Sapphire Rapids and later).
    pub amx_bf16: bool,
}

impl CpuBf16 {
    /// The features of the CPU this process runs on.
    pub fn detect() -> Self {
        #[cfg(target_arch = "x86_64")]
        {
            // CPUID leaf 7, sub-leaf 0: EDX bit 22 is AMX-BF16 (std's
            // detection of it is not stable yet).
            let leaf7 = std::arch::x86_64::__cpuid_count(7, 0);
            Self {
                avx512_bf16: std::arch::is_x86_feature_detected!("avx512bf16"),
                amx_bf16: (leaf7.edx >> 22) & 1 == 1,
            }
        }
        #[cfg(not(target_arch = "x86_64"))]
        {
            Self {
                avx512_bf16: false,
                amx_bf16: false,
            }
        }
    }

    /// `Ok` where bf16 runs natively; otherwise why it is refused.
    pub fn check(self) -> Result<(), String> {
        if self.avx512_bf16 || self.amx_bf16 {
            return Ok(());
        }
        Err(format!(
            "bf16 inference needs a CPU with AVX512_BF16 or AMX_BF16 (this {} has neither); \
             libtorch would emulate bf16 at 2-17x the cost of f32. Use precision f32",
            if cfg!(target_arch = "x86_64") {
                "x86-64 CPU"
            } else {
                "non-x86 CPU, where bf16 is not verified,"
            }
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_prints_and_serializes() {
        for (s, p) in [
            ("f32", Precision::F32),
            ("FP32", Precision::F32),
            ("bf16", Precision::Bf16),
            ("bfloat16", Precision::Bf16),
        ] {
            assert_eq!(s.parse::<Precision>().unwrap(), p);
        }
        assert!(
            "f16"
                .parse::<Precision>()
                .unwrap_err()
                .contains("f32 or bf16")
        );
        assert_eq!(Precision::default(), Precision::F32);
        assert_eq!(Precision::Bf16.to_string(), "bf16");
        assert_eq!(serde_json::to_string(&Precision::Bf16).unwrap(), "\"bf16\"");
        assert_eq!(
            serde_json::from_str::<Precision>("\"f32\"").unwrap(),
            Precision::F32
        );
    }

    #[test]
    fn a_cpu_without_native_bf16_is_refused_with_the_reason() {
        let none = CpuBf16 {
            avx512_bf16: false,
            amx_bf16: false,
        };
        let e = none.check().unwrap_err();
        assert!(
            e.contains("AVX512_BF16 or AMX_BF16") && e.contains("f32"),
            "{e}"
        );
        for ok in [
            CpuBf16 {
                avx512_bf16: true,
                amx_bf16: false,
            },
            CpuBf16 {
                avx512_bf16: false,
                amx_bf16: true,
            },
        ] {
            ok.check().unwrap();
        }
    }
}
