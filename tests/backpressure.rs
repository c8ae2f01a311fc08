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

/// The shard's in-flight bytes, from the metrics endpoint.
fn inflight_bytes(metrics: &str) -> u64 {
    scrape_sum(metrics, "spate_inflight_bytes")
}

/// Waits (with a deadline) until the shard holds at least `bytes` of its budget.
fn wait_inflight_at_least(metrics: &str, bytes: u64) {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let held = inflight_bytes(metrics);
        if held >= bytes {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the shard holds {held} bytes of budget, expected at least {bytes}"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn produce_of(value_bytes: usize) -> ProduceRequest {
    let value = vec![7u8; value_bytes];
    ProduceRequest::default()
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
        ])
}

#[test]
fn a_full_in_flight_budget_holds_new_frames_back_until_it_frees() {
    let metrics = format!("127.0.0.1:{}", free_port());
    let broker = Broker::start_with(
        1,
        &[
            "--inflight-bytes-max",
            "1048576",
            "--metrics-listen",
            &metrics,
        ],
    );
    // The budget is taken as a frame's bytes arrive (its buffer doubles from 16 KiB), not for
    // the size its prefix claims. A claims a 900 KiB frame and sends 700 KiB of it: its buffer
    // has grown to 900 KiB, which it holds.
    let mut a = broker.connect();
    a.write_all(&(900 * 1024i32).to_be_bytes()).expect("prefix");
    a.write_all(&vec![0u8; 700 * 1024])
        .expect("part of the frame");
    a.flush().expect("flush");
    wait_inflight_at_least(&metrics, 900 * 1024);
    // P claims 500 KiB and sends 200 KiB: it takes what is left (64 KiB of the 124), and then
    // the shard's one overshoot slot, which lets a part-read frame go on when the budget is
    // full so that part-read frames never wait for each other for ever.
    let mut p = broker.connect();
    p.write_all(&(500 * 1024i32).to_be_bytes()).expect("prefix");
    p.write_all(&vec![0u8; 200 * 1024])
        .expect("part of the frame");
    p.flush().expect("flush");
    wait_inflight_at_least(&metrics, 964 * 1024);
    // B's 500 KiB frame finds the budget full and the slot taken: it is not read, and no
    // answer comes.
    let mut b = broker.connect();
    send_request(&mut b, ApiKey::Produce, 9, &produce_of(500 * 1024)).expect("send produce");
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
    drop(p);
    broker.stop();
}

#[test]
fn large_frames_that_together_exceed_the_budget_all_complete() {
    let broker = Broker::start_with(1, &["--inflight-bytes-max", "1048576"]);
    // Three 800 KiB frames at once against a 1 MiB budget: each grows its buffer as its bytes
    // arrive, so together they fill the budget part way through. Without the overshoot slot
    // they would each wait for the others' budget for ever.
    let senders: Vec<_> = (0..3)
        .map(|_| {
            let mut s = broker.connect();
            std::thread::spawn(move || {
                let corr = next_correlation_id();
                let body = encode_request(ApiKey::Produce, 9, corr, &produce_of(800 * 1024));
                // The first half, a pause for the others to start, then the rest.
                let mut out = (body.len() as i32).to_be_bytes().to_vec();
                out.extend_from_slice(&body);
                let half = out.len() / 2;
                s.write_all(&out[..half]).expect("first half");
                std::thread::sleep(Duration::from_millis(200));
                s.write_all(&out[half..]).expect("second half");
                let (got, _) = read_response(&mut s, ApiKey::Produce, 9)
                    .expect("every large frame is answered");
                assert_eq!(got, corr);
            })
        })
        .collect();
    for t in senders {
        t.join().expect("sender");
    }
    broker.stop();
}
