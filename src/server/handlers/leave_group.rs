//! LeaveGroup: one member (v0-v2) or a batch of members by id or instance id (v3+).

use super::RequestContext;
use crate::error::ErrorCode;

use kafka_protocol::messages::leave_group_response::MemberResponse;
use kafka_protocol::messages::{LeaveGroupRequest, LeaveGroupResponse};

use super::{group_call, opt_string, str_bytes};
use crate::group::state::{LeaveRequest, LeavingMember};
use crate::shard::calls;

pub async fn handle(ctx: &RequestContext, req: LeaveGroupRequest) -> LeaveGroupResponse {
    let version = ctx.api_version;
    let group = req.group_id.0.as_str().to_string();
    if !ctx.authorize(super::Operation::Read, super::ResourceType::Group, &group) {
        return LeaveGroupResponse::default()
            .with_error_code(ErrorCode::GROUP_AUTHORIZATION_FAILED.code());
    }
    let members = if version >= 3 {
        req.members
            .iter()
            .map(|m| LeavingMember {
                member_id: m.member_id.as_str().to_string(),
                group_instance_id: opt_string(&m.group_instance_id),
            })
            .collect()
    } else {
        vec![LeavingMember {
            member_id: req.member_id.as_str().to_string(),
            group_instance_id: None,
        }]
    };
    let leave = LeaveRequest { members };
    let r = match group_call(
        ctx,
        &group,
        calls::LeaveGroup {
            group: group.clone(),
            req: leave,
        },
    )
    .await
    {
        Ok(r) => r,
        _ => {
            return LeaveGroupResponse::default()
                .with_error_code(ErrorCode::COORDINATOR_NOT_AVAILABLE.code());
        }
    };
    if version < 3 {
        // One member: its error is the request's error.
        let code = if r.error != ErrorCode::NONE {
            r.error
        } else {
            r.members.first().map_or(ErrorCode::NONE, |m| m.error)
        };
        return LeaveGroupResponse::default().with_error_code(code.code());
    }
    let members = r
        .members
        .into_iter()
        .map(|m| {
            MemberResponse::default()
                .with_member_id(str_bytes(m.member_id))
                .with_group_instance_id(m.group_instance_id.map(str_bytes))
                .with_error_code(m.error.code())
        })
        .collect();
    LeaveGroupResponse::default()
        .with_error_code(r.error.code())
        .with_members(members)
}
