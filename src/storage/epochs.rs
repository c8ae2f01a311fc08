//! The leader-epoch cache of a partition and its checkpoint file (`leader-epoch-checkpoint`,
//! Kafka's format): which leader epoch wrote the log from which offset on. Replication uses it
//! to find where a follower's log diverges from a new leader's (OffsetForLeaderEpoch, KIP-101)
//! and to truncate there.
//!
//! Lives on: the shard that owns the partition, inside its `PartitionLog`.
//!
//! Every batch the leader writes carries its epoch in the header (`partition_leader_epoch`), so
//! the cache is derived data: an entry is added when a batch of a newer epoch is appended, and
//! the checkpoint is written with the flush that makes that batch durable (on the blocking
//! pool). A checkpoint that is missing or behind the log is completed from the batches the
//! log's open scan sees; entries past the log end (after recovery cut a tail) are dropped.
//!
//! File format (as Kafka's `LeaderEpochCheckpointFile`): a version line `0`, a count line, then
//! one `epoch start_offset` line per entry, epochs and offsets strictly increasing.

use std::fs::{self, File};
use std::io;
use std::path::Path;

/// The checkpoint's file name in a partition directory.
pub const CHECKPOINT_FILE: &str = "leader-epoch-checkpoint";

/// (leader epoch, first offset it wrote), both strictly increasing.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LeaderEpochCache {
    entries: Vec<(i32, i64)>,
}

impl LeaderEpochCache {
    /// Reads the checkpoint of the partition in `dir`; an absent file is an empty cache. A file
    /// that does not parse is reported, and the cache starts empty: it is rebuilt from the log.
    pub fn load(dir: &Path) -> io::Result<LeaderEpochCache> {
        let text = match fs::read_to_string(dir.join(CHECKPOINT_FILE)) {
            Ok(t) => t,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Self::default()),
            Err(e) => return Err(e),
        };
        match Self::parse(&text) {
            Some(c) => Ok(c),
            None => {
                tracing::warn!(
                    dir = %dir.display(),
                    "leader-epoch checkpoint does not parse; rebuilding it from the log"
                );
                Ok(Self::default())
            }
        }
    }

    fn parse(text: &str) -> Option<LeaderEpochCache> {
        let mut lines = text.lines();
        if lines.next()?.trim() != "0" {
            return None;
        }
        let count: usize = lines.next()?.trim().parse().ok()?;
        let mut cache = LeaderEpochCache::default();
        for _ in 0..count {
            let mut parts = lines.next()?.split_whitespace();
            let epoch: i32 = parts.next()?.parse().ok()?;
            let start: i64 = parts.next()?.parse().ok()?;
            if !cache.assign(epoch, start) {
                return None;
            }
        }
        Some(cache)
    }

    /// The checkpoint's text.
    pub fn checkpoint_text(&self) -> String {
        let mut s = format!("0\n{}\n", self.entries.len());
        for (epoch, start) in &self.entries {
            s.push_str(&format!("{epoch} {start}\n"));
        }
        s
    }

    /// Notes that `epoch` wrote the log from `start_offset` on; false (and no change) unless
    /// both are beyond the last entry's.
    pub fn assign(&mut self, epoch: i32, start_offset: i64) -> bool {
        match self.entries.last() {
            Some(&(e, s)) if epoch <= e || start_offset <= s => false,
            _ => {
                self.entries.push((epoch, start_offset));
                true
            }
        }
    }

    /// Drops entries that start at or past `log_end` (the log was cut there); true if any.
    pub fn truncate_from(&mut self, log_end: i64) -> bool {
        let before = self.entries.len();
        self.entries.retain(|&(_, s)| s < log_end);
        self.entries.len() != before
    }

    /// Where the newest entry's epoch starts, if there is one.
    pub fn latest_start(&self) -> Option<i64> {
        self.entries.last().map(|&(_, s)| s)
    }

    /// The epoch of the newest entry, or -1 when the cache is empty.
    pub fn latest_epoch(&self) -> i32 {
        self.entries.last().map_or(-1, |&(e, _)| e)
    }

    /// The epoch that wrote `offset`: the newest entry starting at or below it; -1 when none
    /// does (ListOffsets answers it with the offset, KIP-320).
    pub fn epoch_of(&self, offset: i64) -> i32 {
        let i = self.entries.partition_point(|&(_, s)| s <= offset);
        if i == 0 { -1 } else { self.entries[i - 1].0 }
    }

    /// OffsetForLeaderEpoch: the largest epoch at or below `epoch` and the offset where it
    /// ended (the next epoch's start, or `log_end` for the latest); (-1, -1) when none.
    pub fn end_offset_for(&self, epoch: i32, log_end: i64) -> (i32, i64) {
        let i = self.entries.partition_point(|&(e, _)| e <= epoch);
        if i == 0 {
            return (-1, -1);
        }
        let end = self.entries.get(i).map_or(log_end, |&(_, s)| s);
        (self.entries[i - 1].0, end)
    }
}

/// Writes a checkpoint atomically (temporary file, fsync, rename, directory fsync). Blocking:
/// run it on the blocking pool.
pub fn write_checkpoint(dir: &Path, text: &str) -> io::Result<()> {
    let tmp = dir.join(format!("{CHECKPOINT_FILE}.tmp"));
    let f = File::create(&tmp)?;
    crate::storage::io::pwritev_all(&f, 0, &[text.as_bytes()])?;
    f.sync_all()?;
    fs::rename(&tmp, dir.join(CHECKPOINT_FILE))?;
    File::open(dir)?.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn assigns_only_forward_and_answers_end_offsets() {
        let mut c = LeaderEpochCache::default();
        assert_eq!(c.latest_epoch(), -1);
        assert_eq!(c.end_offset_for(0, 10), (-1, -1));
        assert!(c.assign(0, 0));
        assert!(!c.assign(0, 5), "same epoch");
        assert!(c.assign(2, 40));
        assert!(!c.assign(3, 40), "same start");
        assert!(!c.assign(1, 50), "older epoch");
        assert!(c.assign(5, 90));
        let cases = [
            (0, (0, 40)),
            (1, (0, 40)),
            (2, (2, 90)),
            (4, (2, 90)),
            (5, (5, 100)),
            (9, (5, 100)),
            (-1, (-1, -1)),
        ];
        for (epoch, want) in cases {
            assert_eq!(c.end_offset_for(epoch, 100), want, "epoch {epoch}");
        }
        assert!(c.truncate_from(90));
        assert_eq!(c.latest_epoch(), 2);
        assert!(!c.truncate_from(90));
    }

    #[test]
    fn checkpoint_round_trips_and_bad_files_are_rebuilt() {
        let dir = tempfile::tempdir().unwrap();
        let mut c = LeaderEpochCache::default();
        c.assign(0, 0);
        c.assign(3, 17);
        write_checkpoint(dir.path(), &c.checkpoint_text()).unwrap();
        assert_eq!(
            fs::read_to_string(dir.path().join(CHECKPOINT_FILE)).unwrap(),
            "0\n2\n0 0\n3 17\n"
        );
        assert_eq!(LeaderEpochCache::load(dir.path()).unwrap(), c);
        for bad in ["1\n0\n", "0\n2\n0 0\n", "0\n2\n3 5\n1 9\n", "0\nx\n", ""] {
            fs::write(dir.path().join(CHECKPOINT_FILE), bad).unwrap();
            assert_eq!(
                LeaderEpochCache::load(dir.path()).unwrap(),
                LeaderEpochCache::default(),
                "{bad:?}"
            );
        }
        let empty = tempfile::tempdir().unwrap();
        assert_eq!(
            LeaderEpochCache::load(empty.path()).unwrap(),
            LeaderEpochCache::default()
        );
    }
}
