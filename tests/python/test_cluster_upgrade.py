"""A one-node broker's data dir carried into a cluster (README "Moving a one-node broker into a
cluster"): its topics keep their ids, partitions and records, and its committed group offsets
carry over, on the first clustered start; the import happens once.

Real processes on 127.0.0.1, `--shards 1`. Waits are conditions with deadlines, never fixed
sleeps.
"""

import json
import subprocess
import time

import pytest
from confluent_kafka import TopicPartition

from conftest import Broker
from kafkautil import admin, consumer, flush_all, producer, wait_until
from test_cluster import FAST, Cluster, create

TOPIC = "orders"
GROUP = "g1"
PENDING = "__cluster_metadata-0.one-node"
IMPORTED = "__cluster_metadata-0.one-node.imported"
IMPORT_DONE = "topics are imported into the cluster"
IMPORT_PENDING = "topics are pending import into the cluster"


def topic_describe(binary, bootstrap, name):
    out = subprocess.run([str(binary), "topic", "describe", name, "--json", "--bootstrap-server", bootstrap],
                         capture_output=True, timeout=30)
    assert out.returncode == 0, out.stderr[-2000:]
    return json.loads(out.stdout)[0]


def produce_keyed(bootstrap, n, start=0):
    """n keyed messages, acks=all; returns {partition: [values in offset order]}."""
    p = producer(bootstrap)
    delivered = []

    def cb(err, msg):
        assert err is None, err
        delivered.append((msg.partition(), msg.offset(), msg.value()))
    for i in range(start, start + n):
        p.produce(TOPIC, key=f"k{i % 37}".encode(), value=f"v{i}".encode(), on_delivery=cb)
    flush_all(p)
    assert len(delivered) == n
    out = {}
    for part, _, value in sorted(delivered):
        out.setdefault(part, []).append(value)
    return out


def read_all(bootstrap, partitions, expected, timeout=60.0):
    """Every record of `orders` from the beginning: {partition: [values in offset order]}."""
    c = consumer(bootstrap)
    try:
        c.assign([TopicPartition(TOPIC, p, 0) for p in range(partitions)])
        got = {}
        deadline = time.monotonic() + timeout
        while sum(len(v) for v in got.values()) < expected:
            assert time.monotonic() < deadline, f"read {got} of {expected}"
            m = c.poll(0.2)
            if m is not None and m.error() is None:
                got.setdefault(m.partition(), []).append(m.value())
        return got
    finally:
        c.close()


def consume_in_group(bootstrap, count, timeout=60.0, settle=1.0):
    """Consumes in GROUP until `count` records came (then `settle` s more, so extras show), and
    commits exactly what it consumed. Returns [(partition, offset, value)]."""
    c = consumer(bootstrap, **{"group.id": GROUP, "enable.auto.commit": False,
                               "auto.offset.reset": "earliest"})
    try:
        c.subscribe([TOPIC])
        got = []
        deadline = time.monotonic() + timeout
        settle_until = None
        while True:
            now = time.monotonic()
            if settle_until is None and len(got) >= count:
                settle_until = now + settle
            if settle_until is not None and now >= settle_until:
                break
            assert now < deadline, f"consumed {len(got)} of {count} in {GROUP}"
            m = c.poll(0.2)
            if m is None or m.error() is not None:
                continue
            got.append((m.partition(), m.offset(), m.value()))
        kept = got[:count]
        last = {}
        for part, off, _ in kept:
            last[part] = max(last.get(part, -1), off)
        if last:
            c.commit(offsets=[TopicPartition(TOPIC, p, o + 1) for p, o in last.items()], asynchronous=False)
        return got
    finally:
        c.close()


def committed(bootstrap, partitions):
    c = consumer(bootstrap, **{"group.id": GROUP})
    try:
        got = c.committed([TopicPartition(TOPIC, p) for p in range(partitions)], timeout=30)
        return {tp.partition: tp.offset for tp in got}
    finally:
        c.close()


@pytest.mark.parametrize("stop", ["sigterm", "kill9"])
def test_a_one_node_data_dir_joins_a_cluster_with_its_topics_and_group_offsets(spate_bin, tmp_path, stop):
    # ACLs on (the brokers' principal a super user), so an ACL can go along too.
    acls_on = ["--authorizer", "acl", "--super-users", "User:ANONYMOUS"]
    c = Cluster(spate_bin, tmp_path / "c", extra_args=[*FAST, *acls_on])
    node1 = c.nodes[1]
    single = Broker(spate_bin, node1.data_dir, tmp_path / "single" / "logs", shards=1,
                    extra_args=acls_on)
    try:
        # ---- the one-node broker: a topic, records, a group's committed offsets.
        single.start()
        create(single.bootstrap, TOPIC, 3)
        topic_id = topic_describe(spate_bin, single.bootstrap, TOPIC)["id"]
        sent = produce_keyed(single.bootstrap, 300)
        assert len(sent) == 3, "the keys spread over every partition"
        first = consume_in_group(single.bootstrap, 200, settle=0)
        first = first[:200]
        before = committed(single.bootstrap, 3)
        expected = {p: -1001 for p in range(3)}  # OFFSET_INVALID: nothing committed
        for part, off, _ in first:
            expected[part] = max(expected[part], off + 1)
        assert before == expected and sum(max(o, 0) for o in before.values()) == 200, before
        # A client quota goes along with the metadata.
        subprocess.run([spate_bin, "quota", "set", "--bootstrap-server", single.bootstrap,
                        "--client-id", "imported-app", "--producer-byte-rate", "4096"],
                       check=True, capture_output=True, timeout=30)
        # And an ACL.
        subprocess.run([spate_bin, "acl", "add", "--bootstrap-server", single.bootstrap,
                        "--allow-principal", "User:alice", "--operation", "Read",
                        "--topic", TOPIC], check=True, capture_output=True, timeout=30)
        if stop == "sigterm":
            single.stop()
        else:
            single.kill()

        # ---- the same data dir as node 1 of a three-node cluster, with two fresh nodes.
        c.start()
        wait_until(lambda: IMPORT_DONE in node1.log_text(), timeout=60, desc="the import committed")
        assert IMPORT_PENDING in node1.log_text()
        assert (node1.data_dir / IMPORTED).is_dir()
        assert not (node1.data_dir / PENDING).exists()
        assert "replication factor" in node1.log_text() and "spate topic reassign __consumer_offsets" in node1.log_text()

        for i in c.ids:
            wait_until(lambda i=i: TOPIC in c.metadata(i).topics
                       and len(c.metadata(i).topics[TOPIC].partitions) == 3,
                       timeout=30, desc=f"{TOPIC} on node {i}")
        d = topic_describe(spate_bin, c.nodes[2].bootstrap, TOPIC)
        assert d["id"] == topic_id
        md = c.metadata(3)
        assert {p: m.replicas for p, m in md.topics[TOPIC].partitions.items()} == {0: [1], 1: [1], 2: [1]}
        assert md.cluster_id != "" and md.cluster_id == c.metadata(1).cluster_id

        quotas = json.loads(subprocess.run(
            [spate_bin, "quota", "list", "--json", "--bootstrap-server", c.nodes[3].bootstrap],
            check=True, capture_output=True, text=True, timeout=30).stdout)
        assert quotas == [{"entity": "clients/imported-app", "quotas": {"producer_byte_rate": 4096.0}}], quotas
        acls = json.loads(subprocess.run(
            [spate_bin, "acl", "list", "--json", "--bootstrap-server", c.nodes[3].bootstrap],
            check=True, capture_output=True, text=True, timeout=30).stdout)
        assert [(a["name"], a["principal"], a["operation"]) for a in acls] == \
            [(TOPIC, "User:alice", "Read")], acls

        # Every record, in order per partition.
        assert read_all(c.nodes[3].bootstrap, 3, 300) == sent

        # The group resumes after its committed offsets: the other 100 records, none of the
        # first 200 again.
        assert committed(c.nodes[2].bootstrap, 3) == before
        rest = consume_in_group(c.nodes[2].bootstrap, 100)
        first_values = {v for _, _, v in first}
        rest_values = [v for _, _, v in rest]
        assert len(rest_values) == 100, f"{len(rest_values)} records after the committed offsets"
        assert not first_values & set(rest_values), "records before the committed offsets were delivered again"
        assert first_values | set(rest_values) == {v for vs in sent.values() for v in vs}

        # New produces and commits work.
        more = produce_keyed(c.bootstrap, 30, start=300)
        newer = consume_in_group(c.nodes[3].bootstrap, 30)
        assert sorted(v for _, _, v in newer) == sorted(v for vs in more.values() for v in vs)
        ends = committed(c.nodes[1].bootstrap, 3)
        assert sum(ends.values()) == 330, ends

        if stop == "kill9":
            return
        # ---- the whole cluster restarts: everything stays, nothing is imported twice.
        for b in c.nodes.values():
            b.stop()
        for b in c.nodes.values():
            b.start()
        c.wait_brokers(c.ids)
        assert IMPORT_PENDING not in node1.log_text() and IMPORT_DONE not in node1.log_text()
        assert topic_describe(spate_bin, c.nodes[1].bootstrap, TOPIC)["id"] == topic_id
        wait_until(lambda: all(m.leader == 1 for m in c.metadata(2).topics[TOPIC].partitions.values()),
                   timeout=30, desc="node 1 leads orders again")
        everything = read_all(c.nodes[2].bootstrap, 3, 330)
        assert everything == {p: sent.get(p, []) + more.get(p, []) for p in range(3)}
        assert committed(c.nodes[3].bootstrap, 3) == ends
    except BaseException:
        for name, b in [("single", single), *c.nodes.items()]:
            if b.log_path is not None:
                print(f"\n[{name}] {b.log_tail(60)}")
        raise
    finally:
        single.kill()
        c.kill_all()


def test_a_pending_import_is_refused_as_a_one_node_broker(spate_bin, tmp_path):
    """A data dir whose one-node metadata is being imported does not start without --voters."""
    data = tmp_path / "d" / "data"
    (data / PENDING).mkdir(parents=True)
    b = Broker(spate_bin, data, tmp_path / "d" / "logs", shards=1)
    proc = subprocess.run(b.command(), capture_output=True, timeout=30)
    assert proc.returncode != 0
    assert b"--voters" in proc.stderr and PENDING.encode() in proc.stderr, proc.stderr[-2000:]
