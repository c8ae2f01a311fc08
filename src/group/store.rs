//! Committed offsets and group state of the groups one shard coordinates, kept in its
//! partitions of the internal `__consumer_offsets` log.
//!
//! Lives on: one shard. A group belongs to partition `abs(hashCode(group)) % N` of
//! `__consumer_offsets` (`placement::offsets_partition`, Kafka's placement), and that
//! partition's owner shard (`placement::partition_owner`) is the group's coordinator, while
//! this broker leads the partition (always, on one node).
//!
//! # Storage
//!
//! Each partition is an ordinary partition of the shard (`<data>/__consumer_offsets-<p>/`,
//! replicated like any topic's in a cluster), made of uncompressed magic-2 record batches
//! whose records carry the typed keys and values of [`super::records`]. The store holds no
//! log: it reaches one through [`CoordinatorLogs`], which lets it write only into a partition
//! this shard leads, stamped with the partition's leader epoch. A mutation (commit, delete,
//! expiry, a group's new generation) encodes its records as one append, applies them to the
//! in-memory table, and hands back a [`SyncJob`]: the caller answers only once
//! [`CoordinatorLogs::durable`] says the records are fdatasync'd on every in-sync replica, so
//! an answered commit survives `kill -9` of any of them. A failed fdatasync takes the
//! partition offline, as for any partition: its groups answer COORDINATOR_NOT_AVAILABLE to
//! writes until a restart recovers the log from disk.
//!
//! # Loading ([`OffsetsLog::load_partition`], [`OffsetsLog::unload_partition`])
//!
//! A store starts empty. When its shard becomes the leader of a partition (on one node: at
//! start, before the shard serves), the partition is read from its log start to its end,
//! record by record, into the table, in one go, so a group is never seen half-loaded. A
//! record that cannot be decoded (an unknown version, say) fails the load: skipping it would
//! silently lose a commit. When the shard stops leading it, the partition's groups are
//! dropped, so nothing of it is served or written from here.
//!
//! # Bounding the replay
//!
//! Until log compaction (its own issue) cleans the log, the store keeps it short itself:
//! when a partition holds more than `max(2 × live records, COMPACT_MIN_RECORDS)` records
//! since its log start, the live records of that partition are appended again as a fresh
//! run of batches, and the log start is moved to the first of them (DeleteRecords'
//! mechanism: whole segments below it are deleted, the new start is persisted). The job
//! fdatasyncs the new records *before* it persists the new log start, so a crash leaves
//! either the old start (replay reads the old records and then the same live records again,
//! which changes nothing) or the new one over durable records. Replay therefore reads at most
//! about twice the live records; the disk keeps at most one segment
//! ([`OFFSETS_SEGMENT_BYTES`]) of dead records beyond that.
//!
//! # Expiry (`offsets.retention.minutes`)
//!
//! Like Kafka ≥ 2.1: offsets of a group that has members never expire; for an empty group an
//! offset expires when `now - max(commit timestamp, time the group became empty) >=
//! retention`, or at its explicit expire timestamp (OffsetCommit v1 to v4). When the group
//! became empty is the current-state timestamp of its GroupMetadata record with no members,
//! which the retention sweep ([`OffsetsLog::expire`]) writes the first time it sees the
//! group empty (so the time is late by at most one sweep, which only keeps offsets longer).
//! An empty group whose offsets are all gone is deleted with tombstones.

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::io;
use std::path::{Path, PathBuf};
use std::rc::Rc;

use bytes::Bytes;
use kafka_protocol::records::RecordBatchDecoder;

use crate::placement::{OFFSETS_TOPIC, offsets_partition, partition_owner};
use crate::protocol::batch::{self, ProducedBatch};
use crate::storage::io::read_at_most;
use crate::storage::log::{Housekeeping, LogConfig, PartitionLog};

use super::consumer::StoredConsumerGroup;
use super::consumer_store::ConsumerEntry;
use super::logs::{CoordinatorLogs, DirLogs};
use super::offsets::CommittedOffset;
use super::records::{GroupMetadata, GroupRecord};

/// Compaction is not worth it below this many records in a partition.
pub const COMPACT_MIN_RECORDS: u64 = 1024;

/// Segment size of `__consumer_offsets` partitions: small, so that the rewrite that bounds
/// the replay also frees the disk soon (Kafka uses 100 MiB with a real log cleaner).
pub const OFFSETS_SEGMENT_BYTES: u64 = 16 * 1024 * 1024;

/// Records per batch: bounds a batch of a large rewrite to a few hundred KiB.
const RECORDS_PER_BATCH: usize = 512;

/// Bytes read per step of the replay.
const REPLAY_READ_BYTES: usize = 1 << 20;

/// The file that fixes the partition count once the log exists.
const PARTITIONS_FILE: &str = "__consumer_offsets.partitions";

/// How a partition of `__consumer_offsets` keeps its log (whoever opens it: the shard, or
/// [`DirLogs`]).
pub const LOG_CONFIG: LogConfig = LogConfig {
    segment_bytes: OFFSETS_SEGMENT_BYTES,
    segment_ms: None,
    index_interval_bytes: 4096,
    ..LogConfig::BASE
};

/// The partition count of `__consumer_offsets` in `data_dir`: the one it was created with,
/// or `configured` for a new log (then written down, durably, before any partition exists).
/// A configured count that differs from the stored one is ignored with a warning, as Kafka
/// ignores `offsets.topic.num.partitions` once the topic exists: another count would move
/// groups away from their offsets.
pub fn resolve_num_partitions(data_dir: &Path, configured: i32) -> io::Result<i32> {
    let path = data_dir.join(PARTITIONS_FILE);
    match fs::read_to_string(&path) {
        Ok(s) => {
            let stored: i32 = s.trim().parse().map_err(|_| {
                io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("{} does not hold a partition count: {s:?}", path.display()),
                )
            })?;
            if stored != configured {
                tracing::warn!(
                    stored,
                    configured,
                    "--offsets-topic-num-partitions differs from the existing __consumer_offsets log; keeping its count"
                );
            }
            Ok(stored)
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            fs::create_dir_all(data_dir)?;
            let tmp = data_dir.join(format!("{PARTITIONS_FILE}.tmp"));
            fs::write(&tmp, configured.to_string())?;
            File::open(&tmp)?.sync_all()?;
            fs::rename(&tmp, &path)?;
            File::open(data_dir)?.sync_all()?;
            Ok(configured)
        }
        Err(e) => Err(e),
    }
}

/// One group's committed offsets, topic by topic, and its last stored metadata.
#[derive(Debug, Default)]
struct GroupEntry {
    topics: BTreeMap<String, BTreeMap<i32, CommittedOffset>>,
    metadata: Option<GroupMetadata>,
    /// A consumer-protocol group's records.
    consumer: ConsumerEntry,
}

impl GroupEntry {
    /// Live records this entry stands for in its partition.
    fn records(&self) -> u64 {
        self.topics.values().map(|p| p.len() as u64).sum::<u64>()
            + u64::from(self.metadata.is_some())
            + self.consumer.records()
    }

    /// When the group became empty, if its stored state says it has no members.
    fn empty_since_ms(&self) -> Option<i64> {
        if self.consumer.has_members() {
            return None;
        }
        self.metadata
            .as_ref()
            .filter(|m| m.members.is_empty())
            .map(|m| m.current_state_timestamp_ms)
    }
}

/// One loaded partition: its record counts (live vs. since the log start). Its log is the
/// shard's ([`CoordinatorLogs`]).
#[derive(Debug)]
struct OwnedPartition {
    live: u64,
    stored: u64,
}

/// What makes a mutation acknowledged: every offset up to `last` of the partition durable
/// on every in-sync replica ([`CoordinatorLogs::durable`]), and after a rewrite, then, the
/// move of its log start (blocking: run it on the blocking pool).
#[derive(Debug)]
pub struct SyncJob {
    pub partition: i32,
    pub last: i64,
    pub housekeeping: Option<Housekeeping>,
}

/// Runs a rewrite's log-start move. A failure is logged: the records are durable, only the
/// log start did not move, so the next replay reads more than it needs to, and the next
/// rewrite tries again.
pub fn run_housekeeping(partition: i32, h: Housekeeping) {
    if let Err(e) = h.run() {
        tracing::warn!(partition, error = %e, "__consumer_offsets: could not move the log start after a rewrite");
    }
}

/// The committed offsets and group state of every group one shard coordinates.
pub struct OffsetsLog {
    num_partitions: i32,
    /// Where the partitions' logs are.
    logs: Rc<dyn CoordinatorLogs>,
    /// Transactional offset commits (TxnOffsetCommit) not yet committed or aborted by their
    /// transaction's marker, by producer id: (group, topic, partition, offset). They are in the
    /// log as that producer's transactional batches, and become committed offsets when the
    /// commit marker is written to the group's partition ([`OffsetsLog::txn_marker`]).
    pending: BTreeMap<i64, Vec<(String, String, i32, CommittedOffset)>>,
    partitions: BTreeMap<i32, OwnedPartition>,
    groups: BTreeMap<String, GroupEntry>,
    /// Offsets in `groups`.
    live_offsets: u64,
    compact_min_records: u64,
}

fn other(e: impl std::fmt::Display) -> io::Error {
    io::Error::other(e.to_string())
}

impl OffsetsLog {
    /// A store that holds no partition yet ([`OffsetsLog::load_partition`] brings each in).
    pub fn new(num_partitions: i32, logs: Rc<dyn CoordinatorLogs>) -> OffsetsLog {
        OffsetsLog {
            num_partitions,
            logs,
            pending: BTreeMap::new(),
            partitions: BTreeMap::new(),
            groups: BTreeMap::new(),
            live_offsets: 0,
            compact_min_records: COMPACT_MIN_RECORDS,
        }
    }

    /// Partitions of `__consumer_offsets`.
    pub fn num_partitions(&self) -> i32 {
        self.num_partitions
    }

    /// Where the partitions' logs are.
    pub fn logs(&self) -> Rc<dyn CoordinatorLogs> {
        self.logs.clone()
    }

    /// Whether partition `p` is loaded: its groups are served here.
    pub fn is_loaded(&self, p: i32) -> bool {
        self.partitions.contains_key(&p)
    }

    /// Replays partition `p` from its log start to its end into the tables (a no-op when it
    /// is loaded). The log must be one this shard leads.
    pub fn load_partition(&mut self, p: i32) -> io::Result<()> {
        if self.partitions.contains_key(&p) {
            return Ok(());
        }
        let logs = self.logs.clone();
        let mut records = 0;
        logs.with_log(OFFSETS_TOPIC, p, &mut |log, _| {
            records = Self::replay(log, |rec| match rec {
                Replayed::Plain(rec) => {
                    self.apply(rec);
                }
                Replayed::Txn(pid, rec) => self.stage(pid, rec),
                Replayed::Marker(pid, commit) => {
                    for rec in self.end_pending(p, pid, commit) {
                        self.apply(rec);
                    }
                }
            })?;
            Ok(())
        })?;
        let n = self.num_partitions;
        let live = self
            .groups
            .iter()
            .filter(|(g, _)| offsets_partition(g, n) == p)
            .map(|(_, e)| e.records())
            .sum();
        self.partitions.insert(
            p,
            OwnedPartition {
                live,
                stored: records,
            },
        );
        Ok(())
    }

    /// Forgets partition `p`: its groups' offsets, state and staged transactional commits.
    /// Nothing of it can be written from here until it is loaded again. Returns the groups
    /// that were dropped.
    pub fn unload_partition(&mut self, p: i32) -> Vec<String> {
        let n = self.num_partitions;
        self.partitions.remove(&p);
        let gone: Vec<String> = self
            .groups
            .keys()
            .filter(|g| offsets_partition(g, n) == p)
            .cloned()
            .collect();
        for g in &gone {
            if let Some(e) = self.groups.remove(g) {
                let offsets: u64 = e.topics.values().map(|t| t.len() as u64).sum();
                self.live_offsets -= offsets;
            }
        }
        for staged in self.pending.values_mut() {
            staged.retain(|(g, ..)| offsets_partition(g, n) != p);
        }
        self.pending.retain(|_, staged| !staged.is_empty());
        gone
    }

    /// Opens and replays the partitions of `__consumer_offsets` that `shard` owns, straight
    /// from the data dir ([`DirLogs`]: tests and tools).
    pub fn open(
        data_dir: &Path,
        shard: usize,
        shards: usize,
        num_partitions: i32,
        recover: bool,
    ) -> io::Result<OffsetsLog> {
        let owned =
            (0..num_partitions).filter(|p| partition_owner(OFFSETS_TOPIC, *p, shards) == shard);
        Self::open_partitions(data_dir, owned, num_partitions, recover)
    }

    /// Opens and replays the given partitions (all of them, for the migration).
    pub fn open_partitions(
        data_dir: &Path,
        partitions: impl Iterator<Item = i32>,
        num_partitions: i32,
        recover: bool,
    ) -> io::Result<OffsetsLog> {
        let logs = Rc::new(DirLogs::new(data_dir));
        let partitions: Vec<i32> = partitions.collect();
        for p in &partitions {
            logs.open(OFFSETS_TOPIC, *p, LOG_CONFIG, recover)?;
        }
        let mut store = OffsetsLog::new(num_partitions, logs);
        for p in partitions {
            store.load_partition(p)?;
        }
        Ok(store)
    }

    /// Makes a job's records durable and runs its housekeeping, blocking the thread: for
    /// [`DirLogs`] stores (the migration, tests). A shard's coordinator awaits
    /// [`CoordinatorLogs::durable`] instead.
    pub fn sync_blocking(&self, job: SyncJob) -> io::Result<()> {
        futures_lite::future::block_on(self.logs.durable(OFFSETS_TOPIC, job.partition, job.last))?;
        if let Some(h) = job.housekeeping {
            run_housekeeping(job.partition, h);
        }
        Ok(())
    }

    /// Reads a partition from its log start to its end; returns the records read.
    fn replay(log: &PartitionLog, mut apply: impl FnMut(Replayed)) -> io::Result<u64> {
        let mut offset = log.log_start_offset();
        // The coordinator replays everything its log holds (it is the only writer).
        let end = log.log_end_offset();
        let mut records = 0;
        while offset < end {
            let Some(slice) = log.read(offset, REPLAY_READ_BYTES, end).map_err(other)? else {
                break;
            };
            let mut buf = Bytes::from(read_at_most(&slice.file, slice.pos, slice.len)?);
            let sets = RecordBatchDecoder::decode_all(&mut buf).map_err(|e| {
                other(format!(
                    "__consumer_offsets-{}: unreadable batch at offset {offset}: {e}",
                    log.partition
                ))
            })?;
            let mut next = offset;
            for r in sets.into_iter().flat_map(|s| s.records) {
                next = next.max(r.offset + 1);
                if r.offset < offset {
                    continue;
                }
                let key = r.key.ok_or_else(|| {
                    other(format!(
                        "__consumer_offsets-{}: record {} has no key",
                        log.partition, r.offset
                    ))
                })?;
                if r.control {
                    // A transaction marker: key version 0, type 0 (abort) or 1 (commit).
                    let commit = key.len() >= 4 && key[2..4] == [0, 1];
                    apply(Replayed::Marker(r.producer_id, commit));
                } else if r.transactional {
                    apply(Replayed::Txn(
                        r.producer_id,
                        GroupRecord::decode(&key, r.value.as_deref())?,
                    ));
                } else {
                    apply(Replayed::Plain(GroupRecord::decode(
                        &key,
                        r.value.as_deref(),
                    )?));
                }
                records += 1;
            }
            if next <= offset {
                return Err(other(format!(
                    "__consumer_offsets-{}: replay made no progress at offset {offset}",
                    log.partition
                )));
            }
            offset = next;
        }
        Ok(records)
    }

    /// Stages a transactional offset commit record of producer `pid`.
    fn stage(&mut self, pid: i64, rec: GroupRecord) {
        if let GroupRecord::OffsetCommit {
            group,
            topic,
            partition,
            value: Some(v),
        } = rec
        {
            self.pending
                .entry(pid)
                .or_default()
                .push((group, topic, partition, v));
        }
    }

    /// Takes producer `pid`'s staged commits of the groups in partition `p`: as records to
    /// apply when `commit`, dropped otherwise.
    fn end_pending(&mut self, p: i32, pid: i64, commit: bool) -> Vec<GroupRecord> {
        let n = self.num_partitions;
        let Some(staged) = self.pending.get_mut(&pid) else {
            return Vec::new();
        };
        let (mine, rest): (Vec<_>, Vec<_>) = std::mem::take(staged)
            .into_iter()
            .partition(|(g, ..)| offsets_partition(g, n) == p);
        if rest.is_empty() {
            self.pending.remove(&pid);
        } else {
            *staged = rest;
        }
        if !commit {
            return Vec::new();
        }
        mine.into_iter()
            .map(|(group, topic, partition, v)| GroupRecord::OffsetCommit {
                group,
                topic,
                partition,
                value: Some(v),
            })
            .collect()
    }

    /// Whether a transactional commit of `group`'s `topic`-`partition` awaits its marker
    /// (OffsetFetch with require_stable answers UNSTABLE_OFFSET_COMMIT for it).
    pub fn has_pending(&self, group: &str, topic: &str, partition: i32) -> bool {
        self.pending
            .values()
            .flatten()
            .any(|(g, t, p, _)| g == group && t == topic && *p == partition)
    }

    /// TxnOffsetCommit: writes `group`'s offsets as producer `pid`'s transactional batch; they
    /// are staged, not committed, until the transaction's marker (see [`Self::txn_marker`]).
    /// Answer only once the job's records are durable.
    pub fn txn_commit<T: AsRef<str>>(
        &mut self,
        group: &str,
        (pid, epoch): (i64, i16),
        entries: &[(T, i32, CommittedOffset)],
        now_ms: i64,
    ) -> io::Result<SyncJob> {
        let p = self.partition_of(group);
        let records: Vec<GroupRecord> = entries
            .iter()
            .map(|(topic, partition, value)| GroupRecord::OffsetCommit {
                group: group.to_string(),
                topic: topic.as_ref().to_string(),
                partition: *partition,
                value: Some(value.clone()),
            })
            .collect();
        let last = self.write(p, group, &records, now_ms, Some((pid, epoch)))?;
        if let Some(part) = self.partitions.get_mut(&p) {
            part.stored += records.len() as u64;
        }
        for r in records {
            self.stage(pid, r);
        }
        Ok(SyncJob {
            partition: p,
            last,
            housekeeping: None,
        })
    }

    /// Appends `records` to loaded partition `p` with one write, stamped with the partition's
    /// leader epoch (as producer `txn`'s transactional batches when given); returns the last
    /// offset written. Refused when `p` is not loaded here or this shard does not lead it.
    fn write(
        &self,
        p: i32,
        group: &str,
        records: &[GroupRecord],
        now_ms: i64,
        txn: Option<(i64, i16)>,
    ) -> io::Result<i64> {
        if !self.partitions.contains_key(&p) {
            return Err(other(format!(
                "__consumer_offsets-{p} (group {group}) is not loaded on this shard"
            )));
        }
        let mut last = -1;
        self.logs.with_log(OFFSETS_TOPIC, p, &mut |log, epoch| {
            write_records_as(log, records, now_ms, txn, epoch)?;
            last = log.log_end_offset() - 1;
            Ok(())
        })?;
        Ok(last)
    }

    /// A transaction marker for partition `p`: appends the control batch, then makes producer
    /// `pid`'s staged commits of the groups in `p` committed offsets (commit) or drops them
    /// (abort).
    pub fn txn_marker(
        &mut self,
        p: i32,
        (pid, epoch): (i64, i16),
        commit: bool,
        now_ms: i64,
    ) -> io::Result<SyncJob> {
        if !self.partitions.contains_key(&p) {
            return Err(other(format!(
                "__consumer_offsets-{p} is not loaded on this shard"
            )));
        }
        let mut last = -1;
        self.logs
            .with_log(OFFSETS_TOPIC, p, &mut |log, leader_epoch| {
                let marker = batch::control_batch(pid, epoch, commit, 0, now_ms);
                let batches = batch::split_produce_records(&Bytes::from(marker), usize::MAX)
                    .map_err(other)?;
                log.append(&batches, leader_epoch, None, now_ms)
                    .map_err(other)?;
                last = log.log_end_offset() - 1;
                Ok(())
            })?;
        let mut delta = 0;
        for rec in self.end_pending(p, pid, commit) {
            delta += self.apply(rec);
        }
        if let Some(part) = self.partitions.get_mut(&p) {
            part.stored += 1;
            part.live = part.live.saturating_add_signed(delta);
        }
        Ok(SyncJob {
            partition: p,
            last,
            housekeeping: None,
        })
    }

    /// Applies a record to the table (not to the partition counts); returns how the live
    /// records of the group's partition changed.
    fn apply(&mut self, rec: GroupRecord) -> i64 {
        let group = rec.group().to_string();
        let entry = self.groups.entry(group.clone()).or_default();
        let before = entry.records() as i64;
        match rec {
            GroupRecord::OffsetCommit {
                topic,
                partition,
                value,
                ..
            } => match value {
                Some(v) => {
                    if entry
                        .topics
                        .entry(topic)
                        .or_default()
                        .insert(partition, v)
                        .is_none()
                    {
                        self.live_offsets += 1;
                    }
                }
                None => {
                    if let Some(parts) = entry.topics.get_mut(&topic) {
                        if parts.remove(&partition).is_some() {
                            self.live_offsets -= 1;
                        }
                        if parts.is_empty() {
                            entry.topics.remove(&topic);
                        }
                    }
                }
            },
            GroupRecord::GroupMetadata { value, .. } => entry.metadata = value,
            GroupRecord::Consumer(c) => entry.consumer.apply(c),
        }
        let after = entry.records() as i64;
        if after == 0 {
            self.groups.remove(&group);
        }
        after - before
    }

    /// The partition of `group`.
    pub fn partition_of(&self, group: &str) -> i32 {
        offsets_partition(group, self.num_partitions)
    }

    /// Writes `records` (all of one group) to the group's partition with one append, then
    /// applies them; rewrites the partition when dead records dominate. Answer the request
    /// only once the returned job's records are durable. On error
    /// nothing changed, in memory or on disk.
    fn append(
        &mut self,
        group: &str,
        records: Vec<GroupRecord>,
        now_ms: i64,
    ) -> io::Result<SyncJob> {
        let p = self.partition_of(group);
        debug_assert!(records.iter().all(|r| r.group() == group));
        let mut last = self.write(p, group, &records, now_ms, None)?;
        if let Some(part) = self.partitions.get_mut(&p) {
            part.stored += records.len() as u64;
        }
        let mut delta = 0;
        for r in records {
            delta += self.apply(r);
        }
        let mut housekeeping = None;
        if let Some(part) = self.partitions.get_mut(&p) {
            part.live = part.live.saturating_add_signed(delta);
        }
        // A rewrite would move the log start past staged transactional commits, which are
        // not live records yet: it waits until no transaction is pending.
        if self.pending.is_empty()
            && self
                .partitions
                .get(&p)
                .is_some_and(|part| part.stored > (2 * part.live).max(self.compact_min_records))
            && let Some((h, end)) = self.rewrite(p, now_ms)
        {
            housekeeping = h;
            last = end;
        }
        Ok(SyncJob {
            partition: p,
            last,
            housekeeping,
        })
    }

    /// Appends partition `p`'s live records again and moves its log start to them (see the
    /// module doc). A failure is logged and changes nothing that matters: the next mutation
    /// tries again. Returns the log-start move and the last offset written.
    fn rewrite(&mut self, p: i32, now_ms: i64) -> Option<(Option<Housekeeping>, i64)> {
        let n = self.num_partitions;
        let live: Vec<GroupRecord> = self
            .groups
            .iter()
            .filter(|(g, _)| offsets_partition(g, n) == p)
            .flat_map(|(g, e)| live_records(g, e))
            .collect();
        if live.is_empty() || !self.partitions.contains_key(&p) {
            return None;
        }
        let mut moved: Option<(Option<Housekeeping>, i64)> = None;
        let written = self.logs.with_log(OFFSETS_TOPIC, p, &mut |log, epoch| {
            let appended = write_records_as(log, &live, now_ms, None, epoch)?;
            let last = log.log_end_offset() - 1;
            let job = match log.delete_records(appended) {
                Ok((_, job)) => job,
                Err(e) => {
                    tracing::warn!(partition = p, error = %e, "__consumer_offsets: could not move the log start");
                    None
                }
            };
            moved = Some((job, last));
            Ok(())
        });
        if let Err(e) = written {
            tracing::warn!(partition = p, error = %e, "__consumer_offsets: rewrite failed");
            return None;
        }
        let part = self.partitions.get_mut(&p)?;
        let before = part.stored;
        part.stored = live.len() as u64;
        tracing::info!(
            partition = p,
            records_before = before,
            live = live.len(),
            "__consumer_offsets: live records rewritten, log start moved past the dead ones"
        );
        moved
    }

    /// Stores `group`'s offsets for each `(topic, partition, offset)`.
    pub fn commit<T: AsRef<str>>(
        &mut self,
        group: &str,
        entries: &[(T, i32, CommittedOffset)],
        now_ms: i64,
    ) -> io::Result<SyncJob> {
        let records = entries
            .iter()
            .map(|(topic, partition, value)| GroupRecord::OffsetCommit {
                group: group.to_string(),
                topic: topic.as_ref().to_string(),
                partition: *partition,
                value: Some(value.clone()),
            })
            .collect();
        self.append(group, records, now_ms)
    }

    /// Stores a group's state (a completed generation, or that it became empty).
    pub fn store_group(
        &mut self,
        group: &str,
        metadata: GroupMetadata,
        now_ms: i64,
    ) -> io::Result<SyncJob> {
        let record = GroupRecord::GroupMetadata {
            group: group.to_string(),
            value: Some(metadata),
        };
        self.append(group, vec![record], now_ms)
    }

    /// Stores a consumer group's state: the records whose value changed, and a tombstone
    /// for a classic group's state the group replaced (a converted empty classic group).
    /// None when nothing changed.
    pub fn store_consumer_group(
        &mut self,
        group: &str,
        stored: &StoredConsumerGroup,
        now_ms: i64,
    ) -> io::Result<Option<SyncJob>> {
        let want = ConsumerEntry::of(stored);
        let (mut records, classic) = match self.groups.get(group) {
            Some(e) => (e.consumer.diff(group, &want), e.metadata.is_some()),
            None => (ConsumerEntry::default().diff(group, &want), false),
        };
        let mut records: Vec<GroupRecord> = records.drain(..).map(GroupRecord::Consumer).collect();
        if classic {
            records.push(GroupRecord::GroupMetadata {
                group: group.to_string(),
                value: None,
            });
        }
        if records.is_empty() {
            return Ok(None);
        }
        self.append(group, records, now_ms).map(Some)
    }

    /// Tombstones for a consumer group's records (its offsets stay): an empty consumer group
    /// that becomes a classic group. None when none are stored.
    pub fn delete_consumer_records(
        &mut self,
        group: &str,
        now_ms: i64,
    ) -> io::Result<Option<SyncJob>> {
        let records: Vec<GroupRecord> = match self.groups.get(group) {
            Some(e) => e
                .consumer
                .tombstones(group)
                .into_iter()
                .map(GroupRecord::Consumer)
                .collect(),
            None => Vec::new(),
        };
        if records.is_empty() {
            return Ok(None);
        }
        self.append(group, records, now_ms).map(Some)
    }

    /// Every consumer group's stored state, to restore the groups at start.
    pub fn consumer_groups(&self) -> Vec<(String, StoredConsumerGroup)> {
        self.groups
            .iter()
            .filter_map(|(g, e)| e.consumer.restore().map(|s| (g.clone(), s)))
            .collect()
    }

    /// The committed offset of one partition.
    pub fn fetch(&self, group: &str, topic: &str, partition: i32) -> Option<&CommittedOffset> {
        self.groups.get(group)?.topics.get(topic)?.get(&partition)
    }

    /// Every committed offset of `group`, by topic then partition.
    pub fn group_offsets<'a>(
        &'a self,
        group: &str,
    ) -> impl Iterator<Item = (&'a str, i32, &'a CommittedOffset)> + use<'a> {
        self.groups
            .get(group)
            .into_iter()
            .flat_map(|g| g.topics.iter())
            .flat_map(|(topic, parts)| parts.iter().map(move |(p, v)| (topic.as_str(), *p, v)))
    }

    /// The groups that have committed offsets, sorted.
    pub fn groups(&self) -> Vec<String> {
        self.groups
            .iter()
            .filter(|(_, e)| !e.topics.is_empty())
            .map(|(g, _)| g.clone())
            .collect()
    }

    /// Whether `group` has any committed offset.
    pub fn has_group(&self, group: &str) -> bool {
        self.groups.get(group).is_some_and(|e| !e.topics.is_empty())
    }

    /// Every group's stored state, to restore the groups at start.
    pub fn group_metadata(&self) -> impl Iterator<Item = (&str, &GroupMetadata)> {
        self.groups
            .iter()
            .filter_map(|(g, e)| e.metadata.as_ref().map(|m| (g.as_str(), m)))
    }

    /// When the stored state says `group` became empty.
    pub fn group_empty_since(&self, group: &str) -> Option<i64> {
        self.groups.get(group)?.empty_since_ms()
    }

    /// Live offsets across all groups.
    pub fn live_offsets(&self) -> u64 {
        self.live_offsets
    }

    /// Records replay would read now, over all owned partitions.
    pub fn stored_records(&self) -> u64 {
        self.partitions.values().map(|p| p.stored).sum()
    }

    /// OffsetDelete: tombstones for these partitions' offsets of `group`. None when none had
    /// one (nothing to write).
    pub fn delete_partitions<T: AsRef<str>>(
        &mut self,
        group: &str,
        partitions: &[(T, i32)],
        now_ms: i64,
    ) -> io::Result<Option<SyncJob>> {
        let records: Vec<GroupRecord> = partitions
            .iter()
            .filter(|(t, p)| self.fetch(group, t.as_ref(), *p).is_some())
            .map(|(t, p)| GroupRecord::OffsetCommit {
                group: group.to_string(),
                topic: t.as_ref().to_string(),
                partition: *p,
                value: None,
            })
            .collect();
        if records.is_empty() {
            return Ok(None);
        }
        self.append(group, records, now_ms).map(Some)
    }

    /// DeleteGroups: a tombstone for every offset of `group` and for its state, as Kafka
    /// writes them. None when nothing of it is stored.
    pub fn delete_group(&mut self, group: &str, now_ms: i64) -> io::Result<Option<SyncJob>> {
        let Some(entry) = self.groups.get(group) else {
            return Ok(None);
        };
        let records = tombstones(group, entry);
        self.append(group, records, now_ms).map(Some)
    }

    /// One retention sweep: expires the offsets of empty groups, records when a group became
    /// empty, deletes empty groups with no offsets left (see the module doc). `live(group)`
    /// gives the state of a group that has members, None for an empty or unknown one.
    /// Returns the jobs to run (one per group written).
    pub fn expire(
        &mut self,
        now_ms: i64,
        retention_ms: i64,
        live: impl Fn(&str) -> Option<GroupMetadata>,
    ) -> io::Result<Vec<SyncJob>> {
        let mut writes: Vec<(String, Vec<GroupRecord>)> = Vec::new();
        let mut expired_offsets = 0usize;
        for (name, g) in &self.groups {
            if let Some(current) = live(name) {
                // Members came back since the store noted the group empty: its clock stops.
                if g.empty_since_ms().is_some() {
                    writes.push((
                        name.clone(),
                        vec![GroupRecord::GroupMetadata {
                            group: name.clone(),
                            value: Some(current),
                        }],
                    ));
                }
                continue;
            }
            let since = g.empty_since_ms().unwrap_or(now_ms);
            let mut expired = Vec::new();
            let mut total = 0usize;
            for (topic, parts) in &g.topics {
                for (partition, v) in parts {
                    total += 1;
                    let gone = match v.expire_timestamp_ms {
                        Some(at) => now_ms >= at,
                        None => {
                            now_ms.saturating_sub(v.commit_timestamp_ms.max(since)) >= retention_ms
                        }
                    };
                    if gone {
                        expired.push(GroupRecord::OffsetCommit {
                            group: name.clone(),
                            topic: topic.clone(),
                            partition: *partition,
                            value: None,
                        });
                    }
                }
            }
            expired_offsets += expired.len();
            if expired.len() == total {
                writes.push((name.clone(), tombstones(name, g)));
                continue;
            }
            let mut records = expired;
            if g.empty_since_ms().is_none() {
                let old = g.metadata.as_ref();
                records.push(GroupRecord::GroupMetadata {
                    group: name.clone(),
                    value: Some(GroupMetadata {
                        protocol_type: old.map(|m| m.protocol_type.clone()).unwrap_or_default(),
                        generation: old.map_or(0, |m| m.generation),
                        protocol: None,
                        leader: None,
                        current_state_timestamp_ms: now_ms,
                        members: Vec::new(),
                    }),
                });
            }
            if !records.is_empty() {
                writes.push((name.clone(), records));
            }
        }
        let mut jobs = Vec::new();
        for (group, records) in writes {
            jobs.push(self.append(&group, records, now_ms)?);
        }
        if expired_offsets > 0 {
            tracing::info!(offsets = expired_offsets, "committed offsets expired");
        }
        Ok(jobs)
    }

    #[cfg(test)]
    fn set_compact_min_records(&mut self, n: u64) {
        self.compact_min_records = n;
    }
}

/// Records that restate a group's live state.
fn live_records(group: &str, e: &GroupEntry) -> Vec<GroupRecord> {
    let mut out: Vec<GroupRecord> = e
        .topics
        .iter()
        .flat_map(|(t, parts)| {
            parts.iter().map(move |(p, v)| GroupRecord::OffsetCommit {
                group: group.to_string(),
                topic: t.clone(),
                partition: *p,
                value: Some(v.clone()),
            })
        })
        .collect();
    if let Some(m) = &e.metadata {
        out.push(GroupRecord::GroupMetadata {
            group: group.to_string(),
            value: Some(m.clone()),
        });
    }
    out.extend(
        e.consumer
            .live_records(group)
            .into_iter()
            .map(GroupRecord::Consumer),
    );
    out
}

/// Tombstones for everything stored of a group.
fn tombstones(group: &str, e: &GroupEntry) -> Vec<GroupRecord> {
    let mut out: Vec<GroupRecord> = e
        .topics
        .iter()
        .flat_map(|(t, parts)| {
            parts.keys().map(move |p| GroupRecord::OffsetCommit {
                group: group.to_string(),
                topic: t.clone(),
                partition: *p,
                value: None,
            })
        })
        .collect();
    out.extend(
        e.consumer
            .tombstones(group)
            .into_iter()
            .map(GroupRecord::Consumer),
    );
    out.push(GroupRecord::GroupMetadata {
        group: group.to_string(),
        value: None,
    });
    out
}

/// What a replay reads from `__consumer_offsets`.
enum Replayed {
    Plain(GroupRecord),
    /// A record of a producer's transactional batch (TxnOffsetCommit).
    Txn(i64, GroupRecord),
    /// A producer's transaction marker: commit (true) or abort.
    Marker(i64, bool),
}

/// Encodes `records` as uncompressed magic-2 batches (producer `txn`'s transactional batches
/// when given) and appends them in `leader_epoch`; returns the offset of the first. Nothing
/// is appended on error.
fn write_records_as(
    log: &mut PartitionLog,
    records: &[GroupRecord],
    now_ms: i64,
    txn: Option<(i64, i16)>,
    leader_epoch: i32,
) -> io::Result<i64> {
    let mut bytes = Vec::new();
    for chunk in records.chunks(RECORDS_PER_BATCH) {
        let mut body = Vec::new();
        for (i, rec) in chunk.iter().enumerate() {
            let key = rec.key()?;
            let value = rec.value()?;
            let mut r = vec![0u8]; // attributes
            batch::put_varint(&mut r, 0); // timestamp delta
            batch::put_varint(&mut r, i as i64); // offset delta
            batch::put_varint(&mut r, key.len() as i64);
            r.extend_from_slice(&key);
            match &value {
                Some(v) => {
                    batch::put_varint(&mut r, v.len() as i64);
                    r.extend_from_slice(v);
                }
                None => batch::put_varint(&mut r, -1),
            }
            batch::put_varint(&mut r, 0); // headers
            batch::put_varint(&mut body, r.len() as i64);
            body.extend_from_slice(&r);
        }
        bytes.extend(match txn {
            Some(producer) => batch::encode_batch_of(
                &body,
                chunk.len() as i32,
                now_ms,
                now_ms,
                batch::ATTR_TRANSACTIONAL,
                producer,
            ),
            None => batch::encode_batch(&body, chunk.len() as i32, now_ms, now_ms),
        });
    }
    if bytes.is_empty() {
        return Ok(log.log_end_offset());
    }
    let batches: Vec<ProducedBatch> =
        batch::split_produce_records(&Bytes::from(bytes), usize::MAX).map_err(other)?;
    let appended = log
        .append(&batches, leader_epoch, None, now_ms)
        .map_err(other)?;
    Ok(appended.base_offset)
}

/// The directory of one partition (for tests and the migration).
pub fn partition_path(data_dir: &Path, partition: i32) -> PathBuf {
    crate::storage::log::partition_dir(data_dir, OFFSETS_TOPIC, partition)
}

#[cfg(test)]
mod tests {
    use super::*;

    const N: i32 = 50;

    fn off(offset: i64) -> CommittedOffset {
        CommittedOffset {
            offset,
            leader_epoch: 3,
            metadata: Some("m".into()),
            commit_timestamp_ms: 1_000,
            expire_timestamp_ms: None,
        }
    }

    fn open(dir: &Path) -> OffsetsLog {
        OffsetsLog::open(dir, 0, 1, N, true).unwrap()
    }

    fn run(store: &mut OffsetsLog, job: SyncJob) {
        store.sync_blocking(job).unwrap();
    }

    fn empty_meta(since: i64) -> GroupMetadata {
        GroupMetadata {
            protocol_type: "consumer".into(),
            generation: 4,
            protocol: None,
            leader: None,
            current_state_timestamp_ms: since,
            members: Vec::new(),
        }
    }

    /// A consumer group of two members in a stable state.
    fn consumer_group() -> StoredConsumerGroup {
        use super::super::consumer::{
            Assignment, ConsumerGroup, ConsumerGroupConfig, HeartbeatRequest,
        };
        let t = uuid::Uuid::from_u128(7);
        let topics = BTreeMap::from([("t".to_string(), (t, 4))]);
        let mut g = ConsumerGroup::new("cg", ConsumerGroupConfig::default());
        let join = |id: &str| HeartbeatRequest {
            version: 1,
            member_id: id.into(),
            rebalance_timeout_ms: 1000,
            subscribed_topic_names: Some(vec!["t".into()]),
            instance_id: (id == "b").then(|| "inst".into()),
            ..HeartbeatRequest::default()
        };
        let a = g.heartbeat(&join("a"), &topics, 0);
        g.heartbeat(&join("b"), &topics, 0);
        // a revokes half, then b takes it.
        let kept: Assignment = g
            .heartbeat(
                &HeartbeatRequest {
                    member_epoch: a.member_epoch,
                    ..HeartbeatRequest {
                        rebalance_timeout_ms: -1,
                        ..join("a")
                    }
                },
                &topics,
                1,
            )
            .assignment
            .unwrap_or_default();
        g.heartbeat(
            &HeartbeatRequest {
                member_epoch: a.member_epoch,
                owned: Some(kept),
                rebalance_timeout_ms: -1,
                ..join("a")
            },
            &topics,
            2,
        );
        g.stored()
    }

    #[test]
    fn consumer_groups_survive_reopen_and_rewrite() {
        let dir = tempfile::tempdir().unwrap();
        let stored = consumer_group();
        assert_eq!(stored.members.len(), 2);
        {
            let mut s = open(dir.path());
            // A converted classic group: its empty classic state is replaced.
            let job = s.store_group("cg", empty_meta(5), 10).unwrap();
            run(&mut s, job);
            let job = s.commit("cg", &[("t", 0, off(9))], 10).unwrap();
            run(&mut s, job);
            let job = s.store_consumer_group("cg", &stored, 11).unwrap().unwrap();
            run(&mut s, job);
            // Nothing changed: nothing written.
            assert!(s.store_consumer_group("cg", &stored, 12).unwrap().is_none());
            assert_eq!(
                s.group_empty_since("cg"),
                None,
                "a group with members is not empty"
            );
        }
        let mut s = open(dir.path());
        let mut back = s.consumer_groups();
        assert_eq!(back.len(), 1);
        let (id, mut got) = back.remove(0);
        assert_eq!(id, "cg");
        for m in got.members.iter_mut() {
            m.last_heartbeat_ms = 0;
        }
        let mut want = stored.clone();
        for m in want.members.iter_mut() {
            m.last_heartbeat_ms = 0;
            m.revoke_deadline_ms = None;
        }
        assert_eq!(got, want);
        assert!(
            s.group_metadata().next().is_none(),
            "the classic state was deleted"
        );
        assert_eq!(s.fetch("cg", "t", 0), Some(&off(9)));

        // The rewrite that bounds the replay keeps the consumer records.
        s.set_compact_min_records(1);
        for i in 0..20 {
            let job = s.commit("cg", &[("t", 0, off(100 + i))], 20).unwrap();
            run(&mut s, job);
        }
        drop(s);
        let mut s = open(dir.path());
        assert_eq!(s.consumer_groups().len(), 1);
        // Becoming a classic group deletes the consumer records, not the offsets.
        let job = s.delete_consumer_records("cg", 30).unwrap().unwrap();
        run(&mut s, job);
        drop(s);
        let s = open(dir.path());
        assert!(s.consumer_groups().is_empty());
        assert_eq!(s.fetch("cg", "t", 0), Some(&off(119)));
    }

    #[test]
    fn transactional_commits_wait_for_their_marker_across_reopens() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = open(dir.path());
        let job = s.commit("g", &[("t", 0, off(5))], 1).unwrap();
        run(&mut s, job);
        // Producer 7 commits offset 10, producer 8 offset 20, in their transactions.
        let job = s.txn_commit("g", (7, 0), &[("t", 0, off(10))], 2).unwrap();
        run(&mut s, job);
        let job = s.txn_commit("g", (8, 0), &[("t", 1, off(20))], 2).unwrap();
        run(&mut s, job);
        assert_eq!(s.fetch("g", "t", 0).map(|c| c.offset), Some(5));
        assert!(s.has_pending("g", "t", 0) && s.has_pending("g", "t", 1));
        let p = s.partition_of("g");
        let job = s.txn_marker(p, (7, 0), true, 3).unwrap();
        run(&mut s, job);
        assert_eq!(s.fetch("g", "t", 0).map(|c| c.offset), Some(10));
        assert!(!s.has_pending("g", "t", 0));
        drop(s);
        // Producer 8's commit is still pending after a reopen; its abort drops it.
        let mut s = open(dir.path());
        assert_eq!(s.fetch("g", "t", 0).map(|c| c.offset), Some(10));
        assert!(s.has_pending("g", "t", 1));
        assert!(s.fetch("g", "t", 1).is_none());
        let job = s.txn_marker(p, (8, 0), false, 4).unwrap();
        run(&mut s, job);
        drop(s);
        let s = open(dir.path());
        assert!(!s.has_pending("g", "t", 1));
        assert!(s.fetch("g", "t", 1).is_none());
        assert_eq!(s.fetch("g", "t", 0).map(|c| c.offset), Some(10));
    }

    #[test]
    fn commits_deletes_and_group_state_survive_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = open(dir.path());
        for g in ["a", "b", "c"] {
            let job = s
                .commit(g, &[("t", 0, off(10)), ("t", 1, off(11))], 5)
                .unwrap();
            run(&mut s, job);
        }
        let job = s.commit("a", &[("t", 0, off(20))], 6).unwrap();
        run(&mut s, job);
        let job = s.delete_group("b", 7).unwrap().unwrap();
        run(&mut s, job);
        let job = s.delete_partitions("c", &[("t", 1)], 8).unwrap().unwrap();
        run(&mut s, job);
        let job = s.store_group("c", empty_meta(99), 9).unwrap();
        run(&mut s, job);
        drop(s);
        let s = open(dir.path());
        assert_eq!(s.fetch("a", "t", 0), Some(&off(20)));
        assert_eq!(s.fetch("a", "t", 1), Some(&off(11)));
        assert!(!s.has_group("b"));
        assert_eq!(s.fetch("c", "t", 0), Some(&off(10)));
        assert_eq!(s.fetch("c", "t", 1), None);
        assert_eq!(s.group_empty_since("c"), Some(99));
        assert_eq!(s.live_offsets(), 3);
        assert_eq!(s.groups(), vec!["a", "c"]);
        // Each group's records are in its own Kafka partition's log, and only there.
        let holding: Vec<i32> = (0..N)
            .filter(|p| {
                let seg = partition_path(dir.path(), *p).join("00000000000000000000.log");
                fs::metadata(seg).map(|m| m.len()).unwrap_or(0) > 0
            })
            .collect();
        let mut expected: Vec<i32> = ["a", "b", "c"]
            .iter()
            .map(|g| offsets_partition(g, N))
            .collect();
        expected.sort_unstable();
        expected.dedup();
        assert_eq!(holding, expected);
    }

    #[test]
    fn the_log_is_kafka_record_batches_with_typed_keys() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = open(dir.path());
        let job = s.commit("g", &[("t", 2, off(7))], 5).unwrap();
        run(&mut s, job);
        let seg =
            partition_path(dir.path(), offsets_partition("g", N)).join("00000000000000000000.log");
        let mut bytes = Bytes::from(fs::read(seg).unwrap());
        let sets = RecordBatchDecoder::decode_all(&mut bytes).unwrap();
        let r = &sets[0].records[0];
        assert_eq!(r.offset, 0);
        let rec = GroupRecord::decode(r.key.as_ref().unwrap(), r.value.as_deref()).unwrap();
        assert_eq!(
            rec,
            GroupRecord::OffsetCommit {
                group: "g".into(),
                topic: "t".into(),
                partition: 2,
                value: Some(off(7)),
            }
        );
    }

    #[test]
    fn repeated_commits_keep_the_replay_short() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = open(dir.path());
        s.set_compact_min_records(16);
        for i in 0..500 {
            let job = s
                .commit("g", &[("t", 0, off(i)), ("t", 1, off(i + 1))], i)
                .unwrap();
            run(&mut s, job);
            assert!(
                s.stored_records() <= 34,
                "after {i}: {}",
                s.stored_records()
            );
        }
        drop(s);
        let s = open(dir.path());
        assert!(s.stored_records() <= 34, "{}", s.stored_records());
        assert_eq!(s.fetch("g", "t", 0), Some(&off(499)));
        assert_eq!(s.fetch("g", "t", 1), Some(&off(500)));
    }

    #[test]
    fn expiry_notes_empty_groups_and_deletes_expired_ones() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = open(dir.path());
        let job = s.commit("g", &[("t", 0, off(1))], 1_000).unwrap();
        run(&mut s, job);
        // Empty at 2_000: the store writes down when, and nothing expires yet.
        for job in s.expire(2_000, 5_000, |_| None).unwrap() {
            run(&mut s, job);
        }
        assert_eq!(s.group_empty_since("g"), Some(2_000));
        assert!(s.expire(6_999, 5_000, |_| None).unwrap().is_empty());
        drop(s);
        let mut s = open(dir.path());
        assert_eq!(s.group_empty_since("g"), Some(2_000));
        for job in s.expire(7_000, 5_000, |_| None).unwrap() {
            run(&mut s, job);
        }
        assert!(!s.has_group("g"));
        assert_eq!(s.group_metadata().count(), 0);
        drop(s);
        let s = open(dir.path());
        assert!(!s.has_group("g"));
        assert_eq!(s.group_metadata().count(), 0);
    }

    /// Logs that can stop being led here, as a shard's partition does when its leadership
    /// moves: then `with_log` refuses, as the shard's implementation does for a follower.
    struct Led {
        inner: DirLogs,
        follower: std::cell::Cell<bool>,
    }

    impl CoordinatorLogs for Led {
        fn with_log(
            &self,
            topic: &str,
            p: i32,
            f: &mut dyn FnMut(&mut PartitionLog, i32) -> io::Result<()>,
        ) -> io::Result<()> {
            if self.follower.get() {
                return Err(other(format!("{topic}-{p} is followed here")));
            }
            self.inner.with_log(topic, p, f)
        }

        fn durable(&self, topic: &str, p: i32, last: i64) -> super::super::logs::Durable {
            self.inner.durable(topic, p, last)
        }
    }

    #[test]
    fn a_store_never_writes_into_a_partition_it_does_not_lead() {
        let dir = tempfile::tempdir().unwrap();
        let p = offsets_partition("g", N);
        let logs = Rc::new(Led {
            inner: DirLogs::new(dir.path()),
            follower: std::cell::Cell::new(false),
        });
        logs.inner.open(OFFSETS_TOPIC, p, LOG_CONFIG, true).unwrap();
        let end = || {
            let mut end = -1;
            logs.inner
                .with_log(OFFSETS_TOPIC, p, &mut |log, _| {
                    end = log.log_end_offset();
                    Ok(())
                })
                .unwrap();
            end
        };
        let mut s = OffsetsLog::new(N, logs.clone());
        // Not loaded: nothing is served or written.
        assert!(s.commit("g", &[("t", 0, off(1))], 1).is_err());
        assert_eq!(end(), 0);
        s.load_partition(p).unwrap();
        let job = s.commit("g", &[("t", 0, off(5))], 1).unwrap();
        run(&mut s, job);
        assert_eq!(end(), 1);

        // The leadership moved while loaded: a write is refused and changes nothing.
        logs.follower.set(true);
        assert!(s.commit("g", &[("t", 0, off(6))], 2).is_err());
        assert!(s.store_group("g", empty_meta(2), 2).is_err());
        assert!(s.delete_group("g", 2).is_err());
        assert_eq!(end(), 1);
        assert_eq!(s.fetch("g", "t", 0), Some(&off(5)));

        // Unloaded: the partition's groups are gone from memory, and it is not written.
        assert_eq!(s.unload_partition(p), vec!["g".to_string()]);
        assert!(!s.is_loaded(p));
        assert_eq!(s.fetch("g", "t", 0), None);
        assert_eq!(s.live_offsets(), 0);
        logs.follower.set(false);
        assert!(s.commit("g", &[("t", 0, off(7))], 3).is_err());
        assert_eq!(end(), 1);

        // Led again: the load brings back what the log holds.
        s.load_partition(p).unwrap();
        assert_eq!(s.fetch("g", "t", 0), Some(&off(5)));
        assert_eq!(s.live_offsets(), 1);
    }

    #[test]
    fn the_partition_count_is_fixed_once_written() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(resolve_num_partitions(dir.path(), 7).unwrap(), 7);
        assert_eq!(resolve_num_partitions(dir.path(), 50).unwrap(), 7);
    }
}
