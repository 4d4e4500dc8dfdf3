//! Data files: reading one (whatever its format), several as one
//! series, and finding them in folders.

use std::fs::File;
use std::io::BufReader;
use std::path::{Path, PathBuf};

use crate::dataset::Dataset;
use crate::error::DataError;
use crate::table::{CsvOptions, parse};
use crate::tep;

/// `.dat` files are read as Tennessee Eastman data ([`tep::read_tep`]),
/// anything else as delimited text ([`read_csv`]).
pub fn read_any(path: &Path, opts: &CsvOptions) -> Result<Dataset, DataError> {
    if path
        .extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("dat"))
    {
        tep::read_tep(path)
    } else {
        read_csv(path, opts)
    }
}

/// Reads a delimited text file with one row per sample (a table without
/// a header in the Tennessee Eastman shape gets its names, [`tep::orient`]).
pub fn read_csv(path: &Path, opts: &CsvOptions) -> Result<Dataset, DataError> {
    let file = File::open(path).map_err(|e| DataError::io(path, e))?;
    let (data, header) = parse(path, BufReader::new(file), opts)?;
    Ok(if header { data } else { tep::orient(data) })
}

/// [`read_csv`] of text already in memory; `name` stands for the file in
/// messages.
pub fn parse_csv(name: &str, text: &str, opts: &CsvOptions) -> Result<Dataset, DataError> {
    let (data, header) = parse(Path::new(name), text.as_bytes(), opts)?;
    Ok(if header { data } else { tep::orient(data) })
}

/// The files named by `paths`: files as given, folders searched
/// recursively for `.csv`/`.txt`/`.tsv`/`.dat` files, in name order.
pub fn expand(paths: &[PathBuf]) -> Result<Vec<PathBuf>, DataError> {
    let mut out = Vec::new();
    for p in paths {
        if p.is_dir() {
            let mut found = Vec::new();
            walk(p, &mut found)?;
            found.sort();
            out.extend(found);
        } else if p.is_file() {
            out.push(p.clone());
        } else {
            return Err(DataError::data(p, "no such file or folder"));
        }
    }
    Ok(out)
}

fn walk(dir: &Path, out: &mut Vec<PathBuf>) -> Result<(), DataError> {
    let entries = std::fs::read_dir(dir).map_err(|e| DataError::io(dir, e))?;
    for entry in entries {
        let path = entry.map_err(|e| DataError::io(dir, e))?.path();
        if path.is_dir() {
            walk(&path, out)?;
        } else if path.extension().and_then(|e| e.to_str()).is_some_and(|e| {
            ["csv", "txt", "tsv", "dat"].contains(&e.to_ascii_lowercase().as_str())
        }) {
            out.push(path);
        }
    }
    Ok(())
}

/// Every file of `paths` ([`read_any`]) joined into one series
/// ([`Dataset::joined`]: the channels of the first).
pub fn read_joined(paths: &[PathBuf], opts: &CsvOptions) -> Result<Dataset, DataError> {
    let parts = paths
        .iter()
        .map(|p| read_any(p, opts))
        .collect::<Result<Vec<_>, _>>()?;
    Dataset::joined(parts)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expand_finds_data_files_in_folders_in_name_order() {
        let dir = tempfile::tempdir().unwrap();
        let sub = dir.path().join("sub");
        std::fs::create_dir(&sub).unwrap();
        for name in ["b.csv", "a.dat", "notes.md", "sub/c.TSV"] {
            std::fs::write(dir.path().join(name), "").unwrap();
        }
        let got = expand(&[dir.path().to_owned()]).unwrap();
        let names: Vec<_> = got
            .iter()
            .map(|p| p.strip_prefix(dir.path()).unwrap().to_owned())
            .collect();
        assert_eq!(
            names,
            ["a.dat", "b.csv", "sub/c.TSV"].map(PathBuf::from).to_vec()
        );
        let e = expand(&[dir.path().join("nope.csv")]).unwrap_err();
        assert!(e.to_string().contains("no such file"), "{e}");
    }
}
