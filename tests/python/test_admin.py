"""CreateTopics / DeleteTopics errors and topic auto-creation."""

import pytest
from confluent_kafka import KafkaError, KafkaException
from confluent_kafka.admin import NewTopic
from kafka import KafkaAdminClient

from kafkautil import DeliveryLog, admin, create_topic, error_code, flush_all, list_topics, producer, \
    unique_topic, wait_topic_partitions, wait_until

ADMIN_TIMEOUT = 15


def _create(a, name, partitions):
    fs = a.create_topics([NewTopic(name, num_partitions=partitions, replication_factor=1)],
                         request_timeout=ADMIN_TIMEOUT, operation_timeout=ADMIN_TIMEOUT)
    return fs[name]


def test_create_duplicate_topic(broker):
    topic = unique_topic("adm-dup")
    a = create_topic(broker.bootstrap, topic, 2)
    with pytest.raises(KafkaException) as ei:
        _create(a, topic, 2).result(timeout=ADMIN_TIMEOUT)
    assert error_code(ei.value) == KafkaError.TOPIC_ALREADY_EXISTS, ei.value
    # The original topic is untouched.
    assert list_topics(a)[topic] == 2


def test_create_zero_partitions_rejected(broker):
    a = admin(broker.bootstrap)
    topic = unique_topic("adm-zero")
    with pytest.raises(KafkaException) as ei:
        _create(a, topic, 0).result(timeout=ADMIN_TIMEOUT)
    assert error_code(ei.value) == KafkaError.INVALID_PARTITIONS, ei.value
    assert topic not in list_topics(a)


def test_create_negative_partitions_rejected(broker):
    # librdkafka refuses num_partitions < -1 client-side (and -1 means "broker default"),
    # so send the request with kafka-python.
    topic = unique_topic("adm-neg")
    ka = KafkaAdminClient(bootstrap_servers=broker.bootstrap, request_timeout_ms=10000,
                          bootstrap_timeout_ms=15000)
    try:
        res = ka.create_topics({topic: {"num_partitions": -3, "replication_factor": 1}}, raise_errors=False)
    finally:
        ka.close()
    entries = [t for t in res["topics"] if t["name"] == topic]
    assert len(entries) == 1, res
    assert entries[0]["error_code"] == KafkaError.INVALID_PARTITIONS, res
    assert topic not in list_topics(admin(broker.bootstrap))


def test_create_topic_with_default_partitions(broker_factory):
    # CreateTopics with num_partitions=-1 (librdkafka: "broker default") uses --default-partitions.
    broker = broker_factory(shards=2, extra_args=["--default-partitions", "3"])
    a = admin(broker.bootstrap)
    topic = unique_topic("adm-dflt")
    _create(a, topic, -1).result(timeout=ADMIN_TIMEOUT)
    wait_until(lambda: list_topics(a).get(topic) == 3, desc=f"{topic} with 3 partitions")


def test_delete_topics(broker):
    keep, gone = unique_topic("adm-keep"), unique_topic("adm-del")
    a = create_topic(broker.bootstrap, keep, 1)
    create_topic(broker.bootstrap, gone, 3)
    fs = a.delete_topics([gone], request_timeout=ADMIN_TIMEOUT, operation_timeout=ADMIN_TIMEOUT)
    fs[gone].result(timeout=ADMIN_TIMEOUT)
    wait_until(lambda: gone not in list_topics(a), desc=f"{gone} to disappear from metadata")
    assert keep in list_topics(a)

    # Deleting it again / deleting a never-created topic -> UNKNOWN_TOPIC_OR_PARTITION.
    for t in (gone, unique_topic("adm-never")):
        with pytest.raises(KafkaException) as ei:
            a.delete_topics([t], request_timeout=ADMIN_TIMEOUT,
                            operation_timeout=ADMIN_TIMEOUT)[t].result(timeout=ADMIN_TIMEOUT)
        assert error_code(ei.value) == KafkaError.UNKNOWN_TOPIC_OR_PART, ei.value

    # The name can be reused; the new topic starts empty at offset 0.
    create_topic(broker.bootstrap, gone, 2)
    dl = DeliveryLog()
    p = producer(broker.bootstrap)
    p.produce(gone, value=b"fresh", partition=1, on_delivery=dl)
    flush_all(p)
    assert not dl.errors and [(part, off) for _, part, off, _, _ in dl.ok] == [(1, 0)], (dl.ok, dl.errors)


def test_auto_create_disabled(broker_factory):
    broker = broker_factory(shards=2, extra_args=["--auto-create-topics", "false"])
    topic = unique_topic("adm-noauto")
    dl = DeliveryLog()
    p = producer(broker.bootstrap, **{"message.timeout.ms": 8000, "topic.metadata.propagation.max.ms": 1000,
                                      "allow.auto.create.topics": True})
    produce_error = None
    try:
        p.produce(topic, value=b"nope", on_delivery=dl)
    except KafkaException as e:  # the client may already know the topic does not exist
        produce_error = e.args[0]
    p.flush(20)
    if produce_error is None:
        assert len(dl.errors) == 1, f"producing to unknown topic should fail: ok={dl.ok} errors={dl.errors}"
        produce_error = dl.errors[0][0]
    assert produce_error.code() in (KafkaError.UNKNOWN_TOPIC_OR_PART, KafkaError._UNKNOWN_TOPIC), produce_error

    a = admin(broker.bootstrap)
    assert topic not in list_topics(a)

    # Explicit creation still works with auto-create off.
    create_topic(broker.bootstrap, topic, 2)
    dl = DeliveryLog()
    p = producer(broker.bootstrap)
    p.produce(topic, value=b"yes", partition=0, on_delivery=dl)
    flush_all(p)
    assert not dl.errors and len(dl.ok) == 1, (dl.ok, dl.errors)


def test_auto_create_on_metadata(broker_factory):
    broker = broker_factory(shards=2, extra_args=["--default-partitions", "3"])
    topic = unique_topic("adm-auto")
    a = admin(broker.bootstrap)
    assert topic not in list_topics(a)

    # A Metadata request naming the topic (producer handle: allow_auto_topic_creation=true) creates it.
    p = producer(broker.bootstrap, **{"allow.auto.create.topics": True})

    def created():
        md = p.list_topics(topic=topic, timeout=5)
        t = md.topics.get(topic)
        return t is not None and t.error is None and len(t.partitions) == 3

    wait_until(created, timeout=15, desc=f"auto-created {topic} with 3 partitions")
    assert list_topics(a).get(topic) == 3
    for pid, pm in p.list_topics(topic=topic, timeout=5).topics[topic].partitions.items():
        assert pm.leader >= 0 and pm.error is None, (pid, pm.leader, pm.error)


def test_auto_create_on_produce(broker_factory):
    broker = broker_factory(shards=2, extra_args=["--default-partitions", "3"])
    topic = unique_topic("adm-autoprod")
    dl = DeliveryLog()
    p = producer(broker.bootstrap)
    for i in range(30):
        p.produce(topic, key=f"k{i}".encode(), value=f"v{i}".encode(), on_delivery=dl)
    flush_all(p)
    assert not dl.errors, dl.errors[:3]
    assert {part for _, part, *_ in dl.ok} <= {0, 1, 2}
    assert list_topics(admin(broker.bootstrap)).get(topic) == 3


def test_create_partitions_on_one_node(broker):
    from confluent_kafka.admin import NewPartitions
    t = unique_topic("grow")
    a = create_topic(broker.bootstrap, t, 2)
    a.create_partitions([NewPartitions(t, 4)], request_timeout=15)[t].result(timeout=20)
    wait_topic_partitions(a, t, 4)
    p = producer(broker.bootstrap)
    log = DeliveryLog()
    for part in range(4):
        p.produce(t, value=b"x", partition=part, on_delivery=log)
    flush_all(p)
    assert not log.errors and sorted(r[1] for r in log.ok) == [0, 1, 2, 3]
    with pytest.raises(KafkaException) as e:
        a.create_partitions([NewPartitions(t, 4)], request_timeout=15)[t].result(timeout=20)
    assert e.value.args[0].name() == "INVALID_PARTITIONS"
    broker.restart()
    assert list_topics(admin(broker.bootstrap))[t] == 4


def test_create_with_kafkas_defaults_made_explicit(broker):
    """Tools (Terraform providers, operators) set Kafka's topic defaults explicitly: accepted
    and described."""
    from confluent_kafka.admin import ConfigResource
    a = admin(broker.bootstrap)
    t = unique_topic("kdefaults")
    explicit = {"cleanup.policy": "delete", "compression.type": "producer",
                "min.insync.replicas": "1", "unclean.leader.election.enable": "false"}
    fs = a.create_topics([NewTopic(t, num_partitions=1, replication_factor=1, config=explicit)],
                         request_timeout=15)
    fs[t].result(timeout=15)
    res = ConfigResource(ConfigResource.Type.TOPIC, t)
    got = a.describe_configs([res])[res].result(timeout=15)
    for k, v in explicit.items():
        assert got[k].value == v, (k, got[k])
    # Every other Kafka 4 topic config, made explicit: tests/python/test_topic_configs.py.
