//! `forewarn train`: fit the forecaster on normal history, calibrate the
//! threshold on a held-out tail, write the model artifact.

use std::path::PathBuf;

use anyhow::{Context, bail};
use forewarn_core::ThresholdRule;
use forewarn_model::dataset::{CsvOptions, Dataset, read_any};
use forewarn_model::train::{TrainConfig, train};

use crate::config::parse_device;

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
    /// Model name recorded in the artifact and in alerts.
    #[arg(long, default_value = "forecaster")]
    name: String,
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
    /// Threshold = quantile of validation batch errors x margin.
    #[arg(long, default_value_t = ThresholdRule::default().quantile)]
    threshold_quantile: f64,
    #[arg(long, default_value_t = ThresholdRule::default().margin)]
    threshold_margin: f64,
    /// auto, cpu, cuda or cuda:N.
    #[arg(long, default_value = "auto")]
    device: String,
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
    let device = parse_device(&a.device)?;
    let cfg = TrainConfig {
        name: a.name,
        window: a.window,
        horizon: a.horizon,
        hidden: a.hidden,
        layers: a.layers,
        epochs: a.epochs,
        learning_rate: a.learning_rate,
        validation_fraction: a.validation_fraction,
        patience: a.patience,
        seed: a.seed,
        threshold: ThresholdRule {
            quantile: a.threshold_quantile,
            margin: a.threshold_margin,
        },
        device,
        ..TrainConfig::default()
    };
    eprintln!(
        "training on {} rows x {} channels from {} file(s) on {}",
        data.len(),
        data.channels.len(),
        a.data.len(),
        forewarn_model::describe_device(device)
    );
    let trained = train(&data, &cfg, |r| {
        eprintln!(
            "epoch {:>3}/{}  train loss {:.5}  val loss {:.5}  ({:.1}s)",
            r.epoch, r.epochs, r.train_loss, r.val_loss, r.seconds
        )
    })
    .context("training")?;
    forewarn_model::artifact::save(&trained, &a.out)
        .with_context(|| format!("saving model to {}", a.out.display()))?;
    let m = &trained.meta;
    println!(
        "model {} version {} -> {}\n  threshold {:.6} (q{} x {} of {} validation batches)",
        m.name,
        m.version,
        a.out.display(),
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
