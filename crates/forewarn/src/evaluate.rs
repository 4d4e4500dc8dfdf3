//! `forewarn evaluate`: the arguments of an evaluation run
//! ([`forewarn_offline::evaluate`]: train, replay every test file through
//! the service's streaming detector, score the alerts against the labels),
//! its progress on stderr, the report and its summary.
//!
//! Metrics and their formulas: `forewarn_eval` and docs/EVALUATION.md.

use std::path::PathBuf;

use anyhow::bail;
use forewarn_data::{CsvOptions, Separator};
use forewarn_eval::{WindowPosition, parse_window_width};
use forewarn_offline::evaluate::EvalProgress;
use forewarn_offline::files::write_json;
use forewarn_offline::{Evaluation, ModelConfig, TrainOn, TrainRows, evaluate};

#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum PositionArg {
    Right,
    Centered,
}

#[derive(clap::Args, Debug)]
pub struct EvaluateArgs {
    /// Labelled test data: CSV files, folders of them, or TEP .dat files (repeatable).
    #[arg(long, required = true, num_args = 1..)]
    data: Vec<PathBuf>,
    /// CSV field delimiter.
    #[arg(long, default_value = ",")]
    sep: char,
    /// Time column (ISO-8601 or epoch); absent = the row index is the time.
    #[arg(long)]
    time_column: Option<String>,
    /// Column with anomaly labels: 0 normal, non-zero anomalous (TEP .dat files are labelled by name).
    #[arg(long)]
    label_column: Option<String>,
    /// Column marking changepoints (non-zero); anchors the NAB windows instead of labelled segments.
    #[arg(long)]
    changepoint_column: Option<String>,
    /// Columns that are neither channels nor time/label.
    #[arg(long, value_delimiter = ',')]
    ignore_columns: Vec<String>,
    /// ROW,COL: columns giving the grid cell of the fault at each row (-1:
    /// none; not channels), as `simulate --grid` writes them: the report
    /// then says how many alerts name a cell within one of the fault.
    #[arg(long, value_parser = forewarn_offline::evaluate::parse_cell_columns)]
    fault_cell_columns: Option<[String; 2]>,
    /// Context channels: globs over column names (`'cmd*,*_sp'`): setpoints,
    /// commands, modes the model reads as inputs but never forecasts,
    /// scores, names in an alert or alarms on (model.toml's `[model]
    /// context`, which this replaces).
    #[arg(long, value_delimiter = ',')]
    context_columns: Option<Vec<String>>,
    /// Per file: train on its first N rows, score the rest (one model per
    /// file). "15%" trains on that share of each file's rows (NAB's
    /// probationary period), for folders of files of different lengths.
    #[arg(long, conflicts_with_all = ["train", "train_dir"], required_unless_present_any = ["train", "train_dir"], value_parser = clap::value_parser!(TrainRows))]
    train_rows: Option<TrainRows>,
    /// Train one model on these normal files and score every --data file.
    #[arg(long, num_args = 1.., conflicts_with = "train_dir")]
    train: Vec<PathBuf>,
    /// Per test file, train on the file of the same name in this folder
    /// and score the test file whole (one model per file, as telemanom's
    /// train/ and test/ folders pair channels).
    #[arg(long, value_name = "DIR")]
    train_dir: Option<PathBuf>,
    /// model.toml: model, training, threshold strategy, detector.
    #[arg(long)]
    config: Option<PathBuf>,
    /// NAB window width around each labelled segment or changepoint ("60s", "5m";
    /// a bare number is in report units: seconds, or rows without a time column).
    /// Default: NAB's 10% of the file's span shared among its windows.
    #[arg(long)]
    nab_window: Option<String>,
    #[arg(long, value_enum, default_value = "centered")]
    nab_window_position: PositionArg,
    /// Where to write the JSON report.
    #[arg(long)]
    report: PathBuf,
    /// Folder for one PNG per file: channels, score, threshold, labelled and detected segments.
    #[arg(long)]
    plot: Option<PathBuf>,
    /// Folder for one CSV per file, a line per row: its label, the score
    /// and threshold of the batch it was scored in, and whether it was
    /// flagged (for inspecting or combining detections elsewhere).
    #[arg(long)]
    decisions: Option<PathBuf>,
    /// Inference precision of the scoring replay (serve's model.precision):
    /// f32, or bf16 (the forecaster only). Training and calibration run in
    /// f32, as `forewarn train` does, so bf16 scores the files against the
    /// thresholds an f32 calibration set: what `serve` with bf16 does.
    #[arg(long, default_value_t = forewarn_model::Precision::F32)]
    precision: forewarn_model::Precision,
    /// Device of the scoring replay (auto, cpu, cuda, cuda:N; serve's
    /// model.device) when it differs from model.toml's `[model] device`:
    /// the model is trained and calibrated there, then saved and loaded
    /// on this one, as `serve` loads an artifact. With `--score-device
    /// cuda` a CPU-trained network is scored on the GPU, so its decisions
    /// compare with a CPU run's row for row (benches/gpu.sh).
    #[arg(long)]
    score_device: Option<String>,
    /// Files fitted and scored at once when each has its own model
    /// (--train-rows, --train-dir), each on one libtorch thread; 0: one per
    /// core. The report is the same for any count.
    #[arg(long, default_value_t = 0)]
    jobs: usize,
}

pub fn run(a: EvaluateArgs) -> anyhow::Result<()> {
    let mut config = ModelConfig::load(a.config.as_deref())?;
    if let Some(globs) = a.context_columns {
        config.model.context = globs;
        config = config.resolved()?;
    }
    if config.model.threads > 0 {
        forewarn_model::set_threads(config.model.threads);
    }
    if !a.sep.is_ascii() {
        bail!("--sep must be a single ASCII character");
    }
    let e = Evaluation {
        data: a.data,
        csv: CsvOptions {
            separator: Separator::Char(a.sep as u8),
            time_column: a.time_column,
            label_column: a.label_column,
            ignore_columns: a.ignore_columns,
            ..CsvOptions::default()
        },
        changepoint_column: a.changepoint_column,
        fault_cell_columns: a.fault_cell_columns,
        train: match (a.train_rows, a.train_dir) {
            (Some(rows), _) => TrainOn::Rows(rows),
            (None, Some(dir)) => TrainOn::Paired(dir),
            (None, None) => TrainOn::Files(a.train),
        },
        config,
        nab_window: (a.nab_window.as_deref().map(parse_window_width))
            .transpose()
            .map_err(anyhow::Error::msg)?,
        nab_position: match a.nab_window_position {
            PositionArg::Right => WindowPosition::Right,
            PositionArg::Centered => WindowPosition::Centered,
        },
        plot: a.plot,
        decisions: a.decisions,
        precision: a.precision,
        score_device: a.score_device,
        jobs: a.jobs,
    };
    let report = evaluate(&e, &mut print)?;
    write_json(&a.report, &report)?;
    println!(
        "{}\nreport -> {}",
        report.metrics.summary(&report.time_unit),
        a.report.display()
    );
    if let Some(l) = report.localisation {
        println!("localisation: {l}");
    }
    Ok(())
}

/// Prints an evaluation's progress on stderr.
fn print(p: EvalProgress<'_>) {
    match p {
        EvalProgress::TrainingShared {
            rows,
            channels,
            files,
        } => eprintln!(
            "training one model on {rows} rows x {channels} channels from {files} file(s)"
        ),
        EvalProgress::TrainingOn { file, rows } => {
            eprintln!("{}: training on the first {rows} rows", file.display())
        }
        EvalProgress::Window {
            source,
            rows,
            window,
            using,
        } => eprintln!(
            "  {source}: {rows} rows are too few for window {window}; using window {using}"
        ),
        EvalProgress::Fit(p) => crate::progress::print("  ", p),
        EvalProgress::Fitted {
            strategy,
            threshold,
        } => eprintln!("  threshold ({strategy}): {threshold:.6}"),
        EvalProgress::Scored { file, metrics } => {
            eprintln!("{}: {}", file.display(), metrics.file_line())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        evaluate: EvaluateArgs,
    }

    fn parse(extra: &[&str]) -> Result<EvaluateArgs, clap::Error> {
        let mut args = vec!["evaluate", "--data", "x.csv", "--report", "r.json"];
        args.extend_from_slice(extra);
        Cli::try_parse_from(args).map(|c| c.evaluate)
    }

    #[test]
    fn arguments_parse_to_an_evaluation() {
        let a = parse(&["--train-rows", "15%"]).unwrap();
        assert_eq!(a.train_rows, Some(TrainRows::Percent(15.0)));
        assert_eq!(a.nab_window_position, PositionArg::Centered);
        assert_eq!(
            parse(&["--train-rows", "400"]).unwrap().train_rows,
            Some(TrainRows::Rows(400))
        );
        let e = parse(&["--train-rows", "100%"]).err().unwrap().to_string();
        assert!(e.contains("strictly between 0 and 100"), "{e}");
        // One of --train-rows and --train.
        assert!(parse(&[]).is_err());
        assert!(parse(&["--train-rows", "4", "--train", "n.csv"]).is_err());
        assert!(parse(&["--train-dir", "train", "--train", "n.csv"]).is_err());
        assert_eq!(
            parse(&["--train-dir", "train"]).unwrap().train_dir,
            Some(PathBuf::from("train"))
        );
        assert_eq!(
            parse(&["--train", "n.csv"]).unwrap().train,
            vec![PathBuf::from("n.csv")]
        );
        let cells = parse(&["--train-rows", "9", "--fault-cell-columns", "r,c"]).unwrap();
        assert_eq!(cells.fault_cell_columns, Some(["r".into(), "c".into()]));
        assert!(parse(&["--train-rows", "9", "--fault-cell-columns", "r"]).is_err());
    }
}
