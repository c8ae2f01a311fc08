//! [`RaftDisk`]: the durable Raft log, hard state and last received snapshot of this node, in
//! the directory the caller names (the broker passes `<data-dir>/__cluster_metadata-0/raft/`).
//!
//! Lives on: the Raft driver (`node.rs`) owns the one [`RaftDisk`]. It is synchronous and
//! `Send`; the driver moves it onto glommio's blocking pool for every write (one job per
//! Raft `Ready`: [`RaftDisk::append`], [`RaftDisk::set_hard_state`], [`RaftDisk::sync`]) and
//! takes it back when the job is done, so no fsync ever runs on an executor.
//!
//! # Files
//!
//! - `entries.log`: a header frame, then one frame per entry, in index order with no gap.
//!   The header names the entry just before the first one in the file (its index and term:
//!   the point the log was compacted to or a snapshot was installed at, `(0, 0)` for a log
//!   that never was), so `term(first_index - 1)` survives a restart.
//! - `hardstate`: term, vote and commit, one frame, replaced as a whole (tmp, fsync, rename,
//!   directory fsync), so it is either the old or the new one.
//! - `snapshot`: the last snapshot received from a leader (index, term, data), one frame,
//!   replaced as a whole the same way. Absent until a leader sends one.
//!
//! # Frame format
//!
//! ```text
//! frame  = [body length u32][crc32c u32 of the length bytes and the body][body]
//! header = [magic u8 = 1][index u64][term u64]
//! entry  = [term u64][index u64][entry type u8 (0 normal, 1 conf change, 2 conf change v2)][data]
//! hard state = [term u64][vote u64][commit u64]
//! snapshot   = [index u64][term u64][data]
//! ```
//!
//! All integers are big-endian. An entry's `context` is not stored: this node never proposes
//! with one.
//!
//! # Recovery ([`RaftDisk::open`])
//!
//! Leftover `*.tmp` files are deleted. In `entries.log`, a frame that is short or fails its
//! CRC at the end of the file is a torn tail left by a crash mid-append (never acknowledged:
//! Raft sends its acknowledgement after the fdatasync that covers it); the file is cut back to
//! the last whole entry and the cut is logged. Anything else (a bad header, a whole frame that
//! does not decode, an index out of sequence, a damaged `hardstate` or `snapshot`) fails the
//! open with the file and the byte: skipping it would silently lose Raft state. When the
//! snapshot is newer than the log's start (a crash between the two steps of
//! [`RaftDisk::install_snapshot`]), the log is restarted after the snapshot.
//!
//! # Hard state durability
//!
//! [`RaftDisk::set_hard_state`] rewrites `hardstate` when the term or the vote changes (Raft's
//! safety depends on those). A change of the commit index alone is only remembered and written
//! with the next term or vote change: a commit index is re-learned from the leader, and the
//! driver raises the recovered one to the state machine's applied index at start. So the
//! recovered commit may be lower than the last one set.
//!
//! # Failed writes
//!
//! A failed write, fsync or rename poisons the disk: after a failed fsync the state of the
//! page cache is unknown, so every later write is refused ([`DiskError::Poisoned`]) until a
//! restart, whose recovery cuts whatever partial frame the failure left. The one exception is
//! [`RaftDisk::compact`] failing before its rename: only a temporary file changed, so the disk
//! goes on with the longer log. The test fault seam (`SPATE_TEST_FAULTS`, ops `write` and
//! `sync`, path part e.g. `raft/entries.log`) fails the appends and fdatasyncs on purpose.

use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use protobuf::ProtobufEnum;
use raft::eraftpb::{Entry, EntryType, HardState};

use crate::storage::io::faults;

pub const ENTRIES_FILE: &str = "entries.log";
pub const HARD_STATE_FILE: &str = "hardstate";
pub const SNAPSHOT_FILE: &str = "snapshot";

const FRAME_HEADER: usize = 8;
const LOG_MAGIC: u8 = 1;
const LOG_HEADER_BODY: usize = 1 + 8 + 8;
const ENTRY_HEADER: usize = 8 + 8 + 1;
const HARD_STATE_BODY: usize = 8 + 8 + 8;
/// Largest frame body accepted when reading, so a garbled length that happens to pass as a
/// frame cannot make the reader allocate without bound.
pub const FRAME_BYTES_MAX: usize = 256 << 20;

/// What went wrong on the Raft disk, with the file it concerns. Only `Io` during a read may be
/// worth retrying; every write error poisons the disk (see the module docs).
#[derive(Debug, thiserror::Error)]
pub enum DiskError {
    #[error("raft disk: {op} {}: {source}", path.display())]
    Io {
        op: &'static str,
        path: PathBuf,
        source: io::Error,
    },
    #[error("raft disk: {} is corrupt at byte {position}: {reason}", path.display())]
    Corrupt {
        path: PathBuf,
        position: u64,
        reason: String,
    },
    /// The caller asked for something the log cannot hold (a gap, or entries below its
    /// start): a programmer error in the driver, refused before anything is written.
    #[error("raft disk: {0}")]
    Refused(String),
    #[error("raft disk: an earlier write failed ({0}); restart the broker to recover")]
    Poisoned(String),
}

fn io_err(op: &'static str, path: &Path) -> impl FnOnce(io::Error) -> DiskError + use<> {
    let path = path.to_path_buf();
    move |source| DiskError::Io { op, path, source }
}

/// Index and term of a snapshot, or of the entry just before the first one in the log.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SnapshotMeta {
    pub index: u64,
    pub term: u64,
}

/// What [`RaftDisk::open`] found.
#[derive(Debug, Default)]
pub struct Recovered {
    pub hard_state: HardState,
    /// The last snapshot received from a leader, if any.
    pub snapshot: Option<(SnapshotMeta, Vec<u8>)>,
    /// The entry just before `entries` (compaction point or snapshot), `(0, 0)` for none.
    /// Deviation from the first sketch of this API: needed so that compaction without a
    /// snapshot keeps `term(first_index - 1)`.
    pub log_start: SnapshotMeta,
    /// The entries after `log_start`, in order, with no gap.
    pub entries: Vec<Entry>,
}

/// Appends a frame holding `body` to `out`.
fn push_frame(out: &mut Vec<u8>, body: &[u8]) {
    let len = (body.len() as u32).to_be_bytes();
    let crc = crc32c::crc32c_append(crc32c::crc32c(&len), body);
    out.extend_from_slice(&len);
    out.extend_from_slice(&crc.to_be_bytes());
    out.extend_from_slice(body);
}

fn entry_body(e: &Entry) -> Vec<u8> {
    let mut body = Vec::with_capacity(ENTRY_HEADER + e.data.len());
    body.extend_from_slice(&e.term.to_be_bytes());
    body.extend_from_slice(&e.index.to_be_bytes());
    body.push(e.entry_type.value() as u8);
    body.extend_from_slice(&e.data);
    body
}

fn log_header(start: SnapshotMeta) -> Vec<u8> {
    let mut body = Vec::with_capacity(LOG_HEADER_BODY);
    body.push(LOG_MAGIC);
    body.extend_from_slice(&start.index.to_be_bytes());
    body.extend_from_slice(&start.term.to_be_bytes());
    let mut out = Vec::new();
    push_frame(&mut out, &body);
    out
}

/// How reading a frame ended without one.
enum FrameEnd {
    /// The buffer ends here, exactly on a frame boundary.
    Clean,
    /// A short frame or a failed CRC: a torn tail, or damage.
    Torn(String),
}

/// Reads the frame at the start of `buf`: its body and its whole length.
fn read_frame(buf: &[u8]) -> Result<(&[u8], usize), FrameEnd> {
    if buf.is_empty() {
        return Err(FrameEnd::Clean);
    }
    if buf.len() < FRAME_HEADER {
        return Err(FrameEnd::Torn(format!(
            "{} bytes of a frame header",
            buf.len()
        )));
    }
    let len = u32::from_be_bytes([buf[0], buf[1], buf[2], buf[3]]) as usize;
    let crc = u32::from_be_bytes([buf[4], buf[5], buf[6], buf[7]]);
    if len > FRAME_BYTES_MAX || buf.len() - FRAME_HEADER < len {
        return Err(FrameEnd::Torn(format!(
            "a frame of {len} bytes with {} left in the file",
            buf.len() - FRAME_HEADER
        )));
    }
    let body = &buf[FRAME_HEADER..FRAME_HEADER + len];
    if crc32c::crc32c_append(crc32c::crc32c(&buf[0..4]), body) != crc {
        return Err(FrameEnd::Torn("frame CRC mismatch".to_string()));
    }
    Ok((body, FRAME_HEADER + len))
}

fn be_u64(b: &[u8]) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[..8]);
    u64::from_be_bytes(a)
}

/// Reads a file that holds exactly one whole frame; `None` when it does not exist.
fn read_single_frame(path: &Path) -> Result<Option<Vec<u8>>, DiskError> {
    let bytes = match fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(io_err("read", path)(e)),
    };
    let corrupt = |reason: String| DiskError::Corrupt {
        path: path.to_path_buf(),
        position: 0,
        reason,
    };
    match read_frame(&bytes) {
        Ok((body, len)) if len == bytes.len() => Ok(Some(body.to_vec())),
        Ok((_, len)) => Err(corrupt(format!(
            "{} bytes after its frame",
            bytes.len() - len
        ))),
        Err(FrameEnd::Clean) => Err(corrupt("empty file".to_string())),
        Err(FrameEnd::Torn(reason)) => Err(corrupt(reason)),
    }
}

fn sync_dir(dir: &Path) -> Result<(), DiskError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io_err("fsync directory", dir))
}

/// Replaces `dir/name` with `bytes`: tmp file, fsync, rename, directory fsync.
fn replace_file(dir: &Path, name: &str, bytes: &[u8]) -> Result<(), DiskError> {
    let tmp = dir.join(format!("{name}.tmp"));
    let path = dir.join(name);
    File::create(&tmp)
        .and_then(|f| f.write_all_at(bytes, 0).and_then(|()| f.sync_all()))
        .map_err(io_err("write", &tmp))?;
    fs::rename(&tmp, &path).map_err(io_err("rename", &tmp))?;
    sync_dir(dir)
}

/// The durable Raft state of this node. See the module docs.
pub struct RaftDisk {
    dir: PathBuf,
    entries_path: PathBuf,
    /// `entries.log`, open for writing.
    log: File,
    /// The entry just before the first one in the log.
    start: SnapshotMeta,
    /// Byte position of each entry's frame: `positions[i]` holds entry `start.index + 1 + i`.
    positions: Vec<u64>,
    /// Length of `entries.log`.
    len: u64,
    /// The hard state last set, and the one last written to `hardstate`.
    hard_state: HardState,
    written_hard_state: HardState,
    poisoned: Option<String>,
}

impl RaftDisk {
    /// Opens (or creates) the Raft state in `dir` and reads it back; see "Recovery" in the
    /// module docs. Blocking: call it at start-up or on the blocking pool.
    pub fn open(dir: &Path) -> Result<(RaftDisk, Recovered), DiskError> {
        fs::create_dir_all(dir).map_err(io_err("create", dir))?;
        for entry in fs::read_dir(dir).map_err(io_err("list", dir))? {
            let entry = entry.map_err(io_err("list", dir))?;
            if entry.file_name().to_string_lossy().ends_with(".tmp") {
                let path = entry.path();
                fs::remove_file(&path).map_err(io_err("remove leftover", &path))?;
            }
        }

        let hs_path = dir.join(HARD_STATE_FILE);
        let mut hard_state = HardState::default();
        if let Some(body) = read_single_frame(&hs_path)? {
            if body.len() != HARD_STATE_BODY {
                return Err(DiskError::Corrupt {
                    path: hs_path,
                    position: FRAME_HEADER as u64,
                    reason: format!("a hard state of {} bytes", body.len()),
                });
            }
            hard_state.term = be_u64(&body[0..]);
            hard_state.vote = be_u64(&body[8..]);
            hard_state.commit = be_u64(&body[16..]);
        }

        let snap_path = dir.join(SNAPSHOT_FILE);
        let mut snapshot = None;
        if let Some(mut body) = read_single_frame(&snap_path)? {
            if body.len() < 16 {
                return Err(DiskError::Corrupt {
                    path: snap_path,
                    position: FRAME_HEADER as u64,
                    reason: format!("a snapshot of {} bytes", body.len()),
                });
            }
            let meta = SnapshotMeta {
                index: be_u64(&body[0..]),
                term: be_u64(&body[8..]),
            };
            body.drain(..16);
            snapshot = Some((meta, body));
        }

        let entries_path = dir.join(ENTRIES_FILE);
        let (mut start, mut entries, mut positions, len) = read_log(&entries_path)?;
        let mut disk_len = len;
        if let Some((meta, _)) = &snapshot
            && meta.index > start.index
        {
            tracing::warn!(
                file = %entries_path.display(),
                snapshot_index = meta.index,
                log_start = start.index,
                "raft disk: the snapshot is newer than the log; restarting the log after it"
            );
            let header = log_header(*meta);
            replace_file(dir, ENTRIES_FILE, &header)?;
            start = *meta;
            entries.clear();
            positions.clear();
            disk_len = header.len() as u64;
        }
        if disk_len == 0 {
            // A new log: write its header durably before anything is appended.
            let header = log_header(start);
            replace_file(dir, ENTRIES_FILE, &header)?;
            disk_len = header.len() as u64;
        }
        let log = OpenOptions::new()
            .write(true)
            .open(&entries_path)
            .map_err(io_err("open", &entries_path))?;
        sync_dir(dir)?;
        let disk = RaftDisk {
            dir: dir.to_path_buf(),
            entries_path,
            log,
            start,
            positions,
            len: disk_len,
            hard_state: hard_state.clone(),
            written_hard_state: hard_state.clone(),
            poisoned: None,
        };
        Ok((
            disk,
            Recovered {
                hard_state,
                snapshot,
                log_start: start,
                entries,
            },
        ))
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The entry just before the first one in the log.
    pub fn log_start(&self) -> SnapshotMeta {
        self.start
    }

    /// Index of the last entry in the log (`log_start().index` when it holds none).
    pub fn last_index(&self) -> u64 {
        self.start.index + self.positions.len() as u64
    }

    /// Whether a failed write poisoned the disk (see the module docs).
    pub fn is_poisoned(&self) -> bool {
        self.poisoned.is_some()
    }

    fn check(&self) -> Result<(), DiskError> {
        match &self.poisoned {
            Some(why) => Err(DiskError::Poisoned(why.clone())),
            None => Ok(()),
        }
    }

    fn poison<T>(&mut self, r: Result<T, DiskError>) -> Result<T, DiskError> {
        if let Err(e) = &r {
            tracing::error!(error = %e, "raft disk write failed: no more raft writes until a restart");
            self.poisoned = Some(e.to_string());
        }
        r
    }

    /// Writes `entries` (consecutive indexes) to the log, first cutting any entries at or
    /// after the first one's index (a conflicting suffix a new leader replaced). Not durable
    /// until [`RaftDisk::sync`].
    pub fn append(&mut self, entries: &[Entry]) -> Result<(), DiskError> {
        self.check()?;
        let Some(first) = entries.first() else {
            return Ok(());
        };
        if first.index <= self.start.index || first.index > self.last_index() + 1 {
            return Err(DiskError::Refused(format!(
                "entries from index {} do not fit a log holding ({}, {}]",
                first.index,
                self.start.index,
                self.last_index()
            )));
        }
        if let Some(w) = entries.windows(2).find(|w| w[1].index != w[0].index + 1) {
            return Err(DiskError::Refused(format!(
                "entry {} follows entry {}",
                w[1].index, w[0].index
            )));
        }
        let keep = (first.index - self.start.index - 1) as usize;
        if keep < self.positions.len() {
            let cut_at = self.positions[keep];
            let cut = self
                .log
                .set_len(cut_at)
                .map_err(io_err("truncate", &self.entries_path));
            self.poison(cut)?;
            self.positions.truncate(keep);
            self.len = cut_at;
        }
        let mut bytes = Vec::new();
        let mut positions = Vec::with_capacity(entries.len());
        for e in entries {
            positions.push(self.len + bytes.len() as u64);
            push_frame(&mut bytes, &entry_body(e));
        }
        let written = faults::check(faults::Op::Write, &self.entries_path)
            .and_then(|()| self.log.write_all_at(&bytes, self.len))
            .map_err(io_err("write", &self.entries_path));
        self.poison(written)?;
        self.positions.extend(positions);
        self.len += bytes.len() as u64;
        Ok(())
    }

    /// Sets the hard state; writes it now when the term or the vote changed (see "Hard state
    /// durability" in the module docs).
    pub fn set_hard_state(&mut self, hs: &HardState) -> Result<(), DiskError> {
        self.check()?;
        self.hard_state = hs.clone();
        if hs.term != self.written_hard_state.term || hs.vote != self.written_hard_state.vote {
            self.write_hard_state()?;
        }
        Ok(())
    }

    fn write_hard_state(&mut self) -> Result<(), DiskError> {
        let hs = self.hard_state.clone();
        let mut body = Vec::with_capacity(HARD_STATE_BODY);
        body.extend_from_slice(&hs.term.to_be_bytes());
        body.extend_from_slice(&hs.vote.to_be_bytes());
        body.extend_from_slice(&hs.commit.to_be_bytes());
        let mut bytes = Vec::new();
        push_frame(&mut bytes, &body);
        let written = replace_file(&self.dir, HARD_STATE_FILE, &bytes);
        self.poison(written)?;
        self.written_hard_state = hs;
        Ok(())
    }

    /// Makes what [`RaftDisk::append`] wrote durable (fdatasync).
    pub fn sync(&mut self) -> Result<(), DiskError> {
        self.check()?;
        let synced = faults::check(faults::Op::Sync, &self.entries_path)
            .and_then(|()| self.log.sync_data())
            .map_err(io_err("fdatasync", &self.entries_path));
        self.poison(synced)
    }

    /// Installs a snapshot received from a leader: writes the `snapshot` file, then starts an
    /// empty log after it (every older entry is discarded: Raft installs a snapshot only when
    /// its log does not hold the snapshot's last entry). Durable when it returns.
    pub fn install_snapshot(&mut self, meta: SnapshotMeta, data: &[u8]) -> Result<(), DiskError> {
        self.check()?;
        let mut body = Vec::with_capacity(16 + data.len());
        body.extend_from_slice(&meta.index.to_be_bytes());
        body.extend_from_slice(&meta.term.to_be_bytes());
        body.extend_from_slice(data);
        let mut bytes = Vec::new();
        push_frame(&mut bytes, &body);
        let written = replace_file(&self.dir, SNAPSHOT_FILE, &bytes)
            .and_then(|()| self.restart_log(meta, &[]));
        self.poison(written)?;
        if self.hard_state.commit < meta.index {
            self.hard_state.commit = meta.index;
        }
        Ok(())
    }

    /// Replaces the log with one starting after `start` holding `tail` (tmp, fsync, rename,
    /// directory fsync), and reopens it.
    fn restart_log(&mut self, start: SnapshotMeta, tail: &[Entry]) -> Result<(), DiskError> {
        let mut bytes = log_header(start);
        let mut positions = Vec::with_capacity(tail.len());
        for e in tail {
            positions.push(bytes.len() as u64);
            push_frame(&mut bytes, &entry_body(e));
        }
        replace_file(&self.dir, ENTRIES_FILE, &bytes)?;
        self.log = OpenOptions::new()
            .write(true)
            .open(&self.entries_path)
            .map_err(io_err("open", &self.entries_path))?;
        self.start = start;
        self.positions = positions;
        self.len = bytes.len() as u64;
        Ok(())
    }

    /// Drops the entries up to and including `up_to_index` (whose term is `term_at_index`) by
    /// rewriting the rest into a new log file. Call it only occasionally: it rewrites the
    /// retained tail. Durable when it returns.
    pub fn compact(&mut self, up_to_index: u64, term_at_index: u64) -> Result<(), DiskError> {
        self.check()?;
        if up_to_index <= self.start.index {
            return Ok(());
        }
        if up_to_index > self.last_index() {
            return Err(DiskError::Refused(format!(
                "compact to {up_to_index} past the last index {}",
                self.last_index()
            )));
        }
        // Read the retained tail back from the file (it was written and synced before), and
        // check it frame by frame before it is copied.
        let bytes = fs::read(&self.entries_path).map_err(io_err("read", &self.entries_path))?;
        let kept = &self.positions[(up_to_index - self.start.index) as usize..];
        let from = kept.first().map_or(self.len, |&p| p);
        let tail_bytes =
            bytes
                .get(from as usize..self.len as usize)
                .ok_or_else(|| DiskError::Corrupt {
                    path: self.entries_path.clone(),
                    position: from,
                    reason: format!("the file is {} bytes, {} expected", bytes.len(), self.len),
                })?;
        let mut at = 0usize;
        while at < tail_bytes.len() {
            let position = from + at as u64;
            let len = match read_frame(&tail_bytes[at..]) {
                Ok((body, len)) => {
                    decode_entry(body, &self.entries_path, position)?;
                    len
                }
                Err(FrameEnd::Clean) => break,
                Err(FrameEnd::Torn(reason)) => {
                    return Err(DiskError::Corrupt {
                        path: self.entries_path.clone(),
                        position,
                        reason,
                    });
                }
            };
            at += len;
        }
        let start = SnapshotMeta {
            index: up_to_index,
            term: term_at_index,
        };
        let mut file = log_header(start);
        let header_len = file.len() as u64;
        file.extend_from_slice(tail_bytes);
        let positions: Vec<u64> = kept.iter().map(|&p| p - from + header_len).collect();
        let tmp = self.dir.join(format!("{ENTRIES_FILE}.tmp"));
        // Before the rename only the temporary file changes: a failure leaves the old log.
        if let Err(e) = File::create(&tmp)
            .and_then(|f| f.write_all_at(&file, 0).and_then(|()| f.sync_all()))
            .map_err(io_err("write", &tmp))
        {
            let _ = fs::remove_file(&tmp);
            return Err(e);
        }
        let renamed = fs::rename(&tmp, &self.entries_path)
            .map_err(io_err("rename", &tmp))
            .and_then(|()| sync_dir(&self.dir))
            .and_then(|()| {
                OpenOptions::new()
                    .write(true)
                    .open(&self.entries_path)
                    .map_err(io_err("open", &self.entries_path))
            });
        let log = self.poison(renamed)?;
        self.positions = positions;
        self.log = log;
        self.start = start;
        self.len = file.len() as u64;
        Ok(())
    }
}

fn decode_entry(body: &[u8], path: &Path, position: u64) -> Result<Entry, DiskError> {
    let corrupt = |reason: String| DiskError::Corrupt {
        path: path.to_path_buf(),
        position,
        reason,
    };
    if body.len() < ENTRY_HEADER {
        return Err(corrupt(format!("an entry of {} bytes", body.len())));
    }
    let entry_type = EntryType::from_i32(i32::from(body[16]))
        .ok_or_else(|| corrupt(format!("entry type {}", body[16])))?;
    Ok(Entry {
        term: be_u64(&body[0..]),
        index: be_u64(&body[8..]),
        entry_type,
        data: bytes::Bytes::copy_from_slice(&body[ENTRY_HEADER..]),
        ..Default::default()
    })
}

type ReadLog = (SnapshotMeta, Vec<Entry>, Vec<u64>, u64);

/// Reads `entries.log`: its start, its entries, their positions and the file's length after
/// any torn tail was cut (0 when the file does not exist or is empty).
fn read_log(path: &Path) -> Result<ReadLog, DiskError> {
    let bytes = match fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            return Ok((SnapshotMeta::default(), Vec::new(), Vec::new(), 0));
        }
        Err(e) => return Err(io_err("read", path)(e)),
    };
    if bytes.is_empty() {
        return Ok((SnapshotMeta::default(), Vec::new(), Vec::new(), 0));
    }
    let corrupt = |position: usize, reason: String| DiskError::Corrupt {
        path: path.to_path_buf(),
        position: position as u64,
        reason,
    };
    // The header is written whole (tmp + rename) before any entry, so it is never torn.
    let (body, mut position) = match read_frame(&bytes) {
        Ok(f) => f,
        Err(FrameEnd::Clean) => return Err(corrupt(0, "no log header".to_string())),
        Err(FrameEnd::Torn(reason)) => return Err(corrupt(0, format!("log header: {reason}"))),
    };
    if body.len() != LOG_HEADER_BODY || body[0] != LOG_MAGIC {
        return Err(corrupt(
            0,
            format!(
                "a log header of {} bytes, magic {:?} (this build reads {LOG_MAGIC})",
                body.len(),
                body.first()
            ),
        ));
    }
    let start = SnapshotMeta {
        index: be_u64(&body[1..]),
        term: be_u64(&body[9..]),
    };
    let mut entries = Vec::new();
    let mut positions = Vec::new();
    loop {
        let (body, len) = match read_frame(&bytes[position..]) {
            Ok(f) => f,
            Err(FrameEnd::Clean) => break,
            Err(FrameEnd::Torn(reason)) => {
                tracing::warn!(
                    file = %path.display(),
                    kept_bytes = position,
                    cut_bytes = bytes.len() - position,
                    reason,
                    "raft log: cutting a torn tail (entries that were never acknowledged)"
                );
                let f = OpenOptions::new()
                    .write(true)
                    .open(path)
                    .map_err(io_err("open", path))?;
                f.set_len(position as u64)
                    .and_then(|()| f.sync_all())
                    .map_err(io_err("cut the torn tail of", path))?;
                break;
            }
        };
        let e = decode_entry(body, path, position as u64)?;
        let expected = start.index + 1 + entries.len() as u64;
        if e.index != expected {
            return Err(corrupt(
                position,
                format!("entry {} where {expected} was expected", e.index),
            ));
        }
        positions.push(position as u64);
        entries.push(e);
        position += len;
    }
    Ok((start, entries, positions, position as u64))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(index: u64, term: u64, data: &str) -> Entry {
        Entry {
            index,
            term,
            data: bytes::Bytes::copy_from_slice(data.as_bytes()),
            ..Default::default()
        }
    }

    fn summary(entries: &[Entry]) -> Vec<(u64, u64, String)> {
        entries
            .iter()
            .map(|e| (e.index, e.term, String::from_utf8(e.data.to_vec()).unwrap()))
            .collect()
    }

    fn hs(term: u64, vote: u64, commit: u64) -> HardState {
        HardState {
            term,
            vote,
            commit,
            ..Default::default()
        }
    }

    #[test]
    fn appended_entries_come_back_after_reopen() {
        let dir = tempfile::tempdir().unwrap();
        {
            let (mut disk, rec) = RaftDisk::open(dir.path()).unwrap();
            assert!(rec.entries.is_empty());
            assert_eq!(rec.log_start, SnapshotMeta::default());
            assert!(rec.snapshot.is_none());
            disk.append(&[entry(1, 1, "a"), entry(2, 1, "b")]).unwrap();
            disk.append(&[entry(3, 2, "c")]).unwrap();
            disk.sync().unwrap();
            assert_eq!(disk.last_index(), 3);
            // A gap and entries below the start are refused.
            assert!(matches!(
                disk.append(&[entry(5, 2, "x")]),
                Err(DiskError::Refused(_))
            ));
        }
        let (disk, rec) = RaftDisk::open(dir.path()).unwrap();
        assert_eq!(
            summary(&rec.entries),
            [(1, 1, "a".into()), (2, 1, "b".into()), (3, 2, "c".into())]
        );
        assert_eq!(disk.last_index(), 3);
    }

    #[test]
    fn a_torn_tail_is_cut_at_every_length() {
        let dir = tempfile::tempdir().unwrap();
        {
            let (mut disk, _) = RaftDisk::open(dir.path()).unwrap();
            disk.append(&[entry(1, 1, "first"), entry(2, 1, "second")])
                .unwrap();
            disk.sync().unwrap();
        }
        let path = dir.path().join(ENTRIES_FILE);
        let whole = fs::read(&path).unwrap();
        let mut second = Vec::new();
        push_frame(&mut second, &entry_body(&entry(2, 1, "second")));
        let good_len = whole.len() - second.len();
        for cut in 0..second.len() {
            fs::write(&path, &whole[..good_len + cut]).unwrap();
            let (mut disk, rec) = RaftDisk::open(dir.path()).unwrap();
            assert_eq!(summary(&rec.entries), [(1, 1, "first".into())], "cut {cut}");
            assert_eq!(fs::metadata(&path).unwrap().len(), good_len as u64);
            // Appends go on after the cut.
            disk.append(&[entry(2, 2, "again")]).unwrap();
            disk.sync().unwrap();
            drop(disk);
            let (_, rec) = RaftDisk::open(dir.path()).unwrap();
            assert_eq!(rec.entries.len(), 2, "cut {cut}");
        }
        // A flipped bit in the last frame is a torn tail too.
        let mut bad = whole.clone();
        let last = bad.len() - 1;
        bad[last] ^= 0x10;
        fs::write(&path, &bad).unwrap();
        let (_, rec) = RaftDisk::open(dir.path()).unwrap();
        assert_eq!(rec.entries.len(), 1);
        // A whole frame with a good CRC but an entry out of sequence fails the open.
        let mut bytes = whole[..good_len].to_vec();
        push_frame(&mut bytes, &entry_body(&entry(7, 1, "x")));
        fs::write(&path, &bytes).unwrap();
        let err = RaftDisk::open(dir.path()).err().unwrap();
        assert!(
            matches!(err, DiskError::Corrupt { position, .. } if position == good_len as u64),
            "{err}"
        );
    }

    #[test]
    fn appending_at_or_before_the_last_index_replaces_the_suffix() {
        let dir = tempfile::tempdir().unwrap();
        {
            let (mut disk, _) = RaftDisk::open(dir.path()).unwrap();
            disk.append(&[entry(1, 1, "a"), entry(2, 1, "b"), entry(3, 1, "c")])
                .unwrap();
            disk.append(&[entry(2, 2, "B"), entry(3, 2, "C"), entry(4, 2, "D")])
                .unwrap();
            disk.append(&[entry(4, 3, "d")]).unwrap();
            disk.sync().unwrap();
        }
        let (_, rec) = RaftDisk::open(dir.path()).unwrap();
        assert_eq!(
            summary(&rec.entries),
            [
                (1, 1, "a".into()),
                (2, 2, "B".into()),
                (3, 2, "C".into()),
                (4, 3, "d".into())
            ]
        );
    }

    #[test]
    fn compaction_keeps_the_tail_and_the_start_term() {
        let dir = tempfile::tempdir().unwrap();
        {
            let (mut disk, _) = RaftDisk::open(dir.path()).unwrap();
            let es: Vec<Entry> = (1..=6).map(|i| entry(i, 1 + i / 3, "x")).collect();
            disk.append(&es).unwrap();
            disk.sync().unwrap();
            disk.compact(4, 2).unwrap();
            assert_eq!(disk.log_start(), SnapshotMeta { index: 4, term: 2 });
            // Appends (and suffix replacement) go on in the rewritten file.
            disk.append(&[entry(6, 5, "y"), entry(7, 5, "z")]).unwrap();
            disk.sync().unwrap();
            // Compacting at or below the start is a no-op; past the end is refused.
            disk.compact(3, 1).unwrap();
            assert!(matches!(disk.compact(9, 5), Err(DiskError::Refused(_))));
        }
        let (mut disk, rec) = RaftDisk::open(dir.path()).unwrap();
        assert_eq!(rec.log_start, SnapshotMeta { index: 4, term: 2 });
        assert_eq!(
            summary(&rec.entries),
            [(5, 2, "x".into()), (6, 5, "y".into()), (7, 5, "z".into())]
        );
        // Compacting everything leaves an empty log after the last entry.
        disk.compact(7, 5).unwrap();
        disk.append(&[entry(8, 5, "w")]).unwrap();
        disk.sync().unwrap();
        drop(disk);
        let (_, rec) = RaftDisk::open(dir.path()).unwrap();
        assert_eq!(rec.log_start, SnapshotMeta { index: 7, term: 5 });
        assert_eq!(summary(&rec.entries), [(8, 5, "w".into())]);
    }

    #[test]
    fn an_installed_snapshot_replaces_the_log() {
        let dir = tempfile::tempdir().unwrap();
        let meta = SnapshotMeta { index: 10, term: 3 };
        {
            let (mut disk, _) = RaftDisk::open(dir.path()).unwrap();
            disk.append(&[entry(1, 1, "a"), entry(2, 1, "b")]).unwrap();
            disk.sync().unwrap();
            disk.install_snapshot(meta, b"image").unwrap();
            assert_eq!(disk.last_index(), 10);
            disk.append(&[entry(11, 3, "c")]).unwrap();
            disk.sync().unwrap();
        }
        let (_, rec) = RaftDisk::open(dir.path()).unwrap();
        assert_eq!(rec.snapshot, Some((meta, b"image".to_vec())));
        assert_eq!(rec.log_start, meta);
        assert_eq!(summary(&rec.entries), [(11, 3, "c".into())]);

        // A crash between the snapshot's rename and the new log: the old log is restarted
        // after the snapshot at open.
        let dir = tempfile::tempdir().unwrap();
        {
            let (mut disk, _) = RaftDisk::open(dir.path()).unwrap();
            disk.append(&[entry(1, 1, "a")]).unwrap();
            disk.sync().unwrap();
        }
        let mut body = Vec::new();
        body.extend_from_slice(&10u64.to_be_bytes());
        body.extend_from_slice(&3u64.to_be_bytes());
        body.extend_from_slice(b"image");
        let mut bytes = Vec::new();
        push_frame(&mut bytes, &body);
        fs::write(dir.path().join(SNAPSHOT_FILE), bytes).unwrap();
        let (disk, rec) = RaftDisk::open(dir.path()).unwrap();
        assert_eq!(rec.log_start, meta);
        assert!(rec.entries.is_empty());
        assert_eq!(disk.last_index(), 10);
    }

    #[test]
    fn the_hard_state_roundtrips_and_a_damaged_one_fails_the_open() {
        let dir = tempfile::tempdir().unwrap();
        {
            let (mut disk, rec) = RaftDisk::open(dir.path()).unwrap();
            assert_eq!(rec.hard_state, HardState::default());
            disk.set_hard_state(&hs(2, 1, 0)).unwrap();
            disk.append(&[entry(1, 2, "a")]).unwrap();
            // A commit change alone is remembered, written with the next vote change.
            disk.set_hard_state(&hs(2, 1, 1)).unwrap();
            disk.sync().unwrap();
        }
        let (mut disk, rec) = RaftDisk::open(dir.path()).unwrap();
        assert_eq!(rec.hard_state, hs(2, 1, 0));
        disk.set_hard_state(&hs(3, 2, 1)).unwrap();
        drop(disk);
        let (_, rec) = RaftDisk::open(dir.path()).unwrap();
        assert_eq!(rec.hard_state, hs(3, 2, 1));

        let path = dir.path().join(HARD_STATE_FILE);
        let mut bytes = fs::read(&path).unwrap();
        bytes[10] ^= 1;
        fs::write(&path, bytes).unwrap();
        let err = RaftDisk::open(dir.path()).err().unwrap();
        assert!(matches!(err, DiskError::Corrupt { .. }), "{err}");
    }

    #[test]
    fn a_failed_fdatasync_poisons_and_a_reopen_recovers() {
        let dir = tempfile::tempdir().unwrap();
        {
            let (mut disk, _) = RaftDisk::open(dir.path()).unwrap();
            disk.append(&[entry(1, 1, "a")]).unwrap();
            disk.sync().unwrap();
            faults::set_for_this_thread("sync:EIO:entries.log:1");
            disk.append(&[entry(2, 1, "b")]).unwrap();
            let err = disk.sync().unwrap_err();
            assert!(matches!(err, DiskError::Io { .. }), "{err}");
            assert!(disk.is_poisoned());
            // The fault fired once, but the disk stays poisoned.
            assert!(matches!(
                disk.append(&[entry(3, 1, "c")]),
                Err(DiskError::Poisoned(_))
            ));
            assert!(matches!(disk.sync(), Err(DiskError::Poisoned(_))));
            faults::set_for_this_thread("");
        }
        // The entry whose fdatasync failed reached the page cache: it is read back whole.
        let (mut disk, rec) = RaftDisk::open(dir.path()).unwrap();
        assert_eq!(rec.entries.len(), 2);
        disk.append(&[entry(3, 1, "c")]).unwrap();
        disk.sync().unwrap();
    }

    #[test]
    fn a_poisoned_disk_refuses_every_write() {
        let dir = tempfile::tempdir().unwrap();
        let (mut disk, _) = RaftDisk::open(dir.path()).unwrap();
        disk.poisoned = Some("test".into());
        assert!(matches!(
            disk.append(&[entry(1, 1, "a")]),
            Err(DiskError::Poisoned(_))
        ));
        assert!(matches!(disk.sync(), Err(DiskError::Poisoned(_))));
        assert!(matches!(
            disk.set_hard_state(&hs(1, 1, 0)),
            Err(DiskError::Poisoned(_))
        ));
    }
}
