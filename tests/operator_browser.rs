//! The alert console in a real browser: Debian's chromium, headless, driven
//! over the DevTools protocol against a running `forewarn serve`. The page
//! is loaded before any alert exists; a faulty TEP run is then streamed, and
//! the alert must appear through the live stream (SSE) with its diagnosis
//! (the likely fault, from a fault classifier), the device's score chart
//! must draw, and acknowledging from the page must reach the store.
//! A screenshot is saved to target/test-artifacts/operator_console.png.
//!
//! Needs `chromium` (scripts/browser-deps.sh, run by scripts/test.sh).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::{Context, bail};
use base64::Engine as _;
use forewarn_system_tests::*;
use futures::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;

const TOKEN: &str = "console-test-token-0123456789";

fn artifacts_dir() -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map_or_else(|| repo_root().join("target"), PathBuf::from);
    let dir = target.join("test-artifacts");
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn chromium() -> anyhow::Result<PathBuf> {
    for c in ["/usr/bin/chromium", "/usr/bin/chromium-browser"] {
        if Path::new(c).exists() {
            return Ok(c.into());
        }
    }
    bail!("chromium is not installed: run scripts/browser-deps.sh (scripts/test.sh does)")
}

/// A minimal DevTools-protocol client on one page target.
struct Cdp {
    ws: tokio_tungstenite::WebSocketStream<
        tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>,
    >,
    next_id: u64,
}

impl Cdp {
    /// Connects to the first page target of the browser on `port`.
    async fn connect(port: u16) -> anyhow::Result<Self> {
        let url = format!("http://127.0.0.1:{port}/json/list");
        let targets: Value = eventually("DevTools endpoint", Duration::from_secs(30), || async {
            let (status, v) = match get_json(&url).await {
                Ok(x) => x,
                Err(_) => return Ok(None),
            };
            Ok((status == 200
                && v.as_array()
                    .is_some_and(|a| a.iter().any(|t| t["type"] == "page")))
            .then_some(v))
        })
        .await?;
        let ws_url = targets
            .as_array()
            .unwrap()
            .iter()
            .find(|t| t["type"] == "page")
            .and_then(|t| t["webSocketDebuggerUrl"].as_str())
            .context("page target without a websocket URL")?
            .to_owned();
        let (ws, _) = tokio_tungstenite::connect_async(ws_url).await?;
        Ok(Self { ws, next_id: 0 })
    }

    async fn call(&mut self, method: &str, params: Value) -> anyhow::Result<Value> {
        self.next_id += 1;
        let id = self.next_id;
        let msg = json!({"id": id, "method": method, "params": params});
        self.ws.send(Message::Text(msg.to_string().into())).await?;
        loop {
            let m = tokio::time::timeout(Duration::from_secs(30), self.ws.next())
                .await
                .context("DevTools reply timed out")?
                .context("DevTools connection closed")??;
            let Message::Text(text) = m else { continue };
            let v: Value = serde_json::from_str(&text)?;
            if v["id"] == json!(id) {
                if let Some(e) = v.get("error") {
                    bail!("{method}: {e}");
                }
                return Ok(v["result"].clone());
            }
        }
    }

    /// Evaluates `expr` in the page and returns its JSON value.
    async fn eval(&mut self, expr: &str) -> anyhow::Result<Value> {
        let r = self
            .call(
                "Runtime.evaluate",
                json!({"expression": expr, "returnByValue": true, "awaitPromise": true}),
            )
            .await?;
        if let Some(ex) = r.get("exceptionDetails") {
            bail!("page exception in {expr}: {ex}");
        }
        Ok(r["result"]["value"].clone())
    }

    async fn wait_for(
        &mut self,
        what: &str,
        expr: &str,
        timeout: Duration,
    ) -> anyhow::Result<Value> {
        let start = std::time::Instant::now();
        loop {
            let v = self.eval(expr).await?;
            if !(v.is_null() || v == json!(false)) {
                return Ok(v);
            }
            if start.elapsed() > timeout {
                bail!("timed out after {timeout:?} waiting for {what} ({expr})");
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }

    async fn screenshot(&mut self, path: &Path) -> anyhow::Result<()> {
        let r = self
            .call("Page.captureScreenshot", json!({"format": "png"}))
            .await?;
        let png = base64::engine::general_purpose::STANDARD
            .decode(r["data"].as_str().context("no screenshot data")?)?;
        std::fs::write(path, png)?;
        Ok(())
    }
}

/// Headless chromium (its profile and log under `dir`) on the console at
/// `api`, once its live stream has connected: the browser process and a
/// DevTools client on the page.
async fn open_console(chromium: &Path, dir: &Path, api: &str) -> anyhow::Result<(Proc, Cdp)> {
    let cdp_port = free_port();
    let profile = dir.join("chromium-profile");
    std::fs::create_dir_all(&profile)?;
    let browser = spawn_logged(
        "chromium",
        Command::new(chromium)
            .args([
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-quic",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--window-size=1400,900",
                "--hide-scrollbars",
            ])
            .arg(format!("--user-data-dir={}", profile.display()))
            .arg(format!("--remote-debugging-port={cdp_port}"))
            .arg(format!("{api}/")),
        dir,
    )?;
    let mut cdp = Cdp::connect(cdp_port).await?;
    cdp.wait_for(
        "the live stream to connect",
        "document.getElementById('conn')?.className === 'live'",
        Duration::from_secs(30),
    )
    .await?;
    Ok((browser, cdp))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn console_shows_live_alerts_charts_scores_and_acknowledges() -> anyhow::Result<()> {
    let chromium = chromium()?;
    let dir = tempfile::tempdir()?;
    let broker = Broker::start(dir.path())?;
    let model = train_tep_model(dir.path())?;
    let classifier = train_tep_classifier(dir.path())?;
    let serve = Serve::start_with_env(
        "serve",
        &broker.bootstrap(),
        &model,
        dir.path(),
        &format!("tokens = [\"{TOKEN}\"]\n"),
        &[(
            "FOREWARN_MODEL__DIAGNOSIS",
            &classifier.display().to_string(),
        )],
    )?;
    serve.wait_ready(Duration::from_secs(60)).await?;

    // The page first, with nothing to show yet.
    let (_browser, mut cdp) = open_console(&chromium, dir.path(), &serve.api).await?;
    assert_eq!(
        cdp.eval("document.querySelectorAll('tr[data-alert-id]').length")
            .await?,
        json!(0)
    );

    // Now a fault: the alert must arrive through the stream.
    // Streamed in pieces, as a live plant would, so the device board sees
    // several flushes (the chart samples a score per flush).
    let fault = tep_messages("tep-fault-01", "tep/d01_te.dat");
    let normal = tep_messages("tep-normal", "tep/d00_te.dat");
    let producer = broker.producer();
    for (f, n) in fault.chunks(80).zip(normal.chunks(80)) {
        let mut piece = f.to_vec();
        piece.extend_from_slice(n);
        produce(&producer, "forewarn.readings", &piece).await?;
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let row = cdp
        .wait_for(
            "an alert row",
            "(() => { const r = document.querySelector('tr[data-alert-id]'); \
              return r && {id: r.dataset.alertId, device: r.dataset.device, \
                           source: r.dataset.source, text: r.innerText}; })()",
            Duration::from_secs(120),
        )
        .await?;
    assert_eq!(row["device"], "tep-fault-01", "{row}");
    assert_eq!(
        row["source"], "stream",
        "arrived live, not by reload: {row}"
    );
    let id = row["id"].as_str().unwrap().to_owned();
    let (status, alert) = get_json(&format!("{}/api/v1/alerts/{id}", serve.api)).await?;
    assert_eq!(status, 200);
    assert_eq!(alert["device"], "tep-fault-01");
    let text = row["text"].as_str().unwrap();
    let severity = alert["severity"].as_str().unwrap().to_uppercase(); // shown in capitals
    assert!(
        text.contains("tep-fault-01") && text.contains(&severity),
        "{text}"
    );
    assert!(
        text.contains(alert["model_version"].as_str().unwrap()),
        "{text}"
    );
    let top = alert["contributors"][0]["channel"].as_str().unwrap();
    assert!(text.contains(top), "top channel {top} shown: {text}");

    // The chart of that device's scores against its threshold.
    let points = cdp
        .wait_for(
            "the score chart",
            "document.getElementById('device').textContent === 'tep-fault-01' && \
             Number(document.getElementById('chart').dataset.points) >= 3 && \
             Number(document.getElementById('chart').dataset.points)",
            Duration::from_secs(30),
        )
        .await?;
    assert!(points.as_u64().unwrap() >= 3, "{points}");
    // A model without a grid draws no heat map and names no cell.
    assert_eq!(
        cdp.eval(
            "document.getElementById('heatmap').hidden && \
             !document.querySelector('tr[data-alert-id] .top-cell')"
        )
        .await?,
        json!(true)
    );

    // The likely fault: fault 1 in the row (once enough of the run has
    // streamed for the diagnosis to settle there) and the top 3 beside the
    // chart, as the API has them.
    let shown = cdp
        .wait_for(
            "the diagnosis in the row and beside the chart",
            &format!(
                "(() => {{ const c = document.querySelector('tr[data-alert-id=\"{id}\"] td.diagnosis'); \
                  const n = document.querySelectorAll('#diagnosis li').length; \
                  return c && c.dataset.diagnosisClass === '1' && n === 3 && c.innerText; }})()"
            ),
            Duration::from_secs(60),
        )
        .await?;
    assert!(shown.as_str().unwrap().contains("IDV(1)"), "{shown}");
    let (_, alert) = get_json(&format!("{}/api/v1/alerts/{id}", serve.api)).await?;
    assert_eq!(alert["diagnosis"]["top"][0]["class"], 1, "{alert}");

    // Acknowledge from the page with a token.
    cdp.eval(&format!(
        "(() => {{ const set = (i, v) => {{ const e = document.getElementById(i); e.value = v; \
            e.dispatchEvent(new Event('change')); }}; \
          set('user', 'console-op'); set('note', 'seen in the browser test'); set('token', '{TOKEN}'); \
          document.querySelector('tr[data-alert-id=\"{id}\"] button.ack-button').click(); \
          return true; }})()"
    ))
    .await?;
    cdp.wait_for(
        "the row to show the acknowledgement",
        &format!(
            "document.querySelector('tr[data-alert-id=\"{id}\"]')?.dataset.acknowledged === 'true'"
        ),
        Duration::from_secs(20),
    )
    .await?;
    let (_, alert) = get_json(&format!("{}/api/v1/alerts/{id}", serve.api)).await?;
    assert_eq!(alert["acknowledged_by"], "console-op", "{alert}");
    assert_eq!(alert["ack_note"], "seen in the browser test");
    let msg = cdp
        .eval("document.getElementById('msg').textContent")
        .await?;
    assert!(msg.as_str().unwrap().starts_with("Acknowledged"), "{msg}");

    let shot = artifacts_dir().join("operator_console.png");
    cdp.screenshot(&shot).await?;
    let len = std::fs::metadata(&shot)?.len();
    assert!(len > 10_000, "screenshot {} is {len} bytes", shot.display());
    eprintln!("screenshot: {}", shot.display());
    Ok(())
}

/// Issue 17: the console shows the error map of the open alert as a small
/// heat map. A forecaster with `[model] grid` (its alerts name cells) is
/// served; a simulated plate is published up to inside its hot-spot fault,
/// and no further once an alert is open, so the alert stays open on the
/// page. Selected, the alert's row draws the grid's rows x cols cells,
/// hottest where the API's top cell is. A screenshot is saved to
/// target/test-artifacts/operator_console_heatmap.png.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn console_draws_the_open_alerts_error_map_on_the_grid() -> anyhow::Result<()> {
    const DEVICE: &str = "plate-0000";
    let chromium = chromium()?;
    let dir = tempfile::tempdir()?;
    let broker = Broker::start(dir.path())?;
    let (rows, cols) = PLATE_GRID;
    let plates = simulate_plates(dir.path(), 1500, 3)?;
    let model = train_plate_forecaster(dir.path(), &plates.train)?;
    let serve = Serve::start("serve", &broker.bootstrap(), &model, dir.path(), "")?;
    serve.wait_ready(Duration::from_secs(60)).await?;
    let (_, models) = serve.get_json("/api/v1/models").await?;
    let grid = &models["models"][0]["grid"];
    assert_eq!(
        (&grid["rows"], &grid["cols"]),
        (&rows.into(), &cols.into()),
        "{models}"
    );

    // The page first: nothing selected, so no heat map.
    let (_browser, mut cdp) = open_console(&chromium, dir.path(), &serve.api).await?;
    assert_eq!(
        cdp.eval("document.getElementById('heatmap').hidden")
            .await?,
        json!(true)
    );

    // The plate up to the fault, then the fault in pieces until an alert is
    // open; never past the fault's end, so nothing resolves it.
    let test = PlateRows::read(&plates.test)?;
    let (_, fault_start, fault_end) = test.fault().expect("the test half carries a fault");
    let messages = test.messages(DEVICE);
    let (before, rest): (Vec<_>, Vec<_>) = test
        .rows
        .iter()
        .zip(messages)
        .filter(|(r, _)| r.ts <= fault_end)
        .partition(|(r, _)| r.ts < fault_start);
    let producer = broker.producer();
    let mut sent = 0;
    let mut open = None;
    for piece in std::iter::once(&before[..]).chain(rest.chunks(20)) {
        let piece: Vec<_> = piece.iter().map(|(_, m)| m.clone()).collect();
        produce(&producer, "forewarn.readings", &piece).await?;
        sent += piece.len();
        eventually("the readings consumed", Duration::from_secs(60), || async {
            Ok(
                (serve.metric("forewarn_readings_accepted_total").await? == Some(sent as f64))
                    .then_some(()),
            )
        })
        .await?;
        let (_, page) = serve
            .get_json(&format!("/api/v1/alerts?state=open&device={DEVICE}"))
            .await?;
        open = page["alerts"].as_array().and_then(|a| a.first()).cloned();
        if open.is_some() {
            break;
        }
    }
    let alert = match open {
        Some(a) => a,
        // The last piece's alert may reach the store a moment later.
        None => {
            eventually(
                "an open alert by the fault's end",
                Duration::from_secs(20),
                || async {
                    let (_, page) = serve
                        .get_json(&format!("/api/v1/alerts?state=open&device={DEVICE}"))
                        .await?;
                    Ok(page["alerts"].as_array().and_then(|a| a.first()).cloned())
                },
            )
            .await?
        }
    };
    let id = alert["id"].as_str().unwrap().to_owned();
    let top = &alert["cells"][0];
    let (top_row, top_col) = (
        top["row"]
            .as_u64()
            .unwrap_or_else(|| panic!("no cells: {alert}")),
        top["col"].as_u64().unwrap(),
    );
    eprintln!(
        "{sent} readings published; alert open since {}, top cell ({top_row}, {top_col}): {}",
        alert["opened_at"], alert["cells"]
    );

    // Its row, selected: the heat map of the alert's cells.
    cdp.wait_for(
        "the alert row",
        &format!("!!document.querySelector('tr[data-alert-id=\"{id}\"]')"),
        Duration::from_secs(60),
    )
    .await?;
    cdp.eval(&format!(
        "document.querySelector('tr[data-alert-id=\"{id}\"]').click(), true"
    ))
    .await?;
    let shown = cdp
        .wait_for(
            "the heat map of the open alert",
            &format!(
                "(() => {{ const h = document.getElementById('heatmap'); \
                  const r = document.querySelector('tr[data-alert-id=\"{id}\"]'); \
                  return !h.hidden && h.dataset.source === 'alert' && \
                    r.classList.contains('selected') && \
                    document.getElementById('device').textContent === '{DEVICE}' && \
                    {{rows: Number(h.dataset.rows), cols: Number(h.dataset.cols), \
                     top: [...r.querySelectorAll('.top-cell')].map(s => [Number(s.dataset.row), Number(s.dataset.col)]), \
                     cells: [...h.querySelectorAll('.hm-cell')].map(d => {{ \
                       const c = getComputedStyle(d).backgroundColor.match(/\\(([^)]*)\\)/)[1].split(','); \
                       return {{row: Number(d.dataset.row), col: Number(d.dataset.col), \
                               gap: d.dataset.gap === 'true', share: Number(d.dataset.share), \
                               alpha: c.length === 4 ? Number(c[3]) : 1, \
                               visible: d.getBoundingClientRect().width > 0}}; }})}}; }})()"
            ),
            Duration::from_secs(30),
        )
        .await?;
    assert_eq!(
        (&shown["rows"], &shown["cols"]),
        (&rows.into(), &cols.into()),
        "{shown}"
    );
    assert_eq!(
        shown["top"],
        json!([[top_row, top_col]]),
        "the row names the top cell: {shown}"
    );
    let cells = shown["cells"].as_array().unwrap();
    assert_eq!(cells.len(), rows * cols, "{shown}");
    let mut at: Vec<(u64, u64)> = cells
        .iter()
        .map(|c| (c["row"].as_u64().unwrap(), c["col"].as_u64().unwrap()))
        .collect();
    at.sort();
    let every: Vec<(u64, u64)> = (0..rows as u64)
        .flat_map(|r| (0..cols as u64).map(move |c| (r, c)))
        .collect();
    assert_eq!(at, every, "one cell per place on the grid: {shown}");
    assert!(
        cells
            .iter()
            .all(|c| c["gap"] == false && c["visible"] == true),
        "every plate cell has a sensor and is drawn: {shown}"
    );
    // The hottest cell drawn: the one at full colour, the alert's top cell.
    let alpha = |c: &Value| c["alpha"].as_f64().unwrap();
    let hottest = cells.iter().map(alpha).fold(0.0, f64::max);
    let at_hottest: Vec<(u64, u64)> = cells
        .iter()
        .filter(|c| alpha(c) == hottest)
        .map(|c| (c["row"].as_u64().unwrap(), c["col"].as_u64().unwrap()))
        .collect();
    assert_eq!(at_hottest, vec![(top_row, top_col)], "{shown}");
    assert!((hottest - 1.0).abs() < 1e-9, "{shown}");
    let drawn_share = cells
        .iter()
        .find(|c| (c["row"].as_u64(), c["col"].as_u64()) == (Some(top_row), Some(top_col)))
        .and_then(|c| c["share"].as_f64())
        .unwrap();
    assert!(
        (drawn_share - top["share"].as_f64().unwrap()).abs() < 1e-9,
        "{shown} vs {alert}"
    );
    // Only cells the alert names are coloured.
    let named: Vec<(u64, u64)> = alert["cells"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| (c["row"].as_u64().unwrap(), c["col"].as_u64().unwrap()))
        .collect();
    assert!(
        cells
            .iter()
            .filter(|c| alpha(c) > 0.0)
            .all(|c| named.contains(&(c["row"].as_u64().unwrap(), c["col"].as_u64().unwrap()))),
        "{shown} vs {alert}"
    );

    let shot = artifacts_dir().join("operator_console_heatmap.png");
    cdp.screenshot(&shot).await?;
    eprintln!("screenshot: {}", shot.display());
    Ok(())
}
