//! Kind convlstm end to end on a small plate: model.toml's grid keys,
//! `fit` (train, calibrate through the engine), the replay's decisions,
//! and the stored artifact stepping two devices with carried state.

use forewarn_core::DetectorConfig;
use forewarn_core::engine::{Forecaster, StepBatch};
use forewarn_data::Dataset;

use crate::config::{ModelConfig, ModelKind};

/// A 3x3 plate without a sensor at its corner (2, 2): a heater (context)
/// warms the centre for 3 rows every 12, heat spreads and decays. With
/// `fault`, the sensor at (0, 1) reads 3 too high from row 300 on.
fn plate(rows: usize, fault: bool) -> Dataset {
    let mut channels = vec!["heater".to_string()];
    for cell in 0..8 {
        channels.push(format!("t{}{}", cell / 3, cell % 3));
    }
    let mut f = [0f32; 9];
    let mut out = Vec::with_capacity(rows * 9);
    for t in 0..rows {
        let heater = if t % 12 < 3 { 1.0 } else { 0.0 };
        out.push(heater);
        for (cell, v) in f.iter().take(8).enumerate() {
            let step = if fault && t >= 300 && cell == 1 {
                3.0
            } else {
                0.0
            };
            out.push(v + step + 0.03 * ((t * 31 + cell * 17) as f32 * 1.37).sin());
        }
        let mut next = [0f32; 9];
        for (cell, n) in next.iter_mut().enumerate() {
            let (r, c) = (cell / 3, cell % 3);
            let mut around = 0.0;
            for (dr, dc) in [(-1i32, 0i32), (1, 0), (0, -1), (0, 1)] {
                let (rr, cc) = (r as i32 + dr, c as i32 + dc);
                if (0..3).contains(&rr) && (0..3).contains(&cc) {
                    around += f[(rr * 3 + cc) as usize];
                }
            }
            *n = 0.6 * f[cell] + 0.1 * around;
        }
        next[4] += 2.0 * heater;
        f = next;
    }
    Dataset {
        channels,
        rows: out,
        timestamps: None,
        labels: None,
        source: "plate".into(),
    }
}

fn config() -> ModelConfig {
    let cfg: ModelConfig = toml::from_str(
        "[model]\nkind = \"convlstm\"\ngrid = [3, 3]\n\
         layout = [\"t00\", \"t01\", \"t02\", \"t10\", \"t11\", \"t12\", \"t20\", \"t21\", \"\"]\n\
         context = [\"heater\"]\nkernel = 3\nfilters = 6\nlayers = 1\nhorizon = 3\nwindow = 24\n\
         epochs = 8\nlearning_rate = 0.01\nbatch_streams = 4\nvalidation_fraction = 0.3\n\
         device = \"cpu\"\nthreads = 1\n\
         [threshold]\nkind = \"fixed\"\nmargin = 2.0\n",
    )
    .unwrap();
    cfg.resolved().unwrap()
}

/// Trained and calibrated through the engine, the convlstm catches a
/// step on one sensor of the plate at its first batch and flags nothing
/// before it; stored and loaded, it decides every batch alike, and its
/// network steps two devices at once with their state carried.
#[test]
fn a_convlstm_is_fitted_calibrated_replayed_stored_and_stepped() {
    crate::test_init();
    let cfg = config();
    assert_eq!(cfg.model.kind, ModelKind::ConvLstm);
    let started = std::time::Instant::now();
    let mut model = crate::fit(&plate(600, false), &cfg, &mut |_| {}).unwrap();
    eprintln!("convlstm fit in {:.1}s", started.elapsed().as_secs_f64());
    let m = &model.meta;
    assert_eq!(m.kind, ModelKind::ConvLstm);
    assert_eq!(
        (m.grid, m.kernel, m.filters),
        (Some([3, 3]), Some(3), Some(6))
    );
    assert_eq!(m.context, vec!["heater".to_string()]);
    assert_eq!(m.layout.as_ref().unwrap()[8], None);
    assert_eq!(m.state_len(), 2 * 6 * 9);
    assert_eq!(m.warmup, 24);

    let faulty = plate(480, true).rows;
    let detector = DetectorConfig {
        open_after: 1,
        ..Default::default()
    };
    let decide = |model: &mut forewarn_model::Model| {
        let engine = model.meta.engine_config(detector, 4);
        crate::replay::decisions(&mut model.network, engine, &faulty).unwrap()
    };
    let want = decide(&mut model);
    let first_open = want.iter().find(|d| d.open).map(|d| d.start);
    assert_eq!(first_open, Some(300), "{want:?}");

    // The alert names the faulty sensor's cell, (0, 1), first.
    let mut opened = vec![];
    let engine = model.meta.engine_config(detector, 4);
    crate::replay::replay(&mut model.network, engine, &[&faulty], |_, _, e| {
        if let forewarn_core::EngineEvent::Opened(a) = e {
            opened.push(a);
        }
    })
    .unwrap();
    let top = &opened[0].cells[0];
    assert_eq!(
        (top.row, top.col, top.channel.as_str()),
        (0, 1, "t01"),
        "{:?}",
        opened[0]
    );

    let dir = tempfile::tempdir().unwrap();
    forewarn_model::save_model(&model, dir.path()).unwrap();
    let mut loaded = forewarn_model::load(dir.path(), forewarn_model::Device::Cpu).unwrap();
    assert_eq!(loaded.meta, model.meta);
    let got = decide(&mut loaded);
    assert_eq!(
        got.iter()
            .map(|d| (d.start, d.score, d.open))
            .collect::<Vec<_>>(),
        want.iter()
            .map(|d| (d.start, d.score, d.open))
            .collect::<Vec<_>>()
    );

    // Two devices in one call, twice, the state carried: the second
    // device's forecasts equal its own calls alone.
    let (h, c, o, sl) = (3, 9, 8, loaded.network.state_len());
    let scaled = loaded.meta.scaler.transformed(&faulty[..4 * h * c]);
    let batch = |n: usize, inputs: Vec<f32>, states: Vec<f32>| StepBatch {
        n,
        horizon: h,
        channels: c,
        outputs: o,
        state_len: sl,
        inputs,
        states,
        predictions: vec![f32::NAN; n * h * o],
    };
    let mut states = vec![0.0; 2 * sl];
    let mut alone = vec![0.0; sl];
    for k in 0..2 {
        let (a, b) = (&scaled[2 * k * h * c..], &scaled[(2 * k + 1) * h * c..]);
        let inputs = [&a[..h * c], &b[..h * c]].concat();
        let mut both = batch(2, inputs, states);
        loaded.network.step(&mut both).unwrap();
        let mut one = batch(1, b[..h * c].to_vec(), alone);
        loaded.network.step(&mut one).unwrap();
        assert!(both.predictions.iter().all(|v| v.is_finite()));
        for (x, y) in one.predictions.iter().zip(&both.predictions[h * o..]) {
            assert!((x - y).abs() < 1e-5, "step {k}: {x} vs {y}");
        }
        assert!(both.states[..sl] != both.states[sl..]);
        states = both.states;
        alone = one.states;
    }
}

/// A grid describes the data for every kind: the default forecaster
/// given the plate's grid names the faulty sensor's cell in its alert
/// too, and stores the layout (without convlstm's kernel and filters).
#[test]
fn a_forecaster_with_a_grid_names_cells() {
    crate::test_init();
    let mut cfg = config();
    cfg.model.kind = ModelKind::Forecaster;
    cfg.model.hidden = 16;
    let cfg = cfg.resolved().unwrap();
    let mut model = crate::fit(&plate(600, false), &cfg, &mut |_| {}).unwrap();
    let m = &model.meta;
    assert_eq!((m.grid, m.kernel, m.filters), (Some([3, 3]), None, None));
    assert_eq!(m.layout.as_ref().unwrap()[1].as_deref(), Some("t01"));
    let dir = tempfile::tempdir().unwrap();
    forewarn_model::save_model(&model, dir.path()).unwrap();
    let loaded = forewarn_model::load(dir.path(), forewarn_model::Device::Cpu).unwrap();
    assert_eq!(loaded.meta, model.meta);

    let faulty = plate(480, true).rows;
    let detector = DetectorConfig {
        open_after: 1,
        ..Default::default()
    };
    let mut opened = vec![];
    let engine = model.meta.engine_config(detector, 4);
    crate::replay::replay(&mut model.network, engine, &[&faulty], |_, _, e| {
        if let forewarn_core::EngineEvent::Opened(a) = e {
            opened.push(a);
        }
    })
    .unwrap();
    let first = opened
        .iter()
        .find(|a| !a.cells.is_empty())
        .expect("an alert with cells");
    let top = &first.cells[0];
    assert_eq!(
        (top.row, top.col, top.channel.as_str()),
        (0, 1, "t01"),
        "{first:?}"
    );
}

/// model.toml's grid keys are refused by name where they do not fit.
#[test]
fn grid_keys_are_validated_by_name() {
    for (toml, want) in [
        (
            "kind = \"forecaster\"\ngrid = [2, 0]",
            "[model] grid: rows and cols",
        ),
        (
            "kind = \"convlstm\"\ngrid = [0, 2]",
            "[model] grid: rows and cols",
        ),
        ("kind = \"convlstm\"\nlayout = [\"a\"]", "layout needs grid"),
        (
            "kind = \"convlstm\"\ngrid = [2, 2]\nlayout = [\"a\", \"\"]",
            "layout has 2 cells, grid [2, 2] has 4",
        ),
        ("kind = \"convlstm\"\nkernel = 2", "kernel must be odd"),
        (
            "kind = \"convlstm\"\nfilters = 0",
            "filters must be at least 1",
        ),
    ] {
        let cfg: ModelConfig = toml::from_str(&format!("[model]\n{toml}\n")).unwrap();
        let e = cfg.resolved().unwrap_err().to_string();
        assert!(e.contains(want), "want {want:?} in {e}");
    }
    let d = ModelConfig::default().model;
    assert_eq!(
        (d.grid, d.layout.len(), d.kernel, d.filters),
        (None, 0, 3, 16)
    );
}

/// A layout naming a column the data does not have, or leaving a
/// monitored one off the grid, fails training with the name.
#[test]
fn a_layout_that_does_not_fit_the_data_is_an_error_naming_the_channel() {
    crate::test_init();
    let mut cfg = config();
    cfg.model.epochs = 1;
    cfg.model.layout[0] = "t99".into();
    let e = format!(
        "{}",
        crate::fit(&plate(300, false), &cfg, &mut |_| {}).unwrap_err()
    );
    assert!(e.contains("\"t99\", which is not a channel"), "{e}");
    cfg.model.layout[0] = String::new();
    let e = format!(
        "{}",
        crate::fit(&plate(300, false), &cfg, &mut |_| {}).unwrap_err()
    );
    assert!(
        e.contains("monitored channel \"t00\" is not on the grid"),
        "{e}"
    );
}

/// `plate` as `simulate --grid --csv-dir` writes it: the channels, the
/// label and the fault's cell (-1 while none acts).
fn write_plate(path: &std::path::Path, rows: usize, fault: bool) {
    let d = plate(rows, fault);
    let mut text = format!("{},anomaly,fault_row,fault_col\n", d.channels.join(","));
    for (i, row) in d.rows.chunks_exact(d.channels.len()).enumerate() {
        let values: Vec<String> = row.iter().map(f32::to_string).collect();
        let cell = if fault && i >= 300 {
            "1,0,1"
        } else {
            "0,-1,-1"
        };
        text.push_str(&format!("{},{cell}\n", values.join(",")));
    }
    std::fs::write(path, text).unwrap();
}

/// `evaluate --fault-cell-columns` reads the fault's cell per row and
/// reports how many alerts name a cell within one of it, per file and
/// pooled; a model without a grid, or a missing column, is refused by
/// name.
#[test]
fn evaluate_reports_localisation_from_the_fault_cell_columns() {
    use crate::evaluate::{Evaluation, TrainOn, evaluate};
    crate::test_init();
    let dir = tempfile::tempdir().unwrap();
    let (train, test) = (dir.path().join("train.csv"), dir.path().join("test.csv"));
    write_plate(&train, 600, false);
    write_plate(&test, 480, true);
    let mut cfg = config();
    cfg.model.kind = ModelKind::Forecaster;
    cfg.model.hidden = 16;
    cfg.detector.open_after = 1;
    let e = Evaluation {
        data: vec![test],
        csv: forewarn_data::CsvOptions {
            label_column: Some("anomaly".into()),
            ..Default::default()
        },
        changepoint_column: None,
        fault_cell_columns: Some(["fault_row".into(), "fault_col".into()]),
        train: TrainOn::Files(vec![train]),
        config: cfg.resolved().unwrap(),
        nab_window: None,
        nab_position: forewarn_eval::WindowPosition::Centered,
        plot: None,
        decisions: None,
        precision: forewarn_model::Precision::F32,
        score_device: None,
        jobs: 1,
    };
    let report = evaluate(&e, &mut |_| {}).unwrap();
    let l = report.localisation.expect("localisation");
    assert_eq!(
        (l.alerts, l.within_one, l.share),
        (1, 1, Some(1.0)),
        "{l:?}"
    );
    assert_eq!(report.files[0].localisation, Some(l));
    // The cell columns are not channels.
    assert_eq!(report.files[0].channels, 9);
    let json = serde_json::to_value(&report).unwrap();
    assert_eq!(json["localisation"]["within_one"], 1);

    let mut no_grid = e.clone();
    no_grid.config.model.grid = None;
    no_grid.config.model.layout.clear();
    let err = evaluate(&no_grid, &mut |_| {}).unwrap_err().to_string();
    assert!(err.contains("set [model] grid"), "{err}");
    let mut missing = e.clone();
    missing.fault_cell_columns = Some(["fault_row".into(), "cell".into()]);
    missing.csv.ignore_columns = vec!["fault_col".into()];
    let err = format!("{:#}", evaluate(&missing, &mut |_| {}).unwrap_err());
    assert!(err.contains("no column \"cell\""), "{err}");
}
