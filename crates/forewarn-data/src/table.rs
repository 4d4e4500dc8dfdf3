//! The one reader of delimited text: CSV and TSV (any one-byte separator,
//! quotes allowed) and whitespace-separated numbers (the Tennessee Eastman
//! layout), with a header row of column names or without one.

use std::collections::HashMap;
use std::io::BufRead;
use std::path::Path;
use std::str::FromStr;

use crate::dataset::Dataset;
use crate::error::DataError;
use crate::time::parse_time;

/// Column names a time column is found by when none is named
/// ([`CsvOptions::find_time_column`]), in any case.
pub const TIME_NAMES: [&str; 5] = ["ts", "time", "timestamp", "datetime", "date_time"];

/// Field separator of a data file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Separator {
    /// One byte, CSV rules (quotes allowed).
    Char(u8),
    /// Any run of spaces and tabs (the `.dat` format).
    Whitespace,
}

impl Separator {
    /// The separator of a file named `name` whose first line is `first`:
    /// whitespace for `.dat` files, else the first of `,` `;` tab that the
    /// line holds, else whitespace.
    pub fn guess(name: &str, first: &str) -> Self {
        if name.to_ascii_lowercase().ends_with(".dat") {
            return Separator::Whitespace;
        }
        for c in [b',', b';', b'\t'] {
            if first.as_bytes().contains(&c) {
                return Separator::Char(c);
            }
        }
        Separator::Whitespace
    }
}

impl FromStr for Separator {
    type Err = DataError;
    /// `,` `;` `|` … (one ASCII character), `\t` or `tab`, `whitespace` or `ws`.
    fn from_str(s: &str) -> Result<Self, DataError> {
        match s {
            "\\t" | "\t" | "tab" => Ok(Separator::Char(b'\t')),
            "whitespace" | "ws" | "space" | "spaces" | " " => Ok(Separator::Whitespace),
            _ if s.len() == 1 && s.is_ascii() => Ok(Separator::Char(s.as_bytes()[0])),
            _ => Err(DataError::Separator(s.to_owned())),
        }
    }
}

/// Whether the first row names the columns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Header {
    Present,
    /// Every row is numbers; columns are named `col_1`, `col_2`, … (the
    /// Tennessee Eastman names for a table of 52 variables, which is turned
    /// back when stored transposed, as `d00.dat` is: [`crate::tep`]).
    Absent,
    /// A header when the first row holds anything that is not a number.
    Detect,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CsvOptions {
    pub separator: Separator,
    pub header: Header,
    /// Column with timestamps ([`parse_time`]); matched exactly, else in
    /// any case.
    pub time_column: Option<String>,
    /// Without `time_column`, take the first column named as in
    /// [`TIME_NAMES`] (any case) as the time, if there is one.
    pub find_time_column: bool,
    /// Refuse a row stamped before the row above it (a replay streams the
    /// rows in order).
    pub ordered_times: bool,
    /// Channels to load, in this order; `None` = every column that is not
    /// the time, label or an ignored column.
    pub channels: Option<Vec<String>>,
    /// Columns to skip when `channels` is `None`; names not in the file
    /// are allowed (one option set can serve several exports).
    pub ignore_columns: Vec<String>,
    /// Column with anomaly labels (0 normal, 1-255 a fault class, or
    /// true/false).
    pub label_column: Option<String>,
}

impl Default for CsvOptions {
    fn default() -> Self {
        Self {
            separator: Separator::Char(b','),
            header: Header::Present,
            time_column: None,
            find_time_column: false,
            ordered_times: false,
            channels: None,
            ignore_columns: vec![],
            label_column: None,
        }
    }
}

/// Parses the text of `path` from `reader`: the table, and whether it had
/// a header (a table without one has columns `col_1`, `col_2`, … and
/// neither times nor labels).
pub(crate) fn parse(
    path: &Path,
    reader: impl BufRead,
    opts: &CsvOptions,
) -> Result<(Dataset, bool), DataError> {
    let mut state = State::Start;
    for_each_record(path, reader, opts.separator, |line, fields| {
        state.push(path, opts, line, fields)
    })?;
    let header = matches!(state, State::Named { .. });
    Ok((state.finish(path)?, header))
}

/// Calls `f` with the line number and fields of every non-empty record.
fn for_each_record(
    path: &Path,
    mut reader: impl BufRead,
    separator: Separator,
    mut f: impl FnMut(u64, &[&str]) -> Result<(), DataError>,
) -> Result<(), DataError> {
    match separator {
        Separator::Whitespace => {
            let mut text = String::new();
            reader
                .read_to_string(&mut text)
                .map_err(|e| DataError::io(path, e))?;
            let text = text.strip_prefix('\u{feff}').unwrap_or(&text);
            for (i, line) in text.lines().enumerate() {
                let fields: Vec<&str> = line.split_whitespace().collect();
                if !fields.is_empty() {
                    f(i as u64 + 1, &fields)?;
                }
            }
            Ok(())
        }
        Separator::Char(delimiter) => {
            let mut rdr = csv::ReaderBuilder::new()
                .delimiter(delimiter)
                // The header is handled here so every record keeps its line
                // number and ragged rows get our message rather than csv's.
                .has_headers(false)
                .flexible(true)
                .trim(csv::Trim::All)
                .from_reader(reader);
            let mut record = csv::StringRecord::new();
            loop {
                match rdr.read_record(&mut record) {
                    Ok(false) => return Ok(()),
                    Ok(true) => {
                        let line = record.position().map_or(0, csv::Position::line);
                        let fields: Vec<&str> = record.iter().collect();
                        f(line, &fields)?;
                    }
                    Err(e) => {
                        return Err(match e.position() {
                            Some(pos) => DataError::Parse {
                                path: path.to_owned(),
                                line: pos.line(),
                                column: String::new(),
                                message: e.to_string(),
                            },
                            None => DataError::data(path, e.to_string()),
                        });
                    }
                }
            }
        }
    }
}

/// The reader after some records.
enum State {
    Start,
    /// With a header: the column names, what feeds what, and the rows.
    Named {
        names: Vec<String>,
        layout: Layout,
        table: Table,
    },
    /// Without: every field a value.
    Numbers {
        width: usize,
        values: Vec<f32>,
    },
}

impl State {
    fn push(
        &mut self,
        path: &Path,
        opts: &CsvOptions,
        line: u64,
        fields: &[&str],
    ) -> Result<(), DataError> {
        match self {
            State::Start => {
                let header = match opts.header {
                    Header::Present => true,
                    Header::Absent => false,
                    Header::Detect => fields.iter().any(|f| f.parse::<f64>().is_err()),
                };
                if header {
                    let names: Vec<String> = fields.iter().map(|f| (*f).to_owned()).collect();
                    let layout = Layout::resolve(path, &names, opts)?;
                    *self = State::Named {
                        names,
                        layout,
                        table: Table::default(),
                    };
                    return Ok(());
                }
                for (what, name) in [("time", &opts.time_column), ("label", &opts.label_column)] {
                    if let Some(want) = name {
                        return Err(DataError::data(
                            path,
                            format!("the file has no header, so no {what} column {want:?}"),
                        ));
                    }
                }
                if opts.channels.is_some() {
                    return Err(DataError::data(
                        path,
                        "the file has no header, so no channels can be named",
                    ));
                }
                *self = State::Numbers {
                    width: fields.len(),
                    values: Vec::new(),
                };
                self.push(path, opts, line, fields)
            }
            State::Named {
                names,
                layout,
                table,
            } => table.push(path, layout, names, opts, line, fields),
            State::Numbers { width, values } => {
                if fields.len() != *width {
                    return Err(DataError::Parse {
                        path: path.to_owned(),
                        line,
                        column: format!("field {}", fields.len().min(*width) + 1),
                        message: format!(
                            "ragged row: expected {width} fields, found {}",
                            fields.len()
                        ),
                    });
                }
                for (j, field) in fields.iter().enumerate() {
                    let v = parse_value(field).map_err(|message| DataError::Parse {
                        path: path.to_owned(),
                        line,
                        column: format!("field {}", j + 1),
                        message,
                    })?;
                    values.push(v);
                }
                Ok(())
            }
        }
    }

    fn finish(self, path: &Path) -> Result<Dataset, DataError> {
        let source = path.display().to_string();
        match self {
            State::Start => Err(DataError::data(path, "empty file: no header and no rows")),
            State::Named {
                names,
                layout,
                table,
            } => {
                if table.rows.is_empty() {
                    return Err(DataError::data(path, "no data rows"));
                }
                Ok(Dataset {
                    channels: layout.channels.iter().map(|&j| names[j].clone()).collect(),
                    rows: table.rows,
                    timestamps: layout.time.map(|_| table.timestamps),
                    labels: layout.label.map(|_| table.labels),
                    source,
                })
            }
            State::Numbers { width, values } => Ok(Dataset {
                channels: (1..=width).map(|i| format!("col_{i}")).collect(),
                rows: values,
                timestamps: None,
                labels: None,
                source,
            }),
        }
    }
}

/// Which file column feeds what.
struct Layout {
    channels: Vec<usize>,
    time: Option<usize>,
    label: Option<usize>,
}

impl Layout {
    fn resolve(path: &Path, names: &[String], opts: &CsvOptions) -> Result<Self, DataError> {
        let mut index = HashMap::new();
        for (i, n) in names.iter().enumerate() {
            if n.is_empty() {
                return Err(DataError::data(
                    path,
                    format!("header: column {} has an empty name", i + 1),
                ));
            }
            if index.insert(n.as_str(), i).is_some() {
                return Err(DataError::data(
                    path,
                    format!("header: column {n:?} appears more than once"),
                ));
            }
        }
        let find = |role: &str, name: &str| {
            index
                .get(name)
                .copied()
                .or_else(|| names.iter().position(|n| n.eq_ignore_ascii_case(name)))
                .ok_or_else(|| {
                    DataError::data(
                        path,
                        format!(
                            "{role} column {name:?} not found; columns are: {}",
                            names.join(", ")
                        ),
                    )
                })
        };
        let time = match &opts.time_column {
            Some(n) => Some(find("time", n)?),
            None if opts.find_time_column => names
                .iter()
                .position(|n| TIME_NAMES.iter().any(|t| n.eq_ignore_ascii_case(t))),
            None => None,
        };
        let label = opts
            .label_column
            .as_deref()
            .map(|n| find("label", n))
            .transpose()?;
        let channels = match &opts.channels {
            Some(wanted) => {
                let mut cols = Vec::with_capacity(wanted.len());
                for n in wanted {
                    let j = find("channel", n)?;
                    if Some(j) == time || Some(j) == label {
                        return Err(DataError::data(
                            path,
                            format!("column {n:?} cannot be both a channel and the time/label"),
                        ));
                    }
                    if cols.contains(&j) {
                        return Err(DataError::data(
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
            return Err(DataError::data(path, "no channel columns to load"));
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
        opts: &CsvOptions,
        line: u64,
        fields: &[&str],
    ) -> Result<(), DataError> {
        let err = |column: String, message: String| DataError::Parse {
            path: path.to_owned(),
            line,
            column,
            message,
        };
        if fields.len() != names.len() {
            let column = names
                .get(fields.len())
                .cloned()
                .unwrap_or_else(|| format!("<field {}>", names.len() + 1));
            return Err(err(
                column,
                format!(
                    "ragged row: expected {} fields, found {}",
                    names.len(),
                    fields.len()
                ),
            ));
        }
        for &j in &layout.channels {
            let v = parse_value(fields[j]).map_err(|m| err(names[j].clone(), m))?;
            self.rows.push(v);
        }
        if let Some(j) = layout.time {
            let t = parse_time(fields[j]).map_err(|m| err(names[j].clone(), m))?;
            if opts.ordered_times
                && let Some(&prev) = self.timestamps.last()
                && t < prev
            {
                return Err(err(
                    names[j].clone(),
                    format!(
                        "time goes backwards ({:?} is before the previous row)",
                        fields[j]
                    ),
                ));
            }
            self.timestamps.push(t);
        }
        if let Some(j) = layout.label {
            let l = parse_label(fields[j]).map_err(|m| err(names[j].clone(), m))?;
            self.labels.push(l);
        }
        Ok(())
    }
}

pub(crate) fn parse_value(s: &str) -> Result<f32, String> {
    if s.is_empty() {
        return Err("empty value".into());
    }
    match s.parse::<f32>() {
        Ok(v) if v.is_finite() => Ok(v),
        Ok(_) => Err(format!("value {s:?} is not finite")),
        Err(_) => Err(format!("cannot parse {s:?} as a number")),
    }
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::files::{parse_csv, read_csv};
    use std::io::Write;

    fn write(text: &str) -> tempfile::NamedTempFile {
        let mut f = tempfile::Builder::new().suffix(".csv").tempfile().unwrap();
        f.write_all(text.as_bytes()).unwrap();
        f
    }

    fn message(r: Result<Dataset, DataError>) -> String {
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
            separator: Separator::Char(b';'),
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

        let opts = CsvOptions {
            header: Header::Absent,
            ..CsvOptions::default()
        };
        let d = parse_csv("n.csv", "5,1,2\n6,3,4\n", &opts).unwrap();
        assert_eq!(d.channels, vec!["col_1", "col_2", "col_3"]);
        assert_eq!(d.rows, vec![5.0, 1.0, 2.0, 6.0, 3.0, 4.0]);
        assert_eq!(d.timestamps, None);
        let e = parse_csv(
            "n.csv",
            "5,1,2\n",
            &CsvOptions {
                time_column: Some("t".into()),
                ..opts.clone()
            },
        )
        .unwrap_err();
        assert!(
            e.to_string().contains("no header, so no time column"),
            "{e}"
        );
    }

    #[test]
    fn header_detection_separators_and_time_column_names() {
        let detect = CsvOptions {
            header: Header::Detect,
            find_time_column: true,
            ..CsvOptions::default()
        };
        // A header with a time column found by its name, in any case.
        let d = parse_csv("p.csv", "Time,a\n1795867200,1\n", &detect).unwrap();
        assert_eq!(d.channels, ["a"]);
        assert_eq!(d.timestamps, Some(vec![1_795_867_200_000]));
        // Numbers only: no header.
        let d = parse_csv("p.csv", "1,2\n3,4\n", &detect).unwrap();
        assert_eq!((d.channels.len(), d.len()), (2, 2));
        // A named time column matches in any case.
        let opts = CsvOptions {
            time_column: Some("WHEN".into()),
            separator: Separator::Char(b';'),
            ..detect.clone()
        };
        let d = parse_csv("p.csv", "when;a\n2026-01-01 00:03:00.5;3\n", &opts).unwrap();
        assert_eq!(d.timestamps, Some(vec![1_767_225_780_500]));
        // Whitespace, and the separator guessed from the first line.
        let ws = CsvOptions {
            separator: Separator::Whitespace,
            ..detect.clone()
        };
        let d = parse_csv("p.txt", "a  b\n1 \t2\n", &ws).unwrap();
        assert_eq!(
            (d.channels.clone(), d.rows),
            (vec!["a".into(), "b".into()], vec![1.0, 2.0])
        );
        assert_eq!(Separator::guess("x.dat", "a,b"), Separator::Whitespace);
        assert_eq!(Separator::guess("x.csv", "a;b"), Separator::Char(b';'));
        assert_eq!(Separator::guess("x.csv", "a\tb"), Separator::Char(b'\t'));
        assert_eq!(Separator::guess("x.csv", "a b"), Separator::Whitespace);
        assert_eq!("tab".parse::<Separator>().unwrap(), Separator::Char(b'\t'));
        assert!("ab".parse::<Separator>().is_err());
        // In order when asked.
        let ordered = CsvOptions {
            ordered_times: true,
            ..detect
        };
        let e = parse_csv("p.csv", "ts,a\n5,1\n4,2\n", &ordered).unwrap_err();
        assert!(
            e.to_string()
                .starts_with("p.csv: line 3, column \"ts\": time goes backwards"),
            "{e}"
        );
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
        let twice = write("a,a\n1,2\n");
        assert!(message(read_csv(twice.path(), &CsvOptions::default())).contains("more than once"));

        let empty = write("");
        assert!(message(read_csv(empty.path(), &CsvOptions::default())).contains("empty"));
        let header_only = write("a,b\n");
        assert!(message(read_csv(header_only.path(), &CsvOptions::default())).contains("no data"));
        let missing = Path::new("/nonexistent/x.csv");
        assert!(message(read_csv(missing, &CsvOptions::default())).contains("/nonexistent/x.csv"));
        // Without a header, values are numbers and rows equally long.
        let opts = CsvOptions {
            header: Header::Absent,
            ..CsvOptions::default()
        };
        let m = message(parse_csv("n.csv", "1,2\n3,x\n", &opts));
        assert!(m.starts_with("n.csv: line 2, column \"field 2\""), "{m}");
        let m = message(parse_csv("n.csv", "1,2\n3\n", &opts));
        assert!(m.contains("ragged row: expected 2 fields, found 1"), "{m}");
    }
}
