//! OffsetCommit: validated against the group's generation on its coordinator shard and
//! answered once the commit is on disk.

use super::RequestContext;
use crate::error::ErrorCode;

use kafka_protocol::messages::offset_commit_response::{
    OffsetCommitResponsePartition, OffsetCommitResponseTopic,
};
use kafka_protocol::messages::{OffsetCommitRequest, OffsetCommitResponse};

use super::{group_call, opt_string};
use crate::clock::now_ms;
use crate::group::offsets::CommittedOffset;
use crate::shard::calls;

/// Kafka's offset.metadata.max.bytes.
const OFFSET_METADATA_BYTES_MAX: usize = 4096;

pub async fn handle(ctx: &RequestContext, req: OffsetCommitRequest) -> OffsetCommitResponse {
    let shard = &ctx.shard;
    let version = ctx.api_version;
    let group = req.group_id.0.as_str().to_string();
    let now = now_ms();
    let expire = (version <= 4 && req.retention_time_ms >= 0)
        .then(|| now.saturating_add(req.retention_time_ms));
    // codes[topic][partition]; entries to commit remember their slot.
    let mut codes: Vec<Vec<ErrorCode>> = Vec::with_capacity(req.topics.len());
    let mut entries = Vec::new();
    let mut slots = Vec::new();
    // Read on the group (else every partition answers GROUP_AUTHORIZATION_FAILED), then Read
    // on each topic (TOPIC_AUTHORIZATION_FAILED), as Kafka.
    use super::{Operation, ResourceType};
    let group_refused = !ctx.authorize(Operation::Read, ResourceType::Group, &group);
    for (ti, t) in req.topics.iter().enumerate() {
        let name = t.name.0.as_str();
        let meta = shard.topic(name);
        let topic_refused =
            !group_refused && !ctx.authorize(Operation::Read, ResourceType::Topic, name);
        let mut row = Vec::with_capacity(t.partitions.len());
        for (pi, p) in t.partitions.iter().enumerate() {
            let metadata = p
                .committed_metadata
                .as_ref()
                .map(|m| m.as_str().to_string());
            if group_refused {
                row.push(ErrorCode::GROUP_AUTHORIZATION_FAILED);
            } else if topic_refused {
                row.push(ErrorCode::TOPIC_AUTHORIZATION_FAILED);
            } else if group.is_empty() {
                row.push(ErrorCode::INVALID_GROUP_ID);
            } else if let Some(code) =
                entry_error(meta.as_ref(), p.partition_index, metadata.as_deref())
            {
                row.push(code);
            } else {
                row.push(ErrorCode::NONE);
                slots.push((ti, pi));
                entries.push((
                    name.to_string(),
                    p.partition_index,
                    CommittedOffset {
                        offset: p.committed_offset,
                        leader_epoch: if version >= 6 {
                            p.committed_leader_epoch
                        } else {
                            -1
                        },
                        metadata,
                        commit_timestamp_ms: now,
                        expire_timestamp_ms: expire,
                    },
                ));
            }
        }
        codes.push(row);
    }
    if !entries.is_empty() {
        let n = entries.len();
        let call = calls::CommitOffsets {
            group: group.clone(),
            generation_id: req.generation_id_or_member_epoch,
            member_id: req.member_id.as_str().to_string(),
            group_instance_id: opt_string(&req.group_instance_id),
            entries,
            api_version: version,
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
            let partitions = t
                .partitions
                .iter()
                .zip(row)
                .map(|(p, code)| {
                    OffsetCommitResponsePartition::default()
                        .with_partition_index(p.partition_index)
                        .with_error_code(code.code())
                })
                .collect();
            OffsetCommitResponseTopic::default()
                .with_name(t.name.clone())
                .with_partitions(partitions)
        })
        .collect();
    OffsetCommitResponse::default().with_topics(topics)
}

/// Why one committed offset (OffsetCommit, TxnOffsetCommit) is refused before its group sees
/// it: a partition the topic does not have, or metadata over the limit.
pub(super) fn entry_error(
    meta: Option<&crate::storage::catalog::TopicMeta>,
    partition: i32,
    metadata: Option<&str>,
) -> Option<ErrorCode> {
    if !meta.is_some_and(|m| (0..m.partitions).contains(&partition)) {
        Some(ErrorCode::UNKNOWN_TOPIC_OR_PARTITION)
    } else if metadata.is_some_and(|m| m.len() > OFFSET_METADATA_BYTES_MAX) {
        Some(ErrorCode::OFFSET_METADATA_TOO_LARGE)
    } else {
        None
    }
}
