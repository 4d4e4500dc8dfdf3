//! Forewarn's alert store: an embedded SQLite database (the default) or a
//! PostgreSQL database shared by several `forewarn serve` instances
//! (`store.url`). [`AlertStore`] has one API over both and the same
//! semantics; the backend-specific parts live in `sqlite` and `postgres`.
//!
//! # Durability
//! SQLite runs in WAL mode with `synchronous = FULL`: every committed
//! transaction is fsynced to the write-ahead log before [`AlertStore::apply`]
//! returns, so an alert survives a power loss, not just a process crash.
//! Postgres commits with the server's `synchronous_commit` (on by default:
//! flushed to its WAL before the commit returns). The pipeline commits
//! Kafka offsets only after `apply` returns `Ok`, and it batches a whole
//! flush's alert changes into one call, so the cost is one fsync per flush
//! that changed alerts (most flushes change none). `synchronous = NORMAL`
//! would skip that fsync and could lose the last transactions on power loss
//! after their offsets were committed, which is exactly the "crash never
//! loses an alert" promise broken.
//!
//! # Idempotence
//! Alert ids are deterministic (device, model version, start of the
//! anomalous streak), so a crash replay re-applies the same changes:
//! re-applying `Opened` never duplicates a row nor turns a resolved alert
//! back to open, and `Resolved` upserts (it inserts the alert when its
//! opening was never stored). The first stored resolution time wins. Each
//! change is one `INSERT .. ON CONFLICT` statement, so this also holds with
//! several instances writing to one Postgres database at once.
//!
//! # Schema
//! SQLite: versioned with `PRAGMA user_version`; [`MIGRATIONS`] run in
//! order on open, each in its own transaction. Postgres: versioned in the
//! `forewarn_schema_migrations` table; [`PG_MIGRATIONS`] run in one
//! transaction under an advisory lock. A database newer than this build is
//! refused rather than guessed at.
//!
//! # Threads
//! Every method blocks: call them off the async runtime (the service uses
//! `tokio::task::spawn_blocking`). The Postgres client runs a small runtime
//! of its own per connection and panics when called on an async worker.

use std::path::{Path, PathBuf};

use forewarn_core::{Alert, AlertState, ChannelShare, Severity};
use serde::{Deserialize, Serialize};

mod pg;
mod sqlite;
#[cfg(any(test, feature = "test-support"))]
pub mod testing;
mod tls;

pub use pg::{PG_MIGRATIONS, PG_POOL_SIZE, PG_SCHEMA_VERSION};
pub use sqlite::{MIGRATIONS, SCHEMA_VERSION};

/// Default page size of [`AlertStore::list`].
pub const DEFAULT_LIMIT: usize = 100;
/// Largest page size of [`AlertStore::list`].
pub const MAX_LIMIT: usize = 1000;

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
         run a newer Forewarn or use another database"
    )]
    SchemaTooNew { found: i64, supported: i64 },
    #[error("malformed pagination cursor")]
    BadCursor,
    #[error("stored alert {id} is unreadable: {detail}")]
    Corrupt { id: String, detail: String },
    #[error("alert database error: {0}")]
    Sqlite(#[from] rusqlite::Error),
    #[error("invalid store.url {url}: {why}")]
    BadUrl { url: String, why: String },
    #[error("cannot connect to the Postgres alert store at {url}: {}", with_causes(.source))]
    Connect {
        /// The URL with its password masked.
        url: String,
        source: ::postgres::Error,
    },
    #[error("alert database error: {0}")]
    Postgres(#[from] ::postgres::Error),
    #[error("cannot encode alert contributors: {0}")]
    Encode(#[from] serde_json::Error),
}

/// A change to persist, as the engine reports it.
#[derive(Debug, Clone, PartialEq)]
pub enum AlertChange {
    Opened(Alert),
    Resolved(Alert),
}

impl AlertChange {
    /// Timestamp (epoch ms) of the reading that made this change.
    pub fn reading_ts(&self) -> i64 {
        match self {
            AlertChange::Opened(a) => a.opened_at,
            AlertChange::Resolved(a) => a.resolved_at.unwrap_or(a.opened_at),
        }
    }
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

/// The first `limit` of `raws` (fetched with one extra row) as a page,
/// with a cursor when the extra row shows that more match.
fn page_from(order: Order, limit: usize, raws: Vec<RawAlert>) -> Result<AlertPage, StoreError> {
    let more = raws.len() > limit;
    let alerts = raws
        .into_iter()
        .take(limit)
        .map(RawAlert::into_record)
        .collect::<Result<Vec<_>, _>>()?;
    let next_cursor = match alerts.last() {
        Some(last) if more => Some(encode_cursor(order, last.opened_at, &last.id)),
        _ => None,
    };
    Ok(AlertPage {
        alerts,
        next_cursor,
    })
}

/// An error and its causes ("error performing TLS handshake: invalid peer
/// certificate: UnknownIssuer"): the postgres crate's message alone omits why.
fn with_causes(e: &::postgres::Error) -> String {
    let mut text = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        let next = s.to_string();
        if !text.contains(&next) {
            text.push_str(": ");
            text.push_str(&next);
        }
        source = s.source();
    }
    text
}

/// `url` with its password (userinfo, `password=` parameter, or
/// `password=` in a key=value string) replaced by `***`, for logs and
/// messages.
pub fn redact_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        // A key=value connection string.
        return url
            .split_whitespace()
            .map(|kv| match kv.split_once('=') {
                Some((k, _)) if k.eq_ignore_ascii_case("password") => format!("{k}=***"),
                _ => kv.to_owned(),
            })
            .collect::<Vec<_>>()
            .join(" ");
    };
    let (before_query, query) = match rest.split_once('?') {
        Some((b, q)) => (b, Some(q)),
        None => (rest, None),
    };
    let mut out = format!("{scheme}://");
    match before_query.rsplit_once('@') {
        Some((userinfo, hosts)) => {
            match userinfo.split_once(':') {
                Some((user, _)) => out.push_str(&format!("{user}:***")),
                None => out.push_str(userinfo),
            }
            out.push('@');
            out.push_str(hosts);
        }
        None => out.push_str(before_query),
    }
    if let Some(q) = query {
        let params: Vec<String> = q
            .split('&')
            .map(|kv| match kv.split_once('=') {
                Some((k, _)) if k.eq_ignore_ascii_case("password") => format!("{k}=***"),
                _ => kv.to_owned(),
            })
            .collect();
        out.push('?');
        out.push_str(&params.join("&"));
    }
    out
}

/// Checks a Postgres URL without connecting (for `forewarn config check`):
/// `postgres://` or `postgresql://`, parseable, names a host, has
/// a valid `sslmode`, and a readable `sslrootcert` where one is needed.
pub fn validate_url(url: &str) -> Result<(), StoreError> {
    pg::parse_url(url).map(drop)
}

/// The alert store. `Send + Sync`; every method blocks (see the module
/// docs).
pub struct AlertStore {
    backend: Backend,
}

enum Backend {
    Sqlite(sqlite::SqliteStore),
    Postgres(Box<pg::PgStore>),
}

impl std::fmt::Debug for AlertStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AlertStore")
            .field("backend", &self.backend_name())
            .finish_non_exhaustive()
    }
}

impl StoreError {
    /// Whether retrying later may succeed: the server is unreachable,
    /// starting up or out of connections. A refused login, a missing
    /// database, a bad URL or a too-new schema are not.
    pub fn is_transient(&self) -> bool {
        let e = match self {
            StoreError::Connect { source, .. } | StoreError::Postgres(source) => source,
            _ => return false,
        };
        // A refused certificate or a server without TLS stays so.
        if e.to_string().starts_with("error performing TLS handshake") {
            return false;
        }
        match e.code() {
            None => true,
            Some(code) => [
                ::postgres::error::SqlState::CANNOT_CONNECT_NOW,
                ::postgres::error::SqlState::TOO_MANY_CONNECTIONS,
                ::postgres::error::SqlState::ADMIN_SHUTDOWN,
                ::postgres::error::SqlState::CRASH_SHUTDOWN,
            ]
            .contains(code),
        }
    }
}

impl AlertStore {
    /// Opens (creating it and its parent directories if needed) the SQLite
    /// database at `path` and migrates it to [`SCHEMA_VERSION`].
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        Ok(Self {
            backend: Backend::Sqlite(sqlite::SqliteStore::open(path)?),
        })
    }

    /// A private, non-durable SQLite database, for tests and dry runs.
    pub fn open_in_memory() -> Result<Self, StoreError> {
        Ok(Self {
            backend: Backend::Sqlite(sqlite::SqliteStore::open_in_memory()?),
        })
    }

    /// Connects to the Postgres database at `url` (`postgres://user:pass@host:port/db`;
    /// see [`validate_url`]) and migrates it to [`PG_SCHEMA_VERSION`]. One
    /// attempt: the caller decides whether to retry ([`StoreError::is_transient`]).
    /// Keeps up to [`PG_POOL_SIZE`] connections. Call it off the async runtime.
    pub fn connect(url: &str) -> Result<Self, StoreError> {
        Ok(Self {
            backend: Backend::Postgres(Box::new(pg::PgStore::connect(url)?)),
        })
    }

    /// `"sqlite"` or `"postgres"`.
    pub fn backend_name(&self) -> &'static str {
        match self.backend {
            Backend::Sqlite(_) => "sqlite",
            Backend::Postgres(_) => "postgres",
        }
    }

    /// Applies `changes` in one transaction. When this returns `Ok`, they
    /// are durable. Idempotent (see the module docs).
    pub fn apply(&self, changes: &[AlertChange]) -> Result<(), StoreError> {
        if changes.is_empty() {
            return Ok(());
        }
        match &self.backend {
            Backend::Sqlite(s) => s.apply(changes),
            Backend::Postgres(s) => s.apply(changes),
        }
    }

    pub fn get(&self, id: &str) -> Result<Option<AlertRecord>, StoreError> {
        match &self.backend {
            Backend::Sqlite(s) => s.get(id),
            Backend::Postgres(s) => s.get(id),
        }
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
        match &self.backend {
            Backend::Sqlite(s) => s.acknowledge(id, ack),
            Backend::Postgres(s) => s.acknowledge(id, ack),
        }
    }

    /// Alerts matching `q` in `q.order` by (`opened_at`, `id`), one page
    /// at a time with a keyset cursor (stable under concurrent inserts).
    pub fn list(&self, q: &AlertQuery) -> Result<AlertPage, StoreError> {
        match &self.backend {
            Backend::Sqlite(s) => s.list(q),
            Backend::Postgres(s) => s.list(q),
        }
    }

    pub fn count_open(&self) -> Result<u64, StoreError> {
        match &self.backend {
            Backend::Sqlite(s) => s.count_open(),
            Backend::Postgres(s) => s.count_open(),
        }
    }

    /// Deletes resolved alerts resolved before `cutoff_ms` (retention);
    /// returns how many were deleted. Open alerts are never deleted.
    pub fn delete_resolved_before(&self, cutoff_ms: i64) -> Result<usize, StoreError> {
        match &self.backend {
            Backend::Sqlite(s) => s.delete_resolved_before(cutoff_ms),
            Backend::Postgres(s) => s.delete_resolved_before(cutoff_ms),
        }
    }

    #[cfg(test)]
    fn sqlite(&self) -> &sqlite::SqliteStore {
        match &self.backend {
            Backend::Sqlite(s) => s,
            Backend::Postgres(_) => panic!("not a SQLite store"),
        }
    }

    #[cfg(test)]
    fn postgres(&self) -> &pg::PgStore {
        match &self.backend {
            Backend::Postgres(s) => s,
            Backend::Sqlite(_) => panic!("not a Postgres store"),
        }
    }
}

/// A row as stored, before its text columns are parsed.
pub(crate) struct RawAlert {
    pub(crate) id: String,
    pub(crate) device: String,
    pub(crate) model: String,
    pub(crate) model_version: String,
    pub(crate) state: String,
    pub(crate) severity: String,
    pub(crate) opened_at: i64,
    pub(crate) resolved_at: Option<i64>,
    pub(crate) score: f64,
    pub(crate) peak_score: f64,
    pub(crate) threshold: f64,
    pub(crate) contributors: String,
    pub(crate) window_start: i64,
    pub(crate) window_end: i64,
    pub(crate) acknowledged_at: Option<i64>,
    pub(crate) acknowledged_by: Option<String>,
    pub(crate) ack_note: Option<String>,
}

impl RawAlert {
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
