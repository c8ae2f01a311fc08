//! Error paths of the wire protocol, against a real broker process: bad frames close the
//! connection and nothing else; hostile counts and sizes do not take the broker down; Kafka
//! error codes come back where the protocol has a place for them.

mod common;

use std::net::TcpStream;
use std::thread;
use std::time::{Duration, Instant};

use bytes::Bytes;
use kafka_protocol::messages::create_topics_request::{CreatableTopic, CreatableTopicConfig};
use kafka_protocol::messages::create_topics_response::CreatableTopicResult;
use kafka_protocol::messages::delete_topics_request::DeleteTopicState;
use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
use kafka_protocol::messages::fetch_response::PartitionData;
use kafka_protocol::messages::list_offsets_request::{ListOffsetsPartition, ListOffsetsTopic};
use kafka_protocol::messages::list_offsets_response::ListOffsetsPartitionResponse;
use kafka_protocol::messages::metadata_request::MetadataRequestTopic;
use kafka_protocol::messages::metadata_response::MetadataResponseTopic;
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::produce_response::PartitionProduceResponse;
use kafka_protocol::messages::{
    ApiKey, ApiVersionsRequest, ApiVersionsResponse, CreateDelegationTokenRequest,
    CreateTopicsRequest, DeleteTopicsRequest, FetchRequest, FetchResponse, ListOffsetsRequest,
    MetadataRequest, MetadataResponse, ProduceRequest, ProduceResponse, TopicName,
};
use kafka_protocol::protocol::StrBytes;
use uuid::Uuid;

use common::*;

// Kafka error codes asserted below.
const NONE: i16 = 0;
const OFFSET_OUT_OF_RANGE: i16 = 1;
const CORRUPT_MESSAGE: i16 = 2;
const UNKNOWN_TOPIC_OR_PARTITION: i16 = 3;
const MESSAGE_TOO_LARGE: i16 = 10;
const INVALID_TOPIC_EXCEPTION: i16 = 17;
const INVALID_REQUIRED_ACKS: i16 = 21;
const UNSUPPORTED_VERSION: i16 = 35;
const TOPIC_ALREADY_EXISTS: i16 = 36;
const INVALID_PARTITIONS: i16 = 37;
const INVALID_REPLICATION_FACTOR: i16 = 38;
const INVALID_CONFIG: i16 = 40;
const UNSUPPORTED_FOR_MESSAGE_FORMAT: i16 = 43;
const UNKNOWN_TOPIC_ID: i16 = 100;

// ---------------------------------------------------------------------------------------------
// Helpers

fn name(s: &str) -> TopicName {
    TopicName(StrBytes::from_string(s.to_string()))
}

fn create_topics_v(
    s: &mut TcpStream,
    version: i16,
    topics: Vec<CreatableTopic>,
    validate_only: bool,
) -> Vec<CreatableTopicResult> {
    let req = CreateTopicsRequest::default()
        .with_topics(topics)
        .with_timeout_ms(10_000)
        .with_validate_only(validate_only);
    call(s, version, &req).topics
}

fn topic_spec(topic: &str, partitions: i32, replication_factor: i16) -> CreatableTopic {
    CreatableTopic::default()
        .with_name(name(topic))
        .with_num_partitions(partitions)
        .with_replication_factor(replication_factor)
}

fn create_topic(s: &mut TcpStream, topic: &str, partitions: i32) {
    let r = create_topics_v(s, 7, vec![topic_spec(topic, partitions, 1)], false);
    assert_eq!(r.len(), 1);
    assert_eq!(
        r[0].error_code, NONE,
        "create {topic}: {:?}",
        r[0].error_message
    );
}

fn produce_v(
    s: &mut TcpStream,
    version: i16,
    acks: i16,
    topic: &str,
    partition: i32,
    records: Vec<u8>,
) -> PartitionProduceResponse {
    let req = ProduceRequest::default()
        .with_acks(acks)
        .with_timeout_ms(10_000)
        .with_topic_data(vec![
            TopicProduceData::default()
                .with_name(name(topic))
                .with_partition_data(vec![
                    PartitionProduceData::default()
                        .with_index(partition)
                        .with_records(Some(Bytes::from(records))),
                ]),
        ]);
    let resp: ProduceResponse = call(s, version, &req);
    assert_eq!(resp.responses.len(), 1, "{resp:?}");
    assert_eq!(resp.responses[0].name, name(topic));
    assert_eq!(resp.responses[0].partition_responses.len(), 1, "{resp:?}");
    let p = resp.responses[0].partition_responses[0].clone();
    assert_eq!(p.index, partition);
    p
}

fn fetch_request(
    version: i16,
    topic: &str,
    topic_id: Uuid,
    parts: &[(i32, i64)],
    max_wait_ms: i32,
    min_bytes: i32,
) -> FetchRequest {
    let partitions = parts
        .iter()
        .map(|&(p, offset)| {
            FetchPartition::default()
                .with_partition(p)
                .with_fetch_offset(offset)
                .with_partition_max_bytes(1 << 20)
        })
        .collect();
    let t = FetchTopic::default().with_partitions(partitions);
    let t = if version >= 13 {
        t.with_topic_id(topic_id)
    } else {
        t.with_topic(name(topic))
    };
    FetchRequest::default()
        .with_max_wait_ms(max_wait_ms)
        .with_min_bytes(min_bytes)
        .with_max_bytes(8 << 20)
        .with_topics(vec![t])
}

/// Fetch of a single partition; returns its answer.
fn fetch_one(
    s: &mut TcpStream,
    version: i16,
    topic: &str,
    topic_id: Uuid,
    partition: i32,
    offset: i64,
) -> PartitionData {
    let req = fetch_request(version, topic, topic_id, &[(partition, offset)], 0, 0);
    let resp: FetchResponse = call(s, version, &req);
    assert_eq!(resp.error_code, NONE, "{resp:?}");
    assert_eq!(resp.responses.len(), 1, "{resp:?}");
    assert_eq!(resp.responses[0].partitions.len(), 1, "{resp:?}");
    resp.responses[0].partitions[0].clone()
}

fn records_of(p: &PartitionData) -> Vec<u8> {
    p.records.as_ref().map(|b| b.to_vec()).unwrap_or_default()
}

fn metadata_v12(s: &mut TcpStream, topic: &str) -> MetadataResponseTopic {
    let req = MetadataRequest::default()
        .with_topics(Some(vec![
            MetadataRequestTopic::default().with_name(Some(name(topic))),
        ]))
        .with_allow_auto_topic_creation(false);
    let resp: MetadataResponse = call(s, 12, &req);
    assert_eq!(resp.topics.len(), 1, "{resp:?}");
    resp.topics[0].clone()
}

fn topic_id(s: &mut TcpStream, topic: &str) -> Uuid {
    let t = metadata_v12(s, topic);
    assert_eq!(t.error_code, NONE, "{t:?}");
    assert!(
        !t.topic_id.is_nil(),
        "Metadata v12 gave topic {topic} a nil id"
    );
    t.topic_id
}

fn list_offset(
    s: &mut TcpStream,
    version: i16,
    topic: &str,
    partition: i32,
    timestamp: i64,
) -> ListOffsetsPartitionResponse {
    let req = ListOffsetsRequest::default()
        .with_replica_id((-1).into())
        .with_topics(vec![
            ListOffsetsTopic::default()
                .with_name(name(topic))
                .with_partitions(vec![
                    ListOffsetsPartition::default()
                        .with_partition_index(partition)
                        .with_timestamp(timestamp),
                ]),
        ]);
    let resp = call(s, version, &req);
    assert_eq!(resp.topics.len(), 1, "{resp:?}");
    assert_eq!(resp.topics[0].partitions.len(), 1, "{resp:?}");
    resp.topics[0].partitions[0].clone()
}

/// Appends a zero byte for an empty tagged-field section (flexible versions).
fn unsigned_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8 & 0x7f) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

/// A request frame: the right header for (key, version), then `body` verbatim.
fn raw_frame(key: ApiKey, version: i16, body: &[u8]) -> Vec<u8> {
    let mut f = encode_header(
        key as i16,
        version,
        next_correlation_id(),
        key.request_header_version(version),
    );
    f.extend_from_slice(body);
    f
}

/// Sends `frame` on a fresh connection, asserts the broker closes it, and that the broker is
/// still alive.
fn assert_frame_closes(broker: &mut Broker, frame: &[u8], context: &str) {
    let mut s = broker.connect();
    send_frame(&mut s, frame).expect("send");
    assert_closed(&mut s, context);
    broker.assert_alive(context);
}

// ---------------------------------------------------------------------------------------------
// Framing

#[test]
fn frame_larger_than_maximum_closes_connection() {
    let mut broker = Broker::start_with(1, &["--request-bytes-max", "1048576"]);
    let mut s = broker.connect();
    use std::io::Write;
    s.write_all(&(2i32 << 20).to_be_bytes())
        .expect("send prefix");
    assert_closed(&mut s, "2 MiB size prefix with a 1 MiB maximum");
    broker.assert_alive("an oversized frame");

    // A frame just under the limit is read in full (and answered: it is a valid request
    // padded with bytes the decoder does not look at).
    let mut s = broker.connect();
    let mut frame =
        encode_request(ApiKey::ApiVersions, 0, 4242, &ApiVersionsRequest::default()).to_vec();
    frame.resize(1_048_576, 0);
    send_frame(&mut s, &frame).expect("send");
    let (corr, body) = read_response(&mut s, ApiKey::ApiVersions, 0).expect("response");
    assert_eq!(corr, 4242);
    let r: ApiVersionsResponse = decode_body(body, 0);
    assert_eq!(r.error_code, NONE);
    broker.stop();
}

#[test]
fn negative_size_prefix_closes_connection() {
    let mut broker = Broker::start();
    let mut s = broker.connect();
    use std::io::Write;
    s.write_all(&(-1i32).to_be_bytes()).expect("send");
    assert_closed(&mut s, "size prefix -1");
    let mut s = broker.connect();
    s.write_all(&i32::MIN.to_be_bytes()).expect("send");
    assert_closed(&mut s, "size prefix i32::MIN");
    broker.assert_alive("negative size prefixes");
    broker.stop();
}

#[test]
fn truncated_request_closes_connection() {
    let mut broker = Broker::start();
    let mut s = broker.connect();
    use std::io::Write;
    let mut bytes = 100i32.to_be_bytes().to_vec();
    bytes.extend(
        raw_frame(ApiKey::Metadata, 1, &[0, 0, 0, 1, 0, 3])
            .iter()
            .take(20),
    );
    s.write_all(&bytes).expect("send");
    shutdown_write(&s);
    assert_closed(&mut s, "100-byte frame cut after 20 bytes");
    broker.assert_alive("a truncated request");

    // Cut inside the size prefix itself.
    let mut s = broker.connect();
    s.write_all(&[0, 0]).expect("send");
    shutdown_write(&s);
    assert_closed(&mut s, "connection closed inside the size prefix");
    broker.assert_alive("a truncated size prefix");
    broker.stop();
}

#[test]
fn undecodable_body_closes_connection() {
    let mut broker = Broker::start();
    // CreateTopics v2: one topic whose name claims 5 bytes but has 2, then nothing.
    let frame = raw_frame(ApiKey::CreateTopics, 2, &[0, 0, 0, 1, 0, 5, b'a', b'b']);
    assert_frame_closes(&mut broker, &frame, "garbage CreateTopics body");
    // A frame shorter than a request header.
    assert_frame_closes(&mut broker, &[0, 3, 0], "3-byte frame");
    // Empty frame.
    assert_frame_closes(&mut broker, &[], "empty frame");
    // Header with a client id longer than the frame.
    let mut f = vec![0, 3, 0, 1, 0, 0, 0, 9];
    f.extend_from_slice(&[0x7f, 0xff, b'x']);
    assert_frame_closes(&mut broker, &f, "client id longer than the frame");
    broker.stop();
}

#[test]
fn unknown_api_key_closes_connection() {
    let mut broker = Broker::start();
    let mut frame = encode_header(9999, 0, next_correlation_id(), 1);
    frame.extend_from_slice(&[0; 16]);
    assert_frame_closes(&mut broker, &frame, "API key 9999");
    let mut frame = encode_header(-1, 0, next_correlation_id(), 1);
    frame.extend_from_slice(&[0; 16]);
    assert_frame_closes(&mut broker, &frame, "API key -1");
    broker.stop();
}

#[test]
fn unimplemented_api_closes_connection() {
    let mut broker = Broker::start();
    // CreateDelegationToken (key 38) is a real Kafka API this broker does not implement.
    let frame = encode_request(
        ApiKey::CreateDelegationToken,
        2,
        next_correlation_id(),
        &CreateDelegationTokenRequest::default(),
    );
    assert_frame_closes(&mut broker, &frame, "CreateDelegationToken v2");
    broker.stop();
}

#[test]
fn api_versions_of_unknown_version_is_answered_in_v0() {
    let mut broker = Broker::start();
    let mut s = broker.connect();
    let corr = next_correlation_id();
    // The header of an unknown version is read as v2 by newer clients; the broker must only
    // look at the fixed part (key, version, correlation id).
    let mut frame = encode_header(ApiKey::ApiVersions as i16, 99, corr, 2);
    frame.extend_from_slice(&[0, 0, 0, 0, 0, 0]);
    send_frame(&mut s, &frame).expect("send");
    let (got, body) = read_response(&mut s, ApiKey::ApiVersions, 0).expect("response");
    assert_eq!(got, corr, "correlation id");
    let r: ApiVersionsResponse = decode_body(body, 0);
    assert_eq!(r.error_code, UNSUPPORTED_VERSION, "{r:?}");
    assert!(!r.api_keys.is_empty(), "no API ranges in {r:?}");
    let av = r
        .api_keys
        .iter()
        .find(|k| k.api_key == ApiKey::ApiVersions as i16)
        .expect("ApiVersions in its own answer");
    assert!(av.min_version <= 0 && av.max_version >= 3, "{av:?}");
    // The connection stays usable: the client retries with a version the broker knows.
    let r: ApiVersionsResponse = call(&mut s, 3, &ApiVersionsRequest::default());
    assert_eq!(r.error_code, NONE);
    broker.assert_alive("ApiVersions v99");
    broker.stop();
}

#[test]
fn unsupported_versions_close_connection() {
    let mut broker = Broker::start();
    for (key, version) in [
        (ApiKey::Metadata, 13),
        (ApiKey::Produce, 2),
        (ApiKey::Produce, 12),
        (ApiKey::Fetch, 3),
        (ApiKey::Fetch, 17),
        (ApiKey::ListOffsets, 0),
        (ApiKey::CreateTopics, 1),
        (ApiKey::DeleteTopics, 0),
        (ApiKey::Metadata, -1),
    ] {
        let mut frame = encode_header(key as i16, version, next_correlation_id(), 1);
        frame.extend_from_slice(&[0; 32]);
        assert_frame_closes(&mut broker, &frame, &format!("{key:?} v{version}"));
    }
    broker.stop();
}

// ---------------------------------------------------------------------------------------------
// Hostile counts and sizes

#[test]
fn hostile_array_counts_do_not_take_the_broker_down() {
    let mut broker = Broker::start_with(2, &[]);
    let huge = 0x7fff_ffffi32.to_be_bytes();
    let tail = [0u8, 1, b'a', 0, 0];
    let cat = |parts: &[&[u8]]| parts.concat();
    // Compact (flexible) counts are N + 1 as an unsigned varint.
    let compact = |n: u64| {
        let mut v = Vec::new();
        unsigned_varint(&mut v, n);
        v
    };
    let cases: Vec<(ApiKey, i16, Vec<u8>, &str)> = vec![
        (ApiKey::Metadata, 1, cat(&[&huge, &tail]), "topics"),
        (
            ApiKey::Metadata,
            1,
            cat(&[&(-2i32).to_be_bytes(), &tail]),
            "topics = -2",
        ),
        (
            ApiKey::Produce,
            3,
            // transactional_id null, acks 1, timeout 30000, topic_data
            cat(&[&[0xff, 0xff, 0, 1], &30_000i32.to_be_bytes(), &huge, &tail]),
            "topic_data",
        ),
        (
            ApiKey::Produce,
            3,
            // one topic "x", then partition_data
            cat(&[
                &[0xff, 0xff, 0, 1],
                &30_000i32.to_be_bytes(),
                &1i32.to_be_bytes(),
                &[0, 1, b'x'],
                &huge,
                &tail,
            ]),
            "partition_data",
        ),
        (
            ApiKey::Produce,
            3,
            // one topic, one partition, records claiming i32::MAX bytes
            cat(&[
                &[0xff, 0xff, 0, 1],
                &30_000i32.to_be_bytes(),
                &1i32.to_be_bytes(),
                &[0, 1, b'x'],
                &1i32.to_be_bytes(),
                &0i32.to_be_bytes(),
                &huge,
                &tail,
            ]),
            "records bytes",
        ),
        (
            ApiKey::Fetch,
            4,
            // replica_id, max_wait_ms, min_bytes, max_bytes, isolation_level, topics
            cat(&[
                &(-1i32).to_be_bytes(),
                &0i32.to_be_bytes(),
                &0i32.to_be_bytes(),
                &huge,
                &[0],
                &huge,
                &tail,
            ]),
            "topics",
        ),
        (
            ApiKey::Fetch,
            4,
            cat(&[
                &(-1i32).to_be_bytes(),
                &0i32.to_be_bytes(),
                &0i32.to_be_bytes(),
                &huge,
                &[0],
                &1i32.to_be_bytes(),
                &[0, 1, b'x'],
                &huge,
                &tail,
            ]),
            "partitions",
        ),
        (ApiKey::CreateTopics, 2, cat(&[&huge, &tail]), "topics"),
        (
            ApiKey::CreateTopics,
            2,
            // one topic "x", 1 partition, rf 1, assignments
            cat(&[
                &1i32.to_be_bytes(),
                &[0, 1, b'x'],
                &1i32.to_be_bytes(),
                &1i16.to_be_bytes(),
                &huge,
                &tail,
            ]),
            "assignments",
        ),
        (
            ApiKey::ListOffsets,
            1,
            cat(&[&(-1i32).to_be_bytes(), &huge, &tail]),
            "topics",
        ),
        (ApiKey::DeleteTopics, 1, cat(&[&huge, &tail]), "topic_names"),
        (
            ApiKey::Metadata,
            12,
            cat(&[&compact(1 << 31), &tail]),
            "compact topics 2^31",
        ),
        (
            ApiKey::Metadata,
            12,
            cat(&[&compact(u64::from(u32::MAX)), &tail]),
            "compact topics u32::MAX",
        ),
        (
            ApiKey::Metadata,
            12,
            // a varint longer than 5 bytes
            cat(&[&[0xff; 10], &tail]),
            "overlong varint",
        ),
        (
            ApiKey::Produce,
            9,
            // transactional_id null (compact), acks, timeout, topic_data
            cat(&[
                &[0, 0, 1],
                &30_000i32.to_be_bytes(),
                &compact(1 << 31),
                &tail,
            ]),
            "compact topic_data",
        ),
        (
            ApiKey::Fetch,
            12,
            // replica_id, max_wait, min_bytes, max_bytes, isolation, session id, epoch, topics
            cat(&[
                &(-1i32).to_be_bytes(),
                &0i32.to_be_bytes(),
                &0i32.to_be_bytes(),
                &huge,
                &[0],
                &0i32.to_be_bytes(),
                &(-1i32).to_be_bytes(),
                &compact(1 << 31),
                &tail,
            ]),
            "compact topics",
        ),
        (
            ApiKey::CreateTopics,
            5,
            cat(&[&compact(1 << 31), &tail]),
            "compact topics",
        ),
        (
            ApiKey::DeleteTopics,
            6,
            cat(&[&compact(1 << 31), &tail]),
            "compact topics",
        ),
        (
            ApiKey::ApiVersions,
            3,
            // client_software_name compact string claiming 2^31 bytes
            cat(&[&compact(1 << 31), &tail]),
            "compact string",
        ),
    ];
    for (key, version, body, what) in cases {
        let frame = raw_frame(key, version, &body);
        let context = format!("{key:?} v{version} with a hostile {what} count");
        assert_frame_closes(&mut broker, &frame, &context);
    }
    broker.stop();
}

#[test]
fn huge_size_prefix_with_few_bytes_does_not_allocate_it() {
    use std::io::Write;
    let mut broker = Broker::start();
    broker.assert_alive("start");
    let before = broker.rss_kib();
    // Several connections each claiming (100 MiB - 1) bytes, the default maximum, and sending
    // a few: held open while the RSS is measured, so a broker that allocated the claimed size
    // up front would show hundreds of MiB.
    let mut held = Vec::new();
    for _ in 0..4 {
        let mut s = broker.connect();
        let mut bytes = ((100i32 << 20) - 1).to_be_bytes().to_vec();
        bytes.extend_from_slice(&raw_frame(ApiKey::Metadata, 1, &[0, 0, 0, 0]));
        s.write_all(&bytes).expect("send");
        held.push(s);
    }
    // A round trip after the frames were sent: the broker has read them by now.
    broker.assert_alive("huge size prefixes (connections open)");
    let during = broker.rss_kib();
    drop(held);
    broker.assert_alive("huge size prefixes (connections closed)");
    let after = broker.rss_kib();
    eprintln!(
        "broker RSS: {before} KiB before, {during} KiB with 4 x 100 MiB claims open, {after} KiB after"
    );
    let slack_kib = 50 * 1024;
    assert!(
        during < before + slack_kib && after < before + slack_kib,
        "RSS grew from {before} KiB to {during} KiB (open) / {after} KiB (closed)"
    );
    broker.stop();
}

// ---------------------------------------------------------------------------------------------
// Produce

#[test]
fn produce_errors_have_their_codes() {
    let broker = Broker::start_with(
        2,
        &[
            "--auto-create-topics",
            "false",
            "--message-bytes-max",
            "4096",
        ],
    );
    let mut s = broker.connect();
    create_topic(&mut s, "t", 2);
    let good = record_batch(1_000, &[b"a", b"b"]);
    for version in [3i16, 7, 9, 11] {
        let mut bad_crc = good.clone();
        *bad_crc.last_mut().expect("non-empty") ^= 0x55;
        let p = produce_v(&mut s, version, 1, "t", 0, bad_crc);
        assert_eq!(p.error_code, CORRUPT_MESSAGE, "v{version} bad CRC: {p:?}");
        assert_eq!(p.base_offset, -1, "v{version}");

        let big_value = vec![7u8; 5000];
        let big = record_batch(1_000, &[&big_value]);
        let p = produce_v(&mut s, version, 1, "t", 0, big);
        assert_eq!(
            p.error_code, MESSAGE_TOO_LARGE,
            "v{version} 5000-byte batch: {p:?}"
        );

        let p = produce_v(&mut s, version, 1, "no-such-topic", 0, good.clone());
        assert_eq!(
            p.error_code, UNKNOWN_TOPIC_OR_PARTITION,
            "v{version} unknown topic: {p:?}"
        );
        for partition in [2, 100, -1] {
            let p = produce_v(&mut s, version, 1, "t", partition, good.clone());
            assert_eq!(
                p.error_code, UNKNOWN_TOPIC_OR_PARTITION,
                "v{version} partition {partition}: {p:?}"
            );
        }

        let mut magic1 = good.clone();
        magic1[16] = 1;
        let p = produce_v(&mut s, version, 1, "t", 0, magic1);
        assert_eq!(
            p.error_code, UNSUPPORTED_FOR_MESSAGE_FORMAT,
            "v{version} magic 1: {p:?}"
        );

        for acks in [5i16, 2, -2] {
            let p = produce_v(&mut s, version, acks, "t", 0, good.clone());
            assert_eq!(
                p.error_code, INVALID_REQUIRED_ACKS,
                "v{version} acks={acks}: {p:?}"
            );
        }

        // A batch cut short, and one whose records_count disagrees with its offsets.
        let p = produce_v(&mut s, version, 1, "t", 0, good[..good.len() - 3].to_vec());
        assert_eq!(p.error_code, CORRUPT_MESSAGE, "v{version} truncated: {p:?}");
        let mut count = good.clone();
        count[57..61].copy_from_slice(&5i32.to_be_bytes());
        fix_crc(&mut count);
        let p = produce_v(&mut s, version, 1, "t", 0, count);
        assert_eq!(p.error_code, CORRUPT_MESSAGE, "v{version} bad count: {p:?}");
    }
    // Nothing of the above was appended.
    for partition in [0, 1] {
        let o = list_offset(&mut s, 6, "t", partition, -1);
        assert_eq!((o.error_code, o.offset), (NONE, 0), "partition {partition}");
    }
    broker.stop();
}

#[test]
fn produce_acks_zero_is_not_answered() {
    let broker = Broker::start();
    let mut s = broker.connect();
    create_topic(&mut s, "quiet", 1);
    let batch = record_batch(1_000, &[b"fire", b"forget"]);
    let req = ProduceRequest::default()
        .with_acks(0)
        .with_timeout_ms(10_000)
        .with_topic_data(vec![
            TopicProduceData::default()
                .with_name(name("quiet"))
                .with_partition_data(vec![
                    PartitionProduceData::default()
                        .with_index(0)
                        .with_records(Some(Bytes::from(batch))),
                ]),
        ]);
    let produce_corr = send_request(&mut s, ApiKey::Produce, 8, &req).expect("send produce");
    let meta_corr = send_request(&mut s, ApiKey::Metadata, 1, &MetadataRequest::default())
        .expect("send metadata");
    let (got, body) = read_response(&mut s, ApiKey::Metadata, 1).expect("metadata response");
    assert_ne!(got, produce_corr, "acks=0 Produce was answered");
    assert_eq!(got, meta_corr);
    let _: MetadataResponse = decode_body(body, 1);
    // ...but it was appended.
    let o = list_offset(&mut s, 1, "quiet", 0, -1);
    assert_eq!((o.error_code, o.offset), (NONE, 2));
    broker.stop();
}

#[test]
fn produce_then_fetch_returns_the_same_bytes() {
    let broker = Broker::start_with(2, &["--auto-create-topics", "false"]);
    let mut s = broker.connect();
    create_topic(&mut s, "rt", 2);
    let a = record_batch(1_000, &[b"one", b"two", b"three"]);
    let b = record_batch(2_000, &[b"four", b"five"]);
    let c = record_batch(3_000, &[b"six"]);
    for partition in [0, 1] {
        let p = produce_v(&mut s, 3, 1, "rt", partition, a.clone());
        assert_eq!((p.error_code, p.base_offset), (NONE, 0), "{p:?}");
        let p = produce_v(&mut s, 9, -1, "rt", partition, b.clone());
        assert_eq!((p.error_code, p.base_offset), (NONE, 3), "{p:?}");
        let p = produce_v(&mut s, 11, 1, "rt", partition, c.clone());
        assert_eq!((p.error_code, p.base_offset), (NONE, 5), "{p:?}");
    }
    // Two batches in one records field are appended contiguously too.
    let mut two = b.clone();
    two.extend_from_slice(&c);
    let p = produce_v(&mut s, 5, 1, "rt", 1, two);
    assert_eq!((p.error_code, p.base_offset), (NONE, 6), "{p:?}");

    let id = topic_id(&mut s, "rt");
    let p0 = vec![
        (0, with_base_offset(&a, 0)),
        (3, with_base_offset(&b, 3)),
        (5, with_base_offset(&c, 5)),
    ];
    for version in [4i16, 11, 12, 13, 15, 16] {
        // A single Fetch returns whole batches from the one holding the fetch offset (as many
        // as fit; Kafka may stop at a segment boundary, so the rest is fetched as a client
        // would).
        let p = fetch_one(&mut s, version, "rt", id, 0, 0);
        assert_eq!(p.error_code, NONE, "v{version}: {p:?}");
        assert_eq!(p.high_watermark, 6, "v{version}");
        let first = split_batches(&records_of(&p));
        assert!(
            !first.is_empty() && p0.starts_with(&first),
            "Fetch v{version} partition 0 from offset 0: {first:?}"
        );
        assert_eq!(
            fetch_all(&mut s, version, "rt", id, 0, 0),
            p0,
            "Fetch v{version} partition 0 from offset 0"
        );
        // From the middle of batch a: whole batches from the one holding offset 1.
        assert_eq!(
            fetch_all(&mut s, version, "rt", id, 0, 1),
            p0,
            "Fetch v{version} from offset 1"
        );
        assert_eq!(
            fetch_all(&mut s, version, "rt", id, 0, 4),
            p0[1..].to_vec(),
            "Fetch v{version} from offset 4"
        );
        let p = fetch_one(&mut s, version, "rt", id, 1, 6);
        assert_eq!(p.high_watermark, 9, "v{version}");
        assert_eq!(
            fetch_all(&mut s, version, "rt", id, 1, 6),
            vec![(6, with_base_offset(&b, 6)), (8, with_base_offset(&c, 8))],
            "Fetch v{version} partition 1 from offset 6"
        );
        // At the log end: no records, no error.
        let p = fetch_one(&mut s, version, "rt", id, 0, 6);
        assert_eq!(p.error_code, NONE, "v{version}: {p:?}");
        assert!(records_of(&p).is_empty(), "v{version}: {p:?}");
    }
    broker.stop();
}

/// Fetches from `from` until the high watermark, as a consumer would; returns the batches
/// as (base offset, bytes).
fn fetch_all(
    s: &mut TcpStream,
    version: i16,
    topic: &str,
    id: Uuid,
    partition: i32,
    from: i64,
) -> Vec<(i64, Vec<u8>)> {
    let mut out: Vec<(i64, Vec<u8>)> = Vec::new();
    let mut next = from;
    for _ in 0..1000 {
        let p = fetch_one(s, version, topic, id, partition, next);
        assert_eq!(p.error_code, NONE, "v{version} at {next}: {p:?}");
        let batches = split_batches(&records_of(&p));
        let Some((base, last)) = batches.last() else {
            break;
        };
        let last_delta = i32::from_be_bytes(last[23..27].try_into().expect("4 bytes"));
        next = base + i64::from(last_delta) + 1;
        out.extend(batches);
        if next >= p.high_watermark {
            break;
        }
    }
    out
}

/// The number of segment files (`*.log`) under the broker's data directory.
fn segment_files(broker: &Broker) -> usize {
    fn walk(dir: &std::path::Path, n: &mut usize) {
        for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
            let path = e.path();
            if path.is_dir() {
                walk(&path, n);
            } else if path.extension().is_some_and(|x| x == "log") {
                *n += 1;
            }
        }
    }
    let mut n = 0;
    walk(broker.dir.path(), &mut n);
    n
}

/// Record timestamps are the client's (CreateTime): a producer replaying old data must not
/// make every append roll a new segment. Kafka rolls by age on the difference between the
/// incoming batch's timestamp and the segment's first one (`segment.ms`, 7 days by default),
/// not on wall-clock time minus a record timestamp.
#[test]
fn old_record_timestamps_do_not_roll_a_segment_per_batch() {
    let broker = Broker::start_with(1, &["--auto-create-topics", "false"]);
    let mut s = broker.connect();
    create_topic(&mut s, "history", 1);
    let before = segment_files(&broker);
    let batches = 20;
    for i in 0..batches {
        // 2001-09-09 onwards, one second apart.
        let batch = record_batch(1_000_000_000_000 + i * 1_000, &[b"old"]);
        let p = produce_v(&mut s, 9, 1, "history", 0, batch);
        assert_eq!((p.error_code, p.base_offset), (NONE, i), "{p:?}");
    }
    let after = segment_files(&broker);
    assert!(
        after - before < 3,
        "{batches} batches with old timestamps, spanning 19 s, made {} new segment \
         files ({before} before, {after} after)",
        after - before
    );
    // And, all in one segment, one Fetch returns them all.
    let p = fetch_one(&mut s, 12, "history", Uuid::nil(), 0, 0);
    assert_eq!(
        split_batches(&records_of(&p)).len(),
        batches as usize,
        "one Fetch of {batches} small batches"
    );
    broker.stop();
}

// ---------------------------------------------------------------------------------------------
// CreateTopics / DeleteTopics / Metadata

#[test]
fn create_topics_errors_have_their_codes() {
    let broker = Broker::start_with(1, &["--auto-create-topics", "false"]);
    let mut s = broker.connect();
    for version in [2i16, 4, 5, 7] {
        let topic = format!("dup-v{version}");
        let r = create_topics_v(&mut s, version, vec![topic_spec(&topic, 1, 1)], false);
        assert_eq!(r[0].error_code, NONE, "v{version}: {r:?}");
        let r = create_topics_v(&mut s, version, vec![topic_spec(&topic, 1, 1)], false);
        assert_eq!(
            r[0].error_code, TOPIC_ALREADY_EXISTS,
            "v{version} duplicate: {r:?}"
        );
        let cases: Vec<(CreatableTopic, i16, &str)> = vec![
            (topic_spec("zero", 0, 1), INVALID_PARTITIONS, "0 partitions"),
            (
                topic_spec("neg", -5, 1),
                INVALID_PARTITIONS,
                "-5 partitions",
            ),
            (
                topic_spec("huge", i32::MAX, 1),
                INVALID_PARTITIONS,
                "i32::MAX partitions",
            ),
            (
                topic_spec("rf3", 1, 3),
                INVALID_REPLICATION_FACTOR,
                "replication factor 3",
            ),
            (topic_spec("a/b", 1, 1), INVALID_TOPIC_EXCEPTION, "name a/b"),
            (topic_spec("..", 1, 1), INVALID_TOPIC_EXCEPTION, "name .."),
            (
                topic_spec(&"x".repeat(250), 1, 1),
                INVALID_TOPIC_EXCEPTION,
                "250-character name",
            ),
            (
                topic_spec("cfg", 1, 1).with_configs(vec![
                    CreatableTopicConfig::default()
                        .with_name(StrBytes::from_static_str("no.such.config"))
                        .with_value(Some(StrBytes::from_static_str("1"))),
                ]),
                INVALID_CONFIG,
                "unknown config",
            ),
        ];
        for (spec, code, what) in cases {
            let r = create_topics_v(&mut s, version, vec![spec], false);
            assert_eq!(r.len(), 1);
            assert_eq!(r[0].error_code, code, "v{version} {what}: {r:?}");
        }
        // None of the failed ones exist.
        for t in ["zero", "neg", "huge", "rf3", "a/b", "cfg"] {
            assert_eq!(
                metadata_v12(&mut s, t).error_code,
                UNKNOWN_TOPIC_OR_PARTITION,
                "{t} after a failed create"
            );
        }
    }
    // validate_only answers as a create would, and creates nothing.
    let r = create_topics_v(&mut s, 7, vec![topic_spec("dry", 3, 1)], true);
    assert_eq!(r[0].error_code, NONE, "{r:?}");
    assert_eq!(
        metadata_v12(&mut s, "dry").error_code,
        UNKNOWN_TOPIC_OR_PARTITION,
        "validate_only created the topic"
    );
    let r = create_topics_v(&mut s, 7, vec![topic_spec("dup-v7", 1, 1)], true);
    assert_eq!(
        r[0].error_code, TOPIC_ALREADY_EXISTS,
        "validate_only dup: {r:?}"
    );
    let r = create_topics_v(&mut s, 7, vec![topic_spec("dry", 3, 1)], false);
    assert_eq!(r[0].error_code, NONE, "{r:?}");
    assert_eq!(metadata_v12(&mut s, "dry").partitions.len(), 3);
    broker.stop();
}

#[test]
fn delete_topics_and_metadata() {
    let broker = Broker::start_with(2, &["--auto-create-topics", "false"]);
    let mut s = broker.connect();
    for version in [1i16, 4, 5, 6] {
        let req = if version >= 6 {
            DeleteTopicsRequest::default().with_topics(vec![
                DeleteTopicState::default().with_name(Some(name("never-was"))),
            ])
        } else {
            DeleteTopicsRequest::default().with_topic_names(vec![name("never-was")])
        }
        .with_timeout_ms(10_000);
        let r = call(&mut s, version, &req);
        assert_eq!(r.responses.len(), 1);
        assert_eq!(
            r.responses[0].error_code, UNKNOWN_TOPIC_OR_PARTITION,
            "v{version}: {r:?}"
        );
    }
    // Unknown topic id (v6).
    let req = DeleteTopicsRequest::default()
        .with_topics(vec![
            DeleteTopicState::default().with_topic_id(Uuid::from_u128(0x1234)),
        ])
        .with_timeout_ms(10_000);
    let r = call(&mut s, 6, &req);
    assert_eq!(r.responses[0].error_code, UNKNOWN_TOPIC_ID, "{r:?}");

    // By name.
    create_topic(&mut s, "doomed", 2);
    let p = produce_v(&mut s, 9, 1, "doomed", 1, record_batch(0, &[b"x"]));
    assert_eq!(p.error_code, NONE);
    assert_eq!(metadata_v12(&mut s, "doomed").partitions.len(), 2);
    let req = DeleteTopicsRequest::default()
        .with_topic_names(vec![name("doomed")])
        .with_timeout_ms(10_000);
    let r = call(&mut s, 4, &req);
    assert_eq!(r.responses[0].error_code, NONE, "{r:?}");
    assert_eq!(
        metadata_v12(&mut s, "doomed").error_code,
        UNKNOWN_TOPIC_OR_PARTITION
    );
    let all: MetadataResponse = call(&mut s, 1, &MetadataRequest::default());
    assert!(
        all.topics
            .iter()
            .all(|t| t.name.as_ref() != Some(&name("doomed"))),
        "{all:?}"
    );
    let p = fetch_one(&mut s, 4, "doomed", Uuid::nil(), 1, 0);
    assert_eq!(
        p.error_code, UNKNOWN_TOPIC_OR_PARTITION,
        "fetch after delete"
    );
    // Recreated: empty again.
    create_topic(&mut s, "doomed", 1);
    let o = list_offset(&mut s, 1, "doomed", 0, -1);
    assert_eq!(
        (o.error_code, o.offset),
        (NONE, 0),
        "recreated topic not empty"
    );

    // By id (v6).
    create_topic(&mut s, "by-id", 1);
    let id = topic_id(&mut s, "by-id");
    let req = DeleteTopicsRequest::default()
        .with_topics(vec![DeleteTopicState::default().with_topic_id(id)])
        .with_timeout_ms(10_000);
    let r = call(&mut s, 6, &req);
    assert_eq!(r.responses[0].error_code, NONE, "{r:?}");
    assert_eq!(
        metadata_v12(&mut s, "by-id").error_code,
        UNKNOWN_TOPIC_OR_PARTITION
    );
    broker.stop();
}

// ---------------------------------------------------------------------------------------------
// Fetch and ListOffsets errors

#[test]
fn fetch_errors_have_their_codes() {
    let broker = Broker::start_with(2, &["--auto-create-topics", "false"]);
    let mut s = broker.connect();
    create_topic(&mut s, "f", 2);
    let p = produce_v(&mut s, 9, 1, "f", 0, record_batch(0, &[b"a", b"b"]));
    assert_eq!(p.error_code, NONE);
    let id = topic_id(&mut s, "f");
    for version in [4i16, 12, 13, 16] {
        for partition in [2, 99, -1] {
            let p = fetch_one(&mut s, version, "f", id, partition, 0);
            assert_eq!(
                p.error_code, UNKNOWN_TOPIC_OR_PARTITION,
                "v{version} partition {partition}: {p:?}"
            );
        }
        for offset in [3, 1_000, -5, i64::MAX, i64::MIN] {
            let p = fetch_one(&mut s, version, "f", id, 0, offset);
            assert_eq!(
                p.error_code, OFFSET_OUT_OF_RANGE,
                "v{version} offset {offset}: {p:?}"
            );
        }
        let p = fetch_one(&mut s, version, "f", id, 0, 2);
        assert_eq!(p.error_code, NONE, "v{version} at log end: {p:?}");
    }
    for version in [4i16, 12] {
        let p = fetch_one(&mut s, version, "nope", Uuid::nil(), 0, 0);
        assert_eq!(p.error_code, UNKNOWN_TOPIC_OR_PARTITION, "v{version}");
    }
    for version in [13i16, 16] {
        let p = fetch_one(&mut s, version, "", Uuid::from_u128(77), 0, 0);
        assert_eq!(p.error_code, UNKNOWN_TOPIC_ID, "v{version}: {p:?}");
    }
    broker.stop();
}

#[test]
fn list_offsets_earliest_latest_and_by_timestamp() {
    let broker = Broker::start_with(2, &["--auto-create-topics", "false"]);
    let mut s = broker.connect();
    create_topic(&mut s, "lo", 2);
    for version in [1i16, 6] {
        let o = list_offset(&mut s, version, "lo", 1, -2);
        assert_eq!(
            (o.error_code, o.offset),
            (NONE, 0),
            "empty earliest v{version}"
        );
        let o = list_offset(&mut s, version, "lo", 1, -1);
        assert_eq!(
            (o.error_code, o.offset),
            (NONE, 0),
            "empty latest v{version}"
        );
    }
    // Offsets 0..3 at 1000, 1010, 1020; 3..5 at 2000, 2010.
    let p = produce_v(
        &mut s,
        9,
        1,
        "lo",
        1,
        record_batch(1_000, &[b"a", b"b", b"c"]),
    );
    assert_eq!(p.base_offset, 0);
    let p = produce_v(&mut s, 9, 1, "lo", 1, record_batch(2_000, &[b"d", b"e"]));
    assert_eq!(p.base_offset, 3);
    for version in [1i16, 2, 4, 6] {
        let at = |s: &mut TcpStream, ts: i64| {
            let o = list_offset(s, version, "lo", 1, ts);
            assert_eq!(o.error_code, NONE, "v{version} ts {ts}: {o:?}");
            (o.offset, o.timestamp)
        };
        assert_eq!(at(&mut s, -2).0, 0, "v{version} earliest");
        assert_eq!(at(&mut s, -1).0, 5, "v{version} latest");
        assert_eq!(at(&mut s, 0), (0, 1_000), "v{version} ts 0");
        assert_eq!(at(&mut s, 1_000), (0, 1_000), "v{version} ts 1000");
        assert_eq!(at(&mut s, 1_015), (2, 1_020), "v{version} ts 1015");
        assert_eq!(at(&mut s, 1_500), (3, 2_000), "v{version} ts 1500");
        assert_eq!(at(&mut s, 2_010), (4, 2_010), "v{version} ts 2010");
        assert_eq!(at(&mut s, 2_011).0, -1, "v{version} ts after everything");
        // Other partition: untouched.
        let o = list_offset(&mut s, version, "lo", 0, -1);
        assert_eq!((o.error_code, o.offset), (NONE, 0));
        let o = list_offset(&mut s, version, "lo", 2, -1);
        assert_eq!(o.error_code, UNKNOWN_TOPIC_OR_PARTITION, "v{version}");
        let o = list_offset(&mut s, version, "nope", 0, -1);
        assert_eq!(o.error_code, UNKNOWN_TOPIC_OR_PARTITION, "v{version}");
        // Timestamp specs this version does not define: an error or "no offset", never a
        // made-up one.
        for ts in [-3, -4, -5, i64::MIN] {
            let o = list_offset(&mut s, version, "lo", 1, ts);
            assert!(
                o.error_code != NONE || o.offset == -1,
                "v{version} timestamp {ts}: {o:?}"
            );
        }
    }
    // v7: the record with the largest timestamp (-3, KIP-734), the first of them; v8: the
    // earliest local offset (-4, KIP-1005), the log start here. Each answer carries the leader
    // epoch that wrote the offset (0 on one node), -1 with no offset.
    let p = produce_v(&mut s, 9, 1, "lo", 1, record_batch(1_500, &[b"f", b"g"]));
    assert_eq!(p.base_offset, 5);
    for version in [7i16, 8] {
        let o = list_offset(&mut s, version, "lo", 1, -3);
        assert_eq!(
            (o.error_code, o.offset, o.timestamp, o.leader_epoch),
            (NONE, 4, 2_010, 0),
            "v{version} max timestamp: {o:?}"
        );
        let o = list_offset(&mut s, version, "lo", 0, -3);
        assert_eq!(
            (o.error_code, o.offset, o.timestamp, o.leader_epoch),
            (NONE, -1, -1, -1),
            "v{version} max timestamp of an empty partition: {o:?}"
        );
        let o = list_offset(&mut s, version, "lo", 1, -1);
        assert_eq!(
            (o.offset, o.leader_epoch),
            (7, 0),
            "v{version} latest: {o:?}"
        );
    }
    let o = list_offset(&mut s, 8, "lo", 1, -4);
    assert_eq!(
        (o.error_code, o.offset, o.leader_epoch),
        (NONE, 0, 0),
        "earliest local: {o:?}"
    );
    let o = list_offset(&mut s, 7, "lo", 1, -4);
    assert_eq!(o.error_code, UNSUPPORTED_VERSION, "-4 needs v8: {o:?}");
    broker.stop();
}

// ---------------------------------------------------------------------------------------------
// Fetch long poll

/// Starts a Fetch of both partitions of `topic` (one per shard of a 2-shard broker) with a
/// 3 s wait, produces to `produce_to` from another connection ~200 ms later, and checks the
/// Fetch returns that data.
fn long_poll_case(broker: &Broker, topic: &str, produce_to: i32) {
    let mut s = broker.connect();
    create_topic(&mut s, topic, 2);
    assert_ne!(
        partition_owner(topic, 0, 2),
        partition_owner(topic, 1, 2),
        "the fetch should span both shards"
    );
    let batch = record_batch(5_000, &[b"late", b"arrival"]);
    let req = fetch_request(12, topic, Uuid::nil(), &[(0, 0), (1, 0)], 3_000, 1);
    let corr = send_request(&mut s, ApiKey::Fetch, 12, &req).expect("send fetch");
    let producer = {
        let mut p = broker.connect();
        let topic = topic.to_string();
        let batch = batch.clone();
        thread::spawn(move || {
            thread::sleep(Duration::from_millis(200));
            produce_v(&mut p, 9, 1, &topic, produce_to, batch)
        })
    };
    let (got, body) = read_response(&mut s, ApiKey::Fetch, 12).expect("fetch response");
    assert_eq!(got, corr);
    let resp: FetchResponse = decode_body(body, 12);
    let produced = producer.join().expect("producer thread");
    assert_eq!(
        (produced.error_code, produced.base_offset),
        (NONE, 0),
        "{produced:?}"
    );
    assert_eq!(resp.error_code, NONE, "{resp:?}");
    let parts = &resp.responses[0].partitions;
    assert_eq!(parts.len(), 2, "{resp:?}");
    let got = parts
        .iter()
        .find(|p| p.partition_index == produce_to)
        .expect("partition in the answer");
    assert_eq!(got.error_code, NONE, "{got:?}");
    assert_eq!(
        records_of(got),
        with_base_offset(&batch, 0),
        "long-poll Fetch did not return the data produced to partition {produce_to} of {topic}"
    );
}

#[test]
fn fetch_long_poll_returns_data_produced_while_waiting() {
    let broker = Broker::start_with(2, &["--auto-create-topics", "false"]);
    // Whichever shard accepted the fetching connection, one of the two cases produces to a
    // partition owned by the other shard.
    long_poll_case(&broker, "wait-p0", 0);
    long_poll_case(&broker, "wait-p1", 1);
    broker.stop();
}

/// A Fetch whose `min_bytes` needs a batch from each shard. The first batch alone must not end
/// the wait, and while the fetch waits for the second, the shard that has the first must not
/// answer it again and again (a shard answers a waiting fetch when its partition grows past
/// what the fetch already saw, not while it merely has data): over half a second of waiting
/// the executors run a handful of tasks, where answering on every look ran thousands. The half
/// second is an observation window, not a wait for a condition.
#[test]
fn fetch_long_poll_waits_for_min_bytes_from_both_shards_without_spinning() {
    let (broker, metrics) = two_shards_with_metrics();
    let mut s = broker.connect();
    create_topic(&mut s, "minb", 2);
    let first = record_batch(5_000, &[b"first"]);
    let second = record_batch(5_000, &[b"second"]);
    let min_bytes = i32::try_from(first.len() + 1).expect("small batch");
    let req = fetch_request(
        12,
        "minb",
        Uuid::nil(),
        &[(0, 0), (1, 0)],
        30_000,
        min_bytes,
    );
    let corr = send_request(&mut s, ApiKey::Fetch, 12, &req).expect("send fetch");
    let mut p = broker.connect();
    let r = produce_v(&mut p, 9, 1, "minb", 0, first.clone());
    assert_eq!((r.error_code, r.base_offset), (NONE, 0), "{r:?}");
    let tasks_before = scrape_sum(&metrics, "spate_executor_tasks_total");
    thread::sleep(Duration::from_millis(500));
    let tasks = scrape_sum(&metrics, "spate_executor_tasks_total") - tasks_before;
    let r = produce_v(&mut p, 9, 1, "minb", 1, second.clone());
    assert_eq!((r.error_code, r.base_offset), (NONE, 0), "{r:?}");
    let (got, body) = read_response(&mut s, ApiKey::Fetch, 12).expect("fetch response");
    assert_eq!(got, corr);
    let resp: FetchResponse = decode_body(body, 12);
    let parts = &resp.responses[0].partitions;
    let records = |i: i32| {
        records_of(
            parts
                .iter()
                .find(|p| p.partition_index == i)
                .expect("partition"),
        )
    };
    assert_eq!(records(0), with_base_offset(&first, 0), "{resp:?}");
    assert_eq!(records(1), with_base_offset(&second, 0), "{resp:?}");
    assert!(
        tasks < 400,
        "{tasks} executor tasks ran in 500 ms while one Fetch waited: a shard keeps answering it"
    );
    broker.stop();
}

/// A 2-shard broker without auto-creation, with its metrics endpoint: (broker, metrics address).
fn two_shards_with_metrics() -> (Broker, String) {
    let metrics = format!("127.0.0.1:{}", free_port());
    let broker = Broker::start_with(
        2,
        &[
            "--auto-create-topics",
            "false",
            "--metrics-listen",
            &metrics,
        ],
    );
    (broker, metrics)
}

/// Polls `metric` (summed over shards) until it equals `want`, or fails after `secs`.
fn wait_for_metric(metrics: &str, metric: &str, want: u64, secs: u64, context: &str) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        let got = scrape_sum(metrics, metric);
        if got == want {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{context}: {metric} is {got}, expected {want} within {secs} s"
        );
        thread::sleep(Duration::from_millis(20));
    }
}

/// A long poll over partitions on both shards, answered because one of them got data, must
/// end its wait on the other shard too: that shard is told to drop the waiter at once rather
/// than hold it until the fetch's 30 s deadline (a waiter per answered fetch, piling up under
/// a busy consumer).
#[test]
fn fetch_long_poll_answered_by_one_shard_ends_its_wait_on_the_other() {
    let (broker, metrics) = two_shards_with_metrics();
    let mut s = broker.connect();
    create_topic(&mut s, "cancel", 2);
    assert_ne!(
        partition_owner("cancel", 0, 2),
        partition_owner("cancel", 1, 2)
    );
    let mut p = broker.connect();
    // Round one is answered by partition 0's shard, round two by partition 1's: whichever
    // shard the fetching connection landed on, one round ends a wait on the other shard
    // (cancelled by message) and one ends its own (dropped with the answered fetch).
    for (partition, offsets) in [(0, [(0, 0), (1, 0)]), (1, [(0, 1), (1, 0)])] {
        let req = fetch_request(12, "cancel", Uuid::nil(), &offsets, 30_000, 1);
        let corr = send_request(&mut s, ApiKey::Fetch, 12, &req).expect("send fetch");
        let context = format!("round answered by partition {partition}");
        wait_for_metric(&metrics, "spate_fetch_waits", 2, 10, &context);
        let r = produce_v(
            &mut p,
            9,
            1,
            "cancel",
            partition,
            record_batch(5_000, &[b"w"]),
        );
        assert_eq!(r.error_code, NONE, "{r:?}");
        let (got, _) = read_response(&mut s, ApiKey::Fetch, 12).expect("fetch response");
        assert_eq!(got, corr);
        wait_for_metric(&metrics, "spate_fetch_waits", 0, 5, &context);
    }
    broker.stop();
}

#[test]
fn fetch_short_wait_without_data_returns_empty() {
    let broker = Broker::start_with(2, &["--auto-create-topics", "false"]);
    let mut s = broker.connect();
    create_topic(&mut s, "idle", 2);
    for version in [4i16, 12] {
        let req = fetch_request(version, "idle", Uuid::nil(), &[(0, 0), (1, 0)], 200, 1);
        let resp: FetchResponse = call(&mut s, version, &req);
        assert_eq!(resp.error_code, NONE, "{resp:?}");
        let parts = &resp.responses[0].partitions;
        assert_eq!(parts.len(), 2, "{resp:?}");
        for p in parts {
            assert_eq!(p.error_code, NONE, "v{version}: {p:?}");
            assert_eq!(p.high_watermark, 0, "v{version}: {p:?}");
            assert!(records_of(p).is_empty(), "v{version}: {p:?}");
        }
    }
    broker.stop();
}

/// Record-level fields are not validated on Produce (only the batch header and CRC are), so a
/// ListOffsets by timestamp later walks records whose timestamp and offset deltas the client
/// chose: near-i64::MAX base timestamps and offset deltas must neither take the broker down
/// (overflow panics in debug builds) nor yield an offset outside the log.
#[test]
fn list_offsets_by_timestamp_survives_hostile_record_deltas() {
    // Timestamps far in the future are what this is about: no bound on them.
    let mut broker = Broker::start_with(
        1,
        &[
            "--auto-create-topics",
            "false",
            "--log-message-timestamp-after-max-ms",
            "-1",
        ],
    );
    let mut s = broker.connect();
    create_topic(&mut s, "hostile-ts", 1);
    // Offset 0: base timestamp near i64::MAX, record timestamp delta +100 (overflows).
    let near_max = i64::MAX - 5;
    let b0 = record_batch_with(near_max, i64::MAX, &[(100, 0, b"a")]);
    let p = produce_v(&mut s, 9, 1, "hostile-ts", 0, b0);
    assert_eq!((p.error_code, p.base_offset), (NONE, 0), "{p:?}");
    // Offset 1: a record claiming offset delta i64::MAX (base offset 1 + that overflows).
    let b1 = record_batch_with(10_000, 10_000, &[(0, i64::MAX, b"b")]);
    let p = produce_v(&mut s, 9, 1, "hostile-ts", 0, b1);
    assert_eq!((p.error_code, p.base_offset), (NONE, 1), "{p:?}");
    // Offset 2: base timestamp near i64::MIN, delta -100.
    let b2 = record_batch_with(i64::MIN + 5, 20_000, &[(-100, 0, b"c")]);
    let p = produce_v(&mut s, 9, 1, "hostile-ts", 0, b2);
    assert_eq!((p.error_code, p.base_offset), (NONE, 2), "{p:?}");

    for ts in [0, 10_000, 15_000, near_max, i64::MAX] {
        let mut s = broker.connect();
        let req = ListOffsetsRequest::default()
            .with_replica_id((-1).into())
            .with_topics(vec![
                ListOffsetsTopic::default()
                    .with_name(name("hostile-ts"))
                    .with_partitions(vec![
                        ListOffsetsPartition::default()
                            .with_partition_index(0)
                            .with_timestamp(ts),
                    ]),
            ]);
        let answer = try_request(&mut s, ApiKey::ListOffsets, 6, &req);
        broker.assert_alive(&format!(
            "ListOffsets by timestamp {ts} over hostile records"
        ));
        let body = answer.unwrap_or_else(|e| {
            panic!(
                "ListOffsets by timestamp {ts}: no answer ({e}); stderr:\n{}",
                broker.stderr()
            )
        });
        let resp: kafka_protocol::messages::ListOffsetsResponse = decode_body(body, 6);
        let o = &resp.topics[0].partitions[0];
        assert_eq!(o.error_code, NONE, "ts {ts}: {o:?}");
        assert!(
            o.offset == -1 || (0..3).contains(&o.offset),
            "ListOffsets by timestamp {ts} answered offset {} outside the log [0, 3): {o:?}",
            o.offset
        );
    }
    broker.stop();
}

/// OffsetForLeaderEpoch answers from the partition's leader-epoch cache: on one node every
/// batch has epoch 0, so epoch 0 ends at the log end; an epoch the client knows that the
/// partition does not is UNKNOWN_LEADER_EPOCH, an unknown partition UNKNOWN_TOPIC_OR_PARTITION.
#[test]
fn offset_for_leader_epoch_answers_from_the_epoch_cache() {
    use kafka_protocol::messages::offset_for_leader_epoch_request::{
        OffsetForLeaderPartition, OffsetForLeaderTopic,
    };
    use kafka_protocol::messages::{OffsetForLeaderEpochRequest, OffsetForLeaderEpochResponse};
    let broker = Broker::start();
    let mut s = broker.connect();
    create_topic(&mut s, "ofle", 1);
    let empty = |s: &mut TcpStream, epoch: i32, current: i32, partition: i32| {
        let req = OffsetForLeaderEpochRequest::default().with_topics(vec![
            OffsetForLeaderTopic::default()
                .with_topic(name("ofle"))
                .with_partitions(vec![
                    OffsetForLeaderPartition::default()
                        .with_partition(partition)
                        .with_current_leader_epoch(current)
                        .with_leader_epoch(epoch),
                ]),
        ]);
        let r: OffsetForLeaderEpochResponse = call(s, 4, &req);
        let p = &r.topics[0].partitions[0];
        (p.error_code, p.leader_epoch, p.end_offset)
    };
    // An empty log knows no epoch yet.
    assert_eq!(empty(&mut s, 0, -1, 0), (NONE, -1, -1));
    let p = produce_v(
        &mut s,
        9,
        -1,
        "ofle",
        0,
        record_batch(0, &[b"a", b"b", b"c"]),
    );
    assert_eq!(p.error_code, NONE);
    assert_eq!(empty(&mut s, 0, -1, 0), (NONE, 0, 3));
    assert_eq!(empty(&mut s, 7, 0, 0), (NONE, 0, 3));
    assert_eq!(empty(&mut s, 0, 1, 0), (75, -1, -1));
    assert_eq!(
        empty(&mut s, 0, -1, 9),
        (UNKNOWN_TOPIC_OR_PARTITION, -1, -1)
    );
    broker.stop();
}

/// DescribeTopicPartitions (API 75, what the Java admin client 3.7+ describes topics with):
/// topics in name order, at most `response_partition_limit` partitions per response, and a
/// cursor that pages through the rest; an unknown topic answers UNKNOWN_TOPIC_OR_PARTITION.
#[test]
fn describe_topic_partitions_pages_with_a_cursor() {
    use kafka_protocol::messages::describe_topic_partitions_request::{Cursor, TopicRequest};
    use kafka_protocol::messages::{
        DescribeTopicPartitionsRequest, DescribeTopicPartitionsResponse,
    };
    let broker = Broker::start_with(1, &["--auto-create-topics", "false"]);
    let mut s = broker.connect();
    create_topic(&mut s, "dtp-b", 3);
    create_topic(&mut s, "dtp-a", 2);
    let ask = |s: &mut TcpStream, topics: &[&str], limit: i32, cursor: Option<(&str, i32)>| {
        let req = DescribeTopicPartitionsRequest::default()
            .with_topics(
                topics
                    .iter()
                    .map(|t| TopicRequest::default().with_name(name(t)))
                    .collect(),
            )
            .with_response_partition_limit(limit)
            .with_cursor(cursor.map(|(t, p)| {
                Cursor::default()
                    .with_topic_name(name(t))
                    .with_partition_index(p)
            }));
        let r: DescribeTopicPartitionsResponse = call(s, 0, &req);
        r
    };
    let seen = |r: &DescribeTopicPartitionsResponse| {
        r.topics
            .iter()
            .flat_map(|t| {
                let n = t.name.as_ref().map(|n| n.0.to_string()).unwrap_or_default();
                t.partitions
                    .iter()
                    .map(move |p| (n.clone(), p.partition_index, p.leader_id.0))
            })
            .collect::<Vec<_>>()
    };
    // Everything, sorted by name.
    let all = ask(&mut s, &["dtp-b", "dtp-a", "dtp-nope"], 100, None);
    assert_eq!(
        seen(&all),
        vec![
            ("dtp-a".into(), 0, 0),
            ("dtp-a".into(), 1, 0),
            ("dtp-b".into(), 0, 0),
            ("dtp-b".into(), 1, 0),
            ("dtp-b".into(), 2, 0)
        ]
    );
    assert!(all.next_cursor.is_none());
    assert_eq!(all.topics[2].error_code, 3, "{:?}", all.topics[2]);
    assert!(all.topics[0].topic_id != Uuid::nil());
    // Pages of two partitions, following the cursor.
    let mut cursor: Option<(String, i32)> = None;
    let mut pages = Vec::new();
    loop {
        let r = ask(
            &mut s,
            &["dtp-a", "dtp-b"],
            2,
            cursor.as_ref().map(|(t, p)| (t.as_str(), *p)),
        );
        pages.push(seen(&r));
        match r.next_cursor {
            Some(c) => cursor = Some((c.topic_name.0.to_string(), c.partition_index)),
            None => break,
        }
    }
    assert_eq!(pages.len(), 3, "{pages:?}");
    assert_eq!(pages.concat(), seen(&all));
    broker.stop();
}
