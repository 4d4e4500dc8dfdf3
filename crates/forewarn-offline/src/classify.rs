//! A classification run (`forewarn classify`): the supervised heads
//! (`[model] head = "logistic"` or `"softmax"`) on labelled fault data. A
//! stacked LSTM reads windows of `window` scaled rows and the head names
//! the class of each window's last row: fault or not (logistic), or which
//! fault (softmax). Unlike the forecasting head, which `evaluate`, `train`
//! and `serve` fit on normal data alone, a classifier needs every class in
//! its training data, so it has its own command; it reports accuracy per
//! class and the confusion matrix on the test files.

use std::collections::BTreeMap;
use std::path::PathBuf;

use forewarn_core::{ClassName, Scaler};
use forewarn_data::{CsvOptions, Dataset, expand};
use forewarn_model::heads::{ClassReport, ClassifierConfig, Head, LstmClassifier, class_report};
use forewarn_model::{ClassifierDescription, save_classifier};
use serde::Serialize;
use tch::Tensor;

use crate::config::{HeadKind, ModelConfig};
use crate::error::{Context, OfflineError};
use crate::files::read_labelled;

/// Everything a classification run needs.
#[derive(Debug, Clone)]
pub struct Classification {
    /// Labelled training files and folders of them: every class to
    /// recognise must be in them.
    pub train: Vec<PathBuf>,
    /// Labelled test files, in the same layout.
    pub data: Vec<PathBuf>,
    pub csv: CsvOptions,
    pub config: ModelConfig,
    /// The head (`logistic` or `softmax`).
    pub head: HeadKind,
    /// Where to store the trained classifier (`serve`'s `[diagnosis]
    /// classifier`), and its name.
    pub save: Option<PathBuf>,
    pub name: String,
}

/// What a classification reports while it runs (the command line prints it).
#[derive(Debug, Clone, Copy)]
pub enum ClassifyProgress {
    /// The head is trained on `windows` windows of `window` rows.
    Training {
        head: HeadKind,
        windows: usize,
        window: usize,
        channels: usize,
        classes: usize,
    },
    /// The loss went from `first` to `last` over `epochs`.
    Trained {
        first: f64,
        last: f64,
        epochs: usize,
    },
}

/// Returns a configuration error.
macro_rules! bail {
    ($($arg:tt)*) => {
        return Err(OfflineError::Config(format!($($arg)*)))
    };
}

/// Accuracy of one class over the test windows whose last row has it.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct ClassAccuracy {
    /// The label (for the logistic head: 0 normal, 1 any fault).
    pub class: u8,
    pub windows: u64,
    pub accuracy: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct ClassifyReport {
    pub forewarn_version: String,
    pub head: HeadKind,
    pub config: ModelConfig,
    /// The labels the head tells apart, in the order of the matrix.
    pub classes: Vec<u8>,
    pub train_windows: usize,
    pub test_windows: usize,
    pub accuracy: f64,
    pub per_class: Vec<ClassAccuracy>,
    /// `confusion[true][predicted]`, in `classes` order.
    pub confusion: Vec<Vec<u64>>,
    /// Logistic head: of the fault windows (label not 0).
    pub precision: Option<f64>,
    pub recall: Option<f64>,
    pub f1: Option<f64>,
    /// The stored classifier's version, with `save`.
    pub saved: Option<String>,
}

/// Trains `c.head` on the training files and reports it on the test files.
pub fn classify(
    c: &Classification,
    progress: &mut dyn FnMut(ClassifyProgress),
) -> Result<ClassifyReport, OfflineError> {
    let (cfg, head) = (&c.config, c.head);
    if head == HeadKind::Identity {
        bail!(
            "classify needs a classifier head: --head logistic|softmax, or [model] head in the config"
        );
    }
    let opts = &c.csv;
    let train = load_labelled(&c.train, opts, None)?;
    let channels = train[0].channels.clone();
    let test = load_labelled(&c.data, opts, Some(&channels))?;
    let m = &cfg.model;
    // A classifier forecasts and scores nothing: context channels are
    // inputs like every channel. The globs must still name columns.
    forewarn_data::context_flags(&channels, &m.context, &train[0].source)?;
    let cc = ClassifierConfig {
        hidden: m.hidden,
        layers: m.layers,
        window: m.window,
        // A decision every batch, as the streaming detector makes them.
        stride: m.horizon,
        epochs: m.epochs,
        learning_rate: m.learning_rate(),
        batch_size: m.batch_windows,
        seed: m.seed,
        device: m.train_settings()?.device,
    };
    // The logistic head tells fault (any non-zero label) from normal.
    let class_of = |label: u8| match head {
        HeadKind::Logistic => u8::from(label != 0),
        _ => label,
    };
    let scaler = fit_scaler(&train, cfg.model.robust_scaling);
    let (x, labels) = windows_of(&train, &scaler, &cc)?;
    let labels: Vec<u8> = labels.into_iter().map(class_of).collect();
    let classes: Vec<u8> = {
        let mut c = labels.clone();
        c.sort_unstable();
        c.dedup();
        c
    };
    if classes.len() < 2 {
        bail!(
            "the training windows hold only class {:?}: a classifier needs at least two",
            classes
        );
    }
    let index: BTreeMap<u8, i64> = (classes.iter().enumerate())
        .map(|(i, c)| (*c, i as i64))
        .collect();
    let y: Vec<i64> = labels.iter().map(|l| index[l]).collect();
    let head_spec = match head {
        HeadKind::Logistic => Head::Logistic,
        _ => Head::Softmax {
            classes: classes.len(),
        },
    };
    progress(ClassifyProgress::Training {
        head,
        windows: y.len(),
        window: cc.window,
        channels: channels.len(),
        classes: classes.len(),
    });
    let mut model = LstmClassifier::new(channels.len(), head_spec, &cc);
    let losses = model.fit(&x.to_device(cc.device), &y, &cc)?;
    if let (Some(first), Some(last)) = (losses.first(), losses.last()) {
        progress(ClassifyProgress::Trained {
            first: *first,
            last: *last,
            epochs: losses.len(),
        });
    }

    let (xt, test_labels) = windows_of(&test, &scaler, &cc)?;
    let mut truth = Vec::with_capacity(test_labels.len());
    for l in test_labels.into_iter().map(class_of) {
        match index.get(&l) {
            Some(i) => truth.push(*i),
            None => bail!(
                "the test data has class {l}, which no training window has (training classes: {classes:?})"
            ),
        }
    }
    let pred = model.predict(&xt.to_device(cc.device));
    let r = class_report(&truth, &pred, classes.len());
    let saved = match &c.save {
        Some(dir) => {
            let d = ClassifierDescription {
                name: c.name.clone(),
                classes: class_names(&channels, &classes, head),
                channels,
                window: cc.window,
                hidden: cc.hidden,
                layers: cc.layers,
                scaler,
            };
            Some(save_classifier(&model, d, dir)?.version)
        }
        None => None,
    };
    let mut report = build_report(head, cfg.clone(), classes, y.len(), truth.len(), r);
    report.saved = saved;
    Ok(report)
}

/// What an operator reads for each class: the benchmark's fault names on
/// Tennessee Eastman data, `normal` / `fault` for the logistic head,
/// otherwise the label.
fn class_names(channels: &[String], classes: &[u8], head: HeadKind) -> Vec<ClassName> {
    let tep = channels == forewarn_data::tep::channels().as_slice();
    classes
        .iter()
        .map(|&class| {
            let name = match (head, class) {
                (_, 0) if !tep => "normal".to_string(),
                (HeadKind::Logistic, _) => "fault".to_string(),
                _ if tep => forewarn_data::tep::fault_name(class)
                    .unwrap_or_else(|| format!("class {class}")),
                _ => format!("class {class}"),
            };
            ClassName { class, name }
        })
        .collect()
}

/// Every file of `paths`, each with its labels (TEP files carry their
/// fault number), on `channels` when given (the training files' order).
fn load_labelled(
    paths: &[PathBuf],
    opts: &CsvOptions,
    channels: Option<&[String]>,
) -> Result<Vec<Dataset>, OfflineError> {
    let files = expand(paths)?;
    if files.is_empty() {
        bail!("no data files found in {paths:?}");
    }
    let mut out: Vec<Dataset> = Vec::with_capacity(files.len());
    for path in &files {
        let d = read_labelled(path, opts)?;
        let want = channels.or(out.first().map(|f| f.channels.as_slice()));
        let d = match want {
            Some(names) => d.select_channels(names).context(|| {
                format!(
                    "{} does not have the channels of the first training file",
                    path.display()
                )
            })?,
            None => d,
        };
        out.push(d);
    }
    Ok(out)
}

/// Fitted on the normal rows (label 0) when the training data has any,
/// the scale the forecaster would use; otherwise on every row.
fn fit_scaler(files: &[Dataset], robust: bool) -> Scaler {
    let c = files[0].n_channels();
    let mut normal = Vec::new();
    for f in files {
        let labels = f.labels.as_deref().unwrap_or_default();
        for (i, l) in labels.iter().enumerate() {
            if *l == 0 {
                normal.extend_from_slice(f.row(i));
            }
        }
    }
    let rows: Vec<f32> = if normal.len() >= 2 * c {
        normal
    } else {
        files.iter().flat_map(|f| f.rows.iter().copied()).collect()
    };
    Scaler::fit_with(&rows, c, robust)
}

/// Windows of `cfg.window` rows every `cfg.stride` rows of each file
/// (never across files), scaled, with the label of each window's last row.
fn windows_of(
    files: &[Dataset],
    scaler: &Scaler,
    cfg: &ClassifierConfig,
) -> Result<(Tensor, Vec<u8>), OfflineError> {
    let (mut xs, mut labels) = (Vec::new(), Vec::new());
    for f in files {
        if f.len() < cfg.window {
            bail!(
                "{}: {} rows, fewer than the window ({})",
                f.source,
                f.len(),
                cfg.window
            );
        }
        let w =
            forewarn_model::heads::windows(&f.rows, f.n_channels(), scaler, cfg.window, cfg.stride);
        let l = f.labels.as_deref().unwrap_or_default();
        let n = w.size()[0] as usize;
        labels.extend((0..n).map(|k| l[k * cfg.stride + cfg.window - 1]));
        xs.push(w);
    }
    Ok((Tensor::cat(&xs, 0), labels))
}

fn build_report(
    head: HeadKind,
    config: ModelConfig,
    classes: Vec<u8>,
    train_windows: usize,
    test_windows: usize,
    r: ClassReport,
) -> ClassifyReport {
    let per_class = (classes.iter().enumerate())
        .map(|(k, c)| ClassAccuracy {
            class: *c,
            windows: r.matrix[k].iter().sum(),
            accuracy: r.per_class[k],
        })
        .collect();
    // Logistic: class index 1 is "fault".
    let (precision, recall, f1) = if head == HeadKind::Logistic && r.matrix.len() == 2 {
        let (tp, fp, fn_) = (r.matrix[1][1], r.matrix[0][1], r.matrix[1][0]);
        let p = ratio(tp, tp + fp);
        let rec = ratio(tp, tp + fn_);
        let f = match (p, rec) {
            (Some(p), Some(r)) if p + r > 0.0 => Some(2.0 * p * r / (p + r)),
            (Some(_), Some(_)) => Some(0.0),
            _ => None,
        };
        (p, rec, f)
    } else {
        (None, None, None)
    };
    ClassifyReport {
        forewarn_version: env!("CARGO_PKG_VERSION").into(),
        head,
        config,
        classes,
        train_windows,
        test_windows,
        accuracy: r.accuracy,
        per_class,
        confusion: r.matrix,
        precision,
        recall,
        f1,
        saved: None,
    }
}

impl ClassifyReport {
    /// Overall accuracy, then per class its accuracy and what it was taken
    /// for most (a markdown table, as docs/ACCURACY.md shows it).
    pub fn summary(&self) -> String {
        use std::fmt::Write as _;
        let mut out = format!(
            "{} test windows, accuracy {:.3} ({} classes)\n",
            self.test_windows,
            self.accuracy,
            self.classes.len()
        );
        if let (Some(p), Some(rec), Some(f1)) = (self.precision, self.recall, self.f1) {
            let _ = writeln!(
                out,
                "fault windows: precision {p:.3} recall {rec:.3} f1 {f1:.3}"
            );
        }
        out.push_str(
            "| class | windows | accuracy | predicted as (count) |\n| --- | --- | --- | --- |\n",
        );
        for (k, c) in self.per_class.iter().enumerate() {
            let mut taken: Vec<(u8, u64)> = (self.confusion[k].iter().enumerate())
                .filter(|(_, n)| **n > 0)
                .map(|(j, n)| (self.classes[j], *n))
                .collect();
            taken.sort_by_key(|(_, n)| std::cmp::Reverse(*n));
            let top: Vec<String> = (taken.iter().take(3))
                .map(|(j, n)| format!("{j} ({n})"))
                .collect();
            let _ = writeln!(
                out,
                "| {} | {} | {:.2} | {} |",
                c.class,
                c.windows,
                c.accuracy,
                top.join(", ")
            );
        }
        out
    }
}

fn ratio(a: u64, b: u64) -> Option<f64> {
    (b > 0).then(|| a as f64 / b as f64)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// 300 rows of two smooth channels (phase `phase`); from row 100 on,
    /// class 1 shifts `a` by +2 and class 2 triples `b`'s swing. The label
    /// column holds the class from row 100 (0 before).
    fn write(path: &std::path::Path, class: u8, phase: usize) {
        let mut s = String::from("a;b;label\n");
        for i in 0..300 {
            let t = (i + phase) as f64;
            let noise = (((i + phase) * 7919) % 13) as f64 / 130.0;
            let mut a = (t * 0.2).sin() + noise;
            let mut b = (t * 0.2).cos() - noise;
            let label = if i >= 100 { class } else { 0 };
            match label {
                1 => a += 2.0,
                2 => b *= 3.0,
                _ => {}
            }
            s.push_str(&format!("{a:.4};{b:.4};{label}\n"));
        }
        std::fs::write(path, s).unwrap();
    }

    /// `forewarn classify`'s arguments, as the tests vary them.
    struct Args {
        train: Vec<PathBuf>,
        data: Vec<PathBuf>,
        config: Option<PathBuf>,
        head: Option<HeadKind>,
        report: PathBuf,
        save: Option<PathBuf>,
    }

    /// Classifies as `forewarn classify` does and writes the report.
    fn run(a: Args) -> Result<(), OfflineError> {
        let config = ModelConfig::load(a.config.as_deref())?;
        let c = Classification {
            train: a.train,
            data: a.data,
            csv: CsvOptions {
                separator: forewarn_data::Separator::Char(b';'),
                label_column: Some("label".into()),
                ..CsvOptions::default()
            },
            head: a.head.unwrap_or(config.model.head),
            config,
            save: a.save,
            name: "test-faults".into(),
        };
        let report = classify(&c, &mut |_| {})?;
        crate::files::write_json(&a.report, &report)
    }

    fn args(dir: &std::path::Path, head: Option<HeadKind>, test_classes: &[u8]) -> Args {
        let config = dir.join("model.toml");
        std::fs::write(
            &config,
            "[model]\nhidden = 16\nlayers = 1\nwindow = 10\nhorizon = 5\nepochs = 40\n\
             learning_rate = 0.01\nthreads = 1\n",
        )
        .unwrap();
        let (train, test) = (dir.join("train"), dir.join("test"));
        for d in [&train, &test] {
            std::fs::create_dir_all(d).unwrap();
        }
        for c in 0..3u8 {
            write(&train.join(format!("c{c}.csv")), c, 0);
        }
        for c in test_classes {
            write(&test.join(format!("c{c}.csv")), *c, 37);
        }
        Args {
            train: vec![train],
            data: vec![test],
            config: Some(config),
            head,
            report: dir.join("out/classify.json"),
            save: None,
        }
    }

    fn read(dir: &std::path::Path) -> serde_json::Value {
        serde_json::from_slice(&std::fs::read(dir.join("out/classify.json")).unwrap()).unwrap()
    }

    #[test]
    fn softmax_and_logistic_heads_learn_the_classes_of_labelled_files() {
        let dir = tempfile::tempdir().unwrap();
        run(args(dir.path(), Some(HeadKind::Softmax), &[0, 1, 2])).unwrap();
        let r = read(dir.path());
        assert_eq!(r["head"], "softmax");
        assert_eq!(r["classes"], serde_json::json!([0, 1, 2]));
        // 3 files x (300 - 10) / 5 + 1 = 59 windows each, a decision per batch.
        assert_eq!(
            (r["train_windows"].as_u64(), r["test_windows"].as_u64()),
            (Some(177), Some(177))
        );
        let confusion = r["confusion"].as_array().unwrap();
        assert_eq!(confusion.len(), 3);
        let per_class = r["per_class"].as_array().unwrap();
        // Class 0: all of c0 (59 windows) and the windows of c1 and c2
        // ending before row 100 (window k ends at row 5k + 9: 19 each);
        // classes 1 and 2: the other 40 of their file.
        let windows: Vec<u64> = per_class
            .iter()
            .map(|c| c["windows"].as_u64().unwrap())
            .collect();
        assert_eq!(windows, vec![97, 40, 40]);
        // Windows straddling the onset are the hard ones; the rest are easy.
        assert!(r["accuracy"].as_f64().unwrap() > 0.85, "{r}");
        assert!(r["precision"].is_null());

        assert!(r["saved"].is_null());

        // Stored: the classifier `serve` runs, with the classes' names.
        let mut a = args(dir.path(), Some(HeadKind::Softmax), &[0, 1, 2]);
        a.save = Some(dir.path().join("clf"));
        run(a).unwrap();
        let saved = read(dir.path())["saved"].as_str().unwrap().to_owned();
        let c = forewarn_model::load_classifier(&dir.path().join("clf"), tch::Device::Cpu).unwrap();
        assert_eq!(c.meta().version, saved);
        assert!(saved.starts_with("test-faults-"), "{saved}");
        let d = &c.meta().description;
        let names: Vec<&str> = d.classes.iter().map(|c| c.name.as_str()).collect();
        assert_eq!(names, ["normal", "class 1", "class 2"]);
        assert_eq!((d.window, d.channels.len()), (10, 2));

        run(args(dir.path(), Some(HeadKind::Logistic), &[0, 1, 2])).unwrap();
        let r = read(dir.path());
        assert_eq!(r["classes"], serde_json::json!([0, 1]));
        assert_eq!(r["per_class"][1]["windows"], 80);
        assert!(r["f1"].as_f64().unwrap() > 0.85, "{r}");
    }

    #[test]
    fn classify_refuses_the_identity_head_and_classes_it_never_learnt() {
        let dir = tempfile::tempdir().unwrap();
        let e = run(args(dir.path(), None, &[0])).unwrap_err().to_string();
        assert!(e.contains("needs a classifier head"), "{e}");

        // A test class that no training file has.
        let mut a = args(dir.path(), Some(HeadKind::Softmax), &[0]);
        let extra = dir.path().join("test/c7.csv");
        write(&extra, 7, 0);
        a.config = Some(dir.path().join("quick.toml"));
        std::fs::write(
            a.config.as_ref().unwrap(),
            "[model]\nhidden = 4\nlayers = 1\nwindow = 10\nhorizon = 5\nepochs = 1\nthreads = 1\n",
        )
        .unwrap();
        let e = format!("{:#}", run(a).unwrap_err());
        assert!(e.contains("class 7, which no training window has"), "{e}");
    }
}
