"""A real network partition of a 3-node cluster, made with network namespaces and veth pairs.

Every node runs in its own network namespace with two links:
  - a client link on bridge `<tag>bc` in the root namespace (10.X.1.N/24, the bridge is
    10.X.1.254), which the test process uses to reach each node's `--listen`;
  - a quorum link on bridge `<tag>bq` (10.X.2.N/24), the only way the controller listeners
    (`--controller-listen`, `--voters`) reach each other.
Taking the root-side end of one node's quorum veth down cuts that node off the quorum while
clients still reach every node. The test creates the namespaces, bridges and veths and removes
them at teardown, also when it fails; where the machine does not allow it (not root, no `ip`,
no network namespaces) it says so and skips.

What a node believes is read with Metadata sent to that node itself over a raw socket (a Kafka
client picks any broker it knows for Metadata). Waits are conditions with deadlines, never
fixed sleeps.
"""

import os
import random
import shutil
import signal
import socket
import struct
import subprocess
import time
import uuid

import pytest
from confluent_kafka import KafkaException

from conftest import Broker, port_open
from kafkautil import unique_topic, wait_until
from test_cluster import FAST, create

KAFKA_PORT = 9092
QUORUM_PORT = 9093
IP_TIMEOUT_S = 10


def ip(*args, check=True):
    return subprocess.run(["ip", *args], capture_output=True, text=True, timeout=IP_TIMEOUT_S, check=check)


class Net:
    """Namespaces `spate-<tag>-nN`, bridges `sp<tag>bc` / `sp<tag>bq`, veths `sp<tag>cN` / `sp<tag>qN`."""

    def __init__(self, ids):
        self.ids = list(ids)
        self.tag = uuid.uuid4().hex[:6]
        self.ns = {i: f"spate-{self.tag}-n{i}" for i in self.ids}
        self.client_bridge = f"sp{self.tag}bc"
        self.quorum_bridge = f"sp{self.tag}bq"
        self.client_veth = {i: f"sp{self.tag}c{i}" for i in self.ids}
        self.quorum_veth = {i: f"sp{self.tag}q{i}" for i in self.ids}
        self.x = self._free_octet()
        self.made_ns = []
        self.made_links = []

    @staticmethod
    def _free_octet():
        """A 10.X.0.0/16 that no address or route on this machine uses (X in 64..250)."""
        used = ip("-4", "addr").stdout + ip("-4", "route", "show", "table", "all").stdout
        for x in random.sample(range(64, 251), 187):
            if f"10.{x}." not in used:
                return x
        raise RuntimeError("no free 10.X.0.0/16 subnet")

    def client_ip(self, i):
        return f"10.{self.x}.1.{i}"

    def quorum_ip(self, i):
        return f"10.{self.x}.2.{i}"

    def setup(self):
        for i in self.ids:
            ip("netns", "add", self.ns[i])
            self.made_ns.append(self.ns[i])
        for br, addr in ((self.client_bridge, f"10.{self.x}.1.254/24"), (self.quorum_bridge, None)):
            ip("link", "add", br, "type", "bridge")
            self.made_links.append(br)
            if addr:
                ip("addr", "add", addr, "dev", br)
            ip("link", "set", br, "up")
        for i in self.ids:
            ns = self.ns[i]
            ip("-n", ns, "link", "set", "lo", "up")
            for root_end, inner, br, addr in (
                    (self.client_veth[i], "eth-c", self.client_bridge, self.client_ip(i)),
                    (self.quorum_veth[i], "eth-q", self.quorum_bridge, self.quorum_ip(i))):
                ip("link", "add", root_end, "type", "veth", "peer", "name", inner, "netns", ns)
                self.made_links.append(root_end)
                ip("link", "set", root_end, "master", br, "up")
                ip("-n", ns, "addr", "add", f"{addr}/24", "dev", inner)
                ip("-n", ns, "link", "set", inner, "up")

    def cut(self, i):
        """Node i loses its quorum link (its client link stays)."""
        ip("link", "set", self.quorum_veth[i], "down")

    def isolate(self, i):
        """Node i loses its quorum link and every path to the other nodes' client addresses
        (replication), both ways, with blackhole routes; the test process still reaches it."""
        self.cut(i)
        for j in self.ids:
            if j != i:
                ip("-n", self.ns[i], "route", "add", "blackhole", f"{self.client_ip(j)}/32")
                ip("-n", self.ns[j], "route", "add", "blackhole", f"{self.client_ip(i)}/32")

    def rejoin(self, i):
        for j in self.ids:
            if j != i:
                ip("-n", self.ns[i], "route", "del", "blackhole", f"{self.client_ip(j)}/32", check=False)
                ip("-n", self.ns[j], "route", "del", "blackhole", f"{self.client_ip(i)}/32", check=False)
        self.heal(i)

    def heal(self, i):
        ip("link", "set", self.quorum_veth[i], "up")

    def teardown(self):
        # Processes the test started in these namespaces (normally already killed): by pid.
        for ns in self.made_ns:
            pids = ip("netns", "pids", ns, check=False).stdout.split()
            for pid in pids:
                try:
                    os.kill(int(pid), signal.SIGKILL)
                except (ProcessLookupError, ValueError):
                    pass
        problems = []
        for ns in self.made_ns:  # deleting a namespace deletes its veth ends and their peers
            r = ip("netns", "del", ns, check=False)
            if r.returncode != 0:
                problems.append(f"netns del {ns}: {r.stderr.strip()}")
        for link in self.made_links:
            if ip("link", "show", link, check=False).returncode == 0:
                r = ip("link", "del", link, check=False)
                if r.returncode != 0:
                    problems.append(f"link del {link}: {r.stderr.strip()}")
        return problems


class NsBroker(Broker):
    """A `spate serve` run with `ip netns exec <ns>` (which execs: the process is spate itself)."""

    def __init__(self, ns, host, *args, **kwargs):
        self.ns = ns
        self.host = host
        super().__init__(*args, **kwargs)

    @property
    def bootstrap(self):
        return f"{self.host}:{self.port}"

    def command(self):
        return ["ip", "netns", "exec", self.ns, *super().command()]

    def wait_ready(self, timeout=30.0):
        deadline = time.monotonic() + timeout
        while True:
            rc = self.proc.poll()
            if rc is not None:
                raise AssertionError(f"spate exited with code {rc} before becoming ready\n{self.log_tail()}")
            if port_open(self.port, self.host) and "broker ready" in self.log_text():
                return
            if time.monotonic() >= deadline:
                raise AssertionError(f"spate not ready on {self.bootstrap} after {timeout}s\n{self.log_tail()}")
            time.sleep(0.05)


@pytest.fixture
def net():
    if os.geteuid() != 0:
        pytest.skip("network namespaces need root")
    if shutil.which("ip") is None:
        pytest.skip("no `ip` (iproute2) on this machine")
    n = Net([1, 2, 3])
    try:
        n.setup()
    except (subprocess.CalledProcessError, subprocess.TimeoutExpired, RuntimeError) as e:
        problems = n.teardown()
        detail = getattr(e, "stderr", None) or str(e)
        pytest.skip(f"this machine does not allow the namespaces/veths/bridges the test needs: "
                    f"{' '.join(getattr(e, 'cmd', []) or [])}: {str(detail).strip()}"
                    + (f" (cleanup: {problems})" if problems else ""))
    yield n
    problems = n.teardown()
    assert not problems, f"network cleanup failed: {problems}"


@pytest.fixture
def ns_cluster(net, spate_bin, tmp_path, request):
    voters = ",".join(f"{i}@{net.quorum_ip(i)}:{QUORUM_PORT}" for i in net.ids)
    nodes = {}
    for i in net.ids:
        args = ["--node-id", str(i), "--controller-listen", f"{net.quorum_ip(i)}:{QUORUM_PORT}",
                "--voters", voters, *FAST]
        nodes[i] = NsBroker(net.ns[i], net.client_ip(i), spate_bin, tmp_path / f"node{i}" / "data",
                            tmp_path / f"node{i}" / "logs", shards=1, extra_args=args, port=KAFKA_PORT)
    yield nodes
    failed = getattr(request.node, "rep_call", None) is not None and request.node.rep_call.failed
    for i, b in nodes.items():
        if failed and b.log_path is not None:
            print(f"\n[{request.node.name}] node {i} ({net.ns[i]}): {b.log_tail(60)}")
        b.kill()


def metadata(node):
    return NodeMetadata(node)


def view(node):
    """What one node says about the cluster: controller, brokers, topics and partition leaders."""
    md = metadata(node)
    return {"controller": md.controller_id, "brokers": sorted(md.brokers), "leaders": md.topics}


def create_eventually(node, name, partitions, timeout=30.0):
    """CreateTopics retried until it succeeds (an earlier try that timed out may have made it)."""
    def attempt():
        try:
            create(node.bootstrap, name, partitions, timeout=8)
        except KafkaException as e:
            if e.args[0].name() != "TOPIC_ALREADY_EXISTS":
                raise
        return True
    wait_until(attempt, timeout=timeout, desc=f"CreateTopics {name} on {node.bootstrap}")


NOT_CONTROLLER = 41


def kafka_call(node, api_key, version, body, timeout_s=25.0):
    """One request (non-flexible, header v1) to `node` itself; the response after its header.

    Raw on purpose: a Kafka client sends Metadata to whichever broker it likes best among those
    it learned, so it cannot say what one given node believes."""
    header = struct.pack(">hhi", api_key, version, 7) + _string("partition-test")
    with socket.create_connection((node.host, node.port), timeout=timeout_s) as s:
        msg = header + body
        s.sendall(struct.pack(">i", len(msg)) + msg)
        buf = b""
        while len(buf) < 4 or len(buf) < 4 + struct.unpack(">i", buf[:4])[0]:
            chunk = s.recv(65536)
            if not chunk:
                raise AssertionError(f"connection closed before the answer to API {api_key}")
            buf += chunk
    r = Reader(buf[4:])
    assert r.i32() == 7
    return r


def _string(v):
    b = v.encode()
    return struct.pack(">h", len(b)) + b


class Reader:
    def __init__(self, data):
        self.data, self.pos = data, 0

    def take(self, fmt):
        v = struct.unpack_from(fmt, self.data, self.pos)
        self.pos += struct.calcsize(fmt)
        return v[0]

    def i8(self):
        return self.take(">b")

    def i16(self):
        return self.take(">h")

    def i32(self):
        return self.take(">i")

    def string(self):
        n = self.i16()
        if n < 0:
            return None
        v = self.data[self.pos:self.pos + n].decode()
        self.pos += n
        return v

    def array(self, item):
        return [item() for _ in range(self.i32())]


class NodeMetadata:
    """Metadata v1 (all topics) as one node answers it: controller_id, brokers, topics."""

    def __init__(self, node):
        r = kafka_call(node, 3, 1, struct.pack(">i", -1))
        self.brokers = {}
        for _ in range(r.i32()):
            bid, host, port, _rack = r.i32(), r.string(), r.i32(), r.string()
            self.brokers[bid] = (host, port)
        self.controller_id = r.i32()
        self.topics = {}  # {topic: {partition: leader}} (topics without an error)
        self.isrs = {}  # {topic: {partition: [isr]}}
        for _ in range(r.i32()):
            err, name, _internal = r.i16(), r.string(), r.i8()
            parts, isrs = {}, {}
            for _ in range(r.i32()):
                _perr, idx, leader = r.i16(), r.i32(), r.i32()
                r.array(r.i32)
                isrs[idx] = sorted(r.array(r.i32))
                parts[idx] = leader
            if err == 0:
                self.topics[name] = parts
                self.isrs[name] = isrs


def raw_create_topic(node, name):
    """CreateTopics v2 for one topic (1 partition, RF 1) sent to `node` itself; its error code."""
    body = (struct.pack(">i", 1) + _string(name) + struct.pack(">ihii", 1, 1, 0, 0)
            + struct.pack(">ib", 5000, 0))
    r = kafka_call(node, 19, 2, body)
    r.i32()  # throttle
    assert r.i32() == 1
    assert r.string() == name
    return r.i16()


def session_fenced(node):
    """Broker ids this node fenced as the active controller for missing the session timeout."""
    return [int(f.split("=", 1)[1]) for line in node.log_text().splitlines()
            if "broker fenced: no heartbeat within the session timeout" in line
            for f in line.split() if f.startswith("broker=")]


def controller_lines(node):
    """(controller, term) of every 'active controller changed' log line of the node."""
    out = []
    for line in node.log_text().splitlines():
        if "active controller changed" not in line:
            continue
        fields = dict(f.split("=", 1) for f in line.split() if "=" in f)
        try:
            out.append((int(fields["controller"]), int(fields["term"])))
        except (KeyError, ValueError):
            pass
    return out


def test_a_partitioned_controller_loses_the_quorum_and_all_nodes_agree_after_healing(net, ns_cluster):
    nodes = ns_cluster
    ids = net.ids
    started = time.monotonic()
    for b in nodes.values():
        b.start()

    def all_brokers():
        vs = {i: view(nodes[i]) for i in ids}
        return all(v["brokers"] == ids and v["controller"] in ids for v in vs.values()) and \
            len({v["controller"] for v in vs.values()}) == 1 and vs
    c = wait_until(all_brokers, timeout=40, desc="3 brokers and one controller in every node's metadata")[1]["controller"]
    print(f"cluster up in {time.monotonic() - started:.1f}s, controller {c}")

    t0 = unique_topic("before")
    create_eventually(nodes[ids[0]], t0, 6)

    def led_everywhere():
        ls = [view(nodes[i])["leaders"].get(t0) for i in ids]
        return ls[0] and len(ls[0]) == 6 and all(l in ids for l in ls[0].values()) and \
            all(l == ls[0] for l in ls) and ls[0]
    before = wait_until(led_everywhere, timeout=20, desc=f"{t0} led and agreed on every node")
    c_parts = sorted(p for p, l in before.items() if l == c)
    assert c_parts, f"the controller {c} leads none of {before}"
    c_terms = controller_lines(nodes[c])
    term_before = max(t for _, t in c_terms)
    majority = [i for i in ids if i != c]
    fenced_before = {i: session_fenced(nodes[i]) for i in ids}

    # ---- partition: c loses its quorum link, clients still reach it
    net.cut(c)
    cut_at = time.monotonic()

    def new_controller():
        cs = {metadata(nodes[i]).controller_id for i in majority}
        return len(cs) == 1 and cs <= set(majority) and cs.pop()
    new_ctl = wait_until(new_controller, timeout=20, desc="the majority electing a controller among itself")
    print(f"majority elected controller {new_ctl} {time.monotonic() - cut_at:.1f}s after the cut")

    t1 = unique_topic("during")
    create_eventually(nodes[majority[0]], t1, 3, timeout=20)

    def fenced():
        md = metadata(nodes[majority[1]])
        return c not in md.brokers and t1 in md.topics and \
            all(md.topics[t0][p] == -1 for p in c_parts)
    wait_until(fenced, timeout=20, desc=f"the majority fencing node {c} and taking its partitions offline")

    # The minority side: check-quorum makes the old controller step down; no controller there...
    wait_until(lambda: metadata(nodes[c]).controller_id == -1, timeout=15,
               desc=f"node {c} reporting no controller (controller_id -1)")
    # ...and it cannot change metadata. A client would not even send CreateTopics (no controller
    # in Metadata: it waits for one until its own timeout), so it is sent to the node directly.
    t2 = unique_topic("minority")
    asked = time.monotonic()
    code = raw_create_topic(nodes[c], t2)
    print(f"CreateTopics on the cut-off node: error {code} after {time.monotonic() - asked:.1f}s")
    assert code == NOT_CONTROLLER, f"CreateTopics on the cut-off node answered error code {code}"
    md_c = metadata(nodes[c])
    assert t1 not in md_c.topics, "the cut-off node saw a topic created on the majority side"
    assert md_c.controller_id != c
    for i in majority:
        assert t2 not in metadata(nodes[i]).topics, "a CreateTopics on the cut-off node reached the majority"
    # Pre-vote: the cut-off node never won an election nor raised its term while it was cut off.
    during = controller_lines(nodes[c])[len(c_terms):]
    assert any(ctl == -1 for ctl, _ in during), f"node {c} never stepped down (check-quorum): {during}"
    assert all(ctl != c for ctl, _ in during), f"node {c} became controller again while cut off: {during}"
    assert all(t <= term_before for _, t in during), f"node {c} raised its term while cut off: {during}"
    # Only the cut-off node was fenced: the majority's brokers kept heartbeating to the new
    # controller (a heartbeat in flight to the old controller when the link went down must not
    # keep a majority broker from reaching the new one for longer than its session).
    fenced_by = {i: session_fenced(nodes[i])[len(fenced_before[i]):] for i in ids}
    assert all(f in ([c], []) for f in fenced_by.values()) and fenced_by[new_ctl] == [c], \
        f"brokers fenced for missing heartbeats during the partition, by controller: {fenced_by}"
    for i in majority:
        assert sorted(metadata(nodes[i]).brokers) == majority
    print(f"partition phase took {time.monotonic() - cut_at:.1f}s")

    # ---- heal: everybody agrees again, on the majority's controller
    net.heal(c)
    healed_at = time.monotonic()

    def agreed():
        vs = [view(nodes[i]) for i in ids]
        first = vs[0]
        ok = all(v == first for v in vs) and first["brokers"] == ids and first["controller"] in ids \
            and t1 in first["leaders"] and first["leaders"].get(t0) == before \
            and all(l in ids for l in first["leaders"][t1].values())
        return ok and first
    final = wait_until(agreed, timeout=30, desc="all three nodes agreeing after healing")
    print(f"agreement {time.monotonic() - healed_at:.1f}s after healing: controller {final['controller']}")
    # Pre-vote and check-quorum: the returning node does not depose the majority's controller.
    assert final["controller"] == new_ctl, (final["controller"], new_ctl)
    assert t2 not in final["leaders"]

    # ---- a node cut off from the quorum still stops cleanly at SIGTERM
    victim = next(i for i in ids if i != final["controller"])
    other = next(i for i in ids if i not in (victim, final["controller"]))
    net.cut(victim)
    wait_until(lambda: victim not in metadata(nodes[other]).brokers, timeout=20,
               desc=f"node {victim} fenced after losing its quorum link")
    t_stop = time.monotonic()
    nodes[victim].stop(timeout=30)
    print(f"cut-off node {victim} exited 0 {time.monotonic() - t_stop:.1f}s after SIGTERM; "
          f"whole test {time.monotonic() - started:.1f}s")


NOT_ENOUGH_REPLICAS = 19


def test_an_isolated_leader_refuses_acks_all_and_loses_nothing_after_healing(net, ns_cluster):
    """The leader of a min.insync.replicas=2 partition is cut off from the other brokers (quorum
    and replication) while clients still reach it: it answers NOT_ENOUGH_REPLICAS to acks=all
    once its followers are past replica.lag.time.max.ms, the majority elects a new leader that
    takes writes, and after healing nothing acknowledged is lost and the replicas agree."""
    from confluent_kafka import Producer
    from jepsen import compare_replicas, read_all
    from kafkautil import COMMON
    from test_replication import produce_answers, produce_frames
    nodes = ns_cluster
    ids = net.ids
    for i in ids:
        nodes[i].extra_args += ["--replica-lag-time-max-ms", "2000"]
    for b in nodes.values():
        b.start()
    wait_until(lambda: all(sorted(metadata(nodes[i]).brokers) == ids for i in ids), timeout=40,
               desc="3 brokers in every node's metadata")
    t = unique_topic("isolated")
    boot = ",".join(nodes[i].bootstrap for i in ids)

    def made():
        try:
            create(boot, t, 1, rf=3, config={"min.insync.replicas": "2"}, timeout=8)
        except KafkaException as e:
            if e.args[0].name() != "TOPIC_ALREADY_EXISTS":
                raise
        return True
    wait_until(made, timeout=30, desc=f"CreateTopics {t}")
    wait_until(lambda: metadata(nodes[ids[0]]).isrs.get(t, {}).get(0) == ids, timeout=30,
               desc="a full ISR")
    acked = {}

    def produce(bootstrap, values):
        p = Producer({"bootstrap.servers": bootstrap, **COMMON, "acks": "all", "enable.idempotence": False,
                      "message.timeout.ms": 20000, "metadata.max.age.ms": 1000})
        for v in values:
            p.produce(t, value=v.encode(), partition=0,
                      on_delivery=lambda err, m: err is None and acked.__setitem__(m.value().decode(), m.offset()))
        assert p.flush(30) == 0
    produce(boot, [f"before-{i}" for i in range(50)])
    assert len(acked) == 50
    leader = metadata(nodes[ids[0]]).topics[t][0]
    majority = [i for i in ids if i != leader]

    net.isolate(leader)
    # The isolated leader: acks=all is refused (after the lag time; until then it may time out).
    codes = []

    def refused():
        with socket.create_connection((nodes[leader].host, nodes[leader].port), timeout=30) as s:
            s.sendall(produce_frames(t, 0, [f"isolated-{len(codes)}"], acks=-1))
            codes.append(produce_answers(s, 1, timeout=30)[0][0])
        return codes[-1] == NOT_ENOUGH_REPLICAS
    isolated_at = time.monotonic()
    wait_until(refused, timeout=40, interval=0.2, desc="NOT_ENOUGH_REPLICAS from the isolated leader")
    print(f"isolated leader {leader}: answers {codes}, NOT_ENOUGH_REPLICAS "
          f"{time.monotonic() - isolated_at:.1f}s after the cut")
    assert all(c != 0 for c in codes), f"the isolated leader acknowledged an acks=all write: {codes}"
    # The majority elects a new leader and takes writes.
    wait_until(lambda: metadata(nodes[majority[0]]).topics[t][0] in majority, timeout=30,
               desc="a new leader on the majority side")
    produce(",".join(nodes[i].bootstrap for i in majority), [f"during-{i}" for i in range(50)])
    assert len(acked) == 100

    net.rejoin(leader)
    wait_until(lambda: all(metadata(nodes[i]).isrs.get(t, {}).get(0) == ids for i in ids), timeout=60,
               desc="the healed node back in the ISR")
    final, ends = read_all(boot, t, 1)
    by_offset = dict(final[0])
    lost = [v for v, o in acked.items() if by_offset.get(o) != v]
    assert not lost, f"acknowledged writes lost or moved: {lost[:10]}"
    assert not any(v.startswith("isolated-") for v in by_offset.values())
    dirs = {i: nodes[i].data_dir for i in ids}
    wait_until(lambda: not compare_replicas(dirs, t, 0, ends[0]), timeout=30,
               desc="the replicas identical below the high watermark")
