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
//! opening was never stored). The first stored resolution time wins.
//! `Diagnosed` rewrites only the diagnosis of an alert stored as open (none
//! of a resolved or unknown one), and a `Resolved` without a diagnosis
//! keeps the stored one, so replays and restarts never lose it. Each
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

mod error;
mod pg;
mod record;
mod sqlite;
mod store;
#[cfg(any(test, feature = "test-support"))]
pub mod testing;
mod tls;
mod url;

pub use error::StoreError;
pub use pg::{PG_MIGRATIONS, PG_POOL_SIZE, PG_SCHEMA_VERSION};
pub use record::{
    Acknowledgement, AlertChange, AlertPage, AlertQuery, AlertRecord, DEFAULT_LIMIT, MAX_LIMIT,
    Order,
};
pub use sqlite::{MIGRATIONS, SCHEMA_VERSION};
pub use store::{AlertStore, validate_url};
pub use url::redact_url;

#[cfg(test)]
mod tests;
