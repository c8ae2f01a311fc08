"""Transactions (KIP-98) with librdkafka (confluent-kafka): the transaction coordinator, the
commit/abort markers, the last stable offset and read_committed consumers.

Each test fails on a broker without transactions: InitProducerId with a transactional id is
refused there, and a read_committed consumer would see aborted records.
"""

import time
from pathlib import Path

import pytest
from confluent_kafka import KafkaError, KafkaException, Producer, TopicPartition, OFFSET_BEGINNING

from kafkautil import COMMON, by_partition, consumer, create_topic, unique_topic, wait_until

PARTITIONS = 3


def txn_producer(bootstrap, txn_id, **extra):
    conf = {
        "bootstrap.servers": bootstrap,
        **COMMON,
        "transactional.id": txn_id,
        "linger.ms": 2,
    }
    conf.update(extra)
    return Producer(conf)


def read_all(bootstrap, topic, isolation, expected, timeout=30.0, settle=1.0, partitions=PARTITIONS):
    """{partition: [values in offset order]} read from the beginning with `isolation`; reads until
    `expected` records arrived, then `settle` seconds more to catch extras."""
    c = consumer(bootstrap, **{"isolation.level": isolation})
    try:
        c.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in range(partitions)])
        msgs = []
        deadline = time.monotonic() + timeout
        settle_until = None
        while True:
            now = time.monotonic()
            if settle_until is None and len(msgs) >= expected:
                settle_until = now + settle
            if settle_until is not None and now >= settle_until:
                break
            assert now < deadline, f"{isolation}: read {len(msgs)}/{expected} records of {topic}"
            m = c.poll(0.1)
            if m is None or m.error() is not None:
                continue
            msgs.append(m)
        return {p: [m.value() for m in ms] for (_, p), ms in by_partition(msgs).items()}
    finally:
        c.close()


def committed_end(bootstrap, topic, partition):
    """The high watermark of a partition as a read_committed consumer sees it (the LSO)."""
    c = consumer(bootstrap, **{"isolation.level": "read_committed"})
    try:
        return c.get_watermark_offsets(TopicPartition(topic, partition), timeout=10)[1]
    finally:
        c.close()


def test_commit_and_abort_interleaved_on_the_same_partitions(broker, rng):
    topic = unique_topic("txmix")
    create_topic(broker.bootstrap, topic, PARTITIONS)
    p = txn_producer(broker.bootstrap, unique_topic("txid"))
    p.init_transactions(30)
    committed = {q: [] for q in range(PARTITIONS)}
    everything = {q: [] for q in range(PARTITIONS)}
    outcomes = []
    for t in range(24):
        commit = rng.random() < 0.5
        outcomes.append(commit)
        p.begin_transaction()
        for i in range(rng.randint(1, 8)):
            q = rng.randrange(PARTITIONS)
            v = f"t{t}-{i}-{'c' if commit else 'a'}".encode()
            p.produce(topic, value=v, partition=q)
            everything[q].append(v)
            if commit:
                committed[q].append(v)
        # librdkafka drops unsent records on abort: send them first, so the log holds them.
        assert p.flush(30) == 0
        if commit:
            p.commit_transaction(30)
        else:
            p.abort_transaction(30)
    assert any(outcomes) and not all(outcomes), f"seed {rng.seed_value}: want both outcomes"
    n_all = sum(len(v) for v in everything.values())
    n_committed = sum(len(v) for v in committed.values())
    uncommitted = read_all(broker.bootstrap, topic, "read_uncommitted", n_all)
    assert {q: uncommitted.get(q, []) for q in range(PARTITIONS)} == everything, (
        f"seed {rng.seed_value}: read_uncommitted sees every record once, in order, no markers")
    got = read_all(broker.bootstrap, topic, "read_committed", n_committed)
    assert {q: got.get(q, []) for q in range(PARTITIONS)} == committed, (
        f"seed {rng.seed_value}: read_committed sees exactly the committed records, in order")
    # Every transaction left one marker in each partition it wrote to: the offsets have gaps.
    for q in range(PARTITIONS):
        assert committed_end(broker.bootstrap, topic, q) > len(everything[q]), f"seed {rng.seed_value}"


def test_a_second_producer_with_the_same_id_fences_the_first(broker):
    topic = unique_topic("txfence")
    create_topic(broker.bootstrap, topic, PARTITIONS)
    txn_id = unique_topic("txid")
    first = txn_producer(broker.bootstrap, txn_id)
    first.init_transactions(30)
    first.begin_transaction()
    for i in range(5):
        first.produce(topic, value=f"zombie-{i}".encode(), partition=i % PARTITIONS)
    assert first.flush(30) == 0
    # The new producer's InitProducerId aborts the open transaction and bumps the epoch.
    second = txn_producer(broker.bootstrap, txn_id)
    second.init_transactions(30)
    with pytest.raises(KafkaException) as e:
        first.commit_transaction(30)
    err = e.value.args[0]
    assert err.fatal() or err.code() in (KafkaError._FENCED, KafkaError.PRODUCER_FENCED,
                                         KafkaError.INVALID_PRODUCER_EPOCH), err
    second.begin_transaction()
    for i in range(6):
        second.produce(topic, value=f"live-{i}".encode(), partition=i % PARTITIONS)
    second.commit_transaction(30)
    got = read_all(broker.bootstrap, topic, "read_committed", 6)
    values = sorted(v for vs in got.values() for v in vs)
    assert values == sorted(f"live-{i}".encode() for i in range(6)), values
    everything = read_all(broker.bootstrap, topic, "read_uncommitted", 11)
    assert sum(len(v) for v in everything.values()) == 11


def test_a_transaction_past_its_timeout_is_aborted_and_consumers_move_on(broker):
    topic = unique_topic("txtimeout")
    create_topic(broker.bootstrap, topic, 1)
    hung = txn_producer(broker.bootstrap, unique_topic("txhung"),
                        **{"transaction.timeout.ms": 3000, "message.timeout.ms": 3000,
                           "socket.timeout.ms": 3000})
    hung.init_transactions(30)
    hung.begin_transaction()
    hung.produce(topic, value=b"never-committed", partition=0)
    assert hung.flush(30) == 0
    other = txn_producer(broker.bootstrap, unique_topic("txok"))
    other.init_transactions(30)
    other.begin_transaction()
    other.produce(topic, value=b"committed", partition=0)
    other.commit_transaction(30)
    # While the hung transaction is open, the LSO stays at its first record.
    assert committed_end(broker.bootstrap, topic, 0) == 0
    # The coordinator aborts it after its timeout; the LSO passes both transactions.
    wait_until(lambda: committed_end(broker.bootstrap, topic, 0) >= 4, timeout=20,
               desc="the LSO to move past the timed-out transaction")
    got = read_all(broker.bootstrap, topic, "read_committed", 1, partitions=1)
    assert got == {0: [b"committed"]}


def test_a_timeout_above_the_broker_maximum_is_refused(broker_factory):
    b = broker_factory(extra_args=["--transaction-max-timeout-ms", "5000"])
    p = txn_producer(b.bootstrap, unique_topic("txmax"), **{"transaction.timeout.ms": 6000, "socket.timeout.ms": 5000})
    with pytest.raises(KafkaException) as e:
        p.init_transactions(20)
    assert e.value.args[0].code() == KafkaError.INVALID_TRANSACTION_TIMEOUT, e.value.args[0]


def test_committed_and_open_transactions_across_kill_9(broker_factory, rng):
    b = broker_factory(shards=2)
    topic = unique_topic("txcrash")
    create_topic(b.bootstrap, topic, PARTITIONS)
    txn_id = unique_topic("txid")
    p = txn_producer(b.bootstrap, txn_id, **{"transaction.timeout.ms": 60000})
    p.init_transactions(30)
    committed = {q: [] for q in range(PARTITIONS)}
    for t in range(6):
        p.begin_transaction()
        vals = [(rng.randrange(PARTITIONS), f"c{t}-{i}".encode()) for i in range(5)]
        for q, v in vals:
            p.produce(topic, value=v, partition=q)
        if t % 2 == 0:
            p.commit_transaction(30)
            for q, v in vals:
                committed[q].append(v)
        else:
            assert p.flush(30) == 0
            p.abort_transaction(30)
    # One transaction left open at the kill.
    p.begin_transaction()
    for i in range(4):
        p.produce(topic, value=f"open-{i}".encode(), partition=i % PARTITIONS)
    assert p.flush(30) == 0
    b.kill()
    b.start()
    # A new producer with the id fences the old one and aborts its open transaction.
    p2 = txn_producer(b.bootstrap, txn_id)
    p2.init_transactions(60)
    p2.begin_transaction()
    for q in range(PARTITIONS):
        v = f"after-{q}".encode()
        p2.produce(topic, value=v, partition=q)
        committed[q].append(v)
    p2.commit_transaction(30)
    n = sum(len(v) for v in committed.values())
    got = read_all(b.bootstrap, topic, "read_committed", n)
    assert {q: got.get(q, []) for q in range(PARTITIONS)} == committed, f"seed {rng.seed_value}"


def test_the_transaction_log_is_created_on_first_use(broker_factory):
    """A one-node broker creates __transaction_state at the first use of a transactional id, as
    Kafka does, and keeps it from then on; one that never sees a transaction has none."""
    b = broker_factory(shards=2)
    topic = unique_topic("txlazy")
    create_topic(b.bootstrap, topic, 1)
    plain = Producer({"bootstrap.servers": b.bootstrap, **COMMON, "enable.idempotence": True})
    plain.produce(topic, value=b"idempotent, not transactional")
    assert plain.flush(30) == 0
    txn_dirs = lambda: list(Path(b.data_dir).glob("__transaction_state-*"))  # noqa: E731
    assert txn_dirs() == []
    p = txn_producer(b.bootstrap, unique_topic("txlazy"))
    p.init_transactions(30)
    p.begin_transaction()
    p.produce(topic, value=b"in a transaction")
    p.commit_transaction(30)
    assert len(txn_dirs()) == 50
    b.stop()
    b.start()
    assert "partition opened topic=__transaction_state" in b.log_text()
    got = read_all(b.bootstrap, topic, "read_committed", 2, partitions=1)
    assert got[0] == [b"idempotent, not transactional", b"in a transaction"]


def test_an_abort_index_entry_lost_in_a_crash_is_restored_from_its_marker(broker_factory):
    """The aborted-transaction index entry is made durable after its abort marker; a power loss
    between the two keeps the marker and loses the entry. Simulated: kill -9, then the index
    files removed. At the next start the entries are rebuilt from the markers after the
    producer-state snapshot, so read_committed still skips the aborted records."""
    b = broker_factory(shards=1)
    topic = unique_topic("txidx")
    create_topic(b.bootstrap, topic, PARTITIONS)
    p = txn_producer(b.bootstrap, unique_topic("txidx"))
    p.init_transactions(30)
    committed = {q: [] for q in range(PARTITIONS)}
    for t in range(4):
        p.begin_transaction()
        for q in range(PARTITIONS):
            p.produce(topic, value=f"{t}-{q}".encode(), partition=q)
        if t % 2 == 0:
            p.commit_transaction(30)
            for q in range(PARTITIONS):
                committed[q].append(f"{t}-{q}".encode())
        else:
            assert p.flush(30) == 0
            p.abort_transaction(30)
    b.kill()
    removed = list(Path(b.data_dir).glob(f"{topic}-*/*.txnindex"))
    assert len(removed) == PARTITIONS, removed
    for f in removed:
        f.unlink()
    b.start()
    n = sum(len(v) for v in committed.values())
    got = read_all(b.bootstrap, topic, "read_committed", n)
    assert {q: got.get(q, []) for q in range(PARTITIONS)} == committed
    assert "aborted-transaction index entry restored" in b.log_text()


def ctp_clients(bootstrap, group, txn_id, topic_in):
    c = consumer(bootstrap, **{"group.id": group, "isolation.level": "read_committed",
                               "session.timeout.ms": 6000, "heartbeat.interval.ms": 500})
    c.subscribe([topic_in])
    p = txn_producer(bootstrap, txn_id)
    p.init_transactions(60)
    return c, p


def ctp_step(c, p, topic_out, max_records=7):
    """One consume-transform-produce transaction: returns the records it consumed (or [])."""
    msgs = [m for m in c.consume(max_records, 1.0) if m.error() is None]
    if not msgs:
        return [], None
    p.begin_transaction()
    for m in msgs:
        p.produce(topic_out, value=b"out-" + m.value(), partition=m.partition())
    positions = {}
    for m in msgs:
        positions[m.partition()] = m.offset() + 1
    offsets = [TopicPartition(m.topic(), q, o) for q, o in positions.items()]
    p.send_offsets_to_transaction(offsets, c.consumer_group_metadata(), 30)
    return msgs, positions


def test_consume_transform_produce_exactly_once_across_kill_9(broker_factory):
    b = broker_factory(shards=2)
    topic_in, topic_out = unique_topic("ctpin"), unique_topic("ctpout")
    create_topic(b.bootstrap, topic_in, 2)
    create_topic(b.bootstrap, topic_out, 2)
    n = 60
    plain = Producer({"bootstrap.servers": b.bootstrap, **COMMON, "acks": "all"})
    for i in range(n):
        plain.produce(topic_in, value=f"in-{i}".encode(), partition=i % 2)
    assert plain.flush(30) == 0
    group, txn_id = unique_topic("ctpgroup"), unique_topic("ctptx")
    c, p = ctp_clients(b.bootstrap, group, txn_id, topic_in)
    done = 0
    killed = False
    deadline = time.monotonic() + 90
    while done < n:
        assert time.monotonic() < deadline, f"processed {done}/{n}"
        msgs, _ = ctp_step(c, p, topic_out)
        if not msgs:
            continue
        if not killed and done >= n // 3:
            # kill -9 inside an open transaction (records and offsets sent, no commit).
            assert p.flush(30) == 0
            b.kill()
            b.start()
            killed = True
            c.close()
            # The new producer fences the old one and aborts its transaction; the new
            # consumer resumes from the offsets committed with the last transaction.
            c, p = ctp_clients(b.bootstrap, group, txn_id, topic_in)
            continue
        p.commit_transaction(30)
        done += len(msgs)
    c.close()
    got = read_all(b.bootstrap, topic_out, "read_committed", n, partitions=2)
    outs = sorted(v for vs in got.values() for v in vs)
    assert outs == sorted(f"out-in-{i}".encode() for i in range(n)), "each input exactly once"
    # The group's committed offsets are the input's ends.
    check = consumer(b.bootstrap, **{"group.id": group})
    try:
        committed = check.committed([TopicPartition(topic_in, q) for q in range(2)], timeout=10)
        assert [tp.offset for tp in committed] == [n // 2, n // 2], committed
    finally:
        check.close()


def test_operator_lists_describes_and_aborts_a_hanging_transaction(broker, spate_bin):
    import json
    import subprocess

    def spate(*args):
        r = subprocess.run([str(spate_bin), *args, "--bootstrap-server", broker.bootstrap, "--json"],
                           capture_output=True, text=True, timeout=60)
        assert r.returncode == 0, f"spate {' '.join(args)}: {r.stderr}"
        return json.loads(r.stdout)

    topic = unique_topic("txhang")
    create_topic(broker.bootstrap, topic, 1)
    txn_id = unique_topic("txhang")
    hung = txn_producer(broker.bootstrap, txn_id, **{"transaction.timeout.ms": 600000})
    hung.init_transactions(30)
    hung.begin_transaction()
    hung.produce(topic, value=b"hanging", partition=0)
    assert hung.flush(30) == 0
    listed = {t["transactional_id"]: t for t in spate("txn", "list")}
    assert listed[txn_id]["state"] == "Ongoing", listed
    [d] = spate("txn", "describe", txn_id)
    assert (d["state"], d["partitions"], d["timeout_ms"]) == ("Ongoing", [f"{topic}-0"], 600000), d
    assert committed_end(broker.bootstrap, topic, 0) == 0
    aborted = spate("txn", "abort", "--topic", topic, "--partition", "0")
    assert [(a["producer_id"], a["first_offset"]) for a in aborted] == [(listed[txn_id]["producer_id"], 0)]
    # The abort marker releases the partition's LSO; read_committed never sees the record.
    wait_until(lambda: committed_end(broker.bootstrap, topic, 0) == 2, timeout=10, desc="LSO past the abort")
    plain = Producer({"bootstrap.servers": broker.bootstrap, **COMMON, "acks": "all"})
    plain.produce(topic, value=b"after", partition=0)
    assert plain.flush(30) == 0
    got = read_all(broker.bootstrap, topic, "read_committed", 1, settle=1.0, partitions=1)
    assert got == {0: [b"after"]}, got


def test_jepsen_style_queue_with_kill_9(broker_factory, rng):  # noqa: C901
    """Transactional producers (committing and aborting), an idempotent plain producer and a
    read_committed consumer run while the broker is killed with SIGKILL and restarted. Then:
    no acknowledged write is lost, nothing is in the log twice, no aborted record is ever
    read, a transaction whose commit outcome the client could not learn is all or nothing,
    and no offset was seen holding two values."""
    import threading

    b = broker_factory(shards=2)
    topic = unique_topic("jepsen")
    parts = 4
    create_topic(b.bootstrap, topic, parts)
    seed = rng.seed_value
    lock = threading.Lock()
    committed, aborted, unknown, plain_acked = [], [], [], []  # lists of value lists
    stop = threading.Event()
    errors = []

    def txn_worker(w):
        r = __import__("random").Random(seed * 31 + w)
        txn_id = f"{topic}-tx{w}"
        p = None
        t = 0
        while not stop.is_set():
            values, commit = [], False
            try:
                if p is None:
                    p = txn_producer(b.bootstrap, txn_id, **{"transaction.timeout.ms": 10000,
                                                             "message.timeout.ms": 10000,
                                                             "socket.timeout.ms": 5000})
                    p.init_transactions(30)
                values = [f"w{w}-t{t}-{i}".encode() for i in range(r.randint(1, 5))]
                t += 1
                commit = r.random() < 0.6
                p.begin_transaction()
                for v in values:
                    p.produce(topic, value=v, partition=r.randrange(parts))
                if not commit:
                    p.flush(10)
                    p.abort_transaction(10)
                    with lock:
                        aborted.append(values)
                    continue
                try:
                    p.commit_transaction(10)
                except KafkaException:
                    with lock:
                        unknown.append(values)
                    raise
                with lock:
                    committed.append(values)
            except KafkaException:
                # Whatever was open is aborted by the next producer's InitProducerId (or
                # its timeout); a commit that raised is in `unknown`.
                if values and not commit:
                    with lock:
                        aborted.append(values)
                p = None
                time.sleep(0.2)
            except Exception as e:  # noqa: BLE001 - a worker's bug must fail the test
                with lock:
                    errors.append(f"worker {w}: {e!r}")
                return

    def plain_worker():
        p = Producer({"bootstrap.servers": b.bootstrap, **COMMON, "acks": "all",
                      "enable.idempotence": True, "message.timeout.ms": 20000})
        i = 0

        def on_delivery(err, msg):
            if err is None:
                with lock:
                    plain_acked.append([msg.value()])

        while not stop.is_set():
            p.produce(topic, value=f"plain-{i}".encode(), partition=i % parts, on_delivery=on_delivery)
            i += 1
            p.poll(0.01)
        p.flush(30)

    seen = {}  # (partition, offset) -> value, as the concurrent consumer read them

    def consumer_worker():
        while not stop.is_set():
            c = consumer(b.bootstrap, **{"isolation.level": "read_committed"})
            try:
                c.assign([TopicPartition(topic, q, OFFSET_BEGINNING) for q in range(parts)])
                while not stop.is_set():
                    m = c.poll(0.2)
                    if m is None or m.error() is not None:
                        continue
                    key = (m.partition(), m.offset())
                    with lock:
                        if key in seen and seen[key] != m.value():
                            errors.append(f"offset {key} read as {seen[key]!r} and {m.value()!r}")
                        seen[key] = m.value()
            except KafkaException:
                time.sleep(0.2)
            finally:
                c.close()

    threads = [threading.Thread(target=txn_worker, args=(w,)) for w in range(3)]
    threads += [threading.Thread(target=plain_worker), threading.Thread(target=consumer_worker)]
    for t in threads:
        t.start()
    try:
        time.sleep(4)
        b.kill()
        b.start()
        time.sleep(6)
    finally:
        stop.set()
        for t in threads:
            t.join(timeout=60)
    assert not any(t.is_alive() for t in threads), f"seed {seed}: a worker hung"
    # Any transaction still open was aborted by the producers' InitProducerId, or times out.
    n_expected = sum(len(v) for v in committed + plain_acked)
    final = read_all(b.bootstrap, topic, "read_committed", n_expected, timeout=60, partitions=parts)
    values = [v for vs in final.values() for v in vs]
    assert len(values) == len(set(values)), f"seed {seed}: a record is in the log twice"
    have = set(values)
    for vs in committed + plain_acked:
        assert all(v in have for v in vs), f"seed {seed}: acknowledged {vs} lost"
    for vs in aborted:
        assert not any(v in have for v in vs), f"seed {seed}: aborted {vs} read"
    for vs in unknown:
        assert all(v in have for v in vs) or not any(v in have for v in vs), (
            f"seed {seed}: transaction {vs} half committed")
    assert not errors, f"seed {seed}: {errors[:3]}"
    aborted_values = {v for vs in aborted for v in vs}
    assert not aborted_values & set(seen.values()), f"seed {seed}: the consumer read an aborted record"
    assert committed and aborted and plain_acked, f"seed {seed}: the run did too little"
    print(f"seed {seed}: {len(committed)} committed, {len(aborted)} aborted, {len(unknown)} unknown "
          f"transactions, {len(plain_acked)} plain records, {len(seen)} records read while running")


def test_a_prepared_commit_is_completed_after_kill_9(broker_factory, monkeypatch, spate_bin):
    """The broker dies while EndTxn writes the markers (an fdatasync of one partition is made
    slow): the PrepareCommit state is durable, so the restarted coordinator completes the
    commit by itself; the transactional id is usable again at once and the records are
    committed in every partition."""
    import json
    import subprocess
    import threading

    topic = unique_topic("txprep")
    monkeypatch.setenv("SPATE_TEST_FAULTS", f"stall:3000:{topic}-1/:-1")
    b = broker_factory(shards=2)
    create_topic(b.bootstrap, topic, 2)
    txn_id = unique_topic("txprep")
    p = txn_producer(b.bootstrap, txn_id)
    p.init_transactions(30)
    p.begin_transaction()
    for q in range(2):
        p.produce(topic, value=f"prepared-{q}".encode(), partition=q)
    assert p.flush(30) == 0
    done = threading.Event()

    def commit():
        try:
            p.commit_transaction(30)
        except KafkaException:
            pass
        done.set()

    threading.Thread(target=commit, daemon=True).start()
    time.sleep(1.5)  # PrepareCommit is durable; partition 1's marker sync is stalled
    assert not done.is_set(), "the commit finished before the kill"
    b.kill()
    monkeypatch.delenv("SPATE_TEST_FAULTS")
    b.start()

    def state():
        r = subprocess.run([str(spate_bin), "txn", "describe", txn_id, "--bootstrap-server", b.bootstrap,
                            "--json"], capture_output=True, text=True, timeout=30)
        return r.returncode == 0 and json.loads(r.stdout)[0]["state"]

    wait_until(lambda: state() == "CompleteCommit", timeout=20, desc="recovery to complete the commit")
    assert "completing a transaction left prepared by the last stop" in b.log_text()
    again = txn_producer(b.bootstrap, txn_id)
    again.init_transactions(10)
    got = read_all(b.bootstrap, topic, "read_committed", 2, partitions=2)
    assert got == {0: [b"prepared-0"], 1: [b"prepared-1"]}, got


def test_an_idle_transactional_id_expires(broker_factory, spate_bin):
    import json
    import subprocess

    b = broker_factory(extra_args=["--transactional-id-expiration-ms", "1500"])
    topic = unique_topic("txexp")
    create_topic(b.bootstrap, topic, 1)
    txn_id = unique_topic("txexp")
    p = txn_producer(b.bootstrap, txn_id)
    p.init_transactions(30)
    p.begin_transaction()
    p.produce(topic, value=b"x", partition=0)
    p.commit_transaction(30)

    def listed():
        r = subprocess.run([str(spate_bin), "txn", "list", "--bootstrap-server", b.bootstrap, "--json"],
                           capture_output=True, text=True, timeout=30)
        assert r.returncode == 0, r.stderr
        return {t["transactional_id"] for t in json.loads(r.stdout)}

    assert txn_id in listed()
    wait_until(lambda: txn_id not in listed(), timeout=15, desc="the idle id to expire")
    # It comes back afresh, with a new producer id, when used again.
    again = txn_producer(b.bootstrap, txn_id)
    again.init_transactions(30)
    assert txn_id in listed()
