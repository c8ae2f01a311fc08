//! DeleteGroups: each empty group and its committed offsets are deleted by its coordinator.

use std::rc::Rc;

use kafka_protocol::messages::delete_groups_response::DeletableGroupResult;
use kafka_protocol::messages::{DeleteGroupsRequest, DeleteGroupsResponse};

use super::group_call;
use crate::group::state;
use crate::router::{GroupAnswer, GroupCall};
use crate::shard::Shard;

pub async fn handle(shard: &Rc<Shard>, req: DeleteGroupsRequest) -> DeleteGroupsResponse {
    let mut results = Vec::with_capacity(req.groups_names.len());
    for g in req.groups_names {
        let id = g.0.as_str().to_string();
        let code = match group_call(
            shard,
            "DeleteGroups",
            &id,
            GroupCall::Delete { group: id.clone() },
        )
        .await
        {
            Ok(GroupAnswer::Delete(code)) => code,
            _ => state::COORDINATOR_NOT_AVAILABLE,
        };
        results.push(
            DeletableGroupResult::default()
                .with_group_id(g)
                .with_error_code(code),
        );
    }
    DeleteGroupsResponse::default().with_results(results)
}
