//! DescribeConfigs: a topic's effective configs (its own values over the broker defaults), and
//! the broker's settings (read-only: they come from the command line). Answered from this
//! shard's catalog cache, which the controller updates before it acknowledges a change.
//!
//! Unset `flush.messages` and `flush.ms` (topic and broker) are reported as
//! 9223372036854775807, Kafka's default. Unset means acks=all is answered only once the data
//! is fdatasync'd (group commit); setting either one (any value) makes acks=all answer from
//! the page cache and flush in the background at that bound instead.

use super::{Operation, RequestContext, ResourceType};

use kafka_protocol::messages::describe_configs_response::{
    DescribeConfigsResourceResult, DescribeConfigsResult, DescribeConfigsSynonym,
};
use kafka_protocol::messages::{DescribeConfigsRequest, DescribeConfigsResponse};

use super::str_bytes;
use std::collections::BTreeMap;

use crate::config::Config;
use crate::error::KafkaError;
use crate::shard::Shard;
use crate::shard::controller::DYNAMIC_BROKER_CONFIGS;
use crate::storage::catalog::{self, ConfigKind, TopicMeta, defaults};

/// Resource types (Kafka's `ConfigResource.Type`).
pub const RESOURCE_TOPIC: i8 = 2;
pub const RESOURCE_BROKER: i8 = 4;
pub const RESOURCE_BROKER_LOGGER: i8 = 8;

/// Config sources (Kafka's `DescribeConfigsResponse.ConfigSource`).
const SOURCE_DYNAMIC_TOPIC: i8 = 1;
const SOURCE_DYNAMIC_BROKER: i8 = 2;
const SOURCE_STATIC_BROKER: i8 = 4;
const SOURCE_DEFAULT: i8 = 5;
const SOURCE_DYNAMIC_BROKER_LOGGER: i8 = 6;

/// Config types (Kafka's `DescribeConfigsResponse.ConfigType`).
const TYPE_BOOLEAN: i8 = 1;
const TYPE_STRING: i8 = 2;
const TYPE_INT: i8 = 3;
const TYPE_LONG: i8 = 5;
const TYPE_DOUBLE: i8 = 6;
const TYPE_LIST: i8 = 7;

/// Kafka's value for "no bound" of the flush and roll settings.
const UNBOUNDED: i64 = i64::MAX;

/// Broker settings: (name, type, documentation). All are read-only: they are set on the
/// command line of `spate serve`.
const BROKER_CONFIG_DEFS: &[(&str, i8, &str)] = &[
    ("broker.id", TYPE_INT, "This broker's node id (--node-id)."),
    (
        "log.cleanup.policy",
        TYPE_LIST,
        "Default cleanup.policy of topics: delete, compact or compact,delete \
         (--log-cleanup-policy).",
    ),
    (
        "log.cleaner.min.cleanable.ratio",
        TYPE_DOUBLE,
        "Default min.cleanable.dirty.ratio of topics (--log-cleaner-min-cleanable-ratio).",
    ),
    (
        "log.cleaner.min.compaction.lag.ms",
        TYPE_LONG,
        "Default min.compaction.lag.ms of topics (Kafka's default, fixed).",
    ),
    (
        "log.cleaner.max.compaction.lag.ms",
        TYPE_LONG,
        "Default max.compaction.lag.ms of topics (Kafka's default, fixed): \
         9223372036854775807, no bound.",
    ),
    (
        "log.cleaner.delete.retention.ms",
        TYPE_LONG,
        "Default delete.retention.ms of topics (--log-cleaner-delete-retention-ms).",
    ),
    (
        "log.cleaner.backoff.ms",
        TYPE_LONG,
        "How often each shard's log cleaner looks for work, in ms (--log-cleaner-backoff-ms).",
    ),
    (
        "log.cleaner.io.max.bytes.per.second",
        TYPE_DOUBLE,
        "Bytes per second each shard's log cleaner reads and writes \
         (--log-cleaner-io-bytes-per-sec-max); 1.7976931348623157E308: no limit.",
    ),
    (
        "log.cleaner.dedupe.buffer.size",
        TYPE_LONG,
        "Bytes of each shard's log cleaner key map (--log-cleaner-dedupe-buffer-bytes).",
    ),
    (
        "compression.type",
        TYPE_STRING,
        "Default compression.type of topics (--compression-type): producer stores batches as \
         sent; another codec recompresses them on the way in.",
    ),
    (
        "compression.gzip.level",
        TYPE_INT,
        "Default compression.gzip.level of topics: -1, the codec's default.",
    ),
    (
        "compression.lz4.level",
        TYPE_INT,
        "Default compression.lz4.level of topics.",
    ),
    (
        "compression.zstd.level",
        TYPE_INT,
        "Default compression.zstd.level of topics.",
    ),
    (
        "log.message.timestamp.before.max.ms",
        TYPE_LONG,
        "Default message.timestamp.before.max.ms of topics \
         (--log-message-timestamp-before-max-ms); 9223372036854775807: no bound.",
    ),
    (
        "log.message.timestamp.after.max.ms",
        TYPE_LONG,
        "Default message.timestamp.after.max.ms of topics \
         (--log-message-timestamp-after-max-ms): records more than this many ms in the future \
         are refused with INVALID_TIMESTAMP; 9223372036854775807: no bound.",
    ),
    (
        "log.roll.jitter.ms",
        TYPE_LONG,
        "Default segment.jitter.ms of topics: 0.",
    ),
    (
        "log.index.size.max.bytes",
        TYPE_INT,
        "Default segment.index.bytes of topics.",
    ),
    (
        "log.preallocate",
        TYPE_BOOLEAN,
        "Default preallocate of topics: false.",
    ),
    (
        "log.segment.delete.delay.ms",
        TYPE_LONG,
        "Default file.delete.delay.ms of topics.",
    ),
    (
        "log.message.downconversion.enable",
        TYPE_BOOLEAN,
        "No effect (batches are never down-converted, as in Kafka 4).",
    ),
    (
        "remote.log.storage.system.enable",
        TYPE_BOOLEAN,
        "Tiered storage is not built: false.",
    ),
    (
        "log.local.retention.ms",
        TYPE_LONG,
        "Tiered storage is not built: -2 (retention.ms applies).",
    ),
    (
        "log.local.retention.bytes",
        TYPE_LONG,
        "Tiered storage is not built: -2 (retention.bytes applies).",
    ),
    (
        "listeners",
        TYPE_LIST,
        "The listeners every shard accepts on (--listeners, or --listen for one).",
    ),
    (
        "advertised.listeners",
        TYPE_LIST,
        "What Metadata gives the clients of each listener (--advertised-listeners).",
    ),
    (
        "log.dirs",
        TYPE_STRING,
        "Directory of the topic catalog and partition logs (--data-dir).",
    ),
    (
        "num.partitions",
        TYPE_INT,
        "Partitions of auto-created topics and of CreateTopics without a count \
         (--default-partitions).",
    ),
    (
        "auto.create.topics.enable",
        TYPE_BOOLEAN,
        "Whether Metadata and Produce create unknown topics (--auto-create-topics).",
    ),
    (
        "socket.request.max.bytes",
        TYPE_INT,
        "Largest request frame accepted, in bytes (--request-bytes-max).",
    ),
    (
        "message.max.bytes",
        TYPE_INT,
        "Default largest record batch, in bytes (--message-bytes-max; topic max.message.bytes).",
    ),
    (
        "log.segment.bytes",
        TYPE_INT,
        "Default segment size in bytes (--segment-bytes; topic segment.bytes).",
    ),
    (
        "log.roll.ms",
        TYPE_LONG,
        "Default segment age at which it rolls, in ms (--segment-ms; topic segment.ms); \
         9223372036854775807: never.",
    ),
    (
        "log.retention.ms",
        TYPE_LONG,
        "Default retention by age in ms (--retention-ms; topic retention.ms); -1: keep all.",
    ),
    (
        "log.retention.bytes",
        TYPE_LONG,
        "Default retention by partition size in bytes (--retention-bytes; topic \
         retention.bytes); -1: keep all.",
    ),
    (
        "log.retention.check.interval.ms",
        TYPE_LONG,
        "How often retention runs, in ms (--retention-check-ms).",
    ),
    (
        "log.index.interval.bytes",
        TYPE_INT,
        "Bytes of log between two offset index entries.",
    ),
    (
        "log.flush.interval.messages",
        TYPE_LONG,
        "Default of topic flush.messages (--flush-messages); 9223372036854775807: unset, and \
         with log.flush.interval.ms unset too, acks=all waits for fdatasync.",
    ),
    (
        "log.flush.interval.ms",
        TYPE_LONG,
        "Default of topic flush.ms (--flush-ms); 9223372036854775807: unset, and with \
         log.flush.interval.messages unset too, acks=all waits for fdatasync.",
    ),
    (
        "log.message.timestamp.type",
        TYPE_STRING,
        "Default of topic message.timestamp.type (always CreateTime).",
    ),
    (
        "min.insync.replicas",
        TYPE_INT,
        "Default of topic min.insync.replicas (--min-insync-replicas): in-sync replicas an \
         acks=all write needs.",
    ),
    (
        "unclean.leader.election.enable",
        TYPE_BOOLEAN,
        "Default of topic unclean.leader.election.enable (--unclean-leader-election-enable).",
    ),
    (
        "leader.replication.throttled.replicas",
        TYPE_STRING,
        "Default of topic leader.replication.throttled.replicas: empty, no replica throttled.",
    ),
    (
        "follower.replication.throttled.replicas",
        TYPE_STRING,
        "Default of topic follower.replication.throttled.replicas: empty, no replica throttled.",
    ),
    (
        "leader.replication.throttled.rate",
        TYPE_LONG,
        "Bytes per second, per shard, leaders serve to throttled replicas \
         (--leader-replication-throttled-rate; a dynamic broker config overrides it).",
    ),
    (
        "follower.replication.throttled.rate",
        TYPE_LONG,
        "Bytes per second, per shard, followers fetch for throttled replicas \
         (--follower-replication-throttled-rate; a dynamic broker config overrides it).",
    ),
    (
        "replica.lag.time.max.ms",
        TYPE_LONG,
        "A follower not caught up for this long leaves the ISR (--replica-lag-time-max-ms).",
    ),
    (
        "default.replication.factor",
        TYPE_INT,
        "Replication factor of auto-created topics (--default-replication-factor).",
    ),
];

/// The value of broker setting `name` under `c`.
fn broker_value(c: &Config, name: &str) -> Option<String> {
    let unbounded = |v: Option<u64>| v.map_or(UNBOUNDED.to_string(), |v| v.to_string());
    let unlimited = |v: Option<u64>| v.map_or("-1".to_string(), |v| v.to_string());
    Some(match name {
        "broker.id" => c.node_id.to_string(),
        "listeners" => c
            .listeners
            .iter()
            .map(|l| format!("{}://{}", l.name, l.addr))
            .collect::<Vec<_>>()
            .join(","),
        "advertised.listeners" => c
            .listeners
            .iter()
            .map(|l| format!("{}://{}:{}", l.name, l.advertised.0, l.advertised.1))
            .collect::<Vec<_>>()
            .join(","),
        "log.dirs" => c.data_dir.display().to_string(),
        "num.partitions" => c.default_partitions.to_string(),
        "auto.create.topics.enable" => c.auto_create_topics.to_string(),
        "socket.request.max.bytes" => c.request_bytes_max.to_string(),
        "message.max.bytes" => c.message_bytes_max.to_string(),
        "log.segment.bytes" => c.segment_bytes.to_string(),
        "log.roll.ms" => unbounded(c.segment_ms),
        "log.retention.ms" => unlimited(c.retention_ms),
        "log.retention.bytes" => unlimited(c.retention_bytes),
        "log.retention.check.interval.ms" => c.retention_check_ms.to_string(),
        "log.index.interval.bytes" => c.index_interval_bytes.to_string(),
        "log.flush.interval.messages" => unbounded(c.flush_messages),
        "log.flush.interval.ms" => unbounded(c.flush_ms),
        "log.message.timestamp.type" => "CreateTime".to_string(),
        "log.cleanup.policy" => c.cleanup_policy.name().to_string(),
        "log.cleaner.min.cleanable.ratio" => c.log_cleaner_min_cleanable_ratio.to_string(),
        "log.cleaner.min.compaction.lag.ms" => {
            crate::storage::cleaner::MIN_COMPACTION_LAG_MS_DEFAULT.to_string()
        }
        "log.cleaner.max.compaction.lag.ms" => UNBOUNDED.to_string(),
        "log.cleaner.delete.retention.ms" => c.log_cleaner_delete_retention_ms.to_string(),
        "log.cleaner.backoff.ms" => c.log_cleaner_backoff_ms.to_string(),
        "log.cleaner.io.max.bytes.per.second" => match c.log_cleaner_io_bytes_per_sec_max {
            Some(n) => n.to_string(),
            None => "1.7976931348623157E308".to_string(),
        },
        "log.cleaner.dedupe.buffer.size" => c.log_cleaner_dedupe_buffer_bytes.to_string(),
        "compression.type" => c.compression_type.name().to_string(),
        "compression.gzip.level" => defaults::GZIP_LEVEL.to_string(),
        "compression.lz4.level" => defaults::LZ4_LEVEL.to_string(),
        "compression.zstd.level" => defaults::ZSTD_LEVEL.to_string(),
        "log.message.timestamp.before.max.ms" => unbounded(c.message_timestamp_before_max_ms),
        "log.message.timestamp.after.max.ms" => unbounded(c.message_timestamp_after_max_ms),
        "log.roll.jitter.ms" => defaults::SEGMENT_JITTER_MS.to_string(),
        "log.index.size.max.bytes" => defaults::SEGMENT_INDEX_BYTES.to_string(),
        "log.preallocate" => defaults::PREALLOCATE.to_string(),
        "log.segment.delete.delay.ms" => defaults::FILE_DELETE_DELAY_MS.to_string(),
        "log.message.downconversion.enable" => "true".to_string(),
        "remote.log.storage.system.enable" => "false".to_string(),
        "log.local.retention.ms" | "log.local.retention.bytes" => "-2".to_string(),
        "min.insync.replicas" => c.min_insync_replicas.to_string(),
        "unclean.leader.election.enable" => c.unclean_leader_election_enable.to_string(),
        "replica.lag.time.max.ms" => c.replica_lag_time_max_ms.to_string(),
        "leader.replication.throttled.replicas" | "follower.replication.throttled.replicas" => {
            String::new()
        }
        "leader.replication.throttled.rate" => unbounded(c.leader_replication_throttled_rate),
        "follower.replication.throttled.rate" => unbounded(c.follower_replication_throttled_rate),
        "default.replication.factor" => c.default_replication_factor.to_string(),
        _ => return None,
    })
}

/// A broker setting's value and source: DEFAULT_CONFIG when it is the built-in default,
/// STATIC_BROKER_CONFIG when the command line changed it.
fn broker_setting(c: &Config, name: &str) -> (Option<String>, i8) {
    let value = broker_value(c, name);
    let default = Config::new(c.listen, c.data_dir.clone(), c.shards);
    let source = match name {
        "broker.id" | "listeners" | "log.dirs" => SOURCE_STATIC_BROKER,
        _ if broker_value(&default, name) == value => SOURCE_DEFAULT,
        _ => SOURCE_STATIC_BROKER,
    };
    (value, source)
}

/// The dynamic broker configs: this broker's own, and every broker's (resource "").
type Dynamic = (BTreeMap<String, String>, BTreeMap<String, String>);

/// (name, value, source) of a synonym.
type Synonym = (String, Option<String>, i8);

/// Kafka's source of a cluster-wide dynamic broker config.
const SOURCE_DYNAMIC_DEFAULT_BROKER: i8 = 3;

/// A broker setting's effective value, its source and its synonyms (most specific first):
/// this broker's dynamic config, every broker's, then the start-up setting.
fn broker_effective(
    c: &Config,
    dynamic: &Dynamic,
    name: &str,
) -> (Option<String>, i8, Vec<Synonym>) {
    let (value, source) = broker_setting(c, name);
    let mut synonyms = Vec::new();
    if let Some(v) = dynamic.0.get(name) {
        synonyms.push((name.to_string(), Some(v.clone()), SOURCE_DYNAMIC_BROKER));
    }
    if let Some(v) = dynamic.1.get(name) {
        synonyms.push((
            name.to_string(),
            Some(v.clone()),
            SOURCE_DYNAMIC_DEFAULT_BROKER,
        ));
    }
    synonyms.push((name.to_string(), value, source));
    let (value, source) = (synonyms[0].1.clone(), synonyms[0].2);
    (value, source, synonyms)
}

/// One described config before version gating.
struct Described {
    name: String,
    value: Option<String>,
    source: i8,
    read_only: bool,
    config_type: i8,
    doc: String,
    /// (name, value, source), most specific first.
    synonyms: Vec<(String, Option<String>, i8)>,
}

fn describe_topic(c: &Config, dynamic: &Dynamic, meta: &TopicMeta) -> Vec<Described> {
    catalog::TOPIC_CONFIGS
        .iter()
        .map(|def| {
            let (name, broker_name, doc) = (def.name, def.broker_name, def.doc);
            let config_type = match def.kind {
                ConfigKind::String => TYPE_STRING,
                ConfigKind::Int => TYPE_INT,
                ConfigKind::Long => TYPE_LONG,
                ConfigKind::Boolean => TYPE_BOOLEAN,
                ConfigKind::Double => TYPE_DOUBLE,
            };
            // A config without a broker setting (tiered storage's switches) has its
            // default, false, and no broker synonym.
            let (broker_value, broker_source, broker_synonyms) = if broker_name.is_empty() {
                (Some("false".to_string()), SOURCE_DEFAULT, vec![])
            } else {
                broker_effective(c, dynamic, broker_name)
            };
            let (name, doc) = (name.to_string(), doc.to_string());
            match meta.configs.get(&name) {
                Some(v) => Described {
                    synonyms: std::iter::once((
                        name.clone(),
                        Some(v.clone()),
                        SOURCE_DYNAMIC_TOPIC,
                    ))
                    .chain(broker_synonyms)
                    .collect(),
                    name,
                    value: Some(v.clone()),
                    source: SOURCE_DYNAMIC_TOPIC,
                    read_only: false,
                    config_type,
                    doc,
                },
                None => Described {
                    name,
                    value: broker_value,
                    source: broker_source,
                    read_only: false,
                    config_type,
                    doc,
                    synonyms: broker_synonyms,
                },
            }
        })
        .collect()
}

/// The broker's settings; those of [`DYNAMIC_BROKER_CONFIGS`] may be overridden by the
/// dynamic broker configs (`dynamic`) and are not read-only.
fn describe_broker(c: &Config, dynamic: &Dynamic) -> Vec<Described> {
    let settings = crate::settings::documented(c);
    let defaults =
        crate::settings::documented(&Config::new(c.listen, c.data_dir.clone(), c.shards));
    // A setting's own source: given (on the command line or in the config file) or default.
    let setting_source =
        |s: &crate::settings::SettingDoc| match defaults.iter().find(|d| d.key == s.key) {
            Some(d) if d.value == s.value => SOURCE_DEFAULT,
            _ => SOURCE_STATIC_BROKER,
        };
    let mut out: Vec<Described> = BROKER_CONFIG_DEFS
        .iter()
        .map(|&(name, config_type, doc)| {
            // The `spate serve` setting that sets it, as a synonym (its key, as the config
            // file names it).
            let own: Vec<(String, Option<String>, i8)> = settings
                .iter()
                .filter(|s| s.kafka_name.as_deref() == Some(name))
                .map(|s| (s.key.clone(), s.value.clone(), setting_source(s)))
                .collect();
            let dynamic_ok = DYNAMIC_BROKER_CONFIGS.contains(&name);
            let (value, source, synonyms) = broker_effective(c, dynamic, name);
            Described {
                name: name.to_string(),
                value,
                source,
                read_only: !dynamic_ok,
                config_type,
                doc: doc.to_string(),
                synonyms: synonyms.into_iter().chain(own).collect(),
            }
        })
        .collect();
    // Every other setting of `spate serve`, under its Kafka name where it has one, else
    // under its own key; read-only (they are set when the broker starts).
    for s in &settings {
        let name = s.kafka_name.clone().unwrap_or_else(|| s.key.clone());
        if out.iter().any(|d| d.name == name) {
            continue;
        }
        let source = setting_source(s);
        let config_type = if s.is_bool {
            TYPE_BOOLEAN
        } else if s.is_number {
            TYPE_LONG
        } else {
            TYPE_STRING
        };
        let mut synonyms = vec![(name.clone(), s.value.clone(), source)];
        if name != s.key {
            synonyms.push((s.key.clone(), s.value.clone(), source));
        }
        out.push(Described {
            name,
            value: s.value.clone(),
            source,
            read_only: true,
            config_type,
            doc: s.doc.clone(),
            synonyms,
        });
    }
    out
}

/// The configs of one resource, or why it cannot be described.
fn describe(
    shard: &Shard,
    resource_type: i8,
    resource_name: &str,
    dynamic: &Dynamic,
) -> Result<Vec<Described>, (KafkaError, String)> {
    match resource_type {
        RESOURCE_TOPIC => {
            // The coordinators' internal logs are no client's topic names, but their configs
            // (`min.insync.replicas` of `__transaction_state`) are described, as Kafka does.
            if !crate::placement::is_coordinator_log(resource_name) {
                catalog::validate_topic_name(resource_name).map_err(|e| {
                    let m = e.message();
                    (e, m)
                })?;
            }
            let meta = shard.topic(resource_name).ok_or_else(|| {
                (
                    KafkaError::UnknownTopicOrPartition,
                    format!("topic '{resource_name}' does not exist"),
                )
            })?;
            Ok(describe_topic(&shard.config, dynamic, &meta))
        }
        RESOURCE_BROKER => {
            let node = shard.config.node_id.to_string();
            if !resource_name.is_empty() && resource_name != node {
                let m = format!("broker '{resource_name}' is not this broker (node id {node})");
                return Err((KafkaError::InvalidRequest(m.clone()), m));
            }
            Ok(describe_broker(&shard.config, dynamic))
        }
        RESOURCE_BROKER_LOGGER => {
            let node = shard.config.node_id.to_string();
            if resource_name != node {
                let m = format!("broker '{resource_name}' is not this broker (node id {node})");
                return Err((KafkaError::InvalidRequest(m.clone()), m));
            }
            Ok(crate::log_levels::list()
                .into_iter()
                .map(|(logger, level)| Described {
                    synonyms: vec![(
                        logger.clone(),
                        Some(level.clone()),
                        SOURCE_DYNAMIC_BROKER_LOGGER,
                    )],
                    name: logger,
                    value: Some(level),
                    source: SOURCE_DYNAMIC_BROKER_LOGGER,
                    read_only: false,
                    config_type: TYPE_STRING,
                    doc: "Log level of this logger (module path; root: every module without a \
                          level of its own), changed at run time until the broker restarts."
                        .to_string(),
                })
                .collect())
        }
        other => {
            let m = format!(
                "resource type {other} is not supported; supported are TOPIC ({RESOURCE_TOPIC}), \
                 BROKER ({RESOURCE_BROKER}) and BROKER_LOGGER ({RESOURCE_BROKER_LOGGER})"
            );
            Err((KafkaError::InvalidRequest(m.clone()), m))
        }
    }
}

/// Why the principal may not do `op` (DescribeConfigs, AlterConfigs) on a config resource, if
/// it may not: a topic's need it on the topic, a broker's (and its loggers') on the cluster.
pub(super) fn config_refused(
    ctx: &RequestContext,
    op: Operation,
    resource_type: i8,
    name: &str,
) -> Option<KafkaError> {
    if resource_type == RESOURCE_TOPIC {
        (!ctx.authorize(op, ResourceType::Topic, name))
            .then_some(KafkaError::TopicAuthorizationFailed)
    } else {
        (!ctx.authorize(op, ResourceType::Cluster, super::CLUSTER))
            .then_some(KafkaError::ClusterAuthorizationFailed)
    }
}

pub async fn handle(ctx: &RequestContext, req: DescribeConfigsRequest) -> DescribeConfigsResponse {
    let shard = &ctx.shard;
    let version = ctx.api_version;
    // The controller shard holds the freshest copy of the dynamic broker configs.
    let dynamic: Dynamic = shard
        .call(
            crate::placement::CONTROLLER_SHARD,
            crate::shard::calls::DynamicBrokerConfigs,
        )
        .await
        .unwrap_or_else(|_| shard.dynamic_configs());
    let results = req
        .resources
        .iter()
        .map(|r| {
            let name = r.resource_name.as_str();
            let out = DescribeConfigsResult::default()
                .with_resource_type(r.resource_type)
                .with_resource_name(r.resource_name.clone());
            // DescribeConfigs on the topic, or on the cluster for a broker's, as Kafka.
            if let Some(e) = config_refused(ctx, Operation::DescribeConfigs, r.resource_type, name)
            {
                return out
                    .with_error_code(e.code())
                    .with_error_message(Some(str_bytes(e.message())));
            }
            let described = match describe(shard, r.resource_type, name, &dynamic) {
                Ok(d) => d,
                Err((e, message)) => {
                    return out
                        .with_error_code(e.code())
                        .with_error_message(Some(str_bytes(message)));
                }
            };
            let wanted = |n: &str| match &r.configuration_keys {
                Some(keys) if !keys.is_empty() => keys.iter().any(|k| k.as_str() == n),
                _ => true,
            };
            let configs = described
                .into_iter()
                .filter(|d| wanted(&d.name))
                .map(|d| encode(d, req.include_synonyms, req.include_documentation, version))
                .collect();
            out.with_configs(configs)
        })
        .collect();
    DescribeConfigsResponse::default().with_results(results)
}

/// Fills in the fields that `version` has (synonyms from v1, type and documentation from v3).
fn encode(
    d: Described,
    include_synonyms: bool,
    include_documentation: bool,
    version: i16,
) -> DescribeConfigsResourceResult {
    let mut out = DescribeConfigsResourceResult::default()
        .with_name(str_bytes(d.name))
        .with_value(d.value.map(str_bytes))
        .with_read_only(d.read_only)
        .with_config_source(d.source)
        .with_is_sensitive(false);
    if version >= 1 && include_synonyms {
        out = out.with_synonyms(
            d.synonyms
                .into_iter()
                .map(|(name, value, source)| {
                    DescribeConfigsSynonym::default()
                        .with_name(str_bytes(name))
                        .with_value(value.map(str_bytes))
                        .with_source(source)
                })
                .collect(),
        );
    }
    if version >= 3 {
        out = out.with_config_type(d.config_type);
        if include_documentation {
            out = out.with_documentation(Some(str_bytes(d.doc)));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> Config {
        Config::new(
            "127.0.0.1:9092".parse().unwrap(),
            std::path::PathBuf::from("/tmp/d"),
            2,
        )
    }

    #[test]
    fn every_topic_config_is_described() {
        for def in catalog::TOPIC_CONFIGS {
            let b = def.broker_name;
            if b.is_empty() {
                continue;
            }
            assert!(broker_value(&config(), b).is_some(), "{b}");
            assert!(BROKER_CONFIG_DEFS.iter().any(|d| d.0 == b), "{b}");
        }
        for (name, _, _) in BROKER_CONFIG_DEFS {
            assert!(broker_value(&config(), name).is_some(), "{name}");
        }
    }

    /// Every `spate serve` setting is described, documented from its flag's help: under the
    /// Kafka name it gives (with its own key as a synonym), else under its key.
    #[test]
    fn every_broker_setting_is_described() {
        let mut c = config();
        c.retention_ms = Some(1000);
        let d = describe_broker(&c, &Default::default());
        let get = |n: &str| {
            d.iter()
                .find(|x| x.name == n)
                .unwrap_or_else(|| panic!("{n}"))
        };
        let r = get("log.retention.ms");
        assert_eq!(r.value.as_deref(), Some("1000"));
        assert_eq!(r.source, SOURCE_STATIC_BROKER);
        assert!(
            r.synonyms
                .iter()
                .any(|s| s.0 == "retention_ms" && s.2 == SOURCE_STATIC_BROKER)
        );
        let fds = get("segment_fds_max");
        assert!(fds.read_only && fds.doc.contains("Descriptors"));
        assert_eq!(fds.source, SOURCE_DEFAULT);
        assert!(d.iter().all(|x| x.name != "offsets.retention.minutes"));
        assert_eq!(
            get("offsets_retention_ms").value.as_deref(),
            Some("604800000")
        );
        let keys = crate::settings::documented(&c);
        assert!(keys.len() > 60, "{}", keys.len());
        for k in &keys {
            let name = k.kafka_name.clone().unwrap_or_else(|| k.key.clone());
            assert!(d.iter().any(|x| x.name == name), "{name} not described");
            assert!(!k.doc.is_empty(), "{} has no documentation", k.key);
        }
    }

    #[test]
    fn topic_values_and_sources() {
        let mut c = config();
        c.retention_bytes = Some(4096);
        let mut configs = BTreeMap::new();
        configs.insert("segment.bytes".to_string(), "2048".to_string());
        let meta = TopicMeta::new("t".into(), uuid::Uuid::nil(), 1, configs).unwrap();
        let d = describe_topic(&c, &Default::default(), &meta);
        let get = |n: &str| d.iter().find(|x| x.name == n).unwrap();
        assert_eq!(get("segment.bytes").value.as_deref(), Some("2048"));
        assert_eq!(get("segment.bytes").source, SOURCE_DYNAMIC_TOPIC);
        assert_eq!(get("segment.bytes").synonyms.len(), 2);
        assert_eq!(get("retention.bytes").value.as_deref(), Some("4096"));
        assert_eq!(get("retention.bytes").source, SOURCE_STATIC_BROKER);
        assert_eq!(get("retention.ms").source, SOURCE_DEFAULT);
        assert_eq!(
            get("flush.ms").value.as_deref(),
            Some("9223372036854775807")
        );
        assert_eq!(
            get("message.timestamp.type").value.as_deref(),
            Some("CreateTime")
        );
    }
}
