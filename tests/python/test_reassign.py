"""Partition reassignment (KIP-455), replication throttles and leader elections on request
(KIP-460), on three real brokers (`--shards 1`), driven through `spate topic` (which speaks
AlterPartitionReassignments, ListPartitionReassignments and ElectLeaders). Waits are conditions
with deadlines, never fixed sleeps.
"""

import json
import subprocess

from confluent_kafka.admin import NewTopic

from jepsen import Workload, check, compare_replicas, read_all
from kafkautil import admin, unique_topic, wait_until
from test_cluster import FAST, cluster_factory, describe  # noqa: F401 - the fixture is used by name


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
