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
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::error::KafkaError;

/// How a config's value is typed (DescribeConfigs reports it).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConfigKind {
    String,
    Int,
    Long,
    Boolean,
    Double,
}

/// One topic config this broker understands: its name, the broker setting that is its
/// default, its type and its documentation. The one table of topic configs: creation and
/// alteration accept exactly these names ([`TopicConfig::parse`]), DescribeConfigs lists them.
#[derive(Clone, Copy, Debug)]
pub struct TopicConfigDef {
    pub name: &'static str,
    pub broker_name: &'static str,
    pub kind: ConfigKind,
    pub doc: &'static str,
}

/// Every topic config this broker understands.
pub const TOPIC_CONFIGS: &[TopicConfigDef] = &[
    TopicConfigDef {
        name: "message.timestamp.type",
        broker_name: "log.message.timestamp.type",
        kind: ConfigKind::String,
        doc: "CreateTime keeps the producer's timestamps; LogAppendTime stamps batches with the \
         broker's clock when they are appended.",
    },
    TopicConfigDef {
        name: "max.message.bytes",
        broker_name: "message.max.bytes",
        kind: ConfigKind::Int,
        doc: "Largest record batch a Produce may append to this topic, in bytes.",
    },
    TopicConfigDef {
        name: "segment.bytes",
        broker_name: "log.segment.bytes",
        kind: ConfigKind::Int,
        doc: "Size in bytes at which a partition's active segment rolls to a new one.",
    },
    TopicConfigDef {
        name: "flush.messages",
        broker_name: "log.flush.interval.messages",
        kind: ConfigKind::Long,
        doc: "Records after which a partition is fdatasync'd in the background. Unset (shown as \
         9223372036854775807) together with flush.ms: acks=all waits for fdatasync (group \
         commit). Set: acks=all is answered once the data is in the page cache.",
    },
    TopicConfigDef {
        name: "flush.ms",
        broker_name: "log.flush.interval.ms",
        kind: ConfigKind::Long,
        doc: "Milliseconds after which a partition is fdatasync'd in the background. Unset (shown \
         as 9223372036854775807) together with flush.messages: acks=all waits for fdatasync \
         (group commit). Set: acks=all is answered once the data is in the page cache.",
    },
    TopicConfigDef {
        name: "segment.ms",
        broker_name: "log.roll.ms",
        kind: ConfigKind::Long,
        doc: "Milliseconds after a segment's first append at which it rolls, even if not full.",
    },
    TopicConfigDef {
        name: "retention.ms",
        broker_name: "log.retention.ms",
        kind: ConfigKind::Long,
        doc: "Segments whose newest record is older than this many milliseconds are deleted; -1 \
         keeps everything.",
    },
    TopicConfigDef {
        name: "retention.bytes",
        broker_name: "log.retention.bytes",
        kind: ConfigKind::Long,
        doc: "A partition's oldest segments are deleted while it is larger than this many bytes; \
         -1 keeps everything.",
    },
    TopicConfigDef {
        name: "min.insync.replicas",
        broker_name: "min.insync.replicas",
        kind: ConfigKind::Int,
        doc: "In-sync replicas an acks=all write needs: with fewer, it is refused with \
         NOT_ENOUGH_REPLICAS and not appended.",
    },
    TopicConfigDef {
        name: "unclean.leader.election.enable",
        broker_name: "unclean.leader.election.enable",
        kind: ConfigKind::Boolean,
        doc: "Whether a replica outside the ISR may become leader when no in-sync replica is \
         left; what only the ISR had is then lost.",
    },
    TopicConfigDef {
        name: "cleanup.policy",
        broker_name: "log.cleanup.policy",
        kind: ConfigKind::String,
        doc: "What happens to old segments: delete (by retention.ms and retention.bytes), \
         compact (the log cleaner keeps the last record of every key, at its original offset), \
         or compact,delete (both).",
    },
    TopicConfigDef {
        name: "min.cleanable.dirty.ratio",
        broker_name: "log.cleaner.min.cleanable.ratio",
        kind: ConfigKind::Double,
        doc: "A compacted partition is cleaned once the bytes written since its last clean are \
         at least this share (0 to 1) of its cleanable bytes.",
    },
    TopicConfigDef {
        name: "min.compaction.lag.ms",
        broker_name: "log.cleaner.min.compaction.lag.ms",
        kind: ConfigKind::Long,
        doc: "A record stays uncompacted for at least this many milliseconds: the cleaner never \
         cleans a segment holding a younger record.",
    },
    TopicConfigDef {
        name: "max.compaction.lag.ms",
        broker_name: "log.cleaner.max.compaction.lag.ms",
        kind: ConfigKind::Long,
        doc: "A compacted partition is cleaned, whatever its dirty ratio, once its oldest \
         uncleaned record is this many milliseconds old.",
    },
    TopicConfigDef {
        name: "delete.retention.ms",
        broker_name: "log.cleaner.delete.retention.ms",
        kind: ConfigKind::Long,
        doc: "How long the cleaner keeps a tombstone (a record with a null value), counted \
         from its timestamp, so consumers reading the log see the delete.",
    },
    TopicConfigDef {
        name: "compression.type",
        broker_name: "compression.type",
        kind: ConfigKind::String,
        doc: "The codec batches are stored in: producer (as the producer sent them). \
         Recompressing on the way in (gzip, snappy, lz4, zstd, uncompressed) is not built yet \
         and is refused.",
    },
    TopicConfigDef {
        name: "leader.replication.throttled.replicas",
        broker_name: "leader.replication.throttled.replicas",
        kind: ConfigKind::String,
        doc: "Replicas whose leader side is throttled to leader.replication.throttled.rate while \
         their follower is out of sync: '*' or a list PARTITION:BROKER,... (the brokers that \
         may lead).",
    },
    TopicConfigDef {
        name: "follower.replication.throttled.replicas",
        broker_name: "follower.replication.throttled.replicas",
        kind: ConfigKind::String,
        doc: "Replicas whose follower side is throttled to follower.replication.throttled.rate \
         while they are out of sync: '*' or a list PARTITION:BROKER,... (the brokers that \
         catch up, as a reassignment's new replicas).",
    },
];

/// Kafka's throttled-replica list (`leader.replication.throttled.replicas`,
/// `follower.replication.throttled.replicas`): none, every replica (`*`), or the replicas
/// `PARTITION:BROKER` named.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum ThrottledReplicas {
    #[default]
    None,
    All,
    Listed(Vec<(i32, i32)>),
}

impl ThrottledReplicas {
    /// Parses Kafka's syntax: `*`, or `PARTITION:BROKER` entries separated by commas (spaces
    /// around them allowed), or nothing.
    pub fn parse(v: &str) -> Result<ThrottledReplicas, String> {
        let v = v.trim();
        if v.is_empty() {
            return Ok(ThrottledReplicas::None);
        }
        if v == "*" {
            return Ok(ThrottledReplicas::All);
        }
        let mut out = Vec::new();
        for entry in v.split(',').map(str::trim) {
            let parsed = entry.split_once(':').and_then(|(p, b)| {
                let p = p.trim().parse::<i32>().ok().filter(|p| *p >= 0)?;
                let b = b.trim().parse::<i32>().ok().filter(|b| *b >= 0)?;
                Some((p, b))
            });
            match parsed {
                Some(pb) => out.push(pb),
                None => {
                    return Err(format!(
                        "'{entry}' is not PARTITION:BROKER (the list is '*' or PARTITION:BROKER,...)"
                    ));
                }
            }
        }
        Ok(ThrottledReplicas::Listed(out))
    }

    /// Whether the replica of `partition` on `broker` is throttled.
    pub fn contains(&self, partition: i32, broker: i32) -> bool {
        match self {
            ThrottledReplicas::None => false,
            ThrottledReplicas::All => true,
            ThrottledReplicas::Listed(l) => l.contains(&(partition, broker)),
        }
    }
}

/// Whether `name` is a topic config of [`TOPIC_CONFIGS`].
pub fn is_topic_config(name: &str) -> bool {
    TOPIC_CONFIGS.iter().any(|d| d.name == name)
}

/// The names of [`TOPIC_CONFIGS`], for messages.
pub fn topic_config_names() -> String {
    TOPIC_CONFIGS
        .iter()
        .map(|d| d.name)
        .collect::<Vec<_>>()
        .join(", ")
}

/// Where one partition lives: its replicas, the in-sync ones, the leader (-1: none, the
/// partition is offline) and the leader epoch, as the metadata gives them.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PartitionAssignment {
    pub replicas: Vec<i32>,
    pub isr: Vec<i32>,
    pub leader: i32,
    pub leader_epoch: i32,
    /// Bumped by every change of the partition's leader or ISR (Kafka's partition epoch): an
    /// AlterPartition carrying another is stale.
    pub partition_epoch: i32,
    /// A reassignment in progress (KIP-455): replicas catching up to join, and replicas that
    /// leave when it completes; `replicas` holds both meanwhile.
    pub adding_replicas: Vec<i32>,
    pub removing_replicas: Vec<i32>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TopicMeta {
    pub name: String,
    pub topic_id: Uuid,
    pub partitions: i32,
    /// The configs set on the topic, as given (what DescribeConfigs shows and the metadata
    /// records store).
    #[serde(default)]
    pub configs: BTreeMap<String, String>,
    /// The same configs, parsed and validated once, shared by every user of the topic (the
    /// Produce path, the flusher, retention) instead of parsing strings on each use.
    #[serde(skip)]
    pub config: Arc<TopicConfig>,
    /// Each partition's replicas and leader, by partition index (empty in a `catalog.json` of
    /// older versions: this node holds them all).
    #[serde(skip)]
    pub assignment: Arc<Vec<PartitionAssignment>>,
}

impl TopicMeta {
    /// A topic with `configs`, which must be valid (see [`TopicConfig::parse`]).
    pub fn new(
        name: String,
        topic_id: Uuid,
        partitions: i32,
        configs: BTreeMap<String, String>,
    ) -> Result<TopicMeta, KafkaError> {
        let config = Arc::new(TopicConfig::parse(&configs)?);
        Ok(TopicMeta {
            name,
            topic_id,
            partitions,
            configs,
            config,
            assignment: Arc::default(),
        })
    }

    /// A topic read back from the metadata log: its configs were validated when they were
    /// set, so one that no longer parses (a rule tightened since) is reported and left to
    /// the broker default rather than making the topic unusable.
    pub fn stored(
        name: String,
        topic_id: Uuid,
        partitions: i32,
        configs: BTreeMap<String, String>,
    ) -> TopicMeta {
        let mut config = TopicConfig::default();
        for (k, v) in &configs {
            if let Err(e) = config.set(k, v) {
                tracing::error!(topic = %name, config = %k, error = %e, "stored topic config ignored");
            }
        }
        TopicMeta {
            name,
            topic_id,
            partitions,
            configs,
            config: Arc::new(config),
            assignment: Arc::default(),
        }
    }

    /// The topic without its partition assignment (tests compare topics made by hand, which
    /// have none, with topics read back from the metadata).
    #[cfg(test)]
    pub fn without_assignment(self) -> TopicMeta {
        TopicMeta {
            assignment: Arc::default(),
            ..self
        }
    }

    /// Where partition `p` lives, if the metadata says.
    pub fn partition(&self, p: i32) -> Option<&PartitionAssignment> {
        self.assignment.get(usize::try_from(p).ok()?)
    }

    /// Whether the broker stamps batches with its own clock (LogAppendTime).
    pub fn log_append_time(&self) -> bool {
        self.config.log_append_time
    }
}

/// A topic's configs, typed. `None` is "not set on the topic": the broker default applies.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct TopicConfig {
    /// `message.timestamp.type` = LogAppendTime.
    pub log_append_time: bool,
    pub max_message_bytes: Option<u64>,
    pub segment_bytes: Option<u64>,
    /// Milliseconds; at least 1.
    pub segment_ms: Option<u64>,
    /// -1 keeps everything.
    pub retention_ms: Option<i64>,
    /// -1 keeps everything.
    pub retention_bytes: Option<i64>,
    pub flush_messages: Option<u64>,
    pub flush_ms: Option<u64>,
    /// At least 1.
    pub min_insync_replicas: Option<i32>,
    pub unclean_leader_election_enable: Option<bool>,
    /// Replicas throttled on the leader side and on the follower side.
    pub leader_throttled_replicas: ThrottledReplicas,
    pub follower_throttled_replicas: ThrottledReplicas,
    /// `cleanup.policy`.
    pub cleanup_policy: Option<CleanupPolicy>,
    /// `min.cleanable.dirty.ratio`, 0 to 1.
    pub min_cleanable_dirty_ratio: Option<f64>,
    /// `min.compaction.lag.ms`, at least 0.
    pub min_compaction_lag_ms: Option<u64>,
    /// `max.compaction.lag.ms`, at least 1.
    pub max_compaction_lag_ms: Option<u64>,
    /// `delete.retention.ms`, at least 0.
    pub delete_retention_ms: Option<u64>,
}

// `f64` is never NaN here (the parser refuses it), so equality is total.
impl Eq for TopicConfig {}

/// `cleanup.policy`: whether old segments are deleted by retention, compacted by the log
/// cleaner, or both.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CleanupPolicy {
    pub delete: bool,
    pub compact: bool,
}

impl CleanupPolicy {
    pub const DELETE: CleanupPolicy = CleanupPolicy {
        delete: true,
        compact: false,
    };

    /// Parses Kafka's list: `delete`, `compact`, or both separated by a comma in either
    /// order (spaces around the entries allowed).
    pub fn parse(v: &str) -> Result<CleanupPolicy, String> {
        let mut p = CleanupPolicy {
            delete: false,
            compact: false,
        };
        for entry in v.split(',').map(str::trim) {
            match entry {
                "delete" => p.delete = true,
                "compact" => p.compact = true,
                _ => {
                    return Err(format!(
                        "cleanup.policy '{v}' must be delete, compact or compact,delete"
                    ));
                }
            }
        }
        Ok(p)
    }

    /// Kafka's spelling.
    pub fn name(&self) -> &'static str {
        match (self.compact, self.delete) {
            (true, true) => "compact,delete",
            (true, false) => "compact",
            _ => "delete",
        }
    }
}

impl TopicConfig {
    /// Parses and validates a topic's configs (CreateTopics, AlterConfigs); the error names
    /// the config and what it takes.
    pub fn parse(configs: &BTreeMap<String, String>) -> Result<TopicConfig, KafkaError> {
        let mut config = TopicConfig::default();
        for (k, v) in configs {
            config.set(k, v)?;
        }
        Ok(config)
    }

    /// Sets one config from its text, as Kafka validates it.
    fn set(&mut self, k: &str, v: &str) -> Result<(), KafkaError> {
        let invalid = |what: String| Err(KafkaError::InvalidConfig(what));
        match k {
            "message.timestamp.type" => match v {
                "CreateTime" => self.log_append_time = false,
                "LogAppendTime" => self.log_append_time = true,
                _ => {
                    return invalid(format!(
                        "message.timestamp.type must be CreateTime or LogAppendTime, got '{v}'"
                    ));
                }
            },
            "retention.ms" | "retention.bytes" => {
                let Some(n) = v.parse::<i64>().ok().filter(|n| *n >= -1) else {
                    return invalid(format!(
                        "{k} must be -1 (no limit) or a non-negative integer, got '{v}'"
                    ));
                };
                if k == "retention.ms" {
                    self.retention_ms = Some(n);
                } else {
                    self.retention_bytes = Some(n);
                }
            }
            "segment.ms" => {
                let Some(n) = v.parse::<u64>().ok().filter(|n| *n >= 1) else {
                    return invalid(format!("segment.ms must be a positive integer, got '{v}'"));
                };
                self.segment_ms = Some(n);
            }
            "flush.messages" | "flush.ms" => {
                let Ok(n) = v.parse::<u64>() else {
                    return invalid(format!("{k} must be a non-negative integer, got '{v}'"));
                };
                if k == "flush.messages" {
                    self.flush_messages = Some(n);
                } else {
                    self.flush_ms = Some(n);
                }
            }
            "max.message.bytes" | "segment.bytes" => {
                let Some(n) = v
                    .parse::<u64>()
                    .ok()
                    .filter(|n| (1024..=u32::MAX as u64).contains(n))
                else {
                    return invalid(format!(
                        "{k} must be an integer between 1024 and {}, got '{v}'",
                        u32::MAX
                    ));
                };
                if k == "max.message.bytes" {
                    self.max_message_bytes = Some(n);
                } else {
                    self.segment_bytes = Some(n);
                }
            }
            "min.insync.replicas" => {
                let Some(n) = v.parse::<i32>().ok().filter(|n| *n >= 1) else {
                    return invalid(format!(
                        "min.insync.replicas must be a positive integer, got '{v}'"
                    ));
                };
                self.min_insync_replicas = Some(n);
            }
            "unclean.leader.election.enable" => match v {
                "true" => self.unclean_leader_election_enable = Some(true),
                "false" => self.unclean_leader_election_enable = Some(false),
                _ => {
                    return invalid(format!(
                        "unclean.leader.election.enable must be true or false, got '{v}'"
                    ));
                }
            },
            // Kafka's defaults, which tools set explicitly (Terraform, operators): accepted
            // because they are what this broker does; other values need what is not built.
            "cleanup.policy" => {
                self.cleanup_policy =
                    Some(CleanupPolicy::parse(v).map_err(KafkaError::InvalidConfig)?);
            }
            "min.cleanable.dirty.ratio" => {
                let Some(n) = v.parse::<f64>().ok().filter(|n| (0.0..=1.0).contains(n)) else {
                    return invalid(format!(
                        "min.cleanable.dirty.ratio must be a number between 0 and 1, got '{v}'"
                    ));
                };
                self.min_cleanable_dirty_ratio = Some(n);
            }
            "min.compaction.lag.ms" | "delete.retention.ms" => {
                let Ok(n) = v.parse::<u64>() else {
                    return invalid(format!("{k} must be a non-negative integer, got '{v}'"));
                };
                if k == "delete.retention.ms" {
                    self.delete_retention_ms = Some(n);
                } else {
                    self.min_compaction_lag_ms = Some(n);
                }
            }
            "max.compaction.lag.ms" => {
                let Some(n) = v.parse::<u64>().ok().filter(|n| *n >= 1) else {
                    return invalid(format!(
                        "max.compaction.lag.ms must be a positive integer, got '{v}'"
                    ));
                };
                self.max_compaction_lag_ms = Some(n);
            }
            "compression.type" => {
                if v != "producer" {
                    return invalid(format!(
                        "compression.type '{v}' is not supported: batches are stored as the \
                         producer sent them (only producer)"
                    ));
                }
            }
            "leader.replication.throttled.replicas" | "follower.replication.throttled.replicas" => {
                let parsed = ThrottledReplicas::parse(v)
                    .map_err(|why| KafkaError::InvalidConfig(format!("{k}: {why}")))?;
                if k.starts_with("leader") {
                    self.leader_throttled_replicas = parsed;
                } else {
                    self.follower_throttled_replicas = parsed;
                }
            }
            _ => {
                return invalid(format!(
                    "unknown or unsupported topic config '{k}' (supported: {})",
                    topic_config_names()
                ));
            }
        }
        Ok(())
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
    // The same for the transaction coordinators' log.
    if name == crate::placement::TXN_TOPIC {
        return Err(KafkaError::InvalidTopic(format!(
            "'{name}' is the internal log of transactions"
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
    #[test]
    fn throttled_replicas_in_kafkas_syntax() {
        use super::ThrottledReplicas as T;
        assert_eq!(T::parse(""), Ok(T::None));
        assert_eq!(T::parse(" * "), Ok(T::All));
        let l = T::parse("0:101, 0:102,1:101").unwrap();
        assert_eq!(l, T::Listed(vec![(0, 101), (0, 102), (1, 101)]));
        assert!(l.contains(0, 102) && !l.contains(1, 102));
        assert!(T::All.contains(9, 9) && !T::None.contains(0, 0));
        for bad in ["0", "a:1", "0:1,", "*,0:1", "-1:2", "0:1:2"] {
            assert!(T::parse(bad).is_err(), "{bad}");
        }
        let mut configs = BTreeMap::new();
        configs.insert(
            "follower.replication.throttled.replicas".to_string(),
            "0:3".to_string(),
        );
        let c = TopicConfig::parse(&configs).unwrap();
        assert!(c.follower_throttled_replicas.contains(0, 3));
        configs.insert(
            "leader.replication.throttled.replicas".to_string(),
            "x".to_string(),
        );
        assert!(matches!(
            TopicConfig::parse(&configs),
            Err(KafkaError::InvalidConfig(_))
        ));
    }

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
        let parsed = TopicConfig::parse(&c).unwrap();
        assert!(parsed.log_append_time);
        let cases: &[(&str, &str, Option<TopicConfig>)] = &[
            (
                "retention.ms",
                "-1",
                Some(TopicConfig {
                    retention_ms: Some(-1),
                    ..Default::default()
                }),
            ),
            ("retention.ms", "-2", None),
            ("segment.ms", "0", None),
            (
                "segment.bytes",
                "1024",
                Some(TopicConfig {
                    segment_bytes: Some(1024),
                    ..Default::default()
                }),
            ),
            ("segment.bytes", "1023", None),
            ("flush.ms", "x", None),
            (
                "flush.messages",
                "1",
                Some(TopicConfig {
                    flush_messages: Some(1),
                    ..Default::default()
                }),
            ),
            ("message.timestamp.type", "Now", None),
            (
                "cleanup.policy",
                "compact",
                Some(TopicConfig {
                    cleanup_policy: Some(CleanupPolicy {
                        compact: true,
                        delete: false,
                    }),
                    ..Default::default()
                }),
            ),
            (
                "cleanup.policy",
                "delete, compact",
                Some(TopicConfig {
                    cleanup_policy: Some(CleanupPolicy {
                        compact: true,
                        delete: true,
                    }),
                    ..Default::default()
                }),
            ),
            ("cleanup.policy", "compacted", None),
            ("cleanup.policy", "", None),
            (
                "cleanup.policy",
                "delete",
                Some(TopicConfig {
                    cleanup_policy: Some(CleanupPolicy::DELETE),
                    ..Default::default()
                }),
            ),
            (
                "min.cleanable.dirty.ratio",
                "0.01",
                Some(TopicConfig {
                    min_cleanable_dirty_ratio: Some(0.01),
                    ..Default::default()
                }),
            ),
            ("min.cleanable.dirty.ratio", "1.5", None),
            ("min.cleanable.dirty.ratio", "NaN", None),
            ("min.compaction.lag.ms", "-1", None),
            ("max.compaction.lag.ms", "0", None),
            (
                "delete.retention.ms",
                "1000",
                Some(TopicConfig {
                    delete_retention_ms: Some(1000),
                    ..Default::default()
                }),
            ),
            ("compression.type", "producer", Some(TopicConfig::default())),
            ("compression.type", "zstd", None),
        ];
        for (k, v, want) in cases {
            let one = BTreeMap::from([(k.to_string(), v.to_string())]);
            match (TopicConfig::parse(&one), want) {
                (Ok(got), Some(want)) => assert_eq!(&got, want, "{k}={v}"),
                (Err(e), None) => assert_eq!(e.code(), 40, "{k}={v}"),
                (got, want) => panic!("{k}={v}: got {got:?}, want {want:?}"),
            }
        }
        // Every config of the table parses (from its broker default's form), and the parser
        // knows no name the table does not have (checked by the unknown-name case above).
        for def in TOPIC_CONFIGS {
            let sample = match def.kind {
                ConfigKind::String if def.name.ends_with(".throttled.replicas") => "*",
                ConfigKind::String if def.name == "cleanup.policy" => "delete",
                ConfigKind::String if def.name == "compression.type" => "producer",
                ConfigKind::String => "CreateTime",
                ConfigKind::Int | ConfigKind::Long => "4096",
                ConfigKind::Boolean => "true",
                ConfigKind::Double => "0.5",
            };
            let one = BTreeMap::from([(def.name.to_string(), sample.to_string())]);
            assert!(TopicConfig::parse(&one).is_ok(), "{}", def.name);
        }
        // A stored config that no longer parses falls back to the default, the rest apply.
        let stored = BTreeMap::from([
            ("segment.bytes".to_string(), "10".to_string()),
            ("flush.ms".to_string(), "5".to_string()),
        ]);
        let meta = TopicMeta::stored("t".into(), Uuid::nil(), 1, stored);
        assert_eq!(
            (meta.config.segment_bytes, meta.config.flush_ms),
            (None, Some(5))
        );
    }
}
