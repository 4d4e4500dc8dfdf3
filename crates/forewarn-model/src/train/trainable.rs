//! What differs between the model kinds in training, behind one trait:
//! the network, how the training rows are laid out for it, its loss and
//! its validation loss. Everything else (seeding, scaling, the highway's
//! start, Adam, early stopping, keeping the best epoch) is the one loop in
//! [`crate::train`].

use tch::nn;

use super::settings::TrainSettings;
use crate::artifact::Network;
use crate::error::ModelError;
use crate::highway::Highway;

pub(crate) trait Trainable: Sized {
    /// The scaled training and validation rows, laid out for training.
    type Data;

    /// Whether an epoch draws from libtorch's generator (shuffling).
    const DRAWS_WHILE_TRAINING: bool;

    /// Whether `n_train` training and `n_val` validation rows are enough;
    /// the message says what is missing.
    fn check_rows(n_train: usize, n_val: usize, s: &TrainSettings) -> Result<(), ModelError>;

    /// A freshly initialised network over `channels` (from libtorch's
    /// seeded generator, named `names`: a grid's layout places them)
    /// forecasting or reconstructing the `monitored` ones, with `highway`
    /// at zero.
    fn build(
        names: &[String],
        channels: usize,
        monitored: &[usize],
        s: &TrainSettings,
        highway: Highway,
    ) -> Result<Self, ModelError>;

    /// The highway's targets for its least-squares start
    /// ([`crate::highway::least_squares`]): output rows and their lead
    /// over the row the map reads.
    fn highway_targets(s: &TrainSettings) -> (usize, usize);

    fn set_highway_weight(&self, w: &[f32]) -> Result<(), ModelError>;

    /// The parameters Adam trains.
    fn var_store(&self) -> &nn::VarStore;

    /// Lays out scaled row-major `train` and `val` rows of `channels` (the
    /// targets: the network's monitored channels).
    fn prepare(
        &self,
        train: &[f32],
        val: &[f32],
        channels: usize,
        s: &TrainSettings,
    ) -> Result<Self::Data, ModelError>;

    /// One pass over the training rows, an optimizer step per minibatch;
    /// the mean training loss.
    fn epoch(
        &self,
        data: &Self::Data,
        opt: &mut nn::Optimizer,
        s: &TrainSettings,
    ) -> Result<f64, ModelError>;

    /// The loss on the validation rows (no gradients).
    fn validation_loss(&self, data: &Self::Data, s: &TrainSettings) -> Result<f64, ModelError>;

    fn into_network(self) -> Network;
}
