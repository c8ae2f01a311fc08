//! The transaction coordinator on the wire, against a real broker process: the error codes of
//! InitProducerId with a transactional id, AddPartitionsToTxn and EndTxn (per version where
//! Kafka changed them), and Produce's checks of transactional and control batches.

mod common;

use std::net::TcpStream;

use kafka_protocol::messages::add_partitions_to_txn_request::AddPartitionsToTxnTopic;
use kafka_protocol::messages::offset_fetch_request::OffsetFetchRequestTopic;
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::txn_offset_commit_request::{
    TxnOffsetCommitRequestPartition, TxnOffsetCommitRequestTopic,
};
use kafka_protocol::messages::{
    AddOffsetsToTxnRequest, AddOffsetsToTxnResponse, AddPartitionsToTxnRequest,
    AddPartitionsToTxnResponse, EndTxnRequest, EndTxnResponse, GroupId, InitProducerIdRequest,
    InitProducerIdResponse, OffsetFetchRequest, OffsetFetchResponse, ProduceRequest,
    ProduceResponse, ProducerId, TopicName, TransactionalId, TxnOffsetCommitRequest,
    TxnOffsetCommitResponse,
};
use kafka_protocol::messages::{
    DescribeTransactionsRequest, DescribeTransactionsResponse, ListTransactionsRequest,
    ListTransactionsResponse,
};
use kafka_protocol::protocol::StrBytes;

use common::*;

const NONE: i16 = 0;
const UNKNOWN_TOPIC_OR_PARTITION: i16 = 3;
const INVALID_PRODUCER_EPOCH: i16 = 47;
const INVALID_TXN_STATE: i16 = 48;
const INVALID_PRODUCER_ID_MAPPING: i16 = 49;
const INVALID_TRANSACTION_TIMEOUT: i16 = 50;
const OPERATION_NOT_ATTEMPTED: i16 = 55;
const INVALID_RECORD: i16 = 87;
const PRODUCER_FENCED: i16 = 90;
const UNKNOWN_MEMBER_ID: i16 = 25;
const UNSTABLE_OFFSET_COMMIT: i16 = 88;
const ATTR_TRANSACTIONAL: i16 = 0x10;
const ATTR_CONTROL: i16 = 0x20;

fn txn_id() -> Option<TransactionalId> {
    Some(TransactionalId(StrBytes::from_static_str("wire-tx")))
}

fn init(s: &mut TcpStream, version: i16, timeout_ms: i32) -> InitProducerIdResponse {
    let req = InitProducerIdRequest::default()
        .with_transactional_id(txn_id())
        .with_transaction_timeout_ms(timeout_ms)
        .with_producer_id(ProducerId(-1))
        .with_producer_epoch(-1);
    call(s, version, &req)
}

/// Codes of AddPartitionsToTxn, partition by partition in request order.
fn add(s: &mut TcpStream, version: i16, pid: i64, epoch: i16, parts: &[(&str, i32)]) -> Vec<i16> {
    let topics = parts
        .iter()
        .map(|(t, p)| {
            AddPartitionsToTxnTopic::default()
                .with_name(TopicName(StrBytes::from_string(t.to_string())))
                .with_partitions(vec![*p])
        })
        .collect();
    let req = AddPartitionsToTxnRequest::default()
        .with_v3_and_below_transactional_id(txn_id().unwrap())
        .with_v3_and_below_producer_id(ProducerId(pid))
        .with_v3_and_below_producer_epoch(epoch)
        .with_v3_and_below_topics(topics);
    let r: AddPartitionsToTxnResponse = call(s, version, &req);
    r.results_by_topic_v3_and_below
        .iter()
        .flat_map(|t| {
            t.results_by_partition
                .iter()
                .map(|p| p.partition_error_code)
        })
        .collect()
}

fn end(s: &mut TcpStream, version: i16, pid: i64, epoch: i16, commit: bool) -> i16 {
    let req = EndTxnRequest::default()
        .with_transactional_id(txn_id().unwrap())
        .with_producer_id(ProducerId(pid))
        .with_producer_epoch(epoch)
        .with_committed(commit);
    let r: EndTxnResponse = call(s, version, &req);
    r.error_code
}

/// A batch of one record from `pid` at `epoch`, sequence `seq`, with extra attributes.
fn batch(pid: i64, epoch: i16, seq: i32, attributes: i16, tag: &str) -> Vec<u8> {
    let mut b = record_batch(1_700_000_000_000, &[tag.as_bytes()]);
    b[21..23].copy_from_slice(&attributes.to_be_bytes());
    b[43..51].copy_from_slice(&pid.to_be_bytes());
    b[51..53].copy_from_slice(&epoch.to_be_bytes());
    b[53..57].copy_from_slice(&seq.to_be_bytes());
    fix_crc(&mut b);
    b
}

/// The error code of a Produce of `batch` to `topic`-0 for the transactional id.
fn produce(s: &mut TcpStream, topic: &str, batch: &[u8]) -> i16 {
    let req = ProduceRequest::default()
        .with_transactional_id(txn_id())
        .with_acks(-1)
        .with_timeout_ms(10_000)
        .with_topic_data(vec![
            TopicProduceData::default()
                .with_name(TopicName(StrBytes::from_string(topic.to_string())))
                .with_partition_data(vec![
                    PartitionProduceData::default()
                        .with_index(0)
                        .with_records(Some(batch.to_vec().into())),
                ]),
        ]);
    let r: ProduceResponse = call(s, 9, &req);
    r.responses[0].partition_responses[0].error_code
}

/// AddPartitionsToTxn v4 with `verify_only`: codes partition by partition in request order.
fn verify(s: &mut TcpStream, pid: i64, epoch: i16, parts: &[(&str, i32)]) -> Vec<i16> {
    use kafka_protocol::messages::add_partitions_to_txn_request::AddPartitionsToTxnTransaction;
    let topics = parts
        .iter()
        .map(|(t, p)| {
            AddPartitionsToTxnTopic::default()
                .with_name(TopicName(StrBytes::from_string(t.to_string())))
                .with_partitions(vec![*p])
        })
        .collect();
    let req = AddPartitionsToTxnRequest::default().with_transactions(vec![
        AddPartitionsToTxnTransaction::default()
            .with_transactional_id(txn_id().unwrap())
            .with_producer_id(ProducerId(pid))
            .with_producer_epoch(epoch)
            .with_verify_only(true)
            .with_topics(topics),
    ]);
    let r: AddPartitionsToTxnResponse = call(s, 4, &req);
    assert_eq!(r.error_code, NONE, "{r:?}");
    r.results_by_transaction
        .iter()
        .flat_map(|t| t.topic_results.iter())
        .flat_map(|t| {
            t.results_by_partition
                .iter()
                .map(|p| p.partition_error_code)
        })
        .collect()
}

#[test]
fn coordinator_and_produce_answer_kafka_error_codes() {
    let broker = Broker::start_with(2, &["--transaction-max-timeout-ms", "60000"]);
    let mut s = broker.connect();
    // Two topics, auto-created by a plain produce.
    for t in ["txw-a", "txw-b"] {
        assert_eq!(produce(&mut s, t, &batch(-1, -1, -1, 0, "plain")), NONE);
    }

    assert_eq!(
        init(&mut s, 4, 60_001).error_code,
        INVALID_TRANSACTION_TIMEOUT
    );
    let first = init(&mut s, 4, 60_000);
    assert_eq!(
        (first.error_code, first.producer_epoch),
        (NONE, 0),
        "{first:?}"
    );
    let pid = first.producer_id.0;
    // A second InitProducerId fences the first epoch.
    let r = init(&mut s, 4, 60_000);
    assert_eq!(
        (r.error_code, r.producer_id.0, r.producer_epoch),
        (NONE, pid, 1)
    );

    // Stale epochs: PRODUCER_FENCED from v2 on, INVALID_PRODUCER_EPOCH before.
    assert_eq!(
        add(&mut s, 3, pid, 0, &[("txw-a", 0)]),
        vec![PRODUCER_FENCED]
    );
    assert_eq!(
        add(&mut s, 1, pid, 0, &[("txw-a", 0)]),
        vec![INVALID_PRODUCER_EPOCH]
    );
    assert_eq!(
        add(&mut s, 3, pid + 1000, 1, &[("txw-a", 0)]),
        vec![INVALID_PRODUCER_ID_MAPPING]
    );
    // An unknown partition fails the request; the others are not attempted.
    assert_eq!(
        add(&mut s, 3, pid, 1, &[("txw-a", 0), ("txw-a", 9)]),
        vec![OPERATION_NOT_ATTEMPTED, UNKNOWN_TOPIC_OR_PARTITION]
    );
    // No transaction is open yet.
    assert_eq!(end(&mut s, 3, pid, 1, true), INVALID_TXN_STATE);
    // A transactional batch to a partition not in the transaction is refused (KIP-890).
    let tx = |seq, tag| batch(pid, 1, seq, ATTR_TRANSACTIONAL, tag);
    assert_eq!(produce(&mut s, "txw-a", &tx(0, "early")), INVALID_TXN_STATE);

    assert_eq!(add(&mut s, 3, pid, 1, &[("txw-a", 0)]), vec![NONE]);
    assert_eq!(produce(&mut s, "txw-a", &tx(0, "in")), NONE);
    assert_eq!(
        produce(&mut s, "txw-b", &tx(1, "not-added")),
        INVALID_TXN_STATE
    );
    assert_eq!(
        produce(
            &mut s,
            "txw-a",
            &batch(pid, 0, 1, ATTR_TRANSACTIONAL, "old-epoch")
        ),
        INVALID_PRODUCER_EPOCH
    );
    // Clients never write markers.
    let marker = batch(pid, 1, -1, ATTR_TRANSACTIONAL | ATTR_CONTROL, "marker");
    assert_eq!(produce(&mut s, "txw-a", &marker), INVALID_RECORD);

    assert_eq!(end(&mut s, 3, pid, 0, true), PRODUCER_FENCED);
    assert_eq!(end(&mut s, 1, pid, 0, true), INVALID_PRODUCER_EPOCH);
    assert_eq!(end(&mut s, 3, pid, 1, true), NONE);
    // A retry of the commit is answered; an abort of it is not.
    assert_eq!(end(&mut s, 3, pid, 1, true), NONE);
    assert_eq!(end(&mut s, 3, pid, 1, false), INVALID_TXN_STATE);
    // After the commit the partition is no longer in a transaction.
    assert_eq!(produce(&mut s, "txw-a", &tx(1, "late")), INVALID_TXN_STATE);

    // The brokers' form (v4, KIP-890): verify only, as a partition leader asks the
    // coordinator; nothing is added.
    assert_eq!(
        verify(&mut s, pid, 1, &[("txw-a", 0)]),
        vec![INVALID_TXN_STATE]
    );
    assert_eq!(add(&mut s, 3, pid, 1, &[("txw-a", 0)]), vec![NONE]);
    assert_eq!(
        verify(&mut s, pid, 1, &[("txw-a", 0), ("txw-b", 0)]),
        vec![NONE, INVALID_TXN_STATE]
    );
    assert_eq!(
        verify(&mut s, pid, 0, &[("txw-a", 0)]),
        vec![INVALID_PRODUCER_EPOCH]
    );
    assert_eq!(
        produce(&mut s, "txw-b", &tx(1, "still-not")),
        INVALID_TXN_STATE
    );
    broker.stop();
}

fn txn_offset_commit(
    s: &mut TcpStream,
    pid: i64,
    epoch: i16,
    member: &str,
    generation: i32,
    offset: i64,
) -> i16 {
    let req = TxnOffsetCommitRequest::default()
        .with_transactional_id(txn_id().unwrap())
        .with_group_id(GroupId(StrBytes::from_static_str("wire-group")))
        .with_producer_id(ProducerId(pid))
        .with_producer_epoch(epoch)
        .with_generation_id(generation)
        .with_member_id(StrBytes::from_string(member.to_string()))
        .with_topics(vec![
            TxnOffsetCommitRequestTopic::default()
                .with_name(TopicName(StrBytes::from_static_str("txw-a")))
                .with_partitions(vec![
                    TxnOffsetCommitRequestPartition::default()
                        .with_partition_index(0)
                        .with_committed_offset(offset),
                ]),
        ]);
    let r: TxnOffsetCommitResponse = call(s, 3, &req);
    r.topics[0].partitions[0].error_code
}

/// (error code, committed offset) of txw-a-0 for the group, with require_stable.
fn fetch_stable(s: &mut TcpStream) -> (i16, i64) {
    let req = OffsetFetchRequest::default()
        .with_group_id(GroupId(StrBytes::from_static_str("wire-group")))
        .with_require_stable(true)
        .with_topics(Some(vec![
            OffsetFetchRequestTopic::default()
                .with_name(TopicName(StrBytes::from_static_str("txw-a")))
                .with_partition_indexes(vec![0]),
        ]));
    let r: OffsetFetchResponse = call(s, 7, &req);
    let p = &r.topics[0].partitions[0];
    (p.error_code, p.committed_offset)
}

#[test]
fn transactional_offset_commits_are_staged_until_the_commit_marker() {
    let broker = Broker::start_with(2, &[]);
    let mut s = broker.connect();
    assert_eq!(
        produce(&mut s, "txw-a", &batch(-1, -1, -1, 0, "plain")),
        NONE
    );
    let r = init(&mut s, 4, 60_000);
    assert_eq!(r.error_code, NONE);
    let (pid, epoch) = (r.producer_id.0, r.producer_epoch);
    let add_offsets = |s: &mut TcpStream| {
        let req = AddOffsetsToTxnRequest::default()
            .with_transactional_id(txn_id().unwrap())
            .with_producer_id(ProducerId(pid))
            .with_producer_epoch(epoch)
            .with_group_id(GroupId(StrBytes::from_static_str("wire-group")));
        let r: AddOffsetsToTxnResponse = call(s, 3, &req);
        r.error_code
    };
    // Without AddOffsetsToTxn the offsets are not taken (no marker would settle them).
    assert_eq!(
        txn_offset_commit(&mut s, pid, epoch, "", -1, 7),
        INVALID_TXN_STATE
    );
    for commit in [false, true] {
        assert_eq!(add_offsets(&mut s), NONE);
        assert_eq!(
            txn_offset_commit(&mut s, pid, epoch - 1, "", -1, 7),
            INVALID_PRODUCER_EPOCH
        );
        // KIP-447: a member the group does not know is refused.
        assert_eq!(
            txn_offset_commit(&mut s, pid, epoch, "ghost", 1, 7),
            UNKNOWN_MEMBER_ID
        );
        assert_eq!(txn_offset_commit(&mut s, pid, epoch, "", -1, 7), NONE);
        assert_eq!(fetch_stable(&mut s).0, UNSTABLE_OFFSET_COMMIT);
        assert_eq!(end(&mut s, 3, pid, epoch, commit), NONE);
        let want = if commit { 7 } else { -1 };
        assert_eq!(fetch_stable(&mut s), (NONE, want), "after commit={commit}");
    }
    broker.stop();
}

#[test]
fn describe_and_list_transactions() {
    let broker = Broker::start_with(2, &[]);
    let mut s = broker.connect();
    let r = init(&mut s, 4, 60_000);
    assert_eq!(r.error_code, NONE);
    let req = DescribeTransactionsRequest::default().with_transactional_ids(vec![
        txn_id().unwrap(),
        TransactionalId(StrBytes::from_static_str("nobody")),
    ]);
    let d: DescribeTransactionsResponse = call(&mut s, 0, &req);
    let t = &d.transaction_states;
    assert_eq!(
        (t[0].error_code, t[0].transaction_state.as_str()),
        (NONE, "Empty")
    );
    assert_eq!(t[0].producer_id, r.producer_id);
    assert_eq!(t[1].error_code, 105, "TRANSACTIONAL_ID_NOT_FOUND");
    let req = ListTransactionsRequest::default().with_state_filters(vec![
        StrBytes::from_static_str("Empty"),
        StrBytes::from_static_str("Bogus"),
    ]);
    let l: ListTransactionsResponse = call(&mut s, 0, &req);
    assert_eq!(
        l.unknown_state_filters,
        vec![StrBytes::from_static_str("Bogus")]
    );
    assert_eq!(l.transaction_states.len(), 1);
    assert_eq!(l.transaction_states[0].transactional_id, txn_id().unwrap());
    let req = ListTransactionsRequest::default()
        .with_state_filters(vec![StrBytes::from_static_str("Ongoing")]);
    let l: ListTransactionsResponse = call(&mut s, 0, &req);
    assert!(l.transaction_states.is_empty());
    broker.stop();
}
