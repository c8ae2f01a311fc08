//! FindCoordinator: on one node every group's coordinator is this broker; the shard that
//! coordinates the group inside it is found by the router, not by the client.
//!
//! Transactional ids are answered with this broker too, although transactions are not
//! implemented yet: the client then sends InitProducerId with its transactional id, which
//! fails at once with UNSUPPORTED_VERSION (see `init_producer_id.rs`). Refusing here instead
//! (COORDINATOR_NOT_AVAILABLE, retriable) would leave a transactional producer retrying until
//! its timeout with no word of why.

use super::RequestContext;
use crate::error::ErrorCode;

use kafka_protocol::messages::find_coordinator_response::Coordinator;
use kafka_protocol::messages::{BrokerId, FindCoordinatorRequest, FindCoordinatorResponse};
use kafka_protocol::protocol::StrBytes;

use super::str_bytes;

/// key_type of consumer groups (2 is share groups).
const KEY_TYPE_GROUP: i8 = 0;
/// key_type of transactional ids.
const KEY_TYPE_TRANSACTION: i8 = 1;

/// (error code, message) for a key, or None when this broker coordinates it.
fn refuse(key: &str, key_type: i8) -> Option<(ErrorCode, String)> {
    if key_type != KEY_TYPE_GROUP && key_type != KEY_TYPE_TRANSACTION {
        return Some((
            ErrorCode::COORDINATOR_NOT_AVAILABLE,
            format!(
                "key type {key_type} is not supported (consumer groups and transactional ids are)"
            ),
        ));
    }
    if key.is_empty() {
        return Some((ErrorCode::INVALID_REQUEST, "empty key".into()));
    }
    None
}

pub async fn handle(ctx: &RequestContext, req: FindCoordinatorRequest) -> FindCoordinatorResponse {
    let shard = &ctx.shard;
    let version = ctx.api_version;
    let node = BrokerId(shard.config.node_id);
    let (host, port) = shard.config.advertised_listener.clone();
    if version >= 4 {
        let coordinators = req
            .coordinator_keys
            .iter()
            .map(|key| {
                let c = Coordinator::default().with_key(key.clone());
                match refuse(key.as_str(), req.key_type) {
                    None => c
                        .with_node_id(node)
                        .with_host(str_bytes(host.clone()))
                        .with_port(i32::from(port)),
                    Some((code, msg)) => c
                        .with_node_id(BrokerId(-1))
                        .with_port(-1)
                        .with_error_code(code.code())
                        .with_error_message(Some(str_bytes(msg))),
                }
            })
            .collect();
        return FindCoordinatorResponse::default().with_coordinators(coordinators);
    }
    let out = FindCoordinatorResponse::default();
    match refuse(req.key.as_str(), req.key_type) {
        None => out
            .with_node_id(node)
            .with_host(str_bytes(host))
            .with_port(i32::from(port)),
        Some((code, msg)) => {
            let out = out
                .with_error_code(code.code())
                .with_node_id(BrokerId(-1))
                .with_host(StrBytes::default())
                .with_port(-1);
            if version >= 1 {
                out.with_error_message(Some(str_bytes(msg)))
            } else {
                out
            }
        }
    }
}
