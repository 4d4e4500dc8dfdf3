//! `--plot`: one PNG per file, drawn without text (no font dependency).
//!
//! Three panels, time left to right (rows):
//! 1. the channels, each standardised over the file and clipped to +-4,
//!    on a grey background over the training rows and a pink one over the
//!    labelled segments;
//! 2. log10 of the score the threshold strategy compares (black) and
//!    log10 of its threshold (red), per batch;
//! 3. labelled segments (red, upper bar) and detected points (blue, lower bar).

use std::path::Path;

use forewarn_data::Dataset;
use forewarn_eval::segments;
use plotters::prelude::*;

use crate::error::OfflineError;
use crate::files::create_parent;
use crate::replay::Decision;

const WIDTH: u32 = 1400;
const MAX_CHANNELS: usize = 24;

fn err<E: std::fmt::Debug>(e: E) -> OfflineError {
    OfflineError::Plot(format!("{e:?}"))
}

pub fn plot_file(
    out: &Path,
    data: &Dataset,
    labels: &[bool],
    pred: &[bool],
    decisions: &[Decision],
    skip: usize,
) -> Result<(), OfflineError> {
    create_parent(out)?;
    let n = data.len().max(2);
    let xr = 0f64..n as f64;
    let root = BitMapBackend::new(out, (WIDTH, 720)).into_drawing_area();
    root.fill(&WHITE).map_err(err)?;
    let (top, rest) = root.split_vertically(360);
    let (mid, bottom) = rest.split_vertically(280);

    // 1. Channels.
    let mut chart = ChartBuilder::on(&top)
        .margin(8)
        .build_cartesian_2d(xr.clone(), -4f64..4f64)
        .map_err(err)?;
    let shade = |from: usize, to: usize, color: RGBColor| {
        Rectangle::new(
            [(from as f64, -4.0), (to as f64 + 1.0, 4.0)],
            color.filled(),
        )
    };
    chart
        .draw_series(std::iter::once(shade(
            0,
            skip.saturating_sub(1),
            RGBColor(225, 225, 225),
        )))
        .map_err(err)?;
    chart
        .draw_series(
            segments(labels)
                .into_iter()
                .map(|s| shade(s.start, s.end, RGBColor(255, 215, 215))),
        )
        .map_err(err)?;
    let c = data.n_channels();
    for ch in 0..c.min(MAX_CHANNELS) {
        let values: Vec<f64> = (0..data.len()).map(|i| data.row(i)[ch] as f64).collect();
        let mean = values.iter().sum::<f64>() / values.len().max(1) as f64;
        let sd = (values.iter().map(|v| (v - mean).powi(2)).sum::<f64>()
            / values.len().max(1) as f64)
            .sqrt()
            .max(1e-9);
        chart
            .draw_series(LineSeries::new(
                values
                    .iter()
                    .enumerate()
                    .map(|(i, v)| (i as f64, ((v - mean) / sd).clamp(-4.0, 4.0))),
                Palette99::pick(ch).mix(0.7),
            ))
            .map_err(err)?;
    }

    // 2. Score and threshold (log10; non-positive and infinite values clipped).
    let log = |v: f64| v.max(1e-12).log10();
    let mut lo = f64::INFINITY;
    let mut hi = f64::NEG_INFINITY;
    for d in decisions {
        for v in [d.score, d.threshold] {
            if v.is_finite() {
                lo = lo.min(log(v));
                hi = hi.max(log(v));
            }
        }
    }
    if !(lo.is_finite() && hi.is_finite()) {
        (lo, hi) = (-1.0, 1.0);
    }
    let pad = ((hi - lo) * 0.05).max(0.1);
    let yr = (lo - pad)..(hi + pad);
    let mut chart = ChartBuilder::on(&mid)
        .margin(8)
        .build_cartesian_2d(xr.clone(), yr.clone())
        .map_err(err)?;
    chart
        .draw_series(segments(labels).into_iter().map(|s| {
            Rectangle::new(
                [(s.start as f64, yr.start), (s.end as f64 + 1.0, yr.end)],
                RGBColor(255, 215, 215).filled(),
            )
        }))
        .map_err(err)?;
    let clip = |v: f64| log(v).clamp(yr.start, yr.end);
    chart
        .draw_series(LineSeries::new(
            decisions.iter().flat_map(|d| {
                let y = clip(d.score);
                [(d.start as f64, y), (d.end as f64 + 1.0, y)]
            }),
            &BLACK,
        ))
        .map_err(err)?;
    chart
        .draw_series(LineSeries::new(
            decisions.iter().flat_map(|d| {
                let y = clip(d.threshold);
                [(d.start as f64, y), (d.end as f64 + 1.0, y)]
            }),
            RED.stroke_width(2),
        ))
        .map_err(err)?;

    // 3. Labelled (upper) and detected (lower) segments.
    let mut chart = ChartBuilder::on(&bottom)
        .margin(8)
        .build_cartesian_2d(xr, 0f64..1f64)
        .map_err(err)?;
    let bar = |s: forewarn_eval::Segment, y0: f64, y1: f64, color: RGBColor| {
        Rectangle::new(
            [(s.start as f64, y0), (s.end as f64 + 1.0, y1)],
            color.filled(),
        )
    };
    chart
        .draw_series(
            segments(labels)
                .into_iter()
                .map(|s| bar(s, 0.55, 0.95, RGBColor(220, 40, 40))),
        )
        .map_err(err)?;
    chart
        .draw_series(
            segments(pred)
                .into_iter()
                .map(|s| bar(s, 0.05, 0.45, RGBColor(40, 90, 220))),
        )
        .map_err(err)?;
    root.present().map_err(err)?;
    Ok(())
}
