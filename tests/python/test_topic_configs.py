"""Topic configs as Kafka 4 defines them, tried the way tools use them.

- CreateTopics with every Kafka default made explicit (what Terraform providers and operators
  send) succeeds through confluent-kafka and kafka-python, and DescribeConfigs gives them back.
- Values Kafka refuses, and values that cannot mean anything here (tiered storage), are
  INVALID_CONFIG with a reason.
- compression.type other than `producer` stores batches in that codec, and consumers read them.
- message.timestamp.after/before.max.ms refuse out-of-range CreateTime records with
  INVALID_TIMESTAMP, and a LogAppendTime topic takes them.
"""

import struct
import time

import pytest
from confluent_kafka import KafkaError, KafkaException
from confluent_kafka.admin import ConfigResource, NewTopic

from kafkautil import (DeliveryLog, admin, consume, create_topic, flush_all, producer,
                       unique_topic, wait_topic_partitions)

# Kafka 4's topic configs at their defaults, as a tool would set them explicitly.
KAFKA_DEFAULTS = {
    "cleanup.policy": "delete",
    "compression.type": "producer",
    "compression.gzip.level": "-1",
    "compression.lz4.level": "9",
    "compression.zstd.level": "3",
    "delete.retention.ms": "86400000",
    "file.delete.delay.ms": "60000",
    "flush.messages": "9223372036854775807",
    "flush.ms": "9223372036854775807",
    "follower.replication.throttled.replicas": "",
    "index.interval.bytes": "4096",
    "leader.replication.throttled.replicas": "",
    "local.retention.bytes": "-2",
    "local.retention.ms": "-2",
    "max.compaction.lag.ms": "9223372036854775807",
    "max.message.bytes": "1048588",
    "message.downconversion.enable": "true",
    "message.timestamp.after.max.ms": "3600000",
    "message.timestamp.before.max.ms": "9223372036854775807",
    "message.timestamp.type": "CreateTime",
    "min.cleanable.dirty.ratio": "0.5",
    "min.compaction.lag.ms": "0",
    "min.insync.replicas": "1",
    "preallocate": "false",
    "remote.log.copy.disable": "false",
    "remote.log.delete.on.disable": "false",
    "remote.storage.enable": "false",
    "retention.bytes": "-1",
    "retention.ms": "604800000",
    "segment.bytes": "1073741824",
    "segment.index.bytes": "10485760",
    "segment.jitter.ms": "0",
    "segment.ms": "604800000",
    "unclean.leader.election.enable": "false",
}

def described(a, topic):
    res = ConfigResource(ConfigResource.Type.TOPIC, topic)
    return {k: v.value for k, v in a.describe_configs([res])[res].result(timeout=15).items()}


def create_error(a, topic, config):
    fs = a.create_topics([NewTopic(topic, 1, 1, config=config)], request_timeout=15)
    try:
        fs[topic].result(timeout=15)
        return None
    except KafkaException as e:
        return e.args[0]


def test_every_kafka_default_made_explicit_is_accepted(broker):
    a = admin(broker.bootstrap)
    defaults = KAFKA_DEFAULTS
    topic = unique_topic("explicit")
    assert create_error(a, topic, defaults) is None
    wait_topic_partitions(a, topic, 1)
    got = described(a, topic)
    for k, v in defaults.items():
        assert got.get(k) == v, (k, got.get(k), v)

    # kafka-python's admin client sends the same.
    from kafka.admin import KafkaAdminClient, NewTopic as KNewTopic
    ka = KafkaAdminClient(bootstrap_servers=broker.bootstrap, request_timeout_ms=15000)
    try:
        t2 = unique_topic("explicit-kp")
        ka.create_topics([KNewTopic(t2, 1, 1, topic_configs=defaults)])
        wait_topic_partitions(a, t2, 1)
        assert described(a, t2)["segment.index.bytes"] == "10485760"
    finally:
        ka.close()

    # A topic without configs describes the same defaults (the broker's).
    plain = unique_topic("plain")
    create_topic(broker.bootstrap, plain, 1)
    got = described(a, plain)
    for k in ("compression.type", "message.timestamp.after.max.ms", "segment.index.bytes",
              "preallocate", "remote.storage.enable", "local.retention.ms"):
        assert got[k] == KAFKA_DEFAULTS[k], (k, got[k])


@pytest.mark.parametrize("config", [
    {"compression.type": "brotli"},
    {"compression.zstd.level": "23"},
    {"compression.gzip.level": "0"},
    {"segment.index.bytes": "3"},
    {"flush.messages": "0"},
    {"message.timestamp.after.max.ms": "-1"},
    {"preallocate": "maybe"},
    {"remote.storage.enable": "true"},
    {"local.retention.ms": "1000"},
    {"message.downconversion.enable": "false"},
    {"no.such.config": "1"},
])
def test_invalid_values_are_invalid_config(broker, config):
    a = admin(broker.bootstrap)
    err = create_error(a, unique_topic("bad"), config)
    assert err is not None and err.code() == KafkaError.INVALID_CONFIG, (config, err)
    key = next(iter(config))
    assert key in err.str(), err.str()


def batch_codecs(data_dir, topic):
    """The codec (attributes & 7) of every batch in the topic's partition 0 segment files."""
    codecs = []
    for seg in sorted((data_dir / f"{topic}-0").glob("*.log")):
        b = seg.read_bytes()
        pos = 0
        while pos + 61 <= len(b):
            (length,) = struct.unpack(">i", b[pos + 8:pos + 12])
            (attributes,) = struct.unpack(">h", b[pos + 21:pos + 23])
            codecs.append(attributes & 7)
            pos += 12 + length
    return codecs


@pytest.mark.parametrize("codec,code,sent_as", [
    ("zstd", 4, "none"), ("lz4", 3, "gzip"), ("gzip", 1, "snappy"), ("snappy", 2, "zstd"),
    ("uncompressed", 0, "lz4"),
])
def test_compression_type_recompresses_on_the_way_in(broker, codec, code, sent_as):
    topic = unique_topic(f"codec-{codec}")
    create_topic(broker.bootstrap, topic, 1, config={"compression.type": codec})
    p = producer(broker.bootstrap, **{"compression.type": sent_as, "linger.ms": 20})
    dl = DeliveryLog()
    values = [(f"key-{i}".encode(), (f"value-{i}-" + "x" * (i % 50)).encode()) for i in range(300)]
    for k, v in values:
        p.produce(topic, key=k, value=v, partition=0, headers=[("h", b"1"), ("h", b"2")],
                  on_delivery=dl)
    flush_all(p)
    assert not dl.errors, dl.errors[:3]
    codecs = batch_codecs(broker.data_dir, topic)
    assert codecs and set(codecs) == {code}, codecs
    msgs = consume(broker.bootstrap, [(topic, 0)], len(values))
    assert [(m.key(), m.value()) for m in msgs] == values
    assert [m.offset() for m in msgs] == list(range(len(values)))
    # Duplicate header keys survive: records are recompressed as bytes, never re-encoded.
    assert msgs[0].headers() == [("h", b"1"), ("h", b"2")]


def produce_one(bootstrap, topic, ts):
    p = producer(bootstrap)
    dl = DeliveryLog()
    p.produce(topic, value=b"v", partition=0, timestamp=ts, on_delivery=dl)
    flush_all(p)
    return dl


def test_timestamps_out_of_range_are_invalid_timestamp(broker):
    now = int(time.time() * 1000)
    topic = unique_topic("ts")
    create_topic(broker.bootstrap, topic, 1, config={"message.timestamp.before.max.ms": "600000"})
    # Kafka 4's default: one hour into the future at most.
    dl = produce_one(broker.bootstrap, topic, now + 2 * 3_600_000)
    assert [e[0].code() for e in dl.errors] == [KafkaError.INVALID_TIMESTAMP], dl.errors
    dl = produce_one(broker.bootstrap, topic, now - 3_600_000)
    assert [e[0].code() for e in dl.errors] == [KafkaError.INVALID_TIMESTAMP], dl.errors
    dl = produce_one(broker.bootstrap, topic, now)
    assert not dl.errors and len(dl.ok) == 1
    # The bound is live: raised, the same future record is taken.
    a = admin(broker.bootstrap)
    from confluent_kafka.admin import AlterConfigOpType, ConfigEntry
    res = ConfigResource(ConfigResource.Type.TOPIC, topic, incremental_configs=[
        ConfigEntry("message.timestamp.after.max.ms", "86400000",
                    incremental_operation=AlterConfigOpType.SET)])
    a.incremental_alter_configs([res])[res].result(timeout=15)
    dl = produce_one(broker.bootstrap, topic, now + 2 * 3_600_000)
    assert not dl.errors, dl.errors
    # LogAppendTime topics stamp the broker's time: nothing to refuse.
    lat = unique_topic("ts-lat")
    create_topic(broker.bootstrap, lat, 1, config={"message.timestamp.type": "LogAppendTime"})
    dl = produce_one(broker.bootstrap, lat, now + 10 * 3_600_000)
    assert not dl.errors, dl.errors


def test_file_delete_delay_keeps_deleted_segments_files_for_a_while(broker):
    from confluent_kafka import TopicPartition
    from kafkautil import wait_until
    topic = unique_topic("delay")
    create_topic(broker.bootstrap, topic, 1,
                 config={"segment.bytes": "1024", "file.delete.delay.ms": "1500"})
    p = producer(broker.bootstrap, **{"linger.ms": 0})
    for i in range(40):
        p.produce(topic, value=b"x" * 200, partition=0)
        p.flush(10)
    d = broker.data_dir / f"{topic}-0"
    logs_before = len(list(d.glob("*.log")))
    assert logs_before > 3
    a = admin(broker.bootstrap)
    fs = a.delete_records([TopicPartition(topic, 0, 30)], request_timeout=15)
    for f in fs.values():
        f.result(timeout=15)
    # Out of the log at once (renamed), on disk until the delay has passed.
    wait_until(lambda: list(d.glob("*.log.deleted")), timeout=10, desc="segments renamed *.deleted")
    assert len(list(d.glob("*.log"))) < logs_before
    wait_until(lambda: not list(d.glob("*.deleted")), timeout=15, desc="deleted files removed")


def test_topic_defaults_change_live_as_dynamic_broker_configs(broker):
    from confluent_kafka.admin import AlterConfigOpType, ConfigEntry
    from kafkautil import wait_until
    import subprocess
    a = admin(broker.bootstrap)

    def cli(*args):
        return subprocess.run([str(broker.binary), "cluster", "config", *args,
                               "--bootstrap-server", broker.bootstrap],
                              capture_output=True, text=True, timeout=60)
    # Every broker's default (resource "", which the Python clients cannot name): the CLI.
    r = cli("--config", "compression.type=zstd", "--config", "log.retention.ms=3600000")
    assert r.returncode == 0, r.stderr
    r = cli("--config", "log.retention.ms=-7")
    assert r.returncode != 0 and "log.retention.ms" in r.stderr, r.stderr
    r = cli("--config", "num.partitions=3")
    assert r.returncode != 0 and "cannot be changed at run time" in r.stderr, r.stderr
    topic = unique_topic("live-default")
    create_topic(broker.bootstrap, topic, 1)

    def topic_sees_it():
        got = described(a, topic)
        return got["compression.type"] == "zstd" and got["retention.ms"] == "3600000"
    wait_until(topic_sees_it, timeout=10, desc="topic defaults from the dynamic broker configs")
    res = ConfigResource(ConfigResource.Type.TOPIC, topic)
    entry = a.describe_configs([res])[res].result(timeout=15)["compression.type"]
    assert entry.source == 3, entry  # DYNAMIC_DEFAULT_BROKER_CONFIG

    # Within a second every shard stores batches of default-configured topics in zstd.
    def stored_in_zstd():
        p = producer(broker.bootstrap, **{"compression.type": "none"})
        p.produce(topic, value=b"v" * 100, partition=0)
        flush_all(p)
        return batch_codecs(broker.data_dir, topic)[-1] == 4
    wait_until(stored_in_zstd, timeout=10, desc="new batches stored in zstd")

    # This broker's own value wins over every broker's; the broker describes both.
    own = ConfigResource(ConfigResource.Type.BROKER, "0", incremental_configs=[
        ConfigEntry("compression.type", "lz4", incremental_operation=AlterConfigOpType.SET)])
    a.incremental_alter_configs([own])[own].result(timeout=15)
    bres = ConfigResource(ConfigResource.Type.BROKER, "0")
    got = a.describe_configs([bres])[bres].result(timeout=15)
    assert got["compression.type"].value == "lz4" and got["compression.type"].source == 2
    assert not got["compression.type"].is_read_only
    assert got["log.dirs"].is_read_only

    # They are cluster metadata: a restart keeps them.
    broker.restart()
    a = admin(broker.bootstrap)
    got = a.describe_configs([bres])[bres].result(timeout=15)
    assert got["compression.type"].value == "lz4"
    assert got["log.retention.ms"].value == "3600000" and got["log.retention.ms"].source == 3
    out = cli("--broker", "0").stdout
    assert "compression.type" in out and "lz4" in out and "dynamic-broker" in out, out


def test_log_levels_change_at_run_time_as_broker_logger_configs(broker):
    """Kafka's BROKER_LOGGER resource (kafka-configs --entity-type broker-loggers): a logger's
    level changes at once and shows in DescribeConfigs; DELETE puts it back under root."""
    from kafka.admin import KafkaAdminClient, ConfigResource as KResource, ConfigResourceType
    from kafkautil import wait_until
    ka = KafkaAdminClient(bootstrap_servers=broker.bootstrap, request_timeout_ms=15000)

    def levels():
        r = ka.describe_configs([KResource(ConfigResourceType.BROKER_LOGGER, "0")])
        return {k: v["value"] for k, v in r["broker_logger"]["0"].items()}

    def alter(configs):
        """'OK', or the error's text (kafka-python 3's answer)."""
        r = ka.alter_configs([KResource(ConfigResourceType.BROKER_LOGGER, "0", configs=configs)],
                             raise_on_unknown=False, incremental=True)
        return r["broker_logger"]["0"]

    try:
        before = levels()
        assert before["root"] == "INFO" and before["spate::shard"] == "INFO", before
        assert alter({"spate::server": "DEBUG"}) == "OK"
        assert levels()["spate::server"] == "DEBUG"
        # The broker logs at debug now: a new connection's debug line appears.
        mark = len(broker.log_text())
        list_topics_once = admin(broker.bootstrap).list_topics(timeout=10)
        assert list_topics_once is not None
        wait_until(lambda: " DEBUG " in broker.log_text()[mark:], timeout=10,
                   desc="a DEBUG line after the change")
        # Bad levels and loggers are INVALID_CONFIG; DELETE goes back to root's level.
        assert alter({"spate::server": "LOUD"}).startswith("[Error 40]")
        assert alter({"not a logger": "INFO"}).startswith("[Error 40]")
        from kafka.admin import AlterConfigOp
        assert alter({"spate::server": (AlterConfigOp.DELETE, None)}) == "OK"
        assert levels()["spate::server"] == "INFO"
    finally:
        ka.close()
