"""Clean shutdown (SIGTERM/SIGINT -> exit 0) and restart on the same data dir keeps everything."""

import signal

import pytest

from kafkautil import DeliveryLog, admin, by_partition, consume, create_topic, flush_all, list_topics, producer, \
    unique_topic


def _produce(bootstrap, records):
    """records: [(topic, partition, value)] -> delivery reports [(topic, partition, offset, key, value)]."""
    dl = DeliveryLog()
    p = producer(bootstrap)
    for topic, part, value in records:
        p.produce(topic, value=value, key=value[:6], partition=part, on_delivery=dl)
        p.poll(0)
    flush_all(p)
    assert not dl.errors, dl.errors[:5]
    return dl.ok


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_restart_keeps_topics_and_records(broker_factory, rng, sig):
    seed = rng.seed_value
    broker = broker_factory(shards=2)
    topics = {unique_topic("rs-a"): 3, unique_topic("rs-b"): 1, unique_topic("rs-c"): 4}
    for t, n in topics.items():
        create_topic(broker.bootstrap, t, n)
    layout = [(t, p) for t, n in topics.items() for p in range(n)]

    records = [(t, p, f"{t}/{p}/{i}/{rng.randrange(1 << 30)}".encode())
               for i in range(250) for (t, p) in [rng.choice(layout)]]
    reports = _produce(broker.bootstrap, records)
    old_end = {}
    for t, p, off, _, _ in reports:
        old_end[(t, p)] = max(old_end.get((t, p), 0), off + 1)
    expected = {}
    for t, p, v in records:
        expected.setdefault((t, p), []).append(v)
    ctx = f"(seed={seed}, signal={sig.name})"

    broker.stop(sig=sig)  # asserts exit code 0
    broker.start()

    md = list_topics(admin(broker.bootstrap))
    for t, n in topics.items():
        assert md.get(t) == n, f"after restart topic {t}: {md.get(t)} partitions, expected {n}; md={md} {ctx}"

    got = by_partition(consume(broker.bootstrap, layout, len(records)))
    for tp in layout:
        ms = got.get(tp, [])
        assert [m.offset() for m in ms] == list(range(len(expected.get(tp, [])))), \
            f"{tp} offsets after restart {[m.offset() for m in ms][:10]} {ctx}"
        assert [m.value() for m in ms] == expected.get(tp, []), f"{tp} records differ after restart {ctx}"
    assert sum(len(v) for v in got.values()) == len(records), ctx

    # New records continue exactly where the old log ended.
    more = [(t, p, f"more/{t}/{p}/{i}".encode()) for i in range(3) for (t, p) in layout]
    new_reports = _produce(broker.bootstrap, more)
    new_offsets = {}
    for t, p, off, _, _ in sorted(new_reports, key=lambda r: (r[0], r[1], r[2])):
        new_offsets.setdefault((t, p), []).append(off)
    for tp in layout:
        start = old_end.get(tp, 0)
        assert new_offsets[tp] == [start, start + 1, start + 2], \
            f"{tp}: offsets after restart {new_offsets[tp]}, expected to continue from {start} {ctx}"

    # And a second clean restart still has both generations.
    broker.restart()
    got = by_partition(consume(broker.bootstrap, layout, len(records) + len(more)))
    for tp in layout:
        vals = [m.value() for m in got.get(tp, [])]
        assert vals == expected.get(tp, []) + [v for t, p, v in more if (t, p) == tp], f"{tp} after 2nd restart {ctx}"


def test_restart_empty_and_auto_created_topics(broker_factory):
    broker = broker_factory(shards=2, extra_args=["--default-partitions", "2"])
    empty = unique_topic("rs-empty")
    create_topic(broker.bootstrap, empty, 3)
    auto = unique_topic("rs-auto")
    reports = _produce(broker.bootstrap, [(auto, 1, b"auto-0"), (auto, 1, b"auto-1")])
    assert [r[2] for r in reports] == [0, 1]

    broker.restart()
    md = list_topics(admin(broker.bootstrap))
    assert md.get(empty) == 3, md
    assert md.get(auto) == 2, md
    got = consume(broker.bootstrap, [(auto, 0), (auto, 1), (empty, 0), (empty, 1), (empty, 2)], 2)
    assert [(m.topic(), m.partition(), m.offset(), m.value()) for m in got] == \
        [(auto, 1, 0, b"auto-0"), (auto, 1, 1, b"auto-1")]
