//! One segment: a log file of record batches and its sparse offset index.
//!
//! Lives on: the shard that owns the segment's partition.
//!
//! The index holds an entry (offset - base, position) for the first batch written after every
//! `index_interval_bytes` of log, so finding an offset is a binary search in the index and a
//! scan of at most that many bytes of batch headers.

use std::fs::{File, OpenOptions};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::protocol::batch::{BatchHeader, HEADER_LEN};

/// Offset in a batch where the CRC32C coverage begins (attributes).
const CRC_START: usize = 21;
use crate::storage::io::{pwritev_all, read_at_most};

/// Bytes read at a time while walking batch headers.
const SCAN_WINDOW_BYTES: usize = 16 * 1024;
const INDEX_ENTRY_BYTES: usize = 8;

pub fn log_path(dir: &Path, base_offset: i64) -> PathBuf {
    dir.join(format!("{base_offset:020}.log"))
}

pub fn index_path(dir: &Path, base_offset: i64) -> PathBuf {
    dir.join(format!("{base_offset:020}.index"))
}

#[derive(Debug)]
pub struct Segment {
    pub base_offset: i64,
    /// The partition directory holding this segment's files.
    dir: PathBuf,
    /// Shared read-only with fetch responses in flight (see `FileSlice`); only this segment's
    /// owner writes through it, and only past every slice it handed out.
    pub log: Arc<File>,
    index_file: File,
    /// (offset - base_offset, position), ascending in both.
    index: Vec<(u32, u32)>,
    /// Bytes of valid batches in the log file.
    pub size: u64,
    bytes_since_index: u64,
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

impl Segment {
    /// Creates an empty segment starting at `base_offset`.
    pub fn create(dir: &Path, base_offset: i64) -> io::Result<Segment> {
        let open = |p: PathBuf| {
            OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .truncate(true)
                .open(p)
        };
        Ok(Segment {
            base_offset,
            dir: dir.to_path_buf(),
            log: Arc::new(open(log_path(dir, base_offset))?),
            index_file: open(index_path(dir, base_offset))?,
            index: Vec::new(),
            size: 0,
            bytes_since_index: 0,
        })
    }

    /// Opens an existing segment. Index entries that point past the end of the log are
    /// dropped; a missing index is rebuilt by a scan.
    pub fn open(dir: &Path, base_offset: i64, index_interval_bytes: u64) -> io::Result<Segment> {
        let open = |p: PathBuf| {
            OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .truncate(false)
                .open(p)
        };
        let log = open(log_path(dir, base_offset))?;
        let size = log.metadata()?.len();
        let index_file = open(index_path(dir, base_offset))?;
        let raw = read_at_most(&index_file, 0, index_file.metadata()?.len() as usize)?;
        let mut index = Vec::with_capacity(raw.len() / INDEX_ENTRY_BYTES);
        for e in raw.chunks_exact(INDEX_ENTRY_BYTES) {
            let rel = u32::from_be_bytes([e[0], e[1], e[2], e[3]]);
            let pos = u32::from_be_bytes([e[4], e[5], e[6], e[7]]);
            let ordered = index.last().is_none_or(|&(r, p)| rel > r && pos > p);
            if (pos as u64) < size && ordered {
                index.push((rel, pos));
            }
        }
        let mut seg = Segment {
            base_offset,
            dir: dir.to_path_buf(),
            log: Arc::new(log),
            index_file,
            index,
            size,
            bytes_since_index: 0,
        };
        if seg.index.is_empty() && size > 0 {
            seg.rebuild_index(index_interval_bytes)?;
        }
        seg.rewrite_index_file()?;
        Ok(seg)
    }

    fn rebuild_index(&mut self, interval: u64) -> io::Result<()> {
        self.index.clear();
        let mut since = interval; // index the first batch
        let mut entries = Vec::new();
        self.scan(0, |b| {
            if since >= interval {
                entries.push((
                    (b.header.base_offset - self.base_offset) as u32,
                    b.pos as u32,
                ));
                since = 0;
            }
            since += b.header.total_len() as u64;
            true
        })?;
        self.index = entries;
        Ok(())
    }

    /// Crash recovery of this segment: checks every batch from the start (length, magic,
    /// CRC32C, offsets moving forward), cuts the file at the first batch that fails, and
    /// rebuilds the index from what is left.
    pub fn recover(&mut self, interval: u64) -> io::Result<Recovered> {
        let mut out = Recovered::default();
        let mut pos = 0u64;
        let mut next = self.base_offset;
        let mut index = Vec::new();
        let mut since = interval;
        while pos + HEADER_LEN as u64 <= self.size {
            let head = read_at_most(&self.log, pos, HEADER_LEN)?;
            let Some(h) = BatchHeader::parse(&head) else {
                break;
            };
            let total = h.total_len() as u64;
            let sane = h.batch_length >= (HEADER_LEN - 12) as i32
                && pos + total <= self.size
                && h.magic == 2
                && h.base_offset >= next
                && h.records_count > 0
                && h.last_offset_delta >= 0
                && h.base_offset - self.base_offset <= u32::MAX as i64;
            if !sane {
                break;
            }
            let body = read_at_most(&self.log, pos, total as usize)?;
            if body.len() as u64 != total || crc32c::crc32c(&body[CRC_START..]) != h.crc {
                break;
            }
            if since >= interval {
                index.push(((h.base_offset - self.base_offset) as u32, pos as u32));
                since = 0;
            }
            since += total;
            next = h.last_offset() + 1;
            out.batches += 1;
            out.records += h.records_count as u64;
            pos += total;
        }
        out.bytes = pos;
        out.truncated_bytes = self.size - pos;
        if pos < self.size {
            self.log.set_len(pos)?;
            self.size = pos;
        }
        self.index = index;
        self.bytes_since_index = since;
        self.rewrite_index_file()?;
        out.next_offset = (out.batches > 0).then_some(next);
        Ok(out)
    }

    fn rewrite_index_file(&mut self) -> io::Result<()> {
        let mut bytes = Vec::with_capacity(self.index.len() * INDEX_ENTRY_BYTES);
        for &(rel, pos) in &self.index {
            bytes.extend_from_slice(&rel.to_be_bytes());
            bytes.extend_from_slice(&pos.to_be_bytes());
        }
        self.index_file.set_len(0)?;
        pwritev_all(&self.index_file, 0, &[&bytes])
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
                window = read_at_most(&self.log, pos, want)?;
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

    /// Position from which a scan for `offset` starts: the last index entry at or below it.
    pub fn index_lookup(&self, offset: i64) -> u64 {
        let rel = (offset - self.base_offset).clamp(0, u32::MAX as i64) as u32;
        match self.index.partition_point(|&(r, _)| r <= rel) {
            0 => 0,
            i => self.index[i - 1].1 as u64,
        }
    }

    /// Position of the last index entry (where a scan for the log end starts).
    pub fn last_indexed_pos(&self) -> u64 {
        self.index.last().map_or(0, |&(_, p)| p as u64)
    }

    /// Appends batches (each given as its buffers) that start at `offsets`; adds index
    /// entries every `interval` bytes.
    pub fn append(
        &mut self,
        bufs: &[&[u8]],
        batches: &[(i64, u64)],
        interval: u64,
    ) -> io::Result<()> {
        let start = self.size;
        if let Err(e) = pwritev_all(&self.log, start, bufs) {
            // Leave no partial batch behind: the log ends where it ended before.
            let _ = self.log.set_len(start);
            return Err(e);
        }
        let mut pos = start;
        let mut new_entries = Vec::new();
        for &(offset, len) in batches {
            if self.bytes_since_index >= interval || self.index.is_empty() && pos == 0 {
                let entry = ((offset - self.base_offset) as u32, pos as u32);
                self.index.push(entry);
                new_entries.extend_from_slice(&entry.0.to_be_bytes());
                new_entries.extend_from_slice(&entry.1.to_be_bytes());
                self.bytes_since_index = 0;
            }
            self.bytes_since_index += len;
            pos += len;
        }
        self.size = pos;
        if !new_entries.is_empty() {
            let at = ((self.index.len() * INDEX_ENTRY_BYTES) - new_entries.len()) as u64;
            pwritev_all(&self.index_file, at, &[&new_entries])?;
        }
        Ok(())
    }

    /// Deletes this segment's files.
    pub fn remove(self) -> io::Result<()> {
        std::fs::remove_file(log_path(&self.dir, self.base_offset))?;
        match std::fs::remove_file(index_path(&self.dir, self.base_offset)) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        }
    }

    /// Cuts the log at `size` (after a torn tail) and drops index entries past it.
    pub fn truncate(&mut self, size: u64) -> io::Result<()> {
        self.log.set_len(size)?;
        self.size = size;
        self.index.retain(|&(_, p)| (p as u64) < size);
        self.rewrite_index_file()
    }
}
