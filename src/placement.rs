//! Which shard owns what: pure, deterministic functions of names and the shard count.
//!
//! The same inputs give the same owner on every shard, on every start and in every build
//! (FNV-1a, not std's randomly keyed hasher), so any shard can route a request without asking.

/// FNV-1a, 64-bit.
pub fn fnv1a(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

/// The shard that owns `topic`/`partition`. A topic's partitions go round-robin over the
/// shards from a starting shard picked by the topic's hash, so any topic with at least as many
/// partitions as shards has some on every shard.
pub fn partition_owner(topic: &str, partition: i32, shards: usize) -> usize {
    let n = shards.max(1) as u64;
    ((fnv1a(topic.as_bytes()) % n + partition.max(0) as u64) % n) as usize
}

/// The shard that coordinates consumer group `group_id` (and stores its offsets).
pub fn group_owner(group_id: &str, shards: usize) -> usize {
    (fnv1a(group_id.as_bytes()) % shards.max(1) as u64) as usize
}

/// The shard that runs the controller: the one writer of the topic catalog.
pub const CONTROLLER_SHARD: usize = 0;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deterministic_and_spread() {
        assert_eq!(fnv1a(b"a"), 0xaf63_dc4c_8601_ec8c);
        for shards in 1..8 {
            for topic in ["orders", "t", "x.y-z"] {
                let owners: Vec<usize> = (0..shards as i32)
                    .map(|p| partition_owner(topic, p, shards))
                    .collect();
                let mut sorted = owners.clone();
                sorted.sort_unstable();
                sorted.dedup();
                assert_eq!(
                    sorted.len(),
                    shards,
                    "{topic} on {shards} shards: {owners:?}"
                );
                assert_eq!(owners[0], partition_owner(topic, 0, shards));
            }
        }
    }
}
