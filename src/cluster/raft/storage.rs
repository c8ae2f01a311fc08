//! [`MemLog`]: the in-memory mirror of [`super::disk::RaftDisk`] that the Raft state machine
//! (raft-rs `RawNode`) reads through the [`raft::Storage`] trait.
//!
//! Lives on: the Raft driver's executor, owned by its `RawNode`. The driver keeps it equal to
//! what the disk holds: it writes the disk first and mirrors each change here before it tells
//! raft-rs the `Ready` was persisted.
//!
//! Invariants: the entries are consecutive, the first one follows `start` (the snapshot or
//! compaction point); the conf state is the fixed voter set (membership never changes here).
//! Snapshots for followers come from the state machine (the snapshot producer), at its applied
//! index, which is never below `start.index` because the driver compacts only up to the state
//! machine's durable applied index.

use std::rc::Rc;

use raft::eraftpb::{ConfState, Entry, HardState, Snapshot};
use raft::{GetEntriesContext, RaftState, StorageError};

use super::disk::SnapshotMeta;

/// Produces the state machine's current image: (applied index, term of that index, data).
pub type SnapshotProducer = Rc<dyn Fn() -> Result<(u64, u64, Vec<u8>), String>>;

/// See the module docs.
pub struct MemLog {
    hard_state: HardState,
    conf_state: ConfState,
    /// The entry just before `entries[0]`.
    start: SnapshotMeta,
    entries: Vec<Entry>,
    producer: SnapshotProducer,
}

impl MemLog {
    pub fn new(
        voters: &[u64],
        hard_state: HardState,
        start: SnapshotMeta,
        entries: Vec<Entry>,
        producer: SnapshotProducer,
    ) -> MemLog {
        let conf_state = ConfState {
            voters: voters.to_vec(),
            ..Default::default()
        };
        MemLog {
            hard_state,
            conf_state,
            start,
            entries,
            producer,
        }
    }

    pub fn hard_state(&self) -> &HardState {
        &self.hard_state
    }

    pub fn first_index(&self) -> u64 {
        self.start.index + 1
    }

    pub fn last_index(&self) -> u64 {
        self.start.index + self.entries.len() as u64
    }

    /// Term of the entry at `idx`, when it is `start` or a held entry.
    pub fn term_of(&self, idx: u64) -> Option<u64> {
        if idx == self.start.index {
            return Some(self.start.term);
        }
        if idx < self.start.index {
            return None;
        }
        self.entries
            .get((idx - self.start.index - 1) as usize)
            .map(|e| e.term)
    }

    /// Appends `ents`, replacing any held entries at or after the first one's index.
    ///
    /// # Panics
    /// If `ents` starts below the first index or leaves a gap: the disk refused the same
    /// append before this is called, so reaching it is a driver bug.
    pub fn append(&mut self, ents: &[Entry]) {
        let Some(first) = ents.first() else {
            return;
        };
        assert!(
            first.index > self.start.index && first.index <= self.last_index() + 1,
            "raft mem log: entries from {} do not fit ({}, {}]",
            first.index,
            self.start.index,
            self.last_index()
        );
        self.entries
            .truncate((first.index - self.start.index - 1) as usize);
        self.entries.extend_from_slice(ents);
    }

    pub fn set_hard_state(&mut self, hs: HardState) {
        self.hard_state = hs;
    }

    pub fn set_commit(&mut self, commit: u64) {
        self.hard_state.commit = commit;
    }

    /// Replaces the log with an empty one after the snapshot `meta`.
    pub fn apply_snapshot(&mut self, meta: SnapshotMeta) {
        self.start = meta;
        self.entries.clear();
        self.hard_state.term = self.hard_state.term.max(meta.term);
        self.hard_state.commit = self.hard_state.commit.max(meta.index);
    }

    /// Drops the entries up to and including `up_to` (which must be held).
    pub fn compact(&mut self, up_to: u64) {
        if up_to <= self.start.index {
            return;
        }
        let Some(term) = self.term_of(up_to) else {
            return;
        };
        self.entries.drain(..(up_to - self.start.index) as usize);
        self.start = SnapshotMeta { index: up_to, term };
    }
}

impl raft::Storage for MemLog {
    fn initial_state(&self) -> raft::Result<RaftState> {
        Ok(RaftState::new(
            self.hard_state.clone(),
            self.conf_state.clone(),
        ))
    }

    fn entries(
        &self,
        low: u64,
        high: u64,
        max_size: impl Into<Option<u64>>,
        _context: GetEntriesContext,
    ) -> raft::Result<Vec<Entry>> {
        if low <= self.start.index {
            return Err(raft::Error::Store(StorageError::Compacted));
        }
        if high > self.last_index() + 1 || low > high {
            return Err(raft::Error::Store(StorageError::Unavailable));
        }
        let lo = (low - self.start.index - 1) as usize;
        let hi = (high - self.start.index - 1) as usize;
        let max_size = max_size.into();
        let mut out = Vec::with_capacity(hi - lo);
        let mut size = 0u64;
        for e in &self.entries[lo..hi] {
            // Like raft-rs's limit_size: at least one entry, then up to max_size bytes.
            size += protobuf::Message::compute_size(e) as u64;
            if !out.is_empty() && max_size.is_some_and(|max| size > max) {
                break;
            }
            out.push(e.clone());
        }
        Ok(out)
    }

    fn term(&self, idx: u64) -> raft::Result<u64> {
        if idx < self.start.index {
            return Err(raft::Error::Store(StorageError::Compacted));
        }
        self.term_of(idx)
            .ok_or(raft::Error::Store(StorageError::Unavailable))
    }

    fn first_index(&self) -> raft::Result<u64> {
        Ok(self.first_index())
    }

    fn last_index(&self) -> raft::Result<u64> {
        Ok(self.last_index())
    }

    fn snapshot(&self, request_index: u64, to: u64) -> raft::Result<Snapshot> {
        let (index, term, data) = match (self.producer)() {
            Ok(image) => image,
            Err(e) => {
                tracing::warn!(to, error = %e, "raft: the state machine could not produce a snapshot; retrying later");
                return Err(raft::Error::Store(
                    StorageError::SnapshotTemporarilyUnavailable,
                ));
            }
        };
        if index < request_index {
            return Err(raft::Error::Store(
                StorageError::SnapshotTemporarilyUnavailable,
            ));
        }
        // The state machine may not know the term of its applied index (after a restart,
        // before it applies anything new): the log does.
        let term = self.term_of(index).unwrap_or(term);
        let mut snap = Snapshot {
            data: data.into(),
            ..Default::default()
        };
        let meta = snap.mut_metadata();
        meta.index = index;
        meta.term = term;
        meta.set_conf_state(self.conf_state.clone());
        Ok(snap)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use raft::Storage;

    fn entry(index: u64, term: u64) -> Entry {
        Entry {
            index,
            term,
            ..Default::default()
        }
    }

    fn log(producer: SnapshotProducer) -> MemLog {
        MemLog::new(
            &[1, 2, 3],
            HardState::default(),
            SnapshotMeta { index: 3, term: 1 },
            vec![entry(4, 1), entry(5, 2), entry(6, 2)],
            producer,
        )
    }

    #[test]
    fn reads_appends_and_compacts() {
        let mut m = log(Rc::new(|| Ok((5, 2, b"img".to_vec()))));
        assert_eq!(Storage::first_index(&m).unwrap(), 4);
        assert_eq!(Storage::last_index(&m).unwrap(), 6);
        assert_eq!(m.term(3).unwrap(), 1);
        assert_eq!(m.term(5).unwrap(), 2);
        assert!(matches!(
            m.term(2),
            Err(raft::Error::Store(StorageError::Compacted))
        ));
        assert!(matches!(
            m.entries(3, 5, None, GetEntriesContext::empty(false)),
            Err(raft::Error::Store(StorageError::Compacted))
        ));
        let got = m
            .entries(4, 7, Some(0), GetEntriesContext::empty(false))
            .unwrap();
        assert_eq!(got.len(), 1, "max size 0 still returns one entry");
        m.append(&[entry(6, 3), entry(7, 3)]);
        assert_eq!(m.term(6).unwrap(), 3);
        assert_eq!(m.last_index(), 7);
        m.compact(5);
        assert_eq!(m.first_index(), 6);
        assert_eq!(m.term(5).unwrap(), 2);
        m.apply_snapshot(SnapshotMeta { index: 20, term: 4 });
        assert_eq!((m.first_index(), m.last_index()), (21, 20));
        assert_eq!(m.hard_state().commit, 20);
    }

    #[test]
    fn snapshots_come_from_the_producer_and_wait_until_it_catches_up() {
        let m = log(Rc::new(|| Ok((5, 2, b"img".to_vec()))));
        let snap = m.snapshot(4, 2).unwrap();
        assert_eq!(snap.get_metadata().index, 5);
        assert_eq!(snap.get_metadata().term, 2);
        assert_eq!(snap.get_metadata().get_conf_state().voters, vec![1, 2, 3]);
        assert_eq!(&snap.data[..], b"img");
        assert!(matches!(
            m.snapshot(6, 2),
            Err(raft::Error::Store(
                StorageError::SnapshotTemporarilyUnavailable
            ))
        ));
    }
}
