//! ConsumerGroupDescribe (KIP-848): a consumer group's epochs, assignor and members, each
//! member with its current and target assignment, described by its coordinator shard.

use std::collections::BTreeMap;

use kafka_protocol::messages::consumer_group_describe_response::{
    Assignment, DescribedGroup, Member, TopicPartitions,
};
use kafka_protocol::messages::{ConsumerGroupDescribeRequest, ConsumerGroupDescribeResponse};

use super::{RequestContext, group_call, str_bytes, topic_name};
use crate::error::ErrorCode;
use crate::group::consumer;
use crate::shard::calls;

fn assignment(a: &consumer::Assignment, names: &BTreeMap<uuid::Uuid, String>) -> Assignment {
    Assignment::default().with_topic_partitions(
        a.iter()
            .map(|(id, ps)| {
                TopicPartitions::default()
                    .with_topic_id(*id)
                    .with_topic_name(topic_name(names.get(id).map_or("", String::as_str)))
                    .with_partitions(ps.iter().copied().collect())
            })
            .collect(),
    )
}

pub async fn handle(
    ctx: &RequestContext,
    req: ConsumerGroupDescribeRequest,
) -> ConsumerGroupDescribeResponse {
    let mut groups = Vec::with_capacity(req.group_ids.len());
    for g in req.group_ids {
        let id = g.0.as_str().to_string();
        let out = DescribedGroup::default().with_group_id(g);
        // Describe on the group, as Kafka.
        if !ctx.authorize(super::Operation::Describe, super::ResourceType::Group, &id) {
            groups.push(
                out.with_authorized_operations(i32::MIN)
                    .with_error_code(ErrorCode::GROUP_AUTHORIZATION_FAILED.code()),
            );
            continue;
        }
        let out = out.with_authorized_operations(if req.include_authorized_operations {
            ctx.authorized_operations(super::ResourceType::Group, &id)
        } else {
            i32::MIN
        });
        let call = calls::ConsumerGroupDescribe { group: id.clone() };
        groups.push(match group_call(ctx, &id, call).await {
            Ok(Some((d, names))) => out
                .with_group_state(str_bytes(d.state.to_string()))
                .with_group_epoch(d.group_epoch)
                .with_assignment_epoch(d.assignment_epoch)
                .with_assignor_name(str_bytes(d.assignor.to_string()))
                .with_members(
                    d.members
                        .iter()
                        .map(|m| {
                            let mm = &m.member;
                            Member::default()
                                .with_member_id(str_bytes(mm.member_id.clone()))
                                .with_instance_id(mm.instance_id.clone().map(str_bytes))
                                .with_rack_id(mm.rack_id.clone().map(str_bytes))
                                .with_member_epoch(mm.member_epoch)
                                .with_client_id(str_bytes(mm.client_id.clone()))
                                .with_client_host(str_bytes(mm.client_host.clone()))
                                .with_subscribed_topic_names(
                                    mm.subscribed_topic_names
                                        .iter()
                                        .map(|t| topic_name(t))
                                        .collect(),
                                )
                                .with_subscribed_topic_regex(
                                    mm.subscribed_topic_regex.clone().map(str_bytes),
                                )
                                .with_assignment(assignment(&mm.assigned, &names))
                                .with_target_assignment(assignment(&m.target, &names))
                                // 1: a member of the consumer protocol (0 would be classic).
                                .with_member_type(1)
                        })
                        .collect(),
                ),
            Ok(None) => out
                .with_error_code(ErrorCode::GROUP_ID_NOT_FOUND.code())
                .with_error_message(Some(str_bytes(format!(
                    "Group {id} is not a consumer group."
                )))),
            Err(e) => out.with_error_code(e.error_code().code()),
        });
    }
    ConsumerGroupDescribeResponse::default().with_groups(groups)
}
