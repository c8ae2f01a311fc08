"""Replication, checked the way Jepsen checks it: three real brokers on 127.0.0.1 (`--shards 1`),
a steady acks=all load from confluent-kafka, a fault in the middle (kill -9, SIGSTOP, SIGTERM of
each in turn, all killed at once), then the checker of jepsen.py over everything that was
acknowledged and read, and the replicas' logs compared byte for byte below the high watermark.
Waits are conditions with deadlines, never fixed sleeps.
"""

import signal
import time

import pytest
from confluent_kafka import KafkaError, KafkaException, Producer

from jepsen import Workload, check, compare_replicas, read_all
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
    t = unique_topic("kill")
    create(c.bootstrap, t, PARTITIONS, rf=3, config=RF3)
    wait_full_isr(c, t)
    w = Workload(lambda: c.bootstrap, t, PARTITIONS, rate=300, idempotent=idempotent).start()
    w.wait_acked(300)
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


def test_sigstop_of_the_leader_then_sigcont(cluster_factory):
    c = cluster_factory()
    t = unique_topic("stop")
    create(c.bootstrap, t, PARTITIONS, rf=3, config=RF3)
    wait_full_isr(c, t)
    w = Workload(lambda: c.bootstrap, t, PARTITIONS, rate=300).start()
    w.wait_acked(300)
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
    finish(c, w, t)


def test_kill_all_brokers_at_once_under_load(cluster_factory):
    c = cluster_factory()
    t = unique_topic("all")
    create(c.bootstrap, t, PARTITIONS, rf=3, config=RF3)
    wait_full_isr(c, t)
    w = Workload(lambda: c.bootstrap, t, PARTITIONS, rate=300).start()
    w.wait_acked(600)
    for b in c.nodes.values():
        b.kill()
    acked_before = dict(w.acked)
    for b in c.nodes.values():
        b.start()
    c.wait_brokers(c.ids)
    wait_full_isr(c, t)
    w.wait_acked(len(w.acked) + 300)
    final = finish(c, w, t)
    present = {(p, o) for p, recs in final.items() for o, _ in recs}
    lost = [v for v, (p, o, _) in acked_before.items() if (p, o) not in present]
    assert not lost, f"{len(lost)} writes acknowledged before the crash are gone: {lost[:10]}"


def test_rolling_restart_under_load(cluster_factory):
    c = cluster_factory()
    t = unique_topic("roll")
    create(c.bootstrap, t, PARTITIONS, rf=3, config=RF3)
    wait_full_isr(c, t)
    w = Workload(lambda: c.bootstrap, t, PARTITIONS, rate=300).start()
    w.wait_acked(300)
    for i in c.ids:
        c.nodes[i].restart()
        wait_full_isr(c, t)
        w.wait_acked(len(w.acked) + 200)
    final = finish(c, w, t)
    assert not w.failed, f"the producer saw errors: {w.failed[:5]}"
    assert sum(len(v) for v in final.values()) >= len(w.acked)
