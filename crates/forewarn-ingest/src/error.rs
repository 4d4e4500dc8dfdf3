//! The pipeline's error.

#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    #[error("kafka: {0}")]
    Kafka(#[from] rdkafka::error::KafkaError),
    #[error("forecaster failed: {0}")]
    Forecaster(String),
    #[error("pipeline stage {0} stopped unexpectedly")]
    StageDied(&'static str),
    #[error("invalid configuration: {0}")]
    Config(String),
}
