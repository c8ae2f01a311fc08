//! The metadata store: an append-only, CRC-framed log of metadata record batches, with
//! snapshots, in `<data-dir>/__cluster_metadata-0/`.
//!
//! Lives on: the controller's shard (shard 0) owns the one [`MetadataStore`]. The store is
//! synchronous and `Send`; the controller moves it onto glommio's blocking pool for every
//! write ([`MetadataStore::append`]: write, fdatasync, and a snapshot when one is due) and
//! takes it back when the write is done, so no disk sync ever runs on an executor. It is
//! opened once at start-up, before the executors run.
//!
//! # Files
//!
//! - `<base offset, 20 digits>.log`: batches of records, appended. Only the newest log file
//!   is written; a log file starts at the offset of the snapshot taken when it was started.
//! - `<offset, 20 digits>.snapshot`: the image as of `offset` (the records it holds rebuild
//!   every record before that offset), written as `.snapshot.tmp`, fsync'd, renamed and the
//!   directory fsync'd, so it is either absent or complete.
//!
//! # Batch format
//!
//! A batch is the unit of atomicity (one metadata change: a topic with its partitions and
//! configs) and, in the cluster issue, the unit a Raft entry carries:
//!
//! ```text
//! [body length u32][crc32c u32 of the length bytes and the body][body]
//! body = [magic u8 = 1][base offset u64][record count u32] then per record:
//!        [record length u32][record: type id u16, version u16, payload (see record.rs)]
//! ```
//!
//! All integers are big-endian. Records of a batch have the offsets base, base + 1, ...;
//! offsets only grow, by one per record, with no gap.
//!
//! # Recovery ([`MetadataStore::open`])
//!
//! 1. Leftover `*.tmp` files (a snapshot that was not finished) are deleted.
//! 2. The newest snapshot is loaded into an empty image. A snapshot that does not decode is an
//!    error: it was complete when renamed, so damage means lost metadata, not a crash.
//! 3. The log files are replayed in order; batches below the snapshot's offset are skipped.
//!    In the newest log file, a batch whose frame is short or whose CRC fails ends the file:
//!    it is a torn tail left by a crash mid-append, never acknowledged (an answer waits for
//!    the fdatasync that covers it). The file is cut back to the last whole batch, and the
//!    cut is logged. Anything else (damage in an older file, a batch that decodes badly, an
//!    offset gap, a record that does not fit the image) fails the open: skipping it would
//!    silently lose metadata.
//! 4. Files made obsolete by the newest snapshot are deleted.
//!
//! # Snapshots
//!
//! After an append, once `snapshot_every_records` records have been appended since the last
//! snapshot, the image is written as a snapshot named by the next offset, a new empty log
//! file is started at that offset, and older log files and snapshots are deleted. A crash at
//! any step leaves either the old snapshot with every log after it, or the new snapshot,
//! which replay prefers; so the log stays bounded and nothing is lost. A snapshot that fails
//! before its rename is logged and retried after the next append (the log it would have
//! trimmed is still whole); one that fails after it poisons the store (below).
//!
//! # Failed writes
//!
//! A failed write or fdatasync poisons the store: after a failed fsync the page cache state of
//! the file is unknown, so every later change is refused (KAFKA_STORAGE_ERROR) until a
//! restart, whose recovery cuts whatever partial batch the failure left. A whole batch that
//! reached the disk although its fdatasync reported failure is replayed: the change was
//! answered with an error but may still take effect, as after a timeout in Kafka. The test
//! fault seam (`SPATE_TEST_FAULTS`, path part `__cluster_metadata-0/`) fails these writes and
//! syncs on purpose.

use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use super::image::{ImageError, MetadataImage};
use super::record::{MetadataRecord, RecordError};
use crate::storage::io::faults;

/// Kafka's name for the metadata log's topic; no user topic may take it, since its partition
/// 0's directory would be [`METADATA_DIR`].
pub const METADATA_TOPIC: &str = "__cluster_metadata";

/// Directory of the metadata log under the data dir (Kafka's name for its metadata log).
pub const METADATA_DIR: &str = "__cluster_metadata-0";

/// Records appended between two snapshots, by default. A topic creation is 1 + partitions
/// (+ configs) records, so this is a few topics' worth; replay at start reads at most about
/// this many records past the snapshot.
pub const SNAPSHOT_EVERY_RECORDS: u64 = 10_000;

/// Batches of a single node's log.
const MAGIC: u8 = 1;
/// Batches of a cluster node's log: they carry the index of the Raft entry they were
/// committed in, after the base offset.
const MAGIC_RAFT: u8 = 2;
const FRAME_HEADER: usize = 8;
const BODY_HEADER: usize = 1 + 8 + 4;
/// Largest batch body accepted when reading, so a garbled length that happens to pass as a
/// frame cannot make the reader allocate without bound.
pub const BATCH_BYTES_MAX: usize = 256 << 20;

/// What went wrong in the metadata store, with the file it concerns.
#[derive(Debug, thiserror::Error)]
pub enum MetadataError {
    #[error("{op} {}: {source}", path.display())]
    Io {
        op: &'static str,
        path: PathBuf,
        source: io::Error,
    },
    #[error("{} is corrupt at byte {position}: {reason}", path.display())]
    Corrupt {
        path: PathBuf,
        position: u64,
        reason: String,
    },
    #[error("{} at byte {position}: {source}", path.display())]
    Record {
        path: PathBuf,
        position: u64,
        source: RecordError,
    },
    #[error("{} at byte {position}: a record does not fit the metadata: {source}", path.display())]
    Image {
        path: PathBuf,
        position: u64,
        source: ImageError,
    },
    #[error("the change does not fit the metadata: {0}")]
    Refused(ImageError),
    #[error("an earlier write to the metadata log failed ({0}); restart the broker to recover it")]
    Poisoned(String),
}

pub(super) fn io_err(
    op: &'static str,
    path: &Path,
) -> impl FnOnce(io::Error) -> MetadataError + use<> {
    let path = path.to_path_buf();
    move |source| MetadataError::Io { op, path, source }
}

fn log_path(dir: &Path, base: u64) -> PathBuf {
    dir.join(format!("{base:020}.log"))
}

fn snapshot_path(dir: &Path, offset: u64) -> PathBuf {
    dir.join(format!("{offset:020}.snapshot"))
}

/// Encodes one batch of `records` starting at offset `base`.
pub fn encode_batch(base: u64, records: &[MetadataRecord]) -> Vec<u8> {
    encode_batch_at(base, None, records)
}

/// Encodes one batch of `records` starting at offset `base`, committed in the Raft entry
/// `raft_index` when there is one (a cluster node's log, and the snapshots the quorum sends).
pub fn encode_batch_at(base: u64, raft_index: Option<u64>, records: &[MetadataRecord]) -> Vec<u8> {
    let mut out = vec![0u8; FRAME_HEADER];
    match raft_index {
        None => out.push(MAGIC),
        Some(_) => out.push(MAGIC_RAFT),
    }
    out.extend_from_slice(&base.to_be_bytes());
    if let Some(index) = raft_index {
        out.extend_from_slice(&index.to_be_bytes());
    }
    out.extend_from_slice(&(records.len() as u32).to_be_bytes());
    for r in records {
        let at = out.len();
        out.extend_from_slice(&[0; 4]);
        r.encode(&mut out);
        let len = (out.len() - at - 4) as u32;
        out[at..at + 4].copy_from_slice(&len.to_be_bytes());
    }
    let body_len = ((out.len() - FRAME_HEADER) as u32).to_be_bytes();
    let crc = crc32c::crc32c_append(crc32c::crc32c(&body_len), &out[FRAME_HEADER..]);
    out[0..4].copy_from_slice(&body_len);
    out[4..8].copy_from_slice(&crc.to_be_bytes());
    out
}

/// One batch read back: its base offset, its Raft entry, its records, and its size on disk.
struct Batch {
    base: u64,
    raft_index: Option<u64>,
    records: Vec<MetadataRecord>,
    len: usize,
}

/// Decodes the records of one batch (a Raft entry's payload, made by [`encode_batch`]).
pub fn decode_entry(bytes: &[u8]) -> Result<Vec<MetadataRecord>, MetadataError> {
    let path = Path::new("<raft entry>");
    match read_batch(bytes, path, 0) {
        Ok(batch) => Ok(batch.records),
        Err(BatchEnd::Bad(e)) => Err(e),
        Err(BatchEnd::Torn(reason)) => Err(MetadataError::Corrupt {
            path: path.to_path_buf(),
            position: 0,
            reason,
        }),
        Err(BatchEnd::Clean) => Ok(Vec::new()),
    }
}

/// Decodes a snapshot the quorum sent (one batch, see [`MetadataStore::raft_snapshot`]):
/// its Raft index and records.
pub fn decode_raft_snapshot(bytes: &[u8]) -> Result<(u64, Vec<MetadataRecord>), MetadataError> {
    let path = Path::new("<raft snapshot>");
    match read_batch(bytes, path, 0) {
        Ok(Batch {
            raft_index: Some(index),
            records,
            ..
        }) => Ok((index, records)),
        Ok(_) => Err(MetadataError::Corrupt {
            path: path.to_path_buf(),
            position: 0,
            reason: "a snapshot without its Raft index".into(),
        }),
        Err(BatchEnd::Bad(e)) => Err(e),
        Err(BatchEnd::Torn(reason)) => Err(MetadataError::Corrupt {
            path: path.to_path_buf(),
            position: 0,
            reason,
        }),
        Err(BatchEnd::Clean) => Err(MetadataError::Corrupt {
            path: path.to_path_buf(),
            position: 0,
            reason: "an empty snapshot".into(),
        }),
    }
}

/// How reading a batch at some position ended without a batch.
enum BatchEnd {
    /// The file ends here, exactly on a batch boundary.
    Clean,
    /// A short frame or a failed CRC: a torn tail, or damage.
    Torn(String),
    /// The frame is whole and its CRC good, but it does not decode: never a crash's doing.
    Bad(MetadataError),
}

fn read_batch(buf: &[u8], path: &Path, position: u64) -> Result<Batch, BatchEnd> {
    if buf.is_empty() {
        return Err(BatchEnd::Clean);
    }
    if buf.len() < FRAME_HEADER {
        return Err(BatchEnd::Torn(format!(
            "{} bytes of a batch header",
            buf.len()
        )));
    }
    let body_len = u32::from_be_bytes([buf[0], buf[1], buf[2], buf[3]]) as usize;
    let crc = u32::from_be_bytes([buf[4], buf[5], buf[6], buf[7]]);
    if body_len > BATCH_BYTES_MAX || buf.len() - FRAME_HEADER < body_len {
        return Err(BatchEnd::Torn(format!(
            "a batch of {body_len} bytes with {} left in the file",
            buf.len() - FRAME_HEADER
        )));
    }
    let body = &buf[FRAME_HEADER..FRAME_HEADER + body_len];
    if crc32c::crc32c_append(crc32c::crc32c(&buf[0..4]), body) != crc {
        return Err(BatchEnd::Torn("batch CRC mismatch".to_string()));
    }
    let corrupt = |reason: String| {
        BatchEnd::Bad(MetadataError::Corrupt {
            path: path.to_path_buf(),
            position,
            reason,
        })
    };
    if body.len() < BODY_HEADER {
        return Err(corrupt(format!("a batch body of {} bytes", body.len())));
    }
    let (raft_index, body) = match body[0] {
        MAGIC => (None, body),
        MAGIC_RAFT if body.len() >= BODY_HEADER + 8 => {
            let mut index = [0u8; 8];
            index.copy_from_slice(&body[9..17]);
            // The rest reads as a magic-1 body whose header skips the index.
            (Some(u64::from_be_bytes(index)), body)
        }
        other => {
            return Err(corrupt(format!(
                "batch magic {other} (this build reads {MAGIC} and {MAGIC_RAFT})"
            )));
        }
    };
    let mut base_bytes = [0u8; 8];
    base_bytes.copy_from_slice(&body[1..9]);
    let base = u64::from_be_bytes(base_bytes);
    let c = if raft_index.is_some() { 17 } else { 9 };
    let count = u32::from_be_bytes([body[c], body[c + 1], body[c + 2], body[c + 3]]) as usize;
    let mut rest = &body[c + 4..];
    let mut records = Vec::with_capacity(count.min(rest.len() / 4));
    for _ in 0..count {
        if rest.len() < 4 {
            return Err(corrupt("a batch ends inside a record length".to_string()));
        }
        let len = u32::from_be_bytes([rest[0], rest[1], rest[2], rest[3]]) as usize;
        if rest.len() - 4 < len {
            return Err(corrupt(format!(
                "a record of {len} bytes overruns its batch"
            )));
        }
        let record = MetadataRecord::decode(&rest[4..4 + len]).map_err(|source| {
            BatchEnd::Bad(MetadataError::Record {
                path: path.to_path_buf(),
                position,
                source,
            })
        })?;
        records.push(record);
        rest = &rest[4 + len..];
    }
    if !rest.is_empty() {
        return Err(corrupt(format!(
            "{} bytes after the batch's last record",
            rest.len()
        )));
    }
    Ok(Batch {
        base,
        raft_index,
        records,
        len: FRAME_HEADER + body_len,
    })
}

pub(super) fn sync_dir(dir: &Path) -> Result<(), MetadataError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io_err("fsync directory", dir))
}

/// The `.log` and `.snapshot` files of the directory, by offset, oldest first.
fn list(dir: &Path) -> Result<(Vec<u64>, Vec<u64>), MetadataError> {
    let mut logs = Vec::new();
    let mut snapshots = Vec::new();
    for entry in fs::read_dir(dir).map_err(io_err("list", dir))? {
        let entry = entry.map_err(io_err("list", dir))?;
        let Ok(name) = entry.file_name().into_string() else {
            continue;
        };
        if name.ends_with(".tmp") {
            let path = entry.path();
            fs::remove_file(&path).map_err(io_err("remove leftover", &path))?;
        } else if let Some(n) = name.strip_suffix(".log").and_then(|s| s.parse().ok()) {
            logs.push(n);
        } else if let Some(n) = name.strip_suffix(".snapshot").and_then(|s| s.parse().ok()) {
            snapshots.push(n);
        }
    }
    logs.sort_unstable();
    snapshots.sort_unstable();
    Ok((logs, snapshots))
}

/// The metadata log of this node and the image it builds. See the module docs.
pub struct MetadataStore {
    dir: PathBuf,
    image: MetadataImage,
    /// The log file appends go to, its base offset and its length.
    active: File,
    active_base: u64,
    active_len: u64,
    /// Offset the next record gets.
    next_offset: u64,
    /// Offset of the newest snapshot (0 when there is none).
    snapshot_offset: u64,
    snapshot_every_records: u64,
    poisoned: Option<String>,
    /// Index of the last Raft entry applied (None on a single node, whose batches carry none).
    raft_applied: Option<u64>,
}

impl MetadataStore {
    /// Opens (or creates) the store in `dir` and replays it; see "Recovery" in the module
    /// docs. Blocking: call it at start-up or on the blocking pool.
    pub fn open(dir: &Path, snapshot_every_records: u64) -> Result<MetadataStore, MetadataError> {
        fs::create_dir_all(dir).map_err(io_err("create", dir))?;
        let (logs, snapshots) = list(dir)?;
        let mut image = MetadataImage::default();
        let mut raft_applied = None;
        let snapshot_offset = snapshots.last().copied().unwrap_or(0);
        if let Some(&offset) = snapshots.last() {
            let path = snapshot_path(dir, offset);
            let bytes = fs::read(&path).map_err(io_err("read", &path))?;
            let mut position = 0usize;
            loop {
                match read_batch(&bytes[position..], &path, position as u64) {
                    Ok(batch) => {
                        image
                            .apply_all(&batch.records)
                            .map_err(|source| MetadataError::Image {
                                path: path.clone(),
                                position: position as u64,
                                source,
                            })?;
                        raft_applied = batch.raft_index.or(raft_applied);
                        position += batch.len;
                    }
                    Err(BatchEnd::Clean) => break,
                    Err(BatchEnd::Torn(reason)) => {
                        return Err(MetadataError::Corrupt {
                            path,
                            position: position as u64,
                            reason,
                        });
                    }
                    Err(BatchEnd::Bad(e)) => return Err(e),
                }
            }
        }
        let mut next_offset = snapshot_offset;
        let mut active = None;
        for (i, &base) in logs.iter().enumerate() {
            let newest = i + 1 == logs.len();
            let path = log_path(dir, base);
            let bytes = fs::read(&path).map_err(io_err("read", &path))?;
            let mut position = 0usize;
            loop {
                let batch = match read_batch(&bytes[position..], &path, position as u64) {
                    Ok(b) => b,
                    Err(BatchEnd::Clean) => break,
                    Err(BatchEnd::Torn(reason)) if newest => {
                        tracing::warn!(
                            file = %path.display(),
                            kept_bytes = position,
                            cut_bytes = bytes.len() - position,
                            reason,
                            "metadata log: cutting a torn tail (a change that was never acknowledged)"
                        );
                        let f = OpenOptions::new()
                            .write(true)
                            .open(&path)
                            .map_err(io_err("open", &path))?;
                        f.set_len(position as u64)
                            .and_then(|()| f.sync_all())
                            .map_err(io_err("cut the torn tail of", &path))?;
                        break;
                    }
                    Err(BatchEnd::Torn(reason)) => {
                        return Err(MetadataError::Corrupt {
                            path,
                            position: position as u64,
                            reason,
                        });
                    }
                    Err(BatchEnd::Bad(e)) => return Err(e),
                };
                let end = batch.base + batch.records.len() as u64;
                if end <= snapshot_offset {
                    // The snapshot already holds it.
                } else if batch.base != next_offset {
                    return Err(MetadataError::Corrupt {
                        path,
                        position: position as u64,
                        reason: format!(
                            "a batch at offset {} where {next_offset} was expected",
                            batch.base
                        ),
                    });
                } else {
                    image
                        .apply_all(&batch.records)
                        .map_err(|source| MetadataError::Image {
                            path: path.clone(),
                            position: position as u64,
                            source,
                        })?;
                    next_offset = end;
                    raft_applied = batch.raft_index.or(raft_applied);
                }
                position += batch.len;
            }
            if newest {
                active = Some((base, position as u64));
            }
        }
        let (active_base, active_len) = match active {
            Some(a) if a.0 <= next_offset => a,
            Some((base, _)) => {
                return Err(MetadataError::Corrupt {
                    path: log_path(dir, base),
                    position: 0,
                    reason: format!("the log starts at {base}, after offset {next_offset}"),
                });
            }
            None => (next_offset, 0),
        };
        let path = log_path(dir, active_base);
        let file = OpenOptions::new()
            .create(true)
            .write(true)
            .truncate(false)
            .open(&path)
            .map_err(io_err("open", &path))?;
        let mut store = MetadataStore {
            dir: dir.to_path_buf(),
            image,
            active: file,
            active_base,
            active_len,
            next_offset,
            snapshot_offset,
            snapshot_every_records: snapshot_every_records.max(1),
            poisoned: None,
            raft_applied,
        };
        store.delete_obsolete()?;
        sync_dir(dir)?;
        Ok(store)
    }

    pub fn image(&self) -> &MetadataImage {
        &self.image
    }

    /// Offset the next record will get (the number of records ever appended).
    pub fn next_offset(&self) -> u64 {
        self.next_offset
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Appends `records` as one batch and makes it durable (write + fdatasync); then applies
    /// it to the image and takes a snapshot if one is due. Returns the batch's base offset.
    /// A batch that does not fit the image is refused before anything is written. Blocking:
    /// run it on the blocking pool.
    pub fn append(&mut self, records: &[MetadataRecord]) -> Result<u64, MetadataError> {
        let mut next = self.image.clone();
        next.apply_all(records).map_err(MetadataError::Refused)?;
        self.write_batch(records, next, None)
    }

    /// Whether this log holds a one-node broker's metadata (records, none of them from a Raft
    /// entry): a cluster node started on it imports its topics (see `import.rs`).
    pub fn is_single_node(&self) -> bool {
        self.next_offset > 0 && self.raft_applied.is_none()
    }

    /// Index of the last Raft entry applied (0 before any, and on a single node).
    pub fn raft_applied(&self) -> u64 {
        self.raft_applied.unwrap_or(0)
    }

    /// Applies the records of the committed Raft entry `raft_index` and makes them durable
    /// with it. A batch that does not fit the image (the controller checked it against the
    /// same image, so a bug) is logged and written empty: the entry counts as applied on every
    /// node alike, and the quorum does not stall on it. Blocking: run it on the blocking pool.
    pub fn append_committed(
        &mut self,
        records: &[MetadataRecord],
        raft_index: u64,
    ) -> Result<u64, MetadataError> {
        let mut next = self.image.clone();
        match next.apply_all(records) {
            Ok(()) => self.write_batch(records, next, Some(raft_index)),
            Err(e) => {
                tracing::error!(raft_index, error = %e, "a committed metadata entry does not fit the metadata image; it is skipped");
                self.write_batch(&[], self.image.clone(), Some(raft_index))
            }
        }
    }

    /// Replaces the image with a snapshot the quorum sent (records as of `raft_index`), and
    /// makes it durable as this store's snapshot. Blocking.
    pub fn install_raft_snapshot(
        &mut self,
        records: &[MetadataRecord],
        raft_index: u64,
    ) -> Result<(), MetadataError> {
        if let Some(why) = &self.poisoned {
            return Err(MetadataError::Poisoned(why.clone()));
        }
        let mut image = MetadataImage::default();
        image.apply_all(records).map_err(MetadataError::Refused)?;
        self.image = image;
        self.raft_applied = Some(raft_index);
        self.snapshot()
    }

    /// The image as a snapshot for the quorum: (Raft index, encoded batch).
    pub fn raft_snapshot(&self) -> (u64, Vec<u8>) {
        let index = self.raft_applied();
        (
            index,
            encode_batch_at(0, Some(index), &self.image.to_records()),
        )
    }

    fn write_batch(
        &mut self,
        records: &[MetadataRecord],
        next: MetadataImage,
        raft_index: Option<u64>,
    ) -> Result<u64, MetadataError> {
        if let Some(why) = &self.poisoned {
            return Err(MetadataError::Poisoned(why.clone()));
        }
        let base = self.next_offset;
        let bytes = encode_batch_at(base, raft_index, records);
        let path = log_path(&self.dir, self.active_base);
        let written = faults::check(faults::Op::Write, &path)
            .and_then(|()| self.active.write_all_at(&bytes, self.active_len))
            .map_err(io_err("write", &path))
            .and_then(|()| {
                faults::check(faults::Op::Sync, &path)
                    .and_then(|()| self.active.sync_data())
                    .map_err(io_err("fdatasync", &path))
            });
        if let Err(e) = written {
            tracing::error!(error = %e, "metadata log write failed: no more metadata changes until a restart");
            self.poisoned = Some(e.to_string());
            return Err(e);
        }
        self.active_len += bytes.len() as u64;
        self.next_offset += records.len() as u64;
        self.image = next;
        if raft_index.is_some() {
            self.raft_applied = raft_index;
        }
        if self.next_offset - self.snapshot_offset >= self.snapshot_every_records
            && self.next_offset > self.active_base
            && let Err(e) = self.snapshot()
        {
            tracing::warn!(error = %e, "metadata snapshot failed");
        }
        Ok(base)
    }

    /// Writes the image as a snapshot at the next offset, starts a new log file there and
    /// deletes the files the snapshot makes obsolete. See "Snapshots" in the module docs.
    pub fn snapshot(&mut self) -> Result<(), MetadataError> {
        let offset = self.next_offset;
        let path = snapshot_path(&self.dir, offset);
        let tmp = self.dir.join(format!("{offset:020}.snapshot.tmp"));
        let bytes = encode_batch_at(offset, self.raft_applied, &self.image.to_records());
        let written = File::create(&tmp)
            .and_then(|f| f.write_all_at(&bytes, 0).and_then(|()| f.sync_all()))
            .map_err(io_err("write", &tmp));
        if let Err(e) = written {
            // Nothing but the temporary file changed: the store goes on without a snapshot.
            let _ = fs::remove_file(&tmp);
            return Err(e);
        }
        // From the rename on, a failure leaves files that the next steps were meant to put
        // in order (a snapshot whose log is not started, say); appending past that could
        // make a later clean-up delete records, so the store is poisoned instead.
        let finished = self.finish_snapshot(offset, &tmp, &path);
        if let Err(e) = &finished {
            self.poisoned = Some(e.to_string());
        }
        finished
    }

    fn finish_snapshot(
        &mut self,
        offset: u64,
        tmp: &Path,
        path: &Path,
    ) -> Result<(), MetadataError> {
        fs::rename(tmp, path).map_err(io_err("rename", tmp))?;
        sync_dir(&self.dir)?;
        self.snapshot_offset = offset;
        if self.active_base < offset {
            let log = log_path(&self.dir, offset);
            let file = OpenOptions::new()
                .create(true)
                .write(true)
                .truncate(true)
                .open(&log)
                .map_err(io_err("create", &log))?;
            sync_dir(&self.dir)?;
            self.active = file;
            self.active_base = offset;
            self.active_len = 0;
        }
        self.delete_obsolete()?;
        sync_dir(&self.dir)
    }

    /// Deletes snapshots older than the newest and log files that end before it.
    fn delete_obsolete(&mut self) -> Result<(), MetadataError> {
        let (logs, snapshots) = list(&self.dir)?;
        let doomed_snapshots = snapshots
            .iter()
            .filter(|&&s| s < self.snapshot_offset)
            .map(|&s| snapshot_path(&self.dir, s));
        // A log file ends where the next one starts; the active one is never obsolete.
        let doomed_logs = logs
            .windows(2)
            .filter(|w| w[1] <= self.snapshot_offset)
            .map(|w| log_path(&self.dir, w[0]));
        for path in doomed_snapshots.chain(doomed_logs).collect::<Vec<_>>() {
            fs::remove_file(&path).map_err(io_err("remove", &path))?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    fn plain(v: Vec<TopicMeta>) -> Vec<TopicMeta> {
        v.into_iter().map(TopicMeta::without_assignment).collect()
    }
    use super::super::image::create_topic_records;
    use super::*;
    use crate::storage::catalog::TopicMeta;
    use uuid::Uuid;

    fn topic(name: &str, partitions: i32) -> TopicMeta {
        TopicMeta::stored(
            name.into(),
            Uuid::new_v4(),
            partitions,
            [("retention.ms".to_string(), "5".to_string())].into(),
        )
    }

    fn files(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> = fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        names.sort();
        names
    }

    #[test]
    fn replays_what_was_appended() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = (topic("a", 3), topic("b", 1));
        {
            let mut store = MetadataStore::open(dir.path(), 1000).unwrap();
            assert_eq!(store.append(&create_topic_records(&a, 1)).unwrap(), 0);
            assert_eq!(store.append(&create_topic_records(&b, 1)).unwrap(), 5);
            assert_eq!(store.next_offset(), 8);
        }
        let store = MetadataStore::open(dir.path(), 1000).unwrap();
        assert_eq!(plain(store.image().topic_metas()), vec![a, b]);
        assert_eq!(store.next_offset(), 8);
    }

    #[test]
    fn a_refused_batch_writes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let a = topic("a", 1);
        let mut store = MetadataStore::open(dir.path(), 1000).unwrap();
        store.append(&create_topic_records(&a, 1)).unwrap();
        let again = TopicMeta {
            topic_id: Uuid::new_v4(),
            ..a.clone()
        };
        let err = store.append(&create_topic_records(&again, 1)).unwrap_err();
        assert!(matches!(err, MetadataError::Refused(_)), "{err}");
        assert_eq!(store.next_offset(), 3);
        drop(store);
        let store = MetadataStore::open(dir.path(), 1000).unwrap();
        assert_eq!(plain(store.image().topic_metas()), vec![a]);
    }

    /// A crash mid-append leaves part of a batch: every cut of the last batch is dropped
    /// whole (never half a topic), the file is cut back, and appends go on after it.
    #[test]
    fn a_torn_tail_is_cut_at_every_length() {
        let (a, b) = (topic("a", 2), topic("b", 4));
        let good = encode_batch(0, &create_topic_records(&a, 1));
        let torn = encode_batch(4, &create_topic_records(&b, 1));
        for cut in 0..torn.len() {
            let dir = tempfile::tempdir().unwrap();
            let mut bytes = good.clone();
            bytes.extend_from_slice(&torn[..cut]);
            fs::write(log_path(dir.path(), 0), &bytes).unwrap();
            let mut store = MetadataStore::open(dir.path(), 1000).unwrap();
            assert_eq!(
                plain(store.image().topic_metas()),
                vec![a.clone()],
                "cut at {cut}"
            );
            assert_eq!(
                fs::metadata(log_path(dir.path(), 0)).unwrap().len(),
                good.len() as u64
            );
            store.append(&create_topic_records(&b, 1)).unwrap();
            drop(store);
            let store = MetadataStore::open(dir.path(), 1000).unwrap();
            assert_eq!(
                plain(store.image().topic_metas()),
                vec![a.clone(), b.clone()],
                "cut at {cut}"
            );
        }
    }

    #[test]
    fn a_flipped_bit_in_the_tail_is_cut_but_a_bad_record_fails_the_open() {
        let a = topic("a", 1);
        let dir = tempfile::tempdir().unwrap();
        let mut bytes = encode_batch(0, &create_topic_records(&a, 1));
        let last = bytes.len() - 2;
        bytes[last] ^= 0x40;
        fs::write(log_path(dir.path(), 0), &bytes).unwrap();
        let store = MetadataStore::open(dir.path(), 1000).unwrap();
        assert!(plain(store.image().topic_metas()).is_empty());
        drop(store);

        // A whole, CRC-correct batch holding a reserved record type: written by a newer build.
        let dir = tempfile::tempdir().unwrap();
        let mut bytes = encode_batch(0, &create_topic_records(&a, 1));
        // Record type ids sit right after each record's length; rewrite the first one (the
        // TopicRecord) to reserved type 13, and fix the CRC so only the decoder can object.
        let at = FRAME_HEADER + BODY_HEADER + 4;
        bytes[at..at + 2].copy_from_slice(&13u16.to_be_bytes());
        let crc = crc32c::crc32c_append(crc32c::crc32c(&bytes[0..4]), &bytes[FRAME_HEADER..]);
        bytes[4..8].copy_from_slice(&crc.to_be_bytes());
        fs::write(log_path(dir.path(), 0), &bytes).unwrap();
        let err = MetadataStore::open(dir.path(), 1000).err().unwrap();
        assert!(
            matches!(
                err,
                MetadataError::Record {
                    source: RecordError::Reserved { type_id: 13, .. },
                    ..
                }
            ),
            "{err}"
        );
    }

    #[test]
    fn damage_before_the_newest_log_fails_the_open() {
        let dir = tempfile::tempdir().unwrap();
        let a = topic("a", 1);
        let mut bytes = encode_batch(0, &create_topic_records(&a, 1));
        bytes.truncate(bytes.len() - 1);
        fs::write(log_path(dir.path(), 0), &bytes).unwrap();
        fs::write(log_path(dir.path(), 2), b"").unwrap();
        let err = MetadataStore::open(dir.path(), 1000).err().unwrap();
        assert!(matches!(err, MetadataError::Corrupt { .. }), "{err}");
    }

    #[test]
    fn snapshots_bound_the_log_and_replay_with_the_tail() {
        let dir = tempfile::tempdir().unwrap();
        let mut expected = Vec::new();
        {
            // Each topic is 1 + 2 + 1 = 4 records: a snapshot after every third topic.
            let mut store = MetadataStore::open(dir.path(), 10).unwrap();
            for i in 0..7 {
                let t = topic(&format!("t{i}"), 2);
                store.append(&create_topic_records(&t, 1)).unwrap();
                expected.push(t);
            }
            // Snapshots at 12 and 24; the log holds the last topic's 4 records.
            assert_eq!(
                files(dir.path()),
                ["00000000000000000024.log", "00000000000000000024.snapshot"]
            );
            let gone = expected.remove(2);
            store
                .append(&[MetadataRecord::RemoveTopic(
                    super::super::record::RemoveTopicRecord {
                        topic_id: gone.topic_id,
                    },
                )])
                .unwrap();
        }
        expected.sort_by(|a, b| a.name.cmp(&b.name));
        let mut store = MetadataStore::open(dir.path(), 10).unwrap();
        assert_eq!(plain(store.image().topic_metas()), expected);
        assert_eq!(store.next_offset(), 29);
        // Appends go on from the replayed offset.
        let t = topic("z", 1);
        assert_eq!(store.append(&create_topic_records(&t, 1)).unwrap(), 29);
    }

    /// A crash after the snapshot's rename but before the new log and the deletions: replay
    /// uses the snapshot and skips the old log's records it already holds.
    #[test]
    fn a_snapshot_beside_the_old_log_is_preferred() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = (topic("a", 1), topic("b", 1));
        let mut store = MetadataStore::open(dir.path(), 1000).unwrap();
        store.append(&create_topic_records(&a, 1)).unwrap();
        let image = store.image().clone();
        store.append(&create_topic_records(&b, 1)).unwrap();
        drop(store);
        // A snapshot at offset 3 (after topic a), as if written before b's append.
        fs::write(
            snapshot_path(dir.path(), 3),
            encode_batch(3, &image.to_records()),
        )
        .unwrap();
        let store = MetadataStore::open(dir.path(), 1000).unwrap();
        assert_eq!(plain(store.image().topic_metas()), vec![a, b]);
        assert_eq!(store.next_offset(), 6);
        // The old log still holds records past the snapshot, so it is kept.
        assert_eq!(
            files(dir.path()),
            ["00000000000000000000.log", "00000000000000000003.snapshot"]
        );
    }

    #[test]
    fn a_damaged_snapshot_fails_the_open() {
        let dir = tempfile::tempdir().unwrap();
        let mut bytes = encode_batch(3, &create_topic_records(&topic("a", 1), 1));
        bytes.truncate(bytes.len() - 3);
        fs::write(snapshot_path(dir.path(), 3), bytes).unwrap();
        let err = MetadataStore::open(dir.path(), 1000).err().unwrap();
        assert!(matches!(err, MetadataError::Corrupt { .. }), "{err}");
    }
}
