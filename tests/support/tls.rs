//! Throwaway certificate authorities (rcgen) and a TLS front for the
//! broker: the Tansu build the tests run cannot serve TLS itself (its
//! `--cert` and `--key` options refuse each other), so its listener sits
//! behind a rustls terminator, as a broker behind a TLS load balancer
//! does; SASL goes through it to the broker.

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context;
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, SanType,
};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

/// A certificate authority with a server certificate (localhost,
/// 127.0.0.1) and a client certificate signed by it, as PEM files.
pub struct Pki {
    pub ca: PathBuf,
    pub server_cert: PathBuf,
    pub server_key: PathBuf,
    pub client_cert: PathBuf,
    pub client_key: PathBuf,
    /// Signs further server certificates ([`Pki::issue_server`]).
    issuer: Issuer<'static, KeyPair>,
    dir: PathBuf,
}

/// A server certificate for localhost and 127.0.0.1 with common name `cn`.
fn server_certificate(
    issuer: &Issuer<'static, KeyPair>,
    cn: &str,
) -> anyhow::Result<(rcgen::Certificate, KeyPair)> {
    let key = KeyPair::generate()?;
    let mut params = CertificateParams::new(vec!["localhost".to_string()])?;
    params
        .subject_alt_names
        .push(SanType::IpAddress(IpAddr::from([127, 0, 0, 1])));
    params.distinguished_name.push(DnType::CommonName, cn);
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    Ok((params.signed_by(&key, issuer)?, key))
}

impl Pki {
    /// Generates a fresh authority named `name` into `dir/<name>-*.pem`.
    pub fn new(dir: &Path, name: &str) -> anyhow::Result<Self> {
        let ca_key = KeyPair::generate()?;
        let mut ca = CertificateParams::new(Vec::<String>::new())?;
        ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca.distinguished_name
            .push(DnType::CommonName, format!("{name} test CA"));
        ca.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let ca_cert = ca.self_signed(&ca_key)?;
        let issuer = Issuer::new(ca, ca_key);

        let (server_cert, server_key) = server_certificate(&issuer, "localhost")?;

        let client_key = KeyPair::generate()?;
        let mut client = CertificateParams::new(Vec::<String>::new())?;
        client
            .distinguished_name
            .push(DnType::CommonName, "forewarn");
        client.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        let client_cert = client.signed_by(&client_key, &issuer)?;

        let write = |what: &str, pem: String| -> anyhow::Result<PathBuf> {
            let p = dir.join(format!("{name}-{what}.pem"));
            std::fs::write(&p, pem).with_context(|| format!("writing {}", p.display()))?;
            Ok(p)
        };
        Ok(Self {
            ca: write("ca", ca_cert.pem())?,
            server_cert: write("server", server_cert.pem())?,
            server_key: write("server-key", server_key.serialize_pem())?,
            client_cert: write("client", client_cert.pem())?,
            client_key: write("client-key", client_key.serialize_pem())?,
            issuer,
            dir: dir.to_owned(),
        })
    }

    /// Another server certificate from this authority (a fresh key and
    /// serial, common name `cn`), as `(cert, key)` PEM files named `name`.
    pub fn issue_server(&self, name: &str, cn: &str) -> anyhow::Result<(PathBuf, PathBuf)> {
        let (cert, key) = server_certificate(&self.issuer, cn)?;
        let cert_path = self.dir.join(format!("{name}.pem"));
        let key_path = self.dir.join(format!("{name}-key.pem"));
        std::fs::write(&cert_path, cert.pem())?;
        std::fs::write(&key_path, key.serialize_pem())?;
        Ok((cert_path, key_path))
    }

    /// An HTTPS client that trusts this authority only (not the public
    /// roots), opens a new connection per request, and exposes the
    /// server's certificate (`reqwest::tls::TlsInfo`).
    pub fn https_client(&self) -> anyhow::Result<reqwest::Client> {
        let ca = reqwest::Certificate::from_pem(&std::fs::read(&self.ca)?)?;
        Ok(reqwest::Client::builder()
            .tls_built_in_root_certs(false)
            .add_root_certificate(ca)
            .tls_info(true)
            .pool_max_idle_per_host(0)
            .timeout(std::time::Duration::from_secs(10))
            .build()?)
    }

    /// A rustls server configuration with the server certificate; with
    /// `client_ca`, clients must present a certificate from that authority.
    pub fn server_config(&self, client_ca: Option<&Path>) -> anyhow::Result<rustls::ServerConfig> {
        #[allow(deprecated)] // ring: the build's one provider
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let certs: Vec<CertificateDer<'static>> =
            CertificateDer::pem_file_iter(&self.server_cert)?.collect::<Result<_, _>>()?;
        let key = PrivateKeyDer::from_pem_file(&self.server_key)?;
        let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()?;
        let builder = match client_ca {
            None => builder.with_no_client_auth(),
            Some(ca) => {
                let mut roots = rustls::RootCertStore::empty();
                for c in CertificateDer::pem_file_iter(ca)? {
                    roots.add(c?)?;
                }
                let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
                    Arc::new(roots),
                    provider,
                )
                .build()?;
                builder.with_client_cert_verifier(verifier)
            }
        };
        Ok(builder.with_single_cert(certs, key)?)
    }
}

/// A TLS listener on 127.0.0.1 forwarding each connection, decrypted, to
/// a plain-TCP backend. Stops when dropped.
pub struct TlsFront {
    pub port: u16,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl TlsFront {
    /// Binds a free port now (so a broker can advertise it before the
    /// front forwards to it) and forwards to `127.0.0.1:backend`.
    pub fn start(config: rustls::ServerConfig, backend: u16) -> anyhow::Result<Self> {
        let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
        listener.set_nonblocking(true)?;
        let port = listener.local_addr()?.port();
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
        let (stop, mut stopped) = tokio::sync::oneshot::channel::<()>();
        let thread = std::thread::Builder::new()
            .name(format!("tls-front-{port}"))
            .spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .expect("runtime");
                rt.block_on(async move {
                    let listener = tokio::net::TcpListener::from_std(listener).expect("listener");
                    loop {
                        let (tcp, _) = tokio::select! {
                            _ = &mut stopped => return,
                            r = listener.accept() => match r { Ok(c) => c, Err(_) => continue },
                        };
                        let acceptor = acceptor.clone();
                        tokio::spawn(async move {
                            // A refused handshake (an untrusted client) just closes.
                            let Ok(mut tls) = acceptor.accept(tcp).await else {
                                return;
                            };
                            let Ok(mut plain) =
                                tokio::net::TcpStream::connect(("127.0.0.1", backend)).await
                            else {
                                return;
                            };
                            let _ = tokio::io::copy_bidirectional(&mut tls, &mut plain).await;
                        });
                    }
                });
            })?;
        Ok(Self {
            port,
            stop: Some(stop),
            thread: Some(thread),
        })
    }
}

impl Drop for TlsFront {
    fn drop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
