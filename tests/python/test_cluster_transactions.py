"""Transactions in a cluster: three real brokers (`--shards 1`), librdkafka (confluent-kafka)
transactional producers and read_committed consumers, with the transaction coordinator, the
partitions' leaders and the group coordinator on different brokers, so markers go from broker
to broker (WriteTxnMarkers) and transactional produces are verified with a coordinator on
another broker (AddPartitionsToTxn v4, verify only). Then kill -9 of the coordinator's broker
in the middle of a stream of transactions, checked as Jepsen would: every committed
transaction whole and once, no aborted record visible, none partly visible.

Fails on a broker without cluster transactions: InitProducerId with a transactional id was
refused (UNSUPPORTED_VERSION) there.
"""

import time

from confluent_kafka import KafkaException, Producer, TopicPartition

from kafkautil import COMMON, consumer, unique_topic, wait_until
from test_cluster import FAST, cluster_factory, create  # noqa: F401 - the fixture is used by name
from test_replication import _find_coordinator, isr
from test_transactions import read_all

PARTITIONS = 6


def txn_producer(bootstrap, txn_id):
    return Producer({"bootstrap.servers": bootstrap, **COMMON, "transactional.id": txn_id,
                     "linger.ms": 2, "transaction.timeout.ms": 30000})


def read(bootstrap, topic, isolation, expected, partitions=PARTITIONS):
    """{partition: [values]} from the beginning: until `expected` records came, then a settle
    time to catch any extra (see test_transactions.read_all)."""
    got = read_all(bootstrap, topic, isolation, expected, timeout=60.0, settle=2.0, partitions=partitions)
    return {q: [v.decode() for v in got.get(q, [])] for q in range(partitions)}


def coordinator_of(c, txn_id):
    node = next(i for i, b in c.nodes.items() if b.alive())
    error, coord = wait_until(
        lambda: (lambda r: r if r[0] == 0 else None)(_find_coordinator(c.nodes[node].port, txn_id, 1)),
        timeout=30, interval=0.3, desc=f"the coordinator of {txn_id}")
    return coord


def test_transactions_span_brokers(cluster_factory):
    c = cluster_factory()
    t = unique_topic("ctx")
    create(c.bootstrap, t, PARTITIONS, rf=3, config={"min.insync.replicas": "2"})
    wait_until(lambda: all(len(v) == 3 for v in isr(c, t).values()) and len(isr(c, t)) == PARTITIONS,
               timeout=60, desc="full ISRs")
    md = c.metadata(1).topics[t]
    leaders = {p: m.leader for p, m in md.partitions.items()}
    assert len(set(leaders.values())) >= 2, f"leaders all on one broker: {leaders}"
    txn_id = unique_topic("tx")
    p = txn_producer(c.bootstrap, txn_id)
    p.init_transactions(60)
    coord = coordinator_of(c, txn_id)
    assert any(b != coord for b in leaders.values()), "every partition led by the coordinator"

    committed = {q: [] for q in range(PARTITIONS)}
    for i in range(12):
        p.begin_transaction()
        for q in range(PARTITIONS):
            for j in range(3):
                p.produce(t, value=f"{i}-{q}-{j}".encode(), partition=q)
        if i % 3 == 2:
            # Written first (librdkafka drops what it has not sent at an abort), so the log
            # holds aborted records that read_committed must skip.
            assert p.flush(30) == 0
            p.abort_transaction(30)
        else:
            p.commit_transaction(30)
            for q in range(PARTITIONS):
                committed[q] += [f"{i}-{q}-{j}" for j in range(3)]
    got = read(c.bootstrap, t, "read_committed", sum(len(v) for v in committed.values()))
    assert got == committed, "read_committed sees exactly the committed records, in order"
    everything = read(c.bootstrap, t, "read_uncommitted", 12 * PARTITIONS * 3)
    assert sum(len(v) for v in everything.values()) == 12 * PARTITIONS * 3

    # Consume-transform-produce: the group's offsets commit with the transaction, through the
    # group coordinator (the leader of the group's __consumer_offsets partition).
    out = unique_topic("ctxout")
    create(c.bootstrap, out, 2, rf=3, config={"min.insync.replicas": "2"})
    group = unique_topic("ctxgroup")
    cons = consumer(c.bootstrap, **{"group.id": group, "isolation.level": "read_committed",
                                    "enable.auto.commit": False})
    cons.subscribe([t])
    n = sum(len(v) for v in committed.values())
    seen = 0
    deadline = time.monotonic() + 90
    while seen < n:
        assert time.monotonic() < deadline, f"transformed {seen}/{n}"
        msgs = [m for m in cons.consume(20, 1.0) if m.error() is None]
        if not msgs:
            continue
        p.begin_transaction()
        for m in msgs:
            p.produce(out, value=b"out-" + m.value(), partition=m.partition() % 2)
        positions = {}
        for m in msgs:
            positions[(m.topic(), m.partition())] = m.offset() + 1
        p.send_offsets_to_transaction([TopicPartition(tp[0], tp[1], o) for tp, o in positions.items()],
                                      cons.consumer_group_metadata(), 30)
        p.commit_transaction(30)
        seen += len(msgs)
    cons.close()
    outs = read(c.bootstrap, out, "read_committed", n, partitions=2)
    assert sorted(v for vs in outs.values() for v in vs) == sorted(
        f"out-{v}" for vs in committed.values() for v in vs)
    check = consumer(c.bootstrap, **{"group.id": group})
    try:
        got = check.committed([TopicPartition(t, q) for q in range(PARTITIONS)], timeout=20)
        ends = {q: len(v) for q, v in everything.items()}
        # Committed offsets point past the last committed record read (aborted records and
        # markers between are skipped by a read_committed consumer).
        assert all(tp.offset > 0 and tp.offset <= ends[tp.partition] + 2 * 12 for tp in got), got
    finally:
        check.close()


def test_kill_the_transaction_coordinator_in_a_stream_of_transactions(cluster_factory):
    c = cluster_factory()
    t = unique_topic("ctxkill")
    create(c.bootstrap, t, PARTITIONS, rf=3, config={"min.insync.replicas": "2"})
    wait_until(lambda: all(len(v) == 3 for v in isr(c, t).values()) and len(isr(c, t)) == PARTITIONS,
               timeout=60, desc="full ISRs")
    txn_id = unique_topic("txk")
    p = txn_producer(c.bootstrap, txn_id)
    p.init_transactions(60)
    coord = coordinator_of(c, txn_id)

    committed, aborted, unknown = set(), set(), set()
    killed_at = None
    i = 0
    deadline = time.monotonic() + 150
    while i < 40 or killed_at is None:
        assert time.monotonic() < deadline, f"{i} transactions, killed at {killed_at}"
        if i == 10 and killed_at is None:
            # kill -9 of the coordinator's broker with a transaction open.
            p.begin_transaction()
            for q in range(PARTITIONS):
                p.produce(t, value=f"{i}-{q}".encode(), partition=q)
            p.flush(30)
            c.nodes[coord].kill()
            killed_at = i
        else:
            p.begin_transaction()
            for q in range(PARTITIONS):
                p.produce(t, value=f"{i}-{q}".encode(), partition=q)
        try:
            p.commit_transaction(60)
            committed.add(i)
        except KafkaException as e:
            err = e.args[0]
            if err.txn_requires_abort():
                try:
                    p.abort_transaction(60)
                    aborted.add(i)
                except KafkaException:
                    unknown.add(i)
                    p = txn_producer(c.bootstrap, txn_id)
                    p.init_transactions(60)
            elif err.retriable():
                unknown.add(i)
                p = txn_producer(c.bootstrap, txn_id)
                p.init_transactions(60)
            else:
                unknown.add(i)
                p = txn_producer(c.bootstrap, txn_id)
                p.init_transactions(60)
        i += 1
    assert len(committed) >= 30, (sorted(aborted), sorted(unknown))
    assert coordinator_of(c, txn_id) != coord, "another broker coordinates the id after the kill"
    print(f"committed {len(committed)}, aborted {sorted(aborted)}, unknown {sorted(unknown)}")
    c.nodes[coord].start()
    c.wait_brokers(c.ids)
    got = read(c.bootstrap, t, "read_committed", len(committed) * PARTITIONS)
    anomalies = []
    txns_seen = {}
    for q, values in got.items():
        if len(values) != len(set(values)):
            anomalies.append(f"p{q}: duplicates")
        for v in values:
            txn = int(v.split("-")[0])
            txns_seen.setdefault(txn, set()).add(q)
    for txn in committed:
        if txns_seen.get(txn) != set(range(PARTITIONS)):
            anomalies.append(f"committed transaction {txn} seen on {sorted(txns_seen.get(txn, ()))}")
    for txn in aborted:
        if txn in txns_seen:
            anomalies.append(f"aborted transaction {txn} visible on {sorted(txns_seen[txn])}")
    for txn in unknown:
        if txn in txns_seen and txns_seen[txn] != set(range(PARTITIONS)):
            anomalies.append(f"transaction {txn} partly visible: {sorted(txns_seen[txn])}")
    assert not anomalies, anomalies[:20]
    assert coordinator_of(c, txn_id) in c.ids
