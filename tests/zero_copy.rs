//! The Fetch data path: records of old data leave the broker by sendfile(2) (the per-shard
//! zero-copy counter moves), and the copying path sends exactly the same bytes.

mod common;

use bytes::Bytes;
use common::*;
use kafka_protocol::messages::create_topics_request::CreatableTopic;
use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::{
    ApiKey, CreateTopicsRequest, FetchRequest, FetchResponse, ProduceRequest, ProduceResponse,
    ResponseHeader, TopicName,
};
use kafka_protocol::protocol::{Decodable, StrBytes};

const TOPIC: &str = "zc";
const PARTITIONS: i32 = 2;
const BATCHES: usize = 60;

fn name() -> TopicName {
    TopicName(StrBytes::from_static_str(TOPIC))
}

fn fetch_request(offsets: &[i64]) -> FetchRequest {
    let partitions = offsets
        .iter()
        .enumerate()
        .map(|(p, &o)| {
            FetchPartition::default()
                .with_partition(p as i32)
                .with_fetch_offset(o)
                .with_partition_max_bytes(8 << 20)
        })
        .collect();
    FetchRequest::default()
        .with_replica_id(kafka_protocol::messages::BrokerId(-1))
        .with_max_wait_ms(0)
        .with_min_bytes(0)
        .with_max_bytes(64 << 20)
        .with_topics(vec![
            FetchTopic::default()
                .with_topic(name())
                .with_partitions(partitions),
        ])
}

/// Reads both partitions from 0 to the end with Fetch v12; returns every raw response frame
/// (correlation ids fixed, so two runs can be compared byte for byte) and the record bytes.
fn fetch_everything(broker: &Broker) -> (Vec<Bytes>, usize) {
    let mut s = broker.connect();
    let mut offsets = vec![0i64; PARTITIONS as usize];
    let (mut frames, mut record_bytes) = (Vec::new(), 0);
    for corr in 0..1000 {
        let body = encode_request(
            ApiKey::Fetch,
            12,
            1_000_000 + corr,
            &fetch_request(&offsets),
        );
        send_frame(&mut s, &body).expect("send fetch");
        let frame = read_frame(&mut s).expect("fetch response");
        let (got, body) = {
            let mut b = frame.clone();
            let header = ResponseHeader::decode(&mut b, ApiKey::Fetch.response_header_version(12))
                .expect("response header");
            (header.correlation_id, b)
        };
        assert_eq!(got, 1_000_000 + corr);
        let resp: FetchResponse = decode_body(body, 12);
        let mut progressed = false;
        for p in &resp.responses[0].partitions {
            assert_eq!(p.error_code, 0, "{p:?}");
            let records = p.records.clone().unwrap_or_default();
            record_bytes += records.len();
            if let Some((base, batch)) = split_batches(&records).last() {
                let delta = i32::from_be_bytes([batch[23], batch[24], batch[25], batch[26]]);
                let next = base + delta as i64 + 1;
                offsets[p.partition_index as usize] = next.max(offsets[p.partition_index as usize]);
                progressed = true;
            }
        }
        frames.push(frame);
        if !progressed {
            return (frames, record_bytes);
        }
    }
    panic!("fetching never reached the end");
}

/// Sums a counter over the "shard stopped" lines of a broker's stderr.
fn counter(stderr: &str, name: &str) -> u64 {
    stderr
        .lines()
        .filter(|l| l.contains("shard stopped"))
        .filter_map(|l| l.split(&format!("{name}=")).nth(1))
        .filter_map(|v| v.split_whitespace().next()?.parse::<u64>().ok())
        .sum()
}

/// Drops every segment file under `data` from the page cache (they are clean: the broker
/// that wrote them stopped cleanly, which syncs them). Returns the files.
fn evict_segments(data: &std::path::Path) -> Vec<std::fs::File> {
    let mut files = Vec::new();
    for part in std::fs::read_dir(data).expect("data dir") {
        let part = part.expect("entry").path();
        if !part.is_dir() || !part.to_string_lossy().contains(TOPIC) {
            continue;
        }
        for seg in std::fs::read_dir(&part).expect("partition dir") {
            let seg = seg.expect("entry").path();
            if seg.extension().is_some_and(|e| e == "log") {
                let f = std::fs::File::open(&seg).expect("open segment");
                let advised = rustix::fs::fadvise(&f, 0, None, rustix::fs::Advice::DontNeed);
                assert_eq!(
                    advised,
                    Ok(()),
                    "posix_fadvise DONTNEED on {}",
                    seg.display()
                );
                files.push(f);
            }
        }
    }
    assert!(
        !files.is_empty(),
        "no segment files under {}",
        data.display()
    );
    files
}

#[test]
fn cold_data_is_read_into_the_page_cache_off_the_shard_then_sent() {
    let broker = Broker::start_with(2, &[]);
    produce_all(&broker);
    let (dir, _) = broker.stop_and_keep();
    let files = evict_segments(&dir.path().join("data"));
    let Some(false) = spate::storage::io::fully_cached(&files[0], 0, 1) else {
        eprintln!("this kernel has no cachestat(2) (or kept the pages): nothing to check");
        return;
    };
    let broker = Broker::start_in(dir, 2, &[]);
    let (_, record_bytes) = fetch_everything(&broker);
    let (_, stderr) = broker.stop_and_keep();
    let warmed = counter(&stderr, "bytes_out_warmed");
    assert!(
        warmed > 0 && warmed <= record_bytes as u64,
        "{warmed} of {record_bytes} fetched bytes were warmed first\n{stderr}"
    );
    assert_eq!(
        counter(&stderr, "bytes_out_zero_copy") + counter(&stderr, "bytes_out_copied"),
        record_bytes as u64,
        "{stderr}"
    );
}

fn produce_all(broker: &Broker) {
    let mut s = broker.connect();
    let req = CreateTopicsRequest::default().with_topics(vec![
        CreatableTopic::default()
            .with_name(name())
            .with_num_partitions(PARTITIONS)
            .with_replication_factor(1),
    ]);
    let created = call(&mut s, 7, &req);
    assert_eq!(created.topics[0].error_code, 0, "{created:?}");
    let value = vec![0x5a_u8; 4000];
    for i in 0..BATCHES {
        let batch = record_batch(1_000 + i as i64, &[&value, &value]);
        let req = ProduceRequest::default()
            .with_acks(-1)
            .with_timeout_ms(10_000)
            .with_topic_data(vec![
                TopicProduceData::default()
                    .with_name(name())
                    .with_partition_data(vec![
                        PartitionProduceData::default()
                            .with_index((i % 2) as i32)
                            .with_records(Some(Bytes::from(batch))),
                    ]),
            ]);
        let resp: ProduceResponse = call(&mut s, 9, &req);
        assert_eq!(
            resp.responses[0].partition_responses[0].error_code, 0,
            "{resp:?}"
        );
    }
}

#[test]
fn old_data_goes_out_by_sendfile_and_the_copying_path_sends_the_same_bytes() {
    let broker = Broker::start_with(2, &[]);
    produce_all(&broker);
    // Old data: a new broker process that never held these records in memory.
    let (dir, _) = broker.stop_and_keep();
    let broker = Broker::start_in(dir, 2, &[]);
    let (zero_copy_frames, record_bytes) = fetch_everything(&broker);
    let (dir, stderr) = broker.stop_and_keep();
    assert!(
        record_bytes > BATCHES * 8000,
        "fetched {record_bytes} record bytes"
    );
    let (zc, copied) = (
        counter(&stderr, "bytes_out_zero_copy"),
        counter(&stderr, "bytes_out_copied"),
    );
    assert_eq!(
        zc + copied,
        record_bytes as u64,
        "every record byte is counted once\n{stderr}"
    );
    assert!(zc > 0, "nothing went out by sendfile\n{stderr}");

    let broker = Broker::start_in(dir, 2, &["--fetch-zero-copy", "false"]);
    let (copied_frames, copied_bytes) = fetch_everything(&broker);
    let (_, stderr) = broker.stop_and_keep();
    assert_eq!(copied_bytes, record_bytes);
    assert_eq!(counter(&stderr, "bytes_out_zero_copy"), 0, "{stderr}");
    assert_eq!(
        counter(&stderr, "bytes_out_copied"),
        record_bytes as u64,
        "{stderr}"
    );
    assert_eq!(zero_copy_frames.len(), copied_frames.len());
    for (i, (a, b)) in zero_copy_frames.iter().zip(&copied_frames).enumerate() {
        assert!(
            a == b,
            "response {i} differs between the zero-copy and the copying path"
        );
    }
}

/// `/proc/sys/net/ipv4/tcp_wmem`'s largest send buffer (what autotuning may grow the broker's
/// socket to); 4 MiB, Linux's default, when it cannot be read.
fn send_buffer_max() -> usize {
    std::fs::read_to_string("/proc/sys/net/ipv4/tcp_wmem")
        .ok()
        .and_then(|s| s.split_whitespace().nth(2)?.parse().ok())
        .unwrap_or(4 << 20)
}

/// Produces `batch` to partition 0 of `topic` with acks=1; returns its base offset.
fn produce_one(s: &mut std::net::TcpStream, topic: &TopicName, batch: &[u8]) -> i64 {
    let req = ProduceRequest::default()
        .with_acks(1)
        .with_timeout_ms(10_000)
        .with_topic_data(vec![
            TopicProduceData::default()
                .with_name(topic.clone())
                .with_partition_data(vec![
                    PartitionProduceData::default()
                        .with_index(0)
                        .with_records(Some(Bytes::copy_from_slice(batch))),
                ]),
        ]);
    let resp: ProduceResponse = call(s, 9, &req);
    let p = &resp.responses[0].partition_responses[0];
    assert_eq!(p.error_code, 0, "{resp:?}");
    p.base_offset
}

/// A consumer that does not keep up: the response is larger than anything the broker's
/// socket and the consumer's can hold, and the consumer reads nothing until sendfile has found
/// the socket full (the shard's counter says so; the shard must not block on it). Then it
/// reads the whole response, which holds exactly the batches produced, in order: the pieces
/// sent while the socket drained went through the copying path, between sendfile's.
#[test]
fn a_consumer_that_does_not_keep_up_gets_every_byte_in_order() {
    let metrics = format!("127.0.0.1:{}", free_port());
    let broker = Broker::start_with(1, &["--metrics-listen", &metrics]);
    let mut s = broker.connect();
    let topic = TopicName(StrBytes::from_static_str("slow"));
    let req = CreateTopicsRequest::default().with_topics(vec![
        CreatableTopic::default()
            .with_name(topic.clone())
            .with_num_partitions(1)
            .with_replication_factor(1),
    ]);
    let created = call(&mut s, 7, &req);
    assert_eq!(created.topics[0].error_code, 0, "{created:?}");

    // Batches of 960 KiB, distinct contents, until the log is 8 MiB past the send buffer.
    let client_buffer = 64 << 10;
    let target = send_buffer_max() + client_buffer + (8 << 20);
    let mut stored = Vec::new();
    let mut size = 0usize;
    while size < target {
        let value = vec![stored.len() as u8; 120 << 10];
        let batch = record_batch(5_000 + stored.len() as i64, &[&value[..]; 8]);
        let base = produce_one(&mut s, &topic, &batch);
        size += batch.len();
        stored.push((base, with_base_offset(&batch, base)));
    }

    let mut slow = broker.connect();
    let rcvbuf = rustix::net::sockopt::set_socket_recv_buffer_size(&slow, client_buffer);
    assert_eq!(rcvbuf, Ok(()), "SO_RCVBUF");
    let fetch = FetchRequest::default()
        .with_replica_id(kafka_protocol::messages::BrokerId(-1))
        .with_max_wait_ms(0)
        .with_min_bytes(0)
        .with_max_bytes(i32::MAX)
        .with_topics(vec![
            FetchTopic::default()
                .with_topic(topic.clone())
                .with_partitions(vec![
                    FetchPartition::default()
                        .with_partition(0)
                        .with_fetch_offset(0)
                        .with_partition_max_bytes(i32::MAX),
                ]),
        ]);
    send_frame(&mut slow, &encode_request(ApiKey::Fetch, 12, 77, &fetch)).expect("send fetch");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while scrape_sum(&metrics, "spate_fetch_socket_full_total") == 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "sendfile never found the socket full with {size} bytes to send"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    // The shard is not stuck on the full socket: another connection is served meanwhile.
    produce_one(&mut s, &topic, &record_batch(9, &[b"x"]));

    let frame = read_frame(&mut slow).expect("fetch response");
    let mut body = frame.clone();
    let header = ResponseHeader::decode(&mut body, ApiKey::Fetch.response_header_version(12))
        .expect("response header");
    assert_eq!(header.correlation_id, 77);
    let resp: FetchResponse = decode_body(body, 12);
    let p = &resp.responses[0].partitions[0];
    assert_eq!(p.error_code, 0, "{p:?}");
    let got = split_batches(&p.records.clone().unwrap_or_default());
    assert!(
        got.len() >= stored.len(),
        "{} batches of {}",
        got.len(),
        stored.len()
    );
    for (i, (want, have)) in stored.iter().zip(&got).enumerate() {
        assert!(want == have, "batch {i} differs");
    }
    let (_, stderr) = broker.stop_and_keep();
    assert!(counter(&stderr, "bytes_out_zero_copy") > 0, "{stderr}");
    assert!(counter(&stderr, "bytes_out_copied") > 0, "{stderr}");
}
