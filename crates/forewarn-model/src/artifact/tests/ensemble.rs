//! Ensembles in the artifact: saved one file per member, loaded back to
//! the same forecasts, and refused whole when a member is missing or
//! swapped.

use super::*;

/// Forecasters of `model()`'s shape, each initialised from its own seed.
fn members(n: usize) -> Vec<Network> {
    (0..n)
        .map(|i| {
            tch::manual_seed(100 + i as i64);
            Network::Forecaster(LstmForecaster::new(small_spec(), tch::Device::Cpu).unwrap())
        })
        .collect()
}

/// Two devices' batch through `f` from `states`: (predictions, states after).
fn run<F: Forecaster<Error = ModelError>>(
    f: &mut F,
    channels: usize,
    horizon: usize,
    states: &[f32],
) -> (Vec<f32>, Vec<f32>) {
    let mut b = StepBatch {
        n: 2,
        horizon,
        channels,
        outputs: channels,
        state_len: f.state_len(),
        inputs: (0..2 * horizon * channels)
            .map(|i| (i as f32 * 0.1).cos())
            .collect(),
        states: states.to_vec(),
        predictions: vec![0.0; 2 * horizon * channels],
    };
    f.step(&mut b).unwrap();
    (b.predictions, b.states)
}

fn files(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    names
}

#[test]
fn an_ensemble_forecasts_its_members_mean_and_survives_a_round_trip() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("m");
    let spec = small_spec();
    let (c, h) = (spec.channels, spec.horizon);
    let mut m = model_of(Network::ensemble(members(3)).unwrap());
    assert_eq!((m.meta.members, m.network.members()), (3, 3));
    assert_eq!(m.meta.state_len(), 3 * spec.state_len());
    assert_eq!(
        m.engine_config(DetectorConfig::default(), 1).state_len,
        3 * spec.state_len()
    );
    // Two devices; each one's state is the members' states end to end.
    let sl = spec.state_len();
    let start: Vec<f32> = (0..2 * 3 * sl)
        .map(|i| (i as f32 * 0.2).sin() * 0.3)
        .collect();
    let (forecast, states) = run(&mut m.network, c, h, &start);
    // The members alone, from their parts of the same states (they keep
    // none themselves).
    let Network::Ensemble(e) = &mut m.network else {
        panic!("not an ensemble");
    };
    for d in 0..2 {
        let mut mean = vec![0f32; h * c];
        for (i, member) in e.members_mut().iter_mut().enumerate() {
            let own = &start[d * 3 * sl + i * sl..][..sl];
            let (p, s) = run(member, c, h, &[own, own].concat());
            assert_eq!(
                states[d * 3 * sl + i * sl..][..sl],
                s[d * sl..][..sl],
                "device {d}"
            );
            for (mean, p) in mean.iter_mut().zip(&p[d * h * c..][..h * c]) {
                *mean += p / 3.0;
            }
        }
        for (f, mean) in forecast[d * h * c..][..h * c].iter().zip(&mean) {
            assert!((f - mean).abs() < 1e-6, "device {d}: {f} against {mean}");
        }
    }

    save_model(&m, &dir).unwrap();
    assert_eq!(
        files(&dir),
        [
            "model.1.safetensors",
            "model.2.safetensors",
            META_FILE,
            WEIGHTS_FILE
        ]
    );
    let json: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join(META_FILE)).unwrap()).unwrap();
    assert_eq!(json["members"], 3);
    let mut loaded = load(&dir, tch::Device::Cpu).unwrap();
    assert_eq!(loaded.meta.weights_sha256, m.meta.weights_sha256);
    assert_eq!(run(&mut loaded.network, c, h, &start), (forecast, states));

    // A single network written over it leaves no stale member behind, and
    // its description keeps the format of before ensembles.
    save_model(&model(), &dir).unwrap();
    assert_eq!(files(&dir), [META_FILE, WEIGHTS_FILE]);
    let json: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join(META_FILE)).unwrap()).unwrap();
    assert!(json.get("members").is_none());
    assert_eq!(load(&dir, tch::Device::Cpu).unwrap().network.members(), 1);
}

#[test]
fn a_missing_swapped_or_undescribed_member_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("m");
    let m = model_of(Network::ensemble(members(2)).unwrap());

    save_model(&m, &dir).unwrap();
    std::fs::remove_file(dir.join("model.1.safetensors")).unwrap();
    let e = load_err(&dir);
    assert!(
        e.contains("model.1.safetensors") && e.contains("missing"),
        "{e}"
    );

    // Members in the wrong files: each is a valid network, the whole is not
    // the ensemble model.json pins.
    save_model(&m, &dir).unwrap();
    let (a, b) = (dir.join(WEIGHTS_FILE), dir.join("model.1.safetensors"));
    let first = std::fs::read(&a).unwrap();
    std::fs::copy(&b, &a).unwrap();
    std::fs::write(&b, first).unwrap();
    let e = load_err(&dir);
    assert!(e.contains("weights_sha256 differs"), "{e}");

    for (members, want) in [
        (0, "members 0 is outside 1..=16"),
        (17, "members 17 is outside 1..=16"),
    ] {
        save_model(&m, &dir).unwrap();
        edit_meta(&dir, |v| v["members"] = members.into());
        let e = load_err(&dir);
        assert!(e.contains(want), "{e}");
    }
    // One member fewer described than saved: the hash pins the whole.
    save_model(&m, &dir).unwrap();
    edit_meta(&dir, |v| {
        v.as_object_mut().unwrap().remove("members");
    });
    assert!(load_err(&dir).contains("weights_sha256 differs"));

    // Saving refuses a description of another number of members.
    let mut wrong = model_of(Network::ensemble(members(2)).unwrap());
    wrong.meta.members = 3;
    let e = save_model(&wrong, &dir).unwrap_err().to_string();
    assert!(
        e.contains("describes 3 members but the network is 2 members"),
        "{e}"
    );
}

#[test]
fn members_of_different_shapes_do_not_make_an_ensemble() {
    let mut other = small_spec();
    other.hidden += 1;
    let mixed = vec![
        members(1).remove(0),
        Network::Forecaster(LstmForecaster::new(other, tch::Device::Cpu).unwrap()),
    ];
    let e = Network::ensemble(mixed).unwrap_err().to_string();
    assert!(e.contains("one kind and shape"), "{e}");
    let nested = vec![Network::ensemble(members(2)).unwrap(), members(1).remove(0)];
    assert!(
        Network::ensemble(nested)
            .unwrap_err()
            .to_string()
            .contains("do not nest")
    );
    assert!(Network::ensemble(vec![]).is_err());
    let e = Network::ensemble(members(17)).unwrap_err().to_string();
    assert!(e.contains("at most 16 members, not 17"), "{e}");
}
