//! Guarantee 5: alerts from all instances are queryable in one place. Two
//! `forewarn serve` instances in one consumer group share one PostgreSQL
//! alert store (`FOREWARN_STORE__URL`); faulty TEP runs are streamed, each
//! instance processes the devices of its partitions, and both list every
//! alert over `/api/v1/alerts`. An acknowledgement made through one
//! instance is seen through the other. Both start before the database and
//! wait for it; neither logs the password.

use std::collections::BTreeSet;
use std::time::Duration;

use forewarn_system_tests::*;
use serde_json::{Value, json};

const TOKEN: &str = "postgres-store-test-token";
/// Ignored by the test cluster (trust authentication), so it is never sent,
/// but it is in the URL both instances are given: it must not be logged.
const PASSWORD: &str = "not-for-logs-8c1f";
/// TEP runs whose fault the small test model catches.
const FAULTS: [u32; 8] = [1, 2, 4, 6, 7, 8, 13, 18];

/// Every alert an instance lists, walking all pages.
async fn all_alerts(api: &str) -> anyhow::Result<Vec<Value>> {
    let mut out = Vec::new();
    let mut cursor = String::new();
    loop {
        let (status, page) = get_json(&format!(
            "{api}/api/v1/alerts?limit=5&sort=opened_at{cursor}"
        ))
        .await?;
        anyhow::ensure!(status == 200, "{api}: {status} {page}");
        out.extend(page["alerts"].as_array().cloned().unwrap_or_default());
        match page["next_cursor"].as_str() {
            Some(c) => cursor = format!("&cursor={c}"),
            None => return Ok(out),
        }
    }
}

fn ids(alerts: &[Value]) -> Vec<String> {
    alerts
        .iter()
        .map(|a| a["id"].as_str().unwrap().to_owned())
        .collect()
}

/// Devices an instance has processed (its own partitions' devices).
async fn devices(api: &str) -> anyhow::Result<BTreeSet<String>> {
    let (_, body) = get_json(&format!("{api}/api/v1/devices")).await?;
    Ok(body["devices"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|d| d["device"].as_str().map(str::to_owned))
        .collect())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_instances_share_one_postgres_alert_store() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let broker = Broker::start(dir.path())?;
    let model = train_tep_model(dir.path())?;

    // Both instances are told a database that is not up yet.
    let port = forewarn_store::testing::free_port().map_err(anyhow::Error::msg)?;
    let url = format!("postgres://forewarn:{PASSWORD}@127.0.0.1:{port}/postgres");
    let extra = format!("tokens = [\"{TOKEN}\"]\n");
    let env = [("FOREWARN_STORE__URL", url.as_str())];
    let mut a = Serve::start_with_env(
        "serve-a",
        &broker.bootstrap(),
        &model,
        dir.path(),
        &extra,
        &env,
    )?;
    let mut b = Serve::start_with_env(
        "serve-b",
        &broker.bootstrap(),
        &model,
        dir.path(),
        &extra,
        &env,
    )?;
    eventually(
        "both waiting for the store",
        Duration::from_secs(60),
        || async {
            Ok([&a, &b]
                .iter()
                .all(|s| s.proc.log().contains("alert store not reachable yet"))
                .then_some(()))
        },
    )
    .await?;
    let cluster = PgCluster::start_on_port(port).map_err(anyhow::Error::msg)?;
    a.wait_ready(Duration::from_secs(90)).await?;
    b.wait_ready(Duration::from_secs(90)).await?;

    // Stream the faulty runs, one device each.
    let mut messages = Vec::new();
    for n in FAULTS {
        messages.extend(tep_messages(
            &format!("tep-fault-{n:02}"),
            &format!("tep/d{n:02}_te.dat"),
        ));
    }
    let total = messages.len() as f64;
    produce(&broker.producer(), "forewarn.readings", &messages).await?;
    eventually(
        "all readings processed",
        Duration::from_secs(180),
        || async {
            let mut sum = 0.0;
            for s in [&a, &b] {
                sum += s
                    .metric("forewarn_readings_accepted_total")
                    .await?
                    .unwrap_or(0.0);
            }
            Ok((sum >= total).then_some(()))
        },
    )
    .await?;

    // Both list the same alerts, fault 1's among them, whichever instance
    // wrote them.
    let listed = eventually(
        "both list the same alerts",
        Duration::from_secs(30),
        || async {
            let (la, lb) = (all_alerts(&a.api).await?, all_alerts(&b.api).await?);
            Ok((!la.is_empty() && ids(&la) == ids(&lb)).then_some(la))
        },
    )
    .await?;
    let listed_devices: BTreeSet<String> = listed
        .iter()
        .map(|a| a["device"].as_str().unwrap().to_owned())
        .collect();
    assert!(
        listed_devices.contains("tep-fault-01"),
        "{listed_devices:?}"
    );
    let (da, db) = (devices(&a.api).await?, devices(&b.api).await?);
    eprintln!("serve-a devices: {da:?}\nserve-b devices: {db:?}\nalerts: {listed_devices:?}");
    // Each instance processed some devices (the consumer group split the
    // partitions), and alerts of both instances' devices are listed by both.
    for own in [&da, &db] {
        assert!(
            listed_devices.iter().any(|d| own.contains(d)),
            "no alert from one instance's devices {own:?}: {listed_devices:?}"
        );
    }
    // Filters run in the database too.
    let (_, one) = get_json(&format!("{}/api/v1/alerts?device=tep-fault-01", b.api)).await?;
    let fault_1: Vec<Value> = listed
        .iter()
        .filter(|a| a["device"] == "tep-fault-01")
        .cloned()
        .collect();
    let mut got = ids(one["alerts"].as_array().unwrap());
    got.sort();
    let mut want = ids(&fault_1);
    want.sort();
    assert_eq!(got, want);

    // Acknowledged through the instance that did not write it, seen through
    // the one that did.
    let alert = &fault_1[0];
    let id = alert["id"].as_str().unwrap();
    let (writer, other) = if da.contains("tep-fault-01") {
        (&a, &b)
    } else {
        (&b, &a)
    };
    let resp = reqwest::Client::new()
        .post(format!("{}/api/v1/alerts/{id}/ack", other.api))
        .bearer_auth(TOKEN)
        .json(&json!({"user": "op", "note": "seen from the other instance"}))
        .send()
        .await?;
    assert_eq!(resp.status().as_u16(), 200);
    let (status, got) = get_json(&format!("{}/api/v1/alerts/{id}", writer.api)).await?;
    assert_eq!(status, 200, "{got}");
    assert_eq!(
        (&got["acknowledged"], &got["acknowledged_by"]),
        (&json!(true), &json!("op"))
    );

    // An error a retry cannot fix ends serve at once, with the reason.
    let bad_url = format!("postgres://forewarn:{PASSWORD}@127.0.0.1:{port}/no_such_db");
    let mut c = Serve::start_with_env(
        "serve-c",
        &broker.bootstrap(),
        &model,
        dir.path(),
        "",
        &[("FOREWARN_STORE__URL", bad_url.as_str())],
    )?;
    let status = eventually("serve-c to exit", Duration::from_secs(60), || {
        let exited = c.proc.child.try_wait();
        async move { Ok(exited?) }
    })
    .await?;
    let log = c.proc.log();
    assert!(!status.success(), "{log}");
    assert!(
        log.contains("no_such_db") && log.contains("does not exist"),
        "{log}"
    );
    assert!(!log.contains(PASSWORD), "{log}");

    // The rows are in Postgres, once each.
    let rows = cluster
        .psql("postgres", "SELECT count(*) FROM forewarn_alerts")
        .map_err(anyhow::Error::msg)?;
    assert_eq!(rows, listed.len().to_string());

    for s in [&mut a, &mut b] {
        let status = s.proc.terminate(Duration::from_secs(20))?;
        assert!(status.success(), "{} exited with {status}", s.proc.name);
        let log = s.proc.log();
        assert!(
            !log.contains(PASSWORD),
            "{} logged the password",
            s.proc.name
        );
        assert!(log.contains("forewarn:***@127.0.0.1"), "{log}");
    }
    drop(cluster);
    Ok(())
}

/// The alert store over TLS: `sslmode=verify-full` against a server whose
/// certificate comes from a throwaway authority connects, migrates and
/// reads over an encrypted connection; the wrong authority, or TLS asked
/// of a server without it, is refused at once with a clear error (not
/// retried as if the server were starting).
#[test]
fn store_over_tls_checks_the_server_certificate() -> anyhow::Result<()> {
    use forewarn_store::{AlertStore, StoreError};
    let dir = tempfile::tempdir()?;
    let pki = Pki::new(dir.path(), "pg")?;
    let cluster =
        PgCluster::start_tls(&pki.server_cert, &pki.server_key).map_err(anyhow::Error::msg)?;
    let base = cluster.create_database();
    let verified = format!(
        "{base}?sslmode=verify-full&sslrootcert={}",
        pki.ca.display()
    );
    let store = AlertStore::connect(&verified)?;
    assert_eq!(store.count_open()?, 0);
    let encrypted = cluster
        .psql(
            "postgres",
            "SELECT count(*) FROM pg_stat_ssl s JOIN pg_stat_activity a USING (pid) \
             WHERE s.ssl AND a.application_name = 'forewarn'",
        )
        .map_err(anyhow::Error::msg)?;
    assert!(
        encrypted.trim().parse::<u32>()? >= 1,
        "no TLS connection from the store: {encrypted}"
    );
    drop(store);
    // require: encrypted, certificate not checked (libpq's meaning).
    AlertStore::connect(&format!("{base}?sslmode=require"))?.count_open()?;

    let other = Pki::new(dir.path(), "other")?;
    let wrong = format!(
        "{base}?sslmode=verify-full&sslrootcert={}",
        other.ca.display()
    );
    let err = AlertStore::connect(&wrong).unwrap_err();
    assert!(matches!(err, StoreError::Connect { .. }), "{err}");
    assert!(!err.is_transient(), "{err}");
    let text = err.to_string();
    assert!(
        text.contains("TLS") && text.contains("UnknownIssuer"),
        "{text}"
    );

    let plain = PgCluster::shared();
    let err =
        AlertStore::connect(&format!("{}?sslmode=require", plain.url("postgres"))).unwrap_err();
    assert!(!err.is_transient(), "{err}");
    assert!(err.to_string().contains("TLS"), "{err}");
    Ok(())
}
