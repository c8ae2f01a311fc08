"""Idempotent producers (KIP-98's idempotence, the default of current clients).

kafka-python 3.x and the Java client are idempotent unless told otherwise, so their plain
`KafkaProducer(bootstrap_servers=...)` needs InitProducerId; librdkafka (confluent-kafka,
kcat) is with `enable.idempotence=true`. The crash test kills the broker with SIGKILL while an
idempotent producer streams: the producer retries what was in flight at the kill with the
same sequence numbers, and the broker, having rebuilt its producer state from the log,
answers what it had already written with the original offsets. So every message is in the
log exactly once, in the order it was produced, per partition.
"""

import shutil
import subprocess
import threading
import time

import pytest
from kafka import KafkaProducer

from kafkautil import by_partition, consume, create_topic, producer, unique_topic, wait_until

KCAT = shutil.which("kcat") or shutil.which("kafkacat")


def check_exactly_once_in_order(msgs, produced, ctx):
    """`produced`: {partition: [values in produce order]}; every one exactly once, in order."""
    got = {p: [m.value() for m in ms] for (_, p), ms in by_partition(msgs).items()}
    for p, values in produced.items():
        assert got.get(p) == values, (
            f"{ctx}: partition {p} holds {len(got.get(p, []))} messages, produced {len(values)}; "
            f"first difference at {next((i for i, (a, b) in enumerate(zip(got.get(p, []), values)) if a != b), None)}")
    assert set(got) <= set(produced), f"{ctx}: messages in unexpected partitions {set(got) - set(produced)}"


def test_kafka_python_default_producer_is_idempotent_and_works(broker):
    topic = unique_topic("kpidem")
    create_topic(broker.bootstrap, topic, 3)
    p = KafkaProducer(bootstrap_servers=broker.bootstrap)
    try:
        futures = [(i % 3, f"kp-{i}".encode(), p.send(topic, value=f"kp-{i}".encode(), partition=i % 3))
                   for i in range(300)]
        p.flush(timeout=30)
        produced = {}
        for part, value, fut in futures:
            md = fut.get(timeout=30)
            assert md.partition == part
            produced.setdefault(part, []).append(value)
    finally:
        p.close(timeout=10)
    msgs = consume(broker.bootstrap, [(topic, q) for q in range(3)], 300)
    check_exactly_once_in_order(msgs, produced, f"topic {topic}")


def test_confluent_idempotent_producer_round_trip(broker):
    topic = unique_topic("cfidem")
    create_topic(broker.bootstrap, topic, 4)
    p = producer(broker.bootstrap, **{"enable.idempotence": True, "linger.ms": 2})
    acked = []
    produced = {}
    for i in range(2000):
        part = i % 4
        value = f"cf-{i}".encode()
        produced.setdefault(part, []).append(value)
        p.produce(topic, value=value, partition=part,
                  on_delivery=lambda e, m: acked.append((e, m.partition(), m.offset())))
        p.poll(0)
    assert p.flush(30) == 0
    assert all(e is None for e, _, _ in acked), [e for e, _, _ in acked if e is not None][:3]
    assert len(acked) == 2000
    msgs = consume(broker.bootstrap, [(topic, q) for q in range(4)], 2000)
    check_exactly_once_in_order(msgs, produced, f"topic {topic}")


def test_kcat_idempotent_producer(broker):
    if KCAT is None:
        pytest.fail("kcat not installed (scripts/bootstrap.sh installs it)", pytrace=False)
    topic = unique_topic("kcatidem")
    create_topic(broker.bootstrap, topic, 1)
    lines = [f"kcat-{i}".encode() for i in range(500)]
    res = subprocess.run(
        [KCAT, "-b", broker.bootstrap, "-X", "broker.address.family=v4", "-X", "enable.idempotence=true",
         "-P", "-t", topic, "-p", "0"],
        input=b"\n".join(lines) + b"\n", capture_output=True, timeout=60)
    assert res.returncode == 0, res.stderr[-2000:]
    msgs = consume(broker.bootstrap, [(topic, 0)], len(lines))
    check_exactly_once_in_order(msgs, {0: lines}, f"topic {topic}")


def test_idempotent_producer_across_kill_9_is_exactly_once(broker_factory, rng):
    b = broker_factory(shards=2)
    topic = unique_topic("idemcrash")
    partitions = 4
    create_topic(b.bootstrap, topic, partitions)
    ctx = f"seed {rng.seed_value}, topic {topic}"
    # Retries must outlast the restart; several batches stay in flight at the kill.
    p = producer(b.bootstrap, **{"enable.idempotence": True, "linger.ms": 1,
                                 "message.timeout.ms": 60000, "request.timeout.ms": 5000})
    lock = threading.Lock()
    acked = []
    errors = []

    def on_delivery(err, msg):
        with lock:
            (acked if err is None else errors).append((msg.partition(), msg.offset(), err))

    produced = {}
    total = 8000
    stop = threading.Event()

    def stream():
        # About 2,000 messages a second, so the kill lands mid-stream; then keep serving the
        # delivery reports.
        i = 0
        while not stop.is_set():
            if i == total:
                p.poll(0.05)
                continue
            part = rng.randrange(partitions)
            value = f"m-{i}".encode()
            try:
                p.produce(topic, value=value, partition=part, on_delivery=on_delivery)
            except BufferError:
                p.poll(0.01)
                continue
            produced.setdefault(part, []).append(value)
            i += 1
            p.poll(0)
            if i % 10 == 0:
                time.sleep(0.005)

    t = threading.Thread(target=stream, daemon=True)
    t.start()
    try:
        wait_until(lambda: len(acked) >= 1000, timeout=60, desc="1000 acks before the kill")
        b.kill()  # SIGKILL mid-stream: requests in flight get no answer
        with lock:
            at_kill = len(acked)
        time.sleep(0.5)
        b.start()
        wait_until(lambda: len(acked) + len(errors) >= total, timeout=90, desc=f"all {total} delivery reports")
    finally:
        stop.set()
        t.join(timeout=30)
    assert at_kill < total, f"{ctx}: everything was acknowledged before the kill"
    assert p.flush(60) == 0, f"{ctx}: messages left undelivered"
    assert not errors, f"{ctx}: delivery errors {errors[:5]}"
    assert sum(len(v) for v in produced.values()) == total
    assert len(acked) == total
    assert len({(q, o) for q, o, _ in acked}) == total, f"{ctx}: an offset acknowledged twice"
    msgs = consume(b.bootstrap, [(topic, q) for q in range(partitions)], total, timeout=60, settle=1.0)
    check_exactly_once_in_order(msgs, produced, ctx)
