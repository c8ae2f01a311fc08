"""Configuration: a TOML file with every setting, flags over it, --print-config, invalid
values named, JSON logs, and the broker-wide connection limit."""

import json
import socket
import subprocess

from conftest import free_port
from kafkautil import admin, wait_until


def run(spate_bin, *args, timeout=30):
    p = subprocess.run([str(spate_bin), "serve", *args], capture_output=True, text=True, timeout=timeout)
    return p.returncode, p.stdout, p.stderr


def test_file_then_flags_then_print_config(spate_bin, tmp_path):
    cfg = tmp_path / "spate.toml"
    cfg.write_text('shards = 3\nretention_ms = -1\ndefault_partitions = 4\nlog_format = "json"\n')
    rc, out, err = run(spate_bin, "--config", str(cfg), "--shards", "2", "--print-config")
    assert rc == 0, err
    printed = dict(line.split(" = ", 1) for line in out.strip().splitlines())
    assert printed["shards"] == "2", "the command line overrides the file"
    assert printed["retention_ms"] == "-1" and printed["default_partitions"] == "4"
    assert printed["log_format"] == '"json"'
    # What --print-config prints is itself a valid config file.
    again = tmp_path / "printed.toml"
    again.write_text(out)
    rc, out2, err = run(spate_bin, "--config", str(again), "--print-config")
    assert rc == 0, err
    assert out2 == out


def test_invalid_settings_are_rejected_with_their_name(spate_bin, tmp_path):
    cases = [
        ("retention_hours = 5\n", "retention_hours"),
        ('shards = "two"\n', "shards"),
        ("retention_ms = -5\n", "retention_ms"),
        ("segment_bytes = 10\n", "segment_bytes"),
        ("inflight_bytes_max = 5\n", "inflight-bytes-max"),
        ("pipeline_requests_max = 0\n", "pipeline-requests-max"),
    ]
    for text, name in cases:
        cfg = tmp_path / "bad.toml"
        cfg.write_text(text)
        rc, _, err = run(spate_bin, "--config", str(cfg), "--print-config")
        assert rc != 0, text
        assert name in err, f"{text!r}: {err}"


def test_broker_runs_from_a_config_file_with_json_logs(broker_factory, tmp_path):
    cfg = tmp_path / "spate.toml"
    cfg.write_text('default_partitions = 3\nlog_format = "json"\n')
    b = broker_factory(shards=2, extra_args=["--config", str(cfg)])
    a = admin(b.bootstrap)
    md = wait_until(lambda: a.list_topics("from-file", timeout=5), desc="auto-created topic")
    wait_until(lambda: len(a.list_topics("from-file", timeout=5).topics["from-file"].partitions) == 3,
               desc="3 partitions from the config file")
    lines = [l for l in b.log_text().splitlines() if l.strip()]
    records = [json.loads(l) for l in lines]
    assert any(r.get("fields", {}).get("message") == "broker ready" for r in records), lines[:5]
    assert all("level" in r and "timestamp" in r for r in records)
    del md


def _try(f):
    try:
        return f()
    except (OSError, AssertionError):
        return None


def test_connection_limit_closes_extra_connections(broker_factory):
    b = broker_factory(shards=2, extra_args=["--connections-max", "2"])

    def served_connection():
        """A connection the broker has accepted and answers (an ApiVersions v0 round trip)."""
        s = socket.create_connection(("127.0.0.1", b.port), timeout=10)
        body = (18).to_bytes(2, "big") + (0).to_bytes(2, "big") + (7).to_bytes(4, "big") + b"\xff\xff"
        s.sendall(len(body).to_bytes(4, "big") + body)
        size = int.from_bytes(s.recv(4), "big")
        assert size > 0
        while size > 0:
            size -= len(s.recv(size))
        return s

    # Earlier probes (the harness's readiness check) may still count for a moment: retry
    # until both held connections are really served.
    held = []
    while len(held) < 2:
        held.append(wait_until(lambda: _try(served_connection), timeout=15, desc="a served connection"))
    # Wait until the broker has taken both (the third is then over the limit).
    def third_refused():
        s = socket.create_connection(("127.0.0.1", b.port), timeout=5)
        s.settimeout(5)
        try:
            return s.recv(1) == b""  # closed by the broker at once (FIN)
        except ConnectionResetError:
            return True  # closed by the broker at once (RST)
        except OSError:
            return False  # e.g. no answer within the timeout: not refused
        finally:
            s.close()
    wait_until(third_refused, timeout=15, desc="a connection over connections_max to be closed")
    assert "connection refused: the broker holds connections_max connections" in b.log_text()
    for s in held:
        s.close()
    # Once they are gone, a client works again.
    a = admin(b.bootstrap)
    wait_until(lambda: a.list_topics(timeout=5).brokers, timeout=15, desc="metadata after the limit freed")
