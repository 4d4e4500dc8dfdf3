//! The engine stage's checkpoint bookkeeping (no I/O, no clock: the caller
//! passes `now`): when a checkpoint is due, and which input position each
//! partition's checkpoint marks.

use std::time::{Duration, Instant};

use crate::messages::advance_offset;

#[derive(Debug)]
pub(super) struct Checkpointing {
    interval: Duration,
    last: Instant,
    /// Per assigned partition, the offset after the last message the
    /// engine has applied: where a checkpoint taken now resumes.
    positions: Vec<(i32, i64)>,
    /// Messages were applied since the last checkpoint.
    unsaved: bool,
}

impl Checkpointing {
    pub fn new(interval: Duration, now: Instant) -> Self {
        Self {
            interval,
            last: now,
            positions: Vec::new(),
            unsaved: false,
        }
    }

    /// The engine applied the messages below `offsets` (partition, next).
    pub fn applied(&mut self, offsets: &[(i32, i64)]) {
        for &(p, next) in offsets {
            advance_offset(&mut self.positions, p, next);
        }
        self.unsaved |= !offsets.is_empty();
    }

    /// How long until a checkpoint is due (zero: now); `None` when nothing
    /// changed since the last one.
    pub fn due_in(&self, now: Instant) -> Option<Duration> {
        self.unsaved.then(|| {
            self.interval
                .saturating_sub(now.saturating_duration_since(self.last))
        })
    }

    /// A checkpoint is taken at `now`: the position of every partition
    /// (its markers); the next one is due an interval later.
    pub fn take(&mut self, now: Instant) -> Vec<(i32, i64)> {
        self.last = now;
        self.unsaved = false;
        self.positions.clone()
    }

    /// A partition was restored from a checkpoint that resumes at `at`.
    pub fn assigned(&mut self, partition: i32, at: i64) {
        self.positions.retain(|(p, _)| *p != partition);
        self.positions.push((partition, at));
    }

    /// Partitions are revoked: their positions, which the handover's
    /// checkpoint marks, leave with them.
    pub fn revoked(&mut self, partitions: &[i32]) -> Vec<(i32, i64)> {
        let mut markers = Vec::new();
        self.positions.retain(|&(p, at)| {
            let revoked = partitions.contains(&p);
            if revoked {
                markers.push((p, at));
            }
            !revoked
        });
        markers
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One thing that happens to the bookkeeping, `secs` after the start.
    #[derive(Debug, Clone, Copy)]
    enum Op {
        Applied(&'static [(i32, i64)]),
        Assigned(i32, i64),
        Take,
        Revoked(&'static [i32]),
    }
    use Op::*;

    /// Each case: steps of (seconds since start, operation, expected
    /// markers of a `Take`/`Revoked`, expected `due_in` after it).
    type Step = (u64, Op, &'static [(i32, i64)], Option<u64>);

    #[test]
    fn positions_and_due_times() {
        let cases: Vec<(&str, Vec<Step>)> = vec![
            (
                "nothing applied: never due",
                vec![(0, Take, &[], None), (9, Applied(&[]), &[], None)],
            ),
            (
                "applied messages make one due an interval after the last",
                vec![
                    (1, Applied(&[(0, 5)]), &[], Some(4)),
                    (6, Applied(&[(0, 8), (1, 2)]), &[], Some(0)),
                    (6, Take, &[(0, 8), (1, 2)], None),
                    (7, Applied(&[(1, 3)]), &[], Some(4)),
                ],
            ),
            (
                "positions never move back",
                vec![
                    (0, Applied(&[(0, 8)]), &[], Some(5)),
                    (0, Applied(&[(0, 6)]), &[], Some(5)),
                    (0, Take, &[(0, 8)], None),
                ],
            ),
            (
                "a restored partition resumes at its checkpoint",
                vec![
                    (0, Applied(&[(0, 8)]), &[], Some(5)),
                    (1, Assigned(0, 3), &[], Some(4)),
                    (1, Assigned(2, 40), &[], Some(4)),
                    (2, Take, &[(0, 3), (2, 40)], None),
                ],
            ),
            (
                "revoked partitions take their positions with them",
                vec![
                    (0, Applied(&[(0, 8), (1, 4), (2, 9)]), &[], Some(5)),
                    (1, Revoked(&[0, 2, 7]), &[(0, 8), (2, 9)], Some(4)),
                    (5, Take, &[(1, 4)], None),
                ],
            ),
        ];
        for (name, steps) in cases {
            let start = Instant::now();
            let at = |s: u64| start + Duration::from_secs(s);
            let mut c = Checkpointing::new(Duration::from_secs(5), start);
            for (i, &(secs, op, markers, due)) in steps.iter().enumerate() {
                let got = match op {
                    Applied(offsets) => {
                        c.applied(offsets);
                        vec![]
                    }
                    Assigned(p, resume) => {
                        c.assigned(p, resume);
                        vec![]
                    }
                    Take => c.take(at(secs)),
                    Revoked(ps) => c.revoked(ps),
                };
                assert_eq!(got, markers, "{name}, step {i} ({op:?})");
                assert_eq!(
                    c.due_in(at(secs)),
                    due.map(Duration::from_secs),
                    "{name}, step {i} ({op:?})"
                );
            }
        }
    }
}
