"""Client quotas (KIP-13/55/124/219/546): AlterClientQuotas and DescribeClientQuotas, and their
enforcement (throttle_time_ms in the responses, the connection muted that long).

Neither confluent-kafka 2.16 (librdkafka 2.16) nor kafka-python 3.0's KafkaAdminClient has
alter/describe_client_quotas methods, so the admin APIs are driven through kafka-python's
protocol classes (its own encoder and decoder for APIs 48/49) and `spate quota`; the producers
and consumers that get throttled are confluent-kafka's, which report the broker's
throttle_time_ms through `throttle_cb`.
"""

import re
import subprocess
import threading
import time

from kafka.admin import KafkaAdminClient
from kafka.protocol.admin.client_quotas import AlterClientQuotasRequest as Alter
from kafka.protocol.admin.client_quotas import DescribeClientQuotasRequest as Describe

from conftest import free_port
from test_metrics import scrape
from kafkautil import consumer, create_topic, flush_all, producer, unique_topic, wait_until
from confluent_kafka import TopicPartition
from test_cluster import cluster_factory, create  # noqa: F401 (cluster_factory: a fixture)

MB = 1024 * 1024
INVALID_REQUEST = 42


class QuotaAdmin:
    """AlterClientQuotas / DescribeClientQuotas through kafka-python's protocol layer."""

    def __init__(self, bootstrap, client_id="spate-tests-admin"):
        self.a = KafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=10000, client_id=client_id)

    def send(self, req):
        return self.a._manager.run(self.a._manager.send, req)

    def alter(self, entries, validate_only=False):
        """entries: [(entity {type: name|None}, {key: value|None (remove)})] -> error codes."""
        E = Alter.EntryData
        req = Alter(
            entries=[
                E(entity=[E.EntityData(entity_type=t, entity_name=n) for t, n in entity.items()],
                  ops=[E.OpData(key=k, value=float(v or 0), remove=v is None) for k, v in ops.items()])
                for entity, ops in entries
            ],
            validate_only=validate_only,
        )
        return [e.error_code for e in self.send(req).entries]

    def describe(self, components=(), strict=False):
        """components: [(type, match_type, match)] -> ({(type, name), ...}: {key: value}), error."""
        C = Describe.ComponentData
        resp = self.send(Describe(
            components=[C(entity_type=t, match_type=m, match=n) for t, m, n in components],
            strict=strict))
        if resp.error_code:
            return None, resp.error_code
        return {
            frozenset((e.entity_type, e.entity_name) for e in entry.entity):
                {v.key: v.value for v in entry.values}
            for entry in resp.entries or []
        }, 0

    def close(self):
        self.a.close()


def entity(**parts):
    return {k.replace("_", "-"): v for k, v in parts.items()}


def key(**parts):
    return frozenset((k.replace("_", "-"), v) for k, v in parts.items())


def test_alter_and_describe_quotas_with_defaults_removal_and_restart(broker, spate_bin):
    q = QuotaAdmin(broker.bootstrap)
    try:
        codes = q.alter([
            (entity(client_id="app"), {"producer_byte_rate": 1048576}),
            (entity(user=None), {"consumer_byte_rate": 2097152, "request_percentage": 50}),
            (entity(user="alice", client_id=None), {"producer_byte_rate": 4096}),
            (entity(client_id=None), {"producer_byte_rate": 8192}),
            # Refused, each on its own (the others still apply):
            (entity(group="g"), {"producer_byte_rate": 1}),
            (entity(user=None), {"no_such_quota": 1}),
            (entity(user=None), {"controller_mutation_rate": 1}),
            (entity(ip="1.2.3.4"), {"connection_creation_rate": 1}),
            (entity(client_id="x"), {"producer_byte_rate": 1.5}),
        ])
        assert codes == [0, 0, 0, 0] + [INVALID_REQUEST] * 5, codes
        # validate_only checks and changes nothing.
        assert q.alter([(entity(client_id="dry"), {"producer_byte_rate": 5})], validate_only=True) == [0]

        every, err = q.describe()
        assert err == 0
        assert every == {
            key(client_id="app"): {"producer_byte_rate": 1048576.0},
            key(user=None): {"consumer_byte_rate": 2097152.0, "request_percentage": 50.0},
            key(user="alice", client_id=None): {"producer_byte_rate": 4096.0},
            key(client_id=None): {"producer_byte_rate": 8192.0},
        }, every
        # Filters (KIP-546): exact, default, specified; strict leaves out entities with more parts.
        assert set(q.describe([("user", 0, "alice")])[0]) == {key(user="alice", client_id=None)}
        assert q.describe([("user", 0, "alice")], strict=True)[0] == {}
        assert set(q.describe([("user", 1, None)], strict=True)[0]) == {key(user=None)}
        assert set(q.describe([("client-id", 2, None)])[0]) == {key(client_id="app")}
        assert q.describe([("user", 1, None), ("user", 2, None)]) == (None, INVALID_REQUEST)

        # Our CLI lists the same (and `spate quota set` / `remove` change them).
        out = subprocess.run([spate_bin, "quota", "list", "--bootstrap-server", broker.bootstrap],
                             capture_output=True, text=True, timeout=30)
        assert out.returncode == 0, out.stderr
        assert "clients/app" in out.stdout and "producer_byte_rate=1048576" in out.stdout, out.stdout
        out = subprocess.run([spate_bin, "quota", "set", "--bootstrap-server", broker.bootstrap,
                              "--user", "bob", "--consumer-byte-rate", "3000"],
                             capture_output=True, text=True, timeout=30)
        assert out.returncode == 0, out.stderr
        assert q.describe([("user", 0, "bob")])[0] == {key(user="bob"): {"consumer_byte_rate": 3000.0}}

        # Removal: one key of an entity, then an entity's last key (the entity goes).
        assert q.alter([(entity(user=None), {"request_percentage": None})]) == [0]
        out = subprocess.run([spate_bin, "quota", "remove", "--bootstrap-server", broker.bootstrap,
                              "--client-id", "<default>", "--producer-byte-rate"],
                             capture_output=True, text=True, timeout=30)
        assert out.returncode == 0, out.stderr
        expected = {
            key(client_id="app"): {"producer_byte_rate": 1048576.0},
            key(user=None): {"consumer_byte_rate": 2097152.0},
            key(user="alice", client_id=None): {"producer_byte_rate": 4096.0},
            key(user="bob"): {"consumer_byte_rate": 3000.0},
        }
        assert q.describe()[0] == expected
    finally:
        q.close()

    # The quotas are metadata: they survive a restart.
    broker.stop()
    broker.start()
    q = QuotaAdmin(broker.bootstrap)
    try:
        assert q.describe()[0] == expected
    finally:
        q.close()


class Flat:
    """A confluent-kafka producer sending as fast as it can, counting acknowledged bytes and the
    broker's throttle reports."""

    def __init__(self, bootstrap, topic, client_id, value_bytes=16 * 1024, limit=None):
        self.topic = topic
        self.limit = limit  # bytes/s the client itself keeps to (None: as fast as it can)
        self.value = b"q" * value_bytes
        self.acked = 0
        self.throttles = []
        self.errors = []
        self.p = producer(bootstrap, **{
            "client.id": client_id,
            "acks": 1,
            "linger.ms": 20,
            # Requests of at most 64 KiB a partition, so what is acknowledged in the measured
            # window is not off by a whole 1 MB request at either end.
            "batch.size": 65536,
            "queue.buffering.max.kbytes": 4096,
            # The client's default: a throttled connection's pipelined requests wait in its
            # socket while it is muted.
            "request.timeout.ms": 30000,
            "throttle_cb": lambda ev: self.throttles.append(ev.throttle_time),
        })

    def _delivered(self, err, msg):
        if err is not None:
            self.errors.append(err)
        elif self.measure_from <= time.monotonic() < self.end:
            self.acked += len(msg.value())

    def run(self, start, warmup, seconds):
        """Sends for warmup + seconds; counts what is acknowledged in the last `seconds`."""
        self.measure_from = start + warmup
        self.end = start + warmup + seconds
        offered = 0
        while time.monotonic() < self.end:
            if self.limit is not None and offered > self.limit * (time.monotonic() - start):
                self.p.poll(0.005)
                continue
            try:
                self.p.produce(self.topic, self.value, on_delivery=self._delivered)
                offered += len(self.value)
            except BufferError:
                self.p.poll(0.01)
            self.p.poll(0)
        self.p.flush(30)
        self.p = None  # closes the client (it would otherwise reconnect after the broker stops)

    def rate(self, seconds):
        return self.acked / seconds


def test_a_producer_over_its_byte_rate_is_throttled_to_it_and_others_are_not(broker):
    topic = unique_topic("quota")
    create_topic(broker.bootstrap, topic, 2)
    q = QuotaAdmin(broker.bootstrap)
    try:
        assert q.alter([(entity(client_id="slow-producer"), {"producer_byte_rate": MB})]) == [0]
    finally:
        q.close()
    slow = Flat(broker.bootstrap, topic, "slow-producer")
    # The other client sends 4 MB/s: well over the quota, and it leaves the machine's cores to
    # the throttled one (a flat-out second producer starved it on a loaded 2-core machine).
    fast = Flat(broker.bootstrap, topic, "other-producer", limit=4 * MB)
    # Measured over 20 s once the client is in its steady state (its first burst and the
    # requests it pipelines take a few seconds to settle).
    warmup, seconds = 4.0, 20.0
    start = time.monotonic()
    threads = [threading.Thread(target=f.run, args=(start, warmup, seconds)) for f in (slow, fast)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(warmup + seconds + 60)
    rate = slow.rate(seconds)
    print(f"slow producer: {rate / MB:.3f} MB/s over {seconds:.0f}s against a 1 MB/s quota, "
          f"{len(slow.throttles)} throttle reports (max {max(slow.throttles, default=0):.2f} s); "
          f"other producer: {fast.rate(seconds) / MB:.3f} MB/s, {len(fast.throttles)} throttle reports")
    assert not slow.errors and not fast.errors, (slow.errors[:3], fast.errors[:3])
    assert abs(rate - MB) <= 0.1 * MB, f"{rate / MB:.3f} MB/s"
    assert slow.throttles and max(slow.throttles) > 0
    # The other client id is not throttled, and gets well past the quota.
    assert not [t for t in fast.throttles if t > 0], fast.throttles[:5]
    assert fast.rate(seconds) > 3 * MB, f"{fast.rate(seconds) / MB:.3f} MB/s"


def test_a_consumer_over_its_byte_rate_is_throttled(broker):
    topic = unique_topic("quota-fetch")
    create_topic(broker.bootstrap, topic, 1)
    p = producer(broker.bootstrap)
    total = 12 * MB
    value = b"c" * (64 * 1024)
    for _ in range(total // len(value)):
        while True:
            try:
                p.produce(topic, value)
                break
            except BufferError:
                p.poll(0.05)
    flush_all(p, 60)
    quota = 256 * 1024
    q = QuotaAdmin(broker.bootstrap)
    try:
        assert q.alter([(entity(client_id="slow-consumer"), {"consumer_byte_rate": quota})]) == [0]
    finally:
        q.close()

    def read(client_id, seconds, throttles):
        c = consumer(broker.bootstrap, **{
            "client.id": client_id,
            "throttle_cb": lambda ev: throttles.append(ev.throttle_time),
        })
        c.assign([TopicPartition(topic, 0, 0)])
        got = 0
        end = time.monotonic() + seconds
        while time.monotonic() < end and got < total:
            m = c.poll(0.1)
            if m is not None and m.error() is None:
                got += len(m.value())
        c.close()
        return got

    seconds = 6.0
    free_throttles, slow_throttles = [], []
    free = read("free-consumer", 30.0, free_throttles)
    slow = read("slow-consumer", seconds, slow_throttles)
    # A fresh sensor's rate spans at least one 1-second window, so the most a throttled
    # consumer can get in `seconds` is about quota * (seconds + 1), plus the one response that
    # crossed it (max.partition.fetch.bytes, 1 MiB).
    bound = quota * (seconds + 2) + MB
    print(f"consumer: {slow / MB:.2f} MB in {seconds:.0f}s against {quota / 1024:.0f} KB/s "
          f"(bound {bound / MB:.2f} MB), {len(slow_throttles)} throttle reports; "
          f"unthrottled consumer read {free / MB:.2f} MB")
    assert free == total and not [t for t in free_throttles if t > 0]
    assert slow < bound, f"{slow / MB:.2f} MB"
    assert slow_throttles and max(slow_throttles) > 0


def test_a_quota_set_through_one_broker_applies_on_every_broker_of_a_cluster(cluster_factory):
    c = cluster_factory()
    q = QuotaAdmin(c.nodes[2].bootstrap)
    try:
        assert q.alter([
            (entity(client_id="clustered"), {"producer_byte_rate": 64 * 1024}),
            (entity(client_id=None), {"consumer_byte_rate": 1024}),
        ]) == [0, 0]
    finally:
        q.close()
    expected = {key(client_id="clustered"): {"producer_byte_rate": 65536.0},
                key(client_id=None): {"consumer_byte_rate": 1024.0}}
    for node in c.ids:
        q = QuotaAdmin(c.nodes[node].bootstrap)
        try:
            wait_until(lambda: q.describe()[0] == expected, timeout=15, desc=f"the quota on node {node}")
        finally:
            q.close()
    # Enforced by the broker that leads the partition, whichever it is.
    topic = unique_topic("quota-cluster")
    create(c.nodes[1].bootstrap, topic, 1)
    leader = wait_until(lambda: c.metadata(1).topics[topic].partitions[0].leader, timeout=20,
                        desc="a leader")
    throttles = []
    p = producer(c.nodes[leader].bootstrap, **{
        "client.id": "clustered",
        "throttle_cb": lambda ev: throttles.append(ev.throttle_time),
    })
    value = b"z" * (32 * 1024)
    for _ in range(16):  # 512 KiB: eight times what one second allows
        p.produce(topic, value, partition=0)
    flush_all(p, 30)
    # Throttle reports are served by poll().
    wait_until(lambda: (p.poll(0.1), [t for t in throttles if t > 0])[1], timeout=15,
               desc=f"a throttle report from node {leader}")
    assert max(throttles) > 0



def test_a_request_percentage_quota_throttles_and_is_counted_in_the_metrics(broker_factory):
    mport = free_port()
    b = broker_factory(shards=2, extra_args=["--metrics-listen", f"127.0.0.1:{mport}"])
    topic = unique_topic("quota-time")
    create_topic(b.bootstrap, topic, 1)
    q = QuotaAdmin(b.bootstrap)
    try:
        # A hundredth of a percent of one thread: 100 us of handler time a second.
        assert q.alter([(entity(user="ANONYMOUS", client_id="busy"), {"request_percentage": 0.01}),
                        (entity(client_id="busy-admin"), {"request_percentage": 0.01})]) == [0, 0]
    finally:
        q.close()
    # Any API's response carries the throttle (here DescribeClientQuotas').
    busy = QuotaAdmin(b.bootstrap, client_id="busy-admin")
    try:
        wait_until(lambda: busy.send(Describe(components=[], strict=False)).throttle_time_ms > 0,
                   timeout=30, desc="throttle_time_ms in a DescribeClientQuotas response")
    finally:
        busy.close()
    throttles = []
    p = producer(b.bootstrap, **{"client.id": "busy", "linger.ms": 0,
                                 "throttle_cb": lambda ev: throttles.append(ev.throttle_time)})

    def throttled():
        p.produce(topic, b"x")
        p.flush(10)
        return [t for t in throttles if t > 0]
    wait_until(throttled, timeout=30, desc="a throttle report for request time")
    p = None

    def counted():
        text = scrape(mport)
        return sum(float(v) for v in re.findall(
            r'^spate_quota_throttled_total\{shard="\d+",quota="request_percentage"\} (\S+)$', text, re.M))
    wait_until(counted, timeout=10, desc="spate_quota_throttled_total for request_percentage")
    seconds = re.findall(r'^spate_quota_throttle_seconds_total\{shard="\d+",quota="request_percentage"\} (\S+)$',
                         scrape(mport), re.M)
    assert sum(float(v) for v in seconds) > 0, seconds
