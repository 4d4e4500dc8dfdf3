//! Where libtorch runs: the device a model is placed on and the threads
//! it computes with.

use std::sync::Once;

use crate::error::ModelError;

/// CUDA device 0 when libtorch sees one, else the CPU.
pub fn default_device() -> tch::Device {
    tch::Device::cuda_if_available()
}

/// `auto` (a GPU when there is one), `cpu`, `cuda` or `cuda:N`: the
/// spelling of model.toml's, `serve`'s and the command lines' `device`.
pub fn parse_device(s: &str) -> Result<tch::Device, ModelError> {
    Ok(match s {
        "auto" => default_device(),
        "cpu" => tch::Device::Cpu,
        "cuda" => tch::Device::Cuda(0),
        other => match other.strip_prefix("cuda:").and_then(|n| n.parse().ok()) {
            Some(n) => tch::Device::Cuda(n),
            None => {
                return Err(ModelError::Config(format!(
                    "expected auto, cpu, cuda or cuda:N, got {other:?}"
                )));
            }
        },
    })
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn set_threads_twice_is_harmless() {
        crate::test_init();
        // Re-set the current count: tests share the process-wide pool.
        let n = tch::get_num_threads() as usize;
        assert_eq!(n, 1);
        set_threads(n);
        set_threads(n);
        assert_eq!(tch::get_num_threads() as usize, n);
        assert!(describe_device(tch::Device::Cpu).starts_with("cpu"));
    }

    #[test]
    fn devices_are_spelled_as_in_the_configuration() {
        assert_eq!(parse_device("cpu").unwrap(), tch::Device::Cpu);
        assert_eq!(parse_device("cuda").unwrap(), tch::Device::Cuda(0));
        assert_eq!(parse_device("cuda:3").unwrap(), tch::Device::Cuda(3));
        let e = parse_device("gpu").unwrap_err().to_string();
        assert!(e.contains("expected auto, cpu, cuda or cuda:N"), "{e}");
    }
}
