//! Replay of recorded data: a CSV file (header = channel names, optional
//! time column) or a Tennessee Eastman `.dat` file, read by
//! [`forewarn_data`] (so a file means the same to `simulate --replay` as
//! to `train` and `evaluate`, its times included), streamed row by row.

use std::io::Read;
use std::path::Path;

use forewarn_data::{CsvOptions, Header, Separator, parse_csv};

use crate::SimError;
use crate::plant::DEFAULT_START_MS;

/// How to read a replay file.
#[derive(Debug, Clone, PartialEq)]
pub struct ReplayOptions {
    /// `None`: whitespace for `.dat` files, else guessed from the first line
    /// (`,` then `;` then tab, else whitespace).
    pub separator: Option<Separator>,
    /// Column holding the timestamp ([`forewarn_data::parse_time`]: epoch
    /// seconds below 1e11, milliseconds from there, RFC 3339, or
    /// `YYYY-MM-DD HH:MM:SS[.fff]` taken as UTC). `None`: a column named
    /// `ts`, `time`, `timestamp`, `datetime` or `date_time` (any case) if
    /// there is one.
    pub time_column: Option<String>,
    /// Columns that are not channels (a label column, say); names not in
    /// the file are allowed.
    pub ignore_columns: Vec<String>,
    /// Ignore the file's timestamps and re-time rows from `start_ms` every
    /// `period_ms` (always done when the file has no time column).
    pub retime: bool,
    pub start_ms: i64,
    pub period_ms: i64,
}

impl Default for ReplayOptions {
    fn default() -> Self {
        Self {
            separator: None,
            time_column: None,
            ignore_columns: vec![],
            retime: false,
            start_ms: DEFAULT_START_MS,
            period_ms: 1_000,
        }
    }
}

/// A replay file loaded in memory: rows of `(ts_ms, values)`.
#[derive(Debug, Clone)]
pub struct Replay {
    source: String,
    channels: Vec<String>,
    ts: Vec<i64>,
    /// Row-major values.
    values: Vec<f32>,
    /// The file had a time column whose timestamps are kept.
    file_times: bool,
}

impl Replay {
    /// Reads `path` (CSV or `.dat`).
    pub fn open(path: impl AsRef<Path>, opts: &ReplayOptions) -> Result<Self, SimError> {
        let path = path.as_ref();
        let file = std::fs::File::open(path).map_err(|source| SimError::Io {
            path: path.display().to_string(),
            source,
        })?;
        Self::from_reader(&path.display().to_string(), file, opts)
    }

    /// Reads replay data from `reader`; `name` is used in error messages and
    /// a `.dat` suffix selects the whitespace format.
    pub fn from_reader(
        name: &str,
        mut reader: impl Read,
        opts: &ReplayOptions,
    ) -> Result<Self, SimError> {
        let mut text = String::new();
        reader
            .read_to_string(&mut text)
            .map_err(|source| SimError::Io {
                path: name.to_owned(),
                source,
            })?;
        if opts.period_ms <= 0 {
            return Err(SimError::Replay {
                path: name.to_owned(),
                msg: format!("period must be positive, got {} ms", opts.period_ms),
            });
        }
        let first = text.lines().find(|l| !l.trim().is_empty()).unwrap_or("");
        let csv = CsvOptions {
            separator: (opts.separator).unwrap_or_else(|| Separator::guess(name, first)),
            header: Header::Detect,
            time_column: opts.time_column.clone(),
            find_time_column: true,
            ignore_columns: opts.ignore_columns.clone(),
            // Streamed in file order: a row before the one above it would
            // reach the service out of order.
            ordered_times: !opts.retime,
            ..CsvOptions::default()
        };
        let data = parse_csv(name, &text, &csv)?;
        let rows = data.len();
        let (ts, file_times) = match data.timestamps {
            Some(ts) if !opts.retime => (ts, true),
            _ => (
                (0..rows as i64)
                    .map(|i| opts.start_ms + i * opts.period_ms)
                    .collect(),
                false,
            ),
        };
        Ok(Self {
            source: name.to_owned(),
            channels: data.channels,
            ts,
            values: data.rows,
            file_times,
        })
    }

    /// File name the data came from.
    pub fn source(&self) -> &str {
        &self.source
    }
    pub fn channels(&self) -> &[String] {
        &self.channels
    }
    /// Number of rows.
    pub fn len(&self) -> usize {
        self.ts.len()
    }
    pub fn is_empty(&self) -> bool {
        self.ts.is_empty()
    }
    /// Whether timestamps come from the file (else they were re-timed).
    pub fn has_file_times(&self) -> bool {
        self.file_times
    }
    /// Row `i`: `(ts_ms, values in channel order)`.
    pub fn row(&self, i: usize) -> (i64, &[f32]) {
        let n = self.channels.len();
        (self.ts[i], &self.values[i * n..(i + 1) * n])
    }
    /// All rows in order.
    pub fn rows(&self) -> impl Iterator<Item = (i64, &[f32])> + '_ {
        self.ts
            .iter()
            .copied()
            .zip(self.values.chunks_exact(self.channels.len()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    const TEP: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../../shared/data/tep");

    fn parse(text: &str, opts: &ReplayOptions) -> Result<Replay, SimError> {
        Replay::from_reader("plant.csv", text.as_bytes(), opts)
    }

    fn err(text: &str, opts: &ReplayOptions) -> String {
        parse(text, opts).unwrap_err().to_string()
    }

    #[test]
    fn csv_with_a_time_column_keeps_its_timestamps() {
        let text = "ts,flow,\"motor current\"\n\
                    2026-11-28T12:00:00Z,1.5,40\n\
                    2026-11-28T12:00:01.250Z, 1.6 ,41\n\
                    \n\
                    1795867202000,1.7,42e0\n";
        let r = parse(text, &ReplayOptions::default()).unwrap();
        assert_eq!(r.channels(), ["flow", "motor current"]);
        assert_eq!(r.len(), 3);
        assert!(r.has_file_times());
        let rows: Vec<(i64, Vec<f32>)> = r.rows().map(|(t, v)| (t, v.to_vec())).collect();
        assert_eq!(
            rows,
            vec![
                (1_795_867_200_000, vec![1.5, 40.0]),
                (1_795_867_201_250, vec![1.6, 41.0]),
                (1_795_867_202_000, vec![1.7, 42.0]),
            ]
        );
        // Asked to re-time: start + i × period.
        let opts = ReplayOptions {
            retime: true,
            start_ms: 1_000,
            period_ms: 500,
            ..ReplayOptions::default()
        };
        let r = parse(text, &opts).unwrap();
        assert!(!r.has_file_times());
        assert_eq!(r.row(2), (2_000, &[1.7f32, 42.0][..]));
        // Re-timed, the file's order does not matter.
        assert_eq!(parse("ts,a\n5,1\n4,2\n", &opts).unwrap().len(), 2);
    }

    /// Epoch integers follow the one rule of every command: seconds below
    /// 1e11 (`train` and `evaluate` read the same file the same way); an
    /// ignored column is no channel.
    #[test]
    fn epoch_seconds_are_seconds() {
        let opts = ReplayOptions {
            ignore_columns: vec!["label".into()],
            ..ReplayOptions::default()
        };
        let r = parse("ts,a,label\n1795867200,1,0\n1795867201,2,1\n", &opts).unwrap();
        let ts: Vec<i64> = r.rows().map(|(t, _)| t).collect();
        assert_eq!(ts, vec![1_795_867_200_000, 1_795_867_201_000]);
        assert_eq!(r.channels(), ["a"]);
    }

    #[test]
    fn named_time_column_separator_and_naive_dates() {
        let text = "when;a;b\n2026-01-01 00:00:00;1;2\n2026-01-01 00:03:00.5;3;4\n";
        let opts = ReplayOptions {
            time_column: Some("WHEN".into()),
            ..ReplayOptions::default()
        };
        let r = parse(text, &opts).unwrap();
        assert_eq!(r.channels(), ["a", "b"]);
        assert_eq!(r.row(1), (DEFAULT_START_MS + 180_500, &[3.0f32, 4.0][..]));
        // An explicit separator; tab spelled out.
        let text = "x\ty\n1\t2\n";
        let opts = ReplayOptions {
            separator: Some("tab".parse().unwrap()),
            ..ReplayOptions::default()
        };
        assert_eq!(parse(text, &opts).unwrap().channels(), ["x", "y"]);
    }

    #[test]
    fn csv_without_time_is_retimed_from_the_start() {
        let opts = ReplayOptions {
            start_ms: 10_000,
            period_ms: 2_000,
            ..ReplayOptions::default()
        };
        let r = parse("a,b\n1,2\n3,4\n5,6\n", &opts).unwrap();
        let ts: Vec<i64> = r.rows().map(|(t, _)| t).collect();
        assert_eq!(ts, vec![10_000, 12_000, 14_000]);
        // No header at all: generic names.
        let r = parse("1,2\n3,4\n", &opts).unwrap();
        assert_eq!(r.channels(), ["col_1", "col_2"]);
        assert_eq!(r.row(0).1, [1.0, 2.0]);
    }

    #[test]
    fn errors_name_the_file_line_and_column() {
        let d = ReplayOptions::default();
        let cases = [
            (
                "a,b\n1,2\n3,x\n",
                "plant.csv: line 3, column \"b\": cannot parse \"x\" as a number",
            ),
            (
                "a,b\n1,2\n3\n",
                "plant.csv: line 3, column \"b\": ragged row: expected 2 fields, found 1",
            ),
            (
                "a,b\n1,NaN\n",
                "plant.csv: line 2, column \"b\": value \"NaN\" is not finite",
            ),
            (
                "a,a\n1,2\n",
                "plant.csv: header: column \"a\" appears more than once",
            ),
            ("a,\n1,2\n", "plant.csv: header: column 2 has an empty name"),
            (
                "ts,a\n5,1\n4,2\n",
                "plant.csv: line 3, column \"ts\": time goes backwards",
            ),
            (
                "ts,a\nnoon,1\n",
                "plant.csv: line 2, column \"ts\": cannot parse \"noon\" as a time",
            ),
            ("ts\n5\n", "plant.csv: no channel columns"),
            ("a,b\n", "plant.csv: no data rows"),
            ("", "plant.csv: empty file"),
            (
                "1,2\n3,x\n",
                "plant.csv: line 2, column \"field 2\": cannot parse \"x\" as a number",
            ),
        ];
        for (text, want) in cases {
            let msg = err(text, &d);
            assert!(
                msg.starts_with(want),
                "{text:?}: {msg:?} does not start with {want:?}"
            );
        }
        let opts = ReplayOptions {
            time_column: Some("time".into()),
            ..ReplayOptions::default()
        };
        assert!(
            err("a,b\n1,2\n", &opts).contains("time column \"time\" not found; columns are: a, b")
        );
        assert!(err("1,2\n", &opts).contains("no header"));
        let opts = ReplayOptions {
            period_ms: 0,
            ..ReplayOptions::default()
        };
        assert!(err("a\n1\n", &opts).contains("period must be positive"));
    }

    #[test]
    fn open_reports_the_path() {
        let missing = Replay::open("/nonexistent/x.csv", &ReplayOptions::default()).unwrap_err();
        assert!(
            missing.to_string().starts_with("/nonexistent/x.csv: "),
            "{missing}"
        );
        let mut file = tempfile::Builder::new().suffix(".csv").tempfile().unwrap();
        writeln!(file, "a,b\n1,2\n3,4,5").unwrap();
        let path = file.path().display().to_string();
        let err = Replay::open(file.path(), &ReplayOptions::default()).unwrap_err();
        assert_eq!(
            err.to_string(),
            format!("{path}: line 3, column \"<field 3>\": ragged row: expected 2 fields, found 3")
        );
    }

    #[test]
    fn tep_training_file_is_transposed() {
        let opts = ReplayOptions {
            period_ms: forewarn_data::tep::SAMPLE_MS,
            start_ms: 0,
            ..ReplayOptions::default()
        };
        let r = Replay::open(format!("{TEP}/d00.dat"), &opts).unwrap();
        assert_eq!(r.len(), 500);
        assert_eq!(r.channels(), forewarn_data::tep::channels());
        // The file's first line is xmeas_1 over time: 2.4987e-01 2.5118e-01 …
        assert_eq!(r.row(0).1[0], 0.24987);
        assert_eq!(r.row(1).1[0], 0.25118);
        assert_eq!(r.row(1).0, 180_000);
        assert_eq!(r.row(499).0, 499 * 180_000);
    }

    #[test]
    fn tep_test_file_has_960_rows() {
        let r = Replay::open(format!("{TEP}/d01_te.dat"), &ReplayOptions::default()).unwrap();
        assert_eq!(r.len(), 960);
        assert_eq!(r.channels(), forewarn_data::tep::channels());
        // First line: 2.5025e-01 3.6572e+03 4.5201e+03 …
        assert_eq!(&r.row(0).1[..3], &[0.25025, 3657.2, 4520.1]);
        assert!(
            r.rows()
                .all(|(_, v)| v.len() == 52 && v.iter().all(|x| x.is_finite()))
        );
    }
}
