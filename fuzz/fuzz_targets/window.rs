//! `window`: `forewarn_core::Window` against a plain `VecDeque` model.
//!
//! Invariants: no panic; `len() <= capacity()`; `to_vec()` has
//! `len() * channels` floats and equals the model's last `capacity` rows,
//! oldest first; heap bytes never change after construction.
#![no_main]

use std::collections::VecDeque;

use forewarn_core::Window;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&shape, rest)) = data.split_first() else {
        return;
    };
    let capacity = (shape & 0x0f) as usize; // 0 included
    let channels = 1 + (shape >> 4 & 3) as usize;
    let mut w = Window::new(capacity, channels);
    let heap = w.heap_bytes();
    let mut model: VecDeque<Vec<f32>> = VecDeque::new();
    for (i, chunk) in rest.chunks(channels).enumerate() {
        if chunk.len() < channels {
            break;
        }
        let row: Vec<f32> = chunk.iter().map(|&b| b as f32 + i as f32 * 256.0).collect();
        w.push(&row);
        if capacity > 0 {
            model.push_back(row);
            if model.len() > capacity {
                model.pop_front();
            }
        }
        assert!(w.len() <= w.capacity());
        assert_eq!(w.len(), model.len());
        assert_eq!(w.is_empty(), model.is_empty());
        assert_eq!(w.is_full(), w.len() == capacity);
        let v = w.to_vec();
        assert_eq!(v.len(), w.len() * channels);
        let want: Vec<f32> = model.iter().flatten().copied().collect();
        assert_eq!(v, want);
        assert_eq!(w.heap_bytes(), heap);
    }
});
