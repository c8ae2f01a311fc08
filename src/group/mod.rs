//! Consumer groups: the coordinator state machine and the durable committed-offsets store.
//!
//! Lives on: a group lives on the shard `placement::group_owner(group_id, shards)` picks;
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

use std::io;
use std::path::Path;

use crate::placement::group_owner;

/// Moves committed offsets to the shard that coordinates each group under `shards`, when
/// the shard count changed since they were written. Runs at start-up, before any shard does,
/// single-threaded. Each move is copy-then-delete, both synced, so a crash in between leaves
/// the offsets in both stores (the next start finishes the move), never in neither.
/// Returns how many groups moved.
pub fn rehome_offsets(groups_dir: &Path, shards: usize) -> io::Result<usize> {
    let Ok(entries) = std::fs::read_dir(groups_dir) else {
        return Ok(0);
    };
    let mut dirs: Vec<(usize, std::path::PathBuf)> = entries
        .filter_map(Result::ok)
        .filter_map(|e| {
            let n = e
                .file_name()
                .to_str()?
                .strip_prefix("shard-")?
                .parse()
                .ok()?;
            Some((n, e.path()))
        })
        .collect();
    dirs.sort();
    let mut moved = 0;
    for (from, dir) in &dirs {
        let mut source = offsets::OffsetStore::open(dir)?;
        for group in source.groups() {
            let to = group_owner(&group, shards);
            if to == *from {
                continue;
            }
            let rows: Vec<(String, i32, offsets::CommittedOffset)> = source
                .group_offsets(&group)
                .map(|(t, p, c)| (t.to_string(), p, c.clone()))
                .collect();
            let mut target = offsets::OffsetStore::open(&groups_dir.join(format!("shard-{to}")))?;
            target.commit(&group, &rows)?.run()?;
            if let Some(job) = source.delete_group(&group)? {
                job.run()?;
            }
            tracing::info!(group = %group, from_shard = from, to_shard = to, "committed offsets moved to the group's new coordinator shard");
            moved += 1;
        }
    }
    Ok(moved)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offsets_follow_their_group_when_the_shard_count_changes() {
        let dir = tempfile::tempdir().unwrap();
        let groups: Vec<String> = (0..20).map(|i| format!("g{i}")).collect();
        for g in &groups {
            let owner = group_owner(g, 2);
            let mut store =
                offsets::OffsetStore::open(&dir.path().join(format!("shard-{owner}"))).unwrap();
            let c = offsets::CommittedOffset {
                offset: 42,
                leader_epoch: -1,
                metadata: None,
                commit_timestamp_ms: 1,
                expire_timestamp_ms: None,
            };
            store
                .commit(g, &[("t".to_string(), 0, c)])
                .unwrap()
                .run()
                .unwrap();
        }
        assert_eq!(rehome_offsets(dir.path(), 2).unwrap(), 0);
        let moved = rehome_offsets(dir.path(), 3).unwrap();
        assert!(moved > 0);
        for g in &groups {
            let store = offsets::OffsetStore::open(
                &dir.path().join(format!("shard-{}", group_owner(g, 3))),
            )
            .unwrap();
            assert_eq!(store.fetch(g, "t", 0).map(|c| c.offset), Some(42), "{g}");
        }
        assert_eq!(rehome_offsets(dir.path(), 3).unwrap(), 0);
    }
}
