//! A three-node cluster on the wire: requests for a partition sent to a broker that does not
//! lead it answer NOT_LEADER_OR_FOLLOWER, with the leader in the response where the version
//! carries it (KIP-951), and a stale leader epoch is told apart from an unknown one.

mod common;

use std::net::TcpStream;
use std::time::{Duration, Instant};

use bytes::Bytes;
use kafka_protocol::messages::create_topics_request::CreatableTopic;
use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
use kafka_protocol::messages::list_offsets_request::{ListOffsetsPartition, ListOffsetsTopic};
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::{
    BrokerId, CreateTopicsRequest, CreateTopicsResponse, DescribeClusterRequest,
    DescribeClusterResponse, FetchRequest, FetchResponse, ListOffsetsRequest, ListOffsetsResponse,
    MetadataRequest, MetadataResponse, ProduceRequest, ProduceResponse, TopicName,
};
use kafka_protocol::protocol::StrBytes;

use common::*;

const NOT_LEADER_OR_FOLLOWER: i16 = 6;
const FENCED_LEADER_EPOCH: i16 = 74;
const UNKNOWN_LEADER_EPOCH: i16 = 75;

fn name(s: &str) -> TopicName {
    TopicName(StrBytes::from_string(s.to_string()))
}

/// Three nodes, each a voter and a broker with one shard.
fn cluster() -> Vec<Broker> {
    let quorum: Vec<u16> = (0..3).map(|_| free_port()).collect();
    let voters = (0..3)
        .map(|i| format!("{}@127.0.0.1:{}", i + 1, quorum[i]))
        .collect::<Vec<_>>()
        .join(",");
    (0..3)
        .map(|i| {
            let id = (i + 1).to_string();
            let listen = format!("127.0.0.1:{}", quorum[i]);
            Broker::start_with(
                1,
                &[
                    "--node-id",
                    &id,
                    "--controller-listen",
                    &listen,
                    "--voters",
                    &voters,
                    "--controller-quorum-election-timeout-ms",
                    "500",
                    "--controller-quorum-fetch-timeout-ms",
                    "1000",
                ],
            )
        })
        .collect()
}

fn metadata(s: &mut TcpStream, topic: Option<&str>) -> MetadataResponse {
    let req = MetadataRequest::default().with_topics(topic.map(|t| {
        vec![
            kafka_protocol::messages::metadata_request::MetadataRequestTopic::default()
                .with_name(Some(name(t))),
        ]
    }));
    call(s, 12, &req)
}

fn wait_for<T>(what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn requests_to_a_broker_that_does_not_lead_answer_with_the_leader() {
    let nodes = cluster();
    let mut conns: Vec<TcpStream> = nodes.iter().map(Broker::connect).collect();
    for c in conns.iter_mut() {
        wait_for("three brokers in every node's metadata", || {
            let md = metadata(c, None);
            (md.brokers.len() == 3 && md.controller_id.0 > 0).then_some(())
        });
    }
    let d: DescribeClusterResponse = call(
        &mut conns[0],
        1,
        &DescribeClusterRequest::default().with_endpoint_type(1),
    );
    assert_eq!(d.error_code, 0);
    assert_eq!(d.brokers.len(), 3);
    assert!((1..=3).contains(&d.controller_id.0));

    let topic = "hints";
    let created: CreateTopicsResponse = call(
        &mut conns[1],
        7,
        &CreateTopicsRequest::default()
            .with_timeout_ms(20_000)
            .with_topics(vec![
                CreatableTopic::default()
                    .with_name(name(topic))
                    .with_num_partitions(6)
                    .with_replication_factor(1),
            ]),
    );
    assert_eq!(created.topics[0].error_code, 0, "{created:?}");
    // Every node learns the topic from the quorum.
    let mut leaders = Vec::new();
    for c in conns.iter_mut() {
        leaders = wait_for("the topic on every node", || {
            let md = metadata(c, Some(topic));
            let t = md.topics.first()?;
            (t.error_code == 0 && t.partitions.len() == 6).then(|| {
                t.partitions
                    .iter()
                    .map(|p| (p.partition_index, p.leader_id.0, p.leader_epoch))
                    .collect::<Vec<_>>()
            })
        });
    }
    let (partition, leader, epoch) = leaders[0];
    let other = (1..=3).find(|n| *n != leader).expect("another node");
    let s = &mut conns[(other - 1) as usize];

    // Produce v11 elsewhere: NOT_LEADER_OR_FOLLOWER, with the leader and its endpoint.
    let produce = ProduceRequest::default()
        .with_acks(1)
        .with_timeout_ms(10_000)
        .with_topic_data(vec![
            TopicProduceData::default()
                .with_name(name(topic))
                .with_partition_data(vec![
                    PartitionProduceData::default()
                        .with_index(partition)
                        .with_records(Some(Bytes::from(record_batch(0, &[b"x"])))),
                ]),
        ]);
    let r: ProduceResponse = call(s, 11, &produce);
    let p = &r.responses[0].partition_responses[0];
    assert_eq!(p.error_code, NOT_LEADER_OR_FOLLOWER, "{r:?}");
    assert_eq!(p.current_leader.leader_id, BrokerId(leader));
    assert_eq!(p.current_leader.leader_epoch, epoch);
    let endpoint = r
        .node_endpoints
        .iter()
        .find(|e| e.node_id == BrokerId(leader))
        .expect("leader endpoint");
    assert_eq!(
        endpoint.port as u16,
        nodes[(leader - 1) as usize].addr.port()
    );
    // v9 has no place for it: the error alone.
    let r: ProduceResponse = call(s, 9, &produce);
    assert_eq!(
        r.responses[0].partition_responses[0].error_code,
        NOT_LEADER_OR_FOLLOWER
    );
    // The leader takes it.
    let lead = &mut conns[(leader - 1) as usize];
    let r: ProduceResponse = call(lead, 11, &produce);
    assert_eq!(r.responses[0].partition_responses[0].error_code, 0, "{r:?}");

    // Fetch and ListOffsets elsewhere: NOT_LEADER_OR_FOLLOWER.
    let fetch = |epoch: i32| {
        FetchRequest::default()
            .with_max_wait_ms(0)
            .with_max_bytes(1 << 20)
            .with_topics(vec![
                FetchTopic::default()
                    .with_topic(name(topic))
                    .with_partitions(vec![
                        FetchPartition::default()
                            .with_partition(partition)
                            .with_current_leader_epoch(epoch)
                            .with_partition_max_bytes(1 << 20),
                    ]),
            ])
    };
    let s = &mut conns[(other - 1) as usize];
    let r: FetchResponse = call(s, 12, &fetch(-1));
    assert_eq!(
        r.responses[0].partitions[0].error_code,
        NOT_LEADER_OR_FOLLOWER
    );
    assert_eq!(
        r.responses[0].partitions[0].current_leader.leader_id,
        BrokerId(leader)
    );
    // v16 names topics by id, and adds the leader's endpoint.
    let topic_id = metadata(s, Some(topic)).topics[0].topic_id;
    let mut by_id = fetch(-1);
    by_id.topics[0].topic_id = topic_id;
    let r: FetchResponse = call(s, 16, &by_id);
    let p = &r.responses[0].partitions[0];
    assert_eq!(p.error_code, NOT_LEADER_OR_FOLLOWER);
    assert_eq!(
        (p.current_leader.leader_id, p.current_leader.leader_epoch),
        (BrokerId(leader), epoch)
    );
    let endpoint = r
        .node_endpoints
        .iter()
        .find(|e| e.node_id == BrokerId(leader))
        .expect("endpoint");
    assert_eq!(
        endpoint.port as u16,
        nodes[(leader - 1) as usize].addr.port()
    );
    let list = ListOffsetsRequest::default().with_topics(vec![
        ListOffsetsTopic::default()
            .with_name(name(topic))
            .with_partitions(vec![
                ListOffsetsPartition::default()
                    .with_partition_index(partition)
                    .with_timestamp(-1),
            ]),
    ]);
    let r: ListOffsetsResponse = call(s, 6, &list);
    assert_eq!(r.topics[0].partitions[0].error_code, NOT_LEADER_OR_FOLLOWER);

    // On the leader: the current epoch reads, a newer one is unknown, an older one fenced.
    let lead = &mut conns[(leader - 1) as usize];
    let r: FetchResponse = call(lead, 12, &fetch(epoch));
    assert_eq!(r.responses[0].partitions[0].error_code, 0, "{r:?}");
    let r: FetchResponse = call(lead, 12, &fetch(epoch + 1));
    assert_eq!(
        r.responses[0].partitions[0].error_code,
        UNKNOWN_LEADER_EPOCH
    );
    if epoch > 0 {
        let r: FetchResponse = call(lead, 12, &fetch(epoch - 1));
        assert_eq!(r.responses[0].partitions[0].error_code, FENCED_LEADER_EPOCH);
    }
    // Manual replica assignments are honoured; one naming a broker that is not there is not.
    let assign = |p: usize, b: i32| {
        kafka_protocol::messages::create_topics_request::CreatableReplicaAssignment::default()
            .with_partition_index(p as i32)
            .with_broker_ids(vec![BrokerId(b)])
    };
    let manual: CreateTopicsResponse = call(
        &mut conns[0],
        7,
        &CreateTopicsRequest::default()
            .with_timeout_ms(20_000)
            .with_topics(vec![
                CreatableTopic::default()
                    .with_name(name("manual"))
                    .with_num_partitions(-1)
                    .with_replication_factor(-1)
                    .with_assignments(
                        [3, 2, 1, 3]
                            .iter()
                            .enumerate()
                            .map(|(p, b)| assign(p, *b))
                            .collect(),
                    ),
            ]),
    );
    assert_eq!(manual.topics[0].error_code, 0, "{manual:?}");
    let placed = wait_for("the manual topic", || {
        let md = metadata(&mut conns[2], Some("manual"));
        let t = md.topics.first()?;
        (t.error_code == 0 && t.partitions.len() == 4).then(|| {
            let mut v: Vec<(i32, i32)> = t
                .partitions
                .iter()
                .map(|p| (p.partition_index, p.leader_id.0))
                .collect();
            v.sort_unstable();
            v
        })
    });
    assert_eq!(placed, vec![(0, 3), (1, 2), (2, 1), (3, 3)]);
    let bad: CreateTopicsResponse = call(
        &mut conns[0],
        7,
        &CreateTopicsRequest::default()
            .with_timeout_ms(20_000)
            .with_topics(vec![
                CreatableTopic::default()
                    .with_name(name("manual-bad"))
                    .with_num_partitions(-1)
                    .with_replication_factor(-1)
                    .with_assignments(vec![assign(0, 9)]),
            ]),
    );
    assert_eq!(bad.topics[0].error_code, 39, "{bad:?}");

    // Sent to a broker that is not the active controller, a change is forwarded with the
    // client's context: the controller's log names the client and the forwarding broker.
    let controller = metadata(&mut conns[0], None).controller_id.0;
    let via = (1..=3)
        .find(|n| *n != controller)
        .expect("a non-controller");
    let fwd: CreateTopicsResponse = call(
        &mut conns[(via - 1) as usize],
        7,
        &CreateTopicsRequest::default()
            .with_timeout_ms(20_000)
            .with_topics(vec![
                CreatableTopic::default()
                    .with_name(name("forwarded"))
                    .with_num_partitions(1)
                    .with_replication_factor(1),
            ]),
    );
    assert_eq!(fwd.topics[0].error_code, 0, "{fwd:?}");
    let log = nodes[(controller - 1) as usize].stderr();
    let line = log
        .lines()
        .find(|l| l.contains("topic created") && l.contains("topic=forwarded"))
        .unwrap_or_else(|| panic!("no creation line on the controller:\n{log}"));
    assert!(line.contains("client_id=spate-tests"), "{line}");
    assert!(line.contains(&format!("via_broker={via}")), "{line}");
    assert!(line.contains("principal=User:ANONYMOUS"), "{line}");

    drop(conns);
    for n in nodes {
        n.stop();
    }
}
