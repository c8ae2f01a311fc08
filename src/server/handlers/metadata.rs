//! Metadata: brokers (this one), and topics from the shard's catalog cache. Unknown topics
//! are auto-created when the broker allows it and the client asks for it (v4+) or cannot say
//! (v0-v3).

use super::RequestContext;

use kafka_protocol::ResponseError;
use kafka_protocol::messages::metadata_response::{
    MetadataResponseBroker, MetadataResponsePartition, MetadataResponseTopic,
};
use kafka_protocol::messages::{BrokerId, MetadataRequest, MetadataResponse};

use super::{CLUSTER, Operation, ResourceType, str_bytes, topic_name};
use crate::storage::catalog::TopicMeta;

/// Topic authorized operations "not requested" (INT32_MIN), as Kafka sends.
const AUTHORIZED_OPERATIONS_OMITTED: i32 = i32::MIN;

pub async fn handle(ctx: &RequestContext, req: MetadataRequest) -> MetadataResponse {
    let shard = &ctx.shard;
    let version = ctx.api_version;
    let node = BrokerId(shard.config.node_id);
    let (host, port) = ctx.advertised();
    let view = shard.cluster();
    // One node: this broker, its id the controller's. A cluster: the brokers that serve,
    // and the active controller (the Raft leader), from this shard's copy of the metadata.
    let (brokers, controller_id, cluster_id) = match &view {
        None => (
            vec![
                MetadataResponseBroker::default()
                    .with_node_id(node)
                    .with_host(str_bytes(host))
                    .with_port(i32::from(port)),
            ],
            node,
            shard.cluster_id.clone(),
        ),
        Some(v) => (
            // Each broker at its listener of the name this client came in on; one without
            // such a listener is left out, so its partitions show no leader to this client.
            v.brokers
                .iter()
                .filter_map(|b| {
                    let (host, port) = ctx.endpoint_of(b)?;
                    Some(
                        MetadataResponseBroker::default()
                            .with_node_id(BrokerId(b.id))
                            .with_host(str_bytes(host))
                            .with_port(i32::from(port))
                            .with_rack(b.rack.clone().map(str_bytes)),
                    )
                })
                .collect(),
            BrokerId(v.controller_id),
            v.cluster_id.clone(),
        ),
    };
    let live: Option<Vec<i32>> = view.as_ref().map(|_| {
        brokers
            .iter()
            .map(|b: &MetadataResponseBroker| b.node_id.0)
            .collect()
    });
    let with_ops = version >= 8 && req.include_topic_authorized_operations;
    let topic_response = |meta: &TopicMeta, node: BrokerId, version: i16| {
        let out = topic_response(meta, node, version, live.as_deref());
        if with_ops {
            out.with_topic_authorized_operations(
                ctx.authorized_operations(ResourceType::Topic, &meta.name),
            )
        } else {
            out
        }
    };
    let describable = |name: &str| ctx.authorize(Operation::Describe, ResourceType::Topic, name);
    let denied = |name: Option<&str>, id: uuid::Uuid| {
        MetadataResponseTopic::default()
            .with_name(name.map(topic_name))
            .with_topic_id(id)
            .with_error_code(ResponseError::TopicAuthorizationFailed.code())
    };
    let all = match &req.topics {
        None => true,
        Some(t) => t.is_empty() && version == 0,
    };
    let mut topics = Vec::new();
    if all {
        // Only the topics the principal may describe (without an authorizer, all).
        for meta in shard.all_topics() {
            if describable(&meta.name) {
                topics.push(topic_response(&meta, node, version));
            }
        }
    } else {
        let auto =
            shard.config.auto_create_topics && (version < 4 || req.allow_auto_topic_creation);
        for t in req.topics.unwrap_or_default() {
            let meta = match &t.name {
                Some(name) => shard.topic(name.0.as_str()),
                None => shard.topic_by_id(t.topic_id),
            };
            // A topic the principal may not describe is TOPIC_AUTHORIZATION_FAILED whether
            // or not it exists, so its existence is not given away.
            match (&meta, &t.name) {
                (Some(m), _) if !describable(&m.name) => {
                    // Asked by id: the id is echoed, the name not given.
                    let id = if t.name.is_none() {
                        t.topic_id
                    } else {
                        uuid::Uuid::nil()
                    };
                    topics.push(denied(t.name.as_ref().map(|n| n.0.as_str()), id));
                    continue;
                }
                (None, Some(name)) if !describable(name.0.as_str()) => {
                    topics.push(denied(Some(name.0.as_str()), uuid::Uuid::nil()));
                    continue;
                }
                _ => {}
            }
            if let Some(meta) = meta {
                topics.push(topic_response(&meta, node, version));
                continue;
            }
            let Some(name) = t.name else {
                topics.push(
                    MetadataResponseTopic::default()
                        .with_topic_id(t.topic_id)
                        .with_error_code(ResponseError::UnknownTopicId.code()),
                );
                continue;
            };
            let name = name.0.as_str().to_string();
            // Auto-creation needs Create on the cluster or on the topic, as Kafka.
            let may_create = auto
                && (ctx.authorize(Operation::Create, ResourceType::Cluster, CLUSTER)
                    || ctx.authorize(Operation::Create, ResourceType::Topic, &name));
            if auto && !may_create {
                topics.push(denied(Some(&name), uuid::Uuid::nil()));
                continue;
            }
            let created = if auto {
                Some(super::produce::auto_create(ctx, &name).await)
            } else {
                None
            };
            topics.push(match created {
                Some(Ok(meta)) => topic_response(&meta, node, version),
                Some(Err(e)) => MetadataResponseTopic::default()
                    .with_name(Some(topic_name(&name)))
                    .with_error_code(e.code()),
                None => MetadataResponseTopic::default()
                    .with_name(Some(topic_name(&name)))
                    .with_error_code(ResponseError::UnknownTopicOrPartition.code()),
            });
        }
    }
    MetadataResponse::default()
        .with_brokers(brokers)
        .with_cluster_id(Some(str_bytes(cluster_id)))
        .with_controller_id(controller_id)
        .with_topics(topics)
        .with_cluster_authorized_operations(
            if (8..=10).contains(&version) && req.include_cluster_authorized_operations {
                if ctx.authorize(Operation::Describe, ResourceType::Cluster, CLUSTER) {
                    ctx.authorized_operations(ResourceType::Cluster, CLUSTER)
                } else {
                    0
                }
            } else {
                AUTHORIZED_OPERATIONS_OMITTED
            },
        )
}

/// A topic as Metadata shows it. `live`: the brokers that serve, in a cluster (None on one
/// node, where this broker holds and leads everything).
pub(super) fn topic_response(
    meta: &TopicMeta,
    node: BrokerId,
    version: i16,
    live: Option<&[i32]>,
) -> MetadataResponseTopic {
    let partitions = (0..meta.partitions)
        .map(|p| {
            let out = MetadataResponsePartition::default().with_partition_index(p);
            let Some(live) = live else {
                return out
                    .with_leader_id(node)
                    .with_leader_epoch(if version >= 7 { 0 } else { -1 })
                    .with_replica_nodes(vec![node])
                    .with_isr_nodes(vec![node]);
            };
            // A topic this shard knows without its placement yet: no leader to name.
            let Some(a) = meta.partition(p) else {
                return out
                    .with_leader_id(BrokerId(-1))
                    .with_leader_epoch(-1)
                    .with_error_code(ResponseError::LeaderNotAvailable.code());
            };
            let ids = |v: &[i32]| v.iter().copied().map(BrokerId).collect::<Vec<_>>();
            let offline: Vec<i32> = a
                .replicas
                .iter()
                .copied()
                .filter(|r| !live.contains(r))
                .collect();
            let out = out
                .with_leader_id(BrokerId(a.leader))
                .with_leader_epoch(if version >= 7 { a.leader_epoch } else { -1 })
                .with_replica_nodes(ids(&a.replicas))
                .with_isr_nodes(ids(&a.isr))
                .with_offline_replicas(ids(&offline));
            if a.leader < 0 {
                out.with_error_code(ResponseError::LeaderNotAvailable.code())
            } else {
                out
            }
        })
        .collect();
    MetadataResponseTopic::default()
        .with_name(Some(topic_name(&meta.name)))
        .with_is_internal(crate::placement::is_coordinator_log(&meta.name))
        .with_topic_id(if version >= 10 {
            meta.topic_id
        } else {
            uuid::Uuid::nil()
        })
        .with_partitions(partitions)
        .with_topic_authorized_operations(AUTHORIZED_OPERATIONS_OMITTED)
}
