//! What the store keeps and answers: alert changes, stored records,
//! queries and pages (with their keyset cursors), and the raw row both
//! backends read before parsing it.

use forewarn_core::{Alert, AlertState, ChannelShare, Diagnosis, GridCell, Severity};
use serde::{Deserialize, Serialize};

use crate::error::StoreError;

/// Default page size of [`AlertStore::list`](crate::AlertStore::list).
pub const DEFAULT_LIMIT: usize = 100;
/// Largest page size of [`AlertStore::list`](crate::AlertStore::list).
pub const MAX_LIMIT: usize = 1000;

/// A change to persist, as the engine reports it.
#[derive(Debug, Clone, PartialEq)]
pub enum AlertChange {
    Opened(Alert),
    /// Resolves the alert. A `diagnosis` of `None` keeps the stored one
    /// (the process restarted while the alert was open, so it has none to
    /// report); `Some` replaces it.
    Resolved(Alert),
    /// An open alert's diagnosis changed: only `diagnosis` is updated, and
    /// only while the stored alert is open (a late or replayed change never
    /// rewrites a resolved alert's final diagnosis). Unknown ids are
    /// ignored.
    Diagnosed(Alert),
}

impl AlertChange {
    /// The alert the change carries.
    pub fn alert(&self) -> &Alert {
        match self {
            AlertChange::Opened(a) | AlertChange::Resolved(a) | AlertChange::Diagnosed(a) => a,
        }
    }

    /// `opened`, `resolved` or `diagnosed`.
    pub fn kind(&self) -> &'static str {
        match self {
            AlertChange::Opened(_) => "opened",
            AlertChange::Resolved(_) => "resolved",
            AlertChange::Diagnosed(_) => "diagnosed",
        }
    }

    /// Timestamp (epoch ms) of the reading that made this change. For
    /// [`AlertChange::Diagnosed`] the alert does not carry the time of the
    /// batch that changed the diagnosis, so this is the end of its opening
    /// window (`window_end`), a lower bound: not a measure of delay.
    pub fn reading_ts(&self) -> i64 {
        match self {
            AlertChange::Opened(a) => a.opened_at,
            AlertChange::Resolved(a) => a.resolved_at.unwrap_or(a.opened_at),
            AlertChange::Diagnosed(a) => a.window_end,
        }
    }

    /// The diagnosis as the store keeps it (JSON), if the change has one.
    pub(crate) fn diagnosis_json(&self) -> Result<Option<String>, StoreError> {
        Ok(self
            .alert()
            .diagnosis
            .as_ref()
            .map(serde_json::to_string)
            .transpose()?)
    }

    /// The grid cells as the store keeps them (JSON), if the alert has any.
    pub(crate) fn cells_json(&self) -> Result<Option<String>, StoreError> {
        let cells = &self.alert().cells;
        Ok((!cells.is_empty())
            .then(|| serde_json::to_string(cells))
            .transpose()?)
    }
}

/// Filters and page of [`AlertStore::list`](crate::AlertStore::list).
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

/// Order of [`AlertStore::list`](crate::AlertStore::list), on (`opened_at`, `id`).
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
pub(crate) fn encode_cursor(order: Order, opened_at: i64, id: &str) -> String {
    let prefix = match order {
        Order::NewestFirst => "v1",
        Order::OldestFirst => "v1a",
    };
    hex::encode(format!("{prefix}:{opened_at}:{id}"))
}

pub(crate) fn decode_cursor(order: Order, cursor: &str) -> Result<(i64, String), StoreError> {
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
pub(crate) fn page_from(
    order: Order,
    limit: usize,
    raws: Vec<RawAlert>,
) -> Result<AlertPage, StoreError> {
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
    /// JSON of the [`Diagnosis`]; NULL when none was stored.
    pub(crate) diagnosis: Option<String>,
    /// JSON of the alert's [`GridCell`]s; NULL when it has none.
    pub(crate) cells: Option<String>,
}

impl RawAlert {
    pub(crate) fn into_record(mut self) -> Result<AlertRecord, StoreError> {
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
        let diagnosis: Option<Diagnosis> = (self.diagnosis.as_deref())
            .map(serde_json::from_str)
            .transpose()
            .map_err(|e| corrupt(format!("diagnosis: {e}")))?;
        let cells: Vec<GridCell> = (self.cells.as_deref())
            .map(serde_json::from_str)
            .transpose()
            .map_err(|e| corrupt(format!("cells: {e}")))?
            .unwrap_or_default();
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
            diagnosis,
            cells,
        })
    }
}
