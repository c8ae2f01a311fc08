"""Replication, checked the way Jepsen checks it: three real brokers on 127.0.0.1 (`--shards 1`),
a steady acks=all load from confluent-kafka, a fault in the middle (kill -9, SIGSTOP, SIGTERM of
each in turn, all killed at once), then the checker of jepsen.py over everything that was
acknowledged and read, and the replicas' logs compared byte for byte below the high watermark.
Waits are conditions with deadlines, never fixed sleeps.
"""

import signal
import socket
import struct
import time

import pytest
from confluent_kafka import KafkaError, Producer
from kafka.record.default_records import DefaultRecordBatchBuilder

from jepsen import Workload, batches_on_disk, check, compare_replicas, read_all
from kafkautil import COMMON, admin, unique_topic, wait_until
from test_cluster import FAST, cluster_factory, create  # noqa: F401 - the fixture is used by name

PARTITIONS = 3
RF3 = {"min.insync.replicas": "2"}


def leaders(c, topic, on=None):
    md = c.metadata(on or next(i for i, b in c.nodes.items() if b.alive()))
    return {p: m.leader for p, m in md.topics[topic].partitions.items()}


def isr(c, topic, on=None):
    md = c.metadata(on or next(i for i, b in c.nodes.items() if b.alive()))
    return {p: sorted(m.isrs) for p, m in md.topics[topic].partitions.items()}


def wait_full_isr(c, topic, timeout=60.0):
    wait_until(lambda: all(len(v) == len(c.ids) for v in isr(c, topic).values()), timeout=timeout,
               desc=f"every partition of {topic} with a full ISR")


def loaded(c, prefix, acked, idempotent=False):
    """A new RF 3 topic (min.insync.replicas=2) with full ISRs, under a steady acks=all load that
    has `acked` acknowledged writes already."""
    t = unique_topic(prefix)
    create(c.bootstrap, t, PARTITIONS, rf=3, config=RF3)
    wait_full_isr(c, t)
    w = Workload(lambda: c.bootstrap, t, PARTITIONS, rate=300, idempotent=idempotent).start()
    w.wait_acked(acked)
    return t, w


def finish(c, w, topic, idempotent=False):
    """Stops the load, waits for a full ISR, reads everything and checks it; then compares the
    replicas' logs below the high watermark."""
    w.stop()
    wait_full_isr(c, topic)
    final, ends = read_all(c.bootstrap, topic, PARTITIONS)
    anomalies = check(w, final, idempotent=idempotent)
    # Every replica has caught up to the high watermark once the ISR is full and the load
    # stopped; wait for the files to show it, then compare.
    dirs = {i: b.data_dir for i, b in c.nodes.items()}
    for p in range(PARTITIONS):
        def same():
            return not compare_replicas(dirs, topic, p, ends[p])
        try:
            wait_until(same, timeout=20, desc=f"replicas of p{p} identical below {ends[p]}")
        except AssertionError:
            anomalies.extend(compare_replicas(dirs, topic, p, ends[p]))
    assert not anomalies, "\n".join(anomalies[:30])
    assert len(w.acked) > 0
    return final


def test_replicas_hold_the_same_bytes_and_acks_all_needs_the_isr(cluster_factory):
    c = cluster_factory()
    t = unique_topic("rf3")
    create(c.bootstrap, t, PARTITIONS, rf=3, config={"min.insync.replicas": "3"})
    wait_until(lambda: t in c.metadata(1).topics, desc="topic in metadata")
    md = c.metadata(1).topics[t]
    assert all(sorted(m.replicas) == c.ids for m in md.partitions.values())
    w = Workload(lambda: c.bootstrap, t, PARTITIONS, rate=300).start()
    w.wait_acked(600)
    finish(c, w, t)

    # min.insync.replicas=3 with one broker gone: acks=all is refused and nothing appended.
    victim = next(i for i in c.ids if i != c.controller())
    c.nodes[victim].kill()
    wait_until(lambda: all(victim not in v for v in isr(c, t).values()), timeout=30,
               desc="the killed broker out of every ISR")
    p = Producer({"bootstrap.servers": c.bootstrap, **COMMON, "acks": "all", "enable.idempotence": False,
                  "message.timeout.ms": 3000, "retries": 0})
    errors = []
    p.produce(t, value=b"refused", partition=0, on_delivery=lambda err, msg: errors.append(err))
    p.flush(10)
    assert errors and errors[0] is not None and errors[0].code() == KafkaError.NOT_ENOUGH_REPLICAS, errors


@pytest.mark.parametrize("idempotent", [False, True], ids=["plain", "idempotent"])
def test_kill_the_leader_under_load(cluster_factory, idempotent):
    c = cluster_factory()
    t, w = loaded(c, "kill", 300, idempotent=idempotent)
    victim = leaders(c, t)[0]
    led = {p for p, leader in leaders(c, t).items() if leader == victim}
    killed_at = time.monotonic()
    c.nodes[victim].kill()
    # Every partition it led gets acknowledged writes again, within the bound.
    wait_until(lambda: set(w.acks_after(killed_at, led)) == led, timeout=20,
               desc=f"acknowledged writes on partitions {led} after the kill")
    failover = max(w.acks_after(killed_at, led).values()) - killed_at
    assert failover < 10, f"failover took {failover:.1f}s"
    n = len(w.acked)
    w.wait_acked(n + 300)
    c.nodes[victim].start()
    wait_full_isr(c, t)
    w.wait_acked(len(w.acked) + 300)
    finish(c, w, t, idempotent=idempotent)


@pytest.mark.parametrize("idempotent", [False, True], ids=["plain", "idempotent"])
def test_sigstop_of_the_leader_then_sigcont(cluster_factory, idempotent):
    c = cluster_factory()
    t, w = loaded(c, "stop", 300, idempotent=idempotent)
    victim = leaders(c, t)[0]
    others = [i for i in c.ids if i != victim]
    c.nodes[victim].proc.send_signal(signal.SIGSTOP)
    try:
        wait_until(lambda: leaders(c, t, on=others[0])[0] != victim, timeout=30,
                   desc="a new leader for partition 0")
        w.wait_acked(len(w.acked) + 300)
    finally:
        c.nodes[victim].proc.send_signal(signal.SIGCONT)
    wait_full_isr(c, t)
    w.wait_acked(len(w.acked) + 300)
    finish(c, w, t, idempotent=idempotent)


@pytest.mark.parametrize("idempotent", [False, True], ids=["plain", "idempotent"])
def test_kill_all_brokers_at_once_under_load(cluster_factory, idempotent):
    c = cluster_factory()
    t, w = loaded(c, "all", 600, idempotent=idempotent)
    for b in c.nodes.values():
        b.kill()
    acked_before = dict(w.acked)
    for b in c.nodes.values():
        b.start()
    c.wait_brokers(c.ids)
    wait_full_isr(c, t)
    w.wait_acked(len(w.acked) + 300)
    final = finish(c, w, t, idempotent=idempotent)
    present = {(p, o) for p, recs in final.items() for o, _ in recs}
    lost = [v for v, (p, o, _) in acked_before.items() if (p, o) not in present]
    assert not lost, f"{len(lost)} writes acknowledged before the crash are gone: {lost[:10]}"


@pytest.mark.parametrize("idempotent", [False, True], ids=["plain", "idempotent"])
def test_rolling_restart_under_load(cluster_factory, idempotent):
    c = cluster_factory()
    t, w = loaded(c, "roll", 300, idempotent=idempotent)
    for i in c.ids:
        c.nodes[i].restart()
        wait_full_isr(c, t)
        w.wait_acked(len(w.acked) + 200)
    final = finish(c, w, t, idempotent=idempotent)
    assert not w.failed, f"the producer saw errors: {w.failed[:5]}"
    assert sum(len(v) for v in final.values()) >= len(w.acked)


def _string(s):
    b = s.encode()
    return struct.pack(">h", len(b)) + b


def produce_frames(topic, partition, values, acks):
    """Raw ProduceRequest v3 frames, one record per request (correlation ids 0..n-1)."""
    out = b""
    for corr, v in enumerate(values):
        b = DefaultRecordBatchBuilder(magic=2, compression_type=0, is_transactional=False, producer_id=-1,
                                      producer_epoch=-1, base_sequence=-1, batch_size=1 << 20)
        b.append(0, None, None, v.encode(), [])
        batch = bytes(b.build())
        body = (struct.pack(">hhi", -1, acks, 10000) + struct.pack(">i", 1) + _string(topic)
                + struct.pack(">ii", 1, partition) + struct.pack(">i", len(batch)) + batch)
        msg = struct.pack(">hhi", 0, 3, corr) + _string("zombie") + body
        out += struct.pack(">i", len(msg)) + msg
    return out


def produce_answers(sock, n, timeout=30.0):
    """(error code, base offset) of the n ProduceResponse v3 frames on `sock`."""
    sock.settimeout(timeout)
    buf = b""
    out = []
    while len(out) < n:
        while len(buf) < 4 or len(buf) < 4 + struct.unpack(">i", buf[:4])[0]:
            chunk = sock.recv(65536)
            assert chunk, f"connection closed after {len(out)} answers"
            buf += chunk
        size = struct.unpack(">i", buf[:4])[0]
        frame, buf = buf[4:4 + size], buf[4 + size:]
        # correlation id, [topic: name, [partition, error, base offset, log append time]], throttle
        pos = 4 + 4
        name_len = struct.unpack(">h", frame[pos:pos + 2])[0]
        pos += 2 + name_len + 4
        _, err, base = struct.unpack(">ihq", frame[pos:pos + 14])
        out.append((err, base))
    return out


def test_a_zombie_leader_acknowledges_nothing_and_truncates(cluster_factory):
    """SIGSTOP of a leader past the session timeout: writes queued in its socket meanwhile (acks=all
    and acks=1) are handled after SIGCONT, when another broker leads: no acks=all write of the
    zombie is acknowledged, whatever it appended is truncated, and the replicas end identical."""
    c = cluster_factory()
    t, w = loaded(c, "zombie", 300)
    victim = leaders(c, t)[0]
    others = [i for i in c.ids if i != victim]
    zombie_all = [f"zombie-all-{i}" for i in range(5)]
    zombie_one = [f"zombie-one-{i}" for i in range(5)]
    s_all = socket.create_connection(("127.0.0.1", c.nodes[victim].port))
    s_one = socket.create_connection(("127.0.0.1", c.nodes[victim].port))
    c.nodes[victim].proc.send_signal(signal.SIGSTOP)
    try:
        # Queued in the stopped broker's socket buffers.
        s_all.sendall(produce_frames(t, 0, zombie_all, acks=-1))
        s_one.sendall(produce_frames(t, 0, zombie_one, acks=1))
        wait_until(lambda: leaders(c, t, on=others[0])[0] not in (victim, -1), timeout=30,
                   desc="a new leader for partition 0")
        w.wait_acked(len(w.acked) + 300)
    finally:
        c.nodes[victim].proc.send_signal(signal.SIGCONT)
    answers_all = produce_answers(s_all, len(zombie_all))
    answers_one = produce_answers(s_one, len(zombie_one))
    assert all(err != 0 for err, _ in answers_all), f"the zombie acknowledged acks=all writes: {answers_all}"
    wait_full_isr(c, t)
    w.wait_acked(len(w.acked) + 300)
    final = finish(c, w, t)
    values = {v for recs in final.values() for _, v in recs}
    assert not values & set(zombie_all), "a write the zombie appended survived"
    assert not values & set(zombie_one), "a write the zombie appended survived"
    appended = any(err == 0 for err, _ in answers_one)
    if appended:
        assert "truncated" in c.nodes[victim].log_text(), "the zombie's acks=1 writes were not truncated"


def test_failover_within_five_seconds_with_the_default_settings(cluster_factory):
    """RF 3, min.insync.replicas=2, default broker settings, a librdkafka producer with
    metadata.max.age.ms=1000: after kill -9 of a broker that leads partitions (not the active
    controller, whose loss adds a quorum election), every partition it led takes acknowledged
    acks=all writes again within 5 s."""
    c = cluster_factory(extra_args=[])
    t = unique_topic("default")
    create(c.bootstrap, t, 6, rf=3, config=RF3)
    wait_until(lambda: all(len(v) == 3 for v in isr(c, t).values()), timeout=60, desc="full ISRs")
    w = Workload(lambda: c.bootstrap, t, 6, rate=300).start()
    w.wait_acked(600)
    ctl = c.controller()
    now = leaders(c, t)
    victim = next(i for i in c.ids if i != ctl and i in now.values())
    led = {p for p, leader in now.items() if leader == victim}
    killed_at = time.monotonic()
    c.nodes[victim].kill()
    wait_until(lambda: set(w.acks_after(killed_at, led)) == led, timeout=30,
               desc=f"acknowledged writes on partitions {led} after the kill")
    failover = max(w.acks_after(killed_at, led).values()) - killed_at
    print(f"failover of partitions {sorted(led)}: {failover:.2f}s")
    w.stop()
    final, _ = read_all(c.bootstrap, t, 6)
    assert not check(w, final)
    assert failover < 5.0, f"failover took {failover:.2f}s"


def test_group_offsets_survive_the_loss_of_the_coordinators_broker(cluster_factory):
    """A consumer group commits; its coordinator's broker is killed with -9; the new coordinator
    (the new leader of the group's `__consumer_offsets` partition) has the committed offsets,
    and the group rebalances there and goes on from them, re-reading nothing it committed."""
    from confluent_kafka import ConsumerGroupTopicPartitions, TopicPartition
    from kafkautil import consumer, flush_all, producer

    c = cluster_factory()
    t = unique_topic("grpfail")
    create(c.bootstrap, t, PARTITIONS, rf=3, config=RF3)
    wait_full_isr(c, t)
    total = 300
    p = producer(c.bootstrap, **{"acks": "all"})
    for n in range(total):
        p.produce(t, value=f"m{n}".encode(), partition=n % PARTITIONS)
    flush_all(p)
    per_partition = total // PARTITIONS

    group = unique_topic("group")
    conf = {"group.id": group, "enable.auto.commit": False, "enable.auto.offset.store": True,
            "session.timeout.ms": 10000, "heartbeat.interval.ms": 500}
    a = consumer(c.bootstrap, **conf)
    a.subscribe([t])
    read = 0
    deadline = time.monotonic() + 60
    while read < 120 and time.monotonic() < deadline:
        m = a.poll(0.5)
        if m is not None and m.error() is None:
            read += 1
    assert read == 120
    # Answered only once the commit is on every in-sync replica of the group's partition.
    a.commit(asynchronous=False)
    # Partitions it read nothing of have no committed offset (and are read from the start).
    committed = {tp.partition: tp.offset for tp in a.committed([TopicPartition(t, i) for i in range(PARTITIONS)],
                                                                timeout=20) if tp.offset >= 0}
    assert sum(committed.values()) == 120, committed

    def describe(on):
        a_admin = admin(on)  # kept alive until its future resolves
        d = a_admin.describe_consumer_groups([group], request_timeout=10)[group].result(timeout=15)
        return d.coordinator.id

    victim = describe(c.bootstrap)
    assert victim in c.ids
    c.nodes[victim].kill()
    survivors = ",".join(b.bootstrap for i, b in c.nodes.items() if i != victim)

    def offsets_on_the_new_coordinator():
        try:
            if describe(survivors) == victim:
                return None
            req = [ConsumerGroupTopicPartitions(group)]
            a_admin = admin(survivors)
            r = a_admin.list_consumer_group_offsets(req, request_timeout=10)[group].result(timeout=15)
        except Exception:
            return None
        got = {tp.partition: tp.offset for tp in r.topic_partitions if tp.topic == t and tp.error is None}
        return got if got == committed else None
    wait_until(offsets_on_the_new_coordinator, timeout=60, interval=0.5,
               desc="the committed offsets on the new coordinator")

    # The group goes on through the new coordinator: a second member joins (a rebalance
    # there), and each batch read is committed.
    b = consumer(survivors, **conf)
    b.subscribe([t])
    after = {i: [] for i in range(PARTITIONS)}
    b_assigned = False
    uncommitted = set()
    deadline = time.monotonic() + 90

    start = {i: committed.get(i, 0) for i in range(PARTITIONS)}

    def done():
        return all(set(range(start[i], per_partition)) <= set(after[i]) for i in range(PARTITIONS))
    while not (done() and b_assigned) and time.monotonic() < deadline:
        for cons in (a, b):
            msgs = [m for m in cons.consume(num_messages=50, timeout=0.1) if m.error() is None]
            for m in msgs:
                after[m.partition()].append(m.offset())
            if msgs:
                try:
                    cons.commit(asynchronous=False)
                except Exception:
                    # A commit refused by a rebalance: those records may be read again.
                    uncommitted.update((m.partition(), m.offset()) for m in msgs)
        b_assigned = b_assigned or bool(b.assignment())
    assert done(), {i: (start[i], sorted(set(after[i]))[:5], len(after[i])) for i in range(PARTITIONS)}
    assert b_assigned, "the new member got no partition: no rebalance through the new coordinator"
    for i in range(PARTITIONS):
        below = [o for o in after[i] if o < start[i]]
        assert not below, f"p{i}: committed records read again: {below[:10]} (committed {start[i]})"
        # Read twice only if its commit was refused: the rebalance started from the offsets
        # the new coordinator had acknowledged.
        again = sorted({o for o in after[i] if after[i].count(o) > 1 and (i, o) not in uncommitted})
        assert not again, f"p{i}: records read again after their commit was acknowledged: {again[:10]}"
    a.close()
    b.close()


def _find_coordinator(port, key, key_type):
    """FindCoordinator v1 by hand: (error code, node id)."""
    def s16(s):
        b = s.encode()
        return struct.pack(">h", len(b)) + b
    body = struct.pack(">hhi", 10, 1, 7) + s16("fc-test") + s16(key) + struct.pack(">b", key_type)
    with socket.create_connection(("127.0.0.1", port), timeout=30) as s:
        s.sendall(struct.pack(">i", len(body)) + body)
        size = struct.unpack(">i", s.recv(4, socket.MSG_WAITALL))[0]
        resp = s.recv(size, socket.MSG_WAITALL)
    # correlation id, throttle time, error code, error message (nullable), node id
    error = struct.unpack(">h", resp[8:10])[0]
    n = struct.unpack(">h", resp[10:12])[0]
    node = struct.unpack(">i", resp[12 + max(n, 0):16 + max(n, 0)])[0]
    return error, node


def test_coordinator_logs_need_their_replication_factor_of_live_brokers(cluster_factory):
    """`__consumer_offsets` and `__transaction_state` are created on first use with 3 replicas
    (`__transaction_state` with min.insync.replicas 2); while only two brokers are live,
    FindCoordinator answers COORDINATOR_NOT_AVAILABLE for both, as Kafka does."""
    from confluent_kafka.admin import ConfigResource
    c = cluster_factory()
    # Not the active controller: after a controller change the new one may count the dead
    # broker as live until its session runs out there.
    victim = next(i for i in c.ids if i != c.controller())
    asked = next(i for i in c.ids if i != victim)
    c.nodes[victim].kill()
    c.wait_brokers([i for i in c.ids if i != victim])
    port = c.nodes[asked].port
    assert _find_coordinator(port, "g-early", 0)[0] == 15  # COORDINATOR_NOT_AVAILABLE
    assert _find_coordinator(port, "tx-early", 1)[0] == 15
    assert "__consumer_offsets" not in c.metadata(asked).topics
    c.nodes[victim].start()
    c.wait_brokers(c.ids)
    for key, key_type, log in [("g-late", 0, "__consumer_offsets"), ("tx-late", 1, "__transaction_state")]:
        error, node = wait_until(lambda: (lambda r: r if r[0] == 0 else None)(_find_coordinator(port, key, key_type)),
                                 timeout=30, interval=0.3, desc=f"a coordinator for {key}")
        md = wait_until(lambda: c.metadata(asked).topics.get(log), timeout=20, desc=f"{log} in metadata")
        assert len(md.partitions) == 50
        assert all(len(p.replicas) == 3 for p in md.partitions.values()), log
        assert node in c.ids
    a = admin(c.bootstrap)
    res = ConfigResource(ConfigResource.Type.TOPIC, "__transaction_state")
    configs = a.describe_configs([res])[res].result(timeout=20)
    assert configs["min.insync.replicas"].value == "2"


def test_a_replica_offline_after_a_storage_error_gives_up_leadership(spate_bin, tmp_path, monkeypatch):
    """The leader's disk fails an fdatasync (the fault seam, on node 1 only): its replica goes
    offline, it tells the controller, which takes it out of the ISR and moves the leadership to
    an in-sync replica at once; acks=all producers carry on there and lose nothing."""
    from confluent_kafka.admin import NewTopic

    from kafkautil import admin
    from test_cluster import Cluster
    t = unique_topic("offline")
    c = Cluster(spate_bin, tmp_path / "c", extra_args=FAST)
    try:
        monkeypatch.setenv("SPATE_TEST_FAULTS", f"sync:EIO:{t}-0/:1")
        c.nodes[1].start()
        monkeypatch.delenv("SPATE_TEST_FAULTS")
        for i in (2, 3):
            c.nodes[i].start()
        c.wait_brokers(c.ids)
        a = admin(c.bootstrap)
        a.create_topics([NewTopic(t, num_partitions=1, replica_assignment=[[1, 2, 3]],
                                  config={"min.insync.replicas": "2"})])[t].result(timeout=20)
        wait_until(lambda: isr(c, t).get(0) == [1, 2, 3], timeout=30, desc="a full ISR led by node 1")
        assert leaders(c, t)[0] == 1
        w = Workload(lambda: c.bootstrap, t, 1, rate=200).start()
        w.wait_acked(300, timeout=60)
        md = c.metadata(2).topics[t].partitions[0]
        assert md.leader in (2, 3) and 1 not in md.isrs, (md.leader, md.isrs)
        assert "replica offline after a storage error" in c.nodes[1].log_text()
        w.stop()
        final, _ = read_all(c.bootstrap, t, 1)
        anomalies = check(w, final)
        assert not anomalies, "\n".join(anomalies[:20])
    finally:
        c.kill_all()


def _produce_acked(bootstrap, topic, values):
    """acks=all writes to partition 0, one by one in flight order; returns {value: offset} of the
    acknowledged ones (all of them, or the test fails)."""
    p = Producer({"bootstrap.servers": bootstrap, **COMMON, "acks": "all", "enable.idempotence": False,
                  "linger.ms": 0, "message.timeout.ms": 30000})
    acked, failed = {}, []

    def report(err, msg):
        if err is None:
            acked[msg.value().decode()] = msg.offset()
        else:
            failed.append(err)
    for v in values:
        p.produce(topic, value=v.encode(), partition=0, on_delivery=report)
        p.poll(0)
    assert p.flush(60) == 0, "writes still in flight"
    assert not failed and len(acked) == len(values), failed[:5]
    return acked


def test_unclean_shutdown_of_the_last_in_sync_replica_under_a_background_flush_policy(cluster_factory):
    """KIP-966's unclean-shutdown rule. With flush.ms set, a follower's fetch offset is its log
    end, not its synced end, so a power loss can take acknowledged records from a replica. Here
    the last ISR member X loses the tail of its log (its segment file cut, as a power loss
    leaves it) while another replica Y still has everything: X must not lead again with its
    shorter log (every replica would truncate to it); the replicas' logs are compared first
    and Y, with the longest, leads. Without the rule X is elected at its unfence and the
    acknowledged records it lost are gone everywhere."""
    # Slow heartbeats: the fresh controller fences a dead voter only after two intervals, so Y
    # registers again (leaving the ISR) well before X is fenced, and X stays the last member.
    args = [a for a in FAST]
    args[args.index("--broker-heartbeat-interval-ms") + 1] = "1500"
    args[args.index("--broker-session-timeout-ms") + 1] = "8000"
    c = cluster_factory(extra_args=[*args, "--unclean-recovery-timeout-ms", "120000"])
    t = unique_topic("kip966")
    create(c.bootstrap, t, 1, rf=3, config={"min.insync.replicas": "2", "flush.ms": "3600000"})
    wait_until(lambda: t in c.metadata(1).topics and len(isr(c, t, on=1).get(0, [])) == 3, timeout=60,
               desc="a full ISR")
    acked = _produce_acked(c.bootstrap, t, [f"a{i}" for i in range(200)])

    # B leaves: the ISR is {X, Y}, which acknowledge 300 more writes that B does not have.
    b = next(i for i in c.ids if i != c.controller())
    x, y = [i for i in c.ids if i != b]
    c.nodes[b].kill()
    wait_until(lambda: isr(c, t, on=x).get(0) == sorted([x, y]), timeout=30, desc=f"ISR {{{x}, {y}}}")
    acked.update(_produce_acked(c.bootstrap, t, [f"b{i}" for i in range(300)]))
    end = max(acked.values()) + 1

    # X and Y die together; X loses the last 40% of its segment file (a power loss).
    c.nodes[x].kill()
    c.nodes[y].kill()
    seg = sorted((c.nodes[x].data_dir / f"{t}-0").glob("*.log"))[-1]
    size = seg.stat().st_size
    with open(seg, "r+b") as f:
        f.truncate(size * 6 // 10)
    x_batches = [bt for bt in batches_on_disk(c.nodes[x].data_dir, t, 0)]
    x_end = x_batches[-1][1] + 1 if x_batches else 0
    assert x_end < end, (x_end, end)

    # Y and B come back first: Y's new registration takes it out of the ISR, and X (down,
    # then fenced) stays its last member.
    c.nodes[y].start()
    c.nodes[b].start()
    wait_until(lambda: isr(c, t, on=y).get(0) == [x] and leaders(c, t, on=y).get(0) == -1, timeout=30,
               desc=f"partition 0 offline with ISR {{{x}}}")

    # X restarts after its unclean shutdown: the replicas' logs are compared and Y leads.
    c.nodes[x].start()
    wait_until(lambda: leaders(c, t, on=y).get(0, -1) >= 0, timeout=60, desc="a leader again")
    assert leaders(c, t, on=y)[0] == y, f"expected {y} (the longest log) to lead, not {leaders(c, t, on=y)[0]}"
    assert "unclean-shutdown recovery" in "".join(c.nodes[n].log_text() for n in c.ids)

    final, _ = read_all(c.bootstrap, t, 1)
    present = {v: o for o, v in final[0]}
    lost = [v for v, o in acked.items() if present.get(v) != o]
    assert not lost, f"{len(lost)} acknowledged writes lost or moved, e.g. {lost[:5]}"
    wait_until(lambda: len(isr(c, t, on=y).get(0, [])) == 3, timeout=60, desc="X and B back in the ISR")
    dirs = {i: nb.data_dir for i, nb in c.nodes.items()}
    wait_until(lambda: not compare_replicas(dirs, t, 0, end), timeout=30, desc="identical replicas")


def test_a_follower_behind_the_leaders_log_start_restarts_its_log_there(cluster_factory):
    """The leader deletes what a follower lacks (DeleteRecords here; retention, or a coordinator
    log's rewrite, do the same) while that follower is down: its next Fetch is out of range.
    The answer names the leader's log start, the follower restarts its log there and rejoins
    the ISR. (Before, the error carried no log start and the follower asked again for ever;
    found by bench/txn_bench.py, where `__transaction_state` rewrites its log under load.)"""
    from confluent_kafka import TopicPartition
    c = cluster_factory()
    t = unique_topic("logstart")
    create(c.bootstrap, t, 1, rf=3, config={"min.insync.replicas": "1"})
    wait_until(lambda: len(isr(c, t).get(0, [])) == 3, timeout=60, desc="a full ISR")
    leader = leaders(c, t)[0]
    follower = next(i for i in c.ids if i != leader and i != c.controller())
    p = Producer({"bootstrap.servers": c.bootstrap, **COMMON, "acks": "all"})
    for i in range(50):
        p.produce(t, value=f"a{i}".encode(), partition=0)
    assert p.flush(30) == 0
    c.nodes[follower].kill()
    wait_until(lambda: follower not in isr(c, t).get(0, [follower]), timeout=30, desc="the follower out of the ISR")
    for i in range(100):
        p.produce(t, value=f"b{i}".encode(), partition=0)
    assert p.flush(30) == 0
    a = admin(c.bootstrap)
    fs = a.delete_records([TopicPartition(t, 0, 120)], request_timeout=20)
    assert list(fs.values())[0].result(timeout=20).low_watermark == 120
    c.nodes[follower].start()
    wait_until(lambda: len(isr(c, t).get(0, [])) == 3, timeout=60,
               desc="the follower back in the ISR after restarting its log at the leader's start")
    assert "follower behind the leader's log start: log restarted there" in c.nodes[follower].log_text()
