//! AddPartitionsToTxn: adds partitions to the producer's open transaction (starting one if
//! none is open), durable in the transaction log before the answer, so the coordinator knows
//! every partition it must write a marker to. v0-v3 is the client's form; v4 is the
//! brokers' (KIP-890), several transactions at once, each either added or, with
//! `verify_only`, checked: a partition leader in a cluster asks the coordinator whether a
//! transactional produce's partitions are in the producer's open transaction.
//!
//! A partition that does not exist is UNKNOWN_TOPIC_OR_PARTITION and the others of the request
//! OPERATION_NOT_ATTEMPTED, as in Kafka; otherwise every partition gets the coordinator's one
//! code (PRODUCER_FENCED is INVALID_PRODUCER_EPOCH before v2).

use kafka_protocol::messages::add_partitions_to_txn_request::AddPartitionsToTxnTopic;
use kafka_protocol::messages::add_partitions_to_txn_response::{
    AddPartitionsToTxnPartitionResult, AddPartitionsToTxnResult, AddPartitionsToTxnTopicResult,
};
use kafka_protocol::messages::{AddPartitionsToTxnRequest, AddPartitionsToTxnResponse};

use super::RequestContext;
use super::init_producer_id::fenced_for;
use crate::error::ErrorCode;
use crate::shard::calls::{TxnAddPartitions, TxnVerify};

pub async fn handle(
    ctx: &RequestContext,
    req: AddPartitionsToTxnRequest,
) -> AddPartitionsToTxnResponse {
    use super::{CLUSTER, Operation, ResourceType};
    if ctx.api_version >= 4
        && !ctx.authorize(Operation::ClusterAction, ResourceType::Cluster, CLUSTER)
    {
        // Brokers' own request: ClusterAction on the cluster, as Kafka.
        return AddPartitionsToTxnResponse::default()
            .with_error_code(ErrorCode::CLUSTER_AUTHORIZATION_FAILED.code());
    }
    if ctx.api_version >= 4 {
        // The broker's form (KIP-890): several transactions, each added to or, with
        // `verify_only`, checked against (a partition leader verifying a transactional
        // produce).
        let mut results = Vec::with_capacity(req.transactions.len());
        for t in &req.transactions {
            let id = t.transactional_id.0.as_str();
            let topics = if t.verify_only {
                verify(ctx, id, t.producer_id.0, t.producer_epoch, &t.topics).await
            } else {
                add(ctx, id, t.producer_id.0, t.producer_epoch, &t.topics).await
            };
            results.push(
                AddPartitionsToTxnResult::default()
                    .with_transactional_id(t.transactional_id.clone())
                    .with_topic_results(topics),
            );
        }
        return AddPartitionsToTxnResponse::default().with_results_by_transaction(results);
    }
    // A client's: Write on the transactional id (every partition answers
    // TRANSACTIONAL_ID_AUTHORIZATION_FAILED without it), then Write on each topic (the others
    // answer OPERATION_NOT_ATTEMPTED), as Kafka.
    let id = req.v3_and_below_transactional_id.0.as_str();
    if !ctx.authorize(Operation::Write, ResourceType::TransactionalId, id) {
        let topics = results(&req.v3_and_below_topics, |_, _| {
            ErrorCode::TRANSACTIONAL_ID_AUTHORIZATION_FAILED
        });
        return AddPartitionsToTxnResponse::default().with_results_by_topic_v3_and_below(topics);
    }
    let refused: Vec<&str> = req
        .v3_and_below_topics
        .iter()
        .map(|t| t.name.0.as_str())
        .filter(|t| !ctx.authorize(Operation::Write, ResourceType::Topic, t))
        .collect();
    if !refused.is_empty() {
        let topics = results(&req.v3_and_below_topics, |name, _| {
            if refused.contains(&name) {
                ErrorCode::TOPIC_AUTHORIZATION_FAILED
            } else {
                ErrorCode::OPERATION_NOT_ATTEMPTED
            }
        });
        return AddPartitionsToTxnResponse::default().with_results_by_topic_v3_and_below(topics);
    }
    let topics = add(
        ctx,
        req.v3_and_below_transactional_id.0.as_str(),
        req.v3_and_below_producer_id.0,
        req.v3_and_below_producer_epoch,
        &req.v3_and_below_topics,
    )
    .await;
    AddPartitionsToTxnResponse::default().with_results_by_topic_v3_and_below(topics)
}

/// The coordinator's answer to a verification: NONE for each partition the producer's open
/// transaction holds (see `txn::state::verify`).
async fn verify(
    ctx: &RequestContext,
    id: &str,
    producer_id: i64,
    producer_epoch: i16,
    topics: &[AddPartitionsToTxnTopic],
) -> Vec<AddPartitionsToTxnTopicResult> {
    let asked: Vec<(String, i32)> = topics
        .iter()
        .flat_map(|t| t.partitions.iter().map(|p| (t.name.0.to_string(), *p)))
        .collect();
    let n = asked.len();
    let call = TxnVerify {
        transactional_id: id.to_string(),
        producer_id,
        producer_epoch,
        partitions: asked,
    };
    let codes = match super::txn_call(ctx, id, call).await {
        Ok(c) if c.len() == n => c,
        Ok(_) => vec![ErrorCode::COORDINATOR_NOT_AVAILABLE; n],
        Err(code) => vec![code; n],
    };
    let mut codes = codes.into_iter();
    results(topics, |_, _| {
        codes.next().unwrap_or(ErrorCode::COORDINATOR_NOT_AVAILABLE)
    })
}

/// Adds the partitions to the producer's open transaction (starting one).
async fn add(
    ctx: &RequestContext,
    id: &str,
    producer_id: i64,
    producer_epoch: i16,
    topics: &[AddPartitionsToTxnTopic],
) -> Vec<AddPartitionsToTxnTopicResult> {
    let mut wanted = Vec::new();
    let mut unknown = Vec::new();
    for t in topics {
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
    } else {
        let call = TxnAddPartitions {
            transactional_id: id.to_string(),
            producer_id,
            producer_epoch,
            partitions: wanted,
        };
        Some(fenced_for(
            super::txn_call(ctx, id, call)
                .await
                .unwrap_or_else(|code| code),
            ctx.api_version,
            2,
        ))
    };
    results(topics, |name, p| {
        code.unwrap_or_else(|| {
            if unknown.iter().any(|(u, up)| u == name && *up == p) {
                ErrorCode::UNKNOWN_TOPIC_OR_PARTITION
            } else {
                ErrorCode::OPERATION_NOT_ATTEMPTED
            }
        })
    })
}

/// One result per asked partition, in the request's order, with `code(topic, partition)`.
fn results(
    topics: &[AddPartitionsToTxnTopic],
    mut code: impl FnMut(&str, i32) -> ErrorCode,
) -> Vec<AddPartitionsToTxnTopicResult> {
    topics
        .iter()
        .map(|t| {
            let name = t.name.0.as_str();
            AddPartitionsToTxnTopicResult::default()
                .with_name(t.name.clone())
                .with_results_by_partition(
                    t.partitions
                        .iter()
                        .map(|&p| {
                            AddPartitionsToTxnPartitionResult::default()
                                .with_partition_index(p)
                                .with_partition_error_code(code(name, p).code())
                        })
                        .collect(),
                )
        })
        .collect()
}
