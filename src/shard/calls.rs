//! The closed set of work one shard asks of another, each message typed by its reply.
//!
//! Every call is a struct implementing [`Call`]: what it carries, the type of its answer, and
//! how the owning shard runs it. [`Shard::call`] runs a call on any shard, this one included
//! (a local call skips the mesh), and gives back exactly the call's reply type, so no caller
//! ever matches an answer that cannot happen. [`ShardMessage`] is the enum that travels on the
//! mesh (`router` is only the mechanism); the macro below keeps it and the dispatch in step
//! with the calls.

use std::collections::BTreeMap;
use std::future::Future;
use std::rc::Rc;

use crate::cluster::wire;
use crate::error::{ErrorCode, KafkaError};
use crate::group::coordinator::{FetchedOffset, ListedGroup};
use crate::group::offsets::CommittedOffset;
use crate::group::state::{
    GroupDescription, HeartbeatRequest, JoinRequest, JoinResponse, LeaveRequest, LeaveResponse,
    SyncRequest, SyncResponse,
};
use crate::protocol::batch::ProducedBatch;
use crate::router::{AnyReply, RouterError};
use crate::storage::catalog::TopicMeta;
use crate::storage::log::ReadOut;

use super::Shard;

/// One answer per item, in order.
pub type Answers<R> = Vec<Result<R, KafkaError>>;

/// A piece of work for one shard, and the type of its answer.
pub trait Call: Send + Sized + 'static {
    type Reply: Send + 'static;
    /// Wraps the call for the mesh.
    fn into_message(self) -> ShardMessage;
    /// Runs the call on the shard that owns what it touches.
    fn run(self, shard: Rc<Shard>) -> impl Future<Output = Self::Reply>;
}

macro_rules! shard_messages {
    ($($call:ident),* $(,)?) => {
        /// A call on its way to another shard.
        #[derive(Debug)]
        pub enum ShardMessage {
            $($call($call),)*
        }

        $(impl From<$call> for ShardMessage {
            fn from(c: $call) -> ShardMessage {
                ShardMessage::$call(c)
            }
        })*

        impl ShardMessage {
            /// Runs the call this message carries and erases its answer's type for the trip
            /// back (the caller knows it: see `router::PendingReply`).
            pub async fn run(self, shard: Rc<Shard>) -> AnyReply {
                match self {
                    $(ShardMessage::$call(c) => Box::new(c.run(shard).await),)*
                }
            }
        }
    };
}

shard_messages!(
    Produce,
    Flush,
    Fetch,
    WaitForData,
    CancelWait,
    ListOffsets,
    OffsetsForLeaderEpoch,
    ReplicaEnds,
    LogDirSizes,
    OpenTxnLog,
    TxnGuards,
    TopicCreated,
    TopicDeleted,
    TopicConfigChanged,
    TopicChanged,
    ClusterChanged,
    CreatePartitions,
    AlterReassignments,
    ListReassignments,
    ElectLeaders,
    QuorumStatus,
    CreateTopics,
    DeleteTopics,
    AlterTopicConfigs,
    DeleteRecords,
    Metrics,
    JoinGroup,
    SyncGroup,
    Heartbeat,
    LeaveGroup,
    CommitOffsets,
    FetchOffsets,
    DescribeGroup,
    ListGroups,
    DeleteGroup,
    DeleteOffsets,
    ConsumerGroupHeartbeat,
    ConsumerGroupDescribe,
    AllocateProducerIds,
    AlterPartition,
    DynamicBrokerConfigs,
    AlterScram,
    ScramCredentials,
    ScramCredentialOf,
    TxnInit,
    TxnAddPartitions,
    TxnEnd,
    TxnVerify,
    WriteTxnMarkers,
    TxnCommitOffsets,
    DescribeTxn,
    ListTxns,
    DescribeProducers,
    ReportOffline,
    AlterClientQuotas,
    QuotasChanged,
    RecordQuota,
    AlterAcls,
    AclsChanged,
);

impl Shard {
    /// Runs `call` on shard `to`: here when `to` is this shard, else through the mesh.
    pub async fn call<C: Call>(
        self: &Rc<Self>,
        to: usize,
        call: C,
    ) -> Result<C::Reply, RouterError> {
        if to == self.id {
            Ok(call.run(self.clone()).await)
        } else {
            self.router
                .send::<C::Reply>(to, call.into_message())
                .await?
                .wait()
                .await
        }
    }
}

macro_rules! call {
    ($call:ident -> $reply:ty, |$this:ident, $shard:ident| $body:expr) => {
        impl Call for $call {
            type Reply = $reply;
            fn into_message(self) -> ShardMessage {
                ShardMessage::$call(self)
            }
            async fn run(self, $shard: Rc<Shard>) -> $reply {
                let $this = self;
                $body
            }
        }
    };
}

// ---------------------------------------------------------------- partitions

/// Append to partitions this shard owns; answered once written (page cache), not yet durable:
/// acks=all follows up with [`Flush`].
#[derive(Debug)]
pub struct Produce(pub Vec<ProduceItem>);
call!(Produce -> Answers<ProduceOutcome>, |c, shard| shard.enqueue_produce(c.0).wait().await);

#[derive(Debug)]
pub struct ProduceItem {
    pub topic: String,
    pub partition: i32,
    pub batches: Vec<ProducedBatch>,
    /// acks=all: refused (NOT_ENOUGH_REPLICAS, nothing appended) when the leader cannot count
    /// on `min.insync.replicas` in-sync replicas.
    pub acks_all: bool,
    /// The KIP-890 verification guard a transactional write was verified under (see
    /// [`TxnGuards`]); None for other writes.
    pub guard: Option<u64>,
}

/// KIP-890 part 1: new verification guards for (topic, partition, producer id) of partitions
/// this shard owns, taken before the producer's coordinator is asked (see
/// `storage::producers::ProducerStates::take_guard`); None where the partition is not here.
#[derive(Debug)]
pub struct TxnGuards(pub Vec<(String, i32, i64)>);
call!(TxnGuards -> Vec<Option<u64>>, |c, shard| shard.take_txn_guards(c.0));

/// Where a produced partition's batches landed.
#[derive(Clone, Copy, Debug)]
pub struct ProduceOutcome {
    pub base_offset: i64,
    /// The offset of the last record written: what acks=all waits to see on disk.
    pub last_offset: i64,
    /// The broker time stamped on the batches, or -1 for CreateTime topics.
    pub log_append_time: i64,
    pub log_start_offset: i64,
}

/// Answer once every offset up to the given one of each partition is on disk (group commit),
/// or at once for topics that flush in the background.
#[derive(Debug)]
pub struct Flush(pub Vec<FlushItem>);
call!(Flush -> Answers<()>, |c, shard| shard.flush_items(c.0).await);

/// (topic, partition, last offset written) that acks=all waits to see on disk.
pub type FlushItem = (String, i32, i64);

/// Tells the active controller (from the controller shard) that this broker's replica of a
/// partition is offline (a storage error), so it leaves the ISR and the leadership moves.
#[derive(Debug)]
pub struct ReportOffline {
    pub topic: String,
    pub partition: i32,
}
call!(ReportOffline -> Result<(), KafkaError>, |c, shard| match &shard.controller {
    Some(ctl) => ctl.report_offline(&c.topic, c.partition).await,
    None => Err(KafkaError::NotController),
});

/// Locate data in partitions this shard owns.
#[derive(Debug)]
pub struct Fetch(pub Vec<FetchItem>);
call!(Fetch -> Answers<ReadOut>, |c, shard| shard.locate(c.0));

#[derive(Clone, Debug)]
pub struct FetchItem {
    pub topic: String,
    pub partition: i32,
    pub offset: i64,
    pub max_bytes: usize,
    /// isolation_level 1: read below the last stable offset, with the aborted transactions.
    pub read_committed: bool,
    /// A follower's Fetch: who it is, and the leader epoch it believes current (checked
    /// again at the partition). None for consumers.
    pub replica: Option<(super::replica::ReplicaFetch, i32)>,
}

/// Once any of the partitions grows past the high watermark the fetch last saw of it (or its
/// fetch offset falls below the log start, or the timeout passes, or the origin cancels it),
/// locate the data as [`Fetch`] does: a long poll's wake-up and re-read in one round trip.
#[derive(Debug)]
pub struct WaitForData {
    /// Each partition with the high watermark the fetch last saw.
    pub items: Vec<(FetchItem, i64)>,
    pub timeout_ms: u64,
    /// The shard whose fetch waits, and its id for this wait (see [`CancelWait`]).
    pub origin: usize,
    pub wait_id: u64,
}
call!(WaitForData -> Answers<ReadOut>, |c, shard| {
    // A wait of this shard's own ends when its future is dropped; only a remote one needs
    // an id to be cancelled by.
    let remote = (c.origin != shard.id).then_some((c.origin, c.wait_id));
    shard.wait_for_data(&c.items, c.timeout_ms, remote).await;
    shard.locate(c.items.into_iter().map(|(i, _)| i).collect())
});

/// Ends a [`WaitForData`] early: the fetch that asked has been answered (another owner had
/// data), so the wait must not linger here until its own deadline.
#[derive(Debug)]
pub struct CancelWait {
    pub origin: usize,
    pub wait_id: u64,
}
call!(CancelWait -> (), |c, shard| shard.cancel_wait(c.origin, c.wait_id));

/// Offsets by timestamp (-1 latest, -2 earliest) in partitions this shard owns:
/// (topic, partition, timestamp, read_committed) -> (offset, timestamp). Latest is the last
/// stable offset for read_committed, the high watermark otherwise.
#[derive(Debug)]
pub struct ListOffsets(pub Vec<(String, i32, i64, bool)>);
call!(ListOffsets -> Answers<(i64, i64, i32)>, |c, shard| shard.list_offsets(c.0));

/// OffsetForLeaderEpoch in partitions this shard owns: (topic, partition, leader epoch) ->
/// (epoch, end offset).
#[derive(Debug)]
pub struct OffsetsForLeaderEpoch(pub Vec<(String, i32, i32)>);
call!(OffsetsForLeaderEpoch -> Answers<(i32, i64)>, |c, shard| shard.offsets_for_leader_epoch(c.0));

/// The epoch of the last batch and the log end of local replicas this shard owns, whatever
/// their role (None: not here, or offline), for unclean-shutdown recovery.
#[derive(Debug)]
pub struct ReplicaEnds(pub Vec<(String, i32)>);
call!(ReplicaEnds -> Vec<Option<(i32, i64)>>, |c, shard| shard.replica_ends(c.0));

/// On one node: open this shard's partitions of `__transaction_state` (first use of a
/// transactional id), unless they are.
#[derive(Debug)]
pub struct OpenTxnLog;
call!(OpenTxnLog -> Result<(), KafkaError>, |_c, shard| shard.open_txn_log());

/// DescribeLogDirs: (topic, partition, bytes on disk, log end minus high watermark) of the
/// replicas this shard holds; all, or those of the (topic, partitions) asked for.
#[derive(Debug)]
pub struct LogDirSizes(pub Option<Vec<(String, Vec<i32>)>>);
call!(LogDirSizes -> Vec<(String, i32, i64, i64)>, |c, shard| shard.log_dir_sizes(c.0.as_deref()));

/// Move the log start offset of partitions this shard owns: (topic, partition, offset; -1
/// for the high watermark) -> the new log start offset.
#[derive(Debug)]
pub struct DeleteRecords(pub Vec<(String, i32, i64)>);
call!(DeleteRecords -> Answers<i64>, |c, shard| shard.delete_records(c.0).await);

// ---------------------------------------------------------------- topics

/// Controller to every shard: a topic now exists; cache it and open owned partitions.
#[derive(Debug)]
pub struct TopicCreated(pub TopicMeta);
call!(TopicCreated -> Result<(), KafkaError>, |c, shard| shard.topic_created(c.0).await);

/// Controller to every shard: a topic is gone; forget it and delete owned partitions.
#[derive(Debug)]
pub struct TopicDeleted(pub String);
call!(TopicDeleted -> Result<(), KafkaError>, |c, shard| shard.topic_deleted(c.0).await);

/// Controller to every shard: a topic's configs changed; recache it and apply the new settings
/// to its open logs.
#[derive(Debug)]
pub struct TopicConfigChanged(pub TopicMeta);
call!(TopicConfigChanged -> Result<(), KafkaError>, |c, shard| shard.topic_config_changed(c.0));

/// Every shard, in a cluster: a topic's partitions, leaders or configs changed; recache it,
/// open the partitions of it this node now holds, apply its settings.
#[derive(Debug)]
pub struct TopicChanged(pub TopicMeta);
call!(TopicChanged -> Result<(), KafkaError>, |c, shard| shard.topic_changed(c.0).await);

/// Every shard, in a cluster: the brokers, the controller or the cluster id changed.
#[derive(Debug)]
pub struct ClusterChanged(pub std::sync::Arc<crate::cluster::view::ClusterView>);
call!(ClusterChanged -> Result<(), KafkaError>, |c, shard| {
    shard.cluster_changed(c.0);
    Ok(())
});

/// To the controller: add partitions to topics: (name, new count, explicit assignments).
#[derive(Debug)]
pub struct CreatePartitions {
    pub topics: Vec<(String, i32, Vec<Vec<i32>>)>,
    pub validate_only: bool,
    pub context: wire::Forwarded,
}
call!(CreatePartitions -> Answers<()>, |c, shard| match &shard.controller {
    Some(ctl) => ctl.create_partitions(&shard, c.topics, c.validate_only, c.context).await,
    None => c.topics.iter().map(|_| Err(KafkaError::NotController)).collect(),
});

/// To the controller: start or cancel partition reassignments: (topic, partition, target
/// replicas; None cancels).
#[derive(Debug)]
pub struct AlterReassignments {
    pub items: Vec<(String, i32, Option<Vec<i32>>)>,
    pub context: wire::Forwarded,
}
call!(AlterReassignments -> Answers<()>, |c, shard| match &shard.controller {
    Some(ctl) => ctl.alter_reassignments(c.items, c.context).await,
    None => c.items.iter().map(|_| Err(KafkaError::NotController)).collect(),
});

/// To the controller shard: the reassignments in progress, as this node's metadata has them,
/// of the given topics and partitions (all, when None).
#[derive(Debug)]
pub struct ListReassignments(pub Option<Vec<(String, Vec<i32>)>>);
call!(ListReassignments -> Vec<crate::cluster::reassign::Ongoing>, |c, shard| match &shard.controller {
    Some(ctl) => crate::cluster::reassign::ongoing(&ctl.image(), c.0.as_deref()),
    None => Vec::new(),
});

/// To the controller: elect leaders (preferred, or `unclean`) of the given partitions (every
/// partition, when None). Answered per partition, in order.
#[derive(Debug)]
pub struct ElectLeaders {
    pub unclean: bool,
    pub partitions: Option<Vec<(String, i32)>>,
    pub context: wire::Forwarded,
}
call!(ElectLeaders -> Vec<((String, i32), Result<(), KafkaError>)>, |c, shard| match &shard.controller {
    Some(ctl) => {
        let partitions = c.partitions.unwrap_or_else(|| ctl.all_partitions());
        let answers = ctl.elect_leaders(c.unclean, partitions.clone(), c.context).await;
        partitions.into_iter().zip(answers).collect()
    }
    None => Vec::new(),
});

/// To the controller: the metadata quorum as its leader sees it. On one node there is no
/// quorum: this node is the only voter and leads.
#[derive(Debug)]
pub struct QuorumStatus;
call!(QuorumStatus -> Result<wire::QuorumReport, KafkaError>, |_c, shard| {
    match shard.controller.as_ref().and_then(|c| c.quorum()) {
        Some(q) => q.report().await,
        None => Ok(wire::QuorumReport {
            leader: shard.config.node_id,
            term: 0,
            commit: shard
                .controller
                .as_ref()
                .map_or(0, |c| c.metadata_offset()),
            voters: vec![wire::VoterReport {
                node: shard.config.node_id,
                matched: shard
                    .controller
                    .as_ref()
                    .map_or(0, |c| c.metadata_offset()),
                recent_active: true,
            }],
        }),
    }
});

/// To the controller: create topics.
#[derive(Debug)]
pub struct CreateTopics {
    pub topics: Vec<CreateTopic>,
    pub validate_only: bool,
    /// Who asked (forwarded with the change, see `wire::Forwarded`).
    pub context: wire::Forwarded,
}
call!(CreateTopics -> Answers<TopicMeta>, |c, shard| match &shard.controller {
    Some(ctl) => ctl.create_topics(&shard, c.topics, c.validate_only, c.context).await,
    None => c.topics.iter().map(|_| Err(KafkaError::NotController)).collect(),
});

#[derive(Clone, Debug)]
pub struct CreateTopic {
    pub name: String,
    /// -1 for the broker default.
    pub partitions: i32,
    /// -1 for the broker default; only 1 is possible on one node.
    pub replication_factor: i16,
    pub configs: BTreeMap<String, String>,
    /// Auto-creation: a topic that already exists is a success, not an error.
    pub if_not_exists: bool,
    /// The broker's own internal topic (`__consumer_offsets` in a cluster), which clients may
    /// not create.
    pub internal: bool,
    /// Replica lists by partition (CreateTopics' manual assignments, partitions 0, 1, ...),
    /// or empty to let the controller place them.
    pub assignments: Vec<Vec<i32>>,
}

/// To the controller: delete topics by name.
#[derive(Debug)]
pub struct DeleteTopics {
    pub names: Vec<String>,
    pub context: wire::Forwarded,
}
call!(DeleteTopics -> Answers<()>, |c, shard| match &shard.controller {
    Some(ctl) => ctl.delete_topics(&shard, c.names, c.context).await,
    None => c.names.iter().map(|_| Err(KafkaError::NotController)).collect(),
});

/// To the controller: change topic configs (IncrementalAlterConfigs, AlterConfigs).
#[derive(Debug)]
pub struct AlterTopicConfigs {
    pub changes: Vec<AlterTopicConfig>,
    pub validate_only: bool,
    pub context: wire::Forwarded,
}
call!(AlterTopicConfigs -> Answers<()>, |c, shard| match &shard.controller {
    Some(ctl) => ctl.alter_topic_configs(&shard, c.changes, c.validate_only, c.context).await,
    None => c.changes.iter().map(|_| Err(KafkaError::NotController)).collect(),
});

/// To the controller: AlterClientQuotas, one answer per entity.
#[derive(Debug)]
pub struct AlterClientQuotas {
    pub entries: Vec<wire::QuotaAlteration>,
    pub validate_only: bool,
    pub context: wire::Forwarded,
}
call!(AlterClientQuotas -> Answers<()>, |c, shard| match &shard.controller {
    Some(ctl) => ctl.alter_client_quotas(&shard, c.entries, c.validate_only, c.context).await,
    None => c.entries.iter().map(|_| Err(KafkaError::NotController)).collect(),
});

/// Controller to every shard: the client quotas changed; this is the whole new table.
#[derive(Debug)]
pub struct QuotasChanged(pub std::sync::Arc<crate::quota::QuotaTable>);
call!(QuotasChanged -> Result<(), KafkaError>, |c, shard| {
    shard.set_quotas(c.0.as_ref().clone());
    Ok(())
});

/// To the controller shard: CreateAcls' new ACLs and DeleteAcls' removals (by id), one
/// result each, creations first.
#[derive(Debug)]
pub struct AlterAcls {
    pub create: Vec<crate::storage::metadata::record::AccessControlEntryRecord>,
    pub remove: Vec<uuid::Uuid>,
    pub context: wire::Forwarded,
}
call!(AlterAcls -> Answers<()>, |c, shard| match &shard.controller {
    Some(ctl) => ctl.alter_acls(&shard, c.create, c.remove, c.context).await,
    None => (0..c.create.len() + c.remove.len()).map(|_| Err(KafkaError::NotController)).collect(),
});

/// Controller to every shard: the ACLs changed; this is the whole new table.
#[derive(Debug)]
pub struct AclsChanged(pub std::sync::Arc<super::acl::AclTable>);
call!(AclsChanged -> Result<(), KafkaError>, |c, shard| {
    shard.set_acls(c.0.as_ref().clone());
    Ok(())
});

/// To the shard that owns each sensor (see `placement::quota_owner`): record usage, answer
/// the throttle each gets, in ms.
#[derive(Debug)]
pub struct RecordQuota(pub Vec<super::quota::QuotaUsage>);
call!(RecordQuota -> Vec<u64>, |c, shard| shard.record_quota_usage(c.0));

/// A change to one topic's configs.
#[derive(Clone, Debug)]
pub struct AlterTopicConfig {
    /// The topic, or with `broker` the broker id (empty: every broker's default).
    pub topic: String,
    /// A dynamic broker config change (only the replication throttle rates can change).
    pub broker: bool,
    /// Start from no configs at all (AlterConfigs replaces the whole set) instead of the
    /// topic's current ones.
    pub replace: bool,
    /// Applied in order: (name, Some(value)) sets, (name, None) reverts to the default.
    pub ops: Vec<(String, Option<String>)>,
}

// A change forwarded to the active controller travels as the cluster wire's plain types.

impl From<&CreateTopic> for wire::TopicSpec {
    fn from(c: &CreateTopic) -> wire::TopicSpec {
        wire::TopicSpec {
            name: c.name.clone(),
            partitions: c.partitions,
            replication_factor: c.replication_factor,
            configs: c.configs.clone(),
            if_not_exists: c.if_not_exists,
            assignments: c.assignments.clone(),
            internal: c.internal,
        }
    }
}

impl From<wire::TopicSpec> for CreateTopic {
    fn from(t: wire::TopicSpec) -> CreateTopic {
        CreateTopic {
            name: t.name,
            partitions: t.partitions,
            replication_factor: t.replication_factor,
            configs: t.configs,
            if_not_exists: t.if_not_exists,
            internal: t.internal,
            assignments: t.assignments,
        }
    }
}

impl From<&AlterTopicConfig> for wire::ConfigChange {
    fn from(c: &AlterTopicConfig) -> wire::ConfigChange {
        wire::ConfigChange {
            topic: c.topic.clone(),
            broker: c.broker,
            replace: c.replace,
            ops: c.ops.clone(),
        }
    }
}

impl From<wire::ConfigChange> for AlterTopicConfig {
    fn from(c: wire::ConfigChange) -> AlterTopicConfig {
        AlterTopicConfig {
            topic: c.topic,
            broker: c.broker,
            replace: c.replace,
            ops: c.ops,
        }
    }
}
/// To the controller: the next block of producer ids, (first id, count), durable before it is
/// answered (InitProducerId on a shard whose block ran out).
#[derive(Debug)]
pub struct AllocateProducerIds;
call!(AllocateProducerIds -> Result<(i64, i64), KafkaError>, |_c, shard| match &shard.controller {
    Some(ctl) => ctl.allocate_producer_id_block().await,
    None => Err(KafkaError::NotController),
});

/// To the controller (shard 0), from the shard of a partition this broker leads: change the
/// partition's ISR (Kafka's AlterPartition). `leader_epoch` and `partition_epoch` are those
/// of the leader's state; `new_isr` is (broker, its registration epoch or -1). Answered with
/// the partition as committed, once this node applied it (so the caller's `TopicMeta`
/// already shows it), or with the controller's error (STALE_BROKER_EPOCH, FENCED_LEADER_EPOCH,
/// INVALID_UPDATE_VERSION, INELIGIBLE_REPLICA, INVALID_REQUEST, NOT_CONTROLLER, ...).
#[derive(Clone, Debug)]
pub struct AlterPartition {
    pub topic: String,
    pub partition: i32,
    pub leader_epoch: i32,
    pub partition_epoch: i32,
    pub new_isr: Vec<(i32, i64)>,
}
call!(AlterPartition -> Result<crate::storage::catalog::PartitionAssignment, KafkaError>, |c, shard| match &shard.controller {
    Some(ctl) => ctl.alter_partition(c).await,
    None => Err(KafkaError::NotController),
});

/// To the controller shard: the dynamic broker configs of this broker and of every broker
/// (see [`crate::shard::Shard::apply_dynamic_configs`]).
#[derive(Debug)]
pub struct DynamicBrokerConfigs;
call!(DynamicBrokerConfigs -> (std::collections::BTreeMap<String, String>, std::collections::BTreeMap<String, String>), |_c, shard| match &shard.controller {
    Some(ctl) => ctl.dynamic_broker_configs(),
    None => Default::default(),
});

/// To the controller shard: AlterUserScramCredentials' changes, one result each.
#[derive(Debug)]
pub struct AlterScram {
    pub changes: Vec<crate::cluster::wire::ScramChange>,
    pub context: crate::cluster::wire::Forwarded,
}
call!(AlterScram -> Vec<Result<(), KafkaError>>, |c, shard| match &shard.controller {
    Some(ctl) => ctl.alter_scram_credentials(c.changes, c.context).await,
    None => vec![Err(KafkaError::NotController); c.changes.len()],
});

/// To the controller shard: every SCRAM credential of the metadata (user, mechanism id,
/// credential).
#[derive(Debug)]
pub struct ScramCredentials;
call!(ScramCredentials -> Vec<(String, i8, crate::storage::metadata::record::UserScramCredentialRecord)>, |_c, shard| match &shard.controller {
    Some(ctl) => ctl.scram_credentials(),
    None => Vec::new(),
});

/// To the controller shard: one user's SCRAM credential for one mechanism (SASL logins).
#[derive(Debug)]
pub struct ScramCredentialOf {
    pub user: String,
    pub mechanism: i8,
}
call!(ScramCredentialOf -> Option<crate::storage::metadata::record::UserScramCredentialRecord>, |c, shard| match &shard.controller {
    Some(ctl) => ctl.scram_credential(&c.user, c.mechanism),
    None => None,
});

/// This shard's metrics, for a scrape.
#[derive(Debug)]
pub struct Metrics;
call!(Metrics -> crate::metrics::Snapshot, |_c, shard| shard.snapshot());

// ---------------------------------------------------------------- consumer groups
// Each goes to the shard that coordinates the group (`placement::group_owner`).

#[derive(Debug)]
pub struct JoinGroup {
    pub group: String,
    pub req: JoinRequest,
    pub require_known_member_id: bool,
}
call!(JoinGroup -> JoinResponse, |c, shard| {
    shard.groups.join(c.group, c.req, c.require_known_member_id).await
});

#[derive(Debug)]
pub struct SyncGroup {
    pub group: String,
    pub req: SyncRequest,
}
call!(SyncGroup -> SyncResponse, |c, shard| shard.groups.sync(c.group, c.req).await);

#[derive(Debug)]
pub struct Heartbeat {
    pub group: String,
    pub req: HeartbeatRequest,
}
call!(Heartbeat -> ErrorCode, |c, shard| shard.groups.heartbeat(&c.group, c.req));

#[derive(Debug)]
pub struct LeaveGroup {
    pub group: String,
    pub req: LeaveRequest,
}
call!(LeaveGroup -> LeaveResponse, |c, shard| shard.groups.leave(&c.group, c.req));

/// OffsetCommit: one code per entry.
#[derive(Debug)]
pub struct CommitOffsets {
    pub group: String,
    pub generation_id: i32,
    pub member_id: String,
    pub group_instance_id: Option<String>,
    pub entries: Vec<(String, i32, CommittedOffset)>,
    /// The OffsetCommit version (a consumer group's members commit with v9+).
    pub api_version: i16,
}
call!(CommitOffsets -> Vec<ErrorCode>, |c, shard| {
    let member = (c.generation_id, c.member_id.as_str(), c.group_instance_id.as_deref());
    shard.groups.commit_at_version(&c.group, member, c.entries, c.api_version).await
});

/// Committed offsets: all (None) or of the listed (topic, partitions); with
/// `require_stable`, also the partitions whose transactional commit awaits its marker.
#[derive(Debug)]
pub struct FetchOffsets {
    pub group: String,
    pub wanted: Option<Vec<(String, Vec<i32>)>>,
    pub require_stable: bool,
    /// OffsetFetch v9's (member id, member epoch), checked against a consumer group.
    pub member: (Option<String>, i32),
}
call!(FetchOffsets -> Result<(Vec<FetchedOffset>, Vec<(String, i32)>), ErrorCode>, |c, shard| {
    if !shard.groups.serves(&c.group) {
        return Err(ErrorCode::NOT_COORDINATOR);
    }
    match shard.groups.consumer_fetch_check(&c.group, c.member.0.as_deref(), c.member.1) {
        ErrorCode::NONE => {}
        code => return Err(code),
    }
    let rows = shard.groups.fetch(&c.group, c.wanted);
    let unstable = if c.require_stable {
        shard.groups.unstable(&c.group, &rows)
    } else {
        Vec::new()
    };
    Ok((rows, unstable))
});

/// TxnOffsetCommit: one code per entry.
#[derive(Debug)]
pub struct TxnCommitOffsets {
    pub group: String,
    pub producer_id: i64,
    pub producer_epoch: i16,
    pub generation_id: i32,
    pub member_id: String,
    pub group_instance_id: Option<String>,
    pub entries: Vec<(String, i32, CommittedOffset)>,
}
call!(TxnCommitOffsets -> Vec<ErrorCode>, |c, shard| {
    shard
        .groups
        .txn_commit(
            &c.group,
            (c.producer_id, c.producer_epoch),
            c.generation_id,
            &c.member_id,
            c.group_instance_id.as_deref(),
            c.entries,
        )
        .await
});

#[derive(Debug)]
pub struct DescribeGroup {
    pub group: String,
}
// None: a consumer group, which DescribeGroups does not describe.
call!(DescribeGroup -> Option<GroupDescription>, |c, shard| shard.groups.describe_classic(&c.group));

/// Every group the shard coordinates.
#[derive(Debug)]
pub struct ListGroups;
call!(ListGroups -> Vec<ListedGroup>, |_c, shard| shard.groups.list());

#[derive(Debug)]
pub struct DeleteGroup {
    pub group: String,
}
call!(DeleteGroup -> ErrorCode, |c, shard| shard.groups.delete(&c.group).await);

/// OffsetDelete: the group's code, and one per partition.
#[derive(Debug)]
pub struct DeleteOffsets {
    pub group: String,
    pub partitions: Vec<(String, i32)>,
}
call!(DeleteOffsets -> (ErrorCode, Vec<ErrorCode>), |c, shard| {
    shard.groups.delete_offsets(&c.group, c.partitions).await
});

// ---------------------------------------------------------------- transactions
// Each goes to the shard that coordinates the transactional id (`placement::txn_owner`),
// but the markers, which go to the owners of the transaction's partitions.

/// InitProducerId with a transactional id: (producer id, epoch).
#[derive(Debug)]
pub struct TxnInit {
    pub transactional_id: String,
    pub timeout_ms: i32,
    pub producer_id: i64,
    pub producer_epoch: i16,
}
call!(TxnInit -> Result<(i64, i16), ErrorCode>, |c, shard| {
    shard.txn_init(c.transactional_id, c.timeout_ms, c.producer_id, c.producer_epoch).await
});

/// AddPartitionsToTxn: one code for all the partitions.
#[derive(Debug)]
pub struct TxnAddPartitions {
    pub transactional_id: String,
    pub producer_id: i64,
    pub producer_epoch: i16,
    pub partitions: Vec<(String, i32)>,
}
call!(TxnAddPartitions -> ErrorCode, |c, shard| {
    shard
        .txn_add_partitions(c.transactional_id, c.producer_id, c.producer_epoch, c.partitions)
        .await
});

/// EndTxn, answered once the transaction is complete.
#[derive(Debug)]
pub struct TxnEnd {
    pub transactional_id: String,
    pub producer_id: i64,
    pub producer_epoch: i16,
    pub commit: bool,
}
call!(TxnEnd -> ErrorCode, |c, shard| {
    shard.txn_end(c.transactional_id, c.producer_id, c.producer_epoch, c.commit).await
});

/// Produce of transactional batches (KIP-890 part 1): one code per partition, NONE where the
/// producer's open transaction holds it.
#[derive(Debug)]
pub struct TxnVerify {
    pub transactional_id: String,
    pub producer_id: i64,
    pub producer_epoch: i16,
    pub partitions: Vec<(String, i32)>,
}
call!(TxnVerify -> Vec<ErrorCode>, |c, shard| {
    crate::txn::state::verify(
        shard.txns.borrow().get(&c.transactional_id),
        c.producer_id,
        c.producer_epoch,
        &c.partitions,
    )
});

/// To the owner of partitions: append a transaction marker to each, answered once durable.
#[derive(Debug)]
pub struct WriteTxnMarkers(pub Vec<MarkerItem>);
call!(WriteTxnMarkers -> Answers<()>, |c, shard| shard.write_txn_markers(c.0).await);

/// One partition's commit or abort marker.
#[derive(Clone, Debug)]
pub struct MarkerItem {
    pub topic: String,
    pub partition: i32,
    pub producer_id: i64,
    pub producer_epoch: i16,
    pub commit: bool,
    pub coordinator_epoch: i32,
}

/// DescribeTransactions of one id, on its coordinator: its state, if it has one.
#[derive(Debug)]
pub struct DescribeTxn(pub String);
call!(DescribeTxn -> Option<crate::txn::state::TxnMeta>, |c, shard| {
    shard.txns.borrow().get(&c.0).cloned()
});

/// ListTransactions, on every shard: the ids it coordinates and their state.
#[derive(Debug)]
pub struct ListTxns;
call!(ListTxns -> Vec<(String, crate::txn::state::TxnMeta)>, |_c, shard| {
    shard
        .txns
        .borrow()
        .all()
        .map(|(id, m)| (id.clone(), m.clone()))
        .collect()
});

/// DescribeProducers of partitions this shard owns: each partition's producers.
#[derive(Debug)]
pub struct DescribeProducers(pub Vec<(String, i32)>);
call!(DescribeProducers -> Answers<Vec<ProducerRow>>, |c, shard| shard.describe_producers(c.0));

/// A producer of a partition as DescribeProducers reports it.
#[derive(Clone, Debug)]
pub struct ProducerRow {
    pub producer_id: i64,
    pub producer_epoch: i16,
    /// -1 when its last batch was a marker.
    pub last_sequence: i32,
    pub last_timestamp: i64,
    /// The first offset of its open transaction, or -1.
    pub current_txn_start_offset: i64,
}
/// ConsumerGroupHeartbeat, with the topics this shard knows (names, ids, partition counts)
/// for the group's subscriptions.
#[derive(Debug)]
pub struct ConsumerGroupHeartbeat {
    pub group: String,
    pub req: crate::group::consumer::HeartbeatRequest,
}
call!(ConsumerGroupHeartbeat -> crate::group::consumer::HeartbeatResponse, |c, shard| {
    let metas = shard.all_topics();
    let racks = partition_racks(&shard, &metas);
    let topics: crate::group::consumer::TopicsView = metas
        .into_iter()
        .map(|t| (t.name, (t.topic_id, t.partitions)))
        .collect();
    shard.groups.consumer_heartbeat(&c.group, c.req, topics, racks).await
});

/// The racks of every partition's replicas, for rack-aware assignment: a broker's rack from
/// the cluster view (this broker's from its settings; on a one-node broker it holds every
/// partition). Empty when no broker has a rack.
fn partition_racks(shard: &Shard, metas: &[TopicMeta]) -> crate::group::consumer::PartitionRacks {
    let view = shard.cluster();
    let rack_of = |id: i32| -> Option<String> {
        match &view {
            Some(v) => v.broker(id).and_then(|b| b.rack.clone()),
            None => shard.config.rack.clone(),
        }
    };
    let any = match &view {
        Some(v) => v.brokers.iter().any(|b| b.rack.is_some()),
        None => shard.config.rack.is_some(),
    };
    let mut out = crate::group::consumer::PartitionRacks::new();
    if !any {
        return out;
    }
    for t in metas {
        for p in 0..t.partitions {
            let replicas: Vec<i32> = match t.partition(p) {
                Some(a) => a.replicas.clone(),
                None => vec![shard.config.node_id],
            };
            let racks: std::collections::BTreeSet<String> =
                replicas.into_iter().filter_map(rack_of).collect();
            if !racks.is_empty() {
                out.insert((t.topic_id, p), racks);
            }
        }
    }
    out
}

/// ConsumerGroupDescribe of one group, with the names of the topic ids it mentions; None
/// when it is not a consumer group.
#[derive(Debug)]
pub struct ConsumerGroupDescribe {
    pub group: String,
}
call!(ConsumerGroupDescribe -> Option<(crate::group::consumer_coordinator::ConsumerGroupDescription, std::collections::BTreeMap<uuid::Uuid, String>)>, |c, shard| {
    let d = shard.groups.describe_consumer_group(&c.group)?;
    let names = shard
        .all_topics()
        .into_iter()
        .map(|t| (t.topic_id, t.name))
        .collect();
    Some((d, names))
});
