//! How `train` and `evaluate` print what fitting reports (to stderr; the
//! results go to stdout and the report).

use forewarn_offline::Progress;

/// Prints `p`, fitting's lines indented by `indent` (a calibration's
/// lines by two spaces).
pub fn print(indent: &str, p: Progress<'_>) {
    match p {
        Progress::Gaussian(_) | Progress::SeasonalResidual { .. } => eprintln!("  {p}"),
        _ => eprintln!("{indent}{p}"),
    }
}
