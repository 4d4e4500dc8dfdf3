//! The service configuration: a TOML file, overridden by `FOREWARN_`
//! environment variables (`__` separates sections, e.g.
//! `FOREWARN_KAFKA__BROKERS=kafka:9092`, `FOREWARN_HTTP__LISTEN=0.0.0.0:8080`),
//! validated as a whole before anything starts.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use figment::Figment;
use figment::providers::{Env, Format, Serialized, Toml};
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
    pub metrics: MetricsSection,
    pub webhook: WebhookSection,
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
    /// Inference precision: `f32` (as trained) or `bf16` (the LSTM in
    /// bf16, cast at load; the artifact stays f32). bf16 needs a CPU with
    /// AVX512_BF16 or AMX_BF16 (or a GPU libtorch runs it on) and is
    /// refused at load otherwise, as is bf16 for a model kind other than
    /// the forecaster. docs/BENCHMARKS.md has the numbers.
    pub precision: forewarn_model::Precision,
    /// A fault classifier written by `forewarn classify --save`: open
    /// alerts then carry a `diagnosis` (the likely fault, top 3 with
    /// probabilities). It must read the model's channels; it is reloaded
    /// with the model.
    pub diagnosis: Option<PathBuf>,
}

impl Default for ModelSection {
    fn default() -> Self {
        Self {
            path: "models/current".into(),
            device: "auto".into(),
            threads: 0,
            precision: forewarn_model::Precision::F32,
            diagnosis: None,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PipelineSection {
    /// Most devices in one forecaster call.
    pub max_batch: usize,
    /// Most devices whose state is held at once; beyond it, the least
    /// recently seen idle devices are evicted (they re-warm if they return).
    /// About 4 KiB each for 8 channels, hidden 64, window 50.
    pub max_devices: usize,
}

impl Default for PipelineSection {
    fn default() -> Self {
        Self {
            max_batch: 256,
            max_devices: 100_000,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StoreSection {
    /// SQLite file holding alerts (the default store; unused when `url` is set).
    pub path: PathBuf,
    /// PostgreSQL URL (`postgres://user:password@host:5432/db`): alerts go
    /// to that database instead, shared by every instance configured with
    /// it. Empty: SQLite at `path`. Printed with the password masked.
    #[serde(serialize_with = "serialize_store_url")]
    pub url: String,
}

impl Default for StoreSection {
    fn default() -> Self {
        Self {
            path: "data/alerts.db".into(),
            url: String::new(),
        }
    }
}

impl StoreSection {
    /// Where alerts go, for logs: the SQLite path or the Postgres URL with
    /// its password masked.
    pub fn describe(&self) -> String {
        if self.url.is_empty() {
            format!("sqlite {}", self.path.display())
        } else {
            format!("postgres {}", forewarn_store::redact_url(&self.url))
        }
    }
}

/// `store.url` as `config check` prints it: password masked.
fn serialize_store_url<S: serde::Serializer>(url: &str, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&forewarn_store::redact_url(url))
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HttpSection {
    pub listen: SocketAddr,
    /// Bearer tokens accepted by mutating endpoints (acknowledge, model
    /// reload). Empty: those endpoints answer 403.
    pub tokens: Vec<String>,
    /// Also require a token on the read endpoints under /api/v1.
    pub read_requires_token: bool,
    /// Longest a request may take before it is answered with 503.
    pub request_timeout_ms: u64,
    /// Largest accepted request body, in bytes.
    pub body_limit_bytes: usize,
    /// Alert events a live-stream (SSE) client may fall behind before it
    /// skips events and is told so.
    pub stream_buffer: usize,
    /// HTTPS: the listener's certificate chain (PEM, leaf first) and its
    /// private key (PEM). Both set: HTTPS only; neither: plain HTTP. Read
    /// again on SIGHUP.
    pub tls_cert_file: PathBuf,
    pub tls_key_file: PathBuf,
}

impl HttpSection {
    /// The certificate files when HTTPS is configured.
    pub fn tls_files(&self) -> Option<forewarn_api::tls::TlsFiles> {
        (!self.tls_cert_file.as_os_str().is_empty()).then(|| forewarn_api::tls::TlsFiles {
            cert: self.tls_cert_file.clone(),
            key: self.tls_key_file.clone(),
        })
    }
}

impl Default for HttpSection {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            tokens: Vec::new(),
            read_requires_token: false,
            request_timeout_ms: 10_000,
            body_limit_bytes: 64 * 1024,
            stream_buffer: 1024,
            tls_cert_file: PathBuf::new(),
            tls_key_file: PathBuf::new(),
        }
    }
}

/// Per-device Prometheus series, off by default (device ids are unbounded).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MetricsSection {
    /// Devices that get `forewarn_device_score` / `forewarn_device_threshold`.
    pub device_allow_list: Vec<String>,
}

/// Alert delivery to an HTTP receiver in Alertmanager's API shape.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct WebhookSection {
    /// Receiver URL, e.g. `https://alertmanager:9093/api/v2/alerts`
    /// (`http://` or `https://`); empty: off.
    pub url: String,
    /// PEM bundle of certificate authorities trusted for an `https://`
    /// receiver, besides the public roots; empty: the public roots only.
    pub ca_file: PathBuf,
    /// Re-send open alerts this often (Alertmanager expires alerts that
    /// are not re-sent).
    pub resend_interval_ms: u64,
    /// Timeout of one POST.
    pub timeout_ms: u64,
    /// First retry delay; doubles per failure up to `max_backoff_ms`.
    pub initial_backoff_ms: u64,
    pub max_backoff_ms: u64,
    /// Optional `Authorization: Bearer` token sent to the receiver
    /// (printed masked).
    #[serde(serialize_with = "serialize_secret")]
    pub bearer_token: String,
    /// A file holding the bearer token instead (a mounted secret).
    pub bearer_token_file: PathBuf,
    /// Optional `Authorization: Basic` user; the password comes from
    /// `basic_password` (printed masked) or `basic_password_file`.
    pub basic_user: String,
    #[serde(serialize_with = "serialize_secret")]
    pub basic_password: String,
    pub basic_password_file: PathBuf,
    /// Base URL written in `generatorURL` (links back to the console).
    pub external_url: String,
}

impl Default for WebhookSection {
    fn default() -> Self {
        Self {
            url: String::new(),
            resend_interval_ms: 60_000,
            timeout_ms: 5_000,
            initial_backoff_ms: 500,
            max_backoff_ms: 30_000,
            ca_file: PathBuf::new(),
            bearer_token: String::new(),
            bearer_token_file: PathBuf::new(),
            basic_user: String::new(),
            basic_password: String::new(),
            basic_password_file: PathBuf::new(),
            external_url: String::new(),
        }
    }
}

/// A secret as `config check` prints it: `****` when set.
fn serialize_secret<S: serde::Serializer>(secret: &str, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(if secret.is_empty() { "" } else { "****" })
}

/// A secret given inline or as a file (trailing newline dropped); empty
/// when neither is set.
fn secret(name: &str, inline: &str, file: &Path) -> anyhow::Result<String> {
    if file.as_os_str().is_empty() {
        return Ok(inline.to_string());
    }
    if !inline.is_empty() {
        bail!("invalid configuration: set {name} or {name}_file, not both");
    }
    let text = std::fs::read_to_string(file).with_context(|| {
        format!(
            "invalid configuration: {name}_file: cannot read {}",
            file.display()
        )
    })?;
    Ok(text.trim_end_matches(['\n', '\r']).to_string())
}

impl WebhookSection {
    /// The `Authorization` the sender uses, secrets read from their files.
    pub fn auth(&self) -> anyhow::Result<forewarn_api::webhook::WebhookAuth> {
        use forewarn_api::webhook::WebhookAuth;
        let token = secret(
            "webhook.bearer_token",
            &self.bearer_token,
            &self.bearer_token_file,
        )?;
        let password = secret(
            "webhook.basic_password",
            &self.basic_password,
            &self.basic_password_file,
        )?;
        match (token.is_empty(), self.basic_user.is_empty()) {
            (true, true) if password.is_empty() => Ok(WebhookAuth::None),
            (true, true) => {
                bail!("invalid configuration: webhook.basic_password needs webhook.basic_user")
            }
            (false, true) => Ok(WebhookAuth::Bearer(token)),
            (true, false) => Ok(WebhookAuth::Basic(self.basic_user.clone(), password)),
            (false, false) => bail!(
                "invalid configuration: webhook.bearer_token and webhook.basic_user are exclusive"
            ),
        }
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
        Self {
            format: LogFormat::Text,
            level: "info".into(),
        }
    }
}

/// `kafka.client` from `FOREWARN_KAFKA__CLIENT__*` variables (for simulate
/// and bench, which take no config file), keys as serve reads them.
pub fn env_kafka_client() -> anyhow::Result<Vec<(String, String)>> {
    let map: std::collections::BTreeMap<String, String> =
        Figment::from(Env::prefixed("FOREWARN_KAFKA__CLIENT__"))
            .extract()
            .map_err(|e| anyhow::anyhow!("invalid FOREWARN_KAFKA__CLIENT__ variable: {e}"))?;
    Ok(map.into_iter().collect())
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
        self.kafka
            .validate()
            .map_err(anyhow::Error::msg)
            .context("invalid configuration")?;
        self.detector
            .validate()
            .map_err(|e| anyhow::anyhow!("invalid configuration: detector.{e}"))?;
        if self.pipeline.max_devices == 0 {
            bail!("invalid configuration: pipeline.max_devices must be at least 1");
        }
        if self.pipeline.max_batch == 0 || self.pipeline.max_batch > 65_536 {
            bail!(
                "invalid configuration: pipeline.max_batch must be in 1..=65536, got {}",
                self.pipeline.max_batch
            );
        }
        forewarn_model::parse_device(&self.model.device)
            .context("invalid configuration: model.device")?;
        if self.http.tokens.iter().any(|t| t.trim().len() < 16) {
            bail!("invalid configuration: http.tokens must each be at least 16 characters");
        }
        if self.http.read_requires_token && self.http.tokens.is_empty() {
            bail!(
                "invalid configuration: http.read_requires_token needs at least one http.tokens entry"
            );
        }
        if self.http.request_timeout_ms == 0
            || self.http.body_limit_bytes == 0
            || self.http.stream_buffer == 0
        {
            bail!(
                "invalid configuration: http.request_timeout_ms, http.body_limit_bytes and http.stream_buffer must be at least 1"
            );
        }
        if self.http.tls_cert_file.as_os_str().is_empty()
            != self.http.tls_key_file.as_os_str().is_empty()
        {
            bail!(
                "invalid configuration: http.tls_cert_file and http.tls_key_file must be set together (HTTPS) or both left empty (plain HTTP)"
            );
        }
        if let Some(files) = self.http.tls_files() {
            forewarn_api::tls::server_config(&files).map_err(|e| {
                anyhow::anyhow!(
                    "invalid configuration: http.tls_cert_file / http.tls_key_file: {e}"
                )
            })?;
        }
        if !self.store.url.is_empty() {
            forewarn_store::validate_url(&self.store.url)
                .map_err(|e| anyhow::anyhow!("invalid configuration: {e}"))?;
        }
        let w = &self.webhook;
        if !w.url.is_empty() {
            if !(w.url.starts_with("http://") || w.url.starts_with("https://")) {
                bail!(
                    "invalid configuration: webhook.url must be an http:// or https:// URL, got {:?}",
                    w.url
                );
            }
            w.auth()?;
            if !w.ca_file.as_os_str().is_empty() && !w.ca_file.is_file() {
                bail!(
                    "invalid configuration: webhook.ca_file {} is not a readable file",
                    w.ca_file.display()
                );
            }
            if w.resend_interval_ms < 1_000
                || w.timeout_ms == 0
                || w.initial_backoff_ms == 0
                || w.max_backoff_ms < w.initial_backoff_ms
            {
                bail!(
                    "invalid configuration: webhook.resend_interval_ms must be at least 1000, webhook.timeout_ms and webhook.initial_backoff_ms at least 1, and webhook.max_backoff_ms at least webhook.initial_backoff_ms"
                );
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    #[allow(clippy::result_large_err)] // figment::Jail's closure returns figment::Error
    fn file_and_env_override_defaults() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("c.toml");
        std::fs::write(&f, "[kafka]\nbrokers = \"b:1\"\n[detector]\nopen_after = 4\nresolve_after = 2\nresolve_ratio = 0.5\nopen_ratio = 2.5\n").unwrap();
        figment::Jail::expect_with(|jail| {
            jail.set_env("FOREWARN_HTTP__LISTEN", "0.0.0.0:9999");
            let c = Config::load(Some(&f)).unwrap();
            assert_eq!(c.model.precision, forewarn_model::Precision::F32);
            jail.set_env("FOREWARN_MODEL__PRECISION", "bf16");
            let c = Config::load(Some(&f)).unwrap();
            assert_eq!(c.model.precision, forewarn_model::Precision::Bf16);
            assert_eq!(c.kafka.brokers, "b:1");
            assert_eq!(c.detector.open_after, 4);
            assert_eq!(c.detector.open_ratio, 2.5);
            // Unset in the file: the default probation.
            assert_eq!(
                c.detector.probation,
                forewarn_core::detector::PROBATION_READINGS
            );
            jail.set_env("FOREWARN_DETECTOR__PROBATION", "0");
            assert_eq!(Config::load(Some(&f)).unwrap().detector.probation, 0);
            assert_eq!(
                c.detector.context_change_margin,
                forewarn_core::detector::CONTEXT_CHANGE_MARGIN
            );
            jail.set_env("FOREWARN_DETECTOR__CONTEXT_CHANGE_MARGIN", "0.5");
            let err = Config::load(Some(&f)).unwrap_err().to_string();
            assert!(
                err.contains("detector.context_change_margin must be at least 1"),
                "{err}"
            );
            jail.set_env("FOREWARN_DETECTOR__CONTEXT_CHANGE_MARGIN", "1");
            let loaded = Config::load(Some(&f)).unwrap();
            assert_eq!(loaded.detector.context_change_margin, 1.0);
            assert_eq!(c.http.listen.port(), 9999);
            assert_eq!(c.kafka.group_id, "forewarn");
            Ok(())
        });
    }

    #[test]
    #[allow(clippy::result_large_err)] // figment::Jail's closure returns figment::Error
    fn bad_values_are_clear_errors() {
        let dir = tempfile::tempdir().unwrap();
        let cases = [
            ("[kafka]\nbrokerz = \"x\"\n", "brokerz"),
            ("[pipeline]\nmax_batch = 0\n", "pipeline.max_batch"),
            ("[model]\ndevice = \"tpu\"\n", "model.device"),
            ("[model]\nprecision = \"f16\"\n", "precision"),
            (
                "[detector]\nopen_after = 0\nresolve_after = 1\nresolve_ratio = 0.5\n",
                "open_after",
            ),
            (
                "[detector]\nopen_after = 2\nresolve_after = 1\nresolve_ratio = 0.5\nopen_ratio = 0.5\n",
                "open_ratio must be 0 (off) or at least 1",
            ),
            ("[http]\nlisten = \"nowhere\"\n", "listen"),
            ("[http]\ntokens = [\"short\"]\n", "http.tokens"),
            (
                "[http]\nread_requires_token = true\n",
                "read_requires_token",
            ),
            ("[webhook]\nurl = \"ftp://x\"\n", "webhook.url"),
            (
                "[http]\ntls_cert_file = \"/etc/c.pem\"\n",
                "http.tls_cert_file and http.tls_key_file must be set together",
            ),
            (
                "[http]\ntls_key_file = \"/etc/k.pem\"\n",
                "http.tls_cert_file and http.tls_key_file must be set together",
            ),
            (
                "[http]\ntls_cert_file = \"/nonexistent/c.pem\"\ntls_key_file = \"/nonexistent/k.pem\"\n",
                "http.tls_cert_file / http.tls_key_file: cannot read certificate file /nonexistent/c.pem",
            ),
            ("[metrics]\nallow = []\n", "allow"),
            ("[store]\nurl = \"mysql://db/x\"\n", "store.url"),
            (
                "[store]\nurl = \"postgres://u:pw@db/x?sslmode=verify-full\"\n",
                "store.url postgres://u:***@db/x",
            ),
        ];
        // In a jail: the other tests set FOREWARN_* variables in the jail,
        // and a concurrent load would read them.
        figment::Jail::expect_with(|_| {
            for (i, (text, needle)) in cases.iter().enumerate() {
                let f = dir.path().join(format!("c{i}.toml"));
                std::fs::write(&f, text).unwrap();
                let err = format!("{:#}", Config::load(Some(&f)).unwrap_err());
                assert!(err.contains(needle), "{text}: {err}");
            }
            assert!(Config::load(Some(Path::new("/nonexistent.toml"))).is_err());
            Ok(())
        });
    }

    #[test]
    #[allow(clippy::result_large_err)] // figment::Jail's closure returns figment::Error
    fn store_url_from_env_is_validated_and_printed_without_password() {
        figment::Jail::expect_with(|jail| {
            let c = Config::load(None).unwrap();
            assert_eq!(
                (c.store.url.as_str(), c.store.describe()),
                ("", "sqlite data/alerts.db".into())
            );
            jail.set_env(
                "FOREWARN_STORE__URL",
                "postgres://forewarn:s3cret@db:5432/alerts",
            );
            let c = Config::load(None).unwrap();
            assert_eq!(c.store.url, "postgres://forewarn:s3cret@db:5432/alerts");
            assert_eq!(
                c.store.describe(),
                "postgres postgres://forewarn:***@db:5432/alerts"
            );
            let printed = toml::to_string_pretty(&c).unwrap();
            assert!(
                printed.contains("url = \"postgres://forewarn:***@db:5432/alerts\""),
                "{printed}"
            );
            assert!(!printed.contains("s3cret"), "{printed}");
            jail.set_env("FOREWARN_STORE__URL", "db:5432");
            let err = format!("{:#}", Config::load(None).unwrap_err());
            assert!(err.contains("store.url"), "{err}");
            Ok(())
        });
    }
}
