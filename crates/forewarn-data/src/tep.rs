//! The Tennessee Eastman process benchmark's files (`../shared/data/tep`):
//! whitespace-separated numbers, 52 variables (`xmeas_1..xmeas_41`,
//! `xmv_1..xmv_11`) sampled every 3 minutes. `d00.dat` is stored
//! transposed (52 rows x 500 samples) and is turned back.

use std::path::Path;

use crate::dataset::Dataset;
use crate::error::DataError;
use crate::table::{CsvOptions, Header, Separator, parse};

/// Number of variables in a sample.
pub const CHANNELS: usize = 52;
/// Sampling interval: 3 minutes.
pub const SAMPLE_MS: i64 = 180_000;
/// In the `dNN_te.dat` test runs the fault starts at this sample.
pub const TEST_FAULT_START: usize = 160;

/// The variables' names: `xmeas_1..xmeas_41, xmv_1..xmv_11`.
pub fn channels() -> Vec<String> {
    (1..=41)
        .map(|i| format!("xmeas_{i}"))
        .chain((1..=11).map(|i| format!("xmv_{i}")))
        .collect()
}

/// The process disturbances `IDV(1)`..`IDV(21)` (Downs and Vogel, 1993;
/// Chiang et al., 2001): what a fault class of the benchmark is called.
const FAULTS: [&str; 21] = [
    "A/C feed ratio, B composition constant (step)",
    "B composition, A/C ratio constant (step)",
    "D feed temperature (step)",
    "reactor cooling water inlet temperature (step)",
    "condenser cooling water inlet temperature (step)",
    "A feed loss (step)",
    "C header pressure loss (step)",
    "A, B, C feed composition (random variation)",
    "D feed temperature (random variation)",
    "C feed temperature (random variation)",
    "reactor cooling water inlet temperature (random variation)",
    "condenser cooling water inlet temperature (random variation)",
    "reaction kinetics (slow drift)",
    "reactor cooling water valve (sticking)",
    "condenser cooling water valve (sticking)",
    "unknown",
    "unknown",
    "unknown",
    "unknown",
    "unknown",
    "valve for stream 4 fixed at steady-state position",
];

/// The name of class `n` of the benchmark's labels: `normal` for 0,
/// `IDV(n) <description>` for a fault; `None` past the 21 faults.
pub fn fault_name(n: u8) -> Option<String> {
    match n {
        0 => Some("normal".into()),
        _ => FAULTS
            .get(usize::from(n) - 1)
            .map(|d| format!("IDV({n}) {d}")),
    }
}

/// Reads a Tennessee Eastman `.dat` file: samples x variables, or
/// variables x samples (52 rows of more than 52 columns), turned back.
/// Sample `i` gets timestamp `i * 3 min` from epoch 0.
///
/// Labels follow the benchmark's file naming: `d00*.dat` is normal (all
/// 0); `dNN.dat` are fault runs recorded after the fault started (all
/// `NN`); in `dNN_te.dat` the fault starts at sample 160 (0 before, `NN`
/// from there). Other names get no labels.
pub fn read_tep(path: &Path) -> Result<Dataset, DataError> {
    let text = std::fs::read_to_string(path).map_err(|e| DataError::io(path, e))?;
    let opts = CsvOptions {
        separator: Separator::Whitespace,
        header: Header::Absent,
        ..CsvOptions::default()
    };
    let (d, _) = parse(path, text.as_bytes(), &opts)?;
    let mut d = orient(d);
    if d.n_channels() != CHANNELS {
        return Err(DataError::data(
            path,
            format!(
                "expected {CHANNELS} variables per sample, found a {} x {} table",
                d.len(),
                d.n_channels()
            ),
        ));
    }
    let samples = d.len();
    d.timestamps = Some((0..samples as i64).map(|i| i * SAMPLE_MS).collect());
    d.labels = labels(path, samples);
    Ok(d)
}

/// A table read without a header, in the benchmark's shape: 52 columns
/// get the variables' names, and 52 rows of more than 52 columns (variables
/// x samples, as `d00.dat` is stored) are turned back first. Any other
/// table is left as it is.
pub fn orient(d: Dataset) -> Dataset {
    let (height, width) = (d.len(), d.n_channels());
    if height == CHANNELS && width > CHANNELS {
        let mut rows = Vec::with_capacity(d.rows.len());
        for s in 0..width {
            rows.extend((0..height).map(|var| d.rows[var * width + s]));
        }
        Dataset {
            channels: channels(),
            rows,
            ..d
        }
    } else if width == CHANNELS {
        Dataset {
            channels: channels(),
            ..d
        }
    } else {
        d
    }
}

fn labels(path: &Path, samples: usize) -> Option<Vec<u8>> {
    let stem = path.file_stem()?.to_str()?;
    let (num, test) = match stem.strip_suffix("_te") {
        Some(n) => (n.strip_prefix('d')?, true),
        None => (stem.strip_prefix('d')?, false),
    };
    if num.len() != 2 {
        return None;
    }
    // The fault number, not just 1: non-zero still marks an anomalous row
    // for `evaluate`, and `classify` learns which fault.
    let fault: u8 = num.parse().ok()?;
    Some(
        (0..samples)
            .map(|i| {
                if !test || i >= TEST_FAULT_START {
                    fault
                } else {
                    0
                }
            })
            .collect(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::files::read_any;
    use std::io::Write;

    fn tep(name: &str) -> std::path::PathBuf {
        Path::new(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../../shared/data/tep"
        ))
        .join(name)
    }

    fn message(r: Result<Dataset, DataError>) -> String {
        r.expect_err("should fail").to_string()
    }

    #[test]
    fn tep_files_are_oriented_and_labelled() {
        let d00 = read_tep(&tep("d00.dat")).unwrap();
        assert_eq!((d00.len(), d00.n_channels()), (500, 52));
        assert_eq!(d00.channels[0], "xmeas_1");
        assert_eq!(d00.channels[40], "xmeas_41");
        assert_eq!(d00.channels[41], "xmv_1");
        assert_eq!(d00.channels[51], "xmv_11");
        // First value in the file is variable 1 of sample 1; the second
        // number on the first line is variable 1 of sample 2.
        assert_eq!(d00.row(0)[0], 0.24987);
        assert_eq!(d00.row(1)[0], 0.25118);
        assert_eq!(d00.timestamps.as_ref().unwrap()[2], 2 * SAMPLE_MS);
        assert!(d00.labels.as_ref().unwrap().iter().all(|&l| l == 0));
        // xmeas_7 (reactor pressure) sits near 2705 kPa throughout.
        assert!((0..500).all(|i| (2_600.0..2_800.0).contains(&d00.row(i)[6])));

        let te = read_any(&tep("d01_te.dat"), &CsvOptions::default()).unwrap();
        assert_eq!((te.len(), te.n_channels()), (960, 52));
        // First line: 2.5025e-01 3.6572e+03 4.5201e+03 …
        assert_eq!(&te.row(0)[..3], &[0.25025, 3657.2, 4520.1]);
        let labels = te.labels.unwrap();
        assert_eq!((labels[159], labels[160], labels[959]), (0, 1, 1));

        let train = read_tep(&tep("d01.dat")).unwrap();
        assert_eq!(train.len(), 480);
        assert!(train.labels.unwrap().iter().all(|&l| l == 1));
        assert_eq!(fault_name(0).as_deref(), Some("normal"));
        assert_eq!(fault_name(6).as_deref(), Some("IDV(6) A feed loss (step)"));
        assert_eq!(fault_name(22), None);
        // Labels carry the fault number.
        let l13 = read_tep(&tep("d13_te.dat")).unwrap().labels.unwrap();
        assert_eq!((l13[159], l13[160]), (0, 13));
        let l21 = read_tep(&tep("d21.dat")).unwrap().labels.unwrap();
        assert!(l21.iter().all(|&l| l == 21));
    }

    #[test]
    fn tep_errors() {
        let mut f = tempfile::Builder::new().suffix(".dat").tempfile().unwrap();
        f.write_all(b"1 2 3\n4 5\n").unwrap();
        let m = message(read_tep(f.path()));
        assert!(m.contains("line 2") && m.contains("ragged"), "{m}");
        let mut f = tempfile::Builder::new().suffix(".dat").tempfile().unwrap();
        f.write_all(b"1 2 3\n4 5 6\n").unwrap();
        assert!(message(read_tep(f.path())).contains("2 x 3"));
    }
}
