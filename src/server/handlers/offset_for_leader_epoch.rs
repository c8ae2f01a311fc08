//! OffsetForLeaderEpoch (API 23, v2-v4: the versions the codec knows): for each partition and leader epoch, the largest epoch at or
//! below it that the partition's log knows and the offset where that epoch ended, from the
//! leader-epoch cache (`storage::epochs`). Consumers use it to detect a log truncated under
//! them after a leader change (KIP-320); followers, to find where they diverged from a new
//! leader (KIP-101, KIP-279). Answered by the partition's leader only, in the client's epoch.

use std::collections::BTreeMap;

use kafka_protocol::messages::offset_for_leader_epoch_response::{
    EpochEndOffset, OffsetForLeaderTopicResult,
};
use kafka_protocol::messages::{OffsetForLeaderEpochRequest, OffsetForLeaderEpochResponse};

use super::{RequestContext, Slot, scatter};
use crate::error::KafkaError;
use crate::shard::calls::OffsetsForLeaderEpoch;

/// (topic slot, partition slot) of a request entry, and what its owner is asked.
type Asked = (Slot, (String, i32, i32));

pub async fn handle(
    ctx: &RequestContext,
    req: OffsetForLeaderEpochRequest,
) -> OffsetForLeaderEpochResponse {
    let shard = &ctx.shard;
    let mut results: Vec<Vec<Result<(i32, i64), KafkaError>>> = Vec::new();
    let mut by_owner: BTreeMap<usize, Vec<Asked>> = BTreeMap::new();
    // A follower (replica_id >= 0) needs ClusterAction on the cluster, a client Describe on
    // each topic, as Kafka.
    use super::{CLUSTER, Operation, ResourceType};
    let follower_refused = req.replica_id.0 >= 0
        && !ctx.authorize(Operation::ClusterAction, ResourceType::Cluster, CLUSTER);
    for (ti, t) in req.topics.iter().enumerate() {
        let name = t.topic.0.as_str();
        let meta = shard.topic(name);
        let mut slots = Vec::with_capacity(t.partitions.len());
        let refused = if follower_refused {
            Some(KafkaError::ClusterAuthorizationFailed)
        } else if req.replica_id.0 < 0
            && !ctx.authorize(Operation::Describe, ResourceType::Topic, name)
        {
            Some(KafkaError::TopicAuthorizationFailed)
        } else {
            None
        };
        for (pi, p) in t.partitions.iter().enumerate() {
            let early = match &meta {
                _ if refused.is_some() => refused.clone(),
                None => Some(KafkaError::UnknownTopicOrPartition),
                Some(m) if p.partition < 0 || p.partition >= m.partitions => {
                    Some(KafkaError::UnknownTopicOrPartition)
                }
                Some(m) => super::check_leader(shard, m, p.partition, p.current_leader_epoch),
            };
            match early {
                Some(e) => slots.push(Err(e)),
                None => {
                    by_owner
                        .entry(shard.owner(name, p.partition))
                        .or_default()
                        .push(((ti, pi), (name.to_string(), p.partition, p.leader_epoch)));
                    // Overwritten by the owner's answer below.
                    slots.push(Err(KafkaError::NotLeaderOrFollower));
                }
            }
        }
        results.push(slots);
    }
    for ((ti, pi), a) in scatter(shard, by_owner, OffsetsForLeaderEpoch).await {
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
                    let out = EpochEndOffset::default().with_partition(p.partition);
                    match r {
                        Ok((epoch, end)) => out.with_leader_epoch(epoch).with_end_offset(end),
                        Err(e) => out
                            .with_error_code(e.code())
                            .with_leader_epoch(-1)
                            .with_end_offset(-1),
                    }
                })
                .collect();
            OffsetForLeaderTopicResult::default()
                .with_topic(t.topic.clone())
                .with_partitions(partitions)
        })
        .collect();
    OffsetForLeaderEpochResponse::default().with_topics(topics)
}
