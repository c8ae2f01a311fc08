//! SyncGroup: the leader hands in the assignment; every member waits for its own share.

use super::RequestContext;
use crate::error::ErrorCode;

use kafka_protocol::messages::{SyncGroupRequest, SyncGroupResponse};

use super::{group_call, opt_string, str_bytes};
use crate::group::state::{self, SyncRequest};
use crate::shard::calls;

pub async fn handle(ctx: &RequestContext, req: SyncGroupRequest) -> SyncGroupResponse {
    let version = ctx.api_version;
    let group = req.group_id.0.as_str().to_string();
    if group.is_empty() {
        return respond(
            state::SyncResponse::failed(ErrorCode::INVALID_GROUP_ID),
            version,
        );
    }
    if !ctx.authorize(super::Operation::Read, super::ResourceType::Group, &group) {
        return respond(
            state::SyncResponse::failed(ErrorCode::GROUP_AUTHORIZATION_FAILED),
            version,
        );
    }
    let sync = SyncRequest {
        member_id: req.member_id.as_str().to_string(),
        generation_id: req.generation_id,
        group_instance_id: opt_string(&req.group_instance_id),
        protocol_type: opt_string(&req.protocol_type),
        protocol_name: opt_string(&req.protocol_name),
        assignments: req
            .assignments
            .iter()
            .map(|a| (a.member_id.as_str().to_string(), a.assignment.clone()))
            .collect(),
    };
    let answer = group_call(
        ctx,
        &group,
        calls::SyncGroup {
            group: group.clone(),
            req: sync,
        },
    )
    .await;
    match answer {
        Ok(r) => respond(r, version),
        _ => respond(
            state::SyncResponse::failed(ErrorCode::COORDINATOR_NOT_AVAILABLE),
            version,
        ),
    }
}

fn respond(r: state::SyncResponse, version: i16) -> SyncGroupResponse {
    let out = SyncGroupResponse::default()
        .with_error_code(r.error.code())
        .with_assignment(r.assignment);
    if version >= 5 {
        out.with_protocol_type(r.protocol_type.map(str_bytes))
            .with_protocol_name(r.protocol_name.map(str_bytes))
    } else {
        out
    }
}
