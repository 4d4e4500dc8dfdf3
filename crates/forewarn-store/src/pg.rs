//! The PostgreSQL backend (`store.url`): several `forewarn serve` instances
//! write to one database and each serves the full alert list.
//!
//! Same semantics as the SQLite backend: every write is one statement with
//! `ON CONFLICT`, so concurrent writers from several instances never lose
//! an update; `apply` runs in one transaction, its changes sorted by alert
//! id so that two instances applying overlapping batches lock rows in the
//! same order (no deadlock). Migrations are versioned in the
//! `forewarn_schema_migrations` table and applied in one transaction under
//! an advisory lock, so instances starting at once migrate exactly once.
//!
//! The client is the synchronous `postgres` crate: each connection carries
//! a small current-thread runtime, so the store must be called off the
//! async runtime (every caller uses `spawn_blocking`). Dropping the store
//! closes its connections on a thread of its own, so the last `Arc` may be
//! dropped anywhere. TLS (rustls) with libpq's `sslmode` and `sslrootcert`
//! URL parameters: see `tls`.

use std::sync::{Condvar, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use postgres::config::SslMode;
use postgres::types::ToSql;
use postgres::{Client, NoTls, Row};
use tokio_postgres_rustls::MakeRustlsConnect;

use crate::tls::TlsMode;

use crate::error::StoreError;
use crate::record::{
    Acknowledgement, AlertChange, AlertPage, AlertQuery, AlertRecord, MAX_LIMIT, Order, RawAlert,
    decode_cursor, page_from,
};
use crate::url::redact_url;

/// Schema migrations; migration `i` is recorded as version `i + 1` in
/// `forewarn_schema_migrations`.
pub const PG_MIGRATIONS: &[&str] = &[
    // 1: the alerts table (with acknowledgement) and its indexes. Ids sort
    // bytewise (COLLATE "C") like SQLite's, so keyset cursors agree.
    // CHECKs refuse NaN scores, which SQLite refuses as NULL.
    r#"
    CREATE TABLE forewarn_alerts (
        id              TEXT COLLATE "C" NOT NULL PRIMARY KEY,
        device          TEXT    NOT NULL,
        model           TEXT    NOT NULL,
        model_version   TEXT    NOT NULL,
        state           TEXT    NOT NULL CHECK (state IN ('open', 'resolved')),
        severity        TEXT    NOT NULL CHECK (severity IN ('warning', 'critical')),
        opened_at       BIGINT  NOT NULL,
        resolved_at     BIGINT,
        score           DOUBLE PRECISION NOT NULL CHECK (score <> 'NaN'),
        peak_score      DOUBLE PRECISION NOT NULL CHECK (peak_score <> 'NaN'),
        threshold       DOUBLE PRECISION NOT NULL CHECK (threshold <> 'NaN'),
        contributors    JSONB   NOT NULL,
        window_start    BIGINT  NOT NULL,
        window_end      BIGINT  NOT NULL,
        acknowledged_at BIGINT,
        acknowledged_by TEXT,
        ack_note        TEXT
    );
    CREATE INDEX forewarn_alerts_by_time    ON forewarn_alerts (opened_at, id);
    CREATE INDEX forewarn_alerts_by_device  ON forewarn_alerts (device, opened_at, id);
    CREATE INDEX forewarn_alerts_by_state   ON forewarn_alerts (state, opened_at, id);
    CREATE INDEX forewarn_alerts_by_channel ON forewarn_alerts USING gin (contributors jsonb_path_ops);
    "#,
    // 2: the fault classifier's diagnosis, NULL without one.
    r#"
    ALTER TABLE forewarn_alerts ADD COLUMN diagnosis JSONB;
    "#,
    // 3: the grid cells behind the error, NULL for models without a grid.
    r#"
    ALTER TABLE forewarn_alerts ADD COLUMN cells JSONB;
    "#,
];

/// The Postgres schema version this build writes.
pub const PG_SCHEMA_VERSION: i64 = PG_MIGRATIONS.len() as i64;

/// Connections one store keeps open at most (the pipeline's writes and
/// the API's reads share them).
pub const PG_POOL_SIZE: usize = 4;

/// Advisory lock key held while migrating ("forewarn" in ASCII).
const MIGRATION_LOCK: i64 = 0x666f_7265_7761_726e;

/// Per-attempt connect timeout when the URL sets none.
const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

const COLUMNS: &str = "id, device, model, model_version, state, severity, opened_at, \
                       resolved_at, score, peak_score, threshold, contributors::text, \
                       window_start, window_end, acknowledged_at, acknowledged_by, ack_note, \
                       diagnosis::text, cells::text";

const INSERT_OPENED: &str = "INSERT INTO forewarn_alerts (id, device, model, model_version, \
     state, severity, opened_at, resolved_at, score, peak_score, threshold, contributors, \
     window_start, window_end, diagnosis, cells) \
     VALUES ($1, $2, $3, $4, 'open', $5, $6, NULL, $7, $8, $9, $10::text::jsonb, $11, $12, \
             $13::text::jsonb, $14::text::jsonb) \
     ON CONFLICT (id) DO NOTHING";

// A resolution without a diagnosis keeps the stored one (see `AlertChange`),
// one without cells the stored cells.
const UPSERT_RESOLVED: &str = "INSERT INTO forewarn_alerts (id, device, model, model_version, \
     state, severity, opened_at, resolved_at, score, peak_score, threshold, contributors, \
     window_start, window_end, diagnosis, cells) \
     VALUES ($1, $2, $3, $4, 'resolved', $5, $6, $15, $7, $8, $9, $10::text::jsonb, $11, $12, \
             $13::text::jsonb, $14::text::jsonb) \
     ON CONFLICT (id) DO UPDATE SET \
       state = 'resolved', \
       resolved_at = coalesce(forewarn_alerts.resolved_at, excluded.resolved_at), \
       diagnosis = coalesce(excluded.diagnosis, forewarn_alerts.diagnosis), \
       cells = coalesce(excluded.cells, forewarn_alerts.cells), \
       peak_score = greatest(forewarn_alerts.peak_score, excluded.peak_score), \
       severity = CASE WHEN 'critical' IN (forewarn_alerts.severity, excluded.severity) \
                       THEN 'critical' ELSE 'warning' END";

// Open alerts only: a resolved alert keeps its final diagnosis. An unknown
// id updates nothing.
const UPDATE_DIAGNOSED: &str = "UPDATE forewarn_alerts \
     SET diagnosis = coalesce($2::text::jsonb, diagnosis) WHERE id = $1 AND state = 'open'";

/// Parses and checks a `postgres://` / `postgresql://` URL, and builds its
/// TLS client (reading `sslrootcert`). Error messages show the URL with its
/// password masked.
pub(crate) fn parse_url(
    url: &str,
) -> Result<(postgres::Config, Option<MakeRustlsConnect>), StoreError> {
    let bad = |why: String| StoreError::BadUrl {
        url: redact_url(url),
        why,
    };
    if !(url.starts_with("postgres://") || url.starts_with("postgresql://")) {
        return Err(bad("expected a postgres:// or postgresql:// URL".into()));
    }
    // sslmode and sslrootcert are ours (the postgres crate knows neither
    // verify-* nor sslrootcert); the rest goes to the postgres crate.
    let (base, query) = url.split_once('?').unwrap_or((url, ""));
    let (mut sslmode, mut rootcert) = (None, None);
    let mut rest = Vec::new();
    for kv in query.split('&').filter(|kv| !kv.is_empty()) {
        match kv.split_once('=') {
            Some(("sslmode", v)) => sslmode = Some(v),
            Some(("sslrootcert", v)) => rootcert = Some(v),
            _ => rest.push(kv),
        }
    }
    let tls = TlsMode::parse(sslmode, rootcert).map_err(&bad)?;
    let stripped = if rest.is_empty() {
        base.to_string()
    } else {
        format!("{base}?{}", rest.join("&"))
    };
    let mut config: postgres::Config = stripped.parse().map_err(|e| bad(format!("{e}")))?;
    if config.get_hosts().is_empty() {
        return Err(bad("it names no host".into()));
    }
    match (&tls, sslmode) {
        (TlsMode::Plain, Some("disable")) => {
            config.ssl_mode(SslMode::Disable);
        }
        (TlsMode::Plain, _) => {}
        _ => {
            config.ssl_mode(SslMode::Require);
        }
    }
    if config.get_connect_timeout().is_none() {
        config.connect_timeout(DEFAULT_CONNECT_TIMEOUT);
    }
    if config.get_application_name().is_none() {
        config.application_name("forewarn");
    }
    let connector = tls
        .client_config()
        .map_err(bad)?
        .map(MakeRustlsConnect::new);
    Ok((config, connector))
}

pub(crate) struct PgStore {
    config: postgres::Config,
    /// The TLS client when `sslmode` asks for TLS.
    tls: Option<MakeRustlsConnect>,
    /// The URL with its password masked, for messages.
    shown: String,
    pool: Mutex<Pool>,
    freed: Condvar,
}

#[derive(Default)]
struct Pool {
    idle: Vec<Client>,
    /// Connections open, idle or lent.
    open: usize,
}

impl PgStore {
    /// Connects, migrates and keeps the connection for the pool.
    pub(crate) fn connect(url: &str) -> Result<Self, StoreError> {
        let (config, tls) = parse_url(url)?;
        let store = Self {
            config,
            tls,
            shown: redact_url(url),
            pool: Mutex::new(Pool::default()),
            freed: Condvar::new(),
        };
        {
            let mut c = store.checkout()?;
            migrate(&mut c)?;
        }
        Ok(store)
    }

    fn pool(&self) -> MutexGuard<'_, Pool> {
        self.pool.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// An idle connection, a new one while fewer than [`PG_POOL_SIZE`] are
    /// open, or the next one given back.
    fn checkout(&self) -> Result<Pooled<'_>, StoreError> {
        let mut pool = self.pool();
        loop {
            while let Some(c) = pool.idle.pop() {
                if !c.is_closed() {
                    return Ok(Pooled {
                        store: self,
                        client: Some(c),
                    });
                }
                pool.open -= 1;
            }
            if pool.open < PG_POOL_SIZE {
                pool.open += 1;
                drop(pool);
                let connected = match &self.tls {
                    Some(tls) => self.config.connect(tls.clone()),
                    None => self.config.connect(NoTls),
                };
                return match connected {
                    Ok(c) => Ok(Pooled {
                        store: self,
                        client: Some(c),
                    }),
                    Err(source) => {
                        self.pool().open -= 1;
                        self.freed.notify_one();
                        Err(StoreError::Connect {
                            url: self.shown.clone(),
                            source,
                        })
                    }
                };
            }
            pool = self
                .freed
                .wait(pool)
                .unwrap_or_else(PoisonError::into_inner);
        }
    }

    /// Runs `f` on a pooled connection. When the connection turns out to
    /// be closed (the server restarted since it was last used), the idle
    /// connections are dropped and `f` runs once more on a fresh one: every
    /// operation here is idempotent.
    fn with_client<T>(
        &self,
        mut f: impl FnMut(&mut Client) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let mut retried = false;
        loop {
            let mut c = self.checkout()?;
            match f(&mut c) {
                Err(StoreError::Postgres(e)) if !retried && (e.is_closed() || c.is_closed()) => {
                    retried = true;
                    // The other idle connections most likely died with it
                    // (a server restart): open fresh ones.
                    let stale = {
                        let mut pool = self.pool();
                        let stale = std::mem::take(&mut pool.idle);
                        pool.open -= stale.len();
                        stale
                    };
                    drop(stale);
                }
                r => return r,
            }
        }
    }

    pub(crate) fn apply(&self, changes: &[AlertChange]) -> Result<(), StoreError> {
        let mut sorted: Vec<&AlertChange> = changes.iter().collect();
        // Stable: changes of one alert keep their order.
        sorted.sort_by(|a, b| change_id(a).cmp(change_id(b)));
        let rows = sorted
            .iter()
            .map(|c| {
                let contributors = serde_json::to_string(&c.alert().contributors)?;
                Ok((*c, contributors, c.diagnosis_json()?, c.cells_json()?))
            })
            .collect::<Result<Vec<_>, StoreError>>()?;
        self.with_client(|c| {
            let mut tx = c.transaction()?;
            let opened = tx.prepare(INSERT_OPENED)?;
            let resolved = tx.prepare(UPSERT_RESOLVED)?;
            let diagnosed = tx.prepare(UPDATE_DIAGNOSED)?;
            for (change, contributors, diagnosis, cells) in &rows {
                let (stmt, a) = match change {
                    AlertChange::Diagnosed(a) => {
                        tx.execute(&diagnosed, &[&a.id, diagnosis])?;
                        continue;
                    }
                    AlertChange::Opened(a) => (&opened, a),
                    AlertChange::Resolved(a) => (&resolved, a),
                };
                let severity = a.severity.as_str();
                let mut params: Vec<&(dyn ToSql + Sync)> = vec![
                    &a.id,
                    &a.device,
                    &a.model,
                    &a.model_version,
                    &severity,
                    &a.opened_at,
                    &a.score,
                    &a.peak_score,
                    &a.threshold,
                    contributors,
                    &a.window_start,
                    &a.window_end,
                    diagnosis,
                    cells,
                ];
                if let AlertChange::Resolved(_) = change {
                    params.push(&a.resolved_at);
                }
                tx.execute(stmt, &params)?;
            }
            tx.commit()?;
            Ok(())
        })
    }

    pub(crate) fn get(&self, id: &str) -> Result<Option<AlertRecord>, StoreError> {
        let sql = format!("SELECT {COLUMNS} FROM forewarn_alerts WHERE id = $1");
        let raw = self.with_client(|c| {
            c.query_opt(&sql, &[&id])?
                .map(|r| from_row(&r))
                .transpose()
                .map_err(Into::into)
        })?;
        raw.map(RawAlert::into_record).transpose()
    }

    pub(crate) fn acknowledge(
        &self,
        id: &str,
        ack: &Acknowledgement,
    ) -> Result<Option<AlertRecord>, StoreError> {
        let sql = format!(
            "UPDATE forewarn_alerts SET acknowledged_at = $2, acknowledged_by = $3, \
             ack_note = $4 WHERE id = $1 RETURNING {COLUMNS}"
        );
        let raw = self.with_client(|c| {
            c.query_opt(&sql, &[&id, &ack.at, &ack.by, &ack.note])?
                .map(|r| from_row(&r))
                .transpose()
                .map_err(Into::into)
        })?;
        raw.map(RawAlert::into_record).transpose()
    }

    pub(crate) fn list(&self, q: &AlertQuery) -> Result<AlertPage, StoreError> {
        enum Arg {
            Text(String),
            Int(i64),
        }
        let limit = q.limit.clamp(1, MAX_LIMIT);
        let mut sql = format!("SELECT {COLUMNS} FROM forewarn_alerts WHERE true");
        let mut args: Vec<Arg> = Vec::new();
        // Adds a parameter, returns its placeholder.
        let mut p = |arg: Arg| {
            args.push(arg);
            format!("${}", args.len())
        };
        if let Some(d) = &q.device {
            sql.push_str(&format!(" AND device = {}", p(Arg::Text(d.clone()))));
        }
        if let Some(s) = q.state {
            sql.push_str(&format!(" AND state = {}", p(Arg::Text(s.as_str().into()))));
        }
        if let Some(s) = q.severity {
            sql.push_str(&format!(
                " AND severity = {}",
                p(Arg::Text(s.as_str().into()))
            ));
        }
        if let Some(c) = &q.channel {
            let pattern = serde_json::json!([{ "channel": c }]).to_string();
            sql.push_str(&format!(
                " AND contributors @> {}::text::jsonb",
                p(Arg::Text(pattern))
            ));
        }
        match q.acknowledged {
            Some(true) => sql.push_str(" AND acknowledged_at IS NOT NULL"),
            Some(false) => sql.push_str(" AND acknowledged_at IS NULL"),
            None => {}
        }
        if let Some(from) = q.from {
            sql.push_str(&format!(" AND opened_at >= {}", p(Arg::Int(from))));
        }
        if let Some(to) = q.to {
            sql.push_str(&format!(" AND opened_at < {}", p(Arg::Int(to))));
        }
        let (after, dir) = match q.order {
            Order::NewestFirst => ("<", "DESC"),
            Order::OldestFirst => (">", "ASC"),
        };
        if let Some(c) = &q.cursor {
            let (at, id) = decode_cursor(q.order, c)?;
            let (at, id) = (p(Arg::Int(at)), p(Arg::Text(id)));
            sql.push_str(&format!(" AND (opened_at, id) {after} ({at}, {id})"));
        }
        // One extra row tells whether another page exists.
        let n = p(Arg::Int(limit as i64 + 1));
        sql.push_str(&format!(" ORDER BY opened_at {dir}, id {dir} LIMIT {n}"));
        let params: Vec<&(dyn ToSql + Sync)> = args
            .iter()
            .map(|a| match a {
                Arg::Text(s) => s as &(dyn ToSql + Sync),
                Arg::Int(i) => i as &(dyn ToSql + Sync),
            })
            .collect();
        let raws = self.with_client(|c| {
            c.query(&sql, &params)?
                .iter()
                .map(from_row)
                .collect::<Result<Vec<_>, _>>()
                .map_err(Into::into)
        })?;
        page_from(q.order, limit, raws)
    }

    pub(crate) fn count_open(&self) -> Result<u64, StoreError> {
        let n: i64 = self.with_client(|c| {
            Ok(c.query_one(
                "SELECT count(*) FROM forewarn_alerts WHERE state = 'open'",
                &[],
            )?
            .try_get(0)?)
        })?;
        Ok(u64::try_from(n).unwrap_or(0))
    }

    pub(crate) fn delete_resolved_before(&self, cutoff_ms: i64) -> Result<usize, StoreError> {
        let n = self.with_client(|c| {
            Ok(c.execute(
                "DELETE FROM forewarn_alerts WHERE state = 'resolved' AND resolved_at < $1",
                &[&cutoff_ms],
            )?)
        })?;
        Ok(usize::try_from(n).unwrap_or(usize::MAX))
    }

    /// The schema version recorded in the database.
    #[cfg(test)]
    pub(crate) fn schema_version(&self) -> Result<i64, StoreError> {
        self.with_client(|c| {
            Ok(c.query_one(
                "SELECT coalesce(max(version), 0)::bigint FROM forewarn_schema_migrations",
                &[],
            )?
            .try_get(0)?)
        })
    }
}

impl Drop for PgStore {
    fn drop(&mut self) {
        let idle = std::mem::take(&mut self.pool().idle);
        if idle.is_empty() {
            return;
        }
        // Closing a connection runs its runtime, which must not happen on
        // an async worker thread: close them on a thread of their own.
        let closer = std::thread::Builder::new()
            .name("forewarn-pg-close".into())
            .spawn(move || drop(idle));
        if let Ok(t) = closer {
            let _ = t.join();
        }
    }
}

/// A connection lent by the pool, given back (or discarded when closed)
/// on drop.
struct Pooled<'a> {
    store: &'a PgStore,
    client: Option<Client>,
}

impl std::ops::Deref for Pooled<'_> {
    type Target = Client;
    fn deref(&self) -> &Client {
        self.client.as_ref().expect("client present until drop")
    }
}

impl std::ops::DerefMut for Pooled<'_> {
    fn deref_mut(&mut self) -> &mut Client {
        self.client.as_mut().expect("client present until drop")
    }
}

impl Drop for Pooled<'_> {
    fn drop(&mut self) {
        let Some(c) = self.client.take() else { return };
        let closed = c.is_closed();
        {
            let mut pool = self.store.pool();
            if closed {
                pool.open -= 1;
            } else {
                pool.idle.push(c);
            }
        }
        self.store.freed.notify_one();
    }
}

fn change_id(c: &AlertChange) -> &str {
    &c.alert().id
}

fn migrate(c: &mut Client) -> Result<(), StoreError> {
    let mut tx = c.transaction()?;
    // Held until commit: a second instance starting at the same time waits
    // here, then finds the migrations done.
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])?;
    let exists: bool = tx
        .query_one(
            "SELECT to_regclass('forewarn_schema_migrations') IS NOT NULL",
            &[],
        )?
        .try_get(0)?;
    if !exists {
        tx.batch_execute(
            "CREATE TABLE forewarn_schema_migrations (
                 version    BIGINT      NOT NULL PRIMARY KEY,
                 applied_at TIMESTAMPTZ NOT NULL DEFAULT now()
             )",
        )?;
    }
    let found: i64 = tx
        .query_one(
            "SELECT coalesce(max(version), 0)::bigint FROM forewarn_schema_migrations",
            &[],
        )?
        .try_get(0)?;
    if found > PG_SCHEMA_VERSION {
        return Err(StoreError::SchemaTooNew {
            found,
            supported: PG_SCHEMA_VERSION,
        });
    }
    for (i, sql) in PG_MIGRATIONS.iter().enumerate().skip(found.max(0) as usize) {
        tx.batch_execute(sql)?;
        tx.execute(
            "INSERT INTO forewarn_schema_migrations (version) VALUES ($1)",
            &[&(i as i64 + 1)],
        )?;
    }
    tx.commit()?;
    Ok(())
}

fn from_row(r: &Row) -> Result<RawAlert, postgres::Error> {
    Ok(RawAlert {
        id: r.try_get(0)?,
        device: r.try_get(1)?,
        model: r.try_get(2)?,
        model_version: r.try_get(3)?,
        state: r.try_get(4)?,
        severity: r.try_get(5)?,
        opened_at: r.try_get(6)?,
        resolved_at: r.try_get(7)?,
        score: r.try_get(8)?,
        peak_score: r.try_get(9)?,
        threshold: r.try_get(10)?,
        contributors: r.try_get(11)?,
        window_start: r.try_get(12)?,
        window_end: r.try_get(13)?,
        acknowledged_at: r.try_get(14)?,
        acknowledged_by: r.try_get(15)?,
        ack_note: r.try_get(16)?,
        diagnosis: r.try_get(17)?,
        cells: r.try_get(18)?,
    })
}
