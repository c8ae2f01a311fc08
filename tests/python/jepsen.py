"""A Jepsen-style workload and checker for replication tests: a steady acks=all load from
confluent-kafka, a reader and a high-watermark watcher running while faults are injected, then
a full read and a check of everything that was acknowledged and observed.

The checker reports, per partition:
- lost writes: acknowledged, but absent from the final read;
- moved writes: acknowledged at one offset, found at another;
- inconsistent offsets: one offset read with two different values (during the run and at the end);
- duplicates: one value at several offsets (must be none with idempotence);
- gaps: offsets missing between the log start and the end of the final read;
- non-monotonic reads: a consumer saw offsets go back or skip within one assignment;
- high watermark moving back: ListOffsets latest observed to decrease.
"""

import struct
import threading
import time
from pathlib import Path

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, Producer, TopicPartition

from kafkautil import COMMON


class Workload:
    """Producers writing unique values "w<n>" to every partition of `topic` at `rate` per second
    (spread round-robin), recording what was acknowledged, and a reader and a watcher."""

    def __init__(self, bootstrap_fn, topic, partitions, rate=200, idempotent=False, extra=None):
        self.bootstrap_fn = bootstrap_fn
        self.topic = topic
        self.partitions = partitions
        self.rate = rate
        self.idempotent = idempotent
        self.extra = extra or {}
        self.acked = {}  # value -> (partition, offset, ack time)
        self.failed = []  # (value, error)
        self.sent = 0
        self.reads = {p: [] for p in range(partitions)}  # partition -> [(offset, value)]
        self.read_errors = []
        self.hw = {p: [] for p in range(partitions)}  # partition -> [(time, hw)]
        self.fatal = []
        self._stop = threading.Event()
        self._threads = []
        self._lock = threading.Lock()

    # ------------------------------------------------------------------ threads
    def start(self):
        for target in (self._produce, self._read, self._watch):
            t = threading.Thread(target=target, daemon=True)
            t.start()
            self._threads.append(t)
        return self

    def stop(self, drain_timeout=60.0):
        self._stop.set()
        for t in self._threads:
            t.join(timeout=drain_timeout)

    def _produce(self):
        conf = {
            "bootstrap.servers": self.bootstrap_fn(),
            **COMMON,
            "acks": "all",
            "enable.idempotence": self.idempotent,
            "linger.ms": 5,
            "metadata.max.age.ms": 1000,
            "topic.metadata.refresh.interval.ms": 1000,
            "message.timeout.ms": 60000,
            "request.timeout.ms": 5000,
            "retry.backoff.ms": 50,
            "retry.backoff.max.ms": 200,
            **self.extra,
        }
        p = Producer(conf)

        def report(err, msg):
            value = msg.value().decode()
            with self._lock:
                if err is not None:
                    self.failed.append((value, err))
                else:
                    self.acked[value] = (msg.partition(), msg.offset(), time.monotonic())

        n = 0
        interval = 1.0 / self.rate
        next_at = time.monotonic()
        while not self._stop.is_set():
            value = f"w{n}"
            try:
                p.produce(self.topic, value=value.encode(), partition=n % self.partitions, on_delivery=report)
                n += 1
                self.sent = n
            except BufferError:
                p.poll(0.05)
                continue
            p.poll(0)
            next_at += interval
            delay = next_at - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            else:
                next_at = time.monotonic()
        remaining = p.flush(60)
        if remaining:
            self.fatal.append(f"{remaining} messages never reported after the load stopped")

    def _read(self):
        c = Consumer({
            "bootstrap.servers": self.bootstrap_fn(), **COMMON,
            "group.id": "jepsen-reader", "enable.auto.commit": False, "auto.offset.reset": "earliest",
            "fetch.wait.max.ms": 100, "metadata.max.age.ms": 1000, "topic.metadata.refresh.interval.ms": 1000,
        })
        c.assign([TopicPartition(self.topic, p, OFFSET_BEGINNING) for p in range(self.partitions)])
        try:
            while not self._stop.is_set():
                m = c.poll(0.1)
                if m is None:
                    continue
                if m.error() is not None:
                    if m.error().code() != KafkaError._PARTITION_EOF:
                        self.read_errors.append(str(m.error()))
                    continue
                self.reads[m.partition()].append((m.offset(), m.value().decode()))
        finally:
            c.close()

    def _watch(self):
        c = Consumer({"bootstrap.servers": self.bootstrap_fn(), **COMMON, "group.id": "jepsen-watch",
                      "metadata.max.age.ms": 1000, "topic.metadata.refresh.interval.ms": 1000})
        try:
            while not self._stop.is_set():
                for p in range(self.partitions):
                    try:
                        _, hi = c.get_watermark_offsets(TopicPartition(self.topic, p), timeout=2, cached=False)
                    except Exception:  # noqa: BLE001 - a failover answers errors; only values count
                        continue
                    if hi >= 0:
                        self.hw[p].append((time.monotonic(), hi))
                time.sleep(0.05)
        finally:
            c.close()

    # ------------------------------------------------------------------ waits
    def wait_acked(self, count, timeout=60.0):
        deadline = time.monotonic() + timeout
        while len(self.acked) < count:
            assert time.monotonic() < deadline, f"only {len(self.acked)}/{count} writes acknowledged"
            time.sleep(0.05)

    def acks_after(self, t, partitions):
        """{partition: first ack time after t} for the given partitions (missing: none yet)."""
        out = {}
        with self._lock:
            for p, _, at in self.acked.values():
                if p in partitions and at > t and (p not in out or at < out[p]):
                    out[p] = at
        return out


def read_all(bootstrap, topic, partitions, timeout=60.0):
    """Every record of every partition, read from the beginning to the high watermark:
    {partition: [(offset, value)]}."""
    c = Consumer({"bootstrap.servers": bootstrap, **COMMON, "group.id": "jepsen-final",
                  "enable.auto.commit": False, "auto.offset.reset": "earliest", "fetch.wait.max.ms": 100})
    try:
        ends = {}
        deadline = time.monotonic() + timeout
        for p in range(partitions):
            while True:
                try:
                    _, hi = c.get_watermark_offsets(TopicPartition(topic, p), timeout=5, cached=False)
                    ends[p] = hi
                    break
                except Exception:  # noqa: BLE001 - retried until the deadline
                    assert time.monotonic() < deadline, f"no high watermark for partition {p}"
                    time.sleep(0.2)
        c.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in range(partitions)])
        out = {p: [] for p in range(partitions)}
        while any((out[p][-1][0] + 1 if out[p] else 0) < ends[p] for p in range(partitions)):
            assert time.monotonic() < deadline, (
                f"final read stuck: {[(p, len(out[p]), ends[p]) for p in range(partitions)]}")
            m = c.poll(0.2)
            if m is None or m.error() is not None:
                continue
            out[m.partition()].append((m.offset(), m.value().decode()))
        return out, ends
    finally:
        c.close()


def check(w, final, idempotent=False):
    """The checker: returns a list of anomalies (empty when the history is valid)."""
    anomalies = list(w.fatal)
    at = {p: {} for p in final}  # partition -> offset -> value
    for p, records in final.items():
        seen_values = {}
        for offset, value in records:
            if offset in at[p] and at[p][offset] != value:
                anomalies.append(f"p{p}: offset {offset} holds {at[p][offset]} and {value}")
            at[p][offset] = value
            seen_values.setdefault(value, []).append(offset)
        for value, offsets in seen_values.items():
            if len(offsets) > 1 and idempotent:
                anomalies.append(f"p{p}: {value} duplicated at offsets {offsets}")
        offsets = sorted(at[p])
        if offsets and offsets != list(range(offsets[0], offsets[-1] + 1)):
            missing = sorted(set(range(offsets[0], offsets[-1] + 1)) - set(offsets))
            anomalies.append(f"p{p}: offsets missing from the final read: {missing[:10]}")
    for value, (p, offset, _) in w.acked.items():
        got = at.get(p, {}).get(offset)
        if got is None:
            anomalies.append(f"p{p}: acknowledged {value}@{offset} lost")
        elif got != value:
            anomalies.append(f"p{p}: acknowledged {value}@{offset}, but the offset holds {got}")
    for p, records in w.reads.items():
        last = None
        for offset, value in records:
            final_value = at[p].get(offset)
            if final_value is not None and final_value != value:
                anomalies.append(f"p{p}: read {value}@{offset} during the run, {final_value} at the end")
            elif final_value is None:
                anomalies.append(f"p{p}: read {value}@{offset} during the run, absent at the end")
            if last is not None and offset != last + 1:
                anomalies.append(f"p{p}: reader went from offset {last} to {offset}")
            last = offset
    for p, series in w.hw.items():
        top = -1
        for t, hw in series:
            if hw < top:
                anomalies.append(f"p{p}: high watermark went back from {top} to {hw}")
                break
            top = hw
    return anomalies


# ---------------------------------------------------------------------- on-disk comparison
def batches_on_disk(data_dir, topic, partition):
    """[(base offset, last offset, raw batch bytes)] of a partition's segment files."""
    d = Path(data_dir) / f"{topic}-{partition}"
    out = []
    for seg in sorted(d.glob("*.log")):
        data = seg.read_bytes()
        pos = 0
        while pos + 61 <= len(data):
            base, length = struct.unpack(">qi", data[pos:pos + 12])
            if length <= 0 or pos + 12 + length > len(data):
                break
            last_delta = struct.unpack(">i", data[pos + 23:pos + 27])[0]
            out.append((base, base + last_delta, data[pos:pos + 12 + length]))
            pos += 12 + length
    return out


def compare_replicas(data_dirs, topic, partition, upto):
    """Anomalies where the replicas' logs differ below offset `upto` (their bytes compared batch
    by batch)."""
    logs = {node: [b for b in batches_on_disk(d, topic, partition) if b[0] < upto] for node, d in data_dirs.items()}
    ref_node, ref = next(iter(logs.items()))
    out = []
    for node, batches in logs.items():
        if batches != ref:
            first = next((i for i, (a, b) in enumerate(zip(batches, ref)) if a != b), min(len(batches), len(ref)))
            out.append(f"p{partition}: node {node}'s log differs from node {ref_node}'s below {upto} "
                       f"at batch {first} ({len(batches)} vs {len(ref)} batches)")
    return out
