//! Consumers: each reads its assigned partitions with Fetch long polls (no consumer group),
//! one thread per partition leader, and records end-to-end latency from the send time in
//! each message's first 8 bytes.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use anyhow::{Result, bail};
use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
use kafka_protocol::messages::{FetchRequest, TopicName};
use kafka_protocol::protocol::StrBytes;
use spate::client::records::decode_fetched;

use crate::client::{self, Versions};
use crate::producer::Target;
use crate::stats::{Recorder, Series, Shared};

/// Once producers are done and acks=0 (no offsets known), a consumer stops after this long
/// without a record.
const IDLE_DONE_NS: u64 = 1_000_000_000;

/// Reads `targets` (all led by the broker at `addr`) from offset 0 until the producers are
/// done and every acknowledged message was read (or the run is stopped).
pub fn run(
    addr: &str,
    versions: Versions,
    targets: Vec<Target>,
    acks: i16,
    max_wait_ms: i32,
    partition_max_bytes: i32,
    shared: &Arc<Shared>,
) -> Result<Recorder> {
    let mut conn = client::open(addr)?;
    let mut rec = Recorder::new(Series::EndToEnd);
    let mut next: Vec<i64> = vec![0; targets.len()];
    let mut last_record_ns = shared.now_ns();
    loop {
        if shared.stopped() {
            break;
        }
        let producers_done = shared.producers_done.load(Ordering::Acquire);
        if producers_done {
            let caught_up = if acks == 0 {
                shared.now_ns().saturating_sub(last_record_ns) > IDLE_DONE_NS
            } else {
                targets
                    .iter()
                    .zip(&next)
                    .all(|(t, n)| *n >= shared.acked_end[t.global].load(Ordering::Relaxed))
            };
            if caught_up {
                break;
            }
        }
        let mut topics: Vec<FetchTopic> = Vec::new();
        for (t, offset) in targets.iter().zip(&next) {
            let fp = FetchPartition::default()
                .with_partition(t.partition)
                .with_fetch_offset(*offset)
                .with_partition_max_bytes(partition_max_bytes);
            match topics.last_mut() {
                Some(ft) if ft.topic.0.as_str() == &*t.topic => ft.partitions.push(fp),
                _ => topics.push(
                    FetchTopic::default()
                        .with_topic(TopicName(StrBytes::from_string(t.topic.to_string())))
                        .with_partitions(vec![fp]),
                ),
            }
        }
        let req = FetchRequest::default()
            .with_max_wait_ms(max_wait_ms)
            .with_min_bytes(1)
            .with_max_bytes(64 * 1024 * 1024)
            .with_isolation_level(0)
            .with_topics(topics);
        let resp = conn.call(&req, versions.fetch)?;
        if resp.error_code != 0 {
            bail!("Fetch: error code {}", resp.error_code);
        }
        let now = shared.now_ns();
        let in_window = shared.in_window(now);
        let mut got: u64 = 0;
        let mut bytes: u64 = 0;
        for topic in &resp.responses {
            for p in &topic.partitions {
                let Some(i) = targets
                    .iter()
                    .position(|t| t.partition == p.partition_index && *t.topic == *topic.topic.0)
                else {
                    continue;
                };
                if p.error_code != 0 {
                    bail!(
                        "Fetch {}/{}: error code {}",
                        targets[i].topic,
                        targets[i].partition,
                        p.error_code
                    );
                }
                let Some(data) = &p.records else { continue };
                let fetched = decode_fetched(data, next[i]).map_err(|e| {
                    anyhow::anyhow!("{}/{}: {e}", targets[i].topic, targets[i].partition)
                })?;
                for r in &fetched.records {
                    let value = r.value.as_deref().unwrap_or_default();
                    let size = value.len() as u64;
                    bytes += size;
                    let sent = value
                        .first_chunk::<8>()
                        .map_or(0, |b| u64::from_be_bytes(*b));
                    if sent == 0 || sent > now {
                        // A backlog message (no send time) or not ours: throughput only.
                        rec.count(in_window, size);
                    } else {
                        rec.record(in_window, now - sent, size);
                    }
                }
                got += fetched.records.len() as u64;
                if let Some(n) = fetched.next_offset {
                    next[i] = next[i].max(n);
                }
            }
        }
        if got > 0 {
            last_record_ns = now;
            shared.consumed.fetch_add(got, Ordering::Relaxed);
            shared.consumed_bytes.fetch_add(bytes, Ordering::Relaxed);
            if in_window {
                shared
                    .last_consume_in_window
                    .fetch_max(now, Ordering::Relaxed);
            }
        }
        rec.maybe_flush(shared, now, false);
    }
    rec.maybe_flush(shared, shared.now_ns(), true);
    Ok(rec)
}
