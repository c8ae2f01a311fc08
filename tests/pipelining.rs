//! Requests pipelined on one connection: they take effect in the order sent and are answered
//! in that order, even when an acks=all produce is still waiting for its fdatasync while the
//! requests behind it run; a frame that does not decode still gets the answers before it.

mod common;

use std::io::Write;

use common::*;
use kafka_protocol::messages::create_topics_request::CreatableTopic;
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::{
    ApiKey, ApiVersionsRequest, ApiVersionsResponse, CreateTopicsRequest, MetadataRequest,
    MetadataResponse, ProduceRequest, ProduceResponse, TopicName,
};
use kafka_protocol::protocol::StrBytes;

const TOPIC: &str = "piped";
const PARTITIONS: i32 = 4;

fn name() -> TopicName {
    TopicName(StrBytes::from_static_str(TOPIC))
}

fn create_topic(broker: &Broker) {
    let mut s = broker.connect();
    let req = CreateTopicsRequest::default()
        .with_topics(vec![
            CreatableTopic::default()
                .with_name(name())
                .with_num_partitions(PARTITIONS)
                .with_replication_factor(1),
        ])
        .with_timeout_ms(10_000);
    let resp = call(&mut s, 5, &req);
    assert_eq!(resp.topics[0].error_code, 0, "{resp:?}");
}

/// One produce to every partition, `records` records each.
fn produce(acks: i16, records: usize, tag: usize) -> ProduceRequest {
    let values: Vec<Vec<u8>> = (0..records)
        .map(|i| format!("req-{tag}-rec-{i}").into_bytes())
        .collect();
    let refs: Vec<&[u8]> = values.iter().map(Vec::as_slice).collect();
    let partitions = (0..PARTITIONS)
        .map(|p| {
            PartitionProduceData::default()
                .with_index(p)
                .with_records(Some(record_batch(1_700_000_000_000, &refs).into()))
        })
        .collect();
    ProduceRequest::default()
        .with_acks(acks)
        .with_timeout_ms(10_000)
        .with_topic_data(vec![
            TopicProduceData::default()
                .with_name(name())
                .with_partition_data(partitions),
        ])
}

/// What a pipelined request expects back.
enum Sent {
    Produce { corr: i32, records: i64 },
    Metadata { corr: i32 },
    ApiVersions { corr: i32 },
}

/// Writes every frame in one go (the broker sees them back to back), then reads the answers.
fn pipeline(s: &mut std::net::TcpStream, frames: &[Vec<u8>]) {
    let mut out = Vec::new();
    for body in frames {
        out.extend_from_slice(&(body.len() as i32).to_be_bytes());
        out.extend_from_slice(body);
    }
    s.write_all(&out).expect("write pipelined frames");
}

fn check_answers(s: &mut std::net::TcpStream, sent: &[Sent]) {
    // Offsets per partition must follow request order exactly: request k starts where
    // request k-1 ended.
    let mut next = vec![None::<i64>; PARTITIONS as usize];
    for (k, want) in sent.iter().enumerate() {
        match want {
            Sent::Produce { corr, records } => {
                let (got, body) = read_response(s, ApiKey::Produce, 9).expect("produce answer");
                assert_eq!(got, *corr, "answer {k} out of order");
                let resp: ProduceResponse = decode_body(body, 9);
                for p in &resp.responses[0].partition_responses {
                    assert_eq!(p.error_code, 0, "request {k}: {p:?}");
                    let slot = &mut next[p.index as usize];
                    if let Some(expected) = *slot {
                        assert_eq!(
                            p.base_offset, expected,
                            "request {k} partition {}: appended out of order",
                            p.index
                        );
                    }
                    *slot = Some(p.base_offset + records);
                }
            }
            Sent::Metadata { corr } => {
                let (got, body) = read_response(s, ApiKey::Metadata, 9).expect("metadata");
                assert_eq!(got, *corr, "answer {k} out of order");
                let resp: MetadataResponse = decode_body(body, 9);
                assert_eq!(resp.topics.len(), 1);
            }
            Sent::ApiVersions { corr } => {
                let (got, body) = read_response(s, ApiKey::ApiVersions, 3).expect("versions");
                assert_eq!(got, *corr, "answer {k} out of order");
                let resp: ApiVersionsResponse = decode_body(body, 3);
                assert_eq!(resp.error_code, 0);
            }
        }
    }
}

fn mixed_pipeline(broker: &Broker, acks: i16) {
    let mut s = broker.connect();
    let (mut frames, mut sent) = (Vec::new(), Vec::new());
    for k in 0..60 {
        let corr = next_correlation_id();
        match k % 10 {
            3 => {
                let req = MetadataRequest::default().with_topics(None);
                frames.push(encode_request(ApiKey::Metadata, 9, corr, &req).to_vec());
                sent.push(Sent::Metadata { corr });
            }
            7 => {
                let req = ApiVersionsRequest::default();
                frames.push(encode_request(ApiKey::ApiVersions, 3, corr, &req).to_vec());
                sent.push(Sent::ApiVersions { corr });
            }
            _ => {
                let records = 1 + (k % 5);
                let req = produce(acks, records, k);
                frames.push(encode_request(ApiKey::Produce, 9, corr, &req).to_vec());
                sent.push(Sent::Produce {
                    corr,
                    records: records as i64,
                });
            }
        }
    }
    pipeline(&mut s, &frames);
    check_answers(&mut s, &sent);
}

#[test]
fn pipelined_requests_keep_their_order() {
    let broker = Broker::start_with(2, &[]);
    create_topic(&broker);
    mixed_pipeline(&broker, -1);
    mixed_pipeline(&broker, 1);
    broker.stop();
}

#[test]
fn one_request_at_a_time_still_works() {
    let broker = Broker::start_with(2, &["--pipeline-requests-max", "1"]);
    create_topic(&broker);
    mixed_pipeline(&broker, -1);
    broker.stop();
}

#[test]
fn answers_before_a_bad_frame_are_written_then_the_connection_closes() {
    let broker = Broker::start_with(2, &[]);
    create_topic(&broker);
    let mut s = broker.connect();
    let (mut frames, mut sent) = (Vec::new(), Vec::new());
    for k in 0..5 {
        let corr = next_correlation_id();
        frames.push(encode_request(ApiKey::Produce, 9, corr, &produce(-1, 2, k)).to_vec());
        sent.push(Sent::Produce { corr, records: 2 });
    }
    // A Produce v9 header followed by bytes that are not a Produce request.
    let mut garbage = encode_header(ApiKey::Produce as i16, 9, next_correlation_id(), 2);
    garbage.extend_from_slice(&[0xff; 7]);
    frames.push(garbage);
    pipeline(&mut s, &frames);
    check_answers(&mut s, &sent);
    assert_closed(&mut s, "after an undecodable frame");
    broker.stop();
}
