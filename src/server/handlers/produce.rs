//! Produce: validate each partition's batches here (CRC, size, magic), send them to the
//! partitions' owners in one message per owner, and merge the answers.
//!
//! The record bytes are slices of the request frame from decode to the segment write.

use super::RequestContext;
use std::collections::BTreeMap;

use kafka_protocol::messages::ProduceRequest;
use kafka_protocol::messages::ProduceResponse;
use kafka_protocol::messages::produce_response::{PartitionProduceResponse, TopicProduceResponse};

use super::str_bytes;
use super::{Slot, scatter};
use crate::error::{ErrorCode, KafkaError};
use crate::placement::CONTROLLER_SHARD;
use crate::protocol::batch::{ProducedBatch, split_produce_records};
use crate::router::PendingReply;
use crate::shard::calls::{
    Answers, CreateTopic, CreateTopics, Flush, FlushItem, Produce, ProduceItem, ProduceOutcome,
    TxnGuards,
};
use crate::storage::catalog::TopicMeta;

/// The topic's rules for what it stores, applied to a partition's batches: records whose
/// CreateTime is outside `message.timestamp.before.max.ms` / `after.max.ms` of the broker's
/// clock refuse the partition's write (INVALID_TIMESTAMP, as Kafka), and a `compression.type`
/// other than `producer` recompresses every batch in another codec (see
/// [`crate::protocol::codec`]).
///
/// Timestamps: an uncompressed batch's records are each checked; a compressed one kept as the
/// producer sent it is checked by its header's first and max timestamps (its records are never
/// decompressed on the zero-copy path). Kafka's "no timestamp" (-1) is not checked.
fn conform(
    c: &crate::config::Config,
    meta: &TopicMeta,
    batches: Vec<ProducedBatch>,
    message_bytes_max: usize,
) -> Result<Vec<ProducedBatch>, KafkaError> {
    use crate::protocol::codec;
    let t = &meta.config;
    let target = t.compression.unwrap_or(c.compression_type).codec();
    let batches = match target {
        None => batches,
        Some(codec) => {
            let level = match codec {
                codec::GZIP => t.gzip_level,
                codec::LZ4 => t.lz4_level,
                codec::ZSTD => t.zstd_level,
                _ => None,
            };
            let target = codec::Target { codec, level };
            let max = codec::expanded_bytes_max(message_bytes_max);
            batches
                .into_iter()
                .map(|b| codec::recompress(b, target, max))
                .collect::<Result<Vec<_>, _>>()?
        }
    };
    if meta.log_append_time() {
        return Ok(batches);
    }
    let before = t
        .timestamp_before_max_ms
        .or(c.message_timestamp_before_max_ms);
    let after = t
        .timestamp_after_max_ms
        .or(c.message_timestamp_after_max_ms);
    if before.is_none() && after.is_none() {
        return Ok(batches);
    }
    let now = crate::clock::now_ms();
    for b in &batches {
        let h = &b.header;
        let (lo, hi) = if h.compression() == codec::NONE {
            codec::timestamp_range(h, &b.bytes[crate::protocol::batch::HEADER_LEN..])
                .unwrap_or((h.base_timestamp, h.max_timestamp))
        } else {
            (h.base_timestamp, h.max_timestamp)
        };
        if let Some(ms) = before
            && lo != -1
            && lo < now.saturating_sub(ms as i64)
        {
            return Err(KafkaError::InvalidTimestamp(format!(
                "a record's timestamp {lo} is more than {ms} ms before the broker's time {now} \
                 (message.timestamp.before.max.ms)"
            )));
        }
        if let Some(ms) = after
            && hi != -1
            && hi > now.saturating_add(ms as i64)
        {
            return Err(KafkaError::InvalidTimestamp(format!(
                "a record's timestamp {hi} is more than {ms} ms after the broker's time {now} \
                 (message.timestamp.after.max.ms)"
            )));
        }
    }
    Ok(batches)
}

/// Where a produce's batches for one owner shard were queued.
enum Queued {
    Local(crate::shard::QueuedProduce),
    Remote(PendingReply<Answers<ProduceOutcome>>),
    Failed(KafkaError),
}

/// Creates `name` with the broker defaults unless it exists (then returns it).
pub async fn auto_create(ctx: &RequestContext, name: &str) -> Result<TopicMeta, KafkaError> {
    let shard = &ctx.shard;
    let spec = CreateTopic {
        name: name.to_string(),
        partitions: -1,
        replication_factor: -1,
        configs: BTreeMap::new(),
        if_not_exists: true,
        internal: false,
        assignments: Vec::new(),
    };
    let call = CreateTopics {
        topics: vec![spec],
        validate_only: false,
        context: ctx.forwarded(),
    };
    match shard.call(CONTROLLER_SHARD, call).await {
        Ok(mut r) if r.len() == 1 => r.remove(0),
        Ok(_) | Err(_) => Err(KafkaError::NotController),
    }
}

/// Returns None for acks=0: such a request gets no response.
///
/// `ordered` is released once every partition's batches are queued at their owners: the
/// connection's next request may start then (its appends queue behind these), while this one
/// still waits here for its offsets and, with acks=all, for the fdatasync.
pub async fn handle(ctx: &RequestContext, req: ProduceRequest) -> Option<ProduceResponse> {
    let shard = &ctx.shard;
    let version = ctx.api_version;
    let ordered = ctx.take_order_hold();
    let acks = req.acks;
    // results[topic][partition]
    let mut results: Vec<Vec<(i32, Result<ProduceOutcome, KafkaError>)>> = Vec::new();
    // owner -> (topic slot, partition slot, item)
    let mut by_owner: BTreeMap<usize, Vec<(Slot, ProduceItem)>> = BTreeMap::new();
    let mut metas: Vec<Option<TopicMeta>> = Vec::with_capacity(req.topic_data.len());
    // The topic defaults in effect (start-up settings under the dynamic broker configs).
    let live = shard.live();
    use super::{CLUSTER, Operation, ResourceType};
    // A transactional producer needs Write on its transactional id: every partition answers
    // TRANSACTIONAL_ID_AUTHORIZATION_FAILED without it, as Kafka.
    let txn_refused = req.transactional_id.as_ref().is_some_and(|id| {
        !ctx.authorize(
            Operation::Write,
            ResourceType::TransactionalId,
            id.0.as_str(),
        )
    });
    for (ti, topic) in req.topic_data.iter().enumerate() {
        let name = topic.name.0.as_str();
        let meta = match shard.topic(name) {
            _ if txn_refused => Err(KafkaError::TransactionalIdAuthorizationFailed),
            // Write on the topic, whether or not it exists, as Kafka.
            _ if !ctx.authorize(Operation::Write, ResourceType::Topic, name) => {
                Err(KafkaError::TopicAuthorizationFailed)
            }
            // Its partitions are the group coordinators' logs: a client's batch there could
            // make a partition unreadable to the coordinator that replays it (Kafka refuses
            // produce to internal topics too).
            _ if crate::placement::is_coordinator_log(name) => {
                Err(KafkaError::InvalidTopic(format!(
                    "'{name}' is an internal log of the coordinators and cannot be produced to"
                )))
            }
            Some(m) => Ok(m),
            // Auto-creation needs Create on the cluster or on the topic.
            None if shard.config.auto_create_topics
                && (ctx.authorize(Operation::Create, ResourceType::Cluster, CLUSTER)
                    || ctx.authorize(Operation::Create, ResourceType::Topic, name)) =>
            {
                auto_create(ctx, name).await
            }
            None => Err(KafkaError::UnknownTopicOrPartition),
        };
        metas.push(meta.as_ref().ok().cloned());
        let mut slots = Vec::with_capacity(topic.partition_data.len());
        for (pi, part) in topic.partition_data.iter().enumerate() {
            let p = part.index;
            let checked = (|| {
                if !matches!(acks, -1..=1) {
                    return Err(KafkaError::InvalidRequiredAcks(acks));
                }
                let meta = meta.as_ref().map_err(Clone::clone)?;
                if p < 0 || p >= meta.partitions {
                    return Err(KafkaError::UnknownTopicOrPartition);
                }
                if !shard.leads(meta, p) {
                    return Err(KafkaError::NotLeaderOrFollower);
                }
                // acks=all with too few in-sync replicas is refused before anything is
                // appended (the write could not be made as safe as asked).
                if acks == -1
                    && shard.cluster().is_some()
                    && let Some(a) = meta.partition(p)
                {
                    let min = shard.min_insync_replicas(meta);
                    if (a.isr.len() as i64) < i64::from(min) {
                        return Err(KafkaError::NotEnoughReplicas {
                            isr: a.isr.len(),
                            min,
                        });
                    }
                }
                let records = part
                    .records
                    .as_ref()
                    .ok_or_else(|| KafkaError::CorruptMessage("null record set".into()))?;
                let max = meta
                    .config
                    .max_message_bytes
                    .map_or(live.message_bytes_max, |v| v as usize);
                let batches = split_produce_records(records, max)?;
                if batches.iter().any(|b| b.header.is_control()) {
                    return Err(KafkaError::InvalidRecord(
                        "control batches are written only by the transaction coordinator".into(),
                    ));
                }
                // Only compacted topics pay for decoding the records here.
                if shard.cleanup_policy(meta).compact {
                    for b in &batches {
                        match crate::protocol::batch::every_record_keyed(&b.bytes) {
                            Some(true) => {}
                            Some(false) => {
                                return Err(KafkaError::InvalidRecord(
                                    "a compacted topic cannot accept a record without a key".into(),
                                ));
                            }
                            None => {
                                return Err(KafkaError::CorruptMessage(
                                    "the batch's records do not decode".into(),
                                ));
                            }
                        }
                    }
                }
                conform(&live, meta, batches, max)
            })();
            match checked {
                Ok(batches) => {
                    let bytes: usize = batches.iter().map(|b| b.bytes.len()).sum();
                    shard
                        .stats
                        .bytes_in
                        .set(shard.stats.bytes_in.get() + bytes as u64);
                    by_owner.entry(shard.owner(name, p)).or_default().push((
                        (ti, pi),
                        ProduceItem {
                            topic: name.to_string(),
                            partition: p,
                            batches,
                            acks_all: acks == -1,
                            guard: None,
                        },
                    ));
                    slots.push((p, Err(KafkaError::NotLeaderOrFollower)));
                }
                Err(e) => {
                    if !matches!(e, KafkaError::UnknownTopicOrPartition) {
                        tracing::debug!(topic = name, partition = p, error = %e, "produce rejected");
                    }
                    slots.push((p, Err(e)));
                }
            }
        }
        results.push(slots);
    }
    verify_transactional(ctx, &req, &mut by_owner, &mut results).await;
    // Queue every owner's batches, in order, then let the connection's next request start:
    // its batches queue behind these on every owner (the local queue is filled right here, and
    // a remote owner queues what its FIFO channel delivers before taking the next message).
    let mut queued = Vec::with_capacity(by_owner.len());
    for (owner, items) in by_owner {
        let (slots, items): (Vec<Slot>, Vec<ProduceItem>) = items.into_iter().unzip();
        let reply = if owner == shard.id {
            Queued::Local(shard.enqueue_produce(items))
        } else {
            match shard.router.send(owner, Produce(items).into()).await {
                Ok(rx) => Queued::Remote(rx),
                Err(e) => Queued::Failed(super::owner_gone(e)),
            }
        };
        queued.push((slots, reply));
    }
    drop(ordered);
    let waits = queued.into_iter().map(|(slots, reply)| async move {
        let n = slots.len();
        let answers = match reply {
            Queued::Local(q) => Some(q.wait().await),
            Queued::Remote(rx) => rx.wait().await.ok(), // None: the owner went away (shutdown)
            Queued::Failed(e) => return slots.into_iter().map(|s| (s, Err(e.clone()))).collect(),
        };
        let answers = match answers {
            Some(r) if r.len() == n => r,
            _ => vec![Err(KafkaError::NotLeaderOrFollower); n],
        };
        slots.into_iter().zip(answers).collect::<Vec<_>>()
    });
    for ((ti, pi), answer) in futures_util::future::join_all(waits)
        .await
        .into_iter()
        .flatten()
    {
        results[ti][pi].1 = answer;
    }
    if acks == -1 {
        // Durability: every written partition waits for its owner's fdatasync.
        let mut by_owner: BTreeMap<usize, Vec<(Slot, FlushItem)>> = BTreeMap::new();
        for (ti, topic) in req.topic_data.iter().enumerate() {
            let name = topic.name.0.as_str();
            for (pi, (p, r)) in results[ti].iter().enumerate() {
                if let Ok(o) = r {
                    by_owner
                        .entry(shard.owner(name, *p))
                        .or_default()
                        .push(((ti, pi), (name.to_string(), *p, o.last_offset)));
                }
            }
        }
        // As Kafka does, the request's timeout bounds the wait for durability: past it the
        // partitions still waiting answer REQUEST_TIMED_OUT (their data may yet become
        // durable; a retry of an idempotent producer is deduplicated). A timeout of 0 or less
        // is taken as no bound rather than an immediate failure.
        let slots: Vec<Slot> = by_owner.values().flatten().map(|(slot, _)| *slot).collect();
        let flushed = scatter(shard, by_owner, Flush);
        let answers = match u64::try_from(req.timeout_ms) {
            Ok(ms) if ms > 0 => {
                futures_lite::future::or(async { Some(flushed.await) }, async {
                    glommio::timer::sleep(std::time::Duration::from_millis(ms)).await;
                    None
                })
                .await
            }
            _ => Some(flushed.await),
        };
        match answers {
            Some(answers) => {
                for ((ti, pi), flushed) in answers {
                    if let Err(e) = flushed {
                        results[ti][pi].1 = Err(e);
                    }
                }
            }
            None => {
                for (ti, pi) in slots {
                    results[ti][pi].1 = Err(KafkaError::RequestTimedOut(i64::from(req.timeout_ms)));
                }
            }
        }
    }
    if acks == 0 {
        return None;
    }
    let mut hinted = Vec::new();
    let responses = req
        .topic_data
        .iter()
        .zip(results)
        .zip(&metas)
        .map(|((topic, parts), meta)| {
            let partition_responses = parts
                .into_iter()
                .map(|(p, r)| {
                    let out = PartitionProduceResponse::default().with_index(p);
                    // KIP-951: where the leader is elsewhere, say which, so the client
                    // moves on without a Metadata round trip.
                    let out = match (&r, meta, version >= 10) {
                        (Err(KafkaError::NotLeaderOrFollower), Some(meta), true) => {
                            let (leader, epoch) = super::current_leader(meta, p);
                            hinted.push(leader);
                            out.with_current_leader(
                                kafka_protocol::messages::produce_response::LeaderIdAndEpoch::default()
                                    .with_leader_id(kafka_protocol::messages::BrokerId(leader))
                                    .with_leader_epoch(epoch),
                            )
                        }
                        _ => out,
                    };
                    let (out, log_start_offset) = match r {
                        Ok(o) => (
                            out.with_base_offset(o.base_offset)
                                .with_log_append_time_ms(o.log_append_time),
                            o.log_start_offset,
                        ),
                        Err(e) => {
                            let out = out
                                .with_error_code(e.code())
                                .with_base_offset(-1)
                                .with_log_append_time_ms(-1);
                            let out = if version >= 8 {
                                out.with_error_message(Some(str_bytes(e.message())))
                            } else {
                                out
                            };
                            (out, -1)
                        }
                    };
                    if version >= 5 {
                        out.with_log_start_offset(log_start_offset)
                    } else {
                        out
                    }
                })
                .collect();
            TopicProduceResponse::default()
                .with_name(topic.name.clone())
                .with_partition_responses(partition_responses)
        })
        .collect();
    let endpoints = super::node_endpoints(ctx, &hinted)
        .into_iter()
        .map(|(id, host, port, rack)| {
            kafka_protocol::messages::produce_response::NodeEndpoint::default()
                .with_node_id(kafka_protocol::messages::BrokerId(id))
                .with_host(str_bytes(host))
                .with_port(i32::from(port))
                .with_rack(rack.map(str_bytes))
        })
        .collect();
    Some(
        ProduceResponse::default()
            .with_responses(responses)
            .with_node_endpoints(endpoints),
    )
}

/// (topic, partition, producer id) of a verification guard to take.
type GuardAsk = (String, i32, i64);

/// KIP-890 part 1: a partition's transactional batches are written only if the producer's
/// transaction coordinator says the partition is in its open transaction, in its epoch; the
/// others are answered with the coordinator's code (INVALID_TXN_STATE, INVALID_PRODUCER_EPOCH)
/// and not written. So a write that comes after its transaction ended, or without
/// AddPartitionsToTxn, cannot open a transaction that no marker will close (and hold the last
/// stable offset for ever). One call to the coordinator's shard (or broker) per request.
///
/// Before asking, each partition's owner shard takes a verification guard for the producer,
/// which the write carries: a marker for the producer written between the answer and the
/// write drops the guard, and the partition then refuses the write if it would open a
/// transaction (INVALID_TXN_STATE), as Kafka's verification guard does.
async fn verify_transactional(
    ctx: &RequestContext,
    req: &ProduceRequest,
    by_owner: &mut BTreeMap<usize, Vec<(Slot, ProduceItem)>>,
    results: &mut [Vec<(i32, Result<ProduceOutcome, KafkaError>)>],
) {
    let mut asked: Vec<(Slot, (String, i32), i64, i16)> = Vec::new();
    for items in by_owner.values() {
        for (slot, item) in items {
            if let Some(b) = item
                .batches
                .iter()
                .find(|b| b.header.is_transactional() && b.header.producer_id >= 0)
            {
                asked.push((
                    *slot,
                    (item.topic.clone(), item.partition),
                    b.header.producer_id,
                    b.header.producer_epoch,
                ));
            }
        }
    }
    if asked.is_empty() {
        return;
    }
    // Guards first, then the coordinator.
    let mut guard_asks: BTreeMap<usize, Vec<(Slot, GuardAsk)>> = BTreeMap::new();
    for (slot, tp, pid, _) in &asked {
        guard_asks
            .entry(ctx.shard.owner(&tp.0, tp.1))
            .or_default()
            .push((*slot, (tp.0.clone(), tp.1, *pid)));
    }
    let guard_calls = guard_asks.into_iter().map(|(owner, items)| async move {
        let (slots, asks): (Vec<Slot>, Vec<_>) = items.into_iter().unzip();
        let n = slots.len();
        let guards = match ctx.shard.call(owner, TxnGuards(asks)).await {
            Ok(g) if g.len() == n => g,
            _ => vec![None; n],
        };
        slots.into_iter().zip(guards).collect::<Vec<_>>()
    });
    let guards: BTreeMap<Slot, Option<u64>> = futures_util::future::join_all(guard_calls)
        .await
        .into_iter()
        .flatten()
        .collect();
    for items in by_owner.values_mut() {
        for (slot, item) in items.iter_mut() {
            item.guard = guards.get(slot).copied().flatten();
        }
    }
    let id = req
        .transactional_id
        .as_ref()
        .map(|t| t.0.as_str().to_string());
    let codes: Vec<ErrorCode> = match id {
        Some(id) => {
            // One producer per request: the first transactional batch names it.
            let (_, _, pid, epoch) = asked[0];
            let partitions = asked.iter().map(|a| a.1.clone()).collect();
            match super::txn_verify(ctx, &id, pid, epoch, partitions).await {
                Ok(c) => asked
                    .iter()
                    .zip(c)
                    .map(|(a, c)| {
                        if a.2 != pid || a.3 != epoch {
                            ErrorCode::INVALID_TXN_STATE
                        } else {
                            c
                        }
                    })
                    .collect(),
                // The coordinator could not answer (moving, the broker stopping): retriable.
                Err(_) => vec![ErrorCode::NOT_LEADER_OR_FOLLOWER; asked.len()],
            }
        }
        None => vec![ErrorCode::INVALID_TXN_STATE; asked.len()],
    };
    for ((slot, tp, _, _), code) in asked.into_iter().zip(codes) {
        if code.is_none() {
            continue;
        }
        for items in by_owner.values_mut() {
            items.retain(|(s, _)| *s != slot);
        }
        let err = if code == ErrorCode::INVALID_PRODUCER_EPOCH {
            KafkaError::InvalidProducerEpoch(format!(
                "{}-{}: not the epoch of the producer's transaction",
                tp.0, tp.1
            ))
        } else if code == ErrorCode::NOT_LEADER_OR_FOLLOWER {
            KafkaError::NotLeaderOrFollower
        } else {
            KafkaError::InvalidTxnState(format!(
                "{}-{} is not in the producer's open transaction",
                tp.0, tp.1
            ))
        };
        tracing::debug!(topic = %tp.0, partition = tp.1, error = %err, "transactional produce refused");
        results[slot.0][slot.1].1 = Err(err);
    }
    by_owner.retain(|_, items| !items.is_empty());
}
