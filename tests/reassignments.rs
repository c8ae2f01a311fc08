//! AlterPartitionReassignments on the wire: v1's `allow_replication_factor_change` (KIP-860)
//! refuses a move that changes a partition's replica count, before the controller sees it.

mod common;

use kafka_protocol::messages::alter_partition_reassignments_request::{
    ReassignablePartition, ReassignableTopic,
};
use kafka_protocol::messages::create_topics_request::CreatableTopic;
use kafka_protocol::messages::{
    AlterPartitionReassignmentsRequest, AlterPartitionReassignmentsResponse, BrokerId,
    CreateTopicsRequest, CreateTopicsResponse, TopicName,
};
use kafka_protocol::protocol::StrBytes;

use common::*;

const INVALID_REPLICATION_FACTOR: i16 = 38;

fn reassign(
    s: &mut std::net::TcpStream,
    version: i16,
    allow: bool,
    replicas: &[i32],
) -> AlterPartitionReassignmentsResponse {
    let req = AlterPartitionReassignmentsRequest::default()
        .with_timeout_ms(10_000)
        .with_allow_replication_factor_change(allow)
        .with_topics(vec![
            ReassignableTopic::default()
                .with_name(TopicName(StrBytes::from_static_str("moves")))
                .with_partitions(vec![
                    ReassignablePartition::default()
                        .with_partition_index(0)
                        .with_replicas(Some(replicas.iter().map(|b| BrokerId(*b)).collect())),
                ]),
        ]);
    call(s, version, &req)
}

fn code(r: &AlterPartitionReassignmentsResponse) -> i16 {
    r.responses[0].partitions[0].error_code
}

#[test]
fn a_replication_factor_change_is_refused_when_the_request_forbids_it() {
    let broker = Broker::start();
    let mut s = broker.connect();
    let created: CreateTopicsResponse = call(
        &mut s,
        5,
        &CreateTopicsRequest::default()
            .with_timeout_ms(10_000)
            .with_topics(vec![
                CreatableTopic::default()
                    .with_name(TopicName(StrBytes::from_static_str("moves")))
                    .with_num_partitions(1)
                    .with_replication_factor(1),
            ]),
    );
    assert_eq!(created.topics[0].error_code, 0, "{created:?}");

    // v1, not allowed: the replica count would go from 1 to 2.
    let r = reassign(&mut s, 1, false, &[0, 1]);
    assert_eq!(code(&r), INVALID_REPLICATION_FACTOR, "{r:?}");
    assert!(!r.allow_replication_factor_change);
    // Allowed (v1's default), or v0 (which cannot forbid it): the controller decides, and a
    // one-node broker has nowhere to move a replica to: a different refusal.
    for (version, allow) in [(1, true), (0, true)] {
        let r = reassign(&mut s, version, allow, &[0, 1]);
        assert_ne!(code(&r), INVALID_REPLICATION_FACTOR, "v{version}: {r:?}");
        assert_ne!(code(&r), 0, "v{version}: {r:?}");
    }
    broker.stop();
}
