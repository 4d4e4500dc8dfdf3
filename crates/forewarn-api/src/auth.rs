//! Bearer-token authorisation.
//!
//! Mutating endpoints (acknowledge, model reload) need
//! `Authorization: Bearer <token>` with one of the configured tokens; with
//! no token configured they are refused (403), never open. Read endpoints
//! under `/api/v1` need a token only when `read_requires_token` is set;
//! `/livez`, `/readyz`, `/metrics` and the console page never do.
//!
//! Tokens are compared in constant time: both sides are hashed with SHA-256
//! (so lengths do not leak either) and compared with `subtle`, against
//! every configured token without stopping at the first match.

use std::sync::Arc;

use axum::extract::{FromRef, FromRequestParts};
use axum::http::header;
use axum::http::request::Parts;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::error::ApiError;

/// Who may call what. Debug never prints the tokens.
#[derive(Clone, Default)]
pub struct Auth {
    digests: Vec<[u8; 32]>,
    read_requires_token: bool,
}

impl std::fmt::Debug for Auth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Auth")
            .field("tokens", &self.digests.len())
            .field("read_requires_token", &self.read_requires_token)
            .finish()
    }
}

fn digest(token: &[u8]) -> [u8; 32] {
    Sha256::digest(token).into()
}

impl Auth {
    /// `tokens` may be empty (mutations then always refused). Empty
    /// strings are ignored.
    pub fn new<I, S>(tokens: I, read_requires_token: bool) -> Self
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        Self {
            digests: tokens
                .into_iter()
                .filter(|t| !t.as_ref().is_empty())
                .map(|t| digest(t.as_ref().as_bytes()))
                .collect(),
            read_requires_token,
        }
    }

    pub fn has_tokens(&self) -> bool {
        !self.digests.is_empty()
    }

    pub fn read_requires_token(&self) -> bool {
        self.read_requires_token
    }

    /// Whether `token` is one of the configured tokens (constant time).
    pub fn accepts(&self, token: &str) -> bool {
        let d = digest(token.as_bytes());
        let mut ok = subtle::Choice::from(0);
        for t in &self.digests {
            ok |= t.ct_eq(&d);
        }
        bool::from(ok)
    }

    fn check(&self, presented: Option<&str>) -> Result<(), ApiError> {
        if !self.has_tokens() {
            return Err(ApiError::Forbidden(
                "no API tokens are configured (http.tokens), so this endpoint is disabled".into(),
            ));
        }
        match presented {
            None => Err(ApiError::Unauthorized(
                "missing bearer token (Authorization: Bearer <token>)".into(),
            )),
            Some(t) if self.accepts(t) => Ok(()),
            Some(_) => Err(ApiError::Unauthorized("invalid bearer token".into())),
        }
    }
}

fn bearer(parts: &Parts) -> Option<&str> {
    let v = parts.headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = v.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
}

/// The `access_token` query parameter, for clients that cannot set headers
/// (a browser's `EventSource`). Only the live stream accepts it.
fn query_token(parts: &Parts) -> Option<String> {
    let q = parts.uri.query()?;
    let axum::extract::Query(pairs) =
        axum::extract::Query::<Vec<(String, String)>>::try_from_uri(&parts.uri).ok()?;
    let _ = q;
    pairs
        .into_iter()
        .find_map(|(k, v)| (k == "access_token").then_some(v))
}

// The extractors read the [`Auth`] of any state that provides one
// (`AppState` does), so this file needs nothing of the state's.

/// Extractor: the request may change state.
#[derive(Debug)]
pub struct WriteAccess;

impl<S: Send + Sync> FromRequestParts<S> for WriteAccess
where
    Arc<Auth>: FromRef<S>,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, s: &S) -> Result<Self, ApiError> {
        let auth = Arc::<Auth>::from_ref(s);
        auth.check(bearer(parts)).map(|()| WriteAccess)
    }
}

/// Extractor: the request may read (always, unless `read_requires_token`).
#[derive(Debug)]
pub struct ReadAccess;

impl<S: Send + Sync> FromRequestParts<S> for ReadAccess
where
    Arc<Auth>: FromRef<S>,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, s: &S) -> Result<Self, ApiError> {
        let auth = Arc::<Auth>::from_ref(s);
        if !auth.read_requires_token {
            return Ok(ReadAccess);
        }
        auth.check(bearer(parts)).map(|()| ReadAccess)
    }
}

/// Extractor for the live stream: like [`ReadAccess`], also accepting the
/// token as `?access_token=`.
#[derive(Debug)]
pub struct StreamAccess;

impl<S: Send + Sync> FromRequestParts<S> for StreamAccess
where
    Arc<Auth>: FromRef<S>,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, s: &S) -> Result<Self, ApiError> {
        let auth = Arc::<Auth>::from_ref(s);
        if !auth.read_requires_token {
            return Ok(StreamAccess);
        }
        let q = query_token(parts);
        let presented = bearer(parts).or(q.as_deref());
        auth.check(presented).map(|()| StreamAccess)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_only_configured_tokens() {
        let a = Auth::new(["alpha-token", "", "beta"], false);
        assert!(a.has_tokens());
        assert!(a.accepts("alpha-token") && a.accepts("beta"));
        for bad in ["", "alpha", "alpha-token ", "BETA", "betabeta"] {
            assert!(!a.accepts(bad), "{bad}");
        }
        assert!(!Auth::new(Vec::<String>::new(), false).accepts(""));
        assert!(!format!("{a:?}").contains("alpha"));
    }
}
