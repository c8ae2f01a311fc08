//! Consumer groups: the coordinator state machine and the durable committed-offsets store.
//!
//! Lives on: a group lives on the shard `assignment::group_owner(group_id, shards)` picks;
//! its state and its committed offsets are touched only by that shard's executor.
//!
//! - [`state`] is the classic rebalance protocol as a pure state machine driven by requests
//!   and explicit time (`now_ms`), so it is unit-tested without sleeps.
//! - [`offsets`] is the per-shard committed-offsets log (like `__consumer_offsets`): one record
//!   per group/topic/partition commit, replayed at start, compacted as commits repeat.
//!
//! Wiring these to the Kafka APIs (FindCoordinator, JoinGroup, SyncGroup, Heartbeat,
//! LeaveGroup, OffsetCommit, OffsetFetch, DescribeGroups, ListGroups, DeleteGroups,
//! OffsetDelete) through the router is the consumer-groups issue's remaining work.

pub mod coordinator;
pub mod offsets;
pub mod state;
