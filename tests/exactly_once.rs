//! Exactly-once alerts against the real broker: a `kill -9` mid-stream and
//! a consumer group that grows and shrinks must end with exactly the alerts
//! of one uninterrupted run (same ids, same times), every reading applied
//! once, and device state carried over rather than re-warmed.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use forewarn_system_tests::*;
use rdkafka::producer::FutureProducer;

/// Per-instance stores merged by id; a resolution seen anywhere wins (an
/// alert opened on one instance may be resolved by the next owner).
fn merge(stores: Vec<Vec<AlertKey>>) -> Vec<AlertKey> {
    let mut by_id: BTreeMap<String, AlertKey> = BTreeMap::new();
    for a in stores.into_iter().flatten() {
        match by_id.get(&a.0) {
            Some(have) if have.3.is_some() => {}
            _ => {
                by_id.insert(a.0.clone(), a);
            }
        }
    }
    by_id.into_values().collect()
}

/// Readings each device has had applied, as the instances report it.
async fn readings(apis: &[&str]) -> anyhow::Result<BTreeMap<String, u64>> {
    let mut out = BTreeMap::new();
    for api in apis {
        let (_, body) = get_json(&format!("{api}/api/v1/devices?limit=1000")).await?;
        for d in body["devices"].as_array().into_iter().flatten() {
            let n = d["readings"].as_u64().unwrap_or(0);
            let id = d["device"].as_str().unwrap_or_default().to_owned();
            let e = out.entry(id).or_insert(0);
            *e = (*e).max(n);
        }
    }
    Ok(out)
}

async fn all_applied(apis: Vec<String>, rows: u64) -> anyhow::Result<Option<()>> {
    let apis: Vec<&str> = apis.iter().map(String::as_str).collect();
    let r = readings(&apis).await?;
    Ok((r.len() == TEP_RUNS.len() && r.values().all(|n| *n == rows)).then_some(()))
}

/// `joining` becomes ready and gets partitions (the group rebalanced);
/// then `rows` of every run are streamed and must all be applied across
/// `group`.
async fn join_then_stream(
    joining: &Serve,
    group: &[&Serve],
    producer: &FutureProducer,
    rows: std::ops::Range<usize>,
) -> anyhow::Result<()> {
    joining.wait_ready(Duration::from_secs(60)).await?;
    eventually(
        "the new instance owns partitions",
        Duration::from_secs(60),
        || owns_partitions(joining),
    )
    .await
    .map_err(|e| anyhow::anyhow!("{e}\n{}", joining.proc.log()))?;
    let end = rows.end as u64;
    produce(producer, "forewarn.readings", &tep_runs_slice(rows)).await?;
    let apis: Vec<String> = group.iter().map(|s| s.api.clone()).collect();
    eventually(
        "the part applied across the group",
        Duration::from_secs(90),
        || all_applied(apis.clone(), end),
    )
    .await
}

async fn owns_partitions(s: &Serve) -> anyhow::Result<Option<()>> {
    let (_, body) = get_json(&format!("{}/readyz", s.api)).await?;
    let n = body["checks"]["partitions_assigned"].as_u64().unwrap_or(0);
    Ok((n > 0).then_some(()))
}

/// One instance with its own group, state topic and store under `dir`.
fn start(
    name: &str,
    broker: &Broker,
    model: &Path,
    dir: &Path,
    group: &str,
) -> anyhow::Result<Serve> {
    start_with_store(name, broker, model, dir, group, None)
}

/// [`start`], with the alerts in the Postgres database `store_url` if given.
fn start_with_store(
    name: &str,
    broker: &Broker,
    model: &Path,
    dir: &Path,
    group: &str,
    store_url: Option<&str>,
) -> anyhow::Result<Serve> {
    std::fs::create_dir_all(dir)?;
    let state_topic = format!("forewarn.state.{group}");
    // Instances of one run share a store (a restart finds its alerts).
    let store = dir.join("alerts.db");
    let store = store.to_str().expect("utf-8 temp path");
    let (store_key, store) = match store_url {
        Some(url) => ("FOREWARN_STORE__URL", url),
        None => ("FOREWARN_STORE__PATH", store),
    };
    Serve::start_with_env(
        name,
        &broker.bootstrap(),
        model,
        dir,
        "",
        &[
            ("FOREWARN_KAFKA__GROUP_ID", group),
            ("FOREWARN_KAFKA__STATE_TOPIC", &state_topic),
            ("FOREWARN_KAFKA__CHECKPOINT_INTERVAL", "2000"),
            (store_key, store),
        ],
    )
}

/// The alerts of one uninterrupted instance over the whole stream.
async fn reference(broker: &Broker, model: &Path, dir: &Path) -> anyhow::Result<Vec<AlertKey>> {
    let serve = start(
        "reference",
        broker,
        model,
        &dir.join("reference"),
        "reference",
    )?;
    serve.wait_ready(Duration::from_secs(60)).await?;
    eventually("reference run complete", Duration::from_secs(120), || {
        all_applied(vec![serve.api.clone()], TEP_ROWS as u64)
    })
    .await?;
    // Readings count as applied when the engine takes them; their alerts
    // reach the store a stage later. Wait until it holds every alert the
    // engine opened and resolved (a loaded machine lags here).
    let want =
        eventually(
            "reference alerts stored",
            Duration::from_secs(60),
            || async {
                let stored = merge(vec![alert_keys(&serve).await?]);
                let mut opened = 0.0;
                for severity in ["warning", "critical"] {
                    let series = format!("forewarn_alerts_opened_total{{severity=\"{severity}\"}}");
                    opened += serve.metric(&series).await?.unwrap_or(0.0);
                }
                let resolved = serve.metric("forewarn_alerts_resolved_total").await?;
                let stored_resolved = stored.iter().filter(|a| a.3.is_some()).count();
                Ok((opened == stored.len() as f64
                    && resolved.unwrap_or(0.0) == stored_resolved as f64)
                    .then_some(stored))
            },
        )
        .await?;
    let opened = want.iter().filter(|a| a.1.starts_with("tep-fault")).count();
    assert!(
        opened >= 4,
        "the reference must alert on several fault runs to be a meaningful check: {want:?}"
    );
    Ok(want)
}

/// `kill -9` after a checkpoint and more processing: the restarted service
/// restores device state from the state topic, replays from the checkpoint,
/// and ends with exactly the reference alerts, no reading skipped or applied
/// twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_mid_stream_keeps_alerts_exactly_once() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let broker = Broker::start(dir.path())?;
    let model = train_tep_model(dir.path())?;
    let producer = broker.producer();
    let crash_dir = dir.path().join("crash");

    let mut first = start("crash-1", &broker, &model, &crash_dir, "crash")?;
    first.wait_ready(Duration::from_secs(60)).await?;
    produce(&producer, "forewarn.readings", &tep_runs_slice(0..400)).await?;
    eventually("first part applied", Duration::from_secs(60), || {
        all_applied(vec![first.api.clone()], 400)
    })
    .await?;
    // A checkpoint taken after all of it (the timer may have fired mid-way).
    let applied_at = first
        .metric("forewarn_checkpoints_total")
        .await?
        .unwrap_or(0.0);
    eventually(
        "a checkpoint of the first part",
        Duration::from_secs(30),
        || async {
            let n = first
                .metric("forewarn_checkpoints_total")
                .await?
                .unwrap_or(0.0);
            Ok((n > applied_at).then_some(()))
        },
    )
    .await?;
    let checkpoints_before = first.metric("forewarn_checkpoints_total").await?;
    produce(&producer, "forewarn.readings", &tep_runs_slice(400..700)).await?;
    eventually("second part applied", Duration::from_secs(60), || {
        all_applied(vec![first.api.clone()], 700)
    })
    .await?;
    let before_kill = alert_keys(&first).await?;
    let checkpoints_at_kill = first.metric("forewarn_checkpoints_total").await?;
    signal(first.proc.child.id(), "-KILL")?;
    first.proc.child.wait()?;
    eprintln!(
        "killed with {} alerts stored; checkpoints {checkpoints_before:?} -> {checkpoints_at_kill:?}",
        before_kill.len()
    );

    let second = start("crash-2", &broker, &model, &crash_dir, "crash")?;
    second.wait_ready(Duration::from_secs(60)).await?;
    produce(
        &producer,
        "forewarn.readings",
        &tep_runs_slice(700..TEP_ROWS),
    )
    .await?;
    eventually(
        "stream complete after restart",
        Duration::from_secs(120),
        || all_applied(vec![second.api.clone()], TEP_ROWS as u64),
    )
    .await
    .map_err(|e| anyhow::anyhow!("{e}\n{}", second.proc.log()))?;
    let restored = second.metric("forewarn_devices_restored_total").await?;
    assert_eq!(
        restored,
        Some(TEP_RUNS.len() as f64),
        "every device restored from its checkpoint"
    );
    let replayed = second
        .metric("forewarn_readings_accepted_total")
        .await?
        .unwrap_or(0.0) as usize
        - TEP_RUNS.len() * (TEP_ROWS - 700);
    eprintln!("restart replayed {replayed} readings from the last checkpoint");
    for series in [
        "forewarn_readings_duplicate_total",
        "forewarn_dead_letters_total",
        "forewarn_checkpoint_restore_errors_total",
    ] {
        assert_eq!(second.metric(series).await?, Some(0.0), "{series}");
    }

    let got = merge(vec![alert_keys(&second).await?]);
    eprintln!("{} alerts after the restart", got.len());
    let want = reference(&broker, &model, dir.path()).await?;
    assert_eq!(got, want, "alerts after kill -9 differ from one clean run");
    Ok(())
}

/// Two instances split the partitions, a third joins, the first leaves:
/// every move hands device state over through the state topic, and the
/// group ends with exactly the reference alerts, listed alike by every
/// instance from their shared Postgres store, and every reading applied
/// once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scale_out_and_in_hands_state_over() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let broker = Broker::start(dir.path())?;
    let model = train_tep_model(dir.path())?;
    let producer = broker.producer();
    let group = "scale";
    let pg = PgCluster::start().map_err(anyhow::Error::msg)?;
    let url = pg.create_database();
    let start = |name: &str, sub: &str| {
        start_with_store(
            name,
            &broker,
            &model,
            &dir.path().join(sub),
            group,
            Some(&url),
        )
    };

    let mut a = start("scale-a", "a")?;
    a.wait_ready(Duration::from_secs(60)).await?;
    produce(&producer, "forewarn.readings", &tep_runs_slice(0..300)).await?;
    eventually("part 1 on one instance", Duration::from_secs(60), || {
        all_applied(vec![a.api.clone()], 300)
    })
    .await?;

    let b = start("scale-b", "b")?;
    join_then_stream(&b, &[&a, &b], &producer, 300..550).await?;
    let c = start("scale-c", "c")?;
    join_then_stream(&c, &[&a, &b, &c], &producer, 550..750).await?;
    let alerts_a = alert_keys(&a).await?;
    let status = a.proc.terminate(Duration::from_secs(30))?;
    assert!(status.success(), "{}", a.proc.log());
    produce(
        &producer,
        "forewarn.readings",
        &tep_runs_slice(750..TEP_ROWS),
    )
    .await?;
    eventually(
        "stream complete on b and c",
        Duration::from_secs(120),
        || all_applied(vec![b.api.clone(), c.api.clone()], TEP_ROWS as u64),
    )
    .await
    .map_err(|e| anyhow::anyhow!("{e}\n{}\n{}", b.proc.log(), c.proc.log()))?;

    for s in [&b, &c] {
        for series in [
            "forewarn_readings_duplicate_total",
            "forewarn_dead_letters_total",
            "forewarn_checkpoint_restore_errors_total",
        ] {
            assert_eq!(s.metric(series).await?, Some(0.0), "{series}");
        }
        assert!(
            s.metric("forewarn_devices_restored_total")
                .await?
                .unwrap_or(0.0)
                > 0.0,
            "state was handed over, not re-warmed"
        );
    }
    for (name, s) in [("b", &b), ("c", &c)] {
        eprintln!(
            "{name}: {:?} devices restored over {:?} checkpoints",
            s.metric("forewarn_devices_restored_total").await?,
            s.metric("forewarn_checkpoints_total").await?
        );
    }
    let log = b.proc.log();
    assert!(
        log.lines()
            .any(|l| l.contains("alert store open") && l.contains("postgres://")),
        "b writes to the shared Postgres store:\n{log}"
    );
    let got = alert_keys(&b).await?;
    eprintln!("{} alerts across the group", got.len());
    assert_eq!(
        alert_keys(&c).await?,
        got,
        "instances sharing a store list the same alerts"
    );
    assert!(
        alerts_a.iter().all(|x| got.iter().any(|y| y.0 == x.0)),
        "alerts seen by the instance that left are kept"
    );
    let want = reference(&broker, &model, dir.path()).await?;
    // b's last alerts may still be on their way to the store.
    let settled = eventually(
        "the group's alerts equal the reference",
        Duration::from_secs(30),
        || async { Ok((merge(vec![alert_keys(&b).await?]) == want).then_some(())) },
    )
    .await;
    if settled.is_err() {
        assert_eq!(
            merge(vec![alert_keys(&b).await?]),
            want,
            "alerts across rebalances differ from one clean run"
        );
    }
    Ok(())
}
