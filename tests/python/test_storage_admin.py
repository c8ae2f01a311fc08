"""Storage settings through the admin APIs: DescribeConfigs, IncrementalAlterConfigs,
AlterConfigs and DeleteRecords, and what the settings do to the log (segment rolls, retention
by size and by time, lookup by timestamp across segments). Every wait has a deadline."""

import time

import kafka
import kafka.errors
import pytest
from confluent_kafka import OFFSET_BEGINNING, KafkaError, KafkaException, TopicPartition
from confluent_kafka.admin import AlterConfigOpType, ConfigEntry, ConfigResource, ConfigSource, ResourceType

from kafka import KafkaAdminClient

from kafkautil import DeliveryLog, admin, consume, consumer, create_topic, error_code, flush_all, producer, \
    unique_topic, wait_until

ADMIN_TIMEOUT = 15
LONG_MAX = "9223372036854775807"
TOPIC_CONFIGS = {"message.timestamp.type", "max.message.bytes", "segment.bytes", "flush.messages", "flush.ms",
                 "segment.ms", "retention.ms", "retention.bytes"}


# ---------------------------------------------------------------------------------------- helpers

def describe_topic(a, topic):
    fs = a.describe_configs([ConfigResource(ResourceType.TOPIC, topic)], request_timeout=ADMIN_TIMEOUT)
    (f,) = fs.values()
    return f.result(timeout=ADMIN_TIMEOUT)


def describe_broker(a, name="0"):
    fs = a.describe_configs([ConfigResource(ResourceType.BROKER, name)], request_timeout=ADMIN_TIMEOUT)
    (f,) = fs.values()
    return f.result(timeout=ADMIN_TIMEOUT)


def alter(a, topic, ops, validate_only=False, resource_type=ResourceType.TOPIC):
    """ops: [(name, value, AlterConfigOpType)]; returns the resource's future."""
    entries = [ConfigEntry(n, v, incremental_operation=op) for n, v, op in ops]
    fs = a.incremental_alter_configs([ConfigResource(resource_type, topic, incremental_configs=entries)],
                                     request_timeout=ADMIN_TIMEOUT, validate_only=validate_only)
    (f,) = fs.values()
    return f


def alter_error(a, topic, ops, **kw):
    with pytest.raises(KafkaException) as ei:
        alter(a, topic, ops, **kw).result(timeout=ADMIN_TIMEOUT)
    return ei.value


def partition_dir(b, topic, p):
    return b.data_dir / f"{topic}-{p}"


def log_files(b, topic, p):
    return sorted(partition_dir(b, topic, p).glob("*.log"))


def log_bytes(b, topic, p):
    return sum(f.stat().st_size for f in log_files(b, topic, p))


def watermarks(bootstrap, topic, p):
    c = consumer(bootstrap)
    try:
        return c.get_watermark_offsets(TopicPartition(topic, p), timeout=10, cached=False)
    finally:
        c.close()


def produce_small_batches(bootstrap, topic, n, size=200, partition=0, timestamps=None):
    """Produces n values of `size` bytes in batches under 1 KiB (several segments of 1 KiB)."""
    p = producer(bootstrap, **{"linger.ms": 1, "batch.size": 900})
    log = DeliveryLog()
    values = [(f"{i:06d}-".encode() + b"x" * size)[:size] for i in range(n)]
    for i, v in enumerate(values):
        kw = {} if timestamps is None else {"timestamp": timestamps[i]}
        p.produce(topic, v, partition=partition, on_delivery=log, **kw)
        p.poll(0)
    flush_all(p)
    assert not log.errors, log.errors[:3]
    assert len(log.ok) == n
    return values, log


# ---------------------------------------------------------------------------- DescribeConfigs

def test_describe_topic_configs(broker_factory):
    b = broker_factory(shards=2, extra_args=["--retention-bytes", "1000000"])
    topic = unique_topic("cfg-desc")
    a = create_topic(b.bootstrap, topic, 2, config={"retention.ms": "3600000", "segment.bytes": "1048576",
                                                     "message.timestamp.type": "LogAppendTime"})
    cfg = describe_topic(a, topic)
    assert TOPIC_CONFIGS <= set(cfg), sorted(cfg)
    for name, value in [("retention.ms", "3600000"), ("segment.bytes", "1048576"),
                        ("message.timestamp.type", "LogAppendTime")]:
        assert cfg[name].value == value, (name, cfg[name])
        assert cfg[name].source == ConfigSource.DYNAMIC_TOPIC_CONFIG.value, (name, cfg[name].source)
        assert not cfg[name].is_read_only
    # Broker defaults: set on the command line (static) or built in (default).
    assert cfg["retention.bytes"].value == "1000000"
    assert cfg["retention.bytes"].source == ConfigSource.STATIC_BROKER_CONFIG.value
    assert cfg["max.message.bytes"].value == str(1024 * 1024 + 12)
    assert cfg["max.message.bytes"].source == ConfigSource.DEFAULT_CONFIG.value
    # Unset flush bounds are Kafka's "never" (acks=all then waits for fdatasync).
    assert cfg["flush.ms"].value == LONG_MAX and cfg["flush.messages"].value == LONG_MAX
    assert cfg["flush.ms"].source == ConfigSource.DEFAULT_CONFIG.value


def test_describe_unknown_topic_fails(broker):
    a = admin(broker.bootstrap)
    with pytest.raises(KafkaException) as ei:
        describe_topic(a, unique_topic("cfg-none"))
    assert error_code(ei.value) == KafkaError.UNKNOWN_TOPIC_OR_PART, ei.value


def test_describe_broker_configs(broker_factory):
    b = broker_factory(shards=2, extra_args=["--segment-bytes", "2097152", "--flush-ms", "250"])
    cfg = describe_broker(admin(b.bootstrap), "0")
    for name in ["log.flush.interval.messages", "log.flush.interval.ms", "num.partitions",
                 "auto.create.topics.enable", "socket.request.max.bytes", "log.dirs", "broker.id"]:
        assert name in cfg, (name, sorted(cfg))
        assert cfg[name].is_read_only, name
    # Topic defaults that dynamic broker configs may change (see test_topic_configs.py).
    for name in ["log.segment.bytes", "log.roll.ms", "log.retention.ms", "log.retention.bytes",
                 "message.max.bytes"]:
        assert name in cfg, (name, sorted(cfg))
        assert not cfg[name].is_read_only, name
    assert cfg["log.segment.bytes"].value == "2097152"
    assert cfg["log.segment.bytes"].source == ConfigSource.STATIC_BROKER_CONFIG.value
    assert cfg["log.flush.interval.ms"].value == "250"
    assert cfg["log.flush.interval.messages"].value == LONG_MAX
    assert cfg["log.retention.bytes"].value == "-1"
    assert cfg["log.retention.bytes"].source == ConfigSource.DEFAULT_CONFIG.value
    assert cfg["broker.id"].value == "0"
    assert cfg["log.dirs"].value == str(b.data_dir)
    # A topic without its own segment.bytes inherits the broker's.
    topic = unique_topic("cfg-inh")
    a = create_topic(b.bootstrap, topic, 1)
    t = describe_topic(a, topic)
    assert t["segment.bytes"].value == "2097152"
    assert t["segment.bytes"].source == ConfigSource.STATIC_BROKER_CONFIG.value
    assert t["flush.ms"].value == "250"


# -------------------------------------------------------------------- (Incremental)AlterConfigs

def test_incremental_alter_set_delete_and_restart(broker):
    topic = unique_topic("cfg-alter")
    a = create_topic(broker.bootstrap, topic, 3)
    alter(a, topic, [("retention.ms", "123456", AlterConfigOpType.SET),
                     ("segment.bytes", "4096", AlterConfigOpType.SET)]).result(timeout=ADMIN_TIMEOUT)
    cfg = describe_topic(a, topic)
    assert cfg["retention.ms"].value == "123456"
    assert cfg["retention.ms"].source == ConfigSource.DYNAMIC_TOPIC_CONFIG.value
    assert cfg["segment.bytes"].value == "4096"

    # DELETE reverts to the broker default.
    alter(a, topic, [("retention.ms", None, AlterConfigOpType.DELETE)]).result(timeout=ADMIN_TIMEOUT)
    cfg = describe_topic(a, topic)
    assert cfg["retention.ms"].value == str(7 * 24 * 3600 * 1000)
    assert cfg["retention.ms"].source == ConfigSource.DEFAULT_CONFIG.value
    assert cfg["segment.bytes"].value == "4096"

    # validate_only checks but changes nothing.
    alter(a, topic, [("retention.bytes", "5000", AlterConfigOpType.SET)],
          validate_only=True).result(timeout=ADMIN_TIMEOUT)
    assert describe_topic(a, topic)["retention.bytes"].value == "-1"

    # The change is in the catalog: it survives a restart.
    broker.restart()
    a = admin(broker.bootstrap)
    cfg = wait_until(lambda: describe_topic(a, topic), desc="describe after restart")
    assert cfg["segment.bytes"].value == "4096"
    assert cfg["segment.bytes"].source == ConfigSource.DYNAMIC_TOPIC_CONFIG.value
    assert cfg["retention.ms"].source == ConfigSource.DEFAULT_CONFIG.value


def test_incremental_alter_errors(broker):
    topic = unique_topic("cfg-bad")
    a = create_topic(broker.bootstrap, topic, 1, config={"retention.ms": "60000"})
    for ops in ([("segment.bytes", "12", AlterConfigOpType.SET)],
                [("retention.ms", "soon", AlterConfigOpType.SET)],
                [("cleanup.policy", "shred", AlterConfigOpType.SET)],
                [("retention.ms", "5", AlterConfigOpType.APPEND)]):
        e = alter_error(a, topic, ops)
        assert error_code(e) == KafkaError.INVALID_CONFIG, (ops, e)
    # Nothing was applied, not even partly.
    assert describe_topic(a, topic)["retention.ms"].value == "60000"

    e = alter_error(a, unique_topic("cfg-none"), [("retention.ms", "1", AlterConfigOpType.SET)])
    assert error_code(e) == KafkaError.UNKNOWN_TOPIC_OR_PART, e

    e = alter_error(a, "0", [("num.partitions", "3", AlterConfigOpType.SET)], resource_type=ResourceType.BROKER)
    assert error_code(e) == KafkaError.INVALID_REQUEST, e
    assert "command line" in str(e), e


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_legacy_alter_configs_replaces(broker):
    topic = unique_topic("cfg-legacy")
    a = create_topic(broker.bootstrap, topic, 1, config={"retention.ms": "60000", "segment.bytes": "4096"})
    res = ConfigResource(ResourceType.TOPIC, topic, set_config={"retention.bytes": "100000"})
    (f,) = a.alter_configs([res], request_timeout=ADMIN_TIMEOUT).values()
    f.result(timeout=ADMIN_TIMEOUT)
    cfg = describe_topic(a, topic)
    assert cfg["retention.bytes"].value == "100000"
    assert cfg["retention.bytes"].source == ConfigSource.DYNAMIC_TOPIC_CONFIG.value
    # The whole set was replaced: the others are back to defaults.
    assert cfg["retention.ms"].source == ConfigSource.DEFAULT_CONFIG.value
    assert cfg["segment.bytes"].source == ConfigSource.DEFAULT_CONFIG.value


def test_altered_segment_bytes_applies_to_open_logs(broker):
    # Partitions on both shards: every owner must apply the new segment size to its open logs.
    topic = unique_topic("cfg-live")
    a = create_topic(broker.bootstrap, topic, 4)
    alter(a, topic, [("segment.bytes", "1024", AlterConfigOpType.SET)]).result(timeout=ADMIN_TIMEOUT)
    for p in range(4):
        produce_small_batches(broker.bootstrap, topic, 40, partition=p)
    for p in range(4):
        assert len(log_files(broker, topic, p)) >= 5, (p, log_files(broker, topic, p))


# ------------------------------------------------------------------------------ segments

def test_segment_roll_by_size(broker):
    topic = unique_topic("seg-roll")
    create_topic(broker.bootstrap, topic, 1, config={"segment.bytes": "1024"})
    values, _ = produce_small_batches(broker.bootstrap, topic, 250)  # ~50 KB
    files = log_files(broker, topic, 0)
    assert len(files) >= 40, files
    assert all(f.stat().st_size <= 1024 for f in files[:-1]), [f.stat().st_size for f in files]
    msgs = consume(broker.bootstrap, [(topic, 0)], len(values))
    assert [m.value() for m in msgs] == values
    assert [m.offset() for m in msgs] == list(range(len(values)))


def test_retention_by_size(broker_factory):
    b = broker_factory(shards=2, extra_args=["--retention-check-ms", "100"])
    topic = unique_topic("ret-size")
    create_topic(b.bootstrap, topic, 1, config={"segment.bytes": "1024", "retention.bytes": "4096"})
    values, _ = produce_small_batches(b.bootstrap, topic, 200)  # ~40 KB

    def trimmed():
        low, high = watermarks(b.bootstrap, topic, 0)
        return (low, high) if low > 0 and log_bytes(b, topic, 0) <= 4096 + 1024 else None

    low, high = wait_until(trimmed, timeout=20, desc="retention.bytes to delete old segments")
    assert high == len(values)
    assert log_bytes(b, topic, 0) >= 4096 - 1024, "retention deleted more than it had to"

    # Reading from the beginning starts at the new log start.
    msgs = consume(b.bootstrap, [(topic, 0)], high - low)
    assert msgs[0].offset() == low
    assert [m.value() for m in msgs] == values[low:]

    # A fetch below the log start is OFFSET_OUT_OF_RANGE (surfaced with auto.offset.reset=error).
    c = consumer(b.bootstrap, **{"auto.offset.reset": "error"})
    try:
        c.assign([TopicPartition(topic, 0, 0)])
        deadline = time.monotonic() + 20
        err = None
        while err is None and time.monotonic() < deadline:
            m = c.poll(0.2)
            if m is not None:
                assert m.error() is not None, f"got a record at offset {m.offset()} below the log start {low}"
                err = m.error()
        assert err is not None, "no error for a fetch below the log start"
        assert err.code() == KafkaError._AUTO_OFFSET_RESET, err
        assert "out of range" in err.str().lower(), err
    finally:
        c.close()


def test_retention_by_time(broker_factory):
    b = broker_factory(shards=2, extra_args=["--retention-check-ms", "100"])
    topic = unique_topic("ret-time")
    # Segments roll by size here (one 600-byte batch each), whatever the roll-by-age rule does
    # with old timestamps.
    create_topic(b.bootstrap, topic, 1, config={"retention.ms": "1000", "segment.bytes": "1024"})
    old = int(time.time() * 1000) - 3600 * 1000
    p = producer(b.bootstrap)
    n = 10
    values = [f"old-{i}-".encode() + b"o" * 600 for i in range(n)]
    for i, v in enumerate(values):
        p.produce(topic, v, partition=0, timestamp=old + i)
        flush_all(p)

    # Everything but the active segment (the last batch) goes.
    wait_until(lambda: watermarks(b.bootstrap, topic, 0) == (n - 1, n), timeout=20,
               desc="retention.ms to delete all but the active segment")
    # The log start moves first; the files go right after, on the blocking pool.
    wait_until(lambda: len(log_files(b, topic, 0)) == 1, timeout=20,
               desc="the deleted segments' files removed")
    msgs = consume(b.bootstrap, [(topic, 0)], 1)
    assert [(m.offset(), m.value()) for m in msgs] == [(n - 1, values[-1])]


def test_offsets_for_times_across_segments(broker):
    topic = unique_topic("ts-seg")
    create_topic(broker.bootstrap, topic, 1, config={"segment.bytes": "1024"})
    base = int(time.time() * 1000) - 600_000
    n = 120
    stamps = [base + 10 * i for i in range(n)]
    _, log = produce_small_batches(broker.bootstrap, topic, n, timestamps=stamps)
    assert len(log_files(broker, topic, 0)) >= 10
    offset_of = {}
    for _, _, off, _, value in log.ok:
        offset_of[stamps[int(value[:6])]] = off

    def expected(ts):
        after = [o for s, o in offset_of.items() if s >= ts]
        return min(after) if after else -1

    c = consumer(broker.bootstrap)
    try:
        probes = [base - 1, base, base + 5, stamps[37], stamps[37] + 1, stamps[n // 2] - 3, stamps[-1],
                  stamps[-1] + 1]
        for ts in probes:
            (r,) = c.offsets_for_times([TopicPartition(topic, 0, ts)], timeout=10)
            assert r.error is None, (ts - base, r.error)
            assert r.offset == expected(ts), f"offsets_for_times(base+{ts - base}) = {r.offset}, " \
                                             f"expected {expected(ts)}"
        assert expected(stamps[-1] + 1) == -1
    finally:
        c.close()


# ---------------------------------------------------------------------------- DeleteRecords

def test_delete_records(broker):
    topic = unique_topic("delrec")
    a = create_topic(broker.bootstrap, topic, 2, config={"segment.bytes": "1024"})
    values, _ = produce_small_batches(broker.bootstrap, topic, 100, partition=0)
    produce_small_batches(broker.bootstrap, topic, 5, partition=1)
    segments_before = len(log_files(broker, topic, 0))

    fs = a.delete_records([TopicPartition(topic, 0, 40)], request_timeout=ADMIN_TIMEOUT)
    (f,) = fs.values()
    assert f.result(timeout=ADMIN_TIMEOUT).low_watermark == 40
    assert watermarks(broker.bootstrap, topic, 0) == (40, 100)
    wait_until(lambda: len(log_files(broker, topic, 0)) < segments_before, timeout=20,
               desc="the segments below the new start deleted")
    msgs = consume(broker.bootstrap, [(topic, 0)], 60)
    assert msgs[0].offset() == 40
    assert [m.value() for m in msgs] == values[40:]

    # Deleting below the current start changes nothing; past the end is OFFSET_OUT_OF_RANGE;
    # an unknown partition is UNKNOWN_TOPIC_OR_PARTITION.
    (f,) = a.delete_records([TopicPartition(topic, 0, 10)], request_timeout=ADMIN_TIMEOUT).values()
    assert f.result(timeout=ADMIN_TIMEOUT).low_watermark == 40
    (f,) = a.delete_records([TopicPartition(topic, 0, 101)], request_timeout=ADMIN_TIMEOUT).values()
    with pytest.raises(KafkaException) as ei:
        f.result(timeout=ADMIN_TIMEOUT)
    assert error_code(ei.value) == KafkaError.OFFSET_OUT_OF_RANGE, ei.value
    # (librdkafka refuses an unknown partition itself, so kafka-python sends that one.)
    ka = KafkaAdminClient(bootstrap_servers=broker.bootstrap, request_timeout_ms=10000, bootstrap_timeout_ms=15000)
    try:
        with pytest.raises(kafka.errors.UnknownTopicOrPartitionError):
            ka.delete_records({kafka.TopicPartition(topic, 7): 1}, partition_leader_id=0)
    finally:
        ka.close()

    # Partition 1 (maybe on the other shard): -1 deletes up to the high watermark.
    (f,) = a.delete_records([TopicPartition(topic, 1, -1)], request_timeout=ADMIN_TIMEOUT).values()
    assert f.result(timeout=ADMIN_TIMEOUT).low_watermark == 5

    broker.restart()
    assert wait_until(lambda: watermarks(broker.bootstrap, topic, 0), desc="watermarks after restart") == (40, 100)
    assert watermarks(broker.bootstrap, topic, 1) == (5, 5)
    msgs = consume(broker.bootstrap, [(topic, 0)], 60)
    assert msgs[0].offset() == 40 and len(msgs) == 60
