//! ConsumerGroupHeartbeat (KIP-848): joins, heartbeats and leaves of consumer-protocol
//! members, run on the group's coordinator shard ([`crate::group::consumer`]).

use std::collections::BTreeSet;

use kafka_protocol::messages::consumer_group_heartbeat_response::{Assignment, TopicPartitions};
use kafka_protocol::messages::{ConsumerGroupHeartbeatRequest, ConsumerGroupHeartbeatResponse};

use super::{RequestContext, group_call, opt_string, str_bytes};
use crate::error::ErrorCode;
use crate::group::consumer;
use crate::shard::calls;

pub async fn handle(
    ctx: &RequestContext,
    req: ConsumerGroupHeartbeatRequest,
) -> ConsumerGroupHeartbeatResponse {
    let group = req.group_id.0.as_str().to_string();
    if group.is_empty() {
        return ConsumerGroupHeartbeatResponse::default()
            .with_error_code(ErrorCode::INVALID_REQUEST.code())
            .with_error_message(Some(str_bytes("GroupId can't be empty.".into())))
            .with_member_epoch(-1);
    }
    // Read on the group, and Describe on every topic it subscribes to by name, as Kafka.
    use super::{Operation, ResourceType};
    if !ctx.authorize(Operation::Read, ResourceType::Group, &group) {
        return ConsumerGroupHeartbeatResponse::default()
            .with_error_code(ErrorCode::GROUP_AUTHORIZATION_FAILED.code())
            .with_member_epoch(-1);
    }
    let refused: Vec<&str> = req
        .subscribed_topic_names
        .iter()
        .flatten()
        .map(|t| t.0.as_str())
        .filter(|t| !ctx.authorize(Operation::Describe, ResourceType::Topic, t))
        .collect();
    if !refused.is_empty() {
        return ConsumerGroupHeartbeatResponse::default()
            .with_error_code(ErrorCode::TOPIC_AUTHORIZATION_FAILED.code())
            .with_error_message(Some(str_bytes(format!(
                "The group has subscribed to topics that are not authorized: {}",
                refused.join(", ")
            ))))
            .with_member_epoch(-1);
    }
    let owned = req.topic_partitions.as_ref().map(|tps| {
        let mut a = consumer::Assignment::new();
        for tp in tps {
            a.entry(tp.topic_id)
                .or_default()
                .extend(tp.partitions.iter().copied());
        }
        a.retain(|_, p: &mut BTreeSet<i32>| !p.is_empty());
        a
    });
    let hb = consumer::HeartbeatRequest {
        version: ctx.api_version,
        member_id: req.member_id.as_str().to_string(),
        member_epoch: req.member_epoch,
        instance_id: opt_string(&req.instance_id),
        rack_id: opt_string(&req.rack_id),
        rebalance_timeout_ms: req.rebalance_timeout_ms,
        subscribed_topic_names: req
            .subscribed_topic_names
            .as_ref()
            .map(|ts| ts.iter().map(|t| t.0.as_str().to_string()).collect()),
        subscribed_topic_regex: opt_string(&req.subscribed_topic_regex),
        server_assignor: opt_string(&req.server_assignor),
        owned,
        client_id: ctx.client.client_id.clone(),
        client_host: ctx.client.host.clone(),
        generated_member_id: String::new(),
    };
    let call = calls::ConsumerGroupHeartbeat {
        group: group.clone(),
        req: hb,
    };
    match group_call(ctx, &group, call).await {
        Ok(r) => ConsumerGroupHeartbeatResponse::default()
            .with_error_code(r.error.code())
            .with_error_message(r.message.map(str_bytes))
            .with_member_id(r.member_id.map(str_bytes))
            .with_member_epoch(r.member_epoch)
            .with_heartbeat_interval_ms(r.heartbeat_interval_ms)
            .with_assignment(r.assignment.map(|a| {
                Assignment::default().with_topic_partitions(
                    a.into_iter()
                        .map(|(topic_id, ps)| {
                            TopicPartitions::default()
                                .with_topic_id(topic_id)
                                .with_partitions(ps.into_iter().collect())
                        })
                        .collect(),
                )
            })),
        Err(e) => ConsumerGroupHeartbeatResponse::default()
            .with_error_code(e.error_code().code())
            .with_member_epoch(-1),
    }
}
