//! Context channels through the whole system: `forewarn train
//! --context-columns` stores them in the artifact, `serve` (against the
//! real broker) reads them as inputs and shows them at `/api/v1/models`,
//! and an alert names only monitored channels, even while a context
//! channel jumps far outside anything seen in training.

use std::time::Duration;

use forewarn_core::reading::encode_reading;
use forewarn_system_tests::*;

const T0: i64 = 1_767_225_600_000;

/// Row `i` of a plant with channels `a`, `b` and the command `cmd`
/// (switching every 50 rows), `a` following the command 5 rows later.
fn row(i: usize) -> [f32; 3] {
    let cmd = |i: usize| ((i / 50) % 2) as f32;
    let noise = ((i * 7919) % 13) as f32 / 130.0;
    let follows = if i >= 5 { 3.0 * cmd(i - 5) } else { 0.0 };
    let a = (i as f32 * 0.2).sin() + noise + follows;
    let b = (i as f32 * 0.2).cos() * 2.0 - noise;
    [a, b, cmd(i)]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alerts_name_only_monitored_channels() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let broker = Broker::start(dir.path())?;

    // 1. Train with `cmd` as a context channel.
    let data = dir.path().join("train.csv");
    let mut csv = String::from("a,b,cmd\n");
    for i in 0..600 {
        let [a, b, cmd] = row(i);
        csv.push_str(&format!("{a:.4},{b:.4},{cmd}\n"));
    }
    std::fs::write(&data, csv)?;
    let model = dir.path().join("model");
    let out = std::process::Command::new(forewarn_bin())
        .args(["train", "--data"])
        .arg(&data)
        .arg("--out")
        .arg(&model)
        .args([
            "--context-columns",
            "cm?",
            "--name",
            "plant",
            "--hidden",
            "16",
            "--window",
            "20",
            "--epochs",
            "10",
            "--device",
            "cpu",
        ])
        .output()?;
    assert!(
        out.status.success(),
        "train failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let meta: serde_json::Value =
        serde_json::from_slice(&std::fs::read(model.join("model.json"))?)?;
    assert_eq!(meta["context"], serde_json::json!(["cmd"]));

    // 2. Serve it.
    let serve = Serve::start("serve", &broker.bootstrap(), &model, dir.path(), "")?;
    serve.wait_ready(Duration::from_secs(60)).await?;
    let (status, models) = get_json(&format!("{}/api/v1/models", serve.api)).await?;
    assert_eq!(status, 200, "{models}");
    assert_eq!(
        models["models"][0]["context"],
        serde_json::json!(["cmd"]),
        "{models}"
    );

    // 3. A device whose `a` steps by 20 from row 300 on while its command
    // jumps to 10,000 (training saw 0 and 1): readings carry every channel,
    // the command included.
    let mut messages = Vec::new();
    for i in 0..500 {
        let mut values = row(i);
        if i >= 300 {
            values[0] += 20.0;
            values[2] = 10_000.0;
        }
        let ts = T0 + i as i64 * 1000;
        messages.push((
            "plant-1".to_string(),
            encode_reading("plant-1", ts, &values),
        ));
    }
    produce(&broker.producer(), "forewarn.readings", &messages).await?;

    // 4. The alert opens and names monitored channels only.
    let url = format!("{}/api/v1/alerts?device=plant-1", serve.api);
    let alerts = eventually("an alert for plant-1", Duration::from_secs(120), || async {
        let (status, body) = get_json(&url).await?;
        anyhow::ensure!(status == 200, "{body}");
        let alerts = body["alerts"].as_array().cloned().unwrap_or_default();
        Ok((!alerts.is_empty()).then_some(alerts))
    })
    .await?;
    for alert in &alerts {
        let names: Vec<&str> = alert["contributors"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["channel"].as_str().unwrap())
            .collect();
        assert!(!names.is_empty(), "{alert}");
        assert!(
            names.iter().all(|n| *n == "a" || *n == "b"),
            "a context channel named: {alert}"
        );
    }
    let (_, devices) = get_json(&format!("{}/api/v1/devices/plant-1", serve.api)).await?;
    assert!(!devices.to_string().contains("\"cmd\""), "{devices}");
    Ok(())
}
