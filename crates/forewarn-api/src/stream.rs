//! `GET /api/v1/alerts/stream`: alert events as Server-Sent Events.
//!
//! Each client reads its own subscription to the [`AlertBus`] ring. A
//! client that reads too slowly (or a slow network) never holds up the
//! pipeline: the ring overwrites its oldest events, and the client gets a
//! `lagged` event saying how many it missed (it should re-read
//! `/api/v1/alerts`). The first event, `ready`, tells the client it is
//! subscribed, so a list fetched after it misses nothing.
//!
//! Events: `ready`, `opened`, `resolved`, `acknowledged`, `diagnosed` (an
//! open alert's likely fault changed; with a fault classifier only) (data:
//! the alert as `GET /api/v1/alerts/{id}` shows it after the change) and `lagged`
//! (data: `{"missed": n}`). A comment line every 15 s keeps proxies from
//! closing an idle stream. Streams end when the service shuts down.
//!
//! [`AlertBus`]: crate::bus::AlertBus

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::response::sse::{Event, KeepAlive, Sse};
use forewarn_telemetry::Metrics;
use futures::Stream;
use futures::StreamExt;
use serde_json::json;
use tokio::sync::broadcast::error::RecvError;

use crate::auth::StreamAccess;
use crate::bus::AlertEvent;
use crate::error::ApiError;
use crate::params::{QueryParams, device_id};
use crate::schema;
use crate::state::AppState;

/// Counts the client in `forewarn_sse_clients` while the stream lives.
struct ClientGuard(Arc<Metrics>);

impl ClientGuard {
    fn new(m: Arc<Metrics>) -> Self {
        m.sse_clients.inc();
        Self(m)
    }
}

impl Drop for ClientGuard {
    fn drop(&mut self) {
        self.0.sse_clients.dec();
    }
}

fn event(ev: &AlertEvent) -> Event {
    Event::default()
        .event(ev.kind.as_str())
        .id(ev.alert.id.clone())
        .json_data(&ev.alert)
        .expect("alerts serialise")
}

/// Live alert events (Server-Sent Events): `ready`, then `opened`,
/// `resolved`, `acknowledged`, `diagnosed` (an open alert's `diagnosis`
/// changed; only when serve runs a fault classifier) (data: the alert) and
/// `lagged` (data: `{"missed": n}` when this client fell behind and skipped
/// events).
#[utoipa::path(get, path = "/api/v1/alerts/stream", tag = "alerts",
    params(
        ("device" = Option<String>, Query, description = "Only this device's events"),
        ("access_token" = Option<String>, Query, description = "Bearer token for clients that cannot set headers (EventSource)"),
    ),
    responses((status = 200, description = "An endless event stream", content_type = "text/event-stream", body = String),
        (status = 400, description = "A bad parameter", body = schema::ErrorDoc)),
    security((), ("bearer" = [])))]
pub(crate) async fn alerts(
    State(s): State<AppState>,
    _: StreamAccess,
    p: QueryParams,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, ApiError> {
    p.only(&["device", "access_token"])?;
    let device = p.parse("device", device_id)?;
    let rx = s.bus.subscribe();
    let guard = ClientGuard::new(s.metrics.clone());
    let ready = futures::stream::once(async { Ok(Event::default().event("ready").data("{}")) });
    let events = futures::stream::unfold((rx, guard), move |(mut rx, guard)| {
        let device = device.clone();
        async move {
            loop {
                match rx.recv().await {
                    Ok(ev) => {
                        if device.as_deref().is_some_and(|d| d != ev.alert.device) {
                            continue;
                        }
                        return Some((Ok(event(&ev)), (rx, guard)));
                    }
                    Err(RecvError::Lagged(n)) => {
                        guard.0.sse_events_lagged.inc_by(n);
                        tracing::debug!(missed = n, "live stream client lagged");
                        let ev = Event::default()
                            .event("lagged")
                            .data(json!({"missed": n}).to_string());
                        return Some((Ok(ev), (rx, guard)));
                    }
                    Err(RecvError::Closed) => return None,
                }
            }
        }
    });
    let stream = ready
        .chain(events)
        .take_until(s.shutdown.clone().cancelled_owned());
    Ok(Sse::new(stream).keep_alive(KeepAlive::new().interval(Duration::from_secs(15))))
}
