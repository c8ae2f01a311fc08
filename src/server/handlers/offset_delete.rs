//! OffsetDelete: removes committed offsets of partitions the group no longer consumes.

use std::rc::Rc;

use kafka_protocol::messages::offset_delete_response::{
    OffsetDeleteResponsePartition, OffsetDeleteResponseTopic,
};
use kafka_protocol::messages::{OffsetDeleteRequest, OffsetDeleteResponse};

use super::group_call;
use crate::group::state;
use crate::router::{GroupAnswer, GroupCall};
use crate::shard::Shard;

pub async fn handle(shard: &Rc<Shard>, req: OffsetDeleteRequest) -> OffsetDeleteResponse {
    let group = req.group_id.0.as_str().to_string();
    let partitions: Vec<(String, i32)> = req
        .topics
        .iter()
        .flat_map(|t| {
            t.partitions
                .iter()
                .map(move |p| (t.name.0.as_str().to_string(), p.partition_index))
        })
        .collect();
    let n = partitions.len();
    let call = GroupCall::DeleteOffsets {
        group: group.clone(),
        partitions,
    };
    let (code, codes) = match group_call(shard, "OffsetDelete", &group, call).await {
        Ok(GroupAnswer::DeleteOffsets(code, codes)) if codes.len() == n => (code, codes),
        _ => (state::COORDINATOR_NOT_AVAILABLE, vec![state::NONE; n]),
    };
    if code != state::NONE {
        return OffsetDeleteResponse::default().with_error_code(code);
    }
    let mut codes = codes.into_iter();
    let topics = req
        .topics
        .into_iter()
        .map(|t| {
            let partitions = t
                .partitions
                .iter()
                .map(|p| {
                    OffsetDeleteResponsePartition::default()
                        .with_partition_index(p.partition_index)
                        .with_error_code(codes.next().unwrap_or(state::NONE))
                })
                .collect();
            OffsetDeleteResponseTopic::default()
                .with_name(t.name)
                .with_partitions(partitions)
        })
        .collect();
    OffsetDeleteResponse::default().with_topics(topics)
}
