//! What the serve pipeline and the API read of a device: its view, its
//! queue, its open alert and its window (a fault classifier's input).

use super::{Device, DeviceView, Engine};
use crate::alert::Alert;

impl Engine {
    fn view(&self, d: &Device) -> DeviceView {
        DeviceView {
            device: d.id.clone(),
            readings: d.readings,
            window_fill: d.window.len(),
            window_capacity: d.window.capacity(),
            last_ts: d.last_ts,
            last_score: d.last_score.as_ref().map(|s| s.score),
            last_threshold: d.last_score.as_ref().map(|s| s.threshold),
            last_shares: d
                .last_score
                .as_ref()
                .map(|s| self.cfg.contributors(&s.shares, self.cfg.view_shares()))
                .unwrap_or_default(),
            open_alert: d.open.as_ref().map(|a| a.id.clone()),
            warmed_up: d.predicted_at >= self.cfg.warmup as u64 && d.predicted,
        }
    }

    pub fn device(&self, id: &str) -> Option<DeviceView> {
        let i = *self.index.get(id)?;
        Some(self.view(&self.devices[i]))
    }

    /// Views of the devices that took a reading since the last call, in the
    /// order they first did; clears the list. Cheaper than [`Self::device`]
    /// per reading: each device is listed once however many readings it took.
    pub fn drain_touched(&mut self) -> Vec<DeviceView> {
        let touched = std::mem::take(&mut self.touched);
        let views = touched
            .iter()
            .map(|&i| self.view(&self.devices[i]))
            .collect();
        for &i in &touched {
            self.devices[i].touched = false;
        }
        self.touched = touched;
        self.touched.clear();
        views
    }

    /// Ids of all tracked devices.
    pub fn device_ids(&self) -> impl Iterator<Item = &str> {
        self.devices.iter().map(|d| d.id.as_str())
    }

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
