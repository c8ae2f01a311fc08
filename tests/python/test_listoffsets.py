"""ListOffsets: earliest / latest watermarks and lookup by timestamp."""

import time

from confluent_kafka import TopicPartition

from kafkautil import DeliveryLog, consumer, create_topic, flush_all, producer, unique_topic

STEP = 1000


def test_watermarks_and_offsets_for_times(broker, rng):
    seed = rng.seed_value
    topic = unique_topic("lo")
    create_topic(broker.bootstrap, topic, 2)
    n = 40
    base = int(time.time() * 1000) - 3_600_000
    stamps = [base + i * STEP for i in range(n)]

    p = producer(broker.bootstrap)
    dl = DeliveryLog()
    # First half in one go (typically a single batch: lookup must look inside a batch),
    # second half one flush per record (one batch each: lookup across batches).
    for i in range(n // 2):
        p.produce(topic, value=str(i).encode(), partition=0, timestamp=stamps[i], on_delivery=dl)
    flush_all(p)
    for i in range(n // 2, n):
        p.produce(topic, value=str(i).encode(), partition=0, timestamp=stamps[i], on_delivery=dl)
        flush_all(p)
    assert not dl.errors, dl.errors[:5]
    assert [off for _, _, off, _, _ in dl.ok] == list(range(n))

    c = consumer(broker.bootstrap)
    try:
        assert c.get_watermark_offsets(TopicPartition(topic, 0), timeout=10, cached=False) == (0, n)
        # Empty partition: earliest == latest == 0.
        assert c.get_watermark_offsets(TopicPartition(topic, 1), timeout=10, cached=False) == (0, 0)

        probes = {base - 5 * STEP: 0}  # before everything -> first offset
        for i in range(n):
            probes[stamps[i]] = i  # exact hit
            if i + 1 < n:
                probes[stamps[i] + 1] = i + 1  # between i and i+1 -> i+1
        picks = sorted(rng.sample(sorted(probes), 25) + [base - 5 * STEP, stamps[0], stamps[n // 2],
                                                         stamps[n // 2 - 1] + 1, stamps[-1]])
        for ts in picks:
            res = c.offsets_for_times([TopicPartition(topic, 0, ts)], timeout=10)
            assert res[0].error is None, f"offsets_for_times({ts}) error {res[0].error} (seed={seed})"
            assert res[0].offset == probes[ts], \
                f"offsets_for_times(base+{ts - base}) = {res[0].offset}, expected {probes[ts]} (seed={seed})"

        # After the last timestamp: no such offset (-1, reported by librdkafka as OFFSET_END).
        res = c.offsets_for_times([TopicPartition(topic, 0, stamps[-1] + 1)], timeout=10)
        assert res[0].offset == -1, f"lookup past the end returned {res[0].offset}"
        # Empty partition lookup: also -1.
        res = c.offsets_for_times([TopicPartition(topic, 1, base)], timeout=10)
        assert res[0].offset == -1, f"lookup on empty partition returned {res[0].offset}"
    finally:
        c.close()


def test_latest_tracks_appends(broker):
    topic = unique_topic("lo-grow")
    create_topic(broker.bootstrap, topic, 1)
    c = consumer(broker.bootstrap)
    p = producer(broker.bootstrap)
    try:
        total = 0
        for batch in (1, 5, 17):
            for i in range(batch):
                p.produce(topic, value=f"{total + i}".encode(), partition=0)
            flush_all(p)
            total += batch
            assert c.get_watermark_offsets(TopicPartition(topic, 0), timeout=10, cached=False) == (0, total)
    finally:
        c.close()


def test_admin_list_offsets_with_every_spec(broker):
    """The admin client's ListOffsets specs, as confluent-kafka sends them (librdkafka asks for
    the max-timestamp spec with ListOffsets v7+): earliest, latest, by timestamp and the record
    with the largest timestamp, which a broker without v7 answers INVALID_REQUEST."""
    from confluent_kafka.admin import OffsetSpec
    from kafkautil import admin
    topic = unique_topic("lo-admin")
    create_topic(broker.bootstrap, topic, 1)
    base = int(time.time() * 1000) - 3_600_000
    # The largest timestamp is in the middle, at offset 2.
    stamps = [base, base + 10, base + 50, base + 20, base + 30]
    p = producer(broker.bootstrap)
    for i, ts in enumerate(stamps):
        p.produce(topic, value=str(i).encode(), partition=0, timestamp=ts)
        flush_all(p)
    a = admin(broker.bootstrap)
    tp = TopicPartition(topic, 0)
    specs = {"earliest": OffsetSpec.earliest(), "latest": OffsetSpec.latest(),
             "max": OffsetSpec.max_timestamp(), "ts": OffsetSpec.for_timestamp(base + 15)}
    got = {}
    for name, spec in specs.items():
        res = a.list_offsets({tp: spec}, request_timeout=10)[tp].result(timeout=15)
        got[name] = (res.offset, res.timestamp)
    assert got["earliest"][0] == 0
    assert got["latest"][0] == len(stamps)
    assert got["max"] == (2, base + 50), got
    assert got["ts"][0] == 2, got
