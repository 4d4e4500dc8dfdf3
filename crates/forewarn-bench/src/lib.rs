//! `forewarn bench`: end-to-end throughput, latency, memory and roofline of
//! the `serve` pipeline on a local broker, with a Python peer measured on the
//! same data in the same run. docs/BENCHMARKS.md explains every number.
//!
//! Steps (each printed as it runs):
//! 1. GEMM rate libtorch reaches here in the precision the LSTM runs in
//!    (the roofline), FLOPs per reading.
//! 2. Bytes per device: RSS delta of an engine holding many warmed devices.
//! 3. Forecaster alone: synthetic full batches straight into `step`.
//! 4. Preload a fresh topic with `readings` synthetic readings of `devices`
//!    devices (deterministic; a few devices spike now and then, so alerts
//!    open and resolve during the run).
//! 5. The real pipeline (`forewarn_ingest::run`, as `serve` runs it) in this
//!    process: time from the first consumed chunk until every reading's
//!    effects are durable and its offset stored; then the final commit is
//!    checked against the end offsets.
//! 6. The Python peer on the same topic (own consumer group), time-capped.
//! 7. Latency: a second pipeline fed at half the measured rate with the
//!    wall clock as reading timestamp; the alerts topic is read back and
//!    each alert's reading timestamp is compared with the time it arrived.
//!
//! The model is a randomly initialised network of the requested kind and
//! shape (seeded; `--kind forecaster`, the LSTM, or `--kind convlstm` over
//! `--grid`), built by the model crate's constructors:
//! throughput does not depend on the weights, and the threshold is set so
//! that only the injected spikes open alerts.
//!
//! `forewarn bench` runs this (a development crate: the service's own
//! crates never depend on it).

mod args;
mod load;
mod measure;
mod model;
mod pipeline;
mod roofline;
mod run;
mod setup;

pub use args::{BenchArgs, BenchKind};
pub use run::run;
