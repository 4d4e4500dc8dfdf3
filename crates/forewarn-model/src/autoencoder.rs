//! LSTM encoder-decoder autoencoder (Malhotra et al. 2016, EncDec-AD):
//! an encoder LSTM reads a window of rows, its final state seeds a decoder
//! LSTM that reconstructs the window, and the anomaly score is the
//! reconstruction error.
//!
//! The window is the engine's batch (`horizon` rows). Through
//! [`forewarn_core::Forecaster::step`] the model writes the reconstruction
//! of the batch it is given into `predictions`; it keeps no state between
//! batches (`state_len` 1, unused). It [reconstructs](Forecaster::reconstructs),
//! so the engine (in `serve`, calibration and `forewarn evaluate` alike)
//! scores each batch against its own reconstruction instead of the
//! previous batch's forecast.
//!
//! An optional cross-channel highway ([`Highway::Cross`]) adds `W x_t` to
//! the decoder's reconstruction of row `t`, `W` `[C, C]` with a zero
//! diagonal: each channel is also reconstructed linearly from the other
//! channels of the same row (a PCA/MSET-like residual), which extrapolates
//! to operating points training never reached, while a fault on one
//! channel breaks its relation to the others. `full` would learn the
//! identity (every fault reconstructed perfectly) and is refused.

use std::path::Path;

use forewarn_core::engine::{Forecaster, StepBatch};
use tch::nn::{self, Module, RNN};
use tch::{Device, Kind, Tensor};

use crate::error::{ModelError, TorchContext};
use crate::highway::{Highway, HighwayLayer};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AutoencoderSpec {
    /// Input channels (monitored and context).
    pub channels: usize,
    /// Reconstructed channels: the monitored ones (`channels` without
    /// context): the decoder reads every channel, reconstructs these.
    pub outputs: usize,
    pub hidden: usize,
    /// Rows per window (= the engine's batch).
    pub horizon: usize,
}

pub struct LstmAutoencoder {
    spec: AutoencoderSpec,
    vs: nn::VarStore,
    encoder: nn::LSTM,
    decoder: nn::LSTM,
    head: nn::Linear,
    highway: Highway,
    /// The highway's weights (`[M, C]`, shared with `vs`) and its mask.
    highway_layer: Option<HighwayLayer>,
    /// Positions of the reconstructed (monitored) channels among the inputs.
    monitored: Vec<usize>,
}

impl std::fmt::Debug for LstmAutoencoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LstmAutoencoder")
            .field("spec", &self.spec)
            .field("highway", &self.highway)
            .finish_non_exhaustive()
    }
}

/// Why the autoencoder refuses `highway`, if it does: only `none` and
/// `cross` reconstruct a row from anything but itself.
pub fn highway_refusal(highway: Highway) -> Option<String> {
    (highway == Highway::Full).then(|| {
        "highway \"full\" on the autoencoder would learn the identity (each row \
         reconstructed from itself, every fault included); use \"cross\" or \"none\""
            .to_owned()
    })
}

impl LstmAutoencoder {
    /// A freshly initialised network on `device`, without a highway.
    pub fn new(spec: AutoencoderSpec, device: Device) -> Result<Self, ModelError> {
        Self::with_highway(spec, Highway::None, device)
    }

    /// A freshly initialised network with `highway` (`none` or `cross`; its
    /// weights start at zero, so the reconstruction starts as the
    /// decoder's alone).
    pub fn with_highway(
        spec: AutoencoderSpec,
        highway: Highway,
        device: Device,
    ) -> Result<Self, ModelError> {
        Self::with_monitored(spec, highway, (0..spec.channels).collect(), device)
    }

    /// [`Self::with_highway`] reconstructing only the `monitored` channels
    /// (increasing positions among the inputs; the others are context).
    pub fn with_monitored(
        spec: AutoencoderSpec,
        highway: Highway,
        monitored: Vec<usize>,
        device: Device,
    ) -> Result<Self, ModelError> {
        crate::forecaster::check_monitored(&monitored, spec.outputs, spec.channels)?;
        if spec.channels == 0 || spec.hidden == 0 || spec.horizon == 0 {
            return Err(ModelError::Config(format!(
                "autoencoder spec {spec:?}: every size must be at least 1"
            )));
        }
        if let Some(why) = highway_refusal(highway) {
            return Err(ModelError::Config(why));
        }
        let vs = nn::VarStore::new(device);
        let root = vs.root();
        let cfg = nn::RNNConfig {
            batch_first: true,
            ..Default::default()
        };
        let (c, h) = (spec.channels as i64, spec.hidden as i64);
        let encoder = nn::lstm(&root / "encoder", c, h, cfg);
        let decoder = nn::lstm(&root / "decoder", c, h, cfg);
        let head = nn::linear(&root / "head", h, spec.outputs as i64, Default::default());
        // One output row: the row the map reads.
        let highway_layer =
            HighwayLayer::new(&root, highway, 1, &monitored, spec.channels, device)?;
        Ok(Self {
            spec,
            vs,
            encoder,
            decoder,
            head,
            highway,
            highway_layer,
            monitored,
        })
    }

    pub fn spec(&self) -> &AutoencoderSpec {
        &self.spec
    }

    pub fn highway(&self) -> Highway {
        self.highway
    }

    /// Positions of the reconstructed (monitored) channels among the inputs.
    pub fn monitored(&self) -> &[usize] {
        &self.monitored
    }

    /// Sets the highway's weights (`[C, C]` row-major, zero diagonal).
    /// Used to start training from a least-squares fit.
    pub(crate) fn set_highway_weight(&self, w: &[f32]) -> Result<(), ModelError> {
        crate::highway::set_weight(self.highway_layer.as_ref(), w)
    }

    /// A network of `spec` with `highway` and the weights in the
    /// safetensors file `path`, checked against it first (names, dtypes,
    /// shapes, finite values: a highway the description lacks, or the
    /// reverse, is refused by parameter name).
    pub fn load(
        spec: AutoencoderSpec,
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

    /// Reconstructs the monitored channels of windows `x` (`[B, T, C]`;
    /// `[B, T, M]` out): the decoder starts from the
    /// encoder's final state and is fed the window shifted right by one row
    /// (zeros first), as in EncDec-AD's teacher forcing of the reversed
    /// sequence, here in forward order. With a highway, each row's
    /// reconstruction adds `W x_t` of that same row.
    pub fn reconstruct(&self, x: &Tensor) -> Tensor {
        let (b, t, c) = x.size3().expect("[B, T, C] input");
        let (_, state) = self.encoder.seq(x);
        let zero = Tensor::zeros([b, 1, c], (Kind::Float, x.device()));
        let shifted = Tensor::cat(&[zero, x.narrow(1, 0, t - 1)], 1);
        let (out, _) = self.decoder.seq_init(&shifted, &state);
        crate::highway::add(self.highway_layer.as_ref(), self.head.forward(&out), x)
            .unwrap_or_else(|e| panic!("reconstruct: {e}"))
    }
}

impl Forecaster for LstmAutoencoder {
    type Error = ModelError;

    /// Each batch's output is its own reconstruction: the engine scores
    /// the batch against it (reconstruction error), not against a forecast.
    fn reconstructs(&self) -> bool {
        true
    }

    fn state_len(&self) -> usize {
        1
    }

    fn step(&mut self, b: &mut StepBatch) -> Result<(), ModelError> {
        let s = self.spec;
        let (hc, hm) = (s.horizon * s.channels, s.horizon * s.outputs);
        if b.channels != s.channels
            || b.outputs != s.outputs
            || b.horizon != s.horizon
            || b.inputs.len() != b.n * hc
            || b.predictions.len() != b.n * hm
        {
            return Err(ModelError::Shape(format!(
                "batch of {} devices does not fit the autoencoder {s:?}",
                b.n
            )));
        }
        if b.n == 0 {
            return Ok(());
        }
        let dev = self.vs.device();
        tch::no_grad(|| -> Result<(), ModelError> {
            let x = Tensor::f_from_slice(&b.inputs)
                .and_then(|x| x.f_view([b.n as i64, s.horizon as i64, s.channels as i64]))
                .and_then(|x| x.f_to_device(dev))
                .ctx("inputs")?;
            let y = self.reconstruct(&x).to_device(Device::Cpu).contiguous();
            y.f_copy_data(&mut b.predictions, b.n * hm)
                .ctx("copying reconstructions")
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// x2 = 0.5 x0 - x1 exactly, x0 and x1 independent: the same-row cross
    /// fit (lead 0, one row) explains each channel by the other two and
    /// never by itself.
    #[test]
    fn same_row_least_squares_recovers_a_linear_relation() {
        let n = 4000;
        let mut state = 0x2545_f491_4f6c_dd1du64;
        let mut draw = || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            // Uniform with unit variance, as scaled training rows have
            // (the ridge assumes it).
            ((state >> 40) as f32 / (1u64 << 23) as f32 - 1.0) * 3f32.sqrt()
        };
        let rows: Vec<f32> = (0..n)
            .flat_map(|_| {
                let (x0, x1) = (draw(), draw());
                [x0, x1, 0.5 * x0 - x1]
            })
            .collect();
        let ls = |h| crate::highway::least_squares(&rows, 3, &[0, 1, 2], 1, 0, h);
        assert_eq!(ls(Highway::None), None);
        let w = ls(Highway::Cross).unwrap();
        // Rows: x0 = 2 x1 + 2 x2, x1 = 0.5 x0 - x2, x2 = 0.5 x0 - x1.
        let want = [0.0, 2.0, 2.0, 0.5, 0.0, -1.0, 0.5, -1.0, 0.0];
        for (i, (got, want)) in w.iter().zip(want).enumerate() {
            assert!((got - want).abs() < 0.05, "weight {i}: {got} vs {want}");
        }
        assert_eq!((w[0], w[4], w[8]), (0.0, 0.0, 0.0));
    }

    /// The highway adds exactly `W x_t` of each row to its reconstruction,
    /// and `step` (the engine's call) equals `reconstruct` with it.
    #[test]
    fn the_highway_adds_w_x_of_the_same_row_and_step_equals_reconstruct() {
        crate::test_init();
        let spec = AutoencoderSpec {
            channels: 3,
            outputs: 3,
            hidden: 5,
            horizon: 4,
        };
        let mut m = LstmAutoencoder::with_highway(spec, Highway::Cross, Device::Cpu).unwrap();
        assert_eq!(m.highway(), Highway::Cross);
        let w = [0.0, 0.4, -0.2, 0.3, 0.0, 0.6, -0.5, 0.2, 0.0];
        m.set_highway_weight(&w).unwrap();
        let plain = LstmAutoencoder::new(spec, Device::Cpu).unwrap();
        tch::no_grad(|| {
            let src = m.var_store().variables();
            for (name, mut v) in plain.var_store().variables() {
                v.copy_(&src[&name]);
            }
        });
        let x: Vec<f32> = (0..24).map(|i| (i as f32 * 0.37).sin()).collect();
        let xt = Tensor::from_slice(&x).view([2, 4, 3]);
        let read = |t: Tensor| {
            let mut v = vec![0f32; 24];
            t.copy_data(&mut v, 24);
            v
        };
        let with = read(tch::no_grad(|| m.reconstruct(&xt)));
        let without = read(tch::no_grad(|| plain.reconstruct(&xt)));
        for r in 0..8 {
            for j in 0..3 {
                let lin: f32 = (0..3).map(|k| w[j * 3 + k] * x[r * 3 + k]).sum();
                let d = with[r * 3 + j] - without[r * 3 + j] - lin;
                assert!(d.abs() < 1e-5, "row {r} channel {j}: {d}");
            }
        }
        let mut b = StepBatch {
            n: 2,
            horizon: 4,
            channels: 3,
            outputs: 3,
            state_len: 1,
            inputs: x,
            states: vec![0.0; 2],
            predictions: vec![0.0; 24],
        };
        m.step(&mut b).unwrap();
        assert_eq!(b.predictions, with);
        assert!(LstmAutoencoder::with_highway(spec, Highway::Full, Device::Cpu).is_err());
        assert!(
            LstmAutoencoder::new(spec, Device::Cpu)
                .unwrap()
                .set_highway_weight(&w)
                .is_err()
        );
    }
}
