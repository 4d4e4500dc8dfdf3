//! `forewarn bench`'s arguments.

use std::path::PathBuf;
use std::time::Duration;

use forewarn_model::{Highway, Precision};

#[derive(clap::Args, Debug, Clone)]
pub struct BenchArgs {
    /// Kafka bootstrap servers; a local broker is started (scripts/broker.sh) when none listens.
    #[arg(long, default_value = "127.0.0.1:9092")]
    pub(crate) brokers: String,
    /// Devices in the preloaded topic.
    #[arg(long, default_value_t = 1000)]
    pub(crate) devices: usize,
    /// Readings preloaded (rounded up to a whole number per device).
    #[arg(long, default_value_t = 2_000_000)]
    pub(crate) readings: usize,
    /// The network benchmarked: the LSTM forecaster, or the convlstm over
    /// a grid (`--grid`; its channels are the grid's cells).
    #[arg(long, value_enum, default_value_t = BenchKind::Forecaster)]
    pub(crate) kind: BenchKind,
    /// Channels of the forecaster (convlstm: rows x cols of `--grid`).
    #[arg(long, default_value_t = 8)]
    pub(crate) channels: usize,
    /// convlstm only: the sensor grid, `ROWSxCOLS` (e.g. 8x8), one channel
    /// per cell.
    #[arg(long, value_parser = parse_grid)]
    pub(crate) grid: Option<[usize; 2]>,
    /// convlstm only: odd side of the gates' convolution [default: what
    /// `forewarn train` builds, 3].
    #[arg(long)]
    pub(crate) kernel: Option<usize>,
    /// convlstm only: hidden maps per layer [default: what `forewarn
    /// train` builds, 16].
    #[arg(long)]
    pub(crate) filters: Option<usize>,
    /// Hidden units per LSTM layer (the forecaster; convlstm: `--filters`).
    #[arg(long, default_value_t = 64)]
    pub(crate) hidden: usize,
    /// Stacked layers (LSTM layers, or convlstm cells).
    #[arg(long, default_value_t = 2)]
    pub(crate) layers: usize,
    /// The forecaster only: networks in the ensemble, each as wide as
    /// `--hidden`, whose forecasts are averaged (`forewarn train --members`).
    #[arg(long, default_value_t = 1)]
    pub(crate) members: usize,
    /// Readings per forecast batch.
    #[arg(long, default_value_t = 10)]
    pub(crate) horizon: usize,
    /// The linear highway of the forecaster or the convlstm: none, full or
    /// cross (what `forewarn train` builds by default for both).
    #[arg(long, value_enum, default_value_t = forewarn_offline::ModelSection::default().highway())]
    pub(crate) highway: Highway,
    /// Readings kept per device.
    #[arg(long, default_value_t = 50)]
    pub(crate) window: usize,
    /// Most devices per forecaster call (pipeline.max_batch).
    #[arg(long, default_value_t = 256)]
    pub(crate) max_batch: usize,
    /// libtorch intra-op threads; 0 = what serve picks (cores / 2, at least 1).
    #[arg(long, default_value_t = 0)]
    pub(crate) threads: usize,
    /// auto, cpu, cuda or cuda:N.
    #[arg(long, default_value = "auto")]
    pub(crate) device: String,
    /// Inference precision (serve's model.precision): f32, or bf16 for the
    /// LSTM; the roofline is then the bf16 GEMM rate.
    #[arg(long, default_value_t = Precision::F32)]
    pub(crate) precision: Precision,
    /// Partitions of the benchmark topics.
    #[arg(long, default_value_t = 8)]
    pub(crate) partitions: i32,
    /// Most seconds the Python peer runs.
    #[arg(long, default_value_t = 60)]
    pub(crate) peer_seconds: u64,
    #[arg(long)]
    pub(crate) skip_peer: bool,
    /// Seconds of paced load in the latency run.
    #[arg(long, default_value_t = 20)]
    pub(crate) latency_seconds: u64,
    #[arg(long)]
    pub(crate) skip_latency: bool,
    /// Readings/s offered in the latency run [default: half the measured
    /// end-to-end rate, the "half load"].
    #[arg(long)]
    pub(crate) latency_rate: Option<f64>,
    /// linger.ms of the latency run's producer (the plant gateway): how long
    /// it may hold a reading to batch it. Counted in the latency, since a
    /// reading's time is taken before it is handed to the producer.
    #[arg(long, default_value_t = 1)]
    pub(crate) latency_linger_ms: u32,
    /// Only the forecaster with synthetic batches (no broker): the GPU target.
    #[arg(long)]
    pub(crate) forecaster_only: bool,
    /// Seconds of the forecaster-only measurement.
    #[arg(long, default_value_t = 5)]
    pub(crate) forecaster_seconds: u64,
    /// Devices per call in the forecaster-only measurement (default: max_batch).
    #[arg(long)]
    pub(crate) forecaster_batch: Option<usize>,
    /// Extra librdkafka properties for every client of the run (kafka.client),
    /// e.g. `--client fetch.wait.max.ms=100`, or connection security
    /// (`--client security.protocol=SASL_SSL --client sasl.password_file=...`);
    /// repeatable. `FOREWARN_KAFKA__CLIENT__*` variables apply too; a flag wins.
    #[arg(long, value_parser = parse_key_value)]
    pub(crate) client: Vec<(String, String)>,
    /// Device-state checkpoint interval of the pipelines (kafka.checkpoint_interval;
    /// 0 turns checkpoints off). Default: what `serve` uses.
    #[arg(long, default_value = "5s", value_parser = humantime::parse_duration)]
    pub(crate) checkpoint_interval: Duration,
    /// Where alert stores of the runs go.
    #[arg(long, default_value = ".run/bench")]
    pub(crate) work_dir: PathBuf,
}

/// The network `forewarn bench` measures.
#[derive(clap::ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum BenchKind {
    Forecaster,
    Convlstm,
}

/// The convlstm's shape from the arguments.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct GridShape {
    pub(crate) rows: usize,
    pub(crate) cols: usize,
    pub(crate) kernel: usize,
    pub(crate) filters: usize,
}

impl BenchArgs {
    /// Checks that the flags fit `--kind`: `None` for the forecaster, the
    /// grid's shape for convlstm (whose channels are then `rows x cols`).
    /// The message names the flag.
    pub(crate) fn grid_shape(&self) -> Result<Option<GridShape>, String> {
        match self.kind {
            BenchKind::Forecaster => {
                for (flag, given) in [
                    ("--grid", self.grid.is_some()),
                    ("--kernel", self.kernel.is_some()),
                    ("--filters", self.filters.is_some()),
                ] {
                    if given {
                        return Err(format!(
                            "{flag} is for --kind convlstm; the forecaster's shape is --channels and --hidden"
                        ));
                    }
                }
                Ok(None)
            }
            BenchKind::Convlstm => {
                let [rows, cols] = self.grid.ok_or(
                    "--kind convlstm needs --grid ROWSxCOLS (e.g. --grid 8x8): its channels are the grid's cells",
                )?;
                let d = forewarn_offline::ModelSection::default();
                let kernel = self.kernel.unwrap_or(d.kernel);
                if kernel.is_multiple_of(2) {
                    return Err(format!("--kernel {kernel} must be odd (\"same\" padding)"));
                }
                Ok(Some(GridShape {
                    rows,
                    cols,
                    kernel,
                    filters: self.filters.unwrap_or(d.filters),
                }))
            }
        }
    }

    /// These arguments with `defaults` (e.g. from the environment) before
    /// the `--client` flags, which win.
    pub fn with_client_defaults(mut self, defaults: Vec<(String, String)>) -> Self {
        let flags = std::mem::take(&mut self.client);
        self.client = defaults.into_iter().chain(flags).collect();
        self
    }
}

/// `ROWSxCOLS`, both at least 1.
pub(crate) fn parse_grid(s: &str) -> Result<[usize; 2], String> {
    let bad = || format!("expected ROWSxCOLS with both at least 1 (e.g. 8x8), got {s:?}");
    let (r, c) = s.trim().split_once(['x', 'X']).ok_or_else(bad)?;
    let side = |v: &str| v.trim().parse::<usize>().ok().filter(|&n| n > 0);
    Ok([side(r).ok_or_else(bad)?, side(c).ok_or_else(bad)?])
}

pub(crate) fn parse_key_value(s: &str) -> Result<(String, String), String> {
    s.split_once('=')
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .ok_or_else(|| format!("expected key=value, got {s:?}"))
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        bench: BenchArgs,
    }

    fn parse(flags: &[&str]) -> Result<BenchArgs, String> {
        Cli::try_parse_from(std::iter::once("bench").chain(flags.iter().copied()))
            .map(|c| c.bench)
            .map_err(|e| e.to_string())
    }

    #[test]
    fn grids_parse_as_rows_by_cols() {
        for (input, expected) in [
            ("8x8", Ok([8, 8])),
            ("4X16", Ok([4, 16])),
            (" 2 x 3 ", Ok([2, 3])),
            ("8", Err(())),
            ("0x8", Err(())),
            ("8x", Err(())),
            ("axb", Err(())),
            ("-1x8", Err(())),
        ] {
            assert_eq!(parse_grid(input).map_err(|_| ()), expected, "{input}");
        }
    }

    #[test]
    fn the_flags_must_fit_the_kind() {
        let shape = |flags: &[&str]| parse(flags).and_then(|a| a.grid_shape());
        // The default is the forecaster, as before.
        assert_eq!(shape(&[]), Ok(None));
        assert_eq!(parse(&[]).map(|a| a.kind), Ok(BenchKind::Forecaster));
        // convlstm with the product's kernel and filters unless given.
        assert_eq!(
            shape(&["--kind", "convlstm", "--grid", "8x8"]),
            Ok(Some(GridShape {
                rows: 8,
                cols: 8,
                kernel: 3,
                filters: 16
            }))
        );
        assert_eq!(
            shape(&[
                "--kind",
                "convlstm",
                "--grid",
                "4x6",
                "--kernel",
                "5",
                "--filters",
                "8"
            ]),
            Ok(Some(GridShape {
                rows: 4,
                cols: 6,
                kernel: 5,
                filters: 8
            }))
        );
        let refused = [
            (&["--grid", "8x8"][..], "--grid is for --kind convlstm"),
            (&["--kernel", "3"][..], "--kernel is for --kind convlstm"),
            (&["--filters", "16"][..], "--filters is for --kind convlstm"),
            (&["--kind", "convlstm"][..], "--kind convlstm needs --grid"),
            (
                &["--kind", "convlstm", "--grid", "8x8", "--kernel", "4"][..],
                "--kernel 4 must be odd",
            ),
        ];
        for (flags, message) in refused {
            let err = shape(flags).expect_err(message);
            assert!(err.contains(message), "{flags:?}: {err}");
        }
        assert!(parse(&["--kind", "convlstm", "--grid", "8by8"]).is_err());
        assert!(parse(&["--kind", "lstm"]).is_err());
    }
}
