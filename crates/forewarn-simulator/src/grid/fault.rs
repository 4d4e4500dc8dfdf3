//! Spatial faults of a plate and their compact text form.
//!
//! `DEVICE:KIND@START[+DURATION]:LOCATION`, for example
//!
//! * `plate-0001:hotspot@10m+20m:3,4`: a hot spot grows at row 3, column 4
//!   from minute 10, for 20 minutes;
//! * `plate-0000:dead@1h:0,7`: the sensor at row 0, column 7 reads a
//!   constant from one hour in;
//! * `plate-0002:leak@30m+1h:5,5`: a cold leak spreads from row 5, column 5;
//! * `plate-0003:heater_stuck@2h+30m:h1`: heater 1 is stuck (its location
//!   may also be written as its cell, `ROW,COL`).
//!
//! START and DURATION are humane durations ([`crate::parse_duration_ms`])
//! relative to the simulation start; rows and columns count from 0.

use std::fmt;
use std::str::FromStr;

use crate::SimError;
use crate::duration::{format_duration_ms, parse_duration_ms};

/// What a fault does at its location.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum GridFaultKind {
    /// An extra heat source whose strength and radius grow over the fault.
    Hotspot,
    /// The cell's sensor reads the value it had when the fault started.
    Dead,
    /// A cold sink whose reach spreads to the neighbours over the fault.
    Leak,
    /// A heater stuck at a power far from its commanded one, while its
    /// context channel keeps reporting the command.
    HeaterStuck,
}

impl GridFaultKind {
    pub const ALL: [GridFaultKind; 4] = [
        GridFaultKind::Hotspot,
        GridFaultKind::Dead,
        GridFaultKind::Leak,
        GridFaultKind::HeaterStuck,
    ];

    /// Name in the text form.
    pub fn name(self) -> &'static str {
        match self {
            GridFaultKind::Hotspot => "hotspot",
            GridFaultKind::Dead => "dead",
            GridFaultKind::Leak => "leak",
            GridFaultKind::HeaterStuck => "heater_stuck",
        }
    }
}

/// Where a fault acts: a cell, or (for `heater_stuck`) a heater by index.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GridLocation {
    Cell { row: usize, col: usize },
    Heater(usize),
}

impl fmt::Display for GridLocation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            GridLocation::Cell { row, col } => write!(f, "{row},{col}"),
            GridLocation::Heater(k) => write!(f, "h{k}"),
        }
    }
}

/// One fault on one plate.
#[derive(Debug, Clone, PartialEq)]
pub struct GridFault {
    /// Device id (`plate-0003`) or index (`3`).
    pub device: String,
    pub kind: GridFaultKind,
    /// Milliseconds after the simulation start.
    pub start_ms: i64,
    /// How long it lasts; `None` = until the end.
    pub duration_ms: Option<i64>,
    pub at: GridLocation,
}

impl fmt::Display for GridFault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let start = format_duration_ms(self.start_ms);
        write!(f, "{}:{}@{start}", self.device, self.kind.name())?;
        if let Some(d) = self.duration_ms {
            write!(f, "+{}", format_duration_ms(d))?;
        }
        write!(f, ":{}", self.at)
    }
}

/// The syntax, for error messages and the command's help.
pub const GRID_FAULT_HELP: &str = "expected DEVICE:KIND@START[+DURATION]:ROW,COL, e.g. \
     plate-0001:hotspot@10m+20m:3,4; kinds: hotspot, dead, leak, heater_stuck \
     (its location may be hK, heater K)";

impl FromStr for GridFault {
    type Err = SimError;

    fn from_str(spec: &str) -> Result<Self, SimError> {
        let bad = |reason: String| SimError::FaultSpec {
            spec: spec.to_owned(),
            reason,
        };
        let help = || bad(GRID_FAULT_HELP.into());
        let (what, loc) = spec.trim().rsplit_once(':').ok_or_else(help)?;
        let (device_kind, when) = what.split_once('@').ok_or_else(help)?;
        let (device, kind) = device_kind.split_once(':').ok_or_else(help)?;
        let (device, kind, loc) = (device.trim(), kind.trim(), loc.trim());
        if device.is_empty() {
            return Err(bad("empty device".into()));
        }
        let kind = (GridFaultKind::ALL.into_iter())
            .find(|k| k.name() == kind.to_ascii_lowercase())
            .ok_or_else(|| {
                bad(format!(
                    "unknown fault kind {kind:?} (hotspot, dead, leak, heater_stuck)"
                ))
            })?;
        let (start, duration) = match when.split_once('+') {
            Some((s, d)) => (s, Some(d)),
            None => (when, None),
        };
        let start_ms = parse_duration_ms(start).map_err(|e| bad(format!("start: {e}")))?;
        let duration_ms = match duration.map(parse_duration_ms) {
            None => None,
            Some(Ok(ms)) if ms > 0 => Some(ms),
            Some(Ok(_)) => return Err(bad("duration must be positive".into())),
            Some(Err(e)) => return Err(bad(format!("duration: {e}"))),
        };
        let index = |s: &str, what: &str| {
            (s.trim().parse::<usize>()).map_err(|_| {
                bad(format!(
                    "{what} {s:?} is not a row/column index (0, 1, ...)"
                ))
            })
        };
        let at = match (loc.strip_prefix('h'), loc.split_once(',')) {
            (Some(k), _) if kind == GridFaultKind::HeaterStuck => {
                GridLocation::Heater(index(k, "heater")?)
            }
            (_, Some((r, c))) => GridLocation::Cell {
                row: index(r, "row")?,
                col: index(c, "column")?,
            },
            _ => return Err(bad(format!("location {loc:?}: {GRID_FAULT_HELP}"))),
        };
        Ok(GridFault {
            device: device.to_owned(),
            kind,
            start_ms,
            duration_ms,
            at,
        })
    }
}
