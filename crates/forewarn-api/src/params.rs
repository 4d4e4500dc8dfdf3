//! Query-string parsing that answers every mistake with a 400 naming the
//! parameter, instead of axum's plain-text rejections.

use axum::extract::{FromRequestParts, Query};
use axum::http::request::Parts;

use forewarn_core::reading::MAX_DEVICE_ID_LEN;

use crate::error::ApiError;

/// Longest accepted query string, in bytes.
pub const MAX_QUERY_LEN: usize = 4096;

/// The query string as name/value pairs, each name at most once.
#[derive(Debug, Default)]
pub struct QueryParams {
    pairs: Vec<(String, String)>,
}

impl<S: Send + Sync> FromRequestParts<S> for QueryParams {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, ApiError> {
        let len = parts.uri.query().map_or(0, str::len);
        if len > MAX_QUERY_LEN {
            return Err(ApiError::BadRequest(format!(
                "query string of {len} bytes is longer than the {MAX_QUERY_LEN} accepted"
            )));
        }
        let Query(pairs) = Query::<Vec<(String, String)>>::try_from_uri(&parts.uri)
            .map_err(|e| ApiError::BadRequest(format!("malformed query string: {e}")))?;
        for (i, (name, _)) in pairs.iter().enumerate() {
            if pairs[..i].iter().any(|(n, _)| n == name) {
                return Err(ApiError::bad_parameter(
                    name,
                    format!("parameter `{name}` is given more than once"),
                ));
            }
        }
        Ok(Self { pairs })
    }
}

impl QueryParams {
    /// Rejects any parameter not in `known` (a typo would otherwise be
    /// silently ignored and return unfiltered data).
    pub fn only(&self, known: &[&str]) -> Result<(), ApiError> {
        match self
            .pairs
            .iter()
            .find(|(n, _)| !known.contains(&n.as_str()))
        {
            Some((name, _)) => Err(ApiError::bad_parameter(
                name,
                format!(
                    "unknown parameter `{name}`; expected one of: {}",
                    known.join(", ")
                ),
            )),
            None => Ok(()),
        }
    }

    /// The value of `name`, which must not be empty when present.
    pub fn get(&self, name: &str) -> Result<Option<&str>, ApiError> {
        match self.pairs.iter().find(|(n, _)| n == name) {
            Some((_, v)) if v.is_empty() => Err(ApiError::bad_parameter(
                name,
                format!("parameter `{name}` is empty"),
            )),
            Some((_, v)) => Ok(Some(v)),
            None => Ok(None),
        }
    }

    /// `name` parsed by `parse`, whose error message is prefixed with the name.
    pub fn parse<T>(
        &self,
        name: &str,
        parse: impl FnOnce(&str) -> Result<T, String>,
    ) -> Result<Option<T>, ApiError> {
        self.get(name)?
            .map(|v| {
                parse(v).map_err(|msg| ApiError::bad_parameter(name, format!("`{name}` {msg}")))
            })
            .transpose()
    }

    /// A page size in `1..=max`, `default` when absent.
    pub fn limit(&self, default: usize, max: usize) -> Result<usize, ApiError> {
        Ok(self
            .parse("limit", |v| match v.parse::<usize>() {
                Ok(n) if (1..=max).contains(&n) => Ok(n),
                _ => Err(format!("must be an integer from 1 to {max}, got {v:?}")),
            })?
            .unwrap_or(default))
    }
}

/// An RFC 3339 timestamp or integer epoch milliseconds, as epoch ms. Not
/// `forewarn_data::parse_time` (integers below 1e11 are seconds there): the
/// API's integers are always milliseconds, like every time it returns.
pub fn parse_rfc3339_or_epoch_ms(v: &str) -> Result<i64, String> {
    let bad = || format!("must be an RFC 3339 timestamp or integer epoch milliseconds, got {v:?}");
    if v.bytes().all(|b| b.is_ascii_digit() || b == b'-') {
        return v.parse().map_err(|_| bad());
    }
    chrono::DateTime::parse_from_rfc3339(v)
        .map(|t| t.timestamp_millis())
        .map_err(|_| {
            if v.contains(' ') {
                // `+` in a query string decodes to a space.
                format!("{} (write a `+` offset as %2B)", bad())
            } else {
                bad()
            }
        })
}

pub(crate) fn device_id(v: &str) -> Result<String, String> {
    if v.chars().count() > MAX_DEVICE_ID_LEN || v.chars().any(char::is_control) {
        Err(format!(
            "must be a device id of at most {MAX_DEVICE_ID_LEN} characters without control characters"
        ))
    } else {
        Ok(v.to_owned())
    }
}

pub(crate) fn channel_name(v: &str) -> Result<String, String> {
    if v.chars().count() > 256 || v.chars().any(char::is_control) {
        Err("must be a channel name of at most 256 characters without control characters".into())
    } else {
        Ok(v.to_owned())
    }
}

pub(crate) fn parse_bool(v: &str) -> Result<bool, String> {
    match v {
        "true" => Ok(true),
        "false" => Ok(false),
        _ => Err(format!("must be `true` or `false`, got {v:?}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times() {
        assert_eq!(
            parse_rfc3339_or_epoch_ms("1795867200250"),
            Ok(1_795_867_200_250)
        );
        assert_eq!(parse_rfc3339_or_epoch_ms("0"), Ok(0));
        assert_eq!(
            parse_rfc3339_or_epoch_ms("2026-11-28T12:00:00.250Z"),
            Ok(1_795_867_200_250)
        );
        assert_eq!(
            parse_rfc3339_or_epoch_ms("2026-11-28T13:00:00.250+01:00"),
            Ok(1_795_867_200_250)
        );
        for bad in [
            "yesterday",
            "2026-11-28",
            "1.5",
            "--1",
            "99999999999999999999",
        ] {
            assert!(parse_rfc3339_or_epoch_ms(bad).is_err(), "{bad}");
        }
    }
}

/// The `{id}` path segment, with a JSON 400 naming `id` when it cannot be
/// decoded (invalid percent-encoding or UTF-8).
#[derive(Debug)]
pub struct IdPath(pub String);

impl<S: Send + Sync> FromRequestParts<S> for IdPath {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        axum::extract::Path::<String>::from_request_parts(parts, state)
            .await
            .map(|axum::extract::Path(id)| IdPath(id))
            .map_err(|e| ApiError::bad_parameter("id", format!("`id` {}", e.body_text())))
    }
}
