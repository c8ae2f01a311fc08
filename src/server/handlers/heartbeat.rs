//! Heartbeat: keeps a member's session alive and tells it when to rejoin.

use super::RequestContext;

use kafka_protocol::messages::{HeartbeatRequest, HeartbeatResponse};

use super::{group_call, opt_string};
use crate::group::state;
use crate::shard::calls;

pub async fn handle(ctx: &RequestContext, req: HeartbeatRequest) -> HeartbeatResponse {
    let group = req.group_id.0.as_str().to_string();
    if !ctx.authorize(super::Operation::Read, super::ResourceType::Group, &group) {
        return HeartbeatResponse::default()
            .with_error_code(crate::error::ErrorCode::GROUP_AUTHORIZATION_FAILED.code());
    }
    let hb = state::HeartbeatRequest {
        member_id: req.member_id.as_str().to_string(),
        generation_id: req.generation_id,
        group_instance_id: opt_string(&req.group_instance_id),
    };
    let code = match group_call(
        ctx,
        &group,
        calls::Heartbeat {
            group: group.clone(),
            req: hb,
        },
    )
    .await
    {
        Ok(code) => code,
        Err(e) => e.error_code(),
    };
    HeartbeatResponse::default().with_error_code(code.code())
}
