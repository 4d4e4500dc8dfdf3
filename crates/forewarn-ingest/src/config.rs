use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Kafka and pipeline settings.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct IngestConfig {
    /// Comma-separated bootstrap servers.
    pub brokers: String,
    pub group_id: String,
    pub input_topic: String,
    pub alerts_topic: String,
    pub dead_letter_topic: String,
    /// Compacted topic of device-state checkpoints (same partition count as
    /// the input topic; a device's state sits in its input partition). It
    /// belongs to one consumer group: empty (the default) means
    /// `<group_id>.state`, so a new group never restores another's state.
    pub state_topic: String,
    /// How often device state is checkpointed to `state_topic`; input
    /// offsets are stored only at checkpoints, so a restart or a partition
    /// move resumes from one with the state as it was. 0 turns checkpoints
    /// off: offsets are stored per chunk and a restart re-warms devices.
    #[serde(with = "millis")]
    pub checkpoint_interval: Duration,
    /// Longest a revoked partition's state handover may take before the
    /// rebalance goes on without it (the next owner then resumes from the
    /// previous checkpoint, which is still exact, only older).
    #[serde(with = "millis")]
    pub handover_timeout: Duration,
    /// Consumer-group session timeout; a group join takes about half of it.
    pub session_timeout_ms: u32,
    /// Create the three topics at start when missing.
    pub create_topics: bool,
    /// Partitions for topics Forewarn creates (caps the number of instances).
    pub topic_partitions: i32,
    pub replication_factor: i32,
    /// Most messages decoded into one pipeline chunk.
    pub chunk_max_messages: usize,
    /// Longest a chunk keeps taking messages while they keep coming; a
    /// chunk also ends as soon as none is waiting (it never idles to fill).
    #[serde(with = "millis")]
    pub chunk_max_wait: Duration,
    /// Chunks in flight between stages (back-pressure bound). Deep enough
    /// to ride out the stages' uneven pace (a forecaster flush, a
    /// checkpoint): 4 left both stages idle two thirds of the time and
    /// halved throughput (docs/BENCHMARKS.md).
    pub pipeline_depth: usize,
    /// Extra librdkafka properties for every client, connection security
    /// among them: `"security.protocol" = "SASL_SSL"`, `"sasl.mechanism" =
    /// "SCRAM-SHA-512"`, `"sasl.username"`, `"sasl.password"`,
    /// `"ssl.ca.location"`, `"ssl.certificate.location"`, `"ssl.key.location"`.
    /// A key ending in `_file` takes its property's value from that file
    /// (`"sasl.password_file" = "/run/secrets/kafka-password"`, trailing
    /// newline dropped). Underscores stand for dots, so every property can
    /// come from the environment too:
    /// `FOREWARN_KAFKA__CLIENT__SASL_PASSWORD_FILE=/run/secrets/kafka-password`.
    /// Secret values (passwords, secrets, key PEMs) are printed masked.
    #[serde(serialize_with = "serialize_client")]
    pub client: BTreeMap<String, String>,
}

impl Default for IngestConfig {
    fn default() -> Self {
        Self {
            brokers: "127.0.0.1:9092".into(),
            group_id: "forewarn".into(),
            input_topic: "forewarn.readings".into(),
            alerts_topic: "forewarn.alerts".into(),
            dead_letter_topic: "forewarn.readings.dlq".into(),
            state_topic: String::new(),
            checkpoint_interval: Duration::from_secs(5),
            handover_timeout: Duration::from_secs(30),
            session_timeout_ms: 10_000,
            create_topics: true,
            topic_partitions: 8,
            replication_factor: 1,
            chunk_max_messages: 8192,
            chunk_max_wait: Duration::from_millis(5),
            pipeline_depth: 32,
            client: BTreeMap::new(),
        }
    }
}

impl IngestConfig {
    /// Whether device state is checkpointed (and offsets stored only at checkpoints).
    pub fn checkpoints(&self) -> bool {
        !self.checkpoint_interval.is_zero()
    }

    /// The configuration with derived defaults filled in (the state topic).
    pub fn resolved(&self) -> Self {
        let mut c = self.clone();
        if c.state_topic.trim().is_empty() {
            c.state_topic = format!("{}.state", c.group_id);
        }
        c
    }

    pub fn validate(&self) -> Result<(), String> {
        let resolved = self.resolved();
        let nonempty = [
            ("kafka.brokers", &self.brokers),
            ("kafka.group_id", &self.group_id),
            ("kafka.input_topic", &self.input_topic),
            ("kafka.alerts_topic", &self.alerts_topic),
            ("kafka.dead_letter_topic", &self.dead_letter_topic),
        ];
        for (name, v) in nonempty {
            if v.trim().is_empty() {
                return Err(format!("{name} must not be empty"));
            }
        }
        let topics = [
            &self.input_topic,
            &self.alerts_topic,
            &self.dead_letter_topic,
            &resolved.state_topic,
        ];
        for (i, a) in topics.iter().enumerate() {
            if topics[i + 1..].contains(a) {
                return Err(format!(
                    "kafka.input_topic, alerts_topic, dead_letter_topic and state_topic must all differ ({a} is used twice)"
                ));
            }
        }
        let props: BTreeMap<String, String> =
            client_properties(&self.client)?.into_iter().collect();
        check_security(&props)?;
        if self.checkpoints()
            && props
                .get("partition.assignment.strategy")
                .is_some_and(|s| s.contains("cooperative"))
        {
            return Err("kafka.client.\"partition.assignment.strategy\": cooperative assignment is not supported with checkpoints (state handover assumes eager rebalancing); use range or roundrobin, or set kafka.checkpoint_interval = 0".into());
        }
        if !(1_000..=300_000).contains(&self.session_timeout_ms) {
            return Err(format!(
                "kafka.session_timeout_ms must be in 1000..=300000, got {}",
                self.session_timeout_ms
            ));
        }
        if self.topic_partitions < 1 || self.replication_factor < 1 {
            return Err(
                "kafka.topic_partitions and kafka.replication_factor must be at least 1".into(),
            );
        }
        if self.chunk_max_messages == 0 || self.pipeline_depth == 0 {
            return Err(
                "kafka.chunk_max_messages and kafka.pipeline_depth must be at least 1".into(),
            );
        }
        Ok(())
    }
}

/// A `kafka.client` key as the librdkafka property it sets, and whether
/// its value names a file holding the property's value.
fn property_name(key: &str) -> (String, bool) {
    let key = key.trim();
    match key.strip_suffix("_file") {
        Some(name) => (name.replace('_', "."), true),
        None => (key.replace('_', "."), false),
    }
}

/// Whether a librdkafka property holds a secret (never printed).
pub fn is_secret_property(property: &str) -> bool {
    property.contains("password")
        || property.contains("secret")
        || property == "ssl.key.pem"
        || property == "sasl.oauthbearer.config"
}

/// `kafka.client` as librdkafka properties: underscores turned into dots,
/// `*_file` values read from their files. Errors name the setting and the
/// file, never a secret.
pub(crate) fn client_properties(
    client: &BTreeMap<String, String>,
) -> Result<Vec<(String, String)>, String> {
    let mut out = BTreeMap::new();
    for (key, value) in client {
        let (name, file) = property_name(key);
        let value = if file {
            let text = std::fs::read_to_string(value.trim())
                .map_err(|e| format!("kafka.client.\"{key}\": cannot read {value}: {e}"))?;
            text.trim_end_matches(['\n', '\r']).to_string()
        } else {
            value.clone()
        };
        if out.insert(name.clone(), value).is_some() {
            return Err(format!(
                "kafka.client sets {name} twice (as {key} and in another spelling)"
            ));
        }
    }
    Ok(out.into_iter().collect())
}

/// The security settings librdkafka would only refuse at connection time,
/// or not at all, checked up front.
fn check_security(props: &BTreeMap<String, String>) -> Result<(), String> {
    let protocol = props
        .get("security.protocol")
        .map_or("plaintext".to_string(), |p| p.to_ascii_lowercase());
    if !["plaintext", "ssl", "sasl_plaintext", "sasl_ssl"].contains(&protocol.as_str()) {
        return Err(format!(
            "kafka.client.\"security.protocol\" must be PLAINTEXT, SSL, SASL_PLAINTEXT or SASL_SSL, got {protocol:?}"
        ));
    }
    if !protocol.starts_with("sasl") {
        return Ok(());
    }
    let mechanism = props
        .get("sasl.mechanism")
        .or_else(|| props.get("sasl.mechanisms"))
        .map_or("GSSAPI".to_string(), |m| m.to_ascii_uppercase());
    match mechanism.as_str() {
        "PLAIN" | "SCRAM-SHA-256" | "SCRAM-SHA-512" => {
            for p in ["sasl.username", "sasl.password"] {
                if props.get(p).is_none_or(|v| v.is_empty()) {
                    return Err(format!(
                        "kafka.client: SASL {mechanism} needs \"{p}\" (or \"{p}_file\")"
                    ));
                }
            }
            Ok(())
        }
        "OAUTHBEARER" => Ok(()),
        other => Err(format!(
            "kafka.client.\"sasl.mechanism\" {other:?} is not supported by this build; use PLAIN, SCRAM-SHA-256, SCRAM-SHA-512 or OAUTHBEARER"
        )),
    }
}

/// `kafka.client` as `config check` prints it: secret values masked,
/// `*_file` settings shown as their paths.
fn serialize_client<S: serde::Serializer>(
    client: &BTreeMap<String, String>,
    s: S,
) -> Result<S::Ok, S::Error> {
    let masked: BTreeMap<&str, &str> = client
        .iter()
        .map(|(k, v)| {
            let (name, file) = property_name(k);
            let shown = if !file && is_secret_property(&name) && !v.is_empty() {
                "****"
            } else {
                v.as_str()
            };
            (k.as_str(), shown)
        })
        .collect();
    masked.serialize(s)
}

mod millis {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(d.as_millis() as u64)
    }
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        Ok(Duration::from_millis(u64::deserialize(d)?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_bad_values_named() {
        assert!(IngestConfig::default().validate().is_ok());
        assert_eq!(
            IngestConfig::default().resolved().state_topic,
            "forewarn.state"
        );
        let other_group = IngestConfig {
            group_id: "plant-b".into(),
            ..Default::default()
        };
        assert_eq!(other_group.resolved().state_topic, "plant-b.state");
        let bad = IngestConfig {
            brokers: " ".into(),
            ..Default::default()
        };
        assert!(bad.validate().unwrap_err().contains("kafka.brokers"));
        let bad = IngestConfig {
            alerts_topic: "forewarn.readings".into(),
            ..Default::default()
        };
        assert!(bad.validate().unwrap_err().contains("input_topic"));
        let bad = IngestConfig {
            session_timeout_ms: 10,
            ..Default::default()
        };
        assert!(bad.validate().unwrap_err().contains("session_timeout_ms"));
        let bad = IngestConfig {
            state_topic: "forewarn.alerts".into(),
            ..Default::default()
        };
        assert!(bad.validate().unwrap_err().contains("used twice"));
        let mut bad = IngestConfig::default();
        bad.client.insert(
            "partition.assignment.strategy".into(),
            "cooperative-sticky".into(),
        );
        assert!(bad.validate().unwrap_err().contains("cooperative"));
        bad.checkpoint_interval = Duration::ZERO;
        assert!(bad.validate().is_ok());
    }

    fn with_client(pairs: &[(&str, &str)]) -> IngestConfig {
        let mut c = IngestConfig::default();
        for (k, v) in pairs {
            c.client.insert((*k).into(), (*v).into());
        }
        c
    }

    #[test]
    fn client_keys_from_env_spelling_and_secret_files() {
        let dir = tempfile::tempdir().unwrap();
        let secret = dir.path().join("password");
        std::fs::write(&secret, "s3cret-pw\n").unwrap();
        let c = with_client(&[
            ("security_protocol", "SASL_SSL"),
            ("sasl.mechanism", "SCRAM-SHA-512"),
            ("sasl_username", "forewarn"),
            ("sasl_password_file", secret.to_str().unwrap()),
        ]);
        c.validate().unwrap();
        let props = client_properties(&c.client).unwrap();
        assert!(props.contains(&("sasl.password".into(), "s3cret-pw".into())));
        assert!(props.contains(&("security.protocol".into(), "SASL_SSL".into())));
        assert!(props.contains(&("sasl.username".into(), "forewarn".into())));
        // Printed: the file's path, never its content.
        let printed = serde_json::to_string(&c).unwrap();
        assert!(
            !printed.contains("s3cret-pw") && printed.contains("password"),
            "{printed}"
        );

        let inline = with_client(&[("sasl.password", "inline-pw")]);
        let printed = serde_json::to_string(&inline).unwrap();
        assert!(
            !printed.contains("inline-pw") && printed.contains("****"),
            "{printed}"
        );
    }

    #[test]
    fn bad_security_settings_are_named() {
        let missing = with_client(&[("sasl.password_file", "/nonexistent/forewarn-pw")]);
        let e = missing.validate().unwrap_err();
        assert!(
            e.contains("sasl.password_file") && e.contains("/nonexistent/forewarn-pw"),
            "{e}"
        );
        let e = with_client(&[("security.protocol", "TLS")])
            .validate()
            .unwrap_err();
        assert!(e.contains("security.protocol"), "{e}");
        let e = with_client(&[
            ("security.protocol", "SASL_SSL"),
            ("sasl.mechanism", "PLAIN"),
            ("sasl.username", "u"),
        ])
        .validate()
        .unwrap_err();
        assert!(e.contains("sasl.password"), "{e}");
        let e = with_client(&[
            ("security.protocol", "SASL_SSL"),
            ("sasl.mechanism", "GSSAPI"),
        ])
        .validate()
        .unwrap_err();
        assert!(e.contains("GSSAPI"), "{e}");
        let e = with_client(&[("sasl.username", "a"), ("sasl_username", "b")])
            .validate()
            .unwrap_err();
        assert!(e.contains("twice"), "{e}");
    }
}
