//! OffsetFetch: committed offsets of one group (v1-v7) or of several groups (v8), each read
//! on its coordinator shard.

use super::RequestContext;
use crate::error::ErrorCode;
use std::collections::BTreeMap;

use kafka_protocol::messages::offset_fetch_response::{
    OffsetFetchResponseGroup, OffsetFetchResponsePartition, OffsetFetchResponsePartitions,
    OffsetFetchResponseTopic, OffsetFetchResponseTopics,
};
use kafka_protocol::messages::{GroupId, OffsetFetchRequest, OffsetFetchResponse};

use super::{group_call, str_bytes, topic_name};
use crate::group::coordinator::FetchedOffset;
use crate::shard::calls;

type Wanted = Option<Vec<(String, Vec<i32>)>>;

/// A row, and its error: UNSTABLE_OFFSET_COMMIT where its transactional commit awaits its
/// marker (require_stable), TOPIC_AUTHORIZATION_FAILED for a topic the principal may not
/// describe.
type Row = (FetchedOffset, ErrorCode);

/// Reads a group's offsets; `member` is OffsetFetch v9's (member id, member epoch), checked
/// against a consumer group ((None, -1): no member, as admin tools and classic clients ask).
async fn fetch(
    ctx: &RequestContext,
    group: &str,
    wanted: Wanted,
    require_stable: bool,
    member: (Option<String>, i32),
) -> Result<Vec<Row>, ErrorCode> {
    if group.is_empty() {
        return Err(ErrorCode::INVALID_GROUP_ID);
    }
    // Describe on the group, then on each topic, as Kafka: asked-for topics the principal
    // may not describe answer TOPIC_AUTHORIZATION_FAILED, and a fetch of all leaves them out.
    use super::{Operation, ResourceType};
    if !ctx.authorize(Operation::Describe, ResourceType::Group, group) {
        return Err(ErrorCode::GROUP_AUTHORIZATION_FAILED);
    }
    let mut refused: Vec<Row> = Vec::new();
    let all = wanted.is_none();
    let wanted = wanted.map(|ts| {
        ts.into_iter()
            .filter(|(t, ps)| {
                let ok = ctx.authorize(Operation::Describe, ResourceType::Topic, t);
                if !ok {
                    refused.extend(ps.iter().map(|p| {
                        (
                            (t.clone(), *p, -1, -1, None),
                            ErrorCode::TOPIC_AUTHORIZATION_FAILED,
                        )
                    }));
                }
                ok
            })
            .collect::<Vec<_>>()
    });
    match group_call(
        ctx,
        group,
        calls::FetchOffsets {
            group: group.to_string(),
            wanted,
            require_stable,
            member,
        },
    )
    .await
    {
        Ok(Ok((rows, unstable))) => Ok(rows
            .into_iter()
            .filter(|r| {
                !all || !ctx.authorizer_on()
                    || ctx.authorize(Operation::Describe, ResourceType::Topic, &r.0)
            })
            .map(|r| {
                let u = unstable.iter().any(|(t, p)| *t == r.0 && *p == r.1);
                let code = if u {
                    ErrorCode::UNSTABLE_OFFSET_COMMIT
                } else {
                    ErrorCode::NONE
                };
                (r, code)
            })
            .chain(refused)
            .collect()),
        Ok(Err(code)) => Err(code),
        Err(e) => Err(e.error_code()),
    }
}

/// Groups fetched offsets by topic, in first-seen order.
fn by_topic(rows: Vec<Row>) -> Vec<(String, Vec<Row>)> {
    let mut order: Vec<String> = Vec::new();
    let mut map: BTreeMap<String, Vec<Row>> = BTreeMap::new();
    for row in rows {
        if !map.contains_key(&row.0.0) {
            order.push(row.0.0.clone());
        }
        map.entry(row.0.0.clone()).or_default().push(row);
    }
    order
        .into_iter()
        .map(|t| {
            let rows = map.remove(&t).unwrap_or_default();
            (t, rows)
        })
        .collect()
}

pub async fn handle(ctx: &RequestContext, req: OffsetFetchRequest) -> OffsetFetchResponse {
    let version = ctx.api_version;
    if version >= 8 {
        let mut groups = Vec::with_capacity(req.groups.len());
        for g in &req.groups {
            let wanted = g.topics.as_ref().map(|ts| {
                ts.iter()
                    .map(|t| (t.name.0.as_str().to_string(), t.partition_indexes.clone()))
                    .collect()
            });
            let out = OffsetFetchResponseGroup::default().with_group_id(g.group_id.clone());
            let member = if version >= 9 {
                (
                    g.member_id.as_ref().map(|m| m.as_str().to_string()),
                    g.member_epoch,
                )
            } else {
                (None, -1)
            };
            groups.push(
                match fetch(
                    ctx,
                    g.group_id.0.as_str(),
                    wanted,
                    req.require_stable,
                    member,
                )
                .await
                {
                    Ok(rows) => out.with_topics(
                        by_topic(rows)
                            .into_iter()
                            .map(|(t, rows)| {
                                OffsetFetchResponseTopics::default()
                                    .with_name(topic_name(&t))
                                    .with_partitions(
                                        rows.into_iter()
                                            .map(|((_, p, offset, epoch, meta), code)| {
                                                let out = OffsetFetchResponsePartitions::default()
                                                    .with_partition_index(p)
                                                    .with_committed_offset(offset)
                                                    .with_committed_leader_epoch(epoch)
                                                    .with_metadata(meta.map(str_bytes));
                                                if !code.is_none() {
                                                    out.with_committed_offset(-1)
                                                        .with_error_code(code.code())
                                                } else {
                                                    out
                                                }
                                            })
                                            .collect(),
                                    )
                            })
                            .collect(),
                    ),
                    Err(code) => out.with_error_code(code.code()),
                },
            );
        }
        return OffsetFetchResponse::default().with_groups(groups);
    }
    let group: GroupId = req.group_id.clone();
    let wanted = req.topics.as_ref().map(|ts| {
        ts.iter()
            .map(|t| (t.name.0.as_str().to_string(), t.partition_indexes.clone()))
            .collect()
    });
    let require_stable = version >= 7 && req.require_stable;
    match fetch(ctx, group.0.as_str(), wanted, require_stable, (None, -1)).await {
        Ok(rows) => {
            let topics = by_topic(rows)
                .into_iter()
                .map(|(t, rows)| {
                    OffsetFetchResponseTopic::default()
                        .with_name(topic_name(&t))
                        .with_partitions(
                            rows.into_iter()
                                .map(|((_, p, offset, epoch, meta), code)| {
                                    let out = OffsetFetchResponsePartition::default()
                                        .with_partition_index(p)
                                        .with_committed_offset(offset)
                                        .with_metadata(meta.map(str_bytes));
                                    let out = if !code.is_none() {
                                        out.with_committed_offset(-1).with_error_code(code.code())
                                    } else {
                                        out
                                    };
                                    if version >= 5 {
                                        out.with_committed_leader_epoch(epoch)
                                    } else {
                                        out
                                    }
                                })
                                .collect(),
                        )
                })
                .collect();
            OffsetFetchResponse::default().with_topics(topics)
        }
        Err(code) if version >= 2 => OffsetFetchResponse::default().with_error_code(code.code()),
        Err(code) => {
            // v1 has no top-level error: report it on every asked partition.
            let topics = req
                .topics
                .unwrap_or_default()
                .into_iter()
                .map(|t| {
                    OffsetFetchResponseTopic::default()
                        .with_name(t.name)
                        .with_partitions(
                            t.partition_indexes
                                .into_iter()
                                .map(|p| {
                                    OffsetFetchResponsePartition::default()
                                        .with_partition_index(p)
                                        .with_committed_offset(-1)
                                        .with_error_code(code.code())
                                })
                                .collect(),
                        )
                })
                .collect();
            OffsetFetchResponse::default().with_topics(topics)
        }
    }
}
