//! A forecaster whose LSTM does not read the context channels keeps that
//! through a save and a load, and a description that claims it where it
//! cannot hold is refused.

use super::*;

/// `model()`'s forecaster with channel `b` as context.
fn with_context(read: bool) -> Model {
    let spec = ModelSpec {
        outputs: 2,
        ..small_spec()
    };
    let mut f =
        LstmForecaster::with_monitored(spec, Highway::Full, vec![0, 2], tch::Device::Cpu).unwrap();
    f.set_recurrent_context(read).unwrap();
    model_of(Network::Forecaster(f))
}

#[test]
fn a_forecaster_blind_to_context_survives_a_round_trip() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("m");
    let spec = small_spec();
    for read in [false, true] {
        let mut m = with_context(read);
        assert_eq!(
            (m.meta.recurrent_context, m.meta.context.clone()),
            (read, vec!["b".to_owned()])
        );
        save_model(&m, &dir).unwrap();
        let json: serde_json::Value =
            serde_json::from_slice(&std::fs::read(dir.join(META_FILE)).unwrap()).unwrap();
        // Reading the context is the format of before the choice.
        assert_eq!(json.get("recurrent_context").is_none(), read);
        let mut loaded = load(&dir, tch::Device::Cpu).unwrap();
        assert_eq!(loaded.meta.recurrent_context, read);
        let Network::Forecaster(f) = &loaded.network else {
            panic!("{:?}", loaded.network);
        };
        assert_eq!(f.recurrent_context(), read);
        let before = step_monitored(&mut m.network, spec.channels, spec.horizon);
        assert_eq!(
            step_monitored(&mut loaded.network, spec.channels, spec.horizon),
            before
        );
    }
}

#[test]
fn recurrent_context_false_is_refused_where_it_cannot_hold() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("m");
    // No context channels to leave out.
    save_model(&model(), &dir).unwrap();
    edit_meta(&dir, |v| v["recurrent_context"] = false.into());
    let e = load_err(&dir);
    assert!(
        e.contains("recurrent_context false needs the forecaster kind and context channels"),
        "{e}"
    );
    // Saving refuses a description that differs from the network.
    let mut wrong = with_context(true);
    wrong.meta.recurrent_context = false;
    let e = save_model(&wrong, &dir).unwrap_err().to_string();
    assert!(
        e.contains("recurrent context false") && e.contains("recurrent context true"),
        "{e}"
    );
}

/// Two devices' batch through `f`, whose outputs are the 2 monitored channels.
fn step_monitored(f: &mut Network, channels: usize, horizon: usize) -> (Vec<f32>, Vec<f32>) {
    let n = 2;
    let state_len = f.state_len();
    let mut b = StepBatch {
        n,
        horizon,
        channels,
        outputs: 2,
        state_len,
        inputs: (0..n * horizon * channels)
            .map(|i| (i as f32 * 0.1).cos())
            .collect(),
        states: (0..n * state_len)
            .map(|i| (i as f32 * 0.2).sin() * 0.3)
            .collect(),
        predictions: vec![0.0; n * horizon * 2],
    };
    f.step(&mut b).unwrap();
    (b.predictions, b.states)
}
