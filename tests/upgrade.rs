//! Upgrade of a data dir written by an older broker, through the real binary: committed
//! offsets kept by the per-shard stores of before (`__groups/shard-N`) are found by
//! OffsetFetch after the first start of this version, and again after a restart (the
//! migration runs once). And a data dir written by the single-node broker of before the
//! cluster (commit 210a87d, `tests/fixtures/single-node-210a87d.tar.gz`) opens unchanged.

mod common;

use common::{Broker, call, record_batch};
use kafka_protocol::messages::list_offsets_request::{ListOffsetsPartition, ListOffsetsTopic};
use kafka_protocol::messages::offset_fetch_request::OffsetFetchRequestTopic;
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::{
    DescribeConfigsRequest, DescribeConfigsResponse, GroupId, ListOffsetsRequest,
    ListOffsetsResponse, MetadataRequest, MetadataResponse, OffsetFetchRequest, ProduceRequest,
    ProduceResponse, TopicName,
};
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

fn latest_offsets(broker: &Broker, topic: &str) -> Vec<i64> {
    let mut s = broker.connect();
    let req = ListOffsetsRequest::default().with_topics(vec![
        ListOffsetsTopic::default()
            .with_name(TopicName(StrBytes::from_string(topic.into())))
            .with_partitions(
                (0..3)
                    .map(|p| {
                        ListOffsetsPartition::default()
                            .with_partition_index(p)
                            .with_timestamp(-1)
                    })
                    .collect(),
            ),
    ]);
    let resp: ListOffsetsResponse = call(&mut s, 6, &req);
    let mut out: Vec<(i32, i64)> = resp.topics[0]
        .partitions
        .iter()
        .map(|p| {
            assert_eq!(p.error_code, 0, "{p:?}");
            (p.partition_index, p.offset)
        })
        .collect();
    out.sort_unstable();
    out.into_iter().map(|(_, o)| o).collect()
}

/// A data dir of the single-node broker before the cluster existed: topic `legacy` (3
/// partitions, retention.ms=86400000, 8/12/10 records) and group `legacy-group` with committed
/// offsets 5/7/9. This version, started without `--voters`, serves all of it and writes on.
#[test]
fn a_single_node_data_dir_of_before_the_cluster_opens_unchanged() {
    let dir = tempfile::tempdir().expect("tempdir");
    let fixture = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/single-node-210a87d.tar.gz"
    );
    let status = std::process::Command::new("tar")
        .args(["xzf", fixture, "-C"])
        .arg(dir.path())
        .status()
        .expect("tar");
    assert!(status.success());
    let broker = Broker::start_in(dir, 2, &[]);
    let mut s = broker.connect();
    let md: MetadataResponse = call(&mut s, 12, &MetadataRequest::default().with_topics(None));
    let t = md
        .topics
        .iter()
        .find(|t| t.name.as_ref().map(|n| n.as_str()) == Some("legacy"))
        .expect("topic legacy");
    assert_eq!(t.partitions.len(), 3);
    assert!(
        t.partitions
            .iter()
            .all(|p| p.leader_id == md.brokers[0].node_id)
    );
    assert_eq!(latest_offsets(&broker, "legacy"), vec![8, 12, 10]);
    assert_eq!(
        fetch_committed(&broker, "legacy-group", "legacy"),
        vec![(0, 5), (1, 7), (2, 9)]
    );
    let configs: DescribeConfigsResponse = call(
        &mut s,
        4,
        &DescribeConfigsRequest::default().with_resources(vec![
            kafka_protocol::messages::describe_configs_request::DescribeConfigsResource::default()
                .with_resource_type(2)
                .with_resource_name(StrBytes::from_string("legacy".into()))
                .with_configuration_keys(Some(vec![StrBytes::from_string("retention.ms".into())])),
        ]),
    );
    assert_eq!(
        configs.results[0].configs[0]
            .value
            .as_ref()
            .map(|v| v.as_str()),
        Some("86400000")
    );
    let produced: ProduceResponse = call(
        &mut s,
        9,
        &ProduceRequest::default()
            .with_acks(-1)
            .with_timeout_ms(10_000)
            .with_topic_data(vec![
                TopicProduceData::default()
                    .with_name(TopicName(StrBytes::from_string("legacy".into())))
                    .with_partition_data(vec![
                        PartitionProduceData::default()
                            .with_index(0)
                            .with_records(Some(record_batch(0, &[b"new"]).into())),
                    ]),
            ]),
    );
    let p = &produced.responses[0].partition_responses[0];
    assert_eq!((p.error_code, p.base_offset), (0, 8), "{p:?}");
    drop(s);
    let (dir, _) = broker.stop_and_keep();
    let broker = Broker::start_in(dir, 2, &[]);
    assert_eq!(latest_offsets(&broker, "legacy"), vec![9, 12, 10]);
    assert_eq!(
        fetch_committed(&broker, "legacy-group", "legacy"),
        vec![(0, 5), (1, 7), (2, 9)]
    );
    broker.stop();
}
