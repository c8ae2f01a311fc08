//! DescribeProducers: the idempotent and transactional producers of partitions, from each
//! partition's producer state on its owner shard (epoch, last sequence, last write, and the
//! first offset of its open transaction): what an operator needs to find a hanging
//! transaction and abort it with WriteTxnMarkers (`spate txn abort`).

use std::collections::BTreeMap;

use kafka_protocol::messages::describe_producers_response::{
    PartitionResponse, ProducerState, TopicResponse,
};
use kafka_protocol::messages::{DescribeProducersRequest, DescribeProducersResponse, ProducerId};

use super::{RequestContext, Slot, scatter, str_bytes};
use crate::error::KafkaError;
use crate::shard::calls::{DescribeProducers, ProducerRow};

/// Partitions to ask each owner shard about, with their slots.
type ByOwner = BTreeMap<usize, Vec<(Slot, (String, i32))>>;

pub async fn handle(
    ctx: &RequestContext,
    req: DescribeProducersRequest,
) -> DescribeProducersResponse {
    let shard = &ctx.shard;
    let mut results: Vec<Vec<Result<Vec<ProducerRow>, KafkaError>>> = Vec::new();
    let mut by_owner: ByOwner = BTreeMap::new();
    for (ti, t) in req.topics.iter().enumerate() {
        let name = t.name.0.as_str();
        let meta = shard.topic(name);
        let mut row = Vec::with_capacity(t.partition_indexes.len());
        // Read on the topic, as Kafka.
        let readable = ctx.authorize(super::Operation::Read, super::ResourceType::Topic, name);
        for (pi, &p) in t.partition_indexes.iter().enumerate() {
            match &meta {
                _ if !readable => row.push(Err(KafkaError::TopicAuthorizationFailed)),
                Some(m) if (0..m.partitions).contains(&p) => {
                    if let Some(e) = super::check_leader(shard, m, p, -1) {
                        row.push(Err(e));
                    } else {
                        by_owner
                            .entry(shard.owner(name, p))
                            .or_default()
                            .push(((ti, pi), (name.to_string(), p)));
                        row.push(Err(KafkaError::NotLeaderOrFollower));
                    }
                }
                _ => row.push(Err(KafkaError::UnknownTopicOrPartition)),
            }
        }
        results.push(row);
    }
    for ((ti, pi), a) in scatter(shard, by_owner, DescribeProducers).await {
        results[ti][pi] = a;
    }
    let topics = req
        .topics
        .iter()
        .zip(results)
        .map(|(t, row)| {
            let partitions = t
                .partition_indexes
                .iter()
                .zip(row)
                .map(|(&p, r)| {
                    let out = PartitionResponse::default().with_partition_index(p);
                    match r {
                        Ok(rows) => out.with_active_producers(
                            rows.into_iter()
                                .map(|r| {
                                    ProducerState::default()
                                        .with_producer_id(ProducerId(r.producer_id))
                                        .with_producer_epoch(i32::from(r.producer_epoch))
                                        .with_last_sequence(r.last_sequence)
                                        .with_last_timestamp(r.last_timestamp)
                                        .with_coordinator_epoch(-1)
                                        .with_current_txn_start_offset(r.current_txn_start_offset)
                                })
                                .collect(),
                        ),
                        Err(e) => out
                            .with_error_code(e.code())
                            .with_error_message(Some(str_bytes(e.message()))),
                    }
                })
                .collect();
            TopicResponse::default()
                .with_name(t.name.clone())
                .with_partitions(partitions)
        })
        .collect();
    DescribeProducersResponse::default().with_topics(topics)
}
