//! Per-core state and the handlers of cross-core requests.
//!
//! Lives on: one [`Shard`] per executor, reachable only from that executor (it is `!Send`:
//! `Rc` and `RefCell` inside). It owns the logs of the partitions that
//! [`crate::placement::partition_owner`] gives it, a read-only cache of the topic catalog, and on
//! shard 0 the controller that alone changes the catalog.
//!
//! Invariant: no `RefCell` borrow of shard state is held across an `.await`; every storage
//! call is synchronous and short.

pub mod acl;
pub mod calls;
pub mod cleaner;
pub mod controller;
pub mod coordinator_logs;
pub mod partition;
pub mod peer;
pub mod quorum;
pub mod quota;
pub mod replica;
pub mod throttle;
pub mod txn;

use std::cell::{Cell, RefCell};
use std::collections::{BTreeMap, HashMap};
use std::rc::Rc;
use std::time::Duration;

use futures_channel::oneshot;

use crate::clock::now_ms;
use crate::config::Config;
use crate::error::KafkaError;
use crate::group::coordinator::GroupCoordinator;
use crate::log_limit::LogKind;
use crate::protocol::batch::ProducedBatch;
use crate::router::Router;
use crate::storage::catalog::TopicMeta;
use crate::storage::log::{
    FlushJob, FlushStep, Housekeeping, LogConfig, PartitionLog, ReadOut, Retention, partition_dir,
};
use crate::storage::producers::{self, SnapshotJob, Staged, Verdict};
use crate::storage::segment::Recovered;
use calls::{Answers, FetchItem, FlushItem, ProduceItem, ProduceOutcome, ShardMessage};
use partition::{Partition, Wake};

/// Byte counters of one shard.
#[derive(Default, Debug)]
pub struct ShardStats {
    pub bytes_in: Cell<u64>,
    pub bytes_out_copied: Cell<u64>,
    /// Record bytes sent with sendfile(2), never copied through user space.
    pub bytes_out_zero_copy: Cell<u64>,
    /// Fetch record bytes that were not in the page cache and were read into it on the
    /// blocking pool before sendfile (cold, old data).
    pub bytes_out_warmed: Cell<u64>,
    /// Times sendfile found a consumer's socket full, so the next piece went through the
    /// copying path while the socket drained (slow consumers).
    pub fetch_socket_full: Cell<u64>,
    pub connections: Cell<u64>,
    /// Requests being handled right now (shutdown waits for them).
    pub busy: Cell<u64>,
    /// fdatasync jobs run.
    pub flushes: Cell<u64>,
    /// Produce requests' partition appends, and the pwritev calls that wrote them (fewer
    /// when concurrent produces shared a write).
    pub appends: Cell<u64>,
    pub writes: Cell<u64>,
    /// Replication: ISR changes committed for partitions led here, record bytes appended as a
    /// follower and served to followers.
    pub isr_shrinks: Cell<u64>,
    pub isr_expands: Cell<u64>,
    pub replication_bytes_in: Cell<u64>,
    pub replication_bytes_out: Cell<u64>,
    /// Record bytes of throttled replicas that went through this shard's throttles (served
    /// as a leader and fetched as a follower).
    pub replication_throttled_bytes: Cell<u64>,
}

/// A produce's batches waiting for the shard's writer task.
struct PendingWrite {
    batches: Vec<ProducedBatch>,
    log_append_time: bool,
    acks_all: bool,
    guard: Option<u64>,
    answer: oneshot::Sender<Result<Written, KafkaError>>,
}

/// Where one produce request's batches landed.
struct Written {
    base_offset: i64,
    last_offset: i64,
    log_append_time: i64,
    log_start_offset: i64,
}

/// A produce's batches, queued on their owner shard: [`QueuedProduce::wait`] gives their
/// offsets once written.
pub struct QueuedProduce(Vec<oneshot::Receiver<Result<Written, KafkaError>>>);

impl QueuedProduce {
    pub async fn wait(self) -> Answers<ProduceOutcome> {
        let mut results = Vec::with_capacity(self.0.len());
        for rx in self.0 {
            // A dropped answer means the shard stopped before writing: the client retries
            // wherever the partition lives next.
            let written = rx.await.unwrap_or(Err(KafkaError::NotLeaderOrFollower));
            results.push(written.map(|w| ProduceOutcome {
                base_offset: w.base_offset,
                last_offset: w.last_offset,
                log_append_time: w.log_append_time,
                log_start_offset: w.log_start_offset,
            }));
        }
        results
    }
}

/// A partition's key in shard maps: (topic, partition).
pub type TopicPartition = (String, i32);

/// A wait's place in the per-partition waiter lists, taken out when the wait ends for any
/// reason (woken, timed out, or its future dropped because the fetch was answered), so the
/// lists hold only live waits.
struct Registered<'a> {
    shard: &'a Shard,
    wake: Rc<Wake>,
    partitions: Vec<TopicPartition>,
}

impl Drop for Registered<'_> {
    fn drop(&mut self) {
        let mut partitions = self.shard.partitions.borrow_mut();
        for tp in &self.partitions {
            if let Some(p) = partitions.get_mut(tp) {
                p.waiters.retain(|w| !Rc::ptr_eq(w, &self.wake));
            }
        }
    }
}

/// A remote long poll's entry in `remote_waits`, removed when the wait ends.
struct RemoteWait<'a> {
    shard: &'a Shard,
    key: (usize, u64),
}

impl Drop for RemoteWait<'_> {
    fn drop(&mut self) {
        self.shard.remote_waits.borrow_mut().remove(&self.key);
    }
}

pub struct Shard {
    pub id: usize,
    /// The settings `spate serve` started with.
    pub config: Rc<Config>,
    /// `config` with the dynamic broker configs over it (the topic defaults they may change,
    /// see [`controller::DYNAMIC_BROKER_CONFIGS`]): what the data path reads those defaults
    /// from. Replaced whole by [`Shard::apply_dynamic_configs`].
    live: RefCell<Rc<Config>>,
    /// The dynamic broker configs last applied: this broker's own, and every broker's.
    dynamic: RefCell<(BTreeMap<String, String>, BTreeMap<String, String>)>,
    pub cluster_id: String,
    pub router: Router<ShardMessage>,
    /// Topic catalog cache, by name. Changed only by controller messages.
    topics: RefCell<BTreeMap<String, TopicMeta>>,
    /// Logs of the partitions this shard owns.
    partitions: RefCell<HashMap<TopicPartition, Partition>>,
    /// Produces waiting for the writer task, by partition, in arrival order.
    pending_writes: RefCell<HashMap<TopicPartition, Vec<PendingWrite>>>,
    /// Whether a writer task is already scheduled for `pending_writes`.
    writer_scheduled: Cell<bool>,
    /// Partitions with an fdatasync in flight, and who waits for it to finish.
    flushing: RefCell<HashMap<TopicPartition, Vec<oneshot::Sender<()>>>>,
    /// Long polls from other shards, by (origin shard, wait id), so that the origin can end
    /// them ([`calls::CancelWait`]) as soon as its fetch is answered.
    remote_waits: RefCell<HashMap<(usize, u64), Rc<Wake>>>,
    /// Ids for this shard's own long polls on other shards.
    next_wait_id: Cell<u64>,
    /// The controller, on shard 0 only.
    pub controller: Option<controller::Controller>,
    /// Bytes of request frames this shard holds (read, being handled, or being answered);
    /// at most `config.inflight_bytes_max` (plus one frame in the overshoot slot). A frame takes
    /// it as its bytes arrive, and its connection waits for room before reading more.
    pub inflight: Rc<glommio::sync::Semaphore>,
    /// The consumer groups this shard coordinates.
    pub groups: GroupCoordinator,
    /// The transactional ids this shard coordinates (its partitions of `__transaction_state`).
    pub(crate) txns: RefCell<crate::txn::store::TxnLog>,
    /// Transactional ids with an operation in flight (see `shard/txn.rs`): another request for
    /// one of them is answered CONCURRENT_TRANSACTIONS.
    pub(crate) txn_busy: RefCell<std::collections::BTreeSet<String>>,
    /// Connections to other brokers' Kafka listeners (see `peer.rs`).
    peers: peer::Peers,
    /// Whether client requests are served (see [`Shard::until_serving`]).
    serving: Cell<bool>,
    /// On one node: whether this shard's partitions of `__transaction_state` are open (see
    /// [`Shard::open_txn_log`]).
    txn_log_open: Cell<bool>,
    /// Request counters and latency histograms.
    pub metrics: crate::metrics::ShardMetrics,
    /// What the shard's log cleaner did (see `cleaner.rs`).
    pub cleaner_stats: cleaner::CleanerStats,
    pub stats: ShardStats,
    /// Set when the broker is stopping: accept loops and connections wind down.
    pub stopping: Cell<bool>,
    /// Limits the log lines of objects clients create at will (topics, partitions), so a
    /// client creating in a loop cannot flood the log (see `log_limit`).
    pub log: crate::log_limit::LogLimiter,
    /// What this shard knows of the cluster (brokers that serve, the controller, the cluster
    /// id), replaced as a whole by the controller's `ClusterChanged`. None on one node.
    cluster: RefCell<Option<std::sync::Arc<crate::cluster::view::ClusterView>>>,
    /// This shard's block of producer ids: [next, end). Refilled from the controller (see
    /// [`Shard::new_producer_id`]).
    producer_ids: Cell<(i64, i64)>,
    /// The replica fetchers of this shard, by the leader broker they fetch from (see
    /// `replica`).
    fetchers: RefCell<HashMap<i32, Rc<replica::Fetcher>>>,
    /// The replication throttles of this shard (see `throttle`); their rates are refreshed
    /// from the metadata's dynamic broker configs on each replica tick.
    throttles: RefCell<throttle::Throttles>,
    /// Partitions whose replica here went offline (a storage error) and were reported to the
    /// controller (see `replica::report_offline_replicas`).
    offline_reported: RefCell<std::collections::HashSet<TopicPartition>>,
    /// The high watermarks of the last checkpoint this shard wrote.
    hw_written: RefCell<Vec<(TopicPartition, i64)>>,
    /// The checkpointed high watermarks read at start (cluster only), used as each partition
    /// opens.
    hw_checkpoint: RefCell<HashMap<TopicPartition, i64>>,
    /// The leader epoch in which each loaded partition of a coordinator's log
    /// (`__consumer_offsets`, `__transaction_state`) was loaded into its coordinator (cluster
    /// only; see `replica::partition_assigned`).
    coordinator_epochs: RefCell<HashMap<TopicPartition, i32>>,
    /// The client quotas in force (see `quota`), replaced whole by the controller's push.
    quotas: RefCell<Rc<crate::quota::QuotaTable>>,
    /// The sensors of the quota keys this shard owns (`placement::quota_owner`).
    quota_sensors: RefCell<crate::quota::Sensors>,
    /// Where this shard's quota clock starts.
    quota_epoch: std::time::Instant,
    pub quota_stats: quota::QuotaStats,
    /// The ACLs in force (see `acl`), replaced whole by the controller's push.
    acls: RefCell<Rc<acl::AclTable>>,
    /// The authorizer's policy; None with `--authorizer none` (everything is allowed).
    acl_policy: Option<crate::auth::acl::Policy>,
}

/// How often a held client request looks whether its broker serves yet.
const SERVING_POLL_MS: u64 = 20;

impl Shard {
    pub fn new(
        id: usize,
        config: Rc<Config>,
        cluster_id: String,
        topics: Vec<TopicMeta>,
        router: Router<ShardMessage>,
        groups: GroupCoordinator,
        txns: crate::txn::store::TxnLog,
    ) -> Shard {
        let controller = (id == crate::placement::CONTROLLER_SHARD)
            .then(|| controller::Controller::new(config.node_id));
        let in_cluster = config.cluster.is_some();
        let throttles = RefCell::new(throttle::Throttles::new(
            config.leader_replication_throttled_rate,
            config.follower_replication_throttled_rate,
            std::time::Instant::now(),
        ));
        Shard {
            id,
            inflight: Rc::new(glommio::sync::Semaphore::new(
                config.inflight_bytes_max as u64,
            )),
            live: RefCell::new(config.clone()),
            dynamic: RefCell::default(),
            cluster_id,
            router,
            topics: RefCell::new(topics.into_iter().map(|t| (t.name.clone(), t)).collect()),
            partitions: RefCell::new(HashMap::new()),
            remote_waits: RefCell::new(HashMap::new()),
            next_wait_id: Cell::new(0),
            flushing: RefCell::new(HashMap::new()),
            pending_writes: RefCell::new(HashMap::new()),
            writer_scheduled: Cell::new(false),
            controller,
            groups,
            txns: RefCell::new(txns),
            txn_busy: RefCell::new(std::collections::BTreeSet::new()),
            peers: peer::Peers::default(),
            serving: Cell::new(!in_cluster),
            txn_log_open: Cell::new(false),
            metrics: Default::default(),
            cleaner_stats: Default::default(),
            stats: ShardStats::default(),
            stopping: Cell::new(false),
            log: crate::log_limit::LogLimiter::new(Duration::from_millis(
                crate::log_limit::LOG_INTERVAL_MS,
            )),
            // In a cluster a shard knows no broker (not even this one) until the metadata says
            // so: Metadata must not name a broker or a controller before they exist.
            cluster: RefCell::new(in_cluster.then(|| {
                std::sync::Arc::new(crate::cluster::view::ClusterView {
                    controller_id: -1,
                    ..Default::default()
                })
            })),
            producer_ids: Cell::new((0, 0)),
            fetchers: RefCell::new(HashMap::new()),
            throttles,
            offline_reported: RefCell::new(std::collections::HashSet::new()),
            hw_written: RefCell::new(Vec::new()),
            hw_checkpoint: RefCell::new(HashMap::new()),
            coordinator_epochs: RefCell::new(HashMap::new()),
            quotas: RefCell::new(Rc::new(crate::quota::QuotaTable::default())),
            quota_sensors: RefCell::new(crate::quota::Sensors::default()),
            quota_epoch: std::time::Instant::now(),
            quota_stats: quota::QuotaStats::default(),
            acls: RefCell::new(Rc::new(acl::AclTable::default())),
            acl_policy: acl::policy_of(&config),
            config,
        }
    }

    /// The settings in effect: the start-up ones with the dynamic broker configs over them.
    pub fn live(&self) -> Rc<Config> {
        self.live.borrow().clone()
    }

    /// The dynamic broker configs last applied (own, every broker's).
    pub fn dynamic_configs(&self) -> (BTreeMap<String, String>, BTreeMap<String, String>) {
        self.dynamic.borrow().clone()
    }

    /// Applies the dynamic broker configs (this broker's own over every broker's, over the
    /// start-up settings): the throttle rates, and the topic defaults, which the open logs
    /// take at once.
    pub fn apply_dynamic_configs(
        &self,
        own: BTreeMap<String, String>,
        default: BTreeMap<String, String>,
    ) {
        if *self.dynamic.borrow() == (own.clone(), default.clone()) {
            return;
        }
        let get = |k: &str| own.get(k).or_else(|| default.get(k));
        let mut c = (*self.config).clone();
        let bad = |k: &str, v: &str| {
            tracing::error!(
                config = k,
                value = v,
                "dynamic broker config ignored: not valid"
            );
        };
        let limit = |v: &str| v.parse::<i64>().ok().map(|n| u64::try_from(n).ok());
        for k in controller::DYNAMIC_BROKER_CONFIGS {
            let Some(v) = get(k) else { continue };
            let v = v.as_str();
            match *k {
                "log.retention.ms" => match limit(v) {
                    Some(n) => c.retention_ms = n,
                    None => bad(k, v),
                },
                "log.retention.bytes" => match limit(v) {
                    Some(n) => c.retention_bytes = n,
                    None => bad(k, v),
                },
                "log.roll.ms" => match v.parse::<u64>() {
                    Ok(n) if n >= 1 => c.segment_ms = Some(n),
                    _ => bad(k, v),
                },
                "log.segment.bytes" => match v.parse::<u64>() {
                    Ok(n) if n >= 1024 => c.segment_bytes = n,
                    _ => bad(k, v),
                },
                "message.max.bytes" => match v.parse::<usize>() {
                    Ok(n) => c.message_bytes_max = n,
                    _ => bad(k, v),
                },
                "compression.type" => match crate::storage::catalog::TopicCompression::parse(v) {
                    Some(t) => c.compression_type = t,
                    None => bad(k, v),
                },
                "log.message.timestamp.before.max.ms" => match v.parse::<u64>() {
                    Ok(n) => c.message_timestamp_before_max_ms = Some(n),
                    _ => bad(k, v),
                },
                "log.message.timestamp.after.max.ms" => match v.parse::<u64>() {
                    Ok(n) => c.message_timestamp_after_max_ms = Some(n),
                    _ => bad(k, v),
                },
                _ => {}
            }
        }
        let rate = |k: &str| get(k).and_then(|v| v.parse::<u64>().ok());
        self.set_throttle_rates(
            rate("leader.replication.throttled.rate")
                .or(self.config.leader_replication_throttled_rate),
            rate("follower.replication.throttled.rate")
                .or(self.config.follower_replication_throttled_rate),
        );
        if self.id == 0 {
            tracing::info!(own = ?own, every_broker = ?default, "dynamic broker configs applied");
        }
        *self.live.borrow_mut() = Rc::new(c);
        *self.dynamic.borrow_mut() = (own, default);
        // The open logs take the new defaults (segment size and age).
        let topics: Vec<TopicMeta> = self.topics.borrow().values().cloned().collect();
        for meta in topics {
            let config = self.log_config(&meta);
            for ((topic, _), p) in self.partitions.borrow_mut().iter_mut() {
                if *topic == meta.name {
                    p.log.set_config(config);
                }
            }
        }
    }

    /// A producer id never handed out before, by this broker or before a restart.
    ///
    /// Each shard hands out ids from a block of its own, so InitProducerId costs no cross-core
    /// hop but once per block: when the block runs out, the shard asks the controller (shard
    /// 0) for the next one, whose upper bound is durable before the answer comes. Two requests
    /// that both find the block empty both ask; the later block wins and the rest of the other
    /// is skipped, never reused.
    pub async fn new_producer_id(self: &Rc<Self>) -> Result<i64, KafkaError> {
        loop {
            let (next, end) = self.producer_ids.get();
            if next < end {
                self.producer_ids.set((next + 1, end));
                return Ok(next);
            }
            let (first, count) = self
                .call(
                    crate::placement::CONTROLLER_SHARD,
                    calls::AllocateProducerIds,
                )
                .await
                .map_err(|_| KafkaError::CoordinatorNotAvailable)??;
            let (next, end) = self.producer_ids.get();
            if next >= end || first > next {
                self.producer_ids.set((first, first + count));
            }
        }
    }

    pub fn shards(&self) -> usize {
        self.config.shards
    }

    /// The cluster as this shard knows it; None on a one-node broker (no `--voters`).
    pub fn cluster(&self) -> Option<std::sync::Arc<crate::cluster::view::ClusterView>> {
        self.cluster.borrow().clone()
    }

    pub fn cluster_changed(&self, view: std::sync::Arc<crate::cluster::view::ClusterView>) {
        if view.serves_here && !self.serving.replace(true) && self.id == 0 {
            tracing::info!("caught up with the metadata and unfenced: serving client requests");
        }
        *self.cluster.borrow_mut() = Some(view);
    }

    /// Waits until this broker serves clients: at once on one node; in a cluster, once it
    /// has been unfenced in its current registration (it caught up with the metadata since it
    /// started), as a Kafka broker processes no request before its initial catch-up. Until
    /// then its local metadata may be from before it stopped, and Metadata, Produce or Fetch
    /// answered from it would send clients to leaders that are long gone.
    pub async fn until_serving(&self) {
        while !self.serving.get() && !self.stopping.get() {
            glommio::timer::sleep(Duration::from_millis(SERVING_POLL_MS)).await;
        }
    }

    /// Whether this node holds a replica of `topic`'s partition `p`: on one node, every
    /// partition; in a cluster, those the metadata assigns it.
    pub fn holds_replica(&self, topic: &TopicMeta, p: i32) -> bool {
        self.config.cluster.is_none()
            || topic
                .partition(p)
                .is_some_and(|a| a.replicas.contains(&self.config.node_id))
    }

    /// Whether this node leads `topic`'s partition `p` (always, on one node).
    pub fn leads(&self, topic: &TopicMeta, p: i32) -> bool {
        self.config.cluster.is_none()
            || topic
                .partition(p)
                .is_some_and(|a| a.leader == self.config.node_id)
    }

    pub fn owner(&self, topic: &str, partition: i32) -> usize {
        crate::placement::partition_owner(topic, partition, self.shards())
    }

    pub fn topic(&self, name: &str) -> Option<TopicMeta> {
        self.topics.borrow().get(name).cloned()
    }

    pub fn topic_by_id(&self, id: uuid::Uuid) -> Option<TopicMeta> {
        self.topics
            .borrow()
            .values()
            .find(|t| t.topic_id == id)
            .cloned()
    }

    pub fn all_topics(&self) -> Vec<TopicMeta> {
        self.topics.borrow().values().cloned().collect()
    }

    pub fn log_config(&self, topic: &TopicMeta) -> LogConfig {
        // The coordinators' logs keep their own small segments (see `group::store`).
        if topic.name == crate::placement::OFFSETS_TOPIC {
            return crate::group::store::LOG_CONFIG;
        }
        if topic.name == crate::placement::TXN_TOPIC {
            return crate::txn::store::LOG_CONFIG;
        }
        LogConfig {
            segment_ms: topic.config.segment_ms.or(self.live().segment_ms),
            segment_bytes: topic
                .config
                .segment_bytes
                .unwrap_or(self.live().segment_bytes),
            index_interval_bytes: topic
                .config
                .index_interval_bytes
                .unwrap_or(self.config.index_interval_bytes),
            segment_jitter_ms: topic
                .config
                .segment_jitter_ms
                .unwrap_or(crate::storage::catalog::defaults::SEGMENT_JITTER_MS),
            segment_index_bytes: topic
                .config
                .segment_index_bytes
                .unwrap_or(crate::storage::catalog::defaults::SEGMENT_INDEX_BYTES),
            preallocate: topic
                .config
                .preallocate
                .unwrap_or(crate::storage::catalog::defaults::PREALLOCATE),
        }
    }

    /// Checks, in debug builds, that this shard owns the partition it is about to touch.
    fn debug_assert_owner(&self, topic: &str, partition: i32) {
        debug_assert_eq!(
            self.owner(topic, partition),
            self.id,
            "{topic}-{partition} touched on shard {} but owned by another",
            self.id
        );
    }

    /// What `topic` keeps (topic configs over broker defaults; -1 keeps everything).
    pub fn retention(&self, topic: &TopicMeta) -> Retention {
        Retention {
            ms: topic
                .config
                .retention_ms
                .map_or(self.live().retention_ms, positive),
            bytes: topic
                .config
                .retention_bytes
                .map_or(self.live().retention_bytes, positive),
        }
    }

    /// How long the files of `topic`'s deleted segments stay (`file.delete.delay.ms`).
    fn file_delete_delay_ms(&self, topic: &TopicMeta) -> u64 {
        topic
            .config
            .file_delete_delay_ms
            .unwrap_or(crate::storage::catalog::defaults::FILE_DELETE_DELAY_MS)
    }

    /// One pass of housekeeping over this shard's partitions: idle producer ids expire, and
    /// retention runs. Segments leave the logs here; their files are deleted on the blocking
    /// pool.
    pub async fn apply_retention(&self) {
        let now = now_ms();
        let jobs: Vec<Housekeeping> = {
            let topics = self.topics.borrow();
            let mut partitions = self.partitions.borrow_mut();
            // Producers idle past producer.id.expiration.ms are forgotten (a later batch of
            // theirs is taken as from an unknown producer, at any sequence).
            for ((topic, partition), p) in partitions.iter_mut() {
                let gone = p
                    .producers
                    .expire(now, self.config.producer_id_expiration_ms);
                if gone > 0 {
                    tracing::debug!(%topic, partition, expired = gone, "idle producer ids expired");
                }
            }
            partitions
                .iter_mut()
                // The coordinators bound their own logs (`group::store`, `txn::store`); time
                // and size retention would delete live state.
                .filter(|((topic, _), _)| !crate::placement::is_coordinator_log(topic))
                .filter_map(|((topic, _), p)| {
                    let meta = topics.get(topic)?;
                    // A compact-only topic keeps every key's last record, however old.
                    if !self.cleanup_policy(meta).delete {
                        return None;
                    }
                    let delay = self.file_delete_delay_ms(meta);
                    p.log
                        .apply_retention(self.retention(meta), now)
                        .map(|h| h.delay_deletion(delay))
                })
                .collect()
        };
        if jobs.is_empty() {
            return;
        }
        // Fetches waiting below the new log start must now answer OFFSET_OUT_OF_RANGE.
        self.wake_all_fetches();
        if let Err(e) = run_housekeeping(jobs).await {
            tracing::error!(shard = self.id, error = %e, "deleting expired segments failed");
        }
    }

    /// Opens the logs of every partition of `topic` that this shard owns; with `recover`
    /// (after an unclean stop) each log's tail is checked batch by batch first.
    pub fn open_owned_partitions(
        &self,
        topic: &TopicMeta,
        recover: bool,
        at_start: bool,
    ) -> std::io::Result<Recovered> {
        // On one node the shard opens its partitions of the coordinators' logs itself,
        // whatever the metadata says ([`Shard::open_coordinator_partitions`]); in a cluster
        // they come from the metadata like any topic's.
        if crate::placement::is_coordinator_log(&topic.name) && self.config.cluster.is_none() {
            return Ok(Recovered::default());
        }
        self.open_partitions_of(topic, recover, at_start)
    }

    /// On a one-node broker, at start: opens this shard's partitions of the coordinators'
    /// logs (`__consumer_offsets`, `__transaction_state`) as the only replica, and loads each
    /// into its coordinator, before the shard serves. A cluster's come from the metadata, and
    /// load when this broker becomes their leader (see `replica::partition_assigned`).
    ///
    /// `__transaction_state` opens here only when it exists already (a directory of any of its
    /// partitions is there); otherwise on the first use of a transactional id
    /// ([`Shard::open_txn_log`]), as Kafka creates it on first use: a broker that never sees a
    /// transaction keeps no 50 partitions (150 descriptors) open for it.
    pub fn open_coordinator_partitions(&self, recover: bool) -> std::io::Result<Recovered> {
        if self.config.cluster.is_some() {
            return Ok(Recovered::default());
        }
        let txn = crate::placement::TXN_TOPIC;
        let txn_partitions = self.config.transaction_state_log_num_partitions;
        let txn_exists =
            (0..txn_partitions).any(|p| partition_dir(&self.config.data_dir, txn, p).exists());
        let mut logs = vec![(
            crate::placement::OFFSETS_TOPIC,
            self.config.offsets_topic_num_partitions,
        )];
        if txn_exists {
            logs.push((txn, txn_partitions));
        }
        self.open_local_coordinator_logs(&logs, recover)
    }

    /// Whether this shard's partitions of `__transaction_state` are open (one node).
    pub fn txn_log_is_open(&self) -> bool {
        self.txn_log_open.get()
    }

    /// On a one-node broker: opens and loads this shard's partitions of `__transaction_state`
    /// unless they are open (see [`Shard::open_coordinator_partitions`]).
    pub fn open_txn_log(&self) -> Result<(), KafkaError> {
        if self.config.cluster.is_some() || self.txn_log_open.get() {
            return Ok(());
        }
        let logs = [(
            crate::placement::TXN_TOPIC,
            self.config.transaction_state_log_num_partitions,
        )];
        self.open_local_coordinator_logs(&logs, false)
            .map(|_| ())
            .map_err(|e| KafkaError::Storage(format!("cannot create __transaction_state: {e}")))
    }

    /// Opens and loads this shard's partitions of the one-node coordinator logs named.
    fn open_local_coordinator_logs(
        &self,
        logs: &[(&str, i32)],
        recover: bool,
    ) -> std::io::Result<Recovered> {
        let mut total = Recovered::default();
        for &(name, partitions) in logs {
            let topic = TopicMeta::new(
                name.to_string(),
                uuid::Uuid::nil(),
                partitions,
                BTreeMap::new(),
            )
            .map_err(|e| std::io::Error::other(e.to_string()))?;
            let owned: Vec<i32> = (0..partitions)
                .filter(|p| self.owner(name, *p) == self.id)
                .collect();
            let fresh = owned
                .iter()
                .any(|p| !partition_dir(&self.config.data_dir, name, *p).exists());
            let r = self.open_partitions_of(&topic, recover, true)?;
            total.batches += r.batches;
            total.records += r.records;
            total.bytes += r.bytes;
            total.truncated_bytes += r.truncated_bytes;
            if fresh {
                // A new directory's entry must be durable before a change in it is answered.
                std::fs::File::open(&self.config.data_dir)?.sync_all()?;
            }
            for p in owned {
                if name == crate::placement::OFFSETS_TOPIC {
                    self.groups.load_partition(p)?;
                } else {
                    self.txns.borrow_mut().load_partition(p)?;
                }
            }
            if name == crate::placement::TXN_TOPIC {
                self.txn_log_open.set(true);
            }
        }
        Ok(total)
    }

    fn open_partitions_of(
        &self,
        topic: &TopicMeta,
        recover: bool,
        at_start: bool,
    ) -> std::io::Result<Recovered> {
        let mut total = Recovered::default();
        for p in 0..topic.partitions {
            if self.owner(&topic.name, p) != self.id || !self.holds_replica(topic, p) {
                continue;
            }
            if self
                .partitions
                .borrow()
                .contains_key(&(topic.name.clone(), p))
            {
                continue;
            }
            let log = PartitionLog::open(
                &self.config.data_dir,
                &topic.name,
                p,
                self.log_config(topic),
                recover,
            )?;
            if let Some(r) = log.recovered {
                total.batches += r.batches;
                total.records += r.records;
                total.bytes += r.bytes;
                total.truncated_bytes += r.truncated_bytes;
                if r.truncated_bytes > 0 {
                    tracing::warn!(
                        topic = %topic.name,
                        partition = p,
                        truncated_bytes = r.truncated_bytes,
                        log_end_offset = log.log_end_offset(),
                        "recovery cut a torn or corrupt tail off the log"
                    );
                }
            }
            // At start every partition is reported; a partition of a topic created while the
            // broker runs (by any client, auto-creation included) is rate-limited.
            let allowed = if at_start {
                Some(0)
            } else {
                self.log
                    .allow(LogKind::PartitionOpened, std::time::Instant::now())
            };
            let (name, end) = (&topic.name, log.log_end_offset());
            match allowed {
                Some(0) => tracing::info!(
                    "partition opened topic={name} partition={p} shard={} log_end_offset={end}",
                    self.id
                ),
                Some(held_back) => tracing::info!(
                    held_back,
                    "partition opened topic={name} partition={p} shard={} log_end_offset={end}",
                    self.id
                ),
                None => tracing::debug!(
                    "partition opened topic={name} partition={p} shard={} log_end_offset={end}",
                    self.id
                ),
            }
            let rebuilt = producers::rebuild(&log)?;
            let (producers, snapshot) = (rebuilt.state, rebuilt.snapshot);
            let mut txn_index = crate::storage::txnindex::TxnIndex::load(
                log.dir(),
                log.log_start_offset(),
                log.log_end_offset(),
            )?;
            // Abort markers whose index entry a crash lost before it was synced.
            for (segment_base, entry) in rebuilt.aborts {
                if entry.last_offset < log.log_start_offset() {
                    continue;
                }
                if let Some(sync) = txn_index.restore(segment_base, entry)? {
                    sync.run()?;
                    tracing::warn!(topic = %name, partition = p, producer_id = entry.producer_id, marker_offset = entry.last_offset, "aborted-transaction index entry restored from its abort marker (lost in a crash before it was synced)");
                }
            }
            // In a cluster: the metadata's view of the partition, and the checkpointed high
            // watermark (absent: the log start, so nothing unreplicated becomes visible).
            let (assignment, hw) = match &self.config.cluster {
                None => (None, None),
                Some(_) => {
                    let start = log.log_start_offset();
                    let hw = self
                        .hw_checkpoint
                        .borrow_mut()
                        .remove(&(topic.name.clone(), p))
                        .unwrap_or(start);
                    (
                        Some(topic.partition(p).cloned().unwrap_or_default()),
                        Some(hw),
                    )
                }
            };
            let mut partition = Partition::new(log, assignment.clone(), hw);
            if let Some(a) = &assignment {
                partition.apply_assignment(self.config.node_id, a, std::time::Instant::now());
            }
            partition.restore(producers, txn_index);
            partition.producers_snapshot = snapshot;
            let end = partition.log_end_offset();
            if snapshot.is_none()
                && end > partition.log.log_start_offset()
                && partition.log.check_online().is_ok()
            {
                // The whole log was replayed (a log from before producer snapshots, or one
                // that crashed before its first): save that work for the next start.
                self.snapshot_producers(&mut partition, end);
            }
            self.partitions
                .borrow_mut()
                .insert((topic.name.clone(), p), partition);
        }
        Ok(total)
    }

    /// (topic, partition, log end offset, log start offset, bytes) of every owned partition.
    pub fn partition_stats(&self) -> Vec<(String, i32, i64, i64, u64)> {
        let partitions = self.partitions.borrow();
        let mut out: Vec<_> = partitions
            .iter()
            .map(|((t, p), part)| {
                (
                    t.clone(),
                    *p,
                    part.log_end_offset(),
                    part.log.log_start_offset(),
                    part.log.size_bytes(),
                )
            })
            .collect();
        out.sort();
        out
    }

    /// Queues a produce's batches for the shard's writer task, synchronously, and returns what
    /// to wait on for their offsets. Batches of one partition are appended in the order they
    /// were queued, and this is where that order is fixed: the connection that sent the
    /// request goes on with its next request once every owner has queued (see
    /// `server::connection`).
    ///
    /// The writer appends what is queued for a partition with one pwritev per run of requests
    /// that fits the active segment (see `write_pending`), so concurrent produces share a
    /// write. The answer comes once written;
    /// durability is a separate `Flush`, so that the connection can go on while this request's
    /// fdatasync runs.
    pub fn enqueue_produce(self: &Rc<Self>, items: Vec<ProduceItem>) -> QueuedProduce {
        let mut waits = Vec::with_capacity(items.len());
        {
            let topics = self.topics.borrow();
            let mut pending = self.pending_writes.borrow_mut();
            for item in items {
                self.debug_assert_owner(&item.topic, item.partition);
                let append_time = topics
                    .get(&item.topic)
                    .is_some_and(TopicMeta::log_append_time);
                let (tx, rx) = oneshot::channel();
                pending
                    .entry((item.topic, item.partition))
                    .or_default()
                    .push(PendingWrite {
                        batches: item.batches,
                        log_append_time: append_time,
                        acks_all: item.acks_all,
                        guard: item.guard,
                        answer: tx,
                    });
                waits.push(rx);
            }
        }
        if !self.writer_scheduled.replace(true) {
            glommio::spawn_local(self.clone().write_pending()).detach();
        }
        QueuedProduce(waits)
    }

    /// acks=all: answers once every offset up to the given one of each partition is on disk
    /// (group commit: concurrent produces to a partition share one fdatasync), or at once for
    /// topics that flush in the background.
    pub async fn flush_items(self: &Rc<Self>, items: Vec<FlushItem>) -> Answers<()> {
        let background: Vec<bool> = {
            let topics = self.topics.borrow();
            items
                .iter()
                .map(|(topic, partition, _)| {
                    self.debug_assert_owner(topic, *partition);
                    topics.get(topic).is_some_and(|t| !self.flush_on_ack(t))
                })
                .collect()
        };
        let flushes = items.into_iter().zip(background).map(|((t, p, last), bg)| {
            let shard = self.clone();
            async move {
                if !bg {
                    shard.flush_to((t.clone(), p), last).await?;
                }
                shard.wait_replicated((t, p), last).await
            }
        });
        futures_util::future::join_all(flushes).await
    }

    /// `min.insync.replicas` of `topic` (its config over the broker default).
    pub fn min_insync_replicas(&self, topic: &TopicMeta) -> i32 {
        topic
            .config
            .min_insync_replicas
            .unwrap_or(self.config.min_insync_replicas)
    }

    /// acks=all on a replicated partition: waits until the high watermark passes `last` (every
    /// in-sync replica has it, durably), in the leader epoch the write was made in. Past it
    /// with fewer in-sync replicas than `min.insync.replicas`, the write stands but is
    /// answered NOT_ENOUGH_REPLICAS_AFTER_APPEND, as Kafka does. Immediate on one node. The
    /// produce's timeout bounds the wait.
    async fn wait_replicated(&self, tp: TopicPartition, last: i64) -> Result<(), KafkaError> {
        let min = self
            .topic(&tp.0)
            .map_or(self.config.min_insync_replicas, |t| {
                self.min_insync_replicas(&t)
            });
        let mut epoch = None;
        loop {
            let (wake, rx) = Wake::new();
            {
                let mut partitions = self.partitions.borrow_mut();
                let p = partitions
                    .get_mut(&tp)
                    .ok_or(KafkaError::NotLeaderOrFollower)?;
                match &p.role {
                    partition::Role::Single => return Ok(()),
                    partition::Role::Leader(_) => {}
                    _ => return Err(KafkaError::NotLeaderOrFollower),
                }
                // The epoch at the first look is the write's (the writer answered just now).
                if *epoch.get_or_insert(p.leader_epoch()) != p.leader_epoch() {
                    return Err(KafkaError::NotLeaderOrFollower);
                }
                if let Some(why) = p.log.poisoned() {
                    return Err(KafkaError::Storage(format!("partition is offline: {why}")));
                }
                if p.high_watermark() > last {
                    let isr = p.assignment.isr.len();
                    if (isr as i64) < i64::from(min) {
                        return Err(KafkaError::NotEnoughReplicasAfterAppend { isr, min });
                    }
                    return Ok(());
                }
                p.waiters.push(wake.clone());
            }
            let _registered = Registered {
                shard: self,
                wake,
                partitions: vec![tp.clone()],
            };
            let _ = rx.await;
            if self.stopping.get() {
                return Err(KafkaError::NotLeaderOrFollower);
            }
        }
    }

    /// ListOffsets of owned partitions: (topic, partition, timestamp spec) -> (offset,
    /// timestamp).
    pub fn list_offsets(&self, items: Vec<(String, i32, i64, bool)>) -> Answers<(i64, i64, i32)> {
        let partitions = self.partitions.borrow();
        items
            .into_iter()
            .map(|(topic, partition, ts, read_committed)| {
                self.debug_assert_owner(&topic, partition);
                let p = partitions
                    .get(&(topic, partition))
                    .ok_or(KafkaError::UnknownTopicOrPartition)?;
                p.log.check_online()?;
                // A new leader answers "latest" only once its high watermark is known (as
                // Kafka does), so it never goes back.
                if ts == -1 && !p.high_watermark_known() {
                    return Err(KafkaError::OffsetNotAvailable);
                }
                let epochs = p.log.leader_epochs();
                // With each offset, the epoch that wrote the record there (the latest for the
                // log end), which a consumer validates its position with (KIP-320).
                let found = |o: Option<(i64, i64)>| match o {
                    Some((offset, ts)) => (offset, ts, epochs.epoch_of(offset)),
                    None => (-1, -1, -1),
                };
                match ts {
                    // Latest, as a consumer may read it: the high watermark, or for
                    // read_committed the last stable offset.
                    -1 if read_committed => Ok((p.last_stable_offset(), -1, epochs.latest_epoch())),
                    -1 => Ok((p.high_watermark(), -1, epochs.latest_epoch())),
                    // Earliest, and earliest-local (-4, KIP-1005): every segment is local.
                    -2 | -4 => {
                        let start = p.log.log_start_offset();
                        Ok((start, -1, epochs.epoch_of(start)))
                    }
                    -3 => {
                        let visible = p.high_watermark();
                        Ok(found(
                            p.log.max_timestamp_offset()?.filter(|(o, _)| *o < visible),
                        ))
                    }
                    ts if ts >= 0 => Ok(found(p.log.offset_for_timestamp(ts)?)),
                    other => Err(KafkaError::InvalidRequest(format!(
                        "timestamp {other} is not a supported ListOffsets spec"
                    ))),
                }
            })
            .collect()
    }

    /// OffsetForLeaderEpoch on owned partitions: (topic, partition, epoch) -> the largest
    /// epoch at or below it in the partition's leader-epoch cache and the offset where that
    /// epoch ended (the next one's start, or the log end for the latest); (-1, -1) when the
    /// log has no epoch that old (KIP-101, KIP-279).
    pub fn offsets_for_leader_epoch(&self, items: Vec<(String, i32, i32)>) -> Answers<(i32, i64)> {
        let partitions = self.partitions.borrow();
        items
            .into_iter()
            .map(|(topic, partition, epoch)| {
                self.debug_assert_owner(&topic, partition);
                let p = partitions
                    .get(&(topic, partition))
                    .ok_or(KafkaError::UnknownTopicOrPartition)?;
                p.log.check_online()?;
                Ok(p.log
                    .leader_epochs()
                    .end_offset_for(epoch, p.log_end_offset()))
            })
            .collect()
    }

    /// DescribeLogDirs of the replicas this shard holds (see [`calls::LogDirSizes`]).
    pub fn log_dir_sizes(
        &self,
        wanted: Option<&[(String, Vec<i32>)]>,
    ) -> Vec<(String, i32, i64, i64)> {
        let partitions = self.partitions.borrow();
        let mut out: Vec<(String, i32, i64, i64)> = partitions
            .iter()
            .filter(|((t, p), _)| {
                wanted.is_none_or(|w| w.iter().any(|(wt, wp)| wt == t && wp.contains(p)))
            })
            .map(|((t, p), part)| {
                let size = i64::try_from(part.log.size_bytes()).unwrap_or(i64::MAX);
                let lag = (part.log_end_offset() - part.high_watermark()).max(0);
                (t.clone(), *p, size, lag)
            })
            .collect();
        out.sort_unstable();
        out
    }

    /// New KIP-890 verification guards (see [`calls::TxnGuards`]).
    pub fn take_txn_guards(&self, items: Vec<(String, i32, i64)>) -> Vec<Option<u64>> {
        let now = now_ms();
        let mut partitions = self.partitions.borrow_mut();
        items
            .into_iter()
            .map(|(topic, partition, producer_id)| {
                let p = partitions.get_mut(&(topic, partition))?;
                Some(p.producers.take_guard(producer_id, now))
            })
            .collect()
    }

    /// (epoch of the last batch, log end) of local replicas, whatever their role; None where
    /// there is none or it is offline (see [`calls::ReplicaEnds`]).
    pub fn replica_ends(&self, items: Vec<(String, i32)>) -> Vec<Option<(i32, i64)>> {
        let partitions = self.partitions.borrow();
        items
            .into_iter()
            .map(|tp| {
                let p = partitions.get(&tp)?;
                p.log.check_online().ok()?;
                Some((p.log.leader_epochs().latest_epoch(), p.log_end_offset()))
            })
            .collect()
    }

    /// A topic now exists: open the partitions this shard owns and cache it. All or nothing:
    /// if one partition cannot be opened (EMFILE at the open-file limit, ENOSPC), those opened
    /// so far are closed and every owned partition directory of the topic is removed, and the
    /// topic is not cached, so the controller's undo (see `Controller::create_topics`) leaves
    /// nothing behind.
    pub async fn topic_created(self: &Rc<Self>, meta: TopicMeta) -> Result<(), KafkaError> {
        // After a start without a clean-shutdown marker, a topic that appears later may find
        // partition directories of the same data dir (a one-node broker's, imported into the
        // cluster): their tails are checked as at start. A new topic's are empty.
        let recover = self.config.recover_on_start;
        let Err(e) = self.open_owned_partitions(&meta, recover, false) else {
            let name = meta.name.clone();
            self.topics.borrow_mut().insert(name.clone(), meta);
            self.assign_partitions_of(&name);
            return Ok(());
        };
        let limit = crate::startup::open_files_limit();
        let why = if e.raw_os_error() == Some(libc::EMFILE) {
            format!(
                "cannot open the partitions of topic {} on shard {}: {e}; the open-file limit \
                 (RLIMIT_NOFILE) is {limit}, and each segment keeps 3 files open: raise it \
                 (ulimit -n, LimitNOFILE=)",
                meta.name, self.id
            )
        } else {
            format!(
                "cannot open the partitions of topic {} on shard {}: {e}",
                meta.name, self.id
            )
        };
        tracing::error!("{why}; undoing the creation");
        let dirs: Vec<std::path::PathBuf> = {
            let mut partitions = self.partitions.borrow_mut();
            (0..meta.partitions)
                .filter(|&p| self.owner(&meta.name, p) == self.id)
                .map(|p| {
                    // The log closes here, giving its descriptors back.
                    drop(partitions.remove(&(meta.name.clone(), p)));
                    partition_dir(&self.config.data_dir, &meta.name, p)
                })
                .collect()
        };
        let removed = glommio::executor()
            .spawn_blocking(move || {
                for dir in dirs {
                    match std::fs::remove_dir_all(&dir) {
                        Ok(()) => {}
                        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                        Err(e) => return Err((dir, e)),
                    }
                }
                Ok(())
            })
            .await;
        if let Err((dir, e)) = removed {
            tracing::error!(dir = %dir.display(), error = %e, "could not remove the directory of a partition whose creation failed");
        }
        Err(KafkaError::Storage(why))
    }

    /// Applies the roles the metadata gives the owned partitions of `topic` (followers start
    /// fetching, leaders count their followers).
    pub fn assign_partitions_of(self: &Rc<Self>, topic: &str) {
        let tps: Vec<TopicPartition> = self
            .partitions
            .borrow()
            .keys()
            .filter(|(t, _)| t == topic)
            .cloned()
            .collect();
        for tp in tps {
            self.partition_assigned(&tp);
        }
    }

    /// At start, in a cluster: reads the high-watermark checkpoints, for the partitions about
    /// to open.
    pub fn load_high_watermarks(&self) {
        if self.config.cluster.is_some() {
            *self.hw_checkpoint.borrow_mut() = replica::load_checkpoints(&self.config.data_dir);
        }
    }

    /// A topic is gone: forget it and delete the partitions this shard owns.
    pub async fn topic_deleted(&self, name: String) -> Result<(), KafkaError> {
        self.topics.borrow_mut().remove(&name);
        let gone: Vec<TopicPartition> = self
            .partitions
            .borrow()
            .keys()
            .filter(|(t, _)| *t == name)
            .cloned()
            .collect();
        for tp in &gone {
            self.unfollow(tp);
        }
        let doomed: Vec<Partition> = {
            let mut partitions = self.partitions.borrow_mut();
            let keys: Vec<_> = partitions
                .keys()
                .filter(|(t, _)| *t == name)
                .cloned()
                .collect();
            keys.iter().filter_map(|k| partitions.remove(k)).collect()
        };
        // The logs close here; their directories are removed on the blocking pool, since
        // unlinking a partition's files can wait on the disk. The reply waits for the removal,
        // so a topic created again under this name starts empty.
        let dirs: Vec<(i32, std::path::PathBuf)> = doomed
            .into_iter()
            .map(|mut part| {
                // Its waiting fetches look again and find the partition gone.
                part.wake_waiters();
                let p = part.log.partition;
                drop(part);
                (p, partition_dir(&self.config.data_dir, &name, p))
            })
            .collect();
        self.wake_all_fetches();
        let failed = glommio::executor()
            .spawn_blocking(move || {
                dirs.into_iter()
                    .filter_map(|(p, dir)| {
                        std::fs::remove_dir_all(&dir)
                            .err()
                            .map(|e| (p, e.to_string()))
                    })
                    .collect::<Vec<_>>()
            })
            .await;
        let mut result = Ok(());
        for (p, e) in failed {
            tracing::error!(topic = %name, partition = p, error = %e, "could not delete partition files");
            result = Err(KafkaError::Storage(e));
        }
        result
    }

    /// In a cluster, a topic changed (partitions added, leaders or configs changed): open the
    /// partitions this node now holds, recache it, apply its settings.
    pub async fn topic_changed(self: &Rc<Self>, meta: TopicMeta) -> Result<(), KafkaError> {
        let opened = self.open_owned_partitions(&meta, false, false);
        let now = std::time::Instant::now();
        for ((topic, p), part) in self.partitions.borrow_mut().iter_mut() {
            if *topic == meta.name
                && let Some(a) = meta.partition(*p)
            {
                if matches!(part.role, partition::Role::Single) {
                    part.set_leader_epoch(a.leader_epoch);
                } else {
                    part.apply_assignment(self.config.node_id, a, now);
                }
            }
        }
        let name = meta.name.clone();
        let gone: Vec<i32> = self
            .partitions
            .borrow()
            .keys()
            .filter(|(t, p)| *t == name && !self.holds_replica(&meta, *p))
            .map(|(_, p)| *p)
            .collect();
        self.topic_config_changed(meta)?;
        self.assign_partitions_of(&name);
        let dropped = self.drop_partitions(&name, &gone).await;
        opened
            .map(drop)
            .map_err(|e| KafkaError::Storage(e.to_string()))
            .and(dropped)
    }

    /// At start, in a cluster: deletes the directories of partitions this shard owns but this
    /// node no longer holds a replica of (a reassignment moved them away and the broker
    /// stopped before it deleted them), on the blocking pool. Internal topics are left alone:
    /// their logs are the group and transaction coordinators'.
    pub async fn remove_stray_replicas(&self, topics: &[TopicMeta]) {
        if self.config.cluster.is_none() {
            return;
        }
        // While a one-node broker's import is pending, its partition directories may belong
        // to topics the cluster refused (a name taken under another id): they stay untouched.
        if crate::storage::metadata::import::pending(&self.config.data_dir) {
            return;
        }
        let dirs: Vec<std::path::PathBuf> = topics
            .iter()
            .filter(|t| !t.name.starts_with("__"))
            .flat_map(|t| {
                (0..t.partitions)
                    .filter(|&p| {
                        self.owner(&t.name, p) == self.id
                            && t.partition(p).is_some()
                            && !self.holds_replica(t, p)
                    })
                    .map(|p| partition_dir(&self.config.data_dir, &t.name, p))
            })
            .collect();
        let removed = glommio::executor()
            .spawn_blocking(move || {
                dirs.into_iter()
                    .filter(|d| d.exists())
                    .map(|d| {
                        let r = std::fs::remove_dir_all(&d);
                        (d, r)
                    })
                    .collect::<Vec<_>>()
            })
            .await;
        for (dir, r) in removed {
            match r {
                Ok(()) => {
                    tracing::info!(dir = %dir.display(), "replica no longer assigned to this broker: its directory deleted")
                }
                Err(e) => {
                    tracing::warn!(dir = %dir.display(), error = %e, "could not delete the directory of a replica no longer assigned here")
                }
            }
        }
    }

    /// Partitions of `topic` this node no longer holds a replica of (a reassignment moved
    /// them away): stop following, wake their waiters (they look again and find the partition
    /// gone), close the logs and delete their directories on the blocking pool, since
    /// unlinking a partition's files can wait on the disk.
    async fn drop_partitions(&self, topic: &str, partitions: &[i32]) -> Result<(), KafkaError> {
        if partitions.is_empty() {
            return Ok(());
        }
        let mut dirs = Vec::with_capacity(partitions.len());
        for &p in partitions {
            let tp = (topic.to_string(), p);
            self.unfollow(&tp);
            // A coordinator's log moved away: its groups or transactional ids go with it.
            if topic == crate::placement::OFFSETS_TOPIC {
                self.groups.unload_partition(p);
            } else if topic == crate::placement::TXN_TOPIC {
                self.txns.borrow_mut().unload_partition(p);
            }
            self.coordinator_epochs.borrow_mut().remove(&tp);
            let removed = self.partitions.borrow_mut().remove(&tp);
            if let Some(mut part) = removed {
                part.wake_waiters();
                drop(part);
                tracing::info!(topic = %topic, partition = p, shard = self.id, "replica removed from this broker: partition closed and its directory deleted");
                dirs.push((p, partition_dir(&self.config.data_dir, topic, p)));
            }
        }
        self.wake_all_fetches();
        let failed = glommio::executor()
            .spawn_blocking(move || {
                dirs.into_iter()
                    .filter_map(|(p, dir)| match std::fs::remove_dir_all(&dir) {
                        Ok(()) => None,
                        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
                        Err(e) => Some((p, e.to_string())),
                    })
                    .collect::<Vec<_>>()
            })
            .await;
        let mut result = Ok(());
        for (p, e) in failed {
            tracing::error!(topic = %topic, partition = p, error = %e, "could not delete the files of a partition moved away");
            result = Err(KafkaError::Storage(e));
        }
        result
    }

    /// A topic's configs changed: recache it and apply the new settings to its open logs.
    pub fn topic_config_changed(&self, meta: TopicMeta) -> Result<(), KafkaError> {
        let config = self.log_config(&meta);
        for ((topic, _), p) in self.partitions.borrow_mut().iter_mut() {
            if *topic == meta.name {
                p.log.set_config(config);
            }
        }
        self.topics.borrow_mut().insert(meta.name.clone(), meta);
        Ok(())
    }

    /// DeleteRecords on owned partitions: moves each log start offset, answered once the new
    /// log start is on disk.
    pub async fn delete_records(&self, items: Vec<(String, i32, i64)>) -> Answers<i64> {
        let mut jobs = Vec::new();
        let mut results: Answers<i64> = {
            let mut partitions = self.partitions.borrow_mut();
            items
                .into_iter()
                .map(|(topic, partition, offset)| {
                    self.debug_assert_owner(&topic, partition);
                    let p = partitions
                        .get_mut(&(topic, partition))
                        .ok_or(KafkaError::UnknownTopicOrPartition)?;
                    // -1 means the high watermark, as in Kafka: what consumers can see.
                    let offset = if offset == -1 { p.high_watermark() } else { offset };
                    let (start, job) = p.log.delete_records(offset)?;
                    let delay = self
                        .topics
                        .borrow()
                        .get(&p.log.topic)
                        .map_or(0, |meta| self.file_delete_delay_ms(meta));
                    let job = job.map(|j| j.delay_deletion(delay));
                    tracing::info!(topic = %p.log.topic, partition, log_start_offset = start, "records deleted");
                    jobs.extend(job);
                    Ok(start)
                })
                .collect()
        };
        if results.iter().any(Result::is_ok) {
            // Fetches waiting below the new log start must now answer OFFSET_OUT_OF_RANGE.
            self.wake_all_fetches();
        }
        if let Err(e) = run_housekeeping(jobs).await {
            tracing::error!(shard = self.id, error = %e, "persisting DeleteRecords failed");
            for r in results.iter_mut().filter(|r| r.is_ok()) {
                *r = Err(KafkaError::Storage(format!(
                    "log start offset write failed: {e}"
                )));
            }
        }
        results
    }

    /// Appends every pending produce, one pwritev per partition and run of requests that fits
    /// the active segment, and answers each request.
    ///
    /// Runs as its own task, scheduled by the first produce of a burst; it yields once first
    /// so that produces arriving on other connections in the same executor turn join the
    /// same write. Requests keep their arrival order within a partition.
    async fn write_pending(self: Rc<Self>) {
        futures_lite::future::yield_now().await;
        self.writer_scheduled.set(false);
        let pending = std::mem::take(&mut *self.pending_writes.borrow_mut());
        let now = now_ms();
        // Leader partitions written to: each is made durable right away (its high watermark
        // counts only its synced end), or, for a background-flush topic, its high watermark
        // moves now.
        let mut written: Vec<(TopicPartition, i64)> = Vec::new();
        {
            let mut partitions = self.partitions.borrow_mut();
            for (tp, writes) in pending {
                let Some(part) = partitions.get_mut(&tp) else {
                    for w in writes {
                        let _ = w.answer.send(Err(KafkaError::UnknownTopicOrPartition));
                    }
                    continue;
                };
                // Leadership may have moved since the request was checked and queued.
                if !matches!(
                    part.role,
                    partition::Role::Single | partition::Role::Leader(_)
                ) {
                    for w in writes {
                        let _ = w.answer.send(Err(KafkaError::NotLeaderOrFollower));
                    }
                    continue;
                }
                // acks=all needs min.insync.replicas in-sync replicas that this leader can
                // count on: followers it has not seen caught up for replica.lag.time.max.ms do
                // not count, even while it cannot get the ISR shrink committed (cut off from
                // the controller), so an isolated leader refuses rather than times out.
                let writes: Vec<PendingWrite> = if matches!(part.role, partition::Role::Leader(_))
                    && writes.iter().any(|w| w.acks_all)
                {
                    let min = self
                        .topics
                        .borrow()
                        .get(&tp.0)
                        .map_or(self.config.min_insync_replicas, |t| {
                            self.min_insync_replicas(t)
                        });
                    let isr = part.isr_in_reach(
                        self.config.node_id,
                        std::time::Instant::now(),
                        Duration::from_millis(self.config.replica_lag_time_max_ms),
                    );
                    writes
                        .into_iter()
                        .filter_map(|w| {
                            if w.acks_all && (isr as i64) < i64::from(min) {
                                let _ = w
                                    .answer
                                    .send(Err(KafkaError::NotEnoughReplicas { isr, min }));
                                None
                            } else {
                                Some(w)
                            }
                        })
                        .collect()
                } else {
                    writes
                };
                if writes.is_empty() {
                    continue;
                }
                // Every request of a partition has the topic's timestamp type.
                let append_time = writes
                    .first()
                    .is_some_and(|w| w.log_append_time)
                    .then_some(now);
                let mut writes = writes.into_iter().peekable();
                let mut any = false;
                while writes.peek().is_some() {
                    // One pwritev for as many requests as fit the active segment (a request
                    // that does not fit rolls it first), so segments keep to segment.bytes
                    // and each request's batches stay whole in one segment.
                    let room = part.log.segment_room();
                    let mut group: Vec<PendingWrite> = Vec::new();
                    let mut bytes = 0u64;
                    while let Some(w) = writes.peek() {
                        let b: u64 = w.batches.iter().map(|b| b.bytes.len() as u64).sum();
                        let limit = if group.is_empty() {
                            u64::MAX
                        } else {
                            room.max(bytes)
                        };
                        if bytes + b > limit {
                            break;
                        }
                        bytes += b;
                        group.extend(writes.next());
                    }
                    any |= self.append_group(part, group, append_time, now);
                }
                if any {
                    if matches!(part.role, partition::Role::Leader(_)) {
                        written.push((tp, part.log_end_offset() - 1));
                    }
                    part.wake_waiters();
                }
            }
        }
        for (tp, last) in written {
            if self.synced_replication(&tp.0) {
                let shard = self.clone();
                glommio::spawn_local(async move {
                    // A failure poisons the partition and is logged by the flush.
                    let _ = shard.flush_to(tp, last).await;
                })
                .detach();
            } else {
                self.high_watermark_may_move(&tp);
            }
        }
    }

    /// A leader's own end or a follower's progress changed: moves the high watermark if it
    /// can, waking whoever waits on it.
    pub(crate) fn high_watermark_may_move(&self, tp: &TopicPartition) {
        let synced = self.synced_replication(&tp.0);
        if let Some(p) = self.partitions.borrow_mut().get_mut(tp)
            && p.advance_high_watermark(self.config.node_id, synced)
        {
            p.wake_waiters();
        }
    }

    /// Appends a group of produces to a partition with one write and answers each with its
    /// own offsets; returns whether anything was written.
    ///
    /// Idempotent producers' batches are checked first, each request against the partition's
    /// producer state and the requests before it in this group (`Staged`): a retry of a batch
    /// already written (or written earlier in this very group) is answered with that batch's
    /// offsets and left out of the write; a request with a sequence gap or a stale epoch is
    /// refused whole. The producer state takes the staged changes only once the write
    /// succeeded, so a failed write leaves it as it was.
    fn append_group(
        &self,
        part: &mut Partition,
        group: Vec<PendingWrite>,
        append_time: Option<i64>,
        now: i64,
    ) -> bool {
        self.stats
            .appends
            .set(self.stats.appends.get() + group.len() as u64);
        let start = part.log_end_offset();
        let mut staged = Staged::default();
        let mut next = start;
        let mut verdicts = Vec::with_capacity(group.len());
        let mut all: Vec<ProducedBatch> = Vec::new();
        for w in &group {
            let verdict = if w.batches.iter().any(|b| b.header.producer_id >= 0) {
                let headers: Vec<_> = w.batches.iter().map(|b| b.header).collect();
                part.producers.check(
                    &mut staged,
                    &headers,
                    next,
                    Some(append_time.unwrap_or(now)),
                    w.guard,
                )
            } else {
                Ok(Verdict::Append)
            };
            if let Ok(Verdict::Append) = verdict {
                all.extend(w.batches.iter().cloned());
                next += records_of(w);
            }
            verdicts.push(verdict);
        }
        let log_start_offset = part.log.log_start_offset();
        let duplicate = |b: producers::BatchMeta| Written {
            base_offset: b.first_offset,
            last_offset: b.last_offset,
            log_append_time: -1,
            log_start_offset,
        };
        if all.is_empty() {
            for (w, v) in group.into_iter().zip(verdicts) {
                let _ = w.answer.send(match v {
                    Ok(Verdict::Duplicate(b)) => Ok(duplicate(b)),
                    Ok(Verdict::Append) => {
                        Err(KafkaError::InvalidRequest("nothing to append".into()))
                    }
                    Err(e) => Err(e),
                });
            }
            return false;
        }
        self.stats.writes.set(self.stats.writes.get() + 1);
        let segments = part.log.segment_count();
        match part.log.append(&all, part.leader_epoch(), append_time, now) {
            Ok(appended) => {
                debug_assert_eq!(
                    appended.base_offset, start,
                    "an append landed away from the log end it was checked against"
                );
                if part.log.segment_count() > segments {
                    // The log rolled: the new segment starts at `start`, and the producer
                    // state as of there is the state before this write.
                    self.snapshot_producers(part, start);
                }
                let ended = std::mem::take(&mut staged.ended);
                part.producers.commit(staged);
                part.appended();
                if !ended.is_empty() {
                    index_aborts(part, &all, &ended);
                }
                let mut next = appended.base_offset;
                for (w, v) in group.into_iter().zip(verdicts) {
                    let answer = match v {
                        Ok(Verdict::Append) => {
                            let count = records_of(&w);
                            let written = Written {
                                base_offset: next,
                                last_offset: next + count - 1,
                                log_append_time: append_time.unwrap_or(-1),
                                log_start_offset: part.log.log_start_offset(),
                            };
                            next += count;
                            Ok(written)
                        }
                        Ok(Verdict::Duplicate(b)) => Ok(duplicate(b)),
                        Err(e) => Err(e),
                    };
                    let _ = w.answer.send(answer);
                }
                true
            }
            Err(e) => {
                for (w, v) in group.into_iter().zip(verdicts) {
                    let _ = w.answer.send(match v {
                        // A retry of an earlier batch stands; one of a batch of this failed
                        // write fails with it.
                        Ok(Verdict::Duplicate(b)) if b.first_offset < start => Ok(duplicate(b)),
                        Ok(_) => Err(e.clone()),
                        Err(own) => Err(own),
                    });
                }
                false
            }
        }
    }

    /// Writes the producer state of `part` as of `offset` to a snapshot file, on the blocking
    /// pool (in a task of its own: the write path does not wait for it).
    fn snapshot_producers(&self, part: &mut Partition, offset: i64) {
        let job = SnapshotJob {
            dir: part.log.dir().to_path_buf(),
            offset,
            bytes: part.producers.encode(offset),
        };
        part.producers_snapshot = Some(offset);
        glommio::spawn_local(async move {
            let dir = job.dir.clone();
            let result = glommio::executor().spawn_blocking(move || job.run()).await;
            if let Err(e) = result {
                tracing::warn!(dir = %dir.display(), offset, error = %e, "could not write a producer state snapshot");
            }
        })
        .detach();
    }

    /// At a clean shutdown, after the final flush: snapshots the producer state of every
    /// partition whose newest snapshot is not at its log end, so the next start reads it
    /// instead of replaying the log. An empty log has nothing to replay and gets none.
    pub async fn snapshot_all_producers(&self) {
        let jobs: Vec<SnapshotJob> = self
            .partitions
            .borrow_mut()
            .values_mut()
            .filter(|p| p.log.poisoned().is_none())
            .filter_map(|p| {
                let end = p.log_end_offset();
                if p.producers_snapshot == Some(end)
                    || (p.producers.is_empty() && end == p.log.log_start_offset())
                {
                    return None;
                }
                p.producers_snapshot = Some(end);
                Some(SnapshotJob {
                    dir: p.log.dir().to_path_buf(),
                    offset: end,
                    bytes: p.producers.encode(end),
                })
            })
            .collect();
        if jobs.is_empty() {
            return;
        }
        let failed = glommio::executor()
            .spawn_blocking(move || {
                jobs.iter()
                    .filter_map(|j| j.run().err().map(|e| (j.dir.clone(), e)))
                    .collect::<Vec<_>>()
            })
            .await;
        for (dir, e) in failed {
            tracing::warn!(dir = %dir.display(), error = %e, "could not write the producer state snapshot at shutdown");
        }
    }

    /// Whether acks=all on `topic` waits for fdatasync: yes, unless the topic (or the broker)
    /// sets `flush.messages` or `flush.ms`, which flush in the background instead.
    pub fn flush_on_ack(&self, topic: &TopicMeta) -> bool {
        self.background_flush(topic).is_none()
    }

    /// (flush.messages, flush.ms) for a topic that flushes in the background.
    fn background_flush(&self, topic: &TopicMeta) -> Option<(Option<u64>, Option<u64>)> {
        let messages = topic.config.flush_messages.or(self.config.flush_messages);
        let ms = topic.config.flush_ms.or(self.config.flush_ms);
        (messages.is_some() || ms.is_some()).then_some((messages, ms))
    }

    /// Waits until every offset up to `last` of the partition is on disk, starting an
    /// fdatasync if none is running; a running one is joined (group commit). A write that a
    /// truncation cut off meanwhile answers NOT_LEADER_OR_FOLLOWER: this broker lost the
    /// leadership, and nothing here will make that write durable.
    pub async fn flush_to(self: &Rc<Self>, tp: (String, i32), last: i64) -> Result<(), KafkaError> {
        loop {
            let step = {
                let running = self.flushing.borrow().contains_key(&tp);
                let mut partitions = self.partitions.borrow_mut();
                partitions
                    .get_mut(&tp)
                    .ok_or(KafkaError::UnknownTopicOrPartition)?
                    .log
                    .flush_step(last, running)?
            };
            match step {
                FlushStep::Durable => return Ok(()),
                // The write is gone from this log: this broker no longer leads the partition.
                FlushStep::Cut => return Err(KafkaError::NotLeaderOrFollower),
                FlushStep::Join => {
                    let (tx, rx) = oneshot::channel();
                    if let Some(waiters) = self.flushing.borrow_mut().get_mut(&tp) {
                        waiters.push(tx);
                    }
                    // Resolves at once if that flush ended meanwhile (`tx` dropped).
                    let _ = rx.await;
                }
                FlushStep::Run(job) => {
                    self.run_flush(tp.clone(), job).await?;
                }
            }
        }
    }

    /// Runs one flush job of a partition on the blocking pool and applies its outcome.
    ///
    /// The job runs in a task of its own: whoever waits for it may give up (a Produce past
    /// its timeout, the flusher cancelled at shutdown), but a flush once begun must finish and
    /// record its outcome, or the files it took would never be synced and the partition's
    /// `flushing` entry never cleared. The entry is made before this returns to the caller's
    /// first await, so no second job can start meanwhile.
    async fn run_flush(
        self: &Rc<Self>,
        tp: (String, i32),
        job: FlushJob,
    ) -> Result<(), KafkaError> {
        self.flushing.borrow_mut().insert(tp.clone(), Vec::new());
        let (tx, rx) = oneshot::channel();
        let shard = self.clone();
        glommio::spawn_local(async move {
            let _ = tx.send(shard.complete_flush(tp, job).await);
        })
        .detach();
        rx.await
            .unwrap_or_else(|_| Err(KafkaError::Storage("the flush task ended".into())))
    }

    /// The body of [`Shard::run_flush`], in its own task.
    async fn complete_flush(
        self: Rc<Self>,
        tp: (String, i32),
        job: FlushJob,
    ) -> Result<(), KafkaError> {
        let target = job.target;
        let started = std::time::Instant::now();
        let result = glommio::executor().spawn_blocking(move || job.run()).await;
        self.metrics.record_flush(started.elapsed().as_secs_f64());
        if let Some(p) = self.partitions.borrow_mut().get_mut(&tp) {
            p.log.finish_flush(target, &result);
        }
        // A leader's synced end moved.
        self.high_watermark_may_move(&tp);
        self.stats.flushes.set(self.stats.flushes.get() + 1);
        let waiters = self.flushing.borrow_mut().remove(&tp).unwrap_or_default();
        for w in waiters {
            let _ = w.send(());
        }
        result.map_err(|e| KafkaError::Storage(format!("fdatasync failed: {e}")))
    }

    /// One pass of the background flusher: flushes partitions of topics with `flush.messages`
    /// or `flush.ms` that reached either bound.
    pub async fn flush_due(self: &Rc<Self>) {
        let due: Vec<((String, i32), FlushJob)> = {
            let topics = self.topics.borrow();
            let mut partitions = self.partitions.borrow_mut();
            let flushing = self.flushing.borrow();
            partitions
                .iter_mut()
                .map(|(tp, p)| (tp, &mut p.log))
                .filter(|(tp, log)| {
                    let Some((messages, ms)) =
                        topics.get(&tp.0).and_then(|t| self.background_flush(t))
                    else {
                        return false;
                    };
                    let pending = log.unflushed_records();
                    pending > 0
                        && !flushing.contains_key(*tp)
                        && (messages.is_some_and(|m| pending as u64 >= m.max(1))
                            || ms.is_some_and(|ms| {
                                log.last_flush().elapsed().as_millis() as u64 >= ms
                            }))
                })
                .filter_map(|(tp, log)| Some((tp.clone(), log.begin_flush()?)))
                .collect()
        };
        let runs = due.into_iter().map(|(tp, job)| self.run_flush(tp, job));
        for r in futures_util::future::join_all(runs).await {
            // A failure is logged and poisons the partition; nobody waits for this flush.
            drop(r);
        }
    }

    /// Flushes every partition (at shutdown); false if any flush failed (the stop is then not
    /// clean, and the next start recovers).
    pub async fn flush_all(self: &Rc<Self>) -> bool {
        let tps: Vec<((String, i32), i64)> = self
            .partitions
            .borrow()
            .iter()
            .map(|(tp, p)| (tp.clone(), p.log_end_offset() - 1))
            .collect();
        let runs = tps.into_iter().map(|(tp, last)| self.flush_to(tp, last));
        let mut clean = true;
        for r in futures_util::future::join_all(runs).await {
            if let Err(e) = r {
                tracing::error!(shard = self.id, error = %e, "flush at shutdown failed");
                clean = false;
            }
        }
        clean
    }

    /// Wakes every fetch waiting on this shard (after a deletion, retention, or at shutdown).
    pub fn wake_all_fetches(&self) {
        for p in self.partitions.borrow_mut().values_mut() {
            p.wake_waiters();
        }
        let remote: Vec<Rc<Wake>> = self.remote_waits.borrow().values().cloned().collect();
        for w in remote {
            w.fire();
        }
    }

    /// Ends the long poll `wait_id` that shard `origin` started here: its fetch was answered.
    pub fn cancel_wait(&self, origin: usize, wait_id: u64) {
        let wake = self.remote_waits.borrow().get(&(origin, wait_id)).cloned();
        if let Some(w) = wake {
            w.fire();
        }
    }

    /// Fetch waits in progress on this shard (own and remote), for the metrics.
    pub fn fetch_waits(&self) -> usize {
        let mut waits: Vec<*const Wake> = self
            .partitions
            .borrow()
            .values()
            .flat_map(|p| p.waiters.iter().map(Rc::as_ptr))
            .collect();
        waits.sort_unstable();
        waits.dedup();
        waits.len()
    }

    /// A fresh id for a long poll this shard starts on another one.
    pub fn next_wait_id(&self) -> u64 {
        let id = self.next_wait_id.get();
        self.next_wait_id.set(id + 1);
        id
    }

    /// Where the data at each item's offset lies (file ranges of whole batches), for Fetch.
    pub fn locate(self: &Rc<Self>, items: Vec<FetchItem>) -> Vec<Result<ReadOut, KafkaError>> {
        items
            .into_iter()
            .map(|i| {
                self.debug_assert_owner(&i.topic, i.partition);
                let tp = (i.topic, i.partition);
                if let Some((r, epoch)) = i.replica {
                    return self.serve_replica(&tp, i.offset, i.max_bytes, epoch, r);
                }
                let partitions = self.partitions.borrow();
                let p = partitions
                    .get(&tp)
                    .ok_or(KafkaError::UnknownTopicOrPartition)?;
                // A new leader does not serve consumers until its high watermark is past its
                // predecessor's (everything in its log when elected is committed), so no
                // consumer sees the high watermark move back.
                if !p.high_watermark_known() {
                    return Err(KafkaError::OffsetNotAvailable);
                }
                p.read(i.offset, i.max_bytes, i.read_committed)
            })
            .collect()
    }

    /// Whether a partition grew past the high watermark the fetch saw, or has something new to
    /// report (the fetch offset fell below the log start, the partition is gone). Data the fetch
    /// already saw does not count: a fetch still short of its `min_bytes` would otherwise be
    /// answered at once, over and over, until its deadline.
    fn has_news(&self, items: &[(FetchItem, i64)]) -> bool {
        let partitions = self.partitions.borrow();
        items.iter().any(
            |(i, seen)| match partitions.get(&(i.topic.clone(), i.partition)) {
                // A follower waits for the log end to pass its fetch offset, or for the
                // partition to stop being led here.
                Some(p) if i.replica.is_some() => {
                    p.log_end_offset() > i.offset
                        || !matches!(p.role, partition::Role::Leader(_))
                        || i.offset < p.log.log_start_offset()
                }
                Some(p) => p.high_watermark() > *seen || i.offset < p.log.log_start_offset(),
                None => true, // gone: the fetch should look again and report it
            },
        )
    }

    /// Waits until one of `items` has news (see [`Shard::has_news`]), `timeout_ms` passes, or
    /// the wait is cancelled: by its origin shard (`remote`: (origin, wait id)), or, for a wait
    /// of this shard's own, by dropping this future. Only appends to these partitions wake it.
    pub async fn wait_for_data(
        &self,
        items: &[(FetchItem, i64)],
        timeout_ms: u64,
        remote: Option<(usize, u64)>,
    ) {
        let deadline = std::time::Instant::now() + Duration::from_millis(timeout_ms);
        let (mut cancelled, _remote) = match remote {
            Some(key) => {
                let (wake, rx) = Wake::new();
                self.remote_waits.borrow_mut().insert(key, wake);
                (Some(rx), Some(RemoteWait { shard: self, key }))
            }
            None => (None, None),
        };
        let partitions: Vec<TopicPartition> = items
            .iter()
            .map(|(i, _)| (i.topic.clone(), i.partition))
            .collect();
        loop {
            if self.has_news(items) || self.stopping.get() {
                return;
            }
            let now = std::time::Instant::now();
            if now >= deadline {
                return;
            }
            let (wake, rx) = Wake::new();
            {
                // has_news just found every partition here or answered; a partition is only
                // waited on while it exists (a deleted one wakes its waiters as it goes).
                let mut owned = self.partitions.borrow_mut();
                for tp in &partitions {
                    if let Some(p) = owned.get_mut(tp) {
                        p.waiters.push(wake.clone());
                    }
                }
            }
            let _registered = Registered {
                shard: self,
                wake,
                partitions: partitions.clone(),
            };
            let timer = glommio::timer::sleep(deadline - now);
            let woken = futures_lite::future::or(
                async {
                    let _ = rx.await;
                    true
                },
                async {
                    timer.await;
                    true
                },
            );
            let cancel = async {
                match cancelled.as_mut() {
                    Some(c) => {
                        let _ = c.await;
                        false
                    }
                    None => std::future::pending().await,
                }
            };
            if !futures_lite::future::or(woken, cancel).await {
                return;
            }
        }
    }
}

impl Shard {
    /// This shard's metrics, for a scrape.
    pub fn snapshot(&self) -> crate::metrics::Snapshot {
        let m = &self.metrics;
        // glommio hands out the stats accrued since its last call: keep running totals, so
        // the exported counters only grow.
        let exec = glommio::executor().executor_stats();
        let (busy, tasks, runs) = m.add_executor(
            exec.total_runtime().as_secs_f64(),
            exec.tasks_executed(),
            exec.scheduler_runs(),
        );
        crate::metrics::Snapshot {
            shard: self.id,
            requests: m.requests(),
            latency: m.latency(),
            bytes_in: self.stats.bytes_in.get(),
            bytes_out_zero_copy: self.stats.bytes_out_zero_copy.get(),
            bytes_out_warmed: self.stats.bytes_out_warmed.get(),
            bytes_out_copied: self.stats.bytes_out_copied.get(),
            fetch_socket_full: self.stats.fetch_socket_full.get(),
            connections: self.stats.connections.get(),
            fetch_waits: self.fetch_waits() as u64,
            inflight_bytes: (self.config.inflight_bytes_max as u64)
                .saturating_sub(self.inflight.available()),
            flushes: self.stats.flushes.get(),
            appends: self.stats.appends.get(),
            writes: self.stats.writes.get(),
            flush_seconds: m.flush_seconds(),
            executor_busy_seconds: busy,
            executor_tasks: tasks,
            executor_scheduler_runs: runs,
            partitions: self.partition_stats(),
            committed: self.groups.committed_offsets(),
            replication: self.replication_stats(),
            cleaner: {
                let c = &self.cleaner_stats;
                crate::metrics::Cleaner {
                    cleans: c.cleans.get(),
                    failures: c.failures.get(),
                    bytes_read: c.bytes_read.get(),
                    bytes_written: c.bytes_written.get(),
                    bytes_before: c.bytes_before.get(),
                    bytes_after: c.bytes_after.get(),
                    seconds: c.millis.get() as f64 / 1000.0,
                    lag_ms: c.lag_ms.get(),
                }
            },
            quota_throttles: self.quota_throttle_stats(),
        }
    }
}

/// Records in a produce's batches.
fn records_of(w: &PendingWrite) -> i64 {
    w.batches
        .iter()
        .map(|b| i64::from(b.header.last_offset_delta) + 1)
        .sum()
}

/// Runs retention and DeleteRecords file work on the blocking pool; files kept for
/// `file.delete.delay.ms` are deleted by a task of this shard once it has passed.
async fn run_housekeeping(jobs: Vec<Housekeeping>) -> std::io::Result<()> {
    if jobs.is_empty() {
        return Ok(());
    }
    let deferred = glommio::executor()
        .spawn_blocking(move || {
            jobs.into_iter()
                .map(Housekeeping::run_deferring)
                .collect::<std::io::Result<Vec<_>>>()
        })
        .await?;
    for d in deferred.into_iter().flatten() {
        glommio::spawn_local(async move {
            glommio::timer::sleep(d.delay).await;
            glommio::executor().spawn_blocking(move || d.delete()).await;
        })
        .detach();
    }
    Ok(())
}

/// A config value of -1 (or any negative) means "no limit".
fn positive(v: i64) -> Option<u64> {
    u64::try_from(v).ok()
}

/// Records in the partition's aborted-transaction index the transactions that the abort
/// markers among `appended` ended (`ended`, one per marker, in order), once the append
/// succeeded. An index write that fails is logged: the transaction's records would then be
/// returned to read_committed consumers, which is said loudly rather than hidden.
fn index_aborts(part: &mut Partition, appended: &[ProducedBatch], ended: &[producers::EndedTxn]) {
    let kinds = appended
        .iter()
        .filter(|b| b.header.is_control() && b.header.producer_id >= 0)
        .map(|b| crate::protocol::batch::control_is_commit(&b.bytes).unwrap_or(true));
    let segment = part.log.active_base_offset();
    let lso = part.last_stable_offset();
    // Entries of segments retention deleted are of no use to any read.
    part.txn_index.prune(part.log.log_start_offset());
    for (commit, t) in kinds.zip(ended) {
        if commit {
            continue;
        }
        let entry = crate::storage::txnindex::AbortedTxn {
            producer_id: t.producer_id,
            first_offset: t.first_offset,
            last_offset: t.marker_offset,
            last_stable_offset: lso,
        };
        match part.txn_index.append(segment, entry) {
            Ok(sync) => part.txn_index_unsynced.push(sync),
            Err(e) => {
                tracing::error!(topic = %part.log.topic, partition = part.log.partition, producer_id = t.producer_id, error = %e, "cannot write the aborted-transaction index: read_committed consumers will see this aborted transaction")
            }
        }
    }
}
