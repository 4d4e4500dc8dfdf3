//! The persist stage's decisions, without I/O: which steps make an outcome
//! durable and in which order, and which offsets may then be stored.

use std::time::Instant;

use crate::messages::{Checkpoint, Processed};

/// One step of making a [`Processed`] durable. A step starts only once the
/// one before it succeeded (failures are retried in place).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Step {
    /// Rejected messages delivered to the dead-letter topic.
    DeadLetters,
    /// Alert changes committed to the alert store.
    StoreAlerts,
    /// Alert changes delivered to the alerts topic.
    PublishAlerts,
    /// Alert changes logged, counted and broadcast on the bus: only once
    /// they are stored and published.
    Announce,
    /// The checkpoint written to the state topic, unless its handover
    /// deadline has passed ([`too_late`]).
    WriteCheckpoint,
    /// Input offsets stored: those [`offsets_to_store`] names.
    StoreOffsets,
    /// The handover waiting on this outcome told that it is durable.
    SignalDone,
}

/// The steps for `p`, in order: dead letters, alert store, alerts topic,
/// announcements, checkpoint, offsets, handover signal. Steps with nothing
/// to do are left out. With checkpoints on (`checkpoints`), offsets move
/// only with a checkpoint, so a restart never resumes past the state it
/// restores.
pub(crate) fn plan(p: &Processed, checkpoints: bool) -> Vec<Step> {
    let mut steps = Vec::new();
    if !p.rejects.is_empty() {
        steps.push(Step::DeadLetters);
    }
    if !p.changes.is_empty() {
        steps.extend([Step::StoreAlerts, Step::PublishAlerts, Step::Announce]);
    }
    if p.checkpoint.is_some() {
        steps.extend([Step::WriteCheckpoint, Step::StoreOffsets]);
    } else if !checkpoints && !p.offsets.is_empty() {
        steps.push(Step::StoreOffsets);
    }
    if p.done.is_some() {
        steps.push(Step::SignalDone);
    }
    steps
}

/// What [`Step::WriteCheckpoint`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Written {
    Yes,
    /// A handover past its deadline is not written: the rebalance went on
    /// without it, the next owner resumed from the previous checkpoint,
    /// and this one could interleave with its.
    TooLate,
}

/// Whether `cp` is a handover whose deadline has passed at `now`.
pub(crate) fn too_late(cp: &Checkpoint, now: Instant) -> bool {
    cp.handover.is_some_and(|deadline| now >= deadline)
}

/// The offsets to store for `p` once its earlier steps are durable: a
/// written checkpoint's markers; with checkpoints off, the outcome's own
/// offsets; otherwise none.
pub(crate) fn offsets_to_store(
    p: &Processed,
    checkpoints: bool,
    written: Option<Written>,
) -> &[(i32, i64)] {
    match (&p.checkpoint, written) {
        (Some(cp), Some(Written::Yes)) => &cp.markers,
        (Some(_), _) => &[],
        (None, _) if checkpoints => &[],
        (None, _) => &p.offsets,
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use forewarn_core::reading::RejectReason;
    use forewarn_store::AlertChange;

    use super::Step::*;
    use super::*;
    use crate::messages::Rejected;

    /// The parts an outcome may have.
    #[derive(Clone, Copy, Default)]
    struct Shape {
        rejects: bool,
        changes: bool,
        /// A diagnosis change of an open alert.
        diagnosed: bool,
        offsets: bool,
        checkpoint: bool,
        done: bool,
    }

    fn outcome(s: Shape) -> Processed {
        let mut p = Processed::default();
        if s.rejects {
            p.rejects.push(Rejected {
                reason: RejectReason::BadDeviceId,
                key: None,
                payload: b"{".to_vec(),
                partition: 0,
                offset: 3,
            });
        }
        let alert = crate::test_alerts::open_alert("a", 10);
        if s.changes {
            p.changes.push(AlertChange::Opened(alert.clone()));
        }
        if s.diagnosed {
            p.changes.push(AlertChange::Diagnosed(alert));
        }
        if s.offsets {
            p.offsets.push((0, 4));
        }
        if s.checkpoint {
            p.checkpoint = Some(Checkpoint {
                markers: vec![(0, 2)],
                ..Checkpoint::default()
            });
        }
        if s.done {
            p.done = Some(std::sync::mpsc::channel().0);
        }
        p
    }

    #[test]
    fn durable_effects_go_first_and_offsets_last() {
        let all = Shape {
            rejects: true,
            changes: true,
            diagnosed: true,
            offsets: true,
            checkpoint: false,
            done: false,
        };
        // (case, outcome, checkpoints on, steps)
        let cases: Vec<(&str, Shape, bool, Vec<Step>)> = vec![
            ("nothing to do", Shape::default(), false, vec![]),
            (
                "offsets alone, checkpoints off",
                Shape {
                    offsets: true,
                    ..Shape::default()
                },
                false,
                vec![StoreOffsets],
            ),
            (
                "dead letters, alerts, then offsets",
                all,
                false,
                vec![
                    DeadLetters,
                    StoreAlerts,
                    PublishAlerts,
                    Announce,
                    StoreOffsets,
                ],
            ),
            (
                "a diagnosis change alone is stored, published and announced",
                Shape {
                    diagnosed: true,
                    offsets: true,
                    ..Shape::default()
                },
                false,
                vec![StoreAlerts, PublishAlerts, Announce, StoreOffsets],
            ),
            (
                "checkpoints on: offsets wait for a checkpoint",
                all,
                true,
                vec![DeadLetters, StoreAlerts, PublishAlerts, Announce],
            ),
            (
                "a checkpoint after the alerts, its offsets after it",
                Shape {
                    checkpoint: true,
                    ..all
                },
                true,
                vec![
                    DeadLetters,
                    StoreAlerts,
                    PublishAlerts,
                    Announce,
                    WriteCheckpoint,
                    StoreOffsets,
                ],
            ),
            (
                "a handover is told once its checkpoint and offsets are stored",
                Shape {
                    checkpoint: true,
                    done: true,
                    ..Shape::default()
                },
                true,
                vec![WriteCheckpoint, StoreOffsets, SignalDone],
            ),
            (
                "rejects alone: dead letters, no offsets without a checkpoint",
                Shape {
                    rejects: true,
                    offsets: true,
                    ..Shape::default()
                },
                true,
                vec![DeadLetters],
            ),
        ];
        for (name, shape, checkpoints, want) in cases {
            assert_eq!(plan(&outcome(shape), checkpoints), want, "{name}");
        }
    }

    #[test]
    fn offsets_stored_come_from_a_written_checkpoint_or_the_chunks() {
        let with_cp = outcome(Shape {
            offsets: true,
            checkpoint: true,
            ..Shape::default()
        });
        let without = outcome(Shape {
            offsets: true,
            ..Shape::default()
        });
        // (case, outcome, checkpoints on, checkpoint step's result, offsets)
        type Case<'a> = (
            &'a str,
            &'a Processed,
            bool,
            Option<Written>,
            &'a [(i32, i64)],
        );
        let cases: Vec<Case<'_>> = vec![
            (
                "written: its markers",
                &with_cp,
                true,
                Some(Written::Yes),
                &[(0, 2)],
            ),
            (
                "too late: none",
                &with_cp,
                true,
                Some(Written::TooLate),
                &[],
            ),
            (
                "checkpoints on, none taken: none",
                &without,
                true,
                None,
                &[],
            ),
            (
                "checkpoints off: the chunks'",
                &without,
                false,
                None,
                &[(0, 4)],
            ),
        ];
        for (name, p, checkpoints, written, want) in cases {
            assert_eq!(offsets_to_store(p, checkpoints, written), want, "{name}");
        }
    }

    #[test]
    fn only_a_handover_past_its_deadline_is_too_late() {
        let now = Instant::now();
        let second = Duration::from_secs(1);
        let cases = [
            ("timer checkpoint", None, false),
            ("handover before its deadline", Some(now + second), false),
            ("handover at its deadline", Some(now), true),
            ("handover past its deadline", Some(now - second), true),
        ];
        for (name, handover, want) in cases {
            let cp = Checkpoint {
                handover,
                ..Checkpoint::default()
            };
            assert_eq!(too_late(&cp, now), want, "{name}");
        }
    }
}
