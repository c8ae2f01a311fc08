"""Partition reassignment (KIP-455), replication throttles and leader elections on request
(KIP-460), on three real brokers (`--shards 1`), driven through `spate topic` (which speaks
AlterPartitionReassignments, ListPartitionReassignments and ElectLeaders). Waits are conditions
with deadlines, never fixed sleeps.
"""

import json
import subprocess
import time
import urllib.request

from confluent_kafka.admin import (AlterConfigOpType, ConfigEntry, ConfigResource, ConfigSource, NewTopic,
                                  ResourceType)

from conftest import free_port
from jepsen import Workload, check, compare_replicas, read_all
from kafkautil import admin, producer, unique_topic, wait_until
from test_cluster import FAST, Cluster, cluster_factory, describe  # noqa: F401 - the fixture is used by name


def spate(c, node, *args, check_rc=True):
    """`spate ARGS --json` through `node`: (exit code, parsed stdout or None, stderr)."""
    out = subprocess.run([str(c.nodes[node].binary), *args, "--json", "--bootstrap-server", c.nodes[node].bootstrap],
                         capture_output=True, timeout=60)
    if check_rc:
        assert out.returncode == 0, out.stderr.decode()
    body = json.loads(out.stdout) if out.returncode == 0 and out.stdout.strip() else None
    return out.returncode, body, out.stderr.decode()


def reassignments(c, node, topic=None):
    _, body, _ = spate(c, node, "topic", "reassignments", *([topic] if topic else []))
    return body


def create_on(c, t, assignment, config=None):
    a = admin(c.bootstrap)
    a.create_topics([NewTopic(t, num_partitions=len(assignment), replica_assignment=assignment, config=config or {})],
                    request_timeout=15)[t].result(timeout=20)
    wait_until(lambda: all(t in c.metadata(i).topics for i in c.ids), timeout=20, desc="topic everywhere")


def replicas_everywhere(c, t, p, want):
    """Metadata of every node lists `want` as the replicas (and ISR, as a set) of t/p."""
    for i in c.ids:
        m = c.metadata(i).topics[t].partitions[p]
        if m.replicas != want or sorted(m.isrs) != sorted(want):
            return False
    return True


def test_move_a_partition_under_load(cluster_factory):
    c = cluster_factory()
    a, b, new = c.ids
    t = unique_topic("move")
    create_on(c, t, [[a, b]])
    w = Workload(lambda: c.bootstrap, t, 1, rate=300).start()
    w.wait_acked(300)
    spate(c, b, "topic", "reassign", t, "--partition", "0", "--replicas", f"{b},{new}")
    # While it moves, the metadata lists every replica, old and new.
    m = c.metadata(b).topics[t].partitions[0]
    assert set(m.replicas) >= {b, new}
    wait_until(lambda: replicas_everywhere(c, t, 0, [b, new]), timeout=60, desc="reassignment completed")
    assert reassignments(c, a) == []
    # a led and left: b leads now, and writes go on there.
    acked = len(w.acked)
    w.wait_acked(acked + 300)
    w.stop()
    final, ends = read_all(c.bootstrap, t, 1)
    anomalies = check(w, final)
    dirs = {i: c.nodes[i].data_dir for i in (b, new)}
    try:
        wait_until(lambda: not compare_replicas(dirs, t, 0, ends[0]), timeout=20,
                   desc=f"replicas identical below {ends[0]}")
    except AssertionError:
        anomalies.extend(compare_replicas(dirs, t, 0, ends[0]))
    assert not anomalies, "\n".join(anomalies[:30])
    wait_until(lambda: not (c.nodes[a].data_dir / f"{t}-0").exists(), timeout=20,
               desc="the old replica's directory deleted")


def test_cancel_restores_the_original_replicas_and_errors(cluster_factory):
    c = cluster_factory()
    a, b, down = c.ids
    t = unique_topic("cancel")
    create_on(c, t, [[a, b]])
    # The new replica's broker is down: the move cannot complete.
    c.nodes[down].kill()
    c.wait_brokers([a, b])
    spate(c, a, "topic", "reassign", t, "--partition", "0", "--replicas", f"{b},{down}")
    listed = wait_until(lambda: reassignments(c, b, t), timeout=20, desc="the reassignment listed")
    assert listed == [{"topic": t, "partition": 0, "replicas": [b, down, a], "adding": [down], "removing": [a]}]
    assert c.metadata(a).topics[t].partitions[0].replicas == [b, down, a]
    spate(c, b, "topic", "reassign", t, "--partition", "0", "--cancel")
    wait_until(lambda: all(sorted(c.metadata(i).topics[t].partitions[0].replicas) == [a, b] for i in (a, b)),
               timeout=20, desc="original replicas back")
    assert reassignments(c, a) == []
    assert sorted(c.metadata(a).topics[t].partitions[0].isrs) == [a, b]

    rc, _, err = spate(c, a, "topic", "reassign", t, "--partition", "0", "--cancel", check_rc=False)
    assert rc != 0 and "NO_REASSIGNMENT_IN_PROGRESS" in err, err
    for bad in (f"{a},{a}", f"{a},42"):
        rc, _, err = spate(c, a, "topic", "reassign", t, "--partition", "0", "--replicas", bad, check_rc=False)
        assert rc != 0 and "INVALID_REPLICA_ASSIGNMENT" in err, err
    rc, _, err = spate(c, a, "topic", "reassign", t, "--partition", "7", "--replicas", f"{a}", check_rc=False)
    assert rc != 0 and "UNKNOWN_TOPIC_OR_PARTITION" in err, err


def test_elect_preferred_leaders_on_request(cluster_factory):
    # No automatic preferred-leader pass: only ElectLeaders gives the leadership back.
    c = cluster_factory(extra_args=FAST + ["--auto-leader-rebalance-enable", "false"])
    ctl = c.controller()
    preferred, other = [i for i in c.ids if i != ctl]
    t = unique_topic("elect")
    create_on(c, t, [[preferred, other, ctl]])
    rc, body, _ = spate(c, ctl, "topic", "elect-leaders", f"{t}:0")
    assert body == [{"topic": t, "partition": 0, "error_code": 84, "error_message": body[0]["error_message"]}]
    c.nodes[preferred].kill()
    wait_until(lambda: describe(c, ctl, t)[0]["leader"] == other, timeout=20, desc="the next replica leads")
    _, body, _ = spate(c, ctl, "topic", "elect-leaders", t)
    assert body[0]["error_code"] == 80, body  # PREFERRED_LEADER_NOT_AVAILABLE
    # A live leader needs no unclean election.
    _, body, _ = spate(c, ctl, "topic", "elect-leaders", "--unclean", t)
    assert body[0]["error_code"] == 84, body
    c.nodes[preferred].start()
    c.wait_brokers(c.ids)
    wait_until(lambda: preferred in describe(c, ctl, t)[0]["isr"], timeout=30, desc="the preferred replica in sync")
    before = describe(c, ctl, t)[0]
    assert before["leader"] == other
    _, body, _ = spate(c, other, "topic", "elect-leaders", t)
    assert body[0]["error_code"] == 0, body
    wait_until(lambda: describe(c, ctl, t)[0]["leader"] == preferred, timeout=20, desc="the preferred replica leads")
    assert describe(c, ctl, t)[0]["leader_epoch"] == before["leader_epoch"] + 1
    _, body, _ = spate(c, ctl, "topic", "elect-leaders", f"{t}:5")
    assert body[0]["error_code"] == 3, body  # UNKNOWN_TOPIC_OR_PARTITION


def scrape_throttled(port):
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as r:
        text = r.read().decode()
    return sum(int(line.rsplit(" ", 1)[1]) for line in text.splitlines()
               if line.startswith("spate_replication_throttled_bytes_total{"))


def test_a_throttle_slows_the_moved_replica_only(spate_bin, tmp_path):
    c = Cluster(spate_bin, tmp_path / "c", extra_args=FAST)
    mports = {i: free_port() for i in c.ids}
    for i, b in c.nodes.items():
        b.extra_args = [*b.extra_args, "--metrics-listen", f"127.0.0.1:{mports[i]}"]
    try:
        c.start()
        a, b, new = c.ids
        plain, slow = unique_topic("plain"), unique_topic("slow")
        for t in (plain, slow):
            create_on(c, t, [[a, b]])
        # The same 2 MiB in both.
        p = producer(c.bootstrap)
        value = b"x" * 1024
        for i in range(2048):
            for t in (plain, slow):
                p.produce(t, value=value, key=str(i).encode(), partition=0)
            if i % 256 == 0:
                p.flush(30)
        assert p.flush(30) == 0

        def move(t):
            start = time.monotonic()
            spate(c, b, "topic", "reassign", t, "--partition", "0", "--replicas", f"{b},{new}")
            wait_until(lambda: replicas_everywhere(c, t, 0, [b, new]), timeout=120, interval=0.1,
                       desc=f"reassignment of {t} completed")
            return time.monotonic() - start

        unthrottled = move(plain)
        # As kafka-reassign-partitions --throttle sets it: the leader side on the current
        # replicas, the follower side on the new one, 256 KiB/s on each broker.
        rate = 256 * 1024
        adm = admin(c.bootstrap)
        topic_throttle = ConfigResource(ResourceType.TOPIC, slow, incremental_configs=[
            ConfigEntry("leader.replication.throttled.replicas", f"0:{a},0:{b}",
                        incremental_operation=AlterConfigOpType.SET),
            ConfigEntry("follower.replication.throttled.replicas", f"0:{new}",
                        incremental_operation=AlterConfigOpType.SET)])
        adm.incremental_alter_configs([topic_throttle], request_timeout=20)[topic_throttle].result(timeout=20)
        # librdkafka sends one BROKER resource per call.
        for i in c.ids:
            rates = ConfigResource(ResourceType.BROKER, str(i), incremental_configs=[
                ConfigEntry("leader.replication.throttled.rate", str(rate),
                            incremental_operation=AlterConfigOpType.SET),
                ConfigEntry("follower.replication.throttled.rate", str(rate),
                            incremental_operation=AlterConfigOpType.SET)])
            adm.incremental_alter_configs([rates], request_timeout=20)[rates].result(timeout=20)
        # Every broker picked the rates up.
        wait_until(lambda: all(f"follower={'Some'}({rate})" in c.nodes[i].log_text() for i in c.ids),
                   timeout=20, desc="throttle rates applied on every broker")
        res = ConfigResource(ResourceType.BROKER, str(new))
        on_new = admin(c.nodes[new].bootstrap)
        described = on_new.describe_configs([res], request_timeout=20)[res].result(timeout=20)
        got = described["follower.replication.throttled.rate"]
        assert (got.value, got.source) == (str(rate), ConfigSource.DYNAMIC_BROKER_CONFIG.value)
        before = {i: scrape_throttled(mports[i]) for i in (a, new)}
        throttled = move(slow)
        print(f"move of 2 MiB: {unthrottled:.2f} s unthrottled, {throttled:.2f} s at {rate} B/s")
        # 2 MiB at 256 KiB/s is about 8 s; unthrottled it takes a fraction of that.
        assert throttled > 2 * unthrottled and throttled > 4.0, (unthrottled, throttled)
        # Counted by the follower that fetched and by the leader (a) that served.
        assert scrape_throttled(mports[new]) > before[new]
        assert scrape_throttled(mports[a]) > before[a]
        # The moved replica holds the same bytes.
        dirs = {i: c.nodes[i].data_dir for i in (b, new)}
        wait_until(lambda: not compare_replicas(dirs, slow, 0, 2048), timeout=20, desc="replicas identical")
    finally:
        c.kill_all()


def test_elect_unclean_leaders_on_request(cluster_factory):
    # Five voters, so two brokers can be down and the quorum still decides.
    c = cluster_factory(n=5)
    ctl = c.controller()
    x, y = [i for i in c.ids if i != ctl][:2]
    t = unique_topic("unclean")
    create_on(c, t, [[x, y]])
    wait_until(lambda: describe(c, ctl, t)[0]["isr"] == [x, y], timeout=20, desc="both in sync")
    # y leaves the ISR, then its leader x goes: the partition is offline, its ISR [x].
    c.nodes[y].kill()
    wait_until(lambda: describe(c, ctl, t)[0]["isr"] == [x], timeout=20, desc="y out of the ISR")
    c.nodes[x].kill()
    wait_until(lambda: describe(c, ctl, t)[0]["leader"] == -1, timeout=20, desc="offline")
    c.nodes[y].start()
    c.wait_brokers([i for i in c.ids if i != x])
    assert describe(c, ctl, t)[0]["leader"] == -1  # unclean election is off for the topic
    _, body, _ = spate(c, ctl, "topic", "elect-leaders", t)
    assert body[0]["error_code"] == 80, body  # the preferred replica x is down
    _, body, _ = spate(c, y, "topic", "elect-leaders", "--unclean", t)
    assert body[0]["error_code"] == 0, body
    wait_until(lambda: describe(c, ctl, t)[0]["leader"] == y, timeout=20, desc="y leads, uncleanly")
    assert describe(c, ctl, t)[0]["isr"] == [y]
    assert "unclean leader election" in c.nodes[ctl].log_text()
    # No live replica at all: nothing to elect.
    c.nodes[y].kill()
    wait_until(lambda: describe(c, ctl, t)[0]["leader"] == -1, timeout=20, desc="offline again")
    _, body, _ = spate(c, ctl, "topic", "elect-leaders", "--unclean", t)
    assert body[0]["error_code"] == 83, body  # ELIGIBLE_LEADERS_NOT_AVAILABLE


def test_a_replica_moved_away_while_down_is_deleted_at_start(cluster_factory):
    c = cluster_factory()
    a, b, new = c.ids
    t = unique_topic("stray")
    create_on(c, t, [[a, b]])
    c.nodes[a].stop()
    c.wait_brokers([b, new])
    spate(c, b, "topic", "reassign", t, "--partition", "0", "--replicas", f"{b},{new}")
    wait_until(lambda: c.metadata(b).topics[t].partitions[0].replicas == [b, new], timeout=60,
               desc="moved while a is down")
    assert (c.nodes[a].data_dir / f"{t}-0").exists()
    c.nodes[a].start()
    c.wait_brokers(c.ids)
    wait_until(lambda: not (c.nodes[a].data_dir / f"{t}-0").exists(), timeout=20,
               desc="a's stray replica deleted")
    # A directory left by a crash after the change (the broker never saw it applied) too.
    c.nodes[a].stop()
    stray = c.nodes[a].data_dir / f"{t}-0"
    stray.mkdir()
    (stray / "00000000000000000000.log").write_bytes(b"")
    c.nodes[a].start()
    c.wait_brokers(c.ids)
    wait_until(lambda: not stray.exists(), timeout=20, desc="stray directory deleted at start")
