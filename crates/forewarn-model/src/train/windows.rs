//! Training the autoencoder: on every sliding window of `horizon` rows of
//! the training part, shuffled (with the seeded generator) into minibatches
//! of `batch_windows`; the loss is the reconstruction's mean squared error.
//! Windows are independent (the engine scores each batch on its own), so
//! no state is carried.

use tch::nn;
use tch::{Kind, Tensor};

use super::settings::TrainSettings;
use super::trainable::Trainable;
use crate::artifact::Network;
use crate::autoencoder::{AutoencoderSpec, LstmAutoencoder};
use crate::error::ModelError;
use crate::highway::Highway;

/// Every window of the training and of the validation part: `[N, H, C]`,
/// and their monitored channels, the reconstruction's targets (`[N, H, M]`;
/// the same tensors without context channels).
pub(crate) struct Windows {
    train: Tensor,
    val: Tensor,
    train_target: Tensor,
    val_target: Tensor,
}

/// Every window of `h` consecutive rows of scaled `x` (`[N, C]`): `[N-h+1, h, C]`.
fn windows(x: &Tensor, h: i64) -> Tensor {
    x.unfold(0, h, 1).permute([0, 2, 1]).contiguous()
}

impl Trainable for LstmAutoencoder {
    type Data = Windows;
    const DRAWS_WHILE_TRAINING: bool = true;

    fn check_rows(n_train: usize, n_val: usize, s: &TrainSettings) -> Result<(), ModelError> {
        if n_val < s.horizon || n_train < 2 * s.horizon {
            return Err(ModelError::Config(format!(
                "autoencoder: {} rows are too few for windows of {}",
                n_train + n_val,
                s.horizon
            )));
        }
        Ok(())
    }

    fn build(
        _names: &[String],
        channels: usize,
        monitored: &[usize],
        s: &TrainSettings,
        highway: Highway,
    ) -> Result<Self, ModelError> {
        let spec = AutoencoderSpec {
            channels,
            outputs: monitored.len(),
            hidden: s.hidden,
            horizon: s.horizon,
        };
        LstmAutoencoder::with_monitored(spec, highway, monitored.to_vec(), s.device)
    }

    fn highway_targets(_: &TrainSettings) -> (usize, usize) {
        // The row read itself: each channel of x_t on the others of x_t.
        (1, 0)
    }

    fn set_highway_weight(&self, w: &[f32]) -> Result<(), ModelError> {
        LstmAutoencoder::set_highway_weight(self, w)
    }

    fn var_store(&self) -> &nn::VarStore {
        LstmAutoencoder::var_store(self)
    }

    fn prepare(
        &self,
        train: &[f32],
        val: &[f32],
        c: usize,
        s: &TrainSettings,
    ) -> Result<Windows, ModelError> {
        let tensor = |scaled: &[f32]| -> Tensor {
            Tensor::from_slice(scaled)
                .view([(scaled.len() / c) as i64, c as i64])
                .to_device(s.device)
        };
        let h = s.horizon as i64;
        let (train, val) = (windows(&tensor(train), h), windows(&tensor(val), h));
        let monitored = self.monitored();
        let target = |w: &Tensor| -> Tensor {
            if monitored.len() == c {
                w.shallow_clone()
            } else {
                let idx: Vec<i64> = monitored.iter().map(|&j| j as i64).collect();
                w.index_select(2, &Tensor::from_slice(&idx).to_device(s.device))
            }
        };
        Ok(Windows {
            train_target: target(&train),
            val_target: target(&val),
            train,
            val,
        })
    }

    fn epoch(
        &self,
        w: &Windows,
        opt: &mut nn::Optimizer,
        s: &TrainSettings,
    ) -> Result<f64, ModelError> {
        let count = w.train.size()[0];
        let bs = s.batch_windows as i64;
        let perm = Tensor::randperm(count, (Kind::Int64, s.device));
        let (mut total, mut k) = (0.0, 0.0);
        let mut i = 0;
        while i < count {
            let m = bs.min(count - i);
            let rows = perm.narrow(0, i, m);
            let xb = w.train.index_select(0, &rows);
            let yb = w.train_target.index_select(0, &rows);
            let loss = (self.reconstruct(&xb) - &yb).square().mean(Kind::Float);
            opt.backward_step_clip_norm(&loss, s.grad_clip);
            total += loss.double_value(&[]) * m as f64;
            k += m as f64;
            i += m;
        }
        Ok(total / k.max(1.0))
    }

    fn validation_loss(&self, w: &Windows, _: &TrainSettings) -> Result<f64, ModelError> {
        Ok(tch::no_grad(|| {
            (self.reconstruct(&w.val) - &w.val_target)
                .square()
                .mean(Kind::Float)
                .double_value(&[])
        }))
    }

    fn into_network(self) -> Network {
        Network::Autoencoder(self)
    }
}
