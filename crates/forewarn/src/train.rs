//! `forewarn train`: fit the forecaster on normal history, calibrate the
//! detector's threshold strategy on a held-out tail, write the model
//! artifact (which `serve` then runs as it is).
//!
//! The strategy is `--threshold-kind` (default: the documented default,
//! `gaussian`), or with `--config model.toml` everything `forewarn
//! evaluate` reads from that file: `[model]` (joint forecaster only: the
//! artifact stores that network) and `[threshold]`. The highway and the
//! Gaussian margin default as in `evaluate` (`ModelSection::highway`,
//! `ThresholdSection::for_model`): cross, and margin 2.0 (1.5 without a
//! highway).

use std::path::PathBuf;

use anyhow::{Context, bail};
use forewarn_core::{DetectorConfig, ThresholdRule};
use forewarn_model::dataset::{CsvOptions, Dataset, read_any};
use forewarn_model::train::{TrainConfig, train};

use crate::config::parse_device;
use crate::evaluate::{
    EvalConfig, ModelKind, ModelSection, ThresholdKind, ThresholdSection, calibrate,
};

/// The clap spelling of [`forewarn_model::Highway`].
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum HighwayArg {
    None,
    Full,
    Cross,
}

impl HighwayArg {
    /// `forewarn evaluate`'s default for the forecaster (an empty
    /// model.toml), so `train` builds the highway `evaluate` measures.
    pub(crate) fn default_forecaster() -> Self {
        Self::from(ModelSection::default().highway())
    }
}

impl From<forewarn_model::Highway> for HighwayArg {
    fn from(h: forewarn_model::Highway) -> Self {
        match h {
            forewarn_model::Highway::None => Self::None,
            forewarn_model::Highway::Full => Self::Full,
            forewarn_model::Highway::Cross => Self::Cross,
        }
    }
}

impl From<HighwayArg> for forewarn_model::Highway {
    fn from(h: HighwayArg) -> Self {
        match h {
            HighwayArg::None => Self::None,
            HighwayArg::Full => Self::Full,
            HighwayArg::Cross => Self::Cross,
        }
    }
}

/// The clap spelling of [`ThresholdKind`].
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum KindArg {
    Fixed,
    Gaussian,
    Dynamic,
}

#[derive(clap::Args, Debug)]
pub struct TrainArgs {
    /// Normal-operation data: CSV files or Tennessee Eastman .dat files (repeatable).
    #[arg(long, required = true, num_args = 1..)]
    data: Vec<PathBuf>,
    /// Output model directory (model.json + model.safetensors).
    #[arg(long, short)]
    out: PathBuf,
    /// CSV field delimiter.
    #[arg(long, default_value = ",")]
    sep: char,
    /// Name of the time column (ISO-8601 or epoch); absent = row index.
    #[arg(long)]
    time_column: Option<String>,
    /// Channels to use, in order (default: every column but time and ignored ones).
    #[arg(long, value_delimiter = ',')]
    channels: Option<Vec<String>>,
    /// Columns to leave out.
    #[arg(long, value_delimiter = ',')]
    ignore_columns: Vec<String>,
    /// model.toml (as `forewarn evaluate --config` reads it): its `[model]`
    /// and `[threshold]` sections replace the training flags below.
    #[arg(long, conflicts_with_all = [
        "window", "horizon", "hidden", "layers", "epochs", "learning_rate",
        "validation_fraction", "patience", "seed", "threshold_quantile",
        "threshold_margin", "threshold_kind", "highway",
    ])]
    config: Option<PathBuf>,
    /// Model name recorded in the artifact and in alerts [default:
    /// forecaster, or model.toml's].
    #[arg(long)]
    name: Option<String>,
    /// Window length w: truncated-BPTT length and warm-up before scoring.
    #[arg(long, default_value_t = 50)]
    window: usize,
    /// Readings per forecast batch.
    #[arg(long, default_value_t = 10)]
    horizon: usize,
    #[arg(long, default_value_t = 64)]
    hidden: usize,
    #[arg(long, default_value_t = 2)]
    layers: usize,
    /// Linear highway added to the LSTM head's forecast: none, full (every
    /// channel from every channel of the current row) or cross (each
    /// channel from the others; a single channel gets none). The default
    /// is `forewarn evaluate`'s (docs/ACCURACY.md). The gaussian
    /// threshold's margin is 2.0 with a highway, 1.5 without. With
    /// --config: model.toml's `[model] highway`.
    #[arg(long, value_enum, default_value_t = HighwayArg::default_forecaster())]
    highway: HighwayArg,
    #[arg(long, default_value_t = 30)]
    epochs: usize,
    #[arg(long, default_value_t = 1e-3)]
    learning_rate: f64,
    /// Fraction of the data (its tail) held out for validation and the threshold.
    #[arg(long, default_value_t = 0.2)]
    validation_fraction: f64,
    /// Epochs without validation improvement before stopping.
    #[arg(long, default_value_t = 5)]
    patience: usize,
    #[arg(long, default_value_t = 42)]
    seed: u64,
    /// Detector strategy calibrated and stored in the artifact: fixed
    /// (quantile x margin of validation batch MSEs), gaussian (Malhotra's
    /// error model, F-beta threshold; docs/EVALUATION.md) or dynamic
    /// (telemanom).
    #[arg(long, value_enum, default_value = "gaussian")]
    threshold_kind: KindArg,
    /// Fixed threshold = quantile of validation batch errors x margin
    /// (always calibrated; also the gaussian fallback).
    #[arg(long, default_value_t = ThresholdRule::default().quantile)]
    threshold_quantile: f64,
    #[arg(long, default_value_t = ThresholdRule::default().margin)]
    threshold_margin: f64,
    /// auto, cpu, cuda or cuda:N [default: auto, or model.toml's].
    #[arg(long)]
    device: Option<String>,
}

pub fn run(a: TrainArgs) -> anyhow::Result<()> {
    if !a.sep.is_ascii() {
        bail!("--sep must be a single ASCII character");
    }
    let opts = CsvOptions {
        delimiter: a.sep as u8,
        time_column: a.time_column.clone(),
        channels: a.channels.clone(),
        ignore_columns: a.ignore_columns.clone(),
        ..CsvOptions::default()
    };
    let data = load_all(&a.data, &opts)?;
    let (cfg, section) = match &a.config {
        Some(path) => {
            let file = EvalConfig::load(Some(path))?;
            if file.model.kind != ModelKind::Forecaster {
                bail!(
                    "{}: [model] kind {:?}: model artifacts (and serve) hold the joint \
                     forecaster only; evaluate the other kinds with forewarn evaluate",
                    path.display(),
                    file.model.kind
                );
            }
            let mut cfg = crate::evaluate::train_config(&file)?;
            if let Some(name) = &a.name {
                cfg.name = name.clone();
            }
            if let Some(d) = &a.device {
                cfg.device = parse_device(d)?;
            }
            if file.model.threads > 0 {
                forewarn_model::set_threads(file.model.threads);
            }
            (cfg, file.threshold)
        }
        None => {
            let cfg = TrainConfig {
                name: a.name.clone().unwrap_or_else(|| "forecaster".into()),
                window: a.window,
                horizon: a.horizon,
                hidden: a.hidden,
                layers: a.layers,
                highway: a.highway.into(),
                epochs: a.epochs,
                learning_rate: a.learning_rate,
                validation_fraction: a.validation_fraction,
                patience: a.patience,
                seed: a.seed,
                threshold: ThresholdRule {
                    quantile: a.threshold_quantile,
                    margin: a.threshold_margin,
                },
                device: parse_device(a.device.as_deref().unwrap_or("auto"))?,
                ..TrainConfig::default()
            };
            let section = ThresholdSection {
                kind: match a.threshold_kind {
                    KindArg::Fixed => ThresholdKind::Fixed,
                    KindArg::Gaussian => ThresholdKind::Gaussian,
                    KindArg::Dynamic => ThresholdKind::Dynamic,
                },
                quantile: a.threshold_quantile,
                margin: a.threshold_margin,
                ..ThresholdSection::default()
            };
            (cfg, section)
        }
    };
    eprintln!(
        "training on {} rows x {} channels from {} file(s) on {}",
        data.len(),
        data.channels.len(),
        a.data.len(),
        forewarn_model::describe_device(cfg.device)
    );
    let mut trained = train(&data, &cfg, |r| {
        eprintln!(
            "epoch {:>3}/{}  train loss {:.5}  val loss {:.5}  ({:.1}s)",
            r.epoch, r.epochs, r.train_loss, r.val_loss, r.seconds
        )
    })
    .context("training")?;
    // The configured strategy, calibrated on the same split the fixed
    // threshold was (training part / validation tail), through the engine.
    let c = data.n_channels();
    let (train_part, val) = data.rows.split_at(trained.meta.train_rows * c);
    let engine = trained.meta.engine_config(DetectorConfig::default(), 1);
    let strategy = calibrate(
        &mut trained.forecaster,
        &engine,
        &section.for_model(trained.meta.highway),
        cfg.seed,
        train_part,
        val,
        trained.meta.threshold.value,
    )
    .context("calibrating the threshold strategy")?;
    trained.meta.strategy = Some(strategy);
    forewarn_model::artifact::save(&trained, &a.out)
        .with_context(|| format!("saving model to {}", a.out.display()))?;
    let m = &trained.meta;
    let strategy = m.strategy();
    println!(
        "model {} version {} -> {}\n  detector {} threshold {:.6} (fixed: {:.6}, q{} x {} of {} validation batches)",
        m.name,
        m.version,
        a.out.display(),
        strategy.kind(),
        strategy.nominal_threshold(),
        m.threshold.value,
        m.threshold.rule.quantile,
        m.threshold.rule.margin,
        m.threshold.samples
    );
    Ok(())
}

/// Reads every file and joins them into one series (same channels required).
pub(crate) fn load_all(paths: &[PathBuf], opts: &CsvOptions) -> anyhow::Result<Dataset> {
    let mut out: Option<Dataset> = None;
    for p in paths {
        let d = read_any(p, opts).with_context(|| format!("reading {}", p.display()))?;
        match &mut out {
            None => out = Some(d),
            Some(acc) => {
                let d = d.select_channels(&acc.channels).with_context(|| {
                    format!(
                        "{} has other channels than {}",
                        p.display(),
                        paths[0].display()
                    )
                })?;
                acc.rows.extend_from_slice(&d.rows);
                acc.timestamps = None;
                acc.labels = None;
                acc.source = format!("{}+{}", acc.source, d.source);
            }
        }
    }
    out.context("no data files given")
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        train: TrainArgs,
    }

    #[test]
    fn defaults_are_evaluates() {
        let a = Cli::parse_from(["train", "--data", "x.csv", "--out", "m"]).train;
        let eval = EvalConfig::load(None).unwrap();
        assert_eq!(a.highway, HighwayArg::Cross);
        assert_eq!(
            forewarn_model::Highway::from(a.highway),
            eval.model.highway()
        );
        let a = Cli::parse_from([
            "train",
            "--data",
            "x.csv",
            "--out",
            "m",
            "--highway",
            "none",
        ]);
        assert_eq!(a.train.highway, HighwayArg::None);
    }
}
