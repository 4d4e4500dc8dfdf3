//! `forewarn version [--devices]`: the libtorch this process loaded (its
//! version and file) and, with `--devices`, what that libtorch sees of
//! CUDA and cuDNN. The GPU bundle's first stage (benches/gpu.sh) prints it:
//! what the binary runs against, which need not be what the machine's
//! Python sees.

use std::path::{Path, PathBuf};

#[derive(clap::Args, Debug)]
pub struct VersionArgs {
    /// Also initialise CUDA: availability, device count, cudart and cuDNN versions.
    #[arg(long)]
    devices: bool,
}

pub fn run(a: VersionArgs) -> anyhow::Result<()> {
    println!("forewarn {}", env!("CARGO_PKG_VERSION"));
    let maps = std::fs::read_to_string("/proc/self/maps").unwrap_or_default();
    let cpu = loaded(&maps, "libtorch_cpu.so");
    let cuda = loaded(&maps, "libtorch_cuda.so");
    match &cpu {
        Some(path) => println!("libtorch {} ({})", torch_version(path), path.display()),
        None => println!("libtorch: libtorch_cpu.so is not mapped (statically linked?)"),
    }
    match &cuda {
        Some(path) => println!("libtorch_cuda: loaded ({})", path.display()),
        None => println!("libtorch_cuda: not loaded (this binary runs on the CPU only)"),
    }
    if !a.devices {
        return Ok(());
    }
    // tch panics on a libtorch exception (a CUDA query on a CPU-only
    // libtorch, a broken driver): report it as the answer instead.
    let ask = |f: fn() -> String| {
        std::panic::catch_unwind(f).unwrap_or_else(|e| {
            let msg = e
                .downcast_ref::<String>()
                .map(String::as_str)
                .or_else(|| e.downcast_ref::<&str>().copied())
                .unwrap_or("unknown error");
            format!("error: {}", msg.lines().next().unwrap_or(msg))
        })
    };
    let available = ask(|| tch::Cuda::is_available().to_string());
    println!(
        "cuda: available {available}, {} device(s)",
        ask(|| tch::Cuda::device_count().to_string())
    );
    if available == "true" {
        println!(
            "cudart {}",
            ask(|| cudart_version(tch::utils::version_cudart()))
        );
        println!(
            "cudnn: available {}, version {}",
            ask(|| tch::Cuda::cudnn_is_available().to_string()),
            ask(|| cudnn_version(tch::utils::version_cudnn()))
        );
    }
    Ok(())
}

/// The file of the mapped shared library named `name` in `/proc/self/maps`.
fn loaded(maps: &str, name: &str) -> Option<PathBuf> {
    maps.lines()
        .filter_map(|l| l.split_whitespace().nth(5))
        .map(Path::new)
        .find(|p| p.file_name().is_some_and(|f| f == name))
        .map(Path::to_path_buf)
}

/// The torch wheel's `version.py` beside `torch/lib/`: "2.11.0+cu130 (CUDA 13.0)".
fn torch_version(lib: &Path) -> String {
    let file = lib
        .parent()
        .and_then(Path::parent)
        .map(|d| d.join("version.py"));
    let text = file.and_then(|f| std::fs::read_to_string(f).ok());
    text.as_deref()
        .and_then(parse_version_py)
        .unwrap_or_else(|| "version unknown (no torch/version.py beside it)".into())
}

fn parse_version_py(text: &str) -> Option<String> {
    let value = |key: &str| {
        text.lines()
            .find(|l| l.starts_with(key))
            .and_then(|l| l.split('=').nth(1))
            .map(|v| v.trim().trim_matches(|c| c == '\'' || c == '"').to_string())
    };
    let version = value("__version__")?;
    Some(match value("cuda") {
        Some(c) if c != "None" => format!("{version} (CUDA {c})"),
        _ => version,
    })
}

/// cudart's CUDART_VERSION: 13000 is 13.0.
fn cudart_version(v: i64) -> String {
    format!("{}.{}", v / 1000, v % 1000 / 10)
}

/// cuDNN 9's CUDNN_VERSION: 91900 is 9.19.0.
fn cudnn_version(v: i64) -> String {
    format!("{}.{}.{}", v / 10000, v % 10000 / 100, v % 100)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_libtorch_this_test_process_loaded() {
        // The test binary links libtorch like the service does.
        let _ = tch::Tensor::zeros([1], (tch::Kind::Float, tch::Device::Cpu));
        let maps = std::fs::read_to_string("/proc/self/maps").unwrap();
        let lib = loaded(&maps, "libtorch_cpu.so").expect("libtorch_cpu.so mapped");
        assert!(lib.is_file(), "{}", lib.display());
        assert_eq!(loaded(&maps, "libtorch_cpu"), None, "whole file names only");
    }

    #[test]
    fn reads_the_wheel_version_file() {
        let text = "__version__ = '2.11.0+cu130'\ndebug = False\ncuda: Optional[str] = '13.0'\n";
        assert_eq!(
            parse_version_py(text).as_deref(),
            Some("2.11.0+cu130 (CUDA 13.0)")
        );
        let cpu = "__version__ = '2.11.0+cpu'\ncuda: Optional[str] = None\n";
        assert_eq!(parse_version_py(cpu).as_deref(), Some("2.11.0+cpu"));
        assert_eq!(parse_version_py("x = 1\n"), None);
    }

    #[test]
    fn formats_cuda_library_versions() {
        assert_eq!(cudart_version(13000), "13.0");
        assert_eq!(cudart_version(12080), "12.8");
        assert_eq!(cudnn_version(91900), "9.19.0");
    }
}
