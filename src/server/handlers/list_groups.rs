//! ListGroups: every shard lists the groups it coordinates; the answers are merged.

use super::RequestContext;
use crate::error::ErrorCode;

use kafka_protocol::messages::list_groups_response::ListedGroup;
use kafka_protocol::messages::{GroupId, ListGroupsRequest, ListGroupsResponse};

use super::str_bytes;
use crate::shard::calls::ListGroups;

pub async fn handle(ctx: &RequestContext, req: ListGroupsRequest) -> ListGroupsResponse {
    let shard = &ctx.shard;
    let version = ctx.api_version;
    let calls = (0..shard.shards()).map(|to| shard.call(to, ListGroups));
    let filter: Vec<String> = req
        .states_filter
        .iter()
        .map(|s| s.as_str().to_lowercase())
        .collect();
    // v5: only groups of these types ("classic", "consumer").
    let types: Vec<String> = req
        .types_filter
        .iter()
        .map(|s| s.as_str().to_lowercase())
        .collect();
    // Describe on the cluster lists every group; else each group needs Describe, as Kafka.
    let all = ctx.authorize(
        super::Operation::Describe,
        super::ResourceType::Cluster,
        super::CLUSTER,
    );
    let mut groups = Vec::new();
    for reply in futures_util::future::join_all(calls).await {
        let Ok(listed) = reply else {
            return ListGroupsResponse::default()
                .with_error_code(ErrorCode::COORDINATOR_NOT_AVAILABLE.code());
        };
        for (id, protocol_type, group_state, group_type) in listed {
            if !filter.is_empty() && !filter.contains(&group_state.to_lowercase()) {
                continue;
            }
            if !types.is_empty() && !types.iter().any(|t| t == group_type) {
                continue;
            }
            if !all && !ctx.authorize(super::Operation::Describe, super::ResourceType::Group, &id) {
                continue;
            }
            let g = ListedGroup::default()
                .with_group_id(GroupId(str_bytes(id)))
                .with_protocol_type(str_bytes(protocol_type));
            let g = if version >= 4 {
                g.with_group_state(str_bytes(group_state.to_string()))
            } else {
                g
            };
            groups.push(if version >= 5 {
                g.with_group_type(str_bytes(group_type.to_string()))
            } else {
                g
            });
        }
    }
    ListGroupsResponse::default().with_groups(groups)
}
