use std::sync::RwLock;

use super::*;
use axum::http::{HeaderMap, Method};
use forewarn_core::alert::alert_id;
use forewarn_core::engine::DeviceView;
use forewarn_core::{
    Alert, AlertState, ChannelShare, ClassProbability, Diagnosis, GridCell, Severity,
};
use forewarn_store::{AlertChange, AlertStore};
use forewarn_telemetry::Health;
use serde_json::{Value, json};
use tower::ServiceExt;

fn alert(device: &str, opened_at: i64, severity: Severity, resolved_at: Option<i64>) -> Alert {
    Alert {
        id: alert_id(device, "v1", opened_at - 10),
        device: device.into(),
        model: "lstm".into(),
        model_version: "v1".into(),
        state: if resolved_at.is_some() {
            AlertState::Resolved
        } else {
            AlertState::Open
        },
        severity,
        opened_at,
        resolved_at,
        score: 2.0,
        peak_score: 2.0,
        threshold: 1.0,
        contributors: vec![ChannelShare {
            channel: "flow".into(),
            share: 1.0,
        }],
        window_start: opened_at - 10,
        window_end: opened_at,
        diagnosis: None,
        cells: vec![],
    }
}

/// The alert as a model with a grid raises it: its contributor's cell.
fn with_cells(mut a: Alert) -> Alert {
    a.cells = vec![GridCell {
        row: 3,
        col: 4,
        channel: "flow".into(),
        share: 1.0,
    }];
    a
}

/// A fault classifier's diagnosis: IDV(6) most likely.
fn diagnosis() -> Diagnosis {
    let class = |class: u8, name: &str, probability: f64| ClassProbability {
        class,
        name: name.into(),
        probability,
    };
    Diagnosis {
        classifier: "tep-faults".into(),
        classifier_version: "9f2c".into(),
        top: vec![
            class(6, "IDV(6) A feed loss (step)", 0.91),
            class(7, "IDV(7) C header pressure loss (step)", 0.05),
            class(0, "normal", 0.02),
        ],
        windows: 4,
    }
}

/// Stores `diagnosis()` on the fixture's open alert `f.alerts[i]`; returns
/// the alert as diagnosed.
fn diagnose(f: &Fixture, i: usize) -> Alert {
    let mut a = f.alerts[i].clone();
    assert_eq!(a.state, AlertState::Open);
    a.diagnosis = Some(diagnosis());
    f.state
        .store
        .apply(&[AlertChange::Diagnosed(a.clone())])
        .unwrap();
    a
}

const TOKEN: &str = "s3cret-token";

/// 2026-11-28T12:00:00Z in epoch ms.
const T0: i64 = 1_795_867_200_000;

struct Fixture {
    state: AppState,
    app: Router,
    alerts: Vec<Alert>,
}

fn fixture() -> Fixture {
    let store = AlertStore::open_in_memory().unwrap();
    let alerts = vec![
        alert("pump-1", T0, Severity::Warning, Some(T0 + 500)),
        alert("pump-2", T0 + 1_000, Severity::Critical, None),
        with_cells(alert("pump-1", T0 + 2_000, Severity::Warning, None)),
        alert("fan-9", T0 + 3_000, Severity::Critical, Some(T0 + 3_500)),
        alert("pump-1", T0 + 4_000, Severity::Critical, None),
    ];
    let changes: Vec<_> = alerts
        .iter()
        .map(|a| match a.state {
            AlertState::Open => AlertChange::Opened(a.clone()),
            AlertState::Resolved => AlertChange::Resolved(a.clone()),
        })
        .collect();
    store.apply(&changes).unwrap();
    let metrics = Arc::new(Metrics::new());
    let devices = Arc::new(DeviceBoard::new());
    devices.update(["pump-1", "pump-2", "fan-9"].map(|id| {
        DeviceSnapshot::from_view(
            DeviceView {
                device: id.into(),
                readings: 10,
                window_fill: 4,
                window_capacity: 8,
                last_ts: Some(T0),
                last_score: Some(0.5),
                last_threshold: None,
                last_shares: vec![],
                open_alert: None,
                warmed_up: true,
            },
            "lstm",
            "v1",
            1.0,
        )
    }));
    let mut state = AppState::new(
        Arc::new(store),
        devices,
        Arc::new(Health::with_metrics(&metrics)),
        metrics,
        Arc::new(RwLock::new(Some(ModelInfo {
            name: "lstm".into(),
            version: "v1".into(),
            kind: "forecaster".into(),
            channels: vec!["pressure".into(), "flow".into()],
            context: vec![],
            members: 1,
            horizon: 10,
            window: 100,
            threshold: 1.0,
            strategy: "fixed".into(),
            device: "cpu".into(),
            diagnosis: None,
            grid: None,
        }))),
    );
    state.auth = Arc::new(Auth::new([TOKEN, "second-token"], false));
    Fixture {
        app: router(state.clone()),
        state,
        alerts,
    }
}

async fn call(
    app: &Router,
    method: Method,
    uri: &str,
    body: Body,
) -> (StatusCode, HeaderMap, Vec<u8>) {
    let req = Request::builder()
        .method(method)
        .uri(uri)
        .body(body)
        .unwrap();
    let resp = app.clone().oneshot(req).await.unwrap();
    let (parts, body) = resp.into_parts();
    let bytes = axum::body::to_bytes(body, usize::MAX).await.unwrap();
    (parts.status, parts.headers, bytes.to_vec())
}

async fn get_json(app: &Router, uri: &str) -> (StatusCode, Value) {
    let (status, headers, body) = call(app, Method::GET, uri, Body::empty()).await;
    assert_eq!(
        headers.get(header::CONTENT_TYPE).unwrap(),
        "application/json",
        "{uri}"
    );
    (status, serde_json::from_slice(&body).unwrap())
}

fn ids(v: &Value) -> Vec<String> {
    v["alerts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["id"].as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test]
async fn alert_filters() {
    let f = fixture();
    let id = |i: usize| f.alerts[i].id.clone();
    let cases: Vec<(&str, Vec<String>)> = vec![
        ("/api/v1/alerts", vec![id(4), id(3), id(2), id(1), id(0)]),
        ("/api/v1/alerts?device=pump-1", vec![id(4), id(2), id(0)]),
        ("/api/v1/alerts?state=open", vec![id(4), id(2), id(1)]),
        ("/api/v1/alerts?state=resolved", vec![id(3), id(0)]),
        (
            "/api/v1/alerts?severity=critical&state=open",
            vec![id(4), id(1)],
        ),
        (
            "/api/v1/alerts?from=2026-11-28T12:00:01Z&to=2026-11-28T12:00:04Z",
            vec![id(3), id(2), id(1)],
        ),
        (
            "/api/v1/alerts?from=2026-11-28T13:00:01%2B01:00&to=1795867203000",
            vec![id(2), id(1)],
        ),
        ("/api/v1/alerts?device=nobody", vec![]),
    ];
    for (uri, want) in cases {
        let (status, body) = get_json(&f.app, uri).await;
        assert_eq!(status, StatusCode::OK, "{uri}: {body}");
        assert_eq!(ids(&body), want, "{uri}");
        assert_eq!(body["next_cursor"], Value::Null, "{uri}");
    }
    // Alerts serialise as the core type does, plus the acknowledgement.
    let (_, body) = get_json(&f.app, "/api/v1/alerts?device=fan-9").await;
    let mut want = serde_json::to_value(&f.alerts[3]).unwrap();
    want["acknowledged"] = json!(false);
    for k in ["acknowledged_at", "acknowledged_by", "ack_note"] {
        want[k] = Value::Null;
    }
    assert_eq!(body["alerts"][0], want);
}

#[tokio::test]
async fn alerts_carry_their_diagnosis_when_stored_and_omit_the_key_otherwise() {
    let f = fixture();
    let diagnosed = diagnose(&f, 2);
    let want = json!({
        "classifier": "tep-faults",
        "classifier_version": "9f2c",
        "top": [
            {"class": 6, "name": "IDV(6) A feed loss (step)", "probability": 0.91},
            {"class": 7, "name": "IDV(7) C header pressure loss (step)", "probability": 0.05},
            {"class": 0, "name": "normal", "probability": 0.02},
        ],
        "windows": 4,
    });
    let (status, one) = get_json(&f.app, &format!("/api/v1/alerts/{}", diagnosed.id)).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(one["diagnosis"], want);
    assert_eq!(
        one,
        serde_json::to_value(forewarn_store::AlertRecord::from(diagnosed.clone())).unwrap()
    );
    let (_, other) = get_json(&f.app, &format!("/api/v1/alerts/{}", f.alerts[1].id)).await;
    assert!(other.get("diagnosis").is_none(), "{other}");
    let (_, page) = get_json(&f.app, "/api/v1/alerts").await;
    for a in page["alerts"].as_array().unwrap() {
        if a["id"] == diagnosed.id.as_str() {
            assert_eq!(a["diagnosis"], want);
        } else {
            assert!(a.get("diagnosis").is_none(), "{a}");
        }
    }
}

#[tokio::test]
async fn alerts_carry_their_cells_when_the_model_has_a_grid_and_omit_the_key_otherwise() {
    let f = fixture();
    let want = json!([{"row": 3, "col": 4, "channel": "flow", "share": 1.0}]);
    // (alert, its cells in the API: null = no key)
    let cases = [(&f.alerts[2], want.clone()), (&f.alerts[1], Value::Null)];
    for (a, cells) in cases {
        let (status, one) = get_json(&f.app, &format!("/api/v1/alerts/{}", a.id)).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(one.get("cells").cloned().unwrap_or(Value::Null), cells);
    }
    let (_, page) = get_json(&f.app, "/api/v1/alerts").await;
    let listed: Vec<bool> = page["alerts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a.get("cells") == Some(&want))
        .collect();
    assert_eq!(listed.iter().filter(|c| **c).count(), 1, "{page}");
}

#[tokio::test]
async fn models_show_their_grid_only_when_they_have_one() {
    let f = fixture();
    let (_, body) = get_json(&f.app, "/api/v1/models").await;
    assert!(body["models"][0].get("grid").is_none(), "{body}");
    let layout = forewarn_core::GridLayout::from_cells(
        2,
        2,
        &[Some("pressure".into()), None, None, Some("flow".into())],
    )
    .unwrap();
    f.state.model.write().unwrap().as_mut().unwrap().grid = Some(ModelGrid::from(&layout));
    let (_, body) = get_json(&f.app, "/api/v1/models").await;
    assert_eq!(
        body["models"][0]["grid"],
        json!({"rows": 2, "cols": 2, "layout": [["pressure", null], [null, "flow"]]})
    );
}

#[tokio::test]
async fn alert_pagination() {
    let f = fixture();
    let mut got = Vec::new();
    let mut uri = "/api/v1/alerts?limit=2".to_owned();
    let mut pages = 0;
    loop {
        let (status, body) = get_json(&f.app, &uri).await;
        assert_eq!(status, StatusCode::OK);
        got.extend(ids(&body));
        pages += 1;
        match body["next_cursor"].as_str() {
            Some(c) => uri = format!("/api/v1/alerts?limit=2&cursor={c}"),
            None => break,
        }
    }
    assert_eq!(pages, 3);
    let want: Vec<String> = f.alerts.iter().rev().map(|a| a.id.clone()).collect();
    assert_eq!(got, want);
}

#[tokio::test]
async fn single_alert_and_404s() {
    let f = fixture();
    let a = &f.alerts[1];
    let (status, body) = get_json(&f.app, &format!("/api/v1/alerts/{}", a.id)).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        body,
        serde_json::to_value(forewarn_store::AlertRecord::from(a.clone())).unwrap()
    );

    let not_found: &[(&str, &str)] = &[
        (
            "/api/v1/alerts/0000",
            r#"{"error":{"code":"not_found","message":"alert \"0000\" not found"}}"#,
        ),
        (
            "/api/v1/devices/pump-404",
            r#"{"error":{"code":"not_found","message":"device \"pump-404\" not found"}}"#,
        ),
        (
            "/api/v2/nothing",
            r#"{"error":{"code":"not_found","message":"no route for /api/v2/nothing"}}"#,
        ),
        (
            "/index.html",
            r#"{"error":{"code":"not_found","message":"no route for /index.html"}}"#,
        ),
    ];
    for (uri, want) in not_found {
        let (status, body) = get_json(&f.app, uri).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{uri}");
        assert_eq!(body, serde_json::from_str::<Value>(want).unwrap(), "{uri}");
    }
}

#[tokio::test]
async fn each_bad_parameter_is_a_400_naming_it() {
    let f = fixture();
    let cases: &[(&str, &str)] = &[
        ("/api/v1/alerts?limit=0", "limit"),
        ("/api/v1/alerts?limit=1001", "limit"),
        ("/api/v1/alerts?limit=ten", "limit"),
        ("/api/v1/alerts?limit=-1", "limit"),
        ("/api/v1/alerts?limit=", "limit"),
        ("/api/v1/alerts?state=closed", "state"),
        ("/api/v1/alerts?severity=high", "severity"),
        ("/api/v1/alerts?from=yesterday", "from"),
        ("/api/v1/alerts?to=2026-13-01T00:00:00Z", "to"),
        ("/api/v1/alerts?from=2026-11-28T13:00:00+01:00", "from"),
        ("/api/v1/alerts?from=2000&to=1000", "from"),
        ("/api/v1/alerts?cursor=nothex", "cursor"),
        ("/api/v1/alerts?cursor=abcd", "cursor"),
        ("/api/v1/alerts?device=", "device"),
        ("/api/v1/alerts?device=a%0Ab", "device"),
        ("/api/v1/alerts?devcie=pump-1", "devcie"),
        ("/api/v1/alerts?state=open&state=resolved", "state"),
        ("/api/v1/alerts/abc?verbose=1", "verbose"),
        ("/api/v1/alerts/%FF", "id"),
        ("/api/v1/devices?limit=5000", "limit"),
        ("/api/v1/devices?after=", "after"),
        ("/api/v1/devices?page=2", "page"),
        ("/api/v1/devices/pump-1?x=1", "x"),
        ("/api/v1/alerts?channel=", "channel"),
        ("/api/v1/alerts?acknowledged=yes", "acknowledged"),
        (
            "/api/v1/alerts?state=acknowledged&acknowledged=false",
            "acknowledged",
        ),
        ("/api/v1/alerts?sort=severity", "sort"),
        ("/api/v1/alerts/stream?device=", "device"),
        ("/api/v1/alerts/stream?since=1", "since"),
        ("/api/v1/devices/pump-1/scores?limit=0", "limit"),
        ("/api/v1/devices/pump-1/scores?limit=100000", "limit"),
    ];
    for (uri, parameter) in cases {
        let (status, body) = get_json(&f.app, uri).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{uri}: {body}");
        assert_eq!(body["error"]["code"], "bad_parameter", "{uri}: {body}");
        assert_eq!(body["error"]["parameter"], *parameter, "{uri}: {body}");
        let message = body["error"]["message"].as_str().unwrap();
        assert!(message.contains(parameter), "{uri}: {message}");
    }
    // The `+` hint.
    let (_, body) = get_json(&f.app, "/api/v1/alerts?from=2026-11-28T13:00:00+01:00").await;
    assert!(
        body["error"]["message"].as_str().unwrap().contains("%2B"),
        "{body}"
    );
}

#[tokio::test]
async fn devices_and_models() {
    let f = fixture();
    let (status, body) = get_json(&f.app, "/api/v1/devices/pump-2").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        body,
        serde_json::to_value(f.state.devices.get("pump-2").unwrap()).unwrap()
    );

    let (_, body) = get_json(&f.app, "/api/v1/devices?limit=2").await;
    let names: Vec<&str> = body["devices"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["device"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["fan-9", "pump-1"]);
    assert_eq!(
        (body["next_after"].as_str(), body["total"].as_u64()),
        (Some("pump-1"), Some(3))
    );
    let (_, body) = get_json(&f.app, "/api/v1/devices?limit=2&after=pump-1").await;
    assert_eq!(body["devices"][0]["device"], "pump-2");
    assert_eq!(body["devices"].as_array().unwrap().len(), 1);
    assert_eq!(body["next_after"], Value::Null);

    let (status, body) = get_json(&f.app, "/api/v1/models").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        body,
        json!({"models": [{"name": "lstm", "version": "v1", "kind": "forecaster", "channels": ["pressure", "flow"],
                           "context": [], "members": 1, "horizon": 10, "window": 100, "threshold": 1.0, "strategy": "fixed", "device": "cpu"}]})
    );
    *f.state.model.write().unwrap() = None;
    let (_, body) = get_json(&f.app, "/api/v1/models").await;
    assert_eq!(body, json!({"models": []}));
}

#[tokio::test]
async fn readyz_follows_health_and_says_why() {
    let f = fixture();
    let (status, body) = get_json(&f.app, "/livez").await;
    assert_eq!((status, body), (StatusCode::OK, json!({"status": "ok"})));

    let h = &f.state.health;
    let (status, body) = get_json(&f.app, "/readyz").await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(body["ready"], false);
    assert_eq!(
        body["reasons"],
        json!([
            "no model loaded",
            "no partitions assigned by the consumer group",
            "Kafka broker not reachable"
        ])
    );
    h.set_model_loaded(true);
    h.set_broker_reachable(true);
    let (status, body) = get_json(&f.app, "/readyz").await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(body["checks"]["partitions_assigned"], 0);
    assert_eq!(
        body["reasons"],
        json!(["no partitions assigned by the consumer group"])
    );
    h.set_partitions_assigned(2);
    let (status, body) = get_json(&f.app, "/readyz").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["ready"], true);
    assert_eq!(f.state.metrics.ready.get(), 1);
    h.set_shutting_down();
    let (status, body) = get_json(&f.app, "/readyz").await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(body["reasons"], json!(["shutting down"]));
}

#[tokio::test]
async fn metrics_exposition() {
    let f = fixture();
    // Health made without the metrics: /metrics still reports readiness.
    let mut state = f.state.clone();
    state.health = Arc::new(Health::new());
    state.health.set_model_loaded(true);
    state.health.set_partitions_assigned(1);
    state.health.set_broker_reachable(true);
    let app = router(state);
    // A request first, so the HTTP series exist.
    get_json(&app, "/api/v1/alerts/0000").await;
    get_json(&app, "/no/such/route").await;
    let (status, headers, body) = call(&app, Method::GET, "/metrics", Body::empty()).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        headers.get(header::CONTENT_TYPE).unwrap(),
        "text/plain; version=0.0.4"
    );
    let text = String::from_utf8(body).unwrap();
    for series in [
        "forewarn_messages_consumed_total 0",
        "forewarn_messages_rejected_total{reason=\"malformed_json\"} 0",
        "forewarn_alerts_open 0",
        "forewarn_ready 1",
        "forewarn_devices_tracked 3",
        "forewarn_build_info{version=\"0.1.0\"} 1",
        "forewarn_http_requests_total{method=\"GET\",route=\"/api/v1/alerts/{id}\",status=\"404\"} 1",
        "forewarn_http_requests_total{method=\"GET\",route=\"unmatched\",status=\"404\"} 1",
    ] {
        assert!(text.lines().any(|l| l == series), "{series}\n{text}");
    }
}

#[tokio::test]
async fn wrong_method_and_big_body_are_json_errors() {
    let f = fixture();
    let (status, headers, body) = call(&f.app, Method::POST, "/api/v1/alerts", Body::empty()).await;
    assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(
        headers.get(header::CONTENT_TYPE).unwrap(),
        "application/json"
    );
    assert!(headers.get(header::ALLOW).is_some(), "{headers:?}");
    let body: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(body["error"]["code"], "method_not_allowed");

    let req = Request::builder()
        .uri("/api/v1/alerts")
        .header(header::CONTENT_LENGTH, BODY_LIMIT + 1)
        .body(Body::from(vec![b'x'; BODY_LIMIT + 1]))
        .unwrap();
    let resp = f.app.clone().oneshot(req).await.unwrap();
    assert_eq!(resp.status(), StatusCode::PAYLOAD_TOO_LARGE);
    let body = axum::body::to_bytes(resp.into_body(), usize::MAX)
        .await
        .unwrap();
    let body: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(body["error"]["code"], "payload_too_large");
}

#[tokio::test]
async fn slow_requests_time_out_and_panics_are_500_json() {
    let metrics = Arc::new(Metrics::new());
    let routes = Router::new()
        .route(
            "/slow",
            get(|| async {
                tokio::time::sleep(Duration::from_secs(5)).await;
                "late"
            }),
        )
        .route(
            "/panic",
            get(|| async {
                if true {
                    panic!("boom");
                }
                "never"
            }),
        );
    let app = with_layers(
        routes,
        ApiConfig {
            request_timeout: Duration::from_millis(20),
            ..ApiConfig::default()
        },
        metrics.clone(),
    );
    let (status, body) = get_json(&app, "/slow").await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(
        body,
        json!({"error": {"code": "timeout", "message": "request timed out"}})
    );
    let (status, body) = get_json(&app, "/panic").await;
    assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR);
    assert_eq!(
        body,
        json!({"error": {"code": "internal", "message": "internal server error"}})
    );
    let text = metrics.render();
    assert!(
        text.contains(r#"forewarn_http_requests_total{method="GET",route="/slow",status="503"} 1"#),
        "{text}"
    );
}

#[tokio::test]
async fn serve_stops_on_cancel() {
    let f = fixture();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let token = CancellationToken::new();
    let server = tokio::spawn(serve(listener, f.state.clone(), token.clone()));
    token.cancel();
    tokio::time::timeout(Duration::from_secs(5), server)
        .await
        .expect("server stops")
        .unwrap()
        .unwrap();
}

async fn send(
    app: &Router,
    method: Method,
    uri: &str,
    token: Option<&str>,
    body: &str,
) -> (StatusCode, HeaderMap, Value) {
    let mut req = Request::builder().method(method).uri(uri);
    if let Some(t) = token {
        req = req.header(header::AUTHORIZATION, format!("Bearer {t}"));
    }
    let resp = app
        .clone()
        .oneshot(req.body(Body::from(body.to_owned())).unwrap())
        .await
        .unwrap();
    let (parts, body) = resp.into_parts();
    let bytes = axum::body::to_bytes(body, usize::MAX).await.unwrap();
    let v = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    (parts.status, parts.headers, v)
}

#[tokio::test]
async fn acknowledge_needs_a_token_and_records_user_and_note() {
    let f = fixture();
    let id = f.alerts[1].id.clone();
    let uri = format!("/api/v1/alerts/{id}/ack");
    let body = r#"{"user": "ana", "note": "checked the pump"}"#;
    let mut events = f.state.bus.subscribe();

    let (status, headers, err) = send(&f.app, Method::POST, &uri, None, body).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{err}");
    assert_eq!(err["error"]["code"], "unauthorized");
    assert_eq!(headers.get(header::WWW_AUTHENTICATE).unwrap(), "Bearer");
    let (status, _, _) = send(&f.app, Method::POST, &uri, Some("s3cret-tokeN"), body).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);

    let (status, _, rec) = send(&f.app, Method::POST, &uri, Some(TOKEN), body).await;
    assert_eq!(status, StatusCode::OK, "{rec}");
    assert_eq!(rec["id"], json!(id));
    assert_eq!(rec["acknowledged"], true);
    assert_eq!(rec["acknowledged_by"], "ana");
    assert_eq!(rec["ack_note"], "checked the pump");
    assert!(rec["acknowledged_at"].as_i64().unwrap() > T0);
    // Durable: the store has it; the bus told live consumers.
    let (_, one) = get_json(&f.app, &format!("/api/v1/alerts/{id}")).await;
    assert_eq!(one, rec);
    let ev = events.try_recv().unwrap();
    assert_eq!(ev.kind, AlertEventKind::Acknowledged);
    assert_eq!(ev.alert.id, id);

    // Any configured token works; the second ack replaces the first.
    let (status, _, rec) = send(
        &f.app,
        Method::POST,
        &uri,
        Some("second-token"),
        r#"{"user":"bo"}"#,
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        (&rec["acknowledged_by"], &rec["ack_note"]),
        (&json!("bo"), &json!(""))
    );

    // Filters see it.
    let (_, page) = get_json(&f.app, "/api/v1/alerts?state=acknowledged").await;
    assert_eq!(ids(&page), vec![id.clone()]);
    let (_, page) = get_json(&f.app, "/api/v1/alerts?state=open&acknowledged=false").await;
    assert_eq!(
        ids(&page),
        vec![f.alerts[4].id.clone(), f.alerts[2].id.clone()]
    );

    // Bad bodies are 400s naming the field; unknown alerts 404.
    for (body, field) in [
        ("", "body"),
        ("[]", "body"),
        ("{", "body"),
        (r#"{"note": "x"}"#, "user"),
        (r#"{"user": ""}"#, "user"),
        (r#"{"user": 7}"#, "user"),
        (r#"{"user": "a", "note": 1}"#, "note"),
        (r#"{"user": "a", "urgent": true}"#, "urgent"),
    ] {
        let (status, _, err) = send(&f.app, Method::POST, &uri, Some(TOKEN), body).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body}: {err}");
        assert_eq!(err["error"]["parameter"], field, "{body}: {err}");
    }
    let (status, _, _) = send(
        &f.app,
        Method::POST,
        "/api/v1/alerts/nope/ack",
        Some(TOKEN),
        r#"{"user":"a"}"#,
    )
    .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    // GET on the ack route is a 405, not an auth error.
    let (status, _, _) = send(&f.app, Method::GET, &uri, None, "").await;
    assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED);
}

#[tokio::test]
async fn without_tokens_mutations_are_disabled_and_reads_can_require_a_token() {
    let f = fixture();
    let mut state = f.state.clone();
    state.auth = Arc::new(Auth::new(Vec::<String>::new(), false));
    let app = router(state.clone());
    let uri = format!("/api/v1/alerts/{}/ack", f.alerts[1].id);
    let (status, _, err) = send(&app, Method::POST, &uri, Some(TOKEN), r#"{"user":"a"}"#).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{err}");
    assert!(
        err["error"]["message"]
            .as_str()
            .unwrap()
            .contains("http.tokens")
    );

    state.auth = Arc::new(Auth::new([TOKEN], true));
    let app = router(state);
    for uri in [
        "/api/v1/alerts",
        "/api/v1/devices",
        "/api/v1/models",
        "/api/v1/alerts/stream",
    ] {
        let (status, _, _) = send(&app, Method::GET, uri, None, "").await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{uri}");
    }
    let (status, _, _) = send(&app, Method::GET, "/api/v1/alerts", Some(TOKEN), "").await;
    assert_eq!(status, StatusCode::OK);
    // Health, metrics and the console page stay open.
    for uri in ["/livez", "/metrics", "/"] {
        let (status, _, _) = call(&app, Method::GET, uri, Body::empty()).await;
        assert_eq!(status, StatusCode::OK, "{uri}");
    }
}

#[tokio::test]
async fn channel_filter_and_oldest_first_sort() {
    let f = fixture();
    let (_, body) = get_json(&f.app, "/api/v1/alerts?channel=flow&sort=opened_at&limit=2").await;
    let want: Vec<String> = f.alerts.iter().map(|a| a.id.clone()).collect();
    assert_eq!(ids(&body), want[..2]);
    let c = body["next_cursor"].as_str().unwrap().to_owned();
    let (_, body) = get_json(
        &f.app,
        &format!("/api/v1/alerts?channel=flow&sort=opened_at&limit=2&cursor={c}"),
    )
    .await;
    assert_eq!(ids(&body), want[2..4]);
    // A cursor of one order is a 400 in the other.
    let (status, err) = get_json(&f.app, &format!("/api/v1/alerts?cursor={c}")).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(err["error"]["parameter"], "cursor");
    let (_, body) = get_json(&f.app, "/api/v1/alerts?channel=pressure").await;
    assert_eq!(ids(&body), Vec::<String>::new());
}

#[tokio::test]
async fn device_scores_and_allow_listed_device_series() {
    let f = fixture();
    let mut snap = f.state.devices.get("pump-1").unwrap();
    for i in 0..5 {
        snap.last_ts = Some(T0 + i * 1000);
        snap.last_score = Some(0.1 * i as f64);
        f.state.devices.update([snap.clone()]);
    }
    let (status, body) = get_json(&f.app, "/api/v1/devices/pump-1/scores?limit=3").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["threshold"], 1.0);
    let pts = body["points"].as_array().unwrap();
    assert_eq!(pts.len(), 3);
    assert_eq!(pts[2]["ts"], T0 + 4000);
    assert_eq!(pts[2]["threshold"], 1.0);
    let (status, _) = get_json(&f.app, "/api/v1/devices/nope/scores").await;
    assert_eq!(status, StatusCode::NOT_FOUND);

    // Per-device series only for the allow-list.
    let mut state = f.state.clone();
    state.device_allow_list = Arc::new(vec!["pump-1".into(), "absent".into()]);
    let (_, _, text) = call(&router(state), Method::GET, "/metrics", Body::empty()).await;
    let text = String::from_utf8(text).unwrap();
    assert!(
        text.contains("forewarn_device_score{device=\"pump-1\"} 0.4"),
        "{text}"
    );
    assert!(
        text.contains("forewarn_device_threshold{device=\"pump-1\"} 1"),
        "{text}"
    );
    assert!(!text.contains("device=\"pump-2\""), "{text}");
    assert!(!text.contains("device=\"absent\""), "{text}");
}

#[tokio::test]
async fn live_stream_sends_events_and_tells_lagging_clients() {
    use futures::StreamExt;
    let f = fixture();
    let mut state = f.state.clone();
    state.bus = AlertBus::new(4);
    let app = router(state.clone());
    let req = Request::builder()
        .uri("/api/v1/alerts/stream?device=pump-1")
        .body(Body::empty())
        .unwrap();
    let resp = app.clone().oneshot(req).await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(
        resp.headers().get(header::CONTENT_TYPE).unwrap(),
        "text/event-stream"
    );
    let mut body = resp.into_body().into_data_stream();
    let mut text = String::new();
    let mut next = async || {
        let chunk = tokio::time::timeout(Duration::from_secs(5), body.next())
            .await
            .expect("an event in time")
            .unwrap()
            .unwrap();
        String::from_utf8(chunk.to_vec()).unwrap()
    };
    text.push_str(&next().await);
    assert!(text.contains("event: ready"), "{text}");
    assert_eq!(state.metrics.sse_clients.get(), 1);

    // Ten events while the client reads nothing: the publisher never
    // blocks, the client learns it missed some, then gets the newest.
    for (i, a) in f.alerts.iter().cycle().take(10).enumerate() {
        let mut a = a.clone();
        a.device = "pump-1".into();
        a.opened_at = i as i64;
        state.bus.publish(AlertEvent {
            kind: AlertEventKind::Opened,
            alert: a.into(),
        });
    }
    let mut all = String::new();
    while !all.contains("\"opened_at\":9") {
        all.push_str(&next().await);
    }
    assert!(all.contains("event: lagged\ndata: {\"missed\":6}"), "{all}");
    assert_eq!(all.matches("event: opened").count(), 4, "{all}");
    assert_eq!(state.metrics.sse_events_lagged.get(), 6);

    // Other devices are filtered out.
    let mut other = f.alerts[1].clone();
    other.device = "pump-2".into();
    state.bus.publish(AlertEvent {
        kind: AlertEventKind::Resolved,
        alert: other.into(),
    });
    let mut mine = f.alerts[0].clone();
    mine.opened_at = 99;
    state.bus.publish(AlertEvent {
        kind: AlertEventKind::Resolved,
        alert: mine.into(),
    });
    let ev = next().await;
    assert!(
        ev.contains("event: resolved") && ev.contains("\"opened_at\":99"),
        "{ev}"
    );

    // A changed diagnosis is an event of its own, carrying the alert.
    let mut diagnosed = f.alerts[2].clone();
    diagnosed.diagnosis = Some(diagnosis());
    state.bus.publish(AlertEvent {
        kind: AlertEventKind::Diagnosed,
        alert: diagnosed.into(),
    });
    let ev = next().await;
    assert!(
        ev.contains("event: diagnosed") && ev.contains("\"classifier\":\"tep-faults\""),
        "{ev}"
    );

    // Shutdown ends the stream.
    state.shutdown.cancel();
    let end = tokio::time::timeout(Duration::from_secs(5), body.next())
        .await
        .unwrap();
    assert!(end.is_none());
    drop(body);
    assert_eq!(state.metrics.sse_clients.get(), 0);
}

#[tokio::test]
async fn long_query_strings_are_refused() {
    let f = fixture();
    let uri = format!("/api/v1/alerts?device={}", "x".repeat(5000));
    let (status, body) = get_json(&f.app, &uri).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
}

#[tokio::test]
async fn console_page_is_served() {
    let f = fixture();
    let (status, headers, body) = call(&f.app, Method::GET, "/", Body::empty()).await;
    assert_eq!(status, StatusCode::OK);
    assert!(
        headers
            .get(header::CONTENT_TYPE)
            .unwrap()
            .to_str()
            .unwrap()
            .starts_with("text/html")
    );
    let html = String::from_utf8(body).unwrap();
    assert!(html.contains("Forewarn"));
    // It listens for diagnosis changes and shows the likely fault.
    assert!(html.contains("\"diagnosed\"") && html.contains("likely fault"));
    // A model with a grid gets a heat map of the error (cells readable by
    // a browser test), and the alert row names the top cell.
    for part in [
        r#"id="heatmap""#,
        "/api/v1/models",
        "dataset.share",
        "dataset.row",
        "top-cell",
    ] {
        assert!(html.contains(part), "{part}");
    }
    // Nothing is loaded from elsewhere.
    assert!(
        !html.contains("http://") && !html.contains("https://"),
        "external reference"
    );
}

#[tokio::test]
async fn openapi_document_describes_every_route_and_real_payloads() {
    let f = fixture();
    let (status, doc) = get_json(&f.app, "/api/v1/openapi.json").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(doc, crate::openapi::document_json());
    assert!(doc["openapi"].as_str().unwrap().starts_with("3."));
    assert_eq!(doc["info"]["version"], env!("CARGO_PKG_VERSION"));
    let paths = doc["paths"].as_object().unwrap();
    for (path, method) in [
        ("/api/v1/alerts", "get"),
        ("/api/v1/alerts/stream", "get"),
        ("/api/v1/alerts/{id}", "get"),
        ("/api/v1/alerts/{id}/ack", "post"),
        ("/api/v1/devices", "get"),
        ("/api/v1/devices/{id}", "get"),
        ("/api/v1/devices/{id}/scores", "get"),
        ("/api/v1/models", "get"),
        ("/api/v1/models/reload", "post"),
        ("/metrics", "get"),
        ("/livez", "get"),
        ("/readyz", "get"),
    ] {
        assert!(paths[path][method].is_object(), "{path} {method}");
    }
    assert_eq!(
        doc["components"]["securitySchemes"]["bearer"]["scheme"],
        "bearer"
    );
    // Every documented alert filter is accepted, and every accepted one documented.
    let names: Vec<&str> = paths["/api/v1/alerts"]["get"]["parameters"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        [
            "device",
            "state",
            "severity",
            "channel",
            "acknowledged",
            "from",
            "to",
            "sort",
            "limit",
            "cursor"
        ]
    );

    // Schemas name exactly the fields real payloads carry.
    let schema_keys = |name: &str| -> Vec<String> {
        let mut k: Vec<String> = doc["components"]["schemas"][name]["properties"]
            .as_object()
            .unwrap_or_else(|| panic!("schema {name}"))
            .keys()
            .cloned()
            .collect();
        k.sort();
        k
    };
    let keys = |v: Value| -> Vec<String> {
        let mut k: Vec<String> = v.as_object().unwrap().keys().cloned().collect();
        k.sort();
        k
    };
    // An alert with every optional part: a diagnosis and grid cells.
    let diagnosed = diagnose(&f, 2);
    let (_, alert) = get_json(&f.app, &format!("/api/v1/alerts/{}", diagnosed.id)).await;
    assert_eq!(keys(alert.clone()), schema_keys("Alert"));
    assert_eq!(keys(alert["cells"][0].clone()), schema_keys("GridCell"));
    assert_eq!(keys(alert["diagnosis"].clone()), schema_keys("Diagnosis"));
    assert_eq!(
        keys(alert["diagnosis"]["top"][0].clone()),
        schema_keys("ClassProbability")
    );
    // ... which alerts without one omit: it is optional, never null.
    let required: Vec<&str> = doc["components"]["schemas"]["Alert"]["required"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r.as_str().unwrap())
        .collect();
    assert!(!required.contains(&"diagnosis"), "{required:?}");
    assert!(!required.contains(&"cells"), "{required:?}");
    assert!(required.contains(&"contributors"), "{required:?}");
    let (_, plain) = get_json(&f.app, &format!("/api/v1/alerts/{}", f.alerts[0].id)).await;
    let mut without: Vec<String> = schema_keys("Alert");
    without.retain(|k| k != "diagnosis" && k != "cells");
    assert_eq!(keys(plain), without);
    // The live stream documents its `diagnosed` event.
    let stream_doc = paths["/api/v1/alerts/stream"]["get"].to_string();
    assert!(stream_doc.contains("`diagnosed`"), "{stream_doc}");
    let (_, page) = get_json(&f.app, "/api/v1/alerts").await;
    assert_eq!(keys(page), schema_keys("AlertPage"));
    let (_, dev) = get_json(&f.app, "/api/v1/devices/pump-1").await;
    assert_eq!(keys(dev), schema_keys("Device"));
    let (_, devs) = get_json(&f.app, "/api/v1/devices").await;
    assert_eq!(keys(devs), schema_keys("DevicePage"));
    let (_, models) = get_json(&f.app, "/api/v1/models").await;
    // Without a fault classifier the model has no `diagnosis`, without a
    // grid no `grid`.
    let mut without: Vec<String> = schema_keys("Model");
    without.retain(|k| k != "diagnosis" && k != "grid");
    assert_eq!(keys(models["models"][0].clone()), without);
    let model_required = doc["components"]["schemas"]["Model"]["required"].to_string();
    assert!(!model_required.contains("\"grid\""), "{model_required}");
    let layout = forewarn_core::GridLayout::row_major(1, 2, &["pressure".into()]).unwrap();
    f.state.model.write().unwrap().as_mut().unwrap().grid = Some(ModelGrid::from(&layout));
    let (_, models) = get_json(&f.app, "/api/v1/models").await;
    without.push("grid".into());
    without.sort();
    assert_eq!(keys(models["models"][0].clone()), without);
    assert_eq!(
        keys(models["models"][0]["grid"].clone()),
        schema_keys("ModelGrid")
    );
    let (_, scores) = get_json(&f.app, "/api/v1/devices/pump-1/scores").await;
    assert_eq!(keys(scores.clone()), schema_keys("DeviceScores"));
    assert_eq!(
        keys(json!(ScorePoint {
            ts: 1,
            score: 1.0,
            threshold: 1.0
        })),
        schema_keys("ScorePoint")
    );
    let (_, ready) = get_json(&f.app, "/readyz").await;
    assert_eq!(keys(ready), schema_keys("Readiness"));
    let (_, err) = get_json(&f.app, "/api/v1/alerts?limit=0").await;
    assert_eq!(keys(err["error"].clone()), schema_keys("ErrorDetail"));
}
