//! FindCoordinator: on one node every group's coordinator is this broker; the shard that
//! coordinates the group inside it is found by the router, not by the client. In a cluster a
//! group's coordinator is the leader of its `__consumer_offsets` partition, as the metadata
//! says (the topic is created in the metadata on the first lookup, as Kafka does).
//!
//! A transactional id's coordinator is this broker on one node (the shard that owns the id's
//! `__transaction_state` partition coordinates it inside, found by the router). In a cluster
//! it is the leader of the id's `__transaction_state` partition (the log is created on the
//! first lookup, replicated like `__consumer_offsets`); transactions are not coordinated in a
//! cluster yet, so InitProducerId there answers UNSUPPORTED_VERSION (see
//! `init_producer_id.rs`) and the client fails at once.
//!
//! While fewer brokers are live than a log's replication factor, the log cannot be created
//! and the answer is COORDINATOR_NOT_AVAILABLE, as Kafka answers.

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

/// The broker that coordinates `key` (a group, or a transactional id when `txn`): this one
/// on one node; in a cluster the leader of the key's partition of `__consumer_offsets` (or
/// `__transaction_state`).
async fn coordinator(
    ctx: &RequestContext,
    key: &str,
    txn: bool,
) -> Result<(i32, String, u16), (ErrorCode, String)> {
    let shard = &ctx.shard;
    let Some(view) = shard.cluster() else {
        if txn {
            // Created on first use, as in a cluster (see `Shard::open_txn_log`).
            super::open_local_txn_log(ctx)
                .await
                .map_err(|code| (code, "cannot create __transaction_state".to_string()))?;
        }
        let (host, port) = ctx.advertised();
        return Ok((shard.config.node_id, host, port));
    };
    let log = if txn {
        crate::placement::TXN_TOPIC
    } else {
        crate::placement::OFFSETS_TOPIC
    };
    let meta = match shard.topic(log) {
        Some(m) => Ok(m),
        None if txn => super::ensure_txn_topic(ctx).await,
        None => super::ensure_offsets_topic(ctx).await,
    }
    .map_err(|e| (ErrorCode::COORDINATOR_NOT_AVAILABLE, e.to_string()))?;
    let p = crate::placement::offsets_partition(key, meta.partitions);
    let leader = super::current_leader(&meta, p).0;
    match view
        .broker(leader)
        .and_then(|b| Some((b.id, ctx.endpoint_of(b)?)))
    {
        Some((id, (host, port))) => Ok((id, host, port)),
        None => Err((
            ErrorCode::COORDINATOR_NOT_AVAILABLE,
            format!("partition {p} of {log} has no leader"),
        )),
    }
}

async fn find(
    ctx: &RequestContext,
    key: &str,
    key_type: i8,
) -> Result<(i32, String, u16), (ErrorCode, String)> {
    if let Some(e) = refuse(key, key_type) {
        return Err(e);
    }
    // Describe on the group or the transactional id, as Kafka.
    use super::{Operation, ResourceType};
    let txn = key_type == KEY_TYPE_TRANSACTION;
    let (resource, refused) = if txn {
        (
            ResourceType::TransactionalId,
            ErrorCode::TRANSACTIONAL_ID_AUTHORIZATION_FAILED,
        )
    } else {
        (ResourceType::Group, ErrorCode::GROUP_AUTHORIZATION_FAILED)
    };
    if !ctx.authorize(Operation::Describe, resource, key) {
        return Err((refused, format!("not authorized to describe '{key}'")));
    }
    coordinator(ctx, key, txn).await
}

pub async fn handle(ctx: &RequestContext, req: FindCoordinatorRequest) -> FindCoordinatorResponse {
    let version = ctx.api_version;
    if version >= 4 {
        let mut coordinators = Vec::with_capacity(req.coordinator_keys.len());
        for key in &req.coordinator_keys {
            let c = Coordinator::default().with_key(key.clone());
            coordinators.push(match find(ctx, key.as_str(), req.key_type).await {
                Ok((node, host, port)) => c
                    .with_node_id(BrokerId(node))
                    .with_host(str_bytes(host))
                    .with_port(i32::from(port)),
                Err((code, msg)) => c
                    .with_node_id(BrokerId(-1))
                    .with_port(-1)
                    .with_error_code(code.code())
                    .with_error_message(Some(str_bytes(msg))),
            });
        }
        return FindCoordinatorResponse::default().with_coordinators(coordinators);
    }
    let out = FindCoordinatorResponse::default();
    match find(ctx, req.key.as_str(), req.key_type).await {
        Ok((node, host, port)) => out
            .with_node_id(BrokerId(node))
            .with_host(str_bytes(host))
            .with_port(i32::from(port)),
        Err((code, msg)) => {
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
