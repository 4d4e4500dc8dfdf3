//! The operator API against a running `forewarn serve`: model hot reload
//! (HTTP and SIGHUP; a broken model is rejected and the old one kept),
//! alerts carrying the new model version, acknowledgement with a token,
//! the OpenAPI document and the `forewarn openapi` / `config check`
//! commands.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use forewarn_system_tests::*;
use serde_json::{Value, json};

const TOKEN: &str = "operator-api-test-token-42";

async fn post(url: &str, token: Option<&str>, body: Value) -> anyhow::Result<(u16, Value)> {
    let mut req = reqwest::Client::new().post(url).json(&body);
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    let resp = req.send().await?;
    let status = resp.status().as_u16();
    let text = resp.text().await?;
    Ok((
        status,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    ))
}

async fn model_version(api: &str) -> anyhow::Result<String> {
    let (_, m) = get_json(&format!("{api}/api/v1/models")).await?;
    Ok(m["models"][0]["version"].as_str().unwrap().to_owned())
}

/// A TEP model unlike `train_tep_model`'s (another hidden size: other
/// weights, other version; `extra` train flags), same channels.
fn train_other(dir: &Path, hidden: &str, extra: &[&str]) -> anyhow::Result<std::path::PathBuf> {
    let mut args = vec![
        "--name", "tep", "--hidden", hidden, "--epochs", "40", "--device", "cpu",
    ];
    args.extend_from_slice(extra);
    Ok(train_tep(dir, &args)?.0)
}

fn copy_model(from: &Path, to: &Path) {
    for f in ["model.json", "model.safetensors"] {
        std::fs::copy(from.join(f), to.join(f)).unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hot_reload_acknowledge_and_openapi() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let broker = Broker::start(dir.path())?;
    std::fs::create_dir_all(dir.path().join("a"))?;
    std::fs::create_dir_all(dir.path().join("b"))?;
    let model = train_tep_model(&dir.path().join("a"))?;
    let other = train_other(&dir.path().join("b"), "24", &[])?;
    let serve = Serve::start(
        "serve",
        &broker.bootstrap(),
        &model,
        dir.path(),
        &format!("tokens = [\"{TOKEN}\"]\n[log]\nformat = \"json\"\n"),
    )?;
    serve.wait_ready(Duration::from_secs(60)).await?;
    let api = serve.api.clone();
    let v1 = model_version(&api).await?;
    let reload = format!("{api}/api/v1/models/reload");

    // Reload needs the token.
    let (status, err) = post(&reload, None, json!({})).await?;
    assert_eq!(status, 401, "{err}");

    // A broken artifact is rejected; the running model stays.
    let json_path = model.join("model.json");
    let good_json = std::fs::read(&json_path)?;
    std::fs::write(&json_path, b"{\"not\": \"a model\"}")?;
    let (status, err) = post(&reload, Some(TOKEN), json!({})).await?;
    assert_eq!(status, 422, "{err}");
    assert_eq!(err["error"]["code"], "model_rejected");
    assert_eq!(model_version(&api).await?, v1);
    assert_eq!(
        serve
            .metric(r#"forewarn_model_reloads_total{outcome="rejected"}"#)
            .await?,
        Some(1.0)
    );
    std::fs::write(&json_path, good_json)?;

    // A different model (same channels) is swapped in while serving.
    copy_model(&other, &model);
    let (status, body) = post(&reload, Some(TOKEN), json!({})).await?;
    assert_eq!(status, 200, "{body}");
    let v2 = body["model"]["version"].as_str().unwrap().to_owned();
    assert_ne!(v1, v2);
    assert_eq!(body["previous"]["version"], v1.as_str());
    assert_eq!(model_version(&api).await?, v2);
    let info = format!(r#"forewarn_model_info{{model="tep",version="{v2}"}}"#);
    assert_eq!(serve.metric(&info).await?, Some(1.0));
    let old_info = format!(r#"forewarn_model_info{{model="tep",version="{v1}"}}"#);
    assert_eq!(serve.metric(&old_info).await?, None);

    // Alerts raised after the reload carry the new version.
    produce(
        &broker.producer(),
        "forewarn.readings",
        &tep_messages("tep-fault-01", "tep/d01_te.dat"),
    )
    .await?;
    let alert = eventually("an alert", Duration::from_secs(120), || async {
        let (_, b) = get_json(&format!("{api}/api/v1/alerts?device=tep-fault-01")).await?;
        Ok(b["alerts"].as_array().and_then(|a| a.first().cloned()))
    })
    .await?;
    assert_eq!(alert["model_version"], v2.as_str(), "{alert}");
    let (_, dev) = get_json(&format!("{api}/api/v1/devices/tep-fault-01")).await?;
    assert_eq!(dev["model_version"], v2.as_str());

    // SIGHUP reloads too, here to a model of another kind (same
    // channels): the autoencoder with its cross-channel highway, run by
    // the same engine stage.
    let first = train_other(
        &dir.path().join("a2"),
        "16",
        &["--kind", "autoencoder", "--highway", "cross"],
    )?;
    let meta: Value = serde_json::from_slice(&std::fs::read(first.join("model.json"))?)?;
    assert_eq!(meta["highway"], "cross", "{meta}");
    copy_model(&first, &model);
    signal(serve.proc.child.id(), "-HUP")?;
    eventually("the SIGHUP reload", Duration::from_secs(30), || async {
        Ok((serve
            .metric(r#"forewarn_model_reloads_total{outcome="ok"}"#)
            .await?
            == Some(2.0))
        .then_some(()))
    })
    .await?;
    assert_ne!(model_version(&api).await?, v2);
    let (_, m) = get_json(&format!("{api}/api/v1/models")).await?;
    assert_eq!(m["models"][0]["kind"], "autoencoder", "{m}");
    // The swapped-in autoencoder scores readings and alerts on a fault.
    produce(
        &broker.producer(),
        "forewarn.readings",
        &tep_messages("tep-fault-06", "tep/d06_te.dat"),
    )
    .await?;
    let v3 = model_version(&api).await?;
    let ae_alert = eventually(
        "an alert of the autoencoder",
        Duration::from_secs(120),
        || async {
            let (_, b) = get_json(&format!("{api}/api/v1/alerts?device=tep-fault-06")).await?;
            Ok(b["alerts"].as_array().and_then(|a| a.first().cloned()))
        },
    )
    .await?;
    assert_eq!(ae_alert["model_version"], v3.as_str(), "{ae_alert}");

    // Acknowledge with the token; filters see it.
    let id = alert["id"].as_str().unwrap();
    let ack = format!("{api}/api/v1/alerts/{id}/ack");
    let (status, _) = post(&ack, Some("wrong-token-wrong-token"), json!({"user": "op"})).await?;
    assert_eq!(status, 401);
    let (status, body) = post(&ack, Some(TOKEN), json!({"user": "op", "note": "valve"})).await?;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        (&body["acknowledged_by"], &body["ack_note"]),
        (&json!("op"), &json!("valve"))
    );
    let (_, page) = get_json(&format!("{api}/api/v1/alerts?acknowledged=true")).await?;
    assert_eq!(page["alerts"][0]["id"], id);
    // JSON logs carry the alert and device ids as fields.
    let log = serve.proc.log();
    let lines: Vec<Value> = log
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    for message in ["alert opened", "alert acknowledged"] {
        let line = lines
            .iter()
            .find(|l| l["message"] == message && l["alert_id"] == id)
            .unwrap_or_else(|| panic!("no JSON log line {message:?} for {id}:\n{log}"));
        assert_eq!(line["device"], "tep-fault-01", "{line}");
    }

    // The OpenAPI document, served and printed.
    let (status, doc) = get_json(&format!("{api}/api/v1/openapi.json")).await?;
    assert_eq!(status, 200);
    let printed = Command::new(forewarn_bin()).arg("openapi").output()?;
    assert!(printed.status.success());
    let printed: Value = serde_json::from_slice(&printed.stdout)?;
    assert_eq!(printed, doc);
    assert!(doc["paths"]["/api/v1/models/reload"]["post"].is_object());

    // config check prints the effective config, env overrides included.
    let out = Command::new(forewarn_bin())
        .args(["config", "check"])
        .arg(&serve.config)
        .env("FOREWARN_HTTP__READ_REQUIRES_TOKEN", "true")
        .output()?;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout)?;
    assert!(text.contains("read_requires_token = true"), "{text}");
    assert!(
        text.contains("[webhook]") && text.contains("resend_interval_ms = 60000"),
        "{text}"
    );
    Ok(())
}
