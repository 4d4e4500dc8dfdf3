//! Alert delivery through the webhook, end to end: `forewarn serve` with
//! `[webhook]` pointing at a local HTTPS receiver (axum over rustls, with a
//! certificate from a throwaway authority given as `webhook.ca_file`, the
//! bearer token read from `webhook.bearer_token_file`) that fails its first
//! requests; a faulty TEP run must reach the receiver, after retries, as an
//! Alertmanager-shaped firing alert, and keep being re-sent while open.
//! (Resolution, back-off timing and lag recovery are covered by the unit
//! test in crates/forewarn-api/src/webhook.rs.)

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use forewarn_core::reading::encode_reading;
use forewarn_system_tests::*;
use serde_json::Value;

const SAMPLE_MS: i64 = 180_000;
const T0: i64 = 1_767_225_600_000;

#[derive(Clone, Default)]
struct Receiver {
    bodies: Arc<Mutex<Vec<Value>>>,
    auth: Arc<Mutex<Vec<Option<String>>>>,
    refuse: Arc<Mutex<usize>>,
}

async fn receive(
    State(r): State<Receiver>,
    headers: HeaderMap,
    Json(body): Json<Value>,
) -> StatusCode {
    {
        let mut refuse = r.refuse.lock().unwrap();
        if *refuse > 0 {
            *refuse -= 1;
            return StatusCode::INTERNAL_SERVER_ERROR;
        }
    }
    r.auth.lock().unwrap().push(
        headers
            .get("authorization")
            .map(|v| v.to_str().unwrap().to_owned()),
    );
    r.bodies.lock().unwrap().push(body);
    StatusCode::OK
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alerts_reach_a_webhook_in_alertmanager_shape() -> anyhow::Result<()> {
    let recv = Receiver::default();
    *recv.refuse.lock().unwrap() = 2;
    let app = axum::Router::new()
        .route("/api/v2/alerts", axum::routing::post(receive))
        .with_state(recv.clone());
    let dir = tempfile::tempdir()?;
    let pki = Pki::new(dir.path(), "hook")?;
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    let hook = format!("https://{}/api/v2/alerts", listener.local_addr()?);
    let tls =
        axum_server::tls_rustls::RustlsConfig::from_config(Arc::new(pki.server_config(None)?));
    tokio::spawn(async move {
        axum_server::from_tcp_rustls(listener, tls)?
            .serve(app.into_make_service())
            .await
    });
    let token_file = dir.path().join("hook-token");
    std::fs::write(&token_file, "hook-secret\n")?;

    let broker = Broker::start(dir.path())?;
    let model = train_tep_model(dir.path())?;
    let serve = Serve::start(
        "serve",
        &broker.bootstrap(),
        &model,
        dir.path(),
        &format!(
            "[webhook]\nurl = \"{hook}\"\nresend_interval_ms = 1000\ninitial_backoff_ms = 100\n\
             ca_file = \"{}\"\nbearer_token_file = \"{}\"\nexternal_url = \"http://console.example:8080\"\n",
            pki.ca.display(),
            token_file.display()
        ),
    )?;
    serve.wait_ready(Duration::from_secs(60)).await?;

    let messages: Vec<(String, Vec<u8>)> = read_tep(&shared_data("tep/d01_te.dat"))?
        .iter()
        .enumerate()
        .map(|(i, row)| {
            (
                "tep-fault-01".to_string(),
                encode_reading("tep-fault-01", T0 + i as i64 * SAMPLE_MS, row),
            )
        })
        .collect();
    produce(&broker.producer(), "forewarn.readings", &messages).await?;

    let (status, page) = eventually(
        "an alert in the store",
        Duration::from_secs(120),
        || async {
            let (s, b) =
                get_json(&format!("{}/api/v1/alerts?device=tep-fault-01", serve.api)).await?;
            Ok((b["alerts"].as_array().is_some_and(|a| !a.is_empty())).then_some((s, b)))
        },
    )
    .await?;
    assert_eq!(status, 200);
    let first = &page["alerts"].as_array().unwrap().last().unwrap().clone();
    let id = first["id"].as_str().unwrap().to_owned();

    // Delivered after the receiver's two refusals, then re-sent.
    let sent = eventually(
        "two deliveries naming the alert",
        Duration::from_secs(30),
        || async {
            let bodies = recv.bodies.lock().unwrap().clone();
            let with: Vec<Value> = bodies
                .into_iter()
                .filter_map(|b| {
                    b.as_array()?
                        .iter()
                        .find(|a| a["labels"]["alert_id"] == id.as_str())
                        .cloned()
                })
                .collect();
            Ok((with.len() >= 2).then_some(with))
        },
    )
    .await?;
    let a = &sent[0];
    assert_eq!(a["labels"]["alertname"], "ForewarnAnomaly");
    assert_eq!(a["labels"]["device"], "tep-fault-01");
    assert_eq!(a["labels"]["model"], "tep");
    assert_eq!(a["labels"]["model_version"], first["model_version"]);
    assert_eq!(a["labels"]["severity"], first["severity"]);
    assert_eq!(
        a["generatorURL"],
        format!("http://console.example:8080/?alert={id}")
    );
    let starts: chrono::DateTime<chrono::Utc> = a["startsAt"].as_str().unwrap().parse()?;
    assert_eq!(
        starts.timestamp_millis(),
        first["opened_at"].as_i64().unwrap()
    );
    assert!(
        a["annotations"]["summary"]
            .as_str()
            .unwrap()
            .contains("tep-fault-01")
    );
    // Same labels on every send: one alert for the receiver.
    assert_eq!(sent[1]["labels"], a["labels"]);
    assert!(
        recv.auth
            .lock()
            .unwrap()
            .iter()
            .all(|h| h.as_deref() == Some("Bearer hook-secret"))
    );
    assert!(
        serve
            .metric(r#"forewarn_webhook_requests_total{outcome="error"}"#)
            .await?
            .unwrap()
            >= 2.0
    );
    Ok(())
}
