//! The store's error type.

use std::path::PathBuf;

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
    #[error("cannot encode alert contributors or diagnosis: {0}")]
    Encode(#[from] serde_json::Error),
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
