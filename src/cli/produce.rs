//! `spate produce`: stdin lines (or `--value`) to a topic, batched per partition and sent to
//! each partition's leader.

use std::collections::BTreeMap;
use std::io::{BufRead, IsTerminal};
use std::time::{SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use serde::Serialize;

use super::api::{self, TopicMeta};
use super::client::Client;
use super::error::{Error, Result};
use super::output::{Progress, print_json, write_stdout};
use super::{ProduceArgs, key_value};
use crate::client::records::{Compression, Record, encode_batch, new_record, partition_for_key};

/// Bytes pending (over all partitions) before a Produce is sent.
const BATCH_BYTES: usize = 512 * 1024;

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

#[derive(Default, Serialize)]
struct PartitionSummary {
    messages: u64,
    first_offset: Option<i64>,
    last_offset: Option<i64>,
}

struct Producer<'a> {
    client: &'a mut Client,
    topic: TopicMeta,
    acks: i16,
    headers: Vec<(String, Option<Bytes>)>,
    fixed_partition: Option<i32>,
    sticky: i32,
    pending: BTreeMap<i32, Vec<Record>>,
    pending_bytes: usize,
    summary: BTreeMap<i32, PartitionSummary>,
    messages: u64,
    bytes: u64,
    progress: Progress,
}

impl Producer<'_> {
    fn add(&mut self, key: Option<Vec<u8>>, value: Vec<u8>) -> Result<()> {
        let n = self.topic.partitions.len() as i32;
        let partition = match (self.fixed_partition, &key) {
            (Some(p), _) => p,
            (None, Some(k)) => partition_for_key(k, n),
            (None, None) => self.sticky,
        };
        // Bytes a record adds to a batch, close enough for batching decisions.
        let size = 24
            + key.as_ref().map_or(0, Vec::len)
            + value.len()
            + self
                .headers
                .iter()
                .map(|(k, v)| 10 + k.len() + v.as_ref().map_or(0, Bytes::len))
                .sum::<usize>();
        self.pending_bytes += size;
        self.bytes += value.len() as u64;
        let batch = self.pending.entry(partition).or_default();
        batch.push(new_record(
            batch.len() as i64,
            now_ms(),
            key.map(Bytes::from),
            Some(Bytes::from(value)),
            self.headers.iter().cloned(),
        ));
        if self.pending_bytes >= BATCH_BYTES {
            self.flush()?;
        }
        Ok(())
    }

    fn flush(&mut self) -> Result<()> {
        if self.pending.is_empty() {
            return Ok(());
        }
        let pending = std::mem::take(&mut self.pending);
        self.pending_bytes = 0;
        let mut by_leader: BTreeMap<i32, Vec<(i32, Vec<Record>)>> = BTreeMap::new();
        for (p, recs) in pending {
            let leader = self
                .topic
                .partitions
                .iter()
                .find(|m| m.partition == p)
                .map(|m| m.leader)
                .ok_or_else(|| {
                    Error::kafka(
                        format!("producing to '{}' partition {p}", self.topic.name),
                        3,
                        None,
                    )
                    .with_hint(format!(
                        "topic '{}' has partitions 0..{}",
                        self.topic.name,
                        self.topic.partitions.len().saturating_sub(1)
                    ))
                })?;
            by_leader.entry(leader).or_default().push((p, recs));
        }
        for (leader, parts) in by_leader {
            let counts: BTreeMap<i32, u64> =
                parts.iter().map(|(p, r)| (*p, r.len() as u64)).collect();
            let batches: Vec<(i32, Bytes)> = parts
                .iter()
                .map(|(p, recs)| {
                    encode_batch(recs, Compression::None)
                        .map(|b| (*p, b))
                        .map_err(|e| Error::other(e.to_string()))
                })
                .collect::<Result<_>>()?;
            let bytes: u64 = batches.iter().map(|(_, b)| b.len() as u64).sum();
            let results = api::produce(self.client, leader, &self.topic, self.acks, batches)?;
            for (p, count) in &counts {
                let s = self.summary.entry(*p).or_default();
                s.messages += count;
                if let Some(r) = results.iter().find(|r| r.partition == *p) {
                    s.first_offset.get_or_insert(r.base_offset);
                    s.last_offset = Some(r.base_offset + *count as i64 - 1);
                }
                self.messages += count;
            }
            self.progress.add(counts.values().sum(), bytes);
        }
        let n = self.topic.partitions.len().max(1) as i32;
        self.sticky = (self.sticky + 1) % n;
        Ok(())
    }
}

fn parse_acks(s: &str) -> Result<i16> {
    match s {
        "all" | "-1" => Ok(-1),
        "1" => Ok(1),
        "0" => Ok(0),
        _ => Err(Error::other(format!("--acks '{s}': use all, 1 or 0"))),
    }
}

pub fn run(args: ProduceArgs) -> Result<()> {
    let acks = parse_acks(&args.acks)?;
    let headers: Vec<(String, Option<Bytes>)> = args
        .headers
        .iter()
        .map(|h| key_value(h, "--header").map(|(k, v)| (k, Some(Bytes::from(v)))))
        .collect::<Result<_>>()?;
    if args.key.is_some() && args.values.is_empty() {
        return Err(Error::other(
            "--key applies to --value messages; for stdin lines use --key-separator",
        ));
    }
    if args.key_separator.as_deref() == Some("") {
        return Err(Error::other("--key-separator must not be empty"));
    }
    let mut client = args.common.client()?;
    let topic = api::topic_metadata(&mut client, &args.topic, true)?;
    if topic.partitions.is_empty() {
        return Err(Error::other(format!(
            "topic '{}' has no partitions",
            args.topic
        )));
    }
    if let Some(p) = args.partition
        && !topic.partitions.iter().any(|m| m.partition == p)
    {
        return Err(
            Error::kafka(format!("topic '{}' partition {p}", topic.name), 3, None).with_hint(
                format!(
                    "topic '{}' has partitions 0..{}",
                    topic.name,
                    topic.partitions.len() - 1
                ),
            ),
        );
    }
    let sticky = (now_ms().rem_euclid(topic.partitions.len() as i64)) as i32;
    let interactive = args.values.is_empty() && std::io::stdin().is_terminal();
    let mut producer = Producer {
        client: &mut client,
        topic,
        acks,
        headers,
        fixed_partition: args.partition,
        sticky,
        pending: BTreeMap::new(),
        pending_bytes: 0,
        summary: BTreeMap::new(),
        messages: 0,
        bytes: 0,
        progress: Progress::new("produced", None),
    };
    let split = |line: Vec<u8>| -> (Option<Vec<u8>>, Vec<u8>) {
        match args.key_separator.as_deref().map(str::as_bytes) {
            Some(sep) => match line.windows(sep.len()).position(|w| w == sep) {
                Some(i) => (Some(line[..i].to_vec()), line[i + sep.len()..].to_vec()),
                None => (None, line),
            },
            None => (None, line),
        }
    };
    if !args.values.is_empty() {
        for v in &args.values {
            let (key, value) = match &args.key {
                Some(k) => (Some(k.clone().into_bytes()), v.clone().into_bytes()),
                None => split(v.clone().into_bytes()),
            };
            producer.add(key, value)?;
        }
    } else {
        let stdin = std::io::stdin();
        let mut input = stdin.lock();
        let mut line = Vec::new();
        loop {
            line.clear();
            let n = input
                .read_until(b'\n', &mut line)
                .map_err(|e| Error::other(format!("reading stdin: {e}")))?;
            if n == 0 {
                break;
            }
            if line.last() == Some(&b'\n') {
                line.pop();
                if line.last() == Some(&b'\r') {
                    line.pop();
                }
            }
            let (key, value) = split(std::mem::take(&mut line));
            producer.add(key, value)?;
            if interactive {
                producer.flush()?;
            }
        }
    }
    producer.flush()?;
    producer.progress.finish();
    let topic_name = producer.topic.name.clone();
    if args.common.json {
        return print_json(&serde_json::json!({
            "topic": topic_name,
            "messages": producer.messages,
            "bytes": producer.bytes,
            "acks": acks,
            "partitions": producer.summary,
        }));
    }
    let mut text = format!(
        "Produced {} message{} ({} bytes) to {topic_name}",
        producer.messages,
        if producer.messages == 1 { "" } else { "s" },
        producer.bytes
    );
    let parts: Vec<String> = producer
        .summary
        .iter()
        .map(|(p, s)| match (s.first_offset, s.last_offset) {
            (Some(a), Some(b)) => format!("partition {p} offsets {a}..{b}"),
            _ => format!("partition {p}: {} messages", s.messages),
        })
        .collect();
    if !parts.is_empty() {
        text.push_str(&format!(": {}", parts.join(", ")));
    }
    text.push_str(".\n");
    write_stdout(&text)
}
