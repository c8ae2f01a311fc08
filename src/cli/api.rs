//! The Kafka requests the admin CLI makes, each at the highest version both sides speak, and
//! their answers in plain structs. Version-dependent layouts (topic ids in Fetch/Produce v13+,
//! FindCoordinator v4 batches, OffsetFetch v8 groups, DeleteTopics v6) are handled here.

use std::collections::BTreeMap;

use bytes::{Buf, Bytes};
use kafka_protocol::messages::{
    BrokerId, ConsumerProtocolAssignment, CreateTopicsRequest, DeleteGroupsRequest,
    DeleteTopicsRequest, DescribeConfigsRequest, DescribeGroupsRequest, FetchRequest,
    FindCoordinatorRequest, GroupId, IncrementalAlterConfigsRequest, ListGroupsRequest,
    ListOffsetsRequest, MetadataRequest, OffsetCommitRequest, OffsetFetchRequest, ProduceRequest,
    TopicName,
    create_topics_request::{CreatableTopic, CreatableTopicConfig},
    delete_topics_request::DeleteTopicState,
    describe_configs_request::DescribeConfigsResource,
    fetch_request::{FetchPartition, FetchTopic},
    incremental_alter_configs_request::{AlterConfigsResource, AlterableConfig},
    list_offsets_request::{ListOffsetsPartition, ListOffsetsTopic},
    metadata_request::MetadataRequestTopic,
    offset_commit_request::{OffsetCommitRequestPartition, OffsetCommitRequestTopic},
    offset_fetch_request::OffsetFetchRequestGroup,
    produce_request::{PartitionProduceData, TopicProduceData},
};
use kafka_protocol::protocol::{Decodable, Message, StrBytes};
use uuid::Uuid;

use super::client::{BrokerInfo, Client, with_retries};
use super::error::{Error, Result, check};
use crate::error::ErrorCode;

/// ListOffsets timestamp for the earliest offset.
pub const EARLIEST: i64 = -2;
/// ListOffsets timestamp for the latest offset (the high watermark).
pub const LATEST: i64 = -1;
/// DescribeConfigs / IncrementalAlterConfigs resource type of a topic.
pub const RESOURCE_TOPIC: i8 = 2;
/// DescribeConfigs / IncrementalAlterConfigs resource type of a broker.
pub const RESOURCE_BROKER: i8 = 4;

fn s(v: &str) -> StrBytes {
    StrBytes::from_string(v.to_string())
}

fn topic_name(v: &str) -> TopicName {
    TopicName(s(v))
}

// ---------------------------------------------------------------------------------------------
// Metadata

#[derive(Debug, Clone)]
pub struct PartitionMeta {
    pub partition: i32,
    pub leader: i32,
    pub replicas: Vec<i32>,
    pub isr: Vec<i32>,
    /// The leader's epoch (-1 when the broker does not say: Metadata below v7).
    pub leader_epoch: i32,
    /// Replicas on brokers that do not serve (fenced or gone).
    pub offline: Vec<i32>,
    pub error_code: i16,
}

#[derive(Debug, Clone)]
pub struct TopicMeta {
    pub name: String,
    pub id: Uuid,
    pub internal: bool,
    pub error_code: i16,
    pub partitions: Vec<PartitionMeta>,
}

#[derive(Debug, Clone)]
pub struct Metadata {
    pub controller: i32,
    pub topics: Vec<TopicMeta>,
}

impl Metadata {
    /// The topic, or UNKNOWN_TOPIC_OR_PARTITION (or the topic's own error).
    pub fn topic(&self, name: &str) -> Result<&TopicMeta> {
        let t = self.topics.iter().find(|t| t.name == name).ok_or_else(|| {
            Error::kafka(
                format!("topic '{name}'"),
                ErrorCode::UNKNOWN_TOPIC_OR_PARTITION.code(),
                None,
            )
        })?;
        check(t.error_code, format!("topic '{name}'"), None)?;
        Ok(t)
    }
}

/// Metadata for `topics` (None: all topics). Updates the client's broker table.
pub fn metadata(
    client: &mut Client,
    topics: Option<&[String]>,
    auto_create: bool,
) -> Result<Metadata> {
    let conn = client.any()?;
    let v = conn.version_of::<MetadataRequest>(i16::MAX)?;
    let mut req = MetadataRequest::default();
    req.topics = match topics {
        None if v >= 1 => None,
        None => Some(Vec::new()),
        Some(list) => Some(
            list.iter()
                .map(|t| MetadataRequestTopic::default().with_name(Some(topic_name(t))))
                .collect(),
        ),
    };
    if v >= 4 {
        req.allow_auto_topic_creation = auto_create;
    }
    let resp = conn.call(&req, v)?;
    if resp.error_code != 0 {
        check(resp.error_code, "Metadata", None)?;
    }
    client.brokers = resp
        .brokers
        .iter()
        .map(|b| {
            (
                b.node_id.0,
                BrokerInfo {
                    host: b.host.to_string(),
                    port: b.port,
                },
            )
        })
        .collect();
    let mut out = Metadata {
        controller: resp.controller_id.0,
        topics: resp
            .topics
            .iter()
            .map(|t| TopicMeta {
                name: t.name.as_ref().map(|n| n.to_string()).unwrap_or_default(),
                id: t.topic_id,
                internal: t.is_internal,
                error_code: t.error_code,
                partitions: t
                    .partitions
                    .iter()
                    .map(|p| PartitionMeta {
                        partition: p.partition_index,
                        leader: p.leader_id.0,
                        replicas: p.replica_nodes.iter().map(|n| n.0).collect(),
                        isr: p.isr_nodes.iter().map(|n| n.0).collect(),
                        leader_epoch: p.leader_epoch,
                        offline: p.offline_replicas.iter().map(|n| n.0).collect(),
                        error_code: p.error_code,
                    })
                    .collect(),
            })
            .collect(),
    };
    out.topics.sort_by(|a, b| a.name.cmp(&b.name));
    for t in &mut out.topics {
        t.partitions.sort_by_key(|p| p.partition);
    }
    Ok(out)
}

/// Metadata for one topic, retried while its leaders are being elected.
pub fn topic_metadata(client: &mut Client, topic: &str, auto_create: bool) -> Result<TopicMeta> {
    let names = [topic.to_string()];
    with_retries(|| {
        let md = metadata(client, Some(&names), auto_create)?;
        let t = md.topic(topic)?.clone();
        for p in &t.partitions {
            if ErrorCode::from_code(p.error_code) == ErrorCode::LEADER_NOT_AVAILABLE || p.leader < 0
            {
                return Err(Error::kafka(
                    format!("topic '{topic}' partition {}", p.partition),
                    ErrorCode::LEADER_NOT_AVAILABLE.code(),
                    None,
                ));
            }
        }
        Ok(t)
    })
}

/// The controller's connection when Metadata names one, else the bootstrap's.
fn controller(client: &mut Client) -> Result<&mut super::client::Conn> {
    let md = metadata(client, Some(&[]), false)?;
    if md.controller >= 0 && client.brokers.contains_key(&md.controller) {
        client.node(md.controller)
    } else {
        client.any()
    }
}

// ---------------------------------------------------------------------------------------------
// Topics

pub struct Created {
    pub partitions: i32,
    pub replication_factor: i16,
}

pub fn create_topic(
    client: &mut Client,
    name: &str,
    partitions: i32,
    replication_factor: i16,
    configs: &[(String, String)],
) -> Result<Created> {
    let conn = controller(client)?;
    let v = conn.version_of::<CreateTopicsRequest>(i16::MAX)?;
    let topic = CreatableTopic::default()
        .with_name(topic_name(name))
        .with_num_partitions(partitions)
        .with_replication_factor(replication_factor)
        .with_configs(
            configs
                .iter()
                .map(|(k, val)| {
                    CreatableTopicConfig::default()
                        .with_name(s(k))
                        .with_value(Some(s(val)))
                })
                .collect(),
        );
    let req = CreateTopicsRequest::default()
        .with_topics(vec![topic])
        .with_timeout_ms(30_000);
    let resp = conn.call(&req, v)?;
    let r = resp
        .topics
        .iter()
        .find(|t| t.name.as_str() == name)
        .ok_or_else(|| Error::other(format!("CreateTopics: no answer for topic '{name}'")))?;
    let mut result = check(
        r.error_code,
        format!("creating topic '{name}'"),
        r.error_message.as_deref(),
    );
    if r.error_code == 36 {
        result = result.map_err(|e| {
            e.with_hint(format!(
                "pick another name, or change it with `spate topic alter {name} --config k=v`"
            ))
        });
    }
    result?;
    Ok(Created {
        partitions: if v >= 5 && r.num_partitions > 0 {
            r.num_partitions
        } else {
            partitions
        },
        replication_factor: if v >= 5 && r.replication_factor > 0 {
            r.replication_factor
        } else {
            replication_factor
        },
    })
}

pub fn delete_topic(client: &mut Client, name: &str) -> Result<()> {
    let conn = controller(client)?;
    let v = conn.version_of::<DeleteTopicsRequest>(i16::MAX)?;
    let mut req = DeleteTopicsRequest::default().with_timeout_ms(30_000);
    if v >= 6 {
        req.topics = vec![DeleteTopicState::default().with_name(Some(topic_name(name)))];
    } else {
        req.topic_names = vec![topic_name(name)];
    }
    let resp = conn.call(&req, v)?;
    let r = resp
        .responses
        .iter()
        .find(|t| t.name.as_ref().is_some_and(|n| n.as_str() == name))
        .ok_or_else(|| Error::other(format!("DeleteTopics: no answer for topic '{name}'")))?;
    check(
        r.error_code,
        format!("deleting topic '{name}'"),
        r.error_message.as_deref(),
    )
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct ConfigEntry {
    pub name: String,
    pub value: Option<String>,
    pub source: &'static str,
    pub read_only: bool,
    pub sensitive: bool,
}

/// Kafka's ConfigSource names.
fn config_source(source: i8) -> &'static str {
    match source {
        1 => "topic",
        2 => "dynamic-broker",
        3 => "dynamic-default-broker",
        4 => "static-broker",
        5 => "default",
        6 => "dynamic-broker-logger",
        _ => "unknown",
    }
}

pub fn describe_topic_configs(client: &mut Client, topic: &str) -> Result<Vec<ConfigEntry>> {
    describe_configs(client, RESOURCE_TOPIC, topic)
}

/// The configs of a resource (a topic, or a broker by id).
pub fn describe_configs(
    client: &mut Client,
    resource_type: i8,
    topic: &str,
) -> Result<Vec<ConfigEntry>> {
    let conn = client.any()?;
    let v = conn.version_of::<DescribeConfigsRequest>(i16::MAX)?;
    let req = DescribeConfigsRequest::default().with_resources(vec![
        DescribeConfigsResource::default()
            .with_resource_type(resource_type)
            .with_resource_name(s(topic))
            .with_configuration_keys(None),
    ]);
    let resp = conn.call(&req, v)?;
    let r = resp
        .results
        .first()
        .ok_or_else(|| Error::other("DescribeConfigs: empty answer"))?;
    check(
        r.error_code,
        if resource_type == RESOURCE_TOPIC {
            format!("describing the configs of topic '{topic}'")
        } else {
            format!("describing the configs of broker {topic}")
        },
        r.error_message.as_deref(),
    )?;
    let mut out: Vec<ConfigEntry> = r
        .configs
        .iter()
        .map(|c| ConfigEntry {
            name: c.name.to_string(),
            value: c.value.as_ref().map(|v| v.to_string()),
            source: config_source(c.config_source),
            read_only: c.read_only,
            sensitive: c.is_sensitive,
        })
        .collect();
    out.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(out)
}

pub fn alter_topic_configs(
    client: &mut Client,
    topic: &str,
    set: &[(String, String)],
    delete: &[String],
) -> Result<()> {
    alter_configs(client, RESOURCE_TOPIC, topic, set, delete)
}

/// Sets and removes configs of a resource (a topic; a broker by id, or "" for every broker).
pub fn alter_configs(
    client: &mut Client,
    resource_type: i8,
    topic: &str,
    set: &[(String, String)],
    delete: &[String],
) -> Result<()> {
    let conn = client.any()?;
    let v = conn.version_of::<IncrementalAlterConfigsRequest>(i16::MAX)?;
    let mut configs: Vec<AlterableConfig> = set
        .iter()
        .map(|(k, val)| {
            AlterableConfig::default()
                .with_name(s(k))
                .with_config_operation(0)
                .with_value(Some(s(val)))
        })
        .collect();
    configs.extend(delete.iter().map(|k| {
        AlterableConfig::default()
            .with_name(s(k))
            .with_config_operation(1)
            .with_value(None)
    }));
    let req = IncrementalAlterConfigsRequest::default().with_resources(vec![
        AlterConfigsResource::default()
            .with_resource_type(resource_type)
            .with_resource_name(s(topic))
            .with_configs(configs),
    ]);
    let resp = conn.call(&req, v)?;
    let r = resp
        .responses
        .first()
        .ok_or_else(|| Error::other("IncrementalAlterConfigs: empty answer"))?;
    check(
        r.error_code,
        if resource_type == RESOURCE_TOPIC {
            format!("altering the configs of topic '{topic}'")
        } else if topic.is_empty() {
            "altering the dynamic configs of every broker".to_string()
        } else {
            format!("altering the dynamic configs of broker {topic}")
        },
        r.error_message.as_deref(),
    )
}

// ---------------------------------------------------------------------------------------------
// Reassignments and leader elections

/// Starts moving `topic`'s `partition` to `replicas`, or cancels its move (None).
pub fn alter_reassignment(
    client: &mut Client,
    topic: &str,
    partition: i32,
    replicas: Option<&[i32]>,
) -> Result<()> {
    use kafka_protocol::messages::AlterPartitionReassignmentsRequest;
    use kafka_protocol::messages::alter_partition_reassignments_request::{
        ReassignablePartition, ReassignableTopic,
    };
    let conn = client.any()?;
    let v = conn.version_of::<AlterPartitionReassignmentsRequest>(0)?;
    let req = AlterPartitionReassignmentsRequest::default()
        .with_timeout_ms(30_000)
        .with_topics(vec![
            ReassignableTopic::default()
                .with_name(topic_name(topic))
                .with_partitions(vec![
                    ReassignablePartition::default()
                        .with_partition_index(partition)
                        .with_replicas(replicas.map(|r| r.iter().map(|b| BrokerId(*b)).collect())),
                ]),
        ]);
    let resp = conn.call(&req, v)?;
    check(
        resp.error_code,
        "AlterPartitionReassignments",
        resp.error_message.as_deref(),
    )?;
    let r = resp
        .responses
        .iter()
        .flat_map(|t| t.partitions.iter())
        .find(|p| p.partition_index == partition)
        .ok_or_else(|| Error::other("AlterPartitionReassignments: no answer for the partition"))?;
    let what = if replicas.is_some() {
        "reassigning"
    } else {
        "cancelling the reassignment of"
    };
    check(
        r.error_code,
        format!("{what} partition {partition} of topic '{topic}'"),
        r.error_message.as_deref(),
    )
}

/// A reassignment in progress.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Reassignment {
    pub topic: String,
    pub partition: i32,
    pub replicas: Vec<i32>,
    pub adding: Vec<i32>,
    pub removing: Vec<i32>,
}

/// The reassignments in progress, of `topic` or of all topics.
pub fn list_reassignments(client: &mut Client, topic: Option<&str>) -> Result<Vec<Reassignment>> {
    use kafka_protocol::messages::ListPartitionReassignmentsRequest;
    use kafka_protocol::messages::list_partition_reassignments_request::ListPartitionReassignmentsTopics;
    let topics = match topic {
        None => None,
        Some(t) => {
            let md = metadata(client, Some(&[t.to_string()]), false)?;
            let meta = md.topic(t)?;
            Some(vec![
                ListPartitionReassignmentsTopics::default()
                    .with_name(topic_name(t))
                    .with_partition_indexes(meta.partitions.iter().map(|p| p.partition).collect()),
            ])
        }
    };
    let conn = client.any()?;
    let v = conn.version_of::<ListPartitionReassignmentsRequest>(0)?;
    let req = ListPartitionReassignmentsRequest::default()
        .with_timeout_ms(30_000)
        .with_topics(topics);
    let resp = conn.call(&req, v)?;
    check(
        resp.error_code,
        "listing partition reassignments",
        resp.error_message.as_deref(),
    )?;
    let ids = |v: &[BrokerId]| v.iter().map(|b| b.0).collect::<Vec<_>>();
    Ok(resp
        .topics
        .iter()
        .flat_map(|t| {
            t.partitions.iter().map(|p| Reassignment {
                topic: t.name.to_string(),
                partition: p.partition_index,
                replicas: ids(&p.replicas),
                adding: ids(&p.adding_replicas),
                removing: ids(&p.removing_replicas),
            })
        })
        .collect())
}

/// One partition's answer to ElectLeaders: None when elected, else Kafka's error.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Election {
    pub topic: String,
    pub partition: i32,
    pub error_code: i16,
    pub error_message: Option<String>,
}

/// Elects the preferred (or, `unclean`, any eligible) leader of `partitions` ((topic,
/// partition) each; None: every partition).
pub fn elect_leaders(
    client: &mut Client,
    unclean: bool,
    partitions: Option<&[(String, i32)]>,
) -> Result<Vec<Election>> {
    use kafka_protocol::messages::ElectLeadersRequest;
    use kafka_protocol::messages::elect_leaders_request::TopicPartitions;
    let conn = client.any()?;
    let v = conn.version_of::<ElectLeadersRequest>(i16::MAX)?;
    if unclean && v < 1 {
        return Err(Error::other(
            "the broker's ElectLeaders (v0) has no unclean elections",
        ));
    }
    let topics = partitions.map(|ps| {
        let mut by_topic: BTreeMap<&str, Vec<i32>> = BTreeMap::new();
        for (t, p) in ps {
            by_topic.entry(t.as_str()).or_default().push(*p);
        }
        by_topic
            .into_iter()
            .map(|(t, ps)| {
                TopicPartitions::default()
                    .with_topic(topic_name(t))
                    .with_partitions(ps)
            })
            .collect()
    });
    let req = ElectLeadersRequest::default()
        .with_election_type(i8::from(unclean))
        .with_timeout_ms(30_000)
        .with_topic_partitions(topics);
    let resp = conn.call(&req, v)?;
    check(resp.error_code, "electing leaders", None)?;
    Ok(resp
        .replica_election_results
        .iter()
        .flat_map(|t| {
            t.partition_result.iter().map(|p| Election {
                topic: t.topic.to_string(),
                partition: p.partition_id,
                error_code: p.error_code,
                error_message: p.error_message.as_ref().map(|m| m.to_string()),
            })
        })
        .collect())
}

// ---------------------------------------------------------------------------------------------
// Cluster

/// A broker that serves, as DescribeCluster lists it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ClusterBroker {
    pub id: i32,
    pub host: String,
    pub port: i32,
    pub rack: Option<String>,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct ClusterDescription {
    pub cluster_id: String,
    pub controller: i32,
    pub brokers: Vec<ClusterBroker>,
}

pub fn describe_cluster(client: &mut Client) -> Result<ClusterDescription> {
    use kafka_protocol::messages::DescribeClusterRequest;
    let conn = client.any()?;
    let v = conn.version_of::<DescribeClusterRequest>(1)?;
    let mut req = DescribeClusterRequest::default();
    if v >= 1 {
        req.endpoint_type = 1;
    }
    let resp = conn.call(&req, v)?;
    check(
        resp.error_code,
        "DescribeCluster",
        resp.error_message.as_deref(),
    )?;
    Ok(ClusterDescription {
        cluster_id: resp.cluster_id.to_string(),
        controller: resp.controller_id.0,
        brokers: resp
            .brokers
            .iter()
            .map(|b| ClusterBroker {
                id: b.broker_id.0,
                host: b.host.to_string(),
                port: b.port,
                rack: b.rack.as_ref().map(|r| r.to_string()),
            })
            .collect(),
    })
}

/// One voter of the metadata quorum, as its leader sees it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Voter {
    pub id: i32,
    pub log_end_offset: i64,
    /// How far it is behind the leader's high watermark, in metadata entries.
    pub lag: i64,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct Quorum {
    pub leader: i32,
    pub leader_epoch: i32,
    pub high_watermark: i64,
    pub voters: Vec<Voter>,
}

pub fn describe_quorum(client: &mut Client) -> Result<Quorum> {
    use kafka_protocol::messages::DescribeQuorumRequest;
    use kafka_protocol::messages::describe_quorum_request::{PartitionData, TopicData};
    let conn = client.any()?;
    let v = conn.version_of::<DescribeQuorumRequest>(1)?;
    let req = DescribeQuorumRequest::default().with_topics(vec![
        TopicData::default()
            .with_topic_name(topic_name("__cluster_metadata"))
            .with_partitions(vec![PartitionData::default().with_partition_index(0)]),
    ]);
    let resp = conn.call(&req, v)?;
    check(
        resp.error_code,
        "DescribeQuorum",
        resp.error_message.as_deref(),
    )?;
    let p = resp
        .topics
        .first()
        .and_then(|t| t.partitions.first())
        .ok_or_else(|| Error::other("DescribeQuorum answered no partition"))?;
    check(p.error_code, "DescribeQuorum", p.error_message.as_deref())?;
    Ok(Quorum {
        leader: p.leader_id.0,
        leader_epoch: p.leader_epoch,
        high_watermark: p.high_watermark,
        voters: p
            .current_voters
            .iter()
            .map(|r| Voter {
                id: r.replica_id.0,
                log_end_offset: r.log_end_offset,
                lag: (p.high_watermark - r.log_end_offset).max(0),
            })
            .collect(),
    })
}

// ---------------------------------------------------------------------------------------------
// Offsets

/// (offset, timestamp) per partition for `timestamp` (EARLIEST, LATEST or milliseconds),
/// asking each partition's leader.
pub fn list_offsets(
    client: &mut Client,
    topic: &TopicMeta,
    partitions: &[i32],
    timestamp: i64,
) -> Result<BTreeMap<i32, (i64, i64)>> {
    let mut by_leader: BTreeMap<i32, Vec<i32>> = BTreeMap::new();
    for &p in partitions {
        let meta = topic
            .partitions
            .iter()
            .find(|m| m.partition == p)
            .ok_or_else(|| {
                Error::kafka(
                    format!("topic '{}' partition {p}", topic.name),
                    ErrorCode::UNKNOWN_TOPIC_OR_PARTITION.code(),
                    None,
                )
                .with_hint(format!(
                    "topic '{}' has partitions 0..{}",
                    topic.name,
                    topic.partitions.len().saturating_sub(1)
                ))
            })?;
        by_leader.entry(meta.leader).or_default().push(p);
    }
    let mut out = BTreeMap::new();
    for (leader, parts) in by_leader {
        let conn = client.node(leader)?;
        let v = conn.version_of::<ListOffsetsRequest>(i16::MAX)?;
        let mut req = ListOffsetsRequest::default()
            .with_replica_id(BrokerId(-1))
            .with_topics(vec![
                ListOffsetsTopic::default()
                    .with_name(topic_name(&topic.name))
                    .with_partitions(
                        parts
                            .iter()
                            .map(|&p| {
                                ListOffsetsPartition::default()
                                    .with_partition_index(p)
                                    .with_timestamp(timestamp)
                            })
                            .collect(),
                    ),
            ]);
        if v >= 10 {
            req.timeout_ms = 30_000;
        }
        let resp = conn.call(&req, v)?;
        for t in &resp.topics {
            for p in &t.partitions {
                check(
                    p.error_code,
                    format!(
                        "listing offsets of '{}' partition {}",
                        topic.name, p.partition_index
                    ),
                    None,
                )?;
                out.insert(p.partition_index, (p.offset, p.timestamp));
            }
        }
    }
    Ok(out)
}

// ---------------------------------------------------------------------------------------------
// Groups

/// The address of `group`'s coordinator.
pub fn find_coordinator(client: &mut Client, group: &str) -> Result<String> {
    with_retries(|| {
        let conn = client.any()?;
        let v = conn.version_of::<FindCoordinatorRequest>(i16::MAX)?;
        let mut req = FindCoordinatorRequest::default();
        if v >= 4 {
            req.coordinator_keys = vec![s(group)];
        } else {
            req.key = s(group);
        }
        let resp = conn.call(&req, v)?;
        let context = format!("finding the coordinator of group '{group}'");
        let info = if v >= 4 {
            let c = resp
                .coordinators
                .first()
                .ok_or_else(|| Error::other(format!("{context}: empty answer")))?;
            check(c.error_code, &context, c.error_message.as_deref())?;
            BrokerInfo {
                host: c.host.to_string(),
                port: c.port,
            }
        } else {
            check(resp.error_code, &context, resp.error_message.as_deref())?;
            BrokerInfo {
                host: resp.host.to_string(),
                port: resp.port,
            }
        };
        Ok(info.addr())
    })
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct ListedGroup {
    pub group: String,
    pub state: String,
    pub protocol_type: String,
}

/// Every group of every broker.
pub fn list_groups(client: &mut Client) -> Result<Vec<ListedGroup>> {
    metadata(client, Some(&[]), false)?;
    let nodes: Vec<i32> = client.brokers.keys().copied().collect();
    let mut out = Vec::new();
    for node in nodes {
        let conn = client.node(node)?;
        let v = conn.version_of::<ListGroupsRequest>(i16::MAX)?;
        let resp = conn.call(&ListGroupsRequest::default(), v)?;
        check(resp.error_code, "listing groups", None)?;
        out.extend(resp.groups.iter().map(|g| ListedGroup {
            group: g.group_id.to_string(),
            state: if v >= 4 {
                g.group_state.to_string()
            } else {
                String::new()
            },
            protocol_type: g.protocol_type.to_string(),
        }));
    }
    out.sort_by(|a, b| a.group.cmp(&b.group));
    out.dedup_by(|a, b| a.group == b.group);
    Ok(out)
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct Member {
    pub member_id: String,
    pub group_instance_id: Option<String>,
    pub client_id: String,
    pub client_host: String,
    /// Topic -> partitions, decoded from the consumer protocol's assignment (a KIP-848
    /// member: what it owns now).
    pub assignment: BTreeMap<String, Vec<i32>>,
    /// A KIP-848 member's epoch.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub member_epoch: Option<i32>,
    /// A KIP-848 member's target assignment (what it will own once reconciled).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub target: Option<BTreeMap<String, Vec<i32>>>,
}

#[derive(Debug, Clone)]
pub struct GroupDescription {
    pub group: String,
    pub state: String,
    pub protocol_type: String,
    pub protocol: String,
    pub members: Vec<Member>,
}

/// Decodes a consumer protocol assignment (its version, then the crate's
/// `ConsumerProtocolAssignment` at that version): topic -> sorted partitions. None when the
/// bytes are not that layout.
pub fn decode_assignment(bytes: &[u8]) -> Option<BTreeMap<String, Vec<i32>>> {
    let mut out = BTreeMap::new();
    if bytes.is_empty() {
        return Some(out);
    }
    let mut b = Bytes::copy_from_slice(bytes);
    let version = i16::from_be_bytes([*b.first()?, *b.get(1)?]);
    b.advance(2);
    // A newer consumer writes a higher version; its fields come after the ones we read
    // (the protocol only appends), so decoding at our highest version still reads them.
    let version = version.clamp(0, ConsumerProtocolAssignment::VERSIONS.max);
    let assignment = ConsumerProtocolAssignment::decode(&mut b, version).ok()?;
    for t in assignment.assigned_partitions {
        let parts = out.entry(t.topic.to_string()).or_insert_with(Vec::new);
        parts.extend(t.partitions);
        parts.sort_unstable();
    }
    Some(out)
}

pub fn describe_group(
    client: &mut Client,
    coordinator: &str,
    group: &str,
) -> Result<GroupDescription> {
    let conn = client.conn(coordinator)?;
    let v = conn.version_of::<DescribeGroupsRequest>(i16::MAX)?;
    let req = DescribeGroupsRequest::default().with_groups(vec![GroupId(s(group))]);
    let resp = conn.call(&req, v)?;
    let g = resp
        .groups
        .first()
        .ok_or_else(|| Error::other("DescribeGroups: empty answer"))?;
    if g.error_code == ErrorCode::GROUP_ID_NOT_FOUND.code() && v >= 6 {
        // Kafka 4.x: a consumer group (KIP-848) is described by ConsumerGroupDescribe.
        if let Some(d) = describe_consumer_group(client, coordinator, group)? {
            return Ok(d);
        }
    }
    check(
        g.error_code,
        format!("describing group '{group}'"),
        g.error_message.as_deref(),
    )?;
    let consumer = g.protocol_type.as_str() == "consumer" || g.protocol_type.is_empty();
    Ok(GroupDescription {
        group: group.to_string(),
        state: g.group_state.to_string(),
        protocol_type: g.protocol_type.to_string(),
        protocol: g.protocol_data.to_string(),
        members: g
            .members
            .iter()
            .map(|m| Member {
                member_id: m.member_id.to_string(),
                group_instance_id: m.group_instance_id.as_ref().map(|i| i.to_string()),
                client_id: m.client_id.to_string(),
                client_host: m.client_host.to_string(),
                assignment: if consumer {
                    decode_assignment(&m.member_assignment).unwrap_or_default()
                } else {
                    BTreeMap::new()
                },
                member_epoch: None,
                target: None,
            })
            .collect(),
    })
}

/// ConsumerGroupDescribe of a consumer group (KIP-848): its state with the group epoch and
/// assignor, members with their epochs, current and target assignments; None when it is not
/// a consumer group.
pub fn describe_consumer_group(
    client: &mut Client,
    coordinator: &str,
    group: &str,
) -> Result<Option<GroupDescription>> {
    use kafka_protocol::messages::ConsumerGroupDescribeRequest;
    use kafka_protocol::messages::consumer_group_describe_response::Assignment;
    let conn = client.conn(coordinator)?;
    let v = conn.version_of::<ConsumerGroupDescribeRequest>(i16::MAX)?;
    let req = ConsumerGroupDescribeRequest::default().with_group_ids(vec![GroupId(s(group))]);
    let resp = conn.call(&req, v)?;
    let Some(g) = resp.groups.first() else {
        return Ok(None);
    };
    if g.error_code == ErrorCode::GROUP_ID_NOT_FOUND.code() {
        return Ok(None);
    }
    check(
        g.error_code,
        format!("describing group '{group}'"),
        g.error_message.as_deref(),
    )?;
    let parts = |a: &Assignment| -> BTreeMap<String, Vec<i32>> {
        a.topic_partitions
            .iter()
            .map(|tp| (tp.topic_name.to_string(), tp.partitions.clone()))
            .collect()
    };
    Ok(Some(GroupDescription {
        group: group.to_string(),
        state: g.group_state.to_string(),
        protocol_type: "consumer".into(),
        protocol: format!(
            "{}, group epoch {}, assignment epoch {}",
            g.assignor_name, g.group_epoch, g.assignment_epoch
        ),
        members: g
            .members
            .iter()
            .map(|m| Member {
                member_id: m.member_id.to_string(),
                group_instance_id: m.instance_id.as_ref().map(|i| i.to_string()),
                client_id: m.client_id.to_string(),
                client_host: m.client_host.to_string(),
                assignment: parts(&m.assignment),
                member_epoch: Some(m.member_epoch),
                target: Some(parts(&m.target_assignment)),
            })
            .collect(),
    }))
}

/// Committed offsets of `group`: (topic, partition) -> offset.
pub fn offset_fetch(
    client: &mut Client,
    coordinator: &str,
    group: &str,
) -> Result<BTreeMap<(String, i32), i64>> {
    let conn = client.conn(coordinator)?;
    let v = conn.version_of::<OffsetFetchRequest>(i16::MAX)?;
    let context = format!("fetching the committed offsets of group '{group}'");
    let mut out = BTreeMap::new();
    if v >= 8 {
        let req = OffsetFetchRequest::default().with_groups(vec![
            OffsetFetchRequestGroup::default()
                .with_group_id(GroupId(s(group)))
                .with_topics(None),
        ]);
        let resp = conn.call(&req, v)?;
        for g in &resp.groups {
            check(g.error_code, &context, None)?;
            for t in &g.topics {
                for p in &t.partitions {
                    check(p.error_code, &context, None)?;
                    if p.committed_offset >= 0 {
                        out.insert((t.name.to_string(), p.partition_index), p.committed_offset);
                    }
                }
            }
        }
    } else {
        let mut req = OffsetFetchRequest::default().with_group_id(GroupId(s(group)));
        req.topics = None;
        let resp = conn.call(&req, v.max(2))?;
        check(resp.error_code, &context, None)?;
        for t in &resp.topics {
            for p in &t.partitions {
                check(p.error_code, &context, None)?;
                if p.committed_offset >= 0 {
                    out.insert((t.name.to_string(), p.partition_index), p.committed_offset);
                }
            }
        }
    }
    Ok(out)
}

/// Commits `offsets` for `group` as an admin (generation -1, no member): brokers accept it
/// only while the group has no members.
pub fn offset_commit(
    client: &mut Client,
    coordinator: &str,
    group: &str,
    offsets: &BTreeMap<(String, i32), i64>,
) -> Result<()> {
    let conn = client.conn(coordinator)?;
    let v = conn.version_of::<OffsetCommitRequest>(i16::MAX)?;
    let mut topics: BTreeMap<&str, Vec<OffsetCommitRequestPartition>> = BTreeMap::new();
    for ((t, p), o) in offsets {
        topics.entry(t).or_default().push(
            OffsetCommitRequestPartition::default()
                .with_partition_index(*p)
                .with_committed_offset(*o),
        );
    }
    let req = OffsetCommitRequest::default()
        .with_group_id(GroupId(s(group)))
        .with_generation_id_or_member_epoch(-1)
        .with_member_id(s(""))
        .with_topics(
            topics
                .into_iter()
                .map(|(t, parts)| {
                    OffsetCommitRequestTopic::default()
                        .with_name(topic_name(t))
                        .with_partitions(parts)
                })
                .collect(),
        );
    let resp = conn.call(&req, v)?;
    for t in &resp.topics {
        for p in &t.partitions {
            if p.error_code != 0 {
                let mut e = Error::kafka(
                    format!(
                        "committing offsets of group '{group}' ({} partition {})",
                        t.name.as_str(),
                        p.partition_index
                    ),
                    p.error_code,
                    None,
                );
                if matches!(
                    ErrorCode::from_code(p.error_code),
                    ErrorCode::UNKNOWN_MEMBER_ID
                        | ErrorCode::ILLEGAL_GENERATION
                        | ErrorCode::REBALANCE_IN_PROGRESS
                        | ErrorCode::NON_EMPTY_GROUP
                ) {
                    e = e.with_hint(
                        "the group has active members: stop the group's consumers first",
                    );
                }
                return Err(e);
            }
        }
    }
    Ok(())
}

pub fn delete_group(client: &mut Client, coordinator: &str, group: &str) -> Result<()> {
    let conn = client.conn(coordinator)?;
    let v = conn.version_of::<DeleteGroupsRequest>(i16::MAX)?;
    let req = DeleteGroupsRequest::default().with_groups_names(vec![GroupId(s(group))]);
    let resp = conn.call(&req, v)?;
    let r = resp
        .results
        .iter()
        .find(|r| r.group_id.as_str() == group)
        .ok_or_else(|| Error::other(format!("DeleteGroups: no answer for group '{group}'")))?;
    check(r.error_code, format!("deleting group '{group}'"), None)
}

// ---------------------------------------------------------------------------------------------
// Produce and Fetch

/// One partition's outcome of a Produce.
pub struct Produced {
    pub partition: i32,
    pub base_offset: i64,
}

/// Produces one batch per partition to the leader `node`; with acks=0 nothing comes back.
pub fn produce(
    client: &mut Client,
    node: i32,
    topic: &TopicMeta,
    acks: i16,
    batches: Vec<(i32, Bytes)>,
) -> Result<Vec<Produced>> {
    let conn = client.node(node)?;
    let cap = if topic.id.is_nil() { 12 } else { i16::MAX };
    let v = conn.version_of::<ProduceRequest>(cap)?;
    let req = ProduceRequest::default()
        .with_acks(acks)
        .with_timeout_ms(30_000)
        .with_topic_data(vec![
            TopicProduceData::default()
                .with_name(topic_name(&topic.name))
                .with_topic_id(topic.id)
                .with_partition_data(
                    batches
                        .into_iter()
                        .map(|(p, b)| {
                            PartitionProduceData::default()
                                .with_index(p)
                                .with_records(Some(b))
                        })
                        .collect(),
                ),
        ]);
    if acks == 0 {
        conn.send_only(&req, v)?;
        return Ok(Vec::new());
    }
    let resp = conn.call(&req, v)?;
    let mut out = Vec::new();
    for t in &resp.responses {
        for p in &t.partition_responses {
            check(
                p.error_code,
                format!("producing to '{}' partition {}", topic.name, p.index),
                p.error_message.as_deref(),
            )?;
            out.push(Produced {
                partition: p.index,
                base_offset: p.base_offset,
            });
        }
    }
    Ok(out)
}

/// One partition's answer to a Fetch.
pub struct Fetched {
    pub partition: i32,
    pub error_code: i16,
    pub high_watermark: i64,
    pub log_start_offset: i64,
    pub records: Bytes,
}

/// Fetches `positions` (partition -> offset) of `topic` from the leader `node`.
pub fn fetch(
    client: &mut Client,
    node: i32,
    topic: &TopicMeta,
    positions: &[(i32, i64)],
    max_wait_ms: i32,
) -> Result<Vec<Fetched>> {
    let conn = client.node(node)?;
    let cap = if topic.id.is_nil() { 12 } else { i16::MAX };
    let v = conn.version_of::<FetchRequest>(cap)?;
    let req = FetchRequest::default()
        .with_max_wait_ms(max_wait_ms)
        .with_min_bytes(1)
        .with_max_bytes(16 * 1024 * 1024)
        .with_topics(vec![
            FetchTopic::default()
                .with_topic(topic_name(&topic.name))
                .with_topic_id(topic.id)
                .with_partitions(
                    positions
                        .iter()
                        .map(|&(p, o)| {
                            FetchPartition::default()
                                .with_partition(p)
                                .with_fetch_offset(o)
                                .with_partition_max_bytes(4 * 1024 * 1024)
                        })
                        .collect(),
                ),
        ]);
    let resp = conn.call(&req, v)?;
    check(
        resp.error_code,
        format!("fetching from '{}'", topic.name),
        None,
    )?;
    let mut out = Vec::new();
    for t in &resp.responses {
        let ours = if v >= 13 {
            t.topic_id == topic.id
        } else {
            t.topic.as_str() == topic.name
        };
        if !ours {
            continue;
        }
        for p in &t.partitions {
            out.push(Fetched {
                partition: p.partition_index,
                error_code: p.error_code,
                high_watermark: p.high_watermark,
                log_start_offset: p.log_start_offset,
                records: p.records.clone().unwrap_or_default(),
            });
        }
    }
    Ok(out)
}

// ---------------------------------------------------------------------------------------------
// SCRAM credentials (KIP-554)

/// A user's SCRAM credentials: (user, [(mechanism id, iterations)]).
pub type UserCredentials = (String, Vec<(i8, i32)>);

/// Every user with SCRAM credentials.
pub fn describe_scram(client: &mut Client) -> Result<Vec<UserCredentials>> {
    use kafka_protocol::messages::DescribeUserScramCredentialsRequest;
    let conn = client.any()?;
    let v = conn.version_of::<DescribeUserScramCredentialsRequest>(0)?;
    let resp = conn.call(
        &DescribeUserScramCredentialsRequest::default().with_users(None),
        v,
    )?;
    check(
        resp.error_code,
        "describing SCRAM credentials".to_string(),
        resp.error_message.as_deref(),
    )?;
    Ok(resp
        .results
        .iter()
        .map(|r| {
            (
                r.user.to_string(),
                r.credential_infos
                    .iter()
                    .map(|c| (c.mechanism, c.iterations))
                    .collect(),
            )
        })
        .collect())
}

/// Sets (salted password, salt, iterations) and removes SCRAM credentials of `user`.
pub fn alter_scram(
    client: &mut Client,
    user: &str,
    upsert: &[(i8, i32, Vec<u8>, Vec<u8>)],
    delete: &[i8],
) -> Result<()> {
    use kafka_protocol::messages::AlterUserScramCredentialsRequest;
    use kafka_protocol::messages::alter_user_scram_credentials_request::{
        ScramCredentialDeletion, ScramCredentialUpsertion,
    };
    let conn = client.any()?;
    let v = conn.version_of::<AlterUserScramCredentialsRequest>(0)?;
    let req = AlterUserScramCredentialsRequest::default()
        .with_deletions(
            delete
                .iter()
                .map(|m| {
                    ScramCredentialDeletion::default()
                        .with_name(s(user))
                        .with_mechanism(*m)
                })
                .collect(),
        )
        .with_upsertions(
            upsert
                .iter()
                .map(|(m, i, salt, salted)| {
                    ScramCredentialUpsertion::default()
                        .with_name(s(user))
                        .with_mechanism(*m)
                        .with_iterations(*i)
                        .with_salt(bytes::Bytes::from(salt.clone()))
                        .with_salted_password(bytes::Bytes::from(salted.clone()))
                })
                .collect(),
        );
    let resp = conn.call(&req, v)?;
    for r in &resp.results {
        check(
            r.error_code,
            format!(
                "changing the SCRAM credentials of user '{}'",
                r.user.as_str()
            ),
            r.error_message.as_deref(),
        )?;
    }
    Ok(())
}

// ACLs (CreateAcls, DescribeAcls, DeleteAcls)

/// Creates the ACLs (the first refusal is the error).
pub fn create_acls(client: &mut Client, acls: &[crate::auth::acl::Binding]) -> Result<()> {
    use kafka_protocol::messages::CreateAclsRequest;
    use kafka_protocol::messages::create_acls_request::AclCreation;
    let conn = client.any()?;
    let v = conn.version_of::<CreateAclsRequest>(3)?;
    let req = CreateAclsRequest::default().with_creations(
        acls.iter()
            .map(|b| {
                AclCreation::default()
                    .with_resource_type(b.resource_type.id())
                    .with_resource_name(s(&b.name))
                    .with_resource_pattern_type(b.pattern.id())
                    .with_principal(s(&b.principal))
                    .with_host(s(&b.host))
                    .with_operation(b.operation.id())
                    .with_permission_type(b.permission.id())
            })
            .collect(),
    );
    let resp = conn.call(&req, v)?;
    for (r, b) in resp.results.iter().zip(acls) {
        check(
            r.error_code,
            format!("creating the ACL {b:?}"),
            r.error_message.as_deref(),
        )?;
    }
    Ok(())
}

/// The ACLs that match `filter`.
pub fn describe_acls(
    client: &mut Client,
    filter: &crate::auth::acl::Filter,
) -> Result<Vec<crate::auth::acl::Binding>> {
    use kafka_protocol::messages::DescribeAclsRequest;
    let conn = client.any()?;
    let v = conn.version_of::<DescribeAclsRequest>(3)?;
    let ids = filter.wire_ids();
    let req = DescribeAclsRequest::default()
        .with_resource_type_filter(ids.resource_type)
        .with_resource_name_filter(filter.name.as_deref().map(s))
        .with_pattern_type_filter(ids.pattern)
        .with_principal_filter(filter.principal.as_deref().map(s))
        .with_host_filter(filter.host.as_deref().map(s))
        .with_operation(ids.operation)
        .with_permission_type(ids.permission);
    let resp = conn.call(&req, v)?;
    check(
        resp.error_code,
        "describing ACLs",
        resp.error_message.as_deref(),
    )?;
    Ok(resp
        .resources
        .iter()
        .flat_map(|r| {
            r.acls.iter().filter_map(move |a| {
                let ids = crate::auth::acl::WireIds {
                    resource_type: r.resource_type,
                    pattern: r.pattern_type,
                    operation: a.operation,
                    permission: a.permission_type,
                };
                // An id this build does not know: left out.
                ids.binding(&r.resource_name, &a.principal, &a.host).ok()
            })
        })
        .collect())
}

/// Deletes the ACLs that match any of `filters`; returns those deleted.
pub fn delete_acls(
    client: &mut Client,
    filters: &[crate::auth::acl::Filter],
) -> Result<Vec<crate::auth::acl::Binding>> {
    use kafka_protocol::messages::DeleteAclsRequest;
    use kafka_protocol::messages::delete_acls_request::DeleteAclsFilter;
    let conn = client.any()?;
    let v = conn.version_of::<DeleteAclsRequest>(3)?;
    let req = DeleteAclsRequest::default().with_filters(
        filters
            .iter()
            .map(|f| {
                let ids = f.wire_ids();
                DeleteAclsFilter::default()
                    .with_resource_type_filter(ids.resource_type)
                    .with_resource_name_filter(f.name.as_deref().map(s))
                    .with_pattern_type_filter(ids.pattern)
                    .with_principal_filter(f.principal.as_deref().map(s))
                    .with_host_filter(f.host.as_deref().map(s))
                    .with_operation(ids.operation)
                    .with_permission_type(ids.permission)
            })
            .collect(),
    );
    let resp = conn.call(&req, v)?;
    let mut out = Vec::new();
    for r in &resp.filter_results {
        check(r.error_code, "deleting ACLs", r.error_message.as_deref())?;
        for a in &r.matching_acls {
            check(a.error_code, "deleting an ACL", a.error_message.as_deref())?;
            let ids = crate::auth::acl::WireIds {
                resource_type: a.resource_type,
                pattern: a.pattern_type,
                operation: a.operation,
                permission: a.permission_type,
            };
            out.extend(ids.binding(&a.resource_name, &a.principal, &a.host).ok());
        }
    }
    out.sort();
    out.dedup();
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_a_consumer_assignment() {
        let mut b = Vec::new();
        b.extend_from_slice(&1i16.to_be_bytes());
        b.extend_from_slice(&2i32.to_be_bytes());
        for (t, parts) in [("orders", vec![2i32, 0]), ("pay", vec![1])] {
            b.extend_from_slice(&(t.len() as i16).to_be_bytes());
            b.extend_from_slice(t.as_bytes());
            b.extend_from_slice(&(parts.len() as i32).to_be_bytes());
            for p in parts {
                b.extend_from_slice(&p.to_be_bytes());
            }
        }
        b.extend_from_slice(&(-1i32).to_be_bytes()); // null user data
        let a = decode_assignment(&b).expect("decodes");
        assert_eq!(a["orders"], vec![0, 2]);
        assert_eq!(a["pay"], vec![1]);
        assert!(decode_assignment(&b[..7]).is_none());
        assert!(decode_assignment(&[]).expect("empty").is_empty());
    }
}

// ---------------------------------------------------------------------------------------------
// Client quotas

/// One client quota entity and its quotas, as DescribeClientQuotas answers.
#[derive(Debug, Clone, serde::Serialize)]
pub struct QuotaEntry {
    /// (entity type, name; None for the type's default)
    pub entity: Vec<(String, Option<String>)>,
    pub values: BTreeMap<String, f64>,
}

/// Every client quota whose entity matches `components`: (entity type, name), a None name
/// matching the type's default entity; none: every quota.
pub fn describe_client_quotas(
    client: &mut Client,
    components: &[(String, Option<String>)],
) -> Result<Vec<QuotaEntry>> {
    use kafka_protocol::messages::DescribeClientQuotasRequest;
    use kafka_protocol::messages::describe_client_quotas_request::ComponentData;
    let conn = client.any()?;
    let v = conn.version_of::<DescribeClientQuotasRequest>(1)?;
    let req = DescribeClientQuotasRequest::default()
        .with_components(
            components
                .iter()
                .map(|(t, n)| {
                    ComponentData::default()
                        .with_entity_type(s(t))
                        .with_match_type(if n.is_some() { 0 } else { 1 })
                        .with_match(n.as_deref().map(s))
                })
                .collect(),
        )
        .with_strict(false);
    let resp = conn.call(&req, v)?;
    check(
        resp.error_code,
        "DescribeClientQuotas",
        resp.error_message.as_deref(),
    )?;
    Ok(resp
        .entries
        .unwrap_or_default()
        .into_iter()
        .map(|e| QuotaEntry {
            entity: e
                .entity
                .iter()
                .map(|p| {
                    (
                        p.entity_type.to_string(),
                        p.entity_name.as_ref().map(|n| n.to_string()),
                    )
                })
                .collect(),
            values: e
                .values
                .iter()
                .map(|v| (v.key.to_string(), v.value))
                .collect(),
        })
        .collect())
}

/// Sets (Some) or removes (None) quotas of one client quota entity, on the controller.
pub fn alter_client_quotas(
    client: &mut Client,
    entity: &[(String, Option<String>)],
    ops: &[(String, Option<f64>)],
) -> Result<()> {
    use kafka_protocol::messages::AlterClientQuotasRequest;
    use kafka_protocol::messages::alter_client_quotas_request::{EntityData, EntryData, OpData};
    let conn = controller(client)?;
    let v = conn.version_of::<AlterClientQuotasRequest>(1)?;
    let req = AlterClientQuotasRequest::default().with_entries(vec![
        EntryData::default()
            .with_entity(
                entity
                    .iter()
                    .map(|(t, n)| {
                        EntityData::default()
                            .with_entity_type(s(t))
                            .with_entity_name(n.as_deref().map(s))
                    })
                    .collect(),
            )
            .with_ops(
                ops.iter()
                    .map(|(k, val)| {
                        OpData::default()
                            .with_key(s(k))
                            .with_value(val.unwrap_or(0.0))
                            .with_remove(val.is_none())
                    })
                    .collect(),
            ),
    ]);
    let resp = conn.call(&req, v)?;
    let r = resp
        .entries
        .first()
        .ok_or_else(|| Error::other("AlterClientQuotas: empty answer"))?;
    check(
        r.error_code,
        "altering client quotas",
        r.error_message.as_deref(),
    )
}
