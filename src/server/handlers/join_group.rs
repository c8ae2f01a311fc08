//! JoinGroup: routed to the group's coordinator shard, where the request may wait until the
//! rebalance completes.

use super::RequestContext;
use crate::error::ErrorCode;

use kafka_protocol::messages::join_group_response::JoinGroupResponseMember;
use kafka_protocol::messages::{JoinGroupRequest, JoinGroupResponse};

use super::{group_call, opt_string, str_bytes};
use crate::group::state::{self, JoinRequest};
use crate::shard::calls;

pub async fn handle(ctx: &RequestContext, req: JoinGroupRequest) -> JoinGroupResponse {
    let version = ctx.api_version;
    let client = &ctx.client;
    let group = req.group_id.0.as_str().to_string();
    let fail = |code: ErrorCode| {
        respond(
            state::JoinResponse::failed(req.member_id.as_str(), code),
            version,
        )
    };
    if group.is_empty() {
        return fail(ErrorCode::INVALID_GROUP_ID);
    }
    if !ctx.authorize(super::Operation::Read, super::ResourceType::Group, &group) {
        return fail(ErrorCode::GROUP_AUTHORIZATION_FAILED);
    }
    if req.protocol_type.is_empty() || req.protocols.is_empty() {
        return fail(ErrorCode::INCONSISTENT_GROUP_PROTOCOL);
    }
    let join = JoinRequest {
        member_id: req.member_id.as_str().to_string(),
        group_instance_id: opt_string(&req.group_instance_id),
        client_id: client.client_id.clone(),
        client_host: client.host.clone(),
        session_timeout_ms: req.session_timeout_ms,
        rebalance_timeout_ms: if version >= 1 {
            req.rebalance_timeout_ms
        } else {
            req.session_timeout_ms
        },
        protocol_type: req.protocol_type.as_str().to_string(),
        protocols: req
            .protocols
            .iter()
            .map(|p| (p.name.as_str().to_string(), p.metadata.clone()))
            .collect(),
        supports_skip_assignment: version >= 9,
    };
    let call = calls::JoinGroup {
        group: group.clone(),
        req: join,
        require_known_member_id: version >= 4,
    };
    match group_call(ctx, &group, call).await {
        Ok(r) => respond(r, version),
        _ => fail(ErrorCode::COORDINATOR_NOT_AVAILABLE),
    }
}

fn respond(r: state::JoinResponse, version: i16) -> JoinGroupResponse {
    let members = r
        .members
        .into_iter()
        .map(|m| {
            let out = JoinGroupResponseMember::default()
                .with_member_id(str_bytes(m.member_id))
                .with_metadata(m.metadata);
            if version >= 5 {
                out.with_group_instance_id(m.group_instance_id.map(str_bytes))
            } else {
                out
            }
        })
        .collect();
    let out = JoinGroupResponse::default()
        .with_error_code(r.error.code())
        .with_generation_id(r.generation_id)
        .with_leader(str_bytes(r.leader))
        .with_member_id(str_bytes(r.member_id))
        .with_members(members);
    let out = if version >= 7 {
        out.with_protocol_type(r.protocol_type.map(str_bytes))
            .with_protocol_name(r.protocol_name.map(str_bytes))
    } else {
        out.with_protocol_name(Some(str_bytes(r.protocol_name.unwrap_or_default())))
    };
    if version >= 9 {
        out.with_skip_assignment(r.skip_assignment)
    } else {
        out
    }
}
