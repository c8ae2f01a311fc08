"""Log compaction (cleanup.policy=compact): real clients' batches in every codec are cleaned to
the last value of each key at its original offset, tombstones go after delete.retention.ms, a
consumer at a cleaned-away offset gets the next record, and a kill at each stage of a clean's
swap (through the fault seam, SPATE_TEST_FAULTS) loses nothing.

The cleaner is made to look often (--log-cleaner-backoff-ms); every wait has a deadline.
"""

import re
import time
import urllib.request

from confluent_kafka import TopicPartition
from confluent_kafka.admin import AlterConfigOpType, ConfigEntry, ConfigResource

from conftest import free_port
from kafkautil import admin, consumer, create_topic, producer, unique_topic, wait_until
from test_cluster import FAST as CLUSTER_FAST
from test_cluster import cluster_factory, create  # noqa: F401 - the fixture is used by name

FAST = ["--log-cleaner-backoff-ms", "200"]
COMPACT = {
    "cleanup.policy": "compact",
    "segment.ms": "1000",
    "min.cleanable.dirty.ratio": "0.01",
    "delete.retention.ms": "1000",
}


def kafka_python_producer(bootstrap, codec):
    from kafka import KafkaProducer
    return KafkaProducer(bootstrap_servers=bootstrap, compression_type=codec, linger_ms=5,
                         batch_size=64 * 1024, request_timeout_ms=10000)


def produce_all(bootstrap, topic, records):
    """Produces [(key, value)] in four quarters: confluent-kafka lz4 and zstd, kafka-python gzip
    and snappy, in order. Returns {key: (offset, value)} of each key's last record."""
    last = {}
    quarter = (len(records) + 3) // 4
    parts = [records[i * quarter:(i + 1) * quarter] for i in range(4)]
    for codec, part in zip(["lz4", "zstd"], parts[:2]):
        p = producer(bootstrap, **{"compression.type": codec, "linger.ms": 5})
        acked = []
        for k, v in part:
            while True:
                try:
                    p.produce(topic, key=k, value=v,
                              on_delivery=lambda err, m: acked.append((err, m.offset(), m.key(), m.value())))
                    break
                except BufferError:
                    p.poll(0.05)
            p.poll(0)
        assert p.flush(30) == 0
        assert all(err is None for err, *_ in acked), [a for a in acked if a[0] is not None][:3]
        for _, off, k, v in sorted(acked, key=lambda a: a[1]):
            last[k] = (off, v)
    for codec, part in zip(["gzip", "snappy"], parts[2:]):
        p = kafka_python_producer(bootstrap, codec)
        futures = [(k, v, p.send(topic, key=k, value=v)) for k, v in part]
        p.flush(30)
        for k, v, f in sorted(((k, v, f.get(timeout=30)) for k, v, f in futures), key=lambda a: a[2].offset):
            last[k] = (f.offset, v)
        p.close(timeout=10)
    return last


def roll(bootstrap, topic, last_write):
    """Waits out segment.ms since the last write, then writes one record: the active segment
    rolls, so everything before it is cleanable."""
    wait_until(lambda: time.monotonic() - last_write > 1.2, timeout=5, desc="segment.ms to pass")
    p = producer(bootstrap)
    acked = []
    p.produce(topic, key=b"roll", value=b"roll", on_delivery=lambda err, m: acked.append((err, m.offset())))
    assert p.flush(15) == 0 and acked[0][0] is None, acked
    return acked[0][1]


def read_all(bootstrap, topic, start=None):
    """Every record of partition 0 from `start` (the log start by default) to its end, as
    [(offset, key, value)], read with confluent-kafka."""
    c = consumer(bootstrap)
    try:
        low, high = wait_until(lambda: c.get_watermark_offsets(TopicPartition(topic, 0), timeout=5),
                               desc="watermarks")
        c.assign([TopicPartition(topic, 0, low if start is None else start)])
        out = []
        deadline = time.monotonic() + 30
        while not out or out[-1][0] < high - 1:
            assert time.monotonic() < deadline, f"read {len(out)} records up to {out[-1:]} of {topic}, end {high}"
            m = c.poll(0.2)
            if m is None or m.error() is not None:
                continue
            out.append((m.offset(), m.key(), m.value()))
        return out
    finally:
        c.close()


def alter(a, topic, configs):
    fs = a.incremental_alter_configs([ConfigResource(
        ConfigResource.Type.TOPIC, topic,
        incremental_configs=[ConfigEntry(k, v, incremental_operation=AlterConfigOpType.SET)
                             for k, v in configs.items()])])
    for f in fs.values():
        f.result(timeout=15)


def compacted_as_expected(records, last, tombstoned, total):
    """Whether the log holds each live key's last value at its offset, no tombstoned key, and
    under a quarter of what was written; raises with the difference when it never does."""
    got = {}
    for off, k, v in records:
        got.setdefault(k, []).append((off, v))
    live_ok = all(got.get(k, [])[-1:] == [(off, v)] for k, (off, v) in last.items() if k not in tombstoned)
    return live_ok and not (tombstoned & got.keys()) and len(records) < total / 4


def test_compacted_topic_from_four_codecs_keeps_each_keys_last_value(broker_factory):
    mport = free_port()
    b = broker_factory(shards=2, extra_args=FAST + ["--metrics-listen", f"127.0.0.1:{mport}"])
    topic = unique_topic("compact")
    create_topic(b.bootstrap, topic, 1, config=COMPACT)
    keys = [f"key-{i}".encode() for i in range(500)]
    records = [(keys[i % 500], f"value-{i}".encode()) for i in range(20_000)]
    last = produce_all(b.bootstrap, topic, records)
    tombstoned = set(keys[:100])
    p = producer(b.bootstrap)
    for k in sorted(tombstoned):
        p.produce(topic, key=k, value=None)
    assert p.flush(15) == 0
    roll_offset = roll(b.bootstrap, topic, time.monotonic())
    last[b"roll"] = (roll_offset, b"roll")
    total = len(records) + len(tombstoned) + 1

    def done():
        return compacted_as_expected(read_all(b.bootstrap, topic), last, tombstoned, total)
    wait_until(done, timeout=90, interval=1.0, desc="the topic to be compacted")
    cleaned = read_all(b.bootstrap, topic)
    with urllib.request.urlopen(f"http://127.0.0.1:{mport}/metrics", timeout=10) as r:
        metrics = r.read().decode()
    cleans = sum(int(m) for m in re.findall(r'^spate_log_cleaner_cleans_total\{[^}]*\} (\d+)', metrics, re.M))
    read_bytes = sum(int(m) for m in re.findall(r'^spate_log_cleaner_bytes_read_total\{[^}]*\} (\d+)', metrics, re.M))
    assert cleans >= 1 and read_bytes > 0, metrics
    # A consumer starting at a cleaned-away offset gets the next record.
    present = [off for off, _, _ in cleaned]
    gap = next(o for o in range(present[0], present[-1]) if o not in set(present))
    following = read_all(b.bootstrap, topic, start=gap)
    assert following[0][0] == min(o for o in present if o > gap), (gap, following[:2])
    # kafka-python reads the sparse log (with the producers' kept empty batches) the same way.
    from kafka import KafkaConsumer
    from kafka import TopicPartition as KTP
    kc = KafkaConsumer(bootstrap_servers=b.bootstrap, enable_auto_commit=False, consumer_timeout_ms=3000)
    kc.assign([KTP(topic, 0)])
    kc.seek_to_beginning()
    seen = [(m.offset, m.key, m.value) for m in kc]
    kc.close()
    assert seen == cleaned
    # Across a kill -9 and a restart, the cleaned log reads the same.
    b.kill()
    b.start()
    assert read_all(b.bootstrap, topic) == cleaned
    assert "log cleaned" in b.log_text(0)


def test_a_kill_at_each_stage_of_a_clean_swap_loses_nothing(broker_factory, monkeypatch):
    """The fault seam aborts the broker (as kill -9 would) at one stage of a clean's swap; the
    restart completes or rolls the clean back, and the next clean compacts the log."""
    b = None
    for stage in ["clean-written", "clean-commit", "clean-committed", "clean-swapping", "clean-swapped",
                  "clean-deleted"]:
        topic = unique_topic("swap")
        monkeypatch.setenv("SPATE_TEST_FAULTS", f"{stage}:ABORT:{topic}-0:1")
        if b is None:
            b = broker_factory(shards=1, extra_args=FAST)
        else:
            b.start()
        # Written as a delete topic, then made compacted live: the first clean (and the abort)
        # comes only once everything is written.
        a = create_topic(b.bootstrap, topic, 1, config={"segment.ms": "1000", "segment.bytes": "16384"})
        keys = [f"k{i}".encode() for i in range(40)]
        records = [(keys[i % 40], f"{stage}-{i}".encode() * 4) for i in range(2000)]
        last = produce_all(b.bootstrap, topic, records)
        last[b"roll"] = (roll(b.bootstrap, topic, time.monotonic()), b"roll")
        alter(a, topic, COMPACT)
        wait_until(lambda: not b.alive(), timeout=60, desc=f"the broker to abort at {stage}")
        assert "aborting at" in b.log_text(), b.log_tail()
        b.kill()
        monkeypatch.delenv("SPATE_TEST_FAULTS")
        b.start()
        recovery = ("rolled back a log clean" if stage in ("clean-written", "clean-commit")
                    else "completed a log clean")
        assert recovery in b.log_text(), (stage, b.log_tail())
        # Right after the restart, before or after the next clean: nothing acknowledged is lost.
        got = {k: (off, v) for off, k, v in read_all(b.bootstrap, topic)}
        assert all(got.get(k) == want for k, want in last.items()), stage
        wait_until(lambda: compacted_as_expected(read_all(b.bootstrap, topic), last, set(), len(records) + 1),
                   timeout=30, interval=0.5, desc=f"the clean after the kill at {stage}")
        b.stop()


def test_connect_and_schema_registry_topics_describe_as_compacted(broker):
    """Kafka Connect creates its config, offset and status topics, and Schema Registry its
    _schemas topic, with cleanup.policy=compact and checks it with DescribeConfigs (Connect
    refuses to start when the policy is not compact only)."""
    a = admin(broker.bootstrap)
    for t in ["connect-configs", "connect-offsets", "connect-status", "_schemas"]:
        create_topic(broker.bootstrap, t, 1, config={"cleanup.policy": "compact"})
        res = ConfigResource(ConfigResource.Type.TOPIC, t)
        got = a.describe_configs([res])[res].result(timeout=15)
        assert got["cleanup.policy"].value == "compact", (t, got["cleanup.policy"])
    res = ConfigResource(ConfigResource.Type.TOPIC, "_schemas")
    alter(a, "_schemas", {"cleanup.policy": "compact,delete"})
    got = a.describe_configs([res])[res].result(timeout=15)
    assert got["cleanup.policy"].value == "compact,delete"
    assert got["delete.retention.ms"].value == "86400000"
    broker_res = ConfigResource(ConfigResource.Type.BROKER, "0")
    got = a.describe_configs([broker_res])[broker_res].result(timeout=15)
    assert got["log.cleanup.policy"].value == "delete"
    assert got["log.cleaner.backoff.ms"].value == "15000"


def test_a_follower_catches_up_from_a_compacted_leader(cluster_factory):
    """A follower that was down while its leader compacted fetches the leader's sparse log
    (batches past its log end, gaps inside them), rejoins the ISR, and holds each live key's
    last value at its offset in its own files."""
    from kafka.record.default_records import DefaultRecordBatch

    from jepsen import batches_on_disk
    from test_replication import isr, leaders

    c = cluster_factory(extra_args=CLUSTER_FAST + FAST)
    t = unique_topic("compact-repl")
    create(c.bootstrap, t, 1, rf=3, config=COMPACT | {"min.insync.replicas": "1"})
    wait_until(lambda: len(isr(c, t).get(0, [])) == 3, timeout=60, desc="a full ISR")
    leader = leaders(c, t)[0]
    follower = next(i for i in c.ids if i != leader and i != c.controller())
    c.nodes[follower].kill()
    wait_until(lambda: follower not in isr(c, t).get(0, [follower]), timeout=30, desc="the follower out of the ISR")
    keys = [f"k{i}".encode() for i in range(40)]
    p = producer(c.bootstrap, **{"compression.type": "gzip"})
    acked = []
    for i in range(2000):
        p.produce(t, key=keys[i % 40], value=f"v{i}".encode(), partition=0,
                  on_delivery=lambda err, m: acked.append((err, m.offset(), m.key(), m.value())))
        p.poll(0)
    for k in keys[:10]:
        p.produce(t, key=k, value=None, partition=0,
                  on_delivery=lambda err, m: acked.append((err, m.offset(), m.key(), m.value())))
    assert p.flush(30) == 0 and all(a[0] is None for a in acked)
    last = {k: (off, v) for _, off, k, v in sorted(acked, key=lambda a: a[1])}
    last[b"roll"] = (roll(c.bootstrap, t, time.monotonic()), b"roll")
    tombstoned = set(keys[:10])
    wait_until(lambda: compacted_as_expected(read_all(c.bootstrap, t), last, tombstoned, 2011),
               timeout=60, interval=0.5, desc="the leader's log compacted")
    c.nodes[follower].start()
    wait_until(lambda: len(isr(c, t).get(0, [])) == 3, timeout=60, desc="the follower back in the ISR")

    def follower_compacted():
        records = [(r.offset, r.key, r.value)
                   for _, _, raw in batches_on_disk(c.nodes[follower].data_dir, t, 0)
                   for r in DefaultRecordBatch(bytearray(raw))]
        return compacted_as_expected(sorted(records), last, tombstoned, 2011)
    wait_until(follower_compacted, timeout=30, interval=0.5, desc="the follower's files compacted")


def test_retention_never_cuts_a_compact_only_topic_and_still_cuts_compact_delete(broker_factory):
    """cleanup.policy=compact keeps every key's last record however old (retention.ms does not
    apply), compact,delete applies both."""
    b = broker_factory(shards=1, extra_args=["--retention-check-ms", "100", "--log-cleaner-backoff-ms", "100000"])
    topics = {policy: unique_topic("policy") for policy in ["compact", "compact,delete", "delete"]}
    for policy, t in topics.items():
        create_topic(b.bootstrap, t, 1, config={"cleanup.policy": policy, "retention.ms": "1", "segment.ms": "1000"})
    p = producer(b.bootstrap)
    for t in topics.values():
        for i in range(10):
            p.produce(t, key=b"k%d" % i, value=b"v")
    assert p.flush(15) == 0
    started = time.monotonic()
    for t in topics.values():
        roll(b.bootstrap, t, started)
    c = consumer(b.bootstrap)

    def low(t):
        return c.get_watermark_offsets(TopicPartition(t, 0), timeout=5)[0]
    try:
        wait_until(lambda: low(topics["delete"]) == 10 and low(topics["compact,delete"]) == 10,
                   timeout=30, desc="retention to delete the old segments of the delete topics")
        assert low(topics["compact"]) == 0
    finally:
        c.close()
    assert [off for off, _, _ in read_all(b.bootstrap, topics["compact"])] == list(range(11))


def test_a_compacted_topic_refuses_records_without_a_key(broker):
    """As Kafka: INVALID_RECORD for a batch with a keyless record, in any codec; a delete topic
    takes them."""
    from confluent_kafka import KafkaError
    compacted, plain = unique_topic("keyless"), unique_topic("keyless")
    create_topic(broker.bootstrap, compacted, 1, config={"cleanup.policy": "compact"})
    create_topic(broker.bootstrap, plain, 1)
    for codec in ["none", "zstd"]:
        p = producer(broker.bootstrap, **{"compression.type": codec, "retries": 0})
        got = []
        for topic, key in [(compacted, None), (compacted, b"k"), (plain, None)]:
            p.produce(topic, key=key, value=b"v",
                      on_delivery=lambda err, m, t=topic, k=key: got.append((t, k, err and err.code())))
            assert p.flush(15) == 0
        assert got == [(compacted, None, KafkaError.INVALID_RECORD), (compacted, b"k", None),
                       (plain, None, None)], (codec, got)
