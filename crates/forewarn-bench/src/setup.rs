//! The bench's surroundings: its output lines, the local broker and the
//! Python peer.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::{Context, bail};

use crate::args::BenchArgs;

pub(crate) fn say(line: String) {
    eprintln!("[bench] {line}");
}

pub(crate) fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

/// Where `benches/` and `scripts/` are: the current directory when it has
/// them, else the source tree this binary was built from.
pub(crate) fn repo_root() -> PathBuf {
    let cwd = std::env::current_dir().unwrap_or_default();
    if cwd.join("benches/peer.py").exists() {
        return cwd;
    }
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

pub(crate) fn ensure_broker(root: &Path, brokers: &str) -> anyhow::Result<()> {
    let first = brokers.split(',').next().unwrap_or_default().trim();
    let reachable = |addr: &str| {
        use std::net::ToSocketAddrs;
        addr.to_socket_addrs()
            .ok()
            .and_then(|mut a| a.next())
            .is_some_and(|a| {
                std::net::TcpStream::connect_timeout(&a, Duration::from_secs(1)).is_ok()
            })
    };
    if reachable(first) {
        say(format!("broker: reusing {first}"));
        return Ok(());
    }
    let Some(port) = first.strip_prefix("127.0.0.1:") else {
        bail!("no broker at {first} and it is not local, so none can be started");
    };
    say(format!("broker: starting a local one on port {port}"));
    let status = Command::new("bash")
        .arg(root.join("scripts/broker.sh"))
        .arg("start")
        .env("FOREWARN_BROKER_PORT", port)
        .current_dir(root)
        .status()
        .context("running scripts/broker.sh")?;
    if !status.success() || !reachable(first) {
        bail!("scripts/broker.sh could not start a broker on {first}");
    }
    Ok(())
}

// ---------------------------------------------------------------------------
// The Python peer

pub(crate) fn run_peer(
    root: &Path,
    args: &BenchArgs,
    topic: &str,
    run_id: i64,
) -> anyhow::Result<f64> {
    let setup = Command::new("bash")
        .arg(root.join("benches/peer-setup.sh"))
        .current_dir(root)
        .status()?;
    if !setup.success() {
        bail!("benches/peer-setup.sh failed");
    }
    say(format!(
        "peer: Python consumer on {topic} for at most {} s",
        args.peer_seconds
    ));
    let py_path = root.join(".tools/peer");
    let out = Command::new("python3")
        .arg(root.join("benches/peer.py"))
        .args([
            "--brokers",
            &args.brokers,
            "--topic",
            topic,
            "--group",
            &format!("forewarn.bench.{run_id}.peer"),
        ])
        .args(["--seconds", &args.peer_seconds.to_string()])
        .args([
            "--channels",
            &args.channels.to_string(),
            "--hidden",
            &args.hidden.to_string(),
        ])
        .args([
            "--layers",
            &args.layers.to_string(),
            "--horizon",
            &args.horizon.to_string(),
        ])
        .args(["--window", &args.window.to_string()])
        .env("PYTHONPATH", py_path)
        .stderr(std::process::Stdio::inherit())
        .output()
        .context("running python3 benches/peer.py")?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        bail!("the peer failed ({}): {stdout}", out.status);
    }
    stdout
        .lines()
        .rev()
        .find_map(|l| l.strip_prefix("peer_readings_per_s="))
        .and_then(|v| v.trim().parse().ok())
        .with_context(|| format!("the peer printed no rate: {stdout}"))
}
