//! Training the forecasting kinds (the joint forecaster and the
//! per-variable model): stateful truncated BPTT, as inference runs them.
//!
//! The service carries each device's state from batch to batch forever, so
//! training does too. The training part is cut into `batch_streams`
//! contiguous streams that are processed side by side in chunks of `window`
//! steps, the state carried (detached) from chunk to chunk. Nothing is
//! shuffled: order is the signal. At every step the network forecasts the
//! next `horizon` rows; the loss is their mean squared error.

use tch::nn::{self, LSTMState};
use tch::{Device, Kind, Tensor};

use super::settings::{MIN_STEPS_PER_EPOCH, TrainSettings};
use super::trainable::Trainable;
use crate::artifact::Network;
use crate::convlstm::{ConvLstm, ConvLstmSpec, ConvLstmState};
use crate::error::{ModelError, TorchContext};
use crate::forecaster::{LstmForecaster, ModelSpec};
use crate::highway::Highway;
use crate::multimodal::{MultimodalForecaster, MultimodalSpec, MultimodalState};

/// Steps per forward call when evaluating a long sequence (bounds memory).
const EVAL_CHUNK: i64 = 1024;

/// A network run over a sequence from a carried state, forecasting the
/// next `horizon` rows at every step.
pub(crate) trait Sequential {
    type State;
    /// `x`: `[B, T, C]` scaled rows; the forecasts at every step (`[B, T,
    /// H*C]`) and the final state.
    fn forward(
        &self,
        x: &Tensor,
        state: Option<&Self::State>,
    ) -> Result<(Tensor, Self::State), ModelError>;
    /// The state cut from the graph that computed it.
    fn detach(state: &Self::State) -> Self::State;
}

impl Sequential for LstmForecaster {
    type State = LSTMState;
    fn forward(
        &self,
        x: &Tensor,
        state: Option<&LSTMState>,
    ) -> Result<(Tensor, LSTMState), ModelError> {
        self.f_forward_seq(x, state)
    }
    fn detach(state: &LSTMState) -> LSTMState {
        LSTMState((state.h().detach(), state.c().detach()))
    }
}

impl Sequential for MultimodalForecaster {
    type State = MultimodalState;
    fn forward(
        &self,
        x: &Tensor,
        state: Option<&MultimodalState>,
    ) -> Result<(Tensor, MultimodalState), ModelError> {
        Ok(self.forward_seq(x, state))
    }
    fn detach(state: &MultimodalState) -> MultimodalState {
        state.detach()
    }
}

/// A kind trained by this module: what differs between them is how one is
/// built, where its parameters and highway are, and the network it
/// becomes; the training itself ([`Trainable`]) is the same.
pub(crate) trait SequenceKind: Sequential + Sized {
    fn build(
        names: &[String],
        channels: usize,
        monitored: &[usize],
        s: &TrainSettings,
        highway: Highway,
    ) -> Result<Self, ModelError>;
    fn set_highway_weight(&self, w: &[f32]) -> Result<(), ModelError>;
    fn var_store(&self) -> &nn::VarStore;
    /// The forecast channels, the training targets.
    fn monitored(&self) -> &[usize];
    fn into_network(self) -> Network;
}

impl<T: SequenceKind> Trainable for T {
    type Data = Prepared;
    const DRAWS_WHILE_TRAINING: bool = false;
    fn check_rows(n_train: usize, n_val: usize, s: &TrainSettings) -> Result<(), ModelError> {
        check_rows(n_train, n_val, s)
    }
    fn build(
        names: &[String],
        channels: usize,
        monitored: &[usize],
        s: &TrainSettings,
        highway: Highway,
    ) -> Result<Self, ModelError> {
        <T as SequenceKind>::build(names, channels, monitored, s, highway)
    }
    fn highway_targets(s: &TrainSettings) -> (usize, usize) {
        // The next `horizon` rows after the row read.
        (s.horizon, 1)
    }
    fn set_highway_weight(&self, w: &[f32]) -> Result<(), ModelError> {
        <T as SequenceKind>::set_highway_weight(self, w)
    }
    fn var_store(&self) -> &nn::VarStore {
        <T as SequenceKind>::var_store(self)
    }
    fn prepare(
        &self,
        train: &[f32],
        val: &[f32],
        c: usize,
        s: &TrainSettings,
    ) -> Result<Prepared, ModelError> {
        Prepared::new(train, val, c, <T as SequenceKind>::monitored(self), s)
    }
    fn epoch(
        &self,
        d: &Prepared,
        opt: &mut nn::Optimizer,
        s: &TrainSettings,
    ) -> Result<f64, ModelError> {
        d.streams.epoch(self, &d.train, opt, s.grad_clip)
    }
    fn validation_loss(&self, d: &Prepared, s: &TrainSettings) -> Result<f64, ModelError> {
        eval_loss(self, &d.val, s.window)
    }
    fn into_network(self) -> Network {
        <T as SequenceKind>::into_network(self)
    }
}

/// The [`SequenceKind`] methods a kind answers with its inherent ones, and
/// the [`Network`] variant it becomes.
macro_rules! inherent_sequence_parts {
    ($kind:ident, $network:ident) => {
        fn set_highway_weight(&self, w: &[f32]) -> Result<(), ModelError> {
            $kind::set_highway_weight(self, w)
        }
        fn var_store(&self) -> &nn::VarStore {
            $kind::var_store(self)
        }
        fn monitored(&self) -> &[usize] {
            $kind::monitored(self)
        }
        fn into_network(self) -> Network {
            Network::$network(self)
        }
    };
}

impl SequenceKind for LstmForecaster {
    fn build(
        _names: &[String],
        channels: usize,
        monitored: &[usize],
        s: &TrainSettings,
        highway: Highway,
    ) -> Result<Self, ModelError> {
        let spec = ModelSpec {
            channels,
            outputs: monitored.len(),
            hidden: s.hidden,
            layers: s.layers,
            horizon: s.horizon,
        };
        let mut net = LstmForecaster::with_monitored(spec, highway, monitored.to_vec(), s.device)?;
        net.set_recurrent_context(s.recurrent_context)?;
        Ok(net)
    }
    inherent_sequence_parts!(LstmForecaster, Forecaster);
}

impl SequenceKind for MultimodalForecaster {
    fn build(
        _names: &[String],
        channels: usize,
        monitored: &[usize],
        s: &TrainSettings,
        highway: Highway,
    ) -> Result<Self, ModelError> {
        let spec = MultimodalSpec {
            channels,
            outputs: monitored.len(),
            encoder_hidden: s.encoder_hidden,
            hidden: s.hidden,
            layers: s.layers,
            horizon: s.horizon,
        };
        MultimodalForecaster::with_monitored(spec, highway, monitored.to_vec(), s.device)
    }
    inherent_sequence_parts!(MultimodalForecaster, PerVariable);
}

impl Sequential for ConvLstm {
    type State = ConvLstmState;
    fn forward(
        &self,
        x: &Tensor,
        state: Option<&ConvLstmState>,
    ) -> Result<(Tensor, ConvLstmState), ModelError> {
        self.forward_seq(x, state)
    }
    fn detach(state: &ConvLstmState) -> ConvLstmState {
        state.detach()
    }
}

impl SequenceKind for ConvLstm {
    fn build(
        names: &[String],
        channels: usize,
        monitored: &[usize],
        s: &TrainSettings,
        highway: Highway,
    ) -> Result<Self, ModelError> {
        let [rows, cols] = s.grid.unwrap_or([1, monitored.len()]);
        let layout = s.grid_layout();
        let cells =
            crate::convlstm::resolve_layout(names, monitored, rows, cols, layout.as_deref())
                .map_err(ModelError::Config)?;
        let spec = ConvLstmSpec {
            channels,
            rows,
            cols,
            cells,
            kernel: s.kernel,
            filters: s.filters,
            layers: s.layers,
            horizon: s.horizon,
        };
        ConvLstm::with_highway(spec, highway, s.device)
    }
    inherent_sequence_parts!(ConvLstm, ConvLstm);
}

/// The validation part must hold the warm-up and two batches (calibration
/// needs scores), the training part a window and a batch.
fn check_rows(n_train: usize, n_val: usize, s: &TrainSettings) -> Result<(), ModelError> {
    let need_val = s.window + 2 * s.horizon;
    if n_val < need_val {
        return Err(ModelError::Config(format!(
            "the validation part has {n_val} rows ({} of {}), fewer than warm-up ({}) \
             plus two batches ({}) = {need_val}: calibration would have too few scores. \
             Use more data, a larger validation_fraction or a smaller window/horizon",
            s.validation_fraction,
            n_train + n_val,
            s.window,
            2 * s.horizon
        )));
    }
    if n_train < s.window + s.horizon {
        return Err(ModelError::Config(format!(
            "the training part has {n_train} rows, fewer than window + horizon = {}",
            s.window + s.horizon
        )));
    }
    Ok(())
}

/// The training and validation parts on the device, and the training
/// part's streams.
pub(crate) struct Prepared {
    train: Sequence,
    val: Sequence,
    streams: Streams,
}

impl Prepared {
    fn new(
        train: &[f32],
        val: &[f32],
        c: usize,
        monitored: &[usize],
        s: &TrainSettings,
    ) -> Result<Self, ModelError> {
        let train = Sequence::new(train, c, monitored, s.horizon, s.device)?;
        let val = Sequence::new(val, c, monitored, s.horizon, s.device)?;
        let streams = Streams::new(&train, s.batch_streams, s.window)?;
        Ok(Self {
            train,
            val,
            streams,
        })
    }
}

/// A scaled sequence on the device with its forecast targets.
struct Sequence {
    /// `[len, C]`.
    x: Tensor,
    /// `[len - H + 1, M, H]`: entry `s` holds the monitored channels of
    /// rows `s..s+H`, so the target of step `t` is entry `t + 1`.
    windows: Tensor,
    len: i64,
    horizon: i64,
}

impl Sequence {
    fn new(
        rows: &[f32],
        c: usize,
        monitored: &[usize],
        horizon: usize,
        device: Device,
    ) -> Result<Self, ModelError> {
        let len = (rows.len() / c) as i64;
        let x = Tensor::f_from_slice(rows)
            .and_then(|t| t.f_view([len, c as i64]))
            .and_then(|t| t.f_to_device(device))
            .ctx("uploading data")?;
        let windows = if monitored.len() == c {
            x.f_unfold(0, horizon as i64, 1)
        } else {
            // Context channels are inputs, never targets.
            let idx: Vec<i64> = monitored.iter().map(|&j| j as i64).collect();
            Tensor::f_from_slice(&idx)
                .and_then(|i| i.f_to_device(device))
                .and_then(|i| x.f_index_select(1, &i))
                .and_then(|y| y.f_unfold(0, horizon as i64, 1))
        }
        .ctx("target windows")?;
        Ok(Self {
            x,
            windows,
            len,
            horizon: horizon as i64,
        })
    }

    /// Targets (`[B, T, H*C]`) and mask (`[B, T]`, 1 where all of rows
    /// `t+1..=t+H` exist) for input rows `index` (`[B, T]`).
    fn targets(&self, index: &[i64], b: i64, t: i64) -> Result<(Tensor, Tensor), ModelError> {
        let last_start = self.len - self.horizon;
        let (idx, mask): (Vec<i64>, Vec<f32>) = index
            .iter()
            .map(|&g| {
                let ok = g < last_start;
                ((g + 1).min(last_start), if ok { 1.0 } else { 0.0 })
            })
            .unzip();
        let dev = self.x.device();
        let idx = Tensor::f_from_slice(&idx)
            .and_then(|i| i.f_to_device(dev))
            .ctx("target index")?;
        let y = self
            .windows
            .f_index_select(0, &idx)
            // [B*T, M, H] -> [B*T, H, M]: row-major rows, as the head emits them.
            .and_then(|y| y.f_permute([0, 2, 1]))
            .and_then(|y| y.f_reshape([b, t, -1]))
            .ctx("gathering targets")?;
        let mask = Tensor::f_from_slice(&mask)
            .and_then(|m| m.f_view([b, t]))
            .and_then(|m| m.f_to_device(dev))
            .ctx("target mask")?;
        Ok((y, mask))
    }
}

/// Sum of squared errors per step averaged over the forecast (`[B, T]`),
/// masked, and the masked sum and count.
fn masked_loss(pred: &Tensor, target: &Tensor, mask: &Tensor) -> (Tensor, f64) {
    let per_step = (pred - target).square().mean_dim(-1, false, Kind::Float);
    let count = mask.sum(Kind::Float).double_value(&[]);
    ((per_step * mask).sum(Kind::Float), count)
}

/// The training part laid out as parallel contiguous streams.
struct Streams {
    /// `[S, L, C]` view of the training rows.
    x: Tensor,
    /// Row index in the training part of each `[s, t]`, row-major.
    index: Vec<i64>,
    streams: i64,
    len: i64,
    chunk: i64,
}

impl Streams {
    fn new(seq: &Sequence, wanted: usize, window: usize) -> Result<Self, ModelError> {
        // Long enough for MIN_STEPS_PER_EPOCH chunks of `window` each.
        let longest = (window * MIN_STEPS_PER_EPOCH) as i64;
        let streams = (wanted as i64).min(seq.len / longest).max(1);
        let len = seq.len / streams;
        // Drop the oldest remainder so the training part still ends right
        // before validation.
        let start = seq.len - streams * len;
        let x = seq
            .x
            .f_narrow(0, start, streams * len)
            .and_then(|x| x.f_view([streams, len, -1]))
            .ctx("stream layout")?;
        let index = (0..streams * len).map(|i| start + i).collect();
        Ok(Self {
            x,
            index,
            streams,
            len,
            chunk: window as i64,
        })
    }

    /// One pass over the streams; returns the mean training loss.
    fn epoch<N: Sequential>(
        &self,
        model: &N,
        seq: &Sequence,
        opt: &mut nn::Optimizer,
        grad_clip: f64,
    ) -> Result<f64, ModelError> {
        let mut state: Option<N::State> = None;
        let (mut total, mut count) = (0.0, 0.0);
        let mut t0 = 0;
        while t0 < self.len {
            let t = self.chunk.min(self.len - t0);
            let x = self.x.f_narrow(1, t0, t).ctx("chunk")?;
            let index: Vec<i64> = (0..self.streams)
                .flat_map(|s| {
                    let row = (s * self.len + t0) as usize;
                    self.index[row..row + t as usize].iter().copied()
                })
                .collect();
            let (y, mask) = seq.targets(&index, self.streams, t)?;
            let (pred, new_state) = model.forward(&x, state.as_ref())?;
            let (sum, n) = masked_loss(&pred, &y, &mask);
            if n > 0.0 {
                let loss = &sum / n;
                opt.backward_step_clip_norm(&loss, grad_clip);
                total += sum.double_value(&[]);
                count += n;
            }
            // Carry the state, not the graph: truncated BPTT.
            state = Some(N::detach(&new_state));
            t0 += t;
        }
        Ok(if count > 0.0 { total / count } else { f64::NAN })
    }
}

/// Mean forecast error over `seq` from zero state, counting only forecasts
/// made after at least `warmup` rows (as the engine scores).
fn eval_loss<N: Sequential>(model: &N, seq: &Sequence, warmup: usize) -> Result<f64, ModelError> {
    tch::no_grad(|| {
        let mut state: Option<N::State> = None;
        let (mut total, mut count) = (0.0, 0.0);
        let mut t0 = 0;
        while t0 < seq.len {
            let t = EVAL_CHUNK.min(seq.len - t0);
            let x = seq
                .x
                .f_narrow(0, t0, t)
                .and_then(|x| x.f_unsqueeze(0))
                .ctx("eval chunk")?;
            let index: Vec<i64> = (t0..t0 + t).collect();
            let (y, mask) = seq.targets(&index, 1, t)?;
            let skip = (warmup as i64 - 1 - t0).clamp(0, t);
            if skip > 0 {
                let _ = mask
                    .f_narrow(1, 0, skip)
                    .and_then(|mut m| m.f_zero_())
                    .ctx("mask")?;
            }
            let (pred, new_state) = model.forward(&x, state.as_ref())?;
            let (sum, n) = masked_loss(&pred, &y, &mask);
            total += sum.double_value(&[]);
            count += n;
            state = Some(new_state);
            t0 += t;
        }
        Ok(if count > 0.0 { total / count } else { f64::NAN })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_are_the_next_horizon_rows_and_masked_at_the_end() {
        crate::test_init();
        // 6 rows x 2 channels, value = 10 * row + channel.
        let rows: Vec<f32> = (0..6)
            .flat_map(|r| [10.0 * r as f32, 10.0 * r as f32 + 1.0])
            .collect();
        let seq = Sequence::new(&rows, 2, &[0, 1], 2, Device::Cpu).unwrap();
        let (y, mask) = seq.targets(&[0, 3, 4, 5], 2, 2).unwrap();
        assert_eq!(y.size(), vec![2, 2, 4]);
        let mut v = vec![0f32; 16];
        y.copy_data(&mut v, 16);
        // Step 0 -> rows 1, 2; step 3 -> rows 4, 5.
        assert_eq!(&v[..8], &[10.0, 11.0, 20.0, 21.0, 40.0, 41.0, 50.0, 51.0]);
        let mut m = vec![0f32; 4];
        mask.copy_data(&mut m, 4);
        assert_eq!(m, vec![1.0, 1.0, 0.0, 0.0]);
        // Channel 0 as context: the targets are channel 1 alone.
        let seq = Sequence::new(&rows, 2, &[1], 2, Device::Cpu).unwrap();
        let (y, _) = seq.targets(&[0, 3], 1, 2).unwrap();
        assert_eq!(y.size(), vec![1, 2, 2]);
        let mut v = vec![0f32; 4];
        y.copy_data(&mut v, 4);
        assert_eq!(v, vec![11.0, 21.0, 41.0, 51.0]);
    }

    /// The validation loss of the kept weights, evaluated again, is the
    /// best epoch's (the weights really are the best epoch's).
    #[test]
    fn the_kept_weights_give_the_best_epochs_validation_loss() {
        crate::test_init();
        let data = crate::train::tests::d00().slice(0..200);
        let s = TrainSettings {
            hidden: 8,
            layers: 1,
            epochs: 40,
            // Far too high: validation loss soon stops improving.
            learning_rate: 0.05,
            patience: 2,
            validation_fraction: 0.25,
            ..crate::train::tests::small()
        };
        let t = crate::train::train(&data, &s, |_| {}).unwrap();
        let best = &t.runs[0].history[t.runs[0].best_epoch - 1];
        let Network::Forecaster(m) = &t.network else {
            panic!("a forecaster")
        };
        let val = data.slice(150..200);
        let x = t.scaler.transformed(&val.rows);
        let all: Vec<usize> = (0..52).collect();
        let seq = Sequence::new(&x, 52, &all, s.horizon, Device::Cpu).unwrap();
        let again = eval_loss(m, &seq, s.window).unwrap();
        assert!(
            (again - best.val_loss).abs() < 1e-9,
            "{again} vs {}",
            best.val_loss
        );
    }
}
