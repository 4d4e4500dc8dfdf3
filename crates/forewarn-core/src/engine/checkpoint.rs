//! Device-state checkpoints: the engine's per-device state as bytes, so a
//! restarted instance, or the instance a partition moves to, carries on
//! exactly where the last one left off instead of re-warming.
//!
//! A checkpoint holds the devices changed since the previous one (plus
//! tombstones for devices dropped meanwhile), each tagged with its origin
//! (the Kafka partition its readings come from). The caller stores them
//! somewhere durable together with the input position they correspond to;
//! replaying the input from that position into an engine restored from
//! them reproduces the same batches, scores and alert ids.
//!
//! Checkpoints are taken only with no batch queued: a queued batch's rows
//! live outside the device and would be lost.
//!
//! Encoding: one format byte ([`CHECKPOINT_FORMAT`]) then postcard of the
//! model version and the device. Postcard is not self-describing, so the
//! format byte must change whenever `Device`'s serialized fields do; the
//! golden test below fails when they change without it.

use serde::{Deserialize, Serialize};

use super::{Device, Engine, Tracker};

/// Version of the checkpoint encoding.
pub const CHECKPOINT_FORMAT: u8 = 4;

/// One device's entry in a checkpoint.
#[derive(Debug, Clone, PartialEq)]
pub struct StateRecord {
    /// The partition the device's readings come from.
    pub origin: i32,
    pub device: String,
    /// The encoded state; `None` is a tombstone: the engine dropped the
    /// device (eviction), so a restore must not bring old state back.
    pub state: Option<Vec<u8>>,
}

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum CheckpointError {
    #[error("{0} batches are queued; flush them before a checkpoint")]
    BatchesQueued(usize),
    #[error("checkpoints are not enabled on this engine")]
    NotEnabled,
}

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum RestoreError {
    #[error("checkpoint format {found} is not the supported {CHECKPOINT_FORMAT}")]
    Format { found: u8 },
    #[error("checkpoint is empty")]
    Empty,
    #[error("checkpoint does not decode: {0}")]
    Decode(String),
    #[error("checkpoint is for model version {found}, this engine runs {running}")]
    ModelVersion { found: String, running: String },
    #[error("checkpoint does not fit this model: {0}")]
    Shape(&'static str),
    #[error("{0} batches are queued; flush them before restoring")]
    BatchesQueued(usize),
}

#[derive(Serialize)]
struct Envelope<'a> {
    model_version: &'a str,
    device: &'a Device,
}

#[derive(Deserialize)]
struct OwnedEnvelope {
    model_version: String,
    device: Device,
}

fn encode(model_version: &str, device: &Device) -> Vec<u8> {
    let mut out = vec![CHECKPOINT_FORMAT];
    // Serializing plain structs into a Vec cannot fail.
    let body = postcard::to_allocvec(&Envelope {
        model_version,
        device,
    })
    .expect("device state serializes");
    out.extend_from_slice(&body);
    out
}

impl Engine {
    /// Starts tracking changed and dropped devices for [`Self::checkpoint`].
    /// Devices already tracked count as changed.
    pub fn enable_checkpoints(&mut self) {
        if self.checkpoints.is_some() {
            return;
        }
        let mut t = Tracker::default();
        for (i, d) in self.devices.iter_mut().enumerate() {
            d.dirty = true;
            t.dirty.push(i);
        }
        self.checkpoints = Some(t);
    }

    /// State of every device changed since the last checkpoint, after
    /// tombstones of the devices dropped since; clears the changed set.
    pub fn checkpoint(&mut self) -> Result<Vec<StateRecord>, CheckpointError> {
        self.checkpoint_where(|_| true)
    }

    /// [`Self::checkpoint`] restricted to devices from `origins`, which are
    /// then dropped from the engine (their partitions moved elsewhere).
    /// Returns the records and the ids of the dropped devices.
    pub fn release_origins(
        &mut self,
        origins: &[i32],
    ) -> Result<(Vec<StateRecord>, Vec<String>), CheckpointError> {
        let records = self.checkpoint_where(|o| origins.contains(&o))?;
        let old = std::mem::take(&mut self.devices);
        let mut remap = vec![usize::MAX; old.len()];
        let mut released = Vec::new();
        for (i, d) in old.into_iter().enumerate() {
            if origins.contains(&d.origin) {
                released.push(d.id);
            } else {
                remap[i] = self.devices.len();
                self.devices.push(d);
            }
        }
        self.index.retain(|_, i| {
            *i = remap[*i];
            *i != usize::MAX
        });
        let keep = |i: &mut usize| {
            *i = remap[*i];
            *i != usize::MAX
        };
        self.touched.retain_mut(keep);
        if let Some(t) = &mut self.checkpoints {
            t.dirty.retain_mut(keep);
        }
        Ok((records, released))
    }

    fn checkpoint_where(
        &mut self,
        origin_matches: impl Fn(i32) -> bool,
    ) -> Result<Vec<StateRecord>, CheckpointError> {
        if !self.queue.is_empty() {
            return Err(CheckpointError::BatchesQueued(self.queue.len()));
        }
        let Some(t) = &mut self.checkpoints else {
            return Err(CheckpointError::NotEnabled);
        };
        let mut records = Vec::new();
        t.tombstones.retain(|(origin, id)| {
            if origin_matches(*origin) {
                records.push(StateRecord {
                    origin: *origin,
                    device: id.clone(),
                    state: None,
                });
                false
            } else {
                true
            }
        });
        let version = &self.cfg.model_version;
        t.dirty.retain(|&i| {
            let d = &mut self.devices[i];
            if !origin_matches(d.origin) {
                return true;
            }
            d.dirty = false;
            d.stored = true;
            records.push(StateRecord {
                origin: d.origin,
                device: d.id.clone(),
                state: Some(encode(version, d)),
            });
            false
        });
        Ok(records)
    }

    /// Puts a checkpointed device back, replacing any state the engine has
    /// for it. Everything that indexes memory is checked first: a corrupt
    /// or foreign checkpoint is an error, never a panic. Returns the id.
    pub fn restore(&mut self, bytes: &[u8]) -> Result<String, RestoreError> {
        if !self.queue.is_empty() {
            return Err(RestoreError::BatchesQueued(self.queue.len()));
        }
        let (&format, body) = bytes.split_first().ok_or(RestoreError::Empty)?;
        if format != CHECKPOINT_FORMAT {
            return Err(RestoreError::Format { found: format });
        }
        let env: OwnedEnvelope =
            postcard::from_bytes(body).map_err(|e| RestoreError::Decode(e.to_string()))?;
        if env.model_version != self.cfg.model_version {
            return Err(RestoreError::ModelVersion {
                found: env.model_version,
                running: self.cfg.model_version.clone(),
            });
        }
        let mut dev = env.device;
        self.check_shape(&dev)?;
        self.seq += 1;
        dev.last_seen = self.seq;
        let idx = self.index_of(&dev.id);
        let slot = &mut self.devices[idx];
        // The slot's list memberships stay with the slot.
        (dev.touched, dev.dirty, dev.round, dev.queued) =
            (slot.touched, slot.dirty, slot.round, slot.queued);
        dev.stored = true;
        if !dev.touched {
            dev.touched = true;
            self.touched.push(idx);
        }
        let id = dev.id.clone();
        *slot = dev;
        Ok(id)
    }

    fn check_shape(&self, d: &Device) -> Result<(), RestoreError> {
        let c = self.cfg.schema.len();
        let hc = self.cfg.horizon * c;
        if !d.window.is_consistent(self.cfg.window, c) {
            return Err(RestoreError::Shape("window size or channels differ"));
        }
        if d.floats.len() != self.cfg.float_len() {
            return Err(RestoreError::Shape("state or batch length differs"));
        }
        if d.pending_len >= hc || !d.pending_len.is_multiple_of(c) {
            return Err(RestoreError::Shape("partial batch length is invalid"));
        }
        if d.predicted_at > d.readings {
            return Err(RestoreError::Shape("forecast is newer than the readings"));
        }
        if (d.last_score.as_ref()).is_some_and(|s| s.shares.len() != self.cfg.monitored.len()) {
            return Err(RestoreError::Shape(
                "error shares do not match the channels",
            ));
        }
        if d.id.is_empty() {
            return Err(RestoreError::Shape("device id is empty"));
        }
        (self.cfg.strategy)
            .check_state(
                &d.threshold_state,
                self.cfg.monitored.len(),
                self.cfg.flatline.as_ref(),
            )
            .map_err(RestoreError::Shape)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::{Persistence, engine, r};
    use super::*;
    use crate::engine::{EngineEvent, Pushed};
    use crate::flatline::Flatline;
    use crate::threshold::ThresholdStrategy;
    use std::time::Duration;

    /// Feeds `readings` to `e`, flushing whenever a batch completes.
    fn feed(
        e: &mut Engine,
        f: &mut Persistence,
        readings: &[(&str, i64, f32)],
    ) -> Vec<EngineEvent> {
        let mut events = Vec::new();
        for (d, ts, v) in readings {
            if e.push_from(&r(d, *ts, *v, 0.0), 3).unwrap() == Pushed::BatchQueued {
                events.extend(e.flush(f).unwrap());
            }
        }
        events
    }

    fn stream(from: i64, to: i64) -> Vec<(&'static str, i64, f32)> {
        // Two devices; "b" steps up at ts 9 so an alert opens mid-stream.
        (from..to)
            .flat_map(|ts| {
                let b = if ts >= 9 { 5.0 } else { 0.0 };
                [("a", ts, 0.0), ("b", ts, b)]
            })
            .collect()
    }

    fn strategies() -> Vec<ThresholdStrategy> {
        vec![
            ThresholdStrategy::Fixed { threshold: 1.0 },
            ThresholdStrategy::Dynamic {
                config: crate::dynamic_threshold::DynamicThresholdConfig {
                    history: 8,
                    ..Default::default()
                },
                seed: vec![0.1, 0.2, 0.1],
                floor: 0.5,
                gaussian: None,
                residual: None,
            },
            // With a seasonal residual over a season of 4 ms, so that the
            // stream's readings (1 ms apart) meet their profile.
            ThresholdStrategy::Dynamic {
                config: crate::dynamic_threshold::DynamicThresholdConfig {
                    history: 8,
                    season: Duration::from_millis(4),
                    season_tolerance: Duration::from_millis(2),
                    residual_bucket: Duration::from_millis(1),
                    ..Default::default()
                },
                seed: vec![0.1, 0.2, 0.1],
                floor: 0.5,
                gaussian: None,
                residual: Some(Box::new(crate::threshold::ResidualThreshold {
                    seed: vec![0.0, 0.1],
                    floor: 0.5,
                })),
            },
        ]
    }

    fn engine_with(strategy: &ThresholdStrategy) -> Engine {
        let mut e = engine(8);
        e.cfg.strategy = strategy.clone();
        e
    }

    /// A run checkpointed and restored into a fresh engine mid-stream
    /// produces exactly the events of one uninterrupted run, for each
    /// strategy (the dynamic one carries per-device threshold state).
    #[test]
    fn restored_engine_continues_exactly() {
        for strategy in strategies() {
            let name = strategy.kind();
            let mut f = Persistence { calls: vec![] };
            let mut whole = engine_with(&strategy);
            let want = feed(&mut whole, &mut f, &stream(1, 20));

            let mut first = engine_with(&strategy);
            first.enable_checkpoints();
            let mut got = feed(&mut first, &mut f, &stream(1, 12));
            let records = first.checkpoint().unwrap();
            assert_eq!(records.len(), 2, "{name}");
            assert!(records.iter().all(|r| r.origin == 3 && r.state.is_some()));
            // Nothing changed since: the next checkpoint is empty.
            assert_eq!(first.checkpoint().unwrap(), vec![], "{name}");

            let mut second = engine_with(&strategy);
            for rec in &records {
                second.restore(rec.state.as_ref().unwrap()).unwrap();
            }
            got.extend(feed(&mut second, &mut f, &stream(12, 20)));
            assert_eq!(got, want, "{name}");
            assert!(
                want.iter().any(|e| matches!(e, EngineEvent::Opened(_))),
                "{name}: the case must include an alert"
            );
            assert_eq!(second.device("b"), whole.device("b"), "{name}");
        }
    }

    /// Checkpoints do not keep an open alert's grid cells: an alert
    /// opened before a checkpoint and resolved after the restore names
    /// the same cells as in one uninterrupted run.
    #[test]
    fn restored_alerts_resolve_with_their_cells() {
        use crate::alert::GridCell;
        let grid = crate::grid::GridLayout::row_major(2, 1, &["a".into(), "b".into()]).unwrap();
        let with_grid = || {
            let mut e = engine(8);
            e.cfg.grid = Some(grid.clone());
            e
        };
        let mut f = Persistence { calls: vec![] };
        let want = feed(&mut with_grid(), &mut f, &stream(1, 20));
        let mut first = with_grid();
        first.enable_checkpoints();
        let mut got = feed(&mut first, &mut f, &stream(1, 12));
        let mut second = with_grid();
        for rec in first.checkpoint().unwrap() {
            second.restore(rec.state.as_ref().unwrap()).unwrap();
        }
        let after = feed(&mut second, &mut f, &stream(12, 20));
        let resolved: Vec<_> = after
            .iter()
            .filter_map(|e| match e {
                EngineEvent::Resolved(a) => Some(a.cells.clone()),
                _ => None,
            })
            .collect();
        let cell = GridCell {
            row: 0,
            col: 0,
            channel: "a".into(),
            share: 1.0,
        };
        assert_eq!(resolved, vec![vec![cell]]);
        got.extend(after);
        assert_eq!(got, want);
    }

    #[test]
    fn threshold_state_must_fit_the_strategy() {
        let [fixed, dynamic, residual] = <[ThresholdStrategy; 3]>::try_from(strategies()).unwrap();
        let mut f = Persistence { calls: vec![] };
        let mut e = engine_with(&dynamic);
        e.enable_checkpoints();
        feed(&mut e, &mut f, &stream(1, 12));
        let records = e.checkpoint().unwrap();
        let b = records.iter().find(|r| r.device == "b").unwrap();
        let b = b.state.as_ref().unwrap();
        assert_eq!(
            engine_with(&fixed).restore(b),
            Err(RestoreError::Shape(
                "dynamic threshold state for another strategy"
            ))
        );
        assert_eq!(engine_with(&dynamic).restore(b), Ok("b".to_string()));
        // A device with a seasonal residual restores only where one runs.
        let mut e = engine_with(&residual);
        e.enable_checkpoints();
        feed(&mut e, &mut f, &stream(1, 12));
        let records = e.checkpoint().unwrap();
        let b = records.iter().find(|r| r.device == "b").unwrap();
        let b = b.state.as_ref().unwrap();
        assert_eq!(
            engine_with(&dynamic).restore(b),
            Err(RestoreError::Shape(
                "seasonal residual state does not fit the strategy"
            ))
        );
        assert_eq!(engine_with(&residual).restore(b), Ok("b".to_string()));
    }

    /// A device's frozen-channel runs go through a checkpoint: restored,
    /// they carry on where they were (channel `a` held 1.0 through the
    /// two scored batches: a run of 4; `b` changed every reading), and the
    /// alert the frozen channel opened stays open; an engine without the
    /// rule refuses them, so the device starts over.
    #[test]
    fn frozen_channel_runs_survive_a_checkpoint() {
        let with_rule = || {
            let mut cfg = engine(8).config().clone();
            cfg.flatline = Some(Flatline { limits: vec![3, 3] });
            Engine::new(cfg)
        };
        let mut f = Persistence { calls: vec![] };
        let mut e = with_rule();
        e.enable_checkpoints();
        let mut opened = 0;
        for ts in 1..=6 {
            e.push(&r("a", ts, 1.0, ts as f32)).unwrap();
            let events = e.flush(&mut f).unwrap();
            opened += (events.iter())
                .filter(|ev| matches!(ev, EngineEvent::Opened(_)))
                .count();
        }
        assert_eq!(opened, 1);
        let bytes = e.checkpoint().unwrap().remove(0).state.unwrap();
        let mut back = with_rule();
        assert_eq!(back.restore(&bytes), Ok("a".to_string()));
        let runs = back.devices[0].threshold_state.flatline.as_deref();
        assert_eq!(runs.map(|r| r.run.clone()), Some(vec![4, 1]));
        assert!(back.device("a").unwrap().open_alert.is_some());
        assert!(matches!(
            engine(8).restore(&bytes),
            Err(RestoreError::Shape(
                "flatline runs do not fit the model's rule"
            ))
        ));
    }

    #[test]
    fn release_drops_only_those_origins() {
        let mut f = Persistence { calls: vec![] };
        let mut e = engine(8);
        e.enable_checkpoints();
        for ts in 1..4 {
            for (d, origin) in [("a", 0), ("b", 1), ("c", 0)] {
                if e.push_from(&r(d, ts, 1.0, 1.0), origin).unwrap() == Pushed::BatchQueued {
                    e.flush(&mut f).unwrap();
                }
            }
        }
        let (records, released) = e.release_origins(&[0]).unwrap();
        assert_eq!(released, vec!["a".to_string(), "c".to_string()]);
        let mut ids: Vec<_> = records.iter().map(|r| r.device.as_str()).collect();
        ids.sort();
        assert_eq!(ids, vec!["a", "c"]);
        assert_eq!(e.device_count(), 1);
        assert!(e.device("a").is_none());
        assert_eq!(e.device("b").unwrap().readings, 3);
        // "b" is still due for the next checkpoint, with its index remapped.
        let rest = e.checkpoint().unwrap();
        assert_eq!(rest.len(), 1);
        assert_eq!(rest[0].device, "b");
        assert_eq!(e.push(&r("b", 4, 1.0, 1.0)), Ok(Pushed::BatchQueued));
    }

    /// (device, is a tombstone) of each record, in order.
    fn kinds(records: &[StateRecord]) -> Vec<(&str, bool)> {
        records
            .iter()
            .map(|r| (r.device.as_str(), r.state.is_none()))
            .collect()
    }

    #[test]
    fn evicted_devices_leave_tombstones() {
        let mut e = engine(8).with_max_devices(1);
        e.enable_checkpoints();
        e.push_from(&r("a", 1, 0.0, 0.0), 2).unwrap();
        assert_eq!(kinds(&e.checkpoint().unwrap()), [("a", false)]);
        e.push_from(&r("b", 1, 0.0, 0.0), 2).unwrap();
        assert_eq!(kinds(&e.checkpoint().unwrap()), [("a", true), ("b", false)]);
    }

    /// A device seen and evicted between two checkpoints never reached the
    /// state topic: no tombstone for it, so a flood of one-off ids costs
    /// no checkpoint records (it cost ~800 B each in the 1M-id flood).
    #[test]
    fn devices_never_checkpointed_leave_no_tombstone() {
        let mut e = engine(8).with_max_devices(1);
        e.enable_checkpoints();
        e.push_from(&r("a", 1, 0.0, 0.0), 2).unwrap();
        e.push_from(&r("b", 1, 0.0, 0.0), 2).unwrap();
        assert_eq!(kinds(&e.checkpoint().unwrap()), [("b", false)]);
        for id in ["c", "d", "e"] {
            e.push_from(&r(id, 2, 0.0, 0.0), 2).unwrap();
        }
        // "b" was checkpointed: its tombstone; "c" and "d" never were.
        let records = e.checkpoint().unwrap();
        assert_eq!(kinds(&records), [("b", true), ("e", false)]);

        // A restored device is on the state topic too.
        let state = records[1].state.clone().unwrap();
        let mut restored = engine(8).with_max_devices(1);
        restored.enable_checkpoints();
        restored.restore(&state).unwrap();
        restored.checkpoint().unwrap();
        restored.push_from(&r("f", 3, 0.0, 0.0), 2).unwrap();
        assert_eq!(
            kinds(&restored.checkpoint().unwrap()),
            [("e", true), ("f", false)]
        );
    }

    #[test]
    fn bad_checkpoints_are_errors() {
        let mut e = engine(8);
        e.enable_checkpoints();
        e.push(&r("a", 1, 1.0, 2.0)).unwrap();
        let good = e.checkpoint().unwrap().remove(0).state.unwrap();
        let mut other = engine(8);
        assert_eq!(other.restore(&[]), Err(RestoreError::Empty));
        let mut wrong_format = good.clone();
        wrong_format[0] = 99;
        assert_eq!(
            other.restore(&wrong_format),
            Err(RestoreError::Format { found: 99 })
        );
        assert!(matches!(
            other.restore(&good[..good.len() / 2]),
            Err(RestoreError::Decode(_))
        ));
        // Every truncation and every single-byte corruption is an error or
        // a valid state, never a panic.
        for cut in 0..good.len() {
            let _ = other.restore(&good[..cut]);
        }
        for at in 1..good.len() {
            let mut bad = good.clone();
            bad[at] ^= 0xA5;
            let _ = engine(8).restore(&bad);
        }
        let mut v2 = engine(8);
        v2.cfg.model_version = "v2".into();
        assert!(matches!(
            v2.restore(&good),
            Err(RestoreError::ModelVersion { .. })
        ));
        let mut wider = engine(8);
        wider.cfg.window = 5;
        assert!(matches!(wider.restore(&good), Err(RestoreError::Shape(_))));
        assert_eq!(other.restore(&good), Ok("a".to_string()));
        assert_eq!(other.device("a").unwrap().readings, 1);
    }

    /// Pins the encoding: if this fails, `Device`'s serialized fields
    /// changed; bump [`CHECKPOINT_FORMAT`] and update the expected bytes.
    #[test]
    fn format_is_pinned() {
        let mut e = engine(8);
        e.enable_checkpoints();
        e.push_from(&r("a", 7, 1.0, 2.0), 1).unwrap();
        let bytes = e.checkpoint().unwrap().remove(0).state.unwrap();
        assert_eq!(
            hex::encode(&bytes),
            "040276310161020204080000803f0000004000000000000000000000000000000000000000000000000001010900000000000000000000000000000000000000000000803f000000400000000000000000020e01010e0000000000000000000000"
        );
    }
}
