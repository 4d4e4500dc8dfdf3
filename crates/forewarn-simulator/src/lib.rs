//! Forewarn's plant simulator and replay.
//!
//! * [`Plant`] generates realistic, deterministic (for a seed) multichannel
//!   readings for many devices: a few latent factors (load, ambient
//!   temperature, fast hydraulic disturbance, tank inventory) follow slow
//!   Ornstein–Uhlenbeck processes plus a 24 h cycle; every channel is a base
//!   level plus its loadings on those factors (temperatures follow load and
//!   ambient through a first-order lag) plus Gaussian measurement noise.
//! * [`Fault`]s (step, drift, stuck, oscillation, spike) are injected on one
//!   channel of one device, sized in units of that channel's normal standard
//!   deviation, and parsed from compact strings such as
//!   `plant-0003:bearing_temp:drift:3@10m`.
//! * [`Grid`] simulates plates of temperature sensors on a grid (heat
//!   diffusion, heaters as context channels) with spatial [`GridFault`]s
//!   (`plate-0001:hotspot@10m+20m:3,4`); [`write_grid_csv`] exports them
//!   with their labels and fault locations.
//! * [`Replay`] reads a CSV file or a Tennessee Eastman `.dat` file (with
//!   `forewarn_data`, as every command reads data files) and yields its
//!   rows as readings.
//!
//! * [`Stream`] merges the plant's devices and a replayed file into the
//!   readings `forewarn simulate` sends, tick by tick, [`Pace`]d in wall
//!   time; [`write_csv`] exports a plant as CSV.
//!
//! No I/O other than reading a replay file (CSV export writes to any
//! writer); no clocks (the caller supplies the start time).

mod duration;
mod fault;
mod grid;
mod plant;
mod replay;
mod stream;

pub use duration::{format_duration_ms, parse_duration_ms};
pub use fault::{Fault, FaultKind};
pub use grid::{
    GRID_FAULT_HELP, Grid, GridConfig, GridFault, GridFaultKind, GridLocation, GridSize, plate_id,
};
pub use plant::{
    DEFAULT_CHANNELS, DEFAULT_START_MS, Plant, PlantConfig, Tick, device_id, parse_device_id,
};
pub use replay::{Replay, ReplayOptions};
pub use stream::{
    LABEL_COLUMN, Origin, Pace, Replayed, Source, Stream, TickReadings, write_csv, write_grid_csv,
};

/// Everything that can go wrong building a plant, parsing a fault or reading
/// a replay file. Messages name the offending input (and file and line).
#[derive(Debug, thiserror::Error)]
pub enum SimError {
    #[error("invalid plant configuration: {0}")]
    Config(String),
    #[error("invalid grid size {0:?}: expected ROWSxCOLS, 1 to 64 each, e.g. 8x8")]
    GridSize(String),
    #[error("invalid duration {input:?}: {reason}")]
    Duration { input: String, reason: String },
    #[error("invalid fault {spec:?}: {reason}")]
    FaultSpec { spec: String, reason: String },
    #[error("fault {fault}: unknown device {device:?} ({known})")]
    UnknownDevice {
        fault: String,
        device: String,
        known: String,
    },
    #[error("fault {fault}: unknown channel {channel:?} (channels: {known})")]
    UnknownChannel {
        fault: String,
        channel: String,
        known: String,
    },
    #[error("{path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
    /// A replay file that cannot be read as data.
    #[error(transparent)]
    Data(#[from] forewarn_data::DataError),
    #[error("{path}: {msg}")]
    Replay { path: String, msg: String },
}
