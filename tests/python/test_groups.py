"""Consumer groups (the classic group protocol) end to end with real clients.

What is proved here, black-box:
  - librdkafka cooperative-sticky groups rebalance evenly, and when a member dies without
    leaving (SIGKILL of its process) the survivors take its partitions over after the session
    timeout and resume from its committed offsets: every produced record is committed-as-processed
    exactly once, except at most the one record the dead member had in hand;
  - committed offsets (with metadata) survive a clean restart and kill -9;
  - kafka-python range-assignor groups get the range split, and resume from the committed
    offsets after a broker restart;
  - static membership (group.instance.id): a member that is killed and comes back within the
    session timeout gets its partitions back without a rebalance of the others;
  - a group's coordinator shard is the owner shard of its partition of __consumer_offsets
    (Kafka's abs(hashCode(group)) % 50) and requests arriving on another shard's connection are
    routed there;
  - a deleted group stays deleted across kill -9, and a Stable group comes back Stable with its
    members (its generation is stored in __consumer_offsets);
  - the admin group APIs (ListGroups, DescribeGroups, DeleteGroups, OffsetFetch incl. several
    groups in one request, OffsetDelete) behave as Kafka's.

Consumers whose death matters run in their own processes (spawn context) and report to an
append-only file with one write(2) per line, so what they reported before a SIGKILL is kept.
"""

import multiprocessing
import os
import random
import re
import threading
import time
import uuid
from pathlib import Path

import pytest
from confluent_kafka import (OFFSET_INVALID, Consumer, ConsumerGroupState, ConsumerGroupTopicPartitions, KafkaError,
                             KafkaException, TopicPartition)
from kafka import KafkaAdminClient, KafkaConsumer
from kafka import TopicPartition as KTopicPartition
from kafka.coordinator.assignors.range import RangePartitionAssignor
from kafka.errors import KafkaError as KPKafkaError
from kafka.structs import OffsetAndMetadata

from kafkautil import COMMON, DeliveryLog, admin, consumer, create_topic, error_code, flush_all, producer, \
    unique_topic, wait_until

ADMIN_TIMEOUT = 15
KP_TIMEOUTS = {"request_timeout_ms": 10000, "bootstrap_timeout_ms": 15000, "reconnect_backoff_ms": 50,
               "retry_backoff_ms": 100}
GROUP_REQUEST_RE = re.compile(
    r'group request api=(\w+) group="?([^\s"]+)"? connection_shard=(\d+) coordinator_shard=(\d+)')
GROUP_CREATED_RE = re.compile(r'group created group="?([^\s"]+)"? shard=(\d+)')
# A worker process gives up on its own after this long (or as soon as the test process is gone),
# so a test killed by pytest-timeout never leaves consumers behind.
WORKER_MAX_LIFETIME_S = 300


def delay_args(ms):
    return ["--group-initial-rebalance-delay-ms", str(ms)]


def unique_group(prefix="g"):
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


# ----------------------------------------------------------------------------- coordinator shard
def fnv1a64(data):
    h = 0xcbf29ce484222325
    for byte in data:
        h ^= byte
        h = (h * 0x100000001b3) & 0xFFFFFFFFFFFFFFFF
    return h


def java_string_hashcode(s):
    """Java's String.hashCode: h = 31 * h + c over UTF-16 code units, as a signed 32-bit int."""
    units = s.encode("utf-16-be")
    h = 0
    for i in range(0, len(units), 2):
        h = (h * 31 + ((units[i] << 8) | units[i + 1])) & 0xFFFFFFFF
    return h - (1 << 32) if h >= 1 << 31 else h


def offsets_partition(group, partitions=50):
    """Kafka's Utils.abs(groupId.hashCode()) % offsets.topic.num.partitions (abs(MIN_VALUE) is 0)."""
    h = java_string_hashcode(group)
    return (0 if h == -(1 << 31) else abs(h)) % partitions


def partition_owner(topic, partition, shards):
    """The broker's placement::partition_owner."""
    return (fnv1a64(topic.encode("utf-8")) % shards + partition) % shards


def coordinator_shard(group, shards):
    return partition_owner("__consumer_offsets", offsets_partition(group), shards)


def group_on_shard(rng, prefix, shard, shards=2):
    """A fresh group id whose coordinator is `shard` (drawn from rng: reproducible from the seed)."""
    while True:
        g = f"{prefix}-{rng.getrandbits(40):010x}"
        if coordinator_shard(g, shards) == shard:
            return g


def test_fnv1a64_matches_the_broker():
    # The value asserted by src/shard/assignment.rs's unit test; the tests below rely on this.
    assert fnv1a64(b"a") == 0xaf63dc4c8601ec8c
    assert fnv1a64(b"") == 0xcbf29ce484222325
    # The values asserted by src/placement.rs's unit test ("hello".hashCode() is 99162322).
    assert java_string_hashcode("hello") == 99162322
    assert offsets_partition("my-group") == 12
    assert offsets_partition("polygenelubricants") == 0


# ----------------------------------------------------------------------------- generic helpers
def wait_state(cond, timeout, desc, state):
    """wait_until, with `state()` (the current picture) appended to the failure message."""
    try:
        return wait_until(cond, timeout=timeout, desc=desc)
    except AssertionError as e:
        raise AssertionError(f"{e}\n  state: {state()}") from None


def hold_steady(duration, check, desc):
    """Observe for `duration` seconds that check() stays true (fails at the first false).

    Only for asserting that something does NOT happen within a protocol timeout.
    """
    end = time.monotonic() + duration
    while time.monotonic() < end:
        ok = check()
        assert ok, f"{desc} (after {duration - (end - time.monotonic()):.1f}s of the {duration:.1f}s window)"
        time.sleep(0.1)


def produce(bootstrap, topic, items):
    """items: [(key or None, value str, partition or None)] -> {(topic, partition, offset): value}."""
    p = producer(bootstrap)
    dl = DeliveryLog()
    for key, value, part in items:
        kw = {} if part is None else {"partition": part}
        p.produce(topic, key=None if key is None else key.encode(), value=value.encode(), on_delivery=dl, **kw)
        p.poll(0)
    flush_all(p)
    assert not dl.errors, f"delivery errors: {dl.errors[:5]}"
    assert len(dl.ok) == len(items)
    return {(t, part, off): val.decode() for t, part, off, _, val in dl.ok}


def end_offsets(produced):
    """{(topic, partition): last produced offset + 1}"""
    ends = {}
    for t, p, o in produced:
        ends[(t, p)] = max(ends.get((t, p), 0), o + 1)
    return ends


def fetch_committed(bootstrap, group, keys, timeout=30):
    """Committed offsets of `group` for [(topic, partition)] via OffsetFetch from a consumer that does
    not join the group -> {(topic, partition): (offset, metadata)}; OFFSET_INVALID where none."""
    c = consumer(bootstrap, **{"group.id": group})
    try:
        res = wait_until(lambda: c.committed([TopicPartition(t, p) for t, p in keys], timeout=10),
                         timeout=timeout, desc=f"OffsetFetch of group {group}")
        out = {}
        for tp in res:
            assert tp.error is None, f"OffsetFetch {group} {tp.topic}/{tp.partition}: {tp.error}"
            out[(tp.topic, tp.partition)] = (tp.offset, tp.metadata or "")
        assert set(out) == set(keys), f"OffsetFetch {group} answered {sorted(out)} for {sorted(keys)}"
        return out
    finally:
        c.close()


def committed_offsets(bootstrap, group, keys, timeout=30):
    return {k: off for k, (off, _) in fetch_committed(bootstrap, group, keys, timeout).items()}


def commit_offsets(bootstrap, group, offsets, timeout=30, c=None):
    """Standalone commit (no membership, generation -1) of {(topic, partition): (offset, metadata)},
    from `c` (a consumer of `group` that never subscribes) or a fresh one."""
    own = c is None
    if own:
        c = consumer(bootstrap, **{"group.id": group})
    tps = [TopicPartition(t, p, off, metadata=meta) for (t, p), (off, meta) in offsets.items()]

    def attempt():
        res = c.commit(offsets=tps, asynchronous=False)
        bad = [(tp.topic, tp.partition, tp.error) for tp in res if tp.error is not None]
        assert not bad, f"partition errors {bad}"
        return True

    try:
        wait_until(attempt, timeout=timeout, desc=f"OffsetCommit of {len(tps)} offsets for group {group}")
    finally:
        if own:
            c.close()


# ----------------------------------------------------------------------------- consumer processes
def _fmt_parts(parts):
    return ",".join(f"{tp.topic}/{tp.partition}" for tp in sorted(parts, key=lambda tp: (tp.topic, tp.partition))) \
        or "-"


def _group_worker(bootstrap, group, topics, extra_conf, out_path, stop, commit_each, go):
    """Body of a consumer process: subscribe, process, commit; report every step to out_path.

    With `go` (an Event) the process starts up (imports) and waits for it before creating its consumer,
    so the test can time the moment the member appears without the interpreter's start-up in it.

    Lines: "<monotonic> <kind> <fields...>" where kind is
      S pid | M member_id | A assignment | EV assign|revoke|lost parts |
      P topic partition offset value (processed) | C topic partition offset (its commit succeeded) |
      F topic partition offset error (its commit failed) | R topic partition offset (a retry of that
      failed commit succeeded) | E code name (consumer error) | W (gated, waiting) | X (clean exit)
    """
    parent = os.getppid()
    give_up = time.monotonic() + WORKER_MAX_LIFETIME_S
    fd = os.open(out_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)

    def log(kind, *fields):
        line = " ".join([f"{time.monotonic():.6f}", kind, *map(str, fields)]) + "\n"
        os.write(fd, line.encode())  # one write(2): survives our SIGKILL

    if go is not None:
        log("W")
        while not go.wait(0.1):
            if stop.is_set() or os.getppid() != parent or time.monotonic() >= give_up:
                os.close(fd)
                return
    conf = {
        "bootstrap.servers": bootstrap,
        **COMMON,
        "group.id": group,
        "enable.auto.commit": False,
        "auto.offset.reset": "earliest",
        "fetch.wait.max.ms": 100,
        "enable.partition.eof": False,
        **extra_conf,
    }
    c = Consumer(conf)
    log("S", os.getpid())
    c.subscribe(topics,
                on_assign=lambda _c, ps: log("EV", "assign", _fmt_parts(ps)),
                on_revoke=lambda _c, ps: log("EV", "revoke", _fmt_parts(ps)),
                on_lost=lambda _c, ps: log("EV", "lost", _fmt_parts(ps)))
    last_assignment = None
    last_member = None
    retry = {}  # (topic, partition) -> offset of the last record there, whose commit failed
    while not stop.is_set() and os.getppid() == parent and time.monotonic() < give_up:
        msg = c.poll(0.1)
        assigned = c.assignment()
        assignment = _fmt_parts(assigned)
        if assignment != last_assignment:
            log("A", assignment)
            last_assignment = assignment
        # A failed commit (e.g. REBALANCE_IN_PROGRESS) is retried while the partition is still ours and
        # nothing newer was processed there; otherwise the record's next owner processes it again.
        owned = {(tp.topic, tp.partition) for tp in assigned}
        for tp_key in list(retry):
            if tp_key not in owned:
                del retry[tp_key]
                continue
            off = retry[tp_key]
            try:
                res = c.commit(offsets=[TopicPartition(*tp_key, off + 1)], asynchronous=False)
                if all(tp.error is None for tp in (res or [])):
                    log("R", *tp_key, off)
                    del retry[tp_key]
            except KafkaException:
                pass
        try:
            member = c.memberid()
        except Exception:  # noqa: BLE001 - not joined yet
            member = None
        if member and member != last_member:
            log("M", member)
            last_member = member
        if msg is None:
            continue
        if msg.error() is not None:
            log("E", msg.error().code(), msg.error().name())
            continue
        where = (msg.topic(), msg.partition(), msg.offset())
        log("P", *where, msg.value().decode())
        if commit_each:
            retry.pop(where[:2], None)
            try:
                res = c.commit(message=msg, asynchronous=False)
                errs = [tp.error for tp in (res or []) if tp.error is not None]
                if errs:
                    log("F", *where, errs[0].name())
                    retry[where[:2]] = where[2]
                else:
                    log("C", *where)
            except KafkaException as e:
                log("F", *where, e.args[0].name())
                retry[where[:2]] = where[2]
    c.close()
    log("X")
    os.close(fd)


class WorkerLog:
    """Parsed view of one worker's report file."""

    def __init__(self, path):
        self.path = Path(path)

    def lines(self):
        try:
            text = self.path.read_text()
        except FileNotFoundError:
            return []
        out = []
        for line in text.split("\n")[:-1]:  # the part after the last newline is incomplete (or empty)
            ts, kind, *fields = line.split(" ")
            out.append((float(ts), kind, fields))
        return out

    def of(self, kind):
        return [(ts, fields) for ts, k, fields in self.lines() if k == kind]

    @staticmethod
    def _parts(field):
        if field == "-":
            return frozenset()
        return frozenset((tp.rsplit("/", 1)[0], int(tp.rsplit("/", 1)[1])) for tp in field.split(","))

    def assignment(self):
        a = self.of("A")
        return self._parts(a[-1][1][0]) if a else frozenset()

    def member_id(self):
        m = self.of("M")
        return m[-1][1][0] if m else None

    def events(self):
        return [(ts, f[0], self._parts(f[1])) for ts, f in self.of("EV")]

    def processed(self):
        """[(ts, (topic, partition, offset), value)]"""
        return [(ts, (f[0], int(f[1]), int(f[2])), f[3]) for ts, f in self.of("P")]

    def committed(self):
        """[(topic, partition, offset)] processed here whose commit succeeded (at once, or retried)."""
        return [(f[0], int(f[1]), int(f[2])) for _, k, f in self.lines() if k in ("C", "R")]

    def failed(self):
        """[((topic, partition, offset), error)] processed here whose commit failed for good."""
        retried = {(f[0], int(f[1]), int(f[2])) for _, f in self.of("R")}
        return [((f[0], int(f[1]), int(f[2])), f[3]) for _, f in self.of("F")
                if (f[0], int(f[1]), int(f[2])) not in retried]

    def outcomes(self):
        """[(where, 'C'|'F'|None)] per processed record in order; None: no outcome reported (killed)."""
        out = []
        for _, kind, f in self.lines():
            if kind == "P":
                out.append([(f[0], int(f[1]), int(f[2])), None])
            elif kind in ("C", "F"):
                where = (f[0], int(f[1]), int(f[2]))
                assert out and out[-1][0] == where and out[-1][1] is None, \
                    f"{self.path.name}: {kind} {where} does not follow its P line"
                out[-1][1] = kind
        return [tuple(x) for x in out]

    def exited(self):
        return bool(self.of("X"))

    def summary(self):
        errs = self.of("E")[-3:]
        return (f"{self.path.stem}: assignment={sorted(self.assignment())} member={self.member_id()} "
                f"processed={len(self.of('P'))} committed={len(self.of('C'))} failed={len(self.of('F'))} "
                f"events={len(self.of('EV'))} errors={[f for _, f in errs]} exited={self.exited()}")


class Worker:
    def __init__(self, ctx, path, name, args, gated):
        self.name = name
        self.log = WorkerLog(path)
        self.stop = ctx.Event()
        self.go = ctx.Event() if gated else None
        self.proc = ctx.Process(target=_group_worker, args=(*args[:4], str(path), self.stop, args[4], self.go),
                                name=name, daemon=True)

    def ready(self):
        """Gated worker: started up and waiting for `go`."""
        return bool(self.log.of("W"))

    def kill(self):
        """SIGKILL: the member vanishes without LeaveGroup (and without librdkafka's background heartbeats)."""
        self.proc.kill()
        self.proc.join(10)
        assert self.proc.exitcode is not None, f"{self.name} survived SIGKILL"

    def shutdown(self, timeout=30):
        self.stop.set()
        self.proc.join(timeout)
        assert self.proc.exitcode == 0, f"{self.name} exit code {self.proc.exitcode}; {self.log.summary()}"
        assert self.log.exited(), self.log.summary()


class Workers:
    def __init__(self, tmp_path):
        self.ctx = multiprocessing.get_context("spawn")
        self.dir = Path(tmp_path) / "workers"
        self.dir.mkdir(parents=True, exist_ok=True)
        self.all = []

    def start(self, name, bootstrap, group, topics, conf, commit_each=True, gated=False):
        w = Worker(self.ctx, self.dir / f"{name}.log", name, (bootstrap, group, list(topics), dict(conf), commit_each),
                   gated)
        w.proc.start()
        self.all.append(w)
        return w

    def cleanup(self):
        for w in self.all:
            if w.proc.is_alive():
                w.proc.kill()
                w.proc.join(10)


@pytest.fixture
def workers(tmp_path):
    ws = Workers(tmp_path)
    yield ws
    ws.cleanup()


def state_of(ws):
    return lambda: " | ".join(w.log.summary() for w in ws)


# ============================================================================= 1. cooperative-sticky
def test_cooperative_sticky_takeover_after_member_killed(broker_factory, workers, rng):  # noqa: C901
    seed = rng.seed_value
    nparts = 12
    b = broker_factory(shards=2, extra_args=delay_args(300))
    topic = unique_topic("coop")
    group = unique_group("coop")
    ctx = f"(seed={seed}, topic={topic}, group={group})"
    create_topic(b.bootstrap, topic, nparts)
    all_parts = frozenset((topic, p) for p in range(nparts))

    produced = produce(b.bootstrap, topic,
                       [(f"k{rng.randrange(60)}", f"p1-{i}-{rng.getrandbits(32):x}", None) for i in range(600)])
    conf = {"partition.assignment.strategy": "cooperative-sticky", "session.timeout.ms": 6000,
            "heartbeat.interval.ms": 500}
    ws = [workers.start(f"coop{i}", b.bootstrap, group, [topic], conf) for i in range(3)]
    state = state_of(ws)

    def processed_keys(members):
        return {where for w in members for _, where, _ in w.log.processed()}

    def balanced():
        a = [w.log.assignment() for w in ws]
        return all(len(x) == 4 for x in a) and frozenset().union(*a) == all_parts
    wait_state(balanced, 60, f"3 members owning 4 of the 12 partitions each {ctx}", state)
    wait_state(lambda: set(produced) <= processed_keys(ws), 60, f"the first 600 records processed {ctx}", state)

    # Stream more records, and SIGKILL one member in the middle of processing them.
    victim = rng.choice(ws)
    survivors = [w for w in ws if w is not victim]
    stream_stop = threading.Event()
    stream_log = DeliveryLog()
    stream_rng_seed = rng.getrandbits(32)

    def stream():
        srng = random.Random(stream_rng_seed)
        p = producer(b.bootstrap)
        i = 0
        while not stream_stop.is_set() and i < 3000:
            p.produce(topic, key=f"k{srng.randrange(60)}".encode(), value=f"p2-{i}-{srng.getrandbits(32):x}".encode(),
                      on_delivery=stream_log)
            i += 1
            if i % 10 == 0:
                p.flush(10)
        p.flush(30)

    t = threading.Thread(target=stream, daemon=True)
    t.start()
    try:
        wait_state(lambda: sum(1 for _, _, v in victim.log.processed() if v.startswith("p2-")) >= 20, 60,
                   f"{victim.name} processing the streamed records {ctx}", state)
        before_kill = {w.name: w.log.assignment() for w in ws}
        victim.kill()
    finally:
        stream_stop.set()
        t.join(60)
    assert not t.is_alive(), f"streaming producer did not finish {ctx}"
    assert not stream_log.errors, f"delivery errors {stream_log.errors[:5]} {ctx}"
    produced.update({(tt, p, o): v.decode() for tt, p, o, _, v in stream_log.ok})
    victim_parts = before_kill[victim.name]
    assert len(victim_parts) == 4, f"{victim.name} owned {sorted(victim_parts)} when killed {ctx}"

    # Records on every partition (so the dead member's partitions have work for their new owners).
    produced.update(produce(b.bootstrap, topic,
                            [(None, f"p3-{i}-{rng.getrandbits(32):x}", i % nparts) for i in range(240)]))

    # After the session timeout the two survivors own all 12, 6 each, and (sticky) kept their own.
    def taken_over():
        a = [w.log.assignment() for w in survivors]
        return sum(len(x) for x in a) == nparts and frozenset().union(*a) == all_parts
    wait_state(taken_over, 60, f"the survivors owning all {nparts} partitions without overlap {ctx}", state)
    for w in survivors:
        a = w.log.assignment()
        assert len(a) == 6, f"{w.name} owns {sorted(a)} after the takeover, expected 6 of 12 {ctx}"
        assert before_kill[w.name] <= a, \
            f"{w.name} lost partitions it owned ({sorted(before_kill[w.name] - a)}): not sticky {ctx}"

    wait_state(lambda: set(produced) <= processed_keys(ws), 60, f"all {len(produced)} records processed {ctx}",
               state)
    ends = end_offsets(produced)
    wait_state(lambda: committed_offsets(b.bootstrap, group, list(ends)) == ends, 60,
               f"committed offsets at the partition ends {ctx}", state)
    for w in survivors:
        w.shutdown()

    # ---- exactly-once accounting
    for w in ws:
        for _, where, value in w.log.processed():
            assert produced.get(where) == value, \
                f"{w.name} processed {where}={value!r} but {produced.get(where)!r} was produced there {ctx}"
    commits = {}
    for w in ws:
        for where in w.log.committed():
            commits[where] = commits.get(where, 0) + 1
    twice = sorted(k for k, n in commits.items() if n > 1)
    assert not twice, f"records committed-as-processed twice: {twice[:10]} {ctx}"
    for w in survivors:
        dangling = [where for where, outcome in w.log.outcomes() if outcome is None]
        assert not dangling, f"{w.name} (shut down cleanly) has records without a commit outcome {dangling} {ctx}"
    victim_dangling = [where for where, outcome in victim.log.outcomes() if outcome is None]
    assert len(victim_dangling) <= 1, f"{victim.name} commits after each record, yet {victim_dangling} {ctx}"
    assert len(victim.log.committed()) >= 20, f"{victim.name}: {victim.log.summary()} {ctx}"
    # Every record is committed-as-processed by someone; the only exception allowed is the one record
    # the victim processed and whose (acknowledged) commit it could not report before the kill.
    uncommitted = set(produced) - set(commits)
    assert uncommitted <= set(victim_dangling), \
        f"{len(uncommitted)} records never committed-as-processed, e.g. {sorted(uncommitted)[:10]} {ctx}"
    # Re-deliveries are explained: a record is processed again only after its commit failed (F), or
    # after the victim died holding it. In particular the new owners of the victim's partitions start
    # at its last committed offset.
    counts = {}
    for w in ws:
        for _, where, _ in w.log.processed():
            counts[where] = counts.get(where, 0) + 1
    failed = {where for w in ws for where, _ in w.log.failed()}
    unexplained = sorted(k for k, n in counts.items() if n > 1 and k not in failed and k not in victim_dangling)
    assert not unexplained, \
        f"records processed again although their commit had succeeded: {unexplained[:10]} " \
        f"(victim {victim.name} owned {sorted(victim_parts)}) {ctx}"


# ============================================================================= 2. durable offsets
def test_committed_offsets_survive_restart_and_kill_9(broker_factory, rng):
    seed = rng.seed_value
    b = broker_factory(shards=2, extra_args=delay_args(0))
    t1, t2 = unique_topic("off1"), unique_topic("off2")
    create_topic(b.bootstrap, t1, 4)
    create_topic(b.bootstrap, t2, 3)
    # One group per coordinator shard: both shards' offset stores are exercised.
    groups = [group_on_shard(rng, "offs", 0), group_on_shard(rng, "offs", 1)]
    ctx = f"(seed={seed}, groups={groups}, topics={t1},{t2})"
    keys = [(t1, p) for p in range(4)] + [(t2, p) for p in range(3)]

    def rand_commit():
        return (rng.randrange(0, 5000), rng.choice(["", "", f"meta-{rng.getrandbits(24):x}"]))

    expected = {g: {} for g in groups}
    for g in groups:
        first = {k: rand_commit() for k in keys if k[0] == t1}
        commit_offsets(b.bootstrap, g, first)
        expected[g].update(first)
    # Many commits of one partition: the last one wins (also across the store's compaction and replay).
    hot = (t1, rng.randrange(4))
    committer = consumer(b.bootstrap, **{"group.id": groups[0]})
    try:
        for _ in range(60):
            val = rand_commit()
            commit_offsets(b.bootstrap, groups[0], {hot: val}, c=committer)
            expected[groups[0]][hot] = val
    finally:
        committer.close()

    def check(when):
        for g in groups:
            got = fetch_committed(b.bootstrap, g, keys)
            want = {k: expected[g].get(k, (OFFSET_INVALID, "")) for k in keys}
            assert got == want, f"{when}: group {g} committed {got}, expected {want} {ctx}"

    check("before any restart")
    b.restart()
    check("after a clean restart")

    # New commits (overwrites and new partitions), acknowledged, then kill -9.
    for g in groups:
        second = {k: rand_commit() for k in rng.sample(keys, 4)}
        commit_offsets(b.bootstrap, g, second)
        expected[g].update(second)
    # A third group is committed, then deleted (acknowledged), before the kill.
    gone = unique_group("gone")
    commit_offsets(b.bootstrap, gone, {(t1, 0): (7, "")})
    assert fetch_committed(b.bootstrap, gone, [(t1, 0)]) == {(t1, 0): (7, "")}, ctx
    a = admin(b.bootstrap)
    code = _admin_result_error(a.delete_consumer_groups([gone], request_timeout=10)[gone])
    assert code == KafkaError.NO_ERROR, f"DeleteGroups: {KafkaError(code)} {ctx}"
    b.kill()
    b.start()
    check("after kill -9")
    assert fetch_committed(b.bootstrap, gone, [(t1, 0)]) == {(t1, 0): (OFFSET_INVALID, "")}, \
        f"deleted group {gone} came back after kill -9 {ctx}"
    a = admin(b.bootstrap)
    listed = a.list_consumer_groups(request_timeout=10).result(timeout=ADMIN_TIMEOUT)
    assert gone not in {g.group_id for g in listed.valid}, f"deleted group {gone} listed after kill -9 {ctx}"
    b.restart()
    check("after kill -9 and a clean restart")


def test_group_generation_and_members_survive_kill_9(broker_factory):
    """The coordinator stores a group's generation when it completes (GroupMetadata in
    __consumer_offsets): after kill -9 the group is back Stable with its member, not Empty."""
    b = broker_factory(shards=2, extra_args=delay_args(0))
    topic, group = unique_topic("gen"), unique_group("gen")
    create_topic(b.bootstrap, topic, 2)
    c = consumer(b.bootstrap, **{"group.id": group, "session.timeout.ms": 30000})
    try:
        c.subscribe([topic])
        wait_until(lambda: c.poll(0.1) is None and len(c.assignment()) == 2, timeout=30, desc="assignment")
        a = admin(b.bootstrap)
        before = a.describe_consumer_groups([group], request_timeout=10)[group].result(timeout=ADMIN_TIMEOUT)
        assert before.state == ConsumerGroupState.STABLE, before.state
        members = sorted(m.member_id for m in before.members)
        b.kill()
        b.start()
        a = admin(b.bootstrap)
        after = a.describe_consumer_groups([group], request_timeout=10)[group].result(timeout=ADMIN_TIMEOUT)
        got = sorted(m.member_id for m in after.members)
        assert (after.state, got) == (ConsumerGroupState.STABLE, members), \
            f"after kill -9: {after.state} {got}, before: {members}"
    finally:
        c.close()


# ============================================================================= 3. kafka-python range
class KPMember(threading.Thread):
    """A kafka-python group member polling in its own thread; commits its positions after each batch
    (and every 0.5 s, so a commit after a broker restart is attempted even with nothing new)."""

    def __init__(self, name, bootstrap, group, topic):
        super().__init__(name=name, daemon=True)
        self.bootstrap, self.group, self.topic = bootstrap, group, topic
        self.lock = threading.Lock()
        self.records = []  # (monotonic at poll return, partition, offset, value)
        self.assignment = frozenset()
        self.commits = []  # (monotonic at commit start, {partition: offset}) that succeeded
        self.errors = []
        self.fatal = None
        self.stop_ev = threading.Event()

    def run(self):
        try:
            self._run()
        except BaseException as e:  # noqa: BLE001 - reported by the test
            self.fatal = repr(e)

    def _run(self):
        c = KafkaConsumer(bootstrap_servers=self.bootstrap, group_id=self.group, client_id=self.name,
                          enable_auto_commit=False, auto_offset_reset="earliest",
                          partition_assignment_strategy=[RangePartitionAssignor], session_timeout_ms=6000,
                          heartbeat_interval_ms=500, fetch_max_wait_ms=100, **KP_TIMEOUTS)
        try:
            c.subscribe([self.topic])
            dirty, last_commit = False, 0.0
            while not self.stop_ev.is_set():
                batch = c.poll(timeout_ms=100)
                now = time.monotonic()
                assigned = list(c.assignment())
                with self.lock:
                    for _, recs in batch.items():
                        self.records.extend((now, r.partition, r.offset, r.value.decode()) for r in recs)
                    self.assignment = frozenset(tp.partition for tp in assigned)
                dirty = dirty or bool(batch)
                if assigned and (dirty or now - last_commit > 0.5):
                    last_commit = time.monotonic()
                    try:
                        offs = {}
                        for tp in assigned:
                            pos = c.position(tp, timeout_ms=2000)
                            if pos is not None:
                                offs[tp] = OffsetAndMetadata(pos, "", -1)
                        if offs:
                            c.commit(offs, timeout_ms=5000)
                            with self.lock:
                                self.commits.append((last_commit, {tp.partition: o.offset for tp, o in offs.items()}))
                            dirty = False
                    except Exception as e:  # noqa: BLE001 - retried on the next loop
                        with self.lock:
                            self.errors.append(repr(e))
        finally:
            c.close(autocommit=False)

    def snapshot(self):
        with self.lock:
            return list(self.records), self.assignment, list(self.commits)

    def summary(self):
        with self.lock:
            return (f"{self.name}: assignment={sorted(self.assignment)} records={len(self.records)} "
                    f"commits={len(self.commits)} errors={self.errors[-3:]} fatal={self.fatal}")


def test_kafka_python_range_group_resumes_after_restart(broker_factory, rng):  # noqa: C901
    seed = rng.seed_value
    nparts, per_part = 6, 60
    b = broker_factory(shards=2, extra_args=delay_args(500))
    topic = unique_topic("kprange")
    group = unique_group("kprange")
    ctx = f"(seed={seed}, topic={topic}, group={group})"
    create_topic(b.bootstrap, topic, nparts)
    old = produce(b.bootstrap, topic, [(None, f"a-{p}-{i}-{rng.getrandbits(32):x}", p)
                                       for i in range(per_part) for p in range(nparts)])
    keys = [(topic, p) for p in range(nparts)]
    members = [KPMember(f"kp{i}", b.bootstrap, group, topic) for i in range(2)]
    state = lambda: " | ".join(m.summary() for m in members)  # noqa: E731
    for m in members:
        m.start()
    try:
        range_split = sorted([frozenset({0, 1, 2}), frozenset({3, 4, 5})], key=sorted)

        def split():
            return sorted((m.snapshot()[1] for m in members), key=sorted) == range_split
        wait_state(split, 60, f"the range split 0-2 / 3-5 {ctx}", state)

        def received():
            return {(topic, p, o) for m in members for _, p, o, _ in m.snapshot()[0]}
        wait_state(lambda: set(old) <= received(), 60, f"all {len(old)} records consumed {ctx}", state)
        wait_state(lambda: committed_offsets(b.bootstrap, group, keys) == {k: per_part for k in keys}, 60,
                   f"offset {per_part} committed on every partition {ctx}", state)
        for m in members:
            for _, p, o, v in m.snapshot()[0]:
                assert old[(topic, p, o)] == v, f"{m.name} got {p}/{o}={v!r}, produced {old[(topic, p, o)]!r} {ctx}"

        restart_began = time.monotonic()
        b.restart()
        restarted = time.monotonic()

        # Both members are members again: each committed successfully after the restart, and the
        # assignment is the range split again.
        def rejoined():
            return split() and all(any(t0 > restarted for t0, _ in m.snapshot()[2]) for m in members)
        wait_state(rejoined, 60, f"both members committing again after the restart {ctx}", state)

        new = produce(b.bootstrap, topic, [(None, f"b-{p}-{i}-{rng.getrandbits(32):x}", p)
                                           for i in range(10) for p in range(nparts)])
        wait_state(lambda: set(new) <= received(), 60, f"the {len(new)} records produced after the restart {ctx}",
                   state)
        wait_state(lambda: committed_offsets(b.bootstrap, group, keys) == {k: per_part + 10 for k in keys}, 60,
                   f"offset {per_part + 10} committed on every partition {ctx}", state)
    finally:
        for m in members:
            m.stop_ev.set()
        for m in members:
            m.join(30)
    for m in members:
        assert not m.is_alive() and m.fatal is None, m.summary()

    after = {}
    for m in members:
        records, assignment, _ = m.snapshot()
        for ts, p, o, v in records:
            if ts <= restart_began:
                continue
            assert o >= per_part, \
                f"{m.name} got {p}/{o} again after the restart, below the committed offset {per_part} {ctx}"
            assert p in assignment, f"{m.name} got {p}/{o} but owns {sorted(assignment)} {ctx}"
            assert new[(topic, p, o)] == v, f"{m.name} got {p}/{o}={v!r}, produced {new[(topic, p, o)]!r} {ctx}"
            assert (p, o) not in after, f"{p}/{o} delivered twice after the restart ({after[(p, o)]}, {m.name}) {ctx}"
            after[(p, o)] = m.name
    assert len(after) == len(new), ctx


# ============================================================================= 4. static membership
def test_static_member_rejoins_without_rebalance(broker_factory, workers, rng):  # noqa: C901
    seed = rng.seed_value
    nparts = 6
    session_ms = 10000
    b = broker_factory(shards=2, extra_args=delay_args(0))
    topic = unique_topic("static")
    group = unique_group("static")
    ctx = f"(seed={seed}, topic={topic}, group={group})"
    create_topic(b.bootstrap, topic, nparts)
    all_parts = frozenset((topic, p) for p in range(nparts))

    def batch(tag, n):
        return produce(b.bootstrap, topic, [(None, f"{tag}-{i}-{rng.getrandbits(32):x}", i % nparts) for i in range(n)])

    produced = batch("s0", 30)  # consumed by whoever joins first
    conf = {"partition.assignment.strategy": "range", "session.timeout.ms": session_ms, "heartbeat.interval.ms": 500}
    wa = workers.start("inst-a", b.bootstrap, group, [topic], {**conf, "group.instance.id": "inst-a"})
    wb = workers.start("inst-b", b.bootstrap, group, [topic], {**conf, "group.instance.id": "inst-b"})
    state = state_of([wa, wb])

    def stable(x, y):
        ax, ay = x.log.assignment(), y.log.assignment()
        return len(ax) == 3 and len(ay) == 3 and ax | ay == all_parts and x.log.member_id() and y.log.member_id()
    wait_state(lambda: stable(wa, wb), 60, f"inst-a and inst-b owning 3 partitions each {ctx}", state)
    a_parts, b_parts = wa.log.assignment(), wb.log.assignment()
    processed = lambda ws: {where for w in ws for _, where, _ in w.log.processed()}  # noqa: E731

    def owners_processed(batch_keys, pairs):
        for w, parts in pairs:
            got = sorted(where for _, where, _ in w.log.processed() if where in batch_keys)
            want = sorted(k for k in batch_keys if k[:2] in parts)
            assert got == want, f"{w.name} processed {got[:8]}... of a batch, expected {want[:8]}... {ctx}"

    # A batch produced once the group is stable: each member processes (and commits) its share.
    first = batch("s1", 60)
    produced.update(first)
    wait_state(lambda: set(produced) <= processed([wa, wb]), 60, f"the first batches processed {ctx}", state)
    owners_processed(first, ((wa, a_parts), (wb, b_parts)))
    a_member, b_member = wa.log.member_id(), wb.log.member_id()
    b_events = wb.log.events()
    a_admin = admin(b.bootstrap)

    def describe():
        return a_admin.describe_consumer_groups([group], request_timeout=10)[group].result(timeout=ADMIN_TIMEOUT)

    def members_of(d):
        return {(m.group_instance_id, m.member_id): frozenset((tp.topic, tp.partition)
                                                              for tp in m.assignment.topic_partitions)
                for m in d.members}
    d = describe()
    assert d.state == ConsumerGroupState.STABLE, f"state {d.state} {ctx}"
    assert members_of(d) == {("inst-a", a_member): a_parts, ("inst-b", b_member): b_parts}, \
        f"DescribeGroups members {members_of(d)} {ctx}"

    # inst-a dies without leaving and comes back (new process, same group.instance.id) well within
    # the session timeout.
    wa2 = workers.start("inst-a-again", b.bootstrap, group, [topic], {**conf, "group.instance.id": "inst-a"},
                        gated=True)
    wait_until(wa2.ready, timeout=60, desc="the replacement process to start up")
    wa.kill()
    killed = time.monotonic()
    wa2.go.set()
    state = state_of([wa, wa2, wb])
    wait_state(lambda: wa2.log.assignment() == a_parts and wa2.log.member_id(),
               killed + session_ms / 1000.0 - time.monotonic(),
               f"the restarted inst-a getting its partitions {sorted(a_parts)} back within the session timeout {ctx}",
               state)
    assert wa2.log.member_id() != a_member, f"the rejoined static member kept member id {a_member} {ctx}"

    before = set(produced)
    second = batch("s2", 60)
    produced.update(second)
    wait_state(lambda: set(second) <= processed([wa2, wb]), 30, f"the second batch processed {ctx}", state)
    owners_processed(second, ((wa2, a_parts), (wb, b_parts)))
    # It resumed from inst-a's committed offsets (it is past them now, having processed the second
    # batch): at most inst-a's one uncommitted record was processed again.
    a_dangling = {where for where, outcome in wa.log.outcomes() if outcome is None}
    a_failed = {where for where, _ in wa.log.failed()}
    again = {where for _, where, _ in wa2.log.processed() if where in before}
    assert again <= a_dangling | a_failed and len(a_dangling) <= 1, \
        f"the rejoined inst-a processed {sorted(again)} of the earlier batches again (uncommitted: {a_dangling}, " \
        f"failed commits: {sorted(a_failed)}) {ctx}"
    assert any(where[:2] in a_parts for where in wa.log.committed()), f"inst-a never committed {ctx}"

    def b_untouched():
        return wb.log.events() == b_events and wb.log.assignment() == b_parts
    assert b_untouched(), f"inst-b saw a rebalance: events {wb.log.events()[len(b_events):]} {ctx}"
    d = describe()
    assert d.state == ConsumerGroupState.STABLE, f"state {d.state} {ctx}"
    assert members_of(d) == {("inst-a", wa2.log.member_id()): a_parts, ("inst-b", b_member): b_parts}, \
        f"DescribeGroups members {members_of(d)} {ctx}"

    # The old member's session must not expire later and rebalance the group: watch until well past
    # the session timeout of the kill.
    remaining = killed + session_ms / 1000.0 + 3.0 - time.monotonic()
    if remaining > 0:
        hold_steady(remaining, lambda: b_untouched() and wa2.log.assignment() == a_parts,
                    f"a rebalance after the static member came back: {state()} {ctx}")
    third = batch("s3", 60)
    wait_state(lambda: set(third) <= processed([wa2, wb]), 30, f"the third batch processed {ctx}", state)
    owners_processed(third, ((wa2, a_parts), (wb, b_parts)))
    assert b_untouched(), f"inst-b saw a rebalance: events {wb.log.events()[len(b_events):]} {ctx}"
    assert len(members_of(describe())) == 2, ctx
    wa2.shutdown()
    wb.shutdown()


# ============================================================================= in-process group driving
def drive(consumers, until, timeout, desc, seen=None):
    """Poll every consumer in turn (records go to `seen` as (consumer index, topic, partition, offset, value))
    and commit each one's positions whenever they moved, until until() is true or the deadline passes."""
    deadline = time.monotonic() + timeout
    last = [None] * len(consumers)
    errors = []
    while True:
        for i, c in enumerate(consumers):
            m = c.poll(0.05)
            if m is not None:
                if m.error() is None:
                    if seen is not None:
                        seen.append((i, m.topic(), m.partition(), m.offset(), m.value().decode()))
                else:
                    errors.append(m.error())
            try:
                pos = [tp for tp in c.position(c.assignment()) if tp.offset >= 0]
                key = sorted((tp.topic, tp.partition, tp.offset) for tp in pos)
                if pos and key != last[i]:
                    c.commit(offsets=pos, asynchronous=False)
                    last[i] = key
            except KafkaException as e:
                errors.append(e.args[0])
        try:
            if until():
                return
        except Exception as e:  # noqa: BLE001 - e.g. an OffsetFetch while the coordinator loads: poll on
            errors.append(e)
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {desc}; assignments "
                                 f"{[sorted((tp.topic, tp.partition) for tp in c.assignment()) for c in consumers]}; "
                                 f"last errors {errors[-5:]}")


def group_consumer(bootstrap, group, name, **extra):
    return consumer(bootstrap, **{"group.id": group, "client.id": name, "session.timeout.ms": 6000,
                                  "heartbeat.interval.ms": 500, "partition.assignment.strategy": "range", **extra})


# ============================================================================= 5. coordinator routing
def test_group_coordinator_on_other_shard(broker_factory, monkeypatch, rng):
    seed = rng.seed_value
    monkeypatch.setenv("RUST_LOG", "info,spate::server::handlers=debug")
    b = broker_factory(shards=2, extra_args=delay_args(0))
    groups = {0: group_on_shard(rng, "route", 0), 1: group_on_shard(rng, "route", 1)}
    ctx = f"(seed={seed}, groups={groups})"
    for shard, group in groups.items():
        topic = unique_topic(f"route{shard}")
        create_topic(b.bootstrap, topic, 2)
        produced = produce(b.bootstrap, topic, [(None, f"r{shard}-{i}", i % 2) for i in range(40)])
        c = group_consumer(b.bootstrap, group, f"route{shard}")
        try:
            c.subscribe([topic])
            seen = []
            drive([c], lambda: {(t, p, o) for _, t, p, o, _ in seen} >= set(produced), 60,
                  f"group {group} consuming {topic} {ctx}", seen)
            for _, t, p, o, v in seen:
                assert produced[(t, p, o)] == v, ctx
            ends = end_offsets(produced)
            drive([c], lambda: {(tp.topic, tp.partition): tp.offset
                                for tp in c.committed([TopicPartition(t, p) for t, p in ends], timeout=10)} == ends,
                  30, f"group {group} committing the partition ends {ctx}")
        finally:
            c.close()

    # Every new connection lands on a shard the kernel picks (SO_REUSEPORT), so keep making group
    # requests (OffsetFetch) on fresh connections until one is routed across shards.
    def crossed():
        for group in groups.values():
            a = admin(b.bootstrap)
            a.list_consumer_group_offsets([ConsumerGroupTopicPartitions(group)],
                                          request_timeout=10)[group].result(timeout=ADMIN_TIMEOUT)
        return any(int(c) != int(s) for _, _, c, s in GROUP_REQUEST_RE.findall(b.log_text()))
    wait_until(crossed, timeout=60, desc=f"a group request from a connection on another shard than the "
                                         f"coordinator's {ctx}")

    log = b.log_text()
    lines = GROUP_REQUEST_RE.findall(log)
    for shard, group in groups.items():
        mine = [(api, int(c), int(s)) for api, g, c, s in lines if g == group]
        apis = {api for api, _, _ in mine}
        for api in ("JoinGroup", "SyncGroup", "OffsetCommit", "OffsetFetch", "LeaveGroup"):
            assert api in apis, f"no '{api}' group request line for {group}: {sorted(apis)} {ctx}"
        wrong = [x for x in mine if x[2] != shard or x[1] not in (0, 1)]
        assert not wrong, f"{group} (coordinator shard {shard}) routed elsewhere: {wrong[:5]} {ctx}"
        created = [int(s) for g, s in GROUP_CREATED_RE.findall(log) if g == group]
        assert created == [shard], f"'group created' lines for {group}: shards {created}, expected [{shard}] {ctx}"


# ============================================================================= 6. admin APIs
def _admin_result_error(fut):
    """The error code of a per-group admin future (NO_ERROR when it succeeded)."""
    try:
        fut.result(timeout=ADMIN_TIMEOUT)
    except KafkaException as e:
        return error_code(e)
    return KafkaError.NO_ERROR


def _offset_delete(ka, group, topic, partition):
    """OffsetDelete of one partition (kafka-python: confluent-kafka's AdminClient has no OffsetDelete)
    -> the error code: the request's top-level one, else the partition's."""
    try:
        res = ka.delete_group_offsets(group, [KTopicPartition(topic, partition)])
    except KPKafkaError as e:
        return e.errno
    assert list(res) == [KTopicPartition(topic, partition)], f"OffsetDelete answered {res}"
    return res[KTopicPartition(topic, partition)].errno


def test_group_admin_apis(broker_factory, rng):  # noqa: C901
    seed = rng.seed_value
    b = broker_factory(shards=2, extra_args=delay_args(0))
    nparts, per_part = 3, 10
    topic = unique_topic("gadm")
    create_topic(b.bootstrap, topic, nparts)
    produced = produce(b.bootstrap, topic, [(None, f"v{i}", i % nparts) for i in range(nparts * per_part)])
    keys = [(topic, p) for p in range(nparts)]
    g1 = group_on_shard(rng, "gadm-live", rng.randrange(2))
    g2 = group_on_shard(rng, "gadm-simple", rng.randrange(2))
    g_never = unique_group("gadm-never")
    ctx = f"(seed={seed}, topic={topic}, groups={g1},{g2})"
    a = admin(b.bootstrap)
    ka = KafkaAdminClient(bootstrap_servers=b.bootstrap, **KP_TIMEOUTS)

    def describe(g):
        return a.describe_consumer_groups([g], request_timeout=10)[g].result(timeout=ADMIN_TIMEOUT)

    def listed():
        res = a.list_consumer_groups(request_timeout=10).result(timeout=ADMIN_TIMEOUT)
        assert not res.errors, res.errors
        return {g.group_id: g for g in res.valid}

    def offsets(g, parts=None):
        req = ConsumerGroupTopicPartitions(g, None if parts is None else [TopicPartition(t, p) for t, p in parts])
        res = a.list_consumer_group_offsets([req], request_timeout=10)[g].result(timeout=ADMIN_TIMEOUT)
        return {(tp.topic, tp.partition): tp.offset for tp in res.topic_partitions}

    # g2: a simple (member-less) group with standalone commits.
    g2_offsets = {(topic, 0): 3, (topic, 2): 7}
    commit_offsets(b.bootstrap, g2, {k: (v, "") for k, v in g2_offsets.items()})

    # g1: two live members consume everything and commit.
    cs = [group_consumer(b.bootstrap, g1, f"gadm{i}") for i in range(2)]
    closed = False
    try:
        for c in cs:
            c.subscribe([topic])
        seen = []

        def settled():
            parts = [frozenset((tp.topic, tp.partition) for tp in c.assignment()) for c in cs]
            return (all(parts) and sum(map(len, parts)) == nparts and frozenset().union(*parts) == frozenset(keys)
                    and {(t, p, o) for _, t, p, o, _ in seen} >= set(produced)
                    and offsets(g1, keys) == {k: per_part for k in keys})
        drive(cs, settled, 60, f"group {g1}: two members consuming and committing everything {ctx}", seen)

        groups = wait_until(lambda: (lambda gs: gs if {g1, g2} <= set(gs) else None)(listed()), timeout=15,
                            desc=f"ListGroups showing {g1} and {g2} {ctx}")
        assert groups[g1].state == ConsumerGroupState.STABLE, f"{g1} listed as {groups[g1].state} {ctx}"
        assert not groups[g1].is_simple_consumer_group, ctx
        assert groups[g2].state == ConsumerGroupState.EMPTY, f"{g2} listed as {groups[g2].state} {ctx}"
        assert groups[g2].is_simple_consumer_group, f"{g2} (no members ever) not listed as simple {ctx}"

        d = describe(g1)
        assert d.state == ConsumerGroupState.STABLE, f"{g1} described as {d.state} {ctx}"
        assert d.partition_assignor == "range", f"{g1} protocol {d.partition_assignor!r} {ctx}"
        got_members = {m.member_id: (m.client_id, frozenset((tp.topic, tp.partition)
                                                             for tp in m.assignment.topic_partitions))
                       for m in d.members}
        want_members = {c.memberid(): (f"gadm{i}", frozenset((tp.topic, tp.partition) for tp in c.assignment()))
                        for i, c in enumerate(cs)}
        assert got_members == want_members, f"DescribeGroups members {got_members} != {want_members} {ctx}"

        # A group with members can neither be deleted nor lose offsets of a topic it is subscribed to.
        code = _admin_result_error(a.delete_consumer_groups([g1], request_timeout=10)[g1])
        assert code == KafkaError.NON_EMPTY_GROUP, f"DeleteGroups of a live group: {KafkaError(code)} {ctx}"
        code = _offset_delete(ka, g1, topic, 0)
        assert code == KafkaError.GROUP_SUBSCRIBED_TO_TOPIC, \
            f"OffsetDelete on a subscribed topic of a live group: {KafkaError(code)} {ctx}"
        assert offsets(g1, keys) == {k: per_part for k in keys}, ctx

        for c in cs:
            c.close()
        closed = True
    finally:
        if not closed:
            for c in cs:
                c.close()

    d = wait_until(lambda: (lambda d: d if d.state == ConsumerGroupState.EMPTY else None)(describe(g1)),
                   timeout=15, desc=f"{g1} Empty after its members closed {ctx}")
    assert not d.members, f"{g1} Empty but members {d.members} {ctx}"

    # OffsetFetch: all of a group's offsets, chosen partitions (-1001 where none), and several groups
    # in one request (kafka-python batches them into one OffsetFetch v8 when the broker has it).
    assert offsets(g1) == {k: per_part for k in keys}, ctx
    assert offsets(g2) == g2_offsets, ctx
    assert offsets(g2, keys) == {**{k: OFFSET_INVALID for k in keys}, **g2_offsets}, ctx
    both = ka.list_group_offsets([g1, g2])
    both = {g: {(tp.topic, tp.partition): om.offset for tp, om in offs.items()} for g, offs in both.items()}
    assert both == {g1: {k: per_part for k in keys}, g2: g2_offsets}, f"batched OffsetFetch: {both} {ctx}"

    # OffsetDelete on the now empty group removes exactly that partition's offset.
    code = _offset_delete(ka, g1, topic, 1)
    assert code == KafkaError.NO_ERROR, f"OffsetDelete on an empty group: {KafkaError(code)} {ctx}"
    assert offsets(g1) == {(topic, 0): per_part, (topic, 2): per_part}, ctx
    assert committed_offsets(b.bootstrap, g1, keys) == {(topic, 0): per_part, (topic, 1): OFFSET_INVALID,
                                                        (topic, 2): per_part}, ctx

    # DeleteGroups: an empty group goes, with its offsets; an unknown one is GROUP_ID_NOT_FOUND.
    code = _admin_result_error(a.delete_consumer_groups([g1], request_timeout=10)[g1])
    assert code == KafkaError.NO_ERROR, f"DeleteGroups of an empty group: {KafkaError(code)} {ctx}"
    assert committed_offsets(b.bootstrap, g1, keys) == {k: OFFSET_INVALID for k in keys}, ctx
    wait_until(lambda: g1 not in listed(), timeout=15, desc=f"{g1} gone from ListGroups {ctx}")
    code = _admin_result_error(a.delete_consumer_groups([g_never], request_timeout=10)[g_never])
    assert code == KafkaError.GROUP_ID_NOT_FOUND, f"DeleteGroups of an unknown group: {KafkaError(code)} {ctx}"
    # The other group is untouched.
    assert g2 in listed(), ctx
    assert committed_offsets(b.bootstrap, g2, keys) == {**{k: OFFSET_INVALID for k in keys}, **g2_offsets}, ctx
    ka.close()
