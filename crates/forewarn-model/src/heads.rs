//! Classification heads on a stacked LSTM, for labelled faults: a
//! logistic head (fault / no fault) and a softmax head (which fault class).
//! The LSTM reads a window of `window` scaled rows; the head reads its last
//! hidden state.
//!
//! [`tep_softmax_report`] trains the softmax head on the Tennessee Eastman
//! fault *training* runs (`dNN.dat`, 21 classes) and reports per-class
//! accuracy and the confusion matrix on the fault *test* runs
//! (`dNN_te.dat`, windows entirely after the onset at sample 160).

use std::path::Path;

use forewarn_core::Scaler;
use tch::nn::{self, Module, OptimizerConfig, RNN};
use tch::{Device, Kind, Tensor};

use crate::dataset::{TEP_TEST_FAULT_START, read_tep};
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
    pub fn fit(
        &mut self,
        x: &Tensor,
        y: &[i64],
        cfg: &ClassifierConfig,
    ) -> Result<Vec<f64>, ModelError> {
        let n = x.size()[0];
        let labels = Tensor::from_slice(y).to_device(cfg.device);
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
                    Head::Logistic => logits
                        .squeeze_dim(1)
                        .binary_cross_entropy_with_logits::<Tensor>(
                            &target.to_kind(Kind::Float),
                            None,
                            None,
                            tch::Reduction::Mean,
                        ),
                    Head::Softmax { .. } => logits.cross_entropy_for_logits(&target),
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

/// Windows of `window` rows every `stride` rows of row-major `rows` (`c`
/// channels), scaled: `[N, window, c]`.
pub fn windows(rows: &[f32], c: usize, scaler: &Scaler, window: usize, stride: usize) -> Tensor {
    let mut v = rows.to_vec();
    scaler.transform_all(&mut v);
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

/// Softmax head on TEP: scaler fitted on `d00.dat`; trained on the
/// windows of `d01.dat`..`d{faults}.dat` (class = fault - 1); tested on the
/// windows of `dNN_te.dat` lying entirely after the onset (sample 160).
pub fn tep_softmax_report(
    tep_dir: &Path,
    faults: usize,
    cfg: &ClassifierConfig,
) -> Result<ClassReport, ModelError> {
    let normal = read_tep(&tep_dir.join("d00.dat"))?;
    let c = normal.n_channels();
    let scaler = Scaler::fit(&normal.rows, c);
    let (mut xs, mut ys, mut xt, mut yt) = (vec![], vec![], vec![], vec![]);
    for f in 1..=faults {
        let train = read_tep(&tep_dir.join(format!("d{f:02}.dat")))?;
        let w = windows(&train.rows, c, &scaler, cfg.window, cfg.stride);
        ys.extend(std::iter::repeat_n((f - 1) as i64, w.size()[0] as usize));
        xs.push(w);
        let test = read_tep(&tep_dir.join(format!("d{f:02}_te.dat")))?;
        let after = &test.rows[TEP_TEST_FAULT_START * c..];
        let w = windows(after, c, &scaler, cfg.window, cfg.window);
        yt.extend(std::iter::repeat_n((f - 1) as i64, w.size()[0] as usize));
        xt.push(w);
    }
    let x = Tensor::cat(&xs, 0).to_device(cfg.device);
    let mut model = LstmClassifier::new(c, Head::Softmax { classes: faults }, cfg);
    model.fit(&x, &ys, cfg)?;
    let pred = model.predict(&Tensor::cat(&xt, 0).to_device(cfg.device));
    Ok(class_report(&yt, &pred, faults))
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

    /// Prints the TEP softmax report for docs/ACCURACY.md:
    /// `cargo test -p forewarn-model --lib tep_softmax -- --ignored --nocapture`.
    #[test]
    #[ignore = "trains on all 21 TEP fault runs (about a minute)"]
    fn tep_softmax() {
        crate::test_init();
        let dir = Path::new(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../../shared/data/tep"
        ));
        let r = tep_softmax_report(dir, 21, &ClassifierConfig::default()).unwrap();
        println!("accuracy {:.3}", r.accuracy);
        println!("| fault | accuracy | predicted as (count) |");
        println!("| --- | --- | --- |");
        for (k, row) in r.matrix.iter().enumerate() {
            let top: Vec<String> = {
                let mut v: Vec<(usize, u64)> = row
                    .iter()
                    .copied()
                    .enumerate()
                    .filter(|(_, n)| *n > 0)
                    .collect();
                v.sort_by_key(|e| std::cmp::Reverse(e.1));
                v.iter()
                    .take(3)
                    .map(|(j, n)| format!("{} ({n})", j + 1))
                    .collect()
            };
            println!("| {} | {:.2} | {} |", k + 1, r.per_class[k], top.join(", "));
        }
        println!("confusion matrix (rows true fault 1..21, columns predicted):");
        for row in &r.matrix {
            println!(
                "{}",
                row.iter()
                    .map(|n| format!("{n:3}"))
                    .collect::<Vec<_>>()
                    .join("")
            );
        }
    }
}
