"""kafka-python (pure-Python client, api_version probed via ApiVersions) round trip."""

import time

from kafka import KafkaConsumer, KafkaProducer, TopicPartition
from kafka.partitioner.default import murmur2

from kafkautil import create_topic, unique_topic

TIMEOUTS = {"request_timeout_ms": 10000, "bootstrap_timeout_ms": 15000, "reconnect_backoff_ms": 50,
            "retry_backoff_ms": 100}


def _expected_partition(key, nparts):
    return (murmur2(key) & 0x7FFFFFFF) % nparts


def test_kafka_python_roundtrip(broker, rng):
    seed = rng.seed_value
    topic = unique_topic("kp")
    nparts = 5
    create_topic(broker.bootstrap, topic, nparts)
    ctx = f"(seed={seed}, topic={topic})"

    producer = KafkaProducer(bootstrap_servers=broker.bootstrap, acks="all", linger_ms=5,
                             enable_idempotence=False,  # the default (idempotent) is test_idempotence.py's
                             max_block_ms=15000, **TIMEOUTS)
    try:
        sent = []  # (key, value, headers, RecordMetadata) in send order
        futures = []
        for i in range(300):
            key = f"kp-{rng.randrange(25)}".encode()
            value = f"{i}:{rng.randrange(1 << 40):x}".encode()
            headers = [("i", str(i).encode()), ("lib", b"kafka-python")]
            futures.append((key, value, headers, producer.send(topic, key=key, value=value, headers=headers)))
        producer.flush(timeout=30)
        for key, value, headers, fut in futures:
            md = fut.get(timeout=30)
            sent.append((key, value, headers, md))
    finally:
        producer.close(timeout=10)

    # Keys on consistent partitions (the Java-compatible murmur2 partitioner saw all partitions).
    for key, _, _, md in sent:
        assert md.topic == topic
        assert md.partition == _expected_partition(key, nparts), f"key {key} on partition {md.partition} {ctx}"
    # Metadata offsets per partition: contiguous from 0, increasing in send order.
    for part in range(nparts):
        offs = [md.offset for _, _, _, md in sent if md.partition == part]
        assert offs == list(range(len(offs))), f"partition {part} offsets {offs[:10]}... {ctx}"

    consumer = KafkaConsumer(bootstrap_servers=broker.bootstrap, group_id=None, enable_auto_commit=False,
                             fetch_max_wait_ms=100, **TIMEOUTS)
    try:
        tps = [TopicPartition(topic, p) for p in range(nparts)]
        consumer.assign(tps)
        consumer.seek_to_beginning()
        records = []
        deadline = time.monotonic() + 30
        while len(records) < len(sent):
            assert time.monotonic() < deadline, f"consumed {len(records)}/{len(sent)} within 30s {ctx}"
            for tp, recs in consumer.poll(timeout_ms=200).items():
                records.extend(recs)
        # Short settle to catch duplicates.
        settle = time.monotonic() + 0.5
        while time.monotonic() < settle:
            for tp, recs in consumer.poll(timeout_ms=100).items():
                records.extend(recs)
    finally:
        consumer.close(autocommit=False)

    assert len(records) == len(sent), f"consumed {len(records)} != sent {len(sent)} {ctx}"
    got = {(r.partition, r.offset): r for r in records}
    assert len(got) == len(records), f"duplicate records {ctx}"
    for key, value, headers, md in sent:
        r = got.get((md.partition, md.offset))
        assert r is not None, f"record at {md.partition}/{md.offset} missing {ctx}"
        assert (r.key, r.value) == (key, value), f"{md.partition}/{md.offset}: {r.key!r}={r.value!r} {ctx}"
        assert [(k, v) for k, v in r.headers] == headers, f"headers {r.headers} != {headers} {ctx}"
    # Order within each partition equals send order.
    for part in range(nparts):
        consumed = [r.value for r in records if r.partition == part]
        expected = [v for _, v, _, md in sent if md.partition == part]
        assert consumed == expected, f"partition {part} order differs {ctx}"

    # ListOffsets through kafka-python agrees.
    consumer = KafkaConsumer(bootstrap_servers=broker.bootstrap, group_id=None, enable_auto_commit=False,
                             **TIMEOUTS)
    try:
        tps = [TopicPartition(topic, p) for p in range(nparts)]
        ends = consumer.end_offsets(tps)
        begins = consumer.beginning_offsets(tps)
    finally:
        consumer.close(autocommit=False)
    for tp in tps:
        n = sum(1 for _, _, _, md in sent if md.partition == tp.partition)
        assert (begins[tp], ends[tp]) == (0, n), f"{tp}: begin/end {begins[tp]}/{ends[tp]} != 0/{n} {ctx}"
