//! The controller channel: what nodes send each other on `--controller-listen`.
//!
//! ```text
//! frame = [body length u32 BE][kind u8][correlation id u32 BE][payload]
//! kind 1  raft     payload = one raft-rs `Message` (protobuf); no answer
//! kind 2  request  payload = a [`Request`] (JSON); answered by a response with its id
//! kind 3  response payload = a [`Response`] (JSON)
//! ```
//!
//! Quorum messages are raft-rs's own encoding; the broker RPCs (registration, heartbeats and
//! requests forwarded to the active controller) are JSON, small and rare enough that being
//! readable in a packet capture is worth more than bytes. A frame over [`FRAME_BYTES_MAX`]
//! closes the connection. This channel is for the cluster's own nodes: it carries no client
//! authentication yet (the security issue adds mutual TLS on it).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::error::KafkaError;

pub const KIND_RAFT: u8 = 1;
pub const KIND_REQUEST: u8 = 2;
pub const KIND_RESPONSE: u8 = 3;

/// Largest frame accepted (a metadata snapshot travels in one raft message).
pub const FRAME_BYTES_MAX: usize = 256 << 20;

/// Bytes before the payload.
pub const HEADER_BYTES: usize = 4 + 1 + 4;

/// Encodes one frame.
pub fn frame(kind: u8, correlation: u32, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(HEADER_BYTES + payload.len());
    let body = (1 + 4 + payload.len()) as u32;
    out.extend_from_slice(&body.to_be_bytes());
    out.push(kind);
    out.extend_from_slice(&correlation.to_be_bytes());
    out.extend_from_slice(payload);
    out
}

/// The context of a client request a broker forwards to the active controller (KIP-590's
/// Envelope): the controller acts for this client, not for the forwarding broker.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Forwarded {
    pub principal: String,
    pub client_id: String,
    pub client_addr: String,
    /// The broker that received the request.
    pub via_broker: i32,
}

/// A topic to create, as forwarded.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TopicSpec {
    pub name: String,
    pub partitions: i32,
    pub replication_factor: i16,
    pub configs: BTreeMap<String, String>,
    pub if_not_exists: bool,
    /// Explicit replica lists by partition (CreateTopics' assignments), if given.
    #[serde(default)]
    pub assignments: Vec<Vec<i32>>,
    #[serde(default)]
    pub internal: bool,
}

/// One config change, as forwarded (see `shard::calls::AlterTopicConfig`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConfigChange {
    pub topic: String,
    /// A dynamic broker config change: `topic` is the broker id (empty: the default).
    #[serde(default)]
    pub broker: bool,
    pub replace: bool,
    pub ops: Vec<(String, Option<String>)>,
}

/// AlterClientQuotas' change of one entity, as forwarded: the entity's (type, name) parts
/// (None: the default) and its ops, (key, Some(value)) to set, (key, None) to remove.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct QuotaAlteration {
    pub entity: Vec<(String, Option<String>)>,
    pub ops: Vec<(String, Option<crate::storage::metadata::record::QuotaValue>)>,
}

/// A broker's local replica of a partition awaiting unclean-shutdown recovery (see
/// `cluster::election::recovery_records`): the epoch of its last batch and its log end.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReplicaEnd {
    pub topic_id: uuid::Uuid,
    pub partition: i32,
    pub last_epoch: i32,
    pub log_end: i64,
}

/// A broker RPC to the active controller.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Request {
    /// A broker starts: it is registered (fenced) under a new epoch.
    Register {
        broker_id: i32,
        incarnation_id: uuid::Uuid,
        host: String,
        port: u16,
        controller_host: String,
        controller_port: u16,
        rack: Option<String>,
        /// The previous process did not stop cleanly (see
        /// `RegisterBrokerRecord::unclean_shutdown`).
        #[serde(default)]
        unclean_shutdown: bool,
        #[serde(default)]
        background_flush_default: bool,
        /// Every listener, by name (see `RegisterBrokerRecord::listeners`).
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        listeners: Vec<crate::storage::metadata::record::ListenerEndpoint>,
    },
    /// A broker is alive and has applied the metadata up to `applied` (a Raft index).
    Heartbeat {
        broker_id: i32,
        broker_epoch: i64,
        applied: u64,
        /// The broker is stopping: fence it now rather than after the session timeout.
        shutting_down: bool,
        /// Its replicas of the partitions awaiting unclean-shutdown recovery.
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        replica_ends: Vec<ReplicaEnd>,
    },
    CreateTopics {
        context: Forwarded,
        topics: Vec<TopicSpec>,
        validate_only: bool,
    },
    DeleteTopics {
        context: Forwarded,
        names: Vec<String>,
    },
    AlterConfigs {
        context: Forwarded,
        changes: Vec<ConfigChange>,
        validate_only: bool,
    },
    /// The quorum as the active controller sees it (DescribeQuorum, `spate cluster status`).
    QuorumStatus,
    /// AlterClientQuotas: one answer per entity.
    AlterClientQuotas {
        context: Forwarded,
        entries: Vec<QuotaAlteration>,
        validate_only: bool,
    },
    /// The next block of producer ids (made durable in the metadata before the answer).
    AllocateProducerIds,
    /// An observer (a broker that is not a voter) asks for the committed metadata entries
    /// from `from` on.
    FetchMetadata { from: u64, max_bytes: u64 },
    CreatePartitions {
        context: Forwarded,
        /// (topic, new total count, explicit replica lists of the new partitions)
        topics: Vec<(String, i32, Vec<Vec<i32>>)>,
        validate_only: bool,
    },
    /// A partition's leader changes its ISR (Kafka's AlterPartition, one partition): checked
    /// against the controller's image (see `cluster::election::alter_isr`), then written.
    AlterPartition(IsrChange),
    /// A broker's replica of a partition went offline (a storage error): it leaves the ISR
    /// and, where it led, the leadership (see `cluster::election::offline_replica_decision`).
    ReplicaOffline(ReplicaOffline),
    /// Partition reassignments (KIP-455): (topic, partition, target replicas; None cancels
    /// the one in progress). One answer per item.
    AlterReassignments {
        context: Forwarded,
        items: Vec<(String, i32, Option<Vec<i32>>)>,
    },
    /// Leader elections on request (KIP-460): preferred, or `unclean`. One answer per
    /// partition.
    ElectLeaders {
        context: Forwarded,
        unclean: bool,
        partitions: Vec<(String, i32)>,
    },
    /// A broker whose data dir held a one-node broker imports its topics (see
    /// `cluster::import`): every partition with this broker as its only replica and leader.
    ImportOneNode(OneNodeImportRequest),
    /// AlterUserScramCredentials (KIP-554): credentials set or removed, one result each.
    AlterScram {
        context: Forwarded,
        changes: Vec<ScramChange>,
    },
    /// CreateAcls' new ACLs and DeleteAcls' removals (by id): one result each, creations
    /// first.
    AlterAcls {
        context: Forwarded,
        create: Vec<crate::storage::metadata::record::AccessControlEntryRecord>,
        remove: Vec<uuid::Uuid>,
    },
}

/// One SCRAM credential change, as AlterUserScramCredentials carries it: a removal, or a
/// salted password with its salt and iterations (never the password).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScramChange {
    pub user: String,
    /// Kafka's ScramMechanism id.
    pub mechanism: i8,
    /// (iterations, salt, salted password); None removes the credential.
    pub upsert: Option<(i32, Vec<u8>, Vec<u8>)>,
}

/// A broker's import of the one-node broker its data dir held.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct OneNodeImportRequest {
    /// The sender and its registration epoch.
    pub broker_id: i32,
    pub broker_epoch: i64,
    pub topics: Vec<crate::storage::metadata::import::ImportTopic>,
    /// The first producer id the one-node broker never handed out.
    pub next_producer_id: i64,
    /// Its client quotas (each taken unless the cluster sets that key of that entity).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub client_quotas: Vec<crate::storage::metadata::record::ClientQuotaRecord>,
    /// Its ACLs (each taken unless the cluster has the same ACL).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub acls: Vec<crate::storage::metadata::record::AccessControlEntryRecord>,
}

/// A leader's request to change its partition's ISR (Kafka's AlterPartition, one partition).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct IsrChange {
    /// The sender (the partition's leader) and its registration epoch.
    pub broker_id: i32,
    pub broker_epoch: i64,
    pub topic_id: uuid::Uuid,
    pub partition: i32,
    /// The leader and partition epochs the sender's state is based on.
    pub leader_epoch: i32,
    pub partition_epoch: i32,
    /// The new ISR: (broker, its registration epoch, or -1 not to check it); the epoch keeps
    /// an older incarnation of a follower out of the ISR (KIP-903).
    pub new_isr: Vec<(i32, i64)>,
}

/// A broker's report that its replica of one partition is offline.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReplicaOffline {
    pub broker_id: i32,
    pub broker_epoch: i64,
    pub topic_id: uuid::Uuid,
    pub partition: i32,
}

/// An error as it travels: the Kafka code and the message.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct WireError {
    pub code: i16,
    pub message: String,
}

impl From<&KafkaError> for WireError {
    fn from(e: &KafkaError) -> WireError {
        WireError {
            code: e.code(),
            message: e.to_string(),
        }
    }
}

impl From<WireError> for KafkaError {
    fn from(e: WireError) -> KafkaError {
        KafkaError::Forwarded {
            code: e.code,
            message: e.message,
        }
    }
}

/// What a created topic looks like to the forwarding broker.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CreatedTopic {
    pub name: String,
    pub topic_id: uuid::Uuid,
    pub partitions: i32,
    pub replication_factor: i16,
    pub configs: BTreeMap<String, String>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Response {
    Registered {
        broker_epoch: i64,
    },
    Heartbeat {
        fenced: bool,
    },
    /// This node is not the active controller; the one it knows of, if any.
    NotController {
        leader: Option<i32>,
    },
    /// Answers to CreateTopics, and the Raft index the controller had applied when it
    /// answered (the forwarding broker waits until it has applied as much, so its client
    /// sees what it created).
    Topics {
        results: Vec<Result<CreatedTopic, WireError>>,
        applied: u64,
    },
    Done {
        results: Vec<Result<(), WireError>>,
        applied: u64,
    },
    Error(WireError),
    Quorum(QuorumReport),
    ProducerIds {
        first: i64,
        count: i64,
    },
    /// The answer to AlterPartition: the partition as committed (or as it is, when the ISR
    /// did not change), or the error; and the Raft index the controller had applied.
    Partition {
        result: Result<PartitionState, WireError>,
        applied: u64,
    },
    /// The answer to ImportOneNode: per topic, imported (or already imported) or refused;
    /// and the Raft index the controller had applied.
    Imported {
        results: Vec<(String, Result<(), WireError>)>,
        applied: u64,
    },
    /// Committed entries (index, term, data) for an observer, or the metadata as a snapshot
    /// (index, term, data) when the entries it asked for were compacted away.
    Entries {
        entries: Vec<(u64, u64, Vec<u8>)>,
        snapshot: Option<(u64, u64, Vec<u8>)>,
    },
}

/// One partition's replicas, ISR, leader and epochs, as the controller committed them.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartitionState {
    pub replicas: Vec<i32>,
    pub isr: Vec<i32>,
    pub leader: i32,
    pub leader_epoch: i32,
    pub partition_epoch: i32,
    #[serde(default)]
    pub adding_replicas: Vec<i32>,
    #[serde(default)]
    pub removing_replicas: Vec<i32>,
}

impl From<PartitionState> for crate::storage::catalog::PartitionAssignment {
    fn from(s: PartitionState) -> Self {
        crate::storage::catalog::PartitionAssignment {
            replicas: s.replicas,
            isr: s.isr,
            leader: s.leader,
            leader_epoch: s.leader_epoch,
            partition_epoch: s.partition_epoch,
            adding_replicas: s.adding_replicas,
            removing_replicas: s.removing_replicas,
        }
    }
}

impl From<&crate::storage::metadata::record::PartitionRecord> for PartitionState {
    fn from(p: &crate::storage::metadata::record::PartitionRecord) -> Self {
        PartitionState {
            replicas: p.replicas.clone(),
            isr: p.isr.clone(),
            leader: p.leader,
            leader_epoch: p.leader_epoch,
            partition_epoch: p.partition_epoch,
            adding_replicas: p.adding_replicas.clone(),
            removing_replicas: p.removing_replicas.clone(),
        }
    }
}

/// The metadata quorum as its leader sees it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct QuorumReport {
    /// The active controller (the Raft leader).
    pub leader: i32,
    /// The Raft term (Kafka's leader epoch of the metadata log).
    pub term: u64,
    /// The commit index (the metadata log's high watermark).
    pub commit: u64,
    /// Each voter and the last index the leader knows it holds.
    pub voters: Vec<VoterReport>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct VoterReport {
    pub node: i32,
    pub matched: u64,
    /// Whether the leader heard from it within the last election timeout.
    pub recent_active: bool,
}

pub fn encode<T: Serialize>(v: &T) -> Vec<u8> {
    // Plain enums of strings, integers and vectors: serializing them to a Vec cannot fail.
    serde_json::to_vec(v).unwrap_or_default()
}

pub fn decode<'a, T: Deserialize<'a>>(bytes: &'a [u8]) -> Result<T, String> {
    serde_json::from_slice(bytes).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_round_trip() {
        let r = Request::Heartbeat {
            broker_id: 2,
            broker_epoch: 9,
            applied: 44,
            shutting_down: false,
            replica_ends: vec![ReplicaEnd {
                topic_id: uuid::Uuid::from_u128(3),
                partition: 1,
                last_epoch: 4,
                log_end: 99,
            }],
        };
        assert_eq!(decode::<Request>(&encode(&r)).unwrap(), r);
        // A heartbeat or registration of an older version (without the KIP-966 fields).
        let old =
            br#"{"Heartbeat":{"broker_id":2,"broker_epoch":9,"applied":44,"shutting_down":false}}"#;
        assert!(matches!(
            decode::<Request>(old).unwrap(),
            Request::Heartbeat { replica_ends, .. } if replica_ends.is_empty()
        ));
        let f = frame(KIND_REQUEST, 7, b"xy");
        assert_eq!(&f[..4], &7u32.to_be_bytes());
        assert_eq!(f[4], KIND_REQUEST);
        assert_eq!(&f[5..9], &7u32.to_be_bytes());
        assert!(decode::<Request>(b"{\"Nope\":1}").is_err());
        let r = Request::AlterPartition(IsrChange {
            broker_id: 1,
            broker_epoch: 4,
            topic_id: uuid::Uuid::from_u128(3),
            partition: 2,
            leader_epoch: 5,
            partition_epoch: 6,
            new_isr: vec![(1, 4), (2, -1)],
        });
        assert_eq!(decode::<Request>(&encode(&r)).unwrap(), r);
        let a = Response::Partition {
            result: Err(WireError {
                code: 107,
                message: "m".into(),
            }),
            applied: 9,
        };
        assert_eq!(decode::<Response>(&encode(&a)).unwrap(), a);
        let r = Request::AlterReassignments {
            context: Forwarded::default(),
            items: vec![("t".into(), 0, Some(vec![2, 3])), ("t".into(), 1, None)],
        };
        assert_eq!(decode::<Request>(&encode(&r)).unwrap(), r);
        let r = Request::ElectLeaders {
            context: Forwarded::default(),
            unclean: true,
            partitions: vec![("t".into(), 0)],
        };
        assert_eq!(decode::<Request>(&encode(&r)).unwrap(), r);
        // A config change of an older version is a topic's.
        let c: ConfigChange =
            decode(br#"{"topic":"t","replace":false,"ops":[["a",null]]}"#).unwrap();
        assert!(!c.broker);
    }
}
