//! Heartbeat: keeps a member's session alive and tells it when to rejoin.

use std::rc::Rc;

use kafka_protocol::messages::{HeartbeatRequest, HeartbeatResponse};

use super::{group_call, opt_string};
use crate::group::state;
use crate::router::{GroupAnswer, GroupCall};
use crate::shard::Shard;

pub async fn handle(shard: &Rc<Shard>, req: HeartbeatRequest) -> HeartbeatResponse {
    let group = req.group_id.0.as_str().to_string();
    let hb = state::HeartbeatRequest {
        member_id: req.member_id.as_str().to_string(),
        generation_id: req.generation_id,
        group_instance_id: opt_string(&req.group_instance_id),
    };
    let code = match group_call(
        shard,
        "Heartbeat",
        &group,
        GroupCall::Heartbeat {
            group: group.clone(),
            req: hb,
        },
    )
    .await
    {
        Ok(GroupAnswer::Heartbeat(code)) => code,
        _ => state::COORDINATOR_NOT_AVAILABLE,
    };
    HeartbeatResponse::default().with_error_code(code)
}
