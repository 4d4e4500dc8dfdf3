//! Localisation: whether an alert names the place of the fault. For data
//! on a grid whose labels say which cell a fault acts on (the plate
//! simulator's `fault_row`, `fault_col`), each alert that opens on a
//! labelled row with a cell counts once; it is *within one* when its top
//! cell is at most one row and one column from a fault cell of the rows
//! of the batch that opened it (Chebyshev distance <= 1: the cell or one
//! of its eight neighbours). Alerts opened elsewhere are false alarms,
//! counted by the other metrics, not here.

use serde::Serialize;

/// An alert as it opened: the rows of the batch that opened it
/// (inclusive) and the grid cell it names first.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pointed {
    pub start: usize,
    pub end: usize,
    /// `(row, col)`.
    pub cell: (usize, usize),
}

/// Alerts opened on a located fault, and how many of them named a cell
/// within one of it. Pooled by summing.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct Localisation {
    pub alerts: u64,
    pub within_one: u64,
    /// `within_one / alerts`; `None` without alerts.
    pub share: Option<f64>,
}

impl Localisation {
    /// `fault_cells[i]`: the cell of the fault acting at row `i`, if any.
    pub fn of(pointed: &[Pointed], fault_cells: &[Option<(usize, usize)>]) -> Self {
        let mut out = Self::default();
        for p in pointed {
            let end = p.end.min(fault_cells.len().saturating_sub(1));
            let cells = fault_cells.get(p.start..=end).unwrap_or_default();
            let mut faults = cells.iter().flatten().peekable();
            if faults.peek().is_none() {
                continue;
            }
            out.alerts += 1;
            if faults.any(|&f| chebyshev(f, p.cell) <= 1) {
                out.within_one += 1;
            }
        }
        out.with_share()
    }

    pub fn add(&mut self, o: &Self) {
        self.alerts += o.alerts;
        self.within_one += o.within_one;
        *self = self.with_share();
    }

    fn with_share(self) -> Self {
        Self {
            share: (self.alerts > 0).then(|| self.within_one as f64 / self.alerts as f64),
            ..self
        }
    }
}

impl std::fmt::Display for Localisation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let share = self.share.map_or("-".into(), |s| format!("{s:.3}"));
        write!(
            f,
            "{} of {} alerts on a located fault name a cell within one of it ({share})",
            self.within_one, self.alerts
        )
    }
}

fn chebyshev(a: (usize, usize), b: (usize, usize)) -> usize {
    a.0.abs_diff(b.0).max(a.1.abs_diff(b.1))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(start: usize, end: usize, cell: (usize, usize)) -> Pointed {
        Pointed { start, end, cell }
    }

    #[test]
    fn alerts_on_located_faults_count_and_neighbours_are_within_one() {
        // Rows 0..3 normal, 4..7 a fault at (2, 2), 8..9 normal.
        let mut faults = vec![None; 10];
        for f in &mut faults[4..8] {
            *f = Some((2, 2));
        }
        for (pointed, want) in [
            // Opened before the fault: a false alarm, not counted.
            (vec![at(0, 1, (2, 2))], (0, 0, None)),
            // The cell itself, a diagonal neighbour, two columns away.
            (vec![at(4, 5, (2, 2))], (1, 1, Some(1.0))),
            (vec![at(6, 7, (3, 1))], (1, 1, Some(1.0))),
            (vec![at(6, 7, (2, 4))], (1, 0, Some(0.0))),
            // A batch straddling the onset counts.
            (vec![at(2, 5, (1, 2)), at(8, 9, (0, 0))], (1, 1, Some(1.0))),
            // Past the end of the labels: nothing, no panic.
            (vec![at(12, 15, (2, 2))], (0, 0, None)),
        ] {
            let l = Localisation::of(&pointed, &faults);
            assert_eq!((l.alerts, l.within_one, l.share), want, "{pointed:?}");
        }
    }

    #[test]
    fn pooling_sums_counts_and_recomputes_the_share() {
        let faults = [Some((0, 0)), Some((5, 5))];
        let mut pooled = Localisation::of(&[at(0, 0, (1, 1))], &faults);
        pooled.add(&Localisation::of(&[at(1, 1, (3, 3))], &faults));
        pooled.add(&Localisation::default());
        assert_eq!(
            (pooled.alerts, pooled.within_one, pooled.share),
            (2, 1, Some(0.5))
        );
        assert_eq!(
            pooled.to_string(),
            "1 of 2 alerts on a located fault name a cell within one of it (0.500)"
        );
    }
}
