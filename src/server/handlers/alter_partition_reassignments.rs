//! AlterPartitionReassignments (API 45, KIP-455): moves partitions to new replicas, or cancels
//! a move (a null replica list), applied by the controller (forwarded to the active
//! controller in a cluster). The answer says the reassignment started (or was cancelled), not
//! that it completed: ListPartitionReassignments shows it until then. v1 (KIP-860) can forbid
//! moves that change a partition's replication factor (INVALID_REPLICATION_FACTOR).

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
    // Alter on the cluster, as Kafka.
    if let Some(e) = ctx.cluster_refused(super::Operation::Alter) {
        return AlterPartitionReassignmentsResponse::default()
            .with_error_code(e.code())
            .with_error_message(Some(super::str_bytes(e.message())));
    }
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
    // KIP-860 (v1): with `allow_replication_factor_change` false, a move that changes a
    // partition's replica count is refused and the others go ahead.
    let refused: Vec<Option<KafkaError>> = items
        .iter()
        .map(|(topic, p, target)| {
            let target = target.as_ref()?;
            if ctx.api_version < 1 || req.allow_replication_factor_change {
                return None;
            }
            let meta = ctx.shard.topic(topic)?;
            // A one-node broker keeps one replica of each partition.
            let current = match meta.partition(*p) {
                Some(a) => a.replicas.len(),
                None if ctx.shard.cluster().is_none() && (0..meta.partitions).contains(p) => 1,
                None => return None,
            };
            (current != target.len()).then(|| {
                KafkaError::InvalidReplicationFactor(format!(
                    "the replication factor of {topic}-{p} would change from {current} to {}, but allowReplicationFactorChange is false",
                    target.len()
                ))
            })
        })
        .collect();
    let (items, slots): (Vec<_>, Vec<usize>) = items
        .into_iter()
        .enumerate()
        .filter(|(i, _)| refused[*i].is_none())
        .map(|(i, item)| (item, i))
        .unzip();
    let n = items.len();
    let forwarded = match ctx
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
    };
    let mut all: Vec<Result<(), KafkaError>> =
        refused.into_iter().map(|r| r.map_or(Ok(()), Err)).collect();
    for (slot, answer) in slots.into_iter().zip(forwarded) {
        all[slot] = answer;
    }
    let mut answers = all.into_iter();
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
    AlterPartitionReassignmentsResponse::default()
        .with_allow_replication_factor_change(req.allow_replication_factor_change)
        .with_responses(responses)
}
