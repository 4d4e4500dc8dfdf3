//! ConvLSTM (Shi et al., 2015) for sensors laid out on a grid: the gates
//! are convolutions over the grid, so a cell is explained by its
//! neighbours, which a joint LSTM flattens away.
//!
//! Every row of readings becomes a frame `[1 + K, rows, cols]`: one map of
//! the grid channels (a cell without a channel, a gap, reads 0) and one
//! constant map per context channel (the channels off the grid). Stacked
//! cells (`layers`, `filters` each, gates = one `kernel` x `kernel` conv
//! over `[input ; h]`, "same" padding) run frame by frame, and a 1x1 conv
//! from the last layer's `h` forecasts the next `horizon` frames, read
//! back at the monitored channels' cells (gaps are never forecast, so never
//! in the loss or the score). It implements [`forewarn_core::Forecaster`]
//! as the joint forecaster does: one call advances many devices through
//! their batch, and the forecast after the batch's last row is the next
//! batch's.
//!
//! Per-device state: every layer's `(h, c)` maps, packed as
//! `[h_0 | c_0 | h_1 | c_1 | ...]`, each `filters x rows x cols`.
//!
//! An optional highway ([`Highway`], as the forecaster's): a linear map of
//! the batch's last row, every channel including context, added to the
//! forecast. The convolutions are the same at every cell and read context
//! channels as uniform maps, so they cannot tell where on the plate a
//! heater acts or what level a cell holds; the highway's per-cell weights
//! can (fitted by least squares before training, as the forecaster's).

use std::path::Path;

use forewarn_core::engine::{Forecaster, StepBatch};
use tch::nn::{self, Module};
use tch::{Device, Kind, Tensor};

use crate::error::{ModelError, TorchContext};
use crate::highway::{Highway, HighwayLayer};

/// Largest kernel: beyond it a cell's gates see most of any real grid.
pub const MAX_KERNEL: usize = 15;
/// Largest grid side and filters count, so a corrupt file cannot size
/// per-device state absurdly.
pub const MAX_GRID_SIDE: usize = 4096;
pub const MAX_FILTERS: usize = 4096;
/// Largest per-device state (values).
pub const MAX_STATE: usize = 1 << 26;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConvLstmSpec {
    /// Input channels (on the grid and context).
    pub channels: usize,
    pub rows: usize,
    pub cols: usize,
    /// Row-major over the grid's `rows x cols` cells: the input channel at
    /// each cell, `None` for a gap. The channels on the grid are the
    /// monitored ones; every other input is a context channel.
    pub cells: Vec<Option<usize>>,
    /// Odd side of the gates' convolution.
    pub kernel: usize,
    /// Hidden maps per layer.
    pub filters: usize,
    pub layers: usize,
    pub horizon: usize,
}

impl ConvLstmSpec {
    pub fn state_len(&self) -> usize {
        self.layers * 2 * self.filters * self.rows * self.cols
    }

    /// Forecast (monitored) channels: the ones on the grid.
    pub fn outputs(&self) -> usize {
        self.cells.iter().flatten().count()
    }

    pub fn output_len(&self) -> usize {
        self.horizon * self.outputs()
    }

    pub fn input_len(&self) -> usize {
        self.horizon * self.channels
    }

    /// Positions of the monitored channels (those on the grid), increasing.
    pub fn monitored(&self) -> Vec<usize> {
        let mut m: Vec<usize> = self.cells.iter().flatten().copied().collect();
        m.sort_unstable();
        m
    }

    /// Positions of the context channels (off the grid), increasing.
    pub fn context(&self) -> Vec<usize> {
        let m = self.monitored();
        (0..self.channels).filter(|j| !m.contains(j)).collect()
    }

    /// Checks sizes and the layout; the message names the setting.
    pub fn validate(&self) -> Result<(), String> {
        for (name, v) in [
            ("channels", self.channels),
            ("grid rows", self.rows),
            ("grid cols", self.cols),
            ("filters", self.filters),
            ("layers", self.layers),
            ("horizon", self.horizon),
        ] {
            if v == 0 {
                return Err(format!("{name} must be at least 1"));
            }
        }
        if self.rows > MAX_GRID_SIDE || self.cols > MAX_GRID_SIDE {
            return Err(format!(
                "grid {}x{} has a side over {MAX_GRID_SIDE}",
                self.rows, self.cols
            ));
        }
        if self.filters > MAX_FILTERS {
            return Err(format!("filters {} is over {MAX_FILTERS}", self.filters));
        }
        if self.kernel.is_multiple_of(2) || self.kernel > MAX_KERNEL {
            return Err(format!(
                "kernel {} must be odd and at most {MAX_KERNEL} (\"same\" padding)",
                self.kernel
            ));
        }
        if self.cells.len() != self.rows * self.cols {
            return Err(format!(
                "layout has {} cells for a {}x{} grid",
                self.cells.len(),
                self.rows,
                self.cols
            ));
        }
        let mut seen = vec![false; self.channels];
        for &j in self.cells.iter().flatten() {
            if j >= self.channels {
                return Err(format!("layout names input {j} of {}", self.channels));
            }
            if std::mem::replace(&mut seen[j], true) {
                return Err(format!("layout places input {j} twice"));
            }
        }
        if self.outputs() == 0 {
            return Err("layout places no channel on the grid".into());
        }
        if self.layers > 64 || self.state_len() > MAX_STATE {
            return Err(format!(
                "{} layers of {} filters on a {}x{} grid: state of {} values is over {MAX_STATE}",
                self.layers,
                self.filters,
                self.rows,
                self.cols,
                self.state_len()
            ));
        }
        Ok(())
    }
}

/// The cells of a `rows x cols` grid over the channels `names`, of which
/// `monitored` are forecast: `layout` row-major, a channel name per cell
/// (`None` a gap), or, absent, the monitored channels row-major (gaps at
/// the end). Every monitored channel must be on the grid exactly once and
/// no context channel on it (context channels are whole-grid maps). The
/// message names the problem.
pub fn resolve_layout(
    names: &[String],
    monitored: &[usize],
    rows: usize,
    cols: usize,
    layout: Option<&[Option<String>]>,
) -> Result<Vec<Option<usize>>, String> {
    let cells = rows
        .checked_mul(cols)
        .filter(|&n| n > 0 && rows <= MAX_GRID_SIDE && cols <= MAX_GRID_SIDE)
        .ok_or_else(|| format!("grid {rows}x{cols} must have sides in 1..={MAX_GRID_SIDE}"))?;
    let Some(layout) = layout else {
        if monitored.len() > cells {
            return Err(format!(
                "grid {rows}x{cols} has {cells} cells, fewer than the {} monitored channels",
                monitored.len()
            ));
        }
        let mut v: Vec<Option<usize>> = monitored.iter().map(|&j| Some(j)).collect();
        v.resize(cells, None);
        return Ok(v);
    };
    if layout.len() != cells {
        return Err(format!(
            "layout has {} cells, grid {rows}x{cols} has {cells}",
            layout.len()
        ));
    }
    let mut out = Vec::with_capacity(cells);
    for name in layout {
        let Some(name) = name else {
            out.push(None);
            continue;
        };
        let j = names
            .iter()
            .position(|n| n == name)
            .ok_or_else(|| format!("layout names {name:?}, which is not a channel"))?;
        if !monitored.contains(&j) {
            return Err(format!(
                "layout places context channel {name:?} on the grid; context channels are \
                 read as whole-grid maps"
            ));
        }
        if out.contains(&Some(j)) {
            return Err(format!("layout places {name:?} twice"));
        }
        out.push(Some(j));
    }
    if let Some(&j) = monitored.iter().find(|j| !out.contains(&Some(**j))) {
        return Err(format!(
            "monitored channel {:?} is not on the grid: place it in layout or name it as context",
            names[j]
        ));
    }
    Ok(out)
}

/// Every layer's `(h, c)`, each `[B, filters, rows, cols]`.
pub struct ConvLstmState(pub Vec<(Tensor, Tensor)>);

impl ConvLstmState {
    /// The same state cut from the graph that computed it (truncated BPTT
    /// carries the state, not the graph).
    pub fn detach(&self) -> Self {
        Self(
            self.0
                .iter()
                .map(|(h, c)| (h.detach(), c.detach()))
                .collect(),
        )
    }
}

pub struct ConvLstm {
    spec: ConvLstmSpec,
    vs: nn::VarStore,
    /// Per layer: the gates' conv over `[input ; h]`, `4 x filters` maps.
    gates: Vec<nn::Conv2D>,
    /// 1x1 conv from the last layer's `h` to the next `horizon` frames.
    head: nn::Conv2D,
    highway: Highway,
    highway_layer: Option<HighwayLayer>,
    monitored: Vec<usize>,
    /// Per input channel of the grid map, row-major: the input read at
    /// each cell (0 at gaps, zeroed by `cell_mask`).
    cell_src: Tensor,
    cell_mask: Tensor,
    context_idx: Tensor,
    /// Per monitored channel, in order: its cell (row-major).
    out_cells: Tensor,
}

impl std::fmt::Debug for ConvLstm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConvLstm")
            .field("spec", &self.spec)
            .finish_non_exhaustive()
    }
}

impl ConvLstm {
    /// A freshly initialised network of `spec` on `device`, without a
    /// highway.
    pub fn new(spec: ConvLstmSpec, device: Device) -> Result<Self, ModelError> {
        Self::with_highway(spec, Highway::None, device)
    }

    /// A freshly initialised network with `highway` (its weights start at
    /// zero).
    pub fn with_highway(
        spec: ConvLstmSpec,
        highway: Highway,
        device: Device,
    ) -> Result<Self, ModelError> {
        spec.validate()
            .map_err(|m| ModelError::Config(format!("convlstm: {m}")))?;
        let vs = nn::VarStore::new(device);
        let root = vs.root();
        let k = spec.kernel as i64;
        let f = spec.filters as i64;
        let inputs = 1 + spec.context().len() as i64;
        let conv = nn::ConvConfig {
            padding: k / 2,
            ..Default::default()
        };
        let gates = (0..spec.layers)
            .map(|l| {
                let x = if l == 0 { inputs } else { f };
                nn::conv2d(&root / format!("cell{l}"), x + f, 4 * f, k, conv)
            })
            .collect();
        let head = nn::conv2d(
            &root / "head",
            f,
            spec.horizon as i64,
            1,
            Default::default(),
        );
        let monitored = spec.monitored();
        let highway_layer = HighwayLayer::new(
            &root,
            highway,
            spec.horizon,
            &monitored,
            spec.channels,
            device,
        )?;
        let index = |v: Vec<i64>| {
            Tensor::f_from_slice(&v)
                .and_then(|t| t.f_to_device(device))
                .ctx("grid index")
        };
        let cell_src = index(spec.cells.iter().map(|c| c.unwrap_or(0) as i64).collect())?;
        let cell_mask = Tensor::f_from_slice(
            &spec
                .cells
                .iter()
                .map(|c| if c.is_some() { 1f32 } else { 0.0 })
                .collect::<Vec<_>>(),
        )
        .and_then(|t| t.f_to_device(device))
        .ctx("grid mask")?;
        let context_idx = index(spec.context().into_iter().map(|j| j as i64).collect())?;
        let out_cells = index(
            monitored
                .iter()
                .map(|&j| spec.cells.iter().position(|c| *c == Some(j)).unwrap_or(0) as i64)
                .collect(),
        )?;
        Ok(Self {
            spec,
            vs,
            gates,
            head,
            highway,
            highway_layer,
            monitored,
            cell_src,
            cell_mask,
            context_idx,
            out_cells,
        })
    }

    /// A network of `spec` and `highway` with the weights in the
    /// safetensors file `path`, checked against it first (names, dtypes,
    /// shapes, finite).
    pub fn load(
        spec: ConvLstmSpec,
        highway: Highway,
        path: &Path,
        device: Device,
    ) -> Result<Self, ModelError> {
        let model = Self::with_highway(spec, highway, device)?;
        crate::weights::load_into(&model.vs, path)?;
        Ok(model)
    }

    pub fn spec(&self) -> &ConvLstmSpec {
        &self.spec
    }

    pub fn highway(&self) -> Highway {
        self.highway
    }

    /// Sets the highway's weights (`[H*M, C]` row-major; masked entries
    /// zero): training starts from a least-squares fit.
    pub(crate) fn set_highway_weight(&self, w: &[f32]) -> Result<(), ModelError> {
        crate::highway::set_weight(self.highway_layer.as_ref(), w)
    }

    /// Positions of the forecast (monitored) channels among the inputs.
    pub fn monitored(&self) -> &[usize] {
        &self.monitored
    }

    pub fn var_store(&self) -> &nn::VarStore {
        &self.vs
    }

    pub fn zero_state(&self, batch: i64) -> ConvLstmState {
        let s = &self.spec;
        let shape = [batch, s.filters as i64, s.rows as i64, s.cols as i64];
        let z = || Tensor::zeros(shape, (Kind::Float, self.vs.device()));
        ConvLstmState((0..s.layers).map(|_| (z(), z())).collect())
    }

    /// `x`: `[B, T, C]` scaled rows as frames `[B, T, 1 + K, rows, cols]`.
    fn frames(&self, x: &Tensor) -> Result<Tensor, ModelError> {
        let (b, t) = (x.size()[0], x.size()[1]);
        let (r, c) = (self.spec.rows as i64, self.spec.cols as i64);
        let grid = x
            .f_index_select(2, &self.cell_src)
            .map(|g| (g * &self.cell_mask).view([b, t, 1, r, c]))
            .ctx("grid map")?;
        let k = self.context_idx.size()[0];
        if k == 0 {
            return Ok(grid);
        }
        let ctx = x
            .f_index_select(2, &self.context_idx)
            .and_then(|v| v.f_view([b, t, k, 1, 1]))
            .and_then(|v| v.f_expand([b, t, k, r, c], false))
            .ctx("context maps")?;
        Tensor::f_cat(&[grid, ctx], 2).ctx("frames")
    }

    /// `x`: `[B, T, C]` scaled rows. Returns the forecasts at every step
    /// (`[B, T, horizon x outputs]`, row-major rows of the monitored
    /// channels) and the final state.
    pub fn forward_seq(
        &self,
        x: &Tensor,
        state: Option<&ConvLstmState>,
    ) -> Result<(Tensor, ConvLstmState), ModelError> {
        let (b, t) = (x.size()[0], x.size()[1]);
        let mut st: Vec<(Tensor, Tensor)> = match state {
            Some(s) => {
                s.0.iter()
                    .map(|(h, c)| (h.shallow_clone(), c.shallow_clone()))
                    .collect()
            }
            None => self.zero_state(b).0,
        };
        let frames = self.frames(x)?;
        let mut tops = Vec::with_capacity(t as usize);
        for step in 0..t {
            let mut input = frames.select(1, step);
            for (gates, (h, c)) in self.gates.iter().zip(st.iter_mut()) {
                let g = gates.forward(&Tensor::cat(&[&input, &*h], 1));
                let parts = g.chunk(4, 1);
                let (i, f, gg, o) = (&parts[0], &parts[1], &parts[2], &parts[3]);
                *c = f.sigmoid() * &*c + i.sigmoid() * gg.tanh();
                *h = o.sigmoid() * c.tanh();
                input = h.shallow_clone();
            }
            tops.push(input);
        }
        let (r, cc) = (self.spec.rows as i64, self.spec.cols as i64);
        let hz = self.spec.horizon as i64;
        let top = Tensor::stack(&tops, 1).view([b * t, self.spec.filters as i64, r, cc]);
        let y = self
            .head
            .forward(&top)
            .view([b * t, hz, r * cc])
            .f_index_select(2, &self.out_cells)
            .and_then(|y| y.f_reshape([b, t, -1]))
            .ctx("reading the forecast at the channels' cells")?;
        let y = crate::highway::add(self.highway_layer.as_ref(), y, x)?;
        Ok((y, ConvLstmState(st)))
    }

    fn unpack(&self, states: &[f32], n: i64) -> Result<ConvLstmState, ModelError> {
        let s = &self.spec;
        let shape = [n, s.filters as i64, s.rows as i64, s.cols as i64];
        let per = (s.filters * s.rows * s.cols) as i64;
        let all = Tensor::f_from_slice(states)
            .and_then(|t| t.f_view([n, s.state_len() as i64]))
            .and_then(|t| t.f_to_device(self.vs.device()))
            .ctx("states")?;
        let map = |k: i64| all.narrow(1, k * per, per).contiguous().view(shape);
        Ok(ConvLstmState(
            (0..s.layers as i64)
                .map(|l| (map(2 * l), map(2 * l + 1)))
                .collect(),
        ))
    }

    fn pack(&self, st: &ConvLstmState, n: i64, out: &mut [f32]) -> Result<(), ModelError> {
        let parts: Vec<Tensor> =
            st.0.iter()
                .flat_map(|(h, c)| [h.view([n, -1]), c.view([n, -1])])
                .collect();
        let all = Tensor::f_cat(&parts, 1)
            .and_then(|t| t.f_to_device(Device::Cpu))
            .ctx("packing states")?
            .contiguous();
        all.f_copy_data(out, out.len()).ctx("copying states")
    }
}

impl Forecaster for ConvLstm {
    type Error = ModelError;

    fn state_len(&self) -> usize {
        self.spec.state_len()
    }

    /// Advances all `n` devices through their batch, frame by frame; the
    /// forecast after the last row is the next batch's.
    fn step(&mut self, b: &mut StepBatch) -> Result<(), ModelError> {
        let s = &self.spec;
        if b.channels != s.channels
            || b.outputs != s.outputs()
            || b.horizon != s.horizon
            || b.state_len != s.state_len()
            || b.inputs.len() != b.n * s.input_len()
            || b.states.len() != b.n * s.state_len()
            || b.predictions.len() != b.n * s.output_len()
        {
            return Err(ModelError::Shape(format!(
                "batch of {} devices does not fit the convlstm model {s:?}",
                b.n
            )));
        }
        if b.n == 0 {
            return Ok(());
        }
        let (n, t, c) = (b.n as i64, s.horizon as i64, s.channels as i64);
        let out_len = b.n * s.output_len();
        let dev = self.vs.device();
        tch::no_grad(|| -> Result<(), ModelError> {
            let x = Tensor::f_from_slice(&b.inputs)
                .and_then(|x| x.f_view([n, t, c]))
                .and_then(|x| x.f_to_device(dev))
                .ctx("inputs")?;
            let st = self.unpack(&b.states, n)?;
            let (y, st1) = self.forward_seq(&x, Some(&st))?;
            let last = y.select(1, t - 1).to_device(Device::Cpu).contiguous();
            last.f_copy_data(&mut b.predictions, out_len)
                .ctx("copying forecasts")?;
            self.pack(&st1, n, &mut b.states)
        })
    }
}

#[cfg(test)]
mod tests;
