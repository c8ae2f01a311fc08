//! Idempotent producers against a real broker process, on the wire: InitProducerId hands out
//! ids that are never reused (across a kill -9 too), a retried batch is answered with its
//! original offsets and not written again (after a kill -9 and restart too), a sequence gap is
//! OUT_OF_ORDER_SEQUENCE_NUMBER and a stale epoch INVALID_PRODUCER_EPOCH.

mod common;

use std::net::TcpStream;

use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::produce_response::PartitionProduceResponse;
use kafka_protocol::messages::{
    ApiKey, InitProducerIdRequest, InitProducerIdResponse, ProduceRequest, ProduceResponse,
    ProducerId, TopicName, TransactionalId,
};
use kafka_protocol::protocol::StrBytes;

use common::*;

const NONE: i16 = 0;
const INVALID_REQUEST: i16 = 42;
const OUT_OF_ORDER_SEQUENCE_NUMBER: i16 = 45;
const INVALID_PRODUCER_EPOCH: i16 = 47;
const TOPIC: &str = "idem";
const PRODUCE_VERSION: i16 = 9;

/// A batch of `n` records from producer `pid` at `epoch`, from sequence `seq`.
fn batch(pid: i64, epoch: i16, seq: i32, n: usize, tag: &str) -> Vec<u8> {
    let values: Vec<Vec<u8>> = (0..n).map(|i| format!("{tag}-{i}").into_bytes()).collect();
    let refs: Vec<&[u8]> = values.iter().map(Vec::as_slice).collect();
    let mut b = record_batch(1_700_000_000_000, &refs);
    b[43..51].copy_from_slice(&pid.to_be_bytes());
    b[51..53].copy_from_slice(&epoch.to_be_bytes());
    b[53..57].copy_from_slice(&seq.to_be_bytes());
    fix_crc(&mut b);
    b
}

fn produce_request(batch: &[u8]) -> ProduceRequest {
    ProduceRequest::default()
        .with_acks(-1)
        .with_timeout_ms(10_000)
        .with_topic_data(vec![
            TopicProduceData::default()
                .with_name(TopicName(StrBytes::from_static_str(TOPIC)))
                .with_partition_data(vec![
                    PartitionProduceData::default()
                        .with_index(0)
                        .with_records(Some(batch.to_vec().into())),
                ]),
        ])
}

fn partition_answer(r: ProduceResponse) -> PartitionProduceResponse {
    r.responses[0].partition_responses[0].clone()
}

/// (error code, base offset) of a produce of `batch`.
fn produce(s: &mut TcpStream, batch: &[u8]) -> (i16, i64) {
    let p = partition_answer(call(s, PRODUCE_VERSION, &produce_request(batch)));
    (p.error_code, p.base_offset)
}

fn init(s: &mut TcpStream, version: i16, pid: i64, epoch: i16) -> InitProducerIdResponse {
    let req = InitProducerIdRequest::default()
        .with_transactional_id(None)
        .with_transaction_timeout_ms(60_000)
        .with_producer_id(ProducerId(pid))
        .with_producer_epoch(epoch);
    call(s, version, &req)
}

/// The log end: where a non-idempotent batch lands.
fn log_end(s: &mut TcpStream, tag: &str) -> i64 {
    let (code, base) = produce(s, &batch(-1, -1, -1, 1, tag));
    assert_eq!(code, NONE);
    base
}

#[test]
fn init_producer_id_hands_out_fresh_ids_and_bumps_epochs() {
    let broker = Broker::start_with(2, &[]);
    let mut seen = Vec::new();
    for version in 0..=5 {
        let mut s = broker.connect();
        let r = init(&mut s, version, -1, -1);
        assert_eq!(
            (r.error_code, r.producer_epoch),
            (NONE, 0),
            "v{version}: {r:?}"
        );
        assert!(r.producer_id.0 >= 0);
        seen.push(r.producer_id.0);
    }
    let mut dedup = seen.clone();
    dedup.sort_unstable();
    dedup.dedup();
    assert_eq!(dedup.len(), seen.len(), "ids handed out twice: {seen:?}");

    // KIP-360: a producer that names its id and epoch gets the next epoch of the same id.
    let mut s = broker.connect();
    let r = init(&mut s, 4, seen[0], 3);
    assert_eq!(
        (r.error_code, r.producer_id.0, r.producer_epoch),
        (NONE, seen[0], 4)
    );
    // At the last epoch it gets a fresh id instead.
    let r = init(&mut s, 4, seen[0], i16::MAX);
    assert_eq!(r.error_code, NONE);
    assert_eq!(r.producer_epoch, 0);
    assert!(!seen.contains(&r.producer_id.0), "{r:?}");
    seen.push(r.producer_id.0);

    // A transactional id gets an id of its own from the same blocks (its coordinator's
    // answers are tested in tests/transactions.rs).
    let req = InitProducerIdRequest::default()
        .with_transactional_id(Some(TransactionalId(StrBytes::from_static_str("tx"))))
        .with_transaction_timeout_ms(60_000)
        .with_producer_id(ProducerId(-1))
        .with_producer_epoch(-1);
    let r: InitProducerIdResponse = call(&mut s, 4, &req);
    assert_eq!((r.error_code, r.producer_epoch), (NONE, 0), "{r:?}");
    assert!(!seen.contains(&r.producer_id.0), "{r:?}");
    seen.push(r.producer_id.0);
    let r: InitProducerIdResponse = call(
        &mut s,
        4,
        &req.with_transactional_id(Some(TransactionalId(StrBytes::default()))),
    );
    assert_eq!(
        r.error_code, INVALID_REQUEST,
        "empty transactional id: {r:?}"
    );

    // After a crash no id is handed out again: the next block starts past every block
    // handed out before.
    let dir = broker.kill_and_keep();
    let broker = Broker::start_in(dir, 2, &[]);
    for _ in 0..4 {
        let mut s = broker.connect();
        let r = init(&mut s, 4, -1, -1);
        assert_eq!(r.error_code, NONE);
        assert!(
            seen.iter().all(|&old| r.producer_id.0 > old),
            "id {} reused or below one handed out before the crash ({seen:?})",
            r.producer_id.0
        );
    }
    broker.stop();
}

#[test]
fn retries_are_deduplicated_gaps_and_stale_epochs_refused_across_a_crash() {
    let broker = Broker::start();
    let mut s = broker.connect();
    let r = init(&mut s, 4, -1, -1);
    assert_eq!(r.error_code, NONE);
    let pid = r.producer_id.0;

    let first = batch(pid, 0, 0, 3, "a");
    assert_eq!(produce(&mut s, &first), (NONE, 0));
    // The same batch again (a retry after a lost answer): its original offset, not written.
    assert_eq!(produce(&mut s, &first), (NONE, 0));
    assert_eq!(log_end(&mut s, "plain-1"), 3, "the retry was written again");
    let second = batch(pid, 0, 3, 2, "b");
    assert_eq!(produce(&mut s, &second), (NONE, 4));
    assert_eq!(
        produce(&mut s, &first),
        (NONE, 0),
        "retry of an older batch"
    );

    // A gap: sequence 6 after 3..=4.
    let (code, base) = produce(&mut s, &batch(pid, 0, 6, 1, "gap"));
    assert_eq!((code, base), (OUT_OF_ORDER_SEQUENCE_NUMBER, -1));

    // Two copies of one batch pipelined back to back, so they can share one write: the
    // second is answered with the first's offsets and written once.
    let third = batch(pid, 0, 5, 2, "c");
    let corrs: Vec<i32> = (0..2)
        .map(|_| {
            send_request(
                &mut s,
                ApiKey::Produce,
                PRODUCE_VERSION,
                &produce_request(&third),
            )
            .expect("send")
        })
        .collect();
    for corr in corrs {
        let (got, body) = read_response(&mut s, ApiKey::Produce, PRODUCE_VERSION).expect("read");
        assert_eq!(got, corr);
        let p = partition_answer(decode_body(body, PRODUCE_VERSION));
        assert_eq!((p.error_code, p.base_offset), (NONE, 6));
    }
    assert_eq!(log_end(&mut s, "plain-2"), 8);

    // The producer bumps its epoch (KIP-360): sequence 0 again; the old epoch is now stale.
    let bumped = init(&mut s, 4, pid, 0);
    assert_eq!((bumped.producer_id.0, bumped.producer_epoch), (pid, 1));
    let (code, _) = produce(&mut s, &batch(pid, 1, 7, 1, "new-epoch-not-at-0"));
    assert_eq!(code, OUT_OF_ORDER_SEQUENCE_NUMBER);
    let fourth = batch(pid, 1, 0, 1, "d");
    assert_eq!(produce(&mut s, &fourth), (NONE, 9));
    let (code, _) = produce(&mut s, &batch(pid, 0, 7, 1, "zombie"));
    assert_eq!(code, INVALID_PRODUCER_EPOCH);

    // kill -9: the state comes back from the log, and the retry is still deduplicated.
    drop(s);
    let dir = broker.kill_and_keep();
    let broker = Broker::start_in(dir, 1, &[]);
    let mut s = broker.connect();
    assert_eq!(produce(&mut s, &fourth), (NONE, 9), "retry after a crash");
    let (code, _) = produce(&mut s, &batch(pid, 0, 7, 1, "zombie"));
    assert_eq!(code, INVALID_PRODUCER_EPOCH, "stale epoch after a crash");
    assert_eq!(log_end(&mut s, "plain-3"), 10);
    let fifth = batch(pid, 1, 1, 1, "e");
    assert_eq!(produce(&mut s, &fifth), (NONE, 11));

    // A clean stop writes a snapshot; the next start reads it.
    drop(s);
    let (dir, _) = broker.stop_and_keep();
    let partition_dir = dir.path().join("data").join(format!("{TOPIC}-0"));
    let mut snapshots: Vec<String> = std::fs::read_dir(&partition_dir)
        .expect("partition dir")
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|n| n.ends_with(".snapshot"))
        .collect();
    snapshots.sort();
    // One at the log end the start after the crash replayed to, one at the clean stop's.
    assert_eq!(
        snapshots,
        vec![
            format!("{:020}.snapshot", 10),
            format!("{:020}.snapshot", 12)
        ]
    );
    let broker = Broker::start_in(dir, 1, &[]);
    let mut s = broker.connect();
    assert_eq!(
        produce(&mut s, &fifth),
        (NONE, 11),
        "retry after a clean restart"
    );
    assert_eq!(produce(&mut s, &fourth), (NONE, 9));
    assert_eq!(produce(&mut s, &batch(pid, 1, 2, 1, "f")), (NONE, 12));
    broker.stop();
}

#[test]
fn idle_producer_ids_expire_in_the_housekeeping_pass() {
    let broker = Broker::start_with(
        1,
        &[
            "--producer-id-expiration-ms",
            "300",
            "--retention-check-ms",
            "50",
        ],
    );
    let mut s = broker.connect();
    let pid = init(&mut s, 4, -1, -1).producer_id.0;
    assert_eq!(produce(&mut s, &batch(pid, 0, 0, 1, "a")), (NONE, 0));
    // Known: a gap is refused.
    let gap = batch(pid, 0, 50, 1, "gap");
    assert_eq!(produce(&mut s, &gap).0, OUT_OF_ORDER_SEQUENCE_NUMBER);
    std::thread::sleep(std::time::Duration::from_millis(800));
    // Expired: the producer is unknown again, so any sequence is taken.
    assert_eq!(produce(&mut s, &gap), (NONE, 1));
    broker.stop();
}
