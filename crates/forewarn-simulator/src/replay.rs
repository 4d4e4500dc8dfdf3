//! Replay of recorded data: a CSV file (header = channel names, optional
//! time column) or a Tennessee Eastman `.dat` file (whitespace-separated
//! numbers, no header, 52 columns `xmeas_1..xmeas_41, xmv_1..xmv_11`;
//! `d00.dat` is stored transposed as 52 rows and is turned back).

use std::io::Read;
use std::path::Path;
use std::str::FromStr;

use crate::SimError;
use crate::plant::DEFAULT_START_MS;

/// Sampling period of the Tennessee Eastman data sets: 3 minutes.
pub const TEP_PERIOD_MS: i64 = 180_000;
/// Number of Tennessee Eastman variables.
pub const TEP_CHANNELS: usize = 52;

/// Channel names of the Tennessee Eastman data: `xmeas_1..xmeas_41, xmv_1..xmv_11`.
pub fn tep_channels() -> Vec<String> {
    (1..=41)
        .map(|i| format!("xmeas_{i}"))
        .chain((1..=11).map(|i| format!("xmv_{i}")))
        .collect()
}

/// Field separator of a replay file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Separator {
    /// One byte, CSV rules (quotes allowed).
    Char(u8),
    /// Any run of spaces and tabs (the `.dat` format).
    Whitespace,
}

impl FromStr for Separator {
    type Err = SimError;
    /// `,` `;` `|` … (one ASCII character), `\t` or `tab`, `whitespace` or `ws`.
    fn from_str(s: &str) -> Result<Self, SimError> {
        match s {
            "\\t" | "\t" | "tab" => Ok(Separator::Char(b'\t')),
            "whitespace" | "ws" | "space" | "spaces" | " " => Ok(Separator::Whitespace),
            _ if s.len() == 1 && s.is_ascii() => Ok(Separator::Char(s.as_bytes()[0])),
            _ => Err(SimError::Separator(s.to_owned())),
        }
    }
}

/// How to read a replay file.
#[derive(Debug, Clone, PartialEq)]
pub struct ReplayOptions {
    /// `None`: whitespace for `.dat` files, else guessed from the first line
    /// (`,` then `;` then tab, else whitespace).
    pub separator: Option<Separator>,
    /// Column holding the timestamp (epoch milliseconds, RFC 3339, or
    /// `YYYY-MM-DD HH:MM:SS[.fff]` taken as UTC). `None`: a column named
    /// `ts`, `time`, `timestamp` or `datetime` (any case) if there is one.
    pub time_column: Option<String>,
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

const TIME_NAMES: [&str; 5] = ["ts", "time", "timestamp", "datetime", "date_time"];

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
        Self::parse(name, &text, opts)
    }

    fn parse(name: &str, text: &str, opts: &ReplayOptions) -> Result<Self, SimError> {
        let at = |line: u64, msg: String| SimError::Parse {
            path: name.to_owned(),
            line,
            msg,
        };
        let whole = |msg: String| SimError::Replay {
            path: name.to_owned(),
            msg,
        };
        if opts.period_ms <= 0 {
            return Err(whole(format!(
                "period must be positive, got {} ms",
                opts.period_ms
            )));
        }
        let separator = opts
            .separator
            .unwrap_or_else(|| guess_separator(name, text));

        let mut header: Option<Vec<String>> = None;
        let mut columns = 0usize;
        let mut time_col: Option<usize> = None;
        let mut ts: Vec<i64> = Vec::new();
        let mut values: Vec<f32> = Vec::new();
        let mut first = true;
        let mut row = |line: u64, fields: &[&str]| -> Result<(), SimError> {
            if first {
                first = false;
                columns = fields.len();
                if fields.iter().any(|f| f.parse::<f64>().is_err()) {
                    let names: Vec<String> = fields.iter().map(|f| (*f).to_owned()).collect();
                    for (i, n) in names.iter().enumerate() {
                        if n.is_empty() {
                            return Err(at(line, format!("header column {} has no name", i + 1)));
                        }
                        if names[..i].contains(n) {
                            return Err(at(line, format!("header names column {n:?} twice")));
                        }
                    }
                    time_col = match &opts.time_column {
                        Some(want) => Some(
                            names
                                .iter()
                                .position(|n| n == want)
                                .or_else(|| names.iter().position(|n| n.eq_ignore_ascii_case(want)))
                                .ok_or_else(|| {
                                    at(
                                        line,
                                        format!(
                                            "no time column {want:?}; columns: {}",
                                            names.join(", ")
                                        ),
                                    )
                                })?,
                        ),
                        None => names
                            .iter()
                            .position(|n| TIME_NAMES.iter().any(|t| n.eq_ignore_ascii_case(t))),
                    };
                    if names.len() == usize::from(time_col.is_some()) {
                        return Err(at(line, "no channel columns".into()));
                    }
                    header = Some(names);
                    return Ok(());
                }
                if let Some(want) = &opts.time_column {
                    return Err(at(
                        line,
                        format!("the file has no header, so no time column {want:?}"),
                    ));
                }
            }
            if fields.len() != columns {
                return Err(at(
                    line,
                    format!("expected {columns} fields, found {}", fields.len()),
                ));
            }
            for (i, raw) in fields.iter().enumerate() {
                let column = || match &header {
                    Some(h) => format!("column {:?}", h[i]),
                    None => format!("column {}", i + 1),
                };
                if Some(i) == time_col {
                    let t = parse_time(raw).ok_or_else(|| {
                        at(
                            line,
                            format!(
                                "{}: {raw:?} is not a timestamp (epoch ms or RFC 3339)",
                                column()
                            ),
                        )
                    })?;
                    if !opts.retime
                        && let Some(&prev) = ts.last()
                        && t < prev
                    {
                        return Err(at(
                            line,
                            format!(
                                "{}: time goes backwards ({raw:?} is before the previous row)",
                                column()
                            ),
                        ));
                    }
                    ts.push(t);
                } else {
                    match raw.parse::<f32>() {
                        Ok(v) if v.is_finite() => values.push(v),
                        _ => {
                            return Err(at(
                                line,
                                format!("{}: {raw:?} is not a finite number", column()),
                            ));
                        }
                    }
                }
            }
            Ok(())
        };

        match separator {
            Separator::Whitespace => {
                for (i, line) in text.lines().enumerate() {
                    let fields: Vec<&str> = line.split_whitespace().collect();
                    if !fields.is_empty() {
                        row(i as u64 + 1, &fields)?;
                    }
                }
            }
            Separator::Char(delimiter) => {
                let mut rdr = csv::ReaderBuilder::new()
                    .delimiter(delimiter)
                    .has_headers(false)
                    .flexible(true)
                    .trim(csv::Trim::All)
                    .from_reader(text.as_bytes());
                let mut record = csv::StringRecord::new();
                loop {
                    match rdr.read_record(&mut record) {
                        Ok(false) => break,
                        Ok(true) => {
                            let line = record.position().map_or(0, |p| p.line());
                            let fields: Vec<&str> = record.iter().collect();
                            if fields.iter().all(|f| f.is_empty()) {
                                continue;
                            }
                            row(line, &fields)?;
                        }
                        Err(e) => {
                            let line = e.position().map_or(0, |p| p.line());
                            return Err(at(line, e.to_string()));
                        }
                    }
                }
            }
        }

        let n_ch = columns - usize::from(time_col.is_some());
        if values.is_empty() {
            return Err(whole("no data rows".into()));
        }
        let mut rows = values.len() / n_ch;
        let mut n_ch = n_ch;
        let channels = match header {
            Some(h) => h
                .into_iter()
                .enumerate()
                .filter(|(i, _)| Some(*i) != time_col)
                .map(|(_, n)| n)
                .collect(),
            None => {
                // d00.dat is stored transposed: 52 rows of 500 samples.
                if rows == TEP_CHANNELS && n_ch > rows {
                    values = transpose(&values, rows, n_ch);
                    std::mem::swap(&mut rows, &mut n_ch);
                }
                if n_ch == TEP_CHANNELS {
                    tep_channels()
                } else {
                    (1..=n_ch).map(|i| format!("col_{i}")).collect()
                }
            }
        };
        let file_times = time_col.is_some() && !opts.retime;
        if !file_times {
            ts = (0..rows as i64)
                .map(|i| opts.start_ms + i * opts.period_ms)
                .collect();
        }
        Ok(Self {
            source: name.to_owned(),
            channels,
            ts,
            values,
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

fn guess_separator(name: &str, text: &str) -> Separator {
    if name.to_ascii_lowercase().ends_with(".dat") {
        return Separator::Whitespace;
    }
    let first = text.lines().find(|l| !l.trim().is_empty()).unwrap_or("");
    for c in [b',', b';', b'\t'] {
        if first.as_bytes().contains(&c) {
            return Separator::Char(c);
        }
    }
    Separator::Whitespace
}

fn transpose(values: &[f32], rows: usize, cols: usize) -> Vec<f32> {
    let mut out = vec![0.0; values.len()];
    for r in 0..rows {
        for c in 0..cols {
            out[c * rows + r] = values[r * cols + c];
        }
    }
    out
}

/// Epoch milliseconds (integer), RFC 3339, or `YYYY-MM-DD[ T]HH:MM:SS[.fff]` as UTC.
fn parse_time(raw: &str) -> Option<i64> {
    if let Ok(ms) = raw.parse::<i64>() {
        return Some(ms);
    }
    if let Ok(t) = chrono::DateTime::parse_from_rfc3339(raw) {
        return Some(t.timestamp_millis());
    }
    for fmt in ["%Y-%m-%d %H:%M:%S%.f", "%Y-%m-%dT%H:%M:%S%.f"] {
        if let Ok(t) = chrono::NaiveDateTime::parse_from_str(raw, fmt) {
            return Some(t.and_utc().timestamp_millis());
        }
    }
    None
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
                "plant.csv:3: column \"b\": \"x\" is not a finite number",
            ),
            ("a,b\n1,2\n3\n", "plant.csv:3: expected 2 fields, found 1"),
            (
                "a,b\n1,NaN\n",
                "plant.csv:2: column \"b\": \"NaN\" is not a finite number",
            ),
            ("a,a\n1,2\n", "plant.csv:1: header names column \"a\" twice"),
            ("a,\n1,2\n", "plant.csv:1: header column 2 has no name"),
            (
                "ts,a\n5,1\n4,2\n",
                "plant.csv:3: column \"ts\": time goes backwards",
            ),
            (
                "ts,a\nnoon,1\n",
                "plant.csv:2: column \"ts\": \"noon\" is not a timestamp",
            ),
            ("ts\n5\n", "plant.csv:1: no channel columns"),
            ("a,b\n", "plant.csv: no data rows"),
            ("", "plant.csv: no data rows"),
            (
                "1,2\n3,x\n",
                "plant.csv:2: column 2: \"x\" is not a finite number",
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
        assert!(err("a,b\n1,2\n", &opts).contains("no time column \"time\"; columns: a, b"));
        assert!(err("1,2\n", &opts).contains("no header"));
        assert!("ab".parse::<Separator>().is_err());
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
            format!("{path}:3: expected 2 fields, found 3")
        );
    }

    #[test]
    fn tep_training_file_is_transposed() {
        let opts = ReplayOptions {
            period_ms: TEP_PERIOD_MS,
            start_ms: 0,
            ..ReplayOptions::default()
        };
        let r = Replay::open(format!("{TEP}/d00.dat"), &opts).unwrap();
        assert_eq!(r.len(), 500);
        assert_eq!(r.channels().len(), 52);
        assert_eq!(r.channels()[0], "xmeas_1");
        assert_eq!(r.channels()[40], "xmeas_41");
        assert_eq!(r.channels()[41], "xmv_1");
        assert_eq!(r.channels()[51], "xmv_11");
        // The file's first line is xmeas_1 over time: 2.4987e-01 2.5118e-01 …
        assert_eq!(r.row(0).1[0], 0.24987);
        assert_eq!(r.row(1).1[0], 0.25118);
        assert_eq!(r.row(1).0, 180_000);
        assert_eq!(r.row(499).0, 499 * 180_000);
        // xmeas_7 (reactor pressure) sits near 2705 kPa throughout.
        assert!(r.rows().all(|(_, v)| (2_600.0..2_800.0).contains(&v[6])));
    }

    #[test]
    fn tep_test_file_has_960_rows() {
        let r = Replay::open(format!("{TEP}/d01_te.dat"), &ReplayOptions::default()).unwrap();
        assert_eq!(r.len(), 960);
        assert_eq!(r.channels(), tep_channels());
        // First line: 2.5025e-01 3.6572e+03 4.5201e+03 …
        assert_eq!(&r.row(0).1[..3], &[0.25025, 3657.2, 4520.1]);
        assert!(
            r.rows()
                .all(|(_, v)| v.len() == 52 && v.iter().all(|x| x.is_finite()))
        );
    }
}
