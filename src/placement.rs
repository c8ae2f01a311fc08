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

/// The shard that keeps the usage of a client quota sensor (its user and client id, as
/// `quota::SensorKey` names them), so the connections of one client on several shards count
/// against one per-broker allowance.
pub fn quota_owner(user: &str, client_id: &str, shards: usize) -> usize {
    let n = shards.max(1) as u64;
    let h = fnv1a(user.as_bytes()) ^ fnv1a(client_id.as_bytes()).rotate_left(1);
    (h % n) as usize
}

/// The internal log that holds committed offsets and group state, named as Kafka names it.
pub const OFFSETS_TOPIC: &str = "__consumer_offsets";

/// Java's `String.hashCode` of `s`: `h = 31 * h + c` over its UTF-16 code units, wrapping.
/// Kafka places a group with it, so the same group lands on the same partition number here.
pub fn java_string_hashcode(s: &str) -> i32 {
    s.encode_utf16()
        .fold(0i32, |h, c| h.wrapping_mul(31).wrapping_add(i32::from(c)))
}

/// The partition of `__consumer_offsets` that holds `group_id`: Kafka's
/// `Utils.abs(groupId.hashCode()) % offsets.topic.num.partitions` (`Utils.abs` maps
/// `i32::MIN` to 0).
pub fn offsets_partition(group_id: &str, num_partitions: i32) -> i32 {
    let h = java_string_hashcode(group_id);
    let abs = if h == i32::MIN { 0 } else { h.abs() };
    abs % num_partitions.max(1)
}

/// The shard that coordinates consumer group `group_id` (and stores its offsets): the owner
/// of the group's `__consumer_offsets` partition. A change of the shard count moves the whole
/// partition to its new owner, so no group state has to move by itself.
pub fn group_owner(group_id: &str, offsets_partitions: i32, shards: usize) -> usize {
    partition_owner(
        OFFSETS_TOPIC,
        offsets_partition(group_id, offsets_partitions),
        shards,
    )
}

/// The internal log of transaction coordinators' state, named as Kafka names it.
pub const TXN_TOPIC: &str = "__transaction_state";

/// Whether `topic` is one of the coordinators' internal logs, written only by them.
pub fn is_coordinator_log(topic: &str) -> bool {
    topic == OFFSETS_TOPIC || topic == TXN_TOPIC
}

/// The partition of `__transaction_state` that holds `transactional_id`: Kafka's
/// `Utils.abs(transactionalId.hashCode()) % transaction.state.log.num.partitions`.
pub fn txn_partition(transactional_id: &str, num_partitions: i32) -> i32 {
    offsets_partition(transactional_id, num_partitions)
}

/// The shard that coordinates `transactional_id`: the owner of its `__transaction_state`
/// partition.
pub fn txn_owner(transactional_id: &str, txn_partitions: i32, shards: usize) -> usize {
    partition_owner(
        TXN_TOPIC,
        txn_partition(transactional_id, txn_partitions),
        shards,
    )
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

    #[test]
    fn groups_land_where_kafka_puts_them() {
        // Values of Java's "...".hashCode(), and of Kafka's partitionFor with 50 partitions.
        assert_eq!(java_string_hashcode(""), 0);
        assert_eq!(java_string_hashcode("a"), 97);
        assert_eq!(java_string_hashcode("hello"), 99_162_322);
        // Well-known Java values: "hello".hashCode() is 99162322 and
        // "polygenelubricants".hashCode() is Integer.MIN_VALUE, which Utils.abs maps to 0.
        assert_eq!(offsets_partition("hello", 50), 22);
        assert_eq!(java_string_hashcode("polygenelubricants"), i32::MIN);
        assert_eq!(offsets_partition("polygenelubricants", 50), 0);
        // A negative hash (it wraps): the absolute value picks the partition.
        assert_eq!(java_string_hashcode("my-group"), -1_906_497_762);
        assert_eq!(offsets_partition("my-group", 50), 12);
        // Characters outside the BMP count as two UTF-16 units, as in Java.
        assert_eq!(java_string_hashcode("\u{1F600}"), 0xD83D * 31 + 0xDE00);
        assert_eq!(
            group_owner("my-group", 50, 4),
            partition_owner(OFFSETS_TOPIC, 12, 4)
        );
    }
}
