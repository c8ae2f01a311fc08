//! LeaveGroup: one member (v0-v2) or a batch of members by id or instance id (v3+).

use std::rc::Rc;

use kafka_protocol::messages::leave_group_response::MemberResponse;
use kafka_protocol::messages::{LeaveGroupRequest, LeaveGroupResponse};

use super::{group_call, opt_string, str_bytes};
use crate::group::state::{self, LeaveRequest, LeavingMember};
use crate::router::{GroupAnswer, GroupCall};
use crate::shard::Shard;

pub async fn handle(shard: &Rc<Shard>, req: LeaveGroupRequest, version: i16) -> LeaveGroupResponse {
    let group = req.group_id.0.as_str().to_string();
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
        shard,
        "LeaveGroup",
        &group,
        GroupCall::Leave {
            group: group.clone(),
            req: leave,
        },
    )
    .await
    {
        Ok(GroupAnswer::Leave(r)) => r,
        _ => {
            return LeaveGroupResponse::default().with_error_code(state::COORDINATOR_NOT_AVAILABLE);
        }
    };
    if version < 3 {
        // One member: its error is the request's error.
        let code = if r.error != state::NONE {
            r.error
        } else {
            r.members.first().map_or(state::NONE, |m| m.error)
        };
        return LeaveGroupResponse::default().with_error_code(code);
    }
    let members = r
        .members
        .into_iter()
        .map(|m| {
            MemberResponse::default()
                .with_member_id(str_bytes(m.member_id))
                .with_group_instance_id(m.group_instance_id.map(str_bytes))
                .with_error_code(m.error)
        })
        .collect();
    LeaveGroupResponse::default()
        .with_error_code(r.error)
        .with_members(members)
}
