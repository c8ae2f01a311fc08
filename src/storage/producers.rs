//! Idempotent producers' state in one partition: what lets a retried batch be answered with
//! its original offsets instead of being written twice, and a lost or reordered one be refused.
//!
//! Lives on: the shard that owns the partition, inside its `Partition`; only that shard's
//! executor touches it. This module does no I/O on the executor but the reads of start-up:
//! snapshot writes run on the blocking pool.
//!
//! For each producer id it keeps the producer's epoch, the sequence numbers and offsets of its
//! last five batches (a client has at most five requests in flight per partition, so a retry
//! is always of one of them), and the timestamp of its last batch (for expiry). A produce goes,
//! batch by batch, as Kafka's `ProducerAppendInfo` does:
//!
//! 1. A batch without a producer id (-1) is not checked.
//! 2. A batch whose epoch and first and last sequence equal one of the last five is a retry:
//!    the write is answered with that batch's offsets and nothing is written.
//! 3. An epoch below the known one is a zombie: INVALID_PRODUCER_EPOCH.
//! 4. An epoch above the known one (the client bumped it, KIP-360) must start at sequence 0;
//!    within the known epoch the first sequence must follow the last one (wrapping past
//!    `i32::MAX` to 0): else OUT_OF_ORDER_SEQUENCE_NUMBER.
//! 5. A producer id the partition does not know (new, or expired) is taken at any sequence.
//!
//! The checks of a write run against the state plus what earlier writes of the same coalesced
//! append staged ([`Staged`]); the state changes only once the append succeeded
//! ([`ProducerStates::commit`]), so a failed append leaves it as it was.
//!
//! Durability: the state is written to `<offset, 20 digits>.snapshot` in the partition
//! directory (Kafka's naming) at every segment roll (the state as of the new segment's base
//! offset) and at a clean shutdown (as of the log end), CRC-protected, through a temporary
//! file, fsync and rename; the newest two are kept. On open, the newest snapshot at or below
//! the recovered log end is read and the batch headers of the log from its offset on are
//! replayed (headers only: producer id, epoch, sequences, offsets). Retention may have deleted
//! segments past a snapshot's offset: the state is then the snapshot plus what the log still
//! holds, which is what a producer can still retry against. With no usable snapshot the whole
//! log is replayed (once: the shard then snapshots the result at the log end).

use std::collections::{BTreeMap, VecDeque};
use std::fs::{self, File};
use std::io;
use std::path::{Path, PathBuf};

use crate::error::KafkaError;
use crate::protocol::batch::BatchHeader;
use crate::storage::log::PartitionLog;

/// Batches kept per producer: as many as a client may have in flight to one partition.
pub const BATCHES_KEPT: usize = 5;
/// Snapshot files kept per partition.
pub const SNAPSHOTS_KEPT: usize = 2;
const SNAPSHOT_SUFFIX: &str = ".snapshot";
const SNAPSHOT_MAGIC: &[u8; 4] = b"SPPS";
/// Version 2 adds each producer's open transaction's first offset.
const SNAPSHOT_VERSION: u16 = 2;
/// Bytes before the CRC-covered part: magic, version, CRC.
const SNAPSHOT_PREFIX: usize = 4 + 2 + 4;

/// Where one of a producer's recent batches landed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BatchMeta {
    pub first_seq: i32,
    pub last_seq: i32,
    pub first_offset: i64,
    pub last_offset: i64,
}

/// One producer's state in a partition.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProducerEntry {
    pub epoch: i16,
    /// Oldest first, at most [`BATCHES_KEPT`]; empty only after a transaction marker moved
    /// the producer to a newer epoch.
    pub batches: VecDeque<BatchMeta>,
    /// When its last batch was appended (broker time; for a batch replayed from the log, its
    /// max timestamp): it expires `producer.id.expiration.ms` after.
    pub last_timestamp: i64,
    /// The first offset of the producer's open transaction in this partition, if one is open
    /// (its first transactional batch since the last marker).
    pub txn_first_offset: Option<i64>,
}

impl ProducerEntry {
    fn last_seq(&self) -> Option<i32> {
        self.batches.back().map(|b| b.last_seq)
    }

    /// Records a batch that was (or is about to be) appended.
    fn record(&mut self, epoch: i16, meta: BatchMeta, timestamp: i64) {
        if epoch != self.epoch {
            self.epoch = epoch;
            self.batches.clear();
        }
        self.batches.push_back(meta);
        while self.batches.len() > BATCHES_KEPT {
            self.batches.pop_front();
        }
        self.last_timestamp = timestamp;
    }

    fn duplicate_of(&self, epoch: i16, first_seq: i32, last_seq: i32) -> Option<BatchMeta> {
        if epoch != self.epoch {
            return None;
        }
        self.batches
            .iter()
            .find(|b| b.first_seq == first_seq && b.last_seq == last_seq)
            .copied()
    }
}

/// The sequence number `delta` records after `seq`, wrapping past `i32::MAX` to 0 as Kafka's
/// `DefaultRecordBatch.incrementSequence` does.
pub fn increment_sequence(seq: i32, delta: i32) -> i32 {
    if seq > i32::MAX - delta {
        delta - (i32::MAX - seq) - 1
    } else {
        seq + delta
    }
}

/// Whether `next` may follow `last` in one epoch.
fn in_sequence(last: i32, next: i32) -> bool {
    next == increment_sequence(last, 1)
}

/// What a write's producer checks decided.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Append it.
    Append,
    /// A retry of a batch already in the log: answer with its offsets, write nothing.
    Duplicate(BatchMeta),
}

/// Producer changes of writes checked but not appended yet (one coalesced append).
#[derive(Debug, Default)]
pub struct Staged {
    entries: BTreeMap<i64, ProducerEntry>,
    /// The transactions the write's markers end, in the order of the markers.
    pub ended: Vec<EndedTxn>,
}

/// A transaction a marker ended in this partition.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EndedTxn {
    pub producer_id: i64,
    /// Its first offset here (the marker's own when the producer wrote nothing here).
    pub first_offset: i64,
    /// The marker's offset.
    pub marker_offset: i64,
}

/// How long a verification guard stays usable (a verification and the append after it take
/// far less).
const GUARD_LIFETIME_MS: i64 = 5 * 60 * 1000;

/// The producers of one partition, by producer id. Two are equal when their producers and open
/// transactions are (the verification guards are a leader's soft state).
#[derive(Clone, Debug, Default)]
pub struct ProducerStates {
    producers: BTreeMap<i64, ProducerEntry>,
    /// (first offset, producer id) of every open transaction: the smallest bounds the last
    /// stable offset.
    ongoing: std::collections::BTreeSet<(i64, i64)>,
    /// KIP-890 part 1's verification guards, on a leader: producer id -> (token, when it was
    /// taken). A transactional batch that would open a transaction here is appended only with
    /// the producer's current token, taken before its coordinator said the partition is in
    /// the producer's open transaction; a marker for the producer drops the token, so a write
    /// verified before the transaction ended and arriving after its marker is refused instead
    /// of opening a transaction no marker will close (which would hold the LSO forever).
    /// Memory only (a new leader has none: the write is verified again), not in snapshots.
    guards: BTreeMap<i64, (u64, i64)>,
    /// The last token handed out.
    guard_seq: u64,
}

impl PartialEq for ProducerStates {
    fn eq(&self, other: &Self) -> bool {
        self.producers == other.producers && self.ongoing == other.ongoing
    }
}

impl Eq for ProducerStates {}

impl ProducerStates {
    pub fn len(&self) -> usize {
        self.producers.len()
    }

    pub fn is_empty(&self) -> bool {
        self.producers.is_empty()
    }

    pub fn get(&self, producer_id: i64) -> Option<&ProducerEntry> {
        self.producers.get(&producer_id)
    }

    /// The first offset of the oldest open transaction, if any: the last stable offset is at
    /// most this.
    pub fn first_unstable_offset(&self) -> Option<i64> {
        self.ongoing.first().map(|(o, _)| *o)
    }

    /// Open transactions: (producer id, epoch, first offset).
    pub fn ongoing(&self) -> impl Iterator<Item = (i64, i16, i64)> + '_ {
        self.ongoing
            .iter()
            .map(|&(first, pid)| (pid, self.producers.get(&pid).map_or(-1, |e| e.epoch), first))
    }

    /// Every producer and its state.
    pub fn iter(&self) -> impl Iterator<Item = (&i64, &ProducerEntry)> {
        self.producers.iter()
    }

    /// Replaces `pid`'s entry, keeping the open-transaction set in step.
    fn put(&mut self, pid: i64, entry: ProducerEntry) {
        let old = self.producers.get(&pid).and_then(|e| e.txn_first_offset);
        if old != entry.txn_first_offset {
            if let Some(o) = old {
                self.ongoing.remove(&(o, pid));
            }
            if let Some(n) = entry.txn_first_offset {
                self.ongoing.insert((n, pid));
            }
        }
        self.producers.insert(pid, entry);
    }

    /// A new verification guard for `producer_id` (see `guards`), taken before its
    /// coordinator is asked; it replaces the producer's previous one.
    pub fn take_guard(&mut self, producer_id: i64, now_ms: i64) -> u64 {
        self.guard_seq += 1;
        self.guards.insert(producer_id, (self.guard_seq, now_ms));
        self.guard_seq
    }

    /// Checks one write's batches (of one produce request), to be appended from
    /// `first_offset` on, against this state and what `staged` holds. On
    /// [`Verdict::Append`] the write's changes join `staged`; on a duplicate or an error
    /// `staged` is unchanged. `timestamp` (the broker's clock) is recorded as the producer's
    /// last activity instead of the batches' own, which the client sets. `guard`: the
    /// verification guard the write was verified under, for a transactional write (see
    /// `guards`); a transactional batch that would open a transaction needs it to be current.
    pub fn check(
        &self,
        staged: &mut Staged,
        batches: &[BatchHeader],
        first_offset: i64,
        timestamp: Option<i64>,
        guard: Option<u64>,
    ) -> Result<Verdict, KafkaError> {
        // Entries this write touches, copied so a refusal leaves `staged` as it was.
        let mut local: BTreeMap<i64, ProducerEntry> = BTreeMap::new();
        let mut ended = Vec::new();
        let mut offset = first_offset;
        for h in batches {
            let count = i64::from(h.last_offset_delta) + 1;
            let batch_first = offset;
            offset += count;
            if h.producer_id < 0 {
                continue;
            }
            let pid = h.producer_id;
            if h.is_control() {
                // A transaction marker from the coordinator: it carries the producer's current
                // epoch (bumped when the coordinator fenced it) and no sequence. An older
                // epoch is a stale marker; a newer one fences the producer's older batches.
                let known = local
                    .get(&pid)
                    .or_else(|| staged.entries.get(&pid))
                    .or_else(|| self.producers.get(&pid));
                if let Some(e) = known {
                    if h.producer_epoch < e.epoch {
                        return Err(KafkaError::InvalidProducerEpoch(format!(
                            "marker of producer {pid} epoch {} is older than the partition's {}",
                            h.producer_epoch, e.epoch
                        )));
                    }
                    let mut entry = e.clone();
                    if h.producer_epoch > e.epoch {
                        entry.epoch = h.producer_epoch;
                        entry.batches.clear();
                    }
                    ended.push(EndedTxn {
                        producer_id: pid,
                        first_offset: entry.txn_first_offset.take().unwrap_or(batch_first),
                        marker_offset: batch_first,
                    });
                    local.insert(pid, entry);
                } else {
                    ended.push(EndedTxn {
                        producer_id: pid,
                        first_offset: batch_first,
                        marker_offset: batch_first,
                    });
                }
                continue;
            }
            let first_seq = h.base_sequence;
            let last_seq = increment_sequence(first_seq, h.last_offset_delta);
            let known = local
                .get(&pid)
                .or_else(|| staged.entries.get(&pid))
                .or_else(|| self.producers.get(&pid));
            if let Some(e) = known {
                if let Some(dup) = e.duplicate_of(h.producer_epoch, first_seq, last_seq) {
                    return Ok(Verdict::Duplicate(dup));
                }
                if h.producer_epoch < e.epoch {
                    return Err(KafkaError::InvalidProducerEpoch(format!(
                        "producer {pid} epoch {} is older than the partition's {}",
                        h.producer_epoch, e.epoch
                    )));
                }
                if h.producer_epoch > e.epoch {
                    if first_seq != 0 {
                        return Err(KafkaError::OutOfOrderSequence(format!(
                            "producer {pid} new epoch {} must start at sequence 0, not {first_seq}",
                            h.producer_epoch
                        )));
                    }
                } else if let Some(last) = e.last_seq()
                    && !in_sequence(last, first_seq)
                {
                    return Err(KafkaError::OutOfOrderSequence(format!(
                        "producer {pid} epoch {}: sequence {first_seq} does not follow {last}",
                        h.producer_epoch
                    )));
                }
            }
            let mut entry = known.cloned().unwrap_or(ProducerEntry {
                epoch: h.producer_epoch,
                batches: VecDeque::new(),
                last_timestamp: -1,
                txn_first_offset: None,
            });
            if h.is_transactional() && entry.txn_first_offset.is_none() {
                let current = self.guards.get(&pid).map(|g| g.0);
                let ended_here = ended.iter().any(|e: &EndedTxn| e.producer_id == pid)
                    || staged.ended.iter().any(|e| e.producer_id == pid);
                if guard.is_none() || guard != current || ended_here {
                    return Err(KafkaError::InvalidTxnState(format!(
                        "producer {pid}: its transaction ended (or was never verified) before this \
                         write reached the partition"
                    )));
                }
                entry.txn_first_offset = Some(batch_first);
            }
            entry.record(
                h.producer_epoch,
                BatchMeta {
                    first_seq,
                    last_seq,
                    first_offset: batch_first,
                    last_offset: offset - 1,
                },
                timestamp.unwrap_or(h.max_timestamp),
            );
            local.insert(pid, entry);
        }
        staged.entries.extend(local);
        staged.ended.extend(ended);
        Ok(Verdict::Append)
    }

    /// Applies what an append that succeeded staged. The markers in it drop their
    /// producers' verification guards.
    pub fn commit(&mut self, staged: Staged) {
        for e in &staged.ended {
            self.guards.remove(&e.producer_id);
        }
        for (pid, e) in staged.entries {
            self.put(pid, e);
        }
    }

    /// Applies a batch read back from the log (no checks: it was checked when written).
    pub fn replay(&mut self, h: &BatchHeader) {
        if h.producer_id < 0 {
            return;
        }
        if h.is_control() {
            self.guards.remove(&h.producer_id);
            // A marker ends the producer's transaction, moves the producer to its epoch (see
            // `check`) and holds no sequence.
            if let Some(mut e) = self.producers.get(&h.producer_id).cloned() {
                if h.producer_epoch > e.epoch {
                    e.epoch = h.producer_epoch;
                    e.batches.clear();
                }
                e.txn_first_offset = None;
                self.put(h.producer_id, e);
            }
            return;
        }
        let meta = BatchMeta {
            first_seq: h.base_sequence,
            last_seq: increment_sequence(h.base_sequence, h.last_offset_delta),
            first_offset: h.base_offset,
            last_offset: h.last_offset(),
        };
        let mut e = self
            .producers
            .get(&h.producer_id)
            .cloned()
            .unwrap_or(ProducerEntry {
                epoch: h.producer_epoch,
                batches: VecDeque::new(),
                last_timestamp: -1,
                txn_first_offset: None,
            });
        e.record(h.producer_epoch, meta, h.max_timestamp);
        if h.is_transactional() && e.txn_first_offset.is_none() {
            e.txn_first_offset = Some(h.base_offset);
        }
        self.put(h.producer_id, e);
    }

    /// Drops producers whose last batch is `expiration_ms` or more older than `now_ms`;
    /// returns how many.
    pub fn expire(&mut self, now_ms: i64, expiration_ms: u64) -> usize {
        let before = self.producers.len();
        let expiration = i64::try_from(expiration_ms).unwrap_or(i64::MAX);
        // A producer with an open transaction is kept: its marker is still to come.
        self.producers.retain(|_, e| {
            e.txn_first_offset.is_some() || now_ms.saturating_sub(e.last_timestamp) < expiration
        });
        // A guard lives from a verification to the append right after it.
        self.guards
            .retain(|_, (_, taken)| now_ms.saturating_sub(*taken) < GUARD_LIFETIME_MS);
        before - self.producers.len()
    }

    /// The snapshot of this state as of `offset`:
    ///
    /// ```text
    /// "SPPS" | version u16 | crc32c u32 of the rest | offset i64 | producers u32 |
    ///   per producer: id i64 | epoch i16 | last timestamp i64 |
    ///     open transaction's first offset i64 (-1: none; version 2) | batches u8 |
    ///     per batch: first seq i32 | last seq i32 | first offset i64 | last offset i64
    /// ```
    ///
    /// all big-endian.
    pub fn encode(&self, offset: i64) -> Vec<u8> {
        let mut body = Vec::with_capacity(12 + self.producers.len() * 64);
        body.extend_from_slice(&offset.to_be_bytes());
        body.extend_from_slice(&(self.producers.len() as u32).to_be_bytes());
        for (pid, e) in &self.producers {
            body.extend_from_slice(&pid.to_be_bytes());
            body.extend_from_slice(&e.epoch.to_be_bytes());
            body.extend_from_slice(&e.last_timestamp.to_be_bytes());
            body.extend_from_slice(&e.txn_first_offset.unwrap_or(-1).to_be_bytes());
            body.push(e.batches.len() as u8);
            for b in &e.batches {
                body.extend_from_slice(&b.first_seq.to_be_bytes());
                body.extend_from_slice(&b.last_seq.to_be_bytes());
                body.extend_from_slice(&b.first_offset.to_be_bytes());
                body.extend_from_slice(&b.last_offset.to_be_bytes());
            }
        }
        let mut out = Vec::with_capacity(SNAPSHOT_PREFIX + body.len());
        out.extend_from_slice(SNAPSHOT_MAGIC);
        out.extend_from_slice(&SNAPSHOT_VERSION.to_be_bytes());
        out.extend_from_slice(&crc32c::crc32c(&body).to_be_bytes());
        out.extend_from_slice(&body);
        out
    }

    /// Reads a snapshot: (its offset, the state).
    pub fn decode(bytes: &[u8]) -> Result<(i64, ProducerStates), String> {
        if bytes.len() < SNAPSHOT_PREFIX || &bytes[..4] != SNAPSHOT_MAGIC {
            return Err("not a producer state snapshot".into());
        }
        let version = u16::from_be_bytes([bytes[4], bytes[5]]);
        if version != SNAPSHOT_VERSION && version != 1 {
            return Err(format!(
                "snapshot version {version} is not {SNAPSHOT_VERSION}"
            ));
        }
        let crc = u32::from_be_bytes([bytes[6], bytes[7], bytes[8], bytes[9]]);
        let body = &bytes[SNAPSHOT_PREFIX..];
        if crc32c::crc32c(body) != crc {
            return Err("snapshot CRC mismatch".into());
        }
        let mut r = Reader(body);
        let offset = r.i64()?;
        let count = r.u32()?;
        let mut state = ProducerStates::default();
        for _ in 0..count {
            let pid = r.i64()?;
            let epoch = r.i16()?;
            let last_timestamp = r.i64()?;
            let txn_first_offset = if version >= 2 {
                Some(r.i64()?).filter(|o| *o >= 0)
            } else {
                None
            };
            let n = r.u8()?;
            if usize::from(n) > BATCHES_KEPT {
                return Err(format!("producer {pid} has {n} batches"));
            }
            let mut batches = VecDeque::with_capacity(usize::from(n));
            for _ in 0..n {
                batches.push_back(BatchMeta {
                    first_seq: r.i32()?,
                    last_seq: r.i32()?,
                    first_offset: r.i64()?,
                    last_offset: r.i64()?,
                });
            }
            state.put(
                pid,
                ProducerEntry {
                    epoch,
                    batches,
                    last_timestamp,
                    txn_first_offset,
                },
            );
        }
        if !r.0.is_empty() {
            return Err(format!("{} bytes after the last producer", r.0.len()));
        }
        Ok((offset, state))
    }
}

/// A cursor over a snapshot's bytes.
struct Reader<'a>(&'a [u8]);

impl Reader<'_> {
    fn take<const N: usize>(&mut self) -> Result<[u8; N], String> {
        if self.0.len() < N {
            return Err("snapshot is truncated".into());
        }
        let (head, rest) = self.0.split_at(N);
        self.0 = rest;
        let mut out = [0u8; N];
        out.copy_from_slice(head);
        Ok(out)
    }
    fn u8(&mut self) -> Result<u8, String> {
        Ok(self.take::<1>()?[0])
    }
    fn i16(&mut self) -> Result<i16, String> {
        Ok(i16::from_be_bytes(self.take()?))
    }
    fn i32(&mut self) -> Result<i32, String> {
        Ok(i32::from_be_bytes(self.take()?))
    }
    fn u32(&mut self) -> Result<u32, String> {
        Ok(u32::from_be_bytes(self.take()?))
    }
    fn i64(&mut self) -> Result<i64, String> {
        Ok(i64::from_be_bytes(self.take()?))
    }
}

pub fn snapshot_path(dir: &Path, offset: i64) -> PathBuf {
    dir.join(format!("{offset:020}{SNAPSHOT_SUFFIX}"))
}

/// The offsets of the snapshots in `dir`, ascending.
pub fn list_snapshots(dir: &Path) -> io::Result<Vec<i64>> {
    crate::storage::io::offsets_named(dir, SNAPSHOT_SUFFIX)
}

/// Deletes the snapshots taken past `end` (the log was truncated there): a snapshot names the
/// state after every batch below its offset, so one above the end describes batches the log no
/// longer holds, and once the log grows past it again (with other batches) nothing would tell
/// it apart from a good one. The directory is synced after, so a power loss cannot bring one
/// back. Blocking: run it on the blocking pool, before the log takes appends past `end`.
pub fn remove_snapshots_above(dir: &Path, end: i64) -> io::Result<()> {
    let mut removed = false;
    for offset in list_snapshots(dir)? {
        if offset > end {
            match fs::remove_file(snapshot_path(dir, offset)) {
                Ok(()) => removed = true,
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(e),
            }
        }
    }
    if removed {
        File::open(dir)?.sync_all()?;
    }
    Ok(())
}

/// A snapshot to write off the executor.
#[derive(Debug)]
pub struct SnapshotJob {
    pub dir: PathBuf,
    pub offset: i64,
    pub bytes: Vec<u8>,
}

impl SnapshotJob {
    /// Writes the snapshot (temporary file, fsync, rename, directory fsync) and removes all
    /// but the newest [`SNAPSHOTS_KEPT`]. Blocking: run it on the blocking pool.
    pub fn run(&self) -> io::Result<()> {
        // The aborted-transaction index entries of every marker below `offset` are written
        // (not necessarily synced) by now: syncing them first lets a start that replays only
        // from this snapshot on trust the index below it (see [`Rebuilt::aborts`]).
        crate::storage::txnindex::sync_all(&self.dir)?;
        let path = snapshot_path(&self.dir, self.offset);
        let tmp = path.with_extension("snapshot.tmp");
        let f = File::create(&tmp)?;
        crate::storage::io::pwritev_all(&f, 0, &[&self.bytes])?;
        f.sync_all()?;
        fs::rename(&tmp, &path)?;
        File::open(&self.dir)?.sync_all()?;
        let all = list_snapshots(&self.dir)?;
        for old in &all[..all.len().saturating_sub(SNAPSHOTS_KEPT)] {
            match fs::remove_file(snapshot_path(&self.dir, *old)) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }
}

/// The newest readable snapshot in `dir` at or below `log_end`: (its offset, the state).
/// Snapshots past the log end (the log lost its tail in a crash) are removed; an unreadable one
/// is reported and passed over for the one before.
pub fn load_snapshot(dir: &Path, log_end: i64) -> io::Result<Option<(i64, ProducerStates)>> {
    // A snapshot write a crash interrupted leaves its temporary file behind.
    for entry in fs::read_dir(dir)? {
        let path = entry?.path();
        if path
            .file_name()
            .and_then(|n| n.to_str())
            .is_some_and(|n| n.ends_with(".snapshot.tmp"))
        {
            fs::remove_file(&path)?;
        }
    }
    let offsets = list_snapshots(dir)?;
    for &offset in offsets.iter().rev() {
        let path = snapshot_path(dir, offset);
        if offset > log_end {
            tracing::info!(path = %path.display(), log_end, "producer state snapshot past the log end: removed");
            fs::remove_file(&path)?;
            continue;
        }
        match fs::read(&path)
            .map_err(|e| e.to_string())
            .and_then(|b| ProducerStates::decode(&b))
        {
            Ok((at, state)) if at == offset => return Ok(Some((offset, state))),
            Ok((at, _)) => {
                tracing::warn!(path = %path.display(), inside = at, "producer state snapshot names another offset: ignored");
            }
            Err(why) => {
                tracing::warn!(path = %path.display(), %why, "unreadable producer state snapshot: ignored");
            }
        }
    }
    Ok(None)
}

/// The producer state of an opened log: the newest snapshot at or below its log end, plus
/// the batch headers after it (the whole log when there is no usable snapshot). Returns the
/// state and the offset of the snapshot it started from.
pub fn rebuild(log: &PartitionLog) -> io::Result<Rebuilt> {
    let snapshot = match load_snapshot(log.dir(), log.log_end_offset()) {
        Ok(s) => s,
        Err(e) => {
            tracing::warn!(dir = %log.dir().display(), error = %e, "cannot read the producer state snapshots: rebuilding from the whole log");
            None
        }
    };
    let (from, mut state) = match snapshot {
        Some((offset, state)) => (Some(offset), state),
        None => (None, ProducerStates::default()),
    };
    let mut aborts = Vec::new();
    let mut failed = None;
    log.scan_batches_from(from.unwrap_or(i64::MIN), |h, segment_base, read| {
        if h.is_control() && h.producer_id >= 0 {
            let first = state.get(h.producer_id).and_then(|e| e.txn_first_offset);
            match read().map(|b| crate::protocol::batch::control_is_commit(&b)) {
                Ok(Some(false)) => {
                    state.replay(h);
                    aborts.push((
                        segment_base,
                        crate::storage::txnindex::AbortedTxn {
                            producer_id: h.producer_id,
                            first_offset: first.unwrap_or(h.base_offset),
                            last_offset: h.base_offset,
                            last_stable_offset: state
                                .first_unstable_offset()
                                .unwrap_or(h.base_offset + 1),
                        },
                    ));
                    return;
                }
                Ok(_) => {}
                Err(e) => failed = Some(e),
            }
        }
        state.replay(h);
    })?;
    if let Some(e) = failed {
        return Err(e);
    }
    Ok(Rebuilt {
        state,
        snapshot: from,
        aborts,
    })
}

/// A partition's producer state rebuilt at open (see [`rebuild`]).
pub struct Rebuilt {
    pub state: ProducerStates,
    /// The offset of the snapshot it started from (None: the whole log was replayed).
    pub snapshot: Option<i64>,
    /// The abort markers replayed (those after the snapshot), as the aborted-transaction
    /// index entries they make, with their segment's base offset: the index must hold each
    /// (an entry is made durable after its marker, so a crash in between loses it; markers
    /// below a snapshot have theirs durable, see [`SnapshotJob::run`]).
    pub aborts: Vec<(i64, crate::storage::txnindex::AbortedTxn)>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn batch(pid: i64, epoch: i16, seq: i32, records: i32) -> BatchHeader {
        BatchHeader {
            base_offset: 0,
            batch_length: 100,
            partition_leader_epoch: -1,
            magic: 2,
            crc: 0,
            attributes: 0,
            last_offset_delta: records - 1,
            base_timestamp: 1000,
            max_timestamp: 1000,
            producer_id: pid,
            producer_epoch: epoch,
            base_sequence: seq,
            records_count: records,
        }
    }

    /// Checks and, when accepted, commits one write at `offset`, as an append that succeeded.
    fn write(
        s: &mut ProducerStates,
        offset: i64,
        b: &[BatchHeader],
    ) -> Result<Verdict, KafkaError> {
        let mut staged = Staged::default();
        // A transactional write is verified first, as the produce path does.
        let guard = b
            .iter()
            .find(|h| h.is_transactional() && !h.is_control())
            .map(|h| s.take_guard(h.producer_id, 0));
        let v = s.check(&mut staged, b, offset, None, guard)?;
        s.commit(staged);
        Ok(v)
    }

    #[test]
    fn a_write_verified_before_its_transaction_ended_cannot_open_another() {
        let mut s = ProducerStates::default();
        let invalid = KafkaError::InvalidTxnState(String::new()).code();
        // Verified, then the marker of that transaction lands before the write: refused.
        let late = s.take_guard(2, 0);
        write(&mut s, 0, &[txn(batch(2, 0, -1, 1), true)]).unwrap();
        let mut staged = Staged::default();
        let r = s.check(
            &mut staged,
            &[txn(batch(2, 0, 0, 1), false)],
            1,
            None,
            Some(late),
        );
        assert_eq!(code(r), invalid);
        assert_eq!(s.first_unstable_offset(), None, "no transaction was opened");
        // Never verified: refused too.
        let r = s.check(&mut staged, &[txn(batch(2, 0, 0, 1), false)], 1, None, None);
        assert_eq!(code(r), invalid);
        // Verified afresh: it opens the transaction; the ones after it continue it without a
        // guard of their own being needed.
        let g = s.take_guard(2, 0);
        let r = s.check(
            &mut staged,
            &[txn(batch(2, 0, 0, 1), false)],
            1,
            None,
            Some(g),
        );
        assert_eq!(code(r), 0);
        s.commit(staged);
        assert_eq!(s.first_unstable_offset(), Some(1));
        let mut staged = Staged::default();
        let r = s.check(&mut staged, &[txn(batch(2, 0, 1, 1), false)], 2, None, None);
        assert_eq!(code(r), 0);
        // A marker staged earlier in the same coalesced write counts as landed.
        let mut s = ProducerStates::default();
        let g = s.take_guard(3, 0);
        let mut staged = Staged::default();
        s.check(&mut staged, &[txn(batch(3, 0, -1, 1), true)], 0, None, None)
            .unwrap();
        let r = s.check(
            &mut staged,
            &[txn(batch(3, 0, 0, 1), false)],
            1,
            None,
            Some(g),
        );
        assert_eq!(code(r), invalid);
        // Guards do not outlive their use for long.
        let mut s = ProducerStates::default();
        let g = s.take_guard(4, 0);
        s.expire(GUARD_LIFETIME_MS + 1, u64::MAX);
        let mut staged = Staged::default();
        let r = s.check(
            &mut staged,
            &[txn(batch(4, 0, 0, 1), false)],
            0,
            None,
            Some(g),
        );
        assert_eq!(code(r), invalid);
    }

    fn code(r: Result<Verdict, KafkaError>) -> i16 {
        match r {
            Ok(_) => 0,
            Err(e) => e.code(),
        }
    }

    fn txn(mut h: BatchHeader, control: bool) -> BatchHeader {
        h.attributes = crate::protocol::batch::ATTR_TRANSACTIONAL
            | if control {
                crate::protocol::batch::ATTR_CONTROL
            } else {
                0
            };
        if control {
            h.base_sequence = -1;
            h.last_offset_delta = 0;
        }
        h
    }

    #[test]
    fn open_transactions_bound_the_stable_offset_and_markers_end_them() {
        let mut s = ProducerStates::default();
        write(&mut s, 0, &[batch(1, 0, 0, 2)]).unwrap(); // not transactional
        assert_eq!(s.first_unstable_offset(), None);
        write(&mut s, 2, &[txn(batch(2, 0, 0, 3), false)]).unwrap();
        write(&mut s, 5, &[txn(batch(3, 0, 0, 1), false)]).unwrap();
        write(&mut s, 6, &[txn(batch(2, 0, 3, 1), false)]).unwrap();
        assert_eq!(s.first_unstable_offset(), Some(2));
        // The marker of producer 2 ends its transaction: producer 3's is now the oldest.
        let mut staged = Staged::default();
        s.check(&mut staged, &[txn(batch(2, 0, -1, 1), true)], 7, None, None)
            .unwrap();
        assert_eq!(
            staged.ended,
            vec![EndedTxn {
                producer_id: 2,
                first_offset: 2,
                marker_offset: 7
            }]
        );
        s.commit(staged);
        assert_eq!(s.first_unstable_offset(), Some(5));
        // The producer's sequence goes on after its marker, in the same epoch.
        assert_eq!(code(write(&mut s, 8, &[txn(batch(2, 0, 4, 1), false)])), 0);
        assert_eq!(s.first_unstable_offset(), Some(5));
        // A marker with a bumped epoch (a fence) fences the older epoch's batches.
        write(&mut s, 9, &[txn(batch(3, 1, -1, 1), true)]).unwrap();
        assert_eq!(s.first_unstable_offset(), Some(8));
        assert_eq!(
            code(write(&mut s, 10, &[txn(batch(3, 0, 1, 1), false)])),
            KafkaError::InvalidProducerEpoch(String::new()).code()
        );
        // The snapshot keeps the open transaction.
        let (_, back) = ProducerStates::decode(&s.encode(10)).unwrap();
        assert_eq!(back, s);
        assert_eq!(back.first_unstable_offset(), Some(8));
    }

    #[test]
    fn a_retry_of_any_of_the_last_five_batches_gets_its_original_offsets() {
        let mut s = ProducerStates::default();
        for i in 0..6 {
            let v = write(&mut s, i64::from(i) * 10, &[batch(7, 0, i * 10, 10)]).unwrap();
            assert_eq!(v, Verdict::Append);
        }
        // Batches 1..=5 are kept; batch 0 (seq 0..9) fell out of the window.
        let v = write(&mut s, 60, &[batch(7, 0, 20, 10)]).unwrap();
        assert_eq!(
            v,
            Verdict::Duplicate(BatchMeta {
                first_seq: 20,
                last_seq: 29,
                first_offset: 20,
                last_offset: 29
            })
        );
        assert_eq!(s.get(7).unwrap().batches.len(), BATCHES_KEPT);
        // Out of the window, the oldest is neither a duplicate nor in sequence.
        assert_eq!(code(write(&mut s, 60, &[batch(7, 0, 0, 10)])), 45);
        // The next one in sequence is fine.
        assert_eq!(
            write(&mut s, 60, &[batch(7, 0, 60, 1)]).unwrap(),
            Verdict::Append
        );
    }

    #[test]
    fn a_gap_a_stale_epoch_and_a_bumped_epoch() {
        let mut s = ProducerStates::default();
        write(&mut s, 0, &[batch(1, 3, 0, 5)]).unwrap();
        assert_eq!(code(write(&mut s, 5, &[batch(1, 3, 6, 1)])), 45, "gap");
        assert_eq!(code(write(&mut s, 5, &[batch(1, 3, 4, 1)])), 45, "overlap");
        assert_eq!(
            code(write(&mut s, 5, &[batch(1, 2, 5, 1)])),
            47,
            "stale epoch"
        );
        assert_eq!(
            code(write(&mut s, 5, &[batch(1, 4, 5, 1)])),
            45,
            "new epoch not at 0"
        );
        assert_eq!(
            write(&mut s, 5, &[batch(1, 4, 0, 2)]).unwrap(),
            Verdict::Append
        );
        let e = s.get(1).unwrap();
        assert_eq!((e.epoch, e.batches.len()), (4, 1));
        assert_eq!(
            code(write(&mut s, 7, &[batch(1, 3, 5, 1)])),
            47,
            "old epoch now stale"
        );
        // A refused write leaves nothing behind.
        assert_eq!(s.get(1).unwrap().batches.len(), 1);
    }

    #[test]
    fn an_unknown_producer_is_taken_at_any_sequence() {
        let mut s = ProducerStates::default();
        assert_eq!(
            write(&mut s, 0, &[batch(9, 0, 1234, 3)]).unwrap(),
            Verdict::Append
        );
        assert_eq!(
            write(&mut s, 3, &[batch(9, 0, 1237, 1)]).unwrap(),
            Verdict::Append
        );
        // No producer id: no checks, no state.
        assert_eq!(
            write(&mut s, 4, &[batch(-1, -1, -1, 1)]).unwrap(),
            Verdict::Append
        );
        assert_eq!(s.len(), 1);
    }

    #[test]
    fn sequences_wrap_past_i32_max() {
        assert_eq!(increment_sequence(i32::MAX, 1), 0);
        assert_eq!(increment_sequence(i32::MAX - 1, 3), 1);
        assert_eq!(increment_sequence(5, 3), 8);
        let mut s = ProducerStates::default();
        write(&mut s, 0, &[batch(2, 0, i32::MAX - 1, 2)]).unwrap();
        assert_eq!(s.get(2).unwrap().batches[0].last_seq, i32::MAX);
        assert_eq!(
            write(&mut s, 2, &[batch(2, 0, 0, 1)]).unwrap(),
            Verdict::Append
        );
        assert_eq!(code(write(&mut s, 3, &[batch(2, 0, 2, 1)])), 45);
        // A batch spanning the wrap.
        let mut s = ProducerStates::default();
        write(&mut s, 0, &[batch(3, 0, i32::MAX - 1, 4)]).unwrap();
        assert_eq!(s.get(3).unwrap().batches[0].last_seq, 1);
        assert_eq!(
            write(&mut s, 4, &[batch(3, 0, 2, 1)]).unwrap(),
            Verdict::Append
        );
    }

    #[test]
    fn writes_of_one_append_see_each_other_and_commit_only_together() {
        let s = ProducerStates::default();
        let mut staged = Staged::default();
        let first = [batch(5, 0, 0, 2)];
        assert_eq!(
            s.check(&mut staged, &first, 0, None, None).unwrap(),
            Verdict::Append
        );
        // The same batch again in the same append is a duplicate of the staged one.
        assert!(matches!(
            s.check(&mut staged, &first, 2, None, None).unwrap(),
            Verdict::Duplicate(BatchMeta {
                first_offset: 0,
                ..
            })
        ));
        // The next batch follows the staged one, a gap does not.
        assert_eq!(
            s.check(&mut staged, &[batch(5, 0, 2, 1)], 2, None, None)
                .unwrap(),
            Verdict::Append
        );
        assert!(
            s.check(&mut staged, &[batch(5, 0, 9, 1)], 3, None, None)
                .is_err()
        );
        // A refused write within a request leaves the staged state as it was.
        let mixed = [batch(5, 0, 3, 1), batch(5, 0, 7, 1)];
        assert!(s.check(&mut staged, &mixed, 3, None, None).is_err());
        assert_eq!(staged.entries[&5].batches.len(), 2);
        // Nothing reaches the state until commit (an append that failed drops `staged`).
        assert!(s.is_empty());
    }

    #[test]
    fn expiry_drops_idle_producers() {
        let mut s = ProducerStates::default();
        write(&mut s, 0, &[batch(1, 0, 0, 1)]).unwrap(); // timestamp 1000
        let mut late = batch(2, 0, 0, 1);
        late.max_timestamp = 5000;
        write(&mut s, 1, &[late]).unwrap();
        assert_eq!(s.expire(5999, 5000), 0);
        assert_eq!(s.expire(6000, 5000), 1);
        assert!(s.get(1).is_none() && s.get(2).is_some());
    }

    #[test]
    fn snapshots_round_trip_and_refuse_damage() {
        let mut s = ProducerStates::default();
        for i in 0..7 {
            write(&mut s, i64::from(i), &[batch(1, 2, i, 1)]).unwrap();
        }
        write(&mut s, 7, &[batch(i64::MAX, 0, i32::MAX, 1)]).unwrap();
        let bytes = s.encode(42);
        assert_eq!(ProducerStates::decode(&bytes), Ok((42, s.clone())));
        let empty = ProducerStates::default().encode(0);
        assert_eq!(
            ProducerStates::decode(&empty),
            Ok((0, ProducerStates::default()))
        );
        for i in [0, 5, 9, 12, bytes.len() - 1] {
            let mut bad = bytes.clone();
            bad[i] ^= 0x40;
            assert!(ProducerStates::decode(&bad).is_err(), "flipped byte {i}");
        }
        assert!(ProducerStates::decode(&bytes[..bytes.len() - 3]).is_err());
    }

    #[test]
    fn snapshot_files_keep_the_newest_two_and_load_at_or_below_the_log_end() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = ProducerStates::default();
        for (i, offset) in [10i64, 20, 30].into_iter().enumerate() {
            write(&mut s, offset, &[batch(1, 0, i as i32, 1)]).unwrap();
            SnapshotJob {
                dir: dir.path().to_path_buf(),
                offset,
                bytes: s.encode(offset),
            }
            .run()
            .unwrap();
        }
        assert_eq!(list_snapshots(dir.path()).unwrap(), vec![20, 30]);
        let (at, loaded) = load_snapshot(dir.path(), 100).unwrap().unwrap();
        assert_eq!((at, &loaded), (30, &s));
        // The log lost its tail below 30: that snapshot goes, the one at 20 is used.
        let (at, loaded) = load_snapshot(dir.path(), 25).unwrap().unwrap();
        assert_eq!((at, loaded.get(1).unwrap().batches.len()), (20, 2));
        assert_eq!(list_snapshots(dir.path()).unwrap(), vec![20]);
        // A temporary file of an interrupted write is removed.
        std::fs::write(dir.path().join(format!("{:020}.snapshot.tmp", 40)), b"torn").unwrap();
        load_snapshot(dir.path(), 100).unwrap();
        assert!(!dir.path().join(format!("{:020}.snapshot.tmp", 40)).exists());
        // A damaged snapshot is passed over.
        std::fs::write(snapshot_path(dir.path(), 20), b"SPPS garbage").unwrap();
        assert!(load_snapshot(dir.path(), 100).unwrap().is_none());
    }

    /// A log of small segments, for tests of the state rebuilt from it.
    fn small_log(dir: &Path) -> PartitionLog {
        let cfg = crate::storage::log::LogConfig {
            segment_bytes: 400,
            segment_ms: None,
            index_interval_bytes: 1,
            ..crate::storage::log::LogConfig::BASE
        };
        PartitionLog::open(dir, "t", 0, cfg, false).unwrap()
    }

    /// Appends a batch of two records of producer `pid` (epoch 0) from sequence `seq`, as the
    /// partition does: checked against `live`, appended, then committed to `live`.
    fn append_idempotent(log: &mut PartitionLog, live: &mut ProducerStates, pid: i64, seq: i32) {
        use crate::protocol::batch::{split_produce_records, tests::idempotent_batch};
        let bytes = bytes::Bytes::from(idempotent_batch(pid, 0, seq, &[b"ab", b"cd"]));
        let batches = split_produce_records(&bytes, 1 << 20).unwrap();
        let headers: Vec<_> = batches.iter().map(|b| b.header).collect();
        let mut staged = Staged::default();
        let end = log.log_end_offset();
        assert_eq!(
            live.check(&mut staged, &headers, end, None, None).unwrap(),
            Verdict::Append
        );
        log.append(&batches, 0, None, 1000).unwrap();
        live.commit(staged);
    }

    /// Writes a snapshot of `state` at `offset` in the log's directory.
    fn snapshot(log: &PartitionLog, offset: i64, state: &ProducerStates) {
        SnapshotJob {
            dir: log.dir().to_path_buf(),
            offset,
            bytes: state.encode(offset),
        }
        .run()
        .unwrap();
    }

    /// The state rebuilt at open equals the state the appends built, whether it starts from
    /// a snapshot (at a roll) or from nothing, and a snapshot past the log end is not used.
    #[test]
    fn rebuild_from_a_snapshot_and_the_log_after_it() {
        let dir = tempfile::tempdir().unwrap();
        let mut log = small_log(dir.path());
        let mut live = ProducerStates::default();
        let mut snapshot_at = None;
        for i in 0..20i32 {
            let (segments, end, before) = (log.segment_count(), log.log_end_offset(), live.clone());
            append_idempotent(&mut log, &mut live, i64::from(i % 3), i / 3 * 2);
            // A roll snapshots the state before the batch that rolled, at its offset.
            if log.segment_count() > segments && i > 10 && snapshot_at.is_none() {
                snapshot(&log, end, &before);
                snapshot_at = Some(end);
            }
        }
        assert!(snapshot_at.is_some(), "the log rolled after batch 10");
        let Rebuilt {
            state: rebuilt,
            snapshot: from,
            ..
        } = rebuild(&log).unwrap();
        assert_eq!(from, snapshot_at);
        assert_eq!(rebuilt, live);
        // With no snapshot, the whole log gives the same state.
        for o in list_snapshots(log.dir()).unwrap() {
            fs::remove_file(snapshot_path(log.dir(), o)).unwrap();
        }
        {
            let r = rebuild(&log).unwrap();
            assert_eq!((r.state, r.snapshot), (live.clone(), None));
        }
        // A snapshot past the log end (a tail lost in a crash) is dropped and not used.
        let past = log.log_end_offset() + 10;
        snapshot(&log, past, &ProducerStates::default());
        {
            let r = rebuild(&log).unwrap();
            assert_eq!((r.state, r.snapshot), (live, None));
        }
        assert!(list_snapshots(log.dir()).unwrap().is_empty());
    }

    /// After a truncation, a snapshot above the new end is removed, and the state rebuilt is
    /// the one the log had at its new end, also once the log grows past the removed snapshot's
    /// offset again with other batches.
    #[test]
    fn snapshots_above_a_truncation_are_removed_and_never_used() {
        let dir = tempfile::tempdir().unwrap();
        let mut log = small_log(dir.path());
        let mut live = ProducerStates::default();
        // The state at each batch boundary: (log end, state).
        let mut at = vec![(0, live.clone())];
        for i in 0..12i32 {
            append_idempotent(&mut log, &mut live, i64::from(i % 2), i / 2 * 2);
            at.push((log.log_end_offset(), live.clone()));
            if i == 3 || i == 9 {
                snapshot(&log, log.log_end_offset(), &live);
            }
        }
        assert_eq!(list_snapshots(log.dir()).unwrap(), vec![8, 20]);
        // Cut inside batch 6 (offsets 12..=13): the log ends at 12.
        log.truncate_to(13).unwrap().unwrap().run().unwrap();
        assert_eq!(log.log_end_offset(), 12);
        remove_snapshots_above(log.dir(), 12).unwrap();
        assert_eq!(list_snapshots(log.dir()).unwrap(), vec![8]);
        let want = at.iter().find(|(end, _)| *end == 12).unwrap().1.clone();
        {
            let r = rebuild(&log).unwrap();
            assert_eq!((r.state, r.snapshot), (want.clone(), Some(8)));
        }
        // Past the old snapshot's offset again, with another producer's batches.
        let mut live = want;
        for seq in 0..6 {
            append_idempotent(&mut log, &mut live, 7, seq * 2);
        }
        assert!(log.log_end_offset() > 20);
        {
            let r = rebuild(&log).unwrap();
            assert_eq!((r.state, r.snapshot), (live, Some(8)));
        }
    }
}
