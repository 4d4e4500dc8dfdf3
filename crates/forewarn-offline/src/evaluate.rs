//! An evaluation run (`forewarn evaluate`): fit a model ([`crate::fit`]),
//! per file on its first rows or once on normal files, replay every test
//! file through the service's streaming detector ([`crate::replay`]), and
//! score the alerts against the labels.
//!
//! Metrics and their formulas: `forewarn_eval` and docs/EVALUATION.md.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use forewarn_data::{CsvOptions, Dataset, expand, read_any, read_joined};
use forewarn_eval::{Counts, FileInput, Localisation, Metrics, Pointed, WindowPosition};
use forewarn_model::{Model, Precision};
use serde::Serialize;

use crate::config::{ModelConfig, ThresholdKind};
use crate::error::{Context, OfflineError};
use crate::files::{create_parent, read_labelled};
use crate::fit::{Progress, fit};
use crate::plot::plot_file;
use crate::replay::{Decision, decisions_timed, point_predictions, strictly_increasing};

/// What an evaluation trains on.
#[derive(Debug, Clone, PartialEq)]
pub enum TrainOn {
    /// Per file: its first rows, then score the rest (one model per file).
    Rows(TrainRows),
    /// One model on these normal files; every test file scored whole.
    Files(Vec<PathBuf>),
    /// Per file: a model trained on the file of the same name in this
    /// folder (its labels unused), the test file scored whole (telemanom's
    /// one model per channel, train/ and test/ paired by name).
    Paired(PathBuf),
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
    pub fn resolve(self, total: usize) -> Result<usize, String> {
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

impl FromStr for TrainRows {
    type Err = String;
    /// A number of rows (`400`) or a share of each file (`15%`).
    fn from_str(s: &str) -> Result<Self, String> {
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
}

/// Everything an evaluation run needs.
#[derive(Debug, Clone)]
pub struct Evaluation {
    /// Labelled test files and folders of them.
    pub data: Vec<PathBuf>,
    /// How the files are read (the label column included).
    pub csv: CsvOptions,
    /// Column marking changepoints (non-zero), anchoring the NAB windows;
    /// not a channel.
    pub changepoint_column: Option<String>,
    /// Row and column of the grid cell a fault acts on at each row (-1:
    /// none), not channels: the report then measures localisation (the
    /// model needs a grid).
    pub fault_cell_columns: Option<[String; 2]>,
    pub train: TrainOn,
    pub config: ModelConfig,
    /// NAB window width in report units; `None`: NAB's default.
    pub nab_window: Option<f64>,
    pub nab_position: WindowPosition,
    /// Folder for one PNG per file.
    pub plot: Option<PathBuf>,
    /// Folder for one CSV of per-row decisions per file.
    pub decisions: Option<PathBuf>,
    /// Inference precision of the scoring replay (training and
    /// calibration are f32).
    pub precision: Precision,
    /// Device of the scoring replay when it differs from `[model] device`:
    /// the model is trained and calibrated there, then moved through its
    /// artifact as `serve` loads one (benches/gpu.sh scores a CPU-trained
    /// network on CUDA, so its decisions compare with a CPU run's).
    pub score_device: Option<String>,
    /// Files fitted and scored at once when each has its own model (0: one
    /// per core). The report does not depend on it.
    pub jobs: usize,
}

/// What an evaluation reports while it runs (the command line prints it).
#[derive(Debug, Clone, Copy)]
pub enum EvalProgress<'a> {
    /// One model is trained on the joined training files.
    TrainingShared {
        rows: usize,
        channels: usize,
        files: usize,
    },
    /// A model is trained on the first `rows` rows of `file`.
    TrainingOn { file: &'a Path, rows: usize },
    /// The training part of `source` is too short for the window.
    Window {
        source: &'a str,
        rows: usize,
        window: usize,
        using: usize,
    },
    /// Fitting.
    Fit(Progress<'a>),
    /// A model is fitted; its strategy and the threshold it compares with.
    Fitted { strategy: &'a str, threshold: f64 },
    /// A file is scored.
    Scored {
        file: &'a Path,
        metrics: &'a Metrics,
    },
}

/// A test file as loaded.
struct Loaded {
    data: Dataset,
    labels: Vec<bool>,
    changepoints: Option<Vec<bool>>,
    fault_cells: Option<FaultCells>,
}

/// Per row, the `(row, col)` of the fault acting then.
type FaultCells = Vec<Option<(usize, usize)>>;

/// `ROW,COL` as `--fault-cell-columns` takes it.
pub fn parse_cell_columns(s: &str) -> Result<[String; 2], String> {
    match s.split(',').map(str::trim).collect::<Vec<_>>()[..] {
        [r, c] if !r.is_empty() && !c.is_empty() => Ok([r.into(), c.into()]),
        _ => Err(format!("expected ROW,COL (two column names), got {s:?}")),
    }
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
    /// With `--fault-cell-columns`: alerts opened on a located fault and
    /// how many name a cell within one of it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub localisation: Option<Localisation>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub forewarn_version: String,
    /// `train_rows`, `train` or `train_dir`.
    pub mode: String,
    /// Unit of `mean_detection_delay` and NAB windows: `seconds` or `rows`.
    pub time_unit: String,
    pub nab_window: Option<f64>,
    pub nab_window_position: WindowPosition,
    /// Inference precision of the scoring replay (`--precision`; not
    /// `precision`, which is the metric).
    pub inference_precision: Precision,
    /// `--score-device`, when given (else the scoring ran on `[model] device`).
    pub score_device: Option<String>,
    pub config: ModelConfig,
    /// Pooled over all files.
    #[serde(flatten)]
    pub metrics: Metrics,
    pub counts: Counts,
    /// Pooled over all files (with `--fault-cell-columns`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub localisation: Option<Localisation>,
    pub files: Vec<FileReport>,
}

/// Runs `e`: fits, replays every file, writes its plots and decisions,
/// and returns the report. With one model per file (`Rows`, `Paired`),
/// `e.jobs` files are fitted and scored at once; the report is the same
/// for any number of jobs (files in the given order, each fit seeded alike).
pub fn evaluate(
    e: &Evaluation,
    progress: &mut (dyn FnMut(EvalProgress<'_>) + Send),
) -> Result<Report, OfflineError> {
    let cfg = &e.config;
    let files = expand(&e.data)?;
    if files.is_empty() {
        return Err(OfflineError::Config(format!(
            "no data files found in {:?}",
            e.data
        )));
    }
    let opts = CsvOptions {
        ignore_columns: (e.csv.ignore_columns.iter().cloned())
            .chain(e.changepoint_column.clone())
            .chain(e.fault_cell_columns.iter().flatten().cloned())
            .collect(),
        ..e.csv.clone()
    };
    let score_device = (e.score_device.as_deref())
        .map(forewarn_model::parse_device)
        .transpose()?;
    let scored: Vec<Scored> = match &e.train {
        TrainOn::Files(paths) => {
            let train_files = expand(paths)?;
            let data = load_training(&train_files, &opts)?;
            progress(EvalProgress::TrainingShared {
                rows: data.len(),
                channels: data.n_channels(),
                files: train_files.len(),
            });
            let mut shared = fit_for_scoring(&data, cfg, e.precision, score_device, progress)?;
            (files.iter())
                .map(|path| {
                    let loaded = load_test(path, &opts, e)?;
                    score_file(e, path, loaded, &mut shared, 0, progress)
                })
                .collect::<Result<_, _>>()?
        }
        TrainOn::Rows(_) | TrainOn::Paired(_) => {
            let progress = std::sync::Mutex::new(progress);
            let run = |path: &PathBuf| {
                let mut report = |p: EvalProgress<'_>| {
                    (progress
                        .lock()
                        .unwrap_or_else(std::sync::PoisonError::into_inner))(p)
                };
                fit_and_score_file(e, &opts, path, score_device, &mut report)
            };
            in_parallel(&files, e.jobs, run)?
        }
    };

    let mut reports = Vec::new();
    let mut pooled = Counts::default();
    let mut localisation: Option<Localisation> = None;
    let mut time_unit = None;
    for s in scored {
        match time_unit {
            None => time_unit = Some(s.unit),
            Some(u) if u != s.unit => {
                return Err(OfflineError::Config(
                    "some files have a time column and others not: cannot pool delays".into(),
                ));
            }
            _ => {}
        }
        pooled.add(&s.report.counts);
        if let Some(l) = &s.report.localisation {
            localisation.get_or_insert_default().add(l);
        }
        reports.push(s.report);
    }
    Ok(Report {
        forewarn_version: env!("CARGO_PKG_VERSION").into(),
        mode: match e.train {
            TrainOn::Rows(_) => "train_rows",
            TrainOn::Files(_) => "train",
            TrainOn::Paired(_) => "train_dir",
        }
        .into(),
        time_unit: time_unit.unwrap_or("rows").into(),
        nab_window: e.nab_window,
        nab_window_position: e.nab_position,
        inference_precision: e.precision,
        score_device: e.score_device.clone(),
        config: cfg.clone(),
        metrics: pooled.metrics(),
        counts: pooled,
        localisation,
        files: reports,
    })
}

/// `run` over `items` on up to `jobs` worker threads (0: one per core),
/// each with one libtorch thread whatever `jobs` is, so results do not
/// depend on it; the results in `items`' order, or the first error in that
/// order. Once one fails, items not yet started are skipped.
fn in_parallel<T: Sync, R: Send>(
    items: &[T],
    jobs: usize,
    run: impl Fn(&T) -> Result<R, OfflineError> + Sync,
) -> Result<Vec<R>, OfflineError> {
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
    let jobs = match jobs {
        0 => std::thread::available_parallelism().map_or(1, usize::from),
        n => n,
    }
    .min(items.len())
    .max(1);
    let next = AtomicUsize::new(0);
    let failed = AtomicBool::new(false);
    let slots: Vec<std::sync::Mutex<Option<Result<R, OfflineError>>>> =
        items.iter().map(|_| std::sync::Mutex::new(None)).collect();
    std::thread::scope(|scope| {
        for _ in 0..jobs {
            scope.spawn(|| {
                // Workers side by side: one libtorch thread each (OpenMP
                // counts per calling thread) instead of one per core each.
                tch::set_num_threads(1);
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= items.len() || failed.load(Ordering::Relaxed) {
                        break;
                    }
                    let r = run(&items[i]);
                    if r.is_err() {
                        failed.store(true, Ordering::Relaxed);
                    }
                    *slots[i]
                        .lock()
                        .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(r);
                }
            });
        }
    });
    // A slot is empty only when an item was skipped after a failure.
    let mut out = Vec::with_capacity(items.len());
    let mut first_error = None;
    for slot in slots {
        match slot
            .into_inner()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
        {
            Some(Ok(r)) => out.push(r),
            Some(Err(e)) => {
                first_error.get_or_insert(e);
            }
            None => {}
        }
    }
    if let Some(e) = first_error {
        return Err(e);
    }
    Ok(out)
}

/// One file's report and the unit of its times.
struct Scored {
    report: FileReport,
    unit: &'static str,
}

/// Fits the file's own model (its first rows, or its namesake in the
/// training folder) and scores the file with it.
fn fit_and_score_file(
    e: &Evaluation,
    opts: &CsvOptions,
    path: &Path,
    score_device: Option<tch::Device>,
    progress: &mut dyn FnMut(EvalProgress<'_>),
) -> Result<Scored, OfflineError> {
    let loaded = load_test(path, opts, e)?;
    let (train_part, skip) = match &e.train {
        TrainOn::Rows(rows) => {
            let n = (rows.resolve(loaded.data.len()))
                .map_err(|why| OfflineError::Config(format!("{}: {why}", path.display())))?;
            let mut part = loaded.data.slice(0..n);
            part.labels = None;
            progress(EvalProgress::TrainingOn {
                file: path,
                rows: n,
            });
            (part, n)
        }
        TrainOn::Paired(dir) => {
            let train_path = dir.join(path.file_name().unwrap_or_default());
            let part = load_training(std::slice::from_ref(&train_path), opts)
                .context(|| format!("the training file paired with {}", path.display()))?;
            progress(EvalProgress::TrainingOn {
                file: &train_path,
                rows: part.len(),
            });
            (part, 0)
        }
        TrainOn::Files(_) => unreachable!("a shared model scores files in `evaluate`"),
    };
    let mut fitted = fit_for_scoring(&train_part, &e.config, e.precision, score_device, progress)?;
    score_file(e, path, loaded, &mut fitted, skip, progress)
}

/// Replays `loaded` (the file at `path`) through `fitted`'s streaming
/// detector, scores its rows after the first `skip` against the labels,
/// and writes the file's decisions and plot when asked.
fn score_file(
    e: &Evaluation,
    path: &Path,
    loaded: Loaded,
    fitted: &mut Model,
    skip: usize,
    progress: &mut dyn FnMut(EvalProgress<'_>),
) -> Result<Scored, OfflineError> {
    let cfg = &e.config;
    let data = (loaded.data.select_channels(&fitted.meta.channels))
        .context(|| format!("{} does not have the model's channels", path.display()))?;
    let engine = fitted.engine_config(cfg.detector.detector(), 1);
    // Rows carry their own times where they have increasing ones (the
    // seasonal rule reads them), as readings do in `serve`.
    let times = (data.timestamps.as_deref()).filter(|t| strictly_increasing(t));
    let decisions = decisions_timed(&mut fitted.network, engine, &data.rows, times)?;
    let pred = point_predictions(&decisions, data.len(), cfg.detector.min_event_length);
    let n = data.len();
    let truth = &loaded.labels[skip..];
    let pred_scored = &pred[skip..];
    let unit = if data.timestamps.is_some() {
        "seconds"
    } else {
        "rows"
    };
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
        nab_width: e.nab_window,
        nab_position: e.nab_position,
    });
    let localisation = match &loaded.fault_cells {
        Some(cells) => Some(localise(fitted, &decisions, cells, skip)?),
        None => None,
    };
    let metrics = counts.metrics();
    progress(EvalProgress::Scored {
        file: path,
        metrics: &metrics,
    });
    if let Some(dir) = &e.decisions {
        let out = dir.join(format!("{}.csv", file_name(path)));
        write_decisions(&out, &data, &loaded.labels, &pred, &decisions, skip)?;
    }
    if let Some(dir) = &e.plot {
        let out = dir.join(format!("{}.png", file_name(path)));
        plot_file(&out, &data, &loaded.labels, &pred, &decisions, skip)
            .context(|| format!("plotting {}", out.display()))?;
    }
    Ok(Scored {
        report: FileReport {
            file: path.display().to_string(),
            rows: n,
            channels: data.n_channels(),
            train_rows: skip,
            model_version: fitted.meta.version.clone(),
            threshold_kind: cfg.threshold.kind,
            threshold: fitted.meta.strategy().nominal_threshold(),
            metrics,
            counts,
            localisation,
        },
        unit,
    })
}

/// The localisation of the alerts opened after the first `skip` rows.
fn localise(
    fitted: &Model,
    decisions: &[Decision],
    fault_cells: &[Option<(usize, usize)>],
    skip: usize,
) -> Result<Localisation, OfflineError> {
    if fitted.meta.grid_layout().is_none() {
        return Err(OfflineError::Config(
            "--fault-cell-columns needs a model whose alerts name grid cells: set [model] grid"
                .into(),
        ));
    }
    let pointed: Vec<Pointed> = (decisions.iter())
        .filter(|d| d.start >= skip)
        .filter_map(|d| {
            d.opened_cell.map(|cell| Pointed {
                start: d.start,
                end: d.end,
                cell,
            })
        })
        .collect();
    Ok(Localisation::of(&pointed, fault_cells))
}

/// Fits on `data` as `forewarn train` does ([`fit`]), with the window
/// shrunk for short training parts, then moves it to `score_device` (when
/// given and not the training device) and switches the network to
/// `precision` for scoring (bf16 is refused for a kind other than the
/// forecaster).
fn fit_for_scoring(
    data: &Dataset,
    cfg: &ModelConfig,
    precision: Precision,
    score_device: Option<tch::Device>,
    progress: &mut dyn FnMut(EvalProgress<'_>),
) -> Result<Model, OfflineError> {
    let mut cfg = cfg.clone();
    let m = &mut cfg.model;
    if let Some(w) = fitting_window(data.len(), m.validation_fraction, m.window, m.horizon) {
        progress(EvalProgress::Window {
            source: &data.source,
            rows: data.len(),
            window: m.window,
            using: w,
        });
        m.window = w;
    }
    let mut model = fit(data, &cfg, &mut |p| progress(EvalProgress::Fit(p)))?;
    let strategy = model.meta.strategy();
    progress(EvalProgress::Fitted {
        strategy: strategy.kind(),
        threshold: strategy.nominal_threshold(),
    });
    let trained_on = forewarn_model::parse_device(&cfg.model.device)?;
    if let Some(device) = score_device.filter(|d| *d != trained_on) {
        model = moved_to(&model, device)?;
    }
    model.network.set_precision(precision)?;
    Ok(model)
}

/// `model` on `device`, through the artifact `serve` would load: saved to a
/// scratch folder and loaded from it (weights, scaler and threshold
/// strategy travel exactly as to a serving machine).
fn moved_to(model: &Model, device: tch::Device) -> Result<Model, OfflineError> {
    use std::sync::atomic::{AtomicU64, Ordering};
    static SCRATCH: AtomicU64 = AtomicU64::new(0);
    let n = SCRATCH.fetch_add(1, Ordering::Relaxed);
    let dir = std::env::temp_dir().join(format!("forewarn-evaluate-{}-{n}", std::process::id()));
    let moved = forewarn_model::save_model(model, &dir)
        .and_then(|()| forewarn_model::load(&dir, device))
        .context(|| format!("moving the model to {device:?}"));
    let _ = std::fs::remove_dir_all(&dir);
    moved
}

/// A smaller window (warm-up) when the validation tail of `rows` rows is
/// too short for the configured one plus two batches, as happens with short
/// per-file training parts; `None` when the configured window fits.
fn fitting_window(
    rows: usize,
    validation_fraction: f64,
    window: usize,
    horizon: usize,
) -> Option<usize> {
    let n_val = (rows as f64 * validation_fraction).round() as usize;
    if n_val >= window + 2 * horizon {
        return None;
    }
    Some(n_val.saturating_sub(2 * horizon).max(horizon))
}

/// Every training file joined into one series (same channels required);
/// their labels are not used.
fn load_training(paths: &[PathBuf], opts: &CsvOptions) -> Result<Dataset, OfflineError> {
    let opts = CsvOptions {
        label_column: None,
        ignore_columns: (opts.ignore_columns.iter().cloned())
            .chain(opts.label_column.clone())
            .collect(),
        ..opts.clone()
    };
    if paths.is_empty() {
        return Err(OfflineError::Config("no training files given".into()));
    }
    let mut d = read_joined(paths, &opts)?;
    d.labels = None;
    Ok(d)
}

fn load_test(path: &Path, opts: &CsvOptions, e: &Evaluation) -> Result<Loaded, OfflineError> {
    let (cp_column, time_column) = (
        e.changepoint_column.as_deref(),
        e.csv.time_column.as_deref(),
    );
    // The fault-cell columns are read in the same pass, then split off.
    let (data, fault_cells) = match &e.fault_cell_columns {
        None => (read_labelled(path, opts)?, None),
        Some(columns) => {
            let with_cells = CsvOptions {
                ignore_columns: (opts.ignore_columns.iter())
                    .filter(|c| !columns.contains(c))
                    .cloned()
                    .collect(),
                ..opts.clone()
            };
            let (data, cells) = split_fault_cells(read_labelled(path, &with_cells)?, columns)?;
            (data, Some(cells))
        }
    };
    let labels: Vec<bool> = (data.labels.iter().flatten()).map(|v| *v != 0).collect();
    let changepoints = match cp_column {
        Some(col) if !is_dat(path) => {
            let cp_opts = CsvOptions {
                label_column: Some(col.to_owned()),
                time_column: time_column.map(str::to_owned),
                ignore_columns: (opts.ignore_columns.iter())
                    .filter(|c| *c != col)
                    .cloned()
                    .chain(opts.label_column.clone())
                    .collect(),
                ..opts.clone()
            };
            let d = read_any(path, &cp_opts)
                .context(|| format!("reading changepoints of {}", path.display()))?;
            Some(
                (d.labels.unwrap_or_default().iter())
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
        fault_cells,
    })
}

/// `data` without the fault-cell `columns` (row, col), and the fault cell
/// of every row; a negative row or column is no fault.
fn split_fault_cells(
    data: Dataset,
    columns: &[String; 2],
) -> Result<(Dataset, FaultCells), OfflineError> {
    let [r, c] = columns
        .clone()
        .map(|name| data.channels.iter().position(|n| *n == name).ok_or(name));
    let (r, c) = match (r, c) {
        (Ok(r), Ok(c)) => (r, c),
        (Err(name), _) | (_, Err(name)) => {
            return Err(OfflineError::Config(format!(
                "{}: no column {name:?} (--fault-cell-columns)",
                data.source
            )));
        }
    };
    let cells = (data.rows.chunks_exact(data.n_channels()))
        .map(|row| (row[r] >= 0.0 && row[c] >= 0.0).then(|| (row[r] as usize, row[c] as usize)))
        .collect();
    let channels: Vec<String> = (data.channels.iter())
        .filter(|n| !columns.contains(n))
        .cloned()
        .collect();
    Ok((data.select_channels(&channels)?, cells))
}

fn is_dat(path: &Path) -> bool {
    path.extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("dat"))
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

/// The name of a file's plot or decisions, without extension: the file
/// and its folder, in characters safe anywhere (`<folder>_<stem>`).
fn file_name(path: &Path) -> String {
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
        safe(stem)
    } else {
        format!("{}_{}", safe(parent), safe(stem))
    }
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
) -> Result<(), OfflineError> {
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
    std::fs::write(path, out).map_err(|e| OfflineError::io(path, e))
}

#[cfg(test)]
mod tests {
    use super::*;
    use forewarn_data::Separator;
    use forewarn_eval::nab::scaled_sigmoid;
    use std::ops::Range;

    /// `forewarn evaluate`'s arguments, as the tests vary them.
    struct Args {
        data: Vec<PathBuf>,
        time_column: Option<String>,
        changepoint_column: Option<String>,
        ignore_columns: Vec<String>,
        train_rows: Option<TrainRows>,
        train: Vec<PathBuf>,
        config: Option<PathBuf>,
        nab_window: Option<String>,
        nab_window_position: WindowPosition,
        report: PathBuf,
        plot: Option<PathBuf>,
        decisions: Option<PathBuf>,
        precision: Precision,
        jobs: usize,
    }

    /// Evaluates as `forewarn evaluate` does and writes the report.
    fn run(a: Args) -> Result<(), OfflineError> {
        let e = Evaluation {
            data: a.data,
            csv: CsvOptions {
                separator: Separator::Char(b';'),
                time_column: a.time_column,
                label_column: Some("label".into()),
                ignore_columns: a.ignore_columns,
                ..CsvOptions::default()
            },
            changepoint_column: a.changepoint_column,
            fault_cell_columns: None,
            train: match a.train_rows {
                Some(rows) => TrainOn::Rows(rows),
                None => TrainOn::Files(a.train),
            },
            config: ModelConfig::load(a.config.as_deref())?,
            nab_window: a.nab_window.map(|w| w.parse().unwrap()),
            nab_position: a.nab_window_position,
            plot: a.plot,
            decisions: a.decisions,
            precision: a.precision,
            score_device: None,
            jobs: a.jobs,
        };
        let report = evaluate(&e, &mut |_| {})?;
        crate::files::write_json(&a.report, &report)
    }

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
    ) -> Args {
        let config = dir.join("model.toml");
        std::fs::write(
            &config,
            format!("[model]\nhidden = 8\nlayers = 1\nhorizon = 5\nwindow = 20\nepochs = 3\nthreads = 1\n\
             validation_fraction = 0.3\n[threshold]\nkind = \"{kind}\"\nmargin = 3.0\n[detector]\nopen_after = 1\n"),
        )
        .unwrap();
        Args {
            data,
            time_column: Some("time".into()),
            changepoint_column: None,
            ignore_columns: vec!["site".into()],
            train_rows: train_rows.map(TrainRows::Rows),
            train,
            config: Some(config),
            nab_window: None,
            nab_window_position: WindowPosition::Centered,
            report: dir.join("out/report.json"),
            plot: None,
            decisions: None,
            precision: Precision::F32,
            jobs: 1,
        }
    }

    fn read(dir: &Path) -> serde_json::Value {
        serde_json::from_slice(&std::fs::read(dir.join("out/report.json")).unwrap()).unwrap()
    }

    /// Per-file models fitted side by side give the report one at a time
    /// gives, files in the given order, for the forecaster and for the
    /// autoencoder (which shuffles while it trains); a failing file is the
    /// error whatever the count.
    #[test]
    fn files_evaluated_in_parallel_report_as_one_at_a_time() {
        crate::test_init();
        let dir = tempfile::tempdir().unwrap();
        let files: Vec<PathBuf> = (0..5)
            .map(|i| {
                let p = dir.path().join(format!("f{i}.csv"));
                write_csv(&p, i % 2 == 0);
                p
            })
            .collect();
        for kind in ["forecaster", "autoencoder"] {
            let mut reports = Vec::new();
            for jobs in [1, 3] {
                let mut a = args(dir.path(), files.clone(), vec![], Some(150), "gaussian");
                let config = a.config.clone().unwrap();
                let text = std::fs::read_to_string(&config).unwrap();
                std::fs::write(
                    &config,
                    text.replace("[model]\n", &format!("[model]\nkind = \"{kind}\"\n")),
                )
                .unwrap();
                a.jobs = jobs;
                run(a).unwrap();
                let mut r = read(dir.path());
                r.as_object_mut().unwrap().remove("config");
                reports.push(r);
            }
            assert_eq!(reports[0], reports[1], "{kind}");
            let names: Vec<&str> = (reports[0]["files"].as_array().unwrap().iter())
                .map(|f| f["file"].as_str().unwrap())
                .collect();
            let want: Vec<String> = files.iter().map(|p| p.display().to_string()).collect();
            assert_eq!(names, want);
            assert!(
                reports[0]["counts"]["point"]["tp"].as_u64().unwrap() > 0,
                "{}",
                reports[0]
            );
        }
        let mut broken = files.clone();
        broken.insert(1, dir.path().join("missing.csv"));
        for jobs in [1, 3] {
            let mut a = args(dir.path(), broken.clone(), vec![], Some(150), "gaussian");
            a.jobs = jobs;
            let e = run(a).unwrap_err().to_string();
            assert!(e.contains("missing.csv"), "{e}");
        }
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

    /// `a` with `[model] context = [..]` added to its model.toml.
    fn with_context(a: Args, context: &[&str]) -> Args {
        edit_config(a, context, |t| t)
    }

    /// `a` with `[model] context = [..]` added to its model.toml after
    /// `edit`.
    fn edit_config(mut a: Args, context: &[&str], edit: impl Fn(String) -> String) -> Args {
        let config = a.config.take().unwrap();
        let text = edit(std::fs::read_to_string(&config).unwrap());
        let list: Vec<String> = context.iter().map(|g| format!("{g:?}")).collect();
        let text = text.replace(
            "[model]\n",
            &format!("[model]\ncontext = [{}]\n", list.join(", ")),
        );
        std::fs::write(&config, text).unwrap();
        a.config = Some(config);
        a
    }

    /// A context channel constant in the training rows (a command flag)
    /// that switches for 30 normal rows of the scored part raises nothing,
    /// whatever the threshold (it is read as its training constant, and
    /// never scored); the step on `a` is still caught whole.
    #[test]
    fn a_context_channel_constant_in_training_does_not_alarm_when_it_moves() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("cmd.csv");
        write_csv_with_command(&path, true, Some(240..270));
        for kind in ["fixed", "gaussian", "dynamic"] {
            let a = args(dir.path(), vec![path.clone()], vec![], Some(200), kind);
            run(with_context(a, &["cm?"])).unwrap();
            let f = &read(dir.path())["files"][0];
            assert_eq!(f["counts"]["point"]["fp"], 0, "{kind}: {f}");
            assert_eq!(f["counts"]["events"]["tp"], 1, "{kind}: {f}");
            assert_eq!(f["mean_detection_delay"], 0.0, "{kind}: {f}");
        }
    }

    /// A monitored channel constant in the training rows (a flag that was
    /// never moved, or a stuck sensor) that switches for 30 rows of the
    /// scored part alarms, with every threshold, and the alert names it
    /// first; a channel that varied in training keeps its scale.
    #[test]
    fn a_monitored_channel_constant_in_training_alarms_when_it_moves() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("cmd.csv");
        write_csv_with_command(&path, false, Some(240..270));
        let opts = CsvOptions {
            separator: Separator::Char(b';'),
            time_column: Some("time".into()),
            label_column: Some("label".into()),
            ignore_columns: vec!["site".into()],
            ..CsvOptions::default()
        };
        let data = read_labelled(&path, &opts).unwrap();
        let mut train_part = data.slice(0..200);
        train_part.labels = None;
        for kind in ["fixed", "gaussian", "dynamic"] {
            let a = args(dir.path(), vec![], vec![], None, kind);
            let cfg = ModelConfig::load(a.config.as_deref()).unwrap();
            let mut seen = vec![];
            let mut m = fit_for_scoring(&train_part, &cfg, Precision::F32, None, &mut |p| {
                if let EvalProgress::Fit(Progress::MonitoredConstant(names)) = p {
                    seen.extend(names.iter().map(|n| n.to_string()));
                }
            })
            .unwrap();
            assert_eq!(seen, vec!["cmd".to_string()], "{kind}");
            let cmd = m.meta.channels.iter().position(|c| c == "cmd").unwrap();
            assert!(!m.meta.scaler.constant[cmd], "{kind}");
            // Constant 0 in training: scaled by the floor 0.01 x 1e-3.
            assert!((m.meta.scaler.scale[cmd] - 1e-5).abs() < 1e-9, "{kind}");
            let engine = m.engine_config(cfg.detector.detector(), 1);
            let mut opened = vec![];
            crate::replay::replay(&mut m.network, engine, &[&data.rows], |_, _, e| {
                if let forewarn_core::engine::EngineEvent::Opened(a) = e {
                    opened.push(a);
                }
            })
            .unwrap();
            let at_switch: Vec<_> = opened
                .iter()
                .filter(|a| (240..270).contains(&a.window_start))
                .collect();
            assert_eq!(at_switch.len(), 1, "{kind}: {opened:?}");
            assert_eq!(at_switch[0].contributors[0].channel, "cmd", "{kind}");
            assert!(at_switch[0].contributors[0].share > 0.9, "{kind}");
        }
    }

    /// Writes 400 rows a second apart: `a` a sine, `b` noise the
    /// forecaster cannot predict, read at row `held(i)` (a held value
    /// wherever that is not `i`), labelled on `label`.
    fn write_noise_holding(path: &Path, held: impl Fn(u64) -> u64, label: Range<u64>) {
        let mut text = String::from("time;a;b;site;label\n");
        let noise = |i: u64| ((i * 7919 + 13) % 101) as f64 / 50.0 - 1.0;
        for i in 0..400u64 {
            let a = (i as f64 * 0.2).sin();
            let b = noise(held(i));
            text.push_str(&format!(
                "{};{a:.4};{b:.4};x;{}\n",
                1_767_225_600 + i,
                u8::from(label.contains(&i))
            ));
        }
        std::fs::write(path, text).unwrap();
    }

    /// Evaluates `path` (the dynamic threshold, 200 training rows) with
    /// `setting` added to `[threshold]` (none: the defaults) and asserts
    /// no false alert and the labelled hold found `delay` seconds in, or
    /// (`None`) missed.
    fn assert_hold_found(dir: &Path, path: &Path, setting: Option<&str>, delay: Option<f64>) {
        let a = args(dir, vec![path.to_path_buf()], vec![], Some(200), "dynamic");
        let a = edit_config(a, &[], |t| match setting {
            Some(line) => t.replace("[threshold]\n", &format!("[threshold]\n{line}\n")),
            None => t,
        });
        run(a).unwrap();
        let f = &read(dir)["files"][0];
        let case = format!("{setting:?}: {f}");
        assert_eq!(
            f["counts"]["events"]["tp"],
            u64::from(delay.is_some()),
            "{case}"
        );
        assert_eq!(f["counts"]["events"]["fp"], 0, "{case}");
        if let Some(delay) = delay {
            assert_eq!(f["mean_detection_delay"], delay, "{case}");
        }
    }

    /// A sensor that freezes: `b` is noise the forecaster cannot predict
    /// (a value the forecast error cannot tell from its normal), and holds
    /// its row-300 value for the 60 labelled rows from there. With the
    /// frozen-channel rule (the default, 20 readings) it is found once 21
    /// readings were identical, by an alert that names `b`; without it
    /// (`flatline_readings = 0`) it is missed. `a` changes every row and
    /// never freezes.
    #[test]
    fn a_frozen_sensor_is_found_by_its_run_of_identical_readings() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("frozen.csv");
        write_noise_holding(
            &path,
            |i| if (300..360).contains(&i) { 300 } else { i },
            300..360,
        );
        // More than 20 identical readings first at the end of the batch of
        // rows 320 to 324 (batches of 5 from row 200; 25 then), flagged
        // from its first row: 20 s after the start.
        assert_hold_found(dir.path(), &path, None, Some(20.0));
        assert_hold_found(dir.path(), &path, Some("flatline_readings = 0"), None);
    }

    /// A channel that rests in normal operation: `b` is noise that holds
    /// its value for 15 readings every 50 rows (training included), so a
    /// 15-row rest is normal, and a held reading is a fault only once it
    /// outlasts every rest training saw by the ratio. With the default
    /// (limit twice the longest training rest: 30 readings) the 40-row hold
    /// from row 340 is found, 30 s after it began,
    /// while a 25-row rest at row 300 raises nothing; with
    /// `flatline_ratio = 3` (limit 45) the hold is missed.
    #[test]
    fn a_hold_longer_than_any_rest_in_training_is_found() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("rests.csv");
        let rest_from = |i: u64| match i {
            300..325 => 300,
            340..380 => 340,
            _ if i % 50 < 15 => i - i % 50,
            _ => i,
        };
        write_noise_holding(&path, rest_from, 340..380);
        // More than 30 identical readings first at the end of the batch of
        // rows 370 to 374: 30 s after the hold began.
        assert_hold_found(dir.path(), &path, None, Some(30.0));
        assert_hold_found(dir.path(), &path, Some("flatline_ratio = 3"), None);
    }

    /// A monitored channel constant in training (`stuck`, 1.0) watched
    /// while a context command switches in a rhythm training never saw
    /// (every 3 rows instead of every 50): the channel is forecast as its
    /// constant, not by the network (whose output for it would follow the
    /// command), so every batch before the move scores exactly 0 and
    /// nothing alarms while it sits still, with every threshold; its
    /// 30-row move from row 300 is caught, as one alert.
    #[test]
    fn a_still_channel_constant_in_training_scores_zero_under_unseen_commands() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("stuck.csv");
        let mut text = String::from("time;stuck;cmd;site;label\n");
        for i in 0..400u64 {
            let cmd = if i < 200 { (i / 50) % 2 } else { (i / 3) % 2 };
            let moved = (300..330).contains(&i);
            let stuck = if moved { 1.5 } else { 1.0 };
            text.push_str(&format!(
                "{};{stuck};{cmd};x;{}\n",
                1_767_225_600 + i,
                u8::from(moved)
            ));
        }
        std::fs::write(&path, text).unwrap();
        for kind in ["fixed", "gaussian", "dynamic"] {
            let mut a = args(dir.path(), vec![path.clone()], vec![], Some(200), kind);
            a.decisions = Some(dir.path().join("decisions"));
            run(with_context(a, &["cmd"])).unwrap();
            let f = &read(dir.path())["files"][0];
            // Only the move's alert, which resolves after it.
            assert_eq!(f["counts"]["events"]["fp"], 0, "{kind}: {f}");
            assert_eq!(f["counts"]["events"]["tp"], 1, "{kind}: {f}");
            let written: Vec<_> = std::fs::read_dir(dir.path().join("decisions"))
                .unwrap()
                .map(|e| e.unwrap().path())
                .collect();
            assert_eq!(written.len(), 1, "{written:?}");
            let rows = std::fs::read_to_string(&written[0]).unwrap();
            let still_scores: Vec<f64> = rows
                .lines()
                .skip(1)
                .map(|l| l.split(',').collect::<Vec<_>>())
                .filter(|c| c[3] == "0" && !c[4].is_empty())
                // Before the move (the dynamic threshold's smoothed score
                // decays for a while after it).
                .filter(|c| c[0].parse::<u64>().unwrap() < 295)
                .map(|c| c[4].parse().unwrap())
                .collect();
            assert!(still_scores.len() >= 70, "{kind}: {}", still_scores.len());
            assert!(
                still_scores.iter().all(|&s| s == 0.0),
                "{kind}: {still_scores:?}"
            );
        }
    }

    /// 400 rows, 1 s apart: `b` smooth, a command `cmd` (0 or 1) that
    /// switches every 50 rows in the first 200 (the training part), and
    /// `a`, which follows the command 5 rows later (a plant answering a
    /// setpoint change) on top of a smooth signal. In the scored part,
    /// with `command_steps` the command steps to 1 at row 260 and back at
    /// 330, and `a` follows (normal operation: no label); without, the
    /// command stays 0 and `a` takes the same step by itself from row 265
    /// to 335 (labelled: a fault).
    fn write_csv_following(path: &Path, command_steps: bool) {
        let mut s = String::from("time;a;b;cmd;site;label\n");
        let cmd_at = |i: u64| -> f64 {
            if i < 200 {
                ((i / 50) % 2) as f64
            } else if command_steps && (260..330).contains(&i) {
                1.0
            } else {
                0.0
            }
        };
        for i in 0..400u64 {
            let t = 1_767_225_600 + i;
            let noise = ((i * 7919) % 13) as f64 / 130.0;
            let follows = if i >= 5 { 3.0 * cmd_at(i - 5) } else { 0.0 };
            let fault = !command_steps && (265..335).contains(&i);
            let a = (i as f64 * 0.2).sin() + noise + follows + if fault { 3.0 } else { 0.0 };
            let b = (i as f64 * 0.2).cos() * 2.0 - noise;
            s.push_str(&format!(
                "{t};{a:.4};{b:.4};{};x;{}\n",
                cmd_at(i),
                u8::from(fault)
            ));
        }
        std::fs::write(path, s).unwrap();
    }

    /// A command declared context steps and the monitored `a` follows it:
    /// nothing alarms, with every threshold strategy and the default
    /// hysteresis (two batches above the threshold open an alert; one
    /// twice over opens at once, but not after a context change: 3 false
    /// alerts with the fixed threshold otherwise) and context-change
    /// margin (a forecaster cannot know when a command will change: the
    /// dynamic threshold smooths the one batch `a` is forecast before the
    /// command's effect shows over two, 55 false rows without the
    /// margin), while the same step on `a` alone (the command unchanged)
    /// is caught. The model reads
    /// `cmd` and forecasts `a` and `b` only (the report's config carries
    /// the globs).
    #[test]
    fn a_command_step_as_context_does_not_alarm_but_the_same_step_on_a_monitored_channel_does() {
        let dir = tempfile::tempdir().unwrap();
        let (follows, alone) = (dir.path().join("follows.csv"), dir.path().join("alone.csv"));
        write_csv_following(&follows, true);
        write_csv_following(&alone, false);
        // Trained longer than the other tests' models: `a` follows the
        // command through its 5-row lag only once the network has learnt it.
        let trained = |t: String| {
            t.replace("open_after = 1\n", "")
                .replace("epochs = 3\n", "epochs = 20\n")
        };
        for kind in ["fixed", "gaussian", "dynamic"] {
            let a = args(dir.path(), vec![follows.clone()], vec![], Some(200), kind);
            run(edit_config(a, &["cmd*"], trained)).unwrap();
            let r = read(dir.path());
            assert_eq!(r["config"]["model"]["context"], serde_json::json!(["cmd*"]));
            let f = &r["files"][0];
            assert_eq!(f["counts"]["point"]["fp"], 0, "{kind}: {f}");
            let a = args(dir.path(), vec![alone.clone()], vec![], Some(200), kind);
            run(edit_config(a, &["cmd*"], trained)).unwrap();
            let f = &read(dir.path())["files"][0];
            assert_eq!(f["counts"]["events"]["tp"], 1, "{kind}: {f}");
        }
        // A glob that matches no column is an error naming it.
        let a = args(
            dir.path(),
            vec![follows.clone()],
            vec![],
            Some(200),
            "fixed",
        );
        let e = format!("{:#}", run(with_context(a, &["mode*"])).unwrap_err());
        assert!(e.contains("\"mode*\" matches no column"), "{e}");
    }

    /// `--score-device` moves the fitted model through its artifact; the
    /// moved copy (onto the CPU again here; benches/gpu.sh moves it onto
    /// CUDA) is the same model and decides every batch exactly alike.
    #[test]
    fn a_model_moved_through_its_artifact_decides_alike() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("faulty.csv");
        write_csv(&path, true);
        let a = args(dir.path(), vec![], vec![], None, "gaussian");
        let cfg = ModelConfig::load(a.config.as_deref()).unwrap();
        let opts = CsvOptions {
            separator: Separator::Char(b';'),
            time_column: Some("time".into()),
            label_column: Some("label".into()),
            ignore_columns: vec!["site".into()],
            ..CsvOptions::default()
        };
        let data = read_labelled(&path, &opts).unwrap();
        let mut train_part = data.slice(0..200);
        train_part.labels = None;
        let mut fitted =
            fit_for_scoring(&train_part, &cfg, Precision::F32, None, &mut |_| {}).unwrap();
        let mut moved = moved_to(&fitted, tch::Device::Cpu).unwrap();
        assert_eq!(moved.meta, fitted.meta);
        let decide = |m: &mut Model| {
            let engine = m.engine_config(cfg.detector.detector(), 1);
            crate::replay::decisions(&mut m.network, engine, &data.rows).unwrap()
        };
        let want = decide(&mut fitted);
        let got = decide(&mut moved);
        assert!(want.len() > 30 && want.iter().any(|d| d.open), "{want:?}");
        assert_eq!(got, want);
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

    /// No peeking: labels only score the decisions, never make them. The
    /// same file with its label column reversed (the fault's rows now
    /// labelled at the start, in the training rows when a file trains on
    /// its own first rows) gives every row the same score, threshold and
    /// flag, with each threshold strategy, trained on the file's first
    /// rows or on a separate normal file; only the counts move.
    #[test]
    fn permuting_a_test_files_labels_leaves_every_decision_unchanged() {
        let dir = tempfile::tempdir().unwrap();
        let (labelled, permuted) = (
            dir.path().join("as-labelled/f.csv"),
            dir.path().join("permuted/f.csv"),
        );
        let normal = dir.path().join("normal.csv");
        std::fs::create_dir_all(labelled.parent().unwrap()).unwrap();
        std::fs::create_dir_all(permuted.parent().unwrap()).unwrap();
        write_csv(&labelled, true);
        write_csv(&normal, false);
        let text = std::fs::read_to_string(&labelled).unwrap();
        let mut lines: Vec<String> = text.lines().map(str::to_owned).collect();
        let labels: Vec<String> = (lines[1..].iter())
            .map(|l| l.rsplit(';').next().unwrap().to_owned())
            .rev()
            .collect();
        for (line, label) in lines[1..].iter_mut().zip(&labels) {
            let cut = line.rfind(';').unwrap();
            *line = format!("{};{label}", &line[..cut]);
        }
        assert_ne!(lines.join("\n") + "\n", text);
        std::fs::write(&permuted, lines.join("\n") + "\n").unwrap();
        // Every column of the decisions but the label.
        let decisions = |data: &Path, kind: &str, own_rows: bool| {
            let (train, rows) = match own_rows {
                true => (vec![], Some(200)),
                false => (vec![normal.clone()], None),
            };
            let mut a = args(dir.path(), vec![data.to_path_buf()], train, rows, kind);
            let out = dir.path().join("decisions");
            let _ = std::fs::remove_dir_all(&out);
            a.decisions = Some(out.clone());
            run(a).unwrap();
            let csv = std::fs::read_dir(&out)
                .unwrap()
                .next()
                .unwrap()
                .unwrap()
                .path();
            let rows: Vec<String> = (std::fs::read_to_string(csv).unwrap().lines())
                .map(|l| {
                    let f: Vec<&str> = l.split(',').collect();
                    [&f[..2], &f[3..]].concat().join(",")
                })
                .collect();
            (rows, read(dir.path())["counts"]["point"].clone())
        };
        for kind in ["fixed", "gaussian", "dynamic"] {
            for own_rows in [true, false] {
                let (want, counts) = decisions(&labelled, kind, own_rows);
                let (got, permuted_counts) = decisions(&permuted, kind, own_rows);
                assert_eq!(want.len(), 401, "{kind}");
                assert!(
                    want.iter().any(|r| r.ends_with(",1")),
                    "{kind}: nothing flagged"
                );
                let differs = (want.iter().zip(&got)).find(|(w, g)| w != g);
                assert_eq!(
                    differs, None,
                    "{kind}, own rows {own_rows}: (as labelled, permuted)"
                );
                assert_eq!(got.len(), want.len());
                assert_ne!(permuted_counts, counts, "{kind}, own rows {own_rows}");
            }
        }
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
        assert_eq!("400".parse(), Ok(TrainRows::Rows(400)));
        assert_eq!(" 15% ".parse(), Ok(TrainRows::Percent(15.0)));
        for bad in ["0%", "100%", "-5%", "x%", "1.5", "-3", ""] {
            assert!(bad.parse::<TrainRows>().is_err(), "{bad}");
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
        a.nab_window_position = WindowPosition::Right;
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
        for precision in [Precision::F32, Precision::Bf16] {
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
        a.precision = Precision::Bf16;
        let e = format!("{:#}", run(a).unwrap_err());
        assert!(e.contains("forecaster only"), "{e}");
    }

    /// Ten days of hourly rows, 20 at night and 80 from 09:00 to 17:00,
    /// but day 7 stays at 20 (labelled). A forecaster cannot tell a
    /// missing step from a flat night; the seasonal residual, trained on
    /// the first 4 days and learning through the replay, can.
    #[test]
    fn the_seasonal_residual_finds_a_day_without_its_daily_step() {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("daily.csv");
        let mut s = String::from("time;a;site;label\n");
        for i in 0..240u64 {
            let (day, hour) = (i / 24, i % 24);
            let missing = day == 7 && (9..17).contains(&hour);
            let step = (9..17).contains(&hour) && !missing;
            let noise = ((i * 7919) % 13) as f64 / 13.0;
            let a = if step { 80.0 } else { 20.0 } + noise;
            s.push_str(&format!(
                "{};{a:.3};x;{}\n",
                1_767_225_600 + i * 3600,
                u8::from(missing)
            ));
        }
        std::fs::write(&data, s).unwrap();
        let events = |bucket: &str| {
            let a = args(dir.path(), vec![data.clone()], vec![], Some(96), "dynamic");
            let config = a.config.clone().unwrap();
            let mut toml = std::fs::read_to_string(&config).unwrap();
            toml.push_str(&format!(
                "[threshold.dynamic]\nresidual_bucket = \"{bucket}\"\n"
            ));
            std::fs::write(&config, toml).unwrap();
            run(a).unwrap();
            read(dir.path())["counts"]["events"].clone()
        };
        assert_eq!(
            events("1h"),
            serde_json::json!({"tp": 1, "fp": 0, "fn_": 0})
        );
        assert_eq!(
            events("0s"),
            serde_json::json!({"tp": 0, "fp": 0, "fn_": 1})
        );
    }

    #[test]
    fn short_training_parts_shrink_the_window() {
        let m = crate::config::ModelSection::default();
        let w = |rows| fitting_window(rows, m.validation_fraction, m.window, m.horizon);
        // Defaults: window 50, horizon 5, validation 30 %.
        assert_eq!(w(400), None);
        // 100 rows: 30 validation rows -> window 30 - 10 = 20.
        assert_eq!(w(100), Some(20));
        // Tiny: never below one batch.
        assert_eq!(w(20), Some(5));
    }
}
