//! One segment: a log file of record batches, its sparse offset index and its time index.
//!
//! Lives on: the shard that owns the segment's partition.
//!
//! - The offset index (`.index`, 8-byte entries `(offset - base u32, position u32)`) holds an
//!   entry for the first batch written after every `index_interval_bytes` of log, so finding an
//!   offset is a binary search in the index and a scan of at most that many bytes of headers.
//! - The time index (`.timeindex`, 12-byte entries `(max timestamp i64, offset - base u32)`)
//!   gets an entry when the segment's largest timestamp grows, at most once per
//!   `index_interval_bytes`, and always when the segment is sealed (rolled). Its timestamps
//!   only grow, so finding the first record at or after a time is a binary search in it and a
//!   short scan.
//!
//! Both indexes are derived data: they are rebuilt from the log whenever they are missing,
//! point past the log, or the segment is recovered after a crash.
//!
//! Failure atomicity: an append writes the log, then the offset index, then the time index.
//! If any of the three writes fails, [`Segment::append`] puts everything back as it was
//! before the append (the three files' lengths and the in-memory state), so the next append
//! lands at the same position with the same offsets. Treating the index writes as
//! best-effort instead (as Kafka may, rebuilding indexes at recovery) would leave index files
//! that disagree with the log after a *clean* stop, which opens trusting them; and an entry
//! written for an append whose log bytes were then cut points at a position that a later,
//! different batch may occupy (mid-batch), from which the end-of-log scan would stop early
//! and cut acknowledged data. Undoing is cheap (shrinking a file needs no free space), and
//! when even that fails the caller takes the partition offline (see [`WriteFailed`]).
//!
//! Memory: only the active segment keeps its index entries in memory. A sealed segment's
//! lookups binary-search its index files with positional reads (served by the page cache), so
//! a partition's heap does not grow with the data it retains.

use std::fs::{File, OpenOptions};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::protocol::batch::{BatchHeader, CRC_START, HEADER_LEN};
use crate::storage::io::{faults, pwritev_all, read_at_most};

/// Bytes read at a time while walking batch headers.
const SCAN_WINDOW_BYTES: usize = 16 * 1024;
const INDEX_ENTRY_BYTES: usize = 8;
const TIME_ENTRY_BYTES: usize = 12;

pub fn log_path(dir: &Path, base_offset: i64) -> PathBuf {
    dir.join(format!("{base_offset:020}.log"))
}

pub fn index_path(dir: &Path, base_offset: i64) -> PathBuf {
    dir.join(format!("{base_offset:020}.index"))
}

pub fn time_index_path(dir: &Path, base_offset: i64) -> PathBuf {
    dir.join(format!("{base_offset:020}.timeindex"))
}

/// Where a batch of an append lands: its base offset, bytes and largest timestamp.
#[derive(Clone, Copy, Debug)]
pub struct Placed {
    pub offset: i64,
    pub len: u64,
    pub max_timestamp: i64,
}

#[derive(Debug)]
pub struct Segment {
    pub base_offset: i64,
    /// The partition directory holding this segment's files.
    dir: PathBuf,
    /// The segment's open files while it is active (and until it is sealed and released);
    /// a sealed segment borrows them from the shard's bounded cache instead ([`sealed`]), so
    /// descriptors do not grow with partitions x segments.
    own: Option<Arc<SegmentFiles>>,
    /// Names the segment in the cache of sealed segments' files (no path hashed per lookup).
    id: u64,
    /// (offset - base_offset, position), ascending in both. Empty once released (sealed).
    index: Vec<(u32, u32)>,
    /// (largest timestamp so far, offset - base_offset of the batch that raised it). Empty
    /// once released (sealed).
    time_index: Vec<(i64, u32)>,
    /// Whether `index` and `time_index` hold the entries; when not, the files do and
    /// `index_len`/`time_len` count them.
    resident: bool,
    index_len: usize,
    time_len: usize,
    /// Bytes of valid batches in the log file.
    pub size: u64,
    bytes_since_index: u64,
    bytes_since_time_entry: u64,
    /// Largest batch timestamp in the segment (-1 when empty).
    pub max_timestamp: i64,
    /// Largest timestamp of the first batch (what `segment.ms` counts from), if any.
    pub first_timestamp: Option<i64>,
    /// Base offset of the last batch (for the seal entry of the time index).
    last_batch_offset: i64,
    /// Blocks past the end of the log file were reserved ([`Segment::preallocate`]).
    preallocated: bool,
}

/// A write that failed: the error, and whether the segment (its files and its in-memory
/// state) was put back as it was before the write. When it was not (an undo failed too), the
/// files may disagree with memory and the partition must take no more writes until a
/// restart recovers it from disk.
#[derive(Debug)]
pub struct WriteFailed {
    pub error: io::Error,
    pub undone: bool,
}

impl WriteFailed {
    /// A failure that left nothing to undo.
    pub fn clean(error: io::Error) -> WriteFailed {
        WriteFailed {
            error,
            undone: true,
        }
    }
}

/// The state of an active segment before a write, to put back if the write fails.
#[derive(Clone, Copy, Debug)]
pub struct Mark {
    size: u64,
    index_len: usize,
    time_len: usize,
    bytes_since_index: u64,
    bytes_since_time_entry: u64,
    max_timestamp: i64,
    first_timestamp: Option<i64>,
    last_batch_offset: i64,
}

/// What a recovery scan of a segment found.
#[derive(Clone, Copy, Debug, Default)]
pub struct Recovered {
    pub batches: u64,
    pub records: u64,
    /// Bytes of valid batches kept.
    pub bytes: u64,
    /// Bytes cut off the end (a torn or corrupt tail).
    pub truncated_bytes: u64,
    /// The offset after the last valid batch, if there was one.
    pub next_offset: Option<i64>,
}

/// A batch found by a scan: its header and where it starts.
#[derive(Clone, Copy, Debug)]
pub struct Located {
    pub header: BatchHeader,
    pub pos: u64,
}

/// A segment's three open files.
#[derive(Debug)]
pub struct SegmentFiles {
    /// Shared read-only with fetch responses in flight (see `FileSlice`); only the segment's
    /// owner writes through it, and only past every slice it handed out.
    log: Arc<File>,
    index: File,
    time: File,
}

/// The files of sealed segments, opened on demand and kept in a bounded cache per thread:
/// each shard is one thread, so this is a per-shard limit with no lock. A segment read again
/// soon (a consumer going through old data) finds its files open; past
/// `--segment-fds-max` descriptors, the least recently used segment's files are closed (a
/// `FileSlice` in flight keeps its own `Arc<File>`, so a read in progress is never cut).
pub mod sealed {
    use std::cell::RefCell;
    use std::collections::HashMap;
    use std::fs::{File, OpenOptions};
    use std::io;
    use std::path::{Path, PathBuf};
    use std::sync::Arc;
    use std::sync::atomic::{AtomicU64, Ordering};

    use super::{SegmentFiles, index_path, log_path, time_index_path};

    /// Descriptors of sealed segments a shard keeps open when nothing sets it.
    pub const SEGMENT_FDS_MAX_DEFAULT: usize = 3072;

    struct Cache {
        fds_max: usize,
        tick: u64,
        /// Segment id -> (its files, when last used, its partition directory).
        entries: HashMap<u64, (Arc<SegmentFiles>, u64, PathBuf)>,
    }

    static NEXT_ID: AtomicU64 = AtomicU64::new(0);

    /// A fresh segment id (unique in the process, whichever thread opens the segment).
    pub(super) fn next_id() -> u64 {
        NEXT_ID.fetch_add(1, Ordering::Relaxed)
    }

    thread_local! {
        static CACHE: RefCell<Cache> = RefCell::new(Cache {
            fds_max: SEGMENT_FDS_MAX_DEFAULT,
            tick: 0,
            entries: HashMap::new(),
        });
    }

    /// Sets this thread's (shard's) limit on sealed segments' open descriptors.
    pub fn set_fds_max(fds_max: usize) {
        CACHE.with(|c| c.borrow_mut().fds_max = fds_max);
    }

    /// Descriptors of sealed segments this thread holds open now.
    pub fn open_fds() -> usize {
        CACHE.with(|c| c.borrow().entries.len() * 3)
    }

    /// Opens without creating: a sealed segment whose files are gone is an error, never a
    /// new empty file.
    fn open(p: PathBuf) -> io::Result<File> {
        OpenOptions::new().read(true).open(p)
    }

    pub(super) fn get(id: u64, dir: &Path, base: i64) -> io::Result<Arc<SegmentFiles>> {
        CACHE.with(|c| {
            let mut c = c.borrow_mut();
            c.tick += 1;
            let tick = c.tick;
            if let Some((files, used, _)) = c.entries.get_mut(&id) {
                *used = tick;
                return Ok(files.clone());
            }
            let files = Arc::new(SegmentFiles {
                log: Arc::new(open(log_path(dir, base))?),
                index: open(index_path(dir, base))?,
                time: open(time_index_path(dir, base))?,
            });
            // The least recently used go first; the one just opened always stays.
            while !c.entries.is_empty() && (c.entries.len() + 1) * 3 > c.fds_max {
                let oldest = c
                    .entries
                    .iter()
                    .min_by_key(|(_, (_, used, _))| *used)
                    .map(|(k, _)| *k);
                if let Some(k) = oldest {
                    c.entries.remove(&k);
                }
            }
            c.entries
                .insert(id, (files.clone(), tick, dir.to_path_buf()));
            Ok(files)
        })
    }

    pub(super) fn forget(id: u64) {
        CACHE.with(|c| c.borrow_mut().entries.remove(&id));
    }

    /// Forgets every cached segment of a partition directory (the log is closed or deleted).
    pub fn forget_dir(dir: &Path) {
        CACHE.with(|c| c.borrow_mut().entries.retain(|_, (_, _, d)| d != dir));
    }
}

fn open_rw(p: PathBuf, truncate: bool) -> io::Result<File> {
    OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(truncate)
        .open(p)
}

/// Removes whichever of a segment's files exist, the log first (a segment is known by its
/// log file, so stray index files alone are never read as a segment).
fn remove_files(dir: &Path, base_offset: i64) -> io::Result<()> {
    for p in [
        log_path(dir, base_offset),
        index_path(dir, base_offset),
        time_index_path(dir, base_offset),
    ] {
        match std::fs::remove_file(p) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
            _ => {}
        }
    }
    Ok(())
}

fn read_entries(file: &File) -> io::Result<Vec<u8>> {
    read_at_most(file, 0, file.metadata()?.len() as usize)
}

/// An offset index entry (`INDEX_ENTRY_BYTES`): (offset - base_offset, position).
fn decode_index_entry(e: &[u8]) -> (u32, u32) {
    (
        u32::from_be_bytes([e[0], e[1], e[2], e[3]]),
        u32::from_be_bytes([e[4], e[5], e[6], e[7]]),
    )
}

/// A time index entry (`TIME_ENTRY_BYTES`): (timestamp, offset - base_offset).
fn decode_time_entry(e: &[u8]) -> (i64, u32) {
    (
        i64::from_be_bytes([e[0], e[1], e[2], e[3], e[4], e[5], e[6], e[7]]),
        u32::from_be_bytes([e[8], e[9], e[10], e[11]]),
    )
}

/// Entry `i` of an index file of `N`-byte entries.
fn read_entry<const N: usize>(file: &File, i: usize) -> io::Result<[u8; N]> {
    let bytes = read_at_most(file, (i * N) as u64, N)?;
    bytes.try_into().map_err(|_| past_index())
}

fn past_index() -> io::Error {
    io::Error::new(io::ErrorKind::UnexpectedEof, "index entry past the index")
}

/// The first `i` in `0..n` for which `pred` is false (`pred` is true then false over the
/// range), like `slice::partition_point`, for entries read one at a time.
fn partition_point(n: usize, pred: impl Fn(usize) -> io::Result<bool>) -> io::Result<usize> {
    let (mut lo, mut hi) = (0, n);
    while lo < hi {
        let mid = lo + (hi - lo) / 2;
        if pred(mid)? {
            lo = mid + 1;
        } else {
            hi = mid;
        }
    }
    Ok(lo)
}

impl Segment {
    /// Creates an empty segment starting at `base_offset`. If any of its three files cannot be
    /// created (EMFILE, ENOSPC on inodes), those that were are removed again, so no partial
    /// segment is left for a restart to find.
    pub fn create(dir: &Path, base_offset: i64) -> io::Result<Segment> {
        let opened =
            faults::check(faults::Op::Create, &log_path(dir, base_offset)).and_then(|()| {
                Ok((
                    open_rw(log_path(dir, base_offset), true)?,
                    open_rw(index_path(dir, base_offset), true)?,
                    open_rw(time_index_path(dir, base_offset), true)?,
                ))
            });
        let (log, index_file, time_index_file) = match opened {
            Ok(files) => files,
            Err(e) => {
                if let Err(rm) = remove_files(dir, base_offset) {
                    // An empty segment left behind holds no data, and opening the log drops
                    // it (see `PartitionLog::open`).
                    tracing::warn!(dir = %dir.display(), base_offset, error = %rm, "could not remove a half-created segment");
                }
                return Err(e);
            }
        };
        Ok(Segment {
            base_offset,
            dir: dir.to_path_buf(),
            own: Some(Arc::new(SegmentFiles {
                log: Arc::new(log),
                index: index_file,
                time: time_index_file,
            })),
            index: Vec::new(),
            time_index: Vec::new(),
            resident: true,
            id: sealed::next_id(),
            index_len: 0,
            time_len: 0,
            size: 0,
            bytes_since_index: 0,
            bytes_since_time_entry: 0,
            max_timestamp: -1,
            first_timestamp: None,
            last_batch_offset: base_offset,
            preallocated: false,
        })
    }

    /// Opens an existing segment. Index entries that point past the end of the log are
    /// dropped; missing indexes are rebuilt by a scan.
    pub fn open(dir: &Path, base_offset: i64, interval: u64) -> io::Result<Segment> {
        let log = open_rw(log_path(dir, base_offset), false)?;
        let size = log.metadata()?.len();
        let index_file = open_rw(index_path(dir, base_offset), false)?;
        let mut index: Vec<(u32, u32)> = Vec::new();
        for e in read_entries(&index_file)?.chunks_exact(INDEX_ENTRY_BYTES) {
            let (rel, pos) = decode_index_entry(e);
            let ordered = index.last().is_none_or(|&(r, p)| rel > r && pos > p);
            if (pos as u64) < size && ordered {
                index.push((rel, pos));
            }
        }
        let time_index_file = open_rw(time_index_path(dir, base_offset), false)?;
        let mut time_index: Vec<(i64, u32)> = Vec::new();
        for e in read_entries(&time_index_file)?.chunks_exact(TIME_ENTRY_BYTES) {
            let (ts, rel) = decode_time_entry(e);
            let ordered = time_index.last().is_none_or(|&(t, r)| ts > t && rel >= r);
            if ordered {
                time_index.push((ts, rel));
            }
        }
        let mut seg = Segment {
            base_offset,
            dir: dir.to_path_buf(),
            own: Some(Arc::new(SegmentFiles {
                log: Arc::new(log),
                index: index_file,
                time: time_index_file,
            })),
            index,
            time_index,
            resident: true,
            id: sealed::next_id(),
            index_len: 0,
            time_len: 0,
            size,
            bytes_since_index: 0,
            bytes_since_time_entry: 0,
            max_timestamp: -1,
            first_timestamp: None,
            last_batch_offset: base_offset,
            preallocated: false,
        };
        // A non-empty log with an empty index has lost its indexes: rebuild both. (An index
        // pointing past the log was cut above; the log checks the time index against the
        // log's last offset once it knows it, see `time_index_past`.)
        if size > 0 && (seg.index.is_empty() || seg.time_index.is_empty()) {
            seg.rebuild_indexes(interval, false)?;
        } else {
            seg.max_timestamp = seg.time_index.last().map_or(-1, |&(t, _)| t);
            seg.first_timestamp = seg.time_index.first().map(|&(t, _)| t);
        }
        Ok(seg)
    }

    /// Rebuilds both indexes from the log. With `check`, every batch is verified (length,
    /// magic, CRC32C, offsets moving forward) and the log is cut at the first that fails.
    fn rebuild_indexes(&mut self, interval: u64, check: bool) -> io::Result<Recovered> {
        self.own_files()?;
        let mut out = Recovered::default();
        let mut pos = 0u64;
        let mut next = self.base_offset;
        self.index.clear();
        self.time_index.clear();
        self.resident = true;
        self.bytes_since_index = interval; // index the first batch
        self.bytes_since_time_entry = interval;
        self.max_timestamp = -1;
        self.first_timestamp = None;
        while pos + HEADER_LEN as u64 <= self.size {
            let head = read_at_most(&self.files()?.log, pos, HEADER_LEN)?;
            let Some(h) = BatchHeader::parse(&head) else {
                break;
            };
            let total = h.total_len() as u64;
            let sane = h.batch_length >= (HEADER_LEN - 12) as i32
                && pos + total <= self.size
                && h.magic == 2
                && h.base_offset >= next
                // A compacted log keeps an idempotent producer's last batch even when none
                // of its records is left (see `storage::cleaner`).
                && h.records_count >= 0
                && h.last_offset_delta >= 0
                && h.base_offset - self.base_offset <= u32::MAX as i64;
            if !sane {
                break;
            }
            if check {
                let body = read_at_most(&self.files()?.log, pos, total as usize)?;
                if body.len() as u64 != total || crc32c::crc32c(&body[CRC_START..]) != h.crc {
                    break;
                }
            }
            self.note_batch(
                pos,
                Placed {
                    offset: h.base_offset,
                    len: total,
                    max_timestamp: h.max_timestamp,
                },
                interval,
            );
            next = h.last_offset() + 1;
            out.batches += 1;
            out.records += h.records_count as u64;
            pos += total;
        }
        out.bytes = pos;
        out.truncated_bytes = self.size - pos;
        if pos < self.size {
            if !check {
                // Without checks only a torn header ends a scan early; recovery decides.
                out.truncated_bytes = 0;
            } else {
                self.files()?.log.set_len(pos)?;
                self.size = pos;
            }
        }
        self.seal_time_index();
        self.rewrite_index_files()?;
        out.next_offset = (out.batches > 0).then_some(next);
        Ok(out)
    }

    /// Crash recovery of this segment: checks every batch from the start, cuts the file at the
    /// first batch that fails, and rebuilds both indexes from what is left.
    pub fn recover(&mut self, interval: u64) -> io::Result<Recovered> {
        self.rebuild_indexes(interval, true)
    }

    /// Updates the in-memory indexes for a batch at `pos`; returns whether an offset and a
    /// time entry were added.
    fn note_batch(&mut self, pos: u64, b: Placed, interval: u64) -> (bool, bool) {
        let rel = (b.offset - self.base_offset) as u32;
        let mut added = (false, false);
        if self.bytes_since_index >= interval {
            self.index.push((rel, pos as u32));
            self.bytes_since_index = 0;
            added.0 = true;
        }
        self.bytes_since_index += b.len;
        if self.first_timestamp.is_none() {
            self.first_timestamp = Some(b.max_timestamp);
        }
        if b.max_timestamp > self.max_timestamp {
            self.max_timestamp = b.max_timestamp;
            if self.bytes_since_time_entry >= interval {
                self.time_index.push((b.max_timestamp, rel));
                self.bytes_since_time_entry = 0;
                added.1 = true;
            }
        }
        self.bytes_since_time_entry += b.len;
        self.last_batch_offset = b.offset;
        added
    }

    /// Makes the time index's last entry carry the segment's largest timestamp, so a sealed
    /// segment's max timestamp can be read from its index. Returns whether an entry was added.
    fn seal_time_index(&mut self) -> bool {
        if self.max_timestamp > self.time_index.last().map_or(-1, |&(t, _)| t) {
            self.time_index.push((
                self.max_timestamp,
                (self.last_batch_offset - self.base_offset) as u32,
            ));
            return true;
        }
        false
    }

    /// Called when the segment stops being the active one: records its largest timestamp. On
    /// failure the segment is put back as it was (see [`WriteFailed`]); a caller that must
    /// undo a successful seal later (a roll that failed further on) takes a [`Segment::mark`]
    /// first.
    pub fn seal(&mut self) -> Result<(), WriteFailed> {
        debug_assert!(self.resident, "seal of a sealed segment");
        let before = self.mark();
        if self.seal_time_index() {
            let (ts, rel) = self.time_index[self.time_index.len() - 1];
            let at = ((self.time_index.len() - 1) * TIME_ENTRY_BYTES) as u64;
            let path = time_index_path(&self.dir, self.base_offset);
            let written = faults::check(faults::Op::Seal, &path).and_then(|()| {
                pwritev_all(
                    &self.files()?.time,
                    at,
                    &[&ts.to_be_bytes(), &rel.to_be_bytes()],
                )
            });
            if let Err(error) = written {
                let undone = self.undo(before).is_ok();
                return Err(WriteFailed { error, undone });
            }
        }
        if self.preallocated {
            // Cutting the file at its own size frees the reserved blocks past it; nothing is
            // lost if that fails (they stay reserved until the segment is deleted).
            let trimmed = self.files().and_then(|f| f.log.set_len(self.size));
            if let Err(e) = trimmed {
                tracing::warn!(segment = %self.path().display(), error = %e, "cannot free the preallocated blocks of a sealed segment");
            }
            self.preallocated = false;
        }
        Ok(())
    }

    /// The state of this (active) segment, for [`Segment::undo`].
    pub fn mark(&self) -> Mark {
        Mark {
            size: self.size,
            index_len: self.index.len(),
            time_len: self.time_index.len(),
            bytes_since_index: self.bytes_since_index,
            bytes_since_time_entry: self.bytes_since_time_entry,
            max_timestamp: self.max_timestamp,
            first_timestamp: self.first_timestamp,
            last_batch_offset: self.last_batch_offset,
        }
    }

    /// Puts this (active) segment back as it was at `mark`: the in-memory state always, the
    /// files by cutting them to their lengths then. Shrinking a file needs no free space, so
    /// this works on a full disk; an error here means the files may be longer than memory
    /// says.
    pub fn undo(&mut self, mark: Mark) -> io::Result<()> {
        debug_assert!(self.resident, "undo on a sealed segment");
        self.size = mark.size;
        self.index.truncate(mark.index_len);
        self.time_index.truncate(mark.time_len);
        self.bytes_since_index = mark.bytes_since_index;
        self.bytes_since_time_entry = mark.bytes_since_time_entry;
        self.max_timestamp = mark.max_timestamp;
        self.first_timestamp = mark.first_timestamp;
        self.last_batch_offset = mark.last_batch_offset;
        // The indexes first: an entry must never outlive the log bytes it points at.
        self.files()?
            .index
            .set_len((mark.index_len * INDEX_ENTRY_BYTES) as u64)?;
        self.files()?
            .time
            .set_len((mark.time_len * TIME_ENTRY_BYTES) as u64)?;
        faults::check(faults::Op::Undo, &log_path(&self.dir, self.base_offset))?;
        self.files()?.log.set_len(mark.size)
    }

    /// Notes batches found by the end-of-log scan of a cleanly opened active segment (their
    /// timestamps may not be in the time index yet).
    pub fn observe(&mut self, b: &BatchHeader) {
        if self.first_timestamp.is_none() {
            self.first_timestamp = Some(b.max_timestamp);
        }
        self.max_timestamp = self.max_timestamp.max(b.max_timestamp);
        self.last_batch_offset = b.base_offset;
    }

    fn rewrite_index_files(&mut self) -> io::Result<()> {
        let mut bytes = Vec::with_capacity(self.index.len() * INDEX_ENTRY_BYTES);
        for &(rel, pos) in &self.index {
            bytes.extend_from_slice(&rel.to_be_bytes());
            bytes.extend_from_slice(&pos.to_be_bytes());
        }
        self.files()?.index.set_len(0)?;
        pwritev_all(&self.files()?.index, 0, &[&bytes])?;
        let mut bytes = Vec::with_capacity(self.time_index.len() * TIME_ENTRY_BYTES);
        for &(ts, rel) in &self.time_index {
            bytes.extend_from_slice(&ts.to_be_bytes());
            bytes.extend_from_slice(&rel.to_be_bytes());
        }
        self.files()?.time.set_len(0)?;
        pwritev_all(&self.files()?.time, 0, &[&bytes])
    }

    /// Walks whole batches from `pos` to the end of the valid log, calling `f` for each until
    /// it returns false. Returns the position after the last whole batch seen.
    pub fn scan(&self, mut pos: u64, mut f: impl FnMut(Located) -> bool) -> io::Result<u64> {
        let mut window: Vec<u8> = Vec::new();
        let mut window_pos = pos;
        while pos + HEADER_LEN as u64 <= self.size {
            let off = (pos - window_pos) as usize;
            if off + HEADER_LEN > window.len() {
                window_pos = pos;
                let want = SCAN_WINDOW_BYTES.min((self.size - pos) as usize);
                window = read_at_most(&self.files()?.log, pos, want)?;
                if window.len() < HEADER_LEN {
                    break;
                }
            }
            let off = (pos - window_pos) as usize;
            let Some(header) = BatchHeader::parse(&window[off..]) else {
                break;
            };
            let end = pos + header.total_len() as u64;
            if header.batch_length < (HEADER_LEN - 12) as i32 || end > self.size {
                break;
            }
            if !f(Located { header, pos }) {
                return Ok(pos);
            }
            pos = end;
        }
        Ok(pos)
    }

    /// Frees the in-memory index entries (the segment was sealed): lookups read the index
    /// files from now on.
    /// Entries of the offset index.
    pub fn index_entries(&self) -> usize {
        if self.resident {
            self.index.len()
        } else {
            self.index_len
        }
    }

    /// Reserves `bytes` of disk blocks for the log file without changing its size
    /// (`fallocate(FALLOC_FL_KEEP_SIZE)`), so appends up to that size allocate nothing.
    /// [`Segment::seal`] gives back what the segment did not use.
    pub fn preallocate(&mut self, bytes: u64) -> io::Result<()> {
        let files = self
            .own
            .as_ref()
            .ok_or_else(|| io::Error::other("the segment's files are not open"))?;
        rustix::fs::fallocate(&files.log, rustix::fs::FallocateFlags::KEEP_SIZE, 0, bytes)?;
        self.preallocated = true;
        Ok(())
    }

    pub fn release_indexes(&mut self) {
        // Its descriptors go too: reads reopen it through the shard's cache of sealed segments.
        self.own = None;
        if self.resident {
            self.index_len = self.index.len();
            self.time_len = self.time_index.len();
            self.index = Vec::new();
            self.time_index = Vec::new();
            self.resident = false;
        }
    }

    /// Whether the index entries are held in memory (the active segment).
    #[cfg(test)]
    pub fn indexes_in_memory(&self) -> bool {
        self.resident
    }

    /// Offset index entry `i`: from memory, or read from the index file.
    fn index_entry(&self, i: usize) -> io::Result<(u32, u32)> {
        if self.resident {
            return self.index.get(i).copied().ok_or_else(past_index);
        }
        let e = read_entry::<INDEX_ENTRY_BYTES>(&self.files()?.index, i)?;
        Ok(decode_index_entry(&e))
    }

    /// Time index entry `i`: from memory, or read from the time index file.
    fn time_entry(&self, i: usize) -> io::Result<(i64, u32)> {
        if self.resident {
            return self.time_index.get(i).copied().ok_or_else(past_index);
        }
        let e = read_entry::<TIME_ENTRY_BYTES>(&self.files()?.time, i)?;
        Ok(decode_time_entry(&e))
    }

    fn index_count(&self) -> usize {
        if self.resident {
            self.index.len()
        } else {
            self.index_len
        }
    }

    fn time_count(&self) -> usize {
        if self.resident {
            self.time_index.len()
        } else {
            self.time_len
        }
    }

    /// Position from which a scan for `offset` starts: the last index entry at or below it.
    /// (Position 0 if the index cannot be read: a longer scan, never a wrong answer.)
    pub fn index_lookup(&self, offset: i64) -> u64 {
        let rel = (offset - self.base_offset).clamp(0, u32::MAX as i64) as u32;
        let found = partition_point(self.index_count(), |i| {
            self.index_entry(i).map(|(r, _)| r <= rel)
        });
        match found {
            Ok(0) | Err(_) => 0,
            Ok(i) => self.index_entry(i - 1).map_or(0, |(_, pos)| pos as u64),
        }
    }

    /// Position from which a scan for the first batch with a timestamp at or after
    /// `timestamp` starts: every batch before the last time entry below it is older.
    pub fn time_lookup(&self, timestamp: i64) -> u64 {
        let found = partition_point(self.time_count(), |i| {
            self.time_entry(i).map(|(t, _)| t < timestamp)
        });
        match found {
            Ok(0) | Err(_) => 0,
            Ok(i) => self.time_entry(i - 1).map_or(0, |(_, rel)| {
                self.index_lookup(self.base_offset + rel as i64)
            }),
        }
    }

    /// Whether the time index names an offset past `last_offset` (it disagrees with the log).
    pub fn time_index_past(&self, last_offset: i64) -> bool {
        let n = self.time_count();
        n > 0
            && self
                .time_entry(n - 1)
                .is_ok_and(|(_, r)| self.base_offset + r as i64 > last_offset)
    }

    /// Rebuilds both indexes from the log (they disagreed with it).
    pub fn reindex(&mut self, interval: u64) -> io::Result<()> {
        self.rebuild_indexes(interval, false).map(drop)
    }

    /// Position of the last index entry (where a scan for the log end starts).
    pub fn last_indexed_pos(&self) -> u64 {
        match self.index_count() {
            0 => 0,
            n => self.index_entry(n - 1).map_or(0, |(_, p)| p as u64),
        }
    }

    /// One past the last offset of the segment's whole batches (its base when it holds none):
    /// where the next segment must start for the log to have no gap. Scans from the last
    /// index entry, so it reads at most an index interval of headers.
    pub fn end_offset(&self) -> io::Result<i64> {
        let mut end = self.base_offset;
        self.scan(self.last_indexed_pos(), |b| {
            end = b.header.last_offset() + 1;
            true
        })?;
        Ok(end)
    }

    /// Appends batches (given as buffers, in order) placed as `batches` say; adds index
    /// entries as they fall due. All or nothing: on failure the segment is as it was before
    /// (unless [`WriteFailed::undone`] says otherwise).
    pub fn append(
        &mut self,
        bufs: &[&[u8]],
        batches: &[Placed],
        interval: u64,
    ) -> Result<(), WriteFailed> {
        debug_assert!(self.resident, "append to a sealed segment");
        let before = self.mark();
        self.write_batches(bufs, batches, interval)
            .map_err(|error| WriteFailed {
                error,
                undone: self.undo(before).is_ok(),
            })
    }

    /// The writes of an append, in order: log, offset index, time index. Leaves the undo to
    /// the caller.
    fn write_batches(
        &mut self,
        bufs: &[&[u8]],
        batches: &[Placed],
        interval: u64,
    ) -> io::Result<()> {
        let start = self.size;
        faults::check(faults::Op::Write, &log_path(&self.dir, self.base_offset))?;
        pwritev_all(&self.files()?.log, start, bufs)?;
        let mut pos = start;
        let (index_len, time_len) = (self.index.len(), self.time_index.len());
        if start == 0 {
            self.bytes_since_index = interval;
            self.bytes_since_time_entry = interval;
        }
        for b in batches {
            self.note_batch(pos, *b, interval);
            pos += b.len;
        }
        self.size = pos;
        let mut entries = Vec::new();
        for &(rel, p) in &self.index[index_len..] {
            entries.extend_from_slice(&rel.to_be_bytes());
            entries.extend_from_slice(&p.to_be_bytes());
        }
        if !entries.is_empty() {
            faults::check(faults::Op::Index, &index_path(&self.dir, self.base_offset))?;
            pwritev_all(
                &self.files()?.index,
                (index_len * INDEX_ENTRY_BYTES) as u64,
                &[&entries],
            )?;
        }
        let mut entries = Vec::new();
        for &(ts, rel) in &self.time_index[time_len..] {
            entries.extend_from_slice(&ts.to_be_bytes());
            entries.extend_from_slice(&rel.to_be_bytes());
        }
        if !entries.is_empty() {
            faults::check(
                faults::Op::TimeIndex,
                &time_index_path(&self.dir, self.base_offset),
            )?;
            pwritev_all(
                &self.files()?.time,
                (time_len * TIME_ENTRY_BYTES) as u64,
                &[&entries],
            )?;
        }
        Ok(())
    }

    /// The segment's files: its own while it is active, else from the shard's cache of sealed
    /// segments (reopened if it was evicted).
    fn files(&self) -> io::Result<Arc<SegmentFiles>> {
        match &self.own {
            Some(f) => Ok(f.clone()),
            None => sealed::get(self.id, &self.dir, self.base_offset),
        }
    }

    /// Makes the segment hold its files itself, opened for writing (a sealed segment whose
    /// indexes are rebuilt at open); released again with [`Segment::release_indexes`].
    fn own_files(&mut self) -> io::Result<()> {
        if self.own.is_none() {
            let open = |p: PathBuf| OpenOptions::new().read(true).write(true).open(p);
            self.own = Some(Arc::new(SegmentFiles {
                log: Arc::new(open(log_path(&self.dir, self.base_offset))?),
                index: open(index_path(&self.dir, self.base_offset))?,
                time: open(time_index_path(&self.dir, self.base_offset))?,
            }));
            self.forget_files();
        }
        Ok(())
    }

    /// The log file, for reads that outlive this call (a `FileSlice` in flight holds it, and
    /// with it the descriptor, even once the cache has let the segment go).
    pub fn log_file(&self) -> io::Result<Arc<File>> {
        Ok(self.files()?.log.clone())
    }

    /// The log file the segment holds itself (the active one always does).
    pub fn own_log(&self) -> Option<Arc<File>> {
        self.own.as_ref().map(|f| f.log.clone())
    }

    /// Forgets this segment's cached files (it is being deleted: an open descriptor would
    /// keep its disk space). Call on the owning shard.
    pub fn forget_files(&self) {
        sealed::forget(self.id);
    }

    /// fsyncs the segment's three files (a staged cleaned segment, before its swap).
    pub fn sync_all(&self) -> io::Result<()> {
        let files = self.files()?;
        files.log.sync_all()?;
        files.index.sync_all()?;
        files.time.sync_all()
    }

    /// Names this segment (and its files in the shard's cache) in the process.
    pub fn id(&self) -> u64 {
        self.id
    }

    /// Path of the log file.
    pub fn path(&self) -> PathBuf {
        log_path(&self.dir, self.base_offset)
    }

    /// Deletes this segment's files.
    /// Renames the segment's files to their names with `suffix` (out of the log: a restart
    /// does not open them) and returns the new paths.
    pub fn rename_with_suffix(self, suffix: &str) -> io::Result<Vec<PathBuf>> {
        self.forget_files();
        let mut out = Vec::new();
        for p in [
            log_path(&self.dir, self.base_offset),
            index_path(&self.dir, self.base_offset),
            time_index_path(&self.dir, self.base_offset),
        ] {
            let mut to = p.clone().into_os_string();
            to.push(suffix);
            match std::fs::rename(&p, &to) {
                Ok(()) => out.push(PathBuf::from(to)),
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(e),
            }
        }
        Ok(out)
    }

    pub fn remove(self) -> io::Result<()> {
        self.forget_files();
        std::fs::remove_file(log_path(&self.dir, self.base_offset))?;
        remove_files(&self.dir, self.base_offset)
    }

    /// Cuts the log at `size` (after a torn tail) and rebuilds the indexes from what is left.
    pub fn truncate(&mut self, size: u64, interval: u64) -> io::Result<()> {
        self.own_files()?;
        self.files()?.log.set_len(size)?;
        self.size = size;
        self.rebuild_indexes(interval, false).map(drop)
    }
}
