//! `forewarn classify`: the arguments of a classification run
//! ([`forewarn_offline::classify`]: the logistic or softmax head trained on
//! labelled fault data), its progress, the report and its summary.

use std::path::PathBuf;

use anyhow::bail;
use forewarn_data::{CsvOptions, Separator};
use forewarn_offline::classify::ClassifyProgress;
use forewarn_offline::files::write_json;
use forewarn_offline::{Classification, HeadKind, ModelConfig, classify};

#[derive(clap::Args, Debug)]
pub struct ClassifyArgs {
    /// Labelled training data: CSV files, folders of them, or TEP .dat files
    /// (labelled by name with their fault number) (repeatable). Every class
    /// to recognise must be in it.
    #[arg(long, required = true, num_args = 1..)]
    train: Vec<PathBuf>,
    /// Labelled test data, in the same layout.
    #[arg(long, required = true, num_args = 1..)]
    data: Vec<PathBuf>,
    /// CSV field delimiter.
    #[arg(long, default_value = ",")]
    sep: char,
    /// Time column (not a channel).
    #[arg(long)]
    time_column: Option<String>,
    /// Column with each row's class: 0 normal, 1-255 a fault class.
    #[arg(long)]
    label_column: Option<String>,
    /// Columns that are neither channels nor time/label.
    #[arg(long, value_delimiter = ',')]
    ignore_columns: Vec<String>,
    /// Context channels: globs over column names (`'cmd*,*_sp'`): setpoints,
    /// commands, modes the model reads as inputs but never forecasts,
    /// scores, names in an alert or alarms on (model.toml's `[model]
    /// context`, which this replaces).
    #[arg(long, value_delimiter = ',')]
    context_columns: Option<Vec<String>>,
    /// model.toml: `[model] head`, and the LSTM's size, window and training.
    #[arg(long)]
    config: Option<PathBuf>,
    /// The head, instead of `[model] head`.
    #[arg(long, value_enum)]
    head: Option<HeadKind>,
    /// Where to write the JSON report.
    #[arg(long)]
    report: PathBuf,
    /// Store the trained classifier in this directory, for `serve`'s
    /// `[diagnosis] classifier` (it names the likely fault of open alerts).
    #[arg(long)]
    save: Option<PathBuf>,
    /// The stored classifier's name (its version adds a hash of the weights).
    #[arg(long, default_value = "faults")]
    name: String,
}

pub fn run(a: ClassifyArgs) -> anyhow::Result<()> {
    let mut config = ModelConfig::load(a.config.as_deref())?;
    if let Some(globs) = a.context_columns {
        config.model.context = globs;
        config = config.resolved()?;
    }
    let head = a.head.unwrap_or(config.model.head);
    if head == HeadKind::Identity {
        bail!(
            "classify needs a classifier head: --head logistic|softmax, or [model] head in the config"
        );
    }
    if !a.sep.is_ascii() {
        bail!("--sep must be a single ASCII character");
    }
    if config.model.threads > 0 {
        forewarn_model::set_threads(config.model.threads);
    }
    let c_save = a.save.clone();
    let c = Classification {
        train: a.train,
        data: a.data,
        csv: CsvOptions {
            separator: Separator::Char(a.sep as u8),
            time_column: a.time_column,
            label_column: a.label_column,
            ignore_columns: a.ignore_columns,
            ..CsvOptions::default()
        },
        config,
        head,
        save: a.save,
        name: a.name,
    };
    let report = classify(&c, &mut |p| match p {
        ClassifyProgress::Training {
            head,
            windows,
            window,
            channels,
            classes,
        } => eprintln!(
            "training the {head:?} head on {windows} windows of {window} rows x {channels} \
             channels ({classes} classes)"
        ),
        ClassifyProgress::Trained {
            first,
            last,
            epochs,
        } => eprintln!("  loss {first:.4} -> {last:.4} over {epochs} epochs"),
    })?;
    print!("{}", report.summary());
    write_json(&a.report, &report)?;
    eprintln!("report -> {}", a.report.display());
    if let (Some(v), Some(dir)) = (&report.saved, &c_save) {
        eprintln!("classifier {v} -> {}", dir.display());
    }
    Ok(())
}
