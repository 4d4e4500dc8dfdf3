//! Training a model of any [`ModelKind`] and calibrating its threshold
//! strategy into an artifact-ready [`Model`]: what `forewarn train` stores
//! and `serve` runs, and what `forewarn evaluate` replays, by one code path.

use anyhow::Context;
use forewarn_model::autoencoder::{AutoencoderTrainConfig, train_autoencoder};
use forewarn_model::dataset::Dataset;
use forewarn_model::multimodal::{MultimodalTrainConfig, train_multimodal};
use forewarn_model::train::{TrainConfig, calibration_scores, train};
use forewarn_model::{Description, Model, Network};

use super::calibrate::calibrate;
use super::config::{EvalConfig, HeadKind, ModelKind};

/// Trains `cfg.model.kind` on `data` with `tc` (the training settings
/// resolved from `cfg`, after any overrides), then calibrates `cfg`'s
/// threshold strategy on the validation tail the training held out and
/// stores it in the description. Epoch progress goes to stderr, each line
/// prefixed with `indent`.
pub fn fit(
    data: &Dataset,
    cfg: &EvalConfig,
    tc: &TrainConfig,
    indent: &str,
) -> anyhow::Result<Model> {
    tc.validate()?;
    if cfg.model.head != HeadKind::Identity {
        anyhow::bail!(
            "[model] head = {:?} is a classifier that needs labelled faults to train: run \
             `forewarn classify`; evaluate and train fit the forecasting head (identity) on normal data",
            cfg.model.head
        );
    }
    let context = || format!("training on {}", data.source);
    let epoch = |e: usize, epochs: usize, t: f64, v: f64| {
        eprintln!("{indent}epoch {e:>3}/{epochs}  train loss {t:.5}  val loss {v:.5}")
    };
    let mut model = match cfg.model.kind {
        ModelKind::Forecaster => Model::from(
            train(data, tc, |r| {
                eprintln!(
                    "{indent}epoch {:>3}/{}  train loss {:.5}  val loss {:.5}  ({:.1}s)",
                    r.epoch, r.epochs, r.train_loss, r.val_loss, r.seconds
                )
            })
            .with_context(context)?,
        ),
        ModelKind::PerVariable => {
            let mc = MultimodalTrainConfig {
                encoder_hidden: cfg.model.encoder_hidden,
                hidden: tc.hidden,
                layers: tc.layers,
                horizon: tc.horizon,
                window: tc.window,
                epochs: tc.epochs,
                learning_rate: tc.learning_rate,
                batch_streams: tc.batch_streams,
                validation_fraction: tc.validation_fraction,
                patience: tc.patience,
                seed: tc.seed,
                grad_clip: tc.grad_clip,
                threshold: tc.threshold,
                robust_scaling: tc.robust_scaling,
                highway: tc.highway,
                name: tc.name.clone(),
                device: tc.device,
            };
            let t = train_multimodal(&data.rows, &data.channels, &mc, |e, t, v| {
                epoch(e, mc.epochs, t, v)
            })
            .with_context(context)?;
            let (final_train_loss, final_val_loss) = best_epoch(&t.train_losses, &t.val_losses);
            Model::new(
                Network::PerVariable(t.model),
                Description {
                    name: tc.name.clone(),
                    channels: t.channels,
                    scaler: t.scaler,
                    window: t.window,
                    warmup: t.window,
                    threshold: t.threshold,
                    train_data_sha256: data.sha256(),
                    train_rows: t.train_rows,
                    validation_rows: data.len() - t.train_rows,
                    final_train_loss,
                    final_val_loss,
                },
            )?
        }
        ModelKind::Autoencoder => {
            let ac = AutoencoderTrainConfig {
                hidden: tc.hidden,
                horizon: tc.horizon,
                epochs: tc.epochs,
                learning_rate: tc.learning_rate,
                batch_size: 64,
                validation_fraction: tc.validation_fraction,
                patience: tc.patience,
                seed: tc.seed,
                grad_clip: tc.grad_clip,
                robust_scaling: tc.robust_scaling,
                highway: tc.highway,
                device: tc.device,
            };
            let t = train_autoencoder(&data.rows, data.n_channels(), &ac, |e, t, v| {
                epoch(e, ac.epochs, t, v)
            })
            .with_context(context)?;
            let (final_train_loss, final_val_loss) = best_epoch(&t.train_losses, &t.val_losses);
            let mut m = Model::new(
                Network::Autoencoder(t.model),
                Description {
                    name: tc.name.clone(),
                    channels: data.channels.clone(),
                    scaler: t.scaler,
                    window: tc.window,
                    // Windows are independent: no history needed.
                    warmup: 0,
                    // Calibrated below, through the engine.
                    threshold: forewarn_core::Threshold {
                        value: f64::INFINITY,
                        rule: tc.threshold,
                        samples: 0,
                    },
                    train_data_sha256: data.sha256(),
                    train_rows: t.train_rows,
                    validation_rows: data.len() - t.train_rows,
                    final_train_loss,
                    final_val_loss,
                },
            )?;
            // Fixed threshold: quantile x margin of the validation tail's
            // reconstruction errors, replayed through the engine.
            let val = &data.rows[m.meta.train_rows * data.n_channels()..];
            let engine = m.engine_config(cfg.detector.detector(), 1);
            let scores = calibration_scores(&mut m.network, engine, val)?;
            m.meta.threshold = forewarn_core::Threshold::from_validation(&scores, tc.threshold)
                .context("autoencoder threshold")?;
            m
        }
    };
    let constant: Vec<&str> = (model.meta.channels.iter())
        .zip(&model.meta.scaler.constant)
        .filter_map(|(name, &constant)| constant.then_some(name.as_str()))
        .collect();
    if !constant.is_empty() {
        // The scaler reads them as their constant from now on; say so, as
        // their later changes will never alarm by themselves.
        eprintln!(
            "{indent}constant in training, read as that constant: {}",
            constant.join(", ")
        );
    }
    let c = data.n_channels();
    let (train_part, val) = data.rows.split_at(model.meta.train_rows * c);
    let engine = model.engine_config(cfg.detector.detector(), 1);
    let strategy = calibrate(
        &mut model.network,
        &engine,
        &cfg.threshold.for_model(model.meta.highway),
        tc.seed,
        train_part,
        val,
        model.meta.threshold.value,
    )
    .context("calibrating the threshold strategy")?;
    model.meta.strategy = Some(strategy);
    Ok(model)
}

/// Training and validation loss of the epoch whose weights were kept: the
/// first with the lowest finite validation loss (what training restores).
fn best_epoch(train: &[f64], val: &[f64]) -> (f64, f64) {
    let mut best: Option<usize> = None;
    for (i, v) in val.iter().enumerate() {
        if v.is_finite() && best.is_none_or(|b| *v < val[b]) {
            best = Some(i);
        }
    }
    best.map_or((f64::NAN, f64::NAN), |i| (train[i], val[i]))
}

#[cfg(test)]
mod tests {
    use super::best_epoch;

    #[test]
    fn the_kept_epoch_is_the_first_lowest_finite_validation_loss() {
        let train = [5.0, 4.0, 3.0, 2.0, 1.0];
        assert_eq!(
            best_epoch(&train, &[0.9, 0.5, f64::NAN, 0.5, 0.7]),
            (4.0, 0.5)
        );
        assert_eq!(best_epoch(&train[..1], &[0.3]), (5.0, 0.3));
    }
}
