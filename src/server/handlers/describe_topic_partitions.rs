//! DescribeTopicPartitions (API 75, KIP-966): what the Java admin client (3.7+) describes
//! topics with. Metadata's view of each topic, in name order, paged: at most
//! `response_partition_limit` partitions in one response (from the request's cursor), and a
//! `next_cursor` naming the first one left out. An empty topic list means every topic.
//!
//! Eligible leader replicas (KIP-966's ELR) are not kept here: both lists are empty.

use kafka_protocol::ResponseError;
use kafka_protocol::messages::describe_topic_partitions_response::{
    Cursor, DescribeTopicPartitionsResponsePartition, DescribeTopicPartitionsResponseTopic,
};
use kafka_protocol::messages::{
    BrokerId, DescribeTopicPartitionsRequest, DescribeTopicPartitionsResponse,
};

use super::metadata::topic_response;
use super::{RequestContext, topic_name};

/// Kafka's cap on partitions in one response (max.request.partition.size.limit).
const PARTITIONS_MAX: i32 = 2000;

pub async fn handle(
    ctx: &RequestContext,
    req: DescribeTopicPartitionsRequest,
) -> DescribeTopicPartitionsResponse {
    let shard = &ctx.shard;
    let node = BrokerId(shard.config.node_id);
    let view = shard.cluster();
    let live: Option<Vec<i32>> = view
        .as_ref()
        .map(|v| v.brokers.iter().map(|b| b.id).collect());
    // All topics: those the principal may describe; a named one it may not is
    // TOPIC_AUTHORIZATION_FAILED whether or not it exists, as Kafka.
    use super::{Operation, ResourceType};
    let describable = |name: &str| ctx.authorize(Operation::Describe, ResourceType::Topic, name);
    let mut names: Vec<String> = if req.topics.is_empty() {
        shard
            .all_topics()
            .into_iter()
            .map(|m| m.name.clone())
            .filter(|n| describable(n))
            .collect()
    } else {
        req.topics
            .iter()
            .map(|t| t.name.0.as_str().to_string())
            .collect()
    };
    names.sort();
    names.dedup();
    let (cursor_topic, cursor_partition) = match &req.cursor {
        Some(c) => (
            Some(c.topic_name.0.as_str().to_string()),
            c.partition_index.max(0),
        ),
        None => (None, 0),
    };
    let mut budget = match req.response_partition_limit {
        n if n > 0 => n.min(PARTITIONS_MAX),
        _ => PARTITIONS_MAX,
    };
    let mut topics = Vec::new();
    let mut next_cursor = None;
    for name in names {
        if cursor_topic.as_deref().is_some_and(|c| name.as_str() < c) {
            continue;
        }
        let first = match &cursor_topic {
            Some(c) if *c == name => cursor_partition,
            _ => 0,
        };
        if !req.topics.is_empty() && !describable(&name) {
            topics.push(
                DescribeTopicPartitionsResponseTopic::default()
                    .with_name(Some(topic_name(&name)))
                    .with_error_code(ResponseError::TopicAuthorizationFailed.code()),
            );
            continue;
        }
        let Some(meta) = shard.topic(&name) else {
            topics.push(
                DescribeTopicPartitionsResponseTopic::default()
                    .with_name(Some(topic_name(&name)))
                    .with_error_code(ResponseError::UnknownTopicOrPartition.code()),
            );
            continue;
        };
        if budget == 0 {
            next_cursor = Some(
                Cursor::default()
                    .with_topic_name(topic_name(&name))
                    .with_partition_index(first),
            );
            break;
        }
        let m = topic_response(&meta, node, 12, live.as_deref());
        let partitions: Vec<_> = m
            .partitions
            .into_iter()
            .filter(|p| p.partition_index >= first)
            .collect();
        let left_out = partitions.len() as i64 - i64::from(budget);
        let shown: Vec<_> = partitions
            .into_iter()
            .take(budget as usize)
            .map(|p| {
                DescribeTopicPartitionsResponsePartition::default()
                    .with_error_code(p.error_code)
                    .with_partition_index(p.partition_index)
                    .with_leader_id(p.leader_id)
                    .with_leader_epoch(p.leader_epoch)
                    .with_replica_nodes(p.replica_nodes)
                    .with_isr_nodes(p.isr_nodes)
                    .with_eligible_leader_replicas(Some(Vec::new()))
                    .with_last_known_elr(Some(Vec::new()))
                    .with_offline_replicas(p.offline_replicas)
            })
            .collect();
        budget -= shown.len() as i32;
        let last = shown.last().map(|p| p.partition_index);
        topics.push(
            DescribeTopicPartitionsResponseTopic::default()
                .with_name(m.name)
                .with_topic_id(meta.topic_id)
                .with_is_internal(m.is_internal)
                .with_partitions(shown)
                .with_topic_authorized_operations(
                    ctx.authorized_operations(ResourceType::Topic, &meta.name),
                ),
        );
        if left_out > 0 {
            next_cursor = Some(
                Cursor::default()
                    .with_topic_name(topic_name(&name))
                    .with_partition_index(last.map_or(first, |l| l + 1)),
            );
            break;
        }
    }
    DescribeTopicPartitionsResponse::default()
        .with_topics(topics)
        .with_next_cursor(next_cursor)
}
