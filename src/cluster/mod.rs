//! The cluster: several brokers as one Kafka cluster, with the metadata on an embedded Raft
//! quorum (tikv's `raft` crate, see README "Cluster").
//!
//! - [`raft`]: the quorum core: raft-rs's `RawNode` with our durable log and a driver loop.
//! - [`wire`]: frames of the controller channel (quorum messages and broker RPCs).
//! - [`placement`]: where a new topic's replicas go (pure).
//! - [`election`]: partition leaders and ISRs on fence, unfence, AlterPartition and the
//!   preferred-leader pass (pure).
//! - [`import`]: the topics of a one-node broker's data dir, imported on its first clustered
//!   start (pure).
//! - [`reassign`]: partition reassignments and leader elections on request (pure).
//! - [`view`]: what every shard knows of the cluster (brokers, controller, cluster id).
//!
//! The async shell that runs all this on shard 0 (peers, apply loop, registration and
//! heartbeats, fencing) is `shard::quorum`; this module does no I/O of its own, the raft
//! driver's blocking-pool writes aside.

pub mod election;
pub mod import;
pub mod placement;
pub mod raft;
pub mod reassign;
pub mod view;
pub mod wire;
