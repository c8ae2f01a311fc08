//! Consumer groups: the coordinator state machine and the durable group log.
//!
//! Lives on: a group lives on the owner shard of its partition of `__consumer_offsets`
//! (`placement::group_owner(group_id, partitions, shards)`); its state and its committed
//! offsets are touched only by that shard's executor.
//!
//! - [`state`] is the classic rebalance protocol as a pure state machine driven by requests
//!   and explicit time (`now_ms`), so it is unit-tested without sleeps.
//! - [`records`] are the typed records of `__consumer_offsets`, in Kafka's key/value layouts.
//! - [`store`] keeps the committed offsets and group state of the `__consumer_offsets`
//!   partitions this shard leads, in memory, replayed from their logs when the shard
//!   becomes their leader and dropped when it stops being it.
//! - [`logs`] is how the store reaches those logs ([`logs::CoordinatorLogs`]): they are the
//!   shard's ordinary, replicated partitions, which group/ does not name.
//! - [`coordinator`] drives the state machine and writes the records.
//! - [`offsets`] is the store of earlier versions (a CRC-framed log per shard in
//!   `__groups/shard-N`), kept to read an old data dir once: [`migrate_legacy_offsets`].

pub mod consumer;
pub mod consumer_coordinator;
pub mod consumer_records;
pub mod consumer_store;
pub mod coordinator;
pub mod logs;
pub mod offsets;
pub mod records;
pub mod state;
pub mod store;

use std::fs::File;
use std::io;
use std::path::Path;

use crate::placement::offsets_partition;

/// Where earlier versions kept committed offsets: `<data>/__groups/shard-N`.
pub const LEGACY_GROUPS_DIR: &str = "__groups";
/// What the legacy directory is renamed to once migrated.
pub const MIGRATED_GROUPS_DIR: &str = "__groups.migrated";

/// Converts the per-shard offset logs of earlier versions (`<data>/__groups/shard-N`) into
/// `__consumer_offsets`: every live committed offset (with its expire timestamp), and for a
/// group the old store had seen empty, a GroupMetadata record with no members carrying when
/// it became empty, so its retention clock keeps running. Runs at start-up before any shard,
/// single-threaded. The new records are fdatasync'd before the old directory is renamed
/// `__groups.migrated` (and the rename synced), so a crash in between leaves the old
/// directory in place and the next start migrates again, which writes the same values.
/// Returns how many offsets moved; None when there was nothing to migrate.
pub fn migrate_legacy_offsets(
    data_dir: &Path,
    num_partitions: i32,
    now_ms: i64,
) -> io::Result<Option<u64>> {
    let legacy = data_dir.join(LEGACY_GROUPS_DIR);
    if !legacy.is_dir() {
        return Ok(None);
    }
    let mut shard_dirs: Vec<std::path::PathBuf> = std::fs::read_dir(&legacy)?
        .filter_map(Result::ok)
        .filter(|e| {
            e.file_name()
                .to_str()
                .is_some_and(|n| n.starts_with("shard-"))
        })
        .map(|e| e.path())
        .collect();
    shard_dirs.sort();
    let mut olds = Vec::new();
    for dir in &shard_dirs {
        olds.push(offsets::OffsetStore::open(dir)?);
    }
    let mut partitions: Vec<i32> = olds
        .iter()
        .flat_map(|o| o.groups())
        .map(|g| offsets_partition(&g, num_partitions))
        .collect();
    partitions.sort_unstable();
    partitions.dedup();
    let mut new =
        store::OffsetsLog::open_partitions(data_dir, partitions.into_iter(), num_partitions, true)?;
    let mut jobs = Vec::new();
    let mut moved = 0u64;
    for old in &olds {
        for group in old.groups() {
            let rows: Vec<(String, i32, offsets::CommittedOffset)> = old
                .group_offsets(&group)
                .map(|(t, p, c)| (t.to_string(), p, c.clone()))
                .collect();
            moved += rows.len() as u64;
            jobs.push(new.commit(&group, &rows, now_ms)?);
            if let Some(since) = old.group_empty_since(&group) {
                let empty = records::GroupMetadata {
                    protocol_type: String::new(),
                    generation: 0,
                    protocol: None,
                    leader: None,
                    current_state_timestamp_ms: since,
                    members: Vec::new(),
                };
                jobs.push(new.store_group(&group, empty, now_ms)?);
            }
        }
    }
    for job in jobs {
        new.sync_blocking(job)?;
    }
    drop(olds);
    std::fs::rename(&legacy, data_dir.join(MIGRATED_GROUPS_DIR))?;
    File::open(data_dir)?.sync_all()?;
    Ok(Some(moved))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::placement::{OFFSETS_TOPIC, partition_owner};

    fn off(offset: i64, expire: Option<i64>) -> offsets::CommittedOffset {
        offsets::CommittedOffset {
            offset,
            leader_epoch: 2,
            metadata: Some("meta".into()),
            commit_timestamp_ms: 1_000,
            expire_timestamp_ms: expire,
        }
    }

    #[test]
    fn legacy_per_shard_offsets_migrate_into_consumer_offsets() {
        let dir = tempfile::tempdir().unwrap();
        let legacy = dir.path().join(LEGACY_GROUPS_DIR);
        let groups: Vec<String> = (0..20).map(|i| format!("g{i}")).collect();
        // Written with the old store, spread over two shards as the old placement did.
        for (i, g) in groups.iter().enumerate() {
            let mut old =
                offsets::OffsetStore::open(&legacy.join(format!("shard-{}", i % 2))).unwrap();
            let rows = [
                ("t".to_string(), 0, off(i as i64, None)),
                ("u".to_string(), 1, off(100 + i as i64, Some(9_999))),
            ];
            old.commit(g, &rows).unwrap().run().unwrap();
        }
        let mut old = offsets::OffsetStore::open(&legacy.join("shard-0")).unwrap();
        old.delete_group("g0").unwrap().unwrap().run().unwrap();
        // g2 is empty since 1500: the sweep marker must carry over.
        old.expire(1_500, i64::MAX, |g| g == "g2")
            .unwrap()
            .unwrap()
            .run()
            .unwrap();
        drop(old);

        assert_eq!(
            migrate_legacy_offsets(dir.path(), 50, 5_000).unwrap(),
            Some(38)
        );
        assert!(!legacy.exists());
        assert!(dir.path().join(MIGRATED_GROUPS_DIR).is_dir());
        // Nothing left to migrate: a second start changes nothing.
        assert_eq!(migrate_legacy_offsets(dir.path(), 50, 6_000).unwrap(), None);

        // Each shard of a 3-shard broker finds the groups of the partitions it owns.
        let mut found = 0;
        for shard in 0..3 {
            let s = store::OffsetsLog::open(dir.path(), shard, 3, 50, true).unwrap();
            for (i, g) in groups.iter().enumerate() {
                let p = offsets_partition(g, 50);
                if partition_owner(OFFSETS_TOPIC, p, 3) != shard {
                    assert!(!s.has_group(g));
                    continue;
                }
                if i == 0 {
                    assert!(!s.has_group(g), "a deleted group stays deleted");
                    continue;
                }
                found += 1;
                assert_eq!(s.fetch(g, "t", 0), Some(&off(i as i64, None)), "{g}");
                let u = s.fetch(g, "u", 1).unwrap();
                assert_eq!(
                    (u.offset, u.expire_timestamp_ms),
                    (100 + i as i64, Some(9_999))
                );
                let since = if i == 2 { Some(1_500) } else { None };
                assert_eq!(s.group_empty_since(g), since, "{g}");
            }
        }
        assert_eq!(found, 19);
    }
}
