//! Forewarn's alert store: one embedded SQLite database.
//!
//! # Durability
//! The database runs in WAL mode with `synchronous = FULL`: every committed
//! transaction is fsynced to the write-ahead log before [`AlertStore::apply`]
//! returns, so an alert survives a power loss, not just a process crash.
//! The pipeline commits Kafka offsets only after `apply` returns `Ok`, and
//! it batches a whole flush's alert changes into one call, so the cost is
//! one fsync per flush that changed alerts (most flushes change none).
//! `synchronous = NORMAL` would skip that fsync and could lose the last
//! transactions on power loss after their offsets were committed, which is
//! exactly the "crash never loses an alert" promise broken.
//!
//! # Idempotence
//! Alert ids are deterministic (device, model version, start of the
//! anomalous streak), so a crash replay re-applies the same changes:
//! re-applying `Opened` never duplicates a row nor turns a resolved alert
//! back to open, and `Resolved` upserts (it inserts the alert when its
//! opening was never stored). The first stored resolution time wins.
//!
//! # Schema
//! Versioned with `PRAGMA user_version`; [`MIGRATIONS`] run in order on
//! open, each in its own transaction. A database newer than this build is
//! refused rather than guessed at.

use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use forewarn_core::{Alert, AlertState, ChannelShare, Severity};
use rusqlite::types::Value;
use rusqlite::{Connection, OptionalExtension, Row, TransactionBehavior, params, params_from_iter};
use serde::{Deserialize, Serialize};

/// Default page size of [`AlertStore::list`].
pub const DEFAULT_LIMIT: usize = 100;
/// Largest page size of [`AlertStore::list`].
pub const MAX_LIMIT: usize = 1000;

/// Schema migrations; migration `i` brings `user_version` from `i` to `i + 1`.
pub const MIGRATIONS: &[&str] = &[
    // 1: the alerts table and its indexes.
    r#"
    CREATE TABLE alerts (
        id            TEXT    NOT NULL PRIMARY KEY,
        device        TEXT    NOT NULL,
        model         TEXT    NOT NULL,
        model_version TEXT    NOT NULL,
        state         TEXT    NOT NULL CHECK (state IN ('open', 'resolved')),
        severity      TEXT    NOT NULL CHECK (severity IN ('warning', 'critical')),
        opened_at     INTEGER NOT NULL,
        resolved_at   INTEGER,
        score         REAL    NOT NULL,
        peak_score    REAL    NOT NULL,
        threshold     REAL    NOT NULL,
        contributors  TEXT    NOT NULL,
        window_start  INTEGER NOT NULL,
        window_end    INTEGER NOT NULL
    ) STRICT;
    CREATE INDEX alerts_by_time   ON alerts (opened_at, id);
    CREATE INDEX alerts_by_device ON alerts (device, opened_at, id);
    CREATE INDEX alerts_by_state  ON alerts (state, opened_at, id);
    "#,
    // 2: acknowledgement by an operator (who, when, why). Columns added with
    // ALTER so a version-1 database keeps its rows.
    r#"
    ALTER TABLE alerts ADD COLUMN acknowledged_at INTEGER;
    ALTER TABLE alerts ADD COLUMN acknowledged_by TEXT;
    ALTER TABLE alerts ADD COLUMN ack_note        TEXT;
    "#,
];

/// The schema version this build writes.
pub const SCHEMA_VERSION: i64 = MIGRATIONS.len() as i64;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("cannot create directory {path} for the alert database: {source}")]
    CreateDir {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot open alert database {path}: {source}")]
    Open {
        path: PathBuf,
        source: rusqlite::Error,
    },
    #[error(
        "alert database has schema version {found}, newer than the {supported} this build knows; \
         run a newer Forewarn or use another database file"
    )]
    SchemaTooNew { found: i64, supported: i64 },
    #[error("malformed pagination cursor")]
    BadCursor,
    #[error("stored alert {id} is unreadable: {detail}")]
    Corrupt { id: String, detail: String },
    #[error("alert database error: {0}")]
    Sqlite(#[from] rusqlite::Error),
    #[error("cannot encode alert contributors: {0}")]
    Encode(#[from] serde_json::Error),
}

/// A change to persist, as the engine reports it.
#[derive(Debug, Clone, PartialEq)]
pub enum AlertChange {
    Opened(Alert),
    Resolved(Alert),
}

/// Filters and page of [`AlertStore::list`].
#[derive(Debug, Clone, PartialEq)]
pub struct AlertQuery {
    pub device: Option<String>,
    pub state: Option<AlertState>,
    pub severity: Option<Severity>,
    /// Only alerts whose contributors name this channel.
    pub channel: Option<String>,
    /// Only acknowledged (`true`) or unacknowledged (`false`) alerts.
    pub acknowledged: Option<bool>,
    /// Epoch ms, inclusive, on `opened_at`.
    pub from: Option<i64>,
    /// Epoch ms, exclusive, on `opened_at`.
    pub to: Option<i64>,
    /// Page size, 1..=[`MAX_LIMIT`]; values outside are clamped.
    pub limit: usize,
    /// `next_cursor` of the previous page (same filters and order).
    pub cursor: Option<String>,
    pub order: Order,
}

/// Order of [`AlertStore::list`], on (`opened_at`, `id`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Order {
    #[default]
    NewestFirst,
    OldestFirst,
}

/// An operator's acknowledgement of an alert.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Acknowledgement {
    /// Epoch ms.
    pub at: i64,
    pub by: String,
    pub note: String,
}

/// An alert as stored: the detector's [`Alert`] plus what operators added.
/// Serialises flat: the alert's fields, then `acknowledged`,
/// `acknowledged_at`, `acknowledged_by` and `ack_note` (null when not
/// acknowledged).
#[derive(Debug, Clone, PartialEq)]
pub struct AlertRecord {
    pub alert: Alert,
    pub ack: Option<Acknowledgement>,
}

impl std::ops::Deref for AlertRecord {
    type Target = Alert;
    fn deref(&self) -> &Alert {
        &self.alert
    }
}

impl From<Alert> for AlertRecord {
    fn from(alert: Alert) -> Self {
        Self { alert, ack: None }
    }
}

impl Serialize for AlertRecord {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        #[derive(Serialize)]
        struct Flat<'a> {
            #[serde(flatten)]
            alert: &'a Alert,
            acknowledged: bool,
            acknowledged_at: Option<i64>,
            acknowledged_by: Option<&'a str>,
            ack_note: Option<&'a str>,
        }
        Flat {
            alert: &self.alert,
            acknowledged: self.ack.is_some(),
            acknowledged_at: self.ack.as_ref().map(|a| a.at),
            acknowledged_by: self.ack.as_ref().map(|a| a.by.as_str()),
            ack_note: self.ack.as_ref().map(|a| a.note.as_str()),
        }
        .serialize(s)
    }
}

impl Default for AlertQuery {
    fn default() -> Self {
        Self {
            device: None,
            state: None,
            severity: None,
            channel: None,
            acknowledged: None,
            from: None,
            to: None,
            limit: DEFAULT_LIMIT,
            cursor: None,
            order: Order::NewestFirst,
        }
    }
}

/// One page of alerts, in the query's order.
#[derive(Debug, Clone, PartialEq)]
pub struct AlertPage {
    pub alerts: Vec<AlertRecord>,
    /// Present when more alerts match; pass it as the next query's cursor.
    pub next_cursor: Option<String>,
}

/// Position after which the next page starts: (opened_at, id) of the last
/// alert of a page, hex-encoded so clients treat it as opaque. The prefix
/// names the order (`v1:` newest first, `v1a:` oldest first), so a cursor
/// cannot be reused with the other order.
fn encode_cursor(order: Order, opened_at: i64, id: &str) -> String {
    let prefix = match order {
        Order::NewestFirst => "v1",
        Order::OldestFirst => "v1a",
    };
    hex::encode(format!("{prefix}:{opened_at}:{id}"))
}

fn decode_cursor(order: Order, cursor: &str) -> Result<(i64, String), StoreError> {
    let bytes = hex::decode(cursor).map_err(|_| StoreError::BadCursor)?;
    let text = String::from_utf8(bytes).map_err(|_| StoreError::BadCursor)?;
    let prefix = match order {
        Order::NewestFirst => "v1:",
        Order::OldestFirst => "v1a:",
    };
    let rest = text.strip_prefix(prefix).ok_or(StoreError::BadCursor)?;
    let (at, id) = rest.split_once(':').ok_or(StoreError::BadCursor)?;
    let at = at.parse().map_err(|_| StoreError::BadCursor)?;
    Ok((at, id.to_owned()))
}

const COLUMNS: &str = "id, device, model, model_version, state, severity, opened_at, \
                       resolved_at, score, peak_score, threshold, contributors, \
                       window_start, window_end, acknowledged_at, acknowledged_by, ack_note";

const INSERT_OPENED: &str = "INSERT INTO alerts (id, device, model, model_version, state, \
     severity, opened_at, resolved_at, score, peak_score, threshold, contributors, \
     window_start, window_end) \
     VALUES (?1, ?2, ?3, ?4, 'open', ?5, ?6, NULL, ?7, ?8, ?9, ?10, ?11, ?12) \
     ON CONFLICT (id) DO NOTHING";

const UPSERT_RESOLVED: &str = "INSERT INTO alerts (id, device, model, model_version, state, \
     severity, opened_at, resolved_at, score, peak_score, threshold, contributors, \
     window_start, window_end) \
     VALUES (?1, ?2, ?3, ?4, 'resolved', ?5, ?6, ?13, ?7, ?8, ?9, ?10, ?11, ?12) \
     ON CONFLICT (id) DO UPDATE SET \
       state = 'resolved', \
       resolved_at = coalesce(alerts.resolved_at, excluded.resolved_at), \
       peak_score = max(alerts.peak_score, excluded.peak_score), \
       severity = CASE WHEN 'critical' IN (alerts.severity, excluded.severity) \
                       THEN 'critical' ELSE 'warning' END";

/// The alert store. `Send + Sync`: one connection behind a mutex (SQLite
/// serialises writers anyway, and reads here are short index scans).
pub struct AlertStore {
    conn: Mutex<Connection>,
}

impl std::fmt::Debug for AlertStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AlertStore").finish_non_exhaustive()
    }
}

impl AlertStore {
    /// Opens (creating it and its parent directories if needed) the
    /// database at `path` and migrates it to [`SCHEMA_VERSION`].
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|source| StoreError::CreateDir {
                path: dir.to_owned(),
                source,
            })?;
        }
        let open_err = |source| StoreError::Open {
            path: path.to_owned(),
            source,
        };
        let conn = Connection::open(path).map_err(open_err)?;
        // Journal mode is the first write: an unwritable file or directory
        // fails here, with the path in the message.
        let mode: String = conn
            .query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0))
            .map_err(open_err)?;
        if !mode.eq_ignore_ascii_case("wal") {
            return Err(open_err(rusqlite::Error::InvalidParameterName(format!(
                "journal_mode WAL not available (got {mode})"
            ))));
        }
        Self::init(conn).map_err(|e| match e {
            StoreError::Sqlite(source) => open_err(source),
            other => other,
        })
    }

    /// A private, non-durable database, for tests and dry runs.
    pub fn open_in_memory() -> Result<Self, StoreError> {
        Self::init(Connection::open_in_memory()?)
    }

    fn init(mut conn: Connection) -> Result<Self, StoreError> {
        conn.pragma_update(None, "synchronous", "FULL")?;
        conn.busy_timeout(Duration::from_secs(5))?;
        migrate(&mut conn)?;
        Ok(Self {
            conn: Mutex::new(conn),
        })
    }

    fn conn(&self) -> MutexGuard<'_, Connection> {
        // A panic mid-transaction drops the Transaction, which rolls back:
        // the connection is consistent, so keep using it.
        self.conn.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Applies `changes` in one transaction. When this returns `Ok`, they
    /// are durable. Idempotent (see the module docs).
    pub fn apply(&self, changes: &[AlertChange]) -> Result<(), StoreError> {
        if changes.is_empty() {
            return Ok(());
        }
        let mut conn = self.conn();
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        {
            let mut opened = tx.prepare_cached(INSERT_OPENED)?;
            let mut resolved = tx.prepare_cached(UPSERT_RESOLVED)?;
            for change in changes {
                let (stmt, a) = match change {
                    AlertChange::Opened(a) => (&mut opened, a),
                    AlertChange::Resolved(a) => (&mut resolved, a),
                };
                let contributors = serde_json::to_string(&a.contributors)?;
                let common = params![
                    a.id,
                    a.device,
                    a.model,
                    a.model_version,
                    a.severity.as_str(),
                    a.opened_at,
                    a.score,
                    a.peak_score,
                    a.threshold,
                    contributors,
                    a.window_start,
                    a.window_end,
                ];
                match change {
                    AlertChange::Opened(_) => stmt.execute(common)?,
                    AlertChange::Resolved(_) => {
                        let mut all: Vec<&dyn rusqlite::ToSql> = common.to_vec();
                        all.push(&a.resolved_at);
                        stmt.execute(all.as_slice())?
                    }
                };
            }
        }
        tx.commit()?;
        Ok(())
    }

    pub fn get(&self, id: &str) -> Result<Option<AlertRecord>, StoreError> {
        let conn = self.conn();
        let mut stmt =
            conn.prepare_cached(&format!("SELECT {COLUMNS} FROM alerts WHERE id = ?1"))?;
        let raw = stmt.query_row([id], RawAlert::from_row).optional()?;
        raw.map(RawAlert::into_record).transpose()
    }

    /// Records `ack` on alert `id` (open or resolved) and returns the alert
    /// as stored, or `None` when there is no such alert. A later
    /// acknowledgement replaces an earlier one (e.g. to correct the note).
    /// Durable when this returns, like [`AlertStore::apply`].
    pub fn acknowledge(
        &self,
        id: &str,
        ack: &Acknowledgement,
    ) -> Result<Option<AlertRecord>, StoreError> {
        let mut conn = self.conn();
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let n = tx.execute(
            "UPDATE alerts SET acknowledged_at = ?2, acknowledged_by = ?3, ack_note = ?4 \
             WHERE id = ?1",
            params![id, ack.at, ack.by, ack.note],
        )?;
        if n == 0 {
            return Ok(None);
        }
        let raw = tx.query_row(
            &format!("SELECT {COLUMNS} FROM alerts WHERE id = ?1"),
            [id],
            RawAlert::from_row,
        )?;
        tx.commit()?;
        raw.into_record().map(Some)
    }

    /// Alerts matching `q` in `q.order` by (`opened_at`, `id`), one page
    /// at a time with a keyset cursor (stable under concurrent inserts).
    pub fn list(&self, q: &AlertQuery) -> Result<AlertPage, StoreError> {
        let limit = q.limit.clamp(1, MAX_LIMIT);
        let mut sql = format!("SELECT {COLUMNS} FROM alerts WHERE 1 = 1");
        let mut args: Vec<Value> = Vec::new();
        if let Some(d) = &q.device {
            sql.push_str(" AND device = ?");
            args.push(Value::Text(d.clone()));
        }
        if let Some(s) = q.state {
            sql.push_str(" AND state = ?");
            args.push(Value::Text(s.as_str().into()));
        }
        if let Some(s) = q.severity {
            sql.push_str(" AND severity = ?");
            args.push(Value::Text(s.as_str().into()));
        }
        if let Some(c) = &q.channel {
            sql.push_str(
                " AND EXISTS (SELECT 1 FROM json_each(alerts.contributors) AS c \
                 WHERE json_extract(c.value, '$.channel') = ?)",
            );
            args.push(Value::Text(c.clone()));
        }
        match q.acknowledged {
            Some(true) => sql.push_str(" AND acknowledged_at IS NOT NULL"),
            Some(false) => sql.push_str(" AND acknowledged_at IS NULL"),
            None => {}
        }
        if let Some(from) = q.from {
            sql.push_str(" AND opened_at >= ?");
            args.push(Value::Integer(from));
        }
        if let Some(to) = q.to {
            sql.push_str(" AND opened_at < ?");
            args.push(Value::Integer(to));
        }
        let (after, dir) = match q.order {
            Order::NewestFirst => ("<", "DESC"),
            Order::OldestFirst => (">", "ASC"),
        };
        if let Some(c) = &q.cursor {
            let (at, id) = decode_cursor(q.order, c)?;
            sql.push_str(&format!(" AND (opened_at, id) {after} (?, ?)"));
            args.push(Value::Integer(at));
            args.push(Value::Text(id));
        }
        sql.push_str(&format!(" ORDER BY opened_at {dir}, id {dir} LIMIT ?"));
        // One extra row tells whether another page exists.
        args.push(Value::Integer(limit as i64 + 1));

        let raws: Vec<RawAlert> = {
            let conn = self.conn();
            let mut stmt = conn.prepare_cached(&sql)?;
            stmt.query_map(params_from_iter(args), RawAlert::from_row)?
                .collect::<Result<_, _>>()?
        };
        let more = raws.len() > limit;
        let alerts = raws
            .into_iter()
            .take(limit)
            .map(RawAlert::into_record)
            .collect::<Result<Vec<_>, _>>()?;
        let next_cursor = match alerts.last() {
            Some(last) if more => Some(encode_cursor(q.order, last.opened_at, &last.id)),
            _ => None,
        };
        Ok(AlertPage {
            alerts,
            next_cursor,
        })
    }

    pub fn count_open(&self) -> Result<u64, StoreError> {
        let n: i64 = self.conn().query_row(
            "SELECT count(*) FROM alerts WHERE state = 'open'",
            [],
            |r| r.get(0),
        )?;
        Ok(u64::try_from(n).unwrap_or(0))
    }

    /// Deletes resolved alerts resolved before `cutoff_ms` (retention);
    /// returns how many were deleted. Open alerts are never deleted.
    pub fn delete_resolved_before(&self, cutoff_ms: i64) -> Result<usize, StoreError> {
        Ok(self.conn().execute(
            "DELETE FROM alerts WHERE state = 'resolved' AND resolved_at < ?1",
            [cutoff_ms],
        )?)
    }
}

fn migrate(conn: &mut Connection) -> Result<(), StoreError> {
    let found: i64 = conn.query_row("PRAGMA user_version", [], |r| r.get(0))?;
    if found > SCHEMA_VERSION {
        return Err(StoreError::SchemaTooNew {
            found,
            supported: SCHEMA_VERSION,
        });
    }
    for (i, sql) in MIGRATIONS.iter().enumerate().skip(found.max(0) as usize) {
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        tx.execute_batch(sql)?;
        tx.pragma_update(None, "user_version", i as i64 + 1)?;
        tx.commit()?;
    }
    Ok(())
}

/// A row as stored, before its text columns are parsed.
struct RawAlert {
    id: String,
    device: String,
    model: String,
    model_version: String,
    state: String,
    severity: String,
    opened_at: i64,
    resolved_at: Option<i64>,
    score: f64,
    peak_score: f64,
    threshold: f64,
    contributors: String,
    window_start: i64,
    window_end: i64,
    acknowledged_at: Option<i64>,
    acknowledged_by: Option<String>,
    ack_note: Option<String>,
}

impl RawAlert {
    fn from_row(r: &Row<'_>) -> rusqlite::Result<Self> {
        Ok(Self {
            id: r.get(0)?,
            device: r.get(1)?,
            model: r.get(2)?,
            model_version: r.get(3)?,
            state: r.get(4)?,
            severity: r.get(5)?,
            opened_at: r.get(6)?,
            resolved_at: r.get(7)?,
            score: r.get(8)?,
            peak_score: r.get(9)?,
            threshold: r.get(10)?,
            contributors: r.get(11)?,
            window_start: r.get(12)?,
            window_end: r.get(13)?,
            acknowledged_at: r.get(14)?,
            acknowledged_by: r.get(15)?,
            ack_note: r.get(16)?,
        })
    }

    fn into_record(mut self) -> Result<AlertRecord, StoreError> {
        let ack = self.acknowledged_at.map(|at| Acknowledgement {
            at,
            by: self.acknowledged_by.take().unwrap_or_default(),
            note: self.ack_note.take().unwrap_or_default(),
        });
        Ok(AlertRecord {
            alert: self.into_alert()?,
            ack,
        })
    }

    fn into_alert(self) -> Result<Alert, StoreError> {
        let corrupt = |detail: String| StoreError::Corrupt {
            id: self.id.clone(),
            detail,
        };
        let state = AlertState::parse(&self.state)
            .ok_or_else(|| corrupt(format!("unknown state {:?}", self.state)))?;
        let severity = Severity::parse(&self.severity)
            .ok_or_else(|| corrupt(format!("unknown severity {:?}", self.severity)))?;
        let contributors: Vec<ChannelShare> = serde_json::from_str(&self.contributors)
            .map_err(|e| corrupt(format!("contributors: {e}")))?;
        Ok(Alert {
            id: self.id,
            device: self.device,
            model: self.model,
            model_version: self.model_version,
            state,
            severity,
            opened_at: self.opened_at,
            resolved_at: self.resolved_at,
            score: self.score,
            peak_score: self.peak_score,
            threshold: self.threshold,
            contributors,
            window_start: self.window_start,
            window_end: self.window_end,
        })
    }
}

#[cfg(test)]
mod tests;
