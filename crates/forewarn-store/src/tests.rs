use super::*;
use forewarn_core::alert::alert_id;

/// An alert of `device` opened at `opened_at` (ms), open, warning.
fn alert(device: &str, opened_at: i64) -> Alert {
    Alert {
        id: alert_id(device, "v1", opened_at - 10),
        device: device.into(),
        model: "lstm".into(),
        model_version: "v1".into(),
        state: AlertState::Open,
        severity: Severity::Warning,
        opened_at,
        resolved_at: None,
        score: 2.0,
        peak_score: 2.0,
        threshold: 1.0,
        contributors: vec![
            ChannelShare {
                channel: "flow".into(),
                share: 0.75,
            },
            ChannelShare {
                channel: "pressure".into(),
                share: 0.25,
            },
        ],
        window_start: opened_at - 10,
        window_end: opened_at,
    }
}

fn resolved(mut a: Alert, at: i64, peak: f64) -> Alert {
    a.state = AlertState::Resolved;
    a.resolved_at = Some(at);
    a.peak_score = peak;
    a.severity = a.severity.max(Severity::from_ratio(peak / a.threshold));
    a
}

/// The detector's part of a stored alert.
fn get(s: &AlertStore, id: &str) -> Result<Option<Alert>, StoreError> {
    s.get(id).map(|r| r.map(|r| r.alert))
}

fn alerts(page: AlertPage) -> Vec<Alert> {
    page.alerts.into_iter().map(|r| r.alert).collect()
}

fn ids(page: &AlertPage) -> Vec<String> {
    page.alerts.iter().map(|a| a.id.clone()).collect()
}

#[test]
fn opened_alert_round_trips() {
    let s = AlertStore::open_in_memory().unwrap();
    let a = alert("pump-1", 1_000);
    s.apply(&[AlertChange::Opened(a.clone())]).unwrap();
    assert_eq!(get(&s, &a.id).unwrap(), Some(a));
    assert_eq!(get(&s, "nope").unwrap(), None);
    assert_eq!(s.count_open().unwrap(), 1);
}

#[test]
fn reapplying_is_idempotent_and_never_regresses() {
    let s = AlertStore::open_in_memory().unwrap();
    let a = alert("pump-1", 1_000);
    let r = resolved(a.clone(), 2_000, 4.0);
    let batch = [
        AlertChange::Opened(a.clone()),
        AlertChange::Resolved(r.clone()),
    ];
    s.apply(&batch).unwrap();
    // Crash replay: the same changes again, and the opening alone again.
    s.apply(&batch).unwrap();
    s.apply(&[AlertChange::Opened(a.clone())]).unwrap();
    let all = s.list(&AlertQuery::default()).unwrap();
    assert_eq!(alerts(all), vec![r.clone()]);
    assert_eq!(s.count_open().unwrap(), 0);
    // A second resolution does not move the stored resolution time.
    s.apply(&[AlertChange::Resolved(resolved(a, 9_000, 1.5))])
        .unwrap();
    assert_eq!(get(&s, &r.id).unwrap(), Some(r));
}

#[test]
fn resolve_before_open_inserts_then_open_is_ignored() {
    let s = AlertStore::open_in_memory().unwrap();
    let a = alert("pump-2", 5_000);
    let r = resolved(a.clone(), 6_000, 3.5);
    s.apply(&[AlertChange::Resolved(r.clone())]).unwrap();
    assert_eq!(get(&s, &a.id).unwrap(), Some(r.clone()));
    s.apply(&[AlertChange::Opened(a)]).unwrap();
    assert_eq!(get(&s, &r.id).unwrap(), Some(r));
}

#[test]
fn resolve_keeps_the_highest_peak_and_severity() {
    let s = AlertStore::open_in_memory().unwrap();
    let mut a = alert("pump-3", 1_000);
    a.severity = Severity::Critical;
    a.peak_score = 5.0;
    s.apply(&[AlertChange::Opened(a.clone())]).unwrap();
    let mut r = a.clone();
    r.state = AlertState::Resolved;
    r.resolved_at = Some(2_000);
    r.peak_score = 4.0;
    r.severity = Severity::Warning;
    s.apply(&[AlertChange::Resolved(r)]).unwrap();
    let got = get(&s, &a.id).unwrap().unwrap();
    assert_eq!(
        (got.state, got.severity, got.peak_score, got.resolved_at),
        (AlertState::Resolved, Severity::Critical, 5.0, Some(2_000))
    );
}

#[test]
fn failed_batch_applies_nothing() {
    let s = AlertStore::open_in_memory().unwrap();
    let good = alert("pump-1", 1_000);
    let mut bad = alert("pump-2", 2_000);
    bad.score = f64::NAN; // NaN is stored as NULL: violates NOT NULL.
    let err = s
        .apply(&[AlertChange::Opened(good.clone()), AlertChange::Opened(bad)])
        .unwrap_err();
    assert!(matches!(err, StoreError::Sqlite(_)), "{err}");
    assert_eq!(get(&s, &good.id).unwrap(), None);
    s.apply(&[AlertChange::Opened(good.clone())]).unwrap();
    assert_eq!(get(&s, &good.id).unwrap(), Some(good));
}

/// Six alerts over three devices; two share an opened_at.
fn fleet(s: &AlertStore) -> Vec<Alert> {
    let mut a = vec![
        alert("pump-1", 1_000),
        alert("pump-2", 2_000),
        alert("pump-1", 3_000),
        alert("fan-9", 3_000),
        alert("pump-2", 4_000),
        alert("pump-1", 5_000),
    ];
    a[4].severity = Severity::Critical;
    a[5].severity = Severity::Critical;
    a[0] = resolved(a[0].clone(), 1_500, 2.0);
    a[3] = resolved(a[3].clone(), 3_500, 2.0);
    let changes: Vec<AlertChange> = a
        .iter()
        .map(|x| match x.state {
            AlertState::Open => AlertChange::Opened(x.clone()),
            AlertState::Resolved => AlertChange::Resolved(x.clone()),
        })
        .collect();
    s.apply(&changes).unwrap();
    a
}

#[test]
fn filters() {
    let s = AlertStore::open_in_memory().unwrap();
    let a = fleet(&s);
    let id = |i: usize| a[i].id.clone();
    // Newest first; ties on opened_at broken by id, descending.
    let (hi, lo) = if a[2].id > a[3].id { (2, 3) } else { (3, 2) };
    let cases: Vec<(AlertQuery, Vec<String>)> = vec![
        (
            AlertQuery::default(),
            vec![id(5), id(4), id(hi), id(lo), id(1), id(0)],
        ),
        (
            AlertQuery {
                device: Some("pump-1".into()),
                ..Default::default()
            },
            vec![id(5), id(2), id(0)],
        ),
        (
            AlertQuery {
                state: Some(AlertState::Resolved),
                ..Default::default()
            },
            vec![id(3), id(0)],
        ),
        (
            AlertQuery {
                state: Some(AlertState::Open),
                severity: Some(Severity::Warning),
                ..Default::default()
            },
            vec![id(2), id(1)],
        ),
        (
            AlertQuery {
                severity: Some(Severity::Critical),
                ..Default::default()
            },
            vec![id(5), id(4)],
        ),
        (
            AlertQuery {
                from: Some(2_000),
                to: Some(4_000),
                ..Default::default()
            },
            vec![id(hi), id(lo), id(1)],
        ),
        (
            AlertQuery {
                device: Some("pump-2".into()),
                to: Some(2_000),
                ..Default::default()
            },
            vec![],
        ),
        (
            AlertQuery {
                device: Some("nobody".into()),
                ..Default::default()
            },
            vec![],
        ),
    ];
    for (q, want) in cases {
        let page = s.list(&q).unwrap();
        assert_eq!(ids(&page), want, "{q:?}");
        assert_eq!(page.next_cursor, None, "{q:?}");
    }
    assert_eq!(s.count_open().unwrap(), 4);
}

#[test]
fn pagination_walks_every_page_without_gaps_or_repeats() {
    let s = AlertStore::open_in_memory().unwrap();
    // 23 alerts, many sharing an opened_at, so ties cross page boundaries.
    let all: Vec<Alert> = (0..23)
        .map(|i| alert(&format!("dev-{i:02}"), 1_000 * (i / 4)))
        .collect();
    let changes: Vec<_> = all.iter().cloned().map(AlertChange::Opened).collect();
    s.apply(&changes).unwrap();
    let mut want: Vec<&Alert> = all.iter().collect();
    want.sort_by(|a, b| (b.opened_at, &b.id).cmp(&(a.opened_at, &a.id)));
    let want: Vec<String> = want.into_iter().map(|a| a.id.clone()).collect();

    for limit in [1, 3, 4, 5, 22, 23, 100] {
        let mut got = Vec::new();
        let mut cursor = None;
        let mut pages = 0;
        loop {
            let page = s
                .list(&AlertQuery {
                    limit,
                    cursor,
                    ..Default::default()
                })
                .unwrap();
            pages += 1;
            assert!(page.alerts.len() <= limit);
            got.extend(ids(&page));
            match page.next_cursor {
                Some(c) => cursor = Some(c),
                None => break,
            }
        }
        assert_eq!(got, want, "limit {limit}");
        assert_eq!(pages, want.len().div_ceil(limit), "limit {limit}");
    }

    // With a filter: device dev-0x only (x < 10), 2 per page.
    let mut got = Vec::new();
    let mut cursor = None;
    loop {
        let page = s
            .list(&AlertQuery {
                from: Some(1_000),
                limit: 2,
                cursor,
                ..Default::default()
            })
            .unwrap();
        got.extend(ids(&page));
        cursor = page.next_cursor;
        if cursor.is_none() {
            break;
        }
    }
    let want_from: Vec<String> = want
        .iter()
        .filter(|id| get(&s, id).unwrap().unwrap().opened_at >= 1_000)
        .cloned()
        .collect();
    assert_eq!(got, want_from);
}

#[test]
fn limit_is_clamped() {
    let s = AlertStore::open_in_memory().unwrap();
    fleet(&s);
    let page = s
        .list(&AlertQuery {
            limit: 0,
            ..Default::default()
        })
        .unwrap();
    assert_eq!(page.alerts.len(), 1);
    assert!(page.next_cursor.is_some());
    assert_eq!(AlertQuery::default().limit, DEFAULT_LIMIT);
}

#[test]
fn malformed_cursors_are_rejected() {
    let s = AlertStore::open_in_memory().unwrap();
    for bad in [
        "zz",
        "abc",
        &hex::encode("1000:x"),
        &hex::encode("v1:notanumber:x"),
        &hex::encode("v1:1000"),
        &hex::encode([0xff, 0xfe]),
    ] {
        let err = s
            .list(&AlertQuery {
                cursor: Some(bad.to_string()),
                ..Default::default()
            })
            .unwrap_err();
        assert!(matches!(err, StoreError::BadCursor), "{bad}: {err}");
    }
    for order in [Order::NewestFirst, Order::OldestFirst] {
        assert_eq!(
            decode_cursor(order, &encode_cursor(order, -5, "a:b")).unwrap(),
            (-5, "a:b".into())
        );
    }
    // A cursor of one order is refused by the other.
    let asc = encode_cursor(Order::OldestFirst, 5, "x");
    assert!(matches!(
        decode_cursor(Order::NewestFirst, &asc),
        Err(StoreError::BadCursor)
    ));
}

#[test]
fn file_database_persists_across_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("nested/deeper/alerts.db");
    let a = alert("pump-1", 1_000);
    let b = alert("pump-2", 2_000);
    {
        let s = AlertStore::open(&path).unwrap();
        s.apply(&[
            AlertChange::Opened(a.clone()),
            AlertChange::Opened(b.clone()),
        ])
        .unwrap();
    }
    let s = AlertStore::open(&path).unwrap();
    let r = resolved(a.clone(), 1_500, 2.0);
    s.apply(&[AlertChange::Resolved(r.clone())]).unwrap();
    drop(s);
    let s = AlertStore::open(&path).unwrap();
    assert_eq!(alerts(s.list(&AlertQuery::default()).unwrap()), vec![b, r]);
    assert_eq!(s.count_open().unwrap(), 1);
    let conn = s.conn();
    let mode: String = conn
        .query_row("PRAGMA journal_mode", [], |r| r.get(0))
        .unwrap();
    let sync: i64 = conn
        .query_row("PRAGMA synchronous", [], |r| r.get(0))
        .unwrap();
    let version: i64 = conn
        .query_row("PRAGMA user_version", [], |r| r.get(0))
        .unwrap();
    assert_eq!((mode.as_str(), sync, version), ("wal", 2, SCHEMA_VERSION));
}

#[test]
fn unusable_paths_give_clear_errors() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("plain-file");
    std::fs::write(&file, "not a database\n".repeat(100)).unwrap();
    // The parent "directory" is a file.
    let err = AlertStore::open(&file.join("alerts.db")).unwrap_err();
    assert!(matches!(err, StoreError::CreateDir { .. }), "{err}");
    assert!(err.to_string().contains("plain-file"), "{err}");
    // The database path is a directory.
    let err = AlertStore::open(dir.path()).unwrap_err();
    assert!(matches!(err, StoreError::Open { .. }), "{err}");
    // The file is not a database.
    let err = AlertStore::open(&file).unwrap_err();
    assert!(matches!(err, StoreError::Open { .. }), "{err}");
    assert!(err.to_string().contains("plain-file"), "{err}");
}

#[test]
fn newer_schema_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("alerts.db");
    drop(AlertStore::open(&path).unwrap());
    Connection::open(&path)
        .unwrap()
        .pragma_update(None, "user_version", 99)
        .unwrap();
    let err = AlertStore::open(&path).unwrap_err();
    assert!(
        matches!(
            err,
            StoreError::SchemaTooNew {
                found: 99,
                supported: SCHEMA_VERSION
            }
        ),
        "{err}"
    );
}

#[test]
fn retention_deletes_only_old_resolved_alerts() {
    let s = AlertStore::open_in_memory().unwrap();
    fleet(&s);
    assert_eq!(s.delete_resolved_before(2_000).unwrap(), 1);
    assert_eq!(s.list(&AlertQuery::default()).unwrap().alerts.len(), 5);
    assert_eq!(s.count_open().unwrap(), 4);
}

#[test]
fn store_is_send_and_sync() {
    fn check<T: Send + Sync>() {}
    check::<AlertStore>();
}

#[test]
fn acknowledge_records_who_when_why_and_survives_resolution() {
    let s = AlertStore::open_in_memory().unwrap();
    let a = alert("pump-1", 1_000);
    s.apply(&[AlertChange::Opened(a.clone())]).unwrap();
    assert_eq!(s.get(&a.id).unwrap().unwrap().ack, None);
    let ack = Acknowledgement {
        at: 1_500,
        by: "ana".into(),
        note: "valve swapped".into(),
    };
    let rec = s.acknowledge(&a.id, &ack).unwrap().unwrap();
    assert_eq!(rec.ack.as_ref(), Some(&ack));
    assert_eq!(rec.alert, a);
    assert_eq!(s.acknowledge("nope", &ack).unwrap(), None);
    // Resolution (and its replay) keeps the acknowledgement.
    let r = resolved(a.clone(), 2_000, 3.0);
    s.apply(&[AlertChange::Resolved(r.clone())]).unwrap();
    s.apply(&[
        AlertChange::Opened(a.clone()),
        AlertChange::Resolved(r.clone()),
    ])
    .unwrap();
    let got = s.get(&a.id).unwrap().unwrap();
    assert_eq!((got.alert, got.ack), (r, Some(ack)));
    // JSON is flat, with the acknowledgement fields after the alert's.
    let json = serde_json::to_value(s.get(&a.id).unwrap().unwrap()).unwrap();
    assert_eq!(json["device"], "pump-1");
    assert_eq!(json["acknowledged"], true);
    assert_eq!(json["acknowledged_at"], 1_500);
    assert_eq!(json["acknowledged_by"], "ana");
    assert_eq!(json["ack_note"], "valve swapped");
    let b = alert("pump-2", 1_000);
    s.apply(&[AlertChange::Opened(b.clone())]).unwrap();
    let json = serde_json::to_value(s.get(&b.id).unwrap().unwrap()).unwrap();
    assert_eq!(json["acknowledged"], false);
    assert!(json["acknowledged_by"].is_null() && json["ack_note"].is_null());
}

#[test]
fn channel_and_acknowledged_filters_and_oldest_first() {
    let s = AlertStore::open_in_memory().unwrap();
    let mut a = fleet(&s);
    a[1].contributors[0].channel = "vibration".into();
    s.apply(&[AlertChange::Resolved(resolved(a[1].clone(), 2_500, 2.0))])
        .unwrap();
    // The resolve upsert does not rewrite contributors of an existing row, so
    // insert a fresh alert with the other channel.
    let mut v = alert("fan-2", 6_000);
    v.contributors[1].channel = "vibration".into();
    s.apply(&[AlertChange::Opened(v.clone())]).unwrap();
    let q = |f: fn(&mut AlertQuery)| {
        let mut q = AlertQuery::default();
        f(&mut q);
        ids(&s.list(&q).unwrap())
    };
    assert_eq!(
        q(|q| q.channel = Some("vibration".into())),
        vec![v.id.clone()]
    );
    assert_eq!(q(|q| q.channel = Some("pressure".into())).len(), 6);
    assert_eq!(q(|q| q.channel = Some("nothing".into())).len(), 0);
    let ack = Acknowledgement {
        at: 7_000,
        by: "bo".into(),
        note: String::new(),
    };
    s.acknowledge(&a[5].id, &ack).unwrap().unwrap();
    s.acknowledge(&a[0].id, &ack).unwrap().unwrap();
    assert_eq!(
        q(|q| q.acknowledged = Some(true)),
        vec![a[5].id.clone(), a[0].id.clone()]
    );
    assert_eq!(
        q(|q| {
            q.acknowledged = Some(true);
            q.state = Some(AlertState::Open);
        }),
        vec![a[5].id.clone()]
    );
    assert_eq!(q(|q| q.acknowledged = Some(false)).len(), 5);

    // Oldest first walks the same set in reverse, page by page.
    let newest: Vec<String> = q(|_| {});
    let mut got = Vec::new();
    let mut cursor = None;
    loop {
        let page = s
            .list(&AlertQuery {
                order: Order::OldestFirst,
                limit: 2,
                cursor,
                ..Default::default()
            })
            .unwrap();
        got.extend(ids(&page));
        cursor = page.next_cursor;
        if cursor.is_none() {
            break;
        }
    }
    let mut want = newest;
    want.reverse();
    assert_eq!(got, want);
}

#[test]
fn version_1_database_is_migrated_keeping_rows() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("alerts.db");
    let a = alert("pump-1", 1_000);
    {
        let conn = Connection::open(&path).unwrap();
        conn.execute_batch(MIGRATIONS[0]).unwrap();
        conn.pragma_update(None, "user_version", 1).unwrap();
        conn.execute(
            "INSERT INTO alerts (id, device, model, model_version, state, severity, opened_at, \
             resolved_at, score, peak_score, threshold, contributors, window_start, window_end) \
             VALUES (?1, 'pump-1', 'lstm', 'v1', 'open', 'warning', 1000, NULL, 2.0, 2.0, 1.0, \
             ?2, 990, 1000)",
            params![a.id, serde_json::to_string(&a.contributors).unwrap()],
        )
        .unwrap();
    }
    let s = AlertStore::open(&path).unwrap();
    let got = s.get(&a.id).unwrap().unwrap();
    assert_eq!((got.alert, got.ack), (a.clone(), None));
    let v: i64 = s
        .conn()
        .query_row("PRAGMA user_version", [], |r| r.get(0))
        .unwrap();
    assert_eq!(v, SCHEMA_VERSION);
    assert!(
        s.acknowledge(
            &a.id,
            &Acknowledgement {
                at: 1,
                by: "x".into(),
                note: "y".into()
            }
        )
        .unwrap()
        .is_some()
    );
}
