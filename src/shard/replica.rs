//! Replication on a shard: the leader's side of a follower's Fetch, the follower's fetchers,
//! ISR changes and the high-watermark checkpoint (Kafka's ISR protocol, KIP-101/279/320/903).
//!
//! Lives on: one shard; every partition it touches is one this shard owns.
//!
//! - **Followers fetch.** For each broker it follows partitions from, a shard runs one
//!   fetcher: one connection and one task that carries all those partitions in one Fetch
//!   (v15, with this broker's id and epoch as the replica state). What comes back is appended
//!   with the leader's offsets and epochs (`PartitionLog::append_replicated`), made durable
//!   (one group flush per partition, all partitions at once), and only then is the next Fetch
//!   sent, at the synced end: so a leader never counts a follower for data a power loss could
//!   take from it. Topics that flush in the background (`flush.ms`/`flush.messages`) fetch
//!   from the log end instead, as Kafka does. A follower still below the leader's high
//!   watermark (catching up) skips the per-Fetch flush: its fetch offset cannot count toward the
//!   high watermark or an ISR expansion until it reaches the high watermark, and the Fetch that
//!   does is preceded by a flush.
//! - **Divergence.** Each Fetch carries the epoch of the follower's last batch; a leader whose
//!   log has that epoch end earlier answers the diverging epoch and end offset instead of
//!   data, and the follower truncates there (never below what it knows is committed) before
//!   it fetches again.
//! - **The leader** records each follower's fetch offset, moves the high watermark to the
//!   smallest of its own synced end and the ISR members' fetch offsets, and asks the
//!   controller to change the ISR: add a follower that caught up to the high watermark, drop
//!   one that has not caught up for `replica.lag.time.max.ms`. An ISR change takes effect only
//!   when the metadata quorum has committed it.
//! - **Throttles** (`throttle`): a replica named in its topic's
//!   `leader.replication.throttled.replicas` / `follower.replication.throttled.replicas` and
//!   out of sync moves only while its shard's bucket for that direction has tokens: the leader
//!   answers it nothing, the follower leaves it out of its Fetch. Others never wait.
//! - **The high watermark** of every partition is written to a per-shard checkpoint file once a
//!   second when it moved and at a clean stop; a restarted replica starts from it (at most its
//!   log end), never from its log end, whose tail the other replicas may not have.

use std::cell::{Cell, RefCell};
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use futures_lite::{AsyncReadExt, AsyncWriteExt};
use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic, ReplicaState};
use kafka_protocol::messages::{ApiKey, BrokerId, FetchRequest, FetchResponse};
use uuid::Uuid;

use super::partition::{Partition, Role};
use super::{Shard, TopicPartition};
use crate::error::{ErrorCode, KafkaError};
use crate::storage::log::{ReadOut, TruncateJob};

/// The Fetch version followers send: v15 carries the replica state (id and broker epoch,
/// KIP-903) and topic ids, and its response the diverging epoch.
const REPLICA_FETCH_VERSION: i16 = 15;
/// Client id of replica fetches, as the leader's logs show it.
const CLIENT_ID: &str = "spate-replica-fetcher";
/// How often the leader looks for followers to drop from the ISR and writes the
/// high-watermark checkpoint.
pub const REPLICA_TICK_MS: u64 = 500;
/// How long a fetcher whose partitions are all throttled waits before it looks again.
const THROTTLED_WAIT_MS: u64 = 100;
/// Backoff of a fetcher whose leader cannot be reached, doubled up to the maximum.
const BACKOFF_MIN_MS: u64 = 50;
const BACKOFF_MAX_MS: u64 = 1000;

/// What a follower's Fetch says of itself, for one partition.
#[derive(Clone, Copy, Debug)]
pub struct ReplicaFetch {
    pub replica_id: i32,
    pub broker_epoch: i64,
    /// The epoch of the follower's last batch (-1: none, or a version without it).
    pub last_fetched_epoch: i32,
}

/// One partition a fetcher carries.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Target {
    topic_id: Uuid,
    leader_epoch: i32,
}

/// A shard's fetcher of the partitions it follows from one leader broker.
pub struct Fetcher {
    leader: i32,
    targets: RefCell<BTreeMap<TopicPartition, Target>>,
    stopped: Cell<bool>,
}

/// The high-watermark checkpoint of shard `shard`.
fn checkpoint_path(data_dir: &Path, shard: usize) -> PathBuf {
    data_dir.join(format!("high-watermark-checkpoint.{shard}"))
}

/// Every shard's checkpointed high watermarks (a partition in several files, as after a
/// change of the shard count, takes the largest: a high watermark only grows).
pub fn load_checkpoints(data_dir: &Path) -> HashMap<TopicPartition, i64> {
    let mut out: HashMap<TopicPartition, i64> = HashMap::new();
    let Ok(entries) = std::fs::read_dir(data_dir) else {
        return out;
    };
    for e in entries.flatten() {
        let name = e.file_name();
        if !name
            .to_string_lossy()
            .starts_with("high-watermark-checkpoint.")
            || name.to_string_lossy().ends_with(".tmp")
        {
            continue;
        }
        let Ok(text) = std::fs::read_to_string(e.path()) else {
            continue;
        };
        for line in text.lines() {
            let mut it = line.rsplitn(3, ' ');
            let (Some(hw), Some(p), Some(topic)) = (it.next(), it.next(), it.next()) else {
                continue;
            };
            let (Ok(hw), Ok(p)) = (hw.parse::<i64>(), p.parse::<i32>()) else {
                continue;
            };
            let slot = out.entry((topic.to_string(), p)).or_insert(hw);
            *slot = (*slot).max(hw);
        }
    }
    out
}

/// Writes a checkpoint: temporary file, fsync, rename (a crash leaves the old one or the new).
fn write_checkpoint(path: &Path, entries: &[(TopicPartition, i64)]) -> std::io::Result<()> {
    use std::io::Write;
    let mut text = String::with_capacity(entries.len() * 32);
    for ((t, p), hw) in entries {
        text.push_str(&format!("{t} {p} {hw}\n"));
    }
    let tmp = path.with_extension("tmp");
    let mut f = std::fs::File::create(&tmp)?;
    f.write_all(text.as_bytes())?;
    f.sync_data()?;
    std::fs::rename(&tmp, path)
}

impl Shard {
    /// Whether partitions of `topic` are acknowledged only once durable (no background flush
    /// policy): then a leader counts only its synced end, and a follower fetches from its
    /// synced end.
    pub(crate) fn synced_replication(&self, topic: &str) -> bool {
        self.topics
            .borrow()
            .get(topic)
            .is_none_or(|t| self.flush_on_ack(t))
    }

    /// The metadata's view of an owned partition was applied (open, or a change): set its role
    /// and start or stop following, and let waiters see the change.
    pub(crate) fn partition_assigned(self: &Rc<Self>, tp: &TopicPartition) {
        let me = self.config.node_id;
        let synced = self.synced_replication(&tp.0);
        let follow = {
            let mut partitions = self.partitions.borrow_mut();
            let Some(part) = partitions.get_mut(tp) else {
                return;
            };
            if matches!(part.role, Role::Single) {
                return;
            }
            let topic_id = self.topic(&tp.0).map(|t| t.topic_id);
            part.advance_high_watermark(me, synced);
            part.wake_waiters();
            match (&part.role, topic_id) {
                (Role::Follower { leader }, Some(id)) => Some((*leader, part.leader_epoch(), id)),
                _ => None,
            }
        };
        match follow {
            Some((leader, epoch, topic_id)) => self.follow(tp, leader, epoch, topic_id),
            None => self.unfollow(tp),
        }
        if crate::placement::is_coordinator_log(&tp.0) {
            self.coordinator_follows_leadership(tp);
        }
    }

    /// A coordinator serves the groups (or transactional ids) of its log's partition `tp`
    /// (`__consumer_offsets` or `__transaction_state`) exactly while this broker leads it:
    /// loaded when it becomes the leader (a new epoch of it included: the previous
    /// leadership's state may be stale), dropped when it stops being it. Called after every
    /// change of the partition's role.
    fn coordinator_follows_leadership(&self, tp: &TopicPartition) {
        let p = tp.1;
        let groups = tp.0 == crate::placement::OFFSETS_TOPIC;
        let epoch = self
            .partitions
            .borrow()
            .get(tp)
            .and_then(|part| matches!(part.role, Role::Leader(_)).then(|| part.leader_epoch()));
        let unload = || {
            if groups {
                self.groups.unload_partition(p);
            } else {
                self.txns.borrow_mut().unload_partition(p);
            }
        };
        match epoch {
            Some(epoch) => {
                let loaded = if groups {
                    self.groups.is_loaded(p)
                } else {
                    self.txns.borrow().is_loaded(p)
                };
                let mut epochs = self.coordinator_epochs.borrow_mut();
                if loaded && epochs.get(tp) == Some(&epoch) {
                    return;
                }
                // A new leadership of a partition that was loaded in an older one: its state
                // is reloaded from the log, which may have changed in between.
                unload();
                let result = if groups {
                    self.groups.load_partition(p)
                } else {
                    self.txns.borrow_mut().load_partition(p)
                };
                match result {
                    Ok(()) => {
                        epochs.insert(tp.clone(), epoch);
                    }
                    Err(e) => {
                        epochs.remove(tp);
                        tracing::error!(
                            shard = self.id,
                            topic = %tp.0,
                            partition = p,
                            error = %e,
                            "cannot load a coordinator's partition: what it holds is not served here"
                        );
                    }
                }
            }
            None => {
                self.coordinator_epochs.borrow_mut().remove(tp);
                unload();
            }
        }
    }

    /// Adds `tp` to this shard's fetcher for `leader` (starting it if needed), taking it off
    /// any other.
    fn follow(self: &Rc<Self>, tp: &TopicPartition, leader: i32, leader_epoch: i32, id: Uuid) {
        if self.stopping.get() {
            return;
        }
        let target = Target {
            topic_id: id,
            leader_epoch,
        };
        let mut fetchers = self.fetchers.borrow_mut();
        for (l, f) in fetchers.iter() {
            if *l != leader {
                f.targets.borrow_mut().remove(tp);
            }
        }
        let f = fetchers.entry(leader).or_insert_with(|| {
            let f = Rc::new(Fetcher {
                leader,
                targets: RefCell::new(BTreeMap::new()),
                stopped: Cell::new(false),
            });
            tracing::info!(shard = self.id, leader, "replica fetcher started");
            glommio::spawn_local(run_fetcher(self.clone(), f.clone())).detach();
            f
        });
        f.targets.borrow_mut().insert(tp.clone(), target);
        fetchers.retain(|_, f| {
            let keep = !f.targets.borrow().is_empty();
            if !keep {
                f.stopped.set(true);
            }
            keep
        });
    }

    /// Takes `tp` off every fetcher; a fetcher left with none stops.
    pub(crate) fn unfollow(&self, tp: &TopicPartition) {
        self.fetchers.borrow_mut().retain(|leader, f| {
            f.targets.borrow_mut().remove(tp);
            let keep = !f.targets.borrow().is_empty();
            if !keep {
                f.stopped.set(true);
                tracing::info!(shard = self.id, leader, "replica fetcher stopped");
            }
            keep
        });
    }

    /// Stops every fetcher (shutdown).
    pub fn stop_fetchers(&self) {
        for f in self.fetchers.borrow_mut().drain().map(|(_, f)| f) {
            f.stopped.set(true);
        }
    }

    /// The leader's side of a follower's Fetch of one partition: checks that this replica
    /// leads it in the follower's epoch, answers the divergence point if the follower's log
    /// left this one, records the follower's progress (moving the high watermark, and asking
    /// for an ISR expansion when it caught up), then reads up to the log end (nothing, for a
    /// throttled replica out of sync while the leader bucket is empty).
    pub(crate) fn serve_replica(
        self: &Rc<Self>,
        tp: &TopicPartition,
        offset: i64,
        max_bytes: usize,
        current_leader_epoch: i32,
        r: ReplicaFetch,
    ) -> Result<ReadOut, KafkaError> {
        let me = self.config.node_id;
        let synced = self.synced_replication(&tp.0);
        let (out, expand) = {
            let mut partitions = self.partitions.borrow_mut();
            let part = partitions
                .get_mut(tp)
                .ok_or(KafkaError::UnknownTopicOrPartition)?;
            if !matches!(part.role, Role::Leader(_)) {
                return Err(KafkaError::NotLeaderOrFollower);
            }
            match current_leader_epoch {
                e if e < 0 || e == part.leader_epoch() => {}
                e if e < part.leader_epoch() => return Err(KafkaError::FencedLeaderEpoch),
                _ => return Err(KafkaError::UnknownLeaderEpoch),
            }
            if !part.assignment.replicas.contains(&r.replica_id) {
                return Err(KafkaError::NotLeaderOrFollower);
            }
            part.log.check_online()?;
            let end = part.log_end_offset();
            if r.last_fetched_epoch >= 0 {
                let (epoch, epoch_end) = part
                    .log
                    .leader_epochs()
                    .end_offset_for(r.last_fetched_epoch, end);
                if epoch != r.last_fetched_epoch || epoch_end < offset {
                    // No epoch that old here (-1): the end is this log's start, so the
                    // answer still reads as a divergence (-1, -1 would mean none).
                    let epoch_end = if epoch < 0 {
                        part.log.log_start_offset()
                    } else {
                        epoch_end
                    };
                    return Ok(ReadOut {
                        slice: None,
                        high_watermark: part.high_watermark(),
                        last_stable_offset: part.last_stable_offset(),
                        log_start_offset: part.log.log_start_offset(),
                        aborted: None,
                        diverging_epoch: Some((epoch, epoch_end)),
                    });
                }
            }
            if offset < part.log.log_start_offset() || offset > end {
                return Err(KafkaError::OffsetOutOfRange {
                    offset,
                    start: part.log.log_start_offset(),
                    end,
                });
            }
            let now = Instant::now();
            let expand = part.follower_fetched(r.replica_id, r.broker_epoch, offset, now);
            if part.advance_high_watermark(me, synced) {
                part.wake_waiters();
            }
            let expand = expand.map(|isr| {
                (
                    isr.clone(),
                    part.isr_with_epochs(&isr),
                    part.assignment.clone(),
                )
            });
            // A throttled replica out of sync gets nothing while the leader's bucket is
            // empty: an empty answer, and its fetcher asks again.
            let throttled = !part.assignment.isr.contains(&r.replica_id)
                && self
                    .topics
                    .borrow()
                    .get(&tp.0)
                    .is_some_and(|t| t.config.leader_throttled_replicas.contains(tp.1, me));
            if throttled && !self.throttles.borrow_mut().leader.allows(now) {
                let nothing = ReadOut {
                    slice: None,
                    high_watermark: part.high_watermark(),
                    last_stable_offset: part.last_stable_offset(),
                    log_start_offset: part.log.log_start_offset(),
                    aborted: None,
                    diverging_epoch: None,
                };
                (nothing, expand)
            } else {
                let out = part.read_for_replica(offset, max_bytes)?;
                let bytes = out.slice.as_ref().map_or(0, |s| s.len as u64);
                self.stats
                    .replication_bytes_out
                    .set(self.stats.replication_bytes_out.get() + bytes);
                if throttled {
                    self.throttles.borrow_mut().leader.charge(bytes, now);
                    self.note_throttled(bytes);
                }
                (out, expand)
            }
        };
        if let Some((isr, with_epochs, a)) = expand {
            tracing::info!(topic = %tp.0, partition = tp.1, replica = r.replica_id, ?isr, "follower caught up: asking the controller to add it to the ISR");
            self.spawn_alter_isr(tp.clone(), a, with_epochs);
        }
        Ok(out)
    }

    /// Whether this broker's replica of `tp` is throttled on the follower side: named in the
    /// topic's `follower.replication.throttled.replicas` and out of sync.
    fn follower_throttled(&self, tp: &TopicPartition, p: &Partition) -> bool {
        let me = self.config.node_id;
        !p.assignment.isr.contains(&me)
            && self
                .topics
                .borrow()
                .get(&tp.0)
                .is_some_and(|t| t.config.follower_throttled_replicas.contains(tp.1, me))
    }

    /// Counts record bytes of throttled replicas that went through a throttle.
    fn note_throttled(&self, bytes: u64) {
        let c = &self.stats.replication_throttled_bytes;
        c.set(c.get() + bytes);
    }

    /// New throttle rates (the static flags, overridden by the dynamic broker configs).
    pub fn set_throttle_rates(&self, leader: Option<u64>, follower: Option<u64>) {
        let now = Instant::now();
        let mut t = self.throttles.borrow_mut();
        if t.leader.rate() != leader || t.follower.rate() != follower {
            tracing::info!(
                shard = self.id,
                ?leader,
                ?follower,
                "replication throttle rates (bytes/s)"
            );
        }
        t.leader.set_rate(leader, now);
        t.follower.set_rate(follower, now);
    }

    /// This shard's replication figures, for a scrape.
    pub fn replication_stats(&self) -> crate::metrics::Replication {
        let now = Instant::now();
        let mut r = crate::metrics::Replication {
            isr_shrinks: self.stats.isr_shrinks.get(),
            isr_expands: self.stats.isr_expands.get(),
            bytes_in: self.stats.replication_bytes_in.get(),
            bytes_out: self.stats.replication_bytes_out.get(),
            throttled_bytes: self.stats.replication_throttled_bytes.get(),
            ..Default::default()
        };
        for ((t, p), part) in self.partitions.borrow().iter() {
            match &part.role {
                Role::Offline => r.offline += 1,
                Role::Leader(l) => {
                    if part.assignment.isr.len() < part.assignment.replicas.len() {
                        r.under_replicated += 1;
                    }
                    let end = part.log_end_offset();
                    for (f, st) in &l.followers {
                        let lag = if st.fetch_offset < 0 {
                            end
                        } else {
                            end - st.fetch_offset
                        };
                        r.follower_lag.push((
                            t.clone(),
                            *p,
                            *f,
                            lag.max(0),
                            now.duration_since(st.last_caught_up).as_secs_f64(),
                        ));
                    }
                }
                _ => {}
            }
        }
        r.follower_lag
            .sort_by(|a, b| (&a.0, a.1, a.2).cmp(&(&b.0, b.1, b.2)));
        r
    }

    /// Asks the controller for an ISR change in the background; the partition's pending
    /// change is cleared when the change is applied (or here, when it failed).
    fn spawn_alter_isr(
        self: &Rc<Self>,
        tp: TopicPartition,
        a: crate::storage::catalog::PartitionAssignment,
        isr: Vec<(i32, i64)>,
    ) {
        let shard = self.clone();
        let isr_len = isr.len();
        glommio::spawn_local(async move {
            let call = super::calls::AlterPartition {
                topic: tp.0.clone(),
                partition: tp.1,
                leader_epoch: a.leader_epoch,
                partition_epoch: a.partition_epoch,
                new_isr: isr,
            };
            let result = shard
                .call(crate::placement::CONTROLLER_SHARD, call)
                .await
                .map_err(|_| KafkaError::NotController)
                .and_then(|r| r);
            match result {
                Ok(_) => {
                    let counter = if isr_len > a.isr.len() {
                        &shard.stats.isr_expands
                    } else {
                        &shard.stats.isr_shrinks
                    };
                    counter.set(counter.get() + 1);
                    shard.partition_assigned(&tp);
                }
                Err(e) => {
                    tracing::warn!(topic = %tp.0, partition = tp.1, error = %e, "ISR change refused");
                    if let Some(p) = shard.partitions.borrow_mut().get_mut(&tp) {
                        p.isr_change_failed();
                    }
                }
            }
        })
        .detach();
    }

    /// The leader's periodic check: followers that have not caught up for
    /// `replica.lag.time.max.ms` leave the ISR.
    pub fn shrink_isrs(self: &Rc<Self>) {
        let me = self.config.node_id;
        let lag = Duration::from_millis(self.config.replica_lag_time_max_ms);
        let now = Instant::now();
        let changes: Vec<_> = {
            let mut partitions = self.partitions.borrow_mut();
            partitions
                .iter_mut()
                .filter_map(|(tp, p)| {
                    let isr = p.isr_to_shrink(me, now, lag)?;
                    let with = p.isr_with_epochs(&isr);
                    Some((tp.clone(), p.assignment.clone(), isr, with))
                })
                .collect()
        };
        for (tp, a, isr, with) in changes {
            tracing::warn!(topic = %tp.0, partition = tp.1, ?isr, lag_ms = self.config.replica_lag_time_max_ms, "followers fell behind: asking the controller to shrink the ISR");
            self.spawn_alter_isr(tp, a, with);
        }
    }

    /// Replicas here that went offline (a write or sync that could not be undone poisons the
    /// log until a restart recovers it) are reported to the controller once, so they leave the
    /// ISR and lose the leadership to another in-sync replica rather than holding the
    /// partition until the lag time.
    pub fn report_offline_replicas(self: &Rc<Self>) {
        if self.config.cluster.is_none() {
            return;
        }
        let offline: Vec<TopicPartition> = {
            let partitions = self.partitions.borrow();
            let reported = self.offline_reported.borrow();
            partitions
                .iter()
                .filter(|(tp, p)| p.log.poisoned().is_some() && !reported.contains(*tp))
                .map(|(tp, _)| tp.clone())
                .collect()
        };
        for tp in offline {
            self.offline_reported.borrow_mut().insert(tp.clone());
            self.unfollow(&tp);
            let shard = self.clone();
            glommio::spawn_local(async move {
                let call = super::calls::ReportOffline {
                    topic: tp.0.clone(),
                    partition: tp.1,
                };
                let result = shard
                    .call(crate::placement::CONTROLLER_SHARD, call)
                    .await
                    .map_err(|_| KafkaError::NotController)
                    .and_then(|r| r);
                match result {
                    Ok(()) => tracing::error!(topic = %tp.0, partition = tp.1, "replica offline after a storage error: reported to the controller, which moved it out of the ISR and its leadership elsewhere; a restart recovers it"),
                    Err(e) => {
                        tracing::warn!(topic = %tp.0, partition = tp.1, error = %e, "could not report an offline replica; trying again");
                        shard.offline_reported.borrow_mut().remove(&tp);
                    }
                }
            })
            .detach();
        }
    }

    /// Writes this shard's high-watermark checkpoint if a high watermark moved since the last.
    pub async fn checkpoint_high_watermarks(&self, force: bool) {
        let entries: Vec<(TopicPartition, i64)> = {
            let partitions = self.partitions.borrow();
            let mut v: Vec<_> = partitions
                .iter()
                .filter(|(_, p)| !matches!(p.role, Role::Single))
                .map(|(tp, p)| (tp.clone(), p.high_watermark()))
                .collect();
            v.sort();
            v
        };
        if !force && *self.hw_written.borrow() == entries {
            return;
        }
        let path = checkpoint_path(&self.config.data_dir, self.id);
        let e2 = entries.clone();
        let written = glommio::executor()
            .spawn_blocking(move || write_checkpoint(&path, &e2))
            .await;
        match written {
            Ok(()) => *self.hw_written.borrow_mut() = entries,
            Err(e) => {
                tracing::error!(shard = self.id, error = %e, "cannot write the high-watermark checkpoint")
            }
        }
    }

    /// Builds the next Fetch of a fetcher: each partition from its fetch position (the synced
    /// end, or the log end for background-flush topics), with the epoch of its last batch.
    fn replica_fetch_request(
        &self,
        targets: &BTreeMap<TopicPartition, Target>,
        my_epoch: i64,
    ) -> FetchRequest {
        let partitions = self.partitions.borrow();
        let mut topics: BTreeMap<Uuid, Vec<FetchPartition>> = BTreeMap::new();
        let now = Instant::now();
        for (tp, t) in targets {
            let Some(p) = partitions.get(tp) else {
                continue;
            };
            // An offline partition (a failed write or flush) is not fetched for: its log end
            // may not be durable.
            if p.log.check_online().is_err() || p.log.poisoned().is_some() {
                continue;
            }
            // A throttled partition out of sync is left out while the follower's bucket is
            // empty; the others go on as before.
            if self.follower_throttled(tp, p) && !self.throttles.borrow_mut().follower.allows(now) {
                continue;
            }
            let last_epoch = p.log.leader_epochs().latest_epoch();
            topics.entry(t.topic_id).or_default().push(
                FetchPartition::default()
                    .with_partition(tp.1)
                    .with_current_leader_epoch(t.leader_epoch)
                    .with_fetch_offset(p.log_end_offset())
                    .with_last_fetched_epoch(last_epoch)
                    .with_log_start_offset(p.log.log_start_offset())
                    .with_partition_max_bytes(self.config.replica_fetch_max_bytes),
            );
        }
        FetchRequest::default()
            .with_replica_state(
                ReplicaState::default()
                    .with_replica_id(BrokerId(self.config.node_id))
                    .with_replica_epoch(my_epoch),
            )
            .with_max_wait_ms(
                i32::try_from(self.config.replica_fetch_wait_max_ms).unwrap_or(i32::MAX),
            )
            .with_min_bytes(1)
            .with_max_bytes(self.config.replica_fetch_response_max_bytes)
            .with_isolation_level(0)
            .with_session_id(0)
            .with_session_epoch(-1)
            .with_topics(
                topics
                    .into_iter()
                    .map(|(id, ps)| FetchTopic::default().with_topic_id(id).with_partitions(ps))
                    .collect(),
            )
    }

    /// Applies a leader's Fetch response to the followed partitions: truncations, appends,
    /// high watermarks. Returns the partitions to make durable (to their last appended
    /// offset) and the truncations to persist, and whether any partition wants a pause
    /// (an error the metadata will resolve).
    fn apply_replica_fetch(
        &self,
        leader: i32,
        sent: &BTreeMap<TopicPartition, Target>,
        resp: FetchResponse,
    ) -> (Vec<(TopicPartition, i64)>, Vec<TruncateJob>, bool) {
        let by_id: HashMap<Uuid, &str> = sent
            .iter()
            .map(|((t, _), target)| (target.topic_id, t.as_str()))
            .collect();
        let mut flush = Vec::new();
        let mut jobs = Vec::new();
        let mut pause = false;
        let mut partitions = self.partitions.borrow_mut();
        for t in resp.responses {
            let Some(name) = by_id.get(&t.topic_id) else {
                continue;
            };
            for pr in t.partitions {
                let tp = (name.to_string(), pr.partition_index);
                let Some(target) = sent.get(&tp) else {
                    continue;
                };
                let Some(part) = partitions.get_mut(&tp) else {
                    continue;
                };
                // The partition moved on while the Fetch was out (a new leader or epoch).
                if !matches!(part.role, Role::Follower { leader: l } if l == leader)
                    || part.leader_epoch() != target.leader_epoch
                {
                    continue;
                }
                let code = ErrorCode::from_code(pr.error_code);
                if !code.is_none() {
                    if code == ErrorCode::OFFSET_OUT_OF_RANGE
                        && part.log_end_offset() < pr.log_start_offset
                        && !self.flushing.borrow().contains_key(&tp)
                    {
                        // The leader deleted what this follower lacks: start over at its log
                        // start.
                        match part.log.truncate_fully_and_start_at(pr.log_start_offset) {
                            Ok(job) => {
                                tracing::warn!(topic = %tp.0, partition = tp.1, log_start_offset = pr.log_start_offset, "follower behind the leader's log start: log restarted there");
                                restate(part);
                                jobs.extend(job);
                            }
                            Err(e) => {
                                tracing::error!(topic = %tp.0, partition = tp.1, error = %e, "cannot restart the follower's log")
                            }
                        }
                    } else {
                        tracing::debug!(topic = %tp.0, partition = tp.1, leader, error_code = pr.error_code, "replica fetch answered with an error");
                        pause = true;
                    }
                    continue;
                }
                if pr.diverging_epoch.epoch >= 0 || pr.diverging_epoch.end_offset >= 0 {
                    // A flush taken before the cut would write the old log end back: the
                    // truncation waits for it (the next Fetch asks again).
                    if self.flushing.borrow().contains_key(&tp) {
                        pause = true;
                        continue;
                    }
                    let d = &pr.diverging_epoch;
                    let end = part.log_end_offset();
                    let (mine, my_end) = part.log.leader_epochs().end_offset_for(d.epoch, end);
                    let cut = if mine < 0 {
                        part.log.log_start_offset()
                    } else if mine == d.epoch {
                        my_end.min(d.end_offset)
                    } else {
                        my_end
                    }
                    .min(end);
                    match part.log.truncate_to(cut) {
                        Ok(job) => {
                            tracing::warn!(topic = %tp.0, partition = tp.1, leader, from = end, to = cut, leader_epoch = d.epoch, leader_end_offset = d.end_offset, "follower log diverged from the leader's: truncated");
                            restate(part);
                            jobs.extend(job);
                        }
                        Err(e) => {
                            tracing::error!(topic = %tp.0, partition = tp.1, error = %e, "cannot truncate a diverged follower log");
                            pause = true;
                        }
                    }
                    continue;
                }
                if let Some(records) = pr.records.as_ref().filter(|r| !r.is_empty()) {
                    if self.follower_throttled(&tp, part) {
                        let bytes = records.len() as u64;
                        self.throttles
                            .borrow_mut()
                            .follower
                            .charge(bytes, Instant::now());
                        self.note_throttled(bytes);
                    }
                    match append_fetched(part, records, &self.stats) {
                        Ok((Some(last), job)) => {
                            jobs.extend(job);
                            // Still below the leader's high watermark: this replica's fetch
                            // offset cannot count yet (the high watermark is already past it,
                            // and an ISR expansion needs it at the high watermark), so the
                            // catch-up goes on without a flush per Fetch. The Fetch that
                            // reaches the high watermark is preceded by a flush of everything.
                            if last + 1 >= pr.high_watermark {
                                flush.push((tp.clone(), last));
                            }
                        }
                        Ok((None, job)) => jobs.extend(job),
                        Err(e) => {
                            tracing::error!(topic = %tp.0, partition = tp.1, leader, error = %e, "cannot append the leader's batches");
                            pause = true;
                        }
                    }
                }
                part.follower_high_watermark(pr.high_watermark);
            }
        }
        (flush, jobs, pause)
    }
}

/// After a truncation: producer state and aborted-transaction index rebuilt for the new end,
/// high watermark capped.
fn restate(part: &mut Partition) {
    let end = part.log_end_offset();
    let dir = part.log.dir().to_path_buf();
    if let Err(e) = crate::storage::producers::remove_snapshots_above(&dir, end) {
        tracing::warn!(dir = %dir.display(), error = %e, "cannot remove producer snapshots past a truncation");
    }
    if let Err(e) = part.txn_index.truncate_to(end) {
        tracing::error!(dir = %dir.display(), error = %e, "cannot cut the aborted-transaction index at a truncation");
    }
    match crate::storage::producers::rebuild(&part.log) {
        Ok(rebuilt) => {
            // The index below the cut holds its markers' entries already.
            part.producers = rebuilt.state;
            part.producers_snapshot = rebuilt.snapshot;
        }
        Err(e) => {
            tracing::error!(dir = %dir.display(), error = %e, "cannot rebuild the producer state after a truncation")
        }
    }
    part.truncated();
}

/// Appends a leader's batches at this follower's log end (batches it has already are
/// skipped); replays them into the producer state and the aborted-transaction index. Returns
/// the last offset appended, and the truncation to make durable when an empty log had to
/// restart at the base of the leader's first batch (its log start lies inside that batch).
fn append_fetched(
    part: &mut Partition,
    records: &Bytes,
    stats: &super::ShardStats,
) -> Result<(Option<i64>, Option<TruncateJob>), KafkaError> {
    let end = part.log_end_offset();
    let batches: Vec<_> = crate::protocol::batch::split_fetched_records(records)?
        .into_iter()
        .filter(|b| b.header.last_offset() >= end)
        .collect();
    let Some(first) = batches.first() else {
        return Ok((None, None));
    };
    let mut job = None;
    if first.header.base_offset < end && part.log.log_start_offset() == end {
        job = part
            .log
            .truncate_fully_and_start_at(first.header.base_offset)?;
        restate(part);
    }
    let end = part.log_end_offset();
    // Past the end is a gap a clean made in a compacted leader's log: copied as it is.
    if first.header.base_offset < end {
        return Err(KafkaError::CorruptMessage(format!(
            "the leader's batch starts at {} but this log ends at {end}",
            first.header.base_offset
        )));
    }
    let appended = part.log.append_replicated(&batches)?;
    let bytes: u64 = batches.iter().map(|b| b.bytes.len() as u64).sum();
    stats
        .replication_bytes_in
        .set(stats.replication_bytes_in.get() + bytes);
    for b in &batches {
        let h = &b.header;
        if h.is_control() && h.producer_id >= 0 {
            // An abort marker ends its transaction in the aborted-transaction index, as on
            // the leader.
            let first_offset = part
                .producers
                .get(h.producer_id)
                .and_then(|e| e.txn_first_offset);
            let commit = crate::protocol::batch::control_is_commit(&b.bytes).unwrap_or(true);
            if let (Some(first_offset), false) = (first_offset, commit) {
                let entry = crate::storage::txnindex::AbortedTxn {
                    producer_id: h.producer_id,
                    first_offset,
                    last_offset: h.base_offset,
                    last_stable_offset: part.last_stable_offset(),
                };
                let segment = part.log.active_base_offset();
                match part.txn_index.append(segment, entry) {
                    Ok(sync) => part.txn_index_unsynced.push(sync),
                    Err(e) => {
                        tracing::error!(topic = %part.log.topic, partition = part.log.partition, error = %e, "cannot write the aborted-transaction index")
                    }
                }
            }
        }
        part.producers.replay(h);
    }
    part.update_stable();
    Ok((Some(appended.last_offset), job))
}

/// A fetcher's task: Fetch from the leader, apply, make durable, again, until stopped.
async fn run_fetcher(shard: Rc<Shard>, f: Rc<Fetcher>) {
    let mut conn: Option<super::peer::PeerStream> = None;
    let mut correlation = 0i32;
    let mut backoff = BACKOFF_MIN_MS;
    let wait = Duration::from_millis(shard.config.replica_fetch_wait_max_ms);
    // A response later than the leader's wait plus this is taken as a dead connection.
    let grace = Duration::from_millis(
        shard
            .config
            .cluster
            .as_ref()
            .map_or(3000, |c| c.session_timeout_ms)
            .max(1000),
    );
    while !f.stopped.get() && !shard.stopping.get() {
        let targets = f.targets.borrow().clone();
        let view = shard.cluster();
        let endpoint = view.as_ref().and_then(|v| v.broker(f.leader).cloned());
        let my_epoch = view
            .as_ref()
            .and_then(|v| v.broker(shard.config.node_id).map(|b| b.epoch))
            .unwrap_or(-1);
        let Some(endpoint) = endpoint.filter(|_| !targets.is_empty()) else {
            glommio::timer::sleep(Duration::from_millis(backoff)).await;
            backoff = (backoff * 2).min(BACKOFF_MAX_MS);
            continue;
        };
        let req = shard.replica_fetch_request(&targets, my_epoch);
        if req.topics.is_empty() {
            // Every partition is throttled (or offline) for now: ask again once the bucket
            // had time to refill.
            glommio::timer::sleep(Duration::from_millis(THROTTLED_WAIT_MS)).await;
            continue;
        }
        correlation = correlation.wrapping_add(1);
        let exchange = async {
            if conn.is_none() {
                let addr = format!("{}:{}", endpoint.host, endpoint.port);
                conn = Some(super::peer::connect_broker(&shard.config, &addr).await?);
            }
            let Some(s) = conn.as_mut() else {
                return Err("no connection".to_string());
            };
            let mut out = BytesMut::new();
            crate::client::frame::encode_request(
                &mut out,
                ApiKey::Fetch,
                REPLICA_FETCH_VERSION,
                correlation,
                CLIENT_ID,
                &req,
            )?;
            s.write_all(&out).await.map_err(|e| e.to_string())?;
            let mut prefix = [0u8; 4];
            s.read_exact(&mut prefix).await.map_err(|e| e.to_string())?;
            let size = usize::try_from(i32::from_be_bytes(prefix))
                .map_err(|_| "negative frame size".to_string())?;
            let mut body = vec![0u8; size];
            s.read_exact(&mut body).await.map_err(|e| e.to_string())?;
            let (corr, resp) = crate::client::frame::decode_response::<FetchResponse>(
                Bytes::from(body),
                ApiKey::Fetch,
                REPLICA_FETCH_VERSION,
            )?;
            if corr != correlation {
                return Err(format!("correlation id {corr}, expected {correlation}"));
            }
            Ok(resp)
        };
        let answered = futures_lite::future::or(async { Some(exchange.await) }, async {
            glommio::timer::sleep(wait + grace).await;
            None
        })
        .await;
        let resp = match answered {
            Some(Ok(resp)) => resp,
            Some(Err(e)) => {
                tracing::debug!(shard = shard.id, leader = f.leader, error = %e, "replica fetch failed");
                conn = None;
                glommio::timer::sleep(Duration::from_millis(backoff)).await;
                backoff = (backoff * 2).min(BACKOFF_MAX_MS);
                continue;
            }
            None => {
                tracing::warn!(
                    shard = shard.id,
                    leader = f.leader,
                    "replica fetch got no answer in time: reconnecting"
                );
                conn = None;
                continue;
            }
        };
        if resp.error_code != 0 {
            tracing::debug!(
                leader = f.leader,
                error_code = resp.error_code,
                "replica fetch refused"
            );
            glommio::timer::sleep(Duration::from_millis(backoff)).await;
            backoff = (backoff * 2).min(BACKOFF_MAX_MS);
            continue;
        }
        let (flush, jobs, pause) = shard.apply_replica_fetch(f.leader, &targets, resp);
        if !jobs.is_empty() {
            let done = glommio::executor()
                .spawn_blocking(move || jobs.iter().try_for_each(TruncateJob::run))
                .await;
            if let Err(e) = done {
                tracing::error!(shard = shard.id, error = %e, "cannot make a truncation durable");
            }
        }
        // One group flush per partition, all at once; the next Fetch asks from the synced
        // ends (a partition whose flush failed is offline and is not asked for).
        let flushes = flush
            .into_iter()
            .filter(|(tp, _)| shard.synced_replication(&tp.0))
            .map(|(tp, last)| {
                let shard = shard.clone();
                async move {
                    if let Err(e) = shard.flush_to(tp.clone(), last).await {
                        tracing::error!(topic = %tp.0, partition = tp.1, error = %e, "follower flush failed");
                    }
                }
            });
        futures_util::future::join_all(flushes).await;
        if pause {
            glommio::timer::sleep(Duration::from_millis(backoff)).await;
            backoff = (backoff * 2).min(BACKOFF_MAX_MS);
        } else {
            backoff = BACKOFF_MIN_MS;
        }
    }
}
