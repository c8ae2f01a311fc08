//! A partition on the shard that owns it: its log and the offsets that say what of the log
//! whom may see, each a separately named value.
//!
//! Lives on: the shard `placement::partition_owner` gives it; only that shard's executor
//! touches it.
//!
//! - **Log end offset**: one past the last record appended (the log's own, `PartitionLog`).
//! - **High watermark**: offsets below it are on every in-sync replica; consumers read only
//!   below it. On one node it follows the log end as each append completes; a leader in a
//!   cluster moves it by its own synced end and its in-sync followers' fetch offsets
//!   ([`Partition::advance_high_watermark`]), and it never moves back.
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
//! - **Role**: single (one node), leader (with each follower's progress and the ISR change in
//!   flight), follower, or offline, set from the applied metadata
//!   ([`Partition::apply_assignment`]); it lives and dies with the partition.

use std::cell::Cell;
use std::collections::BTreeMap;
use std::rc::Rc;
use std::time::{Duration, Instant};

use futures_channel::oneshot;

use crate::error::KafkaError;
use crate::storage::catalog::PartitionAssignment;
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

/// What the leader knows of one follower, from its Fetch requests (Kafka's replica state).
#[derive(Clone, Debug)]
pub struct FollowerProgress {
    /// The offset of the follower's last Fetch in this leadership: it holds, durably, every
    /// offset below it (a follower never asks past what it synced). -1 until its first Fetch.
    pub fetch_offset: i64,
    /// The broker epoch the follower sent (KIP-903), named when the leader asks the
    /// controller to add it to the ISR, so an older incarnation is never added.
    pub broker_epoch: i64,
    /// The last time the follower was caught up with the leader's log end (Kafka's
    /// lastCaughtUpTimeMs): it leaves the ISR when this is `replica.lag.time.max.ms` old.
    pub last_caught_up: Instant,
    /// When its previous Fetch came, and the leader's log end then.
    pub last_fetch: Instant,
    pub leader_end_at_last_fetch: i64,
}

impl FollowerProgress {
    fn new(now: Instant) -> FollowerProgress {
        FollowerProgress {
            fetch_offset: -1,
            broker_epoch: -1,
            last_caught_up: now,
            last_fetch: now,
            leader_end_at_last_fetch: -1,
        }
    }
}

/// A leader's replication state.
#[derive(Clone, Debug)]
pub struct LeaderState {
    /// Every other replica, by broker id.
    pub followers: BTreeMap<i32, FollowerProgress>,
    /// An ISR change asked of the controller and not yet applied: while it is in flight the
    /// high watermark counts the members of both (Kafka's maximal ISR), so an expansion
    /// never lets it pass what the new member lacks and a shrink never loses a member early.
    pub pending_isr: Option<Vec<i32>>,
    /// The log end when this leadership began. Until the high watermark reaches it, this
    /// leader does not know how far its predecessor's high watermark went.
    pub epoch_start_offset: i64,
}

/// What this broker is to the partition.
#[derive(Clone, Debug)]
pub enum Role {
    /// A one-node broker (no `--voters`): the only replica; the high watermark follows the
    /// log end as each append completes.
    Single,
    /// This broker leads the partition.
    Leader(LeaderState),
    /// This broker follows `leader`: its shard's fetcher for that broker brings the batches.
    Follower { leader: i32 },
    /// The metadata names no leader (the partition is offline), or not this broker as a
    /// replica any more.
    Offline,
}

pub struct Partition {
    pub log: PartitionLog,
    high_watermark: i64,
    last_stable_offset: i64,
    leader_epoch: i32,
    /// The partition as the applied metadata gives it (replicas, ISR, leader, epochs).
    pub assignment: PartitionAssignment,
    pub role: Role,
    pub producers: ProducerStates,
    /// The offset of the newest producer state snapshot on disk, if any: a clean shutdown
    /// writes none when it is at the log end already.
    pub producers_snapshot: Option<i64>,
    pub txn_index: TxnIndex,
    /// Index entries of abort markers written but not yet fdatasync'd (see
    /// `Shard::write_txn_markers`).
    pub txn_index_unsynced: Vec<crate::storage::txnindex::TxnIndexSync>,
    /// Fetches (and acks=all produces) waiting for this partition to grow.
    pub(crate) waiters: Vec<Rc<Wake>>,
}

impl Partition {
    /// A partition over an opened log. On one node (`assignment` None) everything in the log
    /// was durable or recovered at open and there is no other replica, so all of it is
    /// visible. In a cluster the high watermark starts at the checkpointed one (`hw`, at most
    /// the log end): what lies above it may not be on the other in-sync replicas.
    pub fn new(
        log: PartitionLog,
        assignment: Option<PartitionAssignment>,
        hw: Option<i64>,
    ) -> Partition {
        let end = log.log_end_offset();
        let high_watermark = hw.map_or(end, |h| h.clamp(log.log_start_offset(), end));
        let (role, assignment) = match assignment {
            None => (Role::Single, PartitionAssignment::default()),
            Some(a) => (Role::Offline, a),
        };
        Partition {
            log,
            high_watermark,
            last_stable_offset: high_watermark,
            leader_epoch: assignment.leader_epoch.max(0),
            assignment,
            role,
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

    /// After an append. On one node, everything appended is on every ISR member (the leader
    /// is the only one), so the high watermark moves to the log end. In a cluster it moves
    /// only by [`Partition::advance_high_watermark`]. The last stable offset moves to the
    /// first offset of the oldest open transaction, or to the high watermark. Both only move
    /// forward (a transaction opens at the log end, never below the LSO).
    pub fn appended(&mut self) {
        if matches!(self.role, Role::Single) {
            let end = self.log.log_end_offset();
            debug_assert!(
                end >= self.high_watermark,
                "log end below the high watermark"
            );
            self.high_watermark = self.high_watermark.max(end);
        }
        self.update_stable();
    }

    /// The ISR the high watermark waits for: the applied one, plus the members of an ISR
    /// change in flight (Kafka's maximal ISR).
    pub fn maximal_isr(&self) -> Vec<i32> {
        let mut isr = self.assignment.isr.clone();
        if let Role::Leader(l) = &self.role
            && let Some(p) = &l.pending_isr
        {
            for r in p {
                if !isr.contains(r) {
                    isr.push(*r);
                }
            }
        }
        isr
    }

    /// A leader's high watermark: the smallest of its own durable end (its log end for a
    /// topic that flushes in the background: `synced` false) and the fetch offsets of the
    /// other in-sync replicas, never moving back. Returns whether it moved; the caller wakes
    /// the waiters then.
    pub fn advance_high_watermark(&mut self, me: i32, synced: bool) -> bool {
        let Role::Leader(l) = &self.role else {
            return false;
        };
        let own = if synced {
            self.log.flushed_offset()
        } else {
            self.log.log_end_offset()
        };
        let mut candidate = own.min(self.log.log_end_offset());
        for r in self.maximal_isr() {
            if r == me {
                continue;
            }
            match l.followers.get(&r) {
                Some(f) if f.fetch_offset >= 0 => candidate = candidate.min(f.fetch_offset),
                // A member that has not fetched in this leadership holds the mark where it is.
                _ => return false,
            }
        }
        if candidate <= self.high_watermark {
            return false;
        }
        self.high_watermark = candidate;
        self.update_stable();
        true
    }

    /// A follower learns the leader's high watermark from each Fetch response.
    pub fn follower_high_watermark(&mut self, leader_hw: i64) {
        let hw = leader_hw.min(self.log.log_end_offset());
        if hw > self.high_watermark {
            self.high_watermark = hw;
            self.update_stable();
        }
    }

    /// After a truncation: the high watermark is at most the new log end (a follower's
    /// truncation never goes below it: what is below it is on every in-sync replica).
    pub fn truncated(&mut self) {
        let end = self.log.log_end_offset();
        if self.high_watermark > end {
            self.high_watermark = end;
        }
        if self.last_stable_offset > self.high_watermark {
            self.last_stable_offset = self.high_watermark;
        }
        self.update_stable();
    }

    /// Whether the leader is past its epoch start: its high watermark covers everything in
    /// its log when it was elected, so it is at least its predecessor's.
    pub fn high_watermark_known(&self) -> bool {
        match &self.role {
            Role::Leader(l) => self.high_watermark >= l.epoch_start_offset,
            _ => true,
        }
    }

    /// The metadata changed the partition: returns the role change it makes, and sets the
    /// epochs. A new leadership starts with no follower progress.
    pub fn apply_assignment(&mut self, me: i32, a: &PartitionAssignment, now: Instant) {
        let new_leadership = a.leader_epoch != self.assignment.leader_epoch
            || a.leader != self.assignment.leader
            || !matches!(self.role, Role::Leader(_) | Role::Follower { .. });
        self.set_leader_epoch(a.leader_epoch);
        self.assignment = a.clone();
        if !a.replicas.contains(&me) || a.leader < 0 {
            self.role = Role::Offline;
            return;
        }
        if a.leader != me {
            self.role = Role::Follower { leader: a.leader };
            return;
        }
        match &mut self.role {
            Role::Leader(l) if !new_leadership => {
                // An ISR change applied: the one in flight, if it is this one, is done.
                if l.pending_isr.as_ref().is_some_and(|p| {
                    let (mut p, mut isr) = (p.clone(), a.isr.clone());
                    p.sort_unstable();
                    isr.sort_unstable();
                    p == isr
                }) {
                    l.pending_isr = None;
                }
                for r in &a.replicas {
                    if *r != me {
                        l.followers
                            .entry(*r)
                            .or_insert_with(|| FollowerProgress::new(now));
                    }
                }
                l.followers.retain(|r, _| a.replicas.contains(r));
            }
            _ => {
                self.role = Role::Leader(LeaderState {
                    followers: a
                        .replicas
                        .iter()
                        .filter(|r| **r != me)
                        .map(|r| (*r, FollowerProgress::new(now)))
                        .collect(),
                    pending_isr: None,
                    epoch_start_offset: self.log.log_end_offset(),
                });
            }
        }
    }

    /// A follower's Fetch reached the leader at `fetch_offset`: records its progress (Kafka's
    /// updateFollowerFetchState). Returns the ISR to propose when the follower is out of the
    /// ISR and has caught up to the high watermark (and to this leadership's start).
    pub fn follower_fetched(
        &mut self,
        replica: i32,
        broker_epoch: i64,
        fetch_offset: i64,
        now: Instant,
    ) -> Option<Vec<i32>> {
        let end = self.log.log_end_offset();
        let hw = self.high_watermark;
        let in_isr = self.assignment.isr.contains(&replica);
        let Role::Leader(l) = &mut self.role else {
            return None;
        };
        let f = l.followers.get_mut(&replica)?;
        if fetch_offset >= end {
            f.last_caught_up = now;
        } else if fetch_offset >= f.leader_end_at_last_fetch && f.leader_end_at_last_fetch >= 0 {
            f.last_caught_up = f.last_caught_up.max(f.last_fetch);
        }
        f.fetch_offset = fetch_offset;
        f.broker_epoch = broker_epoch;
        f.last_fetch = now;
        f.leader_end_at_last_fetch = end;
        if in_isr
            || l.pending_isr.is_some()
            || fetch_offset < hw
            || fetch_offset < l.epoch_start_offset
        {
            return None;
        }
        let mut isr = self.assignment.isr.clone();
        isr.push(replica);
        l.pending_isr = Some(isr.clone());
        Some(isr)
    }

    /// The ISR to propose when in-sync followers have not caught up for `lag_max` (Kafka's
    /// maybeShrinkIsr); None when all keep up or a change is in flight.
    pub fn isr_to_shrink(&mut self, me: i32, now: Instant, lag_max: Duration) -> Option<Vec<i32>> {
        let isr = self.assignment.isr.clone();
        let Role::Leader(l) = &mut self.role else {
            return None;
        };
        if l.pending_isr.is_some() {
            return None;
        }
        let out: Vec<i32> = isr
            .iter()
            .copied()
            .filter(|r| {
                *r != me
                    && l.followers
                        .get(r)
                        .is_some_and(|f| now.duration_since(f.last_caught_up) > lag_max)
            })
            .collect();
        if out.is_empty() {
            return None;
        }
        let new: Vec<i32> = isr.into_iter().filter(|r| !out.contains(r)).collect();
        l.pending_isr = Some(new.clone());
        Some(new)
    }

    /// The in-sync replicas this leader can count on now: the ISR less the followers it has
    /// not seen caught up for `lag_max` (whose removal it may be unable to get committed).
    pub fn isr_in_reach(&self, me: i32, now: Instant, lag_max: Duration) -> usize {
        let Role::Leader(l) = &self.role else {
            return self.assignment.isr.len();
        };
        self.assignment
            .isr
            .iter()
            .filter(|r| {
                **r == me
                    || l.followers
                        .get(r)
                        .is_some_and(|f| now.duration_since(f.last_caught_up) <= lag_max)
            })
            .count()
    }

    /// An ISR change was refused or failed: the next check may propose again.
    pub fn isr_change_failed(&mut self) {
        if let Role::Leader(l) = &mut self.role {
            l.pending_isr = None;
        }
    }

    /// The broker epochs the leader last saw from the members of `isr` (-1 for itself and
    /// for members it has no Fetch of), for an AlterPartition.
    pub fn isr_with_epochs(&self, isr: &[i32]) -> Vec<(i32, i64)> {
        let Role::Leader(l) = &self.role else {
            return Vec::new();
        };
        isr.iter()
            .map(|r| (*r, l.followers.get(r).map_or(-1, |f| f.broker_epoch)))
            .collect()
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
        self.read_below(offset, max_bytes, visible, read_committed)
    }

    /// What a follower's Fetch gets: everything up to the log end (it is the follower that
    /// makes it durable and the high watermark that makes it visible).
    pub fn read_for_replica(&self, offset: i64, max_bytes: usize) -> Result<ReadOut, KafkaError> {
        self.read_below(offset, max_bytes, self.log.log_end_offset(), false)
    }

    fn read_below(
        &self,
        offset: i64,
        max_bytes: usize,
        visible: i64,
        read_committed: bool,
    ) -> Result<ReadOut, KafkaError> {
        let slice = self.log.read(offset, max_bytes, visible)?;
        Ok(ReadOut {
            slice,
            high_watermark: self.high_watermark,
            last_stable_offset: self.last_stable_offset,
            log_start_offset: self.log.log_start_offset(),
            aborted: read_committed.then(|| self.txn_index.overlapping(offset, visible)),
            diverging_epoch: None,
        })
    }

    /// Wakes the fetches waiting on this partition.
    pub(crate) fn wake_waiters(&mut self) {
        for w in self.waiters.drain(..) {
            w.fire();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::batch::{split_produce_records, tests::batch};
    use crate::storage::log::LogConfig;
    use bytes::Bytes;

    const CFG: LogConfig = LogConfig {
        segment_bytes: 1 << 20,
        segment_ms: None,
        index_interval_bytes: 4096,
        ..LogConfig::BASE
    };
    const ME: i32 = 1;

    fn assignment(leader: i32, isr: &[i32], epoch: i32) -> PartitionAssignment {
        PartitionAssignment {
            replicas: vec![1, 2, 3],
            isr: isr.to_vec(),
            leader,
            leader_epoch: epoch,
            partition_epoch: 0,
            ..Default::default()
        }
    }

    /// A leader of replicas 1, 2, 3 with `records` one-record batches appended and flushed.
    fn leader(dir: &std::path::Path, records: i64) -> Partition {
        let log = PartitionLog::open(dir, "t", 0, CFG, false).unwrap();
        let mut p = Partition::new(log, Some(assignment(ME, &[1, 2, 3], 5)), Some(0));
        p.apply_assignment(ME, &assignment(ME, &[1, 2, 3], 5), Instant::now());
        append(&mut p, records);
        p
    }

    fn append(p: &mut Partition, records: i64) {
        for i in 0..records {
            let bytes = Bytes::from(batch(1000 + i, &[b"v"]));
            let b = split_produce_records(&bytes, 1 << 20).unwrap();
            let epoch = p.leader_epoch();
            p.log.append(&b, epoch, None, 0).unwrap();
            p.appended();
        }
        let job = p.log.begin_flush().unwrap();
        let r = job.run();
        p.log.finish_flush(job.target, &r);
    }

    #[test]
    fn the_high_watermark_is_the_smallest_isr_fetch_offset_and_never_moves_back() {
        let dir = tempfile::tempdir().unwrap();
        let mut p = leader(dir.path(), 10);
        let now = Instant::now();
        // Appended and synced, but no follower has fetched in this leadership.
        assert!(!p.advance_high_watermark(ME, true));
        assert_eq!(p.high_watermark(), 0);
        p.follower_fetched(2, 7, 6, now);
        assert!(
            !p.advance_high_watermark(ME, true),
            "member 3 has not fetched"
        );
        p.follower_fetched(3, 8, 4, now);
        assert!(p.advance_high_watermark(ME, true));
        assert_eq!(p.high_watermark(), 4);
        // A follower that fetches from lower (it truncated) does not move the mark back.
        p.follower_fetched(3, 8, 2, now);
        assert!(!p.advance_high_watermark(ME, true));
        assert_eq!(p.high_watermark(), 4);
        p.follower_fetched(2, 7, 10, now);
        p.follower_fetched(3, 8, 10, now);
        assert!(p.advance_high_watermark(ME, true));
        assert_eq!(p.high_watermark(), 10);
        assert!(p.high_watermark_known(), "past the epoch start (0)");
    }

    #[test]
    fn the_leader_counts_only_its_synced_end_unless_the_topic_flushes_in_the_background() {
        let dir = tempfile::tempdir().unwrap();
        let mut p = leader(dir.path(), 4);
        // Two more appended but not flushed.
        for i in 0..2 {
            let bytes = Bytes::from(batch(2000 + i, &[b"w"]));
            let b = split_produce_records(&bytes, 1 << 20).unwrap();
            p.log.append(&b, 5, None, 0).unwrap();
        }
        let now = Instant::now();
        p.follower_fetched(2, 1, 6, now);
        p.follower_fetched(3, 1, 6, now);
        assert!(p.advance_high_watermark(ME, true));
        assert_eq!(p.high_watermark(), 4, "synced end");
        assert!(p.advance_high_watermark(ME, false));
        assert_eq!(p.high_watermark(), 6, "log end (flush.ms/flush.messages)");
    }

    #[test]
    fn a_caught_up_follower_is_proposed_for_the_isr_once_and_a_lagging_one_is_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let log = PartitionLog::open(dir.path(), "t", 0, CFG, false).unwrap();
        let mut p = Partition::new(log, Some(assignment(ME, &[1, 2], 5)), Some(0));
        let t0 = Instant::now();
        p.apply_assignment(ME, &assignment(ME, &[1, 2], 5), t0);
        append(&mut p, 5);
        p.follower_fetched(2, 1, 5, t0);
        assert!(p.advance_high_watermark(ME, true));
        // Replica 3 behind the high watermark: not yet.
        assert_eq!(p.follower_fetched(3, 9, 3, t0), None);
        // Caught up: proposed with its broker epoch, once (the change is then in flight).
        assert_eq!(p.follower_fetched(3, 9, 5, t0), Some(vec![1, 2, 3]));
        assert_eq!(p.isr_with_epochs(&[1, 2, 3]), vec![(1, -1), (2, 1), (3, 9)]);
        assert_eq!(p.follower_fetched(3, 9, 5, t0), None);
        // While in flight, the high watermark waits for the maximal ISR (3 included).
        append(&mut p, 2);
        p.follower_fetched(2, 1, 7, t0);
        assert!(!p.advance_high_watermark(ME, true));
        // Applied: nothing pending; the next check may shrink.
        p.apply_assignment(ME, &assignment(ME, &[1, 2, 3], 5), t0);
        assert!(matches!(&p.role, Role::Leader(l) if l.pending_isr.is_none()));
        let lag = Duration::from_millis(100);
        assert_eq!(
            p.isr_to_shrink(ME, t0 + Duration::from_millis(50), lag),
            None
        );
        // Replica 2 kept fetching the log end; replica 3 stopped at 5.
        let later = t0 + Duration::from_millis(300);
        p.follower_fetched(2, 1, 7, later);
        assert_eq!(p.isr_in_reach(ME, later, lag), 2);
        assert_eq!(p.isr_to_shrink(ME, later, lag), Some(vec![1, 2]));
        assert_eq!(
            p.isr_to_shrink(ME, later, lag),
            None,
            "one change at a time"
        );
        p.isr_change_failed();
        assert_eq!(p.isr_to_shrink(ME, later, lag), Some(vec![1, 2]));
    }

    #[test]
    fn a_new_leadership_starts_over_and_hides_nothing_it_cannot_vouch_for() {
        let dir = tempfile::tempdir().unwrap();
        let mut p = leader(dir.path(), 6);
        let now = Instant::now();
        p.follower_fetched(2, 1, 6, now);
        p.follower_fetched(3, 1, 6, now);
        assert!(p.advance_high_watermark(ME, true));
        // Follower in epoch 6, then leader again in epoch 7 with more in its log.
        p.apply_assignment(ME, &assignment(2, &[1, 2, 3], 6), now);
        assert!(matches!(p.role, Role::Follower { leader: 2 }));
        assert_eq!(p.leader_epoch(), 6);
        p.follower_high_watermark(100);
        assert_eq!(p.high_watermark(), 6, "capped at the log end");
        // As a follower it got 3 more than the old leader's high watermark said.
        append(&mut p, 3);
        p.apply_assignment(ME, &assignment(ME, &[1, 2, 3], 7), now);
        let Role::Leader(l) = &p.role else {
            panic!("not leader")
        };
        assert_eq!(l.epoch_start_offset, 9);
        assert!(l.followers.values().all(|f| f.fetch_offset == -1));
        // Until its followers confirm what it had when elected, consumers are told to wait.
        assert!(!p.high_watermark_known());
        p.follower_fetched(2, 1, 9, now);
        p.follower_fetched(3, 1, 9, now);
        assert!(p.advance_high_watermark(ME, true));
        assert!(p.high_watermark_known());
        // Offline when the metadata names no leader, or not this broker among the replicas.
        p.apply_assignment(ME, &assignment(-1, &[1], 8), now);
        assert!(matches!(p.role, Role::Offline));
    }
}
