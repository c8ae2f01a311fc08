//! Fuzzes the request decoder and the record-batch splitter with a seeded PRNG: arbitrary
//! bytes and mutated valid frames of every supported API and version must give Ok or Err,
//! never a panic.
//!
//! - `spate::protocol::decode_request` and `spate::protocol::batch::*` panicking fails the
//!   test (they are Spate's own code; `decode_request` must also never let a panic out).
//! - The `kafka-protocol` crate's decoders are also called directly (without Spate's
//!   `catch_unwind`): their panics are counted and printed, not failed, since the broker
//!   contains them and the crate is not ours.
//!
//! Reproduce a run with `SPATE_FUZZ_SEED=<seed> cargo test --test decoder_fuzz -- --nocapture`;
//! `SPATE_FUZZ_CASES=<n>` changes the number of random cases per test (default 3000).

use std::cell::{Cell, RefCell};
use std::panic::{self, AssertUnwindSafe};
use std::sync::Once;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use bytes::{Bytes, BytesMut};
use kafka_protocol::messages::create_topics_request::{
    CreatableReplicaAssignment, CreatableTopic, CreatableTopicConfig,
};
use kafka_protocol::messages::delete_topics_request::DeleteTopicState;
use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic, ForgottenTopic};
use kafka_protocol::messages::list_offsets_request::{ListOffsetsPartition, ListOffsetsTopic};
use kafka_protocol::messages::metadata_request::MetadataRequestTopic;
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::{
    AlterConfigsRequest, ApiKey, ApiVersionsRequest, BrokerId, CreateTopicsRequest,
    DeleteRecordsRequest, DeleteTopicsRequest, DescribeConfigsRequest, FetchRequest,
    IncrementalAlterConfigsRequest, ListOffsetsRequest, MetadataRequest, ProduceRequest,
    RequestHeader, RequestKind, TopicName,
};
use kafka_protocol::protocol::{Decodable, Encodable, StrBytes};
use spate::protocol::batch::{
    BatchHeader, encode_batch, first_offset_at_or_after, put_varint, split_produce_records,
};
use spate::protocol::{Decoded, decode_request, versions};
use uuid::Uuid;

// ---------------------------------------------------------------------------------------------
// PRNG and seed

/// xorshift64*: small, seedable, good enough to pick mutations.
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Rng {
        Rng(seed.max(1))
    }
    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: usize) -> usize {
        if n == 0 {
            0
        } else {
            (self.next() % n as u64) as usize
        }
    }
    fn chance(&mut self, one_in: usize) -> bool {
        self.below(one_in) == 0
    }
    fn byte(&mut self) -> u8 {
        self.next() as u8
    }
}

fn seed() -> u64 {
    match std::env::var("SPATE_FUZZ_SEED") {
        Ok(s) => s
            .trim()
            .parse()
            .unwrap_or_else(|_| panic!("SPATE_FUZZ_SEED={s:?} is not a u64")),
        Err(_) => SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0x5eed),
    }
}

fn cases() -> usize {
    std::env::var("SPATE_FUZZ_CASES")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(3000)
}

// ---------------------------------------------------------------------------------------------
// Panic capture: inside `guarded`, a panic's message is kept for the report instead of being
// printed; anywhere else (test assertions) the previous hook runs as usual.

thread_local! {
    static GUARDED: Cell<bool> = const { Cell::new(false) };
    static LAST_PANIC: RefCell<Option<String>> = const { RefCell::new(None) };
}

fn install_hook() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let previous = panic::take_hook();
        panic::set_hook(Box::new(move |info| {
            if GUARDED.with(Cell::get) {
                let msg = match info.payload().downcast_ref::<&str>() {
                    Some(s) => s.to_string(),
                    None => info
                        .payload()
                        .downcast_ref::<String>()
                        .cloned()
                        .unwrap_or_else(|| "<non-string panic>".into()),
                };
                let at = info
                    .location()
                    .map(|l| format!("{}:{}", l.file(), l.line()))
                    .unwrap_or_default();
                LAST_PANIC.with(|p| *p.borrow_mut() = Some(format!("{msg} at {at}")));
            } else {
                previous(info);
            }
        }));
    });
}

/// Runs `f`, returning Err(panic message) if it panicked.
fn guarded<T>(f: impl FnOnce() -> T) -> Result<T, String> {
    GUARDED.with(|g| g.set(true));
    let out = panic::catch_unwind(AssertUnwindSafe(f));
    GUARDED.with(|g| g.set(false));
    out.map_err(|_| {
        LAST_PANIC
            .with(|p| p.borrow_mut().take())
            .unwrap_or_else(|| "<no message>".into())
    })
}

fn hex(b: &[u8]) -> String {
    let shown: String = b.iter().take(160).map(|x| format!("{x:02x}")).collect();
    if b.len() > 160 {
        format!("{shown}... ({} bytes)", b.len())
    } else {
        shown
    }
}

// ---------------------------------------------------------------------------------------------
// A corpus of valid frames: every supported API and version, with populated arrays.

fn name(s: &str) -> TopicName {
    TopicName(StrBytes::from_string(s.to_string()))
}

fn s(v: &str) -> StrBytes {
    StrBytes::from_string(v.to_string())
}

/// A valid uncompressed v2 batch of `n` small records (see tests/common/mod.rs).
fn record_batch(base_ts: i64, n: usize) -> Vec<u8> {
    let mut records = Vec::new();
    for i in 0..n {
        let mut r = vec![0u8];
        put_varint(&mut r, i as i64 * 10);
        put_varint(&mut r, i as i64);
        put_varint(&mut r, 1);
        r.push(b'k');
        put_varint(&mut r, 3);
        r.extend_from_slice(b"val");
        put_varint(&mut r, 1); // one header
        put_varint(&mut r, 1);
        r.push(b'h');
        put_varint(&mut r, 1);
        r.push(b'v');
        put_varint(&mut records, r.len() as i64);
        records.extend_from_slice(&r);
    }
    let n = n as i32;
    encode_batch(&records, n, base_ts, base_ts + (n as i64 - 1) * 10)
}

fn frame<T: Encodable>(key: ApiKey, version: i16, body: &T) -> Option<Bytes> {
    let header = RequestHeader::default()
        .with_request_api_key(key as i16)
        .with_request_api_version(version)
        .with_correlation_id(0x0102_0304)
        .with_client_id(Some(s("fuzz-client")));
    let mut buf = BytesMut::new();
    header
        .encode(&mut buf, key.request_header_version(version))
        .ok()?;
    // Fields that a version lacks make encoding fail: such variants are skipped.
    body.encode(&mut buf, version).ok()?;
    Some(buf.freeze())
}

fn variants(key: ApiKey, version: i16) -> Vec<Bytes> {
    let batch = {
        let mut b = record_batch(1_000, 3);
        b.extend(record_batch(2_000, 1));
        Bytes::from(b)
    };
    let id = Uuid::from_u128(0x0011_2233_4455_6677_8899_aabb_ccdd_eeff);
    let mut out = Vec::new();
    let mut push = |f: Option<Bytes>| out.extend(f);
    match key {
        ApiKey::Produce => {
            let req = |txn: Option<&str>| {
                ProduceRequest::default()
                    .with_transactional_id(txn.map(|t| s(t).into()))
                    .with_acks(-1)
                    .with_timeout_ms(30_000)
                    .with_topic_data(vec![
                        TopicProduceData::default()
                            .with_name(name("orders"))
                            .with_partition_data(vec![
                                PartitionProduceData::default()
                                    .with_index(0)
                                    .with_records(Some(batch.clone())),
                                PartitionProduceData::default()
                                    .with_index(1)
                                    .with_records(None),
                            ]),
                        TopicProduceData::default().with_name(name("empty")),
                    ])
            };
            push(frame(key, version, &req(None)));
            push(frame(key, version, &req(Some("txn-1"))));
        }
        ApiKey::Fetch => {
            let partitions = vec![
                FetchPartition::default()
                    .with_partition(0)
                    .with_fetch_offset(42)
                    .with_partition_max_bytes(1 << 20),
                FetchPartition::default()
                    .with_partition(3)
                    .with_current_leader_epoch(5)
                    .with_fetch_offset(0)
                    .with_log_start_offset(0)
                    .with_partition_max_bytes(1024),
            ];
            let by_name = FetchTopic::default()
                .with_topic(name("orders"))
                .with_partitions(partitions.clone());
            let by_id = FetchTopic::default()
                .with_topic_id(id)
                .with_partitions(partitions);
            for t in [by_name, by_id] {
                let base = FetchRequest::default()
                    .with_max_wait_ms(500)
                    .with_min_bytes(1)
                    .with_max_bytes(1 << 20)
                    .with_topics(vec![t.clone()]);
                push(frame(key, version, &base));
                let session = base
                    .clone()
                    .with_session_id(7)
                    .with_session_epoch(2)
                    .with_forgotten_topics_data(vec![
                        ForgottenTopic::default()
                            .with_topic(name("old"))
                            .with_partitions(vec![1, 2]),
                    ])
                    .with_rack_id(s("rack-a"));
                push(frame(key, version, &session));
                let session_id = base.clone().with_forgotten_topics_data(vec![
                    ForgottenTopic::default()
                        .with_topic_id(id)
                        .with_partitions(vec![1]),
                ]);
                push(frame(key, version, &session_id));
            }
        }
        ApiKey::ListOffsets => {
            let req = ListOffsetsRequest::default()
                .with_replica_id(BrokerId(-1))
                .with_topics(vec![
                    ListOffsetsTopic::default()
                        .with_name(name("orders"))
                        .with_partitions(vec![
                            ListOffsetsPartition::default()
                                .with_partition_index(0)
                                .with_timestamp(-1),
                            ListOffsetsPartition::default()
                                .with_partition_index(1)
                                .with_timestamp(1_700_000_000_000),
                        ]),
                ]);
            push(frame(key, version, &req));
            push(frame(key, version, &req.clone().with_isolation_level(1)));
        }
        ApiKey::Metadata => {
            push(frame(key, version, &MetadataRequest::default()));
            push(frame(
                key,
                version,
                &MetadataRequest::default().with_topics(Some(vec![])),
            ));
            push(frame(
                key,
                version,
                &MetadataRequest::default().with_topics(Some(vec![
                    MetadataRequestTopic::default().with_name(Some(name("orders"))),
                    MetadataRequestTopic::default().with_name(Some(name("b"))),
                ])),
            ));
            push(frame(
                key,
                version,
                &MetadataRequest::default()
                    .with_topics(Some(vec![
                        MetadataRequestTopic::default().with_topic_id(id),
                    ]))
                    .with_include_topic_authorized_operations(true),
            ));
        }
        ApiKey::ApiVersions => {
            push(frame(key, version, &ApiVersionsRequest::default()));
            push(frame(
                key,
                version,
                &ApiVersionsRequest::default()
                    .with_client_software_name(s("spate-fuzz"))
                    .with_client_software_version(s("1.0")),
            ));
        }
        ApiKey::CreateTopics => {
            let topic = CreatableTopic::default()
                .with_name(name("orders"))
                .with_num_partitions(3)
                .with_replication_factor(1)
                .with_configs(vec![
                    CreatableTopicConfig::default()
                        .with_name(s("retention.ms"))
                        .with_value(Some(s("1000"))),
                    CreatableTopicConfig::default().with_name(s("null.value")),
                ]);
            let assigned = CreatableTopic::default()
                .with_name(name("manual"))
                .with_num_partitions(-1)
                .with_replication_factor(-1)
                .with_assignments(vec![
                    CreatableReplicaAssignment::default()
                        .with_partition_index(0)
                        .with_broker_ids(vec![BrokerId(0)]),
                ]);
            let req = CreateTopicsRequest::default()
                .with_topics(vec![topic, assigned])
                .with_timeout_ms(1000);
            push(frame(key, version, &req));
            push(frame(key, version, &req.clone().with_validate_only(true)));
        }
        ApiKey::DeleteTopics => {
            push(frame(
                key,
                version,
                &DeleteTopicsRequest::default()
                    .with_topic_names(vec![name("orders"), name("b")])
                    .with_timeout_ms(1000),
            ));
            push(frame(
                key,
                version,
                &DeleteTopicsRequest::default()
                    .with_topics(vec![
                        DeleteTopicState::default().with_name(Some(name("orders"))),
                        DeleteTopicState::default().with_topic_id(id),
                    ])
                    .with_timeout_ms(1000),
            ));
        }
        ApiKey::DeleteRecords => {
            use kafka_protocol::messages::delete_records_request::{
                DeleteRecordsPartition, DeleteRecordsTopic,
            };
            push(frame(
                key,
                version,
                &DeleteRecordsRequest::default()
                    .with_topics(vec![
                        DeleteRecordsTopic::default()
                            .with_name(name("orders"))
                            .with_partitions(vec![
                                DeleteRecordsPartition::default()
                                    .with_partition_index(0)
                                    .with_offset(10),
                                DeleteRecordsPartition::default()
                                    .with_partition_index(1)
                                    .with_offset(-1),
                            ]),
                    ])
                    .with_timeout_ms(1000),
            ));
        }
        ApiKey::DescribeConfigs => {
            use kafka_protocol::messages::describe_configs_request::DescribeConfigsResource;
            let resource = DescribeConfigsResource::default()
                .with_resource_type(2)
                .with_resource_name(s("orders"));
            push(frame(
                key,
                version,
                &DescribeConfigsRequest::default().with_resources(vec![
                    resource.clone(),
                    resource.with_configuration_keys(Some(vec![s("retention.ms")])),
                ]),
            ));
            push(frame(
                key,
                version,
                &DescribeConfigsRequest::default()
                    .with_resources(vec![
                        DescribeConfigsResource::default()
                            .with_resource_type(4)
                            .with_resource_name(s("0")),
                    ])
                    .with_include_synonyms(true)
                    .with_include_documentation(true),
            ));
        }
        ApiKey::AlterConfigs => {
            use kafka_protocol::messages::alter_configs_request::{
                AlterConfigsResource, AlterableConfig,
            };
            let req = AlterConfigsRequest::default().with_resources(vec![
                AlterConfigsResource::default()
                    .with_resource_type(2)
                    .with_resource_name(s("orders"))
                    .with_configs(vec![
                        AlterableConfig::default()
                            .with_name(s("retention.ms"))
                            .with_value(Some(s("1000"))),
                        AlterableConfig::default().with_name(s("cleanup.policy")),
                    ]),
            ]);
            push(frame(key, version, &req));
            push(frame(key, version, &req.with_validate_only(true)));
        }
        ApiKey::IncrementalAlterConfigs => {
            use kafka_protocol::messages::incremental_alter_configs_request::{
                AlterConfigsResource, AlterableConfig,
            };
            let req = IncrementalAlterConfigsRequest::default().with_resources(vec![
                AlterConfigsResource::default()
                    .with_resource_type(2)
                    .with_resource_name(s("orders"))
                    .with_configs(vec![
                        AlterableConfig::default()
                            .with_name(s("retention.ms"))
                            .with_config_operation(0)
                            .with_value(Some(s("1000"))),
                        AlterableConfig::default()
                            .with_name(s("segment.bytes"))
                            .with_config_operation(1),
                    ]),
            ]);
            push(frame(key, version, &req));
            push(frame(key, version, &req.with_validate_only(true)));
        }
        _ => {}
    }
    out
}

/// (key, version, frame) for every supported API and version.
fn corpus() -> Vec<(ApiKey, i16, Bytes)> {
    let mut out = Vec::new();
    for &(key, min, max) in versions::SUPPORTED {
        for version in min..=max {
            let mut v = variants(key, version);
            if v.is_empty() {
                // An API added to SUPPORTED after this corpus was written: fuzz it from its
                // header alone until `variants` learns to build it.
                eprintln!("no corpus frame for {key:?} v{version}: using a bare header");
                let header = RequestHeader::default()
                    .with_request_api_key(key as i16)
                    .with_request_api_version(version)
                    .with_correlation_id(0x0102_0304);
                let mut buf = BytesMut::new();
                header
                    .encode(&mut buf, key.request_header_version(version))
                    .expect("header");
                buf.extend_from_slice(&[0; 16]);
                v.push(buf.freeze());
            }
            out.extend(v.into_iter().map(|f| (key, version, f)));
        }
    }
    out
}

// ---------------------------------------------------------------------------------------------
// Mutations

const HOSTILE_I32: [i32; 6] = [i32::MAX, i32::MIN, -1, -2, 0x0100_0000, 0x7fff_fff0];

fn mutate(rng: &mut Rng, input: &[u8], corpus: &[(ApiKey, i16, Bytes)]) -> Vec<u8> {
    let mut b = input.to_vec();
    let rounds = 1 + rng.below(4);
    for _ in 0..rounds {
        // Mostly leave the API key and version alone so the body decoders are reached.
        let lo = if b.len() > 8 && !rng.chance(8) { 8 } else { 0 };
        let pos = |rng: &mut Rng, len: usize| lo.min(len) + rng.below(len.saturating_sub(lo) + 1);
        match rng.below(11) {
            0 => {
                // Flip a bit.
                if b.len() > lo {
                    let i = lo + rng.below(b.len() - lo);
                    b[i] ^= 1 << rng.below(8);
                }
            }
            1 => {
                // Set a byte to an interesting or random value.
                if b.len() > lo {
                    let i = lo + rng.below(b.len() - lo);
                    b[i] = [0x00, 0xff, 0x7f, 0x80, 0x01, rng.byte()][rng.below(6)];
                }
            }
            2 => {
                // Insert random bytes.
                let i = pos(rng, b.len());
                let n = 1 + rng.below(16);
                let ins: Vec<u8> = (0..n).map(|_| rng.byte()).collect();
                b.splice(i..i, ins);
            }
            3 => {
                // Delete a range.
                if b.len() > lo {
                    let i = lo + rng.below(b.len() - lo);
                    let n = 1 + rng.below((b.len() - i).min(16));
                    b.drain(i..i + n);
                }
            }
            4 => {
                // Truncate.
                let i = pos(rng, b.len());
                b.truncate(i);
            }
            5 | 6 => {
                // A hostile i32 (array count, string or bytes length) somewhere.
                if b.len() >= lo + 4 {
                    let i = lo + rng.below(b.len() - lo - 3);
                    let v = HOSTILE_I32[rng.below(HOSTILE_I32.len())];
                    b[i..i + 4].copy_from_slice(&v.to_be_bytes());
                }
            }
            7 => {
                // A hostile i16 (string length).
                if b.len() >= lo + 2 {
                    let i = lo + rng.below(b.len() - lo - 1);
                    let v = [i16::MAX, i16::MIN, -1, -2][rng.below(4)];
                    b[i..i + 2].copy_from_slice(&v.to_be_bytes());
                }
            }
            8 => {
                // A hostile unsigned varint (compact count or length), replacing one byte.
                if b.len() > lo {
                    let i = lo + rng.below(b.len() - lo);
                    let v: &[u8] = [
                        &[0x81, 0x80, 0x80, 0x80, 0x08][..],       // 2^31 + 1
                        &[0xff, 0xff, 0xff, 0xff, 0x0f][..],       // u32::MAX
                        &[0xff, 0xff, 0xff, 0xff, 0xff, 0xff][..], // too long
                        &[0x80, 0x80, 0x80, 0x80, 0x10][..],       // overflows u32
                    ][rng.below(4)];
                    b.splice(i..i + 1, v.iter().copied());
                }
            }
            9 => {
                // Duplicate a range.
                if b.len() > lo {
                    let i = lo + rng.below(b.len() - lo);
                    let n = 1 + rng.below((b.len() - i).min(32));
                    let dup = b[i..i + n].to_vec();
                    let at = pos(rng, b.len());
                    b.splice(at..at, dup);
                }
            }
            _ => {
                // Splice the tail of another frame.
                let other = &corpus[rng.below(corpus.len())].2;
                let from = rng.below(other.len());
                let at = pos(rng, b.len());
                b.truncate(at);
                b.extend_from_slice(&other[from..]);
            }
        }
    }
    b
}

// ---------------------------------------------------------------------------------------------
// The checks

#[derive(Default)]
struct Stats {
    inputs: usize,
    decoded_ok: usize,
    crate_panics: usize,
    crate_panic_examples: Vec<String>,
}

/// Feeds one input to everything under test. Spate panics fail the test with the seed;
/// crate panics are counted.
fn check(input: &[u8], seed: u64, stats: &mut Stats) {
    stats.inputs += 1;
    let frame = Bytes::copy_from_slice(input);

    // Spate's own decoder: must never let a panic out.
    let decoded = guarded(|| decode_request(frame.clone())).unwrap_or_else(|p| {
        panic!(
            "decode_request panicked (SPATE_FUZZ_SEED={seed}): {p}\ninput: {}",
            hex(input)
        )
    });
    if let Ok(Decoded::Request(req)) = &decoded {
        stats.decoded_ok += 1;
        // What the Produce handler does next with each partition's records.
        if let RequestKind::Produce(p) = &req.body {
            for t in &p.topic_data {
                for part in &t.partition_data {
                    if let Some(records) = &part.records {
                        check_batches(records, seed);
                    }
                }
            }
        }
    }

    // The crate's decoders, without Spate's catch_unwind.
    if input.len() >= 4 {
        let key = i16::from_be_bytes([input[0], input[1]]);
        let version = i16::from_be_bytes([input[2], input[3]]);
        if let Ok(api_key) = ApiKey::try_from(key) {
            let valid = api_key.valid_versions();
            if version >= valid.min && version <= valid.max {
                let mut buf = frame.clone();
                let r = guarded(|| {
                    let _ =
                        RequestHeader::decode(&mut buf, api_key.request_header_version(version))?;
                    RequestKind::decode(api_key, &mut buf, version)
                });
                if let Err(p) = r {
                    stats.crate_panics += 1;
                    if stats.crate_panic_examples.len() < 5 {
                        stats.crate_panic_examples.push(format!(
                            "{api_key:?} v{version}: {p}\n    input: {}",
                            hex(input)
                        ));
                    }
                }
            }
        }
    }

    // Spate's batch code on the raw bytes too.
    check_batches(&frame, seed);
}

fn check_batches(records: &Bytes, seed: u64) {
    let mut accepted = Vec::new();
    for max in [usize::MAX, 1 << 20, 64] {
        let split = guarded(|| split_produce_records(records, max)).unwrap_or_else(|p| {
            panic!(
                "split_produce_records(max {max}) panicked (SPATE_FUZZ_SEED={seed}): {p}\n\
                 input: {}",
                hex(records)
            )
        });
        if let Ok(batches) = split {
            for b in batches {
                assert!(
                    b.bytes.len() <= max,
                    "batch of {} bytes accepted over the maximum {max} (SPATE_FUZZ_SEED={seed})",
                    b.bytes.len()
                );
                assert_eq!(b.bytes.len(), b.header.total_len());
                accepted.push(b.bytes);
            }
        }
    }
    // The timestamp lookup runs on stored batches, i.e. on batches Produce accepted; also on
    // the raw bytes, since it must not trust a segment file either.
    accepted.push(records.clone());
    for bytes in &accepted {
        guarded(|| {
            let _ = BatchHeader::parse(bytes);
            for ts in [i64::MIN, -1, 0, 1_005, i64::MAX] {
                let _ = first_offset_at_or_after(bytes, ts);
            }
        })
        .unwrap_or_else(|p| {
            panic!(
                "first_offset_at_or_after panicked (SPATE_FUZZ_SEED={seed}): {p}\ninput: {}",
                hex(bytes)
            )
        });
    }
}

fn report(what: &str, seed: u64, stats: &Stats, started: Instant) {
    eprintln!(
        "{what}: seed {seed}, {} inputs, {} decoded as requests, {} panics inside kafka-protocol, {:?}",
        stats.inputs,
        stats.decoded_ok,
        stats.crate_panics,
        started.elapsed()
    );
    for e in &stats.crate_panic_examples {
        eprintln!("  kafka-protocol panic: {e}");
    }
}

// ---------------------------------------------------------------------------------------------
// Tests

#[test]
fn valid_frames_of_every_supported_version_decode() {
    install_hook();
    // Only frames encoded from typed requests (not corpus()'s bare-header fallbacks).
    let valid: Vec<(ApiKey, i16, Bytes)> = versions::SUPPORTED
        .iter()
        .flat_map(|&(key, min, max)| (min..=max).map(move |v| (key, v)))
        .flat_map(|(key, v)| variants(key, v).into_iter().map(move |f| (key, v, f)))
        .collect();
    for (key, version, f) in &valid {
        match decode_request(f.clone()) {
            Ok(Decoded::Request(r)) => {
                assert_eq!((r.api_key, r.version), (*key, *version));
                assert_eq!(r.header.correlation_id, 0x0102_0304);
            }
            other => panic!("{key:?} v{version} did not decode: {other:?}"),
        }
        // Every truncation of a valid frame is an error or (where the tail is optional
        // tagged fields) a request; never a panic.
        let seed = 0;
        let mut stats = Stats::default();
        for cut in 0..f.len() {
            check(&f[..cut], seed, &mut stats);
        }
        // kafka-protocol's own panics are reported, not failed (the broker contains them).
        if stats.crate_panics > 0 {
            eprintln!(
                "kafka-protocol panicked on {} truncations of {key:?} v{version}: {:?}",
                stats.crate_panics, stats.crate_panic_examples
            );
        }
    }
}

#[test]
fn hostile_counts_at_every_position() {
    install_hook();
    let started = Instant::now();
    let corpus = corpus();
    let mut stats = Stats::default();
    for (_, _, f) in &corpus {
        for i in 8..f.len().saturating_sub(3) {
            for v in [i32::MAX, i32::MIN, -2] {
                let mut b = f.to_vec();
                b[i..i + 4].copy_from_slice(&v.to_be_bytes());
                check(&b, 0, &mut stats);
            }
        }
        for i in 8..f.len() {
            let mut b = f.to_vec();
            b.splice(i..i + 1, [0x81, 0x80, 0x80, 0x80, 0x08]);
            check(&b, 0, &mut stats);
        }
    }
    report("hostile counts", 0, &stats, started);
}

#[test]
fn mutated_valid_frames_never_panic() {
    install_hook();
    let seed = seed();
    let started = Instant::now();
    let mut rng = Rng::new(seed);
    let corpus = corpus();
    let mut stats = Stats::default();
    for _ in 0..cases() * 2 {
        let (_, _, f) = &corpus[rng.below(corpus.len())];
        let input = mutate(&mut rng, f, &corpus);
        check(&input, seed, &mut stats);
    }
    report("mutated frames", seed, &stats, started);
}

#[test]
fn arbitrary_bytes_never_panic() {
    install_hook();
    let seed = seed();
    let started = Instant::now();
    let mut rng = Rng::new(seed ^ 0x9e37_79b9_7f4a_7c15);
    let mut stats = Stats::default();
    let mut batch_seed = record_batch(0, 2);
    for _ in 0..cases() {
        let cap = if rng.chance(4) { 1024 } else { 96 };
        let len = rng.below(cap);
        let mut input: Vec<u8> = (0..len).map(|_| rng.byte()).collect();
        if input.len() >= 4 && !rng.chance(4) {
            // A supported (key, version) so the body decoders run on the noise.
            let (key, min, max) = versions::SUPPORTED[rng.below(versions::SUPPORTED.len())];
            let version = min + rng.below((max - min + 1) as usize) as i16;
            input[0..2].copy_from_slice(&(key as i16).to_be_bytes());
            input[2..4].copy_from_slice(&version.to_be_bytes());
        }
        check(&input, seed, &mut stats);
        // Batches with a valid-looking prefix and random damage, so the checks past the
        // length and magic are reached.
        let mut b = batch_seed.clone();
        for _ in 0..1 + rng.below(3) {
            let i = rng.below(b.len());
            b[i] = rng.byte();
        }
        if rng.chance(3) && b.len() >= 43 {
            // Extreme base or max timestamp.
            let v = [i64::MAX, i64::MAX - 3, i64::MIN, i64::MIN + 3, -1][rng.below(5)];
            let at = [27, 35][rng.below(2)];
            b[at..at + 8].copy_from_slice(&v.to_be_bytes());
        }
        if rng.chance(2) {
            let crc = crc32c::crc32c(&b[21.min(b.len())..]);
            if b.len() >= 21 {
                b[17..21].copy_from_slice(&crc.to_be_bytes());
            }
        }
        if rng.chance(3) {
            b.truncate(rng.below(b.len() + 1));
        }
        check_batches(&Bytes::from(b), seed);
        if rng.chance(50) {
            batch_seed = record_batch(rng.next() as i64, 1 + rng.below(4));
        }
    }
    report("arbitrary bytes", seed, &stats, started);
}

/// Record deltas are client-chosen and not validated on Produce; the timestamp lookup walks
/// them. Regression for an overflow panic found by `arbitrary_bytes_never_panic`.
#[test]
fn timestamp_lookup_survives_extreme_record_deltas() {
    install_hook();
    // (base offset, base timestamp, record timestamp delta, record offset delta)
    let cases = [
        (0i64, i64::MAX - 5, 100i64, 0i64),
        (0, i64::MIN + 5, -100, 0),
        (1, 0, 0, i64::MAX),
        (-5, 0, 0, i64::MIN),
        (i64::MAX, 0, 0, 1),
    ];
    let mut failures = Vec::new();
    for (base_offset, base_ts, ts_delta, off_delta) in cases {
        let mut r = vec![0u8];
        put_varint(&mut r, ts_delta);
        put_varint(&mut r, off_delta);
        put_varint(&mut r, -1);
        put_varint(&mut r, 1);
        r.push(b'x');
        put_varint(&mut r, 0);
        let mut records = Vec::new();
        put_varint(&mut records, r.len() as i64);
        records.extend_from_slice(&r);
        let mut b = encode_batch(&records, 1, base_ts, i64::MAX);
        // The base offset is outside the CRC.
        b[0..8].copy_from_slice(&base_offset.to_be_bytes());
        // The batch itself passes Produce validation...
        let split = split_produce_records(&Bytes::from(b.clone()), 1 << 20);
        assert!(split.is_ok(), "{split:?}");
        // ...and the timestamp lookup over it must not panic.
        for target in [i64::MIN, 0, i64::MAX - 10, i64::MAX] {
            if let Err(p) = guarded(|| first_offset_at_or_after(&b, target)) {
                failures.push(format!(
                    "base offset {base_offset}, base ts {base_ts}, ts delta {ts_delta}, \
                     offset delta {off_delta}, target {target}: {p}"
                ));
            }
        }
    }
    assert!(
        failures.is_empty(),
        "first_offset_at_or_after panicked:\n{}",
        failures.join("\n")
    );
}
