//! What the serve pipeline reads of a device besides its view: its
//! queue, its open alert and its window (a fault classifier's input).

use super::Engine;
use crate::alert::Alert;

impl Engine {
    /// Batches of the device waiting for a forecaster call.
    pub fn queued_batches(&self, id: &str) -> u32 {
        self.index.get(id).map_or(0, |&i| self.devices[i].queued)
    }

    /// Every open alert.
    pub fn open_alerts(&self) -> impl Iterator<Item = &Alert> {
        self.devices.iter().filter_map(|d| d.open.as_deref())
    }

    /// The device's open alert, if any.
    pub fn open_alert(&self, id: &str) -> Option<&Alert> {
        let i = *self.index.get(id)?;
        self.devices[i].open.as_deref()
    }

    /// The device's window, oldest row first, row-major, back in the
    /// readings' units: what a fault classifier reads. The window holds
    /// scaled rows, so a value beyond the scaler's limit reads as the
    /// limit, and a channel constant in training as that constant.
    pub fn window_readings(&self, id: &str) -> Option<Vec<f32>> {
        let i = *self.index.get(id)?;
        let mut rows = self.devices[i].window.to_vec();
        let c = self.cfg.schema.len();
        for row in rows.chunks_exact_mut(c.max(1)) {
            self.cfg.scaler.inverse(row);
        }
        Some(rows)
    }
}
