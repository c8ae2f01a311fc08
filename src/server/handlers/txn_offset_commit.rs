//! TxnOffsetCommit: a transactional producer commits a consumer group's offsets inside its
//! transaction (`sendOffsetsToTransaction`). The group's coordinator validates the member
//! (KIP-447, v3+: ILLEGAL_GENERATION, UNKNOWN_MEMBER_ID, FENCED_INSTANCE_ID), writes the offsets
//! as the producer's transactional batch to the group's `__consumer_offsets` partition and
//! stages them; the transaction's commit marker makes them the group's committed offsets, its
//! abort marker drops them (see `group::store`). Answered once on disk.
//!
//! First the transaction coordinator must say that the group's offsets partition is in the
//! producer's open transaction, in its epoch (AddOffsetsToTxn came first; KIP-890 part 1 for
//! offsets): else INVALID_TXN_STATE or INVALID_PRODUCER_EPOCH, and nothing is staged, so no
//! staged commit waits for a marker that will never come.

use kafka_protocol::messages::txn_offset_commit_response::{
    TxnOffsetCommitResponsePartition, TxnOffsetCommitResponseTopic,
};
use kafka_protocol::messages::{TxnOffsetCommitRequest, TxnOffsetCommitResponse};

use super::{RequestContext, group_call, opt_string};
use crate::clock::now_ms;
use crate::error::ErrorCode;
use crate::group::offsets::CommittedOffset;
use crate::shard::calls::TxnCommitOffsets;

pub async fn handle(ctx: &RequestContext, req: TxnOffsetCommitRequest) -> TxnOffsetCommitResponse {
    let shard = &ctx.shard;
    let version = ctx.api_version;
    let group = req.group_id.0.as_str().to_string();
    let now = now_ms();
    let mut codes: Vec<Vec<ErrorCode>> = Vec::with_capacity(req.topics.len());
    let mut entries = Vec::new();
    let mut slots = Vec::new();
    // Write on the transactional id, then Read on the group, then Read on each topic, each
    // refusal answered on every partition it covers, as Kafka.
    use super::{Operation, ResourceType};
    let refused = if !ctx.authorize(
        Operation::Write,
        ResourceType::TransactionalId,
        req.transactional_id.0.as_str(),
    ) {
        Some(ErrorCode::TRANSACTIONAL_ID_AUTHORIZATION_FAILED)
    } else if !ctx.authorize(Operation::Read, ResourceType::Group, &group) {
        Some(ErrorCode::GROUP_AUTHORIZATION_FAILED)
    } else {
        None
    };
    for (ti, t) in req.topics.iter().enumerate() {
        let name = t.name.0.as_str();
        let meta = shard.topic(name);
        let refused = refused.or_else(|| {
            (!ctx.authorize(Operation::Read, ResourceType::Topic, name))
                .then_some(ErrorCode::TOPIC_AUTHORIZATION_FAILED)
        });
        let mut row = Vec::with_capacity(t.partitions.len());
        for (pi, p) in t.partitions.iter().enumerate() {
            let metadata = p
                .committed_metadata
                .as_ref()
                .map(|m| m.as_str().to_string());
            if let Some(code) = refused {
                row.push(code);
            } else if group.is_empty() {
                row.push(ErrorCode::INVALID_GROUP_ID);
            } else if let Some(code) = super::offset_commit::entry_error(
                meta.as_ref(),
                p.partition_index,
                metadata.as_deref(),
            ) {
                row.push(code);
            } else {
                row.push(ErrorCode::NONE);
                slots.push((ti, pi));
                entries.push((
                    name.to_string(),
                    p.partition_index,
                    CommittedOffset {
                        offset: p.committed_offset,
                        leader_epoch: if version >= 2 {
                            p.committed_leader_epoch
                        } else {
                            -1
                        },
                        metadata,
                        commit_timestamp_ms: now,
                        expire_timestamp_ms: None,
                    },
                ));
            }
        }
        codes.push(row);
    }
    if !entries.is_empty() {
        let verified = verify(ctx, &req, &group).await;
        if !verified.is_none() {
            for (ti, pi) in slots.drain(..) {
                codes[ti][pi] = verified;
            }
            entries.clear();
        }
    }
    if !entries.is_empty() {
        let n = entries.len();
        let (generation_id, member_id, group_instance_id) = if version >= 3 {
            (
                req.generation_id,
                req.member_id.as_str().to_string(),
                opt_string(&req.group_instance_id),
            )
        } else {
            (-1, String::new(), None)
        };
        let call = TxnCommitOffsets {
            group: group.clone(),
            producer_id: req.producer_id.0,
            producer_epoch: req.producer_epoch,
            generation_id,
            member_id,
            group_instance_id,
            entries,
        };
        let answers = match group_call(ctx, &group, call).await {
            Ok(c) if c.len() == n => c,
            _ => vec![ErrorCode::COORDINATOR_NOT_AVAILABLE; n],
        };
        for ((ti, pi), code) in slots.into_iter().zip(answers) {
            codes[ti][pi] = code;
        }
    }
    let topics = req
        .topics
        .iter()
        .zip(codes)
        .map(|(t, row)| {
            TxnOffsetCommitResponseTopic::default()
                .with_name(t.name.clone())
                .with_partitions(
                    t.partitions
                        .iter()
                        .zip(row)
                        .map(|(p, code)| {
                            TxnOffsetCommitResponsePartition::default()
                                .with_partition_index(p.partition_index)
                                .with_error_code(code.code())
                        })
                        .collect(),
                )
        })
        .collect();
    TxnOffsetCommitResponse::default().with_topics(topics)
}

/// Whether the group's offsets partition is in the producer's open transaction.
async fn verify(ctx: &RequestContext, req: &TxnOffsetCommitRequest, group: &str) -> ErrorCode {
    let id = req.transactional_id.0.as_str().to_string();
    let p =
        crate::placement::offsets_partition(group, ctx.shard.config.offsets_topic_num_partitions);
    let partitions = vec![(crate::placement::OFFSETS_TOPIC.to_string(), p)];
    match super::txn_verify(ctx, &id, req.producer_id.0, req.producer_epoch, partitions).await {
        Ok(codes) => codes
            .first()
            .copied()
            .unwrap_or(ErrorCode::INVALID_TXN_STATE),
        Err(_) => ErrorCode::COORDINATOR_NOT_AVAILABLE,
    }
}
