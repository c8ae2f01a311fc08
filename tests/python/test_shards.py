"""Partition -> shard placement, observed through the broker's 'partition opened' log lines."""

from collections import Counter

from kafkautil import DeliveryLog, create_topic, flush_all, producer, wait_until

# Fixed names: placement is a deterministic hash of (topic, partition, shard count),
# so these assertions are reproducible rather than probabilistic.
TOPIC = "shard-spread"


def _touch_all_partitions(bootstrap, topic, nparts):
    """Produce one record per partition so lazily-opened partitions get opened too."""
    dl = DeliveryLog()
    p = producer(bootstrap)
    for part in range(nparts):
        p.produce(topic, value=f"touch-{part}".encode(), partition=part, on_delivery=dl)
    flush_all(p)
    assert not dl.errors, dl.errors
    assert sorted(part for _, part, *_ in dl.ok) == list(range(nparts))


def _wait_opened(broker, topic, nparts, run=None):
    def all_opened():
        opened = [(p, s) for t, p, s in broker.partitions_opened(run) if t == topic]
        return opened if {p for p, _ in opened} == set(range(nparts)) else None

    try:
        return wait_until(all_opened, timeout=15, desc=f"'partition opened' lines for all of {topic}")
    except AssertionError as e:
        raise AssertionError(f"{e}\nseen: {broker.partitions_opened(run)}\n{broker.log_tail()}") from None


def test_partitions_spread_over_two_shards(broker_factory):
    nparts = 6
    broker = broker_factory(shards=2)
    create_topic(broker.bootstrap, TOPIC, nparts)
    _touch_all_partitions(broker.bootstrap, TOPIC, nparts)
    opened = _wait_opened(broker, TOPIC, nparts)

    counts = Counter(p for p, _ in opened)
    assert all(counts[p] == 1 for p in range(nparts)), f"partitions opened more than once: {counts}"
    owner = dict(opened)
    assert set(owner.values()) <= {0, 1}, f"shard ids out of range for --shards 2: {owner}"
    assert set(owner.values()) == {0, 1}, f"both shards should own partitions of {TOPIC}: {owner}"

    # Deterministic placement: after a clean restart with the same shard count, same owners.
    broker.restart()
    _touch_all_partitions(broker.bootstrap, TOPIC, nparts)
    reopened = _wait_opened(broker, TOPIC, nparts)
    counts = Counter(p for p, _ in reopened)
    assert all(counts[p] == 1 for p in range(nparts)), f"after restart, opened more than once: {counts}"
    assert dict(reopened) == owner, f"placement changed across restart: {owner} -> {dict(reopened)}"


def test_single_shard_owns_everything(broker_factory):
    nparts = 4
    broker = broker_factory(shards=1)
    create_topic(broker.bootstrap, TOPIC, nparts)
    _touch_all_partitions(broker.bootstrap, TOPIC, nparts)
    opened = _wait_opened(broker, TOPIC, nparts)
    assert sorted(opened) == [(p, 0) for p in range(nparts)], f"--shards 1 placement: {opened}"
