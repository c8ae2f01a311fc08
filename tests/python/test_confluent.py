"""confluent-kafka (librdkafka) producer/consumer round trips."""

import time

import pytest
from confluent_kafka import TIMESTAMP_CREATE_TIME, TIMESTAMP_LOG_APPEND_TIME

from kafkautil import DeliveryLog, by_partition, consume, create_topic, flush_all, producer, unique_topic


def _messages(rng, n):
    """(key, value, headers) with a few edge cases: null key, null value, empty value, big value, null header."""
    out = []
    for i in range(n):
        key = f"key-{rng.randrange(40)}".encode()
        value = f"value-{i}-{rng.randrange(1 << 40):x}".encode()
        headers = [("seq", str(i).encode()), ("src", b"confluent")]
        if i % 7 == 0:
            headers += [("dup", b"a"), ("dup", b"b")]
        if i % 11 == 0:
            headers.append(("nil", None))
        if i % 50 == 3:
            key = None
        if i % 50 == 5:
            value = None
        if i % 50 == 7:
            value = b""
        if i == 9:
            value = rng.randbytes(200_000)
        out.append((key, value, headers))
    return out


def _norm_headers(h):
    return [(k, v) for k, v in (h or [])]


@pytest.mark.parametrize("acks", ["all", "1"])
def test_roundtrip_keys_headers(broker, rng, acks):
    seed = rng.seed_value
    topic = unique_topic(f"cf-acks{acks}")
    nparts = 4
    create_topic(broker.bootstrap, topic, nparts)
    msgs = _messages(rng, 400)

    dl = DeliveryLog()
    p = producer(broker.bootstrap, acks=acks)
    for key, value, headers in msgs:
        p.produce(topic, key=key, value=value, headers=headers, on_delivery=dl)
        p.poll(0)
    flush_all(p)
    ctx = f"(seed={seed}, topic={topic}, acks={acks})"
    assert not dl.errors, f"delivery errors {dl.errors[:5]} {ctx}"
    assert len(dl.ok) == len(msgs), ctx

    # Delivery reports: offsets per partition are unique and contiguous from 0.
    delivered = {}
    for _, part, off, key, value in dl.ok:
        assert (part, off) not in delivered, f"duplicate offset {part}/{off} {ctx}"
        delivered[(part, off)] = (key, value)
    for part in range(nparts):
        offs = sorted(o for (pp, o) in delivered if pp == part)
        assert offs == list(range(len(offs))), f"partition {part} delivery offsets not contiguous {ctx}"
    # The same (non-null) key always went to the same partition.
    key_parts = {}
    for _, part, _, key, _ in dl.ok:
        if key is not None:
            key_parts.setdefault(key, set()).add(part)
    assert all(len(v) == 1 for v in key_parts.values()), f"key spread over partitions {ctx}"

    got = consume(broker.bootstrap, [(topic, q) for q in range(nparts)], len(msgs))
    assert len(got) == len(msgs), f"consumed {len(got)} != produced {len(msgs)} {ctx}"
    by_seq = {int(dict(_norm_headers(m.headers()))["seq"]): m for m in got}
    assert sorted(by_seq) == list(range(len(msgs))), f"missing/duplicate seq headers {ctx}"
    for i, (key, value, headers) in enumerate(msgs):
        m = by_seq[i]
        assert m.key() == key, f"msg {i} key {m.key()!r} != {key!r} {ctx}"
        assert m.value() == value, f"msg {i} value mismatch (len {len(m.value() or b'')}) {ctx}"
        assert _norm_headers(m.headers()) == headers, f"msg {i} headers {m.headers()} != {headers} {ctx}"
        assert delivered[(m.partition(), m.offset())] == (key, value), \
            f"msg {i} read at {m.partition()}/{m.offset()} but delivery report disagrees {ctx}"
        assert m.timestamp()[0] == TIMESTAMP_CREATE_TIME, ctx

    # Consumer sees each partition in offset order.
    for (t, part), ms in by_partition(got).items():
        arrival = [m.offset() for m in got if m.partition() == part]
        assert arrival == sorted(arrival), f"partition {part} delivered out of order {ctx}"


def test_acks0_fire_and_forget(broker, rng):
    seed = rng.seed_value
    topic = unique_topic("cf-acks0")
    create_topic(broker.bootstrap, topic, 3)
    values = [f"fire-{i}-{rng.randrange(1 << 30)}".encode() for i in range(200)]
    dl = DeliveryLog()
    p = producer(broker.bootstrap, acks="0")
    for i, v in enumerate(values):
        p.produce(topic, key=f"k{i % 13}".encode(), value=v, on_delivery=dl)
        p.poll(0)
    flush_all(p)
    assert not dl.errors, f"acks=0 delivery errors {dl.errors[:5]} (seed={seed})"

    # No acknowledgement, so records may land slightly later: consume with a deadline.
    got = consume(broker.bootstrap, [(topic, q) for q in range(3)], len(values), timeout=30)
    assert sorted(m.value() for m in got) == sorted(values), f"acks=0 content mismatch (seed={seed})"
    for (t, part), ms in by_partition(got).items():
        assert [m.offset() for m in ms] == list(range(len(ms))), f"partition {part} offsets (seed={seed})"


def test_create_time_timestamps(broker, rng):
    seed = rng.seed_value
    topic = unique_topic("cf-ts")
    create_topic(broker.bootstrap, topic, 2)
    base = int(time.time() * 1000) - 86_400_000  # a day ago: clearly not "now"
    stamps = [base + rng.randrange(10_000_000) for _ in range(100)]
    dl = DeliveryLog()
    p = producer(broker.bootstrap)
    for i, ts in enumerate(stamps):
        p.produce(topic, value=str(i).encode(), partition=i % 2, timestamp=ts, on_delivery=dl)
    flush_all(p)
    assert not dl.errors, dl.errors[:5]

    got = consume(broker.bootstrap, [(topic, 0), (topic, 1)], len(stamps))
    assert len(got) == len(stamps), f"(seed={seed})"
    for m in got:
        i = int(m.value())
        assert m.timestamp() == (TIMESTAMP_CREATE_TIME, stamps[i]), \
            f"msg {i}: timestamp {m.timestamp()} != CreateTime {stamps[i]} (seed={seed})"


def test_log_append_time_topic(broker):
    topic = unique_topic("cf-lat")
    create_topic(broker.bootstrap, topic, 1, config={"message.timestamp.type": "LogAppendTime"})
    old = int(time.time() * 1000) - 3_600_000
    before = int(time.time() * 1000)
    p = producer(broker.bootstrap)
    dl = DeliveryLog()
    for i in range(20):
        p.produce(topic, value=f"lat-{i}".encode(), timestamp=old, on_delivery=dl)
    flush_all(p)
    after = int(time.time() * 1000)
    assert not dl.errors, dl.errors[:5]

    got = consume(broker.bootstrap, [(topic, 0)], 20)
    assert len(got) == 20
    for m in got:
        ts_type, ts = m.timestamp()
        assert ts_type == TIMESTAMP_LOG_APPEND_TIME, f"timestamp type {ts_type} for {m.value()}"
        assert ts != old, "broker kept the producer's CreateTime on a LogAppendTime topic"
        # Broker clock vs. test clock: same machine, allow generous slack.
        assert before - 5000 <= ts <= after + 5000, f"log append time {ts} not within [{before}, {after}]"
