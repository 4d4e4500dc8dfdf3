//! The network under test, of the kind `--kind` names, built through the
//! model crate's own constructors (as `forewarn train` builds it), with its
//! FLOPs per reading and the shape of its main GEMM.

use anyhow::Context;
use forewarn_model::convlstm::{ConvLstm, ConvLstmSpec};
use forewarn_model::{Device, Highway, LstmForecaster, ModelSpec, Network};

use crate::args::BenchArgs;
use crate::roofline::{Flops, convlstm_flops_per_reading, flops_per_reading};

/// What a forecaster call exchanges per device.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Shape {
    pub(crate) channels: usize,
    pub(crate) outputs: usize,
    pub(crate) horizon: usize,
    pub(crate) state_len: usize,
}

pub(crate) struct Built {
    pub(crate) network: Network,
    pub(crate) shape: Shape,
    pub(crate) flops: Flops,
    /// What `flops.lstm` and `flops.head` are, and how the head runs, for
    /// the model line.
    pub(crate) flops_parts: [&'static str; 3],
    /// One line: the kind and its shape.
    pub(crate) describe: String,
    /// `[m, k, n]` of the model's own GEMM at `max_batch` devices, and its
    /// name.
    pub(crate) gemm: ([i64; 3], String),
}

/// A randomly initialised network of the arguments' kind and shape
/// (`args.channels` already the grid's cells for convlstm).
pub(crate) fn build(args: &BenchArgs, device: Device) -> anyhow::Result<Built> {
    let b = args.max_batch as i64;
    match args.grid_shape().map_err(anyhow::Error::msg)? {
        None => {
            let spec = ModelSpec {
                channels: args.channels,
                outputs: args.channels,
                hidden: args.hidden,
                layers: args.layers,
                horizon: args.horizon,
            };
            spec.validate().map_err(anyhow::Error::msg)?;
            let members = (0..args.members)
                .map(|_| {
                    let mut m = LstmForecaster::with_highway(spec, args.highway, device)
                        .context("creating the model")?;
                    m.set_precision(args.precision).context("--precision")?;
                    Ok(Network::Forecaster(m))
                })
                .collect::<anyhow::Result<Vec<_>>>()?;
            let network = Network::ensemble(members).context("--members")?;
            let h = args.hidden as i64;
            let one = flops_per_reading(&spec, args.highway);
            let k = args.members as f64;
            Ok(Built {
                network,
                shape: Shape {
                    channels: spec.channels,
                    outputs: spec.outputs,
                    horizon: spec.horizon,
                    state_len: args.members * spec.state_len(),
                },
                flops: Flops {
                    lstm: k * one.lstm,
                    head: k * one.head,
                },
                flops_parts: ["LSTM", "head and highway", " per batch / horizon"],
                describe: format!(
                    "LSTM channels={} hidden={} layers={} horizon={} highway={:?}{}",
                    spec.channels,
                    spec.hidden,
                    spec.layers,
                    spec.horizon,
                    args.highway,
                    if args.members > 1 {
                        format!(" members={}", args.members)
                    } else {
                        String::new()
                    }
                ),
                gemm: ([b, h, 4 * h], "the LSTM's recurrent shape".into()),
            })
        }
        Some(g) => {
            if args.members != 1 {
                anyhow::bail!("--members is measured for the forecaster only");
            }
            let cells = g.rows * g.cols;
            let spec = ConvLstmSpec {
                channels: cells,
                rows: g.rows,
                cols: g.cols,
                cells: (0..cells).map(Some).collect(),
                kernel: g.kernel,
                filters: g.filters,
                layers: args.layers,
                horizon: args.horizon,
            };
            let mut network = Network::ConvLstm(
                ConvLstm::with_highway(spec.clone(), args.highway, device)
                    .context("creating the model")?,
            );
            network
                .set_precision(args.precision)
                .context("--precision")?;
            let f = g.filters as i64;
            Ok(Built {
                network,
                shape: Shape {
                    channels: spec.channels,
                    outputs: spec.outputs(),
                    horizon: spec.horizon,
                    state_len: spec.state_len(),
                },
                flops: convlstm_flops_per_reading(&spec, args.highway),
                flops_parts: [
                    "gate convs",
                    match args.highway {
                        Highway::None => "1x1 head conv",
                        Highway::Full | Highway::Cross => "1x1 head conv and highway",
                    },
                    " on every frame",
                ],
                describe: format!(
                    "convlstm grid={}x{} (channels={cells}) kernel={} filters={} layers={} horizon={} highway={:?}",
                    g.rows, g.cols, g.kernel, g.filters, spec.layers, spec.horizon, args.highway
                ),
                gemm: (
                    [
                        b * cells as i64,
                        2 * f * (g.kernel * g.kernel) as i64,
                        4 * f,
                    ],
                    "the convlstm's last-layer gate conv as an im2col GEMM".into(),
                ),
            })
        }
    }
}
