//! DescribeGroups: each group described by its coordinator shard.

use super::RequestContext;
use crate::error::ErrorCode;

use kafka_protocol::messages::describe_groups_response::{DescribedGroup, DescribedGroupMember};
use kafka_protocol::messages::{DescribeGroupsRequest, DescribeGroupsResponse};

use super::{group_call, str_bytes};
use crate::shard::calls;

pub async fn handle(ctx: &RequestContext, req: DescribeGroupsRequest) -> DescribeGroupsResponse {
    let version = ctx.api_version;
    let mut groups = Vec::with_capacity(req.groups.len());
    for g in req.groups {
        let id = g.0.as_str().to_string();
        let out = DescribedGroup::default().with_group_id(g);
        // Describe on the group, as Kafka.
        if !ctx.authorize(super::Operation::Describe, super::ResourceType::Group, &id) {
            groups.push(out.with_error_code(ErrorCode::GROUP_AUTHORIZATION_FAILED.code()));
            continue;
        }
        let out = if version >= 3 && req.include_authorized_operations {
            out.with_authorized_operations(
                ctx.authorized_operations(super::ResourceType::Group, &id),
            )
        } else {
            out
        };
        let answer = group_call(ctx, &id, calls::DescribeGroup { group: id.clone() }).await;
        groups.push(match answer {
            // Kafka 4.x: a consumer group is described by ConsumerGroupDescribe; v6+ say so,
            // older versions see a Dead group with no members.
            Ok(None) if version >= 6 => out
                .with_error_code(ErrorCode::GROUP_ID_NOT_FOUND.code())
                .with_error_message(Some(str_bytes(format!(
                    "Group {id} is not a classic group."
                ))))
                .with_group_state(str_bytes("Dead".into())),
            Ok(None) => out
                .with_group_state(str_bytes("Dead".into()))
                .with_protocol_type(str_bytes(String::new()))
                .with_protocol_data(str_bytes(String::new())),
            Ok(Some(d)) => {
                let members = d
                    .members
                    .into_iter()
                    .map(|m| {
                        let out = DescribedGroupMember::default()
                            .with_member_id(str_bytes(m.member_id))
                            .with_client_id(str_bytes(m.client_id))
                            .with_client_host(str_bytes(m.client_host))
                            .with_member_metadata(m.metadata)
                            .with_member_assignment(m.assignment);
                        if version >= 4 {
                            out.with_group_instance_id(m.group_instance_id.map(str_bytes))
                        } else {
                            out
                        }
                    })
                    .collect();
                out.with_group_state(str_bytes(d.state.to_string()))
                    .with_protocol_type(str_bytes(d.protocol_type))
                    .with_protocol_data(str_bytes(d.protocol_name))
                    .with_members(members)
            }
            _ => out.with_error_code(ErrorCode::COORDINATOR_NOT_AVAILABLE.code()),
        });
    }
    DescribeGroupsResponse::default().with_groups(groups)
}
