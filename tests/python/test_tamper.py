"""A data dir tampered with underneath the broker (issue 13, item 6): a deleted segment or a
deleted metadata log is refused loudly at the next start, and nothing is served wrongly. A
partition with missing offsets is wholly offline (Produce, Fetch and ListOffsets answer
KAFKA_STORAGE_ERROR, offsets below the gap included) while the others serve, until
`spate storage accept-loss` records the loss; then it serves what is left and never hands out
an offset twice."""

import subprocess

from confluent_kafka import KafkaError

from kafkautil import consume, create_topic, producer, unique_topic, flush_all, DeliveryLog

SEGMENT_BYTES = 4096
VALUE = b"x" * 200


def produce_many(bootstrap, topic, partition, n):
    """n acks=all records; returns their offsets."""
    dl = DeliveryLog()
    p = producer(bootstrap, **{"acks": "all", "linger.ms": 0, "batch.num.messages": 1})
    for i in range(n):
        p.produce(topic, value=VALUE + str(i).encode(), partition=partition, on_delivery=dl)
        p.poll(0)
    flush_all(p)
    assert not dl.errors, dl.errors[:5]
    return sorted(off for _, _, off, _, _ in dl.ok)


def produce_one(bootstrap, topic, value, partition=0):
    """One record without retries: (error code or None, offset)."""
    p = producer(bootstrap, **{"retries": 0, "acks": "all", "linger.ms": 0})
    out = []
    p.produce(topic, value=value, partition=partition,
              on_delivery=lambda e, m: out.append((e.code() if e else None, m.offset())))
    assert p.flush(15) == 0
    return out[0]


def cli(spate_bin, *args, timeout=30):
    return subprocess.run([str(spate_bin), *args], capture_output=True, text=True, timeout=timeout)


def cli_fetch(spate_bin, b, topic, partition, offset):
    """`spate consume` at an offset; (exit code, stdout, stderr)."""
    r = cli(spate_bin, "consume", topic, "--bootstrap-server", b.bootstrap, "--partition",
            str(partition), "--offset", str(offset), "--exit-at-end", "-f", "%o\n")
    return r.returncode, r.stdout, r.stderr


def segments(b, topic, partition):
    """Base offsets of the partition's segment files, ascending."""
    d = b.data_dir / f"{topic}-{partition}"
    return sorted(int(p.stem) for p in d.glob("*.log"))


def remove_segment(b, topic, partition, base):
    d = b.data_dir / f"{topic}-{partition}"
    for ext in ("log", "index", "timeindex"):
        (d / f"{base:020d}.{ext}").unlink()


def assert_offline(spate_bin, b, topic, partition, offsets):
    """Produce, Fetch (at each of `offsets`) and ListOffsets answer KAFKA_STORAGE_ERROR."""
    code, _ = produce_one(b.bootstrap, topic, b"refused", partition)
    assert code == KafkaError.KAFKA_STORAGE_ERROR, code
    for offset in offsets:
        rc, out, err = cli_fetch(spate_bin, b, topic, partition, offset)
        assert rc == 1 and "KAFKA_STORAGE_ERROR" in err, (offset, rc, out[:200], err)
    # --from-beginning asks ListOffsets for the earliest offset first.
    r = cli(spate_bin, "consume", topic, "--bootstrap-server", b.bootstrap, "--partition",
            str(partition), "--from-beginning", "--exit-at-end")
    assert r.returncode == 1 and "KAFKA_STORAGE_ERROR" in r.stderr, (r.returncode, r.stderr)


def offsets_served(b, topic, partition, n):
    return [m.offset() for m in consume(b.bootstrap, [(topic, partition)], n, settle=0.3)]


def test_deleted_active_segment_is_offline_until_the_loss_is_accepted(broker_factory, spate_bin):
    topic = unique_topic("tamper-active")
    b = broker_factory(shards=1, extra_args=("--segment-bytes", str(SEGMENT_BYTES)))
    create_topic(b.bootstrap, topic, 2)
    assert produce_many(b.bootstrap, topic, 0, 300) == list(range(300))
    assert produce_many(b.bootstrap, topic, 1, 20) == list(range(20))
    bases = segments(b, topic, 0)
    assert len(bases) >= 5, bases
    active = bases[-1]
    # The active segment goes while the broker runs; it stops cleanly (the marker skips only
    # the CRC scan, not the check).
    remove_segment(b, topic, 0, active)
    b.restart()
    lines = [l for l in b.log_text().splitlines() if f"{topic}-0 is missing offsets {active}-299" in l]
    assert lines and "ERROR" in lines[0], b.log_tail()
    assert_offline(spate_bin, b, topic, 0, [0, active - 1, active])
    # The other partition serves.
    assert offsets_served(b, topic, 1, 20) == list(range(20))
    # Still offline after another (clean) restart: nothing forgot the checkpointed end.
    b.restart()
    assert f"{topic}-0 is missing offsets {active}-299" in b.log_text(), b.log_tail()
    assert_offline(spate_bin, b, topic, 0, [0])

    # accept-loss refuses to run beside the broker, then records the loss once it is stopped.
    r = cli(spate_bin, "storage", "accept-loss", "--data-dir", str(b.data_dir), "--partition", f"{topic}-0")
    assert r.returncode == 1 and "in use" in r.stderr, (r.returncode, r.stderr)
    b.stop()
    r = cli(spate_bin, "storage", "accept-loss", "--data-dir", str(b.data_dir), "--partition", f"{topic}-0")
    assert r.returncode == 0, (r.stdout, r.stderr)
    assert f"offsets {active}-299" in r.stdout, r.stdout
    b.start()
    assert "is missing offsets" not in b.log_text(), b.log_tail()
    assert offsets_served(b, topic, 0, active) == list(range(active))
    # No offset is handed out twice: the log continues at its old end.
    assert produce_one(b.bootstrap, topic, b"after", 0) == (None, 300)
    b.restart()
    assert produce_one(b.bootstrap, topic, b"after2", 0) == (None, 301)
    assert offsets_served(b, topic, 0, active + 2) == list(range(active)) + [300, 301]


def test_deleted_middle_segment_is_offline_after_a_crash_too(broker_factory, spate_bin):
    topic = unique_topic("tamper-middle")
    b = broker_factory(shards=2, extra_args=("--segment-bytes", str(SEGMENT_BYTES)))
    create_topic(b.bootstrap, topic, 1)
    assert produce_many(b.bootstrap, topic, 0, 300) == list(range(300))
    bases = segments(b, topic, 0)
    assert len(bases) >= 5, bases
    gone, after = bases[2], bases[3]
    remove_segment(b, topic, 0, gone)
    b.kill()  # unclean: the CRC scan runs as well
    b.start()
    assert f"{topic}-0 is missing offsets {gone}-{after - 1}" in b.log_text(), b.log_tail()
    # Offsets below the gap are refused too: a consumer must not read on across it.
    assert_offline(spate_bin, b, topic, 0, [0, gone, after])
    b.stop()
    r = cli(spate_bin, "storage", "accept-loss", "--data-dir", str(b.data_dir), "--partition", f"{topic}-0")
    assert r.returncode == 0 and f"offsets {gone}-{after - 1}" in r.stdout, (r.stdout, r.stderr)
    b.start()
    want = [o for o in range(300) if not gone <= o < after]
    assert offsets_served(b, topic, 0, len(want)) == want
    assert produce_one(b.bootstrap, topic, b"after", 0) == (None, 300)


def test_deleted_metadata_log_refuses_to_start(broker_factory):
    topic = unique_topic("tamper-meta")
    b = broker_factory(shards=1)
    create_topic(b.bootstrap, topic, 2)
    assert produce_one(b.bootstrap, topic, b"kept", 0) == (None, 0)
    b.stop()
    subprocess.run(["rm", "-rf", str(b.data_dir / "__cluster_metadata-0")], check=True)
    proc = subprocess.run(b.command(), capture_output=True, text=True, timeout=30)
    assert proc.returncode != 0, proc.stderr[-2000:]
    assert "metadata log" in proc.stderr and "is missing" in proc.stderr, proc.stderr[-2000:]
    assert f"{topic}-0" in proc.stderr, proc.stderr[-2000:]
    # Nothing was created or changed: the partition data is still there, and no empty
    # metadata log was made that a second start would accept.
    assert not (b.data_dir / "__cluster_metadata-0").exists()
    assert (b.data_dir / f"{topic}-0" / f"{0:020d}.log").stat().st_size > 0
