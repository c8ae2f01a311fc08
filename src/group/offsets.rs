//! The per-shard committed-offsets store of earlier versions (`<data_dir>/__groups/shard-N`),
//! replaced by the `__consumer_offsets` partition logs of [`super::store`]. It stays only to
//! read an old data dir once, at the first start of this version
//! ([`super::migrate_legacy_offsets`]), and so that tests can write such a data dir; nothing
//! else opens it. Its expiry and compaction are no longer used by the broker. What follows
//! describes the format as the old versions wrote it.
//!
//! Lives on: one shard, in a directory the caller picks. Only that shard's executor calls it. It is
//! synchronous: mutations write to the page cache (like a produce) and hand back a [`SyncJob`]
//! whose blocking `run()` (fdatasync, and compaction when due) the coordinator runs on
//! glommio's blocking pool, as the partition logs do with `storage::log::FlushJob`. An
//! OffsetCommit is answered only after its job succeeded, so an answered commit survives
//! `kill -9` and power loss.
//!
//! # Files
//!
//! - `offsets-<gen>.log` (gen: 20 digits): an append-only log of records. Appends go to the
//!   highest generation only.
//! - `snapshot-<gen>.snap`: every live record at the moment appends moved to
//!   `offsets-<gen>.log`, written as `snapshot-<gen>.snap.tmp`, fsync'd, then renamed, so it
//!   is either absent or complete.
//!
//! The state is the newest snapshot (if any) followed by every log of that generation or
//! later, in generation order. Files of older generations are obsolete and get deleted.
//!
//! # Record format
//!
//! Each record is a frame `[body length: u32 BE][crc: u32 BE][body]`, where the CRC32C covers
//! the four length bytes and the body, so a garbled length is caught as well. The body is
//! `[version u8 = 1][kind u8][group: u16 BE length + UTF-8]` followed by, per kind:
//!
//! - 0, commit: `[topic: u16 + UTF-8][partition i32][offset i64][leader epoch i32]
//!   [metadata: i32 length, -1 for none, + UTF-8][commit timestamp ms i64]
//!   [expire flag u8][expire timestamp ms i64, only if the flag is 1]`;
//! - 1, delete-partition tombstone (OffsetDelete, expiry): `[topic][partition i32]`;
//! - 2, delete-group tombstone (DeleteGroups, expiry): nothing more;
//! - 3, group-empty-since marker (for expiry, see below): `[flag u8][since ms i64 if 1]`.
//!
//! All integers are big-endian. Bodies longer than [`MAX_RECORD_BODY`] are refused.
//!
//! # Recovery (at [`OffsetStore::open`])
//!
//! 1. Leftover `*.tmp` files (a compaction that did not finish) are deleted.
//! 2. The newest snapshot is loaded; files of older generations are deleted.
//! 3. The logs from the snapshot's generation on are replayed record by record. A record
//!    whose frame is short, whose length is out of bounds or whose CRC fails ends the file:
//!    it is a torn or corrupt tail left by a crash mid-append, and nothing after it was ever
//!    acknowledged (an answer needs an fdatasync, which covers everything before it in the
//!    file). The active log is cut back to the last good record and the cut is logged with
//!    `tracing::warn` and the byte counts. A record with a good CRC that cannot be decoded
//!    (an unknown version, say) fails the open instead: dropping it would silently lose data.
//! 4. The directory is fsync'd, so the files found are durable before anything is answered.
//!
//! # Compaction
//!
//! When the files hold more than `max(2 × live records, 1024)` records (or an fdatasync has
//! failed, see below), the next mutation starts a compaction. On the executor, it only
//! serializes the live map to bytes in memory, creates `offsets-<gen+1>.log` and moves
//! appends there. The rest is carried by the mutation's [`SyncJob`] and runs off the
//! executor after that mutation's own fdatasync: write `snapshot-<gen+1>.snap.tmp`, fsync it,
//! rename it, fsync the directory, then delete every file of a lower generation. A crash at
//! any point leaves either the old files (the older snapshot and every log since, which are
//! deleted only once the new snapshot is durable) or the new complete snapshot plus the logs
//! from its generation on. A failed compaction is logged and changes nothing on disk; the
//! next one is due after the record count doubles again. Jobs may run concurrently and in
//! any order: a job only deletes generations below its own, and the fsync of a new log's
//! directory entry is done by whichever job first needs it.
//!
//! The stored form is therefore bounded by about twice the live records (plus 1024), however
//! often the same partitions are committed.
//!
//! # Failed writes and syncs
//!
//! A failed append (ENOSPC, EIO) is cut back off the file and leaves the map unchanged: the
//! caller answers an error and the store keeps working once the disk does. A failed fdatasync
//! is returned by [`SyncJob::run`] (answer an error); since the page cache state of the log
//! is then unknown, the next mutation forces a compaction, which rewrites the whole live state
//! from memory into new files. The records of the failed job stay in memory, so an
//! OffsetFetch may see a commit that was answered with an error, as after a timeout in Kafka.
//!
//! # Expiry (`offsets.retention.minutes`)
//!
//! Like Kafka ≥ 2.1: offsets of a group that has members never expire (Kafka also expires a
//! stable consumer group's offsets of topics it no longer subscribes to; Spate does not); for a
//! group that is
//! empty (no members, or a standalone consumer that only commits), an offset expires when
//! `now - max(commit timestamp, time the group became empty) >= retention`, or, if the commit
//! carried an explicit expire timestamp (OffsetCommit v1 to v4 retention), when
//! `now >= expire timestamp`. The store learns "became empty" by sweeping: [`OffsetStore::expire`]
//! asks `is_group_empty` for each group and records the first sweep that saw it empty as a
//! group-empty-since marker (and clears it when it sees members again), so the time is late by
//! at most one sweep interval, which only keeps offsets longer. The markers are persisted, so a
//! group that was already empty before a restart keeps its clock; a group that had members
//! when the broker stopped starts its clock at the first sweep after the restart, which is
//! when it lost them.

use std::collections::BTreeMap;
use std::fmt;
use std::fs::{self, File, OpenOptions};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use crate::storage::io::{faults, pwritev_all};

/// Kafka's `offsets.retention.minutes` default, 7 days, in milliseconds.
pub const DEFAULT_RETENTION_MS: i64 = 7 * 24 * 60 * 60 * 1000;

/// The largest record body written or accepted at recovery: a longer length field is
/// corruption. Kafka's `offset.metadata.max.bytes` (4096) keeps real records far below it.
pub const MAX_RECORD_BODY: usize = 1 << 20;

/// Compaction is not worth it below this many records in the files.
pub const COMPACT_MIN_RECORDS: u64 = 1024;

const FORMAT_VERSION: u8 = 1;
const KIND_COMMIT: u8 = 0;
const KIND_DELETE_PARTITION: u8 = 1;
const KIND_DELETE_GROUP: u8 = 2;
const KIND_EMPTY_SINCE: u8 = 3;
/// Length (u32) and CRC32C (u32).
const FRAME_HEADER: usize = 8;

/// One committed offset, as OffsetCommit stores it and OffsetFetch returns it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CommittedOffset {
    pub offset: i64,
    /// -1 when the client did not send one.
    pub leader_epoch: i32,
    pub metadata: Option<String>,
    pub commit_timestamp_ms: i64,
    /// Set only when the commit carried an explicit retention (OffsetCommit v1 to v4).
    pub expire_timestamp_ms: Option<i64>,
}

/// One record of the log, owned: what replay and appends apply to the map.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Record {
    Commit {
        group: String,
        topic: String,
        partition: i32,
        value: CommittedOffset,
    },
    DeletePartition {
        group: String,
        topic: String,
        partition: i32,
    },
    DeleteGroup {
        group: String,
    },
    EmptySince {
        group: String,
        since_ms: Option<i64>,
    },
}

fn invalid_input(msg: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidInput, msg)
}

fn put_str16(out: &mut Vec<u8>, s: &str, what: &str) -> io::Result<()> {
    let len = u16::try_from(s.len())
        .map_err(|_| invalid_input(format!("{what} is {} bytes, over 65535", s.len())))?;
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(s.as_bytes());
    Ok(())
}

fn put_opt_i64(out: &mut Vec<u8>, v: Option<i64>) {
    match v {
        Some(v) => {
            out.push(1);
            out.extend_from_slice(&v.to_be_bytes());
        }
        None => out.push(0),
    }
}

/// Borrowed view of a record, so snapshots encode the map without cloning it.
enum RecordRef<'a> {
    Commit(&'a str, &'a str, i32, &'a CommittedOffset),
    DeletePartition(&'a str, &'a str, i32),
    DeleteGroup(&'a str),
    EmptySince(&'a str, Option<i64>),
}

impl Record {
    fn as_ref(&self) -> RecordRef<'_> {
        match self {
            Record::Commit {
                group,
                topic,
                partition,
                value,
            } => RecordRef::Commit(group, topic, *partition, value),
            Record::DeletePartition {
                group,
                topic,
                partition,
            } => RecordRef::DeletePartition(group, topic, *partition),
            Record::DeleteGroup { group } => RecordRef::DeleteGroup(group),
            Record::EmptySince { group, since_ms } => RecordRef::EmptySince(group, *since_ms),
        }
    }
}

/// Appends one framed record to `out`.
fn encode(rec: RecordRef<'_>, out: &mut Vec<u8>) -> io::Result<()> {
    let start = out.len();
    out.extend_from_slice(&[0u8; FRAME_HEADER]);
    out.push(FORMAT_VERSION);
    match rec {
        RecordRef::Commit(group, topic, partition, v) => {
            out.push(KIND_COMMIT);
            put_str16(out, group, "group id")?;
            put_str16(out, topic, "topic")?;
            out.extend_from_slice(&partition.to_be_bytes());
            out.extend_from_slice(&v.offset.to_be_bytes());
            out.extend_from_slice(&v.leader_epoch.to_be_bytes());
            match &v.metadata {
                Some(m) => {
                    let len = i32::try_from(m.len())
                        .map_err(|_| invalid_input("metadata too long".to_string()))?;
                    out.extend_from_slice(&len.to_be_bytes());
                    out.extend_from_slice(m.as_bytes());
                }
                None => out.extend_from_slice(&(-1i32).to_be_bytes()),
            }
            out.extend_from_slice(&v.commit_timestamp_ms.to_be_bytes());
            put_opt_i64(out, v.expire_timestamp_ms);
        }
        RecordRef::DeletePartition(group, topic, partition) => {
            out.push(KIND_DELETE_PARTITION);
            put_str16(out, group, "group id")?;
            put_str16(out, topic, "topic")?;
            out.extend_from_slice(&partition.to_be_bytes());
        }
        RecordRef::DeleteGroup(group) => {
            out.push(KIND_DELETE_GROUP);
            put_str16(out, group, "group id")?;
        }
        RecordRef::EmptySince(group, since) => {
            out.push(KIND_EMPTY_SINCE);
            put_str16(out, group, "group id")?;
            put_opt_i64(out, since);
        }
    }
    let body_len = out.len() - start - FRAME_HEADER;
    if body_len > MAX_RECORD_BODY {
        return Err(invalid_input(format!(
            "offset record of {body_len} bytes is over {MAX_RECORD_BODY}"
        )));
    }
    let len_bytes = (body_len as u32).to_be_bytes();
    let crc = crc32c::crc32c_append(crc32c::crc32c(&len_bytes), &out[start + FRAME_HEADER..]);
    out[start..start + 4].copy_from_slice(&len_bytes);
    out[start + 4..start + FRAME_HEADER].copy_from_slice(&crc.to_be_bytes());
    Ok(())
}

/// A bounds-checked cursor over a record body; every getter is None past the end.
struct Reader<'a> {
    buf: &'a [u8],
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if self.buf.len() < n {
            return None;
        }
        let (head, tail) = self.buf.split_at(n);
        self.buf = tail;
        Some(head)
    }

    fn array<const N: usize>(&mut self) -> Option<[u8; N]> {
        self.take(N)?.try_into().ok()
    }

    fn u8(&mut self) -> Option<u8> {
        Some(self.take(1)?[0])
    }

    fn i32(&mut self) -> Option<i32> {
        Some(i32::from_be_bytes(self.array()?))
    }

    fn i64(&mut self) -> Option<i64> {
        Some(i64::from_be_bytes(self.array()?))
    }

    fn str16(&mut self) -> Option<String> {
        let len = u16::from_be_bytes(self.array()?) as usize;
        String::from_utf8(self.take(len)?.to_vec()).ok()
    }

    fn opt_i64(&mut self) -> Option<Option<i64>> {
        match self.u8()? {
            0 => Some(None),
            1 => Some(Some(self.i64()?)),
            _ => None,
        }
    }
}

/// Decodes a body whose CRC matched; None if it does not parse exactly.
fn decode_body(body: &[u8]) -> Option<Record> {
    let mut r = Reader { buf: body };
    if r.u8()? != FORMAT_VERSION {
        return None;
    }
    let kind = r.u8()?;
    let group = r.str16()?;
    let rec = match kind {
        KIND_COMMIT => {
            let topic = r.str16()?;
            let partition = r.i32()?;
            let offset = r.i64()?;
            let leader_epoch = r.i32()?;
            let metadata = match r.i32()? {
                -1 => None,
                n => Some(String::from_utf8(r.take(usize::try_from(n).ok()?)?.to_vec()).ok()?),
            };
            Record::Commit {
                group,
                topic,
                partition,
                value: CommittedOffset {
                    offset,
                    leader_epoch,
                    metadata,
                    commit_timestamp_ms: r.i64()?,
                    expire_timestamp_ms: r.opt_i64()?,
                },
            }
        }
        KIND_DELETE_PARTITION => Record::DeletePartition {
            group,
            topic: r.str16()?,
            partition: r.i32()?,
        },
        KIND_DELETE_GROUP => Record::DeleteGroup { group },
        KIND_EMPTY_SINCE => Record::EmptySince {
            group,
            since_ms: r.opt_i64()?,
        },
        _ => return None,
    };
    r.buf.is_empty().then_some(rec)
}

/// What a file holds up to its first bad frame.
struct Scan {
    records: Vec<Record>,
    /// Bytes of whole, good records from the start of the file.
    valid_len: u64,
}

/// Reads records until the end or the first torn or corrupt frame. A frame with a good CRC
/// that does not decode is an error, not a tail to cut.
fn scan(buf: &[u8], path: &Path) -> io::Result<Scan> {
    let mut records = Vec::new();
    let mut pos = 0usize;
    while let Some(header) = buf.get(pos..pos + FRAME_HEADER) {
        let len_bytes = [header[0], header[1], header[2], header[3]];
        let len = u32::from_be_bytes(len_bytes) as usize;
        let crc = u32::from_be_bytes([header[4], header[5], header[6], header[7]]);
        if len == 0 || len > MAX_RECORD_BODY {
            break;
        }
        let Some(body) = buf.get(pos + FRAME_HEADER..pos + FRAME_HEADER + len) else {
            break;
        };
        if crc32c::crc32c_append(crc32c::crc32c(&len_bytes), body) != crc {
            break;
        }
        let rec = decode_body(body).ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                format!(
                    "{}: the record at byte {pos} has a good checksum but cannot be decoded \
                     (written by a newer version?)",
                    path.display()
                ),
            )
        })?;
        records.push(rec);
        pos += FRAME_HEADER + len;
    }
    Ok(Scan {
        records,
        valid_len: pos as u64,
    })
}

fn log_path(dir: &Path, generation: u64) -> PathBuf {
    dir.join(format!("offsets-{generation:020}.log"))
}

fn snapshot_path(dir: &Path, generation: u64) -> PathBuf {
    dir.join(format!("snapshot-{generation:020}.snap"))
}

/// Which generation a file name is of, and whether it is a snapshot.
fn parse_name(name: &str) -> Option<(u64, bool)> {
    if let Some(g) = name
        .strip_prefix("offsets-")
        .and_then(|n| n.strip_suffix(".log"))
    {
        return Some((g.parse().ok()?, false));
    }
    let g = name
        .strip_prefix("snapshot-")
        .and_then(|n| n.strip_suffix(".snap"))?;
    Some((g.parse().ok()?, true))
}

fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// One group's offsets, topic by topic, and when the store last saw it become empty.
#[derive(Debug, Default)]
struct GroupOffsets {
    topics: BTreeMap<String, BTreeMap<i32, CommittedOffset>>,
    empty_since_ms: Option<i64>,
}

/// The in-memory state: what replay builds and what appends update.
#[derive(Debug, Default)]
struct Table {
    groups: BTreeMap<String, GroupOffsets>,
    /// Offsets in `groups`.
    live: u64,
}

impl Table {
    fn apply(&mut self, rec: Record) {
        match rec {
            Record::Commit {
                group,
                topic,
                partition,
                value,
            } => {
                let g = self.groups.entry(group).or_default();
                if g.topics
                    .entry(topic)
                    .or_default()
                    .insert(partition, value)
                    .is_none()
                {
                    self.live += 1;
                }
            }
            Record::DeletePartition {
                group,
                topic,
                partition,
            } => {
                let Some(g) = self.groups.get_mut(&group) else {
                    return;
                };
                if let Some(parts) = g.topics.get_mut(&topic) {
                    if parts.remove(&partition).is_some() {
                        self.live -= 1;
                    }
                    if parts.is_empty() {
                        g.topics.remove(&topic);
                    }
                }
                if g.topics.is_empty() {
                    self.groups.remove(&group);
                }
            }
            Record::DeleteGroup { group } => {
                if let Some(g) = self.groups.remove(&group) {
                    self.live -= g.topics.values().map(|p| p.len() as u64).sum::<u64>();
                }
            }
            Record::EmptySince { group, since_ms } => {
                // A group without offsets has nothing to expire: the marker has no effect.
                if let Some(g) = self.groups.get_mut(&group) {
                    g.empty_since_ms = since_ms;
                }
            }
        }
    }

    /// Records a snapshot of this table holds.
    fn snapshot_records(&self) -> u64 {
        self.live
            + self
                .groups
                .values()
                .filter(|g| g.empty_since_ms.is_some())
                .count() as u64
    }

    /// The live state as framed records: every offset, and the empty-since markers.
    fn encode_snapshot(&self) -> io::Result<Vec<u8>> {
        let mut out = Vec::new();
        for (group, g) in &self.groups {
            for (topic, parts) in &g.topics {
                for (partition, v) in parts {
                    encode(RecordRef::Commit(group, topic, *partition, v), &mut out)?;
                }
            }
            if let Some(since) = g.empty_since_ms {
                encode(RecordRef::EmptySince(group, Some(since)), &mut out)?;
            }
        }
        Ok(out)
    }
}

/// The durable committed offsets of every group coordinated by one shard.
#[derive(Debug)]
pub struct OffsetStore {
    dir: PathBuf,
    table: Table,
    /// Records in the files recovery would read now (the snapshot and the logs after it):
    /// compared with the live ones to decide when to compact.
    stored: u64,
    /// The generation of the active log.
    generation: u64,
    log: Arc<File>,
    log_path: PathBuf,
    log_len: u64,
    /// Whether the active log's directory entry is known durable; shared with the jobs.
    log_entry_synced: Arc<AtomicBool>,
    /// Set by a job whose fdatasync failed: the next mutation rewrites everything.
    sync_failed: Arc<AtomicBool>,
    compact_min_records: u64,
    /// Test hook: the next append writes half its bytes, then fails with ENOSPC.
    #[cfg(test)]
    fail_next_write: bool,
}

impl OffsetStore {
    /// Opens (or creates) the store in `dir` and recovers it (see the module doc).
    pub fn open(dir: &Path) -> io::Result<OffsetStore> {
        let created = !dir.exists();
        fs::create_dir_all(dir)?;
        if created {
            // The new directory's own entry must be durable too.
            let parent = dir.parent().filter(|p| !p.as_os_str().is_empty());
            sync_dir(parent.unwrap_or(Path::new(".")))?;
        }

        let mut logs = Vec::new();
        let mut snapshots = Vec::new();
        for entry in fs::read_dir(dir)? {
            let entry = entry?;
            let name = entry.file_name();
            let Some(name) = name.to_str() else { continue };
            if name.ends_with(".tmp") {
                tracing::info!(file = %entry.path().display(), "removing an unfinished offsets compaction");
                fs::remove_file(entry.path())?;
                continue;
            }
            match parse_name(name) {
                Some((g, true)) => snapshots.push(g),
                Some((g, false)) => logs.push(g),
                None => {}
            }
        }
        logs.sort_unstable();
        snapshots.sort_unstable();
        let base = snapshots.last().copied().unwrap_or(0);
        for &g in snapshots.iter().filter(|&&g| g < base) {
            fs::remove_file(snapshot_path(dir, g))?;
        }
        for &g in logs.iter().filter(|&&g| g < base) {
            fs::remove_file(log_path(dir, g))?;
        }
        logs.retain(|&g| g >= base);
        let generation = logs.last().copied().unwrap_or(base).max(base);

        let mut table = Table::default();
        let mut stored = 0u64;
        if !snapshots.is_empty() {
            let path = snapshot_path(dir, base);
            let buf = fs::read(&path)?;
            let s = scan(&buf, &path)?;
            if s.valid_len < buf.len() as u64 {
                // Snapshots are renamed into place only after an fsync: this is damage at
                // rest, not a crash. Keep what is readable.
                tracing::error!(
                    file = %path.display(),
                    valid_bytes = s.valid_len,
                    file_bytes = buf.len(),
                    "offsets snapshot is corrupt; keeping the records before the damage"
                );
            }
            stored += s.records.len() as u64;
            s.records.into_iter().for_each(|r| table.apply(r));
        }

        let mut active_len = 0u64;
        for &g in &logs {
            let path = log_path(dir, g);
            let buf = fs::read(&path)?;
            let s = scan(&buf, &path)?;
            if s.valid_len < buf.len() as u64 {
                tracing::warn!(
                    file = %path.display(),
                    records = s.records.len(),
                    valid_bytes = s.valid_len,
                    file_bytes = buf.len(),
                    cut_bytes = buf.len() as u64 - s.valid_len,
                    "offsets log ends in a torn or corrupt record; cutting it off"
                );
                if g == generation {
                    let f = OpenOptions::new().write(true).open(&path)?;
                    f.set_len(s.valid_len)?;
                    f.sync_data()?;
                }
            }
            if g == generation {
                active_len = s.valid_len;
            }
            stored += s.records.len() as u64;
            s.records.into_iter().for_each(|r| table.apply(r));
        }

        let path = log_path(dir, generation);
        let log = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)?;
        sync_dir(dir)?;
        tracing::info!(
            dir = %dir.display(),
            groups = table.groups.len(),
            offsets = table.live,
            records = stored,
            "committed offsets loaded"
        );
        Ok(OffsetStore {
            dir: dir.to_path_buf(),
            table,
            stored,
            generation,
            log: Arc::new(log),
            log_path: path,
            log_len: active_len,
            log_entry_synced: Arc::new(AtomicBool::new(true)),
            sync_failed: Arc::new(AtomicBool::new(false)),
            compact_min_records: COMPACT_MIN_RECORDS,
            #[cfg(test)]
            fail_next_write: false,
        })
    }

    /// Stores `group`'s offsets for each `(topic, partition, offset)`. The map is updated at
    /// once (a later OffsetFetch sees them); answer the OffsetCommit only after the returned
    /// job ran successfully. On error nothing changed, in memory or on disk.
    pub fn commit<T: AsRef<str>>(
        &mut self,
        group: &str,
        entries: &[(T, i32, CommittedOffset)],
    ) -> io::Result<SyncJob> {
        let records = entries
            .iter()
            .map(|(topic, partition, value)| Record::Commit {
                group: group.to_string(),
                topic: topic.as_ref().to_string(),
                partition: *partition,
                value: value.clone(),
            })
            .collect();
        self.append(records)
    }

    /// The committed offset of one partition.
    pub fn fetch(&self, group: &str, topic: &str, partition: i32) -> Option<&CommittedOffset> {
        self.table
            .groups
            .get(group)?
            .topics
            .get(topic)?
            .get(&partition)
    }

    /// Every committed offset of `group`, by topic then partition (OffsetFetch for all).
    pub fn group_offsets<'a>(
        &'a self,
        group: &str,
    ) -> impl Iterator<Item = (&'a str, i32, &'a CommittedOffset)> + use<'a> {
        self.table
            .groups
            .get(group)
            .into_iter()
            .flat_map(|g| g.topics.iter())
            .flat_map(|(topic, parts)| parts.iter().map(move |(p, v)| (topic.as_str(), *p, v)))
    }

    /// The groups that have committed offsets, sorted.
    pub fn groups(&self) -> Vec<String> {
        self.table.groups.keys().cloned().collect()
    }

    /// Whether `group` has any committed offset.
    pub fn has_group(&self, group: &str) -> bool {
        self.table.groups.contains_key(group)
    }

    /// When the store last saw `group` become empty (see the module doc on expiry).
    pub fn group_empty_since(&self, group: &str) -> Option<i64> {
        self.table.groups.get(group)?.empty_since_ms
    }

    /// Live offsets across all groups.
    pub fn live_offsets(&self) -> u64 {
        self.table.live
    }

    /// Records in the files recovery would read (what compaction keeps small).
    pub fn stored_records(&self) -> u64 {
        self.stored
    }

    /// OffsetDelete: removes these partitions' offsets of `group` with tombstones. Partitions
    /// without an offset are skipped; None when none had one (nothing to write).
    pub fn delete_partitions<T: AsRef<str>>(
        &mut self,
        group: &str,
        partitions: &[(T, i32)],
    ) -> io::Result<Option<SyncJob>> {
        let records: Vec<Record> = partitions
            .iter()
            .filter(|(t, p)| self.fetch(group, t.as_ref(), *p).is_some())
            .map(|(t, p)| Record::DeletePartition {
                group: group.to_string(),
                topic: t.as_ref().to_string(),
                partition: *p,
            })
            .collect();
        if records.is_empty() {
            return Ok(None);
        }
        self.append(records).map(Some)
    }

    /// DeleteGroups: removes every offset of `group` with one tombstone; None when it had
    /// none.
    pub fn delete_group(&mut self, group: &str) -> io::Result<Option<SyncJob>> {
        if !self.has_group(group) {
            return Ok(None);
        }
        self.append(vec![Record::DeleteGroup {
            group: group.to_string(),
        }])
        .map(Some)
    }

    /// One retention sweep (Kafka's `offsets.retention.check.interval.ms` timer): removes the
    /// expired offsets of empty groups and notes which groups are empty (see the module doc).
    /// None when nothing changed.
    pub fn expire(
        &mut self,
        now_ms: i64,
        retention_ms: i64,
        is_group_empty: impl Fn(&str) -> bool,
    ) -> io::Result<Option<SyncJob>> {
        let mut records = Vec::new();
        let mut expired_offsets = 0usize;
        for (name, g) in &self.table.groups {
            if !is_group_empty(name) {
                if g.empty_since_ms.is_some() {
                    records.push(Record::EmptySince {
                        group: name.clone(),
                        since_ms: None,
                    });
                }
                continue;
            }
            let since = g.empty_since_ms.unwrap_or(now_ms);
            let mut total = 0usize;
            let mut expired = Vec::new();
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
                        expired.push((topic, *partition));
                    }
                }
            }
            expired_offsets += expired.len();
            if expired.len() == total {
                records.push(Record::DeleteGroup {
                    group: name.clone(),
                });
                continue;
            }
            if g.empty_since_ms.is_none() {
                records.push(Record::EmptySince {
                    group: name.clone(),
                    since_ms: Some(now_ms),
                });
            }
            records.extend(
                expired
                    .into_iter()
                    .map(|(topic, partition)| Record::DeletePartition {
                        group: name.clone(),
                        topic: topic.clone(),
                        partition,
                    }),
            );
        }
        if records.is_empty() {
            return Ok(None);
        }
        let job = self.append(records)?;
        if expired_offsets > 0 {
            tracing::info!(
                dir = %self.dir.display(),
                offsets = expired_offsets,
                "committed offsets expired"
            );
        }
        Ok(Some(job))
    }

    /// Writes `records` with one pwritev, then applies them; starts a compaction when due.
    fn append(&mut self, records: Vec<Record>) -> io::Result<SyncJob> {
        if records.is_empty() {
            return Ok(SyncJob::default());
        }
        let mut buf = Vec::new();
        for r in &records {
            encode(r.as_ref(), &mut buf)?;
        }
        let start = self.log_len;
        if let Err(e) = self.write_at(start, &buf) {
            // Leave no partial record behind: the log ends where it ended before.
            let _ = self.log.set_len(start);
            return Err(e);
        }
        self.log_len += buf.len() as u64;
        self.stored += records.len() as u64;
        records.into_iter().for_each(|r| self.table.apply(r));

        let sync = FileSync {
            file: Arc::clone(&self.log),
            path: self.log_path.clone(),
            dir: self.dir.clone(),
            entry_synced: Arc::clone(&self.log_entry_synced),
        };
        let compaction = if self.compaction_due() {
            match self.start_compaction() {
                Ok(c) => Some(c),
                Err(e) => {
                    // The append itself is done; compaction is retried at the next mutation.
                    tracing::warn!(dir = %self.dir.display(), error = %e, "could not start an offsets compaction");
                    None
                }
            }
        } else {
            None
        };
        Ok(SyncJob {
            sync: Some(sync),
            compaction,
            sync_failed: Some(Arc::clone(&self.sync_failed)),
        })
    }

    fn write_at(&mut self, start: u64, buf: &[u8]) -> io::Result<()> {
        faults::check(faults::Op::Write, &self.log_path)?;
        #[cfg(test)]
        if std::mem::take(&mut self.fail_next_write) {
            pwritev_all(&self.log, start, &[&buf[..buf.len() / 2]])?;
            return Err(io::Error::from(rustix::io::Errno::NOSPC));
        }
        pwritev_all(&self.log, start, &[buf])
    }

    fn compaction_due(&self) -> bool {
        let live = self.table.live + self.table.groups.len() as u64;
        self.sync_failed.load(Ordering::Acquire)
            || self.stored > (2 * live).max(self.compact_min_records)
    }

    /// The executor's part of a compaction: snapshot the map in memory and move appends to
    /// a new generation. The files are written by the returned job.
    fn start_compaction(&mut self) -> io::Result<Compaction> {
        let bytes = self.table.encode_snapshot()?;
        let generation = self.generation + 1;
        let path = log_path(&self.dir, generation);
        let log = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&path)?;
        self.generation = generation;
        self.log = Arc::new(log);
        self.log_path = path;
        self.log_len = 0;
        self.log_entry_synced = Arc::new(AtomicBool::new(false));
        self.sync_failed.store(false, Ordering::Release);
        let records = self.table.snapshot_records();
        self.stored = records;
        Ok(Compaction {
            dir: self.dir.clone(),
            generation,
            bytes,
            records,
        })
    }

    #[cfg(test)]
    fn fail_next_write(&mut self) {
        self.fail_next_write = true;
    }

    #[cfg(test)]
    fn set_compact_min_records(&mut self, n: u64) {
        self.compact_min_records = n;
    }
}

/// The fdatasync that makes an append durable.
#[derive(Debug)]
struct FileSync {
    file: Arc<File>,
    path: PathBuf,
    dir: PathBuf,
    entry_synced: Arc<AtomicBool>,
}

impl FileSync {
    fn run(&self) -> io::Result<()> {
        faults::check(faults::Op::Sync, &self.path)?;
        self.file.sync_data()?;
        // A log created by a compaction is durable only once its directory entry is.
        if !self.entry_synced.load(Ordering::Acquire) {
            sync_dir(&self.dir)?;
            self.entry_synced.store(true, Ordering::Release);
        }
        Ok(())
    }
}

/// The file part of a compaction: persist the snapshot, then drop older generations.
struct Compaction {
    dir: PathBuf,
    generation: u64,
    bytes: Vec<u8>,
    records: u64,
}

impl fmt::Debug for Compaction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Compaction")
            .field("generation", &self.generation)
            .field("records", &self.records)
            .field("bytes", &self.bytes.len())
            .finish()
    }
}

impl Compaction {
    fn run(self) -> io::Result<()> {
        let path = snapshot_path(&self.dir, self.generation);
        let tmp = path.with_extension("snap.tmp");
        let written = (|| {
            let f = File::create(&tmp)?;
            faults::check(faults::Op::Write, &tmp)?;
            pwritev_all(&f, 0, &[&self.bytes])?;
            faults::check(faults::Op::Sync, &tmp)?;
            f.sync_all()?;
            fs::rename(&tmp, &path)?;
            sync_dir(&self.dir)
        })();
        if let Err(e) = written {
            let _ = fs::remove_file(&tmp);
            return Err(e);
        }
        // The snapshot is durable: older generations are obsolete. Their unlinks need no
        // fsync: if one is lost, the next open deletes the file again.
        for entry in fs::read_dir(&self.dir)? {
            let entry = entry?;
            let old = entry
                .file_name()
                .to_str()
                .and_then(parse_name)
                .is_some_and(|(g, _)| g < self.generation);
            if old {
                match fs::remove_file(entry.path()) {
                    Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
                    _ => {}
                }
            }
        }
        tracing::debug!(
            dir = %self.dir.display(),
            generation = self.generation,
            records = self.records,
            bytes = self.bytes.len(),
            "offsets compacted"
        );
        Ok(())
    }
}

/// The blocking work a mutation leaves: the fdatasync of its records and, when one is due, a
/// compaction. Run it on glommio's blocking pool, never on an executor. Jobs are independent:
/// they may run concurrently and in any order, and dropping one only gives up durability of
/// its own records (and that compaction, which the next one makes up for).
#[derive(Debug, Default)]
#[must_use = "the records are durable only once the job ran"]
pub struct SyncJob {
    sync: Option<FileSync>,
    compaction: Option<Compaction>,
    sync_failed: Option<Arc<AtomicBool>>,
}

impl SyncJob {
    /// Makes the mutation durable (blocking). Ok means its records survive a crash: answer
    /// the request then. An error is the fdatasync's, after which the next mutation rewrites
    /// the store from memory. A compaction runs after the sync; its failure is only logged,
    /// since the records are durable either way.
    pub fn run(self) -> io::Result<()> {
        if let Some(s) = &self.sync
            && let Err(e) = s.run()
        {
            if let Some(flag) = &self.sync_failed {
                flag.store(true, Ordering::Release);
            }
            tracing::error!(file = %s.path.display(), error = %e, "offsets fdatasync failed");
            return Err(e);
        }
        if let Some(c) = self.compaction {
            let dir = c.dir.clone();
            if let Err(e) = c.run() {
                tracing::warn!(dir = %dir.display(), error = %e, "offsets compaction failed; the old files stay in use");
            }
        }
        Ok(())
    }

    /// Whether the job carries a compaction (for metrics and tests).
    pub fn compacts(&self) -> bool {
        self.compaction.is_some()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn off(offset: i64, ts: i64) -> CommittedOffset {
        CommittedOffset {
            offset,
            leader_epoch: 3,
            metadata: Some(format!("m{offset}")),
            commit_timestamp_ms: ts,
            expire_timestamp_ms: None,
        }
    }

    fn dir_bytes(dir: &Path) -> u64 {
        fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().metadata().unwrap().len())
            .sum()
    }

    fn active_log(dir: &Path) -> PathBuf {
        let mut logs: Vec<PathBuf> = fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|e| e == "log"))
            .collect();
        logs.sort();
        logs.pop().unwrap()
    }

    #[test]
    fn jobs_can_go_to_the_blocking_pool() {
        fn send<T: Send + 'static>() {}
        send::<SyncJob>();
    }

    #[test]
    fn records_round_trip() {
        let recs = [
            Record::Commit {
                group: "g".into(),
                topic: "t".into(),
                partition: 7,
                value: CommittedOffset {
                    expire_timestamp_ms: Some(99),
                    metadata: None,
                    ..off(5, 1)
                },
            },
            Record::Commit {
                group: "g".into(),
                topic: "t".into(),
                partition: 8,
                value: CommittedOffset {
                    metadata: Some(String::new()),
                    ..off(6, 2)
                },
            },
            Record::DeletePartition {
                group: "g".into(),
                topic: "t".into(),
                partition: 7,
            },
            Record::DeleteGroup { group: "g".into() },
            Record::EmptySince {
                group: "g".into(),
                since_ms: Some(-4),
            },
            Record::EmptySince {
                group: "".into(),
                since_ms: None,
            },
        ];
        let mut buf = Vec::new();
        for r in &recs {
            encode(r.as_ref(), &mut buf).unwrap();
        }
        let s = scan(&buf, Path::new("x")).unwrap();
        assert_eq!(s.records, recs);
        assert_eq!(s.valid_len, buf.len() as u64);
        // A garbled length is caught by the CRC, not trusted.
        buf[1] ^= 0x40;
        assert_eq!(scan(&buf, Path::new("x")).unwrap().valid_len, 0);
    }

    #[test]
    fn oversized_fields_are_refused_before_writing() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = OffsetStore::open(dir.path()).unwrap();
        let long = "x".repeat(70_000);
        assert!(s.commit(&long, &[("t", 0, off(1, 1))]).is_err());
        assert!(s.commit("g", &[(long.as_str(), 0, off(1, 1))]).is_err());
        assert_eq!(s.live_offsets(), 0);
        assert_eq!(fs::metadata(active_log(dir.path())).unwrap().len(), 0);
    }

    #[test]
    fn commit_fetch_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = OffsetStore::open(dir.path()).unwrap();
        assert!(s.groups().is_empty());
        s.commit("g1", &[("t", 0, off(10, 1)), ("t", 1, off(11, 1))])
            .unwrap()
            .run()
            .unwrap();
        s.commit("g2", &[("u".to_string(), 0, off(20, 2))])
            .unwrap()
            .run()
            .unwrap();
        s.commit("g1", &[("t", 0, off(12, 3))])
            .unwrap()
            .run()
            .unwrap();
        assert_eq!(s.fetch("g1", "t", 0), Some(&off(12, 3)));
        assert_eq!(s.fetch("g1", "t", 2), None);
        assert_eq!(s.fetch("g3", "t", 0), None);
        drop(s);

        let s = OffsetStore::open(dir.path()).unwrap();
        assert_eq!(s.groups(), vec!["g1".to_string(), "g2".to_string()]);
        assert_eq!(s.fetch("g1", "t", 0), Some(&off(12, 3)));
        let all: Vec<_> = s.group_offsets("g1").collect();
        assert_eq!(all, vec![("t", 0, &off(12, 3)), ("t", 1, &off(11, 1))]);
        assert_eq!(s.group_offsets("nope").count(), 0);
        assert_eq!(s.fetch("g2", "u", 0), Some(&off(20, 2)));
        assert_eq!(s.live_offsets(), 3);
    }

    #[test]
    fn repeated_commits_stay_small() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = OffsetStore::open(dir.path()).unwrap();
        let mut compactions = 0;
        for i in 0..10_000i64 {
            let job = s
                .commit(
                    "group",
                    &[
                        ("topic", 0, off(i, i)),
                        ("topic", 1, off(i + 1, i)),
                        ("topic", 2, off(i + 2, i)),
                    ],
                )
                .unwrap();
            compactions += job.compacts() as u32;
            job.run().unwrap();
            assert!(s.stored_records() <= COMPACT_MIN_RECORDS + 3);
        }
        assert!(compactions >= 20, "{compactions} compactions");
        let size = dir_bytes(dir.path());
        assert!(size < 64 * 1024, "{size} bytes stored");
        drop(s);

        let s = OffsetStore::open(dir.path()).unwrap();
        for p in 0..3 {
            assert_eq!(
                s.fetch("group", "topic", p),
                Some(&off(9_999 + p as i64, 9_999))
            );
        }
        assert_eq!(s.live_offsets(), 3);
    }

    #[test]
    fn crash_before_the_compaction_job_keeps_every_commit() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = OffsetStore::open(dir.path()).unwrap();
        s.set_compact_min_records(8);
        let mut pending = Vec::new();
        for i in 0..40i64 {
            let job = s.commit("g", &[("t", (i % 2) as i32, off(i, i))]).unwrap();
            if job.compacts() {
                // The compaction's files are never written: as if killed before it ran.
                pending.push(job);
            } else {
                job.run().unwrap();
            }
        }
        assert!(!pending.is_empty());
        let reopened = OffsetStore::open(dir.path()).unwrap();
        assert_eq!(reopened.fetch("g", "t", 0), Some(&off(38, 38)));
        assert_eq!(reopened.fetch("g", "t", 1), Some(&off(39, 39)));
        drop(reopened);

        // Jobs that run late and out of order still leave a consistent store.
        for job in pending.into_iter().rev() {
            job.run().unwrap();
        }
        let reopened = OffsetStore::open(dir.path()).unwrap();
        assert_eq!(reopened.fetch("g", "t", 0), Some(&off(38, 38)));
        assert_eq!(reopened.fetch("g", "t", 1), Some(&off(39, 39)));
        assert_eq!(reopened.live_offsets(), 2);
    }

    #[test]
    fn torn_tail_is_cut_and_later_commits_work() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = OffsetStore::open(dir.path()).unwrap();
        s.commit("g", &[("t", 0, off(1, 1))])
            .unwrap()
            .run()
            .unwrap();
        s.commit("g", &[("t", 1, off(2, 1))])
            .unwrap()
            .run()
            .unwrap();
        let good = fs::metadata(active_log(dir.path())).unwrap().len();
        s.commit("g", &[("t", 0, off(3, 2))])
            .unwrap()
            .run()
            .unwrap();
        drop(s);

        // Truncated mid-record.
        let path = active_log(dir.path());
        let full = fs::metadata(&path).unwrap().len();
        let f = OpenOptions::new().write(true).open(&path).unwrap();
        f.set_len(full - 5).unwrap();
        drop(f);
        let mut s = OffsetStore::open(dir.path()).unwrap();
        assert_eq!(fs::metadata(&path).unwrap().len(), good);
        assert_eq!(s.fetch("g", "t", 0), Some(&off(1, 1)));
        assert_eq!(s.fetch("g", "t", 1), Some(&off(2, 1)));
        s.commit("g", &[("t", 0, off(4, 3))])
            .unwrap()
            .run()
            .unwrap();
        drop(s);

        // Garbled last record.
        let mut bytes = fs::read(&path).unwrap();
        let last = bytes.len() - 3;
        bytes[last] ^= 0xff;
        fs::write(&path, &bytes).unwrap();
        let mut s = OffsetStore::open(dir.path()).unwrap();
        assert_eq!(fs::metadata(&path).unwrap().len(), good);
        assert_eq!(s.fetch("g", "t", 0), Some(&off(1, 1)));
        s.commit("g", &[("t", 0, off(5, 4))])
            .unwrap()
            .run()
            .unwrap();
        drop(s);
        let s = OffsetStore::open(dir.path()).unwrap();
        assert_eq!(s.fetch("g", "t", 0), Some(&off(5, 4)));
        assert_eq!(s.fetch("g", "t", 1), Some(&off(2, 1)));
    }

    #[test]
    fn undecodable_record_with_good_crc_fails_the_open() {
        let dir = tempfile::tempdir().unwrap();
        drop(OffsetStore::open(dir.path()).unwrap());
        let body = [9u8, 0, 0, 1, b'g'];
        let len = (body.len() as u32).to_be_bytes();
        let crc = crc32c::crc32c_append(crc32c::crc32c(&len), &body);
        let mut frame = len.to_vec();
        frame.extend_from_slice(&crc.to_be_bytes());
        frame.extend_from_slice(&body);
        fs::write(active_log(dir.path()), &frame).unwrap();
        let err = OffsetStore::open(dir.path()).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidData);
    }

    #[test]
    fn tombstones_survive_reopen_and_compaction() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = OffsetStore::open(dir.path()).unwrap();
        s.commit(
            "a",
            &[
                ("t", 0, off(1, 1)),
                ("t", 1, off(2, 1)),
                ("u", 0, off(3, 1)),
            ],
        )
        .unwrap()
        .run()
        .unwrap();
        s.commit("b", &[("t", 0, off(4, 1))])
            .unwrap()
            .run()
            .unwrap();
        s.delete_partitions("a", &[("t", 1), ("t", 9)])
            .unwrap()
            .unwrap()
            .run()
            .unwrap();
        assert!(s.delete_partitions("a", &[("t", 9)]).unwrap().is_none());
        s.delete_group("b").unwrap().unwrap().run().unwrap();
        assert!(s.delete_group("b").unwrap().is_none());
        drop(s);

        let mut s = OffsetStore::open(dir.path()).unwrap();
        assert_eq!(s.groups(), vec!["a".to_string()]);
        assert_eq!(s.fetch("a", "t", 1), None);
        assert_eq!(s.fetch("a", "t", 0), Some(&off(1, 1)));
        assert_eq!(s.fetch("b", "t", 0), None);
        assert_eq!(s.live_offsets(), 2);
        // Deleting the last partitions of a group removes the group.
        s.delete_partitions("a", &[("t".to_string(), 0), ("u".to_string(), 0)])
            .unwrap()
            .unwrap()
            .run()
            .unwrap();
        assert!(s.groups().is_empty());
        // Compaction drops tombstones without bringing anything back.
        s.set_compact_min_records(2);
        s.commit("c", &[("t", 0, off(5, 1))])
            .unwrap()
            .run()
            .unwrap();
        s.commit("c", &[("t", 0, off(6, 1))])
            .unwrap()
            .run()
            .unwrap();
        drop(s);
        let s = OffsetStore::open(dir.path()).unwrap();
        assert_eq!(s.groups(), vec!["c".to_string()]);
        assert_eq!(s.fetch("c", "t", 0), Some(&off(6, 1)));
        // The snapshot (one offset) and the commit after it.
        assert_eq!(s.stored_records(), 2);
    }

    #[test]
    fn expiry_removes_only_empty_groups_old_offsets() {
        let day = 24 * 60 * 60 * 1000;
        let dir = tempfile::tempdir().unwrap();
        let mut s = OffsetStore::open(dir.path()).unwrap();
        s.commit("active", &[("t", 0, off(1, 0))])
            .unwrap()
            .run()
            .unwrap();
        s.commit("idle", &[("t", 0, off(2, 0)), ("t", 1, off(3, 5 * day))])
            .unwrap()
            .run()
            .unwrap();
        s.commit("gone", &[("t", 0, off(4, 0))])
            .unwrap()
            .run()
            .unwrap();
        let explicit = CommittedOffset {
            expire_timestamp_ms: Some(2 * day),
            ..off(5, 0)
        };
        s.commit("short", &[("t", 0, explicit)])
            .unwrap()
            .run()
            .unwrap();
        let empty = |g: &str| g != "active";

        // Day 1: the first sweep only notes which groups are empty.
        let job = s.expire(day, 7 * day, empty).unwrap().unwrap();
        job.run().unwrap();
        assert_eq!(s.group_empty_since("idle"), Some(day));
        assert_eq!(s.group_empty_since("active"), None);
        assert_eq!(s.live_offsets(), 5);
        assert!(s.expire(day + 1, 7 * day, empty).unwrap().is_none());

        // Day 3: an explicit expire timestamp applies on its own.
        s.expire(3 * day, 7 * day, empty)
            .unwrap()
            .unwrap()
            .run()
            .unwrap();
        assert_eq!(s.fetch("short", "t", 0), None);
        drop(s);

        // The empty-since clock survives a restart.
        let mut s = OffsetStore::open(dir.path()).unwrap();
        assert_eq!(s.group_empty_since("idle"), Some(day));
        // Day 8: 7 days since "idle" and "gone" became empty; "idle"'s partition 1 was
        // committed on day 5, so it stays. "active" has members: nothing of it expires.
        s.expire(8 * day, 7 * day, empty)
            .unwrap()
            .unwrap()
            .run()
            .unwrap();
        assert_eq!(s.fetch("active", "t", 0), Some(&off(1, 0)));
        assert_eq!(s.fetch("idle", "t", 0), None);
        assert_eq!(s.fetch("idle", "t", 1), Some(&off(3, 5 * day)));
        assert!(!s.has_group("gone"));
        drop(s);

        let mut s = OffsetStore::open(dir.path()).unwrap();
        assert_eq!(s.groups(), vec!["active".to_string(), "idle".to_string()]);
        // Members come back to "idle": its clock is cleared, then restarts when it empties.
        s.expire(9 * day, 7 * day, |_| false)
            .unwrap()
            .unwrap()
            .run()
            .unwrap();
        assert_eq!(s.group_empty_since("idle"), None);
        s.expire(13 * day, 7 * day, empty)
            .unwrap()
            .unwrap()
            .run()
            .unwrap();
        assert_eq!(s.group_empty_since("idle"), Some(13 * day));
        assert!(s.fetch("idle", "t", 1).is_some());
        s.expire(20 * day, 7 * day, empty)
            .unwrap()
            .unwrap()
            .run()
            .unwrap();
        assert_eq!(s.groups(), vec!["active".to_string()]);
    }

    #[test]
    fn failed_write_changes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = OffsetStore::open(dir.path()).unwrap();
        s.commit("g", &[("t", 0, off(1, 1))])
            .unwrap()
            .run()
            .unwrap();
        let len = fs::metadata(active_log(dir.path())).unwrap().len();

        s.fail_next_write();
        let err = s
            .commit("g", &[("t", 0, off(2, 2)), ("t", 1, off(3, 2))])
            .unwrap_err();
        assert_eq!(
            rustix::io::Errno::from_io_error(&err),
            Some(rustix::io::Errno::NOSPC)
        );
        assert_eq!(s.fetch("g", "t", 0), Some(&off(1, 1)));
        assert_eq!(s.fetch("g", "t", 1), None);
        assert_eq!(s.live_offsets(), 1);
        assert_eq!(fs::metadata(active_log(dir.path())).unwrap().len(), len);

        s.fail_next_write();
        assert!(s.delete_group("g").is_err());
        assert_eq!(s.fetch("g", "t", 0), Some(&off(1, 1)));

        // The disk is back: commits work and reopen sees exactly what succeeded.
        s.commit("g", &[("t", 1, off(4, 3))])
            .unwrap()
            .run()
            .unwrap();
        drop(s);
        let s = OffsetStore::open(dir.path()).unwrap();
        assert_eq!(s.fetch("g", "t", 0), Some(&off(1, 1)));
        assert_eq!(s.fetch("g", "t", 1), Some(&off(4, 3)));
        assert_eq!(s.live_offsets(), 2);
    }

    #[test]
    fn failed_sync_forces_a_rewrite() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = OffsetStore::open(dir.path()).unwrap();
        s.commit("g", &[("t", 0, off(1, 1))])
            .unwrap()
            .run()
            .unwrap();
        s.sync_failed.store(true, Ordering::Release);
        let job = s.commit("g", &[("t", 0, off(2, 2))]).unwrap();
        assert!(job.compacts());
        job.run().unwrap();
        drop(s);
        let s = OffsetStore::open(dir.path()).unwrap();
        assert_eq!(s.fetch("g", "t", 0), Some(&off(2, 2)));
        assert_eq!(s.stored_records(), 1);
    }

    #[test]
    fn leftover_tmp_and_old_generations_are_cleaned_at_open() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = OffsetStore::open(dir.path()).unwrap();
        s.set_compact_min_records(1);
        let mut compacted = false;
        for i in 1..=6 {
            let job = s.commit("g", &[("t", 0, off(i, 1))]).unwrap();
            compacted |= job.compacts();
            job.run().unwrap();
        }
        assert!(compacted);
        assert!(!log_path(dir.path(), 0).exists());
        drop(s);
        fs::write(
            dir.path().join("snapshot-00000000000000000099.snap.tmp"),
            b"junk",
        )
        .unwrap();
        fs::write(log_path(dir.path(), 0), b"stale").unwrap();
        let s = OffsetStore::open(dir.path()).unwrap();
        assert_eq!(s.fetch("g", "t", 0), Some(&off(6, 1)));
        let names: Vec<String> = fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        assert!(names.iter().all(|n| !n.ends_with(".tmp")), "{names:?}");
        assert!(!log_path(dir.path(), 0).exists());
    }
}
