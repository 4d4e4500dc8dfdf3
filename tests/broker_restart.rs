//! A broker restart loses nothing (docs/RELIABILITY.md row 12): Tansu on its
//! S3 storage engine (a local S3 server) is stopped mid-stream, with SIGTERM
//! and in a second case SIGKILL, and started again on the same port and
//! bucket. The service rides it out (`/readyz` 503 while the broker is down,
//! 200 after), every reading is applied exactly once and the alerts stored
//! are exactly those of one uninterrupted run over the same input.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

use forewarn_system_tests::*;

/// Where the stream is cut: rows before it are produced before the broker
/// stops, the rest after it is back.
const CUT: usize = 480;
/// The consumer group's session timeout (`kafka.session_timeout_ms`) for
/// the outages the group outlives; the tests' default, 6 s, for the one it
/// does not.
const LONG_SESSION_MS: &str = "30000";

/// The stored alerts, sorted: two instances list them in their own order.
async fn alerts(serve: &Serve) -> anyhow::Result<Vec<AlertKey>> {
    let mut stored = alert_keys(serve).await?;
    stored.sort();
    Ok(stored)
}

/// Readings each device has had applied.
async fn readings(serve: &Serve) -> anyhow::Result<BTreeMap<String, u64>> {
    let (_, body) = serve.get_json("/api/v1/devices?limit=1000").await?;
    Ok(body["devices"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|d| {
            (
                d["device"].as_str().unwrap_or_default().to_owned(),
                d["readings"].as_u64().unwrap_or(0),
            )
        })
        .collect())
}

async fn all_applied(serve: &Serve, rows: u64) -> anyhow::Result<Option<()>> {
    let r = readings(serve).await?;
    Ok((r.len() == TEP_RUNS.len() && r.values().all(|n| *n == rows)).then_some(()))
}

/// The whole stream applied and every alert the engine opened and resolved
/// in the store (alerts reach it a stage after their readings): the stored
/// alerts.
async fn settled(serve: &Serve) -> anyhow::Result<Vec<AlertKey>> {
    eventually("the whole stream applied", Duration::from_secs(120), || {
        all_applied(serve, TEP_ROWS as u64)
    })
    .await
    .map_err(|e| anyhow::anyhow!("{e}\n{}", serve.proc.log()))?;
    let last = std::sync::Mutex::new(String::new());
    let stored = eventually("alerts stored", Duration::from_secs(60), || async {
        let stored = alerts(serve).await?;
        let mut opened = 0.0;
        for severity in ["warning", "critical"] {
            let series = format!("forewarn_alerts_opened_total{{severity=\"{severity}\"}}");
            opened += serve.metric(&series).await?.unwrap_or(0.0);
        }
        let resolved = serve
            .metric("forewarn_alerts_resolved_total")
            .await?
            .unwrap_or(0.0);
        let stored_resolved = stored.iter().filter(|a| a.3.is_some()).count();
        *last.lock().unwrap() = format!("opened {opened}, resolved {resolved}; stored {stored:?}");
        Ok((opened == stored.len() as f64 && resolved == stored_resolved as f64).then_some(stored))
    })
    .await;
    stored.map_err(|e| anyhow::anyhow!("{e}: {}", last.lock().unwrap()))
}

/// One instance with its own group, state topic and SQLite store under
/// `dir/name`.
fn start(
    name: &str,
    broker: &S3Broker,
    model: &Path,
    dir: &Path,
    session_timeout_ms: &str,
) -> anyhow::Result<Serve> {
    let dir = dir.join(name);
    std::fs::create_dir_all(&dir)?;
    let store = dir.join("alerts.db");
    Serve::start_with_env(
        name,
        &broker.bootstrap(),
        model,
        &dir,
        "",
        &[
            ("FOREWARN_KAFKA__GROUP_ID", name),
            (
                "FOREWARN_KAFKA__STATE_TOPIC",
                &format!("forewarn.state.{name}"),
            ),
            ("FOREWARN_KAFKA__CHECKPOINT_INTERVAL", "2000"),
            ("FOREWARN_KAFKA__SESSION_TIMEOUT_MS", session_timeout_ms),
            (
                "FOREWARN_STORE__PATH",
                store.to_str().expect("utf-8 temp path"),
            ),
        ],
    )
}

/// Streams the first part, stops the broker with `sig` while the service is
/// working through it, starts the broker again on the same bucket, streams
/// the rest; then compares with an uninterrupted instance reading the same
/// topic.
async fn broker_restart(sig: &str, down_for: Duration, keeps_session: bool) -> anyhow::Result<()> {
    let t0 = Instant::now();
    let dir = tempfile::tempdir()?;
    let s3 = S3Server::start(dir.path())?;
    let mut broker = S3Broker::start(dir.path(), &s3)?;
    let model = train_tep_model(dir.path())?;

    let session = if keeps_session {
        LONG_SESSION_MS
    } else {
        "6000"
    };
    let mut serve = start("main", &broker, &model, dir.path(), session)?;
    serve.wait_ready(Duration::from_secs(60)).await?;
    produce(
        &broker.producer(),
        "forewarn.readings",
        &tep_runs_slice(0..CUT),
    )
    .await?;
    let at_stop = eventually("readings flowing", Duration::from_secs(60), || async {
        Ok(serve
            .metric("forewarn_readings_accepted_total")
            .await?
            .filter(|n| *n > 0.0))
    })
    .await?;

    let status = broker.stop(sig)?;
    let down = Instant::now();
    eprintln!(
        "broker stopped with {sig} ({status}) having served {at_stop} accepted readings of {}",
        TEP_RUNS.len() * CUT
    );
    eventually(
        "/readyz 503 while the broker is down",
        Duration::from_secs(30),
        || async { Ok((serve.readyz_status().await == Some(503)).then_some(())) },
    )
    .await
    .map_err(|e| anyhow::anyhow!("{e}\n{}", serve.proc.log()))?;
    let (_, why) = serve.get_json("/readyz").await?;
    eprintln!("503 after {:?}: {why}", down.elapsed());
    assert!(
        serve.proc.child.try_wait()?.is_none(),
        "serve exited while the broker was down:\n{}",
        serve.proc.log()
    );

    // Down long enough for the clients' requests to time out and retry.
    tokio::time::sleep(down_for.saturating_sub(down.elapsed())).await;
    broker.restart()?;
    let up = Instant::now();
    serve
        .wait_ready(Duration::from_secs(60))
        .await
        .map_err(|e| anyhow::anyhow!("{e}\n{}", serve.proc.log()))?;
    eprintln!(
        "ready {:?} after the restart ({:?} down)",
        up.elapsed(),
        up - down
    );
    produce(
        &broker.producer(),
        "forewarn.readings",
        &tep_runs_slice(CUT..TEP_ROWS),
    )
    .await?;
    eventually("the whole stream applied", Duration::from_secs(120), || {
        all_applied(&serve, TEP_ROWS as u64)
    })
    .await
    .map_err(|e| anyhow::anyhow!("{e}\n{}", serve.proc.log()))?;
    let input = (TEP_RUNS.len() * TEP_ROWS) as f64;
    // Readings are counted as accepted by the persist stage, once their
    // chunk is durable, which trails the device state the API shows (and
    // after a restart waits for the producer to reconnect).
    let accepted = eventually(
        "every reading counted as accepted",
        Duration::from_secs(60),
        || async {
            let n = serve
                .metric("forewarn_readings_accepted_total")
                .await?
                .unwrap_or(0.0);
            Ok((n >= input).then_some(n))
        },
    )
    .await
    .map_err(|e| anyhow::anyhow!("{e}\n{}", serve.proc.log()))?;
    let log = serve.proc.log();
    let reassigned = log.contains("partitions revoked");
    let restored = serve.metric("forewarn_devices_restored_total").await?;
    if keeps_session {
        // The group outlives the outage: nothing is read twice.
        assert!(!reassigned, "the group was rebalanced:\n{log}");
        assert_eq!(restored, Some(0.0), "no device state restored");
        assert_eq!(accepted, input, "every reading accepted exactly once");
    } else {
        // The session expired: the partitions were assigned anew, each
        // device restored from its last checkpoint and the rest of its
        // partition read again from that checkpoint's offset. Applied once
        // (every device at exactly TEP_ROWS readings, checked above); replayed
        // readings are accepted, and counted, a second time.
        assert!(
            reassigned,
            "the group kept its session across {down_for:?}:\n{log}"
        );
        assert!(accepted >= input, "{accepted} accepted of {input}");
    }
    eprintln!(
        "{sig}: {accepted} readings accepted for {input} in the input ({} replayed), \
         partitions reassigned: {reassigned}, devices restored {restored:?}",
        accepted - input
    );
    for series in [
        "forewarn_readings_duplicate_total",
        "forewarn_dead_letters_total",
        "forewarn_checkpoint_restore_errors_total",
    ] {
        assert_eq!(serve.metric(series).await?, Some(0.0), "{series}");
    }

    let reference = start("reference", &broker, &model, dir.path(), "6000")?;
    reference.wait_ready(Duration::from_secs(60)).await?;
    let want = settled(&reference).await?;
    assert_eq!(
        reference.metric("forewarn_readings_accepted_total").await?,
        Some(input),
        "the topic holds every reading once after the restart"
    );
    assert_eq!(
        reference
            .metric("forewarn_readings_duplicate_total")
            .await?,
        Some(0.0),
        "no reading is on the topic twice"
    );
    let faults = want.iter().filter(|a| a.1.starts_with("tep-fault")).count();
    assert!(
        faults >= 4,
        "the reference must alert on several fault runs to be a meaningful check: {want:?}"
    );
    // The last alerts may still be on their way to the store.
    let same = eventually(
        "the alerts of the clean run",
        Duration::from_secs(30),
        || async { Ok((alerts(&serve).await? == want).then_some(())) },
    )
    .await;
    let got = alerts(&serve).await?;
    if same.is_err() {
        assert_eq!(
            got, want,
            "alerts across a broker {sig} differ from one clean run"
        );
    }
    eprintln!(
        "{sig}: {} readings once, {} alerts identical to the clean run; {:?} in all",
        input,
        got.len(),
        t0.elapsed()
    );
    Ok(())
}

/// SIGTERM, down 3 s, within the group's session (30 s).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broker_sigterm_mid_stream_loses_nothing() -> anyhow::Result<()> {
    broker_restart("-TERM", Duration::from_secs(3), true).await
}

/// SIGKILL, down 3 s, within the group's session (30 s).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broker_sigkill_mid_stream_loses_nothing() -> anyhow::Result<()> {
    broker_restart("-KILL", Duration::from_secs(3), true).await
}

/// SIGKILL, down 10 s: past the session timeout (6 s), so the service's
/// partitions are revoked and assigned again when the broker is back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broker_sigkill_past_the_session_timeout_loses_nothing() -> anyhow::Result<()> {
    broker_restart("-KILL", Duration::from_secs(10), false).await
}
