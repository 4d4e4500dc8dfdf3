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

use forewarn_core::Scaler;
use forewarn_core::engine::{Forecaster, StepBatch};
use tch::nn::{self, Module, OptimizerConfig, RNN};
use tch::{Device, Kind, Tensor};

use crate::error::{ModelError, TorchContext};
use crate::highway::{Highway, HighwayLayer};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AutoencoderSpec {
    pub channels: usize,
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
    /// The highway's weights (`[C, C]`, shared with `vs`) and its mask.
    highway_layer: Option<HighwayLayer>,
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
        let head = nn::linear(&root / "head", h, c, Default::default());
        // One output row: the row the map reads.
        let highway_layer = HighwayLayer::new(&root, highway, 1, spec.channels, device)?;
        Ok(Self {
            spec,
            vs,
            encoder,
            decoder,
            head,
            highway,
            highway_layer,
        })
    }

    pub fn spec(&self) -> &AutoencoderSpec {
        &self.spec
    }

    pub fn highway(&self) -> Highway {
        self.highway
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
        path: &Path,
        device: Device,
    ) -> Result<Self, ModelError> {
        let model = Self::with_highway(spec, highway, device)?;
        crate::weights::load_into(&model.vs, path)?;
        Ok(model)
    }

    /// The parameters (what the artifact saves and its hash pins).
    pub fn var_store(&self) -> &nn::VarStore {
        &self.vs
    }

    /// Reconstructs windows `x` (`[B, T, C]`): the decoder starts from the
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
        let hc = s.horizon * s.channels;
        if b.channels != s.channels
            || b.horizon != s.horizon
            || b.inputs.len() != b.n * hc
            || b.predictions.len() != b.n * hc
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
            y.f_copy_data(&mut b.predictions, b.n * hc)
                .ctx("copying reconstructions")
        })
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct AutoencoderTrainConfig {
    pub hidden: usize,
    pub horizon: usize,
    pub epochs: usize,
    pub learning_rate: f64,
    /// Windows per optimizer step.
    pub batch_size: usize,
    pub validation_fraction: f64,
    pub patience: usize,
    pub seed: u64,
    pub grad_clip: f64,
    pub robust_scaling: bool,
    /// `none` or `cross` (`full` is refused, [`highway_refusal`]): its
    /// weights start at the ridge fit of each channel on the other
    /// channels of the same row over the training part, then train with
    /// the LSTMs; `cross` on one channel builds none.
    pub highway: Highway,
    pub device: Device,
}

#[derive(Debug)]
pub struct TrainedAutoencoder {
    pub model: LstmAutoencoder,
    pub scaler: Scaler,
    pub train_rows: usize,
    /// Training loss per epoch.
    pub train_losses: Vec<f64>,
    /// Validation loss per epoch.
    pub val_losses: Vec<f64>,
}

/// Every window of `h` consecutive rows of scaled `x` (`[N, C]`): `[N-h+1, h, C]`.
fn windows(x: &Tensor, h: i64) -> Tensor {
    x.unfold(0, h, 1).permute([0, 2, 1]).contiguous()
}

/// Trains on all sliding windows of the training part (shuffled with the
/// seed), early-stopping on the validation tail's windows; keeps the best
/// epoch's weights.
pub fn train_autoencoder(
    rows: &[f32],
    channels: usize,
    cfg: &AutoencoderTrainConfig,
    mut on_epoch: impl FnMut(usize, f64, f64),
) -> Result<TrainedAutoencoder, ModelError> {
    let c = channels;
    if c == 0 || !rows.len().is_multiple_of(c) {
        return Err(ModelError::Config(
            "autoencoder: rows do not fit the channels".into(),
        ));
    }
    let n = rows.len() / c;
    let n_val = (n as f64 * cfg.validation_fraction).round() as usize;
    let n_train = n - n_val;
    if n_val < cfg.horizon || n_train < 2 * cfg.horizon {
        return Err(ModelError::Config(format!(
            "autoencoder: {n} rows are too few for windows of {}",
            cfg.horizon
        )));
    }
    tch::manual_seed(cfg.seed as i64);
    let (train_raw, val_raw) = rows.split_at(n_train * c);
    let scaler = Scaler::fit_with(train_raw, c, cfg.robust_scaling);
    let tensor = |scaled: &[f32]| -> Tensor {
        Tensor::from_slice(scaled)
            .view([(scaled.len() / c) as i64, c as i64])
            .to_device(cfg.device)
    };
    let train_scaled = scaler.transformed(train_raw);
    let h = cfg.horizon as i64;
    let wt = windows(&tensor(&train_scaled), h);
    let wv = windows(&tensor(&scaler.transformed(val_raw)), h);
    let highway = cfg.highway.for_channels(c);
    let model = LstmAutoencoder::with_highway(
        AutoencoderSpec {
            channels: c,
            hidden: cfg.hidden,
            horizon: cfg.horizon,
        },
        highway,
        cfg.device,
    )?;
    // Lead 0, one row: each channel of x_t on the others of x_t.
    if let Some(w) = crate::highway::least_squares(&train_scaled, c, 1, 0, highway) {
        model.set_highway_weight(&w)?;
    }
    let mut opt = nn::Adam::default()
        .build(&model.vs, cfg.learning_rate)
        .ctx("optimizer")?;
    let count = wt.size()[0];
    let bs = (cfg.batch_size as i64).max(1);
    let mut best: Option<(f64, Vec<(String, Tensor)>)> = None;
    let mut since = 0;
    let (mut train_losses, mut val_losses) = (Vec::new(), Vec::new());
    for epoch in 1..=cfg.epochs {
        let perm = Tensor::randperm(count, (Kind::Int64, cfg.device));
        let (mut total, mut k) = (0.0, 0.0);
        let mut i = 0;
        while i < count {
            let m = bs.min(count - i);
            let xb = wt.index_select(0, &perm.narrow(0, i, m));
            let loss = (model.reconstruct(&xb) - &xb).square().mean(Kind::Float);
            opt.backward_step_clip_norm(&loss, cfg.grad_clip);
            total += loss.double_value(&[]) * m as f64;
            k += m as f64;
            i += m;
        }
        let train_loss = total / k.max(1.0);
        let val_loss = tch::no_grad(|| {
            (model.reconstruct(&wv) - &wv)
                .square()
                .mean(Kind::Float)
                .double_value(&[])
        });
        on_epoch(epoch, train_loss, val_loss);
        train_losses.push(train_loss);
        val_losses.push(val_loss);
        if !train_loss.is_finite() {
            return Err(ModelError::Config(format!(
                "autoencoder training diverged at epoch {epoch}"
            )));
        }
        if val_loss.is_finite() && best.as_ref().is_none_or(|(b, _)| val_loss < *b) {
            let snap = tch::no_grad(|| {
                model
                    .vs
                    .variables()
                    .into_iter()
                    .map(|(n, t)| (n, t.detach().copy()))
                    .collect()
            });
            best = Some((val_loss, snap));
            since = 0;
        } else {
            since += 1;
            if cfg.patience > 0 && since >= cfg.patience {
                break;
            }
        }
    }
    let (_, snap) = best.ok_or_else(|| ModelError::Config("no finite validation loss".into()))?;
    let vars = model.vs.variables();
    tch::no_grad(|| -> Result<(), ModelError> {
        for (name, src) in &snap {
            if let Some(mut v) = vars.get(name).map(Tensor::shallow_clone) {
                v.f_copy_(src).ctx("restoring best weights")?;
            }
        }
        Ok(())
    })?;
    Ok(TrainedAutoencoder {
        model,
        scaler,
        train_rows: n_train,
        train_losses,
        val_losses,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn learns_to_reconstruct_and_steps_per_batch() {
        crate::test_init();
        // Two smooth channels, 300 rows.
        let rows: Vec<f32> = (0..300)
            .flat_map(|i| {
                let t = i as f32 * 0.2;
                [t.sin(), (t * 0.5).cos()]
            })
            .collect();
        let cfg = AutoencoderTrainConfig {
            hidden: 8,
            horizon: 5,
            epochs: 8,
            learning_rate: 1e-2,
            batch_size: 32,
            validation_fraction: 0.3,
            patience: 0,
            seed: 3,
            grad_clip: 1.0,
            robust_scaling: false,
            highway: Highway::None,
            device: Device::Cpu,
        };
        let mut t = train_autoencoder(&rows, 2, &cfg, |_, _, _| {}).unwrap();
        let v = &t.val_losses;
        assert!(v[v.len() - 1] < 0.5 * v[0], "{v:?}");
        assert_eq!(t.train_rows, 210);
        // step() writes the reconstruction of the batch it is given.
        let x = t.scaler.transformed(&rows[..10]);
        let mut b = StepBatch {
            n: 1,
            horizon: 5,
            channels: 2,
            state_len: 1,
            inputs: x.clone(),
            states: vec![0.0],
            predictions: vec![0.0; 10],
        };
        t.model.step(&mut b).unwrap();
        let xt = Tensor::from_slice(&x).view([1, 5, 2]);
        let y = tch::no_grad(|| t.model.reconstruct(&xt));
        let mut want = vec![0f32; 10];
        y.copy_data(&mut want, 10);
        assert_eq!(b.predictions, want);
    }

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
        let ls = |h| crate::highway::least_squares(&rows, 3, 1, 0, h);
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

    /// Channel b is twice channel a (plus noise), a wanders in [-1, 1]
    /// during training. At a level training never reached (a + 4) the
    /// cross highway still reconstructs b from a; the LSTMs alone,
    /// saturated, cannot. Training keeps the diagonal at zero.
    #[test]
    fn cross_highway_reconstructs_a_relation_at_a_new_operating_point() {
        crate::test_init();
        let row = crate::related_row;
        let rows: Vec<f32> = (0..400).flat_map(|t| row(t, 0.0)).collect();
        let cfg = AutoencoderTrainConfig {
            hidden: 8,
            horizon: 5,
            epochs: 6,
            learning_rate: 1e-2,
            batch_size: 32,
            validation_fraction: 0.25,
            patience: 0,
            seed: 3,
            grad_clip: 1.0,
            robust_scaling: false,
            highway: Highway::None,
            device: Device::Cpu,
        };
        let plain = train_autoencoder(&rows, 3, &cfg, |_, _, _| {}).unwrap();
        let cross = train_autoencoder(
            &rows,
            3,
            &AutoencoderTrainConfig {
                highway: Highway::Cross,
                ..cfg.clone()
            },
            |_, _, _| {},
        )
        .unwrap();
        assert_eq!(cross.model.highway(), Highway::Cross);
        assert_eq!(plain.model.highway(), Highway::None);
        // Mean |error| of b's reconstruction, in scaled units.
        let b_error = |t: &TrainedAutoencoder, raw: &[f32]| {
            let x = t.scaler.transformed(raw);
            let windows = x.len() / 15;
            let xt = Tensor::from_slice(&x[..windows * 15]).view([windows as i64, 5, 3]);
            let y = tch::no_grad(|| t.model.reconstruct(&xt));
            let mut v = vec![0f32; y.numel()];
            y.copy_data(&mut v, y.numel());
            let errs: Vec<f32> = (0..windows * 5)
                .map(|r| (v[r * 3 + 1] - x[r * 3 + 1]).abs())
                .collect();
            errs.iter().sum::<f32>() / errs.len() as f32
        };
        let far: Vec<f32> = (0..200).flat_map(|t| row(t, 4.0)).collect();
        let (e_plain, e_cross) = (b_error(&plain, &far), b_error(&cross, &far));
        eprintln!("b error at a + 4: plain {e_plain}, cross {e_cross}");
        assert!(e_cross < 0.5, "cross highway off by {e_cross}");
        assert!(
            e_plain > 4.0 * e_cross,
            "plain {e_plain} vs cross {e_cross}"
        );
        let w = cross
            .model
            .var_store()
            .variables()
            .remove("highway.weight")
            .unwrap();
        let mut v = vec![0f32; 9];
        w.copy_data(&mut v, 9);
        assert_eq!((v[0], v[4], v[8]), (0.0, 0.0, 0.0));
    }
}
