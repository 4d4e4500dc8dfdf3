//! A `convlstm` artifact through the whole system: plates from the real
//! simulator (`forewarn simulate --grid`), a model trained on their
//! fault-free half with `forewarn train` (model.toml `[model] kind =
//! "convlstm"`, the heaters as context channels), served by `forewarn
//! serve` against the real broker (Tansu); the faulty half is published and
//! the alert read back from the API names grid cells, and the device view
//! carries the last batch's per-cell error.

use std::collections::HashSet;
use std::time::Duration;

use forewarn_system_tests::*;
use serde_json::Value;

const DEVICE: &str = "plate-0000";

/// Checks a list of `{channel, share}` (or cells) is sorted by share,
/// largest first, with every share in (0, 1].
fn assert_shares(what: &str, items: &[Value]) {
    let shares: Vec<f64> = items.iter().map(|c| c["share"].as_f64().unwrap()).collect();
    assert!(
        shares.iter().all(|s| *s > 0.0 && *s <= 1.0),
        "{what}: share outside (0, 1]: {items:?}"
    );
    assert!(
        shares.windows(2).all(|w| w[0] >= w[1]),
        "{what}: not largest first: {items:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn convlstm_alert_names_grid_cells() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let broker = Broker::start(dir.path())?;
    let (rows, cols) = PLATE_GRID;

    // 1. Plates from the simulator, a convlstm trained on the fault-free half.
    let plates = simulate_plates(dir.path(), 1500, 3)?;
    let model = train_plate_model(dir.path(), &plates.train)?;
    let meta: Value = serde_json::from_slice(&std::fs::read(model.join("model.json"))?)?;
    assert_eq!(meta["kind"], "convlstm", "{meta}");
    assert_eq!(meta["grid"], serde_json::json!([rows, cols]), "{meta}");
    let heaters: Vec<String> = meta["context"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c.as_str().unwrap().to_owned())
        .collect();
    assert!(
        !heaters.is_empty() && heaters.iter().all(|h| h.starts_with("heater_")),
        "{meta}"
    );
    let test = PlateRows::read(&plates.test)?;
    let cells: HashSet<String> = test
        .channels
        .iter()
        .filter(|c| c.starts_with("cell_"))
        .cloned()
        .collect();
    assert_eq!(cells.len(), rows * cols, "{:?}", test.channels);
    let ((fault_row, fault_col), fault_start, fault_end) =
        test.fault().expect("the test half carries a fault");

    // 2. Served against the broker: the model shows its grid.
    let serve = Serve::start("serve", &broker.bootstrap(), &model, dir.path(), "")?;
    serve.wait_ready(Duration::from_secs(60)).await?;
    let (status, models) = serve.get_json("/api/v1/models").await?;
    assert_eq!(status, 200, "{models}");
    let m = &models["models"][0];
    assert_eq!(
        (&m["kind"], &m["grid"]["rows"], &m["grid"]["cols"]),
        (&"convlstm".into(), &rows.into(), &cols.into()),
        "{models}"
    );

    // 3. The faulty half, published as a plate would send it (cells and
    // heaters), all consumed.
    let messages = test.messages(DEVICE);
    let total = messages.len();
    produce(&broker.producer(), "forewarn.readings", &messages).await?;
    eventually(
        "all readings consumed",
        Duration::from_secs(120),
        || async {
            Ok(
                (serve.metric("forewarn_readings_accepted_total").await? == Some(total as f64))
                    .then_some(()),
            )
        },
    )
    .await?;

    // 4. Alerts name grid cells: on the grid, plate channels only (never a
    // heater), shares in (0, 1] largest first, as the contributors.
    let alerts = eventually("an alert on the plate", Duration::from_secs(30), || async {
        let (_, b) = serve
            .get_json(&format!("/api/v1/alerts?device={DEVICE}"))
            .await?;
        Ok(b["alerts"].as_array().filter(|a| !a.is_empty()).cloned())
    })
    .await?;
    for a in &alerts {
        let a_cells = a["cells"].as_array().unwrap_or_else(|| panic!("{a}"));
        assert!(!a_cells.is_empty(), "no cells: {a}");
        assert_shares("alert cells", a_cells);
        let contributors = a["contributors"].as_array().unwrap();
        assert_eq!(a_cells.len(), contributors.len(), "{a}");
        for (cell, contributor) in a_cells.iter().zip(contributors) {
            let (r, c) = (
                cell["row"].as_u64().unwrap() as usize,
                cell["col"].as_u64().unwrap() as usize,
            );
            let channel = cell["channel"].as_str().unwrap();
            assert!(r < rows && c < cols, "off the grid: {cell}");
            assert_eq!(channel, format!("cell_r{r}_c{c}"), "{cell}");
            assert!(cells.contains(channel) && !channel.starts_with("heater"));
            assert_eq!(&cell["channel"], &contributor["channel"], "{a}");
            assert_eq!(&cell["share"], &contributor["share"], "{a}");
        }
    }
    // One alert opens while the fault acts.
    let during: Vec<&Value> = alerts
        .iter()
        .filter(|a| (fault_start..=fault_end).contains(&a["opened_at"].as_i64().unwrap()))
        .collect();
    assert!(
        !during.is_empty(),
        "no alert while the fault at ({fault_row}, {fault_col}) acts: {alerts:?}"
    );
    for a in &during {
        let top = &a["cells"][0];
        eprintln!(
            "alert during the fault at ({fault_row}, {fault_col}), {} ms in: top cell ({}, {}) {}; cells {}",
            a["opened_at"].as_i64().unwrap() - fault_start,
            top["row"],
            top["col"],
            top["share"],
            a["cells"]
        );
    }

    // 5. The device view: the last batch's error on every cell with error.
    let (status, dev) = serve.get_json(&format!("/api/v1/devices/{DEVICE}")).await?;
    assert_eq!(status, 200, "{dev}");
    assert_eq!(dev["readings"], total as u64, "{dev}");
    let last = dev["last_shares"]
        .as_array()
        .unwrap_or_else(|| panic!("{dev}"));
    assert!(!last.is_empty(), "{dev}");
    assert_shares("last_shares", last);
    assert!(
        last.iter()
            .all(|s| cells.contains(s["channel"].as_str().unwrap())),
        "a channel that is no plate cell: {dev}"
    );
    let sum: f64 = last.iter().map(|s| s["share"].as_f64().unwrap()).sum();
    assert!((sum - 1.0).abs() < 1e-3, "shares add up to {sum}: {dev}");

    let mut serve = serve;
    let status = serve.proc.terminate(Duration::from_secs(20))?;
    assert!(
        status.success(),
        "serve exited with {status}:\n{}",
        serve.proc.log()
    );
    Ok(())
}
