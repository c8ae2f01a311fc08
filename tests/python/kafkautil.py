"""Small helpers around confluent-kafka used by several tests (all waits have deadlines)."""

import time
import uuid

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, KafkaException, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

# Short but forgiving client timeouts; everything runs on loopback.
COMMON = {
    "socket.timeout.ms": 10000,
    "broker.address.family": "v4",
    "reconnect.backoff.ms": 50,
    "reconnect.backoff.max.ms": 500,
    "retry.backoff.ms": 100,
    "topic.metadata.refresh.interval.ms": 5000,
}


def wait_until(cond, timeout=15.0, interval=0.05, desc="condition"):
    """Poll `cond()` until it returns a truthy value (returned) or the deadline passes (AssertionError)."""
    deadline = time.monotonic() + timeout
    last_exc = None
    while True:
        try:
            value = cond()
            if value:
                return value
        except Exception as exc:  # keep polling; report the last failure
            last_exc = exc
        if time.monotonic() >= deadline:
            extra = f" (last error: {last_exc!r})" if last_exc is not None else ""
            raise AssertionError(f"timed out after {timeout:.1f}s waiting for {desc}{extra}")
        time.sleep(interval)


def unique_topic(prefix="t"):
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def admin(bootstrap, **extra):
    return AdminClient({"bootstrap.servers": bootstrap, **COMMON, **extra})


def producer(bootstrap, **extra):
    conf = {
        "bootstrap.servers": bootstrap,
        **COMMON,
        "acks": "all",
        "enable.idempotence": False,
        "linger.ms": 5,
        "message.timeout.ms": 30000,
        "request.timeout.ms": 10000,
    }
    conf.update(extra)
    return Producer(conf)


def consumer(bootstrap, **extra):
    conf = {
        "bootstrap.servers": bootstrap,
        **COMMON,
        # group.id is required by the client; no group protocol is used (manual assign, no commits).
        "group.id": "spate-tests-" + uuid.uuid4().hex[:8],
        "enable.auto.commit": False,
        "enable.auto.offset.store": False,
        "auto.offset.reset": "earliest",
        "fetch.wait.max.ms": 100,
        "enable.partition.eof": False,
        "api.version.request": True,
    }
    conf.update(extra)
    return Consumer(conf)


def create_topic(bootstrap, name, partitions, config=None, timeout=15.0):
    a = admin(bootstrap)
    fs = a.create_topics([NewTopic(name, num_partitions=partitions, replication_factor=1, config=config or {})],
                         request_timeout=timeout, operation_timeout=timeout)
    fs[name].result(timeout=timeout)
    wait_topic_partitions(a, name, partitions)
    return a


def list_topics(a, timeout=10.0):
    """{topic: partition count} for all topics (an all-topics Metadata request never auto-creates)."""
    md = a.list_topics(timeout=timeout)
    return {t: len(m.partitions) for t, m in md.topics.items() if m.error is None}


def wait_topic_partitions(a, name, partitions, timeout=15.0):
    def ok():
        return list_topics(a).get(name) == partitions
    deadline = time.monotonic() + timeout
    while not ok():
        if time.monotonic() >= deadline:
            raise AssertionError(f"topic {name} with {partitions} partitions not in metadata: {list_topics(a)}")
        time.sleep(0.05)


class DeliveryLog:
    """Delivery-report callback collecting (err, topic, partition, offset, key, value) in callback order."""

    def __init__(self):
        self.ok = []
        self.errors = []

    def __call__(self, err, msg):
        if err is not None:
            self.errors.append((err, msg.topic(), msg.key(), msg.value()))
        else:
            self.ok.append((msg.topic(), msg.partition(), msg.offset(), msg.key(), msg.value()))


def flush_all(p, timeout=30.0):
    remaining = p.flush(timeout)
    assert remaining == 0, f"{remaining} messages still undelivered after flush({timeout})"


def consume(bootstrap, topic_partitions, expected, timeout=30.0, settle=0.5, **extra):
    """Assign [(topic, partition)] from the beginning and read until `expected` messages arrived.

    Then keep polling for `settle` seconds so duplicates/extra records are also caught.
    Returns the list of Message objects in arrival order.
    """
    c = consumer(bootstrap, **extra)
    try:
        c.assign([TopicPartition(t, p, OFFSET_BEGINNING) for t, p in topic_partitions])
        msgs = []
        errors = []
        deadline = time.monotonic() + timeout
        settle_until = None
        while True:
            now = time.monotonic()
            if settle_until is None and len(msgs) >= expected:
                settle_until = now + settle
            if settle_until is not None and now >= settle_until:
                break
            if now >= deadline:
                raise AssertionError(
                    f"consumed {len(msgs)}/{expected} messages from {topic_partitions} within {timeout}s; "
                    f"consumer errors: {errors[:5]}")
            m = c.poll(0.1)
            if m is None:
                continue
            if m.error() is not None:
                if m.error().code() != KafkaError._PARTITION_EOF:
                    errors.append(m.error())
                continue
            msgs.append(m)
        return msgs
    finally:
        c.close()


def by_partition(msgs):
    """{(topic, partition): [Message sorted by offset]}"""
    out = {}
    for m in msgs:
        out.setdefault((m.topic(), m.partition()), []).append(m)
    for v in out.values():
        v.sort(key=lambda m: m.offset())
    return out


def error_code(exc):
    """KafkaError code carried by an admin future's exception."""
    if isinstance(exc, KafkaException):
        return exc.args[0].code()
    raise exc
