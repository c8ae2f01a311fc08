//! The group coordinator of one shard: it drives the pure state machine ([`super::state`])
//! with requests and time, parks JoinGroup/SyncGroup callers until their answers come out as
//! effects, and makes offset commits durable ([`super::store`]) before answering them.
//!
//! Lives on: every shard has one; it holds the groups whose `__consumer_offsets` partition
//! this shard owns (`placement::group_owner`) and this broker leads, and only this shard's
//! executor touches them. Requests from connections on other shards arrive through the
//! router.
//!
//! Time: a per-shard ticker calls [`GroupCoordinator::tick`] every [`GROUP_TICK_MS`]; every
//! request also ticks its group right away, so deadlines that have already passed (an initial
//! rebalance delay of 0) complete without waiting for the ticker.
//!
//! Loading follows leadership. The coordinator starts empty; the shard calls
//! [`GroupCoordinator::load_partition`] when it becomes the leader of one of its
//! `__consumer_offsets` partitions (on a one-node broker: every owned partition, at start,
//! before it serves), which replays the partition ([`super::store`]) in one go on the
//! executor, so a group is never seen half-loaded. A group whose last generation was stored
//! comes back as that generation: Stable with its members (their sessions start again at the
//! load, so members that are gone expire and the rest keep heartbeating without a
//! rebalance), or Empty with its protocol type when it had none. When the shard stops leading
//! the partition, [`GroupCoordinator::unload_partition`] drops its groups (parked JoinGroup
//! and SyncGroup callers are answered NOT_COORDINATOR), so nothing of a partition this broker
//! no longer leads is served or written. A request for a group whose partition is not loaded
//! here is answered NOT_COORDINATOR: the client looks the coordinator up again.
//!
//! Durability: a change is answered once its records are fdatasync'd on every in-sync
//! replica of the partition ([`super::logs::CoordinatorLogs::durable`]), within
//! [`OFFSETS_COMMIT_TIMEOUT_MS`].
//!
//! Group state is stored when a generation completes (the leader's SyncGroup makes the
//! group Stable), when the retention sweep notes that a group became empty, and as
//! tombstones when the group is deleted.

use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::io;
use std::rc::Rc;
use std::time::Duration;

use futures_channel::oneshot;

use crate::error::ErrorCode;

use super::consumer::{ConsumerGroup, ConsumerGroupConfig};
use super::consumer_coordinator::ConsumerGroups;
use super::logs::CoordinatorLogs;
use super::offsets::CommittedOffset;
use super::records::{GroupMetadata, MemberMetadata};
use super::state::{
    self, Effect, Group, GroupConfig, GroupDescription, GroupState, HeartbeatRequest, JoinRequest,
    JoinResponse, LeaveRequest, LeaveResponse, Member, Reply, Step, SyncRequest, SyncResponse,
};
use super::store::{OffsetsLog, SyncJob};
use crate::clock::now_ms;
use crate::log_limit::{LOG_INTERVAL_MS, LogKind, LogLimiter};
use crate::placement::OFFSETS_TOPIC;

/// How often each shard moves its groups' time forward.
pub const GROUP_TICK_MS: u64 = 50;

/// How long a change waits for its records to be durable on every in-sync replica before it
/// is answered COORDINATOR_NOT_AVAILABLE (Kafka's `offsets.commit.timeout.ms`).
pub const OFFSETS_COMMIT_TIMEOUT_MS: u64 = 5_000;

/// A committed offset as OffsetFetch reports it: (topic, partition, offset, leader epoch,
/// metadata); offset -1 when nothing is committed.
pub type FetchedOffset = (String, i32, i64, i32, Option<String>);

/// A group as ListGroups reports it: (group id, protocol type, state, type: "classic" or
/// "consumer").
pub type ListedGroup = (String, String, &'static str, &'static str);

type WaiterKey = (String, String);

pub struct GroupCoordinator {
    shard_id: usize,
    config: GroupConfig,
    offsets_retention_ms: i64,
    groups: RefCell<HashMap<String, Group>>,
    join_waiters: RefCell<HashMap<WaiterKey, oneshot::Sender<JoinResponse>>>,
    sync_waiters: RefCell<HashMap<WaiterKey, oneshot::Sender<SyncResponse>>>,
    offsets: RefCell<OffsetsLog>,
    /// The consumer-protocol (KIP-848) groups ([`super::consumer_coordinator`]).
    pub(super) consumer: ConsumerGroups,
    /// Limits the lines of groups created, which any client can cause at will.
    log: LogLimiter,
}

impl GroupCoordinator {
    /// A coordinator with no partition loaded, whose store reaches `__consumer_offsets`
    /// (`num_partitions` partitions) through `logs`.
    pub fn new(
        shard_id: usize,
        num_partitions: i32,
        logs: Rc<dyn CoordinatorLogs>,
        config: GroupConfig,
        consumer_config: ConsumerGroupConfig,
        offsets_retention_ms: i64,
    ) -> GroupCoordinator {
        GroupCoordinator {
            shard_id,
            config,
            offsets_retention_ms,
            groups: RefCell::new(HashMap::new()),
            join_waiters: RefCell::new(HashMap::new()),
            sync_waiters: RefCell::new(HashMap::new()),
            offsets: RefCell::new(OffsetsLog::new(num_partitions, logs)),
            consumer: ConsumerGroups::new(consumer_config),
            log: LogLimiter::new(std::time::Duration::from_millis(LOG_INTERVAL_MS)),
        }
    }

    /// Whether partition `p` of `__consumer_offsets` is loaded here.
    pub fn is_loaded(&self, p: i32) -> bool {
        self.offsets.borrow().is_loaded(p)
    }

    /// Whether this coordinator serves `group`: its partition is loaded here.
    pub fn serves(&self, group: &str) -> bool {
        let offsets = self.offsets.borrow();
        offsets.is_loaded(offsets.partition_of(group))
    }

    /// Replays partition `p` of `__consumer_offsets` (which this shard now leads) and
    /// restores the groups whose state it holds. A no-op when it is loaded.
    pub fn load_partition(&self, p: i32) -> io::Result<()> {
        if self.is_loaded(p) {
            return Ok(());
        }
        let started = std::time::Instant::now();
        self.offsets.borrow_mut().load_partition(p)?;
        let now = now_ms();
        let offsets = self.offsets.borrow();
        let ours = |g: &str| offsets.partition_of(g) == p;
        let consumer_config = self.consumer.config.clone();
        let mut consumer = self.consumer.groups.borrow_mut();
        let mut restored_consumer = 0;
        for (id, stored) in offsets.consumer_groups() {
            if ours(&id) {
                let g = ConsumerGroup::restore(&id, consumer_config.clone(), stored, now);
                consumer.insert(id, g);
                restored_consumer += 1;
            }
        }
        // A group id is classic or consumer: a consumer group's records win over a classic
        // group's state it replaced.
        let mut groups = self.groups.borrow_mut();
        let mut restored = 0;
        for (id, m) in offsets.group_metadata() {
            if ours(id) && !consumer.contains_key(id) {
                groups.insert(id.to_string(), restore(id, m, &self.config, now));
                restored += 1;
            }
        }
        tracing::info!(
            shard = self.shard_id,
            partition = p,
            groups = restored,
            consumer_groups = restored_consumer,
            offsets = offsets.live_offsets(),
            records = offsets.stored_records(),
            seconds = started.elapsed().as_secs_f64(),
            "__consumer_offsets partition loaded: its groups are served here"
        );
        Ok(())
    }

    /// Drops partition `p` of `__consumer_offsets` (this shard no longer leads it): its
    /// groups' offsets and state machines go, parked JoinGroup/SyncGroup callers of its
    /// classic groups are answered NOT_COORDINATOR. A no-op when it is not loaded.
    pub fn unload_partition(&self, p: i32) {
        if !self.is_loaded(p) {
            return;
        }
        let (groups_with_state, n) = {
            let mut offsets = self.offsets.borrow_mut();
            (offsets.unload_partition(p).len(), offsets.num_partitions())
        };
        let ours = |g: &str| crate::placement::offsets_partition(g, n) == p;
        let unloaded: Vec<(String, Vec<Effect>)> = {
            let mut groups = self.groups.borrow_mut();
            let ids: Vec<String> = groups.keys().filter(|g| ours(g)).cloned().collect();
            ids.into_iter()
                .filter_map(|id| groups.remove(&id).map(|mut g| (id, g.unload())))
                .collect()
        };
        let classic = unloaded.len();
        for (id, fx) in unloaded {
            self.deliver(&id, fx);
        }
        // Whoever is still parked on a group of `p` (no effect named them) hears it too.
        let joins: Vec<_> = {
            let mut w = self.join_waiters.borrow_mut();
            let keys: Vec<WaiterKey> = w.keys().filter(|(g, _)| ours(g)).cloned().collect();
            keys.into_iter().filter_map(|k| w.remove(&k)).collect()
        };
        for tx in joins {
            let _ = tx.send(JoinResponse::failed("", ErrorCode::NOT_COORDINATOR));
        }
        let syncs: Vec<_> = {
            let mut w = self.sync_waiters.borrow_mut();
            let keys: Vec<WaiterKey> = w.keys().filter(|(g, _)| ours(g)).cloned().collect();
            keys.into_iter().filter_map(|k| w.remove(&k)).collect()
        };
        for tx in syncs {
            let _ = tx.send(SyncResponse::failed(ErrorCode::NOT_COORDINATOR));
        }
        let consumer_groups = {
            let mut c = self.consumer.groups.borrow_mut();
            let before = c.len();
            c.retain(|g, _| !ours(g));
            before - c.len()
        };
        tracing::info!(
            shard = self.shard_id,
            partition = p,
            groups = classic,
            consumer_groups,
            groups_with_state,
            "__consumer_offsets partition unloaded: its groups are no longer served here"
        );
    }

    /// Runs `f` on the group, creating it (Empty) when `create` and it does not exist.
    fn with_group<R>(&self, id: &str, create: bool, f: impl FnOnce(&mut Group) -> R) -> Option<R> {
        let mut groups = self.groups.borrow_mut();
        if !groups.contains_key(id) {
            if !create {
                return None;
            }
            // Any request can name a new group, so the line is rate-limited (see `log_limit`).
            match self
                .log
                .allow(LogKind::GroupCreated, std::time::Instant::now())
            {
                Some(0) => tracing::info!("group created group={id} shard={}", self.shard_id),
                Some(held_back) => tracing::info!(
                    held_back,
                    "group created group={id} shard={}",
                    self.shard_id
                ),
                None => tracing::debug!("group created group={id} shard={}", self.shard_id),
            }
            groups.insert(id.to_string(), Group::new(id, self.config.clone()));
        }
        groups.get_mut(id).map(f)
    }

    /// Hands effects to the parked requests they answer.
    fn deliver(&self, group: &str, effects: Vec<Effect>) {
        for effect in effects {
            match effect {
                Effect::Join {
                    member_id,
                    response,
                } => {
                    let waiter = self
                        .join_waiters
                        .borrow_mut()
                        .remove(&(group.to_string(), member_id));
                    if let Some(tx) = waiter {
                        let _ = tx.send(response);
                    }
                }
                Effect::Sync {
                    member_id,
                    response,
                } => {
                    let waiter = self
                        .sync_waiters
                        .borrow_mut()
                        .remove(&(group.to_string(), member_id));
                    if let Some(tx) = waiter {
                        let _ = tx.send(response);
                    }
                }
            }
        }
    }

    /// Moves every group's time forward; drops groups that are gone.
    pub fn tick(&self) {
        // A burst of group-created lines that stopped is reported with its count.
        self.log.flush(std::time::Instant::now());
        let now = now_ms();
        let mut done: Vec<(String, Vec<Effect>)> = Vec::new();
        {
            let mut groups = self.groups.borrow_mut();
            for (id, g) in groups.iter_mut() {
                if g.next_deadline().is_some_and(|d| now >= d) {
                    let fx = g.tick(now);
                    if !fx.is_empty() {
                        done.push((id.clone(), fx));
                    }
                }
            }
            groups.retain(|_, g| g.state() != GroupState::Dead);
        }
        for (id, fx) in done {
            self.deliver(&id, fx);
        }
    }

    /// Whether `id` is a classic group, and then whether it is empty.
    pub(super) fn classic_is_empty(&self, id: &str) -> Option<bool> {
        self.groups.borrow().get(id).map(Group::is_empty)
    }

    /// Drops a classic group from memory (it is becoming a consumer group).
    pub(super) fn forget_classic(&self, id: &str) {
        self.groups.borrow_mut().remove(id);
    }

    pub(super) fn offsets_log(&self) -> &RefCell<OffsetsLog> {
        &self.offsets
    }

    pub(super) async fn run_store_job(&self, job: SyncJob) -> io::Result<()> {
        self.run_job(job).await
    }

    /// Waits until a store job's records are durable on every in-sync replica (at most
    /// [`OFFSETS_COMMIT_TIMEOUT_MS`]), then runs its log-start move on the blocking pool.
    async fn run_job(&self, job: SyncJob) -> io::Result<()> {
        let logs = self.offsets.borrow().logs();
        let durable = logs.durable(OFFSETS_TOPIC, job.partition, job.last);
        let timeout = async {
            glommio::timer::Timer::new(Duration::from_millis(OFFSETS_COMMIT_TIMEOUT_MS)).await;
            Err(io::Error::new(
                io::ErrorKind::TimedOut,
                format!(
                    "__consumer_offsets-{}: not on every in-sync replica within {OFFSETS_COMMIT_TIMEOUT_MS} ms",
                    job.partition
                ),
            ))
        };
        futures_lite::future::or(durable, timeout).await?;
        if let Some(h) = job.housekeeping {
            let p = job.partition;
            glommio::executor()
                .spawn_blocking(move || super::store::run_housekeeping(p, h))
                .await;
        }
        Ok(())
    }

    /// Expires committed offsets of groups that stayed empty past the offsets retention.
    pub async fn expire_offsets(&self) {
        let now = now_ms();
        let jobs = {
            let groups = self.groups.borrow();
            let consumer = self.consumer.groups.borrow();
            let live = |g: &str| {
                if consumer.get(g).is_some_and(|c| !c.is_empty()) {
                    // Its members are stored as its own records, so the store never saw it
                    // empty: nothing is written for it.
                    return Some(GroupMetadata {
                        protocol_type: "consumer".into(),
                        generation: 0,
                        protocol: None,
                        leader: None,
                        current_state_timestamp_ms: now,
                        members: Vec::new(),
                    });
                }
                groups
                    .get(g)
                    .filter(|g| !g.is_empty())
                    .map(|g| metadata_of(g, now))
            };
            self.offsets
                .borrow_mut()
                .expire(now, self.offsets_retention_ms, live)
        };
        match jobs {
            Ok(jobs) => {
                for job in jobs {
                    if let Err(e) = self.run_job(job).await {
                        tracing::error!(shard = self.shard_id, error = %e, "offsets expiry sync failed");
                    }
                }
            }
            Err(e) => tracing::error!(shard = self.shard_id, error = %e, "offsets expiry failed"),
        }
    }

    pub async fn join(
        &self,
        group_id: String,
        req: JoinRequest,
        require_known_member_id: bool,
    ) -> JoinResponse {
        if !self.serves(&group_id) {
            return JoinResponse::failed("", ErrorCode::NOT_COORDINATOR);
        }
        let now = now_ms();
        match self.delete_consumer_group(&group_id) {
            // A classic member cannot join a consumer group that has members; an empty one
            // becomes a classic group.
            Some(code) if code != ErrorCode::NONE => {
                return JoinResponse::failed("", ErrorCode::INCONSISTENT_GROUP_PROTOCOL);
            }
            Some(_) => self.forget_consumer_records(&group_id, now).await,
            None => {}
        }
        let Some((step, later)) = self.with_group(&group_id, true, |g| {
            let step = g.join(req, now, require_known_member_id);
            let later = g.tick(now);
            (step, later)
        }) else {
            return JoinResponse::failed("", ErrorCode::COORDINATOR_NOT_AVAILABLE);
        };
        let retry = || JoinResponse::failed("", ErrorCode::REBALANCE_IN_PROGRESS);
        self.settle(&group_id, step, later, &self.join_waiters, retry)
            .await
    }

    pub async fn sync(&self, group_id: String, req: SyncRequest) -> SyncResponse {
        if !self.serves(&group_id) {
            return SyncResponse::failed(ErrorCode::NOT_COORDINATOR);
        }
        let now = now_ms();
        let Some((step, later, completed)) = self.with_group(&group_id, false, |g| {
            let before = g.state();
            let step = g.sync(req, now);
            let later = g.tick(now);
            let completed = (before == GroupState::CompletingRebalance
                && g.state() == GroupState::Stable)
                .then(|| metadata_of(g, now));
            (step, later, completed)
        }) else {
            return SyncResponse::failed(ErrorCode::UNKNOWN_MEMBER_ID);
        };
        if let Some(metadata) = completed {
            // The generation is stored before anyone learns it, so a coordinator restart
            // brings back the generation the members hold. A failure is logged, not answered:
            // the group works on from memory, and only a restart would lose the generation.
            let job = self
                .offsets
                .borrow_mut()
                .store_group(&group_id, metadata, now);
            let stored = match job {
                Ok(job) => self.run_job(job).await,
                Err(e) => Err(e),
            };
            if let Err(e) = stored {
                tracing::error!(group = %group_id, error = %e, "storing the group's generation failed");
            }
        }
        let retry = || SyncResponse::failed(ErrorCode::REBALANCE_IN_PROGRESS);
        self.settle(&group_id, step, later, &self.sync_waiters, retry)
            .await
    }

    /// Answers a JoinGroup or SyncGroup: at once, or by parking the caller under its member id
    /// until an effect answers it. The waiter is registered before the effects are delivered,
    /// so an effect produced by this very call finds it. A member that calls again while
    /// parked replaces its old request, which gets `retry()`.
    async fn settle<T>(
        &self,
        group_id: &str,
        step: Step<T>,
        later: Vec<Effect>,
        waiters: &RefCell<HashMap<WaiterKey, oneshot::Sender<T>>>,
        retry: impl Fn() -> T,
    ) -> T {
        let rx = match step.reply {
            Reply::Now(r) => {
                self.deliver(group_id, step.effects);
                self.deliver(group_id, later);
                return r;
            }
            Reply::Parked { member_id } => {
                let (tx, rx) = oneshot::channel();
                let replaced = waiters
                    .borrow_mut()
                    .insert((group_id.to_string(), member_id), tx);
                if let Some(old) = replaced {
                    let _ = old.send(retry());
                }
                rx
            }
        };
        self.deliver(group_id, step.effects);
        self.deliver(group_id, later);
        rx.await.unwrap_or_else(|_| retry())
    }

    pub fn heartbeat(&self, group_id: &str, req: HeartbeatRequest) -> ErrorCode {
        if !self.serves(group_id) {
            return ErrorCode::NOT_COORDINATOR;
        }
        let now = now_ms();
        let Some((code, later)) = self.with_group(group_id, false, |g| {
            let code = g.heartbeat(&req, now);
            (code, g.tick(now))
        }) else {
            return ErrorCode::UNKNOWN_MEMBER_ID;
        };
        self.deliver(group_id, later);
        code
    }

    pub fn leave(&self, group_id: &str, req: LeaveRequest) -> LeaveResponse {
        if !self.serves(group_id) {
            return LeaveResponse {
                error: ErrorCode::NOT_COORDINATOR,
                members: Vec::new(),
            };
        }
        let now = now_ms();
        let unknown = LeaveResponse {
            error: ErrorCode::NONE,
            members: req
                .members
                .iter()
                .map(|m| state::LeaveMemberResponse {
                    member_id: m.member_id.clone(),
                    group_instance_id: m.group_instance_id.clone(),
                    error: ErrorCode::UNKNOWN_MEMBER_ID,
                })
                .collect(),
        };
        let Some((resp, fx)) = self.with_group(group_id, false, |g| {
            let (resp, mut fx) = g.leave(req, now);
            fx.extend(g.tick(now));
            (resp, fx)
        }) else {
            return unknown;
        };
        self.deliver(group_id, fx);
        resp
    }

    /// Validates and stores commits; answers once they are on disk. Returns one code per
    /// entry, in order.
    pub async fn commit(
        &self,
        group_id: &str,
        generation_id: i32,
        member_id: &str,
        group_instance_id: Option<&str>,
        entries: Vec<(String, i32, CommittedOffset)>,
    ) -> Vec<ErrorCode> {
        self.commit_at_version(
            group_id,
            (generation_id, member_id, group_instance_id),
            entries,
            i16::MAX,
        )
        .await
    }

    /// [`GroupCoordinator::commit`] by an OffsetCommit of `api_version` (a consumer group
    /// takes its members' commits from v9 on). `member` is (generation or member epoch,
    /// member id, instance id).
    pub async fn commit_at_version(
        &self,
        group_id: &str,
        member: (i32, &str, Option<&str>),
        entries: Vec<(String, i32, CommittedOffset)>,
        api_version: i16,
    ) -> Vec<ErrorCode> {
        let (generation_id, member_id, group_instance_id) = member;
        if !self.serves(group_id) {
            return vec![ErrorCode::NOT_COORDINATOR; entries.len()];
        }
        let now = now_ms();
        let code = match self.consumer_commit_check(group_id, member_id, generation_id, api_version)
        {
            Some(code) => code,
            None => self
                .with_group(group_id, true, |g| {
                    g.validate_offset_commit(generation_id, member_id, group_instance_id, now)
                })
                .unwrap_or(ErrorCode::COORDINATOR_NOT_AVAILABLE),
        };
        if code != ErrorCode::NONE || entries.is_empty() {
            return vec![code; entries.len()];
        }
        let job = self.offsets.borrow_mut().commit(group_id, &entries, now);
        let synced = match job {
            Ok(job) => self.run_job(job).await,
            Err(e) => Err(e),
        };
        match synced {
            Ok(()) => vec![ErrorCode::NONE; entries.len()],
            Err(e) => {
                tracing::error!(group = group_id, error = %e, "offset commit failed");
                vec![ErrorCode::COORDINATOR_NOT_AVAILABLE; entries.len()]
            }
        }
    }

    /// TxnOffsetCommit: validated as KIP-447 says (a member id or generation, when given, must
    /// be the group's: UNKNOWN_MEMBER_ID, ILLEGAL_GENERATION, FENCED_INSTANCE_ID), then
    /// written as the producer's transactional batch and staged until its transaction's
    /// marker; answered once on disk.
    pub async fn txn_commit(
        &self,
        group_id: &str,
        producer: (i64, i16),
        generation_id: i32,
        member_id: &str,
        group_instance_id: Option<&str>,
        entries: Vec<(String, i32, CommittedOffset)>,
    ) -> Vec<ErrorCode> {
        if !self.serves(group_id) {
            return vec![ErrorCode::NOT_COORDINATOR; entries.len()];
        }
        let now = now_ms();
        // A producer that names no member (TxnOffsetCommit before v3, or a consumer outside
        // any group) is not checked against the group, as in Kafka.
        let code = if generation_id < 0 && member_id.is_empty() && group_instance_id.is_none() {
            ErrorCode::NONE
        } else {
            self.with_group(group_id, true, |g| {
                g.validate_offset_commit(generation_id, member_id, group_instance_id, now)
            })
            .unwrap_or(ErrorCode::COORDINATOR_NOT_AVAILABLE)
        };
        if code != ErrorCode::NONE || entries.is_empty() {
            return vec![code; entries.len()];
        }
        let job = self
            .offsets
            .borrow_mut()
            .txn_commit(group_id, producer, &entries, now);
        let synced = match job {
            Ok(job) => self.run_job(job).await,
            Err(e) => Err(e),
        };
        match synced {
            Ok(()) => vec![ErrorCode::NONE; entries.len()],
            Err(e) => {
                tracing::error!(group = group_id, error = %e, "transactional offset commit failed");
                vec![ErrorCode::COORDINATOR_NOT_AVAILABLE; entries.len()]
            }
        }
    }

    /// A transaction marker for this shard's `__consumer_offsets` partition `p`: the
    /// producer's staged commits there become committed offsets (commit) or are dropped.
    pub async fn txn_marker(
        &self,
        p: i32,
        producer: (i64, i16),
        commit: bool,
    ) -> Result<(), crate::error::KafkaError> {
        let storage = |e: io::Error| crate::error::KafkaError::Storage(e.to_string());
        let job = self
            .offsets
            .borrow_mut()
            .txn_marker(p, producer, commit, now_ms())
            .map_err(storage)?;
        self.run_job(job).await.map_err(storage)
    }

    /// Which of `rows` have a transactional commit awaiting its marker.
    pub fn unstable(&self, group_id: &str, rows: &[FetchedOffset]) -> Vec<(String, i32)> {
        let store = self.offsets.borrow();
        rows.iter()
            .filter(|(t, p, ..)| store.has_pending(group_id, t, *p))
            .map(|(t, p, ..)| (t.clone(), *p))
            .collect()
    }

    /// Committed offsets of `group_id`: all of them (`wanted` None) or the asked partitions.
    pub fn fetch(
        &self,
        group_id: &str,
        wanted: Option<Vec<(String, Vec<i32>)>>,
    ) -> Vec<FetchedOffset> {
        let store = self.offsets.borrow();
        let render = |t: &str, p: i32, c: Option<&CommittedOffset>| match c {
            Some(c) => (
                t.to_string(),
                p,
                c.offset,
                c.leader_epoch,
                c.metadata.clone(),
            ),
            None => (t.to_string(), p, -1, -1, Some(String::new())),
        };
        match wanted {
            None => store
                .group_offsets(group_id)
                .map(|(t, p, c)| render(t, p, Some(c)))
                .collect(),
            Some(topics) => topics
                .iter()
                .flat_map(|(t, parts)| parts.iter().map(move |&p| (t, p)))
                .map(|(t, p)| render(t, p, store.fetch(group_id, t, p)))
                .collect(),
        }
    }

    /// DescribeGroups of one group (Dead with no members when unknown, as Kafka answers);
    /// None for a consumer group, which DescribeGroups does not describe.
    pub fn describe_classic(&self, group_id: &str) -> Option<GroupDescription> {
        (!self.is_consumer_group(group_id)).then(|| self.describe(group_id))
    }

    /// DescribeGroups of one group (Dead with no members when unknown, as Kafka answers).
    pub fn describe(&self, group_id: &str) -> GroupDescription {
        let known = self.with_group(group_id, false, |g| g.describe());
        known.unwrap_or_else(|| {
            let empty = self.offsets.borrow().has_group(group_id);
            GroupDescription {
                state: if empty {
                    GroupState::Empty.as_str()
                } else {
                    GroupState::Dead.as_str()
                },
                protocol_type: String::new(),
                protocol_name: String::new(),
                members: Vec::new(),
            }
        })
    }

    /// Every group this shard coordinates, with groups that only have committed offsets
    /// listed as Empty.
    pub fn list(&self) -> Vec<ListedGroup> {
        let groups = self.groups.borrow();
        let mut out: BTreeMap<String, (String, &'static str, &'static str)> = groups
            .values()
            .filter(|g| g.state() != GroupState::Dead)
            .map(|g| {
                (
                    g.group_id().to_string(),
                    (
                        g.protocol_type().unwrap_or_default().to_string(),
                        g.state().as_str(),
                        "classic",
                    ),
                )
            })
            .collect();
        for (id, state) in self.list_consumer_groups() {
            out.insert(id, ("consumer".to_string(), state, "consumer"));
        }
        for id in self.offsets.borrow().groups() {
            out.entry(id).or_insert_with(|| {
                (
                    "consumer".to_string(),
                    GroupState::Empty.as_str(),
                    "classic",
                )
            });
        }
        out.into_iter()
            .map(|(id, (pt, st, ty))| (id, pt, st, ty))
            .collect()
    }

    /// DeleteGroups of one group: only an empty group can go; its offsets go with it.
    pub async fn delete(&self, group_id: &str) -> ErrorCode {
        if !self.serves(group_id) {
            return ErrorCode::NOT_COORDINATOR;
        }
        let consumer = self.delete_consumer_group(group_id);
        if let Some(code) = consumer.filter(|c| *c != ErrorCode::NONE) {
            return code;
        }
        let deleted = self.with_group(group_id, false, |g| g.delete());
        let has_offsets = self.offsets.borrow().has_group(group_id);
        match deleted {
            None if consumer.is_some() => {}
            Some(Err(code)) => return code,
            None if !has_offsets => return ErrorCode::GROUP_ID_NOT_FOUND,
            _ => {}
        }
        self.groups.borrow_mut().remove(group_id);
        let job = self.offsets.borrow_mut().delete_group(group_id, now_ms());
        let synced = match job {
            Ok(Some(job)) => self.run_job(job).await,
            Ok(None) => Ok(()),
            Err(e) => Err(e),
        };
        match synced {
            Ok(()) => ErrorCode::NONE,
            Err(e) => {
                tracing::error!(group = group_id, error = %e, "group delete failed");
                ErrorCode::COORDINATOR_NOT_AVAILABLE
            }
        }
    }

    /// OffsetDelete: removes committed offsets of partitions the group does not consume.
    /// Returns (group error, one code per partition).
    pub async fn delete_offsets(
        &self,
        group_id: &str,
        partitions: Vec<(String, i32)>,
    ) -> (ErrorCode, Vec<ErrorCode>) {
        if !self.serves(group_id) {
            return (
                ErrorCode::NOT_COORDINATOR,
                vec![ErrorCode::NONE; partitions.len()],
            );
        }
        let subscribed: Option<BTreeSet<String>> =
            self.consumer_subscribed_topics(group_id).or_else(|| {
                self.with_group(group_id, false, |g| {
                    g.members()
                        .filter_map(|m| g.protocol_name().and_then(|p| m.metadata(p)))
                        .flat_map(|meta| subscribed_topics(meta))
                        .collect()
                })
            });
        if subscribed.is_none() && !self.offsets.borrow().has_group(group_id) {
            return (
                ErrorCode::GROUP_ID_NOT_FOUND,
                vec![ErrorCode::NONE; partitions.len()],
            );
        }
        let subscribed = subscribed.unwrap_or_default();
        let codes: Vec<ErrorCode> = partitions
            .iter()
            .map(|(t, _)| {
                if subscribed.contains(t) {
                    ErrorCode::GROUP_SUBSCRIBED_TO_TOPIC
                } else {
                    ErrorCode::NONE
                }
            })
            .collect();
        let doomed: Vec<(String, i32)> = partitions
            .iter()
            .zip(&codes)
            .filter(|(_, c)| **c == ErrorCode::NONE)
            .map(|(tp, _)| tp.clone())
            .collect();
        let job = self
            .offsets
            .borrow_mut()
            .delete_partitions(group_id, &doomed, now_ms());
        let synced = match job {
            Ok(Some(job)) => self.run_job(job).await,
            Ok(None) => Ok(()),
            Err(e) => Err(e),
        };
        match synced {
            Ok(()) => (ErrorCode::NONE, codes),
            Err(e) => {
                tracing::error!(group = group_id, error = %e, "offset delete failed");
                (ErrorCode::COORDINATOR_NOT_AVAILABLE, codes)
            }
        }
    }

    pub fn committed_offsets(&self) -> Vec<(String, String, i32, i64)> {
        let store = self.offsets.borrow();
        store
            .groups()
            .into_iter()
            .flat_map(|g| {
                store
                    .group_offsets(&g)
                    .map(|(t, p, c)| (g.clone(), t.to_string(), p, c.offset))
                    .collect::<Vec<_>>()
            })
            .collect()
    }

    /// Answers every parked request with NOT_COORDINATOR (shutdown).
    pub fn unload(&self) {
        let all: Vec<(String, Vec<Effect>)> = self
            .groups
            .borrow_mut()
            .iter_mut()
            .map(|(id, g)| (id.clone(), g.unload()))
            .collect();
        for (id, fx) in all {
            self.deliver(&id, fx);
        }
    }
}

/// A group's state as GroupMetadataValue stores it.
fn metadata_of(g: &Group, now_ms: i64) -> GroupMetadata {
    let protocol = g.protocol_name().map(str::to_string);
    GroupMetadata {
        protocol_type: g.protocol_type().unwrap_or_default().to_string(),
        generation: g.generation_id(),
        protocol: protocol.clone(),
        leader: g.leader().map(str::to_string),
        current_state_timestamp_ms: now_ms,
        members: g
            .members()
            .map(|m| MemberMetadata {
                member_id: m.member_id.clone(),
                group_instance_id: m.group_instance_id.clone(),
                client_id: m.client_id.clone(),
                client_host: m.client_host.clone(),
                rebalance_timeout_ms: m.rebalance_timeout_ms,
                session_timeout_ms: m.session_timeout_ms,
                subscription: protocol
                    .as_deref()
                    .and_then(|p| m.metadata(p))
                    .cloned()
                    .unwrap_or_default(),
                assignment: m.assignment.clone(),
            })
            .collect(),
    }
}

/// The group a stored state describes, as the state machine takes it back (see the module
/// doc on loading).
fn restore(id: &str, m: &GroupMetadata, config: &GroupConfig, now_ms: i64) -> Group {
    let protocol_type = (!m.protocol_type.is_empty()).then(|| m.protocol_type.clone());
    let members = match &m.protocol {
        Some(protocol) => m
            .members
            .iter()
            .map(|mm| Member {
                member_id: mm.member_id.clone(),
                group_instance_id: mm.group_instance_id.clone(),
                client_id: mm.client_id.clone(),
                client_host: mm.client_host.clone(),
                session_timeout_ms: mm.session_timeout_ms,
                rebalance_timeout_ms: mm.rebalance_timeout_ms,
                protocol_type: m.protocol_type.clone(),
                protocols: vec![(protocol.clone(), mm.subscription.clone())],
                assignment: mm.assignment.clone(),
                last_heartbeat_ms: now_ms,
                awaiting_join: false,
                awaiting_sync: false,
                is_new: false,
            })
            .collect(),
        None => Vec::new(),
    };
    Group::restore(
        id,
        config.clone(),
        state::Restored {
            generation_id: m.generation,
            protocol_type,
            protocol_name: m.protocol.clone(),
            leader: m.leader.clone(),
            members,
        },
    )
}

/// Topics in a consumer-protocol subscription, as the members of a "consumer" group send
/// them, decoded with the `kafka-protocol` crate (a version newer than the crate knows is read
/// as the newest it knows: later versions only add fields at the end). Anything unreadable
/// yields no topics.
fn subscribed_topics(meta: &[u8]) -> Vec<String> {
    use kafka_protocol::messages::ConsumerProtocolSubscription;
    use kafka_protocol::protocol::Decodable;
    let mut buf = meta;
    let Some(version) = buf.get(..2).map(|v| i16::from_be_bytes([v[0], v[1]])) else {
        return Vec::new();
    };
    buf = &buf[2..];
    let version = version.clamp(0, 3);
    match ConsumerProtocolSubscription::decode(&mut buf, version) {
        Ok(sub) => sub.topics.into_iter().map(|t| t.to_string()).collect(),
        Err(_) => Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_consumer_subscriptions() {
        let mut meta = vec![0, 1, 0, 0, 0, 2];
        for t in ["orders", "x"] {
            meta.extend_from_slice(&(t.len() as i16).to_be_bytes());
            meta.extend_from_slice(t.as_bytes());
        }
        // No user data (an empty byte string), no owned partitions (v1).
        meta.extend_from_slice(&[0, 0, 0, 0, 0, 0, 0, 0]);
        assert_eq!(subscribed_topics(&meta), vec!["orders", "x"]);
        assert!(subscribed_topics(&[0, 1, 0x7f, 0xff, 0xff, 0xff, 0, 9]).is_empty());
    }

    #[test]
    fn a_group_is_coordinated_only_while_its_partition_is_loaded() {
        let dir = tempfile::tempdir().unwrap();
        let logs = Rc::new(super::super::logs::DirLogs::new(dir.path()));
        let p = crate::placement::offsets_partition("g", 50);
        logs.open(OFFSETS_TOPIC, p, super::super::store::LOG_CONFIG, true)
            .unwrap();
        let c = GroupCoordinator::new(
            0,
            50,
            logs,
            GroupConfig::default(),
            ConsumerGroupConfig::default(),
            i64::MAX,
        );
        let hb = || HeartbeatRequest {
            member_id: "m".into(),
            generation_id: 1,
            group_instance_id: None,
        };
        assert!(!c.serves("g"));
        assert_eq!(c.heartbeat("g", hb()), ErrorCode::NOT_COORDINATOR);
        c.load_partition(p).unwrap();
        assert!(c.serves("g"));
        assert_eq!(c.heartbeat("g", hb()), ErrorCode::UNKNOWN_MEMBER_ID);
        c.unload_partition(p);
        assert_eq!(c.heartbeat("g", hb()), ErrorCode::NOT_COORDINATOR);
        assert!(c.list().is_empty());
    }

    #[test]
    fn a_stored_generation_comes_back_without_a_rebalance() {
        let member = |id: &str| MemberMetadata {
            member_id: id.into(),
            group_instance_id: None,
            client_id: "c".into(),
            client_host: "/127.0.0.1".into(),
            rebalance_timeout_ms: 60_000,
            session_timeout_ms: 10_000,
            subscription: bytes::Bytes::from_static(b"sub"),
            assignment: bytes::Bytes::from_static(b"asg"),
        };
        let stored = GroupMetadata {
            protocol_type: "consumer".into(),
            generation: 7,
            protocol: Some("range".into()),
            leader: Some("m1".into()),
            current_state_timestamp_ms: 1,
            members: vec![member("m1"), member("m2")],
        };
        let mut g = restore("g", &stored, &GroupConfig::default(), 1_000);
        assert_eq!(g.state(), GroupState::Stable);
        assert_eq!(g.generation_id(), 7);
        assert_eq!(g.leader(), Some("m1"));
        // Members of the stored generation heartbeat on; their state round-trips.
        let hb = HeartbeatRequest {
            member_id: "m2".into(),
            generation_id: 7,
            group_instance_id: None,
        };
        assert_eq!(g.heartbeat(&hb, 2_000), ErrorCode::NONE);
        assert_eq!(metadata_of(&g, 1), stored);
        // Gone members expire with their session, counted from the restart.
        assert!(g.tick(11_001).is_empty());
        assert_ne!(g.state(), GroupState::Stable);

        // A group stored without members comes back Empty at its generation.
        let empty = GroupMetadata {
            protocol: None,
            leader: None,
            members: Vec::new(),
            ..stored
        };
        let g = restore("g", &empty, &GroupConfig::default(), 1_000);
        assert_eq!(g.state(), GroupState::Empty);
        assert_eq!(g.generation_id(), 7);
        assert_eq!(g.protocol_type(), Some("consumer"));
    }
}
