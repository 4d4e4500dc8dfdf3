//! HTTPS on the API listener (`http.tls_cert_file`, `http.tls_key_file`):
//! the real `forewarn serve` with a certificate from a throwaway CA, a
//! real HTTPS client trusting only that CA, certificate renewal by SIGHUP,
//! and a garbled renewal that keeps the old certificate serving.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use anyhow::Context;
use forewarn_system_tests::*;
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;

/// The DER of the first certificate in a PEM file.
fn der(pem: &Path) -> anyhow::Result<Vec<u8>> {
    Ok(CertificateDer::from_pem_file(pem)?.to_vec())
}

/// The certificate a new connection to `url` is served (the client opens a
/// connection per request), with the response status.
async fn served(client: &reqwest::Client, url: &str) -> anyhow::Result<(u16, Vec<u8>)> {
    let resp = client
        .get(url)
        .send()
        .await
        .with_context(|| format!("GET {url}"))?;
    let cert = resp
        .extensions()
        .get::<reqwest::tls::TlsInfo>()
        .and_then(|i| i.peer_certificate())
        .context("no peer certificate")?
        .to_vec();
    Ok((resp.status().as_u16(), cert))
}

/// `forewarn config check` on `config`: (success, stderr).
fn config_check(config: &Path) -> anyhow::Result<(bool, String)> {
    let out = Command::new(forewarn_bin())
        .args(["config", "check"])
        .arg(config)
        .output()?;
    Ok((
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    ))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_api_renews_its_certificate_on_sighup_and_keeps_it_on_a_bad_one() -> anyhow::Result<()>
{
    let dir = tempfile::tempdir()?;
    let pki = Pki::new(dir.path(), "api")?;
    // The files serve reads; renewals are copied over them.
    let (cert, key) = (dir.path().join("live.pem"), dir.path().join("live-key.pem"));
    std::fs::copy(&pki.server_cert, &cert)?;
    std::fs::copy(&pki.server_key, &key)?;

    // Bad files are clear errors before anything starts.
    let garbled = dir.path().join("garbled-key.pem");
    std::fs::write(
        &garbled,
        "-----BEGIN PRIVATE KEY-----\nbm90IGEga2V5\n-----END PRIVATE KEY-----\n",
    )?;
    let check = dir.path().join("check.toml");
    let cases = [
        (
            format!("[http]\ntls_cert_file = \"{}\"\n", cert.display()),
            "http.tls_cert_file and http.tls_key_file must be set together".to_owned(),
        ),
        (
            format!(
                "[http]\ntls_cert_file = \"{}\"\ntls_key_file = \"{}\"\n",
                dir.path().join("missing.pem").display(),
                key.display()
            ),
            format!(
                "cannot read certificate file {}",
                dir.path().join("missing.pem").display()
            ),
        ),
        (
            format!(
                "[http]\ntls_cert_file = \"{}\"\ntls_key_file = \"{}\"\n",
                cert.display(),
                garbled.display()
            ),
            format!("{} holds no readable PEM private key", garbled.display()),
        ),
    ];
    for (text, needle) in &cases {
        std::fs::write(&check, text)?;
        let (ok, stderr) = config_check(&check)?;
        assert!(!ok, "{text}");
        assert!(
            stderr.starts_with("error: invalid configuration: http.tls_")
                && stderr.contains(needle),
            "{text}: {stderr}"
        );
    }
    std::fs::write(
        &check,
        format!(
            "[http]\ntls_cert_file = \"{}\"\ntls_key_file = \"{}\"\n",
            cert.display(),
            key.display()
        ),
    )?;
    let (ok, stderr) = config_check(&check)?;
    assert!(ok, "{stderr}");

    let broker = Broker::start(dir.path())?;
    let model = train_tep_model(dir.path())?;
    let mut serve = Serve::start_https(
        "serve",
        &broker.bootstrap(),
        &model,
        dir.path(),
        (&pki, &cert, &key),
        "",
    )?;
    serve.wait_ready(Duration::from_secs(60)).await?;

    // HTTPS with the CA's certificate: liveness, the model list, the console.
    let (status, body) = serve.get_json("/livez").await?;
    assert_eq!((status, &body["status"]), (200, &"ok".into()), "{body}");
    let (status, body) = serve.get_json("/api/v1/models").await?;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["models"][0]["name"], "tep", "{body}");
    let console = serve.client.get(format!("{}/", serve.api)).send().await?;
    assert_eq!(console.status(), 200);
    assert!(console.text().await?.contains("<html"));
    let livez = format!("{}/livez", serve.api);
    let first = der(&pki.server_cert)?;
    assert_eq!(served(&serve.client, &livez).await?, (200, first.clone()));

    // HTTPS only: a plain-HTTP request gets no answer, and a client that
    // does not trust the CA (the public roots only) is refused.
    let plain = reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()?;
    let http_url = livez.replacen("https://", "http://", 1);
    let err = plain.get(&http_url).send().await;
    assert!(err.is_err(), "plain HTTP answered: {err:?}");
    let err = plain.get(&livez).send().await.unwrap_err();
    assert!(
        format!("{err:?}").contains("UnknownIssuer"),
        "untrusted client: {err:?}"
    );

    // Renewal: a new certificate (new key, serial and name) from the same
    // CA replaces the files; SIGHUP swaps it in for new connections.
    let (renewed_cert, renewed_key) = pki.issue_server("renewed", "forewarn renewed")?;
    let renewed = der(&renewed_cert)?;
    assert_ne!(renewed, first);
    std::fs::copy(&renewed_cert, &cert)?;
    std::fs::copy(&renewed_key, &key)?;
    signal(serve.proc.child.id(), "-HUP")?;
    eventually(
        "the renewed certificate on new connections",
        Duration::from_secs(20),
        || async {
            let (_, c) = served(&serve.client, &livez).await?;
            Ok((c == renewed).then_some(()))
        },
    )
    .await?;
    let ok = r#"forewarn_tls_reloads_total{outcome="ok"}"#;
    let rejected = r#"forewarn_tls_reloads_total{outcome="rejected"}"#;
    assert_eq!(serve.metric(ok).await?, Some(1.0));
    assert_eq!(serve.metric(rejected).await?, Some(0.0));

    // A bad renewal (a new certificate with a garbled key): one error
    // line, and the renewed certificate keeps serving.
    let (third_cert, _) = pki.issue_server("third", "forewarn third")?;
    std::fs::copy(&third_cert, &cert)?;
    std::fs::copy(&garbled, &key)?;
    signal(serve.proc.child.id(), "-HUP")?;
    eventually(
        "the rejected reload counted",
        Duration::from_secs(20),
        || async { Ok((serve.metric(rejected).await? == Some(1.0)).then_some(())) },
    )
    .await?;
    for _ in 0..3 {
        assert_eq!(served(&serve.client, &livez).await?, (200, renewed.clone()));
    }
    let (status, body) = serve.get_json("/api/v1/models").await?;
    assert_eq!((status, &body["models"][0]["name"]), (200, &"tep".into()));
    assert_eq!(serve.metric(ok).await?, Some(1.0));
    let log = serve.proc.log();
    let errors: Vec<&str> = log.lines().filter(|l| l.contains("ERROR")).collect();
    assert_eq!(errors.len(), 1, "{log}");
    assert!(
        errors[0].contains("TLS certificate reload rejected")
            && errors[0].contains(&key.display().to_string()),
        "{}",
        errors[0]
    );
    assert_eq!(
        log.matches("TLS certificate reloaded; new connections get it")
            .count(),
        1,
        "{log}"
    );
    assert!(!log.contains("panicked"), "{log}");

    let status = serve.proc.terminate(Duration::from_secs(30))?;
    assert!(status.success(), "{status:?}\n{}", serve.proc.log());
    Ok(())
}
