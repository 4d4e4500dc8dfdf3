//! Plates of temperature sensors on a grid: a sensor is explained by its
//! neighbours, the data a convolutional recurrent model is made for.
//!
//! # Model
//! A plate is a ROWS x COLS grid of cells (°C). Each cell relaxes toward
//! the ambient temperature (τ ≈ 10 min) and exchanges heat with its four
//! neighbours (insulated edges); a few heaters, at cells derived from the
//! seed, heat their 3 x 3 neighbourhood in proportion to their power. The
//! heat equation is integrated with explicit finite differences, in as
//! many sub-steps per sampling period as keep it stable and monotone.
//! Heater powers (commanded, 0-100 %) follow an operator's schedule: a new
//! setpoint every 3-10 minutes, reached by a step or a 1-3 minute ramp.
//! They are context channels: inputs, never anomalies. The ambient drifts
//! slowly (Ornstein–Uhlenbeck, τ = 1 h, plus a daily cycle) and every cell
//! reading carries Gaussian noise.
//!
//! Channels, in order: `cell_r{r}_c{c}` row-major, then `heater_{k}`.
//! Devices are `plate-0000`, `plate-0001`, ...; device *i* depends on
//! `(seed, i)` only. Faults: [`GridFault`].

mod fault;
#[cfg(test)]
mod tests;

use std::fmt;
use std::str::FromStr;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use rand_distr::StandardNormal;

use crate::SimError;
use crate::plant::{DEFAULT_START_MS, Tick, mix};

pub use fault::{GRID_FAULT_HELP, GridFault, GridFaultKind, GridLocation};

const MINUTE_MS: f64 = 60_000.0;
const DAY_MS: i64 = 86_400_000;
/// Relaxation toward ambient (1/s), heat exchange with each neighbour (1/s).
const K_AMBIENT: f64 = 1.0 / 600.0;
const K_NEIGHBOUR: f64 = 1.0 / 100.0;
/// Heating of a heater's own cell at full power (°C/s).
const HEATER_GAIN: f64 = 0.3;
/// A hot spot's heating at its centre once fully grown (°C/s).
const HOTSPOT_GAIN: f64 = 0.1;
/// A leak's pull toward its coolant (1/s at its centre) and how far below
/// ambient the coolant is (°C).
const K_LEAK: f64 = 1.0 / 120.0;
const LEAK_BELOW_AMBIENT: f64 = 15.0;
/// How long an open-ended hot spot or leak takes to grow fully.
const OPEN_GROWTH_MS: i64 = 30 * 60_000;
/// Simulated warm-up before the first reading, so a plate starts settled.
const BURN_IN_S: f64 = 2.0 * 3_600.0;
/// Largest side of a plate (as [`SimError::GridSize`] says).
const MAX_SIDE: usize = 64;
/// At most 2 + 2 heaters per plate.
const MAX_HEATERS: usize = 4;

/// Rows and columns of a plate: `8x8`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GridSize {
    pub rows: usize,
    pub cols: usize,
}

impl GridSize {
    pub fn cells(self) -> usize {
        self.rows * self.cols
    }
}

impl fmt::Display for GridSize {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}x{}", self.rows, self.cols)
    }
}

impl FromStr for GridSize {
    type Err = SimError;

    fn from_str(s: &str) -> Result<Self, SimError> {
        let side = |x: &str| {
            x.trim()
                .parse::<usize>()
                .ok()
                .filter(|n| (1..=MAX_SIDE).contains(n))
        };
        match s.trim().split_once(['x', 'X']) {
            Some((r, c)) if side(r).is_some() && side(c).is_some() => Ok(GridSize {
                rows: side(r).unwrap_or(1),
                cols: side(c).unwrap_or(1),
            }),
            _ => Err(SimError::GridSize(s.to_owned())),
        }
    }
}

/// Plate simulation settings.
#[derive(Debug, Clone, PartialEq)]
pub struct GridConfig {
    pub devices: usize,
    pub size: GridSize,
    /// Sampling period in milliseconds of simulated time.
    pub period_ms: i64,
    /// Timestamp of the first tick (epoch milliseconds).
    pub start_ms: i64,
    pub seed: u64,
    /// Measurement noise sd of a cell reading, °C.
    pub noise: f64,
    /// Amplitude of the daily ambient cycle, in units of 3 °C.
    pub daily_drift: f64,
}

impl Default for GridConfig {
    fn default() -> Self {
        Self {
            devices: 1,
            size: GridSize { rows: 8, cols: 8 },
            period_ms: 1_000,
            start_ms: DEFAULT_START_MS,
            seed: 0,
            noise: 0.2,
            daily_drift: 0.5,
        }
    }
}

/// Id of plate `index`: `plate-0003`.
pub fn plate_id(index: usize) -> String {
    format!("plate-{index:04}")
}

/// A heater's commanded power: a setpoint reached by a step or a ramp.
#[derive(Debug, Clone)]
struct Heater {
    cell: usize,
    /// Heating per cell at full power (°C/s): its 3 x 3 neighbourhood.
    kernel: Vec<(usize, f64)>,
    from: f64,
    to: f64,
    ramp: (i64, i64),
    next_change_ms: i64,
}

impl Heater {
    fn commanded(&self, ts_ms: i64) -> f64 {
        let (a, b) = self.ramp;
        if ts_ms >= b {
            return self.to;
        }
        let f = ((ts_ms - a) as f64 / (b - a) as f64).clamp(0.0, 1.0);
        self.from + (self.to - self.from) * f
    }

    /// The operator's next move, when one is due.
    fn schedule(&mut self, ts_ms: i64, rng: &mut StdRng) {
        if ts_ms < self.next_change_ms {
            return;
        }
        self.from = self.commanded(ts_ms);
        self.to = setpoint(rng);
        let ramp = if rng.random_bool(0.5) {
            0.0
        } else {
            rng.random_range(1.0..3.0) * MINUTE_MS
        };
        self.ramp = (ts_ms, ts_ms + ramp as i64);
        self.next_change_ms = ts_ms + (rng.random_range(3.0..10.0) * MINUTE_MS) as i64;
    }
}

fn setpoint(rng: &mut StdRng) -> f64 {
    if rng.random_bool(0.15) {
        0.0
    } else {
        rng.random_range(0.2..1.0)
    }
}

#[derive(Debug, Clone)]
struct Plate {
    rng: StdRng,
    temp: Vec<f64>,
    next: Vec<f64>,
    heaters: Vec<Heater>,
    ambient_base: f64,
    ambient_ou: f64,
    ambient_phase: f64,
    k_ambient: f64,
    k_neighbour: f64,
}

/// A fault resolved against its plate.
#[derive(Debug, Clone)]
struct Active {
    device: usize,
    kind: GridFaultKind,
    cell: usize,
    heater: Option<usize>,
    start_ms: i64,
    end_ms: i64,
    growth_ms: i64,
    /// A dead cell's reading, a stuck heater's power: set at the fault's
    /// first tick.
    held: Option<f64>,
}

impl Active {
    fn on(&self, ts_ms: i64) -> bool {
        self.start_ms <= ts_ms && ts_ms < self.end_ms
    }

    /// How far the fault has grown, 0 to 1.
    fn progress(&self, ts_ms: i64) -> f64 {
        ((ts_ms - self.start_ms) as f64 / self.growth_ms as f64).clamp(0.0, 1.0)
    }
}

/// The simulated plates. Call [`Grid::next_tick`] repeatedly.
#[derive(Debug, Clone)]
pub struct Grid {
    cfg: GridConfig,
    ids: Vec<String>,
    channels: Vec<String>,
    plates: Vec<Plate>,
    faults: Vec<GridFault>,
    active: Vec<Active>,
    tick: i64,
    substeps: usize,
    buf: Vec<f32>,
    /// Per-cell heating (°C/s) and extra pull toward the coolant (1/s).
    heat: Vec<f64>,
    sink: Vec<f64>,
}

impl Grid {
    pub fn new(cfg: GridConfig, faults: Vec<GridFault>) -> Result<Self, SimError> {
        if cfg.period_ms <= 0 {
            return Err(SimError::Config(
                "the sampling period must be positive".into(),
            ));
        }
        if !(cfg.noise.is_finite() && (0.0..=10.0).contains(&cfg.noise)) {
            return Err(SimError::Config(format!(
                "noise {} °C is out of range 0..10",
                cfg.noise
            )));
        }
        if !(cfg.daily_drift.is_finite() && (0.0..=5.0).contains(&cfg.daily_drift)) {
            return Err(SimError::Config("daily drift must be within 0..5".into()));
        }
        let GridSize { rows, cols } = cfg.size;
        // Every plate has the same channels, so the heater count is the run's.
        let heaters = (2 + (mix(cfg.seed, 0x4ea7) % 3) as usize).min(cfg.size.cells());
        let mut channels: Vec<String> = (0..rows)
            .flat_map(|r| (0..cols).map(move |c| format!("cell_r{r}_c{c}")))
            .collect();
        channels.extend((0..heaters).map(|k| format!("heater_{k}")));
        let plates = (0..cfg.devices)
            .map(|i| new_plate(&cfg, heaters, i))
            .collect();
        // Explicit Euler is stable and monotone while h · Σ rates ≤ 1/2.
        let rate = 1.1 * (K_AMBIENT + 4.0 * K_NEIGHBOUR) + K_LEAK;
        let substeps = ((cfg.period_ms as f64 / 1000.0) * rate / 0.5)
            .ceil()
            .max(1.0) as usize;
        let mut grid = Grid {
            ids: (0..cfg.devices).map(plate_id).collect(),
            buf: vec![0.0; cfg.devices * channels.len()],
            heat: vec![0.0; cfg.size.cells()],
            sink: vec![0.0; cfg.size.cells()],
            channels,
            plates,
            faults: vec![],
            active: vec![],
            tick: 0,
            substeps,
            cfg,
        };
        for f in faults {
            grid.add_fault(f)?;
        }
        Ok(grid)
    }

    /// Injects a fault; refuses an unknown device, a cell off the plate or
    /// a `heater_stuck` where there is no heater.
    pub fn add_fault(&mut self, fault: GridFault) -> Result<(), SimError> {
        let device = self
            .device_index(&fault.device)
            .ok_or_else(|| SimError::UnknownDevice {
                fault: fault.to_string(),
                device: fault.device.clone(),
                known: match self.cfg.devices {
                    0 => "no simulated plates".to_owned(),
                    n => format!("simulated plates are plate-0000 … {}", plate_id(n - 1)),
                },
            })?;
        let bad = |reason: String| SimError::FaultSpec {
            spec: fault.to_string(),
            reason,
        };
        if fault.start_ms < 0 || fault.duration_ms.is_some_and(|d| d <= 0) {
            return Err(bad("start must be ≥ 0 and duration > 0".into()));
        }
        let GridSize { rows, cols } = self.cfg.size;
        let heaters = &self.plates[device].heaters;
        let cells = || {
            let at = heaters.iter().enumerate();
            (at.map(|(k, h)| format!("h{k} = {},{}", h.cell / cols, h.cell % cols)))
                .collect::<Vec<_>>()
                .join(", ")
        };
        let (cell, heater) = match fault.at {
            GridLocation::Cell { row, col } if row >= rows || col >= cols => {
                return Err(bad(format!(
                    "cell {row},{col} is off the {} plate",
                    self.cfg.size
                )));
            }
            GridLocation::Cell { row, col } => {
                let cell = row * cols + col;
                (cell, heaters.iter().position(|h| h.cell == cell))
            }
            GridLocation::Heater(k) if k < heaters.len() => (heaters[k].cell, Some(k)),
            GridLocation::Heater(k) => {
                return Err(bad(format!("no heater {k}; heaters: {}", cells())));
            }
        };
        if fault.kind == GridFaultKind::HeaterStuck && heater.is_none() {
            return Err(bad(format!(
                "heater_stuck needs a heater's cell; heaters: {}",
                cells()
            )));
        }
        let start_ms = self.cfg.start_ms.saturating_add(fault.start_ms);
        self.active.push(Active {
            device,
            kind: fault.kind,
            cell,
            heater,
            start_ms,
            end_ms: fault
                .duration_ms
                .map_or(i64::MAX, |d| start_ms.saturating_add(d)),
            growth_ms: fault.duration_ms.unwrap_or(OPEN_GROWTH_MS).max(1),
            held: None,
        });
        self.faults.push(fault);
        Ok(())
    }

    /// Injects `per_device` faults into every plate, between `from_ms` and
    /// `from_ms + span_ms` after the start: kinds in turn (shifted by the
    /// plate, so every kind appears), one per equal slot after a fault-free
    /// fifth, at seed-chosen cells and times, whole sampling periods.
    pub fn add_random_faults(
        &mut self,
        per_device: usize,
        from_ms: i64,
        span_ms: i64,
    ) -> Result<(), SimError> {
        let p = self.cfg.period_ms;
        let slot = span_ms * 4 / 5 / per_device.max(1) as i64;
        if per_device > 0 && slot < 20 * p {
            return Err(SimError::Config(format!(
                "{per_device} random faults per plate need at least {} readings",
                per_device as i64 * 25
            )));
        }
        let snap = |ms: f64| (ms / p as f64).round() as i64 * p;
        let GridSize { rows, cols } = self.cfg.size;
        for device in 0..self.cfg.devices {
            let mut rng = StdRng::seed_from_u64(mix(self.cfg.seed, 0xfa17_0000 + device as u64));
            for j in 0..per_device {
                let kind = GridFaultKind::ALL[(device + j) % GridFaultKind::ALL.len()];
                let at = match kind {
                    GridFaultKind::HeaterStuck => {
                        GridLocation::Heater(rng.random_range(0..self.plates[device].heaters.len()))
                    }
                    _ => GridLocation::Cell {
                        row: rng.random_range(0..rows),
                        col: rng.random_range(0..cols),
                    },
                };
                let slot_start = from_ms + span_ms / 5 + j as i64 * slot;
                let start = snap(slot_start as f64 + rng.random_range(0.1..0.4) * slot as f64);
                let duration = snap(rng.random_range(0.25..0.45) * slot as f64).max(p);
                self.add_fault(GridFault {
                    device: plate_id(device),
                    kind,
                    start_ms: start,
                    duration_ms: Some(duration),
                    at,
                })?;
            }
        }
        Ok(())
    }

    pub fn config(&self) -> &GridConfig {
        &self.cfg
    }
    pub fn devices(&self) -> usize {
        self.cfg.devices
    }
    /// `cell_r{r}_c{c}` row-major, then `heater_{k}`.
    pub fn channels(&self) -> &[String] {
        &self.channels
    }
    pub fn heaters(&self) -> usize {
        self.channels.len() - self.cfg.size.cells()
    }
    /// `(row, col)` of every heater of plate `device`.
    pub fn heater_cells(&self, device: usize) -> Vec<(usize, usize)> {
        let cols = self.cfg.size.cols;
        (self.plates[device].heaters.iter())
            .map(|h| (h.cell / cols, h.cell % cols))
            .collect()
    }
    pub fn faults(&self) -> &[GridFault] {
        &self.faults
    }
    pub fn device_id(&self, i: usize) -> &str {
        &self.ids[i]
    }
    /// Index of a plate id (`plate-0003`) or bare index of this grid.
    pub fn device_index(&self, id: &str) -> Option<usize> {
        let i = match id.parse::<usize>() {
            Ok(i) => i,
            Err(_) => Some(id.strip_prefix("plate-")?.parse::<usize>().ok()?)
                .filter(|&i| plate_id(i) == id)?,
        };
        (i < self.cfg.devices).then_some(i)
    }
    /// Timestamp the next tick will carry.
    pub fn next_ts_ms(&self) -> i64 {
        self.cfg.start_ms + self.tick * self.cfg.period_ms
    }

    /// The label of plate `i` at `ts_ms`: the `(row, col)` of the fault
    /// acting on it (the earliest started when several do).
    pub fn fault_at(&self, i: usize, ts_ms: i64) -> Option<(usize, usize)> {
        let cols = self.cfg.size.cols;
        (self.active.iter())
            .filter(|f| f.device == i && f.on(ts_ms))
            .min_by_key(|f| f.start_ms)
            .map(|f| (f.cell / cols, f.cell % cols))
    }

    /// Every plate's reading at the next tick, then the plates advance
    /// one sampling period. Allocation-free.
    pub fn next_tick(&mut self) -> Tick<'_> {
        let ts_ms = self.next_ts_ms();
        let n_ch = self.channels.len();
        let cells = self.cfg.size.cells();
        let day = std::f64::consts::TAU * ts_ms.rem_euclid(DAY_MS) as f64 / DAY_MS as f64;
        let dt = self.cfg.period_ms as f64 / 1000.0;
        for (i, (plate, out)) in (self.plates.iter_mut())
            .zip(self.buf.chunks_exact_mut(n_ch))
            .enumerate()
        {
            for h in &mut plate.heaters {
                h.schedule(ts_ms, &mut plate.rng);
            }
            for (o, t) in out.iter_mut().zip(&plate.temp) {
                let eps: f64 = plate.rng.sample(StandardNormal);
                *o = round3(t + self.cfg.noise * eps);
            }
            for (o, h) in out[cells..].iter_mut().zip(&plate.heaters) {
                *o = round3(100.0 * h.commanded(ts_ms));
            }
            let mut power = [0.0; MAX_HEATERS];
            for (p, h) in power.iter_mut().zip(&plate.heaters) {
                *p = h.commanded(ts_ms);
            }
            self.heat.iter_mut().for_each(|x| *x = 0.0);
            self.sink.iter_mut().for_each(|x| *x = 0.0);
            for f in self
                .active
                .iter_mut()
                .filter(|f| f.device == i && f.on(ts_ms))
            {
                let grow = f.progress(ts_ms);
                let (r0, c0) = (f.cell / self.cfg.size.cols, f.cell % self.cfg.size.cols);
                let reach = |radius: f64, cell: usize| {
                    let (r, c) = (cell / self.cfg.size.cols, cell % self.cfg.size.cols);
                    let d2 = (r as f64 - r0 as f64).powi(2) + (c as f64 - c0 as f64).powi(2);
                    (-d2 / (2.0 * radius * radius)).exp()
                };
                match f.kind {
                    GridFaultKind::Hotspot => {
                        let (gain, radius) = (HOTSPOT_GAIN * (0.3 + 0.7 * grow), 0.6 + 1.4 * grow);
                        for (c, x) in self.heat.iter_mut().enumerate() {
                            *x += gain * reach(radius, c);
                        }
                    }
                    GridFaultKind::Leak => {
                        let radius = 0.5 + 2.0 * grow;
                        for (c, x) in self.sink.iter_mut().enumerate() {
                            *x = (*x + K_LEAK * reach(radius, c)).min(K_LEAK);
                        }
                    }
                    GridFaultKind::Dead => {
                        let held = *f.held.get_or_insert(f64::from(out[f.cell]));
                        out[f.cell] = held as f32;
                    }
                    GridFaultKind::HeaterStuck => {
                        let k = f.heater.unwrap_or(0);
                        // Far from the command, so the physics disagree with it.
                        let stuck = if power[k] >= 0.5 { 0.05 } else { 0.95 };
                        power[k] = *f.held.get_or_insert(stuck);
                    }
                }
            }
            for (h, p) in plate.heaters.iter().zip(power) {
                for &(c, w) in &h.kernel {
                    self.heat[c] += w * p;
                }
            }
            let ambient = plate.ambient(day, self.cfg.daily_drift);
            for _ in 0..self.substeps {
                plate.diffuse(
                    self.cfg.size,
                    dt / self.substeps as f64,
                    ambient,
                    &self.heat,
                    &self.sink,
                );
            }
            plate.drift_ambient(dt);
        }
        self.tick += 1;
        Tick::new(ts_ms, &self.buf, n_ch, &self.ids)
    }
}

impl Plate {
    fn ambient(&self, day: f64, daily_drift: f64) -> f64 {
        self.ambient_base + self.ambient_ou + 3.0 * daily_drift * (day - self.ambient_phase).sin()
    }

    /// Ornstein–Uhlenbeck step of the ambient's slow wander (τ = 1 h).
    fn drift_ambient(&mut self, dt: f64) {
        let phi = (-dt / 3_600.0).exp();
        let eps: f64 = self.rng.sample(StandardNormal);
        self.ambient_ou = phi * self.ambient_ou + 0.6 * (1.0 - phi * phi).sqrt() * eps;
    }

    /// One explicit finite-difference step of `h` seconds.
    fn diffuse(&mut self, size: GridSize, h: f64, ambient: f64, heat: &[f64], sink: &[f64]) {
        let GridSize { rows, cols } = size;
        let coolant = ambient - LEAK_BELOW_AMBIENT;
        for r in 0..rows {
            for c in 0..cols {
                let i = r * cols + c;
                let t = self.temp[i];
                let mut exchange = 0.0;
                for (ok, j) in [
                    (r > 0, i.wrapping_sub(cols)),
                    (r + 1 < rows, i + cols),
                    (c > 0, i.wrapping_sub(1)),
                    (c + 1 < cols, i + 1),
                ] {
                    if ok {
                        exchange += self.temp[j] - t;
                    }
                }
                let rate = self.k_ambient * (ambient - t)
                    + self.k_neighbour * exchange
                    + heat[i]
                    + sink[i] * (coolant - t);
                self.next[i] = t + h * rate;
            }
        }
        std::mem::swap(&mut self.temp, &mut self.next);
    }
}

fn round3(v: f64) -> f32 {
    ((v * 1000.0).round() / 1000.0) as f32
}

fn new_plate(cfg: &GridConfig, heaters: usize, index: usize) -> Plate {
    let mut rng = StdRng::seed_from_u64(mix(cfg.seed, 0x9_1a7e_0000 + index as u64));
    let GridSize { rows, cols } = cfg.size;
    let mut cells: Vec<usize> = vec![];
    while cells.len() < heaters {
        let c = rng.random_range(0..cfg.size.cells());
        if !cells.contains(&c) {
            cells.push(c);
        }
    }
    let heaters = (cells.into_iter())
        .map(|cell| {
            let gain = HEATER_GAIN * rng.random_range(0.85..1.15);
            let (r0, c0) = ((cell / cols) as i64, (cell % cols) as i64);
            let mut kernel = vec![];
            for (dr, dc) in (-1..=1).flat_map(|dr| (-1..=1).map(move |dc| (dr, dc))) {
                let (r, c) = (r0 + dr, c0 + dc);
                if (0..rows as i64).contains(&r) && (0..cols as i64).contains(&c) {
                    let w = [1.0, 0.5, 0.25][(dr.abs() + dc.abs()) as usize];
                    kernel.push((r as usize * cols + c as usize, gain * w));
                }
            }
            let to = setpoint(&mut rng);
            Heater {
                cell,
                kernel,
                from: to,
                to,
                ramp: (cfg.start_ms, cfg.start_ms),
                next_change_ms: cfg.start_ms + (rng.random_range(1.0..10.0) * MINUTE_MS) as i64,
            }
        })
        .collect::<Vec<_>>();
    let ambient_base = rng.random_range(21.0..25.0);
    let mut plate = Plate {
        temp: vec![ambient_base; cfg.size.cells()],
        next: vec![0.0; cfg.size.cells()],
        ambient_base,
        ambient_ou: 0.6 * rng.sample::<f64, _>(StandardNormal),
        // The daily cycle peaks around 15:00 UTC (±1 h).
        ambient_phase: std::f64::consts::TAU * (9.0 + rng.random_range(-1.0..1.0)) / 24.0,
        k_ambient: K_AMBIENT * rng.random_range(0.9..1.1),
        k_neighbour: K_NEIGHBOUR * rng.random_range(0.9..1.1),
        heaters,
        rng,
    };
    // Settle under the first setpoints, so the first reading is no transient.
    let mut heat = vec![0.0; cfg.size.cells()];
    for h in &plate.heaters {
        for &(c, w) in &h.kernel {
            heat[c] += w * h.to;
        }
    }
    let sink = vec![0.0; cfg.size.cells()];
    let ambient = plate.ambient_base + plate.ambient_ou;
    for _ in 0..(BURN_IN_S / 5.0) as usize {
        plate.diffuse(cfg.size, 5.0, ambient, &heat, &sink);
    }
    plate
}
