//! Device-state checkpoints on the state topic: writing them (persist
//! stage) and reading them back for newly assigned partitions (consume
//! thread, inside the rebalance callback).
//!
//! State-topic partition `p` holds the devices of input partition `p`:
//! - key = device id, value = the engine's encoded device state, or no
//!   value (a tombstone) for a device the engine dropped;
//! - key = [`MARKER_KEY`], value = a [`Marker`]: the checkpoint before it is
//!   complete and corresponds to input position `next_offset`.
//!
//! A checkpoint's device records are acknowledged before its markers are
//! written, so records after the last marker of a partition belong to a
//! checkpoint cut short (by a crash) and are ignored on restore: the
//! restored state and the resume position always match.

use std::borrow::Cow;
use std::collections::HashMap;
use std::time::{Duration, Instant};

use futures::future::join_all;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{Offset, TopicPartitionList};
use serde::{Deserialize, Serialize};

use crate::client::{self, SEND_QUEUE_TIMEOUT, first_error};
use crate::config::IngestConfig;
use crate::messages::{Checkpoint, PartitionState};

/// Key of partition markers. Device ids cannot contain control characters,
/// so it never collides with a device.
pub(crate) const MARKER_KEY: &[u8] = b"\x01checkpoint";

#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct Marker {
    /// The stream the checkpoint belongs to: a state topic shared by
    /// mistake with another group or input topic is never restored from.
    pub input_topic: String,
    pub group_id: String,
    pub next_offset: i64,
    /// Wall-clock time it was written (for operators reading the topic).
    pub written_at_ms: i64,
}

/// One message for the state topic: a device record (no payload: a
/// tombstone) or a partition marker.
#[derive(Debug, PartialEq)]
pub(crate) struct StateMessage<'a> {
    pub partition: i32,
    pub key: &'a [u8],
    pub payload: Option<Cow<'a, [u8]>>,
}

/// A checkpoint's device records, the first wave of its messages.
pub(crate) fn records(cp: &Checkpoint) -> Vec<StateMessage<'_>> {
    cp.records
        .iter()
        .map(|r| StateMessage {
            partition: r.origin,
            key: r.device.as_bytes(),
            payload: r.state.as_deref().map(Cow::Borrowed),
        })
        .collect()
}

/// A checkpoint's partition markers, the second wave: written only once
/// every record is acknowledged, so a marker completes only durable records.
pub(crate) fn markers<'a>(
    cfg: &IngestConfig,
    cp: &'a Checkpoint,
    now_ms: i64,
) -> Vec<StateMessage<'a>> {
    cp.markers
        .iter()
        .map(|&(partition, next_offset)| {
            let m = Marker {
                input_topic: cfg.input_topic.clone(),
                group_id: cfg.group_id.clone(),
                next_offset,
                written_at_ms: now_ms,
            };
            StateMessage {
                partition,
                key: MARKER_KEY,
                payload: Some(Cow::Owned(
                    serde_json::to_vec(&m).expect("markers serialise"),
                )),
            }
        })
        .collect()
}

/// Writes `cp`: its records, and once they are acknowledged its markers.
pub(crate) async fn write(
    cfg: &IngestConfig,
    producer: &FutureProducer,
    cp: &Checkpoint,
) -> Result<(), String> {
    send(cfg, producer, &records(cp)).await?;
    let now_ms = forewarn_telemetry::unix_now_ms();
    send(cfg, producer, &markers(cfg, cp, now_ms)).await
}

/// Sends every message and waits for all of them.
async fn send(
    cfg: &IngestConfig,
    producer: &FutureProducer,
    messages: &[StateMessage<'_>],
) -> Result<(), String> {
    let sends = messages.iter().map(|m| {
        let mut record = FutureRecord::<[u8], [u8]>::to(&cfg.state_topic)
            .partition(m.partition)
            .key(m.key);
        if let Some(payload) = &m.payload {
            record = record.payload(&payload[..]);
        }
        producer.send(record, SEND_QUEUE_TIMEOUT)
    });
    first_error(join_all(sends).await)
}

/// Folds one partition's records, in order, into its last complete
/// checkpoint of one stream (input topic and group).
pub(crate) struct Replay<'a> {
    input_topic: &'a str,
    group_id: &'a str,
    complete: HashMap<Vec<u8>, Vec<u8>>,
    pending: HashMap<Vec<u8>, Option<Vec<u8>>>,
    resume_at: Option<i64>,
    pub bad_markers: usize,
    pub foreign_markers: usize,
}

impl<'a> Replay<'a> {
    pub fn new(input_topic: &'a str, group_id: &'a str) -> Self {
        Self {
            input_topic,
            group_id,
            complete: HashMap::new(),
            pending: HashMap::new(),
            resume_at: None,
            bad_markers: 0,
            foreign_markers: 0,
        }
    }

    pub fn record(&mut self, key: Option<&[u8]>, value: Option<&[u8]>) {
        let Some(key) = key else { return };
        if key == MARKER_KEY {
            match value.and_then(|v| serde_json::from_slice::<Marker>(v).ok()) {
                Some(m) if m.input_topic != self.input_topic || m.group_id != self.group_id => {
                    // Another stream's checkpoint: its records are not ours.
                    self.pending.clear();
                    self.foreign_markers += 1;
                }
                Some(m) => {
                    for (k, v) in self.pending.drain() {
                        match v {
                            Some(v) => self.complete.insert(k, v),
                            None => self.complete.remove(&k),
                        };
                    }
                    self.resume_at = Some(m.next_offset);
                }
                None => self.bad_markers += 1,
            }
        } else {
            self.pending.insert(key.to_vec(), value.map(<[u8]>::to_vec));
        }
    }

    pub fn finish(self, partition: i32) -> PartitionState {
        PartitionState {
            partition,
            resume_at: self.resume_at,
            states: self.complete.into_values().collect(),
        }
    }
}

/// Reads the state-topic partitions of `partitions` to their end.
pub(crate) fn read(
    cfg: &IngestConfig,
    partitions: &[i32],
    timeout: Duration,
) -> Result<Vec<PartitionState>, String> {
    let deadline = Instant::now() + timeout;
    let reader: BaseConsumer = client::state_reader(cfg)
        .and_then(|c| c.create())
        .map_err(|e| e.to_string())?;
    let mut ends = HashMap::new();
    let mut tpl = TopicPartitionList::new();
    for &p in partitions {
        let left = deadline.saturating_duration_since(Instant::now());
        let (low, high) = reader
            .fetch_watermarks(&cfg.state_topic, p, left)
            .map_err(|e| format!("watermarks of {} [{p}]: {e}", cfg.state_topic))?;
        if high > low {
            ends.insert(p, high);
            tpl.add_partition_offset(&cfg.state_topic, p, Offset::Beginning)
                .map_err(|e| e.to_string())?;
        }
    }
    let mut replays: HashMap<i32, Replay> = partitions
        .iter()
        .map(|&p| (p, Replay::new(&cfg.input_topic, &cfg.group_id)))
        .collect();
    if !ends.is_empty() {
        reader.assign(&tpl).map_err(|e| e.to_string())?;
    }
    while !ends.is_empty() {
        if Instant::now() >= deadline {
            return Err(format!(
                "timed out after {timeout:?} reading {} partitions {:?}",
                cfg.state_topic,
                ends.keys().collect::<Vec<_>>()
            ));
        }
        match reader.poll(Duration::from_millis(100)) {
            None => {}
            Some(Err(e)) => tracing::warn!(error = %e, "state topic read error"),
            Some(Ok(msg)) => {
                let p = msg.partition();
                if let Some(r) = replays.get_mut(&p) {
                    r.record(msg.key(), msg.payload());
                }
                if ends.get(&p).is_some_and(|&end| msg.offset() + 1 >= end) {
                    ends.remove(&p);
                }
            }
        }
    }
    Ok(replays
        .into_iter()
        .map(|(p, r)| {
            if r.bad_markers > 0 {
                tracing::warn!(
                    partition = p,
                    count = r.bad_markers,
                    "ignored unreadable checkpoint markers"
                );
            }
            if r.foreign_markers > 0 {
                tracing::warn!(
                    partition = p,
                    count = r.foreign_markers,
                    topic = %cfg.state_topic,
                    "ignored checkpoints of another group or input topic on the state topic; give each group its own"
                );
            }
            r.finish(p)
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn marker(next: i64) -> Vec<u8> {
        marker_of("in", "g", next)
    }

    fn marker_of(topic: &str, group: &str, next: i64) -> Vec<u8> {
        serde_json::to_vec(&Marker {
            input_topic: topic.into(),
            group_id: group.into(),
            next_offset: next,
            written_at_ms: 0,
        })
        .unwrap()
    }

    /// What `write` sends, read back in topic order per partition, restores
    /// exactly the checkpoint: its records (tombstones remove) and its
    /// positions. The markers go last, after every record.
    #[test]
    fn a_written_checkpoint_replays_to_itself() {
        use forewarn_core::engine::StateRecord;
        let cfg = IngestConfig {
            input_topic: "in".into(),
            group_id: "g".into(),
            ..IngestConfig::default()
        };
        let record = |origin, device: &str, state: Option<&[u8]>| StateRecord {
            origin,
            device: device.into(),
            state: state.map(<[u8]>::to_vec),
        };
        let earlier = Checkpoint {
            records: vec![record(0, "a", Some(b"a1")), record(1, "b", Some(b"b1"))],
            markers: vec![(0, 10), (1, 20)],
            handover: None,
        };
        let later = Checkpoint {
            records: vec![record(0, "a", None), record(1, "c", Some(b"c1"))],
            markers: vec![(0, 15), (1, 25)],
            handover: None,
        };
        let mut topic: Vec<StateMessage<'_>> = Vec::new();
        for cp in [&earlier, &later] {
            let first = records(cp);
            assert_eq!(first.len(), cp.records.len());
            assert!(first.iter().all(|m| m.key != MARKER_KEY));
            topic.extend(first);
            let second = markers(&cfg, cp, 1_000);
            assert!(second.iter().all(|m| m.key == MARKER_KEY));
            topic.extend(second);
        }
        let restored = |p: i32| {
            let mut r = Replay::new("in", "g");
            for m in topic.iter().filter(|m| m.partition == p) {
                r.record(Some(m.key), m.payload.as_deref());
            }
            let mut got = r.finish(p);
            got.states.sort();
            (got.resume_at, got.states)
        };
        assert_eq!(restored(0), (Some(15), vec![]));
        assert_eq!(
            restored(1),
            (Some(25), vec![b"b1".to_vec(), b"c1".to_vec()])
        );
    }

    /// Input: records in topic order; expected: resume offset and the
    /// device states (sorted) restored from them.
    #[test]
    fn replay_keeps_the_last_complete_checkpoint() {
        type Rec = (&'static [u8], Option<Vec<u8>>);
        type Case = (&'static str, Vec<Rec>, Option<i64>, Vec<&'static [u8]>);
        let cases: Vec<Case> = vec![
            ("empty", vec![], None, vec![]),
            (
                "records without a marker are an unfinished checkpoint",
                vec![(b"a", Some(b"a1".to_vec()))],
                None,
                vec![],
            ),
            (
                "a marker completes the records before it",
                vec![(b"a", Some(b"a1".to_vec())), (MARKER_KEY, Some(marker(10)))],
                Some(10),
                vec![b"a1"],
            ),
            (
                "later versions replace earlier ones; an unfinished tail is ignored",
                vec![
                    (b"a", Some(b"a1".to_vec())),
                    (b"b", Some(b"b1".to_vec())),
                    (MARKER_KEY, Some(marker(10))),
                    (b"a", Some(b"a2".to_vec())),
                    (MARKER_KEY, Some(marker(20))),
                    (b"b", Some(b"b3".to_vec())),
                ],
                Some(20),
                vec![b"a2", b"b1"],
            ),
            (
                "a tombstone removes the device",
                vec![
                    (b"a", Some(b"a1".to_vec())),
                    (MARKER_KEY, Some(marker(10))),
                    (b"a", None),
                    (MARKER_KEY, Some(marker(11))),
                ],
                Some(11),
                vec![],
            ),
            (
                "another group's or topic's checkpoints are ignored",
                vec![
                    (b"a", Some(b"a1".to_vec())),
                    (MARKER_KEY, Some(marker(10))),
                    (b"a", Some(b"other".to_vec())),
                    (b"b", Some(b"other".to_vec())),
                    (MARKER_KEY, Some(marker_of("in", "other-group", 99))),
                    (b"c", Some(b"other".to_vec())),
                    (MARKER_KEY, Some(marker_of("other-topic", "g", 99))),
                ],
                Some(10),
                vec![b"a1"],
            ),
            (
                "an unreadable marker completes nothing",
                vec![
                    (b"a", Some(b"a1".to_vec())),
                    (MARKER_KEY, Some(b"{".to_vec())),
                ],
                None,
                vec![],
            ),
        ];
        for (name, records, resume, want) in cases {
            let mut r = Replay::new("in", "g");
            for (k, v) in &records {
                r.record(Some(k), v.as_deref());
            }
            let got = r.finish(0);
            let mut states = got.states.clone();
            states.sort();
            assert_eq!(got.resume_at, resume, "{name}");
            assert_eq!(states, want, "{name}");
        }
    }
}
