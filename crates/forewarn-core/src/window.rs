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

    #[test]
    fn partial_fill() {
        let mut w = Window::new(4, 1);
        w.push(&[1.0]);
        w.push(&[2.0]);
        assert_eq!(w.to_vec(), vec![1.0, 2.0]);
        assert!(!w.is_full());
    }
}
