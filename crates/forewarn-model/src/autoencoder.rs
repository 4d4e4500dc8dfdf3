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

use std::path::Path;

use forewarn_core::Scaler;
use forewarn_core::engine::{Forecaster, StepBatch};
use tch::nn::{self, Module, OptimizerConfig, RNN};
use tch::{Device, Kind, Tensor};

use crate::error::{ModelError, TorchContext};

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
}

impl std::fmt::Debug for LstmAutoencoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LstmAutoencoder")
            .field("spec", &self.spec)
            .finish_non_exhaustive()
    }
}

impl LstmAutoencoder {
    pub fn new(spec: AutoencoderSpec, device: Device) -> Result<Self, ModelError> {
        if spec.channels == 0 || spec.hidden == 0 || spec.horizon == 0 {
            return Err(ModelError::Config(format!(
                "autoencoder spec {spec:?}: every size must be at least 1"
            )));
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
        Ok(Self {
            spec,
            vs,
            encoder,
            decoder,
            head,
        })
    }

    pub fn spec(&self) -> &AutoencoderSpec {
        &self.spec
    }

    /// A network of `spec` with the weights in the safetensors file `path`,
    /// checked against it first (names, dtypes, shapes, finite values).
    pub fn load(spec: AutoencoderSpec, path: &Path, device: Device) -> Result<Self, ModelError> {
        let model = Self::new(spec, device)?;
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
    /// sequence, here in forward order.
    pub fn reconstruct(&self, x: &Tensor) -> Tensor {
        let (b, t, c) = x.size3().expect("[B, T, C] input");
        let (_, state) = self.encoder.seq(x);
        let zero = Tensor::zeros([b, 1, c], (Kind::Float, x.device()));
        let shifted = Tensor::cat(&[zero, x.narrow(1, 0, t - 1)], 1);
        let (out, _) = self.decoder.seq_init(&shifted, &state);
        self.head.forward(&out)
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
    let scaler = if cfg.robust_scaling {
        forewarn_core::robust_scaler::fit(train_raw, c)
    } else {
        Scaler::fit(train_raw, c)
    };
    let scaled = |raw: &[f32]| -> Tensor {
        let mut v = raw.to_vec();
        scaler.transform_all(&mut v);
        Tensor::from_slice(&v)
            .view([(raw.len() / c) as i64, c as i64])
            .to_device(cfg.device)
    };
    let h = cfg.horizon as i64;
    let wt = windows(&scaled(train_raw), h);
    let wv = windows(&scaled(val_raw), h);
    let model = LstmAutoencoder::new(
        AutoencoderSpec {
            channels: c,
            hidden: cfg.hidden,
            horizon: cfg.horizon,
        },
        cfg.device,
    )?;
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
            device: Device::Cpu,
        };
        let mut t = train_autoencoder(&rows, 2, &cfg, |_, _, _| {}).unwrap();
        let v = &t.val_losses;
        assert!(v[v.len() - 1] < 0.5 * v[0], "{v:?}");
        assert_eq!(t.train_rows, 210);
        // step() writes the reconstruction of the batch it is given.
        let mut x = rows[..10].to_vec();
        t.scaler.transform_all(&mut x);
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
}
