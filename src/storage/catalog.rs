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
        doc: "The codec batches are stored in: producer keeps each batch as the producer sent \
         it (zero-copy); uncompressed, gzip, snappy, lz4 or zstd recompresses on the way in \
         every batch that comes in another codec (offsets, timestamps, producer id and \
         sequence kept).",
    },
    TopicConfigDef {
        name: "compression.gzip.level",
        broker_name: "compression.gzip.level",
        kind: ConfigKind::Int,
        doc: "Level of gzip when compression.type is gzip: 1 to 9, or -1 for the codec's \
         default (6).",
    },
    TopicConfigDef {
        name: "compression.lz4.level",
        broker_name: "compression.lz4.level",
        kind: ConfigKind::Int,
        doc: "Level of lz4 when compression.type is lz4: 1 to 17 (9 and up: high compression).",
    },
    TopicConfigDef {
        name: "compression.zstd.level",
        broker_name: "compression.zstd.level",
        kind: ConfigKind::Int,
        doc: "Level of zstd when compression.type is zstd: -131072 to 22.",
    },
    TopicConfigDef {
        name: "message.timestamp.before.max.ms",
        broker_name: "log.message.timestamp.before.max.ms",
        kind: ConfigKind::Long,
        doc: "With CreateTime, a batch holding a record more than this many ms older than the \
         broker's clock is refused with INVALID_TIMESTAMP.",
    },
    TopicConfigDef {
        name: "message.timestamp.after.max.ms",
        broker_name: "log.message.timestamp.after.max.ms",
        kind: ConfigKind::Long,
        doc: "With CreateTime, a batch holding a record more than this many ms ahead of the \
         broker's clock is refused with INVALID_TIMESTAMP (Kafka 4's default: one hour).",
    },
    TopicConfigDef {
        name: "segment.jitter.ms",
        broker_name: "log.roll.jitter.ms",
        kind: ConfigKind::Long,
        doc: "Largest random time taken off segment.ms for each new segment, so that \
         partitions created together do not all roll at once.",
    },
    TopicConfigDef {
        name: "segment.index.bytes",
        broker_name: "log.index.size.max.bytes",
        kind: ConfigKind::Int,
        doc: "Largest offset index of a segment, in bytes (8 per entry): a segment whose index \
         is full rolls.",
    },
    TopicConfigDef {
        name: "index.interval.bytes",
        broker_name: "log.index.interval.bytes",
        kind: ConfigKind::Int,
        doc: "Bytes of log between two offset index entries: smaller finds an offset with less \
         scanning, larger keeps indexes smaller.",
    },
    TopicConfigDef {
        name: "preallocate",
        broker_name: "log.preallocate",
        kind: ConfigKind::Boolean,
        doc: "Reserve disk blocks for a whole segment (segment.bytes) when it is created \
         (fallocate, keeping the file's size), so appends do not allocate.",
    },
    TopicConfigDef {
        name: "file.delete.delay.ms",
        broker_name: "log.segment.delete.delay.ms",
        kind: ConfigKind::Long,
        doc: "How long the files of a segment removed by retention or DeleteRecords stay on \
         disk (renamed *.deleted) before they are deleted.",
    },
    TopicConfigDef {
        name: "message.downconversion.enable",
        broker_name: "log.message.downconversion.enable",
        kind: ConfigKind::Boolean,
        doc: "No effect: as in Kafka 4, batches are never converted to old message formats \
         (Produce from v3 and Fetch from v4 only), so only the default, true, is accepted.",
    },
    TopicConfigDef {
        name: "remote.storage.enable",
        broker_name: "remote.log.storage.system.enable",
        kind: ConfigKind::Boolean,
        doc: "Tiered storage is not built: only the default, false, is accepted.",
    },
    TopicConfigDef {
        name: "local.retention.ms",
        broker_name: "log.local.retention.ms",
        kind: ConfigKind::Long,
        doc: "Tiered storage is not built (retention.ms is the only retention by time): only \
         the default, -2, is accepted.",
    },
    TopicConfigDef {
        name: "local.retention.bytes",
        broker_name: "log.local.retention.bytes",
        kind: ConfigKind::Long,
        doc: "Tiered storage is not built (retention.bytes is the only retention by size): \
         only the default, -2, is accepted.",
    },
    TopicConfigDef {
        name: "remote.log.copy.disable",
        broker_name: "",
        kind: ConfigKind::Boolean,
        doc: "Tiered storage is not built: only the default, false, is accepted.",
    },
    TopicConfigDef {
        name: "remote.log.delete.on.disable",
        broker_name: "",
        kind: ConfigKind::Boolean,
        doc: "Tiered storage is not built: only the default, false, is accepted.",
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
    /// `compression.type`.
    pub compression: Option<TopicCompression>,
    /// `compression.gzip.level` (-1: the codec's default), `compression.lz4.level`,
    /// `compression.zstd.level`.
    pub gzip_level: Option<i32>,
    pub lz4_level: Option<i32>,
    pub zstd_level: Option<i32>,
    /// `message.timestamp.before.max.ms` and `message.timestamp.after.max.ms`.
    pub timestamp_before_max_ms: Option<u64>,
    pub timestamp_after_max_ms: Option<u64>,
    pub segment_jitter_ms: Option<u64>,
    /// `segment.index.bytes`: at least 4.
    pub segment_index_bytes: Option<u64>,
    pub index_interval_bytes: Option<u64>,
    pub preallocate: Option<bool>,
    pub file_delete_delay_ms: Option<u64>,
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

/// `compression.type`: keep the producer's codec, or store every batch in this one.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TopicCompression {
    Producer,
    Uncompressed,
    Gzip,
    Snappy,
    Lz4,
    Zstd,
}

impl TopicCompression {
    pub fn parse(v: &str) -> Option<TopicCompression> {
        Some(match v {
            "producer" => TopicCompression::Producer,
            "uncompressed" => TopicCompression::Uncompressed,
            "gzip" => TopicCompression::Gzip,
            "snappy" => TopicCompression::Snappy,
            "lz4" => TopicCompression::Lz4,
            "zstd" => TopicCompression::Zstd,
            _ => return None,
        })
    }

    pub fn name(self) -> &'static str {
        match self {
            TopicCompression::Producer => "producer",
            TopicCompression::Uncompressed => "uncompressed",
            TopicCompression::Gzip => "gzip",
            TopicCompression::Snappy => "snappy",
            TopicCompression::Lz4 => "lz4",
            TopicCompression::Zstd => "zstd",
        }
    }

    /// The batch attribute's codec id (0 none, 1 gzip, 2 snappy, 3 lz4, 4 zstd); None for
    /// `producer`.
    pub fn codec(self) -> Option<i16> {
        match self {
            TopicCompression::Producer => None,
            TopicCompression::Uncompressed => Some(0),
            TopicCompression::Gzip => Some(1),
            TopicCompression::Snappy => Some(2),
            TopicCompression::Lz4 => Some(3),
            TopicCompression::Zstd => Some(4),
        }
    }
}

/// Kafka's defaults of the topic configs that have no broker flag here (they are what
/// DescribeConfigs reports as the broker default).
pub mod defaults {
    pub const GZIP_LEVEL: i32 = -1;
    pub const LZ4_LEVEL: i32 = 9;
    pub const ZSTD_LEVEL: i32 = 3;
    pub const SEGMENT_JITTER_MS: u64 = 0;
    pub const SEGMENT_INDEX_BYTES: u64 = 10 * 1024 * 1024;
    pub const PREALLOCATE: bool = false;
    /// Kafka's is 60000, for readers of its memory-mapped files; here a Fetch in flight
    /// holds its own descriptor of a segment it reads, so files can go at once.
    pub const FILE_DELETE_DELAY_MS: u64 = 0;
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
            "retention.ms" => self.retention_ms = Some(long_in(k, v, -1, i64::MAX)?),
            // Any value, as in Kafka: a negative one keeps everything.
            "retention.bytes" => self.retention_bytes = Some(long_in(k, v, i64::MIN, i64::MAX)?),
            "segment.ms" => {
                let Some(n) = v.parse::<u64>().ok().filter(|n| *n >= 1) else {
                    return invalid(format!("segment.ms must be a positive integer, got '{v}'"));
                };
                self.segment_ms = Some(n);
            }
            "flush.messages" => self.flush_messages = Some(long_at_least(k, v, 1)?),
            "flush.ms" => self.flush_ms = Some(long_at_least(k, v, 0)?),
            // Kafka 4 raised its own minimum to 1 MiB; small segments are how tests and
            // operators exercise rolling, so this broker keeps 1024.
            "segment.bytes" => self.segment_bytes = Some(int_in(k, v, 1024, i32::MAX)? as u64),
            "max.message.bytes" => self.max_message_bytes = Some(int_in(k, v, 0, i32::MAX)? as u64),
            "compression.gzip.level" => {
                let n = int_in(k, v, -1, 9)?;
                if n == 0 {
                    return invalid(format!("{k} must be -1 or between 1 and 9, got '{v}'"));
                }
                self.gzip_level = Some(n);
            }
            "compression.lz4.level" => self.lz4_level = Some(int_in(k, v, 1, 17)?),
            "compression.zstd.level" => self.zstd_level = Some(int_in(k, v, -131072, 22)?),
            "message.timestamp.before.max.ms" => {
                self.timestamp_before_max_ms = Some(long_at_least(k, v, 0)?)
            }
            "message.timestamp.after.max.ms" => {
                self.timestamp_after_max_ms = Some(long_at_least(k, v, 0)?)
            }
            "segment.jitter.ms" => self.segment_jitter_ms = Some(long_at_least(k, v, 0)?),
            "segment.index.bytes" => {
                self.segment_index_bytes = Some(int_in(k, v, 4, i32::MAX)? as u64)
            }
            "index.interval.bytes" => {
                self.index_interval_bytes = Some(int_in(k, v, 0, i32::MAX)? as u64)
            }
            "preallocate" => self.preallocate = Some(boolean(k, v)?),
            "file.delete.delay.ms" => self.file_delete_delay_ms = Some(long_at_least(k, v, 0)?),
            // What cannot mean anything here: accepted at Kafka's default only (tools set
            // defaults explicitly), refused otherwise with the reason.
            "message.downconversion.enable" => {
                if !boolean(k, v)? {
                    return invalid(format!(
                        "{k}=false is not supported: batches are never down-converted here \
                         (as in Kafka 4), so only true is accepted"
                    ));
                }
            }
            "remote.storage.enable"
            | "remote.log.copy.disable"
            | "remote.log.delete.on.disable" => {
                if boolean(k, v)? {
                    return invalid(format!(
                        "{k}=true is not supported: tiered storage is not built, so only false \
                         is accepted"
                    ));
                }
            }
            "local.retention.ms" | "local.retention.bytes" => {
                if long_in(k, v, -2, i64::MAX)? != -2 {
                    return invalid(format!(
                        "{k} is not supported: tiered storage is not built (retention.ms and \
                         retention.bytes bound the log), so only -2 is accepted"
                    ));
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
            "unclean.leader.election.enable" => {
                self.unclean_leader_election_enable = Some(boolean(k, v)?)
            }
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
                let Some(c) = TopicCompression::parse(v) else {
                    return invalid(format!(
                        "compression.type must be one of uncompressed, zstd, lz4, snappy, gzip, \
                         producer, got '{v}'"
                    ));
                };
                self.compression = Some(c);
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

/// A LONG config in `min..=max`, as Kafka's `atLeast`/`between` validators check it.
fn long_in(k: &str, v: &str, min: i64, max: i64) -> Result<i64, KafkaError> {
    match v.trim().parse::<i64>() {
        Ok(n) if (min..=max).contains(&n) => Ok(n),
        _ if max == i64::MAX => Err(KafkaError::InvalidConfig(format!(
            "{k} must be an integer of at least {min}, got '{v}'"
        ))),
        _ => Err(KafkaError::InvalidConfig(format!(
            "{k} must be an integer between {min} and {max}, got '{v}'"
        ))),
    }
}

fn long_at_least(k: &str, v: &str, min: u64) -> Result<u64, KafkaError> {
    long_in(k, v, min as i64, i64::MAX).map(|n| n as u64)
}

/// An INT config in `min..=max`.
fn int_in(k: &str, v: &str, min: i32, max: i32) -> Result<i32, KafkaError> {
    long_in(k, v, i64::from(min), i64::from(max)).map(|n| n as i32)
}

/// A BOOLEAN config: `true` or `false`, any case, as Kafka parses it.
fn boolean(k: &str, v: &str) -> Result<bool, KafkaError> {
    match v.trim() {
        t if t.eq_ignore_ascii_case("true") => Ok(true),
        f if f.eq_ignore_ascii_case("false") => Ok(false),
        _ => Err(KafkaError::InvalidConfig(format!(
            "{k} must be true or false, got '{v}'"
        ))),
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
            (
                "compression.type",
                "producer",
                Some(TopicConfig {
                    compression: Some(TopicCompression::Producer),
                    ..Default::default()
                }),
            ),
            ("compression.type", "brotli", None),
            ("compression.gzip.level", "0", None),
            ("compression.lz4.level", "18", None),
            ("compression.zstd.level", "23", None),
            ("flush.messages", "0", None),
            (
                "max.message.bytes",
                "0",
                Some(TopicConfig {
                    max_message_bytes: Some(0),
                    ..Default::default()
                }),
            ),
            ("segment.index.bytes", "3", None),
            ("message.timestamp.after.max.ms", "-1", None),
            ("preallocate", "yes", None),
            ("remote.storage.enable", "true", None),
            ("local.retention.ms", "1000", None),
            ("message.downconversion.enable", "false", None),
            (
                "message.downconversion.enable",
                "true",
                Some(TopicConfig::default()),
            ),
            ("local.retention.bytes", "-2", Some(TopicConfig::default())),
            (
                "retention.bytes",
                "-5",
                Some(TopicConfig {
                    retention_bytes: Some(-5),
                    ..Default::default()
                }),
            ),
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
            let sample = match def.name {
                n if n.ends_with(".throttled.replicas") => "*",
                "cleanup.policy" => "delete",
                "compression.type" => "zstd",
                "message.timestamp.type" => "CreateTime",
                "remote.storage.enable" | "remote.log.copy.disable" => "false",
                "remote.log.delete.on.disable" => "FALSE",
                "local.retention.ms" | "local.retention.bytes" => "-2",
                n if n.starts_with("compression.") => "5",
                _ => match def.kind {
                    ConfigKind::Int | ConfigKind::Long => "4096",
                    ConfigKind::Boolean => "true",
                    ConfigKind::Double => "0.5",
                    ConfigKind::String => panic!("no sample for {}", def.name),
                },
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
