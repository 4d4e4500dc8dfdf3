//! Forewarn's data files, for every command that reads them (`train`,
//! `evaluate`, `classify`, `simulate --replay`): delimited text (CSV, TSV,
//! `;`, whitespace) and the Tennessee Eastman `.dat` files, loaded into one
//! row-major [`Dataset`], with one rule for the times in them
//! ([`parse_time`]). No libtorch, no network.
//!
//! Loading is strict: a value that cannot be used is an error naming the
//! file, line and column, never a silent NaN or a skipped row. A model
//! trained on quietly corrupted data fails in production, far from the cause.

mod context;
mod dataset;
mod error;
mod files;
mod table;
pub mod tep;
mod time;

pub use context::{context_flags, glob_matches};
pub use dataset::Dataset;
pub use error::DataError;
pub use files::{expand, parse_csv, read_any, read_csv, read_joined};
pub use table::{CsvOptions, Header, Separator, TIME_NAMES};
pub use time::{EPOCH_SECONDS_BELOW, parse_time};
