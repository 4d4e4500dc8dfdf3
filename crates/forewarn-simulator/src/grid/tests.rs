use super::*;
use crate::write_grid_csv;

fn cfg(devices: usize, rows: usize, cols: usize) -> GridConfig {
    GridConfig {
        devices,
        size: GridSize { rows, cols },
        period_ms: 10_000,
        start_ms: 0,
        seed: 3,
        ..GridConfig::default()
    }
}

fn fault(spec: &str) -> GridFault {
    spec.parse().unwrap()
}

/// Plate `device`'s readings over `ticks` ticks.
fn run(grid: &mut Grid, device: usize, ticks: usize) -> Vec<Vec<f32>> {
    (0..ticks)
        .map(|_| grid.next_tick().device(device).to_vec())
        .collect()
}

/// Mean over `rows` of the difference `a − b` at channel `ch`.
fn mean_diff(a: &[Vec<f32>], b: &[Vec<f32>], rows: std::ops::Range<usize>, ch: usize) -> f64 {
    let n = rows.len() as f64;
    rows.map(|t| f64::from(a[t][ch] - b[t][ch])).sum::<f64>() / n
}

#[test]
fn sizes_parse_and_bad_ones_are_refused() {
    let ok = |s: &str| s.parse::<GridSize>().map(|g| (g.rows, g.cols)).ok();
    assert_eq!(ok("8x8"), Some((8, 8)));
    assert_eq!(ok("4X16"), Some((4, 16)));
    for bad in ["8", "0x4", "x4", "8x", "65x2", "a x b", "8x8x8"] {
        assert_eq!(ok(bad), None, "{bad}");
    }
    assert!(("8by8".parse::<GridSize>().unwrap_err().to_string()).contains("ROWSxCOLS"));
}

#[test]
fn channels_are_the_cells_row_major_then_the_heaters() {
    let g = Grid::new(cfg(1, 2, 3), vec![]).unwrap();
    let h = g.heaters();
    assert!((2..=4).contains(&h), "{h}");
    let mut want: Vec<String> = ["r0_c0", "r0_c1", "r0_c2", "r1_c0", "r1_c1", "r1_c2"]
        .iter()
        .map(|c| format!("cell_{c}"))
        .collect();
    want.extend((0..h).map(|k| format!("heater_{k}")));
    assert_eq!(g.channels(), want);
    assert_eq!(g.device_id(0), "plate-0000");
    assert_eq!(g.device_index("plate-0000"), Some(0));
    assert_eq!(g.device_index("0"), Some(0));
    assert_eq!(g.device_index("plate-0001"), None);
    assert_eq!(g.device_index("plate-00"), None);
}

#[test]
fn same_seed_same_data_and_a_plate_ignores_how_many_others_there_are() {
    let a = run(&mut Grid::new(cfg(2, 4, 4), vec![]).unwrap(), 1, 200);
    let b = run(&mut Grid::new(cfg(3, 4, 4), vec![]).unwrap(), 1, 200);
    assert_eq!(a, b);
    let other = GridConfig {
        seed: 4,
        ..cfg(2, 4, 4)
    };
    assert_ne!(a, run(&mut Grid::new(other, vec![]).unwrap(), 1, 200));
    // Plausible temperatures and heater powers, whatever the period (the
    // sub-steps keep the explicit scheme stable).
    for period_ms in [1_000, 10_000, 300_000] {
        let c = GridConfig {
            period_ms,
            ..cfg(1, 8, 8)
        };
        let rows = run(&mut Grid::new(c, vec![]).unwrap(), 0, 300);
        for r in &rows {
            assert!(r[..64].iter().all(|t| (10.0..100.0).contains(t)), "{r:?}");
            assert!(r[64..].iter().all(|p| (0.0..=100.0).contains(p)), "{r:?}");
        }
    }
}

/// A plate with no noise, no daily cycle and heater 0 alone, held at
/// `power`; returns it with heater 0's cell.
fn one_heater(power: f64) -> (Grid, usize) {
    let c = GridConfig {
        noise: 0.0,
        daily_drift: 0.0,
        ..cfg(1, 9, 9)
    };
    let mut g = Grid::new(c, vec![]).unwrap();
    for (k, h) in g.plates[0].heaters.iter_mut().enumerate() {
        let p = if k == 0 { power } else { 0.0 };
        (h.from, h.to, h.next_change_ms) = (p, p, i64::MAX);
    }
    let cell = g.plates[0].heaters[0].cell;
    (g, cell)
}

#[test]
fn a_heater_warms_its_cell_then_its_neighbours_more_than_far_cells() {
    let (mut g, cell) = one_heater(1.0);
    let rows = run(&mut g, 0, 1_000);
    let last = &rows[999];
    let (r0, c0) = (cell / 9, cell % 9);
    let dist = |i: usize| (i / 9).abs_diff(r0) + (i % 9).abs_diff(c0);
    let at = |d: usize| {
        let cells: Vec<f32> = (0..81).filter(|&i| dist(i) == d).map(|i| last[i]).collect();
        cells.iter().sum::<f32>() / cells.len() as f32
    };
    let far = (0..81).max_by_key(|&i| dist(i)).unwrap();
    assert!(
        at(0) > at(1) && at(1) > at(2),
        "{} {} {}",
        at(0),
        at(1),
        at(2)
    );
    assert!(at(2) > last[far] + 5.0, "{} vs {}", at(2), last[far]);
    assert!(last[cell] > 45.0, "{}", last[cell]);
    assert_eq!(last[81], 100.0);
}

#[test]
fn with_the_heaters_off_the_plate_relaxes_to_ambient() {
    let (mut g, _) = one_heater(0.0);
    let first = run(&mut g, 0, 1);
    assert!(first[0][..81].iter().any(|&t| t > 30.0), "{:?}", first[0]);
    let rows = run(&mut g, 0, 2_000);
    let plate = &g.plates[0];
    let ambient = plate.ambient(0.0, 0.0);
    // Uniform, at the ambient (which wanders slowly: the plate lags it).
    let last = &rows[1_999][..81];
    let (lo, hi) = last
        .iter()
        .fold((f32::MAX, f32::MIN), |(l, h), &t| (l.min(t), h.max(t)));
    assert!(hi - lo < 0.05, "{lo}..{hi}");
    assert!((f64::from(lo) - ambient).abs() < 1.0, "{lo} vs {ambient}");
}

/// A clean and a faulty run of one 8x8 plate (same noise draws).
fn with_and_without(spec: &str, ticks: usize) -> (Vec<Vec<f32>>, Vec<Vec<f32>>) {
    let clean = run(&mut Grid::new(cfg(1, 8, 8), vec![]).unwrap(), 0, ticks);
    let faulty = run(
        &mut Grid::new(cfg(1, 8, 8), vec![fault(spec)]).unwrap(),
        0,
        ticks,
    );
    (clean, faulty)
}

#[test]
fn a_hot_spot_heats_its_cell_most_and_spreads_as_it_grows() {
    // 10 s ticks: the spot starts at tick 60 and grows for 120 ticks.
    let (clean, hot) = with_and_without("plate-0000:hotspot@10m+20m:3,4", 200);
    assert_eq!(hot[..60], clean[..60]);
    let cell = 3 * 8 + 4;
    let (early, late) = (70..90, 160..180);
    let d = |ch, rows| mean_diff(&hot, &clean, rows, ch);
    assert!(d(cell, early.clone()) > d(cell + 1, early.clone()));
    assert!(d(cell + 1, early.clone()) > d(cell + 8 + 2, early.clone()));
    assert!(d(cell, late.clone()) > d(cell, early.clone()) + 5.0);
    // Two cells away it is barely felt at first, clearly later.
    assert!(d(cell + 2, late.clone()) > 3.0 * d(cell + 2, early.clone()).max(0.3));
    assert!(d(63, late) < d(cell + 2, 160..180));
}

#[test]
fn a_dead_cell_reads_a_constant_while_its_neighbours_go_on() {
    let (clean, dead) = with_and_without("plate-0000:dead@10m+10m:2,2", 200);
    let cell = 2 * 8 + 2;
    let stuck = dead[60][cell];
    assert!(dead[60..120].iter().all(|r| r[cell] == stuck));
    assert!(
        dead[60..120]
            .iter()
            .any(|r| r[cell + 1] != dead[60][cell + 1])
    );
    // Only its own reading is wrong; after the fault it reads again.
    for (c, d) in clean.iter().zip(&dead) {
        for ch in (0..d.len()).filter(|&ch| ch != cell) {
            assert_eq!(c[ch], d[ch]);
        }
    }
    assert_eq!(dead[120..], clean[120..]);
}

#[test]
fn a_leak_cools_its_cell_first_then_its_neighbours() {
    let (clean, leak) = with_and_without("plate-0000:leak@10m+30m:4,4", 260);
    let cell = 4 * 8 + 4;
    let cool = |ch, rows| mean_diff(&clean, &leak, rows, ch);
    let (early, late) = (62..70, 220..240);
    assert!(cool(cell, early.clone()) > 2.0 * cool(cell + 1, early.clone()));
    assert!(cool(cell + 1, late.clone()) > 5.0);
    assert!(cool(cell + 1, late.clone()) > 2.0 * cool(cell + 1, early.clone()));
    assert!(cool(cell, late.clone()) > cool(cell + 2, late));
}

#[test]
fn a_stuck_heater_disagrees_with_its_command() {
    let g = Grid::new(cfg(1, 8, 8), vec![]).unwrap();
    let (r, c) = g.heater_cells(0)[0];
    let heater = 64;
    let (clean, stuck) = with_and_without(&format!("plate-0000:heater_stuck@10m+30m:{r},{c}"), 240);
    // The command goes on as scheduled...
    for (a, b) in clean.iter().zip(&stuck) {
        assert_eq!(a[heater], b[heater]);
    }
    // ...while its cell follows another power: the gap is largest there.
    let cell = r * 8 + c;
    let gap = |ch: usize| mean_diff(&clean, &stuck, 150..240, ch).abs();
    assert!(gap(cell) > 3.0, "{}", gap(cell));
    let far = (0..64usize)
        .max_by_key(|&i| (i / 8).abs_diff(r) + (i % 8).abs_diff(c))
        .unwrap();
    assert!(gap(cell) > 2.0 * gap(far), "{} vs {}", gap(cell), gap(far));
    // `hK` names the same heater.
    let by_index = fault("plate-0000:heater_stuck@10m+30m:h0");
    let mut g = Grid::new(cfg(1, 8, 8), vec![by_index]).unwrap();
    assert_eq!(run(&mut g, 0, 240), stuck);
}

#[test]
fn csv_rows_carry_the_label_and_the_fault_location() {
    let faults = vec![
        fault("plate-0001:hotspot@20s+20s:1,2"),
        fault("plate-0001:dead@30s+30s:3,0"),
    ];
    let mut g = Grid::new(cfg(2, 4, 4), faults).unwrap();
    let mut out = vec![Vec::new(), Vec::new()];
    write_grid_csv(&mut g, 8, &mut out).unwrap();
    let text: Vec<String> = out
        .iter()
        .map(|o| String::from_utf8(o.clone()).unwrap())
        .collect();
    let header = text[0].lines().next().unwrap();
    assert!(header.starts_with("ts,cell_r0_c0,cell_r0_c1,"), "{header}");
    assert!(
        header.ends_with(",heater_1,anomaly,fault_row,fault_col") || header.contains(",heater_2,")
    );
    assert_eq!(header.split(',').count(), 1 + 16 + g.heaters() + 3);
    let tails = |t: &str| -> Vec<String> {
        t.lines()
            .skip(1)
            .map(|l| {
                let f: Vec<&str> = l.split(',').collect();
                format!("{} {}", f[0], f[f.len() - 3..].join(","))
            })
            .collect()
    };
    assert!(tails(&text[0]).iter().all(|t| t.ends_with(" 0,-1,-1")));
    // Ticks every 10 s; the hot spot acts on [20 s, 40 s), the dead cell
    // on [30 s, 60 s): the earlier fault names the location while both act.
    assert_eq!(
        tails(&text[1]),
        [
            "0 0,-1,-1",
            "10000 0,-1,-1",
            "20000 1,1,2",
            "30000 1,1,2",
            "40000 1,3,0",
            "50000 1,3,0",
            "60000 0,-1,-1",
            "70000 0,-1,-1",
        ]
    );
}

#[test]
fn random_faults_cover_every_kind_inside_their_span_without_overlap() {
    let mut g = Grid::new(cfg(2, 8, 8), vec![]).unwrap();
    // Readings 1000..2000 (10 s each), 4 faults per plate.
    g.add_random_faults(4, 10_000_000, 10_000_000).unwrap();
    assert_eq!(g.faults().len(), 8);
    let mut again = Grid::new(cfg(2, 8, 8), vec![]).unwrap();
    again.add_random_faults(4, 10_000_000, 10_000_000).unwrap();
    assert_eq!(g.faults(), again.faults());
    for device in ["plate-0000", "plate-0001"] {
        let mine: Vec<&GridFault> = g.faults().iter().filter(|f| f.device == device).collect();
        let mut kinds: Vec<&str> = mine.iter().map(|f| f.kind.name()).collect();
        kinds.sort_unstable();
        assert_eq!(kinds, ["dead", "heater_stuck", "hotspot", "leak"]);
        let mut end = 12_000_000; // a fault-free fifth first
        for f in mine {
            assert!(f.start_ms >= end, "{f}");
            assert_eq!(f.start_ms % 10_000, 0);
            end = f.start_ms + f.duration_ms.unwrap();
        }
        assert!(end <= 20_000_000);
    }
    let err = g.add_random_faults(4, 0, 100_000).unwrap_err();
    assert!(err.to_string().contains("need at least"), "{err}");
}

#[test]
fn fault_specs_parse_and_print_back() {
    let f = fault("plate-0001:hotspot@10m+20m:3,4");
    assert_eq!(
        f,
        GridFault {
            device: "plate-0001".into(),
            kind: GridFaultKind::Hotspot,
            start_ms: 600_000,
            duration_ms: Some(1_200_000),
            at: GridLocation::Cell { row: 3, col: 4 },
        }
    );
    for spec in [
        "plate-0001:hotspot@10m+20m:3,4",
        "plate-0000:dead@1h:0,7",
        "2:leak@30s+1h:5,5",
        "plate-0003:heater_stuck@2h+30m:h1",
        "plate-0003:heater_stuck@2h:1,1",
    ] {
        assert_eq!(fault(spec).to_string(), spec);
    }
}

#[test]
fn bad_fault_specs_are_errors_with_a_reason() {
    let cases = [
        ("plate-0001:hotspot@10m+20m", "expected DEVICE:KIND"),
        ("plate-0001:hotspot:3,4", "expected DEVICE:KIND"),
        ("hotspot@10m:3,4", "expected DEVICE:KIND"),
        (":hotspot@10m:3,4", "empty device"),
        ("plate-0001:fire@10m:3,4", "unknown fault kind"),
        ("plate-0001:hotspot@ten:3,4", "start"),
        ("plate-0001:hotspot@10m+0s:3,4", "duration must be positive"),
        ("plate-0001:hotspot@10m+x:3,4", "duration"),
        ("plate-0001:hotspot@10m:3", "location"),
        ("plate-0001:hotspot@10m:h1", "location"),
        ("plate-0001:hotspot@10m:-1,2", "row"),
        ("plate-0001:dead@10m:1,b", "column"),
        ("plate-0001:heater_stuck@10m:hx", "heater"),
    ];
    for (spec, want) in cases {
        let err = spec.parse::<GridFault>().unwrap_err().to_string();
        assert!(err.contains(want), "{spec}: {err:?} lacks {want:?}");
    }
    // Specs that parse but do not fit the plates.
    let g = |spec: &str| {
        Grid::new(cfg(2, 4, 4), vec![fault(spec)])
            .unwrap_err()
            .to_string()
    };
    assert!(g("plate-0002:dead@1m:0,0").contains("unknown device"));
    assert!(g("plate-0001:dead@1m:4,0").contains("off the 4x4 plate"));
    assert!(g("plate-0001:heater_stuck@1m:h7").contains("no heater 7; heaters: h0 = "));
    let grid = Grid::new(cfg(2, 4, 4), vec![]).unwrap();
    let heaters = grid.heater_cells(1);
    let free = (0..16)
        .map(|i| (i / 4, i % 4))
        .find(|c| !heaters.contains(c))
        .unwrap();
    let e = g(&format!("plate-0001:heater_stuck@1m:{},{}", free.0, free.1));
    assert!(e.contains("needs a heater's cell"), "{e}");
}

#[test]
fn csv_files_read_as_evaluate_reads_them() {
    // `forewarn evaluate --time-column ts --label-column anomaly
    // --ignore-columns fault_row,fault_col --context-columns 'heater_*'`.
    // Real runs start in 2026: epoch milliseconds read as such (from 1e11).
    let c = GridConfig {
        start_ms: DEFAULT_START_MS,
        ..cfg(1, 3, 3)
    };
    let mut g = Grid::new(c, vec![fault("plate-0000:leak@50s+30s:1,1")]).unwrap();
    let mut out = vec![Vec::new()];
    write_grid_csv(&mut g, 10, &mut out).unwrap();
    let opts = forewarn_data::CsvOptions {
        time_column: Some("ts".into()),
        label_column: Some("anomaly".into()),
        ignore_columns: vec!["fault_row".into(), "fault_col".into()],
        ..forewarn_data::CsvOptions::default()
    };
    let text = String::from_utf8(out.remove(0)).unwrap();
    let data = forewarn_data::parse_csv("plate-0000.csv", &text, &opts).unwrap();
    assert_eq!(data.channels, g.channels());
    assert_eq!(data.len(), 10);
    let ts = data.timestamps.as_deref().unwrap();
    assert_eq!(
        (ts[0], ts[1]),
        (DEFAULT_START_MS, DEFAULT_START_MS + 10_000)
    );
    assert_eq!(data.labels.unwrap(), [0, 0, 0, 0, 0, 1, 1, 1, 0, 0]);
    let context = forewarn_data::context_flags(&data.channels, &["heater_*".into()], "p").unwrap();
    assert_eq!(context.iter().filter(|&&c| c).count(), g.heaters());
    assert!(!context[..9].iter().any(|&c| c));
}
