//! AddPartitionsToTxn (v0-v3, the client's form): adds partitions to the producer's open
//! transaction (starting one if none is open), durable in the transaction log before the
//! answer, so the coordinator knows every partition it must write a marker to.
//!
//! A partition that does not exist is UNKNOWN_TOPIC_OR_PARTITION and the others of the request
//! OPERATION_NOT_ATTEMPTED, as in Kafka; otherwise every partition gets the coordinator's one
//! code (PRODUCER_FENCED is INVALID_PRODUCER_EPOCH before v2).

use kafka_protocol::messages::add_partitions_to_txn_response::{
    AddPartitionsToTxnPartitionResult, AddPartitionsToTxnTopicResult,
};
use kafka_protocol::messages::{AddPartitionsToTxnRequest, AddPartitionsToTxnResponse};

use super::RequestContext;
use super::init_producer_id::fenced_for;
use crate::error::ErrorCode;
use crate::shard::calls::TxnAddPartitions;

pub async fn handle(
    ctx: &RequestContext,
    req: AddPartitionsToTxnRequest,
) -> AddPartitionsToTxnResponse {
    let id = req.v3_and_below_transactional_id.0.as_str().to_string();
    let mut wanted = Vec::new();
    let mut unknown = Vec::new();
    for t in &req.v3_and_below_topics {
        let name = t.name.0.as_str();
        let count = ctx
            .shard
            .topic(name)
            .filter(|_| !name.starts_with("__"))
            .map_or(0, |m| m.partitions);
        for &p in &t.partitions {
            if (0..count).contains(&p) {
                wanted.push((name.to_string(), p));
            } else {
                unknown.push((name.to_string(), p));
            }
        }
    }
    let code = if !unknown.is_empty() {
        None
    } else if ctx.shard.cluster().is_some() {
        Some(ErrorCode::UNSUPPORTED_VERSION)
    } else {
        let call = TxnAddPartitions {
            transactional_id: id.clone(),
            producer_id: req.v3_and_below_producer_id.0,
            producer_epoch: req.v3_and_below_producer_epoch,
            partitions: wanted,
        };
        Some(fenced_for(
            super::txn_call(ctx, &id, call)
                .await
                .unwrap_or(ErrorCode::COORDINATOR_NOT_AVAILABLE),
            ctx.api_version,
            2,
        ))
    };
    let results = req
        .v3_and_below_topics
        .iter()
        .map(|t| {
            let name = t.name.0.as_str();
            AddPartitionsToTxnTopicResult::default()
                .with_name(t.name.clone())
                .with_results_by_partition(
                    t.partitions
                        .iter()
                        .map(|&p| {
                            let c = code.unwrap_or_else(|| {
                                if unknown.iter().any(|(u, up)| u == name && *up == p) {
                                    ErrorCode::UNKNOWN_TOPIC_OR_PARTITION
                                } else {
                                    ErrorCode::OPERATION_NOT_ATTEMPTED
                                }
                            });
                            AddPartitionsToTxnPartitionResult::default()
                                .with_partition_index(p)
                                .with_partition_error_code(c.code())
                        })
                        .collect(),
                )
        })
        .collect();
    AddPartitionsToTxnResponse::default().with_results_by_topic_v3_and_below(results)
}
