//! Per-shard in-flight request memory is bounded: once a shard holds its budget of request
//! bytes, a connection waits before reading the next frame (TCP backpressure) instead of
//! buffering it, and goes on as soon as the budget frees up.

mod common;

use std::io::{Read, Write};
use std::time::Duration;

use bytes::Bytes;
use common::*;
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::{ApiKey, ProduceRequest, TopicName};
use kafka_protocol::protocol::StrBytes;

#[test]
fn a_full_in_flight_budget_holds_new_frames_back_until_it_frees() {
    let broker = Broker::start_with(1, &["--inflight-bytes-max", "1048576"]);
    // A claims a 900 KiB frame and sends only part of it: it holds 900 KiB of the 1 MiB.
    let mut a = broker.connect();
    a.write_all(&(900 * 1024i32).to_be_bytes()).expect("prefix");
    a.write_all(&[0u8; 1000]).expect("part of the frame");
    a.flush().expect("flush");
    // A round trip on another connection after A's bytes arrived: by the time it is answered
    // the shard has read A's size prefix and taken its budget (tasks run in order on the one
    // executor), so B below finds the budget taken.
    let mut c = broker.connect();
    assert!(
        try_request(
            &mut c,
            ApiKey::ApiVersions,
            3,
            &kafka_protocol::messages::ApiVersionsRequest::default()
        )
        .is_ok()
    );
    let mut b = broker.connect();
    let value = vec![7u8; 500 * 1024];
    let req = ProduceRequest::default()
        .with_acks(1)
        .with_timeout_ms(10_000)
        .with_topic_data(vec![
            TopicProduceData::default()
                .with_name(TopicName(StrBytes::from_static_str("bp")))
                .with_partition_data(vec![
                    PartitionProduceData::default()
                        .with_index(0)
                        .with_records(Some(Bytes::from(record_batch(1, &[&value])))),
                ]),
        ]);
    send_request(&mut b, ApiKey::Produce, 9, &req).expect("send produce");
    // While A holds the budget, B's 500 KiB frame is not taken: no answer comes.
    b.set_read_timeout(Some(Duration::from_millis(700)))
        .expect("timeout");
    let mut byte = [0u8; 1];
    let early = b.read(&mut byte);
    assert!(
        matches!(&early, Err(e) if e.kind() == std::io::ErrorKind::WouldBlock || e.kind() == std::io::ErrorKind::TimedOut),
        "B was answered while A held the in-flight budget: {early:?}"
    );
    // A gives up (its frame is cut short): its budget frees and B goes through.
    drop(a);
    b.set_read_timeout(Some(Duration::from_secs(20)))
        .expect("timeout");
    let mut prefix = [0u8; 4];
    b.read_exact(&mut prefix)
        .expect("B is answered once A's budget is released");
    let size = i32::from_be_bytes(prefix);
    assert!(size > 0, "response size {size}");
    broker.stop();
}
