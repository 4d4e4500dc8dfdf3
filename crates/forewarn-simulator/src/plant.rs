//! The simulated plant: N devices sharing one channel layout.
//!
//! # Model
//! Each device has six latent factors, all of unit variance:
//!
//! | factor       | process                                            |
//! |--------------|----------------------------------------------------|
//! | load         | Ornstein–Uhlenbeck, τ = 10 min, + daily cycle       |
//! | ambient      | Ornstein–Uhlenbeck, τ = 2 h, + daily cycle          |
//! | fast         | Ornstein–Uhlenbeck, τ = 20 s (hydraulic turbulence) |
//! | inventory    | Ornstein–Uhlenbeck, τ = 45 min (tank level)         |
//! | load (lag)   | load through a first-order lag, τ = 15 min          |
//! | ambient (lag)| ambient through a first-order lag, τ = 30 min       |
//!
//! The processes are discretised exactly for the sampling period, so any
//! period gives the same statistics. The daily cycle is a 24 h sinusoid of
//! amplitude [`PlantConfig::daily_drift`] (in factor sd units), peaking
//! around 11:00 UTC for load and 15:00 UTC for ambient, with a per-device
//! phase jitter.
//!
//! A channel's value is `base + sd × (Σ loading·factor + noise × N(0,1))`;
//! loadings are scaled so that `Σ loading² = 1 − noise²`, so without the
//! daily cycle the channel's standard deviation is exactly `sd`
//! ([`Plant::channel_sd`]), the unit in which fault sizes are given.
//! Known channel names (the [`DEFAULT_CHANNELS`]) have physically meaningful
//! templates (flow and motor current rise with load, bearing temperature
//! follows load and ambient with a lag, suction pressure falls with load);
//! other names get a template derived from the name and the seed. Each
//! device perturbs the template's base (±8 %), sd (±15 %) and loadings
//! (±25 %) with its own random stream, derived from `(seed, device index)`
//! only, so device *i* is the same whatever the number of devices.

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use rand_distr::StandardNormal;

use crate::SimError;
use crate::fault::{Fault, FaultKind};

/// The default channel layout of a simulated device.
pub const DEFAULT_CHANNELS: [&str; 8] = [
    "inlet_pressure",
    "outlet_pressure",
    "flow",
    "motor_current",
    "bearing_temp",
    "vibration_rms",
    "valve_position",
    "tank_level",
];

/// Default start of simulated time: 2026-01-01T00:00:00Z.
pub const DEFAULT_START_MS: i64 = 1_767_225_600_000;

const DAY_MS: i64 = 86_400_000;
const HOUR_MS: f64 = 3_600_000.0;

/// Factor indices.
const LOAD: usize = 0;
const AMBIENT: usize = 1;
const FAST: usize = 2;
const INVENTORY: usize = 3;
const LOAD_LAG: usize = 4;
const AMBIENT_LAG: usize = 5;
const FACTORS: usize = 6;
/// Ornstein–Uhlenbeck factors (the first four) and their time constants (s).
const OU: usize = 4;
const OU_TAU_S: [f64; OU] = [600.0, 7_200.0, 20.0, 2_700.0];
/// First-order lags: (source factor, time constant in s).
const LAGS: [(usize, f64); 2] = [(LOAD, 900.0), (AMBIENT, 1_800.0)];
/// Hour of the daily peak (UTC) of load and ambient.
const LOAD_PEAK_H: f64 = 11.0;
const AMBIENT_PEAK_H: f64 = 15.0;

/// Simulation settings.
#[derive(Debug, Clone, PartialEq)]
pub struct PlantConfig {
    /// Number of simulated devices, ids `plant-0000`, `plant-0001`, …
    pub devices: usize,
    /// Channel names, in message order.
    pub channels: Vec<String>,
    /// Sampling period in milliseconds of simulated time.
    pub period_ms: i64,
    /// Timestamp of the first tick (epoch milliseconds).
    pub start_ms: i64,
    pub seed: u64,
    /// Measurement noise sd as a fraction of each channel's sd, in [0, 1].
    pub noise: f64,
    /// Amplitude of the 24 h cycle of load and ambient, in factor sd units.
    pub daily_drift: f64,
}

impl Default for PlantConfig {
    fn default() -> Self {
        Self {
            devices: 5,
            channels: DEFAULT_CHANNELS.iter().map(|c| (*c).to_owned()).collect(),
            period_ms: 1_000,
            start_ms: DEFAULT_START_MS,
            seed: 0,
            noise: 0.2,
            daily_drift: 0.5,
        }
    }
}

/// Id of simulated device `index`: `plant-0003`.
pub fn device_id(index: usize) -> String {
    format!("plant-{index:04}")
}

/// Inverse of [`device_id`]; also accepts a bare index (`3`).
pub fn parse_device_id(id: &str) -> Option<usize> {
    if let Ok(i) = id.parse::<usize>() {
        return Some(i);
    }
    let i: usize = id.strip_prefix("plant-")?.parse().ok()?;
    (device_id(i) == id).then_some(i)
}

/// A channel's shape, before per-device perturbation.
#[derive(Debug, Clone, Copy)]
struct Template {
    base: f64,
    sd: f64,
    loadings: [f64; FACTORS],
    min: f64,
    max: f64,
}

fn template(name: &str, seed: u64) -> Template {
    //                       load   amb  fast   inv  loadL  ambL
    let known = |base, sd, loadings: [f64; FACTORS], max| Template {
        base,
        sd,
        loadings,
        min: 0.0,
        max,
    };
    let inf = f64::INFINITY;
    match name {
        "inlet_pressure" => known(2.0, 0.08, [-0.7, 0.0, -0.3, 0.35, 0.0, 0.0], inf),
        "outlet_pressure" => known(8.5, 0.35, [0.8, 0.0, 0.45, 0.0, 0.0, 0.0], inf),
        "flow" => known(120.0, 9.0, [0.95, 0.0, 0.25, 0.0, 0.0, 0.0], inf),
        "motor_current" => known(42.0, 3.0, [0.9, 0.0, 0.15, 0.0, 0.0, 0.2], inf),
        "bearing_temp" => known(55.0, 2.5, [0.0, 0.0, 0.0, 0.0, 0.6, 0.7], inf),
        "vibration_rms" => known(2.8, 0.25, [0.5, 0.0, 0.6, 0.0, 0.0, 0.15], inf),
        "valve_position" => known(55.0, 6.0, [0.85, 0.0, -0.3, 0.0, 0.0, 0.0], 100.0),
        "tank_level" => known(62.0, 7.0, [-0.35, 0.0, 0.05, 0.9, 0.0, 0.0], 100.0),
        _ => {
            // Unknown name: a plausible random template, the same for every
            // device of the plant (seeded by the plant seed and the name).
            let mut rng = StdRng::seed_from_u64(mix(seed, fnv1a(name.as_bytes())));
            let base = 10f64.powf(rng.random_range(0.0..2.0));
            let mut loadings = [0.0; FACTORS];
            loadings[LOAD] = rng.random_range(-1.0..1.0);
            loadings[FAST] = rng.random_range(0.0..0.5);
            let slow = if rng.random_bool(0.5) {
                AMBIENT_LAG
            } else {
                INVENTORY
            };
            loadings[slow] = rng.random_range(-0.8..0.8);
            Template {
                base,
                sd: base * rng.random_range(0.03..0.08),
                loadings,
                min: f64::NEG_INFINITY,
                max: f64::INFINITY,
            }
        }
    }
}

/// One channel of one device.
#[derive(Debug, Clone, Copy)]
struct Channel {
    base: f64,
    sd: f64,
    /// Loadings already multiplied by `sd`.
    w: [f64; FACTORS],
    /// Noise sd in channel units.
    noise_sd: f64,
    min: f64,
    max: f64,
}

#[derive(Debug, Clone)]
struct Device {
    rng: StdRng,
    ou: [f64; OU],
    lag: [f64; 2],
    /// (cos, sin) of the daily phase offsets of load and ambient.
    load_phase: (f64, f64),
    ambient_phase: (f64, f64),
    channels: Vec<Channel>,
}

/// Per-period constants of the discretised processes.
#[derive(Debug, Clone)]
struct Dynamics {
    phi: [f64; OU],
    innovation: [f64; OU],
    beta: [f64; 2],
    /// 1 / stationary sd of each lag state (so the lag factors have unit variance).
    lag_norm: [f64; 2],
    /// Stationary covariance of each lag state with its source.
    lag_cov: [f64; 2],
    lag_var: [f64; 2],
    /// Daily cycle through each lag: (gain, sin, cos of the phase delay).
    lag_daily: [(f64, f64, f64); 2],
}

impl Dynamics {
    fn new(period_ms: i64) -> Self {
        let dt = period_ms as f64 / 1000.0;
        let phi = OU_TAU_S.map(|tau| (-dt / tau).exp());
        let innovation = phi.map(|p| (1.0 - p * p).sqrt());
        let mut beta = [0.0; 2];
        let mut lag_norm = [0.0; 2];
        let mut lag_cov = [0.0; 2];
        let mut lag_var = [0.0; 2];
        let mut lag_daily = [(0.0, 0.0, 0.0); 2];
        let omega = std::f64::consts::TAU / 86_400.0;
        for (k, &(source, tau)) in LAGS.iter().enumerate() {
            // y' = b y + (1 − b) x', x' = φ x + s ε, Var x = 1:
            // C = Cov(x, y) = (1 − b) / (1 − bφ),
            // V = Var y = ((1 − b)² + 2b(1 − b)φC) / (1 − b²).
            let b = (-dt / tau).exp();
            let p = phi[source];
            let c = (1.0 - b) / (1.0 - b * p);
            let v = ((1.0 - b).powi(2) + 2.0 * b * (1.0 - b) * p * c) / (1.0 - b * b);
            beta[k] = b;
            lag_cov[k] = c;
            lag_var[k] = v;
            lag_norm[k] = 1.0 / v.sqrt();
            let wt = omega * tau;
            let (sin_delay, cos_delay) = wt.atan().sin_cos();
            lag_daily[k] = (1.0 / (1.0 + wt * wt).sqrt(), sin_delay, cos_delay);
        }
        Self {
            phi,
            innovation,
            beta,
            lag_norm,
            lag_cov,
            lag_var,
            lag_daily,
        }
    }
}

/// A fault resolved against the plant.
#[derive(Debug, Clone)]
struct ActiveFault {
    device: usize,
    channel: usize,
    kind: FaultKind,
    start_ms: i64,
    end_ms: i64,
    frozen: Option<f32>,
}

/// One tick: a reading of every device at `ts_ms`.
#[derive(Debug, Clone, Copy)]
pub struct Tick<'a> {
    pub ts_ms: i64,
    /// Values of all devices, row-major: device `i` is
    /// `values[i * channels .. (i + 1) * channels]`.
    pub values: &'a [f32],
    channels: usize,
    ids: &'a [String],
}

impl<'a> Tick<'a> {
    /// `values` holds `ids.len()` readings of `channels` values each.
    pub(crate) fn new(ts_ms: i64, values: &'a [f32], channels: usize, ids: &'a [String]) -> Self {
        Self {
            ts_ms,
            values,
            channels,
            ids,
        }
    }
    /// Number of devices in the tick.
    pub fn len(&self) -> usize {
        self.values.len().checked_div(self.channels).unwrap_or(0)
    }
    pub fn is_empty(&self) -> bool {
        self.values.is_empty()
    }
    /// Values of device `i`, in channel order.
    pub fn device(&self, i: usize) -> &'a [f32] {
        &self.values[i * self.channels..(i + 1) * self.channels]
    }
    /// Id of device `i` (`plant-0003`).
    pub fn device_id(&self, i: usize) -> &'a str {
        &self.ids[i]
    }
    /// `(device index, values)` for every device.
    pub fn iter(&self) -> impl Iterator<Item = (usize, &'a [f32])> + 'a {
        self.values.chunks_exact(self.channels.max(1)).enumerate()
    }
    /// `(device id, values)` for every device.
    pub fn readings(&self) -> impl Iterator<Item = (&'a str, &'a [f32])> + 'a {
        self.ids
            .iter()
            .map(String::as_str)
            .zip(self.values.chunks_exact(self.channels.max(1)))
    }
}

/// The simulated plant. Call [`Plant::next_tick`] repeatedly.
#[derive(Debug, Clone)]
pub struct Plant {
    cfg: PlantConfig,
    ids: Vec<String>,
    devices: Vec<Device>,
    dynamics: Dynamics,
    faults: Vec<Fault>,
    active: Vec<ActiveFault>,
    tick: i64,
    buf: Vec<f32>,
}

impl Plant {
    pub fn new(cfg: PlantConfig, faults: Vec<Fault>) -> Result<Self, SimError> {
        if cfg.channels.is_empty() {
            return Err(SimError::Config("no channels".into()));
        }
        for (i, c) in cfg.channels.iter().enumerate() {
            if c.trim().is_empty() {
                return Err(SimError::Config(format!("channel {i} has an empty name")));
            }
            if cfg.channels[..i].contains(c) {
                return Err(SimError::Config(format!("channel {c:?} is listed twice")));
            }
        }
        if cfg.period_ms <= 0 {
            return Err(SimError::Config(format!(
                "period must be positive, got {} ms",
                cfg.period_ms
            )));
        }
        if !(0.0..=1.0).contains(&cfg.noise) {
            return Err(SimError::Config(format!(
                "noise is a fraction of the channel sd in [0, 1], got {}",
                cfg.noise
            )));
        }
        if !cfg.daily_drift.is_finite() || cfg.daily_drift < 0.0 {
            return Err(SimError::Config(format!(
                "daily drift must be a non-negative number, got {}",
                cfg.daily_drift
            )));
        }
        let dynamics = Dynamics::new(cfg.period_ms);
        let templates: Vec<Template> = cfg.channels.iter().map(|c| template(c, cfg.seed)).collect();
        let devices = (0..cfg.devices)
            .map(|i| new_device(&cfg, &templates, &dynamics, i))
            .collect();
        let ids = (0..cfg.devices).map(device_id).collect();
        let mut plant = Self {
            buf: vec![0.0; cfg.devices * cfg.channels.len()],
            cfg,
            ids,
            devices,
            dynamics,
            faults: Vec::new(),
            active: Vec::new(),
            tick: 0,
        };
        for f in faults {
            plant.add_fault(f)?;
        }
        Ok(plant)
    }

    /// Adds a fault; it must start at or after the next tick to be seen whole.
    pub fn add_fault(&mut self, fault: Fault) -> Result<(), SimError> {
        let device = parse_device_id(&fault.device)
            .filter(|&i| i < self.cfg.devices)
            .ok_or_else(|| SimError::UnknownDevice {
                fault: fault.to_string(),
                device: fault.device.clone(),
                known: match self.cfg.devices {
                    0 => "no simulated devices".to_owned(),
                    n => format!("simulated devices are plant-0000 … {}", device_id(n - 1)),
                },
            })?;
        let channel = self
            .cfg
            .channels
            .iter()
            .position(|c| *c == fault.channel)
            .or_else(|| {
                fault
                    .channel
                    .parse::<usize>()
                    .ok()
                    .filter(|&i| i < self.cfg.channels.len())
            })
            .ok_or_else(|| SimError::UnknownChannel {
                fault: fault.to_string(),
                channel: fault.channel.clone(),
                known: self.cfg.channels.join(", "),
            })?;
        if fault.start_ms < 0 || fault.duration_ms.is_some_and(|d| d <= 0) {
            return Err(SimError::FaultSpec {
                spec: fault.to_string(),
                reason: "start must be ≥ 0 and duration > 0".into(),
            });
        }
        let start_ms = self.cfg.start_ms.saturating_add(fault.start_ms);
        let duration = match (fault.kind, fault.duration_ms) {
            (_, Some(d)) => d,
            (FaultKind::Spike { .. }, None) => Fault::DEFAULT_SPIKE_SAMPLES * self.cfg.period_ms,
            (_, None) => i64::MAX,
        };
        self.active.push(ActiveFault {
            device,
            channel,
            kind: fault.kind,
            start_ms,
            end_ms: start_ms.saturating_add(duration),
            frozen: None,
        });
        self.faults.push(fault);
        Ok(())
    }

    pub fn config(&self) -> &PlantConfig {
        &self.cfg
    }
    /// Number of simulated devices.
    pub fn devices(&self) -> usize {
        self.cfg.devices
    }
    pub fn channels(&self) -> &[String] {
        &self.cfg.channels
    }
    pub fn faults(&self) -> &[Fault] {
        &self.faults
    }
    /// Whether an injected fault acts on device `i` at `ts_ms`: the label
    /// of that device's reading.
    pub fn faulty(&self, i: usize, ts_ms: i64) -> bool {
        (self.active.iter()).any(|f| f.device == i && f.start_ms <= ts_ms && ts_ms < f.end_ms)
    }
    /// Id of device `i` (`plant-0003`), without allocating.
    pub fn device_id(&self, i: usize) -> &str {
        &self.ids[i]
    }
    /// Index of a device id (or bare index) of this plant.
    pub fn device_index(&self, id: &str) -> Option<usize> {
        parse_device_id(id).filter(|&i| i < self.cfg.devices)
    }
    /// Normal standard deviation of a channel of a device: the unit of fault sizes.
    pub fn channel_sd(&self, device: usize, channel: usize) -> f64 {
        self.devices[device].channels[channel].sd
    }
    /// Normal mean level of a channel of a device.
    pub fn channel_base(&self, device: usize, channel: usize) -> f64 {
        self.devices[device].channels[channel].base
    }
    /// Number of ticks produced so far.
    pub fn ticks(&self) -> u64 {
        self.tick as u64
    }
    /// Timestamp the next tick will carry.
    pub fn next_ts_ms(&self) -> i64 {
        self.cfg.start_ms + self.tick * self.cfg.period_ms
    }

    /// Advances one sampling period and returns every device's reading.
    /// Allocation-free: the values live in a buffer owned by the plant.
    pub fn next_tick(&mut self) -> Tick<'_> {
        let ts_ms = self.next_ts_ms();
        let n_ch = self.cfg.channels.len();
        // Daily cycle at this instant: rotate (cos, sin) by each device's phase.
        let day_angle = std::f64::consts::TAU * ts_ms.rem_euclid(DAY_MS) as f64 / DAY_MS as f64;
        let (sin_d, cos_d) = day_angle.sin_cos();
        let amp = self.cfg.daily_drift;
        let dy = &self.dynamics;
        for (dev, out) in self.devices.iter_mut().zip(self.buf.chunks_exact_mut(n_ch)) {
            // sin(a − p) = sin a cos p − cos a sin p
            let daily = |(cp, sp): (f64, f64)| sin_d * cp - cos_d * sp;
            let daily_lagged = |(cp, sp): (f64, f64), (gain, sd, cd): (f64, f64, f64)| {
                // sin(a − p − delay)
                let (cq, sq) = (cp * cd - sp * sd, sp * cd + cp * sd);
                gain * (sin_d * cq - cos_d * sq)
            };
            let mut f = [0.0; FACTORS];
            f[LOAD] = dev.ou[LOAD] + amp * daily(dev.load_phase);
            f[AMBIENT] = dev.ou[AMBIENT] + amp * daily(dev.ambient_phase);
            f[FAST] = dev.ou[FAST];
            f[INVENTORY] = dev.ou[INVENTORY];
            f[LOAD_LAG] =
                dev.lag[0] * dy.lag_norm[0] + amp * daily_lagged(dev.load_phase, dy.lag_daily[0]);
            f[AMBIENT_LAG] = dev.lag[1] * dy.lag_norm[1]
                + amp * daily_lagged(dev.ambient_phase, dy.lag_daily[1]);
            for (ch, o) in dev.channels.iter().zip(out.iter_mut()) {
                let eps: f64 = dev.rng.sample(StandardNormal);
                let mut v = ch.base + ch.noise_sd * eps;
                for (w, x) in ch.w.iter().zip(f.iter()) {
                    v += w * x;
                }
                *o = v.clamp(ch.min, ch.max) as f32;
            }
            // Advance the latent state to the next tick.
            for k in 0..OU {
                let eps: f64 = dev.rng.sample(StandardNormal);
                dev.ou[k] = dy.phi[k] * dev.ou[k] + dy.innovation[k] * eps;
            }
            for (k, &(source, _)) in LAGS.iter().enumerate() {
                dev.lag[k] = dy.beta[k] * dev.lag[k] + (1.0 - dy.beta[k]) * dev.ou[source];
            }
        }
        for fault in &mut self.active {
            if ts_ms < fault.start_ms || ts_ms >= fault.end_ms {
                continue;
            }
            let ch = &self.devices[fault.device].channels[fault.channel];
            let slot = &mut self.buf[fault.device * n_ch + fault.channel];
            let since_h = (ts_ms - fault.start_ms) as f64 / HOUR_MS;
            let offset = match fault.kind {
                FaultKind::Step { magnitude } | FaultKind::Spike { magnitude } => magnitude,
                FaultKind::Drift { per_hour } => per_hour * since_h,
                FaultKind::Oscillation {
                    amplitude,
                    period_s,
                } => amplitude * (std::f64::consts::TAU * since_h * 3_600.0 / period_s).sin(),
                FaultKind::Stuck => {
                    *slot = *fault.frozen.get_or_insert(*slot);
                    continue;
                }
            };
            *slot = (f64::from(*slot) + offset * ch.sd).clamp(ch.min, ch.max) as f32;
        }
        self.tick += 1;
        Tick::new(ts_ms, &self.buf, n_ch, &self.ids)
    }

    /// Convenience form of [`Plant::next_tick`] that allocates:
    /// `(device id, ts_ms, values)` per device.
    pub fn next_tick_owned(&mut self) -> Vec<(String, i64, Vec<f32>)> {
        let tick = self.next_tick();
        tick.readings()
            .map(|(id, v)| (id.to_owned(), tick.ts_ms, v.to_vec()))
            .collect()
    }
}

fn new_device(cfg: &PlantConfig, templates: &[Template], dy: &Dynamics, index: usize) -> Device {
    let device_seed = mix(cfg.seed, index as u64);
    let mut rng = StdRng::seed_from_u64(device_seed);
    let ou: [f64; OU] = std::array::from_fn(|_| rng.sample(StandardNormal));
    // Stationary start for the lags: y = C x + sqrt(V − C²) z.
    let lag: [f64; 2] = std::array::from_fn(|k| {
        let (source, _) = LAGS[k];
        let z: f64 = rng.sample(StandardNormal);
        dy.lag_cov[k] * ou[source] + (dy.lag_var[k] - dy.lag_cov[k].powi(2)).max(0.0).sqrt() * z
    });
    let phase = |peak_h: f64, jitter_h: f64, rng: &mut StdRng| {
        // sin(a − p) peaks when a = p + π/2.
        let hours = peak_h + rng.random_range(-jitter_h..jitter_h) - 6.0;
        let p = std::f64::consts::TAU * hours / 24.0;
        (p.cos(), p.sin())
    };
    let load_phase = phase(LOAD_PEAK_H, 2.0, &mut rng);
    let ambient_phase = phase(AMBIENT_PEAK_H, 1.0, &mut rng);
    let noise = cfg.noise;
    let channels = cfg
        .channels
        .iter()
        .zip(templates)
        .map(|(name, t)| {
            // Per (device, channel) stream: adding a channel does not change the others.
            let mut r = StdRng::seed_from_u64(mix(device_seed, fnv1a(name.as_bytes())));
            let base = t.base * (1.0 + r.random_range(-0.08..0.08));
            let sd = t.sd * r.random_range(0.85..1.15);
            let mut w = t.loadings.map(|l| l * r.random_range(0.75..1.25));
            let norm = w.iter().map(|x| x * x).sum::<f64>().sqrt();
            let (scale, noise_frac) = if norm > 0.0 {
                ((1.0 - noise * noise).sqrt() / norm, noise)
            } else {
                (0.0, 1.0)
            };
            for x in &mut w {
                *x *= scale * sd;
            }
            Channel {
                base,
                sd,
                w,
                noise_sd: noise_frac * sd,
                min: t.min,
                max: t.max,
            }
        })
        .collect();
    Device {
        rng,
        ou,
        lag,
        load_phase,
        ambient_phase,
        channels,
    }
}

/// SplitMix64-style mixing of two words into a seed.
pub(crate) fn mix(a: u64, b: u64) -> u64 {
    let mut z = a ^ b
        .wrapping_add(0x9E37_79B9_7F4A_7C15)
        .wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// FNV-1a, a hash that is stable across Rust versions (unlike `DefaultHasher`).
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(devices: usize) -> PlantConfig {
        PlantConfig {
            devices,
            seed: 7,
            ..PlantConfig::default()
        }
    }

    fn ch(plant: &Plant, name: &str) -> usize {
        plant.channels().iter().position(|c| c == name).unwrap()
    }

    /// `ticks` readings of one device: one Vec per tick.
    fn run(plant: &mut Plant, device: usize, ticks: usize) -> Vec<Vec<f32>> {
        (0..ticks)
            .map(|_| plant.next_tick().device(device).to_vec())
            .collect()
    }

    fn corr(a: &[f64], b: &[f64]) -> f64 {
        let n = a.len() as f64;
        let (ma, mb) = (a.iter().sum::<f64>() / n, b.iter().sum::<f64>() / n);
        let cov: f64 = a.iter().zip(b).map(|(x, y)| (x - ma) * (y - mb)).sum();
        let va: f64 = a.iter().map(|x| (x - ma).powi(2)).sum();
        let vb: f64 = b.iter().map(|y| (y - mb).powi(2)).sum();
        cov / (va * vb).sqrt()
    }

    fn column(rows: &[Vec<f32>], c: usize) -> Vec<f64> {
        rows.iter().map(|r| f64::from(r[c])).collect()
    }

    #[test]
    fn same_seed_same_readings_other_seed_other_readings() {
        let mut a = Plant::new(cfg(4), vec![]).unwrap();
        let mut b = Plant::new(cfg(4), vec![]).unwrap();
        let mut c = Plant::new(PlantConfig { seed: 8, ..cfg(4) }, vec![]).unwrap();
        for _ in 0..500 {
            let ta = a.next_tick().values.to_vec();
            let tb = b.next_tick();
            assert_eq!(ta, tb.values);
            assert_ne!(ta, c.next_tick().values);
        }
    }

    #[test]
    fn a_device_does_not_depend_on_how_many_devices_there_are() {
        let mut small = Plant::new(cfg(3), vec![]).unwrap();
        let mut large = Plant::new(cfg(7), vec![]).unwrap();
        assert_eq!(run(&mut small, 2, 300), run(&mut large, 2, 300));
    }

    #[test]
    fn ticks_carry_every_device_at_the_period() {
        let mut plant = Plant::new(cfg(3), vec![]).unwrap();
        assert_eq!(plant.device_id(2), "plant-0002");
        assert_eq!(plant.device_index("plant-0002"), Some(2));
        assert_eq!(plant.device_index("2"), Some(2));
        assert_eq!(plant.device_index("plant-0003"), None);
        assert_eq!(plant.device_index("plant-2"), None);
        for k in 0..3 {
            let tick = plant.next_tick();
            assert_eq!(tick.ts_ms, DEFAULT_START_MS + k * 1_000);
            assert_eq!(tick.len(), 3);
            assert_eq!(tick.values.len(), 3 * 8);
            let rows: Vec<_> = tick.iter().collect();
            assert_eq!(rows.len(), 3);
            assert_eq!(rows[1], (1, tick.device(1)));
            let named: Vec<_> = tick.readings().collect();
            assert_eq!(named[2], ("plant-0002", tick.device(2)));
            assert_eq!(tick.device_id(1), "plant-0001");
        }
        let owned = plant.next_tick_owned();
        assert_eq!(owned.len(), 3);
        assert_eq!(owned[1].0, "plant-0001");
        assert_eq!(owned[1].1, DEFAULT_START_MS + 3_000);
        assert_eq!(owned[1].2.len(), 8);
        assert_eq!(plant.ticks(), 4);
    }

    #[test]
    fn channels_are_correlated_as_designed() {
        let mut plant = Plant::new(cfg(4), vec![]).unwrap();
        let rows: Vec<Vec<Vec<f32>>> = {
            let mut per_device = vec![Vec::new(); 4];
            for _ in 0..5_000 {
                let tick = plant.next_tick();
                for (i, v) in tick.iter() {
                    per_device[i].push(v.to_vec());
                }
            }
            per_device
        };
        let (flow, current, inlet) = (
            ch(&plant, "flow"),
            ch(&plant, "motor_current"),
            ch(&plant, "inlet_pressure"),
        );
        for (i, rows) in rows.iter().enumerate() {
            let r = corr(&column(rows, flow), &column(rows, current));
            assert!(r > 0.5, "device {i}: corr(flow, motor_current) = {r}");
            let r = corr(&column(rows, flow), &column(rows, inlet));
            assert!(r < -0.2, "device {i}: corr(flow, inlet_pressure) = {r}");
        }
    }

    #[test]
    fn bearing_temperature_follows_load_with_a_lag() {
        // 10 s period, ~70 hours, 4 devices: the cross-correlation of flow
        // and bearing temperature, averaged over devices, peaks when the
        // temperature lags flow by a few minutes to half an hour.
        let devices = 4;
        let mut plant = Plant::new(
            PlantConfig {
                period_ms: 10_000,
                daily_drift: 0.0,
                ..cfg(devices)
            },
            vec![],
        )
        .unwrap();
        let (f, b) = (ch(&plant, "flow"), ch(&plant, "bearing_temp"));
        let mut flow = vec![Vec::new(); devices];
        let mut temp = vec![Vec::new(); devices];
        for _ in 0..25_000 {
            let tick = plant.next_tick();
            for (i, v) in tick.iter() {
                flow[i].push(f64::from(v[f]));
                temp[i].push(f64::from(v[b]));
            }
        }
        let curve: Vec<f64> = (0..=360)
            .step_by(6)
            .map(|lag| {
                (0..devices)
                    .map(|i| corr(&flow[i][..25_000 - lag], &temp[i][lag..]))
                    .sum::<f64>()
                    / devices as f64
            })
            .collect();
        let best = (0..curve.len())
            .max_by(|&x, &y| curve[x].total_cmp(&curve[y]))
            .unwrap();
        let best_min = best * 6 * 10 / 60;
        assert!(
            (4..=40).contains(&best_min),
            "peak at {best_min} min: {curve:?}"
        );
        assert!(curve[best] > curve[0] + 0.03, "{curve:?}");
        assert!(curve[best] > 0.3, "{curve:?}");
    }

    #[test]
    fn channels_have_their_stated_level_and_spread() {
        let mut plant = Plant::new(
            PlantConfig {
                period_ms: 60_000,
                daily_drift: 0.0,
                ..cfg(2)
            },
            vec![],
        )
        .unwrap();
        let mut per_device = vec![Vec::new(); 2];
        for _ in 0..30_000 {
            let tick = plant.next_tick();
            for (i, v) in tick.iter() {
                per_device[i].push(v.to_vec());
            }
        }
        for (d, rows) in per_device.iter().enumerate() {
            for (c, name) in plant.channels().iter().enumerate() {
                let x = column(rows, c);
                let n = x.len() as f64;
                let mean = x.iter().sum::<f64>() / n;
                let sd = (x.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / n).sqrt();
                let (base, want_sd) = (plant.channel_base(d, c), plant.channel_sd(d, c));
                assert!(x.iter().all(|v| v.is_finite()));
                assert!(
                    (mean - base).abs() < 0.5 * want_sd,
                    "{d}/{name}: mean {mean} vs base {base} (sd {want_sd})"
                );
                assert!(
                    (sd / want_sd - 1.0).abs() < 0.3,
                    "{d}/{name}: sd {sd} vs {want_sd}"
                );
            }
        }
    }

    #[test]
    fn custom_channels_are_deterministic_and_sane() {
        let make = || {
            Plant::new(
                PlantConfig {
                    channels: vec!["a".into(), "flow".into(), "zz_top".into()],
                    ..cfg(2)
                },
                vec![],
            )
            .unwrap()
        };
        let (mut p, mut q) = (make(), make());
        for _ in 0..200 {
            let t = p.next_tick().values.to_vec();
            assert_eq!(t, q.next_tick().values);
            assert_eq!(t.len(), 6);
            assert!(t.iter().all(|v| v.is_finite()));
        }
        // The flow channel of a device is the same whatever other channels exist.
        let mut full = Plant::new(cfg(2), vec![]).unwrap();
        let mut custom = make();
        let f = ch(&full, "flow");
        let full_flow: f32 = full.next_tick().device(1)[f];
        let custom_flow: f32 = custom.next_tick().device(1)[1];
        // Base and loadings agree; noise draws differ in order, so compare loosely.
        assert!((full_flow - custom_flow).abs() < 5.0 * full.channel_sd(1, f) as f32);
        assert_eq!(full.channel_base(1, f), custom.channel_base(1, 1));
        assert_eq!(full.channel_sd(1, f), custom.channel_sd(1, 1));
    }

    #[test]
    fn bad_configs_are_refused() {
        let bad = [
            PlantConfig {
                channels: vec![],
                ..cfg(1)
            },
            PlantConfig {
                channels: vec!["a".into(), "a".into()],
                ..cfg(1)
            },
            PlantConfig {
                channels: vec![" ".into()],
                ..cfg(1)
            },
            PlantConfig {
                period_ms: 0,
                ..cfg(1)
            },
            PlantConfig {
                noise: 1.5,
                ..cfg(1)
            },
            PlantConfig {
                daily_drift: f64::NAN,
                ..cfg(1)
            },
        ];
        for c in bad {
            let err = Plant::new(c.clone(), vec![]).unwrap_err();
            assert!(matches!(err, SimError::Config(_)), "{c:?}: {err}");
        }
        // No devices is fine (replay only).
        let mut empty = Plant::new(cfg(0), vec![]).unwrap();
        assert!(empty.next_tick().is_empty());
    }

    #[test]
    fn faults_must_name_a_known_device_and_channel() {
        let err = Plant::new(cfg(2), vec!["plant-0002:flow:stuck@0".parse().unwrap()]).unwrap_err();
        assert!(matches!(err, SimError::UnknownDevice { .. }), "{err}");
        assert!(err.to_string().contains("plant-0001"), "{err}");
        let err = Plant::new(cfg(2), vec!["plant-0001:flux:stuck@0".parse().unwrap()]).unwrap_err();
        assert!(matches!(err, SimError::UnknownChannel { .. }), "{err}");
        assert!(err.to_string().contains("motor_current"), "{err}");
        // Index forms resolve to the same fault as names.
        let plant = Plant::new(cfg(2), vec!["1:2:stuck@0".parse().unwrap()]).unwrap();
        assert_eq!(plant.faults().len(), 1);
        assert!(Plant::new(cfg(2), vec!["1:8:stuck@0".parse().unwrap()]).is_err());
    }

    /// Runs a clean and a faulty plant side by side (faults draw no random
    /// numbers, so they differ only by the fault) and returns, per tick,
    /// (ts offset ms, faulty value, clean value) of the faulty channel in
    /// units of its sd, after checking that nothing else differs.
    fn with_fault(spec: &str, period_ms: i64, ticks: usize) -> (Vec<(i64, f64, f64)>, f64) {
        let fault: Fault = spec.parse().unwrap();
        let c = PlantConfig {
            period_ms,
            ..cfg(3)
        };
        let mut clean = Plant::new(c.clone(), vec![]).unwrap();
        let mut faulty = Plant::new(c, vec![fault.clone()]).unwrap();
        let d = faulty.device_index(&fault.device).unwrap();
        let k = ch(&faulty, &fault.channel);
        let sd = faulty.channel_sd(d, k);
        let mut out = Vec::new();
        for _ in 0..ticks {
            let a = clean.next_tick();
            let b = faulty.next_tick();
            for (i, (x, y)) in a.values.iter().zip(b.values).enumerate() {
                if i != d * 8 + k {
                    assert_eq!(x, y, "{spec}: value {i} changed but is not the faulty one");
                }
            }
            out.push((
                a.ts_ms - DEFAULT_START_MS,
                f64::from(b.device(d)[k]) / sd,
                f64::from(a.device(d)[k]) / sd,
            ));
        }
        (out, sd)
    }

    fn assert_clean_before(rows: &[(i64, f64, f64)], start_ms: i64) {
        for &(t, faulty, clean) in rows.iter().filter(|r| r.0 < start_ms) {
            assert_eq!(faulty, clean, "changed at {t} ms, before the fault");
        }
    }

    #[test]
    fn step_adds_its_magnitude_while_it_lasts() {
        let (rows, _) = with_fault("plant-0001:flow:step:6@120s+300s", 1_000, 600);
        assert_clean_before(&rows, 120_000);
        for &(t, faulty, clean) in &rows {
            let want = if (120_000..420_000).contains(&t) {
                6.0
            } else {
                0.0
            };
            assert!(
                (faulty - clean - want).abs() < 1e-3,
                "at {t}: {}",
                faulty - clean
            );
        }
    }

    #[test]
    fn drift_ramps_by_its_rate_per_hour() {
        let (rows, _) = with_fault("plant-0002:bearing_temp:drift:3@10m", 10_000, 600);
        assert_clean_before(&rows, 600_000);
        for &(t, faulty, clean) in rows.iter().filter(|r| r.0 >= 600_000) {
            let want = 3.0 * (t - 600_000) as f64 / 3_600_000.0;
            assert!((faulty - clean - want).abs() < 1e-3, "at {t}");
        }
        let last = rows.last().unwrap();
        assert!(
            last.1 - last.2 > 3.0,
            "after more than an hour the drift exceeds 3 sd"
        );
    }

    #[test]
    fn stuck_freezes_the_value_at_the_start() {
        let (rows, _) = with_fault("plant-0000:valve_position:stuck@60s+120s", 1_000, 300);
        assert_clean_before(&rows, 60_000);
        let at_start = rows.iter().find(|r| r.0 == 60_000).unwrap();
        assert_eq!(at_start.1, at_start.2, "frozen at the value it had");
        let stuck: Vec<_> = rows
            .iter()
            .filter(|r| (60_000..180_000).contains(&r.0))
            .collect();
        assert!(
            stuck.iter().all(|r| r.1 == at_start.1),
            "constant while stuck"
        );
        assert!(
            stuck.iter().any(|r| r.2 != at_start.2),
            "the clean signal moves"
        );
        // Released afterwards.
        assert!(rows.iter().filter(|r| r.0 >= 180_000).all(|r| r.1 == r.2));
    }

    #[test]
    fn oscillation_adds_a_sinusoid_of_its_amplitude() {
        let (rows, _) = with_fault(
            "plant-0001:vibration_rms:oscillation:4:40s@100s",
            1_000,
            300,
        );
        assert_clean_before(&rows, 100_000);
        let diffs: Vec<(i64, f64)> = rows
            .iter()
            .filter(|r| r.0 >= 100_000)
            .map(|r| (r.0 - 100_000, r.1 - r.2))
            .collect();
        for &(t, d) in &diffs {
            let want = 4.0 * (std::f64::consts::TAU * t as f64 / 40_000.0).sin();
            assert!((d - want).abs() < 1e-3, "at +{t} ms: {d} vs {want}");
        }
        let max = diffs.iter().map(|d| d.1).fold(f64::MIN, f64::max);
        let min = diffs.iter().map(|d| d.1).fold(f64::MAX, f64::min);
        assert!(
            (max - 4.0).abs() < 0.05 && (min + 4.0).abs() < 0.05,
            "{min}..{max}"
        );
    }

    #[test]
    fn spike_is_a_short_burst_of_its_magnitude() {
        let (rows, _) = with_fault("plant-0002:outlet_pressure:spike:8@50s", 1_000, 120);
        assert_clean_before(&rows, 50_000);
        let hit: Vec<i64> = rows
            .iter()
            .filter(|r| (r.1 - r.2).abs() > 1e-6)
            .map(|r| r.0)
            .collect();
        assert_eq!(hit, vec![50_000, 51_000, 52_000]);
        for r in rows.iter().filter(|r| hit.contains(&r.0)) {
            assert!((r.1 - r.2 - 8.0).abs() < 1e-3);
        }
    }

    #[test]
    fn faults_stand_out_from_normal_variation() {
        // A 6 sd step is far outside the spread of sample-to-sample changes.
        let (rows, _) = with_fault("plant-0001:motor_current:step:6@100s", 1_000, 200);
        let jumps: Vec<f64> = rows.windows(2).map(|w| (w[1].1 - w[0].1).abs()).collect();
        let at = rows.iter().position(|r| r.0 == 100_000).unwrap();
        let normal_max = jumps[..at - 1].iter().cloned().fold(0.0, f64::max);
        assert!(
            jumps[at - 1] > 3.0 * normal_max,
            "{} vs {normal_max}",
            jumps[at - 1]
        );
    }
}
