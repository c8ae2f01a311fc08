"""A broker on a real, small filesystem (a loop-mounted ext4 image, or tmpfs where loop devices
are missing): producing with acks=all until the disk is full answers KAFKA_STORAGE_ERROR and the
broker stays up; freeing space with DeleteRecords lets producers in again; after kill -9 and a
restart every acknowledged record is readable exactly once, at the offset it was acknowledged
with, and no offset was handed out twice."""

import shutil
import subprocess
import time

import pytest
from confluent_kafka import KafkaError, TopicPartition

from conftest import Broker
from kafkautil import admin, consume, consumer, create_topic, producer, unique_topic

DISK_MIB = 48
# Small segments, so that DeleteRecords can delete whole segments and give their space back.
SEGMENT_BYTES = 1 << 20
VALUE_BYTES = 16 * 1024
ROUND_MESSAGES = 32
ADMIN_TIMEOUT = 15.0


def run(*cmd):
    return subprocess.run(cmd, capture_output=True, text=True)


def is_mount(path):
    return run("mountpoint", "-q", str(path)).returncode == 0


@pytest.fixture
def small_disk(tmp_path):
    """A directory on a filesystem of DISK_MIB MiB; unmounted and removed at teardown."""
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    img = tmp_path / "disk.img"
    why_not = []
    kind = None
    if shutil.which("mkfs.ext4"):
        with open(img, "wb") as f:
            f.truncate(DISK_MIB << 20)
        # -m 0: no blocks reserved for root (the broker runs as root here), so "full" is full.
        r = run("mkfs.ext4", "-q", "-F", "-m", "0", str(img))
        if r.returncode == 0:
            r = run("mount", "-o", "loop", str(img), str(mnt))
        if r.returncode == 0:
            kind = "ext4"
        else:
            why_not.append(f"ext4 on a loop device: {r.stderr.strip()}")
    if kind is None:
        r = run("mount", "-t", "tmpfs", "-o", f"size={DISK_MIB}m", "tmpfs", str(mnt))
        if r.returncode == 0:
            kind = "tmpfs"
        else:
            why_not.append(f"tmpfs: {r.stderr.strip()}")
    if kind is None:
        img.unlink(missing_ok=True)
        pytest.skip("mounting a small filesystem is not allowed here (needs root or "
                    "CAP_SYS_ADMIN): " + "; ".join(why_not))
    try:
        yield mnt
    finally:
        if run("umount", str(mnt)).returncode != 0 and is_mount(mnt):
            run("umount", "-l", str(mnt))
        img.unlink(missing_ok=True)


@pytest.fixture
def small_disk_broker(spate_bin, small_disk, tmp_path):
    """A one-shard broker whose data dir is on the small disk; killed before the disk goes."""
    b = Broker(spate_bin, small_disk / "data", tmp_path / "logs", shards=1,
               extra_args=["--segment-bytes", str(SEGMENT_BYTES)])
    try:
        b.start()
        yield b
    finally:
        b.kill()


class Acks:
    """Delivery reports: acknowledged (offset, value) pairs and error codes."""

    def __init__(self):
        self.ok = []
        self.errors = []

    def __call__(self, err, msg):
        if err is not None:
            self.errors.append(err.code())
        else:
            self.ok.append((msg.offset(), msg.value()))


def produce_round(p, topic, seq, acks, value_bytes=VALUE_BYTES, messages=ROUND_MESSAGES):
    """Produces `messages` numbered values; returns the next sequence number."""
    for _ in range(messages):
        value = f"{seq:08d}".encode() + b"x" * value_bytes
        p.produce(topic, value=value, partition=0, on_delivery=acks)
        seq += 1
    assert p.flush(60) == 0, "deliveries still pending after 60 s"
    return seq


def watermarks(bootstrap, topic):
    c = consumer(bootstrap)
    try:
        return c.get_watermark_offsets(TopicPartition(topic, 0), timeout=10)
    finally:
        c.close()


def test_full_disk_refuses_writes_then_recovers_without_losing_or_reusing_offsets(small_disk_broker):
    b = small_disk_broker
    topic = unique_topic("full")
    a = create_topic(b.bootstrap, topic, 1)
    p = producer(b.bootstrap, retries=0, **{"linger.ms": 2})
    acks = Acks()
    seq = 0
    # Fill the disk. 48 MiB of 16 KiB values is about 3,000 of them; the bound only stops a
    # broker that never reports a full disk.
    max_rounds = (DISK_MIB << 20) // (VALUE_BYTES * ROUND_MESSAGES) + 10
    for _ in range(max_rounds):
        seq = produce_round(p, topic, seq, acks)
        if acks.errors:
            break
    assert acks.errors, f"the disk never filled: {len(acks.ok)} acknowledged\n{b.log_tail()}"
    assert set(acks.errors) == {KafkaError.KAFKA_STORAGE_ERROR}, acks.errors
    full_at = len(acks.ok)
    assert full_at > 100, f"only {full_at} records fit on the disk"
    # While it is full, writes keep failing and the broker keeps serving.
    errors_before = len(acks.errors)
    seq = produce_round(p, topic, seq, acks)
    assert len(acks.errors) > errors_before, "every write of a round succeeded on a full disk"
    assert b.alive(), b.log_tail()
    # Smaller and smaller records, one at a time, fill what is left until not even a small
    # one fits: then a tiny new file (the log start offset's) finds no free block either.
    for value_bytes in (4096, 512, 64):
        for _ in range(ROUND_MESSAGES * VALUE_BYTES // value_bytes + 10):
            errors_before = len(acks.errors)
            seq = produce_round(p, topic, seq, acks, value_bytes=value_bytes, messages=1)
            if len(acks.errors) > errors_before:
                break
        else:
            raise AssertionError(f"{value_bytes}-byte records never stopped fitting\n{b.log_tail()}")
    assert b.alive(), b.log_tail()
    low, high = watermarks(b.bootstrap, topic)
    assert (low, high) == (0, max(o for o, _ in acks.ok) + 1), "the log end is the last ack"

    # Free space: DeleteRecords below the middle deletes the whole segments under it.
    cut = high // 2
    (f,) = a.delete_records([TopicPartition(topic, 0, cut)], request_timeout=ADMIN_TIMEOUT).values()
    assert f.result(timeout=ADMIN_TIMEOUT).low_watermark == cut

    # Space comes back once the segments are unlinked (the deletion runs off the shard): wait
    # for a round that is all acknowledged, with a deadline.
    deadline = time.monotonic() + 30
    while True:
        errors_before, ok_before = len(acks.errors), len(acks.ok)
        seq = produce_round(p, topic, seq, acks)
        if len(acks.errors) == errors_before:
            break
        assert time.monotonic() < deadline, f"no space came back after DeleteRecords\n{b.log_tail()}"
    assert len(acks.ok) == ok_before + ROUND_MESSAGES
    assert b.alive(), b.log_tail()

    # Offsets are never handed out twice, and they are dense from the first to the last ack.
    offsets = [o for o, _ in acks.ok]
    assert len(set(offsets)) == len(offsets), "an offset was acknowledged twice"
    assert sorted(offsets) == list(range(len(offsets))), "acknowledged offsets have a gap"

    b.kill()
    b.start()
    low, high = watermarks(b.bootstrap, topic)
    assert (low, high) == (cut, len(offsets)), (low, high, cut, len(offsets))
    want = sorted((o, v) for o, v in acks.ok if o >= cut)
    got = consume(b.bootstrap, [(topic, 0)], len(want), settle=0.5)
    got = [(m.offset(), m.value()) for m in got]
    assert len(got) == len(want), f"read {len(got)} records, {len(want)} acknowledged at or above {cut}"
    assert [o for o, _ in got] == [o for o, _ in want], "records missing, repeated or out of place"
    assert got == want, "a record's value differs from what was acknowledged at its offset"
    # And the log goes on from where it ended.
    acks_after = Acks()
    produce_round(producer(b.bootstrap, retries=0), topic, seq, acks_after)
    assert acks_after.errors == []
    assert sorted(o for o, _ in acks_after.ok) == list(range(high, high + ROUND_MESSAGES))
