//! ListOffsets (v1-v8): earliest (-2), latest (-1), the record with the largest timestamp
//! (-3, v7+), earliest local (-4, v8+: the log start, every segment being local) or the first
//! offset at or after a timestamp, asked of each partition's owner; each with the leader epoch
//! that wrote it (v4+).

use super::RequestContext;
use std::collections::BTreeMap;

use kafka_protocol::messages::list_offsets_response::{
    ListOffsetsPartitionResponse, ListOffsetsTopicResponse,
};
use kafka_protocol::messages::{ListOffsetsRequest, ListOffsetsResponse};

use super::scatter;
use crate::error::KafkaError;
use crate::shard::calls::ListOffsets;

/// (offset, timestamp, leader epoch) as a partition's owner answers.
type Found = (i64, i64, i32);

/// (topic slot, partition slot) of a request entry, and what its owner is asked.
type Asked = ((usize, usize), (String, i32, i64, bool));

pub async fn handle(ctx: &RequestContext, req: ListOffsetsRequest) -> ListOffsetsResponse {
    let shard = &ctx.shard;
    let version = ctx.api_version;
    let read_committed = req.isolation_level == 1;
    let mut results: Vec<Vec<Result<Found, KafkaError>>> = Vec::new();
    let mut by_owner: BTreeMap<usize, Vec<Asked>> = BTreeMap::new();
    for (ti, t) in req.topics.iter().enumerate() {
        let name = t.name.0.as_str();
        let meta = shard.topic(name);
        let mut slots = Vec::with_capacity(t.partitions.len());
        // Describe on the topic, as Kafka (whether or not it exists).
        if !ctx.authorize(super::Operation::Describe, super::ResourceType::Topic, name) {
            slots.resize(
                t.partitions.len(),
                Err(KafkaError::TopicAuthorizationFailed),
            );
            results.push(slots);
            continue;
        }
        for (pi, p) in t.partitions.iter().enumerate() {
            let ok = meta
                .as_ref()
                .is_some_and(|m| (0..m.partitions).contains(&p.partition_index));
            // Specs newer than the request's version are not Kafka's to ask for there.
            let spec_too_new =
                (p.timestamp == -3 && version < 7) || (p.timestamp == -4 && version < 8);
            let not_here = meta.as_ref().and_then(|m| {
                super::check_leader(shard, m, p.partition_index, p.current_leader_epoch)
            });
            if !ok {
                slots.push(Err(KafkaError::UnknownTopicOrPartition));
            } else if spec_too_new {
                slots.push(Err(KafkaError::Unsupported(if p.timestamp == -3 {
                    "the max-timestamp spec (-3) before ListOffsets v7"
                } else {
                    "the earliest-local spec (-4) before ListOffsets v8"
                })));
            } else if let Some(e) = not_here {
                slots.push(Err(e));
            } else {
                by_owner
                    .entry(shard.owner(name, p.partition_index))
                    .or_default()
                    .push((
                        (ti, pi),
                        (
                            name.to_string(),
                            p.partition_index,
                            p.timestamp,
                            read_committed,
                        ),
                    ));
                // Overwritten by the owner's answer below.
                slots.push(Err(KafkaError::NotLeaderOrFollower));
            }
        }
        results.push(slots);
    }
    for ((ti, pi), a) in scatter(shard, by_owner, ListOffsets).await {
        results[ti][pi] = a;
    }
    let topics = req
        .topics
        .iter()
        .zip(results)
        .map(|(t, parts)| {
            let partitions = t
                .partitions
                .iter()
                .zip(parts)
                .map(|(p, r)| {
                    let out = ListOffsetsPartitionResponse::default()
                        .with_partition_index(p.partition_index);
                    match r {
                        Ok((offset, ts, epoch)) => out
                            .with_offset(offset)
                            .with_timestamp(ts)
                            .with_leader_epoch(if version >= 4 { epoch } else { -1 }),
                        Err(e) => out
                            .with_error_code(e.code())
                            .with_offset(-1)
                            .with_timestamp(-1),
                    }
                })
                .collect();
            ListOffsetsTopicResponse::default()
                .with_name(t.name.clone())
                .with_partitions(partitions)
        })
        .collect();
    ListOffsetsResponse::default().with_topics(topics)
}
