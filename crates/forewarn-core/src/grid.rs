//! Sensors laid out on a grid (a plate of `rows x cols` cells): where each
//! monitored channel sits, and which cells carry an alert's error.

use crate::alert::{ChannelShare, GridCell};
use serde::{Deserialize, Serialize};

/// One monitored channel's cell.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GridSlot {
    pub channel: String,
    pub row: usize,
    pub col: usize,
}

/// A `rows x cols` grid and the cell of each monitored channel. Valid by
/// construction ([`GridLayout::new`]): every slot inside the grid, no two
/// channels on one cell, no channel twice. Cells without a channel are
/// gaps.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct GridLayout {
    rows: usize,
    cols: usize,
    slots: Vec<GridSlot>,
}

impl GridLayout {
    /// A layout with explicit cells; the message says what is wrong.
    pub fn new(rows: usize, cols: usize, slots: Vec<GridSlot>) -> Result<Self, String> {
        if rows == 0 || cols == 0 {
            return Err(format!("a grid of {rows} x {cols} has no cell"));
        }
        let mut taken = vec![None::<&str>; rows * cols];
        for (i, s) in slots.iter().enumerate() {
            if s.row >= rows || s.col >= cols {
                return Err(format!(
                    "channel {} at row {} column {} is outside the {rows} x {cols} grid",
                    s.channel, s.row, s.col
                ));
            }
            if slots[..i].iter().any(|o| o.channel == s.channel) {
                return Err(format!("channel {} is on the grid twice", s.channel));
            }
            let cell = &mut taken[s.row * cols + s.col];
            if let Some(other) = cell {
                return Err(format!(
                    "channels {other} and {} are both at row {} column {}",
                    s.channel, s.row, s.col
                ));
            }
            *cell = Some(&s.channel);
        }
        Ok(Self { rows, cols, slots })
    }

    /// `channels` row by row from the top left; the cells after the last
    /// channel are gaps. More channels than cells is an error.
    pub fn row_major(rows: usize, cols: usize, channels: &[String]) -> Result<Self, String> {
        if channels.len() > rows * cols {
            return Err(format!(
                "{} channels do not fit a {rows} x {cols} grid",
                channels.len()
            ));
        }
        let slots = channels
            .iter()
            .enumerate()
            .map(|(i, c)| GridSlot {
                channel: c.clone(),
                row: i / cols.max(1),
                col: i % cols.max(1),
            })
            .collect();
        Self::new(rows, cols, slots)
    }

    /// A layout from the channel of every cell, row-major (`rows x cols`
    /// entries, `None` a gap): the form of a convlstm `model.json`'s
    /// `layout`.
    pub fn from_cells(rows: usize, cols: usize, cells: &[Option<String>]) -> Result<Self, String> {
        if cells.len() != rows * cols {
            return Err(format!("{} cells for a {rows} x {cols} grid", cells.len()));
        }
        let slots = cells
            .iter()
            .enumerate()
            .filter_map(|(i, c)| {
                c.as_ref().map(|c| GridSlot {
                    channel: c.clone(),
                    row: i / cols,
                    col: i % cols,
                })
            })
            .collect();
        Self::new(rows, cols, slots)
    }

    pub fn rows(&self) -> usize {
        self.rows
    }

    pub fn cols(&self) -> usize {
        self.cols
    }

    pub fn slots(&self) -> &[GridSlot] {
        &self.slots
    }

    /// The channel of every cell, row by row; `None` for a gap.
    pub fn layout(&self) -> Vec<Vec<Option<String>>> {
        let mut grid = vec![vec![None; self.cols]; self.rows];
        for s in &self.slots {
            grid[s.row][s.col] = Some(s.channel.clone());
        }
        grid
    }

    /// The cell of `channel`, if it is on the grid.
    pub fn slot(&self, channel: &str) -> Option<&GridSlot> {
        self.slots.iter().find(|s| s.channel == channel)
    }

    /// The cells of `shares`, in their order (an alert's contributors:
    /// largest first); a channel not on the grid is left out.
    pub fn cells(&self, shares: &[ChannelShare]) -> Vec<GridCell> {
        shares
            .iter()
            .filter_map(|s| {
                self.slot(&s.channel).map(|g| GridCell {
                    row: g.row,
                    col: g.col,
                    channel: s.channel.clone(),
                    share: s.share,
                })
            })
            .collect()
    }
}

impl<'de> Deserialize<'de> for GridLayout {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        struct Raw {
            rows: usize,
            cols: usize,
            slots: Vec<GridSlot>,
        }
        let r = Raw::deserialize(d)?;
        Self::new(r.rows, r.cols, r.slots).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn slot(channel: &str, row: usize, col: usize) -> GridSlot {
        GridSlot {
            channel: channel.into(),
            row,
            col,
        }
    }

    fn names(n: &[&str]) -> Vec<String> {
        n.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn layouts_are_validated() {
        // (rows, cols, slots) -> error mentions
        let cases: Vec<(usize, usize, Vec<GridSlot>, Option<&str>)> = vec![
            (2, 2, vec![slot("a", 0, 0), slot("b", 1, 1)], None),
            (0, 2, vec![], Some("no cell")),
            (2, 2, vec![slot("a", 2, 0)], Some("outside")),
            (2, 2, vec![slot("a", 0, 2)], Some("outside")),
            (
                2,
                2,
                vec![slot("a", 0, 0), slot("b", 0, 0)],
                Some("both at"),
            ),
            (2, 2, vec![slot("a", 0, 0), slot("a", 0, 1)], Some("twice")),
        ];
        for (rows, cols, slots, want) in cases {
            let got = GridLayout::new(rows, cols, slots.clone());
            match want {
                None => assert!(got.is_ok(), "{slots:?}: {got:?}"),
                Some(w) => assert!(got.unwrap_err().contains(w), "{slots:?}"),
            }
        }
    }

    #[test]
    fn row_major_fills_rows_then_leaves_gaps() {
        let g = GridLayout::row_major(2, 3, &names(&["a", "b", "c", "d"])).unwrap();
        assert_eq!(
            g.layout(),
            vec![
                vec![Some("a".into()), Some("b".into()), Some("c".into())],
                vec![Some("d".into()), None, None],
            ]
        );
        assert!(GridLayout::row_major(1, 2, &names(&["a", "b", "c"])).is_err());
        let cells = [Some("a".into()), None, None, Some("b".into())];
        let g = GridLayout::from_cells(2, 2, &cells).unwrap();
        assert_eq!(g.slots(), &[slot("a", 0, 0), slot("b", 1, 1)]);
        assert!(GridLayout::from_cells(2, 1, &cells).is_err());
    }

    #[test]
    fn cells_follow_the_shares() {
        let g = GridLayout::new(2, 2, vec![slot("a", 0, 1), slot("b", 1, 0)]).unwrap();
        let share = |c: &str, s: f64| ChannelShare {
            channel: c.into(),
            share: s,
        };
        let cell = |row, col, c: &str, share| GridCell {
            row,
            col,
            channel: c.into(),
            share,
        };
        // shares -> cells (same order; channels off the grid left out)
        let cases = vec![
            (vec![], vec![]),
            (
                vec![share("b", 0.7), share("a", 0.3)],
                vec![cell(1, 0, "b", 0.7), cell(0, 1, "a", 0.3)],
            ),
            (
                vec![share("x", 0.6), share("a", 0.4)],
                vec![cell(0, 1, "a", 0.4)],
            ),
        ];
        for (shares, want) in cases {
            assert_eq!(g.cells(&shares), want, "{shares:?}");
        }
    }

    #[test]
    fn deserializing_validates() {
        let ok = r#"{"rows":1,"cols":2,"slots":[{"channel":"a","row":0,"col":1}]}"#;
        let g: GridLayout = serde_json::from_str(ok).unwrap();
        assert_eq!(g.layout(), vec![vec![None, Some("a".into())]]);
        let bad = r#"{"rows":1,"cols":2,"slots":[{"channel":"a","row":0,"col":2}]}"#;
        assert!(serde_json::from_str::<GridLayout>(bad).is_err());
    }
}
