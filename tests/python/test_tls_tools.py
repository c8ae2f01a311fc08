"""Spate's own tools over TLS: the `spate` CLI and spate-bench with `--command-config` holding
Kafka's SSL client properties (librdkafka's names), against an SSL listener that requires a
client certificate and a SASL_SSL listener with SCRAM-SHA-512; a CA that did not sign the
broker's certificate, a missing client certificate and a host name the certificate does not
carry each fail with a clear message."""

import json
import subprocess

from conftest import free_port
from kafkautil import unique_topic, wait_until
from test_tls import DEBUG_LOG, pki, tls_broker  # noqa: F401 (pki is a fixture)
from tlsutil import Pki


def props(path, text):
    path.write_text(text)
    return str(path)


def ssl_props(tmp_path, pki, name="ssl.properties", client=True, extra=""):
    text = f"security.protocol=SSL\nssl.ca.location={pki.ca}\n"
    if client:
        text += (f"ssl.certificate.location={pki.alice[0]}\n"
                 f"ssl.key.location={pki.alice[1]}\n")
    return props(tmp_path / name, text + extra)


def cli(spate_bin, bootstrap, config, *args, stdin=None):
    return subprocess.run([str(spate_bin), *args, "--bootstrap-server", bootstrap,
                           "--command-config", config],
                          input=stdin, capture_output=True, text=True, timeout=60)


def ok(spate_bin, bootstrap, config, *args, stdin=None):
    r = cli(spate_bin, bootstrap, config, *args, stdin=stdin)
    assert r.returncode == 0, f"spate {' '.join(args)}: {r.stderr}"
    return r.stdout


def round_trip(spate_bin, bootstrap, config):
    """topic create/list, produce, consume --exit-at-end and user list over `config`."""
    topic = unique_topic("tls-cli")
    ok(spate_bin, bootstrap, config, "topic", "create", topic, "--partitions", "2")
    wait_until(lambda: topic in ok(spate_bin, bootstrap, config, "topic", "list"), timeout=20,
               desc="the topic listed")
    lines = "".join(f"k{i}|v{i}\n" for i in range(20))
    ok(spate_bin, bootstrap, config, "produce", topic, "--key-separator", "|", stdin=lines)
    out = ok(spate_bin, bootstrap, config, "consume", topic, "--from-beginning",
             "--exit-at-end", "-f", "%k=%s\\n")
    assert sorted(out.split()) == sorted(f"k{i}=v{i}" for i in range(20)), out
    ok(spate_bin, bootstrap, config, "user", "list")


def test_cli_over_ssl_with_a_client_certificate(broker_factory, pki, tmp_path, spate_bin,
                                                monkeypatch):
    monkeypatch.setenv("RUST_LOG", DEBUG_LOG)
    b = tls_broker(broker_factory, pki, {"SSL": free_port()},
                   extra=["--tls-client-ca-file", str(pki.ca)])
    round_trip(spate_bin, b.tls["SSL"], ssl_props(tmp_path, pki))
    # spate-bench over SSL with the client certificate.
    run_bench(spate_bin, tmp_path, b.tls["SSL"], ssl_props(tmp_path, pki), "ssl-client-cert")
    wait_until(lambda: "principal=User:CN=alice,OU=eng" in b.log_text(), timeout=10,
               desc="the CLI's certificate principal logged")


def test_cli_over_sasl_ssl_with_scram(broker_factory, pki, tmp_path, spate_bin):
    users = tmp_path / "users"
    users.write_text("alice:alice-secret\nbob:bob-secret\n")
    b = tls_broker(broker_factory, pki, {"SASL_SSL": free_port()},
                   extra=["--sasl-users-file", str(users)])
    wait_until(lambda: "SCRAM users created" in b.log_text(), timeout=20,
               desc="the users of --sasl-users-file created")
    config = props(tmp_path / "sasl_ssl.properties",
                   f"security.protocol=SASL_SSL\nssl.ca.location={pki.ca}\n"
                   "sasl.mechanism=SCRAM-SHA-512\nsasl.username=bob\nsasl.password=bob-secret\n")
    round_trip(spate_bin, b.tls["SASL_SSL"], config)
    out = ok(spate_bin, b.tls["SASL_SSL"], config, "user", "list")
    assert "alice" in out and "bob" in out, out
    wrong = props(tmp_path / "wrong.properties",
                  f"security.protocol=SASL_SSL\nssl.ca.location={pki.ca}\n"
                  "sasl.mechanism=SCRAM-SHA-512\nsasl.username=bob\nsasl.password=nope\n")
    r = cli(spate_bin, b.tls["SASL_SSL"], wrong, "topic", "list")
    assert r.returncode != 0 and "SASL login" in r.stderr, r.stderr


def test_tls_failures_are_clear(broker_factory, pki, tmp_path, spate_bin):
    # The broker's certificate names localhost only: 127.0.0.1 is a host name mismatch.
    pki.server_cert, pki.server_key = pki._sign(
        "localhost-only", "/CN=localhost", 1002,
        "subjectAltName=DNS:localhost\nextendedKeyUsage=serverAuth\n")
    ssl_port = free_port()
    b = tls_broker(broker_factory, pki, {"SSL": ssl_port},
                   extra=["--tls-client-ca-file", str(pki.ca)])
    by_name, by_ip = f"localhost:{ssl_port}", f"127.0.0.1:{ssl_port}"
    config = ssl_props(tmp_path, pki)
    ok(spate_bin, by_name, config, "topic", "list")

    other = Pki(tmp_path / "other-pki")
    wrong_ca_text = (f"security.protocol=SSL\nssl.ca.location={other.ca}\n"
                     f"ssl.certificate.location={pki.alice[0]}\n"
                     f"ssl.key.location={pki.alice[1]}\n")
    wrong_ca = props(tmp_path / "wrong-ca.properties", wrong_ca_text)
    r = cli(spate_bin, by_name, wrong_ca, "topic", "list")
    assert r.returncode != 0 and "not signed by a CA in ssl.ca.location" in r.stderr, r.stderr

    no_cert = ssl_props(tmp_path, pki, "no-cert.properties", client=False)
    r = cli(spate_bin, by_name, no_cert, "topic", "list")
    assert r.returncode != 0 and "requires a client certificate" in r.stderr, r.stderr

    r = cli(spate_bin, by_ip, config, "topic", "list")
    assert r.returncode != 0 and "not valid for host '127.0.0.1'" in r.stderr, r.stderr
    # ssl.endpoint.identification.algorithm=none skips the host name only...
    no_check = ssl_props(tmp_path, pki, "no-check.properties",
                         extra="ssl.endpoint.identification.algorithm=none\n")
    ok(spate_bin, by_ip, no_check, "topic", "list")
    # ...the CA still is checked.
    wrong_ca_no_check = props(tmp_path / "wrong-ca-no-check.properties",
                              wrong_ca_text + "ssl.endpoint.identification.algorithm=none\n")
    r = cli(spate_bin, by_ip, wrong_ca_no_check, "topic", "list")
    assert r.returncode != 0 and "not signed by a CA" in r.stderr, r.stderr

    # TLS to the PLAINTEXT listener, and a missing CA file.
    r = cli(spate_bin, f"127.0.0.1:{b.port}", no_check, "topic", "list")
    assert r.returncode != 0 and "TLS" in r.stderr, r.stderr
    missing = props(tmp_path / "missing.properties",
                    "security.protocol=SSL\nssl.ca.location=/nonexistent/ca.pem\n")
    r = cli(spate_bin, by_name, missing, "topic", "list")
    assert r.returncode != 0 and "/nonexistent/ca.pem" in r.stderr, r.stderr


def run_bench(spate_bin, tmp_path, bootstrap, config, label):
    """spate-bench's smoke workload over `config`: everything acknowledged is consumed."""
    bench = spate_bin.parent / "spate-bench"
    workload = spate_bin.parent.parent.parent / "bench" / "workloads" / "smoke.toml"
    out = tmp_path / label
    r = subprocess.run([str(bench), "--bootstrap-server", bootstrap, "--workload",
                        str(workload), "--out-dir", str(out), "--label", label,
                        "--command-config", config],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, f"{r.stdout}\n{r.stderr}"
    [result] = list(out.glob("*.json"))
    j = json.loads(result.read_text())
    produced, consumed = j["totals"]["produced"], j["totals"]["consumed"]
    assert produced > 0 and consumed == produced, j["totals"]
    assert j["totals"]["publish_errors"] == 0, j["totals"]


def test_spate_bench_over_ssl_and_sasl_ssl(broker_factory, pki, tmp_path, spate_bin):
    users = tmp_path / "users"
    users.write_text("bench:bench-secret\n")
    b = tls_broker(broker_factory, pki, {"SSL": free_port(), "SASL_SSL": free_port()},
                   extra=["--sasl-users-file", str(users)])
    wait_until(lambda: "SCRAM users created" in b.log_text(), timeout=20,
               desc="the users of --sasl-users-file created")
    run_bench(spate_bin, tmp_path, f"127.0.0.1:{b.port}",
              props(tmp_path / "plain.properties", "security.protocol=PLAINTEXT\n"), "plain")
    run_bench(spate_bin, tmp_path, b.tls["SSL"], ssl_props(tmp_path, pki, client=False), "ssl")
    sasl = props(tmp_path / "bench-sasl.properties",
                 f"security.protocol=SASL_SSL\nssl.ca.location={pki.ca}\n"
                 "sasl.mechanism=SCRAM-SHA-256\nsasl.username=bench\n"
                 "sasl.password=bench-secret\n")
    run_bench(spate_bin, tmp_path, b.tls["SASL_SSL"], sasl, "sasl-ssl")
    # A wrong password fails the run with the login's message.
    wrong = props(tmp_path / "bench-wrong.properties",
                  f"security.protocol=SASL_SSL\nssl.ca.location={pki.ca}\n"
                  "sasl.mechanism=SCRAM-SHA-256\nsasl.username=bench\nsasl.password=x\n")
    bench = spate_bin.parent / "spate-bench"
    workload = spate_bin.parent.parent.parent / "bench" / "workloads" / "smoke.toml"
    r = subprocess.run([str(bench), "--bootstrap-server", b.tls["SASL_SSL"], "--workload",
                        str(workload), "--out-dir", str(tmp_path / "wrong"),
                        "--command-config", wrong], capture_output=True, text=True, timeout=60)
    assert r.returncode != 0 and "SASL login" in r.stderr, r.stderr
