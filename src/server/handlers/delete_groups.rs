//! DeleteGroups: each empty group and its committed offsets are deleted by its coordinator.

use super::RequestContext;

use kafka_protocol::messages::delete_groups_response::DeletableGroupResult;
use kafka_protocol::messages::{DeleteGroupsRequest, DeleteGroupsResponse};

use super::group_call;
use crate::shard::calls;

pub async fn handle(ctx: &RequestContext, req: DeleteGroupsRequest) -> DeleteGroupsResponse {
    let mut results = Vec::with_capacity(req.groups_names.len());
    for g in req.groups_names {
        let id = g.0.as_str().to_string();
        // Delete on the group, as Kafka.
        let code = if !ctx.authorize(super::Operation::Delete, super::ResourceType::Group, &id) {
            crate::error::ErrorCode::GROUP_AUTHORIZATION_FAILED
        } else {
            match group_call(ctx, &id, calls::DeleteGroup { group: id.clone() }).await {
                Ok(code) => code,
                Err(e) => e.error_code(),
            }
        };
        results.push(
            DeletableGroupResult::default()
                .with_group_id(g)
                .with_error_code(code.code()),
        );
    }
    DeleteGroupsResponse::default().with_results(results)
}
