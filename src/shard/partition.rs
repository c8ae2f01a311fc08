//! A partition on the shard that owns it: its log and the offsets that say what of the log
//! whom may see, each a separately named value.
//!
//! Lives on: the shard `placement::partition_owner` gives it; only that shard's executor
//! touches it.
//!
//! - **Log end offset**: one past the last record appended (the log's own, `PartitionLog`).
//! - **High watermark**: offsets below it are on every in-sync replica; consumers read only
//!   below it. With one replica (today) it follows the log end as each append completes;
//!   replication will move it by the followers' fetch offsets instead, and it never moves back.
//! - **Last stable offset**: offsets below it belong to no open transaction; read_committed
//!   consumers read only below it. It is the first offset of the oldest transaction still
//!   open in the partition (its producer wrote a transactional batch and no marker yet, kept
//!   in the producer state), or the high watermark when none is open.
//! - **Aborted transactions** (`storage::txnindex`): the ranges whose abort marker was
//!   written, returned with a read_committed Fetch so the client drops their records.
//! - **Leader epoch**: stamped into every batch this replica writes as leader, and recorded in
//!   the log's leader-epoch checkpoint (`storage::epochs`), so replication can truncate by
//!   epoch.
//!
//! - **Producer state**: the idempotent producers that wrote to the partition, their epochs and
//!   last five batches (`storage::producers`), checked by every append and snapshotted at
//!   segment rolls and clean shutdown.
//!
//! The replica slot is where the replication issue keeps its per-partition state, so it lives
//! and dies with the partition.

use std::cell::Cell;
use std::rc::Rc;

use futures_channel::oneshot;

use crate::error::KafkaError;
use crate::storage::log::{PartitionLog, ReadOut};
use crate::storage::producers::ProducerStates;
use crate::storage::txnindex::TxnIndex;

/// A waiting fetch's wake-up, fired by the first of its partitions to have news (or by its
/// origin's cancel); empty once fired.
pub(crate) struct Wake(Cell<Option<oneshot::Sender<()>>>);

impl Wake {
    pub(crate) fn new() -> (Rc<Wake>, oneshot::Receiver<()>) {
        let (tx, rx) = oneshot::channel();
        (Rc::new(Wake(Cell::new(Some(tx)))), rx)
    }

    pub(crate) fn fire(&self) {
        if let Some(tx) = self.0.take() {
            let _ = tx.send(());
        }
    }
}

/// The replicas of the partition and what the leader knows of them. One node today: this
/// broker is the only replica and the only member of the ISR.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReplicaState {
    pub replicas: Vec<i32>,
    pub isr: Vec<i32>,
}

pub struct Partition {
    pub log: PartitionLog,
    high_watermark: i64,
    last_stable_offset: i64,
    leader_epoch: i32,
    pub replicas: ReplicaState,
    pub producers: ProducerStates,
    /// The offset of the newest producer state snapshot on disk, if any: a clean shutdown
    /// writes none when it is at the log end already.
    pub producers_snapshot: Option<i64>,
    pub txn_index: TxnIndex,
    /// Index entries of abort markers written but not yet fdatasync'd (see
    /// `Shard::write_txn_markers`).
    pub txn_index_unsynced: Vec<crate::storage::txnindex::TxnIndexSync>,
    /// Fetches waiting for this partition to grow.
    pub(crate) waiters: Vec<Rc<Wake>>,
}

impl Partition {
    /// A partition led by `node_id` at `leader_epoch`, over an opened log. Everything in the
    /// log was durable or recovered at open, and there is no other replica, so all of it is
    /// visible.
    pub fn new(log: PartitionLog, node_id: i32, leader_epoch: i32) -> Partition {
        let end = log.log_end_offset();
        Partition {
            log,
            high_watermark: end,
            last_stable_offset: end,
            leader_epoch,
            replicas: ReplicaState {
                replicas: vec![node_id],
                isr: vec![node_id],
            },
            producers: ProducerStates::default(),
            producers_snapshot: None,
            txn_index: TxnIndex::default(),
            txn_index_unsynced: Vec::new(),
            waiters: Vec::new(),
        }
    }

    pub fn log_end_offset(&self) -> i64 {
        self.log.log_end_offset()
    }

    pub fn high_watermark(&self) -> i64 {
        self.high_watermark
    }

    pub fn last_stable_offset(&self) -> i64 {
        self.last_stable_offset
    }

    pub fn leader_epoch(&self) -> i32 {
        self.leader_epoch
    }

    /// The metadata gave the partition a new leader epoch (a leader change); batches written
    /// from now on carry it. Epochs only grow.
    pub fn set_leader_epoch(&mut self, epoch: i32) {
        self.leader_epoch = self.leader_epoch.max(epoch);
    }

    /// After an append: with the leader as the only in-sync replica, everything appended is on
    /// every ISR member, so the high watermark moves to the log end; the last stable offset
    /// moves to the first offset of the oldest open transaction, or to the high watermark.
    /// Both only move forward (a transaction opens at the log end, never below the LSO).
    pub fn appended(&mut self) {
        let end = self.log.log_end_offset();
        debug_assert!(
            end >= self.high_watermark,
            "log end below the high watermark"
        );
        self.high_watermark = self.high_watermark.max(end);
        self.update_stable();
    }

    /// Installs the producer state and aborted-transaction index rebuilt at open, and the last
    /// stable offset they give.
    pub fn restore(&mut self, producers: ProducerStates, txn_index: TxnIndex) {
        self.producers = producers;
        self.txn_index = txn_index;
        // Open transactions found in the state hold the LSO below where `new` put it.
        self.last_stable_offset = self
            .producers
            .first_unstable_offset()
            .map_or(self.high_watermark, |f| f.min(self.high_watermark));
    }

    /// Recomputes the last stable offset from the producer state (after an append, or once
    /// the state was rebuilt at open).
    pub fn update_stable(&mut self) {
        let stable = self
            .producers
            .first_unstable_offset()
            .map_or(self.high_watermark, |f| f.min(self.high_watermark));
        debug_assert!(
            stable >= self.last_stable_offset,
            "the last stable offset moved back from {} to {stable}",
            self.last_stable_offset
        );
        self.last_stable_offset = stable;
        debug_assert!(self.last_stable_offset <= self.high_watermark);
    }

    /// What a consumer's Fetch sees at `offset`: batches below the high watermark (below the
    /// last stable offset for read_committed, with the aborted transactions from `offset` to
    /// it), and the partition's offsets.
    pub fn read(
        &self,
        offset: i64,
        max_bytes: usize,
        read_committed: bool,
    ) -> Result<ReadOut, KafkaError> {
        let visible = if read_committed {
            self.last_stable_offset
        } else {
            self.high_watermark
        };
        let slice = self.log.read(offset, max_bytes, visible)?;
        Ok(ReadOut {
            slice,
            high_watermark: self.high_watermark,
            last_stable_offset: self.last_stable_offset,
            log_start_offset: self.log.log_start_offset(),
            aborted: read_committed.then(|| self.txn_index.overlapping(offset, visible)),
        })
    }

    /// Wakes the fetches waiting on this partition.
    pub(crate) fn wake_waiters(&mut self) {
        for w in self.waiters.drain(..) {
            w.fire();
        }
    }
}
