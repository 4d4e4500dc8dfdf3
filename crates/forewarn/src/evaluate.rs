//! `forewarn evaluate`: train (per file on its first rows, or once on
//! normal files), replay every test file through the service's streaming
//! detector, and score the alerts against the labels.
//!
//! Metrics and their formulas: `forewarn_eval` and docs/EVALUATION.md.

mod calibrate;
pub(crate) mod config;
mod fit;
mod plot;
mod replay;
mod streams;

use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use forewarn_eval::{Counts, FileInput, Metrics, WindowPosition};
use forewarn_model::Model;
use forewarn_model::dataset::{CsvOptions, Dataset, read_any};
use forewarn_model::train::TrainConfig;
use serde::Serialize;

use crate::config::parse_device;
pub use config::{EvalConfig, ModelKind, ModelSection, ThresholdKind, ThresholdSection};
pub use fit::fit;
use replay::{Decision, point_predictions, replay};

#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum PositionArg {
    Right,
    Centered,
}

/// How much of each file `--train-rows` trains on.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum TrainRows {
    Rows(usize),
    /// A share of the file's rows, in percent (0, 100).
    Percent(f64),
}

impl TrainRows {
    /// The rows to train on in a file of `total` rows (a share rounds
    /// down); an error when that leaves nothing to train on or to score.
    fn resolve(self, total: usize) -> Result<usize, String> {
        let n = match self {
            Self::Rows(n) => n,
            Self::Percent(p) => (total as f64 * p / 100.0).floor() as usize,
        };
        if n == 0 {
            return Err(format!("--train-rows {self} is no row of {total}"));
        }
        if n >= total {
            return Err(format!(
                "--train-rows {self} leaves no rows to score ({total} rows)"
            ));
        }
        Ok(n)
    }
}

impl std::fmt::Display for TrainRows {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Rows(n) => write!(f, "{n}"),
            Self::Percent(p) => write!(f, "{p}%"),
        }
    }
}

fn parse_train_rows(s: &str) -> Result<TrainRows, String> {
    let s = s.trim();
    if let Some(p) = s.strip_suffix('%') {
        return match p.trim().parse::<f64>() {
            Ok(p) if p > 0.0 && p < 100.0 => Ok(TrainRows::Percent(p)),
            _ => Err(format!(
                "{s:?}: a share must be a number of percent strictly between 0 and 100"
            )),
        };
    }
    s.parse::<usize>().map(TrainRows::Rows).map_err(|_| {
        format!("{s:?}: expected a number of rows (400) or a share of each file (15%)")
    })
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
    /// Per file: train on its first N rows, score the rest (one model per
    /// file). "15%" trains on that share of each file's rows (NAB's
    /// probationary period), for folders of files of different lengths.
    #[arg(long, conflicts_with = "train", required_unless_present = "train", value_parser = parse_train_rows)]
    train_rows: Option<TrainRows>,
    /// Train one model on these normal files and score every --data file.
    #[arg(long, num_args = 1..)]
    train: Vec<PathBuf>,
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
}

/// A test file as loaded.
struct Loaded {
    data: Dataset,
    labels: Vec<bool>,
    changepoints: Option<Vec<bool>>,
}

/// What one file's evaluation produced.
#[derive(Debug, Clone, Serialize)]
pub struct FileReport {
    pub file: String,
    pub rows: usize,
    pub channels: usize,
    /// Rows used for training (`--train-rows`), not scored.
    pub train_rows: usize,
    pub model_version: String,
    pub threshold_kind: ThresholdKind,
    /// The threshold the strategy compares with (for `dynamic`, its floor).
    pub threshold: f64,
    #[serde(flatten)]
    pub metrics: Metrics,
    pub counts: Counts,
}

#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub forewarn_version: String,
    /// `train_rows` or `train`.
    pub mode: String,
    /// Unit of `mean_detection_delay` and NAB windows: `seconds` or `rows`.
    pub time_unit: String,
    pub nab_window: Option<f64>,
    pub nab_window_position: WindowPosition,
    /// Inference precision of the scoring replay (`--precision`; not
    /// `precision`, which is the metric).
    pub inference_precision: forewarn_model::Precision,
    /// `--score-device`, when given (else the scoring ran on `[model] device`).
    pub score_device: Option<String>,
    pub config: EvalConfig,
    /// Pooled over all files.
    #[serde(flatten)]
    pub metrics: Metrics,
    pub counts: Counts,
    pub files: Vec<FileReport>,
}

pub fn run(a: EvaluateArgs) -> anyhow::Result<()> {
    let cfg = EvalConfig::load(a.config.as_deref())?;
    if cfg.model.threads > 0 {
        forewarn_model::set_threads(cfg.model.threads);
    }
    if !a.sep.is_ascii() {
        bail!("--sep must be a single ASCII character");
    }
    let files = expand(&a.data)?;
    if files.is_empty() {
        bail!("no data files found in {:?}", a.data);
    }
    let opts = CsvOptions {
        delimiter: a.sep as u8,
        time_column: a.time_column.clone(),
        label_column: a.label_column.clone(),
        ignore_columns: a
            .ignore_columns
            .iter()
            .cloned()
            .chain(a.changepoint_column.clone())
            .collect(),
        ..CsvOptions::default()
    };
    let position = match a.nab_window_position {
        PositionArg::Right => WindowPosition::Right,
        PositionArg::Centered => WindowPosition::Centered,
    };
    let nab_window = a.nab_window.as_deref().map(parse_width).transpose()?;
    let score_device = a.score_device.as_deref().map(parse_device).transpose()?;

    let mut shared = if a.train_rows.is_none() {
        let train_files = expand(&a.train)?;
        let data = load_training(&train_files, &opts)?;
        eprintln!(
            "training one model on {} rows x {} channels from {} file(s)",
            data.len(),
            data.n_channels(),
            train_files.len()
        );
        Some(fit_for_scoring(&data, &cfg, a.precision, score_device)?)
    } else {
        None
    };

    let mut reports = Vec::new();
    let mut pooled = Counts::default();
    let mut time_unit = None;
    for path in &files {
        let loaded = load_test(
            path,
            &opts,
            a.changepoint_column.as_deref(),
            a.time_column.as_deref(),
        )?;
        let mut per_file = None;
        let skip;
        let fitted: &mut Model = match (shared.as_mut(), a.train_rows) {
            (Some(f), _) => {
                skip = 0;
                f
            }
            (None, Some(rows)) => {
                let n = (rows.resolve(loaded.data.len()))
                    .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
                skip = n;
                let mut train_part = loaded.data.slice(0..n);
                train_part.labels = None;
                eprintln!("{}: training on the first {n} rows", path.display());
                per_file.insert(fit_for_scoring(
                    &train_part,
                    &cfg,
                    a.precision,
                    score_device,
                )?)
            }
            (None, None) => unreachable!("clap requires --train or --train-rows"),
        };
        let data = loaded
            .data
            .select_channels(&fitted.meta.channels)
            .with_context(|| format!("{} does not have the model's channels", path.display()))?;
        let (decisions, pred) = score_file(fitted, &data, &cfg)?;
        let n = data.len();
        let truth = &loaded.labels[skip..];
        let pred_scored = &pred[skip..];
        let unit = if data.timestamps.is_some() {
            "seconds"
        } else {
            "rows"
        };
        match time_unit {
            None => time_unit = Some(unit),
            Some(u) if u != unit => {
                bail!("some files have a time column and others not: cannot pool delays")
            }
            _ => {}
        }
        let times = report_times(&data, skip);
        let cps: Option<Vec<usize>> = loaded.changepoints.as_ref().map(|c| {
            c[skip..]
                .iter()
                .enumerate()
                .filter(|(_, v)| **v)
                .map(|(i, _)| i)
                .collect()
        });
        let counts = Counts::of(&FileInput {
            truth,
            pred: pred_scored,
            times: &times,
            changepoints: cps.as_deref(),
            nab_width: nab_window,
            nab_position: position,
        });
        pooled.add(&counts);
        let metrics = counts.metrics();
        eprintln!(
            "{}: f1 {} event_f1 {} nab {} far {}% delay {}",
            path.display(),
            fmt(metrics.f1),
            fmt(metrics.event_f1),
            fmt(metrics.nab_standard),
            fmt(metrics.far),
            fmt(metrics.mean_detection_delay)
        );
        if let Some(dir) = &a.decisions {
            let out = dir.join(plot_name(path)).with_extension("csv");
            write_decisions(&out, &data, &loaded.labels, &pred, &decisions, skip)
                .with_context(|| format!("writing {}", out.display()))?;
        }
        if let Some(dir) = &a.plot {
            let out = dir.join(plot_name(path));
            plot::plot_file(&out, &data, &loaded.labels, &pred, &decisions, skip)
                .with_context(|| format!("plotting {}", out.display()))?;
        }
        reports.push(FileReport {
            file: path.display().to_string(),
            rows: n,
            channels: data.n_channels(),
            train_rows: skip,
            model_version: fitted.meta.version.clone(),
            threshold_kind: cfg.threshold.kind,
            threshold: fitted.meta.strategy().nominal_threshold(),
            metrics,
            counts,
        });
    }
    let report = Report {
        forewarn_version: env!("CARGO_PKG_VERSION").into(),
        mode: if a.train_rows.is_some() {
            "train_rows"
        } else {
            "train"
        }
        .into(),
        time_unit: time_unit.unwrap_or("rows").into(),
        nab_window,
        nab_window_position: position,
        inference_precision: a.precision,
        score_device: a.score_device.clone(),
        config: cfg,
        metrics: pooled.metrics(),
        counts: pooled,
        files: reports,
    };
    write_report(&a.report, &report)?;
    let m = &report.metrics;
    println!(
        "{} files, {} points: precision {} recall {} f1 {} far {}% mar {}% pa_f1 {} event_f1 {} \
         nab {} / {} / {} delay {} {}\nreport -> {}",
        m.files,
        m.points,
        fmt(m.precision),
        fmt(m.recall),
        fmt(m.f1),
        fmt(m.far),
        fmt(m.mar),
        fmt(m.pa_f1),
        fmt(m.event_f1),
        fmt(m.nab_standard),
        fmt(m.nab_low_fp),
        fmt(m.nab_low_fn),
        fmt(m.mean_detection_delay),
        report.time_unit,
        a.report.display()
    );
    Ok(())
}

fn fmt(v: Option<f64>) -> String {
    v.map_or("-".into(), |v| format!("{v:.3}"))
}

/// Creates the folder `path` is to be written in, if it names one.
pub(crate) fn create_parent(path: &Path) -> anyhow::Result<()> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    Ok(())
}

/// Writes `report` as pretty JSON, creating its folder.
pub(crate) fn write_report<T: Serialize>(path: &Path, report: &T) -> anyhow::Result<()> {
    create_parent(path)?;
    let json = serde_json::to_vec_pretty(report)?;
    std::fs::write(path, json).with_context(|| format!("writing {}", path.display()))
}

/// `--decisions`: a line per row of `data`: `row`, `time_ms` (empty
/// without a time column), `label`, `train` (1 for the rows a
/// `--train-rows` model was trained on: replayed as history, never
/// counted), `score` and `threshold` of the batch the row was in (empty
/// during warm-up), and `flagged`, the point prediction the metrics count
/// (0 on training rows).
fn write_decisions(
    path: &Path,
    data: &Dataset,
    labels: &[bool],
    pred: &[bool],
    decisions: &[Decision],
    skip: usize,
) -> anyhow::Result<()> {
    use std::fmt::Write as _;
    create_parent(path)?;
    let n = data.len();
    let mut batch: Vec<Option<(f64, f64)>> = vec![None; n];
    for d in decisions {
        for b in &mut batch[d.start.min(n)..=d.end.min(n.saturating_sub(1))] {
            *b = Some((d.score, d.threshold));
        }
    }
    let mut out = String::from("row,time_ms,label,train,score,threshold,flagged\n");
    for i in 0..n {
        let time = (data.timestamps.as_ref()).map_or(String::new(), |t| t[i].to_string());
        let (score, threshold) = batch[i].map_or((String::new(), String::new()), |(s, t)| {
            (s.to_string(), t.to_string())
        });
        let _ = writeln!(
            out,
            "{i},{time},{},{},{score},{threshold},{}",
            u8::from(labels.get(i).copied().unwrap_or(false)),
            u8::from(i < skip),
            u8::from(i >= skip && pred.get(i).copied().unwrap_or(false)),
        );
    }
    std::fs::write(path, out)?;
    Ok(())
}

fn plot_name(path: &Path) -> String {
    let stem = path.file_stem().and_then(|s| s.to_str()).unwrap_or("file");
    let parent = path
        .parent()
        .and_then(|p| p.file_name())
        .and_then(|s| s.to_str())
        .unwrap_or("");
    let safe = |s: &str| {
        s.chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                    c
                } else {
                    '_'
                }
            })
            .collect::<String>()
    };
    if parent.is_empty() {
        format!("{}.png", safe(stem))
    } else {
        format!("{}_{}.png", safe(parent), safe(stem))
    }
}

/// "60s", "5m", "1h 30m" (humantime) in seconds; a bare number as is.
fn parse_width(s: &str) -> anyhow::Result<f64> {
    if let Ok(v) = s.trim().parse::<f64>()
        && v.is_finite()
        && v >= 0.0
    {
        return Ok(v);
    }
    let d = humantime::parse_duration(s.trim())
        .with_context(|| format!("--nab-window {s:?}: expected e.g. 60s, 5m or a number"))?;
    Ok(d.as_secs_f64())
}

/// Times of rows `skip..` in report units: seconds since the file's first
/// row, or the row index.
fn report_times(data: &Dataset, skip: usize) -> Vec<f64> {
    match &data.timestamps {
        Some(ts) => ts[skip..]
            .iter()
            .map(|t| (t - ts[0]) as f64 / 1000.0)
            .collect(),
        None => (skip..data.len()).map(|i| i as f64).collect(),
    }
}

/// Files named by `paths`; folders are searched recursively for
/// .csv/.txt/.tsv/.dat files, in name order.
pub(crate) fn expand(paths: &[PathBuf]) -> anyhow::Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    for p in paths {
        if p.is_dir() {
            let mut found = Vec::new();
            walk(p, &mut found)?;
            found.sort();
            out.extend(found);
        } else if p.is_file() {
            out.push(p.clone());
        } else {
            bail!("{}: no such file or folder", p.display());
        }
    }
    Ok(out)
}

fn walk(dir: &Path, out: &mut Vec<PathBuf>) -> anyhow::Result<()> {
    for entry in std::fs::read_dir(dir).with_context(|| format!("listing {}", dir.display()))? {
        let path = entry?.path();
        if path.is_dir() {
            walk(&path, out)?;
        } else if path.extension().and_then(|e| e.to_str()).is_some_and(|e| {
            ["csv", "txt", "tsv", "dat"].contains(&e.to_ascii_lowercase().as_str())
        }) {
            out.push(path);
        }
    }
    Ok(())
}

fn load_test(
    path: &Path,
    opts: &CsvOptions,
    cp_column: Option<&str>,
    time_column: Option<&str>,
) -> anyhow::Result<Loaded> {
    let data = read_labelled(path, opts)?;
    let labels: Vec<bool> = (data.labels.iter().flatten()).map(|v| *v != 0).collect();
    let changepoints = match cp_column {
        Some(col) if !is_dat(path) => {
            let cp_opts = CsvOptions {
                label_column: Some(col.to_owned()),
                time_column: time_column.map(str::to_owned),
                ignore_columns: opts
                    .ignore_columns
                    .iter()
                    .filter(|c| *c != col)
                    .cloned()
                    .chain(opts.label_column.clone())
                    .collect(),
                ..opts.clone()
            };
            let d = read_any(path, &cp_opts)
                .with_context(|| format!("reading changepoints of {}", path.display()))?;
            Some(
                d.labels
                    .unwrap_or_default()
                    .iter()
                    .map(|v| *v != 0)
                    .collect(),
            )
        }
        _ => None,
    };
    Ok(Loaded {
        data,
        labels,
        changepoints,
    })
}

/// Reads `path`, which must have labels (a label column, or a TEP file's
/// name): what `evaluate` scores against and `classify` learns.
pub(crate) fn read_labelled(path: &Path, opts: &CsvOptions) -> anyhow::Result<Dataset> {
    let data = read_any(path, opts).with_context(|| format!("reading {}", path.display()))?;
    if data.labels.is_none() {
        bail!(
            "{}: no labels: pass --label-column (TEP files are labelled by their name)",
            path.display()
        );
    }
    Ok(data)
}

fn is_dat(path: &Path) -> bool {
    path.extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("dat"))
}

/// Every training file joined into one series (same channels required).
fn load_training(paths: &[PathBuf], opts: &CsvOptions) -> anyhow::Result<Dataset> {
    let opts = CsvOptions {
        label_column: None,
        ignore_columns: opts
            .ignore_columns
            .iter()
            .cloned()
            .chain(opts.label_column.clone())
            .collect(),
        ..opts.clone()
    };
    if paths.is_empty() {
        anyhow::bail!("no training files given");
    }
    let mut d = crate::train::load_all(paths, &opts)?;
    // Labels of normal training files are not used.
    d.labels = None;
    Ok(d)
}

pub fn train_config(cfg: &EvalConfig) -> anyhow::Result<TrainConfig> {
    let m = &cfg.model;
    Ok(TrainConfig {
        hidden: m.hidden,
        layers: m.layers,
        horizon: m.horizon,
        window: m.window,
        epochs: m.epochs,
        learning_rate: m.learning_rate,
        batch_streams: m.batch_streams,
        validation_fraction: m.validation_fraction,
        patience: m.patience,
        seed: m.seed,
        grad_clip: m.grad_clip,
        robust_scaling: m.robust_scaling,
        highway: m.highway(),
        threshold: forewarn_core::ThresholdRule {
            quantile: cfg.threshold.quantile,
            margin: cfg.threshold.margin,
        },
        name: m.name.clone(),
        device: parse_device(&m.device)?,
    })
}

/// Trains on `data` and calibrates the configured threshold strategy on
/// the validation tail (the rows training held out): [`fit::fit`], as
/// `forewarn train` does, with the window shrunk for short training parts.
/// Then moves it to `score_device` (when given and not the training
/// device) and switches the network to `precision` for scoring (bf16 is
/// refused for a kind other than the forecaster).
fn fit_for_scoring(
    data: &Dataset,
    cfg: &EvalConfig,
    precision: forewarn_model::Precision,
    score_device: Option<tch::Device>,
) -> anyhow::Result<Model> {
    let mut tc = train_config(cfg)?;
    if let Some(w) = fitting_window(data.len(), &tc) {
        eprintln!(
            "  {}: {} rows are too few for window {}; using window {w}",
            data.source,
            data.len(),
            tc.window
        );
        tc.window = w;
    }
    let mut model = fit(data, cfg, &tc, "  ")?;
    let strategy = model.meta.strategy();
    eprintln!(
        "  threshold ({}): {:.6}",
        strategy.kind(),
        strategy.nominal_threshold()
    );
    if let Some(device) = score_device.filter(|d| *d != tc.device) {
        model = moved_to(&model, device)?;
    }
    model.network.set_precision(precision)?;
    Ok(model)
}

/// `model` on `device`, through the artifact `serve` would load: saved to a
/// scratch folder and loaded from it (weights, scaler and threshold
/// strategy travel exactly as to a serving machine).
fn moved_to(model: &Model, device: tch::Device) -> anyhow::Result<Model> {
    static SCRATCH: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = SCRATCH.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let dir = std::env::temp_dir().join(format!("forewarn-evaluate-{}-{n}", std::process::id()));
    let moved = forewarn_model::save_model(model, &dir)
        .and_then(|()| forewarn_model::load(&dir, device))
        .with_context(|| format!("moving the model to {device:?}"));
    let _ = std::fs::remove_dir_all(&dir);
    moved
}

/// A smaller window (warm-up) when the validation tail of `rows` rows is
/// too short for the configured one plus two batches, as happens with short
/// per-file training parts; `None` when the configured window fits.
fn fitting_window(rows: usize, tc: &TrainConfig) -> Option<usize> {
    let n_val = (rows as f64 * tc.validation_fraction).round() as usize;
    if n_val >= tc.window + 2 * tc.horizon {
        return None;
    }
    Some(n_val.saturating_sub(2 * tc.horizon).max(tc.horizon))
}

/// Replays the whole file (training rows too, as history) through the
/// streaming detector; returns batch decisions and per-point predictions.
fn score_file(
    fitted: &mut Model,
    data: &Dataset,
    cfg: &EvalConfig,
) -> anyhow::Result<(Vec<Decision>, Vec<bool>)> {
    let engine = fitted.engine_config(cfg.detector.detector(), 1);
    let decisions = replay(&mut fitted.network, engine, &data.rows)?;
    let pred = point_predictions(&decisions, data.len(), cfg.detector.min_event_length);
    Ok((decisions, pred))
}

#[cfg(test)]
mod tests {
    use super::*;
    use forewarn_eval::nab::scaled_sigmoid;
    use std::ops::Range;

    /// 400 rows, 1 s apart, two smooth channels with small deterministic
    /// noise; with `fault`, channel `a` jumps by 50 from row 300 to the end
    /// (labelled 1 there).
    fn write_csv(path: &Path, fault: bool) {
        write_csv_with_command(path, fault, None);
    }

    /// [`write_csv`], plus with `command` a third channel `cmd` that is 0
    /// but for the rows of `command`, where it is 1 (a command flag).
    fn write_csv_with_command(path: &Path, fault: bool, command: Option<Range<u64>>) {
        let cmd_header = if command.is_some() { "cmd;" } else { "" };
        let mut s = format!("time;a;b;{cmd_header}site;label\n");
        for i in 0..400 {
            let t = 1_767_225_600 + i;
            let noise = ((i * 7919) % 13) as f64 / 130.0;
            let mut a = (i as f64 * 0.2).sin() + noise;
            let b = (i as f64 * 0.2).cos() * 2.0 - noise;
            let anomalous = fault && i >= 300;
            if anomalous {
                a += 50.0;
            }
            let cmd = match &command {
                Some(rows) => format!("{};", u8::from(rows.contains(&i))),
                None => String::new(),
            };
            s.push_str(&format!(
                "{t};{a:.4};{b:.4};{cmd}x;{}\n",
                u8::from(anomalous)
            ));
        }
        std::fs::write(path, s).unwrap();
    }

    fn args(
        dir: &Path,
        data: Vec<PathBuf>,
        train: Vec<PathBuf>,
        train_rows: Option<usize>,
        kind: &str,
    ) -> EvaluateArgs {
        let config = dir.join("model.toml");
        std::fs::write(
            &config,
            format!("[model]\nhidden = 8\nlayers = 1\nhorizon = 5\nwindow = 20\nepochs = 3\nthreads = 1\n\
             validation_fraction = 0.3\n[threshold]\nkind = \"{kind}\"\nmargin = 3.0\n[detector]\nopen_after = 1\n"),
        )
        .unwrap();
        EvaluateArgs {
            data,
            sep: ';',
            time_column: Some("time".into()),
            label_column: Some("label".into()),
            changepoint_column: None,
            ignore_columns: vec!["site".into()],
            train_rows: train_rows.map(TrainRows::Rows),
            train,
            config: Some(config),
            nab_window: None,
            nab_window_position: PositionArg::Centered,
            report: dir.join("out/report.json"),
            plot: None,
            decisions: None,
            precision: forewarn_model::Precision::F32,
            score_device: None,
        }
    }

    /// `--score-device` moves the fitted model through its artifact; the
    /// moved copy (onto the CPU again here; benches/gpu.sh moves it onto
    /// CUDA) is the same model and scores every batch exactly alike.
    #[test]
    fn a_model_moved_through_its_artifact_scores_alike() {
        let dir = tempfile::tempdir().unwrap();
        let faulty = dir.path().join("faulty.csv");
        write_csv(&faulty, true);
        let a = args(dir.path(), vec![], vec![], None, "gaussian");
        let cfg = EvalConfig::load(a.config.as_deref()).unwrap();
        let opts = CsvOptions {
            delimiter: b';',
            time_column: Some("time".into()),
            label_column: Some("label".into()),
            ignore_columns: vec!["site".into()],
            ..CsvOptions::default()
        };
        let data = read_labelled(&faulty, &opts).unwrap();
        let mut train_part = data.slice(0..200);
        train_part.labels = None;
        let f32 = forewarn_model::Precision::F32;
        let mut fitted = fit_for_scoring(&train_part, &cfg, f32, None).unwrap();
        let mut moved = moved_to(&fitted, tch::Device::Cpu).unwrap();
        assert_eq!(moved.meta, fitted.meta);
        let (want, _) = score_file(&mut fitted, &data, &cfg).unwrap();
        let (got, _) = score_file(&mut moved, &data, &cfg).unwrap();
        assert!(want.len() > 30 && want.iter().any(|d| d.open), "{want:?}");
        assert_eq!(got, want);
    }

    fn read(dir: &Path) -> serde_json::Value {
        serde_json::from_slice(&std::fs::read(dir.join("out/report.json")).unwrap()).unwrap()
    }

    #[test]
    fn evaluate_on_a_generated_labelled_file_gives_the_expected_report() {
        let dir = tempfile::tempdir().unwrap();
        let faulty = dir.path().join("faulty.csv");
        let normal = dir.path().join("normal.csv");
        write_csv(&faulty, true);
        write_csv(&normal, false);

        // --train-rows: one model per file on its first 200 rows.
        run(args(
            dir.path(),
            vec![faulty.clone(), normal.clone()],
            vec![],
            Some(200),
            "fixed",
        ))
        .unwrap();
        let r = read(dir.path());
        // Faulty file: the 100 labelled rows (300..=399) are all caught from
        // the first anomalous batch (rows 300..=304, open_after 1) and the
        // 100 normal scored rows are quiet.
        let f = &r["files"][0];
        assert_eq!(
            (f["rows"].as_u64(), f["train_rows"].as_u64()),
            (Some(400), Some(200))
        );
        assert_eq!(f["counts"]["point"]["tp"], 100, "{f}");
        assert_eq!(f["counts"]["point"]["fp"], 0, "{f}");
        assert_eq!(f["counts"]["point"]["fn_"], 0, "{f}");
        assert_eq!(f["counts"]["point"]["tn"], 100, "{f}");
        for k in [
            "precision",
            "recall",
            "f1",
            "pa_f1",
            "event_precision",
            "event_recall",
            "event_f1",
        ] {
            assert_eq!(f[k], 1.0, "{k}: {f}");
        }
        assert_eq!(
            (f["far"].as_f64(), f["mar"].as_f64()),
            (Some(0.0), Some(0.0))
        );
        assert_eq!(f["mean_detection_delay"], 0.0);
        // NAB: default width 0.1 x 199 s / 1 window = 19.9 s, centered on
        // the segment 100..=199 (scored part): window from t >= 90.05 (row
        // 91) to the end (199), 109 points; detection at 100:
        // y = -(199 - 100 + 1) / 109.
        let want = 100.0 * (scaled_sigmoid(-100.0 / 109.0) / scaled_sigmoid(-1.0) + 1.0) / 2.0;
        assert!(
            (f["nab_standard"].as_f64().unwrap() - want).abs() < 1e-9,
            "{f}"
        );
        // NAB normalised against null (-1) and perfect (+1); low-FN: null -2.
        let want_fn = 100.0 * (scaled_sigmoid(-100.0 / 109.0) / scaled_sigmoid(-1.0) + 2.0) / 3.0;
        assert!(
            (f["nab_low_fn"].as_f64().unwrap() - want_fn).abs() < 1e-9,
            "{f}"
        );

        // Normal file: nothing labelled, nothing detected.
        let n = &r["files"][1];
        assert_eq!(n["counts"]["point"]["fp"], 0, "{n}");
        assert_eq!(n["far"], 0.0);
        assert!(n["recall"].is_null() && n["nab_standard"].is_null());

        // Pooled: counts summed; NAB only has the faulty file's window.
        assert_eq!(
            (r["points"].as_u64(), r["files"].as_array().unwrap().len()),
            (Some(400), 2)
        );
        assert_eq!(r["f1"], 1.0);
        assert_eq!(r["far"], 0.0);
        assert_eq!(r["event_f1"], 1.0);
        assert!((r["nab_standard"].as_f64().unwrap() - want).abs() < 1e-9);
        assert_eq!(r["mode"], "train_rows");
        assert_eq!(r["time_unit"], "seconds");

        // --train: one model on the normal file, every --data row scored
        // (the first 20 are warm-up and cannot be flagged).
        run(args(
            dir.path(),
            vec![faulty.clone()],
            vec![normal.clone()],
            None,
            "fixed",
        ))
        .unwrap();
        let r = read(dir.path());
        assert_eq!(r["mode"], "train");
        assert_eq!(r["points"], 400);
        assert_eq!(r["counts"]["point"]["tp"], 100, "{r}");
        assert_eq!(r["counts"]["point"]["fp"], 0, "{r}");
        assert_eq!(r["event_f1"], 1.0);
    }

    /// A channel constant in the training rows (a command flag) that
    /// switches for 30 normal rows of the scored part raises nothing by
    /// itself, whatever the threshold; the step on `a` is still caught
    /// whole. Before the scaler read such channels as their constant, the
    /// switch alarmed with the Gaussian and dynamic thresholds (an error of
    /// 1 against the smooth channels' hundredths).
    #[test]
    fn a_channel_constant_in_training_does_not_alarm_when_it_moves() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("cmd.csv");
        write_csv_with_command(&path, true, Some(240..270));
        for kind in ["fixed", "gaussian", "dynamic"] {
            run(args(
                dir.path(),
                vec![path.clone()],
                vec![],
                Some(200),
                kind,
            ))
            .unwrap();
            let f = &read(dir.path())["files"][0];
            assert_eq!(f["counts"]["point"]["fp"], 0, "{kind}: {f}");
            assert_eq!(f["counts"]["events"]["tp"], 1, "{kind}: {f}");
            assert_eq!(f["mean_detection_delay"], 0.0, "{kind}: {f}");
        }
    }

    /// The classifier heads need labelled faults: evaluate (and train,
    /// through the same `fit`) send them to `forewarn classify`.
    #[test]
    fn classifier_heads_are_refused_with_a_pointer_to_classify() {
        let dir = tempfile::tempdir().unwrap();
        let faulty = dir.path().join("faulty.csv");
        write_csv(&faulty, true);
        let a = args(dir.path(), vec![faulty], vec![], Some(200), "fixed");
        let config = a.config.clone().unwrap();
        let text = std::fs::read_to_string(&config).unwrap();
        std::fs::write(
            &config,
            text.replace("[model]\n", "[model]\nhead = \"softmax\"\n"),
        )
        .unwrap();
        let e = format!("{:#}", run(a).unwrap_err());
        assert!(e.contains("forewarn classify"), "{e}");
    }

    /// `--decisions`: a line per row, agreeing with the report's counts.
    #[test]
    fn decisions_are_written_a_row_each_as_counted() {
        let dir = tempfile::tempdir().unwrap();
        let faulty = dir.path().join("faulty.csv");
        write_csv(&faulty, true);
        let mut a = args(dir.path(), vec![faulty], vec![], Some(200), "fixed");
        a.decisions = Some(dir.path().join("decisions"));
        run(a).unwrap();
        // Named as the plots are: after the file and its folder.
        let csv = std::fs::read_dir(dir.path().join("decisions"))
            .unwrap()
            .map(|e| e.unwrap().path())
            .find(|p| p.to_string_lossy().ends_with("_faulty.csv"))
            .unwrap();
        let text = std::fs::read_to_string(csv).unwrap();
        let lines: Vec<Vec<&str>> = text.lines().map(|l| l.split(',').collect()).collect();
        assert_eq!(
            lines[0],
            [
                "row",
                "time_ms",
                "label",
                "train",
                "score",
                "threshold",
                "flagged"
            ]
        );
        let rows = &lines[1..];
        assert_eq!(rows.len(), 400);
        // Training rows: marked, never flagged; replayed, so scored after
        // the 20-row warm-up.
        assert!(rows[..200].iter().all(|r| r[3] == "1" && r[6] == "0"));
        assert!(rows[..20].iter().all(|r| r[4].is_empty()));
        assert!(rows[20..200].iter().all(|r| !r[4].is_empty()));
        assert_eq!(rows[0][1], "1767225600000");
        // Scored rows: every one in a scored batch; the flags are the
        // report's 100 true positives, rows 300-399, whose batches score
        // over their threshold.
        for r in &rows[200..] {
            assert_eq!(r[3], "0");
            let (score, threshold): (f64, f64) = (r[4].parse().unwrap(), r[5].parse().unwrap());
            assert_eq!(r[6] == "1", r[2] == "1", "{r:?}");
            if r[6] == "1" {
                assert!(score > threshold, "{r:?}");
            }
        }
        let flagged = rows.iter().filter(|r| r[6] == "1").count();
        assert_eq!(flagged, 100);
        assert_eq!(read(dir.path())["counts"]["point"]["tp"], 100);
    }

    #[test]
    fn train_rows_is_a_count_or_a_share_of_each_file() {
        assert_eq!(parse_train_rows("400"), Ok(TrainRows::Rows(400)));
        assert_eq!(parse_train_rows(" 15% "), Ok(TrainRows::Percent(15.0)));
        for bad in ["0%", "100%", "-5%", "x%", "1.5", "-3", ""] {
            assert!(parse_train_rows(bad).is_err(), "{bad}");
        }
        // A share rounds down; nothing to train on or to score is an error.
        assert_eq!(TrainRows::Percent(15.0).resolve(1001), Ok(150));
        assert_eq!(TrainRows::Rows(400).resolve(1200), Ok(400));
        let e = TrainRows::Percent(0.1).resolve(500).unwrap_err();
        assert!(e.contains("no row of 500"), "{e}");
        let e = TrainRows::Rows(500).resolve(500).unwrap_err();
        assert!(e.contains("leaves no rows to score (500 rows)"), "{e}");

        // Through evaluate: 50% of the 400-row file is the 200 rows of the
        // report test, with the same result.
        let dir = tempfile::tempdir().unwrap();
        let faulty = dir.path().join("faulty.csv");
        write_csv(&faulty, true);
        let mut a = args(dir.path(), vec![faulty], vec![], None, "fixed");
        a.train_rows = Some(TrainRows::Percent(50.0));
        run(a).unwrap();
        let f = &read(dir.path())["files"][0];
        assert_eq!(f["train_rows"], 200, "{f}");
        assert_eq!(f["counts"]["point"]["tp"], 100, "{f}");
        assert_eq!(f["counts"]["point"]["fp"], 0, "{f}");
    }

    #[test]
    fn gaussian_and_dynamic_thresholds_and_plots_run_end_to_end() {
        let dir = tempfile::tempdir().unwrap();
        let faulty = dir.path().join("faulty.csv");
        write_csv(&faulty, true);
        for kind in ["gaussian", "dynamic"] {
            let mut a = args(dir.path(), vec![faulty.clone()], vec![], Some(200), kind);
            a.plot = Some(dir.path().join("plots"));
            run(a).unwrap();
            let r = read(dir.path());
            assert_eq!(r["config"]["threshold"]["kind"], kind);
            // The 50-unit step is caught, and from its first batch.
            assert_eq!(r["counts"]["events"]["tp"], 1, "{kind}: {r}");
            assert_eq!(r["mean_detection_delay"], 0.0, "{kind}: {r}");
            // Named after the file and its folder.
            let png = std::fs::read_dir(dir.path().join("plots"))
                .unwrap()
                .map(|e| e.unwrap().path())
                .find(|p| p.to_string_lossy().ends_with("_faulty.png"))
                .unwrap();
            let png = std::fs::read(png).unwrap();
            assert_eq!(&png[..4], b"\x89PNG");
        }
    }

    #[test]
    fn changepoint_column_anchors_nab_windows_and_row_index_is_the_time() {
        let dir = tempfile::tempdir().unwrap();
        // No time column: times are row indices, widths and delays in rows.
        let path = dir.path().join("cp.csv");
        let mut s = String::from("a;b;label;cp\n");
        for i in 0..400 {
            let noise = ((i * 7919) % 13) as f64 / 130.0;
            let anomalous = i >= 300;
            let a = (i as f64 * 0.2).sin() + noise + if anomalous { 50.0 } else { 0.0 };
            let b = (i as f64 * 0.2).cos() * 2.0 - noise;
            s.push_str(&format!(
                "{a:.4};{b:.4};{};{}\n",
                u8::from(anomalous),
                u8::from(i == 300)
            ));
        }
        std::fs::write(&path, s).unwrap();
        let mut a = args(dir.path(), vec![path], vec![], Some(200), "fixed");
        a.time_column = None;
        a.ignore_columns = vec![];
        a.changepoint_column = Some("cp".into());
        a.nab_window = Some("20".into());
        a.nab_window_position = PositionArg::Right;
        run(a).unwrap();
        let r = read(dir.path());
        assert_eq!(r["time_unit"], "rows");
        assert_eq!(r["nab_window"], 20.0);
        assert_eq!(r["nab_window_position"], "right");
        // The changepoint column is not a channel.
        assert_eq!(r["files"][0]["channels"], 2);
        assert_eq!(r["counts"]["point"]["tp"], 100, "{r}");
        // One window from the changepoint (scored row 100) to 20 rows after
        // it: rows 100..=120, 21 rows; the alert opens at 100: y = -21/21.
        assert_eq!(r["counts"]["nab_windows"], 1);
        assert!(
            (r["nab_standard"].as_f64().unwrap() - 100.0).abs() < 1e-9,
            "{r}"
        );
        assert_eq!(r["mean_detection_delay"], 0.0);
    }

    #[test]
    fn per_variable_and_autoencoder_models_run_through_the_engine() {
        let dir = tempfile::tempdir().unwrap();
        let faulty = dir.path().join("faulty.csv");
        write_csv(&faulty, true);
        for kind in ["per_variable", "autoencoder"] {
            let a = args(dir.path(), vec![faulty.clone()], vec![], Some(200), "fixed");
            std::fs::write(
                a.config.as_ref().unwrap(),
                format!(
                    "[model]\nkind = \"{kind}\"\nencoder_hidden = 2\nhidden = 8\nlayers = 1\n\
                     horizon = 5\nwindow = 20\nepochs = 3\nthreads = 1\nvalidation_fraction = 0.3\n\
                     [threshold]\nkind = \"fixed\"\nmargin = 3.0\n[detector]\nopen_after = 1\n"
                ),
            )
            .unwrap();
            run(a).unwrap();
            let r = read(dir.path());
            assert_eq!(r["config"]["model"]["kind"], kind);
            assert_eq!(r["counts"]["events"]["tp"], 1, "{kind}: {r}");
            assert_eq!(r["counts"]["point"]["tp"], 100, "{kind}: {r}");
            assert_eq!(r["mean_detection_delay"], 0.0, "{kind}");
        }
    }

    /// `--precision bf16` scores with the f32-trained, f32-calibrated
    /// model in bf16: same detections on a clear fault, recorded in the
    /// report; a model kind without bf16 is refused.
    #[test]
    fn bf16_scoring_detects_the_same_and_is_recorded() {
        if forewarn_model::precision::CpuBf16::detect()
            .check()
            .is_err()
        {
            eprintln!("skipped: this CPU has no native bf16");
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let faulty = dir.path().join("faulty.csv");
        let normal = dir.path().join("normal.csv");
        write_csv(&faulty, true);
        write_csv(&normal, false);
        let mut reports = vec![];
        for precision in [
            forewarn_model::Precision::F32,
            forewarn_model::Precision::Bf16,
        ] {
            let mut a = args(
                dir.path(),
                vec![faulty.clone(), normal.clone()],
                vec![normal.clone()],
                None,
                "fixed",
            );
            a.precision = precision;
            run(a).unwrap();
            let r = read(dir.path());
            assert_eq!(r["inference_precision"], precision.to_string());
            reports.push(r);
        }
        assert_eq!(reports[0]["counts"], reports[1]["counts"]);
        assert_eq!(reports[1]["counts"]["point"]["tp"], 100, "{}", reports[1]);

        let mut a = args(dir.path(), vec![faulty], vec![normal], None, "fixed");
        std::fs::write(
            dir.path().join("model.toml"),
            "[model]\nkind = \"autoencoder\"\nhidden = 4\nhorizon = 5\nwindow = 20\nepochs = 1\nthreads = 1\n",
        )
        .unwrap();
        a.precision = forewarn_model::Precision::Bf16;
        let e = format!("{:#}", run(a).unwrap_err());
        assert!(e.contains("forecaster only"), "{e}");
    }

    #[test]
    fn short_training_parts_shrink_the_window() {
        let cfg = EvalConfig::default();
        let tc = train_config(&cfg).unwrap();
        // Defaults: window 50, horizon 5, validation 30 %.
        assert_eq!(fitting_window(400, &tc), None);
        // 100 rows: 30 validation rows -> window 30 - 10 = 20.
        assert_eq!(fitting_window(100, &tc), Some(20));
        // Tiny: never below one batch.
        assert_eq!(fitting_window(20, &tc), Some(5));
    }
}
