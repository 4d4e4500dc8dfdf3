//! The one training loop of every model kind.
//!
//! The tail of the data (`validation_fraction`) is held out: unseen by the
//! scaler and the optimizer, it decides early stopping (and, in
//! `forewarn-offline`, calibrates the threshold). The loop fits the scaler
//! on the training part and the highway's least-squares start once; then,
//! for each ensemble member, it seeds libtorch, builds the network, starts
//! its highway from that fit and trains with Adam epoch by epoch, keeping
//! the weights of the epoch with the best validation loss and stopping
//! after `patience` epochs without a better one. What differs
//! between the kinds (the network, the layout of the rows, the loss) is
//! behind [`trainable::Trainable`]: `sequence` for the forecasting kinds,
//! `windows` for the autoencoder.

mod sequence;
mod settings;
mod trainable;
mod windows;

use std::sync::{Mutex, PoisonError};
use std::time::Instant;

use forewarn_core::Scaler;
use forewarn_data::Dataset;
use serde::Serialize;
use tch::nn::{self, OptimizerConfig};

use crate::artifact::{ModelKind, Network};
use crate::autoencoder::LstmAutoencoder;
use crate::convlstm::ConvLstm;
use crate::error::{ModelError, TorchContext};
use crate::forecaster::LstmForecaster;
use crate::highway::Highway;
use crate::multimodal::MultimodalForecaster;
use crate::weights;
pub use settings::{MIN_STEPS_PER_EPOCH, TrainSettings};
use trainable::Trainable;

/// Turns at libtorch's global random generator (see [`run`]).
static GENERATOR: Mutex<()> = Mutex::new(());

/// Progress after one epoch.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct EpochReport {
    /// The ensemble member trained (1-based) of `members`.
    pub member: usize,
    pub members: usize,
    /// 1-based.
    pub epoch: usize,
    pub epochs: usize,
    /// The training loss over the epoch (scaled units).
    pub train_loss: f64,
    /// The loss on the validation part (forecasting kinds: from zero
    /// state, over the steps the engine would score, after warm-up).
    pub val_loss: f64,
    pub seconds: f64,
}

/// A trained network with what the engine needs to run it.
pub struct Trained {
    /// One network, or the [ensemble](Network::ensemble) of `members`.
    pub network: Network,
    /// Fitted on the training part.
    pub scaler: Scaler,
    pub train_rows: usize,
    pub validation_rows: usize,
    /// Each member's training, in member order.
    pub runs: Vec<TrainingRun>,
}

/// How one network trained.
#[derive(Debug, Clone)]
pub struct TrainingRun {
    pub history: Vec<EpochReport>,
    /// The epoch whose weights were kept (1-based): the first with the
    /// lowest finite validation loss.
    pub best_epoch: usize,
}

impl TrainingRun {
    /// Training and validation loss of the epoch whose weights were kept.
    pub fn final_losses(&self) -> (f64, f64) {
        let r = &self.history[self.best_epoch - 1];
        (r.train_loss, r.val_loss)
    }
}

impl std::fmt::Debug for Trained {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Trained")
            .field("network", &self.network)
            .field("train_rows", &self.train_rows)
            .field("runs", &self.runs)
            .finish_non_exhaustive()
    }
}

impl Trained {
    /// Training and validation loss of the kept epochs, the members' mean
    /// (each member's own: the ensemble's forecast is not what trained).
    pub fn final_losses(&self) -> (f64, f64) {
        let n = self.runs.len() as f64;
        let (t, v) = (self.runs.iter().map(TrainingRun::final_losses))
            .fold((0.0, 0.0), |(t, v), (rt, rv)| (t + rt, v + rv));
        (t / n, v / n)
    }
}

/// Trains `s.members` networks of `s.kind` on `data` (normal operation),
/// each from its own seed ([`TrainSettings::member_seed`]), keeping each
/// one's weights of its best validation epoch; `on_epoch` sees every epoch.
pub fn train(
    data: &Dataset,
    s: &TrainSettings,
    mut on_epoch: impl FnMut(&EpochReport),
) -> Result<Trained, ModelError> {
    s.validate()?;
    data.check()?;
    match s.kind {
        ModelKind::Forecaster => train_kind::<LstmForecaster>(data, s, &mut on_epoch),
        ModelKind::PerVariable => train_kind::<MultimodalForecaster>(data, s, &mut on_epoch),
        ModelKind::Autoencoder => train_kind::<LstmAutoencoder>(data, s, &mut on_epoch),
        ModelKind::ConvLstm => train_kind::<ConvLstm>(data, s, &mut on_epoch),
    }
}

/// Which ensemble member [`run`] trains.
#[derive(Debug, Clone, Copy)]
struct Member {
    seed: u64,
    /// 1-based.
    number: usize,
}

/// What every member trains on: the scaled rows and the highway's start,
/// the same for all of them (neither draws from the generator).
struct Prepared<'a> {
    channels: &'a [String],
    monitored: Vec<usize>,
    train_scaled: Vec<f32>,
    val_scaled: Vec<f32>,
    highway: Highway,
    highway_start: Option<Vec<f32>>,
}

/// The data scaled once, then `s.members` networks of kind `N` trained on it.
fn train_kind<N: Trainable>(
    data: &Dataset,
    s: &TrainSettings,
    on_epoch: &mut impl FnMut(&EpochReport),
) -> Result<Trained, ModelError> {
    let c = data.n_channels();
    let n = data.len();
    let n_val = (n as f64 * s.validation_fraction).round() as usize;
    let n_train = n - n_val;
    N::check_rows(n_train, n_val, s)?;
    if let Some(labels) = &data.labels {
        let anomalous = labels.iter().filter(|l| **l != 0).count();
        if anomalous > 0 {
            // The model learns "normal" from everything it is given.
            tracing::warn!(
                anomalous,
                source = %data.source,
                "training data has rows labelled anomalous; they are used as normal"
            );
        }
    }
    let context = forewarn_data::context_flags(&data.channels, &s.context, &data.source)?;
    let monitored: Vec<usize> = (0..c).filter(|&j| !context[j]).collect();
    let (train_raw, val_raw) = data.rows.split_at(n_train * c);
    // Fitted on the training part only: validation must look like unseen data.
    let mut scaler = Scaler::fit_with(train_raw, c, s.robust_scaling);
    // A monitored channel constant in training must still alarm when it
    // moves; a context channel is read as its constant.
    scaler.monitor_constant_channels(train_raw, &context);
    let train_scaled = scaler.transformed(train_raw);
    let highway = s.highway.for_channels(c);
    let (rows, lead) = N::highway_targets(s);
    let highway_start =
        crate::highway::least_squares(&train_scaled, c, &monitored, rows, lead, highway);
    let prepared = Prepared {
        channels: &data.channels,
        monitored,
        val_scaled: scaler.transformed(val_raw),
        train_scaled,
        highway,
        highway_start,
    };
    let mut networks = Vec::with_capacity(s.members);
    let mut runs = Vec::with_capacity(s.members);
    for i in 0..s.members {
        let member = Member {
            seed: s.member_seed(i),
            number: i + 1,
        };
        let (network, run) = run::<N>(&prepared, s, member, on_epoch)?;
        networks.push(network);
        runs.push(run);
    }
    Ok(Trained {
        network: Network::ensemble(networks)?,
        scaler,
        train_rows: n_train,
        validation_rows: n_val,
        runs,
    })
}

/// Trains one member from its seed on `p`, keeping its best epoch.
fn run<N: Trainable>(
    p: &Prepared<'_>,
    s: &TrainSettings,
    member: Member,
    on_epoch: &mut impl FnMut(&EpochReport),
) -> Result<(Network, TrainingRun), ModelError> {
    let c = p.channels.len();
    // libtorch's generator is process-wide: fits running side by side
    // (`evaluate` fits per-file models in parallel) take turns with it, so
    // each fit draws the same numbers as it would alone.
    let generator = GENERATOR.lock().unwrap_or_else(PoisonError::into_inner);
    tch::manual_seed(member.seed as i64);
    if s.device.is_cuda() {
        tch::Cuda::manual_seed_all(member.seed);
    }
    let net = N::build(p.channels, c, &p.monitored, s, p.highway)?;
    // Initialised; kinds that shuffle while training keep their turn.
    let _generator = N::DRAWS_WHILE_TRAINING.then_some(generator);
    if let Some(w) = &p.highway_start {
        net.set_highway_weight(w)?;
    }
    let prepared = net.prepare(&p.train_scaled, &p.val_scaled, c, s)?;
    let mut opt = nn::Adam::default()
        .build(net.var_store(), s.learning_rate)
        .ctx("creating the optimizer")?;

    let mut history: Vec<EpochReport> = Vec::with_capacity(s.epochs);
    let mut best: Option<(usize, f64, weights::Snapshot)> = None;
    let mut since_best = 0;
    for epoch in 1..=s.epochs {
        let started = Instant::now();
        let train_loss = net.epoch(&prepared, &mut opt, s)?;
        if !train_loss.is_finite() {
            return Err(ModelError::Config(format!(
                "training diverged at epoch {epoch} (loss {train_loss}); \
                 lower the learning rate or check the data"
            )));
        }
        let val_loss = net.validation_loss(&prepared, s)?;
        let report = EpochReport {
            member: member.number,
            members: s.members,
            epoch,
            epochs: s.epochs,
            train_loss,
            val_loss,
            seconds: started.elapsed().as_secs_f64(),
        };
        tracing::debug!(?report, "epoch done");
        on_epoch(&report);
        history.push(report);
        if val_loss.is_finite() && best.as_ref().is_none_or(|(_, b, _)| val_loss < *b) {
            best = Some((epoch, val_loss, weights::snapshot(net.var_store())));
            since_best = 0;
        } else {
            since_best += 1;
            if s.patience > 0 && since_best >= s.patience {
                break;
            }
        }
    }
    let Some((best_epoch, _, kept)) = best else {
        return Err(ModelError::Config(
            "no epoch produced a finite validation loss".into(),
        ));
    };
    weights::restore(net.var_store(), &kept)?;
    Ok((
        net.into_network(),
        TrainingRun {
            history,
            best_epoch,
        },
    ))
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::highway::Highway;
    use forewarn_data::tep::read_tep;
    use std::path::Path;
    use tch::{Device, Tensor};

    pub(crate) fn d00() -> Dataset {
        read_tep(Path::new(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../../shared/data/tep/d00.dat"
        )))
        .unwrap()
    }

    /// Small enough for a fraction of a second per run. TEP's normal run is
    /// mostly sensor noise and has 400 training rows, so the learnable part
    /// is modest; these settings reach about 0.63x the first epoch's loss.
    pub(crate) fn small() -> TrainSettings {
        TrainSettings {
            kind: ModelKind::Forecaster,
            hidden: 32,
            layers: 2,
            encoder_hidden: 2,
            horizon: 3,
            window: 20,
            epochs: 15,
            learning_rate: 1e-2,
            batch_streams: 4,
            batch_windows: 32,
            validation_fraction: 0.2,
            patience: 0,
            seed: 42,
            members: 1,
            grad_clip: 1.0,
            robust_scaling: false,
            highway: Highway::None,
            context: vec![],
            recurrent_context: true,
            grid: None,
            layout: vec![],
            kernel: 3,
            filters: 4,
            device: Device::Cpu,
        }
    }

    #[test]
    fn trains_on_tep_normal_run_and_generalises() {
        crate::test_init();
        let data = d00();
        let s = small();
        let mut seen = vec![];
        let started = Instant::now();
        let t = train(&data, &s, |r| seen.push(r.clone())).unwrap();
        let secs = started.elapsed().as_secs_f64();
        let h = &t.runs[0].history;
        assert_eq!(h, &seen);
        assert_eq!(h.len(), s.epochs);
        let (first, last) = (h[0].train_loss, h[h.len() - 1].train_loss);
        eprintln!(
            "TEP d00: {} epochs in {secs:.1}s, train {first:.4} -> {last:.4}, val {:.4} -> {:.4}",
            h.len(),
            h[0].val_loss,
            h[h.len() - 1].val_loss,
        );
        assert!(last < 0.7 * first, "no convergence: {first} -> {last}");
        assert!(h.iter().all(|r| r.val_loss.is_finite() && r.seconds >= 0.0));
        // It generalises too: unseen validation data is forecast clearly
        // better than by the untrained-ish first epoch.
        let best_val = h.iter().map(|r| r.val_loss).fold(f64::INFINITY, f64::min);
        assert!(
            best_val < 0.9 * h[0].val_loss,
            "{} -> {best_val}",
            h[0].val_loss
        );
        assert_eq!((t.train_rows, t.validation_rows), (400, 100));
        assert_eq!(t.final_losses().1, best_val);
        assert_eq!(t.network.kind(), ModelKind::Forecaster);
    }

    /// An ensemble's first member is the network its seed alone trains; the
    /// others start elsewhere, and every epoch says whose it is.
    #[test]
    fn an_ensembles_members_train_from_their_own_seeds() {
        crate::test_init();
        let data = d00();
        let one = TrainSettings {
            hidden: 8,
            layers: 1,
            epochs: 3,
            ..small()
        };
        let three = TrainSettings {
            members: 3,
            ..one.clone()
        };
        let single = train(&data, &one, |_| {}).unwrap();
        let mut seen = Vec::new();
        let t = train(&data, &three, |r| seen.push((r.member, r.members, r.epoch))).unwrap();
        assert_eq!(t.network.members(), 3);
        assert_eq!(t.runs.len(), 3);
        let want: Vec<_> = (1..=3)
            .flat_map(|m| (1..=3).map(move |e| (m, 3, e)))
            .collect();
        assert_eq!(seen, want);
        let Network::Ensemble(e) = &t.network else {
            panic!("{:?}", t.network);
        };
        let hashes: Vec<String> = (e.members().iter())
            .map(|m| m.weights_sha256().unwrap())
            .collect();
        assert_eq!(hashes[0], single.network.weights_sha256().unwrap());
        assert!(hashes[1] != hashes[0] && hashes[2] != hashes[0] && hashes[1] != hashes[2]);
        assert_eq!(t.runs[0].final_losses(), single.final_losses());
        let mean_val = t.runs.iter().map(|r| r.final_losses().1).sum::<f64>() / 3.0;
        assert!((t.final_losses().1 - mean_val).abs() < 1e-12);
        assert_eq!(t.scaler, single.scaler);
        // Member seeds: the first is the seed; none repeats across nearby seeds.
        assert_eq!(three.member_seed(0), 42);
        let nearby: std::collections::HashSet<u64> = (40..45)
            .flat_map(|seed| {
                let s = TrainSettings {
                    seed,
                    ..three.clone()
                };
                (0..3).map(move |i| s.member_seed(i))
            })
            .collect();
        assert_eq!(nearby.len(), 15);
        assert!(nearby.iter().all(|&s| s <= i64::MAX as u64));
        let too_many = TrainSettings {
            members: 17,
            ..one.clone()
        };
        assert!(
            train(&data, &too_many, |_| {})
                .unwrap_err()
                .to_string()
                .contains("members")
        );
    }

    /// Every kind trains through the one loop on TEP, and the same settings
    /// and seed give the same weights twice.
    #[test]
    fn every_kind_trains_and_is_reproducible() {
        crate::test_init();
        let data = d00();
        for kind in ModelKind::ALL {
            let s = TrainSettings {
                kind,
                hidden: 8,
                layers: 1,
                horizon: 5,
                epochs: 4,
                validation_fraction: 0.3,
                ..small()
            };
            let a = train(&data, &s, |_| {}).unwrap();
            let b = train(&data, &s, |_| {}).unwrap();
            assert_eq!(a.network.kind(), kind);
            assert_eq!(a.train_rows, 350, "{kind}");
            assert_eq!(a.runs[0].history.len(), 4, "{kind}");
            let v: Vec<f64> = a.runs[0].history.iter().map(|r| r.val_loss).collect();
            assert!(
                v.iter().cloned().fold(f64::INFINITY, f64::min) < v[0],
                "{kind}: {v:?}"
            );
            assert_eq!(
                a.network.weights_sha256().unwrap(),
                b.network.weights_sha256().unwrap(),
                "{kind}"
            );
            assert_eq!(
                a.runs[0].history[a.runs[0].best_epoch - 1].val_loss,
                a.final_losses().1
            );
        }
    }

    #[test]
    fn early_stopping_keeps_the_best_epoch() {
        crate::test_init();
        let data = d00().slice(0..200);
        let s = TrainSettings {
            hidden: 8,
            layers: 1,
            epochs: 40,
            // Far too high: validation loss soon stops improving.
            learning_rate: 0.05,
            patience: 2,
            validation_fraction: 0.25,
            ..small()
        };
        let t = train(&data, &s, |_| {}).unwrap();
        let h = &t.runs[0].history;
        assert!(h.len() < s.epochs, "did not stop early");
        let best = h
            .iter()
            .min_by(|a, b| a.val_loss.total_cmp(&b.val_loss))
            .unwrap();
        assert_eq!(h.len(), best.epoch + s.patience);
        assert_eq!(t.runs[0].best_epoch, best.epoch);
        assert_eq!(t.final_losses(), (best.train_loss, best.val_loss));
    }

    #[test]
    fn bad_settings_and_short_data_are_clear_errors() {
        crate::test_init();
        let data = d00().slice(0..100);
        let short = TrainSettings {
            window: 20,
            horizon: 5,
            ..small()
        };
        // 20 validation rows < 20 warm-up + 2 x 5.
        let e = train(&data, &short, |_| {}).unwrap_err().to_string();
        assert!(
            e.contains("validation part has 20 rows") && e.contains("30"),
            "{e}"
        );
        for s in [
            TrainSettings {
                hidden: 0,
                ..small()
            },
            TrainSettings {
                validation_fraction: 1.0,
                ..small()
            },
            TrainSettings {
                learning_rate: f64::NAN,
                ..small()
            },
            TrainSettings {
                kind: ModelKind::Autoencoder,
                highway: Highway::Full,
                ..small()
            },
        ] {
            assert!(matches!(
                train(&data, &s, |_| {}),
                Err(ModelError::Config(_))
            ));
        }
        let mut nan = d00();
        nan.rows[52 * 3 + 7] = f32::NAN;
        let e = train(&nan, &small(), |_| {}).unwrap_err().to_string();
        assert!(e.contains("row 3") && e.contains("xmeas_8"), "{e}");
        let ae = TrainSettings {
            kind: ModelKind::Autoencoder,
            horizon: 30,
            ..small()
        };
        let e = train(&data, &ae, |_| {}).unwrap_err().to_string();
        assert!(e.contains("too few for windows of 30"), "{e}");
    }

    fn related(n: usize, shift: f32) -> Dataset {
        Dataset {
            channels: vec!["a".into(), "b".into(), "c".into()],
            rows: (0..n).flat_map(|t| crate::related_row(t, shift)).collect(),
            timestamps: None,
            labels: None,
            source: "synthetic".into(),
        }
    }

    /// Channel b is twice channel a (plus noise), a wanders in [-1, 1]
    /// during training. Scored at a level the training never reached
    /// (a + 4), the cross highway forecasts b from a; the LSTM alone,
    /// saturated, cannot. A step on b alone is not followed by b's forecast.
    #[test]
    fn cross_highway_extrapolates_a_relation_and_does_not_follow_a_fault() {
        crate::test_init();
        let s = TrainSettings {
            hidden: 8,
            layers: 1,
            horizon: 2,
            window: 10,
            epochs: 10,
            learning_rate: 1e-2,
            batch_streams: 4,
            validation_fraction: 0.25,
            ..small()
        };
        fn forecaster(t: &Trained) -> &LstmForecaster {
            match &t.network {
                Network::Forecaster(m) => m,
                other => panic!("{other:?}"),
            }
        }
        let plain = train(&related(400, 0.0), &s, |_| {}).unwrap();
        let cross = train(
            &related(400, 0.0),
            &TrainSettings {
                highway: Highway::Cross,
                ..s.clone()
            },
            |_| {},
        )
        .unwrap();
        assert_eq!(forecaster(&cross).highway(), Highway::Cross);
        assert_eq!(forecaster(&plain).highway(), Highway::None);
        // Mean |error| of b's next-row forecast over rows 60.., in scaled units.
        let b_error = |t: &Trained, raw: &[f32]| {
            let x = t.scaler.transformed(raw);
            let steps = x.len() / 3;
            let xt = Tensor::from_slice(&x).view([1, steps as i64, 3]);
            let (y, _) = tch::no_grad(|| forecaster(t).forward_seq(&xt, None));
            let mut pred = vec![0f32; y.numel()];
            y.copy_data(&mut pred, y.numel());
            let errs: Vec<f32> = (60..steps - 1)
                .map(|t| (pred[t * 6 + 1] - x[(t + 1) * 3 + 1]).abs())
                .collect();
            errs.iter().sum::<f32>() / errs.len() as f32
        };
        let far = related(200, 4.0).rows;
        let (e_plain, e_cross) = (b_error(&plain, &far), b_error(&cross, &far));
        // The shift is 8 units of b (about 5 training sd).
        assert!(e_cross < 0.5, "cross highway off by {e_cross}");
        assert!(
            e_plain > 4.0 * e_cross,
            "plain {e_plain} vs cross {e_cross}"
        );

        // A step of 3 scaled units on b alone: b's forecast keeps reading a.
        let mut fault = related(200, 0.0).rows;
        let step = 3.0 * cross.scaler.scale[1];
        for t in 100..200 {
            fault[t * 3 + 1] += step;
        }
        let clean = related(200, 0.0).rows;
        let lifted = b_error(&cross, &fault) - b_error(&cross, &clean);
        // Rows 100.. are 139 of the 139 scored: most of the step stays error.
        assert!(lifted > 0.6 * 3.0 * 100.0 / 139.0, "error rose by {lifted}");
        // Training kept the masked weights at zero.
        let m = forecaster(&cross);
        let w = m.var_store().variables().remove("highway.weight").unwrap();
        let mut v = vec![0f32; w.numel()];
        w.copy_data(&mut v, w.numel());
        for (i, mask) in Highway::Cross
            .mask(m.spec(), m.monitored())
            .unwrap()
            .iter()
            .enumerate()
        {
            if *mask == 0.0 {
                assert_eq!(v[i], 0.0, "masked weight {i}");
            }
        }
    }

    /// The autoencoder with the cross highway: at a level training never
    /// reached (a + 4) it still reconstructs b from a; the LSTMs alone,
    /// saturated, cannot. Training keeps the diagonal at zero.
    #[test]
    fn cross_highway_reconstructs_a_relation_at_a_new_operating_point() {
        crate::test_init();
        let s = TrainSettings {
            kind: ModelKind::Autoencoder,
            hidden: 8,
            horizon: 5,
            epochs: 6,
            learning_rate: 1e-2,
            validation_fraction: 0.25,
            seed: 3,
            ..small()
        };
        fn autoencoder(t: &Trained) -> &LstmAutoencoder {
            match &t.network {
                Network::Autoencoder(m) => m,
                other => panic!("{other:?}"),
            }
        }
        let plain = train(&related(400, 0.0), &s, |_| {}).unwrap();
        let cross = train(
            &related(400, 0.0),
            &TrainSettings {
                highway: Highway::Cross,
                ..s.clone()
            },
            |_| {},
        )
        .unwrap();
        assert_eq!(autoencoder(&cross).highway(), Highway::Cross);
        assert_eq!(autoencoder(&plain).highway(), Highway::None);
        // Mean |error| of b's reconstruction, in scaled units.
        let b_error = |t: &Trained, raw: &[f32]| {
            let x = t.scaler.transformed(raw);
            let windows = x.len() / 15;
            let xt = Tensor::from_slice(&x[..windows * 15]).view([windows as i64, 5, 3]);
            let y = tch::no_grad(|| autoencoder(t).reconstruct(&xt));
            let mut v = vec![0f32; y.numel()];
            y.copy_data(&mut v, y.numel());
            let errs: Vec<f32> = (0..windows * 5)
                .map(|r| (v[r * 3 + 1] - x[r * 3 + 1]).abs())
                .collect();
            errs.iter().sum::<f32>() / errs.len() as f32
        };
        let far = related(200, 4.0).rows;
        let (e_plain, e_cross) = (b_error(&plain, &far), b_error(&cross, &far));
        eprintln!("b error at a + 4: plain {e_plain}, cross {e_cross}");
        assert!(e_cross < 0.5, "cross highway off by {e_cross}");
        assert!(
            e_plain > 4.0 * e_cross,
            "plain {e_plain} vs cross {e_cross}"
        );
        let w = autoencoder(&cross)
            .var_store()
            .variables()
            .remove("highway.weight")
            .unwrap();
        let mut v = vec![0f32; 9];
        w.copy_data(&mut v, 9);
        assert_eq!((v[0], v[4], v[8]), (0.0, 0.0, 0.0));
    }

    /// A context channel (`cmd`, the middle one): every kind reads all
    /// three channels and forecasts (or reconstructs) the two monitored
    /// ones; a glob matching nothing is an error naming it.
    #[test]
    fn context_channels_are_read_but_never_forecast() {
        crate::test_init();
        let mut data = related(300, 0.0);
        data.channels = vec!["a".into(), "cmd".into(), "b".into()];
        for kind in ModelKind::ALL {
            let s = TrainSettings {
                kind,
                hidden: 4,
                layers: 1,
                horizon: 2,
                window: 10,
                epochs: 2,
                highway: match kind {
                    ModelKind::Autoencoder => Highway::Cross,
                    _ => Highway::Full,
                },
                context: vec!["cmd".into()],
                ..small()
            };
            let t = train(&data, &s, |_| {}).unwrap();
            let (inputs, outputs, monitored) = match &t.network {
                Network::Forecaster(m) => (m.spec().channels, m.spec().outputs, m.monitored()),
                Network::PerVariable(m) => (m.spec().channels, m.spec().outputs, m.monitored()),
                Network::Autoencoder(m) => (m.spec().channels, m.spec().outputs, m.monitored()),
                Network::ConvLstm(m) => (m.spec().channels, m.spec().outputs(), m.monitored()),
                Network::Ensemble(_) => panic!("one member was asked for"),
            };
            assert_eq!((inputs, outputs, monitored), (3, 2, &[0, 2][..]), "{kind}");
            // The forecast itself is as wide as the monitored channels.
            let mut net = t.network;
            let (h, sl) = (s.horizon, forewarn_core::Forecaster::state_len(&net));
            let mut b = forewarn_core::StepBatch {
                n: 1,
                horizon: h,
                channels: 3,
                outputs: 2,
                state_len: sl,
                inputs: vec![0.1; 3 * h],
                states: vec![0.0; sl],
                predictions: vec![f32::NAN; 2 * h],
            };
            forewarn_core::Forecaster::step(&mut net, &mut b).unwrap();
            assert!(b.predictions.iter().all(|v| v.is_finite()), "{kind}");
        }
        let s = TrainSettings {
            context: vec!["cmd".into(), "mode*".into()],
            ..small()
        };
        let e = train(&data, &s, |_| {}).unwrap_err().to_string();
        assert!(e.contains("\"mode*\" matches no column"), "{e}");
    }

    #[test]
    fn a_cross_highway_on_one_channel_is_no_highway() {
        crate::test_init();
        let data = Dataset {
            channels: vec!["a".into()],
            rows: (0..200).map(|t| (t as f32 * 0.1).sin()).collect(),
            timestamps: None,
            labels: None,
            source: "univariate".into(),
        };
        for kind in ModelKind::ALL {
            let s = TrainSettings {
                kind,
                hidden: 4,
                layers: 1,
                horizon: 2,
                window: 10,
                epochs: 2,
                highway: Highway::Cross,
                ..small()
            };
            let t = train(&data, &s, |_| {}).unwrap();
            assert_eq!(t.network.highway(), Highway::None, "{kind}");
        }
        let full = TrainSettings {
            hidden: 4,
            layers: 1,
            horizon: 2,
            window: 10,
            epochs: 2,
            highway: Highway::Full,
            ..small()
        };
        let t = train(&data, &full, |_| {}).unwrap();
        assert_eq!(t.network.highway(), Highway::Full);
    }
}
