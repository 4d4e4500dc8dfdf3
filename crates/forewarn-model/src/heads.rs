//! Classification heads on a stacked LSTM, for labelled faults: a
//! logistic head (fault / no fault) and a softmax head (which fault class).
//! The LSTM reads a window of `window` scaled rows; the head reads its last
//! hidden state. `forewarn classify` trains and reports them
//! (docs/ACCURACY.md has the Tennessee Eastman run).

use forewarn_core::Scaler;
use tch::nn::{self, Module, OptimizerConfig, RNN};
use tch::{Device, Kind, Tensor};

use crate::error::{ModelError, TorchContext};

/// What the head outputs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Head {
    /// One logit: fault (1) or not (0), binary cross-entropy.
    Logistic,
    /// One logit per class, cross-entropy.
    Softmax { classes: usize },
}

impl Head {
    fn outputs(&self) -> i64 {
        match self {
            Head::Logistic => 1,
            Head::Softmax { classes } => *classes as i64,
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct ClassifierConfig {
    pub hidden: usize,
    pub layers: usize,
    /// Rows per window.
    pub window: usize,
    /// Rows between window starts when cutting training data.
    pub stride: usize,
    pub epochs: usize,
    pub learning_rate: f64,
    pub batch_size: usize,
    pub seed: u64,
    pub device: Device,
}

impl Default for ClassifierConfig {
    fn default() -> Self {
        Self {
            hidden: 32,
            layers: 2,
            window: 20,
            stride: 5,
            epochs: 30,
            learning_rate: 5e-3,
            batch_size: 64,
            seed: 42,
            device: Device::Cpu,
        }
    }
}

pub struct LstmClassifier {
    head_kind: Head,
    vs: nn::VarStore,
    lstm: nn::LSTM,
    head: nn::Linear,
}

impl std::fmt::Debug for LstmClassifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LstmClassifier")
            .field("head", &self.head_kind)
            .finish_non_exhaustive()
    }
}

impl LstmClassifier {
    /// A freshly initialised classifier; libtorch is seeded with
    /// `cfg.seed` first, so initialisation and training are reproducible.
    pub fn new(channels: usize, head: Head, cfg: &ClassifierConfig) -> Self {
        tch::manual_seed(cfg.seed as i64);
        let vs = nn::VarStore::new(cfg.device);
        let root = vs.root();
        let lstm = nn::lstm(
            &root / "lstm",
            channels as i64,
            cfg.hidden as i64,
            nn::RNNConfig {
                num_layers: cfg.layers as i64,
                batch_first: true,
                ..Default::default()
            },
        );
        let out = nn::linear(
            &root / "head",
            cfg.hidden as i64,
            head.outputs(),
            Default::default(),
        );
        Self {
            head_kind: head,
            vs,
            lstm,
            head: out,
        }
    }

    /// Logits of windows `x` (`[B, T, C]`): `[B, K]`.
    pub fn logits(&self, x: &Tensor) -> Tensor {
        let (out, _) = self.lstm.seq(x);
        let t = out.size()[1];
        self.head.forward(&out.select(1, t - 1))
    }

    /// Class probabilities of windows `x` (`[B, T, C]`): `[B, K]`, each
    /// row summing to 1 (the logistic head: `[not, fault]`).
    pub fn probabilities(&self, x: &Tensor) -> Tensor {
        let y = tch::no_grad(|| self.logits(x));
        match self.head_kind {
            Head::Logistic => {
                let p = y.sigmoid();
                Tensor::cat(&[p.ones_like() - &p, p], 1)
            }
            Head::Softmax { .. } => y.softmax(1, Kind::Float),
        }
    }

    pub fn head(&self) -> Head {
        self.head_kind
    }

    pub(crate) fn var_store(&self) -> &nn::VarStore {
        &self.vs
    }

    /// Predicted class per window (0/1 for the logistic head).
    pub fn predict(&self, x: &Tensor) -> Vec<i64> {
        let y = tch::no_grad(|| self.logits(x));
        let classes = match self.head_kind {
            Head::Logistic => y.squeeze_dim(1).gt(0.0).to_kind(Kind::Int64),
            Head::Softmax { .. } => y.argmax(1, false),
        };
        Vec::<i64>::try_from(&classes).unwrap_or_default()
    }

    /// Trains on windows `x` (`[N, T, C]`) with labels `y` (class index).
    /// Each class weighs in the loss in inverse proportion to its windows
    /// ([`class_weights`]): labelled plant data is mostly normal, or mostly
    /// one fault, and unweighted the head would learn to name the common
    /// class whatever it reads.
    pub fn fit(
        &mut self,
        x: &Tensor,
        y: &[i64],
        cfg: &ClassifierConfig,
    ) -> Result<Vec<f64>, ModelError> {
        let n = x.size()[0];
        let labels = Tensor::from_slice(y).to_device(cfg.device);
        let k = self.head_kind.outputs().max(2) as usize;
        let weights = class_weights(y, k);
        // Logistic: BCE's positive-class weight n0 / n1 gives the same balance.
        let pos_weight =
            Tensor::from_slice(&[(weights[1] / weights[0]) as f32]).to_device(cfg.device);
        let class_weight =
            Tensor::from_slice(&weights.iter().map(|w| *w as f32).collect::<Vec<_>>())
                .to_device(cfg.device);
        let mut opt = nn::Adam::default()
            .build(&self.vs, cfg.learning_rate)
            .ctx("optimizer")?;
        let mut losses = Vec::with_capacity(cfg.epochs);
        for _ in 0..cfg.epochs {
            let perm = Tensor::randperm(n, (Kind::Int64, cfg.device));
            let (mut total, mut k) = (0.0, 0.0);
            let mut i = 0;
            while i < n {
                let m = (cfg.batch_size as i64).min(n - i);
                let idx = perm.narrow(0, i, m);
                let logits = self.logits(&x.index_select(0, &idx));
                let target = labels.index_select(0, &idx);
                let loss = match self.head_kind {
                    Head::Logistic => logits.squeeze_dim(1).binary_cross_entropy_with_logits(
                        &target.to_kind(Kind::Float),
                        None,
                        Some(&pos_weight),
                        tch::Reduction::Mean,
                    ),
                    Head::Softmax { .. } => logits.cross_entropy_loss(
                        &target,
                        Some(&class_weight),
                        tch::Reduction::Mean,
                        -100,
                        0.0,
                    ),
                };
                opt.backward_step_clip_norm(&loss, 1.0);
                total += loss.double_value(&[]) * m as f64;
                k += m as f64;
                i += m;
            }
            losses.push(total / k.max(1.0));
        }
        Ok(losses)
    }
}

/// Loss weight per class (`0..k`) for labels `y`: `n / (k' n_c)` over the
/// `k'` classes present, so every present class weighs the same in total;
/// an absent class gets 1 (it contributes nothing either way).
pub fn class_weights(y: &[i64], k: usize) -> Vec<f64> {
    let mut counts = vec![0usize; k];
    for c in y {
        if let Some(n) = counts.get_mut(*c as usize) {
            *n += 1;
        }
    }
    let present = counts.iter().filter(|n| **n > 0).count().max(1);
    counts
        .iter()
        .map(|n| {
            if *n == 0 {
                1.0
            } else {
                y.len() as f64 / (present * n) as f64
            }
        })
        .collect()
}

/// Windows of `window` rows every `stride` rows of row-major `rows` (`c`
/// channels), scaled: `[N, window, c]`.
pub fn windows(rows: &[f32], c: usize, scaler: &Scaler, window: usize, stride: usize) -> Tensor {
    let v = scaler.transformed(rows);
    let n = rows.len() / c;
    let x = Tensor::from_slice(&v).view([n as i64, c as i64]);
    x.unfold(0, window as i64, stride as i64)
        .permute([0, 2, 1])
        .contiguous()
}

/// Per-class accuracy and the confusion matrix (`matrix[true][predicted]`).
#[derive(Debug, Clone, PartialEq)]
pub struct ClassReport {
    pub accuracy: f64,
    pub per_class: Vec<f64>,
    pub matrix: Vec<Vec<u64>>,
}

pub fn class_report(truth: &[i64], pred: &[i64], classes: usize) -> ClassReport {
    let mut matrix = vec![vec![0u64; classes]; classes];
    for (t, p) in truth.iter().zip(pred) {
        matrix[*t as usize][*p as usize] += 1;
    }
    let per_class = (0..classes)
        .map(|k| {
            let row: u64 = matrix[k].iter().sum();
            if row == 0 {
                0.0
            } else {
                matrix[k][k] as f64 / row as f64
            }
        })
        .collect();
    let correct: u64 = (0..classes).map(|k| matrix[k][k]).sum();
    ClassReport {
        accuracy: correct as f64 / truth.len().max(1) as f64,
        per_class,
        matrix,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn class_report_by_hand() {
        // truth 0,0,1,1,2 ; pred 0,1,1,1,0
        let r = class_report(&[0, 0, 1, 1, 2], &[0, 1, 1, 1, 0], 3);
        assert_eq!(r.matrix, vec![vec![1, 1, 0], vec![0, 2, 0], vec![1, 0, 0]]);
        assert_eq!(r.per_class, vec![0.5, 1.0, 0.0]);
        assert!((r.accuracy - 0.6).abs() < 1e-12);
    }

    #[test]
    fn class_weights_balance_the_classes_present() {
        // 6 of class 0, 2 of class 1, none of class 2: 8 / (2 x 6), 8 / (2 x 2).
        let w = class_weights(&[0, 0, 0, 0, 0, 0, 1, 1], 3);
        assert_eq!(w, vec![8.0 / 12.0, 2.0, 1.0]);
        assert_eq!(class_weights(&[0, 1], 2), vec![1.0, 1.0]);
    }

    #[test]
    fn logistic_head_separates_a_shifted_class() {
        crate::test_init();
        // Class 1 windows are class 0 windows shifted by +2 on channel 0.
        let cfg = ClassifierConfig {
            hidden: 8,
            layers: 1,
            window: 6,
            stride: 3,
            epochs: 30,
            learning_rate: 1e-2,
            ..ClassifierConfig::default()
        };
        let rows: Vec<f32> = (0..300)
            .flat_map(|i| [(i as f32 * 0.3).sin(), (i as f32 * 0.1).cos()])
            .collect();
        let shifted: Vec<f32> = rows
            .iter()
            .enumerate()
            .map(|(i, v)| if i % 2 == 0 { v + 2.0 } else { *v })
            .collect();
        let scaler = Scaler::fit(&rows, 2);
        let a = windows(&rows, 2, &scaler, 6, 3);
        let b = windows(&shifted, 2, &scaler, 6, 3);
        let n = a.size()[0] as usize;
        let x = Tensor::cat(&[a, b], 0);
        let y: Vec<i64> = (0..2 * n).map(|i| i64::from(i >= n)).collect();
        let mut m = LstmClassifier::new(2, Head::Logistic, &cfg);
        let losses = m.fit(&x, &y, &cfg).unwrap();
        assert!(losses[losses.len() - 1] < 0.5 * losses[0], "{losses:?}");
        let r = class_report(&y, &m.predict(&x), 2);
        // Other tests share libtorch's global RNG, so the exact result
        // varies with scheduling; the margin covers that.
        assert!(r.accuracy > 0.9, "{r:?}");
    }
}
