//! The topic catalog's vocabulary: a topic as the rest of the broker sees it ([`TopicMeta`]),
//! and the checks a topic's name and configs must pass.
//!
//! Lives on: the authoritative copy is the metadata store's image
//! ([`super::metadata`]), which the controller (shard 0) alone changes; every shard keeps a
//! read-only cache of `TopicMeta`s that the controller updates through the router.

use std::collections::BTreeMap;
use std::fs;
use std::io;
use std::path::Path;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::error::KafkaError;

/// Topic-level settings this broker understands, checked when a topic is created.
pub const TOPIC_CONFIGS: &[&str] = &[
    "message.timestamp.type",
    "max.message.bytes",
    "segment.bytes",
    "flush.messages",
    "flush.ms",
    "segment.ms",
    "retention.ms",
    "retention.bytes",
];

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TopicMeta {
    pub name: String,
    pub topic_id: Uuid,
    pub partitions: i32,
    #[serde(default)]
    pub configs: BTreeMap<String, String>,
}

impl TopicMeta {
    /// Whether the broker stamps batches with its own clock (LogAppendTime).
    pub fn log_append_time(&self) -> bool {
        self.configs
            .get("message.timestamp.type")
            .map(String::as_str)
            == Some("LogAppendTime")
    }

    pub fn config_u64(&self, key: &str) -> Option<u64> {
        self.configs.get(key).and_then(|v| v.parse().ok())
    }

    pub fn config_i64(&self, key: &str) -> Option<i64> {
        self.configs.get(key).and_then(|v| v.parse().ok())
    }
}

/// The catalog as start-up hands it to the shards; also the layout of the `catalog.json` of
/// older versions, which [`super::metadata::load`] migrates.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct CatalogData {
    pub cluster_id: String,
    pub topics: Vec<TopicMeta>,
}

/// Checks a topic name as Kafka does: 1..=249 of `[a-zA-Z0-9._-]`, not `.` or `..`.
pub fn validate_topic_name(name: &str) -> Result<(), KafkaError> {
    if name.is_empty() || name.len() > 249 {
        return Err(KafkaError::InvalidTopic(format!(
            "topic name must be 1 to 249 characters, got {}",
            name.len()
        )));
    }
    if name == "." || name == ".." {
        return Err(KafkaError::InvalidTopic(format!(
            "'{name}' is not a topic name"
        )));
    }
    // Partition 0 of this topic would live in the metadata store's directory.
    if name == super::metadata::store::METADATA_TOPIC {
        return Err(KafkaError::InvalidTopic(format!(
            "'{name}' is reserved for the cluster metadata log"
        )));
    }
    // Its partitions' directories are the group coordinators' logs: a client-made topic of
    // that name would open them a second time, on other shards.
    if name == crate::placement::OFFSETS_TOPIC {
        return Err(KafkaError::InvalidTopic(format!(
            "'{name}' is the internal log of consumer groups"
        )));
    }
    if let Some(c) = name
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')))
    {
        return Err(KafkaError::InvalidTopic(format!(
            "topic name contains '{c}'; allowed are ASCII letters, digits, '.', '_' and '-'"
        )));
    }
    Ok(())
}

/// Checks topic configs given to CreateTopics.
pub fn validate_configs(configs: &BTreeMap<String, String>) -> Result<(), KafkaError> {
    for (k, v) in configs {
        match k.as_str() {
            "message.timestamp.type" => {
                if v != "CreateTime" && v != "LogAppendTime" {
                    return Err(KafkaError::InvalidConfig(format!(
                        "message.timestamp.type must be CreateTime or LogAppendTime, got '{v}'"
                    )));
                }
            }
            "retention.ms" | "retention.bytes" => {
                if !v.parse::<i64>().is_ok_and(|n| n >= -1) {
                    return Err(KafkaError::InvalidConfig(format!(
                        "{k} must be -1 (no limit) or a non-negative integer, got '{v}'"
                    )));
                }
            }
            "segment.ms" => {
                if !v.parse::<i64>().is_ok_and(|n| n >= 1) {
                    return Err(KafkaError::InvalidConfig(format!(
                        "segment.ms must be a positive integer, got '{v}'"
                    )));
                }
            }
            "flush.messages" | "flush.ms" => {
                if v.parse::<u64>().is_err() {
                    return Err(KafkaError::InvalidConfig(format!(
                        "{k} must be a non-negative integer, got '{v}'"
                    )));
                }
            }
            "max.message.bytes" | "segment.bytes" => {
                let ok = v
                    .parse::<u64>()
                    .is_ok_and(|n| (1024..=u32::MAX as u64).contains(&n));
                if !ok {
                    return Err(KafkaError::InvalidConfig(format!(
                        "{k} must be an integer between 1024 and {}, got '{v}'",
                        u32::MAX
                    )));
                }
            }
            _ => {
                return Err(KafkaError::InvalidConfig(format!(
                    "unknown or unsupported topic config '{k}' (supported: {})",
                    TOPIC_CONFIGS.join(", ")
                )));
            }
        }
    }
    Ok(())
}

const CLEAN_SHUTDOWN_MARKER: &str = ".clean_shutdown";

/// Removes the clean-shutdown marker (durably) and says whether it was there.
pub fn take_clean_shutdown_marker(data_dir: &Path) -> io::Result<bool> {
    fs::create_dir_all(data_dir)?;
    match fs::remove_file(data_dir.join(CLEAN_SHUTDOWN_MARKER)) {
        Ok(()) => {
            fs::File::open(data_dir)?.sync_all()?;
            Ok(true)
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(e),
    }
}

/// Leaves the marker that lets the next start skip recovery: call only once every log is
/// flushed and closed.
pub fn write_clean_shutdown_marker(data_dir: &Path) -> io::Result<()> {
    let f = fs::File::create(data_dir.join(CLEAN_SHUTDOWN_MARKER))?;
    f.sync_all()?;
    fs::File::open(data_dir)?.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topic_names() {
        assert!(validate_topic_name("orders.v1_x-2").is_ok());
        for bad in [
            "",
            ".",
            "..",
            "a/b",
            "a b",
            &"x".repeat(250),
            "__cluster_metadata",
            "__consumer_offsets",
        ] {
            assert_eq!(validate_topic_name(bad).unwrap_err().code(), 17, "{bad}");
        }
    }

    #[test]
    fn configs() {
        let mut c = BTreeMap::new();
        c.insert(
            "message.timestamp.type".to_string(),
            "LogAppendTime".to_string(),
        );
        assert!(validate_configs(&c).is_ok());
        c.insert("cleanup.policy".to_string(), "compact".to_string());
        assert_eq!(validate_configs(&c).unwrap_err().code(), 40);
    }
}
