//! The alert bus: a broadcast of alert events to live consumers (the SSE
//! stream, the webhook sender, the console).
//!
//! Publishers (the persist stage after an alert change is durable, the API
//! after an acknowledgement is durable) never wait: the bus is a
//! `tokio::sync::broadcast` ring of fixed capacity, and a subscriber that
//! falls more than that far behind loses the oldest events and is told how
//! many (`RecvError::Lagged`). The pipeline is never slowed by a consumer.

use std::sync::Arc;

use forewarn_store::AlertRecord;
use serde::Serialize;
use tokio::sync::broadcast;

/// Default number of events a subscriber may fall behind before it lags.
pub const DEFAULT_CAPACITY: usize = 1024;

/// What happened to an alert.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum AlertEventKind {
    Opened,
    Resolved,
    Acknowledged,
    /// An open alert's diagnosis changed (its most probable fault classes
    /// changed order).
    Diagnosed,
}

impl AlertEventKind {
    pub fn as_str(self) -> &'static str {
        match self {
            AlertEventKind::Opened => "opened",
            AlertEventKind::Resolved => "resolved",
            AlertEventKind::Acknowledged => "acknowledged",
            AlertEventKind::Diagnosed => "diagnosed",
        }
    }
}

/// One alert event: the kind, and the alert after the change (as the API
/// shows it).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct AlertEvent {
    pub kind: AlertEventKind,
    pub alert: AlertRecord,
}

/// A broadcast of [`AlertEvent`]s. Cheap to clone (clones share the ring).
#[derive(Clone, Debug)]
pub struct AlertBus {
    tx: broadcast::Sender<Arc<AlertEvent>>,
}

impl Default for AlertBus {
    fn default() -> Self {
        Self::new(DEFAULT_CAPACITY)
    }
}

impl AlertBus {
    /// A bus whose subscribers may fall `capacity` events behind (at least 1).
    pub fn new(capacity: usize) -> Self {
        Self {
            tx: broadcast::channel(capacity.max(1)).0,
        }
    }

    /// Sends `event` to every current subscriber. Never blocks; without
    /// subscribers the event is dropped.
    pub fn publish(&self, event: AlertEvent) {
        let _ = self.tx.send(Arc::new(event));
    }

    pub fn subscribe(&self) -> broadcast::Receiver<Arc<AlertEvent>> {
        self.tx.subscribe()
    }

    pub fn subscribers(&self) -> usize {
        self.tx.receiver_count()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use forewarn_core::{Alert, AlertState, Severity};
    use tokio::sync::broadcast::error::TryRecvError;

    fn event(i: i64) -> AlertEvent {
        AlertEvent {
            kind: AlertEventKind::Opened,
            alert: AlertRecord::from(Alert {
                id: format!("a{i}"),
                device: "d".into(),
                model: "m".into(),
                model_version: "v".into(),
                state: AlertState::Open,
                severity: Severity::Warning,
                opened_at: i,
                resolved_at: None,
                score: 1.0,
                peak_score: 1.0,
                threshold: 0.5,
                contributors: vec![],
                window_start: i,
                window_end: i,
                diagnosis: None,
                cells: vec![],
            }),
        }
    }

    #[test]
    fn slow_subscriber_lags_and_publisher_never_blocks() {
        let bus = AlertBus::new(4);
        bus.publish(event(0)); // nobody listening: dropped
        let mut slow = bus.subscribe();
        assert_eq!(bus.subscribers(), 1);
        for i in 1..=10 {
            bus.publish(event(i));
        }
        assert!(matches!(slow.try_recv(), Err(TryRecvError::Lagged(6))));
        let rest: Vec<i64> = std::iter::from_fn(|| slow.try_recv().ok())
            .map(|e| e.alert.opened_at)
            .collect();
        assert_eq!(rest, [7, 8, 9, 10]);
        let json = serde_json::to_value(&*Arc::new(event(3))).unwrap();
        assert_eq!(json["kind"], "opened");
        assert_eq!(json["alert"]["id"], "a3");
        assert_eq!(json["alert"]["acknowledged"], false);
        assert!(json["alert"].get("diagnosis").is_none(), "{json}");
    }

    #[test]
    fn kinds_serialise_as_their_names() {
        for kind in [
            AlertEventKind::Opened,
            AlertEventKind::Resolved,
            AlertEventKind::Acknowledged,
            AlertEventKind::Diagnosed,
        ] {
            assert_eq!(serde_json::to_value(kind).unwrap(), kind.as_str());
        }
    }
}
