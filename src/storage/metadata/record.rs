//! The metadata records: a closed, versioned set of typed changes to the cluster's metadata.
//!
//! Every change to topics, partitions or configs is one or more of these records. The same
//! records are the local log's contents, the snapshot's contents, and (in the cluster issue)
//! the payload of the Raft entries, so their encoding is stable: a record is
//! `[type id: u16 BE][version: u16 BE][payload]`, where the payload is the JSON form of that
//! type's struct at that version. The type id and version are binary so that a reader picks
//! the decoder before it looks at the payload; the payload is JSON so that a later version can
//! add an optional field (`#[serde(default)]`) without a new decoder, and so that a log can be
//! read by eye when something goes wrong.
//!
//! Type ids are never reused. Those of records that later issues add are reserved in
//! [`RESERVED_TYPES`]; decoding a reserved or unknown id, or a version newer than this build
//! knows, is an error that names it, never a panic and never a silent skip (skipping a record
//! would silently lose metadata).

use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// Type ids of the records this build knows.
pub const TYPE_TOPIC: u16 = 1;
pub const TYPE_PARTITION: u16 = 2;
pub const TYPE_CONFIG: u16 = 3;
pub const TYPE_REMOVE_TOPIC: u16 = 4;
pub const TYPE_PARTITION_CHANGE: u16 = 5;
pub const TYPE_ACCESS_CONTROL_ENTRY: u16 = 6;
pub const TYPE_REMOVE_ACCESS_CONTROL_ENTRY: u16 = 7;
pub const TYPE_USER_SCRAM_CREDENTIAL: u16 = 8;
pub const TYPE_REMOVE_USER_SCRAM_CREDENTIAL: u16 = 9;
pub const TYPE_CLIENT_QUOTA: u16 = 10;
pub const TYPE_PRODUCER_IDS: u16 = 11;
pub const TYPE_REGISTER_BROKER: u16 = 12;
pub const TYPE_CLUSTER_ID: u16 = 15;
pub const TYPE_BROKER_FENCE: u16 = 16;

/// Every type id this build reads and writes.
pub const KNOWN_TYPES: &[u16] = &[
    TYPE_TOPIC,
    TYPE_PARTITION,
    TYPE_CONFIG,
    TYPE_REMOVE_TOPIC,
    TYPE_PARTITION_CHANGE,
    TYPE_ACCESS_CONTROL_ENTRY,
    TYPE_REMOVE_ACCESS_CONTROL_ENTRY,
    TYPE_REGISTER_BROKER,
    TYPE_CLUSTER_ID,
    TYPE_BROKER_FENCE,
    TYPE_PRODUCER_IDS,
    TYPE_USER_SCRAM_CREDENTIAL,
    TYPE_REMOVE_USER_SCRAM_CREDENTIAL,
    TYPE_CLIENT_QUOTA,
];

/// Type ids kept for records that later issues add, with the record each is for. A log that
/// holds one of them was written by a newer build; this one refuses to read it.
pub const RESERVED_TYPES: &[(u16, &str)] = &[
    (13, "UnregisterBrokerRecord"),
    (14, "FeatureLevelRecord (the metadata version in force)"),
];

/// Latest version of each record this build writes (and the newest it reads).
const VERSION: u16 = 0;

/// Largest record payload accepted when decoding, so a garbled length cannot make the decoder
/// allocate without bound (a batch's CRC has already been checked, so this is a second line).
pub const RECORD_PAYLOAD_MAX: usize = 1 << 20;

/// Kafka's config resource types, by their wire numbers (`DescribeConfigs`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(into = "i8", try_from = "i8")]
pub enum ConfigResource {
    Topic,
    Broker,
}

impl From<ConfigResource> for i8 {
    fn from(r: ConfigResource) -> i8 {
        match r {
            ConfigResource::Topic => 2,
            ConfigResource::Broker => 4,
        }
    }
}

impl TryFrom<i8> for ConfigResource {
    type Error = String;
    fn try_from(v: i8) -> Result<ConfigResource, String> {
        match v {
            2 => Ok(ConfigResource::Topic),
            4 => Ok(ConfigResource::Broker),
            other => Err(format!("unknown config resource type {other}")),
        }
    }
}

/// A topic was created. Its partitions follow as [`PartitionRecord`]s, its configs as
/// [`ConfigRecord`]s, in the same batch.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TopicRecord {
    pub name: String,
    pub topic_id: Uuid,
}

/// A partition and its replica assignment. On one node: replicas and ISR are `[node id]`, the
/// leader is the node, the leader epoch 0. A record for a partition that exists replaces it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartitionRecord {
    pub topic_id: Uuid,
    pub partition: i32,
    pub replicas: Vec<i32>,
    pub isr: Vec<i32>,
    pub leader: i32,
    pub leader_epoch: i32,
    /// Bumped by every applied change of the partition (absent in records of older versions:
    /// 0); written so a snapshot keeps it.
    #[serde(default)]
    pub partition_epoch: i32,
    /// During a reassignment (KIP-455): the target replicas not in the original set, which
    /// are catching up, and the original replicas not in the target, which leave when it
    /// completes. Empty otherwise (and in records of older versions).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub adding_replicas: Vec<i32>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub removing_replicas: Vec<i32>,
}

/// A partition's leader, leader epoch or ISR changed (Kafka's PartitionChangeRecord): a
/// broker was fenced (it leaves the ISRs, its partitions get another leader or none, -1) or
/// came back, a leader changed its ISR (AlterPartition), or a preferred replica leads again
/// (see `cluster::election`), or a reassignment started, completed or was cancelled (see
/// `cluster::reassign`): only then do the replicas change.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartitionChangeRecord {
    pub topic_id: Uuid,
    pub partition: i32,
    pub leader: i32,
    pub leader_epoch: i32,
    pub isr: Vec<i32>,
    /// Kafka's nullable fields: None leaves the partition's value as it is (and is what
    /// records of older versions decode to). The replicas change only with a reassignment
    /// (it starts, completes or is cancelled; see `cluster::reassign`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replicas: Option<Vec<i32>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub adding_replicas: Option<Vec<i32>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub removing_replicas: Option<Vec<i32>>,
}

/// A broker registered with the controller (at each start: `incarnation_id` is new each
/// time). The broker starts fenced. Its epoch is chosen by the controller, above every epoch
/// the image has seen, so a heartbeat of an older incarnation is told apart.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RegisterBrokerRecord {
    pub broker_id: i32,
    pub broker_epoch: i64,
    pub incarnation_id: Uuid,
    pub host: String,
    pub port: u16,
    /// Where the broker serves the metadata quorum (its `--controller-listen`).
    pub controller_host: String,
    pub controller_port: u16,
    #[serde(default)]
    pub rack: Option<String>,
    /// The broker's previous process stopped without a clean shutdown (no clean-shutdown
    /// marker): partitions that flush in the background may have lost their unflushed tail
    /// there, so where it is a partition's last in-sync replica it does not lead again before
    /// the other replicas' logs were compared with its own (KIP-966, see
    /// `cluster::election::recovery_records`). Absent in records of older versions: false.
    #[serde(default, skip_serializing_if = "is_false")]
    pub unclean_shutdown: bool,
    /// The broker's default flush policy flushes in the background (`--flush-ms` or
    /// `--flush-messages` set), for topics that set neither.
    #[serde(default, skip_serializing_if = "is_false")]
    pub background_flush_default: bool,
    /// Every listener of the broker, as clients that come in on a listener of that name are
    /// told to reach it (Kafka's endpoints); `host`/`port` above are the inter-broker one.
    /// Absent in records of older versions: one listener, at `host`/`port`, for every name.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub listeners: Vec<ListenerEndpoint>,
}

/// One listener of a registered broker: its name, advertised address and security protocol.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ListenerEndpoint {
    pub name: String,
    pub host: String,
    pub port: u16,
    pub security_protocol: String,
}

fn is_false(b: &bool) -> bool {
    !*b
}

/// The cluster's id, written once by the first controller (Kafka keeps it in
/// `meta.properties` of every node; here the quorum decides it, and nodes adopt it).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterIdRecord {
    pub cluster_id: String,
}

/// A broker was fenced (missed heartbeats, or re-registered) or unfenced (caught up with the
/// metadata): Kafka's BrokerRegistrationChangeRecord. Only for the registration with
/// `broker_epoch`; a stale one is ignored.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BrokerFenceRecord {
    pub broker_id: i32,
    pub broker_epoch: i64,
    pub fenced: bool,
}

/// One config key of one resource set to a value, or removed (`value: None`, back to the
/// default).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConfigRecord {
    pub resource_type: ConfigResource,
    pub resource_name: String,
    pub name: String,
    pub value: Option<String>,
}

/// A topic was deleted, with its partitions and its configs.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RemoveTopicRecord {
    pub topic_id: Uuid,
}

/// A block of producer ids was handed out: every id below `next_producer_id` may be in use,
/// so after a restart ids start there (Kafka's `ProducerIdsRecord`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProducerIdsRecord {
    /// The broker the block went to.
    pub broker_id: i32,
    /// The first id not handed out yet.
    pub next_producer_id: i64,
}

/// A user's SCRAM credential for one mechanism (Kafka's `UserScramCredentialRecord`): never
/// the password, only what the server side of the exchange needs.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserScramCredentialRecord {
    pub name: String,
    /// Kafka's ScramMechanism: 1 SCRAM-SHA-256, 2 SCRAM-SHA-512.
    pub mechanism: i8,
    pub salt: Vec<u8>,
    pub stored_key: Vec<u8>,
    pub server_key: Vec<u8>,
    pub iterations: u32,
}

/// A user's credential for one mechanism was removed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RemoveUserScramCredentialRecord {
    pub name: String,
    pub mechanism: i8,
}

/// One ACL (Kafka's `AccessControlEntryRecord`), its enums by Kafka's ids (see `auth::acl`):
/// resource type, pattern type, operation and permission.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct AccessControlEntryRecord {
    pub id: Uuid,
    pub resource_type: i8,
    pub resource_name: String,
    pub pattern_type: i8,
    pub principal: String,
    pub host: String,
    pub operation: i8,
    pub permission_type: i8,
}

/// An ACL was removed (Kafka's `RemoveAccessControlEntryRecord`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RemoveAccessControlEntryRecord {
    pub id: Uuid,
}

/// One component of a client quota entity (Kafka's `ClientQuotaRecord.EntityData`): its type
/// (`user` or `client-id`) and its name, None for the type's default entity.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct QuotaEntityPart {
    pub entity_type: String,
    pub entity_name: Option<String>,
}

/// A client quota value. Kafka's quotas are doubles; they are compared by their bits here, so
/// the image stays `Eq` (a NaN is never stored: the controller refuses it).
#[derive(Clone, Copy, Debug, Serialize, Deserialize)]
#[serde(transparent)]
pub struct QuotaValue(pub f64);

impl PartialEq for QuotaValue {
    fn eq(&self, other: &QuotaValue) -> bool {
        self.0.to_bits() == other.0.to_bits()
    }
}

impl Eq for QuotaValue {}

/// One quota key of one client quota entity set to a value, or removed (Kafka's
/// `ClientQuotaRecord`). The entity's parts are sorted by type, so one entity has one spelling.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClientQuotaRecord {
    pub entity: Vec<QuotaEntityPart>,
    pub key: String,
    pub value: QuotaValue,
    #[serde(default, skip_serializing_if = "is_false")]
    pub remove: bool,
}

/// One metadata change. Closed: adding a kind is adding a variant, a type id and its decoder.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MetadataRecord {
    Topic(TopicRecord),
    Partition(PartitionRecord),
    Config(ConfigRecord),
    RemoveTopic(RemoveTopicRecord),
    PartitionChange(PartitionChangeRecord),
    AccessControlEntry(AccessControlEntryRecord),
    RemoveAccessControlEntry(RemoveAccessControlEntryRecord),
    RegisterBroker(RegisterBrokerRecord),
    ClusterId(ClusterIdRecord),
    BrokerFence(BrokerFenceRecord),
    ProducerIds(ProducerIdsRecord),
    UserScramCredential(UserScramCredentialRecord),
    RemoveUserScramCredential(RemoveUserScramCredentialRecord),
    ClientQuota(ClientQuotaRecord),
}

/// Why a record could not be decoded.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum RecordError {
    #[error("metadata record is {len} bytes, shorter than its 4-byte type and version header")]
    Short { len: usize },
    #[error(
        "metadata record type {type_id} is reserved for {what}, which this build does not support \
         (the log was written by a newer Spate)"
    )]
    Reserved { type_id: u16, what: &'static str },
    #[error("unknown metadata record type {type_id}")]
    UnknownType { type_id: u16 },
    #[error(
        "metadata record type {type_id} has version {version}; this build reads up to {VERSION}"
    )]
    UnsupportedVersion { type_id: u16, version: u16 },
    #[error("metadata record payload of {len} bytes is over {RECORD_PAYLOAD_MAX}")]
    TooLarge { len: usize },
    #[error("metadata record type {type_id} has a bad payload: {reason}")]
    BadPayload { type_id: u16, reason: String },
}

impl MetadataRecord {
    pub fn type_id(&self) -> u16 {
        match self {
            MetadataRecord::Topic(_) => TYPE_TOPIC,
            MetadataRecord::Partition(_) => TYPE_PARTITION,
            MetadataRecord::Config(_) => TYPE_CONFIG,
            MetadataRecord::RemoveTopic(_) => TYPE_REMOVE_TOPIC,
            MetadataRecord::PartitionChange(_) => TYPE_PARTITION_CHANGE,
            MetadataRecord::AccessControlEntry(_) => TYPE_ACCESS_CONTROL_ENTRY,
            MetadataRecord::RemoveAccessControlEntry(_) => TYPE_REMOVE_ACCESS_CONTROL_ENTRY,
            MetadataRecord::RegisterBroker(_) => TYPE_REGISTER_BROKER,
            MetadataRecord::ClusterId(_) => TYPE_CLUSTER_ID,
            MetadataRecord::BrokerFence(_) => TYPE_BROKER_FENCE,
            MetadataRecord::ProducerIds(_) => TYPE_PRODUCER_IDS,
            MetadataRecord::UserScramCredential(_) => TYPE_USER_SCRAM_CREDENTIAL,
            MetadataRecord::RemoveUserScramCredential(_) => TYPE_REMOVE_USER_SCRAM_CREDENTIAL,
            MetadataRecord::ClientQuota(_) => TYPE_CLIENT_QUOTA,
        }
    }

    /// Appends the record's encoding to `out`.
    pub fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.type_id().to_be_bytes());
        out.extend_from_slice(&VERSION.to_be_bytes());
        // Serializing these plain structs (strings, integers, uuids, a map-free layout) to a
        // Vec cannot fail: serde_json fails only on maps with non-string keys or on a failing
        // writer, and neither exists here.
        let written = match self {
            MetadataRecord::Topic(r) => serde_json::to_writer(&mut *out, r),
            MetadataRecord::Partition(r) => serde_json::to_writer(&mut *out, r),
            MetadataRecord::Config(r) => serde_json::to_writer(&mut *out, r),
            MetadataRecord::RemoveTopic(r) => serde_json::to_writer(&mut *out, r),
            MetadataRecord::PartitionChange(r) => serde_json::to_writer(&mut *out, r),
            MetadataRecord::AccessControlEntry(r) => serde_json::to_writer(&mut *out, r),
            MetadataRecord::RemoveAccessControlEntry(r) => serde_json::to_writer(&mut *out, r),
            MetadataRecord::RegisterBroker(r) => serde_json::to_writer(&mut *out, r),
            MetadataRecord::ClusterId(r) => serde_json::to_writer(&mut *out, r),
            MetadataRecord::BrokerFence(r) => serde_json::to_writer(&mut *out, r),
            MetadataRecord::ProducerIds(r) => serde_json::to_writer(&mut *out, r),
            MetadataRecord::UserScramCredential(r) => serde_json::to_writer(&mut *out, r),
            MetadataRecord::RemoveUserScramCredential(r) => serde_json::to_writer(&mut *out, r),
            MetadataRecord::ClientQuota(r) => serde_json::to_writer(&mut *out, r),
        };
        debug_assert!(
            written.is_ok(),
            "metadata record did not serialize: {written:?}"
        );
    }

    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::new();
        self.encode(&mut out);
        out
    }

    /// Decodes one record (exactly `bytes`, as framed by the batch).
    pub fn decode(bytes: &[u8]) -> Result<MetadataRecord, RecordError> {
        if bytes.len() < 4 {
            return Err(RecordError::Short { len: bytes.len() });
        }
        let type_id = u16::from_be_bytes([bytes[0], bytes[1]]);
        let version = u16::from_be_bytes([bytes[2], bytes[3]]);
        let payload = &bytes[4..];
        if let Some((_, what)) = RESERVED_TYPES.iter().find(|(id, _)| *id == type_id) {
            return Err(RecordError::Reserved { type_id, what });
        }
        if !KNOWN_TYPES.contains(&type_id) {
            return Err(RecordError::UnknownType { type_id });
        }
        if version > VERSION {
            return Err(RecordError::UnsupportedVersion { type_id, version });
        }
        if payload.len() > RECORD_PAYLOAD_MAX {
            return Err(RecordError::TooLarge { len: payload.len() });
        }
        let bad = |e: serde_json::Error| RecordError::BadPayload {
            type_id,
            reason: e.to_string(),
        };
        Ok(match type_id {
            TYPE_TOPIC => MetadataRecord::Topic(serde_json::from_slice(payload).map_err(bad)?),
            TYPE_PARTITION => {
                MetadataRecord::Partition(serde_json::from_slice(payload).map_err(bad)?)
            }
            TYPE_CONFIG => MetadataRecord::Config(serde_json::from_slice(payload).map_err(bad)?),
            TYPE_PARTITION_CHANGE => {
                MetadataRecord::PartitionChange(serde_json::from_slice(payload).map_err(bad)?)
            }
            TYPE_ACCESS_CONTROL_ENTRY => {
                MetadataRecord::AccessControlEntry(serde_json::from_slice(payload).map_err(bad)?)
            }
            TYPE_REMOVE_ACCESS_CONTROL_ENTRY => MetadataRecord::RemoveAccessControlEntry(
                serde_json::from_slice(payload).map_err(bad)?,
            ),
            TYPE_REGISTER_BROKER => {
                MetadataRecord::RegisterBroker(serde_json::from_slice(payload).map_err(bad)?)
            }
            TYPE_CLUSTER_ID => {
                MetadataRecord::ClusterId(serde_json::from_slice(payload).map_err(bad)?)
            }
            TYPE_BROKER_FENCE => {
                MetadataRecord::BrokerFence(serde_json::from_slice(payload).map_err(bad)?)
            }
            TYPE_PRODUCER_IDS => {
                MetadataRecord::ProducerIds(serde_json::from_slice(payload).map_err(bad)?)
            }
            TYPE_USER_SCRAM_CREDENTIAL => {
                MetadataRecord::UserScramCredential(serde_json::from_slice(payload).map_err(bad)?)
            }
            TYPE_REMOVE_USER_SCRAM_CREDENTIAL => MetadataRecord::RemoveUserScramCredential(
                serde_json::from_slice(payload).map_err(bad)?,
            ),
            TYPE_CLIENT_QUOTA => {
                MetadataRecord::ClientQuota(serde_json::from_slice(payload).map_err(bad)?)
            }
            _ => MetadataRecord::RemoveTopic(serde_json::from_slice(payload).map_err(bad)?),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(n: u128) -> Uuid {
        Uuid::from_u128(n)
    }

    /// Each record with its exact encoding: a change to either side is a format change, which
    /// must come with a new version, not a silent edit.
    fn vectors() -> Vec<(MetadataRecord, &'static str)> {
        vec![
            (
                MetadataRecord::Topic(TopicRecord {
                    name: "orders".into(),
                    topic_id: id(1),
                }),
                r#"{"name":"orders","topic_id":"00000000-0000-0000-0000-000000000001"}"#,
            ),
            (
                MetadataRecord::Partition(PartitionRecord {
                    topic_id: id(1),
                    partition: 7,
                    replicas: vec![1],
                    isr: vec![1],
                    leader: 1,
                    leader_epoch: 0,
                    partition_epoch: 0,
                    ..Default::default()
                }),
                r#"{"topic_id":"00000000-0000-0000-0000-000000000001","partition":7,"replicas":[1],"isr":[1],"leader":1,"leader_epoch":0,"partition_epoch":0}"#,
            ),
            (
                MetadataRecord::Config(ConfigRecord {
                    resource_type: ConfigResource::Topic,
                    resource_name: "orders".into(),
                    name: "retention.ms".into(),
                    value: Some("1000".into()),
                }),
                r#"{"resource_type":2,"resource_name":"orders","name":"retention.ms","value":"1000"}"#,
            ),
            (
                MetadataRecord::Config(ConfigRecord {
                    resource_type: ConfigResource::Broker,
                    resource_name: "1".into(),
                    name: "segment.ms".into(),
                    value: None,
                }),
                r#"{"resource_type":4,"resource_name":"1","name":"segment.ms","value":null}"#,
            ),
            (
                MetadataRecord::RemoveTopic(RemoveTopicRecord { topic_id: id(2) }),
                r#"{"topic_id":"00000000-0000-0000-0000-000000000002"}"#,
            ),
            (
                MetadataRecord::PartitionChange(PartitionChangeRecord {
                    topic_id: id(1),
                    partition: 3,
                    leader: -1,
                    leader_epoch: 4,
                    isr: vec![2],
                    ..Default::default()
                }),
                r#"{"topic_id":"00000000-0000-0000-0000-000000000001","partition":3,"leader":-1,"leader_epoch":4,"isr":[2]}"#,
            ),
            (
                MetadataRecord::AccessControlEntry(AccessControlEntryRecord {
                    id: id(5),
                    resource_type: 2,
                    resource_name: "orders-".into(),
                    pattern_type: 4,
                    principal: "User:alice".into(),
                    host: "*".into(),
                    operation: 4,
                    permission_type: 3,
                }),
                r#"{"id":"00000000-0000-0000-0000-000000000005","resource_type":2,"resource_name":"orders-","pattern_type":4,"principal":"User:alice","host":"*","operation":4,"permission_type":3}"#,
            ),
            (
                MetadataRecord::RemoveAccessControlEntry(RemoveAccessControlEntryRecord {
                    id: id(5),
                }),
                r#"{"id":"00000000-0000-0000-0000-000000000005"}"#,
            ),
            (
                MetadataRecord::RegisterBroker(RegisterBrokerRecord {
                    broker_id: 2,
                    broker_epoch: 5,
                    incarnation_id: id(9),
                    host: "127.0.0.1".into(),
                    port: 9192,
                    controller_host: "127.0.0.1".into(),
                    controller_port: 9193,
                    rack: None,
                    unclean_shutdown: false,
                    background_flush_default: false,
                    listeners: Vec::new(),
                }),
                r#"{"broker_id":2,"broker_epoch":5,"incarnation_id":"00000000-0000-0000-0000-000000000009","host":"127.0.0.1","port":9192,"controller_host":"127.0.0.1","controller_port":9193,"rack":null}"#,
            ),
            (
                MetadataRecord::ClusterId(ClusterIdRecord {
                    cluster_id: "abc".into(),
                }),
                r#"{"cluster_id":"abc"}"#,
            ),
            (
                MetadataRecord::BrokerFence(BrokerFenceRecord {
                    broker_id: 2,
                    broker_epoch: 7,
                    fenced: false,
                }),
                r#"{"broker_id":2,"broker_epoch":7,"fenced":false}"#,
            ),
            (
                MetadataRecord::ProducerIds(ProducerIdsRecord {
                    broker_id: 1,
                    next_producer_id: 2000,
                }),
                r#"{"broker_id":1,"next_producer_id":2000}"#,
            ),
            (
                MetadataRecord::UserScramCredential(UserScramCredentialRecord {
                    name: "alice".into(),
                    mechanism: 1,
                    salt: vec![1, 2],
                    stored_key: vec![3],
                    server_key: vec![4],
                    iterations: 4096,
                }),
                r#"{"name":"alice","mechanism":1,"salt":[1,2],"stored_key":[3],"server_key":[4],"iterations":4096}"#,
            ),
            (
                MetadataRecord::RemoveUserScramCredential(RemoveUserScramCredentialRecord {
                    name: "alice".into(),
                    mechanism: 2,
                }),
                r#"{"name":"alice","mechanism":2}"#,
            ),
            (
                MetadataRecord::ClientQuota(ClientQuotaRecord {
                    entity: vec![
                        QuotaEntityPart {
                            entity_type: "client-id".into(),
                            entity_name: Some("app".into()),
                        },
                        QuotaEntityPart {
                            entity_type: "user".into(),
                            entity_name: None,
                        },
                    ],
                    key: "producer_byte_rate".into(),
                    value: QuotaValue(1048576.0),
                    remove: false,
                }),
                r#"{"entity":[{"entity_type":"client-id","entity_name":"app"},{"entity_type":"user","entity_name":null}],"key":"producer_byte_rate","value":1048576.0}"#,
            ),
        ]
    }

    fn check(record: &MetadataRecord, payload: &str) {
        let bytes = record.to_bytes();
        let mut expected = record.type_id().to_be_bytes().to_vec();
        expected.extend_from_slice(&VERSION.to_be_bytes());
        expected.extend_from_slice(payload.as_bytes());
        assert_eq!(bytes, expected, "encoding of {record:?}");
        assert_eq!(&MetadataRecord::decode(&bytes).unwrap(), record);
    }

    #[test]
    fn every_record_type_round_trips() {
        let vectors = vectors();
        let mut types: Vec<u16> = vectors.iter().map(|(r, _)| r.type_id()).collect();
        types.dedup();
        assert_eq!(types, KNOWN_TYPES, "every record type has a vector");
        for (record, payload) in &vectors {
            check(record, payload);
        }
    }

    fn raw(type_id: u16, version: u16, payload: &str) -> Vec<u8> {
        let mut b = type_id.to_be_bytes().to_vec();
        b.extend_from_slice(&version.to_be_bytes());
        b.extend_from_slice(payload.as_bytes());
        b
    }

    #[test]
    fn reassignment_fields_round_trip_and_default_when_absent() {
        let id = Uuid::from_u128(1);
        check(
            &MetadataRecord::Partition(PartitionRecord {
                topic_id: id,
                partition: 0,
                replicas: vec![2, 3, 1],
                isr: vec![1, 2],
                leader: 1,
                leader_epoch: 0,
                partition_epoch: 1,
                adding_replicas: vec![3],
                removing_replicas: vec![1],
            }),
            r#"{"topic_id":"00000000-0000-0000-0000-000000000001","partition":0,"replicas":[2,3,1],"isr":[1,2],"leader":1,"leader_epoch":0,"partition_epoch":1,"adding_replicas":[3],"removing_replicas":[1]}"#,
        );
        check(
            &MetadataRecord::PartitionChange(PartitionChangeRecord {
                topic_id: id,
                partition: 0,
                leader: 2,
                leader_epoch: 1,
                isr: vec![2, 3],
                replicas: Some(vec![2, 3]),
                adding_replicas: Some(vec![]),
                removing_replicas: Some(vec![]),
            }),
            r#"{"topic_id":"00000000-0000-0000-0000-000000000001","partition":0,"leader":2,"leader_epoch":1,"isr":[2,3],"replicas":[2,3],"adding_replicas":[],"removing_replicas":[]}"#,
        );
        // A change of an older version leaves the replicas alone.
        let old = raw(
            TYPE_PARTITION_CHANGE,
            VERSION,
            r#"{"topic_id":"00000000-0000-0000-0000-000000000001","partition":0,"leader":2,"leader_epoch":1,"isr":[2]}"#,
        );
        let MetadataRecord::PartitionChange(c) = MetadataRecord::decode(&old).unwrap() else {
            panic!("not a partition change");
        };
        assert_eq!(
            (c.replicas, c.adding_replicas, c.removing_replicas),
            (None, None, None)
        );
    }

    #[test]
    fn bad_records_are_clear_errors() {
        let cases: Vec<(Vec<u8>, RecordError)> = vec![
            (vec![0, 1], RecordError::Short { len: 2 }),
            (
                raw(13, 0, "{}"),
                RecordError::Reserved {
                    type_id: 13,
                    what: RESERVED_TYPES[0].1,
                },
            ),
            (raw(999, 0, "{}"), RecordError::UnknownType { type_id: 999 }),
            (raw(0, 0, "{}"), RecordError::UnknownType { type_id: 0 }),
            (
                raw(TYPE_TOPIC, 1, "{}"),
                RecordError::UnsupportedVersion {
                    type_id: TYPE_TOPIC,
                    version: 1,
                },
            ),
        ];
        for (bytes, expected) in cases {
            assert_eq!(MetadataRecord::decode(&bytes).unwrap_err(), expected);
        }
        let err = MetadataRecord::decode(&raw(TYPE_REMOVE_TOPIC, 0, r#"{"topic_id":3}"#));
        assert!(
            matches!(
                err,
                Err(RecordError::BadPayload {
                    type_id: TYPE_REMOVE_TOPIC,
                    ..
                })
            ),
            "{err:?}"
        );
        let err = MetadataRecord::decode(&raw(
            TYPE_CONFIG,
            0,
            r#"{"resource_type":3,"resource_name":"x","name":"y","value":null}"#,
        ));
        assert!(
            matches!(err, Err(RecordError::BadPayload { .. })),
            "{err:?}"
        );
    }

    #[test]
    fn reserved_ids_are_unique_and_not_in_use() {
        let mut ids: Vec<u16> = RESERVED_TYPES.iter().map(|(id, _)| *id).collect();
        ids.sort_unstable();
        ids.dedup();
        assert_eq!(ids.len(), RESERVED_TYPES.len());
        for &used in KNOWN_TYPES {
            assert!(
                !ids.contains(&used),
                "type {used} is both used and reserved"
            );
        }
    }
}
