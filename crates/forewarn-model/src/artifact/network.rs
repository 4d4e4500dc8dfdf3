//! The network an artifact holds, of whichever kind ([`Network`]), and
//! its borrowed form ([`NetworkRef`]) that describing, hashing and saving
//! read; apart from `artifact.rs` to keep that file within the size rule.

use std::path::Path;

use forewarn_core::engine::{Forecaster, StepBatch};

use super::{ModelKind, ModelMeta};
use crate::autoencoder::LstmAutoencoder;
use crate::convlstm::ConvLstm;
use crate::error::ModelError;
use crate::forecaster::{Highway, LstmForecaster};
use crate::multimodal::MultimodalForecaster;
use crate::precision::Precision;

/// The network of an artifact, of whichever kind it holds. The engine runs
/// every kind through the one [`Forecaster`] interface (the autoencoder
/// [reconstructs](Forecaster::reconstructs) its batch instead of
/// forecasting the next one).
#[derive(Debug)]
pub enum Network {
    Forecaster(LstmForecaster),
    PerVariable(MultimodalForecaster),
    Autoencoder(LstmAutoencoder),
    ConvLstm(ConvLstm),
}

impl Network {
    pub fn kind(&self) -> ModelKind {
        self.as_ref().kind()
    }

    /// SHA-256 (hex) of the weights, as `model.json` pins them.
    pub fn weights_sha256(&self) -> Result<String, ModelError> {
        self.as_ref().weights_sha256()
    }

    /// The network's linear highway.
    pub fn highway(&self) -> Highway {
        match self {
            Self::Forecaster(m) => m.highway(),
            Self::PerVariable(m) => m.highway(),
            Self::Autoencoder(m) => m.highway(),
            Self::ConvLstm(m) => m.highway(),
        }
    }

    /// The inference precision ([`LstmForecaster::set_precision`]); bf16
    /// is implemented for the forecaster kind only, and refused for the
    /// others.
    pub fn set_precision(&mut self, precision: Precision) -> Result<(), ModelError> {
        match self {
            Self::Forecaster(m) => m.set_precision(precision),
            Self::PerVariable(_) | Self::Autoencoder(_) | Self::ConvLstm(_)
                if precision == Precision::F32 =>
            {
                Ok(())
            }
            Self::PerVariable(_) | Self::Autoencoder(_) | Self::ConvLstm(_) => {
                Err(ModelError::Config(format!(
                    "{precision} inference is implemented for the forecaster only, not the {} model",
                    self.kind()
                )))
            }
        }
    }

    pub(crate) fn as_ref(&self) -> NetworkRef<'_> {
        match self {
            Self::Forecaster(m) => NetworkRef::Forecaster(m),
            Self::PerVariable(m) => NetworkRef::PerVariable(m),
            Self::Autoencoder(m) => NetworkRef::Autoencoder(m),
            Self::ConvLstm(m) => NetworkRef::ConvLstm(m),
        }
    }

    /// The network `meta` describes, with the weights in `path` (checked
    /// against the description before anything is copied).
    pub(crate) fn load(
        meta: &ModelMeta,
        path: &Path,
        device: tch::Device,
    ) -> Result<Self, ModelError> {
        Ok(match meta.kind {
            ModelKind::Forecaster => Self::Forecaster(LstmForecaster::load_monitored(
                meta.spec(),
                meta.highway,
                meta.monitored(),
                path,
                device,
            )?),
            ModelKind::PerVariable => Self::PerVariable(MultimodalForecaster::load(
                meta.multimodal_spec(),
                meta.highway,
                meta.monitored(),
                path,
                device,
            )?),
            ModelKind::Autoencoder => Self::Autoencoder(LstmAutoencoder::load(
                meta.autoencoder_spec(),
                meta.highway,
                meta.monitored(),
                path,
                device,
            )?),
            ModelKind::ConvLstm => Self::ConvLstm(ConvLstm::load(
                meta.convlstm_spec()
                    .map_err(|m| ModelError::Config(format!("convlstm: {m}")))?,
                meta.highway,
                path,
                device,
            )?),
        })
    }
}

impl Forecaster for Network {
    type Error = ModelError;

    fn state_len(&self) -> usize {
        match self {
            Self::Forecaster(m) => m.state_len(),
            Self::PerVariable(m) => m.state_len(),
            Self::Autoencoder(m) => m.state_len(),
            Self::ConvLstm(m) => m.state_len(),
        }
    }

    fn step(&mut self, b: &mut StepBatch) -> Result<(), ModelError> {
        match self {
            Self::Forecaster(m) => m.step(b),
            Self::PerVariable(m) => m.step(b),
            Self::Autoencoder(m) => m.step(b),
            Self::ConvLstm(m) => m.step(b),
        }
    }

    fn reconstructs(&self) -> bool {
        match self {
            Self::Forecaster(m) => m.reconstructs(),
            Self::PerVariable(m) => m.reconstructs(),
            Self::Autoencoder(m) => m.reconstructs(),
            Self::ConvLstm(m) => m.reconstructs(),
        }
    }
}

/// A borrowed [`Network`]: what describing, hashing and saving read.
#[derive(Clone, Copy)]
pub(crate) enum NetworkRef<'a> {
    Forecaster(&'a LstmForecaster),
    PerVariable(&'a MultimodalForecaster),
    Autoencoder(&'a LstmAutoencoder),
    ConvLstm(&'a ConvLstm),
}

impl<'a> NetworkRef<'a> {
    pub(crate) fn kind(self) -> ModelKind {
        match self {
            Self::Forecaster(_) => ModelKind::Forecaster,
            Self::PerVariable(_) => ModelKind::PerVariable,
            Self::Autoencoder(_) => ModelKind::Autoencoder,
            Self::ConvLstm(_) => ModelKind::ConvLstm,
        }
    }

    /// The parameters: every kind saves and hashes them alike (`weights`).
    pub(crate) fn var_store(self) -> &'a tch::nn::VarStore {
        match self {
            Self::Forecaster(m) => m.var_store(),
            Self::PerVariable(m) => m.var_store(),
            Self::Autoencoder(m) => m.var_store(),
            Self::ConvLstm(m) => m.var_store(),
        }
    }

    pub(crate) fn weights_sha256(self) -> Result<String, ModelError> {
        crate::weights::sha256(self.var_store())
    }

    /// Positions of the monitored (forecast or reconstructed) channels.
    pub(crate) fn monitored(self) -> &'a [usize] {
        match self {
            Self::Forecaster(m) => m.monitored(),
            Self::PerVariable(m) => m.monitored(),
            Self::Autoencoder(m) => m.monitored(),
            Self::ConvLstm(m) => m.monitored(),
        }
    }

    /// Positions of the context channels among `channels` inputs.
    pub(crate) fn context_positions(self, channels: usize) -> Vec<usize> {
        let monitored = self.monitored();
        (0..channels).filter(|j| !monitored.contains(j)).collect()
    }

    pub(crate) fn save(self, path: &Path) -> Result<(), ModelError> {
        crate::weights::save(self.var_store(), path)
    }

    /// Where `meta` does not describe this network: (described, actual).
    pub(crate) fn mismatch(self, meta: &ModelMeta) -> Option<(String, String)> {
        if meta.kind != self.kind() {
            return Some((
                format!("kind {}", meta.kind),
                format!("kind {}", self.kind()),
            ));
        }
        if meta.monitored() != self.monitored() {
            return Some((
                format!("monitored channels {:?}", meta.monitored()),
                format!("monitored channels {:?}", self.monitored()),
            ));
        }
        match self {
            Self::Forecaster(m) => {
                (meta.spec() != *m.spec() || meta.highway != m.highway()).then(|| {
                    (
                        format!("{:?} with highway {:?}", meta.spec(), meta.highway),
                        format!("{:?} with highway {:?}", m.spec(), m.highway()),
                    )
                })
            }
            Self::PerVariable(m) => {
                (meta.multimodal_spec() != *m.spec() || meta.highway != m.highway()).then(|| {
                    (
                        format!(
                            "{:?} with highway {:?}",
                            meta.multimodal_spec(),
                            meta.highway
                        ),
                        format!("{:?} with highway {:?}", m.spec(), m.highway()),
                    )
                })
            }
            Self::Autoencoder(m) => {
                (meta.autoencoder_spec() != *m.spec() || meta.highway != m.highway()).then(|| {
                    (
                        format!(
                            "{:?} with highway {:?}",
                            meta.autoencoder_spec(),
                            meta.highway
                        ),
                        format!("{:?} with highway {:?}", m.spec(), m.highway()),
                    )
                })
            }
            Self::ConvLstm(m) => match meta.convlstm_spec() {
                Ok(s) if s == *m.spec() && meta.highway == m.highway() => None,
                described => Some((format!("{described:?}"), format!("{:?}", m.spec()))),
            },
        }
    }
}
