use super::*;

fn wave(len: usize, phase: f32) -> Vec<f32> {
    (0..len)
        .map(|i| ((i as f32) * 0.37 + phase).sin() + 0.1 * ((i * 7 % 5) as f32))
        .collect()
}

/// 4 inputs: three on a 2x2 grid with a gap (inputs 0, 2, 3), input 1 context.
pub(crate) fn small_spec() -> ConvLstmSpec {
    ConvLstmSpec {
        channels: 4,
        rows: 2,
        cols: 2,
        cells: vec![Some(3), None, Some(0), Some(2)],
        kernel: 3,
        filters: 3,
        layers: 2,
        horizon: 2,
    }
}

fn read(t: &Tensor) -> Vec<f32> {
    let mut v = vec![0f32; t.numel()];
    t.copy_data(&mut v, t.numel());
    v
}

#[test]
fn spec_sizes_and_context() {
    let s = small_spec();
    assert_eq!(s.state_len(), 2 * 2 * 3 * 4);
    assert_eq!(s.outputs(), 3);
    assert_eq!(s.monitored(), vec![0, 2, 3]);
    assert_eq!(s.context(), vec![1]);
    for (bad, want) in [
        (
            ConvLstmSpec {
                kernel: 4,
                ..small_spec()
            },
            "kernel 4 must be odd",
        ),
        (
            ConvLstmSpec {
                kernel: 17,
                ..small_spec()
            },
            "at most 15",
        ),
        (
            ConvLstmSpec {
                rows: 3,
                ..small_spec()
            },
            "4 cells for a 3x2 grid",
        ),
        (
            ConvLstmSpec {
                cells: vec![Some(3), Some(3), Some(0), None],
                ..small_spec()
            },
            "places input 3 twice",
        ),
        (
            ConvLstmSpec {
                cells: vec![None; 4],
                ..small_spec()
            },
            "no channel",
        ),
        (
            ConvLstmSpec {
                filters: 0,
                ..small_spec()
            },
            "filters must be",
        ),
    ] {
        let e = bad.validate().unwrap_err();
        assert!(e.contains(want), "want {want:?} in {e}");
    }
}

/// Stepping batch by batch with packed state equals the whole sequence at
/// once; two devices in one call equal each alone.
#[test]
fn stepping_with_packed_state_equals_the_full_sequence() {
    crate::test_init();
    let spec = small_spec();
    let mut m = ConvLstm::new(spec.clone(), Device::Cpu).unwrap();
    let (c, h, o) = (4, 2, 3);
    let steps = 6;
    let data = wave(steps * c, 0.3);
    let x = Tensor::from_slice(&data).view([1, steps as i64, c as i64]);
    let (full, _) = tch::no_grad(|| m.forward_seq(&x, None)).unwrap();
    assert_eq!(full.size(), vec![1, steps as i64, (h * o) as i64]);
    let full = read(&full);
    let sl = spec.state_len();
    let mut state = vec![0.0; sl];
    for k in 0..steps / h {
        let mut b = StepBatch {
            n: 1,
            horizon: h,
            channels: c,
            outputs: o,
            state_len: sl,
            inputs: data[k * h * c..(k + 1) * h * c].to_vec(),
            states: state,
            predictions: vec![0.0; h * o],
        };
        m.step(&mut b).unwrap();
        let t = (k + 1) * h - 1;
        for (a, w) in b.predictions.iter().zip(&full[t * h * o..(t + 1) * h * o]) {
            assert!((a - w).abs() < 1e-5, "batch {k}: {a} vs {w}");
        }
        state = b.states;
    }
    assert!(state.iter().any(|v| *v != 0.0));
    let inputs = wave(2 * h * c, 1.0);
    let states: Vec<f32> = wave(2 * sl, 2.0).iter().map(|v| v * 0.3).collect();
    let mut both = StepBatch {
        n: 2,
        horizon: h,
        channels: c,
        outputs: o,
        state_len: sl,
        inputs: inputs.clone(),
        states: states.clone(),
        predictions: vec![0.0; 2 * h * o],
    };
    m.step(&mut both).unwrap();
    let mut one = StepBatch {
        n: 1,
        inputs: inputs[h * c..].to_vec(),
        states: states[sl..].to_vec(),
        predictions: vec![0.0; h * o],
        ..both.clone()
    };
    m.step(&mut one).unwrap();
    for (a, w) in one.predictions.iter().zip(&both.predictions[h * o..]) {
        assert!((a - w).abs() < 1e-6);
    }
    for (a, w) in one.states.iter().zip(&both.states[sl..]) {
        assert!((a - w).abs() < 1e-6);
    }
    // A batch of the wrong shape is an error, not a panic.
    let mut wrong = StepBatch {
        outputs: 4,
        predictions: vec![0.0; 2 * h * 4],
        ..both
    };
    assert!(m.step(&mut wrong).is_err());
}

/// The highway adds a linear map of the batch's last row to the forecast,
/// in the forecast's order (horizon-major, monitored channels in input
/// order): with the convolutions' head silenced and the highway set to
/// the identity on the monitored channels, the forecast is the last row
/// (persistence), and a stepped batch agrees.
#[test]
fn the_highway_maps_the_last_row_in_the_forecasts_order() {
    crate::test_init();
    let spec = small_spec();
    let mut m = ConvLstm::with_highway(spec.clone(), Highway::Full, Device::Cpu).unwrap();
    assert_eq!(m.highway(), Highway::Full);
    let (c, h, monitored) = (4, 2, spec.monitored());
    let o = monitored.len();
    let mut w = vec![0f32; h * o * c];
    for k in 0..h {
        for (j, &input) in monitored.iter().enumerate() {
            w[(k * o + j) * c + input] = 1.0;
        }
    }
    m.set_highway_weight(&w).unwrap();
    tch::no_grad(|| {
        for (name, mut v) in m.var_store().variables() {
            if name.starts_with("head.") {
                let _ = v.zero_();
            }
        }
    });
    let data = wave(h * c, 0.7);
    let mut b = StepBatch {
        n: 1,
        horizon: h,
        channels: c,
        outputs: o,
        state_len: spec.state_len(),
        inputs: data.clone(),
        states: vec![0.0; spec.state_len()],
        predictions: vec![0.0; h * o],
    };
    m.step(&mut b).unwrap();
    let last = &data[(h - 1) * c..];
    let want: Vec<f32> = (0..h)
        .flat_map(|_| monitored.iter().map(|&j| last[j]))
        .collect();
    for (a, w) in b.predictions.iter().zip(&want) {
        assert!((a - w).abs() < 1e-6, "{:?} vs {want:?}", b.predictions);
    }
    // A network without a highway has none to set.
    let plain = ConvLstm::new(spec, Device::Cpu).unwrap();
    assert_eq!(plain.highway(), Highway::None);
    assert!(plain.set_highway_weight(&w).is_err());
}

/// A gap reads 0 whatever the channel at its index holds, and the context
/// channel reaches every cell.
#[test]
fn frames_mask_gaps_and_broadcast_context() {
    crate::test_init();
    let m = ConvLstm::new(small_spec(), Device::Cpu).unwrap();
    let x = Tensor::from_slice(&[1.0f32, 5.0, 2.0, 3.0]).view([1, 1, 4]);
    let f = read(&m.frames(&x).unwrap());
    // Grid map: cells (input 3, gap, input 0, input 2); then context (input 1).
    assert_eq!(f, vec![3.0, 0.0, 1.0, 2.0, 5.0, 5.0, 5.0, 5.0]);
}

/// A 4x4 plate: a heater (a context channel, off the grid) warms cell
/// (1, 1) for 3 rows every 15, and heat spreads to the neighbours and
/// decays. The sensor at (3, 3) is missing (a gap).
pub(crate) fn plate(rows: usize) -> forewarn_data::Dataset {
    let mut channels = vec!["heater".to_string()];
    let mut f = [0f32; 16];
    let mut out = Vec::with_capacity(rows * 16);
    for cell in 0..15 {
        channels.push(format!("t{}{}", cell / 4, cell % 4));
    }
    for t in 0..rows {
        let heater = if t % 15 < 3 { 1.0 } else { 0.0 };
        out.push(heater);
        for (cell, v) in f.iter().take(15).enumerate() {
            out.push(v + 0.02 * ((t * 31 + cell * 17) as f32 * 1.37).sin());
        }
        let mut next = [0f32; 16];
        for (cell, n) in next.iter_mut().enumerate() {
            let (r, c) = (cell / 4, cell % 4);
            let mut around = 0.0;
            for (dr, dc) in [(-1i32, 0i32), (1, 0), (0, -1), (0, 1)] {
                let (rr, cc) = (r as i32 + dr, c as i32 + dc);
                if (0..4).contains(&rr) && (0..4).contains(&cc) {
                    around += f[(rr * 4 + cc) as usize];
                }
            }
            *n = 0.6 * f[cell] + 0.1 * around;
        }
        next[5] += 2.0 * heater;
        f = next;
    }
    forewarn_data::Dataset {
        channels,
        rows: out,
        timestamps: None,
        labels: None,
        source: "plate".into(),
    }
}

/// The convlstm learns how heat spreads over the plate: its validation
/// loss ends well below persistence's (the next rows forecast as the
/// current one) on the same scaled rows.
#[test]
fn learns_heat_spreading_on_a_plate_better_than_persistence() {
    crate::test_init();
    let data = plate(600);
    let mut layout: Vec<String> = data.channels[1..].to_vec();
    layout.push(String::new());
    let s = crate::TrainSettings {
        kind: crate::ModelKind::ConvLstm,
        layers: 1,
        horizon: 2,
        window: 15,
        epochs: 12,
        learning_rate: 1e-2,
        validation_fraction: 0.25,
        context: vec!["heater".into()],
        grid: Some([4, 4]),
        layout,
        kernel: 3,
        filters: 8,
        ..crate::train::tests::small()
    };
    let started = std::time::Instant::now();
    let t = crate::train(&data, &s, |_| {}).unwrap();
    let secs = started.elapsed().as_secs_f64();
    let m = match &t.network {
        crate::Network::ConvLstm(m) => m,
        other => panic!("{other:?}"),
    };
    assert_eq!(m.spec().context(), vec![0]);
    assert_eq!(m.spec().cells[15], None);
    // Persistence on the scaled validation rows, over the steps scored.
    let (c, h) = (16, s.horizon);
    let val = t.scaler.transformed(&data.rows[t.train_rows * c..]);
    let n = val.len() / c;
    let (mut sum, mut count) = (0f64, 0usize);
    for r in s.window..n - h {
        for k in 1..=h {
            for j in 1..c {
                sum += f64::from(val[(r + k) * c + j] - val[r * c + j]).powi(2);
            }
        }
        count += h * (c - 1);
    }
    let persistence = sum / count as f64;
    let (_, best) = t.final_losses();
    eprintln!(
        "plate: {} epochs in {secs:.1}s, val {best:.4} vs persistence {persistence:.4}",
        t.runs[0].history.len()
    );
    assert!(
        best < 0.3 * persistence,
        "val {best} vs persistence {persistence}"
    );
}
