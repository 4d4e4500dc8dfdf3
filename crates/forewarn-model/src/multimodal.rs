//! Per-variable encoders merged (the multimodal design): one small LSTM
//! encoder per channel, their features concatenated into a joint stacked
//! LSTM, and a linear head forecasting the next `horizon` rows, as the
//! joint [`crate::LstmForecaster`] does, optionally plus the same linear
//! highway of the current row ([`crate::Highway`]: `head(..) + W x_t`).
//! It implements [`forewarn_core::Forecaster`], so the engine runs it
//! unchanged.
//!
//! Per-device state: every encoder's `(h, c)` and the joint LSTM's, packed
//! as `[enc_h (C x e) | enc_c (C x e) | joint_h (L x H) | joint_c (L x H)]`.
//!
//! It trains as the joint forecaster does (stateful truncated BPTT over
//! parallel contiguous streams, [`crate::train`]).

use std::path::Path;

use forewarn_core::engine::{Forecaster, StepBatch};
use tch::nn::{self, LSTMState, Module, RNN};
use tch::{Device, Tensor};

use crate::error::{ModelError, TorchContext};
use crate::highway::{Highway, HighwayLayer};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MultimodalSpec {
    /// Input channels (monitored and context), one encoder each.
    pub channels: usize,
    /// Forecast channels: the monitored ones (`channels` without context).
    pub outputs: usize,
    /// Width of each channel's encoder.
    pub encoder_hidden: usize,
    /// Width of the joint LSTM.
    pub hidden: usize,
    /// Joint LSTM layers.
    pub layers: usize,
    pub horizon: usize,
}

impl MultimodalSpec {
    pub fn state_len(&self) -> usize {
        2 * self.channels * self.encoder_hidden + 2 * self.layers * self.hidden
    }

    pub fn output_len(&self) -> usize {
        self.horizon * self.outputs
    }

    pub fn input_len(&self) -> usize {
        self.horizon * self.channels
    }
}

/// Recurrent state of a batch of sequences.
pub struct MultimodalState {
    pub encoders: Vec<LSTMState>,
    pub joint: LSTMState,
}

impl MultimodalState {
    /// The same state cut from the graph that computed it (truncated BPTT
    /// carries the state, not the graph).
    pub(crate) fn detach(&self) -> Self {
        Self {
            encoders: self
                .encoders
                .iter()
                .map(|s| LSTMState((s.h().detach(), s.c().detach())))
                .collect(),
            joint: LSTMState((self.joint.h().detach(), self.joint.c().detach())),
        }
    }
}

pub struct MultimodalForecaster {
    spec: MultimodalSpec,
    vs: nn::VarStore,
    encoders: Vec<nn::LSTM>,
    joint: nn::LSTM,
    head: nn::Linear,
    highway: Highway,
    /// The highway's weights (`[H*M, C]`, shared with `vs`) and its mask.
    highway_layer: Option<HighwayLayer>,
    /// Positions of the forecast (monitored) channels among the inputs.
    monitored: Vec<usize>,
}

impl std::fmt::Debug for MultimodalForecaster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MultimodalForecaster")
            .field("spec", &self.spec)
            .field("highway", &self.highway)
            .finish_non_exhaustive()
    }
}

impl MultimodalForecaster {
    /// A freshly initialised network on `device`, without a highway.
    pub fn new(spec: MultimodalSpec, device: Device) -> Result<Self, ModelError> {
        Self::with_highway(spec, Highway::None, device)
    }

    /// A freshly initialised network with `highway` (its weights start at
    /// zero, so the forecast starts as the head's alone).
    pub fn with_highway(
        spec: MultimodalSpec,
        highway: Highway,
        device: Device,
    ) -> Result<Self, ModelError> {
        Self::with_monitored(spec, highway, (0..spec.channels).collect(), device)
    }

    /// [`Self::with_highway`] forecasting only the `monitored` channels
    /// (increasing positions among the inputs; the others are context).
    pub fn with_monitored(
        spec: MultimodalSpec,
        highway: Highway,
        monitored: Vec<usize>,
        device: Device,
    ) -> Result<Self, ModelError> {
        crate::forecaster::check_monitored(&monitored, spec.outputs, spec.channels)?;
        if spec.channels == 0
            || spec.encoder_hidden == 0
            || spec.hidden == 0
            || spec.layers == 0
            || spec.horizon == 0
        {
            return Err(ModelError::Config(format!(
                "multimodal spec {spec:?}: every size must be at least 1"
            )));
        }
        let vs = nn::VarStore::new(device);
        let root = vs.root();
        let cfg = nn::RNNConfig {
            batch_first: true,
            ..Default::default()
        };
        let encoders = (0..spec.channels)
            .map(|j| {
                nn::lstm(
                    &root / format!("enc{j}"),
                    1,
                    spec.encoder_hidden as i64,
                    cfg,
                )
            })
            .collect();
        let joint = nn::lstm(
            &root / "joint",
            (spec.channels * spec.encoder_hidden) as i64,
            spec.hidden as i64,
            nn::RNNConfig {
                num_layers: spec.layers as i64,
                ..cfg
            },
        );
        let head = nn::linear(
            &root / "head",
            spec.hidden as i64,
            spec.output_len() as i64,
            Default::default(),
        );
        let highway_layer = HighwayLayer::new(
            &root,
            highway,
            spec.horizon,
            &monitored,
            spec.channels,
            device,
        )?;
        Ok(Self {
            spec,
            vs,
            encoders,
            joint,
            head,
            highway,
            highway_layer,
            monitored,
        })
    }

    pub fn spec(&self) -> &MultimodalSpec {
        &self.spec
    }

    pub fn highway(&self) -> Highway {
        self.highway
    }

    /// Positions of the forecast (monitored) channels among the inputs.
    pub fn monitored(&self) -> &[usize] {
        &self.monitored
    }

    /// Sets the highway's weights (`[H*C, C]` row-major; masked entries
    /// must be zero). Used to start training from a least-squares fit.
    pub(crate) fn set_highway_weight(&self, w: &[f32]) -> Result<(), ModelError> {
        crate::highway::set_weight(self.highway_layer.as_ref(), w)
    }

    /// A network of `spec` with `highway` and the weights in the
    /// safetensors file `path`, checked against it first (names, dtypes,
    /// shapes, finite values: a highway the description lacks, or the
    /// reverse, is refused by parameter name).
    pub fn load(
        spec: MultimodalSpec,
        highway: Highway,
        monitored: Vec<usize>,
        path: &Path,
        device: Device,
    ) -> Result<Self, ModelError> {
        let model = Self::with_monitored(spec, highway, monitored, device)?;
        crate::weights::load_into(&model.vs, path)?;
        Ok(model)
    }

    /// The parameters (what the artifact saves and its hash pins).
    pub fn var_store(&self) -> &nn::VarStore {
        &self.vs
    }

    pub fn zero_state(&self, batch: i64) -> MultimodalState {
        MultimodalState {
            encoders: self.encoders.iter().map(|e| e.zero_state(batch)).collect(),
            joint: self.joint.zero_state(batch),
        }
    }

    /// `x`: `[B, T, C]` scaled rows. Returns the forecasts at every step
    /// (`[B, T, H*C]`, the highway's map of each step's row added) and the
    /// final state.
    pub fn forward_seq(
        &self,
        x: &Tensor,
        state: Option<&MultimodalState>,
    ) -> (Tensor, MultimodalState) {
        let b = x.size()[0];
        let zero;
        let state = match state {
            Some(s) => s,
            None => {
                zero = self.zero_state(b);
                &zero
            }
        };
        let mut feats = Vec::with_capacity(self.spec.channels);
        let mut enc_states = Vec::with_capacity(self.spec.channels);
        for (j, enc) in self.encoders.iter().enumerate() {
            let xj = x.narrow(2, j as i64, 1);
            let (out, st) = enc.seq_init(&xj, &state.encoders[j]);
            feats.push(out);
            enc_states.push(st);
        }
        let f = Tensor::cat(&feats, 2);
        let (out, joint) = self.joint.seq_init(&f, &state.joint);
        let y = crate::highway::add(self.highway_layer.as_ref(), self.head.forward(&out), x)
            .unwrap_or_else(|e| panic!("forward_seq: {e}"));
        (
            y,
            MultimodalState {
                encoders: enc_states,
                joint,
            },
        )
    }

    fn unpack(&self, states: &[f32], n: i64) -> Result<MultimodalState, ModelError> {
        let s = self.spec;
        let (c, e, l, h) = (
            s.channels as i64,
            s.encoder_hidden as i64,
            s.layers as i64,
            s.hidden as i64,
        );
        let dev = self.vs.device();
        let all = Tensor::f_from_slice(states)
            .and_then(|t| t.f_view([n, s.state_len() as i64]))
            .and_then(|t| t.f_to_device(dev))
            .ctx("states")?;
        let enc_h = all.narrow(1, 0, c * e).view([n, c, e]);
        let enc_c = all.narrow(1, c * e, c * e).view([n, c, e]);
        let jh = all
            .narrow(1, 2 * c * e, l * h)
            .view([n, l, h])
            .permute([1, 0, 2])
            .contiguous();
        let jc = all
            .narrow(1, 2 * c * e + l * h, l * h)
            .view([n, l, h])
            .permute([1, 0, 2])
            .contiguous();
        let encoders = (0..c)
            .map(|j| {
                LSTMState((
                    enc_h.select(1, j).unsqueeze(0).contiguous(),
                    enc_c.select(1, j).unsqueeze(0).contiguous(),
                ))
            })
            .collect();
        Ok(MultimodalState {
            encoders,
            joint: LSTMState((jh, jc)),
        })
    }

    fn pack(&self, st: &MultimodalState, out: &mut [f32]) -> Result<(), ModelError> {
        // Encoder states are [1, n, e] each -> [n, C, e].
        let hs: Vec<Tensor> = st.encoders.iter().map(|s| s.h().squeeze_dim(0)).collect();
        let cs: Vec<Tensor> = st.encoders.iter().map(|s| s.c().squeeze_dim(0)).collect();
        let n = hs[0].size()[0];
        let enc_h = Tensor::stack(&hs, 1).view([n, -1]);
        let enc_c = Tensor::stack(&cs, 1).view([n, -1]);
        let jh = st.joint.h().permute([1, 0, 2]).contiguous().view([n, -1]);
        let jc = st.joint.c().permute([1, 0, 2]).contiguous().view([n, -1]);
        let all = Tensor::cat(&[enc_h, enc_c, jh, jc], 1)
            .to_device(Device::Cpu)
            .contiguous();
        all.f_copy_data(out, out.len()).ctx("copying states")
    }
}

impl Forecaster for MultimodalForecaster {
    type Error = ModelError;

    fn state_len(&self) -> usize {
        self.spec.state_len()
    }

    fn step(&mut self, b: &mut StepBatch) -> Result<(), ModelError> {
        let s = self.spec;
        if b.channels != s.channels
            || b.outputs != s.outputs
            || b.horizon != s.horizon
            || b.state_len != s.state_len()
            || b.inputs.len() != b.n * s.input_len()
            || b.states.len() != b.n * s.state_len()
            || b.predictions.len() != b.n * s.output_len()
        {
            return Err(ModelError::Shape(format!(
                "batch of {} devices does not fit the multimodal model {s:?}",
                b.n
            )));
        }
        if b.n == 0 {
            return Ok(());
        }
        let (n, t, c) = (b.n as i64, s.horizon as i64, s.channels as i64);
        let dev = self.vs.device();
        tch::no_grad(|| -> Result<(), ModelError> {
            let x = Tensor::f_from_slice(&b.inputs)
                .and_then(|x| x.f_view([n, t, c]))
                .and_then(|x| x.f_to_device(dev))
                .ctx("inputs")?;
            let st = self.unpack(&b.states, n)?;
            let (y, st1) = self.forward_seq(&x, Some(&st));
            let last = y.select(1, t - 1).to_device(Device::Cpu).contiguous();
            last.f_copy_data(&mut b.predictions, b.n * s.output_len())
                .ctx("copying forecasts")?;
            self.pack(&st1, &mut b.states)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn wave(len: usize, phase: f32) -> Vec<f32> {
        (0..len)
            .map(|i| ((i as f32) * 0.37 + phase).sin() + 0.1 * ((i * 7 % 5) as f32))
            .collect()
    }

    #[test]
    fn stepping_with_packed_state_equals_the_full_sequence() {
        crate::test_init();
        let spec = MultimodalSpec {
            channels: 3,
            outputs: 3,
            encoder_hidden: 2,
            hidden: 5,
            layers: 2,
            horizon: 4,
        };
        for hw in [Highway::None, Highway::Cross, Highway::Full] {
            stepping_equals_the_full_sequence(spec, hw);
        }
    }

    /// Highway weights `0.05 i - 0.3`, masked as `hw` masks.
    fn highway_weights(spec: MultimodalSpec, hw: Highway) -> Vec<f32> {
        let n = spec.output_len() * spec.channels;
        let mask = hw.mask_for(spec.horizon, &[0, 1, 2], spec.channels);
        (0..n)
            .map(|i| mask.as_ref().map_or(1.0, |m| m[i]) * (0.05 * (i % 13) as f32 - 0.3))
            .collect()
    }

    fn stepping_equals_the_full_sequence(spec: MultimodalSpec, hw: Highway) {
        let mut m = MultimodalForecaster::with_highway(spec, hw, Device::Cpu).unwrap();
        assert_eq!(m.highway(), hw);
        if hw != Highway::None {
            m.set_highway_weight(&highway_weights(spec, hw)).unwrap();
            // The highway adds exactly W x_t to the head's forecast.
            let plain = MultimodalForecaster::new(spec, Device::Cpu).unwrap();
            tch::no_grad(|| {
                let src = m.var_store().variables();
                for (name, mut v) in plain.var_store().variables() {
                    v.copy_(&src[&name]);
                }
            });
            let data = wave(8 * 3, 0.9);
            let x = Tensor::from_slice(&data).view([1, 8, 3]);
            let read = |t: Tensor| {
                let mut v = vec![0f32; t.numel()];
                t.copy_data(&mut v, t.numel());
                v
            };
            let with = read(tch::no_grad(|| m.forward_seq(&x, None)).0);
            let without = read(tch::no_grad(|| plain.forward_seq(&x, None)).0);
            let w = highway_weights(spec, hw);
            let hc = spec.output_len();
            for t in 0..8 {
                for o in 0..hc {
                    let lin: f32 = (0..3).map(|k| w[o * 3 + k] * data[t * 3 + k]).sum();
                    let d = with[t * hc + o] - without[t * hc + o] - lin;
                    assert!(d.abs() < 1e-5, "{hw:?} step {t} output {o}: {d}");
                }
            }
        } else {
            assert!(m.set_highway_weight(&[0.0; 36]).is_err());
        }
        let steps = 12;
        let data = wave(steps * 3, 0.3);
        let x = Tensor::from_slice(&data).view([1, steps as i64, 3]);
        let (full, _) = tch::no_grad(|| m.forward_seq(&x, None));
        let mut full_v = vec![0f32; full.numel()];
        full.copy_data(&mut full_v, full.numel());
        let hc = spec.output_len();
        let mut state = vec![0.0; spec.state_len()];
        for k in 0..3 {
            let mut b = StepBatch {
                n: 1,
                horizon: 4,
                channels: 3,
                outputs: 3,
                state_len: spec.state_len(),
                inputs: data[k * 12..(k + 1) * 12].to_vec(),
                states: state,
                predictions: vec![0.0; hc],
            };
            m.step(&mut b).unwrap();
            let t = (k + 1) * 4 - 1;
            for (a, w) in b.predictions.iter().zip(&full_v[t * hc..(t + 1) * hc]) {
                assert!((a - w).abs() < 1e-5, "batch {k}: {a} vs {w}");
            }
            state = b.states;
        }
        assert!(state.iter().any(|v| *v != 0.0));
        // Two devices at once equal one at a time.
        let inputs = wave(2 * hc, 1.0);
        let states: Vec<f32> = wave(2 * spec.state_len(), 2.0)
            .iter()
            .map(|v| v * 0.3)
            .collect();
        let mut both = StepBatch {
            n: 2,
            horizon: 4,
            channels: 3,
            outputs: 3,
            state_len: spec.state_len(),
            inputs: inputs.clone(),
            states: states.clone(),
            predictions: vec![0.0; 2 * hc],
        };
        m.step(&mut both).unwrap();
        let sl = spec.state_len();
        let mut one = StepBatch {
            n: 1,
            horizon: 4,
            channels: 3,
            outputs: 3,
            state_len: sl,
            inputs: inputs[hc..].to_vec(),
            states: states[sl..].to_vec(),
            predictions: vec![0.0; hc],
        };
        m.step(&mut one).unwrap();
        for (a, w) in one.predictions.iter().zip(&both.predictions[hc..]) {
            assert!((a - w).abs() < 1e-6);
        }
        for (a, w) in one.states.iter().zip(&both.states[sl..]) {
            assert!((a - w).abs() < 1e-6);
        }
    }
}
