"""Listeners and SCRAM credentials across a cluster: three nodes (`--shards 1`), each with a
PLAINTEXT listener (the inter-broker one, which the harness also checks readiness on) and a
SASL_PLAINTEXT listener. Every broker registers all its listeners; a client is told each broker
at the listener of the name it came in on. Credentials set through one broker log in on every
broker (they are cluster metadata), and survive a restart of the whole cluster; the users file
is read on the first start only. Waits are conditions with deadlines, never fixed sleeps."""

import socket
import subprocess
import time

from confluent_kafka import Consumer, Producer
from confluent_kafka.admin import (AdminClient, NewTopic, ScramCredentialInfo, ScramMechanism,
                                   UserScramCredentialUpsertion)

from conftest import Broker, free_port
from kafkautil import DeliveryLog, admin, flush_all, unique_topic, wait_until
from test_cluster import FAST


class SaslCluster:
    def __init__(self, spate_bin, tmp_path, users_file, sasl_only=False):
        self.ids = [1, 2, 3]
        quorum = {i: free_port() for i in self.ids}
        self.plain = {i: free_port() for i in self.ids}
        self.sasl = {i: free_port() for i in self.ids}
        voters = ",".join(f"{i}@127.0.0.1:{quorum[i]}" for i in self.ids)
        self.nodes = {}
        for i in self.ids:
            args = ["--node-id", str(i), "--controller-listen", f"127.0.0.1:{quorum[i]}",
                    "--voters", voters, *FAST]
            if sasl_only:
                # One SASL listener, which the brokers also replicate over, logged in as
                # `broker`.
                password = tmp_path / "broker-password"
                password.write_text("broker-secret\n")
                # ACLs on: the brokers' principal (a super user) may replicate, alice is
                # granted what she does.
                args += ["--listeners", f"SASL_PLAINTEXT://127.0.0.1:{self.sasl[i]}",
                         "--inter-broker-sasl-username", "broker",
                         "--inter-broker-sasl-password-file", str(password),
                         "--authorizer", "acl", "--super-users", "User:broker"]
                port = self.sasl[i]
            else:
                args += ["--listeners",
                         f"INTERNAL://127.0.0.1:{self.plain[i]},SASL_PLAINTEXT://127.0.0.1:{self.sasl[i]}",
                         "--listener-security-protocol-map",
                         "INTERNAL:PLAINTEXT,SASL_PLAINTEXT:SASL_PLAINTEXT",
                         "--inter-broker-listener-name", "INTERNAL"]
                port = self.plain[i]
            if i == 1:
                args += ["--sasl-users-file", str(users_file)]
            self.nodes[i] = Broker(spate_bin, tmp_path / f"node{i}" / "data", tmp_path / f"node{i}" / "logs",
                                   shards=1, extra_args=args, port=port)
        self.sasl_only = sasl_only

    def start(self):
        for b in self.nodes.values():
            b.start()
        if self.sasl_only:
            def md(i):
                return AdminClient(self.sasl_conf(i, "broker", "broker-secret")).list_topics(timeout=5)
        else:
            def md(i):
                return admin(self.nodes[i].bootstrap).list_topics(timeout=5)

        def three():
            try:
                return all(sorted(md(i).brokers) == self.ids for i in self.ids)
            except Exception:
                return False
        wait_until(three, timeout=60, desc="three brokers in every node's metadata")
        return self

    def sasl_conf(self, node, user, password, **extra):
        return {"bootstrap.servers": f"127.0.0.1:{self.sasl[node]}", "security.protocol": "SASL_PLAINTEXT",
                "sasl.mechanism": "SCRAM-SHA-512", "sasl.username": user, "sasl.password": password,
                **extra}

    def kill_all(self):
        for b in self.nodes.values():
            b.kill()


def logs_in(conf):
    """Whether a SASL client with `conf` gets Metadata (so it logged in)."""
    a = AdminClient({**conf, "socket.timeout.ms": 3000})
    try:
        a.list_topics(timeout=3)
        return True
    except Exception:
        return False


def replicated_round_trip(a, producer_conf, consumer_conf, topic, group):
    """Creates `topic` (3 partitions, replication factor 3) through admin client `a`, produces
    90 records with acks=all, waits until every partition's ISR holds the three brokers (the
    followers fetched), and reads the 90 records back with `group`."""
    a.create_topics([NewTopic(topic, num_partitions=3, replication_factor=3)],
                    request_timeout=20)[topic].result(timeout=20)
    p = Producer({**producer_conf, "acks": "all", "linger.ms": 5})
    dl = DeliveryLog()
    for i in range(90):
        p.produce(topic, key=str(i).encode(), value=f"v{i}".encode(), on_delivery=dl)
    flush_all(p)
    assert not dl.errors and len(dl.ok) == 90, dl.errors[:3]

    def full_isr():
        md = a.list_topics(topic, timeout=5)
        return all(len(pm.isrs) == 3 for pm in md.topics[topic].partitions.values())
    wait_until(full_isr, timeout=30, desc="every partition's ISR is all three brokers")
    cons = Consumer({**consumer_conf, "group.id": group, "auto.offset.reset": "earliest"})
    cons.subscribe([topic])
    got = set()
    deadline = time.monotonic() + 40
    while len(got) < 90 and time.monotonic() < deadline:
        m = cons.poll(0.2)
        if m is not None and m.error() is None:
            got.add(m.value())
    cons.close()
    assert len(got) == 90


def test_listeners_and_scram_credentials_across_a_cluster(spate_bin, tmp_path):
    users = tmp_path / "users"
    users.write_text("alice:alice-secret\n")
    c = SaslCluster(spate_bin, tmp_path, users)
    try:
        c.start()
        wait_until(lambda: logs_in(c.sasl_conf(1, "alice", "alice-secret")), timeout=30,
                   desc="alice of --sasl-users-file logs in")

        # Each listener's clients are told every broker at that listener.
        md = AdminClient(c.sasl_conf(2, "alice", "alice-secret")).list_topics(timeout=10)
        assert {b.id: b.port for b in md.brokers.values()} == c.sasl, md.brokers
        md = admin(c.nodes[3].bootstrap).list_topics(timeout=10)
        assert {b.id: b.port for b in md.brokers.values()} == c.plain, md.brokers

        # A user created through broker 1 logs in on brokers 2 and 3.
        a = admin(c.nodes[1].bootstrap)
        fs = a.alter_user_scram_credentials([UserScramCredentialUpsertion(
            "carol", ScramCredentialInfo(ScramMechanism.SCRAM_SHA_512, 4096), b"carol-secret")],
            request_timeout=15)
        fs["carol"].result(timeout=15)
        created = time.monotonic()
        took = {}
        for node in (2, 3):
            wait_until(lambda: logs_in(c.sasl_conf(node, "carol", "carol-secret")), timeout=15,
                       desc=f"carol logs in on broker {node}")
            took[node] = time.monotonic() - created
        print(f"credentials usable on brokers 2, 3 after {took} s (each check includes a login)")
        assert not logs_in(c.sasl_conf(3, "carol", "wrong-secret"))

        # Produce and consume over SASL, leaders on every broker: each client follows the
        # SASL listeners it is told of.
        topic = unique_topic("sasl-cluster")
        fs = a.create_topics([NewTopic(
            topic, num_partitions=3, replication_factor=3)], request_timeout=20)
        fs[topic].result(timeout=20)
        p = Producer(c.sasl_conf(2, "carol", "carol-secret", **{"linger.ms": 5}))
        dl = DeliveryLog()
        for i in range(90):
            p.produce(topic, key=str(i).encode(), value=f"v{i}".encode(), on_delivery=dl)
        flush_all(p)
        assert not dl.errors and len(dl.ok) == 90, dl.errors[:3]

        def consume_all(node, user, password):
            cons = Consumer(c.sasl_conf(node, user, password, **{
                "group.id": f"g-{node}-{user}", "auto.offset.reset": "earliest"}))
            cons.subscribe([topic])
            got = set()
            deadline = time.monotonic() + 40
            while len(got) < 90 and time.monotonic() < deadline:
                m = cons.poll(0.2)
                if m is not None and m.error() is None:
                    got.add(m.value())
            cons.close()
            return got

        assert len(consume_all(3, "carol", "carol-secret")) == 90

        # The whole cluster restarts: credentials are kept, the users file is not read again.
        c.kill_all()
        for b in c.nodes.values():
            b.start()
        wait_until(lambda: "--sasl-users-file ignored" in c.nodes[1].log_text(), timeout=60,
                   desc="the users file ignored on the second start")
        for node in c.ids:
            wait_until(lambda: logs_in(c.sasl_conf(node, "carol", "carol-secret")), timeout=60,
                       desc=f"carol logs in on broker {node} after the restart")
        assert logs_in(c.sasl_conf(2, "alice", "alice-secret"))
        assert len(consume_all(1, "alice", "alice-secret")) == 90
    finally:
        c.kill_all()


def test_brokers_replicate_over_a_sasl_listener(spate_bin, tmp_path):
    """The only listener is SASL_PLAINTEXT and ACLs are on: brokers log in on each other's as
    `broker` (--inter-broker-sasl-username, a super user) to replicate, so a replicated
    acks=all topic gets its full ISR and its records can be read from any broker; alice does
    what her ACLs (created with `spate acl` over SASL) allow."""
    users = tmp_path / "users"
    users.write_text("broker:broker-secret\nalice:alice-secret\n")
    c = SaslCluster(spate_bin, tmp_path, users, sasl_only=True)
    try:
        c.start()
        topic = unique_topic("sasl-replicated")
        admin_props = tmp_path / "broker.properties"
        admin_props.write_text("security.protocol=SASL_PLAINTEXT\nsasl.mechanism=SCRAM-SHA-512\n"
                               "sasl.username=broker\nsasl.password=broker-secret\n")
        for acl in (["--operation", "All", "--topic", topic],
                    ["--operation", "Read", "--group", "g-replicated"]):
            r = subprocess.run([str(spate_bin), "acl", "add", "--allow-principal", "User:alice", *acl,
                                "--bootstrap-server", f"127.0.0.1:{c.sasl[1]}",
                                "--command-config", str(admin_props)],
                               capture_output=True, text=True, timeout=60)
            assert r.returncode == 0, r.stderr
        a = AdminClient(c.sasl_conf(1, "alice", "alice-secret"))
        replicated_round_trip(a, c.sasl_conf(2, "alice", "alice-secret"),
                              c.sasl_conf(3, "alice", "alice-secret"), topic, "g-replicated")
    finally:
        c.kill_all()


def test_brokers_replicate_over_mutual_tls(spate_bin, tmp_path):
    """The only client listener is SSL with client certificates required, the quorum's listener
    (--controller-listener-names) is SSL too, and ACLs are on: brokers and quorum nodes connect
    to each other with mutual TLS, each presenting its certificate (principal `User:CN=broker`,
    a super user) and verifying the other's against the CA, so the quorum forms, and a
    replicated acks=all topic gets its full ISR; a client with its own certificate produces and
    consumes. A plaintext connection to the quorum port is dropped."""
    from tlsutil import Pki
    pki = Pki(tmp_path / "pki")
    broker_cert, broker_key = pki._sign("broker", "/CN=broker", 1000,
                                        "subjectAltName=IP:127.0.0.1,DNS:localhost\n"
                                        "extendedKeyUsage=serverAuth,clientAuth\n")
    alice_cert, alice_key = pki.client("alice", "/CN=alice")
    ids = [1, 2, 3]
    quorum = {i: free_port() for i in ids}
    ssl_ports = {i: free_port() for i in ids}
    voters = ",".join(f"{i}@127.0.0.1:{quorum[i]}" for i in ids)
    nodes = {}
    for i in ids:
        # The quorum too speaks mutual TLS, on a listener named by --controller-listener-names.
        args = ["--node-id", str(i), "--voters", voters, *FAST,
                "--listeners", f"SSL://127.0.0.1:{ssl_ports[i]},CONTROLLER://127.0.0.1:{quorum[i]}",
                "--listener-security-protocol-map", "SSL:SSL,CONTROLLER:SSL",
                "--controller-listener-names", "CONTROLLER",
                "--tls-cert-file", str(broker_cert), "--tls-key-file", str(broker_key),
                "--tls-client-ca-file", str(pki.ca),
                "--authorizer", "acl", "--super-users", "User:CN=broker;User:CN=alice"]
        nodes[i] = Broker(spate_bin, tmp_path / f"node{i}" / "data", tmp_path / f"node{i}" / "logs",
                          shards=1, extra_args=args, port=ssl_ports[i])

    def conf(node, **extra):
        return {"bootstrap.servers": f"127.0.0.1:{ssl_ports[node]}", "security.protocol": "SSL",
                "ssl.ca.location": str(pki.ca), "ssl.certificate.location": str(alice_cert),
                "ssl.key.location": str(alice_key), **extra}
    try:
        for b in nodes.values():
            b.start()

        def three():
            try:
                return all(sorted(AdminClient(conf(i)).list_topics(timeout=5).brokers) == ids
                           for i in ids)
            except Exception:
                return False
        wait_until(three, timeout=60, desc="three brokers in every node's metadata")
        replicated_round_trip(AdminClient(conf(1)), conf(2), conf(3), unique_topic("mtls"),
                              "g-mtls")
        # Plaintext bytes on the quorum's TLS port: the handshake fails, the link is dropped,
        # and the quorum goes on.
        with socket.create_connection(("127.0.0.1", quorum[1]), timeout=10) as sock:
            sock.sendall(b"\x00\x00\x00\x05hello")
            while sock.recv(1024):  # an alert at most, then the close (a timeout fails)
                pass
        wait_until(lambda: "controller listener: TLS handshake failed" in nodes[1].log_text(),
                   timeout=20, desc="the plaintext quorum connection refused")
        assert sorted(AdminClient(conf(2)).list_topics(timeout=10).brokers) == ids
    finally:
        for b in nodes.values():
            b.kill()
