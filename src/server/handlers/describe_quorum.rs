//! DescribeQuorum (API 55): the metadata quorum as its leader (the active controller) sees
//! it, as `kafka-metadata-quorum describe --status` shows it: the leader, its epoch (the Raft
//! term), the high watermark (the commit index) and each voter's log end. Any broker answers;
//! it asks the active controller.

use super::RequestContext;

use kafka_protocol::messages::describe_quorum_response::{PartitionData, ReplicaState, TopicData};
use kafka_protocol::messages::{BrokerId, DescribeQuorumRequest, DescribeQuorumResponse};

use super::{str_bytes, topic_name};
use crate::error::KafkaError;
use crate::placement::CONTROLLER_SHARD;
use crate::shard::calls::QuorumStatus;
use crate::storage::metadata::store::METADATA_TOPIC;

pub async fn handle(ctx: &RequestContext, req: DescribeQuorumRequest) -> DescribeQuorumResponse {
    // Describe on the cluster, as Kafka.
    if let Some(e) = ctx.cluster_refused(super::Operation::Describe) {
        return DescribeQuorumResponse::default().with_error_code(e.code());
    }
    let shard = &ctx.shard;
    let asked_for_metadata = req.topics.iter().any(|t| {
        t.topic_name.0.as_str() == METADATA_TOPIC
            && t.partitions.iter().any(|p| p.partition_index == 0)
    });
    if !asked_for_metadata {
        return DescribeQuorumResponse::default()
            .with_error_code(KafkaError::InvalidRequest(String::new()).code())
            .with_error_message(Some(str_bytes(format!(
                "only partition 0 of {METADATA_TOPIC} has a quorum"
            ))));
    }
    let report = match shard.call(CONTROLLER_SHARD, QuorumStatus).await {
        Ok(Ok(r)) => r,
        Ok(Err(e)) => {
            return DescribeQuorumResponse::default()
                .with_error_code(e.code())
                .with_error_message(Some(str_bytes(e.message())));
        }
        Err(_) => {
            return DescribeQuorumResponse::default()
                .with_error_code(KafkaError::BrokerNotAvailable("stopping").code());
        }
    };
    let voters = report
        .voters
        .iter()
        .map(|v| {
            ReplicaState::default()
                .with_replica_id(BrokerId(v.node))
                .with_log_end_offset(i64::try_from(v.matched).unwrap_or(i64::MAX))
                .with_last_fetch_timestamp(-1)
                .with_last_caught_up_timestamp(-1)
        })
        .collect();
    let partition = PartitionData::default()
        .with_partition_index(0)
        .with_leader_id(BrokerId(report.leader))
        .with_leader_epoch(i32::try_from(report.term).unwrap_or(i32::MAX))
        .with_high_watermark(i64::try_from(report.commit).unwrap_or(i64::MAX))
        .with_current_voters(voters);
    DescribeQuorumResponse::default().with_topics(vec![
        TopicData::default()
            .with_topic_name(topic_name(METADATA_TOPIC))
            .with_partitions(vec![partition]),
    ])
}
