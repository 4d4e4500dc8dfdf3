//! [`AlertStore`]: one API over the SQLite and Postgres backends.

use std::path::Path;

use crate::error::StoreError;
use crate::pg;
use crate::record::{Acknowledgement, AlertChange, AlertPage, AlertQuery, AlertRecord};
use crate::sqlite;

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

impl AlertStore {
    /// Opens (creating it and its parent directories if needed) the SQLite
    /// database at `path` and migrates it to [`SCHEMA_VERSION`](crate::SCHEMA_VERSION).
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
    /// see [`validate_url`]) and migrates it to [`PG_SCHEMA_VERSION`](crate::PG_SCHEMA_VERSION). One
    /// attempt: the caller decides whether to retry ([`StoreError::is_transient`]).
    /// Keeps up to [`PG_POOL_SIZE`](crate::PG_POOL_SIZE) connections. Call it off the async runtime.
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
    pub(crate) fn sqlite(&self) -> &sqlite::SqliteStore {
        match &self.backend {
            Backend::Sqlite(s) => s,
            Backend::Postgres(_) => panic!("not a SQLite store"),
        }
    }

    #[cfg(test)]
    pub(crate) fn postgres(&self) -> &pg::PgStore {
        match &self.backend {
            Backend::Postgres(s) => s,
            Backend::Sqlite(_) => panic!("not a Postgres store"),
        }
    }
}
