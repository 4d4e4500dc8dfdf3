//! A device's sliding window of its last `w` (scaled) readings.

/// Fixed-capacity ring of rows; memory is `capacity * channels` floats and
/// never grows.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct Window {
    channels: usize,
    capacity: usize,
    data: Vec<f32>,
    /// Index of the next row to write.
    head: usize,
    len: usize,
}

impl Window {
    pub fn new(capacity: usize, channels: usize) -> Self {
        Self {
            channels,
            capacity,
            data: vec![0.0; capacity * channels],
            head: 0,
            len: 0,
        }
    }

    pub fn push(&mut self, row: &[f32]) {
        debug_assert_eq!(row.len(), self.channels);
        if self.capacity == 0 {
            return;
        }
        let at = self.head * self.channels;
        self.data[at..at + self.channels].copy_from_slice(row);
        self.head = (self.head + 1) % self.capacity;
        self.len = (self.len + 1).min(self.capacity);
    }

    pub fn len(&self) -> usize {
        self.len
    }
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
    pub fn capacity(&self) -> usize {
        self.capacity
    }
    pub fn is_full(&self) -> bool {
        self.len == self.capacity
    }

    /// Rows oldest first, row-major.
    pub fn to_vec(&self) -> Vec<f32> {
        let mut out = Vec::with_capacity(self.len * self.channels);
        let start = (self.head + self.capacity - self.len) % self.capacity.max(1);
        for i in 0..self.len {
            let r = (start + i) % self.capacity;
            out.extend_from_slice(&self.data[r * self.channels..(r + 1) * self.channels]);
        }
        out
    }

    /// Whether any of `columns` changed value in the newest `rows` rows
    /// (each compared with the row before it; at most the rows held).
    pub fn changed_within(&self, rows: usize, columns: &[usize]) -> bool {
        if columns.is_empty() {
            return false;
        }
        let n = rows.min(self.len.saturating_sub(1));
        let row = |back: usize| {
            let r = (self.head + self.capacity - 1 - back) % self.capacity;
            &self.data[r * self.channels..(r + 1) * self.channels]
        };
        (0..n).any(|back| {
            let (newer, older) = (row(back), row(back + 1));
            // Bitwise, so a NaN that stays NaN is no change.
            (columns.iter()).any(|&j| newer[j].to_bits() != older[j].to_bits())
        })
    }

    /// Whether the ring's fields agree with each other (a window decoded
    /// from a checkpoint is checked before use, so a corrupt one cannot
    /// index out of bounds).
    pub fn is_consistent(&self, capacity: usize, channels: usize) -> bool {
        self.capacity == capacity
            && self.channels == channels
            && self.data.len() == capacity * channels
            && self.len <= capacity
            && (self.head < capacity || (capacity == 0 && self.head == 0))
    }

    /// Heap bytes held.
    pub fn heap_bytes(&self) -> usize {
        self.data.capacity() * std::mem::size_of::<f32>()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_the_last_rows_in_order() {
        let mut w = Window::new(3, 2);
        assert!(w.is_empty());
        for i in 0..5 {
            w.push(&[i as f32, 10.0 + i as f32]);
        }
        assert!(w.is_full());
        assert_eq!(w.len(), 3);
        assert_eq!(w.to_vec(), vec![2.0, 12.0, 3.0, 13.0, 4.0, 14.0]);
        assert_eq!(w.heap_bytes(), 24);
    }

    /// Table: (rows, columns) -> whether they changed. Column 1 steps at
    /// the newest row but one; column 0 never changes; the ring has
    /// wrapped (capacity 4, six rows pushed).
    #[test]
    fn changed_within_looks_back_the_newest_rows() {
        let mut w = Window::new(4, 2);
        for cmd in [9.0, 9.0, 0.0, 0.0, 1.0, 1.0] {
            w.push(&[5.0, cmd]);
        }
        let cases: &[(usize, &[usize], bool)] = &[
            (0, &[1], false),
            (1, &[1], false),
            (2, &[1], true),
            // Held rows: 0, 0, 1, 1; the step from 9 left the ring.
            (10, &[1], true),
            (10, &[0], false),
            (10, &[], false),
            (2, &[0, 1], true),
        ];
        for &(rows, columns, want) in cases {
            assert_eq!(w.changed_within(rows, columns), want, "{rows} {columns:?}");
        }
        let mut fresh = Window::new(4, 2);
        assert!(!fresh.changed_within(5, &[1]));
        fresh.push(&[0.0, f32::NAN]);
        fresh.push(&[0.0, f32::NAN]);
        assert!(!fresh.changed_within(5, &[1]), "NaN to NaN is no change");
        assert!(!Window::new(0, 2).changed_within(5, &[1]));
    }

    #[test]
    fn partial_fill() {
        let mut w = Window::new(4, 1);
        w.push(&[1.0]);
        w.push(&[2.0]);
        assert_eq!(w.to_vec(), vec![1.0, 2.0]);
        assert!(!w.is_full());
    }
}
