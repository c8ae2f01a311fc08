"""What a real client sees when it is configured for SASL or TLS against the plaintext
listener: a named error, not a dropped connection (and, on the broker, one log line)."""

import socket
import ssl
import time

from confluent_kafka import KafkaException
from confluent_kafka.admin import AdminClient


def test_sasl_client_is_told_the_broker_has_no_sasl_here(broker, capfd):
    a = AdminClient({
        "bootstrap.servers": broker.bootstrap,
        "security.protocol": "SASL_PLAINTEXT",
        "sasl.mechanism": "PLAIN",
        "sasl.username": "u",
        "sasl.password": "p",
        "reconnect.backoff.ms": 500,
    })
    try:
        a.list_topics(timeout=3)
        raise AssertionError("metadata over SASL_PLAINTEXT succeeded")
    except KafkaException:
        pass
    # librdkafka logs (to stderr) the error code the broker answered, ILLEGAL_SASL_STATE,
    # instead of reporting a dropped connection.
    client_log = capfd.readouterr().err
    assert "Request not valid in current SASL state" in client_log, client_log
    broker_log = broker.log_path.read_text(errors="replace")
    assert "unknown API" not in broker_log, broker_log


def test_tls_client_on_plaintext_port_gets_one_broker_line(broker_factory):
    # One shard: the line is limited per shard, once per kind every 10 s.
    broker = broker_factory(shards=1)
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    for _ in range(5):
        with socket.create_connection(("127.0.0.1", broker.port), timeout=10) as raw:
            try:
                with ctx.wrap_socket(raw, server_hostname="localhost"):
                    raise AssertionError("a TLS handshake completed on the plaintext port")
            except (ssl.SSLError, ConnectionError, OSError):
                pass
    deadline = time.time() + 10
    while time.time() < deadline:
        text = broker.log_path.read_text(errors="replace")
        if "TLS" in text:
            break
        time.sleep(0.05)
    lines = [l for l in text.splitlines() if "TLS" in l]
    assert len(lines) == 1, "\n".join(lines)
    assert "exceeds" not in text, text
