//! The network an artifact holds, of whichever kind ([`Network`]), and
//! its borrowed form ([`NetworkRef`]) that describing, hashing and saving
//! read; apart from `artifact.rs` to keep that file within the size rule.

use std::path::{Path, PathBuf};

use forewarn_core::engine::{Ensemble, Forecaster, StepBatch};
use sha2::{Digest, Sha256};

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
    /// Two or more networks of one kind and shape, trained from different
    /// seeds, whose forecasts are averaged (`[model] members`); never
    /// nested (built only by [`Network::ensemble`]).
    Ensemble(Ensemble<Network>),
}

impl Network {
    /// `members` as one network: the member itself when there is one,
    /// else their [`Ensemble`]. The members must be single networks of one
    /// kind, with the same monitored channels and state size.
    pub fn ensemble(mut members: Vec<Network>) -> Result<Self, ModelError> {
        if members.len() == 1 {
            return Ok(members.remove(0));
        }
        let Some(lead) = members.first() else {
            return Err(ModelError::Config("an ensemble needs a member".into()));
        };
        if members.len() > super::MAX_MEMBERS {
            return Err(ModelError::Config(format!(
                "an ensemble holds at most {} members, not {}",
                super::MAX_MEMBERS,
                members.len()
            )));
        }
        let (kind, monitored, state_len) =
            (lead.kind(), lead.as_ref().monitored(), lead.state_len());
        for m in &members {
            if matches!(m, Self::Ensemble(_)) {
                return Err(ModelError::Config("ensembles do not nest".into()));
            }
            if m.kind() != kind || m.as_ref().monitored() != monitored || m.state_len() != state_len
            {
                return Err(ModelError::Config(
                    "ensemble members must be of one kind and shape".into(),
                ));
            }
        }
        let ensemble =
            Ensemble::new(members).map_err(|e| ModelError::Config(format!("ensemble: {e}")))?;
        Ok(Self::Ensemble(ensemble))
    }

    /// How many networks forecast: 1, or an ensemble's members.
    pub fn members(&self) -> usize {
        match self {
            Self::Ensemble(e) => e.members().len(),
            _ => 1,
        }
    }

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
            Self::Ensemble(e) => e.members()[0].highway(),
        }
    }

    /// The inference precision ([`LstmForecaster::set_precision`]); bf16
    /// is implemented for the forecaster kind only, and refused for the
    /// others.
    pub fn set_precision(&mut self, precision: Precision) -> Result<(), ModelError> {
        match self {
            Self::Ensemble(e) => {
                (e.members_mut().iter_mut()).try_for_each(|m| m.set_precision(precision))
            }
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
            Self::Ensemble(e) => NetworkRef::Ensemble(e.members()),
        }
    }

    /// The network `meta` describes, each member with its weights in
    /// `paths` (checked against the description before anything is copied).
    pub(crate) fn load(
        meta: &ModelMeta,
        paths: &[PathBuf],
        device: tch::Device,
    ) -> Result<Self, ModelError> {
        let members = (paths.iter())
            .map(|path| Self::load_member(meta, path, device))
            .collect::<Result<Vec<_>, _>>()?;
        Self::ensemble(members)
    }

    fn load_member(meta: &ModelMeta, path: &Path, device: tch::Device) -> Result<Self, ModelError> {
        Ok(match meta.kind {
            ModelKind::Forecaster => {
                let mut m = LstmForecaster::load_monitored(
                    meta.spec(),
                    meta.highway,
                    meta.monitored(),
                    path,
                    device,
                )?;
                m.set_recurrent_context(meta.recurrent_context)?;
                Self::Forecaster(m)
            }
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
            Self::Ensemble(e) => e.state_len(),
        }
    }

    fn step(&mut self, b: &mut StepBatch) -> Result<(), ModelError> {
        match self {
            Self::Forecaster(m) => m.step(b),
            Self::PerVariable(m) => m.step(b),
            Self::Autoencoder(m) => m.step(b),
            Self::ConvLstm(m) => m.step(b),
            Self::Ensemble(e) => e.step(b),
        }
    }

    fn reconstructs(&self) -> bool {
        match self {
            Self::Forecaster(m) => m.reconstructs(),
            Self::PerVariable(m) => m.reconstructs(),
            Self::Autoencoder(m) => m.reconstructs(),
            Self::ConvLstm(m) => m.reconstructs(),
            Self::Ensemble(e) => e.reconstructs(),
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
    Ensemble(&'a [Network]),
}

impl<'a> NetworkRef<'a> {
    pub(crate) fn kind(self) -> ModelKind {
        match self {
            Self::Ensemble(m) => m[0].kind(),
            Self::Forecaster(_) => ModelKind::Forecaster,
            Self::PerVariable(_) => ModelKind::PerVariable,
            Self::Autoencoder(_) => ModelKind::Autoencoder,
            Self::ConvLstm(_) => ModelKind::ConvLstm,
        }
    }

    /// The single networks: an ensemble's members, or the network itself.
    pub(crate) fn members(self) -> Vec<NetworkRef<'a>> {
        match self {
            Self::Ensemble(m) => m.iter().map(Network::as_ref).collect(),
            single => vec![single],
        }
    }

    /// The first member, whose shape every member shares.
    pub(crate) fn lead(self) -> NetworkRef<'a> {
        self.members()[0]
    }

    /// The parameters of a single network: every kind saves and hashes
    /// them alike (`weights`).
    pub(crate) fn var_store(self) -> &'a tch::nn::VarStore {
        match self {
            Self::Ensemble(m) => m[0].as_ref().var_store(),
            Self::Forecaster(m) => m.var_store(),
            Self::PerVariable(m) => m.var_store(),
            Self::Autoencoder(m) => m.var_store(),
            Self::ConvLstm(m) => m.var_store(),
        }
    }

    /// A single network's weights hash; an ensemble's hashes its members'
    /// in order, so a member swapped or reordered changes it.
    pub(crate) fn weights_sha256(self) -> Result<String, ModelError> {
        let Self::Ensemble(members) = self else {
            return crate::weights::sha256(self.var_store());
        };
        let mut h = Sha256::new();
        h.update(b"ensemble");
        h.update((members.len() as u64).to_le_bytes());
        for m in members {
            h.update(m.as_ref().weights_sha256()?.as_bytes());
        }
        Ok(hex::encode(h.finalize()))
    }

    /// Positions of the monitored (forecast or reconstructed) channels.
    pub(crate) fn monitored(self) -> &'a [usize] {
        match self {
            Self::Ensemble(m) => m[0].as_ref().monitored(),
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

    /// Writes a single network's weights (an ensemble: each member's, one
    /// file each, by the artifact).
    pub(crate) fn save(self, path: &Path) -> Result<(), ModelError> {
        crate::weights::save(self.var_store(), path)
    }

    /// Where `meta` does not describe this network: (described, actual).
    pub(crate) fn mismatch(self, meta: &ModelMeta) -> Option<(String, String)> {
        let members = self.members();
        if meta.members != members.len() {
            return Some((
                format!("{} members", meta.members),
                format!("{} members", members.len()),
            ));
        }
        members.into_iter().find_map(|m| m.member_mismatch(meta))
    }

    /// [`Self::mismatch`] for one of [`Self::members`].
    fn member_mismatch(self, meta: &ModelMeta) -> Option<(String, String)> {
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
            Self::Forecaster(m) => (meta.spec() != *m.spec()
                || meta.highway != m.highway()
                || meta.recurrent_context != m.recurrent_context())
            .then(|| {
                (
                    format!(
                        "{:?} with highway {:?}, recurrent context {}",
                        meta.spec(),
                        meta.highway,
                        meta.recurrent_context
                    ),
                    format!(
                        "{:?} with highway {:?}, recurrent context {}",
                        m.spec(),
                        m.highway(),
                        m.recurrent_context()
                    ),
                )
            }),
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
            // `members` lists single networks only.
            Self::Ensemble(_) => None,
        }
    }
}
