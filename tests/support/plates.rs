//! Simulated heated plates (`forewarn simulate --grid`) and a `convlstm`
//! artifact trained on them with the real `forewarn train`: a model whose
//! alerts name grid cells.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, bail, ensure};

use crate::forewarn_bin;

/// The plate grid the helpers simulate and train on: rows x cols.
pub const PLATE_GRID: (usize, usize) = (4, 4);

/// The plate set written by [`simulate_plates`]: one plate (`plate-0000`),
/// its fault-free training half and its test half with one fault.
pub struct Plates {
    pub train: PathBuf,
    pub test: PathBuf,
}

/// `forewarn simulate --grid 4x4 --devices 1 --period 10s --count
/// <count> --seed <seed> --grid-faults-random 1 --csv-dir dir/plates`:
/// `count` fault-free readings to train on and `count` more, with one
/// fault (a hot spot, the first kind in turn), to serve.
pub fn simulate_plates(dir: &Path, count: usize, seed: u64) -> anyhow::Result<Plates> {
    let out_dir = dir.join("plates");
    let (rows, cols) = PLATE_GRID;
    let out = Command::new(forewarn_bin())
        .arg("simulate")
        .args(["--grid", &format!("{rows}x{cols}")])
        .args(["--devices", "1", "--period", "10s"])
        .args(["--count", &count.to_string(), "--seed", &seed.to_string()])
        .args(["--grid-faults-random", "1", "--csv-dir"])
        .arg(&out_dir)
        .output()?;
    ensure!(
        out.status.success(),
        "forewarn simulate failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let plates = Plates {
        train: out_dir.join("train/plate-0000.csv"),
        test: out_dir.join("test/plate-0000.csv"),
    };
    ensure!(
        plates.train.exists() && plates.test.exists(),
        "simulate wrote no plate CSVs under {}",
        out_dir.display()
    );
    Ok(plates)
}

/// Trains a small `convlstm` on `train` (a plate CSV) into `dir/model`
/// from a model.toml (`[model] kind = "convlstm"`, `grid = [4, 4]`), the
/// heaters as context channels and the simulator's labels ignored; a few
/// seconds on CPU. Returns the model folder.
pub fn train_plate_model(dir: &Path, train: &Path) -> anyhow::Result<PathBuf> {
    // At the convlstm's learning rate (1e-3) its highway needs more than a
    // few epochs: at 5 the model raises no alert on the simulated fault.
    train_plate_model_epochs(dir, train, 15)
}

/// [`train_plate_model`] for `epochs` epochs: fewer train faster, and
/// other weights give another model version.
pub fn train_plate_model_epochs(
    dir: &Path,
    train: &Path,
    epochs: usize,
) -> anyhow::Result<PathBuf> {
    let (rows, cols) = PLATE_GRID;
    train_plates(
        dir,
        train,
        &format!(
            "[model]\nkind = \"convlstm\"\nname = \"plates\"\ngrid = [{rows}, {cols}]\n\
             filters = 8\nwindow = 30\nepochs = {epochs}\ndevice = \"cpu\"\nthreads = 2\n"
        ),
    )
}

/// Trains the default `forecaster` on `train` into `dir/model`, its data
/// on the plate's grid (`[model] grid = [4, 4]`, so its alerts name cells)
/// and a fixed threshold (the dynamic one stays quiet on the simulated
/// hot spot); the heaters are context channels. About 5 s on CPU, a fifth
/// of [`train_plate_model`]. Returns the model folder.
pub fn train_plate_forecaster(dir: &Path, train: &Path) -> anyhow::Result<PathBuf> {
    let (rows, cols) = PLATE_GRID;
    train_plates(
        dir,
        train,
        &format!(
            "[model]\nname = \"plates\"\ngrid = [{rows}, {cols}]\n\
             window = 30\nepochs = 5\ndevice = \"cpu\"\nthreads = 2\n\
             [threshold]\nkind = \"fixed\"\n"
        ),
    )
}

/// `forewarn train` on a plate CSV with `model_toml`, the heaters as
/// context channels and the simulator's labels ignored.
fn train_plates(dir: &Path, train: &Path, model_toml: &str) -> anyhow::Result<PathBuf> {
    let config = dir.join("plates-model.toml");
    std::fs::write(&config, model_toml)?;
    let model = dir.join("model");
    let out = Command::new(forewarn_bin())
        .args(["train", "--data"])
        .arg(train)
        .arg("--out")
        .arg(&model)
        .args(["--time-column", "ts"])
        .args(["--ignore-columns", "anomaly,fault_row,fault_col"])
        .args(["--context-columns", "heater_*"])
        .arg("--config")
        .arg(&config)
        .output()?;
    if !out.status.success() {
        bail!(
            "forewarn train (plates) failed:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(model)
}

/// A plate CSV read back: the channels (cells, then heaters, as the model
/// reads them), and per row its time, values and the acting fault's cell.
pub struct PlateRows {
    pub channels: Vec<String>,
    pub rows: Vec<PlateRow>,
}

pub struct PlateRow {
    pub ts: i64,
    pub values: Vec<f32>,
    /// `(row, col)` of the fault acting on this reading, if any.
    pub fault: Option<(usize, usize)>,
}

impl PlateRows {
    pub fn read(csv: &Path) -> anyhow::Result<Self> {
        let text = std::fs::read_to_string(csv).with_context(|| csv.display().to_string())?;
        let mut lines = text.lines();
        let header: Vec<&str> = lines
            .next()
            .context("empty plate CSV")?
            .split(',')
            .collect();
        let col = |name: &str| {
            header
                .iter()
                .position(|h| *h == name)
                .with_context(|| format!("no {name} column in {}", csv.display()))
        };
        let (ts, fr, fc) = (col("ts")?, col("fault_row")?, col("fault_col")?);
        let skip = [ts, col("anomaly")?, fr, fc];
        let channel_idx: Vec<usize> = (0..header.len()).filter(|i| !skip.contains(i)).collect();
        let channels = channel_idx.iter().map(|&i| header[i].to_string()).collect();
        let mut rows = Vec::new();
        for line in lines {
            let f: Vec<&str> = line.split(',').collect();
            let (r, c): (i64, i64) = (f[fr].parse()?, f[fc].parse()?);
            rows.push(PlateRow {
                ts: f[ts].parse()?,
                values: channel_idx
                    .iter()
                    .map(|&i| f[i].parse::<f32>())
                    .collect::<Result<_, _>>()?,
                fault: (r >= 0 && c >= 0).then_some((r as usize, c as usize)),
            });
        }
        Ok(Self { channels, rows })
    }

    /// Every row as a keyed reading of `device` (cells and heaters: the
    /// heaters are context channels the model reads as inputs).
    pub fn messages(&self, device: &str) -> Vec<(String, Vec<u8>)> {
        self.rows
            .iter()
            .map(|r| {
                (
                    device.to_string(),
                    forewarn_core::reading::encode_reading(device, r.ts, &r.values),
                )
            })
            .collect()
    }

    /// The injected fault: its cell and the span (epoch ms) it acts.
    pub fn fault(&self) -> Option<((usize, usize), i64, i64)> {
        let acting: Vec<&PlateRow> = self.rows.iter().filter(|r| r.fault.is_some()).collect();
        let first = acting.first()?;
        Some((first.fault?, first.ts, acting.last()?.ts))
    }
}
