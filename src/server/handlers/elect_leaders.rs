//! ElectLeaders (API 43, KIP-460): a preferred (0) or unclean (1) leader election of the
//! partitions asked for (a null list: every partition, preferred), applied by the controller
//! (forwarded to the active controller in a cluster). Each partition is answered on its own:
//! ELECTION_NOT_NEEDED, PREFERRED_LEADER_NOT_AVAILABLE, ELIGIBLE_LEADERS_NOT_AVAILABLE,
//! UNKNOWN_TOPIC_OR_PARTITION.

use kafka_protocol::messages::elect_leaders_response::{PartitionResult, ReplicaElectionResult};
use kafka_protocol::messages::{ElectLeadersRequest, ElectLeadersResponse};

use super::{RequestContext, str_bytes, topic_name};
use crate::error::KafkaError;
use crate::placement::CONTROLLER_SHARD;
use crate::shard::calls::ElectLeaders;

pub async fn handle(ctx: &RequestContext, req: ElectLeadersRequest) -> ElectLeadersResponse {
    // Alter on the cluster, as Kafka.
    if let Some(e) = ctx.cluster_refused(super::Operation::Alter) {
        return ElectLeadersResponse::default().with_error_code(e.code());
    }
    let unclean = match req.election_type {
        0 => false,
        1 => true,
        other => {
            let e = KafkaError::InvalidRequest(format!("unknown election type {other}"));
            return ElectLeadersResponse::default().with_error_code(e.code());
        }
    };
    let partitions = req.topic_partitions.as_ref().map(|ts| {
        ts.iter()
            .flat_map(|t| {
                t.partitions
                    .iter()
                    .map(|p| (t.topic.0.as_str().to_string(), *p))
            })
            .collect::<Vec<_>>()
    });
    let answers = match ctx
        .shard
        .call(
            CONTROLLER_SHARD,
            ElectLeaders {
                unclean,
                partitions,
                context: ctx.forwarded(),
            },
        )
        .await
    {
        Ok(a) => a,
        Err(_) => {
            return ElectLeadersResponse::default()
                .with_error_code(KafkaError::NotController.code());
        }
    };
    let mut results: Vec<ReplicaElectionResult> = Vec::new();
    for ((topic, partition), r) in answers {
        let mut p = PartitionResult::default().with_partition_id(partition);
        if let Err(e) = r {
            p = p
                .with_error_code(e.code())
                .with_error_message(Some(str_bytes(e.message())));
        }
        match results.last_mut() {
            Some(t) if t.topic.0.as_str() == topic => t.partition_result.push(p),
            _ => results.push(
                ReplicaElectionResult::default()
                    .with_topic(topic_name(&topic))
                    .with_partition_result(vec![p]),
            ),
        }
    }
    ElectLeadersResponse::default().with_replica_election_results(results)
}
