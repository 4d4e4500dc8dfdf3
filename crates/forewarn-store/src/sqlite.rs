//! The embedded SQLite backend (the default): one file, WAL, `synchronous =
//! FULL`, migrations by `PRAGMA user_version`.

use std::path::Path;
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use rusqlite::types::Value;
use rusqlite::{Connection, OptionalExtension, Row, TransactionBehavior, params, params_from_iter};

use crate::error::StoreError;
use crate::record::{
    Acknowledgement, AlertChange, AlertPage, AlertQuery, AlertRecord, MAX_LIMIT, Order, RawAlert,
    decode_cursor, page_from,
};

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
    // 3: the fault classifier's diagnosis (JSON), NULL without one.
    r#"
    ALTER TABLE alerts ADD COLUMN diagnosis TEXT;
    "#,
    // 4: the grid cells behind the error (JSON), NULL for models without a
    // grid.
    r#"
    ALTER TABLE alerts ADD COLUMN cells TEXT;
    "#,
];

/// The schema version this build writes.
pub const SCHEMA_VERSION: i64 = MIGRATIONS.len() as i64;

const COLUMNS: &str = "id, device, model, model_version, state, severity, opened_at, \
                       resolved_at, score, peak_score, threshold, contributors, \
                       window_start, window_end, acknowledged_at, acknowledged_by, ack_note, \
                       diagnosis, cells";

const INSERT_OPENED: &str = "INSERT INTO alerts (id, device, model, model_version, state, \
     severity, opened_at, resolved_at, score, peak_score, threshold, contributors, \
     window_start, window_end, diagnosis, cells) \
     VALUES (?1, ?2, ?3, ?4, 'open', ?5, ?6, NULL, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14) \
     ON CONFLICT (id) DO NOTHING";

// A resolution without a diagnosis keeps the stored one (see `AlertChange`),
// one without cells the stored cells.
const UPSERT_RESOLVED: &str = "INSERT INTO alerts (id, device, model, model_version, state, \
     severity, opened_at, resolved_at, score, peak_score, threshold, contributors, \
     window_start, window_end, diagnosis, cells) \
     VALUES (?1, ?2, ?3, ?4, 'resolved', ?5, ?6, ?15, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14) \
     ON CONFLICT (id) DO UPDATE SET \
       state = 'resolved', \
       resolved_at = coalesce(alerts.resolved_at, excluded.resolved_at), \
       diagnosis = coalesce(excluded.diagnosis, alerts.diagnosis), \
       cells = coalesce(excluded.cells, alerts.cells), \
       peak_score = max(alerts.peak_score, excluded.peak_score), \
       severity = CASE WHEN 'critical' IN (alerts.severity, excluded.severity) \
                       THEN 'critical' ELSE 'warning' END";

// Open alerts only: a resolved alert keeps its final diagnosis. An unknown
// id updates nothing.
const UPDATE_DIAGNOSED: &str = "UPDATE alerts SET diagnosis = coalesce(?2, diagnosis) \
     WHERE id = ?1 AND state = 'open'";

/// One connection behind a mutex (SQLite serialises writers anyway, and
/// reads here are short index scans).
pub(crate) struct SqliteStore {
    conn: Mutex<Connection>,
}

impl SqliteStore {
    pub(crate) fn open(path: &Path) -> Result<Self, StoreError> {
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

    pub(crate) fn open_in_memory() -> Result<Self, StoreError> {
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

    pub(crate) fn conn(&self) -> MutexGuard<'_, Connection> {
        // A panic mid-transaction drops the Transaction, which rolls back:
        // the connection is consistent, so keep using it.
        self.conn.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub(crate) fn apply(&self, changes: &[AlertChange]) -> Result<(), StoreError> {
        let mut conn = self.conn();
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        {
            let mut opened = tx.prepare_cached(INSERT_OPENED)?;
            let mut resolved = tx.prepare_cached(UPSERT_RESOLVED)?;
            let mut diagnosed = tx.prepare_cached(UPDATE_DIAGNOSED)?;
            for change in changes {
                let diagnosis = change.diagnosis_json()?;
                let a = match change {
                    AlertChange::Diagnosed(a) => {
                        diagnosed.execute(params![a.id, diagnosis])?;
                        continue;
                    }
                    AlertChange::Opened(a) | AlertChange::Resolved(a) => a,
                };
                let contributors = serde_json::to_string(&a.contributors)?;
                let cells = change.cells_json()?;
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
                    diagnosis,
                    cells,
                ];
                if let AlertChange::Resolved(_) = change {
                    let mut all: Vec<&dyn rusqlite::ToSql> = common.to_vec();
                    all.push(&a.resolved_at);
                    resolved.execute(all.as_slice())?;
                } else {
                    opened.execute(common)?;
                }
            }
        }
        tx.commit()?;
        Ok(())
    }

    pub(crate) fn get(&self, id: &str) -> Result<Option<AlertRecord>, StoreError> {
        let conn = self.conn();
        let mut stmt =
            conn.prepare_cached(&format!("SELECT {COLUMNS} FROM alerts WHERE id = ?1"))?;
        let raw = stmt.query_row([id], from_row).optional()?;
        raw.map(RawAlert::into_record).transpose()
    }

    pub(crate) fn acknowledge(
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
            from_row,
        )?;
        tx.commit()?;
        raw.into_record().map(Some)
    }

    pub(crate) fn list(&self, q: &AlertQuery) -> Result<AlertPage, StoreError> {
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
            stmt.query_map(params_from_iter(args), from_row)?
                .collect::<Result<_, _>>()?
        };
        page_from(q.order, limit, raws)
    }

    pub(crate) fn count_open(&self) -> Result<u64, StoreError> {
        let n: i64 = self.conn().query_row(
            "SELECT count(*) FROM alerts WHERE state = 'open'",
            [],
            |r| r.get(0),
        )?;
        Ok(u64::try_from(n).unwrap_or(0))
    }

    pub(crate) fn delete_resolved_before(&self, cutoff_ms: i64) -> Result<usize, StoreError> {
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

fn from_row(r: &Row<'_>) -> rusqlite::Result<RawAlert> {
    Ok(RawAlert {
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
        diagnosis: r.get(17)?,
        cells: r.get(18)?,
    })
}
