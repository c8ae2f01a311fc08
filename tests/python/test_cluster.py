"""Several brokers as one cluster, metadata on the Raft quorum: real processes on 127.0.0.1.

Three nodes (`--shards 1` each), every node a voter and a broker (combined mode), started the
way scripts/cluster.sh starts them. Waits are conditions with deadlines, never fixed sleeps.
"""

import concurrent.futures
import json
import re
import signal
import socket
import struct
import subprocess
import time

import pytest
from confluent_kafka import KafkaException
from confluent_kafka.admin import ConfigResource, NewPartitions, NewTopic

from conftest import Broker, free_port
from kafkautil import (DeliveryLog, admin, consume, flush_all, producer, unique_topic, wait_until)

# Short quorum and session timeouts so failover tests stay quick on this machine; the
# defaults are exercised by test_failover_with_the_default_settings.
FAST = ["--controller-quorum-election-timeout-ms", "500", "--controller-quorum-fetch-timeout-ms", "1000",
        "--broker-heartbeat-interval-ms", "200", "--broker-session-timeout-ms", "2000"]


class Cluster:
    def __init__(self, spate_bin, tmp_path, n=3, extra_args=()):
        self.ids = list(range(1, n + 1))
        quorum_ports = {i: free_port() for i in self.ids}
        voters = ",".join(f"{i}@127.0.0.1:{quorum_ports[i]}" for i in self.ids)
        self.quorum_ports = quorum_ports
        self.nodes = {}
        for i in self.ids:
            args = ["--node-id", str(i), "--controller-listen", f"127.0.0.1:{quorum_ports[i]}",
                    "--voters", voters, *extra_args]
            self.nodes[i] = Broker(spate_bin, tmp_path / f"node{i}" / "data", tmp_path / f"node{i}" / "logs",
                                   shards=1, extra_args=args)

    def start(self):
        # Started together, as an operator would; each waits only for its own listener.
        for b in self.nodes.values():
            b.start()
        self.wait_brokers(self.ids)
        return self

    @property
    def bootstrap(self):
        return ",".join(b.bootstrap for b in self.nodes.values() if b.alive())

    def metadata(self, node, timeout=5.0):
        return admin(self.nodes[node].bootstrap).list_topics(timeout=timeout)

    def wait_brokers(self, expected, on=None, timeout=30.0):
        """Until Metadata from every live node (or `on`) lists exactly `expected` brokers."""
        nodes = on or [i for i, b in self.nodes.items() if b.alive()]

        def ok():
            for i in nodes:
                md = self.metadata(i)
                if sorted(md.brokers) != sorted(expected) or md.controller_id < 0:
                    return False
            return True
        wait_until(ok, timeout=timeout, desc=f"brokers {expected} in metadata of nodes {nodes}")

    def controller(self, on=None):
        node = on or next(i for i, b in self.nodes.items() if b.alive())
        return self.metadata(node).controller_id

    def kill_all(self):
        for b in self.nodes.values():
            b.kill()


@pytest.fixture
def cluster_factory(spate_bin, tmp_path, request):
    made = []

    def make(extra_args=FAST, n=3):
        c = Cluster(spate_bin, tmp_path / f"c{len(made)}", n=n, extra_args=extra_args)
        made.append(c)
        return c.start()

    yield make
    failed = getattr(request.node, "rep_call", None) is not None and request.node.rep_call.failed
    for c in made:
        for i, b in c.nodes.items():
            if failed and b.log_path is not None:
                print(f"\n[{request.node.name}] node {i}: {b.log_tail(40)}")
        c.kill_all()


def create(bootstrap, name, partitions, rf=1, config=None, timeout=20.0):
    a = admin(bootstrap)
    fs = a.create_topics([NewTopic(name, num_partitions=partitions, replication_factor=rf, config=config or {})],
                         request_timeout=timeout, operation_timeout=timeout)
    fs[name].result(timeout=timeout)


def leaders(md, topic):
    return {p: m.leader for p, m in md.topics[topic].partitions.items()}


def test_three_brokers_are_one_cluster(cluster_factory, spate_bin):
    c = cluster_factory()
    mds = {i: c.metadata(i) for i in c.ids}
    assert {md.cluster_id for md in mds.values()} == {mds[1].cluster_id}
    assert mds[1].cluster_id
    assert {md.controller_id for md in mds.values()} <= set(c.ids)
    for md in mds.values():
        assert sorted(md.brokers) == c.ids
        assert {b.port for b in md.brokers.values()} == {n.port for n in c.nodes.values()}

    # Created through a node that may not be the controller (forwarded), seen by all.
    t = unique_topic("spread")
    create(c.nodes[2].bootstrap, t, 12)

    def spread():
        for i in c.ids:
            md = c.metadata(i)
            if t not in md.topics or len(md.topics[t].partitions) != 12:
                return None
        return leaders(c.metadata(1), t)
    lead = wait_until(spread, timeout=20, desc="the topic on every node")
    # The active controller made the change for the client, not for the forwarding broker:
    # its log names the client (KIP-590's Envelope context).
    ctl_log = c.nodes[c.controller()].log_text()
    line = next(l for l in ctl_log.splitlines() if "topic created" in l and t in l)
    assert "principal=User:ANONYMOUS" in line and "client_id=rdkafka" in line, line
    assert "via_broker=" in line and "client=127.0.0.1:" in line, line
    assert set(lead.values()) == set(c.ids), f"leaders not on all three brokers: {lead}"
    for i in c.ids:
        assert leaders(c.metadata(i), t) == lead

    # confluent-kafka through one bootstrap address: it finds every leader itself.
    p = producer(c.nodes[1].bootstrap)
    log = DeliveryLog()
    sent = [(f"k{n}".encode(), f"v{n}".encode()) for n in range(600)]
    for k, v in sent:
        p.produce(t, key=k, value=v, on_delivery=log)
    flush_all(p)
    assert not log.errors and len(log.ok) == 600
    got = consume(c.nodes[3].bootstrap, [(t, i) for i in range(12)], 600)
    assert sorted((m.key(), m.value()) for m in got) == sorted(sent)
    by_partition = {}
    for m in got:
        by_partition.setdefault(m.partition(), []).append(m.offset())
    for offs in by_partition.values():
        assert offs == list(range(len(offs))), "offsets dense and in order per partition"

    # kafka-python, through another node.
    from kafka import KafkaConsumer, KafkaProducer, TopicPartition
    kt = unique_topic("kp")
    create(c.nodes[3].bootstrap, kt, 6)
    kp = KafkaProducer(bootstrap_servers=c.nodes[3].bootstrap, acks="all", enable_idempotence=False)
    for n in range(60):
        kp.send(kt, key=str(n).encode(), value=f"kp{n}".encode())
    kp.flush(30)
    kp.close()
    kc = KafkaConsumer(bootstrap_servers=c.nodes[2].bootstrap, auto_offset_reset="earliest",
                       enable_auto_commit=False, consumer_timeout_ms=10000)
    kc.assign([TopicPartition(kt, i) for i in range(6)])
    vals = set()
    deadline = time.monotonic() + 30
    while len(vals) < 60 and time.monotonic() < deadline:
        for recs in kc.poll(timeout_ms=500).values():
            vals.update(r.value for r in recs)
    kc.close()
    assert vals == {f"kp{n}".encode() for n in range(60)}

    # kcat: produce through node 2, read back through node 1.
    kt2 = unique_topic("kcat")
    create(c.nodes[1].bootstrap, kt2, 3)
    lines = "".join(f"m{n}\n" for n in range(30))
    subprocess.run(["kcat", "-b", c.nodes[2].bootstrap, "-P", "-t", kt2, "-X", "broker.address.family=v4"],
                   input=lines.encode(), check=True, timeout=60)
    out = subprocess.run(["kcat", "-b", c.nodes[1].bootstrap, "-C", "-t", kt2, "-o", "beginning", "-e", "-q",
                          "-X", "broker.address.family=v4"], capture_output=True, check=True, timeout=60)
    assert sorted(out.stdout.decode().split()) == sorted(f"m{n}" for n in range(30))


def test_describe_cluster_create_partitions_and_replication_factor(cluster_factory):
    c = cluster_factory()
    a = admin(c.nodes[1].bootstrap)
    desc = a.describe_cluster(request_timeout=10).result(timeout=15)
    assert sorted(n.id for n in desc.nodes) == c.ids
    assert desc.controller.id == c.controller()
    assert desc.cluster_id == c.metadata(1).cluster_id

    t = unique_topic("grow")
    create(c.nodes[1].bootstrap, t, 2)
    a.create_partitions([NewPartitions(t, 7)], request_timeout=15)[t].result(timeout=20)
    wait_until(lambda: all(len(c.metadata(i).topics[t].partitions) == 7 for i in c.ids), timeout=20,
               desc="7 partitions everywhere")
    # The new partitions take writes on their leaders.
    p = producer(c.nodes[2].bootstrap)
    log = DeliveryLog()
    for part in range(7):
        p.produce(t, value=f"p{part}".encode(), partition=part, on_delivery=log)
    flush_all(p)
    assert not log.errors and sorted(r[1] for r in log.ok) == list(range(7))
    with pytest.raises(KafkaException) as e:
        a.create_partitions([NewPartitions(t, 3)], request_timeout=15)[t].result(timeout=20)
    assert e.value.args[0].name() == "INVALID_PARTITIONS"

    # The operator's view: brokers, controller, every voter of the quorum, no leaderless partition.
    import json
    out = subprocess.run([str(c.nodes[1].binary), "cluster", "status", "--json", "--bootstrap-server",
                          c.nodes[3].bootstrap], capture_output=True, check=True, timeout=30)
    status = json.loads(out.stdout)
    assert status["cluster_id"] == desc.cluster_id
    assert status["controller"] == c.controller()
    assert sorted(b["id"] for b in status["brokers"]) == c.ids
    assert sorted(v["id"] for v in status["quorum"]["voters"]) == c.ids
    assert status["quorum"]["leader"] == status["controller"]
    assert status["leaderless"] == []
    described = subprocess.run([str(c.nodes[1].binary), "topic", "describe", t, "--json", "--bootstrap-server",
                                c.nodes[2].bootstrap], capture_output=True, check=True, timeout=30)
    parts = json.loads(described.stdout)[0]["partitions"]
    assert len(parts) == 7 and all(p["leader"] in c.ids and p["leader_epoch"] >= 0 for p in parts)

    # A factor above the live brokers is refused, never made smaller.
    with pytest.raises(KafkaException) as e:
        create(c.nodes[1].bootstrap, unique_topic("rf4"), 1, rf=4)
    assert e.value.args[0].name() == "INVALID_REPLICATION_FACTOR"


def test_consumer_group_across_the_cluster(cluster_factory):
    c = cluster_factory()
    t = unique_topic("grp")
    create(c.nodes[1].bootstrap, t, 6)
    p = producer(c.bootstrap)
    for n in range(120):
        p.produce(t, value=f"g{n}".encode(), partition=n % 6)
    flush_all(p)
    from kafkautil import consumer
    group = unique_topic("group")
    cons = consumer(c.nodes[2].bootstrap, **{"group.id": group, "enable.auto.commit": False,
                                             "enable.auto.offset.store": True})
    cons.subscribe([t])
    seen = []
    deadline = time.monotonic() + 60
    while len(seen) < 120 and time.monotonic() < deadline:
        m = cons.poll(0.5)
        if m is not None and m.error() is None:
            seen.append(m.value())
    assert len(seen) == 120
    cons.commit(asynchronous=False)
    cons.close()
    # The committed offsets are read back through another node's coordinator lookup.
    from confluent_kafka import TopicPartition
    again = consumer(c.nodes[3].bootstrap, **{"group.id": group})
    committed = again.committed([TopicPartition(t, i) for i in range(6)], timeout=20)
    again.close()
    assert sum(tp.offset for tp in committed) == 120


def test_controller_kill_minus_9_fails_over_and_the_node_catches_up(cluster_factory):
    c = cluster_factory()
    old = c.controller()
    c.nodes[old].kill()
    survivors = [i for i in c.ids if i != old]
    t = unique_topic("after")
    start = time.monotonic()
    wait_until(lambda: create(c.nodes[survivors[0]].bootstrap, t, 3) or True, timeout=30,
               desc="CreateTopics on a survivor")
    took = time.monotonic() - start
    print(f"controller failover (fast settings): CreateTopics succeeded {took:.2f}s after kill -9")
    new = c.controller(on=survivors[0])
    assert new in survivors
    c.wait_brokers(survivors, on=survivors)
    # The killed node comes back and learns what it missed.
    c.nodes[old].start()
    c.wait_brokers(c.ids)
    wait_until(lambda: len(c.metadata(old).topics.get(t).partitions) == 3, timeout=20,
               desc="the restarted node knows the topic created while it was down")


def test_a_minority_cannot_change_metadata_but_still_reads_it(cluster_factory):
    c = cluster_factory()
    t = unique_topic("before")
    create(c.nodes[1].bootstrap, t, 3)
    wait_until(lambda: t in c.metadata(3).topics, timeout=15, desc="topic on node 3")
    c.nodes[1].kill()
    c.nodes[2].kill()
    # Reads of existing metadata keep working on the survivor...
    md = c.metadata(3)
    assert t in md.topics and len(md.topics[t].partitions) == 3
    # ...changes do not: no quorum, no controller (the client gets an error or gives up).
    with pytest.raises((KafkaException, concurrent.futures.TimeoutError)):
        create(c.nodes[3].bootstrap, unique_topic("nope"), 1, timeout=12)
    # A majority again: changes work again.
    c.nodes[1].start()
    wait_until(lambda: create(c.nodes[3].bootstrap, unique_topic("again"), 1) or True, timeout=30,
               desc="CreateTopics once a majority is back")


def test_full_cluster_restart_keeps_topics_configs_and_records(cluster_factory):
    c = cluster_factory()
    t = unique_topic("keep")
    create(c.nodes[1].bootstrap, t, 6, config={"retention.ms": "3600000"})
    p = producer(c.bootstrap)
    sent = [f"r{n}".encode() for n in range(300)]
    for n, v in enumerate(sent):
        p.produce(t, value=v, partition=n % 6)
    flush_all(p)
    before = leaders(c.metadata(1), t)
    cluster_id = c.metadata(1).cluster_id
    for b in c.nodes.values():
        b.stop()
    for b in c.nodes.values():
        b.start()
    c.wait_brokers(c.ids)
    md = c.metadata(2)
    assert md.cluster_id == cluster_id
    wait_until(lambda: all(m.leader in c.ids for m in c.metadata(2).topics[t].partitions.values()),
               timeout=20, desc="every partition led again")
    assert leaders(c.metadata(2), t) == before
    a3 = admin(c.nodes[3].bootstrap)
    cfg = a3.describe_configs([ConfigResource("topic", t)])
    entries = list(cfg.values())[0].result(timeout=15)
    assert entries["retention.ms"].value == "3600000"
    got = consume(c.bootstrap, [(t, i) for i in range(6)], 300)
    assert sorted(m.value() for m in got) == sorted(sent)


def test_a_fenced_broker_takes_its_partitions_offline_until_it_is_back(cluster_factory):
    c = cluster_factory()
    t = unique_topic("fence")
    create(c.nodes[1].bootstrap, t, 6)
    ctl = c.controller()
    victim = next(i for i in c.ids if i != ctl)
    other = next(i for i in c.ids if i not in (ctl, victim))
    led = [p for p, l in leaders(c.metadata(other), t).items() if l == victim]
    assert led
    c.nodes[victim].proc.send_signal(signal.SIGSTOP)
    try:
        def offline():
            md = c.metadata(other)
            return victim not in md.brokers and all(md.topics[t].partitions[p].leader == -1 for p in led)
        wait_until(offline, timeout=20, desc="the stopped broker fenced and its partitions offline")
    finally:
        c.nodes[victim].proc.send_signal(signal.SIGCONT)
    c.wait_brokers(c.ids)
    wait_until(lambda: all(leaders(c.metadata(other), t)[p] == victim for p in led), timeout=20,
               desc="the broker leads its partitions again")
    # Their leader epoch moved on (fenced, then back).
    md = admin(c.nodes[other].bootstrap).list_topics(t, timeout=5)
    assert md.topics[t].partitions[led[0]].leader == victim


def describe(c, node, topic):
    """`spate topic describe --json` through `node`: {partition: described partition}."""
    out = subprocess.run([str(c.nodes[node].binary), "topic", "describe", topic, "--json", "--bootstrap-server",
                          c.nodes[node].bootstrap], capture_output=True, check=True, timeout=30)
    return {p["partition"]: p for p in json.loads(out.stdout)[0]["partitions"]}


def test_replication_factor_3_lists_every_replica_in_sync(cluster_factory):
    c = cluster_factory()
    t = unique_topic("rf3")
    create(c.nodes[2].bootstrap, t, 6, rf=3)

    def placed():
        for i in c.ids:
            md = c.metadata(i)
            if t not in md.topics or len(md.topics[t].partitions) != 6:
                return False
            for p in md.topics[t].partitions.values():
                if sorted(p.replicas) != c.ids or p.isrs != p.replicas or p.leader != p.replicas[0]:
                    return False
        return True
    wait_until(placed, timeout=20, desc="6 partitions with 3 replicas, all in sync, everywhere")
    # Leaders spread over the brokers.
    assert set(leaders(c.metadata(1), t).values()) == set(c.ids)
    parts = describe(c, 1, t)
    assert all(p["leader_epoch"] == 0 and not p["under_replicated"] and p["offline"] == [] for p in parts.values())

    # More replicas than brokers, and manual assignments naming unknown or repeated brokers, are refused.
    with pytest.raises(KafkaException) as e:
        create(c.nodes[1].bootstrap, unique_topic("rf4"), 1, rf=4)
    assert e.value.args[0].name() == "INVALID_REPLICATION_FACTOR"
    assert "larger than available brokers: 3" in e.value.args[0].str()
    a = admin(c.nodes[3].bootstrap)
    for bad in ([[1, 9]], [[1, 2], [3]]):
        name = unique_topic("manual")
        fs = a.create_topics([NewTopic(name, num_partitions=len(bad), replica_assignment=bad)], request_timeout=15)
        with pytest.raises(KafkaException) as e:
            fs[name].result(timeout=20)
        assert e.value.args[0].name() == "INVALID_REPLICA_ASSIGNMENT", bad
    name = unique_topic("manual")
    a.create_topics([NewTopic(name, num_partitions=2, replica_assignment=[[3, 1], [1, 2]])], request_timeout=15)[name].result(timeout=20)
    wait_until(lambda: [p.replicas for _, p in sorted(c.metadata(2).topics[name].partitions.items())]
               == [[3, 1], [1, 2]], timeout=20, desc="manual assignment placed")


def test_a_killed_broker_leaves_every_isr_and_its_leaderships_move(cluster_factory):
    c = cluster_factory()
    t = unique_topic("isr")
    create(c.nodes[1].bootstrap, t, 6, rf=3)
    ctl = c.controller()
    victim = next(i for i in c.ids if i != ctl)
    other = next(i for i in c.ids if i not in (ctl, victim))
    wait_until(lambda: len(describe(c, other, t)) == 6, timeout=20, desc="topic on every node")
    before = describe(c, other, t)
    led = [p for p, d in before.items() if d["leader"] == victim]
    assert led and len(led) < 6
    c.nodes[victim].kill()

    def fenced():
        md = c.metadata(other)
        return victim not in md.brokers and all(
            victim not in p.isrs and p.leader not in (victim, -1) for p in md.topics[t].partitions.values())
    wait_until(fenced, timeout=20, desc="the killed broker fenced, out of every ISR, leading nothing")
    after = describe(c, other, t)
    for p, d in after.items():
        assert d["replicas"] == before[p]["replicas"]
        assert d["isr"] == [r for r in before[p]["isr"] if r != victim]
        assert d["offline"] == [victim] and d["under_replicated"]
        if p in led:
            # The next replica in replica order leads, in a new epoch.
            assert d["leader"] == next(r for r in d["replicas"] if r != victim)
            assert d["leader_epoch"] > before[p]["leader_epoch"]
        else:
            # An ISR-only change keeps the leader and its epoch.
            assert d["leader"] == before[p]["leader"]
            assert d["leader_epoch"] == before[p]["leader_epoch"]
    # The partitions still take writes on their new leaders.
    p = producer(",".join(c.nodes[i].bootstrap for i in c.ids if i != victim))
    log = DeliveryLog()
    for part in range(6):
        p.produce(t, value=b"x", partition=part, on_delivery=log)
    flush_all(p)
    assert not log.errors and len(log.ok) == 6

    # Back: unfenced, but not in sync again until it has caught up (the leaders' AlterPartition).
    c.nodes[victim].start()
    c.wait_brokers(c.ids)
    back = describe(c, other, t)
    assert all(victim not in d["isr"] and d["leader"] != victim and d["offline"] == [] for d in back.values())


def test_unclean_leader_election_only_where_enabled(cluster_factory):
    c = cluster_factory()
    ctl = c.controller()
    x, y = [i for i in c.ids if i != ctl]
    a = admin(c.nodes[ctl].bootstrap)
    unclean, clean = unique_topic("unclean"), unique_topic("clean")
    fs = a.create_topics([
        NewTopic(unclean, num_partitions=1, replica_assignment=[[x, y]],
                 config={"unclean.leader.election.enable": "true"}),
        NewTopic(clean, num_partitions=1, replica_assignment=[[x, y]]),
    ], request_timeout=15)
    for f in fs.values():
        f.result(timeout=20)
    # y goes and comes back: out of sync (nothing re-adds it while followers do not fetch).
    c.nodes[y].kill()
    wait_until(lambda: all(describe(c, ctl, t)[0]["isr"] == [x] for t in (unclean, clean)), timeout=20,
               desc="y out of both ISRs")
    c.nodes[y].start()
    c.wait_brokers(c.ids)
    before = describe(c, ctl, unclean)[0]
    # The only in-sync replica goes: the clean topic goes offline, keeping its last ISR member;
    # the unclean one is led by y, alone in its ISR, in a new epoch.
    c.nodes[x].kill()
    wait_until(lambda: describe(c, ctl, unclean)[0]["leader"] == y, timeout=20, desc="unclean election of y")
    d = describe(c, ctl, unclean)[0]
    assert d["isr"] == [y] and d["leader_epoch"] > before["leader_epoch"]
    d = describe(c, ctl, clean)[0]
    assert d["leader"] == -1 and d["isr"] == [x]
    assert "unclean leader election" in c.nodes[ctl].log_text()


def controller_rpc(port, request, timeout=10.0):
    """One JSON RPC on a node's controller listener (cluster/wire.rs): the decoded answer."""
    payload = json.dumps(request).encode()
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.sendall(struct.pack(">IBI", 1 + 4 + len(payload), 2, 7) + payload)
        buf = b""
        while len(buf) < 4 or len(buf) < 4 + struct.unpack(">I", buf[:4])[0]:
            chunk = s.recv(65536)
            assert chunk, "controller listener closed the connection"
            buf += chunk
    kind, corr = struct.unpack(">BI", buf[4:9])
    assert (kind, corr) == (3, 7)
    return json.loads(buf[9:])


def broker_epoch(c, node):
    """The node's registration epoch, as its log says."""
    return int(re.findall(r"registered with the active controller broker_epoch=(\d+)",
                          c.nodes[node].log_text())[-1])


def test_alter_partition_on_the_controller_channel(cluster_factory):
    c = cluster_factory()
    ctl = c.controller()
    t = unique_topic("alter")
    create(c.nodes[1].bootstrap, t, 1, rf=3)
    wait_until(lambda: len(describe(c, ctl, t)) == 1, timeout=20, desc="topic on the controller")
    d = describe(c, ctl, t)[0]
    leader, (f1, f2) = d["leader"], [r for r in d["replicas"] if r != d["leader"]]
    out = subprocess.run([str(c.nodes[ctl].binary), "topic", "describe", t, "--json", "--bootstrap-server",
                          c.nodes[ctl].bootstrap], capture_output=True, check=True, timeout=30)
    topic_id = json.loads(out.stdout)[0]["id"]
    epochs = {i: broker_epoch(c, i) for i in c.ids}

    def alter(broker, epoch, leader_epoch, partition_epoch, isr):
        r = controller_rpc(c.quorum_ports[ctl], {"AlterPartition": {
            "broker_id": broker, "broker_epoch": epoch, "topic_id": topic_id, "partition": 0,
            "leader_epoch": leader_epoch, "partition_epoch": partition_epoch, "new_isr": isr}})
        result = r["Partition"]["result"]
        return result["Ok"] if "Ok" in result else result["Err"]["code"]

    # Shrunk by hand: committed, same leader epoch, partition epoch + 1, seen by every node.
    got = alter(leader, epochs[leader], 0, 0, [[leader, -1], [f1, epochs[f1]]])
    assert got["isr"] == [leader, f1] and got["leader"] == leader
    assert got["leader_epoch"] == 0 and got["partition_epoch"] == 1
    # The leader's own AlterPartition puts f2 back (it is caught up): partition epoch 2.
    wait_until(lambda: all(sorted(c.metadata(i).topics[t].partitions[0].isrs) == sorted([leader, f1, f2])
                           for i in c.ids), timeout=20, desc="the leader growing the ISR back")
    # Refused, in Kafka's order.
    assert alter(leader, epochs[leader] + 100, 0, 2, [[leader, -1]]) == 77       # STALE_BROKER_EPOCH
    assert alter(f1, epochs[f1], 0, 2, [[f1, -1]]) == 74                          # FENCED_LEADER_EPOCH
    assert alter(leader, epochs[leader], 0, 1, [[leader, -1]]) == 95              # INVALID_UPDATE_VERSION
    assert alter(leader, epochs[leader], 0, 2, [[leader, -1], [f2, epochs[f2] + 100]]) == 107  # INELIGIBLE
    assert alter(leader, epochs[leader], 0, 2, [[f1, -1]]) == 42                  # leader not in the ISR
    # Unchanged: the current state, nothing written.
    got = alter(leader, epochs[leader], 0, 2, [[leader, -1], [f1, -1], [f2, -1]])
    assert got["partition_epoch"] == 2 and sorted(got["isr"]) == sorted([leader, f1, f2])


def test_the_preferred_leader_leads_again_once_in_sync(cluster_factory):
    c = cluster_factory(extra_args=FAST + ["--leader-imbalance-check-interval-seconds", "1"])
    ctl = c.controller()
    t = unique_topic("preferred")
    preferred, other = [i for i in c.ids if i != ctl]
    a = admin(c.nodes[ctl].bootstrap)
    a.create_topics([NewTopic(t, num_partitions=1, replica_assignment=[[preferred, other, ctl]])],
                    request_timeout=15)[t].result(timeout=20)
    wait_until(lambda: len(describe(c, ctl, t)) == 1, timeout=20, desc="topic on the controller")
    c.nodes[preferred].kill()
    wait_until(lambda: describe(c, ctl, t)[0]["leader"] == other, timeout=20, desc="the next replica leads")
    d = describe(c, ctl, t)[0]
    c.nodes[preferred].start()
    c.wait_brokers(c.ids)
    # It catches up, its leader puts it back in the ISR, and the controller's preferred-leader
    # pass gives it the leadership back.
    wait_until(lambda: describe(c, ctl, t)[0]["leader"] == preferred, timeout=30,
               desc="the preferred replica leads again")
    after = describe(c, ctl, t)[0]
    assert preferred in after["isr"] and after["leader_epoch"] == d["leader_epoch"] + 1


def test_a_stopping_broker_leaves_every_isr_at_once(cluster_factory):
    # Default session timeout (9 s): only the controlled shutdown can fence it this fast.
    c = cluster_factory(extra_args=["--controller-quorum-election-timeout-ms", "500",
                                    "--controller-quorum-fetch-timeout-ms", "1000"])
    t = unique_topic("stop")
    create(c.nodes[1].bootstrap, t, 3, rf=3)
    ctl = c.controller()
    victim = next(i for i in c.ids if i != ctl)
    other = next(i for i in c.ids if i not in (ctl, victim))
    wait_until(lambda: len(describe(c, other, t)) == 3, timeout=20, desc="topic on every node")
    c.nodes[victim].stop()
    start = time.monotonic()

    def out():
        md = c.metadata(other)
        return all(victim not in p.isrs and p.leader != victim for p in md.topics[t].partitions.values())
    wait_until(out, timeout=20, desc="the stopped broker out of every ISR")
    assert time.monotonic() - start < 5


def test_a_second_process_with_the_same_node_id_is_refused(cluster_factory, spate_bin, tmp_path):
    c = cluster_factory()
    twin = Broker(spate_bin, tmp_path / "twin" / "data", tmp_path / "twin" / "logs", shards=1,
                  extra_args=c.nodes[2].extra_args[:4] + ["--voters", c.nodes[2].extra_args[5]] + FAST)
    # Same node id, its own quorum port is taken by node 2: it must not take over node 2.
    twin.extra_args[3] = f"127.0.0.1:{free_port()}"
    try:
        twin.proc = subprocess.Popen(twin.command(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        out, _ = twin.proc.communicate(timeout=30)
        text = out.decode("utf-8", "replace")
        assert twin.proc.returncode != 0
        assert "quorum address" in text, text[-2000:]
    finally:
        if twin.proc.poll() is None:
            twin.proc.kill()
    assert sorted(c.metadata(1).brokers) == c.ids


@pytest.mark.parametrize("tries", [3])
def test_failover_with_the_default_settings(cluster_factory, tries):
    """kill -9 of the active controller: CreateTopics on a survivor works again within 15 s."""
    c = cluster_factory(extra_args=[])
    times = []
    for n in range(tries):
        old = c.controller()
        c.nodes[old].kill()
        survivor = next(i for i in c.ids if i != old)
        start = time.monotonic()
        wait_until(lambda: create(c.nodes[survivor].bootstrap, unique_topic(f"d{n}"), 1, timeout=10) or True,
                   timeout=30, desc="CreateTopics after a controller kill")
        times.append(time.monotonic() - start)
        c.nodes[old].start()
        c.wait_brokers(c.ids)
    print(f"controller failover with default settings: {['%.2f' % t for t in times]} s")
    assert max(times) < 15, times


LOAD_SCRIPT = r"""
import sys, time
from confluent_kafka import Producer
boot, topic, seconds = sys.argv[1], sys.argv[2], float(sys.argv[3])
p = Producer({"bootstrap.servers": boot, "broker.address.family": "v4", "acks": 1, "linger.ms": 5,
              "enable.idempotence": False, "queue.buffering.max.messages": 200000})
payload = b"x" * 1024
end = time.monotonic() + seconds
delivered = [0]
def done(err, msg):
    if err is None:
        delivered[0] += 1
while time.monotonic() < end:
    try:
        p.produce(topic, payload, on_delivery=done)
    except BufferError:
        p.poll(0.01)
    p.poll(0)
p.flush(60)
print(delivered[0])
"""


def quorum_epoch(c):
    import json
    out = subprocess.run([str(c.nodes[1].binary), "cluster", "status", "--json", "--bootstrap-server",
                          c.bootstrap.split(",")[0]], capture_output=True, check=True, timeout=30)
    return json.loads(out.stdout)["quorum"]["leader_epoch"]


def test_a_saturated_shard_0_causes_no_election_and_no_fencing(cluster_factory):
    """Every node's only shard (shard 0) under full produce load, with the default quorum and
    session timeouts: the Raft ticks and heartbeats run in their own latency-sensitive task
    queue, so the load causes no election and fences no broker."""
    import sys
    c = cluster_factory(extra_args=[])
    t = unique_topic("load")
    create(c.nodes[1].bootstrap, t, 12)
    wait_until(lambda: all(t in c.metadata(i).topics for i in c.ids), timeout=15, desc="topic everywhere")
    epoch = quorum_epoch(c)
    controller = c.controller()
    marks = {i: len(b.log_text()) for i, b in c.nodes.items()}
    loads = [subprocess.Popen([sys.executable, "-c", LOAD_SCRIPT, c.nodes[i].bootstrap, t, "15"],
                              stdout=subprocess.PIPE) for i in (1, 2)]
    sent = [int(p.communicate(timeout=120)[0] or 0) for p in loads]
    assert sum(sent) > 10_000, f"the load did not run: {sent}"
    for i, b in c.nodes.items():
        new_lines = b.log_text()[marks[i]:]
        assert "broker fenced" not in new_lines, f"node {i}:\n{new_lines[-3000:]}"
        assert "active controller changed" not in new_lines, f"node {i}:\n{new_lines[-3000:]}"
    assert quorum_epoch(c) == epoch
    assert c.controller() == controller
    print(f"{sum(sent)} messages of 1 KiB acknowledged in 15 s through two nodes; no election, no fencing")


def test_a_node_of_another_cluster_refuses_to_join(spate_bin, tmp_path):
    """A data dir whose meta.properties names another cluster: the node stops with both ids."""
    c = Cluster(spate_bin, tmp_path / "c", extra_args=FAST)
    stray = c.nodes[3]
    stray.data_dir.mkdir(parents=True)
    (stray.data_dir / "meta.properties").write_text("version=1\ncluster.id=someothercluster\n")
    try:
        c.nodes[1].start()
        c.nodes[2].start()
        c.wait_brokers([1, 2], on=[1, 2])
        cluster_id = c.metadata(1).cluster_id
        stray.start()
        rc = stray.proc.wait(timeout=30)
        log = stray.log_text()
        assert rc != 0
        assert "someothercluster" in log and cluster_id in log, log[-3000:]
        assert sorted(c.metadata(1).brokers) == [1, 2]
    finally:
        c.kill_all()


def test_a_broker_outside_the_voters_follows_the_quorum_as_an_observer(cluster_factory, spate_bin, tmp_path):
    c = cluster_factory()
    voters = c.nodes[1].extra_args[c.nodes[1].extra_args.index("--voters") + 1]
    t_before = unique_topic("before")
    create(c.nodes[1].bootstrap, t_before, 3)
    observer = Broker(spate_bin, tmp_path / "observer" / "data", tmp_path / "observer" / "logs", shards=1,
                      extra_args=["--node-id", "4", "--controller-listen", f"127.0.0.1:{free_port()}",
                                  "--voters", voters, *FAST])
    c.nodes[4] = observer
    c.ids.append(4)
    observer.start()
    # It learns the metadata without voting, registers and is unfenced once caught up.
    c.wait_brokers([1, 2, 3, 4])
    assert t_before in c.metadata(4).topics
    quorum = json.loads(subprocess.run([str(spate_bin), "cluster", "status", "--json", "--bootstrap-server",
                                        c.nodes[1].bootstrap], capture_output=True, check=True, timeout=30).stdout)
    assert sorted(v["id"] for v in quorum["quorum"]["voters"]) == [1, 2, 3]
    # A second live process with the same node id is refused, and the first keeps its place.
    twin = Broker(spate_bin, tmp_path / "twin" / "data", tmp_path / "twin" / "logs", shards=1,
                  extra_args=["--node-id", "4", "--controller-listen", f"127.0.0.1:{free_port()}",
                              "--voters", voters, *FAST])
    twin.start()
    try:
        wait_until(lambda: "is already registered by a live broker" in twin.log_text(), timeout=20,
                   desc="the twin's registration refused")
        md = c.metadata(1)
        assert md.brokers[4].port == observer.port
    finally:
        twin.kill()
    # New topics place partitions on it too, and it serves them.
    t = unique_topic("obs")
    create(observer.bootstrap, t, 8)
    wait_until(lambda: 4 in leaders(c.metadata(4), t).values(), timeout=20, desc="a partition led by the observer")
    p = producer(observer.bootstrap)
    for n in range(80):
        p.produce(t, value=f"o{n}".encode(), partition=n % 8)
    flush_all(p)
    got = consume(c.nodes[2].bootstrap, [(t, i) for i in range(8)], 80)
    assert sorted(m.value() for m in got) == sorted(f"o{n}".encode() for n in range(80))
    # Restarted, it catches up with what it missed.
    observer.kill()
    c.ids.remove(4)
    c.wait_brokers([1, 2, 3], on=[1, 2, 3])
    t_missed = unique_topic("missed")
    create(c.nodes[1].bootstrap, t_missed, 2)
    observer.start()
    c.ids.append(4)
    c.wait_brokers([1, 2, 3, 4])
    wait_until(lambda: t_missed in c.metadata(4).topics, timeout=20, desc="the observer catches up")


def test_a_node_behind_the_compacted_log_gets_a_snapshot(cluster_factory, spate_bin, tmp_path):
    """With the Raft log compacted every 5 applied entries, a voter that was down and a new
    observer are both brought up to date by a snapshot of the metadata, then by entries."""
    c = cluster_factory(extra_args=FAST + ["--controller-log-compact-entries", "5"])
    voters = c.nodes[1].extra_args[c.nodes[1].extra_args.index("--voters") + 1]
    down = next(i for i in c.ids if i != c.controller())
    c.nodes[down].kill()
    up = [i for i in c.ids if i != down]
    c.wait_brokers(up, on=up)
    names = [unique_topic(f"snap{n}") for n in range(12)]
    for n in names:
        create(c.nodes[up[0]].bootstrap, n, 2)
    c.nodes[down].start()
    c.wait_brokers(c.ids)
    wait_until(lambda: all(n in c.metadata(down).topics for n in names), timeout=20,
               desc="the restarted voter knows every topic")
    assert "metadata snapshot installed from the quorum" in c.nodes[down].log_text()
    observer = Broker(spate_bin, tmp_path / "late" / "data", tmp_path / "late" / "logs", shards=1,
                      extra_args=["--node-id", "7", "--controller-listen", f"127.0.0.1:{free_port()}",
                                  "--voters", voters, *FAST, "--controller-log-compact-entries", "5"])
    c.nodes[7] = observer
    observer.start()
    c.ids.append(7)
    c.wait_brokers(c.ids)
    assert all(n in c.metadata(7).topics for n in names)
    assert "metadata snapshot installed from the quorum" in observer.log_text()
    # Both keep following with entries after the snapshot.
    last = unique_topic("after")
    create(c.nodes[up[0]].bootstrap, last, 1)
    wait_until(lambda: last in c.metadata(down).topics and last in c.metadata(7).topics, timeout=20,
               desc="entries after the snapshot")
    # And a clean restart of the voter reopens what the snapshot left on its disk.
    c.nodes[down].restart()
    c.wait_brokers(c.ids)
    assert all(n in c.metadata(down).topics for n in names + [last])


def test_a_restarted_broker_answers_only_once_it_caught_up(cluster_factory):
    """A broker restarting with a stale metadata log (topics deleted and created while it was
    down) holds client requests until it has caught up with the quorum and been unfenced,
    as a Kafka broker does: it never answers Metadata from the metadata of before its stop.
    Deterministic: the rest of the quorum is paused (SIGSTOP) while it starts."""
    c = cluster_factory()
    old, new = unique_topic("stale"), unique_topic("fresh")
    create(c.nodes[1].bootstrap, old, 1)
    wait_until(lambda: old in c.metadata(3).topics, timeout=15, desc="topic on node 3")
    c.nodes[3].stop()
    a = admin(c.nodes[1].bootstrap)
    a.delete_topics([old], operation_timeout=15)[old].result(timeout=20)
    create(c.nodes[1].bootstrap, new, 1)
    wait_until(lambda: old not in c.metadata(1).topics and new in c.metadata(2).topics, timeout=15,
               desc="the change on nodes 1 and 2")
    for i in (1, 2):
        c.nodes[i].proc.send_signal(signal.SIGSTOP)
    try:
        c.nodes[3].start()
        # Its local metadata still has the old topic; it must not answer from it.
        try:
            md = c.metadata(3, timeout=3)
            stale = old in md.topics or new not in md.topics
        except KafkaException:
            stale = False  # no answer: held until caught up
        assert not stale, "a restarted broker answered Metadata from its stale metadata"
    finally:
        for i in (1, 2):
            c.nodes[i].proc.send_signal(signal.SIGCONT)
    md = wait_until(lambda: (lambda m: m if new in m.topics else None)(c.metadata(3, timeout=10)),
                    timeout=30, desc="node 3 caught up")
    assert old not in md.topics
    assert "serving client requests" in c.nodes[3].log_text()
