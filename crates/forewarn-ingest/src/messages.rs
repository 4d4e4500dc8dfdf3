//! The messages passed between the pipeline's stages, in one place: every
//! stage imports them, none defines them, so the stages depend on this
//! module and not on each other.
//!
//! ```text
//! consume ──Input (Chunk | Assigned | Revoked)──► engine stage ──Processed──► persist
//!    ▲   rebalance callbacks (context) send          │  (carries a Checkpoint)
//!    └───────────── spare Chunks, for reuse ─────────┘
//! serve ──ModelSwap──► engine stage
//! ```

use std::sync::mpsc;
use std::time::Instant;

use forewarn_core::Engine;
use forewarn_core::engine::StateRecord;
use forewarn_core::reading::{Readings, RejectReason};
use forewarn_store::AlertChange;

/// A message that will go to the dead-letter topic.
#[derive(Debug)]
pub(crate) struct Rejected {
    pub reason: RejectReason,
    pub key: Option<Vec<u8>>,
    pub payload: Vec<u8>,
    pub partition: i32,
    pub offset: i64,
}

/// What the consume thread hands the engine stage, in order.
pub(crate) enum Input {
    Chunk(Chunk),
    /// Partitions were assigned: their last checkpoint, ahead of any of
    /// their messages (checkpoints on).
    Assigned {
        states: Vec<PartitionState>,
        /// Time spent reading them.
        seconds: f64,
    },
    /// Partitions are being revoked: checkpoint and drop their devices,
    /// and signal `done` once that checkpoint and its offsets are stored.
    Revoked {
        partitions: Vec<i32>,
        done: mpsc::Sender<()>,
        /// The rebalance goes on without the handover after this; a
        /// checkpoint written later could interleave with the next owner's.
        deadline: Instant,
    },
}

/// Messages polled together; `offsets` holds, per partition, the offset
/// after the last message of the chunk (what to store once it is durable).
///
/// The decoded readings are stored flat (a handful of buffers, not two
/// allocations per reading), and the engine stage sends a processed chunk
/// back ([`Spares`]) so that its buffers are reused: in steady state a
/// chunk allocates nothing per reading, on either thread.
#[derive(Default)]
pub(crate) struct Chunk {
    pub readings: Readings,
    /// Each reading's partition and offset, in the order of `readings`.
    pub origins: Vec<(i32, i64)>,
    pub rejects: Vec<Rejected>,
    pub offsets: Vec<(i32, i64)>,
    pub consumed: usize,
}

impl Chunk {
    /// Counts the message at `offset` of `partition` into the chunk's offsets.
    pub fn note_offset(&mut self, partition: i32, offset: i64) {
        advance_offset(&mut self.offsets, partition, offset + 1);
    }

    /// Empties the chunk, keeping its buffers.
    pub fn clear(&mut self) {
        self.readings.clear();
        self.origins.clear();
        self.rejects.clear();
        self.offsets.clear();
        self.consumed = 0;
    }
}

/// Processed chunks on their way back from the engine stage to the consume
/// thread, to be refilled. Bounded: past [`SPARE_CHUNKS`] waiting, the
/// engine stage drops a chunk instead (a burst's buffers are not kept).
pub(crate) fn spares() -> (SpareSender, Spares) {
    mpsc::sync_channel(SPARE_CHUNKS)
}

/// Empty chunks kept for reuse at most.
pub(crate) const SPARE_CHUNKS: usize = 4;

pub(crate) type SpareSender = mpsc::SyncSender<Chunk>;
pub(crate) type Spares = mpsc::Receiver<Chunk>;

/// An empty chunk: a returned one when there is one.
pub(crate) fn empty_chunk(spares: &Spares) -> Chunk {
    match spares.try_recv() {
        Ok(mut chunk) => {
            chunk.clear();
            chunk
        }
        Err(_) => Chunk::default(),
    }
}

/// Moves `partition`'s entry in `offsets` (partition, next offset) forward
/// to `next`, adding it when absent; never moves it back.
pub(crate) fn advance_offset(offsets: &mut Vec<(i32, i64)>, partition: i32, next: i64) {
    match offsets.iter_mut().find(|(p, _)| *p == partition) {
        Some((_, at)) => *at = (*at).max(next),
        None => offsets.push((partition, next)),
    }
}

/// State read back from the state topic for one assigned partition.
#[derive(Debug, Default)]
pub(crate) struct PartitionState {
    pub partition: i32,
    /// The last complete checkpoint's position; `None` when there is none.
    pub resume_at: Option<i64>,
    /// Encoded device states of that checkpoint (latest per device).
    pub states: Vec<Vec<u8>>,
}

/// What a checkpoint writes: device records, then per-partition markers.
#[derive(Debug, Default)]
pub(crate) struct Checkpoint {
    pub records: Vec<StateRecord>,
    /// Input partition and the offset to resume it from.
    pub markers: Vec<(i32, i64)>,
    /// Made because partitions were revoked: the moment the rebalance
    /// stops waiting for it. Past it, the checkpoint is not written.
    pub handover: Option<Instant>,
}

/// The outcome of one or more chunks, handed from the engine stage to the
/// persist stage.
#[derive(Debug, Default)]
pub(crate) struct Processed {
    pub changes: Vec<AlertChange>,
    pub rejects: Vec<Rejected>,
    pub offsets: Vec<(i32, i64)>,
    pub accepted: usize,
    pub duplicates: usize,
    pub batches_scored: usize,
    pub max_ts: Option<i64>,
    /// Device state to make durable; with checkpoints on, only a
    /// checkpoint's markers are stored as offsets, never `offsets`.
    pub checkpoint: Option<Checkpoint>,
    /// Signalled once everything above is durable (a handover waits on it).
    pub done: Option<mpsc::Sender<()>>,
}

impl Processed {
    /// Appends a later outcome: its offsets are at or past ours.
    pub fn merge(&mut self, later: Processed) {
        self.changes.extend(later.changes);
        self.rejects.extend(later.rejects);
        for (p, next) in later.offsets {
            advance_offset(&mut self.offsets, p, next);
        }
        self.accepted += later.accepted;
        self.duplicates += later.duplicates;
        self.batches_scored += later.batches_scored;
        self.max_ts = self.max_ts.max(later.max_ts);
        if later.checkpoint.is_some() {
            self.checkpoint = later.checkpoint;
        }
        if later.done.is_some() {
            self.done = later.done;
        }
    }
}

/// A validated model to swap in while the pipeline runs (hot reload): a
/// fresh engine for it and its forecaster. The engine thread takes it
/// between chunks; device state starts over (windows re-warm), and the
/// model's channel schema must equal the running one (the consume stage
/// decodes with it). The old engine's open alerts are resolved at the swap
/// (stamped with their device's last reading) and go through the persist
/// stage like any change; alerts after the swap carry the new model version.
pub struct ModelSwap<F> {
    pub engine: Engine,
    pub forecaster: F,
    /// The fault classifier that diagnoses the new model's alerts, checked
    /// against it ([`forewarn_core::diagnosis::check_fits`]); `None`: none.
    pub classifier: Option<Box<dyn forewarn_core::FaultClassifier + Send>>,
}

impl<F> ModelSwap<F> {
    /// (model, version, threshold) of the new engine.
    pub(crate) fn describe(&self) -> (String, String, f64) {
        let c = self.engine.config();
        (c.model.clone(), c.model_version.clone(), c.threshold())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offsets_only_move_forward() {
        // (entries before, partition, next) -> entries after
        type Case = (&'static [(i32, i64)], i32, i64, &'static [(i32, i64)]);
        let cases: &[Case] = &[
            (&[], 0, 5, &[(0, 5)]),
            (&[(0, 5)], 0, 7, &[(0, 7)]),
            (&[(0, 5)], 0, 3, &[(0, 5)]),
            (&[(0, 5)], 1, 2, &[(0, 5), (1, 2)]),
        ];
        for (before, partition, next, after) in cases {
            let mut offsets = before.to_vec();
            advance_offset(&mut offsets, *partition, *next);
            assert_eq!(offsets, *after, "{before:?} + ({partition}, {next})");
        }
    }

    #[test]
    fn a_merge_adds_counts_and_keeps_the_later_checkpoint() {
        let mut held = Processed {
            offsets: vec![(0, 10)],
            accepted: 3,
            max_ts: Some(7),
            checkpoint: Some(Checkpoint {
                markers: vec![(0, 5)],
                ..Checkpoint::default()
            }),
            ..Processed::default()
        };
        let (done, _finished) = mpsc::channel();
        held.merge(Processed {
            offsets: vec![(1, 4), (0, 12)],
            accepted: 2,
            duplicates: 1,
            batches_scored: 1,
            max_ts: Some(5),
            checkpoint: Some(Checkpoint {
                markers: vec![(0, 12)],
                ..Checkpoint::default()
            }),
            done: Some(done),
            ..Processed::default()
        });
        assert_eq!(held.offsets, [(0, 12), (1, 4)]);
        assert_eq!(
            (held.accepted, held.duplicates, held.batches_scored),
            (5, 1, 1)
        );
        assert_eq!(held.max_ts, Some(7));
        assert_eq!(held.checkpoint.unwrap().markers, [(0, 12)]);
        assert!(held.done.is_some());
    }

    #[test]
    fn returned_chunks_come_back_empty() {
        let (tx, spares) = spares();
        let mut chunk = empty_chunk(&spares);
        chunk.readings.push(forewarn_core::ReadingRef {
            device: "d",
            ts_ms: 1,
            values: &[1.0, 2.0],
        });
        chunk.origins.push((0, 5));
        chunk.note_offset(0, 5);
        chunk.consumed = 1;
        assert!(tx.try_send(chunk).is_ok(), "room for a spare");
        let chunk = empty_chunk(&spares);
        assert!(chunk.readings.is_empty() && chunk.origins.is_empty());
        assert!(chunk.offsets.is_empty() && chunk.consumed == 0);
        for _ in 0..SPARE_CHUNKS {
            assert!(tx.try_send(Chunk::default()).is_ok(), "room for a spare");
        }
        assert!(tx.try_send(Chunk::default()).is_err(), "bounded");
    }
}
