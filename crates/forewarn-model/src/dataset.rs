//! Training and evaluation data: CSV files and the Tennessee Eastman `.dat`
//! files, loaded into one row-major table.
//!
//! Loading is strict: a value that cannot be used is an error naming the
//! file, line and column, never a silent NaN or a skipped row. A model
//! trained on quietly corrupted data fails in production, far from the cause.

use std::collections::{HashMap, HashSet};
use std::fs::File;
use std::io::BufReader;
use std::ops::Range;
use std::path::Path;

use chrono::{DateTime, NaiveDateTime};
use sha2::{Digest, Sha256};

use crate::error::ModelError;

/// Number of variables in a Tennessee Eastman sample.
pub const TEP_CHANNELS: usize = 52;
/// Tennessee Eastman sampling interval (3 minutes).
pub const TEP_SAMPLE_MS: i64 = 180_000;
/// In the `dNN_te.dat` test runs the fault starts at this sample.
pub const TEP_TEST_FAULT_START: usize = 160;

/// Epoch values below this are seconds, at or above it milliseconds
/// (1e11 s is the year 5138; 1e11 ms is 1973).
const EPOCH_SECONDS_BELOW: f64 = 1e11;

#[derive(Debug, Clone, PartialEq)]
pub struct Dataset {
    pub channels: Vec<String>,
    /// Row-major, `len() x channels.len()`.
    pub rows: Vec<f32>,
    /// Milliseconds since the Unix epoch, one per row.
    pub timestamps: Option<Vec<i64>>,
    /// One per row; non-zero marks an anomalous row (its value may name the
    /// class: TEP files carry their fault number).
    pub labels: Option<Vec<u8>>,
    /// Where the data came from (a path), for messages and provenance.
    pub source: String,
}

impl Dataset {
    /// Number of rows.
    pub fn len(&self) -> usize {
        if self.channels.is_empty() {
            0
        } else {
            self.rows.len() / self.channels.len()
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn n_channels(&self) -> usize {
        self.channels.len()
    }

    pub fn row(&self, i: usize) -> &[f32] {
        let c = self.channels.len();
        &self.rows[i * c..(i + 1) * c]
    }

    /// SHA-256 (hex) of the channel names and values: identifies the data a
    /// model was trained on. Lengths are hashed too, so different splits of
    /// the same bytes cannot collide; timestamps and labels are not part of
    /// it (the model never sees them).
    pub fn sha256(&self) -> String {
        let mut h = Sha256::new();
        h.update(b"forewarn-dataset-v1\0");
        h.update((self.channels.len() as u64).to_le_bytes());
        for name in &self.channels {
            h.update((name.len() as u64).to_le_bytes());
            h.update(name.as_bytes());
        }
        h.update((self.rows.len() as u64).to_le_bytes());
        for v in &self.rows {
            h.update(v.to_le_bytes());
        }
        hex::encode(h.finalize())
    }

    /// The rows in `range` (timestamps and labels follow).
    pub fn slice(&self, range: Range<usize>) -> Dataset {
        let c = self.channels.len();
        Dataset {
            channels: self.channels.clone(),
            rows: self.rows[range.start * c..range.end * c].to_vec(),
            timestamps: self.timestamps.as_ref().map(|t| t[range.clone()].to_vec()),
            labels: self.labels.as_ref().map(|l| l[range.clone()].to_vec()),
            source: self.source.clone(),
        }
    }

    /// The same rows with exactly `names` as channels, in that order (a
    /// model's schema). Extra channels are dropped; missing ones are an error.
    pub fn select_channels(&self, names: &[String]) -> Result<Dataset, ModelError> {
        let index: HashMap<&str, usize> = self
            .channels
            .iter()
            .enumerate()
            .map(|(i, n)| (n.as_str(), i))
            .collect();
        let missing: Vec<&str> = names
            .iter()
            .filter(|n| !index.contains_key(n.as_str()))
            .map(String::as_str)
            .collect();
        if !missing.is_empty() {
            return Err(ModelError::data(
                &self.source,
                format!("missing channel(s) the model needs: {}", missing.join(", ")),
            ));
        }
        let cols: Vec<usize> = names.iter().map(|n| index[n.as_str()]).collect();
        let mut rows = Vec::with_capacity(self.len() * cols.len());
        for i in 0..self.len() {
            let row = self.row(i);
            rows.extend(cols.iter().map(|&j| row[j]));
        }
        Ok(Dataset {
            channels: names.to_vec(),
            rows,
            timestamps: self.timestamps.clone(),
            labels: self.labels.clone(),
            source: self.source.clone(),
        })
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CsvOptions {
    pub delimiter: u8,
    /// Column with timestamps (RFC 3339, `YYYY-MM-DD HH:MM:SS` as UTC, or
    /// integer epoch seconds/milliseconds).
    pub time_column: Option<String>,
    /// Channels to load, in this order; `None` = every column that is not
    /// the time, label or an ignored column.
    pub channels: Option<Vec<String>>,
    /// Columns to skip when `channels` is `None`; names not in the file
    /// are allowed (one option set can serve several exports).
    pub ignore_columns: Vec<String>,
    /// Column with 0/1 (or true/false) anomaly labels.
    pub label_column: Option<String>,
    /// Without a header, columns are named `c0`, `c1`, ...
    pub has_header: bool,
}

impl Default for CsvOptions {
    fn default() -> Self {
        Self {
            delimiter: b',',
            time_column: None,
            channels: None,
            ignore_columns: vec![],
            label_column: None,
            has_header: true,
        }
    }
}

/// `.dat` files are read as Tennessee Eastman data, anything else as CSV.
pub fn read_any(path: &Path, opts: &CsvOptions) -> Result<Dataset, ModelError> {
    if path
        .extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("dat"))
    {
        read_tep(path)
    } else {
        read_csv(path, opts)
    }
}

/// Reads a delimited text file with one row per sample.
pub fn read_csv(path: &Path, opts: &CsvOptions) -> Result<Dataset, ModelError> {
    let file = File::open(path).map_err(|e| ModelError::io(path, e))?;
    let mut reader = csv::ReaderBuilder::new()
        .delimiter(opts.delimiter)
        // The header is handled here so every record keeps its line number
        // and ragged rows get our message rather than csv's.
        .has_headers(false)
        .flexible(true)
        .trim(csv::Trim::All)
        .from_reader(BufReader::new(file));
    let mut records = reader.records();
    let csv_err = |e: csv::Error| match e.position() {
        Some(pos) => ModelError::Parse {
            path: path.to_owned(),
            line: pos.line(),
            column: String::new(),
            message: e.to_string(),
        },
        None => ModelError::data(path, e.to_string()),
    };

    let first = match records.next() {
        Some(r) => r.map_err(csv_err)?,
        None => return Err(ModelError::data(path, "empty file: no header and no rows")),
    };
    let names: Vec<String> = if opts.has_header {
        first.iter().map(str::to_owned).collect()
    } else {
        (0..first.len()).map(|i| format!("c{i}")).collect()
    };
    let layout = Layout::resolve(path, &names, opts)?;

    let mut table = Table::default();
    if !opts.has_header {
        table.push(path, &layout, &names, &first)?;
    }
    for record in records {
        table.push(path, &layout, &names, &record.map_err(csv_err)?)?;
    }
    if table.rows.is_empty() {
        return Err(ModelError::data(path, "no data rows"));
    }
    Ok(Dataset {
        channels: layout.channels.iter().map(|&j| names[j].clone()).collect(),
        rows: table.rows,
        timestamps: layout.time.map(|_| table.timestamps),
        labels: layout.label.map(|_| table.labels),
        source: path.display().to_string(),
    })
}

/// Which file column feeds what.
struct Layout {
    channels: Vec<usize>,
    time: Option<usize>,
    label: Option<usize>,
}

impl Layout {
    fn resolve(path: &Path, names: &[String], opts: &CsvOptions) -> Result<Self, ModelError> {
        let mut index = HashMap::new();
        for (i, n) in names.iter().enumerate() {
            if n.is_empty() {
                return Err(ModelError::data(
                    path,
                    format!("header: column {} has an empty name", i + 1),
                ));
            }
            if index.insert(n.as_str(), i).is_some() {
                return Err(ModelError::data(
                    path,
                    format!("header: column {n:?} appears more than once"),
                ));
            }
        }
        let find = |role: &str, name: &str| {
            index.get(name).copied().ok_or_else(|| {
                ModelError::data(
                    path,
                    format!(
                        "{role} column {name:?} not found; columns are: {}",
                        names.join(", ")
                    ),
                )
            })
        };
        let time = opts
            .time_column
            .as_deref()
            .map(|n| find("time", n))
            .transpose()?;
        let label = opts
            .label_column
            .as_deref()
            .map(|n| find("label", n))
            .transpose()?;
        let channels = match &opts.channels {
            Some(wanted) => {
                let mut seen = HashSet::new();
                let mut cols = Vec::with_capacity(wanted.len());
                for n in wanted {
                    let j = find("channel", n)?;
                    if Some(j) == time || Some(j) == label {
                        return Err(ModelError::data(
                            path,
                            format!("column {n:?} cannot be both a channel and the time/label"),
                        ));
                    }
                    if !seen.insert(j) {
                        return Err(ModelError::data(
                            path,
                            format!("channel {n:?} is listed twice"),
                        ));
                    }
                    cols.push(j);
                }
                cols
            }
            None => (0..names.len())
                .filter(|&j| {
                    Some(j) != time
                        && Some(j) != label
                        && !opts.ignore_columns.iter().any(|c| *c == names[j])
                })
                .collect(),
        };
        if channels.is_empty() {
            return Err(ModelError::data(path, "no channel columns to load"));
        }
        Ok(Self {
            channels,
            time,
            label,
        })
    }
}

#[derive(Default)]
struct Table {
    rows: Vec<f32>,
    timestamps: Vec<i64>,
    labels: Vec<u8>,
}

impl Table {
    fn push(
        &mut self,
        path: &Path,
        layout: &Layout,
        names: &[String],
        record: &csv::StringRecord,
    ) -> Result<(), ModelError> {
        let line = record.position().map_or(0, csv::Position::line);
        let err = |column: String, message: String| ModelError::Parse {
            path: path.to_owned(),
            line,
            column,
            message,
        };
        if record.len() != names.len() {
            let column = names
                .get(record.len())
                .cloned()
                .unwrap_or_else(|| format!("<field {}>", names.len() + 1));
            return Err(err(
                column,
                format!(
                    "ragged row: expected {} fields, found {}",
                    names.len(),
                    record.len()
                ),
            ));
        }
        for &j in &layout.channels {
            let v = parse_value(&record[j]).map_err(|m| err(names[j].clone(), m))?;
            self.rows.push(v);
        }
        if let Some(j) = layout.time {
            let t = parse_time(&record[j]).map_err(|m| err(names[j].clone(), m))?;
            self.timestamps.push(t);
        }
        if let Some(j) = layout.label {
            let l = parse_label(&record[j]).map_err(|m| err(names[j].clone(), m))?;
            self.labels.push(l);
        }
        Ok(())
    }
}

fn parse_value(s: &str) -> Result<f32, String> {
    if s.is_empty() {
        return Err("empty value".into());
    }
    match s.parse::<f32>() {
        Ok(v) if v.is_finite() => Ok(v),
        Ok(_) => Err(format!("value {s:?} is not finite")),
        Err(_) => Err(format!("cannot parse {s:?} as a number")),
    }
}

/// RFC 3339 / ISO 8601 (naive times are UTC), `YYYY-MM-DD HH:MM:SS`, or
/// integer/decimal epoch: seconds below 1e11, milliseconds above.
pub fn parse_time(s: &str) -> Result<i64, String> {
    if let Ok(i) = s.parse::<i64>() {
        return Ok(if (i.unsigned_abs() as f64) < EPOCH_SECONDS_BELOW {
            i * 1000
        } else {
            i
        });
    }
    if let Ok(f) = s.parse::<f64>()
        && f.is_finite()
    {
        let ms = if f.abs() < EPOCH_SECONDS_BELOW {
            f * 1000.0
        } else {
            f
        };
        return Ok(ms.round() as i64);
    }

    if let Ok(t) = DateTime::parse_from_rfc3339(s) {
        return Ok(t.timestamp_millis());
    }
    for fmt in ["%Y-%m-%d %H:%M:%S%.f%:z", "%Y-%m-%d %H:%M:%S%.f%z"] {
        if let Ok(t) = DateTime::parse_from_str(s, fmt) {
            return Ok(t.timestamp_millis());
        }
    }
    for fmt in [
        "%Y-%m-%dT%H:%M:%S%.f",
        "%Y-%m-%d %H:%M:%S%.f",
        "%Y-%m-%dT%H:%M",
        "%Y-%m-%d %H:%M",
    ] {
        if let Ok(t) = NaiveDateTime::parse_from_str(s, fmt) {
            return Ok(t.and_utc().timestamp_millis());
        }
    }
    Err(format!(
        "cannot parse {s:?} as a time (RFC 3339, \"YYYY-MM-DD HH:MM:SS\" or epoch seconds/ms)"
    ))
}

fn parse_label(s: &str) -> Result<u8, String> {
    match s.to_ascii_lowercase().as_str() {
        "true" => return Ok(1),
        "false" => return Ok(0),
        _ => {}
    }
    if let Ok(v) = s.parse::<u8>() {
        return Ok(v);
    }
    match s.parse::<f64>() {
        Ok(v) if v.fract() == 0.0 && (0.0..=255.0).contains(&v) => Ok(v as u8),
        _ => Err(format!(
            "cannot parse {s:?} as a label (0/1, an integer 0-255 or true/false)"
        )),
    }
}

/// Reads a Tennessee Eastman `.dat` file (whitespace-separated numbers).
///
/// `d00.dat` is stored transposed (52 rows x 500 columns); the others are
/// samples x variables. A file with 52 rows and more than 52 columns is
/// transposed. Sample `i` gets timestamp `i * 3 min` from epoch 0.
///
/// Labels follow the benchmark's file naming: `d00*.dat` is normal (all
/// 0); `dNN.dat` are fault runs recorded after the fault started (all 1);
/// in `dNN_te.dat` the fault starts at sample 160 (0 before, 1 from there).
/// Other names get no labels.
pub fn read_tep(path: &Path) -> Result<Dataset, ModelError> {
    let text = std::fs::read_to_string(path).map_err(|e| ModelError::io(path, e))?;
    let mut table: Vec<Vec<f32>> = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line_no = i as u64 + 1;
        if line.trim().is_empty() {
            continue;
        }
        let mut row = Vec::with_capacity(table.first().map_or(TEP_CHANNELS, Vec::len));
        for (j, field) in line.split_whitespace().enumerate() {
            let v = parse_value(field).map_err(|message| ModelError::Parse {
                path: path.to_owned(),
                line: line_no,
                column: format!("field {}", j + 1),
                message,
            })?;
            row.push(v);
        }
        if let Some(first) = table.first()
            && row.len() != first.len()
        {
            return Err(ModelError::Parse {
                path: path.to_owned(),
                line: line_no,
                column: format!("field {}", row.len().min(first.len()) + 1),
                message: format!(
                    "ragged row: expected {} fields, found {}",
                    first.len(),
                    row.len()
                ),
            });
        }
        table.push(row);
    }
    let Some(width) = table.first().map(Vec::len) else {
        return Err(ModelError::data(path, "empty file"));
    };
    let height = table.len();
    let (samples, rows) = if height == TEP_CHANNELS && width > TEP_CHANNELS {
        // Variables x samples: transpose.
        let mut rows = Vec::with_capacity(width * height);
        for s in 0..width {
            rows.extend(table.iter().map(|var| var[s]));
        }
        (width, rows)
    } else if width == TEP_CHANNELS {
        (height, table.into_iter().flatten().collect())
    } else {
        return Err(ModelError::data(
            path,
            format!(
                "expected {TEP_CHANNELS} variables per sample, found a {height} x {width} table"
            ),
        ));
    };
    let channels = (1..=41)
        .map(|i| format!("xmeas_{i}"))
        .chain((1..=11).map(|i| format!("xmv_{i}")))
        .collect();
    Ok(Dataset {
        channels,
        rows,
        timestamps: Some((0..samples as i64).map(|i| i * TEP_SAMPLE_MS).collect()),
        labels: tep_labels(path, samples),
        source: path.display().to_string(),
    })
}

fn tep_labels(path: &Path, samples: usize) -> Option<Vec<u8>> {
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
                if !test || i >= TEP_TEST_FAULT_START {
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
    use std::io::Write;

    fn tep(name: &str) -> std::path::PathBuf {
        Path::new(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../../shared/data/tep"
        ))
        .join(name)
    }

    fn write(text: &str) -> tempfile::NamedTempFile {
        let mut f = tempfile::Builder::new().suffix(".csv").tempfile().unwrap();
        f.write_all(text.as_bytes()).unwrap();
        f
    }

    fn message(r: Result<Dataset, ModelError>) -> String {
        r.expect_err("should fail").to_string()
    }

    #[test]
    fn csv_with_header_time_label_and_ignored_columns() {
        // With a UTF-8 byte-order mark, as spreadsheet exports write it.
        let f = write(
            "\u{feff}ts,flow,site,pressure,fault\n\
             2026-01-01T00:00:00Z,1.5,a,10,0\n\
             2026-01-01 00:00:01,2.5,b,11,1\n\
             \n\
             2026-01-01T01:00:02+01:00,-3e-1,c,12,true\n",
        );
        let opts = CsvOptions {
            time_column: Some("ts".into()),
            label_column: Some("fault".into()),
            ignore_columns: vec!["site".into()],
            ..CsvOptions::default()
        };
        let d = read_csv(f.path(), &opts).unwrap();
        assert_eq!(d.channels, vec!["flow", "pressure"]);
        assert_eq!(d.len(), 3);
        assert_eq!(d.row(2), &[-0.3, 12.0]);
        let t0 = 1_767_225_600_000; // 2026-01-01T00:00:00Z
        assert_eq!(d.timestamps, Some(vec![t0, t0 + 1000, t0 + 2000]));
        assert_eq!(d.labels, Some(vec![0, 1, 1]));
    }

    #[test]
    fn csv_custom_delimiter_epoch_times_explicit_channels_and_no_header() {
        let f = write("t;a;b\n1767225600;1;2\n1767225600500;3;4\n");
        let opts = CsvOptions {
            delimiter: b';',
            time_column: Some("t".into()),
            channels: Some(vec!["b".into(), "a".into()]),
            ..CsvOptions::default()
        };
        let d = read_csv(f.path(), &opts).unwrap();
        assert_eq!(d.channels, vec!["b", "a"]);
        assert_eq!(d.rows, vec![2.0, 1.0, 4.0, 3.0]);
        // Seconds are scaled to ms; large values are already ms.
        assert_eq!(
            d.timestamps,
            Some(vec![1_767_225_600_000, 1_767_225_600_500])
        );
        assert_eq!(d.labels, None);

        let f = write("5,1,2\n6,3,4\n");
        let opts = CsvOptions {
            has_header: false,
            time_column: Some("c0".into()),
            ..CsvOptions::default()
        };
        let d = read_csv(f.path(), &opts).unwrap();
        assert_eq!(d.channels, vec!["c1", "c2"]);
        assert_eq!(d.rows, vec![1.0, 2.0, 3.0, 4.0]);
        assert_eq!(d.timestamps, Some(vec![5000, 6000]));
    }

    #[test]
    fn csv_errors_name_file_line_and_column() {
        let ragged = write("a,b\n1,2\n3\n");
        let m = message(read_csv(ragged.path(), &CsvOptions::default()));
        assert!(
            m.contains("line 3") && m.contains("\"b\"") && m.contains("ragged"),
            "{m}"
        );
        assert!(m.contains(&ragged.path().display().to_string()), "{m}");

        let bad = write("a,b\n1,2\n3,4\n5,x7\n");
        let m = message(read_csv(bad.path(), &CsvOptions::default()));
        assert!(
            m.contains("line 4") && m.contains("\"b\"") && m.contains("x7"),
            "{m}"
        );

        let nan = write("a,b\n1,NaN\n");
        let m = message(read_csv(nan.path(), &CsvOptions::default()));
        assert!(m.contains("line 2") && m.contains("not finite"), "{m}");

        let empty_cell = write("a,b\n1,\n");
        let m = message(read_csv(empty_cell.path(), &CsvOptions::default()));
        assert!(m.contains("line 2") && m.contains("empty value"), "{m}");

        let bad_time = write("t,a\n2026-13-45,1\n");
        let opts = CsvOptions {
            time_column: Some("t".into()),
            ..CsvOptions::default()
        };
        let m = message(read_csv(bad_time.path(), &opts));
        assert!(m.contains("line 2") && m.contains("\"t\""), "{m}");

        let opts = CsvOptions {
            time_column: Some("timestamp".into()),
            ..CsvOptions::default()
        };
        let m = message(read_csv(bad.path(), &opts));
        assert!(
            m.contains("\"timestamp\" not found") && m.contains("a, b"),
            "{m}"
        );
        let opts = CsvOptions {
            channels: Some(vec!["a".into(), "zz".into()]),
            ..CsvOptions::default()
        };
        assert!(message(read_csv(bad.path(), &opts)).contains("\"zz\""));

        let empty = write("");
        assert!(message(read_csv(empty.path(), &CsvOptions::default())).contains("empty"));
        let header_only = write("a,b\n");
        assert!(message(read_csv(header_only.path(), &CsvOptions::default())).contains("no data"));
        let missing = Path::new("/nonexistent/x.csv");
        assert!(message(read_csv(missing, &CsvOptions::default())).contains("/nonexistent/x.csv"));
    }

    #[test]
    fn time_formats() {
        let t0 = 1_767_225_600_000;
        for (s, want) in [
            ("2026-01-01T00:00:00Z", t0),
            ("2026-01-01T00:00:00.250Z", t0 + 250),
            ("2026-01-01T02:00:00+02:00", t0),
            ("2026-01-01T00:00:00", t0),
            ("2026-01-01 00:00:00", t0),
            ("2026-01-01 00:00:00.5", t0 + 500),
            ("2026-01-01 00:00", t0),
            ("1767225600", t0),
            ("1767225600.25", t0 + 250),
            ("1767225600000", t0),
        ] {
            assert_eq!(parse_time(s), Ok(want), "{s}");
        }
        assert!(parse_time("yesterday").is_err());
        assert!(parse_time("inf").is_err());
    }

    #[test]
    fn select_channels_reorders_and_reports_missing() {
        let d = Dataset {
            channels: vec!["a".into(), "b".into(), "c".into()],
            rows: vec![1.0, 2.0, 3.0, 4.0, 5.0, 6.0],
            timestamps: None,
            labels: Some(vec![0, 1]),
            source: "mem".into(),
        };
        let s = d.select_channels(&["c".into(), "a".into()]).unwrap();
        assert_eq!(s.rows, vec![3.0, 1.0, 6.0, 4.0]);
        assert_eq!(s.labels, Some(vec![0, 1]));
        let m = d
            .select_channels(&["a".into(), "x".into()])
            .unwrap_err()
            .to_string();
        assert!(m.contains("x") && m.contains("mem"), "{m}");
        // Hash depends on values and names.
        assert_ne!(d.sha256(), s.sha256());
        assert_eq!(d.sha256(), d.clone().sha256());
        assert_eq!(d.slice(1..2).rows, vec![4.0, 5.0, 6.0]);
    }

    #[test]
    fn tep_files_are_oriented_and_labelled() {
        let d00 = read_tep(&tep("d00.dat")).unwrap();
        assert_eq!((d00.len(), d00.n_channels()), (500, 52));
        assert_eq!(d00.channels[0], "xmeas_1");
        assert_eq!(d00.channels[51], "xmv_11");
        // First value in the file is variable 1 of sample 1; the second
        // number on the first line is variable 1 of sample 2.
        assert_eq!(d00.row(0)[0], 0.24987);
        assert_eq!(d00.row(1)[0], 0.25118);
        assert_eq!(d00.timestamps.as_ref().unwrap()[2], 2 * TEP_SAMPLE_MS);
        assert!(d00.labels.as_ref().unwrap().iter().all(|&l| l == 0));

        let te = read_any(&tep("d01_te.dat"), &CsvOptions::default()).unwrap();
        assert_eq!((te.len(), te.n_channels()), (960, 52));
        let labels = te.labels.unwrap();
        assert_eq!((labels[159], labels[160], labels[959]), (0, 1, 1));

        let train = read_tep(&tep("d01.dat")).unwrap();
        assert_eq!(train.len(), 480);
        assert!(train.labels.unwrap().iter().all(|&l| l == 1));
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
