"""SASL listeners (`--listeners SASL_PLAINTEXT://...`) with the SCRAM credentials of the cluster
metadata: confluent-kafka and kafka-python log in with SCRAM-SHA-512, SCRAM-SHA-256 and (when
enabled) PLAIN and then produce and consume; a wrong password, an unknown user and a client
that skips the handshake are refused while the broker keeps serving others; each listener's
clients are told its own address."""

import socket
import struct
import subprocess
import time

import pytest
from confluent_kafka import Consumer, KafkaError, Producer, TopicPartition
from confluent_kafka.admin import AdminClient

from conftest import free_port
from kafkautil import DeliveryLog, flush_all, unique_topic, wait_until


def sasl_broker(broker_factory, tmp_path, extra=()):
    users = tmp_path / "users"
    users.write_text("alice:alice-secret\nbob:bob-secret\n")
    plain, sasl = free_port(), free_port()
    b = broker_factory(shards=2, port=plain, extra_args=[
        "--listeners", f"PLAINTEXT://127.0.0.1:{plain},SASL_PLAINTEXT://127.0.0.1:{sasl}",
        "--sasl-users-file", str(users), *extra])
    # Broker.port is where the harness checks readiness: the PLAINTEXT listener.
    b.sasl_bootstrap = f"127.0.0.1:{sasl}"
    wait_until(lambda: "SCRAM users created" in b.log_text(), timeout=20,
               desc="the users of --sasl-users-file created")
    return b


def conf(b, user, password, mechanism="SCRAM-SHA-512", **extra):
    return {"bootstrap.servers": b.sasl_bootstrap, "security.protocol": "SASL_PLAINTEXT",
            "sasl.mechanism": mechanism, "sasl.username": user, "sasl.password": password,
            **extra}


def test_scram_clients_produce_and_consume(broker_factory, tmp_path):
    b = sasl_broker(broker_factory, tmp_path)
    topic = unique_topic("sasl")
    for mech in ("SCRAM-SHA-512", "SCRAM-SHA-256"):
        p = Producer(conf(b, "alice", "alice-secret", mech, **{"linger.ms": 5}))
        dl = DeliveryLog()
        for i in range(50):
            p.produce(topic, value=f"{mech}-{i}".encode(), on_delivery=dl)
        flush_all(p)
        assert not dl.errors and len(dl.ok) == 50, dl.errors[:3]
    c = Consumer(conf(b, "bob", "bob-secret", "SCRAM-SHA-256", **{
        "group.id": "sasl-group", "auto.offset.reset": "earliest", "enable.auto.commit": False}))
    c.subscribe([topic])
    got = []
    deadline = time.monotonic() + 30
    while len(got) < 100 and time.monotonic() < deadline:
        m = c.poll(0.2)
        if m is not None and m.error() is None:
            got.append(m.value())
    c.commit(asynchronous=False)
    c.close()
    assert len(got) == 100, len(got)
    # kafka-python logs in too.
    from kafka import KafkaProducer
    kp = KafkaProducer(bootstrap_servers=b.sasl_bootstrap, security_protocol="SASL_PLAINTEXT",
                       sasl_mechanism="SCRAM-SHA-256", sasl_plain_username="bob",
                       sasl_plain_password="bob-secret")
    kp.send(topic, b"from-kafka-python").get(timeout=30)
    kp.close()
    # Each listener's Metadata names its own port.
    md = AdminClient(conf(b, "alice", "alice-secret")).list_topics(timeout=10)
    assert [f"{x.host}:{x.port}" for x in md.brokers.values()] == [b.sasl_bootstrap]
    md = AdminClient({"bootstrap.servers": b.bootstrap}).list_topics(timeout=10)
    assert [f"{x.host}:{x.port}" for x in md.brokers.values()] == [b.bootstrap]


@pytest.mark.parametrize("user,password", [("alice", "wrong"), ("mallory", "alice-secret")])
def test_a_failed_login_is_refused_the_same_way_and_others_go_on(broker_factory, tmp_path, user,
                                                                  password):
    b = sasl_broker(broker_factory, tmp_path)
    errors = []
    p = Producer(conf(b, user, password, **{"error_cb": errors.append,
                                            "message.timeout.ms": 5000}))
    dl = DeliveryLog()
    p.produce(unique_topic("denied"), value=b"x", on_delivery=dl)
    p.flush(10)
    assert dl.errors and not dl.ok
    assert any(e.code() == KafkaError._AUTHENTICATION for e in errors), errors
    assert any("invalid username or password" in e.str() for e in errors), errors
    assert b.alive()
    ok = Producer(conf(b, "alice", "alice-secret"))
    dl = DeliveryLog()
    ok.produce(unique_topic("allowed"), value=b"x", on_delivery=dl)
    flush_all(ok)
    assert dl.ok and not dl.errors
    assert "alice-secret" not in b.log_text()


def test_plain_only_when_enabled(broker_factory, tmp_path):
    b = sasl_broker(broker_factory, tmp_path)
    errors = []
    p = Producer(conf(b, "alice", "alice-secret", "PLAIN", **{"error_cb": errors.append,
                                                               "message.timeout.ms": 5000}))
    p.produce(unique_topic("plain"), value=b"x")
    p.flush(10)
    assert errors, "PLAIN is not enabled by default"
    b2 = sasl_broker(broker_factory, tmp_path,
                     extra=["--sasl-enabled-mechanisms", "PLAIN,SCRAM-SHA-512"])
    p = Producer(conf(b2, "alice", "alice-secret", "PLAIN"))
    dl = DeliveryLog()
    p.produce(unique_topic("plain"), value=b"x", on_delivery=dl)
    flush_all(p)
    assert dl.ok and not dl.errors


def frame(api_key, version, corr, body=b""):
    msg = struct.pack(">hhih", api_key, version, corr, 4) + b"test" + body
    return struct.pack(">i", len(msg)) + msg


def test_a_request_before_authentication_closes_the_connection(broker_factory, tmp_path):
    b = sasl_broker(broker_factory, tmp_path)
    host, port = b.sasl_bootstrap.split(":")
    with socket.create_connection((host, int(port)), timeout=10) as s:
        s.sendall(frame(3, 1, 1, struct.pack(">i", -1)))  # Metadata v1, all topics
        s.settimeout(10)
        assert s.recv(100) == b"", "a Metadata before authentication closes the connection"
    assert b.alive()


def test_listener_settings_are_checked(spate_bin, tmp_path):
    def start(*args):
        return subprocess.run([str(spate_bin), "serve", "--data-dir", str(tmp_path / "d"), *args,
                               "--print-config"], capture_output=True, text=True, timeout=60)
    r = start("--listen", "127.0.0.1:9092", "--listeners", "PLAINTEXT://127.0.0.1:9093")
    assert r.returncode != 0 and "both given" in r.stderr, r.stderr
    r = start("--listeners", "SSL://127.0.0.1:9093")
    assert r.returncode != 0 and "tls_cert_file" in r.stderr, r.stderr
    r = start("--listeners", "INTERNAL://127.0.0.1:9093")
    assert r.returncode != 0 and "listener-security-protocol-map" in r.stderr, r.stderr
    r = start("--listeners", "INTERNAL://127.0.0.1:9093,EXTERNAL://127.0.0.1:9094",
              "--listener-security-protocol-map", "INTERNAL:PLAINTEXT,EXTERNAL:SASL_PLAINTEXT",
              "--advertised-listeners", "EXTERNAL://broker.example:9094")
    assert r.returncode == 0, r.stderr
    assert 'listeners = "INTERNAL://127.0.0.1:9093,EXTERNAL://127.0.0.1:9094"' in r.stdout, r.stdout
    assert "EXTERNAL://broker.example:9094" in r.stdout, r.stdout


def test_clients_re_authenticate_when_the_session_ends(broker_factory, tmp_path):
    """KIP-368: sessions last --connections-max-reauth-ms; librdkafka authenticates again on
    its connection before that, so a steady producer sees no error across several sessions."""
    b = sasl_broker(broker_factory, tmp_path,
                    extra=["--connections-max-reauth-ms", "1500"])
    topic = unique_topic("reauth")
    p = Producer(conf(b, "alice", "alice-secret", **{"linger.ms": 0}))
    dl = DeliveryLog()
    end = time.monotonic() + 5
    n = 0
    while time.monotonic() < end:
        p.produce(topic, value=str(n).encode(), on_delivery=dl)
        n += 1
        p.poll(0.1)
    flush_all(p)
    assert not dl.errors and len(dl.ok) == n, dl.errors[:3]
    assert "SASL session ended" not in b.log_text()


def test_the_spate_tools_log_in_with_a_client_properties_file(broker_factory, tmp_path, spate_bin):
    """`--command-config`, as Kafka's tools take it: the librdkafka names and the Java
    client's sasl.jaas.config both work; a wrong password is a clear failure."""
    b = sasl_broker(broker_factory, tmp_path)
    rdkafka_style = tmp_path / "alice.properties"
    rdkafka_style.write_text("security.protocol=SASL_PLAINTEXT\nsasl.mechanism=SCRAM-SHA-512\n"
                             "sasl.username=alice\nsasl.password=alice-secret\n")
    java_style = tmp_path / "bob.properties"
    java_style.write_text(
        "security.protocol=SASL_PLAINTEXT\nsasl.mechanism=SCRAM-SHA-256\n"
        "sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required "
        'username="bob" password="bob-secret";\n')
    wrong = tmp_path / "wrong.properties"
    wrong.write_text("security.protocol=SASL_PLAINTEXT\nsasl.mechanism=SCRAM-SHA-512\n"
                     "sasl.username=alice\nsasl.password=nope\n")

    def spate(*args):
        return subprocess.run([str(spate_bin), *args, "--bootstrap-server", b.sasl_bootstrap],
                              capture_output=True, text=True, timeout=60)

    for props in (rdkafka_style, java_style):
        r = spate("user", "list", "--command-config", str(props))
        assert r.returncode == 0, r.stderr
        assert "alice" in r.stdout and "bob" in r.stdout, r.stdout
    r = spate("topic", "create", "cli-over-sasl", "--partitions", "2", "--command-config", str(rdkafka_style))
    assert r.returncode == 0, r.stderr
    r = spate("user", "list", "--command-config", str(wrong))
    assert r.returncode != 0 and "SASL login" in r.stderr, r.stderr
    # Without the file, the SASL listener closes the connection after ApiVersions.
    r = spate("user", "list")
    assert r.returncode != 0
