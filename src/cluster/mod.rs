//! Cluster mode: the Raft quorum that replicates the cluster metadata (`raft/`).

pub mod raft;
