//! TLS to the Postgres alert store (rustls), with libpq's `sslmode`
//! meanings: `disable` and `prefer` connect in plain text (`prefer` as the
//! `postgres` crate does without a TLS client); `require` encrypts without
//! checking the server's certificate (libpq's `require` without a root
//! certificate); `verify-ca` also checks that the certificate chains to
//! `sslrootcert`; `verify-full` also checks that it names the host.
//! `sslmode` and `sslrootcert` are read from the URL here, since the
//! `postgres` crate knows neither `verify-*` nor `sslrootcert`.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{CryptoProvider, ring};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{
    CertificateError, ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme,
};

/// How a connection is secured.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum TlsMode {
    /// `sslmode=disable` or `prefer` (the default): plain text.
    Plain,
    /// `sslmode=require`: encrypted, certificate not checked.
    Require,
    /// `sslmode=verify-ca`: encrypted, chain checked against the roots.
    VerifyCa(PathBuf),
    /// `sslmode=verify-full`: chain and host name checked.
    VerifyFull(PathBuf),
}

impl TlsMode {
    /// From the URL's `sslmode` and `sslrootcert` values.
    pub fn parse(sslmode: Option<&str>, rootcert: Option<&str>) -> Result<Self, String> {
        let root = rootcert.map(PathBuf::from);
        let mode = sslmode.unwrap_or("prefer");
        let need_root = |m: &str| {
            root.clone().ok_or_else(|| {
                format!("sslmode={m} needs sslrootcert=/path/to/ca.pem (the authorities to trust)")
            })
        };
        Ok(match mode {
            "disable" | "prefer" => Self::Plain,
            // libpq: require with a root certificate behaves like verify-ca.
            "require" if root.is_some() => Self::VerifyCa(need_root(mode)?),
            "require" => Self::Require,
            "verify-ca" => Self::VerifyCa(need_root(mode)?),
            "verify-full" => Self::VerifyFull(need_root(mode)?),
            other => {
                return Err(format!(
                    "sslmode={other}: expected disable, prefer, require, verify-ca or verify-full"
                ));
            }
        })
    }

    /// The rustls client for this mode (None: plain text).
    pub fn client_config(&self) -> Result<Option<ClientConfig>, String> {
        // ring: the one crypto provider in the build (reqwest's too); its
        // lack of post-quantum key exchange is what the deprecation is about.
        #[allow(deprecated)]
        let provider = Arc::new(ring::default_provider());
        let builder = ClientConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(|e| e.to_string())?;
        let verifier: Arc<dyn ServerCertVerifier> = match self {
            Self::Plain => return Ok(None),
            Self::Require => Arc::new(NoCheck(provider)),
            Self::VerifyCa(root) => Arc::new(ChainOnly(webpki(root, provider)?)),
            Self::VerifyFull(root) => webpki(root, provider)?,
        };
        Ok(Some(
            builder
                .dangerous()
                .with_custom_certificate_verifier(verifier)
                .with_no_client_auth(),
        ))
    }
}

fn webpki(root: &Path, provider: Arc<CryptoProvider>) -> Result<Arc<WebPkiServerVerifier>, String> {
    let shown = root.display();
    let mut roots = RootCertStore::empty();
    let certs =
        CertificateDer::pem_file_iter(root).map_err(|e| format!("sslrootcert {shown}: {e}"))?;
    for c in certs {
        let c = c.map_err(|e| format!("sslrootcert {shown}: {e}"))?;
        roots
            .add(c)
            .map_err(|e| format!("sslrootcert {shown}: {e}"))?;
    }
    if roots.is_empty() {
        return Err(format!("sslrootcert {shown}: no PEM certificate in it"));
    }
    WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider)
        .build()
        .map_err(|e| format!("sslrootcert {shown}: {e}"))
}

/// `verify-ca`: the chain must lead to a trusted root; the name may differ.
#[derive(Debug)]
struct ChainOnly(Arc<WebPkiServerVerifier>);

impl ServerCertVerifier for ChainOnly {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        match self
            .0
            .verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now)
        {
            Err(rustls::Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            )) => Ok(ServerCertVerified::assertion()),
            other => other,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.supported_verify_schemes()
    }
}

/// `require`: encrypted, any certificate (libpq's meaning; protects against
/// passive listeners only). The handshake's signatures are still checked.
#[derive(Debug)]
struct NoCheck(Arc<CryptoProvider>);

impl ServerCertVerifier for NoCheck {
    fn verify_server_cert(
        &self,
        _: &CertificateDer<'_>,
        _: &[CertificateDer<'_>],
        _: &ServerName<'_>,
        _: &[u8],
        _: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sslmodes_as_libpq_means_them() {
        assert_eq!(TlsMode::parse(None, None), Ok(TlsMode::Plain));
        assert_eq!(TlsMode::parse(Some("disable"), None), Ok(TlsMode::Plain));
        assert_eq!(TlsMode::parse(Some("require"), None), Ok(TlsMode::Require));
        assert_eq!(
            TlsMode::parse(Some("require"), Some("/ca.pem")),
            Ok(TlsMode::VerifyCa("/ca.pem".into()))
        );
        assert_eq!(
            TlsMode::parse(Some("verify-full"), Some("/ca.pem")),
            Ok(TlsMode::VerifyFull("/ca.pem".into()))
        );
        assert!(
            TlsMode::parse(Some("verify-full"), None)
                .unwrap_err()
                .contains("sslrootcert")
        );
        assert!(
            TlsMode::parse(Some("allow-all"), None)
                .unwrap_err()
                .contains("sslmode=allow-all")
        );
        let missing = TlsMode::VerifyFull("/nonexistent/ca.pem".into()).client_config();
        assert!(missing.unwrap_err().contains("/nonexistent/ca.pem"));
    }
}
