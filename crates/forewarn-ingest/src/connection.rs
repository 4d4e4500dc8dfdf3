//! How Kafka clients report connection trouble: librdkafka's log lines go
//! to tracing, and a failure retrying will not fix (a refused password, an
//! untrusted certificate, a plaintext client at a TLS listener) is logged
//! once as one error line and becomes `/readyz`'s reason.

use std::sync::{Arc, Mutex, PoisonError};

use forewarn_telemetry::Health;
use rdkafka::client::ClientContext;
use rdkafka::config::RDKafkaLogLevel;
use rdkafka::consumer::ConsumerContext;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};

/// librdkafka's log line as a tracing event.
fn log(level: RDKafkaLogLevel, fac: &str, log_message: &str) {
    match level {
        RDKafkaLogLevel::Emerg
        | RDKafkaLogLevel::Alert
        | RDKafkaLogLevel::Critical
        | RDKafkaLogLevel::Error => {
            tracing::error!(target: "librdkafka", facility = fac, "{log_message}")
        }
        RDKafkaLogLevel::Warning => {
            tracing::warn!(target: "librdkafka", facility = fac, "{log_message}")
        }
        _ => tracing::debug!(target: "librdkafka", facility = fac, "{log_message}"),
    }
}

/// Whether a librdkafka message is about a refused login or certificate.
fn security_text(message: &str) -> bool {
    let m = message.to_ascii_lowercase();
    m.contains("sasl") || m.contains("ssl handshake") || m.contains("certificate")
}

/// The connection failure an error stands for, when retrying alone will
/// not cure it; None for ordinary trouble (a broker restarting).
pub(crate) fn security_failure(error: &KafkaError, reason: &str) -> Option<String> {
    let code = error.rdkafka_error_code()?;
    let lower = reason.to_ascii_lowercase();
    let what = match code {
        RDKafkaErrorCode::Authentication | RDKafkaErrorCode::SaslAuthenticationFailed => {
            "SASL authentication failed"
        }
        RDKafkaErrorCode::SSL => "TLS handshake failed",
        _ if lower.contains("ssl handshake") || lower.contains("certificate") => {
            "TLS handshake failed"
        }
        _ if lower.contains("security.protocol") => "connection refused by the broker",
        _ => return None,
    };
    Some(format!("{what}: {}", reason.trim()))
}

/// Watches one client's errors: the first of each kind of security failure
/// is logged and given to the health, once.
pub(crate) struct ConnectionWatch {
    health: Option<Arc<Health>>,
    last: Mutex<Option<String>>,
}

impl ConnectionWatch {
    pub fn new(health: Option<Arc<Health>>) -> Self {
        Self {
            health,
            last: Mutex::new(None),
        }
    }

    /// librdkafka's log line: a refused login or certificate is reported
    /// (librdkafka logs it at every retry, and a client nobody polls gets
    /// no error callback), anything else goes to tracing as it is.
    pub fn log(&self, level: RDKafkaLogLevel, fac: &str, log_message: &str) {
        let serious = matches!(
            level,
            RDKafkaLogLevel::Emerg
                | RDKafkaLogLevel::Alert
                | RDKafkaLogLevel::Critical
                | RDKafkaLogLevel::Error
        );
        if serious && security_text(log_message) {
            let what = if log_message.to_ascii_lowercase().contains("sasl") {
                "SASL authentication failed"
            } else {
                "TLS handshake failed"
            };
            tracing::debug!(target: "librdkafka", facility = fac, "{log_message}");
            self.report(format!("{what}: {}", log_message.trim()));
        } else {
            log(level, fac, log_message);
        }
    }

    /// True when the error was a security failure (reported here).
    pub fn error(&self, error: &KafkaError, reason: &str) -> bool {
        let Some(failure) = security_failure(error, reason) else {
            return false;
        };
        self.report(failure);
        true
    }

    fn report(&self, failure: String) {
        // librdkafka names the broker in the reason ("ssl://host:port/1: ...");
        // the same failure on another broker or a retry is not news.
        let kind = failure.split(':').next().unwrap_or_default().to_string();
        let mut last = self.last.lock().unwrap_or_else(PoisonError::into_inner);
        if last.as_deref() != Some(kind.as_str()) {
            tracing::error!(error = %failure, "cannot connect to Kafka; retrying, /readyz reports it");
            *last = Some(kind);
        }
        if let Some(h) = &self.health {
            h.set_broker_error(failure);
        }
    }
}

/// A client context that only watches connection trouble (admin and
/// metadata clients).
pub(crate) struct WatchContext(pub ConnectionWatch);

impl ClientContext for WatchContext {
    fn log(&self, level: RDKafkaLogLevel, fac: &str, log_message: &str) {
        self.0.log(level, fac, log_message);
    }

    fn error(&self, error: KafkaError, reason: &str) {
        if !self.0.error(&error, reason) {
            tracing::warn!(error = %error, reason, "kafka client error");
        }
    }
}

impl ConsumerContext for WatchContext {}
