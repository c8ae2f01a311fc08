"""Start-up checks: memlock warning, data-dir lock, port in use, invalid settings."""

import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

from conftest import Broker, free_port


def run_to_exit(cmd, timeout=30):
    p = subprocess.run(cmd, stdin=subprocess.DEVNULL, capture_output=True, timeout=timeout)
    return p.returncode, p.stderr.decode("utf-8", "replace")


def test_second_broker_on_same_data_dir_is_refused(broker_factory, spate_bin):
    b = broker_factory(shards=1)
    rc, err = run_to_exit([str(spate_bin), "serve", "--listen", f"127.0.0.1:{free_port()}",
                           "--data-dir", str(b.data_dir), "--shards", "1"])
    assert rc != 0, err
    assert "in use by another spate process" in err, err
    assert b.alive()


def test_second_broker_on_same_port_is_refused(broker_factory, spate_bin, tmp_path):
    b = broker_factory(shards=2)
    rc, err = run_to_exit([str(spate_bin), "serve", "--listen", b.bootstrap,
                           "--data-dir", str(tmp_path / "other"), "--shards", "1"])
    assert rc != 0, err
    assert f"cannot listen on {b.bootstrap}" in err, err
    assert b.alive()


@pytest.mark.parametrize("args,named", [
    (["--shards", "0"], "--shards"),
    (["--default-partitions", "0"], "--default-partitions"),
    (["--advertised-listener", "nohostport"], "--advertised-listener"),
    (["--auto-create-topics", "maybe"], "--auto-create-topics"),
])
def test_invalid_settings_are_named(spate_bin, tmp_path, args, named):
    rc, err = run_to_exit([str(spate_bin), "serve", "--listen", f"127.0.0.1:{free_port()}",
                           "--data-dir", str(tmp_path / "d"), *args])
    assert rc != 0
    assert named in err, err


UNPRIVILEGED = pytest.mark.skipif(
    os.geteuid() != 0 or shutil.which("setpriv") is None or shutil.which("prlimit") is None,
    reason="needs root, setpriv and prlimit to run the broker as an unprivileged user")


def unprivileged(memlock_bytes, *args):
    """A command running args as nobody, without capabilities, with the given memlock limit."""
    return ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", "--inh-caps=-all",
            "prlimit", f"--memlock={memlock_bytes}:{memlock_bytes}", "--", *args]


def world_writable_dir():
    work = Path(tempfile.mkdtemp(prefix="spate-memlock-"))
    os.chmod(work, 0o777)
    (work / "data").mkdir()
    os.chmod(work / "data", 0o777)
    return work


@UNPRIVILEGED
def test_memlock_below_minimum_fails_with_the_fix(spate_bin):
    work = world_writable_dir()
    try:
        rc, err = run_to_exit(unprivileged(65536, str(spate_bin), "serve", "--listen",
                                           f"127.0.0.1:{free_port()}", "--data-dir", str(work / "data")))
        assert rc == 2, err
        assert "RLIMIT_MEMLOCK) is 64 KiB" in err and "ulimit -l" in err and "LimitMEMLOCK" in err, err
        assert "panicked" not in err, err
    finally:
        shutil.rmtree(work, ignore_errors=True)


@UNPRIVILEGED
def test_low_memlock_is_explained_and_broker_still_serves(spate_bin):
    # Above glommio's minimum but below what registered buffers need: the broker warns with
    # the fix and keeps working.
    work = world_writable_dir()
    try:
        port = free_port()
        cmd = unprivileged(1 << 20, str(spate_bin), "serve", "--listen", f"127.0.0.1:{port}",
                           "--data-dir", str(work / "data"), "--shards", "1")
        b = Broker(spate_bin, work / "data", work, shards=1, port=port)
        b.command = lambda: cmd
        b.start()
        try:
            from confluent_kafka.admin import AdminClient
            md = AdminClient({"bootstrap.servers": b.bootstrap}).list_topics(timeout=10)
            assert 0 in md.brokers
        finally:
            b.stop()
        text = b.log_text()
        assert "locked-memory limit is 1 MiB" in text, text
        assert "LimitMEMLOCK" in text and "ulimit -l" in text, text
    finally:
        shutil.rmtree(work, ignore_errors=True)


def test_readme_serve_command_starts_a_broker(tmp_path):
    """README's first command, scripts/serve.sh, builds and starts a broker that serves.

    It runs with the dev profile (already built by the test run) instead of release; the
    rest of the script is what a user runs."""
    import signal

    from confluent_kafka import Consumer, Producer

    from conftest import REPO
    from kafkautil import wait_until

    port = free_port()
    log = tmp_path / "serve.log"
    env = dict(os.environ, SPATE_SERVE_PROFILE="dev")
    with open(log, "wb") as out:
        p = subprocess.Popen(
            ["bash", str(REPO / "scripts" / "serve.sh"), "--listen", f"127.0.0.1:{port}",
             "--data-dir", str(tmp_path / "data"), "--shards", "1"],
            stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, env=env,
            start_new_session=True)
    try:
        wait_until(lambda: "broker ready" in log.read_text(errors="replace") or p.poll() is not None,
                   timeout=110, desc="serve.sh to start the broker")
        assert p.poll() is None, log.read_text(errors="replace")[-3000:]
        bootstrap = f"127.0.0.1:{port}"
        prod = Producer({"bootstrap.servers": bootstrap})
        prod.produce("serve-smoke", b"hello")
        assert prod.flush(30) == 0
        cons = Consumer({"bootstrap.servers": bootstrap, "group.id": "serve-smoke",
                         "auto.offset.reset": "earliest"})
        cons.subscribe(["serve-smoke"])
        got = []
        wait_until(lambda: got.extend(m.value() for m in cons.consume(10, 0.5) if not m.error()) or got,
                   timeout=30, desc="the message back")
        cons.close()
        assert got == [b"hello"]
    finally:
        os.killpg(p.pid, signal.SIGTERM)
        p.wait(timeout=30)
