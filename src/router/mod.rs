//! Cross-core messages. Every piece of work that crosses shards is a [`ShardRequest`] sent to
//! the owning shard over a glommio channel mesh, answered by a [`ShardReply`]; nothing else
//! crosses cores.
//!
//! Wire of the mesh: each shard has a bounded channel to every other shard. An [`Envelope`]
//! carries either a request (with a per-sender id and the sender's shard) or a reply (with the
//! id it answers). Each shard runs one receive task per peer; a request is handled in its own
//! task so a slow request (a long-polling fetch) never blocks the channel, and a reply wakes
//! the local future waiting for that id. Calls to the local shard skip the mesh.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;

use futures_channel::oneshot;
use glommio::channels::channel_mesh::Senders;

use crate::error::KafkaError;
use crate::group::coordinator::{FetchedOffset, ListedGroup};
use crate::group::offsets::CommittedOffset;
use crate::group::state::{
    GroupDescription, HeartbeatRequest, JoinRequest, JoinResponse, LeaveRequest, LeaveResponse,
    SyncRequest, SyncResponse,
};
use crate::protocol::batch::ProducedBatch;
use crate::storage::catalog::TopicMeta;
use crate::storage::log::ReadOut;

/// Work for one shard.
#[derive(Debug)]
pub enum ShardRequest {
    /// Append to partitions this shard owns; answered once written (page cache), not yet
    /// durable: acks=all follows up with [`ShardRequest::Flush`].
    Produce(Vec<ProduceItem>),
    /// Answer once every offset up to the given one of each partition is on disk (group
    /// commit), or at once for topics that flush in the background: (topic, partition, last
    /// offset).
    Flush(Vec<(String, i32, i64)>),
    /// Locate data in partitions this shard owns.
    Fetch(Vec<FetchItem>),
    /// Once any of the partitions grows past the high watermark the fetch last saw of it (or
    /// its fetch offset falls below the log start, or the timeout passes), locate the data as
    /// [`ShardRequest::Fetch`] does: a long poll's wake-up and re-read in one round trip.
    WaitForData {
        /// Each partition with the high watermark the fetch last saw.
        items: Vec<(FetchItem, i64)>,
        timeout_ms: u64,
    },
    /// Offsets by timestamp (-1 latest, -2 earliest) in partitions this shard owns.
    ListOffsets(Vec<(String, i32, i64)>),
    /// Controller to every shard: a topic now exists; cache it and open owned partitions.
    TopicCreated(TopicMeta),
    /// Controller to every shard: a topic is gone; forget it and delete owned partitions.
    TopicDeleted(String),
    /// To the controller: create topics.
    CreateTopics {
        topics: Vec<CreateTopic>,
        validate_only: bool,
    },
    /// To the shard that coordinates a consumer group.
    Group(GroupCall),
    /// This shard's metrics, for a scrape.
    Metrics,
    /// To the controller: delete topics by name.
    DeleteTopics(Vec<String>),
    /// To the controller: change topic configs (IncrementalAlterConfigs, AlterConfigs).
    AlterTopicConfigs {
        changes: Vec<AlterTopicConfig>,
        validate_only: bool,
    },
    /// Controller to every shard: a topic's configs changed; recache it and apply the new
    /// settings to its open logs.
    TopicConfigChanged(TopicMeta),
    /// Move the log start offset of partitions this shard owns: (topic, partition, offset;
    /// -1 for the high watermark).
    DeleteRecords(Vec<(String, i32, i64)>),
}

/// A change to one topic's configs.
#[derive(Clone, Debug)]
pub struct AlterTopicConfig {
    pub topic: String,
    /// Start from no configs at all (AlterConfigs replaces the whole set) instead of the
    /// topic's current ones.
    pub replace: bool,
    /// Applied in order: (name, Some(value)) sets, (name, None) reverts to the default.
    pub ops: Vec<(String, Option<String>)>,
}

#[derive(Debug)]
pub struct ProduceItem {
    pub topic: String,
    pub partition: i32,
    pub batches: Vec<ProducedBatch>,
}

#[derive(Debug)]
pub struct FetchItem {
    pub topic: String,
    pub partition: i32,
    pub offset: i64,
    pub max_bytes: usize,
}

#[derive(Clone, Debug)]
pub struct CreateTopic {
    pub name: String,
    /// -1 for the broker default.
    pub partitions: i32,
    /// -1 for the broker default; only 1 is possible on one node.
    pub replication_factor: i16,
    pub configs: std::collections::BTreeMap<String, String>,
    /// Auto-creation: a topic that already exists is a success, not an error.
    pub if_not_exists: bool,
}

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

/// A consumer-group request for the shard that coordinates the group.
#[derive(Debug)]
pub enum GroupCall {
    Join {
        group: String,
        req: JoinRequest,
        require_known_member_id: bool,
    },
    Sync {
        group: String,
        req: SyncRequest,
    },
    Heartbeat {
        group: String,
        req: HeartbeatRequest,
    },
    Leave {
        group: String,
        req: LeaveRequest,
    },
    Commit {
        group: String,
        generation_id: i32,
        member_id: String,
        group_instance_id: Option<String>,
        entries: Vec<(String, i32, CommittedOffset)>,
    },
    /// Committed offsets: all (None) or of the listed (topic, partitions).
    Fetch {
        group: String,
        wanted: Option<Vec<(String, Vec<i32>)>>,
    },
    Describe {
        group: String,
    },
    /// Every group of the shard.
    List,
    Delete {
        group: String,
    },
    DeleteOffsets {
        group: String,
        partitions: Vec<(String, i32)>,
    },
}

#[derive(Debug)]
pub enum GroupAnswer {
    Join(JoinResponse),
    Sync(SyncResponse),
    Heartbeat(i16),
    Leave(LeaveResponse),
    /// One code per committed entry.
    Commit(Vec<i16>),
    Fetch(Vec<FetchedOffset>),
    Describe(GroupDescription),
    List(Vec<ListedGroup>),
    Delete(i16),
    /// Group error, one code per partition.
    DeleteOffsets(i16, Vec<i16>),
}

/// Answers, one variant per request kind.
#[derive(Debug)]
pub enum ShardReply {
    Group(GroupAnswer),
    Metrics(Box<crate::metrics::Snapshot>),
    Produce(Vec<Result<ProduceOutcome, KafkaError>>),
    Flush(Vec<Result<(), KafkaError>>),
    Fetch(Vec<Result<ReadOut, KafkaError>>),
    ListOffsets(Vec<Result<(i64, i64), KafkaError>>),
    Done(Result<(), KafkaError>),
    CreateTopics(Vec<Result<TopicMeta, KafkaError>>),
    DeleteTopics(Vec<Result<(), KafkaError>>),
    AlterTopicConfigs(Vec<Result<(), KafkaError>>),
    /// The new log start offset of each partition.
    DeleteRecords(Vec<Result<i64, KafkaError>>),
}

#[derive(Debug)]
pub enum Envelope {
    Request {
        id: u64,
        from: usize,
        req: ShardRequest,
    },
    Reply {
        id: u64,
        rep: ShardReply,
    },
}

/// This shard's end of the mesh.
///
/// Lives on: its shard; never shared.
pub struct Router {
    pub shard_id: usize,
    senders: Senders<Envelope>,
    /// Mesh peer index of each shard id.
    peer_of: Vec<usize>,
    next_id: Cell<u64>,
    pending: RefCell<HashMap<u64, oneshot::Sender<ShardReply>>>,
}

impl Router {
    pub fn new(shard_id: usize, senders: Senders<Envelope>, peer_of: Vec<usize>) -> Router {
        Router {
            shard_id,
            senders,
            peer_of,
            next_id: Cell::new(0),
            pending: RefCell::new(HashMap::new()),
        }
    }

    /// Sends `req` to shard `to` (not this one) and waits for its reply.
    pub async fn call_remote(
        &self,
        to: usize,
        req: ShardRequest,
    ) -> Result<ShardReply, KafkaError> {
        let reply = self.send(to, req).await?;
        reply.await.map_err(|_| KafkaError::NotAvailable)
    }

    /// Sends `req` to shard `to` (not this one); returns once it is in the channel, with what
    /// resolves to the reply. Requests from one shard to another arrive in the order sent.
    pub async fn send(
        &self,
        to: usize,
        req: ShardRequest,
    ) -> Result<oneshot::Receiver<ShardReply>, KafkaError> {
        let id = self.next_id.get();
        self.next_id.set(id + 1);
        let (tx, rx) = oneshot::channel();
        self.pending.borrow_mut().insert(id, tx);
        let env = Envelope::Request {
            id,
            from: self.shard_id,
            req,
        };
        if self.senders.send_to(self.peer_of[to], env).await.is_err() {
            self.pending.borrow_mut().remove(&id);
            return Err(KafkaError::NotAvailable);
        }
        Ok(rx)
    }

    /// Sends a reply back to the shard that asked.
    pub async fn reply(&self, to: usize, id: u64, rep: ShardReply) {
        // The peer only goes away at shutdown; then nobody waits for this reply.
        let _ = self
            .senders
            .send_to(self.peer_of[to], Envelope::Reply { id, rep })
            .await;
    }

    /// Completes the local call waiting for reply `id`.
    pub fn complete(&self, id: u64, rep: ShardReply) {
        let tx = self.pending.borrow_mut().remove(&id);
        if let Some(tx) = tx {
            let _ = tx.send(rep);
        }
    }
}
