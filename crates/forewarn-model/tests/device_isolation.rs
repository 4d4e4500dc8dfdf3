//! Devices batched into one forecaster call must not influence each other:
//! a fault on one device leaves every other device's scores bit-identical.

use forewarn_core::engine::EngineEvent;
use forewarn_core::{DetectorConfig, Engine, EngineConfig, Forecaster, Reading, Scaler, Schema};
use forewarn_model::{LstmForecaster, ModelSpec};

fn scores(fault_on_b: bool) -> Vec<(String, i64, f64)> {
    tch::manual_seed(7);
    let channels = 3;
    let spec = ModelSpec {
        channels,
        outputs: channels,
        hidden: 8,
        layers: 2,
        horizon: 4,
    };
    let mut model = LstmForecaster::new(spec, tch::Device::Cpu).unwrap();
    let mut engine = Engine::new(EngineConfig {
        schema: Schema::new(vec!["a".into(), "b".into(), "c".into()]),
        monitored: vec![0, 1, 2],
        scaler: Scaler {
            center: vec![0.0; 3],
            scale: vec![1.0; 3],
            constant: vec![false; 3],
            forecast_constant: Vec::new(),
        },
        horizon: 4,
        window: 8,
        warmup: 8,
        state_len: model.state_len(),
        strategy: forewarn_core::threshold::ThresholdStrategy::Fixed { threshold: 1.0 },
        flatline: None,
        detector: DetectorConfig::default(),
        model: "m".into(),
        model_version: "v".into(),
        max_batch: 16,
        grid: None,
    });
    let mut out = Vec::new();
    for t in 0..200i64 {
        for (d, phase) in [("a", 0.0f32), ("b", 1.0), ("c", 2.0)] {
            let mut v: Vec<f32> = (0..channels)
                .map(|c| ((t as f32) * 0.1 + phase + c as f32).sin())
                .collect();
            if fault_on_b && d == "b" && t >= 100 {
                v[1] += 5.0;
            }
            engine
                .push(&Reading {
                    device: d.into(),
                    ts_ms: t,
                    values: v,
                })
                .unwrap();
        }
        if t % 7 == 0 {
            for ev in engine.flush(&mut model).unwrap() {
                if let EngineEvent::Scored {
                    device,
                    end_ts,
                    score,
                    ..
                } = ev
                {
                    out.push((device, end_ts, score));
                }
            }
        }
    }
    out
}

#[test]
fn a_fault_on_one_device_does_not_move_the_others() {
    let clean = scores(false);
    let faulty = scores(true);
    assert_eq!(clean.len(), faulty.len());
    let mut b_changed = false;
    for (c, f) in clean.iter().zip(&faulty) {
        assert_eq!((&c.0, c.1), (&f.0, f.1));
        if c.0 == "b" {
            b_changed |= c.2 != f.2;
        } else {
            assert_eq!(
                c.2.to_bits(),
                f.2.to_bits(),
                "device {} at {} moved: {} vs {}",
                c.0,
                c.1,
                c.2,
                f.2
            );
        }
    }
    assert!(b_changed, "the fault should change device b's scores");
}
