"""Black-box harness: runs the real `spate` binary and talks to it with real Kafka clients.

Fixtures:
  spate_bin       path of the broker binary ($SPATE_BIN or <repo>/target/debug/spate)
  broker_factory  start(shards=2, extra_args=()) -> started Broker; all cleaned up at teardown
  broker          a started 2-shard broker with default settings
  rng             random.Random seeded per test (seed is printed in failure messages)
"""

import os
import random
import re
import signal
import socket
import subprocess
import time
from pathlib import Path

import pytest


REPO = Path(__file__).resolve().parents[2]
READY_TIMEOUT_S = 30.0
STOP_TIMEOUT_S = 20.0
PARTITION_OPENED_RE = re.compile(r"partition opened topic=(\S+) partition=(\d+) shard=(\d+)")


# Ports handed out by this process. Asking the kernel for port 0 twice can return the same port
# when the first one was not bound yet (a cluster's three controller ports are picked before any
# broker starts), and ports in the ephemeral range can be taken meanwhile by any outgoing
# connection. So ports come from below the ephemeral range, each at most once per process.
_HANDED_OUT = set()
_PORT_LOW, _PORT_HIGH = 20000, 32000
_port_rng = random.Random(os.getpid() ^ time.monotonic_ns())


def free_port():
    for _ in range(10000):
        port = _port_rng.randrange(_PORT_LOW, _PORT_HIGH)
        if port in _HANDED_OUT:
            continue
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
        _HANDED_OUT.add(port)
        return port
    raise RuntimeError(f"no free port in {_PORT_LOW}..{_PORT_HIGH}")


def port_open(port, host="127.0.0.1"):
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


class Broker:
    """One `spate serve` process (restartable on the same data dir and port)."""

    def __init__(self, binary, data_dir, log_dir, shards=2, extra_args=(), port=None):
        self.binary = str(binary)
        self.data_dir = Path(data_dir)
        self.log_dir = Path(log_dir)
        self.shards = shards
        self.extra_args = list(extra_args)
        self.port = port or free_port()
        self.proc = None
        self.starts = 0
        self.log_path = None
        self._log_file = None

    @property
    def bootstrap(self):
        return f"127.0.0.1:{self.port}"

    def command(self):
        # With --listeners the test names every listener; self.port is one of them.
        listen = [] if "--listeners" in self.extra_args else ["--listen", self.bootstrap]
        return [
            self.binary, "serve",
            *listen,
            "--data-dir", str(self.data_dir),
            "--shards", str(self.shards),
            *self.extra_args,
        ]

    def start(self, timeout=READY_TIMEOUT_S):
        assert not self.alive(), "broker already running"
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.log_dir.mkdir(parents=True, exist_ok=True)
        self.log_path = self.log_dir / f"spate-{self.port}-run{self.starts}.log"
        self.starts += 1
        self._log_file = open(self.log_path, "wb")
        env = dict(os.environ)
        env.setdefault("RUST_LOG", "info")
        env.setdefault("RUST_BACKTRACE", "1")
        env.pop("NO_COLOR", None)
        self.proc = subprocess.Popen(
            self.command(),
            stdin=subprocess.DEVNULL,
            stdout=self._log_file,
            stderr=self._log_file,
            env=env,
            cwd=str(self.data_dir.parent),
        )
        self.wait_ready(timeout)
        return self

    def wait_ready(self, timeout=READY_TIMEOUT_S):
        deadline = time.monotonic() + timeout
        while True:
            rc = self.proc.poll()
            if rc is not None:
                raise AssertionError(
                    f"spate exited with code {rc} before becoming ready\n"
                    f"cmd: {' '.join(self.command())}\n{self.log_tail()}")
            # The port accepts (into the backlog) as soon as it is bound; "broker ready" is
            # logged once every shard has opened its logs and serves.
            if port_open(self.port) and "broker ready" in self.log_text():
                return
            if time.monotonic() >= deadline:
                raise AssertionError(
                    f"spate not accepting connections on {self.bootstrap} after {timeout}s\n{self.log_tail()}")
            time.sleep(0.05)

    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    def _close_log(self):
        if self._log_file is not None:
            self._log_file.close()
            self._log_file = None

    def stop(self, sig=signal.SIGTERM, timeout=STOP_TIMEOUT_S):
        """Graceful shutdown; asserts a clean exit (code 0) within the deadline."""
        assert self.proc is not None, "broker was never started"
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            rc = self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=10)
            self._close_log()
            raise AssertionError(
                f"spate did not exit within {timeout}s after {signal.Signals(sig).name}\n{self.log_tail()}")
        self._close_log()
        assert rc == 0, f"spate exited with code {rc} after {signal.Signals(sig).name}\n{self.log_tail()}"
        return rc

    def kill(self):
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)
        self._close_log()

    def restart(self, timeout=READY_TIMEOUT_S):
        """Clean stop (asserting exit 0), then start again on the same data dir and port."""
        self.stop()
        return self.start(timeout)

    # ------------------------------------------------------------------ logs
    def log_text(self, run=None):
        """stderr of the current run (or of run number `run`)."""
        path = self.log_path if run is None else self.log_dir / f"spate-{self.port}-run{run}.log"
        if path is None or not path.exists():
            return ""
        return path.read_bytes().decode("utf-8", "replace")

    def log_tail(self, n=60):
        lines = self.log_text().splitlines()
        return "---- spate stderr (last %d lines of %s) ----\n%s" % (
            n, self.log_path, "\n".join(lines[-n:]))

    def partitions_opened(self, run=None):
        """[(topic, partition, shard)] from the 'partition opened' log lines of a run."""
        return [(m.group(1), int(m.group(2)), int(m.group(3)))
                for m in PARTITION_OPENED_RE.finditer(self.log_text(run))]


@pytest.fixture(scope="session")
def spate_bin():
    path = Path(os.environ.get("SPATE_BIN") or REPO / "target" / "debug" / "spate")
    if not path.is_file() or not os.access(path, os.X_OK):
        pytest.fail(f"spate binary not found at {path}; run `cargo build` (scripts/test.sh does) "
                    f"or set SPATE_BIN", pytrace=False)
    return path


@pytest.fixture
def broker_factory(spate_bin, tmp_path, request):
    brokers = []

    def start(shards=2, extra_args=(), name=None, port=None):
        name = name or f"b{len(brokers)}"
        b = Broker(spate_bin, tmp_path / name / "data", tmp_path / name / "logs",
                   shards=shards, extra_args=extra_args, port=port)
        brokers.append(b)
        b.start()
        return b

    yield start

    failed = getattr(request.node, "rep_call", None) is not None and request.node.rep_call.failed
    for b in brokers:
        if failed and b.log_path is not None:
            print(f"\n[{request.node.name}] {b.log_tail(40)}")
        b.kill()


@pytest.fixture
def broker(broker_factory):
    return broker_factory(shards=2)


@pytest.fixture
def rng(request):
    seed = int(os.environ.get("SPATE_TEST_SEED") or random.SystemRandom().randrange(1 << 32))
    r = random.Random(seed)
    r.seed_value = seed
    request.node.user_properties.append(("seed", seed))
    return r


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    rep = outcome.get_result()
    setattr(item, "rep_" + rep.when, rep)
    if rep.failed:
        for name, value in item.user_properties:
            if name == "seed":
                rep.sections.append(("random seed", f"SPATE_TEST_SEED={value} reproduces this run's data"))
