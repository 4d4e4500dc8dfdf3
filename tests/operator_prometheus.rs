//! A real Prometheus (Debian's package, scripts/browser-deps.sh) scrapes a
//! running `forewarn serve` while it processes a faulty and a normal TEP
//! run; the test asserts through Prometheus's HTTP query API that the key
//! series exist with sensible values, and that no per-device series exist
//! except for the allow-listed device. A second test scrapes a `serve`
//! whose API is HTTPS only (`scheme: https` with the CA as `ca_file`).

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use anyhow::{Context, bail};
use forewarn_system_tests::*;
use serde_json::Value;

const SAMPLE_MS: i64 = TEP_SAMPLE_MS;
const T0: i64 = TEP_T0_MS;

/// A query's result vector: (labels, value) per series.
async fn query(prom: &str, q: &str) -> anyhow::Result<Vec<(Value, f64)>> {
    let url = reqwest::Url::parse_with_params(&format!("{prom}/api/v1/query"), &[("query", q)])?;
    let (status, body) = get_json(url.as_str()).await?;
    if status != 200 || body["status"] != "success" {
        bail!("query {q}: {status} {body}");
    }
    body["data"]["result"]
        .as_array()
        .context("result vector")?
        .iter()
        .map(|r| {
            let v: f64 = r["value"][1].as_str().context("sample value")?.parse()?;
            Ok((r["metric"].clone(), v))
        })
        .collect()
}

/// The single value of `q`, waiting until Prometheus has it and `ok` holds.
async fn value_when(prom: &str, q: &str, ok: impl Fn(f64) -> bool) -> anyhow::Result<f64> {
    let what = format!("Prometheus to show {q}");
    eventually(&what, Duration::from_secs(60), || async {
        let r = query(prom, q).await?;
        Ok(match r.as_slice() {
            [(_, v)] if ok(*v) => Some(*v),
            _ => None,
        })
    })
    .await
}

fn start_prometheus(dir: &Path, target: &str) -> anyhow::Result<(Proc, String)> {
    start_prometheus_with(
        dir,
        &format!("  - job_name: forewarn\n    static_configs:\n      - targets: ['{target}']\n"),
    )
}

/// Prometheus scraping every second with `scrape_configs` (YAML list items).
fn start_prometheus_with(dir: &Path, scrape_configs: &str) -> anyhow::Result<(Proc, String)> {
    let bin = Path::new("/usr/bin/prometheus");
    if !bin.exists() {
        bail!("prometheus is not installed: run scripts/browser-deps.sh (scripts/test.sh does)");
    }
    let config = dir.join("prometheus.yml");
    std::fs::write(
        &config,
        format!(
            "global:\n  scrape_interval: 1s\n  scrape_timeout: 900ms\n\
             scrape_configs:\n{scrape_configs}"
        ),
    )?;
    let port = free_port();
    let data = dir.join("prometheus-data");
    let proc = spawn_logged(
        "prometheus",
        Command::new(bin)
            .arg(format!("--config.file={}", config.display()))
            .arg(format!("--storage.tsdb.path={}", data.display()))
            .arg(format!("--web.listen-address=127.0.0.1:{port}")),
        dir,
    )?;
    Ok((proc, format!("http://127.0.0.1:{port}")))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prometheus_scrapes_the_key_series() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let broker = Broker::start(dir.path())?;
    let model = train_tep_model(dir.path())?;
    let serve = Serve::start(
        "serve",
        &broker.bootstrap(),
        &model,
        dir.path(),
        "[metrics]\ndevice_allow_list = [\"tep-fault-01\"]\n",
    )?;
    serve.wait_ready(Duration::from_secs(60)).await?;
    let target = serve.api.trim_start_matches("http://").to_owned();
    let (_prom, prom) = start_prometheus(dir.path(), &target)?;

    let mut messages = tep_messages("tep-fault-01", "tep/d01_te.dat");
    messages.extend(tep_messages("tep-normal", "tep/d00_te.dat"));
    let good = messages.len();
    messages.push(("tep-normal".into(), b"{not json".to_vec()));
    produce(&broker.producer(), "forewarn.readings", &messages).await?;

    // The target is up and its exposition parsed cleanly.
    value_when(&prom, "up{job=\"forewarn\"}", |v| v == 1.0).await?;
    let (_, targets) = get_json(&format!("{prom}/api/v1/targets")).await?;
    let t = &targets["data"]["activeTargets"][0];
    assert_eq!(
        (&t["health"], &t["lastError"]),
        (&"up".into(), &"".into()),
        "{t}"
    );

    // Everything processed, as Prometheus sees it.
    value_when(&prom, "forewarn_readings_accepted_total", |v| {
        v == good as f64
    })
    .await?;
    value_when(
        &prom,
        "forewarn_messages_rejected_total{reason=\"malformed_json\"}",
        |v| v == 1.0,
    )
    .await?;
    value_when(&prom, "forewarn_ready", |v| v == 1.0).await?;
    value_when(&prom, "sum(forewarn_alerts_opened_total)", |v| v >= 1.0).await?;
    let by_severity = query(&prom, "forewarn_alerts_opened_total").await?;
    let mut severities: Vec<String> = by_severity
        .iter()
        .map(|(m, _)| m["severity"].as_str().unwrap().to_owned())
        .collect();
    severities.sort();
    assert_eq!(severities, ["critical", "warning"]);

    // Event time of the newest reading, in seconds.
    let last = T0 + 959 * SAMPLE_MS;
    value_when(&prom, "forewarn_last_processed_timestamp_seconds", |v| {
        (v - last as f64 / 1000.0).abs() < 1.0
    })
    .await?;

    // Consumer lag per assigned partition, drained to zero.
    let lag = eventually(
        "lag of every partition at 0",
        Duration::from_secs(60),
        || async {
            let r = query(&prom, "forewarn_consumer_lag").await?;
            Ok((r.len() == 4 && r.iter().all(|(_, v)| *v == 0.0)).then_some(r))
        },
    )
    .await?;
    let mut partitions: Vec<&str> = lag
        .iter()
        .map(|(m, _)| m["partition"].as_str().unwrap())
        .collect();
    partitions.sort();
    assert_eq!(partitions, ["0", "1", "2", "3"]);

    // Inference batch size and latency histograms.
    value_when(&prom, "forewarn_inference_batch_size_count", |v| v >= 1.0).await?;
    value_when(
        &prom,
        "histogram_quantile(0.5, sum by (le) (forewarn_inference_duration_seconds_bucket))",
        |v| v > 0.0 && v < 10.0,
    )
    .await?;
    value_when(
        &prom,
        "forewarn_inference_batch_size_sum / forewarn_inference_batch_size_count",
        |v| (1.0..=2.0).contains(&v),
    )
    .await?;

    // Identity.
    let info = query(&prom, "forewarn_model_info").await?;
    assert_eq!(info.len(), 1, "{info:?}");
    assert_eq!(info[0].0["model"], "tep");
    assert!(info[0].0["version"].as_str().unwrap().starts_with("tep-"));
    assert_eq!(info[0].1, 1.0);
    let build = query(&prom, "forewarn_build_info").await?;
    assert_eq!(build.len(), 1);
    assert_eq!(build[0].0["version"], env!("CARGO_PKG_VERSION"));

    // Per-device series only for the allow-listed device.
    value_when(
        &prom,
        "forewarn_device_score{device=\"tep-fault-01\"}",
        |v| v > 0.0,
    )
    .await?;
    let devices = query(&prom, "count by (device) ({device!=\"\"})").await?;
    let names: Vec<&str> = devices
        .iter()
        .map(|(m, _)| m["device"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["tep-fault-01"], "{devices:?}");

    // Naming: every forewarn series is prefixed, counters end in _total.
    let (_, meta) = get_json(&format!("{prom}/api/v1/metadata")).await?;
    let meta = meta["data"].as_object().context("metadata")?;
    let mut checked = 0;
    for (name, m) in meta {
        if !name.starts_with("forewarn_") {
            continue;
        }
        checked += 1;
        let kind = m[0]["type"].as_str().unwrap();
        assert_eq!(
            kind == "counter",
            name.ends_with("_total"),
            "{name}: {kind}"
        );
    }
    assert!(
        checked >= 25,
        "only {checked} forewarn metrics in Prometheus"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prometheus_scrapes_an_https_api_with_its_ca() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let pki = Pki::new(dir.path(), "api")?;
    let broker = Broker::start(dir.path())?;
    let model = train_tep_model(dir.path())?;
    let serve = Serve::start_https(
        "serve",
        &broker.bootstrap(),
        &model,
        dir.path(),
        (&pki, &pki.server_cert, &pki.server_key),
        "",
    )?;
    serve.wait_ready(Duration::from_secs(60)).await?;
    let target = serve.api.trim_start_matches("https://").to_owned();
    // The same target twice: with the CA (up), and trusting only the
    // system roots (down: the certificate is really checked).
    let (_prom, prom) = start_prometheus_with(
        dir.path(),
        &format!(
            "  - job_name: forewarn\n    scheme: https\n    tls_config:\n      ca_file: '{}'\n    static_configs:\n      - targets: ['{target}']\n  \
             - job_name: untrusted\n    scheme: https\n    static_configs:\n      - targets: ['{target}']\n",
            pki.ca.display()
        ),
    )?;

    value_when(&prom, "up{job=\"forewarn\"}", |v| v == 1.0).await?;
    value_when(&prom, "forewarn_ready{job=\"forewarn\"}", |v| v == 1.0).await?;
    value_when(
        &prom,
        "forewarn_tls_reloads_total{job=\"forewarn\", outcome=\"rejected\"}",
        |v| v == 0.0,
    )
    .await?;
    let build = query(&prom, "forewarn_build_info").await?;
    assert_eq!(build.len(), 1, "{build:?}");
    assert_eq!(build[0].0["version"], env!("CARGO_PKG_VERSION"));
    value_when(&prom, "up{job=\"untrusted\"}", |v| v == 0.0).await?;

    let (_, targets) = get_json(&format!("{prom}/api/v1/targets")).await?;
    let active = targets["data"]["activeTargets"]
        .as_array()
        .context("active targets")?;
    let job = |name: &str| {
        active
            .iter()
            .find(|t| t["labels"]["job"] == name)
            .cloned()
            .unwrap_or_default()
    };
    let trusted = job("forewarn");
    assert_eq!(
        (&trusted["health"], &trusted["lastError"]),
        (&"up".into(), &"".into()),
        "{trusted}"
    );
    assert_eq!(
        trusted["scrapeUrl"],
        format!("https://{target}/metrics"),
        "{trusted}"
    );
    let untrusted = job("untrusted");
    assert_eq!(untrusted["health"], "down", "{untrusted}");
    assert!(
        untrusted["lastError"]
            .as_str()
            .is_some_and(|e| e.contains("certificate")),
        "{untrusted}"
    );
    Ok(())
}
