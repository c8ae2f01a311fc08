"""Storage faults, injected through the file layer's seam (SPATE_TEST_FAULTS, see
src/storage/io.rs): a full or failing disk answers KAFKA_STORAGE_ERROR and loses nothing that
was acknowledged; a failed fdatasync takes the partition offline until a restart recovers it."""

from confluent_kafka import KafkaError

from kafkautil import consume, create_topic, producer, unique_topic


def produce_one(bootstrap, topic, value, partition=0, acks="all"):
    """Produces one message without retries; returns (error code or None, offset)."""
    p = producer(bootstrap, **{"retries": 0, "acks": acks, "linger.ms": 0})
    out = []
    p.produce(topic, value=value, partition=partition,
              on_delivery=lambda e, m: out.append((e.code() if e else None, m.offset())))
    assert p.flush(15) == 0
    return out[0]


def values_and_offsets(bootstrap, topic, n, partition=0):
    return [(m.offset(), m.value()) for m in consume(bootstrap, [(topic, partition)], n, settle=0.3)]


def test_enospc_and_eio_on_write_answer_storage_error_then_recover(broker_factory, monkeypatch):
    for errno in ("ENOSPC", "EIO"):
        topic = unique_topic(f"full-{errno.lower()}")
        monkeypatch.setenv("SPATE_TEST_FAULTS", f"write:{errno}:{topic}-0/:3")
        b = broker_factory(shards=2, name=f"b-{errno}")
        create_topic(b.bootstrap, topic, 1)
        assert "storage faults will be injected" in b.log_text()
        for i in range(3):
            code, _ = produce_one(b.bootstrap, topic, f"lost{i}".encode())
            assert code == KafkaError.KAFKA_STORAGE_ERROR, (errno, i, code)
        # Space is back: the partition takes writes again, from offset 0 (failed writes left
        # nothing behind).
        for i in range(5):
            assert produce_one(b.bootstrap, topic, f"ok{i}".encode()) == (None, i), errno
        assert values_and_offsets(b.bootstrap, topic, 5) == [(i, f"ok{i}".encode()) for i in range(5)]
        b.stop()


def test_failed_fsync_takes_partition_offline_until_restart(broker_factory, monkeypatch):
    topic = unique_topic("fsync")
    monkeypatch.setenv("SPATE_TEST_FAULTS", f"sync:EIO:{topic}-0/:1")
    b = broker_factory(shards=2)
    create_topic(b.bootstrap, topic, 2)
    # acks=1 is answered before any fdatasync: acknowledged, in the page cache.
    assert produce_one(b.bootstrap, topic, b"before", acks="1") == (None, 0)
    code, _ = produce_one(b.bootstrap, topic, b"unsynced")
    assert code == KafkaError.KAFKA_STORAGE_ERROR
    assert "fdatasync failed: partition taken offline" in b.log_text(), b.log_tail()
    # No retry of the fsync and no pretending: the partition refuses writes...
    code, _ = produce_one(b.bootstrap, topic, b"refused", acks="1")
    assert code == KafkaError.KAFKA_STORAGE_ERROR
    # ...while the other partition works.
    assert produce_one(b.bootstrap, topic, b"other", partition=1) == (None, 0)
    monkeypatch.delenv("SPATE_TEST_FAULTS")
    b.restart()
    assert "recovery scan done" in b.log_text(), "a stop after a failed flush is not clean"
    got = values_and_offsets(b.bootstrap, topic, 1)
    assert got[0] == (0, b"before")
    end = len(got)
    assert produce_one(b.bootstrap, topic, b"after") == (None, end)


def test_failed_index_and_roll_writes_do_not_reuse_offsets(broker_factory, monkeypatch):
    """Each write of an append after the log write (offset index, time index) and of a roll
    (new segment files, old segment's seal) fails once: the failed produce leaves nothing, the
    next one gets the offset it would have had, and an unclean restart finds the same log."""
    topic = unique_topic("idx")
    part = f"{topic}-0/"
    b = broker_factory(shards=1, extra_args=("--segment-bytes", "1024"))
    create_topic(b.bootstrap, topic, 1)
    # Each rule fires once, at the first write of its kind after the restart (a roll for
    # create and seal: 1 KiB segments roll every few of the 300-byte values below).
    monkeypatch.setenv("SPATE_TEST_FAULTS", ";".join(
        f"{op}:ENOSPC:{part}:1" for op in ("index", "timeindex", "create", "seal")))
    b.restart()
    acked = []
    failures = 0
    for i in range(40):
        value = f"v{i:03d}".encode() + b"x" * 300
        code, offset = produce_one(b.bootstrap, topic, value)
        if code is None:
            assert offset == len(acked), (i, offset, len(acked))
            acked.append(value)
        else:
            assert code == KafkaError.KAFKA_STORAGE_ERROR, (i, code)
            failures += 1
    assert failures == 4, f"{failures} failures, one per rule expected\n{b.log_tail()}"
    assert "could not be undone" not in b.log_text(), b.log_tail()
    want = list(enumerate(acked))
    assert values_and_offsets(b.bootstrap, topic, len(acked)) == want
    monkeypatch.delenv("SPATE_TEST_FAULTS")
    b.kill()
    b.start()
    assert "recovery scan done" in b.log_text(), "kill -9 is not a clean stop"
    assert values_and_offsets(b.bootstrap, topic, len(acked)) == want
    assert produce_one(b.bootstrap, topic, b"after") == (None, len(acked))


def test_acks_all_past_the_request_timeout_answers_request_timed_out(broker_factory, monkeypatch):
    """A slow disk (the first fdatasync of the partition takes 4 s) against a 1 s Produce
    timeout: the producer gets REQUEST_TIMED_OUT, as Kafka answers an acks=all request whose
    durability outlasts its timeout, instead of waiting on; the data it wrote stays readable once
    the disk catches up."""
    topic = unique_topic("slow")
    monkeypatch.setenv("SPATE_TEST_FAULTS", f"stall:4000:{topic}-0/:1")
    b = broker_factory(shards=1)
    create_topic(b.bootstrap, topic, 1)
    p = producer(b.bootstrap, **{"retries": 0, "acks": "all", "linger.ms": 0,
                                 "request.timeout.ms": 1000})
    out = []
    p.produce(topic, value=b"slow", partition=0,
              on_delivery=lambda e, m: out.append(e.code() if e else None))
    assert p.flush(15) == 0
    assert out == [KafkaError.REQUEST_TIMED_OUT], out
    # The next acks=all produce joins a flush after the stalled one and is acknowledged.
    assert produce_one(b.bootstrap, topic, b"next") == (None, 1)
    assert values_and_offsets(b.bootstrap, topic, 2) == [(0, b"slow"), (1, b"next")]
