//! Spate: a Kafka-compatible message broker, thread-per-core on io_uring (glommio).
//!
//! # Data flow
//!
//! A request arrives on the connection of whichever shard accepted it (`server::connection`),
//! is decoded by slicing the frame (`protocol`), split by owning shard
//! (`placement::partition_owner`), executed where each partition lives (`shard`,
//! `storage`) through explicit messages (`router`), and the answers are merged and written
//! back in request order.
//!
//! # Ownership
//!
//! - Every partition has exactly one owning shard, a pure function of (topic, partition,
//!   shard count). Only that shard's executor touches its log.
//! - The metadata (topics, partitions, configs) is written only by the controller on shard 0,
//!   to the metadata log on the blocking pool; every shard holds a read-only cache of the
//!   topics that the controller updates by message, once the change is durable, before it
//!   answers.
//! - An idempotent producer's state in a partition (epoch, last five batches) lives in that
//!   partition on its owning shard (`storage::producers`); producer ids come from per-shard
//!   blocks that the controller makes durable in the metadata log before they are used.
//! - A client quota's usage (one user and client id, one quota kind) is counted only on the
//!   shard `placement::quota_owner` picks (`shard::quota`); connections on other shards send
//!   it their usage as a typed call, and every shard resolves quotas against its own copy of
//!   the table the controller pushes (`quota`).
//! - Nothing mutable is shared between cores on the data path. Cross-thread state is confined
//!   to `server` (start-up rendezvous, stop/drain/flush-failed flags, the broker-wide
//!   connection count at accept); fetch responses carry read-only handles to immutable segment
//!   ranges.

#![deny(clippy::unwrap_used)]
#![cfg_attr(test, allow(clippy::unwrap_used))]

pub mod auth;
pub mod cli;
pub mod client;
pub mod clock;
pub mod cluster;
pub mod config;
pub mod error;
pub mod group;
pub mod log_levels;
pub mod log_limit;
pub mod metrics;
pub mod placement;
pub mod protocol;
pub mod quota;
pub mod router;
pub mod server;
pub mod settings;
pub mod shard;
pub mod startup;
pub mod storage;
pub mod tls;
pub mod tune;
pub mod txn;
