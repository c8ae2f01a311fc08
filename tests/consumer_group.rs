//! KIP-848 consumer groups at the wire level: ConsumerGroupHeartbeat's member ids and error
//! codes, OffsetCommit/OffsetFetch v9 member epoch checks, and how DescribeGroups and
//! ListGroups answer for a consumer group (as Kafka 4.x does).

mod common;

use common::{Broker, call};
use kafka_protocol::messages::consumer_group_heartbeat_request::TopicPartitions;
use kafka_protocol::messages::create_topics_request::CreatableTopic;
use kafka_protocol::messages::offset_commit_request::{
    OffsetCommitRequestPartition, OffsetCommitRequestTopic,
};
use kafka_protocol::messages::offset_fetch_request::{
    OffsetFetchRequestGroup, OffsetFetchRequestTopics,
};
use kafka_protocol::messages::{
    ConsumerGroupHeartbeatRequest, ConsumerGroupHeartbeatResponse, CreateTopicsRequest,
    DescribeGroupsRequest, GroupId, ListGroupsRequest, OffsetCommitRequest, OffsetFetchRequest,
    TopicName,
};
use kafka_protocol::protocol::StrBytes;

const FENCED_MEMBER_EPOCH: i16 = 110;
const STALE_MEMBER_EPOCH: i16 = 113;
const UNKNOWN_MEMBER_ID: i16 = 25;
const INVALID_REQUEST: i16 = 42;
const GROUP_ID_NOT_FOUND: i16 = 69;
const INVALID_REGULAR_EXPRESSION: i16 = 128;

fn s(v: &str) -> StrBytes {
    StrBytes::from_string(v.to_string())
}

fn join(member: &str) -> ConsumerGroupHeartbeatRequest {
    ConsumerGroupHeartbeatRequest::default()
        .with_group_id(GroupId(s("g")))
        .with_member_id(s(member))
        .with_member_epoch(0)
        .with_rebalance_timeout_ms(30_000)
        .with_subscribed_topic_names(Some(vec![TopicName(s("t"))]))
        .with_topic_partitions(Some(Vec::new()))
}

fn beat(
    member: &StrBytes,
    epoch: i32,
    owned: Option<Vec<TopicPartitions>>,
) -> ConsumerGroupHeartbeatRequest {
    ConsumerGroupHeartbeatRequest::default()
        .with_group_id(GroupId(s("g")))
        .with_member_id(member.clone())
        .with_member_epoch(epoch)
        .with_rebalance_timeout_ms(-1)
        .with_topic_partitions(owned)
}

fn owned(r: &ConsumerGroupHeartbeatResponse) -> Vec<TopicPartitions> {
    r.assignment
        .as_ref()
        .map(|a| {
            a.topic_partitions
                .iter()
                .map(|tp| {
                    TopicPartitions::default()
                        .with_topic_id(tp.topic_id)
                        .with_partitions(tp.partitions.clone())
                })
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn consumer_group_heartbeat_and_offsets_at_the_wire() {
    let broker = Broker::start_with(2, &[]);
    let mut c = broker.connect();
    let created = call(
        &mut c,
        5,
        &CreateTopicsRequest::default()
            .with_topics(vec![
                CreatableTopic::default()
                    .with_name(TopicName(s("t")))
                    .with_num_partitions(4)
                    .with_replication_factor(1),
            ])
            .with_timeout_ms(10_000),
    );
    assert_eq!(created.topics[0].error_code, 0);

    // v1: the client names itself; an empty member id is refused.
    let r = call(&mut c, 1, &join(""));
    assert_eq!(r.error_code, INVALID_REQUEST, "{r:?}");
    // v0: the coordinator names a member that joins without an id.
    let a = call(&mut c, 0, &join(""));
    assert_eq!(a.error_code, 0, "{a:?}");
    let a_id = a.member_id.clone().expect("a member id");
    assert!(!a_id.is_empty() && a.member_epoch >= 1);
    assert_eq!(
        a.heartbeat_interval_ms, 5_000,
        "the broker's default interval"
    );
    let parts: i32 = a
        .assignment
        .as_ref()
        .map(|x| {
            x.topic_partitions
                .iter()
                .map(|t| t.partitions.len() as i32)
                .sum()
        })
        .unwrap_or(0);
    assert_eq!(parts, 4);
    // Bad regular expression; unknown member.
    let bad = join("m2").with_subscribed_topic_regex(Some(s("(")));
    assert_eq!(call(&mut c, 1, &bad).error_code, INVALID_REGULAR_EXPRESSION);
    let r = call(&mut c, 1, &beat(&s("nobody"), 3, None));
    assert_eq!((r.error_code, r.member_epoch), (UNKNOWN_MEMBER_ID, -1));

    // OffsetCommit v9 with the member's epoch is taken; a stale one is STALE_MEMBER_EPOCH;
    // v8 from a member of a consumer group is UNSUPPORTED_VERSION.
    let commit = |epoch: i32| {
        OffsetCommitRequest::default()
            .with_group_id(GroupId(s("g")))
            .with_generation_id_or_member_epoch(epoch)
            .with_member_id(a_id.clone())
            .with_topics(vec![
                OffsetCommitRequestTopic::default()
                    .with_name(TopicName(s("t")))
                    .with_partitions(vec![
                        OffsetCommitRequestPartition::default()
                            .with_partition_index(0)
                            .with_committed_offset(7),
                    ]),
            ])
    };
    let code =
        |r: kafka_protocol::messages::OffsetCommitResponse| r.topics[0].partitions[0].error_code;
    assert_eq!(code(call(&mut c, 9, &commit(a.member_epoch))), 0);
    assert_eq!(
        code(call(&mut c, 9, &commit(a.member_epoch - 1))),
        STALE_MEMBER_EPOCH
    );
    assert_eq!(code(call(&mut c, 8, &commit(a.member_epoch))), 35);
    // OffsetFetch v9: the member's epoch, a stale one, and no member at all (admin tools).
    let fetch = |member: Option<StrBytes>, epoch: i32| {
        OffsetFetchRequest::default().with_groups(vec![
            OffsetFetchRequestGroup::default()
                .with_group_id(GroupId(s("g")))
                .with_member_id(member)
                .with_member_epoch(epoch)
                .with_topics(Some(vec![
                    OffsetFetchRequestTopics::default()
                        .with_name(TopicName(s("t")))
                        .with_partition_indexes(vec![0]),
                ])),
        ])
    };
    let f = call(&mut c, 9, &fetch(Some(a_id.clone()), a.member_epoch));
    assert_eq!(f.groups[0].error_code, 0);
    assert_eq!(f.groups[0].topics[0].partitions[0].committed_offset, 7);
    let f = call(&mut c, 9, &fetch(Some(a_id.clone()), a.member_epoch + 1));
    assert_eq!(f.groups[0].error_code, STALE_MEMBER_EPOCH);
    let f = call(&mut c, 9, &fetch(None, -1));
    assert_eq!(f.groups[0].topics[0].partitions[0].committed_offset, 7);

    // A second member: a revokes half at its old epoch, then moves on; an epoch from the
    // future is fenced.
    let b = call(&mut c, 1, &join("member-b"));
    assert_eq!(b.error_code, 0);
    let r = call(&mut c, 1, &beat(&a_id, a.member_epoch, None));
    assert_eq!(r.member_epoch, a.member_epoch, "still revoking");
    let kept = owned(&r);
    assert_eq!(kept.iter().map(|t| t.partitions.len()).sum::<usize>(), 2);
    let r = call(&mut c, 1, &beat(&a_id, a.member_epoch, Some(kept)));
    assert!(r.member_epoch > a.member_epoch, "{r:?}");
    let r = call(&mut c, 1, &beat(&a_id, r.member_epoch + 5, None));
    assert_eq!(r.error_code, FENCED_MEMBER_EPOCH);

    // DescribeGroups: v6 refuses a consumer group, v5 sees it Dead with no members.
    let d = call(
        &mut c,
        6,
        &DescribeGroupsRequest::default().with_groups(vec![GroupId(s("g"))]),
    );
    assert_eq!(d.groups[0].error_code, GROUP_ID_NOT_FOUND);
    assert_eq!(
        d.groups[0].error_message.as_deref(),
        Some("Group g is not a classic group.")
    );
    let d = call(
        &mut c,
        5,
        &DescribeGroupsRequest::default().with_groups(vec![GroupId(s("g"))]),
    );
    assert_eq!(
        (d.groups[0].error_code, d.groups[0].group_state.as_str()),
        (0, "Dead")
    );
    assert!(d.groups[0].members.is_empty());
    // ListGroups v5: its type, and the type filter.
    let l = call(&mut c, 5, &ListGroupsRequest::default());
    let g = l
        .groups
        .iter()
        .find(|g| g.group_id.as_str() == "g")
        .expect("listed");
    assert_eq!(g.group_type.as_str(), "consumer");
    let l = call(
        &mut c,
        5,
        &ListGroupsRequest::default().with_types_filter(vec![s("classic")]),
    );
    assert!(l.groups.iter().all(|g| g.group_id.as_str() != "g"));
}
