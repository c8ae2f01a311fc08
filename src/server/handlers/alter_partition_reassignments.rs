//! AlterPartitionReassignments (API 45, KIP-455): moves partitions to new replicas, or cancels
//! a move (a null replica list), applied by the controller (forwarded to the active
//! controller in a cluster). The answer says the reassignment started (or was cancelled), not
//! that it completed: ListPartitionReassignments shows it until then.

use kafka_protocol::messages::alter_partition_reassignments_response::{
    ReassignablePartitionResponse, ReassignableTopicResponse,
};
use kafka_protocol::messages::{
    AlterPartitionReassignmentsRequest, AlterPartitionReassignmentsResponse,
};

use super::{RequestContext, str_bytes};
use crate::error::KafkaError;
use crate::placement::CONTROLLER_SHARD;
use crate::shard::calls::AlterReassignments;

pub async fn handle(
    ctx: &RequestContext,
    req: AlterPartitionReassignmentsRequest,
) -> AlterPartitionReassignmentsResponse {
    let items: Vec<(String, i32, Option<Vec<i32>>)> = req
        .topics
        .iter()
        .flat_map(|t| {
            t.partitions.iter().map(|p| {
                (
                    t.name.0.as_str().to_string(),
                    p.partition_index,
                    p.replicas.as_ref().map(|r| r.iter().map(|b| b.0).collect()),
                )
            })
        })
        .collect();
    let n = items.len();
    let mut answers = match ctx
        .shard
        .call(
            CONTROLLER_SHARD,
            AlterReassignments {
                items,
                context: ctx.forwarded(),
            },
        )
        .await
    {
        Ok(r) if r.len() == n => r,
        _ => vec![Err(KafkaError::NotController); n],
    }
    .into_iter();
    let responses = req
        .topics
        .iter()
        .map(|t| {
            let partitions = t
                .partitions
                .iter()
                .map(|p| {
                    let out = ReassignablePartitionResponse::default()
                        .with_partition_index(p.partition_index);
                    match answers.next().unwrap_or(Err(KafkaError::NotController)) {
                        Ok(()) => out,
                        Err(e) => out
                            .with_error_code(e.code())
                            .with_error_message(Some(str_bytes(e.message()))),
                    }
                })
                .collect();
            ReassignableTopicResponse::default()
                .with_name(t.name.clone())
                .with_partitions(partitions)
        })
        .collect();
    AlterPartitionReassignmentsResponse::default().with_responses(responses)
}
