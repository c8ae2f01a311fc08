//! Workload files: what a benchmark run does, in TOML (modelled on the OpenMessaging Benchmark
//! workloads). Every field but `duration_seconds` has a default; unknown fields and invalid
//! values are rejected with the field's name.

use std::fmt;
use std::path::Path;

use serde::Serialize;

/// How producers pick message keys (and so partitions).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum KeyDistribution {
    /// No key; partitions are filled one batch at a time, round-robin.
    None,
    /// Keys cycle through one key per partition; the partition is the key's hash.
    RoundRobin,
    /// A random 16-character key per message; the partition is the key's hash.
    Random,
}

/// A producer rate: messages per second over all producers, or as fast as possible.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rate {
    Max,
    PerSecond(u64),
}

impl Serialize for Rate {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Rate::Max => s.serialize_str("max"),
            Rate::PerSecond(n) => s.serialize_u64(*n),
        }
    }
}

/// A validated workload.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Workload {
    /// Name used in reports (defaults to the file's stem).
    pub name: String,
    /// Topics are named `{topic_prefix}-{run id}-{index}`, fresh for every run.
    pub topic_prefix: String,
    pub topics: u32,
    pub partitions_per_topic: u32,
    /// Bytes of each message's value; the first 8 carry its send time.
    pub message_size: usize,
    pub key_distribution: KeyDistribution,
    /// Producer connections; each one writes to every partition of every topic.
    pub producers: u32,
    /// Consumers; the partitions are dealt round-robin over them (0: nothing is consumed).
    pub consumers: u32,
    /// Total rate over all producers.
    pub producer_rate: Rate,
    /// 0, 1 or -1 (all).
    pub acks: i16,
    pub linger_ms: u64,
    /// Upper bound of one partition's record batch (a larger message travels alone).
    pub batch_bytes: usize,
    /// Produce requests a producer connection may have unanswered.
    pub max_in_flight: usize,
    pub warmup_seconds: f64,
    pub duration_seconds: f64,
    /// Messages written (as fast as possible) before consumers start: a backlog to drain.
    pub backlog_messages: u64,
    /// Produce request timeout given to the broker.
    pub produce_timeout_ms: i32,
    /// Fetch long-poll wait.
    pub fetch_max_wait_ms: i32,
    /// Fetch bytes limit per partition.
    pub fetch_partition_max_bytes: i32,
}

/// An invalid workload: which field and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkloadError {
    pub field: Option<String>,
    pub message: String,
}

impl fmt::Display for WorkloadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.field {
            Some(field) => write!(f, "workload field `{field}`: {}", self.message),
            None => write!(f, "workload: {}", self.message),
        }
    }
}

impl std::error::Error for WorkloadError {}

fn err(field: &str, message: impl Into<String>) -> WorkloadError {
    WorkloadError {
        field: Some(field.to_string()),
        message: message.into(),
    }
}

const FIELDS: &[&str] = &[
    "name",
    "topic_prefix",
    "topics",
    "partitions_per_topic",
    "message_size",
    "key_distribution",
    "producers",
    "consumers",
    "producer_rate",
    "acks",
    "linger_ms",
    "batch_bytes",
    "max_in_flight",
    "warmup_seconds",
    "duration_seconds",
    "backlog_messages",
    "produce_timeout_ms",
    "fetch_max_wait_ms",
    "fetch_partition_max_bytes",
];

fn type_name(v: &toml::Value) -> &'static str {
    match v {
        toml::Value::String(_) => "a string",
        toml::Value::Integer(_) => "an integer",
        toml::Value::Float(_) => "a float",
        toml::Value::Boolean(_) => "a boolean",
        toml::Value::Datetime(_) => "a datetime",
        toml::Value::Array(_) => "an array",
        toml::Value::Table(_) => "a table",
    }
}

struct Fields<'a>(&'a toml::Table);

impl Fields<'_> {
    /// An integer field in `min..=max`, or `default` when absent.
    fn int(&self, field: &str, default: i64, min: i64, max: i64) -> Result<i64, WorkloadError> {
        match self.0.get(field) {
            None => Ok(default),
            Some(toml::Value::Integer(n)) if (min..=max).contains(n) => Ok(*n),
            Some(toml::Value::Integer(n)) => {
                Err(err(field, format!("must be in {min}..={max}, got {n}")))
            }
            Some(v) => Err(err(
                field,
                format!("expected an integer, got {}", type_name(v)),
            )),
        }
    }

    /// A number of seconds (integer or float) in `min..=max`.
    fn seconds(
        &self,
        field: &str,
        default: Option<f64>,
        min: f64,
        min_exclusive: bool,
    ) -> Result<f64, WorkloadError> {
        let v = match self.0.get(field) {
            None => return default.ok_or_else(|| err(field, "is required")),
            Some(toml::Value::Integer(n)) => *n as f64,
            Some(toml::Value::Float(x)) => *x,
            Some(v) => {
                return Err(err(
                    field,
                    format!("expected a number of seconds, got {}", type_name(v)),
                ));
            }
        };
        let max = 7.0 * 24.0 * 3600.0;
        let low_ok = if min_exclusive { v > min } else { v >= min };
        if !v.is_finite() || !low_ok || v > max {
            let op = if min_exclusive { ">" } else { ">=" };
            return Err(err(
                field,
                format!("must be a number of seconds {op} {min} and <= {max}, got {v}"),
            ));
        }
        Ok(v)
    }

    fn string(&self, field: &str) -> Result<Option<&str>, WorkloadError> {
        match self.0.get(field) {
            None => Ok(None),
            Some(toml::Value::String(s)) => Ok(Some(s)),
            Some(v) => Err(err(
                field,
                format!("expected a string, got {}", type_name(v)),
            )),
        }
    }
}

fn valid_topic_chars(s: &str) -> bool {
    s.bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'_' || b == b'-')
}

impl Workload {
    /// Reads and validates a workload file; `name` defaults to the file's stem.
    pub fn load(path: &Path) -> Result<Workload, WorkloadError> {
        let text = std::fs::read_to_string(path).map_err(|e| WorkloadError {
            field: None,
            message: format!("cannot read {}: {e}", path.display()),
        })?;
        let stem = path
            .file_stem()
            .and_then(|s| s.to_str())
            .unwrap_or("workload");
        Workload::parse(&text, stem)
    }

    /// Parses and validates workload TOML; `default_name` is used when `name` is absent.
    pub fn parse(text: &str, default_name: &str) -> Result<Workload, WorkloadError> {
        let table: toml::Table = text.parse().map_err(|e: toml::de::Error| WorkloadError {
            field: None,
            message: format!("invalid TOML: {e}"),
        })?;
        if let Some(unknown) = table.keys().find(|k| !FIELDS.contains(&k.as_str())) {
            return Err(err(
                unknown,
                format!("unknown field (known: {})", FIELDS.join(", ")),
            ));
        }
        let f = Fields(&table);

        let name = f.string("name")?.unwrap_or(default_name).to_string();
        if name.is_empty() {
            return Err(err("name", "must not be empty"));
        }
        let topic_prefix = f
            .string("topic_prefix")?
            .unwrap_or("spate-bench")
            .to_string();
        if topic_prefix.is_empty() || topic_prefix.len() > 200 || !valid_topic_chars(&topic_prefix)
        {
            return Err(err(
                "topic_prefix",
                format!("must be 1 to 200 characters of [a-zA-Z0-9._-], got {topic_prefix:?}"),
            ));
        }
        let topics = f.int("topics", 1, 1, 10_000)? as u32;
        let partitions_per_topic = f.int("partitions_per_topic", 1, 1, 100_000)? as u32;
        let message_size = f.int("message_size", 1024, 8, 64 * 1024 * 1024)? as usize;
        let key_distribution = match f.string("key_distribution")? {
            None | Some("none") => KeyDistribution::None,
            Some("round-robin") => KeyDistribution::RoundRobin,
            Some("random") => KeyDistribution::Random,
            Some(other) => {
                return Err(err(
                    "key_distribution",
                    format!("must be \"none\", \"round-robin\" or \"random\", got {other:?}"),
                ));
            }
        };
        let producers = f.int("producers", 1, 1, 1024)? as u32;
        let consumers = f.int("consumers", 1, 0, 1024)? as u32;
        let producer_rate = match table.get("producer_rate") {
            None => Rate::Max,
            Some(toml::Value::String(s)) if s == "max" => Rate::Max,
            Some(toml::Value::Integer(n)) if *n >= 0 => Rate::PerSecond(*n as u64),
            Some(toml::Value::Integer(n)) => {
                return Err(err(
                    "producer_rate",
                    format!("must be >= 0 messages/s or \"max\", got {n}"),
                ));
            }
            Some(v) => {
                return Err(err(
                    "producer_rate",
                    format!(
                        "expected messages/s (an integer) or \"max\", got {}",
                        match v {
                            toml::Value::String(s) => format!("{s:?}"),
                            other => type_name(other).to_string(),
                        }
                    ),
                ));
            }
        };
        let acks = match table.get("acks") {
            None => 1,
            Some(toml::Value::Integer(n)) if (-1..=1).contains(n) => *n as i16,
            Some(toml::Value::String(s)) if s == "all" => -1,
            Some(v) => {
                return Err(err("acks", format!("must be 0, 1, -1 or \"all\", got {v}")));
            }
        };
        let linger_ms = f.int("linger_ms", 1, 0, 60_000)? as u64;
        let batch_bytes = f.int("batch_bytes", 16_384, 1, 64 * 1024 * 1024)? as usize;
        let max_in_flight = f.int("max_in_flight", 1, 1, 1024)? as usize;
        let warmup_seconds = f.seconds("warmup_seconds", Some(0.0), 0.0, false)?;
        let duration_seconds = f.seconds("duration_seconds", None, 0.0, true)?;
        let backlog_messages = f.int("backlog_messages", 0, 0, i64::MAX)? as u64;
        let produce_timeout_ms = f.int("produce_timeout_ms", 30_000, 1, i32::MAX as i64)? as i32;
        let fetch_max_wait_ms = f.int("fetch_max_wait_ms", 100, 0, 60_000)? as i32;
        let fetch_partition_max_bytes =
            f.int("fetch_partition_max_bytes", 1024 * 1024, 1, i32::MAX as i64)? as i32;

        Ok(Workload {
            name,
            topic_prefix,
            topics,
            partitions_per_topic,
            message_size,
            key_distribution,
            producers,
            consumers,
            producer_rate,
            acks,
            linger_ms,
            batch_bytes,
            max_in_flight,
            warmup_seconds,
            duration_seconds,
            backlog_messages,
            produce_timeout_ms,
            fetch_max_wait_ms,
            fetch_partition_max_bytes,
        })
    }
}
