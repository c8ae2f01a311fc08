//! The log cleaner: compaction of a partition's log (`cleanup.policy=compact`), and the
//! crash-safe swap of cleaned segments into the log.
//!
//! Lives on: a [`CleanJob`] is taken from a log on the shard that owns the partition
//! (`PartitionLog::begin_clean`), runs off the executor with owned data (open
//! descriptors of the sealed segments it reads, which nothing writes), and is swapped in on
//! the owning shard again (`PartitionLog::finish_clean`). A shard runs one clean at a time.
//!
//! What a clean does, step by step:
//!
//! 1. **Range.** The cleanable range runs from the log's first segment to the first segment
//!    that may not be cleaned: the active one, the first not wholly below the last stable
//!    offset (a clean never touches an open transaction), or the first holding a record
//!    younger than `min.compaction.lag.ms`. Its dirty part starts at the cleaner checkpoint
//!    (where the previous clean's key map ended).
//! 2. **Key map.** The dirty part is read batch by batch and the offset of the last record of
//!    every key is kept in a map bounded by `--log-cleaner-dedupe-buffer-bytes`
//!    ([`KEY_ENTRY_BYTES`] a key: a 128-bit digest and an offset). When the next batch would
//!    not fit, the map ends before it: the clean covers up to there and the rest waits for the
//!    next pass, so a very large log is cleaned in several passes. Control batches and the
//!    batches of aborted transactions add no keys.
//! 3. **Rewrite.** The range's segments, in groups of consecutive segments that fit one
//!    segment (`segment.bytes`, offsets relative to the group's base within `u32`), are
//!    rewritten into staged segments under `cleaner/`, named by their group's base offset.
//!    Below the key map's end a record is kept when it is the last of its key (records
//!    without a key are always kept), with its original offset, so offsets in a cleaned log
//!    are sparse. A batch that keeps all its records is copied byte for byte; one that keeps
//!    some is decompressed, its kept records copied byte for byte (headers and all), and
//!    compressed again in the codec it came in (gzip, snappy, lz4, zstd), under its own
//!    header: it still spans the offsets it did (base offset, last offset delta), as Kafka
//!    keeps them, with the count, max timestamp, length and CRC set again.
//!    A tombstone (null value) that is the last of its key is dropped once its timestamp is
//!    `delete.retention.ms` old; the earliest time a kept tombstone expires is remembered so
//!    the log is cleaned again then, even with nothing new written. The batches of aborted
//!    transactions (from the aborted-transaction index) are dropped; a transaction marker is
//!    dropped once no record of its transaction is left before it and it is
//!    `delete.retention.ms` old (its expiry counts as a tombstone's); an idempotent
//!    producer's last batch in the range (marker or data) stays, as its header alone (no
//!    records) when nothing of it is otherwise left, as Kafka does, so its sequence survives a
//!    restart that rebuilds producer state from the log. At or above the key map's end nothing is dropped, so every gap the
//!    clean makes in the offsets lies below the new checkpoint, which is how an open tells a
//!    cleaned gap from a lost segment.
//! 4. **Stage.** The staged segments (with their offset and time indexes) are fsync'd, and a
//!    manifest (`cleaner/swap.pending`: the new checkpoint and, per group, its segments and
//!    whether a cleaned segment replaces them) is written and fsync'd, as is the directory.
//! 5. **Commit** (owning shard; renames only, no fsync). If the log still has the segments the
//!    job read (no retention, truncation or DeleteRecords came in between), the manifest is
//!    renamed to `cleaner-swap` in the partition directory: from here on the clean is
//!    decided. The staged files are renamed over each group's first segment (index, time
//!    index, then the log), the group's other segments are renamed into `cleaner/` as
//!    `.deleted`, and the in-memory segment list is swapped. Readers holding file ranges of a replaced segment
//!    keep reading them: a `FileSlice` holds its own descriptor of the old file.
//! 6. **Tail** (blocking pool). The directory is fsync'd, `cleaner/` (the old files) is
//!    removed, the checkpoint is written (`cleaner-offset-checkpoint`, with the earliest kept
//!    tombstone's expiry, so a restart still cleans the log again then), and the manifest is
//!    removed, each durable before the next.
//!
//! Invariant (crash safety): until `cleaner-swap` exists the old segments are untouched, and
//! once it exists the clean is completed by whoever comes next. [`recover`], run first by
//! every open, rolls back a clean without the manifest (removes `cleaner/`) and completes one
//! with it (moves the staged files that are still staged, removes the groups' other segments,
//! empties the replaced segments' index files so the open rebuilds them, writes the
//! checkpoint, removes `cleaner/` and the manifest). Every step is idempotent, so a kill -9 at
//! any point, recovery included, leaves a log that the next open completes with nothing lost.
//! This relies on renames within a file system becoming durable in the order they were made
//! (ext4 and XFS journal them in order); every step that must be durable before the next is
//! fsync'd.

use std::collections::HashMap;
use std::collections::hash_map::DefaultHasher;
use std::fs::{self, File};
use std::hash::{Hash, Hasher};
use std::io;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use kafka_protocol::compression::{Compressor, Decompressor, Gzip, Lz4, Snappy, Zstd};

use crate::protocol::batch::{BatchHeader, CRC_START, HEADER_LEN};
use crate::storage::io::{faults, pwritev_all, read_at_most};
use crate::storage::segment::{self, Placed, Segment};
use crate::storage::txnindex::AbortedTxn;

/// Kafka's default of `min.compaction.lag.ms` (and of `log.cleaner.min.compaction.lag.ms`).
pub const MIN_COMPACTION_LAG_MS_DEFAULT: u64 = 0;

/// Memory the key map counts for each distinct key: a 16-byte digest and an 8-byte offset,
/// plus the hash table's control byte and spare capacity, rounded up.
pub const KEY_ENTRY_BYTES: u64 = 32;

/// The staging directory of a clean in progress, inside the partition directory.
pub const STAGING_DIR: &str = "cleaner";

/// The manifest as the job writes it, inside [`STAGING_DIR`] (not yet decided).
const PENDING_MANIFEST: &str = "swap.pending";

/// The manifest of a decided clean, in the partition directory: its presence commits it.
pub const MANIFEST_FILE: &str = "cleaner-swap";

/// The offset below which the log has been cleaned (the last clean's key map end).
pub const CHECKPOINT_FILE: &str = "cleaner-offset-checkpoint";

/// Bytes read at a time from a segment being cleaned.
const READ_WINDOW_BYTES: usize = 1 << 20;

/// A compacted topic's settings, topic configs over broker defaults.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct CompactionConfig {
    pub min_cleanable_dirty_ratio: f64,
    pub min_compaction_lag_ms: u64,
    /// None: no bound.
    pub max_compaction_lag_ms: Option<u64>,
    pub delete_retention_ms: u64,
}

/// A shard cleaner's bounds.
#[derive(Clone, Copy, Debug)]
pub struct CleanerLimits {
    /// Memory of the key map (`--log-cleaner-dedupe-buffer-bytes`).
    pub key_map_bytes: u64,
    /// Bytes read plus written per second (`--log-cleaner-io-bytes-per-sec-max`; None: no
    /// limit).
    pub io_bytes_per_sec: Option<u64>,
}

/// One sealed segment of the range being cleaned, as the job reads it.
#[derive(Debug)]
pub struct Source {
    pub base_offset: i64,
    /// Where its offsets end: the next segment's base offset.
    pub next_base: i64,
    pub size: u64,
    /// Its log file, held open: nothing writes a sealed segment, and the job reads it whatever
    /// happens to the log meanwhile.
    pub file: Arc<File>,
}

/// Consecutive segments cleaned into one, named by the first one's base offset; when nothing
/// of them is left (`replaced` false) they are removed with no successor.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Group {
    pub bases: Vec<i64>,
    pub replaced: bool,
}

/// What a clean read and wrote, for logs and metrics.
#[derive(Clone, Copy, Debug, Default)]
pub struct CleanStats {
    pub bytes_read: u64,
    pub bytes_written: u64,
    /// Bytes of the cleaned segments before and after.
    pub bytes_before: u64,
    pub bytes_after: u64,
    pub records_read: u64,
    pub records_kept: u64,
    pub batches_recompressed: u64,
    pub elapsed_ms: u64,
}

/// A clean to run off the executor ([`CleanJob::run`]).
#[derive(Debug)]
pub struct CleanJob {
    pub topic: String,
    pub partition: i32,
    pub dir: PathBuf,
    pub sources: Vec<Source>,
    /// Where the dirty part starts (the cleaner checkpoint).
    pub dirty_from: i64,
    pub config: CompactionConfig,
    pub limits: CleanerLimits,
    pub segment_bytes: u64,
    pub index_interval_bytes: u64,
    /// The aborted transactions overlapping the range.
    pub aborted: Vec<AbortedTxn>,
    pub now_ms: i64,
    /// The log's generation when the job was taken (see `PartitionLog::begin_clean`).
    pub generation: u64,
}

/// A clean that is staged and waits for its commit on the owning shard.
#[derive(Debug)]
pub struct Cleaned {
    pub dir: PathBuf,
    pub groups: Vec<Group>,
    pub checkpoint: i64,
    /// When the earliest tombstone kept will have passed `delete.retention.ms`.
    pub tombstone_deadline: Option<i64>,
    pub stats: CleanStats,
    pub generation: u64,
}

/// A 128-bit digest of a key (two SipHash values): what the key map stores instead of keys.
fn digest(key: &[u8]) -> u128 {
    let half = |salt: u8| {
        let mut h = DefaultHasher::new();
        salt.hash(&mut h);
        key.hash(&mut h);
        h.finish()
    };
    (u128::from(half(0)) << 64) | u128::from(half(1))
}

/// Paces reads and writes to a rate, sleeping the blocking thread when ahead of it.
struct Throttle {
    rate: Option<u64>,
    started: Instant,
    bytes: u64,
}

impl Throttle {
    fn new(rate: Option<u64>) -> Throttle {
        Throttle {
            rate,
            started: Instant::now(),
            bytes: 0,
        }
    }

    fn account(&mut self, bytes: u64) {
        self.bytes += bytes;
        if let Some(rate) = self.rate.filter(|r| *r > 0) {
            let due = Duration::from_secs_f64(self.bytes as f64 / rate as f64);
            let spent = self.started.elapsed();
            if due > spent {
                std::thread::sleep(due - spent);
            }
        }
    }
}

/// Calls `f` with every whole batch of a sealed segment, in order, reading the file in
/// windows. A batch that does not parse ends the walk with an error: sealed segments hold
/// only whole, checked batches.
fn for_each_batch(
    file: &File,
    size: u64,
    throttle: &mut Throttle,
    mut f: impl FnMut(&BatchHeader, Bytes) -> io::Result<u64>,
) -> io::Result<()> {
    let mut pos = 0u64;
    let mut window = Bytes::new();
    let mut window_pos = 0u64;
    while pos + HEADER_LEN as u64 <= size {
        let window_end = window_pos + window.len() as u64;
        if pos + HEADER_LEN as u64 > window_end {
            let want = READ_WINDOW_BYTES.min((size - pos) as usize);
            window = Bytes::from(read_at_most(file, pos, want)?);
            window_pos = pos;
            throttle.account(window.len() as u64);
        }
        let off = (pos - window_pos) as usize;
        let header = BatchHeader::parse(&window[off..])
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "short batch header"))?;
        let total = header.total_len() as u64;
        if header.batch_length < (HEADER_LEN - 12) as i32 || header.magic != 2 || pos + total > size
        {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("bad batch at position {pos} of a sealed segment"),
            ));
        }
        if pos + total > window_pos + window.len() as u64 {
            let want = READ_WINDOW_BYTES
                .max(total as usize)
                .min((size - pos) as usize);
            window = Bytes::from(read_at_most(file, pos, want)?);
            window_pos = pos;
            throttle.account(window.len() as u64);
            if (window.len() as u64) < total {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "segment shorter than its batches",
                ));
            }
        }
        let off = (pos - window_pos) as usize;
        let written = f(&header, window.slice(off..off + total as usize))?;
        throttle.account(written);
        pos += total;
    }
    Ok(())
}

fn invalid(e: impl std::fmt::Display) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, e.to_string())
}

/// Whether a data batch belongs to an aborted transaction.
fn is_aborted(h: &BatchHeader, aborted: &[AbortedTxn]) -> bool {
    h.is_transactional()
        && !h.is_control()
        && aborted.iter().any(|a| {
            a.producer_id == h.producer_id
                && a.first_offset <= h.base_offset
                && h.base_offset <= a.last_offset
        })
}

/// One record of a batch as the cleaner sees it: where its bytes (length prefix included)
/// lie in the batch's decompressed records, its offset and timestamp, its key, and whether its
/// value is null (a tombstone).
struct RawRecord {
    range: Range<usize>,
    offset: i64,
    timestamp: i64,
    key: Option<Range<usize>>,
    tombstone: bool,
}

/// A zigzag varint (Kafka's record fields) at `*pos`, moving past it.
fn read_varint(b: &[u8], pos: &mut usize) -> Option<i64> {
    let mut v: u64 = 0;
    for shift in (0..70).step_by(7) {
        let byte = *b.get(*pos)?;
        *pos += 1;
        v |= u64::from(byte & 0x7f) << shift;
        if byte & 0x80 == 0 {
            return Some(((v >> 1) as i64) ^ -((v & 1) as i64));
        }
    }
    None
}

/// A batch's records section, decompressed.
fn records_of(batch: &Bytes, h: &BatchHeader) -> io::Result<Bytes> {
    let mut payload = batch.slice(HEADER_LEN..);
    let out = match h.compression() {
        0 => return Ok(payload),
        1 => Gzip::decompress(&mut payload, |b: &mut Bytes| Ok(b.split_off(0))),
        2 => Snappy::decompress(&mut payload, |b: &mut Bytes| Ok(b.split_off(0))),
        3 => Lz4::decompress(&mut payload, |b: &mut Bytes| Ok(b.split_off(0))),
        4 => Zstd::decompress(&mut payload, |b: &mut Bytes| Ok(b.split_off(0))),
        c => return Err(invalid(format!("unknown compression {c}"))),
    };
    out.map_err(invalid)
}

/// Splits decompressed records into [`RawRecord`]s; an error when they do not parse.
fn parse_records(h: &BatchHeader, records: &[u8]) -> io::Result<Vec<RawRecord>> {
    let bad = || {
        invalid(format!(
            "records of the batch at {} do not parse",
            h.base_offset
        ))
    };
    // Each record takes at least a byte: a corrupt count sizes nothing beyond the bytes.
    let mut out = Vec::with_capacity((h.records_count.max(0) as usize).min(records.len()));
    let mut pos = 0;
    for _ in 0..h.records_count.max(0) {
        let start = pos;
        let len =
            usize::try_from(read_varint(records, &mut pos).ok_or_else(bad)?).map_err(|_| bad())?;
        let end = pos
            .checked_add(len)
            .filter(|e| *e <= records.len())
            .ok_or_else(bad)?;
        let body = &records[..end];
        let mut p = pos + 1; // attributes
        let ts_delta = read_varint(body, &mut p).ok_or_else(bad)?;
        let offset_delta = read_varint(body, &mut p).ok_or_else(bad)?;
        let key_len = read_varint(body, &mut p).ok_or_else(bad)?;
        let key = match usize::try_from(key_len) {
            Ok(n) => {
                let r = p..p.checked_add(n).filter(|e| *e <= end).ok_or_else(bad)?;
                p = r.end;
                Some(r)
            }
            Err(_) => None,
        };
        let value_len = read_varint(body, &mut p).ok_or_else(bad)?;
        let timestamp = if h.is_log_append_time() {
            h.max_timestamp
        } else {
            h.base_timestamp.saturating_add(ts_delta)
        };
        out.push(RawRecord {
            range: start..end,
            offset: h.base_offset + offset_delta,
            timestamp,
            key,
            tombstone: value_len < 0,
        });
        pos = end;
    }
    Ok(out)
}

/// Copies `raw` into a compressor's buffer.
fn put(b: &mut BytesMut, raw: &[u8]) -> anyhow::Result<()> {
    b.extend_from_slice(raw);
    Ok(())
}

/// `batch` with only the `kept` records (raw, in order): the header keeps the base offset,
/// the last offset delta, the base timestamp, the producer's id, epoch and base sequence
/// (so the batch spans the offsets it did, as Kafka keeps them), the records are compressed
/// again in the batch's codec, and the count, the max timestamp (of the records kept, for
/// CreateTime), the length and the CRC are set again. With no record kept, the header alone,
/// uncompressed: how an idempotent producer's last batch stays when none of its records does.
fn rebuild(
    batch: &Bytes,
    h: &BatchHeader,
    records: &[u8],
    kept: &[&RawRecord],
) -> io::Result<Bytes> {
    let mut raw = Vec::new();
    for r in kept {
        raw.extend_from_slice(&records[r.range.clone()]);
    }
    let mut out = BytesMut::from(&batch[..HEADER_LEN]);
    let codec = if kept.is_empty() { 0 } else { h.compression() };
    let compressed = match codec {
        0 => {
            out.extend_from_slice(&raw);
            Ok(())
        }
        1 => Gzip::compress(&mut out, |b: &mut BytesMut| put(b, &raw)),
        2 => Snappy::compress(&mut out, |b: &mut BytesMut| put(b, &raw)),
        3 => Lz4::compress(&mut out, |b: &mut BytesMut| put(b, &raw)),
        4 => Zstd::compress(&mut out, |b: &mut BytesMut| put(b, &raw)),
        c => return Err(invalid(format!("unknown compression {c}"))),
    };
    compressed.map_err(invalid)?;
    let batch_length = i32::try_from(out.len() - 12).map_err(|_| invalid("batch too large"))?;
    out[8..12].copy_from_slice(&batch_length.to_be_bytes());
    let attributes = (h.attributes & !0x07) | codec;
    out[21..23].copy_from_slice(&attributes.to_be_bytes());
    if !h.is_log_append_time()
        && let Some(max) = kept.iter().map(|r| r.timestamp).max()
    {
        out[35..43].copy_from_slice(&max.to_be_bytes());
    }
    out[57..61].copy_from_slice(&(kept.len() as i32).to_be_bytes());
    let crc = crc32c::crc32c(&out[CRC_START..]);
    out[17..21].copy_from_slice(&crc.to_be_bytes());
    Ok(out.freeze())
}

impl CleanJob {
    /// Builds the key map, writes the cleaned segments and the manifest under `cleaner/`, all
    /// fsync'd. Blocking: run it off the executor (the shard gives it a thread of its own).
    /// Nothing in the log changes until the
    /// owning shard commits the result.
    pub fn run(self) -> io::Result<Cleaned> {
        let started = Instant::now();
        let staging = self.dir.join(STAGING_DIR);
        match fs::remove_dir_all(&staging) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
            _ => {}
        }
        fs::create_dir(&staging)?;
        let mut throttle = Throttle::new(self.limits.io_bytes_per_sec);
        let mut stats = CleanStats::default();
        let capacity = (self.limits.key_map_bytes / KEY_ENTRY_BYTES).max(1) as usize;
        let end = self.sources.last().map_or(self.dirty_from, |s| s.next_base);

        // The key map over the dirty part, and each producer's last batch in the range.
        let mut map: HashMap<u128, i64> = HashMap::new();
        let mut map_end = end;
        let mut full = false;
        let mut last_of_producer: HashMap<i64, i64> = HashMap::new();
        for src in &self.sources {
            for_each_batch(&src.file, src.size, &mut throttle, |h, bytes| {
                if h.producer_id >= 0 {
                    last_of_producer.insert(h.producer_id, h.base_offset);
                }
                if full
                    || h.last_offset() < self.dirty_from
                    || h.is_control()
                    || is_aborted(h, &self.aborted)
                {
                    return Ok(0);
                }
                if !map.is_empty() && map.len() + h.records_count.max(0) as usize > capacity {
                    full = true;
                    map_end = h.base_offset;
                    return Ok(0);
                }
                let records = records_of(&bytes, h)?;
                for r in parse_records(h, &records)? {
                    if r.offset >= self.dirty_from
                        && let Some(k) = r.key
                    {
                        map.insert(digest(&records[k]), r.offset);
                    }
                }
                Ok(0)
            })?;
        }

        // Groups of the sources the clean rewrites: those starting below the map's end.
        let mut groups: Vec<Vec<&Source>> = Vec::new();
        let mut group_bytes = 0u64;
        for src in self.sources.iter().filter(|s| s.base_offset < map_end) {
            let fits = groups.last().is_some_and(|g| {
                group_bytes + src.size <= self.segment_bytes
                    && src.next_base - g[0].base_offset <= i64::from(u32::MAX)
            });
            if fits {
                group_bytes += src.size;
                if let Some(g) = groups.last_mut() {
                    g.push(src);
                }
            } else {
                group_bytes = src.size;
                groups.push(vec![src]);
            }
        }

        let retention = self.config.delete_retention_ms as i64;
        let mut tombstone_deadline: Option<i64> = None;
        // Producers whose current transaction still has records in the cleaned log.
        let mut txn_data_left: HashMap<i64, bool> = HashMap::new();
        let mut out_groups = Vec::with_capacity(groups.len());
        for group in &groups {
            let base = group[0].base_offset;
            let mut seg: Option<Segment> = None;
            for src in group {
                stats.bytes_before += src.size;
                for_each_batch(&src.file, src.size, &mut throttle, |h, bytes| {
                    stats.bytes_read += bytes.len() as u64;
                    stats.records_read += h.records_count.max(0) as u64;
                    let producers_last = h.producer_id >= 0
                        && last_of_producer.get(&h.producer_id) == Some(&h.base_offset);
                    let keep: Option<Bytes> = if h.base_offset >= map_end {
                        Some(bytes)
                    } else if h.is_control() {
                        // A transaction's marker goes once nothing of the transaction is left
                        // before it and it is delete.retention.ms old, unless it is its
                        // producer's last batch (the producer state needs it).
                        let data_left = txn_data_left.remove(&h.producer_id).unwrap_or(false);
                        let expires = h.max_timestamp.saturating_add(retention);
                        if data_left || producers_last {
                            Some(bytes)
                        } else if expires <= self.now_ms {
                            None
                        } else {
                            tombstone_deadline =
                                Some(tombstone_deadline.map_or(expires, |d| d.min(expires)));
                            Some(bytes)
                        }
                    } else if is_aborted(h, &self.aborted) {
                        None
                    } else {
                        let records = records_of(&bytes, h)?;
                        let all = parse_records(h, &records)?;
                        let kept: Vec<&RawRecord> = all
                            .iter()
                            .filter(|r| {
                                let latest = match &r.key {
                                    None => return true,
                                    Some(k) => map
                                        .get(&digest(&records[k.clone()]))
                                        .is_none_or(|&o| o <= r.offset),
                                };
                                if !latest {
                                    return false;
                                }
                                if r.tombstone {
                                    let expires = r.timestamp.saturating_add(retention);
                                    if expires <= self.now_ms {
                                        return false;
                                    }
                                    tombstone_deadline = Some(
                                        tombstone_deadline.map_or(expires, |d| d.min(expires)),
                                    );
                                }
                                true
                            })
                            .collect();
                        if h.is_transactional() && !kept.is_empty() {
                            txn_data_left.insert(h.producer_id, true);
                        }
                        if kept.len() == all.len() {
                            (!all.is_empty() || producers_last).then_some(bytes)
                        } else if kept.is_empty() && !producers_last {
                            None
                        } else {
                            stats.batches_recompressed += 1;
                            Some(rebuild(&bytes, h, &records, &kept)?)
                        }
                    };
                    let Some(out) = keep else {
                        return Ok(0);
                    };
                    let nh = BatchHeader::parse(&out).ok_or_else(|| invalid("encoded batch"))?;
                    stats.records_kept += nh.records_count.max(0) as u64;
                    if seg.is_none() {
                        seg = Some(Segment::create(&staging, base)?);
                    }
                    if let Some(s) = seg.as_mut() {
                        s.append(
                            &[&out],
                            &[Placed {
                                offset: nh.base_offset,
                                len: out.len() as u64,
                                max_timestamp: nh.max_timestamp,
                            }],
                            self.index_interval_bytes,
                        )
                        .map_err(|f| f.error)?;
                    }
                    stats.bytes_written += out.len() as u64;
                    Ok(out.len() as u64)
                })?;
            }
            let replaced = match seg {
                Some(mut s) => {
                    s.seal().map_err(|f| f.error)?;
                    s.sync_all()?;
                    stats.bytes_after += s.size;
                    true
                }
                None => false,
            };
            out_groups.push(Group {
                bases: group.iter().map(|s| s.base_offset).collect(),
                replaced,
            });
        }

        let manifest = Manifest {
            checkpoint: map_end,
            tombstone_deadline,
            groups: out_groups,
        };
        write_synced(
            &staging.join(PENDING_MANIFEST),
            manifest.encode().as_bytes(),
        )?;
        File::open(&staging)?.sync_all()?;
        File::open(&self.dir)?.sync_all()?;
        faults::check(faults::Op::CleanWritten, &self.dir)?;
        stats.elapsed_ms = started.elapsed().as_millis() as u64;
        Ok(Cleaned {
            dir: self.dir,
            groups: manifest.groups,
            checkpoint: manifest.checkpoint,
            tombstone_deadline,
            stats,
            generation: self.generation,
        })
    }
}

/// The text of a clean's manifest: `checkpoint N`, `tombstones T` when a kept tombstone
/// expires at T (ms), then one line per group, `replace B...`
/// (a cleaned segment named by the first replaces them) or `delete B...` (nothing is left).
#[derive(Clone, Debug, PartialEq, Eq)]
struct Manifest {
    checkpoint: i64,
    tombstone_deadline: Option<i64>,
    groups: Vec<Group>,
}

impl Manifest {
    fn encode(&self) -> String {
        let mut s = format!("checkpoint {}\n", self.checkpoint);
        if let Some(t) = self.tombstone_deadline {
            s.push_str(&format!("tombstones {t}\n"));
        }
        for g in &self.groups {
            s.push_str(if g.replaced { "replace" } else { "delete" });
            for b in &g.bases {
                s.push_str(&format!(" {b}"));
            }
            s.push('\n');
        }
        s
    }

    fn parse(text: &str) -> Option<Manifest> {
        let mut lines = text.lines();
        let checkpoint = lines.next()?.strip_prefix("checkpoint ")?.parse().ok()?;
        let mut tombstone_deadline = None;
        let mut groups = Vec::new();
        for line in lines {
            if let Some(t) = line.strip_prefix("tombstones ") {
                tombstone_deadline = Some(t.parse().ok()?);
                continue;
            }
            let mut words = line.split(' ');
            let replaced = match words.next()? {
                "replace" => true,
                "delete" => false,
                _ => return None,
            };
            let bases = words
                .map(|w| w.parse::<i64>().ok())
                .collect::<Option<Vec<_>>>()?;
            if bases.is_empty() {
                return None;
            }
            groups.push(Group { bases, replaced });
        }
        Some(Manifest {
            checkpoint,
            tombstone_deadline,
            groups,
        })
    }
}

/// Writes a small file and fsyncs it (not its directory).
fn write_synced(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let f = File::create(path)?;
    pwritev_all(&f, 0, &[bytes])?;
    f.sync_all()
}

/// The cleaner checkpoint of a partition directory (0 when none was written), and when the
/// earliest tombstone its last clean kept expires (so a restart cleans the log again then,
/// with nothing new written). One line: `OFFSET [DEADLINE_MS]`.
pub fn read_checkpoint(dir: &Path) -> io::Result<(i64, Option<i64>)> {
    match fs::read_to_string(dir.join(CHECKPOINT_FILE)) {
        Ok(s) => {
            let mut words = s.split_whitespace();
            let offset = words.next().and_then(|w| w.parse().ok()).unwrap_or(0);
            let deadline = words.next().and_then(|w| w.parse().ok());
            Ok((offset, deadline))
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok((0, None)),
        Err(e) => Err(e),
    }
}

/// Persists the cleaner checkpoint atomically (temporary file, fsync, rename, directory
/// fsync).
fn write_checkpoint(dir: &Path, offset: i64, tombstone_deadline: Option<i64>) -> io::Result<()> {
    let tmp = dir.join(format!("{CHECKPOINT_FILE}.tmp"));
    let text = match tombstone_deadline {
        Some(t) => format!("{offset} {t}\n"),
        None => format!("{offset}\n"),
    };
    write_synced(&tmp, text.as_bytes())?;
    fs::rename(&tmp, dir.join(CHECKPOINT_FILE))?;
    File::open(dir)?.sync_all()
}

fn remove_if_exists(path: &Path) -> io::Result<()> {
    match fs::remove_file(path) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

fn rename_if_exists(from: &Path, to: &Path) -> io::Result<bool> {
    match fs::rename(from, to) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(e),
    }
}

/// A segment's three paths in `dir`, in the order a swap moves them (the log last: a staged
/// log file means its group is not swapped yet).
fn segment_paths(dir: &Path, base: i64) -> [PathBuf; 3] {
    [
        segment::index_path(dir, base),
        segment::time_index_path(dir, base),
        segment::log_path(dir, base),
    ]
}

/// Removes a segment's files, the log first (a segment is known by its log file).
fn remove_segment_files(dir: &Path, base: i64) -> io::Result<()> {
    let [index, time, log] = segment_paths(dir, base);
    for p in [log, index, time] {
        remove_if_exists(&p)?;
    }
    Ok(())
}

/// Completes or rolls back a clean that a stop interrupted, before the log's segments are
/// listed (see the module docs). Returns whether there was one.
pub fn recover(dir: &Path) -> io::Result<bool> {
    let staging = dir.join(STAGING_DIR);
    let manifest = dir.join(MANIFEST_FILE);
    let text = match fs::read_to_string(&manifest) {
        Ok(t) => t,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            return match fs::remove_dir_all(&staging) {
                Ok(()) => {
                    File::open(dir)?.sync_all()?;
                    tracing::warn!(dir = %dir.display(), "rolled back a log clean that had not committed");
                    Ok(true)
                }
                Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
                Err(e) => Err(e),
            };
        }
        Err(e) => return Err(e),
    };
    let m = Manifest::parse(&text).ok_or_else(|| {
        invalid(format!(
            "{} does not parse: a log clean cannot be completed",
            manifest.display()
        ))
    })?;
    for g in &m.groups {
        let rest = if g.replaced {
            let base = g.bases[0];
            for (from, to) in segment_paths(&staging, base)
                .iter()
                .zip(segment_paths(dir, base).iter())
            {
                rename_if_exists(from, to)?;
            }
            // The open rebuilds them from the log, whichever stage the kill came at.
            let [index, time, _] = segment_paths(dir, base);
            for p in [index, time] {
                match fs::OpenOptions::new().write(true).open(&p) {
                    Ok(f) => f.set_len(0)?,
                    Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                    Err(e) => return Err(e),
                }
            }
            &g.bases[1..]
        } else {
            &g.bases[..]
        };
        for &b in rest {
            remove_segment_files(dir, b)?;
        }
    }
    File::open(dir)?.sync_all()?;
    match fs::remove_dir_all(&staging) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
        _ => {}
    }
    write_checkpoint(dir, m.checkpoint, m.tombstone_deadline)?;
    fs::remove_file(&manifest)?;
    File::open(dir)?.sync_all()?;
    tracing::warn!(dir = %dir.display(), checkpoint = m.checkpoint, "completed a log clean that a stop interrupted");
    Ok(true)
}

/// The commit of a staged clean on the owning shard: renames only (no fsync), so it runs on
/// the executor. The fault seam's clean stages (for the crash tests) sit between its steps.
pub(crate) fn commit(cleaned: &Cleaned) -> io::Result<()> {
    let dir = &cleaned.dir;
    let staging = dir.join(STAGING_DIR);
    faults::check(faults::Op::CleanCommit, dir)?;
    fs::rename(staging.join(PENDING_MANIFEST), dir.join(MANIFEST_FILE))?;
    faults::check(faults::Op::CleanCommitted, dir)?;
    for (i, g) in cleaned.groups.iter().enumerate() {
        let rest = if g.replaced {
            let base = g.bases[0];
            for (from, to) in segment_paths(&staging, base)
                .iter()
                .zip(segment_paths(dir, base).iter())
            {
                fs::rename(from, to)?;
            }
            &g.bases[1..]
        } else {
            &g.bases[..]
        };
        for &b in rest {
            for (from, to) in segment_paths(dir, b).iter().rev().zip(
                segment_paths(&staging, b)
                    .iter()
                    .rev()
                    .map(|p| p.with_extension(format!("{}.deleted", ext(p)))),
            ) {
                rename_if_exists(from, &to)?;
            }
        }
        if i == 0 {
            faults::check(faults::Op::CleanSwapping, dir)?;
        }
    }
    faults::check(faults::Op::CleanSwapped, dir)
}

fn ext(p: &Path) -> String {
    p.extension()
        .map(|e| e.to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// The file work after a clean's commit or its abandonment, on the blocking pool.
#[derive(Debug)]
pub struct CleanTail {
    pub dir: PathBuf,
    /// The checkpoint to persist (a commit), or None (a rollback: the staged files go).
    pub checkpoint: Option<i64>,
    /// Persisted with the checkpoint: when the earliest tombstone kept expires.
    pub tombstone_deadline: Option<i64>,
}

impl CleanTail {
    pub fn run(&self) -> io::Result<()> {
        let staging = self.dir.join(STAGING_DIR);
        if let Some(checkpoint) = self.checkpoint {
            File::open(&self.dir)?.sync_all()?;
            fs::remove_dir_all(&staging)?;
            faults::check(faults::Op::CleanDeleted, &self.dir)?;
            write_checkpoint(&self.dir, checkpoint, self.tombstone_deadline)?;
            fs::remove_file(self.dir.join(MANIFEST_FILE))?;
        } else {
            match fs::remove_dir_all(&staging) {
                Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
                _ => {}
            }
        }
        File::open(&self.dir)?.sync_all()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn manifests_round_trip_and_bad_ones_do_not_parse() {
        let m = Manifest {
            checkpoint: 120,
            tombstone_deadline: Some(1_000),
            groups: vec![
                Group {
                    bases: vec![0, 40, 80],
                    replaced: true,
                },
                Group {
                    bases: vec![100],
                    replaced: false,
                },
            ],
        };
        assert_eq!(Manifest::parse(&m.encode()), Some(m));
        for bad in [
            "",
            "checkpoint x\n",
            "checkpoint 1\nreplace\n",
            "checkpoint 1\nmove 3\n",
        ] {
            assert_eq!(Manifest::parse(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn digests_tell_keys_apart() {
        assert_eq!(digest(b"k1"), digest(b"k1"));
        assert_ne!(digest(b"k1"), digest(b"k2"));
        assert_ne!(digest(b""), digest(b"\0"));
    }
}
