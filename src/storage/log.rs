//! A partition's log: its segments, the append path and the read path.
//!
//! Lives on: the shard that owns the partition (see `shard::assignment`). Every method is
//! synchronous and short, so callers never hold a borrow of a log across an `.await`.
//!
//! Offsets are dense as written: the broker assigns each batch's base offset as the current
//! log end, and the log end moves by the batch's record count. A compacted log's are sparse
//! below its cleaner checkpoint (see `storage::cleaner`): reads return the next batch after a
//! cleaned-away offset, and a follower copies the gaps as they are.
//!
//! On open the active segment is scanned from its last index entry to find the log end; a
//! partial batch at the very end (which a clean shutdown never leaves) is cut off. Full crash recovery with CRC checks is the storage
//! engine's job (its own issue).
//!
//! A follower's log takes the leader's offsets instead ([`PartitionLog::append_replicated`]:
//! the fetched batches as they are) and is cut back where it diverged from a new leader's
//! ([`PartitionLog::truncate_to`], [`PartitionLog::truncate_fully_and_start_at`]).

use std::fs::{self, File};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use crate::error::KafkaError;
use crate::protocol::batch::{self, ProducedBatch};
use crate::protocol::fetch::FileSlice;
use crate::storage::epochs::{self, LeaderEpochCache};
use crate::storage::io::{faults, read_at_most};
use crate::storage::segment::{Placed, Recovered, Segment, WriteFailed};

/// Compaction: what to clean, and the swap of a clean on the owning shard.
mod clean;
pub use clean::Dirtiness;

#[derive(Clone, Copy, Debug)]
pub struct LogConfig {
    pub segment_bytes: u64,
    /// Roll the active segment once its first batch is this old (`segment.ms`).
    pub segment_ms: Option<u64>,
    pub index_interval_bytes: u64,
    /// Up to this much is taken off `segment_ms` for each segment (`segment.jitter.ms`), so
    /// that partitions created together do not roll together: each segment's share is
    /// derived from its directory and base offset (stable across restarts).
    pub segment_jitter_ms: u64,
    /// The active segment rolls once its offset index would pass this size
    /// (`segment.index.bytes`, 8 bytes an entry).
    pub segment_index_bytes: u64,
    /// Reserve a whole segment's blocks when it is created (`preallocate`).
    pub preallocate: bool,
}

impl LogConfig {
    /// What the fields a caller does not name default to.
    pub const BASE: LogConfig = LogConfig {
        segment_bytes: 1024 * 1024 * 1024,
        segment_ms: None,
        index_interval_bytes: 4096,
        segment_jitter_ms: 0,
        segment_index_bytes: crate::storage::catalog::defaults::SEGMENT_INDEX_BYTES,
        preallocate: false,
    };
}

/// The share of `jitter_ms` taken off `segment.ms` for the segment at `base_offset` of `dir`:
/// spread over [0, jitter_ms) by a hash of both.
fn segment_jitter(dir: &Path, base_offset: i64, jitter_ms: u64) -> u64 {
    if jitter_ms == 0 {
        return 0;
    }
    // FNV-1a: stable across runs and builds (std's hasher is seeded per process).
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in dir
        .as_os_str()
        .as_encoded_bytes()
        .iter()
        .chain(base_offset.to_be_bytes().iter())
    {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h % jitter_ms
}

/// How much of a log to keep (`retention.ms`, `retention.bytes`; None keeps everything).
#[derive(Clone, Copy, Debug, Default)]
pub struct Retention {
    pub ms: Option<u64>,
    pub bytes: Option<u64>,
}

/// The file that remembers the log start offset (set by DeleteRecords inside a segment, and
/// by retention when it deletes segments), so a start can tell deleted data from missing data.
const LOG_START_FILE: &str = "log-start-offset";

/// The checkpointed log end offset: every offset below it was durable when it was written.
/// Each start checks the segments against it (see [`PartitionLog::open`]).
pub const LOG_END_FILE: &str = "log-end-offset";

/// Ranges of offsets whose loss an operator accepted (`spate storage accept-loss`), one
/// `FROM TO` line each (TO exclusive).
pub const ACCEPTED_LOSS_FILE: &str = "accepted-loss";

/// Where an append landed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Appended {
    pub base_offset: i64,
    pub last_offset: i64,
}

/// What a Fetch read found at an offset: the data and the partition's offsets, each its own
/// value (see `shard::partition`).
#[derive(Clone, Debug)]
pub struct ReadOut {
    /// Whole batches from the one holding the offset, within the byte budget (the first batch
    /// always, however large, so a consumer can always make progress), below the high
    /// watermark.
    pub slice: Option<FileSlice>,
    pub high_watermark: i64,
    pub last_stable_offset: i64,
    pub log_start_offset: i64,
    /// For a read_committed read: the aborted transactions that overlap what it may return
    /// (from the fetch offset to the last stable offset); None for read_uncommitted.
    pub aborted: Option<Vec<crate::storage::txnindex::AbortedTxn>>,
    /// For a follower's read: (epoch, end offset) where its log diverges from this one, set
    /// instead of data (KIP-320).
    pub diverging_epoch: Option<(i32, i64)>,
}

#[derive(Debug)]
pub struct PartitionLog {
    pub topic: String,
    pub partition: i32,
    dir: PathBuf,
    segments: Vec<Segment>,
    next_offset: i64,
    log_start_offset: i64,
    config: LogConfig,
    /// Every offset below this one is on disk (fdatasync'd).
    flushed_offset: i64,
    /// Segment files written since the last flush (the active one and any rolled since).
    /// A sealed segment's entry holds only its path: holding its descriptor until the next
    /// flush (which acks=1 topics without a flush policy never have) would keep every rolled
    /// segment open; the flush opens it again.
    unflushed_files: Vec<(Option<Arc<File>>, PathBuf)>,
    /// A segment file was created since the last flush: its directory entry needs a sync too.
    dir_unflushed: bool,
    /// When the last flush finished (or the log was opened).
    last_flush: Instant,
    /// Set when an fdatasync failed: after that the page cache state is unknown, so the
    /// partition takes no more writes until the broker restarts and recovers it.
    poisoned: Option<String>,
    /// What crash recovery found when the log was opened after an unclean stop.
    pub recovered: Option<Recovered>,
    /// Set when the files lack offsets the log once held (a segment deleted or cut below the
    /// checkpointed log end, a gap between segments) and no operator accepted the loss: the
    /// partition is then wholly offline, reads included, and its files are left alone.
    lost: Option<String>,
    /// The missing ranges `[from, to)` not accepted yet (empty unless `lost`).
    pub missing: Vec<(i64, i64)>,
    /// Which leader epoch wrote from which offset, and whether its checkpoint is behind.
    epochs: LeaderEpochCache,
    epochs_unflushed: bool,
    /// Offsets below it were cleaned by the log cleaner and may be sparse (see
    /// `storage::cleaner`); the open's gap check allows gaps below it.
    cleaner_checkpoint: i64,
    /// A clean of this log is in flight.
    cleaning: bool,
    /// When the earliest tombstone the last clean kept passes `delete.retention.ms`.
    tombstone_deadline: Option<i64>,
    /// Bumped whenever segments leave the log or are cut (retention, DeleteRecords,
    /// truncation), so a clean taken before can tell its segments changed.
    generation: u64,
}

/// Segments checked batch by batch after an unclean stop: the active one and the one before
/// it (a roll happens only once the previous segment is complete, and acks=all data is synced
/// before it is acknowledged, so older segments were complete and synced).
const RECOVERY_SEGMENTS: usize = 2;

/// Recovers the tail of a log: CRC-checks the last segments, cuts a torn or corrupt tail, and
/// drops any segment after a cut (its offsets would no longer follow on).
fn recover_tail(segments: &mut Vec<Segment>, interval: u64) -> io::Result<Recovered> {
    let mut total = Recovered::default();
    let first = segments.len().saturating_sub(RECOVERY_SEGMENTS);
    let mut i = first;
    while i < segments.len() {
        let r = segments[i].recover(interval)?;
        total.batches += r.batches;
        total.records += r.records;
        total.bytes += r.bytes;
        total.truncated_bytes += r.truncated_bytes;
        if r.truncated_bytes > 0 {
            for later in segments.drain(i + 1..) {
                total.truncated_bytes += later.size;
                later.remove()?;
            }
        }
        i += 1;
    }
    Ok(total)
}

/// File work left by retention or DeleteRecords: persisting a new log start offset and
/// deleting segments already taken out of the log. Blocking (fsyncs, unlinks): run it on the
/// blocking pool, never on an executor.
#[derive(Debug)]
pub struct Housekeeping {
    topic: String,
    partition: i32,
    dir: PathBuf,
    log_start: Option<i64>,
    doomed: Vec<Segment>,
    /// `file.delete.delay.ms`: the doomed segments' files are renamed `*.deleted` and unlinked
    /// this much later (0: at once).
    delete_delay_ms: u64,
}

/// Files of deleted segments waiting out `file.delete.delay.ms`; [`Deferred::delete`] (on
/// the blocking pool) removes them. A restart removes any left over (see
/// [`PartitionLog::open`]).
#[derive(Debug)]
pub struct Deferred {
    pub delay: std::time::Duration,
    files: Vec<PathBuf>,
}

impl Deferred {
    pub fn delete(self) {
        for f in self.files {
            if let Err(e) = fs::remove_file(&f)
                && e.kind() != io::ErrorKind::NotFound
            {
                tracing::warn!(file = %f.display(), error = %e, "cannot delete a deleted segment's file");
            }
        }
    }
}

/// The suffix of the files of a segment deleted but waiting out `file.delete.delay.ms`.
pub const DELETED_SUFFIX: &str = ".deleted";

impl Housekeeping {
    /// Keeps the doomed segments' files `ms` longer (`file.delete.delay.ms`).
    pub fn delay_deletion(mut self, ms: u64) -> Housekeeping {
        self.delete_delay_ms = ms;
        self
    }

    /// Persists the new log start and deletes the doomed segments now.
    pub fn run(self) -> io::Result<()> {
        if let Some(d) = self.run_deferring()? {
            d.delete();
        }
        Ok(())
    }

    /// [`Housekeeping::run`], except that with a delete delay the segments' files are only
    /// renamed `*.deleted` (out of the log for good, as a restart sees) and returned to be
    /// deleted once the delay has passed.
    pub fn run_deferring(self) -> io::Result<Option<Deferred>> {
        // The log start first: a crash between the two leaves a log that starts at the first
        // remaining segment, which is at or before the new start and still consistent.
        // On a full disk, though, the log start cannot be written (its temporary file needs a
        // free block) until the doomed segments give theirs back, and DeleteRecords is how an
        // operator frees space. So when the write fails, the segments go first (a crash in
        // between is the same case as above: the log starts at the first remaining segment)
        // and the log start is written after them.
        let mut log_start_pending = None;
        if let Some(offset) = self.log_start
            && let Err(e) = write_log_start(&self.dir, offset)
        {
            if self.doomed.is_empty() {
                return Err(e);
            }
            tracing::warn!(topic = %self.topic, partition = self.partition, error = %e, "cannot persist the log start offset yet: deleting the segments below it first");
            log_start_pending = Some(offset);
        }
        let dir_synced = self.log_start.is_some();
        let mut deferred = Vec::new();
        for seg in self.doomed {
            let base = seg.base_offset;
            if self.delete_delay_ms == 0 {
                seg.remove()?;
                tracing::info!(topic = %self.topic, partition = self.partition, base_offset = base, "segment deleted");
            } else {
                deferred.extend(seg.rename_with_suffix(DELETED_SUFFIX)?);
                tracing::info!(topic = %self.topic, partition = self.partition, base_offset = base, delay_ms = self.delete_delay_ms, "segment deleted (its files go after file.delete.delay.ms)");
            }
        }
        if let Some(offset) = log_start_pending {
            write_log_start(&self.dir, offset)?;
        }
        if !dir_synced {
            File::open(&self.dir)?.sync_all()?;
        }
        Ok((!deferred.is_empty()).then(|| Deferred {
            delay: std::time::Duration::from_millis(self.delete_delay_ms),
            files: deferred,
        }))
    }
}

/// What a wait for durability does next (see [`PartitionLog::flush_step`]).
#[derive(Debug)]
pub enum FlushStep {
    /// Everything up to the offset is on disk.
    Durable,
    /// The offset was truncated away before it was synced.
    Cut,
    /// A flush is running: wait for it, then ask again.
    Join,
    /// Run this flush, then ask again.
    Run(FlushJob),
}

/// An fdatasync of a partition's unflushed files, run off the executor.
#[derive(Debug)]
pub struct FlushJob {
    files: Vec<(Option<Arc<File>>, PathBuf)>,
    dir: Option<PathBuf>,
    /// A changed leader-epoch checkpoint to write once the data it describes is synced:
    /// (partition directory, checkpoint text).
    epochs: Option<(PathBuf, String)>,
    /// The log end when the job was taken: everything below it is durable once it succeeds.
    pub target: i64,
    /// The partition directory, where `target` is checkpointed once the data is synced.
    checkpoint_dir: PathBuf,
}

impl FlushJob {
    /// Runs the syncs (blocking: call it from a blocking thread, never from an executor).
    pub fn run(&self) -> io::Result<()> {
        for (f, path) in &self.files {
            faults::check(faults::Op::Sync, path)?;
            match f {
                Some(f) => f.sync_data()?,
                // fdatasync through any descriptor of the file syncs its dirty pages. A
                // sealed segment deleted since (retention) has nothing left to make durable.
                None => match File::open(path) {
                    Ok(f) => f.sync_data()?,
                    Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                    Err(e) => return Err(e),
                },
            }
        }
        if let Some(dir) = &self.dir {
            File::open(dir)?.sync_all()?;
        }
        // The checkpoints come after the data they vouch for is durable, directory entries of
        // new segments included, so the log end checkpoint never names an offset a crash could
        // take away (which the next start would report as missing data). A failure (a full disk
        // cannot give a file its first block) does not fail the flush: the data is durable, a
        // log end checkpoint that lags only weakens the next start's check, and the leader-epoch
        // cache is rebuilt from the batch headers at open.
        if let Err(e) = write_log_end(&self.checkpoint_dir, self.target) {
            tracing::warn!(dir = %self.checkpoint_dir.display(), error = %e, "could not checkpoint the log end offset");
        }
        if let Some((dir, text)) = &self.epochs
            && let Err(e) = epochs::write_checkpoint(dir, text)
        {
            tracing::warn!(dir = %dir.display(), error = %e, "could not write the leader-epoch checkpoint");
        }
        Ok(())
    }
}

/// What makes a truncation ([`PartitionLog::truncate_to`],
/// [`PartitionLog::truncate_fully_and_start_at`]) durable against a power loss: the
/// fdatasync of the files it cut and of the directory whose entries it removed or added. The
/// truncation itself is already in the files (and safe against a kill at any point, see
/// `truncate_to`); until this job has run, a power loss may bring the cut bytes back, which
/// is the old log again (the checkpoints were already synced by the truncation itself).
/// Blocking: run it on the blocking pool, never on an executor.
#[derive(Debug)]
pub struct TruncateJob {
    /// Files cut short (a segment's log and indexes), by path: the segment may be deleted by
    /// a later truncation or retention before this runs.
    files: Vec<PathBuf>,
    /// The partition directory, when entries were removed from it or added to it.
    dir: Option<PathBuf>,
    /// The log end after the truncation.
    pub log_end: i64,
}

impl TruncateJob {
    pub fn run(&self) -> io::Result<()> {
        for path in &self.files {
            faults::check(faults::Op::Sync, path)?;
            match File::open(path) {
                Ok(f) => f.sync_data()?,
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(e),
            }
        }
        if let Some(dir) = &self.dir {
            File::open(dir)?.sync_all()?;
        }
        Ok(())
    }
}

fn read_log_start(dir: &Path) -> io::Result<Option<i64>> {
    match fs::read_to_string(dir.join(LOG_START_FILE)) {
        Ok(s) => Ok(s.trim().parse().ok()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

/// Persists a log start offset atomically (temporary file, fsync, rename, directory fsync).
fn write_log_start(dir: &Path, offset: i64) -> io::Result<()> {
    let tmp = dir.join(format!("{LOG_START_FILE}.tmp"));
    let f = File::create(&tmp)?;
    crate::storage::io::pwritev_all(&f, 0, &[offset.to_string().as_bytes()])?;
    f.sync_all()?;
    fs::rename(&tmp, dir.join(LOG_START_FILE))?;
    File::open(dir)?.sync_all()
}

/// Reads the checkpointed log end offset; None when there is none (a log never flushed, or
/// one from before the checkpoint existed) or it cannot be parsed (then nothing is checked
/// against it, which only weakens the check).
pub fn read_log_end(dir: &Path) -> io::Result<Option<i64>> {
    match fs::read_to_string(dir.join(LOG_END_FILE)) {
        Ok(s) => {
            let parsed = s.trim().parse().ok();
            if parsed.is_none() {
                tracing::warn!(dir = %dir.display(), content = %s.trim(), "unreadable log end checkpoint: ignored");
            }
            Ok(parsed)
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

/// Checkpoints the log end offset: a fixed-width record overwritten in place with one small
/// write, which a crash leaves either old or new (it lies within one sector). It is not
/// fdatasync'd on its own: a checkpoint that lags after a power loss only names an older,
/// lower end, which weakens the check and never raises a false alarm, while a sync here would
/// double the fdatasyncs of every acks=all flush. The kernel writes it back within seconds,
/// and a flush that creates the file syncs the directory after it (see `FlushJob::run`).
fn write_log_end(dir: &Path, offset: i64) -> io::Result<()> {
    let f = fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(false)
        .open(dir.join(LOG_END_FILE))?;
    crate::storage::io::pwritev_all(&f, 0, &[format!("{offset:020}\n").as_bytes()])
}

/// Lowers the log end checkpoint durably before a truncation cuts the files below it: a
/// checkpoint above the files' end would make the next start report the cut offsets as
/// missing and take the partition offline. One small fdatasync, on the rare truncation.
fn sync_log_end(dir: &Path, offset: i64) -> io::Result<()> {
    write_log_end(dir, offset)?;
    File::open(dir.join(LOG_END_FILE))?.sync_data()
}

/// The ranges of offsets whose loss was accepted, `[from, to)` each.
fn read_accepted_loss(dir: &Path) -> io::Result<Vec<(i64, i64)>> {
    let text = match fs::read_to_string(dir.join(ACCEPTED_LOSS_FILE)) {
        Ok(s) => s,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            let mut it = l.split_whitespace().map(str::parse::<i64>);
            match (it.next(), it.next()) {
                (Some(Ok(a)), Some(Ok(b))) => Ok((a, b)),
                _ => Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!(
                        "{}: not a range: {l:?}",
                        dir.join(ACCEPTED_LOSS_FILE).display()
                    ),
                )),
            }
        })
        .collect()
}

/// Writes the accepted ranges atomically (temporary file, fsync, rename, directory fsync).
fn write_accepted_loss(dir: &Path, ranges: &[(i64, i64)]) -> io::Result<()> {
    let text: String = ranges.iter().map(|(a, b)| format!("{a} {b}\n")).collect();
    let tmp = dir.join(format!("{ACCEPTED_LOSS_FILE}.tmp"));
    let f = File::create(&tmp)?;
    crate::storage::io::pwritev_all(&f, 0, &[text.as_bytes()])?;
    f.sync_all()?;
    fs::rename(&tmp, dir.join(ACCEPTED_LOSS_FILE))?;
    File::open(dir)?.sync_all()
}

/// Offset ranges as people read them: `0-38599, 120-199` (both ends included).
pub fn describe_ranges(ranges: &[(i64, i64)]) -> String {
    ranges
        .iter()
        .map(|(a, b)| format!("{a}-{}", b - 1))
        .collect::<Vec<_>>()
        .join(", ")
}

/// `spate storage accept-loss`: records, durably, that the missing offsets of a stopped
/// broker's partition are lost, so the next start serves what is left of it. Returns the
/// ranges accepted now (empty when nothing was missing). The log end never moves back: a
/// missing tail makes the next start continue at the checkpointed end.
pub fn accept_loss(data_dir: &Path, topic: &str, partition: i32) -> io::Result<Vec<(i64, i64)>> {
    let dir = partition_dir(data_dir, topic, partition);
    if !dir.is_dir() {
        return Err(io::Error::new(
            io::ErrorKind::NotFound,
            format!("no partition directory {}", dir.display()),
        ));
    }
    let config = LogConfig {
        segment_bytes: u64::MAX,
        segment_ms: None,
        index_interval_bytes: 4096,
        ..LogConfig::BASE
    };
    // With recovery, as the next start after an unclean stop would open it; after a clean one
    // there is no torn tail and the scan changes nothing.
    let log = PartitionLog::open(data_dir, topic, partition, config, true)?;
    let newly = log.missing.clone();
    if !newly.is_empty() {
        let mut all = read_accepted_loss(&dir)?;
        all.extend_from_slice(&newly);
        write_accepted_loss(&dir, &all)?;
    }
    Ok(newly)
}

/// The directory of a partition's log.
pub fn partition_dir(data_dir: &Path, topic: &str, partition: i32) -> PathBuf {
    data_dir.join(format!("{topic}-{partition}"))
}

impl PartitionLog {
    /// Opens (or creates) the log of `topic`/`partition` under `data_dir`.
    pub fn open(
        data_dir: &Path,
        topic: &str,
        partition: i32,
        config: LogConfig,
        recover: bool,
    ) -> io::Result<PartitionLog> {
        let dir = partition_dir(data_dir, topic, partition);
        fs::create_dir_all(&dir)?;
        // Files of segments deleted before a stop, still waiting out file.delete.delay.ms.
        for e in fs::read_dir(&dir)?.filter_map(|e| e.ok()) {
            if e.file_name().to_string_lossy().ends_with(DELETED_SUFFIX) {
                fs::remove_file(e.path())?;
            }
        }
        // A clean a stop interrupted is completed or rolled back before the segments are
        // listed (see `storage::cleaner`).
        crate::storage::cleaner::recover(&dir)?;
        let (cleaner_checkpoint, tombstone_deadline) =
            crate::storage::cleaner::read_checkpoint(&dir)?;
        let mut bases: Vec<i64> = fs::read_dir(&dir)?
            .filter_map(|e| e.ok())
            .filter_map(|e| {
                let name = e.file_name().into_string().ok()?;
                name.strip_suffix(".log")?.parse::<i64>().ok()
            })
            .collect();
        bases.sort_unstable();
        let mut segments = Vec::with_capacity(bases.len().max(1));
        for (i, base) in bases.iter().enumerate() {
            let mut seg = Segment::open(&dir, *base, config.index_interval_bytes)?;
            // Segments older than the ones recovery may scan let their descriptors go at once,
            // so opening a partition of many segments does not hold them all open (the checks
            // below read them through the shard's cache; a rebuild reopens them to write).
            if i + RECOVERY_SEGMENTS < bases.len() {
                seg.release_indexes();
            }
            segments.push(seg);
        }
        // A segment without a byte holds no data. A roll that failed (or a crash) after
        // creating the new segment's files, but before its first batch was written, can
        // leave one behind. Kept, it would misread the log: as the last segment it ends the
        // log at its base even if the segment before it took more appends after the failed
        // roll; in the middle, it sends reads of offsets past its base to the next segment.
        // So every empty segment goes, except the last when it is the only one (it carries
        // the log end of a log whose data was all deleted).
        let mut i = 0;
        while i < segments.len() && segments.len() > 1 {
            if segments[i].size == 0 {
                let seg = segments.remove(i);
                tracing::warn!(
                    topic,
                    partition,
                    base_offset = seg.base_offset,
                    "dropping an empty segment"
                );
                seg.remove()?;
            } else {
                i += 1;
            }
        }
        let persisted_start = read_log_start(&dir)?;
        // Where the log's data must begin: the persisted log start, else the first segment
        // (a log from before retention persisted it), else 0 (there never was a segment).
        let expected_start = persisted_start
            .or_else(|| segments.first().map(|s| s.base_offset))
            .unwrap_or(0);
        if segments.is_empty() {
            // Never below the log start: offsets below it were handed out once.
            segments.push(Segment::create(&dir, expected_start.max(0))?);
        }
        let recovered = if recover {
            Some(recover_tail(&mut segments, config.index_interval_bytes)?)
        } else {
            None
        };
        let log_start_offset = segments[0]
            .base_offset
            .max(persisted_start.unwrap_or(i64::MIN));
        let mut log = PartitionLog {
            topic: topic.to_string(),
            partition,
            dir,
            segments,
            next_offset: 0,
            log_start_offset,
            config,
            flushed_offset: 0,
            unflushed_files: Vec::new(),
            dir_unflushed: false,
            last_flush: Instant::now(),
            poisoned: None,
            recovered,
            lost: None,
            missing: Vec::new(),
            epochs: LeaderEpochCache::default(),
            epochs_unflushed: false,
            cleaner_checkpoint,
            cleaning: false,
            tombstone_deadline,
            generation: 0,
        };
        log.epochs = LeaderEpochCache::load(&log.dir)?;
        log.find_log_end()?;
        log.audit(expected_start)?;
        log.log_start_offset = log.segments[0]
            .base_offset
            .max(persisted_start.unwrap_or(i64::MIN));
        // Sealed segments answer lookups from their index files; only the active one keeps
        // its entries in memory.
        let sealed = log.segments.len().saturating_sub(1);
        for seg in &mut log.segments[..sealed] {
            seg.release_indexes();
        }
        log.log_start_offset = log.log_start_offset.min(log.next_offset);
        // What survived the last run is what the next run starts from.
        log.flushed_offset = log.next_offset;
        Ok(log)
    }

    /// Checks the segments against what the log knows of itself, on every open (a clean
    /// shutdown skips only the CRC scan, not this): its data must run without a gap from the
    /// log start to at least the checkpointed log end. Missing offsets whose loss no operator
    /// accepted take the partition offline; an accepted missing tail makes the log continue
    /// at the checkpointed end, so no offset is handed out twice.
    fn audit(&mut self, expected_start: i64) -> io::Result<()> {
        let checkpoint = read_log_end(&self.dir)?;
        let mut missing = Vec::new();
        let first = self.segments[0].base_offset;
        let mut expected_start = expected_start;
        if checkpoint.is_none() && expected_start < first {
            // A log from before the checkpoint existed: its retention deleted segments without
            // persisting the log start, so a log start file below the first segment is not
            // evidence of loss. It is brought up to date now, or it would be taken for one
            // once this version has written a checkpoint.
            write_log_start(&self.dir, first)?;
            expected_start = first;
        }
        if expected_start < first {
            missing.push((expected_start, first));
        }
        for i in 0..self.segments.len() - 1 {
            let end = self.segments[i].end_offset()?;
            let next = self.segments[i + 1].base_offset;
            if end < next {
                missing.push((end, next));
            }
        }
        if let Some(end) = checkpoint
            && self.next_offset < end
        {
            missing.push((self.next_offset, end));
        }
        // Offsets below the log start were deleted on purpose (retention, DeleteRecords), and
        // gaps below the cleaner checkpoint are compaction's (every gap a clean makes ends at
        // or below it, see `storage::cleaner`).
        let start = expected_start;
        missing.retain(|&(_, to)| to > start && to > self.cleaner_checkpoint);
        for r in &mut missing {
            r.0 = r.0.max(start);
        }
        let accepted = read_accepted_loss(&self.dir)?;
        missing.retain(|&(a, b)| !accepted.iter().any(|&(x, y)| x <= a && b <= y));
        if !missing.is_empty() {
            let ranges = describe_ranges(&missing);
            tracing::error!(
                partition = %format!("{}-{}", self.topic, self.partition),
                missing_offsets = %ranges,
                log_end_checkpoint = checkpoint.unwrap_or(-1),
                "partition {}-{} is missing offsets {ranges} from its files (a segment was \
                 deleted or cut): it is offline, and every Produce and Fetch answers \
                 KAFKA_STORAGE_ERROR until the files are restored, or the loss is accepted with \
                 `spate storage accept-loss --partition {}-{}` while the broker is stopped",
                self.topic,
                self.partition,
                self.topic,
                self.partition,
            );
            self.lost = Some(format!("offsets {ranges} are missing from its files"));
            self.missing = missing;
            return Ok(());
        }
        if let Some(end) = checkpoint
            && self.next_offset < end
        {
            tracing::warn!(
                partition = %format!("{}-{}", self.topic, self.partition),
                from = self.next_offset,
                to = end,
                "the loss of this partition's tail was accepted: it continues at its checkpointed log end"
            );
            if self.active().size == 0 {
                if let Some(seg) = self.segments.pop() {
                    seg.remove()?;
                }
            } else {
                self.active_mut().seal().map_err(|f| f.error)?;
            }
            self.segments.push(Segment::create(&self.dir, end)?);
            self.next_offset = end;
            self.dir_unflushed = true;
        }
        Ok(())
    }

    /// An error when the partition is offline because data is missing (see [`Self::audit`]).
    pub fn check_online(&self) -> Result<(), KafkaError> {
        match &self.lost {
            Some(why) => Err(KafkaError::Storage(format!("partition is offline: {why}"))),
            None => Ok(()),
        }
    }

    fn find_log_end(&mut self) -> io::Result<()> {
        let interval = self.config.index_interval_bytes;
        // A sealed segment's time index must not name offsets of the next segment.
        for i in 0..self.segments.len().saturating_sub(1) {
            let last = self.segments[i + 1].base_offset - 1;
            if self.segments[i].time_index_past(last) {
                self.segments[i].reindex(interval)?;
            }
        }
        let active = self
            .segments
            .last_mut()
            .ok_or_else(|| io::Error::other("no segment"))?;
        let mut next = active.base_offset;
        let mut seen = Vec::new();
        let end = active.scan(active.last_indexed_pos(), |b| {
            next = b.header.last_offset() + 1;
            seen.push(b.header);
            true
        })?;
        // The leader-epoch cache follows the log: entries past its end go (a tail was cut).
        let truncated = self.epochs.truncate_from(next);
        self.epochs_unflushed |= truncated;
        let newest = seen.iter().map(|h| h.partition_leader_epoch).max();
        for h in &seen {
            active.observe(h);
        }
        if active.time_index_past(next - 1) {
            active.reindex(interval)?;
        }
        if end < active.size {
            tracing::warn!(
                topic = %self.topic,
                partition = self.partition,
                valid_bytes = end,
                file_bytes = active.size,
                "log ends in a partial batch; cutting it off"
            );
            active.truncate(end, interval)?;
        }
        self.next_offset = next;
        // Batches of an epoch newer than the checkpoint knows (a crash came before it was
        // written): find where each such epoch starts, scanning from the last known one.
        if newest.is_some_and(|e| e > self.epochs.latest_epoch()) {
            self.rebuild_epochs()?;
        }
        Ok(())
    }

    /// Completes the leader-epoch cache from the batch headers after its last entry (from the
    /// log's first segment when it is empty).
    fn rebuild_epochs(&mut self) -> io::Result<()> {
        let from = self.epochs.latest_start().unwrap_or(i64::MIN);
        let first = self
            .segments
            .partition_point(|s| s.base_offset <= from)
            .saturating_sub(1);
        let mut found = Vec::new();
        for seg in &self.segments[first..] {
            let pos = if from <= seg.base_offset {
                0
            } else {
                seg.index_lookup(from)
            };
            seg.scan(pos, |b| {
                let h = b.header;
                if h.base_offset >= from && h.partition_leader_epoch >= 0 {
                    found.push((h.partition_leader_epoch, h.base_offset));
                }
                true
            })?;
        }
        for (epoch, start) in found {
            self.epochs_unflushed |= self.epochs.assign(epoch, start);
        }
        Ok(())
    }

    /// Calls `f` with the header of every batch that starts at or after `from`, in offset
    /// order (from the log start when `from` is below it): how the producer state is rebuilt
    /// past its snapshot at open. Reads headers only.
    pub fn scan_headers_from(
        &self,
        from: i64,
        mut f: impl FnMut(&batch::BatchHeader),
    ) -> io::Result<()> {
        self.scan_batches_from(from, |h, _, _| f(h))
    }

    /// Like [`PartitionLog::scan_headers_from`], with each batch's segment (its base offset)
    /// and a way to read the batch's bytes there: `f(header, segment base, read)`.
    pub fn scan_batches_from(
        &self,
        from: i64,
        mut f: impl FnMut(&batch::BatchHeader, i64, &dyn Fn() -> io::Result<Vec<u8>>),
    ) -> io::Result<()> {
        let first = self
            .segments
            .partition_point(|s| s.base_offset <= from)
            .saturating_sub(1);
        for seg in &self.segments[first..] {
            let pos = if from <= seg.base_offset {
                0
            } else {
                seg.index_lookup(from)
            };
            seg.scan(pos, |b| {
                if b.header.base_offset >= from {
                    let read = || {
                        let file = seg.log_file()?;
                        read_at_most(&file, b.pos, b.header.total_len())
                    };
                    f(&b.header, seg.base_offset, &read);
                }
                true
            })?;
        }
        Ok(())
    }

    /// The base offset of the active segment (where the next append goes, unless it rolls).
    pub fn active_base_offset(&self) -> i64 {
        self.active().base_offset
    }

    /// The partition's directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Applies changed topic settings (segment size and age) to this log.
    pub fn set_config(&mut self, config: LogConfig) {
        self.config = config;
    }

    /// Every offset below this is durable.
    pub fn flushed_offset(&self) -> i64 {
        self.flushed_offset
    }

    /// Records not yet durable.
    pub fn unflushed_records(&self) -> i64 {
        self.next_offset - self.flushed_offset
    }

    pub fn last_flush(&self) -> Instant {
        self.last_flush
    }

    pub fn poisoned(&self) -> Option<&str> {
        self.poisoned.as_deref()
    }

    /// The next step of a wait until every offset up to `last` is durable (see
    /// `Shard::flush_to`), given whether a flush of this partition is running (`running`).
    /// Every answer but [`FlushStep::Join`] and [`FlushStep::Run`] ends the wait, so a
    /// waiter that loops on it always awaits something before it asks again.
    pub fn flush_step(&mut self, last: i64, running: bool) -> Result<FlushStep, KafkaError> {
        if let Some(why) = &self.poisoned {
            return Err(KafkaError::Storage(format!("partition is offline: {why}")));
        }
        if self.flushed_offset > last {
            return Ok(FlushStep::Durable);
        }
        if last >= self.next_offset {
            // Cut off the log before it was synced: a truncation as a follower, after this
            // broker lost the leadership. Nothing will ever make it durable here.
            return Ok(FlushStep::Cut);
        }
        if running {
            return Ok(FlushStep::Join);
        }
        match self.begin_flush() {
            Some(job) => Ok(FlushStep::Run(job)),
            // Not durable, yet nothing to sync: only an offline log says so.
            None => {
                self.check_online()?;
                Err(KafkaError::Storage(
                    "partition is offline: its log takes no flush".into(),
                ))
            }
        }
    }

    /// Takes what must be synced to make everything appended so far durable; None when it
    /// already is (or the partition is offline).
    pub fn begin_flush(&mut self) -> Option<FlushJob> {
        if self.poisoned.is_some()
            || self.lost.is_some()
            || (self.flushed_offset >= self.next_offset && !self.epochs_unflushed)
        {
            return None;
        }
        Some(FlushJob {
            files: std::mem::take(&mut self.unflushed_files),
            dir: std::mem::take(&mut self.dir_unflushed).then(|| self.dir.clone()),
            epochs: std::mem::take(&mut self.epochs_unflushed)
                .then(|| (self.dir.clone(), self.epochs.checkpoint_text())),
            target: self.next_offset,
            checkpoint_dir: self.dir.clone(),
        })
    }

    /// Applies the outcome of a flush job. A failed fdatasync poisons the partition.
    pub fn finish_flush(&mut self, target: i64, result: &io::Result<()>) {
        self.last_flush = Instant::now();
        match result {
            // Never above the log end: a truncation may have cut the log below the target.
            Ok(()) => self.flushed_offset = self.flushed_offset.max(target).min(self.next_offset),
            Err(e) => {
                tracing::error!(
                    topic = %self.topic,
                    partition = self.partition,
                    error = %e,
                    "fdatasync failed: partition taken offline; the page cache state is unknown, so \
                     it takes no more writes until the broker restarts and recovers it from disk"
                );
                self.poisoned = Some(format!("fdatasync failed: {e}"));
            }
        }
    }

    /// The offset the next appended record gets: one past the last record in the log. Not
    /// what consumers may read up to; that is the partition's high watermark.
    pub fn log_end_offset(&self) -> i64 {
        self.next_offset
    }

    /// Which leader epoch wrote the log from which offset on.
    pub fn leader_epochs(&self) -> &LeaderEpochCache {
        &self.epochs
    }

    pub fn log_start_offset(&self) -> i64 {
        self.log_start_offset
    }

    /// Bytes the active segment takes before it rolls (a fresh segment's whole size when
    /// it is empty: a write that does not fit a non-empty one rolls it first).
    pub fn segment_room(&self) -> u64 {
        let size = self.active().size;
        if size == 0 {
            self.config.segment_bytes
        } else {
            self.config.segment_bytes.saturating_sub(size)
        }
    }

    pub fn segment_count(&self) -> usize {
        self.segments.len()
    }

    /// Appends validated batches, assigning their offsets and stamping `leader_epoch` in each
    /// header. With `log_append_time`, batches are stamped with that time. Record bytes go
    /// from the request buffers to the file as they are.
    pub fn append(
        &mut self,
        batches: &[ProducedBatch],
        leader_epoch: i32,
        log_append_time: Option<i64>,
        now_ms: i64,
    ) -> Result<Appended, KafkaError> {
        self.check_writable()?;
        let base_offset = self.next_offset;
        let mut next = base_offset;
        let mut headers = Vec::with_capacity(batches.len());
        let mut placed = Vec::with_capacity(batches.len());
        for b in batches {
            headers.push(batch::patched_header(
                b,
                next,
                leader_epoch,
                log_append_time,
            ));
            placed.push(Placed {
                offset: next,
                len: b.bytes.len() as u64,
                max_timestamp: log_append_time.unwrap_or(b.header.max_timestamp),
            });
            next += b.header.last_offset_delta as i64 + 1;
        }
        let mut bufs: Vec<&[u8]> = Vec::with_capacity(batches.len() * 2);
        for (h, b) in headers.iter().zip(batches) {
            bufs.push(h);
            bufs.push(&b.bytes[batch::HEADER_LEN..]);
        }
        // With LogAppendTime the segment's age counts in wall-clock time (see `write_append`).
        self.write_append(&bufs, &placed, log_append_time, now_ms)?;
        self.next_offset = next;
        // A new epoch's first batch: the checkpoint is written with the flush that makes it
        // durable.
        self.epochs_unflushed |= self.epochs.assign(leader_epoch, base_offset);
        Ok(Appended {
            base_offset,
            last_offset: next - 1,
        })
    }

    /// Appends batches a follower fetched from its leader, as they are: their base offsets and
    /// leader epochs are the leader's, and the bytes go to the file unchanged (no header is
    /// rewritten, so the follower's log is byte for byte the leader's). The batches must
    /// continue the log: the first starts at or past the log end, each next one at or past
    /// the end of the one before (past it where a compacted leader's log has a gap), and
    /// their epochs never go back (not below the epoch cache's newest
    /// either); else nothing is written and the answer is `CorruptMessage` naming the offsets.
    /// A follower that started its log with [`Self::truncate_fully_and_start_at`] inside a
    /// batch of the leader's gets that batch (it starts below the log end) refused the same
    /// way: it restarts its log at the batch's base offset and fetches again (as Kafka's
    /// `UnexpectedAppendOffsetException`). No batches: nothing happens.
    ///
    /// Everything else is as [`Self::append`]: segment rolls by size and by `segment.ms`
    /// (measured in the batches' own timestamps), all or nothing, and a new epoch's start goes
    /// into the epoch cache, checkpointed with the next flush.
    pub fn append_replicated(&mut self, batches: &[ProducedBatch]) -> Result<Appended, KafkaError> {
        self.check_writable()?;
        let base_offset = self.next_offset;
        let mut next = base_offset;
        let mut epoch = self.epochs.latest_epoch();
        let mut placed = Vec::with_capacity(batches.len());
        for b in batches {
            let h = &b.header;
            // A compacted leader's log has gaps between batches (see `storage::cleaner`): a
            // batch may start past the log end, never below it. The gap lands inside a
            // segment (a roll starts the new segment at the log end before the append).
            if h.base_offset < next {
                return Err(KafkaError::CorruptMessage(format!(
                    "replicated batch {}..={} does not follow the log: expected base offset \
                     {next} or above (log end {base_offset})",
                    h.base_offset,
                    h.last_offset()
                )));
            }
            if h.partition_leader_epoch < epoch {
                return Err(KafkaError::CorruptMessage(format!(
                    "replicated batch at offset {} has leader epoch {}, older than epoch \
                     {epoch} before it",
                    h.base_offset, h.partition_leader_epoch
                )));
            }
            epoch = h.partition_leader_epoch;
            placed.push(Placed {
                offset: h.base_offset,
                len: b.bytes.len() as u64,
                max_timestamp: h.max_timestamp,
            });
            next = h.last_offset() + 1;
        }
        if batches.is_empty() {
            return Ok(Appended {
                base_offset,
                last_offset: base_offset - 1,
            });
        }
        let bufs: Vec<&[u8]> = batches.iter().map(|b| &b.bytes[..]).collect();
        // The segment's age counts in the batches' timestamps (`placed` is not empty, so the
        // wall-clock fallback is never used).
        self.write_append(&bufs, &placed, None, 0)?;
        self.next_offset = next;
        for b in batches {
            let h = &b.header;
            // Batches from before leader epochs existed carry -1: no epoch to note.
            if h.partition_leader_epoch >= 0 {
                self.epochs_unflushed |=
                    self.epochs.assign(h.partition_leader_epoch, h.base_offset);
            }
        }
        Ok(Appended {
            base_offset,
            last_offset: next - 1,
        })
    }

    /// An error unless the partition takes writes: not offline after a failed fsync or undo,
    /// nor for missing data.
    fn check_writable(&self) -> Result<(), KafkaError> {
        if let Some(why) = &self.poisoned {
            return Err(KafkaError::Storage(format!("partition is offline: {why}")));
        }
        self.check_online()
    }

    /// The write of an append (both kinds): `bufs`, the batches' bytes in order, land where
    /// `placed` says, in the active segment or, when they do not fit it, in a new one it rolls
    /// to. All or nothing: nothing changes (files, segment list, unflushed files) unless the
    /// whole write succeeds, and a failure that cannot be undone takes the partition offline.
    /// The caller moves the log end and the epoch cache after it.
    fn write_append(
        &mut self,
        bufs: &[&[u8]],
        placed: &[Placed],
        log_append_time: Option<i64>,
        now_ms: i64,
    ) -> Result<(), KafkaError> {
        let total: u64 = placed.iter().map(|p| p.len).sum();
        // As Kafka does, a segment's age is measured in its records' time: from the first
        // batch's timestamp to the incoming batches' (wall-clock time for LogAppendTime), so
        // replaying old data does not roll a segment per batch.
        let incoming_ts = log_append_time.unwrap_or_else(|| {
            placed
                .iter()
                .map(|p| p.max_timestamp)
                .max()
                .unwrap_or(now_ms)
        });
        let roll = {
            let active = self.active();
            let too_big = active.size + total > self.config.segment_bytes;
            let too_old = self.config.segment_ms.is_some_and(|ms| {
                let jitter =
                    segment_jitter(&self.dir, active.base_offset, self.config.segment_jitter_ms);
                let ms = ms.saturating_sub(jitter).max(1);
                active
                    .first_timestamp
                    .is_some_and(|t| incoming_ts.saturating_sub(t) > ms as i64)
            });
            // Each append adds at most one index entry: roll before the index is full.
            let index_full =
                (active.index_entries() as u64 + 1) * 8 > self.config.segment_index_bytes;
            active.size > 0 && (too_big || too_old || index_full)
        };
        let interval = self.config.index_interval_bytes;
        // Nothing below changes the log unless the whole append succeeds: a failed write is
        // undone by the segment, a failed roll by `roll_and_append`, and the offsets, the
        // segment list and the unflushed files move only after both.
        let written = if roll {
            self.roll_and_append(bufs, placed)
        } else {
            self.active_mut().append(bufs, placed, interval)
        };
        if let Err(f) = written {
            let op = if roll { "roll" } else { "append" };
            if !f.undone {
                tracing::error!(
                    topic = %self.topic,
                    partition = self.partition,
                    error = %f.error,
                    "a failed {op} could not be undone: partition taken offline; its files may \
                     disagree with memory, so it takes no more writes until the broker restarts \
                     and recovers it from disk"
                );
                self.poisoned = Some(format!("{op} failed and could not be undone: {}", f.error));
            }
            return Err(self.storage_error(op, f.error));
        }
        // The active segment holds its own files (only sealed ones borrow from the cache).
        if let Some(active) = self.active().own_log()
            && !self
                .unflushed_files
                .iter()
                .any(|(f, _)| f.as_ref().is_some_and(|f| Arc::ptr_eq(f, &active)))
        {
            let path = self.active().path();
            self.unflushed_files.push((Some(active), path));
        }
        Ok(())
    }

    /// Rolls the log and appends to the new segment, all or nothing: creates the new segment
    /// first (so a failure there leaves the old one active and untouched), then seals the old
    /// one, then appends. If the seal or the append fails, the new segment's files are removed
    /// and the old segment's seal is undone, so the next append finds the log as it was.
    /// The old segment's in-memory indexes are released only once all of it succeeded.
    fn roll_and_append(&mut self, bufs: &[&[u8]], placed: &[Placed]) -> Result<(), WriteFailed> {
        let interval = self.config.index_interval_bytes;
        let mut seg = Segment::create(&self.dir, self.next_offset).map_err(WriteFailed::clean)?;
        if self.config.preallocate {
            // Best effort: a file system without fallocate still takes the appends.
            if let Err(e) = seg.preallocate(self.config.segment_bytes) {
                tracing::warn!(topic = %self.topic, partition = self.partition, error = %e, "cannot preallocate the new segment");
            }
        }
        let before = self.active().mark();
        let result = self
            .active_mut()
            .seal()
            .and_then(|()| seg.append(bufs, placed, interval));
        if let Err(mut f) = result {
            if let Err(e) = self.active_mut().undo(before) {
                tracing::error!(topic = %self.topic, partition = self.partition, error = %e, "could not undo a segment seal");
                f.undone = false;
            }
            let base = seg.base_offset;
            if let Err(e) = seg.remove() {
                // Harmless: the empty segment is not in the log, and opening the log drops
                // empty segments (see `open`).
                tracing::warn!(topic = %self.topic, partition = self.partition, base_offset = base, error = %e, "could not remove the segment of a failed roll");
            }
            return Err(f);
        }
        self.active_mut().release_indexes();
        let sealed = self.active().path();
        for (f, path) in &mut self.unflushed_files {
            if *path == sealed {
                *f = None;
            }
        }
        tracing::debug!(topic = %self.topic, partition = self.partition, base_offset = self.next_offset, "segment rolled");
        self.segments.push(seg);
        self.dir_unflushed = true;
        Ok(())
    }

    fn storage_error(&self, op: &str, e: io::Error) -> KafkaError {
        tracing::error!(topic = %self.topic, partition = self.partition, error = %e, "log {op} failed");
        KafkaError::Storage(format!("{op} failed: {e}"))
    }

    fn active(&self) -> &Segment {
        // open() and roll always leave at least one segment.
        &self.segments[self.segments.len() - 1]
    }

    fn active_mut(&mut self) -> &mut Segment {
        let last = self.segments.len() - 1;
        &mut self.segments[last]
    }

    fn out_of_range(&self, offset: i64) -> KafkaError {
        KafkaError::OffsetOutOfRange {
            offset,
            start: self.log_start_offset,
            end: self.next_offset,
        }
    }

    /// Finds the batches holding `offset` onward, up to `max_bytes` (the first batch always),
    /// and only batches that start below `visible_end` (a consumer reads below the high
    /// watermark). The offset must lie between the log start and the log end.
    pub fn read(
        &self,
        offset: i64,
        max_bytes: usize,
        visible_end: i64,
    ) -> Result<Option<FileSlice>, KafkaError> {
        self.check_online()?;
        if offset < self.log_start_offset || offset > self.next_offset {
            return Err(self.out_of_range(offset));
        }
        if offset >= visible_end.min(self.next_offset) {
            return Ok(None);
        }
        let first = self
            .segments
            .partition_point(|s| s.base_offset <= offset)
            .saturating_sub(1);
        for seg in &self.segments[first..] {
            let mut start: Option<u64> = None;
            let mut end = 0u64;
            seg.scan(seg.index_lookup(offset), |b| {
                if b.header.base_offset >= visible_end {
                    return false;
                }
                if start.is_none() {
                    if b.header.last_offset() < offset {
                        return true;
                    }
                    start = Some(b.pos);
                } else if let Some(s) = start
                    && (b.pos + b.header.total_len() as u64 - s) as usize > max_bytes
                {
                    return false;
                }
                end = b.pos + b.header.total_len() as u64;
                true
            })
            .map_err(|e| self.storage_error("read", e))?;
            if let Some(s) = start {
                return Ok(Some(FileSlice {
                    file: seg.log_file().map_err(|e| self.storage_error("read", e))?,
                    pos: s,
                    len: (end - s) as usize,
                }));
            }
        }
        Ok(None)
    }

    /// ListOffsets' max-timestamp spec (-3, KIP-734): the offset of the first record with the
    /// largest timestamp in the log, and that timestamp; None when the log is empty. In a
    /// compressed (or log-append-time) batch, the batch's first offset: records are not
    /// decompressed for it, and a reader seeking there reads the record.
    pub fn max_timestamp_offset(&self) -> Result<Option<(i64, i64)>, KafkaError> {
        self.check_online()?;
        let Some(seg) = self
            .segments
            .iter()
            .filter(|s| s.max_timestamp >= 0)
            .reduce(|best, s| {
                if s.max_timestamp > best.max_timestamp {
                    s
                } else {
                    best
                }
            })
        else {
            return Ok(None);
        };
        self.first_in_segment_at_or_after(seg, seg.max_timestamp)
    }

    /// In `seg`, the first record whose timestamp is at least `timestamp` (the time index
    /// gives where to start scanning), with that timestamp; None when the segment has none.
    fn first_in_segment_at_or_after(
        &self,
        seg: &Segment,
        timestamp: i64,
    ) -> Result<Option<(i64, i64)>, KafkaError> {
        let mut found = None;
        seg.scan(seg.time_lookup(timestamp), |b| {
            // A compacted log's empty batches (an idempotent producer's last, kept for its
            // sequence) hold no record to point at.
            if b.header.max_timestamp >= timestamp
                && b.header.records_count > 0
                && b.header.last_offset() >= self.log_start_offset
            {
                found = Some(b);
                return false;
            }
            true
        })
        .map_err(|e| self.storage_error("timestamp lookup", e))?;
        let Some(b) = found else {
            return Ok(None);
        };
        let bytes = seg
            .log_file()
            .and_then(|f| read_at_most(&f, b.pos, b.header.total_len()))
            .map_err(|e| self.storage_error("timestamp lookup", e))?;
        Ok(batch::first_offset_at_or_after(&bytes, timestamp)
            .map(|(offset, ts)| (offset.max(self.log_start_offset), ts)))
    }

    /// The first offset whose record timestamp is at least `timestamp`, with that timestamp;
    /// None when every record is older. Segments older than `timestamp` are skipped by their
    /// largest timestamp; within a segment the time index gives where to start scanning.
    pub fn offset_for_timestamp(&self, timestamp: i64) -> Result<Option<(i64, i64)>, KafkaError> {
        self.check_online()?;
        for seg in &self.segments {
            if seg.max_timestamp < timestamp {
                continue;
            }
            if let Some(found) = self.first_in_segment_at_or_after(seg, timestamp)? {
                return Ok(Some(found));
            }
        }
        Ok(None)
    }

    /// Total bytes of the log's segments.
    pub fn size_bytes(&self) -> u64 {
        self.segments.iter().map(|s| s.size).sum()
    }

    /// Deletes whole segments that retention no longer keeps: the oldest ones while the log
    /// is over `retention.bytes`, and those whose newest record is older than `retention.ms`.
    /// The active segment is never deleted. Returns how many segments went.
    pub fn apply_retention(&mut self, retention: Retention, now_ms: i64) -> Option<Housekeeping> {
        // An offline log's files are evidence for the operator: nothing deletes them.
        if self.lost.is_some() {
            return None;
        }
        let mut doomed = 0;
        let mut size = self.size_bytes();
        while doomed + 1 < self.segments.len() {
            let seg = &self.segments[doomed];
            // Delete the oldest segment only if the log keeps at least retention.bytes without it.
            let over_size = retention.bytes.is_some_and(|max| size - seg.size >= max);
            let too_old = retention.ms.is_some_and(|ms| {
                seg.max_timestamp >= 0 && now_ms.saturating_sub(seg.max_timestamp) > ms as i64
            }) || (retention.ms.is_some() && seg.size == 0);
            if !(over_size || too_old) {
                break;
            }
            size -= seg.size;
            doomed += 1;
        }
        // The new log start is persisted, so the next start can tell these deleted segments
        // from missing ones.
        if doomed == 0 {
            return None;
        }
        let start = self.log_start_offset.max(self.segments[doomed].base_offset);
        Some(self.drop_segments(doomed, Some(start)))
    }

    /// Takes the first `n` segments out of the log and moves the log start offset past them;
    /// the returned job deletes their files (and persists `log_start`, if given).
    fn drop_segments(&mut self, n: usize, log_start: Option<i64>) -> Housekeeping {
        self.generation += 1;
        let next_base = self.segments[n].base_offset;
        if self.log_start_offset < next_base {
            self.log_start_offset = next_base;
        }
        self.dir_unflushed = true;
        let doomed: Vec<Segment> = self.segments.drain(..n).collect();
        // A deleted segment needs no sync, and holding its handle would keep its disk space
        // (acks=1 topics without a flush policy never flush, so nothing else lets go of it);
        // the same goes for the shard's cache of sealed segments' files.
        self.unflushed_files
            .retain(|(_, path)| !doomed.iter().any(|d| d.path() == *path));
        for d in &doomed {
            d.forget_files();
        }
        Housekeeping {
            topic: self.topic.clone(),
            partition: self.partition,
            dir: self.dir.clone(),
            log_start,
            doomed,
            delete_delay_ms: 0,
        }
    }

    /// Segment files written since the last flush (for tests and metrics).
    pub fn unflushed_file_count(&self) -> usize {
        self.unflushed_files.len()
    }

    /// DeleteRecords: moves the log start offset to `offset` (-1: the high watermark) and
    /// deletes the segments wholly below it. Returns the new log start offset.
    pub fn delete_records(
        &mut self,
        offset: i64,
    ) -> Result<(i64, Option<Housekeeping>), KafkaError> {
        self.check_online()?;
        let offset = if offset == -1 {
            self.next_offset
        } else {
            offset
        };
        if offset < 0 || offset > self.next_offset {
            return Err(self.out_of_range(offset));
        }
        if offset <= self.log_start_offset {
            return Ok((self.log_start_offset, None));
        }
        self.log_start_offset = offset;
        let below = self
            .segments
            .partition_point(|s| s.base_offset <= offset)
            .saturating_sub(1);
        let job = if below > 0 {
            self.drop_segments(below, Some(offset))
        } else {
            Housekeeping {
                topic: self.topic.clone(),
                partition: self.partition,
                dir: self.dir.clone(),
                log_start: Some(offset),
                doomed: Vec::new(),
                delete_delay_ms: 0,
            }
        };
        Ok((self.log_start_offset, Some(job)))
    }

    /// Removes every batch at or above `offset` (from the start of the batch holding it: part
    /// of a batch is never kept), as a follower does where its log diverged from a new
    /// leader's (KIP-101/279). Nothing happens at or past the log end; at or below the log
    /// start (or when the cut falls there) the log restarts empty, as
    /// [`Self::truncate_fully_and_start_at`]. The log end, the flushed offset, the epoch cache
    /// and the segments follow; the segment holding the cut becomes the active one. The
    /// returned job makes the cut durable against a power loss (see [`TruncateJob`]); the
    /// caller runs it, and runs no flush job of this log concurrently with this call (a flush
    /// taken before it would checkpoint the old, higher log end).
    ///
    /// Crash safety: a kill at any point leaves files that open (with recovery) as the old
    /// log or as a prefix of it at least as long as the truncated one, never a gap or part of
    /// a batch, because the steps go:
    /// 1. the log end checkpoint is lowered to the new end and synced (a checkpoint above the
    ///    files' end would read as lost data at the next start; a lower one only weakens that
    ///    check), and the leader-epoch checkpoint is rewritten without the entries at or past
    ///    the new end (one behind the log is completed from the batches at open, while an
    ///    entry past the cut would survive into the data appended after it);
    /// 2. the segments wholly above the cut are deleted newest first, each by its log file
    ///    before its indexes: what remains is always a prefix of segments;
    /// 3. the segment holding the cut is cut at a batch boundary (one `ftruncate`, which a
    ///    kill leaves either undone or done) and its indexes are rebuilt from what is left;
    ///    index entries a kill leaves pointing past the log are dropped at open.
    ///
    /// A failure in between takes the partition offline (its files are one of the states
    /// above, which a restart opens).
    pub fn truncate_to(&mut self, offset: i64) -> Result<Option<TruncateJob>, KafkaError> {
        self.check_writable()?;
        if offset >= self.next_offset {
            return Ok(None);
        }
        if offset <= self.log_start_offset {
            return self.truncate_fully_and_start_at(offset);
        }
        let (i, pos, end) = self
            .cut_point(offset)
            .map_err(|e| self.storage_error("truncation", e))?;
        if end <= self.log_start_offset {
            // The log start lies inside the batch holding the cut (DeleteRecords).
            return self.truncate_fully_and_start_at(end);
        }
        match self.cut(i, pos, end) {
            Ok(job) => Ok(Some(job)),
            Err(e) => Err(self.poison("truncation", e)),
        }
    }

    /// Where cutting at `offset` (between the log start and end) cuts: the index of the
    /// segment holding the batch that holds `offset`, that batch's position in it, and its
    /// base offset (the new log end).
    fn cut_point(&self, offset: i64) -> io::Result<(usize, u64, i64)> {
        let i = self
            .segments
            .partition_point(|s| s.base_offset <= offset)
            .saturating_sub(1);
        let seg = &self.segments[i];
        let mut found = None;
        let mut end = seg.base_offset;
        let size = seg.scan(seg.index_lookup(offset), |b| {
            if b.header.last_offset() >= offset {
                found = Some((b.pos, b.header.base_offset));
                return false;
            }
            end = b.header.last_offset() + 1;
            true
        })?;
        // No batch of the segment reaches `offset` (the next segment starts right after it):
        // the cut falls at the segment's end.
        let (pos, end) = found.unwrap_or((size, end));
        Ok((i, pos, end))
    }

    /// The file steps of [`Self::truncate_to`], in their crash-safe order.
    fn cut(&mut self, i: usize, pos: u64, end: i64) -> io::Result<TruncateJob> {
        self.generation += 1;
        // New records below the old checkpoint must be cleaned again (the file is rewritten
        // by the next clean).
        self.cleaner_checkpoint = self.cleaner_checkpoint.min(end);
        sync_log_end(&self.dir, end)?;
        self.truncate_epochs(end)?;
        let removed = self.segments.len() - i - 1;
        self.remove_segments_from(i + 1)?;
        let interval = self.config.index_interval_bytes;
        let seg = &mut self.segments[i];
        // Owns its files (writable) and keeps its indexes in memory again: the active segment.
        seg.truncate(pos, interval)?;
        let base = seg.base_offset;
        let files = vec![
            seg.path(),
            crate::storage::segment::index_path(&self.dir, base),
            crate::storage::segment::time_index_path(&self.dir, base),
        ];
        self.next_offset = end;
        self.flushed_offset = self.flushed_offset.min(end);
        self.dir_unflushed |= removed > 0;
        tracing::info!(topic = %self.topic, partition = self.partition, log_end = end, segments_removed = removed, "log truncated");
        Ok(TruncateJob {
            files,
            dir: (removed > 0).then(|| self.dir.clone()),
            log_end: end,
        })
    }

    /// Deletes every segment and starts the log empty at `offset` (log start = log end =
    /// `offset`): what a follower does when the offset it would fetch from is below its
    /// leader's log start, or when its whole log diverged. The epoch cache is emptied. Returns
    /// the job that makes it durable against a power loss (always one; see [`TruncateJob`]).
    ///
    /// Crash safety: a kill at any point leaves files that open as the old log (or a prefix of
    /// it), or as the new empty log; never a gap the next start would report as lost data:
    /// 1. the log end checkpoint is lowered to the smaller of the old log start and `offset`
    ///    (no prefix of the old log, nor the new log, ends below that), and the emptied
    ///    leader-epoch checkpoint is written (the old log's is rebuilt from its batches at
    ///    open);
    /// 2. a new log start above the old one is persisted now (the old log then opens with its
    ///    start moved up, which is consistent);
    /// 3. the empty segment at `offset` is created (or the segment with that base, once the
    ///    segments above it are deleted, is cut to nothing): while any old segment with data
    ///    remains, open drops an empty segment, so the log is still the old one;
    /// 4. the old segments are deleted newest first (a prefix remains);
    /// 5. a new log start below the old one is persisted last (the empty segment alone opens
    ///    at `offset` with the old, higher start clamped to its end).
    pub fn truncate_fully_and_start_at(
        &mut self,
        offset: i64,
    ) -> Result<Option<TruncateJob>, KafkaError> {
        self.check_writable()?;
        if offset < 0 {
            return Err(self.out_of_range(offset));
        }
        match self.restart_at(offset) {
            Ok(job) => Ok(Some(job)),
            Err(e) => Err(self.poison("truncation", e)),
        }
    }

    /// The file steps of [`Self::truncate_fully_and_start_at`], in their crash-safe order.
    fn restart_at(&mut self, offset: i64) -> io::Result<TruncateJob> {
        self.generation += 1;
        self.cleaner_checkpoint = self.cleaner_checkpoint.min(offset);
        let old_start = self.log_start_offset;
        sync_log_end(&self.dir, offset.min(old_start))?;
        self.truncate_epochs(i64::MIN)?;
        if offset > old_start {
            write_log_start(&self.dir, offset)?;
        }
        let fresh = match self.segments.iter().position(|s| s.base_offset == offset) {
            Some(k) => {
                self.remove_segments_from(k + 1)?;
                let mut seg = self.pop_segment()?;
                seg.truncate(0, self.config.index_interval_bytes)?;
                seg
            }
            None => Segment::create(&self.dir, offset)?,
        };
        let fresh_path = fresh.path();
        // From here the log in memory is the new one; the old segments' files go below.
        let old = std::mem::replace(&mut self.segments, vec![fresh]);
        self.next_offset = offset;
        self.log_start_offset = offset;
        self.flushed_offset = offset;
        self.dir_unflushed = true;
        self.unflushed_files.clear();
        for seg in old.into_iter().rev() {
            seg.remove()?;
        }
        if offset < old_start {
            write_log_start(&self.dir, offset)?;
        }
        tracing::info!(topic = %self.topic, partition = self.partition, offset, "log truncated fully: it restarts empty");
        Ok(TruncateJob {
            files: vec![
                fresh_path,
                crate::storage::segment::index_path(&self.dir, offset),
                crate::storage::segment::time_index_path(&self.dir, offset),
            ],
            dir: Some(self.dir.clone()),
            log_end: offset,
        })
    }

    /// Drops the epoch cache's entries at or past `end` and, when that changed it, rewrites
    /// its checkpoint now (see `truncate_to`, step 1).
    fn truncate_epochs(&mut self, end: i64) -> io::Result<()> {
        if self.epochs.truncate_from(end) || self.epochs_unflushed {
            epochs::write_checkpoint(&self.dir, &self.epochs.checkpoint_text())?;
            self.epochs_unflushed = false;
        }
        Ok(())
    }

    /// Deletes the segments from index `from` on, newest first, with their files (kept out of
    /// the next flush).
    fn remove_segments_from(&mut self, from: usize) -> io::Result<()> {
        while self.segments.len() > from {
            let seg = self.pop_segment()?;
            seg.remove()?;
        }
        Ok(())
    }

    /// Takes the newest segment out of the log (and out of the unflushed files).
    fn pop_segment(&mut self) -> io::Result<Segment> {
        let seg = self
            .segments
            .pop()
            .ok_or_else(|| io::Error::other("no segment"))?;
        let path = seg.path();
        self.unflushed_files.retain(|(_, p)| *p != path);
        Ok(seg)
    }

    /// Takes the partition offline after a failure that left its files and memory apart (a
    /// restart opens the files), and says so.
    fn poison(&mut self, op: &str, e: io::Error) -> KafkaError {
        tracing::error!(
            topic = %self.topic,
            partition = self.partition,
            error = %e,
            "a {op} failed part way: partition taken offline until the broker restarts and \
             recovers it from disk"
        );
        self.poisoned = Some(format!("{op} failed part way: {e}"));
        KafkaError::Storage(format!("{op} failed: {e}"))
    }

    /// Removes the partition's files.
    pub fn delete(self) -> io::Result<()> {
        let dir = self.dir.clone();
        drop(self);
        fs::remove_dir_all(dir)
    }
}

impl Drop for PartitionLog {
    /// A closed log's sealed segments give their cached descriptors back (on the owning
    /// shard, where logs are dropped; a deleted partition's files must not stay open).
    fn drop(&mut self) {
        crate::storage::segment::sealed::forget_dir(&self.dir);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::batch::{split_produce_records, tests::batch};
    use crate::storage::io::faults;
    use bytes::Bytes;

    /// Appends with the leader's offsets, truncation, and their crash safety.
    mod replication;

    const CFG: LogConfig = LogConfig {
        segment_bytes: 1 << 20,
        segment_ms: None,
        index_interval_bytes: 100,
        ..LogConfig::BASE
    };

    fn produce(log: &mut PartitionLog, ts: i64, values: &[&[u8]]) -> Appended {
        let b = split_produce_records(&Bytes::from(batch(ts, values)), 1 << 20).unwrap();
        log.append(&b, 0, None, ts).unwrap()
    }

    /// Appends one batch written by the leader of `epoch`.
    fn produce_in(log: &mut PartitionLog, epoch: i32, values: &[&[u8]]) -> Appended {
        let b = split_produce_records(&Bytes::from(batch(1000, values)), 1 << 20).unwrap();
        log.append(&b, epoch, None, 1000).unwrap()
    }

    fn flush(log: &mut PartitionLog) {
        let job = log.begin_flush().unwrap();
        let target = job.target;
        let r = job.run();
        log.finish_flush(target, &r);
        r.unwrap();
    }

    #[test]
    fn leader_epochs_are_stamped_checkpointed_with_the_flush_and_follow_the_log() {
        let dir = tempfile::tempdir().unwrap();
        let checkpoint = || {
            fs::read_to_string(partition_dir(dir.path(), "t", 0).join(epochs::CHECKPOINT_FILE)).ok()
        };
        let mut log = PartitionLog::open(dir.path(), "t", 0, CFG, false).unwrap();
        produce_in(&mut log, 0, &[b"a", b"b"]);
        produce_in(&mut log, 0, &[b"c"]);
        assert_eq!(
            checkpoint(),
            None,
            "written with the flush, not on the executor"
        );
        flush(&mut log);
        assert_eq!(checkpoint().as_deref(), Some("0\n1\n0 0\n"));
        let at = produce_in(&mut log, 4, &[b"d"]).base_offset;
        assert_eq!(at, 3);
        flush(&mut log);
        assert_eq!(checkpoint().as_deref(), Some("0\n2\n0 0\n4 3\n"));
        assert_eq!(log.leader_epochs().end_offset_for(0, 4), (0, 3));
        assert!(log.begin_flush().is_none(), "nothing left to flush");
        // The epoch is in every batch header on disk.
        let s = log.read(0, usize::MAX, i64::MAX).unwrap().unwrap();
        let bytes = read_at_most(&s.file, s.pos, s.len).unwrap();
        let mut epochs = vec![];
        let mut p = 0;
        while p < bytes.len() {
            let h = batch::BatchHeader::parse(&bytes[p..]).unwrap();
            epochs.push((h.base_offset, h.partition_leader_epoch));
            p += h.total_len();
        }
        assert_eq!(epochs, vec![(0, 0), (2, 0), (3, 4)]);
        // A checkpoint lost in a crash is rebuilt from the batches the open scan sees.
        drop(log);
        fs::remove_file(partition_dir(dir.path(), "t", 0).join(epochs::CHECKPOINT_FILE)).unwrap();
        let mut log = PartitionLog::open(dir.path(), "t", 0, CFG, true).unwrap();
        assert_eq!(log.leader_epochs().end_offset_for(9, 4), (4, 4));
        flush(&mut log);
        assert_eq!(checkpoint().as_deref(), Some("0\n2\n0 0\n4 3\n"));
        // An entry past the log end (the tail holding it was cut) is dropped at open.
        drop(log);
        fs::write(
            partition_dir(dir.path(), "t", 0).join(epochs::CHECKPOINT_FILE),
            "0\n3\n0 0\n4 3\n6 9\n",
        )
        .unwrap();
        let log = PartitionLog::open(dir.path(), "t", 0, CFG, true).unwrap();
        assert_eq!(log.leader_epochs().latest_epoch(), 4);
    }

    fn read_all(log: &PartitionLog, offset: i64, max: usize) -> Vec<i64> {
        let Some(s) = log.read(offset, max, i64::MAX).unwrap() else {
            return vec![];
        };
        let bytes = read_at_most(&s.file, s.pos, s.len).unwrap();
        let mut bases = vec![];
        let mut p = 0;
        while p < bytes.len() {
            let h = batch::BatchHeader::parse(&bytes[p..]).unwrap();
            bases.push(h.base_offset);
            p += h.total_len();
        }
        bases
    }

    #[test]
    fn append_read_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let mut log = PartitionLog::open(dir.path(), "t", 0, CFG, false).unwrap();
        assert_eq!(
            produce(&mut log, 10, &[b"a", b"b"]),
            Appended {
                base_offset: 0,
                last_offset: 1
            }
        );
        for i in 0..50 {
            produce(&mut log, 100 + i, &[b"0123456789"]);
        }
        assert_eq!(log.log_end_offset(), 52);
        assert_eq!(
            read_all(&log, 1, 1 << 20)[0],
            0,
            "offset inside the first batch"
        );
        assert_eq!(read_all(&log, 30, 1 << 20)[0], 30);
        assert_eq!(
            read_all(&log, 30, 1).len(),
            1,
            "first batch even over budget"
        );
        assert!(read_all(&log, 52, 100).is_empty());
        assert_eq!(log.read(53, 100, i64::MAX).unwrap_err().code(), 1);
        assert_eq!(log.offset_for_timestamp(120).unwrap(), Some((22, 120)));
        assert_eq!(log.offset_for_timestamp(11).unwrap(), Some((1, 20)));
        assert_eq!(log.offset_for_timestamp(1000).unwrap(), None);
        drop(log);
        let mut log = PartitionLog::open(dir.path(), "t", 0, CFG, false).unwrap();
        assert_eq!(log.log_end_offset(), 52);
        assert_eq!(read_all(&log, 45, 1 << 20)[0], 45);
        assert_eq!(produce(&mut log, 5, &[b"z"]).base_offset, 52);
    }

    #[test]
    fn rolls_segments_and_reads_across_them() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = LogConfig {
            segment_bytes: 1024,
            segment_ms: None,
            index_interval_bytes: 100,
            ..LogConfig::BASE
        };
        let mut log = PartitionLog::open(dir.path(), "t", 0, cfg, false).unwrap();
        let value = [7u8; 200];
        for _ in 0..20 {
            produce(&mut log, 0, &[&value]);
        }
        assert!(log.segment_count() > 3, "{} segments", log.segment_count());
        for offset in 0..20 {
            assert_eq!(read_all(&log, offset, 1)[0], offset);
        }
        drop(log);
        let log = PartitionLog::open(dir.path(), "t", 0, cfg, false).unwrap();
        assert_eq!(log.log_end_offset(), 20);
        assert_eq!(read_all(&log, 19, 1)[0], 19);
    }

    /// `segment.index.bytes`: a segment whose offset index is full rolls; `preallocate`
    /// reserves blocks without changing what the log reads back; `segment.jitter.ms` takes a
    /// stable share of at most the jitter off `segment.ms`.
    #[test]
    fn index_size_preallocation_and_jitter() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = LogConfig {
            index_interval_bytes: 0,
            segment_index_bytes: 24,
            preallocate: true,
            segment_bytes: 1 << 20,
            ..LogConfig::BASE
        };
        let mut log = PartitionLog::open(dir.path(), "t", 0, cfg, false).unwrap();
        for _ in 0..10 {
            produce(&mut log, 0, &[b"v"]);
        }
        // Three entries of 8 bytes fill 24 bytes: ten batches take four segments.
        assert_eq!(log.segment_count(), 4);
        for offset in 0..10 {
            assert_eq!(read_all(&log, offset, 1)[0], offset);
        }
        drop(log);
        let log = PartitionLog::open(dir.path(), "t", 0, cfg, false).unwrap();
        assert_eq!(log.log_end_offset(), 10);
        let j = |base| segment_jitter(dir.path(), base, 1000);
        assert!((0..100).all(|b| j(b) < 1000));
        assert_eq!(j(7), j(7));
        assert!((0..100).any(|b| j(b) != j(0)));
        assert_eq!(segment_jitter(dir.path(), 5, 0), 0);
    }

    fn small_segments() -> LogConfig {
        LogConfig {
            segment_bytes: 300,
            segment_ms: None,
            index_interval_bytes: 1,
            ..LogConfig::BASE
        }
    }

    /// 30 one-record batches, ~3 per segment, timestamps 1000, 1010, ...
    fn thirty(dir: &Path) -> PartitionLog {
        let mut log = PartitionLog::open(dir, "t", 0, small_segments(), false).unwrap();
        for i in 0..30 {
            produce(&mut log, 1000 + i * 10, &[&[b'x'; 40]]);
        }
        assert!(log.segment_count() >= 8, "{} segments", log.segment_count());
        log
    }

    /// Sealed segments read end to end hold at most the shard's limit of descriptors, and
    /// a slice handed out keeps its file readable after the cache lets the segment go.
    #[test]
    fn sealed_segments_share_a_bounded_cache_of_descriptors() {
        use crate::storage::segment::sealed;
        sealed::set_fds_max(6);
        let dir = tempfile::tempdir().unwrap();
        let log = thirty(dir.path());
        assert_eq!(sealed::open_fds(), 0, "rolled segments let their files go");
        let first = log.read(0, 1, i64::MAX).unwrap().unwrap();
        for offset in 0..30 {
            assert_eq!(read_all(&log, offset, 1)[0], offset);
            assert!(sealed::open_fds() <= 6, "{} open", sealed::open_fds());
        }
        assert_eq!(log.offset_for_timestamp(1000).unwrap(), Some((0, 1000)));
        let bytes = read_at_most(&first.file, first.pos, first.len).unwrap();
        assert_eq!(batch::BatchHeader::parse(&bytes).unwrap().base_offset, 0);
        drop(log);
        assert_eq!(
            sealed::open_fds(),
            0,
            "a closed log gives its descriptors back"
        );
        sealed::set_fds_max(sealed::SEGMENT_FDS_MAX_DEFAULT);
    }

    #[test]
    fn timestamp_lookup_uses_the_time_index_and_survives_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let log = thirty(dir.path());
        let check = |log: &PartitionLog| {
            for i in 0..30 {
                assert_eq!(
                    log.offset_for_timestamp(1000 + i * 10).unwrap(),
                    Some((i, 1000 + i * 10))
                );
                assert_eq!(
                    log.offset_for_timestamp(995 + i * 10).unwrap(),
                    Some((i, 1000 + i * 10))
                );
            }
            assert_eq!(log.offset_for_timestamp(1291).unwrap(), None);
        };
        check(&log);
        drop(log);
        check(&PartitionLog::open(dir.path(), "t", 0, small_segments(), false).unwrap());
        // Without any time index the lookups still work: the indexes are rebuilt.
        for e in fs::read_dir(partition_dir(dir.path(), "t", 0)).unwrap() {
            let p = e.unwrap().path();
            if p.extension().is_some_and(|x| x == "timeindex") {
                fs::remove_file(p).unwrap();
            }
        }
        check(&PartitionLog::open(dir.path(), "t", 0, small_segments(), false).unwrap());
    }

    #[test]
    fn sealed_segments_answer_lookups_from_their_index_files() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = LogConfig {
            segment_bytes: 4000,
            segment_ms: None,
            index_interval_bytes: 1,
            ..LogConfig::BASE
        };
        let mut log = PartitionLog::open(dir.path(), "t", 0, cfg, false).unwrap();
        for i in 0..200 {
            produce(&mut log, 1000 + i * 10, &[&[b'x'; 40]]);
        }
        let check = |log: &PartitionLog| {
            assert!(log.segment_count() >= 5, "{} segments", log.segment_count());
            let (sealed, active) = log.segments.split_at(log.segments.len() - 1);
            assert!(sealed.iter().all(|s| !s.indexes_in_memory()));
            assert!(active[0].indexes_in_memory());
            for i in 0..200 {
                assert_eq!(read_all(log, i, 1)[0], i, "offset {i}");
                assert_eq!(
                    log.offset_for_timestamp(995 + i * 10).unwrap(),
                    Some((i, 1000 + i * 10)),
                    "timestamp of offset {i}"
                );
            }
        };
        check(&log);
        drop(log);
        check(&PartitionLog::open(dir.path(), "t", 0, cfg, false).unwrap());
    }

    #[test]
    fn segments_roll_by_age() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = LogConfig {
            segment_bytes: 1 << 20,
            segment_ms: Some(100),
            index_interval_bytes: 100,
            ..LogConfig::BASE
        };
        let mut log = PartitionLog::open(dir.path(), "t", 0, cfg, false).unwrap();
        let one = |ts| split_produce_records(&Bytes::from(batch(ts, &[b"v"])), 1 << 20).unwrap();
        log.append(&one(1000), 0, None, 1000).unwrap();
        log.append(&one(1050), 0, None, 1099).unwrap();
        assert_eq!(log.segment_count(), 1, "younger than segment.ms");
        log.append(&one(1100), 0, None, 9999).unwrap();
        assert_eq!(
            log.segment_count(),
            1,
            "age is record time, not wall-clock time"
        );
        log.append(&one(1101), 0, None, 1101).unwrap();
        assert_eq!(
            log.segment_count(),
            2,
            "first batch is more than segment.ms older"
        );
    }

    /// A log written before the checkpoint existed (none on disk) whose old retention left
    /// a log start file below its first segment is not taken for one that lost data.
    #[test]
    fn a_log_from_before_the_checkpoint_is_not_taken_for_a_loss() {
        let dir = tempfile::tempdir().unwrap();
        let log = thirty(dir.path());
        let bases: Vec<i64> = log.segments.iter().map(|s| s.base_offset).collect();
        drop(log);
        let pdir = partition_dir(dir.path(), "t", 0);
        fs::write(pdir.join(LOG_START_FILE), "1").unwrap();
        for base in &bases[..2] {
            Segment::open(&pdir, *base, 1).unwrap().remove().unwrap();
        }
        let log = PartitionLog::open(dir.path(), "t", 0, small_segments(), false).unwrap();
        assert_eq!(log.missing, vec![]);
        assert_eq!(log.log_start_offset(), bases[2]);
        assert_eq!(read_log_start(&pdir).unwrap(), Some(bases[2]));
    }

    /// Segments deleted by retention are not missing; the same segments deleted behind the
    /// log's back are, and so is a lost tail, until the loss is accepted.
    #[test]
    fn open_tells_deleted_segments_from_missing_ones() {
        let dir = tempfile::tempdir().unwrap();
        let mut log = thirty(dir.path());
        flush(&mut log);
        let bases: Vec<i64> = log.segments.iter().map(|s| s.base_offset).collect();
        let job = log
            .apply_retention(
                Retention {
                    ms: Some(50),
                    bytes: None,
                },
                1300,
            )
            .unwrap();
        job.run().unwrap();
        let start = log.log_start_offset();
        assert!(start > 0);
        drop(log);
        let log = PartitionLog::open(dir.path(), "t", 0, small_segments(), false).unwrap();
        assert_eq!(log.missing, vec![], "retention deleted them");
        assert_eq!((log.log_start_offset(), log.log_end_offset()), (start, 30));
        drop(log);
        // The first remaining segment and the last one go behind its back.
        let pdir = partition_dir(dir.path(), "t", 0);
        let first = *bases.iter().find(|&&b| b >= start).unwrap();
        let second = *bases.iter().find(|&&b| b > first).unwrap();
        let last = *bases.last().unwrap();
        for base in [first, last] {
            fs::remove_file(crate::storage::segment::log_path(&pdir, base)).unwrap();
        }
        let log = PartitionLog::open(dir.path(), "t", 0, small_segments(), true).unwrap();
        assert_eq!(log.missing, vec![(first, second), (last, 30)]);
        assert_eq!(log.read(second, 100, i64::MAX).unwrap_err().code(), 56);
        assert_eq!(log.offset_for_timestamp(0).unwrap_err().code(), 56);
        drop(log);
        assert_eq!(
            accept_loss(dir.path(), "t", 0).unwrap(),
            vec![(first, second), (last, 30)]
        );
        let mut log = PartitionLog::open(dir.path(), "t", 0, small_segments(), false).unwrap();
        assert_eq!(log.missing, vec![]);
        assert_eq!((log.log_start_offset(), log.log_end_offset()), (second, 30));
        assert_eq!(produce(&mut log, 5000, &[b"z"]).base_offset, 30);
    }

    #[test]
    fn retention_by_size_and_time_deletes_whole_old_segments() {
        // 15 segments of two records each (offsets 2k, 2k+1; max timestamp 1010 + 20k).
        let dir = tempfile::tempdir().unwrap();
        let mut log = thirty(dir.path());
        // By time: at now = 1300 with retention.ms = 50, segments whose newest record is
        // older than 1250 go: [0,1] .. [22,23]; [24,25] (newest 1250) stays.
        let expire = |log: &mut PartitionLog, ms: Option<u64>, bytes: Option<u64>, now: i64| {
            let job = log.apply_retention(Retention { ms, bytes }, now);
            let n = job.as_ref().map_or(0, |j| j.doomed.len());
            if let Some(job) = job {
                job.run().unwrap();
            }
            n
        };
        assert_eq!(expire(&mut log, Some(50), None, 1300), 12);
        assert!(
            log.unflushed_file_count() <= log.segment_count(),
            "deleted segments are no longer held for a flush: {} files, {} segments",
            log.unflushed_file_count(),
            log.segment_count()
        );
        assert_eq!(log.log_start_offset(), 24);
        assert_eq!(
            log.read(23, 100, i64::MAX).unwrap_err().code(),
            1,
            "below the log start"
        );
        assert_eq!(read_all(&log, 24, 1)[0], 24);
        assert_eq!(log.offset_for_timestamp(0).unwrap(), Some((24, 1240)));
        // By size: keep at least 400 bytes: two segments of 216 bytes stay.
        assert_eq!(expire(&mut log, None, Some(400), 0), 1);
        assert!(log.size_bytes() >= 400);
        assert_eq!(log.log_start_offset(), 26);
        // The active segment stays even when everything is old.
        expire(&mut log, Some(1), Some(0), i64::MAX / 2);
        assert_eq!(log.segment_count(), 1);
        assert_eq!(log.log_start_offset(), 28);
        assert_eq!(log.log_end_offset(), 30);
        drop(log);
        let log = PartitionLog::open(dir.path(), "t", 0, small_segments(), false).unwrap();
        assert_eq!((log.log_start_offset(), log.log_end_offset()), (28, 30));
    }

    #[test]
    fn delete_records_moves_the_log_start_durably() {
        let dir = tempfile::tempdir().unwrap();
        let mut log = thirty(dir.path());
        let (start, job) = log.delete_records(17).unwrap();
        assert_eq!(start, 17);
        job.unwrap().run().unwrap();
        assert_eq!(log.log_start_offset(), 17);
        assert_eq!(log.read(16, 100, i64::MAX).unwrap_err().code(), 1);
        assert_eq!(read_all(&log, 17, 1)[0], 17);
        assert_eq!(log.delete_records(5).unwrap().0, 17, "never moves back");
        assert_eq!(log.delete_records(31).unwrap_err().code(), 1);
        drop(log);
        let mut log = PartitionLog::open(dir.path(), "t", 0, small_segments(), false).unwrap();
        assert_eq!(log.log_start_offset(), 17);
        assert_eq!(log.delete_records(-1).unwrap().0, 30);
        assert_eq!(log.log_end_offset(), 30);
    }

    #[test]
    fn empty_log_reopens() {
        let dir = tempfile::tempdir().unwrap();
        drop(PartitionLog::open(dir.path(), "t", 0, CFG, false).unwrap());
        let mut log = PartitionLog::open(dir.path(), "t", 0, CFG, false).unwrap();
        assert_eq!(log.log_end_offset(), 0);
        assert_eq!(produce(&mut log, 0, &[b"a"]).base_offset, 0);
    }

    #[test]
    fn recovery_cuts_corrupt_or_torn_tails() {
        let seg_path = |d: &Path| crate::storage::segment::log_path(&partition_dir(d, "t", 0), 0);
        // (what to do to the file, offsets that must survive)
        type Damage = fn(&mut Vec<u8>);
        let cases: [(&str, Damage, i64); 3] = [
            ("flipped record byte", |b| *b.last_mut().unwrap() ^= 0xff, 2),
            ("torn last batch", |b| b.truncate(b.len() - 5), 2),
            (
                "garbage after the log",
                |b| b.extend_from_slice(&[0xab; 100]),
                3,
            ),
        ];
        for (name, damage, survive) in cases {
            let dir = tempfile::tempdir().unwrap();
            let mut log = PartitionLog::open(dir.path(), "t", 0, CFG, false).unwrap();
            for v in [b"a", b"b", b"c"] {
                produce(&mut log, 0, &[v]);
            }
            drop(log);
            let mut bytes = fs::read(seg_path(dir.path())).unwrap();
            damage(&mut bytes);
            fs::write(seg_path(dir.path()), &bytes).unwrap();
            fs::remove_file(crate::storage::segment::index_path(
                &partition_dir(dir.path(), "t", 0),
                0,
            ))
            .unwrap();
            let mut log = PartitionLog::open(dir.path(), "t", 0, CFG, true).unwrap();
            let r = log.recovered.unwrap();
            assert_eq!(log.log_end_offset(), survive, "{name}");
            assert_eq!(r.records as i64, survive, "{name}");
            assert!(
                r.truncated_bytes > 0 || survive == 3 && r.truncated_bytes == 100,
                "{name}: {r:?}"
            );
            for offset in 0..survive {
                assert_eq!(read_all(&log, offset, 1)[0], offset, "{name}");
            }
            assert_eq!(produce(&mut log, 0, &[b"d"]).base_offset, survive, "{name}");
            drop(log);
            let log = PartitionLog::open(dir.path(), "t", 0, CFG, true).unwrap();
            assert_eq!(
                log.log_end_offset(),
                survive + 1,
                "{name}: appends after recovery persist"
            );
            assert_eq!(log.recovered.unwrap().truncated_bytes, 0, "{name}");
        }
    }

    /// Append `i` of a deterministic sequence: one or two batches of one or two records,
    /// timestamps growing (so most appends add offset and time index entries).
    fn nth_request(i: i64) -> Vec<ProducedBatch> {
        let ts = 1000 + i * 100;
        let mut bytes = batch(ts, &[&[b'v'; 40]]);
        if i % 3 == 1 {
            bytes.extend(batch(ts + 50, &[b"second", b"batch"]));
        }
        split_produce_records(&Bytes::from(bytes), 1 << 20).unwrap()
    }

    /// Every file of the partition directory, by name, with its bytes.
    fn files(dir: &Path) -> Vec<(String, Vec<u8>)> {
        let mut out: Vec<(String, Vec<u8>)> = fs::read_dir(partition_dir(dir, "t", 0))
            .unwrap()
            .map(|e| {
                let e = e.unwrap();
                let name = e.file_name().into_string().unwrap();
                (name, fs::read(e.path()).unwrap())
            })
            .collect();
        out.sort();
        out
    }

    /// What a reader sees of a log: its start and end, the batches read at every offset, and
    /// the (offset, timestamp) found for a range of timestamps.
    type Contents = (i64, i64, Vec<Vec<i64>>, Vec<Option<(i64, i64)>>);

    fn contents(log: &PartitionLog) -> Contents {
        let hw = log.log_end_offset();
        let reads = (0..hw).map(|o| read_all(log, o, 1)).collect();
        let times = (0..hw)
            .map(|o| log.offset_for_timestamp(1000 + o * 40).unwrap())
            .collect();
        (log.log_start_offset(), hw, reads, times)
    }

    /// Two logs given the same `appends` appends by `append`, one of them meeting one failure
    /// of `op` in every append that does that write. Checks that each failed append was undone
    /// (KAFKA_STORAGE_ERROR, not offline, its retry gets the offsets it would have had) and
    /// that after every append the files are as if the failure never happened. Returns the
    /// faulty log and its directory, the twin and its directory, and how many appends failed.
    fn faulty_and_twin(
        op: &str,
        cfg: LogConfig,
        appends: usize,
        append: impl Fn(&mut PartitionLog, usize) -> Result<Appended, KafkaError>,
    ) -> (
        tempfile::TempDir,
        PartitionLog,
        tempfile::TempDir,
        PartitionLog,
        usize,
    ) {
        let (faulty_dir, twin_dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let mut faulty = PartitionLog::open(faulty_dir.path(), "t", 0, cfg, false).unwrap();
        let mut twin = PartitionLog::open(twin_dir.path(), "t", 0, cfg, false).unwrap();
        let mut failed = 0;
        for i in 0..appends {
            let want = append(&mut twin, i).unwrap();
            // Every append meets one failure of `op` if it does that write at all.
            faults::set_for_this_thread(&format!("{op}:ENOSPC:t-0/:1"));
            let first = append(&mut faulty, i);
            faults::set_for_this_thread("");
            match first {
                Ok(got) => assert_eq!(got, want, "{op}: append {i}"),
                Err(e) => {
                    assert_eq!(e.code(), 56, "{op}: append {i}: KAFKA_STORAGE_ERROR");
                    failed += 1;
                    assert!(faulty.poisoned().is_none(), "{op}: undone, so not offline");
                    assert_eq!(
                        append(&mut faulty, i).unwrap(),
                        want,
                        "{op}: append {i}: the retry gets the offsets the failed one would have had"
                    );
                }
            }
            assert_eq!(
                files(faulty_dir.path()),
                files(twin_dir.path()),
                "{op}: append {i}: the files are as if the failure never happened"
            );
            assert_eq!(
                faulty.segment_count(),
                twin.segment_count(),
                "{op}: append {i}"
            );
            assert_eq!(
                faulty.unflushed_file_count(),
                twin.unflushed_file_count(),
                "{op}: append {i}"
            );
        }
        (faulty_dir, faulty, twin_dir, twin, failed)
    }

    #[test]
    fn a_failed_write_of_an_append_or_roll_leaves_the_log_as_it_was() {
        // Small segments roll every few appends; index entries every other batch or so, so
        // that a seal often has a timestamp to add.
        let cfg = LogConfig {
            segment_bytes: 400,
            segment_ms: None,
            index_interval_bytes: 150,
            ..LogConfig::BASE
        };
        for op in ["write", "index", "timeindex", "create", "seal"] {
            let (faulty_dir, faulty, _twin_dir, twin, failed) =
                faulty_and_twin(op, cfg, 24, |log, i| {
                    log.append(&nth_request(i as i64), 0, None, 0)
                });
            assert!(failed >= 3, "{op}: only {failed} appends met the fault");
            assert_eq!(contents(&faulty), contents(&twin), "{op}");
            drop(faulty);
            for recover in [false, true] {
                let reopened = PartitionLog::open(faulty_dir.path(), "t", 0, cfg, recover).unwrap();
                assert_eq!(
                    contents(&reopened),
                    contents(&twin),
                    "{op}: reopened, recover={recover}"
                );
                if recover {
                    assert_eq!(reopened.recovered.unwrap().truncated_bytes, 0, "{op}");
                }
            }
        }
    }

    #[test]
    fn an_append_that_cannot_be_undone_takes_the_partition_offline() {
        let cfg = LogConfig {
            segment_bytes: 1 << 20,
            segment_ms: None,
            index_interval_bytes: 1,
            ..LogConfig::BASE
        };
        let dir = tempfile::tempdir().unwrap();
        let mut log = PartitionLog::open(dir.path(), "t", 0, cfg, false).unwrap();
        produce(&mut log, 1000, &[b"a"]);
        produce(&mut log, 1010, &[b"b"]);
        let req = split_produce_records(&Bytes::from(batch(1020, &[b"c"])), 1 << 20).unwrap();
        faults::set_for_this_thread("index:EIO:t-0/:1;undo:EIO:t-0/:1");
        let failed = log.append(&req, 0, None, 0);
        faults::set_for_this_thread("");
        assert_eq!(failed.unwrap_err().code(), 56);
        assert!(
            log.poisoned()
                .is_some_and(|why| why.contains("could not be undone")),
            "{:?}",
            log.poisoned()
        );
        assert_eq!(
            log.append(&req, 0, None, 0).unwrap_err().code(),
            56,
            "an offline partition takes no writes: its log file is longer than its offsets say"
        );
        assert_eq!(log.log_end_offset(), 2);
        drop(log);
        // The restart recovers from what is on disk. The unacknowledged batch, whole and valid,
        // may stay (as after a crash); what matters is that the next offset follows the log.
        let mut log = PartitionLog::open(dir.path(), "t", 0, cfg, true).unwrap();
        let end = log.log_end_offset();
        assert!(end == 2 || end == 3, "log end {end}");
        assert_eq!(read_all(&log, 0, 1 << 20), (0..end).collect::<Vec<_>>());
        assert_eq!(produce(&mut log, 1030, &[b"d"]).base_offset, end);
    }

    #[test]
    fn empty_segments_left_by_a_failed_roll_are_dropped_at_open() {
        for recover in [false, true] {
            let dir = tempfile::tempdir().unwrap();
            let log = thirty(dir.path());
            let want = contents(&log);
            let bases: Vec<i64> = log.segments.iter().map(|s| s.base_offset).collect();
            drop(log);
            // A roll at offset 5 whose files could not be removed, after which the old segment
            // took more appends: an empty segment in the middle, and one at the end.
            let pdir = partition_dir(dir.path(), "t", 0);
            assert!(!bases.contains(&5) && !bases.contains(&29));
            drop(Segment::create(&pdir, 5).unwrap());
            drop(Segment::create(&pdir, 29).unwrap());
            let mut log =
                PartitionLog::open(dir.path(), "t", 0, small_segments(), recover).unwrap();
            assert_eq!(contents(&log), want, "recover={recover}");
            assert_eq!(log.segment_count(), bases.len(), "recover={recover}");
            assert_eq!(produce(&mut log, 5000, &[b"next"]).base_offset, 30);
            assert!(!log_path_exists(&pdir, 5) && !log_path_exists(&pdir, 29));
        }
        // A log whose only segment is empty keeps it.
        let dir = tempfile::tempdir().unwrap();
        drop(PartitionLog::open(dir.path(), "t", 0, CFG, false).unwrap());
        let log = PartitionLog::open(dir.path(), "t", 0, CFG, true).unwrap();
        assert_eq!((log.segment_count(), log.log_end_offset()), (1, 0));
    }

    fn log_path_exists(dir: &Path, base: i64) -> bool {
        crate::storage::segment::log_path(dir, base).exists()
    }

    #[test]
    fn partial_tail_is_cut_on_open() {
        let dir = tempfile::tempdir().unwrap();
        let mut log = PartitionLog::open(dir.path(), "t", 0, CFG, false).unwrap();
        produce(&mut log, 0, &[b"a"]);
        produce(&mut log, 0, &[b"b"]);
        drop(log);
        let path = crate::storage::segment::log_path(&partition_dir(dir.path(), "t", 0), 0);
        let len = fs::metadata(&path).unwrap().len();
        let f = fs::OpenOptions::new().write(true).open(&path).unwrap();
        f.set_len(len - 3).unwrap();
        let mut log = PartitionLog::open(dir.path(), "t", 0, CFG, false).unwrap();
        assert_eq!(log.log_end_offset(), 1);
        assert_eq!(produce(&mut log, 0, &[b"c"]).base_offset, 1);
    }
}
