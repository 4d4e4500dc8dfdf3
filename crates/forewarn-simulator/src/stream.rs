//! What `forewarn simulate` streams: the simulated plant's devices (or
//! plates of a grid) tick by tick, and a replayed file beside them as one more device while its rows
//! last; when each reading is due in wall time; and the CSV export of a
//! plant. The command only sends (to Kafka or stdout) and sleeps.

use std::io::Write;

use crate::SimError;
use crate::fault::Fault;
use crate::grid::{Grid, GridConfig, GridFault, GridSize};
use crate::plant::{Plant, PlantConfig, Tick};
use crate::replay::Replay;

/// Longest device id (the service's, `forewarn_core::reading`).
const MAX_DEVICE_ID_LEN: usize = 128;

/// A replayed file and the device id it streams as.
#[derive(Debug)]
pub struct Replayed {
    pub id: String,
    pub data: Replay,
}

impl Replayed {
    /// Reads `path`, streamed as `id` (default: the file name without its
    /// extension).
    pub fn open(
        path: &std::path::Path,
        opts: &crate::ReplayOptions,
        id: Option<String>,
    ) -> Result<Self, SimError> {
        let data = Replay::open(path, opts)?;
        let id = id.unwrap_or_else(|| {
            (path.file_stem()).map_or_else(|| "replay".into(), |s| s.to_string_lossy().into())
        });
        Ok(Replayed { id, data })
    }
}

/// Where a reading comes from (its channels differ).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    Plant,
    Replay,
}

/// What simulates the devices: the plant, or plates of sensors on a grid.
#[derive(Debug)]
pub enum Source {
    Plant(Plant),
    Grid(Grid),
}

impl From<Plant> for Source {
    fn from(p: Plant) -> Self {
        Source::Plant(p)
    }
}

impl From<Grid> for Source {
    fn from(g: Grid) -> Self {
        Source::Grid(g)
    }
}

impl Source {
    /// The plant of `cfg` with `faults`, or with `grid` plates of that size
    /// (`cfg`'s devices, period, start, seed, noise in °C and daily drift)
    /// with `grid_faults`.
    pub fn new(
        cfg: PlantConfig,
        grid: Option<GridSize>,
        faults: Vec<Fault>,
        grid_faults: Vec<GridFault>,
    ) -> Result<Self, SimError> {
        let Some(size) = grid else {
            return Ok(Plant::new(cfg, faults)?.into());
        };
        let grid = GridConfig {
            devices: cfg.devices,
            size,
            period_ms: cfg.period_ms,
            start_ms: cfg.start_ms,
            seed: cfg.seed,
            noise: cfg.noise,
            daily_drift: cfg.daily_drift,
        };
        Ok(Grid::new(grid, grid_faults)?.into())
    }

    pub fn devices(&self) -> usize {
        match self {
            Source::Plant(p) => p.devices(),
            Source::Grid(g) => g.devices(),
        }
    }

    /// Id of device `i`.
    pub fn device_id(&self, i: usize) -> &str {
        match self {
            Source::Plant(p) => p.device_id(i),
            Source::Grid(g) => g.device_id(i),
        }
    }

    /// Every device's id, in order.
    pub fn device_ids(&self) -> Vec<String> {
        (0..self.devices())
            .map(|i| self.device_id(i).into())
            .collect()
    }

    pub fn device_index(&self, id: &str) -> Option<usize> {
        match self {
            Source::Plant(p) => p.device_index(id),
            Source::Grid(g) => g.device_index(id),
        }
    }

    pub fn channels(&self) -> &[String] {
        match self {
            Source::Plant(p) => p.channels(),
            Source::Grid(g) => g.channels(),
        }
    }

    /// The injected faults, in their text form.
    pub fn faults(&self) -> Vec<String> {
        match self {
            Source::Plant(p) => p.faults().iter().map(ToString::to_string).collect(),
            Source::Grid(g) => g.faults().iter().map(ToString::to_string).collect(),
        }
    }

    fn next_tick(&mut self) -> Tick<'_> {
        match self {
            Source::Plant(p) => p.next_tick(),
            Source::Grid(g) => g.next_tick(),
        }
    }
}

/// The readings of a simulation, tick by tick.
#[derive(Debug)]
pub struct Stream {
    source: Source,
    replay: Option<Replayed>,
    ticks: Option<u64>,
    tick: u64,
}

impl Stream {
    /// `ticks`: readings per device (`None`: until stopped; with no
    /// simulated device, the replayed file's rows at most). The replay's
    /// id must be a valid device id and not a simulated device's.
    pub fn new(
        source: impl Into<Source>,
        replay: Option<Replayed>,
        ticks: Option<u64>,
    ) -> Result<Self, SimError> {
        let source = source.into();
        let bad = |m: String| Err(SimError::Config(m));
        if let Some(r) = &replay {
            let id = &r.id;
            if id.is_empty()
                || id.chars().count() > MAX_DEVICE_ID_LEN
                || id.chars().any(char::is_control)
            {
                return bad(format!(
                    "replay device id {id:?} must be 1 to {MAX_DEVICE_ID_LEN} characters without control characters"
                ));
            }
            if source.device_index(id).is_some() {
                return bad(format!(
                    "replay device id {id:?} collides with a simulated device; pick another with --replay-device"
                ));
            }
        }
        let ticks = match &replay {
            None if source.devices() == 0 => {
                return bad("nothing to simulate: --devices is 0 and there is no --replay".into());
            }
            Some(r) if source.devices() == 0 => {
                let rows = r.data.len() as u64;
                Some(ticks.map_or(rows, |t| t.min(rows)))
            }
            _ => ticks,
        };
        Ok(Self {
            source,
            replay,
            ticks,
            tick: 0,
        })
    }

    pub fn source(&self) -> &Source {
        &self.source
    }

    pub fn replay(&self) -> Option<&Replayed> {
        self.replay.as_ref()
    }

    /// Readings per device to produce (`None`: until stopped).
    pub fn ticks(&self) -> Option<u64> {
        self.ticks
    }

    /// Ticks produced so far.
    pub fn produced(&self) -> u64 {
        self.tick
    }

    /// The next tick's readings, `None` once every tick is produced.
    pub fn next_tick(&mut self) -> Option<TickReadings<'_>> {
        if self.ticks.is_some_and(|t| self.tick >= t) {
            return None;
        }
        let i = self.tick as usize;
        self.tick += 1;
        let replay = (self.replay.as_ref())
            .filter(|r| i < r.data.len())
            .map(|r| {
                let (ts, values) = r.data.row(i);
                (r.id.as_str(), ts, values)
            });
        Some(TickReadings {
            tick: self.source.next_tick(),
            replay,
        })
    }
}

/// One tick: every simulated device's reading, then the replay's.
#[derive(Debug)]
pub struct TickReadings<'a> {
    tick: Tick<'a>,
    replay: Option<(&'a str, i64, &'a [f32])>,
}

impl<'a> TickReadings<'a> {
    /// The simulated time of the plant's readings.
    pub fn ts_ms(&self) -> i64 {
        self.tick.ts_ms
    }

    /// Readings in the tick.
    pub fn len(&self) -> usize {
        self.tick.len() + usize::from(self.replay.is_some())
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// `(device, ts_ms, values, origin)` of every reading, in order.
    pub fn readings(&self) -> impl Iterator<Item = (&'a str, i64, &'a [f32], Origin)> + '_ {
        let ts = self.tick.ts_ms;
        (self.tick.readings())
            .map(move |(id, v)| (id, ts, v, Origin::Plant))
            .chain(self.replay.map(|(id, ts, v)| (id, ts, v, Origin::Replay)))
    }
}

/// How fast readings go out.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Pace {
    /// One tick per period of wall time.
    RealTime {
        period_s: f64,
    },
    /// Readings per second.
    Rate(f64),
    Unpaced,
}

impl Pace {
    /// `rate` readings per second (0: unpaced), or real time: a tick per
    /// `period_ms`.
    pub fn new(rate: Option<f64>, period_ms: i64) -> Self {
        match rate {
            None => Pace::RealTime {
                period_s: period_ms as f64 / 1000.0,
            },
            Some(0.0) => Pace::Unpaced,
            Some(r) => Pace::Rate(r),
        }
    }

    /// Seconds between two readings of a tick of `readings`.
    pub fn step_s(self, readings: usize) -> f64 {
        match self {
            Pace::RealTime { period_s } => period_s / readings.max(1) as f64,
            Pace::Rate(r) => 1.0 / r,
            Pace::Unpaced => 0.0,
        }
    }
}

/// Writes `ticks` ticks of `plant` as CSV, device `i` into `out[i]`
/// (`ts,<channels>`, ts in epoch ms): training and evaluation data.
pub fn write_csv<W: Write>(plant: &mut Plant, ticks: u64, out: &mut [W]) -> std::io::Result<()> {
    // With faults injected, each row carries its label: 1 while a fault
    // acts on that device (evaluation data with its ground truth).
    let labelled = !plant.faults().is_empty();
    let mut header = format!("ts,{}", plant.channels().join(","));
    if labelled {
        header.push_str(&format!(",{LABEL_COLUMN}"));
    }
    for w in out.iter_mut() {
        writeln!(w, "{header}")?;
    }
    for _ in 0..ticks {
        let tick = plant.next_tick();
        let ts = tick.ts_ms;
        let n = tick.len();
        let values = tick.values.to_vec();
        let row = values.len().checked_div(n).unwrap_or(0);
        for (i, values) in values.chunks(row.max(1)).take(n).enumerate() {
            let w = &mut out[i];
            write!(w, "{ts}")?;
            for v in values {
                write!(w, ",{v}")?;
            }
            if labelled {
                write!(w, ",{}", u8::from(plant.faulty(i, ts)))?;
            }
            writeln!(w)?;
        }
    }
    Ok(())
}

/// Writes `ticks` ticks of `grid` as CSV, plate `i` into `out[i]`:
/// `ts,<channels>,anomaly,fault_row,fault_col` (ts in epoch ms; the fault
/// columns -1 while no fault acts). Each call writes its header, so one
/// run can be split into files (a training part, then an evaluation part).
pub fn write_grid_csv<W: Write>(grid: &mut Grid, ticks: u64, out: &mut [W]) -> std::io::Result<()> {
    let header = format!(
        "ts,{},{},fault_row,fault_col",
        grid.channels().join(","),
        LABEL_COLUMN
    );
    for w in out.iter_mut() {
        writeln!(w, "{header}")?;
    }
    let mut labels = vec![None; grid.devices()];
    for _ in 0..ticks {
        let ts = grid.next_ts_ms();
        for (i, l) in labels.iter_mut().enumerate() {
            *l = grid.fault_at(i, ts);
        }
        let tick = grid.next_tick();
        for ((i, values), w) in tick.iter().zip(out.iter_mut()) {
            write!(w, "{ts}")?;
            for v in values {
                write!(w, ",{v}")?;
            }
            match labels[i] {
                Some((r, c)) => writeln!(w, ",1,{r},{c}")?,
                None => writeln!(w, ",0,-1,-1")?,
            }
        }
    }
    Ok(())
}

/// The label column [`write_csv`] adds when faults are injected.
pub const LABEL_COLUMN: &str = "anomaly";

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plant::PlantConfig;
    use crate::replay::ReplayOptions;

    fn plant(devices: usize) -> Plant {
        Plant::new(
            PlantConfig {
                devices,
                channels: vec!["a".into(), "b".into()],
                start_ms: 0,
                ..PlantConfig::default()
            },
            vec![],
        )
        .unwrap()
    }

    fn replayed(id: &str) -> Replayed {
        let data = Replay::from_reader(
            "r.csv",
            "ts,x\n1767225600,1\n1767225660,2\n1767225720,3\n".as_bytes(),
            &ReplayOptions::default(),
        )
        .unwrap();
        Replayed {
            id: id.into(),
            data,
        }
    }

    #[test]
    fn ticks_hold_every_device_then_the_replay_while_it_lasts() {
        let mut s = Stream::new(plant(2), Some(replayed("r")), Some(4)).unwrap();
        let mut seen = vec![];
        while let Some(t) = s.next_tick() {
            let ts = t.ts_ms();
            seen.push(
                (t.readings())
                    .map(|(id, at, v, o)| {
                        (
                            id.to_owned(),
                            at - if o == Origin::Plant { ts } else { 0 },
                            v.len(),
                            o,
                        )
                    })
                    .collect::<Vec<_>>(),
            );
        }
        assert_eq!(seen.len(), 4);
        assert_eq!(seen[0].len(), 3);
        assert_eq!(
            seen[0][2],
            ("r".into(), 1_767_225_600_000, 1, Origin::Replay)
        );
        assert_eq!(seen[2][2].1, 1_767_225_720_000);
        // The replay's three rows are done: the plant goes on alone.
        assert_eq!(seen[3].len(), 2);
        assert!(seen[3].iter().all(|r| r.3 == Origin::Plant));
        // The replay alone stops with its rows.
        let mut s = Stream::new(plant(0), Some(replayed("r")), None).unwrap();
        assert_eq!(s.ticks(), Some(3));
        let mut n = 0;
        while s.next_tick().is_some() {
            n += 1;
        }
        assert_eq!((n, s.produced()), (3, 3));
    }

    #[test]
    fn bad_setups_are_refused() {
        let e = |r: Result<Stream, SimError>| r.unwrap_err().to_string();
        assert!(e(Stream::new(plant(0), None, None)).contains("nothing to simulate"));
        assert!(e(Stream::new(plant(2), Some(replayed("plant-0001")), None)).contains("collides"));
        assert!(e(Stream::new(plant(1), Some(replayed("")), None)).contains("1 to 128"));
        assert_eq!(Pace::RealTime { period_s: 1.0 }.step_s(4), 0.25);
        assert_eq!(Pace::Rate(100.0).step_s(4), 0.01);
        assert_eq!(Pace::Unpaced.step_s(4), 0.0);
    }

    #[test]
    fn csv_export_writes_a_file_per_device() {
        let mut p = plant(2);
        let mut out = vec![Vec::new(), Vec::new()];
        write_csv(&mut p, 3, &mut out).unwrap();
        for o in &out {
            let text = String::from_utf8(o.clone()).unwrap();
            let lines: Vec<&str> = text.lines().collect();
            assert_eq!(lines.len(), 4);
            assert_eq!(lines[0], "ts,a,b");
            assert!(lines[2].starts_with("1000,"), "{}", lines[2]);
        }
    }

    #[test]
    fn csv_export_labels_the_rows_a_fault_acts_on() {
        let mut p = plant(2);
        p.add_fault(crate::Fault {
            device: "plant-0001".into(),
            channel: "a".into(),
            kind: crate::FaultKind::Step { magnitude: 3.0 },
            start_ms: 2000,
            duration_ms: Some(2000),
        })
        .unwrap();
        let mut out = vec![Vec::new(), Vec::new()];
        write_csv(&mut p, 6, &mut out).unwrap();
        let labels = |o: &[u8]| -> Vec<String> {
            let text = String::from_utf8(o.to_vec()).unwrap();
            text.lines()
                .map(|l| l.rsplit(',').next().unwrap().to_owned())
                .collect()
        };
        assert_eq!(labels(&out[0]), ["anomaly", "0", "0", "0", "0", "0", "0"]);
        // Ticks at 0..5 s; the fault acts on [2 s, 4 s).
        assert_eq!(labels(&out[1]), ["anomaly", "0", "0", "1", "1", "0", "0"]);
    }
}
