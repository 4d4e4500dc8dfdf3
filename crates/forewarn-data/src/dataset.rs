//! [`Dataset`]: the rows of one file (or of several joined), whatever
//! format they came in.

use std::collections::{HashMap, HashSet};
use std::ops::Range;

use sha2::{Digest, Sha256};

use crate::error::DataError;

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
    pub fn select_channels(&self, names: &[String]) -> Result<Dataset, DataError> {
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
            return Err(DataError::data(
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

    /// `parts` as one series, in order, on the first part's channels (every
    /// part must have them); the joined series has no timestamps or
    /// labels (they would not be one series' times), and its source names
    /// every part.
    pub fn joined(parts: Vec<Dataset>) -> Result<Dataset, DataError> {
        let mut parts = parts.into_iter();
        let Some(mut out) = parts.next() else {
            return Err(DataError::data("", "no data files given"));
        };
        for d in parts {
            let d = d.select_channels(&out.channels).map_err(|e| {
                DataError::data(
                    &d.source,
                    format!("has other channels than {}: {e}", out.source),
                )
            })?;
            out.rows.extend_from_slice(&d.rows);
            out.timestamps = None;
            out.labels = None;
            out.source = format!("{}+{}", out.source, d.source);
        }
        Ok(out)
    }

    /// Checks that the table can be trained on: channels, whole rows, no
    /// channel named twice, every value finite.
    pub fn check(&self) -> Result<(), DataError> {
        let c = self.n_channels();
        let bad = |m: String| Err(DataError::data(&self.source, m));
        if c == 0 {
            return bad("no channels".into());
        }
        if !self.rows.len().is_multiple_of(c) {
            return bad(format!(
                "{} values do not fill rows of {c} channels",
                self.rows.len()
            ));
        }
        let mut seen = HashSet::new();
        if let Some(dup) = self.channels.iter().find(|n| !seen.insert(n.as_str())) {
            return bad(format!("channel {dup:?} appears twice"));
        }
        if let Some(i) = self.rows.iter().position(|v| !v.is_finite()) {
            return bad(format!(
                "row {}, channel {:?} is not finite",
                i / c,
                self.channels[i % c]
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn abc() -> Dataset {
        Dataset {
            channels: vec!["a".into(), "b".into(), "c".into()],
            rows: vec![1.0, 2.0, 3.0, 4.0, 5.0, 6.0],
            timestamps: None,
            labels: Some(vec![0, 1]),
            source: "mem".into(),
        }
    }

    #[test]
    fn select_channels_reorders_and_reports_missing() {
        let d = abc();
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
    fn joined_parts_follow_the_first_parts_channels() {
        let mut other = abc();
        other.channels = vec!["c".into(), "b".into(), "a".into()];
        other.source = "other".into();
        let j = Dataset::joined(vec![abc(), other.clone()]).unwrap();
        assert_eq!(j.len(), 4);
        assert_eq!(&j.rows[6..], &[3.0, 2.0, 1.0, 6.0, 5.0, 4.0]);
        assert_eq!((j.timestamps, j.labels), (None, None));
        assert_eq!(j.source, "mem+other");
        other.channels[0] = "z".into();
        let e = Dataset::joined(vec![abc(), other]).unwrap_err().to_string();
        assert!(e.starts_with("other: has other channels than mem"), "{e}");
        assert!(Dataset::joined(vec![]).is_err());
    }

    #[test]
    fn check_names_what_cannot_be_trained_on() {
        abc().check().unwrap();
        let mut d = abc();
        d.rows[4] = f32::NAN;
        let e = d.check().unwrap_err().to_string();
        assert!(e.contains("row 1") && e.contains("\"b\""), "{e}");
        let mut d = abc();
        d.channels[2] = "a".into();
        assert!(d.check().unwrap_err().to_string().contains("twice"));
        let mut d = abc();
        d.rows.pop();
        assert!(d.check().unwrap_err().to_string().contains("do not fill"));
    }
}
