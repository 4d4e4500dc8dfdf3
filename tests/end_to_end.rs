//! The whole system against a real broker: train on Tennessee Eastman normal
//! data, serve, stream a fault run and a normal run as two devices, and check
//! what operators would see over HTTP.

use std::process::Command;
use std::time::Duration;

use forewarn_core::reading::encode_reading;
use forewarn_system_tests::*;

/// TEP samples every 3 minutes; the test runs' faults start after sample 160.
const SAMPLE_MS: i64 = TEP_SAMPLE_MS;
const FAULT_START_SAMPLE: i64 = 160;
const T0: i64 = TEP_T0_MS;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tep_fault_is_alerted_and_normal_run_is_not() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let broker = Broker::start(dir.path())?;

    // 1. Train on the normal-operation run, with train's defaults:
    // evaluate's default model and detector (docs/ACCURACY.md's default row).
    let (model, train) = train_tep(dir.path(), &["--name", "tep", "--device", "cpu"])?;
    let train_log = String::from_utf8_lossy(&train.stderr);
    assert!(
        train_log.contains("epoch   1/"),
        "training shows progress:\n{train_log}"
    );
    let train_out = String::from_utf8_lossy(&train.stdout);
    assert!(
        train_out.contains("detector dynamic"),
        "train calibrates the default detector:\n{train_out}"
    );
    assert!(model.join("model.json").exists() && model.join("model.safetensors").exists());

    // 1b. The fault classifier that names the likely fault of an alert:
    // the softmax head trained on the labelled fault runs dNN.dat (and the
    // normal run), reported on the test runs.
    let classifier = train_tep_classifier(dir.path())?;

    // 2. Serve, diagnosing alerts with it.
    let http_port = free_port();
    let config = dir.path().join("forewarn.toml");
    std::fs::write(
        &config,
        format!(
            "[kafka]\nbrokers = \"{}\"\ngroup_id = \"e2e\"\nsession_timeout_ms = 6000\ntopic_partitions = 2\n\
             [model]\npath = \"{}\"\ndevice = \"cpu\"\ndiagnosis = \"{}\"\n[store]\npath = \"{}\"\n[http]\nlisten = \"127.0.0.1:{http_port}\"\n",
            broker.bootstrap(),
            model.display(),
            classifier.display(),
            dir.path().join("alerts.db").display()
        ),
    )?;
    let mut serve = spawn_logged(
        "serve",
        Command::new(forewarn_bin())
            .arg("serve")
            .arg("--config")
            .arg(&config)
            .env("RUST_LOG", "info"),
        dir.path(),
    )?;
    let api = format!("http://127.0.0.1:{http_port}");
    let (status, _) = eventually("/livez", Duration::from_secs(30), || async {
        Ok(get_json(&format!("{api}/livez"))
            .await
            .ok()
            .filter(|(s, _)| *s == 200))
    })
    .await?;
    assert_eq!(status, 200);
    eventually("/readyz 200", Duration::from_secs(60), || async {
        Ok(get_json(&format!("{api}/readyz"))
            .await
            .ok()
            .filter(|(s, _)| *s == 200))
    })
    .await?;

    // 3. Stream every TEP test run as its own device (fault NN starts after
    // sample 160), the normal test run as another, and two bad messages.
    let mut messages = Vec::new();
    for n in 1..=21 {
        messages.extend(tep_messages(
            &format!("tep-fault-{n:02}"),
            &format!("tep/d{n:02}_te.dat"),
        ));
    }
    messages.extend(tep_messages("tep-normal", "tep/d00_te.dat"));
    let total_good = messages.len();
    messages.insert(300, ("tep-normal".into(), b"{not json".to_vec()));
    messages.insert(
        301,
        (
            "tep-fault-01".into(),
            br#"{"device":"tep-fault-01","ts":1,"values":[1,2,3]}"#.to_vec(),
        ),
    );
    // A reading from the year 2100 would make every later one of its device
    // look out of order: rejected, and the device keeps working.
    let far_future = read_tep(&shared_data("tep/d00_te.dat"))?.remove(0);
    messages.insert(
        302,
        (
            "tep-normal".into(),
            encode_reading("tep-normal", 4_102_444_800_000, &far_future),
        ),
    );
    let producer = broker.producer();
    produce(&producer, "forewarn.readings", &messages).await?;

    // 4. Everything consumed, through the bad messages.
    let metrics = eventually(
        "all messages consumed",
        Duration::from_secs(120),
        || async {
            let m = get_text(&format!("{api}/metrics")).await?;
            Ok(
                (metric(&m, "forewarn_readings_accepted_total") == Some(total_good as f64))
                    .then_some(m),
            )
        },
    )
    .await?;
    assert_eq!(
        metric(&metrics, "forewarn_messages_consumed_total"),
        Some((total_good + 3) as f64)
    );
    assert_eq!(
        metric(
            &metrics,
            r#"forewarn_messages_rejected_total{reason="malformed_json"}"#
        ),
        Some(1.0)
    );
    assert_eq!(
        metric(
            &metrics,
            r#"forewarn_messages_rejected_total{reason="wrong_channel_count"}"#
        ),
        Some(1.0)
    );
    assert_eq!(
        metric(
            &metrics,
            r#"forewarn_messages_rejected_total{reason="future_timestamp"}"#
        ),
        Some(1.0)
    );
    assert_eq!(metric(&metrics, "forewarn_dead_letters_total"), Some(3.0));
    let opened: f64 = ["warning", "critical"]
        .iter()
        .filter_map(|s| {
            metric(
                &metrics,
                &format!("forewarn_alerts_opened_total{{severity=\"{s}\"}}"),
            )
        })
        .sum();
    assert!(opened >= 1.0, "alerts opened counter: {opened}");

    // 5. Per run: first alert relative to the fault onset, and what its
    // diagnosis names. Printed for docs/TEP.md; fault 1 (a feed-ratio
    // step) must be caught, and never before it starts.
    let fault_start = T0 + FAULT_START_SAMPLE * SAMPLE_MS;
    eprintln!(
        "run          alerts  first alert (samples after onset; negative = false alarm before onset)  diagnosis (top 3: class probability)"
    );
    let mut diagnosed = Diagnosed::default();
    for n in 1..=21u8 {
        let (status, body) =
            get_json(&format!("{api}/api/v1/alerts?device=tep-fault-{n:02}")).await?;
        assert_eq!(status, 200, "{body}");
        let alerts = body["alerts"].as_array().unwrap();
        let first = alerts.iter().min_by_key(|a| a["opened_at"].as_i64());
        let delay = first.map_or("-".to_string(), |a| {
            ((a["opened_at"].as_i64().unwrap() - fault_start) / SAMPLE_MS).to_string()
        });
        let top = first
            .map(|a| diagnosed.record(n, &a["diagnosis"]))
            .unwrap_or_default();
        eprintln!("tep-fault-{n:02} {:>6}  {delay:>6}  {top}", alerts.len());
    }
    eprintln!(
        "diagnosis of the first alert, over the {} alerted runs of observable faults: top-1 {}/{} = {:.2}, top-3 {}/{} = {:.2}",
        diagnosed.runs,
        diagnosed.top1,
        diagnosed.runs,
        diagnosed.top1 as f64 / diagnosed.runs.max(1) as f64,
        diagnosed.top3,
        diagnosed.runs,
        diagnosed.top3 as f64 / diagnosed.runs.max(1) as f64,
    );
    assert!(
        diagnosed.runs >= 12,
        "too few runs alerted to judge: {}",
        diagnosed.runs
    );
    // Top-3 0.85: fault 21 (the stream-4 valve fixed in place), alerted
    // through its frozen valve, is one the classifier does not name (its
    // windows differ from normal ones by one flat channel); with fault 13
    // (a slow drift), 2 of the 17 alerted runs miss the top 3.
    assert!(
        diagnosed.top3 * 20 >= diagnosed.runs * 17 && diagnosed.top1 * 4 >= diagnosed.runs * 3,
        "diagnosis below top-1 0.75 / top-3 0.85"
    );
    // Fault 21's alert names the valve that froze: the frozen-channel
    // rule, which the forecast error (following the valve's last value)
    // cannot replace.
    let (_, body) = get_json(&format!("{api}/api/v1/alerts?device=tep-fault-21")).await?;
    let first = (body["alerts"].as_array().unwrap().iter())
        .min_by_key(|a| a["opened_at"].as_i64())
        .expect("fault 21 alerted");
    assert_eq!(first["contributors"][0]["channel"], "xmv_4", "{first}");
    assert!(
        first["opened_at"].as_i64().unwrap() > fault_start,
        "{first}"
    );
    // The alerts topic carries the diagnosis too.
    assert!(
        found_on_topic(
            &broker.bootstrap(),
            &[],
            "forewarn.alerts",
            2,
            "\"diagnosis\":{"
        )
        .await?,
        "no alert with a diagnosis on forewarn.alerts"
    );
    let (_, body) = get_json(&format!("{api}/api/v1/alerts?device=tep-fault-01")).await?;
    let alerts = body["alerts"].as_array().unwrap();
    assert!(!alerts.is_empty(), "no alert for the fault 1 run: {body}");
    let first = alerts
        .iter()
        .map(|a| a["opened_at"].as_i64().unwrap())
        .min()
        .unwrap();
    assert!(
        first >= fault_start,
        "alert opened at {first}, before the fault at {fault_start}: {body}"
    );
    let a = &alerts[0];
    assert_eq!(a["device"], "tep-fault-01");
    assert_eq!(a["model"], "tep");
    assert!(a["score"].as_f64().unwrap() > a["threshold"].as_f64().unwrap());
    assert!(!a["contributors"].as_array().unwrap().is_empty());
    let id = a["id"].as_str().unwrap();
    let (status, one) = get_json(&format!("{api}/api/v1/alerts/{id}")).await?;
    assert_eq!((status, &one["id"]), (200, &a["id"]));

    // 6. The normal device. `forewarn train` builds evaluate's default
    // model and calibrates the documented default detector, the dynamic
    // threshold over the Gaussian error score (docs/ACCURACY.md), which
    // `serve` runs from the artifact. The bound stays that of the earlier
    // Gaussian default: at most 2 alerts, each resolved again, none
    // critical.
    let (_, body) = get_json(&format!("{api}/api/v1/models")).await?;
    assert_eq!(body["models"][0]["strategy"], "dynamic", "{body}");
    let diagnosis = body["models"][0]["diagnosis"].as_str().unwrap_or_default();
    assert!(diagnosis.starts_with("tep-faults-"), "{body}");
    let (_, body) = get_json(&format!("{api}/api/v1/alerts?device=tep-normal")).await?;
    let normal = body["alerts"].as_array().unwrap();
    eprintln!("tep-normal        {}       -", normal.len());
    assert!(normal.len() <= 2, "false alerts on the normal run: {body}");
    for a in normal {
        assert_eq!(
            (&a["state"], &a["severity"]),
            (&"resolved".into(), &"warning".into()),
            "{body}"
        );
    }

    // 7. Device view and errors.
    let (status, dev) = get_json(&format!("{api}/api/v1/devices/tep-normal")).await?;
    assert_eq!(status, 200, "{dev}");
    assert_eq!(dev["readings"], 960);
    assert!(dev["last_score"].as_f64().is_some() && dev["threshold"].as_f64().unwrap() > 0.0);
    let (status, _) = get_json(&format!("{api}/api/v1/devices/nope")).await?;
    assert_eq!(status, 404);
    let (status, err) = get_json(&format!("{api}/api/v1/alerts?limit=banana")).await?;
    assert_eq!(status, 400);
    assert!(err.to_string().contains("limit"), "{err}");

    // 8. Graceful shutdown.
    let status = serve.terminate(Duration::from_secs(20))?;
    assert!(
        status.success(),
        "serve exited with {status}:\n{}",
        serve.log()
    );
    Ok(())
}

/// A classifier that reads other channels than the model cannot diagnose
/// its alerts: `serve` refuses to start and says why (before it needs a
/// broker).
#[test]
fn a_classifier_of_other_channels_is_refused_at_start() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let model = train_tep_model(dir.path())?;
    // Two channels, two classes: a classifier for some other machine.
    let (train, test) = (dir.path().join("train.csv"), dir.path().join("test.csv"));
    for path in [&train, &test] {
        let mut csv = String::from("a,b,label\n");
        for i in 0..120 {
            let class = u8::from(i >= 60);
            let t = f64::from(i) * 0.3;
            csv.push_str(&format!(
                "{:.3},{:.3},{class}\n",
                t.sin() + f64::from(class) * 3.0,
                t.cos()
            ));
        }
        std::fs::write(path, csv)?;
    }
    let classifier = dir.path().join("pump-faults");
    let out = Command::new(forewarn_bin())
        .args([
            "classify",
            "--head",
            "softmax",
            "--label-column",
            "label",
            "--train",
        ])
        .arg(&train)
        .arg("--data")
        .arg(&test)
        .arg("--save")
        .arg(&classifier)
        .arg("--report")
        .arg(dir.path().join("classify.json"))
        .output()?;
    anyhow::ensure!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let config = dir.path().join("forewarn.toml");
    std::fs::write(
        &config,
        format!(
            "[model]\npath = \"{}\"\ndevice = \"cpu\"\ndiagnosis = \"{}\"\n[store]\npath = \"{}\"\n",
            model.display(),
            classifier.display(),
            dir.path().join("alerts.db").display()
        ),
    )?;
    let out = Command::new(forewarn_bin())
        .args(["serve", "--config"])
        .arg(&config)
        .output()?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "serve started: {stderr}");
    assert!(
        stderr.contains("loading the fault classifier (model.diagnosis)")
            && stderr.contains("does not read the model's channels"),
        "{stderr}"
    );
    Ok(())
}

/// Diagnoses of the first alert of each fault run, counted over the runs
/// of observable faults (3, 9 and 15 are not, in the TEP literature).
#[derive(Default)]
struct Diagnosed {
    runs: usize,
    top1: usize,
    top3: usize,
}

impl Diagnosed {
    /// Counts run `fault`'s diagnosis; returns it as printed.
    fn record(&mut self, fault: u8, d: &serde_json::Value) -> String {
        let top: Vec<(u64, f64)> = d["top"]
            .as_array()
            .map(|t| {
                t.iter()
                    .map(|c| {
                        (
                            c["class"].as_u64().unwrap_or(0),
                            c["probability"].as_f64().unwrap_or(0.0),
                        )
                    })
                    .collect()
            })
            .unwrap_or_default();
        if ![3, 9, 15].contains(&fault) {
            self.runs += 1;
            self.top1 += usize::from(top.first().map(|c| c.0) == Some(u64::from(fault)));
            self.top3 += usize::from(top.iter().any(|c| c.0 == u64::from(fault)));
        }
        top.iter()
            .map(|(c, p)| format!("{c} {p:.2}"))
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// A model of another kind than the forecaster, served end to end:
/// `forewarn train --kind autoencoder` (train's defaults otherwise) writes
/// the artifact, `serve` loads it, shows its kind and runs it through the
/// same engine: the TEP fault 1 run alerts after its onset, the normal
/// run's device is scored.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tep_autoencoder_artifact_is_served() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let broker = Broker::start(dir.path())?;
    let (model, train) = train_tep(
        dir.path(),
        &[
            "--kind",
            "autoencoder",
            "--name",
            "tep-ae",
            "--device",
            "cpu",
        ],
    )?;
    let train_out = String::from_utf8_lossy(&train.stdout);
    assert!(
        train_out.contains("(autoencoder)") && train_out.contains("detector dynamic"),
        "{train_out}"
    );
    let meta: serde_json::Value =
        serde_json::from_slice(&std::fs::read(model.join("model.json"))?)?;
    assert_eq!(meta["kind"], "autoencoder", "{meta}");
    let m = serve_tep_fault_and_normal(dir.path(), &broker, &model, "serve-ae", "tep-ae").await?;
    assert_eq!(
        (&m["kind"], &m["strategy"], &m["members"]),
        (&"autoencoder".into(), &"dynamic".into(), &1.into()),
        "{m}"
    );
    Ok(())
}

/// An ensemble served end to end: `forewarn train --members 2` writes both
/// members' weights under one description, `serve` loads and runs them as
/// one forecaster (each device's state both members' states), and the
/// TEP fault 1 run alerts after its onset.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tep_ensemble_artifact_is_served() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let broker = Broker::start(dir.path())?;
    let (model, train) = train_tep(
        dir.path(),
        &["--members", "2", "--name", "tep-ens", "--device", "cpu"],
    )?;
    let log = String::from_utf8_lossy(&train.stderr);
    assert!(
        log.contains("(2 members, forecasts averaged)") && log.contains("member 2/2"),
        "{log}"
    );
    let meta: serde_json::Value =
        serde_json::from_slice(&std::fs::read(model.join("model.json"))?)?;
    assert_eq!(
        (&meta["kind"], &meta["members"]),
        (&"forecaster".into(), &2.into()),
        "{meta}"
    );
    assert!(
        model.join("model.safetensors").is_file() && model.join("model.1.safetensors").is_file()
    );
    let m = serve_tep_fault_and_normal(dir.path(), &broker, &model, "serve-ens", "tep-ens").await?;
    assert_eq!(
        (&m["kind"], &m["members"]),
        (&"forecaster".into(), &2.into()),
        "{m}"
    );
    Ok(())
}

/// Serves `model` (named `name`), streams TEP fault 1 and the normal test
/// run through it, and checks that fault 1 alerts after its onset, naming
/// the model and its contributors, and that the normal run's device is
/// scored; returns the model as `/api/v1/models` showed it.
async fn serve_tep_fault_and_normal(
    dir: &std::path::Path,
    broker: &Broker,
    model: &std::path::Path,
    group: &str,
    name: &str,
) -> anyhow::Result<serde_json::Value> {
    let serve = Serve::start(group, &broker.bootstrap(), model, dir, "")?;
    serve.wait_ready(Duration::from_secs(60)).await?;
    let api = serve.api.clone();
    let (_, models) = get_json(&format!("{api}/api/v1/models")).await?;
    let m = models["models"][0].clone();
    assert_eq!(m["name"], name, "{models}");
    let version = m["version"].as_str().unwrap().to_owned();

    let mut messages = tep_messages("tep-fault-01", "tep/d01_te.dat");
    messages.extend(tep_messages("tep-normal", "tep/d00_te.dat"));
    let total = messages.len();
    produce(&broker.producer(), "forewarn.readings", &messages).await?;
    eventually(
        "all messages consumed",
        Duration::from_secs(120),
        || async {
            Ok(
                (serve.metric("forewarn_readings_accepted_total").await? == Some(total as f64))
                    .then_some(()),
            )
        },
    )
    .await?;

    let fault_start = T0 + FAULT_START_SAMPLE * SAMPLE_MS;
    let alerts = eventually("an alert on fault 1", Duration::from_secs(30), || async {
        let (_, b) = get_json(&format!("{api}/api/v1/alerts?device=tep-fault-01")).await?;
        Ok(b["alerts"].as_array().filter(|a| !a.is_empty()).cloned())
    })
    .await?;
    let first = alerts
        .iter()
        .map(|a| a["opened_at"].as_i64().unwrap())
        .min()
        .unwrap();
    assert!(first >= fault_start, "alert before the fault: {alerts:?}");
    let a = &alerts[0];
    assert_eq!(
        (&a["model"], a["model_version"].as_str()),
        (&name.into(), Some(version.as_str()))
    );
    assert!(!a["contributors"].as_array().unwrap().is_empty());
    let (_, normal) = get_json(&format!("{api}/api/v1/alerts?device=tep-normal")).await?;
    eprintln!(
        "{name}: fault 1 first alert {} samples after onset; {} alert(s) on tep-normal",
        (first - fault_start) / SAMPLE_MS,
        normal["alerts"].as_array().map_or(0, Vec::len)
    );
    let (status, dev) = get_json(&format!("{api}/api/v1/devices/tep-normal")).await?;
    assert_eq!(status, 200, "{dev}");
    assert_eq!(dev["readings"], 960);
    assert_eq!(dev["model_version"], version.as_str());
    assert!(dev["last_score"].as_f64().is_some());
    let mut serve = serve;
    let status = serve.proc.terminate(Duration::from_secs(20))?;
    assert!(
        status.success(),
        "serve exited with {status}:\n{}",
        serve.proc.log()
    );
    Ok(m)
}
