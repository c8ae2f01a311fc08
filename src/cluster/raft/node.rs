//! The Raft driver: [`start`] builds the raft-rs `RawNode` over [`MemLog`] and
//! [`RaftDisk`], and returns the [`RaftHandle`] the broker talks to, the receiver of
//! [`Committed`] entries, and the driver future.
//!
//! Lives on: one glommio executor (the controller's shard). The driver future owns the
//! `RawNode` (inside a `RefCell` shared with the handles, borrowed only between awaits) and the
//! disk (taken onto the blocking pool for each write, then put back). Handles never step the
//! `RawNode` themselves: they queue inputs the driver applies between `Ready`s, since raft-rs
//! forbids stepping between `ready()` and `advance()`.
//!
//! # The loop
//!
//! Wait for an input or the next tick (every `tick_ms`); apply the queued inputs (step a
//! message, propose); tick when due; then, while raft-rs has a `Ready`:
//!
//! 1. send `messages()` at once (a leader replicates while it persists, Raft thesis 10.2.1);
//! 2. one blocking job: install the snapshot (if any), append the entries, fdatasync, then
//!    write the hard state (after the entries, so a durable commit index never names entries
//!    that are not); then mirror the same changes into [`MemLog`];
//! 3. deliver the snapshot as [`Committed::Snapshot`] (the state machine restores it first);
//! 4. send `persisted_messages()` (votes and acknowledgements: only now are they durable);
//! 5. deliver the committed entries, resolve the proposals they settle;
//! 6. `advance`, and handle the `LightReady` the same way (commit index, messages, entries).
//!
//! Then: compact when the state machine's durable applied index is `compact_every` entries
//! past the log's start, fail pending proposals if this node is no longer leader, and wake the
//! [`RaftHandle::changed`] waiters on a role, leader or term change.
//!
//! # Why pre-vote and check-quorum
//!
//! `check_quorum`: a leader that has not heard from a majority for an election timeout steps
//! down, so a leader cut off from the quorum stops accepting proposals it could never commit
//! (and clients go find the real leader). `pre_vote`: a node that was partitioned away does
//! not bump its term while isolated (it must first win a pre-vote), so healing the partition
//! does not depose a healthy leader, and the minority side can never elect anyone.
//!
//! # Failures
//!
//! A disk error while persisting a `Ready` stops the driver: raft-rs cannot be told that a
//! `Ready` failed, so going on would acknowledge entries that are not durable. The error is
//! logged, pending proposals fail with [`ProposeError::Disk`], later proposals too, and
//! [`RaftStatus::disk_error`] shows it; a restart recovers (see `disk.rs`). A failed compaction
//! before its rename is only logged.

use std::cell::{Cell, RefCell};
use std::collections::BTreeMap;
use std::future::Future;
use std::path::PathBuf;
use std::rc::Rc;
use std::time::{Duration, Instant};

use futures_channel::{mpsc, oneshot};
use futures_util::StreamExt;
use raft::eraftpb::{Entry, EntryType, HardState, Message, MessageType};
use raft::{RawNode, SnapshotStatus, StateRole};

use super::disk::{DiskError, RaftDisk, SnapshotMeta};
use super::slog_tracing;
use super::storage::{MemLog, SnapshotProducer};

/// How this node runs Raft. See [`RaftConfig::new`] for the defaults.
#[derive(Debug, Clone)]
pub struct RaftConfig {
    /// Raft id, != 0 (the broker maps Kafka node id N to N + 1).
    pub id: u64,
    /// All voter raft ids, this one included if it is a voter.
    pub voters: Vec<u64>,
    /// Directory of the Raft disk.
    pub dir: PathBuf,
    pub tick_ms: u64,
    /// Election timeout in ticks: a follower that hears nothing from a leader starts an
    /// election after a random number of ticks in [election_ticks, max_election_ticks).
    pub election_ticks: usize,
    /// Upper bound of that random timeout (0: twice `election_ticks`, raft-rs's default).
    pub max_election_ticks: usize,
    pub heartbeat_ticks: usize,
    /// Compact the log once this many entries are at or below the state machine's durable
    /// applied index.
    pub compact_every: u64,
    pub max_size_per_msg: u64,
    pub max_inflight_msgs: usize,
}

impl RaftConfig {
    /// A config with the defaults: 100 ms ticks, election after 10 ticks, heartbeat every
    /// tick, compaction every 10,000 entries, 1 MiB per append message, 256 in flight.
    pub fn new(id: u64, voters: Vec<u64>, dir: PathBuf) -> RaftConfig {
        RaftConfig {
            id,
            voters,
            dir,
            tick_ms: 100,
            election_ticks: 10,
            max_election_ticks: 0,
            heartbeat_ticks: 1,
            compact_every: 10_000,
            max_size_per_msg: 1 << 20,
            max_inflight_msgs: 256,
        }
    }
}

/// Sends Raft messages to peers (`msg.to`). Non-blocking and best effort: it drops a message
/// when the peer is unreachable; Raft retries.
pub trait Transport {
    fn send(&self, msg: Message);
}

/// What the state machine applies, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Committed {
    /// A committed entry (with empty data: the entry a new leader appends).
    Entry {
        index: u64,
        term: u64,
        data: Vec<u8>,
    },
    /// Replace the state with this image, as of `index`; later entries follow it.
    Snapshot {
        index: u64,
        term: u64,
        data: Vec<u8>,
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerStatus {
    pub id: u64,
    pub matched: u64,
    pub next: u64,
    pub recent_active: bool,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RaftStatus {
    pub id: u64,
    /// 0 when there is none known.
    pub leader_id: u64,
    pub term: u64,
    /// "Leader", "Follower", "Candidate" or "PreCandidate".
    pub role: String,
    pub commit: u64,
    pub last_index: u64,
    /// Last index delivered to the [`Committed`] receiver (raft-rs's applied index).
    pub applied: u64,
    /// Progress of every voter, on the leader only.
    pub peers: Vec<PeerStatus>,
    /// The driver has ended (stopped, or a disk error).
    pub stopped: bool,
    /// The disk error that stopped the driver.
    pub disk_error: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProposeError {
    /// This node is not the leader; `leader_id` is the one it knows (0 for none). Retry there.
    #[error("not the raft leader (the leader is {leader_id}, 0 = unknown)")]
    NotLeader { leader_id: u64 },
    /// Leadership was lost before the entry committed, or another entry took its index. The
    /// entry may still commit later (a new leader may keep it): the outcome is unknown.
    #[error("the proposal was dropped (leadership changed); its outcome is unknown")]
    Dropped,
    #[error("the raft node is stopped")]
    Stopped,
    #[error("the raft disk failed: {0}")]
    Disk(String),
}

enum Input {
    Step(Message),
    Propose {
        data: Vec<u8>,
        done: oneshot::Sender<Result<u64, ProposeError>>,
    },
    /// Nothing to do but look at the flags (stop, applied index).
    Wake,
}

/// State the handles and the driver share.
struct Shared {
    id: u64,
    node: RefCell<RawNode<MemLog>>,
    inputs: mpsc::UnboundedSender<Input>,
    /// The state machine's durable applied index, as reported.
    sm_applied: Cell<u64>,
    stop: Cell<bool>,
    stopped: Cell<bool>,
    disk_error: RefCell<Option<String>>,
    /// Role, leader and term as of the driver's last iteration.
    seen: Cell<(StateRole, u64, u64)>,
    change_waiters: RefCell<Vec<oneshot::Sender<()>>>,
}

impl Shared {
    fn wake_change_waiters(&self) {
        let waiters = std::mem::take(&mut *self.change_waiters.borrow_mut());
        for w in waiters {
            let _ = w.send(());
        }
    }
}

fn role_name(role: StateRole) -> &'static str {
    match role {
        StateRole::Leader => "Leader",
        StateRole::Follower => "Follower",
        StateRole::Candidate => "Candidate",
        StateRole::PreCandidate => "PreCandidate",
    }
}

/// The broker's handle on the Raft node: cheap to clone, all on the driver's executor.
#[derive(Clone)]
pub struct RaftHandle {
    shared: Rc<Shared>,
}

impl RaftHandle {
    /// Hands an incoming message from the transport to the node.
    pub fn step(&self, msg: Message) {
        let _ = self.shared.inputs.unbounded_send(Input::Step(msg));
    }

    /// Proposes `data` and resolves with its index once that entry (same index and term) is
    /// committed and durable here. Answers [`ProposeError::NotLeader`] at once on a follower.
    /// An empty `data` commits and is delivered like any other.
    pub async fn propose(&self, data: Vec<u8>) -> Result<u64, ProposeError> {
        if let Some(e) = self.shared.disk_error.borrow().clone() {
            return Err(ProposeError::Disk(e));
        }
        if self.shared.stopped.get() || self.shared.stop.get() {
            return Err(ProposeError::Stopped);
        }
        let (role, leader_id, _) = self.shared.seen.get();
        if role != StateRole::Leader {
            return Err(ProposeError::NotLeader { leader_id });
        }
        let (done, answer) = oneshot::channel();
        if self
            .shared
            .inputs
            .unbounded_send(Input::Propose { data, done })
            .is_err()
        {
            return Err(ProposeError::Stopped);
        }
        match answer.await {
            Ok(r) => r,
            Err(oneshot::Canceled) => match self.shared.disk_error.borrow().clone() {
                Some(e) => Err(ProposeError::Disk(e)),
                None => Err(ProposeError::Stopped),
            },
        }
    }

    pub fn status(&self) -> RaftStatus {
        let s = &self.shared;
        let (role, leader_id, term) = s.seen.get();
        let mut status = RaftStatus {
            id: s.id,
            leader_id,
            term,
            role: role_name(role).to_string(),
            commit: 0,
            last_index: 0,
            applied: 0,
            peers: Vec::new(),
            stopped: s.stopped.get(),
            disk_error: s.disk_error.borrow().clone(),
        };
        // The driver never holds the borrow across an await; a caller inside the driver's
        // own call chain (a transport, a snapshot producer) gets the cached fields only.
        if let Ok(node) = s.node.try_borrow() {
            let raft = &node.raft;
            status.leader_id = raft.leader_id;
            status.term = raft.term;
            status.role = role_name(raft.state).to_string();
            status.commit = raft.raft_log.committed;
            status.last_index = raft.raft_log.last_index();
            status.applied = raft.raft_log.applied;
            if raft.state == StateRole::Leader {
                status.peers = raft
                    .prs()
                    .iter()
                    .map(|(&id, pr)| PeerStatus {
                        id,
                        matched: pr.matched,
                        next: pr.next_idx,
                        recent_active: pr.recent_active,
                    })
                    .collect();
                status.peers.sort_by_key(|p| p.id);
            }
        }
        status
    }

    /// Committed entries from `from` on (at most about `max_bytes` of them, at least one), as
    /// (index, term, data), for an observer that follows the log without voting. Ok(empty)
    /// when there is nothing new or the driver is busy (ask again); Err(first index) when
    /// `from` was compacted away (the observer needs a snapshot).
    pub fn committed_entries(
        &self,
        from: u64,
        max_bytes: u64,
    ) -> Result<Vec<(u64, u64, Vec<u8>)>, u64> {
        use raft::Storage;
        let Ok(node) = self.shared.node.try_borrow() else {
            return Ok(Vec::new());
        };
        let commit = node.raft.raft_log.committed;
        let store = node.store();
        let first = store.first_index();
        if from < first {
            return Err(first);
        }
        if from > commit {
            return Ok(Vec::new());
        }
        let entries = store
            .entries(
                from,
                commit + 1,
                Some(max_bytes),
                raft::GetEntriesContext::empty(false),
            )
            .map_err(|_| first)?;
        // Every index is handed over (a non-normal entry, which does not occur, as empty), so
        // the observer's applied index moves through all of them.
        Ok(entries
            .into_iter()
            .map(|e| {
                let data = if e.entry_type == EntryType::EntryNormal {
                    e.data.to_vec()
                } else {
                    Vec::new()
                };
                (e.index, e.term, data)
            })
            .collect())
    }

    /// The state machine reports its durable applied index (drives compaction).
    pub fn set_applied(&self, index: u64) {
        if index > self.shared.sm_applied.get() {
            self.shared.sm_applied.set(index);
            let _ = self.shared.inputs.unbounded_send(Input::Wake);
        }
    }

    /// Whether this node is the leader (as of the driver's last iteration; false once
    /// stopped).
    pub fn is_leader(&self) -> bool {
        !self.shared.stopped.get() && self.shared.seen.get().0 == StateRole::Leader
    }

    /// The leader this node knows, 0 for none.
    pub fn leader_id(&self) -> u64 {
        self.shared.seen.get().1
    }

    pub fn term(&self) -> u64 {
        self.shared.seen.get().2
    }

    /// Resolves on the first change of role, leader or term after this call (or when the
    /// driver ends). It registers at the call, not at the first poll, so in
    /// `let c = h.changed(); if h.is_leader() { .. } c.await` no change is missed between the
    /// check and the wait.
    pub fn changed(&self) -> impl Future<Output = ()> + 'static {
        let rx = if self.shared.stopped.get() {
            None
        } else {
            let (tx, rx) = oneshot::channel();
            let mut waiters = self.shared.change_waiters.borrow_mut();
            waiters.retain(|w| !w.is_canceled());
            waiters.push(tx);
            Some(rx)
        };
        async move {
            if let Some(rx) = rx {
                let _ = rx.await;
            }
        }
    }

    /// Asks the driver to end; it does soon after (once a disk write in progress is done),
    /// without waiting for a quorum. Pending proposals fail with [`ProposeError::Stopped`].
    pub fn stop(&self) {
        self.shared.stop.set(true);
        let _ = self.shared.inputs.unbounded_send(Input::Wake);
    }
}

/// Opens the disk (blocking: call it before the executors run or on the blocking pool),
/// builds the `RawNode` with `applied` (the state machine's durable applied index) and returns
/// the handle, the receiver of committed entries in order, and the driver future to spawn.
///
/// If the disk holds a snapshot newer than `applied` (a crash after Raft persisted it but
/// before the state machine did), it is delivered first as [`Committed::Snapshot`]. Entries
/// at or below `applied` are never delivered.
pub fn start(
    cfg: RaftConfig,
    applied: u64,
    snapshot_producer: SnapshotProducer,
    transport: Rc<dyn Transport>,
) -> Result<
    (
        RaftHandle,
        mpsc::UnboundedReceiver<Committed>,
        impl Future<Output = ()>,
    ),
    DiskError,
> {
    if cfg.id == 0 || cfg.voters.is_empty() {
        return Err(DiskError::Refused(format!(
            "raft config: id {} (must not be 0), voters {:?} (must not be empty)",
            cfg.id, cfg.voters
        )));
    }
    let (disk, rec) = RaftDisk::open(&cfg.dir)?;
    let (committed_tx, committed_rx) = mpsc::unbounded();

    let mut sm_index = applied;
    if let Some((meta, data)) = rec.snapshot
        && meta.index > applied
    {
        tracing::info!(
            raft_id = cfg.id,
            snapshot_index = meta.index,
            applied,
            "raft: delivering the snapshot on disk first: the state machine is behind it"
        );
        let _ = committed_tx.unbounded_send(Committed::Snapshot {
            index: meta.index,
            term: meta.term,
            data,
        });
        sm_index = meta.index;
    }
    let start_index = rec.log_start.index;
    if sm_index < start_index {
        return Err(DiskError::Refused(format!(
            "the state machine's applied index {sm_index} is below the raft log's start \
             {start_index}, and no snapshot covers the gap"
        )));
    }
    let last = start_index + rec.entries.len() as u64;
    if sm_index > last {
        tracing::warn!(
            raft_id = cfg.id,
            applied = sm_index,
            last_index = last,
            "raft: the state machine is ahead of the raft log; entries up to its applied index \
             will not be delivered"
        );
    }
    // The commit index on disk may lag (see disk.rs): what the state machine applied was
    // committed. raft-rs wants it within [log start, last index].
    let mut hard_state: HardState = rec.hard_state;
    hard_state.commit = hard_state
        .commit
        .max(start_index)
        .max(sm_index.min(last))
        .min(last);
    let raft_applied = sm_index.min(hard_state.commit).max(start_index);

    let store = MemLog::new(
        &cfg.voters,
        hard_state,
        rec.log_start,
        rec.entries,
        snapshot_producer,
    );
    let raft_cfg = raft::Config {
        id: cfg.id,
        election_tick: cfg.election_ticks,
        max_election_tick: cfg.max_election_ticks,
        heartbeat_tick: cfg.heartbeat_ticks,
        applied: raft_applied,
        max_size_per_msg: cfg.max_size_per_msg,
        max_inflight_msgs: cfg.max_inflight_msgs,
        check_quorum: true,
        pre_vote: true,
        ..Default::default()
    };
    let logger = slog_tracing::logger(cfg.id);
    let node = RawNode::new(&raft_cfg, store, &logger)
        .map_err(|e| DiskError::Refused(format!("raft config: {e}")))?;
    let seen = (node.raft.state, node.raft.leader_id, node.raft.term);
    let (inputs, inputs_rx) = mpsc::unbounded();
    let shared = Rc::new(Shared {
        id: cfg.id,
        node: RefCell::new(node),
        inputs,
        sm_applied: Cell::new(applied),
        stop: Cell::new(false),
        stopped: Cell::new(false),
        disk_error: RefCell::new(None),
        seen: Cell::new(seen),
        change_waiters: RefCell::new(Vec::new()),
    });
    let driver = Driver {
        shared: shared.clone(),
        disk: Some(disk),
        committed: committed_tx,
        transport,
        pending: BTreeMap::new(),
        delivered: sm_index,
        tick: Duration::from_millis(cfg.tick_ms.max(1)),
        compact_every: cfg.compact_every.max(1),
        snapshots_sent: Vec::new(),
    };
    Ok((RaftHandle { shared }, committed_rx, driver.run(inputs_rx)))
}

/// Upper bound on inputs applied between two `Ready`s, so a flood of messages cannot starve
/// the persistence of what they produce.
const INPUTS_PER_ROUND_MAX: usize = 4096;

struct Driver {
    shared: Rc<Shared>,
    /// `None` only while a blocking job holds it.
    disk: Option<RaftDisk>,
    committed: mpsc::UnboundedSender<Committed>,
    transport: Rc<dyn Transport>,
    /// Proposals waiting for their entry to commit: index -> (term, answer).
    pending: BTreeMap<u64, (u64, oneshot::Sender<Result<u64, ProposeError>>)>,
    /// Last index delivered (or covered by the state machine at start).
    delivered: u64,
    tick: Duration,
    compact_every: u64,
    /// Peers sent a snapshot during the current `Ready`.
    snapshots_sent: Vec<u64>,
}

enum Woken {
    Input(Option<Input>),
    Tick,
}

impl Driver {
    async fn run(mut self, mut inputs: mpsc::UnboundedReceiver<Input>) {
        let mut next_tick = Instant::now() + self.tick;
        let outcome: Result<(), DiskError> = async {
            loop {
                if self.shared.stop.get() {
                    return Ok(());
                }
                let now = Instant::now();
                let woken = if now >= next_tick {
                    Woken::Tick
                } else {
                    let wait = next_tick - now;
                    futures_lite::future::or(async { Woken::Input(inputs.next().await) }, async {
                        glommio::timer::Timer::new(wait).await;
                        Woken::Tick
                    })
                    .await
                };
                match woken {
                    Woken::Input(None) => return Ok(()), // every handle is gone
                    Woken::Input(Some(input)) => {
                        self.apply(input);
                        for _ in 1..INPUTS_PER_ROUND_MAX {
                            match inputs.try_recv() {
                                Ok(input) => self.apply(input),
                                _ => break,
                            }
                        }
                    }
                    Woken::Tick => {}
                }
                if Instant::now() >= next_tick {
                    self.shared.node.borrow_mut().tick();
                    next_tick += self.tick;
                    if next_tick < Instant::now() {
                        next_tick = Instant::now() + self.tick;
                    }
                }
                while self.shared.node.borrow().has_ready() {
                    self.handle_ready().await?;
                }
                self.maybe_compact().await?;
                self.after_round();
            }
        }
        .await;
        let fail = match outcome {
            Ok(()) => ProposeError::Stopped,
            Err(e) => {
                tracing::error!(raft_id = self.shared.id, error = %e, "raft: the disk failed; the raft node stops");
                let msg = e.to_string();
                *self.shared.disk_error.borrow_mut() = Some(msg.clone());
                ProposeError::Disk(msg)
            }
        };
        for (_, (_, done)) in std::mem::take(&mut self.pending) {
            let _ = done.send(Err(fail.clone()));
        }
        self.shared.stopped.set(true);
        self.shared.wake_change_waiters();
        tracing::info!(raft_id = self.shared.id, "raft: driver stopped");
    }

    fn apply(&mut self, input: Input) {
        match input {
            Input::Step(msg) => {
                let from = msg.from;
                let msg_type = msg.msg_type;
                if let Err(e) = self.shared.node.borrow_mut().step(msg) {
                    tracing::debug!(raft_id = self.shared.id, from, ?msg_type, error = %e, "raft: message not stepped");
                }
            }
            Input::Propose { data, done } => {
                let mut node = self.shared.node.borrow_mut();
                if node.raft.state != StateRole::Leader {
                    let leader_id = node.raft.leader_id;
                    let _ = done.send(Err(ProposeError::NotLeader { leader_id }));
                    return;
                }
                match node.propose(Vec::new(), data) {
                    Ok(()) => {
                        let index = node.raft.raft_log.last_index();
                        let term = node.raft.term;
                        self.pending.insert(index, (term, done));
                    }
                    Err(raft::Error::ProposalDropped) => {
                        let leader_id = node.raft.leader_id;
                        let answer = if node.raft.state == StateRole::Leader {
                            // A leadership transfer in progress, or the uncommitted limit.
                            ProposeError::Dropped
                        } else {
                            ProposeError::NotLeader { leader_id }
                        };
                        let _ = done.send(Err(answer));
                    }
                    Err(e) => {
                        tracing::warn!(raft_id = self.shared.id, error = %e, "raft: proposal failed");
                        let _ = done.send(Err(ProposeError::Dropped));
                    }
                }
            }
            Input::Wake => {}
        }
    }

    /// Sends `msgs`; remembers the peers sent a snapshot (reported after `advance`).
    fn send(&mut self, msgs: Vec<Message>) {
        for msg in msgs {
            if msg.msg_type == MessageType::MsgSnapshot {
                self.snapshots_sent.push(msg.to);
            }
            self.transport.send(msg);
        }
    }

    /// Runs `job` on the blocking pool with the disk, and puts the disk back.
    async fn with_disk<R: Send + 'static>(
        &mut self,
        job: impl FnOnce(&mut RaftDisk) -> R + Send + 'static,
    ) -> Result<R, DiskError> {
        let mut disk = self.disk.take().ok_or_else(|| {
            DiskError::Poisoned("the raft disk was lost by an earlier job".to_string())
        })?;
        let (disk, r) = glommio::executor()
            .spawn_blocking(move || {
                let r = job(&mut disk);
                (disk, r)
            })
            .await;
        self.disk = Some(disk);
        Ok(r)
    }

    /// Handles one `Ready`; see "The loop" in the module docs.
    async fn handle_ready(&mut self) -> Result<(), DiskError> {
        let mut ready = self.shared.node.borrow_mut().ready();

        // 1. A leader sends at once; a follower's messages come as persisted messages.
        self.send(ready.take_messages());

        // 2. Persist.
        let snapshot = if ready.snapshot().is_empty() {
            None
        } else {
            let s = ready.snapshot();
            let meta = SnapshotMeta {
                index: s.get_metadata().index,
                term: s.get_metadata().term,
            };
            Some((meta, s.data.clone()))
        };
        let entries = ready.take_entries();
        let hs = ready.hs().cloned();
        if snapshot.is_some() || !entries.is_empty() || hs.is_some() {
            let job_snapshot = snapshot.clone();
            let (entries, hs) = self
                .with_disk(move |disk| {
                    let r = (|| {
                        if let Some((meta, data)) = &job_snapshot {
                            disk.install_snapshot(*meta, data)?;
                        }
                        if !entries.is_empty() {
                            disk.append(&entries)?;
                            disk.sync()?;
                        }
                        if let Some(hs) = &hs {
                            disk.set_hard_state(hs)?;
                        }
                        Ok::<(), DiskError>(())
                    })();
                    r.map(|()| (entries, hs))
                })
                .await??;
            let mut node = self.shared.node.borrow_mut();
            let store = node.mut_store();
            if let Some((meta, _)) = &snapshot {
                store.apply_snapshot(*meta);
            }
            store.append(&entries);
            if let Some(hs) = hs {
                store.set_hard_state(hs);
            }
        }

        // 3. The snapshot goes to the state machine before any later entry.
        if let Some((meta, data)) = snapshot {
            if meta.index > self.delivered {
                self.deliver(Committed::Snapshot {
                    index: meta.index,
                    term: meta.term,
                    data: data.to_vec(),
                });
                self.delivered = meta.index;
            }
            // Proposals below the snapshot were decided by someone else's entries.
            self.settle_below(meta.index);
        }

        // 4. Votes and acknowledgements, now durable.
        self.send(ready.take_persisted_messages());

        // 5. Committed entries.
        self.deliver_entries(ready.take_committed_entries());

        // 6. Advance, and the light ready.
        let (mut light, commit) = {
            let mut node = self.shared.node.borrow_mut();
            let light = node.advance(ready);
            let commit = light.commit_index();
            (light, commit)
        };
        if let Some(commit) = commit {
            self.shared.node.borrow_mut().mut_store().set_commit(commit);
        }
        self.send(light.take_messages());
        self.deliver_entries(light.take_committed_entries());
        let mut node = self.shared.node.borrow_mut();
        node.advance_apply();
        // The transport gives no feedback: report a sent snapshot as finished, so the leader
        // probes the follower next; if the snapshot was lost, the probe is rejected and the
        // leader sends a new one.
        for to in self.snapshots_sent.drain(..) {
            node.report_snapshot(to, SnapshotStatus::Finish);
        }
        Ok(())
    }

    fn deliver(&self, c: Committed) {
        // A dropped receiver means the broker is shutting down; nothing to deliver to.
        let _ = self.committed.unbounded_send(c);
    }

    fn deliver_entries(&mut self, entries: Vec<Entry>) {
        for e in entries {
            if e.index <= self.delivered {
                continue;
            }
            self.delivered = e.index;
            // Proposals at lower indexes can only be left by a term change: settled as dropped.
            self.settle_below(e.index);
            if let Some((term, done)) = self.pending.remove(&e.index) {
                let answer = if term == e.term {
                    Ok(e.index)
                } else {
                    Err(ProposeError::Dropped)
                };
                let _ = done.send(answer);
            }
            // Empty entries (a new leader's first) are delivered too: the state machine's
            // applied index then reaches the commit index, which is what "caught up" means.
            if e.entry_type != EntryType::EntryNormal {
                continue;
            }
            self.deliver(Committed::Entry {
                index: e.index,
                term: e.term,
                data: e.data.to_vec(),
            });
        }
    }

    /// Fails the pending proposals below `index` as dropped.
    fn settle_below(&mut self, index: u64) {
        let keep = self.pending.split_off(&index);
        for (_, (_, done)) in std::mem::replace(&mut self.pending, keep) {
            let _ = done.send(Err(ProposeError::Dropped));
        }
    }

    /// Compacts the log up to the state machine's durable applied index once it is
    /// `compact_every` entries past the log's start.
    async fn maybe_compact(&mut self) -> Result<(), DiskError> {
        let (up_to, term) = {
            let node = self.shared.node.borrow();
            let store = node.store();
            // Never past what raft-rs applied (delivered) or what the disk holds.
            let up_to = self
                .shared
                .sm_applied
                .get()
                .min(node.raft.raft_log.applied)
                .min(store.last_index());
            if up_to < store.first_index() || up_to + 1 - store.first_index() < self.compact_every {
                return Ok(());
            }
            let Some(term) = store.term_of(up_to) else {
                return Ok(());
            };
            (up_to, term)
        };
        let (compacted, poisoned) = self
            .with_disk(move |disk| {
                let r = disk.compact(up_to, term);
                (r, disk.is_poisoned())
            })
            .await?;
        match compacted {
            Err(e) if poisoned => Err(e),
            Ok(()) => {
                self.shared.node.borrow_mut().mut_store().compact(up_to);
                tracing::debug!(raft_id = self.shared.id, up_to, "raft: log compacted");
                Ok(())
            }
            Err(e) => {
                tracing::warn!(raft_id = self.shared.id, error = %e, "raft: compaction failed; retrying after the next entries");
                Ok(())
            }
        }
    }

    /// Publishes role, leader and term; fails the proposals a lost leadership strands.
    fn after_round(&mut self) {
        let now = {
            let node = self.shared.node.borrow();
            (node.raft.state, node.raft.leader_id, node.raft.term)
        };
        if now.0 != StateRole::Leader && !self.pending.is_empty() {
            for (_, (_, done)) in std::mem::take(&mut self.pending) {
                let _ = done.send(Err(ProposeError::Dropped));
            }
        }
        if now != self.shared.seen.get() {
            tracing::info!(
                raft_id = self.shared.id,
                role = role_name(now.0),
                leader = now.1,
                term = now.2,
                "raft: role, leader or term changed"
            );
            self.shared.seen.set(now);
            self.shared.wake_change_waiters();
        }
    }
}
