//! ListOffsets: earliest (-2), latest (-1) or the first offset at or after a timestamp, asked
//! of each partition's owner.

use super::RequestContext;
use std::collections::BTreeMap;

use kafka_protocol::messages::list_offsets_response::{
    ListOffsetsPartitionResponse, ListOffsetsTopicResponse,
};
use kafka_protocol::messages::{ListOffsetsRequest, ListOffsetsResponse};

use super::scatter;
use crate::error::KafkaError;
use crate::shard::calls::ListOffsets;

/// (topic slot, partition slot) of a request entry, and what its owner is asked.
type Asked = ((usize, usize), (String, i32, i64, bool));

pub async fn handle(ctx: &RequestContext, req: ListOffsetsRequest) -> ListOffsetsResponse {
    let shard = &ctx.shard;
    let version = ctx.api_version;
    let read_committed = req.isolation_level == 1;
    let mut results: Vec<Vec<Result<(i64, i64), KafkaError>>> = Vec::new();
    let mut by_owner: BTreeMap<usize, Vec<Asked>> = BTreeMap::new();
    for (ti, t) in req.topics.iter().enumerate() {
        let name = t.name.0.as_str();
        let meta = shard.topic(name);
        let mut slots = Vec::with_capacity(t.partitions.len());
        for (pi, p) in t.partitions.iter().enumerate() {
            let ok = meta
                .as_ref()
                .is_some_and(|m| (0..m.partitions).contains(&p.partition_index));
            let not_here = meta.as_ref().and_then(|m| {
                super::check_leader(shard, m, p.partition_index, p.current_leader_epoch)
            });
            if !ok {
                slots.push(Err(KafkaError::UnknownTopicOrPartition));
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
                        Ok((offset, ts)) => out
                            .with_offset(offset)
                            .with_timestamp(ts)
                            .with_leader_epoch(if version >= 4 { 0 } else { -1 }),
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
