//! The device board: the HTTP API's view of per-device state.
//!
//! The pipeline owns the [`forewarn_core::Engine`] and publishes snapshots
//! here after each flush; handlers read them. The lock is a std `RwLock`,
//! held only for a map operation and never across an `.await`.
//!
//! Snapshots live in a `BTreeMap` rather than a `HashMap`: listing is
//! sorted by id with an `after` cursor, which a B-tree answers with a range
//! scan instead of sorting every device on every request.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::ops::Bound;
use std::sync::{Mutex, PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard};

use forewarn_core::engine::DeviceView;
use forewarn_core::{ChannelShare, GridLayout};
use serde::{Deserialize, Serialize};

/// One device as the API shows it.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct DeviceSnapshot {
    pub device: String,
    pub model: String,
    pub model_version: String,
    /// Readings applied since this instance started tracking the device.
    pub readings: u64,
    pub window_fill: usize,
    pub window_capacity: usize,
    /// Epoch ms of the device's newest reading.
    pub last_ts: Option<i64>,
    /// Score of the device's last scored batch (what the model's detector
    /// strategy thresholds: the MSE for `fixed`).
    pub last_score: Option<f64>,
    /// The threshold that score was compared with (per batch for the
    /// `dynamic` strategy), else the model's nominal threshold.
    pub threshold: f64,
    pub warmed_up: bool,
    /// Id of the device's open alert, if any.
    pub open_alert: Option<String>,
    /// Channel error shares of the last scored batch, largest first.
    pub last_shares: Vec<ChannelShare>,
}

impl DeviceSnapshot {
    pub fn from_view(view: DeviceView, model: &str, version: &str, threshold: f64) -> Self {
        Self {
            device: view.device,
            model: model.to_owned(),
            model_version: version.to_owned(),
            readings: view.readings,
            window_fill: view.window_fill,
            window_capacity: view.window_capacity,
            last_ts: view.last_ts,
            last_score: view.last_score,
            threshold: view.last_threshold.unwrap_or(threshold),
            warmed_up: view.warmed_up,
            open_alert: view.open_alert,
            last_shares: view.last_shares,
        }
    }
}

/// The loaded model, as `/api/v1/models` shows it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ModelInfo {
    pub name: String,
    pub version: String,
    /// The network: `forecaster`, `per_variable` or `autoencoder`
    /// (`model.json`'s `kind`).
    #[serde(default = "forecaster")]
    pub kind: String,
    /// Channel names in the order the model expects them.
    pub channels: Vec<String>,
    /// The context channels among them: inputs only, never scored, named
    /// in an alert or alarmed on.
    #[serde(default)]
    pub context: Vec<String>,
    /// Networks whose forecasts are averaged (`model.json`'s `members`;
    /// 1: a single network).
    #[serde(default = "one_member")]
    pub members: usize,
    /// Readings per forecast batch.
    pub horizon: usize,
    /// Readings kept per device.
    pub window: usize,
    /// The detector strategy's nominal threshold (`dynamic`: its floor).
    pub threshold: f64,
    /// The detector strategy the engine runs: `fixed`, `gaussian` or
    /// `dynamic` (see docs/EVALUATION.md).
    #[serde(default = "fixed")]
    pub strategy: String,
    /// Where inference runs: `"cpu"` or `"cuda:0"`.
    pub device: String,
    /// The version of the fault classifier that diagnoses open alerts
    /// (`model.diagnosis`); absent without one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub diagnosis: Option<String>,
    /// The plate the monitored channels are laid out on (kind `convlstm`);
    /// absent for models without a grid.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub grid: Option<ModelGrid>,
}

fn one_member() -> usize {
    1
}

/// A model's grid: `rows x cols` cells and the channel on each.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ModelGrid {
    pub rows: usize,
    pub cols: usize,
    /// Row by row, the channel on each cell; `null` a cell without one.
    pub layout: Vec<Vec<Option<String>>>,
}

impl From<&GridLayout> for ModelGrid {
    fn from(g: &GridLayout) -> Self {
        Self {
            rows: g.rows(),
            cols: g.cols(),
            layout: g.layout(),
        }
    }
}

fn fixed() -> String {
    "fixed".into()
}

fn forecaster() -> String {
    "forecaster".into()
}

/// Score points kept per device by [`DeviceBoard::scores`].
pub const SCORE_HISTORY: usize = 128;

/// One scored batch as the board saw it.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct ScorePoint {
    /// Epoch ms of the device's newest reading when the score was seen.
    pub ts: i64,
    pub score: f64,
    pub threshold: f64,
}

/// Per-device snapshots shared between the pipeline (writer) and the API.
///
/// Besides the latest snapshot, the board keeps a ring of the last
/// [`SCORE_HISTORY`] scores of each device (about 3 KiB per device), for
/// the console's score-versus-threshold chart. Points are sampled when a
/// snapshot arrives with a new score: the pipeline publishes once per
/// chunk, so under backlog several batches of one chunk show as one point.
#[derive(Debug, Default)]
pub struct DeviceBoard {
    devices: RwLock<BTreeMap<String, DeviceSnapshot>>,
    history: Mutex<HashMap<String, VecDeque<ScorePoint>>>,
}

impl DeviceBoard {
    pub fn new() -> Self {
        Self::default()
    }

    fn read(&self) -> RwLockReadGuard<'_, BTreeMap<String, DeviceSnapshot>> {
        // A panic while holding the lock cannot leave a half-written
        // snapshot (inserts are single map operations), so keep serving.
        self.devices.read().unwrap_or_else(PoisonError::into_inner)
    }

    fn write(&self) -> RwLockWriteGuard<'_, BTreeMap<String, DeviceSnapshot>> {
        self.devices.write().unwrap_or_else(PoisonError::into_inner)
    }

    /// Inserts or replaces snapshots, keyed by `device`.
    pub fn update(&self, snaps: impl IntoIterator<Item = DeviceSnapshot>) {
        // Collect first so the write lock is not held while the caller's
        // iterator builds snapshots.
        let snaps: Vec<DeviceSnapshot> = snaps.into_iter().collect();
        if snaps.is_empty() {
            return;
        }
        {
            let mut hist = self.history();
            for s in &snaps {
                let (Some(score), Some(ts)) = (s.last_score, s.last_ts) else {
                    continue;
                };
                let ring = hist.entry(s.device.clone()).or_default();
                let point = ScorePoint {
                    ts,
                    score,
                    threshold: s.threshold,
                };
                let last = ring.back().copied();
                if last.is_some_and(|l| l.score == score && l.threshold == s.threshold) {
                    continue;
                }
                if ring.len() == SCORE_HISTORY {
                    ring.pop_front();
                }
                ring.push_back(point);
            }
        }
        let mut map = self.write();
        for s in snaps {
            map.insert(s.device.clone(), s);
        }
    }

    fn history(&self) -> std::sync::MutexGuard<'_, HashMap<String, VecDeque<ScorePoint>>> {
        self.history.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The device's recent scores, oldest first (at most [`SCORE_HISTORY`]).
    pub fn scores(&self, id: &str) -> Option<Vec<ScorePoint>> {
        self.history().get(id).map(|r| r.iter().copied().collect())
    }

    /// Drops devices (e.g. those of a revoked partition).
    pub fn remove<I, S>(&self, ids: I)
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        let mut map = self.write();
        let mut hist = self.history();
        for id in ids {
            map.remove(id.as_ref());
            hist.remove(id.as_ref());
        }
    }

    /// Keeps only the devices for which `keep` returns true.
    pub fn retain(&self, mut keep: impl FnMut(&DeviceSnapshot) -> bool) {
        let mut map = self.write();
        map.retain(|_, s| keep(s));
        self.history().retain(|id, _| map.contains_key(id));
    }

    pub fn clear(&self) {
        self.write().clear();
        self.history().clear();
    }

    pub fn get(&self, id: &str) -> Option<DeviceSnapshot> {
        self.read().get(id).cloned()
    }

    pub fn len(&self) -> usize {
        self.read().len()
    }

    pub fn is_empty(&self) -> bool {
        self.read().is_empty()
    }

    /// Up to `limit` snapshots with ids strictly after `after`, sorted by id.
    pub fn list(&self, after: Option<&str>, limit: usize) -> Vec<DeviceSnapshot> {
        let map = self.read();
        let lower = match after {
            Some(a) => Bound::Excluded(a),
            None => Bound::Unbounded,
        };
        map.range::<str, _>((lower, Bound::Unbounded))
            .take(limit)
            .map(|(_, s)| s.clone())
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn view(id: &str, readings: u64) -> DeviceView {
        DeviceView {
            device: id.into(),
            readings,
            window_fill: 3,
            window_capacity: 8,
            last_ts: Some(1_000),
            last_score: Some(0.5),
            last_threshold: None,
            last_shares: vec![ChannelShare {
                channel: "flow".into(),
                share: 1.0,
            }],
            open_alert: None,
            warmed_up: true,
        }
    }

    fn snap(id: &str, readings: u64) -> DeviceSnapshot {
        DeviceSnapshot::from_view(view(id, readings), "lstm", "v1", 2.0)
    }

    #[test]
    fn from_view_copies_every_field() {
        let s = snap("pump-1", 5);
        assert_eq!(
            serde_json::to_value(&s).unwrap(),
            serde_json::json!({
                "device": "pump-1", "model": "lstm", "model_version": "v1",
                "readings": 5, "window_fill": 3, "window_capacity": 8,
                "last_ts": 1000, "last_score": 0.5, "threshold": 2.0,
                "warmed_up": true, "open_alert": null,
                "last_shares": [{"channel": "flow", "share": 1.0}],
            })
        );
    }

    #[test]
    fn update_get_list_remove() {
        let b = DeviceBoard::new();
        assert!(b.is_empty());
        b.update(["c", "a", "b", "d"].map(|id| snap(id, 1)));
        b.update([snap("a", 9)]);
        assert_eq!(b.len(), 4);
        assert_eq!(b.get("a").unwrap().readings, 9);
        assert_eq!(b.get("zz"), None);
        let ids = |v: Vec<DeviceSnapshot>| v.into_iter().map(|s| s.device).collect::<Vec<_>>();
        assert_eq!(ids(b.list(None, 10)), ["a", "b", "c", "d"]);
        assert_eq!(ids(b.list(None, 2)), ["a", "b"]);
        assert_eq!(ids(b.list(Some("b"), 2)), ["c", "d"]);
        assert_eq!(ids(b.list(Some("bb"), 10)), ["c", "d"]);
        assert_eq!(ids(b.list(Some("d"), 10)), Vec::<String>::new());
        b.remove(["b", "nope"]);
        b.retain(|s| s.device != "c");
        assert_eq!(ids(b.list(None, 10)), ["a", "d"]);
        b.clear();
        assert!(b.is_empty());
    }

    #[test]
    fn score_history_is_a_bounded_ring_of_new_scores() {
        let b = DeviceBoard::new();
        let mut s = snap("pump-1", 1);
        s.last_score = None;
        b.update([s.clone()]);
        assert_eq!(b.scores("pump-1"), None);
        for i in 0..(SCORE_HISTORY as i64 + 10) {
            s.last_ts = Some(i);
            s.last_score = Some(i as f64);
            b.update([s.clone()]);
            // The same score again (new readings, no new batch): no point.
            s.last_ts = Some(i + 1);
            b.update([s.clone()]);
        }
        let pts = b.scores("pump-1").unwrap();
        assert_eq!(pts.len(), SCORE_HISTORY);
        assert_eq!(pts[0].ts, 10);
        assert_eq!(pts.last().unwrap().score, (SCORE_HISTORY + 9) as f64);
        assert_eq!(pts[0].threshold, 2.0);
        b.remove(["pump-1"]);
        assert_eq!(b.scores("pump-1"), None);
    }
}
