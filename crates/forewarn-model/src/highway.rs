//! The linear "highway" (LSTNet's autoregressive component, Lai et al.
//! 2018), shared by every model kind: a linear map of the current scaled
//! row added to the network's output.
//!
//! - The forecasters (joint and per-variable) add `W x_t` to the forecast
//!   of the next `horizon` rows made after row `t` (`W`: `[H*C, C]`).
//! - The autoencoder adds `W x_t` to its reconstruction of the same row
//!   `t` (`W`: `[C, C]`); only [`Highway::Cross`] (zero diagonal) makes
//!   sense there, since `full` would learn the identity and reconstruct
//!   every fault perfectly.
//!
//! A linear map extrapolates to operating points the training data never
//! reached, where the tanh-saturated LSTM cannot; `cross` explains each
//! channel from the *other* channels only, so a fault on one channel breaks
//! its relation to the rest instead of being followed by its own value.
//! The weights are one parameter, `highway.weight`, in the network's
//! `VarStore`, so `weights.rs` saves, checks and hashes them like the rest.

use serde::{Deserialize, Serialize};
use tch::{Device, Tensor, nn};

use crate::error::{ModelError, TorchContext};

/// The linear map of the current row added to the network's output.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "clap", derive(clap::ValueEnum))]
#[serde(rename_all = "snake_case")]
pub enum Highway {
    /// The network alone (every artifact before the highway).
    #[default]
    None,
    /// Every output channel from every channel of the current row.
    Full,
    /// Every output channel from the *other* channels of the current row
    /// (the map's weights from a channel to its own output are held at
    /// zero): cross-channel regression, as MSET and PCA residuals use.
    Cross,
}

impl Highway {
    /// Name and shape of the highway's parameter for `rows` output rows of
    /// `outputs` (monitored) channels read from rows of `channels` (all,
    /// context included), if any: `[rows*M, C]`, row `h*M + j` mapping to
    /// monitored channel `j` of output row `h`.
    pub fn param_shape_for(
        self,
        rows: usize,
        outputs: usize,
        channels: usize,
    ) -> Option<(String, Vec<i64>)> {
        match self {
            Highway::None => None,
            Highway::Full | Highway::Cross => Some((
                "highway.weight".into(),
                vec![(rows * outputs) as i64, channels as i64],
            )),
        }
    }

    /// 1 where a weight is used, 0 where it is held at zero (`[rows*M, C]`
    /// row-major; output `j` is input `monitored[j]`); `None` when every
    /// weight is used. `cross` holds each output's weight from its own
    /// input at zero.
    pub fn mask_for(self, rows: usize, monitored: &[usize], channels: usize) -> Option<Vec<f32>> {
        match self {
            Highway::None | Highway::Full => None,
            Highway::Cross => {
                let (m, c) = (monitored.len(), channels);
                Some(
                    (0..rows * m * c)
                        .map(|i| {
                            if monitored[(i / c) % m] == i % c {
                                0.0
                            } else {
                                1.0
                            }
                        })
                        .collect(),
                )
            }
        }
    }

    /// The highway a model over `channels` actually gets: a cross-channel
    /// highway needs another channel to read, so on one channel it is none.
    pub fn for_channels(self, channels: usize) -> Self {
        match self {
            Highway::Cross if channels < 2 => Highway::None,
            h => h,
        }
    }
}

/// The highway's parameter (shared with the network's `VarStore`) and its
/// mask; what each model kind holds when it has a highway.
pub(crate) struct HighwayLayer {
    weight: Tensor,
    mask: Option<Tensor>,
    shape: [i64; 2],
}

impl HighwayLayer {
    /// `highway.weight` under `root` for `rows` output rows of the
    /// `monitored` channels of `channels`, starting at zero (the output
    /// starts as the network's alone); `None` for [`Highway::None`].
    pub(crate) fn new(
        root: &nn::Path<'_>,
        highway: Highway,
        rows: usize,
        monitored: &[usize],
        channels: usize,
        device: Device,
    ) -> Result<Option<Self>, ModelError> {
        let Some((_, shape)) = highway.param_shape_for(rows, monitored.len(), channels) else {
            return Ok(None);
        };
        let shape = [shape[0], shape[1]];
        let weight = (root / "highway").zeros("weight", &shape);
        let mask = highway
            .mask_for(rows, monitored, channels)
            .map(|m| {
                Tensor::f_from_slice(&m)
                    .and_then(|t| t.f_view(shape))
                    .and_then(|t| t.f_to_device(device))
            })
            .transpose()
            .ctx("highway mask")?;
        Ok(Some(Self {
            weight,
            mask,
            shape,
        }))
    }

    /// The effective (masked) weights.
    fn weight(&self) -> Result<Tensor, ModelError> {
        match &self.mask {
            None => Ok(self.weight.shallow_clone()),
            Some(mask) => self.weight.f_mul(mask).ctx("highway mask"),
        }
    }

    /// `y + W x` over the last dimension: `x` holds the rows the outputs
    /// `y` were made from (`[..., C]` against `[..., rows*C]`).
    pub(crate) fn add(&self, y: Tensor, x: &Tensor) -> Result<Tensor, ModelError> {
        x.f_linear::<&Tensor>(&self.weight()?, None)
            .and_then(|l| y.f_add(&l))
            .ctx("highway forward")
    }

    /// Sets the weights (`[rows*C, C]` row-major; masked entries must be
    /// zero). Used to start training from a least-squares fit.
    pub(crate) fn set_weight(&self, w: &[f32]) -> Result<(), ModelError> {
        let src = Tensor::f_from_slice(w)
            .and_then(|t| t.f_view(self.shape))
            .and_then(|t| t.f_to_device(self.weight.device()))
            .ctx("highway weights")?;
        let mut param = self.weight.shallow_clone();
        tch::no_grad(|| param.f_copy_(&src)).ctx("setting highway weights")?;
        Ok(())
    }
}

/// `y` plus the highway's map of `x` where there is a highway.
pub(crate) fn add(
    layer: Option<&HighwayLayer>,
    y: Tensor,
    x: &Tensor,
) -> Result<Tensor, ModelError> {
    match layer {
        None => Ok(y),
        Some(l) => l.add(y, x),
    }
}

/// Sets the weights of `layer`, an error without a highway.
pub(crate) fn set_weight(layer: Option<&HighwayLayer>, w: &[f32]) -> Result<(), ModelError> {
    layer
        .ok_or_else(|| ModelError::Config("the model has no highway".into()))?
        .set_weight(w)
}

/// Ridge regression of every output target on the row `x_t` it is made
/// from, the start of a highway's training: for each of the `rows` output
/// rows `h` and each monitored channel `j` (output `o`, `monitored[o] =
/// j`), least squares of `x[t+lead+h][j]` on `x[t]` (on the channels other
/// than `j` for [`Highway::Cross`]; context channels are read, never
/// targets) over the
/// scaled training rows `data` (`channels` wide), with a ridge of 1e-3 x
/// the number of samples (the channels have unit variance). `lead` 1: the
/// forecasters' targets, the rows after `x_t`; `lead` 0 with one row: the
/// autoencoder's, `x_t` itself. Returns the `[rows*M, C]` weights row-major
/// (masked entries 0), or `None` without a highway or with too few rows.
pub fn least_squares(
    data: &[f32],
    channels: usize,
    monitored: &[usize],
    rows: usize,
    lead: usize,
    highway: Highway,
) -> Option<Vec<f32>> {
    let (c, hz, mo) = (channels, rows, monitored.len());
    if highway == Highway::None || c == 0 || hz == 0 || mo == 0 {
        return None;
    }
    let n = data.len() / c;
    let samples = (n + 1).checked_sub(lead + hz)?;
    if samples < 2 {
        return None;
    }
    let x = |t: usize, k: usize| f64::from(data[t * c + k]);
    // Gram matrix of the regressors and their products with every target.
    let mut gram = vec![0.0; c * c];
    let mut xy = vec![0.0; c * hz * mo]; // [k][h*M + o]
    for t in 0..samples {
        for a in 0..c {
            let xa = x(t, a);
            for b in 0..c {
                gram[a * c + b] += xa * x(t, b);
            }
            for h in 0..hz {
                for (o, &j) in monitored.iter().enumerate() {
                    xy[a * hz * mo + h * mo + o] += xa * x(t + lead + h, j);
                }
            }
        }
    }
    let ridge = 1e-3 * samples as f64;
    let mut w = vec![0f32; hz * mo * c];
    for (o, &j) in monitored.iter().enumerate() {
        let used: Vec<usize> = (0..c)
            .filter(|&k| highway == Highway::Full || k != j)
            .collect();
        if used.is_empty() {
            continue;
        }
        let m = used.len();
        let mut a = vec![0.0; m * m];
        for (p, &kp) in used.iter().enumerate() {
            for (q, &kq) in used.iter().enumerate() {
                a[p * m + q] = gram[kp * c + kq];
            }
            a[p * m + p] += ridge;
        }
        let chol = cholesky(&a, m)?;
        for h in 0..hz {
            let rhs: Vec<f64> = used.iter().map(|&k| xy[k * hz * mo + h * mo + o]).collect();
            let beta = cholesky_solve(&chol, m, &rhs);
            for (p, &k) in used.iter().enumerate() {
                w[(h * mo + o) * c + k] = beta[p] as f32;
            }
        }
    }
    Some(w)
}

/// Lower-triangular `L` with `L L^T = a` (`m x m`, symmetric positive
/// definite), or `None` when `a` is not.
fn cholesky(a: &[f64], m: usize) -> Option<Vec<f64>> {
    let mut l = vec![0.0; m * m];
    for i in 0..m {
        for j in 0..=i {
            let s: f64 = (0..j).map(|k| l[i * m + k] * l[j * m + k]).sum();
            if i == j {
                let d = a[i * m + i] - s;
                if !(d > 0.0 && d.is_finite()) {
                    return None;
                }
                l[i * m + i] = d.sqrt();
            } else {
                l[i * m + j] = (a[i * m + j] - s) / l[j * m + j];
            }
        }
    }
    Some(l)
}

/// Solves `L L^T x = b` for the factor of [`cholesky`].
fn cholesky_solve(l: &[f64], m: usize, b: &[f64]) -> Vec<f64> {
    let mut y = vec![0.0; m];
    for i in 0..m {
        let s: f64 = (0..i).map(|k| l[i * m + k] * y[k]).sum();
        y[i] = (b[i] - s) / l[i * m + i];
    }
    let mut x = vec![0.0; m];
    for i in (0..m).rev() {
        let s: f64 = (i + 1..m).map(|k| l[k * m + i] * x[k]).sum();
        x[i] = (y[i] - s) / l[i * m + i];
    }
    x
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The forecasters' fit (lead 1): the next row from this one.
    #[test]
    fn least_squares_recovers_a_linear_process() {
        // x0 and x1 wander; the next row is an exact linear map of this one:
        // x2' = 0.5 x0 - x1, x0' = 0.9 x0 + 0.2 x1, x1' = 0.8 x1.
        let n = 4000;
        let mut rows = vec![0f32; n * 3];
        // Independent innovations in [-1, 1) (xorshift).
        let mut state = 0x9e37_79b9_7f4a_7c15u64;
        let mut draws = vec![0f32; 3 * n];
        for d in &mut draws {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            *d = (state >> 40) as f32 / (1u64 << 23) as f32 - 1.0;
        }
        for t in 0..n {
            let e = |k: usize| draws[t * 3 + k];
            if t == 0 {
                rows[..3].copy_from_slice(&[e(0), e(1), e(2)]);
                continue;
            }
            let (x0, x1) = (rows[(t - 1) * 3], rows[(t - 1) * 3 + 1]);
            rows[t * 3] = 0.9 * x0 + 0.2 * x1 + e(0);
            rows[t * 3 + 1] = 0.8 * x1 + e(1);
            rows[t * 3 + 2] = 0.5 * x0 - x1;
        }
        let all = [0, 1, 2];
        assert_eq!(least_squares(&rows, 3, &all, 1, 1, Highway::None), None);
        let w = least_squares(&rows, 3, &all, 1, 1, Highway::Full).unwrap();
        let want = [0.9, 0.2, 0.0, 0.0, 0.8, 0.0, 0.5, -1.0, 0.0];
        for (i, (got, want)) in w.iter().zip(want).enumerate() {
            assert!((got - want).abs() < 0.05, "weight {i}: {got} vs {want}");
        }
        // Cross: nothing from a channel to itself; x2 still from x0, x1.
        let w = least_squares(&rows, 3, &all, 1, 1, Highway::Cross).unwrap();
        assert_eq!((w[0], w[4], w[8]), (0.0, 0.0, 0.0));
        assert!(
            (w[6] - 0.5).abs() < 0.05 && (w[7] + 1.0).abs() < 0.05,
            "{w:?}"
        );
        // x1 as context: outputs x0 and x2 only, each read from all three.
        let w = least_squares(&rows, 3, &[0, 2], 1, 1, Highway::Cross).unwrap();
        assert_eq!(w.len(), 6);
        assert_eq!((w[0], w[5]), (0.0, 0.0));
        assert!(
            (w[3] - 0.5).abs() < 0.05 && (w[4] + 1.0).abs() < 0.05,
            "{w:?}"
        );
        assert_eq!(
            Highway::Cross.mask_for(1, &[0, 2], 3),
            Some(vec![0.0, 1.0, 1.0, 1.0, 1.0, 0.0])
        );
    }
}
