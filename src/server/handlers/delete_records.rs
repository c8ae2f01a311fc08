//! DeleteRecords: moves each partition's log start offset (low watermark) up to the given
//! offset (-1: the high watermark), asked of each partition's owner, which deletes the
//! segments wholly below it and persists the new start.

use super::RequestContext;
use std::collections::BTreeMap;

use kafka_protocol::messages::delete_records_response::{
    DeleteRecordsPartitionResult, DeleteRecordsTopicResult,
};
use kafka_protocol::messages::{DeleteRecordsRequest, DeleteRecordsResponse};

use super::scatter;
use crate::error::KafkaError;
use crate::shard::calls::DeleteRecords;

/// (topic slot, partition slot) of a request entry, and what its owner is asked.
type Asked = ((usize, usize), (String, i32, i64));

pub async fn handle(ctx: &RequestContext, req: DeleteRecordsRequest) -> DeleteRecordsResponse {
    let shard = &ctx.shard;
    let mut results: Vec<Vec<Result<i64, KafkaError>>> = Vec::new();
    let mut by_owner: BTreeMap<usize, Vec<Asked>> = BTreeMap::new();
    for (ti, t) in req.topics.iter().enumerate() {
        let name = t.name.0.as_str();
        let meta = shard.topic(name);
        let mut slots = Vec::with_capacity(t.partitions.len());
        // Delete on the topic, as Kafka.
        if !ctx.authorize(super::Operation::Delete, super::ResourceType::Topic, name) {
            slots.resize(
                t.partitions.len(),
                Err(KafkaError::TopicAuthorizationFailed),
            );
            results.push(slots);
            continue;
        }
        for (pi, p) in t.partitions.iter().enumerate() {
            let known = meta
                .as_ref()
                .is_some_and(|m| (0..m.partitions).contains(&p.partition_index));
            if !known {
                slots.push(Err(KafkaError::UnknownTopicOrPartition));
            } else {
                by_owner
                    .entry(shard.owner(name, p.partition_index))
                    .or_default()
                    .push(((ti, pi), (name.to_string(), p.partition_index, p.offset)));
                // Overwritten by the owner's answer below.
                slots.push(Err(KafkaError::NotLeaderOrFollower));
            }
        }
        results.push(slots);
    }
    for ((ti, pi), a) in scatter(shard, by_owner, DeleteRecords).await {
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
                    let out = DeleteRecordsPartitionResult::default()
                        .with_partition_index(p.partition_index);
                    match r {
                        Ok(low) => out.with_low_watermark(low),
                        Err(e) => out.with_error_code(e.code()).with_low_watermark(-1),
                    }
                })
                .collect();
            DeleteRecordsTopicResult::default()
                .with_name(t.name.clone())
                .with_partitions(partitions)
        })
        .collect();
    DeleteRecordsResponse::default().with_topics(topics)
}
