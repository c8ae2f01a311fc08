"""Consumer groups with the KIP-848 consumer protocol (ConsumerGroupHeartbeat) end to end, with
librdkafka's `group.protocol=consumer`.

What is proved here, black-box:
  - three members share 12 partitions 4/4/4; a fourth joins and only the partitions it takes move:
    the others never have a kept partition revoked, and keep processing records while it joins
    (measured: no gap in their processing longer than one heartbeat interval);
  - a member killed with SIGKILL is removed after the session timeout and the survivors take its
    partitions, resuming from its committed offsets: every record is committed-as-processed
    exactly once, except at most the one the dead member had in hand;
  - a kill -9 and restart of the broker keeps the group (members, epochs, assignments are stored
    in __consumer_offsets): the survivors go on with the same partitions, none revoked;
  - after that, a classic client's committed() (OffsetFetch without a member) returns the offsets;
  - a classic group and a consumer group side by side; an empty classic group (offsets only)
    converted on the first heartbeat, its members starting from its committed offsets;
    ListGroups v5 reports the types and filters by them; DescribeGroups v6 refuses a consumer
    group as Kafka 4.x (GROUP_ID_NOT_FOUND), ConsumerGroupDescribe describes it;
  - a regular-expression subscription picks up a topic created later.

Consumers run in their own processes (test_groups' workers: spawn context, append-only reports).
"""

import subprocess
import threading
import time

from confluent_kafka import Consumer, ConsumerGroupType, TopicPartition
from kafka import KafkaAdminClient

from kafkautil import COMMON, DeliveryLog, admin, create_topic, producer, unique_topic, wait_until
from test_groups import (KP_TIMEOUTS, commit_offsets, committed_offsets, end_offsets, produce,  # noqa: F401
                         state_of, unique_group, wait_state, workers)

HEARTBEAT_MS = 1000
SESSION_MS = 6000
BROKER_ARGS = ["--group-consumer-heartbeat-interval-ms", str(HEARTBEAT_MS),
               "--group-consumer-session-timeout-ms", str(SESSION_MS)]
KIP848 = {"group.protocol": "consumer"}


def processed_keys(members):
    return {where for w in members for _, where, _ in w.log.processed()}


def max_gap(w, start, end):
    """Longest time w processed nothing between start and end (monotonic seconds)."""
    ts = [start] + [t for t, _, _ in w.log.processed() if start <= t <= end] + [end]
    return max(b - a for a, b in zip(ts, ts[1:]))


def test_kip848_join_kill_restart_exactly_once(broker_factory, workers, rng):  # noqa: C901
    seed = rng.seed_value
    nparts = 12
    b = broker_factory(shards=2, extra_args=BROKER_ARGS)
    topic = unique_topic("k848")
    group = unique_group("k848")
    ctx = f"(seed={seed}, topic={topic}, group={group})"
    create_topic(b.bootstrap, topic, nparts)
    all_parts = frozenset((topic, p) for p in range(nparts))
    produced = produce(b.bootstrap, topic, [(None, f"p1-{i}-{rng.getrandbits(32):x}", i % nparts) for i in range(600)])

    ws = [workers.start(f"m{i}", b.bootstrap, group, [topic], KIP848) for i in range(3)]
    state = state_of(ws)

    def balanced(members, each):
        a = [w.log.assignment() for w in members]
        return all(len(x) == each for x in a) and frozenset().union(*a) == all_parts
    wait_state(lambda: balanced(ws, 4), 60, f"3 members owning 4 of the 12 partitions each {ctx}", state)
    wait_state(lambda: set(produced) <= processed_keys(ws), 60, f"the first 600 records processed {ctx}", state)

    # A steady stream of records on every partition while the membership changes.
    stream_stop = threading.Event()
    stream_log = DeliveryLog()

    def stream():
        p = producer(b.bootstrap)
        i = 0
        while not stream_stop.is_set() and i < 20000:
            p.produce(topic, value=f"p2-{i}".encode(), partition=i % nparts, on_delivery=stream_log)
            i += 1
            if i % 12 == 0:
                p.flush(10)
                time.sleep(0.02)
        p.flush(30)

    t = threading.Thread(target=stream, daemon=True)
    t.start()
    try:
        time.sleep(1.0)
        # ---- a fourth member joins: only what it takes moves.
        before = {w.name: w.log.assignment() for w in ws}
        joined_at = time.monotonic()
        w4 = workers.start("m3", b.bootstrap, group, [topic], KIP848)
        ws.append(w4)
        wait_state(lambda: balanced(ws, 3), 60, f"4 members owning 3 partitions each {ctx}", state)
        settled_at = time.monotonic()
        time.sleep(1.0)
        gaps = []
        for w in ws[:3]:
            now = w.log.assignment()
            assert now <= before[w.name] and len(before[w.name] - now) == 1, \
                f"{w.name} went from {sorted(before[w.name])} to {sorted(now)} {ctx}"
            revoked = frozenset().union(*[parts for ts, kind, parts in w.log.events()
                                          if ts >= joined_at and kind in ("revoke", "lost")])
            assert revoked == before[w.name] - now, f"{w.name} had {sorted(revoked)} revoked {ctx}"
            gap = max_gap(w, joined_at, settled_at + 1.0)
            print(f"{w.name}: longest pause in processing while m3 joined: {gap * 1000:.0f} ms")
            gaps.append((gap, w.name))
        # No stop-the-world: members keep processing while the group rebalances. A member that
        # gives a partition up may wait up to its next heartbeat to acknowledge the revocation
        # (librdkafka holds its fetches meanwhile), so one heartbeat of slack on a shared
        # 2-core machine; and at least one member never paused that long.
        assert max(gaps)[0] < 2 * HEARTBEAT_MS / 1000, f"{max(gaps)[1]} stopped processing for {max(gaps)[0]:.2f}s {ctx}"
        assert min(gaps)[0] < HEARTBEAT_MS / 1000, f"every member paused at least {min(gaps)[0]:.2f}s {ctx}"

        # ---- one member is killed: the survivors take its partitions after the session timeout.
        victim = rng.choice(ws)
        survivors = [w for w in ws if w is not victim]
        wait_state(lambda: sum(1 for _, _, v in victim.log.processed() if v.startswith("p2-")) >= 20, 60,
                   f"{victim.name} processing the streamed records {ctx}", state)
        before_kill = {w.name: w.log.assignment() for w in ws}
        victim.kill()
        killed_at = time.monotonic()
    finally:
        stream_stop.set()
        t.join(60)
    assert not t.is_alive(), f"streaming producer did not finish {ctx}"
    assert not stream_log.errors, f"delivery errors {stream_log.errors[:5]} {ctx}"
    produced.update({(tt, p, o): v.decode() for tt, p, o, _, v in stream_log.ok})

    def taken_over():
        a = [w.log.assignment() for w in survivors]
        return sum(len(x) for x in a) == nparts and frozenset().union(*a) == all_parts
    wait_state(taken_over, 60, f"the survivors owning all {nparts} partitions {ctx}", state)
    took = time.monotonic() - killed_at
    assert took >= SESSION_MS / 1000 - 1, f"taken over after {took:.1f}s, before the session timeout {ctx}"
    for w in survivors:
        assert before_kill[w.name] <= w.log.assignment(), f"{w.name} lost partitions in the takeover {ctx}"
    wait_state(lambda: set(produced) <= processed_keys(ws), 60, f"all {len(produced)} records processed {ctx}",
               state)

    # ---- kill -9 and restart of the broker: the group comes back as it was, nothing revoked.
    held = {w.name: w.log.assignment() for w in survivors}
    b.kill()
    restarted_at = time.monotonic()
    b.start()
    more = produce(b.bootstrap, topic, [(None, f"p3-{i}", i % nparts) for i in range(120)])
    produced.update(more)
    wait_state(lambda: set(produced) <= processed_keys(ws), 90, f"records after the restart processed {ctx}", state)
    for w in survivors:
        assert w.log.assignment() == held[w.name], f"{w.name} changed assignment over the restart {ctx}"
        moved = [parts for ts, kind, parts in w.log.events() if ts >= restarted_at and kind in ("revoke", "lost")]
        assert not moved, f"{w.name} had partitions revoked after the broker restart: {moved} {ctx}"
    ends = end_offsets(produced)
    wait_state(lambda: committed_offsets(b.bootstrap, group, list(ends)) == ends, 60,
               f"committed offsets at the partition ends {ctx}", state)
    for w in survivors:
        w.shutdown()

    # ---- exactly-once accounting (as test_groups' cooperative-sticky test).
    for w in ws:
        for _, where, value in w.log.processed():
            assert produced.get(where) == value, f"{w.name} processed {where}={value!r} {ctx}"
    commits = {}
    for w in ws:
        for where in w.log.committed():
            commits[where] = commits.get(where, 0) + 1
    twice = sorted(k for k, n in commits.items() if n > 1)
    assert not twice, f"records committed-as-processed twice: {twice[:10]} {ctx}"
    victim_dangling = [where for where, outcome in victim.log.outcomes() if outcome is None]
    assert len(victim_dangling) <= 1, f"{victim.name} commits after each record, yet {victim_dangling} {ctx}"
    uncommitted = set(produced) - set(commits)
    assert uncommitted <= set(victim_dangling), \
        f"{len(uncommitted)} records never committed-as-processed, e.g. {sorted(uncommitted)[:10]} {ctx}"
    counts = {}
    for w in ws:
        for _, where, _ in w.log.processed():
            counts[where] = counts.get(where, 0) + 1
    failed = {where for w in ws for where, _ in w.log.failed()}
    unexplained = sorted(k for k, n in counts.items() if n > 1 and k not in failed and k not in victim_dangling)
    assert not unexplained, f"records processed again although their commit had succeeded: {unexplained[:10]} {ctx}"

    # ---- after the restart, a classic client reads the group's offsets (OffsetFetch, no member).
    b.stop()
    b.start()
    c = Consumer({"bootstrap.servers": b.bootstrap, **COMMON, "group.id": group})
    try:
        got = wait_until(lambda: c.committed([TopicPartition(topic, p) for p in range(nparts)], timeout=10),
                         timeout=30, desc="committed() of the consumer group")
        assert {(tp.topic, tp.partition): tp.offset for tp in got} == ends, ctx
    finally:
        c.close()


def test_classic_and_consumer_groups_side_by_side(broker_factory, workers, rng, spate_bin):
    b = broker_factory(shards=2, extra_args=BROKER_ARGS)
    topic = unique_topic("side")
    create_topic(b.bootstrap, topic, 4)
    produced = produce(b.bootstrap, topic, [(None, f"v{i}", i % 4) for i in range(40)])
    classic, modern, converted = unique_group("classic"), unique_group("modern"), unique_group("conv")
    # An empty classic group: offsets committed without membership, halfway through each partition.
    half = {(topic, p): 5 for p in range(4)}
    commit_offsets(b.bootstrap, converted, {k: (v, "") for k, v in half.items()})

    wc = workers.start("classic", b.bootstrap, classic, [topic], {"session.timeout.ms": 6000})
    wm = workers.start("modern", b.bootstrap, modern, [topic], KIP848)
    wv = workers.start("converted", b.bootstrap, converted, [topic], KIP848)
    ws = [wc, wm, wv]
    everything = set(produced)
    wait_state(lambda: everything <= processed_keys([wc]) and everything <= processed_keys([wm]), 60,
               "both groups consumed every record", state_of(ws))
    # The converted group started from its committed offsets: offsets 0-4 are not processed again.
    want = {k for k in produced if k[2] >= 5}
    wait_state(lambda: want <= processed_keys([wv]), 60, "the converted group consumed from offset 5", state_of(ws))
    assert not {k for k in processed_keys([wv]) if k[2] < 5}, "the converted group re-read committed records"

    a = admin(b.bootstrap)
    listed = {g.group_id: g for g in a.list_consumer_groups(request_timeout=15).result().valid}
    assert listed[classic].type == ConsumerGroupType.CLASSIC, listed[classic]
    assert listed[modern].type == ConsumerGroupType.CONSUMER, listed[modern]
    assert listed[converted].type == ConsumerGroupType.CONSUMER, listed[converted]
    only = a.list_consumer_groups(request_timeout=15, types={ConsumerGroupType.CONSUMER}).result().valid
    assert {g.group_id for g in only} >= {modern, converted} and classic not in {g.group_id for g in only}

    # ConsumerGroupDescribe describes a consumer group: its member and the assignment.
    d = a.describe_consumer_groups([modern], request_timeout=15)[modern].result()
    assert len(d.members) == 1 and len(d.members[0].assignment.topic_partitions) == 4, d
    # `spate group describe` shows the member's epoch, and its current and target assignments.
    out = subprocess.run([str(spate_bin), "group", "describe", modern, "--bootstrap-server", b.bootstrap],
                         capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stderr
    assert "EPOCH" in out.stdout and "TARGET" in out.stdout and "uniform" in out.stdout, out.stdout
    member = d.members[0].member_id
    row = next(line for line in out.stdout.splitlines() if line.startswith(member))
    parts = f"{topic}:0,1,2,3"
    assert row.count(parts) == 2, f"current and target assignment in {row!r}"

    # DescribeGroups v6 (kafka-python) refuses a consumer group as Kafka 4.x does.
    kp = KafkaAdminClient(bootstrap_servers=b.bootstrap, **KP_TIMEOUTS)
    try:
        desc = kp.describe_groups([modern])[modern]
        assert desc["group_state"] == "Dead" and not desc["members"], desc
        assert f"Group {modern} is not a classic group." in str(desc["error"]), desc
        desc = kp.describe_groups([classic])[classic]
        assert desc["group_state"] == "Stable" and len(desc["members"]) == 1, desc
    finally:
        kp.close()
    for w in ws:
        w.shutdown()


def test_regex_subscription_picks_up_a_new_topic(broker_factory, workers, rng):
    b = broker_factory(shards=2, extra_args=BROKER_ARGS)
    prefix = unique_topic("rx")
    first, later = f"{prefix}-a", f"{prefix}-b"
    create_topic(b.bootstrap, first, 2)
    produced = produce(b.bootstrap, first, [(None, f"a{i}", i % 2) for i in range(10)])
    w = workers.start("rx", b.bootstrap, unique_group("rx"), [f"^{prefix}-.*"], KIP848)
    wait_state(lambda: set(produced) <= processed_keys([w]), 60, "records of the first topic", state_of([w]))
    create_topic(b.bootstrap, later, 3)
    produced.update(produce(b.bootstrap, later, [(None, f"b{i}", i % 3) for i in range(12)]))
    wait_state(lambda: set(produced) <= processed_keys([w]), 60, "records of the topic created later",
               state_of([w]))
    assert len(w.log.assignment()) == 5, w.log.summary()
    w.shutdown()


def test_static_member_comes_back_without_moving_partitions(broker_factory, workers, rng):
    b = broker_factory(shards=2, extra_args=BROKER_ARGS)
    topic = unique_topic("static")
    group = unique_group("static")
    create_topic(b.bootstrap, topic, 6)
    produced = produce(b.bootstrap, topic, [(None, f"v{i}", i % 6) for i in range(60)])
    conf = lambda i: {**KIP848, "group.instance.id": f"instance-{i}"}  # noqa: E731
    w0 = workers.start("s0", b.bootstrap, group, [topic], conf(0))
    w1 = workers.start("s1", b.bootstrap, group, [topic], conf(1))
    state = state_of([w0, w1])
    wait_state(lambda: len(w0.log.assignment()) == 3 and len(w1.log.assignment()) == 3, 60, "3 partitions each",
               state)
    wait_state(lambda: set(produced) <= processed_keys([w0, w1]), 60, "every record processed", state)
    held = w1.log.assignment()
    # A clean close of a static member is a temporary leave (epoch -2): it keeps its partitions.
    w1.shutdown()
    left_at = time.monotonic()
    w1b = workers.start("s1-again", b.bootstrap, group, [topic], conf(1))
    wait_state(lambda: w1b.log.assignment() == held, 30, "the instance back with its partitions",
               state_of([w0, w1b]))
    assert time.monotonic() - left_at < SESSION_MS / 1000, "it waited for the session timeout"
    moved = [parts for ts, kind, parts in w0.log.events() if ts >= left_at]
    assert not moved and len(w0.log.assignment()) == 3, f"the other member was disturbed: {moved}"
    more = produce(b.bootstrap, topic, [(None, f"w{i}", i % 6) for i in range(12)])
    wait_state(lambda: set(more) <= processed_keys([w0, w1b]), 60, "records after the return",
               state_of([w0, w1b]))
    for w in (w0, w1b):
        w.shutdown()
