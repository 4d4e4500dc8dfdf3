//! HTTPS on the API listener (`http.tls_cert_file`, `http.tls_key_file`):
//! the certificate chain and private key read from PEM files into a rustls
//! server configuration, served through axum-server, and read again on
//! request (SIGHUP in `serve`). A reload that fails keeps the previous
//! certificate serving.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use axum_server::tls_rustls::RustlsConfig;
use forewarn_telemetry::events::{TlsCertificateReloadRejected, TlsCertificateReloaded};
use forewarn_telemetry::{InternalEvent, Metrics};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio_util::sync::CancellationToken;

use crate::{ApiConfig, AppState, router_with};

/// The PEM files of the listener's certificate chain (leaf first) and key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
}

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read {what} {}: {source}", path.display())]
    Read {
        what: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{} holds no PEM certificate (-----BEGIN CERTIFICATE-----)", .0.display())]
    NoCertificate(PathBuf),
    #[error("{} is not a readable PEM certificate chain: {detail}", path.display())]
    BadCertificate { path: PathBuf, detail: String },
    #[error("{} holds no readable PEM private key (PKCS#8, PKCS#1 or SEC1): {detail}", path.display())]
    BadKey { path: PathBuf, detail: String },
    #[error("the certificate {} and the key {} are not usable together: {source}", cert.display(), key.display())]
    Rejected {
        cert: PathBuf,
        key: PathBuf,
        source: rustls::Error,
    },
}

fn read(what: &'static str, path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::Read {
        what,
        path: path.to_owned(),
        source,
    })
}

/// Reads and checks `files` into a server configuration (HTTP/2 and
/// HTTP/1.1 offered by ALPN). Reads the files synchronously: they are small
/// and local, and this runs at start and on a reload.
pub fn server_config(files: &TlsFiles) -> Result<Arc<rustls::ServerConfig>, TlsError> {
    let cert_pem = read("certificate file", &files.cert)?;
    let key_pem = read("key file", &files.key)?;
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&cert_pem)
        .collect::<Result<_, _>>()
        .map_err(|e| TlsError::BadCertificate {
            path: files.cert.clone(),
            detail: e.to_string(),
        })?;
    if certs.is_empty() {
        return Err(TlsError::NoCertificate(files.cert.clone()));
    }
    let key = PrivateKeyDer::from_pem_slice(&key_pem).map_err(|e| TlsError::BadKey {
        path: files.key.clone(),
        detail: e.to_string(),
    })?;
    let rejected = |source| TlsError::Rejected {
        cert: files.cert.clone(),
        key: files.key.clone(),
        source,
    };
    // ring, passed explicitly: the build's one crypto provider (no
    // process-wide default is installed); its deprecation is about the
    // lack of post-quantum key exchange.
    #[allow(deprecated)]
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    // A key in a valid PEM envelope may still be garbage: named as a key
    // error, not as a certificate/key mismatch.
    provider
        .key_provider
        .load_private_key(key.clone_key())
        .map_err(|e| TlsError::BadKey {
            path: files.key.clone(),
            detail: e.to_string(),
        })?;
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(rejected)?
        .with_no_client_auth()
        // Checks that the key belongs to the leaf certificate.
        .with_single_cert(certs, key)
        .map_err(rejected)?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// The listener's live TLS configuration and the files it comes from.
/// Clones share the configuration: a reload through one is seen by all.
#[derive(Clone)]
pub struct TlsReloader {
    files: TlsFiles,
    config: RustlsConfig,
    metrics: Arc<Metrics>,
}

impl std::fmt::Debug for TlsReloader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsReloader")
            .field("files", &self.files)
            .finish_non_exhaustive()
    }
}

impl TlsReloader {
    /// Loads `files`; an error here is an error at start.
    pub fn new(files: TlsFiles, metrics: Arc<Metrics>) -> Result<Self, TlsError> {
        let config = RustlsConfig::from_config(server_config(&files)?);
        Ok(Self {
            files,
            config,
            metrics,
        })
    }

    pub fn files(&self) -> &TlsFiles {
        &self.files
    }

    /// Reads the files again: on success new connections get the new
    /// certificate (connections already open keep theirs); on failure the
    /// previous one stays. Either way one log line and
    /// `forewarn_tls_reloads_total{outcome}`.
    pub fn reload(&self) -> Result<(), TlsError> {
        match server_config(&self.files) {
            Ok(config) => {
                self.config.reload_from_config(config);
                TlsCertificateReloaded {
                    cert_file: &self.files.cert.display().to_string(),
                    key_file: &self.files.key.display().to_string(),
                }
                .emit(&self.metrics);
                Ok(())
            }
            Err(e) => {
                TlsCertificateReloadRejected {
                    error: &e.to_string(),
                }
                .emit(&self.metrics);
                Err(e)
            }
        }
    }
}

/// [`crate::serve_with`] over HTTPS only: `state`'s API on `listener` with
/// `tls`'s current certificate, until `shutdown` is cancelled, then stops
/// accepting and lets in-flight requests finish. A client that fails the
/// handshake (plain HTTP included) is dropped without an answer.
pub async fn serve_tls(
    listener: tokio::net::TcpListener,
    mut state: AppState,
    config: ApiConfig,
    tls: &TlsReloader,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    state.shutdown = shutdown.clone();
    let handle = axum_server::Handle::new();
    {
        let handle = handle.clone();
        tokio::spawn(async move {
            shutdown.cancelled().await;
            handle.graceful_shutdown(None);
        });
    }
    axum_server::from_tcp_rustls(listener.into_std()?, tls.config.clone())?
        .handle(handle)
        .serve(router_with(state, config).into_make_service())
        .await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn self_signed(dir: &Path, name: &str) -> TlsFiles {
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = rcgen::CertificateParams::new(vec!["localhost".to_string()])
            .unwrap()
            .self_signed(&key)
            .unwrap();
        let files = TlsFiles {
            cert: dir.join(format!("{name}.pem")),
            key: dir.join(format!("{name}-key.pem")),
        };
        std::fs::write(&files.cert, cert.pem()).unwrap();
        std::fs::write(&files.key, key.serialize_pem()).unwrap();
        files
    }

    #[test]
    fn bad_files_are_named_errors() {
        let dir = tempfile::tempdir().unwrap();
        let good = self_signed(dir.path(), "a");
        let other = self_signed(dir.path(), "b");
        assert!(server_config(&good).is_ok());

        let missing = TlsFiles {
            cert: dir.path().join("nope.pem"),
            key: good.key.clone(),
        };
        let e = server_config(&missing).unwrap_err().to_string();
        assert!(
            e.starts_with("cannot read certificate file") && e.contains("nope.pem"),
            "{e}"
        );

        let garbled = dir.path().join("garbled.pem");
        std::fs::write(&garbled, "not a key at all\n").unwrap();
        let enveloped = dir.path().join("enveloped.pem");
        std::fs::write(
            &enveloped,
            "-----BEGIN PRIVATE KEY-----\nbm90IGEga2V5\n-----END PRIVATE KEY-----\n",
        )
        .unwrap();
        let e = server_config(&TlsFiles {
            cert: good.cert.clone(),
            key: enveloped,
        })
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("enveloped.pem holds no readable PEM private key"),
            "{e}"
        );
        let e = server_config(&TlsFiles {
            cert: good.cert.clone(),
            key: garbled.clone(),
        })
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("no readable PEM private key") && e.contains("garbled.pem"),
            "{e}"
        );
        let e = server_config(&TlsFiles {
            cert: garbled,
            key: good.key.clone(),
        })
        .unwrap_err()
        .to_string();
        assert!(e.contains("holds no PEM certificate"), "{e}");
        // A key swapped for the key of another certificate.
        let e = server_config(&TlsFiles {
            cert: good.cert.clone(),
            key: other.key,
        })
        .unwrap_err()
        .to_string();
        assert!(e.contains("are not usable together"), "{e}");
    }

    #[test]
    fn a_failed_reload_keeps_the_configuration_and_counts() {
        let dir = tempfile::tempdir().unwrap();
        let files = self_signed(dir.path(), "a");
        let metrics = Arc::new(Metrics::new());
        let tls = TlsReloader::new(files.clone(), metrics.clone()).unwrap();
        let before = tls.config.get_inner();
        std::fs::write(&files.key, "garbled").unwrap();
        assert!(tls.reload().is_err());
        assert!(Arc::ptr_eq(&before, &tls.config.get_inner()));
        let count = |o: &str| metrics.tls_reloads.with_label_values(&[o]).get();
        assert_eq!((count("ok"), count("rejected")), (0, 1));
        let fresh = self_signed(dir.path(), "a");
        tls.reload().unwrap();
        assert!(!Arc::ptr_eq(&before, &tls.config.get_inner()));
        assert_eq!(fresh, files);
        assert_eq!((count("ok"), count("rejected")), (1, 1));
    }
}
