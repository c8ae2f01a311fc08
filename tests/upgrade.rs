//! Upgrade of a data dir written by an older broker, through the real binary: committed
//! offsets kept by the per-shard stores of before (`__groups/shard-N`) are found by
//! OffsetFetch after the first start of this version, and again after a restart (the
//! migration runs once).

mod common;

use common::{Broker, call};
use kafka_protocol::messages::offset_fetch_request::OffsetFetchRequestTopic;
use kafka_protocol::messages::{GroupId, OffsetFetchRequest, TopicName};
use kafka_protocol::protocol::StrBytes;
use spate::group::offsets::{CommittedOffset, OffsetStore};

fn fetch_committed(broker: &Broker, group: &str, topic: &str) -> Vec<(i32, i64)> {
    let mut s = broker.connect();
    let req = OffsetFetchRequest::default()
        .with_group_id(GroupId(StrBytes::from_string(group.into())))
        .with_topics(Some(vec![
            OffsetFetchRequestTopic::default()
                .with_name(TopicName(StrBytes::from_string(topic.into())))
                .with_partition_indexes(vec![0, 1, 2]),
        ]));
    let resp = call(&mut s, 5, &req);
    assert_eq!(resp.error_code, 0, "{resp:?}");
    resp.topics[0]
        .partitions
        .iter()
        .map(|p| (p.partition_index, p.committed_offset))
        .collect()
}

#[test]
fn committed_offsets_of_the_per_shard_stores_survive_the_upgrade() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    // What an older broker with two shards left behind: each group's offsets in its shard's
    // store.
    for (shard, group, offsets) in [
        (0, "billing", [(0, 11), (1, 12)]),
        (1, "audit", [(0, 7), (2, 9)]),
    ] {
        let mut store = OffsetStore::open(&data.join("__groups").join(format!("shard-{shard}")))
            .expect("store");
        let rows: Vec<(String, i32, CommittedOffset)> = offsets
            .iter()
            .map(|&(p, offset)| {
                let c = CommittedOffset {
                    offset,
                    leader_epoch: -1,
                    metadata: None,
                    commit_timestamp_ms: spate::clock::now_ms(),
                    expire_timestamp_ms: None,
                };
                ("orders".to_string(), p, c)
            })
            .collect();
        store
            .commit(group, &rows)
            .expect("commit")
            .run()
            .expect("sync");
    }
    let broker = Broker::start_in(dir, 2, &[]);
    let want = |offsets: &[(i32, i64)]| -> Vec<(i32, i64)> {
        [0, 1, 2]
            .iter()
            .map(|p| {
                (
                    *p,
                    offsets.iter().find(|(q, _)| q == p).map_or(-1, |(_, o)| *o),
                )
            })
            .collect()
    };
    assert_eq!(
        fetch_committed(&broker, "billing", "orders"),
        want(&[(0, 11), (1, 12)])
    );
    assert_eq!(
        fetch_committed(&broker, "audit", "orders"),
        want(&[(0, 7), (2, 9)])
    );
    let (dir, stderr) = broker.stop_and_keep();
    assert!(
        stderr.contains("migrated into __consumer_offsets"),
        "{stderr}"
    );
    assert!(dir.path().join("data").join("__groups.migrated").is_dir());
    assert!(!dir.path().join("data").join("__groups").exists());
    let broker = Broker::start_in(dir, 2, &[]);
    assert_eq!(
        fetch_committed(&broker, "billing", "orders"),
        want(&[(0, 11), (1, 12)])
    );
    assert_eq!(
        fetch_committed(&broker, "audit", "orders"),
        want(&[(0, 7), (2, 9)])
    );
    broker.stop();
}
