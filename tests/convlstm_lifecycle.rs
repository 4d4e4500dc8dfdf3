//! A `convlstm` artifact's lifecycle in `forewarn serve` against the real
//! broker (Tansu): its per-device state (every ConvLSTM layer's (h, c)
//! maps, far larger than the forecaster's) is checkpointed to the state
//! topic, survives a `kill -9` and is restored on restart, the device
//! ending exactly as in one uninterrupted run; the model is
//! hot-reloaded to a second convlstm (SIGHUP), and a convlstm whose
//! model.json grid disagrees with its layout is rejected over HTTP with the
//! running model kept.

use std::path::Path;
use std::time::Duration;

use forewarn_system_tests::*;
use serde_json::{Value, json};

const DEVICE: &str = "plate-0000";
const TOKEN: &str = "convlstm-lifecycle-token-42";

/// One instance of consumer group `group`, with the group's state topic
/// and a store under `dir`, checkpointing every 2 s (as
/// tests/exactly_once.rs), reload allowed with [`TOKEN`].
fn start(
    name: &str,
    group: &str,
    broker: &Broker,
    model: &Path,
    dir: &Path,
) -> anyhow::Result<Serve> {
    std::fs::create_dir_all(dir)?;
    let store = dir.join("alerts.db");
    let state_topic = format!("forewarn.state.{group}");
    Serve::start_with_env(
        name,
        &broker.bootstrap(),
        model,
        dir,
        &format!("tokens = [\"{TOKEN}\"]\n"),
        &[
            ("FOREWARN_KAFKA__GROUP_ID", group),
            ("FOREWARN_KAFKA__STATE_TOPIC", &state_topic),
            ("FOREWARN_KAFKA__CHECKPOINT_INTERVAL", "2000"),
            (
                "FOREWARN_STORE__PATH",
                store.to_str().expect("utf-8 temp path"),
            ),
        ],
    )
}

/// Readings `DEVICE` has had applied, as the instance reports it.
async fn applied(serve: &Serve) -> anyhow::Result<u64> {
    let (_, dev) = serve.get_json(&format!("/api/v1/devices/{DEVICE}")).await?;
    Ok(dev["readings"].as_u64().unwrap_or(0))
}

async fn wait_applied(serve: &Serve, what: &str, n: u64) -> anyhow::Result<()> {
    eventually(what, Duration::from_secs(180), || async {
        Ok((applied(serve).await? == n).then_some(()))
    })
    .await
    .map_err(|e| anyhow::anyhow!("{e}\n{}", serve.proc.log()))
}

/// Waits until `serve` has checkpointed at least once and its
/// `forewarn_checkpoints_total` has stayed put for 5 s (2.5 checkpoint
/// intervals); returns the count.
async fn checkpoints_settled(serve: &Serve) -> anyhow::Result<f64> {
    let last = std::cell::Cell::new((-1.0, std::time::Instant::now()));
    eventually(
        "a checkpoint of everything applied",
        Duration::from_secs(60),
        || async {
            let n = serve
                .metric("forewarn_checkpoints_total")
                .await?
                .unwrap_or(0.0);
            if n != last.get().0 {
                last.set((n, std::time::Instant::now()));
            }
            Ok((n >= 1.0 && last.get().1.elapsed() > Duration::from_secs(5)).then_some(n))
        },
    )
    .await
}

/// The running model as `/api/v1/models` lists it.
async fn running_model(serve: &Serve) -> anyhow::Result<Value> {
    let (status, m) = serve.get_json("/api/v1/models").await?;
    anyhow::ensure!(status == 200, "GET /api/v1/models: {status} {m}");
    Ok(m["models"][0].clone())
}

/// Asserts the running model is the convlstm `version` on the plate grid.
async fn assert_running(serve: &Serve, version: &str) -> anyhow::Result<()> {
    let m = running_model(serve).await?;
    let (rows, cols) = PLATE_GRID;
    assert_eq!(m["version"], version, "{m}");
    assert_eq!(
        (&m["kind"], &m["grid"]["rows"], &m["grid"]["cols"]),
        (&"convlstm".into(), &rows.into(), &cols.into()),
        "{m}"
    );
    Ok(())
}

fn copy_model(from: &Path, to: &Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(to)?;
    for f in ["model.json", "model.safetensors"] {
        std::fs::copy(from.join(f), to.join(f))?;
    }
    Ok(())
}

fn version_of(model: &Path) -> anyhow::Result<String> {
    let meta: Value = serde_json::from_slice(&std::fs::read(model.join("model.json"))?)?;
    Ok(meta["version"].as_str().unwrap_or_default().to_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn convlstm_state_survives_kill_9_and_model_hot_reloads() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let broker = Broker::start(dir.path())?;
    let producer = broker.producer();
    let plates = simulate_plates(dir.path(), 1500, 3)?;
    for sub in ["a", "b", "run"] {
        std::fs::create_dir_all(dir.path().join(sub))?;
    }
    let trained = train_plate_model(&dir.path().join("a"), &plates.train)?;
    let v1 = version_of(&trained)?;
    // Served from a folder of its own: reloads read what is put there.
    let model = dir.path().join("live");
    copy_model(&trained, &model)?;
    let run = dir.path().join("run");

    let test = PlateRows::read(&plates.test)?;
    let messages = test.messages(DEVICE);
    let total = messages.len();
    let (_, fault_start, _) = test.fault().expect("the test half carries a fault");
    // The part before the fault (past the warm-up), the rest after the restart.
    let split = test
        .rows
        .iter()
        .position(|r| r.ts >= fault_start)
        .unwrap_or(total / 2)
        .clamp(100, total - 100);

    // 1. Served with checkpoints; the first part applied and checkpointed.
    let mut first = start("convlstm-1", "convlstm", &broker, &model, &run)?;
    first.wait_ready(Duration::from_secs(60)).await?;
    assert_running(&first, &v1).await?;
    produce(&producer, "forewarn.readings", &messages[..split]).await?;
    wait_applied(&first, "the first part applied", split as u64).await?;
    // A checkpoint of all of it: checkpoints are taken only of changed
    // devices, so once the count holds still for over two intervals the
    // last one covers every applied reading.
    let checkpoints = checkpoints_settled(&first)
        .await
        .map_err(|e| anyhow::anyhow!("{e}\n{}", first.proc.log()))?;
    eprintln!("killed after {checkpoints} checkpoints");
    signal(first.proc.child.id(), "-KILL")?;
    first.proc.child.wait()?;

    // 2. Restarted: the device's ConvLSTM state comes back from the state
    // topic, nothing is re-warmed, and the rest is applied on top of it.
    let second = start("convlstm-2", "convlstm", &broker, &model, &run)?;
    second.wait_ready(Duration::from_secs(60)).await?;
    wait_applied(&second, "the first part restored", split as u64).await?;
    assert_eq!(
        second.metric("forewarn_devices_restored_total").await?,
        Some(1.0),
        "the device restored from its checkpoint\n{}",
        second.proc.log()
    );
    assert_eq!(
        second
            .metric("forewarn_checkpoint_restore_errors_total")
            .await?,
        Some(0.0),
        "{}",
        second.proc.log()
    );
    // The checkpoint covered every applied reading: none is replayed.
    assert_eq!(
        second.metric("forewarn_readings_accepted_total").await?,
        Some(0.0),
        "readings replayed after the checkpoint"
    );
    produce(&producer, "forewarn.readings", &messages[split..]).await?;
    wait_applied(&second, "every reading applied", total as u64).await?;
    for series in [
        "forewarn_readings_duplicate_total",
        "forewarn_dead_letters_total",
        "forewarn_checkpoint_restore_errors_total",
    ] {
        assert_eq!(second.metric(series).await?, Some(0.0), "{series}");
    }
    // The restored state is the state: the device ends exactly where one
    // uninterrupted instance (its own group, the whole topic) ends, down to
    // the last batch's score, its per-cell shares and the dynamic
    // threshold, which a re-warmed ConvLSTM or detector would miss.
    let mut reference = start(
        "reference",
        "reference",
        &broker,
        &model,
        &dir.path().join("reference"),
    )?;
    reference.wait_ready(Duration::from_secs(60)).await?;
    wait_applied(&reference, "the reference run", total as u64).await?;
    let view = |dev: Value| {
        let keep = [
            "readings",
            "last_ts",
            "last_score",
            "last_shares",
            "threshold",
        ];
        keep.map(|k| (k, dev[k].clone()))
    };
    let (_, want) = reference
        .get_json(&format!("/api/v1/devices/{DEVICE}"))
        .await?;
    let (_, got) = second
        .get_json(&format!("/api/v1/devices/{DEVICE}"))
        .await?;
    assert!(
        want["last_score"].is_f64() && want["threshold"].is_f64(),
        "{want}"
    );
    assert_eq!(
        view(got),
        view(want),
        "the device after kill -9 and restore differs from one clean run"
    );
    let status = reference.proc.terminate(Duration::from_secs(20))?;
    assert!(status.success(), "{}", reference.proc.log());

    // 3. A convlstm whose grid disagrees with its layout is rejected over
    // HTTP; the running model stays.
    let reload = format!("{}/api/v1/models/reload", second.api);
    let json_path = model.join("model.json");
    let good_json = std::fs::read(&json_path)?;
    let mut bad: Value = serde_json::from_slice(&good_json)?;
    bad["grid"] = json!([3, 3]);
    std::fs::write(&json_path, serde_json::to_vec(&bad)?)?;
    let resp = reqwest::Client::new()
        .post(&reload)
        .bearer_auth(TOKEN)
        .json(&json!({}))
        .send()
        .await?;
    let status = resp.status().as_u16();
    let err: Value = resp.json().await?;
    assert_eq!(status, 422, "{err}");
    assert_eq!(err["error"]["code"], "model_rejected", "{err}");
    assert_running(&second, &v1).await?;
    assert_eq!(
        second
            .metric(r#"forewarn_model_reloads_total{outcome="rejected"}"#)
            .await?,
        Some(1.0)
    );

    // 4. SIGHUP swaps in a second convlstm (one epoch: other weights,
    // other version) while serving.
    let other = train_plate_model_epochs(&dir.path().join("b"), &plates.train, 1)?;
    let v2 = version_of(&other)?;
    assert_ne!(v1, v2, "the two trainings must differ");
    copy_model(&other, &model)?;
    signal(second.proc.child.id(), "-HUP")?;
    eventually("the SIGHUP reload", Duration::from_secs(60), || async {
        Ok((second
            .metric(r#"forewarn_model_reloads_total{outcome="ok"}"#)
            .await?
            == Some(1.0))
        .then_some(()))
    })
    .await
    .map_err(|e| anyhow::anyhow!("{e}\n{}", second.proc.log()))?;
    assert_running(&second, &v2).await?;
    let info = format!(r#"forewarn_model_info{{model="plates",version="{v2}"}}"#);
    assert_eq!(second.metric(&info).await?, Some(1.0));
    let old_info = format!(r#"forewarn_model_info{{model="plates",version="{v1}"}}"#);
    assert_eq!(second.metric(&old_info).await?, None);

    // The new model scores readings: the plate again, later in time.
    let span = test.rows.last().unwrap().ts - test.rows[0].ts + 10_000;
    let again: Vec<(String, Vec<u8>)> = test.rows[..200]
        .iter()
        .map(|r| {
            (
                DEVICE.to_owned(),
                forewarn_core::reading::encode_reading(DEVICE, r.ts + span, &r.values),
            )
        })
        .collect();
    produce(&producer, "forewarn.readings", &again).await?;
    let accepted = (total - split + again.len()) as f64;
    eventually(
        "readings after the reload",
        Duration::from_secs(120),
        || async {
            let n = second.metric("forewarn_readings_accepted_total").await?;
            Ok((n == Some(accepted)).then_some(()))
        },
    )
    .await
    .map_err(|e| anyhow::anyhow!("{e}\n{}", second.proc.log()))?;
    let (_, dev) = second
        .get_json(&format!("/api/v1/devices/{DEVICE}"))
        .await?;
    // The swapped-in engine re-warms the device (ARCHITECTURE.md: a model
    // swap is all or nothing): it counts only what it has applied.
    assert_eq!(dev["model_version"], v2.as_str(), "{dev}");
    assert_eq!(dev["readings"], again.len() as u64, "{dev}");
    assert_eq!(dev["warmed_up"], true, "{dev}");
    assert_eq!(
        second.metric("forewarn_dead_letters_total").await?,
        Some(0.0)
    );

    let mut second = second;
    let status = second.proc.terminate(Duration::from_secs(20))?;
    assert!(
        status.success(),
        "serve exited with {status}:\n{}",
        second.proc.log()
    );
    Ok(())
}
