//! [`Ensemble`]: several forecasters of one shape run as one, their
//! forecasts averaged. Members trained from different random starts make
//! different errors on what training did not show them; the mean forecast
//! keeps what they agree on, so a device's score moves less with the luck
//! of one training run.

use super::forecaster::{Forecaster, StepBatch};

/// Why members cannot form an ensemble.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EnsembleError {
    #[error("an ensemble needs at least one member")]
    Empty,
    #[error("ensemble members must all forecast or all reconstruct")]
    MixedOutputs,
}

/// Members advanced together: one device's state is the members' states
/// end to end (member 0 first), and the forecast is the members' mean.
#[derive(Debug)]
pub struct Ensemble<F> {
    members: Vec<F>,
    /// One member's call, reused between steps.
    scratch: StepBatch,
}

impl<F: Forecaster> Ensemble<F> {
    pub fn new(members: Vec<F>) -> Result<Self, EnsembleError> {
        let first = members.first().ok_or(EnsembleError::Empty)?;
        if members
            .iter()
            .any(|m| m.reconstructs() != first.reconstructs())
        {
            return Err(EnsembleError::MixedOutputs);
        }
        Ok(Self {
            members,
            scratch: StepBatch::default(),
        })
    }

    pub fn members(&self) -> &[F] {
        &self.members
    }

    pub fn members_mut(&mut self) -> &mut [F] {
        &mut self.members
    }

    pub fn into_members(self) -> Vec<F> {
        self.members
    }
}

impl<F: Forecaster> Forecaster for Ensemble<F> {
    type Error = F::Error;

    fn state_len(&self) -> usize {
        self.members.iter().map(F::state_len).sum()
    }

    fn step(&mut self, b: &mut StepBatch) -> Result<(), F::Error> {
        if let [only] = self.members.as_mut_slice() {
            return only.step(b);
        }
        let total = b.state_len;
        let share = 1.0 / self.members.len() as f32;
        let s = &mut self.scratch;
        s.n = b.n;
        s.horizon = b.horizon;
        s.channels = b.channels;
        s.outputs = b.outputs;
        s.inputs.clone_from(&b.inputs);
        b.predictions.fill(0.0);
        let mut offset = 0;
        for member in &mut self.members {
            let len = member.state_len();
            s.state_len = len;
            s.states.clear();
            for device in b.states.chunks_exact(total) {
                s.states.extend_from_slice(&device[offset..offset + len]);
            }
            s.predictions.clear();
            s.predictions.resize(b.predictions.len(), 0.0);
            member.step(s)?;
            for (device, own) in b
                .states
                .chunks_exact_mut(total)
                .zip(s.states.chunks_exact(len))
            {
                device[offset..offset + len].copy_from_slice(own);
            }
            for (mean, p) in b.predictions.iter_mut().zip(&s.predictions) {
                *mean += share * p;
            }
            offset += len;
        }
        Ok(())
    }

    fn reconstructs(&self) -> bool {
        self.members[0].reconstructs()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Forecasts `gain` x the input plus its state, then adds the batch's
    /// first input to its state (one value per device): enough to see
    /// states kept apart and forecasts averaged.
    struct Toy {
        gain: f32,
        state_len: usize,
    }

    impl Forecaster for Toy {
        type Error = String;
        fn state_len(&self) -> usize {
            self.state_len
        }
        fn step(&mut self, b: &mut StepBatch) -> Result<(), String> {
            if b.state_len != self.state_len {
                return Err(format!("state_len {} for {}", b.state_len, self.state_len));
            }
            let per = b.horizon * b.channels;
            for d in 0..b.n {
                let state = &mut b.states[d * self.state_len..(d + 1) * self.state_len];
                for (k, p) in b.predictions[d * per..(d + 1) * per].iter_mut().enumerate() {
                    *p = self.gain * b.inputs[d * per + k] + state[0];
                }
                for s in state.iter_mut() {
                    *s += b.inputs[d * per];
                }
            }
            Ok(())
        }
    }

    fn batch(states: Vec<f32>, state_len: usize) -> StepBatch {
        StepBatch {
            n: 2,
            horizon: 1,
            channels: 2,
            outputs: 2,
            state_len,
            inputs: vec![1.0, 2.0, 10.0, 20.0],
            states,
            predictions: vec![0.0; 4],
        }
    }

    #[test]
    fn members_keep_their_own_state_and_the_forecast_is_their_mean() {
        let mut e = Ensemble::new(vec![
            Toy {
                gain: 1.0,
                state_len: 1,
            },
            Toy {
                gain: 3.0,
                state_len: 2,
            },
        ])
        .unwrap();
        assert_eq!(e.state_len(), 3);
        // Device 0: member 0's state 100, member 1's [5, 5]; device 1: 0, [1, 1].
        let mut b = batch(vec![100.0, 5.0, 5.0, 0.0, 1.0, 1.0], 3);
        e.step(&mut b).unwrap();
        // Device 0: (1 + 100 + 3 + 5) / 2, (2 + 100 + 6 + 5) / 2.
        // Device 1: (10 + 0 + 30 + 1) / 2, (20 + 0 + 60 + 1) / 2.
        assert_eq!(b.predictions, vec![54.5, 56.5, 20.5, 40.5]);
        assert_eq!(b.states, vec![101.0, 6.0, 6.0, 10.0, 11.0, 11.0]);
        // A second call starts from the states the first left.
        e.step(&mut b).unwrap();
        assert_eq!(b.states, vec![102.0, 7.0, 7.0, 20.0, 21.0, 21.0]);
    }

    #[test]
    fn one_member_is_that_member() {
        let mut e = Ensemble::new(vec![Toy {
            gain: 2.0,
            state_len: 1,
        }])
        .unwrap();
        let mut b = batch(vec![1.0, 0.0], 1);
        e.step(&mut b).unwrap();
        assert_eq!(b.predictions, vec![3.0, 5.0, 20.0, 40.0]);
        assert_eq!(b.states, vec![2.0, 10.0]);
    }

    #[test]
    fn a_members_error_is_the_ensembles() {
        struct Failing;
        impl Forecaster for Failing {
            type Error = String;
            fn state_len(&self) -> usize {
                1
            }
            fn step(&mut self, _: &mut StepBatch) -> Result<(), String> {
                Err("device lost".into())
            }
        }
        let mut e = Ensemble::new(vec![Failing, Failing]).unwrap();
        let mut b = batch(vec![0.0; 4], 2);
        assert_eq!(e.step(&mut b), Err("device lost".to_owned()));
    }

    #[test]
    fn members_are_refused_when_none_or_mixed() {
        assert_eq!(
            Ensemble::<Toy>::new(vec![]).err(),
            Some(EnsembleError::Empty)
        );
        struct Either(bool);
        impl Forecaster for Either {
            type Error = String;
            fn state_len(&self) -> usize {
                1
            }
            fn step(&mut self, _: &mut StepBatch) -> Result<(), String> {
                Ok(())
            }
            fn reconstructs(&self) -> bool {
                self.0
            }
        }
        assert!(Ensemble::new(vec![Either(true)]).unwrap().reconstructs());
        assert_eq!(
            Ensemble::new(vec![Either(false), Either(true)]).err(),
            Some(EnsembleError::MixedOutputs)
        );
    }
}
