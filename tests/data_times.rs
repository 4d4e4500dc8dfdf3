//! One data file, one set of times. A CSV stamped in epoch seconds means the
//! same instants to `forewarn evaluate` (its per-row decisions) as to
//! `forewarn simulate --replay` streaming it through a real broker into
//! `forewarn serve` (the alert serve raises), because every command reads
//! data files with `forewarn_data` and its one `parse_time`. (Before, the
//! replay read 1767225600 as milliseconds: 1970-01-21.)

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use forewarn_system_tests::*;

/// 2026-01-01T00:00:00Z in epoch seconds; rows are a minute apart.
const T0_S: i64 = 1_767_225_600;
const ROWS: usize = 400;
/// Channel `a` jumps by 50 from this row on (labelled 1 there).
const FAULT_ROW: usize = 300;

/// `ts,a,b,label`: two smooth channels with a little deterministic noise.
fn write_csv(path: &Path, fault: bool) {
    let mut s = String::from("ts,a,b,label\n");
    for i in 0..ROWS {
        let noise = ((i * 7919) % 13) as f64 / 130.0;
        let mut a = (i as f64 * 0.2).sin() + noise;
        let b = (i as f64 * 0.2).cos() * 2.0 - noise;
        let anomalous = fault && i >= FAULT_ROW;
        if anomalous {
            a += 50.0;
        }
        let ts = T0_S + 60 * i as i64;
        s.push_str(&format!("{ts},{a:.4},{b:.4},{}\n", u8::from(anomalous)));
    }
    std::fs::write(path, s).unwrap();
}

fn run(args: &[&str], what: &str) -> anyhow::Result<()> {
    let out = Command::new(forewarn_bin()).args(args).output()?;
    anyhow::ensure!(
        out.status.success(),
        "{what} failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(())
}

/// A row of `evaluate --decisions`: its time, and its batch's score and
/// threshold (none in warm-up), and whether it was flagged.
struct Row {
    time_ms: i64,
    score: Option<(f64, f64)>,
    flagged: bool,
}

fn read_decisions(path: &Path) -> Vec<Row> {
    let text = std::fs::read_to_string(path).unwrap();
    let mut lines = text.lines();
    assert_eq!(
        lines.next(),
        Some("row,time_ms,label,train,score,threshold,flagged")
    );
    lines
        .map(|l| {
            let f: Vec<&str> = l.split(',').collect();
            Row {
                time_ms: f[1].parse().unwrap(),
                score: (!f[4].is_empty()).then(|| (f[4].parse().unwrap(), f[5].parse().unwrap())),
                flagged: f[6] == "1",
            }
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn evaluate_and_a_replay_into_serve_see_the_same_times() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let d = dir.path();
    let (normal, faulty) = (d.join("normal.csv"), d.join("faulty.csv"));
    write_csv(&normal, false);
    write_csv(&faulty, true);
    let s = |p: &Path| p.to_str().unwrap().to_owned();

    // 1. evaluate: a model fitted on the normal file scores the faulty one;
    // its decisions carry every row's time as evaluate read it.
    let decisions = d.join("decisions");
    run(
        &[
            "evaluate",
            "--train",
            &s(&normal),
            "--data",
            &s(&faulty),
            "--time-column",
            "ts",
            "--label-column",
            "label",
            "--decisions",
            &s(&decisions),
            "--report",
            &s(&d.join("report.json")),
        ],
        "forewarn evaluate",
    )?;
    // Named after the file and its folder.
    let csv = std::fs::read_dir(&decisions)?
        .map(|e| e.unwrap().path())
        .find(|p| p.to_string_lossy().ends_with("_faulty.csv"))
        .expect("the decisions of faulty.csv");
    let rows = read_decisions(&csv);
    assert_eq!(rows.len(), ROWS);
    for (i, r) in rows.iter().enumerate() {
        assert_eq!(r.time_ms, (T0_S + 60 * i as i64) * 1000, "row {i}");
    }
    // The alert evaluate counts: its first flagged row starts the batch
    // that opened it; the streak of batches over the threshold before it
    // starts at the first anomalous batch.
    let horizon = 5;
    let first_flagged = rows.iter().position(|r| r.flagged).expect("a flagged row");
    let over = |i: usize| rows[i].score.is_some_and(|(s, t)| s > t);
    let mut streak = first_flagged;
    while streak >= horizon && over(streak - horizon) {
        streak -= horizon;
    }
    assert!(over(first_flagged) && streak >= FAULT_ROW, "{streak}");
    let evaluate_window = (
        rows[streak].time_ms,
        rows[first_flagged + horizon - 1].time_ms,
    );

    // 2. The same model from `forewarn train` (its defaults are
    // evaluate's), served.
    let model = d.join("model");
    run(
        &[
            "train",
            "--data",
            &s(&normal),
            "--time-column",
            "ts",
            "--ignore-columns",
            "label",
            "--out",
            &s(&model),
            "--device",
            "cpu",
        ],
        "forewarn train",
    )?;
    let broker = Broker::start(d)?;
    let serve = Serve::start("serve", &broker.bootstrap(), &model, d, "")?;
    serve.wait_ready(Duration::from_secs(60)).await?;

    // 3. The same file replayed into serve by the simulator.
    run(
        &[
            "simulate",
            "--brokers",
            &broker.bootstrap(),
            "--devices",
            "0",
            "--rate",
            "0",
            "--replay",
            &s(&faulty),
            "--replay-device",
            "plant-x",
            "--replay-ignore-columns",
            "label",
        ],
        "forewarn simulate --replay",
    )?;
    eventually(
        "every replayed row accepted",
        Duration::from_secs(60),
        || async {
            Ok(
                (serve.metric("forewarn_readings_accepted_total").await? == Some(ROWS as f64))
                    .then_some(()),
            )
        },
    )
    .await
    .map_err(|e| anyhow::anyhow!("{e}\nserve's log:\n{}", serve.proc.log()))?;

    // 4. serve's alert spans the same instants evaluate's does.
    let url = format!("{}/api/v1/alerts?device=plant-x", serve.api);
    let alerts = eventually("the alert stored", Duration::from_secs(30), || async {
        let (_, body) = get_json(&url).await?;
        Ok(body["alerts"].as_array().filter(|a| !a.is_empty()).cloned())
    })
    .await?;
    assert_eq!(alerts.len(), 1, "{alerts:?}");
    let a = &alerts[0];
    let serve_window = (
        a["window_start"].as_i64().unwrap(),
        a["opened_at"].as_i64().unwrap(),
    );
    assert_eq!(serve_window, evaluate_window, "{a}");
    assert_eq!(
        serve_window.0,
        (T0_S + 60 * FAULT_ROW as i64) * 1000,
        "the fault's first batch, 2026-01-01T05:00:00Z"
    );
    Ok(())
}
