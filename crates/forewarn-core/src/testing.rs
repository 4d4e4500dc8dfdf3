//! Fixtures for tests of the engine and of the stages around it (feature
//! `testing`): a forecaster simple enough to compute by hand and a small
//! engine to run it in.

use crate::DetectorConfig;
use crate::engine::{Engine, EngineConfig, Forecaster, StepBatch};
use crate::reading::Schema;
use crate::scaler::Scaler;
use crate::threshold::ThresholdStrategy;

/// Forecasts that every value of the next batch equals the last input
/// row; the "state" counts steps taken. Simple enough to compute by hand.
pub struct Persistence {
    pub calls: Vec<usize>,
}

impl Forecaster for Persistence {
    type Error = String;
    fn state_len(&self) -> usize {
        1
    }
    fn step(&mut self, b: &mut StepBatch) -> Result<(), String> {
        self.calls.push(b.n);
        assert_eq!(b.outputs, b.channels, "persistence forecasts every channel");
        let hc = b.horizon * b.channels;
        for i in 0..b.n {
            b.states[i] += b.horizon as f32;
            let last = &b.inputs[(i + 1) * hc - b.channels..(i + 1) * hc].to_vec();
            for r in 0..b.horizon {
                b.predictions[i * hc + r * b.channels..i * hc + (r + 1) * b.channels]
                    .copy_from_slice(last);
            }
        }
        Ok(())
    }
}

/// An engine over channels `a` and `b` (identity scaling), batches of 2
/// rows, a window of 4, a fixed threshold of 1.0 on the scaled MSE and
/// alerts that open and resolve on one batch; at most `max_batch` devices
/// per forecaster call.
pub fn engine(max_batch: usize) -> Engine {
    Engine::new(EngineConfig {
        schema: Schema::new(vec!["a".into(), "b".into()]),
        monitored: vec![0, 1],
        scaler: Scaler {
            center: vec![0.0, 0.0],
            scale: vec![1.0, 1.0],
            constant: vec![false, false],
            forecast_constant: Vec::new(),
        },
        horizon: 2,
        window: 4,
        warmup: 2,
        state_len: 1,
        strategy: ThresholdStrategy::Fixed { threshold: 1.0 },
        flatline: None,
        detector: DetectorConfig {
            open_after: 1,
            resolve_after: 1,
            resolve_ratio: 1.0,
            open_ratio: 0.0,
            probation: 0,
            context_change_margin: 1.0,
            context_change_rows: 0,
        },
        model: "m".into(),
        model_version: "v1".into(),
        max_batch,
        grid: None,
    })
}
