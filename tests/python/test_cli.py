"""The admin CLI (`spate topic|group|produce|consume`) next to real Kafka clients: what spate
produces, confluent-kafka reads (same partitions as murmur2 producers); what confluent-kafka
produces, spate consumes; a live consumer group shows up in `spate group describe` and blocks
`reset-offsets` until it leaves."""

import json
import subprocess

import pytest

from confluent_kafka import Consumer

from kafkautil import COMMON, consume, create_topic, flush_all, producer, unique_topic, wait_until

RUN_TIMEOUT_S = 60


def spate(spate_bin, broker, *args, stdin=""):
    return subprocess.run([str(spate_bin), *args, "--bootstrap-server", broker.bootstrap],
                          input=stdin, capture_output=True, text=True, timeout=RUN_TIMEOUT_S)


def ok(spate_bin, broker, *args, stdin=""):
    r = spate(spate_bin, broker, *args, stdin=stdin)
    assert r.returncode == 0, f"spate {args} failed:\n{r.stdout}\n{r.stderr}"
    return r.stdout


def test_spate_produce_read_by_confluent(spate_bin, broker):
    topic = unique_topic("cli")
    ok(spate_bin, broker, "topic", "create", topic, "--partitions", "4")
    lines = "".join(f"key{i % 6}|value{i}\n" for i in range(30))
    ok(spate_bin, broker, "produce", topic, "--key-separator", "|", "--header", "origin=spate", stdin=lines)
    msgs = consume(broker.bootstrap, [(topic, p) for p in range(4)], 30)
    assert len(msgs) == 30
    spate_partition = {}
    for m in msgs:
        assert m.headers() == [("origin", b"spate")]
        assert m.value().startswith(b"value")
        spate_partition.setdefault(m.key(), set()).add(m.partition())
    assert all(len(ps) == 1 for ps in spate_partition.values()), spate_partition

    # librdkafka's murmur2 partitioner (Java's default) puts each key where spate did.
    p = producer(broker.bootstrap, partitioner="murmur2")
    for k in spate_partition:
        p.produce(topic, key=k, value=b"from-confluent")
    flush_all(p)
    msgs = consume(broker.bootstrap, [(topic, p) for p in range(4)], 36)
    for m in msgs:
        if m.value() == b"from-confluent":
            assert {m.partition()} == spate_partition[m.key()], m.key()


def test_spate_consumes_what_confluent_produced(spate_bin, broker):
    topic = unique_topic("cli")
    create_topic(broker.bootstrap, topic, 1)
    p = producer(broker.bootstrap, **{"compression.type": "none"})
    for i in range(3):
        p.produce(topic, key=f"k{i}".encode(), value=f"v{i}".encode(), headers=[("h", f"{i}".encode())])
    flush_all(p)
    out = ok(spate_bin, broker, "consume", topic, "--from-beginning", "-e", "-f", "%o %k=%s %h\\n")
    assert out == "0 k0=v0 h=0\n1 k1=v1 h=1\n2 k2=v2 h=2\n"


@pytest.mark.parametrize("codec", ["gzip", "snappy", "lz4", "zstd"])
def test_spate_consumes_compressed_batches(spate_bin, broker, codec):
    """Batches compressed by librdkafka with each codec are read back record by record."""
    topic = unique_topic(f"cli-{codec}")
    create_topic(broker.bootstrap, topic, 1)
    p = producer(broker.bootstrap, **{"compression.type": codec, "linger.ms": 50})
    n = 500
    for i in range(n):
        p.produce(topic, key=f"k{i}".encode(), value=f"{codec}-value-{i:05d}".encode() * 4,
                  headers=[("i", f"{i}".encode())])
    flush_all(p)
    out = ok(spate_bin, broker, "consume", topic, "--from-beginning", "-e", "-f", "%o %k %h %s\\n")
    lines = out.splitlines()
    assert len(lines) == n, f"{len(lines)} lines, expected {n}: {out[-500:]}"
    for i, line in enumerate(lines):
        assert line == f"{i} k{i} i={i} " + f"{codec}-value-{i:05d}" * 4, line


def test_live_group_in_describe_and_reset_refused(spate_bin, broker_factory):
    broker = broker_factory(shards=2, extra_args=("--group-initial-rebalance-delay-ms", "0"))
    topic = unique_topic("cli")
    group = unique_topic("g")
    create_topic(broker.bootstrap, topic, 2)
    ok(spate_bin, broker, "produce", topic, "--partition", "0", "--value", "a", "--value", "b")
    c = Consumer({"bootstrap.servers": broker.bootstrap, **COMMON, "group.id": group,
                  "auto.offset.reset": "earliest", "enable.auto.commit": False,
                  "session.timeout.ms": 10000, "fetch.wait.max.ms": 100})
    try:
        c.subscribe([topic])
        got = []

        def assigned_and_read():
            m = c.poll(0.1)
            if m is not None and m.error() is None:
                got.append(m)
            return len(c.assignment()) == 2 and len(got) >= 2
        wait_until(assigned_and_read, timeout=30, desc="consumer assigned and reading")
        c.commit(asynchronous=False)

        d = json.loads(ok(spate_bin, broker, "group", "describe", group, "--json"))[0]
        assert d["state"] == "Stable"
        assert len(d["members"]) == 1
        assert d["members"][0]["assignment"] == {topic: [0, 1]}
        committed = {o["partition"]: o["committed_offset"] for o in d["offsets"]}
        assert committed[0] == 2

        r = spate(spate_bin, broker, "group", "reset-offsets", group, "--topic", topic, "--to-earliest")
        assert r.returncode == 1
        assert "NON_EMPTY_GROUP" in r.stderr and "stop the group's consumers first" in r.stderr, r.stderr
    finally:
        c.close()

    wait_until(lambda: json.loads(ok(spate_bin, broker, "group", "describe", group, "--json"))[0]["state"] == "Empty",
               timeout=30, desc="group empty after the consumer left")
    ok(spate_bin, broker, "group", "reset-offsets", group, "--topic", f"{topic}:0", "--to-earliest")
    d = json.loads(ok(spate_bin, broker, "group", "describe", group, "--json"))[0]
    assert {o["partition"]: o["committed_offset"] for o in d["offsets"]}[0] == 0
    groups = json.loads(ok(spate_bin, broker, "group", "list", "--json"))
    assert group in [g["group"] for g in groups]
