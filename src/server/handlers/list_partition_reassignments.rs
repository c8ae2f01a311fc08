//! ListPartitionReassignments (API 46, KIP-455): the reassignments in progress (replicas,
//! adding, removing), of the topics and partitions asked for or of all. Answered from this
//! node's applied metadata, which every broker has.

use kafka_protocol::messages::list_partition_reassignments_response::{
    OngoingPartitionReassignment, OngoingTopicReassignment,
};
use kafka_protocol::messages::{
    BrokerId, ListPartitionReassignmentsRequest, ListPartitionReassignmentsResponse,
};

use super::{RequestContext, topic_name};
use crate::error::KafkaError;
use crate::placement::CONTROLLER_SHARD;
use crate::shard::calls::ListReassignments;

pub async fn handle(
    ctx: &RequestContext,
    req: ListPartitionReassignmentsRequest,
) -> ListPartitionReassignmentsResponse {
    // Describe on the cluster, as Kafka.
    if let Some(e) = ctx.cluster_refused(super::Operation::Describe) {
        return ListPartitionReassignmentsResponse::default()
            .with_error_code(e.code())
            .with_error_message(Some(super::str_bytes(e.message())));
    }
    let wanted = req.topics.as_ref().map(|ts| {
        ts.iter()
            .map(|t| (t.name.0.as_str().to_string(), t.partition_indexes.clone()))
            .collect::<Vec<_>>()
    });
    let Ok(ongoing) = ctx
        .shard
        .call(CONTROLLER_SHARD, ListReassignments(wanted))
        .await
    else {
        let e = KafkaError::NotController;
        return ListPartitionReassignmentsResponse::default().with_error_code(e.code());
    };
    let mut topics: Vec<OngoingTopicReassignment> = Vec::new();
    for o in ongoing {
        let brokers = |v: &[i32]| v.iter().map(|b| BrokerId(*b)).collect::<Vec<_>>();
        let p = OngoingPartitionReassignment::default()
            .with_partition_index(o.partition)
            .with_replicas(brokers(&o.replicas))
            .with_adding_replicas(brokers(&o.adding))
            .with_removing_replicas(brokers(&o.removing));
        match topics.last_mut() {
            Some(t) if t.name.0.as_str() == o.topic => t.partitions.push(p),
            _ => topics.push(
                OngoingTopicReassignment::default()
                    .with_name(topic_name(&o.topic))
                    .with_partitions(vec![p]),
            ),
        }
    }
    ListPartitionReassignmentsResponse::default().with_topics(topics)
}
