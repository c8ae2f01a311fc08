//! The embedded Raft quorum core that replicates the cluster metadata log (raft-rs 0.7 under a
//! glommio driver).
//!
//! # What lives where
//!
//! - `disk.rs`: [`RaftDisk`], the durable log, hard state and last received snapshot (sync,
//!   `Send`, written on the blocking pool, CRC-framed, torn-tail recovery, poisoned on a failed
//!   write).
//! - `storage.rs`: [`MemLog`], the in-memory mirror of the disk that raft-rs reads through
//!   `raft::Storage`; snapshots for lagging followers come from the state machine.
//! - `node.rs`: the driver ([`start`], [`RaftHandle`]): ticks, steps messages, proposes, and
//!   handles each `Ready` (send, persist on the blocking pool, deliver committed entries in
//!   order as [`Committed`]).
//! - `slog_tracing.rs`: raft-rs logs through slog; this drain forwards it to `tracing`.
//!
//! # Invariants
//!
//! - Everything runs on one glommio executor: the driver future owns the `RawNode`; handles
//!   only queue work for it (no locks, no borrow held across an `.await`).
//! - Nothing is acknowledged to a peer (persisted messages, votes) before the disk write of its
//!   `Ready` was fsync'd; committed entries are delivered once, in index order, and only after
//!   they are durable here.
//! - Membership is fixed (the voters of [`RaftConfig`]); conf-change entries never occur.

pub mod disk;
pub mod node;
pub mod slog_tracing;
pub mod storage;
#[cfg(test)]
mod tests;

pub use disk::{DiskError, RaftDisk, Recovered, SnapshotMeta};
pub use node::{
    Committed, PeerStatus, ProposeError, RaftConfig, RaftHandle, RaftStatus, Transport, start,
};
pub use storage::{MemLog, SnapshotProducer};
