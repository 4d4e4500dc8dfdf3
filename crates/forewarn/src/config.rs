//! The service configuration: a TOML file, overridden by `FOREWARN_`
//! environment variables (`__` separates sections, e.g.
//! `FOREWARN_KAFKA__BROKERS=kafka:9092`, `FOREWARN_HTTP__LISTEN=0.0.0.0:8080`),
//! validated as a whole before anything starts.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use figment::providers::{Env, Format, Serialized, Toml};
use figment::Figment;
use forewarn_core::DetectorConfig;
use forewarn_ingest::IngestConfig;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    pub kafka: IngestConfig,
    pub model: ModelSection,
    pub detector: DetectorConfig,
    pub pipeline: PipelineSection,
    pub store: StoreSection,
    pub http: HttpSection,
    pub log: LogSection,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ModelSection {
    /// Model artifact directory written by `forewarn train`.
    pub path: PathBuf,
    /// `auto` (CUDA when available), `cpu` or `cuda` / `cuda:N`.
    pub device: String,
    /// libtorch intra-op threads; 0 lets the service choose (cores / 2, at least 1).
    pub threads: usize,
}

impl Default for ModelSection {
    fn default() -> Self {
        Self { path: "models/current".into(), device: "auto".into(), threads: 0 }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PipelineSection {
    /// Most devices in one forecaster call.
    pub max_batch: usize,
}

impl Default for PipelineSection {
    fn default() -> Self {
        Self { max_batch: 256 }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StoreSection {
    /// SQLite file holding alerts.
    pub path: PathBuf,
}

impl Default for StoreSection {
    fn default() -> Self {
        Self { path: "data/alerts.db".into() }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HttpSection {
    pub listen: SocketAddr,
}

impl Default for HttpSection {
    fn default() -> Self {
        Self { listen: SocketAddr::from(([127, 0, 0, 1], 8080)) }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogSection {
    pub format: LogFormat,
    /// A tracing filter, e.g. `info` or `forewarn=debug,librdkafka=warn`.
    pub level: String,
}

impl Default for LogSection {
    fn default() -> Self {
        Self { format: LogFormat::Text, level: "info".into() }
    }
}

impl Config {
    /// Defaults, then the file (if given), then `FOREWARN_*` variables.
    pub fn load(file: Option<&Path>) -> anyhow::Result<Self> {
        let mut fig = Figment::from(Serialized::defaults(Config::default()));
        if let Some(f) = file {
            if !f.exists() {
                bail!("config file {} does not exist", f.display());
            }
            fig = fig.merge(Toml::file(f));
        }
        let cfg: Config = fig
            .merge(Env::prefixed("FOREWARN_").split("__"))
            .extract()
            .map_err(|e| anyhow::anyhow!("invalid configuration: {e}"))?;
        cfg.validate()?;
        Ok(cfg)
    }

    pub fn validate(&self) -> anyhow::Result<()> {
        self.kafka.validate().map_err(anyhow::Error::msg).context("invalid configuration")?;
        self.detector
            .validate()
            .map_err(|e| anyhow::anyhow!("invalid configuration: detector.{e}"))?;
        if self.pipeline.max_batch == 0 || self.pipeline.max_batch > 65_536 {
            bail!("invalid configuration: pipeline.max_batch must be in 1..=65536, got {}", self.pipeline.max_batch);
        }
        parse_device(&self.model.device).context("invalid configuration: model.device")?;
        Ok(())
    }
}

/// `auto`, `cpu`, `cuda` or `cuda:N`.
pub fn parse_device(s: &str) -> anyhow::Result<tch::Device> {
    Ok(match s {
        "auto" => tch::Device::cuda_if_available(),
        "cpu" => tch::Device::Cpu,
        "cuda" => tch::Device::Cuda(0),
        other => match other.strip_prefix("cuda:").and_then(|n| n.parse().ok()) {
            Some(n) => tch::Device::Cuda(n),
            None => bail!("expected auto, cpu, cuda or cuda:N, got {other:?}"),
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_and_env_override_defaults() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("c.toml");
        std::fs::write(&f, "[kafka]\nbrokers = \"b:1\"\n[detector]\nopen_after = 4\nresolve_after = 2\nresolve_ratio = 0.5\n").unwrap();
        figment::Jail::expect_with(|jail| {
            jail.set_env("FOREWARN_HTTP__LISTEN", "0.0.0.0:9999");
            let c = Config::load(Some(&f)).unwrap();
            assert_eq!(c.kafka.brokers, "b:1");
            assert_eq!(c.detector.open_after, 4);
            assert_eq!(c.http.listen.port(), 9999);
            assert_eq!(c.kafka.group_id, "forewarn");
            Ok(())
        });
    }

    #[test]
    fn bad_values_are_clear_errors() {
        let dir = tempfile::tempdir().unwrap();
        let cases = [
            ("[kafka]\nbrokerz = \"x\"\n", "brokerz"),
            ("[pipeline]\nmax_batch = 0\n", "pipeline.max_batch"),
            ("[model]\ndevice = \"tpu\"\n", "model.device"),
            ("[detector]\nopen_after = 0\nresolve_after = 1\nresolve_ratio = 0.5\n", "open_after"),
            ("[http]\nlisten = \"nowhere\"\n", "listen"),
        ];
        for (i, (text, needle)) in cases.iter().enumerate() {
            let f = dir.path().join(format!("c{i}.toml"));
            std::fs::write(&f, text).unwrap();
            let err = format!("{:#}", Config::load(Some(&f)).unwrap_err());
            assert!(err.contains(needle), "{text}: {err}");
        }
        assert!(Config::load(Some(Path::new("/nonexistent.toml"))).is_err());
    }
}
