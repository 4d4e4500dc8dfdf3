//! Fitting: a model of any kind trained on normal data and calibrated, as
//! model.toml describes it, into an artifact-ready [`Model`]. What
//! `forewarn train` stores and `serve` runs, and what `forewarn evaluate`
//! replays, by this one function: offline equals online.

use std::fmt;
use std::time::Duration;

use forewarn_core::flatline::Flatline;
use forewarn_core::threshold::{ResidualThreshold, ThresholdStrategy};
use forewarn_core::{DetectorConfig, Threshold};
use forewarn_data::Dataset;
use forewarn_model::{Description, EpochReport, Model, ModelKind};

use crate::calibrate::{GaussianFit, calibrate};
use crate::config::{HeadKind, ModelConfig};
use crate::error::{Context, OfflineError};
use crate::replay;

/// What fitting reports while it runs (the command line prints it).
#[derive(Debug, Clone, Copy)]
pub enum Progress<'a> {
    /// An epoch of training is done.
    Epoch(&'a EpochReport),
    /// Context channels constant in the training part: the scaler reads
    /// them as that constant from now on (the network never saw them move).
    ConstantChannels(&'a [&'a str]),
    /// Monitored channels constant in the training part: forecast as that
    /// constant and scaled by 1 % of their level, so they score 0 while
    /// they hold it and any later change of theirs alarms.
    MonitoredConstant(&'a [&'a str]),
    /// How the Gaussian threshold was chosen.
    Gaussian(&'a GaussianFit),
    /// The frozen-channel rule (`flatline_readings` set): the channels it
    /// watches with their limits (none: the rule is off for this model).
    Flatline { watched: &'a [(&'a str, u32)] },
    /// The seasonal residual's calibration (`residual_bucket` set): `None`
    /// when the training rows do not span two seasons of strictly
    /// increasing times, so the forecast error alone decides.
    SeasonalResidual {
        season: Duration,
        calibrated: Option<&'a ResidualThreshold>,
    },
}

/// The line the command line prints (without indentation).
impl fmt::Display for Progress<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Progress::Epoch(r) => {
                if r.members > 1 {
                    write!(f, "member {}/{}  ", r.member, r.members)?;
                }
                write!(
                    f,
                    "epoch {:>3}/{}  train loss {:.5}  val loss {:.5}  ({:.1}s)",
                    r.epoch, r.epochs, r.train_loss, r.val_loss, r.seconds
                )
            }
            Progress::ConstantChannels(names) => write!(
                f,
                "context, constant in training, read as that constant: {}",
                names.join(", ")
            ),
            Progress::Flatline { watched: [] } => write!(
                f,
                "flatline: off (every monitored channel was constant in training)"
            ),
            Progress::Flatline { watched } => {
                let mut by_limit = std::collections::BTreeMap::<u32, Vec<&str>>::new();
                for (name, limit) in *watched {
                    by_limit.entry(*limit).or_default().push(name);
                }
                let groups: Vec<String> = (by_limit.iter())
                    .map(|(limit, names)| format!("{limit}: {}", names.join(", ")))
                    .collect();
                write!(
                    f,
                    "flatline: flagged after more identical readings than {}",
                    groups.join("; ")
                )
            }
            Progress::MonitoredConstant(names) => write!(
                f,
                "monitored, constant in training (forecast as that constant, scaled by 1 % of \
                 their level: any change alarms): {}",
                names.join(", ")
            ),
            Progress::Gaussian(GaussianFit::Injected {
                normal,
                injected,
                beta,
                fbeta,
                tau,
                raised,
            }) => write!(
                f,
                "gaussian: {normal} normal / {injected} injected validation batches, F{beta} = \
                 {fbeta:.3} at {tau:.4}{}",
                raised.map_or(String::new(), |(q, floor)| format!(
                    ", raised to q{q} of the normal scores, {floor:.4}"
                ))
            ),
            Progress::Gaussian(GaussianFit::NoRoom) => f.write_str(
                "gaussian: no room to inject faults; quantile x margin of normal scores",
            ),
            Progress::SeasonalResidual {
                calibrated: Some(r),
                ..
            } => write!(
                f,
                "seasonal residual: on, {} training scores, floor {:.4}",
                r.seed.len(),
                r.floor
            ),
            Progress::SeasonalResidual {
                season,
                calibrated: None,
            } => write!(
                f,
                "seasonal residual: off (the training rows' times do not span two seasons of {})",
                humantime::format_duration(*season)
            ),
        }
    }
}

/// Trains `cfg.model` on `data` (normal operation; its tail,
/// `validation_fraction`, held out), then calibrates on that tail, through
/// the engine, the fixed threshold (`[threshold]` quantile x margin of the
/// validation batch scores, what runs when an artifact stores no strategy)
/// and the configured strategy, which it stores in the description.
pub fn fit(
    data: &Dataset,
    cfg: &ModelConfig,
    progress: &mut dyn FnMut(Progress<'_>),
) -> Result<Model, OfflineError> {
    if cfg.model.head != HeadKind::Identity {
        return Err(OfflineError::Config(format!(
            "[model] head = {:?} is a classifier that needs labelled faults to train: run \
             `forewarn classify`; evaluate and train fit the forecasting head (identity) on normal data",
            cfg.model.head
        )));
    }
    let settings = cfg.model.train_settings()?;
    let trained = forewarn_model::train(data, &settings, |r| progress(Progress::Epoch(r)))
        .context(|| format!("training on {}", data.source))?;
    let (final_train_loss, final_val_loss) = trained.final_losses();
    let rule = cfg.threshold.rule();
    let mut model = Model::new(
        trained.network,
        Description {
            name: cfg.model.name.clone(),
            channels: data.channels.clone(),
            scaler: trained.scaler,
            window: settings.window,
            // The autoencoder's windows are independent: no history needed.
            warmup: match settings.kind {
                ModelKind::Autoencoder => 0,
                ModelKind::Forecaster | ModelKind::PerVariable | ModelKind::ConvLstm => {
                    settings.window
                }
            },
            // Calibrated below, through the engine.
            threshold: Threshold {
                value: f64::INFINITY,
                rule,
                samples: 0,
            },
            train_data_sha256: data.sha256(),
            train_rows: trained.train_rows,
            validation_rows: trained.validation_rows,
            final_train_loss,
            final_val_loss,
            grid: settings.grid,
            layout: settings.grid_layout(),
        },
    )?;
    let constant: Vec<&str> = (model.meta.channels.iter())
        .zip(&model.meta.scaler.constant)
        .filter_map(|(name, &constant)| constant.then_some(name.as_str()))
        .collect();
    if !constant.is_empty() {
        progress(Progress::ConstantChannels(&constant));
    }
    let c = data.n_channels();
    let monitored_constant: Vec<&str> = (model.meta.monitored().into_iter())
        .filter(|&j| model.meta.scaler.forecasts_constant(j))
        .map(|j| model.meta.channels[j].as_str())
        .collect();
    if !monitored_constant.is_empty() {
        progress(Progress::MonitoredConstant(&monitored_constant));
    }
    let (train_part, val) = data.rows.split_at(model.meta.train_rows * c);
    // The fixed threshold: quantile x margin of the validation batch scores.
    let engine = model.engine_config(DetectorConfig::default(), 1);
    let scores = replay::scores(&mut model.network, engine, val)?;
    model.meta.threshold = Threshold::from_validation(&scores, rule)?;
    let engine = model.engine_config(cfg.detector.detector(), 1);
    let (strategy, gaussian) = calibrate(
        &mut model.network,
        &engine,
        &cfg.threshold.for_model(model.meta.highway),
        settings.seed,
        train_part,
        val,
        data.timestamps.as_deref(),
        model.meta.threshold.value,
    )
    .context(|| "calibrating the threshold strategy".to_owned())?;
    if let Some(g) = &gaussian {
        progress(Progress::Gaussian(g));
    }
    if let ThresholdStrategy::Dynamic {
        config, residual, ..
    } = &strategy
        && config.residual_phases().is_some()
    {
        progress(Progress::SeasonalResidual {
            season: config.season,
            calibrated: residual.as_deref(),
        });
    }
    model.meta.strategy = Some(strategy);
    let monitored = model.meta.monitored();
    let scaled: Vec<f32> = (model.meta.scaler.transformed(&data.rows).chunks_exact(c))
        .flat_map(|row| monitored.iter().map(|&j| row[j]))
        .collect();
    model.meta.flatline = Flatline::calibrate(
        &scaled,
        monitored.len(),
        cfg.threshold.flatline_readings,
        cfg.threshold.flatline_ratio,
    );
    if cfg.threshold.flatline_readings > 0 {
        let watched: Vec<(&str, u32)> = (model.meta.flatline.iter())
            .flat_map(|f| f.limits.iter().zip(&monitored))
            .filter(|(l, _)| **l > 0)
            .map(|(l, &j)| (model.meta.channels[j].as_str(), *l))
            .collect();
        progress(Progress::Flatline { watched: &watched });
    }
    Ok(model)
}

#[cfg(test)]
mod tests {
    use super::*;
    use forewarn_core::threshold::{ThresholdStrategy, quantile_sorted};
    use forewarn_core::{Forecaster, StepBatch};
    use forewarn_data::tep::read_tep;
    use forewarn_model::{LstmForecaster, ModelMeta, Network};
    use std::path::Path;
    use tch::{Device, Tensor};

    fn d00() -> Dataset {
        read_tep(Path::new(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../../shared/data/tep/d00.dat"
        )))
        .unwrap()
    }

    /// Small enough for a fraction of a second per run (TEP's normal run
    /// has 400 training rows; these settings reach about 0.63x the first
    /// epoch's loss); the fixed threshold, on the last 100 rows.
    fn small_cfg() -> ModelConfig {
        toml::from_str::<ModelConfig>(small_cfg_text())
            .unwrap()
            .resolved()
            .unwrap()
    }

    fn small_cfg_text() -> &'static str {
        "[model]\nname = \"tep\"\nhidden = 32\nlayers = 2\nhorizon = 3\nwindow = 20\n\
         epochs = 15\nlearning_rate = 1e-2\nbatch_streams = 4\npatience = 0\n\
         validation_fraction = 0.2\nhighway = \"none\"\n[threshold]\nkind = \"fixed\"\n"
    }

    fn forecaster(n: &Network) -> &LstmForecaster {
        match n {
            Network::Forecaster(f) => f,
            other => panic!("{other:?}"),
        }
    }

    /// Batch scores computed without the engine: run the validation part
    /// as one sequence from zero state, take the forecast made at the end
    /// of each batch, score it against the next batch once warm.
    fn scores_by_hand(model: &LstmForecaster, meta: &ModelMeta, val: &[f32]) -> Vec<f64> {
        let c = meta.channels.len();
        let h = meta.horizon;
        let x = meta.scaler.transformed(val);
        let steps = x.len() / c;
        let xt = Tensor::from_slice(&x).view([1, steps as i64, c as i64]);
        let (y, _) = tch::no_grad(|| model.forward_seq(&xt, None));
        let mut pred = vec![0f32; y.numel()];
        y.copy_data(&mut pred, y.numel());
        let batches = steps / h;
        let mut scores = vec![];
        for k in 0..batches - 1 {
            let t = (k + 1) * h - 1; // last step of batch k
            if t + 1 < meta.warmup {
                continue;
            }
            let forecast = &pred[t * h * c..(t + 1) * h * c];
            let observed = &x[(t + 1) * c..(t + 1 + h) * c];
            let se: f64 = forecast
                .iter()
                .zip(observed)
                .map(|(p, o)| ((p - o) as f64).powi(2))
                .sum();
            scores.push(se / (h * c) as f64);
        }
        scores
    }

    /// TEP's normal run spans 25 hours at 3-minute samples: too short for
    /// the default's daily residual, which training says. Its rows 9
    /// minutes apart span 75 hours, and the residual is calibrated.
    #[test]
    fn training_says_whether_the_seasonal_residual_is_calibrated() {
        crate::test_init();
        let text = small_cfg_text().replace("kind = \"fixed\"", "kind = \"dynamic\"");
        let cfg = toml::from_str::<ModelConfig>(&text)
            .unwrap()
            .resolved()
            .unwrap();
        let mut data = d00();
        for stretch in [1, 3] {
            let times = data.timestamps.as_mut().unwrap();
            let first = times[0];
            times
                .iter_mut()
                .for_each(|t| *t = first + (*t - first) * stretch);
            let mut lines = Vec::new();
            let m = fit(&data, &cfg, &mut |p| {
                if let Progress::SeasonalResidual { .. } = p {
                    lines.push(p.to_string());
                }
            })
            .unwrap();
            let ThresholdStrategy::Dynamic { residual, .. } = m.meta.strategy() else {
                panic!("not dynamic")
            };
            if stretch == 1 {
                assert!(residual.is_none());
                assert_eq!(
                    lines,
                    [
                        "seasonal residual: off (the training rows' times do not span two seasons of 1day)"
                    ]
                );
            } else {
                let r = residual.as_ref().expect("calibrated");
                assert!(r.floor > 0.0 && !r.seed.is_empty(), "{r:?}");
                assert_eq!(
                    lines,
                    [format!(
                        "seasonal residual: on, {} training scores, floor {:.4}",
                        r.seed.len(),
                        r.floor
                    )]
                );
            }
        }
    }

    /// Training reports the frozen-channel rule and stores it. On TEP's
    /// d00 every channel changes within 5 readings: the 37th to 41st once
    /// held a value for 5, the 9th, 27th and 35th for 4, the rest for 1
    /// or 2. Each limit is twice the channel's longest hold, at least
    /// `flatline_readings`: at 20 all 52 get 20; at 9 the five get 10;
    /// at 1 every channel gets twice its own; at 0 there is no rule.
    #[test]
    fn training_says_each_channel_s_flatline_limit() {
        crate::test_init();
        let data = d00();
        for readings in [20u32, 9, 1, 0] {
            let text = small_cfg_text().replace(
                "[threshold]\n",
                &format!("[threshold]\nflatline_readings = {readings}\n"),
            );
            let cfg = toml::from_str::<ModelConfig>(&text)
                .unwrap()
                .resolved()
                .unwrap();
            let mut lines = Vec::new();
            let m = fit(&data, &cfg, &mut |p| {
                if let Progress::Flatline { .. } = p {
                    lines.push(p.to_string());
                }
            })
            .unwrap();
            let names = &m.meta.channels;
            let limits = m.meta.flatline.as_ref().map(|f| f.limits.clone());
            let group = |js: &[usize]| -> String {
                let n: Vec<&str> = js.iter().map(|&j| names[j].as_str()).collect();
                n.join(", ")
            };
            let all: Vec<usize> = (0..52).collect();
            let five: Vec<usize> = (36..41).collect();
            let rest: Vec<usize> = (0..52).filter(|j| !(36..41).contains(j)).collect();
            match readings {
                20 => {
                    assert_eq!(limits, Some(vec![20; 52]));
                    let line = format!(
                        "flatline: flagged after more identical readings than 20: {}",
                        group(&all)
                    );
                    assert_eq!(lines, [line]);
                }
                9 => {
                    let want: Vec<u32> = (0..52)
                        .map(|j| if (36..41).contains(&j) { 10 } else { 9 })
                        .collect();
                    assert_eq!(limits, Some(want));
                    let line = format!(
                        "flatline: flagged after more identical readings than 9: {}; 10: {}",
                        group(&rest),
                        group(&five)
                    );
                    assert_eq!(lines, [line]);
                }
                1 => {
                    let l = limits.unwrap();
                    assert_eq!((l[0], l[2], l[8], l[26], l[34]), (4, 2, 8, 8, 8));
                    assert!(l[36..41].iter().all(|&x| x == 10), "{l:?}");
                    assert!(l.iter().all(|&x| (2..=10).contains(&x)), "{l:?}");
                }
                _ => {
                    assert_eq!(limits, None);
                    assert!(lines.is_empty(), "{lines:?}");
                    // What a model whose monitored channels were all
                    // constant in training reports.
                    assert_eq!(
                        Progress::Flatline { watched: &[] }.to_string(),
                        "flatline: off (every monitored channel was constant in training)"
                    );
                }
            }
        }
    }

    #[test]
    fn fits_a_forecaster_on_tep_and_calibrates_like_the_engine() {
        crate::test_init();
        let data = d00();
        let cfg = small_cfg();
        let mut epochs = 0;
        let mut m = fit(&data, &cfg, &mut |p| {
            if let Progress::Epoch(_) = p {
                epochs += 1;
            }
        })
        .unwrap();
        assert_eq!(epochs, cfg.model.epochs);
        let meta = &m.meta;
        assert_eq!((meta.train_rows, meta.validation_rows), (400, 100));
        assert_eq!(meta.channels.len(), 52);
        assert_eq!(meta.train_data_sha256, data.sha256());
        assert_eq!((meta.warmup, meta.window), (20, 20));
        assert_eq!(meta.strategy().kind(), "fixed");
        meta.validate().unwrap();

        // Calibration through the engine equals scoring by hand.
        let val = &data.rows[400 * 52..];
        let by_hand = scores_by_hand(forecaster(&m.network), meta, val);
        let engine_cfg = meta.engine_config(DetectorConfig::default(), 8);
        let by_engine = replay::scores(&mut m.network, engine_cfg, val).unwrap();
        // 33 batches of 3; forecasts made after k batches (3k rows) count
        // once 3k >= warm-up 20, i.e. k = 7..=32: 26 scores.
        assert_eq!(by_engine.len(), 26);
        assert_eq!(by_hand.len(), by_engine.len());
        for (a, b) in by_hand.iter().zip(&by_engine) {
            assert!((a - b).abs() <= 1e-5 * a.max(1.0), "{a} vs {b}");
        }
        let t = meta.threshold;
        assert!(t.value.is_finite() && t.value > 0.0);
        assert_eq!(t.samples, 26);
        let mut sorted = by_engine.clone();
        sorted.sort_by(f64::total_cmp);
        let want = quantile_sorted(&sorted, cfg.threshold.quantile) * cfg.threshold.margin;
        assert_eq!(meta.strategy().nominal_threshold(), t.value);
        assert!((t.value - want).abs() < 1e-12, "{} vs {want}", t.value);
        // Above every normal validation score, as margin > 1.
        assert!(t.value > sorted[sorted.len() - 1]);

        // Save and load: bit-identical forecasts on the engine's path.
        let dir = tempfile::tempdir().unwrap();
        forewarn_model::save_model(&m, dir.path()).unwrap();
        let mut loaded = forewarn_model::load(dir.path(), Device::Cpu).unwrap();
        assert_eq!(loaded.meta, m.meta);
        let cfg2 = loaded.engine_config(DetectorConfig::default(), 8);
        let again = replay::scores(&mut loaded.network, cfg2, val).unwrap();
        assert_eq!(again, by_engine);
    }

    /// A model trained on TEP's normal run, in f32 and in bf16, over the
    /// normal run and a whole fault run (d01_te: 960 rows, 320 batches
    /// carried from one state; the fault starts at row 160):
    /// - through the engine, every batch score (MSE of 52 scaled channels
    ///   over 3 rows) within 2 % of f32, and the same batches above the
    ///   f32-calibrated threshold;
    /// - on normal data nothing accumulates through the carried state:
    ///   stepped by hand, bf16 forecasts carried from bf16's own state
    ///   stay within 0.01 of f32 (scaled units) and within 1.5x of what one
    ///   bf16 step from f32's exact state gives (measured: 0.0066 vs
    ///   0.0062 on d00);
    /// - in the fault (inputs at 15-27 standard deviations for 800 rows)
    ///   some cells saturate and their c integrates without bound, in f32
    ///   too (to ~580 by the end); the bf16 difference of the state grows
    ///   with it but stays within 2 % of the state's size (measured under
    ///   1 %), and forecasts within 0.5 (measured 0.21, one step 0.009)
    ///   while the scores are far above the threshold.
    #[test]
    fn bf16_scores_of_a_trained_model_stay_close_to_f32() {
        crate::test_init();
        if forewarn_model::precision::CpuBf16::detect()
            .check()
            .is_err()
        {
            eprintln!("skipped: this CPU has no native bf16");
            return;
        }
        let data = d00();
        let m = fit(&data, &small_cfg(), &mut |_| {}).unwrap();
        let fault = read_tep(Path::new(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../../shared/data/tep/d01_te.dat"
        )))
        .unwrap();
        let cfg = m.meta.engine_config(DetectorConfig::default(), 8);
        let threshold = m.meta.threshold.value;
        let Network::Forecaster(mut f32m) = m.network else {
            panic!("a forecaster")
        };
        let dir = tempfile::tempdir().unwrap();
        let weights = dir.path().join("w.safetensors");
        f32m.save(&weights).unwrap();
        let mut bf =
            LstmForecaster::load_with_highway(*f32m.spec(), f32m.highway(), &weights, Device::Cpu)
                .unwrap();
        bf.set_precision(forewarn_model::Precision::Bf16).unwrap();
        let spec = *f32m.spec();
        let (hc, sl) = (spec.output_len(), spec.state_len());
        let step = |f: &mut LstmForecaster, input: &[f32], state: &[f32]| {
            let mut b = StepBatch {
                n: 1,
                horizon: spec.horizon,
                channels: spec.channels,
                outputs: spec.outputs,
                state_len: sl,
                inputs: input.to_vec(),
                states: state.to_vec(),
                predictions: vec![0.0; hc],
            };
            f.step(&mut b).unwrap();
            (b.predictions, b.states)
        };
        let diff = |p: &[f32], q: &[f32]| {
            p.iter()
                .zip(q)
                .map(|(a, b)| (a - b).abs())
                .fold(0.0, f32::max)
        };
        // Batches that end before the fault's onset (all of d00).
        for (what, rows, normal_batches) in [
            ("d00", &data.rows, usize::MAX),
            ("d01_te", &fault.rows, 160 / 3),
        ] {
            let a = replay::scores(&mut f32m, cfg.clone(), rows).unwrap();
            let b = replay::scores(&mut bf, cfg.clone(), rows).unwrap();
            assert_eq!(a.len(), b.len());
            let max_rel = a
                .iter()
                .zip(&b)
                .map(|(x, y)| (x - y).abs() / x)
                .fold(0.0, f64::max);
            let flips = a
                .iter()
                .zip(&b)
                .filter(|(x, y)| (**x > threshold) != (**y > threshold))
                .count();
            assert!(
                max_rel < 0.02,
                "{what}: a bf16 score is {max_rel} off (relative)"
            );
            assert_eq!(flips, 0, "{what}");

            let mut x = rows.clone();
            m.meta.scaler.transform_all(&mut x);
            let (mut s32, mut s16) = (vec![0.0; sl], vec![0.0; sl]);
            // Worst forecast differences: (carried, one step) on normal
            // batches, carried in the fault; worst state difference
            // relative to the state's size (at least 1).
            let (mut normal, mut faulty, mut state_rel) = ((0f32, 0f32), 0f32, 0f32);
            for (k, chunk) in x.chunks_exact(hc).enumerate() {
                let (p32, n32) = step(&mut f32m, chunk, &s32);
                let (p16, n16) = step(&mut bf, chunk, &s16);
                let carried = diff(&p16, &p32);
                if k < normal_batches {
                    let (p1, _) = step(&mut bf, chunk, &s32);
                    normal = (normal.0.max(carried), normal.1.max(diff(&p1, &p32)));
                } else {
                    faulty = faulty.max(carried);
                }
                let size = n32.iter().fold(1f32, |m, v| m.max(v.abs()));
                state_rel = state_rel.max(diff(&n16, &n32) / size);
                (s32, s16) = (n32, n16);
            }
            eprintln!(
                "{what}: {} scores, bf16 vs f32 at most {:.2} % apart, {flips} on the other side \
                 of the threshold {threshold:.4}; forecasts on normal batches: carried {:.4}, one \
                 step from the f32 state {:.4}; in the fault: carried {faulty:.4}; states {:.2} % \
                 of their size",
                a.len(),
                100.0 * max_rel,
                normal.0,
                normal.1,
                100.0 * state_rel
            );
            assert!(
                normal.0 < 0.01 && normal.0 <= 1.5 * normal.1,
                "{what}: the carried state drifts on normal data: {normal:?}"
            );
            assert!(faulty < 0.5, "{what}: {faulty}");
            assert!(state_rel < 0.02, "{what}: {state_rel}");
        }
    }

    /// Every kind, every strategy: fitted through the one function, the
    /// fixed threshold calibrated on the validation tail (above all its
    /// scores) and the strategy stored; the autoencoder needs no warm-up.
    #[test]
    fn every_kind_is_fitted_and_calibrated_alike() {
        crate::test_init();
        let data = d00();
        for kind in ["forecaster", "per_variable", "autoencoder"] {
            for strategy in ["fixed", "gaussian", "dynamic"] {
                let text = format!(
                    "[model]\nkind = \"{kind}\"\nhidden = 8\nlayers = 1\nencoder_hidden = 2\n\
                     horizon = 5\nwindow = 20\nepochs = 2\n[threshold]\nkind = \"{strategy}\"\n"
                );
                let cfg = toml::from_str::<ModelConfig>(&text)
                    .unwrap()
                    .resolved()
                    .unwrap();
                let mut gaussian = 0;
                let mut m = fit(&data, &cfg, &mut |p| {
                    if let Progress::Gaussian(_) = p {
                        gaussian += 1;
                    }
                })
                .unwrap();
                let what = format!("{kind} x {strategy}");
                assert_eq!(m.meta.kind.as_str(), kind, "{what}");
                assert_eq!(m.meta.strategy().kind(), strategy, "{what}");
                assert_eq!(gaussian, usize::from(strategy == "gaussian"), "{what}");
                let warmup = if kind == "autoencoder" { 0 } else { 20 };
                assert_eq!(m.meta.warmup, warmup, "{what}");
                // The fixed threshold is of the batch MSEs, whatever the strategy.
                let val = &data.rows[m.meta.train_rows * 52..];
                let mut engine = m.engine_config(DetectorConfig::default(), 1);
                engine.strategy = ThresholdStrategy::Fixed { threshold: 1.0 };
                let scores = replay::scores(&mut m.network, engine, val).unwrap();
                assert_eq!(m.meta.threshold.samples, scores.len(), "{what}");
                let max = scores.iter().cloned().fold(0.0, f64::max);
                assert!(m.meta.threshold.value > max, "{what}");
                m.meta.validate().unwrap();
            }
        }
    }

    #[test]
    fn classifier_heads_and_bad_settings_are_refused() {
        let data = d00();
        let mut cfg = small_cfg();
        cfg.model.head = HeadKind::Softmax;
        let e = fit(&data, &cfg, &mut |_| {}).unwrap_err().to_string();
        assert!(e.contains("forewarn classify"), "{e}");
        let mut cfg = small_cfg();
        cfg.model.window = 95;
        let e = fit(&data, &cfg, &mut |_| {}).unwrap_err().to_string();
        assert!(
            e.starts_with("training on") && e.contains("validation part has 100 rows"),
            "{e}"
        );
    }
}
