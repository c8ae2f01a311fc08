//! The one error vocabulary: typed errors, and the one place that maps them to Kafka error
//! codes.
//!
//! - [`ErrorCode`] is a Kafka error code as the wire carries it, success included, named as
//!   Kafka names it. Pure state machines (`group/`) answer with it, because each API reports
//!   codes in its own fields (per member for LeaveGroup, per partition for OffsetCommit).
//! - [`KafkaError`] is an operating error with its context (bad input, a full disk, an unknown
//!   topic). It travels back to the client as its code and message; it never panics the broker.
//!
//! No other module writes a raw error number.

use kafka_protocol::ResponseError;

/// A Kafka error code, or none (success), as a response field carries it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ErrorCode(Option<ResponseError>);

impl ErrorCode {
    const fn of(e: ResponseError) -> ErrorCode {
        ErrorCode(Some(e))
    }
    /// No error.
    pub const NONE: ErrorCode = ErrorCode(None);
    /// The server hit an unexpected state.
    pub const UNKNOWN_SERVER_ERROR: ErrorCode = Self::of(ResponseError::UnknownServerError);
    pub const OFFSET_OUT_OF_RANGE: ErrorCode = Self::of(ResponseError::OffsetOutOfRange);
    pub const UNKNOWN_TOPIC_OR_PARTITION: ErrorCode =
        Self::of(ResponseError::UnknownTopicOrPartition);
    pub const LEADER_NOT_AVAILABLE: ErrorCode = Self::of(ResponseError::LeaderNotAvailable);
    pub const ELECTION_NOT_NEEDED: ErrorCode = Self::of(ResponseError::ElectionNotNeeded);
    pub const UNSUPPORTED_ENDPOINT_TYPE: ErrorCode =
        Self::of(ResponseError::UnsupportedEndpointType);
    pub const NOT_LEADER_OR_FOLLOWER: ErrorCode = Self::of(ResponseError::NotLeaderOrFollower);
    pub const COORDINATOR_LOAD_IN_PROGRESS: ErrorCode =
        Self::of(ResponseError::CoordinatorLoadInProgress);
    pub const UNSUPPORTED_VERSION: ErrorCode = Self::of(ResponseError::UnsupportedVersion);
    /// A SASL request where the listener's state admits none (SaslHandshake on PLAINTEXT).
    pub const ILLEGAL_SASL_STATE: ErrorCode = Self::of(ResponseError::IllegalSaslState);
    /// A SaslHandshake asking for a mechanism the listener does not offer.
    pub const UNSUPPORTED_SASL_MECHANISM: ErrorCode =
        Self::of(ResponseError::UnsupportedSaslMechanism);
    /// A failed SASL login (which of user and password was wrong is not said).
    pub const SASL_AUTHENTICATION_FAILED: ErrorCode =
        Self::of(ResponseError::SaslAuthenticationFailed);
    /// OffsetCommit metadata longer than the broker keeps.
    pub const OFFSET_METADATA_TOO_LARGE: ErrorCode =
        Self::of(ResponseError::OffsetMetadataTooLarge);
    /// The group is dead (deleted or migrating), or its coordinator cannot be reached: the
    /// client looks up its coordinator again.
    pub const COORDINATOR_NOT_AVAILABLE: ErrorCode =
        Self::of(ResponseError::CoordinatorNotAvailable);
    /// This broker no longer coordinates the group (it is shutting down).
    pub const NOT_COORDINATOR: ErrorCode = Self::of(ResponseError::NotCoordinator);
    /// The request names an older (or newer) generation than the group's.
    pub const ILLEGAL_GENERATION: ErrorCode = Self::of(ResponseError::IllegalGeneration);
    /// The member shares no protocol (or protocol type) with the group.
    pub const INCONSISTENT_GROUP_PROTOCOL: ErrorCode =
        Self::of(ResponseError::InconsistentGroupProtocol);
    /// The group id is empty (or otherwise unusable).
    pub const INVALID_GROUP_ID: ErrorCode = Self::of(ResponseError::InvalidGroupId);
    /// The member id is not in the group.
    pub const UNKNOWN_MEMBER_ID: ErrorCode = Self::of(ResponseError::UnknownMemberId);
    /// The session timeout is outside the broker's bounds.
    pub const INVALID_SESSION_TIMEOUT: ErrorCode = Self::of(ResponseError::InvalidSessionTimeout);
    /// The group is rebalancing: the member must rejoin.
    pub const REBALANCE_IN_PROGRESS: ErrorCode = Self::of(ResponseError::RebalanceInProgress);
    /// DeleteGroups on a group that still has members.
    pub const NON_EMPTY_GROUP: ErrorCode = Self::of(ResponseError::NonEmptyGroup);
    /// DeleteGroups on a group that is already gone.
    pub const GROUP_ID_NOT_FOUND: ErrorCode = Self::of(ResponseError::GroupIdNotFound);
    /// First JoinGroup (v4+) with an empty member id: rejoin with the id in the response.
    pub const MEMBER_ID_REQUIRED: ErrorCode = Self::of(ResponseError::MemberIdRequired);
    /// The group already has its maximum number of members.
    pub const GROUP_MAX_SIZE_REACHED: ErrorCode = Self::of(ResponseError::GroupMaxSizeReached);
    /// Another process took over this `group.instance.id`.
    pub const FENCED_INSTANCE_ID: ErrorCode = Self::of(ResponseError::FencedInstanceId);
    /// OffsetDelete of a topic the group's members still consume.
    pub const GROUP_SUBSCRIBED_TO_TOPIC: ErrorCode =
        Self::of(ResponseError::GroupSubscribedToTopic);
    pub const INVALID_REQUEST: ErrorCode = Self::of(ResponseError::InvalidRequest);
    /// A producer's epoch is older than its transactional id's (InitProducerId v3 and older,
    /// AddPartitionsToTxn, AddOffsetsToTxn and EndTxn v0-v1 answer this for PRODUCER_FENCED).
    pub const INVALID_PRODUCER_EPOCH: ErrorCode = Self::of(ResponseError::InvalidProducerEpoch);
    /// A transactional request that does not fit where the transaction stands.
    pub const INVALID_TXN_STATE: ErrorCode = Self::of(ResponseError::InvalidTxnState);
    /// A producer id that is not the one its transactional id holds.
    pub const INVALID_PRODUCER_ID_MAPPING: ErrorCode =
        Self::of(ResponseError::InvalidProducerIdMapping);
    /// A transaction timeout above `--transaction-max-timeout-ms` (or not positive).
    pub const INVALID_TRANSACTION_TIMEOUT: ErrorCode =
        Self::of(ResponseError::InvalidTransactionTimeout);
    /// The transaction is completing: the client retries.
    pub const CONCURRENT_TRANSACTIONS: ErrorCode = Self::of(ResponseError::ConcurrentTransactions);
    /// A transactional offset commit of the partition awaits its transaction's marker
    /// (OffsetFetch with require_stable): the client retries.
    pub const UNSTABLE_OFFSET_COMMIT: ErrorCode = Self::of(ResponseError::UnstableOffsetCommit);
    /// DescribeTransactions of an id this broker coordinates no transaction for.
    pub const TRANSACTIONAL_ID_NOT_FOUND: ErrorCode =
        Self::of(ResponseError::TransactionalIdNotFound);
    /// Not tried because another part of the same request failed.
    pub const OPERATION_NOT_ATTEMPTED: ErrorCode = Self::of(ResponseError::OperationNotAttempted);
    /// A newer producer with the same transactional id exists.
    pub const PRODUCER_FENCED: ErrorCode = Self::of(ResponseError::ProducerFenced);
    /// ConsumerGroupHeartbeat with an epoch the coordinator no longer accepts: rejoin at 0.
    pub const FENCED_MEMBER_EPOCH: ErrorCode = Self::of(ResponseError::FencedMemberEpoch);
    /// A consumer group member commits or fetches with an epoch that is not its current one.
    pub const STALE_MEMBER_EPOCH: ErrorCode = Self::of(ResponseError::StaleMemberEpoch);
    /// A static member joins while another member still holds its instance id.
    pub const UNRELEASED_INSTANCE_ID: ErrorCode = Self::of(ResponseError::UnreleasedInstanceId);
    /// A server assignor the broker does not have.
    pub const UNSUPPORTED_ASSIGNOR: ErrorCode = Self::of(ResponseError::UnsupportedAssignor);
    /// A subscription's regular expression does not compile.
    pub const INVALID_REGULAR_EXPRESSION: ErrorCode =
        Self::of(ResponseError::InvalidRegularExpression);

    /// The principal may not use the topic (ACLs).
    pub const TOPIC_AUTHORIZATION_FAILED: ErrorCode =
        Self::of(ResponseError::TopicAuthorizationFailed);
    /// The principal may not use the group (ACLs).
    pub const GROUP_AUTHORIZATION_FAILED: ErrorCode =
        Self::of(ResponseError::GroupAuthorizationFailed);
    /// The principal may not do this on the cluster (ACLs).
    pub const CLUSTER_AUTHORIZATION_FAILED: ErrorCode =
        Self::of(ResponseError::ClusterAuthorizationFailed);
    /// The principal may not use the transactional id (ACLs).
    pub const TRANSACTIONAL_ID_AUTHORIZATION_FAILED: ErrorCode =
        Self::of(ResponseError::TransactionalIdAuthorizationFailed);
    /// The ACL APIs while the broker runs without an authorizer.
    pub const SECURITY_DISABLED: ErrorCode = Self::of(ResponseError::SecurityDisabled);

    /// The wire value: 0 for none.
    pub fn code(self) -> i16 {
        self.0.map_or(0, |e| e.code())
    }

    pub fn is_none(self) -> bool {
        self.0.is_none()
    }

    /// The code a response carries (0 is none; an unknown number is kept as it is).
    pub fn from_code(code: i16) -> ErrorCode {
        ErrorCode(ResponseError::try_from_code(code))
    }

    /// Kafka's protocol name of the code (`TOPIC_ALREADY_EXISTS`), as its tools print it.
    pub fn name(self) -> String {
        match self.0 {
            None => "NONE".into(),
            Some(ResponseError::Unknown(c)) => format!("UNKNOWN_ERROR_CODE_{c}"),
            Some(e) => {
                // The crate's Debug names are the CamelCase of the protocol names.
                let camel = format!("{e:?}");
                let mut out = String::with_capacity(camel.len() + 8);
                for (i, ch) in camel.chars().enumerate() {
                    if ch.is_ascii_uppercase() && i > 0 {
                        out.push('_');
                    }
                    out.push(ch.to_ascii_uppercase());
                }
                out
            }
        }
    }
}

impl From<ResponseError> for ErrorCode {
    fn from(e: ResponseError) -> ErrorCode {
        ErrorCode(Some(e))
    }
}

/// A failure that a client sees as a Kafka error code.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum KafkaError {
    #[error("unknown topic or partition")]
    UnknownTopicOrPartition,
    #[error("unknown topic id")]
    UnknownTopicId,
    #[error("record batch is corrupt: {0}")]
    CorruptMessage(String),
    #[error("record batch of {size} bytes exceeds the maximum of {max}")]
    MessageTooLarge { size: usize, max: usize },
    #[error("record batch format not supported: {0}")]
    UnsupportedForMessageFormat(String),
    #[error("invalid request: {0}")]
    InvalidRequest(String),
    #[error("invalid topic name: {0}")]
    InvalidTopic(String),
    #[error("topic already exists")]
    TopicAlreadyExists,
    #[error("invalid partitions: {0}")]
    InvalidPartitions(String),
    #[error("invalid replication factor: {0}")]
    InvalidReplicationFactor(String),
    #[error("invalid config: {0}")]
    InvalidConfig(String),
    #[error("invalid replica assignment: {0}")]
    InvalidReplicaAssignment(String),
    /// A cancellation of a partition reassignment where none is in progress.
    #[error("no partition reassignment is in progress: {0}")]
    NoReassignmentInProgress(String),
    /// A preferred leader election for a partition its preferred replica leads already.
    #[error("leader election not needed: {0}")]
    ElectionNotNeeded(String),
    /// A preferred leader election whose preferred replica is fenced or out of the ISR.
    #[error("the preferred leader is not available: {0}")]
    PreferredLeaderNotAvailable(String),
    /// An unclean leader election with no live replica to elect.
    #[error("no eligible leader is available: {0}")]
    EligibleLeadersNotAvailable(String),
    #[error("invalid required acks: {0}")]
    InvalidRequiredAcks(i16),
    #[error("offset {offset} out of range [{start}, {end}]")]
    OffsetOutOfRange { offset: i64, start: i64, end: i64 },
    #[error("unknown leader epoch")]
    UnknownLeaderEpoch,
    /// The client's leader epoch is older than the partition's: it refreshes its metadata.
    #[error("fenced leader epoch")]
    FencedLeaderEpoch,
    /// acks=all with fewer in-sync replicas than `min.insync.replicas`: nothing was appended.
    #[error("not enough in-sync replicas: {isr} in sync, min.insync.replicas is {min}")]
    NotEnoughReplicas { isr: usize, min: i32 },
    /// acks=all: the write was appended, but the ISR shrank below `min.insync.replicas`
    /// before it was replicated.
    #[error("appended, but the in-sync replicas fell to {isr}, below min.insync.replicas {min}")]
    NotEnoughReplicasAfterAppend { isr: usize, min: i32 },
    /// A new leader does not know its high watermark yet (its followers have not fetched
    /// since it was elected): the client retries.
    #[error("the new leader's high watermark is not known yet")]
    OffsetNotAvailable,
    #[error("storage error: {0}")]
    Storage(String),
    /// This broker does not host (or no longer leads) the partition: the client refreshes its
    /// metadata and retries there. Also what a partition's owner shard gone at shutdown means.
    #[error("this broker is not the leader of the partition")]
    NotLeaderOrFollower,
    /// A metadata change reached a node that is not the active controller.
    #[error("this node is not the active controller")]
    NotController,
    /// The request did not complete within its timeout (acks=all waiting for durability).
    #[error("request timed out after {0} ms")]
    RequestTimedOut(i64),
    /// The broker cannot serve the request at all right now (it is shutting down).
    #[error("broker is not available: {0}")]
    BrokerNotAvailable(&'static str),
    /// The group's coordinator cannot be reached: the client looks it up again.
    #[error("the group coordinator is not available")]
    CoordinatorNotAvailable,
    /// The group's coordinator is another broker: the client finds it again.
    #[error("this broker is not the group's coordinator")]
    NotCoordinator,
    /// The partition has no leader right now (its broker is fenced).
    #[error("the partition has no leader")]
    LeaderNotAvailable,
    /// A broker RPC from a registration the controller does not know (an older incarnation),
    /// or from a fenced broker.
    #[error("stale broker epoch: {0}")]
    StaleBrokerEpoch(String),
    /// An AlterPartition based on a partition epoch that is not the current one: the leader's
    /// view of the partition is stale.
    #[error("invalid update version: {0}")]
    InvalidUpdateVersion(String),
    /// An AlterPartition whose new ISR names a broker that may not be in it (unregistered,
    /// fenced, or another incarnation than the one that caught up).
    #[error("ineligible replica: {0}")]
    IneligibleReplica(String),
    /// An error the active controller answered to a forwarded request, as it sent it.
    #[error("{message}")]
    Forwarded { code: i16, message: String },
    /// An idempotent producer's batch does not follow its last one (a batch was lost).
    #[error("out of order sequence number: {0}")]
    OutOfOrderSequence(String),
    /// An idempotent producer's batch carries an epoch older than the partition knows (a
    /// zombie producer).
    #[error("invalid producer epoch: {0}")]
    InvalidProducerEpoch(String),
    /// A record batch the broker refuses as it is (a control batch from a client).
    #[error("invalid record: {0}")]
    InvalidRecord(String),
    /// A SCRAM credential that does not meet the rules (iterations, empty user or salt).
    #[error("unacceptable credential: {0}")]
    UnacceptableCredential(String),
    /// A request names a resource that does not exist (a user without credentials).
    #[error("resource not found: {0}")]
    ResourceNotFound(String),
    /// A request names the same resource twice.
    #[error("duplicate resource: {0}")]
    DuplicateResource(String),
    /// The principal may not use the topic (ACLs).
    #[error("not authorized to access the topic")]
    TopicAuthorizationFailed,
    /// The principal may not use the group (ACLs).
    #[error("not authorized to access the group")]
    GroupAuthorizationFailed,
    /// The principal may not do this on the cluster (ACLs).
    #[error("not authorized to perform this action on the cluster")]
    ClusterAuthorizationFailed,
    /// The principal may not use the transactional id (ACLs).
    #[error("not authorized to use the transactional id")]
    TransactionalIdAuthorizationFailed,
    /// The ACL APIs on a broker without an authorizer.
    #[error("no authorizer is configured on the broker (--authorizer acl)")]
    SecurityDisabled,
    /// A SASL mechanism this broker does not offer.
    #[error("unsupported SASL mechanism: {0}")]
    UnsupportedSaslMechanism(String),
    /// A record's timestamp outside what the topic accepts
    /// (`message.timestamp.before.max.ms`, `message.timestamp.after.max.ms`).
    #[error("invalid timestamp: {0}")]
    InvalidTimestamp(String),
    /// A transactional write or request that does not fit its transaction's state.
    #[error("invalid transaction state: {0}")]
    InvalidTxnState(String),
    /// A feature this broker does not implement yet (transactions), answered so that the
    /// client fails at once with a clear message instead of retrying.
    #[error("not supported by this broker: {0}")]
    Unsupported(&'static str),
}

impl KafkaError {
    /// The wire code for this error.
    pub fn code(&self) -> i16 {
        match self {
            KafkaError::Forwarded { code, .. } => *code,
            other => other.response_error().code(),
        }
    }

    fn response_error(&self) -> ResponseError {
        match self {
            KafkaError::UnknownTopicOrPartition => ResponseError::UnknownTopicOrPartition,
            KafkaError::UnknownTopicId => ResponseError::UnknownTopicId,
            KafkaError::CorruptMessage(_) => ResponseError::CorruptMessage,
            KafkaError::MessageTooLarge { .. } => ResponseError::MessageTooLarge,
            KafkaError::UnsupportedForMessageFormat(_) => {
                ResponseError::UnsupportedForMessageFormat
            }
            KafkaError::InvalidRequest(_) => ResponseError::InvalidRequest,
            KafkaError::InvalidTopic(_) => ResponseError::InvalidTopicException,
            KafkaError::TopicAlreadyExists => ResponseError::TopicAlreadyExists,
            KafkaError::InvalidPartitions(_) => ResponseError::InvalidPartitions,
            KafkaError::InvalidReplicationFactor(_) => ResponseError::InvalidReplicationFactor,
            KafkaError::InvalidConfig(_) => ResponseError::InvalidConfig,
            KafkaError::InvalidReplicaAssignment(_) => ResponseError::InvalidReplicaAssignment,
            KafkaError::NoReassignmentInProgress(_) => ResponseError::NoReassignmentInProgress,
            KafkaError::ElectionNotNeeded(_) => ResponseError::ElectionNotNeeded,
            KafkaError::PreferredLeaderNotAvailable(_) => {
                ResponseError::PreferredLeaderNotAvailable
            }
            KafkaError::EligibleLeadersNotAvailable(_) => {
                ResponseError::EligibleLeadersNotAvailable
            }
            KafkaError::InvalidRequiredAcks(_) => ResponseError::InvalidRequiredAcks,
            KafkaError::OffsetOutOfRange { .. } => ResponseError::OffsetOutOfRange,
            KafkaError::UnknownLeaderEpoch => ResponseError::UnknownLeaderEpoch,
            KafkaError::FencedLeaderEpoch => ResponseError::FencedLeaderEpoch,
            KafkaError::NotEnoughReplicas { .. } => ResponseError::NotEnoughReplicas,
            KafkaError::NotEnoughReplicasAfterAppend { .. } => {
                ResponseError::NotEnoughReplicasAfterAppend
            }
            KafkaError::OffsetNotAvailable => ResponseError::OffsetNotAvailable,
            KafkaError::Storage(_) => ResponseError::KafkaStorageError,
            KafkaError::NotLeaderOrFollower => ResponseError::NotLeaderOrFollower,
            KafkaError::NotController => ResponseError::NotController,
            KafkaError::RequestTimedOut(_) => ResponseError::RequestTimedOut,
            KafkaError::BrokerNotAvailable(_) => ResponseError::BrokerNotAvailable,
            KafkaError::CoordinatorNotAvailable => ResponseError::CoordinatorNotAvailable,
            KafkaError::NotCoordinator => ResponseError::NotCoordinator,
            KafkaError::LeaderNotAvailable => ResponseError::LeaderNotAvailable,
            KafkaError::StaleBrokerEpoch(_) => ResponseError::StaleBrokerEpoch,
            KafkaError::InvalidUpdateVersion(_) => ResponseError::InvalidUpdateVersion,
            KafkaError::IneligibleReplica(_) => ResponseError::IneligibleReplica,
            KafkaError::Forwarded { code, .. } => {
                ResponseError::try_from_code(*code).unwrap_or(ResponseError::UnknownServerError)
            }
            KafkaError::OutOfOrderSequence(_) => ResponseError::OutOfOrderSequenceNumber,
            KafkaError::InvalidProducerEpoch(_) => ResponseError::InvalidProducerEpoch,
            KafkaError::Unsupported(_) => ResponseError::UnsupportedVersion,
            KafkaError::InvalidRecord(_) => ResponseError::InvalidRecord,
            KafkaError::InvalidTimestamp(_) => ResponseError::InvalidTimestamp,
            KafkaError::UnacceptableCredential(_) => ResponseError::UnacceptableCredential,
            KafkaError::ResourceNotFound(_) => ResponseError::ResourceNotFound,
            KafkaError::DuplicateResource(_) => ResponseError::DuplicateResource,
            KafkaError::UnsupportedSaslMechanism(_) => ResponseError::UnsupportedSaslMechanism,
            KafkaError::InvalidTxnState(_) => ResponseError::InvalidTxnState,
            KafkaError::TopicAuthorizationFailed => ResponseError::TopicAuthorizationFailed,
            KafkaError::GroupAuthorizationFailed => ResponseError::GroupAuthorizationFailed,
            KafkaError::ClusterAuthorizationFailed => ResponseError::ClusterAuthorizationFailed,
            KafkaError::TransactionalIdAuthorizationFailed => {
                ResponseError::TransactionalIdAuthorizationFailed
            }
            KafkaError::SecurityDisabled => ResponseError::SecurityDisabled,
        }
    }

    /// This error as a response's error code field.
    pub fn error_code(&self) -> ErrorCode {
        match self {
            KafkaError::Forwarded { code, .. } => ErrorCode::from_code(*code),
            other => other.response_error().into(),
        }
    }

    /// The message for the response's `error_message` field, where the API has one.
    pub fn message(&self) -> String {
        self.to_string()
    }
}

/// Why a request frame could not be turned into a request. Every variant closes the
/// connection: the byte stream can no longer be trusted to be in step.
#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    #[error("frame size {0} is negative")]
    NegativeSize(i32),
    #[error("frame size {size} exceeds the maximum of {max} bytes")]
    TooLarge { size: usize, max: usize },
    #[error("unknown API key {0}")]
    UnknownApiKey(i16),
    #[error("{api} v{version} is not supported")]
    UnsupportedVersion { api: &'static str, version: i16 },
    #[error("request cannot be decoded: {0}")]
    Undecodable(String),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_match_the_kafka_protocol() {
        let cases = [
            (KafkaError::UnknownTopicOrPartition, 3),
            (KafkaError::CorruptMessage(String::new()), 2),
            (KafkaError::MessageTooLarge { size: 2, max: 1 }, 10),
            (KafkaError::InvalidRequest(String::new()), 42),
            (KafkaError::TopicAlreadyExists, 36),
            (KafkaError::InvalidPartitions(String::new()), 37),
            (KafkaError::InvalidTopic(String::new()), 17),
            (
                KafkaError::OffsetOutOfRange {
                    offset: 0,
                    start: 0,
                    end: 0,
                },
                1,
            ),
            (KafkaError::Storage(String::new()), 56),
            (KafkaError::UnknownTopicId, 100),
            (KafkaError::NotLeaderOrFollower, 6),
            (KafkaError::RequestTimedOut(1), 7),
            (KafkaError::BrokerNotAvailable("stopping"), 8),
            (KafkaError::CoordinatorNotAvailable, 15),
            (KafkaError::NotController, 41),
            (KafkaError::OutOfOrderSequence(String::new()), 45),
            (KafkaError::InvalidProducerEpoch(String::new()), 47),
            (KafkaError::Unsupported("transactions"), 35),
            (KafkaError::FencedLeaderEpoch, 74),
            (KafkaError::StaleBrokerEpoch(String::new()), 77),
            (KafkaError::InvalidUpdateVersion(String::new()), 95),
            (KafkaError::IneligibleReplica(String::new()), 107),
        ];
        for (err, code) in cases {
            assert_eq!(err.code(), code, "{err:?}");
        }
    }

    #[test]
    fn error_codes_and_names() {
        let cases = [
            (ErrorCode::NONE, 0, "NONE"),
            (ErrorCode::UNKNOWN_SERVER_ERROR, -1, "UNKNOWN_SERVER_ERROR"),
            (
                ErrorCode::OFFSET_METADATA_TOO_LARGE,
                12,
                "OFFSET_METADATA_TOO_LARGE",
            ),
            (
                ErrorCode::COORDINATOR_NOT_AVAILABLE,
                15,
                "COORDINATOR_NOT_AVAILABLE",
            ),
            (ErrorCode::NOT_COORDINATOR, 16, "NOT_COORDINATOR"),
            (ErrorCode::ILLEGAL_GENERATION, 22, "ILLEGAL_GENERATION"),
            (ErrorCode::INVALID_GROUP_ID, 24, "INVALID_GROUP_ID"),
            (ErrorCode::UNKNOWN_MEMBER_ID, 25, "UNKNOWN_MEMBER_ID"),
            (
                ErrorCode::REBALANCE_IN_PROGRESS,
                27,
                "REBALANCE_IN_PROGRESS",
            ),
            (ErrorCode::GROUP_ID_NOT_FOUND, 69, "GROUP_ID_NOT_FOUND"),
            (ErrorCode::MEMBER_ID_REQUIRED, 79, "MEMBER_ID_REQUIRED"),
            (ErrorCode::FENCED_INSTANCE_ID, 82, "FENCED_INSTANCE_ID"),
            (
                ErrorCode::GROUP_SUBSCRIBED_TO_TOPIC,
                86,
                "GROUP_SUBSCRIBED_TO_TOPIC",
            ),
        ];
        for (e, code, name) in cases {
            assert_eq!(e.code(), code, "{name}");
            assert_eq!(e.name(), name);
            assert_eq!(ErrorCode::from_code(code), e);
        }
        assert_eq!(ErrorCode::from_code(9999).name(), "UNKNOWN_ERROR_CODE_9999");
        assert_eq!(
            KafkaError::NotController.error_code().name(),
            "NOT_CONTROLLER"
        );
    }
}
