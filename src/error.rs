//! Typed errors, and the one place that maps them to Kafka error codes.
//!
//! Operating errors (bad input, a full disk, an unknown topic) are values of [`KafkaError`] and
//! travel back to the client as the matching code; they never panic the broker.

use kafka_protocol::ResponseError;

/// A failure that a client sees as a Kafka error code.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum KafkaError {
    #[error("unknown topic or partition")]
    UnknownTopicOrPartition,
    #[error("unknown topic id")]
    UnknownTopicId,
    #[error("record batch is corrupt: {0}")]
    CorruptMessage(String),
    #[error("record batch of {size} bytes exceeds the maximum of {max}")]
    MessageTooLarge { size: usize, max: usize },
    #[error("record batch format not supported: {0}")]
    UnsupportedForMessageFormat(String),
    #[error("invalid request: {0}")]
    InvalidRequest(String),
    #[error("invalid topic name: {0}")]
    InvalidTopic(String),
    #[error("topic already exists")]
    TopicAlreadyExists,
    #[error("invalid partitions: {0}")]
    InvalidPartitions(String),
    #[error("invalid replication factor: {0}")]
    InvalidReplicationFactor(String),
    #[error("invalid config: {0}")]
    InvalidConfig(String),
    #[error("invalid required acks: {0}")]
    InvalidRequiredAcks(i16),
    #[error("offset {offset} out of range [{start}, {end}]")]
    OffsetOutOfRange { offset: i64, start: i64, end: i64 },
    #[error("unknown leader epoch")]
    UnknownLeaderEpoch,
    #[error("storage error: {0}")]
    Storage(String),
    #[error("broker is shutting down")]
    NotAvailable,
}

impl KafkaError {
    /// The wire code for this error.
    pub fn code(&self) -> i16 {
        self.response_error().code()
    }

    fn response_error(&self) -> ResponseError {
        match self {
            KafkaError::UnknownTopicOrPartition => ResponseError::UnknownTopicOrPartition,
            KafkaError::UnknownTopicId => ResponseError::UnknownTopicId,
            KafkaError::CorruptMessage(_) => ResponseError::CorruptMessage,
            KafkaError::MessageTooLarge { .. } => ResponseError::MessageTooLarge,
            KafkaError::UnsupportedForMessageFormat(_) => {
                ResponseError::UnsupportedForMessageFormat
            }
            KafkaError::InvalidRequest(_) => ResponseError::InvalidRequest,
            KafkaError::InvalidTopic(_) => ResponseError::InvalidTopicException,
            KafkaError::TopicAlreadyExists => ResponseError::TopicAlreadyExists,
            KafkaError::InvalidPartitions(_) => ResponseError::InvalidPartitions,
            KafkaError::InvalidReplicationFactor(_) => ResponseError::InvalidReplicationFactor,
            KafkaError::InvalidConfig(_) => ResponseError::InvalidConfig,
            KafkaError::InvalidRequiredAcks(_) => ResponseError::InvalidRequiredAcks,
            KafkaError::OffsetOutOfRange { .. } => ResponseError::OffsetOutOfRange,
            KafkaError::UnknownLeaderEpoch => ResponseError::UnknownLeaderEpoch,
            KafkaError::Storage(_) => ResponseError::KafkaStorageError,
            KafkaError::NotAvailable => ResponseError::BrokerNotAvailable,
        }
    }

    /// The message for the response's `error_message` field, where the API has one.
    pub fn message(&self) -> String {
        self.to_string()
    }
}

/// Why a request frame could not be turned into a request. Every variant closes the
/// connection: the byte stream can no longer be trusted to be in step.
#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    #[error("frame size {0} is negative")]
    NegativeSize(i32),
    #[error("frame size {size} exceeds the maximum of {max} bytes")]
    TooLarge { size: usize, max: usize },
    #[error("unknown API key {0}")]
    UnknownApiKey(i16),
    #[error("{api} v{version} is not supported")]
    UnsupportedVersion { api: &'static str, version: i16 },
    #[error("request cannot be decoded: {0}")]
    Undecodable(String),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_match_the_kafka_protocol() {
        let cases = [
            (KafkaError::UnknownTopicOrPartition, 3),
            (KafkaError::CorruptMessage(String::new()), 2),
            (KafkaError::MessageTooLarge { size: 2, max: 1 }, 10),
            (KafkaError::InvalidRequest(String::new()), 42),
            (KafkaError::TopicAlreadyExists, 36),
            (KafkaError::InvalidPartitions(String::new()), 37),
            (KafkaError::InvalidTopic(String::new()), 17),
            (
                KafkaError::OffsetOutOfRange {
                    offset: 0,
                    start: 0,
                    end: 0,
                },
                1,
            ),
            (KafkaError::Storage(String::new()), 56),
            (KafkaError::UnknownTopicId, 100),
        ];
        for (err, code) in cases {
            assert_eq!(err.code(), code, "{err:?}");
        }
    }
}
