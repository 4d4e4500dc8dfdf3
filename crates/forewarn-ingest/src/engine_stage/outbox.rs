//! What the engine stage holds back, and when it lets it go (no I/O).

use std::sync::mpsc;

use crate::messages::{Checkpoint, Processed};

/// The outcome of the chunks taken since the engine's queue was last
/// empty. Its offsets go on to the persist stage only once every batch
/// those chunks completed has been through the forecaster; its alert
/// changes need not wait.
#[derive(Debug, Default)]
pub(super) struct Outbox {
    held: Option<Processed>,
}

/// What may go to the persist stage now.
#[derive(Debug)]
pub(super) enum Release {
    /// Batches still wait for company, so the offsets stay held; the alert
    /// changes made meanwhile go ahead. Storing a change early is safe: it
    /// precedes its offsets either way, and a replay makes the same change
    /// again (the store upserts by alert id).
    Changes(Processed),
    /// No batch waits: everything held.
    All(Processed),
}

impl Outbox {
    /// Adds a later outcome to what is held.
    pub fn hold(&mut self, p: Processed) {
        match &mut self.held {
            None => self.held = Some(p),
            Some(held) => held.merge(p),
        }
    }

    /// The held outcome, an empty one when nothing is held.
    pub fn held(&mut self) -> &mut Processed {
        self.held.get_or_insert_with(Processed::default)
    }

    pub fn is_empty(&self) -> bool {
        self.held.is_none()
    }

    /// Whether a checkpoint is held: one goes out at a time.
    pub fn has_checkpoint(&self) -> bool {
        self.held.as_ref().is_some_and(|h| h.checkpoint.is_some())
    }

    /// Holds a handover's checkpoint and the signal its rebalance waits
    /// on. Timer checkpoints leave with the outcome they are taken for,
    /// so none is ever held here to be replaced.
    pub fn hand_over(&mut self, cp: Checkpoint, done: mpsc::Sender<()>) {
        let held = self.held();
        debug_assert!(held.checkpoint.is_none());
        held.checkpoint = Some(cp);
        held.done = Some(done);
    }

    /// What goes to the persist stage now, given whether batches still
    /// wait in the engine's queue.
    pub fn release(&mut self, batches_waiting: bool) -> Option<Release> {
        if !batches_waiting {
            return self.held.take().map(Release::All);
        }
        let held = self.held.as_mut()?;
        if held.changes.is_empty() {
            return None;
        }
        Some(Release::Changes(Processed {
            changes: std::mem::take(&mut held.changes),
            ..Processed::default()
        }))
    }
}

/// Whether to take a timer checkpoint now: one is `due` or the stage is
/// `closing` (the final checkpoint, so a restart resumes exactly); no
/// batch waits (a checkpoint is taken only with nothing queued, so its
/// state and its positions describe the same point); and no checkpoint is
/// held (a handover's goes out first, alone: it is not written at all
/// when late, which must not take a timer checkpoint's records with it).
pub(super) fn checkpoint_now(
    due: bool,
    closing: bool,
    batches_waiting: bool,
    one_held: bool,
) -> bool {
    (due || closing) && !batches_waiting && !one_held
}

#[cfg(test)]
mod tests {
    use forewarn_store::AlertChange;

    use super::*;

    fn change(opened_at: i64) -> AlertChange {
        AlertChange::Opened(crate::test_alerts::open_alert(
            &format!("a{opened_at}"),
            opened_at,
        ))
    }

    fn outcome(changes: &[i64], offsets: &[(i32, i64)]) -> Processed {
        Processed {
            changes: changes.iter().map(|&t| change(t)).collect(),
            offsets: offsets.to_vec(),
            accepted: 1,
            ..Processed::default()
        }
    }

    /// A release as "changes" (early, alert changes alone) or "all", with
    /// the alert times and offsets it carries.
    type Expect = Option<(&'static str, Vec<i64>, Vec<(i32, i64)>)>;

    /// What a release hands on, as [`Expect`].
    fn describe(r: Option<Release>) -> Expect {
        let (kind, p) = match r? {
            Release::Changes(p) => ("changes", p),
            Release::All(p) => ("all", p),
        };
        let times = p.changes.iter().map(|c| c.alert().opened_at).collect();
        Some((kind, times, p.offsets))
    }

    #[test]
    fn offsets_wait_for_the_batches_and_changes_do_not() {
        // (case, outcomes held in turn, batches waiting, what is released,
        // then what a release with no batch waiting hands on)
        let cases: Vec<(&str, Vec<Processed>, bool, Expect, Expect)> = vec![
            ("nothing held", vec![], false, None, None),
            (
                "nothing waits: everything goes",
                vec![outcome(&[1], &[(0, 5)]), outcome(&[2], &[(0, 9)])],
                false,
                Some(("all", vec![1, 2], vec![(0, 9)])),
                None,
            ),
            (
                "batches wait: the changes go ahead, the offsets stay",
                vec![outcome(&[1], &[(0, 5)]), outcome(&[], &[(1, 3)])],
                true,
                Some(("changes", vec![1], vec![])),
                Some(("all", vec![], vec![(0, 5), (1, 3)])),
            ),
            (
                "batches wait and no change was made: nothing goes",
                vec![outcome(&[], &[(0, 5)])],
                true,
                None,
                Some(("all", vec![], vec![(0, 5)])),
            ),
        ];
        for (name, held, waiting, first, then) in cases {
            let mut outbox = Outbox::default();
            for p in held {
                outbox.hold(p);
            }
            assert_eq!(describe(outbox.release(waiting)), first, "{name}");
            assert_eq!(describe(outbox.release(false)), then, "{name}: then");
            assert!(outbox.is_empty(), "{name}");
        }
    }

    #[test]
    fn a_handover_is_held_with_its_signal() {
        let mut outbox = Outbox::default();
        assert!(!outbox.has_checkpoint());
        outbox.hold(outcome(&[], &[(0, 5)]));
        let (done, finished) = mpsc::channel();
        outbox.hand_over(
            Checkpoint {
                markers: vec![(0, 5)],
                ..Checkpoint::default()
            },
            done,
        );
        assert!(outbox.has_checkpoint());
        let Some(Release::All(p)) = outbox.release(false) else {
            panic!("the handover goes out with no batch waiting")
        };
        assert_eq!(p.checkpoint.unwrap().markers, [(0, 5)]);
        p.done.unwrap().send(()).unwrap();
        assert!(finished.try_recv().is_ok());
    }

    #[test]
    fn a_timer_checkpoint_waits_for_the_queue_and_for_a_held_one() {
        // (due, closing, batches waiting, one held) -> take one now
        let cases = [
            ((false, false, false, false), false),
            ((true, false, false, false), true),
            ((false, true, false, false), true),
            ((true, false, true, false), false),
            ((false, true, true, false), false),
            ((true, false, false, true), false),
            ((true, true, false, true), false),
        ];
        for ((due, closing, waiting, held), want) in cases {
            assert_eq!(
                checkpoint_now(due, closing, waiting, held),
                want,
                "due {due}, closing {closing}, waiting {waiting}, held {held}"
            );
        }
    }
}
