"""TLS listeners (`--listeners SSL://...,SASL_SSL://...` with `--tls-cert-file`,
`--tls-key-file`, `--tls-client-ca-file`): confluent-kafka and kafka-python over SSL with client
certificates (the principal is the mapped subject DN) and over SASL_SSL with SCRAM-SHA-512;
plaintext on a TLS port, TLS on a plaintext port, a truncated handshake, random bytes and a
client without a certificate are closed while others go on; SIGHUP reloads the certificate
without dropping connections. The CA and certificates are made at test time (tlsutil)."""

import os
import random
import signal
import socket
import ssl
import struct
import subprocess
import time

import pytest
from confluent_kafka import Consumer, KafkaError, Producer
from confluent_kafka.admin import AdminClient, NewTopic

from conftest import free_port
from kafkautil import DeliveryLog, flush_all, unique_topic, wait_until
from tlsutil import (Pki, api_versions_frame, api_versions_over, client_context, client_hello,
                     closed_by_peer, recv_frame)

DEBUG_LOG = "info,spate::server::connection=debug,spate::server::sasl=debug"


@pytest.fixture
def pki(tmp_path):
    p = Pki(tmp_path / "pki")
    p.server_cert, p.server_key = p.server()
    p.alice = p.client("alice", "/OU=eng/CN=alice")
    p.bob = p.client("bob", "/OU=ops/CN=bob", serial=2001)
    return p


def tls_broker(broker_factory, pki, listeners, extra=(), shards=2):
    """A broker with a PLAINTEXT listener (where the harness checks readiness) and `listeners`
    ({protocol: port}) on the same TLS material."""
    plain = free_port()
    spec = ",".join([f"PLAINTEXT://127.0.0.1:{plain}"] +
                    [f"{proto}://127.0.0.1:{port}" for proto, port in listeners.items()])
    b = broker_factory(shards=shards, port=plain, extra_args=[
        "--listeners", spec, "--tls-cert-file", str(pki.server_cert),
        "--tls-key-file", str(pki.server_key), *extra])
    b.tls = {proto: f"127.0.0.1:{port}" for proto, port in listeners.items()}
    return b


def ssl_conf(b, pki, client=None, **extra):
    c = {"bootstrap.servers": b.tls["SSL"], "security.protocol": "SSL",
         "ssl.ca.location": str(pki.ca), **extra}
    if client is not None:
        c["ssl.certificate.location"], c["ssl.key.location"] = str(client[0]), str(client[1])
    return c


def produce_and_consume(conf, topic, n=50, group="tls-group"):
    p = Producer({**conf, "linger.ms": 5})
    dl = DeliveryLog()
    for i in range(n):
        p.produce(topic, value=f"m-{i}".encode(), on_delivery=dl)
    flush_all(p)
    assert not dl.errors and len(dl.ok) == n, dl.errors[:3]
    c = Consumer({**conf, "group.id": group, "auto.offset.reset": "earliest",
                  "enable.auto.commit": False})
    c.subscribe([topic])
    got = []
    deadline = time.monotonic() + 60
    while len(got) < n and time.monotonic() < deadline:
        m = c.poll(0.2)
        if m is not None and m.error() is None:
            got.append(m.value())
    c.commit(asynchronous=False)
    c.close()
    assert sorted(got) == sorted(f"m-{i}".encode() for i in range(n)), len(got)


def test_ssl_with_client_certificates(broker_factory, pki, monkeypatch):
    monkeypatch.setenv("RUST_LOG", DEBUG_LOG)
    b = tls_broker(broker_factory, pki, {"SSL": free_port()}, extra=[
        "--tls-client-ca-file", str(pki.ca),
        "--ssl-principal-mapping-rules", "RULE:^CN=([a-z]+),OU=ops$/$1/U,DEFAULT"])
    # confluent-kafka: produce, consume in a group, an admin operation.
    topic = unique_topic("ssl")
    produce_and_consume(ssl_conf(b, pki, pki.alice), topic)
    admin = AdminClient(ssl_conf(b, pki, pki.alice))
    created = unique_topic("ssl-admin")
    admin.create_topics([NewTopic(created, num_partitions=3, replication_factor=1)])[created] \
        .result(timeout=30)
    md = admin.list_topics(timeout=10)
    assert created in md.topics and len(md.topics[created].partitions) == 3
    # Metadata over the SSL listener names the SSL listener.
    assert [f"{x.host}:{x.port}" for x in md.brokers.values()] == [b.tls["SSL"]]
    # kafka-python, as bob, with a group.
    from kafka import KafkaConsumer, KafkaProducer
    kw = dict(bootstrap_servers=b.tls["SSL"], security_protocol="SSL", ssl_cafile=str(pki.ca),
              ssl_certfile=str(pki.bob[0]), ssl_keyfile=str(pki.bob[1]))
    kp = KafkaProducer(**kw)
    for i in range(10):
        kp.send(topic, f"kp-{i}".encode())
    kp.flush(timeout=30)
    kp.close()
    kc = KafkaConsumer(topic, group_id="kp-group", auto_offset_reset="earliest",
                       consumer_timeout_ms=20000, **kw)
    got = set()
    for m in kc:
        got.add(m.value)
        if len(got) == 60:
            break
    kc.close()
    assert len(got) == 60, len(got)
    # The principals: alice's DN unmapped (DEFAULT, RFC 2253 order), bob's through the rule.
    wait_until(lambda: "principal=User:CN=alice,OU=eng" in b.log_text(), timeout=10,
               desc="alice's principal logged")
    wait_until(lambda: "principal=User:BOB" in b.log_text(), timeout=10,
               desc="bob's mapped principal logged")


def test_sasl_ssl_with_scram(broker_factory, pki, tmp_path, monkeypatch):
    monkeypatch.setenv("RUST_LOG", DEBUG_LOG)
    users = tmp_path / "users"
    users.write_text("alice:alice-secret\nbob:bob-secret\n")
    b = tls_broker(broker_factory, pki, {"SASL_SSL": free_port()},
                   extra=["--sasl-users-file", str(users)])
    wait_until(lambda: "SCRAM users created" in b.log_text(), timeout=20,
               desc="the users of --sasl-users-file created")
    conf = {"bootstrap.servers": b.tls["SASL_SSL"], "security.protocol": "SASL_SSL",
            "ssl.ca.location": str(pki.ca), "sasl.mechanism": "SCRAM-SHA-512",
            "sasl.username": "alice", "sasl.password": "alice-secret"}
    topic = unique_topic("sasl-ssl")
    produce_and_consume(conf, topic)
    admin = AdminClient(conf)
    created = unique_topic("sasl-ssl-admin")
    admin.create_topics([NewTopic(created, num_partitions=2, replication_factor=1)])[created] \
        .result(timeout=30)
    from kafka import KafkaProducer
    kp = KafkaProducer(bootstrap_servers=b.tls["SASL_SSL"], security_protocol="SASL_SSL",
                       ssl_cafile=str(pki.ca), sasl_mechanism="SCRAM-SHA-512",
                       sasl_plain_username="bob", sasl_plain_password="bob-secret")
    kp.send(topic, b"from-kafka-python").get(timeout=30)
    kp.close()
    wait_until(lambda: "principal=User:bob" in b.log_text(), timeout=10,
               desc="bob's SASL principal logged")
    # A wrong password over TLS is refused, and the broker goes on.
    errors = []
    p = Producer({**conf, "sasl.password": "wrong", "error_cb": errors.append,
                  "message.timeout.ms": 5000})
    p.produce(topic, value=b"x")
    p.flush(10)
    assert any(e.code() == KafkaError._AUTHENTICATION for e in errors), errors
    produce_and_consume(conf, unique_topic("sasl-ssl-after"), n=5, group="after")


def test_large_fetches_over_tls(broker_factory, pki, monkeypatch):
    """Record bytes of many segments' worth go through the copying path, encrypted, in
    pieces larger than rustls' queue: what arrives is what was sent. Without a client CA,
    clients have no certificate and act for User:ANONYMOUS."""
    monkeypatch.setenv("RUST_LOG", DEBUG_LOG)
    b = tls_broker(broker_factory, pki, {"SSL": free_port()})
    topic = unique_topic("big")
    values = [bytes([i]) * 1000 + os.urandom(400_000) for i in range(60)]
    p = Producer(ssl_conf(b, pki, **{"linger.ms": 5, "message.max.bytes": 1_000_000}))
    dl = DeliveryLog()
    for v in values:
        p.produce(topic, value=v, on_delivery=dl)
    flush_all(p)
    assert not dl.errors and len(dl.ok) == len(values)
    c = Consumer(ssl_conf(b, pki, **{"group.id": "big", "auto.offset.reset": "earliest",
                                     "fetch.max.bytes": 52428800,
                                     "max.partition.fetch.bytes": 52428800}))
    c.subscribe([topic])
    got = []
    deadline = time.monotonic() + 60
    while len(got) < len(values) and time.monotonic() < deadline:
        m = c.poll(0.2)
        if m is not None and m.error() is None:
            got.append(m.value())
    c.close()
    assert got == values
    text = b.log_text()
    assert "principal=User:ANONYMOUS" in text and "principal=User:CN=" not in text


def test_bad_clients_are_closed_and_others_go_on(broker_factory, pki):
    # One shard, so the rate-limited lines can be counted; a short idle timeout bounds the
    # handshake of a client that stops halfway.
    b = tls_broker(broker_factory, pki, {"SSL": free_port()}, shards=1,
                   extra=["--connections-max-idle-ms", "2000"])
    host, port = b.tls["SSL"].split(":")
    good = Producer(ssl_conf(b, pki))
    topic = unique_topic("survivor")

    def still_serving():
        dl = DeliveryLog()
        good.produce(topic, value=b"ok", on_delivery=dl)
        flush_all(good)
        assert dl.ok and not dl.errors

    still_serving()
    # A plaintext Kafka client on the TLS port.
    with socket.create_connection((host, int(port)), timeout=10) as s:
        s.sendall(api_versions_frame())
        assert closed_by_peer(s)
    still_serving()
    # Random bytes.
    rnd = random.Random(17)
    for size in (1, 5, 64, 3000):
        with socket.create_connection((host, int(port)), timeout=10) as s:
            s.sendall(bytes([0x16, 0x03, 0x01]) + rnd.randbytes(size))
            s.shutdown(socket.SHUT_WR)
            assert closed_by_peer(s)
    # A truncated handshake: half a ClientHello, then the client closes its side ...
    hello = client_hello()
    with socket.create_connection((host, int(port)), timeout=10) as s:
        s.sendall(hello[: len(hello) // 2])
        s.shutdown(socket.SHUT_WR)
        assert closed_by_peer(s)
    # ... or just stops: the handshake deadline (connections_max_idle_ms) closes it.
    with socket.create_connection((host, int(port)), timeout=10) as s:
        s.sendall(hello[: len(hello) // 2])
        started = time.monotonic()
        assert closed_by_peer(s, timeout=20)
        assert time.monotonic() - started < 15
    still_serving()
    # A TLS client on the plaintext port.
    with socket.create_connection(("127.0.0.1", b.port), timeout=10) as s:
        s.sendall(hello)
        assert closed_by_peer(s)
    still_serving()
    assert b.alive()
    text = b.log_text()
    assert "plaintext Kafka to a TLS listener" in text, text[-3000:]
    # Rate-limited: the handshake failures of the TLS port wrote one line in the interval (the
    # first), the rest are counted.
    failed = [l for l in text.splitlines()
              if "closing connection" in l and ("TLS handshake" in l or "TLS listener" in l)]
    assert len(failed) == 1, "\n".join(failed)
    assert "panicked" not in text


def test_client_without_certificate_is_refused(broker_factory, pki):
    b = tls_broker(broker_factory, pki, {"SSL": free_port()},
                   extra=["--tls-client-ca-file", str(pki.ca)])
    host, port = b.tls["SSL"].split(":")
    # Python's client, without a certificate: the server refuses the handshake.
    with socket.create_connection((host, int(port)), timeout=10) as raw:
        with pytest.raises((ssl.SSLError, ConnectionError, EOFError)):
            with client_context(pki).wrap_socket(raw, server_hostname="127.0.0.1") as s:
                # TLS 1.3: the refusal arrives after the client's Finished.
                api_versions_over(s)
    # A certificate from another CA is refused too.
    other = Pki(pki.dir / "other")
    mallory = other.client("mallory", "/CN=mallory")
    with socket.create_connection((host, int(port)), timeout=10) as raw:
        with pytest.raises((ssl.SSLError, ConnectionError, EOFError)):
            with client_context(pki, *mallory).wrap_socket(raw, server_hostname="127.0.0.1") as s:
                api_versions_over(s)
    # librdkafka without a certificate: nothing is delivered.
    errors = []
    p = Producer(ssl_conf(b, pki, **{"error_cb": errors.append, "message.timeout.ms": 5000}))
    dl = DeliveryLog()
    p.produce(unique_topic("nocert"), value=b"x", on_delivery=dl)
    p.flush(15)
    assert dl.errors and not dl.ok
    assert errors
    # With its certificate, alice gets through.
    with socket.create_connection((host, int(port)), timeout=10) as raw:
        with client_context(pki, *pki.alice).wrap_socket(raw, server_hostname="127.0.0.1") as s:
            assert api_versions_over(s) == 0
    assert b.alive()


def peer_serial(b, pki):
    host, port = b.tls["SSL"].split(":")
    with socket.create_connection((host, int(port)), timeout=10) as raw:
        with client_context(pki).wrap_socket(raw, server_hostname="127.0.0.1") as s:
            return int(s.getpeercert()["serialNumber"], 16)


def test_sighup_reloads_the_certificate_and_keeps_connections(broker_factory, pki):
    b = tls_broker(broker_factory, pki, {"SSL": free_port()})
    assert peer_serial(b, pki) == 1000
    host, port = b.tls["SSL"].split(":")
    raw = socket.create_connection((host, int(port)), timeout=10)
    old = client_context(pki).wrap_socket(raw, server_hostname="127.0.0.1")
    assert api_versions_over(old, corr=1) == 0
    producer = Producer(ssl_conf(b, pki))
    topic = unique_topic("reload")
    dl = DeliveryLog()
    producer.produce(topic, value=b"before", on_delivery=dl)
    flush_all(producer)
    # New material in the same files, then SIGHUP.
    cert, key = pki.server("server-new", serial=3000)
    os.replace(cert, pki.server_cert)
    os.replace(key, pki.server_key)
    b.proc.send_signal(signal.SIGHUP)
    wait_until(lambda: b.log_text().count("TLS certificate, key and client CA reloaded") == 2,
               timeout=10, desc="both shards reloaded")
    wait_until(lambda: peer_serial(b, pki) == 3000, timeout=10, desc="the new certificate served")
    # The connections opened before go on with theirs.
    assert api_versions_over(old, corr=2) == 0
    producer.produce(topic, value=b"after", on_delivery=dl)
    flush_all(producer)
    assert len(dl.ok) == 2 and not dl.errors
    # A reload that fails keeps what was loaded.
    pki.server_cert.write_text("not a certificate\n")
    b.proc.send_signal(signal.SIGHUP)
    wait_until(lambda: b.log_text().count("TLS reload failed") == 2, timeout=10,
               desc="the failed reload logged")
    assert peer_serial(b, pki) == 3000
    assert api_versions_over(old, corr=3) == 0
    old.close()
    assert b.alive()


def test_tls_settings_are_checked(spate_bin, pki, tmp_path):
    def start(*args):
        return subprocess.run([str(spate_bin), "serve", "--data-dir", str(tmp_path / "d"), *args,
                               "--print-config"], capture_output=True, text=True, timeout=60)
    r = start("--listeners", "SSL://127.0.0.1:9093")
    assert r.returncode != 0 and "tls_cert_file" in r.stderr, r.stderr
    r = start("--listeners", "SSL://127.0.0.1:9093", "--tls-cert-file", str(pki.server_cert))
    assert r.returncode != 0 and "go together" in r.stderr, r.stderr
    r = start("--listeners", "SSL://127.0.0.1:9093", "--tls-cert-file", str(pki.server_cert),
              "--tls-key-file", str(pki.alice[1]))
    assert r.returncode != 0 and "tls_cert_file" in r.stderr, r.stderr
    r = start("--listeners", "SSL://127.0.0.1:9093", "--tls-cert-file", str(pki.server_cert),
              "--tls-key-file", str(pki.server_key), "--ssl-principal-mapping-rules", "DEFAULT/L")
    assert r.returncode != 0 and "ssl_principal_mapping_rules" in r.stderr, r.stderr
    r = start("--listeners", "SSL://127.0.0.1:9093", "--tls-cert-file", str(pki.server_cert),
              "--tls-key-file", str(pki.server_key), "--tls-client-ca-file", str(pki.ca))
    assert r.returncode == 0, r.stderr
    assert f'tls_client_ca_file = "{pki.ca}"' in r.stdout, r.stdout
    assert 'ssl_principal_mapping_rules = "DEFAULT"' in r.stdout, r.stdout


# Python warns that it offers TLS 1.1 at all: that is the point here.
@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_tls_1_2_and_1_3_are_spoken_and_older_refused(broker_factory, pki):
    b = tls_broker(broker_factory, pki, {"SSL": free_port()})
    host, port = b.tls["SSL"].split(":")
    for version, name in ((ssl.TLSVersion.TLSv1_2, "TLSv1.2"), (ssl.TLSVersion.TLSv1_3, "TLSv1.3")):
        ctx = client_context(pki)
        ctx.minimum_version = ctx.maximum_version = version
        with socket.create_connection((host, int(port)), timeout=10) as raw:
            with ctx.wrap_socket(raw, server_hostname="127.0.0.1") as s:
                assert s.version() == name
                # Several requests, pipelined, over the one TLS session.
                s.sendall(b"".join(api_versions_frame(corr) for corr in range(1, 6)))
                for corr in range(1, 6):
                    body = recv_frame(s)
                    assert struct.unpack(">ih", body[:6]) == (corr, 0)
    ctx = client_context(pki)
    ctx.minimum_version = ssl.TLSVersion.MINIMUM_SUPPORTED
    ctx.maximum_version = ssl.TLSVersion.TLSv1_1
    ctx.set_ciphers("ALL:@SECLEVEL=0")
    with socket.create_connection((host, int(port)), timeout=10) as raw:
        with pytest.raises((ssl.SSLError, ConnectionError)):
            ctx.wrap_socket(raw, server_hostname="127.0.0.1")
    assert b.alive()
