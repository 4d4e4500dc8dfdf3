//! The engine's one dependency on a model: [`Forecaster`], called with a
//! [`StepBatch`] of many devices.

/// One batched forecaster call: `n` devices, each advanced `horizon` steps.
#[derive(Debug, Clone, Default)]
pub struct StepBatch {
    pub n: usize,
    pub horizon: usize,
    /// Input channels per row.
    pub channels: usize,
    /// Forecast (or reconstructed) channels per row: the monitored ones,
    /// in schema order; `channels` when the model has no context channels.
    pub outputs: usize,
    pub state_len: usize,
    /// `n x horizon x channels` scaled readings, device-major.
    pub inputs: Vec<f32>,
    /// `n x state_len`: each device's recurrent state before the batch;
    /// the forecaster overwrites it with the state after the batch.
    pub states: Vec<f32>,
    /// `n x horizon x outputs`: filled by the forecaster with the forecast
    /// of each device's next batch (its monitored channels).
    pub predictions: Vec<f32>,
}

/// A model that advances many devices' recurrent state at once.
pub trait Forecaster {
    type Error;
    /// Length of one device's flattened recurrent state.
    fn state_len(&self) -> usize;
    fn step(&mut self, batch: &mut StepBatch) -> Result<(), Self::Error>;
    /// Whether `predictions` is a reconstruction of the batch itself (an
    /// autoencoder) rather than a forecast of the next one. The engine then
    /// scores each batch against its own reconstruction, right after the
    /// call, instead of against the previous call's forecast.
    fn reconstructs(&self) -> bool {
        false
    }
}
