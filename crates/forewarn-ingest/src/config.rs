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
    /// Extra librdkafka properties for consumer and producer (e.g. security).
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
        if self.checkpoints()
            && self
                .client
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
}
