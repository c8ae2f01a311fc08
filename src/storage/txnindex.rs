//! The aborted-transaction index of one partition: which ranges of which producer's records
//! were aborted, so a read_committed Fetch can tell its client what to drop.
//!
//! Lives on: the shard that owns the partition, inside its `Partition`.
//!
//! On disk it is Kafka's `.txnindex`, one file per segment named by the segment's base offset
//! (`00000000000000000000.txnindex`), of 34-byte entries in the order the abort markers were
//! written: version i16 (0), producer id i64, first offset i64, last offset i64 (the abort
//! marker's), last stable offset i64 (as the marker was written), big-endian. An entry is
//! written when the abort marker is appended (page cache, on the executor, like the log) and
//! fdatasync'd, with the file's directory when the file is new, on the blocking pool before the
//! marker is acknowledged to the transaction coordinator.
//!
//! At open every file is read; a file whose segment is gone (retention) is removed, and
//! entries at or past the recovered log end (a torn tail that was cut) are cut from their file,
//! so a later marker at the same offsets is not confused with them. The entries of the
//! retained log are kept in memory (32 bytes per aborted transaction); entries below the log
//! start are dropped at the next abort marker ([`TxnIndex::prune`]).

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

const SUFFIX: &str = ".txnindex";
const ENTRY_LEN: usize = 34;
const VERSION: i16 = 0;

/// One aborted transaction in a partition.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AbortedTxn {
    pub producer_id: i64,
    pub first_offset: i64,
    /// The abort marker's offset.
    pub last_offset: i64,
    pub last_stable_offset: i64,
}

impl AbortedTxn {
    fn encode(&self) -> [u8; ENTRY_LEN] {
        let mut b = [0u8; ENTRY_LEN];
        b[0..2].copy_from_slice(&VERSION.to_be_bytes());
        b[2..10].copy_from_slice(&self.producer_id.to_be_bytes());
        b[10..18].copy_from_slice(&self.first_offset.to_be_bytes());
        b[18..26].copy_from_slice(&self.last_offset.to_be_bytes());
        b[26..34].copy_from_slice(&self.last_stable_offset.to_be_bytes());
        b
    }

    fn decode(b: &[u8]) -> Option<AbortedTxn> {
        let i64_at = |i: usize| {
            let mut a = [0u8; 8];
            a.copy_from_slice(&b[i..i + 8]);
            i64::from_be_bytes(a)
        };
        (b.len() == ENTRY_LEN && i16::from_be_bytes([b[0], b[1]]) == VERSION).then(|| AbortedTxn {
            producer_id: i64_at(2),
            first_offset: i64_at(10),
            last_offset: i64_at(18),
            last_stable_offset: i64_at(26),
        })
    }
}

/// fdatasyncs every index file of the partition in `dir`. Blocking.
pub fn sync_all(dir: &Path) -> io::Result<()> {
    for base in crate::storage::io::offsets_named(dir, SUFFIX)? {
        File::open(index_path(dir, base))?.sync_data()?;
    }
    Ok(())
}

pub fn index_path(dir: &Path, segment_base: i64) -> PathBuf {
    dir.join(format!("{segment_base:020}{SUFFIX}"))
}

/// A written entry to make durable: fdatasync the file (and the directory for a new file).
#[derive(Debug)]
pub struct TxnIndexSync {
    pub path: PathBuf,
    pub new_file: bool,
}

impl TxnIndexSync {
    /// Blocking: run it on the blocking pool.
    pub fn run(&self) -> io::Result<()> {
        File::open(&self.path)?.sync_data()?;
        if self.new_file
            && let Some(dir) = self.path.parent()
        {
            File::open(dir)?.sync_all()?;
        }
        Ok(())
    }
}

/// The aborted transactions of a partition's retained log, ordered by their marker offset.
#[derive(Debug, Default)]
pub struct TxnIndex {
    dir: PathBuf,
    entries: Vec<AbortedTxn>,
}

impl TxnIndex {
    /// Reads the index files of the partition in `dir` (see the module doc).
    pub fn load(dir: &Path, log_start: i64, log_end: i64) -> io::Result<TxnIndex> {
        let mut entries = Vec::new();
        for base in crate::storage::io::offsets_named(dir, SUFFIX)? {
            let path = index_path(dir, base);
            if !crate::storage::segment::log_path(dir, base).exists() {
                fs::remove_file(&path)?;
                continue;
            }
            let bytes = fs::read(&path)?;
            let mut valid = 0;
            for chunk in bytes.chunks(ENTRY_LEN) {
                match AbortedTxn::decode(chunk) {
                    Some(e) if e.last_offset < log_end => {
                        valid += 1;
                        if e.last_offset >= log_start {
                            entries.push(e);
                        }
                    }
                    _ => break,
                }
            }
            if valid * ENTRY_LEN != bytes.len() {
                // A cut tail (or a torn entry): keep only what the log still holds.
                let f = OpenOptions::new().write(true).open(&path)?;
                f.set_len((valid * ENTRY_LEN) as u64)?;
                f.sync_all()?;
            }
        }
        entries.sort_by_key(|e| e.last_offset);
        Ok(TxnIndex {
            dir: dir.to_path_buf(),
            entries,
        })
    }

    /// Records an aborted transaction whose marker was appended to the segment at
    /// `segment_base`; returns the sync that makes it durable.
    pub fn append(&mut self, segment_base: i64, e: AbortedTxn) -> io::Result<TxnIndexSync> {
        debug_assert!(
            self.entries
                .last()
                .is_none_or(|l| l.last_offset < e.last_offset),
            "abort markers out of order"
        );
        let path = index_path(&self.dir, segment_base);
        let new_file = !path.exists();
        let mut f = OpenOptions::new().create(true).append(true).open(&path)?;
        f.write_all(&e.encode())?;
        self.entries.push(e);
        Ok(TxnIndexSync { path, new_file })
    }

    /// At open: adds the entry of an abort marker the log holds but the index lost (a crash
    /// between the marker and its entry's sync), unless the index has it. Such an entry is
    /// the last of its segment's file, since a sync of a later entry of that file would have
    /// made it durable too. Returns whether it was missing; the caller makes it durable.
    pub fn restore(
        &mut self,
        segment_base: i64,
        e: AbortedTxn,
    ) -> io::Result<Option<TxnIndexSync>> {
        let at = self
            .entries
            .partition_point(|x| x.last_offset < e.last_offset);
        if self
            .entries
            .get(at)
            .is_some_and(|x| x.last_offset == e.last_offset)
        {
            return Ok(None);
        }
        let path = index_path(&self.dir, segment_base);
        let new_file = !path.exists();
        let mut f = OpenOptions::new().create(true).append(true).open(&path)?;
        f.write_all(&e.encode())?;
        self.entries.insert(at, e);
        Ok(Some(TxnIndexSync { path, new_file }))
    }

    /// Drops the entries whose abort marker is at or past `offset` (the log was truncated
    /// there), from memory and from their files. Each file is cut after its last entry below
    /// `offset` (its entries are in marker order) and synced, or removed when none is left, so
    /// a marker appended later at the same offsets is never confused with a dropped one. A
    /// cut is one `ftruncate`, which a crash leaves done or undone, and an undone one is redone
    /// at open, which cuts entries at or past the log end. Blocking (fsync): call it on the
    /// rare truncation only, before the log takes appends past `offset`.
    pub fn truncate_to(&mut self, offset: i64) -> io::Result<()> {
        let keep = self.entries.partition_point(|e| e.last_offset < offset);
        self.entries.truncate(keep);
        let mut removed = false;
        for base in crate::storage::io::offsets_named(&self.dir, SUFFIX)? {
            let path = index_path(&self.dir, base);
            let bytes = fs::read(&path)?;
            let valid = bytes
                .chunks(ENTRY_LEN)
                .take_while(|c| AbortedTxn::decode(c).is_some_and(|e| e.last_offset < offset))
                .count();
            if valid * ENTRY_LEN == bytes.len() {
                continue;
            }
            if valid == 0 {
                fs::remove_file(&path)?;
                removed = true;
            } else {
                let f = OpenOptions::new().write(true).open(&path)?;
                f.set_len((valid * ENTRY_LEN) as u64)?;
                f.sync_all()?;
            }
        }
        if removed {
            File::open(&self.dir)?.sync_all()?;
        }
        Ok(())
    }

    /// The aborted transactions that overlap the offsets `[from, upto)`.
    pub fn overlapping(&self, from: i64, upto: i64) -> Vec<AbortedTxn> {
        let start = self.entries.partition_point(|e| e.last_offset < from);
        self.entries[start..]
            .iter()
            .filter(|e| e.first_offset < upto)
            .copied()
            .collect()
    }

    /// Forgets the entries below the log start.
    pub fn prune(&mut self, log_start: i64) {
        let n = self.entries.partition_point(|e| e.last_offset < log_start);
        if n > 0 {
            self.entries.drain(..n);
        }
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn e(pid: i64, first: i64, last: i64) -> AbortedTxn {
        AbortedTxn {
            producer_id: pid,
            first_offset: first,
            last_offset: last,
            last_stable_offset: first,
        }
    }

    #[test]
    fn entries_survive_a_reopen_and_a_cut_tail_cuts_them() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        for base in [0, 100] {
            File::create(crate::storage::segment::log_path(d, base)).unwrap();
        }
        let mut idx = TxnIndex::load(d, 0, 0).unwrap();
        assert!(idx.append(0, e(1, 3, 10)).unwrap().new_file);
        assert!(!idx.append(0, e(2, 5, 20)).unwrap().new_file);
        idx.append(100, e(1, 110, 120)).unwrap().run().unwrap();
        idx.append(100, e(3, 115, 130)).unwrap();
        assert_eq!(fs::read(index_path(d, 0)).unwrap().len(), 2 * ENTRY_LEN);
        assert_eq!(idx.overlapping(0, 4), vec![e(1, 3, 10)]);
        assert_eq!(idx.overlapping(11, 111), vec![e(2, 5, 20), e(1, 110, 120)]);
        assert_eq!(idx.overlapping(131, 200), vec![]);
        // The log lost its tail from 125: the entry at 130 goes, from memory and the file.
        let idx = TxnIndex::load(d, 0, 125).unwrap();
        assert_eq!(idx.len(), 3);
        assert_eq!(fs::read(index_path(d, 100)).unwrap().len(), ENTRY_LEN);
        // Retention deleted segment 0: its index goes too.
        fs::remove_file(crate::storage::segment::log_path(d, 0)).unwrap();
        let mut idx = TxnIndex::load(d, 100, 125).unwrap();
        assert_eq!(idx.overlapping(0, 1000), vec![e(1, 110, 120)]);
        assert!(!index_path(d, 0).exists());
        idx.prune(121);
        assert!(idx.is_empty());
    }

    #[test]
    fn truncation_drops_entries_at_or_past_the_cut_from_memory_and_files() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        for base in [0, 100, 200] {
            File::create(crate::storage::segment::log_path(d, base)).unwrap();
        }
        let mut idx = TxnIndex::load(d, 0, 0).unwrap();
        idx.append(0, e(1, 3, 10)).unwrap();
        idx.append(0, e(2, 5, 20)).unwrap();
        idx.append(100, e(1, 110, 120)).unwrap();
        idx.append(100, e(3, 115, 130)).unwrap();
        idx.append(200, e(4, 205, 210)).unwrap();
        // The log was cut at 125 (segment 200 deleted with its log file, as truncation does).
        fs::remove_file(crate::storage::segment::log_path(d, 200)).unwrap();
        idx.truncate_to(125).unwrap();
        assert_eq!(
            idx.overlapping(0, 1000),
            vec![e(1, 3, 10), e(2, 5, 20), e(1, 110, 120)]
        );
        assert_eq!(fs::read(index_path(d, 0)).unwrap().len(), 2 * ENTRY_LEN);
        assert_eq!(fs::read(index_path(d, 100)).unwrap().len(), ENTRY_LEN);
        assert!(!index_path(d, 200).exists(), "nothing left in it");
        // A marker appended later at the same offsets is the only one at them.
        idx.append(100, e(5, 121, 126)).unwrap();
        let reopened = TxnIndex::load(d, 0, 200).unwrap();
        assert_eq!(
            reopened.overlapping(111, 1000),
            vec![e(1, 110, 120), e(5, 121, 126)]
        );
        // A cut at a segment's base empties its file.
        idx.truncate_to(100).unwrap();
        assert!(!index_path(d, 100).exists());
        assert_eq!(idx.len(), 2);
    }
}
