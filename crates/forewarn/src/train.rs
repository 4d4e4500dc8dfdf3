//! `forewarn train`: fit a model on normal history, calibrate the
//! detector's threshold strategy on a held-out tail, write the model
//! artifact (which `serve` then runs as it is).
//!
//! The model, its training and the strategy are what `forewarn evaluate`
//! reads from model.toml: with `--config model.toml`, that file's `[model]`
//! (any `kind`: forecaster, per_variable, autoencoder), `[threshold]` and
//! `[detector]`; without it, the flags below, which stand for the same
//! fields and default to the same values ([`ModelSection::default`],
//! [`ThresholdSection::default`]). Either way the configuration goes
//! through [`ModelConfig::resolved`] and the model through
//! [`forewarn_offline::fit`], the code `evaluate` trains and calibrates
//! with, so an empty model.toml and no flags give the same model. The one
//! difference: `--device` defaults to `auto` (a GPU when there is one),
//! model.toml's `device` to `cpu`.

use std::path::PathBuf;

use anyhow::{Context, bail};
use forewarn_data::{CsvOptions, Separator, read_joined};
use forewarn_model::{Highway, ModelKind};
use forewarn_offline::{ModelConfig, ModelSection, ThresholdKind, ThresholdSection, fit};

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
    /// Context channels: globs over column names (`'cmd*,*_sp'`): setpoints,
    /// commands, modes the model reads as inputs but never forecasts,
    /// scores, names in an alert or alarms on (model.toml's `[model]
    /// context`, which this replaces).
    #[arg(long, value_delimiter = ',')]
    context_columns: Option<Vec<String>>,
    /// model.toml (as `forewarn evaluate --config` reads it): its `[model]`
    /// (any kind), `[threshold]` and `[detector]` sections replace the
    /// model, training and threshold flags below.
    #[arg(long, conflicts_with_all = [
        "kind", "window", "horizon", "hidden", "layers", "encoder_hidden", "epochs",
        "learning_rate", "validation_fraction", "patience", "seed", "members", "recurrent_context",
        "threshold_quantile",
        "threshold_margin", "threshold_kind", "highway", "grid", "layout", "kernel", "filters",
    ])]
    config: Option<PathBuf>,
    /// Model name recorded in the artifact and in alerts [default:
    /// forecaster, or model.toml's].
    #[arg(long)]
    name: Option<String>,
    /// The network: forecaster (joint stacked LSTM forecasting the next
    /// batch), per_variable (one small LSTM encoder per channel merged
    /// into the joint LSTM), autoencoder (LSTM encoder-decoder scored by
    /// reconstruction error) or convlstm (stacked ConvLSTM cells over a
    /// grid of the channels, --grid). `serve` runs whichever the artifact
    /// holds.
    #[arg(long, value_enum, default_value_t = ModelSection::default().kind)]
    kind: ModelKind,
    /// Window length w: truncated-BPTT length and warm-up before scoring.
    #[arg(long, default_value_t = ModelSection::default().window)]
    window: usize,
    /// Readings per forecast batch (the autoencoder: per reconstructed window).
    #[arg(long, default_value_t = ModelSection::default().horizon)]
    horizon: usize,
    /// LSTM width (per_variable: the joint LSTM's; autoencoder: encoder and decoder).
    #[arg(long, default_value_t = ModelSection::default().hidden)]
    hidden: usize,
    /// Stacked LSTM layers (forecaster, per_variable).
    #[arg(long, default_value_t = ModelSection::default().layers)]
    layers: usize,
    /// per_variable: width of each channel's encoder.
    #[arg(long, default_value_t = ModelSection::default().encoder_hidden)]
    encoder_hidden: usize,
    /// Linear highway added to the network's output: none, full (every
    /// channel from every channel of the current row) or cross (each
    /// channel from the others; a single channel gets none). forecaster,
    /// per_variable and convlstm: added to the forecast of the next batch;
    /// autoencoder: to each row's reconstruction from the same row, cross
    /// only. Default: `forewarn evaluate`'s, full for the forecaster and
    /// convlstm (docs/ACCURACY.md), none for the other kinds. The gaussian
    /// threshold's margin is 2.0 with a highway, 1.5 without. With
    /// --config: model.toml's `[model] highway`.
    #[arg(long, value_enum)]
    highway: Option<Highway>,
    /// Whether the forecaster's LSTM reads the context channels too
    /// (`true`) or the monitored ones alone, the context reaching the
    /// forecast through the highway (`false`, the default: docs/ACCURACY.md,
    /// "Context in the recurrent network"). The other kinds always read it.
    #[arg(long)]
    recurrent_context: Option<bool>,
    #[command(flatten)]
    grid: forewarn_offline::config::GridFlags,
    #[arg(long, default_value_t = ModelSection::default().epochs)]
    epochs: usize,
    /// Adam's step size. Default: 5e-3, 1e-3 for convlstm.
    #[arg(long)]
    learning_rate: Option<f64>,
    /// Fraction of the data (its tail) held out for validation and the threshold.
    #[arg(long, default_value_t = ModelSection::default().validation_fraction)]
    validation_fraction: f64,
    /// Epochs without validation improvement before stopping.
    #[arg(long, default_value_t = ModelSection::default().patience)]
    patience: usize,
    /// Seed of the first network; the others' derive from it.
    #[arg(long, default_value_t = ModelSection::default().seed)]
    seed: u64,
    /// Networks trained from different seeds whose forecasts the model
    /// averages (an ensemble; 1 = a single network). Each costs its
    /// training time and its share of `serve`'s forecasting.
    #[arg(long, default_value_t = ModelSection::default().members)]
    members: usize,
    /// Detector strategy calibrated and stored in the artifact: fixed
    /// (quantile x margin of validation batch scores), gaussian (Malhotra's
    /// error model, F-beta threshold; docs/EVALUATION.md) or dynamic
    /// (telemanom).
    #[arg(long, value_enum, default_value_t = ThresholdSection::default().kind)]
    threshold_kind: ThresholdKind,
    /// Fixed threshold = quantile of validation batch errors x margin
    /// (always calibrated; also the gaussian fallback).
    #[arg(long, default_value_t = ThresholdSection::default().quantile)]
    threshold_quantile: f64,
    #[arg(long, default_value_t = ThresholdSection::default().margin)]
    threshold_margin: f64,
    /// auto, cpu, cuda or cuda:N [default: auto, or model.toml's].
    #[arg(long)]
    device: Option<String>,
}

impl TrainArgs {
    /// The model.toml these flags stand for (before [`ModelConfig::resolved`]).
    fn model_config(&self) -> ModelConfig {
        ModelConfig {
            model: ModelSection {
                kind: self.kind,
                name: self
                    .name
                    .clone()
                    .unwrap_or_else(|| ModelSection::default().name),
                hidden: self.hidden,
                layers: self.layers,
                encoder_hidden: self.encoder_hidden,
                horizon: self.horizon,
                window: self.window,
                epochs: self.epochs,
                learning_rate: self.learning_rate,
                validation_fraction: self.validation_fraction,
                patience: self.patience,
                seed: self.seed,
                members: self.members,
                highway: self.highway,
                recurrent_context: self.recurrent_context,
                context: self.context_columns.clone().unwrap_or_default(),
                device: self.device.clone().unwrap_or_else(|| "auto".into()),
                ..self.grid.section()
            },
            threshold: ThresholdSection {
                kind: self.threshold_kind,
                quantile: self.threshold_quantile,
                margin: self.threshold_margin,
                ..ThresholdSection::default()
            },
            ..ModelConfig::default()
        }
    }
}

pub fn run(a: TrainArgs) -> anyhow::Result<()> {
    if !a.sep.is_ascii() {
        bail!("--sep must be a single ASCII character");
    }
    let opts = CsvOptions {
        separator: Separator::Char(a.sep as u8),
        time_column: a.time_column.clone(),
        channels: a.channels.clone(),
        ignore_columns: a.ignore_columns.clone(),
        ..CsvOptions::default()
    };
    let cfg = match &a.config {
        Some(path) => {
            let mut file = ModelConfig::load(Some(path))?;
            if let Some(name) = &a.name {
                file.model.name = name.clone();
            }
            if let Some(d) = &a.device {
                file.model.device = d.clone();
            }
            if let Some(globs) = &a.context_columns {
                file.model.context = globs.clone();
            }
            file.resolved()?
        }
        None => a.model_config().resolved()?,
    };
    if cfg.model.threads > 0 {
        forewarn_model::set_threads(cfg.model.threads);
    }
    let device = forewarn_model::parse_device(&cfg.model.device)?;
    let data = read_joined(&a.data, &opts)?;
    eprintln!(
        "training the {}{} on {} rows x {} channels from {} file(s) on {}",
        cfg.model.kind,
        match cfg.model.members {
            1 => String::new(),
            n => format!(" ({n} members, forecasts averaged)"),
        },
        data.len(),
        data.channels.len(),
        a.data.len(),
        forewarn_model::describe_device(device)
    );
    let model = fit(&data, &cfg, &mut |p| crate::progress::print("", p))?;
    forewarn_model::save_model(&model, &a.out)
        .with_context(|| format!("saving model to {}", a.out.display()))?;
    let m = &model.meta;
    let strategy = m.strategy();
    println!(
        "model {} ({}) version {} -> {}\n  detector {} {} {:.6} (fixed: {:.6}, q{} x {} of {} validation batches)",
        m.name,
        m.kind,
        m.version,
        a.out.display(),
        strategy.kind(),
        // The dynamic threshold moves with each device's history; what
        // stays is its floor.
        if strategy.kind() == "dynamic" {
            "floor"
        } else {
            "threshold"
        },
        strategy.nominal_threshold(),
        m.threshold.value,
        m.threshold.rule.quantile,
        m.threshold.rule.margin,
        m.threshold.samples
    );
    Ok(())
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

    fn parse(extra: &[&str]) -> TrainArgs {
        let mut args = vec!["train", "--data", "x.csv", "--out", "m"];
        args.extend_from_slice(extra);
        Cli::try_parse_from(args).unwrap().train
    }

    /// No flags = an empty model.toml (evaluate's defaults), except the
    /// device; the highway follows the kind as in model.toml.
    #[test]
    fn defaults_are_evaluates() {
        let a = parse(&[]);
        let mut eval = ModelConfig::load(None).unwrap();
        eval.model.device = "auto".into();
        assert_eq!(a.model_config().resolved().unwrap(), eval);
        let tc = (a.model_config().resolved().unwrap().model)
            .train_settings()
            .unwrap();
        let m = ModelSection::default();
        assert_eq!(
            (
                tc.hidden,
                tc.horizon,
                tc.learning_rate,
                tc.validation_fraction
            ),
            (
                m.hidden,
                m.horizon,
                m.learning_rate(),
                m.validation_fraction
            )
        );
        assert_eq!(tc.highway, forewarn_model::Highway::Full);

        // convlstm's flags are model.toml's grid, layout, kernel and filters.
        let g = parse(&[
            "--kind",
            "convlstm",
            "--grid",
            "2x3",
            "--layout",
            "a,,b,c,d,e",
            "--kernel",
            "5",
            "--filters",
            "6",
        ])
        .model_config()
        .resolved()
        .unwrap();
        assert_eq!(g.model.kind, ModelKind::ConvLstm);
        assert_eq!(g.model.highway, Some(forewarn_model::Highway::Full));
        assert_eq!(g.model.grid, Some([2, 3]));
        assert_eq!(g.model.layout, ["a", "", "b", "c", "d", "e"]);
        assert_eq!((g.model.kernel, g.model.filters), (5, 6));
        for (flags, want) in [
            (&["--kind", "convlstm", "--grid", "8"][..], None),
            (
                &["--kind", "convlstm", "--kernel", "4"],
                Some("kernel must be odd"),
            ),
            (
                &["--grid", "1x2", "--layout", "a"],
                Some("layout has 1 cells"),
            ),
            (
                &["--kind", "convlstm", "--grid", "2x2", "--layout", "a,b"],
                Some("layout has 2 cells, grid [2, 2] has 4"),
            ),
        ] {
            let mut args = vec!["train", "--data", "x", "--out", "m"];
            args.extend_from_slice(flags);
            match (Cli::try_parse_from(args), want) {
                (Err(_), None) => {}
                (Ok(c), Some(want)) => {
                    let e = c.train.model_config().resolved().unwrap_err();
                    assert!(format!("{e:#}").contains(want), "{flags:?}: {e:#}");
                }
                (other, _) => panic!("{flags:?}: parsed {}", other.is_ok()),
            }
        }

        // --context-columns is model.toml's `[model] context`.
        let ctx = parse(&["--context-columns", "cmd*,mode"]).model_config();
        assert_eq!(ctx.model.context, vec!["cmd*".to_string(), "mode".into()]);
        assert_eq!(
            ctx.model.train_settings().unwrap().context,
            ctx.model.context
        );

        let none = parse(&["--highway", "none"])
            .model_config()
            .resolved()
            .unwrap();
        assert_eq!(none.model.highway, Some(forewarn_model::Highway::None));
        for kind in ["autoencoder", "per_variable", "per-variable"] {
            let c = parse(&["--kind", kind]).model_config().resolved().unwrap();
            assert_ne!(c.model.kind, ModelKind::Forecaster);
            assert_eq!(c.model.highway, Some(forewarn_model::Highway::None));
            let c = parse(&["--kind", kind, "--highway", "cross"])
                .model_config()
                .resolved()
                .unwrap();
            assert_eq!(c.model.highway, Some(forewarn_model::Highway::Cross));
        }
        parse(&["--kind", "per_variable", "--highway", "full"])
            .model_config()
            .resolved()
            .unwrap();
        let e = parse(&["--kind", "autoencoder", "--highway", "full"])
            .model_config()
            .resolved()
            .unwrap_err();
        assert!(format!("{e:#}").contains("identity"), "{e:#}");
        assert!(
            Cli::try_parse_from(["train", "--data", "x", "--out", "m", "--kind", "vae"]).is_err()
        );
        assert!(
            Cli::try_parse_from([
                "train",
                "--data",
                "x",
                "--out",
                "m",
                "--config",
                "m.toml",
                "--kind",
                "autoencoder"
            ])
            .is_err()
        );
    }

    /// 400 rows 1 s apart of two smooth channels; with `fault`, `a` jumps
    /// by 50 from row 300 on.
    fn write_csv(path: &std::path::Path, fault: bool) -> Vec<f32> {
        let mut s = String::from("time,a,b\n");
        let mut rows = Vec::new();
        for i in 0..400 {
            let noise = ((i * 7919) % 13) as f32 / 130.0;
            let mut a = (i as f32 * 0.2).sin() + noise;
            let b = (i as f32 * 0.2).cos() * 2.0 - noise;
            if fault && i >= 300 {
                a += 50.0;
            }
            s.push_str(&format!("{},{a},{b}\n", 1_767_225_600 + i));
            rows.extend([a, b]);
        }
        std::fs::write(path, s).unwrap();
        rows
    }

    /// Whether the alert is open after each scored batch, with its score.
    fn decisions(model: &mut forewarn_model::Model, rows: &[f32]) -> Vec<(usize, f64, bool)> {
        let detector = forewarn_core::DetectorConfig {
            open_after: 1,
            ..Default::default()
        };
        let engine = model.meta.engine_config(detector, 4);
        forewarn_offline::replay::decisions(&mut model.network, engine, rows)
            .unwrap()
            .into_iter()
            .map(|d| (d.start, d.score, d.open))
            .collect()
    }

    /// Every kind, with and without the cross highway, through `forewarn
    /// train` (flags and --config): the artifact records the kind, the
    /// highway and the calibrated strategy, and loaded back it decides
    /// every batch as the trained model did and catches the fault;
    /// old-style flags-free runs are the forecaster.
    #[test]
    fn every_kind_is_trained_stored_and_runs_as_trained() {
        forewarn_model::set_threads(1);
        let dir = tempfile::tempdir().unwrap();
        let normal = dir.path().join("normal.csv");
        let faulty = dir.path().join("faulty.csv");
        write_csv(&normal, false);
        let faulty_rows = write_csv(&faulty, true);
        let small = [
            "--time-column",
            "time",
            "--hidden",
            "8",
            "--layers",
            "1",
            "--encoder-hidden",
            "2",
            "--filters",
            "4",
            "--window",
            "20",
            "--epochs",
            "3",
            "--threshold-kind",
            "fixed",
            "--threshold-margin",
            "3.0",
            "--device",
            "cpu",
        ];
        for (kind, highway) in ModelKind::ALL
            .into_iter()
            .flat_map(|k| [(k, "none"), (k, "cross")])
        {
            // The fitted model, saved and loaded: the same decisions.
            let kind_highway = format!("{kind}-{highway}");
            let out = dir.path().join(&kind_highway);
            let mut flags = vec!["--kind", kind.as_str(), "--highway", highway];
            flags.extend_from_slice(&small);
            let a = parse(&flags);
            let cfg = a.model_config().resolved().unwrap();
            let data = read_joined(
                std::slice::from_ref(&normal),
                &CsvOptions {
                    time_column: Some("time".into()),
                    ..CsvOptions::default()
                },
            )
            .unwrap();
            let mut fitted = fit(&data, &cfg, &mut |_| {}).unwrap();
            forewarn_model::save_model(&fitted, &out).unwrap();
            let mut loaded = forewarn_model::load(&out, forewarn_model::Device::Cpu).unwrap();
            // Every float of model.json reads back exactly (float_roundtrip).
            assert_eq!(loaded.meta, fitted.meta, "{kind_highway}");
            assert_eq!(loaded.meta.kind, kind);
            assert_eq!(
                serde_json::to_value(loaded.meta.highway).unwrap(),
                highway,
                "{kind_highway}"
            );
            assert_eq!(loaded.meta.strategy().kind(), "fixed");
            let want = decisions(&mut fitted, &faulty_rows);
            let got = decisions(&mut loaded, &faulty_rows);
            assert_eq!(got, want, "{kind_highway}");
            // The 50-unit step from row 300 is caught at its first batch
            // and nothing before it is flagged.
            let first_open = got.iter().find(|d| d.2).map(|d| d.0);
            assert_eq!(first_open, Some(300), "{kind_highway}: {got:?}");
        }

        // The CLI: --kind, and --config with [model] kind.
        let out = dir.path().join("cli-autoencoder");
        let mut args = vec![
            "train",
            "--data",
            normal.to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
        ];
        args.extend_from_slice(&["--kind", "autoencoder", "--highway", "cross"]);
        args.extend_from_slice(&small);
        run(Cli::try_parse_from(&args).unwrap().train).unwrap();
        let m = forewarn_model::load(&out, forewarn_model::Device::Cpu).unwrap();
        assert_eq!(
            (m.meta.kind, m.meta.warmup, m.meta.layers, m.meta.highway),
            (ModelKind::Autoencoder, 0, 1, forewarn_model::Highway::Cross)
        );
        // A full highway on the autoencoder is a configuration error.
        let full: Vec<&str> = (args.iter())
            .map(|a| if *a == "cross" { "full" } else { a })
            .collect();
        let e = run(Cli::try_parse_from(full).unwrap().train).unwrap_err();
        assert!(format!("{e:#}").contains("identity"), "{e:#}");
        assert_eq!(m.meta.strategy().kind(), "fixed");

        let toml = dir.path().join("model.toml");
        std::fs::write(
            &toml,
            "[model]\nkind = \"per_variable\"\nencoder_hidden = 2\nhidden = 8\nlayers = 1\n\
             window = 20\nepochs = 3\nthreads = 1\nhighway = \"full\"\n\
             [threshold]\nkind = \"dynamic\"\n",
        )
        .unwrap();
        let out = dir.path().join("cli-per-variable");
        run(Cli::try_parse_from([
            "train",
            "--data",
            normal.to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
            "--time-column",
            "time",
            "--config",
            toml.to_str().unwrap(),
            "--name",
            "pv",
        ])
        .unwrap()
        .train)
        .unwrap();
        let m = forewarn_model::load(&out, forewarn_model::Device::Cpu).unwrap();
        assert_eq!(
            (m.meta.kind, m.meta.encoder_hidden, m.meta.highway),
            (
                ModelKind::PerVariable,
                Some(2),
                forewarn_model::Highway::Full
            )
        );
        assert_eq!(
            (m.meta.name.as_str(), m.meta.strategy().kind()),
            ("pv", "dynamic")
        );
        assert!(m.meta.version.starts_with("pv-"));
    }
}
