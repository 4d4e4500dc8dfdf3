//! Kafka over TLS (with a client certificate) and SASL, end to end, and
//! the two ways a plant's Kafka refuses a misconfigured client: a wrong
//! password and a broker certificate from an authority the client does
//! not trust. Each must give one clear error line and a 503 `/readyz`
//! naming the reason, never a hang or a panic.
//!
//! The broker is Tansu behind a rustls TLS front (see tests/support/tls.rs
//! for why); SASL is Tansu's own SCRAM.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::Duration;

use forewarn_system_tests::*;

/// One small TEP model for the whole file (trained once).
fn model() -> PathBuf {
    static MODEL: OnceLock<(tempfile::TempDir, PathBuf)> = OnceLock::new();
    MODEL
        .get_or_init(|| {
            let dir = tempfile::tempdir().unwrap();
            let model = train_tep_model(dir.path()).unwrap();
            (dir, model)
        })
        .1
        .clone()
}

fn props(pairs: &[(&str, &Path)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.display().to_string()))
        .collect()
}

/// Waits for a 503 `/readyz` whose reasons mention `needle`; returns them.
async fn wait_unready_because(serve: &Serve, needle: &str) -> anyhow::Result<String> {
    let url = format!("{}/readyz", serve.api);
    eventually(
        &format!("/readyz 503 naming {needle:?}"),
        Duration::from_secs(60),
        || async {
            let (status, body) = get_json(&url).await?;
            let reasons = body["reasons"].to_string();
            Ok((status == 503 && reasons.contains(needle)).then_some(reasons))
        },
    )
    .await
    .inspect_err(|_| eprintln!("----- serve log -----\n{}", serve.proc.log()))
}

/// The lines of `log` that are the service's connection error.
fn connection_error_lines(log: &str) -> Vec<&str> {
    log.lines()
        .filter(|l| l.contains("cannot connect to Kafka"))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_with_client_certificate_round_trip() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let kafka = SecureBroker::start(dir.path(), true, false)?;
    let pki = &kafka.pki;
    let tls = props(&[
        ("ssl.ca.location", &pki.ca),
        ("ssl.certificate.location", &pki.client_cert),
        ("ssl.key.location", &pki.client_key),
    ]);
    let mut client = vec![("security.protocol".to_string(), "SSL".to_string())];
    client.extend(tls.iter().cloned());
    let serve = Serve::start(
        "serve",
        &kafka.bootstrap(),
        &model(),
        dir.path(),
        &client_toml(&client),
    )?;
    serve.wait_ready(Duration::from_secs(120)).await?;

    // The fault 1 run, streamed by `forewarn simulate` over TLS with its
    // settings from the environment, as a container would get them.
    let out = Command::new(forewarn_bin())
        .args([
            "simulate",
            "--brokers",
            &kafka.bootstrap(),
            "--devices",
            "0",
        ])
        .arg("--replay")
        .arg(shared_data("tep/d01_te.dat"))
        .args(["--replay-device", "tep-fault-01", "--rate", "0"])
        .env("FOREWARN_KAFKA__CLIENT__SECURITY_PROTOCOL", "SSL")
        .env("FOREWARN_KAFKA__CLIENT__SSL_CA_LOCATION", &pki.ca)
        .env(
            "FOREWARN_KAFKA__CLIENT__SSL_CERTIFICATE_LOCATION",
            &pki.client_cert,
        )
        .env("FOREWARN_KAFKA__CLIENT__SSL_KEY_LOCATION", &pki.client_key)
        .output()?;
    assert!(
        out.status.success(),
        "simulate over TLS failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let rows = read_tep(&shared_data("tep/d01_te.dat"))?.len() as f64;
    eventually(
        "every reading accepted",
        Duration::from_secs(120),
        || async {
            Ok(
                (serve.metric("forewarn_readings_accepted_total").await? == Some(rows))
                    .then_some(()),
            )
        },
    )
    .await?;
    let alerts = eventually(
        "an alert for the fault run",
        Duration::from_secs(60),
        || async {
            let (_, body) =
                get_json(&format!("{}/api/v1/alerts?device=tep-fault-01", serve.api)).await?;
            let n = body["alerts"].as_array().map_or(0, Vec::len);
            Ok((n > 0).then_some(n))
        },
    )
    .await?;
    assert!(alerts >= 1);

    // The alerts topic, read back over TLS with the client certificate.
    assert!(
        found_on_topic(
            &kafka.bootstrap(),
            &client,
            "forewarn.alerts",
            4,
            "tep-fault-01"
        )
        .await?,
        "no alert for tep-fault-01 on forewarn.alerts"
    );

    // Without a client certificate the front refuses the handshake.
    let mut no_cert = vec![("security.protocol".to_string(), "SSL".to_string())];
    no_cert.push(("ssl.ca.location".into(), pki.ca.display().to_string()));
    let out = Command::new(forewarn_bin())
        .args([
            "simulate",
            "--brokers",
            &kafka.bootstrap(),
            "--devices",
            "1",
            "--count",
            "1",
        ])
        .args(
            no_cert
                .iter()
                .flat_map(|(k, v)| ["--client".to_string(), format!("{k}={v}")]),
        )
        .output()?;
    assert!(
        !out.status.success(),
        "a client without a certificate got in"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_password_is_one_clear_error_and_a_503() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let kafka = SecureBroker::start(dir.path(), false, true)?;
    let password = dir.path().join("kafka-password");
    std::fs::write(&password, "not-the-password\n")?;
    let client = kafka.client_properties("SCRAM-SHA-512", "forewarn", &password, &kafka.pki.ca);
    let mut serve = Serve::start(
        "serve",
        &kafka.bootstrap(),
        &model(),
        dir.path(),
        &client_toml(&client),
    )?;
    let reasons = wait_unready_because(&serve, "SASL authentication failed").await?;
    // It keeps running and answering, and says it once.
    tokio::time::sleep(Duration::from_secs(8)).await;
    let (live, _) = get_json(&format!("{}/livez", serve.api)).await?;
    assert_eq!(live, 200);
    assert_eq!(serve.readyz_status().await, Some(503));
    assert!(
        serve.proc.child.try_wait()?.is_none(),
        "serve exited:\n{}",
        serve.proc.log()
    );
    let log = serve.proc.log();
    let errors = connection_error_lines(&log);
    assert_eq!(errors.len(), 1, "{errors:#?}");
    assert!(
        errors[0].contains("SASL authentication failed"),
        "{}",
        errors[0]
    );
    assert!(!log.contains("panicked"), "{log}");
    assert!(!log.contains("not-the-password") && !reasons.contains("not-the-password"));

    // config check prints the settings with the secret masked.
    let inline = dir.path().join("inline.toml");
    std::fs::write(
        &inline,
        "[kafka.client]\n\"sasl.password\" = \"inline-secret-pw\"\n",
    )?;
    let out = Command::new(forewarn_bin())
        .args(["config", "check"])
        .arg(&inline)
        .output()?;
    let printed = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        printed.contains("****") && !printed.contains("inline-secret-pw"),
        "{printed}"
    );
    let out = Command::new(forewarn_bin())
        .args(["config", "check"])
        .arg(&serve.config)
        .output()?;
    let printed = String::from_utf8_lossy(&out.stdout);
    assert!(
        printed.contains(&password.display().to_string()),
        "{printed}"
    );
    assert!(!printed.contains("not-the-password"), "{printed}");
    serve.proc.terminate(Duration::from_secs(30))?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn untrusted_broker_certificate_is_one_clear_error_and_a_503() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let kafka = SecureBroker::start(dir.path(), false, false)?;
    let other = Pki::new(dir.path(), "other")?;
    let client = vec![
        ("security.protocol".to_string(), "SSL".to_string()),
        (
            "ssl.ca.location".to_string(),
            other.ca.display().to_string(),
        ),
    ];
    let mut serve = Serve::start(
        "serve",
        &kafka.bootstrap(),
        &model(),
        dir.path(),
        &client_toml(&client),
    )?;
    let reasons = wait_unready_because(&serve, "TLS handshake failed").await?;
    assert!(reasons.contains("certificate verify failed"), "{reasons}");
    tokio::time::sleep(Duration::from_secs(8)).await;
    assert_eq!(serve.readyz_status().await, Some(503));
    assert!(
        serve.proc.child.try_wait()?.is_none(),
        "serve exited:\n{}",
        serve.proc.log()
    );
    let log = serve.proc.log();
    let errors = connection_error_lines(&log);
    assert_eq!(errors.len(), 1, "{errors:#?}");
    assert!(
        errors[0].contains("certificate verify failed"),
        "{}",
        errors[0]
    );
    Ok(())
}
