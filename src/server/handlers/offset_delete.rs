//! OffsetDelete: removes committed offsets of partitions the group no longer consumes.

use super::RequestContext;
use crate::error::ErrorCode;

use kafka_protocol::messages::offset_delete_response::{
    OffsetDeleteResponsePartition, OffsetDeleteResponseTopic,
};
use kafka_protocol::messages::{OffsetDeleteRequest, OffsetDeleteResponse};

use super::group_call;
use crate::shard::calls;

pub async fn handle(ctx: &RequestContext, req: OffsetDeleteRequest) -> OffsetDeleteResponse {
    let group = req.group_id.0.as_str().to_string();
    // Delete on the group, then Read on each topic (TOPIC_AUTHORIZATION_FAILED), as Kafka.
    use super::{Operation, ResourceType};
    if !ctx.authorize(Operation::Delete, ResourceType::Group, &group) {
        return OffsetDeleteResponse::default()
            .with_error_code(ErrorCode::GROUP_AUTHORIZATION_FAILED.code());
    }
    let readable: Vec<bool> = req
        .topics
        .iter()
        .map(|t| ctx.authorize(Operation::Read, ResourceType::Topic, t.name.0.as_str()))
        .collect();
    let partitions: Vec<(String, i32)> = req
        .topics
        .iter()
        .zip(&readable)
        .filter(|(_, ok)| **ok)
        .flat_map(|(t, _)| {
            t.partitions
                .iter()
                .map(move |p| (t.name.0.as_str().to_string(), p.partition_index))
        })
        .collect();
    let n = partitions.len();
    let call = calls::DeleteOffsets {
        group: group.clone(),
        partitions,
    };
    let (code, codes) = match group_call(ctx, &group, call).await {
        Ok((code, codes)) if codes.len() == n => (code, codes),
        Ok(_) => (ErrorCode::UNKNOWN_SERVER_ERROR, vec![ErrorCode::NONE; n]),
        Err(e) => (e.error_code(), vec![ErrorCode::NONE; n]),
    };
    if code != ErrorCode::NONE {
        return OffsetDeleteResponse::default().with_error_code(code.code());
    }
    let mut codes = codes.into_iter();
    let topics = req
        .topics
        .into_iter()
        .zip(readable)
        .map(|(t, readable)| {
            let partitions = t
                .partitions
                .iter()
                .map(|p| {
                    let code = if readable {
                        codes.next().unwrap_or(ErrorCode::NONE)
                    } else {
                        ErrorCode::TOPIC_AUTHORIZATION_FAILED
                    };
                    OffsetDeleteResponsePartition::default()
                        .with_partition_index(p.partition_index)
                        .with_error_code(code.code())
                })
                .collect();
            OffsetDeleteResponseTopic::default()
                .with_name(t.name)
                .with_partitions(partitions)
        })
        .collect();
    OffsetDeleteResponse::default().with_topics(topics)
}
