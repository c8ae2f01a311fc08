//! Fetch with long polling across shards.
//!
//! 1. Resolve each partition (by name, or by topic id from v13) and group them by owner.
//! 2. Ask every owner, concurrently, where the data at each fetch offset lies: owners answer
//!    with file ranges (whole batches, within the partition's max bytes), not bytes.
//! 3. If the ranges add up to at least `min_bytes`, or a partition has an error, or the wait
//!    is over, answer. Otherwise ask every owner to answer, with fresh ranges for its slots,
//!    once any of them grows; take the first owner's answer (the others keep their last
//!    ranges) and go to 3, or after the deadline, to 2 for a last look.
//! 4. Trim to the request's `max_bytes` in request order (the first partition with data is
//!    always sent whole, as Kafka does) and encode; the connection writes the file ranges.

use super::RequestContext;
use std::collections::BTreeMap;
use std::rc::Rc;
use std::time::{Duration, Instant};

use kafka_protocol::messages::FetchRequest;

use crate::error::KafkaError;
use crate::protocol::fetch::{self, Chunk, PartitionOut, Records, TopicOut};
use crate::shard::Shard;
use crate::shard::calls::{CancelWait, Fetch, FetchItem, WaitForData};
use crate::shard::replica::ReplicaFetch;
use crate::storage::log::ReadOut;

struct Slot {
    /// A follower's Fetch: its replica state and the leader epoch it sent for the partition.
    replica: Option<(ReplicaFetch, i32)>,
    topic: usize,
    partition: i32,
    offset: i64,
    max_bytes: usize,
    read_committed: bool,
    name: String,
    /// Whether the partition is to be read from its owner (it resolved without an error).
    unread: bool,
    result: Result<ReadOut, KafkaError>,
}

pub async fn handle(ctx: &RequestContext, req: FetchRequest) -> Vec<Chunk> {
    let shard = &ctx.shard;
    let version = ctx.api_version;
    let corr = ctx.correlation_id;
    let max_bytes = if req.max_bytes <= 0 {
        usize::MAX
    } else {
        req.max_bytes as usize
    };
    let wait_ms = (req.max_wait_ms.max(0) as u64).min(shard.config.fetch_wait_ms_max);
    let deadline = Instant::now() + Duration::from_millis(wait_ms);
    let min_bytes = req.min_bytes.max(0) as usize;
    // A follower broker names itself: in the replica state from v15 (with its broker epoch,
    // KIP-903), in replica_id before.
    let (replica_id, replica_epoch) = if version >= 15 {
        (
            req.replica_state.replica_id.0,
            req.replica_state.replica_epoch,
        )
    } else {
        (req.replica_id.0, -1)
    };
    let replica =
        (replica_id >= 0 && shard.cluster().is_some()).then_some((replica_id, replica_epoch));
    // A follower needs ClusterAction on the cluster, a consumer Read on each topic; what is
    // refused answers TOPIC_AUTHORIZATION_FAILED per partition, as Kafka.
    let follower_allowed = replica_id < 0
        || ctx.authorize(
            super::Operation::ClusterAction,
            super::ResourceType::Cluster,
            super::CLUSTER,
        );

    let mut topics: Vec<TopicOut> = Vec::with_capacity(req.topics.len());
    let mut slots: Vec<Slot> = Vec::new();
    for t in &req.topics {
        let meta = if version >= 13 {
            shard.topic_by_id(t.topic_id)
        } else {
            shard.topic(t.topic.0.as_str())
        };
        let ti = topics.len();
        topics.push(TopicOut {
            name: meta
                .as_ref()
                .map_or_else(|| t.topic.0.as_str().to_string(), |m| m.name.clone()),
            topic_id: t.topic_id,
            partitions: Vec::with_capacity(t.partitions.len()),
        });
        let allowed = match &meta {
            _ if replica_id >= 0 => follower_allowed,
            None if version >= 13 => true,
            m => ctx.authorize(
                super::Operation::Read,
                super::ResourceType::Topic,
                m.as_ref().map_or(t.topic.0.as_str(), |m| m.name.as_str()),
            ),
        };
        for p in &t.partitions {
            let early = match &meta {
                _ if !allowed => Some(KafkaError::TopicAuthorizationFailed),
                None if version >= 13 => Some(KafkaError::UnknownTopicId),
                None => Some(KafkaError::UnknownTopicOrPartition),
                Some(m) if p.partition < 0 || p.partition >= m.partitions => {
                    Some(KafkaError::UnknownTopicOrPartition)
                }
                Some(m) => super::check_leader(shard, m, p.partition, p.current_leader_epoch),
            };
            slots.push(Slot {
                replica: replica.map(|(id, epoch)| {
                    (
                        ReplicaFetch {
                            replica_id: id,
                            broker_epoch: epoch,
                            last_fetched_epoch: if version >= 12 {
                                p.last_fetched_epoch
                            } else {
                                -1
                            },
                        },
                        p.current_leader_epoch,
                    )
                }),
                unread: early.is_none(),
                // An unread slot's result is its owner's answer, filled in below.
                result: Err(early.unwrap_or(KafkaError::NotLeaderOrFollower)),
                topic: ti,
                partition: p.partition,
                offset: p.fetch_offset,
                max_bytes: (p.partition_max_bytes.max(0) as usize).min(max_bytes),
                read_committed: req.isolation_level == 1,
                name: meta.as_ref().map_or_else(String::new, |m| m.name.clone()),
            });
        }
    }
    let to_read: Vec<usize> = (0..slots.len()).filter(|&i| slots[i].unread).collect();
    let mut fresh = false; // an owner's wake-up already brought its slots' ranges
    loop {
        if !fresh {
            read_all(shard, &mut slots, &to_read).await;
        }
        let bytes: usize = slots
            .iter()
            .filter_map(|s| s.result.as_ref().ok())
            .map(|r| r.slice.as_ref().map_or(0, |s| s.len))
            .sum();
        // An error, or a follower told where its log diverges, is answered at once.
        let any_error = to_read.iter().any(|&i| {
            slots[i]
                .result
                .as_ref()
                .map_or(true, |r| r.diverging_epoch.is_some())
        });
        let now = Instant::now();
        if bytes >= min_bytes.max(1)
            || any_error
            || now >= deadline
            || to_read.is_empty()
            || shard.stopping.get()
        {
            break;
        }
        fresh = wait_any(shard, &mut slots, &to_read, deadline - now).await;
    }
    // Trim to the request budget in request order.
    let mut sent = 0usize;
    let mut hinted = Vec::new();
    for slot in slots {
        // KIP-951: where another broker leads, say which (v12+), so the client moves on at once.
        let current_leader = match (&slot.result, version >= 12) {
            (Err(KafkaError::NotLeaderOrFollower), true) => shard
                .topic(&slot.name)
                .map(|m| super::current_leader(&m, slot.partition))
                .filter(|(leader, _)| *leader >= 0),
            _ => None,
        };
        if let Some((leader, _)) = current_leader {
            hinted.push(leader);
        }
        let mut aborted = None;
        let mut diverging_epoch = None;
        let (error_code, (hw, lso, log_start), records) = match slot.result {
            Ok(out) => {
                diverging_epoch = out.diverging_epoch;
                aborted = out.aborted.map(|a| {
                    a.iter()
                        .map(|t| (t.producer_id, t.first_offset))
                        .collect::<Vec<_>>()
                });
                let records = match out.slice {
                    Some(s) if sent == 0 || sent + s.len <= max_bytes => {
                        sent += s.len;
                        Records::File(s)
                    }
                    _ => Records::Empty,
                };
                let offsets = (
                    out.high_watermark,
                    out.last_stable_offset,
                    out.log_start_offset,
                );
                (0, offsets, records)
            }
            // Out of range: the answer names the log start, so a follower that fell below it
            // (the leader deleted what it lacks: retention, DeleteRecords, a coordinator log's
            // rewrite) restarts its log there instead of asking again for ever.
            Err(e @ KafkaError::OffsetOutOfRange { start, .. }) => {
                (e.code(), (-1, -1, start), Records::Empty)
            }
            Err(e) => (e.code(), (-1, -1, -1), Records::Empty),
        };
        topics[slot.topic].partitions.push(PartitionOut {
            partition: slot.partition,
            error_code,
            high_watermark: hw,
            last_stable_offset: lso,
            log_start_offset: log_start,
            aborted_transactions: aborted,
            records,
            current_leader,
            diverging_epoch,
        });
    }
    let endpoints: Vec<fetch::NodeEndpoint> = super::node_endpoints(ctx, &hinted)
        .into_iter()
        .map(|(id, host, port, rack)| fetch::NodeEndpoint {
            node_id: id,
            host,
            port: i32::from(port),
            rack,
        })
        .collect();
    fetch::encode(version, corr, 0, topics, &endpoints)
}

/// The slots to read, grouped by owner shard, with what to ask each owner.
fn by_owner(
    shard: &Shard,
    slots: &[Slot],
    to_read: &[usize],
) -> Vec<(usize, Vec<usize>, Vec<FetchItem>)> {
    let mut groups: BTreeMap<usize, Vec<usize>> = BTreeMap::new();
    for &i in to_read {
        groups
            .entry(shard.owner(&slots[i].name, slots[i].partition))
            .or_default()
            .push(i);
    }
    groups
        .into_iter()
        .map(|(owner, idx)| {
            let items = idx
                .iter()
                .map(|&i| FetchItem {
                    topic: slots[i].name.clone(),
                    partition: slots[i].partition,
                    offset: slots[i].offset,
                    max_bytes: slots[i].max_bytes,
                    read_committed: slots[i].read_committed,
                    replica: slots[i].replica,
                })
                .collect();
            (owner, idx, items)
        })
        .collect()
}

/// Asks each owner where the data of its slots lies.
async fn read_all(shard: &Rc<Shard>, slots: &mut [Slot], to_read: &[usize]) {
    let calls = by_owner(shard, slots, to_read)
        .into_iter()
        .map(|(owner, idx, items)| {
            let shard = shard.clone();
            async move {
                let n = idx.len();
                let answers = match shard.call(owner, Fetch(items)).await {
                    Ok(r) if r.len() == n => r,
                    _ => vec![Err(KafkaError::NotLeaderOrFollower); n],
                };
                idx.into_iter().zip(answers).collect::<Vec<_>>()
            }
        });
    for answered in futures_util::future::join_all(calls).await {
        for (i, a) in answered {
            slots[i].result = a;
        }
    }
}

/// Waits until any owner has new data in one of its slots, and takes that owner's fresh ranges
/// for them; false if `timeout` passed first. The owners that did not answer are told to end
/// their waits at once (they would otherwise hold a waiter until their own deadline).
async fn wait_any(
    shard: &Rc<Shard>,
    slots: &mut [Slot],
    to_read: &[usize],
    timeout: Duration,
) -> bool {
    let timeout_ms = timeout.as_millis() as u64;
    let wait_id = shard.next_wait_id();
    let asked = by_owner(shard, slots, to_read);
    let owners: Vec<usize> = asked.iter().map(|(owner, _, _)| *owner).collect();
    let waits: Vec<_> = asked
        .into_iter()
        .map(|(owner, idx, items)| {
            let items = idx
                .iter()
                .zip(items)
                .map(|(&i, item)| {
                    let seen = slots[i]
                        .result
                        .as_ref()
                        .map_or(slots[i].offset, |r| r.high_watermark);
                    (item, seen)
                })
                .collect();
            let shard = shard.clone();
            let call = WaitForData {
                items,
                timeout_ms,
                origin: shard.id,
                wait_id,
            };
            Box::pin(async move {
                let n = idx.len();
                match shard.call(owner, call).await {
                    Ok(r) if r.len() == n => Some((idx, r)),
                    _ => None, // the next read reports the partition's error
                }
            })
        })
        .collect();
    if waits.is_empty() {
        return false;
    }
    let first = futures_util::future::select_all(waits);
    let answered = futures_lite::future::or(
        async {
            let (answer, which, _rest) = first.await;
            Some((answer, which))
        },
        async {
            glommio::timer::sleep(timeout).await;
            None
        },
    )
    .await;
    // The waits still running elsewhere are dropped here; a remote one only ends when told.
    let done = answered.as_ref().map(|(_, which)| owners[*which]);
    for &owner in &owners {
        if owner != shard.id && Some(owner) != done {
            let shard = shard.clone();
            glommio::spawn_local(async move {
                let _ = shard
                    .call(
                        owner,
                        CancelWait {
                            origin: shard.id,
                            wait_id,
                        },
                    )
                    .await;
            })
            .detach();
        }
    }
    match answered {
        Some((Some((idx, answers)), _)) => {
            for (i, a) in idx.into_iter().zip(answers) {
                slots[i].result = a;
            }
            true
        }
        _ => false,
    }
}
